//! CarlaRL's preprocessing, from the statistics in `preprocessor.json`:
//! z-score speed and steering, clip every sensor to ±`sensor_clip` (10) and
//! z-score it with one shared mean and std, then zero-pad to the width the
//! network takes. Pure functions: [`crate::policy`] calls them on
//! every batch.

use flotilla_messages::inference::Observation;
use serde::{Deserialize, Serialize};

/// The preprocessor statistics' file name inside a version folder.
pub const STATS_FILE: &str = "preprocessor.json";

/// Mean and standard deviation of one input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Moments {
    /// Mean.
    pub mean: f32,
    /// Standard deviation (> 0).
    pub std: f32,
}

impl Moments {
    fn z(self, x: f32) -> f32 {
        (x - self.mean) / self.std
    }
}

/// What `preprocessor.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessorStats {
    /// Of `speed`.
    pub speed: Moments,
    /// Of `steering`.
    pub steering: Moments,
    /// Shared by every sensor, measured after clipping.
    pub sensors: Moments,
    /// Sensors are clipped to `±sensor_clip` before the z-score.
    #[serde(default = "default_clip")]
    pub sensor_clip: f32,
}

fn default_clip() -> f32 {
    10.0
}

impl PreprocessorStats {
    /// The statistics of CarlaRL's example model.
    pub fn carla_example() -> Self {
        PreprocessorStats {
            speed: Moments {
                mean: 44.75,
                std: 14.433,
            },
            steering: Moments {
                mean: -0.01,
                std: 0.5773,
            },
            sensors: Moments {
                mean: 0.83,
                std: 0.6136,
            },
            sensor_clip: 10.0,
        }
    }

    /// Parses and checks `preprocessor.json`.
    pub fn parse(json: &[u8]) -> Result<Self, String> {
        let stats: Self = serde_json::from_slice(json).map_err(|e| format!("{STATS_FILE}: {e}"))?;
        for (name, m) in [
            ("speed", stats.speed),
            ("steering", stats.steering),
            ("sensors", stats.sensors),
        ] {
            if !m.mean.is_finite() || !m.std.is_finite() || m.std <= 0.0 {
                return Err(format!(
                    "{STATS_FILE}: {name}: mean must be finite and std finite and > 0"
                ));
            }
        }
        if !(stats.sensor_clip.is_finite() && stats.sensor_clip > 0.0) {
            return Err(format!("{STATS_FILE}: sensor_clip must be > 0"));
        }
        Ok(stats)
    }

    /// Appends the feature row of `obs` to `out`: speed, steering, then
    /// `sensors` values (missing ones are zero in feature space).
    pub fn write_row(&self, obs: &Observation, sensors: usize, out: &mut Vec<f32>) {
        out.push(self.speed.z(obs.speed));
        out.push(self.steering.z(obs.steering));
        let clip = self.sensor_clip;
        out.extend(
            obs.sensors
                .iter()
                .take(sensors)
                .map(|x| self.sensors.z(x.clamp(-clip, clip))),
        );
        out.extend(std::iter::repeat_n(
            0.0,
            sensors.saturating_sub(obs.sensors.len()),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_z_scored_clipped_and_padded() {
        let stats = PreprocessorStats::carla_example();
        let obs = Observation {
            speed: 44.75,
            steering: -0.01,
            sensors: vec![0.83, 50.0],
        };
        let mut row = Vec::new();
        stats.write_row(&obs, 3, &mut row);
        assert_eq!(row.len(), 5);
        assert!(row[0].abs() < 1e-6 && row[1].abs() < 1e-6 && row[2].abs() < 1e-6);
        assert!((row[3] - (10.0 - 0.83) / 0.6136).abs() < 1e-4);
        assert_eq!(row[4], 0.0);
    }

    #[test]
    fn zero_std_is_refused() {
        let bad = br#"{"speed":{"mean":0,"std":0},"steering":{"mean":0,"std":1},"sensors":{"mean":0,"std":1}}"#;
        assert!(PreprocessorStats::parse(bad).unwrap_err().contains("speed"));
    }
}
