//! `config.json` in either published layout, resolved into the shapes of every component.
//!
//! The original layout (`model_type: "multi_modality"`): released checkpoints name their
//! vision tower (`model_name`) and VQ model (`cls`) and give no dimensions; the tables behind
//! those names live here. Explicit keys (`width`, `layers`, `heads`, `patch_size`, `mlp_ratio`
//! for the vision tower; `ch`, `ch_mult`, `z_channels`, `image_size`, `num_res_blocks` for the
//! VQ model) override the table, which is how the test fixtures describe their tiny models.
//! Missing language keys take HF `LlamaConfig` defaults.
//!
//! The transformers layout (`model_type: "janus"`) gives `text_config`, `vision_config` and
//! `vq_config`; missing keys take the defaults of transformers' `LlamaConfig`,
//! `JanusVisionConfig` and `JanusVQVAEConfig`. Where it has no key for a value the original
//! carries, the Janus value is used:
//!
//! | value | original key | transformers source |
//! |---|---|---|
//! | SigLIP width / blocks / heads / patch / MLP ratio | `vision_config.params` or the `model_name` table | `vision_config.hidden_size` / `num_hidden_layers` / `num_attention_heads` / `patch_size` / `mlp_ratio` |
//! | SigLIP `select_layer` / `select_feature` | `vision_config.params` | none: every block runs and every token is kept (`-1` / `same`) |
//! | aligner type / depth / in / out | `aligner_config.params` | `mlp_gelu` / `vision_config.depth` / `vision_config.hidden_size` / `vision_config.projection_dim` |
//! | VQ ch / ch_mult / z_channels / res blocks | `gen_vision_config.params` or `VQ-16` | `vq_config.base_channels` / `channel_multiplier` / `latent_channels` / `num_res_blocks` |
//! | codebook size / width | `gen_vision_config.params.image_token_size` / `n_embed` | `vq_config.num_embeddings` / `embed_dim` |
//! | generated image side | `gen_vision_config.params.image_size` (384) | none: `vision_config.image_size` (both are 384 in every Janus model; `vq_config.num_patches` is overwritten by transformers from the vision config and is not read) |
//! | gen aligner type / depth / in / out | `gen_aligner_config.params` | `mlp_gelu` / `vq_config.num_hidden_layers` / `vq_config.embed_dim` / `vq_config.projection_dim` |
//! | gen head in / hidden / out | `gen_head_config.params` | `text_config.hidden_size` / `vq_config.image_token_embed_dim` / `vq_config.num_embeddings` |
//! | language model | `language_config` | `text_config` (`rope_theta` or `rope_parameters.rope_theta`) |

use std::fmt;
use std::path::Path;

use janus_llm::LlamaConfig;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::JanusError;
use crate::processor::SpecialTokens;

/// Which of the two published layouts a model directory uses: `config.json` format, tensor
/// names and processor files. [`JanusConfig::from_json_str`] detects it from `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelLayout {
    /// deepseek-ai's release (`deepseek-ai/Janus-Pro-1B` …): `model_type: "multi_modality"`,
    /// tensors `vision_model.vision_tower.*`, `aligner.*`, `gen_*`, `language_model.*`.
    #[default]
    Original,
    /// transformers' `JanusForConditionalGeneration` (`deepseek-community/Janus-Pro-1B` …):
    /// `model_type: "janus"` with `text_config` / `vision_config` / `vq_config`, tensors
    /// `model.*` and `lm_head.weight`.
    Hf,
}

/// Top-level tensor prefixes of the original layout.
const ORIGINAL_PREFIXES: [&str; 7] = [
    "vision_model.",
    "aligner.",
    "gen_vision_model.",
    "gen_aligner.",
    "gen_head.",
    "gen_embed.",
    "language_model.",
];

impl ModelLayout {
    /// The name used in configuration files: `original` or `hf`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Original => "original",
            Self::Hf => "hf",
        }
    }

    /// The layout of a parsed `config.json`: `model_type: "janus"` (or, without a
    /// `model_type`, a `text_config` and `vq_config`) is the transformers layout; anything else
    /// is read as the original one.
    pub fn of_config(config: &Value) -> Self {
        match config.get("model_type").and_then(Value::as_str) {
            Some("janus") => Self::Hf,
            None if config.get("text_config").is_some() && config.get("vq_config").is_some() => {
                Self::Hf
            }
            _ => Self::Original,
        }
    }

    /// The layout a checkpoint tensor name belongs to (`None` for a name of neither).
    pub fn of_key(key: &str) -> Option<Self> {
        if key.starts_with("model.") || key.starts_with("lm_head.") {
            Some(Self::Hf)
        } else if ORIGINAL_PREFIXES.iter().any(|p| key.starts_with(p)) {
            Some(Self::Original)
        } else {
            None
        }
    }
}

