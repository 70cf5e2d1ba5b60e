//! Training the VQ image tokenizer: the stage before stage I for a model built from scratch,
//! which has no pretrained tokenizer whose codes generation could learn.
//!
//! The loss is VQ-VAE's, on the model's l2-normalised codebook (LlamaGen `VectorQuantizer`
//! with `codebook_l2_norm`): with `z` the encoder output after `quant_conv`, l2-normalised per
//! latent pixel, and `e` the nearest l2-normalised codebook row,
//!
//! ```text
//! loss = ‖x − D(z + sg[e − z])‖²            reconstruction (mean squared error on [−1, 1] pixels)
//!      + ‖sg[z] − e‖²                       codebook term (moves the entries)
//!      + β ‖z − sg[e]‖²                     commitment term (moves the encoder), β = 0.25
//! ```
//!
//! where `sg` stops gradients and `z + sg[e − z]` is the straight-through estimator (the
//! decoder sees `e`, the encoder receives the decoder's gradient). Entries that no latent
//! chose for a while are optionally restarted on random latents of the current batch, the
//! usual cure for a dead codebook. [`codebook_usage`] reports how many entries a set of images
//! uses and the perplexity of their distribution.
//!
//! Runs on an autodiff device (`Device::flex().autodiff()` on a CPU).

use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use janus_core::janus_vq::VqModel;
use janus_core::processor::RgbImage;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::data::to_unit_range;
use crate::optim::{Decay, OptimConfig, OptimError};

/// Settings of a VQ training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VqTrainConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate (AdamW, linear warm-up then cosine to a tenth).
    pub lr: f64,
    /// Warm-up steps.
    pub warmup_steps: usize,
    /// Weight β of the commitment term.
    pub beta: f64,
    /// Weight of the codebook term.
    pub codebook_weight: f64,
    /// Restart entries unused for this many steps on random latents (0: never).
    pub restart_after: usize,
    /// Seed of the restarts.
    pub seed: u64,
}

impl Default for VqTrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch_size: 16,
            lr: 1e-3,
            warmup_steps: 50,
            beta: 0.25,
            codebook_weight: 1.0,
            restart_after: 100,
            seed: 0,
        }
    }
}

impl VqTrainConfig {
    /// The optimiser settings it implies.
    pub fn optim(&self) -> OptimConfig {
        OptimConfig {
            lr: self.lr,
            betas: (0.9, 0.99),
            eps: 1e-8,
            weight_decay: 0.0,
            warmup_steps: self.warmup_steps,
            decay: Decay::Cosine,
            total_steps: Some(self.steps.max(1)),
            min_lr: self.lr / 10.0,
            max_grad_norm: Some(1.0),
            grad_accum_steps: 1,
        }
    }
}

/// The loss terms of one batch.
#[derive(Debug, Clone)]
pub struct VqLosses {
    /// Weighted sum of the three terms.
    pub total: Tensor<1>,
    /// Mean squared reconstruction error.
    pub recon: Tensor<1>,
    /// `‖sg[z] − e‖²` (mean over latent values).
    pub codebook: Tensor<1>,
    /// `‖z − sg[e]‖²` (mean over latent values), before β.
    pub commit: Tensor<1>,
    /// The chosen codes, `[batch, h · w]`.
    pub codes: Tensor<2, Int>,
    /// The normalised latents, `[batch · h · w, embed_dim]` (detached), for restarts.
    pub latents: Tensor<2>,
}

/// Row-wise l2 normalisation with the quantizer's 1e-12 floor, differentiable.
fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// Images as a `[batch, 3, h, w]` tensor in `[−1, 1]`.
pub fn images_tensor(images: &[RgbImage], device: &Device) -> Tensor<4> {
    let (w, h) = images[0].dimensions();
    let mut data = Vec::with_capacity(images.len() * 3 * (w * h) as usize);
    for image in images {
        assert_eq!(
            image.dimensions(),
            (w, h),
            "images of one batch share a size"
        );
        data.extend(to_unit_range(image));
    }
    Tensor::from_data(
        TensorData::new(data, [images.len(), 3, h as usize, w as usize]),
        device,
    )
}

