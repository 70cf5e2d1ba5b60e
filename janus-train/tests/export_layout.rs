//! Exporting in either published layout (`export.layout = "original" | "hf"`): a model written
//! in one layout and read back in the other has the same parameters and logits, and the
//! tensors written match what transformers' own conversion produced for the bundled fixture.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use burn_store::ModuleSnapshot;
use janus_core::checkpoint::remap::is_ignored;
use janus_core::{Janus, JanusModel, LoadOptions, ModelLayout};
use janus_testutil::{read_goldens, read_safetensors_raw as tensors};
use janus_train::config::TrainConfig;
use janus_train::export::{ExportOptions, export_model_dir_as};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn load(dir: &Path) -> JanusModel {
    JanusModel::load(dir, &LoadOptions::default(), &Device::flex())
        .unwrap()
        .0
}

fn export(model: &JanusModel, source: &Path, out: &Path, layout: ModelLayout) {
    export_model_dir_as(model, source, out, layout, &ExportOptions::default()).unwrap();
}

/// Every parameter's bytes by module path.
fn parameters(model: &JanusModel) -> BTreeMap<String, Vec<u8>> {
    model
        .collect(None, None, true)
        .into_iter()
        .map(|t| (t.name.clone(), t.to_bytes().unwrap().to_vec()))
        .collect()
}

/// Language-model logits on the fixture's `goldens/llm.safetensors` inputs.
fn logits(model: &JanusModel) -> Vec<f32> {
    let device = Device::flex();
    let g = read_goldens(&fixture("tiny-janus").join("goldens/llm.safetensors"));
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

fn config_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

#[test]
fn original_written_as_hf_and_back_gives_identical_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let (hf_dir, back_dir) = (tmp.path().join("hf"), tmp.path().join("original"));
    let source = fixture("tiny-janus");
    let model = load(&source);
    let reference = logits(&model);

    export(&model, &source, &hf_dir, ModelLayout::Hf);
    assert_eq!(config_json(&hf_dir)["model_type"], "janus");
    // The same tensors, names and shapes transformers' conversion wrote for this fixture.
    let written = tensors(&hf_dir.join("model.safetensors"));
    let converted = tensors(&fixture("tiny-janus-hf").join("model.safetensors"));
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        converted.keys().collect::<Vec<_>>()
    );
    for (key, tensor) in &written {
        assert!(
            converted[key] == *tensor,
            "{key} differs from the conversion"
        );
    }

    let hf_model = load(&hf_dir);
    assert_eq!(parameters(&hf_model), parameters(&model));
    assert_eq!(logits(&hf_model), reference);

    export(&hf_model, &hf_dir, &back_dir, ModelLayout::Original);
    assert_eq!(config_json(&back_dir)["model_type"], "multi_modality");
    let back = tensors(&back_dir.join("model.safetensors"));
    let shipped = tensors(&source.join("model.safetensors"));
    assert_eq!(
        back.keys().collect::<Vec<_>>(),
        shipped.keys().collect::<Vec<_>>()
    );
    for (key, (shape, bytes)) in &back {
        assert_eq!(*shape, shipped[key].0, "{key}");
        if is_ignored(key) {
            // Never run; the transformers layout does not keep them.
            assert!(bytes.iter().all(|b| *b == 0), "{key}");
        } else {
            assert!(*bytes == shipped[key].1, "{key} differs from the release");
        }
    }
    let back_model = load(&back_dir);
    assert_eq!(logits(&back_model), reference);
}

#[test]
fn hf_written_as_original_gives_identical_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let source = fixture("tiny-janus-hf");
    let model = load(&source);
    let out = tmp.path().join("original");
    export(&model, &source, &out, ModelLayout::Original);
    let exported = load(&out);
    assert_eq!(parameters(&exported), parameters(&model));
    assert_eq!(logits(&exported), logits(&model));
}

/// Converted processor files load, and the converted directory prompts and answers like the
/// source.
#[test]
fn converted_directory_loads_through_janus() {
    let tmp = tempfile::tempdir().unwrap();
    let source = fixture("tiny-janus");
    let device = Device::flex();
    let janus = Janus::load(&source, &LoadOptions::default(), &device).unwrap();
    let out = tmp.path().join("hf");
    export(&janus.model, &source, &out, ModelLayout::Hf);
    let processor: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("processor_config.json")).unwrap())
            .unwrap();
    assert_eq!(processor["processor_class"], "JanusProcessor");
    let image: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("preprocessor_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(image["size"]["height"], 32);

    let converted = Janus::load(&out, &LoadOptions::default(), &device).unwrap();
    assert_eq!(converted.config.layout, ModelLayout::Hf);
    assert_eq!(converted.processor.config(), janus.processor.config());
    assert_eq!(
        converted.processor.image_processor().config(),
        janus.processor.image_processor().config()
    );
    let question = janus.processor.question("Describe the picture.", 0);
    assert_eq!(
        converted.processor.understanding_prompt(&question).unwrap(),
        janus.processor.understanding_prompt(&question).unwrap()
    );
}

/// Exporting in the source's own layout copies its files.
#[test]
fn same_layout_export_copies_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let source = fixture("tiny-janus-hf");
    let out = tmp.path().join("hf");
    export(&load(&source), &source, &out, ModelLayout::Hf);
    for name in [
        "config.json",
        "processor_config.json",
        "preprocessor_config.json",
    ] {
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(source.join(name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn training_config_names_the_export_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.toml");
    std::fs::write(&path, "model = \"m\"\n[export]\nlayout = \"hf\"\n").unwrap();
    let config = TrainConfig::from_file(&path).unwrap();
    assert_eq!(config.export.layout, ModelLayout::Hf);

    std::fs::write(&path, "model = \"m\"\n").unwrap();
    let config = TrainConfig::from_file(&path).unwrap();
    assert_eq!(config.export.layout, ModelLayout::Original);

    std::fs::write(&path, "model = \"m\"\n[export]\nlayout = \"gguf\"\n").unwrap();
    let err = TrainConfig::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("gguf") || err.contains("variant"), "{err}");
}
