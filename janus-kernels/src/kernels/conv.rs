//! 3×3 convolution (stride 1, zero padding 1): directly as three products per output row over a
//! padded channels-last copy ([`conv3x3`]), or by Winograd's F(2×2, 3×3) in NCHW
//! ([`conv3x3_winograd`], 2.25× fewer multiplies, and faster than the direct form on the VQ
//! decoder's larger maps; measurements: docs/perf-notes.md §15, §22).
//!
//! burn-flex's convolution spends much of its time outside its GEMM (an im2col buffer nine
//! times the input, single-threaded copies, page faults on the fresh buffers; docs/perf-notes.md
//! V1, V3). The direct form copies the input once into a zero-padded `[h+2, w+2, cin]` layout;
//! then for output row `r` and kernel row `kh` the three taps `kw` and all input channels are one
//! contiguous run of `3·cin` values per output column, so each output row is three `gemm`
//! products (`[cout, 3·cin] · [3·cin, w]`) read straight from that buffer and accumulated into
//! the NCHW output, which starts as the bias. Rows are spread over rayon's threads.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::kernels::SharedOut;
use crate::kernels::sgemm::{Strided, sgemm};

/// `conv2d(x, weight, bias, stride 1, padding 1)` for NCHW f32 tensors.
///
/// `x` is `[batch, cin, h, w]`, `weight` `[cout, cin, 3, 3]`, `bias` `[cout]`; returns
/// `[batch, cout, h, w]`, or `None` when a size is 0 or a length does not match.
#[allow(clippy::too_many_arguments)]
pub fn conv3x3(
    x: &[f32],
    batch: usize,
    cin: usize,
    h: usize,
    w: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    cout: usize,
) -> Option<Vec<f32>> {
    if !sizes_fit(x, batch, cin, h, w, weight, bias, cout) {
        return None;
    }
    // wr[kh][o][kw][c] = weight[o][c][kh][kw]: for each kh an [cout, 3·cin] row-major matrix.
    let k3 = 3 * cin;
    let mut wr = vec![0f32; 3 * cout * k3];
    wr.par_chunks_mut(cout * k3)
        .enumerate()
        .for_each(|(kh, m)| {
            for o in 0..cout {
                for kw in 0..3 {
                    for c in 0..cin {
                        m[o * k3 + kw * cin + c] = weight[((o * cin + c) * 3 + kh) * 3 + kw];
                    }
                }
            }
        });
    let (wp, plane) = (w + 2, h * w);
    let mut out = vec![0f32; batch * cout * plane];
    let mut padded = vec![0f32; (h + 2) * wp * cin];
    for b in 0..batch {
        let xb = &x[b * cin * plane..(b + 1) * cin * plane];
        pad_channels_last(xb, cin, h, w, wp, &mut padded);
        let ob = SharedOut(out[b * cout * plane..].as_mut_ptr());
        let padded = &padded;
        let wr = &wr;
        (0..h).into_par_iter().for_each(|r| {
            let dst = ob.at(r * w);
            // SAFETY: `dst` is row r of every output channel of batch b (channel stride
            // `plane`, w columns); rows are disjoint between tasks. The lhs is kh's
            // `[cout, 3·cin]` block of `wr`; the rhs reads rows r + kh of `padded`, columns
            // 0..w + 2, all in bounds.
            unsafe {
                for o in 0..cout {
                    let row = std::slice::from_raw_parts_mut(dst.add(o * plane), w);
                    row.fill(bias.map_or(0.0, |b| b[o]));
                }
                for kh in 0..3 {
                    sgemm(
                        (cout, w, k3),
                        Strided::rows(dst, plane),
                        true,
                        Strided::rows(wr.as_ptr().add(kh * cout * k3), k3),
                        // Rows r + kh of `padded` seen as [3·cin, w]: (kw, c) down, x across.
                        Strided {
                            ptr: padded.as_ptr().add((r + kh) * wp * cin),
                            row_stride: 1,
                            col_stride: cin as isize,
                        },
                    );
                }
            }
        });
    }
    Some(out)
}

