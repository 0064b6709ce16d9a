//! The wire contract of Flotilla: what crosses a subject, a log or an HTTP body.
//!
//! Every other crate speaks through these types. `bus` stores and routes
//! [`Envelope`]s, `actors` decides on commands and folds events, `gateway` and
//! the CLI translate HTTP and terminal input into the same commands. Keeping
//! the contract in one small crate means a Python or `nats` CLI user and our
//! own code read exactly the same definitions:
//!
//! - [`auth`]: principals, roles and permissions (who may do what);
//! - [`subjects`]: subject names (`<prefix>.cmd|evt|query.<actor>.<id>`), id
//!   validation and NATS wildcard matching;
//! - [`codec`]: JSON and MessagePack, chosen by `Content-Type` or by sniffing;
//! - [`envelope`]: the stored, checksummed and hash-chained event;
//! - [`command`]: the generic command request (`type`, `command_id`,
//!   `expected_seq`, fields) and [`reply`]: the reply every command gets;
//!   [`query`]: which page of a long list a state query answers;
//! - [`error`]: the typed error codes shared by every actor.
//! - [`solver`]: the solver's study config, commands and events, with its
//!   parts: [`search_space`], a study's parameters (float, int,
//!   categorical, conditional) and how the unit cube maps onto them;
//!   [`pruning`] (`report` and the pruners) and [`warm_start`] (`seed`,
//!   `enqueue`), also re-exported at the crate root
//!   (`flotilla_messages::search_space` and so on);
//! - [`scheduler`]: the scheduler's commands, events and queue signal.
//! - [`fleet`]: GPU node pool configuration (both Navarch spellings);
//!   [`provisioner`]: the pool aggregate's commands and events;
//!   [`health`]: what node agents publish.
//! - [`inference`]: CarlaRL-compatible `/predict` bodies and errors, and the
//!   inference worker's version commands and events.
//! - [`study_run`]: a study run's commands and events (the control plane
//!   running a study's trials as jobs by itself).
//! - `openapi` (feature `openapi`): the OpenAPI schemas written by hand;
//!   the other wire types derive `utoipa::ToSchema` under that feature.

#![warn(missing_docs)]

/// Describes a type read through a wire struct (`#[serde(try_from =
/// "Wire")]`) by that struct's OpenAPI schema, as the wire struct is what
/// a body holds (feature `openapi`).
#[cfg(feature = "openapi")]
macro_rules! schema_as_wire {
    ($public:ty, $wire:ty) => {
        impl utoipa::PartialSchema for $public {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                <$wire as utoipa::PartialSchema>::schema()
            }
        }

        impl utoipa::ToSchema for $public {
            fn schemas(
                schemas: &mut Vec<(
                    String,
                    utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
                )>,
            ) {
                <$wire as utoipa::ToSchema>::schemas(schemas)
            }
        }
    };
}

pub mod auth;
pub mod codec;
pub mod command;
pub mod envelope;
pub mod error;
pub mod fleet;
pub mod health;
pub mod inference;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod provisioner;
pub mod query;
pub mod reply;
pub mod scheduler;
pub mod solver;
pub mod study_run;
pub mod subjects;

pub use codec::{CodecError, Encoding};
pub use command::CommandRequest;
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use envelope::{Envelope, IntegrityError, Payload, PendingEvent, GENESIS_HASH};
pub use error::{ErrorBody, ErrorCode, Rejection};
pub use query::Page;
pub use reply::Reply;
pub use solver::{pruning, search_space, warm_start};
pub use subjects::{validate_id, Actor, IdError, StreamName, Subjects};
