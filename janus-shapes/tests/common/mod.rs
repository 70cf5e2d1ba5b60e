//! The shipped shapes model and the judge's two scores, shared by `shapes.rs` (f32) and
//! `quant.rs` (each quantised tier), so both hold the same bar on the same fresh samples.

use std::ops::ControlFlow;
use std::path::PathBuf;

use burn::tensor::Device;
use janus_core::{
    AnswerOptions, GenerationOptions, Janus, LoadOptions, QuantScheme, SamplingOptions,
};
use janus_shapes::{Label, ShapeGenerator};

/// Exact answers out of [`UNDERSTANDING_SAMPLES`] the model must give.
pub const UNDERSTANDING_BAR: usize = 44;
/// Fresh images asked about.
pub const UNDERSTANDING_SAMPLES: usize = 48;
/// Judged-right images out of 24 (two per caption) the model must draw.
pub const GENERATION_BAR: usize = 22;

/// `models/shapes-janus`, or `SHAPES_JANUS_MODEL`.
pub fn shipped_model() -> PathBuf {
    match std::env::var_os("SHAPES_JANUS_MODEL") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/shapes-janus"),
    }
}

/// The shipped model in f32, or with its language model quantised to `quant`.
pub fn load(quant: Option<QuantScheme>) -> Janus {
    let options = LoadOptions::default().with_quant(quant);
    Janus::load(shipped_model(), &options, &Device::flex()).expect("models/shapes-janus loads")
}

/// What the judge reads in an image: [`janus_shapes::judge`] — the background is the
/// median colour of the image's outer frame, the shape the largest connected group of pixels
/// that differ from it, its colour the majority of their nearest palette colours, and its fill
/// ratio (pixels / bounding-box area) tells a triangle (≈ 1/2) from a circle (≈ π/4) from a
/// square (≈ 1). `judge_recognises_real_shapes` checks it on drawn shapes first.
pub fn judge(image: &janus_core::processor::RgbImage) -> Option<Label> {
    janus_shapes::judge(image).map(|j| j.label())
}

/// Asks "What is in the image?" about [`UNDERSTANDING_SAMPLES`] fresh shapes (seed 777),
/// greedy; returns the exactly right count and the wrong (expected, answer) pairs.
pub fn score_understanding(janus: &Janus) -> (usize, Vec<(String, String)>) {
    let mut shapes = ShapeGenerator::new(32, 777);
    let samples: Vec<_> = (0..UNDERSTANDING_SAMPLES)
        .map(|_| shapes.sample())
        .collect();
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
    for (chunk, samples) in conversations.chunks(16).zip(samples.chunks(16)) {
        let answers = janus
            .answer_batch(chunk, &options, |_, _| ControlFlow::Continue(()))
            .expect("answers");
        for (answer, sample) in answers.iter().zip(samples) {
            let expected = sample.label().answer();
            if answer.text.trim() == expected {
                right += 1;
            } else {
                wrong.push((expected, answer.text.clone()));
            }
        }
    }
    (right, wrong)
}

/// Draws every caption twice (CFG 3, seed 31) and judges the 24 images; returns the judged
/// right count and the wrong (caption, judged as) pairs.
pub fn score_generation(janus: &Janus) -> (usize, Vec<(String, Option<String>)>) {
    let labels = Label::all();
    let captions: Vec<String> = labels.iter().map(|l| l.caption()).collect();
    let options = GenerationOptions::default()
        .with_parallel_size(2)
        .with_cfg_weight(3.0)
        .with_seed(31);
    let images = janus
        .generate_images(&captions, &options, |_| ControlFlow::Continue(()))
        .expect("images");
    assert_eq!(images.len(), 2 * labels.len());
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
    (right, wrong)
}
