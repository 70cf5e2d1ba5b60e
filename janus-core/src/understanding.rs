//! Multimodal understanding: answer a conversation about images, streaming text as it is
//! produced, one conversation or a left-padded batch of them, and multi-turn chat.

use std::ops::ControlFlow;

use burn::tensor::{Int, Tensor, TensorData};
use janus_llm::{Sampler, SamplingOptions};

use crate::error::JanusError;
use crate::janus::Janus;
use crate::processor::{ChatRoles, Message, PreparedInput, RgbImage, TokenId};

/// How to produce an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerOptions {
    /// Most tokens to generate (the reference's scripts use 512). Also bounded by the context.
    pub max_new_tokens: usize,
    /// Token selection; the default is greedy, as in the reference's `inference.py`.
    pub sampling: SamplingOptions,
    /// Generation stops when the answer contains one of these; the answer ends before it.
    pub stop_strings: Vec<String>,
}

impl Default for AnswerOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 512,
            sampling: SamplingOptions::greedy(),
            stop_strings: Vec::new(),
        }
    }
}

/// Why an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model wrote the end-of-sentence token.
    Eos,
    /// `max_new_tokens` were generated.
    MaxNewTokens,
    /// The context of the model is full.
    ContextFull,
    /// A stop string appeared.
    StopString,
    /// The text callback returned [`ControlFlow::Break`]; the answer holds what was produced
    /// until then.
    Cancelled,
}

/// One generated answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Decoded text (special tokens skipped; cut before a stop string).
    pub text: String,
    /// Generated token ids, without the final end-of-sentence token.
    pub token_ids: Vec<TokenId>,
    /// Why generation stopped.
    pub stop: StopReason,
}

/// Incremental detokenisation: hands out text only once it is final, so a callback never sees
/// half a UTF-8 character (the tokenizer decodes an incomplete byte sequence as U+FFFD) nor the
/// beginning of a stop string.
#[derive(Debug, Default)]
struct TextStream {
    emitted: usize,
}

impl TextStream {
    /// Given the whole text so far, returns the new final part and, if a stop string appeared,
    /// the text cut before it.
    fn advance<'t>(
        &mut self,
        text: &'t str,
        stops: &[String],
        last: bool,
    ) -> (&'t str, Option<usize>) {
        let stop_at = stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()))
            .min();
        let end = match stop_at {
            Some(at) => at,
            None if last => text.len(),
            None => {
                let mut end = text.trim_end_matches('\u{FFFD}').len();
                // Hold back a suffix that could still grow into a stop string.
                for s in stops {
                    for (i, _) in s.char_indices().skip(1) {
                        if text[..end].ends_with(&s[..i]) {
                            end = end.min(text[..end].len() - i);
                        }
                    }
                }
                end
            }
        };
        let start = self.emitted.min(end);
        self.emitted = self.emitted.max(end);
        (&text[start..end], stop_at)
    }
}

/// Per-row decoding state.
struct Row {
    ids: Vec<TokenId>,
    text: String,
    stream: TextStream,
    stop: Option<StopReason>,
}

