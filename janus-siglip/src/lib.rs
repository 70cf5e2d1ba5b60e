#![warn(missing_docs)]
//! SigLIP vision tower of DeepSeek Janus / Janus-Pro on burn.
//!
//! [`SiglipVisionTower`] turns normalised `[B, 3, 384, 384]` images into `[B, 576, 1024]` patch
//! features (the output of the final LayerNorm), exactly as the reference's
//! `siglip_large_patch16_384` timm ViT with `select_layer = -1`. Build it with
//! [`SiglipConfig::init`]; struct fields mirror the PyTorch state dict so checkpoints load by
//! path (see the crate README).

mod attention;
mod block;
mod config;
mod error;
mod linear;
mod mlp;
mod patch_embed;
mod vision_tower;

pub use attention::{Attention, AttentionConfig};
pub use block::{Block, BlockConfig};
pub use config::SiglipConfig;
pub use error::SiglipError;
pub use mlp::{Mlp, MlpConfig};
pub use patch_embed::{PatchEmbed, PatchEmbedConfig};
pub use vision_tower::SiglipVisionTower;
