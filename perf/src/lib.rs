//! The standard inference workload (`shared/bench/WORKLOAD.md`) on random weights, shared by
//! the `bench` and `llm_phases` binaries and the criterion benches in `benches/stages.rs`.
//!
//! Every stage calls the same library code the real pipelines call (`JanusModel`,
//! `LlamaModel::forward` with a `KvCache`, `generate_image_codes`, `decode_image_codes`); nothing
//! here is benchmark-only model code. Each stage ends with a read back to the host (or a device
//! sync), so a timer around it measures finished work on lazy backends too.

#![warn(missing_docs)]

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use anyhow::Context;
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, Device, Distribution, Int, Tensor, TensorData};
use janus_core::janus_llm::{KvCache, Sampler, SamplingOptions};
use janus_core::processor::TokenId;
use janus_core::{CfgBatch, GenerationOptions, JanusConfig, JanusModel};

/// Positions of the understanding prefill (576 image tokens plus text).
pub const PREFILL_LEN: usize = 640;
/// Greedy decode steps after the prefill.
pub const DECODE_STEPS: usize = 32;
/// Prompt positions of the generation batch.
pub const GEN_PROMPT_LEN: usize = 32;
/// Timed image-generation steps.
pub const GEN_STEPS: usize = 32;
/// Classifier-free guidance weight.
pub const CFG_WEIGHT: f64 = 5.0;
/// Images of the reference's own generation call (`parallel_size = 16`: 32 CFG rows a step).
pub const IMAGES_PER_CALL: usize = 16;

/// Model shape to run the workload at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Janus-Pro-1B (= Janus-1.3B), the standard workload.
    Pro1b,
    /// Janus-Pro-7B (30 layers, hidden 4096): for the half-precision memory and speed check
    /// (7.4 B parameters: 14.8 GB in bf16/f16, 29.7 GB in f32).
    Pro7b,
    /// The bundled test fixture (`tests/fixtures/tiny-janus`), for smoke runs.
    Tiny,
}

impl Shape {
    /// Parses `pro-1b`, `pro-7b` or `tiny`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "pro-1b" => Some(Self::Pro1b),
            "pro-7b" => Some(Self::Pro7b),
            "tiny" => Some(Self::Tiny),
            _ => None,
        }
    }

    /// The name `parse` accepts.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pro1b => "pro-1b",
            Self::Pro7b => "pro-7b",
            Self::Tiny => "tiny",
        }
    }

    /// The model config of this shape.
    pub fn config(self) -> anyhow::Result<JanusConfig> {
        Ok(match self {
            Self::Pro1b => JanusConfig::janus_pro_1b(),
            Self::Pro7b => JanusConfig::janus_pro_7b(),
            Self::Tiny => {
                let dir = janus_cli::bundled_model_dir();
                JanusConfig::from_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
            }
        })
    }
}

/// Draws every lazily initialised parameter now and casts it to the target dtype, one tensor at
/// a time (the loader's `FloatCastAdapter` leaves a loaded model in the same state).
struct Materialise(DType);

impl ModuleMapper for Materialise {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

/// A random-weight model and the inputs of every stage.
pub struct Workload {
    /// The model, every parameter materialised in `dtype`.
    pub model: JanusModel,
    /// Its config.
    pub config: JanusConfig,
    /// Where it lives.
    pub device: Device,
    /// Parameter dtype.
    pub dtype: DType,
}

impl Workload {
    /// Builds the model with `JanusModel::init` and materialises every parameter in `dtype`.
    pub fn new(config: JanusConfig, dtype: DType, device: Device) -> anyhow::Result<Self> {
        Self::with_quant(config, dtype, None, device)
    }

