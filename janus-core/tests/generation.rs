//! Text-to-image generation on the bundled tiny checkpoint: reproducibility, progress and
//! cancellation, batching, option and input errors, and PNG output.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::module::Param;
use burn::tensor::{Device, Tensor};
use janus_core::janus_llm::LlmError;
use janus_core::janus_vq::VqError;
use janus_core::{
    CfgBatch, GenerationOptions, GenerationProgress, Janus, JanusError, LoadOptions,
    SamplingOptions, save_images, save_png,
};

const PROMPT: &str = "a photo of a red cube on a wooden table";

fn tiny_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-janus")
}

fn janus() -> &'static Janus {
    static JANUS: OnceLock<Janus> = OnceLock::new();
    JANUS.get_or_init(|| Janus::load(tiny_dir(), &LoadOptions::default(), &Device::flex()).unwrap())
}

fn go(_: GenerationProgress) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

fn opts(parallel_size: usize, seed: u64) -> GenerationOptions {
    GenerationOptions::default()
        .with_parallel_size(parallel_size)
        .with_seed(seed)
}

fn sampling(f: impl FnOnce(&mut SamplingOptions)) -> GenerationOptions {
    let mut o = GenerationOptions::default();
    f(&mut o.sampling);
    o
}

fn codes_of(images: &[janus_core::GeneratedImage]) -> Vec<Vec<i64>> {
    images.iter().map(|g| g.codes.clone()).collect()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn defaults_follow_the_reference() {
    let o = GenerationOptions::default();
    assert_eq!(
        (
            o.parallel_size,
            o.cfg_weight,
            o.sampling.temperature,
            o.sampling.top_k,
            o.sampling.top_p
        ),
        (1, 5.0, 1.0, None, None)
    );
    assert_eq!(o.sampling.seed, 42);
    o.validate().unwrap();
}

#[test]
fn code_count_and_grid_come_from_the_config() {
    let j = janus();
    let g = j.config.gen_vision.image_size / j.model.gen_vision_model.downsample_factor();
    assert_eq!(j.image_grid(), (g, g));
    assert_eq!(j.codes_per_image(), g * g);
    let images = j.generate_images(&[PROMPT], &opts(2, 1), go).unwrap();
    assert_eq!(images.len(), 2);
    let size = j.config.gen_vision.image_size as u32;
    for (i, img) in images.iter().enumerate() {
        assert_eq!(img.prompt, 0);
        assert_eq!(img.codes.len(), g * g);
        assert_eq!(img.image.dimensions(), (size, size), "image {i}");
        let k = j.config.gen_vision.codebook_size as i64;
        assert!(img.codes.iter().all(|c| (0..k).contains(c)));
    }
}

#[test]
fn same_seed_same_images_other_seed_other_images() {
    let j = janus();
    let a = j.generate_images(&[PROMPT], &opts(2, 7), go).unwrap();
    let b = j.generate_images(&[PROMPT], &opts(2, 7), go).unwrap();
    let c = j.generate_images(&[PROMPT], &opts(2, 8), go).unwrap();
    assert_eq!(codes_of(&a), codes_of(&b));
    assert_eq!(a, b, "identical codes decode to identical pictures");
    assert_ne!(codes_of(&a), codes_of(&c));
    // The two images of one call are independent draws.
    assert_ne!(a[0].codes, a[1].codes);
}

#[test]
fn progress_is_reported_once_per_code() {
    let j = janus();
    let mut seen = Vec::new();
    j.generate_images(&[PROMPT], &opts(1, 3), |p| {
        seen.push(p);
        ControlFlow::Continue(())
    })
    .unwrap();
    let n = j.codes_per_image();
    assert_eq!(seen.len(), n);
    for (i, p) in seen.iter().enumerate() {
        assert_eq!(
            *p,
            GenerationProgress {
                done: i + 1,
                total: n
            }
        );
    }
}

#[test]
fn cancel_stops_early_and_writes_nothing() {
    let j = janus();
    let out = tempfile::tempdir().unwrap();
    let mut calls = 0;
    let result = j
        .generate_images(&[PROMPT], &opts(2, 3), |p| {
            calls += 1;
            if p.done == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .and_then(|images| {
            let rgb: Vec<_> = images.into_iter().map(|g| g.image).collect();
            save_images(&rgb, out.path(), "img")
        });
    assert!(matches!(result, Err(JanusError::Cancelled)), "{result:?}");
    assert_eq!(calls, 3, "no step after the cancel");
    assert!(entries(out.path()).is_empty());
}

/// Greedy decoding (temperature 0) picks the argmax of the logits that teacher forcing
/// reports for the same codes: sampling and teacher forcing share their steps.
#[test]
fn greedy_codes_are_the_argmax_of_teacher_forced_logits() {
    let j = janus();
    let mut greedy = opts(2, 0);
    greedy.sampling.temperature = 0.0;
    let batch = j
        .generation_batch(&[j.generation_conversation(PROMPT)], 2)
        .unwrap();
    let n = j.codes_per_image();
    let codes = j
        .model
        .generate_image_codes(&batch, n, &greedy, go)
        .unwrap();
    assert_eq!(
        codes[0], codes[1],
        "greedy ignores the seed and the image index"
    );
    let logits = j
        .model
        .teacher_force_image_codes(&batch, &codes, greedy.cfg_weight)
        .unwrap();
    let argmax: Vec<i64> = logits.argmax(2).into_data().iter::<i64>().collect();
    assert_eq!(argmax, codes.concat());

    // top_k 1 keeps only the most likely code: the same as greedy.
    let mut top1 = opts(2, 5);
    top1.sampling.top_k = Some(1);
    assert_eq!(
        j.model.generate_image_codes(&batch, n, &top1, go).unwrap(),
        codes
    );
    // top_p and top_k run.
    let mut nucleus = opts(2, 5);
    nucleus.sampling.top_k = Some(8);
    nucleus.sampling.top_p = Some(0.5);
    j.model
        .generate_image_codes(&batch, n, &nucleus, go)
        .unwrap();
}

#[test]
fn cfg_rows_interleave_and_left_pad() {
    let b = CfgBatch::new(&[vec![0, 5, 6, 9], vec![0, 7, 9]], 2, 1).unwrap();
    assert_eq!((b.rows(), b.images(), b.len), (8, 4, 4));
    let rows: Vec<&[i64]> = b.ids.chunks(4).collect();
    assert_eq!(rows[0], [0, 5, 6, 9]);
    assert_eq!(rows[1], [0, 1, 1, 9]);
    assert_eq!(rows[2], [0, 5, 6, 9]);
    assert_eq!(rows[3], [0, 1, 1, 9]);
    assert_eq!(rows[4], [1, 0, 7, 9]);
    assert_eq!(rows[5], [1, 0, 1, 9]);
    let mask = b.padding.as_ref().unwrap();
    assert_eq!(mask[0], [true; 4]);
    assert_eq!(mask[5], [false, true, true, true]);
    let same = CfgBatch::new(&[vec![0, 5, 9], vec![0, 7, 9]], 1, 1).unwrap();
    assert!(same.padding.is_none());
}

/// A prompt batched (left-padded) with a longer one gets the same guided logits as alone.
#[test]
fn batched_prompts_match_single_prompts() {
    let j = janus();
    let short = j.generation_conversation("a cat");
    let long = j.generation_conversation(PROMPT);
    let n = j.codes_per_image();
    let single = j.generation_batch(std::slice::from_ref(&short), 1).unwrap();
    let codes = j
        .model
        .generate_image_codes(&single, n, &opts(1, 11), go)
        .unwrap();
    let batched = j.generation_batch(&[long, short], 1).unwrap();
    assert!(batched.padding.is_some());
    let alone = j
        .model
        .teacher_force_image_codes(&single, &codes, 5.0)
        .unwrap();
    let other = j
        .model
        .generate_image_codes(
            &j.generation_batch(&[j.generation_conversation(PROMPT)], 1)
                .unwrap(),
            n,
            &opts(1, 12),
            go,
        )
        .unwrap();
    let together = j
        .model
        .teacher_force_image_codes(&batched, &[other[0].clone(), codes[0].clone()], 5.0)
        .unwrap();
    let k = alone.dims()[2];
    let row = together.slice([1..2, 0..n, 0..k]);
    let diff = (row - alone.clone()).abs().max().into_scalar::<f32>();
    let scale = alone.abs().max().into_scalar::<f32>();
    assert!(diff <= 1e-4 * scale, "diff {diff} (scale {scale})");

    // Several prompts in one call: images come back prompt by prompt.
    let images = j
        .generate_images(&[PROMPT, "a cat"], &opts(2, 4), go)
        .unwrap();
    let prompts: Vec<usize> = images.iter().map(|g| g.prompt).collect();
    assert_eq!(prompts, [0, 0, 1, 1]);
}

#[test]
fn invalid_options_are_typed_errors() {
    let j = janus();
    let bad = [
        GenerationOptions {
            parallel_size: 0,
            ..Default::default()
        },
        GenerationOptions {
            cfg_weight: -1.0,
            ..Default::default()
        },
        GenerationOptions {
            cfg_weight: f64::NAN,
            ..Default::default()
        },
        GenerationOptions {
            cfg_weight: f64::INFINITY,
            ..Default::default()
        },
        sampling(|o| o.temperature = -0.5),
        sampling(|o| o.temperature = f64::NAN),
        sampling(|o| o.top_p = Some(0.0)),
        sampling(|o| o.top_p = Some(1.5)),
        sampling(|o| o.top_p = Some(f64::NAN)),
        sampling(|o| o.top_k = Some(0)),
    ];
    for o in bad {
        let mut calls = 0;
        let r = j.generate_images(&[PROMPT], &o, |_| {
            calls += 1;
            ControlFlow::Continue(())
        });
        assert!(
            matches!(
                r,
                Err(JanusError::InvalidOption(_)
                    | JanusError::Llm(
                        LlmError::InvalidTemperature(_)
                            | LlmError::InvalidTopK
                            | LlmError::InvalidTopP(_)
                    ))
            ),
            "{o:?}: {r:?}"
        );
        assert_eq!(calls, 0, "rejected before any step");
    }
    // Boundary values are fine.
    let mut edge = GenerationOptions::default().with_cfg_weight(0.0);
    edge.sampling.temperature = 0.0;
    edge.sampling.top_p = Some(1.0);
    edge.validate().unwrap();
}

#[test]
fn empty_prompts_are_rejected() {
    let j = janus();
    for prompts in [vec![""], vec![PROMPT, "  \n"]] {
        let r = j.generate_images(&prompts, &opts(1, 0), go);
        let index = prompts.len() - 1;
        assert!(
            matches!(r, Err(JanusError::EmptyPrompt { index: i }) if i == index),
            "{r:?}"
        );
    }
    let none: [&str; 0] = [];
    assert!(matches!(
        j.generate_images(&none, &opts(1, 0), go),
        Err(JanusError::InvalidOption(_))
    ));
    assert!(matches!(
        CfgBatch::new(&[vec![]], 1, 0),
        Err(JanusError::EmptyPrompt { index: 0 })
    ));
}

#[test]
fn codes_outside_the_codebook_are_rejected() {
    let j = janus();
    let n = j.codes_per_image();
    let k = j.config.gen_vision.codebook_size as i64;
    for bad in [k, -1] {
        let mut codes = vec![0i64; n];
        codes[n / 2] = bad;
        let r = j.model.decode_image_codes(&[codes.clone()], j.image_grid());
        assert!(
            matches!(r, Err(JanusError::Vq(VqError::CodeOutOfRange { code, .. })) if code == bad),
            "{r:?}"
        );
        let batch = j
            .generation_batch(&[j.generation_conversation(PROMPT)], 1)
            .unwrap();
        let r = j.model.teacher_force_image_codes(&batch, &[codes], 5.0);
        assert!(
            matches!(r, Err(JanusError::Vq(VqError::CodeOutOfRange { .. }))),
            "{r:?}"
        );
    }
    // Wrong number of codes for the grid.
    let r = j
        .model
        .decode_image_codes(&[vec![0; n - 1]], j.image_grid());
    assert!(
        matches!(r, Err(JanusError::Vq(VqError::GridMismatch { .. }))),
        "{r:?}"
    );
}

#[test]
fn prompt_and_codes_must_fit_the_context() {
    let j = janus();
    let max = j.config.language.max_position_embeddings;
    let batch = CfgBatch::new(&[vec![0; max]], 1, 0).unwrap();
    let r = j
        .model
        .generate_image_codes(&batch, j.codes_per_image(), &opts(1, 0), go);
    assert!(
        matches!(r, Err(JanusError::Llm(LlmError::ContextTooLong { .. }))),
        "{r:?}"
    );
    let batch = CfgBatch::new(&[vec![0, 5, 9]], 2, 1).unwrap();
    let r = j.model.generate_image_codes(&batch, 4, &opts(1, 0), go);
    assert!(
        matches!(r, Err(JanusError::InvalidOption(_))),
        "parallel mismatch: {r:?}"
    );
}

#[test]
fn nan_logits_are_an_error_not_a_picture() {
    let mut j = Janus::load(tiny_dir(), &LoadOptions::default(), &Device::flex()).unwrap();
    let head = &mut j.model.gen_head.vision_head;
    let k = head.weight.shape()[1];
    let device = head.weight.val().device();
    head.bias = Some(Param::from_tensor(Tensor::full([k], f32::NAN, &device)));
    let r = j.generate_images(&[PROMPT], &opts(1, 0), go);
    assert!(
        matches!(r, Err(JanusError::Llm(LlmError::NonFiniteLogits { .. }))),
        "{r:?}"
    );
}

#[test]
fn png_round_trip() {
    let j = janus();
    let images: Vec<_> = j
        .generate_images(&[PROMPT], &opts(2, 9), go)
        .unwrap()
        .into_iter()
        .map(|g| g.image)
        .collect();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("nested/out");
    let paths = save_images(&images, &dir, "cube").unwrap();
    assert_eq!(paths, [dir.join("cube_0.png"), dir.join("cube_1.png")]);
    assert_eq!(
        entries(&dir),
        ["cube_0.png", "cube_1.png"],
        "no temporary file left"
    );
    for (path, image) in paths.iter().zip(&images) {
        let back = image::open(path).unwrap().to_rgb8();
        assert_eq!(&back, image);
    }
    // Overwriting replaces the file whole.
    save_png(&images[1], &paths[0]).unwrap();
    assert_eq!(image::open(&paths[0]).unwrap().to_rgb8(), images[1]);
    assert_eq!(entries(&dir).len(), 2);
    assert!(matches!(
        save_images(&images, &dir, "a/b"),
        Err(JanusError::InvalidOption(_))
    ));
}

#[test]
fn unwritable_output_is_a_typed_error_and_leaves_nothing() {
    let j = janus();
    let images: Vec<_> = j
        .generate_images(&[PROMPT], &opts(1, 2), go)
        .unwrap()
        .into_iter()
        .map(|g| g.image)
        .collect();
    let out = tempfile::tempdir().unwrap();
    // A regular file where a directory should be: unwritable even for root.
    let blocker = out.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let r = save_images(&images, blocker.join("sub"), "img");
    assert!(matches!(r, Err(JanusError::Output { .. })), "{r:?}");
    let r = save_png(&images[0], blocker.join("img.png"));
    assert!(matches!(r, Err(JanusError::Output { .. })), "{r:?}");
    assert_eq!(entries(out.path()), ["not-a-dir"]);

    // A read-only directory (skipped when running as root, which may write anyway).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ro = out.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        if std::fs::write(ro.join("probe"), b"").is_err() {
            let r = save_images(&images, &ro, "img");
            assert!(matches!(r, Err(JanusError::Output { .. })), "{r:?}");
            assert!(entries(&ro).is_empty());
        }
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn generated_image_saves_itself_and_encodes_to_png_bytes() {
    let j = janus();
    let generated = j.generate_images(&[PROMPT], &opts(1, 3), go).unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("one.png");
    generated[0].save(&path).unwrap();
    assert_eq!(entries(out.path()), ["one.png"], "no temporary file left");
    assert_eq!(image::open(&path).unwrap().to_rgb8(), generated[0].image);
    let bytes = generated[0].png_bytes().unwrap();
    assert_eq!(bytes, std::fs::read(&path).unwrap());
    let r = generated[0].save(out.path().join("missing/dir/x.png"));
    assert!(matches!(r, Err(JanusError::Output { .. })), "{r:?}");
}

/// A model directory's `generation_config.json` sets the defaults a program starts from; the
/// tiny fixture has none, the shipped shapes model recommends CFG weight 3.
#[test]
fn generation_config_of_a_model_directory_sets_the_defaults() {
    let j = janus();
    assert_eq!(j.generation_options(), GenerationOptions::default());
    assert_eq!(j.answer_options(), janus_core::AnswerOptions::default());
    let shapes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/shapes-janus");
    let config = janus_core::GenerationConfig::from_dir(&shapes).unwrap();
    assert_eq!(config.generation_options().cfg_weight, 3.0);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("generation_config.json"),
        r#"{"image": {"cfg_weight": "high"}}"#,
    )
    .unwrap();
    match janus_core::GenerationConfig::from_dir(dir.path()) {
        Err(JanusError::Config { path, message }) => {
            assert_eq!(
                path.as_deref(),
                Some(dir.path().join("generation_config.json").as_path())
            );
            assert!(message.contains("image"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
