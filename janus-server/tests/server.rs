//! The server driven in-process (`tower::ServiceExt::oneshot`) and over real sockets, on the
//! tiny fixture model and the shipped shapes model.

use std::io::Cursor;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine;
use image::{ImageFormat, Rgb, RgbImage};
use janus_core::burn::tensor::Device;
use janus_core::{Janus, LoadOptions};
use janus_server::{Server, ServerConfig, TestHooks};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tiny() -> PathBuf {
    root().join("tests/fixtures/tiny-janus")
}

fn shapes() -> PathBuf {
    root().join("models/shapes-janus")
}

async fn start(dir: PathBuf, config: ServerConfig) -> Server {
    let server = Server::new(config);
    server.start(move || Janus::load(&dir, &LoadOptions::default(), &Device::flex()));
    server.wait_ready().await.expect("the model loads");
    server
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts the error shape and returns the error object.
    fn error(&self, status: StatusCode) -> Value {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        let v = self.json();
        let e = v["error"].clone();
        for key in ["message", "type", "param", "code"] {
            assert!(e.get(key).is_some(), "error without `{key}`: {v}");
        }
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
        e
    }

    /// The `data:` payloads of an SSE body, with their event names.
    fn events(&self) -> Vec<(String, String)> {
        parse_sse(&String::from_utf8_lossy(&self.body))
    }
}

fn parse_sse(text: &str) -> Vec<(String, String)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = "message".to_string();
            let mut data = None;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_string());
                }
            }
            data.map(|d| (name, d))
        })
        .collect()
}

async fn send(router: &Router, request: Request<Body>) -> Reply {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

fn post(uri: &str, body: &Value) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn png(image: &RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

fn data_url(image: &RgbImage) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png(image))
    )
}

/// A 32×32 shape on light grey, like the shapes model's training data.
fn shape(kind: &str, colour: [u8; 3]) -> RgbImage {
    RgbImage::from_fn(32, 32, |x, y| {
        let (dx, dy) = (x as i32 - 16, y as i32 - 16);
        let inside = match kind {
            "circle" => dx * dx + dy * dy <= 100,
            "square" => dx.abs() <= 9 && dy.abs() <= 9,
            _ => (6..=26).contains(&y) && dx.unsigned_abs() * 2 <= y - 6,
        };
        if inside {
            Rgb(colour)
        } else {
            Rgb([240, 240, 240])
        }
    })
}

fn red_circle() -> RgbImage {
    janus_core::processor::load_image(root().join("docs/red-circle.png")).unwrap()
}

fn ask(image: &RgbImage, question: &str) -> Value {
    json!({
        "model": "any",
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(image)}},
            {"type": "text", "text": question},
        ]}],
    })
}

