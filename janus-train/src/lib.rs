#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod export;
pub mod lora;
pub mod loss;
pub mod optim;
pub mod parallel;
pub mod stage;
pub mod trainer;
pub mod vq_train;

pub use batch::{GenerationBatch, IGNORE_INDEX, MixedBatch, UnderstandingBatch};
pub use checkpoint::{
    CheckpointError, TrainState, latest_checkpoint, list_checkpoints, load_checkpoint,
    save_checkpoint,
};
pub use config::{ConfigError, LossWeights, TrainConfig};
pub use data::{
    CodeCache, ConversationRecord, DataConfig, DataError, MixRatio, OnError, T2iRecord, Turn,
    VqCodeEncoder,
};
pub use export::{
    ExportError, ExportOptions, ExportReport, export_model_dir, export_model_dir_with,
};
pub use lora::{
    LoraConfig, LoraError, LoraTarget, apply_lora, load_adapter, merge_lora, read_adapter_config,
    save_adapter,
};
pub use optim::{Decay, OptimConfig, OptimError};
pub use stage::{FreezeOverrides, FreezeSet, Stage, StageError};
pub use trainer::{StepReport, TrainError, TrainSummary, final_model_dir, train, train_parallel};
pub use vq_train::{
    CodebookUsage, VqStepReport, VqTrainConfig, VqTrainError, codebook_usage, reconstruct, train_vq,
};