impl Janus {
    /// Answers one question about `images` (none for a text-only question): the model's own
    /// roles and one image placeholder per image are applied, so no template text is typed
    /// by hand. `on_text` receives the answer piece by piece as it is produced; returning
    /// [`ControlFlow::Break`] stops it ([`StopReason::Cancelled`]).
    ///
    /// ```no_run
    /// use std::ops::ControlFlow;
    /// # use janus_core::{Janus, LoadOptions, processor::load_image};
    /// # fn main() -> Result<(), janus_core::JanusError> {
    /// # let janus = Janus::load("m", &LoadOptions::default(), &janus_core::burn::tensor::Device::flex())?;
    /// let image = load_image("cat.png")?;
    /// let answer = janus.ask("What is in the image?", &[image], &janus.answer_options(), |piece| {
    ///     print!("{piece}");
    ///     ControlFlow::Continue(())
    /// })?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`JanusError::PromptTooLong`], the processor's errors (e.g. an image it cannot use),
    /// the sampling options' errors.
    pub fn ask(
        &self,
        question: &str,
        images: &[RgbImage],
        options: &AnswerOptions,
        on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Answer, JanusError> {
        let conversation = self.processor.question(question, images.len());
        self.answer_with_images(&conversation, images, options, on_text)
    }

    /// Answers one conversation given as template messages; image paths in its messages are
    /// read relative to the current directory. `on_text` as in [`Janus::ask`].
    pub fn answer(
        &self,
        conversation: &[Message],
        options: &AnswerOptions,
        mut on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Answer, JanusError> {
        let images = self.processor.load_images(conversation, ".")?;
        self.answer_with_images(conversation, &images, options, &mut on_text)
    }

    /// Answers one conversation whose images (one per placeholder, in order) are already
    /// decoded.
    pub fn answer_with_images(
        &self,
        conversation: &[Message],
        images: &[RgbImage],
        options: &AnswerOptions,
        mut on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Answer, JanusError> {
        let item = self.processor.process_one(conversation, images)?;
        let mut answers =
            self.generate_answers(vec![item], options, &mut |_, piece| on_text(piece))?;
        Ok(answers.remove(0))
    }

    /// Answers several conversations at once (left-padded into one batch), one answer per row.
    /// `on_text` receives `(row, piece)`; [`ControlFlow::Break`] stops that row only.
    pub fn answer_batch(
        &self,
        conversations: &[(Vec<Message>, Vec<RgbImage>)],
        options: &AnswerOptions,
        mut on_text: impl FnMut(usize, &str) -> ControlFlow<()>,
    ) -> Result<Vec<Answer>, JanusError> {
        let items = conversations
            .iter()
            .map(|(messages, images)| self.processor.process_one(messages, images))
            .collect::<Result<Vec<_>, _>>()?;
        self.generate_answers(items, options, &mut on_text)
    }

    /// Teacher forcing: the next-token logits at every position of one conversation, rendered
    /// in full by the chat template (assistant turns included), for tests and scoring.
    ///
    /// # Shapes
    /// - output: `[T, V]`, row `i` predicting token `i + 1` of the rendered sequence
    pub fn conversation_logits(
        &self,
        conversation: &[Message],
        images: &[RgbImage],
    ) -> Result<Tensor<2>, JanusError> {
        let item = self.processor.process_one(conversation, images)?;
        let batch = self.processor.batchify(&[item])?;
        let embeds = self.model.embed_inputs(&batch)?;
        let logits = self
            .model
            .language_model
            .forward_embeds(embeds, None, None)?;
        let [_, t, v] = logits.dims();
        Ok(logits.reshape([t, v]))
    }

    /// The decoding loop shared by every entry point: prefill the batch, then sample one token
    /// per row per step through the KV cache until every row has stopped.
    fn generate_answers(
        &self,
        items: Vec<PreparedInput>,
        options: &AnswerOptions,
        on_text: &mut dyn FnMut(usize, &str) -> ControlFlow<()>,
    ) -> Result<Vec<Answer>, JanusError> {
        let mut sampler = Sampler::new(options.sampling.clone())?;
        let batch = self.processor.batchify(&items)?;
        let (b, t) = (batch.batch_size, batch.seq_len);
        let context = self.config.language.max_position_embeddings;
        if t >= context {
            return Err(JanusError::PromptTooLong { length: t, context });
        }
        let budget = options.max_new_tokens.min(context - t);
        let lm = &self.model.language_model;
        let vocab = self.config.language.vocab_size;
        let eos = self.processor.special_tokens().eos;
        let device = self.device();

        let embeds = self.model.embed_inputs(&batch)?;
        let padded = batch.attention_mask.iter().any(|m| !m);
        let rows_mask: Vec<Vec<bool>> = batch
            .attention_mask
            .chunks(t)
            .map(<[bool]>::to_vec)
            .collect();
        let mut cache = lm.model.new_cache(b, t + budget);
        let hidden =
            lm.model
                .forward(embeds, padded.then_some(&rows_mask[..]), Some(&mut cache))?;
        // Only the last position's logits are needed: lm_head over the whole prompt is wasted work.
        let mut last = lm
            .lm_head
            .forward(hidden.slice([0..b, t - 1..t]))
            .reshape([b, vocab]);

        let mut rows: Vec<Row> = (0..b)
            .map(|_| Row {
                ids: Vec::new(),
                text: String::new(),
                stream: TextStream::default(),
                stop: None,
            })
            .collect();
        for step in 0..budget {
            let next = sampler.sample(last)?;
            for (r, (row, &id)) in rows.iter_mut().zip(&next).enumerate() {
                if row.stop.is_some() {
                    continue;
                }
                let id = id as TokenId;
                let finishing = id == eos || step + 1 == budget;
                if id == eos {
                    row.stop = Some(StopReason::Eos);
                } else {
                    row.ids.push(id);
                }
                row.text = self.processor.decode(&row.ids)?;
                let (piece, stop_at) =
                    row.stream
                        .advance(&row.text, &options.stop_strings, finishing);
                let flow = if piece.is_empty() {
                    ControlFlow::Continue(())
                } else {
                    on_text(r, piece)
                };
                if let Some(at) = stop_at {
                    row.text.truncate(at);
                    row.stop = Some(StopReason::StopString);
                } else if flow.is_break() && row.stop.is_none() {
                    // The caller has seen exactly the text emitted so far.
                    row.text.truncate(row.stream.emitted);
                    row.stop = Some(StopReason::Cancelled);
                }
            }
            if rows.iter().all(|r| r.stop.is_some()) || step + 1 == budget {
                break;
            }
            // Finished rows keep being fed (their outputs are ignored) so the batch stays whole.
            let input = Tensor::<2, Int>::from_data(TensorData::new(next, [b, 1]), device);
            last = lm
                .forward(input, None, Some(&mut cache))?
                .reshape([b, vocab]);
        }
        let out_of_room = budget < options.max_new_tokens;
        Ok(rows
            .into_iter()
            .map(|row| Answer {
                text: row.text,
                token_ids: row.ids,
                stop: row.stop.unwrap_or(if out_of_room {
                    StopReason::ContextFull
                } else {
                    StopReason::MaxNewTokens
                }),
            })
            .collect())
    }

    /// Starts a multi-turn conversation.
    pub fn chat(&self) -> Chat<'_> {
        Chat {
            janus: self,
            history: Vec::new(),
            images: Vec::new(),
            roles: self.roles(),
        }
    }
}

/// A multi-turn conversation that keeps its history (and its images) between questions.
#[derive(Debug)]
pub struct Chat<'a> {
    janus: &'a Janus,
    history: Vec<Message>,
    images: Vec<RgbImage>,
    roles: ChatRoles,
}

impl Chat<'_> {
    /// Asks a question, with images placed before the text as in [`Janus::ask`], and records
    /// the answer (a cancelled answer is recorded as far as it went).
    pub fn ask(
        &mut self,
        question: &str,
        images: &[RgbImage],
        options: &AnswerOptions,
        on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Answer, JanusError> {
        let placeholder = &self.janus.processor.config().image_tag;
        let mut conversation = self.history.clone();
        conversation.push(self.roles.user_turn(question, images.len(), placeholder));
        conversation.push(self.roles.assistant_cue());
        let mut all_images = self.images.clone();
        all_images.extend(images.iter().cloned());
        let answer = self
            .janus
            .answer_with_images(&conversation, &all_images, options, on_text)?;
        conversation.last_mut().expect("pushed above").content = answer.text.clone();
        self.history = conversation;
        self.images = all_images;
        Ok(answer)
    }

    /// The conversation so far.
    pub fn history(&self) -> &[Message] {
        &self.history
    }

    /// Forgets the conversation.
    pub fn clear(&mut self) {
        self.history.clear();
        self.images.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_holds_back_partial_characters_and_stop_prefixes() {
        let mut s = TextStream::default();
        assert_eq!(s.advance("ab\u{FFFD}", &[], false), ("ab", None));
        assert_eq!(s.advance("abé", &[], false), ("é", None));
        let stops = vec!["END".to_string()];
        assert_eq!(s.advance("abé E", &stops, false), (" ", None));
        assert_eq!(s.advance("abé EN", &stops, false), ("", None));
        assert_eq!(s.advance("abé ENX", &stops, false), ("ENX", None));
        assert_eq!(s.advance("abé ENX END tail", &stops, false), (" ", Some(9)));
    }

    #[test]
    fn stream_flushes_everything_at_the_end() {
        let mut s = TextStream::default();
        assert_eq!(s.advance("x\u{FFFD}", &[], false), ("x", None));
        assert_eq!(s.advance("x\u{FFFD}", &[], true), ("\u{FFFD}", None));
    }
}
