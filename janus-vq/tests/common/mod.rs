//! Golden-fixture helpers for the parity tests.
//!
//! Fixture directories are found under `$JANUS_FIXTURES` (default: the workspace's
//! `tests/fixtures`): the root itself and every directory directly below it that holds a
//! `config.json` and the requested `goldens/` file.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use burn_store::{
    FloatCastAdapter, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore,
};
use janus_vq::{VqConfig, VqModel};
use safetensors::{Dtype, SafeTensors};

/// Checkpoint key → module path rules for `gen_vision_model.*` (applied in order).
pub const VQ_KEY_REMAP: [(&str, &str); 4] = [
    (r"^gen_vision_model\.", ""),
    (r"^(encoder|decoder)\.mid\.0\.", "$1.mid.block_1."),
    (r"^(encoder|decoder)\.mid\.1\.", "$1.mid.attn_1."),
    (r"^(encoder|decoder)\.mid\.2\.", "$1.mid.block_2."),
];

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

/// `gen_vision_config.params` → config: VQ-16 defaults, overridden by explicit (tiny) keys.
pub fn vq_config(config: &serde_json::Value) -> VqConfig {
    let params = &config["gen_vision_config"]["params"];
    let uint = |key: &str| params[key].as_u64().map(|v| v as usize);
    let mut c = VqConfig::vq_16();
    if let Some(v) = uint("image_token_size").or(uint("codebook_size")) {
        c.codebook_size = v;
    }
    if let Some(v) = uint("n_embed").or(uint("codebook_embed_dim")) {
        c.codebook_embed_dim = v;
    }
    if let Some(v) = uint("ch") {
        c.ch = v;
    }
    if let Some(v) = uint("z_channels") {
        c.z_channels = v;
    }
    if let Some(v) = uint("num_res_blocks") {
        c.num_res_blocks = v;
    }
    if let Some(list) = params["ch_mult"]
        .as_array()
        .or(params["encoder_ch_mult"].as_array())
    {
        c.ch_mult = list
            .iter()
            .map(|v| v.as_u64().expect("ch_mult entry") as usize)
            .collect();
    }
    c
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

/// Builds the VQ model of a fixture and loads its weights in `dtype`; `None` (with a note)
/// when the fixture has no safetensors weights.
pub fn load_vq(dir: &Path, dtype: DType, device: &Device) -> Option<(VqModel, VqConfig)> {
    let Some(files) = safetensors_files(dir) else {
        eprintln!("{}: no safetensors weights, skipped", dir.display());
        return None;
    };
    let config = vq_config(&read_config(dir));
    let mut model = config.init(device).expect("valid VQ config");
    let expected = count_params(&model);
    let mut applied = BTreeSet::new();
    for file in &files {
        let mut store = SafetensorsStore::from_file(file)
            .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(dtype)))
            .allow_partial(true);
        for (from, to) in VQ_KEY_REMAP {
            store = store.with_key_remapping(from, to);
        }
        let result = model.load_from(&mut store).expect("load weights");
        assert!(result.errors.is_empty(), "{file:?}: {:?}", result.errors);
        for path in result.applied {
            assert!(applied.insert(path.clone()), "{path} loaded twice");
        }
    }
    assert_eq!(
        applied.len(),
        expected,
        "not every VQ parameter was loaded: {applied:?}"
    );
    Some((model, config))
}

fn count_params<M: Module>(module: &M) -> usize {
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

    pub fn ints(&self, name: &str) -> (Vec<i64>, Vec<usize>) {
        let st = self.view();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("golden `{name}` missing"));
        assert_eq!(t.dtype(), Dtype::I64, "{name}");
        let values = t
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (values, t.shape().to_vec())
    }

    pub fn int<const D: usize>(&self, name: &str, device: &Device) -> Tensor<D, Int> {
        let (values, shape) = self.ints(name);
        Tensor::from_data(TensorData::new(values, shape), device)
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

/// Host copy of integer codes as i64.
pub fn codes_vec(codes: Tensor<2, Int>) -> Vec<i64> {
    codes
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .unwrap()
}
