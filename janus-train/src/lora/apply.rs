//! Attaching adapters, merging them, and the parameter groups of an adapted model.

use std::collections::BTreeMap;

use burn::module::{
    Lora, LoraAdapter, Module, ModuleVisitor, Param, ParamGroup, ParamId, Reparameterizer,
};
use burn::tensor::Tensor;
use janus_core::JanusModel;

use super::{LoraConfig, LoraError};

/// Attaches trainable LoRA adapters to the linears `config` selects and freezes everything else.
///
/// Every float parameter of the returned model has gradients disabled except the adapter
/// factors, which are fresh: `a ~ N(0, 1/r)`, `b = 0`, so the model's outputs are unchanged until
/// it is trained. Factors take the dtype of their base weight. Call this on the device the model
/// will train on (e.g. an autodiff device). See the [module docs](super) for combining it with
/// stage freezing.
///
/// # Errors
/// An invalid config ([`LoraConfig::validate`]), a model that already carries adapters, or one
/// with no weight the config selects.
pub fn apply_lora(model: JanusModel, config: &LoraConfig) -> Result<JanusModel, LoraError> {
    config.validate()?;
    let scan = Scan::of(&model);
    scan.ensure_unadapted()?;
    if !scan.weights.keys().any(|p| config.is_target(p)) {
        return Err(LoraError::NoMatchingWeights);
    }
    let model = model.apply_reparameterization(FreshAdapters {
        config,
        // The selection is ours; burn's group would match everything it is handed.
        lora: Lora::new(config.rank, config.alpha),
    });
    Ok(set_lora_dropout(model, config.dropout))
}

/// Sets the LoRA-branch input dropout of every language-model linear (inert on linears without
/// an adapter, on a non-autodiff device and once merged).
pub fn set_lora_dropout(mut model: JanusModel, dropout: f64) -> JanusModel {
    for layer in &mut model.language_model.model.layers {
        let attn = &mut layer.self_attn;
        let mlp = &mut layer.mlp;
        for linear in [
            &mut attn.q_proj,
            &mut attn.k_proj,
            &mut attn.v_proj,
            &mut attn.o_proj,
            &mut mlp.gate_proj,
            &mut mlp.up_proj,
            &mut mlp.down_proj,
        ] {
            linear.lora_dropout = dropout;
        }
    }
    model
}

/// Merges every adapter into its base weight (`W + (alpha/r)·a@b`) and removes the factors.
///
/// The result has the base model's structure and parameter count, so inference no longer
/// rebuilds the composed weight on every forward pass. Parameter ids and trainability are kept
/// (merged weights stay frozen). For inference merge a validation copy:
/// `merge_lora(model.valid())`. A model without adapters is returned unchanged.
pub fn merge_lora(model: JanusModel) -> JanusModel {
    model.materialize()
}

/// Module paths (`language_model.model.layers.0.self_attn.q_proj`, …) of the adapted linears,
/// sorted.
pub fn adapter_paths(model: &JanusModel) -> Vec<String> {
    Scan::of(model).adapters.into_keys().collect()
}

/// The group of every adapter factor (`a` and `b`), by parameter id.
///
/// Ids survive `valid()`/`train()`, optimizer steps and `fork`, so the group stays valid for the
/// adapted model's lifetime (not across [`merge_lora`] or [`load_adapter`](super::load_adapter)).
pub fn adapter_group(model: &JanusModel) -> ParamGroup {
    let scan = Scan::of(model);
    ParamGroup::from_ids(
        scan.adapters
            .values()
            .flat_map(|f| [f.a.as_ref(), f.b.as_ref()])
            .flatten()
            .map(|f| f.id)
            .collect(),
    )
}

/// The group of the frozen base weights that carry an adapter, by parameter id.
///
/// Exclude it from any group you unfreeze (see [`unfreeze_group_keep_bases`]).
pub fn lora_base_group(model: &JanusModel) -> ParamGroup {
    let scan = Scan::of(model);
    ParamGroup::from_ids(
        scan.adapters
            .keys()
            .filter_map(|module| scan.weights.get(&format!("{module}.weight")))
            .map(|w| w.id)
            .collect(),
    )
}

/// `model.unfreeze_group(group)` minus the adapted base weights, which stay frozen.
///
/// Use this instead of `unfreeze_group` when a stage trains other components next to LoRA:
/// e.g. `^language_model\.` then trains the LLM's norms and embeddings and the adapters, but not
/// the adapted projection weights.
pub fn unfreeze_group_keep_bases(model: JanusModel, group: ParamGroup) -> JanusModel {
    let bases = lora_base_group(&model);
    model.unfreeze_group(group.exclude(bases))
}

/// burn's [`Lora`] restricted to the weights a [`LoraConfig`] selects; all else is frozen.
struct FreshAdapters<'a> {
    config: &'a LoraConfig,
    lora: Lora,
}

