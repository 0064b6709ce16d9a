//! The inference actor's aggregate: one worker's model versions, as events.
//!
//! Loading, activating and rolling back a version are commands; what
//! happened is an event in the log, so an auditor can tell which version
//! served at any moment and why. The I/O happens in effects after the event
//! is stored ([`DeploymentEffects`]): `load_requested` makes the engine read,
//! verify and warm the version, whose outcome comes back as `record_load`;
//! `version_activated` and `rolled_back` switch the engine's traffic. A
//! version can only be activated once it is loaded and warm, so traffic
//! never meets a cold or broken model.
//!
//! | command | accepted when | event |
//! |---|---|---|
//! | `load_version {version}` | not loaded or loading (else no-op) | `load_requested` |
//! | `record_load {version, outcome}` | the version is loading | `version_loaded` / `load_failed` |
//! | `activate_version {version}` | loaded (no-op if serving) | `version_activated` |
//! | `roll_back {}` | a version served before the current one | `rolled_back` |

use crate::engine::InferenceEngine;
use async_trait::async_trait;
use flotilla_host::{Aggregate, EffectHandler};
use flotilla_messages::inference::{
    InferenceCommand, InferenceEvent, LoadOutcome, LoadedVersion, ServingError, COMMAND_TYPES,
};
use flotilla_messages::{Actor, Envelope, ErrorCode, Rejection};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where one version stands in a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum VersionState {
    /// Being read, verified and warmed.
    Loading,
    /// Ready to serve.
    Loaded(LoadedVersion),
    /// Refused.
    Failed {
        /// A serving error code.
        code: String,
        /// Why.
        message: String,
    },
}

/// One worker's model versions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelDeployment {
    /// Every version asked for, by name.
    pub versions: BTreeMap<String, VersionState>,
    /// The version serving traffic.
    pub active: Option<String>,
    /// Versions that served before, most recent last (what `roll_back` returns to).
    pub history: Vec<String>,
}

/// A version folder name: 1–64 of `[A-Za-z0-9._-]`, not starting with a dot.
fn check_version(version: &str) -> Result<(), Rejection> {
    let ok = (1..=64).contains(&version.len())
        && !version.starts_with('.')
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    ok.then_some(()).ok_or_else(|| {
        Rejection::new(
            ErrorCode::InvalidField,
            format!("version: {version:?} is not a version folder name ([A-Za-z0-9._-], 1-64)"),
        )
    })
}

impl ModelDeployment {
    fn decide_load(&self, version: &str) -> Result<Vec<InferenceEvent>, Rejection> {
        check_version(version)?;
        Ok(match self.versions.get(version) {
            Some(VersionState::Loading | VersionState::Loaded(_)) => vec![],
            Some(VersionState::Failed { .. }) | None => vec![InferenceEvent::LoadRequested {
                version: version.to_string(),
            }],
        })
    }

    fn decide_record(&self, version: &str, outcome: &LoadOutcome) -> Vec<InferenceEvent> {
        if self.versions.get(version) != Some(&VersionState::Loading) {
            return vec![];
        }
        let version = version.to_string();
        vec![match outcome.clone() {
            LoadOutcome::Loaded(loaded) => InferenceEvent::VersionLoaded { version, loaded },
            LoadOutcome::Failed { code, message } => InferenceEvent::LoadFailed {
                version,
                code,
                message,
            },
        }]
    }

    fn decide_activate(&self, version: &str) -> Result<Vec<InferenceEvent>, Rejection> {
        check_version(version)?;
        match self.versions.get(version) {
            Some(VersionState::Loaded(_)) if self.active.as_deref() == Some(version) => Ok(vec![]),
            Some(VersionState::Loaded(_)) => Ok(vec![InferenceEvent::VersionActivated {
                version: version.to_string(),
                previous: self.active.clone(),
            }]),
            other => Err(Rejection::new(
                ErrorCode::InvalidState,
                format!(
                    "activate_version: {version} is {}; send load_version and wait until it is loaded",
                    match other {
                        Some(VersionState::Loading) => "still loading",
                        Some(VersionState::Failed { .. }) => "failed to load",
                        _ => "not loaded",
                    }
                ),
            )),
        }
    }

    fn decide_roll_back(&self) -> Result<Vec<InferenceEvent>, Rejection> {
        match (&self.active, self.history.last()) {
            (Some(from), Some(to)) => Ok(vec![InferenceEvent::RolledBack {
                from: from.clone(),
                to: to.clone(),
            }]),
            _ => Err(Rejection::new(
                ErrorCode::InvalidState,
                "roll_back: no version served before the current one",
            )),
        }
    }
}

