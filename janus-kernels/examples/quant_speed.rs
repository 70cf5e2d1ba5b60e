//! Times few-row products at LLaMA-1B shapes: f32 and f16 weights (`profiling::matmul_rows_with`) against
//! Q8_0 and Q4_K ([`QuantMatrix::matmul_rows`]) on each instruction set; then prefill-sized
//! products (640 rows): the f32 GEMM on all threads, as burn-flex calls it, against
//! [`QuantMatrix::matmul_t`] (dequantised weight, the same GEMM); last, batches of 8 to 640 rows:
//! that GEMM against the batch kernel (`profiling::batch_matmul_t_f32`) and `matmul_t`.
//!
//! ```text
//! cargo build --workspace --release --all-targets
//! target/release/examples/quant_speed [iterations]
//! ```

use half::f16;
use janus_kernels::WeightLayout;
use janus_kernels::profiling::{Isa, Weights, batch_matmul_t_f32, matmul_rows_with};
use janus_kernels::quant::{QuantIsa, QuantKind, QuantMatrix};
use std::time::Instant;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

/// Median milliseconds of `iters` calls after two warm-up calls.
fn time(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    f();
    let mut t: Vec<f64> = (0..iters)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[iters / 2]
}

fn main() {
    let iters: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    println!(
        "threads {}, best ISA {:?}, median of {iters}",
        rayon::current_num_threads(),
        QuantIsa::detect()
    );
    println!(
        "{:<11} {:>2} {:<22} {:>9} {:>8}",
        "shape", "m", "weights", "ms", "GB/s"
    );
    for (n, k) in [(2048usize, 2048usize), (5632, 2048)] {
        let w = values(n * k, 1);
        let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let q8 = QuantMatrix::quantize(QuantKind::Q8_0, &w, n, k).unwrap();
        let q4 = QuantMatrix::quantize(QuantKind::Q4K, &w, n, k).unwrap();
        for m in [1usize, 2, 4] {
            let x = values(m * k, 2);
            let line = |name: &str, bytes: usize, ms: f64| {
                println!(
                    "{:<11} {m:>2} {name:<22} {ms:>9.3} {:>8.1}",
                    format!("{n}x{k}"),
                    bytes as f64 / ms / 1e6
                );
            };
            let ms = time(iters, || {
                std::hint::black_box(
                    matmul_rows_with(
                        Isa::detect(),
                        &x,
                        m,
                        Weights::F32(&w),
                        WeightLayout::OutIn,
                        k,
                        n,
                    )
                    .unwrap(),
                );
            });
            line("f32", n * k * 4, ms);
            let ms = time(iters, || {
                std::hint::black_box(
                    matmul_rows_with(
                        Isa::detect(),
                        &x,
                        m,
                        Weights::F16(&wh),
                        WeightLayout::OutIn,
                        k,
                        n,
                    )
                    .unwrap(),
                );
            });
            line("f16", n * k * 2, ms);
            for (q, name) in [(&q8, "q8_0"), (&q4, "q4_K")] {
                for isa in [QuantIsa::Portable, QuantIsa::Avx2, QuantIsa::Avx512Vnni] {
                    if isa.supported() != isa {
                        continue;
                    }
                    let ms = time(iters, || {
                        std::hint::black_box(q.matmul_rows_with(isa, &x, m).unwrap());
                    });
                    line(&format!("{name} {isa:?}"), q.bytes().len(), ms);
                }
            }
        }
    }
    prefill(iters.clamp(3, 10));
    batches(iters.clamp(3, 20));
}

/// `y = x · Wᵀ` by `gemm` on all threads over the weight's transposed view, as burn-flex's
/// product runs it.
fn gemm_t(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    // A fresh output each call, as burn-flex's product allocates one.
    let mut y = vec![0f32; m * n];
    // SAFETY: x is [m, k], w is [n, k] read as its [k, n] transposed view, y is [m, n].
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
    y
}

/// Batches of rows: `gemm` against the batch kernel over the f32 weight and `matmul_t` over
/// Q8_0 and Q4_K (the batch kernel over rows dequantised as it goes, up to 128 rows).
fn batches(iters: usize) {
    println!("\nbatches, median of {iters}");
    println!(
        "{:<11} {:>3} {:>9} {:>8} {:>9} {:>8} {:>9} {:>9}",
        "shape", "m", "gemm ms", "GFLOP/s", "batch ms", "GFLOP/s", "q8_0 ms", "q4_K ms"
    );
    for (n, k) in [(2048usize, 2048usize), (5632, 2048), (2048, 5632)] {
        let w = values(n * k, 1);
        let q8 = QuantMatrix::quantize(QuantKind::Q8_0, &w, n, k).unwrap();
        let q4 = QuantMatrix::quantize(QuantKind::Q4K, &w, n, k).unwrap();
        for m in [8usize, 16, 32, 64, 128, 640] {
            let x = values(m * k, 2);
            let gflop = 2.0 * (m * n * k) as f64 / 1e6;
            let gemm_ms = time(iters, || {
                std::hint::black_box(gemm_t(&x, m, k, &w, n));
            });
            let batch_ms = time(iters, || {
                std::hint::black_box(batch_matmul_t_f32(&x, m, k, &w, n));
            });
            let q8_ms = time(iters, || {
                std::hint::black_box(q8.matmul_t(&x, m).unwrap());
            });
            let q4_ms = time(iters, || {
                std::hint::black_box(q4.matmul_t(&x, m).unwrap());
            });
            println!(
                "{:<11} {m:>3} {gemm_ms:>9.2} {:>8.0} {batch_ms:>9.2} {:>8.0} {q8_ms:>9.2} {q4_ms:>9.2}",
                format!("{n}x{k}"),
                gflop / gemm_ms,
                gflop / batch_ms,
            );
        }
    }
}

/// 640-row products: `gemm` on all threads over the f32 weight's transposed view (burn-flex's
/// prefill product) against `matmul_t` over Q8_0 and Q4_K.
fn prefill(iters: usize) {
    const M: usize = 640;
    println!("\nprefill, {M} rows, median of {iters}");
    println!(
        "{:<11} {:<8} {:>9} {:>8}",
        "shape", "weights", "ms", "× f32"
    );
    for (n, k) in [(2048usize, 2048usize), (5632, 2048), (2048, 5632)] {
        let w = values(n * k, 1);
        let x = values(M * k, 2);
        let f32_ms = time(iters, || {
            std::hint::black_box(gemm_t(&x, M, k, &w, n));
        });
        println!(
            "{:<11} {:<8} {f32_ms:>9.2} {:>8.3}",
            format!("{n}x{k}"),
            "f32",
            1.0
        );
        for kind in [QuantKind::Q8_0, QuantKind::Q4K] {
            let q = QuantMatrix::quantize(kind, &w, n, k).unwrap();
            let ms = time(iters, || {
                std::hint::black_box(q.matmul_t(&x, M).unwrap());
            });
            println!(
                "{:<11} {:<8} {ms:>9.2} {:>8.3}",
                format!("{n}x{k}"),
                format!("{kind:?}"),
                ms / f32_ms
            );
            let mut scratch = vec![0f32; n * k];
            let ms = time(iters, || {
                q.dequantize_rows_into(0..n, &mut scratch).unwrap();
                std::hint::black_box(&scratch);
            });
            println!(
                "{:<11} {:<8} {ms:>9.2} {:>8.3}",
                format!("{n}x{k}"),
                format!("{kind:?} deq"),
                ms / f32_ms
            );
        }
    }
}