/// [`conv3x3`] by Winograd's minimal filtering F(2×2, 3×3): each 2×2 output tile is
/// `Aᵀ·[(G·g·Gᵀ) ⊙ (Bᵀ·d·B)]·A` for its 4×4 input patch `d`, so the channel sums become 16
/// products `[cout, cin] · [cin, tiles]` per run of tiles — 2.25× fewer multiplies than the
/// direct form. The transforms use only additions and halvings (no growth of rounding error
/// beyond a few ulps).
///
/// Everything stays in NCHW: a task takes a run of tiles along one tile row, splits each input
/// row it needs into its even and odd columns (so the four patch columns of consecutive tiles
/// are contiguous shifted runs), transforms with whole-run vector loops, and writes its output
/// tiles straight into the NCHW rows. No channels-last copy and no transpose (together they had
/// cost as much as the products, scalar and cache-hostile), and the runs are sized so that a
/// task's transformed input and products stay in L2.
///
/// Same arguments, result and `None` cases as [`conv3x3`].
#[allow(clippy::too_many_arguments)]
pub fn conv3x3_winograd(
    x: &[f32],
    batch: usize,
    cin: usize,
    h: usize,
    w: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    cout: usize,
) -> Option<Vec<f32>> {
    winograd(x, batch, cin, h, w, weight, bias, cout, None)
}

/// [`conv3x3_winograd`] with runs of at most `max_run` tiles (tests: several runs per tile row
/// at small sizes), or of the L2-sized default.
#[allow(clippy::too_many_arguments)]
fn winograd(
    x: &[f32],
    batch: usize,
    cin: usize,
    h: usize,
    w: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    cout: usize,
    max_run: Option<usize>,
) -> Option<Vec<f32>> {
    if !sizes_fit(x, batch, cin, h, w, weight, bias, cout) || max_run == Some(0) {
        return None;
    }
    let u = winograd_filters(weight, cin, cout);
    let geo = Tiles::new(cin, cout, h, w, max_run);
    let len = batch * cout * h * w;
    // Every element is written exactly once below (each output row and column belongs to one
    // tile of one task), so the buffer is not zeroed first.
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let ob = SharedOut(out.as_mut_ptr());
    let simd = Simd::detect();
    let per_image = geo.rows * geo.runs;
    (0..batch * per_image).into_par_iter().for_each_init(
        || Scratch::new(&geo),
        |scratch, task| {
            let (b, t) = (task / per_image, task % per_image);
            let plane = h * w;
            let xb = &x[b * cin * plane..(b + 1) * cin * plane];
            // SAFETY: the task writes only its own tiles of image b (see `winograd_task`),
            // inside the `len` elements reserved above.
            unsafe {
                winograd_task(
                    simd,
                    &geo,
                    xb,
                    &u,
                    bias,
                    t / geo.runs,
                    t % geo.runs,
                    scratch,
                    ob.at(b * cout * plane),
                )
            };
        },
    );
    // SAFETY: all `len` elements were initialised by the tasks.
    unsafe { out.set_len(len) };
    Some(out)
}

/// `U[ξ][o][c] = (G·g·Gᵀ)[ξ]` for filter `g = weight[o][c]`, `ξ = 4·i + j`.
fn winograd_filters(weight: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    let mut u = vec![0f32; 16 * cout * cin];
    let us = SharedOut(u.as_mut_ptr());
    (0..cout).into_par_iter().for_each(|o| {
        for c in 0..cin {
            let g = &weight[(o * cin + c) * 9..(o * cin + c) * 9 + 9];
            // G·g: 4×3, rows (g0, (g0+g1+g2)/2, (g0−g1+g2)/2, g2) per column.
            let mut t = [[0f32; 3]; 4];
            for k in 0..3 {
                let (a, b, cc) = (g[k], g[3 + k], g[6 + k]);
                t[0][k] = a;
                t[1][k] = 0.5 * (a + b + cc);
                t[2][k] = 0.5 * (a - b + cc);
                t[3][k] = cc;
            }
            for (i, row) in t.iter().enumerate() {
                let (a, b, cc) = (row[0], row[1], row[2]);
                let v = [a, 0.5 * (a + b + cc), 0.5 * (a - b + cc), cc];
                for (j, val) in v.iter().enumerate() {
                    // SAFETY: each (o, c) pair is written by one task, index < 16·cout·cin.
                    unsafe { *us.at(((4 * i + j) * cout + o) * cin + c) = *val };
                }
            }
        }
    });
    u
}

