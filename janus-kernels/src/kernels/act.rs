//! Element-wise kernels on both cores: GELU (erf form), SiLU, row softmax and GroupNorm (+ SiLU).
//!
//! Each works in place on a contiguous f32 slice, split into pieces over rayon's threads, with
//! AVX2/FMA when the CPU has it (vectorised `exp`/`erf` from `vmath`) and a scalar loop of the
//! same formulas otherwise.

use rayon::prelude::*;

use crate::kernels::rows::Isa;
use crate::kernels::vmath::{erf_scalar, exp_scalar};

/// Elements per parallel piece: large enough that scheduling is noise, small enough that two
/// cores share a 576×4096 activation evenly.
const PIECE: usize = 1 << 15;

fn par_map(x: &mut [f32], f: impl Fn(Isa, &mut [f32]) + Sync) {
    let isa = Isa::detect();
    x.par_chunks_mut(PIECE).for_each(|c| f(isa, c));
}

/// `x ← x · Φ(x) = x/2 · (1 + erf(x/√2))`, PyTorch's exact (`approximate="none"`) GELU.
pub fn gelu_erf(x: &mut [f32]) {
    par_map(x, |isa, c| match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Isa::Avx2 is only returned after detecting AVX2 and FMA.
        Isa::Avx2 => unsafe { avx2::gelu(c) },
        _ => c.iter_mut().for_each(|v| *v = gelu_scalar(*v)),
    });
}

/// `x ← x · sigmoid(x)`.
pub fn silu(x: &mut [f32]) {
    par_map(x, |isa, c| match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `gelu_erf`.
        Isa::Avx2 => unsafe { avx2::silu(c) },
        _ => c.iter_mut().for_each(|v| *v = silu_scalar(*v)),
    });
}

fn gelu_scalar(v: f32) -> f32 {
    0.5 * v * (1.0 + erf_scalar(v * std::f32::consts::FRAC_1_SQRT_2))
}

fn silu_scalar(v: f32) -> f32 {
    v / (1.0 + exp_scalar(-v))
}

/// Softmax of `scale · row` for every `row_len`-long row of `x`, in place.
///
/// Returns `false` (and leaves `x` alone) when `row_len` is 0 or does not divide `x.len()`.
/// The attention kernels call [`softmax_row`] inside their own parallel tasks; this many-row
/// form is what the tests check it through.
#[cfg(test)]
pub(crate) fn softmax_rows(x: &mut [f32], row_len: usize, scale: f32) -> bool {
    if row_len == 0 || !x.len().is_multiple_of(row_len) {
        return false;
    }
    let rows_per_piece = (PIECE / row_len).max(1);
    let isa = Isa::detect();
    x.par_chunks_mut(rows_per_piece * row_len).for_each(|c| {
        for row in c.chunks_exact_mut(row_len) {
            softmax_row(isa, row, scale);
        }
    });
    true
}

/// One row, on the calling thread (the attention kernel runs heads in parallel instead).
pub(crate) fn softmax_row(isa: Isa, row: &mut [f32], scale: f32) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    // exp(scale·(v − max)): the largest term is exp(0) = 1 for either sign of scale when the
    // maximum is taken of scale·v; scales here are positive.
    let shift = scale * max;
    let sum = match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `gelu_erf`.
        Isa::Avx2 => unsafe { avx2::exp_shifted(row, scale, shift) },
        _ => row.iter_mut().fold(0.0, |s, v| {
            *v = exp_scalar(scale * *v - shift);
            s + *v
        }),
    };
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// GroupNorm over `[batch, channels, spatial]` (NCHW with the spatial dims flattened), in place:
/// per (batch, group) mean and biased variance (two passes, as PyTorch), then `γ·x̂ + β` per
/// channel, followed by SiLU when `then_silu`.
///
/// Returns `false` (and leaves `x` alone) when the sizes do not fit together.
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    x: &mut [f32],
    batch: usize,
    channels: usize,
    spatial: usize,
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    then_silu: bool,
) -> bool {
    if groups == 0
        || !channels.is_multiple_of(groups)
        || x.len() != batch * channels * spatial
        || gamma.len() != channels
        || beta.len() != channels
        || spatial == 0
    {
        return false;
    }
    let per_group = channels / groups;
    let block = per_group * spatial;
    // Statistics: one task per (batch, group) block, each contiguous in NCHW.
    let stats: Vec<(f32, f32)> = x
        .par_chunks(block)
        .map(|b| {
            let n = b.len() as f64;
            let mean = sum_f64(b, |v| v) / n;
            let var = sum_f64(b, |v| (v - mean) * (v - mean)) / n;
            (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32)
        })
        .collect();
    let isa = Isa::detect();
    // Apply: one task per channel plane, `y = a·x + b` with a = γ·rstd, b = β − mean·a.
    x.par_chunks_mut(spatial)
        .enumerate()
        .for_each(|(plane, p)| {
            let c = plane % channels;
            let (mean, rstd) = stats[plane / per_group];
            let a = gamma[c] * rstd;
            let b = beta[c] - mean * a;
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as in `gelu_erf`.
                Isa::Avx2 => unsafe { avx2::affine(p, a, b, then_silu) },
                _ => p.iter_mut().for_each(|v| {
                    let y = a * *v + b;
                    *v = if then_silu { silu_scalar(y) } else { y };
                }),
            }
        });
    true
}

