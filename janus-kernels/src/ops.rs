//! The tensor-level ops: each runs its kernel where it applies (f32 burn-flex tensors without
//! autodiff, with the `flex` feature; see each op) and burn's own ops otherwise, so it always
//! returns the result.

use burn::tensor::activation::softmax;
use burn::tensor::module::{attention, conv2d};
use burn::tensor::ops::{AttentionModuleOptions, ConvOptions};
use burn::tensor::{Bool, DType, Tensor};
use rayon::prelude::*;

use crate::kernels::rows::{MAX_ROWS, WeightLayout};

#[cfg(feature = "flex")]
use crate::flex;

/// Exact (erf) GELU, `x · Φ(x)`: on both cores with vectorised `erf` for f32 burn-flex tensors
/// without autodiff (in place when `x` owns its buffer), burn's `gelu` otherwise.
///
/// # Shapes
/// - x, output: any
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    element_wise(
        x,
        crate::kernels::act::gelu_erf,
        burn::tensor::activation::gelu,
    )
}

/// SiLU, `x · sigmoid(x)`: on both cores with vectorised `exp` for f32 burn-flex tensors
/// without autodiff (in place when `x` owns its buffer), burn's `silu` otherwise.
///
/// # Shapes
/// - x, output: any
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    element_wise(x, crate::kernels::act::silu, burn::tensor::activation::silu)
}

/// `kernel` in place on f32 burn-flex tensors without autodiff, `fallback` on anything else.
fn element_wise<const D: usize>(
    x: Tensor<D>,
    kernel: fn(&mut [f32]),
    fallback: fn(Tensor<D>) -> Tensor<D>,
) -> Tensor<D> {
    #[cfg(feature = "flex")]
    let x = match flex::map_in_place(x, kernel) {
        Ok(y) => return y,
        Err(x) => x,
    };
    #[cfg(not(feature = "flex"))]
    let _ = kernel;
    fallback(x)
}

/// LLaMA's RMSNorm over the last dim as HF computes it: `x / sqrt(mean(x²) + eps)` in f32,
/// rounded to `x`'s dtype, then scaled by `weight` (in `x`'s dtype).
///
/// One pass for f32 burn-flex tensors without autodiff (in place when `x` owns its buffer) and a
/// contiguous f32, f16 or bf16 weight, where burn's ops are seven dispatches (a decode step's
/// 2048-wide row costs about that); burn's ops otherwise.
///
/// # Shapes
/// - x, output: `[..., d]`; weight: `[d]`
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: &Tensor<1>, eps: f64) -> Tensor<D> {
    #[cfg(feature = "flex")]
    let x = match flex::rms_norm(x, weight, eps) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let dtype = x.dtype();
    let x32 = if dtype == DType::F32 {
        x
    } else {
        x.cast(DType::F32)
    };
    let rms = x32.clone().square().mean_dim(D - 1).add_scalar(eps).sqrt();
    let normed = x32.div(rms);
    let normed = if dtype == DType::F32 {
        normed
    } else {
        normed.cast(dtype)
    };
    let weight = if weight.dtype() == dtype {
        weight.clone()
    } else {
        weight.clone().cast(dtype)
    };
    normed.mul(weight.unsqueeze())
}

/// The half-split rotary embedding, `x·cos + rotate_half(x)·sin` with `rotate_half([a, b]) =
/// [−b, a]`: one pass for f32 burn-flex tensors without autodiff, burn's ops (the same
/// arithmetic, bit for bit) otherwise.
///
/// # Shapes
/// - x, output: `[batch, heads, tokens, head_dim]`; cos, sin: `[batch, 1, tokens, head_dim]`
pub fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    let x = match flex::rope(x, cos, sin) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let [b, h, t, d] = x.dims();
    let first = x.clone().slice([0..b, 0..h, 0..t, 0..d / 2]);
    let second = x.clone().slice([0..b, 0..h, 0..t, d / 2..d]);
    let rotated = Tensor::cat(vec![second.neg(), first], 3);
    x.mul(cos.clone()).add(rotated.mul(sin.clone()))
}

