//! The tower's `Linear` forward, through janus-kernels.

use burn::nn::Linear;
use burn::tensor::Tensor;

/// `linear.forward(x)` by [`janus_kernels::linear`]: on burn-flex in f32 without autodiff the
/// output's columns in one band per thread, starting from the bias (docs/perf-notes.md §28);
/// burn's `Linear` otherwise (other backends, training).
///
/// # Shapes
///
/// - x: `[..., d_input]`
/// - output: `[..., d_output]`
pub(crate) fn forward<const D: usize>(linear: &Linear, x: Tensor<D>) -> Tensor<D> {
    let bias = linear.bias.as_ref().map(|b| b.val());
    janus_kernels::linear(x, &linear.weight.val(), bias.as_ref())
}
