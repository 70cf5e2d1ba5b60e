//! The tower's `Linear` forward, through janus-kernels where it applies.

use burn::nn::Linear;
use burn::tensor::Tensor;

/// `linear.forward(x)`: on burn-flex in f32 without autodiff, janus-kernels' product with the
/// output's columns in one band per thread, starting from the bias (docs/perf-notes.md §28);
/// burn's `Linear` otherwise (other backends, training).
///
/// # Shapes
///
/// - x: `[..., d_input]`
/// - output: `[..., d_output]`
pub(crate) fn forward<const D: usize>(linear: &Linear, x: Tensor<D>) -> Tensor<D> {
    let bias = linear.bias.as_ref().map(|b| b.val());
    match janus_kernels::linear(&x, &linear.weight.val(), bias.as_ref()) {
        Some(y) => y,
        None => linear.forward(x),
    }
}
