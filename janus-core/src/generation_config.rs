//! A model directory's recommended settings, `generation_config.json`: what a program should use
//! when its user names none (explicit choices always win).
//!
//! ```json
//! {
//!   "text":  {"max_new_tokens": 512, "temperature": 0.0, "top_p": null, "top_k": null},
//!   "image": {"cfg_weight": 5.0, "temperature": 1.0, "top_p": null, "top_k": null}
//! }
//! ```
//!
//! Every field is optional; absent ones keep the reference's defaults (greedy answers of up to
//! 512 tokens; CFG weight 5 at temperature 1 for images). The flat keys of a transformers
//! `generation_config.json` are read too where they mean the same thing: `max_new_tokens` for
//! answers and `guidance_scale` for the CFG weight; the `text`/`image` sections win over them.
//! Other keys are ignored. A missing file means the defaults.

use std::path::Path;

use janus_llm::SamplingOptions;
use serde::{Deserialize, Serialize};

use crate::error::{JanusError, read_file};
use crate::generation::GenerationOptions;
use crate::understanding::AnswerOptions;

/// The file name looked for in a model directory.
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";

/// Recommended answer settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextDefaults {
    /// Most tokens an answer may have.
    pub max_new_tokens: usize,
    /// Sampling temperature; `0` is greedy.
    pub temperature: f64,
    /// Nucleus threshold in `(0, 1]`, or none.
    pub top_p: Option<f64>,
    /// Keep only the `k` most likely tokens, or all.
    pub top_k: Option<usize>,
}

impl Default for TextDefaults {
    fn default() -> Self {
        let options = AnswerOptions::default();
        Self {
            max_new_tokens: options.max_new_tokens,
            temperature: options.sampling.temperature,
            top_p: options.sampling.top_p,
            top_k: options.sampling.top_k,
        }
    }
}

/// Recommended image settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageDefaults {
    /// Classifier-free guidance weight.
    pub cfg_weight: f64,
    /// Sampling temperature over the guided logits; `0` is argmax.
    pub temperature: f64,
    /// Nucleus threshold in `(0, 1]`, or none.
    pub top_p: Option<f64>,
    /// Keep only the `k` most likely codes, or all.
    pub top_k: Option<usize>,
}

impl Default for ImageDefaults {
    fn default() -> Self {
        let options = GenerationOptions::default();
        Self {
            cfg_weight: options.cfg_weight,
            temperature: options.sampling.temperature,
            top_p: options.sampling.top_p,
            top_k: options.sampling.top_k,
        }
    }
}

/// The contents of `generation_config.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationConfig {
    /// Settings for answers (understanding).
    pub text: TextDefaults,
    /// Settings for drawing images.
    pub image: ImageDefaults,
}

