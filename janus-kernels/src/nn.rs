//! Layer forwards that pick a path by shape: the thresholds measured on the model's shapes live
//! here, so the component crates call one function per layer.

use burn::tensor::{DType, Tensor, TensorData};

use crate::quant::QuantMatrix;

use crate::kernels::rows::{MAX_ROWS, WeightLayout};
use crate::ops::{ConvAlgorithm, burn_conv3x3, conv3x3_with, matmul_t};

#[cfg(feature = "flex")]
use crate::flex;

/// A linear layer's forward, `x · Wᵀ` (`OutIn`) or `x · W` (`InOut`) plus `bias`, in `x`'s
/// dtype.
///
/// Up to [`MAX_ROWS`] rows (a decode step, the two CFG rows of an image-generation step) are
/// bound by reading the weight, which burn-flex does at a fraction of the memory bandwidth:
/// they go through [`crate::few_rows_matmul`]'s kernel where it applies, with the bias added
/// after. A batch of rows over an `OutIn` weight (more than [`MAX_ROWS`], at most
/// [`crate::MAX_BATCH_ROWS`]: short prompts, 16 images' CFG rows) goes through the batch kernel,
/// which reads the weight once in its own layout instead of packing it as `gemm` does; more rows
/// over a half-precision `OutIn` weight go through `gemm` on the weight widened into reused f32
/// panels. Everything else is burn's product: for `OutIn`, one matrix product over the rows
/// flattened (a weight in another dtype cast to `x`'s; a few rows on another backend or under
/// autodiff as [`crate::few_rows_matmul`] computes them), for `InOut` burn's `linear`.
///
/// `x` may be f32 over a half-precision weight (f32 activations over a half-precision
/// checkpoint).
///
/// # Shapes
/// - x: `[..., d_in]`; weight: `[d_out, d_in]` (`OutIn`) or `[d_in, d_out]` (`InOut`);
///   bias: `[d_out]`
/// - output: `[..., d_out]`
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: &Tensor<2>,
    bias: Option<&Tensor<1>>,
    layout: WeightLayout,
) -> Tensor<D> {
    let [a, b] = weight.dims();
    let (d_in, d_out) = match layout {
        WeightLayout::OutIn => (b, a),
        WeightLayout::InOut => (a, b),
    };
    let mut dims = x.dims();
    let fits = dims.last() == Some(&d_in);
    let rows = x.shape().num_elements() / d_in.max(1);
    let few = fits && (1..=MAX_ROWS).contains(&rows);
    if let Some(last) = dims.last_mut() {
        *last = d_out;
    }
    match layout {
        WeightLayout::OutIn if fits => {
            let x = x.reshape([rows, d_in]);
            let kernel = few_rows_kernel(&x, weight, layout).or_else(|| batch_kernel(&x, weight));
            let y = match kernel {
                Some(y) => y,
                None => matmul_t(x, weight.clone(), rows),
            };
            with_bias(y, bias).reshape(dims)
        }
        // Mismatched widths: burn's product reports them.
        WeightLayout::OutIn => {
            burn::tensor::module::linear(x, weight.clone().transpose(), bias.cloned())
        }
        WeightLayout::InOut => {
            if few {
                let flat = x.clone().reshape([rows, d_in]);
                if let Some(y) = few_rows_kernel(&flat, weight, layout) {
                    return with_bias(y, bias).reshape(dims);
                }
            }
            burn::tensor::module::linear(x, weight.clone(), bias.cloned())
        }
    }
}

/// A linear layer's forward over a block-quantised weight, `x · Wᵀ`, in `x`'s dtype:
/// [`QuantMatrix::matmul_t`] on `x`'s values (the integer kernels for up to
/// [`crate::quant::MAX_QUANT_ROWS`] rows, dequantised panels and the f32 GEMM for more).
///
/// The kernels run on the host: on a CPU device that is where `x` already lies; on another
/// device the activations make a round trip through host memory. Gradients do not flow through
/// it (quantised weights are for inference).
///
/// # Shapes
/// - x: `[..., d_in]`; weight: `[d_out, d_in]`
/// - output: `[..., d_out]`
///
/// # Panics
/// When `x`'s last axis is not `d_in`, as burn's products do on mismatched widths.
pub fn quant_linear<const D: usize>(x: Tensor<D>, weight: &QuantMatrix) -> Tensor<D> {
    let (d_in, d_out) = (weight.cols(), weight.rows());
    let mut dims = x.dims();
    assert_eq!(
        dims.last(),
        Some(&d_in),
        "quant_linear: input width {:?} against a weight of {d_in} columns",
        dims.last()
    );
    let rows = x.shape().num_elements() / d_in.max(1);
    let (dtype, device) = (x.dtype(), x.device());
    let values: Vec<f32> = match x.cast(DType::F32).into_data().try_into_vec::<f32>() {
        Ok(v) => v,
        Err(e) => unreachable!("an f32 tensor's data is f32: {e:?}"),
    };
    let y = match weight.matmul_t(&values, rows) {
        Ok(y) => y,
        Err(e) => unreachable!("lengths checked above: {e}"),
    };
    if let Some(last) = dims.last_mut() {
        *last = d_out;
    }
    let y = Tensor::<D>::from_data(TensorData::new(y, dims), &device);
    if y.dtype() == dtype { y } else { y.cast(dtype) }
}

