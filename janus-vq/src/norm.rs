//! Helpers shared by every layer: LlamaGen's `Normalize` (construction and a half-precision-aware
//! forward), the norm → swish pre-activation, and the 3×3 / 1×1 convs.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::tensor::activation::silu;
use burn::tensor::{DType, Device, FloatDType, Tensor};

use crate::error::{VqError, non_zero};

/// LlamaGen's `Normalize(C)`: an affine GroupNorm, validated up front because burn's
/// `GroupNormConfig::init` panics on a channel count the groups do not divide.
pub(crate) fn group_norm(
    channels: usize,
    groups: usize,
    eps: f64,
    device: &Device,
) -> Result<GroupNorm, VqError> {
    let channels = non_zero("channels", channels)?;
    let groups = non_zero("norm_groups", groups)?;
    if !channels.is_multiple_of(groups) {
        return Err(VqError::ChannelsNotDivisibleByGroups { channels, groups });
    }
    if !eps.is_finite() || eps < 0.0 {
        return Err(VqError::InvalidEpsilon(eps));
    }
    Ok(GroupNormConfig::new(groups, channels)
        .with_epsilon(eps)
        .init(device))
}

/// 3×3 convolution, stride 1, zero padding 1, with bias (keeps the spatial size).
pub(crate) fn conv3x3(
    in_channels: usize,
    out_channels: usize,
    device: &Device,
) -> Result<Conv2d, VqError> {
    let in_channels = non_zero("in_channels", in_channels)?;
    let out_channels = non_zero("out_channels", out_channels)?;
    Ok(Conv2dConfig::new([in_channels, out_channels], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device))
}

/// 1×1 convolution with bias (a per-pixel linear map over channels).
pub(crate) fn conv1x1(
    in_channels: usize,
    out_channels: usize,
    device: &Device,
) -> Result<Conv2d, VqError> {
    let in_channels = non_zero("in_channels", in_channels)?;
    let out_channels = non_zero("out_channels", out_channels)?;
    Ok(Conv2dConfig::new([in_channels, out_channels], [1, 1]).init(device))
}

/// Applies `norm` like PyTorch's GroupNorm kernels do for half-precision inputs: statistics,
/// normalisation and affine in f32, one rounding back to the input dtype at the end.
///
/// burn's `GroupNorm` widens only f16, so in bf16 it would round the mean, the centred values
/// and the variance separately (about 0.7 % more relative error through the tiny decoder).
/// f32 inputs go through the module unchanged.
///
/// # Shapes
///
/// - x: `[batch, channels, height, width]`
/// - output: `[batch, channels, height, width]`
pub(crate) fn group_norm_forward(norm: &GroupNorm, x: Tensor<4>) -> Tensor<4> {
    let dtype = x.dtype();
    if dtype == DType::F32 {
        return norm.forward(x);
    }
    group_norm_f32(norm, x).cast(dtype)
}

/// `swish(norm(x))` with `swish(x) = x · sigmoid(x)`, the pre-activation of every conv in
/// LlamaGen. For half-precision inputs both run in f32 with a single rounding at the end.
///
/// # Shapes
///
/// - x: `[batch, channels, height, width]`
/// - output: `[batch, channels, height, width]`
pub(crate) fn norm_swish(norm: &GroupNorm, x: Tensor<4>) -> Tensor<4> {
    let dtype = x.dtype();
    if dtype == DType::F32 {
        return silu(norm.forward(x));
    }
    silu(group_norm_f32(norm, x)).cast(dtype)
}

/// GroupNorm of `x` computed entirely in f32 (the result stays f32).
fn group_norm_f32(norm: &GroupNorm, x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let groups = norm.num_groups;
    let x = x
        .cast(FloatDType::F32)
        .reshape([b, groups, (c / groups) * h * w]);
    let mean = x.clone().mean_dim(2);
    let centred = x - mean;
    let var = centred.clone().square().mean_dim(2);
    let y = (centred / var.add_scalar(norm.epsilon).sqrt()).reshape([b, c, h, w]);
    match (&norm.gamma, &norm.beta) {
        (Some(gamma), Some(beta)) => {
            let gamma = gamma.val().cast(FloatDType::F32).reshape([1, c, 1, 1]);
            let beta = beta.val().cast(FloatDType::F32).reshape([1, c, 1, 1]);
            y * gamma + beta
        }
        _ => y,
    }
}
