//! How closely a quantised model follows its float original: the measures behind the
//! quantisation tiers' accuracy gates (docs/quantization.md), usable on any model directory.

use burn::tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};

use janus_llm::QuantScheme;

use std::ops::ControlFlow;

use crate::checkpoint::{GateRecord, QuantGates};
use crate::error::JanusError;
use crate::generation::GenerationOptions;
use crate::janus::Janus;
use crate::processor::{Message, RgbImage};
use crate::understanding::AnswerOptions;
use janus_llm::SamplingOptions;

/// How closely one model's next-token (or next-code) distributions follow a reference's,
/// over a set of positions.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Agreement {
    /// Positions compared.
    pub rows: usize,
    /// Mean `KL(p_reference ‖ p_other)` of the softmax distributions, in nats.
    pub mean_kl: f64,
    /// The largest KL of one position.
    pub max_kl: f64,
    /// Fraction of positions whose most likely token agrees.
    pub top1: f64,
    /// Mean overlap of the two top-5 sets (1: the same five tokens).
    pub top5: f64,
    /// Mean cosine similarity of the mean-centred logit rows.
    pub cosine: f64,
}

impl std::fmt::Display for Agreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} positions: mean KL {:.2e} (max {:.2e}), top-1 {:.2}%, top-5 overlap {:.2}%, cosine {:.5}",
            self.rows,
            self.mean_kl,
            self.max_kl,
            100.0 * self.top1,
            100.0 * self.top5,
            self.cosine
        )
    }
}

impl Agreement {
    /// Whether every measure is inside `limits`.
    pub fn passes(&self, limits: &GateLimits) -> bool {
        self.rows > 0
            && self.mean_kl <= limits.max_mean_kl
            && self.top1 >= limits.min_top1
            && self.top5 >= limits.min_top5
            && self.cosine >= limits.min_cosine
    }
}

/// The bounds an [`Agreement`] must stay inside for a tier to pass a gate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GateLimits {
    /// Largest mean KL, in nats.
    pub max_mean_kl: f64,
    /// Smallest top-1 agreement.
    pub min_top1: f64,
    /// Smallest top-5 overlap.
    pub min_top5: f64,
    /// Smallest mean cosine of the centred logits.
    pub min_cosine: f64,
}

/// CFG weight of the generation gate: the reference's default, and the largest the examples use.
pub const GATE_CFG_WEIGHT: f64 = 5.0;

/// The understanding gate of a tier, teacher-forced against the f32 model. Q8_0's is what an
/// 8-bit tier reaches on llama.cpp's own measurements (KL about 10⁻³ and below); Q4_K's allows
/// the usual 4-bit drift (llama.cpp's Q4_K_M: KL a few 10⁻², top-1 about 94%).
pub fn understanding_gate(scheme: QuantScheme) -> GateLimits {
    match scheme {
        QuantScheme::Q8_0 => GateLimits {
            max_mean_kl: 1e-3,
            min_top1: 0.99,
            min_top5: 0.98,
            min_cosine: 0.999,
        },
        QuantScheme::Q4K => GateLimits {
            max_mean_kl: 0.05,
            min_top1: 0.93,
            min_top5: 0.93,
            min_cosine: 0.995,
        },
    }
}

/// The generation gate of a tier: the guided logits at [`GATE_CFG_WEIGHT`], teacher-forced
/// against the f32 model over every image step. Guidance amplifies the error of both branches,
/// so the bounds are looser on KL than the understanding gate's but still bound the top
/// candidates the sampler draws from.
pub fn generation_gate(scheme: QuantScheme) -> GateLimits {
    match scheme {
        QuantScheme::Q8_0 => GateLimits {
            max_mean_kl: 0.02,
            min_top1: 0.95,
            min_top5: 0.95,
            min_cosine: 0.999,
        },
        QuantScheme::Q4K => GateLimits {
            max_mean_kl: 0.05,
            min_top1: 0.90,
            min_top5: 0.90,
            min_cosine: 0.995,
        },
    }
}

