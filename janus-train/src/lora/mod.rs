//! LoRA on Janus: choose the linears to adapt by name, attach burn's built-in adapters, save the
//! adapter alone in PEFT layout, load it back onto a fresh base, and merge it for inference.
//!
//! # How it works
//!
//! [`apply_lora`] runs burn's [`Lora`](burn::module::Lora) reparameterizer over the
//! [`JanusModel`](janus_core::JanusModel), restricted to the
//! weights [`LoraConfig::is_target`] selects. Every float parameter of the model is frozen; each
//! selected `Linear` weight `W: [d_in, d_out]` gets a [`LoraAdapter`](burn::module::LoraAdapter)
//! with trainable factors
//! `a: [d_in, r]` (random) and `b: [r, d_out]` (zero), and its forward pass uses
//! `W + (alpha / r)·a@b`. No model code changes: the same `Linear::forward` sees the composed
//! weight through `Param::val`. Embeddings, `lm_head`, `gen_head`, norms, biases, the aligners
//! and the VQ model are never adapted.
//!
//! # Composing with stage freezing
//!
//! After [`apply_lora`] only the adapter factors are trainable. A stage that also trains other
//! components must unfreeze them *by group*, keeping the adapted base weights out of the group:
//!
//! ```no_run
//! # use janus_train::lora::{apply_lora, unfreeze_group_keep_bases, LoraConfig};
//! # use burn::module::ParamGroup;
//! # fn f(model: janus_core::JanusModel) -> Result<(), Box<dyn std::error::Error>> {
//! let model = apply_lora(model, &LoraConfig::default())?;
//! // Train the aligners fully next to the LLM adapters.
//! let aligners = ParamGroup::from_regex(r"^(aligner|gen_aligner)\.").unwrap();
//! let model = unfreeze_group_keep_bases(model, aligners);
//! # Ok(()) }
//! ```
//!
//! Never call `Module::unfreeze()`/`set_require_grad(true)` on an adapted model: burn documents
//! that these re-enable the frozen bases as well, which silently turns LoRA into full
//! fine-tuning. [`adapter_group`] and [`lora_base_group`] give the parameter groups for optimizer
//! groups or custom freezing; apply stage freezing (`freeze()`, `freeze_group`) *before*
//! [`apply_lora`], or it would freeze the adapters too.
//!
//! # File format
//!
//! [`save_adapter`] writes a small safetensors file with two tensors per adapted linear, named
//! after the linear's module path as PEFT names them (PEFT's `base_model.model.` prefix left out):
//!
//! | name | shape | burn factor |
//! |---|---|---|
//! | `{path}.lora_A.weight` | `[r, d_in]` | `a` transposed |
//! | `{path}.lora_B.weight` | `[d_out, r]` | `b` transposed |
//!
//! e.g. `language_model.model.layers.0.self_attn.q_proj.lora_A.weight`. The header metadata
//! holds `format = "janus-lora"`, the config as JSON (`lora_config`, authoritative) and, for
//! people and tools, `rank`, `alpha` and `target_modules`.
//!
//! # Dropout
//!
//! PEFT's LoRA dropout acts on the *input* of the low-rank branch: `y = x·W + s·drop(x)·a·b`.
//! burn's LoRA is a weight reparameterization (`W + s·a·b`, multiplied with the undropped `x`),
//! so a dropout mask on `x` (one per token and feature) cannot be folded into it. janus-llm's
//! `LlamaLinear` therefore adds the missing rank-`r` term `s·(drop(x) − x)·a·b` itself while the
//! adapter trains (`LlamaLinear::lora_dropout`, set here on every language-model linear).
//! SigLIP's linears are burn `Linear`s, which cannot: `dropout > 0` together with
//! [`LoraConfig::vision`] is rejected with [`LoraError::DropoutUnsupported`], never ignored.
//!
//! # Layout
//!
//! `config` holds [`LoraConfig`] and [`LoraTarget`], `apply` attaching, merging and the parameter
//! groups, `peft` the adapter file.

mod apply;
mod config;
mod peft;

use std::path::PathBuf;

pub use apply::{
    adapter_group, adapter_paths, apply_lora, lora_base_group, merge_lora, set_lora_dropout,
    unfreeze_group_keep_bases,
};
pub use config::{LoraConfig, LoraTarget, VISION_MODULES};
pub use peft::{load_adapter, read_adapter_config, save_adapter};

/// Value of the `format` metadata key of adapter files.
pub const ADAPTER_FORMAT: &str = "janus-lora";

/// Errors from configuring, applying, saving and loading LoRA adapters.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// The rank is zero.
    #[error("invalid LoRA rank 0: the rank must be at least 1")]
    InvalidRank,
    /// `alpha` is not a finite positive number.
    #[error("invalid LoRA alpha {0}: must be finite and > 0")]
    InvalidAlpha(f64),
    /// `dropout` is outside `[0, 1)` or NaN.
    #[error("invalid LoRA dropout {0}: must be in [0, 1)")]
    InvalidDropout(f64),
    /// `dropout > 0` was asked for together with SigLIP adapters; see the
    /// [module docs](self#dropout) for why that is unsupported.
    #[error(
        "LoRA dropout {0} is not supported on the SigLIP linears (burn's LoRA adapts the weight, \
         not the layer input); set dropout to 0 or vision to false"
    )]
    DropoutUnsupported(f64),
    /// The config selects nothing: no LLM target and no vision.
    #[error("LoRA config selects no layer: `targets` is empty and `vision` is false")]
    NoTargets,
    /// The model holds no weight the config selects.
    #[error("the model has no weight that the LoRA config selects")]
    NoMatchingWeights,
    /// The model already carries adapters; adapting twice would replace them.
    #[error("the model already carries a LoRA adapter (on {0}); merge it or start from the base")]
    AlreadyAdapted(String),
    /// Saving a model that carries no adapter.
    #[error("the model carries no LoRA adapter")]
    NoAdapters,
    /// The adapters on the model disagree with the config given to [`save_adapter`].
    #[error("the model's adapters do not match the LoRA config: {0}")]
    ConfigMismatch(String),
    /// Reading or writing the adapter file failed.
    #[error("adapter file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid safetensors.
    #[error("adapter file {path} is not valid safetensors: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The file lacks or has unusable janus-lora metadata.
    #[error("adapter file {path} has no usable janus-lora metadata: {message}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor of the file adapts no weight of this model (or is not a LoRA factor at all).
    #[error("adapter tensor `{0}` matches no weight of this base model that the config targets")]
    UnknownPath(String),
    /// The config targets a weight of this model for which the file has no tensor.
    #[error("adapter file lacks tensor `{0}`")]
    MissingTensor(String),
    /// A tensor's shape does not fit the base weight (or the rank).
    #[error("adapter tensor `{name}` has shape {found:?}, the base model needs {expected:?}")]
    ShapeMismatch {
        /// Tensor name in the file.
        name: String,
        /// Shape this base model needs.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A tensor's dtype cannot be stored or read (only f16, bf16, f32 and f64 are).
    #[error("adapter tensor `{name}` has unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// Tensor name.
        name: String,
        /// The dtype, as its library prints it.
        dtype: String,
    },
    /// The backend could not read an adapter factor back to the host.
    #[error("could not read adapter tensor `{name}`: {message}")]
    TensorRead {
        /// Tensor name.
        name: String,
        /// The backend's message.
        message: String,
    },
}