impl fmt::Display for ModelLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Original => "original (deepseek-ai `multi_modality`)",
            Self::Hf => "hf (transformers `janus`)",
        })
    }
}

/// The vision tower's shape (SigLIP ViT).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionParams {
    /// Table name from the config (`siglip_large_patch16_384` for all released models).
    pub model_name: String,
    /// Input side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Token width.
    pub width: usize,
    /// Transformer blocks in the table (before `select_layer`).
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP width / token width.
    pub mlp_ratio: f64,
    /// Which block's output to use (−1 = last).
    pub select_layer: i64,
    /// `same` keeps every token.
    pub select_feature: String,
}

/// An `MlpProjector` (understanding or generation adaptor).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ProjectorParams {
    /// `mlp_gelu`, `linear` or `identity`.
    pub projector_type: String,
    /// Linear layers of an `mlp_gelu` projector.
    #[serde(default = "default_depth")]
    pub depth: usize,
    /// Input width.
    pub input_dim: usize,
    /// Output width (the LLM's hidden size).
    pub n_embed: usize,
}

fn default_depth() -> usize {
    2
}

/// The VQ image tokenizer's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct VqParams {
    /// Model name (`VQ-16`).
    pub model_name: String,
    /// Codebook entries = image-token vocabulary.
    pub codebook_size: usize,
    /// Codebook vector width.
    pub codebook_dim: usize,
    /// Base channels.
    pub ch: usize,
    /// Channel multiplier per level; `len − 1` halvings of the resolution.
    pub ch_mult: Vec<usize>,
    /// Latent channels before `quant_conv`.
    pub z_channels: usize,
    /// Residual blocks per encoder level (the decoder has one more).
    pub num_res_blocks: usize,
    /// Generated image side in pixels.
    pub image_size: usize,
}

impl VqParams {
    /// Pixels per code along one side.
    pub fn downsample(&self) -> usize {
        1 << self.ch_mult.len().saturating_sub(1)
    }

    /// Codes along one side of a generated image.
    pub fn grid(&self) -> usize {
        self.image_size / self.downsample()
    }
}

/// The image head (`gen_head`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GenHeadParams {
    /// Input width (LLM hidden size).
    pub n_embed: usize,
    /// Hidden width of the head.
    pub image_token_embed: usize,
    /// Output logits = image-token vocabulary.
    pub image_token_size: usize,
}

/// Every component's shape, as the reference builds them from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct JanusConfig {
    /// SigLIP vision tower.
    pub vision: VisionParams,
    /// Understanding adaptor.
    pub aligner: ProjectorParams,
    /// VQ image tokenizer.
    pub gen_vision: VqParams,
    /// Generation adaptor.
    pub gen_aligner: ProjectorParams,
    /// Image head.
    pub gen_head: GenHeadParams,
    /// Language model.
    pub language: LlamaConfig,
    /// The layout `config.json` was written in; the checkpoint's tensor names must match it.
    pub layout: ModelLayout,
}

#[derive(Deserialize)]
struct RawComponent {
    #[serde(default)]
    cls: Option<String>,
    #[serde(default)]
    params: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
struct RawConfig {
    vision_config: RawComponent,
    aligner_config: RawComponent,
    gen_vision_config: RawComponent,
    gen_aligner_config: RawComponent,
    gen_head_config: RawComponent,
    #[serde(default)]
    language_config: serde_json::Map<String, Value>,
}

/// The vision towers the reference's `siglip_vit.py` table knows and Janus uses.
/// (name, image, patch, width, layers, heads, mlp_ratio)
const SIGLIP_TABLE: &[(&str, usize, usize, usize, usize, usize, f64)] =
    &[("siglip_large_patch16_384", 384, 16, 1024, 24, 16, 4.0)];

/// LlamaGen's `VQ-16`: (name, ch, ch_mult, z_channels, num_res_blocks).
const VQ_TABLE: &[(&str, usize, &[usize], usize, usize)] =
    &[("VQ-16", 128, &[1, 1, 2, 2, 4], 256, 2)];

impl JanusConfig {
    /// Reads `config.json` from a model directory.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, JanusError> {
        let path = dir.as_ref().join("config.json");
        let text = crate::error::read_file(&path)?;
        Self::from_json_str(&text).map_err(|e| e.in_file(&path))
    }

