//! Asks a question about one or more images and streams the answer.
//!
//! ```sh
//! cargo run --release --example understand -- \
//!     --image tests/fixtures/tiny-janus/goldens/scene.png --question "Describe this image in detail."
//! ```

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use clap::Parser;
use janus_core::processor::load_image;

#[derive(Parser)]
#[command(about = "Answer a question about images with a Janus model")]
struct Args {
    /// Model directory; defaults to the shipped shapes model (models/shapes-janus).
    #[arg(long)]
    model: Option<PathBuf>,
    /// An image (repeat for several; each gets a placeholder before the question).
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// The question.
    #[arg(long)]
    question: String,
    /// Most tokens to generate [default: the model's recommendation, else 512].
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Stop when the answer contains this text (repeatable).
    #[arg(long = "stop")]
    stop_strings: Vec<String>,
    #[command(flatten)]
    sampling: janus_cli::SamplingArgs,
    /// Parameters: f32, bf16, f16, or the language model's linear layers quantised to q8_0 or
    /// q4_k (docs/quantization.md).
    #[arg(long, default_value = "f32", value_parser = janus_cli::parse_precision)]
    dtype: janus_cli::Precision,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = args.model.unwrap_or_else(janus_cli::bundled_model_dir);
    let device = janus_cli::default_device();
    let janus = janus_cli::load_with_spinner(&dir, &args.dtype.load_options(), &device)?;
    let images = args
        .images
        .iter()
        .map(load_image)
        .collect::<Result<Vec<_>, _>>()?;
    let defaults = janus.answer_options();
    let mut options = defaults.clone();
    options.max_new_tokens = args.max_new_tokens.unwrap_or(defaults.max_new_tokens);
    options.sampling = args.sampling.apply(defaults.sampling);
    options.stop_strings = args.stop_strings;
    let mut stdout = std::io::stdout();
    let answer = janus.ask(&args.question, &images, &options, |piece| {
        print!("{piece}");
        let _ = stdout.flush();
        ControlFlow::Continue(())
    })?;
    println!();
    eprintln!(
        "[{} tokens, stopped: {:?}]",
        answer.token_ids.len(),
        answer.stop
    );
    Ok(())
}
