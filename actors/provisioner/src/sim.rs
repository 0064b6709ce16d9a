//! The `sim` provider: an in-process fake cloud.
//!
//! It is the embedded default and what simulations use. Provisioning takes
//! `provision_delay` and fails for a seeded, deterministic share
//! (`failure_rate`) of node ids — the same node id always gets the same
//! answer, so a retried effect behaves like the first try. With
//! `state_file`, the cloud's instances survive a restart of the process
//! (a crash test can then count them).

use super::provider::{Instance, Provider, ProviderError, Provisioned};
use async_trait::async_trait;
use flotilla_messages::fleet::ProviderConfig;
use flotilla_messages::provisioner::NodeSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// Whether the fake cloud fails to provision `node_id` (deterministic in
/// `seed` and `node_id`; `rate` in 0..=1).
pub fn sim_fails(seed: u64, node_id: &str, rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    // FNV-1a over the id, mixed with the seed (splitmix64 finaliser).
    let mut h = fnv1a(node_id.as_bytes(), seed);
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    ((h >> 11) as f64 / (1u64 << 53) as f64) < rate
}

/// FNV-1a of `bytes`, its basis mixed with `seed`: a stable hash (the
/// same on every run and platform) for seeded choices and short ids.
pub fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One fake instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimInstance {
    /// Flotilla's node id.
    pub node_id: String,
    /// The pool.
    pub pool: String,
    /// `sim-<n>`.
    pub instance_id: String,
    /// Cordoned.
    pub cordoned: bool,
}

/// What the fake cloud holds (and writes to `state_file`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SimCloud {
    /// Instances by node id.
    pub instances: BTreeMap<String, SimInstance>,
    /// How many instances were ever created.
    pub created: u64,
    /// How many were terminated.
    pub terminated: u64,
}

/// The fake cloud provider.
pub struct SimProvider {
    delay: Duration,
    failure_rate: f64,
    seed: u64,
    auto_register: bool,
    state_file: Option<PathBuf>,
    cloud: Mutex<SimCloud>,
}

impl Default for SimProvider {
    fn default() -> Self {
        SimProvider {
            delay: Duration::ZERO,
            failure_rate: 0.0,
            seed: 0,
            auto_register: true,
            state_file: None,
            cloud: Mutex::new(SimCloud::default()),
        }
    }
}

impl SimProvider {
    /// A provider from its `providers:` entry (loading `state_file` if it exists).
    pub fn from_config(config: &ProviderConfig) -> Result<Self, String> {
        let ProviderConfig::Sim {
            provision_delay,
            failure_rate,
            seed,
            auto_register,
            state_file,
        } = config
        else {
            return Err("not a sim provider".into());
        };
        if !(0.0..=1.0).contains(failure_rate) {
            return Err(format!(
                "failure_rate: must be in 0..=1, got {failure_rate}"
            ));
        }
        let state_file = state_file.as_ref().map(PathBuf::from);
        let cloud = match &state_file {
            Some(path) if path.exists() => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("state_file {}: {e}", path.display()))?;
                serde_json::from_str(&text)
                    .map_err(|e| format!("state_file {}: {e}", path.display()))?
            }
            _ => SimCloud::default(),
        };
        Ok(SimProvider {
            delay: Duration::from_secs(provision_delay.0),
            failure_rate: *failure_rate,
            seed: *seed,
            auto_register: *auto_register,
            state_file,
            cloud: Mutex::new(cloud),
        })
    }

    /// A copy of the cloud's state.
    pub fn cloud(&self) -> SimCloud {
        self.cloud.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn change<T>(&self, f: impl FnOnce(&mut SimCloud) -> T) -> Result<T, ProviderError> {
        let mut cloud = self.cloud.lock().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut cloud);
        if let Some(path) = &self.state_file {
            let text = serde_json::to_string_pretty(&*cloud)
                .map_err(|e| ProviderError::Broken(e.to_string()))?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text)
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(|e| {
                    ProviderError::Broken(format!("state_file {}: {e}", path.display()))
                })?;
        }
        Ok(out)
    }
}

#[async_trait]
impl Provider for SimProvider {
    fn registers_itself(&self) -> bool {
        self.auto_register
    }

