//! LoRA on Janus: choose the linears to adapt by name, attach burn's built-in adapters, save the
//! adapter alone in PEFT layout, load it back onto a fresh base, and merge it for inference.
//!
//! # How it works
//!
//! [`apply_lora`] runs burn's [`Lora`] reparameterizer over the [`JanusModel`], restricted to the
//! weights [`LoraConfig::is_target`] selects. Every float parameter of the model is frozen; each
//! selected `Linear` weight `W: [d_in, d_out]` gets a [`LoraAdapter`] with trainable factors
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use burn::module::{
    Lora, LoraAdapter, Module, ModuleVisitor, Param, ParamGroup, ParamId, Reparameterizer,
};
use burn::tensor::{DType, Tensor, TensorData};
use janus_core::JanusModel;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

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

/// A linear of the language model that LoRA can adapt, named as in ms-swift/PEFT configs.
///
/// Serialised lowercase (`"q"`, …, `"all"`); the PEFT module names (`"q_proj"`, …) and
/// ms-swift's `"ALL"`/`"all-linear"` are accepted as aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraTarget {
    /// `self_attn.q_proj`.
    #[serde(alias = "q_proj")]
    Q,
    /// `self_attn.k_proj`.
    #[serde(alias = "k_proj")]
    K,
    /// `self_attn.v_proj`.
    #[serde(alias = "v_proj")]
    V,
    /// `self_attn.o_proj`.
    #[serde(alias = "o_proj")]
    O,
    /// `mlp.gate_proj`.
    #[serde(alias = "gate_proj")]
    Gate,
    /// `mlp.up_proj`.
    #[serde(alias = "up_proj")]
    Up,
    /// `mlp.down_proj`.
    #[serde(alias = "down_proj")]
    Down,
    /// Every linear of the decoder layers (ms-swift `--target_modules ALL`); never `lm_head`.
    #[serde(alias = "ALL", alias = "all-linear", alias = "all_linear")]
    All,
}

impl LoraTarget {
    /// The seven decoder-layer linears, in checkpoint order.
    pub const LINEARS: [LoraTarget; 7] = [
        LoraTarget::Q,
        LoraTarget::K,
        LoraTarget::V,
        LoraTarget::O,
        LoraTarget::Gate,
        LoraTarget::Up,
        LoraTarget::Down,
    ];

    /// The PEFT module name (`"q_proj"`, …); `None` for [`LoraTarget::All`].
    pub fn module_name(self) -> Option<&'static str> {
        Some(match self {
            LoraTarget::Q => "q_proj",
            LoraTarget::K => "k_proj",
            LoraTarget::V => "v_proj",
            LoraTarget::O => "o_proj",
            LoraTarget::Gate => "gate_proj",
            LoraTarget::Up => "up_proj",
            LoraTarget::Down => "down_proj",
            LoraTarget::All => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            LoraTarget::Q => "q",
            LoraTarget::K => "k",
            LoraTarget::V => "v",
            LoraTarget::O => "o",
            LoraTarget::Gate => "gate",
            LoraTarget::Up => "up",
            LoraTarget::Down => "down",
            LoraTarget::All => "all",
        }
    }
}

impl fmt::Display for LoraTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LoraTarget {
    type Err = String;

    /// Parses the serde names and aliases (`q`, `q_proj`, `all`, `ALL`, `all-linear`, …).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
            format!("unknown LoRA target `{s}`: expected q, k, v, o, gate, up, down or all")
        })
    }
}

/// The SigLIP linears adapted when [`LoraConfig::vision`] is set.
pub const VISION_MODULES: [&str; 4] = ["qkv", "proj", "fc1", "fc2"];

/// Which linears get LoRA adapters, and their size.
///
/// Defaults follow ms-swift (`rank` 8, `alpha` 32, all LLM linears, vision tower untouched)
/// except `dropout`, which defaults to 0 (ms-swift uses 0.05).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank `r` of the factors.
    pub rank: usize,
    /// Scaling numerator: the update is `(alpha / rank)·a@b`.
    pub alpha: f64,
    /// Dropout on the input of the low-rank branch while training, in `[0, 1)`; language-model
    /// linears only (with `vision`, it must be 0).
    pub dropout: f64,
    /// LLM linears to adapt in every decoder layer.
    pub targets: Vec<LoraTarget>,
    /// Also adapt the SigLIP tower's `attn.qkv`, `attn.proj`, `mlp.fc1` and `mlp.fc2`.
    pub vision: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 32.0,
            dropout: 0.0,
            targets: vec![LoraTarget::All],
            vision: false,
        }
    }
}

