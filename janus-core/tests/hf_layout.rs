//! The transformers layout (`model_type: "janus"`, `model.*` tensors): detection from
//! `config.json`, the fused and squeezed tensors, the half-converted-directory errors, and the
//! processor files transformers writes.
//!
//! Built from the two bundled fixtures, which hold the same weights: `tests/fixtures/tiny-janus`
//! (original layout) and `tests/fixtures/tiny-janus-hf` (converted by transformers).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use burn_store::ModuleSnapshot;
use janus_core::processor::{ImageProcessorConfig, Processor};
use janus_core::{Janus, JanusConfig, JanusError, JanusModel, LoadOptions, ModelLayout};
use janus_testutil::{read_goldens, read_safetensors_raw as tensors};
use safetensors::Dtype;
use tempfile::TempDir;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn original() -> PathBuf {
    fixture("tiny-janus")
}

fn hf() -> PathBuf {
    fixture("tiny-janus-hf")
}

fn load(dir: &Path) -> Result<(JanusModel, JanusConfig), JanusError> {
    JanusModel::load(dir, &LoadOptions::default(), &Device::flex()).map(|(m, c, _)| (m, c))
}

/// Every parameter's bytes by module path.
fn parameters(model: &JanusModel) -> BTreeMap<String, Vec<u8>> {
    model
        .collect(None, None, true)
        .into_iter()
        .map(|t| (t.name.clone(), t.to_bytes().unwrap().to_vec()))
        .collect()
}

