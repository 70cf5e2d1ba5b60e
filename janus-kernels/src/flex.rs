//! Adapters between burn-flex tensors and the slice kernels.
//!
//! Each takes the flex primitive out of a `Tensor` (no autodiff, a dtype the kernel reads),
//! views its buffer where it lies or copies it once into the layout the kernel wants, and wraps
//! the kernel's output in a new tensor. When any of that does not apply the answer is `None`
//! (or `Err` with the input handed back untouched), and the op in `ops` runs burn's instead.

use crate::kernels;
use crate::kernels::batch::{BatchWeight, MAX_BATCH_ROWS};
use crate::kernels::cached::CacheView;
use crate::kernels::rows::{MAX_ROWS, WeightLayout, Weights, matmul_rows, widened};
use crate::kernels::sgemm::{PANEL_VALUES, widened_product};
use crate::ops::ConvAlgorithm;
use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::{Bool, DType, Tensor, TensorData, bf16, f16};
use burn_dispatch::{BackendTensor, DispatchAutodiffContext, DispatchTensor, DispatchTensorKind};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use std::borrow::Cow;
use std::ops::Range;

/// Whether the storage can be viewed as elements of `align` bytes (`as_slice` would panic
/// on a misaligned buffer).
fn aligned(t: &FlexTensor, align: usize) -> bool {
    t.bytes().as_ptr().align_offset(align) == 0
}

/// The flex primitive of an f32 tensor without autodiff, or the tensor back untouched.
#[allow(clippy::result_large_err)]
fn take_f32<const D: usize>(x: Tensor<D>) -> Result<FlexTensor, Tensor<D>> {
    if x.dtype() != DType::F32 {
        return Err(x);
    }
    match x.into_dispatch() {
        DispatchTensor {
            kind: DispatchTensorKind::Flex(BackendTensor::Float(t)),
            autodiff: DispatchAutodiffContext::Disabled,
        } => Ok(t),
        other => Err(Tensor::from_dispatch(other)),
    }
}

/// `t` as a uniquely owned, contiguous, aligned f32 buffer starting at offset 0 (copied
/// only when it is not one already).
fn owned(t: FlexTensor) -> Result<FlexTensor, FlexTensor> {
    let n = t.layout().num_elements();
    let whole = t.is_contiguous()
        && t.layout().start_offset() == 0
        && t.bytes().len() == n * 4
        && aligned(&t, 4);
    if whole && t.is_unique() {
        return Ok(t);
    }
    let shape = t.layout().shape().clone();
    let values = match t.as_slice::<f32>() {
        Some(s) if aligned(&t, 4) => Some(s.to_vec()),
        _ => t.to_contiguous().into_data().try_to_vec::<f32>().ok(),
    };
    match values {
        Some(v) => Ok(FlexTensor::from_data(TensorData::new(v, shape))),
        None => Err(t),
    }
}

/// `f` on `x`'s f32 values in place; `Err(x)` untouched where `x` is not an f32 flex tensor
/// without autodiff.
#[allow(clippy::result_large_err)]
pub(crate) fn map_in_place<const D: usize>(
    x: Tensor<D>,
    f: impl FnOnce(&mut [f32]),
) -> Result<Tensor<D>, Tensor<D>> {
    try_in_place(x, |values| {
        f(values);
        true
    })
}

/// Runs `kernel` on `x`'s f32 values in place (`x` copied first only when it does not own
/// a contiguous buffer). `Ok` when it returned `true`; `Err` with the values untouched when
/// `x` is not an f32 flex tensor without autodiff or the kernel declined (returned `false`,
/// which the kernels do before writing), so the caller's ops run instead.
#[allow(clippy::result_large_err)]
fn try_in_place<const D: usize>(
    x: Tensor<D>,
    kernel: impl FnOnce(&mut [f32]) -> bool,
) -> Result<Tensor<D>, Tensor<D>> {
    let mut t = owned(take_f32(x)?).map_err(Tensor::from_primitive::<Flex>)?;
    // `owned` returns a uniquely held buffer; should it not be, the caller's op runs instead.
    let done = t.try_storage_mut::<f32>().is_some_and(kernel);
    let t = Tensor::from_primitive::<Flex>(t);
    if done { Ok(t) } else { Err(t) }
}

