//! The bottleneck shared by encoder and decoder: ResBlock → AttnBlock → ResBlock.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::attn_block::{AttnBlock, AttnBlockConfig};
use crate::error::VqError;
use crate::res_block::{ResBlock, ResBlockConfig};

/// Configuration to create a [`MidBlock`] using the [init function](MidBlockConfig::init).
#[derive(Config, Debug)]
pub struct MidBlockConfig {
    /// Channels of the feature map (the deepest level's width).
    pub channels: usize,
    /// GroupNorm groups.
    #[config(default = 32)]
    pub norm_groups: usize,
    /// GroupNorm epsilon.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
}

/// LlamaGen's `mid` `ModuleList`. Its checkpoint keys are `mid.0`, `mid.1`, `mid.2`; numeric
/// names cannot be struct fields, so a loader maps them to `mid.block_1`, `mid.attn_1`,
/// `mid.block_2` (the names the HF port uses).
#[derive(Module, Debug)]
pub struct MidBlock {
    /// First residual block (`mid.0`).
    pub block_1: ResBlock,
    /// Self-attention (`mid.1`).
    pub attn_1: AttnBlock,
    /// Second residual block (`mid.2`).
    pub block_2: ResBlock,
}

impl MidBlockConfig {
    /// Initialize a new [`MidBlock`].
    ///
    /// # Errors
    ///
    /// [`VqError`] if `channels` is zero or not divisible by `norm_groups`.
    pub fn init(&self, device: &Device) -> Result<MidBlock, VqError> {
        let c = self.channels;
        let res = ResBlockConfig::new(c, c)
            .with_norm_groups(self.norm_groups)
            .with_norm_eps(self.norm_eps);
        Ok(MidBlock {
            block_1: res.init(device)?,
            attn_1: AttnBlockConfig::new(c)
                .with_norm_groups(self.norm_groups)
                .with_norm_eps(self.norm_eps)
                .init(device)?,
            block_2: res.init(device)?,
        })
    }
}

impl MidBlock {
    /// Applies the forward pass on the input tensor.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, channels, height, width]`
    /// - output: `[batch, channels, height, width]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.block_1.forward(x);
        let x = self.attn_1.forward(x);
        self.block_2.forward(x)
    }
}
