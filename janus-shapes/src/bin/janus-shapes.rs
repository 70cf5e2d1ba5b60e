//! `janus-shapes`: trains a tiny Janus from nothing on synthetic shapes (the model shipped in
//! `models/shapes-janus`), and scores a model on fresh shapes.
//!
//! ```sh
//! # The whole recipe: data, random init, VQ tokenizer, Janus stage III, scores, model card.
//! cargo run --release -p janus-shapes -- build --out models/shapes-janus
//! # Scores of a model directory.
//! cargo run --release -p janus-shapes -- eval --model models/shapes-janus
//! ```
//!
//! It trains and scores on the device janus-cli's backend features choose
//! ([`training_device`]): the CPU by default, a GPU in a `--features vulkan` (or `cuda`, `wgpu`)
//! build.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{DType, Device};
use clap::{Args as ClapArgs, Parser, Subcommand};
use janus_cli::training_device;
use janus_core::generation_config::GENERATION_CONFIG_FILE;
use janus_core::{GenerationOptions, Janus, JanusConfig, JanusModel, LoadOptions};
use janus_shapes::card::{RECOMMENDED_CFG, generation_config, model_card};
use janus_shapes::{
    GenerationScore, Label, ShapeGenerator, UnderstandingScore, judge, score_generation,
    score_understanding, write_dataset,
};
use janus_train::{
    Decay, ExportOptions, MixRatio, OptimConfig, Stage, TrainConfig, VqTrainConfig, codebook_usage,
    export_model_dir, export_model_dir_with, reconstruct, train, train_vq,
};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Train a tiny Janus from scratch on synthetic shapes, or score one")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole recipe: data → random init → VQ tokenizer → Janus (stage III) → scores.
    Build(BuildArgs),
    /// Scores a model directory on fresh shapes (understanding and generation).
    Eval(EvalArgs),
    /// Re-scores a built model directory on the recipe's seeds and rewrites its
    /// `recipe.json` scores and `README.md`.
    Card(CardArgs),
}

#[derive(ClapArgs)]
struct CardArgs {
    /// The model directory (with the `recipe.json` its build wrote).
    #[arg(long, default_value = "models/shapes-janus")]
    model: PathBuf,
}

/// The seeds a build scores on: fresh images and sampler seeds the recipe never trained on.
const EVAL_SEEDS: [u64; 7] = [1234, 1, 2, 3, 4, 5, 6];

#[derive(ClapArgs)]
struct BuildArgs {
    /// Where the finished model directory goes (replaced).
    #[arg(long, default_value = "models/shapes-janus")]
    out: PathBuf,
    /// Working directory: data, initial model, checkpoints, metrics.
    #[arg(long, default_value = "runs/shapes")]
    work: PathBuf,
    /// Directory whose tokenizer files the new model uses.
    #[arg(long, default_value = "tests/fixtures/tiny-janus")]
    tokenizer_from: PathBuf,
    /// Seed of everything (data, initial weights, restarts, dropout).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// VQ tokenizer training steps.
    #[arg(long, default_value_t = 600)]
    vq_steps: usize,
    /// VQ images per step.
    #[arg(long, default_value_t = 16)]
    vq_batch: usize,
    /// VQ peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    vq_lr: f64,
    /// Janus training steps (stage III: everything but the VQ trains).
    #[arg(long, default_value_t = 2500)]
    steps: usize,
    /// Rows per Janus step (half understanding, half text-to-image).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Janus peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Training images written (the loader cycles through them).
    #[arg(long, default_value_t = 8000)]
    train_images: usize,
    /// LLM hidden size.
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    /// LLM layers.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// VQ residual blocks per level.
    #[arg(long, default_value_t = 1)]
    vq_res_blocks: usize,
    /// Skip the scores at the end.
    #[arg(long)]
    no_eval: bool,
    /// Take the trained VQ tokenizer from this model directory (an earlier build's
    /// `<work>/init` or a shipped model of the same VQ shape) instead of training it.
    #[arg(long)]
    vq_from: Option<PathBuf>,
    /// SigLIP width.
    #[arg(long, default_value_t = 64)]
    vision_width: usize,
    /// SigLIP layers.
    #[arg(long, default_value_t = 2)]
    vision_layers: usize,
    /// SigLIP patch side (32 / patch squared image tokens per image).
    #[arg(long, default_value_t = 4)]
    patch: usize,
    /// dtype of the shipped weights (f16 halves the size; loading casts to f32).
    #[arg(long, default_value = "f16", value_parser = ["f16", "bf16", "f32"])]
    dtype: String,
}

