//! Exports a trained [`JanusModel`] as a model directory in either published layout
//! ([`ModelLayout`]): the original one that deepseek-ai's PyTorch code loads, or the one
//! transformers' `JanusForConditionalGeneration` loads. janus-rs loads both. The directory
//! holds `model.safetensors` under that layout's key names, its `config.json` and processor
//! files, and the source directory's tokenizer files.
//!
//! Names go through the inverse of janus-core's remap tables ([`checkpoint_keys`]: the fused
//! SigLIP `qkv` is split into `q_proj`/`k_proj`/`v_proj` and the position embedding loses its
//! leading axis for transformers) and layouts through burn-store's [`BurnToPyTorchAdapter`]
//! (Linear weights back to `[out, in]`, norm `gamma`/`beta` back to `weight`/`bias`), the
//! exact inverse of what the loader applies. When the source directory is in the target
//! layout its config and processor files are copied; otherwise they are written from the
//! parsed ones.
//!
//! The loader skips a few original-layout tensors the forward pass never uses (the SigLIP
//! `attn_pool.*` head, the VQ `quantize.codebook_used` statistics, RoPE `inv_freq` tables).
//! The reference model still declares them, so a strict `load_state_dict` would fail
//! without them: by default they are copied through from the source checkpoint, unchanged
//! apart from the dtype cast, and the export has the source's full key set. A source in the
//! transformers layout has none (its conversion drops them), so an original-layout export
//! from it writes them as zeros: the reference builds them but never runs them.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use burn::tensor::DType;
use burn_store::burn_pack::{Bytes, Tensor as PackTensor};
use burn_store::{
    BurnToPyTorchAdapter, FloatCastAdapter, ModuleAdapter, ModuleContext, ModuleSnapshot,
};
use janus_core::checkpoint::read_tensors;
use janus_core::checkpoint::remap::{Placement, checkpoint_keys, is_ignored, placement};
use janus_core::processor::{ImageProcessorConfig, Processor, ProcessorConfig};
use janus_core::{CheckpointLayout, JanusConfig, JanusError, JanusModel, ModelLayout};

use crate::checkpoint::commit_dir;

/// Weights file of an exported directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Files copied from the source directory when present (`config.json` is required). The
/// last three are written instead when the source is in the other layout.
pub const METADATA_FILES: [&str; 6] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    CONFIG_FILE,
    PROCESSOR_FILE,
    PREPROCESSOR_FILE,
];

const CONFIG_FILE: &str = "config.json";
const PROCESSOR_FILE: &str = "processor_config.json";
const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

/// What can go wrong exporting a model.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A filesystem operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory operated on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The source directory has no `config.json`.
    #[error("{}: no config.json in the source model directory", path.display())]
    MissingConfig {
        /// The source directory.
        path: PathBuf,
    },
    /// The output would replace the source directory.
    #[error("{}: the export cannot replace its own source directory", path.display())]
    SameDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// The source checkpoint (for the tensors copied through) could not be read.
    #[error("reading the source checkpoint: {0}")]
    Source(#[from] JanusError),
    /// A tensor could not be written.
    #[error("tensor `{key}`: {message}")]
    Tensor {
        /// Checkpoint key.
        key: String,
        /// What failed.
        message: String,
    },
    /// [`ExportOptions::dtype`] is not a float dtype.
    #[error("export dtype must be a float type, got {0:?}")]
    Dtype(DType),
    /// Two tensors would be written under the same key.
    #[error("tensor `{0}` would be written twice")]
    DuplicateKey(String),
    /// The safetensors file could not be written.
    #[error("{}: {message}", path.display())]
    Write {
        /// The weights file.
        path: PathBuf,
        /// The writer's error.
        message: String,
    },
}

/// Export settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// dtype of every float tensor in `model.safetensors`.
    pub dtype: DType,
    /// Copy the tensors the loader ignores through from the source checkpoint.
    pub copy_unused: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            copy_unused: true,
        }
    }
}

