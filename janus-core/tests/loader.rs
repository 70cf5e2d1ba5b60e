//! Checkpoint loading: every released layout (single and sharded, safetensors and PyTorch
//! pickle), dtype handling, and the errors a bad model directory produces.
//!
//! Everything is built from the tiny fixture (`tests/fixtures/tiny-janus`) in temporary
//! directories at test time; sharded and hostile checkpoints are written here, not committed.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use common::torch_pickle::{
    Bf16Tensor, HostileEntry, call_pickle, legacy_call_file, write_state_dict,
    write_state_dict_with_call, write_torch_zip,
};
use janus_core::checkpoint::remap::is_ignored;
use janus_core::{
    CheckpointFormat, CheckpointLayout, JanusError, JanusModel, LoadOptions, LoadReport,
};
use janus_testutil::{read_goldens, rel_err};
use safetensors::{Dtype, SafeTensors};
use tempfile::TempDir;

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

/// The tiny fixture. Loader tests are about file layouts, so they use this one directory
/// rather than every fixture under `JANUS_FIXTURES`.
fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-janus")
}

/// One f32 tensor of the tiny checkpoint: key, shape, little-endian bytes.
#[derive(Clone)]
struct RawTensor {
    key: String,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl RawTensor {
    fn values(&self) -> Vec<f32> {
        self.bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn to_bf16(&self) -> Bf16Tensor {
        Bf16Tensor::from_f32(&self.key, &self.shape, &self.values())
    }
}

/// Every tensor of the tiny `model.safetensors`, sorted by key.
fn tiny_tensors() -> Vec<RawTensor> {
    let bytes = std::fs::read(tiny().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<RawTensor> = st
        .tensors()
        .into_iter()
        .map(|(key, view)| {
            assert_eq!(view.dtype(), Dtype::F32, "{key}");
            RawTensor {
                key,
                shape: view.shape().to_vec(),
                bytes: view.data().to_vec(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

fn write_safetensors(path: &Path, tensors: &[RawTensor]) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|t| {
            let view = safetensors::tensor::TensorView::new(Dtype::F32, t.shape.clone(), &t.bytes)
                .unwrap();
            (t.key.clone(), view)
        })
        .collect();
    let metadata = [("format".to_string(), "pt".to_string())].into();
    std::fs::write(path, safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();
}

/// A temporary model directory holding the fixture's JSON files (config, tokenizer,
/// processor) and no weights.
fn model_dir_without_weights() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(tiny()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && path.extension().is_some_and(|e| e == "json") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

/// The split used for sharding: shard 2 holds the last decoder layer and everything after
/// it, so it starts at layer 1, not 0.
fn in_second_shard(key: &str) -> bool {
    key.starts_with("language_model.model.layers.1.")
        || key.starts_with("language_model.model.norm.")
        || key.starts_with("language_model.lm_head.")
}

/// Writes the shard index `name` (`{"metadata":{"total_size":N},"weight_map":{...}}`).
fn write_index(dir: &Path, name: &str, weight_map: &BTreeMap<String, String>, total_size: usize) {
    let index = serde_json::json!({
        "metadata": { "total_size": total_size },
        "weight_map": weight_map,
    });
    std::fs::write(
        dir.join(name),
        serde_json::to_string_pretty(&index).unwrap(),
    )
    .unwrap();
}

/// Splits `tensors` in two with [`in_second_shard`]; returns the two halves and the weight
/// map that sends each key to `shard_names[0]` or `shard_names[1]`.
fn split(
    tensors: Vec<RawTensor>,
    shard_names: [&str; 2],
) -> ([Vec<RawTensor>; 2], BTreeMap<String, String>) {
    let (second, first): (Vec<_>, Vec<_>) =
        tensors.into_iter().partition(|t| in_second_shard(&t.key));
    assert!(!first.is_empty() && !second.is_empty());
    let mut map = BTreeMap::new();
    for (shard, name) in [&first, &second].into_iter().zip(shard_names) {
        for t in shard {
            map.insert(t.key.clone(), name.to_string());
        }
    }
    ([first, second], map)
}

fn load(dir: &Path, options: &LoadOptions) -> Result<(JanusModel, LoadReport), JanusError> {
    JanusModel::load(dir, options, &Device::flex()).map(|(model, _, report)| (model, report))
}

/// Loads the tiny model's config with the weights in `weights`.
fn load_weights(weights: &Path) -> Result<(JanusModel, LoadReport), JanusError> {
    load(
        &tiny(),
        &LoadOptions {
            weights_dir: Some(weights.to_path_buf()),
            ..Default::default()
        },
    )
}

/// Language-model logits on `goldens/llm.safetensors` (all positions, f32), and the golden
/// logits' relative error over the non-padded positions.
fn llm_logits(model: &JanusModel) -> (Vec<f32>, f64) {
    let device = Device::flex();
    let g = read_goldens(&tiny().join("goldens/llm.safetensors"));
    let (ids, mask, reference) = (&g["input_ids"], &g["attention_mask"], &g["logits"]);
    let (b, t, v) = (ids.shape[0], ids.shape[1], reference.shape[2]);
    let rows = mask.mask_rows();
    let ids: Tensor<2, Int> = Tensor::from_data(TensorData::new(ids.ints.clone(), [b, t]), &device);
    let out = model
        .language_model
        .forward(ids, Some(&rows), None)
        .unwrap()
        .cast(DType::F32)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for i in 0..b * t {
        if rows[i / t][i % t] {
            got.extend_from_slice(&out[i * v..(i + 1) * v]);
            want.extend_from_slice(&reference.floats[i * v..(i + 1) * v]);
        }
    }
    let err = rel_err(&got, &want);
    (out, err)
}

/// Float values of a parameter, for comparing two loads.
fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.cast(DType::F32).into_data().try_to_vec::<f32>().unwrap()
}

fn message(e: &JanusError) -> String {
    e.to_string()
}

// ------------------------------------------------------------------------------------------
// Layouts
// ------------------------------------------------------------------------------------------

/// Sharded safetensors (`model.safetensors.index.json` + 2 shards, the second starting at
/// decoder layer 1) load to the same model as the single file.
#[test]
fn sharded_safetensors_match_single_file() {
    let dir = model_dir_without_weights();
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let tensors = tiny_tensors();
    let total: usize = tensors.iter().map(|t| t.bytes.len()).sum();
    let (shards, map) = split(tensors, names);
    for (shard, name) in shards.iter().zip(names) {
        write_safetensors(&dir.path().join(name), shard);
    }
    write_index(dir.path(), "model.safetensors.index.json", &map, total);

    let layout = CheckpointLayout::discover(dir.path()).unwrap();
    assert_eq!(layout.files.len(), 2, "{layout:?}");
    assert!(layout.index.is_some());

    let (single, single_report) = load(&tiny(), &LoadOptions::default()).unwrap();
    let (sharded, sharded_report) = load(dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(sharded_report, single_report);

    let (expected, _) = llm_logits(&single);
    let (got, err) = llm_logits(&sharded);
    assert_eq!(
        got, expected,
        "sharded logits differ from the single-file load"
    );
    assert!(
        err <= 1e-4,
        "sharded safetensors: logits rel err {err:.3e} > 1e-4"
    );
}

/// The test's PyTorch writer is faithful: a single `pytorch_model.bin` written from the f32
/// weights loads exactly like the shipped `torch-bf16/pytorch_model.bin`.
#[test]
fn written_pytorch_checkpoint_matches_shipped_one() {
    let dir = tempfile::tempdir().unwrap();
    let tensors: Vec<Bf16Tensor> = tiny_tensors().iter().map(RawTensor::to_bf16).collect();
    write_state_dict(&dir.path().join("pytorch_model.bin"), &tensors);

    let (shipped, shipped_report) = load_weights(&tiny().join("torch-bf16")).unwrap();
    let (written, written_report) = load_weights(dir.path()).unwrap();
    assert_eq!(written_report, shipped_report);
    assert_eq!(written_report.source_dtype, Some(DType::BF16));
    assert_eq!(
        values(written.language_model.lm_head.weight.val()),
        values(shipped.language_model.lm_head.weight.val())
    );
    assert_eq!(
        values(written.aligner.layers[1].weight.val()),
        values(shipped.aligner.layers[1].weight.val())
    );
    let (expected, _) = llm_logits(&shipped);
    let (got, err) = llm_logits(&written);
    assert_eq!(
        got, expected,
        "written pickle loads differently from the shipped one"
    );
    assert!(
        err <= 1e-4,
        "written pickle: logits rel err {err:.3e} > 1e-4"
    );
}

/// Sharded PyTorch pickles (`pytorch_model.bin.index.json` + 2 shards, as Janus-Pro-7B
/// ships) load like the single file. Shard 2 starts at decoder layer 1: if the reader
/// renumbered its indices from 0 (burn-store's `map_indices_contiguous` default), layer 1
/// would land on layer 0 and the load would fail or the logits would differ.
#[test]
fn sharded_pytorch_matches_single_file() {
    let single = tempfile::tempdir().unwrap();
    let tensors = tiny_tensors();
    let bf16: Vec<Bf16Tensor> = tensors.iter().map(RawTensor::to_bf16).collect();
    write_state_dict(&single.path().join("pytorch_model.bin"), &bf16);

    let sharded = tempfile::tempdir().unwrap();
    let names = [
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
    ];
    let total: usize = tensors.iter().map(|t| t.bytes.len() / 2).sum();
    let (shards, map) = split(tensors, names);
    assert!(shards[1].iter().all(|t| !t.key.contains(".layers.0.")));
    for (shard, name) in shards.iter().zip(names) {
        let bf16: Vec<Bf16Tensor> = shard.iter().map(RawTensor::to_bf16).collect();
        write_state_dict(&sharded.path().join(name), &bf16);
    }
    write_index(sharded.path(), "pytorch_model.bin.index.json", &map, total);
    assert_eq!(
        CheckpointLayout::discover(sharded.path())
            .unwrap()
            .files
            .len(),
        2
    );

    let (one, one_report) = load_weights(single.path()).unwrap();
    let (two, two_report) = load_weights(sharded.path()).unwrap();
    assert_eq!(two_report, one_report);
    let layer = |m: &JanusModel, i: usize| {
        values(
            m.language_model.model.layers[i]
                .self_attn
                .q_proj
                .weight
                .val(),
        )
    };
    assert_eq!(layer(&two, 0), layer(&one, 0));
    assert_eq!(layer(&two, 1), layer(&one, 1));
    assert_ne!(layer(&two, 0), layer(&two, 1));
    let (expected, _) = llm_logits(&one);
    let (got, err) = llm_logits(&two);
    assert_eq!(
        got, expected,
        "sharded pickle logits differ from the single-file load"
    );
    assert!(
        err <= 1e-4,
        "sharded pickle: logits rel err {err:.3e} > 1e-4"
    );
}

/// Keys the forward pass never uses (`attn_pool.*`, `quantize.codebook_used`) are counted
/// as ignored, every other key is applied, and the load succeeds.
#[test]
fn unused_checkpoint_keys_are_ignored() {
    let tensors = tiny_tensors();
    let ignored = tensors.iter().filter(|t| is_ignored(&t.key)).count();
    assert!(tensors.iter().any(|t| t.key.contains(".attn_pool.")));
    assert!(
        tensors
            .iter()
            .any(|t| t.key == "gen_vision_model.quantize.codebook_used")
    );
    let (_, report) = load(&tiny(), &LoadOptions::default()).unwrap();
    assert!(report.ignored > 0);
    assert_eq!(report.ignored, ignored);
    assert_eq!(report.applied + report.ignored, tensors.len());
    assert_eq!(report.source_dtype, Some(DType::F32));
}

// ------------------------------------------------------------------------------------------
// dtype
// ------------------------------------------------------------------------------------------

/// A bf16 checkpoint is widened to f32 by default, and kept in bf16 when asked for.
#[test]
fn bf16_checkpoint_loads_in_requested_dtype() {
    let weights = tiny().join("torch-bf16");
    for (dtype, options) in [
        (
            DType::F32,
            LoadOptions {
                weights_dir: Some(weights.clone()),
                ..Default::default()
            },
        ),
        (
            DType::BF16,
            LoadOptions {
                weights_dir: Some(weights.clone()),
                dtype: DType::BF16,
                ..Default::default()
            },
        ),
    ] {
        let (model, report) = load(&tiny(), &options).unwrap();
        assert_eq!(report.source_dtype, Some(DType::BF16));
        assert_eq!(model.language_model.lm_head.weight.val().dtype(), dtype);
        assert_eq!(
            model.language_model.model.embed_tokens.weight.val().dtype(),
            dtype
        );
        assert_eq!(model.gen_embed.weight.val().dtype(), dtype);
        assert_eq!(model.aligner.layers[0].weight.val().dtype(), dtype);
    }
}

// ------------------------------------------------------------------------------------------
// Bad input
// ------------------------------------------------------------------------------------------

/// A parameter dtype that is not a float type, or that the device cannot compute in (flex has
/// no `Flex32`; on GPUs bf16 under WGSL, f16 on some Vulkan drivers), is refused before any file
/// is read.
#[test]
fn error_unsupported_dtype() {
    for (dtype, reason) in [
        (DType::I64, "not a float dtype"),
        (DType::Flex32, "the device does not support it"),
    ] {
        let options = LoadOptions {
            dtype,
            ..Default::default()
        };
        let e = load(&tiny(), &options).expect_err("loading in an unsupported dtype succeeded");
        let JanusError::UnsupportedDtype {
            dtype: named,
            reason: why,
            ..
        } = &e
        else {
            panic!("expected UnsupportedDtype, got {e:?}")
        };
        assert_eq!(named, &format!("{dtype:?}"));
        assert_eq!(*why, reason);
        assert!(message(&e).contains(reason), "{e}");
    }
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        janus_core::check_param_dtype(&Device::flex(), dtype).unwrap();
    }
}

/// A model directory that does not exist is reported as such, by path.
#[test]
fn error_missing_model_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("no-such-model");
    let e = load(&dir, &LoadOptions::default()).expect_err("loading a missing directory succeeded");
    let JanusError::Missing { what, path } = &e else {
        panic!("expected Missing, got {e:?}")
    };
    assert_eq!(*what, "directory");
    assert_eq!(path, &dir);
    assert!(message(&e).contains(&dir.display().to_string()), "{e}");
}

/// A directory without `config.json` names the file.
#[test]
fn error_missing_config() {
    let dir = tempfile::tempdir().unwrap();
    let e = load(dir.path(), &LoadOptions::default()).expect_err("loaded without config.json");
    let JanusError::Missing { what, path } = &e else {
        panic!("expected Missing, got {e:?}")
    };
    assert_eq!(*what, "file");
    assert_eq!(path, &dir.path().join("config.json"));
    assert!(message(&e).contains("config.json"), "{e}");
}

/// A `config.json` that is not JSON is reported with its path and line.
#[test]
fn error_malformed_config() {
    let dir = model_dir_without_weights();
    let config = dir.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[4].trim(), r#""cls": "CLIPVisionTower","#);
    lines[4] = r#"    "cls": CLIPVisionTower,"#; // line 5: unquoted string
    std::fs::write(&config, lines.join("\n")).unwrap();

    let e = load(dir.path(), &LoadOptions::default()).expect_err("loaded a malformed config");
    let JanusError::Json { path, line, .. } = &e else {
        panic!("expected Json, got {e:?}")
    };
    assert_eq!(path.as_deref(), Some(config.as_path()));
    assert_eq!(*line, 5);
    let msg = message(&e);
    assert!(
        msg.contains("config.json") && msg.contains("line 5"),
        "{msg}"
    );
}

/// A directory with a config but no weights lists the layouts it looked for.
#[test]
fn error_no_checkpoint() {
    let dir = model_dir_without_weights();
    let e = load(dir.path(), &LoadOptions::default()).expect_err("loaded without weights");
    let JanusError::NoCheckpoint(path) = &e else {
        panic!("expected NoCheckpoint, got {e:?}")
    };
    assert_eq!(path, dir.path());
    let msg = message(&e);
    assert!(
        msg.contains(&dir.path().display().to_string()) && msg.contains("model.safetensors"),
        "{msg}"
    );
}

/// A parameter no file provides is named by its original checkpoint key (the aligner's
/// Sequential index 2, not the module's layer 1), with the expected shape.
#[test]
fn error_missing_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let key = "aligner.layers.2.weight";
    let tensors = tiny_tensors();
    let shape = tensors.iter().find(|t| t.key == key).unwrap().shape.clone();
    let kept: Vec<RawTensor> = tensors.into_iter().filter(|t| t.key != key).collect();
    write_safetensors(&dir.path().join("model.safetensors"), &kept);

    let e = load_weights(dir.path()).expect_err("loaded with a tensor missing");
    let JanusError::MissingTensor { key: k, expected } = &e else {
        panic!("expected MissingTensor, got {e:?}")
    };
    assert_eq!(k, key);
    assert_eq!(expected, &shape);
    assert!(message(&e).contains(key), "{e}");
}

/// A tensor that matches no parameter is an error naming its key, whether it is foreign,
/// sits at an activation's index of a Sequential projector, or is a decoder layer the
/// config does not have.
#[test]
fn error_unexpected_tensor() {
    let tensors = tiny_tensors();
    let like = |key: &str| tensors.iter().find(|t| t.key == key).unwrap().clone();
    for (extra, template) in [
        ("extra_head.weight", "gen_head.vision_head.weight"),
        ("aligner.layers.1.weight", "aligner.layers.2.weight"),
        (
            "language_model.model.layers.2.self_attn.q_proj.weight",
            "language_model.model.layers.1.self_attn.q_proj.weight",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut with_extra = tensors.clone();
        with_extra.push(RawTensor {
            key: extra.to_string(),
            ..like(template)
        });
        let file = dir.path().join("model.safetensors");
        write_safetensors(&file, &with_extra);

        let e = load_weights(dir.path())
            .err()
            .unwrap_or_else(|| panic!("loaded with extra `{extra}`"));
        let JanusError::UnexpectedTensor { key, found, path } = &e else {
            panic!("{extra}: expected UnexpectedTensor, got {e:?}")
        };
        assert_eq!(key, extra);
        assert_eq!(found, &like(template).shape);
        assert_eq!(path, &file);
        assert!(message(&e).contains(extra), "{e}");
    }
}

/// A tensor of the wrong shape is reported with both shapes in PyTorch layout (a Linear
/// weight as `[out, in]`, although burn stores it transposed).
#[test]
fn error_shape_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let key = "language_model.lm_head.weight";
    let mut tensors = tiny_tensors();
    let t = tensors.iter_mut().find(|t| t.key == key).unwrap();
    let expected = t.shape.clone();
    assert_eq!(expected.len(), 2);
    assert_ne!(expected[0], expected[1]);
    t.shape.reverse();
    let found = t.shape.clone();
    write_safetensors(&dir.path().join("model.safetensors"), &tensors);

    let e = load_weights(dir.path()).expect_err("loaded a tensor of the wrong shape");
    let JanusError::ShapeMismatch {
        key: k,
        expected: exp,
        found: got,
        ..
    } = &e
    else {
        panic!("expected ShapeMismatch, got {e:?}")
    };
    assert_eq!(k, key);
    assert_eq!(exp, &expected);
    assert_eq!(got, &found);
    let msg = message(&e);
    assert!(
        msg.contains(key)
            && msg.contains(&format!("{expected:?}"))
            && msg.contains(&format!("{found:?}")),
        "{msg}"
    );
}

/// A truncated checkpoint (safetensors or zip pickle) is a `Checkpoint` error naming the
/// file, not a panic.
#[test]
fn error_truncated_checkpoint() {
    for (name, source) in [
        ("model.safetensors", tiny().join("model.safetensors")),
        (
            "pytorch_model.bin",
            tiny().join("torch-bf16/pytorch_model.bin"),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let bytes = std::fs::read(&source).unwrap();
        let file = dir.path().join(name);
        std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();

        let e = load_weights(dir.path())
            .err()
            .unwrap_or_else(|| panic!("loaded a truncated {name}"));
        let JanusError::Checkpoint { path, .. } = &e else {
            panic!("{name}: expected Checkpoint, got {e:?}")
        };
        assert_eq!(path, &file);
        assert!(message(&e).contains(&file.display().to_string()), "{e}");
    }
}

/// A shard index naming a file that is absent is reported with the index and the shard.
#[test]
fn error_missing_shard() {
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let tensors = tiny_tensors();
    let total: usize = tensors.iter().map(|t| t.bytes.len()).sum();
    let (shards, map) = split(tensors, names);
    write_safetensors(&dir.path().join(names[0]), &shards[0]); // shard 2 never written
    write_index(dir.path(), "model.safetensors.index.json", &map, total);

    let e = load_weights(dir.path()).expect_err("loaded with a shard missing");
    let JanusError::MissingShard { index, shard } = &e else {
        panic!("expected MissingShard, got {e:?}")
    };
    assert_eq!(index, &dir.path().join("model.safetensors.index.json"));
    assert_eq!(shard, &dir.path().join(names[1]));
    assert!(message(&e).contains(names[1]), "{e}");
}

/// A pickle whose root calls an arbitrary global (`posix.system` / `os.system`, the classic
/// `torch.load` exploit) is refused without running anything, as `UnsafePickle` naming the
/// file, the global and no key: as `data.pkl` of a torch zip, as a raw pickle, and as a
/// legacy (pre-1.6) torch file.
#[test]
fn error_malicious_pickle_runs_nothing() {
    for module in ["posix", "os"] {
        for kind in ["zip", "raw pickle", "legacy"] {
            let dir = tempfile::tempdir().unwrap();
            let pwned = dir.path().join("pwned");
            let command = format!("touch {}", pwned.display());
            let file = dir.path().join("pytorch_model.bin");
            match kind {
                "zip" => write_torch_zip(&file, &call_pickle(module, "system", &command), &[]),
                "raw pickle" => {
                    std::fs::write(&file, call_pickle(module, "system", &command)).unwrap()
                }
                _ => std::fs::write(&file, legacy_call_file(module, "system", &command)).unwrap(),
            }

            let result = load_weights(dir.path());
            assert!(
                !pwned.exists(),
                "{module}.system ran from a {kind} checkpoint"
            );
            let e = result
                .err()
                .unwrap_or_else(|| panic!("{module}.system {kind} checkpoint loaded"));
            let JanusError::UnsafePickle { path, key, global } = &e else {
                panic!("{module}.system {kind}: expected UnsafePickle, got {e:?}")
            };
            assert_eq!(path, &file);
            assert_eq!(key, &None, "{kind}");
            assert_eq!(global, &format!("{module}.system"));
            assert!(message(&e).contains("root"), "{e}");
            // The reader the exporter re-reads a source with applies the same check.
            let read = janus_core::checkpoint::read_tensors(&file, CheckpointFormat::Pytorch);
            assert!(
                matches!(read, Err(JanusError::UnsafePickle { .. })),
                "{module}.system {kind}: read_tensors gave {:?}",
                read.map(|t| t.len())
            );
            assert!(!pwned.exists());
        }
    }
}

/// A call nested in the state dict, under a key the model needs, is refused as
/// `UnsafePickle` naming the file, that key and the global, rather than dropped by the
/// reader and reported later as a missing tensor; in a single file and in a shard.
#[test]
fn error_malicious_pickle_entry_names_its_key() {
    let tensors = tiny_tensors();
    let key = "language_model.lm_head.weight";
    assert!(tensors.iter().any(|t| t.key == key) && in_second_shard(key));
    let dir = tempfile::tempdir().unwrap();
    let pwned = dir.path().join("pwned");
    let command = format!("touch {}", pwned.display());
    let hostile = HostileEntry {
        key,
        module: "posix",
        name: "system",
        arg: &command,
    };

    let single = dir.path().join("single");
    std::fs::create_dir(&single).unwrap();
    let bf16: Vec<Bf16Tensor> = tensors.iter().map(RawTensor::to_bf16).collect();
    write_state_dict_with_call(&single.join("pytorch_model.bin"), &bf16, Some(&hostile));

    let sharded = dir.path().join("sharded");
    std::fs::create_dir(&sharded).unwrap();
    let names = [
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
    ];
    let total: usize = tensors.iter().map(|t| t.bytes.len() / 2).sum();
    let (shards, map) = split(tensors, names);
    for (shard, name) in shards.iter().zip(names) {
        let bf16: Vec<Bf16Tensor> = shard.iter().map(RawTensor::to_bf16).collect();
        write_state_dict_with_call(&sharded.join(name), &bf16, Some(&hostile));
    }
    write_index(&sharded, "pytorch_model.bin.index.json", &map, total);

    for (weights, file) in [
        (&single, single.join("pytorch_model.bin")),
        (&sharded, sharded.join(names[1])),
    ] {
        let e = load_weights(weights)
            .err()
            .unwrap_or_else(|| panic!("{}: loaded a hostile entry", file.display()));
        assert!(!pwned.exists());
        let JanusError::UnsafePickle {
            path,
            key: found,
            global,
        } = &e
        else {
            panic!("{}: expected UnsafePickle, got {e:?}", file.display())
        };
        assert_eq!(path, &file);
        assert_eq!(found.as_deref(), Some(key));
        assert_eq!(global, "posix.system");
        let text = message(&e);
        assert!(text.contains(&file.display().to_string()), "{e}");
        assert!(
            text.contains(&format!("entry `{key}` calls `posix.system`")),
            "{e}"
        );
    }
}
