//! Scenario files run as a product: `flotilla simulate SCENARIO.yaml`.
//!
//! A scenario is Navarch's simulator format, read as Navarch writes it
//! ([`file`]), plus Flotilla's own additions spelled as in a pools file.
//! [`run`] plays it on virtual time against the real pool aggregate,
//! health agents and autoscalers, and [`report`] holds what it measured;
//! [`html`] draws that as one self-contained page.

pub mod duration;
pub mod file;
pub mod html;
pub mod report;
