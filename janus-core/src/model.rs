//! `JanusModel`: the seven checkpoint components, built from a [`JanusConfig`] and loaded from
//! a model directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::Module;
use burn::nn::Embedding;
use burn::tensor::{DType, Device};
use janus_adapters::{GenEmbedConfig, GenHead, GenHeadConfig, MlpProjector, MlpProjectorConfig};
use janus_llm::{LlamaForCausalLM, QuantScheme};
use janus_siglip::{SiglipConfig, SiglipVisionTower};
use janus_vq::{VqConfig, VqModel};

use crate::checkpoint::{
    CheckpointLayout, LoadReport, QuantManifest, is_quantized_dir, load_checkpoint, quantized,
};
use crate::config::{JanusConfig, ProjectorParams};
use crate::error::JanusError;

/// The whole Janus model; field names are the checkpoint's top-level prefixes.
#[derive(Module, Debug)]
pub struct JanusModel {
    /// SigLIP vision tower (understanding encoder).
    pub vision_model: SiglipVisionTower,
    /// Understanding adaptor: SigLIP features → LLM embeddings.
    pub aligner: MlpProjector,
    /// VQ image tokenizer (codes ↔ pixels).
    pub gen_vision_model: VqModel,
    /// Generation adaptor: `gen_embed` vectors → LLM embeddings.
    pub gen_aligner: MlpProjector,
    /// Image head: LLM hidden state → image-code logits.
    pub gen_head: GenHead,
    /// Image-code embedding table for generation input (not the VQ codebook).
    pub gen_embed: Embedding,
    /// The shared LLaMA language model.
    pub language_model: LlamaForCausalLM,
    /// The manifest of the quantised directory the model was loaded from.
    #[module(skip)]
    pub(crate) quant_manifest: Option<Arc<QuantManifest>>,
}

/// How to load a model directory.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Float dtype of the parameters (checkpoint tensors are converted on load).
    pub dtype: DType,
    /// Read the weights from here instead of the model directory (same layouts).
    pub weights_dir: Option<PathBuf>,
    /// Quantise the language model's linear layers to this tier while loading, one checkpoint
    /// shard at a time (the rest of the model stays in `dtype`). Inference only: refused on an
    /// autodiff device.
    pub quant: Option<QuantScheme>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            weights_dir: None,
            quant: None,
        }
    }
}

impl LoadOptions {
    /// These options with parameters in `dtype`.
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// These options with the language model's linear layers quantised to `quant`.
    pub fn with_quant(mut self, quant: Option<QuantScheme>) -> Self {
        self.quant = quant;
        self
    }

    /// These options reading the weights from `dir`.
    pub fn with_weights_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.weights_dir = Some(dir.into());
        self
    }
}

/// Whether `device` can hold and compute the model's parameters in `dtype`: a float dtype the
/// device supports. [`JanusModel::load`] checks it first, so a `bf16` request on a WGSL device
/// (or `f16` on a Vulkan driver without 16-bit floats) is an error rather than a failure deep
/// in a kernel compiler.
pub fn check_param_dtype(device: &Device, dtype: DType) -> Result<(), JanusError> {
    let reason = if !dtype.is_float() {
        "not a float dtype"
    } else if !device.supports_dtype(dtype) {
        "the device does not support it"
    } else {
        return Ok(());
    };
    Err(JanusError::UnsupportedDtype {
        dtype: format!("{dtype:?}"),
        device: format!("{device:?}"),
        reason,
    })
}

fn config_err(component: &str, e: impl std::fmt::Display) -> JanusError {
    JanusError::Config {
        path: None,
        message: format!("{component}: {e}"),
    }
}

impl JanusConfig {
    /// The SigLIP tower's config.
    pub fn siglip(&self) -> SiglipConfig {
        let v = &self.vision;
        SiglipConfig::new(v.image_size, v.patch_size, v.width, v.layers, v.heads)
            .with_mlp_ratio(v.mlp_ratio)
            .with_select_layer(v.select_layer)
    }

