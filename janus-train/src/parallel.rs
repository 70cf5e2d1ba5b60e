//! Data-parallel training over several devices with burn-train's own multi-device step.
//!
//! [`MultiDevicesTrainStep`] is the engine behind burn's
//! `ExecutionStrategy::MultiDevice(devices, MultiDeviceOptim::OptimMainDevice)`: one worker
//! thread per device forks the model onto its device, runs forward and backward on its
//! micro-batch and sends the gradients back. The trainer moves them to the main device (the
//! first), averages them with the accumulation steps and takes one optimiser step there, so a run
//! on `n` devices with `k` accumulation steps sees exactly the micro-batches — in the same order —
//! that one device sees with `n · k` accumulation steps.
//!
//! burn's `Learner` itself is not used: it checkpoints per epoch and owns the data loader, while
//! janus-train checkpoints per step and resumes the data position mid-epoch.

use burn::data::dataloader::{DataLoaderIterator, Progress};
use burn::data::dataset::DatasetError;
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Device;
use burn::train::train::{MultiDeviceStepError, MultiDevicesTrainStep};
use burn::train::{InferenceStep, ItemLazy, TrainOutput, TrainStep};
use janus_core::JanusModel;

use crate::MixedBatch;
use crate::loss::{LossError, MixedLoss, mixed_loss};

/// The model as burn-train's workers see it: [`JanusModel`] plus the [`TrainStep`] that computes
/// the mixed loss and its gradients.
#[derive(Module, Debug)]
pub struct ParallelModel {
    /// The model being trained.
    pub model: JanusModel,
}

/// One worker's micro-batch and the loss weights.
#[derive(Debug, Clone)]
pub struct MicroBatch {
    /// Position of the micro-batch in the optimiser step (echoed back in [`MicroOutput`]).
    pub index: usize,
    /// The rows this worker computes.
    pub batch: MixedBatch,
    /// Weight of the understanding/text loss.
    pub w_und: f64,
    /// Weight of the image-head loss.
    pub w_gen: f64,
}

/// What one worker reports besides its gradients.
#[derive(Debug)]
pub enum MicroLoss {
    /// The micro-batch had rows: its losses (host scalars).
    Loss {
        /// Weighted total.
        total: f64,
        /// Unweighted understanding/text loss.
        understanding: Option<f64>,
        /// Unweighted image-head loss.
        generation: Option<f64>,
    },
    /// The micro-batch had no rows; the gradients are empty.
    Empty,
    /// The loss could not be computed; the gradients are empty.
    Failed(LossError),
}

/// A worker's report: which micro-batch, and its losses.
#[derive(Debug)]
pub struct MicroOutput {
    /// [`MicroBatch::index`].
    pub index: usize,
    /// The losses.
    pub loss: MicroLoss,
}

impl ItemLazy for MicroOutput {
    fn sync(self) -> Result<Self, burn_std::ExecutionError> {
        Ok(self)
    }
}

impl MicroLoss {
    /// The host scalars of a computed loss (reads them back: one sync per loss).
    pub fn of(loss: &MixedLoss) -> Self {
        let scalar = |t: &burn::tensor::Tensor<1>| t.clone().into_scalar::<f32>() as f64;
        Self::Loss {
            total: scalar(&loss.total),
            understanding: loss.understanding.as_ref().map(scalar),
            generation: loss.generation.as_ref().map(scalar),
        }
    }
}

impl TrainStep for ParallelModel {
    type Input = MicroBatch;
    type Output = MicroOutput;

    fn step(&self, item: MicroBatch) -> TrainOutput<MicroOutput> {
        let index = item.index;
        let empty = |loss| TrainOutput {
            grads: GradientsParams::new(),
            item: MicroOutput { index, loss },
        };
        match mixed_loss(&self.model, &item.batch, item.w_und, item.w_gen) {
            Ok(Some(loss)) => {
                let item = MicroOutput {
                    index,
                    loss: MicroLoss::of(&loss),
                };
                TrainOutput::new(self, loss.total.backward(), item)
            }
            Ok(None) => empty(MicroLoss::Empty),
            Err(e) => empty(MicroLoss::Failed(e)),
        }
    }
}

