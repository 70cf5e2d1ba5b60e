//! The two training objectives: next-token cross entropy for understanding (and text-only) rows,
//! image-code cross entropy of the image head for text-to-image rows, and the labelling rule
//! that turns a conversation into understanding labels.
//!
//! Both losses run the same modules as inference (no layer is duplicated here), so they work on
//! a plain device for evaluation and on an autodiff device (`Device::flex().autodiff()`) for
//! training:
//!
//! ```no_run
//! # use janus_core::{JanusModel, LoadOptions, burn::tensor::Device};
//! # use janus_train::{GenerationBatch, UnderstandingBatch, loss};
//! # fn run(und: UnderstandingBatch, gen_batch: GenerationBatch) -> Result<(), Box<dyn std::error::Error>> {
//! let device = Device::flex().autodiff();
//! let (model, _, _) = JanusModel::load("models/Janus-Pro-1B", &LoadOptions::default(), &device)?;
//! let l_und = loss::understanding_loss(&model, &und)?;
//! let l_gen = loss::generation_loss(&model, &gen_batch)?;
//! let total = loss::weighted_sum(Some(l_und), Some(l_gen), 1.0, 1.0).expect("two terms");
//! let grads = total.backward();
//! # let _ = grads; Ok(()) }
//! ```

use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, FloatDType, Int, Tensor, TensorData};
use janus_core::janus_llm::LlmError;
use janus_core::processor::{Message, Processor, ProcessorError, TokenId};
use janus_core::{JanusError, JanusModel};

use crate::batch::{GenerationBatch, IGNORE_INDEX, MixedBatch, UnderstandingBatch};

/// Everything that can go wrong computing a loss.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    /// The labels do not cover the batch.
    #[error("{found} labels for a batch of {expected} positions (batch_size × seq_len)")]
    LabelShape {
        /// `batch_size · seq_len`.
        expected: usize,
        /// `labels.len()`.
        found: usize,
    },
    /// A label is neither [`IGNORE_INDEX`] nor a token id of the vocabulary.
    #[error("label {label} at position {position} is outside the vocabulary of {vocab} tokens")]
    InvalidLabel {
        /// The offending value.
        label: i64,
        /// Row-major position in `[B, T]`.
        position: usize,
        /// Vocabulary size (`lm_head` outputs).
        vocab: usize,
    },
    /// No position of the batch carries a target, so the mean is undefined.
    #[error("the batch has no labelled position")]
    NoTargets,
    /// The generation batch is malformed (row counts, empty prompts, ragged codes).
    #[error("invalid generation batch: {0}")]
    InvalidBatch(String),
    /// An image code is outside the image head's codebook.
    #[error("image code {code} in row {row} is outside the codebook of {codebook} entries")]
    InvalidCode {
        /// The offending value.
        code: i64,
        /// Batch row.
        row: usize,
        /// Number of image codes (`gen_head` outputs).
        codebook: usize,
    },
    /// Re-tokenising a conversation prefix did not reproduce the start of the input ids, so
    /// answer spans cannot be located.
    #[error("the templated conversation differs from the input ids at position {position}")]
    LabelAlignment {
        /// First position where the two token sequences differ.
        position: usize,
    },
    /// Assembling the input embeddings failed (e.g. image placeholders without images).
    #[error(transparent)]
    Model(#[from] JanusError),
    /// The language model refused its input (e.g. longer than its context).
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// Templating or tokenising a conversation failed.
    #[error(transparent)]
    Processor(#[from] ProcessorError),
}

/// Mean cross entropy of `logits` against class indices, through a numerically stable
/// `log_softmax` (computed in f32 when the logits are in a half-precision dtype, like HF).
///
/// # Shapes
/// - logits: `[N, C]`
/// - targets: `[N]`, values in `0..C`
/// - output: `[1]`
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [n, _] = logits.dims();
    let logits = match logits.dtype() {
        DType::BF16 | DType::F16 => logits.cast(FloatDType::F32),
        _ => logits,
    };
    log_softmax(logits, 1)
        .gather(1, targets.reshape([n, 1]))
        .mean()
        .neg()
}

