#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
mod embed;
mod error;
mod generation;
pub mod generation_config;
mod janus;
mod model;
pub mod processor;
mod quant_gate;
mod understanding;

pub use checkpoint::{
    CheckpointFormat, CheckpointLayout, GateRecord, LoadReport, QuantGates, QuantManifest,
};
pub use config::{JanusConfig, ModelLayout};
pub use error::JanusError;
pub use generation::{
    CfgBatch, GeneratedImage, GenerationOptions, GenerationProgress, png_bytes, save_images,
    save_png, to_rgb_images,
};
pub use generation_config::GenerationConfig;
pub use janus::Janus;
pub use janus_llm::{QuantScheme, SamplingOptions};
pub use model::{JanusModel, LoadOptions, check_param_dtype};
pub use processor::ChatRoles;
pub use quant_gate::{
    Agreement, AgreementSum, GATE_CFG_WEIGHT, GATE_PROMPTS, GATE_QUESTIONS, GateLimits,
    GateProgress, agreement, gate_picture, generation_gate, understanding_gate,
};
pub use understanding::{Answer, AnswerOptions, Chat, StopReason};

pub use burn;
pub use janus_adapters;
pub use janus_llm;
pub use janus_siglip;
pub use janus_vq;
