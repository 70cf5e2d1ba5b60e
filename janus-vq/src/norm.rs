//! Helpers shared by every layer: LlamaGen's `Normalize` (construction and a half-precision-aware
//! forward), the norm → swish pre-activation, and the 3×3 / 1×1 convs.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

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

/// Applies a 3×3, stride-1, padding-1 `conv` (as built by [`conv3x3`]) by
/// [`janus_kernels::nn::conv3x3`]: a two-core Winograd convolution for f32 burn-flex tensors on
/// maps wide enough for it to pay, burn's convolution otherwise. Any other conv runs
/// `conv.forward`.
///
/// # Shapes
///
/// - x: `[batch, in_channels, height, width]`
/// - output: `[batch, out_channels, height, width]`
pub(crate) fn conv3x3_forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let plain = conv.kernel_size == [3, 3]
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && conv.padding == PaddingConfig2d::Explicit(1, 1, 1, 1);
    if !plain {
        return conv.forward(x);
    }
    let bias = conv.bias.as_ref().map(|b| b.val());
    janus_kernels::nn::conv3x3(x, &conv.weight.val(), bias.as_ref())
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
/// normalisation and affine in f32, one rounding back to the input dtype at the end, by
/// [`janus_kernels::group_norm`].
///
/// burn's `GroupNorm` widens only f16, so in bf16 it would round the mean, the centred values
/// and the variance separately, a measurable loss of accuracy through the decoder; on burn-flex
/// its `mean_dim` reductions also sum sequentially, slower and less accurate than
/// janus-kernels' fallback (measurements: docs/perf-notes.md V5).
///
/// # Shapes
///
/// - x: `[batch, channels, height, width]`
/// - output: `[batch, channels, height, width]`
pub(crate) fn group_norm_forward(norm: &GroupNorm, x: Tensor<4>) -> Tensor<4> {
    group_norm_then(norm, x, false)
}

/// `swish(norm(x))` with `swish(x) = x · sigmoid(x)`, the pre-activation of every conv in
/// LlamaGen. For half-precision inputs both run in f32 with a single rounding at the end.
///
/// # Shapes
///
/// - x: `[batch, channels, height, width]`
/// - output: `[batch, channels, height, width]`
pub(crate) fn norm_swish(norm: &GroupNorm, x: Tensor<4>) -> Tensor<4> {
    group_norm_then(norm, x, true)
}

fn group_norm_then(norm: &GroupNorm, x: Tensor<4>, then_silu: bool) -> Tensor<4> {
    let gamma = norm.gamma.as_ref().map(|g| g.val());
    let beta = norm.beta.as_ref().map(|b| b.val());
    janus_kernels::group_norm(
        x,
        gamma.as_ref(),
        beta.as_ref(),
        norm.num_groups,
        norm.epsilon,
        then_silu,
    )
}