/// Understanding loss: mean next-token cross entropy over the labelled positions.
///
/// The forward pass is the inference one: [`JanusModel::embed_inputs`] (image features in the
/// placeholder rows), the language model with the batch's padding mask, `lm_head`. Following the
/// HF shift, the logits at position `t` are scored against `labels[t + 1]`; positions whose
/// next label is [`IGNORE_INDEX`] are skipped, and only the scored positions go through
/// `lm_head`. The mean is over all scored positions of the batch (not per row).
///
/// # Errors
/// [`LossError::LabelShape`], [`LossError::InvalidLabel`], [`LossError::NoTargets`], or the
/// model's error for malformed inputs.
pub fn understanding_loss(
    model: &JanusModel,
    batch: &UnderstandingBatch,
) -> Result<Tensor<1>, LossError> {
    let inputs = &batch.inputs;
    let (b, t) = (inputs.batch_size, inputs.seq_len);
    if batch.labels.len() != b * t {
        return Err(LossError::LabelShape {
            expected: b * t,
            found: batch.labels.len(),
        });
    }
    let vocab = model.language_model.lm_head.d_output();
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    for (position, &label) in batch.labels.iter().enumerate() {
        if label == IGNORE_INDEX {
            continue;
        }
        if !(0..vocab as i64).contains(&label) {
            return Err(LossError::InvalidLabel {
                label,
                position,
                vocab,
            });
        }
        // The first column has no previous position to predict it.
        if position % t != 0 {
            rows.push(position as i64 - 1);
            targets.push(label);
        }
    }
    if rows.is_empty() {
        return Err(LossError::NoTargets);
    }

    let embeds = model.embed_inputs(inputs)?;
    let padding: Vec<Vec<bool>> = inputs
        .attention_mask
        .chunks(t)
        .map(<[bool]>::to_vec)
        .collect();
    let hidden = model
        .language_model
        .model
        .forward(embeds, Some(&padding), None)?;
    let [_, _, d] = hidden.dims();
    let device = hidden.device();
    let n = rows.len();
    let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), &device);
    let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [n]), &device);
    let hidden = hidden.reshape([b * t, d]).select(0, rows);
    Ok(cross_entropy(
        model.language_model.lm_head.forward(hidden),
        targets,
    ))
}

/// Generation loss: mean cross entropy of the image head against the image codes.
///
/// Each row is `prompt ++ codes`, embedded with the LLM's token table for the prompt and
/// [`JanusModel::embed_image_codes`] (`gen_aligner(gen_embed(·))`) for the codes, exactly as
/// during generation. The hidden states from the last prompt token (`<begin_of_image>`) to the
/// second-to-last code predict codes `0..n`; the last code is never fed, since with causal
/// attention nothing scored depends on it. Rows with shorter prompts are left-padded and
/// masked, so their position ids start at 0 as in generation; every row must hold the same
/// number of codes.
///
/// # Errors
/// [`LossError::InvalidBatch`], [`LossError::InvalidCode`], or the language model's error.
pub fn generation_loss(
    model: &JanusModel,
    batch: &GenerationBatch,
) -> Result<Tensor<1>, LossError> {
    let b = batch.text_ids.len();
    if b == 0 || batch.codes.len() != b {
        return Err(LossError::InvalidBatch(format!(
            "{b} prompts and {} code rows",
            batch.codes.len()
        )));
    }
    let n = batch.codes[0].len();
    if n == 0 || batch.codes.iter().any(|c| c.len() != n) {
        return Err(LossError::InvalidBatch(
            "every row needs the same, non-zero number of image codes".into(),
        ));
    }
    if let Some(row) = batch.text_ids.iter().position(Vec::is_empty) {
        return Err(LossError::InvalidBatch(format!("prompt {row} is empty")));
    }
    let codebook = model.gen_head.vision_head.weight.lazy_shape()[1];
    for (row, codes) in batch.codes.iter().enumerate() {
        if let Some(&code) = codes.iter().find(|&&c| !(0..codebook as i64).contains(&c)) {
            return Err(LossError::InvalidCode {
                code,
                row,
                codebook,
            });
        }
    }

    let device = model.language_model.lm_head.weight.lazy_device();
    let p = batch.text_ids.iter().map(Vec::len).max().unwrap_or(0);
    let len = p + n - 1;
    let mut ids = Vec::with_capacity(b * p);
    let mut padding = Vec::with_capacity(b);
    for prompt in &batch.text_ids {
        let pad = p - prompt.len();
        // Padded positions are masked out, so any valid id serves as their embedding.
        ids.extend(std::iter::repeat_n(0, pad));
        ids.extend(prompt.iter().map(|&id| i64::from(id)));
        let mut mask = vec![false; pad];
        mask.resize(len, true);
        padding.push(mask);
    }
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, p]), &device);
    let mut embeds = model.language_model.model.embed(ids);
    if n > 1 {
        let fed: Vec<i64> = batch
            .codes
            .iter()
            .flat_map(|c| c[..n - 1].iter().copied())
            .collect();
        let fed = Tensor::<2, Int>::from_data(TensorData::new(fed, [b, n - 1]), &device);
        embeds = Tensor::cat(vec![embeds, model.embed_image_codes(fed)], 1);
    }
    let hidden = model
        .language_model
        .model
        .forward(embeds, Some(&padding), None)?;
    let [_, _, d] = hidden.dims();
    // Left padding aligns every row's scored span to the same columns.
    let hidden = hidden.slice([0..b, p - 1..len, 0..d]).reshape([b * n, d]);
    let targets: Vec<i64> = batch.codes.iter().flatten().copied().collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [b * n]), &device);
    Ok(cross_entropy(model.gen_head.forward(hidden), targets))
}

