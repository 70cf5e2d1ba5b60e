//! The complete tokenizer: encoder, quantizer and decoder with their 1×1 adapters.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::tensor::{DType, Int, Tensor};

use crate::decoder::Decoder;
use crate::encoder::Encoder;
use crate::error::VqError;
use crate::quantizer::VectorQuantizer;

/// Result of [`VqModel::encode`].
#[derive(Debug, Clone)]
pub struct VqEncoding {
    /// Code indices, `[batch, height · width]`, row-major over the grid.
    pub codes: Tensor<2, Int>,
    /// Quantised latent (normalised codebook rows), `[batch, embed_dim, height, width]`.
    pub quant: Tensor<4>,
    /// Code grid `(height, width)`.
    pub grid: (usize, usize),
}

/// LlamaGen's `VQModel` as used by Janus (`gen_vision_model`): images ↔ discrete codes.
///
/// Field names equal the PyTorch state-dict names, so checkpoint keys (with the
/// `gen_vision_model.` prefix removed) are module paths, except for the bottleneck
/// `{encoder,decoder}.mid.{0,1,2}` → `mid.{block_1,attn_1,block_2}` (see [`MidBlock`](crate::MidBlock))
/// and the training buffer `quantize.codebook_used`, which is not loaded. Build with
/// [`VqConfig::init`](crate::VqConfig::init). Everything runs in the parameters' dtype.
#[derive(Module, Debug)]
pub struct VqModel {
    /// Image → latent.
    pub encoder: Encoder,
    /// Latent → image.
    pub decoder: Decoder,
    /// Codebook matching and lookup.
    pub quantize: VectorQuantizer,
    /// 1×1 conv `z_channels → embed_dim` after the encoder.
    pub quant_conv: Conv2d,
    /// 1×1 conv `embed_dim → z_channels` before the decoder.
    pub post_quant_conv: Conv2d,
}

impl VqModel {
    /// Spatial factor between image and code grid: `2^(levels − 1)`.
    pub fn downsample_factor(&self) -> usize {
        1 << self.encoder.conv_blocks.len().saturating_sub(1)
    }

    /// Side of the code grid for a square `image_size` image.
    pub fn grid_size(&self, image_size: usize) -> usize {
        image_size / self.downsample_factor()
    }

    /// Codes per square `image_size` image (576 for VQ-16 at 384).
    pub fn codes_per_image(&self, image_size: usize) -> usize {
        self.grid_size(image_size).pow(2)
    }

    /// Number of codebook entries.
    pub fn codebook_size(&self) -> usize {
        self.quantize.codebook_size()
    }

    /// Width of a codebook entry (latent channels between the 1×1 adapters).
    pub fn embed_dim(&self) -> usize {
        self.quantize.embed_dim()
    }

    /// Image channels the encoder takes.
    pub fn image_channels(&self) -> usize {
        self.encoder.conv_in.weight.shape()[1]
    }

    /// The float dtype of the parameters, which every computation uses.
    pub fn dtype(&self) -> DType {
        self.post_quant_conv.weight.val().dtype()
    }

    /// Encodes images to codes (VQModel `encode`: encoder → `quant_conv` → quantizer).
    ///
    /// The image is cast to the parameters' dtype first.
    ///
    /// # Shapes
    ///
    /// - image: `[batch, 3, height, width]`, values in `[-1, 1]`
    /// - codes: `[batch, (height / f) · (width / f)]`; quant: `[batch, embed_dim, height / f,
    ///   width / f]` with `f` = [`downsample_factor`](Self::downsample_factor)
    ///
    /// # Errors
    ///
    /// [`VqError::EmptyBatch`], [`VqError::ChannelMismatch`], or [`VqError::ImageTooSmall`] when
    /// a side is smaller than the downsampling factor.
    pub fn encode(&self, image: Tensor<4>) -> Result<VqEncoding, VqError> {
        let [b, c, h, w] = image.dims();
        if b == 0 {
            return Err(VqError::EmptyBatch);
        }
        let expected = self.image_channels();
        if c != expected {
            return Err(VqError::ChannelMismatch {
                expected,
                actual: c,
            });
        }
        let factor = self.downsample_factor();
        if h < factor || w < factor {
            return Err(VqError::ImageTooSmall {
                height: h,
                width: w,
                factor,
            });
        }
        let z = self
            .quant_conv
            .forward(self.encoder.forward(image.cast(self.dtype())));
        let [_, _, gh, gw] = z.dims();
        let (quant, codes) = self.quantize.forward(z);
        Ok(VqEncoding {
            codes,
            quant,
            grid: (gh, gw),
        })
    }

    /// Decodes a quantised latent (VQModel `decode`: `post_quant_conv` → decoder).
    ///
    /// # Shapes
    ///
    /// - quant: `[batch, embed_dim, height, width]`
    /// - output: `[batch, 3, f·height, f·width]`, roughly in `[-1, 1]`
    ///
    /// # Errors
    ///
    /// [`VqError::EmptyBatch`], [`VqError::ChannelMismatch`], or [`VqError::GridMismatch`] for
    /// an empty grid.
    pub fn decode(&self, quant: Tensor<4>) -> Result<Tensor<4>, VqError> {
        let [b, c, h, w] = quant.dims();
        if b == 0 {
            return Err(VqError::EmptyBatch);
        }
        let expected = self.embed_dim();
        if c != expected {
            return Err(VqError::ChannelMismatch {
                expected,
                actual: c,
            });
        }
        if h == 0 || w == 0 {
            return Err(VqError::GridMismatch {
                height: h,
                width: w,
                codes: 0,
            });
        }
        let quant = quant.cast(self.dtype());
        Ok(self.decoder.forward(self.post_quant_conv.forward(quant)))
    }

