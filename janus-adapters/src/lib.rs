#![warn(missing_docs)]
//! The small modules that connect Janus' vision parts to its language model.
//!
//! - [`MlpProjector`] — `aligner` (SigLIP features → LLM embeddings) and `gen_aligner`
//!   (`gen_embed` vectors → LLM embeddings).
//! - [`GenHead`] — `gen_head`, LLM hidden state → image-code logits.
//! - [`GenEmbedConfig`] — builds `gen_embed`, a plain burn [`Embedding`](burn::nn::Embedding).
//!
//! Struct fields mirror the PyTorch state dict so checkpoints load by path (see the crate README).

mod error;
mod gen_embed;
mod gen_head;
mod linear;
mod projector;

pub use error::AdapterError;
pub use gen_embed::GenEmbedConfig;
pub use gen_head::{GenHead, GenHeadConfig};
pub use projector::{MlpProjector, MlpProjectorConfig, ProjectorType};