/// A contiguous f32, f16 or bf16 tensor as the kernels' weight view.
fn weights_of(t: &FlexTensor) -> Option<Weights<'_>> {
    if !aligned(t, t.dtype().size()) {
        return None;
    }
    match t.dtype() {
        DType::F32 => t.as_slice().map(Weights::F32),
        DType::F16 => t.as_slice().map(Weights::F16),
        DType::BF16 => t.as_slice().map(Weights::BF16),
        _ => None,
    }
}

fn values_f32(t: &Tensor<1>) -> Option<Vec<f32>> {
    t.clone()
        .cast(DType::F32)
        .into_data()
        .try_to_vec::<f32>()
        .ok()
}

/// [`crate::group_norm`]'s kernel on f32 values; `Err(x)` untouched where it does not apply.
#[allow(clippy::result_large_err)]
pub(crate) fn group_norm(
    x: Tensor<4>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    groups: usize,
    eps: f64,
    then_silu: bool,
) -> Result<Tensor<4>, Tensor<4>> {
    let [batch, channels, height, width] = x.dims();
    let (Some(g), Some(b)) = (values_f32(gamma), values_f32(beta)) else {
        return Err(x);
    };
    let fits = groups > 0
        && channels.is_multiple_of(groups)
        && g.len() == channels
        && b.len() == channels
        && height * width > 0;
    if !fits {
        return Err(x);
    }
    let spatial = height * width;
    try_in_place(x, |values| {
        crate::kernels::act::group_norm(
            values, batch, channels, spatial, groups, &g, &b, eps as f32, then_silu,
        )
    })
}

/// [`crate::rms_norm`]'s kernel; `Err(x)` untouched where it does not apply.
#[allow(clippy::result_large_err)]
pub(crate) fn rms_norm<const D: usize>(
    x: Tensor<D>,
    weight: &Tensor<1>,
    eps: f64,
) -> Result<Tensor<D>, Tensor<D>> {
    let [d] = weight.dims();
    if weight.device().is_autodiff() || x.dims()[D - 1] != d {
        return Err(x);
    }
    let Ok(wt) = weight.clone().try_into_primitive::<Flex>() else {
        return Err(x);
    };
    let Some(weights) = weights_of(&wt).filter(|w| w.len() == d) else {
        return Err(x);
    };
    try_in_place(x, |values| {
        crate::kernels::llama::rms_norm(values, weights, eps as f32)
    })
}

/// [`crate::rope`]'s kernel; `Err(x)` untouched where it does not apply.
#[allow(clippy::result_large_err)]
pub(crate) fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Result<Tensor<4>, Tensor<4>> {
    let [b, h, t, d] = x.dims();
    if cos.dims() != [b, 1, t, d] || sin.dims() != [b, 1, t, d] {
        return Err(x);
    }
    let (Some(ct), Some(st)) = (readable(cos), readable(sin)) else {
        return Err(x);
    };
    let (Some(c), Some(s)) = (ct.as_slice::<f32>(), st.as_slice::<f32>()) else {
        return Err(x);
    };
    try_in_place(x, |values| {
        crate::kernels::llama::rope(values, (b, h, t, d), c, s)
    })
}

/// `f` applied to an optional operand (a bias): `Some(None)` when there is none, `None` when
/// there is one and `f` declines it.
fn optional<A, B>(a: Option<A>, f: impl FnOnce(A) -> Option<B>) -> Option<Option<B>> {
    a.map_or(Some(None), |a| f(a).map(Some))
}

/// A read-only contiguous f32 view of `t` (copied only when it is not one).
fn readable<const D: usize>(t: &Tensor<D>) -> Option<FlexTensor> {
    let t = take_f32(t.clone()).ok()?;
    if t.is_contiguous() && aligned(&t, 4) {
        Some(t)
    } else {
        owned(t).ok()
    }
}

