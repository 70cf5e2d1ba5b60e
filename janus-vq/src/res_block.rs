//! Pre-activation residual block (`ResnetBlock` in LlamaGen).

use burn::config::Config;
use burn::module::Module;
use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

use crate::error::VqError;
use crate::norm::{conv1x1, conv3x3, conv3x3_forward, group_norm, norm_swish};

/// Configuration to create a [`ResBlock`] using the [init function](ResBlockConfig::init).
#[derive(Config, Debug)]
pub struct ResBlockConfig {
    /// Channels of the input feature map.
    pub in_channels: usize,
    /// Channels of the output feature map; a 1×1 `nin_shortcut` is added when they differ.
    pub out_channels: usize,
    /// GroupNorm groups.
    #[config(default = 32)]
    pub norm_groups: usize,
    /// GroupNorm epsilon.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
}

/// `shortcut(x) + conv2(swish(norm2(conv1(swish(norm1(x))))))`.
///
/// Dropout is 0 in every released VQ-16, so it is left out.
#[derive(Module, Debug)]
pub struct ResBlock {
    /// GroupNorm over the input channels.
    pub norm1: GroupNorm,
    /// 3×3 conv `in → out`.
    pub conv1: Conv2d,
    /// GroupNorm over the output channels.
    pub norm2: GroupNorm,
    /// 3×3 conv `out → out`.
    pub conv2: Conv2d,
    /// 1×1 conv `in → out`, present only when the channel count changes.
    pub nin_shortcut: Option<Conv2d>,
}

impl ResBlockConfig {
    /// Initialize a new [`ResBlock`].
    ///
    /// # Errors
    ///
    /// [`VqError`] if a channel count is zero or not divisible by `norm_groups`.
    pub fn init(&self, device: &Device) -> Result<ResBlock, VqError> {
        let (cin, cout) = (self.in_channels, self.out_channels);
        Ok(ResBlock {
            norm1: group_norm(cin, self.norm_groups, self.norm_eps, device)?,
            conv1: conv3x3(cin, cout, device)?,
            norm2: group_norm(cout, self.norm_groups, self.norm_eps, device)?,
            conv2: conv3x3(cout, cout, device)?,
            nin_shortcut: if cin == cout {
                None
            } else {
                Some(conv1x1(cin, cout, device)?)
            },
        })
    }
}

impl ResBlock {
    /// Applies the forward pass on the input tensor.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, in_channels, height, width]`
    /// - output: `[batch, out_channels, height, width]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = conv3x3_forward(&self.conv1, norm_swish(&self.norm1, x.clone()));
        let h = conv3x3_forward(&self.conv2, norm_swish(&self.norm2, h));
        let shortcut = match &self.nin_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        shortcut + h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_spatial_size_and_changes_channels() {
        let device = Device::flex();
        let block = ResBlockConfig::new(32, 64).init(&device).unwrap();
        assert!(block.nin_shortcut.is_some());
        let out = block.forward(Tensor::zeros([2, 32, 5, 3], &device));
        assert_eq!(out.dims(), [2, 64, 5, 3]);
    }

    #[test]
    fn identity_shortcut_when_channels_match() {
        let device = Device::flex();
        let block = ResBlockConfig::new(32, 32).init(&device).unwrap();
        assert!(block.nin_shortcut.is_none());
    }

    #[test]
    fn rejects_channels_not_divisible_by_groups() {
        let device = Device::flex();
        let err = ResBlockConfig::new(32, 48).init(&device).unwrap_err();
        assert_eq!(
            err,
            VqError::ChannelsNotDivisibleByGroups {
                channels: 48,
                groups: 32
            }
        );
    }
}
