use crate::linear::{LlamaLinear, LlamaLinearConfig};
use burn::config::Config;
use burn::module::Module;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Tensor};

use crate::cache::LayerKv;
use crate::rope::RotaryEmbedding;

/// Configuration of [`LlamaAttention`].
#[derive(Config, Debug)]
pub struct LlamaAttentionConfig {
    /// Model width.
    pub hidden_size: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads; a divisor of `num_heads`.
    pub num_kv_heads: usize,
}

/// Multi-head self-attention with RoPE and optional grouped key/value heads (no biases).
#[derive(Module, Debug)]
pub struct LlamaAttention {
    /// `D → H·head_dim`.
    pub q_proj: LlamaLinear,
    /// `D → H_kv·head_dim`.
    pub k_proj: LlamaLinear,
    /// `D → H_kv·head_dim`.
    pub v_proj: LlamaLinear,
    /// `H·head_dim → D`.
    pub o_proj: LlamaLinear,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl LlamaAttentionConfig {
    /// Builds the layer with random weights (to be overwritten by a checkpoint).
    pub fn init(&self, device: &Device) -> LlamaAttention {
        let head_dim = self.hidden_size / self.num_heads;
        let linear = |i, o| LlamaLinearConfig::new(i, o).init(device);
        LlamaAttention {
            q_proj: linear(self.hidden_size, self.num_heads * head_dim),
            k_proj: linear(self.hidden_size, self.num_kv_heads * head_dim),
            v_proj: linear(self.hidden_size, self.num_kv_heads * head_dim),
            o_proj: linear(self.num_heads * head_dim, self.hidden_size),
            num_heads: self.num_heads,
            num_kv_heads: self.num_kv_heads,
            head_dim,
        }
    }
}

impl LlamaAttention {
    /// Attends `x` to itself and to whatever `cache` holds before position `past`.
    ///
    /// `mask` (`true` = masked) already includes the causal rule; without one, plain causal
    /// masking aligned to the last key is used.
    ///
    /// # Shapes
    /// - x: `[B, T, D]`; cos, sin: `[B, 1, T, head_dim]`; mask: `[B, H, T, past + T]`
    /// - output: `[B, T, D]`
    pub(crate) fn forward(
        &self,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        mask: Option<Tensor<4, Bool>>,
        cache: Option<(&mut LayerKv, usize, usize)>,
    ) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let heads = |proj: &LlamaLinear, n: usize| {
            proj.forward(x.clone())
                .reshape([b, t, n, self.head_dim])
                .swap_dims(1, 2)
        };
        let q = RotaryEmbedding::apply(heads(&self.q_proj, self.num_heads), cos, sin);
        let k = RotaryEmbedding::apply(heads(&self.k_proj, self.num_kv_heads), cos, sin);
        let v = heads(&self.v_proj, self.num_kv_heads);
        let (k, v) = match cache {
            Some((layer, past, capacity)) => layer.append(k, v, past, capacity),
            None => (k, v),
        };
        // The cache may hold half-precision keys and values under f32 queries: burn's ops then
        // run in the cache's dtype (softmax in f32), janus-kernels' reads it as it is.
        let dtype = q.dtype();
        let out = if t == 1 {
            janus_kernels::cached_attention(q, k, v, mask)
        } else {
            let is_causal = mask.is_none();
            let rep = self.num_heads / self.num_kv_heads;
            attention(
                q.cast(k.dtype()),
                repeat_kv(k, rep),
                repeat_kv(v, rep),
                mask,
                None,
                AttentionModuleOptions {
                    is_causal,
                    ..Default::default()
                },
            )
        };
        let out = out.cast(dtype);
        let out = out
            .swap_dims(1, 2)
            .reshape([b, t, self.num_heads * self.head_dim]);
        self.o_proj.forward(out)
    }
}

/// Repeats each key/value head `rep` times (GQA), as burn's `attention` wants as many key/value
/// heads as query heads: burn-flex's own kernel accepts fewer, the autodiff backend's fallback
/// multiplies mismatched shapes without a check and returns garbage.
///
/// # Shapes
/// - x: `[B, H_kv, S, head_dim]`
/// - output: `[B, H_kv · rep, S, head_dim]`
fn repeat_kv(x: Tensor<4>, rep: usize) -> Tensor<4> {
    if rep == 1 {
        return x;
    }
    let [b, h_kv, s, d] = x.dims();
    x.reshape([b, h_kv, 1, s, d])
        .expand([b, h_kv, rep, s, d])
        .reshape([b, h_kv * rep, s, d])
}
