//! A loaded version: network + preprocessing + action space. Turns
//! validated requests into actions; used by the batcher's threads.
//!
//! The network's mean action is clipped to the action space (throttle and
//! brake `0..=1`, steer `-1..=1`). With `deterministic: false` each action
//! is drawn from a normal distribution around the mean (spread: a `log_std`
//! tensor in the weights, else the card's `action_std`, else 0.1) by a
//! ChaCha generator seeded per request, so a request with the same seed
//! always gets the same sample.

use crate::artifacts::VerifiedArtifacts;
use crate::card::ModelCard;
use crate::network::Mlp;
use crate::preprocess::PreprocessorStats;
use candle_core::Device;
use flotilla_messages::inference::{
    Action, FieldError, PredictRequest, ServingError, ServingErrorCode,
};
use flotilla_messages::inference::{LoadedVersion, Observation};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Instant;

/// Outputs of the network, in this order.
pub const ACTIONS: [&str; 3] = ["throttle", "brake", "steer"];
/// Inputs before the sensors: speed and steering.
const SCALAR_INPUTS: usize = 2;
const DEFAULT_ACTION_STD: f32 = 0.1;

/// A loaded, verified version.
#[derive(Debug)]
pub struct Policy {
    card: ModelCard,
    mlp: Mlp,
    stats: PreprocessorStats,
    hashes: BTreeMap<String, String>,
    action_std: [f32; 3],
    device: Device,
}

impl Policy {
    /// Builds the policy; the card must agree with the weights.
    pub fn new(artifacts: VerifiedArtifacts, device: &Device) -> Result<Self, ServingError> {
        let fail = |m: String| ServingError::new(ServingErrorCode::ModelLoadingError, m);
        let card = artifacts.card;
        let mlp = Mlp::from_named(artifacts.tensors, &card.activations, device).map_err(fail)?;
        let (inputs, outputs) = (mlp.input_size(), mlp.output_size());
        if outputs != ACTIONS.len() {
            return Err(fail(format!(
                "the network gives {outputs} outputs; the action space has 3 (throttle, brake, steer)"
            )));
        }
        if inputs <= SCALAR_INPUTS {
            return Err(fail(format!(
                "the network takes {inputs} inputs; it needs speed, steering and at least one sensor"
            )));
        }
        for (field, shape, size) in [
            ("input_shape", &card.input_shape, inputs),
            ("output_shape", &card.output_shape, outputs),
        ] {
            if let Some(shape) = shape.as_ref().filter(|s| s.as_slice() != [size]) {
                return Err(fail(format!(
                    "model_card.yaml: {field} {shape:?} does not match the weights ([{size}])"
                )));
            }
        }
        let action_std = match mlp.log_std() {
            Some(l) if l.len() == 3 => [l[0].exp(), l[1].exp(), l[2].exp()],
            _ => [card.action_std.unwrap_or(DEFAULT_ACTION_STD); 3],
        };
        if action_std.iter().any(|s| !s.is_finite() || *s < 0.0) {
            return Err(fail("action_std must be finite and >= 0".into()));
        }
        Ok(Policy {
            card,
            mlp,
            stats: artifacts.stats,
            hashes: artifacts.hashes,
            action_std,
            device: device.clone(),
        })
    }

    /// The folder name, e.g. `v0.1.0`.
    pub fn version(&self) -> &str {
        &self.card.version
    }

    /// The card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// Features in: speed, steering and the sensors.
    pub fn input_size(&self) -> usize {
        self.mlp.input_size()
    }

    /// Sensor readings per observation.
    pub fn sensor_count(&self) -> usize {
        self.input_size() - SCALAR_INPUTS
    }

    /// `cpu` or `cuda:N`.
    pub fn device_name(&self) -> String {
        device_name(&self.device)
    }

    /// What the deployment records about this version.
    pub fn summary(&self, warmup_ms: f64) -> LoadedVersion {
        LoadedVersion {
            model_name: self.card.model_name.clone(),
            input_size: self.input_size(),
            layer_sizes: self.mlp.sizes().to_vec(),
            artifact_hashes: self.hashes.clone(),
            warmup_ms,
        }
    }

    /// Checks that the request's sensor lists fit the network: within a
    /// request shorter lists are zero-padded to the longest (as CarlaRL
    /// does), and the longest must be exactly what the network takes.
    pub fn check(&self, request: &PredictRequest) -> Result<(), ServingError> {
        let want = self.sensor_count();
        let width = request
            .observations
            .iter()
            .map(|o| o.sensors.len())
            .max()
            .unwrap_or(0);
        if width == want {
            return Ok(());
        }
        let errors: Vec<FieldError> = request
            .observations
            .iter()
            .enumerate()
            .filter(|(_, o)| o.sensors.len() == width)
            .map(|(i, o)| FieldError {
                field: format!("body.observations.{i}.sensors"),
                message: format!(
                    "model {} takes {want} sensor readings (input shape [{}]), got {}",
                    self.version(),
                    self.input_size(),
                    o.sensors.len()
                ),
                kind: "sensor_count".into(),
            })
            .collect();
        Err(ServingError::validation(errors))
    }

