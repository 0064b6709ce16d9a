//! Autoscalers: how many nodes a pool wants, as pure functions of observed
//! demand ([`SignalSample`]s) and the clock.
//!
//! Each kind answers with an unclamped size; [`decide_scale`] applies the
//! cooldown (no change within `cooldown` of the last one) and clamps to the
//! pool's `min_nodes..=max_nodes`. Without a signal an autoscaler keeps the
//! current size: missing data never shrinks a pool.
//!
//! - reactive: the latest mean utilisation above `scale_up_threshold` adds a
//!   node, below `scale_down_threshold` removes one;
//! - queue: `ceil((pending + running) / jobs_per_node)` from the latest
//!   sample that carries queue counts (what the scheduler publishes on
//!   `flotilla.signal.queue.<queue>`, summed per pool);
//! - scheduled: the first window containing the time (UTC) bounds the
//!   answer of its `fallback` (or the current size);
//! - predictive: a least-squares line through the last `lookback_window`
//!   utilisation samples, extrapolated one step, times `growth_factor`,
//!   as the nodes needed at the current size;
//! - composite: max, min or rounded-up mean of its members.

use flotilla_messages::fleet::{
    minute_of_day, weekday_index, AutoscalerConfig, CombineMode, ScheduleWindow,
};
use flotilla_messages::provisioner::SignalSample;

/// What an autoscaler sees.
#[derive(Debug, Clone, Copy)]
pub struct ScaleInput<'a> {
    /// The clock, unix milliseconds.
    pub now: u64,
    /// The pool's desired size now.
    pub current: u32,
    /// Recent observations, oldest first.
    pub samples: &'a [SignalSample],
}

/// The pool's bounds and cooldown.
#[derive(Debug, Clone, Copy)]
pub struct ScaleLimits {
    /// Fewest nodes.
    pub min: u32,
    /// Most nodes.
    pub max: u32,
    /// Milliseconds after a change before the next.
    pub cooldown_ms: u64,
    /// When the size last changed, if ever.
    pub last_change_at: Option<u64>,
}

/// The new desired size, or `None` when it stays (no change, or within the
/// cooldown).
pub fn decide_scale(
    config: &AutoscalerConfig,
    limits: ScaleLimits,
    input: ScaleInput,
) -> Option<u32> {
    if let Some(last) = limits.last_change_at {
        if input.now < last.saturating_add(limits.cooldown_ms) {
            return None;
        }
    }
    let wanted = target(config, input).clamp(limits.min, limits.max.max(limits.min));
    (wanted != input.current).then_some(wanted)
}

/// The size `config` asks for, before clamping.
pub fn target(config: &AutoscalerConfig, input: ScaleInput) -> u32 {
    match config {
        AutoscalerConfig::Reactive {
            scale_up_threshold,
            scale_down_threshold,
        } => reactive(*scale_up_threshold, *scale_down_threshold, input),
        AutoscalerConfig::Queue { jobs_per_node } => queue(*jobs_per_node, input),
        AutoscalerConfig::Scheduled { schedule, fallback } => {
            let inner = fallback
                .as_ref()
                .map_or(input.current, |f| target(f, input));
            match active_window(schedule, input.now) {
                Some(w) => inner.clamp(w.min_nodes, w.max_nodes),
                None => inner,
            }
        }
        AutoscalerConfig::Predictive {
            lookback_window,
            growth_factor,
        } => predictive(*lookback_window, *growth_factor, input),
        AutoscalerConfig::Composite { mode, autoscalers } => {
            let answers: Vec<u32> = autoscalers.iter().map(|a| target(a, input)).collect();
            combine(*mode, &answers).unwrap_or(input.current)
        }
    }
}

fn reactive(up: f64, down: f64, input: ScaleInput) -> u32 {
    let latest = input.samples.iter().rev().find_map(|s| s.utilization);
    match latest {
        Some(u) if u > up => input.current.saturating_add(1),
        Some(u) if u < down => input.current.saturating_sub(1),
        _ => input.current,
    }
}

fn queue(jobs_per_node: u32, input: ScaleInput) -> u32 {
    let latest = input
        .samples
        .iter()
        .rev()
        .find(|s| s.pending.is_some() || s.running.is_some());
    let Some(s) = latest else {
        return input.current;
    };
    let jobs = s.pending.unwrap_or(0) + s.running.unwrap_or(0);
    let nodes = jobs.div_ceil(u64::from(jobs_per_node.max(1)));
    u32::try_from(nodes).unwrap_or(u32::MAX)
}

