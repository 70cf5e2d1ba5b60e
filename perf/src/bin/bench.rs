//! The standard inference workload (docs/workload.md) on random weights.
//!
//! Times SigLIP + aligner, a 640-position prefill, greedy decode steps, CFG image-generation
//! steps and a VQ decode through the library's own code paths. Every figure is the median of
//! `--repeats` runs after one warm-up run. Prints readable lines, then one JSON object on the
//! last line of stdout.
//!
//! ```sh
//! cargo run --release -p janus-perf --bin bench                  # Janus-Pro-1B shape, f32, all cores
//! cargo run --release -p janus-perf --bin bench -- --shape tiny  # quick smoke run on the fixture's shape
//! cargo run --release -p janus-perf --bin bench -- --dtype bf16 --threads 2 --repeats 3
//! cargo run --release -p janus-perf --bin bench -- --dtype q4_k --only images16  # 16 images in one call
//! ```

use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use janus_perf::{
    DECODE_STEPS, GEN_STEPS, IMAGES_PER_CALL, Shape, Workload, mean_ms, median, peak_rss_mb,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Stage {
    /// `vision_ms`.
    Vision,
    /// `prefill_ms` and `decode_ms_per_token`.
    Text,
    /// `gen_ms_per_step`.
    Gen,
    /// `vq_decode_ms`.
    Vq,
    /// `images_per_minute_16`: 16 images drawn whole in one call (32 CFG rows a step) and
    /// decoded, timed once after a 2-step warm-up. Minutes at the real shape: never run by
    /// default, only when named in `--only`.
    Images16,
}

#[derive(Parser)]
#[command(about = "Time the standard Janus inference workload on random weights")]
struct Args {
    /// Model shape: the real Janus-Pro-1B one (the standard workload), Janus-Pro-7B (use a
    /// 16-bit `--dtype` on a 24 GiB machine), or the bundled tiny fixture's (smoke runs; the
    /// prefill is then capped by its 512-position context).
    #[arg(long, default_value = "pro-1b", value_parser = ["pro-1b", "pro-7b", "tiny"])]
    shape: String,
    /// Parameter and activation dtype, or a quantised tier (`q8_0`, `q4_k`: the language
    /// model's linear layers in GGML blocks, the rest in f32).
    #[arg(long, default_value = "f32", value_parser = janus_cli::parse_precision)]
    dtype: janus_cli::Precision,
    /// Threads of the global rayon pool the CPU backend runs on (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Timed runs of each stage after the warm-up; figures are their median.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Run only these stages (comma-separated); the others' keys are `null`.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Stage>,
}

/// A JSON number with `decimals` places, or `null`.
fn num(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "null".into(),
    }
}