    async fn provision(
        &self,
        node_id: &str,
        spec: &NodeSpec,
    ) -> Result<Provisioned, ProviderError> {
        tokio::time::sleep(self.delay).await;
        if sim_fails(self.seed, node_id, self.failure_rate) {
            return Err(ProviderError::Refused(format!(
                "sim: no capacity for {node_id} (failure_rate {})",
                self.failure_rate
            )));
        }
        let instance_id = self.change(|cloud| {
            if let Some(existing) = cloud.instances.get(node_id) {
                return existing.instance_id.clone();
            }
            cloud.created += 1;
            let instance_id = format!("sim-{}", cloud.created);
            cloud.instances.insert(
                node_id.to_string(),
                SimInstance {
                    node_id: node_id.to_string(),
                    pool: spec.pool.clone(),
                    instance_id: instance_id.clone(),
                    cordoned: false,
                },
            );
            instance_id
        })?;
        Ok(Provisioned {
            instance_id,
            registered: self.auto_register,
        })
    }

    async fn list(&self, pool: &str) -> Result<Vec<Instance>, ProviderError> {
        let cloud = self.cloud.lock().unwrap_or_else(|e| e.into_inner());
        Ok(cloud
            .instances
            .values()
            .filter(|i| i.pool == pool)
            .map(|i| Instance {
                node_id: i.node_id.clone(),
                instance_id: i.instance_id.clone(),
                registered: self.auto_register,
            })
            .collect())
    }

    async fn terminate(
        &self,
        node_id: &str,
        _instance_id: Option<&str>,
    ) -> Result<(), ProviderError> {
        self.change(|cloud| {
            if cloud.instances.remove(node_id).is_some() {
                cloud.terminated += 1;
            }
        })
    }

    async fn cordon(&self, node_id: &str) -> Result<(), ProviderError> {
        self.change(|cloud| {
            if let Some(i) = cloud.instances.get_mut(node_id) {
                i.cordoned = true;
            }
        })
    }

    async fn uncordon(&self, node_id: &str) -> Result<(), ProviderError> {
        self.change(|cloud| {
            if let Some(i) = cloud.instances.get_mut(node_id) {
                i.cordoned = false;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NodeSpec {
        NodeSpec {
            pool: "p".into(),
            provider: "sim".into(),
            instance_type: None,
            region: None,
            labels: BTreeMap::new(),
            setup_commands: vec![],
        }
    }

    #[test]
    fn failures_are_seeded_and_near_the_rate() {
        let fails = (0..10_000)
            .filter(|i| sim_fails(7, &format!("p-{i}"), 0.2))
            .count();
        assert!((1_800..2_200).contains(&fails), "{fails}");
        assert_eq!(sim_fails(7, "p-1", 0.2), sim_fails(7, "p-1", 0.2));
        assert!(!sim_fails(7, "p-1", 0.0));
        assert!(sim_fails(7, "p-1", 1.0));
    }

    #[tokio::test]
    async fn provisioning_twice_adopts_and_state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cloud.json");
        let config = ProviderConfig::Sim {
            provision_delay: Default::default(),
            failure_rate: 0.0,
            seed: 0,
            auto_register: true,
            state_file: Some(file.display().to_string()),
        };
        let sim = SimProvider::from_config(&config).unwrap();
        let a = sim.provision("p-1", &spec()).await.unwrap();
        let b = sim.provision("p-1", &spec()).await.unwrap();
        assert_eq!(a, b);
        let again = SimProvider::from_config(&config).unwrap();
        assert_eq!(again.cloud().created, 1);
        assert_eq!(again.list("p").await.unwrap().len(), 1);
        again.terminate("p-1", None).await.unwrap();
        again.terminate("p-1", None).await.unwrap();
        assert_eq!(again.cloud().terminated, 1);
    }

    /// The provider conformance suite on a fake cloud kept in a state
    /// file, so a restarted provider finds what the first one made.
    mod conformance {
        use super::*;
        use crate::conformance::{ProviderCase, ProviderHarness};
        use async_trait::async_trait;
        use std::sync::Arc;

        struct SimHarness {
            config: ProviderConfig,
            _dir: tempfile::TempDir,
        }

        #[async_trait]
        impl ProviderHarness for SimHarness {
            fn skip(_: ProviderCase) -> Option<&'static str> {
                None
            }

            fn start(_: ProviderCase) -> Self {
                let dir = tempfile::tempdir().expect("a directory for the cloud");
                let state_file = dir.path().join("cloud.json").display().to_string();
                let config = ProviderConfig::Sim {
                    provision_delay: Default::default(),
                    failure_rate: 0.0,
                    seed: 0,
                    auto_register: true,
                    state_file: Some(state_file),
                };
                SimHarness { config, _dir: dir }
            }

            fn makes_nodes(&self) -> bool {
                true
            }

            fn provider(&self) -> Arc<dyn Provider> {
                Arc::new(SimProvider::from_config(&self.config).expect("the sim cloud"))
            }

            async fn finish(self) {}
        }

        crate::provider_conformance_tests!(SimHarness);
    }
}
