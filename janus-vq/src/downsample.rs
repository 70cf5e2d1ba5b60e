//! Stride-2 downsampling conv with LlamaGen's asymmetric zero padding.

use burn::config::Config;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Tensor};

use crate::error::{VqError, non_zero};

/// Configuration to create a [`Downsample`] layer using the [init function](DownsampleConfig::init).
#[derive(Config, Debug)]
pub struct DownsampleConfig {
    /// Channels of the feature map (unchanged).
    pub channels: usize,
}

/// Halves the spatial size: zero-pad one row at the bottom and one column at the right, then a
/// 3×3 conv with stride 2 and no further padding (`F.pad(x, (0, 1, 0, 1))` in the reference).
///
/// The padding lives in the conv's `Explicit(top 0, left 0, bottom 1, right 1)` configuration,
/// so the weights load as a plain `downsample.conv`.
#[derive(Module, Debug)]
pub struct Downsample {
    /// 3×3 stride-2 conv with right/bottom padding.
    pub conv: Conv2d,
}

impl DownsampleConfig {
    /// Initialize a new [`Downsample`] layer.
    ///
    /// # Errors
    ///
    /// [`VqError::Zero`] if `channels` is zero.
    pub fn init(&self, device: &Device) -> Result<Downsample, VqError> {
        let c = non_zero("channels", self.channels)?;
        let conv = Conv2dConfig::new([c, c], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(0, 0, 1, 1))
            .init(device);
        Ok(Downsample { conv })
    }
}

impl Downsample {
    /// Applies the forward pass on the input tensor.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, channels, height, width]`, `height, width ≥ 2`
    /// - output: `[batch, channels, height / 2, width / 2]` (floor division)
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    /// All-ones 3×3 kernel on the 4×4 map 1..=16: each output is the sum of its window, and the
    /// windows only reach past the right/bottom edges (where the padding zeros are).
    #[test]
    fn pads_only_right_and_bottom() {
        let device = Device::flex();
        let mut down = DownsampleConfig::new(1).init(&device).unwrap();
        down.conv.weight = Param::from_tensor(Tensor::ones([1, 1, 3, 3], &device));
        down.conv.bias = Some(Param::from_tensor(Tensor::zeros([1], &device)));
        let x = Tensor::<1>::from_floats(
            [
                1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15., 16.,
            ],
            &device,
        )
        .reshape([1, 1, 4, 4]);
        let out = down.forward(x).into_data().try_to_vec::<f32>().unwrap();
        // [0,0]: rows 0–2 × cols 0–2; [0,1]: cols 2–3 + pad; [1,0]: rows 2–3 + pad; [1,1]: both.
        // Symmetric (top/left) padding would give 14 at [0,0].
        assert_eq!(out, vec![54.0, 45.0, 72.0, 54.0]);
    }

    #[test]
    fn halves_odd_sizes_with_floor() {
        let device = Device::flex();
        let down = DownsampleConfig::new(4).init(&device).unwrap();
        let out = down.forward(Tensor::zeros([2, 4, 5, 7], &device));
        assert_eq!(out.dims(), [2, 4, 2, 3]);
    }
}