/// The few-row kernel's product, where it applies to `x`'s row count and dtypes.
fn few_rows_kernel(x: &Tensor<2>, weight: &Tensor<2>, layout: WeightLayout) -> Option<Tensor<2>> {
    #[cfg(feature = "flex")]
    if (1..=MAX_ROWS).contains(&x.dims()[0]) {
        return flex::few_rows_matmul(x, weight, layout);
    }
    let _ = (x, weight, layout);
    None
}

/// The batch kernel's or the widened panels' product over an `[out, in]` weight, where it
/// applies to `x`'s row count and dtypes.
fn batch_kernel(x: &Tensor<2>, weight: &Tensor<2>) -> Option<Tensor<2>> {
    #[cfg(feature = "flex")]
    return flex::many_rows_matmul_t(x, weight);
    #[cfg(not(feature = "flex"))]
    {
        let _ = (x, weight);
        None
    }
}

fn with_bias(y: Tensor<2>, bias: Option<&Tensor<1>>) -> Tensor<2> {
    match bias {
        Some(bias) => y + bias.clone().unsqueeze::<2>(),
        None => y,
    }
}

/// Width from which [`conv3x3`] takes the Winograd kernel. From 48×48 up it beats burn-flex's
/// convolution at the VQ decoder's shapes; a 24×24 map has too few tile rows to spread over the
/// threads, each re-reading the 16 MB of transformed filters, so small maps stay on burn-flex
/// (measurements: docs/perf-notes.md §22).
const WINOGRAD_MIN_WIDTH: usize = 32;

/// A 3×3, stride-1, zero-padding-1 convolution layer's forward: [`crate::conv3x3`]'s Winograd
/// kernel on maps at least 32 wide where it applies (f32 burn-flex tensors without autodiff),
/// burn's `conv2d` otherwise.
///
/// # Shapes
/// - x: `[batch, cin, height, width]`; weight: `[cout, cin, 3, 3]`; bias: `[cout]`
/// - output: `[batch, cout, height, width]`
pub fn conv3x3(x: Tensor<4>, weight: &Tensor<4>, bias: Option<&Tensor<1>>) -> Tensor<4> {
    match conv_algorithm(x.dims()[3]) {
        Some(algorithm) => conv3x3_with(x, weight, bias, algorithm),
        None => burn_conv3x3(x, weight, bias),
    }
}

/// The kernel's algorithm for maps `width` wide, or `None` where burn's convolution is faster.
fn conv_algorithm(width: usize) -> Option<ConvAlgorithm> {
    (width >= WINOGRAD_MIN_WIDTH).then_some(ConvAlgorithm::Winograd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::QuantKind;
    use burn::tensor::Device;

    #[test]
    fn quant_linear_keeps_leading_axes_and_the_input_dtype() {
        let device = Device::flex();
        let (n, k) = (40, 64);
        let w: Vec<f32> = crate::kernels::test_values(n * k, 3);
        let q = QuantMatrix::quantize(QuantKind::Q8_0, &w, n, k).unwrap();
        for rows in [1usize, 2, 6] {
            let x = crate::kernels::test_values(rows * k, 9 + rows as u64);
            let want = q.matmul_t(&x, rows).unwrap();
            let input = Tensor::<3>::from_data(TensorData::new(x.clone(), [1, rows, k]), &device);
            let y = quant_linear(input, &q);
            assert_eq!(y.dims(), [1, rows, n]);
            assert_eq!(y.dtype(), DType::F32);
            assert_eq!(y.into_data().try_into_vec::<f32>().unwrap(), want);

            let half =
                Tensor::<2>::from_data(TensorData::new(x, [rows, k]), &device).cast(DType::F16);
            let y = quant_linear(half, &q);
            assert_eq!(y.dtype(), DType::F16);
            assert_eq!(y.dims(), [rows, n]);
        }
    }
}
