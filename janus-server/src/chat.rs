//! `POST /v1/chat/completions`: OpenAI messages → the model's own conversation template, answered
//! whole or streamed as `chat.completion.chunk` events.

use std::convert::Infallible;
use std::io::Cursor;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use image::{ImageFormat, ImageReader, Limits, RgbImage};
use janus_core::processor::Message;
use janus_core::{AnswerOptions, ChatRoles, SamplingOptions, StopReason};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::{
    AssistantMessage, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice,
    ChunkChoice, Delta, MessageContent, Stop, Usage,
};
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::http::JsonBody;
use crate::worker::{Event, ModelInfo, Work};
use crate::{AppState, random_id};

/// A conversation ready for the model, with its decoded images and prompt length.
#[derive(Debug)]
pub(crate) struct PreparedChat {
    /// The model's template messages, ending with the assistant cue.
    pub conversation: Vec<Message>,
    /// One image per placeholder, in order.
    pub images: Vec<RgbImage>,
    /// Prompt tokens, image tokens included.
    pub prompt_tokens: usize,
}

/// One turn being assembled: same-role messages in a row are joined.
struct Turn {
    user: bool,
    text: Vec<String>,
    images: usize,
}

/// Builds the model's conversation from OpenAI messages and decodes their images.
///
/// `system` and `developer` messages are dropped: janus-core always applies the model's own
/// system prompt, which is what the model was trained with. The others must alternate from a
/// user turn to a last user turn (several messages of one role in a row are joined by newlines).
/// A user turn's images become one placeholder line each before its text.
///
/// # Errors
///
/// 400 for an unknown role or part type, a bad data URL, an image that is not PNG or JPEG or is
/// over the size limits, too many images, or a prompt that leaves no room for an answer.
pub(crate) fn prepare_chat(
    request: &ChatCompletionRequest,
    info: &ModelInfo,
    config: &ServerConfig,
) -> Result<PreparedChat, ApiError> {
    let mut turns: Vec<Turn> = Vec::new();
    let mut images = Vec::new();
    for (i, message) in request.messages.iter().enumerate() {
        let user = match message.role.as_str() {
            "system" | "developer" => continue,
            "user" => true,
            "assistant" => false,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unsupported role `{other}`: use system, user or assistant"
                ))
                .with_param(format!("messages[{i}].role")));
            }
        };
        let mut text = Vec::new();
        let mut count = 0;
        match &message.content {
            None => {}
            Some(MessageContent::Text(t)) => text.push(t.clone()),
            Some(MessageContent::Parts(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    let param = format!("messages[{i}].content[{j}]");
                    match (part.kind.as_str(), &part.text, &part.image_url) {
                        ("text", Some(t), _) => text.push(t.clone()),
                        ("image_url", _, Some(url)) if user => {
                            if images.len() == config.max_images_per_request {
                                return Err(ApiError::bad_request(format!(
                                    "too many images: at most {} per request",
                                    config.max_images_per_request
                                ))
                                .with_param(param));
                            }
                            let image = decode_data_url(&url.url, config).map_err(|m| {
                                ApiError::bad_request(m).with_param(param + ".image_url.url")
                            })?;
                            images.push(image);
                            count += 1;
                        }
                        ("image_url", _, Some(_)) => {
                            return Err(ApiError::bad_request(
                                "images are accepted in user messages only",
                            )
                            .with_param(param));
                        }
                        (kind, _, _) => {
                            return Err(ApiError::bad_request(format!(
                                "unsupported content part `{kind}` (or its field is missing): use text or image_url"
                            ))
                            .with_param(param));
                        }
                    }
                }
            }
        }
        match turns.last_mut() {
            Some(turn) if turn.user == user => {
                turn.text.extend(text);
                turn.images += count;
            }
            _ => turns.push(Turn {
                user,
                text,
                images: count,
            }),
        }
    }
    if turns.first().is_none_or(|t| !t.user) || turns.last().is_some_and(|t| !t.user) {
        return Err(ApiError::bad_request(
            "the conversation must start with a user message and end with one",
        )
        .with_param("messages"));
    }
    // An empty turn would read as the template's answer cue.
    if let Some(i) = turns
        .iter()
        .position(|t| t.images == 0 && t.text.iter().all(|x| x.trim().is_empty()))
    {
        return Err(
            ApiError::bad_request(format!("turn {i} of the conversation is empty"))
                .with_param("messages"),
        );
    }
    let roles: ChatRoles = info.processor.roles();
    let placeholder = &info.processor.config().image_tag;
    let mut conversation: Vec<Message> = turns
        .iter()
        .map(|t| {
            let text = t.text.join("\n");
            if t.user {
                roles.user_turn(&text, t.images, placeholder)
            } else {
                roles.assistant_turn(text)
            }
        })
        .collect();
    conversation.push(roles.assistant_cue());
    let prompt = info.processor.understanding_prompt(&conversation)?;
    let ids = info.processor.encode(&prompt)?;
    let prompt_tokens = info
        .processor
        .expand_image_tokens(&ids, images.len())?
        .len();
    if prompt_tokens >= info.context {
        return Err(ApiError::bad_request(format!(
            "the prompt has {prompt_tokens} tokens, which leaves no room for an answer in the model's context of {}",
            info.context
        ))
        .with_param("messages")
        .with_code("context_length_exceeded"));
    }
    Ok(PreparedChat {
        conversation,
        images,
        prompt_tokens,
    })
}

