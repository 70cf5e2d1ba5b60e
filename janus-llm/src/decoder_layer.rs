use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Bool, Device, Tensor};

use crate::LlamaConfig;
use crate::attention::{LlamaAttention, LlamaAttentionConfig};
use crate::cache::LayerKv;
use crate::mlp::{LlamaMlp, LlamaMlpConfig};
use crate::rms_norm::{LlamaRmsNorm, LlamaRmsNormConfig};

/// Configuration of [`LlamaDecoderLayer`], derived from the model's [`LlamaConfig`].
#[derive(Config, Debug)]
pub struct LlamaDecoderLayerConfig {
    /// The model's shape.
    pub model: LlamaConfig,
}

/// One pre-norm decoder block: `h = x + attn(norm(x))`, `out = h + mlp(norm(h))`.
#[derive(Module, Debug)]
pub struct LlamaDecoderLayer {
    /// Self-attention.
    pub self_attn: LlamaAttention,
    /// SwiGLU feed-forward.
    pub mlp: LlamaMlp,
    /// Norm before attention.
    pub input_layernorm: LlamaRmsNorm,
    /// Norm before the feed-forward.
    pub post_attention_layernorm: LlamaRmsNorm,
}

impl LlamaDecoderLayerConfig {
    /// Builds the block with random weights.
    pub fn init(&self, device: &Device) -> LlamaDecoderLayer {
        let c = &self.model;
        let norm = || {
            LlamaRmsNormConfig::new(c.hidden_size)
                .with_epsilon(c.rms_norm_eps)
                .init(device)
        };
        LlamaDecoderLayer {
            self_attn: LlamaAttentionConfig::new(
                c.hidden_size,
                c.num_attention_heads,
                c.kv_heads(),
            )
            .init(device),
            mlp: LlamaMlpConfig::new(c.hidden_size, c.intermediate_size).init(device),
            input_layernorm: norm(),
            post_attention_layernorm: norm(),
        }
    }
}

impl LlamaDecoderLayer {
    /// # Shapes
    /// - x: `[B, T, D]`; cos, sin: `[B, 1, T, head_dim]`
    /// - output: `[B, T, D]`
    pub(crate) fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        mask: Option<Tensor<4, Bool>>,
        cache: Option<(&mut LayerKv, usize, usize)>,
    ) -> Tensor<3> {
        let h = x.clone().add(self.self_attn.forward(
            self.input_layernorm.forward(x),
            cos,
            sin,
            mask,
            cache,
        ));
        h.clone()
            .add(self.mlp.forward(self.post_attention_layernorm.forward(h)))
    }
}
