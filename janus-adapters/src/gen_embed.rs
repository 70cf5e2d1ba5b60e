//! `gen_embed`: the generation-input table for image codes.

use burn::config::Config;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::Device;

use crate::error::{AdapterError, non_zero};

/// Configuration of the `gen_embed` table, `Embedding(image_token_size, n_embed)`.
///
/// The module is burn's own [`Embedding`] so that its only parameter sits at `gen_embed.weight`,
/// the checkpoint key (`[K, 8]`, same layout in PyTorch and burn, no transpose). It is **not**
/// the VQ codebook and is used un-normalised: a sampled code `c` becomes the next LLM input
/// `gen_aligner(gen_embed(c))`.
///
/// Field names follow `gen_vision_config.params`.
#[derive(Config, Debug)]
pub struct GenEmbedConfig {
    /// Number of image codes K (16384).
    pub image_token_size: usize,
    /// Embedding width (8, the VQ latent width).
    pub n_embed: usize,
}

impl GenEmbedConfig {
    /// Initialize the embedding table.
    ///
    /// Its `forward` maps codes `[batch, seq]` (Int) to `[batch, seq, n_embed]`.
    ///
    /// # Errors
    ///
    /// [`AdapterError::Zero`] if a size is zero.
    pub fn init(&self, device: &Device) -> Result<Embedding, AdapterError> {
        let k = non_zero("image_token_size", self.image_token_size)?;
        let n = non_zero("n_embed", self.n_embed)?;
        Ok(EmbeddingConfig::new(k, n).init(device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::{Int, Tensor, TensorData, Tolerance};

    #[test]
    fn looks_up_rows_without_normalising() {
        let device = Device::flex();
        let mut table = GenEmbedConfig::new(3, 2).init(&device).unwrap();
        table.weight = Param::from_tensor(Tensor::from_floats(
            [[0.0, 1.0], [3.0, 4.0], [-5.0, 0.5]],
            &device,
        ));
        let codes = Tensor::<2, Int>::from_ints([[2, 1], [0, 2]], &device);
        let out = table.forward(codes);
        assert_eq!(out.dims(), [2, 2, 2]);
        out.into_data().assert_approx_eq::<f32>(
            &TensorData::from([[[-5.0, 0.5], [3.0, 4.0]], [[0.0, 1.0], [-5.0, 0.5]]]),
            Tolerance::default(),
        );
    }

    #[test]
    fn zero_size_is_an_error() {
        assert!(GenEmbedConfig::new(0, 8).init(&Device::flex()).is_err());
    }
}
