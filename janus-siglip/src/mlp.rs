//! Two-layer feed-forward network of a transformer block.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::error::{SiglipError, non_zero};
use crate::linear;

/// Configuration to create an [`Mlp`] layer using the [init function](MlpConfig::init).
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Token width (input and output size).
    pub width: usize,
    /// Hidden size, `int(width · mlp_ratio)`.
    pub hidden: usize,
}

/// `fc2(GELU(fc1(x)))` with the exact (erf) GELU that SigLIP's `nn.GELU` computes.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Expansion Linear `width → hidden`, checkpoint key `mlp.fc1`.
    pub fc1: Linear,
    /// Contraction Linear `hidden → width`, checkpoint key `mlp.fc2`.
    pub fc2: Linear,
}

impl MlpConfig {
    /// Initialize a new [`Mlp`] module.
    ///
    /// # Errors
    ///
    /// [`SiglipError::Zero`] if a size is zero.
    pub fn init(&self, device: &Device) -> Result<Mlp, SiglipError> {
        let width = non_zero("width", self.width)?;
        let hidden = non_zero("hidden", self.hidden)?;
        Ok(Mlp {
            fc1: LinearConfig::new(width, hidden).init(device),
            fc2: LinearConfig::new(hidden, width).init(device),
        })
    }
}

impl Mlp {
    /// Applies the forward pass on the input tensor.
    ///
    /// # Shapes
    ///
    /// - input: `[..., width]`
    /// - output: `[..., width]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let h = janus_kernels::gelu(linear::forward(&self.fc1, x));
        linear::forward(&self.fc2, h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::{TensorData, Tolerance};

    #[test]
    fn output_shape() {
        let device = Device::flex();
        let mlp = MlpConfig::new(4, 16).init(&device).unwrap();
        assert_eq!(
            mlp.forward(Tensor::<3>::zeros([2, 3, 4], &device)).dims(),
            [2, 3, 4]
        );
    }

    /// Identity-like weights expose the activation: erf-GELU(1) = 0.841345, while the tanh
    /// approximation gives 0.841192 — the tolerance separates them.
    #[test]
    fn uses_exact_erf_gelu() {
        let device = Device::flex();
        let mut mlp = MlpConfig::new(1, 1).init(&device).unwrap();
        mlp.fc1.weight = Param::from_tensor(Tensor::from_floats([[1.0]], &device));
        mlp.fc1.bias = Some(Param::from_tensor(Tensor::from_floats([0.0], &device)));
        mlp.fc2.weight = Param::from_tensor(Tensor::from_floats([[2.0]], &device));
        mlp.fc2.bias = Some(Param::from_tensor(Tensor::from_floats([1.0], &device)));
        let out = mlp.forward(Tensor::<2>::from_floats([[1.0], [-1.0]], &device));
        // 2·gelu(1) + 1, 2·gelu(-1) + 1 with gelu(±1) = ±1 · Φ(±1).
        let expected = TensorData::from([[2.0 * 0.841_344_7 + 1.0], [2.0 * -0.158_655_3 + 1.0]]);
        out.into_data()
            .assert_approx_eq::<f32>(&expected, Tolerance::absolute(1e-5));
    }
}