/// `Σ f(v)` over `b` in f64, in eight interleaved partial sums: one running sum waits on every
/// add's latency and does not vectorise, which made GroupNorm's two sums a visible share of a VQ
/// decode (measurements: docs/perf-notes.md §22).
#[inline(always)]
fn sum_f64(b: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v as f64);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v as f64)).sum();
    acc.iter().sum::<f64>() + tail
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::kernels::vmath::avx2::{erf8, exp8};
    use std::arch::x86_64::*;

    /// Applies `f` to 8 lanes at a time; the tail goes through the same `f` on a padded copy, so
    /// every element gets exactly the same arithmetic.
    #[inline(always)]
    unsafe fn lanes(x: &mut [f32], f: impl Fn(__m256) -> __m256) {
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: 8 in-bounds elements; unaligned load/store.
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), f(_mm256_loadu_ps(c.as_ptr()))) };
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let mut buf = [0f32; 8];
            buf[..tail.len()].copy_from_slice(tail);
            // SAFETY: 8-element buffer.
            unsafe { _mm256_storeu_ps(buf.as_mut_ptr(), f(_mm256_loadu_ps(buf.as_ptr()))) };
            tail.copy_from_slice(&buf[..tail.len()]);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    fn silu8(y: __m256) -> __m256 {
        let neg = _mm256_xor_ps(y, _mm256_set1_ps(-0.0));
        _mm256_div_ps(y, _mm256_add_ps(_mm256_set1_ps(1.0), exp8(neg)))
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gelu(x: &mut [f32]) {
        let half = _mm256_set1_ps(0.5);
        let one = _mm256_set1_ps(1.0);
        let k = _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2);
        // SAFETY: the caller checked AVX2/FMA.
        unsafe {
            lanes(x, |v| {
                let e = erf8(_mm256_mul_ps(v, k));
                _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, e))
            })
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn silu(x: &mut [f32]) {
        // SAFETY: the caller checked AVX2/FMA.
        unsafe { lanes(x, |v| silu8(v)) }
    }

    /// `v ← exp(scale·v − shift)`, returning the sum of the new values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_shifted(x: &mut [f32], scale: f32, shift: f32) -> f32 {
        let s = _mm256_set1_ps(scale);
        let m = _mm256_set1_ps(shift);
        let mut sum = 0.0f32;
        let mut chunks = x.chunks_exact_mut(8);
        let mut acc = _mm256_setzero_ps();
        for c in &mut chunks {
            // SAFETY: 8 in-bounds elements.
            unsafe {
                let e = exp8(_mm256_fmsub_ps(_mm256_loadu_ps(c.as_ptr()), s, m));
                acc = _mm256_add_ps(acc, e);
                _mm256_storeu_ps(c.as_mut_ptr(), e);
            }
        }
        for v in chunks.into_remainder() {
            *v = crate::kernels::vmath::exp_scalar(scale * *v - shift);
            sum += *v;
        }
        let mut l = [0f32; 8];
        // SAFETY: 8-element buffer.
        unsafe { _mm256_storeu_ps(l.as_mut_ptr(), acc) };
        sum + l.iter().sum::<f32>()
    }

    /// `v ← a·v + b`, then SiLU when `then_silu`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn affine(x: &mut [f32], a: f32, b: f32, then_silu: bool) {
        let (va, vb) = (_mm256_set1_ps(a), _mm256_set1_ps(b));
        // SAFETY: the caller checked AVX2/FMA.
        unsafe {
            if then_silu {
                lanes(x, |v| silu8(_mm256_fmadd_ps(v, va, vb)))
            } else {
                lanes(x, |v| _mm256_fmadd_ps(v, va, vb))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf_f64(x: f64) -> f64 {
        if x.abs() > 5.0 {
            return x.signum();
        }
        let mut term = x;
        let mut sum = x;
        for n in 1..250 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    fn inputs(n: usize) -> Vec<f32> {
        // Odd length (a tail in every path), values over [-9, 9].
        (0..n)
            .map(|i| ((i * 7919) % 1801) as f32 * 0.01 - 9.0)
            .collect()
    }

    #[test]
    fn gelu_and_silu_match_f64() {
        let xs = inputs(100_003);
        let mut g = xs.clone();
        gelu_erf(&mut g);
        let mut s = xs.clone();
        silu(&mut s);
        for ((x, g), s) in xs.iter().zip(&g).zip(&s) {
            let x64 = *x as f64;
            let want_g = 0.5 * x64 * (1.0 + erf_f64(x64 / 2f64.sqrt()));
            assert!(
                (*g as f64 - want_g).abs() < 2e-6 * (1.0 + want_g.abs()),
                "gelu({x})"
            );
            let want_s = x64 / (1.0 + (-x64).exp());
            assert!(
                (*s as f64 - want_s).abs() < 2e-6 * (1.0 + want_s.abs()),
                "silu({x})"
            );
        }
    }

    #[test]
    fn softmax_rows_match_f64_and_refuse_bad_rows() {
        let row = 37;
        let mut x = inputs(row * 50);
        let orig = x.clone();
        assert!(softmax_rows(&mut x, row, 0.125));
        for (r, o) in x.chunks(row).zip(orig.chunks(row)) {
            let max = o.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let e: Vec<f64> = o
                .iter()
                .map(|&v| (0.125 * (v as f64 - max)).exp())
                .collect();
            let sum: f64 = e.iter().sum();
            for (y, w) in r.iter().zip(&e) {
                assert!((*y as f64 - w / sum).abs() < 1e-6);
            }
        }
        let mut y = orig.clone();
        assert!(!softmax_rows(&mut y, 36, 1.0));
        assert!(!softmax_rows(&mut y, 0, 1.0));
        assert_eq!(y, orig);
    }

    #[test]
    fn group_norm_matches_f64_with_and_without_silu() {
        let (batch, channels, spatial, groups) = (2, 6, 45, 3);
        let xs: Vec<f32> = inputs(batch * channels * spatial)
            .iter()
            .map(|v| v * 3.0 + 1.5)
            .collect();
        let gamma: Vec<f32> = (0..channels).map(|c| 0.5 + c as f32 * 0.25).collect();
        let beta: Vec<f32> = (0..channels).map(|c| c as f32 * 0.1 - 0.3).collect();
        for then_silu in [false, true] {
            let mut y = xs.clone();
            assert!(group_norm(
                &mut y, batch, channels, spatial, groups, &gamma, &beta, 1e-6, then_silu
            ));
            let per = channels / groups * spatial;
            for (i, (x, y)) in xs.iter().zip(&y).enumerate() {
                let block = &xs[i / per * per..(i / per + 1) * per];
                let mean = block.iter().map(|&v| v as f64).sum::<f64>() / per as f64;
                let var = block
                    .iter()
                    .map(|&v| (v as f64 - mean).powi(2))
                    .sum::<f64>()
                    / per as f64;
                let c = (i / spatial) % channels;
                let mut want =
                    (*x as f64 - mean) / (var + 1e-6).sqrt() * gamma[c] as f64 + beta[c] as f64;
                if then_silu {
                    want /= 1.0 + (-want).exp();
                }
                assert!((*y as f64 - want).abs() < 2e-6 * (1.0 + want.abs()), "{i}");
            }
        }
        let mut y = xs.clone();
        assert!(!group_norm(
            &mut y, batch, channels, spatial, 4, &gamma, &beta, 1e-6, true
        ));
        assert!(!group_norm(
            &mut y,
            batch,
            channels,
            spatial,
            3,
            &gamma[1..],
            &beta,
            1e-6,
            true
        ));
        assert_eq!(y, xs);
    }
}