/// Decodes a `data:image/png;base64,...` or `data:image/jpeg;base64,...` URL. The dimensions are
/// read from the header and checked before any pixel is allocated.
fn decode_data_url(url: &str, config: &ServerConfig) -> Result<RgbImage, String> {
    let rest = url.strip_prefix("data:").ok_or(
        "only data: URLs are accepted (data:image/png;base64,... or data:image/jpeg;base64,...); the server fetches nothing",
    )?;
    let (meta, data) = rest
        .split_once(',')
        .ok_or("malformed data URL: no comma before the data")?;
    let mut fields = meta.split(';');
    let mime = fields.next().unwrap_or_default().to_ascii_lowercase();
    if !matches!(mime.as_str(), "image/png" | "image/jpeg" | "image/jpg") {
        return Err(format!(
            "unsupported image type `{mime}`: use image/png or image/jpeg"
        ));
    }
    if !fields.any(|f| f.eq_ignore_ascii_case("base64")) {
        return Err("the data URL must be base64-encoded (`;base64,`)".into());
    }
    let compact: Vec<u8> = data.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|e| format!("the data URL's base64 does not decode: {e}"))?;
    let reader = || {
        ImageReader::new(Cursor::new(&bytes[..]))
            .with_guessed_format()
            .map_err(|e| format!("cannot read the image: {e}"))
    };
    let format = reader()?.format();
    if !matches!(format, Some(ImageFormat::Png | ImageFormat::Jpeg)) {
        return Err("the image is not a PNG or JPEG file".into());
    }
    let (width, height) = reader()?
        .into_dimensions()
        .map_err(|e| format!("cannot read the image header: {e}"))?;
    let side = config.max_image_side;
    if width == 0 || height == 0 {
        return Err(format!("the image has no pixels ({width}x{height})"));
    }
    if width > side
        || height > side
        || u64::from(width) * u64::from(height) > config.max_image_pixels
    {
        return Err(format!(
            "the image is {width}x{height}; at most {side} pixels a side and {} in all are accepted",
            config.max_image_pixels
        ));
    }
    let mut reader = reader()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    reader.limits(limits);
    let image = reader
        .decode()
        .map_err(|e| format!("cannot decode the image: {e}"))?;
    // Alpha dropped, grey replicated: what janus-core's own loader does (PIL's convert("RGB")).
    Ok(image.to_rgb8())
}

/// The answer options of a request, over the model's recommendations.
fn answer_options(
    request: &ChatCompletionRequest,
    info: &ModelInfo,
    config: &ServerConfig,
) -> Result<AnswerOptions, ApiError> {
    if request.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request("only n = 1 is supported").with_param("n"));
    }
    let defaults = &info.answer_defaults;
    let (max, param) = match (request.max_completion_tokens, request.max_tokens) {
        (Some(m), _) => (m, "max_completion_tokens"),
        (None, Some(m)) => (m, "max_tokens"),
        (None, None) => (
            defaults.max_new_tokens.min(config.max_tokens_cap) as u64,
            "max_tokens",
        ),
    };
    if max == 0 || max > config.max_tokens_cap as u64 {
        return Err(ApiError::bad_request(format!(
            "{param} must be between 1 and {}",
            config.max_tokens_cap
        ))
        .with_param(param));
    }
    let sampling = SamplingOptions {
        temperature: request.temperature.unwrap_or(defaults.sampling.temperature),
        top_k: request.top_k.or(defaults.sampling.top_k),
        top_p: request.top_p.or(defaults.sampling.top_p),
        seed: request.seed.map_or(defaults.sampling.seed, |s| s as u64),
    };
    sampling
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let stop_strings = match &request.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    if stop_strings.len() > 4 {
        return Err(ApiError::bad_request("at most 4 stop strings").with_param("stop"));
    }
    Ok(AnswerOptions {
        max_new_tokens: max as usize,
        sampling,
        stop_strings: stop_strings.into_iter().filter(|s| !s.is_empty()).collect(),
    })
}

