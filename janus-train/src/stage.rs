//! The paper's three training stages as freeze presets over the model's components.
//!
//! | component | I (adaptors) | II (unified pretraining) | III (SFT) |
//! |---|---|---|---|
//! | `aligner`, `gen_aligner`, `gen_head`, `gen_embed` | trained | trained | trained |
//! | `language_model` (embeddings, layers, norm, `lm_head`) | frozen | trained | trained |
//! | `vision_model` (SigLIP) | frozen | frozen | trained |
//! | `gen_vision_model` (VQ) | frozen | frozen | frozen |
//!
//! The VQ tokenizer is never trained (its codes are the generation targets), so [`FreezeSet`]
//! has no flag for it. A config file may override single components on top of a stage:
//!
//! ```
//! use janus_train::stage::{FreezeOverrides, Stage};
//!
//! let overrides: FreezeOverrides = serde_json::from_str(r#"{"gen_embed": false}"#).unwrap();
//! let set = Stage::Two.freeze_set().with_overrides(&overrides);
//! assert!(set.language_model && !set.gen_embed);
//! ```

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use janus_core::JanusModel;
use serde::{Deserialize, Serialize};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// A stage name that is not one of the three.
    #[error("unknown stage {0:?} (expected 1, 2 or 3)")]
    Unknown(String),
}

/// A training stage of the Janus paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "StageRepr", into = "u8")]
pub enum Stage {
    /// Stage I: train the adaptors and the image head on a frozen LLM and frozen encoders.
    One,
    /// Stage II: unified pretraining; the LLM trains too.
    Two,
    /// Stage III: supervised fine-tuning; the SigLIP encoder trains too.
    Three,
}

impl Stage {
    /// All stages, in order.
    pub const ALL: [Stage; 3] = [Stage::One, Stage::Two, Stage::Three];

    /// The components this stage trains.
    pub fn freeze_set(self) -> FreezeSet {
        let adaptors = FreezeSet {
            vision_model: false,
            aligner: true,
            gen_aligner: true,
            gen_head: true,
            gen_embed: true,
            language_model: false,
        };
        match self {
            Stage::One => adaptors,
            Stage::Two => FreezeSet {
                language_model: true,
                ..adaptors
            },
            Stage::Three => FreezeSet {
                language_model: true,
                vision_model: true,
                ..adaptors
            },
        }
    }

    /// The stage's number (1, 2 or 3).
    pub fn number(self) -> u8 {
        match self {
            Stage::One => 1,
            Stage::Two => 2,
            Stage::Three => 3,
        }
    }
}

impl TryFrom<u8> for Stage {
    type Error = StageError;

    fn try_from(n: u8) -> Result<Self, StageError> {
        match n {
            1 => Ok(Stage::One),
            2 => Ok(Stage::Two),
            3 => Ok(Stage::Three),
            _ => Err(StageError::Unknown(n.to_string())),
        }
    }
}

impl From<Stage> for u8 {
    fn from(stage: Stage) -> u8 {
        stage.number()
    }
}

/// Accepts `1`, `"1"`, `"I"`, `"one"`, `"stage1"`, `"stage-i"` … (case-insensitive).
impl FromStr for Stage {
    type Err = StageError;

    fn from_str(s: &str) -> Result<Self, StageError> {
        let lower = s.trim().to_ascii_lowercase();
        let name = lower
            .strip_prefix("stage")
            .unwrap_or(&lower)
            .trim_start_matches([' ', '-', '_']);
        match name {
            "1" | "i" | "one" => Ok(Stage::One),
            "2" | "ii" | "two" => Ok(Stage::Two),
            "3" | "iii" | "three" => Ok(Stage::Three),
            _ => Err(StageError::Unknown(s.to_owned())),
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stage {}", self.number())
    }
}

/// What serde reads for a [`Stage`]: a number or a name.
#[derive(Deserialize)]
#[serde(untagged)]
enum StageRepr {
    Number(u8),
    Name(String),
}

impl TryFrom<StageRepr> for Stage {
    type Error = StageError;

    fn try_from(repr: StageRepr) -> Result<Self, StageError> {
        match repr {
            StageRepr::Number(n) => Stage::try_from(n),
            StageRepr::Name(s) => s.parse(),
        }
    }
}

/// Which components train (`true`) and which stay frozen (`false`).
///
/// Field names are the checkpoint's top-level prefixes. The VQ model (`gen_vision_model`) is
/// always frozen and has no flag; naming it (or anything else) in a config is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeSet {
    /// SigLIP vision tower.
    pub vision_model: bool,
    /// Understanding adaptor.
    pub aligner: bool,
    /// Generation adaptor.
    pub gen_aligner: bool,
    /// Image head.
    pub gen_head: bool,
    /// Image-code embedding table.
    pub gen_embed: bool,
    /// The LLM: token embeddings, decoder layers, final norm and `lm_head`.
    pub language_model: bool,
}

