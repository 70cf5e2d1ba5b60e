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
//! use janus_core::{GenerationOptions, Janus, LoadOptions, save_images};
//! # fn main() -> Result<(), janus_core::JanusError> {
//! let device = janus_core::burn::tensor::Device::flex();
//! let janus = Janus::load("models/Janus-Pro-1B", &LoadOptions::default(), &device)?;
//! let options = GenerationOptions { parallel_size: 2, seed: 7, ..Default::default() };
//! let images = janus.generate_images(&["a red cube on a wooden table"], &options, |p| {
//!     eprint!("\r{}/{}", p.done, p.total);
//!     ControlFlow::Continue(())
//! })?;
//! let rgb: Vec<_> = images.into_iter().map(|g| g.image).collect();
//! let paths = save_images(&rgb, "out", "cube")?;
//! # Ok(()) }
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, RgbImage};
use janus_llm::{KvCache, LlmError, Sampler, SamplingOptions};
use janus_vq::VqError;

use crate::error::JanusError;
use crate::janus::Janus;
use crate::model::JanusModel;
use crate::processor::{Message, TokenId};

/// How to draw images.
///
/// The defaults are the reference's (`cfg_weight` 5, temperature 1, plain multinomial
/// sampling), with one image per prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOptions {
    /// Images per prompt (the reference's `parallel_size`). At least 1. Default `1`.
    pub parallel_size: usize,
    /// Classifier-free guidance weight `w` in `u + w·(c − u)`: `1` is the conditional model
    /// alone, `0` the unconditional one. Finite and not negative. Default `5.0`.
    pub cfg_weight: f64,
    /// Divides the guided logits before the softmax; `0` picks the most likely code (argmax).
    /// Finite and not negative. Default `1.0`.
    pub temperature: f64,
    /// Sample only among the `k` most likely codes. `None` (the reference) keeps all.
    pub top_k: Option<usize>,
    /// Nucleus sampling threshold in `(0, 1]`. `None` (the reference) keeps all.
    pub top_p: Option<f64>,
    /// Seed of the sampler: the same seed, prompts and options give the same images.
    /// Default `42`.
    pub seed: u64,
}

impl Default for GenerationOptions {
    fn default() -> Self {
        Self {
            parallel_size: 1,
            cfg_weight: 5.0,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: 42,
        }
    }
}

impl GenerationOptions {
    /// Checks every field against its documented range.
    ///
    /// # Errors
    ///
    /// [`JanusError::InvalidOption`] naming the first bad field.
    pub fn validate(&self) -> Result<(), JanusError> {
        let bad = |m: String| Err(JanusError::InvalidOption(m));
        if self.parallel_size == 0 {
            return bad("parallel_size must be at least 1".into());
        }
        // Written so that NaN fails too.
        if !(self.cfg_weight.is_finite() && self.cfg_weight >= 0.0) {
            return bad(format!(
                "cfg_weight {} must be finite and >= 0",
                self.cfg_weight
            ));
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!(
                "temperature {} must be finite and >= 0 (0 is argmax)",
                self.temperature
            ));
        }
        if self.top_k == Some(0) {
            return bad("top_k 0 keeps no code; use None for no limit".into());
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return bad(format!("top_p {p} must be in (0, 1]"));
        }
        Ok(())
    }

    /// The options of the per-step [`Sampler`].
    pub fn sampling(&self) -> SamplingOptions {
        SamplingOptions {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
        }
    }
}

/// Where a generation stands, passed to the progress callback after every sampled code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerationProgress {
    /// Codes sampled so far for every image (1 at the first call).
    pub done: usize,
    /// Codes per image.
    pub total: usize,
}

