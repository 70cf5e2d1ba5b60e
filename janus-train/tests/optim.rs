//! The optimiser against PyTorch's formulas, written out in f64: `torch.optim.AdamW`,
//! `torch.nn.utils.clip_grad_norm_`, loss averaging over micro-batches, and the Hugging Face
//! warm-up/cosine schedule.

// The reference is written as the formulas read: index loops over small matrices.
#![allow(clippy::needless_range_loop)]

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use janus_train::optim::{
    Decay, GradAccumulator, LrSchedule, OptimConfig, clip_grad_norm, grad_norm, scale_grads,
};

const IN: usize = 3;
const OUT: usize = 2;
const ROWS: usize = 4;

/// A `Linear(3 → 2)` with fixed weights (burn layout `[in, out]`).
fn linear(w: &[[f64; OUT]; IN], b: &[f64; OUT], device: &Device) -> Linear {
    let mut layer = LinearConfig::new(IN, OUT).init(device);
    let w: Vec<f32> = w.iter().flatten().map(|v| *v as f32).collect();
    let b: Vec<f32> = b.iter().map(|v| *v as f32).collect();
    layer.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [IN, OUT]), device));
    layer.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(b, [OUT]),
        device,
    )));
    layer
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .try_to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Micro-batch `k` of step `s`: inputs `[ROWS, IN]` and targets `[ROWS, OUT]`.
fn micro_batch(s: usize, k: usize) -> ([[f64; IN]; ROWS], [[f64; OUT]; ROWS]) {
    let mut x = [[0.0; IN]; ROWS];
    let mut t = [[0.0; OUT]; ROWS];
    for r in 0..ROWS {
        for c in 0..IN {
            x[r][c] = ((s * 7 + k * 5 + r * 3 + c) as f64 * 0.37).sin();
        }
        for c in 0..OUT {
            t[r][c] = ((s + k * 3 + r * 2 + c) as f64 * 0.91).cos();
        }
    }
    (x, t)
}

/// `mean((x·W + b − t)²)` gradients, by hand.
fn mse_grads(
    w: &[[f64; OUT]; IN],
    b: &[f64; OUT],
    x: &[[f64; IN]; ROWS],
    t: &[[f64; OUT]; ROWS],
) -> ([[f64; OUT]; IN], [f64; OUT]) {
    let n = (ROWS * OUT) as f64;
    let mut gw = [[0.0; OUT]; IN];
    let mut gb = [0.0; OUT];
    for r in 0..ROWS {
        for o in 0..OUT {
            let y: f64 = b[o] + (0..IN).map(|i| x[r][i] * w[i][o]).sum::<f64>();
            let dy = 2.0 * (y - t[r][o]) / n;
            gb[o] += dy;
            for i in 0..IN {
                gw[i][o] += x[r][i] * dy;
            }
        }
    }
    (gw, gb)
}

/// `torch.optim.AdamW.step` for one parameter (single-tensor path), in f64.
struct TorchAdamW {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
}

#[derive(Default, Clone)]
struct Moments {
    step: i32,
    exp_avg: Vec<f64>,
    exp_avg_sq: Vec<f64>,
}

impl TorchAdamW {
    fn step(&self, param: &mut [f64], grad: &[f64], state: &mut Moments) {
        if state.exp_avg.is_empty() {
            state.exp_avg = vec![0.0; param.len()];
            state.exp_avg_sq = vec![0.0; param.len()];
        }
        state.step += 1;
        let (beta1, beta2) = self.betas;
        let bias_correction1 = 1.0 - beta1.powi(state.step);
        let bias_correction2 = 1.0 - beta2.powi(state.step);
        let step_size = self.lr / bias_correction1;
        for i in 0..param.len() {
            param[i] *= 1.0 - self.lr * self.weight_decay;
            state.exp_avg[i] += (grad[i] - state.exp_avg[i]) * (1.0 - beta1); // lerp_
            state.exp_avg_sq[i] = state.exp_avg_sq[i] * beta2 + (1.0 - beta2) * grad[i] * grad[i];
            let denom = state.exp_avg_sq[i].sqrt() / bias_correction2.sqrt() + self.eps;
            param[i] -= step_size * state.exp_avg[i] / denom;
        }
    }
}

fn assert_close(actual: &[f64], expected: &[f64], tol: f64, what: &str) -> f64 {
    assert_eq!(actual.len(), expected.len(), "{what}");
    let mut worst: f64 = 0.0;
    for (a, e) in actual.iter().zip(expected) {
        let err = (a - e).abs();
        worst = worst.max(err);
        assert!(
            err <= tol * (1.0 + e.abs()),
            "{what}: {actual:?} vs {expected:?}"
        );
    }
    worst
}

