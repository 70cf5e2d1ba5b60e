//! LoRA on the bundled tiny checkpoint: target selection, freezing, training only the adapters,
//! the adapter file round trip, merging, and rejected files.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param, ParamGroup};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use janus_core::{JanusModel, LoadOptions};
use janus_train::lora::{
    LoraConfig, LoraError, LoraTarget, adapter_group, adapter_paths, apply_lora, load_adapter,
    lora_base_group, merge_lora, read_adapter_config, save_adapter, unfreeze_group_keep_bases,
};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// Tiny fixture: 2 decoder layers (hidden 64, MLP 128), 2 SigLIP blocks (width 32, MLP 128).
const LAYERS: usize = 2;
const BLOCKS: usize = 2;
const IDS: [i64; 6] = [1, 17, 42, 99, 7, 250];
const TARGET_TOKEN: usize = 5;

fn tiny_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-janus")
}

fn load(device: &Device) -> JanusModel {
    JanusModel::load(tiny_dir(), &LoadOptions::default(), device)
        .unwrap()
        .0
}

/// LLM logits `[1, T, V]` of a fixed prompt.
fn logits(model: &JanusModel, device: &Device) -> Tensor<3> {
    let ids = Tensor::<2, Int>::from_data(TensorData::new(IDS.to_vec(), [1, IDS.len()]), device);
    model.language_model.forward(ids, None, None).unwrap()
}

fn values(t: Tensor<3>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Cross entropy of the last position toward [`TARGET_TOKEN`].
fn loss(model: &JanusModel, device: &Device) -> Tensor<1> {
    let logits = logits(model, device);
    let [_, t, v] = logits.dims();
    let last = logits.slice([0..1, t - 1..t, 0..v]).reshape([1, v]);
    log_softmax(last, 1)
        .slice([0..1, TARGET_TOKEN..TARGET_TOKEN + 1])
        .reshape([1])
        .neg()
}

/// Every float param by burn path: its values and whether it requires gradients.
#[derive(Default)]
struct Snapshot {
    stack: Vec<String>,
    values: BTreeMap<String, Vec<f32>>,
    trainable: BTreeSet<String>,
}

impl ModuleVisitor for Snapshot {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.stack.push(name.to_owned());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.stack.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.stack.join(".");
        if param.is_require_grad() {
            self.trainable.insert(path.clone());
        }
        let data = param.val().into_data().convert::<f32>();
        self.values.insert(path, data.try_to_vec().unwrap());
    }
}

fn snapshot(model: &JanusModel) -> Snapshot {
    let mut s = Snapshot::default();
    model.visit(&mut s);
    s
}

fn is_factor(path: &str) -> bool {
    path.ends_with(".lora.a") || path.ends_with(".lora.b")
}

fn llm_paths(names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..LAYERS {
        for n in names {
            let group = if n.ends_with("_proj") && ["q", "k", "v", "o"].contains(&&n[..1]) {
                "self_attn"
            } else {
                "mlp"
            };
            out.push(format!("language_model.model.layers.{i}.{group}.{n}"));
        }
    }
    out
}

