//! What the samplers do differently for a study of several objectives:
//! MOTPE's good trials and their weights (Optuna's multi-objective TPE),
//! and which sampler `auto` runs.
//!
//! **MOTPE** splits as Optuna's `_split_complete_trials_multi_objective`:
//! the good trials are whole fronts of non-dominated rank while they fit,
//! and the front at the cut contributes the members a greedy hypervolume
//! subset selection picks (Optuna's `_solve_hssp`), against the reference
//! point `max(1.1 w, 0.9 w)` of the front's worst point `w`. Each good
//! trial's kernel weighs its hypervolume contribution to the good set
//! (over the largest, at least [`EPS`]; infeasible good trials weigh
//! [`EPS`]), as Optuna's `_calculate_weights_below_for_multi_objective`.
//!
//! **auto** with several objectives runs MOTPE: on the `mo` suite of the
//! solver benchmark (`flotilla bench solver --suite mo`, ZDT1, ZDT2 and
//! DTLZ2, 10 seeds, tables in `docs/benchmarks.md`) it had the smaller
//! median hypervolume gap than NSGA-II on all three at budgets 100 and 300
//! (at 300: 18.9 vs 23.6, 35.2 vs 38.4, 0.46 vs 0.70); NSGA-II's default
//! population of 50 makes only a few generations at such budgets.

use super::pareto::{hypervolume, non_dominated_ranks, pareto_front};
use super::{tpe, History};
use flotilla_messages::solver::StudyConfig;

/// The weight floor of a good trial's kernel (Optuna's `EPS`).
pub const EPS: f64 = 1e-12;

/// The `k` best of `entries` (told, feasible, of `history`) by
/// non-dominated rank with a hypervolume tie-break at the cut; in no
/// particular order.
pub fn best(history: &History, entries: &[usize], k: usize) -> Vec<usize> {
    let losses: Vec<&[f64]> = entries.iter().map(|&i| losses_of(history, i)).collect();
    let ranks = non_dominated_ranks(&losses, k);
    let mut chosen: Vec<usize> = Vec::with_capacity(k);
    let mut rank = 0;
    while chosen.len() < k {
        let front: Vec<usize> = (0..entries.len()).filter(|&j| ranks[j] == rank).collect();
        if chosen.len() + front.len() <= k {
            chosen.extend(&front);
        } else {
            let points: Vec<&[f64]> = front.iter().map(|&j| losses[j]).collect();
            let picked = greedy_hypervolume_subset(&points, k - chosen.len());
            chosen.extend(picked.into_iter().map(|p| front[p]));
        }
        rank += 1;
    }
    chosen.into_iter().map(|j| entries[j]).collect()
}

fn losses_of<'h>(history: &'h History, index: usize) -> &'h [f64] {
    history.losses(index).unwrap_or(&[])
}

/// Optuna's reference point for a set of losses: `max(1.1 w, 0.9 w)` of
/// their worst point `w`, with zeros moved to [`EPS`].
pub fn reference_point(points: &[&[f64]]) -> Vec<f64> {
    let m = points.first().map_or(0, |p| p.len());
    (0..m)
        .map(|k| {
            let worst = points
                .iter()
                .map(|p| p[k])
                .fold(f64::NEG_INFINITY, f64::max);
            let reference = (1.1 * worst).max(0.9 * worst);
            if reference == 0.0 {
                EPS
            } else {
                reference
            }
        })
        .collect()
}

/// `k` of `points` (one front) chosen greedily, each adding the most
/// hypervolume to those chosen before (ties to the earlier point).
fn greedy_hypervolume_subset(points: &[&[f64]], k: usize) -> Vec<usize> {
    let reference = reference_point(points);
    if reference.iter().any(|r| !r.is_finite()) {
        return (0..k).collect();
    }
    let mut chosen: Vec<usize> = Vec::with_capacity(k);
    let mut subset: Vec<&[f64]> = Vec::with_capacity(k + 1);
    while chosen.len() < k {
        let mut best: Option<(f64, usize)> = None;
        for (j, &p) in points.iter().enumerate() {
            if chosen.contains(&j) {
                continue;
            }
            subset.push(p);
            let volume = hypervolume(&subset, &reference);
            subset.pop();
            if best.is_none_or(|(v, _)| volume > v) {
                best = Some((volume, j));
            }
        }
        let Some((_, j)) = best else { break };
        chosen.push(j);
        subset.push(points[j]);
    }
    chosen
}

/// The kernel weights of the `good` entries (in order) plus the prior's,
/// normalised: each feasible one's hypervolume contribution to the good
/// set over the largest, clipped to `[EPS, 1]`; infeasible ones [`EPS`].
pub fn good_weights(history: &History, good: &[usize]) -> Vec<f64> {
    let feasible: Vec<usize> = (0..good.len())
        .filter(|&j| history.violation(good[j]) <= 0.0)
        .collect();
    let mut weights = vec![EPS; good.len()];
    let points: Vec<&[f64]> = feasible
        .iter()
        .map(|&j| losses_of(history, good[j]))
        .collect();
    match points.len() {
        0 => {}
        1 => weights[feasible[0]] = 1.0,
        _ => {
            let contributions = contributions(&points);
            let largest = contributions.iter().copied().fold(0.0, f64::max);
            for (&j, c) in feasible.iter().zip(contributions) {
                weights[j] = if largest > 0.0 && largest.is_finite() {
                    (c / largest).clamp(EPS, 1.0)
                } else {
                    1.0
                };
            }
        }
    }
    weights.push(1.0);
    let total: f64 = weights.iter().sum();
    weights.iter_mut().for_each(|w| *w /= total);
    weights
}