async fn wait_for(server: &Server, what: &str, check: impl Fn(&janus_server::Metrics) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check(&server.metrics()) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            server.metrics()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_models_page_and_unknown_routes() {
    let server = start(tiny(), ServerConfig::new("tiny")).await;
    let router = server.router();
    let health = send(&router, get("/health")).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["status"], "ok");

    let models = send(&router, get("/v1/models")).await.json();
    assert_eq!(models["object"], "list");
    let card = &models["data"][0];
    assert_eq!(card["id"], "tiny");
    assert_eq!(card["object"], "model");
    assert!(card["created"].as_u64().unwrap() > 0);
    assert!(card["owned_by"].is_string());
    assert_eq!(
        send(&router, get("/v1/models/tiny")).await.json()["id"],
        "tiny"
    );
    send(&router, get("/v1/models/other"))
        .await
        .error(StatusCode::NOT_FOUND);

    let page = send(&router, get("/")).await;
    assert_eq!(page.status, StatusCode::OK);
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'nonce-"));
    let html = String::from_utf8(page.body).unwrap();
    assert!(html.contains("<html") && !html.contains("{{nonce}}"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no CDN"
    );

    send(&router, get("/nowhere"))
        .await
        .error(StatusCode::NOT_FOUND);
    send(&router, get("/v1/chat/completions"))
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED);
    let status = send(&router, get("/janus/v1/status")).await.json();
    assert_eq!(status["ready"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_until_the_model_is_loaded() {
    let server = Server::new(ServerConfig::new("tiny"));
    let router = server.router();
    let health = send(&router, get("/health")).await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    let chat = send(
        &router,
        post(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "hi"}]}),
        ),
    )
    .await;
    chat.error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(chat.headers.contains_key(header::RETRY_AFTER));
    let dir = tiny();
    server.start(move || Janus::load(&dir, &LoadOptions::default(), &Device::flex()));
    server.wait_ready().await.unwrap();
    assert_eq!(send(&router, get("/health")).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_answers_about_a_red_circle() {
    let server = start(shapes(), ServerConfig::new("shapes-janus")).await;
    let router = server.router();
    let reply = send(
        &router,
        post(
            "/v1/chat/completions",
            &ask(&red_circle(), "What is in the image?"),
        ),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let v = reply.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["model"], "shapes-janus");
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    // The answer starts at its first word: the server drops the space janus-core's decode keeps
    // after the template's "Assistant:".
    assert_eq!(
        choice["message"]["content"].as_str().unwrap(),
        "a red circle."
    );
    assert_eq!(choice["finish_reason"], "stop");
    let usage = &v["usage"];
    let (p, c) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert!(p > 64 && c > 0);
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), p + c);

    // A length-limited answer reports `length`.
    let mut short = ask(&red_circle(), "What is in the image?");
    short["max_tokens"] = json!(1);
    let v = send(&router, post("/v1/chat/completions", &short))
        .await
        .json();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 1);

    // Multi-turn: the history is templated as the model's own turns.
    let history = json!({"messages": [
        {"role": "system", "content": "ignored"},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(&red_circle())}},
            {"type": "text", "text": "What is in the image?"}]},
        {"role": "assistant", "content": "a red circle."},
        {"role": "user", "content": "What is in the image?"},
    ]});
    let reply = send(&router, post("/v1/chat/completions", &history)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.json()["choices"][0]["message"]["content"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streams_role_content_finish_usage_done() {
    let server = start(shapes(), ServerConfig::new("shapes-janus")).await;
    let router = server.router();
    let mut body = ask(&red_circle(), "What is in the image?");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let reply = send(&router, post("/v1/chat/completions", &body)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = reply.events();
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let id = chunks[0]["id"].clone();
    assert!(
        chunks
            .iter()
            .all(|c| c["id"] == id && c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let n = chunks.len();
    let text: String = chunks[1..n - 2]
        .iter()
        .map(|c| {
            assert!(c["choices"][0]["finish_reason"].is_null());
            assert!(c["usage"].is_null());
            c["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(text, "a red circle.");
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[n - 1]["choices"].as_array().unwrap().len(), 0);
    assert!(
        chunks[n - 1]["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    // Without include_usage there is no usage chunk and no usage field.
    body["stream_options"] = json!(null);
    let events = send(&router, post("/v1/chat/completions", &body))
        .await
        .events();
    let last: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(last.get("usage").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_its_status() {
    let mut config = ServerConfig::new("tiny");
    config.max_body_bytes = 64 * 1024;
    config.max_images_per_request = 1;
    config.max_image_side = 1024;
    let server = start(tiny(), config).await;
    let router = server.router();
    let chat = "/v1/chat/completions";
    let image = data_url(&shape("circle", [255, 0, 0]));

    let bad_json = Request::post(chat)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"messages\": ["))
        .unwrap();
    send(&router, bad_json).await.error(StatusCode::BAD_REQUEST);
    let wrong_shape = send(&router, post(chat, &json!({"messages": "hi"}))).await;
    wrong_shape.error(StatusCode::BAD_REQUEST);

    let not_json = Request::post(chat)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("hello"))
        .unwrap();
    send(&router, not_json)
        .await
        .error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let no_type = Request::post(chat).body(Body::from("{}")).unwrap();
    send(&router, no_type)
        .await
        .error(StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let huge = json!({"messages": [{"role": "user", "content": "x".repeat(100 * 1024)}]});
    send(&router, post(chat, &huge))
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE);

    let with_url = |url: &str| {
        json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What?"}]}]})
    };
    for url in [
        "https://example.com/cat.png",
        "/etc/passwd",
        "data:image/gif;base64,R0lGODlhAQABAAAAACw=",
        "data:image/png;base64,%%%not-base64%%%",
        "data:image/png,rawbytes",
        "data:image/png;base64,aGVsbG8gd29ybGQ=",
    ] {
        let e = send(&router, post(chat, &with_url(url)))
            .await
            .error(StatusCode::BAD_REQUEST);
        assert_eq!(e["param"], "messages[0].content[0].image_url.url", "{url}");
    }
    // Over the side limit, refused from the header.
    let wide = data_url(&RgbImage::new(2000, 1));
    let e = send(&router, post(chat, &with_url(&wide)))
        .await
        .error(StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("2000x1"), "{e}");

    let two = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image}},
        {"type": "image_url", "image_url": {"url": image}},
        {"type": "text", "text": "What?"}]}]});
    let e = send(&router, post(chat, &two))
        .await
        .error(StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("too many images"));

    let long = json!({"messages": [{"role": "user", "content": "a b c d ".repeat(400)}]});
    let e = send(&router, post(chat, &long))
        .await
        .error(StatusCode::BAD_REQUEST);
    assert_eq!(e["code"], "context_length_exceeded");

    let base = json!({"messages": [{"role": "user", "content": "hi"}]});
    for (field, value) in [
        ("n", json!(2)),
        ("max_tokens", json!(0)),
        ("max_tokens", json!(1_000_000)),
        ("temperature", json!(-1.0)),
        ("top_p", json!(0.0)),
    ] {
        let mut body = base.clone();
        body[field] = value;
        send(&router, post(chat, &body))
            .await
            .error(StatusCode::BAD_REQUEST);
    }
    for messages in [
        json!([]),
        json!([{"role": "assistant", "content": "hi"}]),
        json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]),
        json!([{"role": "tool", "content": "hi"}]),
        json!([{"role": "user", "content": "  "}]),
        json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}, {"role": "user", "content": "hi"}]),
        json!([{"role": "user", "content": [{"type": "input_audio"}]}]),
    ] {
        send(&router, post(chat, &json!({"messages": messages})))
            .await
            .error(StatusCode::BAD_REQUEST);
    }

    let images = "/v1/images/generations";
    for body in [
        json!({"prompt": "a red circle", "size": "1024x1024"}),
        json!({"prompt": "a red circle", "n": 0}),
        json!({"prompt": "a red circle", "n": 100}),
        json!({"prompt": "  "}),
        json!({"prompt": "a red circle", "response_format": "png"}),
        json!({"prompt": "a red circle", "cfg_weight": -1.0}),
    ] {
        send(&router, post(images, &body))
            .await
            .error(StatusCode::BAD_REQUEST);
        send(&router, post("/janus/v1/images/generations", &body))
            .await
            .error(StatusCode::BAD_REQUEST);
    }
    // Nothing reached the worker.
    let m = server.metrics();
    assert_eq!(m.completed + m.failed + m.cancelled, 0, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_guards_the_api_but_not_health_or_the_page() {
    let server = start(tiny(), ServerConfig::new("tiny").with_api_key("sesame")).await;
    let router = server.router();
    assert_eq!(send(&router, get("/health")).await.status, StatusCode::OK);
    assert_eq!(send(&router, get("/")).await.status, StatusCode::OK);
    let e = send(&router, get("/v1/models"))
        .await
        .error(StatusCode::UNAUTHORIZED);
    assert_eq!(e["code"], "invalid_api_key");
    let wrong = Request::get("/v1/models")
        .header(header::AUTHORIZATION, "Bearer open")
        .body(Body::empty())
        .unwrap();
    send(&router, wrong).await.error(StatusCode::UNAUTHORIZED);
    let mut chat = post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    );
    chat.headers_mut().remove(header::AUTHORIZATION);
    send(&router, chat).await.error(StatusCode::UNAUTHORIZED);
    let right = Request::get("/v1/models")
        .header(header::AUTHORIZATION, "Bearer sesame")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&router, right).await.status, StatusCode::OK);
}

