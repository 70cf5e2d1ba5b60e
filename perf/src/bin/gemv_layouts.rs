//! Decode-shape matrix-vector products on burn-flex, by weight layout: how many GB/s each way of
//! computing `x · W` for 1 or 2 rows pulls from memory (24 distinct 2048×5632 f32 weights, 1.1 GB,
//! so every call streams from DRAM), and janus-kernels' few-row products on the same shapes. The
//! measurements behind docs/perf-notes.md.
//!
//! ```sh
//! cargo run --release -p janus-perf --bin gemv_layouts
//! ```

// Links janus-cli, whose global allocator (mimalloc) the measured binaries run with.
use janus_cli as _;
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use janus_kernels::profiling::few_rows_matmul_t;

const N: usize = 24;
const K: usize = 2048;
const M: usize = 5632;

fn main() {
    let device = Device::flex();
    // burn's Linear layout [in, out], and the checkpoint's [out, in], both contiguous.
    let w_in_out: Vec<Tensor<2>> = (0..N)
        .map(|_| Tensor::random([K, M], Distribution::Default, &device))
        .collect();
    let w_out_in: Vec<Tensor<2>> = w_in_out
        .iter()
        .map(|w| Tensor::from_data(w.clone().transpose().into_data(), &device))
        .collect();
    let bytes = (N * K * M * 4) as f64;
    for rows in [1usize, 2] {
        let x = Tensor::<2>::random([rows, K], Distribution::Default, &device);
        let variants: [(&str, &dyn Fn(usize) -> Tensor<2>); 5] = [
            ("x·W, W [in,out]", &|i| {
                x.clone().matmul(w_in_out[i].clone())
            }),
            ("x·Wᵀ view, W [out,in]", &|i| {
                x.clone().matmul(w_out_in[i].clone().transpose())
            }),
            ("(W·xᵀ)ᵀ, W [out,in]", &|i| {
                w_out_in[i]
                    .clone()
                    .matmul(x.clone().transpose())
                    .transpose()
            }),
            ("row by row (W·xᵣᵀ)ᵀ", &|i| {
                let parts = (0..rows)
                    .map(|r| {
                        w_out_in[i]
                            .clone()
                            .matmul(x.clone().slice([r..r + 1, 0..K]).transpose())
                    })
                    .collect();
                Tensor::cat(parts, 1).transpose()
            }),
            ("x·W, K split on 2 threads", &|i| {
                let (a, b) = rayon::join(
                    || {
                        x.clone()
                            .slice([0..rows, 0..K / 2])
                            .matmul(w_in_out[i].clone().slice([0..K / 2, 0..M]))
                    },
                    || {
                        x.clone()
                            .slice([0..rows, K / 2..K])
                            .matmul(w_in_out[i].clone().slice([K / 2..K, 0..M]))
                    },
                );
                a.add(b)
            }),
        ];
        for (name, f) in variants {
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                for i in 0..N {
                    let _ = f(i).into_data();
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!("rows {rows}  {name:<28} {:5.1} GB/s", bytes / best / 1e9);
        }
        for block_kib in [1024usize, 4096, 16384] {
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                for w in &w_out_in {
                    let _ = few_rows_matmul_t(x.clone(), w.clone(), block_kib * 1024).into_data();
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            let name = format!("blocks of {block_kib} KiB, rayon");
            println!("rows {rows}  {name:<28} {:5.1} GB/s", bytes / best / 1e9);
        }
    }
    janus_kernels_rates();
}

/// janus-kernels' few-row products on plain slices: both layouts, f32 and f16 weights, with and
/// without AVX2. GB/s counts the bytes actually read (f16 reads half); ms/GB is per GB of f32
/// weights, so it compares the dtypes directly.
fn janus_kernels_rates() {
    use burn::tensor::f16;
    use janus_kernels::WeightLayout;
    use janus_kernels::profiling::{Isa, Weights, matmul_rows_with};
    let f32s: Vec<Vec<f32>> = (0..N)
        .map(|i| {
            (0..K * M)
                .map(|j| ((i * 31 + j * 7) % 97) as f32 / 97.0 - 0.5)
                .collect()
        })
        .collect();
    let f16s: Vec<Vec<f16>> = f32s
        .iter()
        .map(|w| w.iter().map(|&v| f16::from_f32(v)).collect())
        .collect();
    let f32_bytes = (N * K * M * 4) as f64;
    for rows in [1usize, 2, 4] {
        let x: Vec<f32> = (0..rows * K).map(|j| (j % 13) as f32 / 13.0).collect();
        for isa in [Isa::detect(), Isa::Portable] {
            for layout in [WeightLayout::OutIn, WeightLayout::InOut] {
                for half in [false, true] {
                    let mut best = f64::MAX;
                    for _ in 0..3 {
                        let t = Instant::now();
                        for i in 0..N {
                            let w = if half {
                                Weights::F16(&f16s[i])
                            } else {
                                Weights::F32(&f32s[i])
                            };
                            let y = matmul_rows_with(isa, &x, rows, w, layout, K, M);
                            std::hint::black_box(y.expect("sizes match"));
                        }
                        best = best.min(t.elapsed().as_secs_f64());
                    }
                    let read = f32_bytes / if half { 2.0 } else { 1.0 };
                    let dtype = if half { "f16" } else { "f32" };
                    let name = format!("janus-kernels {isa:?} {layout:?} {dtype}");
                    println!(
                        "rows {rows}  {name:<34} {:5.1} GB/s  {:6.2} ms per GB of f32",
                        read / best / 1e9,
                        best / f32_bytes * 1e12
                    );
                }
            }
        }
    }
}