    /// Parses the text of a `config.json` in either layout (see [`ModelLayout::of_config`]).
    pub fn from_json_str(text: &str) -> Result<Self, JanusError> {
        let value: Value = serde_json::from_str(text).map_err(JanusError::json)?;
        if ModelLayout::of_config(&value) == ModelLayout::Hf {
            return hf_config(&value);
        }
        let raw: RawConfig = serde_json::from_str(text).map_err(JanusError::json)?;
        Ok(Self {
            vision: vision_params(&raw.vision_config.params)?,
            aligner: projector(&raw.aligner_config.params, "aligner_config")?,
            gen_vision: vq_params(&raw.gen_vision_config)?,
            gen_aligner: projector(&raw.gen_aligner_config.params, "gen_aligner_config")?,
            gen_head: serde_json::from_value(Value::Object(raw.gen_head_config.params))
                .map_err(|e| JanusError::config(format!("gen_head_config.params: {e}")))?,
            language: language(&raw.language_config, "language_config")?,
            layout: ModelLayout::Original,
        })
    }

    /// This model's `config.json` in `layout`, pretty-printed.
    ///
    /// The original layout names the vision tower and VQ model and writes explicit dimensions
    /// only where they differ from the table behind the name, as the released files do. The
    /// transformers layout also records the tokenizer's BOS, EOS and `<image_placeholder>` ids
    /// (`tokens`); it cannot describe every model the original layout can (another projector
    /// type, a vision tower cut short by `select_layer`, a generated image size other than the
    /// understanding one), and those are errors.
    pub fn to_json(
        &self,
        layout: ModelLayout,
        tokens: &SpecialTokens,
    ) -> Result<String, JanusError> {
        let value = match layout {
            ModelLayout::Original => self.original_json(),
            ModelLayout::Hf => self.hf_json(tokens)?,
        };
        Ok(serde_json::to_string_pretty(&value).expect("a JSON value serialises"))
    }

    fn original_json(&self) -> Value {
        let v = &self.vision;
        let mut vision = json!({
            "image_size": v.image_size,
            "model_name": v.model_name,
            "select_feature": v.select_feature,
            "select_layer": v.select_layer,
        });
        let table = SIGLIP_TABLE.iter().find(|row| row.0 == v.model_name);
        if table.is_none_or(|t| {
            (t.2, t.3, t.4, t.5, t.6) != (v.patch_size, v.width, v.layers, v.heads, v.mlp_ratio)
        }) {
            let p = vision.as_object_mut().expect("object");
            p.insert("width".into(), json!(v.width));
            p.insert("layers".into(), json!(v.layers));
            p.insert("heads".into(), json!(v.heads));
            p.insert("patch_size".into(), json!(v.patch_size));
            p.insert("mlp_ratio".into(), json!(v.mlp_ratio));
        }
        let g = &self.gen_vision;
        let mut vq = json!({"image_token_size": g.codebook_size, "n_embed": g.codebook_dim});
        let vq_table = VQ_TABLE.iter().find(|row| row.0 == g.model_name);
        let p = vq.as_object_mut().expect("object");
        if vq_table.is_none_or(|t| t.1 != g.ch) {
            p.insert("ch".into(), json!(g.ch));
        }
        if vq_table.is_none_or(|t| t.2 != g.ch_mult.as_slice()) {
            p.insert("ch_mult".into(), json!(g.ch_mult));
        }
        if vq_table.is_none_or(|t| t.3 != g.z_channels) {
            p.insert("z_channels".into(), json!(g.z_channels));
        }
        if vq_table.is_none_or(|t| t.4 != g.num_res_blocks) {
            p.insert("num_res_blocks".into(), json!(g.num_res_blocks));
        }
        if g.image_size != 384 {
            p.insert("image_size".into(), json!(g.image_size));
        }
        let projector = |p: &ProjectorParams| json!({"depth": p.depth, "input_dim": p.input_dim, "n_embed": p.n_embed, "projector_type": p.projector_type});
        let h = &self.gen_head;
        json!({
            "model_type": "multi_modality",
            "vision_config": {"cls": "CLIPVisionTower", "model_type": "vision", "params": vision},
            "aligner_config": {"cls": "MlpProjector", "model_type": "aligner", "params": projector(&self.aligner)},
            "gen_vision_config": {"cls": g.model_name, "model_type": "gen_vision", "params": vq},
            "gen_aligner_config": {"cls": "MlpProjector", "model_type": "gen_aligner", "params": projector(&self.gen_aligner)},
            "gen_head_config": {"cls": "vision_head", "model_type": "gen_head", "params": {
                "image_token_embed": h.image_token_embed,
                "image_token_size": h.image_token_size,
                "n_embed": h.n_embed,
            }},
            "language_config": language_json(&self.language),
        })
    }