/// [`crate::conv3x3`]'s kernels, by `algorithm`; `None` where they do not apply.
pub(crate) fn conv3x3(
    x: &Tensor<4>,
    weight: &Tensor<4>,
    bias: Option<&Tensor<1>>,
    algorithm: ConvAlgorithm,
) -> Option<Tensor<4>> {
    let [batch, cin, h, w] = x.dims();
    let [cout, wc, kh, kw] = weight.dims();
    if wc != cin || kh != 3 || kw != 3 {
        return None;
    }
    let (xt, wt) = (readable(x)?, readable(weight)?);
    let bt = optional(bias, readable)?;
    let bias = optional(bt.as_ref(), FlexTensor::as_slice::<f32>)?;
    let conv = match algorithm {
        ConvAlgorithm::Direct => crate::kernels::conv::conv3x3,
        ConvAlgorithm::Winograd => crate::kernels::conv::conv3x3_winograd,
    };
    let y = conv(
        xt.as_slice::<f32>()?,
        batch,
        cin,
        h,
        w,
        wt.as_slice::<f32>()?,
        bias,
        cout,
    )?;
    let data = TensorData::new(y, [batch, cout, h, w]);
    Some(Tensor::from_primitive::<Flex>(FlexTensor::from_data(data)))
}

/// [`crate::linear`]'s kernel; `None` where it does not apply.
pub(crate) fn linear<const D: usize>(
    x: &Tensor<D>,
    weight: &Tensor<2>,
    bias: Option<&Tensor<1>>,
) -> Option<Tensor<D>> {
    if D == 0 {
        return None;
    }
    let dims = x.dims();
    let d_in = dims[D - 1];
    let [w_in, d_out] = weight.dims();
    if w_in != d_in || weight.dtype() != DType::F32 || weight.device().is_autodiff() {
        return None;
    }
    let wt = weight.clone().try_into_primitive::<Flex>().ok()?;
    let strides = wt.layout().strides();
    let (row_stride, col_stride) = (
        usize::try_from(strides[0]).ok()?,
        usize::try_from(strides[1]).ok()?,
    );
    if !aligned(&wt, 4) {
        return None;
    }
    let view = crate::kernels::linear::WeightView {
        values: wt.storage::<f32>(),
        offset: wt.layout().start_offset(),
        row_stride,
        col_stride,
    };
    let xt = readable(x)?;
    let bt = optional(bias, readable)?;
    let b = optional(bt.as_ref(), FlexTensor::as_slice::<f32>)?;
    let rows = dims[..D - 1].iter().product();
    let y = crate::kernels::linear::linear(xt.as_slice::<f32>()?, rows, d_in, view, b, d_out)?;
    let mut out_dims = dims;
    out_dims[D - 1] = d_out;
    let data = TensorData::new(y, out_dims);
    Some(Tensor::from_primitive::<Flex>(FlexTensor::from_data(data)))
}

/// [`crate::attention_qkv`]'s kernel; `None` where it does not apply.
pub(crate) fn attention_qkv(qkv: &Tensor<3>, heads: usize) -> Option<Tensor<3>> {
    let [batch, tokens, three_width] = qkv.dims();
    if heads == 0 || !three_width.is_multiple_of(3 * heads) {
        return None;
    }
    let head_dim = three_width / 3 / heads;
    let t = readable(qkv)?;
    let out = crate::kernels::attention::attention_qkv(
        t.as_slice::<f32>()?,
        batch,
        tokens,
        heads,
        head_dim,
    )?;
    let data = TensorData::new(out, [batch, tokens, heads * head_dim]);
    Some(Tensor::from_primitive::<Flex>(FlexTensor::from_data(data)))
}

