//! Hyper-parameters of the SigLIP vision tower and the released preset.

use burn::config::Config;

use crate::error::{SiglipError, non_zero};

/// Configuration to create a [`SiglipVisionTower`](crate::SiglipVisionTower) using the
/// [init function](SiglipConfig::init).
///
/// Field names follow `vision_config.params` of a Janus `config.json`.
#[derive(Config, Debug)]
pub struct SiglipConfig {
    /// Side of the (square) input image in pixels.
    pub image_size: usize,
    /// Side of a square patch in pixels.
    pub patch_size: usize,
    /// Token width.
    pub width: usize,
    /// Number of transformer blocks of the full tower (before `select_layer`).
    pub layers: usize,
    /// Number of attention heads; must divide `width`.
    pub heads: usize,
    /// MLP hidden size as a multiple of `width` (hidden = `int(width · mlp_ratio)`).
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Which block's output is used; only that many blocks are built, see
    /// [`depth`](SiglipConfig::depth).
    #[config(default = "-1")]
    pub select_layer: i64,
    /// Number of input image channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Epsilon of every LayerNorm in the tower.
    #[config(default = 1e-6)]
    pub layer_norm_eps: f64,
}

impl SiglipConfig {
    /// Name of the only SigLIP variant the released Janus checkpoints use.
    pub const LARGE_PATCH16_384: &'static str = "siglip_large_patch16_384";

    /// `siglip_large_patch16_384`: 384² px, 16² patches (576 tokens), width 1024, 24 blocks,
    /// 16 heads, MLP 4096, `select_layer = -1`.
    pub fn siglip_large_patch16_384() -> Self {
        Self::new(384, 16, 1024, 24, 16)
    }

    /// The preset behind a `vision_config.params.model_name`.
    ///
    /// # Errors
    ///
    /// [`SiglipError::UnknownModelName`] for any other name.
    pub fn from_model_name(model_name: &str) -> Result<Self, SiglipError> {
        match model_name {
            Self::LARGE_PATCH16_384 => Ok(Self::siglip_large_patch16_384()),
            other => Err(SiglipError::UnknownModelName(other.to_owned())),
        }
    }

    /// Number of blocks actually built, as Janus' `create_siglip_vit` computes it:
    /// `min(layers, layers + select_layer + 1)` for `select_layer ≤ 0`, else
    /// `min(layers, select_layer)`. The final LayerNorm always follows the last built block.
    ///
    /// # Errors
    ///
    /// [`SiglipError::SelectLayerOutOfRange`] if that count is negative.
    pub fn depth(&self) -> Result<usize, SiglipError> {
        let layers = self.layers as i128;
        let select = self.select_layer as i128;
        let depth = if select <= 0 {
            layers.min(layers + select + 1)
        } else {
            layers.min(select)
        };
        usize::try_from(depth).map_err(|_| SiglipError::SelectLayerOutOfRange {
            select_layer: self.select_layer,
            layers: self.layers,
        })
    }

    /// Patches per image side, `image_size / patch_size` (floored, as the strided conv does).
    pub fn grid_size(&self) -> usize {
        self.image_size.checked_div(self.patch_size).unwrap_or(0)
    }

    /// Tokens per image, `grid_size²` (576 for the released tower).
    pub fn num_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Per-head width, `width / heads`.
    pub fn head_dim(&self) -> usize {
        self.width.checked_div(self.heads).unwrap_or(0)
    }

    /// MLP hidden size, `int(width · mlp_ratio)` (truncated like Python's `int`).
    pub fn mlp_hidden(&self) -> usize {
        (self.width as f64 * self.mlp_ratio) as usize
    }

