//! The HTML report of a scenario run: one self-contained page (inline CSS
//! and inline SVG charts, no script, nothing fetched) that `flotilla
//! simulate --report` writes.
//!
//! It draws what [`super::report`] measured, nothing else: the runner fills
//! a [`SimReport`], this module turns it into a page, and the same struct
//! goes to the JSON file. Charts are drawn with `plotters`' SVG backend;
//! headings, figures and tables are plain HTML, every text from the report
//! escaped. [`inspect`] reads a rendered page (or a browser's dump of it)
//! back, for the tests.

use super::report::{FaultRow, MarkerKind, PoolSample, PoolSeries, SimReport};
use plotters::coord::types::{RangedCoordf64, RangedCoordu32};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::fmt::Write as _;

/// Appends formatted text to a `String` (which cannot fail to grow).
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

/// Width of every chart, px (the page scales it down on narrow screens).
const WIDTH: u32 = 1040;
/// The legend column at the right of each chart, px.
const LEGEND_W: u32 = 210;
/// The height of the stacked areas on a nodes chart, px; the marker strip
/// takes the rest.
const STACK_H: u32 = 300;
/// The y-axis label column, px; equal on stacked charts so their x axes
/// line up.
const Y_LABELS_W: u32 = 56;
/// System fonts, in the SVG as on the page.
const FONT: &str = "system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif";
/// More samples than this are thinned (every k-th kept): a chart is about a
/// thousand pixels wide, so more points only grow the file.
const MAX_POINTS: usize = 2_000;
/// About this many time buckets for the fault and replacement markers: ten
/// thousand markers as ticks would make a heavy, unreadable SVG.
const MARKER_BUCKETS: u64 = 200;
/// Bucket widths the markers may use, ms (round numbers read better).
const NICE_BUCKETS_MS: &[u64] = &[
    100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000,
    900_000, 1_800_000, 3_600_000,
];
/// Log lines shown; the JSON has them all.
const LOG_LIMIT: usize = 5_000;

/// Node statuses bottom of the stack first (serving, on the way out, on the
/// way in) and their colours; statuses not listed follow in grey tones.
const STATUS_COLORS: &[(&str, RGBColor)] = &[
    ("active", RGBColor(0x4c, 0xa8, 0x5a)),
    ("degraded", RGBColor(0xf2, 0xc1, 0x4e)),
    ("cordoned", RGBColor(0xe8, 0x7d, 0x3e)),
    ("draining", RGBColor(0xb3, 0x6a, 0xc9)),
    ("terminating", RGBColor(0x8c, 0x8c, 0x8c)),
    ("provisioning", RGBColor(0xa9, 0xcf, 0xec)),
    ("registering", RGBColor(0x4a, 0x86, 0xc8)),
];
const OTHER_COLORS: &[RGBColor] = &[
    RGBColor(0x5f, 0x5f, 0x5f),
    RGBColor(0xb8, 0xb8, 0xb8),
    RGBColor(0x3b, 0x3b, 0x3b),
];
const INK: RGBColor = RGBColor(0x33, 0x33, 0x33);
const GRID: RGBColor = RGBColor(0xe4, 0xe6, 0xea);
const FAULT: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const REPLACEMENT: RGBColor = RGBColor(0x0f, 0x8b, 0x8d);
const SERVING: RGBColor = RGBColor(0x2f, 0x85, 0x5a);
const BREAKER: RGBColor = RGBColor(0xe5, 0x3e, 0x3e);
const DETECT: RGBColor = RGBColor(0x5b, 0x7b, 0xd5);
const P99: RGBColor = RGBColor(0xc0, 0x39, 0x2b);

