//! Step checkpoints (save → resume equals an uninterrupted run, keep-last-K, atomicity under
//! failure, foreign models refused) and model-directory export (original key names and
//! layouts, reloadable by janus-core with identical logits).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use janus_core::checkpoint::remap::is_ignored;
use janus_core::{JanusModel, LoadOptions};
use janus_train::checkpoint::{
    CheckpointError, ModelFingerprint, RngState, TrainState, latest_checkpoint, list_checkpoints,
    load_checkpoint, save_checkpoint, save_checkpoint_with,
};
use janus_train::export::{ExportError, ExportOptions, export_model_dir, export_model_dir_with};
use janus_train::optim::{OptimConfig, TrainOptimizer};
use safetensors::SafeTensors;
use tempfile::TempDir;

// ------------------------------------------------------------------------------------------
// A tiny trainable model
// ------------------------------------------------------------------------------------------

#[derive(Module, Debug)]
struct Tiny {
    first: Linear,
    second: Linear,
}

impl Tiny {
    fn new(hidden: usize, device: &Device) -> Self {
        Self {
            first: LinearConfig::new(4, hidden).init(device),
            second: LinearConfig::new(hidden, 2).init(device),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.second.forward(self.first.forward(x).tanh())
    }
}

fn device() -> Device {
    Device::flex().autodiff()
}

fn config() -> OptimConfig {
    OptimConfig {
        lr: 0.02,
        weight_decay: 0.01,
        warmup_steps: 2,
        max_grad_norm: Some(0.5),
        ..Default::default()
    }
}

/// Gradients of a fixed regression loss that depends on the step.
fn grads(model: &Tiny, step: usize) -> GradientsParams {
    let device = device();
    let x: Vec<f32> = (0..12)
        .map(|i| ((i + 3 * step) as f32 * 0.7).sin())
        .collect();
    let t: Vec<f32> = (0..6).map(|i| ((i + step) as f32 * 1.3).cos()).collect();
    let x = Tensor::<2>::from_data(TensorData::new(x, [3, 4]), &device);
    let t = Tensor::<2>::from_data(TensorData::new(t, [3, 2]), &device);
    let loss = (model.forward(x) - t).square().mean();
    GradientsParams::from_grads(loss.backward(), model)
}

fn train(mut model: Tiny, optim: &mut TrainOptimizer, steps: std::ops::Range<usize>) -> Tiny {
    for step in steps {
        let g = grads(&model, step);
        model = optim.step(step, model, g).0;
    }
    model
}

/// Every parameter value, in visit order.
fn params(model: &Tiny) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for layer in [&model.first, &model.second] {
        out.push(layer.weight.val().into_data().try_to_vec::<f32>().unwrap());
        out.push(
            layer
                .bias
                .as_ref()
                .unwrap()
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap(),
        );
    }
    out
}

