#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod attention;
mod cache;
mod config;
mod decoder_layer;
mod linear;
mod mlp;
mod model;
mod quant;
mod rms_norm;
mod rope;
mod sampling;

pub use attention::{LlamaAttention, LlamaAttentionConfig};
pub use cache::KvCache;
pub use config::LlamaConfig;
pub use decoder_layer::{LlamaDecoderLayer, LlamaDecoderLayerConfig};
pub use janus_kernels::quant::{QuantError, QuantKind, QuantMatrix};
pub use linear::{LlamaLinear, LlamaLinearConfig};
pub use mlp::{LlamaMlp, LlamaMlpConfig};
pub use model::{LlamaForCausalLM, LlamaModel};
pub use quant::{LinearRole, QuantScheme};
pub use rms_norm::{LlamaRmsNorm, LlamaRmsNormConfig};
pub use rope::{RotaryEmbedding, positions_from_mask};
pub use sampling::{Sampler, SamplingOptions, sample_from_uniform};

/// Errors from the language model. Everything here comes from input the caller chose.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LlmError {
    /// The configuration cannot describe a working model.
    #[error("invalid language model config: {0}")]
    InvalidConfig(String),
    /// A forward pass was given no positions.
    #[error("empty input: a forward pass needs at least one position")]
    EmptyInput,
    /// The padding mask does not match the input.
    #[error("padding mask has shape {found:?}, expected {expected:?}")]
    MaskShape {
        /// `[B, T]` of the input.
        expected: [usize; 2],
        /// Rows and first-row length of the mask.
        found: [usize; 2],
    },
    /// More positions than the model's context.
    #[error("sequence of {length} positions exceeds the model's context of {max}")]
    ContextTooLong {
        /// Positions requested (cache included).
        length: usize,
        /// `max_position_embeddings`.
        max: usize,
    },
    /// The cache cannot hold the new positions.
    #[error("KV cache full: {needed} positions needed, capacity {capacity}")]
    CacheFull {
        /// Cache capacity.
        capacity: usize,
        /// Positions needed.
        needed: usize,
    },
    /// The input batch differs from the cache's.
    #[error("batch of {found} rows given to a cache built for {expected}")]
    BatchMismatch {
        /// Rows of the cache.
        expected: usize,
        /// Rows of the input.
        found: usize,
    },
    /// The sampling temperature is negative, NaN or infinite.
    #[error("invalid sampling temperature {0}: must be finite and >= 0 (0 is greedy)")]
    InvalidTemperature(f64),
    /// `top_k` is `Some(0)`, which would keep no token.
    #[error("invalid top_k 0: keep at least one token, or use None for no limit")]
    InvalidTopK,
    /// `top_p` is outside `(0, 1]` or NaN.
    #[error("invalid top_p {0}: must be in (0, 1]")]
    InvalidTopP(f64),
    /// A row of logits holds a NaN.
    #[error("logits row {row} contains NaN")]
    NonFiniteLogits {
        /// Index of the first bad row.
        row: usize,
    },
    /// A row of logits has no token that can be drawn: every logit is `-inf`, or it is empty.
    #[error("logits row {row} has no candidate: every logit is -inf")]
    NoCandidates {
        /// Index of the first bad row.
        row: usize,
    },
    /// The number of injected uniforms differs from the number of rows.
    #[error("{found} uniforms given for {expected} rows of logits")]
    UniformCount {
        /// Rows of the logits.
        expected: usize,
        /// Uniforms given.
        found: usize,
    },
    /// An injected uniform lies outside `[0, 1)`.
    #[error("uniform {value} for row {row} is outside [0, 1)")]
    InvalidUniform {
        /// Row of the bad uniform.
        row: usize,
        /// The value given.
        value: f64,
    },
    /// A linear layer could not be quantised.
    #[error("cannot quantise `{layer}`: {source}")]
    Quant {
        /// The layer's module path (`model.layers.3.mlp.down_proj`).
        layer: String,
        /// Why.
        source: janus_kernels::quant::QuantError,
    },
    /// The model was already quantised to another tier.
    #[error("the model is already quantised to {have}; cannot quantise it to {want}")]
    QuantSchemeMismatch {
        /// The tier it has.
        have: QuantScheme,
        /// The tier asked for.
        want: QuantScheme,
    },
    /// The backend could not read the logits back to the host.
    #[error("could not read logits: {0}")]
    LogitsRead(String),
}
