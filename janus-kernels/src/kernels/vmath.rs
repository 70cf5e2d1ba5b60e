//! Vectorised `exp` and `erf` for the element-wise kernels.
//!
//! burn-flex evaluates every transcendental with a scalar libm call on one thread; a SigLIP GELU
//! or a VQ-decoder SiLU is then slower than the matrix product next to it. These are the usual
//! range-reduced forms, accurate to a few f32 ulps for `exp` and to 1.5e-7 absolute for `erf`
//! (Abramowitz & Stegun 7.1.26; with f32 rounding, under 5e-7 absolute and 1e-6 relative), checked against f64 references in
//! the tests.

/// e^x clamped to [e^-87, e^88]: finite and normal, which is all softmax and SiLU need.
#[inline(always)]
pub(crate) fn exp_scalar(x: f32) -> f32 {
    x.clamp(EXP_LO, EXP_HI).exp()
}

/// erf(x) by the same formulas as the vector path.
#[inline(always)]
pub(crate) fn erf_scalar(x: f32) -> f32 {
    let a = x.abs();
    if a < ERF_SERIES_BELOW {
        let x2 = x * x;
        let p = ERF_SERIES.iter().rev().fold(0.0, |p, &c| p * x2 + c);
        return x * p;
    }
    let t = 1.0 / (1.0 + ERF_P * a);
    let poly = ((((ERF_A5 * t + ERF_A4) * t + ERF_A3) * t + ERF_A2) * t + ERF_A1) * t;
    let y = 1.0 - poly * exp_scalar(-a * a);
    y.copysign(x)
}

pub(crate) const EXP_LO: f32 = -87.0;
pub(crate) const EXP_HI: f32 = 88.0;

// Near 0, 1 − poly·e^(−x²) cancels (1e-5 relative at |x| = 0.05), so below 0.75 erf is its
// Maclaurin series, 2/√π · Σ (−1)^k x^(2k+1) / (k!·(2k+1)), k ≤ 7 (next term < 2e-8 relative).
const ERF_SERIES_BELOW: f32 = 0.75;
const ERF_SERIES: [f32; 8] = [
    std::f32::consts::FRAC_2_SQRT_PI,
    -0.376_126_4,
    0.112_837_92,
    -0.026_866_17,
    0.005_223_978,
    -0.000_854_832_7,
    0.000_120_553_33,
    -1.492_565e-5,
];

// Abramowitz & Stegun 7.1.26: erf(x) = 1 − (a1·t + … + a5·t⁵)·e^(−x²), t = 1/(1 + p·x), x ≥ 0.
const ERF_P: f32 = 0.327_591_1;
const ERF_A1: f32 = 0.254_829_6;
const ERF_A2: f32 = -0.284_496_74;
const ERF_A3: f32 = 1.421_413_7;
const ERF_A4: f32 = -1.453_152_1;
const ERF_A5: f32 = 1.061_405_4;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    //! Only called after `Isa::detect` found AVX2 and FMA.

    use super::*;
    use std::arch::x86_64::*;

    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;

    /// e^x for 8 lanes: x = n·ln2 + r with |r| ≤ ln2/2, e^r by its degree-7 Taylor polynomial
    /// (truncation < 5e-9 relative), 2^n put into the exponent bits.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn exp8(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(EXP_LO)),
            _mm256_set1_ps(EXP_HI),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(1.0 / 5040.0);
        for c in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(p, _mm256_castsi256_ps(bits))
    }

    /// erf for 8 lanes, the formula of [`erf_scalar`].
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn erf8(x: __m256) -> __m256 {
        let sign = _mm256_set1_ps(-0.0);
        let a = _mm256_andnot_ps(sign, x);
        let one = _mm256_set1_ps(1.0);
        let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(ERF_P), a, one));
        let mut p = _mm256_set1_ps(ERF_A5);
        for c in [ERF_A4, ERF_A3, ERF_A2, ERF_A1] {
            p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(c));
        }
        p = _mm256_mul_ps(p, t);
        let e = exp8(_mm256_xor_ps(_mm256_mul_ps(a, a), sign));
        let y = _mm256_fnmadd_ps(p, e, one);
        let far = _mm256_or_ps(y, _mm256_and_ps(x, sign));
        let x2 = _mm256_mul_ps(x, x);
        let mut q = _mm256_set1_ps(ERF_SERIES[7]);
        for c in ERF_SERIES[..7].iter().rev() {
            q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(*c));
        }
        let near = _mm256_mul_ps(x, q);
        let small = _mm256_cmp_ps::<_CMP_LT_OQ>(a, _mm256_set1_ps(ERF_SERIES_BELOW));
        _mm256_blendv_ps(far, near, small)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64 by its Maclaurin series (|x| ≤ 4: the largest term is ≈ 9e6, so ≈ 1e-9 left).
    fn erf_f64(x: f64) -> f64 {
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    fn grid() -> impl Iterator<Item = f32> {
        (-4000..=4000).map(|i| i as f32 * 1e-3)
    }

    #[test]
    fn scalar_erf_is_within_a_and_s_bound() {
        for x in grid() {
            let want = erf_f64(x as f64);
            let err = (erf_scalar(x) as f64 - want).abs();
            assert!(
                err < 5e-7 && err <= 1e-6 * want.abs(),
                "erf({x}): error {err}"
            );
        }
        assert_eq!(erf_scalar(9.0), 1.0);
        assert_eq!(erf_scalar(-9.0), -1.0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_and_erf_match_references() {
        use std::arch::x86_64::*;
        if crate::kernels::rows::Isa::detect() != crate::kernels::rows::Isa::Avx2 {
            return;
        }
        let run = |f: unsafe fn(__m256) -> __m256, xs: &[f32]| -> Vec<f32> {
            xs.chunks(8)
                .flat_map(|c| {
                    let mut lanes = [0f32; 8];
                    lanes[..c.len()].copy_from_slice(c);
                    let mut out = [0f32; 8];
                    // SAFETY: AVX2/FMA confirmed above; 8-element buffers.
                    unsafe {
                        _mm256_storeu_ps(out.as_mut_ptr(), f(_mm256_loadu_ps(lanes.as_ptr())))
                    };
                    out.into_iter().take(c.len()).collect::<Vec<_>>()
                })
                .collect()
        };
        let xs: Vec<f32> = (-8700..=8800).map(|i| i as f32 * 1e-2).collect();
        let exps = run(|v| unsafe { avx2::exp8(v) }, &xs);
        for (x, y) in xs.iter().zip(&exps) {
            let want = (*x as f64).exp();
            let rel = ((*y as f64 - want) / want).abs();
            assert!(rel < 4e-7, "exp({x}) = {y}, want {want}: rel error {rel}");
        }
        // Clamped outside [-87, 88]: finite, no NaN.
        let far = run(
            |v| unsafe { avx2::exp8(v) },
            &[-1e4, 1e4, f32::MIN, f32::MAX],
        );
        assert!(far.iter().all(|v| v.is_finite() && *v > 0.0));
        let xs: Vec<f32> = grid().collect();
        let erfs = run(|v| unsafe { avx2::erf8(v) }, &xs);
        for (x, y) in xs.iter().zip(&erfs) {
            let want = erf_f64(*x as f64);
            let err = (*y as f64 - want).abs();
            assert!(
                err < 5e-7 && err <= 1e-6 * want.abs(),
                "erf({x}) = {y}: error {err}"
            );
            assert!((y - erf_scalar(*x)).abs() < 5e-7);
        }
    }
}
