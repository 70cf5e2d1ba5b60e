//! `processor_config.json` (VLChatProcessor) and `preprocessor_config.json` (VLMImageProcessor),
//! as the original release writes them or as transformers does (`JanusProcessor` /
//! `JanusImageProcessor`: the image side as `size: {height, width}`, the chat settings fixed
//! in code, so missing keys take the same defaults).

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::error::ProcessorError;
use crate::config::ModelLayout;

/// Reads and deserialises a JSON file; errors name the file and the line/column.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ProcessorError> {
    let bytes = std::fs::read(path).map_err(|e| ProcessorError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| ProcessorError::json(path, &e))
}

/// Like [`read_json`], but a missing file yields `None`.
pub(crate) fn read_json_opt<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, ProcessorError> {
    if path.is_file() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// The chat-level settings of `VLChatProcessor` (`processor_config.json`).
///
/// Missing keys take the reference constructor's defaults, which are also the values every
/// released checkpoint ships.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ProcessorConfig {
    /// Placeholder the user writes where an image goes.
    pub image_tag: String,
    /// Token opening an image's embedding run.
    pub image_start_tag: String,
    /// Token closing an image's embedding run.
    pub image_end_tag: String,
    /// Token used for left padding.
    pub pad_tag: String,
    /// Embedding slots per image: `(image_size / patch)²`, 576 for the released 384-pixel models.
    pub num_image_tokens: usize,
    /// Keep the placeholder token in front of `image_start_tag` when expanding (false in all
    /// released checkpoints).
    pub add_special_token: bool,
    /// Conversation template name; only `deepseek` exists for Janus.
    pub sft_format: String,
    /// Whether training masks the prompt out of the loss.
    pub mask_prompt: bool,
    /// Label value ignored by the loss.
    pub ignore_id: i64,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            image_tag: "<image_placeholder>".into(),
            image_start_tag: "<begin_of_image>".into(),
            image_end_tag: "<end_of_image>".into(),
            pad_tag: "<｜▁pad▁｜>".into(),
            num_image_tokens: 576,
            add_special_token: false,
            sft_format: "deepseek".into(),
            mask_prompt: true,
            ignore_id: -100,
        }
    }
}

impl ProcessorConfig {
    /// Loads `processor_config.json`, checking that the values are usable.
    pub fn load(path: &Path) -> Result<Self, ProcessorError> {
        let config: Self = read_json(path)?;
        config.validate(path)?;
        Ok(config)
    }

    /// `processor_config.json` text in `layout`.
    pub fn to_json(&self, layout: ModelLayout) -> String {
        let value = match layout {
            ModelLayout::Original => json!({
                "processor_class": "VLChatProcessor",
                "image_tag": self.image_tag,
                "image_start_tag": self.image_start_tag,
                "image_end_tag": self.image_end_tag,
                "pad_tag": self.pad_tag,
                "num_image_tokens": self.num_image_tokens,
                "add_special_token": self.add_special_token,
                "sft_format": self.sft_format,
                "mask_prompt": self.mask_prompt,
                "ignore_id": self.ignore_id,
            }),
            // `JanusProcessor` fixes the tags and the template in code.
            ModelLayout::Hf => json!({
                "processor_class": "JanusProcessor",
                "num_image_tokens": self.num_image_tokens,
                "use_default_system_prompt": true,
            }),
        };
        serde_json::to_string_pretty(&value).expect("a JSON value serialises")
    }

    fn validate(&self, path: &Path) -> Result<(), ProcessorError> {
        if self.num_image_tokens == 0 {
            return Err(ProcessorError::Config {
                path: path.into(),
                message: "num_image_tokens must be positive".into(),
            });
        }
        if self.sft_format != "deepseek" {
            return Err(ProcessorError::UnsupportedTemplate(self.sft_format.clone()));
        }
        Ok(())
    }
}

/// A per-channel statistic given either as one number or as one per channel.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum PerChannel {
    One(f64),
    Many(Vec<f64>),
}

/// Raw `preprocessor_config.json`; the reference class defaults fill missing keys.
#[derive(Debug, Clone, Deserialize)]
struct RawImageProcessorConfig {
    #[serde(default)]
    image_size: Option<usize>,
    /// `JanusImageProcessor`'s spelling of the side.
    #[serde(default)]
    size: Option<ImageSize>,
    #[serde(default = "default_min_size")]
    min_size: usize,
    #[serde(default = "default_mean")]
    image_mean: Option<PerChannel>,
    #[serde(default = "default_std")]
    image_std: Option<PerChannel>,
    #[serde(default = "default_rescale")]
    rescale_factor: f64,
    #[serde(default = "default_true")]
    do_normalize: bool,
}

/// `size` of a transformers image processor.
#[derive(Debug, Clone, Deserialize)]
struct ImageSize {
    height: Option<usize>,
    width: Option<usize>,
}
fn default_min_size() -> usize {
    14
}
// VLMImageProcessor's class defaults are CLIP's statistics; every released json overrides
// them with SigLIP's 0.5, but a json without the keys gets these in the reference.
fn default_mean() -> Option<PerChannel> {
    Some(PerChannel::Many(vec![0.48145466, 0.4578275, 0.40821073]))
}
fn default_std() -> Option<PerChannel> {
    Some(PerChannel::Many(vec![0.26862954, 0.26130258, 0.27577711]))
}
fn default_rescale() -> f64 {
    1.0 / 255.0
}
fn default_true() -> bool {
    true
}

