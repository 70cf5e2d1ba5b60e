//! `janus-train`: runs a training run described by a TOML/JSON config, with overrides.
//!
//! ```sh
//! janus-train --config run.toml --stage 3 --steps 200 --resume
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use janus_cli::training_device;
use janus_train::{Stage, TrainConfig, train_parallel};

#[derive(Parser)]
#[command(about = "Train Janus (stages I–III, LoRA) from JSONL data")]
struct Args {
    /// The run's config file (.toml or .json); unknown keys are rejected.
    #[arg(long)]
    config: PathBuf,
    /// Override the stage (1, 2 or 3).
    #[arg(long)]
    stage: Option<Stage>,
    /// Override the base model directory.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Override the output directory.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Override the number of optimiser steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Override the peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Override the rows per batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Override the data seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Continue from the latest checkpoint in the output directory.
    #[arg(long)]
    resume: bool,
    /// Train data-parallel on this many devices (GPUs 0..N with `cuda`/`vulkan`/`wgpu`; on the CPU
    /// backend, N workers share the one CPU device). Each accumulation step then takes one batch
    /// per device.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    devices: u16,
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = TrainConfig::from_file(&args.config)?;
    if let Some(s) = args.stage {
        config.stage = s;
    }
    if let Some(m) = args.model {
        config.model = m;
    }
    if let Some(o) = args.output_dir {
        config.output_dir = o;
    }
    if let Some(s) = args.steps {
        config.steps = s;
    }
    if let Some(lr) = args.lr {
        config.optim.lr = lr;
    }
    if let Some(b) = args.batch_size {
        config.data.batch_size = b;
    }
    if let Some(s) = args.seed {
        config.data.seed = s;
    }
    let bar = ProgressBar::new(config.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps {msg} [{elapsed_precise}<{eta_precise}]",
        )
        .expect("static template"),
    );
    let devices: Vec<_> = (0..args.devices as usize).map(training_device).collect();
    let summary = train_parallel(&config, &devices, args.resume, &mut |r| {
        bar.set_position(r.step as u64);
        let val = r
            .val_loss
            .map(|v| format!(" val {v:.4}"))
            .unwrap_or_default();
        bar.set_message(format!(
            "loss {:.4} lr {:.2e} {:.0} tok/s{val}",
            r.loss, r.lr, r.tokens_per_s
        ));
    })?;
    bar.finish();
    println!("model written to {}", summary.model_dir.display());
    if let Some(a) = summary.adapter {
        println!("LoRA adapter written to {}", a.display());
    }
    println!(
        "metrics in {}",
        config.output_dir.join("metrics.jsonl").display()
    );
    if summary.skipped + summary.truncated > 0 {
        println!(
            "data: {} samples skipped, {} truncated",
            summary.skipped, summary.truncated
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("janus-train: {e}");
            ExitCode::FAILURE
        }
    }
}
