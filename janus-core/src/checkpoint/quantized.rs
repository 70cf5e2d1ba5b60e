//! A quantised model directory: the language model's linear layers stored as GGML blocks, so
//! a model is quantised once and loaded at its quantised size.
//!
//! | file | holds |
//! | --- | --- |
//! | `quantization.json` | [`QuantManifest`]: the tier, each quantised weight's GGML format and shape, and the accuracy gates measured when the directory was written |
//! | `model.quant.safetensors` | each quantised weight as a U8 tensor `[rows, bytes per row]` of GGML blocks (byte-identical to GGUF's), keyed by module path (`language_model.model.layers.0.self_attn.q_proj.weight`) |
//! | `model.float.safetensors` | every other parameter, keyed by module path, in burn's layout |
//! | the rest | copied from the source directory (`config.json`, tokenizer and processor files) |
//!
//! Module paths rather than checkpoint keys: the files are this library's, read back into the
//! same modules, so no key remap runs either way. [`JanusModel::load`] recognises the
//! directory by its manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::{DType, Device};
use burn_store::{FloatCastAdapter, ModuleAdapter, ModuleSnapshot, ModuleStore, SafetensorsStore};
use janus_llm::{QuantKind, QuantMatrix, QuantScheme};
use serde::{Deserialize, Serialize};

use crate::checkpoint::LoadReport;
use crate::config::JanusConfig;
use crate::error::{JanusError, read_file};
use crate::model::{JanusModel, LoadOptions};
use crate::quant_gate::{Agreement, GateLimits};

/// The manifest's file name; its presence makes a directory a quantised one.
pub const MANIFEST_FILE: &str = "quantization.json";
/// The GGML blocks of the quantised weights.
pub const BLOCKS_FILE: &str = "model.quant.safetensors";
/// Every parameter that is not quantised.
pub const FLOAT_FILE: &str = "model.float.safetensors";
const FORMAT_VERSION: u32 = 1;

/// What a quantised model directory holds (`quantization.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantManifest {
    /// Version of this layout (1).
    pub format_version: u32,
    /// The tier ([`QuantScheme::name`]: `q8_0`, `q4_k`).
    pub scheme: String,
    /// dtype of the float parameters in `model.float.safetensors`.
    pub float_dtype: String,
    /// Each quantised weight by module path.
    pub tensors: BTreeMap<String, QuantTensor>,
    /// The understanding gate, when it was measured before writing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub understanding_gate: Option<GateRecord>,
    /// The generation gate (guided logits), when it was measured before writing. A failed one
    /// makes the loaded model refuse image generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_gate: Option<GateRecord>,
}

/// One quantised weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantTensor {
    /// GGML's name of the block format ([`QuantKind::name`]: `q8_0`, `q4_K`).
    pub ggml_type: String,
    /// `[rows, cols]` of the float weight (`[out, in]`).
    pub shape: [usize; 2],
}

/// A gate measured against the float model, as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateRecord {
    /// Whether `agreement` is inside `limits`.
    pub passed: bool,
    /// What was measured.
    pub agreement: Agreement,
    /// The gate's bounds.
    pub limits: GateLimits,
    /// What it was measured against and on what (free text, for people).
    pub reference: String,
}

impl GateRecord {
    /// Records `agreement` against `limits`.
    pub fn new(agreement: Agreement, limits: GateLimits, reference: impl Into<String>) -> Self {
        Self {
            passed: agreement.passes(&limits),
            agreement,
            limits,
            reference: reference.into(),
        }
    }
}

/// The gates to record in a saved directory's manifest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantGates {
    /// The understanding gate.
    pub understanding: Option<GateRecord>,
    /// The generation gate.
    pub generation: Option<GateRecord>,
}

impl QuantManifest {
    /// Reads `dir/quantization.json`.
    pub fn read(dir: &Path) -> Result<Self, JanusError> {
        let path = dir.join(MANIFEST_FILE);
        let manifest: Self = serde_json::from_str(&read_file(&path)?)
            .map_err(|e| JanusError::json(e).in_file(&path))?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(manifest_err(
                &path,
                format!(
                    "format_version {} (this library reads {FORMAT_VERSION})",
                    manifest.format_version
                ),
            ));
        }
        Ok(manifest)
    }

    /// The tier.
    pub fn quant_scheme(&self) -> Result<QuantScheme, String> {
        QuantScheme::from_name(&self.scheme)
            .ok_or_else(|| format!("unknown quantisation scheme `{}`", self.scheme))
    }

    /// Why image generation is refused, when the recorded generation gate failed.
    pub fn generation_refusal(&self) -> Option<String> {
        let gate = self.generation_gate.as_ref().filter(|g| !g.passed)?;
        Some(format!(
            "its generation gate failed when the directory was written ({}; limits: mean KL ≤ {}, top-1 ≥ {}, top-5 ≥ {}, cosine ≥ {})",
            gate.agreement,
            gate.limits.max_mean_kl,
            gate.limits.min_top1,
            gate.limits.min_top5,
            gate.limits.min_cosine
        ))
    }
}

