//! `Janus`: a loaded model with its processor and device, the entry point of both pipelines.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::checkpoint::LoadReport;
use crate::config::JanusConfig;
use crate::error::JanusError;
use crate::model::{JanusModel, LoadOptions};
use crate::processor::Processor;

/// A Janus model ready to understand and draw: weights, config, processor and device.
///
/// ```no_run
/// use janus_core::{Janus, LoadOptions};
/// # fn main() -> Result<(), janus_core::JanusError> {
/// let device = janus_core::burn::tensor::Device::flex();
/// let janus = Janus::load("models/Janus-Pro-1B", &LoadOptions::default(), &device)?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Janus {
    /// The weights.
    pub model: JanusModel,
    /// The resolved `config.json`.
    pub config: JanusConfig,
    /// Tokenizer, chat template and image preprocessing.
    pub processor: Processor,
    /// What the checkpoint load did.
    pub report: LoadReport,
    device: Device,
    dir: PathBuf,
}

impl Janus {
    /// Loads a model directory (config, processor files and weights).
    pub fn load(
        dir: impl AsRef<Path>,
        options: &LoadOptions,
        device: &Device,
    ) -> Result<Self, JanusError> {
        let dir = dir.as_ref();
        let (model, config, report) = JanusModel::load(dir, options, device)?;
        let processor =
            Processor::from_dir(dir)?.with_max_len(config.language.max_position_embeddings);
        Ok(Self {
            model,
            config,
            processor,
            report,
            device: device.clone(),
            dir: dir.to_path_buf(),
        })
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The model directory it was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