/// Six steps of AdamW with warm-up, cosine decay, weight decay, global clipping and two
/// accumulated micro-batches per step, against the same run in f64 with torch's formulas.
#[test]
fn adamw_step_matches_torch() {
    let device = Device::flex().autodiff();
    let mut w = [[0.3, -0.2], [0.1, 0.5], [-0.4, 0.25]];
    let mut b = [0.05, -0.1];
    let mut model = linear(&w, &b, &device);

    let config = OptimConfig {
        lr: 0.05,
        betas: (0.9, 0.95),
        eps: 1e-8,
        weight_decay: 0.1,
        warmup_steps: 2,
        decay: Decay::Cosine,
        total_steps: Some(6),
        min_lr: 0.005,
        max_grad_norm: Some(0.5),
        grad_accum_steps: 2,
    };
    let mut optim = config.build().unwrap();
    let schedule = config.schedule().unwrap();
    let mut accum = GradAccumulator::<Linear>::new();

    let (mut mw, mut mb) = (Moments::default(), Moments::default());
    let mut clipped_steps = 0;
    let mut worst: f64 = 0.0;
    for s in 0..6 {
        // burn.
        for k in 0..config.grad_accum_steps {
            let (x, t) = micro_batch(s, k);
            let x = Tensor::<2>::from_data(
                TensorData::new(x.iter().flatten().map(|v| *v as f32).collect(), [ROWS, IN]),
                &device,
            );
            let t = Tensor::<2>::from_data(
                TensorData::new(t.iter().flatten().map(|v| *v as f32).collect(), [ROWS, OUT]),
                &device,
            );
            let loss = (model.forward(x) - t).square().mean();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            accum.accumulate(&model, grads);
        }
        assert_eq!(accum.count(), 2);
        let grads = accum.finish(&model);
        assert_eq!(accum.count(), 0);
        let (next, stats) = optim.step(s, model, grads);
        model = next;

        // The reference: average, clip, AdamW.
        let mut gw = [[0.0; OUT]; IN];
        let mut gb = [0.0; OUT];
        for k in 0..config.grad_accum_steps {
            let (x, t) = micro_batch(s, k);
            let (kw, kb) = mse_grads(&w, &b, &x, &t);
            for i in 0..IN {
                for o in 0..OUT {
                    gw[i][o] += kw[i][o] / config.grad_accum_steps as f64;
                }
            }
            for o in 0..OUT {
                gb[o] += kb[o] / config.grad_accum_steps as f64;
            }
        }
        let mut gw: Vec<f64> = gw.iter().flatten().copied().collect();
        let mut gb = gb.to_vec();
        let total = gw.iter().chain(&gb).map(|g| g * g).sum::<f64>().sqrt();
        let coef = config.max_grad_norm.unwrap() / (total + 1e-6);
        if coef < 1.0 {
            clipped_steps += 1;
            gw.iter_mut().chain(gb.iter_mut()).for_each(|g| *g *= coef);
        }
        let lr = schedule.lr_at(s);
        let torch = TorchAdamW {
            lr,
            betas: config.betas,
            eps: config.eps,
            weight_decay: config.weight_decay,
        };
        let mut flat_w: Vec<f64> = w.iter().flatten().copied().collect();
        torch.step(&mut flat_w, &gw, &mut mw);
        torch.step(&mut b, &gb, &mut mb);
        for i in 0..IN {
            w[i].copy_from_slice(&flat_w[i * OUT..(i + 1) * OUT]);
        }

        assert_eq!(stats.lr, lr);
        assert!(!stats.skipped);
        let norm = stats.grad_norm.unwrap();
        assert!((norm - total).abs() <= 1e-5 * total, "{norm} vs {total}");
        worst = worst.max(assert_close(
            &values(model.weight.val()),
            &flat_w,
            5e-7,
            &format!("weight after step {s}"),
        ));
        worst = worst.max(assert_close(
            &values(model.bias.as_ref().unwrap().val()),
            &b,
            5e-7,
            &format!("bias after step {s}"),
        ));
    }
    assert!(clipped_steps > 0 && clipped_steps < 6, "{clipped_steps}");
    eprintln!("worst |burn - torch(f64)| over 6 steps: {worst:e}");
}

