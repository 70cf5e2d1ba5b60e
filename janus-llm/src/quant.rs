//! Which of the language model's linear layers are stored in which GGML block format.

use janus_kernels::quant::QuantKind;

use crate::LlmError;
use crate::linear::LlamaLinear;
use crate::model::LlamaForCausalLM;

/// A weight quantisation tier for the language model's linear layers (attention and MLP
/// projections, `lm_head`). Embeddings and norms stay in the float dtype.
///
/// The mixes and the accuracy each reaches are in docs/quantization.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantScheme {
    /// Every linear layer in Q8_0 (8.5 bits per weight).
    Q8_0,
    /// Q4_K (4.5 bits per weight) for the layers, as llama.cpp's Q4_K_M mixes it: `lm_head` and
    /// the first and last layers' `v_proj` and `down_proj` in Q8_0 (llama.cpp uses Q6_K there,
    /// which these kernels do not have). Rows that are not whole 256-value super-blocks fall
    /// back to Q8_0.
    Q4K,
}

impl QuantScheme {
    /// The name the programs' `--dtype` flag takes (`q8_0`, `q4_k`).
    pub const fn name(self) -> &'static str {
        match self {
            QuantScheme::Q8_0 => "q8_0",
            QuantScheme::Q4K => "q4_k",
        }
    }

    /// The scheme named `name` ([`QuantScheme::name`]).
    pub fn from_name(name: &str) -> Option<QuantScheme> {
        [QuantScheme::Q8_0, QuantScheme::Q4K]
            .into_iter()
            .find(|s| s.name() == name)
    }

    /// The format wanted for a layer (before the row-width fallback).
    pub fn kind_for(self, layer: LinearRole, layers: usize) -> QuantKind {
        match self {
            QuantScheme::Q8_0 => QuantKind::Q8_0,
            QuantScheme::Q4K => match layer {
                LinearRole::LmHead => QuantKind::Q8_0,
                LinearRole::Layer { index, name }
                    if matches!(name, "v_proj" | "down_proj")
                        && (index == 0 || index + 1 == layers) =>
                {
                    QuantKind::Q8_0
                }
                LinearRole::Layer { .. } => QuantKind::Q4K,
            },
        }
    }
}

impl std::fmt::Display for QuantScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoder layer's projections as (sub-module, field), in the order of the layer's fields.
const PROJECTIONS: [(&str, &str); 7] = [
    ("self_attn", "q_proj"),
    ("self_attn", "k_proj"),
    ("self_attn", "v_proj"),
    ("self_attn", "o_proj"),
    ("mlp", "gate_proj"),
    ("mlp", "up_proj"),
    ("mlp", "down_proj"),
];

/// Where a linear layer sits in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearRole {
    /// A projection of decoder layer `index` (`q_proj` … `down_proj`).
    Layer {
        /// The decoder layer.
        index: usize,
        /// The projection's field name.
        name: &'static str,
    },
    /// The output head.
    LmHead,
}

impl LlamaForCausalLM {
    /// Every linear layer with its role and module path
    /// (`model.layers.3.self_attn.q_proj`, `lm_head`), in the order of
    /// [`LlamaForCausalLM::linears_mut`].
    pub fn linears(&self) -> Vec<(LinearRole, String, &LlamaLinear)> {
        let mut out = Vec::new();
        for (index, layer) in self.model.layers.iter().enumerate() {
            let (a, m) = (&layer.self_attn, &layer.mlp);
            let linears = [&a.q_proj, &a.k_proj, &a.v_proj, &a.o_proj];
            let linears = linears
                .into_iter()
                .chain([&m.gate_proj, &m.up_proj, &m.down_proj]);
            for ((group, name), linear) in PROJECTIONS.into_iter().zip(linears) {
                out.push((
                    LinearRole::Layer { index, name },
                    format!("model.layers.{index}.{group}.{name}"),
                    linear,
                ));
            }
        }
        out.push((LinearRole::LmHead, "lm_head".into(), &self.lm_head));
        out
    }

    /// Every linear layer with its role and module path
    /// (`model.layers.3.self_attn.q_proj`, `lm_head`).
    pub fn linears_mut(&mut self) -> Vec<(LinearRole, String, &mut LlamaLinear)> {
        let mut out = Vec::new();
        for (index, layer) in self.model.layers.iter_mut().enumerate() {
            let a = &mut layer.self_attn;
            let m = &mut layer.mlp;
            let linears = [&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.o_proj];
            let linears =
                linears
                    .into_iter()
                    .chain([&mut m.gate_proj, &mut m.up_proj, &mut m.down_proj]);
            for ((group, name), linear) in PROJECTIONS.into_iter().zip(linears) {
                out.push((
                    LinearRole::Layer { index, name },
                    format!("model.layers.{index}.{group}.{name}"),
                    linear,
                ));
            }
        }
        out.push((LinearRole::LmHead, "lm_head".into(), &mut self.lm_head));
        out
    }