/// Per-component overrides of a [`FreezeSet`], as a config file writes them: absent components
/// keep the stage's setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FreezeOverrides {
    /// Override for [`FreezeSet::vision_model`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vision_model: Option<bool>,
    /// Override for [`FreezeSet::aligner`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aligner: Option<bool>,
    /// Override for [`FreezeSet::gen_aligner`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gen_aligner: Option<bool>,
    /// Override for [`FreezeSet::gen_head`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gen_head: Option<bool>,
    /// Override for [`FreezeSet::gen_embed`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gen_embed: Option<bool>,
    /// Override for [`FreezeSet::language_model`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language_model: Option<bool>,
}

impl FreezeSet {
    /// Nothing trains.
    pub const NONE: FreezeSet = FreezeSet {
        vision_model: false,
        aligner: false,
        gen_aligner: false,
        gen_head: false,
        gen_embed: false,
        language_model: false,
    };

    /// This set with the given overrides applied.
    pub fn with_overrides(self, o: &FreezeOverrides) -> FreezeSet {
        FreezeSet {
            vision_model: o.vision_model.unwrap_or(self.vision_model),
            aligner: o.aligner.unwrap_or(self.aligner),
            gen_aligner: o.gen_aligner.unwrap_or(self.gen_aligner),
            gen_head: o.gen_head.unwrap_or(self.gen_head),
            gen_embed: o.gen_embed.unwrap_or(self.gen_embed),
            language_model: o.language_model.unwrap_or(self.language_model),
        }
    }

    /// `(component, trainable)` for every component, the VQ model included (always `false`).
    pub fn components(&self) -> [(&'static str, bool); 7] {
        [
            ("vision_model", self.vision_model),
            ("aligner", self.aligner),
            ("gen_vision_model", false),
            ("gen_aligner", self.gen_aligner),
            ("gen_head", self.gen_head),
            ("gen_embed", self.gen_embed),
            ("language_model", self.language_model),
        ]
    }
}

impl From<Stage> for FreezeSet {
    fn from(stage: Stage) -> Self {
        stage.freeze_set()
    }
}

/// Sets `require_grad` on every float parameter of each component according to `set` (the VQ
/// model always off).
///
/// Only gradient tracking changes; the components hold no dropout or running statistics, so
/// their training behaviour is unaffected. Apply the stage before LoRA: `apply_lora` freezes
/// the base weights it adapts, while `set_require_grad(true)` would unfreeze them again.
pub fn apply(mut model: JanusModel, set: &FreezeSet) -> JanusModel {
    model.vision_model = model.vision_model.set_require_grad(set.vision_model);
    model.aligner = model.aligner.set_require_grad(set.aligner);
    model.gen_vision_model = model.gen_vision_model.no_grad();
    model.gen_aligner = model.gen_aligner.set_require_grad(set.gen_aligner);
    model.gen_head = model.gen_head.set_require_grad(set.gen_head);
    model.gen_embed = model.gen_embed.set_require_grad(set.gen_embed);
    model.language_model = model.language_model.set_require_grad(set.language_model);
    model
}

/// Parameter counts of one top-level component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComponentParams {
    /// Checkpoint prefix of the component.
    pub name: &'static str,
    /// Float parameters (elements), LoRA adapters included.
    pub total: usize,
    /// Of which require gradients.
    pub trainable: usize,
}

/// Parameter counts per component, in checkpoint order.
///
/// "Trainable" reads each tensor's `is_require_grad`, so it reflects [`apply`] and LoRA only on
/// an autodiff device (a plain device tracks no gradients: every count is 0). Parameters not yet
/// initialised are initialised by the visit.
pub fn count_params(model: &JanusModel) -> Vec<ComponentParams> {
    fn count<M: Module>(name: &'static str, module: &M) -> ComponentParams {
        let mut counter = Counter::default();
        module.visit(&mut counter);
        ComponentParams {
            name,
            total: counter.total,
            trainable: counter.trainable,
        }
    }
    vec![
        count("vision_model", &model.vision_model),
        count("aligner", &model.aligner),
        count("gen_vision_model", &model.gen_vision_model),
        count("gen_aligner", &model.gen_aligner),
        count("gen_head", &model.gen_head),
        count("gen_embed", &model.gen_embed),
        count("language_model", &model.language_model),
    ]
}

#[derive(Default)]
struct Counter {
    total: usize,
    trainable: usize,
}

