//! 3×3 convolution (stride 1, zero padding 1) as products over a padded channels-last copy.
//!
//! burn-flex's convolution spends about a third of a VQ decode outside its GEMM (an im2col
//! buffer nine times the input, single-threaded copies, page faults on the fresh buffers). Here
//! the input is copied once into a zero-padded `[h+2, w+2, cin]` layout; then for output row `r`
//! and kernel row `kh` the three taps `kw` and all input channels are one contiguous run of
//! `3·cin` values per output column, so each output row is three `gemm` products
//! (`[cout, 3·cin] · [3·cin, w]`) read straight from that buffer and accumulated into the NCHW
//! output, which starts as the bias. Rows are spread over rayon's threads.

use rayon::prelude::*;

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
    if batch == 0
        || cin == 0
        || h == 0
        || w == 0
        || cout == 0
        || x.len() != batch * cin * h * w
        || weight.len() != cout * cin * 9
        || bias.is_some_and(|b| b.len() != cout)
    {
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
        // Padded channels-last copy; border rows and columns stay zero.
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

/// The output buffer, shared by tasks that write disjoint rows.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: tasks write disjoint rows and the buffer outlives the parallel loop.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: offsets are in-bounds row starts.
        unsafe { self.0.add(offset) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_direct_f64_convolution() {
        let (batch, cin, h, w, cout) = (2, 5, 7, 6, 4);
        let x: Vec<f32> = (0..batch * cin * h * w)
            .map(|i| ((i * 7919) % 997) as f32 / 997.0 - 0.5)
            .collect();
        let weight: Vec<f32> = (0..cout * cin * 9)
            .map(|i| ((i * 104729) % 991) as f32 / 991.0 - 0.5)
            .collect();
        let bias: Vec<f32> = (0..cout).map(|o| o as f32 * 0.25 - 0.5).collect();
        for bias in [Some(bias.as_slice()), None] {
            let y = conv3x3(&x, batch, cin, h, w, &weight, bias, cout).expect("sizes fit");
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
                                        let xv = x[((b * cin + i) * h + rr - 1) * w + cc - 1];
                                        let wv = weight[((o * cin + i) * 3 + kh) * 3 + kw];
                                        want += xv as f64 * wv as f64;
                                    }
                                }
                            }
                            let got = y[((b * cout + o) * h + r) * w + c] as f64;
                            assert!((got - want).abs() < 1e-5, "b{b} o{o} r{r} c{c}");
                        }
                    }
                }
            }
        }
        assert!(conv3x3(&x, batch, cin, h, w, &weight[1..], None, cout).is_none());
        assert!(conv3x3(&x, batch, cin, h, w + 1, &weight, None, cout).is_none());
    }
}
