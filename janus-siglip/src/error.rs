//! Errors raised when a SigLIP configuration cannot describe a valid tower.

/// A SigLIP (sub-)configuration holds values no tower can be built from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SiglipError {
    /// A size that must be positive is zero.
    #[error("`{name}` must be greater than zero")]
    Zero {
        /// Name of the offending configuration field.
        name: &'static str,
    },
    /// The width cannot be split evenly into attention heads.
    #[error("width {width} is not divisible by the number of heads {heads}")]
    WidthNotDivisibleByHeads {
        /// Model width.
        width: usize,
        /// Number of attention heads.
        heads: usize,
    },
    /// The patch is larger than the image, so the tower would see no patch at all.
    #[error("patch size {patch_size} is larger than the image size {image_size}")]
    PatchLargerThanImage {
        /// Patch side in pixels.
        patch_size: usize,
        /// Image side in pixels.
        image_size: usize,
    },
    /// `mlp_ratio` is not a finite positive number, or yields an empty MLP.
    #[error("mlp_ratio {mlp_ratio} does not give a positive MLP width for width {width}")]
    InvalidMlpRatio {
        /// The offending ratio.
        mlp_ratio: f64,
        /// Model width it multiplies.
        width: usize,
    },
    /// The LayerNorm epsilon is negative or not finite.
    #[error("layer_norm_eps {0} must be finite and non-negative")]
    InvalidEpsilon(f64),
    /// No preset is known under this `model_name`.
    #[error("unknown SigLIP model name `{0}`")]
    UnknownModelName(String),
    /// `select_layer` points before the first block (the reference fails here too).
    #[error("select_layer {select_layer} is out of range for a {layers}-layer tower")]
    SelectLayerOutOfRange {
        /// Requested layer.
        select_layer: i64,
        /// Number of layers of the full tower.
        layers: usize,
    },
}

/// Returns [`SiglipError::Zero`] when `value` is zero.
pub(crate) fn non_zero(name: &'static str, value: usize) -> Result<usize, SiglipError> {
    if value == 0 {
        Err(SiglipError::Zero { name })
    } else {
        Ok(value)
    }
}