/// A cache view's buffer and placement, when its last two dims are contiguous rows.
fn cache_view(t: &FlexTensor, [batch, heads, _, dim]: [usize; 4]) -> Option<CacheView<'_>> {
    let strides = t.layout().strides();
    let (sb, sh) = (
        usize::try_from(strides[0]).ok(),
        usize::try_from(strides[1]).ok(),
    );
    let rows_contiguous = strides[3] == 1 && strides[2] == dim as isize;
    if !rows_contiguous || !aligned(t, t.dtype().size()) {
        return None;
    }
    let data = match t.dtype() {
        DType::F32 => Weights::F32(t.storage::<f32>()),
        DType::F16 => Weights::F16(t.storage::<f16>()),
        DType::BF16 => Weights::BF16(t.storage::<bf16>()),
        _ => return None,
    };
    // Single batch rows or heads may carry any stride; the kernel checks every head's end.
    let pick = |n: usize, s: Option<usize>| if n == 1 { Some(0) } else { s };
    Some(CacheView {
        data,
        offset: t.layout().start_offset(),
        batch_stride: pick(batch, sb)?,
        head_stride: pick(heads, sh)?,
    })
}

/// [`crate::cached_attention`]'s kernel (f32 output); `None` where it does not apply.
pub(crate) fn cached_attention(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    mask: Option<&Tensor<4, Bool>>,
) -> Option<Tensor<4>> {
    let [batch, heads, one, dim] = q.dims();
    let kv_dims = k.dims();
    let [kb, kv_heads, len, kd] = kv_dims;
    if one != 1 || kb != batch || kd != dim || v.dims() != kv_dims || k.dtype() != v.dtype() {
        return None;
    }
    if k.device().is_autodiff() {
        return None;
    }
    let qt = readable(q)?;
    let kt = k.clone().try_into_primitive::<Flex>().ok()?;
    let vt = v.clone().try_into_primitive::<Flex>().ok()?;
    let masked = match mask {
        Some(m) if m.dims() == [batch, heads, 1, len] => {
            Some(m.clone().into_data().try_to_vec::<bool>().ok()?)
        }
        Some(_) => return None,
        None => None,
    };
    let out = crate::kernels::cached::cached_attention(
        qt.as_slice::<f32>()?,
        batch,
        heads,
        dim,
        cache_view(&kt, kv_dims)?,
        cache_view(&vt, kv_dims)?,
        kv_heads,
        len,
        masked.as_deref(),
    )?;
    let data = TensorData::new(out, [batch, heads, 1, dim]);
    Some(Tensor::from_primitive::<Flex>(FlexTensor::from_data(data)))
}

/// [`crate::few_rows_matmul`]'s kernel; `None` where it does not apply (1 to [`MAX_ROWS`]
/// rows, f32, f16 or bf16 input and contiguous weight, no autodiff).
pub(crate) fn few_rows_matmul(
    x: &Tensor<2>,
    weight: &Tensor<2>,
    layout: WeightLayout,
) -> Option<Tensor<2>> {
    let [rows, d_in] = x.dims();
    let [a, b] = weight.dims();
    let d_out = match layout {
        WeightLayout::OutIn if b == d_in => a,
        WeightLayout::InOut if a == d_in => b,
        _ => return None,
    };
    let (dtype, w_dtype) = (x.dtype(), weight.dtype());
    let handled = matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
        && matches!(w_dtype, DType::F32 | DType::F16 | DType::BF16);
    if rows == 0 || rows > MAX_ROWS || !handled {
        return None;
    }
    if x.device().is_autodiff() {
        return None;
    }
    let w = weight.clone().try_into_primitive::<Flex>().ok()?;
    let xt = x.clone().try_into_primitive::<Flex>().ok()?.to_contiguous();
    if !aligned(&xt, dtype.size()) {
        return None;
    }
    let weights = weights_of(&w)?;
    // A few rows of half-precision input: widened once, a negligible copy.
    let x32 = rows_f32(&xt, dtype)?;
    let y = matmul_rows(&x32, rows, weights, layout, d_in, d_out)?;
    Some(rows_tensor(y, dtype, [rows, d_out]))
}

