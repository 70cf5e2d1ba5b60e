//! Profiling aid for the LLM stages of the standard workload (docs/perf-notes.md).
//!
//! Builds the Janus-Pro-1B-shaped random model, then runs one stage (`prefill`, `decode` or
//! `gen`) and prints its times. When `PERF_CTL` names a `perf record --control=fifo:…` FIFO,
//! profiling is enabled only around that stage, so model materialisation stays out of the
//! profile:
//!
//! ```text
//! mkfifo /tmp/ctl
//! PERF_CTL=/tmp/ctl perf record --control=fifo:/tmp/ctl -D -1 -g \
//!     ./target/release/llm_phases decode [steps] [f32|f16|bf16]
//! ```
//!
//! `products [steps] [dtype] [rounds]` alternates a pass of one-row products over the decode
//! step's weights with decode steps, in one process (the weight stream against the whole step).
//!
//! `prefetch [steps] [dtype] [rounds]` alternates blocks of decode steps with janus-kernels'
//! weight prefetch on and off (`janus_kernels::set_weight_prefetch`), in one process.
//!
//! With a fourth argument `blocks` (`decode` or `gen`), the model is built and prefilled once,
//! `ready` is printed, and then each line read from stdin runs one block of `steps` steps and
//! prints `block_ms <mean per step>`: `scripts/side-by-side/duel.sh` runs llama-bench between
//! the blocks, so both sides are timed seconds apart in the same memory-bandwidth window.

use std::io::Write;
use std::time::Instant;

use burn::tensor::{DType, Device, Tensor};
use janus_kernels::WeightLayout;
use janus_perf::{DECODE_STEPS, GEN_STEPS, Shape, Workload, mean_ms, median};

fn perf_ctl(command: &str) {
    if let Ok(path) = std::env::var("PERF_CTL") {
        let mut fifo = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("PERF_CTL fifo");
        writeln!(fifo, "{command}").expect("perf control");
    }
}

fn main() -> anyhow::Result<()> {
    let stage = std::env::args().nth(1).unwrap_or_else(|| "decode".into());
    let steps: usize = std::env::args()
        .nth(2)
        .map_or(Ok(DECODE_STEPS), |s| s.parse())?;
    let dtype = match std::env::args().nth(3) {
        Some(name) => janus_cli::parse_dtype(&name).map_err(anyhow::Error::msg)?,
        None => DType::F32,
    };
    let blocks: Option<usize> = std::env::args().nth(4).map(|s| s.parse()).transpose()?;
    let w = Workload::new(Shape::Pro1b.config()?, dtype, Device::flex())?;
    if stage == "products" {
        return products(&w, steps, blocks.unwrap_or(6));
    }
    if stage == "prefetch" {
        return prefetch(&w, steps, blocks.unwrap_or(6));
    }
    if let Some(blocks) = blocks {
        return run_blocks(&w, &stage, steps, blocks);
    }
    match stage.as_str() {
        "prefill" => {
            perf_ctl("enable");
            let start = Instant::now();
            let (_cache, _) = w.prefill(w.prefill_input(), steps)?;
            perf_ctl("disable");
            println!("prefill_ms {:.1}", start.elapsed().as_secs_f64() * 1e3);
        }
        "decode" => {
            let (mut cache, token) = w.prefill(w.prefill_input(), steps)?;
            perf_ctl("enable");
            let times = w.decode(&mut cache, token, steps)?;
            perf_ctl("disable");
            println!("decode_ms_per_token {:.1}", mean_ms(&times));
        }
        "gen" => {
            let batch = w.gen_batch()?;
            perf_ctl("enable");
            let (_, times) = w.generate(&batch, steps.min(GEN_STEPS), 0)?;
            perf_ctl("disable");
            println!("gen_ms_per_step {:.1}", mean_ms(&times));
        }
        other => anyhow::bail!("unknown stage {other}: prefill, decode or gen"),
    }
    Ok(())
}

