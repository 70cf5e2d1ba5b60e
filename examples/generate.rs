//! Text-to-image generation: draws images for one or more prompts with classifier-free
//! guidance and writes them as PNG files.
//!
//! ```sh
//! cargo run --release --example generate -- --prompt "a red cube on a wooden table"
//! cargo run --release --example generate -- --model models/Janus-Pro-1B \
//!     --prompt "a lighthouse at dusk" --parallel 4 --cfg 5 --seed 12345 --out out
//! ```

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use janus_core::{Janus, save_images};

#[derive(Parser)]
#[command(about = "Generate images from text prompts with a Janus model")]
struct Args {
    /// Model directory (config.json + weights); defaults to the shipped shapes model (models/shapes-janus).
    #[arg(long)]
    model: Option<PathBuf>,
    /// What to draw; repeat the flag for several prompts (batched together).
    #[arg(long, required = true)]
    prompt: Vec<String>,
    /// Images per prompt.
    #[arg(long, default_value_t = 1)]
    parallel: usize,
    /// Classifier-free guidance weight [default: the model's recommendation, else 5].
    #[arg(long, allow_negative_numbers = true)]
    cfg: Option<f64>,
    #[command(flatten)]
    sampling: janus_cli::SamplingArgs,
    /// Output directory (created if missing).
    #[arg(long, default_value = "generated")]
    out: PathBuf,
    /// Parameters: f32, bf16, f16, or the language model's linear layers quantised to q8_0 or
    /// q4_k (docs/quantization.md).
    #[arg(long, default_value = "f32", value_parser = janus_cli::parse_precision)]
    dtype: janus_cli::Precision,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = args.model.unwrap_or_else(janus_cli::bundled_model_dir);
    let device = janus_cli::default_device();
    let start = Instant::now();
    let options = args.dtype.load_options();
    let janus = Janus::load(&dir, &options, &device)
        .with_context(|| format!("loading {}", dir.display()))?;
    let (h, w) = janus.image_grid();
    let size = janus.config.gen_vision.image_size;
    eprintln!(
        "loaded {} in {:.1?}: {size}×{size} images from {h}×{w} = {} codes",
        dir.display(),
        start.elapsed(),
        h * w
    );

    let defaults = janus.generation_options();
    let mut options = defaults.clone().with_parallel_size(args.parallel);
    options.cfg_weight = args.cfg.unwrap_or(defaults.cfg_weight);
    options.sampling = args.sampling.apply(defaults.sampling);
    eprintln!(
        "cfg weight {}, temperature {}, seed {}",
        options.cfg_weight, options.sampling.temperature, options.sampling.seed
    );
    let bar =
        ProgressBar::new(janus.codes_per_image() as u64).with_style(ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} codes ({per_sec}, eta {eta})",
        )?);
    bar.set_message("generating");
    let start = Instant::now();
    let images = janus.generate_images(&args.prompt, &options, |p| {
        bar.set_position(p.done as u64);
        ControlFlow::Continue(())
    })?;
    bar.finish();
    let images_total = images.len();
    eprintln!(
        "{images_total} image(s) of {} codes in {:.1?}",
        janus.codes_per_image(),
        start.elapsed()
    );

    // One file set per prompt: p{prompt}_{image}.png.
    let mut by_prompt = vec![Vec::new(); args.prompt.len()];
    for g in images {
        by_prompt[g.prompt].push(g.image);
    }
    for (p, (prompt, rgb)) in args.prompt.iter().zip(&by_prompt).enumerate() {
        let paths = save_images(rgb, &args.out, &format!("p{p}"))?;
        println!("{prompt:?}:");
        for path in paths {
            println!("  {}", path.display());
        }
    }
    Ok(())
}
