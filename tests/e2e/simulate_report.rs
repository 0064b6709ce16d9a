//! `flotilla simulate --report --json` end to end, in a real browser: the
//! 5,000-node stress scenario (Navarch's largest) runs on virtual time, its JSON parses as a `SimReport`,
//! and headless Chromium ([`crate::support::chromium`]) loads the HTML
//! report: every chart is there with a drawing in it, the JSON's numbers
//! are on the page, and a screenshot is a rendered page, not a blank one.
//! The page's structure is read with the report's own reader
//! (`scenario::html::inspect`), which the renderer's unit tests use too.

use crate::support::{chromium, flotilla};
use flotilla_simulations::scenario::html::inspect;
use flotilla_simulations::scenario::report::SimReport;
use std::collections::HashSet;
use std::path::Path;

const SCENARIO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/simulations/scenarios/navarch-stress-5000.yaml"
);

#[test]
fn simulate_writes_a_report_that_a_browser_renders() {
    let dir = tempfile::tempdir().unwrap();
    let (html, json) = (dir.path().join("r.html"), dir.path().join("r.json"));
    let out = flotilla(&[
        "simulate",
        SCENARIO,
        "--seed",
        "7",
        "--report",
        html.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "flotilla simulate: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: SimReport = serde_json::from_slice(&std::fs::read(&json).unwrap())
        .unwrap_or_else(|e| panic!("{}: not a SimReport: {e}", json.display()));
    assert_eq!(report.seed, 7);
    assert!(report.faults_injected() > 0, "the scenario injects faults");

    let dom = chromium::dump_dom(&html);
    charts_are_drawn(&dom, &report);
    numbers_are_shown(&dom, &report);

    let png = dir.path().join("r.png");
    chromium::screenshot(&html, &png);
    is_a_rendered_page(&png);
}

/// Every chart title is a heading; every chart figure holds an SVG with
/// data drawn in it (an empty timing list shows a note, not a chart).
fn charts_are_drawn(dom: &str, report: &SimReport) {
    let mut titles = Vec::new();
    for pool in &report.pools {
        titles.push(format!("Nodes by state — {}", pool.name));
        titles.push(format!("Serving capacity vs target — {}", pool.name));
    }
    assert!(!titles.is_empty(), "the report has pools");
    let mut charted = titles.clone();
    for (title, values) in [
        ("Time to detect", &report.detect_s),
        ("Time to replace", &report.replace_s),
    ] {
        titles.push(title.to_string());
        if !values.is_empty() {
            charted.push(title.to_string());
        }
    }
    let headings = inspect::headings(dom);
    for title in &titles {
        assert!(
            headings.contains(title),
            "no heading {title:?} in {headings:?}"
        );
    }
    let figures = inspect::figures(dom);
    let shown: Vec<&str> = figures.iter().map(|f| f.title.as_str()).collect();
    assert_eq!(shown, charted, "the charts, in order");
    for figure in &figures {
        assert!(
            figure.has_svg && figure.shapes > 0,
            "{figure:?} has no drawing"
        );
    }
}

/// The JSON's numbers are on the page: the header's, and the fault table's
/// rows.
fn numbers_are_shown(dom: &str, report: &SimReport) {
    let text = |id: &str| inspect::text_by_id(dom, id).unwrap_or_else(|| panic!("no #{id}"));
    assert_eq!(text("log-hash"), report.log_hash);
    assert_eq!(text("events"), report.events.to_string());
    assert_eq!(text("seed"), report.seed.to_string());
    assert_eq!(
        text("faults-injected"),
        report.faults_injected().to_string()
    );
    let rows = inspect::table(dom, "faults");
    for f in &report.faults {
        let row = [
            f.fault_type.clone(),
            f.injected.to_string(),
            f.detected.to_string(),
            f.replaced.to_string(),
            f.wrongly_replaced.to_string(),
        ];
        assert!(
            rows.iter().any(|r| r[..] == row[..]),
            "no row {row:?} in {rows:?}"
        );
    }
    // A header row and one per check.
    assert_eq!(inspect::table(dom, "checks").len(), report.checks.len() + 1);
}

/// The screenshot has the window's size and many colours: text, charts
/// and tables were drawn, not a blank or error page.
fn is_a_rendered_page(png: &Path) {
    let mut decoder = png::Decoder::new(std::fs::File::open(png).unwrap());
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("a PNG");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).expect("a PNG frame");
    assert_eq!((frame.width, frame.height), chromium::WINDOW);
    let channels = frame.color_type.samples();
    assert!(channels >= 3, "{:?}", frame.color_type);
    let rgb = pixels[..frame.buffer_size()]
        .chunks_exact(channels)
        .map(|p| [p[0], p[1], p[2]]);
    let (mut colours, mut inked) = (HashSet::new(), 0usize);
    for pixel in rgb {
        colours.insert(pixel);
        inked += usize::from(pixel.iter().any(|c| *c < 200));
    }
    let area = (frame.width * frame.height) as usize;
    assert!(colours.len() >= 100, "{} colours", colours.len());
    assert!(inked * 50 >= area, "{inked} of {area} pixels drawn");
}