/// Sums of the [`Agreement`] measures, filled a block of rows at a time.
#[derive(Debug, Clone, Default)]
pub struct AgreementSum {
    rows: usize,
    kl: f64,
    max_kl: f64,
    top1: f64,
    top5: f64,
    cosine: f64,
}

impl AgreementSum {
    /// Adds the rows of two row-major `[rows, vocab]` logit blocks.
    ///
    /// # Panics
    /// When the blocks differ in length or are not whole rows.
    pub fn add(&mut self, reference: &[f32], other: &[f32], vocab: usize) {
        assert_eq!(
            reference.len(),
            other.len(),
            "logit blocks differ in length"
        );
        assert!(
            vocab > 0 && reference.len().is_multiple_of(vocab),
            "not whole rows"
        );
        let k = vocab.min(5);
        for (r, o) in reference.chunks_exact(vocab).zip(other.chunks_exact(vocab)) {
            let (lr, lo) = (log_softmax(r), log_softmax(o));
            let kl: f64 = lr.iter().zip(&lo).map(|(a, b)| a.exp() * (a - b)).sum();
            self.kl += kl;
            self.max_kl = self.max_kl.max(kl);
            let (tr, to) = (top(r, k), top(o, k));
            self.top1 += f64::from(u8::from(tr[0] == to[0]));
            self.top5 += tr.iter().filter(|i| to.contains(i)).count() as f64 / k as f64;
            self.cosine += centred_cosine(r, o);
            self.rows += 1;
        }
    }

    /// The means.
    pub fn finish(&self) -> Agreement {
        let n = self.rows.max(1) as f64;
        Agreement {
            rows: self.rows,
            mean_kl: self.kl / n,
            max_kl: self.max_kl,
            top1: self.top1 / n,
            top5: self.top5 / n,
            cosine: self.cosine / n,
        }
    }
}

/// [`Agreement`] of `other` with `reference`, both row-major `[rows, vocab]` logits.
pub fn agreement(reference: &[f32], other: &[f32], vocab: usize) -> Agreement {
    let mut sum = AgreementSum::default();
    sum.add(reference, other, vocab);
    sum.finish()
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, v| m.max(f64::from(*v)));
    let sum: f64 = row.iter().map(|v| (f64::from(*v) - max).exp()).sum();
    row.iter().map(|v| f64::from(*v) - max - sum.ln()).collect()
}

/// Indices of the `k` largest values, ties to the lower index.
fn top(row: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Logits are defined up to a constant per row, so they are compared after removing the mean.
fn centred_cosine(r: &[f32], o: &[f32]) -> f64 {
    let mean = |row: &[f32]| row.iter().map(|v| f64::from(*v)).sum::<f64>() / row.len() as f64;
    let (mr, mo) = (mean(r), mean(o));
    let (mut dot, mut nr, mut no) = (0.0, 0.0, 0.0);
    for (a, b) in r.iter().zip(o) {
        let (a, b) = (f64::from(*a) - mr, f64::from(*b) - mo);
        dot += a * b;
        nr += a * a;
        no += b * b;
    }
    dot / (nr.sqrt() * no.sqrt()).max(f64::MIN_POSITIVE)
}

fn host<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, JanusError> {
    t.cast(DType::F32)
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| JanusError::InvalidOption(format!("reading logits: {e:?}")))
}

impl Janus {
    /// Understanding gate: this model's next-token distributions against `reference`'s at
    /// every position of each conversation (with its images), teacher-forced: both models
    /// read the same tokens.
    pub fn understanding_agreement(
        &self,
        reference: &Janus,
        conversations: &[(Vec<Message>, Vec<RgbImage>)],
    ) -> Result<Agreement, JanusError> {
        let mut sum = AgreementSum::default();
        for (messages, images) in conversations {
            let want = reference.conversation_logits(messages, images)?;
            let vocab = want.dims()[1];
            let got = self.conversation_logits(messages, images)?;
            sum.add(&host(want)?, &host(got)?, vocab);
        }
        Ok(sum.finish())
    }

