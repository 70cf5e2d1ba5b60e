use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Device, Tensor};

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
    /// A few rows (2 to 8, e.g. the two CFG rows of image generation) are multiplied one at a
    /// time: every multi-row form measured slower than reading the weight once per row.
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
        let y = if (2..=8).contains(&rows) {
            let parts = (0..rows)
                .map(|r| {
                    x.clone()
                        .slice([r..r + 1, 0..d_input])
                        .matmul(weight.clone().transpose())
                })
                .collect();
            Tensor::cat(parts, 0)
        } else {
            x.matmul(weight.transpose())
        };
        y.reshape(out_shape)
    }
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
}