    /// Checks every constraint [`init`](SiglipConfig::init) relies on.
    ///
    /// # Errors
    ///
    /// The first violated constraint as a [`SiglipError`].
    pub fn validate(&self) -> Result<(), SiglipError> {
        non_zero("image_size", self.image_size)?;
        non_zero("patch_size", self.patch_size)?;
        non_zero("width", self.width)?;
        non_zero("layers", self.layers)?;
        non_zero("heads", self.heads)?;
        non_zero("in_channels", self.in_channels)?;
        if self.patch_size > self.image_size {
            return Err(SiglipError::PatchLargerThanImage {
                patch_size: self.patch_size,
                image_size: self.image_size,
            });
        }
        if !self.width.is_multiple_of(self.heads) {
            return Err(SiglipError::WidthNotDivisibleByHeads {
                width: self.width,
                heads: self.heads,
            });
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0) || self.mlp_hidden() == 0 {
            return Err(SiglipError::InvalidMlpRatio {
                mlp_ratio: self.mlp_ratio,
                width: self.width,
            });
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps >= 0.0) {
            return Err(SiglipError::InvalidEpsilon(self.layer_norm_eps));
        }
        self.depth()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_preset_matches_the_spec() {
        let c = SiglipConfig::siglip_large_patch16_384();
        c.validate().unwrap();
        assert_eq!(c.num_patches(), 576);
        assert_eq!(c.head_dim(), 64);
        assert_eq!(c.mlp_hidden(), 4096);
        assert_eq!(c.depth().unwrap(), 24);
        assert_eq!(c.layer_norm_eps, 1e-6);
        assert_eq!(
            SiglipConfig::from_model_name("siglip_large_patch16_384")
                .unwrap()
                .width,
            1024
        );
        assert!(matches!(
            SiglipConfig::from_model_name("siglip_huge"),
            Err(SiglipError::UnknownModelName(_))
        ));
    }

    #[test]
    fn select_layer_semantics() {
        let depth = |sl| {
            SiglipConfig::siglip_large_patch16_384()
                .with_select_layer(sl)
                .depth()
        };
        assert_eq!(depth(-1), Ok(24));
        assert_eq!(depth(-2), Ok(23));
        assert_eq!(depth(0), Ok(24));
        assert_eq!(depth(5), Ok(5));
        assert_eq!(depth(30), Ok(24));
        assert_eq!(depth(-24), Ok(1));
        assert_eq!(depth(-25), Ok(0));
        assert_eq!(
            depth(-26),
            Err(SiglipError::SelectLayerOutOfRange {
                select_layer: -26,
                layers: 24
            })
        );
        assert!(depth(i64::MIN).is_err());
    }

    #[test]
    fn bad_values_are_typed_errors() {
        let base = SiglipConfig::new(32, 8, 32, 2, 2);
        base.validate().unwrap();
        assert_eq!(
            SiglipConfig::new(32, 8, 30, 2, 4).validate(),
            Err(SiglipError::WidthNotDivisibleByHeads {
                width: 30,
                heads: 4
            })
        );
        assert_eq!(
            SiglipConfig::new(32, 8, 32, 2, 0).validate(),
            Err(SiglipError::Zero { name: "heads" })
        );
        assert_eq!(
            SiglipConfig::new(8, 16, 32, 2, 2).validate(),
            Err(SiglipError::PatchLargerThanImage {
                patch_size: 16,
                image_size: 8
            })
        );
        assert!(matches!(
            base.clone().with_mlp_ratio(f64::NAN).validate(),
            Err(SiglipError::InvalidMlpRatio { .. })
        ));
        assert!(matches!(
            base.clone().with_mlp_ratio(0.01).validate(),
            Err(SiglipError::InvalidMlpRatio { .. })
        ));
        assert!(matches!(
            base.with_layer_norm_eps(-1.0).validate(),
            Err(SiglipError::InvalidEpsilon(_))
        ));
    }

    #[test]
    fn json_round_trip_uses_reference_field_names() {
        let c = SiglipConfig::new(32, 8, 32, 2, 2).with_mlp_ratio(4.0);
        let json = serde_json::to_string(&c).unwrap();
        for key in [
            "image_size",
            "patch_size",
            "width",
            "layers",
            "heads",
            "mlp_ratio",
        ] {
            assert!(json.contains(key), "{json}");
        }
    }
}
