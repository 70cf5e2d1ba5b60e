//! Checkpoint discovery and strict loading (burn-store underneath).

mod layout;
mod load;
mod pickle_guard;
pub mod remap;

pub use layout::{CheckpointFormat, CheckpointLayout};
pub use load::{LoadReport, expected_shapes, load_checkpoint};