fn state(step: usize) -> TrainState {
    TrainState {
        step,
        epoch: 1,
        data_position: serde_json::json!({"shard": 2, "offset": 17, "order": [3, 1, 2]}),
        rng: RngState {
            seed: 42,
            counter: u64::MAX - 7,
        },
        metrics: BTreeMap::from([("loss".to_string(), 0.25), ("grad_norm".into(), f64::NAN)]),
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

// ------------------------------------------------------------------------------------------
// Checkpoints
// ------------------------------------------------------------------------------------------

#[test]
fn resume_continues_exactly() {
    let tmp = TempDir::new().unwrap();
    let dev = device();
    let mut optim = config().build().unwrap();
    let model = train(Tiny::new(5, &dev), &mut optim, 0..3);

    let saved = save_checkpoint(tmp.path(), 3, &model, &optim.optim, &state(3), 2).unwrap();
    assert_eq!(saved, tmp.path().join("checkpoint-3"));
    assert_eq!(latest_checkpoint(tmp.path()).unwrap(), Some(saved.clone()));

    // The uninterrupted run.
    let expected = train(model.clone(), &mut optim, 3..5);

    // A new process: fresh weights, fresh parameter ids, empty optimizer.
    let mut fresh = config().build().unwrap();
    let (resumed, optim_state, train_state) =
        load_checkpoint(&saved, Tiny::new(5, &dev), fresh.optim.clone()).unwrap();
    assert_eq!(params(&resumed), params(&model));
    assert_eq!(train_state.step, 3);
    assert_eq!(train_state.epoch, 1);
    assert_eq!(train_state.data_position, state(3).data_position);
    assert_eq!(train_state.rng, state(3).rng);
    assert_eq!(train_state.metrics["loss"], 0.25);
    assert!(train_state.metrics["grad_norm"].is_nan());

    // Without the moments the continuation differs, so the comparison below is meaningful.
    let cold = train(resumed.clone(), &mut fresh, 3..5);
    assert_ne!(params(&cold), params(&expected));

    fresh.optim = optim_state;
    let continued = train(resumed, &mut fresh, 3..5);
    assert_eq!(params(&continued), params(&expected));
}

#[test]
fn keeps_the_last_k() {
    let tmp = TempDir::new().unwrap();
    let dev = device();
    let optim = config().build().unwrap();
    let model = Tiny::new(3, &dev);
    for step in [10, 20, 30, 40, 50] {
        save_checkpoint(tmp.path(), step, &model, &optim.optim, &state(step), 2).unwrap();
    }
    let steps: Vec<usize> = list_checkpoints(tmp.path())
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(steps, [40, 50]);
    assert_eq!(
        names(tmp.path()),
        ["checkpoint-40", "checkpoint-50"].map(String::from).into()
    );

    // 0 keeps everything; numeric order, not lexicographic.
    for step in [9, 100] {
        save_checkpoint(tmp.path(), step, &model, &optim.optim, &state(step), 0).unwrap();
    }
    assert_eq!(
        latest_checkpoint(tmp.path()).unwrap(),
        Some(tmp.path().join("checkpoint-100"))
    );
    assert_eq!(list_checkpoints(tmp.path()).unwrap().len(), 4);
    // A checkpoint written below newer ones is kept all the same.
    save_checkpoint(tmp.path(), 5, &model, &optim.optim, &state(5), 1).unwrap();
    let steps: Vec<usize> = list_checkpoints(tmp.path())
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(steps, [5]);
}

#[test]
fn a_failed_write_leaves_previous_checkpoints_intact() {
    let tmp = TempDir::new().unwrap();
    let dev = device();
    let mut optim = config().build().unwrap();
    let model = train(Tiny::new(3, &dev), &mut optim, 0..2);
    let first = save_checkpoint(tmp.path(), 1, &model, &optim.optim, &state(1), 1).unwrap();
    let before = names(&first);

    // The disk fills up after everything was written, before the commit.
    let disk_full = |dir: &Path| {
        std::fs::write(dir.join("padding"), vec![0u8; 1 << 16])?;
        Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "simulated ENOSPC",
        ))
    };
    let trained = train(model.clone(), &mut optim, 2..4);
    let err = save_checkpoint_with(
        tmp.path(),
        2,
        &trained,
        &optim.optim,
        &state(2),
        1,
        disk_full,
    )
    .unwrap_err();
    assert!(
        matches!(&err, CheckpointError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull),
        "{err}"
    );
    // Nothing new, nothing pruned, no scratch left over.
    assert_eq!(names(tmp.path()), ["checkpoint-1".to_string()].into());
    assert_eq!(latest_checkpoint(tmp.path()).unwrap(), Some(first.clone()));

    // Re-writing the same step fails too: the old one survives, byte for byte.
    let err = save_checkpoint_with(
        tmp.path(),
        1,
        &trained,
        &optim.optim,
        &state(1),
        1,
        disk_full,
    )
    .unwrap_err();
    assert!(matches!(err, CheckpointError::Io { .. }));
    assert_eq!(names(&first), before);
    let (loaded, _, st) = load_checkpoint(&first, Tiny::new(3, &dev), optim.optim.clone()).unwrap();
    assert_eq!(params(&loaded), params(&model));
    assert_eq!(st.step, 1);

    // A successful rewrite of the same step replaces it, extra files included.
    save_checkpoint_with(tmp.path(), 1, &trained, &optim.optim, &state(1), 1, |dir| {
        std::fs::write(dir.join("run.json"), b"{}")
    })
    .unwrap();
    assert!(first.join("run.json").is_file());
    let (loaded, _, _) = load_checkpoint(&first, Tiny::new(3, &dev), optim.optim.clone()).unwrap();
    assert_eq!(params(&loaded), params(&trained));
    assert_eq!(names(tmp.path()), ["checkpoint-1".to_string()].into());

    // An unwritable target (here: the checkpoint root is a file) is an error, not a panic.
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    let err = save_checkpoint(&file, 3, &model, &optim.optim, &state(3), 1).unwrap_err();
    assert!(matches!(err, CheckpointError::Io { .. }), "{err}");
}

#[test]
fn another_model_is_refused() {
    let tmp = TempDir::new().unwrap();
    let dev = device();
    let optim = config().build().unwrap();
    let model = Tiny::new(5, &dev);
    let path = save_checkpoint(tmp.path(), 7, &model, &optim.optim, &state(7), 0).unwrap();

    assert_eq!(
        ModelFingerprint::of(&model),
        ModelFingerprint::of(&Tiny::new(5, &dev))
    );
    let err = load_checkpoint(&path, Tiny::new(6, &dev), optim.optim.clone())
        .err()
        .expect("refused");
    match &err {
        CheckpointError::ForeignModel {
            expected, found, ..
        } => {
            assert_eq!(found, &ModelFingerprint::of(&model));
            assert_ne!(expected, found);
            assert!(err.to_string().contains("another model"), "{err}");
        }
        other => panic!("expected ForeignModel, got {other}"),
    }

    // A state file from another format version is refused as well.
    let state_file = path.join("state.json");
    let text = std::fs::read_to_string(&state_file).unwrap();
    std::fs::write(
        &state_file,
        text.replace("\"version\": 1", "\"version\": 99"),
    )
    .unwrap();
    let err = load_checkpoint(&path, Tiny::new(5, &dev), optim.optim.clone())
        .err()
        .expect("refused");
    assert!(
        matches!(err, CheckpointError::Format { version: 99, .. }),
        "{err}"
    );
}

