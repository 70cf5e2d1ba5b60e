use burn::tensor::{DType, Device, Int, Tensor, TensorData};

/// HF half-split rotary position embedding (`rotate_half`), not burn's adjacent-pair layout.
///
/// The angles are computed per call from explicit position ids, because left-padded rows start
/// at different positions; nothing is cached, so there is no table to outgrow.
#[derive(Debug, Clone)]
pub struct RotaryEmbedding {
    /// `theta^(-2i/head_dim)` for `i = 0..head_dim/2`, computed in f32 like the reference.
    inv_freq: Vec<f32>,
}

impl RotaryEmbedding {
    /// Frequencies for heads of width `head_dim` with base `theta`.
    pub fn new(head_dim: usize, theta: f64) -> Self {
        let theta = theta as f32;
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1.0f32 / theta.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        Self { inv_freq }
    }

    /// Cosine and sine tables for the given positions, in `dtype`.
    ///
    /// # Shapes
    /// - positions: `[B, T]`
    /// - output: two tensors `[B, 1, T, head_dim]` (broadcast over heads)
    pub fn cos_sin(&self, positions: Tensor<2, Int>, dtype: DType) -> (Tensor<4>, Tensor<4>) {
        let device = positions.device();
        let [b, t] = positions.dims();
        let half = self.inv_freq.len();
        let inv = Tensor::<3>::from_data(
            TensorData::new(self.inv_freq.clone(), [1, 1, half]),
            (&device, DType::F32),
        );
        let pos = positions.float().cast(DType::F32).reshape([b, t, 1]);
        let freqs = pos.mul(inv);
        let emb = Tensor::cat(vec![freqs.clone(), freqs], 2).reshape([b, 1, t, 2 * half]);
        let (cos, sin) = (emb.clone().cos(), emb.sin());
        if dtype == DType::F32 {
            (cos, sin)
        } else {
            (cos.cast(dtype), sin.cast(dtype))
        }
    }

    /// `x·cos + rotate_half(x)·sin` with `rotate_half([a, b]) = [−b, a]`.
    ///
    /// # Shapes
    /// - x: `[B, H, T, head_dim]`; cos, sin: `[B, 1, T, head_dim]`
    /// - output: `[B, H, T, head_dim]`
    pub fn apply(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
        // One pass on burn-flex in f32 inference, the same arithmetic.
        janus_kernels::rope(x, cos, sin)
    }
}

/// Position ids the way HF derives them from a padding mask: `cumsum(mask) − 1`, clamped at 0.
pub fn positions_from_mask(mask: &[Vec<bool>], offsets: &[i64]) -> Vec<i64> {
    let mut out = Vec::with_capacity(mask.iter().map(Vec::len).sum());
    for (row, &start) in mask.iter().zip(offsets) {
        let mut seen = start;
        for &valid in row {
            if valid {
                seen += 1;
            }
            out.push((seen - 1).max(0));
        }
    }
    out
}

/// Makes an `[B, T]` Int tensor of positions on `device`.
pub(crate) fn positions_tensor(
    pos: Vec<i64>,
    b: usize,
    t: usize,
    device: &Device,
) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(pos, [b, t]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_cumsum_minus_one() {
        let mask = vec![vec![true, true, true], vec![false, true, true]];
        assert_eq!(positions_from_mask(&mask, &[0, 0]), vec![0, 1, 2, 0, 0, 1]);
        // A continuing step starts after the tokens already seen.
        assert_eq!(positions_from_mask(&[vec![true]], &[5]), vec![5]);
    }

    #[test]
    fn rotation_is_half_split() {
        let device = Device::flex();
        let rope = RotaryEmbedding::new(4, 10000.0);
        let pos = positions_tensor(vec![1], 1, 1, &device);
        let (cos, sin) = rope.cos_sin(pos, DType::F32);
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 1, 4]),
            &device,
        );
        let y: Vec<f32> = RotaryEmbedding::apply(x, &cos, &sin)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        // i = 0 pairs x0 with x2 (angle 1), i = 1 pairs x1 with x3 (angle 0.01).
        let (a0, a1) = (1.0f32, 0.01f32);
        let expected = [
            1.0 * a0.cos() - 3.0 * a0.sin(),
            2.0 * a1.cos() - 4.0 * a1.sin(),
            3.0 * a0.cos() + 1.0 * a0.sin(),
            4.0 * a1.cos() + 2.0 * a1.sin(),
        ];
        for (g, e) in y.iter().zip(expected) {
            assert!((g - e).abs() < 1e-5, "{y:?} vs {expected:?}");
        }
    }
}
