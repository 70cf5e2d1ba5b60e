//! The Janus processor (`VLChatProcessor` + `VLMImageProcessor`): conversation template,
//! tokenisation, image-token expansion, image preprocessing and left-padded batching.
//!
//! ```no_run
//! use janus_core::processor::{Message, Processor, SYSTEM_PROMPT};
//!
//! let processor = Processor::from_dir("models/Janus-Pro-1B")?;
//! let conversation = vec![
//!     Message::new("<|User|>", "<image_placeholder>\nWhat is in the picture?").with_image("cat.png"),
//!     Message::new("<|Assistant|>", ""),
//! ];
//! let images = processor.load_images(&conversation, ".")?;
//! let batch = processor.process(&conversation, &images)?;
//! assert_eq!(batch.batch_size, 1);
//! # Ok::<(), janus_core::processor::ProcessorError>(())
//! ```

mod batch;
mod config;
mod error;
mod image;
pub mod resize;
mod template;
mod tokenizer;

use std::path::Path;

pub use self::batch::{BatchTensors, BatchedInputs, PreparedInput};
pub use self::config::{ImageProcessorConfig, ProcessorConfig};
pub use self::error::ProcessorError;
pub use self::image::{ImageProcessor, decode_image, load_image};
pub use self::template::{
    ASSISTANT_SEPARATOR, ChatRoles, Message, SYSTEM_PROMPT, USER_SEPARATOR, apply_sft_template,
    is_py_space, py_strip,
};
pub use self::tokenizer::{JanusTokenizer, SpecialTokens, TokenId};
pub use ::image::RgbImage;

/// The unconditional prompt of classifier-free guidance: `pad` everywhere except the first
/// (BOS) and the last (`<begin_of_image>`) token. Prompts of one or two tokens are unchanged.
pub fn unconditional_ids(ids: &[TokenId], pad: TokenId) -> Vec<TokenId> {
    let mut out = ids.to_vec();
    if out.len() > 2 {
        let last = out.len() - 1;
        out[1..last].fill(pad);
    }
    out
}

/// Turns conversations and images into model inputs, exactly like the reference
/// `VLChatProcessor`.
#[derive(Debug, Clone)]
pub struct Processor {
    config: ProcessorConfig,
    image_processor: ImageProcessor,
    tokenizer: JanusTokenizer,
    special: SpecialTokens,
    max_len: Option<usize>,
}

