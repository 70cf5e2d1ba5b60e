//! janus-train end to end on the tiny checkpoint: the loss falls for stage I, stage III and
//! LoRA; an interrupted and resumed run equals an uninterrupted one; the exported model loads;
//! bad configs and foreign checkpoints are refused.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use janus_core::{JanusModel, LoadOptions};
use janus_train::config::TrainConfig;
use janus_train::data::MixRatio;
use janus_train::lora::LoraConfig;
use janus_train::optim::OptimConfig;
use janus_train::stage::Stage;
use janus_train::trainer::{TrainError, train, train_parallel};

/// LoRA initialisation and LoRA dropout draw from the device's global RNG (seeded per run), which
/// tests running in parallel threads would share: the tests that use it take this lock.
static DEVICE_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    DEVICE_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-janus")
}

/// A few samples built from the fixture images: two captions, understanding and text-to-image.
fn dataset(dir: &Path) -> (PathBuf, PathBuf) {
    let goldens = fixture().join("goldens");
    for name in ["scene.png", "banner.png"] {
        std::fs::copy(goldens.join(name), dir.join(name)).unwrap();
    }
    let und = dir.join("und.jsonl");
    std::fs::write(
        &und,
        concat!(
            r#"{"query": "<image>What is in the image?", "response": "a scene.", "images": ["scene.png"]}"#,
            "\n",
            r#"{"query": "<image>What is in the image?", "response": "a banner.", "images": ["banner.png"]}"#,
            "\n",
        ),
    )
    .unwrap();
    let t2i = dir.join("t2i.jsonl");
    std::fs::write(
        &t2i,
        concat!(
            r#"{"prompt": "a scene", "image": "scene.png"}"#,
            "\n",
            r#"{"prompt": "a banner", "image": "banner.png"}"#,
            "\n"
        ),
    )
    .unwrap();
    (und, t2i)
}

fn config(dir: &Path, stage: Stage, steps: usize) -> TrainConfig {
    let (und, t2i) = dataset(dir);
    let mut c = TrainConfig {
        model: fixture(),
        output_dir: dir.join("run"),
        stage,
        steps,
        ..Default::default()
    };
    c.data.understanding = vec![und];
    c.data.generation = vec![t2i];
    c.data.ratio = MixRatio {
        understanding: 1,
        text: 0,
        generation: 1,
    };
    c.data.batch_size = 4;
    c.data.cfg_dropout = 0.0;
    c.optim = OptimConfig {
        lr: 5e-3,
        warmup_steps: 0,
        total_steps: Some(100),
        ..Default::default()
    };
    c
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn assert_learns(config: &TrainConfig) {
    let summary = train(config, &Device::flex(), false, &mut |_| {}).unwrap();
    let losses: Vec<f64> = summary.reports.iter().map(|r| r.loss).collect();
    let (first, last) = (mean(&losses[..3]), mean(&losses[losses.len() - 3..]));
    println!("{:?}: loss {first:.3} -> {last:.3}", config.stage);
    assert!(
        last < 0.7 * first,
        "loss did not fall clearly: {first:.3} -> {last:.3} ({losses:?})"
    );
    // The exported directory loads in janus-core.
    JanusModel::load(&summary.model_dir, &LoadOptions::default(), &Device::flex()).unwrap();
    assert!(config.output_dir.join("metrics.jsonl").is_file());
}

#[test]
fn stage_one_learns() {
    let dir = tempfile::tempdir().unwrap();
    assert_learns(&config(dir.path(), Stage::One, 30));
}

#[test]
fn stage_three_learns() {
    let dir = tempfile::tempdir().unwrap();
    assert_learns(&config(dir.path(), Stage::Three, 30));
}

#[test]
fn lora_learns_and_writes_an_adapter() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), Stage::Three, 30);
    // ms-swift's default LoRA dropout.
    c.lora = Some(LoraConfig::new(4, 8.0).with_dropout(0.05));
    c.optim.lr = 1e-2;
    assert_learns(&c);
    assert!(c.output_dir.join("adapter.safetensors").is_file());
}

/// LoRA dropout reaches the training step: the first step's loss is the same (`b` starts at
/// zero, so the branch adds nothing yet) but its gradient for `b` sees the dropped input, so the
/// second step's loss differs from a run without dropout.
#[test]
fn lora_dropout_changes_training() {
    let _rng = rng_lock();
    let run = |dropout: f64| {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path(), Stage::Three, 2);
        c.lora = Some(LoraConfig::new(4, 8.0).with_dropout(dropout));
        c.optim.lr = 1e-2;
        train(&c, &Device::flex(), false, &mut |_| {})
            .unwrap()
            .reports
            .iter()
            .map(|r| r.loss)
            .collect::<Vec<_>>()
    };
    let (without, with) = (run(0.0), run(0.3));
    assert_eq!(without[0], with[0], "step 1: the branch is still zero");
    assert_ne!(without[1], with[1], "step 2: dropout changed the update");
}

