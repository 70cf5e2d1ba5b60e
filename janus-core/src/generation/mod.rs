//! Text-to-image generation with classifier-free guidance (the reference's
//! `generation_inference.py`), VQ decoding to RGB, and atomic PNG output.
//!
//! Every prompt becomes `2·P` rows (`P` = [`GenerationOptions::parallel_size`]): a conditional
//! row with the templated prompt and an unconditional row where everything but the first and
//! the last token (BOS and `<begin_of_image>`) is the pad token. All rows share one KV cache.
//! At every step the image head scores the last position of each row, the pair is mixed as
//! `u + w·(c − u)`, one code is sampled per image and its embedding
//! (`gen_aligner(gen_embed(code))`) is fed to both rows of the pair. After `h·w` codes the VQ
//! decoder turns the code grid into pixels.
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! use janus_core::{Janus, LoadOptions};
//! # fn main() -> Result<(), janus_core::JanusError> {
//! let device = janus_core::burn::tensor::Device::flex();
//! let janus = Janus::load("models/Janus-Pro-1B", &LoadOptions::default(), &device)?;
//! // The model directory's recommended settings (generation_config.json), then our own.
//! let options = janus.generation_options().with_parallel_size(2).with_seed(7);
//! let images = janus.generate_images(&["a red cube on a wooden table"], &options, |p| {
//!     eprint!("\r{}/{}", p.done, p.total);
//!     ControlFlow::Continue(())
//! })?;
//! for (i, image) in images.iter().enumerate() {
//!     image.save(format!("cube_{i}.png"))?;
//! }
//! # Ok(()) }
//! ```

mod cfg;
mod options;
mod output;

use std::ops::ControlFlow;

pub use cfg::CfgBatch;
pub use options::{GenerationOptions, GenerationProgress};
pub use output::{GeneratedImage, png_bytes, save_images, save_png, to_rgb_images};

use crate::error::JanusError;
use crate::janus::Janus;
use crate::processor::Message;

impl Janus {
    /// Side lengths `(h, w)` of the code grid of one generated image (from the config:
    /// image size / VQ downsampling; 24×24 for the released models).
    pub fn image_grid(&self) -> (usize, usize) {
        let g = self.config.gen_vision.grid();
        (g, g)
    }

    /// Codes per generated image (`h · w`; 576 for the released models).
    pub fn codes_per_image(&self) -> usize {
        let (h, w) = self.image_grid();
        h * w
    }

    /// The conversation the reference builds for a text-to-image prompt: the prompt as the
    /// user turn, then an empty assistant turn.
    pub fn generation_conversation(&self, prompt: &str) -> Vec<Message> {
        self.processor.question(prompt, 0)
    }

    /// The CFG batch of several conversations: each through the template with an empty system
    /// prompt plus `<begin_of_image>`, then [`CfgBatch::new`].
    ///
    /// # Errors
    ///
    /// The processor's errors (empty conversation, prompt too long, ...) and those of
    /// [`CfgBatch::new`].
    pub fn generation_batch(
        &self,
        conversations: &[Vec<Message>],
        parallel_size: usize,
    ) -> Result<CfgBatch, JanusError> {
        let prompts = conversations
            .iter()
            .map(|c| self.processor.generation_prompt_ids(c))
            .collect::<Result<Vec<_>, _>>()?;
        CfgBatch::new(&prompts, parallel_size, self.processor.special_tokens().pad)
    }

    /// Draws `parallel_size` images for each text prompt.
    ///
    /// Images come back prompt by prompt (`parallel_size` each). `on_progress` is called once
    /// per code; returning [`ControlFlow::Break`] cancels with [`JanusError::Cancelled`].
    ///
    /// # Errors
    ///
    /// [`JanusError::InvalidOption`], [`JanusError::EmptyPrompt`] for a blank prompt,
    /// [`JanusError::Cancelled`], and the errors of
    /// [`JanusModel::generate_image_codes`](crate::JanusModel::generate_image_codes).
    pub fn generate_images<S: AsRef<str>>(
        &self,
        prompts: &[S],
        options: &GenerationOptions,
        on_progress: impl FnMut(GenerationProgress) -> ControlFlow<()>,
    ) -> Result<Vec<GeneratedImage>, JanusError> {
        if let Some(index) = prompts.iter().position(|p| p.as_ref().trim().is_empty()) {
            return Err(JanusError::EmptyPrompt { index });
        }
        let conversations: Vec<_> = prompts
            .iter()
            .map(|p| self.generation_conversation(p.as_ref()))
            .collect();
        self.generate_images_from_conversations(&conversations, options, on_progress)
    }

    /// Like [`generate_images`](Self::generate_images), with full conversations (for
    /// templates with other role names, or multi-turn context).
    pub fn generate_images_from_conversations(
        &self,
        conversations: &[Vec<Message>],
        options: &GenerationOptions,
        on_progress: impl FnMut(GenerationProgress) -> ControlFlow<()>,
    ) -> Result<Vec<GeneratedImage>, JanusError> {
        options.validate()?;
        let batch = self.generation_batch(conversations, options.parallel_size)?;
        let codes = self.model.generate_image_codes(
            &batch,
            self.codes_per_image(),
            options,
            on_progress,
        )?;
        let images = self.model.decode_image_codes(&codes, self.image_grid())?;
        Ok(codes
            .into_iter()
            .zip(images)
            .enumerate()
            .map(|(i, (codes, image))| GeneratedImage {
                prompt: i / options.parallel_size,
                codes,
                image,
            })
            .collect())
    }
}