// ------------------------------------------------------------------------------------------
// Export
// ------------------------------------------------------------------------------------------

fn tiny_janus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-janus")
}

/// key → (dtype, shape, bytes).
fn read_safetensors(path: &Path) -> BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

fn llm_logits(model: &JanusModel) -> Vec<f32> {
    let device = Device::flex();
    let ids: Vec<i64> = (0..16).map(|i| (i * 37 + 5) % 388).collect();
    let ids: Tensor<2, Int> = Tensor::from_data(TensorData::new(ids, [2, 8]), &device);
    model
        .language_model
        .forward(ids, None, None)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

#[test]
fn export_round_trips_the_tiny_model() {
    let source = tiny_janus();
    let device = Device::flex();
    let (model, _, _) = JanusModel::load(&source, &LoadOptions::default(), &device).unwrap();
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("exported");

    let report = export_model_dir(&model, &source, &out).unwrap();
    assert_eq!(report.files.len(), 6, "{:?}", report.files);
    for name in &report.files {
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(source.join(name)).unwrap(),
            "{name}"
        );
    }

    // Same keys, dtypes, shapes and (f32 → f32) bytes as the original, ignored keys included.
    let original = read_safetensors(&source.join("model.safetensors"));
    let exported = read_safetensors(&out.join("model.safetensors"));
    let keys = |m: &BTreeMap<String, _>| m.keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(keys(&exported), keys(&original));
    let ignored: BTreeSet<String> = original.keys().filter(|k| is_ignored(k)).cloned().collect();
    assert!(!ignored.is_empty());
    assert_eq!(
        report
            .copied_tensors
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        ignored
    );
    assert_eq!(report.model_tensors, original.len() - ignored.len());
    for (key, (dtype, shape, bytes)) in &original {
        let (d, s, b) = &exported[key];
        assert_eq!((d, s), (dtype, shape), "{key}");
        assert!(b == bytes, "{key}: values differ");
    }

    // janus-core reads it back to the same model.
    let (reloaded, _, load) = JanusModel::load(&out, &LoadOptions::default(), &device).unwrap();
    assert_eq!(load.ignored, ignored.len());
    assert_eq!(llm_logits(&reloaded), llm_logits(&model));

    // Without copy-through: the loader's key set exactly, still loadable.
    let lean = tmp.path().join("lean");
    let options = ExportOptions {
        copy_unused: false,
        ..Default::default()
    };
    let report = export_model_dir_with(&model, &source, &lean, &options).unwrap();
    assert!(report.copied_tensors.is_empty());
    let lean_keys = keys(&read_safetensors(&lean.join("model.safetensors")));
    assert_eq!(
        lean_keys,
        keys(&original).difference(&ignored).cloned().collect()
    );
    let (reloaded, _, _) = JanusModel::load(&lean, &LoadOptions::default(), &device).unwrap();
    assert_eq!(llm_logits(&reloaded), llm_logits(&model));
}

#[test]
fn export_replaces_atomically_and_casts() {
    let source = tiny_janus();
    let device = Device::flex();
    let (model, _, _) = JanusModel::load(&source, &LoadOptions::default(), &device).unwrap();
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("exported");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("stale.txt"), b"old").unwrap();

    let options = ExportOptions {
        dtype: DType::BF16,
        ..Default::default()
    };
    export_model_dir_with(&model, &source, &out, &options).unwrap();
    assert!(
        !out.join("stale.txt").exists(),
        "the old directory is replaced"
    );
    assert_eq!(names(tmp.path()), ["exported".to_string()].into());
    let exported = read_safetensors(&out.join("model.safetensors"));
    assert!(
        exported
            .values()
            .all(|(dtype, _, _)| *dtype == safetensors::Dtype::BF16)
    );
    JanusModel::load(&out, &LoadOptions::default(), &device).unwrap();

    // Exporting over the source directory is refused before anything is written.
    let err = export_model_dir(&model, &source, &source).unwrap_err();
    assert!(matches!(err, ExportError::SameDirectory { .. }), "{err}");
    let err = export_model_dir(&model, tmp.path(), &tmp.path().join("x")).unwrap_err();
    assert!(matches!(err, ExportError::MissingConfig { .. }), "{err}");
}