/// `clip_grad_norm_` on hand-made gradients: one norm over all tensors, scaled by
/// `max_norm / (total + 1e-6)` only above the threshold.
#[test]
fn global_norm_clipping_matches_torch() {
    let device = Device::flex();
    let model = linear(&[[0.0; OUT]; IN], &[0.0; OUT], &device);
    let grads = |w: [f32; IN * OUT], b: [f32; OUT]| {
        let mut grads = GradientsParams::new();
        grads.register(
            model.weight.id,
            Tensor::<2>::from_data(TensorData::new(w.to_vec(), [IN, OUT]), &device),
        );
        grads.register(
            model.bias.as_ref().unwrap().id,
            Tensor::<1>::from_data(TensorData::new(b.to_vec(), [OUT]), &device),
        );
        grads
    };
    let w = [3.0, 0.0, 0.0, 4.0, 0.0, 0.0];
    let b = [12.0, 0.0];
    // Per-tensor norms 5 and 12, global norm 13 (burn's own clipping would see 5 and 12).
    let mut g = grads(w, b);
    assert!((grad_norm(&model, &g) - 13.0).abs() < 1e-6);
    let total = clip_grad_norm(&model, &mut g, 1.3);
    assert!((total - 13.0).abs() < 1e-6);
    let coef = 1.3 / (13.0 + 1e-6);
    let expect_w: Vec<f64> = w.iter().map(|v| *v as f64 * coef).collect();
    let expect_b: Vec<f64> = b.iter().map(|v| *v as f64 * coef).collect();
    assert_close(
        &values(g.get::<2>(model.weight.id).unwrap()),
        &expect_w,
        1e-7,
        "w",
    );
    let bias_id = model.bias.as_ref().unwrap().id;
    assert_close(&values(g.get::<1>(bias_id).unwrap()), &expect_b, 1e-7, "b");
    assert!((grad_norm(&model, &g) - 1.3).abs() < 1e-5);

    // Below the threshold nothing changes.
    let mut g = grads(w, b);
    assert!((clip_grad_norm(&model, &mut g, 20.0) - 13.0).abs() < 1e-6);
    let unchanged: Vec<f64> = w.iter().map(|v| *v as f64).collect();
    assert_close(
        &values(g.get::<2>(model.weight.id).unwrap()),
        &unchanged,
        0.0,
        "w",
    );

    // Parameters without a gradient (frozen ones) do not count.
    let mut g = GradientsParams::new();
    g.register(
        bias_id,
        Tensor::<1>::from_data(TensorData::new(b.to_vec(), [OUT]), &device),
    );
    assert!((clip_grad_norm(&model, &mut g, 6.0) - 12.0).abs() < 1e-6);
    assert_close(
        &values(g.get::<1>(bias_id).unwrap()),
        &[6.0 * 12.0 / (12.0 + 1e-6), 0.0],
        1e-7,
        "b alone",
    );

    // A non-finite norm leaves the gradients alone and the optimizer skips the step.
    let mut g = grads([f32::NAN, 0.0, 0.0, 0.0, 0.0, 0.0], b);
    assert!(clip_grad_norm(&model, &mut g, 1.0).is_nan());
    assert_close(
        &values(g.get::<1>(bias_id).unwrap()),
        &[12.0, 0.0],
        0.0,
        "b",
    );
    let mut optim = OptimConfig::default().build().unwrap();
    let before = values(model.weight.val());
    let (model, stats) = optim.step(0, model, g);
    assert!(stats.skipped);
    assert_eq!(values(model.weight.val()), before);
}

#[test]
fn accumulation_averages_micro_batches() {
    let device = Device::flex();
    let model = linear(&[[0.0; OUT]; IN], &[0.0; OUT], &device);
    let bias_id = model.bias.as_ref().unwrap().id;
    let mut accum = GradAccumulator::new();
    for b in [[1.0f32, -2.0], [3.0, 4.0], [5.0, 10.0]] {
        let mut g = GradientsParams::new();
        g.register(
            bias_id,
            Tensor::<1>::from_data(TensorData::new(b.to_vec(), [OUT]), &device),
        );
        accum.accumulate(&model, g);
    }
    assert_eq!(accum.count(), 3);
    let mean = accum.finish(&model);
    assert_close(
        &values(mean.get::<1>(bias_id).unwrap()),
        &[3.0, 4.0],
        1e-6,
        "mean",
    );
    assert!(mean.get::<2>(model.weight.id).is_none());

    let mut g = mean;
    scale_grads(&model, &mut g, -0.5);
    assert_close(
        &values(g.get::<1>(bias_id).unwrap()),
        &[-1.5, -2.0],
        1e-6,
        "scaled",
    );
}

#[test]
fn schedule_warmup_and_cosine() {
    let config = OptimConfig {
        lr: 1e-3,
        warmup_steps: 100,
        decay: Decay::Cosine,
        total_steps: Some(1100),
        min_lr: 1e-5,
        ..Default::default()
    };
    let s = config.schedule().unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-15 + 1e-12 * b.abs();
    assert_eq!(s.lr_at(0), 0.0, "warm-up starts at 0 (HF convention)");
    assert!(close(s.lr_at(50), 5e-4));
    assert!(close(s.lr_at(99), 9.9e-4));
    assert!(close(s.lr_at(100), 1e-3), "warm-up ends at the peak");
    assert!(close(s.lr_at(600), 1e-5 + (1e-3 - 1e-5) * 0.5), "half way");
    let quarter = 1e-5 + (1e-3 - 1e-5) * 0.5 * (1.0 + (std::f64::consts::PI * 0.25).cos());
    assert!(close(s.lr_at(350), quarter));
    assert!(close(s.lr_at(1100), 1e-5), "cosine ends at min_lr");
    assert!(close(s.lr_at(5000), 1e-5), "and stays there");
    assert!(s.lr_at(101) < s.lr_at(100));

    let constant = OptimConfig {
        lr: 2e-5,
        warmup_steps: 10,
        ..Default::default()
    }
    .schedule()
    .unwrap();
    assert!(close(constant.lr_at(5), 1e-5));
    assert_eq!(constant.lr_at(10), 2e-5);
    assert_eq!(constant.lr_at(1_000_000), 2e-5);
    assert_eq!(LrSchedule::constant(3e-4).lr_at(0), 3e-4);
}
