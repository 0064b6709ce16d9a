//! Provider calls as host effects.
//!
//! The host runs [`ProviderEffects::run`] after a `node_requested`,
//! `node_cordoned`, `node_uncordoned`, `node_drain_started` or
//! `node_termination_requested` event is stored, and feeds the outcome
//! back with the id `fx-<event id>`. An effect whose outcome is not in the
//! log when the provisioner restarts runs again; provisioning therefore
//! first lists the pool's instances and adopts one already carrying the
//! node id, so a restart mid-provisioning never creates a second node.

use super::provider::{Provider, ProviderError, ProviderSet};
use async_trait::async_trait;
use flotilla_host::{Clock, EffectHandler};
use flotilla_messages::provisioner::{NodeSpec, ProvisionerCommand, ProvisionerEvent};
use flotilla_messages::Envelope;
use std::time::Duration;

/// How often a `list` before provisioning is tried.
const LIST_ATTEMPTS: u32 = 3;

/// Runs the pool aggregate's provider calls.
pub struct ProviderEffects {
    providers: ProviderSet,
    clock: Clock,
}

impl ProviderEffects {
    /// Effects over `providers`, stamping outcomes with `clock`.
    pub fn new(providers: ProviderSet, clock: Clock) -> Self {
        ProviderEffects { providers, clock }
    }

    async fn provision(
        &self,
        provider: &dyn Provider,
        node_id: &str,
        spec: &NodeSpec,
    ) -> ProvisionerCommand {
        let now = &self.clock;
        match adopt_or_provision(provider, node_id, spec).await {
            Ok((instance_id, registered)) => ProvisionerCommand::NodeProvisioned {
                node_id: node_id.to_string(),
                instance_id,
                registered,
                now: now(),
            },
            Err(e) => ProvisionerCommand::NodeProvisionFailed {
                node_id: node_id.to_string(),
                error: e.to_string(),
                now: now(),
            },
        }
    }

    fn failed(&self, node_id: &str, operation: &str, e: ProviderError) -> ProvisionerCommand {
        tracing::warn!(node = node_id, operation, error = %e, "provider call failed");
        ProvisionerCommand::ProviderCallFailed {
            node_id: node_id.to_string(),
            operation: operation.to_string(),
            error: e.to_string(),
            now: (self.clock)(),
        }
    }

    async fn outcome(&self, event: &ProvisionerEvent) -> Option<ProvisionerCommand> {
        use ProvisionerEvent as E;
        let (node_id, provider_name) = match event {
            E::NodeRequested { node_id, spec, .. } => (node_id, &spec.provider),
            E::NodeCordoned {
                node_id, target, ..
            }
            | E::NodeUncordoned {
                node_id, target, ..
            }
            | E::NodeDrainStarted {
                node_id, target, ..
            }
            | E::NodeTerminationRequested {
                node_id, target, ..
            } => (node_id, &target.provider),
            _ => return None,
        };
        let Some(provider) = self.providers.get(provider_name) else {
            let e = ProviderError::Broken(format!(
                "provider {provider_name:?} is not configured in this process"
            ));
            return Some(match event {
                E::NodeRequested { .. } => ProvisionerCommand::NodeProvisionFailed {
                    node_id: node_id.clone(),
                    error: e.to_string(),
                    now: (self.clock)(),
                },
                _ => self.failed(node_id, event.event_type(), e),
            });
        };
        let now = || (self.clock)();
        Some(match event {
            E::NodeRequested { spec, .. } => self.provision(provider.as_ref(), node_id, spec).await,
            E::NodeCordoned { .. } => match provider.cordon(node_id).await {
                Ok(()) => return None,
                Err(e) => self.failed(node_id, "cordon", e),
            },
            E::NodeUncordoned { .. } => match provider.uncordon(node_id).await {
                Ok(()) => return None,
                Err(e) => self.failed(node_id, "uncordon", e),
            },
            E::NodeDrainStarted { mode, deadline, .. } => {
                match provider.drain(node_id, *mode, *deadline).await {
                    Ok(forced) => ProvisionerCommand::NodeDrained {
                        node_id: node_id.clone(),
                        forced,
                        now: now(),
                    },
                    Err(e) => self.failed(node_id, "drain", e),
                }
            }
            E::NodeTerminationRequested { target, .. } => {
                match provider
                    .terminate(node_id, target.instance_id.as_deref())
                    .await
                {
                    Ok(()) => ProvisionerCommand::NodeTerminated {
                        node_id: node_id.clone(),
                        now: now(),
                    },
                    Err(e) => self.failed(node_id, "terminate", e),
                }
            }
            _ => return None,
        })
    }
}

/// The instance already carrying `node_id`, or a new one.
pub(crate) async fn adopt_or_provision(
    provider: &dyn Provider,
    node_id: &str,
    spec: &NodeSpec,
) -> Result<(String, bool), ProviderError> {
    let mut attempt = 0;
    let existing = loop {
        match provider.list(&spec.pool).await {
            Ok(list) => break list.into_iter().find(|i| i.node_id == node_id),
            Err(e) if attempt + 1 >= LIST_ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::warn!(node = node_id, error = %e, "list before provisioning failed; retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
        }
    };
    if let Some(instance) = existing {
        tracing::info!(node = node_id, instance = %instance.instance_id, "adopting an existing instance");
        return Ok((
            instance.instance_id,
            instance.registered || provider.registers_itself(),
        ));
    }
    let made = provider.provision(node_id, spec).await?;
    Ok((made.instance_id, made.registered))
}

#[async_trait]
impl EffectHandler<super::Pool> for ProviderEffects {
    async fn run(
        &self,
        envelope: &Envelope,
        event: &ProvisionerEvent,
    ) -> Option<serde_json::Value> {
        let outcome = self.outcome(event).await?;
        tracing::debug!(event = %envelope.id, outcome = ?outcome, "provider effect done");
        serde_json::to_value(outcome).ok()
    }
}