impl LoraConfig {
    /// A config of the given rank and alpha adapting every LLM linear.
    pub fn new(rank: usize, alpha: f64) -> Self {
        Self {
            rank,
            alpha,
            ..Self::default()
        }
    }

    /// Replaces the LLM targets.
    pub fn with_targets(mut self, targets: impl IntoIterator<Item = LoraTarget>) -> Self {
        self.targets = targets.into_iter().collect();
        self
    }

    /// Sets whether the SigLIP linears are adapted too.
    pub fn with_vision(mut self, vision: bool) -> Self {
        self.vision = vision;
        self
    }

    /// Sets the dropout.
    pub fn with_dropout(mut self, dropout: f64) -> Self {
        self.dropout = dropout;
        self
    }

    /// The factor `alpha / rank` applied to `a@b`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Checks rank, alpha, dropout and that something is selected.
    pub fn validate(&self) -> Result<(), LoraError> {
        if self.rank == 0 {
            return Err(LoraError::InvalidRank);
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(LoraError::InvalidAlpha(self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(LoraError::InvalidDropout(self.dropout));
        }
        if self.dropout > 0.0 && self.vision {
            return Err(LoraError::DropoutUnsupported(self.dropout));
        }
        if self.targets.is_empty() && !self.vision {
            return Err(LoraError::NoTargets);
        }
        Ok(())
    }

    /// The selected LLM module names (`"q_proj"`, …), with `all` expanded.
    pub fn llm_modules(&self) -> BTreeSet<&'static str> {
        self.targets
            .iter()
            .flat_map(|&t| match t {
                LoraTarget::All => LoraTarget::LINEARS.to_vec(),
                t => vec![t],
            })
            .filter_map(LoraTarget::module_name)
            .collect()
    }

    /// Whether the parameter at `path` (e.g.
    /// `language_model.model.layers.3.self_attn.q_proj.weight`) is adapted under this config.
    ///
    /// Only the `.weight` of decoder-layer and (with `vision`) SigLIP-block linears can match.
    pub fn is_target(&self, path: &str) -> bool {
        let Some(module) = path.strip_suffix(".weight") else {
            return false;
        };
        let parts: Vec<&str> = module.split('.').collect();
        let index = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
        match parts.as_slice() {
            ["language_model", "model", "layers", i, group, name] if index(i) => {
                let attn = matches!(*name, "q_proj" | "k_proj" | "v_proj" | "o_proj");
                *group == if attn { "self_attn" } else { "mlp" }
                    && self.llm_modules().contains(name)
            }
            ["vision_model", "blocks", i, group, name] if index(i) => {
                self.vision
                    && matches!(
                        (*group, *name),
                        ("attn", "qkv" | "proj") | ("mlp", "fc1" | "fc2")
                    )
            }
            _ => false,
        }
    }

    /// PEFT-style `target_modules`: the selected module names, comma-separated.
    fn target_modules(&self) -> String {
        let mut names: Vec<&str> = self.llm_modules().into_iter().collect();
        if self.vision {
            names.extend(VISION_MODULES);
        }
        names.join(",")
    }
}

/// Attaches trainable LoRA adapters to the linears `config` selects and freezes everything else.
///
/// Every float parameter of the returned model has gradients disabled except the adapter
/// factors, which are fresh: `a ~ N(0, 1/r)`, `b = 0`, so the model's outputs are unchanged until
/// it is trained. Factors take the dtype of their base weight. Call this on the device the model
/// will train on (e.g. an autodiff device). See the [module docs](self) for combining it with
/// stage freezing.
///
/// # Errors
/// An invalid config ([`LoraConfig::validate`]), a model that already carries adapters, or one
/// with no weight the config selects.
pub fn apply_lora(model: JanusModel, config: &LoraConfig) -> Result<JanusModel, LoraError> {
    config.validate()?;
    let scan = Scan::of(&model);
    scan.ensure_unadapted()?;
    if !scan.weights.keys().any(|p| config.is_target(p)) {
        return Err(LoraError::NoMatchingWeights);
    }
    let model = model.apply_reparameterization(FreshAdapters {
        config,
        // The selection is ours; burn's group would match everything it is handed.
        lora: Lora::new(config.rank, config.alpha),
    });
    Ok(set_lora_dropout(model, config.dropout))
}

/// Sets the LoRA-branch input dropout of every language-model linear (inert on linears without
/// an adapter, on a non-autodiff device and once merged).
pub fn set_lora_dropout(mut model: JanusModel, dropout: f64) -> JanusModel {
    for layer in &mut model.language_model.model.layers {
        let attn = &mut layer.self_attn;
        let mlp = &mut layer.mlp;
        for linear in [
            &mut attn.q_proj,
            &mut attn.k_proj,
            &mut attn.v_proj,
            &mut attn.o_proj,
            &mut mlp.gate_proj,
            &mut mlp.up_proj,
            &mut mlp.down_proj,
        ] {
            linear.lora_dropout = dropout;
        }
    }
    model
}

/// Merges every adapter into its base weight (`W + (alpha/r)·a@b`) and removes the factors.
///
/// The result has the base model's structure and parameter count, so inference no longer
/// rebuilds the composed weight on every forward pass. Parameter ids and trainability are kept
/// (merged weights stay frozen). For inference merge a validation copy:
/// `merge_lora(model.valid())`. A model without adapters is returned unchanged.
pub fn merge_lora(model: JanusModel) -> JanusModel {
    model.materialize()
}

/// Module paths (`language_model.model.layers.0.self_attn.q_proj`, …) of the adapted linears,
/// sorted.
pub fn adapter_paths(model: &JanusModel) -> Vec<String> {
    Scan::of(model).adapters.into_keys().collect()
}

/// The group of every adapter factor (`a` and `b`), by parameter id.
///
/// Ids survive `valid()`/`train()`, optimizer steps and `fork`, so the group stays valid for the
/// adapted model's lifetime (not across [`merge_lora`] or [`load_adapter`]).
pub fn adapter_group(model: &JanusModel) -> ParamGroup {
    let scan = Scan::of(model);
    ParamGroup::from_ids(
        scan.adapters
            .values()
            .flat_map(|f| [f.a.as_ref(), f.b.as_ref()])
            .flatten()
            .map(|f| f.id)
            .collect(),
    )
}

/// The group of the frozen base weights that carry an adapter, by parameter id.
///
/// Exclude it from any group you unfreeze (see [`unfreeze_group_keep_bases`]).
pub fn lora_base_group(model: &JanusModel) -> ParamGroup {
    let scan = Scan::of(model);
    ParamGroup::from_ids(
        scan.adapters
            .keys()
            .filter_map(|module| scan.weights.get(&format!("{module}.weight")))
            .map(|w| w.id)
            .collect(),
    )
}

/// `model.unfreeze_group(group)` minus the adapted base weights, which stay frozen.
///
/// Use this instead of `unfreeze_group` when a stage trains other components next to LoRA:
/// e.g. `^language_model\.` then trains the LLM's norms and embeddings and the adapters, but not
/// the adapted projection weights.
pub fn unfreeze_group_keep_bases(model: JanusModel, group: ParamGroup) -> JanusModel {
    let bases = lora_base_group(&model);
    model.unfreeze_group(group.exclude(bases))
}

/// Writes the model's adapters alone to a safetensors file (layout in the
/// [module docs](self#file-format)).
///
/// `config` must be the config the adapters were built with; it is stored as metadata and
/// checked against the model (same adapted linears, rank and scale). Factors are saved in their
/// own dtype.
///
/// # Errors
/// No adapters, adapters that disagree with `config`, an unsupported dtype, or I/O.
pub fn save_adapter(
    model: &JanusModel,
    config: &LoraConfig,
    path: impl AsRef<Path>,
) -> Result<(), LoraError> {
    let path = path.as_ref();
    config.validate()?;
    let scan = Scan::of(model);
    let linears = adaptable_linears(model);
    let adapted: Vec<(&String, &LoraAdapter, Layout)> = linears
        .iter()
        .filter_map(|(p, w, layout)| w.adapter().map(|a| (p, a, *layout)))
        .collect();
    if adapted.is_empty() {
        return Err(LoraError::NoAdapters);
    }
    // Adapters the typed walk cannot see (e.g. on lm_head via burn's default group) would be
    // silently dropped from the file.
    let known: BTreeSet<&String> = linears.iter().map(|(p, _, _)| p).collect();
    if let Some(other) = scan.adapters.keys().find(|p| !known.contains(p)) {
        return Err(LoraError::ConfigMismatch(format!(
            "{other} carries an adapter but is not an adaptable linear"
        )));
    }
    let expected: BTreeSet<String> = linears
        .iter()
        .map(|(p, _, _)| p.clone())
        .filter(|p| config.is_target(&format!("{p}.weight")))
        .collect();
    let found: BTreeSet<String> = adapted.iter().map(|(p, _, _)| (*p).clone()).collect();
    if let Some(p) = expected.symmetric_difference(&found).next() {
        let why = if found.contains(p) {
            "is adapted but not targeted"
        } else {
            "is targeted but not adapted"
        };
        return Err(LoraError::ConfigMismatch(format!("{p} {why}")));
    }

    let mut tensors: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = Vec::new();
    for (module, adapter, layout) in adapted {
        let rank = adapter.a.lazy_shape()[1];
        if rank != config.rank {
            return Err(LoraError::ConfigMismatch(format!(
                "{module} has rank {rank}, the config says {}",
                config.rank
            )));
        }
        // Scales are exact quotients of the same numbers, so a tolerance is only for ulps.
        if (adapter.scale - config.scale()).abs() > 1e-12 * config.scale().abs() {
            return Err(LoraError::ConfigMismatch(format!(
                "{module} has scale {}, the config implies {}",
                adapter.scale,
                config.scale()
            )));
        }
        let (lora_a, lora_b) = match layout {
            Layout::InOut => (&adapter.a, &adapter.b),
            Layout::OutIn => (&adapter.b, &adapter.a),
        };
        for (suffix, factor) in [("lora_A", lora_a), ("lora_B", lora_b)] {
            let name = format!("{module}.{suffix}.weight");
            let data = factor
                .val()
                .try_into_data()
                .map_err(|e| LoraError::TensorRead {
                    name: name.clone(),
                    message: e.to_string(),
                })?;
            let [rows, cols] = [data.shape()[0], data.shape()[1]];
            let dtype = st_dtype(data.dtype()).ok_or_else(|| LoraError::UnsupportedDtype {
                name: name.clone(),
                dtype: format!("{:?}", data.dtype()),
            })?;
            if layout == Layout::OutIn {
                tensors.push((name, vec![rows, cols], dtype, data.as_bytes().to_vec()));
                continue;
            }
            // burn keeps [d_in, r] / [r, d_out]; PEFT's Linear weights are the transposes.
            let bytes = transpose_bytes(data.as_bytes(), rows, cols, dtype.bitsize() / 8);
            tensors.push((name, vec![cols, rows], dtype, bytes));
        }
    }

    let views = tensors
        .iter()
        .map(|(name, shape, dtype, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|v| (name.as_str(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format_err(path, e))?;
    let metadata = HashMap::from([
        ("format".to_owned(), ADAPTER_FORMAT.to_owned()),
        (
            "lora_config".to_owned(),
            serde_json::to_string(config).expect("a LoraConfig always serialises"),
        ),
        ("rank".to_owned(), config.rank.to_string()),
        ("alpha".to_owned(), config.alpha.to_string()),
        ("target_modules".to_owned(), config.target_modules()),
    ]);
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(|e| match e {
        safetensors::SafeTensorError::IoError(source) => LoraError::Io {
            path: path.to_owned(),
            source,
        },
        e => format_err(path, e),
    })
}

/// Reads the [`LoraConfig`] stored in an adapter file.
///
/// # Errors
/// I/O, a file that is not safetensors, or missing/invalid janus-lora metadata.
pub fn read_adapter_config(path: impl AsRef<Path>) -> Result<LoraConfig, LoraError> {
    let path = path.as_ref();
    let bytes = read(path)?;
    config_from_header(path, &bytes)
}

/// Attaches the adapter saved at `path` to `model`, a freshly loaded base model.
///
/// The result is frozen like [`apply_lora`]'s, with the file's factors as trainable adapters, so
/// it serves both unmerged inference (`.valid()`, slower: the weight is recomposed per forward)
/// and resuming training; [`merge_lora`] it for fast inference. Factors are converted to their
/// base weight's dtype.
///
/// # Errors
/// I/O, a malformed file or config, a model that already carries adapters, and any mismatch
/// with this base: a tensor for a weight the model lacks or the config does not target
/// ([`LoraError::UnknownPath`]), a targeted weight without tensors
/// ([`LoraError::MissingTensor`]) or wrong shapes ([`LoraError::ShapeMismatch`]). The model is
/// checked before it is changed.
pub fn load_adapter(model: JanusModel, path: impl AsRef<Path>) -> Result<JanusModel, LoraError> {
    let path = path.as_ref();
    let bytes = read(path)?;
    let config = config_from_header(path, &bytes)?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| format_err(path, e))?;

    let scan = Scan::of(&model);
    scan.ensure_unadapted()?;
    let layouts: HashMap<String, Layout> = adaptable_linears(&model)
        .into_iter()
        .map(|(p, _, l)| (p, l))
        .collect();
    let targets: BTreeMap<&str, [usize; 2]> = scan
        .weights
        .iter()
        .filter(|(p, _)| config.is_target(p))
        .map(|(p, w)| (p.strip_suffix(".weight").unwrap_or(p), w.shape))
        .collect();

    let mut factors: HashMap<String, (TensorData, TensorData)> = HashMap::new();
    let names: BTreeSet<String> = file.names().into_iter().map(str::to_owned).collect();
    for name in &names {
        let module = name
            .strip_suffix(".lora_A.weight")
            .or_else(|| name.strip_suffix(".lora_B.weight"));
        if !module.is_some_and(|m| targets.contains_key(m)) {
            return Err(LoraError::UnknownPath(name.clone()));
        }
    }
    for (module, &[d0, d1]) in &targets {
        let layout = layouts.get(*module).copied().unwrap_or(Layout::InOut);
        let read_factor = |suffix: &str, expected: [usize; 2]| {
            let name = format!("{module}.{suffix}.weight");
            if !names.contains(&name) {
                return Err(LoraError::MissingTensor(name));
            }
            let view = file.tensor(&name).map_err(|e| format_err(path, e))?;
            if view.shape() != expected {
                return Err(LoraError::ShapeMismatch {
                    name,
                    expected: expected.to_vec(),
                    found: view.shape().to_vec(),
                });
            }
            let dtype = burn_dtype(view.dtype()).ok_or_else(|| LoraError::UnsupportedDtype {
                name: name.clone(),
                dtype: format!("{:?}", view.dtype()),
            })?;
            let [rows, cols] = expected;
            if layout == Layout::OutIn {
                return Ok(TensorData::from_bytes_vec(
                    view.data().to_vec(),
                    expected,
                    dtype,
                ));
            }
            // Back to burn's orientation: PEFT [r, d_in] → a [d_in, r], [d_out, r] → b [r, d_out].
            let bytes = transpose_bytes(view.data(), rows, cols, view.dtype().bitsize() / 8);
            Ok(TensorData::from_bytes_vec(bytes, [cols, rows], dtype))
        };
        // W [d0, d1]: burn's factors are a [d0, r], b [r, d1] whatever the layout.
        let (a, b) = match layout {
            Layout::InOut => (
                read_factor("lora_A", [config.rank, d0])?,
                read_factor("lora_B", [d1, config.rank])?,
            ),
            Layout::OutIn => (
                read_factor("lora_B", [d0, config.rank])?,
                read_factor("lora_A", [config.rank, d1])?,
            ),
        };
        factors.insert(format!("{module}.weight"), (a, b));
    }

    Ok(model.apply_reparameterization(LoadedAdapters {
        factors,
        scale: config.scale(),
    }))
}

/// burn's [`Lora`] restricted to the weights a [`LoraConfig`] selects; all else is frozen.
struct FreshAdapters<'a> {
    config: &'a LoraConfig,
    lora: Lora,
}

impl Reparameterizer for FreshAdapters<'_> {
    type Reparam = LoraAdapter;

    fn reparameterize<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<D>>,
    ) -> (Param<Tensor<D>>, Option<LoraAdapter>) {
        if D == 2 && self.config.is_target(path) {
            self.lora.reparameterize(path, param)
        } else {
            (param.set_require_grad(false), None)
        }
    }
}

