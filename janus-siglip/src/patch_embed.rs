//! Patchify-and-project stem of the vision tower.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Tensor};

use crate::error::{SiglipError, non_zero};

/// Configuration to create a [`PatchEmbed`] layer using the [init function](PatchEmbedConfig::init).
#[derive(Config, Debug)]
pub struct PatchEmbedConfig {
    /// Number of input image channels.
    pub in_channels: usize,
    /// Side of a square patch in pixels; also the convolution stride.
    pub patch_size: usize,
    /// Width of each output token.
    pub width: usize,
}

/// Cuts an image into non-overlapping square patches and projects each one to a token.
///
/// A `Conv2d` with kernel = stride = patch and a bias, as timm's `PatchEmbed`; the spatial grid
/// is flattened row-major, so token `i` is the patch at `(i / grid_w, i % grid_w)`.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    /// Patch projection, checkpoint key `patch_embed.proj.{weight,bias}`.
    pub proj: Conv2d,
}

impl PatchEmbedConfig {
    /// Initialize a new [`PatchEmbed`] module.
    ///
    /// # Errors
    ///
    /// [`SiglipError::Zero`] if any size is zero.
    pub fn init(&self, device: &Device) -> Result<PatchEmbed, SiglipError> {
        let in_channels = non_zero("in_channels", self.in_channels)?;
        let patch = non_zero("patch_size", self.patch_size)?;
        let width = non_zero("width", self.width)?;
        let proj = Conv2dConfig::new([in_channels, width], [patch, patch])
            .with_stride([patch, patch])
            .init(device);
        Ok(PatchEmbed { proj })
    }
}

impl PatchEmbed {
    /// Applies the forward pass on the input tensor.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, in_channels, height, width_px]`
    /// - output: `[batch, (height / patch) · (width_px / patch), width]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<3> {
        // [B, W, gh, gw] -> [B, W, gh·gw] -> [B, gh·gw, W]
        self.proj.forward(images).flatten::<3>(2, 3).swap_dims(1, 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::{Int, TensorData, Tolerance};

    #[test]
    fn output_shape() {
        let device = Device::flex();
        let layer = PatchEmbedConfig::new(3, 4, 6).init(&device).unwrap();
        let out = layer.forward(Tensor::zeros([2, 3, 8, 12], &device));
        assert_eq!(out.dims(), [2, 6, 6]);
    }

    #[test]
    fn tokens_are_row_major_patches() {
        let device = Device::flex();
        let mut layer = PatchEmbedConfig::new(1, 2, 1).init(&device).unwrap();
        // Sum-pool each 2×2 patch, plus a bias of 0.5.
        layer.proj.weight = Param::from_tensor(Tensor::ones([1, 1, 2, 2], &device));
        layer.proj.bias = Some(Param::from_tensor(Tensor::from_floats([0.5], &device)));
        let image = Tensor::<1, Int>::arange(0..16, &device)
            .float()
            .reshape([1, 1, 4, 4]);
        let out = layer.forward(image);
        // Patches (0,0), (0,1), (1,0), (1,1) of the 4×4 ramp.
        let expected = TensorData::from([[[10.5], [18.5], [42.5], [50.5]]]);
        out.into_data()
            .assert_approx_eq::<f32>(&expected, Tolerance::default());
    }

    #[test]
    fn zero_patch_is_an_error() {
        let err = PatchEmbedConfig::new(3, 0, 8)
            .init(&Device::flex())
            .unwrap_err();
        assert_eq!(err, SiglipError::Zero { name: "patch_size" });
    }
}
