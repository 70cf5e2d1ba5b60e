//! GGML's Q4_K: super-blocks of 256 values in eight sub-blocks of 32, each with a 6-bit scale
//! and a 6-bit min, themselves scaled by the super-block's f16 `d` and `dmin`.
//!
//! A block is 144 bytes: `d` (f16), `dmin` (f16), the 16 six-bit numbers packed in 12 bytes
//! (GGML's `get_scale_min_k4` order), then 128 bytes of quants where byte `32·c + l` holds value
//! `64·c + l` in its low nibble and value `64·c + 32 + l` in its high nibble.

use super::nearest_int;
use half::f16;

/// Values per super-block.
pub(crate) const QK: usize = 256;
/// Bytes per super-block.
pub(crate) const BLOCK_BYTES: usize = 2 + 2 + SCALE_BYTES + QK / 2;
/// Bytes of packed sub-block scales and mins.
const SCALE_BYTES: usize = 12;
/// Offset of the quants in a block.
const QS: usize = 4 + SCALE_BYTES;
/// Values beyond this cannot be given a finite f16 scale anyway; refusing them first keeps the
/// sums of squares in the search finite.
const LIMIT: f32 = 1e15;

/// GGML's `make_qkx2_quants` with Q4_K's parameters (15 levels, `rmin = -1`, `rdelta = 0.1`,
/// 20 steps, squared error): fits `x ≈ scale · L − min` with `L` in `0..=15` by trying 21
/// candidate scales and solving weighted least squares for each. Returns `(scale, min)`.
///
/// Every float operation keeps GGML's order (Rust never fuses a multiply and an add), so the
/// result equals a build of GGML's C that does not contract into FMA either.
fn make_qkx2_quants(x: &[f32], weights: &[f32], l: &mut [u8]) -> (f32, f32) {
    const NMAX: i32 = 15;
    const RMIN: f32 = -1.0;
    const RDELTA: f32 = 0.1;
    const NSTEP: i32 = 20;
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let mut iscale = NMAX as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, NMAX);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    let mut laux = [0u8; 32];
    for is in 0..=NSTEP {
        iscale = (RMIN + RDELTA * is as f32 + NMAX as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, NMAX);
            laux[i] = q as u8;
            let w = weights[i];
            let lf = q as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Sub-block `j`'s 6-bit scale and min from the 12 packed bytes (GGML's `get_scale_min_k4`).
#[inline(always)]
pub(crate) fn scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// All eight scales and mins of a block.
#[inline(always)]
pub(crate) fn scales_mins(q: &[u8]) -> ([u8; 8], [u8; 8]) {
    // [`scale_min`] for all eight at once on three little-endian words, without branches (the
    // products unpack one block's scales per 256 weights).
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const TOP2: u32 = 0x0303_0303;
    let word = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
    let (a, b, c) = (word(0), word(1), word(2));
    let scales = [a & LOW6, (c & LOW4) | (((a >> 6) & TOP2) << 4)];
    let mins = [b & LOW6, ((c >> 4) & LOW4) | (((b >> 6) & TOP2) << 4)];
    let bytes = |w: [u32; 2]| {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&w[0].to_le_bytes());
        out[4..].copy_from_slice(&w[1].to_le_bytes());
        out
    };
    (bytes(scales), bytes(mins))
}

/// Quantises one row (a multiple of 256 finite values) as GGML's `quantize_row_q4_K_ref`.
/// Returns the first block whose `d` or `dmin` overflows f16, if any.
pub(crate) fn quantize_row(x: &[f32], out: &mut [u8]) -> Option<usize> {
    let mut overflow = None;
    for (b, (xb, yb)) in x
        .chunks_exact(QK)
        .zip(out.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        if !quantize_block(xb, yb) && overflow.is_none() {
            overflow = Some(b);
        }
    }
    overflow
}

