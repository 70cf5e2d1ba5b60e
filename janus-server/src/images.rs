//! Text-to-image: `POST /v1/images/generations` (OpenAI's shape), its progress twin
//! `POST /janus/v1/images/generations` (server-sent events), and the in-memory PNG store behind
//! `response_format: "url"`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use janus_core::{GenerationOptions, SamplingOptions};
use serde_json::json;

use crate::api::{ImageData, ImageGenerationRequest, ImagesResponse};
use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::http::JsonBody;
use crate::worker::{Event, ModelInfo, Work, unix_now};
use crate::{AppState, random_id};

/// Generated PNGs kept in memory for URL answers, oldest dropped first.
#[derive(Debug, Default)]
pub(crate) struct ImageStore {
    capacity: usize,
    files: HashMap<String, Arc<Vec<u8>>>,
    order: VecDeque<String>,
}

impl ImageStore {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    /// Keeps `png` and returns its id.
    fn insert(&mut self, png: Vec<u8>) -> String {
        let id = random_id();
        while self.order.len() >= self.capacity.max(1) {
            if let Some(old) = self.order.pop_front() {
                self.files.remove(&old);
            }
        }
        self.files.insert(id.clone(), Arc::new(png));
        self.order.push_back(id.clone());
        id
    }

    fn get(&self, id: &str) -> Option<Arc<Vec<u8>>> {
        self.files.get(id).cloned()
    }
}

/// The generation options of a request, over the model's recommendations.
fn generation_options(
    request: &ImageGenerationRequest,
    info: &ModelInfo,
    config: &ServerConfig,
) -> Result<GenerationOptions, ApiError> {
    if request.prompt.trim().is_empty() {
        return Err(ApiError::bad_request("the prompt is empty").with_param("prompt"));
    }
    let n = request.n.unwrap_or(1);
    if n == 0 || n > config.max_images_per_generation as u64 {
        return Err(ApiError::bad_request(format!(
            "n must be between 1 and {}",
            config.max_images_per_generation
        ))
        .with_param("n"));
    }
    let own = format!("{0}x{0}", info.image_size);
    match request.size.as_deref() {
        None | Some("auto") => {}
        Some(s) if s == own => {}
        Some(s) => {
            return Err(ApiError::bad_request(format!(
                "size `{s}` is not available: this model draws {own} (or pass `auto`)"
            ))
            .with_param("size"));
        }
    }
    let d = &info.image_defaults;
    let options = GenerationOptions {
        parallel_size: n as usize,
        cfg_weight: request.cfg_weight.unwrap_or(d.cfg_weight),
        sampling: SamplingOptions {
            temperature: request.temperature.unwrap_or(d.sampling.temperature),
            top_k: request.top_k.or(d.sampling.top_k),
            top_p: request.top_p.or(d.sampling.top_p),
            seed: request.seed.map_or(d.sampling.seed, |s| s as u64),
        },
    };
    options.validate().map_err(ApiError::from)?;
    Ok(options)
}

fn response_format(request: &ImageGenerationRequest) -> Result<bool, ApiError> {
    match request.response_format.as_deref() {
        None | Some("b64_json") => Ok(false),
        Some("url") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "response_format `{other}` is not available: use b64_json or url"
        ))
        .with_param("response_format")),
    }
}

fn b64(png: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(png)
}

/// `POST /v1/images/generations`.
pub(crate) async fn generations(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<ImageGenerationRequest>,
) -> Result<Response, ApiError> {
    let info = state.model()?;
    let options = generation_options(&request, &info, &state.config)?;
    let as_url = response_format(&request)?;
    let (mut events, _) = state.worker.submit(Work::Images {
        prompt: request.prompt,
        options,
    })?;
    while let Some(event) = events.recv().await {
        match event {
            Event::Images(pngs) => {
                let data = if as_url {
                    let host = headers
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("localhost");
                    let mut store = state.images.lock().unwrap_or_else(|p| p.into_inner());
                    pngs.into_iter()
                        .map(|png| ImageData {
                            b64_json: None,
                            url: Some(format!(
                                "http://{host}/v1/images/files/{}.png",
                                store.insert(png)
                            )),
                        })
                        .collect()
                } else {
                    pngs.iter()
                        .map(|png| ImageData {
                            b64_json: Some(b64(png)),
                            url: None,
                        })
                        .collect()
                };
                return Ok(axum::Json(ImagesResponse {
                    created: unix_now(),
                    data,
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

/// `POST /janus/v1/images/generations`: the same request, answered as events `queued`
/// `{"position"}`, `progress` `{"done","total"}`, one `image` `{"index","b64_json"}` per image,
/// then `done` `{"created","count"}`, or `error` with the usual error body.
pub(crate) async fn generations_with_progress(
    State(state): State<Arc<AppState>>,
    JsonBody(request): JsonBody<ImageGenerationRequest>,
) -> Result<Response, ApiError> {
    let info = state.model()?;
    let options = generation_options(&request, &info, &state.config)?;
    response_format(&request)?;
    let (mut events, position) = state.worker.submit(Work::Images {
        prompt: request.prompt,
        options,
    })?;
    let stream = async_stream::stream! {
        let data = |name: &str, value: serde_json::Value| -> Result<SseEvent, Infallible> {
            Ok(SseEvent::default().event(name).data(value.to_string()))
        };
        yield data("queued", json!({ "position": position }));
        while let Some(event) = events.recv().await {
            match event {
                Event::Progress { done, total } => {
                    yield data("progress", json!({ "done": done, "total": total }));
                }
                Event::Images(pngs) => {
                    for (index, png) in pngs.iter().enumerate() {
                        yield data("image", json!({ "index": index, "b64_json": b64(png) }));
                    }
                    yield data("done", json!({ "created": unix_now(), "count": pngs.len() }));
                    return;
                }
                Event::Failed(e) => {
                    yield data("error", e.body());
                    return;
                }
                _ => {}
            }
        }
    };
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(state.config.keep_alive))
        .into_response())
}

/// `GET /v1/images/files/{id}.png`.
pub(crate) async fn file(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let png = name
        .strip_suffix(".png")
        .and_then(|id| {
            state
                .images
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(id)
        })
        .ok_or_else(|| {
            ApiError::not_found("no such image (images are kept in memory for a while only)")
        })?;
    let mut response = png.as_ref().clone().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    Ok(response)
}
