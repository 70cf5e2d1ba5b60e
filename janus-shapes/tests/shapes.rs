//! The shipped shapes model (`models/shapes-janus`, trained from scratch by
//! `janus-shapes build`) understands and draws: exact answers on fresh images, generated
//! images that a colour-and-fill judge recognises — and the judge itself is checked on real
//! shapes first. Everything is seeded; the images are fresh (seeds the recipe never used).
//!
//! `SHAPES_JANUS_MODEL=<dir>` points the tests at another model directory, e.g. one rebuilt by
//! the recipe, to check that it passes the same bar.

mod common;

use common::{
    GENERATION_BAR, UNDERSTANDING_BAR, UNDERSTANDING_SAMPLES, judge, load, score_generation,
    score_understanding, shipped_model,
};
use janus_shapes::{Label, ShapeGenerator};

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
    let (right, wrong) = score_understanding(&load(None));
    let n = UNDERSTANDING_SAMPLES;
    println!("understanding: {right}/{n} exactly right; wrong: {wrong:?}");
    assert!(
        right >= UNDERSTANDING_BAR,
        "only {right}/{n} exactly right: {wrong:?}"
    );
}

#[test]
fn shipped_model_draws_what_it_is_asked() {
    let (right, wrong) = score_generation(&load(None));
    println!("generation: {right}/24 judged right; wrong: {wrong:?}");
    assert!(
        right >= GENERATION_BAR,
        "only {right}/24 judged right: {wrong:?}"
    );
}
