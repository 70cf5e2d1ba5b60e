//! `Janus`: a loaded model with its processor and device, the entry point of both pipelines.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::checkpoint::{LoadReport, QuantGates, QuantManifest};
use crate::config::JanusConfig;
use crate::error::JanusError;
use crate::generation::GenerationOptions;
use crate::generation_config::GenerationConfig;
use crate::model::{JanusModel, LoadOptions};
use crate::processor::{ChatRoles, Processor};
use crate::understanding::AnswerOptions;

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
    /// The directory's recommended settings (`generation_config.json`, or the defaults).
    pub generation_config: GenerationConfig,
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
        let generation_config = GenerationConfig::from_dir(dir)?;
        Ok(Self {
            model,
            config,
            processor,
            generation_config,
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

    /// The role names this model's chat template expects: `<|User|>`/`<|Assistant|>` when the
    /// tokenizer knows them (Janus-Pro), else `User`/`Assistant` (Janus-1.3B).
    pub fn roles(&self) -> ChatRoles {
        self.processor.roles()
    }

    /// Answer options recommended by the model directory (`generation_config.json`), else the
    /// reference's: greedy, up to 512 tokens.
    pub fn answer_options(&self) -> AnswerOptions {
        self.generation_config.answer_options()
    }

    /// Generation options recommended by the model directory (`generation_config.json`), else
    /// the reference's: CFG weight 5, temperature 1, one image per prompt.
    pub fn generation_options(&self) -> GenerationOptions {
        self.generation_config.generation_options()
    }

    /// Writes this model, its language model quantised, as a quantised model directory at
    /// `out` (which must not exist), with the non-weight files of [`Janus::dir`] and `gates` in
    /// its manifest; [`Janus::load`] reads it back at the quantised size. Layout:
    /// [`checkpoint::quantized`](crate::checkpoint::quantized).
    ///
    /// # Errors
    ///
    /// [`JanusError::InvalidOption`] when the model is not quantised, [`JanusError::Output`]
    /// when `out` exists or cannot be written (nothing is left behind).
    pub fn save_quantized(
        &self,
        out: impl AsRef<Path>,
        gates: &QuantGates,
    ) -> Result<QuantManifest, JanusError> {
        crate::checkpoint::quantized::save(&self.model, &self.dir, out.as_ref(), gates)
    }
}
