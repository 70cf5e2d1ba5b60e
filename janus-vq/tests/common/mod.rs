//! VQ-specific helpers for the parity tests; fixture discovery, goldens, error measures and
//! weight loading come from `janus-testutil`.

#![allow(dead_code)]

use std::path::Path;

use burn::tensor::{DType, Device, Int, Tensor};
use janus_testutil::{is_hf_layout, load, read_config, safetensors_files};
use janus_vq::{VqConfig, VqModel};

/// Checkpoint key → module path rules for `gen_vision_model.*` (applied in order).
pub const VQ_KEY_REMAP: [(&str, &str); 4] = [
    (r"^gen_vision_model\.", ""),
    (r"^(encoder|decoder)\.mid\.0\.", "$1.mid.block_1."),
    (r"^(encoder|decoder)\.mid\.1\.", "$1.mid.attn_1."),
    (r"^(encoder|decoder)\.mid\.2\.", "$1.mid.block_2."),
];

/// `gen_vision_config.params` → config: VQ-16 defaults, overridden by explicit (tiny) keys.
pub fn vq_config(config: &serde_json::Value) -> VqConfig {
    let params = &config["gen_vision_config"]["params"];
    let uint = |key: &str| params[key].as_u64().map(|v| v as usize);
    let mut c = VqConfig::vq_16();
    if let Some(v) = uint("image_token_size").or(uint("codebook_size")) {
        c.codebook_size = v;
    }
    if let Some(v) = uint("n_embed").or(uint("codebook_embed_dim")) {
        c.codebook_embed_dim = v;
    }
    if let Some(v) = uint("ch") {
        c.ch = v;
    }
    if let Some(v) = uint("z_channels") {
        c.z_channels = v;
    }
    if let Some(v) = uint("num_res_blocks") {
        c.num_res_blocks = v;
    }
    if let Some(list) = params["ch_mult"]
        .as_array()
        .or(params["encoder_ch_mult"].as_array())
    {
        c.ch_mult = list
            .iter()
            .map(|v| v.as_u64().expect("ch_mult entry") as usize)
            .collect();
    }
    c
}

/// Builds the VQ model of a fixture and loads its weights in `dtype`; `None` (with a note)
/// when the fixture has no safetensors weights.
pub fn load_vq(dir: &Path, dtype: DType, device: &Device) -> Option<(VqModel, VqConfig)> {
    if is_hf_layout(dir) {
        eprintln!(
            "{}: transformers layout, checked through janus-core, skipped",
            dir.display()
        );
        return None;
    }
    let Some(files) = safetensors_files(dir) else {
        eprintln!("{}: no safetensors weights, skipped", dir.display());
        return None;
    };
    let config = vq_config(&read_config(dir));
    let mut model = config.init(device).expect("valid VQ config");
    load(&mut model, &files, &VQ_KEY_REMAP, dtype);
    Some((model, config))
}

/// Host copy of integer codes as i64.
pub fn codes_vec(codes: Tensor<2, Int>) -> Vec<i64> {
    codes
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .unwrap()
}