/// The `[export]` section of a training config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    /// The layout of the exported model directory: `original` (default) or `hf`.
    pub layout: ModelLayout,
}

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportReport {
    /// Tensors taken from the model.
    pub model_tensors: usize,
    /// Checkpoint keys copied through from the source checkpoint.
    pub copied_tensors: Vec<String>,
    /// Metadata files copied from the source directory.
    pub files: Vec<String>,
}

/// Writes `out_dir` with [`ExportOptions::default`]: the original layout, f32 weights,
/// ignored tensors copied through.
pub fn export_model_dir(
    model: &JanusModel,
    source_dir: &Path,
    out_dir: &Path,
) -> Result<ExportReport, ExportError> {
    export_model_dir_with(model, source_dir, out_dir, &ExportOptions::default())
}

/// Writes `out_dir` in the original layout; see [`export_model_dir_as`].
pub fn export_model_dir_with(
    model: &JanusModel,
    source_dir: &Path,
    out_dir: &Path,
    options: &ExportOptions,
) -> Result<ExportReport, ExportError> {
    export_model_dir_as(model, source_dir, out_dir, ModelLayout::Original, options)
}

/// Writes `out_dir` in `layout` (replacing it if it exists) atomically: it appears complete
/// or not at all.
///
/// `source_dir` is the model directory the training started from, in either layout; its
/// `config.json` describes `model` as long as training changed no shapes. Fine-tuned LoRA
/// adapters must be merged into the weights first (`materialize`), as the export writes
/// parameters by name.
pub fn export_model_dir_as(
    model: &JanusModel,
    source_dir: &Path,
    out_dir: &Path,
    layout: ModelLayout,
    options: &ExportOptions,
) -> Result<ExportReport, ExportError> {
    if !options.dtype.is_float() {
        return Err(ExportError::Dtype(options.dtype));
    }
    if !source_dir.join("config.json").is_file() {
        return Err(ExportError::MissingConfig {
            path: source_dir.to_path_buf(),
        });
    }
    if same_dir(source_dir, out_dir) {
        return Err(ExportError::SameDirectory {
            path: out_dir.to_path_buf(),
        });
    }
    let config = JanusConfig::from_dir(source_dir)?;
    // Written instead of copied when the source is in the other layout.
    let converted = if config.layout == layout {
        Vec::new()
    } else {
        converted_metadata(&config, source_dir, layout)?
    };

    let cast = FloatCastAdapter::to(options.dtype);
    let adapter: Box<dyn ModuleAdapter> = Box::new(BurnToPyTorchAdapter.chain(cast.clone()));
    let mut tensors = BTreeMap::new();
    for tensor in model.collect(None, Some(adapter), true) {
        for tensor in to_layout(tensor, layout) {
            insert(&mut tensors, tensor)?;
        }
    }
    let mut report = ExportReport {
        model_tensors: tensors.len(),
        ..Default::default()
    };
    if options.copy_unused && config.layout == layout {
        for tensor in unused_source_tensors(source_dir)? {
            report.copied_tensors.push(tensor.name.clone());
            insert(&mut tensors, cast.adapt(tensor, ModuleContext::new(&[])))?;
        }
    } else if options.copy_unused && layout == ModelLayout::Original {
        for tensor in unused_original_zeros(&config, options.dtype) {
            report.copied_tensors.push(tensor.name.clone());
            insert(&mut tensors, tensor)?;
        }
    }

    let io = |path: &Path, source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    };
    commit_dir(
        out_dir,
        |tmp| {
            write_safetensors(&tmp.join(WEIGHTS_FILE), tensors)?;
            for name in METADATA_FILES {
                let to = tmp.join(name);
                if let Some((_, text)) = converted.iter().find(|(n, _)| *n == name) {
                    fs::write(&to, text).map_err(|e| io(&to, e))?;
                    report.files.push(name.to_string());
                    continue;
                }
                let from = source_dir.join(name);
                if from.is_file() {
                    fs::copy(&from, &to).map_err(|e| io(&from, e))?;
                    report.files.push(name.to_string());
                }
            }
            Ok(())
        },
        io,
    )?;
    Ok(report)
}