impl Reparameterizer for FreshAdapters<'_> {
    type Reparam = LoraAdapter;

    fn reparameterize<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<D>>,
    ) -> (Param<Tensor<D>>, Option<LoraAdapter>) {
        if D == 2 && self.config.is_target(path) {
            self.lora.reparameterize(path, param)
        } else {
            (param.set_require_grad(false), None)
        }
    }
}

/// How an adapted weight is stored, which decides how its factors map to PEFT's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// burn's `Linear`: `W [d_in, d_out]`, factors `a [d_in, r]`, `b [r, d_out]`; PEFT's
    /// `lora_A`/`lora_B` are their transposes.
    InOut,
    /// janus-llm's `LlamaLinear` keeps PyTorch's `W [d_out, d_in]`: factors `a [d_out, r]`,
    /// `b [r, d_in]` are PEFT's `lora_B` and `lora_A` as they are.
    OutIn,
}

/// Every linear LoRA may adapt: module path, weight and layout, in checkpoint order.
pub(super) fn adaptable_linears(model: &JanusModel) -> Vec<(String, &Param<Tensor<2>>, Layout)> {
    let mut out = Vec::new();
    for (i, layer) in model.language_model.model.layers.iter().enumerate() {
        let (attn, mlp) = (&layer.self_attn, &layer.mlp);
        let prefix = format!("language_model.model.layers.{i}");
        out.extend([
            (
                format!("{prefix}.self_attn.q_proj"),
                &attn.q_proj.weight,
                Layout::OutIn,
            ),
            (
                format!("{prefix}.self_attn.k_proj"),
                &attn.k_proj.weight,
                Layout::OutIn,
            ),
            (
                format!("{prefix}.self_attn.v_proj"),
                &attn.v_proj.weight,
                Layout::OutIn,
            ),
            (
                format!("{prefix}.self_attn.o_proj"),
                &attn.o_proj.weight,
                Layout::OutIn,
            ),
            (
                format!("{prefix}.mlp.gate_proj"),
                &mlp.gate_proj.weight,
                Layout::OutIn,
            ),
            (
                format!("{prefix}.mlp.up_proj"),
                &mlp.up_proj.weight,
                Layout::OutIn,
            ),
            (
                format!("{prefix}.mlp.down_proj"),
                &mlp.down_proj.weight,
                Layout::OutIn,
            ),
        ]);
    }
    for (i, block) in model.vision_model.blocks.iter().enumerate() {
        let prefix = format!("vision_model.blocks.{i}");
        out.extend([
            (
                format!("{prefix}.attn.qkv"),
                &block.attn.qkv.weight,
                Layout::InOut,
            ),
            (
                format!("{prefix}.attn.proj"),
                &block.attn.proj.weight,
                Layout::InOut,
            ),
            (
                format!("{prefix}.mlp.fc1"),
                &block.mlp.fc1.weight,
                Layout::InOut,
            ),
            (
                format!("{prefix}.mlp.fc2"),
                &block.mlp.fc2.weight,
                Layout::InOut,
            ),
        ]);
    }
    out
}

/// A 2-D float parameter seen by [`Scan`].
pub(super) struct Seen {
    pub(super) id: ParamId,
    pub(super) shape: [usize; 2],
}

/// The factors of one adapter, as the module visitor reports them.
#[derive(Default)]
pub(super) struct Factors {
    pub(super) a: Option<Seen>,
    pub(super) b: Option<Seen>,
}

/// One walk over the model's parameters with their burn paths, which are the paths
/// [`Reparameterizer`]s and [`ParamGroup`]s see.
#[derive(Default)]
pub(super) struct Scan {
    stack: Vec<String>,
    /// 2-D float params outside adapters, by path (`….q_proj.weight`).
    pub(super) weights: BTreeMap<String, Seen>,
    /// Adapter factors by module path (`….q_proj`); burn nests them as `….weight.lora.{a,b}`.
    pub(super) adapters: BTreeMap<String, Factors>,
}

impl Scan {
    pub(super) fn of(model: &JanusModel) -> Self {
        let mut scan = Scan::default();
        model.visit(&mut scan);
        scan
    }

    pub(super) fn ensure_unadapted(&self) -> Result<(), LoraError> {
        match self.adapters.keys().next() {
            Some(p) => Err(LoraError::AlreadyAdapted(p.clone())),
            None => Ok(()),
        }
    }
}

impl ModuleVisitor for Scan {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.push(name.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if D != 2 {
            return;
        }
        let path = self.stack.join(".");
        let dims = param.lazy_shape();
        let seen = Seen {
            id: param.id,
            shape: [dims[0], dims[1]],
        };
        let factor = |suffix: &str| path.strip_suffix(suffix).map(str::to_owned);
        if let Some(module) = factor(".weight.lora.a") {
            self.adapters.entry(module).or_default().a = Some(seen);
        } else if let Some(module) = factor(".weight.lora.b") {
            self.adapters.entry(module).or_default().b = Some(seen);
        } else {
            self.weights.insert(path, seen);
        }
    }
}
