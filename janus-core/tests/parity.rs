//! Parity with the reference PyTorch implementation, over every fixture under
//! `JANUS_FIXTURES` (default: the project's `tests/fixtures`). Test names are
//! `parity_<golden>`, so `cargo test --release parity_llm` runs one family.

mod common;

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use common::{model_dirs, read_goldens, rel_err, weight_dirs};
use janus_core::{JanusModel, LoadOptions};

/// Golden files that have a parity test in this file.
const CHECKED: &[&str] = &["llm.safetensors", "vision.safetensors"];

/// Golden files whose checks belong to later issues. This list only shrinks.
const PENDING: &[(&str, &str)] = &[
    (
        "understanding_single.safetensors",
        "issue 3: parity_understanding",
    ),
    (
        "understanding_multi.safetensors",
        "issue 3: parity_understanding",
    ),
    (
        "understanding_text_only.safetensors",
        "issue 3: parity_understanding",
    ),
    (
        "understanding_batch.safetensors",
        "issue 3: parity_understanding",
    ),
    ("vq.safetensors", "issue 4: parity_vq"),
    ("generation.safetensors", "issue 4: parity_generation"),
    ("train.safetensors", "issue 5: parity_train"),
];

/// Every fixture loads, and every golden tensor file in it is checked by some test.
#[test]
fn parity_harness_covers_every_fixture() {
    let device = Device::flex();
    for dir in model_dirs() {
        for weights in weight_dirs(&dir) {
            let options = LoadOptions {
                weights_dir: Some(weights.clone()),
                ..Default::default()
            };
            if let Err(e) = JanusModel::load(&dir, &options, &device) {
                panic!(
                    "{} (weights {}) does not load: {e}",
                    dir.display(),
                    weights.display()
                );
            }
        }
        let goldens = dir.join("goldens");
        let Ok(entries) = std::fs::read_dir(&goldens) else {
            continue;
        };
        for entry in entries {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if !name.ends_with(".safetensors") {
                continue; // inputs (cases.json, PNGs) are read by the tests that use them
            }
            assert!(
                CHECKED.contains(&name.as_str()) || PENDING.iter().any(|(p, _)| *p == name),
                "{}/{name} has no parity test",
                goldens.display()
            );
        }
    }
}

fn int_tensor(data: &[i64], shape: &[usize], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(data.to_vec(), [shape[0], shape[1]]), device)
}

/// Language-model logits with left padding, for every checkpoint copy of every fixture.
#[test]
fn parity_llm() {
    let device = Device::flex();
    let mut checked = 0;
    for dir in model_dirs() {
        let path = dir.join("goldens/llm.safetensors");
        if !path.exists() {
            continue;
        }
        let g = read_goldens(&path);
        let ids = &g["input_ids"];
        let mask = &g["attention_mask"];
        let reference = &g["logits"];
        let (b, t) = (ids.shape[0], ids.shape[1]);
        let v = reference.shape[2];
        let rows: Vec<Vec<bool>> = mask
            .ints
            .chunks(t)
            .map(|r| r.iter().map(|m| *m != 0).collect())
            .collect();
        for weights in weight_dirs(&dir) {
            for dtype in [DType::F32, DType::BF16] {
                let options = LoadOptions {
                    weights_dir: Some(weights.clone()),
                    dtype,
                };
                let (model, _, _) = JanusModel::load(&dir, &options, &device).unwrap();
                let logits = model
                    .language_model
                    .forward(
                        int_tensor(&ids.ints, &ids.shape, &device),
                        Some(&rows),
                        None,
                    )
                    .unwrap()
                    .cast(DType::F32);
                let out = logits.into_data().try_to_vec::<f32>().unwrap();
                // Padded positions are not compared: their logits are meaningless.
                let (mut got, mut want) = (Vec::new(), Vec::new());
                for i in 0..b * t {
                    if rows[i / t][i % t] {
                        got.extend_from_slice(&out[i * v..(i + 1) * v]);
                        want.extend_from_slice(&reference.floats[i * v..(i + 1) * v]);
                    }
                }
                let err = rel_err(&got, &want);
                let tol = if dtype == DType::F32 { 1e-4 } else { 2e-2 };
                println!(
                    "parity_llm {} [{}] {dtype:?}: rel err {err:.3e}",
                    dir.display(),
                    weights.display()
                );
                assert!(
                    err <= tol,
                    "{}: {dtype:?} logits rel err {err:.3e} > {tol}",
                    weights.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "no fixture has goldens/llm.safetensors");
}

/// SigLIP features and the understanding adaptor, for every fixture.
#[test]
fn parity_vision() {
    let device = Device::flex();
    let mut checked = 0;
    for dir in model_dirs() {
        let path = dir.join("goldens/vision.safetensors");
        if !path.exists() {
            continue;
        }
        let g = read_goldens(&path);
        let (model, _, _) = JanusModel::load(&dir, &LoadOptions::default(), &device).unwrap();
        let px = &g["pixel_values"];
        let pixels = Tensor::<4>::from_data(
            TensorData::new(
                px.floats.clone(),
                [px.shape[0], px.shape[1], px.shape[2], px.shape[3]],
            ),
            &device,
        );
        let features = model.vision_model.forward(pixels);
        let aligned = model.aligner.forward(features.clone());
        for (name, out) in [("features", features), ("aligned", aligned)] {
            let reference = &g[name];
            assert_eq!(out.dims().to_vec(), reference.shape, "{name} shape");
            let err = rel_err(
                &out.into_data().try_to_vec::<f32>().unwrap(),
                &reference.floats,
            );
            println!("parity_vision {} {name}: rel err {err:.3e}", dir.display());
            assert!(err <= 1e-4, "{}: {name} rel err {err:.3e}", dir.display());
        }
        checked += 1;
    }
    assert!(checked > 0, "no fixture has goldens/vision.safetensors");
}
