//! The shipped shapes model at each quantised tier: teacher-forced agreement with the f32
//! model (understanding, and generation's guided logits at CFG 5), and the judge's scores on
//! the same fresh images and prompts as `shapes.rs`, which must stay within the f32 model's
//! bar.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::OnceLock;

use burn::tensor::Device;
use janus_core::{
    AnswerOptions, GATE_CFG_WEIGHT, GenerationOptions, Janus, LoadOptions, QuantScheme,
    SamplingOptions, generation_gate, understanding_gate,
};
use janus_shapes::{Label, ShapeGenerator};

fn shipped_model() -> PathBuf {
    match std::env::var_os("SHAPES_JANUS_MODEL") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/shapes-janus"),
    }
}

fn load(quant: Option<QuantScheme>) -> Janus {
    let options = LoadOptions::default().with_quant(quant);
    Janus::load(shipped_model(), &options, &Device::flex()).expect("models/shapes-janus loads")
}

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
        let mut understood = 0;
        for (chunk, samples) in conversations.chunks(16).zip(samples.chunks(16)) {
            let answers = janus
                .answer_batch(chunk, &options, |_, _| ControlFlow::Continue(()))
                .expect("answers");
            understood += answers
                .iter()
                .zip(samples)
                .filter(|(a, s)| a.text.trim() == s.label().answer())
                .count();
        }

        let labels = Label::all();
        let captions: Vec<String> = labels.iter().map(|l| l.caption()).collect();
        let options = GenerationOptions::default()
            .with_parallel_size(2)
            .with_cfg_weight(3.0)
            .with_seed(31);
        let images = janus
            .generate_images(&captions, &options, |_| ControlFlow::Continue(()))
            .expect("images");
        let drawn = images
            .iter()
            .filter(|g| janus_shapes::judge(&g.image).map(|j| j.label()) == Some(labels[g.prompt]))
            .count();
        println!(
            "{tier}: understanding {understood}/48 exactly right, generation {drawn}/24 judged right"
        );
        // The f32 model's bar in shapes.rs.
        assert!(understood >= 44, "{tier}: {understood}/48");
        assert!(drawn >= 22, "{tier}: {drawn}/24");
    }
}
