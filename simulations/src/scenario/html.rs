//! The HTML report (placeholder until the renderer lands in this branch).

use super::report::SimReport;

/// The report as HTML.
pub fn render_html(report: &SimReport) -> String {
    format!("<!doctype html><title>{}</title>", report.scenario)
}