    /// Decodes code indices to images (VQModel `decode_code`): normalised codebook lookup laid
    /// out row-major on `grid = (height, width)`, then [`decode`](Self::decode).
    ///
    /// # Shapes
    ///
    /// - codes: `[batch, height · width]`
    /// - output: `[batch, 3, f·height, f·width]`
    ///
    /// # Errors
    ///
    /// [`VqError::CodeOutOfRange`] for a code outside `0..codebook_size`,
    /// [`VqError::GridMismatch`] if `height · width` is not the number of codes per image,
    /// [`VqError::EmptyBatch`] for an empty batch.
    pub fn decode_codes(
        &self,
        codes: Tensor<2, Int>,
        grid: (usize, usize),
    ) -> Result<Tensor<4>, VqError> {
        let quant = self.quantize.lookup(codes, grid)?;
        self.decode(quant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VqConfig;
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::Device;

    fn tiny() -> VqConfig {
        VqConfig::new()
            .with_ch(32)
            .with_ch_mult(vec![1, 2, 2])
            .with_z_channels(32)
            .with_codebook_size(64)
    }

    #[test]
    fn encode_decode_shapes() {
        let device = Device::flex();
        let model = tiny().init(&device).unwrap();
        assert_eq!(model.downsample_factor(), 4);
        assert_eq!(model.codes_per_image(32), 64);
        let enc = model
            .encode(Tensor::zeros([2, 3, 16, 12], &device))
            .unwrap();
        assert_eq!(enc.grid, (4, 3));
        assert_eq!(enc.codes.dims(), [2, 12]);
        assert_eq!(enc.quant.dims(), [2, 8, 4, 3]);
        let image = model.decode_codes(enc.codes, enc.grid).unwrap();
        assert_eq!(image.dims(), [2, 3, 16, 12]);
    }

    #[test]
    fn decode_codes_rejects_bad_input() {
        let device = Device::flex();
        let model = tiny().init(&device).unwrap();
        let codes = Tensor::<2, Int>::from_ints([[0, 1, 63, 64]], &device);
        assert_eq!(
            model.decode_codes(codes, (2, 2)).unwrap_err(),
            VqError::CodeOutOfRange {
                code: 64,
                codebook_size: 64
            }
        );
        let codes = Tensor::<2, Int>::from_ints([[0, 1, 2, 3]], &device);
        assert_eq!(
            model.decode_codes(codes, (2, 3)).unwrap_err(),
            VqError::GridMismatch {
                height: 2,
                width: 3,
                codes: 4
            }
        );
        let codes = Tensor::<2, Int>::zeros([0, 4], &device);
        assert_eq!(
            model.decode_codes(codes, (2, 2)).unwrap_err(),
            VqError::EmptyBatch
        );
    }

    #[test]
    fn encode_rejects_bad_input() {
        let device = Device::flex();
        let model = tiny().init(&device).unwrap();
        assert_eq!(
            model
                .encode(Tensor::zeros([1, 4, 16, 16], &device))
                .unwrap_err(),
            VqError::ChannelMismatch {
                expected: 3,
                actual: 4
            }
        );
        assert_eq!(
            model
                .encode(Tensor::zeros([1, 3, 3, 16], &device))
                .unwrap_err(),
            VqError::ImageTooSmall {
                height: 3,
                width: 16,
                factor: 4
            }
        );
    }

    /// Collects dotted parameter paths, as burn-store sees them.
    #[derive(Default)]
    struct Paths {
        stack: Vec<String>,
        paths: Vec<String>,
    }

    impl ModuleVisitor for Paths {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.stack.push(name.to_owned());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<D>>) {
            self.paths.push(self.stack.join("."));
        }
    }

    /// The released model has the reference's 343 parameters under the state-dict names.
    #[test]
    fn vq_16_parameter_paths_match_checkpoint_keys() {
        let model = VqConfig::vq_16().init(&Device::flex()).unwrap();
        let mut visitor = Paths::default();
        model.visit(&mut visitor);
        let paths = visitor.paths;
        assert_eq!(paths.len(), 343);
        for key in [
            "encoder.conv_in.weight",
            "encoder.conv_blocks.0.res.1.norm1.gamma",
            "encoder.conv_blocks.2.res.0.nin_shortcut.weight",
            "encoder.conv_blocks.3.downsample.conv.weight",
            "encoder.conv_blocks.4.attn.1.proj_out.bias",
            "encoder.mid.block_1.conv2.weight",
            "encoder.mid.attn_1.q.weight",
            "encoder.mid.block_2.norm2.beta",
            "encoder.norm_out.gamma",
            "encoder.conv_out.weight",
            "decoder.conv_in.weight",
            "decoder.mid.attn_1.proj_out.weight",
            "decoder.conv_blocks.0.attn.2.k.bias",
            "decoder.conv_blocks.0.res.2.conv2.weight",
            "decoder.conv_blocks.1.res.0.nin_shortcut.weight",
            "decoder.conv_blocks.3.upsample.conv.bias",
            "decoder.conv_blocks.4.res.2.norm2.gamma",
            "decoder.norm_out.beta",
            "decoder.conv_out.weight",
            "quantize.embedding.weight",
            "quant_conv.weight",
            "post_quant_conv.bias",
        ] {
            assert!(paths.iter().any(|p| p == key), "missing {key}");
        }
        assert!(!paths.iter().any(|p| p.contains("conv_blocks.4.downsample")));
        assert!(!paths.iter().any(|p| p.contains("conv_blocks.4.upsample")));
        assert!(
            !paths
                .iter()
                .any(|p| p.starts_with("decoder.conv_blocks.1.attn"))
        );
    }
}
