//! Quantises a model directory's language model once and writes a quantised model directory
//! (docs/quantization.md) that every program loads at its quantised size. With `--gate`, both
//! accuracy gates are first measured against the float model and recorded in the directory's
//! `quantization.json`; a directory whose generation gate failed refuses to draw.
//!
//! ```sh
//! cargo run --release --example quantize -- --model models/Janus-Pro-1B --dtype q4_k \
//!     --out models/Janus-Pro-1B-q4_k --gate
//! cargo run --release --example generate -- --model models/Janus-Pro-1B-q4_k --prompt "a red apple"
//! ```

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use janus_core::{GateProgress, GateRecord, QuantGates};

#[derive(Parser)]
#[command(about = "Write a quantised copy of a Janus model directory")]
struct Args {
    /// Model directory (config.json + float weights); defaults to the shipped shapes model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Where to write the quantised directory (must not exist).
    #[arg(long)]
    out: PathBuf,
    /// The tier: q8_0 or q4_k.
    #[arg(long, value_parser = janus_cli::parse_precision)]
    dtype: janus_cli::Precision,
    /// Dtype of the parameters that stay in floating point (norms, embeddings, vision tower,
    /// VQ decoder, adaptors, image head).
    #[arg(long, default_value = "f32", value_parser = janus_cli::parse_dtype)]
    float_dtype: burn::tensor::DType,
    /// Measure both gates against the float model first and record them (holds both models
    /// in memory; draws the gate prompts' images with the float model).
    #[arg(long)]
    gate: bool,
    /// Dtype of the float reference the gates compare against (bf16 halves its memory).
    #[arg(long, default_value = "f32", value_parser = janus_cli::parse_dtype)]
    reference_dtype: burn::tensor::DType,
    /// Gate prompts to draw (each is one image of the float model).
    #[arg(long, default_value_t = 2)]
    gate_prompts: usize,
}

fn show(record: &Option<GateRecord>, name: &str) {
    if let Some(r) = record {
        let verdict = if r.passed { "passed" } else { "FAILED" };
        println!("{name} gate {verdict}: {}", r.agreement);
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let Some(scheme) = args.dtype.quant else {
        bail!("--dtype must be a quantised tier (q8_0 or q4_k)");
    };
    let dir = args.model.unwrap_or_else(janus_cli::bundled_model_dir);
    let device = janus_cli::default_device();
    let options = janus_core::LoadOptions::default()
        .with_dtype(args.float_dtype)
        .with_quant(Some(scheme));
    let quantised = janus_cli::load_with_spinner(&dir, &options, &device)
        .with_context(|| format!("loading {} at {scheme}", dir.display()))?;

    let gates = if args.gate {
        let reference_options = janus_core::LoadOptions::default().with_dtype(args.reference_dtype);
        let reference = janus_cli::load_with_spinner(&dir, &reference_options, &device)
            .with_context(|| format!("loading the float reference {}", dir.display()))?;
        let bar = indicatif::ProgressBar::new(0);
        let gates = quantised.measure_quant_gates(&reference, args.gate_prompts, |p| match p {
            GateProgress::Answering { done, total } => {
                bar.set_message(format!(
                    "the reference answers gate question {}/{total}",
                    done + 1
                ));
                bar.tick();
            }
            GateProgress::Drawing { done, total } => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
                bar.set_message("the reference draws the gate prompts");
            }
            GateProgress::Scoring => bar.set_message("both models read the same tokens"),
        })?;
        bar.finish_and_clear();
        show(&gates.understanding, "understanding");
        show(&gates.generation, "generation (guided, CFG 5)");
        gates
    } else {
        QuantGates::default()
    };

    let manifest = quantised
        .save_quantized(&args.out, &gates)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let bytes: u64 = ["model.quant.safetensors", "model.float.safetensors"]
        .iter()
        .filter_map(|f| std::fs::metadata(args.out.join(f)).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "wrote {} ({scheme}: {} quantised weights, {:.2} GB of weights)",
        args.out.display(),
        manifest.tensors.len(),
        bytes as f64 / 1e9
    );
    if manifest.generation_refusal().is_some() {
        println!(
            "its generation gate failed: this directory answers questions but refuses to draw"
        );
    }
    Ok(())
}
