//! Aligners and `gen_embed` against the reference implementation's golden tensors.

use burn::module::Module;
use burn::nn::Embedding;
use burn::tensor::{DType, Device, FloatDType};
use janus_adapters::{GenEmbedConfig, GenHead, GenHeadConfig, MlpProjector, MlpProjectorConfig};
use janus_testutil::{
    Goldens, device_supports, fixture_dirs, is_hf_layout, load, read_config, relative_error,
    safetensors_files, test_device,
};
use serde_json::Value;

/// The four adapter modules under their checkpoint prefixes, as the full model holds them.
#[derive(Module, Debug)]
struct Adapters {
    aligner: MlpProjector,
    gen_embed: Embedding,
    gen_aligner: MlpProjector,
    gen_head: GenHead,
}

fn uint(params: &Value, key: &str) -> usize {
    params[key]
        .as_u64()
        .unwrap_or_else(|| panic!("missing `{key}` in {params}")) as usize
}

fn projector_config(params: &Value) -> MlpProjectorConfig {
    let kind = params["projector_type"].as_str().expect("projector_type");
    MlpProjectorConfig::from_type_name(kind, uint(params, "input_dim"), uint(params, "n_embed"))
        .expect("supported projector")
        .with_depth(params["depth"].as_u64().unwrap_or(1) as usize)
}

/// Checkpoint → module path rules for a projector under `prefix`: the reference's
/// `nn.Sequential` puts Linears at even indices (`layers.2k` → `layers.k`), and a `linear`
/// projector stores its single Linear directly at `layers`.
fn projector_remap(prefix: &str, config: &MlpProjectorConfig) -> Vec<(String, String)> {
    let mut rules = vec![(
        format!(r"^{prefix}\.layers\.(weight|bias)$"),
        format!("{prefix}.layers.0.$1"),
    )];
    // Increasing k, so a key already rewritten is never matched again by a later rule.
    for k in 1..config.num_linears() {
        rules.push((
            format!(r"^{prefix}\.layers\.{}\.", 2 * k),
            format!("{prefix}.layers.{k}."),
        ));
    }
    rules
}

fn load_adapters(dir: &std::path::Path, dtype: DType, device: &Device) -> Option<Adapters> {
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
    let config = read_config(dir);
    let aligner = projector_config(&config["aligner_config"]["params"]);
    let gen_aligner = projector_config(&config["gen_aligner_config"]["params"]);
    let head = &config["gen_head_config"]["params"];
    let embed = &config["gen_vision_config"]["params"];
    let mut adapters = Adapters {
        aligner: aligner.init(device).unwrap(),
        gen_embed: GenEmbedConfig::new(uint(embed, "image_token_size"), uint(embed, "n_embed"))
            .init(device)
            .unwrap(),
        gen_aligner: gen_aligner.init(device).unwrap(),
        gen_head: GenHeadConfig::new(
            uint(head, "n_embed"),
            uint(head, "image_token_embed"),
            uint(head, "image_token_size"),
        )
        .init(device)
        .unwrap(),
    };
    let mut remap = projector_remap("aligner", &aligner);
    remap.extend(projector_remap("gen_aligner", &gen_aligner));
    load(&mut adapters, &files, &remap, dtype);
    Some(adapters)
}

fn check(dtype: DType, tolerance: f64) {
    let device = test_device();
    if !device_supports(&device, dtype) {
        return;
    }
    let dirs = fixture_dirs("vision.safetensors");
    assert!(
        !dirs.is_empty(),
        "no fixture with goldens/vision.safetensors"
    );
    let mut checked = 0;
    for dir in dirs {
        let Some(m) = load_adapters(&dir, dtype, &device) else {
            continue;
        };
        let float_dtype: FloatDType = dtype.into();

        let vision = Goldens::open(&dir, "vision.safetensors");
        let features = vision.float::<3>("features", &device).cast(float_dtype);
        let aligned = m.aligner.forward(features);
        assert_eq!(aligned.dtype(), dtype);
        let err = relative_error(aligned, vision.float::<3>("aligned", &device));
        println!(
            "{}: aligner {dtype:?} relative error {err:.3e}",
            dir.display()
        );
        assert!(
            err <= tolerance,
            "aligner relative error {err:.3e} > {tolerance:e}"
        );

        let vq_path = dir.join("goldens").join("vq.safetensors");
        if vq_path.is_file() {
            let vq = Goldens::open(&dir, "vq.safetensors");
            let codes = vq.int::<2>("random_codes", &device);
            let embeds = m.gen_aligner.forward(m.gen_embed.forward(codes));
            assert_eq!(embeds.dtype(), dtype);
            let err = relative_error(embeds, vq.float::<3>("gen_img_embeds", &device));
            println!(
                "{}: gen_aligner(gen_embed) {dtype:?} relative error {err:.3e}",
                dir.display()
            );
            assert!(
                err <= tolerance,
                "gen embeds relative error {err:.3e} > {tolerance:e}"
            );
        }
        checked += 1;
    }
    assert!(checked > 0, "no fixture could be checked");
}

#[test]
fn adapters_match_golden_f32() {
    check(DType::F32, 1e-4);
}

/// Same weights cast to bf16 on load: everything must run in bf16, within the bf16 tolerance.
#[test]
fn adapters_match_golden_bf16() {
    check(DType::BF16, 2e-2);
}