/// [`crate::nn::linear`]'s product for more than [`MAX_ROWS`] rows over an `[out, in]` weight;
/// `None` where it does not apply (f32, f16 or bf16 input and contiguous weight, no autodiff).
///
/// Up to [`MAX_BATCH_ROWS`] rows on a CPU with AVX2 + FMA: the batch kernel, reading an f32
/// weight in place and widening a half-precision one a tile group at a time. More rows over a
/// half-precision weight: the weight widened into reused f32 panels, each one parallel `gemm`
/// call (burn's product would cast the whole weight to a fresh f32 tensor every call). More rows
/// over an f32 weight: `None`, burn's product is that same `gemm` call.
pub(crate) fn many_rows_matmul_t(x: &Tensor<2>, weight: &Tensor<2>) -> Option<Tensor<2>> {
    let [rows, d_in] = x.dims();
    let [d_out, w_in] = weight.dims();
    let (dtype, w_dtype) = (x.dtype(), weight.dtype());
    let handled = matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
        && matches!(w_dtype, DType::F32 | DType::F16 | DType::BF16);
    let batch = rows <= MAX_BATCH_ROWS && kernels::batch::Tiles::detect().is_some();
    if w_in != d_in || rows <= MAX_ROWS || !handled || (!batch && w_dtype == DType::F32) {
        return None;
    }
    if x.device().is_autodiff() {
        return None;
    }
    let w = weight.clone().try_into_primitive::<Flex>().ok()?;
    let xt = x.clone().try_into_primitive::<Flex>().ok()?.to_contiguous();
    if !aligned(&xt, dtype.size()) {
        return None;
    }
    let x32 = rows_f32(&xt, dtype)?;
    let weights = weights_of(&w)?;
    let y = if batch {
        let widen = |r: Range<usize>, out: &mut [f32]| {
            widen_rows(&weights, d_in, r, out);
            true
        };
        let weight = match weights {
            Weights::F32(v) => BatchWeight::F32(v),
            _ => BatchWeight::Widen(&widen),
        };
        kernels::batch::batch_matmul_t(&x32, rows, d_in, &weight, d_out)?
    } else {
        let widen = |r: Range<usize>, out: &mut [f32]| {
            let per_task = (r.len().div_ceil(64) * d_in).max(d_in);
            out.par_chunks_mut(per_task).enumerate().for_each(|(t, o)| {
                let start = r.start + t * per_task / d_in;
                widen_rows(&weights, d_in, start..start + o.len() / d_in, o);
            });
            Ok::<(), ()>(())
        };
        widened_product(&x32, rows, d_in, d_out, PANEL_VALUES / d_in, widen).ok()?
    };
    Some(rows_tensor(y, dtype, [rows, d_out]))
}

/// The values of a contiguous f32, f16 or bf16 input as f32 (borrowed when already f32).
fn rows_f32(xt: &FlexTensor, dtype: DType) -> Option<Cow<'_, [f32]>> {
    Some(match dtype {
        DType::F32 => Cow::Borrowed(xt.as_slice()?),
        DType::F16 => Cow::Owned(widened::<f16>(xt.as_slice()?)),
        _ => Cow::Owned(widened::<bf16>(xt.as_slice()?)),
    })
}

/// An f32 product's output as a tensor in the input's `dtype` (f32, f16 or bf16).
fn rows_tensor(y: Vec<f32>, dtype: DType, shape: [usize; 2]) -> Tensor<2> {
    let data = match dtype {
        DType::F32 => TensorData::new(y, shape),
        DType::F16 => TensorData::new(narrowed::<f16>(&y), shape),
        _ => TensorData::new(narrowed::<bf16>(&y), shape),
    };
    Tensor::from_primitive::<Flex>(FlexTensor::from_data(data))
}

/// Rows `rows` of an `[n, k]` weight as f32, into `out` (`rows.len() · k` values).
fn widen_rows(weights: &Weights<'_>, k: usize, rows: Range<usize>, out: &mut [f32]) {
    let range = rows.start * k..rows.end * k;
    match weights {
        Weights::F32(v) => out.copy_from_slice(&v[range]),
        Weights::F16(v) => v[range].convert_to_f32_slice(out),
        Weights::BF16(v) => v[range].convert_to_f32_slice(out),
    }
}