fn predictive(lookback: u32, growth: f64, input: ScaleInput) -> u32 {
    let points: Vec<f64> = input.samples.iter().filter_map(|s| s.utilization).collect();
    let window = &points[points.len().saturating_sub(lookback as usize)..];
    if window.len() < 2 {
        return input.current;
    }
    let n = window.len() as f64;
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = window.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, y) in window.iter().enumerate() {
        let dx = i as f64 - mean_x;
        sxy += dx * (y - mean_y);
        sxx += dx * dx;
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let next = (mean_y + slope * (n - mean_x)).max(0.0);
    let needed = next / 100.0 * f64::from(input.current.max(1)) * growth;
    if needed.is_finite() {
        needed.ceil().min(f64::from(u32::MAX)) as u32
    } else {
        input.current
    }
}

fn combine(mode: CombineMode, answers: &[u32]) -> Option<u32> {
    match mode {
        CombineMode::Max => answers.iter().copied().max(),
        CombineMode::Min => answers.iter().copied().min(),
        CombineMode::Avg => {
            let sum: u64 = answers.iter().map(|&a| u64::from(a)).sum();
            (!answers.is_empty()).then(|| sum.div_ceil(answers.len() as u64) as u32)
        }
    }
}

/// The first window of `schedule` that contains `now` (UTC).
fn active_window(schedule: &[ScheduleWindow], now: u64) -> Option<&ScheduleWindow> {
    let minutes = now / 60_000;
    let minute = (minutes % 1440) as u32;
    let day = minutes / 1440;
    // 1970-01-01 was a Thursday (index 3 with Monday = 0).
    let weekday = ((day + 3) % 7) as u32;
    let yesterday = (weekday + 6) % 7;
    schedule.iter().find(|w| {
        let (Some(start), Some(end)) = (minute_of_day(&w.start), minute_of_day(&w.end)) else {
            return false;
        };
        let on = |d: u32| w.days.is_empty() || w.days.iter().any(|n| weekday_index(n) == Some(d));
        if start <= end {
            on(weekday) && (start..end).contains(&minute)
        } else {
            // Runs past midnight: the evening of its day or the morning after.
            (on(weekday) && minute >= start) || (on(yesterday) && minute < end)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn util(values: &[f64]) -> Vec<SignalSample> {
        values
            .iter()
            .enumerate()
            .map(|(i, &u)| SignalSample {
                at: i as u64 * 1000,
                utilization: Some(u),
                ..Default::default()
            })
            .collect()
    }

    fn input(current: u32, samples: &[SignalSample]) -> ScaleInput<'_> {
        ScaleInput {
            now: 0,
            current,
            samples,
        }
    }

    fn reactive_config() -> AutoscalerConfig {
        AutoscalerConfig::Reactive {
            scale_up_threshold: 80.0,
            scale_down_threshold: 20.0,
        }
    }

    fn limits(min: u32, max: u32) -> ScaleLimits {
        ScaleLimits {
            min,
            max,
            cooldown_ms: 60_000,
            last_change_at: None,
        }
    }

    #[test]
    fn reactive_follows_thresholds() {
        let c = reactive_config();
        assert_eq!(target(&c, input(3, &util(&[90.0]))), 4);
        assert_eq!(target(&c, input(3, &util(&[10.0]))), 2);
        assert_eq!(target(&c, input(3, &util(&[50.0]))), 3);
        assert_eq!(target(&c, input(3, &[])), 3, "no signal keeps the size");
    }

    #[test]
    fn queue_divides_jobs_rounding_up() {
        let c = AutoscalerConfig::Queue { jobs_per_node: 8 };
        let s = [SignalSample {
            at: 0,
            pending: Some(10),
            running: Some(7),
            ..Default::default()
        }];
        assert_eq!(target(&c, input(1, &s)), 3);
    }

    #[test]
    fn scheduled_windows_bound_the_fallback() {
        // 2024-01-01 was a Monday: 19723 days after the epoch.
        let monday_10h = (19723 * 1440 + 600) * 60_000;
        let c = AutoscalerConfig::Scheduled {
            schedule: vec![ScheduleWindow {
                days: vec!["mon".into(), "tuesday".into()],
                start: "09:00".into(),
                end: "17:00".into(),
                min_nodes: 5,
                max_nodes: 10,
            }],
            fallback: None,
        };
        let at = |now| ScaleInput {
            now,
            current: 2,
            samples: &[],
        };
        assert_eq!(target(&c, at(monday_10h)), 5);
        assert_eq!(target(&c, at(monday_10h + 8 * 3_600_000)), 2, "after 17:00");
        assert_eq!(target(&c, at(monday_10h + 2 * 86_400_000)), 2, "wednesday");
        let overnight = AutoscalerConfig::Scheduled {
            schedule: vec![ScheduleWindow {
                days: vec!["mon".into()],
                start: "22:00".into(),
                end: "06:00".into(),
                min_nodes: 4,
                max_nodes: 4,
            }],
            fallback: None,
        };
        let tuesday_2h = monday_10h + 16 * 3_600_000;
        assert_eq!(target(&overnight, at(tuesday_2h)), 4);
    }

    #[test]
    fn predictive_extrapolates_the_trend() {
        let c = AutoscalerConfig::Predictive {
            lookback_window: 4,
            growth_factor: 1.0,
        };
        // 40, 50, 60, 70 → next 80% of 10 nodes = 8.
        assert_eq!(target(&c, input(10, &util(&[40.0, 50.0, 60.0, 70.0]))), 8);
        assert_eq!(
            target(&c, input(10, &util(&[70.0]))),
            10,
            "one point is no trend"
        );
    }

    #[test]
    fn composite_combines() {
        let members = vec![
            reactive_config(),
            AutoscalerConfig::Queue { jobs_per_node: 1 },
        ];
        let s = vec![SignalSample {
            at: 0,
            utilization: Some(90.0),
            pending: Some(10),
            running: Some(0),
        }];
        let with = |mode| AutoscalerConfig::Composite {
            mode,
            autoscalers: members.clone(),
        };
        assert_eq!(target(&with(CombineMode::Max), input(3, &s)), 10);
        assert_eq!(target(&with(CombineMode::Min), input(3, &s)), 4);
        assert_eq!(target(&with(CombineMode::Avg), input(3, &s)), 7);
    }

    #[test]
    fn cooldown_holds_changes() {
        let c = reactive_config();
        let s = util(&[95.0]);
        let mut l = limits(1, 10);
        l.last_change_at = Some(0);
        let at = |now| ScaleInput {
            now,
            current: 3,
            samples: &s,
        };
        assert_eq!(decide_scale(&c, l, at(59_999)), None);
        assert_eq!(decide_scale(&c, l, at(60_000)), Some(4));
    }

    proptest! {
        #[test]
        fn answers_stay_within_bounds(
            min in 0u32..20, span in 0u32..20, current in 0u32..50,
            u in proptest::collection::vec(0.0f64..100.0, 0..12),
            pending in 0u64..1000, running in 0u64..1000, jpn in 1u32..16,
        ) {
            let max = min + span;
            let mut samples = util(&u);
            samples.push(SignalSample { at: 99, utilization: None, pending: Some(pending), running: Some(running) });
            let c = AutoscalerConfig::Composite { mode: CombineMode::Avg, autoscalers: vec![
                reactive_config(),
                AutoscalerConfig::Queue { jobs_per_node: jpn },
                AutoscalerConfig::Predictive { lookback_window: 5, growth_factor: 1.3 },
            ]};
            let out = decide_scale(&c, limits(min, max), ScaleInput { now: 0, current, samples: &samples });
            let size = out.unwrap_or(current);
            if out.is_some() {
                prop_assert!(size >= min && size <= max);
            }
        }

        #[test]
        fn queue_is_monotonic_in_demand(a in 0u64..10_000, b in 0u64..10_000, jpn in 1u32..64) {
            let c = AutoscalerConfig::Queue { jobs_per_node: jpn };
            let at = |p| vec![SignalSample { at: 0, utilization: None, pending: Some(p), running: Some(0) }];
            let (sa, sb) = (at(a.min(b)), at(a.max(b)));
            prop_assert!(target(&c, input(0, &sa)) <= target(&c, input(0, &sb)));
        }
    }
}