/// Runs `f` once to warm up, then `repeats` times; returns the median of its values.
fn measure(
    name: &str,
    repeats: usize,
    mut f: impl FnMut() -> anyhow::Result<f64>,
) -> anyhow::Result<f64> {
    let warm = f()?;
    eprintln!("  {name}: warm-up {warm:.1}");
    let mut values = Vec::with_capacity(repeats);
    for i in 0..repeats {
        let v = f()?;
        eprintln!("  {name}: run {}/{repeats} {v:.1}", i + 1);
        values.push(v);
    }
    Ok(median(&values))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let shape = Shape::parse(&args.shape).context("unknown shape")?;
    let precision = args.dtype;
    let dtype = precision.dtype;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .context("configuring the rayon thread pool")?;
    let threads = rayon::current_num_threads();
    let runs =
        |stage| args.only.contains(&stage) || (args.only.is_empty() && stage != Stage::Images16);

    let device = janus_cli::default_device();
    let config = shape.config()?;
    println!(
        "janus-rs bench: shape {}, dtype {}, {threads} thread(s), median of {} run(s) after 1 warm-up",
        shape.name(),
        precision,
        args.repeats
    );
    let start = Instant::now();
    let w = Workload::with_quant(config, dtype, precision.quant, device)?;
    println!(
        "model: {:.3} B parameters materialised in {:.1} s",
        w.num_params() as f64 / 1e9,
        start.elapsed().as_secs_f64()
    );
    // Which product kernel variant this CPU runs, for comparing machines (perf notes §27).
    println!(
        "janus-kernels weight prefetch: {}",
        if janus_kernels::weight_prefetch() {
            "on"
        } else {
            "off"
        }
    );

    let mut vision_ms = None;
    if runs(Stage::Vision) {
        let s = w.config.vision.image_size;
        let ms = measure("vision_ms", args.repeats, || {
            let pixels = w.vision_input();
            let start = Instant::now();
            let features = w.vision(pixels);
            let elapsed = start.elapsed().as_secs_f64() * 1e3;
            let [_, n, d] = features.dims();
            anyhow::ensure!(n == w.config.num_image_tokens(), "{n} image tokens");
            anyhow::ensure!(d == w.config.language.hidden_size, "width {d}");
            Ok(elapsed)
        })?;
        println!("vision_ms            {ms:10.2}  (3x{s}x{s} image -> SigLIP + aligner)");
        vision_ms = Some(ms);
    }

    let (mut prefill_ms, mut decode_ms) = (None, None);
    if runs(Stage::Text) {
        let t = w.prefill_len();
        let d = w.config.language.hidden_size;
        let mut prefills = Vec::new();
        let mut decodes = Vec::new();
        for i in 0..=args.repeats {
            let embeds = w.prefill_input();
            let start = Instant::now();
            let (mut cache, first) = w.prefill(embeds, DECODE_STEPS)?;
            let prefill = start.elapsed().as_secs_f64() * 1e3;
            let steps = mean_ms(&w.decode(&mut cache, first, DECODE_STEPS)?);
            let label = if i == 0 {
                "warm-up".to_string()
            } else {
                format!("run {i}/{}", args.repeats)
            };
            eprintln!("  prefill_ms: {label} {prefill:.1}; decode_ms_per_token {steps:.1}");
            if i > 0 {
                prefills.push(prefill);
                decodes.push(steps);
            }
        }
        let (p, s) = (median(&prefills), median(&decodes));
        println!(
            "prefill_ms           {p:10.2}  ([1,{t},{d}] through the layers + lm_head on the last position)"
        );
        println!(
            "decode_ms_per_token  {s:10.2}  (mean of {DECODE_STEPS} greedy steps after the prefill; {:.2} tokens/s)",
            1e3 / s
        );
        prefill_ms = Some(p);
        decode_ms = Some(s);
    }

    let mut gen_ms = None;
    if runs(Stage::Gen) {
        let batch = w.gen_batch()?;
        let mut seed = 0;
        let ms = measure("gen_ms_per_step", args.repeats, || {
            seed += 1;
            let (_, steps) = w.generate(&batch, GEN_STEPS, seed)?;
            Ok(mean_ms(&steps))
        })?;
        println!(
            "gen_ms_per_step      {ms:10.2}  (2 CFG rows, {}-position prompt, mean of {GEN_STEPS} steps)",
            batch.len
        );
        gen_ms = Some(ms);
    }

    let mut vq_ms = None;
    if runs(Stage::Vq) {
        let codes = w.vq_codes();
        let ms = measure("vq_decode_ms", args.repeats, || {
            let start = Instant::now();
            w.vq_decode(&codes)?;
            Ok(start.elapsed().as_secs_f64() * 1e3)
        })?;
        let s = w.config.gen_vision.image_size;
        println!(
            "vq_decode_ms         {ms:10.2}  ({} codes -> one 3x{s}x{s} image)",
            w.codes_per_image()
        );
        vq_ms = Some(ms);
    }

    let mut images16_s = None;
    if runs(Stage::Images16) {
        let batch = w.images_batch()?;
        w.generate(&batch, 2, 1)?;
        let s = w.draw_images(&batch, 2)?;
        let n = batch.images();
        println!(
            "images_per_minute_16 {:10.2}  ({n} images of {} codes in one call, CFG 5, {} rows a step, + VQ decode: {s:.1} s)",
            n as f64 * 60.0 / s,
            w.codes_per_image(),
            batch.rows()
        );
        images16_s = Some(s);
    }
    let images_per_minute = images16_s.map(|s| IMAGES_PER_CALL as f64 * 60.0 / s);

    let codes = w.codes_per_image();
    let image_s = gen_ms.zip(vq_ms).map(|(g, v)| (codes as f64 * g + v) / 1e3);
    if let Some(s) = image_s {
        println!(
            "image_s_estimate     {s:10.2}  (({codes} x gen_ms_per_step + vq_decode_ms) / 1000)"
        );
    }
    let rss = peak_rss_mb();
    println!("peak_rss_mb          {:>10}  (VmHWM)", num(rss, 1));
    println!(
        "{{\"impl\":\"janus-rs\",\"dtype\":\"{}\",\"threads\":{threads},\"vision_ms\":{},\"prefill_ms\":{},\"decode_ms_per_token\":{},\"gen_ms_per_step\":{},\"vq_decode_ms\":{},\"image_s_estimate\":{},\"images_per_minute_16\":{},\"images16_s\":{},\"peak_rss_mb\":{}}}",
        precision,
        num(vision_ms, 3),
        num(prefill_ms, 3),
        num(decode_ms, 3),
        num(gen_ms, 3),
        num(vq_ms, 3),
        num(image_s, 3),
        num(images_per_minute, 3),
        num(images16_s, 1),
        num(rss, 1),
    );
    Ok(())
}