/// `config.json` and the processor files of `config`'s model in `layout`, from the source
/// directory's files in the other layout.
fn converted_metadata(
    config: &JanusConfig,
    source_dir: &Path,
    layout: ModelLayout,
) -> Result<Vec<(&'static str, String)>, ExportError> {
    let processor = Processor::from_dir(source_dir).map_err(JanusError::from)?;
    let mut out = vec![(
        CONFIG_FILE,
        config.to_json(layout, &processor.special_tokens())?,
    )];
    let path = source_dir.join(PROCESSOR_FILE);
    if path.is_file() {
        let chat = ProcessorConfig::load(&path).map_err(JanusError::from)?;
        out.push((PROCESSOR_FILE, chat.to_json(layout)));
    }
    let path = source_dir.join(PREPROCESSOR_FILE);
    if path.is_file() {
        let image = ImageProcessorConfig::load(&path).map_err(JanusError::from)?;
        out.push((PREPROCESSOR_FILE, image.to_json(layout)));
    }
    Ok(out)
}

/// One module parameter (PyTorch-spelled path and layout) as the checkpoint tensors of
/// `layout`: renamed, without the leading unit axis, or split into row blocks.
fn to_layout(mut tensor: PackTensor, layout: ModelLayout) -> Vec<PackTensor> {
    let keys = checkpoint_keys(layout, &tensor.name);
    if keys.len() > 1 {
        return split_rows(tensor, keys);
    }
    let key = keys.into_iter().next().unwrap_or_default();
    if let Some(Placement::Unsqueezed(_)) = placement(layout, &key) {
        // Same bytes, one axis fewer.
        let shape: Vec<usize> = tensor.shape.iter().skip(1).copied().collect();
        tensor.shape = shape.into();
    }
    tensor.name = key;
    vec![tensor]
}

/// Equal row blocks of `tensor` along its first axis, one per key, each read when written.
fn split_rows(tensor: PackTensor, keys: Vec<String>) -> Vec<PackTensor> {
    let count = keys.len();
    let mut shape: Vec<usize> = tensor.shape.iter().copied().collect();
    shape[0] /= count;
    let len = tensor.byte_len() / count;
    let whole = std::sync::Arc::new(tensor);
    keys.into_iter()
        .enumerate()
        .map(|(i, key)| {
            let whole = whole.clone();
            PackTensor::deferred(key, whole.dtype, shape.clone(), None, len, move || {
                // Row-major, so a block of rows is a range of bytes.
                let bytes = whole.to_bytes()?;
                Ok(Bytes::from_bytes_vec(
                    bytes[i * len..(i + 1) * len].to_vec(),
                ))
            })
        })
        .collect()
}

/// The original layout's never-run tensors for `config`'s sizes, as zeros in `dtype`.
fn unused_original_zeros(config: &JanusConfig, dtype: DType) -> Vec<PackTensor> {
    let w = config.vision.width;
    let hidden = (w as f64 * config.vision.mlp_ratio) as usize;
    let pool = "vision_model.vision_tower.attn_pool.";
    let mut shapes: Vec<(String, Vec<usize>)> = [
        ("latent", vec![1, 1, w]),
        ("q.weight", vec![w, w]),
        ("q.bias", vec![w]),
        ("kv.weight", vec![2 * w, w]),
        ("kv.bias", vec![2 * w]),
        ("proj.weight", vec![w, w]),
        ("proj.bias", vec![w]),
        ("norm.weight", vec![w]),
        ("norm.bias", vec![w]),
        ("mlp.fc1.weight", vec![hidden, w]),
        ("mlp.fc1.bias", vec![hidden]),
        ("mlp.fc2.weight", vec![w, hidden]),
        ("mlp.fc2.bias", vec![w]),
    ]
    .into_iter()
    .map(|(name, shape)| (format!("{pool}{name}"), shape))
    .collect();
    // The reference's LlamaGen quantizer keeps a fixed 65536-entry usage buffer.
    shapes.push((
        "gen_vision_model.quantize.codebook_used".into(),
        vec![65536],
    ));
    shapes
        .into_iter()
        .map(|(key, shape)| {
            let len = shape.iter().product::<usize>() * dtype.size();
            PackTensor::deferred(key, dtype, shape, None, len, move || {
                Ok(Bytes::from_bytes_vec(vec![0; len]))
            })
        })
        .collect()
}

