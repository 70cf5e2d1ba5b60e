//! Helpers shared by the janus-rs integration tests.
//!
//! Fixtures live under [`fixtures_root`]: `$JANUS_FIXTURES`, or the workspace's `tests/fixtures`
//! when it is unset. A *model directory* is any directory below it (the root included) that
//! holds a `config.json`; its reference tensors are safetensors files in `goldens/`.
//!
//! - discovery: [`model_dirs`] (every model directory, fails when there is none),
//!   [`fixture_dirs`] (those with a given golden file), [`walk_dirs`];
//! - a model directory's files: [`read_config`], [`safetensors_files`];
//! - goldens: [`read_goldens`] (host [`Golden`]s), [`Goldens`] (burn tensors);
//! - error measures: [`rel_err`] (host slices), [`relative_error`] (tensors);
//! - weights: [`load`] (burn-store with caller-given key remapping rules);
//! - the device the parity tests run on: [`test_device`] (`JANUS_TEST_DEVICE`).

#![warn(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use burn_store::{
    FloatCastAdapter, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore,
};
use safetensors::SafeTensors;

pub use safetensors::Dtype;

/// Root of the fixtures: `JANUS_FIXTURES`, or the workspace's `tests/fixtures`.
pub fn fixtures_root() -> PathBuf {
    match std::env::var_os("JANUS_FIXTURES") {
        Some(p) => PathBuf::from(p),
        // This crate sits directly below the workspace root.
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("janus-testutil lies inside the workspace")
            .join("tests/fixtures"),
    }
}

/// The device the parity tests run on, named by `JANUS_TEST_DEVICE`: `flex` (the default, burn's
/// CPU backend), or `wgpu` / `vulkan` in a build with this crate's feature of that name, e.g.
/// `JANUS_TEST_DEVICE=wgpu cargo test --release -p janus-core --features janus-testutil/wgpu
/// --test parity`. Panics on any other name, so a typo cannot quietly test the CPU instead.
pub fn test_device() -> Device {
    let name = std::env::var("JANUS_TEST_DEVICE").unwrap_or_else(|_| "flex".into());
    match name.as_str() {
        "flex" => Device::flex(),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(Default::default()),
        #[cfg(feature = "vulkan")]
        "vulkan" => Device::vulkan(Default::default()),
        other => panic!(
            "JANUS_TEST_DEVICE={other}: this build knows flex{}{}",
            if cfg!(feature = "wgpu") { ", wgpu" } else { "" },
            if cfg!(feature = "vulkan") {
                ", vulkan"
            } else {
                ""
            },
        ),
    }
}

/// Whether `device` computes in `dtype`; says so on stderr when it does not, for the dtype
/// variants of a parity test to skip (WGSL has no bf16). Every dtype is there on flex.
pub fn device_supports(device: &Device, dtype: DType) -> bool {
    let ok = device.supports_dtype(dtype);
    if !ok {
        eprintln!("skipped: {device:?} has no {dtype:?}");
    }
    ok
}

/// Calls `f` on `dir` and on every directory below it, depth first, children in sorted order.
pub fn walk_dirs(dir: &Path, f: &mut dyn FnMut(&Path)) {
    f(dir);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        walk_dirs(&d, f);
    }
}

/// Every model directory (one holding `config.json`) under the root, sorted; empty when there
/// is none.
fn find_model_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk_dirs(root, &mut |d| {
        if d.join("config.json").is_file() {
            out.push(d.to_path_buf());
        }
    });
    out.sort();
    out
}

/// Every model directory (one holding `config.json`) under the root, sorted. Fails when there
/// is none.
pub fn model_dirs() -> Vec<PathBuf> {
    let root = fixtures_root();
    let out = find_model_dirs(&root);
    assert!(
        !out.is_empty(),
        "no model directory (with config.json) under {}",
        root.display()
    );
    out
}

/// Every model directory under the root that has `goldens/<golden>`, sorted; possibly empty
/// (callers assert what they need).
pub fn fixture_dirs(golden: &str) -> Vec<PathBuf> {
    find_model_dirs(&fixtures_root())
        .into_iter()
        .filter(|d| d.join("goldens").join(golden).is_file())
        .collect()
}

/// A model directory's `config.json`.
pub fn read_config(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("config.json")).expect("read config.json");
    serde_json::from_str(&text).expect("parse config.json")
}

