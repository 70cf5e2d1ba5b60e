//! Image → latent encoder (LlamaGen `Encoder`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

use crate::attn_block::{AttnBlock, AttnBlockConfig};
use crate::downsample::{Downsample, DownsampleConfig};
use crate::error::{VqError, non_zero};
use crate::mid_block::{MidBlock, MidBlockConfig};
use crate::norm::{conv3x3, conv3x3_forward, group_norm, norm_swish};
use crate::res_block::{ResBlock, ResBlockConfig};

/// Configuration to create an [`EncoderBlock`] using the [init function](EncoderBlockConfig::init).
#[derive(Config, Debug)]
pub struct EncoderBlockConfig {
    /// Channels entering the level.
    pub in_channels: usize,
    /// Channels of the level (`ch · ch_mult[level]`).
    pub out_channels: usize,
    /// Residual blocks in the level.
    pub num_res_blocks: usize,
    /// Add an [`AttnBlock`] after every residual block (LlamaGen: the deepest level only).
    pub attn: bool,
    /// End with a [`Downsample`] (LlamaGen: every level but the deepest).
    pub downsample: bool,
    /// GroupNorm groups.
    #[config(default = 32)]
    pub norm_groups: usize,
    /// GroupNorm epsilon.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
}

/// One resolution level of the encoder (`encoder.conv_blocks.{level}`).
#[derive(Module, Debug)]
pub struct EncoderBlock {
    /// Residual blocks; the first maps `in_channels → out_channels`.
    pub res: Vec<ResBlock>,
    /// Attention after each residual block, or empty.
    pub attn: Vec<AttnBlock>,
    /// Stride-2 downsampling at the end of the level, if any.
    pub downsample: Option<Downsample>,
}

impl EncoderBlockConfig {
    /// Initialize a new [`EncoderBlock`].
    ///
    /// # Errors
    ///
    /// [`VqError`] if a channel count is zero or not divisible by `norm_groups`.
    pub fn init(&self, device: &Device) -> Result<EncoderBlock, VqError> {
        let (groups, eps) = (self.norm_groups, self.norm_eps);
        let mut res = Vec::with_capacity(self.num_res_blocks);
        let mut attn = Vec::new();
        let mut block_in = self.in_channels;
        for _ in 0..self.num_res_blocks {
            res.push(
                ResBlockConfig::new(block_in, self.out_channels)
                    .with_norm_groups(groups)
                    .with_norm_eps(eps)
                    .init(device)?,
            );
            block_in = self.out_channels;
            if self.attn {
                attn.push(
                    AttnBlockConfig::new(block_in)
                        .with_norm_groups(groups)
                        .with_norm_eps(eps)
                        .init(device)?,
                );
            }
        }
        let downsample = if self.downsample {
            Some(DownsampleConfig::new(block_in).init(device)?)
        } else {
            None
        };
        Ok(EncoderBlock {
            res,
            attn,
            downsample,
        })
    }
}

impl EncoderBlock {
    /// Applies the forward pass on the input tensor.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, in_channels, height, width]`
    /// - output: `[batch, out_channels, height', width']`, halved (floor) when downsampling
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = x;
        for (i, res) in self.res.iter().enumerate() {
            h = res.forward(h);
            if let Some(attn) = self.attn.get(i) {
                h = attn.forward(h);
            }
        }
        match &self.downsample {
            Some(down) => down.forward(h),
            None => h,
        }
    }
}

/// Configuration to create an [`Encoder`] using the [init function](EncoderConfig::init).
#[derive(Config, Debug)]
pub struct EncoderConfig {
    /// Image channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Base channel count.
    pub ch: usize,
    /// Channel multiplier of each resolution level, shallowest first.
    pub ch_mult: Vec<usize>,
    /// Residual blocks per level.
    pub num_res_blocks: usize,
    /// Channels of the latent.
    pub z_channels: usize,
    /// GroupNorm groups.
    #[config(default = 32)]
    pub norm_groups: usize,
    /// GroupNorm epsilon.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
}