/// The image settings of `VLMImageProcessor` (`preprocessor_config.json`), resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    /// Side of the square model input; the long side of every image is resized to it.
    pub image_size: usize,
    /// Smallest allowed resized side (thin images are stretched up to it).
    pub min_size: usize,
    /// Per-channel mean subtracted after rescaling.
    pub image_mean: [f64; 3],
    /// Per-channel standard deviation divided by after subtracting the mean.
    pub image_std: [f64; 3],
    /// Factor applied to `u8` values (1/255).
    pub rescale_factor: f64,
    /// Whether to apply mean/std normalisation.
    pub do_normalize: bool,
    /// Padding colour, `int(mean·255)` per channel.
    ///
    /// The reference always derives it from `image_mean` (it overwrites any `background_color`
    /// key in the json), so the key is ignored here too.
    pub background_color: [u8; 3],
}

impl Default for ImageProcessorConfig {
    /// The values all released Janus checkpoints ship (SigLIP 384, mean = std = 0.5).
    fn default() -> Self {
        Self {
            image_size: 384,
            min_size: 14,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            background_color: [127; 3],
        }
    }
}

impl ImageProcessorConfig {
    /// Loads `preprocessor_config.json`, checking that the values are usable.
    pub fn load(path: &Path) -> Result<Self, ProcessorError> {
        let raw: RawImageProcessorConfig = read_json(path)?;
        let invalid = |message: String| ProcessorError::Config {
            path: path.into(),
            message,
        };
        let per_channel = |v: Option<PerChannel>, name: &str| match v {
            Some(PerChannel::One(x)) => Ok(Some([x; 3])),
            Some(PerChannel::Many(v)) if v.len() == 3 => Ok(Some([v[0], v[1], v[2]])),
            Some(PerChannel::Many(v)) => Err(invalid(format!(
                "{name} has {} values, expected 3",
                v.len()
            ))),
            None => Ok(None),
        };
        let mean = per_channel(raw.image_mean, "image_mean")?;
        let std = per_channel(raw.image_std, "image_std")?;
        let image_size = match (raw.image_size, raw.size) {
            (Some(side), _) => side,
            (None, Some(ImageSize { height, width })) => match (height, width) {
                (Some(h), Some(w)) if h == w => h,
                (Some(side), None) | (None, Some(side)) => side,
                _ => {
                    return Err(invalid(format!(
                        "size {height:?}x{width:?} is not a square side (Janus pads to a square)"
                    )));
                }
            },
            (None, None) => 384,
        };
        if image_size == 0 {
            return Err(invalid("image_size must be positive".into()));
        }
        if raw.min_size > image_size {
            // The padded canvas would exceed image_size and no longer batch.
            return Err(invalid(format!(
                "min_size {} exceeds image_size {image_size}",
                raw.min_size
            )));
        }
        if raw.do_normalize && (mean.is_none() || std.is_none()) {
            return Err(invalid(
                "do_normalize needs image_mean and image_std".into(),
            ));
        }
        let std_v = std.unwrap_or([1.0; 3]);
        if raw.do_normalize && std_v.contains(&0.0) {
            return Err(invalid("image_std must be non-zero".into()));
        }
        let background_color = match mean {
            // Python `int(x * 255)` truncates toward zero; PIL clamps colours into u8.
            Some(m) => m.map(|x| (x * 255.0).trunc().clamp(0.0, 255.0) as u8),
            None => [127; 3],
        };
        Ok(Self {
            image_size,
            min_size: raw.min_size,
            image_mean: mean.unwrap_or([0.0; 3]),
            image_std: std_v,
            rescale_factor: raw.rescale_factor,
            do_normalize: raw.do_normalize,
            background_color,
        })
    }
}

impl ImageProcessorConfig {
    /// `preprocessor_config.json` text in `layout`.
    pub fn to_json(&self, layout: ModelLayout) -> String {
        let mut value = json!({
            "min_size": self.min_size,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
        });
        let map = value.as_object_mut().expect("object");
        match layout {
            ModelLayout::Original => {
                map.insert("image_processor_type".into(), json!("VLMImageProcessor"));
                map.insert("processor_class".into(), json!("VLChatProcessor"));
                map.insert("image_size".into(), json!(self.image_size));
            }
            ModelLayout::Hf => {
                map.insert("image_processor_type".into(), json!("JanusImageProcessor"));
                map.insert("processor_class".into(), json!("JanusProcessor"));
                map.insert(
                    "size".into(),
                    json!({"height": self.image_size, "width": self.image_size}),
                );
                map.insert("background_color".into(), json!(self.background_color));
                map.insert("do_resize".into(), json!(true));
                map.insert("do_rescale".into(), json!(true));
                map.insert("do_pad".into(), json!(true));
                map.insert("do_convert_rgb".into(), json!(true));
                // PIL's BICUBIC.
                map.insert("resample".into(), json!(3));
            }
        }
        serde_json::to_string_pretty(&value).expect("a JSON value serialises")
    }
}

/// The parts of `tokenizer_config.json` / `special_tokens_map.json` the processor uses.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RawTokenizerConfig {
    pub add_bos_token: Option<bool>,
    pub add_eos_token: Option<bool>,
    pub bos_token: Option<TokenSpec>,
    pub eos_token: Option<TokenSpec>,
}

/// A special token given as a bare string or as an `AddedToken` object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum TokenSpec {
    Text(String),
    Added { content: String },
}

impl TokenSpec {
    pub(crate) fn content(&self) -> &str {
        match self {
            TokenSpec::Text(s) => s,
            TokenSpec::Added { content } => content,
        }
    }
}
