//! Applies a checkpoint's tensors to a module, strictly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::module::{ModuleVisitor, Param};
use burn::tensor::{DType, Tensor};
use burn_store::burn_pack::{Bytes, Tensor as PackTensor};
use burn_store::{
    FloatCastAdapter, ModuleAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter,
    PytorchStore, SafetensorsStore,
};

use super::layout::{CheckpointFormat, CheckpointLayout};
use super::remap::{Placement, checkpoint_keys, placement};
use crate::config::ModelLayout;
use crate::error::JanusError;

/// What a load did, for reporting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Tensors applied to the model.
    pub applied: usize,
    /// Checkpoint tensors skipped because the forward pass never uses them.
    pub ignored: usize,
    /// dtype of the tensors in the files (the first seen).
    pub source_dtype: Option<DType>,
}

/// Every float parameter of a module: PyTorch-spelled path → PyTorch-layout shape.
///
/// Reads lazy shapes only, so random initialisation never runs for parameters a checkpoint
/// is about to overwrite.
pub fn expected_shapes<M: ModuleSnapshot>(module: &M) -> BTreeMap<String, Vec<usize>> {
    let mut v = ShapeVisitor::default();
    module.visit(&mut v);
    v.out
}

#[derive(Default)]
struct ShapeVisitor {
    path: Vec<String>,
    types: Vec<String>,
    out: BTreeMap<String, Vec<usize>>,
}

impl ModuleVisitor for ShapeVisitor {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.types.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.types.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let owner = self
            .types
            .iter()
            .rev()
            .find(|t| t.starts_with("Struct:") || t.starts_with("Enum:"))
            .map(String::as_str)
            .unwrap_or("");
        let mut shape = param.lazy_shape().to_vec();
        let mut path = self.path.clone();
        let last = path.last().map(String::as_str).unwrap_or("");
        match (owner, last) {
            ("Struct:Linear", "weight") if D == 2 => shape.reverse(),
            ("Struct:LayerNorm" | "Struct:GroupNorm", "gamma") => {
                *path.last_mut().unwrap() = "weight".into()
            }
            ("Struct:LayerNorm" | "Struct:GroupNorm", "beta") => {
                *path.last_mut().unwrap() = "bias".into()
            }
            _ => {}
        }
        self.out.insert(path.join("."), shape);
    }
}

/// Reads every tensor of one checkpoint file with its checkpoint key, lazily (data is
/// materialised when read); a PyTorch pickle is checked for unsafe calls first
/// ([`JanusError::UnsafePickle`]).
pub fn read_tensors(
    path: &Path,
    format: CheckpointFormat,
) -> Result<Vec<(String, PackTensor)>, JanusError> {
    let err = |message: String| JanusError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let tensors = match format {
        CheckpointFormat::Safetensors => {
            let mut store = SafetensorsStore::from_file(path);
            store
                .get_all_tensors()
                .map_err(|e| err(e.to_string()))?
                .clone()
        }
        CheckpointFormat::Pytorch => {
            // burn-store drops calls it does not know: refuse them first, by key.
            super::pickle_guard::check_file(path)?;
            // Shards start at arbitrary layer numbers: never renumber indices.
            let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
            store
                .get_all_tensors()
                .map_err(|e| err(e.to_string()))?
                .clone()
        }
    };
    Ok(tensors.into_iter().collect())
}