    fn hf_json(&self, tokens: &SpecialTokens) -> Result<Value, JanusError> {
        let unsupported = |what: String| {
            Err(JanusError::config(format!(
                "the transformers layout cannot describe this model: {what}"
            )))
        };
        let (v, g, l) = (&self.vision, &self.gen_vision, &self.language);
        for (name, p) in [
            ("aligner", &self.aligner),
            ("gen_aligner", &self.gen_aligner),
        ] {
            if p.projector_type != "mlp_gelu" {
                return unsupported(format!("{name} is `{}`, not `mlp_gelu`", p.projector_type));
            }
        }
        if v.select_layer != -1 && v.select_layer != v.layers as i64 {
            return unsupported(format!(
                "select_layer {} skips vision blocks",
                v.select_layer
            ));
        }
        if self.aligner.input_dim != v.width {
            return unsupported(format!(
                "aligner input {} is not the vision width {}",
                self.aligner.input_dim, v.width
            ));
        }
        if self.gen_aligner.input_dim != g.codebook_dim {
            return unsupported(format!(
                "gen_aligner input {} is not the codebook width {}",
                self.gen_aligner.input_dim, g.codebook_dim
            ));
        }
        if self.gen_head.n_embed != l.hidden_size
            || self.gen_head.image_token_size != g.codebook_size
        {
            return unsupported(
                "gen_head input or output differs from the LLM width or the codebook".into(),
            );
        }
        if g.image_size != v.image_size {
            return unsupported(format!(
                "generated images are {}px but understanding images {}px",
                g.image_size, v.image_size
            ));
        }
        let mut text = language_json(l);
        let t = text.as_object_mut().expect("object");
        t.insert("head_dim".into(), json!(l.head_dim()));
        t.insert("num_key_value_heads".into(), json!(l.kv_heads()));
        t.insert(
            "rope_parameters".into(),
            json!({"rope_type": "default", "rope_theta": l.rope_theta}),
        );
        t.insert("mlp_bias".into(), json!(false));
        t.insert("bos_token_id".into(), json!(tokens.bos));
        t.insert("eos_token_id".into(), json!(tokens.eos));
        // transformers' conversion leaves it unset (the tokenizer has no pad token); a set one
        // would become the embedding's `padding_idx` and freeze that row in training.
        t.insert("pad_token_id".into(), Value::Null);
        Ok(json!({
            "model_type": "janus",
            "architectures": ["JanusForConditionalGeneration"],
            "image_token_id": tokens.image,
            "tie_word_embeddings": false,
            "text_config": text,
            "vision_config": {
                "model_type": "janus_vision_model",
                "hidden_size": v.width,
                "num_hidden_layers": v.layers,
                "num_attention_heads": v.heads,
                "num_channels": 3,
                "patch_size": v.patch_size,
                "image_size": v.image_size,
                "mlp_ratio": v.mlp_ratio,
                "hidden_act": "gelu",
                "layer_norm_eps": 1e-6,
                "attention_bias": true,
                "use_qk_norm": false,
                "projection_dim": self.aligner.n_embed,
                "depth": self.aligner.depth,
                "num_image_tokens": self.num_image_tokens(),
            },
            "vq_config": {
                "model_type": "janus_vqgan",
                "embed_dim": g.codebook_dim,
                "num_embeddings": g.codebook_size,
                "latent_channels": g.z_channels,
                "base_channels": g.ch,
                "channel_multiplier": g.ch_mult,
                "num_res_blocks": g.num_res_blocks,
                "in_channels": 3,
                "out_channels": 3,
                "double_latent": false,
                "num_patches": g.grid(),
                "projection_dim": self.gen_aligner.n_embed,
                "num_hidden_layers": self.gen_aligner.depth,
                "hidden_act": "gelu",
                "image_token_embed_dim": self.gen_head.image_token_embed,
            },
        }))
    }

    /// Image tokens that stand for one understanding image (SigLIP patches).
    pub fn num_image_tokens(&self) -> usize {
        let side = self.vision.image_size / self.vision.patch_size;
        side * side
    }