/// `conv_in` → levels (`conv_blocks`) → `mid` → `norm_out` → swish → `conv_out`.
///
/// Level `l` has `num_res_blocks` residual blocks going to `ch · ch_mult[l]` channels, an
/// attention block after each of them at the deepest level, and a downsample after every level
/// except the deepest, so the latent is `2^(len(ch_mult) − 1)` times smaller than the image.
#[derive(Module, Debug)]
pub struct Encoder {
    /// 3×3 conv `in_channels → ch`.
    pub conv_in: Conv2d,
    /// Resolution levels, shallowest first.
    pub conv_blocks: Vec<EncoderBlock>,
    /// Bottleneck at the deepest width.
    pub mid: MidBlock,
    /// Final GroupNorm.
    pub norm_out: GroupNorm,
    /// 3×3 conv to `z_channels`.
    pub conv_out: Conv2d,
}

impl EncoderConfig {
    /// Initialize a new [`Encoder`].
    ///
    /// # Errors
    ///
    /// [`VqError`] if a size is zero, `ch_mult` is empty, or a level's width is not divisible by
    /// `norm_groups`.
    pub fn init(&self, device: &Device) -> Result<Encoder, VqError> {
        let (groups, eps) = (self.norm_groups, self.norm_eps);
        let ch = non_zero("ch", self.ch)?;
        non_zero("ch_mult", self.ch_mult.len())?;
        non_zero("num_res_blocks", self.num_res_blocks)?;
        let levels = self.ch_mult.len();

        let conv_in = conv3x3(self.in_channels, ch, device)?;
        let mut conv_blocks = Vec::with_capacity(levels);
        let mut block_in = ch;
        for (level, &mult) in self.ch_mult.iter().enumerate() {
            let block_out = ch * non_zero("ch_mult", mult)?;
            let deepest = level == levels - 1;
            conv_blocks.push(
                EncoderBlockConfig::new(
                    block_in,
                    block_out,
                    self.num_res_blocks,
                    deepest,
                    !deepest,
                )
                .with_norm_groups(groups)
                .with_norm_eps(eps)
                .init(device)?,
            );
            block_in = block_out;
        }
        Ok(Encoder {
            conv_in,
            conv_blocks,
            mid: MidBlockConfig::new(block_in)
                .with_norm_groups(groups)
                .with_norm_eps(eps)
                .init(device)?,
            norm_out: group_norm(block_in, groups, eps, device)?,
            conv_out: conv3x3(block_in, self.z_channels, device)?,
        })
    }
}

impl Encoder {
    /// Applies the forward pass on the input tensor.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, in_channels, height, width]`
    /// - output: `[batch, z_channels, height / f, width / f]` with `f = 2^(levels − 1)`
    pub fn forward(&self, image: Tensor<4>) -> Tensor<4> {
        let mut h = conv3x3_forward(&self.conv_in, image);
        for block in &self.conv_blocks {
            h = block.forward(h);
        }
        let h = self.mid.forward(h);
        conv3x3_forward(&self.conv_out, norm_swish(&self.norm_out, h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_follows_llamagen() {
        let device = Device::flex();
        let encoder = EncoderConfig::new(32, vec![1, 2, 2], 2, 32)
            .init(&device)
            .unwrap();
        assert_eq!(encoder.conv_blocks.len(), 3);
        for (level, block) in encoder.conv_blocks.iter().enumerate() {
            assert_eq!(block.res.len(), 2);
            assert_eq!(block.attn.len(), if level == 2 { 2 } else { 0 });
            assert_eq!(block.downsample.is_some(), level != 2);
        }
        // Only the first block of a level whose width changes needs a shortcut conv.
        assert!(encoder.conv_blocks[0].res[0].nin_shortcut.is_none());
        assert!(encoder.conv_blocks[1].res[0].nin_shortcut.is_some());
        assert!(encoder.conv_blocks[1].res[1].nin_shortcut.is_none());
        assert!(encoder.conv_blocks[2].res[0].nin_shortcut.is_none());

        let out = encoder.forward(Tensor::zeros([1, 3, 16, 16], &device));
        assert_eq!(out.dims(), [1, 32, 4, 4]);
    }
}
