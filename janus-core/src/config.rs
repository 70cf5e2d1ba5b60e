//! `config.json` (`multi_modality`), resolved into the shapes of every component.
//!
//! Released checkpoints name their vision tower (`model_name`) and VQ model (`cls`) and give
//! no dimensions; the tables behind those names live here. Explicit keys (`width`, `layers`,
//! `heads`, `patch_size`, `mlp_ratio` for the vision tower; `ch`, `ch_mult`, `z_channels`,
//! `image_size`, `num_res_blocks` for the VQ model) override the table, which is how the test
//! fixtures describe their tiny models. Missing language keys take HF `LlamaConfig` defaults.

use std::path::Path;

use janus_llm::LlamaConfig;
use serde::Deserialize;
use serde_json::Value;

use crate::error::JanusError;

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

    /// Parses the text of a `config.json`.
    pub fn from_json_str(text: &str) -> Result<Self, JanusError> {
        let raw: RawConfig = serde_json::from_str(text).map_err(JanusError::json)?;
        Ok(Self {
            vision: vision_params(&raw.vision_config.params)?,
            aligner: projector(&raw.aligner_config.params, "aligner_config")?,
            gen_vision: vq_params(&raw.gen_vision_config)?,
            gen_aligner: projector(&raw.gen_aligner_config.params, "gen_aligner_config")?,
            gen_head: serde_json::from_value(Value::Object(raw.gen_head_config.params))
                .map_err(|e| JanusError::config(format!("gen_head_config.params: {e}")))?,
            language: language(&raw.language_config)?,
        })
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

fn language(p: &serde_json::Map<String, Value>) -> Result<LlamaConfig, JanusError> {
    let ctx = "language_config";
    let d = LlamaConfig::new();
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
        rope_theta: get_f64(p, "rope_theta", ctx)?.unwrap_or(d.rope_theta),
    };
    if p.get("tie_word_embeddings").and_then(Value::as_bool) == Some(true) {
        return Err(JanusError::config(
            "language_config: tied embeddings are not used by any Janus model".into(),
        ));
    }
    if let Some(act) = p.get("hidden_act").and_then(Value::as_str)
        && act != "silu"
    {
        return Err(JanusError::config(format!(
            "language_config.hidden_act `{act}` is not supported (silu only)"
        )));
    }
    cfg.validate()
        .map_err(|e| JanusError::config(e.to_string()))?;
    Ok(cfg)
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