impl Processor {
    /// Loads the processor of a model directory: `tokenizer.json` (+ optional
    /// `tokenizer_config.json`, `special_tokens_map.json`), `preprocessor_config.json`, and
    /// optional `processor_config.json` (reference defaults when absent).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, ProcessorError> {
        let dir = dir.as_ref();
        let config_path = dir.join("processor_config.json");
        let config = if config_path.is_file() {
            ProcessorConfig::load(&config_path)?
        } else {
            ProcessorConfig::default()
        };
        let image_config = ImageProcessorConfig::load(&dir.join("preprocessor_config.json"))?;
        let tokenizer = JanusTokenizer::from_dir(dir)?;
        Self::new(config, image_config, tokenizer)
    }

    /// Builds a processor from parts, resolving the special token ids.
    pub fn new(
        config: ProcessorConfig,
        image_config: ImageProcessorConfig,
        tokenizer: JanusTokenizer,
    ) -> Result<Self, ProcessorError> {
        if config.sft_format != "deepseek" {
            return Err(ProcessorError::UnsupportedTemplate(config.sft_format));
        }
        let special = SpecialTokens {
            bos: tokenizer.bos_id(),
            eos: tokenizer.eos_id(),
            pad: tokenizer.require(&config.pad_tag, "pad_tag")?,
            image: tokenizer.require(&config.image_tag, "image_tag")?,
            image_start: tokenizer.require(&config.image_start_tag, "image_start_tag")?,
            image_end: tokenizer.require(&config.image_end_tag, "image_end_tag")?,
        };
        Ok(Self {
            config,
            image_processor: ImageProcessor::new(image_config),
            tokenizer,
            special,
            max_len: None,
        })
    }

    /// Rejects prompts longer than `max_len` tokens (after image expansion) with
    /// [`ProcessorError::PromptTooLong`]. Unlimited by default, as in the reference.
    pub fn with_max_len(mut self, max_len: usize) -> Self {
        self.max_len = Some(max_len);
        self
    }

    /// The length limit set by [`Processor::with_max_len`].
    pub fn max_len(&self) -> Option<usize> {
        self.max_len
    }

    /// Chat-level settings.
    pub fn config(&self) -> &ProcessorConfig {
        &self.config
    }

    /// The image preprocessor.
    pub fn image_processor(&self) -> &ImageProcessor {
        &self.image_processor
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &JanusTokenizer {
        &self.tokenizer
    }

    /// Ids of BOS, EOS, pad and the image tags.
    pub fn special_tokens(&self) -> SpecialTokens {
        self.special
    }

    /// The role names this model's template expects: Janus-Pro's `<|User|>`/`<|Assistant|>`
    /// when the tokenizer knows `<|User|>`, else Janus-1.3B's `User`/`Assistant`.
    pub fn roles(&self) -> ChatRoles {
        match self.tokenizer.token_to_id("<|User|>") {
            Some(_) => ChatRoles::janus_pro(),
            None => ChatRoles::janus_1_3b(),
        }
    }

    /// A user turn with the model's role and one image placeholder line per image before
    /// `text`.
    pub fn user_turn(&self, text: &str, images: usize) -> Message {
        self.roles().user_turn(text, images, &self.config.image_tag)
    }

    /// A one-question conversation ready for [`Processor::process_one`]: the user turn (with
    /// `images` placeholders) and the assistant cue.
    pub fn question(&self, text: &str, images: usize) -> Vec<Message> {
        vec![self.user_turn(text, images), self.roles().assistant_cue()]
    }

    /// Encodes text (BOS first), without image expansion.
    pub fn encode(&self, text: &str) -> Result<Vec<TokenId>, ProcessorError> {
        self.tokenizer.encode(text)
    }

    /// Decodes generated ids, skipping special tokens.
    pub fn decode(&self, ids: &[TokenId]) -> Result<String, ProcessorError> {
        self.tokenizer.decode(ids)
    }

    /// The understanding prompt: the `deepseek` template with [`SYSTEM_PROMPT`].
    pub fn understanding_prompt(&self, conversation: &[Message]) -> Result<String, ProcessorError> {
        apply_sft_template(conversation, SYSTEM_PROMPT)
    }

    /// The text-to-image prompt: the template with an empty system prompt, then
    /// `image_start_tag` (so the model continues with image tokens).
    pub fn generation_prompt(&self, conversation: &[Message]) -> Result<String, ProcessorError> {
        let mut prompt = apply_sft_template(conversation, "")?;
        prompt.push_str(&self.config.image_start_tag);
        Ok(prompt)
    }

    /// The unconditional prompt of classifier-free guidance for a generation prompt's ids:
    /// the pad token everywhere except the first (BOS) and the last (`<begin_of_image>`), as
    /// the reference builds its CFG rows and as training drops prompts.
    pub fn unconditional_ids(&self, ids: &[TokenId]) -> Vec<TokenId> {
        unconditional_ids(ids, self.special.pad)
    }

    /// Token ids of [`Processor::generation_prompt`]: BOS first, `image_start` last.
    pub fn generation_prompt_ids(
        &self,
        conversation: &[Message],
    ) -> Result<Vec<TokenId>, ProcessorError> {
        let ids = self.encode(&self.generation_prompt(conversation)?)?;
        self.check_len(ids.len())?;
        Ok(ids)
    }

    /// Replaces each image placeholder id by `image_start, image × N, image_end`
    /// (`add_image_token`); with `add_special_token` the placeholder itself is kept in front.
    ///
    /// Errors when the number of placeholders differs from `num_images`.
    pub fn expand_image_tokens(
        &self,
        ids: &[TokenId],
        num_images: usize,
    ) -> Result<Vec<TokenId>, ProcessorError> {
        let s = self.special;
        let placeholders = ids.iter().filter(|&&id| id == s.image).count();
        if placeholders != num_images {
            return Err(ProcessorError::ImageCountMismatch {
                placeholders,
                images: num_images,
            });
        }
        let n = self.config.num_image_tokens;
        let mut out = Vec::with_capacity(ids.len() + placeholders * (n + 2));
        for &id in ids {
            if id != s.image {
                out.push(id);
                continue;
            }
            if self.config.add_special_token {
                out.push(id);
            }
            out.push(s.image_start);
            out.extend(std::iter::repeat_n(s.image, n));
            out.push(s.image_end);
        }
        Ok(out)
    }

    /// Loads every image named by the conversation's messages, in order; relative paths are
    /// resolved against `base_dir`.
    pub fn load_images(
        &self,
        conversation: &[Message],
        base_dir: impl AsRef<Path>,
    ) -> Result<Vec<RgbImage>, ProcessorError> {
        let base = base_dir.as_ref();
        conversation
            .iter()
            .flat_map(|m| m.images.iter())
            .map(|p| load_image(base.join(p)))
            .collect()
    }

    /// Processes one conversation (`process_one`): understanding template, encode, expand
    /// image tokens, preprocess `images` (one per placeholder, in order).
    pub fn process_one(
        &self,
        conversation: &[Message],
        images: &[RgbImage],
    ) -> Result<PreparedInput, ProcessorError> {
        let prompt = self.understanding_prompt(conversation)?;
        self.process_prompt(&prompt, images)
    }

    /// Processes an already templated prompt string (`process_one(prompt=...)`).
    pub fn process_prompt(
        &self,
        prompt: &str,
        images: &[RgbImage],
    ) -> Result<PreparedInput, ProcessorError> {
        let ids = self.encode(prompt)?;
        let input_ids = self.expand_image_tokens(&ids, images.len())?;
        self.check_len(input_ids.len())?;
        let mut pixel_values =
            Vec::with_capacity(images.len() * self.image_processor.image_numel());
        for image in images {
            pixel_values.extend(self.image_processor.preprocess(image)?);
        }
        Ok(PreparedInput {
            sft_format: prompt.to_owned(),
            input_ids,
            pixel_values,
            num_images: images.len(),
        })
    }

    /// Left-pads prepared inputs into one batch (`batchify`).
    pub fn batchify(&self, items: &[PreparedInput]) -> Result<BatchedInputs, ProcessorError> {
        BatchedInputs::from_prepared(
            items,
            self.special.pad,
            self.special.image,
            self.config.num_image_tokens,
            self.image_processor.image_size(),
            self.max_len,
        )
    }

    /// One conversation as a batch of one (`VLChatProcessor.__call__`).
    pub fn process(
        &self,
        conversation: &[Message],
        images: &[RgbImage],
    ) -> Result<BatchedInputs, ProcessorError> {
        self.batchify(&[self.process_one(conversation, images)?])
    }

    fn check_len(&self, len: usize) -> Result<(), ProcessorError> {
        match self.max_len {
            Some(max_len) if len > max_len => Err(ProcessorError::PromptTooLong { len, max_len }),
            _ => Ok(()),
        }
    }
}