#[derive(ClapArgs)]
struct EvalArgs {
    /// The model directory.
    #[arg(long, default_value = "models/shapes-janus")]
    model: PathBuf,
    /// Seed of the fresh images and of sampling.
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// Classifier-free guidance weight.
    #[arg(long, default_value_t = RECOMMENDED_CFG)]
    cfg: f64,
    /// Sampling temperature of generation.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Where to write the generated images (optional).
    #[arg(long)]
    images: Option<PathBuf>,
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const IMAGE_SIZE: usize = 32;

/// The model's `config.json`: every dimension explicit.
fn config_json(args: &BuildArgs) -> serde_json::Value {
    let d = args.hidden;
    let vision_width = args.vision_width;
    json!({
        "model_type": "multi_modality",
        "torch_dtype": "float32",
        "vision_config": {
            "cls": "CLIPVisionTower",
            "model_type": "vision",
            "params": {
                "image_size": IMAGE_SIZE,
                "model_name": format!("siglip_shapes_patch{}_{IMAGE_SIZE}", args.patch),
                "select_feature": "same",
                "select_layer": -1,
                "width": vision_width,
                "layers": args.vision_layers,
                "heads": 4,
                "patch_size": args.patch,
                "mlp_ratio": 4.0
            }
        },
        "aligner_config": {
            "cls": "MlpProjector",
            "model_type": "aligner",
            "params": {"depth": 2, "input_dim": vision_width, "n_embed": d, "projector_type": "mlp_gelu"}
        },
        "gen_vision_config": {
            "cls": "VQ-shapes",
            "model_type": "gen_vision",
            "params": {
                "image_token_size": 64,
                "n_embed": 8,
                "ch": 32,
                "ch_mult": [1, 2, 2],
                "z_channels": 32,
                "num_res_blocks": args.vq_res_blocks,
                "image_size": IMAGE_SIZE
            }
        },
        "gen_aligner_config": {
            "cls": "MlpProjector",
            "model_type": "gen_aligner",
            "params": {"depth": 2, "input_dim": 8, "n_embed": d, "projector_type": "mlp_gelu"}
        },
        "gen_head_config": {
            "cls": "vision_head",
            "model_type": "gen_head",
            "params": {"image_token_embed": d, "image_token_size": 64, "n_embed": d}
        },
        "language_config": {
            "hidden_size": d,
            "intermediate_size": 2 * d,
            "num_hidden_layers": args.layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "rope_theta": 10000.0,
            "rms_norm_eps": 1e-06,
            "max_position_embeddings": 512,
            "model_type": "llama",
            "vocab_size": 388,
            "torch_dtype": "float32",
            "hidden_act": "silu",
            "tie_word_embeddings": false,
            "attention_bias": false
        }
    })
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .map_err(|e| format!("{}: {e}", path.display()).into())
}

/// The base directory: config, tokenizer and processor files, no weights.
fn write_base(dir: &Path, args: &BuildArgs) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    write_json(&dir.join("config.json"), &config_json(args))?;
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        let from = args.tokenizer_from.join(name);
        std::fs::copy(&from, dir.join(name)).map_err(|e| format!("{}: {e}", from.display()))?;
    }
    write_json(
        &dir.join("preprocessor_config.json"),
        &json!({
            "image_processor_type": "VLMImageProcessor",
            "image_size": IMAGE_SIZE,
            "min_size": 14,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "rescale_factor": 1.0 / 255.0,
            "do_normalize": true,
            "processor_class": "VLChatProcessor"
        }),
    )?;
    write_json(
        &dir.join("processor_config.json"),
        &json!({
            "processor_class": "VLChatProcessor",
            "image_tag": "<image_placeholder>",
            "image_start_tag": "<begin_of_image>",
            "image_end_tag": "<end_of_image>",
            "pad_tag": "<｜▁pad▁｜>",
            "num_image_tokens": (IMAGE_SIZE / args.patch).pow(2),
            "add_special_token": false,
            "sft_format": "deepseek",
            "mask_prompt": true,
            "ignore_id": -100
        }),
    )?;
    Ok(())
}

