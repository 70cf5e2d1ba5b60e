//! `x · Wᵀ` for a batch of rows over an `[out, in]` weight: more rows than the few-row kernels
//! take (a prompt of a few dozen tokens, the seed's 16 images drawing 32 CFG rows a step) and
//! too few for `gemm` to pay back packing the weight. `gemm` transposes each `[out, in]` panel
//! with scalar moves before its micro-kernel sees it; at 32 rows that packing was 60 % of an
//! image step (measurements: docs/perf-notes.md §29).
//!
//! Here nothing of the weight is packed. The batch is transposed once per call into blocks of
//! `[in][32]` (AVX-512) or `[in][16]` (AVX2); a register tile holds the sums of one block of
//! rows against 12 (6) weight rows, each weight value broadcast from its own row and multiplied
//! into the two vectors of the block. The weight is read once, sequentially, in the checkpoint's
//! layout; the block of `x` comes from L2. Weights in another format (f16, bf16, quantised
//! blocks) are widened one group of weight rows at a time into a per-task f32 buffer.
//!
//! Each output is one f32 FMA chain over `in` in order, so the result does not depend on the
//! thread count or the ISA's block size.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

/// The most rows the batch kernel is used for: up to 128 rows it beats `gemm` on the 1B
/// model's products (2.2× at 32 rows, 1.4× at 128); at 640 `gemm` is 15 % faster.
pub const MAX_BATCH_ROWS: usize = 128;

/// Weight rows per parallel task: a few register tiles, so the two vCPUs of a VM, which rarely
/// run at the same speed, end together.
const TASK_GROUPS: usize = 8;

/// An `[n, k]` weight as [`batch_matmul_t`] reads it.
pub(crate) enum BatchWeight<'a> {
    /// f32 values, row-major.
    F32(&'a [f32]),
    /// Writes rows `range` as f32 into the buffer (`range.len() · k` values); `false` when it
    /// cannot.
    Widen(&'a (dyn Fn(Range<usize>, &mut [f32]) -> bool + Sync)),
}

/// The register tile the CPU allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tiles {
    /// 32 rows of `x` (two zmm) × 12 weight rows.
    Avx512,
    /// 16 rows of `x` (two ymm) × 6 weight rows.
    Avx2,
}

impl Tiles {
    /// The widest tile this CPU runs, or `None` without AVX2 and FMA.
    pub(crate) fn detect() -> Option<Tiles> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Some(Tiles::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Some(Tiles::Avx2);
            }
        }
        None
    }

    /// Rows of `x` in one tile (one transposed block).
    fn block(self) -> usize {
        match self {
            Tiles::Avx512 => 32,
            Tiles::Avx2 => 16,
        }
    }

    /// Weight rows in one tile.
    fn group(self) -> usize {
        match self {
            Tiles::Avx512 => 12,
            Tiles::Avx2 => 6,
        }
    }
}

/// `y = x · Wᵀ` for `x` `[m, k]` and `W` `[n, k]`, both row-major: returns `[m, n]`, or `None`
/// when a size is 0, a length does not match, the CPU has neither AVX-512 nor AVX2 + FMA, or
/// the weight could not be widened.
pub(crate) fn batch_matmul_t(
    x: &[f32],
    m: usize,
    k: usize,
    weight: &BatchWeight<'_>,
    n: usize,
) -> Option<Vec<f32>> {
    batch_matmul_t_with(Tiles::detect()?, x, m, k, weight, n)
}

