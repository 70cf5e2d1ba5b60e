//! Understanding (and text-only) samples: conversation → template → token ids with labels on
//! the answers → image expansion → length policy; and collation into
//! [`UnderstandingBatch`]es.
//!
//! # Labelling rule
//!
//! The whole conversation (history turns, then the final query/response) goes through the
//! `deepseek` template with the understanding system prompt (or the line's own) and is
//! tokenised **once**. A token is labelled (label = its own id, the HF convention: the loss
//! shifts) when it lies in an assistant answer: from just after `"<assistant role>:"`, so the
//! space before the answer is included, through the end-of-sentence separator that closes the
//! answer. Every other token (system prompt, roles, user messages, image runs, padding) is
//! [`IGNORE_INDEX`]. This is what the reference training golden
//! (`tests/fixtures/tiny-janus/goldens/train.safetensors`, `und_labels`) shows: everything
//! after the tokens of the generation prompt `…Assistant:` is labelled, EOS included.
//!
//! With [`LabelTurns::All`] (the default, as ms-swift's default loss scale) every assistant
//! answer is labelled; [`LabelTurns::Last`] labels only the final one. Both agree on one-turn
//! conversations such as the golden's.

use std::ops::Range;

use janus_core::processor::{
    ASSISTANT_SEPARATOR as SEP2, ChatRoles, Message, PreparedInput, Processor, ProcessorError,
    RgbImage, SYSTEM_PROMPT, TokenId, USER_SEPARATOR as SEP, apply_sft_template, is_py_space,
};
use serde::{Deserialize, Serialize};

use super::record::ConversationRecord;
use crate::batch::{IGNORE_INDEX, UnderstandingBatch};

/// Which assistant answers carry labels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelTurns {
    /// Every answer, history included.
    #[default]
    All,
    /// Only the final answer; history answers are context.
    Last,
}

/// What to do with a sample longer than the maximum length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlong {
    /// Keep the first `max_len` tokens (never half an image: a cut inside an image run moves to
    /// its start and the image is dropped). Samples left without a labelled token are skipped.
    #[default]
    Truncate,
    /// Skip the sample.
    Skip,
}

/// A processed conversation with its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct LabeledInput {
    /// Token ids (image runs expanded) and pixels.
    pub input: PreparedInput,
    /// One label per token: the token id on answer tokens, [`IGNORE_INDEX`] elsewhere.
    pub labels: Vec<i64>,
}

impl LabeledInput {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.input.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    /// Number of labelled tokens.
    pub fn num_labels(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE_INDEX).count()
    }
}

/// Outcome of [`build_understanding`] under a length limit.
#[derive(Debug, Clone, PartialEq)]
pub enum SampleOutcome {
    /// The sample fits.
    Fits(LabeledInput),
    /// The sample was cut to the limit.
    Truncated(LabeledInput),
    /// The sample is too long (skipped by [`Overlong::Skip`], or nothing labelled was left
    /// after truncation); `len` is its untruncated length.
    Skipped {
        /// Tokens before truncation.
        len: usize,
    },
}

/// The template messages of a record, with the roles of the model; each user message carries
/// the paths of its images (`image_tag` is the model's placeholder, which marks them).
pub fn conversation_messages(
    record: &ConversationRecord,
    roles: &ChatRoles,
    image_tag: &str,
) -> Vec<Message> {
    let mut images = record.images.iter();
    let mut out = Vec::with_capacity(record.turns.len() * 2);
    for turn in &record.turns {
        let mut user = Message::new(roles.user.clone(), turn.user.clone());
        // Placeholder counts were checked against the images when the record was parsed.
        let n = turn.user.matches(image_tag).count();
        user.images = images
            .by_ref()
            .take(n)
            .map(|p| p.display().to_string())
            .collect();
        out.push(user);
        out.push(Message::new(
            roles.assistant.clone(),
            turn.assistant.clone(),
        ));
    }
    out
}

