//! The training run's configuration: one TOML (or JSON) file, unknown keys rejected, with
//! command-line overrides applied on top by the binary.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::DataConfig;
use crate::export::ExportConfig;
use crate::lora::LoraConfig;
use crate::optim::OptimConfig;
use crate::stage::{FreezeOverrides, FreezeSet, Stage};

/// Weights of the two losses in the total.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossWeights {
    /// Next-token loss on understanding and text rows.
    pub understanding: f64,
    /// Image-head loss on text-to-image rows.
    pub generation: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self {
            understanding: 1.0,
            generation: 1.0,
        }
    }
}

/// A whole training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The base model directory (as downloaded, or a previous run's export).
    pub model: PathBuf,
    /// Where checkpoints, metrics and the final model go.
    pub output_dir: PathBuf,
    /// Paper stage: which components train (I: adaptors + image head; II: + LLM; III: + SigLIP).
    pub stage: Stage,
    /// Per-component overrides of the stage's freeze set.
    pub freeze: FreezeOverrides,
    /// LoRA on the language model (and optionally SigLIP) instead of full fine-tuning of them.
    pub lora: Option<LoraConfig>,
    /// Training data.
    pub data: DataConfig,
    /// Validation JSONL files (understanding or text format); empty = no validation.
    pub val_data: Vec<PathBuf>,
    /// Validate every this many steps (0 = only at the end).
    pub val_every: usize,
    /// Optimiser, schedule, clipping and accumulation.
    pub optim: OptimConfig,
    /// Optimiser steps to run.
    pub steps: usize,
    /// Loss weights.
    pub loss_weights: LossWeights,
    /// Write a checkpoint every this many steps (0 = only at the end).
    pub save_every: usize,
    /// Checkpoints to keep.
    pub keep_last: usize,
    /// Seed of the model's random parts (LoRA initialisation) — data has its own in `data`.
    pub seed: u64,
    /// How the final model directory is written (`[export] layout = "original" | "hf"`).
    pub export: ExportConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::new(),
            output_dir: PathBuf::from("runs/janus"),
            stage: Stage::Three,
            freeze: FreezeOverrides::default(),
            lora: None,
            data: DataConfig::default(),
            val_data: Vec::new(),
            val_every: 0,
            optim: OptimConfig::default(),
            steps: 100,
            loss_weights: LossWeights::default(),
            save_every: 0,
            keep_last: 2,
            seed: 42,
            export: ExportConfig::default(),
        }
    }
}

/// Errors of reading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file does not parse or has unknown keys.
    #[error("invalid training config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong (with position).
        message: String,
    },
    /// The values cannot describe a run.
    #[error("invalid training config: {0}")]
    Invalid(String),
}

impl TrainConfig {
    /// Reads a `.toml` or `.json` file; relative paths inside are taken relative to the file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let parse = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let mut config: TrainConfig = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => serde_json::from_str(&text).map_err(|e| parse(e.to_string()))?,
            _ => toml::from_str(&text).map_err(|e| parse(e.to_string()))?,
        };
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.model);
        fix(&mut self.output_dir);
        self.data.understanding.iter_mut().for_each(fix);
        self.data.text.iter_mut().for_each(fix);
        self.data.generation.iter_mut().for_each(fix);
        self.val_data.iter_mut().for_each(fix);
        if let Some(c) = self.data.cache_dir.as_mut() {
            fix(c);
        }
    }

    /// The components that train, after the overrides.
    pub fn freeze_set(&self) -> FreezeSet {
        self.stage.freeze_set().with_overrides(&self.freeze)
    }

    /// Checks what the file format cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.model.as_os_str().is_empty() {
            return Err(ConfigError::Invalid(
                "`model` (the base model directory) is required".into(),
            ));
        }
        if self.steps == 0 {
            return Err(ConfigError::Invalid("`steps` must be at least 1".into()));
        }
        for (name, w) in [
            ("understanding", self.loss_weights.understanding),
            ("generation", self.loss_weights.generation),
        ] {
            if !w.is_finite() || w < 0.0 {
                return Err(ConfigError::Invalid(format!(
                    "loss_weights.{name} must be a finite non-negative number"
                )));
            }
        }
        self.optim
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(())
    }
}
