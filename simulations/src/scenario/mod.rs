//! Scenario files run as a product: `flotilla simulate SCENARIO.yaml`.
//!
//! A scenario is Navarch's simulator format, read as Navarch writes it
//! ([`mod@file`]), plus Flotilla's own additions spelled as in a pools file.
//! [`mod@run`] plays it on virtual time ([`world`]: the real pool aggregate,
//! health agents and autoscalers against a simulated cloud placed by
//! [`placement`], faults from [`chaos`]); [`recorder`] turns what happened
//! into [`report`]'s numbers, and [`html`] draws them as one
//! self-contained page.

pub mod chaos;
pub mod duration;
pub mod file;
pub mod html;
pub mod placement;
pub mod recorder;
pub mod report;
pub mod run;
pub mod world;

pub use run::{run, Quiet, RunError, RunObserver};
