//! Request and response bodies, in the OpenAI API's shapes. Unknown request fields are ignored.

use serde::{Deserialize, Serialize};

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChatCompletionRequest {
    /// Ignored: the server serves one model.
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation, oldest first; the last one is the user's question.
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate (the older name).
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Most tokens to generate (the newer name; wins over `max_tokens`).
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    /// Sampling temperature; `0` is greedy. Default: the model's recommendation.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling threshold in `(0, 1]`.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Keep only the `k` most likely tokens (an extension).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Seed of the sampler.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Stop strings: one or a list.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Number of choices; only 1 is served.
    #[serde(default)]
    pub n: Option<u64>,
}

/// `stop`: a string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with `usage` before `[DONE]`.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// One message of the conversation.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// A string or a list of parts; absent or null is empty.
    #[serde(default)]
    pub content: Option<MessageContent>,
}

/// A message's content.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Text and image parts.
    Parts(Vec<ContentPart>),
}

/// One part of a message: `{"type":"text","text":...}` or
/// `{"type":"image_url","image_url":{"url":"data:image/png;base64,..."}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPart {
    /// `text` or `image_url`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text part.
    #[serde(default)]
    pub text: Option<String>,
    /// The image of an image part.
    #[serde(default)]
    pub image_url: Option<ImageUrl>,
}

/// An image reference; only `data:` URLs of PNG or JPEG images are accepted.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageUrl {
    /// `data:image/png;base64,...` or `data:image/jpeg;base64,...`.
    pub url: String,
}

/// `chat.completion`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// `chatcmpl-...`.
    pub id: String,
    /// Always `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model's id.
    pub model: String,
    /// One choice.
    pub choices: Vec<Choice>,
    /// Token counts.
    pub usage: Usage,
}

/// A complete choice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Choice {
    /// Always 0.
    pub index: u32,
    /// The answer.
    pub message: AssistantMessage,
    /// `stop` or `length`.
    pub finish_reason: String,
    /// Always null.
    pub logprobs: Option<()>,
}

/// The assistant's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// Token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens, image tokens included.
    pub prompt_tokens: usize,
    /// Generated tokens (the end-of-sentence token not counted).
    pub completion_tokens: usize,
    /// Their sum.
    pub total_tokens: usize,
}

impl Usage {
    /// Counts with their sum.
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// `chat.completion.chunk`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// The same id in every chunk of an answer.
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds, the same in every chunk.
    pub created: u64,
    /// The served model's id.
    pub model: String,
    /// One choice, or none in the usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Null, except in the usage chunk when `stream_options.include_usage` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

/// A streamed choice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Always 0.
    pub index: u32,
    /// What is new.
    pub delta: Delta,
    /// Null until the last chunk: `stop` or `length`.
    pub finish_reason: Option<String>,
    /// Always null.
    pub logprobs: Option<()>,
}

/// The new part of a streamed answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Delta {
    /// `assistant` in the first chunk only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `list`.
    pub object: String,
    /// The one served model.
    pub data: Vec<ModelCard>,
}

/// A model entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    /// Its name.
    pub id: String,
    /// Always `model`.
    pub object: String,
    /// Unix seconds when it was loaded.
    pub created: u64,
    /// Always `janus-rs`.
    pub owned_by: String,
}

/// `POST /v1/images/generations` (and the progress endpoint, which takes the same body).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageGenerationRequest {
    /// What to draw.
    pub prompt: String,
    /// Ignored: the server serves one model.
    #[serde(default)]
    pub model: Option<String>,
    /// Images to draw (default 1).
    #[serde(default)]
    pub n: Option<u64>,
    /// Absent, `auto`, or the model's own size (`384x384` for the released models).
    #[serde(default)]
    pub size: Option<String>,
    /// `b64_json` (default) or `url`.
    #[serde(default)]
    pub response_format: Option<String>,
    /// Classifier-free guidance weight. Default: the model's recommendation.
    #[serde(default)]
    pub cfg_weight: Option<f64>,
    /// Sampling temperature over the guided logits.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Seed of the sampler.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Keep only the `k` most likely codes.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Nucleus threshold over codes.
    #[serde(default)]
    pub top_p: Option<f64>,
}

/// The answer of `POST /v1/images/generations`; `size` is not echoed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImagesResponse {
    /// Unix seconds.
    pub created: u64,
    /// One entry per image.
    pub data: Vec<ImageData>,
}

/// One generated image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageData {
    /// The PNG, base64 without a `data:` prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b64_json: Option<String>,
    /// Where the PNG is served from memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}
