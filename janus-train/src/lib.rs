#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod export;
pub mod lora;
pub mod loss;
pub mod optim;
pub mod parallel;
pub mod shapes;
pub mod stage;
pub mod trainer;
pub mod vq_train;

pub use batch::{GenerationBatch, IGNORE_INDEX, MixedBatch, UnderstandingBatch};
