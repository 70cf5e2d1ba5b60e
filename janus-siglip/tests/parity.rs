//! SigLIP tower against the reference implementation's golden `features`.

use burn::tensor::{DType, Device, FloatDType};
use janus_siglip::{SiglipConfig, SiglipVisionTower};
use janus_testutil::{
    Goldens, device_supports, fixture_dirs, is_hf_layout, load, read_config, relative_error,
    safetensors_files, test_device,
};

/// `vision_config.params` → config: the `model_name` preset, overridden by explicit tiny dims.
fn siglip_config(config: &serde_json::Value) -> SiglipConfig {
    let params = &config["vision_config"]["params"];
    let mut c = params["model_name"]
        .as_str()
        .and_then(|name| SiglipConfig::from_model_name(name).ok())
        .unwrap_or_else(SiglipConfig::siglip_large_patch16_384);
    let uint = |key: &str| params[key].as_u64().map(|v| v as usize);
    if let Some(v) = uint("image_size") {
        c.image_size = v;
    }
    if let Some(v) = uint("patch_size") {
        c.patch_size = v;
    }
    if let Some(v) = uint("width") {
        c.width = v;
    }
    if let Some(v) = uint("layers") {
        c.layers = v;
    }
    if let Some(v) = uint("heads") {
        c.heads = v;
    }
    if let Some(v) = params["mlp_ratio"].as_f64() {
        c.mlp_ratio = v;
    }
    if let Some(v) = params["select_layer"].as_i64() {
        c.select_layer = v;
    }
    c
}

/// Builds the tower for a fixture and loads its weights in `dtype`.
fn load_tower(dir: &std::path::Path, dtype: DType, device: &Device) -> Option<SiglipVisionTower> {
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
    let config = siglip_config(&read_config(dir));
    let mut tower = config.init(device).expect("valid vision config");
    // The loader strips the wrapper prefix; `attn_pool.*` then matches no field and stays unused.
    let remap = [(r"^vision_model\.vision_tower\.".to_owned(), String::new())];
    load(&mut tower, &files, &remap, dtype);
    Some(tower)
}

#[test]
fn features_match_golden_f32() {
    let device = test_device();
    let dirs = fixture_dirs("vision.safetensors");
    assert!(
        !dirs.is_empty(),
        "no fixture with goldens/vision.safetensors"
    );
    let mut checked = 0;
    for dir in dirs {
        let Some(tower) = load_tower(&dir, DType::F32, &device) else {
            continue;
        };
        let goldens = Goldens::open(&dir, "vision.safetensors");
        let pixels = goldens.float::<4>("pixel_values", &device);
        let features = goldens.float::<3>("features", &device);
        let err = relative_error(tower.forward(pixels), features);
        println!(
            "{}: SigLIP features f32 relative error {err:.3e}",
            dir.display()
        );
        assert!(err <= 1e-4, "relative error {err:.3e} > 1e-4");
        checked += 1;
    }
    assert!(checked > 0, "no fixture could be checked");
}

/// Same weights cast to bf16 on load: the tower must run entirely in bf16 and stay within the
/// bf16 tolerance of the f32 reference.
#[test]
fn features_match_golden_bf16() {
    let device = test_device();
    if !device_supports(&device, DType::BF16) {
        return;
    }
    for dir in fixture_dirs("vision.safetensors") {
        let Some(tower) = load_tower(&dir, DType::BF16, &device) else {
            continue;
        };
        let goldens = Goldens::open(&dir, "vision.safetensors");
        let pixels = goldens
            .float::<4>("pixel_values", &device)
            .cast(FloatDType::BF16);
        let out = tower.forward(pixels);
        assert_eq!(out.dtype(), DType::BF16);
        let err = relative_error(out, goldens.float::<3>("features", &device));
        println!(
            "{}: SigLIP features bf16 relative error {err:.3e}",
            dir.display()
        );
        assert!(err <= 2e-2, "relative error {err:.3e} > 2e-2");
    }
}