/// Renders the template like [`apply_sft_template`] and returns the byte range of each
/// assistant answer (from after `"role:"` through its separator).
fn render_with_answers(
    conversation: &[Message],
    system_prompt: &str,
) -> Result<(String, Vec<Range<usize>>), ProcessorError> {
    let mut out = String::new();
    if !system_prompt.is_empty() {
        out.push_str(system_prompt);
        out.push_str(SEP);
    }
    let mut answers = Vec::new();
    for (i, message) in conversation.iter().enumerate() {
        let content = message.content.trim_matches(is_py_space);
        out.push_str(&message.role);
        out.push(':');
        if content.is_empty() {
            continue;
        }
        let start = out.len();
        out.push(' ');
        out.push_str(content);
        out.push_str(if i % 2 == 0 { SEP } else { SEP2 });
        if i % 2 == 1 {
            answers.push(start..out.len());
        }
    }
    let lead = out.len() - out.trim_start_matches(is_py_space).len();
    let text = out.trim_matches(is_py_space).to_owned();
    let answers = answers
        .into_iter()
        .map(|r| r.start.saturating_sub(lead)..r.end.saturating_sub(lead).min(text.len()))
        .collect();
    // The reference template is the authority; the spans are only valid if both agree.
    let reference = apply_sft_template(conversation, system_prompt)?;
    if reference != text {
        return Err(ProcessorError::InvalidInput(
            "template rendering with answer spans disagrees with apply_sft_template".into(),
        ));
    }
    Ok((text, answers))
}

/// Templates and tokenises a conversation (without image expansion) and labels its answer
/// tokens; returns the prompt string, the ids (BOS first) and one label per id.
///
/// `system_prompt` is the understanding [`SYSTEM_PROMPT`] in the usual case.
pub fn label_prompt(
    processor: &Processor,
    conversation: &[Message],
    system_prompt: &str,
    label_turns: LabelTurns,
) -> Result<(String, Vec<TokenId>, Vec<i64>), ProcessorError> {
    let (text, answers) = render_with_answers(conversation, system_prompt)?;
    let spans: &[Range<usize>] = match label_turns {
        LabelTurns::All => &answers,
        LabelTurns::Last => answers.last().map_or(&[], std::slice::from_ref),
    };
    let ids = processor.encode(&text)?;
    // The processor's encode adds BOS (and EOS if configured) around the body; the body's
    // byte offsets come from the underlying tokenizer.
    let encoding = processor
        .tokenizer()
        .inner()
        .encode(text.as_str(), false)
        .map_err(|e| ProcessorError::Tokenizer(e.to_string()))?;
    let body = encoding.get_ids();
    let bos = processor.special_tokens().bos;
    let shift = if ids.len() > body.len() && ids[0] == bos && &ids[1..=body.len()] == body {
        1
    } else if ids.len() >= body.len() && &ids[..body.len()] == body {
        0
    } else {
        return Err(ProcessorError::InvalidInput(
            "tokenizer body does not match the processor's encoding".into(),
        ));
    };
    let mut labels = vec![IGNORE_INDEX; ids.len()];
    for (j, &(start, end)) in encoding.get_offsets().iter().enumerate() {
        // A token belongs to an answer when it overlaps the answer's bytes.
        if spans.iter().any(|r| end > r.start && start < r.end) {
            labels[j + shift] = i64::from(ids[j + shift]);
        }
    }
    Ok((text, ids, labels))
}

/// Positions `[start, end)` of each expanded image run in `ids`.
fn image_runs(processor: &Processor, ids: &[TokenId]) -> Vec<Range<usize>> {
    let s = processor.special_tokens();
    let n = processor.config().num_image_tokens;
    let lead = usize::from(processor.config().add_special_token);
    let mut runs = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        if ids[i] == s.image_start && ids.get(i + n + 1) == Some(&s.image_end) {
            let start = i.saturating_sub(lead);
            runs.push(start..i + n + 2);
            i += n + 2;
        } else {
            i += 1;
        }
    }
    runs
}

