//! Latent → image decoder (LlamaGen `Decoder`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::{Device, Tensor};

use crate::attn_block::{AttnBlock, AttnBlockConfig};
use crate::error::{VqError, non_zero};
use crate::mid_block::{MidBlock, MidBlockConfig};
use crate::norm::{conv3x3, conv3x3_forward, group_norm, norm_swish};
use crate::res_block::{ResBlock, ResBlockConfig};
use crate::upsample::{Upsample, UpsampleConfig};

/// Configuration to create a [`DecoderBlock`] using the [init function](DecoderBlockConfig::init).
#[derive(Config, Debug)]
pub struct DecoderBlockConfig {
    /// Channels entering the block.
    pub in_channels: usize,
    /// Channels of the block (`ch · ch_mult[level]`).
    pub out_channels: usize,
    /// Residual blocks in the block (LlamaGen: `num_res_blocks + 1`).
    pub num_res_blocks: usize,
    /// Add an [`AttnBlock`] after every residual block (LlamaGen: block 0, the deepest level).
    pub attn: bool,
    /// End with an [`Upsample`] (LlamaGen: every block but the last).
    pub upsample: bool,
    /// GroupNorm groups.
    #[config(default = 32)]
    pub norm_groups: usize,
    /// GroupNorm epsilon.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
}

/// One resolution level of the decoder (`decoder.conv_blocks.{block}`, deepest first).
#[derive(Module, Debug)]
pub struct DecoderBlock {
    /// Residual blocks; the first maps `in_channels → out_channels`.
    pub res: Vec<ResBlock>,
    /// Attention after each residual block, or empty.
    pub attn: Vec<AttnBlock>,
    /// Nearest ×2 upsampling at the end of the block, if any.
    pub upsample: Option<Upsample>,
}

impl DecoderBlockConfig {
    /// Initialize a new [`DecoderBlock`].
    ///
    /// # Errors
    ///
    /// [`VqError`] if a channel count is zero or not divisible by `norm_groups`.
    pub fn init(&self, device: &Device) -> Result<DecoderBlock, VqError> {
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
        let upsample = if self.upsample {
            Some(UpsampleConfig::new(block_in).init(device)?)
        } else {
            None
        };
        Ok(DecoderBlock {
            res,
            attn,
            upsample,
        })
    }
}

impl DecoderBlock {
    /// Applies the forward pass on the input tensor.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, in_channels, height, width]`
    /// - output: `[batch, out_channels, height', width']`, doubled when upsampling
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = x;
        for (i, res) in self.res.iter().enumerate() {
            h = res.forward(h);
            if let Some(attn) = self.attn.get(i) {
                h = attn.forward(h);
            }
        }
        match &self.upsample {
            Some(up) => up.forward(h),
            None => h,
        }
    }
}

/// Configuration to create a [`Decoder`] using the [init function](DecoderConfig::init).
#[derive(Config, Debug)]
pub struct DecoderConfig {
    /// Channels of the latent (after `post_quant_conv`).
    pub z_channels: usize,
    /// Base channel count.
    pub ch: usize,
    /// Channel multiplier of each resolution level, shallowest first (as in the encoder).
    pub ch_mult: Vec<usize>,
    /// Residual blocks per encoder level; decoder blocks have one more.
    pub num_res_blocks: usize,
    /// Image channels.
    #[config(default = 3)]
    pub out_channels: usize,
    /// GroupNorm groups.
    #[config(default = 32)]
    pub norm_groups: usize,
    /// GroupNorm epsilon.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
}

/// `conv_in` → `mid` → blocks (`conv_blocks`, deepest level first) → `norm_out` → swish →
/// `conv_out`.
///
/// Block `b` serves level `len(ch_mult) − 1 − b` with `num_res_blocks + 1` residual blocks, an
/// attention block after each of them in block 0 only, and an upsample after every block except
/// the last.
#[derive(Module, Debug)]
pub struct Decoder {
    /// 3×3 conv `z_channels → ch · ch_mult[last]`.
    pub conv_in: Conv2d,
    /// Bottleneck at the deepest width.
    pub mid: MidBlock,
    /// Resolution levels, deepest first.
    pub conv_blocks: Vec<DecoderBlock>,
    /// Final GroupNorm.
    pub norm_out: GroupNorm,
    /// 3×3 conv to the image channels.
    pub conv_out: Conv2d,
}

impl DecoderConfig {
    /// Initialize a new [`Decoder`].
    ///
    /// # Errors
    ///
    /// [`VqError`] if a size is zero, `ch_mult` is empty, or a level's width is not divisible by
    /// `norm_groups`.
    pub fn init(&self, device: &Device) -> Result<Decoder, VqError> {
        let (groups, eps) = (self.norm_groups, self.norm_eps);
        let ch = non_zero("ch", self.ch)?;
        let deepest_mult = *self
            .ch_mult
            .last()
            .ok_or(VqError::Zero { name: "ch_mult" })?;
        let mut block_in = ch * non_zero("ch_mult", deepest_mult)?;

        let conv_in = conv3x3(self.z_channels, block_in, device)?;
        let mid = MidBlockConfig::new(block_in)
            .with_norm_groups(groups)
            .with_norm_eps(eps)
            .init(device)?;
        let levels = self.ch_mult.len();
        let mut conv_blocks = Vec::with_capacity(levels);
        for (block, &mult) in self.ch_mult.iter().rev().enumerate() {
            let block_out = ch * non_zero("ch_mult", mult)?;
            conv_blocks.push(
                DecoderBlockConfig::new(
                    block_in,
                    block_out,
                    non_zero("num_res_blocks", self.num_res_blocks)? + 1,
                    block == 0,
                    block != levels - 1,
                )
                .with_norm_groups(groups)
                .with_norm_eps(eps)
                .init(device)?,
            );
            block_in = block_out;
        }
        Ok(Decoder {
            conv_in,
            mid,
            conv_blocks,
            norm_out: group_norm(block_in, groups, eps, device)?,
            conv_out: conv3x3(block_in, self.out_channels, device)?,
        })
    }
}

impl Decoder {
    /// Applies the forward pass on the input tensor.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, z_channels, height, width]`
    /// - output: `[batch, out_channels, f·height, f·width]` with `f = 2^(levels − 1)`
    pub fn forward(&self, z: Tensor<4>) -> Tensor<4> {
        let h = conv3x3_forward(&self.conv_in, z);
        let mut h = self.mid.forward(h);
        for block in &self.conv_blocks {
            h = block.forward(h);
        }
        conv3x3_forward(&self.conv_out, norm_swish(&self.norm_out, h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_follows_llamagen() {
        let device = Device::flex();
        let decoder = DecoderConfig::new(32, 32, vec![1, 2, 2], 2)
            .init(&device)
            .unwrap();
        assert_eq!(decoder.conv_blocks.len(), 3);
        for (block, level) in decoder.conv_blocks.iter().enumerate() {
            assert_eq!(level.res.len(), 3);
            assert_eq!(level.attn.len(), if block == 0 { 3 } else { 0 });
            assert_eq!(level.upsample.is_some(), block != 2);
        }
        // Widths 64 → 64 → 32: only block 2 changes width.
        assert!(decoder.conv_blocks[1].res[0].nin_shortcut.is_none());
        assert!(decoder.conv_blocks[2].res[0].nin_shortcut.is_some());

        let out = decoder.forward(Tensor::zeros([2, 32, 3, 2], &device));
        assert_eq!(out.dims(), [2, 3, 12, 8]);
    }
}