/// Attaches factors read from a file (keyed by weight path, already in burn orientation).
struct LoadedAdapters {
    factors: HashMap<String, (TensorData, TensorData)>,
    scale: f64,
}

impl Reparameterizer for LoadedAdapters {
    type Reparam = LoraAdapter;

    fn reparameterize<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<D>>,
    ) -> (Param<Tensor<D>>, Option<LoraAdapter>) {
        let base = param.set_require_grad(false);
        let Some((a, b)) = self.factors.remove(path) else {
            return (base, None);
        };
        let dtype = base.base().dtype();
        let device = base.lazy_device();
        // Persistent like burn's own factors: they live as long as the model.
        let factor = |data: TensorData| {
            Param::from_tensor(device.memory_persistent_allocations(data, |data| {
                Tensor::<2>::from_data(data, (&device, dtype))
            }))
        };
        let adapter = LoraAdapter {
            a: factor(a),
            b: factor(b),
            scale: self.scale,
        };
        (base, Some(adapter))
    }
}

/// How an adapted weight is stored, which decides how its factors map to PEFT's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// burn's `Linear`: `W [d_in, d_out]`, factors `a [d_in, r]`, `b [r, d_out]`; PEFT's
    /// `lora_A`/`lora_B` are their transposes.
    InOut,
    /// janus-llm's `LlamaLinear` keeps PyTorch's `W [d_out, d_in]`: factors `a [d_out, r]`,
    /// `b [r, d_in]` are PEFT's `lora_B` and `lora_A` as they are.
    OutIn,
}