/// The three VQ-VAE terms for a batch of images (see the module docs).
///
/// # Shapes
///
/// - images: `[batch, 3, h, w]` in `[−1, 1]`
pub fn vq_losses(vq: &VqModel, images: Tensor<4>, beta: f64, codebook_weight: f64) -> VqLosses {
    let z = vq.quant_conv.forward(vq.encoder.forward(images.clone()));
    let [b, c, h, w] = z.dims();
    let n = b * h * w;
    let z = l2_normalize(z.permute([0, 2, 3, 1]).reshape([n, c]));
    let codebook = vq.quantize.codebook(); // normalised rows
    let k = codebook.dims()[0];
    let distance = {
        let zd = z.clone().detach();
        let ed = codebook.clone().detach();
        let z_sq = zd.clone().square().sum_dim(1);
        let e_sq = ed.clone().square().sum_dim(1).reshape([1, k]);
        z_sq + e_sq - zd.matmul(ed.transpose()).mul_scalar(2.0)
    };
    let codes = distance.argmin(1).reshape([n]);
    let e = codebook.select(0, codes.clone());
    let codebook_loss = (z.clone().detach() - e.clone()).square().mean();
    let commit = (z.clone() - e.clone().detach()).square().mean();
    let st = z.clone() + (e - z.clone()).detach();
    let quant = st.reshape([b, h, w, c]).permute([0, 3, 1, 2]);
    let recon_image = vq.decoder.forward(vq.post_quant_conv.forward(quant));
    let recon = (recon_image - images).square().mean();
    let total = recon.clone()
        + codebook_loss.clone().mul_scalar(codebook_weight)
        + commit.clone().mul_scalar(beta);
    VqLosses {
        total,
        recon,
        codebook: codebook_loss,
        commit,
        codes: codes.reshape([b, h * w]),
        latents: z.detach(),
    }
}

/// How much of the codebook a set of codes uses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CodebookUsage {
    /// Entries used at least once.
    pub used: usize,
    /// Codebook size.
    pub size: usize,
    /// `exp(entropy)` of the code distribution (the effective number of entries).
    pub perplexity: f64,
}

impl CodebookUsage {
    /// Counts codes (each in `0..size`).
    pub fn from_codes(codes: &[i64], size: usize) -> Self {
        let mut counts = vec![0usize; size];
        for &c in codes {
            counts[c as usize] += 1;
        }
        let total = codes.len().max(1) as f64;
        let entropy: f64 = counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / total;
                -p * p.ln()
            })
            .sum();
        Self {
            used: counts.iter().filter(|&&c| c > 0).count(),
            size,
            perplexity: entropy.exp(),
        }
    }
}

fn codes_vec(codes: Tensor<2, Int>) -> Vec<i64> {
    codes
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("int codes")
}

/// Codebook usage and reconstruction error of `vq` (any device) on `images`, in batches.
pub fn codebook_usage(vq: &VqModel, images: &[RgbImage], device: &Device) -> (CodebookUsage, f64) {
    let mut codes = Vec::new();
    let (mut sq, mut n) = (0.0, 0usize);
    for chunk in images.chunks(32) {
        let x = images_tensor(chunk, device);
        let enc = vq.encode(x.clone()).expect("valid images");
        let out = vq.decode(enc.quant).expect("valid latent");
        let numel = x.dims().iter().product::<usize>();
        let err: f32 = (out - x).square().sum().into_scalar();
        sq += err as f64;
        n += numel;
        codes.extend(codes_vec(enc.codes));
    }
    (
        CodebookUsage::from_codes(&codes, vq.codebook_size()),
        sq / n.max(1) as f64,
    )
}

/// Reconstructs images through the tokenizer (encode, quantise, decode) as RGB images.
pub fn reconstruct(vq: &VqModel, images: &[RgbImage], device: &Device) -> Vec<RgbImage> {
    images
        .chunks(32)
        .flat_map(|chunk| {
            let enc = vq
                .encode(images_tensor(chunk, device))
                .expect("valid images");
            janus_core::to_rgb_images(vq.decode(enc.quant).expect("valid latent"))
        })
        .collect()
}

/// One VQ training step's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VqStepReport {
    /// Steps completed (1-based).
    pub step: usize,
    /// Total loss.
    pub loss: f64,
    /// Reconstruction MSE.
    pub recon: f64,
    /// Codebook term.
    pub codebook: f64,
    /// Commitment term (before β).
    pub commit: f64,
    /// Distinct codes in this batch.
    pub batch_codes: usize,
    /// Entries restarted after this step.
    pub restarted: usize,
    /// Learning rate used.
    pub lr: f64,
}

