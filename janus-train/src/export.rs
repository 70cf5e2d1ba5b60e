//! Exports a trained [`JanusModel`] as a model directory the original PyTorch code (and
//! janus-rs) loads: `model.safetensors` under the released checkpoint's key names and
//! layouts, plus the source directory's config, tokenizer and processor files.
//!
//! Names go through the inverse of janus-core's remap table
//! ([`to_checkpoint_key`]) and layouts through burn-store's [`BurnToPyTorchAdapter`] (Linear
//! weights back to `[out, in]`, norm `gamma`/`beta` back to `weight`/`bias`), the exact
//! inverse of what the loader applies.
//!
//! The loader skips a few checkpoint tensors the forward pass never uses (the SigLIP
//! `attn_pool.*` head, the VQ `quantize.codebook_used` statistics, RoPE `inv_freq` tables).
//! The reference model still declares them, so a strict `load_state_dict` would fail
//! without them: by default they are copied through from the source checkpoint, unchanged
//! apart from the dtype cast, and the export has the source's full key set.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use burn::tensor::DType;
use burn_store::burn_pack::Tensor as PackTensor;
use burn_store::{
    BurnToPyTorchAdapter, FloatCastAdapter, ModuleAdapter, ModuleContext, ModuleSnapshot,
    ModuleStore, PytorchStore, SafetensorsStore,
};
use janus_core::checkpoint::remap::{is_ignored, to_checkpoint_key};
use janus_core::{CheckpointFormat, CheckpointLayout, JanusError, JanusModel};

use crate::checkpoint::commit_dir;

/// Weights file of an exported directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Files copied from the source directory when present (`config.json` is required).
pub const METADATA_FILES: [&str; 6] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "processor_config.json",
    "preprocessor_config.json",
];

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

/// Writes `out_dir` with [`ExportOptions::default`]: f32 weights, ignored tensors copied
/// through.
pub fn export_model_dir(
    model: &JanusModel,
    source_dir: &Path,
    out_dir: &Path,
) -> Result<ExportReport, ExportError> {
    export_model_dir_with(model, source_dir, out_dir, &ExportOptions::default())
}

/// Writes `out_dir` (replacing it if it exists) atomically: it appears complete or not at
/// all.
///
/// `source_dir` is the model directory the training started from; its `config.json`
/// describes `model` as long as training changed no shapes. Fine-tuned LoRA adapters must be
/// merged into the weights first (`materialize`), as the export writes parameters by name.
pub fn export_model_dir_with(
    model: &JanusModel,
    source_dir: &Path,
    out_dir: &Path,
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

    let cast = FloatCastAdapter::to(options.dtype);
    let adapter: Box<dyn ModuleAdapter> = Box::new(BurnToPyTorchAdapter.chain(cast.clone()));
    let mut tensors = BTreeMap::new();
    for mut tensor in model.collect(None, Some(adapter), true) {
        tensor.name = to_checkpoint_key(&tensor.name);
        insert(&mut tensors, tensor)?;
    }
    let mut report = ExportReport {
        model_tensors: tensors.len(),
        ..Default::default()
    };
    if options.copy_unused {
        for tensor in unused_source_tensors(source_dir)? {
            report.copied_tensors.push(tensor.name.clone());
            insert(&mut tensors, cast.adapt(tensor, ModuleContext::new(&[])))?;
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
                let from = source_dir.join(name);
                if from.is_file() {
                    fs::copy(&from, tmp.join(name)).map_err(|e| io(&from, e))?;
                    report.files.push(name.to_string());
                }
            }
            Ok(())
        },
        io,
    )?;
    Ok(report)
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
        let err = |e: String| JanusError::Checkpoint {
            path: file.clone(),
            message: e,
        };
        let all = match layout.format {
            CheckpointFormat::Safetensors => SafetensorsStore::from_file(file)
                .get_all_tensors()
                .map_err(|e| err(e.to_string()))?
                .clone(),
            CheckpointFormat::Pytorch => PytorchStore::from_file(file)
                .map_indices_contiguous(false)
                .get_all_tensors()
                .map_err(|e| err(e.to_string()))?
                .clone(),
        };
        out.extend(all.into_values().filter(|t| is_ignored(&t.name)));
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
