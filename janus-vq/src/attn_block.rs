//! Single-head spatial self-attention (`AttnBlock` in LlamaGen).

use burn::config::Config;
use burn::module::Module;
use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, FloatDType, Tensor};

use crate::error::VqError;
use crate::norm::{conv1x1, group_norm, group_norm_forward};

/// Configuration to create an [`AttnBlock`] using the [init function](AttnBlockConfig::init).
#[derive(Config, Debug)]
pub struct AttnBlockConfig {
    /// Channels of the feature map (also the attention width: there is one head).
    pub channels: usize,
    /// GroupNorm groups.
    #[config(default = 32)]
    pub norm_groups: usize,
    /// GroupNorm epsilon.
    #[config(default = 1e-6)]
    pub norm_eps: f64,
}

/// `x + proj_out(attention(norm(x)))` over all `height·width` positions (row-major), one head of
/// width `C`, scores scaled by `C^-1/2` and softmax-normalised over the keys.
#[derive(Module, Debug)]
pub struct AttnBlock {
    /// GroupNorm over the input channels.
    pub norm: GroupNorm,
    /// 1×1 conv producing the queries.
    pub q: Conv2d,
    /// 1×1 conv producing the keys.
    pub k: Conv2d,
    /// 1×1 conv producing the values.
    pub v: Conv2d,
    /// 1×1 output projection.
    pub proj_out: Conv2d,
}

impl AttnBlockConfig {
    /// Initialize a new [`AttnBlock`].
    ///
    /// # Errors
    ///
    /// [`VqError`] if `channels` is zero or not divisible by `norm_groups`.
    pub fn init(&self, device: &Device) -> Result<AttnBlock, VqError> {
        let c = self.channels;
        Ok(AttnBlock {
            norm: group_norm(c, self.norm_groups, self.norm_eps, device)?,
            q: conv1x1(c, c, device)?,
            k: conv1x1(c, c, device)?,
            v: conv1x1(c, c, device)?,
            proj_out: conv1x1(c, c, device)?,
        })
    }
}

impl AttnBlock {
    /// Applies the forward pass on the input tensor.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, channels, height, width]`
    /// - output: `[batch, channels, height, width]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let n = h * w;
        let hn = group_norm_forward(&self.norm, x.clone());
        let q = self
            .q
            .forward(hn.clone())
            .reshape([b, c, n])
            .swap_dims(1, 2); // [b, n, c]
        let k = self.k.forward(hn.clone()).reshape([b, c, n]); // [b, c, n]
        let v = self.v.forward(hn).reshape([b, c, n]); // [b, c, n]

        // scores[i, j] = q_i · k_j / √C; softmax over the keys j, in f32 and rounded once as
        // PyTorch's half-precision softmax does.
        let dtype = q.dtype();
        let scores = q.matmul(k).mul_scalar((c as f64).powf(-0.5));
        let attn = softmax(scores.cast(FloatDType::F32), 2).cast(dtype);
        // out[c, i] = Σ_j v[c, j] · attn[i, j]
        let out = v.matmul(attn.swap_dims(1, 2)).reshape([b, c, h, w]);
        x + self.proj_out.forward(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    fn set(conv: &mut Conv2d, weight: [[f32; 2]; 2], bias: [f32; 2], device: &Device) {
        let w = Tensor::<2>::from_floats(weight, device).reshape([2, 2, 1, 1]);
        conv.weight = Param::from_tensor(w);
        conv.bias = Some(Param::from_tensor(Tensor::from_floats(bias, device)));
    }

    /// Compares with a direct host evaluation of the attention formula on a 2-channel, 1×3 map
    /// with non-trivial weights, so a transposed score matrix or softmax over the wrong axis fails.
    #[test]
    #[allow(clippy::needless_range_loop)] // index math mirrors the formula
    fn matches_direct_evaluation() {
        let device = Device::flex();
        let mut block = AttnBlockConfig::new(2)
            .with_norm_groups(1)
            .init(&device)
            .unwrap();
        let wq = [[0.9, -0.4], [0.3, 1.2]];
        let wk = [[1.1, 0.2], [-0.7, 0.5]];
        let wv = [[0.5, 1.0], [-1.5, 0.25]];
        let wo = [[1.0, -0.5], [0.75, 2.0]];
        let (bq, bk, bv, bo) = ([0.1, -0.2], [0.3, 0.0], [-0.1, 0.2], [0.05, -0.05]);
        set(&mut block.q, wq, bq, &device);
        set(&mut block.k, wk, bk, &device);
        set(&mut block.v, wv, bv, &device);
        set(&mut block.proj_out, wo, bo, &device);

        let x = Tensor::<4>::from_floats([[[[0.3, -1.2, 2.0]], [[1.5, 0.4, -0.8]]]], &device);
        let out = block
            .forward(x.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();

        // Host reference from the normalised input.
        let hn = block
            .norm
            .forward(x.clone())
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let xs = x.into_data().try_to_vec::<f32>().unwrap();
        let hn = |c: usize, i: usize| f64::from(hn[c * 3 + i]);
        let lin = |w: [[f32; 2]; 2], b: [f32; 2], c: usize, i: usize| {
            f64::from(w[c][0]) * hn(0, i) + f64::from(w[c][1]) * hn(1, i) + f64::from(b[c])
        };
        let mut attended = [[0.0f64; 3]; 2];
        for i in 0..3 {
            let scores: Vec<f64> = (0..3)
                .map(|j| {
                    (0..2)
                        .map(|c| lin(wq, bq, c, i) * lin(wk, bk, c, j))
                        .sum::<f64>()
                        / 2f64.sqrt()
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::MIN, f64::max);
            let exp: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = exp.iter().sum();
            for c in 0..2 {
                attended[c][i] = (0..3).map(|j| exp[j] / sum * lin(wv, bv, c, j)).sum();
            }
        }
        for c in 0..2 {
            for i in 0..3 {
                let proj = f64::from(wo[c][0]) * attended[0][i]
                    + f64::from(wo[c][1]) * attended[1][i]
                    + f64::from(bo[c]);
                let expected = f64::from(xs[c * 3 + i]) + proj;
                let got = f64::from(out[c * 3 + i]);
                assert!(
                    (got - expected).abs() < 1e-5,
                    "[{c},{i}] {got} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn keeps_shape() {
        let device = Device::flex();
        let block = AttnBlockConfig::new(32).init(&device).unwrap();
        let out = block.forward(Tensor::zeros([2, 32, 3, 4], &device));
        assert_eq!(out.dims(), [2, 32, 3, 4]);
    }
}
