//! The SigLIP ViT as Janus runs it: patchify, add positions, pre-norm blocks, final LayerNorm.

use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig};
use burn::tensor::{Device, Tensor};

use crate::block::{Block, BlockConfig};
use crate::config::SiglipConfig;
use crate::error::SiglipError;
use crate::patch_embed::{PatchEmbed, PatchEmbedConfig};

/// SigLIP vision tower (timm `VisionTransformer`, `siglip_large_patch16_384` variant).
///
/// No class token, no register tokens, no pre-norm, no pooling: the output is every patch token
/// after the final LayerNorm (`select_feature = "same"`). The checkpoint's `attn_pool.*` weights
/// belong to a head the reference builds but never runs, so they have no field here.
///
/// Field names equal the PyTorch state-dict names below `vision_model.vision_tower.`.
#[derive(Module, Debug)]
pub struct SiglipVisionTower {
    /// Patch stem, checkpoint key `patch_embed.proj.*`.
    pub patch_embed: PatchEmbed,
    /// Learned absolute position embedding `[1, num_patches, width]`, checkpoint key `pos_embed`.
    pub pos_embed: Param<Tensor<3>>,
    /// Transformer blocks, checkpoint keys `blocks.{i}.*`; only the first
    /// [`SiglipConfig::depth`] blocks are built.
    pub blocks: Vec<Block>,
    /// Final LayerNorm, checkpoint key `norm.{weight,bias}`.
    pub norm: LayerNorm,
}

impl SiglipConfig {
    /// Initialize a new [`SiglipVisionTower`] with random weights (load real ones afterwards).
    ///
    /// # Errors
    ///
    /// The first constraint [`validate`](SiglipConfig::validate) finds violated.
    pub fn init(&self, device: &Device) -> Result<SiglipVisionTower, SiglipError> {
        self.validate()?;
        let patch_embed =
            PatchEmbedConfig::new(self.in_channels, self.patch_size, self.width).init(device)?;
        // timm draws pos_embed from a (truncated) normal with std 0.02.
        let pos_embed = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        }
        .init([1, self.num_patches(), self.width], device);
        let block = BlockConfig::new(self.width, self.heads, self.mlp_hidden())
            .with_layer_norm_eps(self.layer_norm_eps);
        let blocks = (0..self.depth()?)
            .map(|_| block.init(device))
            .collect::<Result<Vec<_>, _>>()?;
        let norm = LayerNormConfig::new(self.width)
            .with_epsilon(self.layer_norm_eps)
            .init(device);
        Ok(SiglipVisionTower {
            patch_embed,
            pos_embed,
            blocks,
            norm,
        })
    }
}

impl SiglipVisionTower {
    /// Encodes normalised images into patch features.
    ///
    /// Runs in the dtype of the parameters; `pixel_values` must already have that dtype.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, in_channels, image_size, image_size]` (values normalised to [-1, 1])
    /// - output: `[batch, num_patches, width]`
    ///
    /// # Panics
    ///
    /// If the image does not produce exactly `num_patches` tokens (wrong resolution).
    pub fn forward(&self, pixel_values: Tensor<4>) -> Tensor<3> {
        let x = self.patch_embed.forward(pixel_values);
        let pos_embed = self.pos_embed.val();
        let [_, tokens, _] = x.dims();
        let [_, expected, _] = pos_embed.dims();
        assert_eq!(
            tokens, expected,
            "SigLIP: image gives {tokens} patches but pos_embed has {expected} (wrong image size?)"
        );
        let x = self
            .blocks
            .iter()
            .fold(x + pos_embed, |x, block| block.forward(x));
        self.norm.forward(x)
    }

    /// Number of tokens produced per image.
    pub fn num_patches(&self) -> usize {
        self.pos_embed.dims()[1]
    }

    /// Token width.
    pub fn width(&self) -> usize {
        self.pos_embed.dims()[2]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::ModuleVisitor;
    use burn::tensor::{DType, Distribution, FloatDType};

    fn tiny() -> SiglipConfig {
        SiglipConfig::new(32, 8, 32, 2, 2)
    }

    #[test]
    fn output_shape() {
        let device = Device::flex();
        let tower = tiny().init(&device).unwrap();
        let out = tower.forward(Tensor::random(
            [2, 3, 32, 32],
            Distribution::Default,
            &device,
        ));
        assert_eq!(out.dims(), [2, 16, 32]);
        assert_eq!((tower.num_patches(), tower.width()), (16, 32));
    }

    #[test]
    fn select_layer_controls_built_blocks() {
        let device = Device::flex();
        let built = |sl| {
            SiglipConfig::new(32, 8, 32, 4, 2)
                .with_select_layer(sl)
                .init(&device)
                .unwrap()
                .blocks
                .len()
        };
        assert_eq!(built(-1), 4);
        assert_eq!(built(-2), 3);
        assert_eq!(built(2), 2);
    }

    #[test]
    fn invalid_config_does_not_build() {
        let err = SiglipConfig::new(32, 8, 32, 2, 3)
            .init(&Device::flex())
            .unwrap_err();
        assert!(matches!(err, SiglipError::WidthNotDivisibleByHeads { .. }));
    }

    /// Module paths are the checkpoint keys (minus `vision_model.vision_tower.`), before the
    /// PyTorch→burn renames of LayerNorm `weight/bias` → `gamma/beta`.
    #[test]
    fn parameter_paths_match_checkpoint_names() {
        struct Paths(Vec<String>, Vec<String>);
        impl ModuleVisitor for Paths {
            fn enter_module(&mut self, name: &str, _container_type: &str) {
                self.1.push(name.to_owned());
            }
            fn exit_module(&mut self, _name: &str, _container_type: &str) {
                self.1.pop();
            }
            fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<D>>) {
                self.0.push(self.1.join("."));
            }
        }
        let tower = tiny().init(&Device::flex()).unwrap();
        let mut paths = Paths(Vec::new(), Vec::new());
        tower.visit(&mut paths);
        for key in [
            "patch_embed.proj.weight",
            "patch_embed.proj.bias",
            "pos_embed",
            "blocks.0.norm1.gamma",
            "blocks.0.norm1.beta",
            "blocks.0.attn.qkv.weight",
            "blocks.0.attn.qkv.bias",
            "blocks.1.attn.proj.weight",
            "blocks.1.norm2.gamma",
            "blocks.1.mlp.fc1.weight",
            "blocks.1.mlp.fc2.bias",
            "norm.gamma",
            "norm.beta",
        ] {
            assert!(
                paths.0.iter().any(|p| p == key),
                "{key} not in {:?}",
                paths.0
            );
        }
        // 4 stem/pos/final-norm tensors + 12 per block.
        assert_eq!(paths.0.len(), 2 + 1 + 2 + 2 * 12);
    }

    /// Every internal tensor follows the parameter dtype (burn panics on mixed dtypes).
    #[test]
    fn runs_in_bf16() {
        let device = Device::flex();
        let tower = tiny().init(&device).unwrap();
        let tower = tower.map(&mut CastTo(FloatDType::BF16));
        let x = Tensor::<4>::random([1, 3, 32, 32], Distribution::Default, &device)
            .cast(FloatDType::BF16);
        let out = tower.forward(x);
        assert_eq!(out.dtype(), DType::BF16);
        assert_eq!(out.dims(), [1, 16, 32]);
    }

    struct CastTo(FloatDType);
    impl burn::module::ModuleMapper for CastTo {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let dtype = self.0;
            param.map(|t| t.cast(dtype))
        }
    }
}