    /// [`Workload::new`], with the language model's linear layers quantised to `quant` (each
    /// drawn in f32 and quantised before the next is drawn, as a checkpoint load does shard by
    /// shard).
    pub fn with_quant(
        config: JanusConfig,
        dtype: DType,
        quant: Option<janus_core::QuantScheme>,
        device: Device,
    ) -> anyhow::Result<Self> {
        janus_cli::tune_allocator();
        janus_core::check_param_dtype(&device, dtype)?;
        device.seed(0);
        let mut model = JanusModel::init(&config, &device)?;
        if let Some(scheme) = quant {
            let layers = config.language.num_hidden_layers;
            for (role, _, linear) in model.language_model.linears_mut() {
                linear.quantize(scheme.kind_for(role, layers))?;
            }
        }
        let model = model.map(&mut Materialise(dtype));
        let workload = Self {
            model,
            config,
            device,
            dtype,
        };
        workload.sync();
        Ok(workload)
    }

    /// Waits for the device's pending work.
    pub fn sync(&self) {
        self.device.sync().expect("device sync");
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.model.num_params()
    }

    // --- vision ---

    /// One normalised image `[1, 3, S, S]` in the model dtype.
    pub fn vision_input(&self) -> Tensor<4> {
        let s = self.config.vision.image_size;
        Tensor::random(
            [1, 3, s, s],
            Distribution::Uniform(-1.0, 1.0),
            (&self.device, self.dtype),
        )
    }

    /// SigLIP then the understanding aligner, as `embed_inputs` runs them: `[1, N, D]`.
    pub fn vision(&self, pixels: Tensor<4>) -> Tensor<3> {
        let features = self
            .model
            .aligner
            .forward(self.model.vision_model.forward(pixels));
        self.sync();
        features
    }

    // --- understanding: prefill and greedy decode ---

    /// Prefill positions: [`PREFILL_LEN`], or fewer when the context cannot also hold
    /// [`DECODE_STEPS`] more (the tiny fixture's context is 512).
    pub fn prefill_len(&self) -> usize {
        let context = self.config.language.max_position_embeddings;
        PREFILL_LEN
            .min(context.saturating_sub(DECODE_STEPS + 1))
            .max(1)
    }

    /// A random `[1, prefill_len, D]` embedding sequence in the model dtype.
    pub fn prefill_input(&self) -> Tensor<3> {
        let d = self.config.language.hidden_size;
        Tensor::random(
            [1, self.prefill_len(), d],
            Distribution::Normal(0.0, 1.0),
            (&self.device, self.dtype),
        )
    }

    /// The embeddings through the layers into a new cache with room for `steps` more positions,
    /// then `lm_head` on the last position and argmax. Returns the cache and the first token.
    pub fn prefill(&self, embeds: Tensor<3>, steps: usize) -> anyhow::Result<(KvCache, i64)> {
        let lm = &self.model.language_model;
        let [b, t, d] = embeds.dims();
        let mut cache = lm.model.new_cache(b, t + steps);
        let hidden = lm.model.forward(embeds, None, Some(&mut cache))?;
        let last = hidden.slice([0..b, t - 1..t]).reshape([b, d]);
        let next = greedy(lm.lm_head.forward(last))?;
        Ok((cache, next))
    }

