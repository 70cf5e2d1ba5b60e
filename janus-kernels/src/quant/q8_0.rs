//! GGML's Q8_0: blocks of 32 values, an f16 scale `d = amax / 127` then 32 int8 `round(x / d)`.

use half::f16;

/// Values per block.
pub(crate) const QK: usize = 32;
/// Bytes per block: the f16 scale, then the quants.
pub(crate) const BLOCK_BYTES: usize = 2 + QK;

/// Quantises one row (`x.len()` a multiple of 32, finite) into `out`, as GGML's
/// `quantize_row_q8_0_ref`: the scale is computed and inverted in f32, the quants rounded half
/// away from zero (C's `roundf`), and only then is the scale stored as f16. Returns the first
/// block whose scale overflows f16, if any.
pub(crate) fn quantize_row(x: &[f32], out: &mut [u8]) -> Option<usize> {
    let mut overflow = None;
    for (b, (xb, yb)) in x
        .chunks_exact(QK)
        .zip(out.chunks_exact_mut(BLOCK_BYTES))
        .enumerate()
    {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let dh = f16::from_f32(d);
        if !dh.is_finite() && overflow.is_none() {
            overflow = Some(b);
        }
        yb[..2].copy_from_slice(&dh.to_le_bytes());
        for (q, v) in yb[2..].iter_mut().zip(xb) {
            *q = (v * id).round() as i8 as u8;
        }
    }
    overflow
}

/// `y = q · d` per block, as GGML's `dequantize_row_q8_0`.
pub(crate) fn dequantize_row(q: &[u8], y: &mut [f32]) {
    for (qb, yb) in q.chunks_exact(BLOCK_BYTES).zip(y.chunks_exact_mut(QK)) {
        let d = f16::from_le_bytes([qb[0], qb[1]]).to_f32();
        for (v, &b) in yb.iter_mut().zip(&qb[2..]) {
            *v = (b as i8) as f32 * d;
        }
    }
}

/// An activation row quantised for products with Q8_0 weights: blocks of 32 int8 with an f32
/// scale (GGML's Q8_0 stores it as f16; f32 costs nothing here and keeps 13 more bits).
pub(crate) struct Q8Row {
    /// The quants, one per value.
    pub(crate) qs: Vec<i8>,
    /// One scale per block of 32.
    pub(crate) d: Vec<f32>,
}

/// Quantises an activation row (finite values, length a multiple of 32): `d = amax / 127`,
/// `q = round(x / d)` clamped to ±127.
pub(crate) fn quantize_activation(x: &[f32]) -> Q8Row {
    let mut qs = vec![0i8; x.len()];
    let mut d = vec![0f32; x.len() / QK];
    for ((xb, qb), db) in x.chunks_exact(QK).zip(qs.chunks_exact_mut(QK)).zip(&mut d) {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        *db = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        for (q, v) in qb.iter_mut().zip(xb) {
            *q = (v * id).round().clamp(-127.0, 127.0) as i8;
        }
    }
    Q8Row { qs, d }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::gaussian;
    use super::super::{QuantKind, QuantMatrix};
    use super::*;

    fn round_trip(x: &[f32]) -> Vec<f32> {
        let w = QuantMatrix::quantize(QuantKind::Q8_0, x, 1, x.len()).unwrap();
        w.dequantize_row(0).unwrap()
    }

    #[test]
    fn round_trip_error_is_within_half_a_step_plus_the_f16_scale_rounding() {
        for scale in [1e-3f32, 0.02, 1.0, 300.0] {
            let x = gaussian(4096, 5, scale);
            let y = round_trip(&x);
            for (xb, yb) in x.chunks(QK).zip(y.chunks(QK)) {
                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                // Half a quantisation step, plus the f16 scale's rounding (2⁻¹¹ relative, or
                // half of f16's subnormal spacing 2⁻²⁴ below 2⁻¹⁴) on values up to 127 steps.
                let dh = (d / 2048.0).max(2f32.powi(-25));
                let bound = 0.5 * d + 127.0 * dh + 1e-7 * amax;
                for (a, b) in xb.iter().zip(yb) {
                    assert!((a - b).abs() <= bound, "{a} vs {b} (scale {scale})");
                }
            }
        }
    }

    #[test]
    fn a_known_block_has_ggml_bytes() {
        // amax 127 → d = 1 (f16 0x3C00), quants are the values rounded half away from zero.
        let mut x = [0f32; 32];
        x[0] = 127.0;
        x[1] = -2.5;
        x[2] = 2.5;
        x[3] = -0.4;
        x[4] = 63.5;
        let w = QuantMatrix::quantize(QuantKind::Q8_0, &x, 1, 32).unwrap();
        let b = w.bytes();
        assert_eq!(&b[..2], &[0x00, 0x3C]);
        assert_eq!(&b[2..7], &[127, (-3i8) as u8, 3, 0, 64]);
        assert!(b[7..].iter().all(|&v| v == 0));
    }

    #[test]
    fn zero_equal_tiny_and_huge_blocks() {
        // All zeros: scale 0, quants 0, dequantised exactly.
        assert_eq!(round_trip(&[0.0; 64]), vec![0.0; 64]);
        // All equal: every quant is ±127 and the value comes back to f16 precision.
        for v in [0.75f32, -3.0, 0.01] {
            let y = round_trip(&[v; 32]);
            for b in y {
                assert!((b - v).abs() <= v.abs() / 1024.0, "{b} vs {v}");
            }
        }
        // Below 127·2⁻¹⁴ the scale is an f16 subnormal: absolute error up to 127·2⁻²⁵.
        let y = round_trip(&[1e-4; 32]);
        for b in y {
            assert!((b - 1e-4).abs() <= 127.0 * 2f32.powi(-25), "{b}");
        }
        // Scales below f16's smallest subnormal flush to zero: the block decodes to zeros.
        let y = round_trip(&[1e-9; 32]);
        assert!(y.iter().all(|&v| v == 0.0));
        // Large but representable: 60000 · 127 has a finite f16 scale.
        let y = round_trip(&[60000.0 * 127.0; 32]);
        assert!(y.iter().all(|v| (v / (60000.0 * 127.0) - 1.0).abs() < 1e-3));
    }

    #[test]
    fn activation_quantisation_stays_within_half_a_step() {
        let x = gaussian(256, 8, 3.0);
        let a = quantize_activation(&x);
        for (b, xb) in x.chunks(QK).enumerate() {
            for (i, v) in xb.iter().enumerate() {
                let back = a.qs[b * QK + i] as f32 * a.d[b];
                assert!((back - v).abs() <= 0.5 * a.d[b] * (1.0 + 1e-5));
            }
        }
        let z = quantize_activation(&[0.0; 32]);
        assert_eq!(z.d, vec![0.0]);
        assert!(z.qs.iter().all(|&q| q == 0));
    }
}
