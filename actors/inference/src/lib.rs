//! The inference worker: serves a driving policy as CarlaRL
//! Policy-as-a-Service does, with candle, dynamic batching and versions
//! recorded as events.
//!
//! How a prediction flows: a transport (HTTP in `flotilla-gateway`'s
//! `inference` module, or the bus in `nats`) hands the body to
//! [`InferenceEngine::predict_body`], which validates it
//! (`flotilla_messages::inference`), queues it in the `batcher`, whose
//! threads run it with other requests through the serving `Policy`
//! (preprocessing in `preprocess`, the network in `network`).
//!
//! How a version gets there: `artifacts` reads and verifies a version
//! folder against its `card`; the [`ModelDeployment`]
//! aggregate records `load_version` / `activate_version` / `roll_back` as
//! events, and its effects make the engine load (and warm) or switch; a
//! caller uses [`VersionControl`] to wait for the outcome.
//! `metrics` names everything as CarlaRL does (`resources` reads the CPU
//! and memory it reports); `torch_format` writes
//! PyTorch `state_dict` files for `model init --format pytorch`.

#![warn(missing_docs)]

mod artifacts;
mod batcher;
mod card;
mod control;
mod deployment;
mod engine;
mod metrics;
mod nats;
mod network;
mod policy;
mod preprocess;
mod resources;
mod torch_format;

pub use artifacts::{write_example, ArtifactStore, WeightsFormat};
pub use batcher::BatchConfig;
pub use control::VersionControl;
pub use deployment::{DeploymentEffects, ModelDeployment};
pub use engine::{EngineConfig, InferenceEngine};
pub use metrics::InferenceMetrics;
pub use nats::{serve_predictions, QUEUE_GROUP};
