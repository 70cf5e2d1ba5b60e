//! janus-train's VQ tokenizer training on shapes images, the data the shapes recipe trains it on.

use burn::module::Module;
use burn::tensor::Device;
use janus_core::janus_vq::VqConfig;
use janus_shapes::ShapeGenerator;
use janus_train::vq_train::{VqTrainConfig, codebook_usage, reconstruct, train_vq};

/// A few steps on a tiny tokenizer: the loss falls, dead entries restart on latents (unit
/// rows), and the trained model still encodes and decodes.
#[test]
fn trains_and_restarts_dead_codes() {
    let device = Device::flex();
    let ad = device.clone().autodiff();
    ad.seed(3);
    let vq = VqConfig::new()
        .with_ch(32)
        .with_ch_mult(vec![1, 2])
        .with_z_channels(32)
        .with_num_res_blocks(1)
        .with_codebook_size(32)
        .init(&ad)
        .unwrap();
    let config = VqTrainConfig {
        steps: 12,
        batch_size: 4,
        lr: 3e-3,
        warmup_steps: 0,
        restart_after: 4,
        ..Default::default()
    };
    let mut shapes = ShapeGenerator::new(16, 1);
    let mut next = |n: usize| (0..n).map(|_| shapes.sample().render()).collect::<Vec<_>>();
    let (vq, reports) = train_vq(vq, &config, &ad, &mut next, &mut |_| {}).unwrap();
    assert_eq!(reports.len(), 12);
    assert!(reports.iter().all(|r| r.loss.is_finite()));
    assert!(reports.iter().map(|r| r.restarted).sum::<usize>() > 0);
    let first = reports[..3].iter().map(|r| r.recon).sum::<f64>();
    let last = reports[9..].iter().map(|r| r.recon).sum::<f64>();
    assert!(last < first, "reconstruction did not improve: {reports:?}");
    let vq = vq.valid();
    let images: Vec<_> = (0..4).map(|_| shapes.sample().render()).collect();
    let (usage, mse) = codebook_usage(&vq, &images, &device);
    assert!(usage.used >= 1 && mse.is_finite());
    assert_eq!(reconstruct(&vq, &images, &device).len(), 4);
}
