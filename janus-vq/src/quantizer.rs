//! Nearest-neighbour vector quantizer over an l2-normalised codebook (LlamaGen `VectorQuantizer`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::{Device, FloatDType, Int, Tensor};

use crate::error::{VqError, non_zero};

/// `F.normalize`'s floor on the norm, so an all-zero row stays zero instead of turning into NaN.
const NORM_EPS: f64 = 1e-12;

/// Configuration to create a [`VectorQuantizer`] using the [init function](VectorQuantizerConfig::init).
#[derive(Config, Debug)]
pub struct VectorQuantizerConfig {
    /// Number of codebook entries.
    pub codebook_size: usize,
    /// Width of each entry (the latent channels after `quant_conv`).
    pub codebook_embed_dim: usize,
    /// l2-normalise latents and codebook rows before matching and lookup (true for VQ-16).
    #[config(default = true)]
    pub l2_norm: bool,
}

/// Maps each latent pixel to the nearest codebook entry and back.
///
/// With `l2_norm`, every codebook row and every latent vector is divided by
/// `max(‖v‖₂, 1e-12)` first, and looked-up entries are the normalised rows. The training-only
/// `codebook_used` buffer of the reference is not part of this module.
#[derive(Module, Debug)]
pub struct VectorQuantizer {
    /// The codebook, `[codebook_size, codebook_embed_dim]` (`quantize.embedding.weight`).
    pub embedding: Embedding,
    /// Whether latents and codebook rows are l2-normalised.
    pub l2_norm: bool,
}

impl VectorQuantizerConfig {
    /// Initialize a new [`VectorQuantizer`].
    ///
    /// # Errors
    ///
    /// [`VqError::Zero`] if a size is zero.
    pub fn init(&self, device: &Device) -> Result<VectorQuantizer, VqError> {
        let size = non_zero("codebook_size", self.codebook_size)?;
        let dim = non_zero("codebook_embed_dim", self.codebook_embed_dim)?;
        Ok(VectorQuantizer {
            embedding: EmbeddingConfig::new(size, dim).init(device),
            l2_norm: self.l2_norm,
        })
    }
}

impl VectorQuantizer {
    /// Number of codebook entries.
    pub fn codebook_size(&self) -> usize {
        self.embedding.weight.shape()[0]
    }

    /// Width of each codebook entry.
    pub fn embed_dim(&self) -> usize {
        self.embedding.weight.shape()[1]
    }

    /// The codebook as used for matching and lookup (normalised rows when `l2_norm`).
    ///
    /// # Shapes
    ///
    /// - output: `[codebook_size, embed_dim]`
    pub fn codebook(&self) -> Tensor<2> {
        let weight = self.embedding.weight.val();
        if self.l2_norm {
            l2_normalize(weight)
        } else {
            weight
        }
    }

    /// Quantizes a latent: returns the looked-up entries and their indices.
    ///
    /// The distance is `‖z‖² + ‖e‖² − 2 z·e` as in the reference (evaluated in f32); the code is
    /// the first index of the minimum (ties resolve to the lower index on the flex backend). Codes
    /// are in row-major `(h, w)` order per image; the entries have the codebook's dtype.
    ///
    /// # Shapes
    ///
    /// - z: `[batch, embed_dim, height, width]`
    /// - output: (`[batch, embed_dim, height, width]`, `[batch, height · width]`)
    pub fn forward(&self, z: Tensor<4>) -> (Tensor<4>, Tensor<2, Int>) {
        let [b, c, h, w] = z.dims();
        let n = b * h * w;
        let z = z.permute([0, 2, 3, 1]).reshape([n, c]);
        let z = if self.l2_norm { l2_normalize(z) } else { z };
        let codebook = self.codebook();
        let k = codebook.dims()[0];

        // Distances in f32 whatever the model dtype: for unit vectors they all sit near 2 − 2cos,
        // where bf16 resolves only ~0.008 and would turn near-misses into ties.
        let zf = z.cast(FloatDType::F32);
        let ef = codebook.clone().cast(FloatDType::F32);
        let z_sq = zf.clone().square().sum_dim(1); // [n, 1]
        let e_sq = ef.clone().square().sum_dim(1).reshape([1, k]); // [1, k]
        let dot = zf.matmul(ef.transpose()); // [n, k]
        let distance = z_sq + e_sq - dot.mul_scalar(2.0);
        let indices = distance.argmin(1).reshape([n]);

        let quant = codebook
            .select(0, indices.clone())
            .reshape([b, h, w, c])
            .permute([0, 3, 1, 2]);
        (quant, indices.reshape([b, h * w]))
    }

    /// Looks codes up (`get_codebook_entry`): normalised codebook rows laid out on a
    /// `height × width` grid, row-major.
    ///
    /// # Shapes
    ///
    /// - codes: `[batch, height · width]`
    /// - output: `[batch, embed_dim, height, width]`
    ///
    /// # Errors
    ///
    /// - [`VqError::EmptyBatch`] if `batch` is zero;
    /// - [`VqError::GridMismatch`] if `height · width` differs from the codes per image (or the
    ///   grid is empty);
    /// - [`VqError::CodeOutOfRange`] if a code is negative or `≥ codebook_size` (this reads the
    ///   codes back to the host once).
    pub fn lookup(
        &self,
        codes: Tensor<2, Int>,
        grid: (usize, usize),
    ) -> Result<Tensor<4>, VqError> {
        let [b, n] = codes.dims();
        let (h, w) = grid;
        if b == 0 {
            return Err(VqError::EmptyBatch);
        }
        if h == 0 || w == 0 || h.checked_mul(w) != Some(n) {
            return Err(VqError::GridMismatch {
                height: h,
                width: w,
                codes: n,
            });
        }
        let codebook_size = self.codebook_size();
        let host = codes.clone().into_data();
        let out_of_range = host
            .iter::<i64>()
            .find(|&c| c < 0 || c as u64 >= codebook_size as u64);
        if let Some(code) = out_of_range {
            return Err(VqError::CodeOutOfRange {
                code,
                codebook_size,
            });
        }
        let embed_dim = self.embed_dim();
        Ok(self
            .codebook()
            .select(0, codes.reshape([b * n]))
            .reshape([b, h, w, embed_dim])
            .permute([0, 3, 1, 2]))
    }
}