/// Every linear LoRA may adapt: module path, weight and layout, in checkpoint order.
fn adaptable_linears(model: &JanusModel) -> Vec<(String, &Param<Tensor<2>>, Layout)> {
    let mut out = Vec::new();
    for (i, layer) in model.language_model.model.layers.iter().enumerate() {
        let (attn, mlp) = (&layer.self_attn, &layer.mlp);
        let prefix = format!("language_model.model.layers.{i}");
        out.extend([
            (
                format!("{prefix}.self_attn.q_proj"),
                &attn.q_proj.weight,
                Layout::OutIn,
            ),
            (
                format!("{prefix}.self_attn.k_proj"),
                &attn.k_proj.weight,
                Layout::OutIn,
            ),
            (
                format!("{prefix}.self_attn.v_proj"),
                &attn.v_proj.weight,
                Layout::OutIn,
            ),
            (
                format!("{prefix}.self_attn.o_proj"),
                &attn.o_proj.weight,
                Layout::OutIn,
            ),
            (
                format!("{prefix}.mlp.gate_proj"),
                &mlp.gate_proj.weight,
                Layout::OutIn,
            ),
            (
                format!("{prefix}.mlp.up_proj"),
                &mlp.up_proj.weight,
                Layout::OutIn,
            ),
            (
                format!("{prefix}.mlp.down_proj"),
                &mlp.down_proj.weight,
                Layout::OutIn,
            ),
        ]);
    }
    for (i, block) in model.vision_model.blocks.iter().enumerate() {
        let prefix = format!("vision_model.blocks.{i}");
        out.extend([
            (
                format!("{prefix}.attn.qkv"),
                &block.attn.qkv.weight,
                Layout::InOut,
            ),
            (
                format!("{prefix}.attn.proj"),
                &block.attn.proj.weight,
                Layout::InOut,
            ),
            (
                format!("{prefix}.mlp.fc1"),
                &block.mlp.fc1.weight,
                Layout::InOut,
            ),
            (
                format!("{prefix}.mlp.fc2"),
                &block.mlp.fc2.weight,
                Layout::InOut,
            ),
        ]);
    }
    out
}