/// GroupNorm with an optional per-channel affine (and SiLU after it when `then_silu`), its
/// statistics, normalisation and affine in f32 and one rounding back to `x`'s dtype at the end
/// (as PyTorch's GroupNorm kernels do for half-precision inputs).
///
/// With both `gamma` and `beta`, on burn-flex without autodiff: one pass over each group for
/// the statistics (accumulated in f64) and one for `silu(a·x + b)` on both cores. Otherwise
/// burn's ops, with the per-group sums as matrix products (`x · 1` and `c · cᵀ` for the centred
/// values `c`): those run as blocked dot products, where a `mean_dim` reduction on burn-flex
/// sums sequentially, slower and less accurate (measurements: docs/perf-notes.md V5), and the
/// affine folded into one per-channel scale and shift,
/// `y = c·(γ·rstd) + β`, so the full tensor is touched by one subtraction, one multiplication
/// and one addition.
///
/// `groups` must divide the channels (burn's reshapes panic otherwise, as `GroupNorm` does).
///
/// # Shapes
/// - x, output: `[batch, channels, height, width]`; gamma, beta: `[channels]`
pub fn group_norm(
    x: Tensor<4>,
    gamma: Option<&Tensor<1>>,
    beta: Option<&Tensor<1>>,
    groups: usize,
    eps: f64,
    then_silu: bool,
) -> Tensor<4> {
    let dtype = x.dtype();
    let x = if dtype == DType::F32 {
        x
    } else {
        x.cast(DType::F32)
    };
    let y = group_norm_f32(x, gamma, beta, groups, eps, then_silu);
    if dtype == DType::F32 {
        y
    } else {
        y.cast(dtype)
    }
}

/// [`group_norm`] of an f32 `x`, the result in f32.
fn group_norm_f32(
    x: Tensor<4>,
    gamma: Option<&Tensor<1>>,
    beta: Option<&Tensor<1>>,
    groups: usize,
    eps: f64,
    then_silu: bool,
) -> Tensor<4> {
    #[cfg(feature = "flex")]
    let x = match (gamma, beta) {
        (Some(gamma), Some(beta)) => {
            match flex::group_norm(x, gamma, beta, groups, eps, then_silu) {
                Ok(y) => return y,
                Err(x) => x,
            }
        }
        _ => x,
    };
    let [b, c, h, w] = x.dims();
    let per_group = c / groups;
    let n = per_group * h * w;
    let x = x.reshape([b * groups, 1, n]);
    let ones = Tensor::<3>::ones([1, n, 1], (&x.device(), DType::F32));
    let mean = x.clone().matmul(ones).div_scalar(n as f64); // [b·g, 1, 1]
    let centred = x - mean;
    let var = centred
        .clone()
        .matmul(centred.clone().swap_dims(1, 2))
        .div_scalar(n as f64); // [b·g, 1, 1]
    let rstd = var.add_scalar(eps).sqrt().recip().reshape([b, groups, 1]);
    let centred = centred.reshape([b, c, h * w]);
    let y = match (gamma, beta) {
        (Some(gamma), Some(beta)) => {
            let gamma = gamma
                .clone()
                .cast(DType::F32)
                .reshape([1, groups, per_group]);
            let scale = (gamma * rstd).reshape([b, c, 1]);
            let beta = beta.clone().cast(DType::F32).reshape([1, c, 1]);
            centred * scale + beta
        }
        _ => centred * rstd.expand([b, groups, per_group]).reshape([b, c, 1]),
    };
    let y = y.reshape([b, c, h, w]);
    if then_silu {
        burn::tensor::activation::silu(y)
    } else {
        y
    }
}

