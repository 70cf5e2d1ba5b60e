//! janus-core-specific test helpers: the PyTorch checkpoint writer and the checkpoint copies of
//! a model directory. Fixture discovery, goldens and error measures come from `janus-testutil`.
#![allow(dead_code)]

pub mod torch_pickle;

use std::path::{Path, PathBuf};

use janus_testutil::walk_dirs;

/// The checkpoint copies of a model directory: the directory itself and every subdirectory
/// that holds weights but no `config.json` (e.g. `torch-bf16/`).
pub fn weight_dirs(model_dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![model_dir.to_path_buf()];
    walk_dirs(model_dir, &mut |d| {
        if d != model_dir
            && !d.join("config.json").exists()
            && janus_core::CheckpointLayout::discover(d).is_ok()
        {
            out.push(d.to_path_buf());
        }
    });
    out
}
