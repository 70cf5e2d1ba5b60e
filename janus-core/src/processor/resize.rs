//! A port of Pillow's 8-bit resampler (`libImaging/Resample.c`), bicubic filter only.
//!
//! The reference resizes with `torchvision.transforms.functional.resize(pil_image, BICUBIC,
//! antialias=True)`, which on a PIL image is `Image.resize(size, BICUBIC)`. Matching its pixels
//! bit for bit needs Pillow's exact arithmetic: coefficients computed in f64, normalised, turned
//! into 22-bit fixed point, then two separable passes (horizontal, then vertical) that each round
//! and clamp back to `u8`. The `image` crate's filters differ in all of these.

/// Fractional bits of the fixed-point coefficients: `32 - 8 - 2` (8 bits of pixel, 2 of headroom).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bicubic support radius (in output pixels, before widening for downscaling).
const BICUBIC_SUPPORT: f64 = 2.0;

/// Keys' cubic convolution kernel with `a = -0.5`, as in Pillow's `bicubic_filter`.
pub(crate) fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point filter taps for one axis: output pixel `i` reads `len` input pixels from `start`
/// with weights `weights[i * ksize..][..len]`.
struct Coefficients {
    ksize: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

/// `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the box `[0, in_size)`.
fn precompute_coefficients(in_size: usize, out_size: usize) -> Coefficients {
    // Pillow keeps the box in f32; whole-image boxes are exact, so f64 of the size is the same.
    let scale = in_size as f64 / out_size as f64;
    // Downscaling widens the kernel so every input pixel contributes (the antialiasing).
    let filterscale = scale.max(1.0);
    let support = BICUBIC_SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;

    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    let ss = 1.0 / filterscale;
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C casts truncate toward zero; the clamps make the sign of the truncation irrelevant.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let len = (xmax - xmin).max(0) as usize;
        let xmin = xmin as usize;

        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(len) {
            let w = bicubic_filter((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let row = &mut weights[xx * ksize..(xx + 1) * ksize];
        for (x, out) in row.iter_mut().enumerate().take(len) {
            let kx = if ww != 0.0 { k[x] / ww } else { k[x] };
            *out = to_fixed_point(kx);
        }
        bounds.push((xmin, len));
    }
    Coefficients {
        ksize,
        bounds,
        weights,
    }
}

/// `normalize_coeffs_8bpc`: round half away from zero, then truncate like a C `(int)` cast.
fn to_fixed_point(k: f64) -> i32 {
    let scaled = k * f64::from(1u32 << PRECISION_BITS);
    if k < 0.0 {
        (scaled - 0.5) as i32
    } else {
        (scaled + 0.5) as i32
    }
}

/// Pillow's `clip8`: drop the fraction and clamp to `0..=255`.
fn clip8(acc: i64) -> u8 {
    if acc >= 255i64 << PRECISION_BITS {
        255
    } else if acc <= 0 {
        0
    } else {
        (acc >> PRECISION_BITS) as u8
    }
}

/// Initial accumulator: one half in fixed point, so the final shift rounds to nearest.
const HALF: i64 = 1 << (PRECISION_BITS - 1);

/// Horizontal pass over interleaved `u8` pixels with `channels` samples each.
fn resample_horizontal(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_width: usize,
) -> Vec<u8> {
    let c = precompute_coefficients(width, out_width);
    let mut out = vec![0u8; out_width * height * channels];
    for y in 0..height {
        let src_row = &src[y * width * channels..(y + 1) * width * channels];
        let out_row = &mut out[y * out_width * channels..(y + 1) * out_width * channels];
        for (xx, &(xmin, len)) in c.bounds.iter().enumerate() {
            let k = &c.weights[xx * c.ksize..xx * c.ksize + len];
            for ch in 0..channels {
                let mut acc = HALF;
                for (x, &kx) in k.iter().enumerate() {
                    acc += i64::from(src_row[(xmin + x) * channels + ch]) * i64::from(kx);
                }
                out_row[xx * channels + ch] = clip8(acc);
            }
        }
    }
    out
}

/// Vertical pass over interleaved `u8` pixels with `channels` samples each.
fn resample_vertical(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_height: usize,
) -> Vec<u8> {
    let c = precompute_coefficients(height, out_height);
    let stride = width * channels;
    let mut out = vec![0u8; stride * out_height];
    for (yy, &(ymin, len)) in c.bounds.iter().enumerate() {
        let k = &c.weights[yy * c.ksize..yy * c.ksize + len];
        let out_row = &mut out[yy * stride..(yy + 1) * stride];
        for (i, out_px) in out_row.iter_mut().enumerate() {
            let mut acc = HALF;
            for (y, &ky) in k.iter().enumerate() {
                acc += i64::from(src[(ymin + y) * stride + i]) * i64::from(ky);
            }
            *out_px = clip8(acc);
        }
    }
    out
}

/// Resizes an interleaved 8-bit image exactly like Pillow's `Image.resize(size, BICUBIC)`.
///
/// `src` holds `height` rows of `width` pixels with `channels` samples each. Returns the
/// `out_height × out_width × channels` result. A pass whose size does not change is skipped, as
/// Pillow does, so an identity resize returns the input unchanged.
///
/// All sizes must be non-zero and `src.len()` must equal `width * height * channels`; the
/// processor checks both before calling.
pub fn resize_bicubic(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_width: usize,
    out_height: usize,
) -> Vec<u8> {
    debug_assert_eq!(src.len(), width * height * channels);
    // Pillow crops the horizontal pass to the rows the vertical pass reads; every row is
    // resampled independently, so doing all rows gives the same pixels.
    let horizontal = if out_width != width {
        Some(resample_horizontal(src, width, height, channels, out_width))
    } else {
        None
    };
    let after_h = horizontal.as_deref().unwrap_or(src);
    if out_height != height {
        resample_vertical(after_h, out_width, height, channels, out_height)
    } else {
        horizontal.unwrap_or_else(|| src.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_matches_keys_cubic() {
        assert_eq!(bicubic_filter(0.0), 1.0);
        assert_eq!(bicubic_filter(1.0), 0.0);
        assert_eq!(bicubic_filter(2.0), 0.0);
        assert_eq!(bicubic_filter(-0.5), bicubic_filter(0.5));
        // a = -0.5: f(0.5) = 1.5·0.125 − 2.5·0.25 + 1 = 0.5625
        assert!((bicubic_filter(0.5) - 0.5625).abs() < 1e-15);
        assert!((bicubic_filter(1.5) + 0.0625).abs() < 1e-15);
    }

    #[test]
    fn coefficients_sum_to_one_in_fixed_point() {
        for (i, o) in [(257, 32), (181, 22), (1, 14), (60, 14), (5, 17)] {
            let c = precompute_coefficients(i, o);
            for (xx, &(_, len)) in c.bounds.iter().enumerate() {
                let s: i64 = c.weights[xx * c.ksize..xx * c.ksize + len]
                    .iter()
                    .map(|&k| i64::from(k))
                    .sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= len as i64,
                    "{i}->{o}: {s}"
                );
            }
        }
    }
}
