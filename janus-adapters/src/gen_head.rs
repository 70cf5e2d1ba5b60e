//! `gen_head`: image-code logits from the LLM's last hidden state.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};

use crate::error::{AdapterError, non_zero};

/// Configuration to create a [`GenHead`] using the [init function](GenHeadConfig::init).
///
/// Field names follow `gen_head_config.params`.
#[derive(Config, Debug)]
pub struct GenHeadConfig {
    /// LLM hidden size D (input).
    pub n_embed: usize,
    /// Hidden size E of the head (equal to D in every released model).
    pub image_token_embed: usize,
    /// Number of image codes K (16384, the VQ codebook size).
    pub image_token_size: usize,
}

/// The reference's `vision_head`: `vision_head(GELU(output_mlp_projector(h)))` with the exact
/// (erf) GELU; both Linears have a bias.
#[derive(Module, Debug)]
pub struct GenHead {
    /// Linear `D → E`, checkpoint key `gen_head.output_mlp_projector`.
    pub output_mlp_projector: Linear,
    /// Linear `E → K`, checkpoint key `gen_head.vision_head`.
    pub vision_head: Linear,
}

impl GenHeadConfig {
    /// Initialize a new [`GenHead`].
    ///
    /// # Errors
    ///
    /// [`AdapterError::Zero`] if a size is zero.
    pub fn init(&self, device: &Device) -> Result<GenHead, AdapterError> {
        let d = non_zero("n_embed", self.n_embed)?;
        let e = non_zero("image_token_embed", self.image_token_embed)?;
        let k = non_zero("image_token_size", self.image_token_size)?;
        Ok(GenHead {
            output_mlp_projector: LinearConfig::new(d, e).init(device),
            vision_head: LinearConfig::new(e, k).init(device),
        })
    }
}

impl GenHead {
    /// Applies the forward pass on the input tensor.
    ///
    /// # Shapes
    ///
    /// - input: `[..., n_embed]` (hidden states after the LLM's final norm)
    /// - output: `[..., image_token_size]` (unnormalised logits)
    pub fn forward<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        let hidden = gelu(crate::linear::forward(&self.output_mlp_projector, hidden));
        crate::linear::forward(&self.vision_head, hidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::{Distribution, TensorData, Tolerance};

    #[test]
    fn output_shape() {
        let device = Device::flex();
        let head = GenHeadConfig::new(16, 32, 64).init(&device).unwrap();
        let h = Tensor::<2>::random([3, 16], Distribution::Default, &device);
        assert_eq!(head.forward(h).dims(), [3, 64]);
    }

    /// h = [2] → projector (w 1, b −1) → 1 → GELU → 0.8413447 → head (w [1, −1], b [0, 1])
    /// → [0.8413447, 0.1586553].
    #[test]
    fn hand_computed() {
        let device = Device::flex();
        let mut head = GenHeadConfig::new(1, 1, 2).init(&device).unwrap();
        head.output_mlp_projector.weight =
            Param::from_tensor(Tensor::from_floats([[1.0]], &device));
        head.output_mlp_projector.bias =
            Some(Param::from_tensor(Tensor::from_floats([-1.0], &device)));
        head.vision_head.weight = Param::from_tensor(Tensor::from_floats([[1.0, -1.0]], &device));
        head.vision_head.bias = Some(Param::from_tensor(Tensor::from_floats([0.0, 1.0], &device)));
        let out = head.forward(Tensor::<2>::from_floats([[2.0]], &device));
        out.into_data().assert_approx_eq::<f32>(
            &TensorData::from([[0.841_344_7, 0.158_655_3]]),
            Tolerance::absolute(1e-6),
        );
    }

    #[test]
    fn zero_size_is_an_error() {
        assert_eq!(
            GenHeadConfig::new(16, 16, 0)
                .init(&Device::flex())
                .unwrap_err(),
            AdapterError::Zero {
                name: "image_token_size"
            }
        );
    }
}
