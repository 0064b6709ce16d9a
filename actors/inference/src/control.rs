//! Operating a worker's versions: sends the deployment's commands through
//! the actor host and waits until the engine has carried them out, so a
//! caller (the HTTP admin routes, the worker's start-up) gets an answer only
//! once the version is loaded or serving.

use crate::deployment::{ModelDeployment, VersionState};
use crate::engine::InferenceEngine;
use flotilla_host::AggregateRegistry;
use flotilla_messages::inference::{LoadedVersion, ServingError, ServingErrorCode};
use flotilla_messages::{CommandRequest, ErrorCode, Reply};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// How long a load or a switch may take before the caller is answered 503.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Loads, activates and rolls back the versions of one worker.
#[derive(Clone)]
pub struct VersionControl {
    registry: Arc<AggregateRegistry<ModelDeployment>>,
    id: String,
    engine: Arc<InferenceEngine>,
}

impl VersionControl {
    /// Controls deployment `id` (the worker's id) of `registry`, served by `engine`.
    pub fn new(
        registry: Arc<AggregateRegistry<ModelDeployment>>,
        id: impl Into<String>,
        engine: Arc<InferenceEngine>,
    ) -> Self {
        VersionControl {
            registry,
            id: id.into(),
            engine,
        }
    }

    /// The deployment's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The deployment's state (empty before the first command) and its seq.
    pub async fn state(&self) -> (ModelDeployment, u64) {
        match self.registry.query(&self.id).await {
            Reply {
                ok: true,
                result: Some(v),
                seq,
                ..
            } => (
                serde_json::from_value(v).unwrap_or_default(),
                seq.unwrap_or(0),
            ),
            _ => (ModelDeployment::default(), 0),
        }
    }

    async fn send(&self, command: Value, principal: &str) -> Result<Value, ServingError> {
        let request = CommandRequest::from_value(command, None)
            .map_err(rejected)?
            .by(principal);
        let reply = self.registry.execute(&self.id, request, None).await;
        match (reply.ok, reply.error) {
            (true, _) => Ok(reply.result.unwrap_or_default()),
            (false, Some(e)) => Err(rejected(flotilla_messages::Rejection::new(
                ErrorCode::parse(&e.code).unwrap_or(ErrorCode::Internal),
                e.message,
            ))),
            (false, None) => Err(ServingError::new(
                ServingErrorCode::InternalError,
                "refused",
            )),
        }
    }

    /// Waits (woken by the engine) until `done` says the state is settled.
    async fn settle<T>(
        &self,
        what: &str,
        mut done: impl FnMut(&ModelDeployment, &InferenceEngine) -> Option<T>,
    ) -> Result<T, ServingError> {
        let mut changes = self.engine.changes();
        let wait = async {
            loop {
                if let Some(out) = done(&self.state().await.0, &self.engine) {
                    return out;
                }
                // Woken by the engine; the aggregate records the outcome a
                // moment later, hence the short poll as well.
                let _ = tokio::time::timeout(Duration::from_millis(20), changes.changed()).await;
            }
        };
        tokio::time::timeout(SETTLE_TIMEOUT, wait)
            .await
            .map_err(|_| {
                ServingError::new(
                    ServingErrorCode::ServiceUnavailable,
                    format!("{what} did not finish within {}s", SETTLE_TIMEOUT.as_secs()),
                )
            })
    }

    /// Loads, verifies and warms `version` (no-op if loaded), recording
    /// `principal` as who asked.
    pub async fn load(
        &self,
        version: &str,
        principal: &str,
    ) -> Result<LoadedVersion, ServingError> {
        self.send(
            json!({"type": "load_version", "version": version}),
            principal,
        )
        .await?;
        let loaded = self.recorded_load(version).await?;
        if !self.engine.is_loaded(version) {
            // Recorded by an earlier process of this worker (a restart with
            // a durable log): bring this process's engine up to the record.
            self.engine.clone().load_off_thread(version).await?;
        }
        Ok(loaded)
    }

    /// Waits until the deployment records how loading `version` ended.
    async fn recorded_load(&self, version: &str) -> Result<LoadedVersion, ServingError> {
        self.settle(&format!("loading {version}"), |s, _| {
            match s.versions.get(version)? {
                VersionState::Loading => None,
                VersionState::Loaded(l) => Some(Ok(l.clone())),
                VersionState::Failed { code, message } => Some(Err(ServingError::new(
                    serde_json::from_value(json!(code))
                        .unwrap_or(ServingErrorCode::ModelLoadingError),
                    message.clone(),
                ))),
            }
        })
        .await?
    }

    /// Loads `version` if needed, then routes traffic to it; answers once it serves.
    pub async fn activate(&self, version: &str, principal: &str) -> Result<Value, ServingError> {
        self.load(version, principal).await?;
        let result = self
            .send(
                json!({"type": "activate_version", "version": version}),
                principal,
            )
            .await?;
        if result.get("current_version").is_none() && !self.serves(version) {
            // Already active in the record (a restart with a durable log):
            // serve it as of the record's seq.
            let (_, seq) = self.state().await;
            self.engine.activate(version, seq)?;
        }
        self.serving(version).await?;
        Ok(with_current(result, version))
    }

    /// Routes traffic back to the previous version; answers once it serves.
    pub async fn roll_back(&self, principal: &str) -> Result<Value, ServingError> {
        let result = self.send(json!({"type": "roll_back"}), principal).await?;
        let to = result["current_version"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.serving(&to).await?;
        Ok(result)
    }

    fn serves(&self, version: &str) -> bool {
        self.engine.active().is_some_and(|p| p.version() == version)
    }

    async fn serving(&self, version: &str) -> Result<(), ServingError> {
        self.settle(&format!("switching to {version}"), |_, engine| {
            engine
                .active()
                .filter(|p| p.version() == version)
                .map(|_| ())
        })
        .await
    }
}

fn with_current(result: Value, version: &str) -> Value {
    if result.get("current_version").is_some() {
        result
    } else {
        json!({ "current_version": version, "previous_version": null, "changed": false })
    }
}

/// A refused command as a serving error.
fn rejected(r: flotilla_messages::Rejection) -> ServingError {
    let code = match r.code {
        ErrorCode::Unavailable | ErrorCode::Timeout => ServingErrorCode::ServiceUnavailable,
        ErrorCode::Internal | ErrorCode::Corrupt => ServingErrorCode::InternalError,
        _ => ServingErrorCode::ValidationError,
    };
    ServingError::new(code, r.message).with_detail("reason", r.code.as_str())
}