    /// Janus-1.3B as its released `config.json` resolves.
    pub fn janus_1_3b() -> Self {
        Self::from_json_str(&released_json(2048, r#""hidden_size": 2048, "intermediate_size": 5632, "num_attention_heads": 16, "num_hidden_layers": 24, "num_key_value_heads": 16, "max_position_embeddings": 16384, "vocab_size": 102400, "model_type": "llama", "torch_dtype": "bfloat16""#))
            .expect("built-in preset parses")
    }

    /// Janus-Pro-1B as its released `config.json` resolves (same shape as Janus-1.3B).
    pub fn janus_pro_1b() -> Self {
        Self::janus_1_3b()
    }

    /// Janus-Pro-7B as its released `config.json` resolves: its `language_config` names only
    /// the layer count, vocabulary and context; the rest are LlamaConfig defaults.
    pub fn janus_pro_7b() -> Self {
        Self::from_json_str(&released_json(4096, r#""max_position_embeddings": 16384, "model_type": "llama", "num_hidden_layers": 30, "torch_dtype": "bfloat16", "vocab_size": 102400"#))
            .expect("built-in preset parses")
    }
}

/// A `config.json` in the released layout with hidden width `d` and the given language keys.
fn released_json(d: usize, language: &str) -> String {
    format!(
        r#"{{
  "model_type": "multi_modality",
  "vision_config": {{"cls": "CLIPVisionTower", "model_type": "vision", "params": {{"image_size": 384, "model_name": "siglip_large_patch16_384", "select_feature": "same", "select_layer": -1}}}},
  "aligner_config": {{"cls": "MlpProjector", "model_type": "aligner", "params": {{"depth": 2, "input_dim": 1024, "n_embed": {d}, "projector_type": "mlp_gelu"}}}},
  "gen_vision_config": {{"cls": "VQ-16", "model_type": "gen_vision", "params": {{"image_token_size": 16384, "n_embed": 8}}}},
  "gen_aligner_config": {{"cls": "MlpProjector", "model_type": "gen_aligner", "params": {{"depth": 2, "input_dim": 8, "n_embed": {d}, "projector_type": "mlp_gelu"}}}},
  "gen_head_config": {{"cls": "vision_head", "model_type": "gen_head", "params": {{"image_token_embed": {d}, "image_token_size": 16384, "n_embed": {d}}}}},
  "language_config": {{{language}}}
}}"#
    )
}

fn get_usize(
    p: &serde_json::Map<String, Value>,
    key: &str,
    ctx: &str,
) -> Result<Option<usize>, JanusError> {
    match p.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
            JanusError::config(format!(
                "{ctx}.{key} must be a non-negative integer, found {v}"
            ))
        }),
    }
}

fn get_f64(
    p: &serde_json::Map<String, Value>,
    key: &str,
    ctx: &str,
) -> Result<Option<f64>, JanusError> {
    match p.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| JanusError::config(format!("{ctx}.{key} must be a number, found {v}"))),
    }
}

fn vision_params(p: &serde_json::Map<String, Value>) -> Result<VisionParams, JanusError> {
    let ctx = "vision_config.params";
    let name = p
        .get("model_name")
        .and_then(Value::as_str)
        .unwrap_or("siglip_large_patch16_384");
    let table = SIGLIP_TABLE.iter().find(|row| row.0 == name);
    let pick = |key: &str, from_table: Option<usize>| -> Result<usize, JanusError> {
        get_usize(p, key, ctx)?.or(from_table).ok_or_else(|| {
            JanusError::config(format!(
                "unknown vision model_name `{name}` and no explicit `{key}` in {ctx}"
            ))
        })
    };
    let mlp_ratio = match get_f64(p, "mlp_ratio", ctx)? {
        Some(r) => r,
        None => table.map(|t| t.6).ok_or_else(|| {
            JanusError::config(format!(
                "unknown vision model_name `{name}` and no explicit `mlp_ratio` in {ctx}"
            ))
        })?,
    };
    Ok(VisionParams {
        model_name: name.to_string(),
        image_size: pick("image_size", table.map(|t| t.1))?,
        patch_size: pick("patch_size", table.map(|t| t.2))?,
        width: pick("width", table.map(|t| t.3))?,
        layers: pick("layers", table.map(|t| t.4))?,
        heads: pick("heads", table.map(|t| t.5))?,
        mlp_ratio,
        select_layer: p.get("select_layer").and_then(Value::as_i64).unwrap_or(-1),
        select_feature: p
            .get("select_feature")
            .and_then(Value::as_str)
            .unwrap_or("patch")
            .to_string(),
    })
}

fn projector(p: &serde_json::Map<String, Value>, ctx: &str) -> Result<ProjectorParams, JanusError> {
    serde_json::from_value(Value::Object(p.clone()))
        .map_err(|e| JanusError::config(format!("{ctx}.params: {e}")))
}

