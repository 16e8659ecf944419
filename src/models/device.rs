//! Device selection from a user-facing string.
//!
//! Why a function and not `Device::cuda_if_available()` everywhere: a run config says "cuda:1" or "cpu", and a
//! request for a GPU that is not there must be a clear error at start-up, not a silent fall-back to a 50× slower CPU.

use tch::{Cuda, Device};

use super::error::ModelError;

/// "cpu", "cuda", "cuda:N"; `None` (or "auto") picks CUDA device 0 if available, else the CPU.
pub fn select_device(requested: Option<&str>) -> Result<Device, ModelError> {
    let Some(req) = requested.map(|s| s.trim().to_ascii_lowercase()) else {
        return Ok(Device::cuda_if_available());
    };
    let unavailable = |message: String| ModelError::Device { requested: req.clone(), message };
    match req.as_str() {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => {
            if Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                Err(unavailable("no CUDA device is available (CPU-only libtorch or no GPU)".into()))
            }
        }
        other => {
            let Some(idx) = other.strip_prefix("cuda:") else {
                return Err(ModelError::UnknownName {
                    what: "device",
                    value: req.clone(),
                    expected: "cpu, cuda, cuda:N, auto".into(),
                });
            };
            let n: usize = idx.parse().map_err(|_| unavailable(format!("`{idx}` is not a device index")))?;
            let count = Cuda::device_count().max(0) as usize;
            if n < count {
                Ok(Device::Cuda(n))
            } else {
                Err(unavailable(format!("only {count} CUDA device(s) are available")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_strings() {
        assert_eq!(select_device(Some("cpu")).unwrap(), Device::Cpu);
        assert!(select_device(Some("tpu")).is_err());
        assert!(select_device(Some("cuda:x")).is_err());
        if !Cuda::is_available() {
            assert!(select_device(Some("cuda")).is_err());
            assert!(select_device(Some("cuda:0")).is_err());
            assert_eq!(select_device(None).unwrap(), Device::Cpu);
        }
    }
}
