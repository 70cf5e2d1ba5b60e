use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};
use rayon::prelude::*;

/// Configuration of [`LlamaLinear`].
#[derive(Config, Debug)]
pub struct LlamaLinearConfig {
    /// Input width.
    pub d_input: usize,
    /// Output width.
    pub d_output: usize,
}

/// A bias-free linear layer that keeps the checkpoint's `[out, in]` weight layout.
///
/// burn's `Linear` stores `[in, out]`; on the CPU backend a one-row product then streams the
/// weight at about half the memory bandwidth, while `x · Wᵀ` over an `[out, in]` weight reads
/// contiguous rows and gets close to it (docs/perf-notes.md). Decoding is bound by exactly that
/// product, so the LLaMA layers keep PyTorch's layout — which also loads without a transpose.
#[derive(Module, Debug)]
pub struct LlamaLinear {
    /// `[d_output, d_input]`, as in the checkpoint.
    pub weight: Param<Tensor<2>>,
}

impl LlamaLinearConfig {
    /// Builds the layer with burn's default linear initialisation.
    pub fn init(&self, device: &Device) -> LlamaLinear {
        let init = Initializer::KaimingUniform {
            gain: 1.0 / 3f64.sqrt(),
            fan_out_only: false,
        };
        LlamaLinear {
            weight: init.init_with(
                [self.d_output, self.d_input],
                Some(self.d_input),
                Some(self.d_output),
                device,
            ),
        }
    }
}

impl LlamaLinear {
    /// Output width (`d_output`), read without initialising the weight.
    pub fn d_output(&self) -> usize {
        self.weight.lazy_shape()[0]
    }

    /// Input width (`d_input`), read without initialising the weight.
    pub fn d_input(&self) -> usize {
        self.weight.lazy_shape()[1]
    }

    /// `x · Wᵀ`.
    ///
    /// Up to [`FEW_ROWS`] rows (a decode step, the two CFG rows of image generation) go through
    /// [`few_rows_matmul_t`]; more rows (prefill) are one matrix product.
    ///
    /// # Shapes
    /// - x: `[..., d_input]`
    /// - output: `[..., d_output]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let weight = self.weight.val();
        let [d_output, d_input] = weight.dims();
        let mut out_shape = x.dims();
        out_shape[D - 1] = d_output;
        let rows = x.shape().num_elements() / d_input;
        let x = x.reshape([rows, d_input]);
        let y = if (1..=FEW_ROWS).contains(&rows) {
            few_rows_matmul_t(x, weight, BLOCK_BYTES)
        } else {
            x.matmul(weight.transpose())
        };
        y.reshape(out_shape)
    }
}

/// Row counts handled by [`few_rows_matmul_t`].
pub const FEW_ROWS: usize = 8;

/// Bytes of weight per block in [`few_rows_matmul_t`]: large enough that the per-product
/// overhead is small, small enough that a block stays in cache (L2/L3) while every input row
/// passes over it and that the blocks balance over the threads (measured: docs/perf-notes.md §6).
pub const BLOCK_BYTES: usize = 4 * 1024 * 1024;

/// `x · Wᵀ` for a few rows of `x` over an `[out, in]` weight, bound by reading the weight.
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
    use burn::tensor::TensorData;

    #[test]
    fn computes_x_times_w_transposed_for_any_row_count() {
        let device = Device::flex();
        let layer = LlamaLinear {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::from([[1.0f32, 2.0, 3.0], [0.0, -1.0, 0.5]]),
                &device,
            )),
        };
        for rows in [1usize, 2, 5, 9] {
            let x: Vec<f32> = (0..rows * 3).map(|i| i as f32).collect();
            let input = Tensor::<3>::from_data(TensorData::new(x.clone(), [1, rows, 3]), &device);
            let y: Vec<f32> = layer.forward(input).into_data().try_to_vec().unwrap();
            for r in 0..rows {
                let v = &x[r * 3..r * 3 + 3];
                assert_eq!(y[r * 2], v[0] + 2.0 * v[1] + 3.0 * v[2]);
                assert_eq!(y[r * 2 + 1], -v[1] + 0.5 * v[2]);
            }
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
}