    /// One greedy step of the understanding loop: embed the token, the layers with the cache,
    /// `lm_head`, argmax (read on the host, as `Janus::answer` does).
    pub fn decode_step(&self, cache: &mut KvCache, token: i64) -> anyhow::Result<i64> {
        let lm = &self.model.language_model;
        let vocab = self.config.language.vocab_size;
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![token], [1, 1]), &self.device);
        let logits = lm.forward(ids, None, Some(cache))?.reshape([1, vocab]);
        greedy(logits)
    }

    /// `steps` greedy decode steps; returns the time of each.
    pub fn decode(
        &self,
        cache: &mut KvCache,
        mut token: i64,
        steps: usize,
    ) -> anyhow::Result<Vec<Duration>> {
        let mut times = Vec::with_capacity(steps);
        for _ in 0..steps {
            let start = Instant::now();
            token = self.decode_step(cache, token)?;
            times.push(start.elapsed());
        }
        Ok(times)
    }

    // --- image generation ---

    /// One prompt of [`GEN_PROMPT_LEN`] tokens as a CFG batch (conditional + unconditional
    /// row), as `Janus::generation_batch` builds it.
    pub fn gen_batch(&self) -> anyhow::Result<CfgBatch> {
        self.prompt_batch(1)
    }

    /// The [`GEN_PROMPT_LEN`]-token prompt drawn `parallel_size` times.
    fn prompt_batch(&self, parallel_size: usize) -> anyhow::Result<CfgBatch> {
        let vocab = self.config.language.vocab_size as TokenId;
        let prompt: Vec<TokenId> = (0..GEN_PROMPT_LEN as TokenId)
            .map(|i| (1 + 37 * i) % (vocab - 1))
            .collect();
        Ok(CfgBatch::new(&[prompt], parallel_size, vocab - 1)?)
    }

    /// The prompt of [`Workload::gen_batch`] drawn [`IMAGES_PER_CALL`] times in one batch
    /// (`parallel_size = 16`), as the reference's generation script does.
    pub fn images_batch(&self) -> anyhow::Result<CfgBatch> {
        self.prompt_batch(IMAGES_PER_CALL)
    }

    /// Draws every image of `batch` whole (CFG weight 5, temperature 1) in one
    /// `generate_image_codes` call and decodes them all to pixels; returns the seconds taken.
    pub fn draw_images(&self, batch: &CfgBatch, seed: u64) -> anyhow::Result<f64> {
        let options = GenerationOptions::default()
            .with_cfg_weight(CFG_WEIGHT)
            .with_parallel_size(batch.parallel_size)
            .with_seed(seed);
        let start = Instant::now();
        let codes =
            self.model
                .generate_image_codes(batch, self.codes_per_image(), &options, |_| {
                    ControlFlow::Continue(())
                })?;
        self.vq_decode(&codes)?;
        Ok(start.elapsed().as_secs_f64())
    }

    /// A full `generate_image_codes` call drawing `steps + 1` codes (CFG weight 5,
    /// temperature 1). Returns the time of the prompt prefill plus the first draw, and the time
    /// of each of the `steps` steps after it (feed the code through `gen_embed`, `gen_aligner`
    /// and the layers with the cache, `gen_head`, CFG mix, sample).
    pub fn generate(
        &self,
        batch: &CfgBatch,
        steps: usize,
        seed: u64,
    ) -> anyhow::Result<(Duration, Vec<Duration>)> {
        let options = GenerationOptions::default()
            .with_cfg_weight(CFG_WEIGHT)
            .with_parallel_size(batch.parallel_size)
            .with_seed(seed);
        let mut marks = Vec::with_capacity(steps + 2);
        marks.push(Instant::now());
        self.model
            .generate_image_codes(batch, steps + 1, &options, |_| {
                marks.push(Instant::now());
                ControlFlow::Continue(())
            })?;
        let first = marks[1] - marks[0];
        let times = marks[1..].windows(2).map(|w| w[1] - w[0]).collect();
        Ok((first, times))
    }

    // --- VQ decode ---

    /// Codes per generated image (576 at the real shape).
    pub fn codes_per_image(&self) -> usize {
        let g = self.config.gen_vision.grid();
        g * g
    }

    /// One image's worth of codes.
    pub fn vq_codes(&self) -> Vec<Vec<i64>> {
        let size = self.config.gen_vision.codebook_size as i64;
        vec![
            (0..self.codes_per_image() as i64)
                .map(|i| (7919 * i + 13) % size)
                .collect(),
        ]
    }

    /// Codes → RGB through `decode_image_codes`, as `Janus::generate_images` does.
    pub fn vq_decode(&self, codes: &[Vec<i64>]) -> anyhow::Result<()> {
        let g = self.config.gen_vision.grid();
        let images = self.model.decode_image_codes(codes, (g, g))?;
        anyhow::ensure!(images.len() == codes.len(), "one image per code row");
        Ok(())
    }
}

/// Argmax of one row, read on the host through the pipelines' greedy sampler.
fn greedy(logits: Tensor<2>) -> anyhow::Result<i64> {
    let mut sampler = Sampler::new(SamplingOptions::greedy())?;
    Ok(sampler.sample(logits)?[0])
}

/// Peak resident set size of this process in MiB (`VmHWM`), if the platform reports it.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Median of a non-empty sample (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Mean of durations in milliseconds.
pub fn mean_ms(times: &[Duration]) -> f64 {
    times.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / times.len().max(1) as f64
}