impl InferenceStep for ParallelModel {
    type Input = MicroBatch;
    type Output = MicroOutput;

    fn step(&self, item: MicroBatch) -> MicroOutput {
        let loss = match mixed_loss(&self.model, &item.batch, item.w_und, item.w_gen) {
            Ok(Some(loss)) => MicroLoss::of(&loss),
            Ok(None) => MicroLoss::Empty,
            Err(e) => MicroLoss::Failed(e),
        };
        MicroOutput {
            index: item.index,
            loss,
        }
    }
}

/// A data loader of one item: each worker gets exactly the micro-batch the trainer drew for it,
/// so the trainer's resumable loader stays the only source of data order.
struct OneItem(Option<MicroBatch>);

impl Iterator for OneItem {
    type Item = Result<MicroBatch, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.take().map(Ok)
    }
}

impl DataLoaderIterator<MicroBatch> for OneItem {
    fn progress(&self) -> Progress {
        Progress {
            items_processed: usize::from(self.0.is_none()),
            items_total: 1,
            unit: None,
        }
    }
}

/// A failure on a worker.
#[derive(Debug, thiserror::Error)]
pub enum ParallelError {
    /// A worker's loss computation was refused (bad labels or codes).
    #[error(transparent)]
    Loss(#[from] LossError),
    /// A worker failed (burn-train reports its panic message and device index).
    #[error("data-parallel step failed: {0}")]
    Worker(String),
}

impl From<MultiDeviceStepError> for ParallelError {
    fn from(e: MultiDeviceStepError) -> Self {
        Self::Worker(e.to_string())
    }
}

/// One worker's result, with its gradients on the main device.
pub struct WorkerResult {
    /// [`MicroBatch::index`].
    pub index: usize,
    /// Gradients of the worker's micro-batch (empty for an empty micro-batch).
    pub grads: GradientsParams,
    /// The losses it computed.
    pub loss: MicroLoss,
}

/// Worker threads, one per device, kept for the whole run.
pub struct DataParallel {
    step: MultiDevicesTrainStep<ParallelModel>,
    devices: Vec<Device>,
}

impl DataParallel {
    /// Starts one worker per device; the first device is the main one (it holds the model and the
    /// optimiser state). Devices must be autodiff devices.
    pub fn new(devices: Vec<Device>) -> Self {
        Self {
            step: MultiDevicesTrainStep::new(&devices),
            devices,
        }
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Never true: there is at least the main device.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Runs one micro-batch per worker (`batches.len()` ≤ the number of devices) and returns the
    /// results, in micro-batch order, with the gradients moved to the main device.
    pub fn step(
        &self,
        model: JanusModel,
        batches: Vec<MicroBatch>,
    ) -> Result<(JanusModel, Vec<WorkerResult>), ParallelError> {
        let mut loaders: Vec<Box<dyn DataLoaderIterator<MicroBatch>>> = batches
            .into_iter()
            .map(|b| Box::new(OneItem(Some(b))) as Box<dyn DataLoaderIterator<MicroBatch>>)
            .collect();
        let model = ParallelModel { model };
        let (outputs, _) = self.step.step(&mut loaders, &model)?;
        let main = &self.devices[0];
        let mut results = Vec::with_capacity(outputs.len());
        for out in outputs {
            let MicroOutput { index, loss } = out.output.item;
            if let MicroLoss::Failed(e) = loss {
                return Err(e.into());
            }
            results.push(WorkerResult {
                index,
                grads: out.output.grads.to_device(main, &model.model),
                loss,
            });
        }
        // Workers finish in any order; summing gradients in a fixed order keeps runs repeatable.
        results.sort_by_key(|r| r.index);
        Ok((model.model, results))
    }
}
