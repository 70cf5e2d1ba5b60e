//! The shipped shapes model at each quantised tier: teacher-forced agreement with the f32
//! model (understanding, and generation's guided logits at CFG 5), and the judge's scores on
//! the same fresh images and prompts as `shapes.rs`, which must stay within the f32 model's
//! bar.

mod common;

use std::ops::ControlFlow;
use std::sync::OnceLock;

use common::{
    GENERATION_BAR, UNDERSTANDING_BAR, UNDERSTANDING_SAMPLES, load, score_generation,
    score_understanding,
};
use janus_core::{
    GATE_CFG_WEIGHT, GenerationOptions, Janus, QuantScheme, generation_gate, understanding_gate,
};
use janus_shapes::{Label, ShapeGenerator};

fn reference() -> &'static Janus {
    static F32: OnceLock<Janus> = OnceLock::new();
    F32.get_or_init(|| load(None))
}

const TIERS: [QuantScheme; 2] = [QuantScheme::Q8_0, QuantScheme::Q4K];

#[test]
fn quantised_understanding_follows_the_f32_model() {
    let f32_model = reference();
    let mut shapes = ShapeGenerator::new(32, 4242);
    let conversations: Vec<_> = (0..12)
        .map(|_| {
            let s = shapes.sample();
            let mut messages = f32_model.processor.question("What is in the image?", 1);
            if let Some(last) = messages.last_mut() {
                last.content = s.label().answer();
            }
            (messages, vec![s.render()])
        })
        .collect();
    for tier in TIERS {
        let a = load(Some(tier))
            .understanding_agreement(f32_model, &conversations)
            .expect("teacher-forced logits");
        println!("understanding {tier}: {a}");
        assert!(a.rows > 12 * 20, "{a}");
        assert!(a.passes(&understanding_gate(tier)), "{tier}: {a}");
    }
}

#[test]
fn quantised_guided_generation_logits_follow_the_f32_model() {
    let f32_model = reference();
    let labels = Label::all();
    let captions: Vec<String> = labels.iter().map(|l| l.caption()).collect();
    let prompts: Vec<&str> = captions.iter().map(String::as_str).collect();
    // The codes the f32 model draws at its recommended settings are what both models read.
    let options = GenerationOptions::default()
        .with_cfg_weight(3.0)
        .with_seed(5);
    let codes: Vec<Vec<i64>> = f32_model
        .generate_images(&prompts, &options, |_| ControlFlow::Continue(()))
        .expect("images")
        .into_iter()
        .map(|g| g.codes)
        .collect();
    for tier in TIERS {
        let a = load(Some(tier))
            .generation_agreement(f32_model, &prompts, &codes, GATE_CFG_WEIGHT)
            .expect("teacher-forced guided logits");
        println!("generation at CFG 5, {tier}: {a}");
        assert_eq!(a.rows, 12 * 64);
        assert!(a.passes(&generation_gate(tier)), "{tier}: {a}");
    }
}

#[test]
fn quantised_shipped_model_still_understands_and_draws() {
    for tier in TIERS {
        let janus = load(Some(tier));
        let (understood, wrong_answers) = score_understanding(&janus);
        let (drawn, wrong_images) = score_generation(&janus);
        let n = UNDERSTANDING_SAMPLES;
        println!(
            "{tier}: understanding {understood}/{n} exactly right, generation {drawn}/24 judged right"
        );
        // The f32 model's bar in shapes.rs.
        assert!(
            understood >= UNDERSTANDING_BAR,
            "{tier}: {understood}/{n}: {wrong_answers:?}"
        );
        assert!(
            drawn >= GENERATION_BAR,
            "{tier}: {drawn}/24: {wrong_images:?}"
        );
    }
}
