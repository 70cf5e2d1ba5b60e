//! The optimiser: AdamW with PyTorch semantics, a warm-up + constant/cosine learning-rate
//! schedule, global-norm gradient clipping and gradient accumulation.
//!
//! burn's [`AdamW`](burn::optim::AdamW) computes exactly PyTorch's `torch.optim.AdamW` update
//! (decoupled decay `p ← p·(1 − lr·wd)`, then `p ← p − lr·m̂/(√v̂ + ε)` with bias-corrected
//! moments), up to f32 rounding; only its *defaults* differ (ε = 1e-5, wd = 1e-4), so
//! [`OptimConfig::init`] always sets every hyper-parameter. Two things burn does differently
//! are done here instead:
//!
//! - **Clipping.** burn's `GradientClippingConfig::Norm` clips each tensor by its own norm;
//!   [`clip_grad_norm`] clips by the norm over *all* gradients, like
//!   `torch.nn.utils.clip_grad_norm_`.
//! - **Accumulation.** burn's `GradientsAccumulator` sums; [`GradAccumulator`] averages, which
//!   equals PyTorch's `(loss / N).backward()` over `N` micro-batches.
//!
//! A step is `clip → AdamW(lr_at(step))`, which [`TrainOptimizer::step`] bundles:
//!
//! ```ignore
//! let mut optim = config.optim.build()?;
//! let mut accum = GradAccumulator::new();
//! for micro in micro_batches {
//!     let grads = GradientsParams::from_grads(loss(&model, micro).backward(), &model);
//!     accum.accumulate(&model, grads);
//! }
//! let (next, stats) = optim.step(step, model, accum.finish(&model));
//! ```

use std::collections::HashSet;
use std::marker::PhantomData;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{DType, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

/// What can go wrong configuring the optimiser.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// A setting is out of its valid range.
    #[error("invalid optimiser setting `{field}`: {message}")]
    Invalid {
        /// The offending field of [`OptimConfig`].
        field: &'static str,
        /// Why it is invalid.
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> OptimError {
    OptimError::Invalid {
        field,
        message: message.into(),
    }
}

/// How the learning rate evolves after warm-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// Stay at the peak learning rate (what the Janus paper uses in every stage).
    #[default]
    Constant,
    /// Half-cosine from the peak down to `min_lr` at `total_steps`, then stay there.
    Cosine,
}

/// Optimiser settings (the `optim` section of a training config).
///
/// Defaults follow the Janus paper where it says something (β = (0.9, 0.95), no weight
/// decay, clipping at 1.0, constant schedule) and PyTorch where it does not (ε = 1e-8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Adam's (β₁, β₂).
    pub betas: (f64, f64),
    /// Adam's ε, added to `√v̂` (PyTorch's default, not burn's 1e-5).
    pub eps: f64,
    /// Decoupled weight decay (PyTorch AdamW semantics: `p ← p·(1 − lr·wd)` before the Adam
    /// update). Applies to every trained parameter, biases and norms included.
    pub weight_decay: f64,
    /// Optimizer steps of linear warm-up from 0 to `lr`.
    pub warmup_steps: usize,
    /// Schedule after warm-up.
    pub decay: Decay,
    /// Optimizer step at which the cosine reaches `min_lr` (required for [`Decay::Cosine`]).
    pub total_steps: Option<usize>,
    /// Learning rate at the end of the cosine.
    pub min_lr: f64,
    /// Clip the global gradient norm to this (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    /// Micro-batches per optimizer step (the trainer's loop count; [`GradAccumulator`]
    /// averages over however many it was given).
    pub grad_accum_steps: usize,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            betas: (0.9, 0.95),
            eps: 1e-8,
            weight_decay: 0.0,
            warmup_steps: 0,
            decay: Decay::Constant,
            total_steps: None,
            min_lr: 0.0,
            max_grad_norm: Some(1.0),
            grad_accum_steps: 1,
        }
    }
}

