//! Named weight bundles: the one currency that models, strategies, checkpoints and the wire all trade in.
//!
//! Why a pure type instead of tch tensors: federation code (aggregation, validation, checkpoints) must be testable
//! without libtorch and must never hold a `Tensor` (Send but not Sync). Tensors are kept sorted by name so that two
//! bundles of the same model line up index by index, and the byte form is safetensors, so a checkpoint written here
//! loads in PyTorch (`safetensors.torch.load_file`) and the same bytes travel over the wire.

use std::collections::HashMap;

use safetensors::tensor::Dtype;
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
        Ok(self.squared_distance(other).sqrt())
    }

    /// Squared Euclidean distance in f64, for bundles the caller already knows share a layout (values past the
    /// shorter of two mismatched tensors are ignored; use [`Weights::l2_distance`] when the layout is not checked).
    pub fn squared_distance(&self, other: &Weights) -> f64 {
        self.tensors
            .iter()
            .zip(&other.tensors)
            .flat_map(|(a, b)| a.data.iter().zip(&b.data))
            .map(|(&x, &y)| {
                let d = f64::from(x) - f64::from(y);
                d * d
            })
            .sum()
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
    ///
    /// Written by hand rather than through `safetensors::serialize`: that one wants a byte buffer per tensor, so
    /// every value was copied twice (f32 → per-tensor `Vec<u8>` → output). Here the header is built once and each
    /// tensor's values are copied once, straight into the output (measured on 40 MB: 50.7 → 21.6 ms, BENCHMARKS.md
    /// P2). The layout is the format's: u64 header length, JSON header padded with spaces to 8 bytes, then the data
    /// in header order; `safetensors` itself parses it back (see the tests).
    pub fn to_safetensors(&self, metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>, WeightsError> {
        self.to_safetensors_prefixed("", metadata)
    }

    /// [`Self::to_safetensors`] of `self.strip_prefix(prefix)` without building it: the tensors whose names start
    /// with `prefix`, written under the rest of their name (a checkpoint writes the generator and discriminator of
    /// one GAN bundle this way, with no copy of either).
    pub fn to_safetensors_prefixed(
        &self,
        prefix: &str,
        metadata: Option<HashMap<String, String>>,
    ) -> Result<Vec<u8>, WeightsError> {
        let selected: Vec<(&str, &NamedTensor)> =
            self.tensors.iter().filter_map(|t| t.name.strip_prefix(prefix).map(|rest| (rest, t))).collect();
        let mut header = serde_json::Map::new();
        if let Some(m) = metadata {
            header.insert(METADATA_KEY.to_string(), serde_json::json!(m));
        }
        let mut offset = 0usize;
        for (name, t) in &selected {
            if *name == METADATA_KEY {
                return Err(WeightsError::Malformed(format!("a tensor cannot be named `{METADATA_KEY}`")));
            }
            let end = offset + t.data.len() * std::mem::size_of::<f32>();
            header.insert(
                name.to_string(),
                serde_json::json!({ "dtype": "F32", "shape": t.shape, "data_offsets": [offset, end] }),
            );
            offset = end;
        }
        let mut head = serde_json::to_vec(&header).map_err(|e| WeightsError::Malformed(e.to_string()))?;
        head.resize(head.len().div_ceil(8) * 8, b' ');
        let mut out = Vec::with_capacity(8 + head.len() + offset);
        out.extend_from_slice(&(head.len() as u64).to_le_bytes());
        out.extend_from_slice(&head);
        for (_, t) in &selected {
            extend_le(&mut out, &t.data);
        }
        Ok(out)
    }

    /// Parses safetensors bytes; returns the bundle and the file's metadata. Any malformation is an error.
    ///
    /// The `safetensors` crate validates the header and offsets; the values are then copied once per tensor (not
    /// decoded value by value: 20.8 → 5.3 ms on 40 MB).
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
            let data = f32s_from_le(view.data());
            tensors.push(NamedTensor::new(name, view.shape().to_vec(), data)?);
        }
        Ok((Self::new(tensors)?, metadata))
    }
}