/// Row-wise `v / max(‖v‖₂, 1e-12)` (`F.normalize(v, dim=-1)`). Half-precision rows are
/// normalised in f32 and rounded once, so a bf16 codebook entry is the nearest bf16 vector to
/// the exact unit row; the result has the input's dtype.
fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let dtype = x.dtype();
    let x = x.cast(FloatDType::F32);
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(NORM_EPS);
    (x / norm).cast(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    fn quantizer(rows: [[f32; 2]; 4], device: &Device) -> VectorQuantizer {
        let mut q = VectorQuantizerConfig::new(4, 2).init(device).unwrap();
        q.embedding.weight = Param::from_tensor(Tensor::from_floats(rows, device));
        q
    }

    /// Rows 1 and 3 point the same way (3 is longer, identical once normalised); latent pixels
    /// are matched by direction only, whatever their length.
    #[test]
    fn argmin_on_normalised_vectors_with_first_index_on_ties() {
        let device = Device::flex();
        let q = quantizer([[1., 0.], [0., 1.], [-1., 0.], [0., 4.]], &device);
        // One image, 1×4 grid, channels first: pixel vectors (5,0.1) (0,2) (-3,-0.2) (0.1,-7).
        let z = Tensor::<4>::from_floats([[[[5., 0., -3., 0.1]], [[0.1, 2., -0.2, -7.]]]], &device);
        let (quant, codes) = q.forward(z);
        let codes = codes
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap();
        // No row points along -y; (0.1,-7) leans towards +x, so row 0 beats row 2.
        assert_eq!(codes, vec![0, 1, 2, 0]);
        assert_eq!(quant.dims(), [1, 2, 1, 4]);
        let quant = quant.into_data().try_to_vec::<f32>().unwrap();
        // Looked-up entries are the normalised rows, channels first.
        assert_eq!(quant, vec![1., 0., -1., 1., 0., 1., 0., 0.]);
    }

    #[test]
    fn exact_tie_takes_the_first_index() {
        let device = Device::flex();
        // Rows 1 and 3 normalise to the same vector (0, 1).
        let q = quantizer([[1., 0.], [0., 1.], [-1., 0.], [0., 4.]], &device);
        let z = Tensor::<4>::from_floats([[[[0.]], [[3.]]]], &device);
        let (_, codes) = q.forward(z);
        assert_eq!(
            codes
                .into_data()
                .convert::<i64>()
                .try_to_vec::<i64>()
                .unwrap(),
            vec![1]
        );
        // Equidistant from rows 0 and 1 (45°): row 0 comes first.
        let z = Tensor::<4>::from_floats([[[[2.]], [[2.]]]], &device);
        let (_, codes) = q.forward(z);
        assert_eq!(
            codes
                .into_data()
                .convert::<i64>()
                .try_to_vec::<i64>()
                .unwrap(),
            vec![0]
        );
    }

    #[test]
    fn lookup_lays_codes_out_row_major() {
        let device = Device::flex();
        let q = quantizer([[1., 0.], [0., 1.], [-1., 0.], [0., 4.]], &device);
        let codes = Tensor::<2, Int>::from_ints([[0, 1, 2, 3, 1, 0]], &device);
        let quant = q.lookup(codes, (2, 3)).unwrap();
        assert_eq!(quant.dims(), [1, 2, 2, 3]);
        let quant = quant.into_data().try_to_vec::<f32>().unwrap();
        // Channel 0 then channel 1, each a 2×3 grid; row 3 is normalised to (0, 1).
        assert_eq!(quant, vec![1., 0., -1., 0., 0., 1., 0., 1., 0., 1., 1., 0.]);
    }

    #[test]
    fn lookup_rejects_bad_codes_and_grids() {
        let device = Device::flex();
        let q = quantizer([[1., 0.], [0., 1.], [-1., 0.], [0., 4.]], &device);
        let codes = |v: [i64; 4]| Tensor::<2, Int>::from_data([v], &device);
        assert_eq!(
            q.lookup(codes([0, 4, 1, 2]), (2, 2)).unwrap_err(),
            VqError::CodeOutOfRange {
                code: 4,
                codebook_size: 4
            }
        );
        assert_eq!(
            q.lookup(codes([0, 1, -1, 2]), (2, 2)).unwrap_err(),
            VqError::CodeOutOfRange {
                code: -1,
                codebook_size: 4
            }
        );
        assert_eq!(
            q.lookup(codes([0, 1, 1, 2]), (3, 2)).unwrap_err(),
            VqError::GridMismatch {
                height: 3,
                width: 2,
                codes: 4
            }
        );
        assert_eq!(
            q.lookup(codes([0, 1, 1, 2]), (0, 4)).unwrap_err(),
            VqError::GridMismatch {
                height: 0,
                width: 4,
                codes: 4
            }
        );
        assert!(q.lookup(codes([0, 1, 1, 2]), (1, 4)).is_ok());
    }
}