/// 3×3 convolution, stride 1, zero padding 1: Winograd F(2×2, 3×3) on both cores for f32
/// burn-flex tensors without autodiff, burn's `conv2d` otherwise. [`crate::nn::conv3x3`] picks
/// between them by size.
///
/// # Shapes
/// - x: `[batch, cin, height, width]`; weight: `[cout, cin, 3, 3]`; bias: `[cout]`
/// - output: `[batch, cout, height, width]`
pub fn conv3x3(x: Tensor<4>, weight: &Tensor<4>, bias: Option<&Tensor<1>>) -> Tensor<4> {
    conv3x3_with(x, weight, bias, ConvAlgorithm::Winograd)
}

/// How [`conv3x3_with`] computes the convolution where the kernels apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "profiling"), allow(dead_code))]
pub enum ConvAlgorithm {
    /// Three products per output row over a padded channels-last copy of the input.
    Direct,
    /// Winograd's F(2×2, 3×3) in NCHW, 2.25× fewer multiplies.
    Winograd,
}

/// [`conv3x3`] with the kernel's algorithm chosen by the caller.
pub fn conv3x3_with(
    x: Tensor<4>,
    weight: &Tensor<4>,
    bias: Option<&Tensor<1>>,
    algorithm: ConvAlgorithm,
) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if let Some(y) = flex::conv3x3(&x, weight, bias, algorithm) {
        return y;
    }
    #[cfg(not(feature = "flex"))]
    let _ = algorithm;
    burn_conv3x3(x, weight, bias)
}

/// burn's 3×3, stride-1, padding-1 convolution.
pub(crate) fn burn_conv3x3(
    x: Tensor<4>,
    weight: &Tensor<4>,
    bias: Option<&Tensor<1>>,
) -> Tensor<4> {
    conv2d(
        x,
        weight.clone(),
        bias.cloned(),
        ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
    )
}

/// Unmasked multi-head attention from a fused `qkv` projection, softmax scale `head_dim^-0.5`
/// (PyTorch's SDPA): per-head products reading q, k and v where they lie in the `qkv` rows with
/// a vectorised softmax, for f32 burn-flex tensors without autodiff; burn's `attention` over
/// the split heads otherwise.
///
/// `heads` must divide the width (burn's reshapes panic otherwise).
///
/// # Shapes
/// - qkv: `[batch, tokens, 3 · heads · head_dim]`, rows laid out `(q, k, v) × heads × head_dim`
/// - output: `[batch, tokens, heads · head_dim]`
pub fn attention_qkv(qkv: Tensor<3>, heads: usize) -> Tensor<3> {
    #[cfg(feature = "flex")]
    if let Some(out) = flex::attention_qkv(&qkv, heads) {
        return out;
    }
    let [batch, tokens, three_width] = qkv.dims();
    let width = three_width / 3;
    let head_dim = width / heads;
    // [B, N, 3W] -> [B, N, 3, H, Dh] -> [3, B, H, N, Dh]: the fused rows are (q,k,v)×H×Dh.
    let qkv = qkv
        .reshape([batch, tokens, 3, heads, head_dim])
        .permute([2, 0, 3, 1, 4]);
    let split = |i: usize| {
        qkv.clone()
            .narrow(0, i, 1)
            .reshape([batch, heads, tokens, head_dim])
    };
    let (q, k, v) = (split(0), split(1), split(2));
    // Default options: no mask, scale = head_dim^-0.5 (as PyTorch SDPA).
    let out = attention(q, k, v, None, None, AttentionModuleOptions::default());
    // [B, H, N, Dh] -> [B, N, H·Dh]
    out.swap_dims(1, 2).reshape([batch, tokens, width])
}