/// The header key safetensors reserves for string metadata.
const METADATA_KEY: &str = "__metadata__";

/// Appends `values` as little-endian bytes: one memcpy on little-endian hosts.
fn extend_le(out: &mut Vec<u8>, values: &[f32]) {
    if cfg!(target_endian = "little") {
        out.extend_from_slice(bytemuck::cast_slice(values));
    } else {
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Little-endian bytes (a whole number of f32s, as the safetensors validation guarantees) to f32 values.
fn f32s_from_le(bytes: &[u8]) -> Vec<f32> {
    if cfg!(target_endian = "little") {
        // Aligned (the data section starts at a multiple of 8 of an allocation): one copy, no zeroing first.
        if let Ok(values) = bytemuck::try_cast_slice::<u8, f32>(bytes) {
            return values.to_vec();
        }
        let mut data = vec![0f32; bytes.len() / 4];
        let n = data.len() * 4;
        bytemuck::cast_slice_mut::<f32, u8>(&mut data).copy_from_slice(&bytes[..n]);
        return data;
    }
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
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
    fn the_hand_written_encoding_is_what_the_safetensors_crate_writes() {
        let w = sample();
        let mut meta = HashMap::new();
        meta.insert("round".to_string(), "7".to_string());
        let ours = w.to_safetensors(Some(meta.clone())).unwrap();
        let owned: Vec<(String, Vec<u8>, Vec<usize>)> = w
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect(), t.shape.clone()))
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = owned
            .iter()
            .map(|(n, b, s)| (n.clone(), safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
            .collect();
        let theirs = safetensors::serialize(views, &Some(meta)).unwrap();
        // Same data section byte for byte; both headers parse to the same tensors.
        let a = safetensors::SafeTensors::deserialize(&ours).unwrap();
        let b = safetensors::SafeTensors::deserialize(&theirs).unwrap();
        let mut names = a.names();
        names.sort();
        let mut other = b.names();
        other.sort();
        assert_eq!(names, other);
        for n in names {
            let (x, y) = (a.tensor(n).unwrap(), b.tensor(n).unwrap());
            assert_eq!((x.shape(), x.data()), (y.shape(), y.data()), "tensor {n}");
        }
        assert_eq!(ours.len(), theirs.len());
        assert_eq!((8 + u64::from_le_bytes(ours[..8].try_into().unwrap())) % 8, 0, "header padded to 8 bytes");
        // An empty bundle and a metadata-named tensor.
        assert!(Weights::from_safetensors(&Weights::default().to_safetensors(None).unwrap()).unwrap().0.is_empty());
        let bad = Weights::new(vec![NamedTensor::new("__metadata__", vec![1], vec![1.0]).unwrap()]).unwrap();
        assert!(bad.to_safetensors(None).is_err());
    }

    #[test]
    fn values_decode_from_aligned_and_unaligned_bytes() {
        let values = [1.5f32, -0.0, f32::MIN_POSITIVE, 3e38];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut shifted = vec![0u8; 1];
        shifted.extend_from_slice(&bytes);
        for b in [&bytes[..], &shifted[1..]] {
            let back = f32s_from_le(b);
            assert_eq!(back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), values.map(f32::to_bits).to_vec());
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
    fn encoding_a_prefix_equals_encoding_the_stripped_bundle() {
        let w = sample();
        let joined = Weights::join_prefixed(&[("g.", &w), ("d.", &sample())]).unwrap();
        let meta = Some(HashMap::from([("part".to_string(), "generator".to_string())]));
        assert_eq!(
            joined.to_safetensors_prefixed("g.", meta.clone()).unwrap(),
            joined.strip_prefix("g.").to_safetensors(meta).unwrap()
        );
        let (back, _) = Weights::from_safetensors(&joined.to_safetensors_prefixed("d.", None).unwrap()).unwrap();
        assert_eq!(back, w);
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
