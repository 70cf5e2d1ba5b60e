use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

/// Configuration of [`LlamaRmsNorm`].
#[derive(Config, Debug)]
pub struct LlamaRmsNormConfig {
    /// Width of the normalised dimension.
    pub d_model: usize,
    /// Added to the mean square before the square root.
    #[config(default = 1e-6)]
    pub epsilon: f64,
}

/// HF `LlamaRMSNorm`: normalise in f32, cast back to the input dtype, then scale.
///
/// burn's `RmsNorm` divides in the input dtype, which differs from the reference in bf16;
/// the parameter is also called `weight` here, matching the checkpoint.
#[derive(Module, Debug)]
pub struct LlamaRmsNorm {
    /// Per-channel scale `[d_model]`.
    pub weight: Param<Tensor<1>>,
    /// Epsilon.
    pub epsilon: f64,
}

impl LlamaRmsNormConfig {
    /// Builds the norm with a unit scale.
    pub fn init(&self, device: &Device) -> LlamaRmsNorm {
        LlamaRmsNorm {
            weight: Param::from_tensor(Tensor::ones([self.d_model], device)),
            epsilon: self.epsilon,
        }
    }
}

impl LlamaRmsNorm {
    /// # Shapes
    /// - input: `[..., d_model]`
    /// - output: same as input
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        // One pass on burn-flex in f32 inference: burn's ops are seven dispatches, which is
        // what a decode step's 2048-wide row costs.
        janus_kernels::rms_norm(x, &self.weight.val(), self.epsilon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn normalises_like_hf() {
        let device = Device::flex();
        let norm = LlamaRmsNormConfig::new(4).init(&device);
        let x = Tensor::<2>::from_data(TensorData::from([[1.0f32, 2.0, 3.0, 4.0]]), &device);
        let y: Vec<f32> = norm.forward(x).into_data().try_to_vec::<f32>().unwrap();
        let rms = ((1.0f64 + 4.0 + 9.0 + 16.0) / 4.0 + 1e-6).sqrt();
        for (i, v) in y.iter().enumerate() {
            let expected = (i as f64 + 1.0) / rms;
            assert!((*v as f64 - expected).abs() < 1e-6, "{v} vs {expected}");
        }
    }
}
