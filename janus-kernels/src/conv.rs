//! 3×3 convolution (stride 1, zero padding 1) over a padded channels-last copy of the input:
//! directly as three products per output row ([`conv3x3`]) or by Winograd's F(2×2, 3×3)
//! ([`conv3x3_winograd`], 2.25× fewer multiplies; faster from ≈ 96×96 up on the VQ decoder).
//!
//! burn-flex's convolution spends about a third of a VQ decode outside its GEMM (an im2col
//! buffer nine times the input, single-threaded copies, page faults on the fresh buffers). Here
//! the input is copied once into a zero-padded `[h+2, w+2, cin]` layout; then for output row `r`
//! and kernel row `kh` the three taps `kw` and all input channels are one contiguous run of
//! `3·cin` values per output column, so each output row is three `gemm` products
//! (`[cout, 3·cin] · [3·cin, w]`) read straight from that buffer and accumulated into the NCHW
//! output, which starts as the bias. Rows are spread over rayon's threads.

use rayon::prelude::*;

use crate::SharedOut;

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
                    gemm::gemm(
                        cout,
                        w,
                        k3,
                        dst,
                        1,
                        plane as isize,
                        true,
                        wr.as_ptr().add(kh * cout * k3),
                        1,
                        k3 as isize,
                        padded.as_ptr().add((r + kh) * wp * cin),
                        cin as isize,
                        1,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
        });
    }
    Some(out)
}

