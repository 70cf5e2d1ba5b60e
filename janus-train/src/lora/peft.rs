//! The adapter file: PEFT's tensor layout in safetensors, with janus-lora metadata.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::Path;

use burn::module::{LoraAdapter, Module, Param, Reparameterizer};
use burn::tensor::{DType, Tensor, TensorData};
use janus_core::JanusModel;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::apply::{Layout, Scan, adaptable_linears};
use super::{ADAPTER_FORMAT, LoraConfig, LoraError};

/// Writes the model's adapters alone to a safetensors file (layout in the
/// [module docs](super#file-format)).
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
/// The result is frozen like [`apply_lora`](super::apply_lora)'s, with the file's factors as
/// trainable adapters, so it serves both unmerged inference (`.valid()`, slower: the weight is
/// recomposed per forward) and resuming training; [`merge_lora`](super::merge_lora) it for fast
/// inference. Factors are converted to their base weight's dtype.
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