fn decode_png(bytes: &[u8]) -> RgbImage {
    let image = image::load_from_memory_with_format(bytes, ImageFormat::Png).unwrap();
    image.to_rgb8()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_as_base64_and_as_urls() {
    let server = start(shapes(), ServerConfig::new("shapes-janus")).await;
    let router = server.router();
    let body = json!({"prompt": "a red circle", "n": 2, "seed": 1, "size": "32x32"});
    let reply = send(&router, post("/v1/images/generations", &body)).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let v = reply.json();
    assert!(v["created"].as_u64().unwrap() > 0);
    assert!(v.get("size").is_none());
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let first = base64::engine::general_purpose::STANDARD
        .decode(data[0]["b64_json"].as_str().unwrap())
        .unwrap();
    assert_eq!(decode_png(&first).dimensions(), (32, 32));

    // The same seed draws the same images; `auto` is the model's size.
    let mut again = body.clone();
    again["size"] = json!("auto");
    let v2 = send(&router, post("/v1/images/generations", &again))
        .await
        .json();
    assert_eq!(v2["data"], v["data"]);

    let url_body = json!({"prompt": "a blue square", "response_format": "url"});
    let v = send(&router, post("/v1/images/generations", &url_body))
        .await
        .json();
    let url = v["data"][0]["url"].as_str().unwrap();
    let path = url
        .split_once("/v1/")
        .map(|(_, p)| format!("/v1/{p}"))
        .unwrap();
    assert!(path.ends_with(".png"));
    let file = send(&router, get(&path)).await;
    assert_eq!(file.status, StatusCode::OK);
    assert_eq!(file.headers[header::CONTENT_TYPE], "image/png");
    assert_eq!(decode_png(&file.body).dimensions(), (32, 32));
    send(&router, get("/v1/images/files/0123.png"))
        .await
        .error(StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_endpoint_streams_queued_progress_images_done() {
    let server = start(shapes(), ServerConfig::new("shapes-janus")).await;
    let router = server.router();
    let body = json!({"prompt": "a green triangle", "n": 2});
    let events = send(&router, post("/janus/v1/images/generations", &body))
        .await
        .events();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "queued");
    assert_eq!(&names[names.len() - 3..], ["image", "image", "done"]);
    let progress: Vec<Value> = events
        .iter()
        .filter(|(n, _)| n == "progress")
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let total = progress[0]["total"].as_u64().unwrap();
    assert_eq!(total, 64);
    assert_eq!(progress.len() as u64, total);
    assert_eq!(progress.last().unwrap()["done"].as_u64().unwrap(), total);
    let image: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(image["index"], 1);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(image["b64_json"].as_str().unwrap())
        .unwrap();
    assert_eq!(decode_png(&bytes).dimensions(), (32, 32));
}

fn slow(step_ms: u64) -> ServerConfig {
    let mut config = ServerConfig::new("tiny");
    config.hooks = TestHooks {
        panic_on: Some("PANIC NOW".into()),
        step_delay: Some(Duration::from_millis(step_ms)),
    };
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after() {
    let server = start(tiny(), slow(30).with_queue_capacity(1)).await;
    let router = server.router();
    let job = json!({"prompt": "a red circle"});
    let running = router
        .clone()
        .oneshot(post("/janus/v1/images/generations", &job))
        .await
        .unwrap();
    wait_for(&server, "the first job to run", |m| m.running).await;
    let waiting = router
        .clone()
        .oneshot(post("/janus/v1/images/generations", &job))
        .await
        .unwrap();
    assert_eq!(waiting.status(), StatusCode::OK);
    let refused = send(
        &router,
        post(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "hi"}]}),
        ),
    )
    .await;
    refused.error(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers[header::RETRY_AFTER], "1");
    assert_eq!(server.metrics().rejected, 1);
    // Their clients leave: both jobs are cancelled and the worker is free again.
    drop((running, waiting));
    wait_for(&server, "both jobs cancelled", |m| {
        m.cancelled == 2 && !m.running
    })
    .await;
    let reply = send(
        &router,
        post(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_jobs_run_before_waiting_image_jobs() {
    let server = start(tiny(), slow(15)).await;
    let router = server.router();
    let finished = Arc::new(std::sync::Mutex::new(Vec::new()));
    let spawn = |name: &'static str, uri: &'static str, body: Value| {
        let router = router.clone();
        let finished = finished.clone();
        tokio::spawn(async move {
            let reply = send(&router, post(uri, &body)).await;
            assert_eq!(reply.status, StatusCode::OK, "{name}");
            finished.lock().unwrap().push(name);
        })
    };
    let first = spawn(
        "first image",
        "/v1/images/generations",
        json!({"prompt": "a"}),
    );
    wait_for(&server, "the first job to run", |m| m.running).await;
    let second = spawn(
        "second image",
        "/v1/images/generations",
        json!({"prompt": "b"}),
    );
    wait_for(&server, "the image job to wait", |m| m.queued_images == 1).await;
    let chat = spawn(
        "chat",
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}),
    );
    for task in [first, second, chat] {
        task.await.unwrap();
    }
    assert_eq!(
        *finished.lock().unwrap(),
        ["first image", "chat", "second image"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_is_a_500_and_the_server_keeps_serving() {
    let server = start(tiny(), slow(0)).await;
    let router = server.router();
    let body = json!({"messages": [{"role": "user", "content": "please PANIC NOW"}]});
    let e = send(&router, post("/v1/chat/completions", &body))
        .await
        .error(StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(e["type"], "server_error");
    wait_for(&server, "the panic to be counted", |m| m.panicked == 1).await;
    let ok = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    assert_eq!(
        send(&router, post("/v1/chat/completions", &ok))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(send(&router, get("/health")).await.status, StatusCode::OK);
}

/// Serves the router on a free local port.
async fn listen(router: Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn raw_request(path: &str, body: &Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One request over a fresh connection: status and body (JSON answers carry a length).
async fn http(addr: std::net::SocketAddr, path: &str, body: &Value) -> (u16, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(&raw_request(path, body)).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    let status = text[9..12].parse().unwrap();
    let start = text.find("\r\n\r\n").unwrap() + 4;
    (status, raw[start..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_cancels_its_job() {
    let server = start(tiny(), slow(50)).await;
    let addr = listen(server.router()).await;
    // 64 codes at 50 ms: a job of over 3 s unless cancelled.
    for (path, body) in [
        ("/v1/images/generations", json!({"prompt": "a red circle"})),
        (
            "/janus/v1/images/generations",
            json!({"prompt": "a red circle"}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 200, "stream": true, "temperature": 1.0}),
        ),
    ] {
        let before = server.metrics().cancelled;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(&raw_request(path, &body)).await.unwrap();
        wait_for(&server, "the job to run", |m| m.running).await;
        let started = Instant::now();
        drop(stream);
        wait_for(&server, "the job to be cancelled", |m| {
            m.cancelled == before + 1 && !m.running
        })
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path}: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(server.metrics().completed, 0);
    let (status, _) = http(
        addr,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_get_their_own_answers() {
    let dir = shapes();
    let janus = Janus::load(&dir, &LoadOptions::default(), &Device::flex()).unwrap();
    let inputs = [
        shape("circle", [220, 30, 30]),
        shape("square", [30, 30, 220]),
        shape("triangle", [30, 200, 30]),
        shape("circle", [230, 220, 40]),
    ];
    let question = "What is in the image?";
    let expected: Vec<String> = inputs
        .iter()
        .map(|image| {
            janus
                .ask(
                    question,
                    std::slice::from_ref(image),
                    &janus.answer_options(),
                    |_| ControlFlow::Continue(()),
                )
                .unwrap()
                .text
                .trim_start()
                .to_owned()
        })
        .collect();
    drop(janus);
    let server = start(dir, ServerConfig::new("shapes-janus")).await;
    let router = server.router();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let router = router.clone();
            let body = ask(&inputs[i % 4], question);
            tokio::spawn(async move {
                let v = send(&router, post("/v1/chat/completions", &body))
                    .await
                    .json();
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), expected[i % 4], "request {i}");
    }
}

/// `cargo test --workspace --release --test server -- --nocapture load_50_chat_requests`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_50_chat_requests_from_8_clients() {
    let server = start(shapes(), ServerConfig::new("shapes-janus")).await;
    let addr = listen(server.router()).await;
    let body = Arc::new(ask(&red_circle(), "What is in the image?"));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (body, next) = (body.clone(), next.clone());
            tokio::spawn(async move {
                let (mut ok, mut busy) = (0, 0);
                while next.fetch_add(1, Ordering::Relaxed) < 50 {
                    let (status, reply) = http(addr, "/v1/chat/completions", &body).await;
                    let v: Value = serde_json::from_slice(&reply).unwrap();
                    match status {
                        200 => {
                            let text = v["choices"][0]["message"]["content"].as_str().unwrap();
                            assert_eq!(text, "a red circle.");
                            ok += 1;
                        }
                        503 => busy += 1,
                        other => panic!("status {other}: {v}"),
                    }
                }
                (ok, busy)
            })
        })
        .collect();
    let (mut ok, mut busy) = (0, 0);
    for client in clients {
        let (o, b) = client.await.unwrap();
        ok += o;
        busy += b;
    }
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(ok + busy, 50, "every request answered");
    let m = server.metrics();
    assert_eq!(m.completed, ok as u64);
    assert_eq!((m.failed, m.panicked, m.running), (0, 0, false));
    let (status, _) = http(
        addr,
        "/v1/chat/completions",
        &ask(&red_circle(), "What is in the image?"),
    )
    .await;
    assert_eq!(status, 200, "still healthy");
    println!(
        "load: 50 chat requests from 8 clients: {ok} answered, {busy} refused (503) in {seconds:.2}s = {:.1} requests/s",
        50.0 / seconds
    );
}
