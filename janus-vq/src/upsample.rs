//! Nearest-neighbour ×2 upsampling followed by a 3×3 conv.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};

use crate::error::VqError;
use crate::norm::{conv3x3, conv3x3_forward};

/// Configuration to create an [`Upsample`] layer using the [init function](UpsampleConfig::init).
#[derive(Config, Debug)]
pub struct UpsampleConfig {
    /// Channels of the feature map (unchanged).
    pub channels: usize,
}

/// Doubles the spatial size: every pixel is repeated into a 2×2 patch
/// (`F.interpolate(scale_factor=2, mode="nearest")`), then a 3×3 conv with padding 1.
#[derive(Module, Debug)]
pub struct Upsample {
    /// 3×3 conv applied after the nearest-neighbour upsampling.
    pub conv: Conv2d,
}

impl UpsampleConfig {
    /// Initialize a new [`Upsample`] layer.
    ///
    /// # Errors
    ///
    /// [`VqError::Zero`] if `channels` is zero.
    pub fn init(&self, device: &Device) -> Result<Upsample, VqError> {
        Ok(Upsample {
            conv: conv3x3(self.channels, self.channels, device)?,
        })
    }
}

impl Upsample {
    /// Applies the forward pass on the input tensor.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, channels, height, width]`
    /// - output: `[batch, channels, 2·height, 2·width]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv3x3_forward(&self.conv, nearest_2x(x))
    }
}

/// Nearest ×2 through burn's `interpolate` (floor mapping, PyTorch's `"nearest"`): a pure copy,
/// so exact and dtype-preserving on every backend, and bf16 needs none of the reference's round
/// trip through f32 (which is lossless anyway). On burn-flex it is faster than the broadcast
/// copy `reshape → expand → reshape`, which burn-flex makes element by element (measurements:
/// docs/perf-notes.md V6).
fn nearest_2x(x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    interpolate(
        x,
        InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([2 * h, 2 * w]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    #[test]
    fn repeats_each_pixel_into_a_2x2_patch() {
        let device = Device::flex();
        let x = Tensor::<4>::from_floats([[[[1., 2.], [3., 4.]]]], &device);
        let out = nearest_2x(x).into_data().try_to_vec::<f32>().unwrap();
        #[rustfmt::skip]
        let expected = vec![
            1., 1., 2., 2.,
            1., 1., 2., 2.,
            3., 3., 4., 4.,
            3., 3., 4., 4.,
        ];
        assert_eq!(out, expected);
    }

    /// With a centre-tap identity kernel the layer is the bare nearest upsampling.
    #[test]
    fn conv_follows_upsampling() {
        let device = Device::flex();
        let mut up = UpsampleConfig::new(1).init(&device).unwrap();
        let kernel = Tensor::<1>::from_floats([0., 0., 0., 0., 1., 0., 0., 0., 0.], &device);
        up.conv.weight = Param::from_tensor(kernel.reshape([1, 1, 3, 3]));
        up.conv.bias = Some(Param::from_tensor(Tensor::from_floats([0.5], &device)));
        let x = Tensor::<4>::from_floats([[[[1., 2.], [3., 4.]]]], &device);
        let out = up.forward(x);
        assert_eq!(out.dims(), [1, 1, 4, 4]);
        let out = out.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(&out[..4], &[1.5, 1.5, 2.5, 2.5]);
        assert_eq!(&out[12..], &[3.5, 3.5, 4.5, 4.5]);
    }
}
