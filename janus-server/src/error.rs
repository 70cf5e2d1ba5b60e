//! The one error shape of every endpoint: `{"error":{"message","type","param","code"}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use janus_core::JanusError;
use janus_core::processor::ProcessorError;
use serde::Serialize;

/// An error answered to a client, with its HTTP status.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// OpenAI's error `type`: `invalid_request_error`, `authentication_error`, `server_error`...
    pub kind: &'static str,
    /// The request field at fault, when there is one (`messages[0].content[1].image_url.url`).
    pub param: Option<String>,
    /// A machine-readable code (`invalid_api_key`, `context_length_exceeded`...).
    pub code: Option<&'static str>,
    /// Seconds for a `Retry-After` header (503 answers).
    pub retry_after: Option<u64>,
}

/// The JSON body of an error.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: ErrorObject<'a>,
}

/// The `error` object, in OpenAI's field names.
#[derive(Debug, Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400: the request cannot be served as written.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 401: a key is required and this one is missing or wrong.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "missing or incorrect API key: send `Authorization: Bearer <key>`",
        )
        .with_code("invalid_api_key")
    }

    /// 404: no such route or resource.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", message).with_code("not_found")
    }

    /// 413: the body is over the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("request body is larger than the limit of {limit} bytes"),
        )
        .with_code("request_too_large")
    }

    /// 415: the body is not JSON.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "expected a JSON body with `Content-Type: application/json`",
        )
        .with_code("unsupported_media_type")
    }

    /// 503 with `Retry-After`: the server cannot take the job now.
    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message);
        e.retry_after = Some(retry_after);
        e
    }

    /// 500: something failed on the server's side.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// Names the request field at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Sets the machine-readable code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The JSON body, also sent as the data of SSE `error` events.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(ErrorBody {
            error: ErrorObject {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        })
        .expect("plain strings serialise")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<JanusError> for ApiError {
    /// Errors caused by the request's content are 400s; everything else is the server's fault.
    fn from(e: JanusError) -> Self {
        match &e {
            JanusError::PromptTooLong { .. } => {
                Self::bad_request(e.to_string()).with_code("context_length_exceeded")
            }
            JanusError::InvalidOption(_)
            | JanusError::EmptyPrompt { .. }
            | JanusError::ImageTokenMismatch { .. }
            | JanusError::Llm(_) => Self::bad_request(e.to_string()),
            JanusError::Processor(p) => p.clone_into_api(),
            // The served model cannot do what was asked: the client's to change, not ours.
            JanusError::QuantRefusedForGeneration { .. } => {
                Self::bad_request(e.to_string()).with_code("model_refuses_generation")
            }
            _ => Self::internal(e.to_string()),
        }
    }
}

impl From<ProcessorError> for ApiError {
    fn from(e: ProcessorError) -> Self {
        e.clone_into_api()
    }
}

/// Maps a processor error without consuming it.
trait ProcessorErrorExt {
    fn clone_into_api(&self) -> ApiError;
}

impl ProcessorErrorExt for ProcessorError {
    fn clone_into_api(&self) -> ApiError {
        match self {
            ProcessorError::PromptTooLong { .. } => {
                ApiError::bad_request(self.to_string()).with_code("context_length_exceeded")
            }
            ProcessorError::EmptyConversation
            | ProcessorError::ImageCountMismatch { .. }
            | ProcessorError::ImageDecode { .. }
            | ProcessorError::InvalidImageSize { .. }
            | ProcessorError::Tokenizer(_)
            | ProcessorError::InvalidInput(_) => ApiError::bad_request(self.to_string()),
            _ => ApiError::internal(self.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_generation_is_the_clients_400_and_names_the_reason() {
        let e = ApiError::from(JanusError::QuantRefusedForGeneration {
            scheme: janus_core::QuantScheme::Q4K,
            reason: "its generation gate failed".into(),
        });
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.code, Some("model_refuses_generation"));
        assert!(
            e.message.contains("generation gate failed"),
            "{}",
            e.message
        );
        let internal = ApiError::from(JanusError::Cancelled);
        assert_eq!(internal.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
