//! Asks a question about one or more images and streams the answer.
//!
//! ```sh
//! cargo run --release --example understand -- \
//!     --image tests/fixtures/tiny-janus/goldens/scene.png --question "Describe this image in detail."
//! ```

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use janus_core::processor::{Message, load_image};
use janus_core::{AnswerOptions, LoadOptions};

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
    /// Most tokens to generate.
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// Stop when the answer contains this text (repeatable).
    #[arg(long = "stop")]
    stop_strings: Vec<String>,
    #[command(flatten)]
    sampling: janus_cli::SamplingArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = args.model.unwrap_or_else(janus_cli::bundled_model_dir);
    let device = janus_cli::default_device();
    let janus = janus_cli::load_with_spinner(&dir, &LoadOptions::default(), &device)?;
    let images = args
        .images
        .iter()
        .map(load_image)
        .collect::<Result<Vec<_>, _>>()?;
    let (user, assistant) = janus.roles();
    let content = format!(
        "{}{}",
        "<image_placeholder>\n".repeat(images.len()),
        args.question
    );
    let conversation = vec![Message::new(user, &content), Message::new(assistant, "")];
    let options = AnswerOptions {
        max_new_tokens: args.max_new_tokens,
        sampling: args.sampling.options(),
        stop_strings: args.stop_strings,
    };
    let mut stdout = std::io::stdout();
    let answer = janus.answer_with_images(&conversation, &images, &options, |piece| {
        print!("{piece}");
        let _ = stdout.flush();
    })?;
    println!();
    eprintln!(
        "[{} tokens, stopped: {:?}]",
        answer.token_ids.len(),
        answer.stop
    );
    Ok(())
}
