//! Named weight bundles: the one currency that models, strategies, checkpoints and the wire all trade in.
//!
//! Why a pure type instead of tch tensors: federation code (aggregation, validation, checkpoints) must be testable
//! without libtorch and must never hold a `Tensor` (Send but not Sync). Tensors are kept sorted by name so that two
//! bundles of the same model line up index by index, and the byte form is safetensors, so a checkpoint written here
//! loads in PyTorch (`safetensors.torch.load_file`) and the same bytes travel over the wire.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, TensorView};
use thiserror::Error;

/// One named f32 tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl NamedTensor {
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> Result<Self, WeightsError> {
        let name = name.into();
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(WeightsError::ShapeMismatch { name, expected, got: data.len() });
        }
        Ok(Self { name, shape, data })
    }
}

/// Errors of building, comparing and decoding weight bundles.
#[derive(Debug, Error, PartialEq)]
pub enum WeightsError {
    #[error("tensor `{name}`: shape holds {expected} values but {got} were given")]
    ShapeMismatch { name: String, expected: usize, got: usize },
    #[error("tensor name `{0}` appears twice")]
    DuplicateName(String),
    #[error("tensor sets differ: {0}")]
    LayoutMismatch(String),
    #[error("tensor `{name}` has dtype {dtype}, only F32 is supported")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("malformed safetensors data: {0}")]
    Malformed(String),
}

/// A model's parameters (and buffers) as named f32 tensors sorted by name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Weights {
    tensors: Vec<NamedTensor>,
}

