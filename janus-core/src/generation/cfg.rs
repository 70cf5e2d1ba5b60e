//! Classifier-free guidance decoding: the batch of conditional and unconditional rows, the
//! shared KV cache, sampling and teacher forcing of image codes, and VQ decoding of the codes.

use std::ops::ControlFlow;

use burn::tensor::{Int, Tensor, TensorData};
use image::RgbImage;
use janus_llm::{KvCache, LlmError, Sampler};
use janus_vq::VqError;

use super::options::{GenerationOptions, GenerationProgress};
use super::output::to_rgb_images;
use crate::error::JanusError;
use crate::model::JanusModel;
use crate::processor::{TokenId, unconditional_ids};

/// The classifier-free-guidance batch: for every prompt, `parallel_size` pairs of rows
/// (conditional, unconditional), interleaved as in the reference.
///
/// Prompts of different lengths are left-padded with the pad token and a padding mask; when
/// they all have the same length there is no mask, exactly like the reference (whose
/// unconditional rows attend to their pad tokens as ordinary tokens).
#[derive(Debug, Clone, PartialEq)]
pub struct CfgBatch {
    /// Token ids, row-major `[rows, len]`.
    pub ids: Vec<i64>,
    /// Per row, which positions are real tokens; `None` when no row is padded.
    pub padding: Option<Vec<Vec<bool>>>,
    /// Number of prompts.
    pub prompts: usize,
    /// Images per prompt.
    pub parallel_size: usize,
    /// Length of every row.
    pub len: usize,
}

impl CfgBatch {
    /// Builds the rows from each prompt's token ids (BOS first, `<begin_of_image>` last).
    ///
    /// # Shapes
    /// - output ids: `[2 · prompts · parallel_size, max prompt length]`; row `2i` is image
    ///   `i`'s conditional row, `2i + 1` its unconditional row; image `i` belongs to prompt
    ///   `i / parallel_size`
    ///
    /// # Errors
    ///
    /// [`JanusError::InvalidOption`] for no prompt or `parallel_size` 0,
    /// [`JanusError::EmptyPrompt`] for a prompt without ids.
    pub fn new(
        prompts: &[Vec<TokenId>],
        parallel_size: usize,
        pad: TokenId,
    ) -> Result<Self, JanusError> {
        if prompts.is_empty() {
            return Err(JanusError::InvalidOption("no prompt given".into()));
        }
        if parallel_size == 0 {
            return Err(JanusError::InvalidOption(
                "parallel_size must be at least 1".into(),
            ));
        }
        if let Some(index) = prompts.iter().position(Vec::is_empty) {
            return Err(JanusError::EmptyPrompt { index });
        }
        let len = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let rows = 2 * prompts.len() * parallel_size;
        let mut ids = Vec::with_capacity(rows * len);
        let mut padding = Vec::with_capacity(rows);
        for prompt in prompts {
            let left = len - prompt.len();
            let uncond = unconditional_ids(prompt, pad);
            for _ in 0..parallel_size {
                for row in [prompt, &uncond] {
                    ids.extend(std::iter::repeat_n(i64::from(pad), left));
                    ids.extend(row.iter().map(|&id| i64::from(id)));
                    padding.push((0..len).map(|j| j >= left).collect::<Vec<_>>());
                }
            }
        }
        let padded = padding.iter().flatten().any(|real| !real);
        Ok(Self {
            ids,
            padding: padded.then_some(padding),
            prompts: prompts.len(),
            parallel_size,
            len,
        })
    }

    /// Number of rows (`2 · images`).
    pub fn rows(&self) -> usize {
        2 * self.images()
    }

    /// Number of images (`prompts · parallel_size`).
    pub fn images(&self) -> usize {
        self.prompts * self.parallel_size
    }
}

/// The state shared by sampling and teacher forcing: the model, the one KV cache of all rows
/// and the guidance weight.
struct CfgDecoder<'a> {
    model: &'a JanusModel,
    cache: KvCache,
    images: usize,
    cfg_weight: f64,
}