/// One generated image with the codes it was decoded from.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedImage {
    /// Index of its prompt in the call.
    pub prompt: usize,
    /// The sampled codes, row-major over the code grid.
    pub codes: Vec<i64>,
    /// The decoded picture.
    pub image: RgbImage,
}

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
        let pad = i64::from(pad);
        let rows = 2 * prompts.len() * parallel_size;
        let mut ids = Vec::with_capacity(rows * len);
        let mut padding = Vec::with_capacity(rows);
        for prompt in prompts {
            let (n, left) = (prompt.len(), len - prompt.len());
            for _ in 0..parallel_size {
                for uncond in [false, true] {
                    ids.extend(std::iter::repeat_n(pad, left));
                    ids.extend(prompt.iter().enumerate().map(|(j, &id)| {
                        // The unconditional row keeps only BOS and <begin_of_image>.
                        if uncond && j > 0 && j + 1 < n {
                            pad
                        } else {
                            i64::from(id)
                        }
                    }));
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
    /// [`LlmError::NonFiniteLogits`] if the guided logits hold NaN, [`JanusError::Cancelled`].
    pub fn generate_image_codes(
        &self,
        batch: &CfgBatch,
        num_codes: usize,
        options: &GenerationOptions,
        mut on_progress: impl FnMut(GenerationProgress) -> ControlFlow<()>,
    ) -> Result<Vec<Vec<i64>>, JanusError> {
        options.validate()?;
        if batch.parallel_size != options.parallel_size {
            return Err(JanusError::InvalidOption(format!(
                "the batch holds {} images per prompt but parallel_size is {}",
                batch.parallel_size, options.parallel_size
            )));
        }
        let mut sampler = Sampler::new(options.sampling())?;
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

/// Converts decoded images to RGB: `clip((x + 1) / 2 · 255, 0, 255)` computed in `f32`, then
/// truncated toward zero (not rounded), as the reference stores into a `uint8` array.
///
/// # Shapes
/// - decoded: `[B, 3, H, W]`, roughly in `[-1, 1]`
/// - output: `B` images of `W × H`
pub fn to_rgb_images(decoded: Tensor<4>) -> Vec<RgbImage> {
    let [b, c, h, w] = decoded.dims();
    let data: Vec<f32> = decoded.into_data().iter::<f32>().collect();
    let plane = h * w;
    (0..b)
        .map(|i| {
            let mut raw = Vec::with_capacity(plane * 3);
            for p in 0..plane {
                for ch in 0..3 {
                    // A grayscale decoder (c == 1) would fill all three channels.
                    let x = data[(i * c + ch.min(c - 1)) * plane + p];
                    raw.push(((x + 1.0) / 2.0 * 255.0).clamp(0.0, 255.0) as u8);
                }
            }
            RgbImage::from_raw(w as u32, h as u32, raw).expect("buffer sized to w·h·3")
        })
        .collect()
}

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
        let (user, assistant) = self.roles();
        vec![Message::new(user, prompt), Message::new(assistant, "")]
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
    /// [`JanusModel::generate_image_codes`].
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

/// Writes one PNG atomically: encoded into a temporary file in the same directory, flushed to
/// disk, then renamed over `path`. On failure nothing is left behind.
///
/// # Errors
///
/// [`JanusError::Output`] when the directory cannot be written or encoding fails.
pub fn save_png(image: &RgbImage, path: impl AsRef<Path>) -> Result<(), JanusError> {
    let path = path.as_ref();
    let tmp = write_temp_png(image, path)?;
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        JanusError::Output {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Writes `images` as `dir/{stem}_{i}.png` (the directory is created if needed) and returns
/// the paths.
///
/// Every image is first written to a temporary file; only when all are written are they
/// renamed into place, so a failure leaves no partial file and, short of a failing rename,
/// no partial set.
///
/// # Errors
///
/// [`JanusError::InvalidOption`] for an empty `stem` or one with a path separator,
/// [`JanusError::Output`] when the directory cannot be created or written.
pub fn save_images(
    images: &[RgbImage],
    dir: impl AsRef<Path>,
    stem: &str,
) -> Result<Vec<PathBuf>, JanusError> {
    if stem.is_empty() || stem.contains(['/', '\\']) || stem == "." || stem == ".." {
        return Err(JanusError::InvalidOption(format!(
            "file stem {stem:?} must be a plain, non-empty name"
        )));
    }
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|source| JanusError::Output {
        path: dir.to_path_buf(),
        source,
    })?;
    let paths: Vec<PathBuf> = (0..images.len())
        .map(|i| dir.join(format!("{stem}_{i}.png")))
        .collect();
    let mut temps = Vec::with_capacity(images.len());
    for (image, path) in images.iter().zip(&paths) {
        match write_temp_png(image, path) {
            Ok(tmp) => temps.push(tmp),
            Err(e) => {
                for tmp in &temps {
                    let _ = std::fs::remove_file(tmp);
                }
                return Err(e);
            }
        }
    }
    for (i, (tmp, path)) in temps.iter().zip(&paths).enumerate() {
        if let Err(source) = std::fs::rename(tmp, path) {
            for tmp in &temps[i..] {
                let _ = std::fs::remove_file(tmp);
            }
            return Err(JanusError::Output {
                path: path.clone(),
                source,
            });
        }
    }
    Ok(paths)
}

/// Encodes `image` into a fresh hidden file next to `path` and syncs it; returns its path.
/// Removes the file again on any failure.
fn write_temp_png(image: &RgbImage, path: &Path) -> Result<PathBuf, JanusError> {
    let output_err = |source| JanusError::Output {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| output_err(std::io::Error::other("not a file path")))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Unique per process and call, so concurrent writers never share a temporary file.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.{}-{n}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(output_err)?;
    let written = (|| -> std::io::Result<()> {
        let mut out = BufWriter::new(file);
        PngEncoder::new(&mut out)
            .write_image(
                image.as_raw(),
                image.width(),
                image.height(),
                ExtendedColorType::Rgb8,
            )
            .map_err(std::io::Error::other)?;
        out.flush()?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    match written {
        Ok(()) => Ok(tmp),
        Err(source) => {
            let _ = std::fs::remove_file(&tmp);
            Err(output_err(source))
        }
    }
}
