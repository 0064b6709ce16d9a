//! Side effects, run after the event that asks for them is stored.
//!
//! An effect is keyed by its event's id: its outcome comes back as a command
//! with id `fx-<event id>`, which the host's idempotency check turns into a
//! no-op if it arrives twice. An event whose outcome is not in the log when
//! the host recovers is re-driven, so effects are at-least-once and handlers
//! must be idempotent (adopt the process or Job they find instead of starting
//! a second one).

use crate::Aggregate;
use async_trait::async_trait;
use flotilla_messages::Envelope;

/// Runs the effects of one kind of aggregate.
#[async_trait]
pub trait EffectHandler<A: Aggregate>: Send + Sync + 'static {
    /// Carries out what `event` asks for and returns the outcome as a command
    /// (a JSON map with `type`), or `None` if there is nothing to report.
    async fn run(&self, envelope: &Envelope, event: &A::Event) -> Option<serde_json::Value>;
}

/// The command id that records the outcome of the effect of `event_id`.
pub fn outcome_command_id(event_id: &str) -> String {
    derived_command_id("fx", event_id)
}

/// A command id derived from the event that causes the command,
/// `<prefix>-<event id without dashes>`: sent again for the same event, it
/// is the same id, so the receiver's idempotency check makes it a no-op.
/// Event ids are UUIDs (32 hex digits), so a short prefix keeps it a valid id.
pub fn derived_command_id(prefix: &str, event_id: &str) -> String {
    let compact: String = event_id.chars().filter(|c| *c != '-').collect();
    format!("{prefix}-{compact}")
}
