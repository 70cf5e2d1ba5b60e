//! Hyper-parameters of the LlamaGen VQ tokenizer, with the released VQ-16 preset.

use burn::config::Config;
use burn::tensor::Device;

use crate::decoder::DecoderConfig;
use crate::encoder::EncoderConfig;
use crate::error::{VqError, non_zero};
use crate::model::VqModel;
use crate::norm::conv1x1;
use crate::quantizer::VectorQuantizerConfig;

/// Configuration to create a [`VqModel`] using the [init function](VqConfig::init).
///
/// The defaults are the VQ-16 tokenizer every Janus / Janus-Pro checkpoint ships
/// ([`VqConfig::vq_16`]); smaller models override `ch`, `ch_mult`, `z_channels` and the codebook.
/// From these the architecture follows LlamaGen's rules: encoder level `l` has `num_res_blocks`
/// residual blocks of width `ch · ch_mult[l]` and attention only at the deepest level; the
/// decoder mirrors it deepest-first with `num_res_blocks + 1` blocks per level and attention in
/// its first (deepest) block; the spatial factor is `2^(len(ch_mult) − 1)`.
#[derive(Config, Debug)]
pub struct VqConfig {
    /// Number of codebook entries (`codebook_size`, the image-token vocabulary).
    #[config(default = 16384)]
    pub codebook_size: usize,
    /// Width of a codebook entry (`codebook_embed_dim`).
    #[config(default = 8)]
    pub codebook_embed_dim: usize,
    /// l2-normalise latents and codebook rows (`codebook_l2_norm`).
    #[config(default = true)]
    pub codebook_l2_norm: bool,
    /// Channels of the encoder output / decoder input (`z_channels`).
    #[config(default = 256)]
    pub z_channels: usize,
    /// Base channel count (`ch`).
    #[config(default = 128)]
    pub ch: usize,
    /// Channel multiplier per resolution level, shallowest first (`encoder_ch_mult`, equal to
    /// `decoder_ch_mult` in every released model).
    #[config(default = "vec![1, 1, 2, 2, 4]")]
    pub ch_mult: Vec<usize>,
    /// Residual blocks per encoder level (`num_res_blocks`).
    #[config(default = 2)]
    pub num_res_blocks: usize,
    /// Image channels.
    #[config(default = 3)]
    pub image_channels: usize,
    /// GroupNorm groups of every `Normalize`.
    #[config(default = 32)]
    pub norm_groups: usize,
    /// GroupNorm epsilon.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
}

impl VqConfig {
    /// The released VQ-16: ch 128, ch_mult `[1, 1, 2, 2, 4]`, z 256, 2 residual blocks,
    /// 16384 × 8 l2-normalised codebook; 384² images ↔ 24² codes.
    pub fn vq_16() -> Self {
        Self::new()
    }

    /// Spatial factor between image and code grid: `2^(len(ch_mult) − 1)`.
    pub fn downsample_factor(&self) -> usize {
        1 << self.ch_mult.len().saturating_sub(1)
    }

    /// Side of the code grid for a square `image_size` image (`image_size / factor`, floored as
    /// the encoder's stride-2 convs do).
    pub fn grid_size(&self, image_size: usize) -> usize {
        image_size / self.downsample_factor()
    }

    /// Codes per square `image_size` image: `grid_size²` (576 for VQ-16 at 384).
    pub fn codes_per_image(&self, image_size: usize) -> usize {
        self.grid_size(image_size).pow(2)
    }

    /// Checks every size without building anything.
    ///
    /// # Errors
    ///
    /// [`VqError`] describing the first invalid value.
    pub fn validate(&self) -> Result<(), VqError> {
        non_zero("codebook_size", self.codebook_size)?;
        non_zero("codebook_embed_dim", self.codebook_embed_dim)?;
        non_zero("z_channels", self.z_channels)?;
        non_zero("ch", self.ch)?;
        non_zero("ch_mult", self.ch_mult.len())?;
        non_zero("num_res_blocks", self.num_res_blocks)?;
        non_zero("image_channels", self.image_channels)?;
        let groups = non_zero("norm_groups", self.norm_groups)?;
        if !self.norm_eps.is_finite() || self.norm_eps < 0.0 {
            return Err(VqError::InvalidEpsilon(self.norm_eps));
        }
        // `ch` itself is normalised by the first encoder block; then every level's width.
        for mult in std::iter::once(1).chain(self.ch_mult.iter().copied()) {
            let channels = self.ch * non_zero("ch_mult", mult)?;
            if !channels.is_multiple_of(groups) {
                return Err(VqError::ChannelsNotDivisibleByGroups { channels, groups });
            }
        }
        Ok(())
    }

    /// Encoder configuration derived from this one.
    pub fn encoder(&self) -> EncoderConfig {
        EncoderConfig::new(
            self.ch,
            self.ch_mult.clone(),
            self.num_res_blocks,
            self.z_channels,
        )
        .with_in_channels(self.image_channels)
        .with_norm_groups(self.norm_groups)
        .with_norm_eps(self.norm_eps)
    }

    /// Decoder configuration derived from this one.
    pub fn decoder(&self) -> DecoderConfig {
        DecoderConfig::new(
            self.z_channels,
            self.ch,
            self.ch_mult.clone(),
            self.num_res_blocks,
        )
        .with_out_channels(self.image_channels)
        .with_norm_groups(self.norm_groups)
        .with_norm_eps(self.norm_eps)
    }

    /// Quantizer configuration derived from this one.
    pub fn quantizer(&self) -> VectorQuantizerConfig {
        VectorQuantizerConfig::new(self.codebook_size, self.codebook_embed_dim)
            .with_l2_norm(self.codebook_l2_norm)
    }

    /// Initialize a new [`VqModel`] (parameters are allocated lazily, so loading a checkpoint
    /// right after costs no random initialisation).
    ///
    /// # Errors
    ///
    /// [`VqError`] if the configuration is invalid (see [`VqConfig::validate`]).
    pub fn init(&self, device: &Device) -> Result<VqModel, VqError> {
        self.validate()?;
        Ok(VqModel {
            encoder: self.encoder().init(device)?,
            decoder: self.decoder().init(device)?,
            quantize: self.quantizer().init(device)?,
            quant_conv: conv1x1(self.z_channels, self.codebook_embed_dim, device)?,
            post_quant_conv: conv1x1(self.codebook_embed_dim, self.z_channels, device)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vq_16_sizes() {
        let c = VqConfig::vq_16();
        assert_eq!(c.downsample_factor(), 16);
        assert_eq!(c.grid_size(384), 24);
        assert_eq!(c.codes_per_image(384), 576);
        c.validate().unwrap();
        let tiny = VqConfig::new().with_ch(32).with_ch_mult(vec![1, 2, 2]);
        assert_eq!(tiny.downsample_factor(), 4);
        assert_eq!(tiny.codes_per_image(32), 64);
    }

    #[test]
    fn rejects_invalid_configs() {
        let c = VqConfig::new().with_ch_mult(vec![]);
        assert_eq!(c.validate(), Err(VqError::Zero { name: "ch_mult" }));
        let c = VqConfig::new().with_ch(48);
        assert_eq!(
            c.validate(),
            Err(VqError::ChannelsNotDivisibleByGroups {
                channels: 48,
                groups: 32
            })
        );
        let c = VqConfig::new().with_codebook_size(0);
        assert!(c.init(&Device::flex()).is_err());
        let c = VqConfig::new().with_norm_eps(f64::NAN);
        assert!(matches!(c.validate(), Err(VqError::InvalidEpsilon(_))));
    }
}
