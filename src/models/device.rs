//! Device selection from a user-facing string.
//!
//! Why a function and not `Device::cuda_if_available()` everywhere: a run config says "cuda:1" or "cpu", and a
//! request for a GPU that is not there must be a clear error at start-up, not a silent fall-back to a 50× slower CPU.

use std::time::Instant;

use serde::Serialize;
use tch::{Cuda, Device, Kind, Tensor};

use super::error::{catch_torch, ModelError};

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

/// Waits for the work queued on `device` (a no-op on the CPU): timings of GPU work must end with it, since kernels
/// run asynchronously.
pub fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        Cuda::synchronize(i as i64);
    }
}

/// What the linked libtorch offers, and proof that the chosen device computes: `histofed device` prints it (the GPU
/// check's first step reads it as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    /// libtorch_cuda is loaded in this process: a CUDA build (`--features cuda` keeps it linked) on a CUDA libtorch,
    /// whether or not a GPU is there (libtorch's own `hasCUDA` also needs a device, so it cannot tell).
    pub cuda_built: bool,
    /// A CUDA device answered (`Device::cuda_if_available()` picks it).
    pub cuda_available: bool,
    pub cuda_device_count: i64,
    pub cudnn_available: bool,
    /// cuDNN and CUDA runtime versions as libtorch reports them (only asked when a device answered: asking without
    /// one aborts in some libtorch builds).
    pub cudnn_version: Option<i64>,
    pub cudart_version: Option<i64>,
    /// The device `requested` resolved to ("cpu", "cuda:0").
    pub device: String,
    /// A 1024×1024 f32 matrix product on that device: its result checked against the CPU's, and its time (the
    /// first one includes the device's start-up).
    pub matmul_ok: bool,
    pub matmul_first_ms: f64,
    pub matmul_ms: f64,
    pub torch_threads: i32,
}

/// Whether libtorch_cuda.so is mapped into this process (Linux: /proc/self/maps).
fn libtorch_cuda_loaded() -> bool {
    std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.contains("libtorch_cuda.so"))
}

/// Probes the linked libtorch and runs one checked matrix product on the device `requested` resolves to.
pub fn probe(requested: Option<&str>) -> Result<DeviceReport, ModelError> {
    let device = select_device(requested)?;
    let cuda_available = Cuda::is_available();
    let (cudnn_version, cudart_version) = if cuda_available {
        (Some(tch::utils::version_cudnn()), Some(tch::utils::version_cudart()))
    } else {
        (None, None)
    };
    let (matmul_ok, first, again) = catch_torch("device probe", || {
        let a = Tensor::randn([1024, 1024], (Kind::Float, Device::Cpu));
        let expected = a.matmul(&a);
        let on = a.to_device(device);
        let t = Instant::now();
        let r = on.matmul(&on);
        synchronize(device);
        let first = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let r2 = on.matmul(&on);
        synchronize(device);
        let again = t.elapsed().as_secs_f64() * 1e3;
        // TF32 on Hopper rounds f32 products to 10 mantissa bits: compare with a relative tolerance that allows it.
        let close = |x: &Tensor| {
            let diff = (x.to_device(Device::Cpu) - &expected).abs().max().double_value(&[]);
            diff <= 1e-2 * expected.abs().max().double_value(&[])
        };
        Ok((close(&r) && close(&r2), first, again))
    })?;
    Ok(DeviceReport {
        cuda_built: libtorch_cuda_loaded(),
        cuda_available,
        cuda_device_count: Cuda::device_count(),
        cudnn_available: cuda_available && Cuda::cudnn_is_available(),
        cudnn_version,
        cudart_version,
        device: match device {
            Device::Cuda(i) => format!("cuda:{i}"),
            _ => "cpu".into(),
        },
        matmul_ok,
        matmul_first_ms: first,
        matmul_ms: again,
        torch_threads: tch::get_num_threads(),
    })
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

    #[test]
    fn the_probe_computes_on_the_cpu_and_names_what_is_missing() {
        let r = probe(Some("cpu")).unwrap();
        assert_eq!(r.device, "cpu");
        assert!(r.matmul_ok && r.matmul_ms > 0.0);
        if !Cuda::is_available() {
            assert!(!r.cuda_available && r.cudnn_version.is_none());
            let e = probe(Some("cuda")).unwrap_err().to_string();
            assert!(e.contains("no CUDA device"), "{e}");
        }
    }
}
