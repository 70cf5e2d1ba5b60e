//! Checkpoint discovery and strict loading (burn-store underneath).

mod layout;
mod load;
pub mod remap;

pub use layout::{CheckpointFormat, CheckpointLayout};
pub use load::{LoadReport, expected_shapes, load_checkpoint};