impl OptimConfig {
    /// Checks every setting's range.
    pub fn validate(&self) -> Result<(), OptimError> {
        let finite_pos = |x: f64| x.is_finite() && x > 0.0;
        if !finite_pos(self.lr) {
            return Err(invalid("lr", format!("must be positive, got {}", self.lr)));
        }
        for (field, beta) in [("betas.0", self.betas.0), ("betas.1", self.betas.1)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(invalid(field, format!("must be in [0, 1), got {beta}")));
            }
        }
        if !finite_pos(self.eps) {
            return Err(invalid(
                "eps",
                format!("must be positive, got {}", self.eps),
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(invalid(
                "weight_decay",
                format!("must be non-negative, got {}", self.weight_decay),
            ));
        }
        if !(self.min_lr.is_finite() && (0.0..=self.lr).contains(&self.min_lr)) {
            return Err(invalid(
                "min_lr",
                format!("must be in [0, lr], got {}", self.min_lr),
            ));
        }
        if self.decay == Decay::Cosine {
            match self.total_steps {
                Some(total) if total > self.warmup_steps => {}
                Some(total) => {
                    return Err(invalid(
                        "total_steps",
                        format!(
                            "must exceed warmup_steps ({}), got {total}",
                            self.warmup_steps
                        ),
                    ));
                }
                None => return Err(invalid("total_steps", "required by the cosine decay")),
            }
        }
        if let Some(norm) = self.max_grad_norm
            && !finite_pos(norm)
        {
            return Err(invalid(
                "max_grad_norm",
                format!("must be positive, got {norm}"),
            ));
        }
        if self.grad_accum_steps == 0 {
            return Err(invalid("grad_accum_steps", "must be at least 1"));
        }
        Ok(())
    }

    /// burn's AdamW with every hyper-parameter set explicitly and no per-tensor clipping.
    pub fn init(&self) -> Result<ModuleOptimizer, OptimError> {
        self.validate()?;
        Ok(AdamWConfig::new()
            .with_beta_1(self.betas.0 as f32)
            .with_beta_2(self.betas.1 as f32)
            .with_epsilon(self.eps as f32)
            .with_weight_decay(self.weight_decay as f32)
            .init())
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> Result<LrSchedule, OptimError> {
        self.validate()?;
        Ok(LrSchedule {
            lr: self.lr,
            warmup_steps: self.warmup_steps,
            decay: self.decay,
            total_steps: self.total_steps.unwrap_or(usize::MAX),
            min_lr: self.min_lr,
        })
    }

    /// Optimizer, schedule and clipping together.
    pub fn build(&self) -> Result<TrainOptimizer, OptimError> {
        Ok(TrainOptimizer {
            optim: self.init()?,
            schedule: self.schedule()?,
            max_grad_norm: self.max_grad_norm,
        })
    }
}

/// Learning rate as a function of the optimizer step (0-based).
///
/// Matches Hugging Face's `get_cosine_with_min_lr_schedule_with_warmup` (and
/// `get_constant_schedule_with_warmup` for [`Decay::Constant`]): `lr·s/warmup` during
/// warm-up, so step 0 runs at 0; then `min_lr + (lr − min_lr)·½(1 + cos(π·p))` with
/// `p = (s − warmup)/(total − warmup)`, held at `min_lr` past `total_steps`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub lr: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// Shape after warm-up.
    pub decay: Decay,
    /// End of the cosine (ignored by [`Decay::Constant`]).
    pub total_steps: usize,
    /// Floor of the cosine.
    pub min_lr: f64,
}

impl LrSchedule {
    /// A constant learning rate.
    pub fn constant(lr: f64) -> Self {
        Self {
            lr,
            warmup_steps: 0,
            decay: Decay::Constant,
            total_steps: usize::MAX,
            min_lr: lr,
        }
    }

    /// The learning rate of optimizer step `step`.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * step as f64 / self.warmup_steps as f64;
        }
        match self.decay {
            Decay::Constant => self.lr,
            Decay::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
                let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                self.min_lr + (self.lr - self.min_lr) * cosine
            }
        }
    }
}

/// Sums of squares of every gradient of `module`'s parameters (f32, one `[1]` tensor each).
struct SquaredNorms<'a> {
    grads: &'a GradientsParams,
    sums: Vec<Tensor<1>>,
    seen: HashSet<ParamId>,
}

impl ModuleVisitor for SquaredNorms<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // A parameter shared by two fields is visited twice but has one gradient.
        if !self.seen.insert(param.id) {
            return;
        }
        let Some(grad) = self.grads.get::<D>(param.id) else {
            return;
        };
        // Accumulate in f32 even for half-precision gradients, like torch's norm kernels.
        let grad = match grad.dtype() {
            DType::F32 | DType::F64 => grad,
            _ => grad.cast(FloatDType::F32),
        };
        let sum = grad.square().sum();
        let sum = match self.sums.first() {
            Some(first) if first.device() != sum.device() => sum.to_device(&first.device()),
            _ => sum,
        };
        self.sums.push(sum);
    }
}

/// Multiplies every gradient of `module`'s parameters by a constant.
struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
    seen: HashSet<ParamId>,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !self.seen.insert(param.id) {
            return;
        }
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            self.grads
                .register::<D>(param.id, grad.mul_scalar(self.factor));
        }
    }
}

