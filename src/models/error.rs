//! The one error type of the model layer.
//!
//! Why an enum with distinct out-of-memory and non-finite variants: the supervisor above reacts differently to each
//! (shrink the batch or move device on OOM, restart from a checkpoint on NaN), so these must not be buried in a string.

use thiserror::Error;

use crate::federation::weights::WeightsError;

/// Everything that can go wrong building, training, loading or measuring a model.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ModelError {
    /// A configuration value is out of range; `field` names it.
    #[error("invalid model config: `{field}`: {message}")]
    InvalidConfig { field: String, message: String },
    /// A name (preset, GAN kind, device ...) is not one of the known ones.
    #[error("unknown {what} `{value}` (expected one of: {expected})")]
    UnknownName { what: &'static str, value: String, expected: String },
    /// A loss or output became NaN or infinite; the caller should restart from a checkpoint.
    #[error("non-finite {what} at step {step}: {value}")]
    NonFinite { what: String, step: u64, value: f64 },
    /// The device ran out of memory during `context`.
    #[error("out of memory during {context}: {message}")]
    OutOfMemory { context: String, message: String },
    /// The requested device does not exist or is not available.
    #[error("device `{requested}` unavailable: {message}")]
    Device { requested: String, message: String },
    /// A weight bundle does not fit the model; the message names the tensor.
    #[error("weights do not fit the model: {0}")]
    Weights(String),
    /// An input tensor has the wrong shape, dtype or values.
    #[error("bad input: {0}")]
    Input(String),
    /// Any other libtorch failure.
    #[error("torch error during {context}: {message}")]
    Torch { context: String, message: String },
}

impl ModelError {
    pub(crate) fn config(field: &str, message: impl Into<String>) -> Self {
        ModelError::InvalidConfig { field: field.to_string(), message: message.into() }
    }

    /// Classifies a libtorch error message, recognising CUDA/CPU allocation failures as [`ModelError::OutOfMemory`].
    pub fn from_torch_message(context: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let lower = message.to_ascii_lowercase();
        if lower.contains("out of memory") || lower.contains("failed to allocate") {
            ModelError::OutOfMemory { context: context.to_string(), message }
        } else {
            ModelError::Torch { context: context.to_string(), message }
        }
    }

    pub(crate) fn torch(context: &str) -> impl Fn(tch::TchError) -> ModelError + '_ {
        move |e| ModelError::from_torch_message(context, e.to_string())
    }
}

impl From<WeightsError> for ModelError {
    fn from(e: WeightsError) -> Self {
        ModelError::Weights(e.to_string())
    }
}

/// Runs `f`, turning a panic raised inside libtorch (tch's infallible wrappers unwrap their `TchError`) into an
/// error. Why: nn layers call the panicking variants internally, so fallible `f_` calls alone cannot keep a CUDA OOM
/// in the middle of a forward pass from killing the actor thread; the step boundary is the one place that sees them all.
pub(crate) fn catch_torch<T>(context: &str, f: impl FnOnce() -> Result<T, ModelError>) -> Result<T, ModelError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let message = if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_string()
            } else {
                "unknown panic".to_string()
            };
            Err(ModelError::from_torch_message(context, message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_messages_are_classified() {
        let e = ModelError::from_torch_message("train_step", "CUDA out of memory. Tried to allocate 2.00 GiB");
        assert!(matches!(e, ModelError::OutOfMemory { .. }));
        let e = ModelError::from_torch_message("train_step", "shape mismatch");
        assert!(matches!(e, ModelError::Torch { .. }));
        let r: Result<(), _> = catch_torch("x", || panic!("CUDA error: out of memory"));
        assert!(matches!(r, Err(ModelError::OutOfMemory { .. })));
    }
}
