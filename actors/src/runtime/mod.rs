//! The event-sourced actor host (filled in below).
pub mod aggregate;
pub use aggregate::Aggregate;