/// `w_und · und + w_gen · gen` over the terms present; `None` when both are absent.
///
/// A term with weight 0 still joins the graph (its gradients are zero), which keeps the
/// parameter set seen by the optimiser the same from step to step.
pub fn weighted_sum(
    und: Option<Tensor<1>>,
    gen_loss: Option<Tensor<1>>,
    w_und: f64,
    w_gen: f64,
) -> Option<Tensor<1>> {
    let und = und.map(|l| l.mul_scalar(w_und));
    let gen_loss = gen_loss.map(|l| l.mul_scalar(w_gen));
    match (und, gen_loss) {
        (Some(u), Some(g)) => Some(u + g),
        (u, g) => u.or(g),
    }
}

/// The losses of one [`MixedBatch`].
#[derive(Debug, Clone)]
pub struct MixedLoss {
    /// The weighted sum to call `backward` on.
    pub total: Tensor<1>,
    /// Unweighted understanding loss, when the batch had understanding rows.
    pub understanding: Option<Tensor<1>>,
    /// Unweighted generation loss, when the batch had text-to-image rows.
    pub generation: Option<Tensor<1>>,
}

/// Both losses of a [`MixedBatch`], combined with [`weighted_sum`]. `Ok(None)` when the batch
/// has neither kind of row.
pub fn mixed_loss(
    model: &JanusModel,
    batch: &MixedBatch,
    w_und: f64,
    w_gen: f64,
) -> Result<Option<MixedLoss>, LossError> {
    let understanding = batch
        .understanding
        .as_ref()
        .map(|b| understanding_loss(model, b))
        .transpose()?;
    let generation = batch
        .generation
        .as_ref()
        .map(|b| generation_loss(model, b))
        .transpose()?;
    Ok(
        weighted_sum(understanding.clone(), generation.clone(), w_und, w_gen).map(|total| {
            MixedLoss {
                total,
                understanding,
                generation,
            }
        }),
    )
}