fn vision_paths() -> Vec<String> {
    (0..BLOCKS)
        .flat_map(|i| {
            ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]
                .map(|m| format!("vision_model.blocks.{i}.{m}"))
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn config_parses_names_and_rejects_what_it_cannot_do() {
    let c: LoraConfig = serde_json::from_str(
        r#"{"rank": 4, "alpha": 8, "targets": ["q", "v_proj", "gate"], "vision": true}"#,
    )
    .unwrap();
    assert_eq!(
        c,
        LoraConfig::new(4, 8.0)
            .with_targets([LoraTarget::Q, LoraTarget::V, LoraTarget::Gate])
            .with_vision(true)
    );
    assert_eq!(
        c.llm_modules().into_iter().collect::<Vec<_>>(),
        ["gate_proj", "q_proj", "v_proj"]
    );
    for all in ["all", "ALL", "all-linear"] {
        let c: LoraConfig = serde_json::from_str(&format!(r#"{{"targets": ["{all}"]}}"#)).unwrap();
        assert_eq!(c.llm_modules().len(), 7);
        assert_eq!(all.parse::<LoraTarget>().unwrap(), LoraTarget::All);
    }
    assert_eq!(LoraConfig::default(), serde_json::from_str("{}").unwrap());
    assert!(serde_json::from_str::<LoraConfig>(r#"{"rnak": 4}"#).is_err());
    assert!(serde_json::from_str::<LoraConfig>(r#"{"targets": ["lm_head"]}"#).is_err());
    assert!("embed".parse::<LoraTarget>().is_err());

    // Selection by path: decoder linears and (with vision) SigLIP linears, nothing else.
    let all = LoraConfig::default().with_vision(true);
    for p in [
        "language_model.model.layers.0.self_attn.q_proj.weight",
        "language_model.model.layers.1.mlp.down_proj.weight",
        "vision_model.blocks.1.attn.qkv.weight",
        "vision_model.blocks.0.mlp.fc2.weight",
    ] {
        assert!(all.is_target(p), "{p}");
    }
    for p in [
        "language_model.model.layers.0.self_attn.q_proj.bias",
        "language_model.model.embed_tokens.weight",
        "language_model.lm_head.weight",
        "language_model.model.norm.gamma",
        "language_model.model.layers.0.mlp.q_proj.weight",
        "gen_head.output_mlp_projector.weight",
        "gen_embed.weight",
        "aligner.layers.0.weight",
        "vision_model.blocks.0.attn.qkv.bias",
        "vision_model.patch_embed.proj.weight",
    ] {
        assert!(!all.is_target(p), "{p}");
    }
    assert!(!LoraConfig::default().is_target("vision_model.blocks.0.attn.qkv.weight"));

    assert!(LoraConfig::default().with_dropout(0.05).validate().is_ok());
    assert!(matches!(
        LoraConfig::default().with_dropout(0.05).with_vision(true).validate(),
        Err(LoraError::DropoutUnsupported(p)) if p == 0.05
    ));
    assert!(matches!(
        LoraConfig::default().with_dropout(1.0).validate(),
        Err(LoraError::InvalidDropout(_))
    ));
    assert!(matches!(
        LoraConfig::new(0, 1.0).validate(),
        Err(LoraError::InvalidRank)
    ));
    assert!(matches!(
        LoraConfig::new(2, f64::NAN).validate(),
        Err(LoraError::InvalidAlpha(_))
    ));
    assert!(matches!(
        LoraConfig::default().with_targets([]).validate(),
        Err(LoraError::NoTargets)
    ));
    assert!(
        LoraConfig::default()
            .with_targets([])
            .with_vision(true)
            .validate()
            .is_ok()
    );
}

#[test]
fn adapters_land_exactly_on_the_chosen_linears() {
    let device = Device::flex();
    let base = load(&device);
    let base_params = base.num_params();
    let r = 2;
    // (config, expected adapted module paths, added params per layer/block as r·(d_in + d_out))
    let cases = [
        (
            LoraConfig::new(r, 4.0).with_targets([LoraTarget::Q]),
            llm_paths(&["q_proj"]),
            LAYERS * r * (64 + 64),
        ),
        (
            LoraConfig::new(r, 4.0).with_targets([LoraTarget::Q, LoraTarget::V]),
            llm_paths(&["q_proj", "v_proj"]),
            LAYERS * r * 2 * (64 + 64),
        ),
        (
            LoraConfig::new(r, 4.0).with_targets([LoraTarget::All]),
            llm_paths(&[
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ]),
            LAYERS * r * (4 * (64 + 64) + 3 * (64 + 128)),
        ),
        (
            LoraConfig::new(r, 4.0).with_targets([]).with_vision(true),
            vision_paths(),
            BLOCKS * r * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32)),
        ),
    ];
    for (config, expected, added) in cases {
        let model = apply_lora(base.clone(), &config).unwrap();
        assert_eq!(
            adapter_paths(&model),
            sorted(expected.clone()),
            "{config:?}"
        );
        assert_eq!(model.num_params(), base_params + added, "{config:?}");
        // The factor paths burn reports are the adapted weights' paths plus `.lora.{a,b}`.
        let factors: BTreeSet<String> = snapshot(&model)
            .values
            .into_keys()
            .filter(|p| is_factor(p))
            .collect();
        let want: BTreeSet<String> = expected
            .iter()
            .flat_map(|m| [format!("{m}.weight.lora.a"), format!("{m}.weight.lora.b")])
            .collect();
        assert_eq!(factors, want);
    }

    // `all` + vision: 7 per layer and 4 per block, still nothing on embeddings, heads or norms.
    let model = apply_lora(base, &LoraConfig::new(r, 4.0).with_vision(true)).unwrap();
    let paths = adapter_paths(&model);
    assert_eq!(paths.len(), 7 * LAYERS + 4 * BLOCKS);
    assert!(paths.iter().all(|p| {
        !(p.contains("embed") || p.contains("head") || p.contains("norm") || p.contains("aligner"))
    }));
}

#[test]
fn fresh_adapters_leave_outputs_unchanged() {
    let device = Device::flex();
    let base = load(&device);
    let pixels = Tensor::<4>::random(
        [1, 3, 32, 32],
        burn::tensor::Distribution::Uniform(-1.0, 1.0),
        &device,
    );
    let before = values(logits(&base, &device));
    let vision_before = values(base.vision_model.forward(pixels.clone()));

    let model = apply_lora(base, &LoraConfig::new(4, 16.0).with_vision(true)).unwrap();
    // b = 0, so the composed weights equal the bases bit for bit.
    assert_eq!(values(logits(&model, &device)), before);
    assert_eq!(values(model.vision_model.forward(pixels)), vision_before);
}

#[test]
fn training_updates_only_adapters_and_the_file_reproduces_them() {
    let device = Device::flex().autodiff();
    let config =
        LoraConfig::new(4, 8.0).with_targets([LoraTarget::Q, LoraTarget::V, LoraTarget::Down]);
    let mut model = apply_lora(load(&device), &config).unwrap();

    // Only the factors require gradients.
    let before = snapshot(&model);
    let factors: BTreeSet<String> = before
        .values
        .keys()
        .filter(|p| is_factor(p))
        .cloned()
        .collect();
    assert_eq!(factors.len(), 2 * 3 * LAYERS);
    assert_eq!(before.trainable, factors);

    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.0)
        .with_epsilon(1e-8)
        .init();
    let mut losses = Vec::new();
    for _ in 0..5 {
        let loss = loss(&model, &device);
        losses.push(loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    assert!(
        losses.last() < losses.first(),
        "loss did not fall: {losses:?}"
    );

    let after = snapshot(&model);
    assert_eq!(after.trainable, factors);
    for (path, old) in &before.values {
        let new = &after.values[path];
        if is_factor(path) {
            assert_ne!(old, new, "{path} did not train");
        } else {
            let (old, new): (Vec<u32>, Vec<u32>) = (
                old.iter().map(|x| x.to_bits()).collect(),
                new.iter().map(|x| x.to_bits()).collect(),
            );
            assert_eq!(old, new, "frozen {path} changed");
        }
    }
    for path in factors.iter().filter(|p| p.ends_with(".b")) {
        assert!(after.values[path].iter().any(|&x| x != 0.0), "{path} is 0");
    }

    // Save, then attach to a freshly loaded base on a plain device.
    let trained = model.valid();
    let plain = Device::flex();
    let trained_logits = values(logits(&trained, &plain));
    assert!(max_abs_diff(&trained_logits, &values(logits(&load(&plain), &plain))) > 1e-4);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("adapter.safetensors");
    save_adapter(&trained, &config, &file).unwrap();
    assert_eq!(read_adapter_config(&file).unwrap(), config);

    let loaded = load_adapter(load(&plain), &file).unwrap();
    assert_eq!(adapter_paths(&loaded), adapter_paths(&trained));
    assert_eq!(values(logits(&loaded, &plain)), trained_logits);

    // Merged weights reproduce base + adapter without the factors.
    let merged = merge_lora(loaded.valid());
    assert!(adapter_paths(&merged).is_empty());
    assert_eq!(merged.num_params(), load(&plain).num_params());
    let merged_logits = values(logits(&merged, &plain));
    assert!(max_abs_diff(&merged_logits, &trained_logits) <= 1e-5);

    // PEFT orientation: scale·B@A ([d_out, d_in]) is the delta of the LLM weight, which janus-llm
    // keeps in PyTorch's [d_out, d_in] layout.
    let bytes = std::fs::read(&file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let module = "language_model.model.layers.1.mlp.down_proj";
    let a = st.tensor(&format!("{module}.lora_A.weight")).unwrap();
    let b = st.tensor(&format!("{module}.lora_B.weight")).unwrap();
    assert_eq!(a.shape(), [4, 128]);
    assert_eq!(b.shape(), [64, 4]);
    let (a, b) = (f32s(a.data()), f32s(b.data()));
    let w = &trained.language_model.model.layers[1].mlp.down_proj.weight;
    let delta = (w.val() - w.base())
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let scale = config.scale() as f32;
    for o in 0..64 {
        for i in 0..128 {
            let peft: f32 = (0..4).map(|k| b[o * 4 + k] * a[k * 128 + i]).sum::<f32>() * scale;
            assert!((peft - delta[o * 128 + i]).abs() < 1e-5, "({i}, {o})");
        }
    }
}

#[test]
fn stage_unfreezing_keeps_adapted_bases_frozen() {
    let device = Device::flex().autodiff();
    let model = apply_lora(
        load(&device),
        &LoraConfig::new(2, 4.0).with_targets([LoraTarget::Q]),
    )
    .unwrap();
    let q_base = "language_model.model.layers.0.self_attn.q_proj.weight";
    let k_base = "language_model.model.layers.0.self_attn.k_proj.weight";

    let s = snapshot(&model);
    assert!(s.trainable.iter().all(|p| is_factor(p)));
    assert_eq!(s.trainable.len(), 2 * LAYERS);

    // Ids of the groups are those of the factors and of the adapted bases.
    let ids = param_ids(&model);
    let factor_group = adapter_group(&model);
    let base_group = lora_base_group(&model);
    for (path, id) in &ids {
        assert_eq!(factor_group.matches(id, None), is_factor(path), "{path}");
        let is_base = path.ends_with("self_attn.q_proj.weight");
        assert_eq!(base_group.matches(id, None), is_base, "{path}");
    }

    // Stage-style: also train the understanding aligner.
    let aligner = ParamGroup::from_regex(r"^aligner\.").unwrap();
    let s = snapshot(&unfreeze_group_keep_bases(model.clone(), aligner));
    assert!(s.trainable.iter().any(|p| p.starts_with("aligner.")));
    assert!(!s.trainable.contains(q_base));
    assert!(
        !s.trainable
            .iter()
            .any(|p| p.starts_with("language_model.lm_head"))
    );

    // Unfreezing the whole LLM trains everything in it except the adapted bases.
    let llm = ParamGroup::from_regex(r"^language_model\.").unwrap();
    let s = snapshot(&unfreeze_group_keep_bases(model.clone(), llm));
    assert!(s.trainable.contains(k_base));
    assert!(
        s.trainable
            .contains("language_model.model.embed_tokens.weight")
    );
    assert!(!s.trainable.contains(q_base));
    assert!(s.trainable.iter().filter(|p| is_factor(p)).count() == 2 * LAYERS);

    // The pitfall the helper avoids: burn's `unfreeze` re-enables the bases.
    assert!(snapshot(&model.unfreeze()).trainable.contains(q_base));
}

#[test]
fn bad_adapter_files_are_rejected() {
    let device = Device::flex();
    let config = LoraConfig::new(2, 4.0).with_targets([LoraTarget::Q]);
    let adapted = apply_lora(load(&device), &config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    save_adapter(&adapted, &config, &good).unwrap();
    let base = load(&device);
    let q0 = "language_model.model.layers.0.self_attn.q_proj";

    // Saving: nothing to save, or a config that does not describe the adapters.
    assert!(matches!(
        save_adapter(&base, &config, dir.path().join("x")),
        Err(LoraError::NoAdapters)
    ));
    for wrong in [
        config.clone().with_targets([LoraTarget::Q, LoraTarget::K]),
        LoraConfig::new(4, 8.0).with_targets([LoraTarget::Q]),
        LoraConfig::new(2, 8.0).with_targets([LoraTarget::Q]),
    ] {
        assert!(
            matches!(
                save_adapter(&adapted, &wrong, dir.path().join("x")),
                Err(LoraError::ConfigMismatch(_))
            ),
            "{wrong:?}"
        );
    }

    // Adapting or loading twice.
    assert!(matches!(
        apply_lora(adapted.clone(), &config),
        Err(LoraError::AlreadyAdapted(_))
    ));
    assert!(matches!(
        load_adapter(adapted, &good),
        Err(LoraError::AlreadyAdapted(_))
    ));

    // Not a file / not safetensors / not ours.
    assert!(matches!(
        load_adapter(base.clone(), dir.path().join("missing.safetensors")),
        Err(LoraError::Io { .. })
    ));
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not safetensors").unwrap();
    assert!(matches!(
        load_adapter(base.clone(), &garbage),
        Err(LoraError::Format { .. })
    ));
    let check = |name: &str, edit: &dyn Fn(&mut Tensors, &mut Meta)| {
        let path = dir.path().join(name);
        rewrite(&good, &path, edit);
        load_adapter(base.clone(), &path).map(|_| ())
    };
    assert!(matches!(
        check("no-meta", &|_, meta| *meta = None),
        Err(LoraError::Metadata { .. })
    ));
    assert!(matches!(
        check("bad-config", &|_, meta| {
            meta.as_mut()
                .unwrap()
                .insert("lora_config".into(), r#"{"rank": 2, "bogus": 1}"#.into());
        }),
        Err(LoraError::Metadata { .. })
    ));

    // A base this file does not fit: a layer the model lacks, a missing factor, wrong shapes.
    assert!(matches!(
        check("unknown", &|t, _| {
            t.iter_mut().for_each(|(n, ..)| *n = n.replace("layers.1.", "layers.7."));
        }),
        Err(LoraError::UnknownPath(n)) if n.contains("layers.7.")
    ));
    assert!(matches!(
        check("not-a-factor", &|t, _| {
            t.push((format!("{q0}.weight"), vec![1, 1], vec![0.0]));
        }),
        Err(LoraError::UnknownPath(_))
    ));
    assert!(matches!(
        check("missing", &|t, _| t.retain(|(n, ..)| !n.ends_with("lora_B.weight"))),
        Err(LoraError::MissingTensor(n)) if n.ends_with("lora_B.weight")
    ));
    assert!(matches!(
        check("untargeted", &|_, meta| {
            let c = LoraConfig::new(2, 4.0).with_targets([LoraTarget::Q, LoraTarget::V]);
            meta.as_mut()
                .unwrap()
                .insert("lora_config".into(), serde_json::to_string(&c).unwrap());
        }),
        Err(LoraError::MissingTensor(n)) if n.contains("v_proj")
    ));
    assert!(matches!(
        check("narrow", &|t, _| {
            let a = t.iter_mut().find(|(n, ..)| n == &format!("{q0}.lora_A.weight"));
            let (_, shape, data) = a.unwrap();
            *shape = vec![2, 32];
            data.truncate(64);
        }),
        Err(LoraError::ShapeMismatch { expected, found, .. })
            if expected == [2, 64] && found == [2, 32]
    ));
    assert!(matches!(
        check("rank", &|_, meta| {
            let c = LoraConfig::new(4, 4.0).with_targets([LoraTarget::Q]);
            meta.as_mut()
                .unwrap()
                .insert("lora_config".into(), serde_json::to_string(&c).unwrap());
        }),
        Err(LoraError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        check("dropout", &|_, meta| {
            meta.as_mut().unwrap().insert(
                "lora_config".into(),
                r#"{"rank": 2, "dropout": 0.1, "vision": true}"#.into(),
            );
        }),
        Err(LoraError::DropoutUnsupported(_))
    ));
    // The untouched file still loads.
    assert!(check("same", &|_, _| {}).is_ok());
}

type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;
type Meta = Option<HashMap<String, String>>;

fn param_ids(model: &JanusModel) -> Vec<(String, burn::module::ParamId)> {
    #[derive(Default)]
    struct Ids(Vec<String>, Vec<(String, burn::module::ParamId)>);
    impl ModuleVisitor for Ids {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.push(name.to_owned());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.1.push((self.0.join("."), param.id));
        }
    }
    let mut ids = Ids::default();
    model.visit(&mut ids);
    ids.1
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Copies an f32 adapter file through `edit`.
fn rewrite(src: &Path, dst: &Path, edit: &dyn Fn(&mut Tensors, &mut Meta)) {
    let bytes = std::fs::read(src).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), f32s(v.data())))
        .collect();
    edit(&mut tensors, &mut meta);
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, d)| (n, s, d.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = raw.iter().map(|(n, s, d)| {
        (
            n.as_str(),
            TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
        )
    });
    safetensors::serialize_to_file(views, meta, dst).unwrap();
}