/// [`conv3x3`] by Winograd's minimal filtering F(2×2, 3×3): each 2×2 output tile is
/// `Aᵀ·[(G·g·Gᵀ) ⊙ (Bᵀ·d·B)]·A` for its 4×4 input patch `d`, so the channel sums become 16
/// products `[tiles, cin] · [cin, cout]` per row of tiles — 2.25× fewer multiplies than the
/// direct form. The transforms use only additions and halvings (no growth of rounding error
/// beyond a few ulps); they run over channels-last data, so the inner loops are contiguous.
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
    if !sizes_fit(x, batch, cin, h, w, weight, bias, cout) {
        return None;
    }
    // U[ξ][o][c] = (G·g·Gᵀ)[ξ] for filter g = weight[o][c], ξ = 4·i + j.
    let mut u = vec![0f32; 16 * cout * cin];
    {
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
    }
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    // Padded channels-last input covering every tile's 4×4 patch (zeros outside the image).
    let (hp, wp) = (2 * th + 2, 2 * tw + 2);
    let plane = h * w;
    let mut out = vec![0f32; batch * cout * plane];
    let mut padded = vec![0f32; hp * wp * cin];
    let isa = crate::rows::Isa::detect();
    for b in 0..batch {
        let xb = &x[b * cin * plane..(b + 1) * cin * plane];
        pad_channels_last(xb, cin, h, w, wp, &mut padded);
        let ob = SharedOut(out[b * cout * plane..].as_mut_ptr());
        let (padded, u) = (&padded, &u);
        (0..th).into_par_iter().for_each_init(
            || {
                (
                    vec![0f32; 16 * tw * cin],
                    vec![0f32; 16 * tw * cout],
                    vec![0f32; 2 * w * cout],
                )
            },
            |(v, m, y), ty| {
                winograd_input(isa, padded, wp, cin, ty, tw, v);
                for xi in 0..16 {
                    // SAFETY: V[ξ] is [tw, cin], U[ξ] is [cout, cin] read transposed, M[ξ] is
                    // [tw, cout]; all three buffers hold 16 such blocks.
                    unsafe {
                        gemm::gemm(
                            tw,
                            cout,
                            cin,
                            m.as_mut_ptr().add(xi * tw * cout),
                            1,
                            cout as isize,
                            false,
                            v.as_ptr().add(xi * tw * cin),
                            1,
                            cin as isize,
                            u.as_ptr().add(xi * cout * cin),
                            cin as isize,
                            1,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                }
                winograd_output(m, tw, cout, w, y);
                // y is [2, w, cout] channels-last: transpose into the NCHW rows, plus bias.
                let rows = (h - 2 * ty).min(2);
                for dy in 0..rows {
                    let r = 2 * ty + dy;
                    for o in 0..cout {
                        let add = bias.map_or(0.0, |bv| bv[o]);
                        // SAFETY: row r of channel o of batch b; rows of different tile rows
                        // are disjoint.
                        let dst =
                            unsafe { std::slice::from_raw_parts_mut(ob.at(o * plane + r * w), w) };
                        for (col, d) in dst.iter_mut().enumerate() {
                            *d = y[(dy * w + col) * cout + o] + add;
                        }
                    }
                }
            },
        );
    }
    Some(out)
}

/// `V[ξ][t][c] = (Bᵀ·d·B)[ξ]` for the tiles `t` of tile row `ty`.
fn winograd_input(
    isa: crate::rows::Isa,
    padded: &[f32],
    wp: usize,
    cin: usize,
    ty: usize,
    tw: usize,
    v: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if isa == crate::rows::Isa::Avx2 {
        // SAFETY: AVX2 was detected; the body is plain slice code.
        return unsafe { winograd_input_avx2(padded, wp, cin, ty, tw, v) };
    }
    let _ = isa;
    winograd_input_body(padded, wp, cin, ty, tw, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn winograd_input_avx2(
    padded: &[f32],
    wp: usize,
    cin: usize,
    ty: usize,
    tw: usize,
    v: &mut [f32],
) {
    winograd_input_body(padded, wp, cin, ty, tw, v)
}

#[inline(always)]
fn winograd_input_body(padded: &[f32], wp: usize, cin: usize, ty: usize, tw: usize, v: &mut [f32]) {
    let block = tw * cin;
    for tx in 0..tw {
        let at = |i: usize, j: usize| {
            let s = ((2 * ty + i) * wp + 2 * tx + j) * cin;
            &padded[s..s + cin]
        };
        let d: [[&[f32]; 4]; 4] = std::array::from_fn(|i| std::array::from_fn(|j| at(i, j)));
        for c in 0..cin {
            // Bᵀ·d (rows), then ·B (columns).
            let mut t = [[0f32; 4]; 4];
            for j in 0..4 {
                let (d0, d1, d2, d3) = (d[0][j][c], d[1][j][c], d[2][j][c], d[3][j][c]);
                t[0][j] = d0 - d2;
                t[1][j] = d1 + d2;
                t[2][j] = d2 - d1;
                t[3][j] = d1 - d3;
            }
            for (i, r) in t.iter().enumerate() {
                let vals = [r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3]];
                for (j, val) in vals.iter().enumerate() {
                    v[(4 * i + j) * block + tx * cin + c] = *val;
                }
            }
        }
    }
}

/// `y[dy][2·tx + dx][o] = (Aᵀ·M·A)[dy][dx]` for the tiles of one tile row (columns past `w`
/// dropped).
// `j` picks the same column of M's four rows and of both sums: clearer as an index.
#[allow(clippy::needless_range_loop)]
fn winograd_output(m: &[f32], tw: usize, cout: usize, w: usize, y: &mut [f32]) {
    let block = tw * cout;
    for tx in 0..tw {
        for o in 0..cout {
            let g = |xi: usize| m[xi * block + tx * cout + o];
            // Aᵀ·M: rows (m0 + m1 + m2, m1 − m2 − m3) per column j.
            let mut s = [[0f32; 4]; 2];
            for j in 0..4 {
                let (m0, m1, m2, m3) = (g(j), g(4 + j), g(8 + j), g(12 + j));
                s[0][j] = m0 + m1 + m2;
                s[1][j] = m1 - m2 - m3;
            }
            for (dy, r) in s.iter().enumerate() {
                let vals = [r[0] + r[1] + r[2], r[1] - r[2] - r[3]];
                for (dx, val) in vals.iter().enumerate() {
                    let col = 2 * tx + dx;
                    if col < w {
                        y[(dy * w + col) * cout + o] = *val;
                    }
                }
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
        let kernels: [(&str, Conv); 2] = [("direct", conv3x3), ("winograd", conv3x3_winograd)];
        for (batch, cin, h, w, cout) in [(2, 5, 7, 6, 4), (1, 3, 5, 9, 2), (1, 17, 1, 1, 3)] {
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