/// One query per head attending over a KV cache (GQA when `kv_heads` divides `heads`), the
/// output in `q`'s dtype.
///
/// With f32 queries on burn-flex without autodiff and keys and values in the same f32, f16 or
/// bf16 dtype, viewed with their last two dims contiguous (a cache buffer sliced to its filled
/// length), one task per (batch row, kv head) reads the cache where it lies. Otherwise burn's
/// ops run in the cache's dtype (the query cast to it), with the softmax in f32.
///
/// # Shapes
/// - q: `[batch, heads, 1, head_dim]`; k, v: `[batch, kv_heads, len, head_dim]`
/// - mask: `[batch, heads, 1, len]`, `true` = not attended
/// - output: `[batch, heads, 1, head_dim]`
pub fn cached_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if let Some(out) = flex::cached_attention(&q, &k, &v, mask.as_ref()) {
        return out;
    }
    let dtype = q.dtype();
    single_query_attention(q.cast(k.dtype()), k, v, mask).cast(dtype)
}

/// Attention of one new query per row over the whole cache, as two batched products.
///
/// The cached keys and values are views into buffers preallocated to the cache capacity, so
/// they are not contiguous; a fused attention kernel may copy them whole at every step (burn-flex
/// does, at a large share of a decode step: docs/perf-notes.md §5), while a matrix product takes
/// the strided views as they are. Query heads sharing a key/value head (GQA) are stacked as extra
/// query rows. The softmax runs in f32, like the reference's eager attention.
///
/// # Shapes
/// - q: `[B, H, 1, head_dim]`; k, v: `[B, H_kv, S, head_dim]`; mask: `[B, H, 1, S]`
/// - output: `[B, H, 1, head_dim]`
fn single_query_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
) -> Tensor<4> {
    let [b, h, t, d] = q.dims();
    let [_, h_kv, s, _] = k.dims();
    let rows = h / h_kv * t;
    let dtype = q.dtype();
    let scores = q
        .reshape([b, h_kv, rows, d])
        .matmul(k.swap_dims(2, 3))
        .mul_scalar((d as f64).powf(-0.5));
    let scores = match mask {
        Some(mask) => scores.mask_fill(mask.reshape([b, h_kv, rows, s]), f32::NEG_INFINITY),
        None => scores,
    };
    let probs = if dtype == DType::F32 {
        softmax(scores, 3)
    } else {
        softmax(scores.cast(DType::F32), 3).cast(dtype)
    };
    probs.matmul(v).reshape([b, h, t, d])
}

/// burn's `Linear` forward, `x · W + bias`: for f32 burn-flex tensors without autodiff, the
/// output's columns in one band per thread, each starting from the bias (the weight may be any
/// strided view); burn's `linear` otherwise. Made for many rows (SigLIP's 576): for a few,
/// [`few_rows_matmul`] reads the weight faster.
///
/// # Shapes
/// - x: `[..., d_in]`; weight: `[d_in, d_out]`; bias: `[d_out]`
/// - output: `[..., d_out]`
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: &Tensor<2>,
    bias: Option<&Tensor<1>>,
) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(y) = flex::linear(&x, weight, bias) {
        return y;
    }
    burn::tensor::module::linear(x, weight.clone(), bias.cloned())
}

/// `x · Wᵀ` (`OutIn`) or `x · W` (`InOut`) for a few rows of `x`, bound by reading the weight;
/// the output has `x`'s dtype.
///
/// For 1 to [`MAX_ROWS`] rows on burn-flex without autodiff, `x` in f32, f16 or bf16 and a
/// contiguous weight in f32, f16 or bf16 (f32 activations over half-precision weights is the
/// half-precision decode): each weight row is read once, by all threads, with AVX2/FMA where
/// the CPU has them, accumulated in f32. Otherwise burn's products: `OutIn` over a few rows cuts
/// the weight into blocks of output rows spread over rayon's threads, so each block is read once
/// for all rows, and a weight in another dtype than `x` is not copied (the few rows are cast to
/// the weight's dtype instead, and the result back).
///
/// # Shapes
/// - x: `[rows, d_in]`; weight: `[d_out, d_in]` (`OutIn`) or `[d_in, d_out]` (`InOut`)
/// - output: `[rows, d_out]`
pub fn few_rows_matmul(x: Tensor<2>, weight: &Tensor<2>, layout: WeightLayout) -> Tensor<2> {
    #[cfg(feature = "flex")]
    if let Some(y) = flex::few_rows_matmul(&x, weight, layout) {
        return y;
    }
    let rows = x.dims()[0];
    match layout {
        WeightLayout::OutIn => matmul_t(x, weight.clone(), rows),
        WeightLayout::InOut if weight.dtype() == x.dtype() => x.matmul(weight.clone()),
        WeightLayout::InOut => {
            let dtype = x.dtype();
            x.cast(weight.dtype()).matmul(weight.clone()).cast(dtype)
        }
    }
}

