//! Which linears get LoRA adapters, and their size.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::LoraError;

/// A linear of the language model that LoRA can adapt, named as in ms-swift/PEFT configs.
///
/// Serialised lowercase (`"q"`, …, `"all"`); the PEFT module names (`"q_proj"`, …) and
/// ms-swift's `"ALL"`/`"all-linear"` are accepted as aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraTarget {
    /// `self_attn.q_proj`.
    #[serde(alias = "q_proj")]
    Q,
    /// `self_attn.k_proj`.
    #[serde(alias = "k_proj")]
    K,
    /// `self_attn.v_proj`.
    #[serde(alias = "v_proj")]
    V,
    /// `self_attn.o_proj`.
    #[serde(alias = "o_proj")]
    O,
    /// `mlp.gate_proj`.
    #[serde(alias = "gate_proj")]
    Gate,
    /// `mlp.up_proj`.
    #[serde(alias = "up_proj")]
    Up,
    /// `mlp.down_proj`.
    #[serde(alias = "down_proj")]
    Down,
    /// Every linear of the decoder layers (ms-swift `--target_modules ALL`); never `lm_head`.
    #[serde(alias = "ALL", alias = "all-linear", alias = "all_linear")]
    All,
}

impl LoraTarget {
    /// The seven decoder-layer linears, in checkpoint order.
    pub const LINEARS: [LoraTarget; 7] = [
        LoraTarget::Q,
        LoraTarget::K,
        LoraTarget::V,
        LoraTarget::O,
        LoraTarget::Gate,
        LoraTarget::Up,
        LoraTarget::Down,
    ];

    /// The PEFT module name (`"q_proj"`, …); `None` for [`LoraTarget::All`].
    pub fn module_name(self) -> Option<&'static str> {
        Some(match self {
            LoraTarget::Q => "q_proj",
            LoraTarget::K => "k_proj",
            LoraTarget::V => "v_proj",
            LoraTarget::O => "o_proj",
            LoraTarget::Gate => "gate_proj",
            LoraTarget::Up => "up_proj",
            LoraTarget::Down => "down_proj",
            LoraTarget::All => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            LoraTarget::Q => "q",
            LoraTarget::K => "k",
            LoraTarget::V => "v",
            LoraTarget::O => "o",
            LoraTarget::Gate => "gate",
            LoraTarget::Up => "up",
            LoraTarget::Down => "down",
            LoraTarget::All => "all",
        }
    }
}

impl fmt::Display for LoraTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LoraTarget {
    type Err = String;

    /// Parses the serde names and aliases (`q`, `q_proj`, `all`, `ALL`, `all-linear`, …).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
            format!("unknown LoRA target `{s}`: expected q, k, v, o, gate, up, down or all")
        })
    }
}

/// The SigLIP linears adapted when [`LoraConfig::vision`] is set.
pub const VISION_MODULES: [&str; 4] = ["qkv", "proj", "fc1", "fc2"];

/// Which linears get LoRA adapters, and their size.
///
/// Defaults follow ms-swift (`rank` 8, `alpha` 32, all LLM linears, vision tower untouched)
/// except `dropout`, which defaults to 0 (ms-swift uses 0.05).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank `r` of the factors.
    pub rank: usize,
    /// Scaling numerator: the update is `(alpha / rank)·a@b`.
    pub alpha: f64,
    /// Dropout on the input of the low-rank branch while training, in `[0, 1)`; language-model
    /// linears only (with `vision`, it must be 0).
    pub dropout: f64,
    /// LLM linears to adapt in every decoder layer.
    pub targets: Vec<LoraTarget>,
    /// Also adapt the SigLIP tower's `attn.qkv`, `attn.proj`, `mlp.fc1` and `mlp.fc2`.
    pub vision: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 32.0,
            dropout: 0.0,
            targets: vec![LoraTarget::All],
            vision: false,
        }
    }
}

impl LoraConfig {
    /// A config of the given rank and alpha adapting every LLM linear.
    pub fn new(rank: usize, alpha: f64) -> Self {
        Self {
            rank,
            alpha,
            ..Self::default()
        }
    }

    /// Replaces the LLM targets.
    pub fn with_targets(mut self, targets: impl IntoIterator<Item = LoraTarget>) -> Self {
        self.targets = targets.into_iter().collect();
        self
    }

    /// Sets whether the SigLIP linears are adapted too.
    pub fn with_vision(mut self, vision: bool) -> Self {
        self.vision = vision;
        self
    }

    /// Sets the dropout.
    pub fn with_dropout(mut self, dropout: f64) -> Self {
        self.dropout = dropout;
        self
    }

    /// The factor `alpha / rank` applied to `a@b`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Checks rank, alpha, dropout and that something is selected.
    pub fn validate(&self) -> Result<(), LoraError> {
        if self.rank == 0 {
            return Err(LoraError::InvalidRank);
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(LoraError::InvalidAlpha(self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(LoraError::InvalidDropout(self.dropout));
        }
        if self.dropout > 0.0 && self.vision {
            return Err(LoraError::DropoutUnsupported(self.dropout));
        }
        if self.targets.is_empty() && !self.vision {
            return Err(LoraError::NoTargets);
        }
        Ok(())
    }

    /// The selected LLM module names (`"q_proj"`, …), with `all` expanded.
    pub fn llm_modules(&self) -> BTreeSet<&'static str> {
        self.targets
            .iter()
            .flat_map(|&t| match t {
                LoraTarget::All => LoraTarget::LINEARS.to_vec(),
                t => vec![t],
            })
            .filter_map(LoraTarget::module_name)
            .collect()
    }

    /// Whether the parameter at `path` (e.g.
    /// `language_model.model.layers.3.self_attn.q_proj.weight`) is adapted under this config.
    ///
    /// Only the `.weight` of decoder-layer and (with `vision`) SigLIP-block linears can match.
    pub fn is_target(&self, path: &str) -> bool {
        let Some(module) = path.strip_suffix(".weight") else {
            return false;
        };
        let parts: Vec<&str> = module.split('.').collect();
        let index = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
        match parts.as_slice() {
            ["language_model", "model", "layers", i, group, name] if index(i) => {
                let attn = matches!(*name, "q_proj" | "k_proj" | "v_proj" | "o_proj");
                *group == if attn { "self_attn" } else { "mlp" }
                    && self.llm_modules().contains(name)
            }
            ["vision_model", "blocks", i, group, name] if index(i) => {
                self.vision
                    && matches!(
                        (*group, *name),
                        ("attn", "qkv" | "proj") | ("mlp", "fc1" | "fc2")
                    )
            }
            _ => false,
        }
    }

    /// PEFT-style `target_modules`: the selected module names, comma-separated.
    pub(super) fn target_modules(&self) -> String {
        let mut names: Vec<&str> = self.llm_modules().into_iter().collect();
        if self.vision {
            names.extend(VISION_MODULES);
        }
        names.join(",")
    }
}
