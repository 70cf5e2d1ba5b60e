//! Unmasked multi-head self-attention straight from a fused `qkv` projection (SigLIP).
//!
//! burn's fused `attention` on burn-flex copies q, k and v out of the permuted `qkv` view and
//! evaluates the softmax with scalar `exp`; here each (batch, head) is one task on rayon's pool:
//! `S = Q·Kᵀ` and `O = P·V` are `gemm` products reading q, k and v where they lie in the `qkv`
//! rows (strided, no copy) and writing the head's output columns in place, with a vectorised
//! softmax in between.

use rayon::prelude::*;

use crate::kernels::SharedOut;
use crate::kernels::act::softmax_row;
use crate::kernels::rows::Isa;
use crate::kernels::sgemm::{Strided, sgemm};

/// `softmax(Q·Kᵀ/√d)·V` for every head.
///
/// `qkv` is `[batch, tokens, 3·heads·head_dim]` row-major with each row laid out as
/// `(q, k, v) × heads × head_dim` (timm / SigLIP `qkv` linear). Returns
/// `[batch, tokens, heads·head_dim]` (heads concatenated, as before the output projection), or
/// `None` when a size is 0 or `qkv`'s length does not match.
pub fn attention_qkv(
    qkv: &[f32],
    batch: usize,
    tokens: usize,
    heads: usize,
    head_dim: usize,
) -> Option<Vec<f32>> {
    let width = heads * head_dim;
    if batch == 0 || tokens == 0 || width == 0 || qkv.len() != batch * tokens * 3 * width {
        return None;
    }
    let mut out = vec![0f32; batch * tokens * width];
    let out_ptr = SharedOut(out.as_mut_ptr());
    let scale = 1.0 / (head_dim as f32).sqrt();
    let isa = Isa::detect();
    (0..batch * heads).into_par_iter().for_each(|task| {
        let (b, h) = (task / heads, task % heads);
        let base = b * tokens * 3 * width + h * head_dim;
        let row = (3 * width) as isize;
        let mut scores = vec![0f32; tokens * tokens];
        // SAFETY: every pointer/stride pair stays inside `qkv` (q, k, v of head h in the rows
        // of batch b) or inside `scores`; without `accumulate`, `dst` is only written.
        unsafe {
            sgemm(
                (tokens, tokens, head_dim),
                Strided::rows(scores.as_mut_ptr(), tokens),
                false,
                Strided::rows(qkv.as_ptr().add(base), 3 * width),
                // Kᵀ: head h's keys, read down the rows.
                Strided {
                    ptr: qkv.as_ptr().add(base + width),
                    row_stride: 1,
                    col_stride: row,
                },
            );
        }
        for r in scores.chunks_exact_mut(tokens) {
            softmax_row(isa, r, scale);
        }
        let dst = out_ptr.at(b * tokens * width + h * head_dim);
        // SAFETY: `dst` addresses head h's `head_dim` columns of batch b's `tokens` output rows
        // (row stride `width`); no other task writes those columns.
        unsafe {
            sgemm(
                (tokens, head_dim, tokens),
                Strided::rows(dst, width),
                false,
                Strided::rows(scores.as_ptr(), tokens),
                Strided::rows(qkv.as_ptr().add(base + 2 * width), 3 * width),
            );
        }
    });
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_direct_f64_evaluation() {
        let (batch, tokens, heads, dim) = (2, 13, 3, 5);
        let width = heads * dim;
        let qkv: Vec<f32> = (0..batch * tokens * 3 * width)
            .map(|i| ((i * 7919) % 1009) as f32 / 1009.0 * 2.0 - 1.0)
            .collect();
        let out = attention_qkv(&qkv, batch, tokens, heads, dim).expect("sizes fit");
        let at = |b: usize, t: usize, part: usize, h: usize, d: usize| {
            qkv[((b * tokens + t) * 3 + part) * width + h * dim + d] as f64
        };
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..tokens {
                    let s: Vec<f64> = (0..tokens)
                        .map(|j| {
                            (0..dim)
                                .map(|d| at(b, i, 0, h, d) * at(b, j, 1, h, d))
                                .sum::<f64>()
                                / (dim as f64).sqrt()
                        })
                        .collect();
                    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for d in 0..dim {
                        let want: f64 = (0..tokens)
                            .map(|j| e[j] / sum * at(b, j, 2, h, d))
                            .sum::<f64>();
                        let got = out[(b * tokens + i) * width + h * dim + d] as f64;
                        assert!(
                            (got - want).abs() < 1e-5,
                            "b{b} h{h} i{i} d{d}: {got} vs {want}"
                        );
                    }
                }
            }
        }
        assert!(attention_qkv(&qkv, batch, tokens, heads, dim + 1).is_none());
        assert!(attention_qkv(&qkv, 0, tokens, heads, dim).is_none());
    }
}