/// The tiling of one image: `rows` tile rows of `tw` tiles, each cut into `runs` runs of at most
/// `run` tiles (one task each).
struct Tiles {
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
    rows: usize,
    tw: usize,
    run: usize,
    runs: usize,
}

impl Tiles {
    fn new(cin: usize, cout: usize, h: usize, w: usize, max_run: Option<usize>) -> Tiles {
        let tw = w.div_ceil(2);
        // V and M take 16·(cin + cout) floats per tile. Longer runs amortise the filters'
        // packing in gemm; past ≈ 2 MiB of V and M (this machine's L2) they stop gaining
        // (perf-notes §22). Runs of equal length, at least 8 tiles.
        let fit = max_run.unwrap_or(((2usize << 20) / (64 * (cin + cout))).max(8));
        let runs = tw.div_ceil(fit);
        Tiles {
            cin,
            cout,
            h,
            w,
            rows: h.div_ceil(2),
            tw,
            run: tw.div_ceil(runs),
            runs,
        }
    }
}

/// One task's buffers: `v` = `V[ξ][c][k]`, `m` = `M[ξ][o][k]` (row stride `run`), and eight
/// rows of `run + 1` for the split input rows and the transforms' halfway values.
struct Scratch {
    v: Vec<f32>,
    m: Vec<f32>,
    split: Vec<f32>,
    half: Vec<f32>,
}

impl Scratch {
    fn new(g: &Tiles) -> Scratch {
        Scratch {
            v: vec![0f32; 16 * g.cin * g.run],
            m: vec![0f32; 16 * g.cout * g.run],
            split: vec![0f32; 8 * (g.run + 1)],
            half: vec![0f32; 8 * (g.run + 1)],
        }
    }
}

/// Which instructions the task body is compiled for (chosen once per call).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Simd {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Simd {
    fn detect() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Simd::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Simd::Avx2;
            }
        }
        Simd::Portable
    }
}