impl<'a> CfgDecoder<'a> {
    /// Prefills the cache with the prompt rows, sized for `num_codes` codes, and returns the
    /// guided logits of the first code.
    ///
    /// # Shapes
    /// - output: `[images, K]`
    fn start(
        model: &'a JanusModel,
        batch: &CfgBatch,
        num_codes: usize,
        cfg_weight: f64,
    ) -> Result<(Self, Tensor<2>), JanusError> {
        if num_codes == 0 {
            return Err(JanusError::InvalidOption(
                "an image needs at least one code".into(),
            ));
        }
        let lm = &model.language_model.model;
        // The last code is sampled, never fed: prompt + codes − 1 positions in all.
        let needed = batch.len + num_codes - 1;
        if needed > lm.max_position_embeddings {
            return Err(LlmError::ContextTooLong {
                length: needed,
                max: lm.max_position_embeddings,
            }
            .into());
        }
        let device = model.language_model.lm_head.weight.lazy_device();
        let (rows, len) = (batch.rows(), batch.len);
        let ids =
            Tensor::<2, Int>::from_data(TensorData::new(batch.ids.clone(), [rows, len]), &device);
        let mut cache = lm.new_cache(rows, needed);
        let hidden = lm.forward(lm.embed(ids), batch.padding.as_deref(), Some(&mut cache))?;
        let [_, _, d] = hidden.dims();
        let last = hidden.slice([0..rows, len - 1..len]).reshape([rows, d]);
        let decoder = Self {
            model,
            cache,
            images: batch.images(),
            cfg_weight,
        };
        let logits = decoder.guided(last);
        Ok((decoder, logits))
    }

    /// Feeds one code per image to both of its rows and returns the guided logits of the next.
    ///
    /// # Shapes
    /// - codes: `[images, 1]`
    /// - output: `[images, K]`
    fn feed(&mut self, codes: Tensor<2, Int>) -> Result<Tensor<2>, JanusError> {
        let n = self.images;
        // Embedding once per image and duplicating equals embedding [c0, c0, c1, c1, …].
        let embeds = self.model.embed_image_codes(codes);
        let [_, _, d] = embeds.dims();
        let embeds = embeds.repeat_dim(1, 2).reshape([2 * n, 1, d]);
        let hidden =
            self.model
                .language_model
                .model
                .forward(embeds, None, Some(&mut self.cache))?;
        Ok(self.guided(hidden.reshape([2 * n, d])))
    }

    /// `u + w·(c − u)` over the image head's logits of each (conditional, unconditional) pair.
    ///
    /// # Shapes
    /// - hidden: `[2 · images, D]` (last position, after the final norm)
    /// - output: `[images, K]`
    fn guided(&self, hidden: Tensor<2>) -> Tensor<2> {
        let n = self.images;
        let z = self.model.gen_head.forward(hidden);
        let [_, k] = z.dims();
        let z = z.reshape([n, 2, k]);
        let cond = z.clone().slice([0..n, 0..1]).reshape([n, k]);
        let uncond = z.slice([0..n, 1..2]).reshape([n, k]);
        uncond.clone() + (cond - uncond).mul_scalar(self.cfg_weight)
    }
}

impl JanusModel {
    /// Samples `num_codes` image codes for every image of a CFG batch.
    ///
    /// `on_progress` is called once per code (after it is sampled for every image); returning
    /// [`ControlFlow::Break`] stops at once with [`JanusError::Cancelled`]. The only host read
    /// per step is the sampler's read of the guided logits; the sampled ids go straight back
    /// to the device as the next input.
    ///
    /// # Shapes
    /// - output: `batch.images()` rows of `num_codes` codes, row-major over the code grid
    ///
    /// # Errors
    ///
    /// [`JanusError::InvalidOption`] for bad options or `num_codes` 0, a
    /// [`LlmError::ContextTooLong`] when prompt and codes do not fit the context,
    /// [`LlmError::NonFiniteLogits`] if the guided logits hold NaN, [`JanusError::Cancelled`],
    /// [`JanusError::QuantRefusedForGeneration`] for a quantised directory whose recorded
    /// generation gate failed.
    pub fn generate_image_codes(
        &self,
        batch: &CfgBatch,
        num_codes: usize,
        options: &GenerationOptions,
        mut on_progress: impl FnMut(GenerationProgress) -> ControlFlow<()>,
    ) -> Result<Vec<Vec<i64>>, JanusError> {
        self.check_generation_allowed()?;
        options.validate()?;
        if batch.parallel_size != options.parallel_size {
            return Err(JanusError::InvalidOption(format!(
                "the batch holds {} images per prompt but parallel_size is {}",
                batch.parallel_size, options.parallel_size
            )));
        }
        let mut sampler = Sampler::new(options.sampling.clone())?;
        let (mut decoder, mut logits) =
            CfgDecoder::start(self, batch, num_codes, options.cfg_weight)?;
        let device = self.language_model.lm_head.weight.lazy_device();
        let n = batch.images();
        let mut codes = vec![Vec::with_capacity(num_codes); n];
        for step in 0..num_codes {
            let next = sampler.sample(logits)?;
            for (row, &code) in codes.iter_mut().zip(&next) {
                row.push(code);
            }
            let progress = GenerationProgress {
                done: step + 1,
                total: num_codes,
            };
            if on_progress(progress).is_break() {
                return Err(JanusError::Cancelled);
            }
            if step + 1 == num_codes {
                break;
            }
            let input = Tensor::<2, Int>::from_data(TensorData::new(next, [n, 1]), &device);
            logits = decoder.feed(input)?;
        }
        Ok(codes)
    }

