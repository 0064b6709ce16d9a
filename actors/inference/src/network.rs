//! The policy network: a multilayer perceptron in candle, built from named
//! weights (safetensors or a PyTorch `state_dict`) and the card's
//! activations. Nothing about its shape is a code constant: the layers are
//! the rank-2 `*.weight` tensors in natural name order (`net.0.weight`,
//! `net.2.weight`, … as `nn.Sequential` names them), each with its `*.bias`,
//! and consecutive layers must chain (`out` of one is `in` of the next).
//!
//! Matrices are small, so the forward pass is run single-threaded (the
//! worker sets `RAYON_NUM_THREADS=1`); throughput comes from batching and
//! from concurrent requests, see [`crate::batcher`].

use crate::card::Activation;
use candle_core::{DType, Device, Tensor};
use std::cmp::Ordering;

/// One linear layer and its activation.
#[derive(Debug, Clone)]
struct Dense {
    /// `(in, out)`, contiguous: the transpose of PyTorch's `(out, in)`.
    weight_t: Tensor,
    bias: Option<Tensor>,
    activation: Activation,
}

/// A multilayer perceptron.
#[derive(Debug, Clone)]
pub struct Mlp {
    layers: Vec<Dense>,
    sizes: Vec<usize>,
    log_std: Option<Vec<f32>>,
}

/// Compares tensor names with numbers compared as numbers (`net.10` after `net.2`).
fn natural(a: &str, b: &str) -> Ordering {
    let key = |s: &str| -> Vec<(u64, String)> {
        s.split('.')
            .map(|p| match p.parse::<u64>() {
                Ok(n) => (n, String::new()),
                Err(_) => (u64::MAX, p.to_string()),
            })
            .collect()
    };
    key(a).cmp(&key(b))
}

impl Mlp {
    /// Builds the network from named tensors; the error says what is wrong.
    pub fn from_named(
        tensors: Vec<(String, Tensor)>,
        activations: &[Activation],
        device: &Device,
    ) -> Result<Self, String> {
        let find = |name: &str| tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t);
        let mut weights: Vec<&(String, Tensor)> = tensors
            .iter()
            .filter(|(n, t)| n.ends_with(".weight") && t.rank() == 2)
            .collect();
        weights.sort_by(|a, b| natural(&a.0, &b.0));
        if weights.is_empty() {
            return Err("the weights hold no rank-2 `*.weight` tensor".into());
        }
        if activations.len() != weights.len() {
            return Err(format!(
                "model_card.yaml: activations: {} given for {} linear layers ({})",
                activations.len(),
                weights.len(),
                weights
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let mut sizes = vec![weights[0].1.dims()[1]];
        let mut layers = Vec::new();
        for ((name, w), activation) in weights.into_iter().zip(activations) {
            let (out, inp) = (w.dims()[0], w.dims()[1]);
            if inp != *sizes.last().unwrap_or(&0) {
                return Err(format!(
                    "{name} takes {inp} inputs but the layer before gives {}",
                    sizes.last().unwrap_or(&0)
                ));
            }
            let prefix = name.trim_end_matches(".weight");
            let bias = match find(&format!("{prefix}.bias")) {
                Some(b) if b.dims() != [out] => {
                    return Err(format!(
                        "{prefix}.bias has shape {:?}, expected [{out}]",
                        b.dims()
                    ))
                }
                Some(b) => Some(to_f32(b, device)?),
                None => None,
            };
            layers.push(Dense {
                weight_t: to_f32(&w.t().map_err(err)?, device)?,
                bias,
                activation: *activation,
            });
            sizes.push(out);
        }
        let log_std = match find("log_std") {
            Some(t) => Some(
                t.flatten_all()
                    .and_then(|t| t.to_dtype(DType::F32))
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(err)?,
            ),
            None => None,
        };
        Ok(Mlp {
            layers,
            sizes,
            log_std,
        })
    }

    /// Layer widths, input first.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// Features in.
    pub fn input_size(&self) -> usize {
        self.sizes[0]
    }

    /// Values out.
    pub fn output_size(&self) -> usize {
        self.sizes[self.sizes.len() - 1]
    }

    /// A `log_std` tensor stored with the weights (PPO's action spread), if any.
    pub fn log_std(&self) -> Option<&[f32]> {
        self.log_std.as_deref()
    }

    /// Runs `rows` feature rows (row-major) through the network and returns
    /// the outputs row-major.
    pub fn forward(&self, features: Vec<f32>, rows: usize) -> candle_core::Result<Vec<f32>> {
        let device = self.layers[0].weight_t.device();
        let mut x = Tensor::from_vec(features, (rows, self.input_size()), device)?;
        for layer in &self.layers {
            x = x.matmul(&layer.weight_t)?;
            if let Some(b) = &layer.bias {
                x = x.broadcast_add(b)?;
            }
            x = match layer.activation {
                Activation::Relu => x.relu()?,
                Activation::Tanh => x.tanh()?,
                Activation::Sigmoid => x.neg()?.exp()?.affine(1.0, 1.0)?.recip()?,
                Activation::Gelu => x.gelu_erf()?,
                Activation::Silu => x.silu()?,
                Activation::Identity => x,
            };
        }
        x.flatten_all()?.to_vec1::<f32>()
    }
}

fn to_f32(t: &Tensor, device: &Device) -> Result<Tensor, String> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.to_device(device))
        .and_then(|t| t.contiguous())
        .map_err(err)
}

fn err(e: candle_core::Error) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(data: &[f32], shape: (usize, usize)) -> Tensor {
        Tensor::from_slice(data, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn layers_follow_natural_name_order_and_activations() {
        let tensors = vec![
            ("net.10.weight".to_string(), tensor(&[2.0], (1, 1))),
            ("net.2.weight".to_string(), tensor(&[1.0, -1.0], (1, 2))),
            (
                "net.2.bias".to_string(),
                Tensor::from_slice(&[0.5f32], 1, &Device::Cpu).unwrap(),
            ),
        ];
        let acts = [Activation::Relu, Activation::Identity];
        let mlp = Mlp::from_named(tensors, &acts, &Device::Cpu).unwrap();
        assert_eq!(mlp.sizes(), &[2, 1, 1]);
        // relu(1*3 - 1*1 + 0.5) * 2 = 5; relu(1 - 4 + 0.5) * 2 = 0
        assert_eq!(
            mlp.forward(vec![3.0, 1.0, 1.0, 4.0], 2).unwrap(),
            vec![5.0, 0.0]
        );
    }

    #[test]
    fn broken_chains_and_missing_activations_are_named() {
        let tensors = vec![
            ("a.0.weight".to_string(), tensor(&[1.0; 6], (3, 2))),
            ("a.1.weight".to_string(), tensor(&[1.0; 4], (1, 4))),
        ];
        let acts = [Activation::Relu, Activation::Tanh];
        let e = Mlp::from_named(tensors.clone(), &acts, &Device::Cpu).unwrap_err();
        assert!(e.contains("a.1.weight takes 4 inputs"), "{e}");
        let e = Mlp::from_named(tensors, &acts[..1], &Device::Cpu).unwrap_err();
        assert!(e.contains("activations: 1 given for 2"), "{e}");
    }
}