fn insert(map: &mut BTreeMap<String, PackTensor>, tensor: PackTensor) -> Result<(), ExportError> {
    if map.contains_key(&tensor.name) {
        return Err(ExportError::DuplicateKey(tensor.name));
    }
    map.insert(tensor.name.clone(), tensor);
    Ok(())
}

/// Whether `out` names `source` (or would, once created).
fn same_dir(source: &Path, out: &Path) -> bool {
    let Ok(source) = source.canonicalize() else {
        return false;
    };
    if let Ok(out) = out.canonicalize() {
        return out == source;
    }
    match (out.parent(), out.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            parent.canonicalize().is_ok_and(|p| p.join(name) == source)
        }
        _ => false,
    }
}

/// The source checkpoint's tensors that the loader skips, read lazily. A source directory
/// without weights has none.
fn unused_source_tensors(source_dir: &Path) -> Result<Vec<PackTensor>, ExportError> {
    let layout = match CheckpointLayout::discover(source_dir) {
        Ok(layout) => layout,
        Err(JanusError::NoCheckpoint(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for file in &layout.files {
        let all = read_tensors(file, layout.format)?;
        out.extend(
            all.into_iter()
                .map(|(_, t)| t)
                .filter(|t| is_ignored(&t.name)),
        );
    }
    Ok(out)
}

/// safetensors' view of a lazily materialised tensor: data is read back one tensor at a
/// time while the file is written, so peak memory is the largest tensor, not the model.
struct LazyView(PackTensor, safetensors::Dtype);

impl safetensors::View for LazyView {
    fn dtype(&self) -> safetensors::Dtype {
        self.1
    }

    fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        // No error channel here: a failed read-back panics and is caught in
        // `write_safetensors`.
        let bytes = self
            .0
            .to_bytes()
            .unwrap_or_else(|e| panic!("tensor `{}`: {e:?}", self.0.name));
        std::borrow::Cow::Owned(bytes.to_vec())
    }

    fn data_len(&self) -> usize {
        self.0.byte_len()
    }
}

fn safetensors_dtype(dtype: DType) -> Option<safetensors::Dtype> {
    use safetensors::Dtype as S;
    Some(match dtype {
        DType::F64 => S::F64,
        DType::F32 | DType::Flex32 => S::F32,
        DType::F16 => S::F16,
        DType::BF16 => S::BF16,
        DType::I64 => S::I64,
        DType::I32 => S::I32,
        DType::I16 => S::I16,
        DType::I8 => S::I8,
        DType::U64 => S::U64,
        DType::U32 => S::U32,
        DType::U16 => S::U16,
        DType::U8 => S::U8,
        DType::Bool(_) | DType::QFloat(_) => return None,
    })
}

fn write_safetensors(
    path: &Path,
    tensors: BTreeMap<String, PackTensor>,
) -> Result<(), ExportError> {
    let mut views = Vec::with_capacity(tensors.len());
    for (key, tensor) in tensors {
        let Some(dtype) = safetensors_dtype(tensor.dtype) else {
            return Err(ExportError::Tensor {
                key,
                message: format!("dtype {:?} has no safetensors equivalent", tensor.dtype),
            });
        };
        views.push((key, LazyView(tensor, dtype)));
    }
    // transformers refuses safetensors files without `format` metadata.
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let written = catch_unwind(AssertUnwindSafe(|| {
        safetensors::serialize_to_file(views, Some(metadata), path)
    }));
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ExportError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
        Err(panic) => Err(ExportError::Write {
            path: path.to_path_buf(),
            message: panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "tensor read-back panicked".into()),
        }),
    }
}
