use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};

use crate::linear::{LlamaLinear, LlamaLinearConfig};
use burn::tensor::{DType, Device, Int, Tensor};

use crate::cache::{KvCache, attention_mask};
use crate::decoder_layer::{LlamaDecoderLayer, LlamaDecoderLayerConfig};
use crate::rms_norm::{LlamaRmsNorm, LlamaRmsNormConfig};
use crate::rope::{RotaryEmbedding, positions_from_mask, positions_tensor};
use crate::{LlamaConfig, LlmError};

/// The LLaMA decoder stack (HF `LlamaModel`): embeddings, layers, final norm.
#[derive(Module, Debug)]
pub struct LlamaModel {
    /// Token embedding table `[V, D]`.
    pub embed_tokens: Embedding,
    /// Decoder blocks.
    pub layers: Vec<LlamaDecoderLayer>,
    /// Final RMSNorm.
    pub norm: LlamaRmsNorm,
    #[module(skip)]
    rope: RotaryEmbedding,
    /// Longest sequence (cache included) the model accepts.
    pub max_position_embeddings: usize,
    /// Query heads, for the mask shape.
    pub num_heads: usize,
}

/// The causal language model (HF `LlamaForCausalLM`): [`LlamaModel`] plus an untied `lm_head`.
#[derive(Module, Debug)]
pub struct LlamaForCausalLM {
    /// The decoder stack.
    pub model: LlamaModel,
    /// `D → V`, no bias.
    pub lm_head: LlamaLinear,
    /// The tier the linear layers were quantised to ([`LlamaForCausalLM::quantize`]).
    #[module(skip)]
    pub(crate) quant: Option<crate::QuantScheme>,
}

impl LlamaConfig {
    /// Builds the decoder stack with random weights.
    pub fn init_model(&self, device: &Device) -> Result<LlamaModel, LlmError> {
        self.validate()?;
        let layer = LlamaDecoderLayerConfig::new(self.clone());
        Ok(LlamaModel {
            embed_tokens: EmbeddingConfig::new(self.vocab_size, self.hidden_size).init(device),
            layers: (0..self.num_hidden_layers)
                .map(|_| layer.init(device))
                .collect(),
            norm: LlamaRmsNormConfig::new(self.hidden_size)
                .with_epsilon(self.rms_norm_eps)
                .init(device),
            rope: RotaryEmbedding::new(self.head_dim(), self.rope_theta),
            max_position_embeddings: self.max_position_embeddings,
            num_heads: self.num_attention_heads,
        })
    }

    /// Builds the causal LM with random weights (to be overwritten by a checkpoint).
    pub fn init(&self, device: &Device) -> Result<LlamaForCausalLM, LlmError> {
        Ok(LlamaForCausalLM {
            model: self.init_model(device)?,
            lm_head: LlamaLinearConfig::new(self.hidden_size, self.vocab_size).init(device),
            quant: None,
        })
    }
}

impl LlamaModel {
    /// Looks up token embeddings.
    ///
    /// # Shapes
    /// - ids: `[B, T]`
    /// - output: `[B, T, D]`
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.embed_tokens.forward(ids)
    }

    /// Runs the decoder on input embeddings and returns the hidden states after the final norm.
    ///
    /// `padding` gives, per row, which of the `T` new positions are real tokens (`None`: all);
    /// positions are `cumsum(mask) − 1` clamped at 0, continued from `cache` when given. With a
    /// cache the new keys and values are appended to it, so a prefill followed by single-token
    /// steps equals one full pass.
    ///
    /// Whatever the weights' dtype, the layers compute in f32 (the cache may store keys and
    /// values in half precision, see [`Self::new_cache`]); the output is cast back to the
    /// embeddings' dtype.
    ///
    /// # Shapes
    /// - embeds: `[B, T, D]`; padding: `B` rows of `T` flags
    /// - output: `[B, T, D]`
    pub fn forward(
        &self,
        embeds: Tensor<3>,
        padding: Option<&[Vec<bool>]>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor<3>, LlmError> {
        let [b, t, _] = embeds.dims();
        let device = embeds.device();
        if t == 0 {
            return Err(LlmError::EmptyInput);
        }
        if let Some(mask) = padding
            && (mask.len() != b || mask.iter().any(|row| row.len() != t))
        {
            return Err(LlmError::MaskShape {
                expected: [b, t],
                found: [mask.len(), mask.first().map_or(0, Vec::len)],
            });
        }
        let past = cache.as_ref().map_or(0, |c| c.len());
        if past + t > self.max_position_embeddings {
            return Err(LlmError::ContextTooLong {
                length: past + t,
                max: self.max_position_embeddings,
            });
        }
        let all_valid;
        let rows = match padding {
            Some(m) => m,
            None => {
                all_valid = vec![vec![true; t]; b];
                &all_valid[..]
            }
        };
        let offsets = match &cache {
            Some(c) => c.next_positions(),
            None => vec![0; b],
        };
        let positions = positions_tensor(positions_from_mask(rows, &offsets), b, t, &device);
        // Activations and RoPE tables stay in f32 whatever the weights' dtype:
        // half-precision weights then cost only their (halved) reading, not f16 element-wise
        // ops, and the sums are as accurate as in f32 (docs/perf-notes.md §18).
        let out_dtype = embeds.dtype();
        let (cos, sin) = self.rope.cos_sin(positions, DType::F32);
        let mut x = if out_dtype == DType::F32 {
            embeds
        } else {
            embeds.cast(DType::F32)
        };
        match cache {
            Some(cache) => {
                cache.check_room(b, t)?;
                cache.push(padding, t);
                let mask = attention_mask(cache.valid(), past, t, self.num_heads, &device);
                let capacity = cache.capacity();
                for (layer, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
                    x = layer.forward(x, &cos, &sin, mask.clone(), Some((kv, past, capacity)));
                }
            }
            None => {
                let mask = attention_mask(rows, 0, t, self.num_heads, &device);
                for layer in &self.layers {
                    x = layer.forward(x, &cos, &sin, mask.clone(), None);
                }
            }
        }
        let hidden = self.norm.forward(x);
        Ok(if out_dtype == DType::F32 {
            hidden
        } else {
            hidden.cast(out_dtype)
        })
    }

    /// A cache sized for this model: `batch` rows, up to `capacity` positions.
    ///
    /// With half-precision weights the cache holds keys and values in that dtype too (as
    /// llama.cpp's default F16 cache does): half the memory and half the reading per step;
    /// otherwise f32.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> KvCache {
        let cache = KvCache::new(
            self.layers.len(),
            batch,
            capacity.min(self.max_position_embeddings),
        );
        match self.embed_tokens.weight.val().dtype() {
            dtype @ (DType::F16 | DType::BF16) => cache.with_dtype(dtype),
            _ => cache,
        }
    }
}

impl LlamaForCausalLM {
    /// Next-token logits for every position.
    ///
    /// # Shapes
    /// - embeds: `[B, T, D]`
    /// - output: `[B, T, V]`
    pub fn forward_embeds(
        &self,
        embeds: Tensor<3>,
        padding: Option<&[Vec<bool>]>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor<3>, LlmError> {
        let hidden = self.model.forward(embeds, padding, cache)?;
        Ok(self.lm_head.forward(hidden))
    }

    /// Next-token logits for every position, from token ids.
    ///
    /// # Shapes
    /// - ids: `[B, T]`
    /// - output: `[B, T, V]`
    pub fn forward(
        &self,
        ids: Tensor<2, Int>,
        padding: Option<&[Vec<bool>]>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor<3>, LlmError> {
        self.forward_embeds(self.model.embed(ids), padding, cache)
    }
}
