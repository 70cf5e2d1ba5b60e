#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! The ops at the crate root take burn tensors and always return the result: each runs its
//! kernel where it applies and burn's own ops otherwise (other backends, autodiff, other
//! dtypes, shapes the kernel does not take), so callers need no fallback of their own. [`nn`]
//! holds the layer forwards that choose between a kernel and burn's op by shape. The kernels
//! themselves work on plain slices and are private; the `flex` feature connects them to
//! burn-flex's tensor buffers.
#![warn(missing_docs)]

#[cfg(feature = "flex")]
mod flex;
// Without `flex` the slice kernels are only reached from their tests.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
mod kernels;
pub mod nn;
mod ops;
pub mod quant;

pub use kernels::batch::MAX_BATCH_ROWS;
pub use kernels::rows::{MAX_ROWS, WeightLayout, set_weight_prefetch, weight_prefetch};
pub use ops::{
    attention_qkv, cached_attention, conv3x3, few_rows_matmul, gelu, group_norm, linear, rms_norm,
    rope, silu,
};

/// Entry points for the profiling tools, which time the kernels against burn's ops and against
/// each other: the slice-level product with its instruction set chosen, the convolution with its
/// algorithm chosen, burn's blocked few-row product with its block size chosen, and the batch
/// product over an f32 weight.
///
/// Unstable: enabled by the `profiling` feature, not part of the crate's API, and changed with
/// the tools that use them.
#[cfg(feature = "profiling")]
pub mod profiling {
    pub use crate::kernels::batch::batch_matmul_t_f32;
    pub use crate::kernels::rows::{Isa, Weights, matmul_rows_with};
    pub use crate::ops::{ConvAlgorithm, conv3x3_with, few_rows_matmul_t};
}
