//! The contract every actor's domain logic fulfils.
//!
//! An aggregate is a value that changes only by folding events. `decide`
//! looks at the current state and a command and says which events should
//! happen (or why not); `evolve` folds one event into the state. Both are
//! pure: no I/O, no clock, no randomness not derived from the state and a
//! seed. That is what makes a replay reproduce the state bit for bit and
//! lets the simulator run the same code on virtual time.

use flotilla_messages::Rejection;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Domain logic of one kind of aggregate (a study, a job, a node pool...).
pub trait Aggregate:
    Clone + Default + Serialize + DeserializeOwned + Send + Unpin + 'static
{
    /// The actor that owns this aggregate, e.g. `"solver"`.
    const ACTOR: flotilla_messages::Actor;
    /// The command types this aggregate accepts (the `type` tags).
    const COMMAND_TYPES: &'static [&'static str];
    /// Commands, internally tagged by `type`, `deny_unknown_fields`.
    type Command: DeserializeOwned + Send + 'static;
    /// Events, internally tagged by `type` (snake_case).
    type Event: Serialize + DeserializeOwned + Clone + Send + 'static;
    /// Host configuration the decision also depends on: settings of the
    /// process hosting the aggregate (e.g. which programs the scheduler's
    /// local executor may run), not facts of its history, so they are
    /// never stored in events or snapshots. The host hands them to
    /// [`Self::decide_with`]; most aggregates need none and use `()`.
    ///
    /// They are a value handed in, not something `decide` looks up, so the
    /// decision stays pure: the same state, settings and command give the
    /// same events, and a replay (which only evolves) never needs them.
    type Settings: Clone + Send + Sync + Unpin + 'static;

    /// Which events `command` causes in the current state, or why it is refused.
    fn decide(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Rejection>;

    /// [`Self::decide`] under the host's `settings`: what the host calls.
    /// Aggregates whose decisions depend on no host setting keep this default.
    fn decide_with(
        &self,
        _settings: &Self::Settings,
        command: &Self::Command,
    ) -> Result<Vec<Self::Event>, Rejection> {
        self.decide(command)
    }

    /// The state after `event`.
    fn evolve(self, event: &Self::Event) -> Self;

    /// The reply's `result` for a command that caused `events` (derived from
    /// the events alone, so a repeated command id gets the same answer back).
    fn result(events: &[Self::Event]) -> serde_json::Value;

    /// The state as a query answers it.
    fn view(&self) -> serde_json::Value;

    /// One page of the state, for a query that names a page (from the
    /// wire). Aggregates without long lists answer their whole [`Self::view`].
    fn view_page(&self, _page: &flotilla_messages::Page) -> serde_json::Value {
        self.view()
    }

    /// The snake_case type tag of an event.
    fn event_type(event: &Self::Event) -> &'static str;

    /// Whether `event` asks for a side effect (a process to start, a node to
    /// provision). The host runs it after the event is stored, through the
    /// actor's [`crate::EffectHandler`], and feeds the outcome back
    /// as a command whose id is derived from the event id.
    fn wants_effect(_event: &Self::Event) -> bool {
        false
    }
}
