//! What a server is allowed to do: its limits, key and queue.

use std::time::Duration;

/// Settings of a [`Server`](crate::Server).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The model's name in `/v1/models` and in every answer (e.g. the directory's name).
    pub model_id: String,
    /// When set, every route but `/`, `/health` and the image files needs
    /// `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Jobs that may wait for the worker; one more is refused with 503 and `Retry-After`.
    pub queue_capacity: usize,
    /// Largest request body in bytes (413 above).
    pub max_body_bytes: usize,
    /// Most images in one chat request.
    pub max_images_per_request: usize,
    /// Largest width or height of an uploaded image, read from its header before decoding.
    pub max_image_side: u32,
    /// Largest `width · height` of an uploaded image.
    pub max_image_pixels: u64,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens_cap: usize,
    /// Largest `n` of an image request.
    pub max_images_per_generation: usize,
    /// Generated images kept in memory for `response_format: "url"` (oldest dropped first).
    pub stored_images: usize,
    /// Interval of SSE keep-alive comments.
    pub keep_alive: Duration,
    /// The `Retry-After` seconds of a 503.
    pub retry_after_secs: u64,
    /// Print one line per finished job on stderr (kind, outcome, time; never the content).
    pub log_jobs: bool,
    /// Fault injection for tests; leave at the default.
    pub hooks: TestHooks,
}

impl ServerConfig {
    /// The defaults for a model called `model_id`.
    pub fn new(model_id: impl Into<String>) -> Self {
        Self {
            model_id: model_id.into(),
            api_key: None,
            queue_capacity: 16,
            max_body_bytes: 20 * 1024 * 1024,
            max_images_per_request: 4,
            max_image_side: 4096,
            max_image_pixels: 4096 * 4096,
            max_tokens_cap: 4096,
            max_images_per_generation: 8,
            stored_images: 256,
            keep_alive: Duration::from_secs(10),
            retry_after_secs: 1,
            log_jobs: false,
            hooks: TestHooks::default(),
        }
    }

    /// Sets [`api_key`](Self::api_key).
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Sets [`queue_capacity`](Self::queue_capacity).
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }
}

/// Ways for tests to make the worker misbehave on purpose.
#[derive(Debug, Clone, Default)]
pub struct TestHooks {
    /// A chat job whose last user text equals this panics inside the worker.
    pub panic_on: Option<String>,
    /// Sleep this long at every streamed piece or image progress step (slow jobs on demand).
    pub step_delay: Option<Duration>,
}
