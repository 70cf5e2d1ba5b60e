//! Parity with the reference PyTorch implementation, over every fixture under
//! `JANUS_FIXTURES` (default: the project's `tests/fixtures`). Test names are
//! `parity_<golden>`, so `cargo test --release parity_llm` runs one family.

mod common;

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use common::weight_dirs;
use janus_core::processor::{Message, Processor};
use janus_core::{JanusModel, LoadOptions};
use janus_testutil::{device_supports, model_dirs, read_goldens, rel_err, test_device};

/// Golden files that have a parity test (in this file unless noted).
const CHECKED: &[&str] = &[
    "llm.safetensors",
    "vision.safetensors",
    "understanding_single.safetensors",
    "understanding_multi.safetensors",
    "understanding_text_only.safetensors",
    "understanding_batch.safetensors",
    "vq.safetensors",         // tests/parity_generation.rs: parity_vq
    "generation.safetensors", // tests/parity_generation.rs: parity_generation
    "train.safetensors",      // janus-train/tests/parity_train.rs: parity_train
];

/// Golden files whose checks are not written yet. This list only shrinks; it is empty now that
/// every golden family has its test.
const PENDING: &[(&str, &str)] = &[];

/// Every fixture loads, and every golden tensor file in it is checked by some test.
#[test]
fn parity_harness_covers_every_fixture() {
    let device = test_device();
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
    let device = test_device();
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
        let rows = mask.mask_rows();
        for weights in weight_dirs(&dir) {
            for dtype in [DType::F32, DType::BF16, DType::F16] {
                if !device_supports(&device, dtype) {
                    continue;
                }
                let options = LoadOptions {
                    weights_dir: Some(weights.clone()),
                    dtype,
                    ..Default::default()
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
    let device = test_device();
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

/// Processor output, input embeddings and greedy KV-cache decoding for each conversation in
/// `cases.json`, and the last logits of the left-padded batch.
#[test]
fn parity_understanding() {
    let device = test_device();
    let mut checked = 0;
    for dir in model_dirs() {
        let cases_path = dir.join("goldens/cases.json");
        let Ok(text) = std::fs::read_to_string(&cases_path) else {
            continue;
        };
        let cases: serde_json::Value = serde_json::from_str(&text).unwrap();
        let (model, config, _) = JanusModel::load(&dir, &LoadOptions::default(), &device).unwrap();
        let processor = Processor::from_dir(&dir).unwrap();
        let eos = processor.special_tokens().eos as i64;
        let vocab = config.language.vocab_size;
        let conversation = |name: &str| -> Vec<Message> {
            serde_json::from_value(cases["understanding"][name]["conversation"].clone()).unwrap()
        };
        for name in ["single", "multi", "text_only"] {
            let path = dir.join(format!("goldens/understanding_{name}.safetensors"));
            if !path.exists() {
                continue;
            }
            let g = read_goldens(&path);
            let case = &cases["understanding"][name];
            let messages = conversation(name);
            let images = processor
                .load_images(&messages, dir.join("goldens"))
                .unwrap();
            let batch = processor.process(&messages, &images).unwrap();
            assert_eq!(
                batch.sft_format[0],
                case["sft_format"].as_str().unwrap(),
                "{name}: prompt string"
            );
            let ids: Vec<i64> = batch.input_ids.iter().map(|&i| i as i64).collect();
            assert_eq!(ids, g["input_ids"].ints, "{name}: input_ids");
            let seq: Vec<i64> = batch.images_seq_mask.iter().map(|&m| m as i64).collect();
            assert_eq!(seq, g["images_seq_mask"].ints, "{name}: images_seq_mask");

            let embeds = model.embed_inputs(&batch).unwrap();
            let err = rel_err(
                &embeds.clone().into_data().try_to_vec::<f32>().unwrap(),
                &g["inputs_embeds"].floats,
            );
            println!("parity_understanding {name} inputs_embeds: rel err {err:.3e}");
            assert!(err <= 1e-4, "{name}: inputs_embeds rel err {err:.3e}");

            // Greedy decoding with the KV cache, as the reference's generate() does.
            let want_ids = &g["generated_ids"].ints;
            let steps = want_ids.len();
            let lm = &model.language_model;
            let mut cache = lm.model.new_cache(1, batch.seq_len + steps);
            let mut logits = lm.forward_embeds(embeds, None, Some(&mut cache)).unwrap();
            let (mut got_ids, mut got_logits) = (Vec::new(), Vec::new());
            loop {
                let t = logits.dims()[1];
                let last = logits.slice([0..1, t - 1..t]).reshape([1, vocab]);
                let row = last.into_data().try_to_vec::<f32>().unwrap();
                let next = row
                    .iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |best, (i, v)| {
                        if *v > best.1 { (i, *v) } else { best }
                    })
                    .0 as i64;
                got_logits.extend(row);
                got_ids.push(next);
                if next == eos || got_ids.len() == steps {
                    break;
                }
                let input =
                    Tensor::<2, Int>::from_data(TensorData::new(vec![next], [1, 1]), &device);
                logits = lm.forward(input, None, Some(&mut cache)).unwrap();
            }
            assert_eq!(&got_ids, want_ids, "{name}: generated_ids");
            let err = rel_err(&got_logits, &g["step_logits"].floats);
            println!("parity_understanding {name} step_logits: rel err {err:.3e}");
            assert!(err <= 1e-4, "{name}: step_logits rel err {err:.3e}");
            checked += 1;
        }

        let path = dir.join("goldens/understanding_batch.safetensors");
        if path.exists() {
            let g = read_goldens(&path);
            let mut items = Vec::new();
            for name in ["single", "text_only"] {
                let messages = conversation(name);
                let images = processor
                    .load_images(&messages, dir.join("goldens"))
                    .unwrap();
                items.push(processor.process_one(&messages, &images).unwrap());
            }
            let batch = processor.batchify(&items).unwrap();
            let ids: Vec<i64> = batch.input_ids.iter().map(|&i| i as i64).collect();
            assert_eq!(ids, g["input_ids"].ints, "batch: input_ids");
            let embeds = model.embed_inputs(&batch).unwrap();
            let err = rel_err(
                &embeds.clone().into_data().try_to_vec::<f32>().unwrap(),
                &g["inputs_embeds"].floats,
            );
            assert!(err <= 1e-4, "batch: inputs_embeds rel err {err:.3e}");
            let t = batch.seq_len;
            let rows: Vec<Vec<bool>> = batch
                .attention_mask
                .chunks(t)
                .map(<[bool]>::to_vec)
                .collect();
            let logits = model
                .language_model
                .forward_embeds(embeds, Some(&rows), None)
                .unwrap();
            let last = logits.slice([0..2, t - 1..t]).reshape([2, vocab]);
            let err = rel_err(
                &last.into_data().try_to_vec::<f32>().unwrap(),
                &g["last_logits"].floats,
            );
            println!("parity_understanding batch last_logits: rel err {err:.3e}");
            assert!(err <= 1e-4, "batch: last_logits rel err {err:.3e}");
            checked += 1;
        }
    }
    assert!(checked > 0, "no fixture has understanding goldens");
}
