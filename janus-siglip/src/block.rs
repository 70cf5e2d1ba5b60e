//! Pre-norm transformer block.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::{Device, Tensor};

use crate::attention::{Attention, AttentionConfig};
use crate::error::{SiglipError, non_zero};
use crate::mlp::{Mlp, MlpConfig};

/// Configuration to create a [`Block`] using the [init function](BlockConfig::init).
#[derive(Config, Debug)]
pub struct BlockConfig {
    /// Token width.
    pub width: usize,
    /// Number of attention heads; must divide `width`.
    pub heads: usize,
    /// Hidden size of the MLP.
    pub mlp_hidden: usize,
    /// LayerNorm epsilon (SigLIP uses 1e-6, not burn's 1e-5 default).
    #[config(default = 1e-6)]
    pub layer_norm_eps: f64,
}

/// `x += attn(norm1(x)); x += mlp(norm2(x))` — no LayerScale, no drop-path.
#[derive(Module, Debug)]
pub struct Block {
    /// LayerNorm before attention, checkpoint key `norm1.{weight,bias}`.
    pub norm1: LayerNorm,
    /// Self-attention, checkpoint keys `attn.qkv.*`, `attn.proj.*`.
    pub attn: Attention,
    /// LayerNorm before the MLP, checkpoint key `norm2.{weight,bias}`.
    pub norm2: LayerNorm,
    /// Feed-forward network, checkpoint keys `mlp.fc1.*`, `mlp.fc2.*`.
    pub mlp: Mlp,
}

impl BlockConfig {
    /// Initialize a new [`Block`].
    ///
    /// # Errors
    ///
    /// Any [`SiglipError`] of the attention or MLP configuration.
    pub fn init(&self, device: &Device) -> Result<Block, SiglipError> {
        let width = non_zero("width", self.width)?;
        let norm = LayerNormConfig::new(width).with_epsilon(self.layer_norm_eps);
        Ok(Block {
            norm1: norm.init(device),
            attn: AttentionConfig::new(width, self.heads).init(device)?,
            norm2: norm.init(device),
            mlp: MlpConfig::new(width, self.mlp_hidden).init(device)?,
        })
    }
}

impl Block {
    /// Applies the forward pass on the input tensor.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, tokens, width]`
    /// - output: `[batch, tokens, width]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(self.norm1.forward(x));
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn output_shape() {
        let device = Device::flex();
        let block = BlockConfig::new(8, 2, 32).init(&device).unwrap();
        let x = Tensor::random([2, 5, 8], Distribution::Default, &device);
        assert_eq!(block.forward(x).dims(), [2, 5, 8]);
    }

    /// With both residual branches' output projections zeroed, the block is the identity:
    /// checks that the branches are added to the input rather than replacing it.
    #[test]
    fn residual_paths() {
        let device = Device::flex();
        let mut block = BlockConfig::new(8, 2, 32).init(&device).unwrap();
        block.attn.proj.weight = Param::from_tensor(Tensor::zeros([8, 8], &device));
        block.attn.proj.bias = None;
        block.mlp.fc2.weight = Param::from_tensor(Tensor::zeros([32, 8], &device));
        block.mlp.fc2.bias = None;
        let x = Tensor::<3>::random([1, 3, 8], Distribution::Default, &device);
        block
            .forward(x.clone())
            .into_data()
            .assert_approx_eq::<f32>(&x.into_data(), Tolerance::default());
    }

    #[test]
    fn layer_norm_epsilon_is_siglips() {
        assert_eq!(BlockConfig::new(8, 2, 32).layer_norm_eps, 1e-6);
    }
}
