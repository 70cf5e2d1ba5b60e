//! Checkpoint discovery and strict loading (burn-store underneath).

mod layout;
mod load;
mod pickle_guard;
pub mod quantized;
pub mod remap;

pub use layout::{CheckpointFormat, CheckpointLayout};
pub use load::{LoadReport, expected_shapes, load_checkpoint, read_tensors};
pub use quantized::{GateRecord, QuantGates, QuantManifest, QuantTensor, is_quantized_dir};