    /// Generation gate: this model's *guided* next-code distributions (`u + w·(c − u)` at
    /// `cfg_weight`) against `reference`'s at every step of `codes` (one row per prompt),
    /// teacher-forced. Guidance multiplies the difference of the two branches by the weight,
    /// so an error too small to see in either branch can show here.
    pub fn generation_agreement(
        &self,
        reference: &Janus,
        prompts: &[&str],
        codes: &[Vec<i64>],
        cfg_weight: f64,
    ) -> Result<Agreement, JanusError> {
        let mut sum = AgreementSum::default();
        for (prompt, codes) in prompts.iter().zip(codes) {
            let conversation = [reference.generation_conversation(prompt)];
            let batch = reference.generation_batch(&conversation, 1)?;
            let codes = std::slice::from_ref(codes);
            let want = reference
                .model
                .teacher_force_image_codes(&batch, codes, cfg_weight)?;
            let got = self
                .model
                .teacher_force_image_codes(&batch, codes, cfg_weight)?;
            let vocab = want.dims()[2];
            sum.add(&host(want)?, &host(got)?, vocab);
        }
        Ok(sum.finish())
    }
}

/// Questions of the understanding gate a quantised directory records, asked about
/// [`gate_picture`]s; the reference's own greedy answers complete each conversation.
pub const GATE_QUESTIONS: [&str; 3] = [
    "Describe this image in detail.",
    "What colours and shapes do you see?",
    "Is there any text in the image? Answer briefly.",
];

/// Prompts of the generation gate a quantised directory records.
pub const GATE_PROMPTS: [&str; 4] = [
    "A red apple on a wooden table, photograph",
    "A lighthouse on a cliff at dusk, oil painting",
    "A cat sleeping on a blue sofa",
    "A city street in the rain at night, neon signs",
];

/// A synthetic test card of `size`² pixels for the understanding gate: gradients, a bright
/// square and a dark disc, placed by `seed`.
pub fn gate_picture(size: u32, seed: u32) -> RgbImage {
    let size = size.max(1);
    let (sx, sy) = ((seed * 37) % size, (seed * 61) % size);
    RgbImage::from_fn(size, size, |x, y| {
        let square = x.abs_diff(sx) < size / 5 && y.abs_diff(sy) < size / 5;
        let (dx, dy) = (x.abs_diff(size - sx) as f32, y.abs_diff(size - sy) as f32);
        let disc = (dx * dx + dy * dy).sqrt() < size as f32 / 6.0;
        let base = [(x * 255 / size) as u8, (y * 255 / size) as u8, 128];
        let px = if square {
            [250, 240, 40]
        } else if disc {
            [20, 20, 60]
        } else {
            base
        };
        image::Rgb(px)
    })
}

/// What to show while [`Janus::measure_quant_gates`] runs: the stage and its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateProgress {
    /// The reference answering the gate questions.
    Answering {
        /// Questions answered so far.
        done: usize,
        /// Questions in all.
        total: usize,
    },
    /// The reference drawing the gate prompts' codes.
    Drawing {
        /// Steps done.
        done: usize,
        /// Steps in all (codes per image).
        total: usize,
    },
    /// Both models reading the conversations and codes.
    Scoring,
}