/// Whether `dir` is a quantised model directory.
pub fn is_quantized_dir(dir: &Path) -> bool {
    dir.join(MANIFEST_FILE).is_file()
}

fn manifest_err(path: &Path, message: String) -> JanusError {
    JanusError::Checkpoint {
        path: path.to_path_buf(),
        message,
    }
}

fn write_err(path: &Path, e: impl std::fmt::Display) -> JanusError {
    JanusError::Output {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// A weight's module path as burn-store names it.
fn weight_path(linear_path: &str) -> String {
    format!("language_model.{linear_path}.weight")
}

/// The model's float parameters' dtype (that of the generation embedding table), lower case.
pub(crate) fn float_dtype_name(model: &JanusModel) -> String {
    format!("{:?}", model.gen_embed.weight.val().dtype()).to_lowercase()
}

/// Files of a model directory that are weights (not copied into a quantised directory).
fn is_weights_file(name: &str) -> bool {
    const EXTENSIONS: [&str; 6] = [".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf"];
    name == MANIFEST_FILE
        || name.ends_with(".index.json")
        || EXTENSIONS.iter().any(|e| name.ends_with(e))
}

/// A U8 tensor of GGML blocks for the safetensors writer.
struct Blocks<'a> {
    bytes: &'a [u8],
    shape: [usize; 2],
}

impl safetensors::View for Blocks<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::U8
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(self.bytes)
    }

    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes `model` (its language model quantised) as a quantised directory at `out`, with the