/// Whether a model directory is in the transformers layout (`model_type: "janus"`). The
/// component crates' parity tests read original-layout weights directly and skip these
/// directories; janus-core's suites load both layouts through the public API.
pub fn is_hf_layout(dir: &Path) -> bool {
    read_config(dir)["model_type"].as_str() == Some("janus")
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

/// One golden tensor on the host: f32 values in `floats`; i64 ids and u8/bool masks widened to
/// i64 in `ints`.
#[derive(Debug, Clone)]
pub struct Golden {
    /// The dtype stored in the file.
    pub dtype: Dtype,
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// Float values (empty for integer tensors).
    pub floats: Vec<f32>,
    /// Integer values, widened to i64 (empty for float tensors).
    pub ints: Vec<i64>,
}

impl Golden {
    /// The values widened to f64, whichever of `floats` / `ints` holds them.
    pub fn to_f64(&self) -> Vec<f64> {
        if self.dtype == Dtype::F32 {
            self.floats.iter().map(|&v| f64::from(v)).collect()
        } else {
            self.ints.iter().map(|&v| v as f64).collect()
        }
    }

    /// A `[B, T]` 0/1 mask as one `bool` per position, row by row (the padding masks the
    /// models take).
    pub fn mask_rows(&self) -> Vec<Vec<bool>> {
        let t = self.shape.last().copied().unwrap_or(0).max(1);
        self.ints
            .chunks(t)
            .map(|r| r.iter().map(|m| *m != 0).collect())
            .collect()
    }
}

/// Every tensor of a safetensors file as key → (shape, raw little-endian bytes), for tests that
/// compare written files byte for byte.
pub fn read_safetensors_raw(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

/// Reads every tensor of a golden safetensors file (f32, i64, u8 or bool).
pub fn read_goldens(path: &Path) -> BTreeMap<String, Golden> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes)
        .unwrap_or_else(|e| panic!("{}: parse golden file: {e}", path.display()));
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let (floats, ints) = match view.dtype() {
            Dtype::F32 => (
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                vec![],
            ),
            Dtype::I64 => (
                vec![],
                data.chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            ),
            Dtype::U8 | Dtype::BOOL => (vec![], data.iter().map(|b| i64::from(*b)).collect()),
            other => panic!("{name}: unexpected golden dtype {other:?}"),
        };
        out.insert(
            name,
            Golden {
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                floats,
                ints,
            },
        );
    }
    out
}

/// A golden file of a model directory (`<dir>/goldens/<name>`), handed out as burn tensors.
pub struct Goldens {
    tensors: BTreeMap<String, Golden>,
}

impl Goldens {
    /// Reads `<dir>/goldens/<name>`; panics when it cannot (a test's setup error).
    pub fn open(dir: &Path, name: &str) -> Self {
        Self {
            tensors: read_goldens(&dir.join("goldens").join(name)),
        }
    }

    /// Whether the file holds a tensor called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The host tensor `name`; panics when the file lacks it.
    pub fn get(&self, name: &str) -> &Golden {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("golden `{name}` missing"))
    }

    /// The f32 tensor `name`.
    pub fn float<const D: usize>(&self, name: &str, device: &Device) -> Tensor<D> {
        let g = self.get(name);
        assert_eq!(g.dtype, Dtype::F32, "{name}");
        Tensor::from_data(TensorData::new(g.floats.clone(), g.shape.clone()), device)
    }

    /// The i64 tensor `name` on the host: (values, shape).
    pub fn ints(&self, name: &str) -> (Vec<i64>, Vec<usize>) {
        let g = self.get(name);
        assert_eq!(g.dtype, Dtype::I64, "{name}");
        (g.ints.clone(), g.shape.clone())
    }

    /// The i64 tensor `name`.
    pub fn int<const D: usize>(&self, name: &str, device: &Device) -> Tensor<D, Int> {
        let (values, shape) = self.ints(name);
        Tensor::from_data(TensorData::new(values, shape), device)
    }
}

/// `‖out − reference‖ / ‖reference‖`, accumulated in f64.
pub fn rel_err(out: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(out.len(), reference.len(), "length mismatch");
    let (mut num, mut den) = (0f64, 0f64);
    for (o, r) in out.iter().zip(reference) {
        num += (f64::from(*o) - f64::from(*r)).powi(2);
        den += f64::from(*r).powi(2);
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// [`rel_err`] of two tensors of the same shape (any float dtype), compared in f32 on the host.
pub fn relative_error<const D: usize>(out: Tensor<D>, reference: Tensor<D>) -> f64 {
    assert_eq!(out.dims(), reference.dims(), "shape mismatch");
    let host = |t: Tensor<D>| t.cast(DType::F32).into_data().try_to_vec::<f32>().unwrap();
    rel_err(&host(out), &host(reference))
}

/// Loads `module` from every shard with the PyTorch→burn adapter, a cast to `dtype`, and the
/// given key remapping rules (regex → replacement, applied in order); asserts that every float
/// parameter of `module` was loaded exactly once.
pub fn load<M, F, T>(module: &mut M, files: &[PathBuf], remap: &[(F, T)], dtype: DType)
where
    M: Module + ModuleSnapshot,
    F: AsRef<str>,
    T: AsRef<str>,
{
    let expected = count_float_params(module);
    let mut applied = BTreeSet::new();
    for file in files {
        let mut store = SafetensorsStore::from_file(file)
            .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(dtype)))
            .allow_partial(true);
        for (from, to) in remap {
            store = store.with_key_remapping(from.as_ref(), to.as_ref());
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

/// How many float parameter tensors `module` holds.
pub fn count_float_params<M: Module>(module: &M) -> usize {
    struct Count(usize);
    impl ModuleVisitor for Count {
        fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<D>>) {
            self.0 += 1;
        }
    }
    let mut count = Count(0);
    module.visit(&mut count);
    count.0
}