    /// Teacher forcing: feeds the given codes instead of sampling and returns the guided
    /// logits `u + w·(c − u)` of every step (before temperature), for tests and scoring.
    ///
    /// Step `i`'s logits predict code `i` from the prompt and codes `0..i`; they are the
    /// logits [`generate_image_codes`](Self::generate_image_codes) samples from when it drew
    /// the same codes.
    ///
    /// # Shapes
    /// - codes: `batch.images()` rows of `n` codes
    /// - output: `[images, n, K]`
    ///
    /// # Errors
    ///
    /// [`JanusError::InvalidOption`] for a bad `cfg_weight` or rows of different or wrong
    /// count, [`VqError::CodeOutOfRange`] for a code outside the image-token vocabulary, a
    /// [`LlmError::ContextTooLong`] when they do not fit the context.
    pub fn teacher_force_image_codes(
        &self,
        batch: &CfgBatch,
        codes: &[Vec<i64>],
        cfg_weight: f64,
    ) -> Result<Tensor<3>, JanusError> {
        GenerationOptions {
            cfg_weight,
            ..Default::default()
        }
        .validate()?;
        let n = batch.images();
        if codes.len() != n {
            return Err(JanusError::InvalidOption(format!(
                "{} code rows given for a batch of {n} images",
                codes.len()
            )));
        }
        let num_codes = codes[0].len();
        if codes.iter().any(|row| row.len() != num_codes) {
            return Err(JanusError::InvalidOption(
                "every image needs the same number of codes".into(),
            ));
        }
        self.check_codes(codes.iter().flatten().copied())?;
        let (mut decoder, first) = CfgDecoder::start(self, batch, num_codes, cfg_weight)?;
        let device = self.language_model.lm_head.weight.lazy_device();
        let all =
            Tensor::<2, Int>::from_data(TensorData::new(codes.concat(), [n, num_codes]), &device);
        let mut steps = Vec::with_capacity(num_codes);
        steps.push(first);
        for i in 0..num_codes - 1 {
            steps.push(decoder.feed(all.clone().slice([0..n, i..i + 1]))?);
        }
        Ok(Tensor::stack(steps, 1))
    }

    /// Decodes code grids to RGB pictures: VQ `decode_code`, then
    /// `clip((x + 1) / 2 · 255, 0, 255)` truncated to `u8` as the reference does. Images are
    /// decoded one at a time to bound memory.
    ///
    /// # Shapes
    /// - codes: rows of `h · w` codes, row-major over `grid = (h, w)`
    ///
    /// # Errors
    ///
    /// [`VqError::CodeOutOfRange`], [`VqError::GridMismatch`] or [`VqError::EmptyBatch`].
    pub fn decode_image_codes(
        &self,
        codes: &[Vec<i64>],
        grid: (usize, usize),
    ) -> Result<Vec<RgbImage>, JanusError> {
        if codes.is_empty() {
            return Err(VqError::EmptyBatch.into());
        }
        let device = self.language_model.lm_head.weight.lazy_device();
        let mut images = Vec::with_capacity(codes.len());
        for row in codes {
            let t =
                Tensor::<2, Int>::from_data(TensorData::new(row.clone(), [1, row.len()]), &device);
            let pixels = self.gen_vision_model.decode_codes(t, grid)?;
            images.extend(to_rgb_images(pixels));
        }
        Ok(images)
    }

    /// Rejects codes the generation embedding table cannot look up.
    fn check_codes(&self, codes: impl Iterator<Item = i64>) -> Result<(), JanusError> {
        let size = self.gen_embed.weight.shape()[0];
        for code in codes {
            if code < 0 || code as u64 >= size as u64 {
                return Err(VqError::CodeOutOfRange {
                    code,
                    codebook_size: size,
                }
                .into());
            }
        }
        Ok(())
    }
}