/// `x · Wᵀ` by burn's ops for `rows` rows of `x`, in `x`'s dtype: a weight in another dtype is
/// cast for many rows, while a few rows are cast to the weight's dtype (the weight is not
/// copied) and the result back.
pub(crate) fn matmul_t(x: Tensor<2>, weight: Tensor<2>, rows: usize) -> Tensor<2> {
    let dtype = x.dtype();
    if weight.dtype() != dtype && rows > MAX_ROWS {
        x.matmul(weight.cast(dtype).transpose())
    } else if weight.dtype() != dtype {
        let xw = x.cast(weight.dtype());
        product_t(xw, weight, rows).cast(dtype)
    } else {
        product_t(x, weight, rows)
    }
}

/// `x · Wᵀ`: [`few_rows_matmul_t`] for a few rows, one matrix product otherwise.
fn product_t(x: Tensor<2>, weight: Tensor<2>, rows: usize) -> Tensor<2> {
    if (1..=MAX_ROWS).contains(&rows) {
        few_rows_matmul_t(x, weight, BLOCK_BYTES)
    } else {
        x.matmul(weight.transpose())
    }
}

/// Bytes of weight per block in [`few_rows_matmul_t`]: large enough that the per-product
/// overhead is small, small enough that a block stays in cache (L2/L3) while every input row
/// passes over it and that the blocks balance over the threads (measured: docs/perf-notes.md §6).
const BLOCK_BYTES: usize = 4 * 1024 * 1024;

