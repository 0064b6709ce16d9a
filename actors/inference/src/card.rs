//! The model card (`model_card.yaml`): what a version folder claims to be,
//! and the sha256 of every artifact in it.
//!
//! The fields are CarlaRL's (`model_name`, `version`, `model_type`,
//! `input_shape`, `output_shape`, `performance_metrics`, `artifact_hashes`,
//! plus `description` and `framework_version`), with two of ours: the
//! network's `activations`, one per linear layer (the layer sizes come from
//! the weights), and `action_std`, the spread of `deterministic: false`
//! samples. [`crate::artifacts`] reads the folder the card describes.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// An activation after a linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `max(0, x)`.
    Relu,
    /// `tanh(x)`.
    Tanh,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// GELU (erf form).
    Gelu,
    /// `x * sigmoid(x)`.
    Silu,
    /// No activation.
    #[serde(alias = "linear", alias = "none")]
    Identity,
}

/// A parsed `model_card.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// E.g. `carla-ppo`; also the NATS subject token `<prefix>.infer.<model_name>`.
    pub model_name: String,
    /// E.g. `v0.1.0`; must equal the folder name.
    pub version: String,
    /// `pytorch` (a `.pt` state dict) or `safetensors`.
    pub model_type: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Features in, e.g. `[5]`; checked against the weights when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_shape: Option<Vec<usize>>,
    /// Actions out, `[3]`; checked against the weights when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_shape: Option<Vec<usize>>,
    /// The framework that trained it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework_version: Option<String>,
    /// Evaluation results (reward, success rate...), shown by `/versions`.
    #[serde(default)]
    pub performance_metrics: BTreeMap<String, Value>,
    /// File name → sha256, `sha256:<hex>` or bare hex.
    #[serde(default)]
    pub artifact_hashes: BTreeMap<String, String>,
    /// One activation per linear layer, input side first.
    #[serde(default)]
    pub activations: Vec<Activation>,
    /// Standard deviation of stochastic actions (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_std: Option<f32>,
}

/// The card's file name inside a version folder.
pub const CARD_FILE: &str = "model_card.yaml";

impl ModelCard {
    /// Parses YAML; the error names the field.
    pub fn parse(yaml: &str) -> Result<Self, String> {
        serde_yaml::from_str(yaml).map_err(|e| format!("{CARD_FILE}: {e}"))
    }

    /// Renders YAML.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_default()
    }

    /// The card as JSON, for `/versions`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The lowercase hex of `expected` without its optional `sha256:` prefix,
/// or `None` when it is not a sha256.
pub fn expected_digest(expected: &str) -> Option<String> {
    let hex = expected.trim();
    let hex = hex.strip_prefix("sha256:").unwrap_or(hex);
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hex.to_lowercase())
}

/// The sha256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_accept_prefix_and_bare_hex() {
        let h = sha256_hex(b"abc");
        assert_eq!(expected_digest(&format!("sha256:{h}")), Some(h.clone()));
        assert_eq!(expected_digest(&h.to_uppercase()), Some(h));
        assert_eq!(expected_digest("sha256:abc123..."), None);
    }

    #[test]
    fn the_seed_card_parses() {
        let card = ModelCard::parse(
            r#"
model_name: "carla-ppo"
version: "v0.1.0"
model_type: "pytorch"
description: "CarlaRL PPO policy for autonomous driving"
input_shape: [5]
output_shape: [3]
framework_version: "2.1.0"
performance_metrics:
  reward: 850.5
  success_rate: 0.95
artifact_hashes:
  model.pt: "sha256:abc123..."
  preprocessor.pkl: "sha256:def456..."
"#,
        )
        .unwrap();
        assert_eq!(card.input_shape, Some(vec![5]));
        assert_eq!(card.performance_metrics["reward"], 850.5);
    }

    #[test]
    fn a_card_without_a_name_names_the_field() {
        let e = ModelCard::parse("version: v1.0.0\nmodel_type: x\n").unwrap_err();
        assert!(e.contains("model_name"), "{e}");
    }
}
