//! Where nodes come from: the [`Provider`] trait and the set of providers a
//! process knows by name.
//!
//! Providers are called only from effects ([`super::effects`]), after the
//! event that asks for the call is stored. Each call must be safe to
//! repeat: `provision` is preceded by a `list` and an instance already
//! carrying the node id is adopted, `terminate` of a node that is gone
//! succeeds, cordon and drain are idempotent by nature.

use super::exec::ExecProvider;
use super::kubernetes::KubernetesProvider;
use super::sim::SimProvider;
use async_trait::async_trait;
use flotilla_messages::fleet::{DrainMode, ProviderConfig, BUILTIN_PROVIDERS};
use flotilla_messages::provisioner::NodeSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A node as the provider knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Flotilla's node id.
    pub node_id: String,
    /// The provider's id.
    pub instance_id: String,
    /// Whether it is up already (no agent registration to wait for).
    #[serde(default)]
    pub registered: bool,
}

/// What `provision` created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// The provider's id.
    pub instance_id: String,
    /// Whether the node is up already (no agent registration to wait for).
    pub registered: bool,
}

/// A failed provider call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider said no (capacity, quota, a bad request...).
    #[error("{0}")]
    Refused(String),
    /// The call did not finish in time.
    #[error("{operation} timed out after {seconds}s")]
    Timeout {
        /// The call.
        operation: &'static str,
        /// The limit.
        seconds: u64,
    },
    /// The provider could not be reached or answered nonsense.
    #[error("{0}")]
    Broken(String),
}

/// A cloud (or a fake one) that creates and deletes nodes.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Creates node `node_id` as `spec` says.
    async fn provision(&self, node_id: &str, spec: &NodeSpec)
        -> Result<Provisioned, ProviderError>;

    /// The nodes of `pool` that exist.
    async fn list(&self, pool: &str) -> Result<Vec<Instance>, ProviderError>;

    /// Deletes a node (succeeds when it is already gone).
    async fn terminate(
        &self,
        node_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), ProviderError>;

    /// Whether a node this provider created is up without an agent
    /// registering it (used when an existing instance is adopted).
    fn registers_itself(&self) -> bool {
        false
    }

    /// Stops new work going to the node.
    async fn cordon(&self, _node_id: &str) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Lets work go to the node again.
    async fn uncordon(&self, _node_id: &str) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Moves workloads off the node; returns whether any were evicted
    /// (rather than finished). `deadline_ms` is the drain's deadline, unix ms.
    async fn drain(
        &self,
        _node_id: &str,
        _mode: DrainMode,
        _deadline_ms: u64,
    ) -> Result<bool, ProviderError> {
        Ok(false)
    }
}

/// The providers of a process, by name.
#[derive(Clone, Default)]
pub struct ProviderSet {
    providers: BTreeMap<String, Arc<dyn Provider>>,
}

/// A provider definition this build cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("providers.{name}: {message}")]
pub struct UnsupportedProvider {
    /// The provider's name.
    pub name: String,
    /// Why.
    pub message: String,
}

impl ProviderSet {
    /// The built-in providers (`sim`, instant and never failing) plus the
    /// ones `defined` in a pools file.
    pub fn from_config(
        defined: &BTreeMap<String, ProviderConfig>,
    ) -> Result<Self, UnsupportedProvider> {
        let mut set = ProviderSet::default();
        for name in BUILTIN_PROVIDERS {
            set.insert(name, Arc::new(SimProvider::default()));
        }
        for (name, config) in defined {
            let provider: Arc<dyn Provider> = match config {
                ProviderConfig::Sim { .. } => {
                    Arc::new(SimProvider::from_config(config).map_err(|message| {
                        UnsupportedProvider {
                            name: name.clone(),
                            message,
                        }
                    })?)
                }
                ProviderConfig::Exec { .. } => Arc::new(ExecProvider::from_config(config)),
                ProviderConfig::Kubernetes { .. } => {
                    Arc::new(KubernetesProvider::from_config(config))
                }
            };
            set.insert(name, provider);
        }
        Ok(set)
    }

    /// Adds or replaces a provider.
    pub fn insert(&mut self, name: &str, provider: Arc<dyn Provider>) {
        self.providers.insert(name.to_string(), provider);
    }

    /// The provider named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Provider>> {
        self.providers.get(name).cloned()
    }
}