impl GenerationConfig {
    /// Reads `generation_config.json` from a model directory; the defaults when it has none.
    ///
    /// # Errors
    ///
    /// [`JanusError::Json`] for a file that does not parse, [`JanusError::Config`] for values out
    /// of range (both naming the file), [`JanusError::Io`] when it cannot be read.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, JanusError> {
        let path = dir.as_ref().join(GENERATION_CONFIG_FILE);
        if !path.is_file() {
            return Ok(Self::default());
        }
        Self::parse(&read_file(&path)?).map_err(|e| e.in_file(&path))
    }

    /// Parses the JSON text of a `generation_config.json`.
    ///
    /// # Errors
    ///
    /// As [`GenerationConfig::from_dir`], without the file name.
    pub fn parse(text: &str) -> Result<Self, JanusError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(JanusError::json)?;
        let object = value
            .as_object()
            .ok_or_else(|| JanusError::config("generation config must be a JSON object".into()))?;
        let mut config = Self::default();
        // transformers' flat keys first, so that our own sections override them.
        if let Some(v) = object.get("max_new_tokens").filter(|v| !v.is_null()) {
            config.text.max_new_tokens = v.as_u64().ok_or_else(|| {
                JanusError::config(format!("max_new_tokens must be a count, found {v}"))
            })? as usize;
        }
        if let Some(v) = object.get("guidance_scale").filter(|v| !v.is_null()) {
            config.image.cfg_weight = v.as_f64().ok_or_else(|| {
                JanusError::config(format!("guidance_scale must be a number, found {v}"))
            })?;
        }
        if let Some(text) = object.get("text") {
            config.text = section(text, "text", config.text)?;
        }
        if let Some(image) = object.get("image") {
            config.image = section(image, "image", config.image)?;
        }
        config
            .answer_options()
            .sampling
            .validate()
            .map_err(|e| JanusError::config(format!("text: {e}")))?;
        if config.text.max_new_tokens == 0 {
            return Err(JanusError::config(
                "text.max_new_tokens must be at least 1".into(),
            ));
        }
        config
            .generation_options()
            .validate()
            .map_err(|e| JanusError::config(format!("image: {e}")))?;
        Ok(config)
    }

    /// Answer options with these settings (no stop strings).
    pub fn answer_options(&self) -> AnswerOptions {
        AnswerOptions {
            max_new_tokens: self.text.max_new_tokens,
            sampling: SamplingOptions {
                temperature: self.text.temperature,
                top_k: self.text.top_k,
                top_p: self.text.top_p,
                ..SamplingOptions::default()
            },
            stop_strings: Vec::new(),
        }
    }

    /// Generation options with these settings, one image per prompt.
    pub fn generation_options(&self) -> GenerationOptions {
        GenerationOptions {
            cfg_weight: self.image.cfg_weight,
            sampling: SamplingOptions {
                temperature: self.image.temperature,
                top_k: self.image.top_k,
                top_p: self.image.top_p,
                ..SamplingOptions::default()
            },
            ..GenerationOptions::default()
        }
    }
}

/// Reads one section over `base`: the fields it names replace `base`'s.
fn section<T>(value: &serde_json::Value, name: &str, base: T) -> Result<T, JanusError>
where
    T: Serialize + for<'de> Deserialize<'de>,
{
    let fields = value
        .as_object()
        .ok_or_else(|| JanusError::config(format!("`{name}` must be a JSON object")))?;
    let mut merged = serde_json::to_value(base).map_err(JanusError::json)?;
    let target = merged
        .as_object_mut()
        .expect("a struct serialises to an object");
    for (key, v) in fields {
        target.insert(key.clone(), v.clone());
    }
    serde_json::from_value(merged).map_err(|e| JanusError::config(format!("`{name}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_fields_keep_the_reference_defaults() {
        let c = GenerationConfig::parse("{}").unwrap();
        assert_eq!(c, GenerationConfig::default());
        assert_eq!(c.answer_options(), AnswerOptions::default());
        assert_eq!(c.generation_options(), GenerationOptions::default());
    }

    #[test]
    fn sections_override_defaults_and_flat_keys() {
        let c = GenerationConfig::parse(
            r#"{"guidance_scale": 4.0, "max_new_tokens": 64, "bos_token_id": 0,
                "image": {"cfg_weight": 3.0}, "text": {"temperature": 0.1, "top_p": 0.95}}"#,
        )
        .unwrap();
        assert_eq!(c.image.cfg_weight, 3.0);
        assert_eq!(c.image.temperature, 1.0);
        assert_eq!(c.text.max_new_tokens, 64);
        assert_eq!(c.answer_options().sampling.top_p, Some(0.95));
        assert_eq!(c.generation_options().cfg_weight, 3.0);
        let flat = GenerationConfig::parse(r#"{"guidance_scale": 4.0}"#).unwrap();
        assert_eq!(flat.image.cfg_weight, 4.0);
    }

    #[test]
    fn bad_values_are_config_errors() {
        for text in [
            r#"{"image": {"cfg_weight": -1}}"#,
            r#"{"text": {"temperature": -0.5}}"#,
            r#"{"text": {"max_new_tokens": 0}}"#,
            r#"{"image": {"top_p": 2.0}}"#,
            r#"{"image": {"cfg": 3}}"#,
            r#"{"text": 3}"#,
            "[]",
        ] {
            let err = GenerationConfig::parse(text).unwrap_err();
            assert!(matches!(err, JanusError::Config { .. }), "{text}: {err}");
        }
        assert!(matches!(
            GenerationConfig::parse("{").unwrap_err(),
            JanusError::Json { .. }
        ));
    }
}
