//! The training loop: load, freeze (stage and LoRA), stream mixed batches, accumulate, clip,
//! step, log, checkpoint, validate, resume, and export the result as a model directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Device;
use janus_core::{Janus, JanusModel, LoadOptions};
use serde::Serialize;

use crate::checkpoint::{
    RngState, TrainState, latest_checkpoint, load_checkpoint, save_checkpoint,
};
use crate::config::TrainConfig;
use crate::data::{DataConfig, DataState, MixRatio, MixedLoader, VqCodeEncoder};
use crate::export::{ExportOptions, export_model_dir_as};
use crate::lora::{apply_lora, merge_lora, save_adapter};
use crate::loss::{mixed_loss, understanding_loss};
use crate::optim::GradAccumulator;
use crate::parallel::{DataParallel, MicroBatch, MicroLoss};
use crate::stage;
use crate::{GenerationBatch, MixedBatch};
use janus_core::processor::ChatRoles;

/// Everything that can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Loading the base model.
    #[error(transparent)]
    Model(#[from] janus_core::JanusError),
    /// The configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Reading data.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// Computing a loss.
    #[error(transparent)]
    Loss(#[from] crate::loss::LossError),
    /// Applying, saving or merging LoRA.
    #[error(transparent)]
    Lora(#[from] crate::lora::LoraError),
    /// Building the optimiser.
    #[error(transparent)]
    Optim(#[from] crate::optim::OptimError),
    /// Writing or reading a checkpoint (a resume from another model lands here).
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    /// Writing the final model directory.
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    /// Writing metrics.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A data-parallel step failed on a worker.
    #[error(transparent)]
    Parallel(#[from] crate::parallel::ParallelError),
    /// `train_parallel` was given no device.
    #[error("no device to train on")]
    NoDevice,
    /// A saved data position that cannot be read back.
    #[error("checkpoint data position is unreadable: {0}")]
    DataPosition(serde_json::Error),
}

/// What one optimiser step did; also the line written to `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    /// Steps completed (1-based).
    pub step: usize,
    /// Weighted total loss (mean over the micro-batches).
    pub loss: f64,
    /// Understanding/text loss, when the step had such rows.
    pub loss_und: Option<f64>,
    /// Image-head loss, when the step had text-to-image rows.
    pub loss_gen: Option<f64>,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: Option<f64>,
    /// Tokens processed (prompt, image and answer positions).
    pub tokens: usize,
    /// Tokens per second over the step.
    pub tokens_per_s: f64,
    /// Validation loss, on the steps that validate.
    pub val_loss: Option<f64>,
}

/// The outcome of [`train`].
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Step the run started from (non-zero after a resume).
    pub start_step: usize,
    /// The per-step reports of this invocation.
    pub reports: Vec<StepReport>,
    /// The exported model directory (`<output_dir>/final`).
    pub model_dir: PathBuf,
    /// The LoRA adapter file, for LoRA runs.
    pub adapter: Option<PathBuf>,
    /// Samples skipped by the data loader (malformed lines, overlong rows).
    pub skipped: usize,
    /// Rows truncated to the maximum length.
    pub truncated: usize,
}

/// Losses and tokens of one optimiser step's micro-batches.
#[derive(Default)]
struct Tally {
    total: f64,
    micro: usize,
    und: (f64, usize),
    generation: (f64, usize),
    tokens: usize,
}

impl Tally {
    /// Counts a micro-batch's losses; false (nothing counted) for one without rows.
    fn add(&mut self, loss: &MicroLoss) -> bool {
        let MicroLoss::Loss {
            total,
            understanding,
            generation,
        } = loss
        else {
            return false;
        };
        self.total += total;
        self.micro += 1;
        if let Some(l) = understanding {
            self.und = (self.und.0 + l, self.und.1 + 1);
        }
        if let Some(l) = generation {
            self.generation = (self.generation.0 + l, self.generation.1 + 1);
        }
        true
    }

    fn report(&self, step: usize, lr: f64, grad_norm: Option<f64>, elapsed: f64) -> StepReport {
        let mean = |(sum, n): (f64, usize)| (n > 0).then(|| sum / n as f64);
        StepReport {
            step,
            loss: self.total / self.micro.max(1) as f64,
            loss_und: mean(self.und),
            loss_gen: mean(self.generation),
            lr,
            grad_norm,
            tokens: self.tokens,
            tokens_per_s: self.tokens as f64 / elapsed.max(1e-9),
            val_loss: None,
        }
    }
}

fn tokens_of(batch: &MixedBatch) -> usize {
    let und = batch.understanding.as_ref().map_or(0, |b| {
        b.inputs.attention_mask.iter().filter(|m| **m).count()
    });
    let generation = batch.generation.as_ref().map_or(0, |b: &GenerationBatch| {
        b.text_ids
            .iter()
            .zip(&b.codes)
            .map(|(t, c)| t.len() + c.len())
            .sum()
    });
    und + generation
}

/// Builds the trainable model: stage freezing, then LoRA (which freezes every base weight and
/// leaves only its adapters trainable inside the adapted components).
fn prepare_model(
    model: JanusModel,
    config: &TrainConfig,
    device: &Device,
) -> Result<JanusModel, TrainError> {
    let set = config.freeze_set();
    let model = stage::apply(model, &set);
    let Some(lora) = &config.lora else {
        return Ok(model);
    };
    device.seed(config.seed);
    let mut adapted = apply_lora(model, lora)?;
    if !lora.vision {
        adapted.vision_model = adapted.vision_model.set_require_grad(set.vision_model);
    }
    adapted.aligner = adapted.aligner.set_require_grad(set.aligner);
    adapted.gen_aligner = adapted.gen_aligner.set_require_grad(set.gen_aligner);
    adapted.gen_head = adapted.gen_head.set_require_grad(set.gen_head);
    adapted.gen_embed = adapted.gen_embed.set_require_grad(set.gen_embed);
    Ok(adapted)
}

/// Mean understanding loss over one pass of the validation files, without gradients.
fn validate(
    model: &JanusModel,
    config: &TrainConfig,
    janus_processor: &janus_core::processor::Processor,
    roles: &ChatRoles,
) -> Result<Option<f64>, TrainError> {
    if config.val_data.is_empty() {
        return Ok(None);
    }
    let data = DataConfig {
        understanding: config.val_data.clone(),
        text: Vec::new(),
        generation: Vec::new(),
        ratio: MixRatio {
            understanding: 1,
            text: 0,
            generation: 0,
        },
        shuffle: false,
        ..config.data.clone()
    };
    let batch_size = data.batch_size;
    let mut loader = MixedLoader::new(data, janus_processor.clone(), roles.clone(), None)?;
    let records = loader.stats().records[0];
    let (mut sum, mut n) = (0.0, 0usize);
    for _ in 0..records.div_ceil(batch_size) {
        let batch = loader.next_batch()?;
        if let Some(und) = &batch.understanding {
            let loss: f32 = understanding_loss(model, und)?.into_scalar();
            sum += loss as f64;
            n += 1;
        }
    }
    Ok((n > 0).then(|| sum / n as f64))
}

/// Runs (or, with `resume`, continues) a training run on `device` (a plain device: gradients are
/// recorded on its autodiff wrapper). `on_step` sees every step's report.
pub fn train(
    config: &TrainConfig,
    device: &Device,
    resume: bool,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<TrainSummary, TrainError> {
    train_parallel(config, std::slice::from_ref(device), resume, on_step)
}

/// [`train`] data-parallel over `devices` (plain devices; the first is the main one, which holds
/// the model and the optimiser). Each accumulation step draws one micro-batch per device and runs
/// them on burn-train's multi-device step ([`crate::parallel`]); an optimiser step then averages
/// `grad_accum_steps × devices.len()` micro-batches — the same data, in the same order, as one
/// device with that many accumulation steps. A single device runs without worker threads.
pub fn train_parallel(
    config: &TrainConfig,
    devices: &[Device],
    resume: bool,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<TrainSummary, TrainError> {
    config.validate()?;
    let Some(device) = devices.first() else {
        return Err(TrainError::NoDevice);
    };
    let ad = device.clone().autodiff();
    let parallel = (devices.len() > 1)
        .then(|| DataParallel::new(devices.iter().map(|d| d.clone().autodiff()).collect()));
    let janus = Janus::load(&config.model, &LoadOptions::default(), &ad)?;
    let roles = janus.roles();
    let processor = janus.processor.clone();
    let encoder = match config.data.ratio.generation {
        0 => None,
        _ => {
            Some(Box::new(VqCodeEncoder::from_janus(&janus)?) as Box<dyn crate::data::CodeEncoder>)
        }
    };
    let mut model = prepare_model(janus.model, config, &ad)?;
    let mut optimizer = config.optim.build()?;
    let ckpt_dir = config.output_dir.join("checkpoints");

    let mut start_step = 0;
    let mut loader = match resume
        .then(|| latest_checkpoint(&ckpt_dir))
        .transpose()?
        .flatten()
    {
        Some(ckpt) => {
            let (m, o, state) = load_checkpoint(&ckpt, model, optimizer.optim)?;
            model = m;
            optimizer.optim = o;
            start_step = state.step;
            let data_state: DataState =
                serde_json::from_value(state.data_position).map_err(TrainError::DataPosition)?;
            MixedLoader::resume(
                config.data.clone(),
                processor.clone(),
                roles.clone(),
                encoder,
                &data_state,
            )?
        }
        None => MixedLoader::new(
            config.data.clone(),
            processor.clone(),
            roles.clone(),
            encoder,
        )?,
    };

    std::fs::create_dir_all(&config.output_dir).map_err(|source| TrainError::Io {
        path: config.output_dir.clone(),
        source,
    })?;
    let metrics_path = config.output_dir.join("metrics.jsonl");
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|source| TrainError::Io {
            path: metrics_path.clone(),
            source,
        })?;

    let save = |model: &JanusModel,
                optimizer: &crate::optim::TrainOptimizer,
                loader: &MixedLoader,
                step: usize,
                report: Option<&StepReport>| {
        let data_state = loader.state();
        let mut state = TrainState {
            step,
            epoch: data_state.epoch() as usize,
            data_position: serde_json::to_value(&data_state).expect("data state serialises"),
            rng: RngState {
                seed: config.seed,
                counter: 0,
            },
            metrics: Default::default(),
        };
        if let Some(r) = report {
            state.metrics.insert("loss".into(), r.loss);
        }
        save_checkpoint(
            &ckpt_dir,
            step,
            model,
            &optimizer.optim,
            &state,
            config.keep_last,
        )
    };

    let accum = config.optim.grad_accum_steps.max(1);
    let mut reports = Vec::new();
    for step in start_step..config.steps {
        let started = Instant::now();
        let mut acc = GradAccumulator::new();
        let mut tally = Tally::default();
        let (w_und, w_gen) = (
            config.loss_weights.understanding,
            config.loss_weights.generation,
        );
        for _ in 0..accum {
            match &parallel {
                None => {
                    let batch = loader.next_batch()?;
                    tally.tokens += tokens_of(&batch);
                    let Some(loss) = mixed_loss(&model, &batch, w_und, w_gen)? else {
                        continue;
                    };
                    tally.add(&MicroLoss::of(&loss));
                    let grads = GradientsParams::from_grads(loss.total.backward(), &model);
                    acc.accumulate(&model, grads);
                }
                Some(parallel) => {
                    let mut micro = Vec::with_capacity(parallel.len());
                    for index in 0..parallel.len() {
                        let batch = loader.next_batch()?;
                        tally.tokens += tokens_of(&batch);
                        micro.push(MicroBatch {
                            index,
                            batch,
                            w_und,
                            w_gen,
                        });
                    }
                    let (next, results) = parallel.step(model, micro)?;
                    model = next;
                    for r in results {
                        if tally.add(&r.loss) {
                            acc.accumulate(&model, r.grads);
                        }
                    }
                }
            }
        }
        let grads = acc.finish(&model);
        let (next, stats) = optimizer.step(step, model, grads);
        model = next;
        let elapsed = started.elapsed().as_secs_f64();
        let mut report = tally.report(step + 1, stats.lr, stats.grad_norm, elapsed);
        let last = step + 1 == config.steps;
        if (config.val_every > 0 && (step + 1) % config.val_every == 0) || last {
            report.val_loss = validate(&model.valid(), config, &processor, &roles)?;
        }
        let line = serde_json::to_string(&report).expect("report serialises");
        writeln!(metrics, "{line}").map_err(|source| TrainError::Io {
            path: metrics_path.clone(),
            source,
        })?;
        on_step(&report);
        if (config.save_every > 0 && (step + 1) % config.save_every == 0) || last {
            save(&model, &optimizer, &loader, step + 1, Some(&report))?;
        }
        reports.push(report);
    }

    let stats = loader.stats().clone();
    let final_model = model.valid();
    let out = config.output_dir.join("final");
    let adapter = match &config.lora {
        Some(lora) => {
            let path = config.output_dir.join("adapter.safetensors");
            save_adapter(&final_model, lora, &path)?;
            Some(path)
        }
        None => None,
    };
    let final_model = if config.lora.is_some() {
        merge_lora(final_model)
    } else {
        final_model
    };
    export_model_dir_as(
        &final_model,
        &config.model,
        &out,
        config.export.layout,
        &ExportOptions::default(),
    )?;
    Ok(TrainSummary {
        start_step,
        reports,
        model_dir: out,
        adapter,
        skipped: stats.malformed_lines + stats.skipped_samples + stats.skipped_overlong,
        truncated: stats.truncated,
    })
}

/// Where a run's exported model lands.
pub fn final_model_dir(output_dir: &Path) -> PathBuf {
    output_dir.join("final")
}
