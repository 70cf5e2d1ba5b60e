//! `x · W + b` for many rows (SigLIP's linears: 576 rows), the output's columns cut into one
//! band per thread.
//!
//! burn-flex hands the whole product to `gemm` with rayon parallelism, which synchronises its
//! threads after each packed block: the two vCPUs of a VM rarely finish a block together, so the
//! SigLIP products left part of a core idle, and the bias came after as a separate
//! single-threaded pass (measurements: docs/perf-notes.md §28).
//! Here each thread runs one single-threaded `gemm` over its own columns (its own part of the
//! weight packed once, the input packed by each), starting from the bias, so the threads meet
//! only at the end.

use rayon::prelude::*;

use crate::kernels::SharedOut;
use crate::kernels::sgemm::{Strided, sgemm};

/// A `[d_in, d_out]` weight as it lies in memory: element `[i, j]` at
/// `values[offset + i·row_stride + j·col_stride]` (a transposed view is `row_stride = 1`).
#[derive(Clone, Copy, Debug)]
pub struct WeightView<'a> {
    /// The buffer the view reads.
    pub values: &'a [f32],
    /// Index of element `[0, 0]`.
    pub offset: usize,
    /// Elements between `[i, j]` and `[i + 1, j]`.
    pub row_stride: usize,
    /// Elements between `[i, j]` and `[i, j + 1]`.
    pub col_stride: usize,
}

impl WeightView<'_> {
    /// Whether every element of a `[d_in, d_out]` view lies inside `values`.
    fn fits(&self, d_in: usize, d_out: usize) -> bool {
        let last = (d_in - 1)
            .checked_mul(self.row_stride)
            .zip((d_out - 1).checked_mul(self.col_stride))
            .and_then(|(a, b)| a.checked_add(b))
            .and_then(|x| x.checked_add(self.offset));
        last.is_some_and(|last| last < self.values.len())
    }
}

/// Columns of one band: a multiple of 64 (whole micro-tiles of every `gemm` kernel), so only the
/// last band has a ragged edge.
const BAND_ALIGN: usize = 64;

/// `y = x · W (+ bias)` for `rows` rows of `x` (`[rows, d_in]`, row-major): returns `[rows, d_out]`
/// row-major, or `None` when a size is 0 or an operand's length does not match.
///
/// The sum for each output starts from the bias and adds `gemm`'s partial products to it, so
/// it can differ from `(x · W) + bias` in the last bits.
pub fn linear(
    x: &[f32],
    rows: usize,
    d_in: usize,
    weight: WeightView<'_>,
    bias: Option<&[f32]>,
    d_out: usize,
) -> Option<Vec<f32>> {
    if rows == 0 || d_in == 0 || d_out == 0 || x.len() != rows * d_in {
        return None;
    }
    if !weight.fits(d_in, d_out) || bias.is_some_and(|b| b.len() != d_out) {
        return None;
    }
    let mut out = match bias {
        Some(b) => b.repeat(rows),
        None => vec![0f32; rows * d_out],
    };
    let threads = rayon::current_num_threads().max(1);
    let band = d_out.div_ceil(threads).next_multiple_of(BAND_ALIGN);
    let dst = SharedOut(out.as_mut_ptr());
    (0..d_out.div_ceil(band)).into_par_iter().for_each(|i| {
        let (start, end) = (i * band, ((i + 1) * band).min(d_out));
        // SAFETY: the band's columns [start, end) of every row lie inside `out`, and no other
        // band writes them; `x` is `[rows, d_in]`; `fits` checked every weight element read.
        unsafe {
            sgemm(
                (rows, end - start, d_in),
                Strided::rows(dst.at(start), d_out),
                bias.is_some(),
                Strided::rows(x.as_ptr(), d_in),
                Strided {
                    ptr: weight
                        .values
                        .as_ptr()
                        .add(weight.offset + start * weight.col_stride),
                    row_stride: weight.row_stride as isize,
                    col_stride: weight.col_stride as isize,
                },
            );
        }
    });
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32)
            .map(|v| v / (1u32 << 24) as f32 - 0.5)
            .collect()
    }

    /// `x · W + b` in f64, the weight read through the view.
    fn reference(
        x: &[f32],
        rows: usize,
        d_in: usize,
        w: WeightView,
        b: Option<&[f32]>,
        d_out: usize,
    ) -> Vec<f64> {
        let mut y = vec![0f64; rows * d_out];
        for r in 0..rows {
            for j in 0..d_out {
                let mut s = b.map_or(0.0, |b| b[j] as f64);
                for i in 0..d_in {
                    let wv = w.values[w.offset + i * w.row_stride + j * w.col_stride];
                    s += x[r * d_in + i] as f64 * wv as f64;
                }
                y[r * d_out + j] = s;
            }
        }
        y
    }

    fn assert_close(got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!(
                (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{g} vs {w}"
            );
        }
    }

    #[test]
    fn matches_a_reference_in_both_weight_layouts_with_and_without_bias() {
        // d_out not a multiple of the band alignment, more than one band per thread count.
        let (rows, d_in, d_out) = (37, 70, 203);
        let x = values(rows * d_in, 1);
        let bias = values(d_out, 2);
        let w = values(d_in * d_out + 5, 3);
        let in_out = WeightView {
            values: &w,
            offset: 5,
            row_stride: d_out,
            col_stride: 1,
        };
        let out_in = WeightView {
            values: &w,
            offset: 5,
            row_stride: 1,
            col_stride: d_in,
        };
        for view in [in_out, out_in] {
            for b in [Some(&bias[..]), None] {
                let got = linear(&x, rows, d_in, view, b, d_out).unwrap();
                assert_close(&got, &reference(&x, rows, d_in, view, b, d_out));
            }
        }
    }

    #[test]
    fn rejects_sizes_that_do_not_match() {
        let w = vec![0f32; 12];
        let view = WeightView {
            values: &w,
            offset: 0,
            row_stride: 4,
            col_stride: 1,
        };
        let x = vec![0f32; 6];
        assert!(linear(&x, 2, 3, view, None, 4).is_some());
        assert!(linear(&x, 3, 3, view, None, 4).is_none(), "x too short");
        assert!(
            linear(&x, 2, 3, view, None, 5).is_none(),
            "weight too short"
        );
        assert!(
            linear(&x, 2, 3, view, Some(&[0.0; 3]), 4).is_none(),
            "bias length"
        );
        let shifted = WeightView { offset: 1, ..view };
        assert!(
            linear(&x, 2, 3, shifted, None, 4).is_none(),
            "offset past the end"
        );
        assert!(linear(&[], 0, 3, view, None, 4).is_none());
    }
}
