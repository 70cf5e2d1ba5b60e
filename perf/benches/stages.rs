//! Criterion benches of the inference stages of the standard workload (docs/workload.md), on
//! random weights: SigLIP + aligner, prefill, one decode step, one CFG generation step, VQ
//! decode.
//!
//! ```sh
//! cargo bench -p janus-perf --bench stages                     # tiny fixture shape, about a minute
//! JANUS_BENCH_REAL=1 cargo bench -p janus-perf --bench stages  # Janus-Pro-1B shape: ~8 GB, many minutes
//! JANUS_BENCH_DTYPE=bf16 cargo bench -p janus-perf --bench stages -- decode
//! ```
//!
//! Threads: the global rayon pool (all cores, or `RAYON_NUM_THREADS`).

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use janus_cli::{dtype_name, parse_dtype};
use janus_perf::{DECODE_STEPS, GEN_STEPS, Shape, Workload};

/// The model shared by every group, built on first use.
fn workload() -> &'static Workload {
    static WORKLOAD: OnceLock<Workload> = OnceLock::new();
    WORKLOAD.get_or_init(|| {
        let shape = if std::env::var_os("JANUS_BENCH_REAL").is_some_and(|v| v != "0") {
            Shape::Pro1b
        } else {
            Shape::Tiny
        };
        let dtype_var = std::env::var("JANUS_BENCH_DTYPE").unwrap_or_else(|_| "f32".into());
        let dtype = parse_dtype(&dtype_var)
            .unwrap_or_else(|e| panic!("JANUS_BENCH_DTYPE={dtype_var}: {e}"));
        let config = shape.config().expect("model config");
        let start = Instant::now();
        let w = Workload::new(config, dtype, janus_cli::default_device()).expect("model init");
        eprintln!(
            "janus bench: shape {}, dtype {}, {} threads, {:.3} B params in {:.1?}",
            shape.name(),
            dtype_name(dtype),
            rayon_threads(),
            w.num_params() as f64 / 1e9,
            start.elapsed()
        );
        w
    })
}

fn rayon_threads() -> String {
    std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into())
}

/// `name` tagged with the dtype, so runs in different dtypes keep separate baselines.
fn id(name: &str) -> String {
    format!("{name}/{}", dtype_name(workload().dtype))
}

fn vision(c: &mut Criterion) {
    let w = workload();
    let pixels = w.vision_input();
    c.bench_function(&id("vision"), |b| {
        b.iter(|| black_box(w.vision(pixels.clone())))
    });
}

fn prefill(c: &mut Criterion) {
    let w = workload();
    let embeds = w.prefill_input();
    c.bench_function(&id("prefill"), |b| {
        b.iter(|| black_box(w.prefill(embeds.clone(), 1).expect("prefill")))
    });
}

/// One greedy step at a context of `prefill_len` to `prefill_len + 32` positions: the cache is
/// prefilled once, and rewound after every [`DECODE_STEPS`] steps.
fn decode_step(c: &mut Criterion) {
    let w = workload();
    let (mut cache, first) = w.prefill(w.prefill_input(), DECODE_STEPS).expect("prefill");
    let prefix = cache.len();
    c.bench_function(&id("decode_step"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let n = left.min(DECODE_STEPS);
                cache.truncate(prefix);
                total += w
                    .decode(&mut cache, first, n)
                    .expect("decode")
                    .iter()
                    .sum::<Duration>();
                left -= n;
            }
            total
        })
    });
}

/// One CFG step (2 rows): `generate_image_codes` calls of up to [`GEN_STEPS`] + 1 codes, timing
/// only the steps after the prompt prefill and the first draw.
fn gen_step(c: &mut Criterion) {
    let w = workload();
    let batch = w.gen_batch().expect("generation batch");
    let mut seed = 0;
    c.bench_function(&id("gen_step"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let n = left.min(GEN_STEPS);
                seed += 1;
                let (_, steps) = w.generate(&batch, n, seed).expect("generate");
                total += steps.iter().sum::<Duration>();
                left -= n;
            }
            total
        })
    });
}

fn vq_decode(c: &mut Criterion) {
    let w = workload();
    let codes = w.vq_codes();
    c.bench_function(&id("vq_decode"), |b| {
        b.iter(|| w.vq_decode(black_box(&codes)).expect("vq decode"))
    });
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = stages;
    config = config();
    targets = vision, prefill, decode_step, gen_step, vq_decode
}
criterion_main!(stages);
