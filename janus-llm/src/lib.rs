#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod attention;
mod cache;
mod config;
mod decoder_layer;
mod mlp;
mod model;
mod rms_norm;
mod rope;

pub use attention::{LlamaAttention, LlamaAttentionConfig};
pub use cache::KvCache;
pub use config::LlamaConfig;
pub use decoder_layer::{LlamaDecoderLayer, LlamaDecoderLayerConfig};
pub use mlp::{LlamaMlp, LlamaMlpConfig};
pub use model::{LlamaForCausalLM, LlamaModel};
pub use rms_norm::{LlamaRmsNorm, LlamaRmsNormConfig};
pub use rope::{RotaryEmbedding, positions_from_mask};

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
}
