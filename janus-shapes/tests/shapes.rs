//! The shipped shapes model (`models/shapes-janus`, trained from scratch by
//! `janus-shapes build`) understands and draws: exact answers on fresh images, generated
//! images that a colour-and-fill judge recognises — and the judge itself is checked on real
//! shapes first. Everything is seeded; the images are fresh (seeds the recipe never used).
//!
//! `SHAPES_JANUS_MODEL=<dir>` points the tests at another model directory, e.g. one rebuilt by
//! the recipe, to check that it passes the same bar.

use std::ops::ControlFlow;
use std::path::PathBuf;

use burn::tensor::Device;
use janus_core::processor::RgbImage;
use janus_core::{AnswerOptions, GenerationOptions, Janus, LoadOptions, SamplingOptions};
use janus_shapes::{Label, ShapeGenerator};

fn shipped_model() -> PathBuf {
    match std::env::var_os("SHAPES_JANUS_MODEL") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/shapes-janus"),
    }
}

fn load() -> Janus {
    Janus::load(shipped_model(), &LoadOptions::default(), &Device::flex())
        .expect("models/shapes-janus loads")
}

/// What the judge reads in an image: [`janus_shapes::judge`] — the background is the
/// median colour of the image's outer frame, the shape the largest connected group of pixels
/// that differ from it, its colour the majority of their nearest palette colours, and its fill
/// ratio (pixels / bounding-box area) tells a triangle (≈ 1/2) from a circle (≈ π/4) from a
/// square (≈ 1). `judge_recognises_real_shapes` checks it on drawn shapes first.
fn judge(image: &RgbImage) -> Option<Label> {
    janus_shapes::judge(image).map(|j| j.label())
}

#[test]
fn tokenizer_round_trips_every_caption_and_answer() {
    let processor =
        janus_core::processor::Processor::from_dir(shipped_model()).expect("processor files");
    let mut texts: Vec<String> = Label::all()
        .into_iter()
        .flat_map(|l| [l.caption(), l.answer(), format!(" {}", l.answer())])
        .collect();
    texts.push("What is in the image?".into());
    for text in texts {
        let ids = processor.encode(&text).expect("encodes");
        assert_eq!(processor.decode(&ids).expect("decodes"), text);
    }
}

#[test]
fn judge_recognises_real_shapes() {
    let mut shapes = ShapeGenerator::new(32, 2024);
    let n = 600;
    let mut wrong = Vec::new();
    for _ in 0..n {
        let s = shapes.sample();
        let seen = judge(&s.render());
        if seen != Some(s.label()) {
            wrong.push((s, seen));
        }
    }
    let right = n - wrong.len();
    println!("judge: {right}/{n} real shapes right");
    assert!(
        right as f64 >= 0.99 * n as f64,
        "judge right on {right}/{n}: {wrong:?}"
    );
}

#[test]
fn shipped_model_understands_fresh_images() {
    let janus = load();
    let mut shapes = ShapeGenerator::new(32, 777);
    let samples: Vec<_> = (0..48).map(|_| shapes.sample()).collect();
    let options = AnswerOptions {
        max_new_tokens: 16,
        sampling: SamplingOptions::greedy(),
        stop_strings: Vec::new(),
    };
    let conversations: Vec<_> = samples
        .iter()
        .map(|s| {
            (
                janus.processor.question("What is in the image?", 1),
                vec![s.render()],
            )
        })
        .collect();
    let mut right = 0;
    let mut wrong = Vec::new();
    for chunk in conversations.chunks(16).zip(samples.chunks(16)) {
        let answers = janus
            .answer_batch(chunk.0, &options, |_, _| ControlFlow::Continue(()))
            .expect("answers");
        for (answer, sample) in answers.iter().zip(chunk.1) {
            let expected = sample.label().answer();
            if answer.text.trim() == expected {
                right += 1;
            } else {
                wrong.push((expected, answer.text.clone()));
            }
        }
    }
    println!("understanding: {right}/48 exactly right; wrong: {wrong:?}");
    assert!(right >= 44, "only {right}/48 exactly right: {wrong:?}");
}

#[test]
fn shipped_model_draws_what_it_is_asked() {
    let janus = load();
    let labels = Label::all();
    let captions: Vec<String> = labels.iter().map(|l| l.caption()).collect();
    let options = GenerationOptions::default()
        .with_parallel_size(2)
        .with_cfg_weight(3.0)
        .with_seed(31);
    let images = janus
        .generate_images(&captions, &options, |_| ControlFlow::Continue(()))
        .expect("images");
    assert_eq!(images.len(), 24);
    let mut right = 0;
    let mut wrong = Vec::new();
    for image in &images {
        let want = labels[image.prompt];
        let seen = judge(&image.image);
        if seen == Some(want) {
            right += 1;
        } else {
            wrong.push((want.caption(), seen.map(|l| l.caption())));
        }
    }
    println!("generation: {right}/24 judged right; wrong: {wrong:?}");
    assert!(right >= 22, "only {right}/24 judged right: {wrong:?}");
}