/// One super-block; false when its scales do not fit in f16.
fn quantize_block(x: &[f32], y: &mut [u8]) -> bool {
    let too_large = x.iter().any(|v| v.abs() > LIMIT);
    let mut l = [0u8; QK];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
    if !too_large {
        for j in 0..8 {
            let xs = &x[32 * j..32 * j + 32];
            let mut sum_x2 = 0f32;
            for v in xs {
                sum_x2 += v * v;
            }
            let av_x = (sum_x2 / 32.0).sqrt();
            for (w, v) in weights.iter_mut().zip(xs) {
                *w = av_x + v.abs();
            }
            (scales[j], mins[j]) = make_qkx2_quants(xs, &weights, &mut l[32 * j..32 * j + 32]);
            if scales[j] > max_scale {
                max_scale = scales[j];
            }
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let packed = &mut y[4..QS];
    for j in 0..8 {
        // GGML stores nearest_int's result in a uint8_t before clamping to 63.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    y[0..2].copy_from_slice(&d.to_le_bytes());
    y[2..4].copy_from_slice(&dmin.to_le_bytes());
    let (d, dmin) = (d.to_f32(), dmin.to_f32());
    for j in 0..8 {
        let (sc, m) = scale_min(j, &y[4..QS]);
        let dj = d * sc as f32;
        // A zero scale keeps the search's quants, as GGML does.
        if dj == 0.0 {
            continue;
        }
        let dm = dmin * m as f32;
        for i in 0..32 {
            l[32 * j + i] = nearest_int((x[32 * j + i] + dm) / dj).clamp(0, 15) as u8;
        }
    }
    let qs = &mut y[QS..];
    for c in 0..4 {
        for i in 0..32 {
            qs[32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
        }
    }
    !too_large && d.is_finite() && dmin.is_finite()
}

/// `y = d·sc·q − dmin·m` per sub-block, as GGML's `dequantize_row_q4_K`.
pub(crate) fn dequantize_row(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK)) {
        let d = f16::from_le_bytes([qb[0], qb[1]]).to_f32();
        let dmin = f16::from_le_bytes([qb[2], qb[3]]).to_f32();
        let (sc, m) = scales_mins(&qb[4..QS]);
        for c in 0..4 {
            let (d1, m1) = (d * sc[2 * c] as f32, dmin * m[2 * c] as f32);
            let (d2, m2) = (d * sc[2 * c + 1] as f32, dmin * m[2 * c + 1] as f32);
            let bytes = &qb[QS + 32 * c..QS + 32 * c + 32];
            for (i, &byte) in bytes.iter().enumerate() {
                yb[64 * c + i] = d1 * (byte & 0xF) as f32 - m1;
                yb[64 * c + 32 + i] = d2 * (byte >> 4) as f32 - m2;
            }
        }
    }
}

/// An activation row quantised for products with Q4_K weights, as GGML's Q8_K: blocks of 256
/// int8 with an f32 scale, plus the sum of each sub-block of 32 quants (GGML keeps sums of 16,
/// used in pairs), which the weights' mins multiply.
pub(crate) struct Q8KRow {
    /// The quants, one per value.
    pub(crate) qs: Vec<i8>,
    /// One scale per block of 256.
    pub(crate) d: Vec<f32>,
    /// Eight sums per block.
    pub(crate) sums: Vec<i32>,
}

/// Quantises an activation row (finite values, a multiple of 256) as GGML's
/// `quantize_row_q8_K_ref`: `iscale = -127 / max` with `max` the value of largest magnitude,
/// `q = min(127, nearest_int(iscale · x))`, `d = 1 / iscale`.
pub(crate) fn quantize_activation(x: &[f32]) -> Q8KRow {
    let nb = x.len() / QK;
    let mut qs = vec![0i8; x.len()];
    let mut d = vec![0f32; nb];
    let mut sums = vec![0i32; nb * 8];
    for (b, (xb, qb)) in x.chunks_exact(QK).zip(qs.chunks_exact_mut(QK)).enumerate() {
        let mut max = 0f32;
        let mut amax = 0f32;
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            continue;
        }
        let iscale = -127.0 / max;
        for (q, v) in qb.iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).clamp(-127, 127) as i8;
        }
        for j in 0..8 {
            sums[b * 8 + j] = qb[32 * j..32 * j + 32].iter().map(|&q| q as i32).sum();
        }
        d[b] = 1.0 / iscale;
    }
    Q8KRow { qs, d, sums }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::gaussian;
    use super::super::{QuantKind, QuantMatrix};
    use super::*;

    fn round_trip(x: &[f32]) -> Vec<f32> {
        QuantMatrix::quantize(QuantKind::Q4K, x, 1, x.len())
            .unwrap()
            .dequantize_row(0)
            .unwrap()
    }

    /// The branch-free unpacking agrees with the per-sub-block one on random bytes.
    #[test]
    fn scales_mins_unpacks_as_get_scale_min_k4_does() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut q = [0u8; 12];
            for b in &mut q {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *b = (state >> 56) as u8;
            }
            let (sc, m) = scales_mins(&q);
            for j in 0..8 {
                assert_eq!((sc[j], m[j]), scale_min(j, &q), "{q:?} sub-block {j}");
            }
        }
    }

    /// The 6-bit packing round-trips every scale and min value in every position.
    #[test]
    fn packing_inverts_get_scale_min_k4() {
        for seed in 0..64u32 {
            let ls: [u8; 8] = std::array::from_fn(|j| ((seed * 7 + j as u32 * 13) % 64) as u8);
            let lm: [u8; 8] = std::array::from_fn(|j| ((seed * 11 + j as u32 * 5 + 3) % 64) as u8);
            let mut p = [0u8; 12];
            for j in 0..8 {
                if j < 4 {
                    p[j] = ls[j];
                    p[j + 4] = lm[j];
                } else {
                    p[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
                    p[j - 4] |= (ls[j] >> 4) << 6;
                    p[j] |= (lm[j] >> 4) << 6;
                }
            }
            assert_eq!(scales_mins(&p), (ls, lm));
        }
    }

    #[test]
    fn round_trip_error_is_within_the_sub_block_step() {
        for scale in [1e-3f32, 0.02, 1.0, 50.0] {
            let x = gaussian(8 * 256, 4, scale);
            let w = QuantMatrix::quantize(QuantKind::Q4K, &x, 1, x.len()).unwrap();
            let y = w.dequantize_row(0).unwrap();
            let mut err2 = 0f64;
            let mut x2 = 0f64;
            for (b, (xb, yb)) in x.chunks(QK).zip(y.chunks(QK)).enumerate() {
                let blk = &w.bytes()[b * BLOCK_BYTES..(b + 1) * BLOCK_BYTES];
                let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                let (sc, _) = scales_mins(&blk[4..QS]);
                for (j, (xs, ys)) in xb.chunks(32).zip(yb.chunks(32)).enumerate() {
                    let lo = xs.iter().fold(f32::MAX, |m, &v| m.min(v));
                    let hi = xs.iter().fold(f32::MIN, |m, &v| m.max(v));
                    // Each value is within one step d·sc of its sub-block fit (a rounded
                    // step is half of it; the 6-bit scale and f16 rounding take the rest),
                    // and never further than the sub-block's range from its value.
                    let step = d * sc[j] as f32;
                    for (a, c) in xs.iter().zip(ys) {
                        assert!(
                            (a - c).abs() <= step.max((hi - lo) / 15.0) * 1.01 + 1e-6 * scale,
                            "{a} vs {c}, step {step}, scale {scale}"
                        );
                        err2 += ((a - c) as f64).powi(2);
                        x2 += (*a as f64).powi(2);
                    }
                }
            }
            // 4 bits on Gaussian data: about 10 % relative RMS error.
            let rel = (err2 / x2).sqrt();
            assert!(rel < 0.12, "relative RMS error {rel} at scale {scale}");
        }
    }

    #[test]
    fn zero_equal_one_signed_tiny_and_huge_blocks() {
        assert_eq!(round_trip(&[0.0; 256]), vec![0.0; 256]);
        // All equal and positive: the min is clamped to 0, every value one scale step.
        for v in [0.3f32, 7.0, -2.0] {
            let y = round_trip(&[v; 256]);
            for b in &y {
                assert!((b - v).abs() <= v.abs() * 2e-3, "{b} vs {v}");
            }
        }
        // Only positive values: dmin·m = 0 is representable and exact zeros stay zero.
        let mut x = gaussian(256, 6, 1.0);
        x.iter_mut().for_each(|v| *v = v.abs());
        x[17] = 0.0;
        let y = round_trip(&x);
        assert!(y[17].abs() <= 0.5 * x.iter().fold(0f32, |m, v| m.max(*v)) / 15.0);
        // Below f16's range the scales flush to zero and the block decodes to zeros.
        let y = round_trip(&vec![1e-10; 256]);
        assert!(y.iter().all(|&v| v == 0.0));
        // Large but representable ranges.
        let x = gaussian(256, 7, 1e5);
        let y = round_trip(&x);
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= amax / 8.0, "{a} vs {b}");
        }
    }

    #[test]
    fn q8_k_activations_are_within_half_a_step_and_sum_their_sub_blocks() {
        let x = gaussian(512, 12, 2.0);
        let a = quantize_activation(&x);
        for (b, xb) in x.chunks(QK).enumerate() {
            for (i, v) in xb.iter().enumerate() {
                let back = a.qs[b * QK + i] as f32 * a.d[b];
                assert!((back - v).abs() <= 0.5 * a.d[b].abs() * (1.0 + 1e-5));
            }
            for j in 0..8 {
                let s: i32 = a.qs[b * QK + 32 * j..b * QK + 32 * j + 32]
                    .iter()
                    .map(|&q| q as i32)
                    .sum();
                assert_eq!(a.sums[b * 8 + j], s);
            }
        }
        // The value of largest magnitude maps to -127 (GGML's sign convention), so a positive
        // one gives a negative scale.
        let mut x = vec![0.1f32; 256];
        x[9] = 4.0;
        let a = quantize_activation(&x);
        assert_eq!(a.qs[9], -127);
        assert!(a.d[0] < 0.0);
        // An all-zero block has scale 0, zero quants and zero sums.
        let z = quantize_activation(&[0.0; 256]);
        assert_eq!((z.d[0], z.sums[3]), (0.0, 0));
    }
}