fn minutes(s: f64) -> String {
    format!("{:.1} min", s / 60.0)
}

struct Scores {
    understanding: UnderstandingScore,
    generation: GenerationScore,
}

fn evaluate(
    dir: &Path,
    seed: u64,
    cfg: f64,
    temperature: f64,
    images_out: Option<&Path>,
    verbose: bool,
) -> Result<Scores> {
    let device = training_device(0);
    let janus = Janus::load(dir, &LoadOptions::default(), &device)?;
    let understanding = score_understanding(&janus, 48, seed)?;
    println!(
        "understanding: {}/{} exactly right",
        understanding.correct, understanding.total
    );
    for (want, got) in understanding
        .wrong
        .iter()
        .take(if verbose { 10 } else { 0 })
    {
        println!("  expected {want:?}, answered {got:?}");
    }
    let mut options = GenerationOptions::default()
        .with_cfg_weight(cfg)
        .with_seed(seed);
    options.sampling.temperature = temperature;
    let (generation, images) = score_generation(&janus, 2, &options)?;
    println!(
        "generation (12 captions × 2, cfg {cfg}, temperature {temperature}): {}/{} judged right",
        generation.correct, generation.total
    );
    for (i, j) in generation.judgements.iter().enumerate() {
        if !verbose {
            break;
        }
        let want = Label::all()[i / 2];
        match j {
            Some(j) => println!(
                "  {:<18} judged {:<18} fill {:.2} ({} px){}",
                want.caption(),
                j.label().caption(),
                j.fill,
                j.pixels,
                if j.label() == want { "" } else { "  WRONG" }
            ),
            None => println!("  {:<18} judged none  WRONG", want.caption()),
        }
    }
    if let Some(out) = images_out {
        std::fs::create_dir_all(out)?;
        for (i, g) in images.iter().enumerate() {
            let caption = Label::all()[g.prompt].caption().replace(' ', "_");
            janus_core::save_png(&g.image, out.join(format!("{caption}_{}.png", i % 2)))?;
        }
    }
    Ok(Scores {
        understanding,
        generation,
    })
}

/// Scores on every [`EVAL_SEEDS`] seed (48 questions and 24 images each, CFG 3, temperature 1);
/// the first seed's generated images go to `images_out`.
fn score_seeds(dir: &Path, images_out: Option<&Path>) -> Result<serde_json::Value> {
    let (mut und, mut generation) = (Vec::new(), Vec::new());
    for (i, &seed) in EVAL_SEEDS.iter().enumerate() {
        println!("seed {seed}:");
        let scores = evaluate(
            dir,
            seed,
            RECOMMENDED_CFG,
            1.0,
            if i == 0 { images_out } else { None },
            i == 0,
        )?;
        und.push([scores.understanding.correct, scores.understanding.total]);
        generation.push([scores.generation.correct, scores.generation.total]);
    }
    let total = |v: &[[usize; 2]]| {
        [
            v.iter().map(|p| p[0]).sum::<usize>(),
            v.iter().map(|p| p[1]).sum(),
        ]
    };
    Ok(json!({
        "seeds": EVAL_SEEDS,
        "cfg": RECOMMENDED_CFG,
        "temperature": 1.0,
        "understanding": und,
        "generation": generation,
        "understanding_total": total(&und),
        "generation_total": total(&generation),
    }))
}