impl Aggregate for ModelDeployment {
    const ACTOR: Actor = Actor::Inference;
    const COMMAND_TYPES: &'static [&'static str] = COMMAND_TYPES;
    type Command = InferenceCommand;
    type Event = InferenceEvent;
    type Settings = ();

    fn decide(&self, command: &InferenceCommand) -> Result<Vec<InferenceEvent>, Rejection> {
        match command {
            InferenceCommand::LoadVersion { version } => self.decide_load(version),
            InferenceCommand::RecordLoad { version, outcome } => {
                Ok(self.decide_record(version, outcome))
            }
            InferenceCommand::ActivateVersion { version } => self.decide_activate(version),
            InferenceCommand::RollBack {} => self.decide_roll_back(),
        }
    }

    fn evolve(mut self, event: &InferenceEvent) -> Self {
        match event {
            InferenceEvent::LoadRequested { version } => {
                self.versions.insert(version.clone(), VersionState::Loading);
            }
            InferenceEvent::VersionLoaded { version, loaded } => {
                self.versions
                    .insert(version.clone(), VersionState::Loaded(loaded.clone()));
            }
            InferenceEvent::LoadFailed {
                version,
                code,
                message,
            } => {
                let failed = VersionState::Failed {
                    code: code.clone(),
                    message: message.clone(),
                };
                self.versions.insert(version.clone(), failed);
            }
            InferenceEvent::VersionActivated { version, previous } => {
                self.history.extend(previous.clone());
                self.active = Some(version.clone());
            }
            InferenceEvent::RolledBack { to, .. } => {
                self.history.pop();
                self.active = Some(to.clone());
            }
        }
        self
    }

    fn result(events: &[InferenceEvent]) -> Value {
        match events.first() {
            Some(InferenceEvent::VersionActivated { version, previous }) => {
                json!({ "current_version": version, "previous_version": previous })
            }
            Some(InferenceEvent::RolledBack { from, to }) => {
                json!({ "current_version": to, "previous_version": from })
            }
            Some(InferenceEvent::LoadRequested { version }) => {
                json!({ "version": version, "status": "loading" })
            }
            _ => json!({}),
        }
    }

    fn view(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn event_type(event: &InferenceEvent) -> &'static str {
        match event {
            InferenceEvent::LoadRequested { .. } => "load_requested",
            InferenceEvent::VersionLoaded { .. } => "version_loaded",
            InferenceEvent::LoadFailed { .. } => "load_failed",
            InferenceEvent::VersionActivated { .. } => "version_activated",
            InferenceEvent::RolledBack { .. } => "rolled_back",
        }
    }

    fn wants_effect(event: &InferenceEvent) -> bool {
        matches!(
            event,
            InferenceEvent::LoadRequested { .. }
                | InferenceEvent::VersionActivated { .. }
                | InferenceEvent::RolledBack { .. }
        )
    }
}

/// Carries out the deployment's events on the worker's engine.
pub struct DeploymentEffects {
    /// The engine the versions load into.
    pub engine: Arc<InferenceEngine>,
}

impl DeploymentEffects {
    async fn load(&self, version: &str) -> Result<LoadedVersion, ServingError> {
        self.engine.clone().load_off_thread(version).await
    }

    /// Switches traffic as the event at `seq` says, loading first if this
    /// process has not (after a restart).
    async fn serve(&self, version: &str, seq: u64) {
        if !self.engine.is_loaded(version) {
            if let Err(e) = self.load(version).await {
                tracing::error!(version, error = %e, "cannot serve the activated version");
                return;
            }
        }
        if let Err(e) = self.engine.activate(version, seq) {
            tracing::error!(version, error = %e, "cannot serve the activated version");
        }
    }
}