    /// The VQ model's config.
    pub fn vq(&self) -> VqConfig {
        let g = &self.gen_vision;
        VqConfig::vq_16()
            .with_codebook_size(g.codebook_size)
            .with_codebook_embed_dim(g.codebook_dim)
            .with_ch(g.ch)
            .with_ch_mult(g.ch_mult.clone())
            .with_z_channels(g.z_channels)
            .with_num_res_blocks(g.num_res_blocks)
    }
}

fn projector(p: &ProjectorParams, name: &str) -> Result<MlpProjectorConfig, JanusError> {
    MlpProjectorConfig::from_type_name(&p.projector_type, p.input_dim, p.n_embed)
        .map(|c| c.with_depth(p.depth))
        .map_err(|e| config_err(name, e))
}

impl JanusModel {
    /// Builds every component with random weights (to be overwritten by a checkpoint).
    pub fn init(config: &JanusConfig, device: &Device) -> Result<Self, JanusError> {
        let gh = &config.gen_head;
        Ok(Self {
            vision_model: config
                .siglip()
                .init(device)
                .map_err(|e| config_err("vision_config", e))?,
            aligner: projector(&config.aligner, "aligner_config")?
                .init(device)
                .map_err(|e| config_err("aligner_config", e))?,
            gen_vision_model: config
                .vq()
                .init(device)
                .map_err(|e| config_err("gen_vision_config", e))?,
            gen_aligner: projector(&config.gen_aligner, "gen_aligner_config")?
                .init(device)
                .map_err(|e| config_err("gen_aligner_config", e))?,
            gen_head: GenHeadConfig::new(gh.n_embed, gh.image_token_embed, gh.image_token_size)
                .init(device)
                .map_err(|e| config_err("gen_head_config", e))?,
            gen_embed: GenEmbedConfig::new(
                config.gen_vision.codebook_size,
                config.gen_vision.codebook_dim,
            )
            .init(device)
            .map_err(|e| config_err("gen_vision_config", e))?,
            language_model: config.language.init(device)?,
            quant_manifest: None,
        })
    }

    /// Loads a model directory as downloaded from the hub (`config.json` plus weights in any
    /// released file layout), in either naming layout: the one `config.json` is in; or a
    /// quantised directory written by [`Janus::save_quantized`](crate::Janus::save_quantized)
    /// (recognised by its `quantization.json`; `options.quant` may then be `None` or its tier).
    pub fn load(
        dir: impl AsRef<Path>,
        options: &LoadOptions,
        device: &Device,
    ) -> Result<(Self, JanusConfig, LoadReport), JanusError> {
        check_param_dtype(device, options.dtype)?;
        if let Some(scheme) = options.quant
            && device.is_autodiff()
        {
            return Err(JanusError::QuantTraining { scheme });
        }
        let dir = dir.as_ref();
        let config = JanusConfig::from_dir(dir)?;
        let weights = options.weights_dir.as_deref().unwrap_or(dir);
        if is_quantized_dir(weights) {
            let (model, report) = quantized::load(&config, weights, options, device)?;
            return Ok((model, config, report));
        }
        let layout = CheckpointLayout::discover(weights)?;
        let mut model = Self::init(&config, device)?;
        let report = load_checkpoint(
            &mut model,
            &layout,
            config.layout,
            options.dtype,
            |model: &mut JanusModel| match options.quant {
                // Each shard's layers are quantised as soon as they are read.
                Some(scheme) => model.language_model.quantize(scheme).map(|_| ()),
                None => Ok(()),
            },
        )?;
        Ok((model, config, report))
    }

    /// The manifest of the quantised directory this model was loaded from, if it was.
    pub fn quant_manifest(&self) -> Option<&QuantManifest> {
        self.quant_manifest.as_deref()
    }

    /// Refuses image generation when the model was loaded from a quantised directory whose
    /// recorded generation gate failed.
    pub(crate) fn check_generation_allowed(&self) -> Result<(), JanusError> {
        let Some(manifest) = &self.quant_manifest else {
            return Ok(());
        };
        match (manifest.generation_refusal(), manifest.quant_scheme()) {
            (Some(reason), Ok(scheme)) => {
                Err(JanusError::QuantRefusedForGeneration { scheme, reason })
            }
            _ => Ok(()),
        }
    }
}