impl Weights {
    /// Builds a bundle, sorting by name and refusing duplicate names.
    pub fn new(mut tensors: Vec<NamedTensor>) -> Result<Self, WeightsError> {
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        for pair in tensors.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(WeightsError::DuplicateName(pair[0].name.clone()));
            }
        }
        Ok(Self { tensors })
    }

    pub fn tensors(&self) -> &[NamedTensor] {
        &self.tensors
    }

    pub fn tensors_mut(&mut self) -> &mut [NamedTensor] {
        &mut self.tensors
    }

    pub fn into_tensors(self) -> Vec<NamedTensor> {
        self.tensors
    }

    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.binary_search_by(|t| t.name.as_str().cmp(name)).ok().map(|i| &self.tensors[i])
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Total number of scalar values.
    pub fn num_values(&self) -> usize {
        self.tensors.iter().map(|t| t.data.len()).sum()
    }

    /// Size of the raw values in bytes (what moves over the wire, give or take a header).
    pub fn num_bytes(&self) -> usize {
        self.num_values() * std::mem::size_of::<f32>()
    }

    /// Checks that `other` has exactly the same tensor names and shapes, naming the first difference.
    pub fn check_same_layout(&self, other: &Weights) -> Result<(), WeightsError> {
        if self.tensors.len() != other.tensors.len() {
            return Err(WeightsError::LayoutMismatch(format!(
                "{} tensors vs {} tensors",
                self.tensors.len(),
                other.tensors.len()
            )));
        }
        for (a, b) in self.tensors.iter().zip(&other.tensors) {
            if a.name != b.name {
                return Err(WeightsError::LayoutMismatch(format!("tensor `{}` vs `{}`", a.name, b.name)));
            }
            if a.shape != b.shape {
                return Err(WeightsError::LayoutMismatch(format!(
                    "tensor `{}` has shape {:?} vs {:?}",
                    a.name, a.shape, b.shape
                )));
            }
        }
        Ok(())
    }

    /// The first tensor holding a NaN or infinite value, if any.
    pub fn first_non_finite(&self) -> Option<&str> {
        self.tensors.iter().find(|t| t.data.iter().any(|v| !v.is_finite())).map(|t| t.name.as_str())
    }

    /// Euclidean norm over all values.
    pub fn l2_norm(&self) -> f64 {
        self.tensors.iter().flat_map(|t| t.data.iter()).map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt()
    }

    /// Euclidean distance to a bundle of the same layout.
    pub fn l2_distance(&self, other: &Weights) -> Result<f64, WeightsError> {
        self.check_same_layout(other)?;
        let sum: f64 = self
            .tensors
            .iter()
            .zip(&other.tensors)
            .flat_map(|(a, b)| a.data.iter().zip(&b.data))
            .map(|(&x, &y)| {
                let d = f64::from(x) - f64::from(y);
                d * d
            })
            .sum();
        Ok(sum.sqrt())
    }

    /// The tensors whose names start with `prefix`, with the prefix removed (e.g. the generator of a GAN bundle).
    pub fn strip_prefix(&self, prefix: &str) -> Weights {
        let tensors = self
            .tensors
            .iter()
            .filter_map(|t| {
                t.name.strip_prefix(prefix).map(|rest| NamedTensor {
                    name: rest.to_string(),
                    shape: t.shape.clone(),
                    data: t.data.clone(),
                })
            })
            .collect();
        // Stripping one common prefix keeps names unique and sorted.
        Weights { tensors }
    }

    /// Joins parts into one bundle, prefixing each part's names (the inverse of [`Weights::strip_prefix`]).
    pub fn join_prefixed(parts: &[(&str, &Weights)]) -> Result<Weights, WeightsError> {
        let tensors = parts
            .iter()
            .flat_map(|(prefix, w)| {
                w.tensors.iter().map(move |t| NamedTensor {
                    name: format!("{prefix}{}", t.name),
                    shape: t.shape.clone(),
                    data: t.data.clone(),
                })
            })
            .collect();
        Weights::new(tensors)
    }

    /// Serialises to safetensors bytes (little-endian f32), with optional string metadata.
    pub fn to_safetensors(&self, metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>, WeightsError> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|t| {
                let mut b = Vec::with_capacity(t.data.len() * 4);
                for v in &t.data {
                    b.extend_from_slice(&v.to_le_bytes());
                }
                (t.name.clone(), b, t.shape.clone())
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(name, b, shape)| {
                TensorView::new(Dtype::F32, shape.clone(), b)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| WeightsError::Malformed(format!("tensor `{name}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        safetensors::serialize(views, &metadata).map_err(|e| WeightsError::Malformed(e.to_string()))
    }

    /// Parses safetensors bytes; returns the bundle and the file's metadata. Any malformation is an error.
    pub fn from_safetensors(bytes: &[u8]) -> Result<(Self, HashMap<String, String>), WeightsError> {
        let (_, meta) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| WeightsError::Malformed(e.to_string()))?;
        let metadata = meta.metadata().clone().unwrap_or_default();
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Malformed(e.to_string()))?;
        let mut tensors = Vec::new();
        for (name, view) in st.tensors() {
            if view.dtype() != Dtype::F32 {
                return Err(WeightsError::UnsupportedDtype { name, dtype: format!("{:?}", view.dtype()) });
            }
            let data: Vec<f32> =
                view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            tensors.push(NamedTensor::new(name, view.shape().to_vec(), data)?);
        }
        Ok((Self::new(tensors)?, metadata))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Weights {
        Weights::new(vec![
            NamedTensor::new("b.bias", vec![3], vec![0.5, -1.0, f32::MIN_POSITIVE]).unwrap(),
            NamedTensor::new("a.weight", vec![2, 2], vec![1.0, 2.0, 3.0, 1e-30]).unwrap(),
        ])
        .unwrap()
    }

    #[test]
    fn sorted_by_name_and_duplicates_refused() {
        let w = sample();
        assert_eq!(w.tensors()[0].name, "a.weight");
        let dup = Weights::new(vec![
            NamedTensor::new("x", vec![1], vec![1.0]).unwrap(),
            NamedTensor::new("x", vec![1], vec![2.0]).unwrap(),
        ]);
        assert_eq!(dup, Err(WeightsError::DuplicateName("x".into())));
        assert!(NamedTensor::new("y", vec![2, 2], vec![1.0]).is_err());
    }

    #[test]
    fn safetensors_round_trip_is_bit_exact() {
        let w = sample();
        let mut meta = HashMap::new();
        meta.insert("round".to_string(), "7".to_string());
        let bytes = w.to_safetensors(Some(meta.clone())).unwrap();
        let (back, m) = Weights::from_safetensors(&bytes).unwrap();
        assert_eq!(m, meta);
        for (a, b) in w.tensors().iter().zip(back.tensors()) {
            assert_eq!(a.name, b.name);
            assert_eq!(a.shape, b.shape);
            let ab: Vec<u32> = a.data.iter().map(|v| v.to_bits()).collect();
            let bb: Vec<u32> = b.data.iter().map(|v| v.to_bits()).collect();
            assert_eq!(ab, bb);
        }
    }

    #[test]
    fn malformed_bytes_are_an_error_not_a_panic() {
        assert!(Weights::from_safetensors(b"").is_err());
        assert!(Weights::from_safetensors(&[255u8; 64]).is_err());
        let mut bytes = sample().to_safetensors(None).unwrap();
        bytes.truncate(bytes.len() - 3);
        assert!(Weights::from_safetensors(&bytes).is_err());
    }

    #[test]
    fn prefixes_split_and_join() {
        let w = sample();
        let joined = Weights::join_prefixed(&[("g.", &w), ("d.", &w)]).unwrap();
        assert_eq!(joined.tensors().len(), 4);
        assert_eq!(joined.strip_prefix("g."), w);
        assert_eq!(joined.strip_prefix("d."), w);
        assert!(Weights::join_prefixed(&[("x", &w), ("x", &w)]).is_err());
    }

    #[test]
    fn layout_and_distance() {
        let a = sample();
        let mut b = sample();
        b.tensors_mut()[0].data[0] += 3.0;
        b.tensors_mut()[1].data[0] += 4.0;
        assert!((a.l2_distance(&b).unwrap() - 5.0).abs() < 1e-9);
        let c = Weights::new(vec![NamedTensor::new("a.weight", vec![4], vec![0.0; 4]).unwrap()]).unwrap();
        assert!(a.check_same_layout(&c).is_err());
        let mut d = sample();
        d.tensors_mut()[1].data[1] = f32::NAN;
        assert_eq!(d.first_non_finite(), Some("b.bias"));
    }
}
