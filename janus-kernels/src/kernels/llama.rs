//! The LLaMA layers' per-row operations: RMSNorm and the half-split rotary embedding.
//!
//! Each is one pass over the rows, in place, where burn's ops take five to seven (square, mean,
//! add, sqrt, divide, scale; two slices, a negation, a concatenation, two products and a sum),
//! each a separate dispatch and buffer. In a decode step a row is 2048 values, so the
//! dispatches, not the arithmetic, are the cost, and one pass removes most of it
//! (measurements: docs/perf-notes.md §26). The arithmetic is burn's, operation for operation, so
//! the rotation is bit-identical and the norm differs only in the order of its sum.

use rayon::prelude::*;

use crate::kernels::rows::{Weights, widened};

/// Below this many values a call runs on the calling thread: waking rayon's workers costs more
/// than a decode step's row (docs/perf-notes.md §25).
const PARALLEL_FROM: usize = 1 << 16;

/// `x / sqrt(mean(x²) + eps) · weight` for each `weight.len()`-wide row of `x`, in place, with
/// the mean square accumulated in f32 (HF's `LlamaRMSNorm` in f32).
///
/// Returns `false` (and leaves `x` alone) when `x` is not a whole number of rows.
pub fn rms_norm(x: &mut [f32], weight: Weights<'_>, eps: f32) -> bool {
    let d = weight.len();
    if d == 0 || !x.len().is_multiple_of(d) {
        return false;
    }
    // Widened once per call by `half`'s vectorised conversion: element by element, the f16
    // conversion alone took longer than the norm.
    let wide;
    let weight: &[f32] = match weight {
        Weights::F32(w) => w,
        Weights::F16(w) => {
            wide = widened(w);
            &wide
        }
        Weights::BF16(w) => {
            wide = widened(w);
            &wide
        }
    };
    let norm = |row: &mut [f32]| {
        let rms = (sum_squares(row) / d as f32 + eps).sqrt();
        for (v, w) in row.iter_mut().zip(weight) {
            *v = *v / rms * w;
        }
    };
    if x.len() >= PARALLEL_FROM {
        x.par_chunks_mut(d).for_each(norm);
    } else {
        x.chunks_mut(d).for_each(norm);
    }
    true
}

/// Σ v², in eight lane-wise partial sums the compiler keeps in a vector register.
fn sum_squares(row: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v * v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `x·cos + rotate_half(x)·sin` with `rotate_half([a, b]) = [−b, a]`, in place.
///
/// `x` is `[batch, heads, tokens, d]` and `cos`, `sin` are `[batch, tokens, d]` (one table
/// for all heads), all row-major. Returns `false` (and leaves `x` alone) when the sizes do not
/// fit together or `d` is odd.
pub fn rope(
    x: &mut [f32],
    (batch, heads, tokens, d): (usize, usize, usize, usize),
    cos: &[f32],
    sin: &[f32],
) -> bool {
    let table = batch * tokens * d;
    if d == 0
        || !d.is_multiple_of(2)
        || x.len() != batch * heads * tokens * d
        || cos.len() != table
        || sin.len() != table
    {
        return false;
    }
    let half = d / 2;
    // One task per (batch, head): `tokens` rows, against the batch row's tables.
    let rotate = |(bh, rows): (usize, &mut [f32])| {
        let b = bh / heads;
        let tables = b * tokens * d..(b + 1) * tokens * d;
        let (cos, sin) = (&cos[tables.clone()], &sin[tables]);
        for ((row, c), s) in rows
            .chunks_exact_mut(d)
            .zip(cos.chunks_exact(d))
            .zip(sin.chunks_exact(d))
        {
            let (first, second) = row.split_at_mut(half);
            for i in 0..half {
                let (a, b) = (first[i], second[i]);
                // burn's `x·cos + rotated·sin` with rotated = [−b, a], in its order.
                first[i] = a * c[i] + -b * s[i];
                second[i] = b * c[half + i] + a * s[half + i];
            }
        }
    };
    if x.len() >= PARALLEL_FROM {
        x.par_chunks_mut(tokens * d).enumerate().for_each(rotate);
    } else {
        x.chunks_mut(tokens * d).enumerate().for_each(rotate);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_values as values;
    use half::{bf16, f16};

    #[test]
    fn rms_norm_matches_f64_for_every_weight_type_and_both_paths() {
        // 3 rows of 37 (odd width, serial path) and 40 rows of 2048 (parallel path).
        for (rows, d) in [(3usize, 37usize), (40, 2048)] {
            let x = values(rows * d, 1);
            let w32 = values(d, 2);
            let w16: Vec<f16> = w32.iter().map(|v| f16::from_f32(*v)).collect();
            let wb: Vec<bf16> = w32.iter().map(|v| bf16::from_f32(*v)).collect();
            let cases: [(Weights<'_>, Vec<f32>); 3] = [
                (Weights::F32(&w32), w32.clone()),
                (Weights::F16(&w16), w16.iter().map(|v| v.to_f32()).collect()),
                (Weights::BF16(&wb), wb.iter().map(|v| v.to_f32()).collect()),
            ];
            for (weights, wide) in cases {
                let mut y = x.clone();
                assert!(rms_norm(&mut y, weights, 1e-6));
                for (r, (got, row)) in y.chunks(d).zip(x.chunks(d)).enumerate() {
                    let ms = row.iter().map(|v| *v as f64 * *v as f64).sum::<f64>() / d as f64;
                    let rms = (ms + 1e-6).sqrt();
                    for (i, g) in got.iter().enumerate() {
                        let want = row[i] as f64 / rms * wide[i] as f64;
                        assert!(
                            (*g as f64 - want).abs() < 1e-5,
                            "row {r} [{i}]: {g} vs {want}"
                        );
                    }
                }
            }
        }
        let mut ragged = values(10, 3);
        assert!(!rms_norm(&mut ragged, Weights::F32(&[1.0; 4]), 1e-6));
        assert_eq!(ragged, values(10, 3), "a refused call wrote to x");
    }

    #[test]
    fn rope_is_burns_arithmetic_for_every_head_and_batch_row() {
        // 2 batch rows with their own tables, 3 heads; the second size takes the parallel path.
        for (batch, heads, tokens, d) in [(2usize, 3usize, 5usize, 8usize), (2, 4, 80, 128)] {
            let x = values(batch * heads * tokens * d, 4);
            let cos = values(batch * tokens * d, 5);
            let sin = values(batch * tokens * d, 6);
            let mut y = x.clone();
            assert!(rope(&mut y, (batch, heads, tokens, d), &cos, &sin));
            let half = d / 2;
            for b in 0..batch {
                for h in 0..heads {
                    for t in 0..tokens {
                        let row = ((b * heads + h) * tokens + t) * d;
                        let tab = (b * tokens + t) * d;
                        for i in 0..d {
                            let rotated = if i < half {
                                -x[row + i + half]
                            } else {
                                x[row + i - half]
                            };
                            let want = x[row + i] * cos[tab + i] + rotated * sin[tab + i];
                            assert_eq!(y[row + i], want, "b {b} h {h} t {t} [{i}]");
                        }
                    }
                }
            }
        }
        let mut odd = values(6, 1);
        assert!(!rope(&mut odd, (1, 1, 2, 3), &[0.0; 6], &[0.0; 6]));
        assert!(!rope(&mut odd, (1, 2, 2, 2), &[0.0; 4], &[0.0; 4]));
        assert_eq!(odd, values(6, 1));
    }
}
