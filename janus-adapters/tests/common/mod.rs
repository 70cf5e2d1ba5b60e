//! Golden-fixture helpers shared by the parity tests.
//!
//! Fixture directories are found under `$JANUS_FIXTURES` (default: the workspace's
//! `tests/fixtures`): every directory holding a `config.json` and a `goldens/` folder.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use burn_store::{
    FloatCastAdapter, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore,
};
use safetensors::{Dtype, SafeTensors};

/// Every model directory under the fixture root that has `goldens/<golden>`.
pub fn fixture_dirs(golden: &str) -> Vec<PathBuf> {
    let root = std::env::var_os("JANUS_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures"))
        });
    let mut candidates = vec![root.clone()];
    if let Ok(entries) = std::fs::read_dir(&root) {
        candidates.extend(entries.flatten().map(|e| e.path()));
    }
    let mut dirs: Vec<PathBuf> = candidates
        .into_iter()
        .filter(|d| d.join("config.json").is_file() && d.join("goldens").join(golden).is_file())
        .collect();
    dirs.sort();
    dirs
}

pub fn read_config(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("config.json")).expect("read config.json");
    serde_json::from_str(&text).expect("parse config.json")
}

/// The safetensors files holding the weights (single file or an index of shards).
/// `None` when the directory ships only PyTorch pickles.
pub fn safetensors_files(dir: &Path) -> Option<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Some(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(index).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).expect("parse index");
    let shards: BTreeSet<&str> = json["weight_map"]
        .as_object()
        .expect("weight_map")
        .values()
        .filter_map(|v| v.as_str())
        .collect();
    Some(shards.into_iter().map(|s| dir.join(s)).collect())
}

/// Loads `module` from every shard with the PyTorch→burn adapter, a cast to `dtype`, and the
/// given key remapping rules; asserts every parameter of `module` was found exactly once.
pub fn load<M: Module + ModuleSnapshot>(
    module: &mut M,
    files: &[PathBuf],
    remap: &[(String, String)],
    dtype: DType,
) {
    let expected = module.num_params_tensors();
    let mut applied = BTreeSet::new();
    for file in files {
        let mut store = SafetensorsStore::from_file(file)
            .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(dtype)))
            .allow_partial(true);
        for (from, to) in remap {
            store = store.with_key_remapping(from, to.clone());
        }
        let result = module.load_from(&mut store).expect("load weights");
        assert!(result.errors.is_empty(), "{file:?}: {:?}", result.errors);
        for path in result.applied {
            assert!(applied.insert(path.clone()), "{path} loaded twice");
        }
    }
    assert_eq!(
        applied.len(),
        expected,
        "not every parameter was loaded: {applied:?}"
    );
}

trait NumParamTensors {
    fn num_params_tensors(&self) -> usize;
}

impl<M: Module> NumParamTensors for M {
    fn num_params_tensors(&self) -> usize {
        struct Count(usize);
        impl burn::module::ModuleVisitor for Count {
            fn visit_float<const D: usize>(&mut self, _param: &burn::module::Param<Tensor<D>>) {
                self.0 += 1;
            }
        }
        let mut count = Count(0);
        self.visit(&mut count);
        count.0
    }
}

pub struct Goldens {
    bytes: Vec<u8>,
}

impl Goldens {
    pub fn open(dir: &Path, name: &str) -> Self {
        let bytes = std::fs::read(dir.join("goldens").join(name)).expect("read golden file");
        Self { bytes }
    }

    fn view(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("parse golden file")
    }

    pub fn has(&self, name: &str) -> bool {
        self.view().tensor(name).is_ok()
    }

    pub fn float<const D: usize>(&self, name: &str, device: &Device) -> Tensor<D> {
        let st = self.view();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("golden `{name}` missing"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        let values: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Tensor::from_data(TensorData::new(values, t.shape().to_vec()), device)
    }

    pub fn int<const D: usize>(&self, name: &str, device: &Device) -> Tensor<D, Int> {
        let st = self.view();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("golden `{name}` missing"));
        assert_eq!(t.dtype(), Dtype::I64, "{name}");
        let values: Vec<i64> = t
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        Tensor::from_data(TensorData::new(values, t.shape().to_vec()), device)
    }
}

/// `‖out − reference‖ / ‖reference‖`, accumulated in f64 on the host.
pub fn relative_error<const D: usize>(out: Tensor<D>, reference: Tensor<D>) -> f64 {
    assert_eq!(out.dims(), reference.dims(), "shape mismatch");
    let out = out
        .cast(DType::F32)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let reference = reference.into_data().try_to_vec::<f32>().unwrap();
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (o, r) in out.iter().zip(&reference) {
        diff += (f64::from(*o) - f64::from(*r)).powi(2);
        norm += f64::from(*r).powi(2);
    }
    diff.sqrt() / norm.sqrt()
}