#[async_trait]
impl EffectHandler<ModelDeployment> for DeploymentEffects {
    async fn run(&self, envelope: &Envelope, event: &InferenceEvent) -> Option<Value> {
        match event {
            InferenceEvent::LoadRequested { version } => {
                let outcome = match self.load(version).await {
                    Ok(loaded) => LoadOutcome::Loaded(loaded),
                    Err(e) => LoadOutcome::Failed {
                        code: e.code.as_str().to_string(),
                        message: e.message,
                    },
                };
                let command = InferenceCommand::RecordLoad {
                    version: version.clone(),
                    outcome,
                };
                serde_json::to_value(command).ok()
            }
            InferenceEvent::VersionActivated { version, .. } => {
                self.serve(version, envelope.seq).await;
                None
            }
            InferenceEvent::RolledBack { to, .. } => {
                self.serve(to, envelope.seq).await;
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded() -> LoadedVersion {
        LoadedVersion {
            model_name: "carla-ppo".into(),
            input_size: 5,
            layer_sizes: vec![5, 64, 64, 3],
            artifact_hashes: BTreeMap::new(),
            warmup_ms: 1.0,
        }
    }

    fn given(events: &[InferenceEvent]) -> ModelDeployment {
        events
            .iter()
            .fold(ModelDeployment::default(), |s, e| s.evolve(e))
    }

    fn load(v: &str) -> Vec<InferenceEvent> {
        vec![
            InferenceEvent::LoadRequested { version: v.into() },
            InferenceEvent::VersionLoaded {
                version: v.into(),
                loaded: loaded(),
            },
        ]
    }

    #[test]
    fn a_version_must_be_loaded_before_it_serves() {
        let s = given(&[InferenceEvent::LoadRequested {
            version: "v1.0.0".into(),
        }]);
        let e = s
            .decide(&InferenceCommand::ActivateVersion {
                version: "v1.0.0".into(),
            })
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidState);
        let s = given(&load("v1.0.0"));
        assert_eq!(
            s.decide(&InferenceCommand::ActivateVersion {
                version: "v1.0.0".into()
            })
            .unwrap(),
            vec![InferenceEvent::VersionActivated {
                version: "v1.0.0".into(),
                previous: None
            }]
        );
    }

    #[test]
    fn loading_twice_and_late_outcomes_change_nothing() {
        let s = given(&load("v1.0.0"));
        let again = InferenceCommand::LoadVersion {
            version: "v1.0.0".into(),
        };
        assert!(s.decide(&again).unwrap().is_empty());
        let late = InferenceCommand::RecordLoad {
            version: "v1.0.0".into(),
            outcome: LoadOutcome::Failed {
                code: "X".into(),
                message: "late".into(),
            },
        };
        assert!(s.decide(&late).unwrap().is_empty());
    }

    #[test]
    fn roll_back_returns_to_the_previous_version() {
        let mut events = load("v1.0.0");
        events.extend(load("v2.0.0"));
        events.push(InferenceEvent::VersionActivated {
            version: "v1.0.0".into(),
            previous: None,
        });
        events.push(InferenceEvent::VersionActivated {
            version: "v2.0.0".into(),
            previous: Some("v1.0.0".into()),
        });
        let s = given(&events);
        let back = s.decide(&InferenceCommand::RollBack {}).unwrap();
        assert_eq!(
            back,
            vec![InferenceEvent::RolledBack {
                from: "v2.0.0".into(),
                to: "v1.0.0".into()
            }]
        );
        let s = s.evolve(&back[0]);
        assert_eq!(s.active.as_deref(), Some("v1.0.0"));
        assert_eq!(
            s.decide(&InferenceCommand::RollBack {}).unwrap_err().code,
            ErrorCode::InvalidState
        );
    }

    fn command(kind: u8, v: u8, ok: bool) -> InferenceCommand {
        let version = format!("v0.{}.0", v % 3);
        match kind % 4 {
            0 => InferenceCommand::LoadVersion { version },
            1 => InferenceCommand::RecordLoad {
                version,
                outcome: if ok {
                    LoadOutcome::Loaded(loaded())
                } else {
                    LoadOutcome::Failed {
                        code: "ARTIFACT_VALIDATION_ERROR".into(),
                        message: "bad hash".into(),
                    }
                },
            },
            2 => InferenceCommand::ActivateVersion { version },
            _ => InferenceCommand::RollBack {},
        }
    }

    proptest::proptest! {
        /// Whatever operators send, traffic only ever goes to a loaded
        /// version, and folding the decided events again gives the same state.
        #[test]
        fn only_loaded_versions_serve(ops in proptest::collection::vec((0u8..4, 0u8..3, proptest::bool::ANY), 0..40)) {
            let mut state = ModelDeployment::default();
            let mut log = Vec::new();
            for (kind, v, ok) in ops {
                if let Ok(events) = state.decide(&command(kind, v, ok)) {
                    for e in &events {
                        state = state.evolve(e);
                    }
                    log.extend(events);
                }
                if let Some(active) = &state.active {
                    let loaded = matches!(state.versions.get(active), Some(VersionState::Loaded(_)));
                    proptest::prop_assert!(loaded, "{active} serves but is {:?}", state.versions.get(active));
                }
            }
            proptest::prop_assert_eq!(given(&log), state);
        }
    }

    #[test]
    fn bad_version_names_are_refused() {
        let e = ModelDeployment::default()
            .decide(&InferenceCommand::LoadVersion {
                version: "../etc".into(),
            })
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
    }
}