fn vq_params(c: &RawComponent) -> Result<VqParams, JanusError> {
    let ctx = "gen_vision_config.params";
    let p = &c.params;
    let name = c.cls.as_deref().unwrap_or("VQ-16");
    let table = VQ_TABLE.iter().find(|row| row.0 == name);
    let unknown = |key: &str| {
        JanusError::config(format!(
            "unknown VQ model `{name}` and no explicit `{key}` in {ctx}"
        ))
    };
    let ch_mult = match p.get("ch_mult") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_u64().map(|n| n as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                JanusError::config(format!("{ctx}.ch_mult must be a list of integers"))
            })?,
        Some(v) => {
            return Err(JanusError::config(format!(
                "{ctx}.ch_mult must be a list, found {v}"
            )));
        }
        None => table
            .map(|t| t.2.to_vec())
            .ok_or_else(|| unknown("ch_mult"))?,
    };
    let vq = VqParams {
        model_name: name.to_string(),
        codebook_size: get_usize(p, "image_token_size", ctx)?.unwrap_or(16384),
        codebook_dim: get_usize(p, "n_embed", ctx)?.unwrap_or(8),
        ch: get_usize(p, "ch", ctx)?
            .or(table.map(|t| t.1))
            .ok_or_else(|| unknown("ch"))?,
        ch_mult,
        z_channels: get_usize(p, "z_channels", ctx)?
            .or(table.map(|t| t.3))
            .ok_or_else(|| unknown("z_channels"))?,
        num_res_blocks: get_usize(p, "num_res_blocks", ctx)?
            .or(table.map(|t| t.4))
            .ok_or_else(|| unknown("num_res_blocks"))?,
        image_size: get_usize(p, "image_size", ctx)?.unwrap_or(384),
    };
    if vq.ch_mult.is_empty() || !vq.image_size.is_multiple_of(vq.downsample()) {
        return Err(JanusError::config(format!(
            "{ctx}: image_size {} is not a multiple of the VQ downsampling {}",
            vq.image_size,
            vq.downsample()
        )));
    }
    Ok(vq)
}

fn language(p: &serde_json::Map<String, Value>, ctx: &str) -> Result<LlamaConfig, JanusError> {
    let d = LlamaConfig::new();
    // transformers 5 moved the RoPE base into `rope_parameters`.
    let rope = p.get("rope_parameters").and_then(Value::as_object);
    if let Some(kind) = rope
        .and_then(|r| r.get("rope_type"))
        .and_then(Value::as_str)
        && kind != "default"
    {
        return Err(JanusError::config(format!(
            "{ctx}.rope_parameters.rope_type `{kind}` is not supported (default only)"
        )));
    }
    let rope_theta = match get_f64(p, "rope_theta", ctx)? {
        Some(theta) => Some(theta),
        None => match rope {
            Some(r) => get_f64(r, "rope_theta", &format!("{ctx}.rope_parameters"))?,
            None => None,
        },
    };
    let cfg = LlamaConfig {
        vocab_size: get_usize(p, "vocab_size", ctx)?.unwrap_or(d.vocab_size),
        hidden_size: get_usize(p, "hidden_size", ctx)?.unwrap_or(d.hidden_size),
        intermediate_size: get_usize(p, "intermediate_size", ctx)?.unwrap_or(d.intermediate_size),
        num_hidden_layers: get_usize(p, "num_hidden_layers", ctx)?.unwrap_or(d.num_hidden_layers),
        num_attention_heads: get_usize(p, "num_attention_heads", ctx)?
            .unwrap_or(d.num_attention_heads),
        num_key_value_heads: get_usize(p, "num_key_value_heads", ctx)?,
        max_position_embeddings: get_usize(p, "max_position_embeddings", ctx)?
            .unwrap_or(d.max_position_embeddings),
        rms_norm_eps: get_f64(p, "rms_norm_eps", ctx)?.unwrap_or(d.rms_norm_eps),
        rope_theta: rope_theta.unwrap_or(d.rope_theta),
    };
    for key in ["attention_bias", "mlp_bias"] {
        if p.get(key).and_then(Value::as_bool) == Some(true) {
            return Err(JanusError::config(format!(
                "{ctx}.{key}: biased language-model projections are not used by any Janus model"
            )));
        }
    }
    if let Some(head_dim) = get_usize(p, "head_dim", ctx)?
        && cfg.num_attention_heads > 0
        && head_dim * cfg.num_attention_heads != cfg.hidden_size
    {
        return Err(JanusError::config(format!(
            "{ctx}.head_dim {head_dim} is not hidden_size / num_attention_heads"
        )));
    }
    if p.get("tie_word_embeddings").and_then(Value::as_bool) == Some(true) {
        return Err(JanusError::config(format!(
            "{ctx}: tied embeddings are not used by any Janus model"
        )));
    }
    if let Some(act) = p.get("hidden_act").and_then(Value::as_str)
        && act != "silu"
    {
        return Err(JanusError::config(format!(
            "{ctx}.hidden_act `{act}` is not supported (silu only)"
        )));
    }
    cfg.validate()
        .map_err(|e| JanusError::config(e.to_string()))?;
    Ok(cfg)
}