/// Expands each image placeholder of templated `ids` into the model's image-token run and
/// carries the labels along (image runs are never labelled).
pub fn expand_labels(
    processor: &Processor,
    ids: &[TokenId],
    labels: &[i64],
    num_images: usize,
) -> Result<(Vec<TokenId>, Vec<i64>), ProcessorError> {
    let image = processor.special_tokens().image;
    let input_ids = processor.expand_image_tokens(ids, num_images)?;
    let run =
        processor.config().num_image_tokens + 2 + usize::from(processor.config().add_special_token);
    let mut expanded = Vec::with_capacity(input_ids.len());
    for (&id, &label) in ids.iter().zip(labels) {
        if id == image {
            expanded.extend(std::iter::repeat_n(IGNORE_INDEX, run));
        } else {
            expanded.push(label);
        }
    }
    Ok((input_ids, expanded))
}

/// Builds one labelled understanding sample from a parsed record and its decoded images (one
/// per placeholder, in order), applying the length limit.
///
/// The system prompt is the record's own if it has one, else the understanding
/// [`SYSTEM_PROMPT`]. `max_len` counts tokens after image expansion.
pub fn build_understanding(
    processor: &Processor,
    record: &ConversationRecord,
    images: &[RgbImage],
    roles: &ChatRoles,
    label_turns: LabelTurns,
    max_len: Option<usize>,
    overlong: Overlong,
) -> Result<SampleOutcome, ProcessorError> {
    let conversation = conversation_messages(record, roles, &processor.config().image_tag);
    let system = record.system.as_deref().unwrap_or(SYSTEM_PROMPT);
    let (prompt, ids, labels) = label_prompt(processor, &conversation, system, label_turns)?;

    let (input_ids, expanded) = expand_labels(processor, &ids, &labels, images.len())?;
    let image_processor = processor.image_processor();
    let mut pixel_values = Vec::with_capacity(images.len() * image_processor.image_numel());
    for image in images {
        pixel_values.extend(image_processor.preprocess(image)?);
    }
    let mut sample = LabeledInput {
        input: PreparedInput {
            sft_format: prompt,
            input_ids,
            pixel_values,
            num_images: images.len(),
        },
        labels: expanded,
    };
    let len = sample.len();
    let Some(max_len) = max_len.filter(|&m| len > m) else {
        return Ok(SampleOutcome::Fits(sample));
    };
    if overlong == Overlong::Skip {
        return Ok(SampleOutcome::Skipped { len });
    }
    // Never keep part of an image: cut before a run the limit falls into.
    let runs = image_runs(processor, &sample.input.input_ids);
    let mut cut = max_len;
    if let Some(r) = runs.iter().find(|r| r.start < cut && cut < r.end) {
        cut = r.start;
    }
    let kept = runs.iter().filter(|r| r.end <= cut).count();
    sample.input.input_ids.truncate(cut);
    sample.labels.truncate(cut);
    sample
        .input
        .pixel_values
        .truncate(kept * image_processor.image_numel());
    sample.input.num_images = kept;
    if sample.num_labels() == 0 {
        return Ok(SampleOutcome::Skipped { len });
    }
    Ok(SampleOutcome::Truncated(sample))
}

/// Left-pads understanding rows into one batch: the processor's `batchify` for the inputs and
/// [`IGNORE_INDEX`] on the padded label positions.
pub fn collate_understanding(
    processor: &Processor,
    rows: &[LabeledInput],
) -> Result<UnderstandingBatch, ProcessorError> {
    let prepared: Vec<PreparedInput> = rows.iter().map(|r| r.input.clone()).collect();
    let inputs = processor.batchify(&prepared)?;
    let t = inputs.seq_len;
    let mut labels = vec![IGNORE_INDEX; inputs.batch_size * t];
    for (i, row) in rows.iter().enumerate() {
        let start = i * t + (t - row.labels.len());
        labels[start..(i + 1) * t].copy_from_slice(&row.labels);
    }
    Ok(UnderstandingBatch { inputs, labels })
}