/// OpenAI's name for why an answer ended.
fn finish_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::MaxNewTokens | StopReason::ContextFull => "length",
        StopReason::Eos | StopReason::StopString | StopReason::Cancelled => "stop",
    }
}

/// The handler.
pub(crate) async fn chat_completions(
    State(state): State<Arc<AppState>>,
    JsonBody(request): JsonBody<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let info = state.model()?;
    let options = answer_options(&request, &info, &state.config)?;
    let stream = request.stream.unwrap_or(false);
    let include_usage = request
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let config = state.config.clone();
    let prepared = tokio::task::spawn_blocking(move || prepare_chat(&request, &info, &config))
        .await
        .map_err(|_| ApiError::internal("preparing the request failed"))??;
    let prompt_tokens = prepared.prompt_tokens;
    let (events, _) = state.worker.submit(Work::Chat {
        conversation: prepared.conversation,
        images: prepared.images,
        options,
    })?;
    let id = format!("chatcmpl-{}", random_id());
    let created = crate::worker::unix_now();
    let model = state.config.model_id.clone();
    if stream {
        let chunks = ChunkStream {
            id,
            created,
            model,
            include_usage,
            prompt_tokens,
        };
        let body = chunks.into_stream(events);
        Ok(Sse::new(body)
            .keep_alive(KeepAlive::new().interval(state.config.keep_alive))
            .into_response())
    } else {
        let mut events = events;
        while let Some(event) = events.recv().await {
            match event {
                Event::Answer {
                    text,
                    stop,
                    completion_tokens,
                } => {
                    return Ok(axum::Json(ChatCompletion {
                        id,
                        object: "chat.completion".into(),
                        created,
                        model,
                        choices: vec![Choice {
                            index: 0,
                            message: AssistantMessage {
                                role: "assistant".into(),
                                content: text,
                            },
                            finish_reason: finish_reason(stop).into(),
                            logprobs: None,
                        }],
                        usage: Usage::new(prompt_tokens, completion_tokens),
                    })
                    .into_response());
                }
                Event::Failed(e) => return Err(e),
                _ => {}
            }
        }
        Err(ApiError::unavailable(
            "the job was stopped",
            state.config.retry_after_secs,
        ))
    }
}

/// Turns the worker's events of one answer into OpenAI chunks.
struct ChunkStream {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    prompt_tokens: usize,
}

impl ChunkStream {
    fn chunk(&self, delta: Delta, finish: Option<StopReason>) -> SseEvent {
        self.event(
            vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish.map(|s| finish_reason(s).to_string()),
                logprobs: None,
            }],
            None,
        )
    }

    fn event(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> SseEvent {
        let chunk = ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: self.include_usage.then_some(usage),
        };
        SseEvent::default().data(serde_json::to_string(&chunk).expect("plain data serialises"))
    }

    /// The role chunk, the content chunks, the finishing chunk, the usage chunk when asked for,
    /// and `[DONE]`; an error event instead when the job fails.
    fn into_stream(
        self,
        mut events: UnboundedReceiver<Event>,
    ) -> impl tokio_stream::Stream<Item = Result<SseEvent, Infallible>> {
        async_stream::stream! {
            yield Ok(self.chunk(Delta { role: Some("assistant".into()), content: Some(String::new()) }, None));
            while let Some(event) = events.recv().await {
                match event {
                    Event::Text(piece) => {
                        yield Ok(self.chunk(Delta { role: None, content: Some(piece) }, None));
                    }
                    Event::Answer { stop, completion_tokens, .. } => {
                        yield Ok(self.chunk(Delta::default(), Some(stop)));
                        if self.include_usage {
                            yield Ok(self.event(Vec::new(), Some(Usage::new(self.prompt_tokens, completion_tokens))));
                        }
                        yield Ok(SseEvent::default().data("[DONE]"));
                        return;
                    }
                    Event::Failed(e) => {
                        yield Ok(SseEvent::default().data(e.body().to_string()));
                        return;
                    }
                    _ => {}
                }
            }
        }
    }
}