/// `card`: re-scores `dir` and rewrites its scores and model card.
fn card(dir: &Path) -> Result<()> {
    let path = dir.join("recipe.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut recipe: serde_json::Value = serde_json::from_str(&text)?;
    recipe["scores"] = score_seeds(dir, None)?;
    write_json(&path, &recipe)?;
    std::fs::write(dir.join("README.md"), model_card(dir, &recipe)?)?;
    println!("scores and model card rewritten in {}", dir.display());
    Ok(())
}

/// Steps 2 and 3 of the recipe: random weights, then the VQ tokenizer trained; written to
/// `init_dir`. Returns the VQ's numbers.
fn init_model(
    args: &BuildArgs,
    base: &Path,
    init_dir: &Path,
    device: &Device,
) -> Result<serde_json::Value> {
    let ad = device.clone().autodiff();
    // 2. A model with random weights.
    write_base(base, args)?;
    let config = JanusConfig::from_dir(base)?;
    ad.seed(args.seed);
    let model = JanusModel::init(&config, &ad)?;

    // 3. The VQ tokenizer (before stage I: a new model has no pretrained one).
    let vq_started = Instant::now();
    let vq_config = VqTrainConfig {
        steps: args.vq_steps,
        batch_size: args.vq_batch,
        lr: args.vq_lr,
        seed: args.seed,
        warmup_steps: 50.min(args.vq_steps / 4),
        ..Default::default()
    };
    let mut shapes = ShapeGenerator::new(IMAGE_SIZE, args.seed.wrapping_add(100));
    let mut next_batch =
        |n: usize| -> Vec<_> { (0..n).map(|_| shapes.sample().render()).collect() };
    let log_every = (args.vq_steps / 20).max(1);
    let vq = if let Some(from) = &args.vq_from {
        println!("VQ tokenizer taken from {}", from.display());
        let (trained, _, _) = JanusModel::load(from, &LoadOptions::default(), &ad)?;
        trained.gen_vision_model
    } else {
        let (vq, _) = train_vq(
            model.gen_vision_model.clone(),
            &vq_config,
            &ad,
            &mut next_batch,
            &mut |r| {
                if r.step % log_every == 0 || r.step == 1 {
                    println!(
                        "vq step {:5}: loss {:.4} recon {:.4} codebook {:.4} commit {:.4} codes {:2} restarted {} ({:.0} s)",
                        r.step,
                        r.loss,
                        r.recon,
                        r.codebook,
                        r.commit,
                        r.batch_codes,
                        r.restarted,
                        vq_started.elapsed().as_secs_f64()
                    );
                }
            },
        )?;
        vq
    };
    let vq = vq.valid();
    let mut held_out = ShapeGenerator::new(IMAGE_SIZE, args.seed.wrapping_add(200));
    let samples: Vec<_> = (0..240).map(|_| held_out.sample()).collect();
    let images: Vec<_> = samples.iter().map(|s| s.render()).collect();
    let (usage, mse) = codebook_usage(&vq, &images, device);
    let recon = reconstruct(&vq, &images, device);
    let judged = samples
        .iter()
        .zip(&recon)
        .filter(|(s, r)| judge(r).map(|j| j.label()) == Some(s.label()))
        .count();
    let vq_time = vq_started.elapsed().as_secs_f64();
    println!(
        "vq: {} of {} codes used (perplexity {:.1}), reconstruction MSE {:.4}, judge on reconstructions {}/{} ({})",
        usage.used,
        usage.size,
        usage.perplexity,
        mse,
        judged,
        samples.len(),
        minutes(vq_time)
    );
    let mut model = model.valid();
    model.gen_vision_model = vq;
    export_model_dir(&model, base, init_dir)?;

    Ok(
        json!({"steps": args.vq_steps, "batch": args.vq_batch, "lr": args.vq_lr,
              "codes_used": usage.used, "codebook_size": usage.size,
              "perplexity": usage.perplexity, "reconstruction_mse": mse,
              "judge_on_reconstructions": [judged, samples.len()],
              "minutes": vq_time / 60.0}),
    )
}

fn build(args: BuildArgs) -> Result<()> {
    let started = Instant::now();
    let device = training_device(0);
    std::fs::create_dir_all(&args.work)?;

    // 1. Data.
    let data_dir = args.work.join("data");
    let files = write_dataset(&data_dir, args.train_images, 96, IMAGE_SIZE, args.seed)?;
    println!(
        "data: {} training and {} held-out images in {}",
        files.train_images,
        files.val_images,
        data_dir.display()
    );

    let init_dir = args.work.join("init");
    let base = args.work.join("base");
    let vq_report = init_model(&args, &base, &init_dir, &device)?;

    // 4. Janus: one stage-III run (everything trains except the VQ, which defines the codes).
    let janus_started = Instant::now();
    let mut train_config = TrainConfig {
        model: init_dir.clone(),
        output_dir: args.work.join("run"),
        stage: Stage::Three,
        steps: args.steps,
        save_every: 0,
        keep_last: 1,
        seed: args.seed,
        val_data: vec![files.val_und.clone()],
        ..Default::default()
    };
    train_config.data.understanding = vec![files.und.clone()];
    train_config.data.generation = vec![files.t2i.clone()];
    train_config.data.ratio = MixRatio::new(1, 0, 1);
    train_config.data.batch_size = args.batch;
    train_config.data.cfg_dropout = 0.1;
    train_config.data.seed = args.seed;
    train_config.optim = OptimConfig {
        lr: args.lr,
        betas: (0.9, 0.95),
        eps: 1e-8,
        weight_decay: 0.0,
        warmup_steps: 50.min(args.steps / 4),
        decay: Decay::Cosine,
        total_steps: Some(args.steps),
        min_lr: args.lr / 10.0,
        max_grad_norm: Some(1.0),
        grad_accum_steps: 1,
    };
    let run_dir = args.work.join("run");
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)?;
    }
    let log_every = (args.steps / 30).max(1);
    let summary = train(&train_config, &device, false, &mut |r| {
        if r.step % log_every == 0 || r.step == 1 || r.val_loss.is_some() {
            println!(
                "janus step {:5}: loss {:.4} (und {} gen {}) lr {:.2e}{} ({:.0} s)",
                r.step,
                r.loss,
                r.loss_und.map_or("-".into(), |l| format!("{l:.4}")),
                r.loss_gen.map_or("-".into(), |l| format!("{l:.4}")),
                r.lr,
                r.val_loss
                    .map(|v| format!(" val {v:.4}"))
                    .unwrap_or_default(),
                janus_started.elapsed().as_secs_f64()
            );
        }
    })?;
    let janus_time = janus_started.elapsed().as_secs_f64();
    println!("janus: {} steps in {}", args.steps, minutes(janus_time));

    // 5. The model directory: the final weights in the chosen dtype, the recipe, scores and
    // a model card.
    let dtype = match args.dtype.as_str() {
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        _ => DType::F32,
    };
    let (final_model, _, _) =
        JanusModel::load(&summary.model_dir, &LoadOptions::default(), &device)?;
    export_model_dir_with(
        &final_model,
        &summary.model_dir,
        &args.out,
        &ExportOptions {
            dtype,
            copy_unused: false,
        },
    )?;
    drop(final_model);
    let recommended = serde_json::to_value(generation_config())?;
    write_json(&args.out.join(GENERATION_CONFIG_FILE), &recommended)?;
    let train_time = started.elapsed().as_secs_f64();
    println!(
        "model written to {} (training total {})",
        args.out.display(),
        minutes(train_time)
    );

    let mut recipe = json!({
        "command": format!(
            "cargo run --release -p janus-shapes -- build{}",
            if args.out == Path::new("models/shapes-janus") { String::new() } else { format!(" --out {}", args.out.display()) }
        ),
        "seed": args.seed,
        "dtype": args.dtype,
        "vq": vq_report,
        "janus": {"stage": 3, "steps": args.steps, "batch": args.batch, "ratio": "1:0:1",
                  "lr": args.lr, "cfg_dropout": 0.1, "train_images": args.train_images,
                  "final_loss": summary.reports.last().map(|r| r.loss),
                  "final_val_loss": summary.reports.last().and_then(|r| r.val_loss),
                  "minutes": janus_time / 60.0},
        "training_minutes": train_time / 60.0,
    });
    if !args.no_eval {
        let eval_started = Instant::now();
        recipe["scores"] = score_seeds(&args.out, Some(&args.work.join("generated")))?;
        recipe["scores"]["minutes"] = json!(eval_started.elapsed().as_secs_f64() / 60.0);
    }
    recipe["total_minutes"] = json!(started.elapsed().as_secs_f64() / 60.0);
    write_json(&args.work.join("recipe.json"), &recipe)?;
    write_json(&args.out.join("recipe.json"), &recipe)?;
    std::fs::write(args.out.join("README.md"), model_card(&args.out, &recipe)?)?;
    println!(
        "recipe and scores in {} (total {})",
        args.out.join("recipe.json").display(),
        minutes(started.elapsed().as_secs_f64())
    );
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build(args) => build(args),
        Command::Eval(args) => evaluate(
            &args.model,
            args.seed,
            args.cfg,
            args.temperature,
            args.images.as_deref(),
            true,
        )
        .map(|_| ()),
        Command::Card(args) => card(&args.model),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("janus-shapes: {e}");
            ExitCode::FAILURE
        }
    }
}