/// A 2-D float parameter seen by [`Scan`].
struct Seen {
    id: ParamId,
    shape: [usize; 2],
}

/// The factors of one adapter, as the module visitor reports them.
#[derive(Default)]
struct Factors {
    a: Option<Seen>,
    b: Option<Seen>,
}

/// One walk over the model's parameters with their burn paths, which are the paths
/// [`Reparameterizer`]s and [`ParamGroup`]s see.
#[derive(Default)]
struct Scan {
    stack: Vec<String>,
    /// 2-D float params outside adapters, by path (`….q_proj.weight`).
    weights: BTreeMap<String, Seen>,
    /// Adapter factors by module path (`….q_proj`); burn nests them as `….weight.lora.{a,b}`.
    adapters: BTreeMap<String, Factors>,
}

impl Scan {
    fn of(model: &JanusModel) -> Self {
        let mut scan = Scan::default();
        model.visit(&mut scan);
        scan
    }

    fn ensure_unadapted(&self) -> Result<(), LoraError> {
        match self.adapters.keys().next() {
            Some(p) => Err(LoraError::AlreadyAdapted(p.clone())),
            None => Ok(()),
        }
    }
}

impl ModuleVisitor for Scan {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.push(name.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if D != 2 {
            return;
        }
        let path = self.stack.join(".");
        let dims = param.lazy_shape();
        let seen = Seen {
            id: param.id,
            shape: [dims[0], dims[1]],
        };
        let factor = |suffix: &str| path.strip_suffix(suffix).map(str::to_owned);
        if let Some(module) = factor(".weight.lora.a") {
            self.adapters.entry(module).or_default().a = Some(seen);
        } else if let Some(module) = factor(".weight.lora.b") {
            self.adapters.entry(module).or_default().b = Some(seen);
        } else {
            self.weights.insert(path, seen);
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, LoraError> {
    std::fs::read(path).map_err(|source| LoraError::Io {
        path: path.to_owned(),
        source,
    })
}

fn format_err(path: &Path, e: impl fmt::Display) -> LoraError {
    LoraError::Format {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn config_from_header(path: &Path, bytes: &[u8]) -> Result<LoraConfig, LoraError> {
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| format_err(path, e))?;
    let meta_err = |message: String| LoraError::Metadata {
        path: path.to_owned(),
        message,
    };
    let meta = header
        .metadata()
        .as_ref()
        .ok_or_else(|| meta_err("the header has no __metadata__".into()))?;
    if meta.get("format").map(String::as_str) != Some(ADAPTER_FORMAT) {
        return Err(meta_err(format!("`format` is not `{ADAPTER_FORMAT}`")));
    }
    let json = meta
        .get("lora_config")
        .ok_or_else(|| meta_err("no `lora_config` entry".into()))?;
    let config: LoraConfig =
        serde_json::from_str(json).map_err(|e| meta_err(format!("bad `lora_config`: {e}")))?;
    config.validate()?;
    Ok(config)
}

fn st_dtype(dtype: DType) -> Option<Dtype> {
    Some(match dtype {
        DType::F64 => Dtype::F64,
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        _ => return None,
    })
}

fn burn_dtype(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::F64 => DType::F64,
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        _ => return None,
    })
}

/// Transposes a row-major `[rows, cols]` matrix of `elem`-byte values.
fn transpose_bytes(bytes: &[u8], rows: usize, cols: usize, elem: usize) -> Vec<u8> {
    let mut out = vec![0u8; bytes.len()];
    for r in 0..rows {
        for c in 0..cols {
            let src = (r * cols + c) * elem;
            let dst = (c * rows + r) * elem;
            out[dst..dst + elem].copy_from_slice(&bytes[src..src + elem]);
        }
    }
    out
}