/// The L2 norm over all of `module`'s gradients, as one vector (one host read).
///
/// Returns 0 when `grads` holds none of the module's parameters.
pub fn grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    let mut visitor = SquaredNorms {
        grads,
        sums: Vec::new(),
        seen: HashSet::new(),
    };
    module.visit(&mut visitor);
    if visitor.sums.is_empty() {
        return 0.0;
    }
    let total = Tensor::cat(visitor.sums, 0).sum().sqrt();
    total.into_scalar::<f32>() as f64
}

/// Multiplies every gradient of `module`'s parameters by `factor`.
pub fn scale_grads<M: Module>(module: &M, grads: &mut GradientsParams, factor: f64) {
    module.visit(&mut Scale {
        grads,
        factor,
        seen: HashSet::new(),
    });
}

/// Clips the gradients by their global norm, exactly like `torch.nn.utils.clip_grad_norm_`
/// (L2, `error_if_nonfinite=False` aside): with `total` the norm over all gradients, every
/// gradient is multiplied by `max_norm / (total + 1e-6)` when that factor is below 1.
///
/// Returns the norm *before* clipping. A non-finite norm leaves the gradients untouched (torch
/// would multiply them by NaN); callers should skip the step, as [`TrainOptimizer::step`]
/// does.
pub fn clip_grad_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let total = grad_norm(module, grads);
    if total.is_finite() {
        let coef = max_norm / (total + 1e-6);
        if coef < 1.0 {
            scale_grads(module, grads, coef);
        }
    }
    total
}

/// Averages gradients over micro-batches (burn's [`GradientsAccumulator`] sums them).
pub struct GradAccumulator<M> {
    inner: GradientsAccumulator<M>,
    count: usize,
    _module: PhantomData<M>,
}

impl<M> Default for GradAccumulator<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> GradAccumulator<M> {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self {
            inner: GradientsAccumulator::new(),
            count: 0,
            _module: PhantomData,
        }
    }

    /// Micro-batches accumulated since the last [`finish`](Self::finish).
    pub fn count(&self) -> usize {
        self.count
    }
}

impl<M: Module> GradAccumulator<M> {
    /// Adds one micro-batch's gradients.
    pub fn accumulate(&mut self, module: &M, grads: GradientsParams) {
        self.inner.accumulate(module, grads);
        self.count += 1;
    }

    /// The mean of the accumulated gradients; resets the accumulator.
    pub fn finish(&mut self, module: &M) -> GradientsParams {
        let mut grads = self.inner.grads();
        if self.count > 1 {
            scale_grads(module, &mut grads, 1.0 / self.count as f64);
        }
        self.count = 0;
        grads
    }
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping (computed only when clipping is on).
    pub grad_norm: Option<f64>,
    /// The gradient norm was not finite, so the parameters were left unchanged.
    pub skipped: bool,
}

/// burn's AdamW plus the schedule and global-norm clipping: one call per optimizer step.
#[derive(Clone)]
pub struct TrainOptimizer {
    /// The AdamW state (what checkpoints save).
    pub optim: ModuleOptimizer,
    /// Learning rate per step.
    pub schedule: LrSchedule,
    /// Global-norm clipping threshold.
    pub max_grad_norm: Option<f64>,
}

impl TrainOptimizer {
    /// Clips `grads` and applies AdamW with the learning rate of optimizer step `step`
    /// (0-based).
    pub fn step<M: Module>(
        &mut self,
        step: usize,
        module: M,
        mut grads: GradientsParams,
    ) -> (M, StepStats) {
        let lr = self.schedule.lr_at(step);
        let grad_norm = self
            .max_grad_norm
            .map(|max| clip_grad_norm(&module, &mut grads, max));
        if grad_norm.is_some_and(|n| !n.is_finite()) {
            let stats = StepStats {
                lr,
                grad_norm,
                skipped: true,
            };
            return (module, stats);
        }
        let module = self.optim.step(lr, module, grads);
        let stats = StepStats {
            lr,
            grad_norm,
            skipped: false,
        };
        (module, stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_rejects_unknown_fields() {
        let config: OptimConfig =
            serde_json::from_str(r#"{"lr": 2e-5, "decay": "cosine", "total_steps": 10}"#).unwrap();
        assert_eq!(config.betas, (0.9, 0.95));
        assert_eq!(config.decay, Decay::Cosine);
        config.validate().unwrap();
        let back: OptimConfig =
            serde_json::from_str(&serde_json::to_string(&config).unwrap()).unwrap();
        assert_eq!(back, config);
        assert!(serde_json::from_str::<OptimConfig>(r#"{"learning_rate": 1.0}"#).is_err());
    }

    #[test]
    fn invalid_settings_are_named() {
        let bad = OptimConfig {
            decay: Decay::Cosine,
            ..Default::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains("total_steps"), "{err}");
        let bad = OptimConfig {
            betas: (0.9, 1.0),
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("betas.1"));
    }
}
