//! Conversion between tch `VarStore`s and the crate's `Weights` bundles.
//!
//! Why here and strict: federation averages weights index by index, so names must be stable (sorted, prefixed per
//! network) and a bundle must match the model exactly — a silently skipped or reshaped tensor would corrupt a
//! global model. Loading checks every name and shape (and finiteness) before copying anything, so a bad bundle
//! leaves the model untouched, and the error names the offending tensor.

use std::collections::BTreeMap;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::error::ModelError;
use crate::federation::weights::{NamedTensor, Weights};

/// Copies one tensor to a CPU f32 `NamedTensor`.
pub fn tensor_to_named(name: &str, t: &Tensor) -> Result<NamedTensor, ModelError> {
    let err = ModelError::torch("reading weights");
    let shape: Vec<usize> = t.size().iter().map(|&d| d.max(0) as usize).collect();
    let n: usize = shape.iter().product();
    let flat = t
        .detach()
        .f_to_device(Device::Cpu)
        .and_then(|x| x.f_to_kind(Kind::Float))
        .and_then(|x| x.f_contiguous())
        .and_then(|x| x.f_view([-1i64]))
        .map_err(&err)?;
    let mut data = vec![0f32; n];
    flat.f_copy_data(&mut data, n).map_err(&err)?;
    Ok(NamedTensor::new(name, shape, data)?)
}

/// All variables of `vs` (trainable and buffers), names prefixed with `prefix`, sorted by name.
pub fn varstore_tensors(vs: &VarStore, prefix: &str) -> Result<Vec<NamedTensor>, ModelError> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.iter().map(|(name, t)| tensor_to_named(&format!("{prefix}{name}"), t)).collect()
}

/// A `Weights` bundle of one or more var stores, each with its name prefix.
pub fn stores_to_weights(stores: &[(&VarStore, &str)]) -> Result<Weights, ModelError> {
    let mut all = Vec::new();
    for (vs, prefix) in stores {
        all.extend(varstore_tensors(vs, prefix)?);
    }
    Ok(Weights::new(all)?)
}

/// Loads `w` into the var stores. The bundle must hold exactly the stores' variables (by prefixed name) with the
/// same shapes and only finite values; all of this is checked before any value is copied.
pub fn load_stores(stores: &[(&VarStore, &str)], w: &Weights) -> Result<(), ModelError> {
    let mut targets: BTreeMap<String, Tensor> = BTreeMap::new();
    for (vs, prefix) in stores {
        for (name, t) in vs.variables() {
            targets.insert(format!("{prefix}{name}"), t);
        }
    }
    for nt in w.tensors() {
        let Some(t) = targets.get(&nt.name) else {
            return Err(ModelError::Weights(format!(
                "unexpected tensor `{}` (the model has no such variable)",
                nt.name
            )));
        };
        let shape: Vec<usize> = t.size().iter().map(|&d| d.max(0) as usize).collect();
        if shape != nt.shape {
            return Err(ModelError::Weights(format!(
                "tensor `{}` has shape {:?}, the model expects {:?}",
                nt.name, nt.shape, shape
            )));
        }
        if nt.data.len() != shape.iter().product::<usize>() {
            return Err(ModelError::Weights(format!("tensor `{}` holds {} values", nt.name, nt.data.len())));
        }
        if nt.data.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::Weights(format!("tensor `{}` holds NaN or infinite values", nt.name)));
        }
    }
    if let Some(missing) = targets.keys().find(|k| w.get(k).is_none()) {
        return Err(ModelError::Weights(format!("missing tensor `{missing}`")));
    }
    let err = ModelError::torch("loading weights");
    let _guard = tch::no_grad_guard();
    for nt in w.tensors() {
        if let Some(t) = targets.get(&nt.name) {
            let dims: Vec<i64> = nt.shape.iter().map(|&d| d as i64).collect();
            let src = Tensor::from_slice(&nt.data)
                .f_view(dims.as_slice())
                .and_then(|x| x.f_to_kind(t.kind()))
                .and_then(|x| x.f_to_device(t.device()))
                .map_err(&err)?;
            t.shallow_clone().f_copy_(&src).map_err(&err)?;
        }
    }
    Ok(())
}
