//! Processor parity against the reference goldens of every fixture model directory.
//!
//! Model directories (those holding `config.json`) are found under `$JANUS_FIXTURES`, or under
//! the project's `tests/fixtures` when it is unset. Each one's `goldens/cases.json` gives the
//! templated strings and ids; `goldens/understanding_*.safetensors` the processor tensors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use janus_core::processor::{
    BatchedInputs, Message, PreparedInput, Processor, ProcessorError, RgbImage, SYSTEM_PROMPT,
    apply_sft_template, load_image, resize::resize_bicubic,
};
use janus_testutil::{Golden, model_dirs, read_goldens};
use serde_json::Value;

fn cases(dir: &Path) -> Option<Value> {
    let path = dir.join("goldens/cases.json");
    let text = std::fs::read_to_string(path).ok()?;
    Some(serde_json::from_str(&text).expect("cases.json parses"))
}

fn conversation(case: &Value) -> Vec<Message> {
    serde_json::from_value(case["conversation"].clone()).expect("conversation parses")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// A golden tensor as (shape, values widened to f64).
fn golden(goldens: &BTreeMap<String, Golden>, name: &str) -> (Vec<usize>, Vec<f64>) {
    let g = goldens
        .get(name)
        .unwrap_or_else(|| panic!("golden has {name}"));
    (g.shape.clone(), g.to_f64())
}

fn as_f64<T: Copy + Into<f64>>(v: &[T]) -> Vec<f64> {
    v.iter().map(|&x| x.into()).collect()
}

fn bools(v: &[bool]) -> Vec<f64> {
    v.iter().map(|&b| f64::from(u8::from(b))).collect()
}

/// Compares a processed batch with a golden file: ids and masks exactly, pixels within one
/// 8-bit step and identical on at least 99% of values. Returns (max diff in steps, share equal).
fn check_batch(batch: &BatchedInputs, processor: &Processor, file: &Path) -> (f64, f64) {
    let goldens = read_goldens(file);
    let (b, t, n, s, k) = (
        batch.batch_size,
        batch.seq_len,
        batch.max_images,
        batch.image_size,
        batch.num_image_tokens,
    );
    let exact: [(&str, Vec<usize>, Vec<f64>); 4] = [
        ("input_ids", vec![b, t], as_f64(&batch.input_ids)),
        ("attention_mask", vec![b, t], bools(&batch.attention_mask)),
        ("images_seq_mask", vec![b, t], bools(&batch.images_seq_mask)),
        (
            "images_emb_mask",
            vec![b, n, k],
            bools(&batch.images_emb_mask),
        ),
    ];
    for (name, shape, ours) in exact {
        let (g_shape, g) = golden(&goldens, name);
        assert_eq!(g_shape, shape, "{}: {name} shape", file.display());
        assert_eq!(g, ours, "{}: {name}", file.display());
    }

    let (g_shape, g) = golden(&goldens, "pixel_values");
    assert_eq!(
        g_shape,
        vec![b, n, 3, s, s],
        "{}: pixel_values shape",
        file.display()
    );
    let cfg = processor.image_processor().config();
    let step = if cfg.do_normalize {
        cfg.rescale_factor / cfg.image_std.iter().cloned().fold(f64::INFINITY, f64::min)
    } else {
        cfg.rescale_factor
    };
    let mut max_diff = 0f64;
    let mut equal = 0usize;
    for (&ours, &theirs) in batch.pixel_values.iter().zip(&g) {
        let d = (f64::from(ours) - theirs).abs();
        max_diff = max_diff.max(d);
        equal += usize::from(d == 0.0);
    }
    let share = equal as f64 / g.len() as f64;
    eprintln!(
        "{}: pixel max |diff| = {max_diff:e} ({:.3} steps), identical {:.4}%",
        file.display(),
        max_diff / step,
        share * 100.0
    );
    assert!(
        max_diff <= step * (1.0 + 1e-4),
        "{}: pixel diff {max_diff} exceeds one step {step}",
        file.display()
    );
    assert!(share >= 0.99, "{}: only {share} identical", file.display());
    (max_diff / step, share)
}

fn prepare(processor: &Processor, dir: &Path, case: &Value) -> PreparedInput {
    let conv = conversation(case);
    let images = processor
        .load_images(&conv, dir.join("goldens"))
        .expect("images load");
    processor.process_one(&conv, &images).expect("processes")
}

#[test]
fn special_tokens_match_cases() {
    for dir in model_dirs() {
        let Some(cases) = cases(&dir) else { continue };
        let p = Processor::from_dir(&dir).unwrap();
        let s = p.special_tokens();
        let want = &cases["special_ids"];
        for (key, got) in [
            ("bos", s.bos),
            ("eos", s.eos),
            ("pad", s.pad),
            ("image", s.image),
            ("boi", s.image_start),
            ("eoi", s.image_end),
        ] {
            if let Some(w) = want[key].as_u64() {
                assert_eq!(u64::from(got), w, "{}: {key}", dir.display());
            }
        }
    }
}

#[test]
fn understanding_templates_and_ids_match_cases() {
    let mut checked = 0;
    for dir in model_dirs() {
        let Some(cases) = cases(&dir) else { continue };
        let p = Processor::from_dir(&dir).unwrap();
        for (name, case) in cases["understanding"].as_object().unwrap() {
            let conv = conversation(case);
            let prompt = p.understanding_prompt(&conv).unwrap();
            assert_eq!(prompt, case["sft_format"].as_str().unwrap(), "{name}");
            assert_eq!(
                p.encode(&prompt).unwrap(),
                ids(&case["prompt_ids"]),
                "{name}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
}

#[test]
fn generation_prompt_matches_cases() {
    for dir in model_dirs() {
        let Some(cases) = cases(&dir) else { continue };
        let p = Processor::from_dir(&dir).unwrap();
        let gen_case = &cases["generation"];
        let conv = conversation(gen_case);
        let prompt = p.generation_prompt(&conv).unwrap();
        assert_eq!(prompt, gen_case["prompt"].as_str().unwrap());
        let got = p.generation_prompt_ids(&conv).unwrap();
        assert_eq!(got, ids(&gen_case["prompt_ids"]));
        assert_eq!(got.first(), Some(&p.special_tokens().bos));
        assert_eq!(got.last(), Some(&p.special_tokens().image_start));
        if let Some(train_prompt) = cases["train"]["generation_prompt"].as_str() {
            assert_eq!(prompt, train_prompt);
        }
    }
}

#[test]
fn train_conversation_template() {
    for dir in model_dirs() {
        let Some(cases) = cases(&dir) else { continue };
        let Some(train) = cases.get("train") else {
            continue;
        };
        let conv = conversation(train);
        let prompt = apply_sft_template(&conv, SYSTEM_PROMPT).unwrap();
        // A filled assistant turn ends with the EOS text (odd-index separator).
        assert!(prompt.ends_with("<｜end▁of▁sentence｜>"), "{prompt}");
        let answer = conv[1].content.trim();
        assert!(prompt.contains(&format!("{}: {answer}", conv[1].role)));
    }
}

#[test]
fn understanding_tensors_match_goldens() {
    let mut checked = 0;
    for dir in model_dirs() {
        let Some(cases) = cases(&dir) else { continue };
        let p = Processor::from_dir(&dir).unwrap();
        for (name, case) in cases["understanding"].as_object().unwrap() {
            let file = dir.join(format!("goldens/understanding_{name}.safetensors"));
            if !file.is_file() {
                continue;
            }
            let prepared = prepare(&p, &dir, case);
            let n_placeholders = case["sft_format"]
                .as_str()
                .unwrap()
                .matches(p.config().image_tag.as_str())
                .count();
            assert_eq!(prepared.num_images, n_placeholders);
            let batch = p.batchify(&[prepared]).unwrap();
            check_batch(&batch, &p, &file);
            checked += 1;
        }
    }
    assert!(checked > 0);
}

#[test]
fn batched_understanding_matches_golden() {
    let mut checked = 0;
    for dir in model_dirs() {
        let file = dir.join("goldens/understanding_batch.safetensors");
        let Some(cases) = cases(&dir) else { continue };
        if !file.is_file() {
            continue;
        }
        let p = Processor::from_dir(&dir).unwrap();
        // The batch golden is (conversation with an image, text-only conversation).
        let und = &cases["understanding"];
        let rows = [
            prepare(&p, &dir, &und["single"]),
            prepare(&p, &dir, &und["text_only"]),
        ];
        let batch = p.batchify(&rows).unwrap();
        assert_eq!(batch.images_per_row, vec![1, 0]);
        check_batch(&batch, &p, &file);
        checked += 1;
    }
    assert!(checked > 0);
}

#[test]
fn batch_tensors_have_reference_shapes() {
    let dir = &model_dirs()[0];
    let p = Processor::from_dir(dir).unwrap();
    let conv = vec![
        Message::new("User", "<image_placeholder>\nhi").with_image("scene.png"),
        Message::new("Assistant", ""),
    ];
    let images = p.load_images(&conv, dir.join("goldens")).unwrap();
    let one = p.process_one(&conv, &images).unwrap();
    let text = p
        .process_one(
            &[Message::new("User", "text"), Message::new("Assistant", "")],
            &[],
        )
        .unwrap();
    let batch = p.batchify(&[text.clone(), one.clone()]).unwrap();
    let device = burn::tensor::Device::flex();
    let t = batch.to_tensors(&device);
    let (b, len, s, n) = (
        2,
        one.len(),
        p.image_processor().image_size(),
        p.config().num_image_tokens,
    );
    assert_eq!(t.input_ids.dims(), [b, len]);
    assert_eq!(t.attention_mask.dims(), [b, len]);
    assert_eq!(t.images_seq_mask.dims(), [b, len]);
    assert_eq!(t.images_emb_mask.dims(), [b, 1, n]);
    assert_eq!(t.pixel_values.dims(), [b, 1, 3, s, s]);

    let ids: Vec<i64> = t.input_ids.into_data().try_into_vec_as::<i64>().unwrap();
    let pad = i64::from(p.special_tokens().pad);
    let text_pad = len - text.len();
    assert!(ids[..text_pad].iter().all(|&x| x == pad), "left padding");
    assert_eq!(ids[text_pad], i64::from(p.special_tokens().bos));
    let mask: Vec<i64> = t
        .attention_mask
        .into_data()
        .try_into_vec_as::<i64>()
        .unwrap();
    assert_eq!(mask.iter().sum::<i64>() as usize, text.len() + one.len());
    let seq: Vec<bool> = t
        .images_seq_mask
        .into_data()
        .try_into_vec_as::<bool>()
        .unwrap();
    assert_eq!(seq.iter().filter(|&&x| x).count(), n);
    let emb: Vec<bool> = t
        .images_emb_mask
        .into_data()
        .try_into_vec_as::<bool>()
        .unwrap();
    assert_eq!(
        &emb[..n],
        vec![false; n].as_slice(),
        "text row has no image"
    );
    assert!(emb[n..].iter().all(|&x| x));
    let px: Vec<f32> = t.pixel_values.into_data().try_into_vec_as::<f32>().unwrap();
    assert!(px[..3 * s * s].iter().all(|&x| x == 0.0));
    assert_eq!(&px[3 * s * s..], one.pixel_values.as_slice());

    let pos = batch.position_ids();
    assert_eq!(pos[text_pad], 0);
    assert_eq!(pos[len - 1] as usize, text.len() - 1);
    assert_eq!(pos[2 * len - 1] as usize, one.len() - 1);
}

#[test]
fn image_expansion_layout() {
    let dir = &model_dirs()[0];
    let p = Processor::from_dir(dir).unwrap();
    let s = p.special_tokens();
    let n = p.config().num_image_tokens;
    let out = p.expand_image_tokens(&[s.bos, 5, s.image, 6], 1).unwrap();
    let mut want = vec![s.bos, 5, s.image_start];
    want.extend(std::iter::repeat_n(s.image, n));
    want.extend([s.image_end, 6]);
    assert_eq!(out, want);
}

#[test]
fn placeholder_image_count_mismatch_is_an_error() {
    let dir = &model_dirs()[0];
    let p = Processor::from_dir(dir).unwrap();
    let img = load_image(dir.join("goldens/scene.png")).unwrap();
    let with_placeholder = [
        Message::new("User", "<image_placeholder>\n<image_placeholder>\nCompare."),
        Message::new("Assistant", ""),
    ];
    let err = p
        .process_one(&with_placeholder, std::slice::from_ref(&img))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProcessorError::ImageCountMismatch {
                placeholders: 2,
                images: 1
            }
        ),
        "{err}"
    );
    let text_only = [
        Message::new("User", "No image here."),
        Message::new("Assistant", ""),
    ];
    let err = p.process_one(&text_only, &[img]).unwrap_err();
    assert!(
        matches!(
            err,
            ProcessorError::ImageCountMismatch {
                placeholders: 0,
                images: 1
            }
        ),
        "{err}"
    );
}

#[test]
fn empty_conversation_is_an_error() {
    let p = Processor::from_dir(&model_dirs()[0]).unwrap();
    assert!(matches!(
        p.process_one(&[], &[]),
        Err(ProcessorError::EmptyConversation)
    ));
    assert!(matches!(
        p.generation_prompt(&[]),
        Err(ProcessorError::EmptyConversation)
    ));
    assert!(matches!(p.batchify(&[]), Err(ProcessorError::EmptyBatch)));
}

#[test]
fn too_long_prompt_is_an_error() {
    let p = Processor::from_dir(&model_dirs()[0])
        .unwrap()
        .with_max_len(8);
    let conv = [
        Message::new("User", "a fairly long prompt that exceeds eight tokens"),
        Message::new("Assistant", ""),
    ];
    let err = p.process_one(&conv, &[]).unwrap_err();
    assert!(
        matches!(err, ProcessorError::PromptTooLong { max_len: 8, .. }),
        "{err}"
    );
    let err = p.generation_prompt_ids(&conv).unwrap_err();
    assert!(
        matches!(err, ProcessorError::PromptTooLong { max_len: 8, .. }),
        "{err}"
    );
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("janus-processor-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn unreadable_images_are_errors_naming_the_file() {
    let tmp = TempDir::new("images");
    let text = tmp.0.join("notes.png");
    std::fs::write(&text, "this is not an image").unwrap();
    let err = load_image(&text).unwrap_err();
    assert!(matches!(err, ProcessorError::ImageDecode { .. }), "{err}");
    assert!(err.to_string().contains("notes.png"), "{err}");

    let png = std::fs::read(model_dirs()[0].join("goldens/scene.png")).unwrap();
    let truncated = tmp.0.join("truncated.png");
    std::fs::write(&truncated, &png[..png.len() / 2]).unwrap();
    let err = load_image(&truncated).unwrap_err();
    assert!(err.to_string().contains("truncated.png"), "{err}");

    let missing = tmp.0.join("missing.png");
    let err = load_image(&missing).unwrap_err();
    assert!(matches!(err, ProcessorError::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing.png"), "{err}");
}

#[test]
fn malformed_json_names_file_and_position() {
    let src = &model_dirs()[0];
    for (file, corrupt) in [
        (
            "processor_config.json",
            "{\n  \"image_tag\": \"<image_placeholder>\",\n  oops\n}",
        ),
        (
            "preprocessor_config.json",
            "{\n  \"image_size\": 32,\n  \"min_size\": ]\n}",
        ),
        (
            "tokenizer.json",
            "{\n  \"version\": \"1.0\",\n  \"truncation\": ]\n}",
        ),
    ] {
        let tmp = TempDir::new(file.trim_end_matches(".json"));
        for entry in std::fs::read_dir(src).unwrap().flatten() {
            if entry.path().is_file() {
                std::fs::copy(entry.path(), tmp.0.join(entry.file_name())).unwrap();
            }
        }
        std::fs::write(tmp.0.join(file), corrupt).unwrap();
        let err = Processor::from_dir(&tmp.0).unwrap_err();
        match &err {
            ProcessorError::Json {
                path, line, column, ..
            } => {
                assert!(path.ends_with(file), "{err}");
                assert_eq!(*line, 3, "{err}");
                assert!(*column > 0, "{err}");
            }
            other => panic!("{file}: expected a JSON error, got {other}"),
        }
        assert!(err.to_string().contains(file), "{err}");
    }
}

#[test]
fn missing_preprocessor_config_is_an_error() {
    let src = &model_dirs()[0];
    let tmp = TempDir::new("missing");
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "processor_config.json",
    ] {
        std::fs::copy(src.join(name), tmp.0.join(name)).unwrap();
    }
    let err = Processor::from_dir(&tmp.0).unwrap_err();
    assert!(matches!(err, ProcessorError::Io { .. }), "{err}");
    assert!(
        err.to_string().contains("preprocessor_config.json"),
        "{err}"
    );
}

#[test]
fn thin_and_tiny_images_are_processed() {
    let p = Processor::from_dir(&model_dirs()[0]).unwrap();
    let ip = p.image_processor();
    let s = ip.image_size();
    let min = ip.config().min_size;
    // 1×N: the short side is stretched to min_size, as in the reference.
    assert_eq!(ip.target_size(1, 1000).unwrap(), (min, s));
    assert_eq!(ip.target_size(1000, 1).unwrap(), (s, min));
    let thin = RgbImage::from_pixel(1, 97, image::Rgb([200, 10, 30]));
    let out = ip.preprocess(&thin).unwrap();
    assert_eq!(out.len(), 3 * s * s);
    let tiny = RgbImage::from_pixel(1, 1, image::Rgb([255, 255, 255]));
    let canvas = ip.resize_and_pad(&tiny).unwrap();
    assert_eq!(canvas.dimensions(), (s as u32, s as u32));
    assert!(canvas.pixels().all(|px| px.0 == [255, 255, 255]));
    assert!(matches!(
        ip.target_size(0, 5),
        Err(ProcessorError::InvalidImageSize { .. })
    ));
}

#[test]
fn padding_is_centred_with_background() {
    let p = Processor::from_dir(&model_dirs()[0]).unwrap();
    let ip = p.image_processor();
    let s = ip.image_size() as u32;
    let bg = ip.config().background_color;
    // Wide image: resized to s × s/2, pasted at y = (s − s/2) / 2.
    let wide = RgbImage::from_pixel(2 * s, s, image::Rgb([0, 0, 0]));
    let canvas = ip.resize_and_pad(&wide).unwrap();
    let h = s / 2;
    let top = (s - h) / 2;
    for y in 0..s {
        let want = if (top..top + h).contains(&y) {
            [0, 0, 0]
        } else {
            bg
        };
        assert_eq!(canvas.get_pixel(s / 2, y).0, want, "row {y}");
    }
    // Tall image: pasted at x = (s − w) / 2.
    let tall = RgbImage::from_pixel(s, 2 * s, image::Rgb([9, 9, 9]));
    let canvas = ip.resize_and_pad(&tall).unwrap();
    assert_eq!(canvas.get_pixel(top - 1, s / 2).0, bg);
    assert_eq!(canvas.get_pixel(top, s / 2).0, [9, 9, 9]);
    assert_eq!(canvas.get_pixel(top + h - 1, s / 2).0, [9, 9, 9]);
    assert_eq!(canvas.get_pixel(top + h, s / 2).0, bg);
}

#[test]
fn resampler_identity_is_unchanged() {
    let src: Vec<u8> = (0..7 * 5 * 3).map(|i| (i * 37 % 256) as u8).collect();
    assert_eq!(resize_bicubic(&src, 7, 5, 3, 7, 5), src);
}

#[test]
fn resampler_known_values() {
    // 2 → 1 horizontally: support widens to 4, both taps weigh 0.5 → (0 + 255)/2 rounded = 128.
    assert_eq!(resize_bicubic(&[0, 255], 2, 1, 1, 1, 1), vec![128]);
    // A constant image stays constant under any resize (weights sum to one).
    let flat = vec![77u8; 13 * 9 * 3];
    assert!(
        resize_bicubic(&flat, 13, 9, 3, 5, 21)
            .iter()
            .all(|&v| v == 77)
    );
    // 2 → 4 upscaling of a step, worked by hand from Pillow's arithmetic: the outer pixels
    // overshoot (−8.8 and 108.8), and the negative one is clamped to 0 rather than wrapped.
    assert_eq!(
        resize_bicubic(&[0, 100], 2, 1, 1, 4, 1),
        vec![0, 21, 79, 109]
    );
    // The vertical pass matches the horizontal one on the transposed input.
    assert_eq!(
        resize_bicubic(&[0, 100], 1, 2, 1, 1, 4),
        vec![0, 21, 79, 109]
    );
}

#[test]
fn golden_images_decode_to_expected_sizes() {
    for dir in model_dirs() {
        for (name, size) in [("scene.png", (257, 181)), ("banner.png", (420, 60))] {
            let path = dir.join("goldens").join(name);
            if path.is_file() && dir.ends_with("tiny-janus") {
                assert_eq!(load_image(&path).unwrap().dimensions(), size);
            }
        }
    }
}

#[test]
fn decode_skips_special_tokens() {
    let p = Processor::from_dir(&model_dirs()[0]).unwrap();
    let ids = p.encode("User: hello").unwrap();
    assert_eq!(ids[0], p.special_tokens().bos);
    assert_eq!(p.decode(&ids).unwrap(), "User: hello");
}