impl Janus {
    /// Both accuracy gates of this quantised model against `reference` (the float model of the
    /// same directory), on [`GATE_QUESTIONS`] about [`gate_picture`]s answered by the reference,
    /// and on the codes the reference draws for the first `prompts` of [`GATE_PROMPTS`] at
    /// CFG [`GATE_CFG_WEIGHT`], teacher-forced: what [`Janus::save_quantized`] records.
    ///
    /// # Errors
    ///
    /// [`JanusError::InvalidOption`] when this model is not quantised or `prompts` is 0 or more
    /// than [`GATE_PROMPTS`] holds; the pipelines' errors.
    pub fn measure_quant_gates(
        &self,
        reference: &Janus,
        prompts: usize,
        mut on_progress: impl FnMut(GateProgress),
    ) -> Result<QuantGates, JanusError> {
        let Some(scheme) = self.model.language_model.quant_scheme() else {
            return Err(JanusError::InvalidOption(
                "the gates measure a quantised model; this one is not".into(),
            ));
        };
        if prompts == 0 || prompts > GATE_PROMPTS.len() {
            return Err(JanusError::InvalidOption(format!(
                "gate prompts must be 1 to {}, not {prompts}",
                GATE_PROMPTS.len()
            )));
        }
        let size = reference.config.vision.image_size as u32;
        let options = AnswerOptions {
            max_new_tokens: 32,
            sampling: SamplingOptions::greedy(),
            stop_strings: Vec::new(),
        };
        let mut conversations = Vec::with_capacity(GATE_QUESTIONS.len());
        for (i, question) in GATE_QUESTIONS.iter().enumerate() {
            on_progress(GateProgress::Answering {
                done: i,
                total: GATE_QUESTIONS.len(),
            });
            let mut messages = reference.processor.question(question, 1);
            let images = vec![gate_picture(size, i as u32 + 1)];
            let pair = [(messages.clone(), images.clone())];
            let answer =
                reference.answer_batch(&pair, &options, |_, _| ControlFlow::Continue(()))?;
            if let (Some(last), Some(answer)) = (messages.last_mut(), answer.first()) {
                last.content = answer.text.clone();
            }
            conversations.push((messages, images));
        }

        let prompts = &GATE_PROMPTS[..prompts];
        let chats: Vec<_> = prompts
            .iter()
            .map(|p| reference.generation_conversation(p))
            .collect();
        let batch = reference.generation_batch(&chats, 1)?;
        let total = reference.codes_per_image();
        let drawing = GenerationOptions::default()
            .with_cfg_weight(GATE_CFG_WEIGHT)
            .with_seed(0);
        let codes = reference
            .model
            .generate_image_codes(&batch, total, &drawing, |p| {
                on_progress(GateProgress::Drawing {
                    done: p.done,
                    total: p.total,
                });
                ControlFlow::Continue(())
            })?;

        on_progress(GateProgress::Scoring);
        let what = |n: usize, of: &str| {
            format!(
                "teacher-forced against the {} model on {n} {of}",
                crate::checkpoint::quantized::float_dtype_name(&reference.model)
            )
        };
        let understanding = self.understanding_agreement(reference, &conversations)?;
        let generation = self.generation_agreement(reference, prompts, &codes, GATE_CFG_WEIGHT)?;
        Ok(QuantGates {
            understanding: Some(GateRecord::new(
                understanding,
                understanding_gate(scheme),
                what(conversations.len(), "gate questions about test cards"),
            )),
            generation: Some(GateRecord::new(
                generation,
                generation_gate(scheme),
                what(prompts.len(), "gate prompts' codes, guided at CFG 5"),
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_is_perfect_on_equal_rows_and_sees_a_swapped_argmax() {
        let a = [
            1.0f32, 2.0, 3.0, 0.0, -1.0, 0.5, 0.0, 0.0, 2.0, 1.0, 0.0, 0.0,
        ];
        let same = agreement(&a, &a, 6);
        assert_eq!(same.rows, 2);
        assert!(same.mean_kl.abs() < 1e-12 && same.top1 == 1.0 && same.top5 == 1.0);
        assert!((same.cosine - 1.0).abs() < 1e-12);
        // A constant shift changes nothing; swapping the top two entries of row 0 does.
        let shifted: Vec<f32> = a.iter().map(|v| v + 7.0).collect();
        assert!(agreement(&a, &shifted, 6).mean_kl.abs() < 1e-9);
        let mut swapped = a;
        swapped.swap(1, 2);
        let s = agreement(&a, &swapped, 6);
        assert_eq!(s.top1, 0.5);
        assert_eq!(s.top5, 1.0, "the same five, in another order");
        assert!(s.mean_kl > 0.01 && s.max_kl > s.mean_kl && s.cosine < 1.0);
    }
}