/// `blocks` blocks of `steps` decode (or generation) steps, each started by a line on stdin.
/// Decode blocks continue one cache (its length grows by `steps` per block).
fn run_blocks(w: &Workload, stage: &str, steps: usize, blocks: usize) -> anyhow::Result<()> {
    let go = || -> anyhow::Result<bool> {
        let mut line = String::new();
        Ok(std::io::stdin().read_line(&mut line)? > 0)
    };
    let ready = || -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready")?;
        Ok(out.flush()?)
    };
    let report = |times: &[std::time::Duration]| -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "block_ms {:.1}", mean_ms(times))?;
        Ok(out.flush()?)
    };
    match stage {
        "decode" => {
            let (mut cache, token) = w.prefill(w.prefill_input(), steps * blocks)?;
            ready()?;
            for _ in 0..blocks {
                if !go()? {
                    break;
                }
                let times = w.decode(&mut cache, token, steps)?;
                report(&times)?;
            }
        }
        "gen" => {
            let batch = w.gen_batch()?;
            ready()?;
            for block in 0..blocks {
                if !go()? {
                    break;
                }
                let (_, times) = w.generate(&batch, steps.min(GEN_STEPS), block as u64)?;
                report(&times)?;
            }
        }
        other => anyhow::bail!("blocks are for decode or gen, not {other}"),
    }
    Ok(())
}

/// The weight stream alone against the decode step, alternated in one process: each round
/// runs `steps` passes of one-row products over every weight a decode step reads (the layers'
/// seven projections and `lm_head`), then `steps` decode steps. Their ratio is what the rest
/// of the step (attention over the cache, norms, RoPE, sampling, hand-offs) costs, measured in
/// the same memory-bandwidth window (docs/perf-notes.md §25).
fn products(w: &Workload, steps: usize, rounds: usize) -> anyhow::Result<()> {
    let lm = &w.model.language_model;
    let mut weights = Vec::new();
    for layer in &lm.model.layers {
        let (a, m) = (&layer.self_attn, &layer.mlp);
        for linear in [
            &a.q_proj,
            &a.k_proj,
            &a.v_proj,
            &a.o_proj,
            &m.gate_proj,
            &m.up_proj,
            &m.down_proj,
        ] {
            weights.push(linear.weight.val());
        }
    }
    weights.push(lm.lm_head.weight.val());
    let bytes: usize = weights
        .iter()
        .map(|t| t.shape().num_elements() * t.dtype().size())
        .sum();
    // Inputs made before timing, so the timed passes only read weights.
    let inputs: Vec<Tensor<2>> = weights
        .iter()
        .map(|weight| Tensor::ones([1, weight.dims()[1]], &w.device))
        .collect();
    let (mut cache, mut token) = w.prefill(w.prefill_input(), steps * rounds)?;
    for round in 0..rounds {
        let start = Instant::now();
        for _ in 0..steps {
            for (weight, x) in weights.iter().zip(&inputs) {
                let y = janus_kernels::few_rows_matmul(x.clone(), weight, WeightLayout::OutIn);
                std::hint::black_box(y);
            }
        }
        let stream = start.elapsed().as_secs_f64() / steps as f64;
        let start = Instant::now();
        for _ in 0..steps {
            token = w.decode_step(&mut cache, token)?;
        }
        let step = start.elapsed().as_secs_f64() / steps as f64;
        println!(
            "round {round}: products {:.1} ms ({:.1} GB/s), decode step {:.1} ms, step/products {:.3}",
            stream * 1e3,
            bytes as f64 / stream / 1e9,
            step * 1e3,
            step / stream
        );
    }
    Ok(())
}

/// Decode steps with the dot kernel's software prefetch on and off, alternated in one process
/// (the order swapped every round), so both see the same memory-bandwidth windows
/// (docs/perf-notes.md §27).
fn prefetch(w: &Workload, steps: usize, rounds: usize) -> anyhow::Result<()> {
    let default = janus_kernels::weight_prefetch();
    let (mut cache, mut token) = w.prefill(w.prefill_input(), 2 * steps * rounds)?;
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let mut ms = [0f64; 2]; // [off, on]
        for k in 0..2 {
            let on = (k + round) % 2 == 1;
            janus_kernels::set_weight_prefetch(on);
            let start = Instant::now();
            for _ in 0..steps {
                token = w.decode_step(&mut cache, token)?;
            }
            ms[on as usize] = start.elapsed().as_secs_f64() * 1e3 / steps as f64;
        }
        println!(
            "round {round}: decode step without prefetch {:.1} ms, with {:.1} ms, without/with {:.3}",
            ms[0],
            ms[1],
            ms[0] / ms[1]
        );
        ratios.push(ms[0] / ms[1]);
    }
    println!(
        "median without/with {:.3} (default here: prefetch {})",
        median(&ratios),
        if default { "on" } else { "off" }
    );
    janus_kernels::set_weight_prefetch(default);
    Ok(())
}
