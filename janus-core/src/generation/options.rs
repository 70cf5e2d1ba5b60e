//! What a generation call may be told: [`GenerationOptions`] and its progress report.

use janus_llm::SamplingOptions;

use crate::error::JanusError;

/// How to draw images.
///
/// The defaults are the reference's (`cfg_weight` 5, temperature 1, plain multinomial
/// sampling, seed 42), with one image per prompt. A model directory's
/// `generation_config.json` may recommend others: [`Janus::generation_options`](crate::Janus::generation_options).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOptions {
    /// Images per prompt (the reference's `parallel_size`). At least 1. Default `1`.
    pub parallel_size: usize,
    /// Classifier-free guidance weight `w` in `u + w·(c − u)`: `1` is the conditional model
    /// alone, `0` the unconditional one. Finite and not negative. Default `5.0`.
    pub cfg_weight: f64,
    /// How each code is drawn from the guided logits: temperature (`0` = argmax), top-k,
    /// top-p and the seed (the same seed, prompts and options give the same images).
    pub sampling: SamplingOptions,
}

impl Default for GenerationOptions {
    fn default() -> Self {
        Self {
            parallel_size: 1,
            cfg_weight: 5.0,
            sampling: SamplingOptions::default(),
        }
    }
}

impl GenerationOptions {
    /// Sets [`parallel_size`](Self::parallel_size).
    pub fn with_parallel_size(mut self, parallel_size: usize) -> Self {
        self.parallel_size = parallel_size;
        self
    }

    /// Sets [`cfg_weight`](Self::cfg_weight).
    pub fn with_cfg_weight(mut self, cfg_weight: f64) -> Self {
        self.cfg_weight = cfg_weight;
        self
    }

    /// Sets the sampler's seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.sampling.seed = seed;
        self
    }

    /// Checks every field against its documented range.
    ///
    /// # Errors
    ///
    /// [`JanusError::InvalidOption`] for `parallel_size` or `cfg_weight`, the sampling
    /// options' own errors ([`janus_llm::LlmError`]) for the rest.
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
        self.sampling.validate()?;
        Ok(())
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