#[test]
fn resume_equals_uninterrupted() {
    let straight = tempfile::tempdir().unwrap();
    let mut a = config(straight.path(), Stage::Three, 6);
    a.save_every = 3;
    train(&a, &Device::flex(), false, &mut |_| {}).unwrap();

    let split = tempfile::tempdir().unwrap();
    let mut b = config(split.path(), Stage::Three, 3);
    train(&b, &Device::flex(), false, &mut |_| {}).unwrap();
    b.steps = 6;
    let resumed = train(&b, &Device::flex(), true, &mut |_| {}).unwrap();
    assert_eq!(resumed.start_step, 3);
    assert_eq!(resumed.reports.len(), 3);

    let weights =
        |c: &TrainConfig| std::fs::read(c.output_dir.join("final/model.safetensors")).unwrap();
    assert!(
        weights(&a) == weights(&b),
        "resumed weights differ from the uninterrupted run"
    );
}

/// Two workers of burn-train's multi-device step (both on the CPU device) with one accumulation
/// step see the same micro-batches as one device accumulating two: same losses, same weights —
/// for full fine-tuning and for LoRA (whose reparameterised weights the workers fork).
#[test]
fn data_parallel_equals_accumulation() {
    let _rng = rng_lock();
    for lora in [false, true] {
        let single = tempfile::tempdir().unwrap();
        let mut a = config(single.path(), Stage::Three, 3);
        a.data.batch_size = 2;
        a.optim.grad_accum_steps = 2;
        if lora {
            a.lora = Some(LoraConfig::new(2, 4.0));
        }
        let one = train(&a, &Device::flex(), false, &mut |_| {}).unwrap();

        let multi = tempfile::tempdir().unwrap();
        let mut b = config(multi.path(), Stage::Three, 3);
        b.data.batch_size = 2;
        b.optim.grad_accum_steps = 1;
        b.lora = a.lora.clone();
        let devices = [Device::flex(), Device::flex()];
        let two = train_parallel(&b, &devices, false, &mut |_| {}).unwrap();

        for (x, y) in one.reports.iter().zip(&two.reports) {
            assert_eq!(x.tokens, y.tokens, "lora {lora}: same data per step");
            assert_eq!(
                (x.loss, x.loss_und, x.loss_gen),
                (y.loss, y.loss_und, y.loss_gen),
                "lora {lora}: step {}",
                x.step
            );
        }
        assert!(
            one.reports[2].loss < one.reports[0].loss,
            "lora {lora}: it learns"
        );
        let weights =
            |c: &TrainConfig| std::fs::read(c.output_dir.join("final/model.safetensors")).unwrap();
        assert!(
            weights(&a) == weights(&b),
            "lora {lora}: data-parallel weights differ from accumulation"
        );
    }
    let err = train_parallel(
        &config(tempfile::tempdir().unwrap().path(), Stage::One, 1),
        &[],
        false,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::NoDevice), "{err}");
}

#[test]
fn resume_from_another_model_is_refused() {
    let _rng = rng_lock();
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), Stage::One, 2);
    train(&c, &Device::flex(), false, &mut |_| {}).unwrap();
    // Same output directory, but LoRA changes the parameter set: the checkpoint is foreign.
    let mut other = c.clone();
    other.lora = Some(LoraConfig::new(2, 4.0));
    other.steps = 4;
    let err = train(&other, &Device::flex(), true, &mut |_| {}).unwrap_err();
    assert!(matches!(err, TrainError::Checkpoint(_)), "{err}");
}

#[test]
fn config_files_reject_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "model = \"m\"\nsteps = 5\nstage = 1\n[data]\nbatch_size = 2\n[optim]\nlr = 0.001\n",
    )
    .unwrap();
    let c = TrainConfig::from_file(&good).unwrap();
    assert_eq!((c.steps, c.stage, c.data.batch_size), (5, Stage::One, 2));
    assert_eq!(
        c.model,
        dir.path().join("m"),
        "relative paths are resolved against the file"
    );

    for bad in [
        "model = \"m\"\nstepz = 5\n",
        "model = \"m\"\n[data]\nbatchsize = 2\n",
        "model = \"m\"\n[optim]\nlearning_rate = 1\n",
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, bad).unwrap();
        let err = TrainConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{bad:?}: {err}");
    }
}

/// The README's recipe (`examples/train/tiny/lora.toml`) parses and runs as written (fewer steps).
#[test]
fn readme_recipe_runs() {
    let _rng = rng_lock();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/train/tiny/lora.toml");
    let mut c = TrainConfig::from_file(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    c.output_dir = dir.path().join("run");
    c.steps = 3;
    let summary = train(&c, &Device::flex(), false, &mut |_| {}).unwrap();
    assert_eq!(summary.reports.len(), 3);
    assert!(
        summary.reports.last().unwrap().val_loss.is_some(),
        "validation runs at the end"
    );
    assert!(summary.adapter.is_some());
}