/// Each point's exclusive hypervolume (what removing it loses), against
/// [`reference_point`]; 0 off the front.
fn contributions(points: &[&[f64]]) -> Vec<f64> {
    let reference = reference_point(points);
    let front = pareto_front(points);
    let on_front: Vec<&[f64]> = front.iter().map(|&i| points[i]).collect();
    let whole = hypervolume(&on_front, &reference);
    let mut contributions = vec![0.0; points.len()];
    for (k, &i) in front.iter().enumerate() {
        let others: Vec<&[f64]> = on_front
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != k)
            .map(|(_, p)| *p)
            .collect();
        contributions[i] = whole - hypervolume(&others, &reference);
    }
    contributions
}

/// `auto`'s settings for a multi-objective `config`: multi-objective TPE
/// with the config's knobs (see the module docs); `None` for a single
/// objective (then `auto`'s own rule decides).
pub fn auto_pick(config: &StudyConfig) -> Option<tpe::Settings> {
    config
        .is_multi_objective()
        .then(|| tpe::Settings::of(config))
}

/// Trial `number`'s point under `auto` for a multi-objective `config`;
/// `None` for a single objective.
pub fn auto_point(config: &StudyConfig, number: u64, history: &History) -> Option<Vec<f64>> {
    let settings = auto_pick(config)?;
    Some(tpe::point(config, &settings, number, history))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn told(
        losses: &[[f64; 2]],
        violations: &[f64],
    ) -> (Vec<f64>, Vec<Option<f64>>, Vec<f64>, Vec<f64>) {
        let points = losses
            .iter()
            .flat_map(|l| [l[0] / 10.0, l[1] / 10.0])
            .collect();
        let values = losses.iter().map(|l| Some(l[0])).collect();
        let flat = losses.iter().flat_map(|l| *l).collect();
        (points, values, flat, violations.to_vec())
    }

    #[test]
    fn the_best_are_whole_fronts_then_the_largest_hypervolume_gains() {
        let losses = [[1.0, 5.0], [2.0, 4.9], [5.0, 1.0], [3.0, 3.0], [6.0, 6.0]];
        let (points, values, flat, violations) = told(&losses, &[0.0; 5]);
        let history = History::new(2, &points, &values)
            .with_objectives(2, &flat)
            .with_violations(&violations);
        let all: Vec<usize> = (0..5).collect();
        let mut two = best(&history, &all, 2);
        two.sort_unstable();
        // Front {0, 1, 2, 3}, reference (5.5, 5.5): alone, (3, 3) spans
        // 6.25 and the others at most 2.25, so the greedy takes it first.
        assert!(two.contains(&3), "{two:?}");
        let mut four = best(&history, &all, 4);
        four.sort_unstable();
        assert_eq!(four, [0, 1, 2, 3]);
        assert_eq!(best(&history, &all, 5).len(), 5);
    }

    #[test]
    fn good_weights_follow_hypervolume_contributions() {
        let losses = [[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [2.5, 2.5]];
        let (points, values, flat, violations) = told(&losses, &[0.0, 0.0, 0.0, 0.5]);
        let history = History::new(2, &points, &values)
            .with_objectives(2, &flat)
            .with_violations(&violations);
        let w = good_weights(&history, &[0, 1, 2, 3]);
        assert_eq!(w.len(), 5);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // The infeasible trial weighs (almost) nothing; the prior weighs
        // as much as the largest contribution.
        assert!(w[3] < 1e-10);
        assert_eq!(w[4], w.iter().copied().fold(0.0, f64::max));
        // Reference (3.3, 3.3): exclusive boxes 0.3·... the middle point's
        // exclusive box is (3-2)·(3-2) = 1, the ends' 1·0.3 each.
        assert!((w[0] / w[1] - 0.3).abs() < 1e-9, "{w:?}");
        assert!((w[2] / w[1] - 0.3).abs() < 1e-9, "{w:?}");
    }

    #[test]
    fn auto_runs_motpe_for_several_objectives_only() {
        let mut config = crate::samplers::testing::unit_config(
            flotilla_messages::solver::Sampler::Auto,
            1,
            50,
            2,
            &[("n_ei_candidates", 7.0)],
        );
        assert_eq!(auto_pick(&config), None);
        config.directions = vec![Default::default(); 2];
        assert_eq!(auto_pick(&config).map(|s| s.n_ei_candidates), Some(7));
    }

    #[test]
    fn reference_points_follow_optuna() {
        let a = [2.0, -2.0, 0.0];
        assert_eq!(reference_point(&[&a]), vec![2.2, -1.8, EPS]);
    }
}
