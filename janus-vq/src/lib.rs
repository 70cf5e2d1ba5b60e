#![warn(missing_docs)]
//! LlamaGen VQ-16 image tokenizer of DeepSeek Janus / Janus-Pro on burn.
//!
//! [`VqModel`] encodes `[B, 3, H, W]` images in `[-1, 1]` to row-major code grids
//! ([`VqModel::encode`]) and decodes codes back to images ([`VqModel::decode_codes`]), exactly as
//! the reference `gen_vision_model`. Build it with [`VqConfig::init`] (preset
//! [`VqConfig::vq_16`]); struct fields mirror the PyTorch state dict so checkpoints load by path
//! (see the crate README for the few renames).

mod attn_block;
mod config;
mod decoder;
mod downsample;
mod encoder;
mod error;
mod mid_block;
mod model;
mod norm;
mod quantizer;
mod res_block;
mod upsample;

pub use attn_block::{AttnBlock, AttnBlockConfig};
pub use config::VqConfig;
pub use decoder::{Decoder, DecoderBlock, DecoderBlockConfig, DecoderConfig};
pub use downsample::{Downsample, DownsampleConfig};
pub use encoder::{Encoder, EncoderBlock, EncoderBlockConfig, EncoderConfig};
pub use error::VqError;
pub use mid_block::{MidBlock, MidBlockConfig};
pub use model::{VqEncoding, VqModel};
pub use quantizer::{VectorQuantizer, VectorQuantizerConfig};
pub use res_block::{ResBlock, ResBlockConfig};
pub use upsample::{Upsample, UpsampleConfig};