/// The page's stylesheet: a light theme, a max width, system fonts.
const CSS: &str = "
:root { color-scheme: light; }
body { margin: 0; background: #f6f7f9; color: #1f2328;
  font: 15px/1.5 system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; background: #fff;
  box-shadow: 0 0 0 1px #e4e6ea; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 19px; margin: 32px 0 8px; padding-top: 8px; border-top: 1px solid #e4e6ea; }
.desc { color: #57606a; margin: 0 0 12px; }
.verdict { display: inline-block; padding: 4px 12px; border-radius: 4px; font-weight: 600; }
.verdict.pass { background: #dafbe1; color: #116329; }
.verdict.fail { background: #ffebe9; color: #a40e26; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 16px 0; }
dl.facts dt { color: #57606a; }
dl.facts dd { margin: 0; font-variant-numeric: tabular-nums; }
code, .hash { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px;
  word-break: break-all; }
.summary { display: grid; grid-template-columns: repeat(auto-fit, minmax(130px, 1fr)); gap: 10px; }
.card { border: 1px solid #e4e6ea; border-radius: 6px; padding: 8px 12px; }
.card .label { color: #57606a; font-size: 13px; }
.card .value { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
figure.chart { margin: 0; }
figure.chart svg { display: block; width: 100%; height: auto; }
figcaption { color: #57606a; font-size: 13px; margin-top: 4px; }
.none { color: #57606a; font-style: italic; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 4px 10px; border-bottom: 1px solid #eaecef; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.time { white-space: nowrap; font-variant-numeric: tabular-nums; color: #57606a; }
tr.bad td { background: #fff5f5; }
td.bad { color: #a40e26; font-weight: 700; }
td.pass { color: #116329; font-weight: 600; }
td.fail { color: #a40e26; font-weight: 700; }
tfoot td { font-weight: 600; }
";

/// The report as one self-contained HTML page.
pub fn render_html(report: &SimReport) -> String {
    let mut out = String::with_capacity(512 * 1024);
    page_head(&mut out, report);
    header(&mut out, report);
    pool_charts(&mut out, report);
    histograms(&mut out, report);
    fault_table(&mut out, report);
    breaker_table(&mut out, report);
    checks_table(&mut out, report);
    log_table(&mut out, report);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

// ---------------------------------------------------------------- the page

fn page_head(out: &mut String, report: &SimReport) {
    put!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Flotilla simulation: {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        esc(&report.scenario)
    );
}

fn header(out: &mut String, report: &SimReport) {
    put!(
        out,
        "<header>\n<h1 id=\"scenario\">{}</h1>\n<p class=\"desc\">{}</p>\n",
        esc(&report.scenario),
        esc(&report.description)
    );
    verdict(out, report);
    out.push_str("<dl class=\"facts\">\n");
    let facts = [
        ("seed", "Seed", report.seed.to_string()),
        ("duration", "Virtual duration", clock(report.duration_ms)),
        ("events", "Events", report.events.to_string()),
    ];
    for (id, label, value) in facts {
        put!(
            out,
            "<dt>{label}</dt><dd id=\"{id}\">{}</dd>\n",
            esc(&value)
        );
    }
    put!(
        out,
        "<dt>Log hash</dt><dd><code class=\"hash\" id=\"log-hash\">{}</code></dd>\n</dl>\n",
        esc(&report.log_hash)
    );
    summary_cards(out, report);
    out.push_str("</header>\n");
}

fn verdict(out: &mut String, report: &SimReport) {
    let failed = report.checks.iter().filter(|c| !c.passed).count();
    let total = report.checks.len();
    let (class, text) = match (total, failed) {
        (0, _) => ("pass", "No checks in this scenario".to_string()),
        (_, 0) => ("pass", format!("All {total} checks passed")),
        _ => ("fail", format!("{failed} of {total} checks FAILED")),
    };
    put!(
        out,
        "<p class=\"verdict {class}\" id=\"verdict\">{}</p>\n",
        esc(&text)
    );
}

fn summary_cards(out: &mut String, report: &SimReport) {
    let q = |v: &[f64], q: f64| {
        if v.is_empty() {
            "–".to_string()
        } else {
            secs(SimReport::quantile(v, q))
        }
    };
    let cards = [
        (
            "faults-injected",
            "Faults injected",
            report.faults_injected().to_string(),
        ),
        (
            "replacements",
            "Replacements requested",
            report.replacements_requested().to_string(),
        ),
        ("detect-p50", "Time to detect p50", q(&report.detect_s, 0.5)),
        (
            "detect-p99",
            "Time to detect p99",
            q(&report.detect_s, 0.99),
        ),
        (
            "replace-p50",
            "Time to replace p50",
            q(&report.replace_s, 0.5),
        ),
        (
            "replace-p99",
            "Time to replace p99",
            q(&report.replace_s, 0.99),
        ),
        ("wall-time", "Wall time", wall(report.wall_ms)),
    ];
    out.push_str("<div class=\"summary\">\n");
    for (id, label, value) in cards {
        put!(
            out,
            "<div class=\"card\"><div class=\"label\">{label}</div>\
             <div class=\"value\" id=\"{id}\">{}</div></div>\n",
            esc(&value)
        );
    }
    out.push_str("</div>\n");
}

fn pool_charts(out: &mut String, report: &SimReport) {
    if report.pools.is_empty() {
        out.push_str("<h2>Pools</h2>\n<p class=\"none\">none: no pool was sampled</p>\n");
        return;
    }
    for (pool, slug) in report.pools.iter().zip(slugs(&report.pools)) {
        let end = end_minutes(report, pool);
        let faults = count_markers(pool, MarkerKind::Fault);
        let replacements = count_markers(pool, MarkerKind::Replacement);
        let nodes_caption = format!(
            "Nodes by status, stacked (gone nodes not counted). Below: {faults} faults injected \
             (up) and {replacements} replacements requested (down), counted per {}.",
            span(bucket_ms(end_ms(end)))
        );
        chart_block(
            out,
            &format!("Nodes by state — {}", pool.name),
            ChartId("nodes", &slug),
            nodes_chart(pool, end),
            &nodes_caption,
        );
        let periods = pool.breaker_periods.len();
        let serving_caption = format!(
            "Serving = active + degraded; dashed: the autoscaler's target; shaded: circuit \
             breaker open ({periods} period{}).",
            if periods == 1 { "" } else { "s" }
        );
        chart_block(
            out,
            &format!("Serving capacity vs target — {}", pool.name),
            ChartId("serving", &slug),
            serving_chart(pool, end),
            &serving_caption,
        );
    }
}

fn histograms(out: &mut String, report: &SimReport) {
    let parts = [
        (
            "Time to detect",
            "detect",
            &report.detect_s,
            "detected faults",
            "fault → first cordon of its node",
            DETECT,
        ),
        (
            "Time to replace",
            "replace",
            &report.replace_s,
            "replacements",
            "fault → replacement registered",
            REPLACEMENT,
        ),
    ];
    for (title, id, values, what, measures, color) in parts {
        if values.is_empty() {
            put!(
                out,
                "<h2>{title}</h2>\n<p class=\"none\" id=\"{id}-none\">none: no {what}</p>\n"
            );
            continue;
        }
        let caption = format!(
            "{} {what}; p50 {}, p99 {} ({measures}).",
            values.len(),
            secs(SimReport::quantile(values, 0.5)),
            secs(SimReport::quantile(values, 0.99))
        );
        chart_block(
            out,
            title,
            ChartId(id, "histogram"),
            histogram(values, what, color),
            &caption,
        );
    }
}

/// A chart's element id: its kind and what it shows.
struct ChartId<'a>(&'a str, &'a str);

/// A `<h2>` title and a figure with the chart, or a note when it could not
/// be drawn (a plotters error is a bug, but the rest of the page is still
/// worth having).
fn chart_block(
    out: &mut String,
    title: &str,
    id: ChartId,
    chart: Result<String, String>,
    caption: &str,
) {
    put!(out, "<h2>{}</h2>\n", esc(title));
    match chart {
        Ok(svg) => put!(
            out,
            "<figure class=\"chart {kind}\" id=\"{kind}-{what}\">\n{svg}<figcaption>{}</figcaption>\n</figure>\n",
            esc(caption),
            kind = id.0,
            what = id.1,
        ),
        Err(e) => put!(
            out,
            "<p class=\"none\">chart not drawn: {}</p>\n",
            esc(&e)
        ),
    }
}

fn fault_table(out: &mut String, report: &SimReport) {
    out.push_str("<h2>Faults by type</h2>\n");
    if report.faults.is_empty() {
        out.push_str("<p class=\"none\">none: no fault was injected</p>\n");
        return;
    }
    out.push_str(
        "<table id=\"faults\">\n<thead><tr><th>Fault type</th><th class=\"num\">Injected</th>\
         <th class=\"num\">Detected</th><th class=\"num\">Replaced</th>\
         <th class=\"num\">Wrongly replaced</th></tr></thead>\n<tbody>\n",
    );
    for f in &report.faults {
        let bad = f.wrongly_replaced > 0;
        put!(
            out,
            "<tr{}><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num{}\">{}</td></tr>\n",
            if bad { " class=\"bad\"" } else { "" },
            esc(&f.fault_type),
            f.injected,
            f.detected,
            f.replaced,
            if bad { " bad" } else { "" },
            f.wrongly_replaced
        );
    }
    let sum = |field: fn(&FaultRow) -> u32| -> u64 {
        report.faults.iter().map(|f| u64::from(field(f))).sum()
    };
    put!(
        out,
        "</tbody>\n<tfoot><tr><td>all</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td></tr></tfoot>\n</table>\n",
        sum(|f| f.injected),
        sum(|f| f.detected),
        sum(|f| f.replaced),
        sum(|f| f.wrongly_replaced)
    );
}

fn breaker_table(out: &mut String, report: &SimReport) {
    out.push_str("<h2>Circuit breaker</h2>\n");
    if report.pools.is_empty() {
        out.push_str("<p class=\"none\">none: no pools</p>\n");
        return;
    }
    out.push_str(
        "<table id=\"breaker\">\n<thead><tr><th>Pool</th><th>Opened</th><th>Closed</th>\
         <th class=\"num\">Open for</th></tr></thead>\n<tbody>\n",
    );
    for pool in &report.pools {
        let name = esc(&pool.name);
        if pool.breaker_periods.is_empty() {
            put!(
                out,
                "<tr><td>{name}</td><td colspan=\"3\" class=\"none\">never opened</td></tr>\n"
            );
        }
        for &(opened, closed) in &pool.breaker_periods {
            let until = closed.unwrap_or(report.duration_ms.max(opened));
            let closed = closed.map_or("still open at the end".into(), clock);
            put!(
                out,
                "<tr><td>{name}</td><td class=\"time\">{}</td><td class=\"time\">{}</td>\
                 <td class=\"num\">{}</td></tr>\n",
                clock(opened),
                esc(&closed),
                clock(until.saturating_sub(opened))
            );
        }
    }
    out.push_str("</tbody>\n</table>\n");
}

fn checks_table(out: &mut String, report: &SimReport) {
    out.push_str("<h2>Checks</h2>\n");
    if report.checks.is_empty() {
        out.push_str("<p class=\"none\">none: the scenario checks nothing</p>\n");
        return;
    }
    out.push_str(
        "<table id=\"checks\">\n<thead><tr><th>At</th><th>What</th><th>Expected</th>\
         <th>Seen</th><th>Result</th></tr></thead>\n<tbody>\n",
    );
    for c in &report.checks {
        let (row, cell, result) = if c.passed {
            ("", "pass", "pass")
        } else {
            (" class=\"bad\"", "fail", "FAIL")
        };
        put!(
            out,
            "<tr{row}><td class=\"time\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"{cell}\">{result}</td></tr>\n",
            clock(c.at_ms),
            esc(&c.what),
            esc(&c.expected),
            esc(&c.seen)
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

fn log_table(out: &mut String, report: &SimReport) {
    out.push_str("<h2>Log</h2>\n");
    if report.log.is_empty() {
        out.push_str("<p class=\"none\">none: nothing was logged</p>\n");
        return;
    }
    out.push_str(
        "<table id=\"log\">\n<thead><tr><th>Virtual time</th><th>Message</th></tr></thead>\n<tbody>\n",
    );
    for line in report.log.iter().take(LOG_LIMIT) {
        put!(
            out,
            "<tr><td class=\"time\">{}</td><td>{}</td></tr>\n",
            clock(line.at_ms),
            esc(&line.message)
        );
    }
    out.push_str("</tbody>\n</table>\n");
    if report.log.len() > LOG_LIMIT {
        put!(
            out,
            "<p class=\"none\">… and {} more lines (all are in the JSON report)</p>\n",
            report.log.len() - LOG_LIMIT
        );
    }
}

// -------------------------------------------------------------- the charts

type Drawn = Result<(), Box<dyn std::error::Error>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// An SVG of `size` drawn by `draw` on a white background.
fn svg<F>(size: (u32, u32), draw: F) -> Result<String, String>
where
    F: FnOnce(&Area<'_>) -> Drawn,
{
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(&root).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(buf)
}

/// Stacked areas of nodes by status, and under them a strip of faults
/// (up) and replacements (down) counted per time bucket.
fn nodes_chart(pool: &PoolSeries, end_min: f64) -> Result<String, String> {
    svg((WIDTH, 430), |root| {
        let (plot, legend_area) = root.split_horizontally(WIDTH - LEGEND_W);
        let (upper, lower) = plot.split_vertically(STACK_H);
        let stack = stack_order(&pool.samples);
        status_areas(&upper, pool, &stack, end_min)?;
        let bucket = bucket_ms(end_ms(end_min));
        marker_strip(&lower, pool, end_min, bucket)?;
        let mut items: Vec<(String, Swatch)> = stack
            .iter()
            .enumerate()
            .rev()
            .map(|(i, s)| (s.to_string(), Swatch::Fill(status_color(s, i).to_rgba())))
            .collect();
        items.push(("total".into(), Swatch::Line(INK)));
        legend(&legend_area, 20, &items)?;
        let per = span(bucket);
        let markers = [
            (
                format!("faults / {per} (up)"),
                Swatch::Fill(FAULT.to_rgba()),
            ),
            (
                format!("replacements / {per} (down)"),
                Swatch::Fill(REPLACEMENT.to_rgba()),
            ),
        ];
        // Beside the strip they explain.
        legend(&legend_area, STACK_H as i32 + 20, &markers)
    })
}

fn status_areas(area: &Area<'_>, pool: &PoolSeries, stack: &[&str], end_min: f64) -> Drawn {
    let samples = thin(&pool.samples);
    let totals: Vec<u32> = samples
        .iter()
        .map(|s| s.counts.values().sum::<u32>())
        .collect();
    let y_max = headroom(totals.iter().copied().max().unwrap_or(0));
    let mut chart = ChartBuilder::on(area)
        .margin_top(12)
        .margin_right(16)
        .margin_bottom(10)
        .y_label_area_size(Y_LABELS_W)
        .build_cartesian_2d(0f64..end_min, 0u32..y_max)?;
    mesh(&mut chart, TIME_AXIS, "nodes")?;
    // Each band is its own polygon, lower edge to upper edge, so a status
    // that never shows costs nothing and none hides another.
    let mut lower = vec![0u32; samples.len()];
    for (i, status) in stack.iter().enumerate() {
        let upper: Vec<u32> = samples
            .iter()
            .zip(&lower)
            .map(|(s, l)| l + s.counts.get(*status).copied().unwrap_or(0))
            .collect();
        let mut band: Vec<(f64, u32)> = samples
            .iter()
            .zip(&upper)
            .map(|(s, u)| (minutes(s.at_ms), *u))
            .collect();
        band.extend(
            samples
                .iter()
                .zip(&lower)
                .rev()
                .map(|(s, l)| (minutes(s.at_ms), *l)),
        );
        chart.draw_series(std::iter::once(Polygon::new(
            band,
            status_color(status, i).filled(),
        )))?;
        lower = upper;
    }
    let total = samples
        .iter()
        .zip(totals)
        .map(|(s, t)| (minutes(s.at_ms), t));
    chart.draw_series(LineSeries::new(total, INK.stroke_width(1)))?;
    Ok(())
}

/// Faults and replacements counted per `bucket_ms`, as bars up (faults)
/// and down (replacements) from a zero line, on the pool's time axis.
fn marker_strip(area: &Area<'_>, pool: &PoolSeries, end_min: f64, bucket_ms: u64) -> Drawn {
    let faults = bucket_counts(pool, MarkerKind::Fault, bucket_ms);
    let replacements = bucket_counts(pool, MarkerKind::Replacement, bucket_ms);
    let peak = faults
        .iter()
        .chain(&replacements)
        .copied()
        .max()
        .unwrap_or(0);
    let m = i32::try_from(peak.max(1)).unwrap_or(i32::MAX / 2);
    let mut chart = ChartBuilder::on(area)
        .margin_top(6)
        .margin_right(16)
        .margin_bottom(4)
        .y_label_area_size(Y_LABELS_W)
        .x_label_area_size(40)
        .build_cartesian_2d(0f64..end_min, -m..m)?;
    let y_fmt = |v: &i32| v.unsigned_abs().to_string();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_y_mesh()
        .axis_style(INK)
        .label_style((FONT, 13))
        .x_label_formatter(&clock_of_minutes)
        .y_label_formatter(&y_fmt)
        .x_labels(12)
        .y_labels(3)
        .x_desc("virtual time")
        .axis_desc_style((FONT, 13))
        .draw()?;
    let width = bucket_ms as f64 / 60_000.0;
    let bars = |counts: Vec<u32>, sign: i32, color: RGBColor| {
        counts
            .into_iter()
            .enumerate()
            .filter(|(_, n)| *n > 0)
            .map(move |(b, n)| {
                let x0 = b as f64 * width + width * 0.1;
                let x1 = x0 + width * 0.8;
                let y = sign * i32::try_from(n).unwrap_or(i32::MAX / 2);
                Polygon::new(vec![(x0, 0), (x0, y), (x1, y), (x1, 0)], color.filled())
            })
    };
    chart.draw_series(bars(faults, 1, FAULT))?;
    chart.draw_series(bars(replacements, -1, REPLACEMENT))?;
    chart.draw_series(LineSeries::new([(0.0, 0), (end_min, 0)], INK))?;
    Ok(())
}

/// Serving nodes against the target, circuit-breaker-open periods shaded.
fn serving_chart(pool: &PoolSeries, end_min: f64) -> Result<String, String> {
    svg((WIDTH, 300), |root| {
        let (plot, legend_area) = root.split_horizontally(WIDTH - LEGEND_W);
        let samples = thin(&pool.samples);
        let peak = samples.iter().map(|s| s.serving.max(s.target)).max();
        let y_max = headroom(peak.unwrap_or(0));
        let mut chart = ChartBuilder::on(&plot)
            .margin_top(12)
            .margin_right(16)
            .margin_bottom(4)
            .y_label_area_size(Y_LABELS_W)
            .x_label_area_size(40)
            .build_cartesian_2d(0f64..end_min, 0u32..y_max)?;
        mesh(&mut chart, TIME_AXIS, "nodes")?;
        let end_ms = end_ms(end_min);
        chart.draw_series(pool.breaker_periods.iter().map(|&(opened, closed)| {
            let closed = closed.unwrap_or(end_ms).min(end_ms);
            Rectangle::new(
                [(minutes(opened), 0), (minutes(closed), y_max)],
                BREAKER.mix(0.18).filled(),
            )
        }))?;
        let target = samples.iter().map(|s| (minutes(s.at_ms), s.target));
        chart.draw_series(DashedLineSeries::new(target, 7, 5, INK.stroke_width(2)))?;
        let serving = samples.iter().map(|s| (minutes(s.at_ms), s.serving));
        chart.draw_series(LineSeries::new(serving, SERVING.stroke_width(2)))?;
        let items = [
            ("serving".to_string(), Swatch::Line(SERVING)),
            ("target".to_string(), Swatch::Dashed(INK)),
            ("breaker open".to_string(), Swatch::Fill(BREAKER.mix(0.18))),
        ];
        legend(&legend_area, 20, &items)
    })
}

/// A chart's axes and horizontal grid lines, the x axis labelled by
/// `x_fmt` (counts go up the y axis).
fn mesh<'a>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordu32>>,
    (x_desc, x_fmt): (&str, &dyn Fn(&f64) -> String),
    y_desc: &str,
) -> Drawn {
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .bold_line_style(GRID)
        .axis_style(INK)
        .label_style((FONT, 13))
        .x_label_formatter(x_fmt)
        .x_labels(12)
        .y_labels(6)
        .x_desc(x_desc)
        .y_desc(y_desc)
        .axis_desc_style((FONT, 13))
        .draw()?;
    Ok(())
}

/// The x axis of the time charts: virtual minutes, labelled as clock times.
const TIME_AXIS: (&str, &dyn Fn(&f64) -> String) = ("virtual time", &clock_of_minutes);

fn clock_of_minutes(m: &f64) -> String {
    clock((m * 60_000.0).round().max(0.0) as u64)
}

/// A histogram of `values` (seconds) with its p50 and p99 marked.
fn histogram(values: &[f64], what: &str, color: RGBColor) -> Result<String, String> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let (lo, hi) = hist_range(&finite);
    let counts = bin_counts(&finite, lo, hi);
    let width = (hi - lo) / counts.len() as f64;
    let p50 = SimReport::quantile(&finite, 0.5);
    let p99 = SimReport::quantile(&finite, 0.99);
    svg((WIDTH, 280), |root| {
        let (plot, legend_area) = root.split_horizontally(WIDTH - LEGEND_W);
        let y_max = headroom(counts.iter().copied().max().unwrap_or(0));
        let mut chart = ChartBuilder::on(&plot)
            .margin_top(12)
            .margin_right(16)
            .margin_bottom(4)
            .y_label_area_size(Y_LABELS_W)
            .x_label_area_size(40)
            .build_cartesian_2d(lo..hi, 0u32..y_max)?;
        let x_fmt = |s: &f64| trim_float(*s);
        mesh(&mut chart, ("seconds", &x_fmt), "count")?;
        chart.draw_series(
            counts
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(b, n)| {
                    let x0 = lo + b as f64 * width + width * 0.05;
                    let x1 = x0 + width * 0.9;
                    Polygon::new(vec![(x0, 0), (x0, *n), (x1, *n), (x1, 0)], color.filled())
                }),
        )?;
        for (at, style) in [(p50, INK.stroke_width(2)), (p99, P99.stroke_width(2))] {
            chart.draw_series(LineSeries::new([(at, 0), (at, y_max)], style))?;
        }
        let items = [
            (what.to_string(), Swatch::Fill(color.to_rgba())),
            (format!("p50 {}", secs(p50)), Swatch::Line(INK)),
            (format!("p99 {}", secs(p99)), Swatch::Line(P99)),
        ];
        legend(&legend_area, 20, &items)
    })
}

/// `values` counted in equal bins over `lo..=hi`: about the square root of
/// their number, 5 to 40.
fn bin_counts(values: &[f64], lo: f64, hi: f64) -> Vec<u32> {
    let bins = ((values.len() as f64).sqrt().ceil() as usize).clamp(5, 40);
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0u32; bins];
    for v in values {
        let b = ((v - lo) / width).floor().max(0.0) as usize;
        counts[b.min(bins - 1)] += 1;
    }
    counts
}

/// The x range of a histogram: from 0, or from near the smallest value when
/// all are far from 0 (so a tight cluster is not squeezed into one bar);
/// never empty.
fn hist_range(values: &[f64]) -> (f64, f64) {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !min.is_finite() || !max.is_finite() {
        return (0.0, 1.0);
    }
    let lo = if min > 0.25 * max {
        min.floor()
    } else {
        0.0_f64.min(min)
    };
    if max - lo < 1e-9 {
        // All equal: a one-second window around them.
        let from = (max - 0.5).max(0.0);
        return (from, from + 1.0);
    }
    // A little room right of the largest value, where p99 often sits.
    (lo, max + (max - lo) * 0.02)
}

/// How a legend entry is drawn.
enum Swatch {
    Fill(RGBAColor),
    Line(RGBColor),
    Dashed(RGBColor),
}

/// Draws `items` one under another in a legend column, from `top` px.
fn legend(area: &Area<'_>, top: i32, items: &[(String, Swatch)]) -> Drawn {
    let text = TextStyle::from((FONT, 13).into_font())
        .color(&INK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (label, swatch)) in items.iter().enumerate() {
        let y = top + 22 * i as i32;
        match swatch {
            Swatch::Fill(c) => {
                area.draw(&Rectangle::new([(14, y - 6), (30, y + 6)], c.filled()))?
            }
            Swatch::Line(c) => {
                area.draw(&PathElement::new(vec![(12, y), (32, y)], c.stroke_width(3)))?
            }
            Swatch::Dashed(c) => {
                for x in [12, 24] {
                    area.draw(&PathElement::new(
                        vec![(x, y), (x + 8, y)],
                        c.stroke_width(2),
                    ))?;
                }
            }
        }
        area.draw(&Text::new(label.clone(), (40, y), text.clone()))?;
    }
    Ok(())
}

// ------------------------------------------------------------- the numbers

/// The statuses `samples` show, bottom of the stack first: the known ones
/// in [`STATUS_COLORS`] order, then any others by name.
fn stack_order(samples: &[PoolSample]) -> Vec<&str> {
    let mut present: std::collections::BTreeSet<&str> = samples
        .iter()
        .flat_map(|s| s.counts.iter().filter(|(_, n)| **n > 0))
        .map(|(status, _)| status.as_str())
        .collect();
    let mut order: Vec<&str> = STATUS_COLORS
        .iter()
        .map(|(status, _)| *status)
        .filter(|status| present.remove(status))
        .collect();
    order.extend(present);
    order
}

/// A status's colour; `i` (its place in the stack) picks one for an
/// unknown status.
fn status_color(status: &str, i: usize) -> RGBColor {
    STATUS_COLORS
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(OTHER_COLORS[i % OTHER_COLORS.len()], |(_, c)| *c)
}

/// At most [`MAX_POINTS`] samples: every k-th, the last always kept.
fn thin(samples: &[PoolSample]) -> Vec<&PoolSample> {
    let stride = samples.len().div_ceil(MAX_POINTS).max(1);
    let mut kept: Vec<&PoolSample> = samples.iter().step_by(stride).collect();
    if let Some(last) = samples.last() {
        if !std::ptr::eq(*kept.last().expect("non-empty"), last) {
            kept.push(last);
        }
    }
    kept
}

/// A y range with a little room above `peak`, never empty.
fn headroom(peak: u32) -> u32 {
    peak + (peak / 12).max(1)
}

/// The virtual time a pool's charts cover, minutes (plotters puts its round
/// ticks on whole minutes then): the run, or the last thing recorded if
/// later; at least a second.
fn end_minutes(report: &SimReport, pool: &PoolSeries) -> f64 {
    let last_sample = pool.samples.last().map_or(0, |s| s.at_ms);
    let last_marker = pool.markers.iter().map(|m| m.at_ms).max().unwrap_or(0);
    let end = report
        .duration_ms
        .max(last_sample)
        .max(last_marker)
        .max(1_000);
    minutes(end)
}

fn minutes(ms: u64) -> f64 {
    ms as f64 / 60_000.0
}

fn end_ms(end_min: f64) -> u64 {
    (end_min * 60_000.0).round() as u64
}

/// The marker bucket width for a run of `end_ms`: the first round width
/// giving at most about [`MARKER_BUCKETS`] buckets.
fn bucket_ms(end_ms: u64) -> u64 {
    let want = end_ms.div_ceil(MARKER_BUCKETS).max(1);
    NICE_BUCKETS_MS
        .iter()
        .copied()
        .find(|&b| b >= want)
        .unwrap_or(want)
}

fn bucket_counts(pool: &PoolSeries, kind: MarkerKind, bucket_ms: u64) -> Vec<u32> {
    let mut counts: Vec<u32> = Vec::new();
    for m in pool.markers.iter().filter(|m| m.kind == kind) {
        let b = (m.at_ms / bucket_ms) as usize;
        if counts.len() <= b {
            counts.resize(b + 1, 0);
        }
        counts[b] += 1;
    }
    counts
}

fn count_markers(pool: &PoolSeries, kind: MarkerKind) -> usize {
    pool.markers.iter().filter(|m| m.kind == kind).count()
}

/// Element ids for the pools' charts: the name's runs of ASCII letters,
/// digits, `-` and `_` joined by `-`, with `-<index>` added when two pools
/// would share one (or the name has none).
fn slugs(pools: &[PoolSeries]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    pools
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let base = p
                .name
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join("-");
            let slug = if seen.contains(&base) || base.is_empty() {
                format!("{base}-{i}")
            } else {
                base
            };
            seen.insert(slug.clone());
            slug
        })
        .collect()
}

// ------------------------------------------------------------ formatting

/// Text made safe for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Virtual ms as `mm:ss` (`h:mm:ss` from an hour), `.mmm` added when not on
/// a whole second.
fn clock(ms: u64) -> String {
    let s = ms / 1000;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m:02}:{s:02}")
    };
    if !ms.is_multiple_of(1000) {
        put!(out, ".{:03}", ms % 1000);
    }
    out
}

/// A time span in its largest whole unit (bucket widths are round).
fn span(ms: u64) -> String {
    match ms {
        ms if ms < 1_000 => format!("{ms} ms"),
        ms if ms < 60_000 => format!("{} s", trim_float(ms as f64 / 1_000.0)),
        ms if ms < 3_600_000 => format!("{} min", trim_float(ms as f64 / 60_000.0)),
        ms => format!("{} h", trim_float(ms as f64 / 3_600_000.0)),
    }
}

/// Seconds with one decimal (two under a second).
fn secs(s: f64) -> String {
    if s.abs() < 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.1} s")
    }
}

/// A wall-clock duration: ms under a second, else seconds.
fn wall(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else {
        format!("{:.2} s", ms as f64 / 1_000.0)
    }
}

/// A number without trailing zeros (axis labels: `2.5`, `10`).
fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

pub mod inspect {
    //! Reading a rendered report back: its charts, an element's text, a
    //! table's cells. For checks of a page as [`render_html`](super::render_html)
    //! wrote it or as a browser dumps its DOM (which closes empty SVG
    //! elements with end tags and adds `<tbody>`): the unit tests here and
    //! the end-to-end test in a real browser use it.

    /// One chart of the page.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Figure {
        /// The figure's `id`.
        pub id: String,
        /// The text of the `<h2>` before it.
        pub title: String,
        /// Whether it holds an `<svg>`.
        pub has_svg: bool,
        /// Data shapes in it: polygons and polylines of three points or
        /// more, and paths with a non-empty `d` (axes and grid lines are
        /// two-point polylines, so they do not count).
        pub shapes: usize,
    }

    /// Every `<figure class="chart …">` of `html`, in page order.
    pub fn figures(html: &str) -> Vec<Figure> {
        let mut found = Vec::new();
        let mut from = 0;
        while let Some(start) = html[from..].find("<figure").map(|i| i + from) {
            let end = html[start..]
                .find("</figure>")
                .map_or(html.len(), |i| i + start);
            let body = &html[start..end];
            let open = &body[..body.find('>').unwrap_or(body.len())];
            if attr(open, "class").is_some_and(|c| c.split(' ').any(|w| w == "chart")) {
                found.push(Figure {
                    id: attr(open, "id").unwrap_or_default(),
                    title: headings(&html[..start]).pop().unwrap_or_default(),
                    has_svg: body.contains("<svg"),
                    shapes: shapes(body),
                });
            }
            from = end;
        }
        found
    }

    /// The texts of every `<h2>`, in page order.
    pub fn headings(html: &str) -> Vec<String> {
        html.split("<h2")
            .skip(1)
            .map(|rest| {
                let text = &rest[rest.find('>').map_or(rest.len(), |i| i + 1)..];
                let end = text.find("</h2>").unwrap_or(text.len());
                decode(&strip_tags(&text[..end])).trim().to_string()
            })
            .collect()
    }

    /// The text of the element whose `id` is `id` (its text up to the next
    /// tag: meant for leaf elements), entities decoded.
    pub fn text_by_id(html: &str, id: &str) -> Option<String> {
        let at = html.find(&format!("id=\"{id}\""))?;
        let rest = &html[at..];
        let text = &rest[rest.find('>')? + 1..];
        Some(
            decode(&text[..text.find('<').unwrap_or(text.len())])
                .trim()
                .to_string(),
        )
    }

    /// Every row of the `<table id="…">` (header and footer rows too), as
    /// the texts of its cells.
    pub fn table(html: &str, id: &str) -> Vec<Vec<String>> {
        let Some(at) = html.find(&format!("<table id=\"{id}\"")) else {
            return Vec::new();
        };
        let body = &html[at..];
        let body = &body[..body.find("</table>").unwrap_or(body.len())];
        body.split("<tr")
            .skip(1)
            .map(cells)
            .filter(|row| !row.is_empty())
            .collect()
    }

    fn cells(row: &str) -> Vec<String> {
        let mut cells = Vec::new();
        let mut rest = row;
        while let Some(start) = ["<td", "<th"].iter().filter_map(|t| rest.find(t)).min() {
            let after = &rest[start..];
            let open_end = after.find('>').map_or(after.len(), |i| i + 1);
            let content = &after[open_end..];
            let close = ["</td>", "</th>"]
                .iter()
                .filter_map(|t| content.find(t))
                .min()
                .unwrap_or(content.len());
            cells.push(decode(&strip_tags(&content[..close])).trim().to_string());
            rest = &content[close..];
        }
        cells
    }

    /// Counts the data shapes among the tags of `body`.
    fn shapes(body: &str) -> usize {
        body.split('<')
            .filter_map(|tag| {
                let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
                let name = tag.split([' ', '/', '\n']).next().unwrap_or("");
                match name {
                    "polygon" | "polyline" => attr(tag, "points")
                        .map(|p| p.split_whitespace().filter(|xy| xy.contains(',')).count() >= 3),
                    "path" => attr(tag, "d").map(|d| !d.trim().is_empty()),
                    _ => None,
                }
            })
            .filter(|drawn| *drawn)
            .count()
    }

    /// A double-quoted attribute's value in an opening tag.
    fn attr(tag: &str, name: &str) -> Option<String> {
        let key = format!(" {name}=\"");
        let start = tag.find(&key)? + key.len();
        let len = tag[start..].find('"')?;
        Some(decode(&tag[start..start + len]))
    }

    fn strip_tags(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut in_tag = false;
        for c in s.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => out.push(c),
                _ => {}
            }
        }
        out
    }

    /// The entities [`super::render_html`] and browsers write.
    fn decode(s: &str) -> String {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&apos;", "'")
            .replace("&nbsp;", "\u{a0}")
            .replace("&amp;", "&")
    }
}

#[cfg(test)]
mod tests {
    use super::inspect::{figures, table, text_by_id};
    use super::*;
    use crate::scenario::report::{CheckResult, LogLine, Marker};
    use std::time::Instant;

    /// A report shaped like a real run: `pools` pools of about
    /// `nodes_per_pool` nodes, `samples` samples each over 30 virtual
    /// minutes, `markers` fault and replacement markers and `timings`
    /// detect and replace times in all.
    fn synthetic(
        pools: usize,
        nodes_per_pool: u32,
        samples: u64,
        markers: u64,
        timings: usize,
    ) -> SimReport {
        let duration_ms = 30 * 60_000;
        let names = ["pool-a", "b & <c>", "pool-c", "pool-d"];
        SimReport {
            scenario: "xid <79> & co".into(),
            description: "Faults \"everywhere\" & <b>replacements</b>".into(),
            seed: 7,
            duration_ms,
            log_hash: "ab12cd34ef56".repeat(5),
            events: 123_457,
            wall_ms: 2_345,
            pools: (0..pools)
                .map(|p| PoolSeries {
                    name: names[p % names.len()].into(),
                    samples: (0..samples)
                        .map(|i| sample(i * duration_ms / samples, nodes_per_pool))
                        .collect(),
                    markers: (0..markers / pools as u64)
                        .map(|i| marker(i, duration_ms, markers / pools as u64))
                        .collect(),
                    breaker_periods: vec![(300_000, Some(420_000)), (1_500_000, None)],
                })
                .collect(),
            detect_s: (0..timings)
                .map(|i| 2.0 + (i * 37 % 101) as f64 * 0.3)
                .collect(),
            replace_s: (0..timings).map(|i| 60.0 + (i * 53 % 97) as f64).collect(),
            faults: vec![
                fault("xid 79", 12, 12, 11, 0),
                fault("xid 13", 5, 1, 1, 1),
                fault("temperature & <hot>", 3, 2, 0, 0),
            ],
            checks: vec![
                check("node_status gpu-1", "cordoned", "cordoned", true),
                check("node_count all", ">= 8", "6 <too few>", false),
            ],
            log: vec![
                LogLine {
                    at_ms: 61_500,
                    message: "<script>alert(1)</script> & friends".into(),
                },
                LogLine {
                    at_ms: 3_725_000,
                    message: "late".into(),
                },
            ],
        }
    }

    fn sample(at_ms: u64, nodes: u32) -> PoolSample {
        let wave = ((at_ms / 7_000) % 13) as u32 % (nodes / 3).max(1);
        let counts = [
            ("active", nodes - nodes / 10 - wave),
            ("degraded", wave / 2),
            ("cordoned", wave - wave / 2),
            ("draining", nodes / 40),
            ("provisioning", nodes / 20),
            ("registering", nodes / 40),
            ("rebooting", u32::from(wave > 10)),
        ];
        let active = counts[0].1;
        PoolSample {
            at_ms,
            counts: counts.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            serving: active + wave / 2,
            target: nodes,
        }
    }

    fn marker(i: u64, duration_ms: u64, n: u64) -> Marker {
        let at_ms = i * duration_ms / n.max(1);
        let (kind, detail) = if i % 3 == 2 {
            (MarkerKind::Replacement, format!("gpu-new-{i}"))
        } else {
            (MarkerKind::Fault, "xid 79".to_string())
        };
        Marker {
            at_ms,
            kind,
            node: format!("gpu-{i}"),
            detail,
        }
    }

    fn fault(t: &str, injected: u32, detected: u32, replaced: u32, wrong: u32) -> FaultRow {
        FaultRow {
            fault_type: t.into(),
            injected,
            detected,
            replaced,
            wrongly_replaced: wrong,
        }
    }

    fn check(what: &str, expected: &str, seen: &str, passed: bool) -> CheckResult {
        CheckResult {
            at_ms: 600_000,
            what: what.into(),
            expected: expected.into(),
            seen: seen.into(),
            passed,
        }
    }

    #[test]
    fn every_chart_has_its_title_and_a_drawing() {
        let report = synthetic(2, 40, 300, 60, 200);
        let html = render_html(&report);
        let mut expected = Vec::new();
        for pool in &report.pools {
            expected.push(format!("Nodes by state — {}", pool.name));
            expected.push(format!("Serving capacity vs target — {}", pool.name));
        }
        expected.extend(["Time to detect".to_string(), "Time to replace".to_string()]);
        for title in &expected {
            assert!(
                html.contains(&format!("<h2>{}</h2>", esc(title))),
                "{title}"
            );
        }
        let charts = figures(&html);
        let titles: Vec<&str> = charts.iter().map(|f| f.title.as_str()).collect();
        assert_eq!(titles, expected);
        for chart in &charts {
            assert!(chart.has_svg && chart.shapes > 0, "{chart:?}");
        }
        let ids: Vec<&str> = charts.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "nodes-pool-a",
                "serving-pool-a",
                "nodes-b-c",
                "serving-b-c",
                "detect-histogram",
                "replace-histogram"
            ]
        );
    }

    #[test]
    fn faults_and_replacements_and_breaker_periods_are_drawn_apart() {
        let html = render_html(&synthetic(1, 40, 300, 60, 20));
        let nodes = section(&html, "id=\"nodes-pool-a\"");
        assert!(nodes.contains("fill=\"#D62728\""), "fault bars");
        assert!(nodes.contains("fill=\"#0F8B8D\""), "replacement bars");
        assert!(nodes.contains("faults / 10 s (up)"), "a legend");
        for status in ["active", "degraded", "cordoned", "rebooting"] {
            assert!(
                nodes.contains(&format!(">\n{status}\n<")),
                "legend {status}"
            );
        }
        let serving = section(&html, "id=\"serving-pool-a\"");
        assert_eq!(
            serving.matches("fill=\"#E53E3E\"").count(),
            2 + 1,
            "two periods, a legend swatch"
        );
        let breaker = table(&html, "breaker");
        assert_eq!(breaker[1], ["pool-a", "05:00", "07:00", "02:00"]);
        assert_eq!(
            breaker[2],
            ["pool-a", "25:00", "still open at the end", "05:00"]
        );
    }

    /// The figure that `marker` opens.
    fn section<'a>(html: &'a str, marker: &str) -> &'a str {
        let start = html.find(marker).expect(marker);
        &html[start..start + html[start..].find("</figure>").unwrap()]
    }

    #[test]
    fn report_text_is_escaped() {
        let html = render_html(&synthetic(2, 40, 30, 6, 5));
        assert!(!html.contains("<script"), "no script gets through");
        assert!(!html.contains("<b>replacements"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; friends"));
        assert!(html.contains("<h1 id=\"scenario\">xid &lt;79&gt; &amp; co</h1>"));
        assert!(html.contains("<title>Flotilla simulation: xid &lt;79&gt; &amp; co</title>"));
        assert!(html.contains("Faults &quot;everywhere&quot; &amp; &lt;b&gt;"));
        assert!(html.contains("<h2>Nodes by state — b &amp; &lt;c&gt;</h2>"));
        assert!(html.contains("<td>temperature &amp; &lt;hot&gt;</td>"));
        let log = table(&html, "log");
        assert_eq!(log[1], ["01:01.500", "<script>alert(1)</script> & friends"]);
        assert_eq!(log[2], ["1:02:05", "late"]);
    }

    #[test]
    fn header_and_tables_carry_the_numbers() {
        let report = synthetic(2, 40, 30, 6, 5);
        let html = render_html(&report);
        assert_eq!(text_by_id(&html, "events").unwrap(), "123457");
        assert_eq!(text_by_id(&html, "seed").unwrap(), "7");
        assert_eq!(text_by_id(&html, "duration").unwrap(), "30:00");
        assert_eq!(text_by_id(&html, "log-hash").unwrap(), report.log_hash);
        assert_eq!(text_by_id(&html, "faults-injected").unwrap(), "20");
        assert_eq!(text_by_id(&html, "replacements").unwrap(), "2");
        assert_eq!(text_by_id(&html, "wall-time").unwrap(), "2.35 s");
        assert_eq!(
            text_by_id(&html, "verdict").unwrap(),
            "1 of 2 checks FAILED"
        );
        let faults = table(&html, "faults");
        assert_eq!(faults[2], ["xid 13", "5", "1", "1", "1"]);
        assert_eq!(faults[4], ["all", "20", "15", "12", "1"]);
        assert!(html.contains("<tr class=\"bad\"><td>xid 13</td>"));
        assert!(html.contains("<td class=\"num bad\">1</td>"));
        assert!(
            html.contains("<td class=\"num\">0</td></tr>"),
            "0 is not highlighted"
        );
        let checks = table(&html, "checks");
        assert_eq!(
            checks[2],
            ["10:00", "node_count all", ">= 8", "6 <too few>", "FAIL"]
        );
        assert_eq!(checks[1][4], "pass");
        assert!(html.contains("5 detected faults; p50"));
    }

    #[test]
    fn an_empty_report_still_renders() {
        let html = render_html(&SimReport::default());
        assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>\n"));
        assert!(figures(&html).is_empty());
        assert!(html.contains("<h2>Time to detect</h2>\n<p class=\"none\" id=\"detect-none\">none"));
        assert!(
            html.contains("<h2>Time to replace</h2>\n<p class=\"none\" id=\"replace-none\">none")
        );
        assert_eq!(
            text_by_id(&html, "verdict").unwrap(),
            "No checks in this scenario"
        );
        // A pool that recorded nothing, and odd timings.
        let mut report = SimReport::default();
        report.pools.push(PoolSeries::default());
        report.detect_s = vec![0.0, 0.0];
        report.replace_s = vec![f64::NAN, 3.0];
        let html = render_html(&report);
        assert_eq!(figures(&html).len(), 4);
        assert!(!html.contains("chart not drawn"), "{html}");
    }

    #[test]
    fn times_read_as_clocks() {
        assert_eq!(clock(0), "00:00");
        assert_eq!(clock(65_000), "01:05");
        assert_eq!(clock(1_500), "00:01.500");
        assert_eq!(clock(3_725_000), "1:02:05");
        assert_eq!(span(10_000), "10 s");
        assert_eq!(span(120_000), "2 min");
        assert_eq!(bucket_ms(30 * 60_000), 10_000);
        assert_eq!(bucket_ms(0), 100);
    }

    /// A 5,000-node, 30-minute run: four pools of 1,250 nodes, 1,800
    /// samples each, 10,000 markers, 5,000 detect and replace times.
    #[test]
    fn a_big_run_renders_quickly_into_a_few_megabytes() {
        let report = synthetic(4, 1_250, 1_800, 10_000, 5_000);
        let started = Instant::now();
        let html = render_html(&report);
        let took = started.elapsed();
        eprintln!("big report: {} bytes in {took:?}", html.len());
        assert!(html.len() < 4_000_000, "{} bytes", html.len());
        assert_eq!(figures(&html).len(), 10);
        // Debug builds are several times slower than the release CLI.
        assert!(took.as_secs_f64() < 5.0, "{took:?}");
    }
}