/// The batch kernel's `x · Wᵀ` over an f32 `[n, k]` weight, for the profiling tools.
#[cfg(feature = "profiling")]
pub fn batch_matmul_t_f32(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Option<Vec<f32>> {
    batch_matmul_t(x, m, k, &BatchWeight::F32(w), n)
}

/// [`batch_matmul_t`] with the tile `tiles` (which this CPU must run).
pub(crate) fn batch_matmul_t_with(
    tiles: Tiles,
    x: &[f32],
    m: usize,
    k: usize,
    weight: &BatchWeight<'_>,
    n: usize,
) -> Option<Vec<f32>> {
    if m == 0 || k == 0 || n == 0 || x.len() != m.checked_mul(k)? {
        return None;
    }
    if let BatchWeight::F32(w) = weight
        && w.len() != n.checked_mul(k)?
    {
        return None;
    }
    let (mb, nr) = (tiles.block(), tiles.group());
    let mp = m.next_multiple_of(mb);
    // xt[b][c][r] = x[b·mb + r][c]; the rows past m stay 0 and their sums are dropped.
    let mut xt = vec![0f32; mp * k];
    for (r, row) in x.chunks_exact(k).enumerate() {
        let block = &mut xt[(r / mb) * k * mb..][..k * mb];
        for (c, &v) in row.iter().enumerate() {
            block[c * mb + r % mb] = v;
        }
    }
    // Sums output-major, ct[j][r], so each task writes one contiguous run.
    let mut ct = vec![0f32; n * mp];
    let task = TASK_GROUPS * nr;
    let failed = AtomicBool::new(false);
    ct.par_chunks_mut(task * mp).enumerate().for_each_init(
        Vec::new,
        |buf: &mut Vec<f32>, (t, out)| {
            let start = t * task;
            let end = (start + task).min(n);
            let mut j = start;
            while j < end {
                let g = nr.min(end - j);
                let rows: &[f32] = match weight {
                    BatchWeight::F32(w) => &w[j * k..(j + g) * k],
                    BatchWeight::Widen(widen) => {
                        buf.resize(g * k, 0.0);
                        if !widen(j..j + g, &mut buf[..g * k]) {
                            failed.store(true, Ordering::Relaxed);
                            return;
                        }
                        &buf[..g * k]
                    }
                };
                for (b, block) in xt.chunks_exact(k * mb).enumerate() {
                    let dst = &mut out[(j - start) * mp + b * mb..];
                    tile(tiles, g, block, rows, k, dst, mp);
                }
                j += g;
            }
        },
    );
    if failed.load(Ordering::Relaxed) {
        return None;
    }
    let mut y = vec![0f32; m * n];
    for (j, sums) in ct.chunks_exact(mp).enumerate() {
        for (r, &v) in sums[..m].iter().enumerate() {
            y[r * n + j] = v;
        }
    }
    Some(y)
}

/// One register tile: `out[j·stride + r] = Σ_c block[c·mb + r] · rows[j·k + c]` for the
/// `g` weight rows of `rows` and the `mb` rows of `block`.
fn tile(
    tiles: Tiles,
    g: usize,
    block: &[f32],
    rows: &[f32],
    k: usize,
    out: &mut [f32],
    stride: usize,
) {
    let mb = tiles.block();
    assert!(
        g >= 1
            && g <= tiles.group()
            && block.len() == k * mb
            && rows.len() == g * k
            && out.len() >= (g - 1) * stride + mb,
        "batch tile: operand lengths"
    );
    #[cfg(target_arch = "x86_64")]
    {
        let (x, w, y) = (block.as_ptr(), rows.as_ptr(), out.as_mut_ptr());
        macro_rules! run {
            ($f:ident; $($g:literal)*) => {
                match g {
                    // SAFETY: the lengths were checked above and `tiles` was detected on this
                    // CPU (`Tiles::detect`, or a caller that checked the same features).
                    $($g => unsafe { $f::<$g>(x, w, k, y, stride) },)*
                    _ => unreachable!("g ≤ the tile's group, checked above"),
                }
            };
        }
        match tiles {
            Tiles::Avx512 => run!(tile_avx512; 1 2 3 4 5 6 7 8 9 10 11 12),
            Tiles::Avx2 => run!(tile_avx2; 1 2 3 4 5 6),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!(
        "no tile is detected off x86_64: {tiles:?} {g} {k} {stride} {}",
        out.len()
    );
}

/// # Safety
/// AVX-512F; `x` holds `k·32` values, `w` `G·k`, and `y` `(G − 1)·stride + 32`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<const G: usize>(
    x: *const f32,
    w: *const f32,
    k: usize,
    y: *mut f32,
    stride: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: every offset stays within the lengths of the contract.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; G];
        for c in 0..k {
            let x0 = _mm512_loadu_ps(x.add(c * 32));
            let x1 = _mm512_loadu_ps(x.add(c * 32 + 16));
            for (j, a) in acc.iter_mut().enumerate() {
                let b = _mm512_set1_ps(*w.add(j * k + c));
                a[0] = _mm512_fmadd_ps(x0, b, a[0]);
                a[1] = _mm512_fmadd_ps(x1, b, a[1]);
            }
        }
        for (j, a) in acc.iter().enumerate() {
            _mm512_storeu_ps(y.add(j * stride), a[0]);
            _mm512_storeu_ps(y.add(j * stride + 16), a[1]);
        }
    }
}

