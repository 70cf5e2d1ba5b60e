//! Errors for configurations no VQ model can be built from and for inputs it cannot take.

/// A VQ configuration or an input to [`VqModel`](crate::VqModel) is invalid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VqError {
    /// A size that must be positive is zero (or a list that must not be empty is empty).
    #[error("`{name}` must be greater than zero")]
    Zero {
        /// Name of the offending configuration field.
        name: &'static str,
    },
    /// A GroupNorm would see a channel count it cannot split into its groups.
    #[error("{channels} channels cannot be split into {groups} GroupNorm groups")]
    ChannelsNotDivisibleByGroups {
        /// Channel count of the normalised feature map.
        channels: usize,
        /// Number of GroupNorm groups.
        groups: usize,
    },
    /// The GroupNorm epsilon is negative or not finite.
    #[error("norm_eps {0} must be finite and non-negative")]
    InvalidEpsilon(f64),
    /// A tensor passed in has the wrong number of channels.
    #[error("expected {expected} input channels, got {actual}")]
    ChannelMismatch {
        /// Channels the model takes.
        expected: usize,
        /// Channels of the given tensor.
        actual: usize,
    },
    /// The image is too small to survive the encoder's downsampling.
    #[error("image of {height}×{width} pixels is smaller than the downsampling factor {factor}")]
    ImageTooSmall {
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
        /// Spatial downsampling factor of the encoder.
        factor: usize,
    },
    /// A batch with no element.
    #[error("the batch is empty")]
    EmptyBatch,
    /// The code grid does not hold as many cells as there are codes per image.
    #[error("grid {height}×{width} does not hold {codes} codes")]
    GridMismatch {
        /// Grid height.
        height: usize,
        /// Grid width.
        width: usize,
        /// Codes per image given.
        codes: usize,
    },
    /// A code does not index a codebook row.
    #[error("code {code} is outside the codebook of {codebook_size} entries")]
    CodeOutOfRange {
        /// The first offending code (in row-major order).
        code: i64,
        /// Number of codebook entries.
        codebook_size: usize,
    },
}

/// Returns [`VqError::Zero`] when `value` is zero.
pub(crate) fn non_zero(name: &'static str, value: usize) -> Result<usize, VqError> {
    if value == 0 {
        Err(VqError::Zero { name })
    } else {
        Ok(value)
    }
}
