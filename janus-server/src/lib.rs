#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod api;
mod chat;
pub mod config;
pub mod error;
mod http;
mod images;
pub mod worker;

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::routing::{get, post};
use janus_core::{Janus, JanusError};
use tokio::sync::watch;

pub use config::{ServerConfig, TestHooks};
pub use error::ApiError;
pub use worker::{Metrics, ModelInfo};

use images::ImageStore;
use worker::Worker;

/// Where loading the model stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LoadState {
    Loading,
    Ready,
    Failed(String),
}

/// What every handler shares.
pub(crate) struct AppState {
    config: ServerConfig,
    worker: Worker,
    info: OnceLock<Arc<ModelInfo>>,
    images: Mutex<ImageStore>,
    load: watch::Sender<LoadState>,
}

impl AppState {
    /// The loaded model's facts, or 503 while it loads.
    fn model(&self) -> Result<Arc<ModelInfo>, ApiError> {
        self.info.get().cloned().ok_or_else(|| {
            ApiError::unavailable("the model is still loading", self.config.retry_after_secs)
        })
    }

    /// When the model was loaded (0 before).
    fn created(&self) -> u64 {
        self.info.get().map_or(0, |i| i.created)
    }
}

/// An OpenAI-compatible server around one Janus model: build it from a [`ServerConfig`], serve
/// its [`router`](Server::router), and [`start`](Server::start) the worker that loads and owns
/// the model.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use janus_core::{Janus, LoadOptions, burn::tensor::Device};
/// use janus_server::{Server, ServerConfig};
///
/// let server = Server::new(ServerConfig::new("shapes-janus"));
/// server.start(|| Janus::load("models/shapes-janus", &LoadOptions::default(), &Device::flex()));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// axum::serve(listener, server.router()).await
/// # }
/// ```
#[derive(Clone)]
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    /// A server with no model yet: `/health` answers 503 until [`Server::start`] has loaded it.
    pub fn new(config: ServerConfig) -> Self {
        let worker = Worker::new(
            config.queue_capacity,
            config.retry_after_secs,
            config.hooks.clone(),
            config.log_jobs,
        );
        let images = Mutex::new(ImageStore::new(config.stored_images));
        Self {
            state: Arc::new(AppState {
                config,
                worker,
                info: OnceLock::new(),
                images,
                load: watch::Sender::new(LoadState::Loading),
            }),
        }
    }

    /// The settings it was built with.
    pub fn config(&self) -> &ServerConfig {
        &self.state.config
    }

    /// Every route: the page, `/health`, the OpenAI endpoints and the progress endpoint.
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        Router::new()
            .route("/", get(http::page))
            .route("/health", get(http::health))
            .route("/v1/models", get(http::models))
            .route("/v1/models/{id}", get(http::model))
            .route("/v1/chat/completions", post(chat::chat_completions))
            .route("/v1/images/generations", post(images::generations))
            .route("/v1/images/files/{file}", get(images::file))
            .route(
                "/janus/v1/images/generations",
                post(images::generations_with_progress),
            )
            .route("/janus/v1/status", get(http::status))
            .fallback(http::not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                http::require_key,
            ))
            .with_state(state)
    }

    /// Starts the worker thread: it runs `load` (so the model never leaves that thread), then
    /// serves jobs until [`Server::shutdown`].
    pub fn start<F>(&self, load: F) -> std::thread::JoinHandle<()>
    where
        F: FnOnce() -> Result<Janus, JanusError> + Send + 'static,
    {
        let state = self.state.clone();
        std::thread::Builder::new()
            .name("janus-worker".into())
            .spawn(move || match load() {
                Ok(janus) => {
                    let _ = state.info.set(Arc::new(ModelInfo::of(&janus)));
                    state.worker.set_ready();
                    state.load.send_replace(LoadState::Ready);
                    state.worker.serve(&janus);
                }
                Err(e) => {
                    state.load.send_replace(LoadState::Failed(e.to_string()));
                }
            })
            .expect("spawning a thread")
    }

    /// Waits until the model is loaded.
    ///
    /// # Errors
    ///
    /// The loader's error message when loading failed.
    pub async fn wait_ready(&self) -> Result<(), String> {
        let mut rx = self.state.load.subscribe();
        let state = rx
            .wait_for(|s| *s != LoadState::Loading)
            .await
            .map_err(|_| "the server was dropped".to_string())?
            .clone();
        match state {
            LoadState::Failed(e) => Err(e),
            _ => Ok(()),
        }
    }

    /// The worker's counters.
    pub fn metrics(&self) -> Metrics {
        self.state.worker.metrics()
    }

    /// Refuses new jobs (503), answers waiting ones with 503 and cancels the running one.
    pub fn shutdown(&self) {
        self.state.worker.shutdown();
    }
}

async fn method_not_allowed() -> ApiError {
    let mut e = ApiError::not_found("this route does not take that method");
    e.status = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    e.code = Some("method_not_allowed");
    e
}

/// 128 random bits as hex, for response and image ids. SipHash keyed from the OS's randomness
/// at process start (std's `RandomState`), over a counter: unguessable without the keys.
pub(crate) fn random_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEYS: OnceLock<(RandomState, RandomState)> = OnceLock::new();
    let (a, b) = KEYS.get_or_init(|| (RandomState::new(), RandomState::new()));
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}{:016x}", a.hash_one(n), b.hash_one(n))
}
