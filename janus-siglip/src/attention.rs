//! Multi-head self-attention with a fused `qkv` projection.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::error::{SiglipError, non_zero};
use crate::linear;

/// Configuration to create an [`Attention`] layer using the [init function](AttentionConfig::init).
#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// Token width; must be divisible by `heads`.
    pub width: usize,
    /// Number of attention heads.
    pub heads: usize,
}

/// Unmasked multi-head self-attention, timm `Attention` layout.
///
/// `qkv` is one Linear `width → 3·width` with bias whose outputs are ordered
/// `(q, k, v) × head × head_dim`; scores are scaled by `head_dim^-0.5`; heads are concatenated
/// back in order and mixed by `proj`.
#[derive(Module, Debug)]
pub struct Attention {
    /// Fused query/key/value projection, checkpoint key `attn.qkv`.
    pub qkv: Linear,
    /// Output projection, checkpoint key `attn.proj`.
    pub proj: Linear,
    /// Number of heads (a constant, not a parameter).
    heads: usize,
}

impl AttentionConfig {
    /// Initialize a new [`Attention`] module.
    ///
    /// # Errors
    ///
    /// [`SiglipError::Zero`] for a zero size, [`SiglipError::WidthNotDivisibleByHeads`] if the
    /// heads cannot share the width evenly.
    pub fn init(&self, device: &Device) -> Result<Attention, SiglipError> {
        let width = non_zero("width", self.width)?;
        let heads = non_zero("heads", self.heads)?;
        if !width.is_multiple_of(heads) {
            return Err(SiglipError::WidthNotDivisibleByHeads { width, heads });
        }
        Ok(Attention {
            qkv: LinearConfig::new(width, 3 * width).init(device),
            proj: LinearConfig::new(width, width).init(device),
            heads,
        })
    }
}

impl Attention {
    /// Number of attention heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Applies the forward pass on the input tensor.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, tokens, width]`
    /// - output: `[batch, tokens, width]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let qkv = linear::forward(&self.qkv, x);
        // On burn-flex: per-head products on the fused rows where they lie, vectorised softmax.
        let out = janus_kernels::attention_qkv(qkv, self.heads);
        linear::forward(&self.proj, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::activation::softmax;
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn output_shape() {
        let device = Device::flex();
        let attn = AttentionConfig::new(8, 2).init(&device).unwrap();
        let out = attn.forward(Tensor::random([3, 5, 8], Distribution::Default, &device));
        assert_eq!(out.dims(), [3, 5, 8]);
    }

    #[test]
    fn width_must_split_into_heads() {
        let err = AttentionConfig::new(10, 4)
            .init(&Device::flex())
            .unwrap_err();
        assert_eq!(
            err,
            SiglipError::WidthNotDivisibleByHeads {
                width: 10,
                heads: 4
            }
        );
    }

    /// Recomputes attention head by head with plain tensor ops, slicing q/k/v out of the fused
    /// projection in the checkpoint's (q,k,v)×head×head_dim order.
    #[test]
    fn matches_reference_per_head_computation() {
        let device = Device::flex();
        let (width, heads, tokens) = (8, 2, 4);
        let head_dim = width / heads;
        let attn = AttentionConfig::new(width, heads).init(&device).unwrap();
        let x = Tensor::<3>::random([2, tokens, width], Distribution::Default, &device);

        let qkv = attn.qkv.forward(x.clone());
        let mut per_head = Vec::new();
        for h in 0..heads {
            let take = |part: usize| qkv.clone().narrow(2, part * width + h * head_dim, head_dim);
            let (q, k, v) = (take(0), take(1), take(2));
            let scores = q.matmul(k.swap_dims(1, 2)) / (head_dim as f64).sqrt();
            per_head.push(softmax(scores, 2).matmul(v));
        }
        let expected = attn.proj.forward(Tensor::cat(per_head, 2));

        attn.forward(x)
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::default());
    }

    #[test]
    fn uniform_values_pass_through() {
        // With v constant across tokens, any softmax mixes to that constant.
        let device = Device::flex();
        let mut attn = AttentionConfig::new(4, 2).init(&device).unwrap();
        attn.qkv.weight = Param::from_tensor(Tensor::zeros([4, 12], &device));
        let bias: Vec<f32> = (0..12).map(|i| i as f32).collect();
        attn.qkv.bias = Some(Param::from_tensor(Tensor::from_floats(
            bias.as_slice(),
            &device,
        )));
        attn.proj.weight = Param::from_tensor(Tensor::eye(4, &device));
        attn.proj.bias = None;
        let out = attn.forward(Tensor::random([1, 3, 4], Distribution::Default, &device));
        let expected = Tensor::<1>::from_floats([8.0, 9.0, 10.0, 11.0], &device)
            .reshape([1, 1, 4])
            .expand([1, 3, 4]);
        out.into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Tolerance::default());
    }
}
