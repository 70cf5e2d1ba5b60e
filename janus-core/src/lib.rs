#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
mod embed;
mod error;
mod model;
pub mod processor;

pub use checkpoint::{CheckpointFormat, CheckpointLayout, LoadReport};
pub use config::JanusConfig;
pub use error::JanusError;
pub use model::{JanusModel, LoadOptions};

pub use burn;
pub use janus_adapters;
pub use janus_llm;
pub use janus_siglip;
pub use janus_vq;
