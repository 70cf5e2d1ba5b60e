//! Loads a Janus model directory and prints what is in it: layout (original or transformers),
//! config, checkpoint files, dtype and parameter count per component.
//!
//! ```sh
//! cargo run --release --example inspect -- --model tests/fixtures/tiny-janus
//! ```

use std::path::PathBuf;

use anyhow::Context;
use burn::module::Module;
use clap::Parser;
use janus_core::{CheckpointLayout, JanusModel};

#[derive(Parser)]
#[command(
    about = "Print the config, checkpoint layout, dtype and parameter counts of a Janus model"
)]
struct Args {
    /// Model directory (config.json + weights); defaults to the shipped shapes model (models/shapes-janus).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Read weights from this directory instead (e.g. tests/fixtures/tiny-janus/torch-bf16).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Parameters: f32, bf16, f16, or the language model's linear layers quantised to q8_0 or
    /// q4_k (docs/quantization.md).
    #[arg(long, default_value = "f32", value_parser = janus_cli::parse_precision)]
    dtype: janus_cli::Precision,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = args.model.unwrap_or_else(janus_cli::bundled_model_dir);
    let dtype = args.dtype;
    let device = janus_cli::default_device();
    let weights = args.weights.clone().unwrap_or_else(|| dir.clone());
    let quantised = janus_core::checkpoint::is_quantized_dir(&weights);
    let layout = if quantised {
        None
    } else {
        Some(CheckpointLayout::discover(&weights)?)
    };
    let mut options = dtype.load_options();
    options.weights_dir = args.weights;
    let (model, config, report) = JanusModel::load(&dir, &options, &device)
        .with_context(|| format!("loading {}", dir.display()))?;

    println!("model directory: {}", dir.display());
    println!("layout:          {}", config.layout);
    if let Some(layout) = &layout {
        println!(
            "checkpoint:      {} ({} file(s))",
            layout.describe(),
            layout.files.len()
        );
        for f in &layout.files {
            println!("                 {}", f.display());
        }
    }
    if let Some(m) = model.quant_manifest() {
        println!(
            "quantised:       {} ({} weights in GGML blocks, float parameters saved in {})",
            m.scheme,
            m.tensors.len(),
            m.float_dtype
        );
        for (name, gate) in [
            ("understanding", &m.understanding_gate),
            ("generation", &m.generation_gate),
        ] {
            match gate {
                Some(g) => println!(
                    "  {name} gate {}: {}",
                    if g.passed { "passed" } else { "FAILED" },
                    g.agreement
                ),
                None => println!("  {name} gate: not measured"),
            }
        }
    }
    let source = report
        .source_dtype
        .map_or("?".to_string(), |d| format!("{d:?}"));
    println!("dtype:           {source} in the files, {dtype} in memory");
    println!(
        "tensors:         {} loaded, {} ignored (unused by inference)",
        report.applied, report.ignored
    );
    let v = &config.vision;
    println!(
        "vision:          {} {}px patch {} width {} x {} blocks, {} heads -> {} image tokens",
        v.model_name,
        v.image_size,
        v.patch_size,
        v.width,
        v.layers,
        v.heads,
        config.num_image_tokens()
    );
    let g = &config.gen_vision;
    println!(
        "vq:              {} ch {} ch_mult {:?} z {} codebook {}x{}, {}px -> {}x{} codes",
        g.model_name,
        g.ch,
        g.ch_mult,
        g.z_channels,
        g.codebook_size,
        g.codebook_dim,
        g.image_size,
        g.grid(),
        g.grid()
    );
    let l = &config.language;
    println!(
        "language:        hidden {} x {} layers, {} heads ({} kv), mlp {}, vocab {}, context {}",
        l.hidden_size,
        l.num_hidden_layers,
        l.num_attention_heads,
        l.kv_heads(),
        l.intermediate_size,
        l.vocab_size,
        l.max_position_embeddings
    );
    // A quantised weight's float tensor is empty: count its values from the blocks.
    let language_params = model.language_model.num_params()
        + model
            .language_model
            .linears()
            .iter()
            .filter_map(|(_, _, l)| l.quantized().map(|q| q.rows() * q.cols()))
            .sum::<usize>();
    let parts = [
        ("vision_model", model.vision_model.num_params()),
        ("aligner", model.aligner.num_params()),
        ("gen_vision_model", model.gen_vision_model.num_params()),
        ("gen_aligner", model.gen_aligner.num_params()),
        ("gen_head", model.gen_head.num_params()),
        ("gen_embed", model.gen_embed.num_params()),
        ("language_model", language_params),
    ];
    println!("parameters:");
    for (name, n) in parts {
        println!("  {name:<18} {n:>14}");
    }
    println!(
        "  {:<18} {:>14}",
        "total",
        parts.iter().map(|p| p.1).sum::<usize>()
    );
    Ok(())
}
