//! The small handlers and the plumbing every route shares: the JSON body extractor (415, 413,
//! 400 in our error shape), the API-key check, the web page.

use std::sync::Arc;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio_stream::StreamExt;

use crate::AppState;
use crate::api::{ModelCard, ModelList};
use crate::error::ApiError;

/// A JSON request body read under the configured size limit.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let limit = state.config.max_body_bytes;
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            });
        if !json {
            return Err(ApiError::unsupported_media_type());
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::too_large(limit));
        }
        let mut body = Vec::new();
        let mut stream = req.into_body().into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::too_large(limit));
            }
            body.extend_from_slice(&chunk);
        }
        // serde's message names the line and column, never the payload.
        serde_json::from_slice(&body)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// Requires `Authorization: Bearer <key>` when a key is configured, except on the public
/// routes: the page, `/health`, and the image files (their ids are unguessable).
pub(crate) async fn require_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(key) = &state.config.api_key else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    let public = path == "/" || path == "/health" || path.starts_with("/v1/images/files/");
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if public || given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes())) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /health`: 200 once the model is loaded, 503 before.
pub(crate) async fn health(State(state): State<Arc<AppState>>) -> Response {
    let m = state.worker.metrics();
    let status = if m.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if m.ready { "ok" } else { "loading" },
        "model": state.config.model_id,
    });
    (status, axum::Json(body)).into_response()
}

fn card(state: &AppState) -> ModelCard {
    ModelCard {
        id: state.config.model_id.clone(),
        object: "model".into(),
        created: state.created(),
        owned_by: "janus-rs".into(),
    }
}

/// `GET /v1/models`.
pub(crate) async fn models(State(state): State<Arc<AppState>>) -> axum::Json<ModelList> {
    axum::Json(ModelList {
        object: "list".into(),
        data: vec![card(&state)],
    })
}

/// `GET /v1/models/{id}`.
pub(crate) async fn model(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<axum::Json<ModelCard>, ApiError> {
    if id == state.config.model_id {
        Ok(axum::Json(card(&state)))
    } else {
        Err(ApiError::not_found(format!("no model `{id}`")).with_param("model"))
    }
}

/// `GET /janus/v1/status`: the worker's counters.
pub(crate) async fn status(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(state.worker.metrics()).into_response()
}

/// Any other route.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

const PAGE: &str = include_str!("page.html");

/// `GET /`: the web page, its inline script and style allowed by a per-response nonce only.
pub(crate) async fn page() -> Response {
    let nonce = crate::random_id();
    let html = PAGE.replace("{{nonce}}", &nonce);
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    );
    let mut response = axum::response::Html(html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&csp).expect("ASCII"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