/// `x · Wᵀ` by burn's ops for a few rows of `x` over an `[out, in]` weight, bound by reading the
/// weight.
///
/// The weight's output rows are cut into blocks of about `block_bytes`; the blocks are spread
/// over rayon's threads, and within a block each input row is a matrix-vector product over
/// contiguous weight rows (the form that streams at memory speed, docs/perf-notes.md §2). A
/// block is read from memory once: the second and later rows find it in cache. The block
/// results are concatenated.
///
/// # Shapes
/// - x: `[rows, in]`; weight: `[out, in]`
/// - output: `[rows, out]`
pub fn few_rows_matmul_t(x: Tensor<2>, weight: Tensor<2>, block_bytes: usize) -> Tensor<2> {
    let [rows, d_input] = x.dims();
    let [d_output, _] = weight.dims();
    if rows == 0 || d_output == 0 || d_input == 0 {
        return x.matmul(weight.transpose());
    }
    let row_bytes = d_input * weight.dtype().size();
    let block = (block_bytes / row_bytes).clamp(1, d_output);
    let inputs: Vec<Tensor<2>> = (0..rows)
        .map(|r| x.clone().slice([r..r + 1, 0..d_input]))
        .collect();
    let starts: Vec<usize> = (0..d_output).step_by(block).collect();
    let parts: Vec<Tensor<2>> = starts
        .par_iter()
        .map(|&start| {
            let w = weight
                .clone()
                .slice([start..(start + block).min(d_output), 0..d_input])
                .transpose();
            let ys: Vec<Tensor<2>> = inputs
                .iter()
                .map(|xr| xr.clone().matmul(w.clone()))
                .collect();
            if ys.len() == 1 {
                ys.into_iter().next().unwrap()
            } else {
                Tensor::cat(ys, 0)
            }
        })
        .collect();
    Tensor::cat(parts, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData};

    /// burn's path (what runs where the kernel declines): f32 queries cast to the cache's
    /// half-precision dtype, softmax in f32; against the same maths all in f32 over the rounded
    /// cache, GQA (4 query heads over 2 kv heads) and a mask included.
    #[test]
    fn single_query_attention_over_a_half_precision_cache() {
        let device = Device::flex();
        let (b, h, h_kv, s, d) = (2, 4, 2, 9, 8);
        let q = Tensor::<4>::random([b, h, 1, d], Distribution::Default, &device);
        let k = Tensor::<4>::random([b, h_kv, s, d], Distribution::Default, &device);
        let v = Tensor::<4>::random([b, h_kv, s, d], Distribution::Default, &device);
        let hidden: Vec<bool> = (0..b * h * s).map(|i| i % 4 == 1).collect();
        let mask = Tensor::<4, Bool>::from_data(
            burn::tensor::TensorData::new(hidden, [b, h, 1, s]),
            &device,
        );
        for dtype in [DType::F16, DType::BF16] {
            let (kh, vh) = (k.clone().cast(dtype), v.clone().cast(dtype));
            let got = single_query_attention(
                q.clone().cast(dtype),
                kh.clone(),
                vh.clone(),
                Some(mask.clone()),
            )
            .cast(DType::F32);
            let want = single_query_attention(
                q.clone().cast(dtype).cast(DType::F32),
                kh.cast(DType::F32),
                vh.cast(DType::F32),
                Some(mask.clone()),
            );
            let err = (got - want).abs().max().into_scalar::<f32>();
            let tol = if dtype == DType::F16 { 2e-3 } else { 2e-2 };
            assert!(err < tol, "{dtype:?}: {err}");
        }
    }

    #[test]
    fn blocked_few_rows_product_matches_one_product() {
        let device = Device::flex();
        let w: Vec<f32> = (0..15).map(|i| (i as f32 * 0.37).sin()).collect();
        let weight = Tensor::<2>::from_data(TensorData::new(w, [5, 3]), &device);
        for rows in [1usize, 3] {
            let x: Vec<f32> = (0..rows * 3).map(|i| i as f32 - 1.5).collect();
            let x = Tensor::<2>::from_data(TensorData::new(x, [rows, 3]), &device);
            let expected: Vec<f32> = x
                .clone()
                .matmul(weight.clone().transpose())
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            // Blocks of two weight rows (2 × 3 f32): three blocks, the last one short.
            let got: Vec<f32> = few_rows_matmul_t(x, weight.clone(), 24)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            assert_eq!(got, expected);
        }
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.cast(DType::F32).into_data().try_to_vec().unwrap()
    }

    fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
        Tensor::random(shape, Distribution::Normal(0.0, 2.0), device)
    }

    fn assert_close(got: Vec<f32>, want: Vec<f32>, tol: f32) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{g} vs {w}");
        }
    }

    /// Under autodiff every op runs burn's ops; the results match the kernels' (on plain flex
    /// tensors where the `flex` feature is on) and gradients flow.
    #[test]
    fn ops_fall_back_to_burns_ops_under_autodiff() {
        let plain = Device::flex();
        let ad = plain.clone().autodiff();
        let on = |t: &Tensor<4>| Tensor::<4>::from_data(t.clone().into_data(), &ad).require_grad();
        let x = random([2, 4, 3, 6], &plain);
        let (cos, sin) = (random([2, 1, 3, 6], &plain), random([2, 1, 3, 6], &plain));
        let xa = on(&x);
        let (cos_a, sin_a) = (on(&cos), on(&sin));
        let got = rope(xa.clone(), &cos_a, &sin_a);
        // The kernel does burn's arithmetic operation for operation.
        assert_eq!(values(got.clone()), values(rope(x.clone(), &cos, &sin)));
        let grads = got.sum().backward();
        assert!(xa.grad(&grads).is_some());

        let weight = random([6], &plain);
        let wa = Tensor::<1>::from_data(weight.clone().into_data(), &ad);
        assert_close(
            values(rms_norm(xa.clone(), &wa, 1e-6)),
            values(rms_norm(x.clone(), &weight, 1e-6)),
            1e-5,
        );

        let (gamma, beta) = (random([4], &plain), random([4], &plain));
        let (ga, ba) = (
            Tensor::<1>::from_data(gamma.clone().into_data(), &ad),
            Tensor::<1>::from_data(beta.clone().into_data(), &ad),
        );
        for then_silu in [false, true] {
            assert_close(
                values(group_norm(
                    xa.clone(),
                    Some(&ga),
                    Some(&ba),
                    2,
                    1e-6,
                    then_silu,
                )),
                values(group_norm(
                    x.clone(),
                    Some(&gamma),
                    Some(&beta),
                    2,
                    1e-6,
                    then_silu,
                )),
                1e-4,
            );
        }

        let filter = random([5, 4, 3, 3], &plain);
        let bias = random([5], &plain);
        let fa = on(&filter);
        let bias_a = Tensor::<1>::from_data(bias.clone().into_data(), &ad);
        assert_close(
            values(conv3x3(xa.clone(), &fa, Some(&bias_a))),
            values(conv3x3(x.clone(), &filter, Some(&bias))),
            1e-4,
        );

        let qkv = random([2, 5, 3 * 2 * 4], &plain);
        let qkv_a = Tensor::<3>::from_data(qkv.clone().into_data(), &ad);
        assert_close(
            values(attention_qkv(qkv_a, 2)),
            values(attention_qkv(qkv, 2)),
            1e-5,
        );

        let q = random([2, 4, 1, 6], &plain);
        let mask = Tensor::<4, Bool>::from_data(
            TensorData::new((0..2 * 4 * 3).map(|i| i % 5 == 2).collect(), [2, 4, 1, 3]),
            &plain,
        );
        let mask_a = Tensor::<4, Bool>::from_data(mask.clone().into_data(), &ad);
        let (k, v) = (random([2, 2, 3, 6], &plain), random([2, 2, 3, 6], &plain));
        assert_close(
            values(cached_attention(on(&q), on(&k), on(&v), Some(mask_a))),
            values(cached_attention(q, k, v, Some(mask))),
            1e-5,
        );
    }

    #[test]
    fn few_rows_matmul_falls_back_for_many_rows_and_autodiff() {
        let device = Device::flex();
        let w = random([7, 5], &device);
        for layout in [WeightLayout::OutIn, WeightLayout::InOut] {
            let w = match layout {
                WeightLayout::OutIn => w.clone(),
                WeightLayout::InOut => {
                    Tensor::from_data(w.clone().transpose().into_data(), &device)
                }
            };
            for rows in [3, MAX_ROWS + 1] {
                let x = random([rows, 5], &device);
                let want = match layout {
                    WeightLayout::OutIn => values(x.clone().matmul(w.clone().transpose())),
                    WeightLayout::InOut => values(x.clone().matmul(w.clone())),
                };
                assert_close(
                    values(few_rows_matmul(x.clone(), &w, layout)),
                    want.clone(),
                    1e-5,
                );
                let ad = device.clone().autodiff();
                let xa = Tensor::<2>::from_data(x.into_data(), &ad);
                let wa = Tensor::<2>::from_data(w.clone().into_data(), &ad);
                assert_close(values(few_rows_matmul(xa, &wa, layout)), want, 1e-5);
            }
        }
    }
}