/// Loads `layout` into `module`, casting floats to `dtype`; tensor names are read in
/// `naming` (the layout `config.json` is in).
///
/// Strict: a checkpoint tensor that maps to no parameter, a shape mismatch, or a parameter no
/// file provides is an error naming the checkpoint key; so is a tensor named in the other
/// layout (a half-converted directory). Shards are read one at a time, so a conversion needs
/// the converted model plus one shard in memory; the parts of a fused parameter are joined
/// when its last part has been read. `after_file` runs on the module after each file has been
/// applied (the model loader quantises what that shard brought).
pub fn load_checkpoint<M: ModuleSnapshot, E: Into<JanusError>>(
    module: &mut M,
    layout: &CheckpointLayout,
    naming: ModelLayout,
    dtype: DType,
    mut after_file: impl FnMut(&mut M) -> Result<(), E>,
) -> Result<LoadReport, JanusError> {
    let expected = expected_shapes(module);
    let mut seen = BTreeSet::new();
    let mut report = LoadReport::default();
    // Fused parameters still missing parts: module path → parts by index.
    let mut pending: BTreeMap<String, Vec<Option<PackTensor>>> = BTreeMap::new();
    for file in &layout.files {
        let mut batch = Vec::new();
        for (key, mut tensor) in read_tensors(file, layout.format)? {
            if let Some(other) = ModelLayout::of_key(&key).filter(|l| *l != naming) {
                return Err(JanusError::LayoutMismatch {
                    config: naming,
                    weights: other,
                    key,
                    path: file.clone(),
                });
            }
            let Some(place) = placement(naming, &key) else {
                report.ignored += 1;
                continue;
            };
            let found: Vec<usize> = tensor.shape.iter().copied().collect();
            let Some(shape) = expected.get(place.path()) else {
                return Err(JanusError::UnexpectedTensor {
                    key,
                    found,
                    path: file.clone(),
                });
            };
            // The shape this tensor must have in the file.
            let stored: Vec<usize> = match &place {
                Placement::Whole(_) => shape.clone(),
                Placement::Unsqueezed(_) => match shape.split_first() {
                    Some((1, rest)) => rest.to_vec(),
                    _ => shape.clone(),
                },
                Placement::Part { count, .. } => {
                    let mut part = shape.clone();
                    if let Some(rows) = part.first_mut() {
                        *rows /= count;
                    }
                    part
                }
            };
            if stored != found {
                return Err(JanusError::ShapeMismatch {
                    key,
                    expected: stored,
                    found,
                    path: file.clone(),
                });
            }
            report.source_dtype.get_or_insert(tensor.dtype);
            match place {
                Placement::Whole(path) => {
                    tensor.name = path.clone();
                    seen.insert(path);
                    batch.push(tensor);
                }
                Placement::Unsqueezed(path) => {
                    // Same bytes, one more axis.
                    tensor.name = path.clone();
                    tensor.shape = shape.clone().into();
                    seen.insert(path);
                    batch.push(tensor);
                }
                Placement::Part { path, index, count } => {
                    let parts = pending
                        .entry(path.clone())
                        .or_insert_with(|| vec![None; count]);
                    if parts[index].replace(tensor).is_some() {
                        return Err(JanusError::Checkpoint {
                            path: file.clone(),
                            message: format!("tensor `{key}` appears twice"),
                        });
                    }
                    if parts.iter().all(Option::is_some) {
                        let parts = pending.remove(&path).unwrap_or_default();
                        let parts: Vec<PackTensor> = parts.into_iter().flatten().collect();
                        batch.push(concat_rows(path.clone(), shape, parts).map_err(|message| {
                            JanusError::Checkpoint {
                                path: file.clone(),
                                message,
                            }
                        })?);
                        seen.insert(path);
                    }
                }
            }
        }
        let adapter: Box<dyn ModuleAdapter> =
            Box::new(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(dtype)));
        let result = module.apply(batch, None, Some(adapter), true);
        if !result.errors.is_empty() {
            let message = result
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            return Err(JanusError::Checkpoint {
                path: file.clone(),
                message,
            });
        }
        if let Some(unused) = result.unused.first() {
            // The shape table and the applier disagree on a name: a bug in the remap table.
            return Err(JanusError::Checkpoint {
                path: file.clone(),
                message: format!(
                    "tensor `{}` matched no parameter",
                    checkpoint_keys(naming, unused).join("`, `")
                ),
            });
        }
        report.applied += result.applied.len();
        after_file(module).map_err(Into::into)?;
    }
    if let Some((path, parts)) = pending.iter().next() {
        let keys = checkpoint_keys(naming, path);
        let index = parts.iter().position(Option::is_none).unwrap_or(0);
        let mut shape = expected.get(path).cloned().unwrap_or_default();
        if let Some(rows) = shape.first_mut() {
            *rows /= parts.len().max(1);
        }
        return Err(JanusError::MissingTensor {
            key: keys.get(index).cloned().unwrap_or_else(|| path.clone()),
            expected: shape,
        });
    }
    if let Some((path, shape)) = expected.iter().find(|(p, _)| !seen.contains(*p)) {
        let keys = checkpoint_keys(naming, path);
        let mut shape = shape.clone();
        if keys.len() > 1
            && let Some(rows) = shape.first_mut()
        {
            *rows /= keys.len();
        }
        return Err(JanusError::MissingTensor {
            key: keys.into_iter().next().unwrap_or_else(|| path.clone()),
            expected: shape,
        });
    }
    Ok(report)
}

/// A parameter assembled from row blocks stored as separate tensors (all of one dtype), read
/// when the parameter is applied.
fn concat_rows(
    name: String,
    shape: &[usize],
    parts: Vec<PackTensor>,
) -> Result<PackTensor, String> {
    let dtype = parts[0].dtype;
    if let Some(odd) = parts.iter().find(|p| p.dtype != dtype) {
        return Err(format!(
            "`{}` is {:?} but the other parts of `{name}` are {dtype:?}",
            odd.name, odd.dtype
        ));
    }
    let len = parts.iter().map(PackTensor::byte_len).sum();
    // Row-major, so joining along the first axis is joining the bytes.
    Ok(PackTensor::deferred(
        name,
        dtype,
        shape.to_vec(),
        None,
        len,
        move || {
            let mut bytes = Vec::with_capacity(len);
            for part in &parts {
                bytes.extend_from_slice(&part.to_bytes()?);
            }
            Ok(Bytes::from_bytes_vec(bytes))
        },
    ))
}
