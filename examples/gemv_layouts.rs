//! Decode-shape matrix-vector products on burn-flex, by weight layout: how many GB/s each way of
//! computing `x · W` for 1 or 2 rows pulls from memory (24 distinct 2048×5632 f32 weights, 1.1 GB,
//! so every call streams from DRAM). The measurements behind docs/perf-notes.md.
//!
//! ```sh
//! cargo run --release --example gemv_layouts
//! ```

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use janus_core::janus_llm::few_rows_matmul_t;

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
}