    /// The network's mean actions for `requests` (already checked), row-major.
    pub fn forward<'a>(
        &self,
        requests: impl Iterator<Item = &'a PredictRequest>,
        rows: usize,
    ) -> Result<Vec<f32>, ServingError> {
        let mut features = Vec::with_capacity(rows * self.input_size());
        for obs in requests.flat_map(|r| r.observations.iter()) {
            self.stats
                .write_row(obs, self.sensor_count(), &mut features);
        }
        self.mlp.forward(features, rows).map_err(|e| {
            ServingError::new(
                ServingErrorCode::InferenceError,
                format!("forward pass: {e}"),
            )
        })
    }

    /// Runs typical batches (1 and `batch` rows) through the network so that
    /// the first real request pays no first-call cost. Returns the time taken.
    pub fn warm_up(&self, batch: usize) -> Result<f64, ServingError> {
        let started = Instant::now();
        let observation = Observation {
            speed: self.stats.speed.mean,
            steering: self.stats.steering.mean,
            sensors: vec![self.stats.sensors.mean; self.sensor_count()],
        };
        for rows in [1, batch.max(1)] {
            let request = PredictRequest {
                observations: vec![observation.clone(); rows],
                deterministic: true,
                seed: None,
            };
            for _ in 0..3 {
                self.forward(std::iter::once(&request), rows)?;
            }
        }
        Ok(started.elapsed().as_secs_f64() * 1e3)
    }

    /// Mean outputs → actions, sampled when not deterministic.
    pub fn actions(&self, means: &[f32], deterministic: bool, seed: u64) -> Vec<Action> {
        actions(means, (!deterministic).then_some((self.action_std, seed)))
    }
}

/// `cpu` or `cuda:N`, as `/healthz` reports it.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Clips rows of `[throttle, brake, steer]` to the action space, first
/// adding normal noise with per-action std from a generator seeded by
/// `sample`'s seed.
pub fn actions(means: &[f32], sample: Option<([f32; 3], u64)>) -> Vec<Action> {
    let mut rng = sample.map(|(_, seed)| rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    means
        .chunks_exact(3)
        .map(|m| {
            let mut a = [m[0], m[1], m[2]];
            if let (Some(rng), Some((std, _))) = (rng.as_mut(), sample) {
                for (x, s) in a.iter_mut().zip(std) {
                    *x += s * standard_normal(rng);
                }
            }
            Action {
                throttle: a[0].clamp(0.0, 1.0),
                brake: a[1].clamp(0.0, 1.0),
                steer: a[2].clamp(-1.0, 1.0),
            }
        })
        .collect()
}

/// One draw of N(0, 1) (Box–Muller).
fn standard_normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::{write_example, ArtifactStore, WeightsFormat};
    use proptest::prelude::*;

    fn example() -> Policy {
        let root = tempfile::tempdir().unwrap();
        write_example(root.path(), "v0.1.0", 42, WeightsFormat::Safetensors).unwrap();
        let a = ArtifactStore::new(root.path())
            .load("v0.1.0", &Device::Cpu)
            .unwrap();
        Policy::new(a, &Device::Cpu).unwrap()
    }

    fn request(sensors: Vec<Vec<f32>>) -> PredictRequest {
        PredictRequest {
            observations: sensors
                .into_iter()
                .map(|s| Observation {
                    speed: 25.5,
                    steering: 0.1,
                    sensors: s,
                })
                .collect(),
            deterministic: true,
            seed: None,
        }
    }

    #[test]
    fn the_example_behaves_like_carla_rl() {
        let p = example();
        let r = request(vec![vec![0.8, 0.2, 0.5]]);
        p.check(&r).unwrap();
        let means = p.forward(std::iter::once(&r), 1).unwrap();
        let a = p.actions(&means, true, 0);
        assert_eq!(a[0].brake, 0.0, "bias -2 keeps brake at 0: {a:?}");
        assert!(a[0].throttle > 0.0 && a[0].throttle < 1.0);
    }

    #[test]
    fn a_wrong_sensor_count_names_the_observation() {
        let p = example();
        let e = p
            .check(&request(vec![vec![1.0; 3], vec![1.0; 5]]))
            .unwrap_err();
        assert_eq!(e.code, ServingErrorCode::ValidationError);
        let first = &e.details["validation_errors"][0];
        assert_eq!(first["field"], "body.observations.1.sensors");
        assert!(p.check(&request(vec![vec![1.0; 3], vec![1.0; 2]])).is_ok());
    }

    #[test]
    fn sampling_is_seeded() {
        let means = [0.5f32, 0.0, 0.0];
        let s = Some(([0.1; 3], 9));
        assert_eq!(actions(&means, s), actions(&means, s));
        assert_ne!(actions(&means, s), actions(&means, Some(([0.1; 3], 10))));
    }

    proptest! {
        #[test]
        fn actions_stay_in_the_action_space(means in proptest::collection::vec(-5.0f32..5.0, 3..30),
            seed in any::<u64>(), std in 0.0f32..3.0) {
            let n = means.len() / 3 * 3;
            for a in actions(&means[..n], Some(([std; 3], seed))) {
                prop_assert!((0.0..=1.0).contains(&a.throttle));
                prop_assert!((0.0..=1.0).contains(&a.brake));
                prop_assert!((-1.0..=1.0).contains(&a.steer));
            }
        }
    }
}
