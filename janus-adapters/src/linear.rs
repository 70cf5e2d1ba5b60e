use burn::nn::Linear;
use burn::tensor::Tensor;
use janus_kernels::{MAX_ROWS, WeightLayout, few_rows_matmul};

/// `linear.forward(x)`, with a few rows (a generation step's CFG pair) through janus-kernels'
/// bandwidth-bound product when it applies: burn-flex reads an `[in, out]` weight at a fraction
/// of the memory bandwidth for one or two rows (docs/perf-notes.md §2).
///
/// # Shapes
/// - x: `[..., d_input]`
/// - output: `[..., d_output]`
pub(crate) fn forward<const D: usize>(linear: &Linear, x: Tensor<D>) -> Tensor<D> {
    let [d_input, d_output] = linear.weight.dims();
    let dims = x.dims();
    let rows = x.shape().num_elements() / d_input.max(1);
    if (1..=MAX_ROWS).contains(&rows) && dims[D - 1] == d_input {
        let flat = x.clone().reshape([rows, d_input]);
        if let Some(y) = few_rows_matmul(&flat, &linear.weight.val(), WeightLayout::InOut) {
            let y = match &linear.bias {
                Some(bias) => y + bias.val().unsqueeze::<2>(),
                None => y,
            };
            let mut out = dims;
            out[D - 1] = d_output;
            return y.reshape(out);
        }
    }
    linear.forward(x)
}