impl ModuleVisitor for Counter {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let n = param.lazy_shape().num_elements();
        self.total += n;
        if param.is_require_grad() {
            self.trainable += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{GenerationBatch, UnderstandingBatch};
    use crate::loss::{generation_loss, understanding_labels, understanding_loss, weighted_sum};
    use burn::tensor::{Device, Gradients};
    use janus_core::LoadOptions;
    use janus_core::processor::{Message, Processor};

    const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tiny-janus");

    #[test]
    fn presets_follow_the_paper() {
        let one = Stage::One.freeze_set();
        assert!(one.aligner && one.gen_aligner && one.gen_head && one.gen_embed);
        assert!(!one.language_model && !one.vision_model);
        let two = Stage::Two.freeze_set();
        assert!(two.language_model && !two.vision_model && two.gen_head);
        let three = Stage::Three.freeze_set();
        assert!(three.language_model && three.vision_model && three.aligner);
    }

    #[test]
    fn stage_parses_numbers_and_names() {
        for (text, stage) in [
            ("1", Stage::One),
            ("II", Stage::Two),
            ("stage-3", Stage::Three),
            ("Stage two", Stage::Two),
        ] {
            assert_eq!(text.parse::<Stage>().unwrap(), stage, "{text}");
        }
        assert!("4".parse::<Stage>().is_err());
        let s: Stage = serde_json::from_str("2").unwrap();
        assert_eq!(s, Stage::Two);
        let s: Stage = serde_json::from_str("\"III\"").unwrap();
        assert_eq!(s, Stage::Three);
        assert_eq!(serde_json::to_string(&Stage::One).unwrap(), "1");
        assert!(serde_json::from_str::<Stage>("0").is_err());
    }

    #[test]
    fn overrides_reject_unknown_components() {
        let o: FreezeOverrides = serde_json::from_str(r#"{"vision_model": true}"#).unwrap();
        assert!(Stage::One.freeze_set().with_overrides(&o).vision_model);
        assert!(serde_json::from_str::<FreezeOverrides>(r#"{"gen_vision_model": true}"#).is_err());
        assert!(serde_json::from_str::<FreezeSet>(r#"{"aligner": true}"#).is_err());
    }

    fn load(device: &Device) -> JanusModel {
        JanusModel::load(TINY, &LoadOptions::default(), device)
            .expect("tiny fixture loads")
            .0
    }

    /// An understanding row with an image and a text-to-image batch of two rows: together they
    /// reach every component but the VQ model.
    fn batches() -> (UnderstandingBatch, GenerationBatch) {
        let processor = Processor::from_dir(TINY).unwrap();
        let conversation = [
            Message::new("User", "<image_placeholder>\nDescribe this.").with_image("scene.png"),
            Message::new("Assistant", "A dog."),
        ];
        let images = processor
            .load_images(&conversation, format!("{TINY}/goldens"))
            .unwrap();
        let item = processor.process_one(&conversation, &images).unwrap();
        let labels = understanding_labels(&processor, &conversation, &item.input_ids).unwrap();
        let und = UnderstandingBatch {
            inputs: processor.batchify(&[item]).unwrap(),
            labels,
        };
        let image_start = processor.special_tokens().image_start;
        let generation = GenerationBatch {
            text_ids: vec![vec![0, 309, 27, image_start], vec![0, 27, image_start]],
            codes: vec![vec![3, 1, 4, 1], vec![5, 9, 2, 6]],
        };
        (und, generation)
    }

    /// Has the given weight a gradient after backward?
    fn has_grad(p: &Param<Tensor<2>>, grads: &Gradients) -> bool {
        p.grad(grads).is_some()
    }

    #[test]
    fn stages_decide_which_components_get_gradients() {
        let device = Device::flex().autodiff();
        let (und, generation) = batches();
        for stage in Stage::ALL {
            let set = stage.freeze_set();
            let model = apply(load(&device), &set);
            let loss = weighted_sum(
                Some(understanding_loss(&model, &und).unwrap()),
                Some(generation_loss(&model, &generation).unwrap()),
                1.0,
                1.0,
            )
            .unwrap();
            let grads = loss.backward();

            let lm = &model.language_model;
            let checks = [
                ("aligner", &model.aligner.layers[0].weight, set.aligner),
                (
                    "gen_aligner",
                    &model.gen_aligner.layers[0].weight,
                    set.gen_aligner,
                ),
                ("gen_head", &model.gen_head.vision_head.weight, set.gen_head),
                ("gen_embed", &model.gen_embed.weight, set.gen_embed),
                (
                    "q_proj",
                    &lm.model.layers[0].self_attn.q_proj.weight,
                    set.language_model,
                ),
                (
                    "embed_tokens",
                    &lm.model.embed_tokens.weight,
                    set.language_model,
                ),
                ("lm_head", &lm.lm_head.weight, set.language_model),
                (
                    "siglip qkv",
                    &model.vision_model.blocks[0].attn.qkv.weight,
                    set.vision_model,
                ),
            ];
            for (name, weight, trainable) in checks {
                assert_eq!(has_grad(weight, &grads), trainable, "{stage}: {name}");
            }

            for (c, (name, trainable)) in count_params(&model).iter().zip(set.components()) {
                assert_eq!(c.name, name);
                assert!(c.total > 0, "{name}");
                let expected = if trainable { c.total } else { 0 };
                assert_eq!(c.trainable, expected, "{stage}: {name}");
            }
        }
    }

    #[test]
    fn counts_on_a_plain_device_report_totals() {
        let model = apply(load(&Device::flex()), &Stage::Three.freeze_set());
        let counts = count_params(&model);
        assert!(counts.iter().all(|c| c.total > 0 && c.trainable == 0));
        let total: usize = counts.iter().map(|c| c.total).sum();
        assert_eq!(total, model.num_params());
    }
}
