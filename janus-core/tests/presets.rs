//! The presets build exactly the released models: their parameter counts, read from lazy
//! shapes (nothing is allocated), plus the tensors the loader skips, equal the sizes published
//! for the checkpoints.

use burn::tensor::Device;
use janus_core::checkpoint::expected_shapes;
use janus_core::{JanusConfig, JanusModel};

/// `vision_model.vision_tower.attn_pool.*` of SigLIP-L (built by the reference, never run).
const ATTN_POOL: usize = 1024 // latent
    + (1024 * 1024 + 1024) // q
    + (1024 * 2048 + 2048) // kv
    + (1024 * 1024 + 1024) // proj
    + 2 * 1024 // norm
    + (1024 * 4096 + 4096) // mlp.fc1
    + (4096 * 1024 + 1024); // mlp.fc2
/// `gen_vision_model.quantize.codebook_used`.
const CODEBOOK_USED: usize = 65536;

/// Parameters of the reference module (`model.parameters()`: the buffer is not one).
fn reference_params(config: &JanusConfig) -> usize {
    let model = JanusModel::init(config, &Device::flex()).unwrap();
    let shapes = expected_shapes(&model);
    shapes
        .values()
        .map(|s| s.iter().product::<usize>())
        .sum::<usize>()
        + ATTN_POOL
}

#[test]
fn janus_pro_1b_matches_the_released_checkpoint() {
    // 2,089,232,011 parameters (`sum(p.numel() for p in model.parameters())`) for Janus-Pro-1B.
    assert_eq!(
        reference_params(&JanusConfig::janus_pro_1b()),
        2_089_232_011
    );
}

#[test]
fn janus_pro_7b_matches_the_released_index() {
    // pytorch_model.bin.index.json: total_size 14,840,868,118 bytes of bf16, every tensor of the
    // state dict (buffer included).
    assert_eq!(
        (reference_params(&JanusConfig::janus_pro_7b()) + CODEBOOK_USED) * 2,
        14_840_868_118
    );
}