/// Next-token labels of one processed conversation: the token id on every position of an
/// assistant answer, [`IGNORE_INDEX`] elsewhere (system prompt, user turns, role cues, images).
///
/// `input_ids` are the processor's ids for `conversation`
/// ([`Processor::process_one`]`(conversation, images).input_ids`, image tokens expanded). An
/// answer is an odd-indexed message (the template's assistant slot) with non-empty content; its
/// labelled span starts right after the role cue `"<role>:"` and ends with the
/// `<｜end▁of▁sentence｜>` separator the template closes it with, so it covers the tokens of
/// `" " + content.strip()` plus EOS — exactly the positions the golden `und_labels` mark. The
/// model thus learns to answer after the cue and to stop. Image placeholder positions inside a
/// span stay ignored. The rule itself lives in [`crate::data::label_prompt`] (used by the data
/// pipeline too); this checks its tokens against `input_ids`.
///
/// Labels follow the HF convention of [`UnderstandingBatch::labels`]: they sit at the token's
/// own position, and the loss shifts them. Left-pad them with [`IGNORE_INDEX`] when batching.
///
/// # Errors
/// [`LossError::LabelAlignment`] when the conversation does not tokenise to `input_ids`, or
/// the processor's error.
pub fn understanding_labels(
    processor: &Processor,
    conversation: &[Message],
    input_ids: &[TokenId],
) -> Result<Vec<i64>, LossError> {
    // One labelling rule for the whole crate: the data pipeline's.
    let (_, ids, labels) = crate::data::label_prompt(
        processor,
        conversation,
        janus_core::processor::SYSTEM_PROMPT,
        crate::data::LabelTurns::All,
    )?;
    let image = processor.special_tokens().image;
    let images = ids.iter().filter(|&&id| id == image).count();
    let (expanded_ids, expanded) = crate::data::expand_labels(processor, &ids, &labels, images)?;
    if expanded_ids != input_ids {
        let first_difference = expanded_ids
            .iter()
            .zip(input_ids)
            .position(|(a, b)| a != b)
            .unwrap_or(expanded_ids.len().min(input_ids.len()));
        return Err(LossError::LabelAlignment {
            position: first_difference,
        });
    }
    Ok(expanded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Tolerance};
    use janus_core::LoadOptions;

    const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tiny-janus");

    fn tiny() -> (JanusModel, Processor) {
        let (model, _, _) =
            JanusModel::load(TINY, &LoadOptions::default(), &Device::flex()).unwrap();
        (model, Processor::from_dir(TINY).unwrap())
    }

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_scalar()
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-5 * b.abs().max(1.0)
    }

    #[test]
    fn cross_entropy_matches_hand_computation() {
        let device = Device::flex();
        // Row 0: uniform over 2 classes → ln 2; row 1: logits [0, ln 3], target 1 → ln(4/3).
        let logits = Tensor::<2>::from_data([[1.0, 1.0], [0.0, 3f32.ln()]], &device);
        let targets = Tensor::<1, Int>::from_data([0, 1], &device);
        let expected = (2f32.ln() + (4f32 / 3.0).ln()) / 2.0;
        cross_entropy(logits, targets)
            .into_data()
            .assert_approx_eq::<f32>(&TensorData::from([expected]), Tolerance::default());
    }

    #[test]
    fn cross_entropy_is_stable_for_large_logits() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data([[1.0e4, 0.0]], &device);
        let targets = Tensor::<1, Int>::from_data([1], &device);
        let loss: f32 = cross_entropy(logits, targets).into_scalar();
        assert!((loss - 1.0e4).abs() < 1.0, "{loss}");
    }

    #[test]
    fn weighted_sum_combines_present_terms() {
        let device = Device::flex();
        let l = |v: f32| Tensor::<1>::from_data([v], &device);
        let total: f32 = weighted_sum(Some(l(2.0)), Some(l(3.0)), 0.5, 2.0)
            .unwrap()
            .into_scalar();
        assert_eq!(total, 7.0);
        let only: f32 = weighted_sum(None, Some(l(3.0)), 0.5, 2.0)
            .unwrap()
            .into_scalar();
        assert_eq!(only, 6.0);
        assert!(weighted_sum(None, None, 1.0, 1.0).is_none());
    }

    /// Left padding changes nothing: a two-row batch with prompts of different lengths gives the
    /// mean of the rows' own losses (same number of codes per row).
    #[test]
    fn generation_loss_is_padding_invariant() {
        let (model, _) = tiny();
        let rows = [
            (vec![0u32, 309, 27, 260, 298, 386], vec![3i64, 1, 4, 1, 5]),
            (vec![0u32, 27, 386], vec![9i64, 2, 6, 5, 3]),
        ];
        let one = |i: usize| {
            scalar(
                generation_loss(
                    &model,
                    &GenerationBatch {
                        text_ids: vec![rows[i].0.clone()],
                        codes: vec![rows[i].1.clone()],
                    },
                )
                .unwrap(),
            )
        };
        let both = scalar(
            generation_loss(
                &model,
                &GenerationBatch {
                    text_ids: rows.iter().map(|r| r.0.clone()).collect(),
                    codes: rows.iter().map(|r| r.1.clone()).collect(),
                },
            )
            .unwrap(),
        );
        let (a, b) = (one(0), one(1));
        assert!(close(both, (a + b) / 2.0), "{both} vs {a}, {b}");
    }

    /// A left-padded understanding batch (image row + shorter text row) gives the mean over all
    /// labelled positions, i.e. the rows' losses weighted by their label counts.
    #[test]
    fn understanding_loss_is_padding_invariant() {
        let (model, processor) = tiny();
        let image_conv = vec![
            Message::new("User", "<image_placeholder>\nDescribe this.").with_image("scene.png"),
            Message::new("Assistant", "A dog sits."),
        ];
        let text_conv = vec![
            Message::new("User", "Hi"),
            Message::new("Assistant", "Hello there, friend."),
        ];
        let mut items = Vec::new();
        let mut labels = Vec::new();
        for conv in [&image_conv, &text_conv] {
            let images = processor
                .load_images(conv, format!("{TINY}/goldens"))
                .unwrap();
            let item = processor.process_one(conv, &images).unwrap();
            labels.push(understanding_labels(&processor, conv, &item.input_ids).unwrap());
            items.push(item);
        }
        let single = |i: usize| {
            let batch = UnderstandingBatch {
                inputs: processor.batchify(&items[i..=i]).unwrap(),
                labels: labels[i].clone(),
            };
            scalar(understanding_loss(&model, &batch).unwrap())
        };
        let inputs = processor.batchify(&items).unwrap();
        let t = inputs.seq_len;
        let mut padded = Vec::new();
        for row in &labels {
            padded.extend(std::iter::repeat_n(IGNORE_INDEX, t - row.len()));
            padded.extend(row);
        }
        let both = scalar(
            understanding_loss(
                &model,
                &UnderstandingBatch {
                    inputs,
                    labels: padded,
                },
            )
            .unwrap(),
        );
        let counts: Vec<f32> = labels
            .iter()
            .map(|l| l.iter().filter(|&&x| x != IGNORE_INDEX).count() as f32)
            .collect();
        let expected = (single(0) * counts[0] + single(1) * counts[1]) / (counts[0] + counts[1]);
        assert!(close(both, expected), "{both} vs {expected}");
    }

    /// Every assistant answer is labelled (content and closing EOS), nothing else.
    #[test]
    fn labels_cover_every_answer() {
        let (_, processor) = tiny();
        let conv = vec![
            Message::new("User", "Hi"),
            Message::new("Assistant", "Hello."),
            Message::new("User", "Again"),
            Message::new("Assistant", "Bye."),
        ];
        let ids = processor.process_one(&conv, &[]).unwrap().input_ids;
        let labels = understanding_labels(&processor, &conv, &ids).unwrap();
        let eos = i64::from(processor.special_tokens().eos);
        let spans: Vec<Vec<i64>> = labels
            .split(|&l| l == IGNORE_INDEX)
            .filter(|s| !s.is_empty())
            .map(<[i64]>::to_vec)
            .collect();
        assert_eq!(spans.len(), 2, "{labels:?}");
        for (span, answer) in spans.iter().zip([" Hello.", " Bye."]) {
            assert_eq!(*span.last().unwrap(), eos);
            let text: Vec<u32> = span[..span.len() - 1].iter().map(|&i| i as u32).collect();
            assert_eq!(
                processor.tokenizer().decode_with_special(&text).unwrap(),
                answer
            );
        }
        // An open generation cue has nothing to learn.
        let cue = vec![Message::new("User", "Hi"), Message::new("Assistant", "")];
        let ids = processor.process_one(&cue, &[]).unwrap().input_ids;
        let labels = understanding_labels(&processor, &cue, &ids).unwrap();
        assert!(labels.iter().all(|&l| l == IGNORE_INDEX));
        // Ids of another conversation do not line up.
        assert!(matches!(
            understanding_labels(&processor, &conv, &ids),
            Err(LossError::LabelAlignment { .. })
        ));
    }

    #[test]
    fn malformed_batches_are_errors() {
        let (model, processor) = tiny();
        let conv = vec![Message::new("User", "Hi"), Message::new("Assistant", "")];
        let inputs = processor.process(&conv, &[]).unwrap();
        let t = inputs.seq_len;
        let batch = |labels: Vec<i64>| UnderstandingBatch {
            inputs: inputs.clone(),
            labels,
        };
        let err = |b| understanding_loss(&model, &b).unwrap_err();
        assert!(matches!(
            err(batch(vec![IGNORE_INDEX; t + 1])),
            LossError::LabelShape { .. }
        ));
        assert!(matches!(
            err(batch(vec![IGNORE_INDEX; t])),
            LossError::NoTargets
        ));
        let mut bad = vec![IGNORE_INDEX; t];
        bad[t - 1] = 100_000;
        assert!(matches!(err(batch(bad)), LossError::InvalidLabel { .. }));

        let gen_err = |text_ids: Vec<Vec<u32>>, codes: Vec<Vec<i64>>| {
            generation_loss(&model, &GenerationBatch { text_ids, codes }).unwrap_err()
        };
        assert!(matches!(
            gen_err(vec![], vec![]),
            LossError::InvalidBatch(_)
        ));
        assert!(matches!(
            gen_err(vec![vec![0, 386], vec![0, 386]], vec![vec![1, 2], vec![1]]),
            LossError::InvalidBatch(_)
        ));
        assert!(matches!(
            gen_err(vec![vec![]], vec![vec![1]]),
            LossError::InvalidBatch(_)
        ));
        assert!(matches!(
            gen_err(vec![vec![0, 386]], vec![vec![1, 64]]),
            LossError::InvalidCode { code: 64, .. }
        ));
    }
}