/// non-weight files of `source` beside it. Everything is written into a temporary directory
/// next to `out` and renamed into place at the end, so a failure leaves no partial directory.
pub(crate) fn save(
    model: &JanusModel,
    source: &Path,
    out: &Path,
    gates: &QuantGates,
) -> Result<QuantManifest, JanusError> {
    let Some(scheme) = model.language_model.quant_scheme() else {
        return Err(JanusError::InvalidOption(
            "the language model is not quantised: load it with a quantised tier first".into(),
        ));
    };
    if std::fs::symlink_metadata(out).is_ok() {
        return Err(write_err(out, "already exists; refusing to overwrite it"));
    }
    let name = out
        .file_name()
        .ok_or_else(|| write_err(out, "not a directory name"))?
        .to_string_lossy()
        .into_owned();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let result = write_dir(model, scheme, source, &tmp, gates).and_then(|manifest| {
        std::fs::rename(&tmp, out)
            .map_err(|source| JanusError::Output {
                path: out.to_path_buf(),
                source,
            })
            .map(|()| manifest)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

fn write_dir(
    model: &JanusModel,
    scheme: QuantScheme,
    source: &Path,
    dir: &Path,
    gates: &QuantGates,
) -> Result<QuantManifest, JanusError> {
    std::fs::create_dir(dir).map_err(|source| JanusError::Output {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut tensors = BTreeMap::new();
    let mut blocks = Vec::new();
    for (_, path, linear) in model.language_model.linears() {
        let Some(q) = linear.quantized() else {
            return Err(JanusError::InvalidOption(format!(
                "`{path}` is not quantised; every linear layer of a {scheme} model must be"
            )));
        };
        let key = weight_path(&path);
        tensors.insert(
            key.clone(),
            QuantTensor {
                ggml_type: q.kind().name().into(),
                shape: [q.rows(), q.cols()],
            },
        );
        let shape = [q.rows(), q.row_bytes()];
        blocks.push((
            key,
            Blocks {
                bytes: q.bytes(),
                shape,
            },
        ));
    }
    let blocks_path = dir.join(BLOCKS_FILE);
    safetensors::serialize_to_file(blocks, None, &blocks_path)
        .map_err(|e| write_err(&blocks_path, e))?;

    let float_path = dir.join(FLOAT_FILE);
    let keep: Vec<String> = model
        .collect(None, None, false)
        .into_iter()
        .map(|t| t.name)
        .filter(|p| !tensors.contains_key(p))
        .collect();
    let mut store = SafetensorsStore::from_file(&float_path).with_full_paths(keep);
    model
        .save_into(&mut store)
        .map_err(|e| write_err(&float_path, e))?;
    // burn-store writes through a private temporary file; give it the blocks file's mode.
    if let Ok(meta) = std::fs::metadata(&blocks_path) {
        let _ = std::fs::set_permissions(&float_path, meta.permissions());
    }

    let entries = std::fs::read_dir(source).map_err(|e| JanusError::Io {
        path: source.to_path_buf(),
        source: e,
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| JanusError::Io {
            path: source.to_path_buf(),
            source: e,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.path().is_file() || is_weights_file(&name) {
            continue;
        }
        std::fs::copy(entry.path(), dir.join(&name)).map_err(|e| JanusError::Output {
            path: dir.join(&name),
            source: e,
        })?;
    }

    let manifest = QuantManifest {
        format_version: FORMAT_VERSION,
        scheme: scheme.name().into(),
        float_dtype: float_dtype_name(model),
        tensors,
        understanding_gate: gates.understanding.clone(),
        generation_gate: gates.generation.clone(),
    };
    let text = serde_json::to_string_pretty(&manifest)
        .map_err(|e| write_err(&dir.join(MANIFEST_FILE), e))?;
    std::fs::write(dir.join(MANIFEST_FILE), text + "\n").map_err(|e| JanusError::Output {
        path: dir.join(MANIFEST_FILE),
        source: e,
    })?;
    Ok(manifest)
}

/// Loads a quantised directory's weights into a model built from `config`.
pub(crate) fn load(
    config: &JanusConfig,
    dir: &Path,
    options: &LoadOptions,
    device: &Device,
) -> Result<(JanusModel, LoadReport), JanusError> {
    let manifest = QuantManifest::read(dir)?;
    let manifest_path = dir.join(MANIFEST_FILE);
    let scheme = manifest
        .quant_scheme()
        .map_err(|m| manifest_err(&manifest_path, m))?;
    if let Some(want) = options.quant.filter(|w| *w != scheme) {
        return Err(janus_llm::LlmError::QuantSchemeMismatch { have: scheme, want }.into());
    }
    if device.is_autodiff() {
        return Err(JanusError::QuantTraining { scheme });
    }
    let mut model = JanusModel::init(config, device)?;

    let blocks_path = dir.join(BLOCKS_FILE);
    let read_err = |path: &Path, e: &dyn std::fmt::Display| JanusError::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut store = SafetensorsStore::from_file(&blocks_path);
    let blocks = store
        .get_all_tensors()
        .map_err(|e| read_err(&blocks_path, &e))?
        .clone();
    let mut quantized = BTreeSet::new();
    for (_, path, linear) in model.language_model.linears_mut() {
        let key = weight_path(&path);
        let entry = manifest
            .tensors
            .get(&key)
            .ok_or_else(|| manifest_err(&manifest_path, format!("no entry for `{key}`")))?;
        let kind = QuantKind::from_name(&entry.ggml_type).ok_or_else(|| {
            manifest_err(
                &manifest_path,
                format!("`{key}`: unknown block format `{}`", entry.ggml_type),
            )
        })?;
        let shape = linear.weight.lazy_shape();
        if entry.shape[..] != shape[..] {
            return Err(JanusError::ShapeMismatch {
                key,
                expected: shape.to_vec(),
                found: entry.shape.to_vec(),
                path: manifest_path,
            });
        }
        let tensor = blocks.get(&key).ok_or_else(|| JanusError::MissingTensor {
            key: key.clone(),
            expected: entry.shape.to_vec(),
        })?;
        if tensor.dtype != DType::U8 {
            return Err(read_err(
                &blocks_path,
                &format!("`{key}` is {:?}, not U8 blocks", tensor.dtype),
            ));
        }
        let bytes = tensor
            .to_bytes()
            .map_err(|e| read_err(&blocks_path, &e))?
            .to_vec();
        let [rows, cols] = entry.shape;
        let q = QuantMatrix::from_bytes(kind, rows, cols, bytes)
            .map_err(|e| read_err(&blocks_path, &format!("`{key}`: {e}")))?;
        linear.set_quantized(q);
        quantized.insert(key);
    }
    if let Some(extra) = manifest
        .tensors
        .keys()
        .chain(blocks.keys())
        .find(|k| !quantized.contains(*k))
    {
        return Err(read_err(
            &blocks_path,
            &format!("`{extra}` is not a linear layer of this model"),
        ));
    }

    let float_path = dir.join(FLOAT_FILE);
    let mut store = SafetensorsStore::from_file(&float_path);
    let floats: Vec<_> = store
        .get_all_tensors()
        .map_err(|e| read_err(&float_path, &e))?
        .values()
        .cloned()
        .collect();
    let source_dtype = floats.first().map(|t| t.dtype);
    let adapter: Box<dyn ModuleAdapter> = Box::new(FloatCastAdapter::to(options.dtype));
    let result = model.apply(floats, None, Some(adapter), true);
    if !result.errors.is_empty() {
        let message = result
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        return Err(read_err(&float_path, &message));
    }
    if let Some(unused) = result.unused.first() {
        return Err(read_err(
            &float_path,
            &format!("tensor `{unused}` matched no parameter"),
        ));
    }
    if let Some((path, _)) = result.missing.iter().find(|(p, _)| !quantized.contains(p)) {
        return Err(JanusError::MissingTensor {
            key: path.clone(),
            expected: Vec::new(),
        });
    }
    model.language_model.quantize(scheme)?;
    let report = LoadReport {
        applied: result.applied.len() + quantized.len(),
        ignored: 0,
        source_dtype,
    };
    model.quant_manifest = Some(Arc::new(manifest));
    Ok((model, report))
}