/// Tile row `ty`, run `r` of one image: input transform, 16 products, output transform.
///
/// # Safety
/// `out` points to the image's `[cout, h, w]` output; the task writes rows `2·ty`, `2·ty + 1`
/// (those below `h`), columns of its run's tiles (those below `w`), of every channel, and no
/// other task writes them.
#[allow(clippy::too_many_arguments)]
unsafe fn winograd_task(
    simd: Simd,
    g: &Tiles,
    xb: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    ty: usize,
    r: usize,
    s: &mut Scratch,
    out: *mut f32,
) {
    // SAFETY (all arms): the features were detected at run time; the caller's contract passes on.
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { task_avx512(g, xb, u, bias, ty, r, s, out) },
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { task_avx2(g, xb, u, bias, ty, r, s, out) },
        Simd::Portable => unsafe { task_body(g, xb, u, bias, ty, r, s, out) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn task_avx512(
    g: &Tiles,
    xb: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    ty: usize,
    r: usize,
    s: &mut Scratch,
    out: *mut f32,
) {
    unsafe { task_body(g, xb, u, bias, ty, r, s, out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn task_avx2(
    g: &Tiles,
    xb: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    ty: usize,
    r: usize,
    s: &mut Scratch,
    out: *mut f32,
) {
    unsafe { task_body(g, xb, u, bias, ty, r, s, out) }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn task_body(
    g: &Tiles,
    xb: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    ty: usize,
    r: usize,
    s: &mut Scratch,
    out: *mut f32,
) {
    let (cin, cout, run) = (g.cin, g.cout, g.run);
    let tx0 = r * run;
    let n = run.min(g.tw - tx0);
    winograd_input(g, xb, ty, tx0, n, s);
    for xi in 0..16 {
        // SAFETY: U[ξ] is [cout, cin], V[ξ] [cin, n] and M[ξ] [cout, n] (row strides cin, run,
        // run), all inside their buffers.
        unsafe {
            sgemm(
                (cout, n, cin),
                Strided::rows(s.m.as_mut_ptr().add(xi * cout * run), run),
                false,
                Strided::rows(u.as_ptr().add(xi * cout * cin), cin),
                Strided::rows(s.v.as_ptr().add(xi * cin * run), run),
            );
        }
    }
    // SAFETY: the caller's contract.
    unsafe { winograd_output(g, bias, ty, tx0, n, s, out) };
}

/// `V[ξ][c][k] = (Bᵀ·d·B)[ξ]` for the tiles `tx0 + k`, `k < n`, of tile row `ty`.
#[inline(always)]
fn winograd_input(g: &Tiles, xb: &[f32], ty: usize, tx0: usize, n: usize, s: &mut Scratch) {
    let (h, w, run) = (g.h, g.w, g.run);
    let np = n + 1;
    // Patch column j of tile tx0 + k is input column 2(tx0 + k) − 1 + j: the even split starts
    // at column 2·tx0 − 1, so j = 0, 1, 2, 3 read even[k], odd[k], even[k + 1], odd[k + 1].
    let first = 2 * tx0 as isize - 1;
    for c in 0..g.cin {
        let xc = &xb[c * h * w..(c + 1) * h * w];
        for (i, pair) in s.split.chunks_exact_mut(2 * np).take(4).enumerate() {
            let (even, odd) = pair.split_at_mut(np);
            match (2 * ty + i).checked_sub(1).filter(|&row| row < h) {
                Some(row) => split_columns(&xc[row * w..(row + 1) * w], first, even, odd),
                None => {
                    even.fill(0.0);
                    odd.fill(0.0);
                }
            }
        }
        // Bᵀ·d over the patch rows, on the split columns: half[2·i + parity].
        {
            let d = |k: usize| &s.split[k * np..(k + 1) * np];
            let (h01, h23) = s.half.split_at_mut(4 * np);
            let (h0, h1) = h01.split_at_mut(2 * np);
            let (h2, h3) = h23.split_at_mut(2 * np);
            for p in 0..2 {
                let (d0, d1, d2, d3) = (d(p), d(2 + p), d(4 + p), d(6 + p));
                zip_into(&mut h0[p * np..(p + 1) * np], d0, d2, |a, b| a - b);
                zip_into(&mut h1[p * np..(p + 1) * np], d1, d2, |a, b| a + b);
                zip_into(&mut h2[p * np..(p + 1) * np], d2, d1, |a, b| a - b);
                zip_into(&mut h3[p * np..(p + 1) * np], d1, d3, |a, b| a - b);
            }
        }
        // ·B over the patch columns: V[4·i + j].
        for i in 0..4 {
            let even = &s.half[2 * i * np..(2 * i + 1) * np];
            let odd = &s.half[(2 * i + 1) * np..(2 * i + 2) * np];
            let (c0, c1, c2, c3) = (&even[..n], &odd[..n], &even[1..np], &odd[1..np]);
            let at = |j: usize| ((4 * i + j) * g.cin + c) * run;
            let v = &mut s.v;
            zip_into(&mut v[at(0)..at(0) + n], c0, c2, |a, b| a - b);
            zip_into(&mut v[at(1)..at(1) + n], c1, c2, |a, b| a + b);
            zip_into(&mut v[at(2)..at(2) + n], c2, c1, |a, b| a - b);
            zip_into(&mut v[at(3)..at(3) + n], c1, c3, |a, b| a - b);
        }
    }
}

/// `out[k] = f(a[k], b[k])`: the transforms' vector step.
#[inline(always)]
fn zip_into(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
    for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
        *o = f(*a, *b);
    }
}

/// `even[k] = row[first + 2k]`, `odd[k] = row[first + 2k + 1]`, zero outside the row.
#[inline(always)]
fn split_columns(row: &[f32], first: isize, even: &mut [f32], odd: &mut [f32]) {
    let w = row.len() as isize;
    let get = |col: isize| {
        if (0..w).contains(&col) {
            row[col as usize]
        } else {
            0.0
        }
    };
    // Pairs with both columns inside the row: k in lo..hi.
    let lo = if first < 0 { 1 } else { 0 };
    let hi = (((w - first) / 2).max(0) as usize).min(even.len()).max(lo);
    for k in (0..lo).chain(hi..even.len()) {
        even[k] = get(first + 2 * k as isize);
        odd[k] = get(first + 2 * k as isize + 1);
    }
    let start = (first + 2 * lo as isize) as usize;
    let pairs = row[start..].chunks_exact(2);
    for ((e, o), p) in even[lo..hi].iter_mut().zip(&mut odd[lo..hi]).zip(pairs) {
        *e = p[0];
        *o = p[1];
    }
}

/// `out[o][2·ty + dy][2(tx0 + k) + dx] = (Aᵀ·M·A)[dy][dx] + bias[o]` for the run's tiles, rows
/// and columns past the image dropped.
///
/// # Safety
/// As [`winograd_task`].
#[inline(always)]
unsafe fn winograd_output(
    g: &Tiles,
    bias: Option<&[f32]>,
    ty: usize,
    tx0: usize,
    n: usize,
    s: &mut Scratch,
    out: *mut f32,
) {
    let (h, w, run) = (g.h, g.w, g.run);
    let rows = (h - 2 * ty).min(2);
    // Output columns 2·tx0 .. 2·tx0 + cols; the last tile is half outside when w is odd.
    let cols = (2 * n).min(w - 2 * tx0);
    let whole = cols / 2;
    for o in 0..g.cout {
        let m = |xi: usize| &s.m[(xi * g.cout + o) * run..(xi * g.cout + o) * run + n];
        // Aᵀ·M over the rows of M: half[4·dy + j].
        for j in 0..4 {
            let (m0, m1, m2, m3) = (m(j), m(4 + j), m(8 + j), m(12 + j));
            let (top, bottom) = s.half.split_at_mut(4 * n);
            for (k, (t, b)) in top[j * n..(j + 1) * n]
                .iter_mut()
                .zip(&mut bottom[j * n..(j + 1) * n])
                .enumerate()
            {
                *t = m0[k] + m1[k] + m2[k];
                *b = m1[k] - m2[k] - m3[k];
            }
        }
        let add = bias.map_or(0.0, |b| b[o]);
        for dy in 0..rows {
            let hf = |j: usize| &s.half[(4 * dy + j) * n..(4 * dy + j + 1) * n];
            let (s0, s1, s2, s3) = (hf(0), hf(1), hf(2), hf(3));
            let at = o * h * w + (2 * ty + dy) * w + 2 * tx0;
            // SAFETY: `cols` columns of row 2·ty + dy of channel o: this task's tiles. Not yet
            // initialised, hence `MaybeUninit`.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(out.add(at).cast::<MaybeUninit<f32>>(), cols)
            };
            for (k, pair) in dst.chunks_exact_mut(2).enumerate() {
                pair[0].write(s0[k] + s1[k] + s2[k] + add);
                pair[1].write(s1[k] - s2[k] - s3[k] + add);
            }
            if cols > 2 * whole {
                dst[2 * whole].write(s0[whole] + s1[whole] + s2[whole] + add);
            }
        }
    }
}

/// Whether the lengths match the sizes (all non-zero) of a 3×3 convolution.
#[allow(clippy::too_many_arguments)]
fn sizes_fit(
    x: &[f32],
    batch: usize,
    cin: usize,
    h: usize,
    w: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    cout: usize,
) -> bool {
    batch > 0
        && cin > 0
        && h > 0
        && w > 0
        && cout > 0
        && x.len() == batch * cin * h * w
        && weight.len() == cout * cin * 9
        && bias.is_none_or(|b| b.len() == cout)
}

/// Copies one image `xb` (`[cin, h, w]`) into rows `1..=h`, columns `1..=w` of the channels-last
/// buffer `padded` (`[rows, wp, cin]`); everything else there stays as it is (zero).
fn pad_channels_last(xb: &[f32], cin: usize, h: usize, w: usize, wp: usize, padded: &mut [f32]) {
    let plane = h * w;
    padded[wp * cin..(h + 1) * wp * cin]
        .par_chunks_mut(wp * cin)
        .enumerate()
        .for_each(|(r, row)| {
            for c in 0..cin {
                let src = &xb[c * plane + r * w..c * plane + (r + 1) * w];
                for (col, v) in src.iter().enumerate() {
                    row[(col + 1) * cin + c] = *v;
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    type Conv =
        fn(&[f32], usize, usize, usize, usize, &[f32], Option<&[f32]>, usize) -> Option<Vec<f32>>;

    /// Both kernels against an f64 direct convolution, with and without bias; odd heights and
    /// widths leave partial Winograd tiles.
    #[test]
    fn match_a_direct_f64_convolution() {
        // Runs of 2 tiles: several tasks per tile row, the last one short when w is odd.
        let short_runs: Conv = |x, batch, cin, h, w, weight, bias, cout| {
            winograd(x, batch, cin, h, w, weight, bias, cout, Some(2))
        };
        let kernels: [(&str, Conv); 3] = [
            ("direct", conv3x3),
            ("winograd", conv3x3_winograd),
            ("winograd runs of 2", short_runs),
        ];
        for (batch, cin, h, w, cout) in [
            (2, 5, 7, 6, 4),
            (1, 3, 5, 9, 2),
            (1, 17, 1, 1, 3),
            (1, 4, 6, 11, 3),
            (2, 3, 4, 21, 5),
        ] {
            let x: Vec<f32> = (0..batch * cin * h * w)
                .map(|i| ((i * 7919) % 997) as f32 / 997.0 - 0.5)
                .collect();
            let weight: Vec<f32> = (0..cout * cin * 9)
                .map(|i| ((i * 104729) % 991) as f32 / 991.0 - 0.5)
                .collect();
            let bias: Vec<f32> = (0..cout).map(|o| o as f32 * 0.25 - 0.5).collect();
            for (name, conv) in kernels {
                for bias in [Some(bias.as_slice()), None] {
                    let y = conv(&x, batch, cin, h, w, &weight, bias, cout).expect("sizes fit");
                    for b in 0..batch {
                        for o in 0..cout {
                            for r in 0..h {
                                for c in 0..w {
                                    let mut want = bias.map_or(0.0, |v| v[o] as f64);
                                    for i in 0..cin {
                                        for kh in 0..3 {
                                            for kw in 0..3 {
                                                let (rr, cc) = (r + kh, c + kw);
                                                if rr == 0 || cc == 0 || rr > h || cc > w {
                                                    continue;
                                                }
                                                let xv =
                                                    x[((b * cin + i) * h + rr - 1) * w + cc - 1];
                                                let wv = weight[((o * cin + i) * 3 + kh) * 3 + kw];
                                                want += xv as f64 * wv as f64;
                                            }
                                        }
                                    }
                                    let got = y[((b * cout + o) * h + r) * w + c] as f64;
                                    assert!(
                                        (got - want).abs() < 1e-5,
                                        "{name} {h}x{w}: b{b} o{o} r{r} c{c}: {got} vs {want}"
                                    );
                                }
                            }
                        }
                    }
                }
                assert!(conv(&x, batch, cin, h, w, &weight[1..], None, cout).is_none());
                assert!(conv(&x, batch, cin, h, w + 1, &weight, None, cout).is_none());
            }
        }
    }
}
