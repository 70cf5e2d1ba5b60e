//! Applies a checkpoint's tensors to a module, strictly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::module::{ModuleVisitor, Param};
use burn::tensor::{DType, Tensor};
use burn_store::burn_pack::Tensor as PackTensor;
use burn_store::{
    FloatCastAdapter, ModuleAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter,
    PytorchStore, SafetensorsStore,
};

use super::layout::{CheckpointFormat, CheckpointLayout};
use super::remap::{to_checkpoint_key, to_module_path};
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

/// Reads every tensor of one file, lazily (data is materialised when applied).
fn read_tensors(
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

/// Loads `layout` into `module`, casting floats to `dtype`.
///
/// Strict: a checkpoint tensor that maps to no parameter, a shape mismatch, or a parameter no
/// file provides is an error naming the checkpoint key. Shards are read one at a time, so a
/// conversion needs the converted model plus one shard in memory.
pub fn load_checkpoint<M: ModuleSnapshot>(
    module: &mut M,
    layout: &CheckpointLayout,
    dtype: DType,
) -> Result<LoadReport, JanusError> {
    let expected = expected_shapes(module);
    let mut seen = BTreeSet::new();
    let mut report = LoadReport::default();
    for file in &layout.files {
        let mut batch = Vec::new();
        for (key, mut tensor) in read_tensors(file, layout.format)? {
            let Some(path) = to_module_path(&key) else {
                report.ignored += 1;
                continue;
            };
            let found: Vec<usize> = tensor.shape.iter().copied().collect();
            match expected.get(&path) {
                None => {
                    return Err(JanusError::UnexpectedTensor {
                        key,
                        found,
                        path: file.clone(),
                    });
                }
                Some(shape) if *shape != found => {
                    return Err(JanusError::ShapeMismatch {
                        key,
                        expected: shape.clone(),
                        found,
                        path: file.clone(),
                    });
                }
                Some(_) => {}
            }
            report.source_dtype.get_or_insert(tensor.dtype);
            tensor.name = path.clone();
            seen.insert(path);
            batch.push(tensor);
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
                    to_checkpoint_key(unused)
                ),
            });
        }
        report.applied += result.applied.len();
    }
    if let Some((path, shape)) = expected.iter().find(|(p, _)| !seen.contains(*p)) {
        return Err(JanusError::MissingTensor {
            key: to_checkpoint_key(path),
            expected: shape.clone(),
        });
    }
    Ok(report)
}
