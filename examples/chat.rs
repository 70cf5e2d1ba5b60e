//! An interactive multi-turn chat. Type a question; `/image PATH` attaches an image to the next
//! question, `/reset` forgets the conversation, `/quit` (or end of input) leaves.
//!
//! ```sh
//! cargo run --release --example chat -- --model models/Janus-Pro-1B
//! ```

use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;

use clap::Parser;
use janus_core::processor::load_image;

#[derive(Parser)]
#[command(about = "Chat with a Janus model about images")]
struct Args {
    /// Model directory; defaults to the shipped shapes model (models/shapes-janus).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Most tokens per answer [default: the model's recommendation, else 512].
    #[arg(long)]
    max_new_tokens: Option<usize>,
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
    let defaults = janus.answer_options();
    let mut options = defaults.clone();
    options.max_new_tokens = args.max_new_tokens.unwrap_or(defaults.max_new_tokens);
    options.sampling = args.sampling.apply(defaults.sampling);
    let mut chat = janus.chat();
    let mut pending = Vec::new();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    eprintln!("commands: /image PATH, /reset, /quit");
    loop {
        print!("> ");
        stdout.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "/quit" {
            break;
        }
        if line == "/reset" {
            chat.clear();
            pending.clear();
            eprintln!("(conversation cleared)");
            continue;
        }
        if let Some(path) = line.strip_prefix("/image ") {
            match load_image(path.trim()) {
                Ok(image) => {
                    pending.push(image);
                    eprintln!("(image attached to the next question)");
                }
                Err(e) => eprintln!("error: {e}"),
            }
            continue;
        }
        let images = std::mem::take(&mut pending);
        let result = chat.ask(line, &images, &options, |piece| {
            print!("{piece}");
            let _ = std::io::stdout().flush();
            ControlFlow::Continue(())
        });
        println!();
        if let Err(e) = result {
            eprintln!("error: {e}");
        }
    }
    Ok(())
}
