//! Which files hold a model's weights: the four layouts the released models use.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{JanusError, read_file};

/// File format of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointFormat {
    /// safetensors (memory-mapped).
    Safetensors,
    /// PyTorch zip pickle (`torch.save`), read without executing anything.
    Pytorch,
}

/// A checkpoint found in a directory: one file or a sharded set with its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointLayout {
    /// Format of every file.
    pub format: CheckpointFormat,
    /// The shard index, for sharded checkpoints.
    pub index: Option<PathBuf>,
    /// Files to read, in order.
    pub files: Vec<PathBuf>,
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: std::collections::BTreeMap<String, String>,
}

impl CheckpointLayout {
    /// Finds the checkpoint in `dir`, preferring safetensors, then an index over a single file.
    ///
    /// Recognised names: `model.safetensors.index.json`, `model.safetensors`,
    /// `pytorch_model.bin.index.json`, `pytorch_model.bin`.
    pub fn discover(dir: impl AsRef<Path>) -> Result<Self, JanusError> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(JanusError::Missing {
                what: "directory",
                path: dir.to_path_buf(),
            });
        }
        let candidates = [
            (
                "model.safetensors.index.json",
                CheckpointFormat::Safetensors,
                true,
            ),
            ("model.safetensors", CheckpointFormat::Safetensors, false),
            (
                "pytorch_model.bin.index.json",
                CheckpointFormat::Pytorch,
                true,
            ),
            ("pytorch_model.bin", CheckpointFormat::Pytorch, false),
        ];
        for (name, format, sharded) in candidates {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            if !sharded {
                return Ok(Self {
                    format,
                    index: None,
                    files: vec![path],
                });
            }
            let text = read_file(&path)?;
            let index: ShardIndex =
                serde_json::from_str(&text).map_err(|e| JanusError::json(e).in_file(&path))?;
            let shards: BTreeSet<&String> = index.weight_map.values().collect();
            let mut files = Vec::with_capacity(shards.len());
            for shard in shards {
                let file = dir.join(shard);
                if !file.is_file() {
                    return Err(JanusError::MissingShard {
                        index: path,
                        shard: file,
                    });
                }
                files.push(file);
            }
            return Ok(Self {
                format,
                index: Some(path),
                files,
            });
        }
        Err(JanusError::NoCheckpoint(dir.to_path_buf()))
    }

    /// A one-line description such as `pytorch (2 shards)`.
    pub fn describe(&self) -> String {
        let kind = match self.format {
            CheckpointFormat::Safetensors => "safetensors",
            CheckpointFormat::Pytorch => "pytorch pickle",
        };
        match &self.index {
            Some(_) => format!("{kind}, {} shards", self.files.len()),
            None => format!("{kind}, single file"),
        }
    }
}
