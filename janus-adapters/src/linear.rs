use burn::nn::Linear;
use burn::tensor::Tensor;
use janus_kernels::WeightLayout;

/// `linear.forward(x)` by [`janus_kernels::nn::linear`]: a few rows (a generation step's CFG
/// pair) through a product bound by reading the weight, which burn-flex reads at a fraction
/// of the memory bandwidth in this layout for one or two rows (docs/perf-notes.md §2); burn's
/// `Linear` otherwise.
///
/// # Shapes
/// - x: `[..., d_input]`
/// - output: `[..., d_output]`
pub(crate) fn forward<const D: usize>(linear: &Linear, x: Tensor<D>) -> Tensor<D> {
    let bias = linear.bias.as_ref().map(|b| b.val());
    janus_kernels::nn::linear(x, &linear.weight.val(), bias.as_ref(), WeightLayout::InOut)
}
