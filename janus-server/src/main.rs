//! `janus-server`: serves a Janus model over an OpenAI-compatible HTTP API and a web page.
//!
//! ```sh
//! cargo run --release --bin janus-server -- --model models/shapes-janus --port 8080
//! ```

use std::path::PathBuf;

use clap::Parser;
use janus_core::Janus;
use janus_server::{Server, ServerConfig};

#[derive(Parser)]
#[command(about = "Serve a Janus model over an OpenAI-compatible API and a web page")]
struct Args {
    /// Model directory; defaults to the shipped shapes model (models/shapes-janus).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Address to bind; the default keeps the server to this machine.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Parameters: f32, bf16, f16, or the language model's linear layers quantised to q8_0 or
    /// q4_k (docs/quantization.md).
    #[arg(long, default_value = "f32", value_parser = janus_cli::parse_precision)]
    dtype: janus_cli::Precision,
    /// Require `Authorization: Bearer KEY` on the API (the page and /health stay public).
    #[arg(long)]
    api_key: Option<String>,
    /// Jobs that may wait for the model; more are refused with 503 and Retry-After.
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// Sleep this many milliseconds at every streamed piece and image step, so that the browser
    /// test can cancel a job mid-way.
    #[arg(long, hide = true)]
    test_step_delay_ms: Option<u64>,
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let dir = args.model.unwrap_or_else(janus_cli::bundled_model_dir);
    let model_id = std::fs::canonicalize(&dir)
        .unwrap_or_else(|_| dir.clone())
        .file_name()
        .map_or_else(|| "janus".to_string(), |n| n.to_string_lossy().into_owned());
    let mut config = ServerConfig::new(model_id).with_queue_capacity(args.queue);
    config.api_key = args.api_key.filter(|k| !k.is_empty());
    config.log_jobs = true;
    config.hooks.step_delay = args
        .test_step_delay_ms
        .map(std::time::Duration::from_millis);
    let server = Server::new(config);
    let options = args.dtype.load_options();
    let load_dir = dir.clone();
    server.start(move || Janus::load(&load_dir, &options, &janus_cli::default_device()));

    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port)).await?;
    eprintln!(
        "janus-server: loading {}, listening on http://{}",
        dir.display(),
        listener.local_addr()?
    );
    let watcher = server.clone();
    tokio::spawn(async move {
        match watcher.wait_ready().await {
            Ok(()) => eprintln!("janus-server: model loaded, ready"),
            Err(e) => {
                eprintln!("janus-server: cannot load the model: {e}");
                std::process::exit(1);
            }
        }
    });
    let stopper = server.clone();
    axum::serve(listener, server.router())
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            eprintln!("janus-server: shutting down, cancelling running jobs");
            stopper.shutdown();
        })
        .await?;
    Ok(())
}