/// f32 values rounded to f16 or bf16.
fn narrowed<H: Copy + Default>(y: &[f32]) -> Vec<H>
where
    [H]: HalfFloatSliceExt,
{
    let mut out = vec![H::default(); y.len()];
    out.convert_from_f32_slice(y);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn close(a: &Tensor<2>, b: &Tensor<2>, tol: f32) {
        let a: Vec<f32> = a.clone().cast(DType::F32).into_data().try_to_vec().unwrap();
        let b: Vec<f32> = b.clone().cast(DType::F32).into_data().try_to_vec().unwrap();
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    #[test]
    fn matches_burns_product_for_both_layouts_and_dtypes() {
        let device = Device::flex();
        let w = Tensor::<2>::random([96, 40], burn::tensor::Distribution::Default, &device);
        for dtype in [DType::F32, DType::F16] {
            let w = w.clone().cast(dtype);
            for rows in [1usize, 2, 5, 8] {
                let x =
                    Tensor::<2>::random([rows, 40], burn::tensor::Distribution::Default, &device)
                        .cast(dtype);
                let y = few_rows_matmul(&x, &w, WeightLayout::OutIn).expect("applies");
                assert_eq!(y.dtype(), dtype);
                // Reference in f32 from the same (rounded) inputs: burn's f16 product
                // accumulates in f16, the kernel in f32.
                let (x32, w32) = (x.clone().cast(DType::F32), w.clone().cast(DType::F32));
                close(&y, &x32.clone().matmul(w32.clone().transpose()), 1e-3);
                let wt = w.clone().transpose();
                // A transposed view is not contiguous: refused, burn's product is used.
                assert!(few_rows_matmul(&x, &wt, WeightLayout::InOut).is_none());
                let wio = Tensor::<2>::from_data(wt.clone().into_data(), &device).cast(dtype);
                let y = few_rows_matmul(&x, &wio, WeightLayout::InOut).expect("applies");
                close(&y, &x32.matmul(w32.transpose()), 1e-3);
            }
        }
    }

    /// More than the few rows: the batch kernel up to 128 rows over a contiguous `[out, in]`
    /// weight in any float dtype, widened panels and `gemm` beyond over a half-precision weight,
    /// both accumulating in f32; burn's product (`None`) for the few-row counts, an f32 weight
    /// beyond 128 rows and views.
    #[test]
    fn many_rows_match_burns_product_in_f32() {
        let device = Device::flex();
        let w = Tensor::<2>::random([75, 48], burn::tensor::Distribution::Default, &device);
        let batch = kernels::batch::Tiles::detect().is_some();
        for w_dtype in [DType::F32, DType::F16, DType::BF16] {
            let w = w.clone().cast(w_dtype);
            for rows in [MAX_ROWS + 1, 33, MAX_BATCH_ROWS, MAX_BATCH_ROWS + 1, 300] {
                let x =
                    Tensor::<2>::random([rows, 48], burn::tensor::Distribution::Default, &device);
                let want = x.clone().matmul(w.clone().cast(DType::F32).transpose());
                let applies = w_dtype != DType::F32 || (batch && rows <= MAX_BATCH_ROWS);
                match many_rows_matmul_t(&x, &w) {
                    Some(y) => close(&y, &want, 1e-5),
                    None => assert!(!applies, "{rows} rows over {w_dtype:?}"),
                }
                let x16 = x.clone().cast(DType::F16);
                if let Some(y) = many_rows_matmul_t(&x16, &w) {
                    assert_eq!(y.dtype(), DType::F16);
                    let want = x16
                        .cast(DType::F32)
                        .matmul(w.clone().cast(DType::F32).transpose());
                    close(&y, &want, 1e-3);
                }
            }
            let x =
                Tensor::<2>::random([MAX_ROWS, 48], burn::tensor::Distribution::Default, &device);
            assert!(many_rows_matmul_t(&x, &w).is_none(), "few rows");
            let x = Tensor::<2>::random([9, 75], burn::tensor::Distribution::Default, &device);
            assert!(
                many_rows_matmul_t(&x, &w.clone().transpose()).is_none(),
                "a view"
            );
        }
    }

    #[test]
    fn mixed_dtypes_compute_in_f32_and_return_the_input_dtype() {
        let device = Device::flex();
        let w = Tensor::<2>::random([70, 33], burn::tensor::Distribution::Default, &device);
        let pairs = [
            (DType::F32, DType::F16),
            (DType::F16, DType::F32),
            (DType::F32, DType::BF16),
            (DType::BF16, DType::BF16),
            (DType::BF16, DType::F32),
        ];
        for (x_dtype, w_dtype) in pairs {
            let w = w.clone().cast(w_dtype);
            let x = Tensor::<2>::random([3, 33], burn::tensor::Distribution::Default, &device)
                .cast(x_dtype);
            let y = few_rows_matmul(&x, &w, WeightLayout::OutIn).expect("applies");
            assert_eq!(y.dtype(), x_dtype);
            let want = x
                .cast(DType::F32)
                .matmul(w.cast(DType::F32).transpose())
                .cast(x_dtype);
            // f32 accumulation on both sides; only the output's rounding can differ (one
            // unit in the last place: 2⁻¹¹ for f16, 2⁻⁸ for bf16).
            let tol = match x_dtype {
                DType::F32 => 1e-6,
                DType::F16 => 1e-3,
                _ => 8e-3,
            };
            close(&y, &want, tol);
        }
    }

    fn random<const D: usize>(shape: [usize; D]) -> Tensor<D> {
        Tensor::random(
            shape,
            burn::tensor::Distribution::Normal(0.0, 2.0),
            &Device::flex(),
        )
    }

    #[test]
    fn activations_match_burn_and_leave_shared_inputs_alone() {
        use burn::tensor::activation;
        let x = random([3, 7, 33]);
        let kept: Vec<f32> = x.clone().into_data().try_to_vec().unwrap();
        // Shared (x is still held), then a transposed view: both must be copied, not mutated.
        close(
            &crate::gelu(x.clone()).reshape([21, 33]),
            &activation::gelu(x.clone()).reshape([21, 33]),
            1e-6,
        );
        close(
            &crate::silu(x.clone().swap_dims(1, 2)).reshape([99, 7]),
            &activation::silu(x.clone().swap_dims(1, 2)).reshape([99, 7]),
            1e-6,
        );
        let now: Vec<f32> = x.clone().into_data().try_to_vec().unwrap();
        assert_eq!(now, kept);
        // Other dtypes and autodiff take burn's ops.
        let h = x.clone().cast(DType::F16);
        assert_eq!(crate::gelu(h).dtype(), DType::F16);
        let ad = Tensor::<3>::from_data(x.clone().into_data(), &Device::flex().autodiff())
            .require_grad();
        let y = crate::silu(ad.clone());
        let grads = y.sum().backward();
        assert!(ad.grad(&grads).is_some());
    }

    #[test]
    fn group_norm_matches_burns_module() {
        use burn::nn::GroupNormConfig;
        let device = Device::flex();
        let mut norm = GroupNormConfig::new(4, 8).with_epsilon(1e-6).init(&device);
        norm.gamma = norm.gamma.map(|g| g.map(|_| random([8]) + 1.0));
        norm.beta = norm.beta.map(|b| b.map(|_| random([8])));
        let x = random([2, 8, 5, 3]) + 3.0;
        let (gamma, beta) = (
            norm.gamma.as_ref().unwrap().val(),
            norm.beta.as_ref().unwrap().val(),
        );
        for then_silu in [false, true] {
            let y = group_norm(x.clone(), &gamma, &beta, 4, 1e-6, then_silu).expect("applies");
            let mut want = norm.forward(x.clone());
            if then_silu {
                want = burn::tensor::activation::silu(want);
            }
            close(&y.reshape([16, 15]), &want.reshape([16, 15]), 1e-5);
        }
        // Groups that do not divide the channels: the tensor comes back untouched.
        let back = group_norm(x.clone(), &gamma, &beta, 3, 1e-6, true);
        assert!(back.is_err_and(|t| t.dims() == [2, 8, 5, 3]));
    }

    #[test]
    fn conv3x3_matches_burns_convolution() {
        use burn::tensor::module::conv2d;
        use burn::tensor::ops::ConvOptions;
        // A VQ-like width (several Winograd tiles per row) and an odd one (a half tile).
        for (cin, h, w, cout) in [(8, 6, 40, 5), (3, 7, 9, 4)] {
            let x = random([2, cin, h, w]);
            let weight = random([cout, cin, 3, 3]);
            let bias = random([cout]);
            let want = conv2d(
                x.clone(),
                weight.clone(),
                Some(bias.clone()),
                ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
            );
            for algorithm in [ConvAlgorithm::Direct, ConvAlgorithm::Winograd] {
                let got = conv3x3(&x, &weight, Some(&bias), algorithm).expect("applies");
                let rows = 2 * cout * h;
                // f32 sums of 9·cin products, in other orders than burn's.
                close(
                    &got.reshape([rows, w]),
                    &want.clone().reshape([rows, w]),
                    1e-4,
                );
            }
        }
        // Not a 3×3 filter: declined.
        let x = random([1, 2, 5, 5]);
        assert!(conv3x3(&x, &random([1, 2, 1, 1]), None, ConvAlgorithm::Winograd).is_none());
    }

    #[test]
    fn attention_matches_burns_attention() {
        use burn::tensor::module::attention;
        use burn::tensor::ops::AttentionModuleOptions;
        let (b, n, h, d) = (2, 11, 3, 4);
        let qkv = random([b, n, 3 * h * d]);
        let got = attention_qkv(&qkv, h).expect("applies");
        let parts = qkv
            .clone()
            .reshape([b, n, 3, h, d])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| parts.clone().narrow(0, i, 1).reshape([b, h, n, d]);
        let want = attention(
            part(0),
            part(1),
            part(2),
            None,
            None,
            AttentionModuleOptions::default(),
        )
        .swap_dims(1, 2)
        .reshape([b * n, h * d]);
        close(&got.reshape([b * n, h * d]), &want, 1e-5);
        assert!(attention_qkv(&qkv, 5).is_none());
    }

    #[test]
    fn linear_matches_burns_module_and_reads_weight_views() {
        use burn::nn::LinearConfig;
        let device = Device::flex();
        let layer = LinearConfig::new(40, 70).init(&device);
        let x = random([2, 9, 40]);
        let (w, b) = (layer.weight.val(), layer.bias.as_ref().map(|b| b.val()));
        let expected = layer.forward(x.clone()).reshape([18, 70]);
        let got = linear(&x, &w, b.as_ref()).unwrap();
        close(&got.reshape([18, 70]), &expected, 1e-5);
        // A transposed view of a `[d_out, d_in]` weight, read where it lies; no bias.
        let w_out_in = random([70, 40]);
        let got = linear(&x, &w_out_in.clone().transpose(), None).unwrap();
        let expected = x
            .clone()
            .matmul(w_out_in.transpose().unsqueeze())
            .reshape([18, 70]);
        close(&got.reshape([18, 70]), &expected, 1e-5);
        // Mismatched widths and autodiff tensors are left to burn.
        assert!(linear(&random([3, 41]), &w, None).is_none());
        let ad = device.autodiff();
        let xa = Tensor::<2>::ones([3, 40], &ad);
        let wa = Tensor::<2>::ones([40, 70], &ad);
        assert!(linear(&xa, &wa, None).is_none());
    }

    #[test]
    fn declines_what_it_does_not_handle() {
        let device = Device::flex();
        let w = Tensor::<2>::ones([6, 4], &device);
        let nine = Tensor::<2>::ones([9, 4], &device);
        assert!(few_rows_matmul(&nine, &w, WeightLayout::OutIn).is_none());
        let wrong = Tensor::<2>::ones([1, 5], &device);
        assert!(few_rows_matmul(&wrong, &w, WeightLayout::OutIn).is_none());
        let int = Tensor::<2, burn::tensor::Int>::ones([1, 4], &device).float();
        assert!(few_rows_matmul(&int.cast(DType::F64), &w, WeightLayout::OutIn).is_none());
        let ad = device.autodiff();
        let xa = Tensor::<2>::ones([1, 4], &ad);
        let wa = Tensor::<2>::ones([6, 4], &ad);
        assert!(few_rows_matmul(&xa, &wa, WeightLayout::OutIn).is_none());
    }
}