    /// Quantises every linear layer whose float weight holds values (loaded, or drawn) into
    /// `scheme`'s format for it, freeing the float weight; layers not loaded yet are left for a
    /// later call, so a loader can call this after each checkpoint shard. Returns how many
    /// layers it quantised.
    pub fn quantize(&mut self, scheme: QuantScheme) -> Result<usize, LlmError> {
        if let Some(other) = self.quant.filter(|s| *s != scheme) {
            return Err(LlmError::QuantSchemeMismatch {
                have: other,
                want: scheme,
            });
        }
        self.quant = Some(scheme);
        let layers = self.model.layers.len();
        let mut done = 0;
        for (role, path, linear) in self.linears_mut() {
            if !linear.has_float_weight() {
                continue;
            }
            linear
                .quantize(scheme.kind_for(role, layers))
                .map_err(|source| LlmError::Quant {
                    layer: path,
                    source,
                })?;
            done += 1;
        }
        Ok(done)
    }

    /// The tier [`LlamaForCausalLM::quantize`] applied, if any.
    pub fn quant_scheme(&self) -> Option<QuantScheme> {
        self.quant
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LlamaConfig;
    use burn::tensor::{Device, Int, Tensor};

    fn tiny() -> LlamaConfig {
        LlamaConfig::new()
            .with_vocab_size(512)
            .with_hidden_size(64)
            .with_intermediate_size(256)
            .with_num_hidden_layers(2)
            .with_num_attention_heads(4)
            .with_max_position_embeddings(64)
    }

    #[test]
    fn q4_k_keeps_the_head_and_the_outer_value_and_down_projections_at_8_bits() {
        let s = QuantScheme::Q4K;
        let kind = |index, name| s.kind_for(LinearRole::Layer { index, name }, 24);
        assert_eq!(s.kind_for(LinearRole::LmHead, 24), QuantKind::Q8_0);
        assert_eq!(kind(0, "v_proj"), QuantKind::Q8_0);
        assert_eq!(kind(23, "down_proj"), QuantKind::Q8_0);
        assert_eq!(kind(1, "v_proj"), QuantKind::Q4K);
        assert_eq!(kind(0, "q_proj"), QuantKind::Q4K);
        assert_eq!(
            QuantScheme::Q8_0.kind_for(
                LinearRole::Layer {
                    index: 5,
                    name: "up_proj"
                },
                24
            ),
            QuantKind::Q8_0
        );
        assert_eq!(QuantScheme::from_name("q4_k"), Some(QuantScheme::Q4K));
        assert_eq!(QuantScheme::from_name("q5"), None);
    }

    #[test]
    fn quantize_replaces_every_linear_and_the_forward_stays_close() {
        let device = Device::flex();
        device.seed(3);
        let lm = tiny().init(&device).unwrap();
        let ids = Tensor::<2, Int>::from_data([[1, 5, 9, 200, 3]], &device);
        let before: Vec<f32> = lm
            .forward(ids.clone(), None, None)
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap();
        for scheme in [QuantScheme::Q8_0, QuantScheme::Q4K] {
            let mut q = lm.clone();
            assert_eq!(q.quantize(scheme).unwrap(), 2 * 7 + 1);
            assert_eq!(q.quant_scheme(), Some(scheme));
            assert_eq!(q.quantize(scheme).unwrap(), 0, "nothing left to quantise");
            for (role, path, linear) in q.linears_mut() {
                let m = linear
                    .quantized()
                    .unwrap_or_else(|| panic!("{path} not quantised"));
                // Widths of 64 and 256: only rows of 256 take Q4_K.
                let want = scheme.kind_for(role, 2).for_row_width(m.cols()).unwrap();
                assert_eq!(m.kind(), want, "{path}");
                assert_eq!(linear.weight.lazy_shape()[0], 0, "float weight freed");
            }
            let after: Vec<f32> = q
                .forward(ids.clone(), None, None)
                .unwrap()
                .into_data()
                .try_to_vec()
                .unwrap();
            let scale = before.iter().map(|v| v.abs()).fold(0f32, f32::max);
            let worst = before
                .iter()
                .zip(&after)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 0.1 * scale,
                "{scheme}: worst {worst} against {scale}"
            );
            assert!(
                worst > 0.0,
                "{scheme}: the quantised model gave the float model's bits"
            );
        }
        let mut q = lm.clone();
        q.quantize(QuantScheme::Q8_0).unwrap();
        assert_eq!(
            q.quantize(QuantScheme::Q4K),
            Err(LlmError::QuantSchemeMismatch {
                have: QuantScheme::Q8_0,
                want: QuantScheme::Q4K
            })
        );
    }
}