/// `language_config` / `text_config` keys shared by both layouts.
fn language_json(l: &LlamaConfig) -> Value {
    let mut out = json!({
        "model_type": "llama",
        "vocab_size": l.vocab_size,
        "hidden_size": l.hidden_size,
        "intermediate_size": l.intermediate_size,
        "num_hidden_layers": l.num_hidden_layers,
        "num_attention_heads": l.num_attention_heads,
        "max_position_embeddings": l.max_position_embeddings,
        "rms_norm_eps": l.rms_norm_eps,
        "rope_theta": l.rope_theta,
        "hidden_act": "silu",
        "attention_bias": false,
        "tie_word_embeddings": false,
    });
    if let Some(kv) = l.num_key_value_heads {
        out.as_object_mut()
            .expect("object")
            .insert("num_key_value_heads".into(), json!(kv));
    }
    out
}

/// A transformers-layout `config.json` (see the module docs for where each value comes from).
fn hf_config(value: &Value) -> Result<JanusConfig, JanusError> {
    let section = |key: &str| -> Result<serde_json::Map<String, Value>, JanusError> {
        match value.get(key) {
            None | Some(Value::Null) => Ok(Default::default()),
            Some(Value::Object(map)) => Ok(map.clone()),
            Some(other) => Err(JanusError::config(format!(
                "{key} must be an object, found {other}"
            ))),
        }
    };
    let (text, vision, vq) = (
        section("text_config")?,
        section("vision_config")?,
        section("vq_config")?,
    );
    let unsupported = |ctx: &str, key: &str, v: &Value| {
        JanusError::config(format!(
            "{ctx}.{key} = {v} is not supported by any Janus model"
        ))
    };
    let top = value.as_object().cloned().unwrap_or_default();
    // Values every Janus model has and the components here assume.
    let fixed: [(&serde_json::Map<String, Value>, &str, &str, Value); 9] = [
        (&vision, "vision_config", "hidden_act", json!("gelu")),
        (&vision, "vision_config", "attention_bias", json!(true)),
        (&vision, "vision_config", "use_qk_norm", json!(false)),
        (&vision, "vision_config", "num_channels", json!(3)),
        (&vq, "vq_config", "hidden_act", json!("gelu")),
        (&vq, "vq_config", "double_latent", json!(false)),
        (&vq, "vq_config", "in_channels", json!(3)),
        (&vq, "vq_config", "out_channels", json!(3)),
        (&top, "config", "tie_word_embeddings", json!(false)),
    ];
    for (map, ctx, key, want) in &fixed {
        if let Some(v) = map.get(*key).filter(|v| !v.is_null())
            && v != want
        {
            return Err(unsupported(ctx, key, v));
        }
    }
    if let Some(eps) = get_f64(&vision, "layer_norm_eps", "vision_config")?
        && eps != 1e-6
    {
        return Err(unsupported("vision_config", "layer_norm_eps", &json!(eps)));
    }

    let ctx = "vision_config";
    let uint = |map: &serde_json::Map<String, Value>, ctx: &str, key: &str, default: usize| {
        get_usize(map, key, ctx).map(|v| v.unwrap_or(default))
    };
    let (image_size, patch_size) = (
        uint(&vision, ctx, "image_size", 384)?,
        uint(&vision, ctx, "patch_size", 16)?,
    );
    let (width, layers, heads) = (
        uint(&vision, ctx, "hidden_size", 1024)?,
        uint(&vision, ctx, "num_hidden_layers", 24)?,
        uint(&vision, ctx, "num_attention_heads", 16)?,
    );
    let mlp_ratio = get_f64(&vision, "mlp_ratio", ctx)?.unwrap_or(4.0);
    let model_name = SIGLIP_TABLE
        .iter()
        .find(|t| {
            (t.1, t.2, t.3, t.4, t.5, t.6)
                == (image_size, patch_size, width, layers, heads, mlp_ratio)
        })
        .map_or("siglip", |t| t.0);
    let language = language(&text, "text_config")?;
    let vision_params = VisionParams {
        model_name: model_name.to_string(),
        image_size,
        patch_size,
        width,
        layers,
        heads,
        mlp_ratio,
        select_layer: -1,
        select_feature: "same".into(),
    };
    let aligner = ProjectorParams {
        projector_type: "mlp_gelu".into(),
        depth: uint(&vision, ctx, "depth", 2)?,
        input_dim: width,
        n_embed: uint(&vision, ctx, "projection_dim", 2048)?,
    };

    let ctx = "vq_config";
    let ch_mult = match vq.get("channel_multiplier") {
        None | Some(Value::Null) => vec![1, 1, 2, 2, 4],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_u64().map(|n| n as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                JanusError::config(format!(
                    "{ctx}.channel_multiplier must be a list of integers"
                ))
            })?,
        Some(v) => {
            return Err(JanusError::config(format!(
                "{ctx}.channel_multiplier must be a list, found {v}"
            )));
        }
    };
    let gen_vision = VqParams {
        model_name: "VQ-16".into(),
        codebook_size: uint(&vq, ctx, "num_embeddings", 16384)?,
        codebook_dim: uint(&vq, ctx, "embed_dim", 8)?,
        ch: uint(&vq, ctx, "base_channels", 128)?,
        ch_mult,
        z_channels: uint(&vq, ctx, "latent_channels", 256)?,
        num_res_blocks: uint(&vq, ctx, "num_res_blocks", 2)?,
        image_size,
    };
    if gen_vision.ch_mult.is_empty() || !image_size.is_multiple_of(gen_vision.downsample()) {
        return Err(JanusError::config(format!(
            "{ctx}: image size {image_size} is not a multiple of the VQ downsampling {}",
            gen_vision.downsample()
        )));
    }
    let gen_aligner = ProjectorParams {
        projector_type: "mlp_gelu".into(),
        depth: uint(&vq, ctx, "num_hidden_layers", 2)?,
        input_dim: gen_vision.codebook_dim,
        n_embed: uint(&vq, ctx, "projection_dim", 2048)?,
    };
    let gen_head = GenHeadParams {
        n_embed: language.hidden_size,
        image_token_embed: uint(&vq, ctx, "image_token_embed_dim", 2048)?,
        image_token_size: gen_vision.codebook_size,
    };
    Ok(JanusConfig {
        vision: vision_params,
        aligner,
        gen_vision,
        gen_aligner,
        gen_head,
        language,
        layout: ModelLayout::Hf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pro_7b_fills_llama_defaults() {
        let c = JanusConfig::janus_pro_7b();
        assert_eq!(c.language.hidden_size, 4096);
        assert_eq!(c.language.intermediate_size, 11008);
        assert_eq!(c.language.num_attention_heads, 32);
        assert_eq!(c.language.kv_heads(), 32);
        assert_eq!(c.language.num_hidden_layers, 30);
        assert_eq!(c.language.vocab_size, 102400);
        assert_eq!(c.language.rms_norm_eps, 1e-6);
        assert_eq!(c.aligner.n_embed, 4096);
        assert_eq!(c.gen_head.image_token_embed, 4096);
    }

    #[test]
    fn released_tables_resolve() {
        let c = JanusConfig::janus_pro_1b();
        assert_eq!(
            (
                c.vision.width,
                c.vision.layers,
                c.vision.heads,
                c.vision.patch_size
            ),
            (1024, 24, 16, 16)
        );
        assert_eq!(c.num_image_tokens(), 576);
        assert_eq!(c.gen_vision.ch_mult, vec![1, 1, 2, 2, 4]);
        assert_eq!(c.gen_vision.grid(), 24);
        assert_eq!(c.language.hidden_size, 2048);
        assert_eq!(c.language.intermediate_size, 5632);
        assert_eq!(c, JanusConfig::janus_1_3b());
    }

    #[test]
    fn unknown_names_need_explicit_dims() {
        let text = released_json(64, r#""hidden_size": 64, "num_attention_heads": 4"#)
            .replace("siglip_large_patch16_384", "siglip_mystery");
        let err = JanusConfig::from_json_str(&text).unwrap_err().to_string();
        assert!(
            err.contains("siglip_mystery") && err.contains("explicit"),
            "{err}"
        );

        let text = released_json(64, r#""hidden_size": 64, "num_attention_heads": 4"#)
            .replace("VQ-16", "VQ-99");
        let err = JanusConfig::from_json_str(&text).unwrap_err().to_string();
        assert!(err.contains("VQ-99"), "{err}");
    }

    #[test]
    fn malformed_json_reports_position() {
        let err = JanusConfig::from_json_str("{\n  \"vision_config\": [,\n}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
