//! Errors raised when an adapter configuration cannot describe a valid module.

/// An adapter configuration holds values no module can be built from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    /// `projector_type` names a projector this crate does not implement.
    #[error("unknown projector type `{0}` (supported: `identity`, `linear`, `mlp_gelu`)")]
    UnknownProjectorType(String),
    /// A size that must be positive is zero.
    #[error("`{name}` must be greater than zero")]
    Zero {
        /// Name of the offending configuration field.
        name: &'static str,
    },
}

/// Returns [`AdapterError::Zero`] when `value` is zero.
pub(crate) fn non_zero(name: &'static str, value: usize) -> Result<usize, AdapterError> {
    if value == 0 {
        Err(AdapterError::Zero { name })
    } else {
        Ok(value)
    }
}