/// Language-model logits on the original fixture's `goldens/llm.safetensors` inputs.
fn llm_logits(model: &JanusModel) -> Vec<f32> {
    let device = Device::flex();
    let g = read_goldens(&original().join("goldens/llm.safetensors"));
    let (ids, mask) = (&g["input_ids"], &g["attention_mask"]);
    let (b, t) = (ids.shape[0], ids.shape[1]);
    let rows = mask.mask_rows();
    let ids: Tensor<2, Int> = Tensor::from_data(TensorData::new(ids.ints.clone(), [b, t]), &device);
    model
        .language_model
        .forward(ids, Some(&rows), None)
        .unwrap()
        .cast(DType::F32)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

fn write(path: &Path, tensors: &BTreeMap<String, (Vec<usize>, Vec<u8>)>) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(k, (shape, bytes))| {
            let view =
                safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap();
            (k.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A temporary copy of a fixture's JSON files, without weights.
fn json_files_of(dir: &Path) -> TempDir {
    let out = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && path.extension().is_some_and(|e| e == "json") {
            std::fs::copy(&path, out.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    out
}

#[test]
fn layout_is_detected_from_config() {
    let (_, config) = load(&original()).unwrap();
    assert_eq!(config.layout, ModelLayout::Original);
    let (_, hf_config) = load(&hf()).unwrap();
    assert_eq!(hf_config.layout, ModelLayout::Hf);
    // Everything but the layout and the vision tower's name resolves the same.
    let same = JanusConfig {
        layout: ModelLayout::Original,
        vision: janus_core::config::VisionParams {
            model_name: config.vision.model_name.clone(),
            ..hf_config.vision.clone()
        },
        ..hf_config
    };
    assert_eq!(same, config);
}

#[test]
fn both_layouts_load_the_same_weights() {
    let (a, _) = load(&original()).unwrap();
    let (b, _) = load(&hf()).unwrap();
    let (pa, pb) = (parameters(&a), parameters(&b));
    assert_eq!(pa.keys().collect::<Vec<_>>(), pb.keys().collect::<Vec<_>>());
    for (path, bytes) in &pa {
        assert!(pb[path] == *bytes, "{path} differs between the layouts");
    }
    assert_eq!(llm_logits(&a), llm_logits(&b));
}

#[test]
fn config_json_round_trips_through_both_layouts() {
    let janus = Janus::load(hf(), &LoadOptions::default(), &Device::flex()).unwrap();
    let tokens = janus.processor.special_tokens();
    for layout in [ModelLayout::Original, ModelLayout::Hf] {
        let text = janus.config.to_json(layout, &tokens).unwrap();
        let back = JanusConfig::from_json_str(&text).unwrap();
        assert_eq!(back.layout, layout);
        assert_eq!(
            JanusConfig {
                layout: janus.config.layout,
                ..back
            },
            janus.config,
            "{layout:?}"
        );
    }
    let text = janus.config.to_json(ModelLayout::Hf, &tokens).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["image_token_id"], tokens.image);
    assert_eq!(value["vq_config"]["num_patches"], 8);
}

#[test]
fn hf_config_defaults_are_transformers_janus_pro_1b() {
    let text = r#"{"model_type": "janus", "text_config": {"hidden_size": 2048,
        "intermediate_size": 5632, "num_attention_heads": 16, "num_key_value_heads": 16,
        "num_hidden_layers": 24,
        "vocab_size": 102400, "max_position_embeddings": 16384},
        "vision_config": {}, "vq_config": {"image_token_embed_dim": 2048}}"#;
    let config = JanusConfig::from_json_str(text).unwrap();
    assert_eq!(config.layout, ModelLayout::Hf);
    assert_eq!(
        JanusConfig {
            layout: ModelLayout::Original,
            ..config
        },
        JanusConfig::janus_pro_1b()
    );
}

#[test]
fn hf_config_rejects_what_no_janus_model_has() {
    for (section, key, value) in [
        ("vision_config", "use_qk_norm", "true"),
        ("vision_config", "hidden_act", "\"gelu_pytorch_tanh\""),
        ("vq_config", "double_latent", "true"),
        ("text_config", "attention_bias", "true"),
    ] {
        let text = format!(
            r#"{{"model_type": "janus", "text_config": {{}}, "vision_config": {{}}, "vq_config": {{}}, "{section}": {{"{key}": {value}}}}}"#
        );
        let err = JanusConfig::from_json_str(&text).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }
}

/// transformers' config with the original weights: the error names both layouts.
#[test]
fn half_converted_hf_config_with_original_weights() {
    let dir = json_files_of(&hf());
    std::fs::copy(
        original().join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let err = load(dir.path()).unwrap_err();
    match &err {
        JanusError::LayoutMismatch {
            config, weights, ..
        } => {
            assert_eq!(
                (*config, *weights),
                (ModelLayout::Hf, ModelLayout::Original)
            );
        }
        other => panic!("expected a layout mismatch, got {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("half-converted")
            && message.contains("config.json is in the hf")
            && message.contains("in the original"),
        "{message}"
    );
}

/// The original config with transformers' weights.
#[test]
fn half_converted_original_config_with_hf_weights() {
    let dir = json_files_of(&original());
    std::fs::copy(
        hf().join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            JanusError::LayoutMismatch {
                config: ModelLayout::Original,
                weights: ModelLayout::Hf,
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("config.json is in the original") && message.contains("in the hf"),
        "{message}"
    );
}

/// A split projection with a part missing is reported under the missing part's key.
#[test]
fn missing_qkv_part_is_named() {
    let dir = json_files_of(&hf());
    let mut all = tensors(&hf().join("model.safetensors"));
    let key = "model.vision_model.encoder.layers.1.self_attn.k_proj.weight";
    assert!(all.remove(key).is_some());
    write(&dir.path().join("model.safetensors"), &all);
    match load(dir.path()).unwrap_err() {
        JanusError::MissingTensor { key: k, expected } => {
            assert_eq!(k, key);
            assert_eq!(expected, vec![32, 32]);
        }
        other => panic!("expected a missing tensor, got {other}"),
    }
}

/// A wrongly shaped part or position embedding is a shape error under its own key.
#[test]
fn hf_shape_errors_name_the_stored_shape() {
    let dir = json_files_of(&hf());
    let mut all = tensors(&hf().join("model.safetensors"));
    let key = "model.vision_model.embeddings.position_embedding.weight";
    let (_, bytes) = all.remove(key).unwrap();
    all.insert(key.into(), (vec![1, 16, 32], bytes));
    write(&dir.path().join("model.safetensors"), &all);
    match load(dir.path()).unwrap_err() {
        JanusError::ShapeMismatch {
            key: k,
            expected,
            found,
            ..
        } => {
            assert_eq!(k, key);
            assert_eq!((expected, found), (vec![16, 32], vec![1, 16, 32]));
        }
        other => panic!("expected a shape mismatch, got {other}"),
    }
}

/// The processor files transformers writes (`JanusProcessor`, `JanusImageProcessor` with
/// `size`, a tokenizer config carrying a `chat_template`) load, and prompts are unchanged: the
/// processor applies the model's deepseek template itself.
#[test]
fn transformers_processor_files_load() {
    let dir = json_files_of(&hf());
    std::fs::copy(
        hf().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let image = ImageProcessorConfig::load(&hf().join("preprocessor_config.json")).unwrap();
    std::fs::write(
        dir.path().join("preprocessor_config.json"),
        image.to_json(ModelLayout::Hf),
    )
    .unwrap();
    let chat =
        janus_core::processor::ProcessorConfig::load(&hf().join("processor_config.json")).unwrap();
    std::fs::write(
        dir.path().join("processor_config.json"),
        chat.to_json(ModelLayout::Hf),
    )
    .unwrap();
    let path = dir.path().join("tokenizer_config.json");
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    tokenizer["chat_template"] = serde_json::json!(
        "{%for message in messages%}{{message['role']}}: {{message['content']}}{%endfor%}"
    );
    std::fs::write(&path, tokenizer.to_string()).unwrap();

    let written = ImageProcessorConfig::load(&dir.path().join("preprocessor_config.json")).unwrap();
    assert_eq!(written, image);
    let converted = Processor::from_dir(dir.path()).unwrap();
    let reference = Processor::from_dir(original()).unwrap();
    assert_eq!(converted.config(), reference.config());
    let question = reference.question("What is in the picture?", 1);
    assert_eq!(
        converted.understanding_prompt(&question).unwrap(),
        reference.understanding_prompt(&question).unwrap()
    );
}

#[test]
fn image_size_must_be_square() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("preprocessor_config.json");
    std::fs::write(&path, r#"{"size": {"height": 384, "width": 256}}"#).unwrap();
    let err = ImageProcessorConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("square"), "{err}");
    std::fs::write(
        &path,
        r#"{"size": {"height": 224, "width": 224}, "image_mean": 0.5, "image_std": 0.5}"#,
    )
    .unwrap();
    assert_eq!(ImageProcessorConfig::load(&path).unwrap().image_size, 224);
}