/// Errors of VQ training.
#[derive(Debug, thiserror::Error)]
pub enum VqTrainError {
    /// The optimiser settings.
    #[error(transparent)]
    Optim(#[from] OptimError),
    /// A setting out of range.
    #[error("invalid VQ training setting: {0}")]
    Invalid(String),
}

/// Replaces the rows `rows` of the codebook by `values` (fresh leaf tensor, same param id).
fn restart_rows(vq: VqModel, rows: &[usize], values: Tensor<2>) -> VqModel {
    let mut vq = vq;
    let weight = vq.quantize.embedding.weight;
    vq.quantize.embedding.weight = weight.map(|w| {
        // Edit the values off the graph, then make them a fresh leaf again.
        let was_autodiff = w.is_autodiff();
        let mut w = w.inner();
        for (i, &row) in rows.iter().enumerate() {
            let v = values.clone().inner().slice(i..i + 1);
            w = w.slice_assign(row..row + 1, v);
        }
        if was_autodiff {
            w.autodiff().require_grad()
        } else {
            w
        }
    });
    vq
}

/// Trains `vq` (on the autodiff `device`) for `config.steps` steps on images from `next_batch`
/// (called with the batch size). `on_step` sees every step's report. Returns the trained model
/// (still on the autodiff device) and the reports.
pub fn train_vq(
    mut vq: VqModel,
    config: &VqTrainConfig,
    device: &Device,
    next_batch: &mut dyn FnMut(usize) -> Vec<RgbImage>,
    on_step: &mut dyn FnMut(&VqStepReport),
) -> Result<(VqModel, Vec<VqStepReport>), VqTrainError> {
    if config.steps == 0 || config.batch_size == 0 {
        return Err(VqTrainError::Invalid(
            "steps and batch_size must be at least 1".into(),
        ));
    }
    let mut optimizer = config.optim().build()?;
    let size = vq.codebook_size();
    let mut last_used = vec![0usize; size];
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut reports = Vec::with_capacity(config.steps);
    for step in 0..config.steps {
        let images = images_tensor(&next_batch(config.batch_size), device);
        let losses = vq_losses(&vq, images, config.beta, config.codebook_weight);
        let scalar = |t: &Tensor<1>| t.clone().into_scalar::<f32>() as f64;
        let (loss, recon, codebook, commit) = (
            scalar(&losses.total),
            scalar(&losses.recon),
            scalar(&losses.codebook),
            scalar(&losses.commit),
        );
        let codes = codes_vec(losses.codes.clone());
        let grads = GradientsParams::from_grads(losses.total.backward(), &vq);
        let (next, stats) = optimizer.step(step, vq, grads);
        vq = next;

        let mut batch_codes = vec![false; size];
        for &c in &codes {
            batch_codes[c as usize] = true;
            last_used[c as usize] = step + 1;
        }
        let mut restarted = 0;
        let last = step + 1 == config.steps;
        if config.restart_after > 0 && !last && (step + 1) % config.restart_after == 0 {
            let dead: Vec<usize> = (0..size)
                .filter(|&i| step + 1 - last_used[i] >= config.restart_after)
                .collect();
            if !dead.is_empty() {
                let latents = losses.latents.clone();
                let n = latents.dims()[0];
                let picks: Vec<i64> = dead
                    .iter()
                    .map(|_| ((u128::from(rng.next_u64()) * n as u128) >> 64) as i64)
                    .collect();
                let idx = Tensor::<1, Int>::from_data(TensorData::new(picks, [dead.len()]), device);
                let values = latents.select(0, idx);
                vq = restart_rows(vq, &dead, values);
                for &i in &dead {
                    last_used[i] = step + 1;
                }
                restarted = dead.len();
            }
        }
        let report = VqStepReport {
            step: step + 1,
            loss,
            recon,
            codebook,
            commit,
            batch_codes: batch_codes.iter().filter(|&&u| u).count(),
            restarted,
            lr: stats.lr,
        };
        on_step(&report);
        reports.push(report);
    }
    Ok((vq, reports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_and_perplexity() {
        let u = CodebookUsage::from_codes(&[0, 1, 2, 3, 0, 1, 2, 3], 8);
        assert_eq!((u.used, u.size), (4, 8));
        assert!((u.perplexity - 4.0).abs() < 1e-9);
        let u = CodebookUsage::from_codes(&[5, 5, 5], 8);
        assert_eq!(u.used, 1);
        assert!((u.perplexity - 1.0).abs() < 1e-9);
    }
}