/// # Safety
/// AVX2 and FMA; `x` holds `k·16` values, `w` `G·k`, and `y` `(G − 1)·stride + 16`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const G: usize>(
    x: *const f32,
    w: *const f32,
    k: usize,
    y: *mut f32,
    stride: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: every offset stays within the lengths of the contract.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; G];
        for c in 0..k {
            let x0 = _mm256_loadu_ps(x.add(c * 16));
            let x1 = _mm256_loadu_ps(x.add(c * 16 + 8));
            for (j, a) in acc.iter_mut().enumerate() {
                let b = _mm256_set1_ps(*w.add(j * k + c));
                a[0] = _mm256_fmadd_ps(x0, b, a[0]);
                a[1] = _mm256_fmadd_ps(x1, b, a[1]);
            }
        }
        for (j, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(y.add(j * stride), a[0]);
            _mm256_storeu_ps(y.add(j * stride + 8), a[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_values;

    /// `x · Wᵀ` in f64.
    fn reference(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for r in 0..m {
            for j in 0..n {
                y[r * n + j] = (0..k)
                    .map(|c| x[r * k + c] as f64 * w[j * k + c] as f64)
                    .sum();
            }
        }
        y
    }

    fn supported() -> Vec<Tiles> {
        match Tiles::detect() {
            Some(Tiles::Avx512) => vec![Tiles::Avx512, Tiles::Avx2],
            Some(Tiles::Avx2) => vec![Tiles::Avx2],
            None => Vec::new(),
        }
    }

    /// Ragged shapes: row counts around the block sizes, weight heights that leave partial
    /// groups and partial tasks; within an f32 FMA chain's error of the f64 product, and the
    /// same bits from every tile and from the widened weight.
    #[test]
    fn matches_the_f64_product_on_every_tile() {
        for (m, k, n) in [
            (1, 7, 5),
            (5, 33, 13),
            (16, 64, 97),
            (17, 40, 200),
            (32, 96, 12),
        ] {
            let x = test_values(m * k, 3);
            let w = test_values(n * k, 11);
            let expected = reference(&x, m, k, &w, n);
            let widen = |rows: Range<usize>, out: &mut [f32]| {
                out.copy_from_slice(&w[rows.start * k..rows.end * k]);
                true
            };
            let mut first: Option<Vec<f32>> = None;
            for tiles in supported() {
                for weight in [BatchWeight::F32(&w), BatchWeight::Widen(&widen)] {
                    let y = batch_matmul_t_with(tiles, &x, m, k, &weight, n).unwrap();
                    for (a, e) in y.iter().zip(&expected) {
                        let tol = 1e-5 * (k as f64).sqrt() * (1.0 + e.abs());
                        assert!(
                            (*a as f64 - e).abs() <= tol,
                            "{m}x{k}x{n} {tiles:?}: {a} vs {e}"
                        );
                    }
                    match &first {
                        Some(f) => assert_eq!(f, &y, "{m}x{k}x{n} {tiles:?}"),
                        None => first = Some(y),
                    }
                }
            }
        }
    }

    #[test]
    fn declines_bad_lengths_and_failed_widening() {
        let Some(tiles) = Tiles::detect() else {
            return;
        };
        let x = test_values(4 * 8, 1);
        let w = test_values(3 * 8, 2);
        assert!(batch_matmul_t_with(tiles, &x, 4, 8, &BatchWeight::F32(&w[1..]), 3).is_none());
        assert!(batch_matmul_t_with(tiles, &x[1..], 4, 8, &BatchWeight::F32(&w), 3).is_none());
        assert!(batch_matmul_t_with(tiles, &x, 0, 8, &BatchWeight::F32(&w), 3).is_none());
        let refuse = |_: Range<usize>, _: &mut [f32]| false;
        assert!(batch_matmul_t_with(tiles, &x, 4, 8, &BatchWeight::Widen(&refuse), 3).is_none());
    }
}
