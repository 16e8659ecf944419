//! Validation of a site's update before it may touch the global model.
//!
//! Why a separate, pure gate: aggregation assumes its inputs are sane (right round, right layout, finite values, a
//! real sample count). One NaN from a diverged discriminator, a site replaying last round's weights, or a
//! mis-configured site with another architecture would otherwise poison the global model for every site, and a GAN
//! rarely recovers from that. Each rejection carries a machine-readable [`RejectReason`] (a metric label and a
//! protocol answer) plus a human-readable detail naming the offending round, tensor or value.
//!
//! Checks run cheapest and most fundamental first, so a message from a different protocol version is never
//! reported as, say, a shape error: protocol version, round id, sample count, tensor names, shapes, finite values,
//! optional bound on ‖update − global‖₂. Site identity ([`RejectReason::UnknownSite`]), duplicate submissions
//! ([`RejectReason::Duplicate`]) and undecodable payloads ([`RejectReason::Malformed`]) are decided by the caller,
//! which knows the membership and the wire; the reasons live here so that all rejections share one vocabulary.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::round::UpdateVerdict;
use super::weights::Weights;

/// Server-side limits on updates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ValidationPolicy {
    /// Bound on ‖update − global‖₂ (a cheap defence against scaled or diverged updates).
    pub max_update_norm: Option<f64>,
    /// Bound on the claimed sample count, so that one site cannot buy FedAvg weight by claiming a huge dataset.
    pub max_samples: Option<u64>,
}

/// Why an update was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectReason {
    ProtocolVersion,
    StaleRound,
    UnknownSite,
    WrongTensors,
    WrongShape,
    NonFinite,
    NormBound,
    ZeroSamples,
    /// The claimed sample count exceeds [`ValidationPolicy::max_samples`].
    SampleBound,
    Malformed,
    Duplicate,
}

impl RejectReason {
    /// Every reason, e.g. to pre-register metric series.
    pub const ALL: [RejectReason; 11] = [
        RejectReason::ProtocolVersion,
        RejectReason::StaleRound,
        RejectReason::UnknownSite,
        RejectReason::WrongTensors,
        RejectReason::WrongShape,
        RejectReason::NonFinite,
        RejectReason::NormBound,
        RejectReason::ZeroSamples,
        RejectReason::SampleBound,
        RejectReason::Malformed,
        RejectReason::Duplicate,
    ];

    /// Metric label; the same string as the serde form.
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::ProtocolVersion => "protocol-version",
            RejectReason::StaleRound => "stale-round",
            RejectReason::UnknownSite => "unknown-site",
            RejectReason::WrongTensors => "wrong-tensors",
            RejectReason::WrongShape => "wrong-shape",
            RejectReason::NonFinite => "non-finite",
            RejectReason::NormBound => "norm-bound",
            RejectReason::ZeroSamples => "zero-samples",
            RejectReason::SampleBound => "sample-bound",
            RejectReason::Malformed => "malformed",
            RejectReason::Duplicate => "duplicate",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an upload was not folded in, end to end: the metric's `reason` label comes from this value, never from text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// It failed validation, or could not be read at all (`Malformed`), or the round bookkeeping refused it
    /// (`StaleRound` for another round or none open, `UnknownSite` for a site not asked, `Duplicate`).
    Invalid(RejectReason),
    /// It was valid but the strategy refused to fold it (a layout it cannot take).
    Aggregation,
    /// It came from a process whose site was taken over by another process (`federation::fencing`).
    Fenced,
}

impl Refused {
    /// The bounded metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Invalid(r) => r.as_str(),
            Refused::Aggregation => "aggregation",
            Refused::Fenced => "fenced",
        }
    }
}

impl From<UpdateVerdict> for Refused {
    fn from(v: UpdateVerdict) -> Self {
        Refused::Invalid(match v {
            UpdateVerdict::Accept | UpdateVerdict::WrongRound { .. } => RejectReason::StaleRound,
            UpdateVerdict::NotParticipant => RejectReason::UnknownSite,
            UpdateVerdict::Duplicate => RejectReason::Duplicate,
        })
    }
}

/// A rejected update: the reason and a detail naming what was wrong.
#[derive(Debug, Error, Clone, PartialEq, Serialize, Deserialize)]
#[error("{reason:?}: {detail}")]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

/// What a site says about its update, apart from the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateHeader {
    pub protocol_version: u32,
    pub round: u64,
    pub num_samples: u64,
}

/// The rejection of an update for round `got` during round `expected` (stale or from the future).
pub fn round_mismatch(got: u64, expected: u64) -> Rejection {
    let when = if got < expected { "stale" } else { "future" };
    Rejection::new(RejectReason::StaleRound, format!("{when} update for round {got} during round {expected}"))
}

/// Accepts or rejects one update (full weights) against the round's global weights; see the module docs for the
/// order of checks.
pub fn validate_update(
    expected_protocol: u32,
    expected_round: u64,
    header: &UpdateHeader,
    global: &Weights,
    update: &Weights,
    policy: &ValidationPolicy,
) -> Result<(), Rejection> {
    use RejectReason as R;
    if header.protocol_version != expected_protocol {
        return Err(Rejection::new(
            R::ProtocolVersion,
            format!("protocol version {} but the server speaks {expected_protocol}", header.protocol_version),
        ));
    }
    if header.round != expected_round {
        return Err(round_mismatch(header.round, expected_round));
    }
    if header.num_samples == 0 {
        return Err(Rejection::new(R::ZeroSamples, "update claims 0 training samples"));
    }
    if let Some(max) = policy.max_samples {
        if header.num_samples > max {
            return Err(Rejection::new(
                R::SampleBound,
                format!("update claims {} samples, more than the bound {max}", header.num_samples),
            ));
        }
    }
    check_names(global, update)?;
    for (g, u) in global.tensors().iter().zip(update.tensors()) {
        if g.shape != u.shape {
            return Err(Rejection::new(
                R::WrongShape,
                format!("tensor `{}` has shape {:?}, expected {:?}", g.name, u.shape, g.shape),
            ));
        }
        if u.data.len() != g.data.len() {
            return Err(Rejection::new(
                R::Malformed,
                format!(
                    "tensor `{}` holds {} values, shape {:?} needs {}",
                    g.name,
                    u.data.len(),
                    u.shape,
                    g.data.len()
                ),
            ));
        }
    }
    if let Some(name) = update.first_non_finite() {
        return Err(Rejection::new(R::NonFinite, format!("tensor `{name}` holds NaN or infinite values")));
    }
    if let Some(bound) = policy.max_update_norm {
        let norm = update_norm(global, update);
        // A NaN bound rejects everything (fail closed) rather than accepting everything.
        if bound.is_nan() || norm.is_nan() || norm > bound {
            return Err(Rejection::new(
                R::NormBound,
                format!("‖update − global‖₂ = {norm:.6e} exceeds the bound {bound}"),
            ));
        }
    }
    Ok(())
}

/// Rejects with the first (alphabetically) missing or unexpected tensor name.
fn check_names(global: &Weights, update: &Weights) -> Result<(), Rejection> {
    let missing = |name: &str| Rejection::new(RejectReason::WrongTensors, format!("tensor `{name}` is missing"));
    let (g, u) = (global.tensors(), update.tensors());
    let (mut i, mut j) = (0, 0);
    loop {
        match (g.get(i), u.get(j)) {
            (None, None) => return Ok(()),
            (Some(a), Some(b)) if a.name == b.name => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.name < b.name => return Err(missing(&a.name)),
            (Some(a), None) => return Err(missing(&a.name)),
            (_, Some(b)) => {
                return Err(Rejection::new(RejectReason::WrongTensors, format!("unexpected tensor `{}`", b.name)));
            }
        }
    }
}

/// ‖update − global‖₂ in f64, for bundles already known to share a layout.
fn update_norm(global: &Weights, update: &Weights) -> f64 {
    update.squared_distance(global).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::weights::NamedTensor;

    const PROTO: u32 = 3;
    const ROUND: u64 = 12;

    fn model(tensors: &[(&str, Vec<usize>, f32)]) -> Weights {
        Weights::new(
            tensors
                .iter()
                .map(|(n, shape, v)| NamedTensor::new(*n, shape.clone(), vec![*v; shape.iter().product()]).unwrap())
                .collect(),
        )
        .unwrap()
    }

    fn global() -> Weights {
        model(&[("d.bias", vec![2], 0.0), ("d.weight", vec![2, 3], 0.0), ("g.weight", vec![4], 0.0)])
    }

    fn header() -> UpdateHeader {
        UpdateHeader { protocol_version: PROTO, round: ROUND, num_samples: 100 }
    }

    fn check(h: &UpdateHeader, u: &Weights, p: &ValidationPolicy) -> Result<(), Rejection> {
        validate_update(PROTO, ROUND, h, &global(), u, p)
    }

    fn reject(h: &UpdateHeader, u: &Weights, p: &ValidationPolicy) -> Rejection {
        check(h, u, p).unwrap_err()
    }

    #[test]
    fn a_good_update_passes() {
        let u = model(&[("d.bias", vec![2], 0.1), ("d.weight", vec![2, 3], -0.1), ("g.weight", vec![4], 0.2)]);
        let policy = ValidationPolicy { max_update_norm: Some(1.0), max_samples: Some(100) };
        assert_eq!(check(&header(), &u, &policy), Ok(()));
        assert_eq!(check(&header(), &u, &ValidationPolicy::default()), Ok(()));
    }

    #[test]
    fn protocol_version() {
        let r = reject(&UpdateHeader { protocol_version: 2, ..header() }, &global(), &ValidationPolicy::default());
        assert_eq!(r.reason, RejectReason::ProtocolVersion);
        assert!(r.detail.contains('2') && r.detail.contains('3'), "{}", r.detail);
        // Protocol is checked before anything else, even a wrong round and layout.
        let r = reject(
            &UpdateHeader { protocol_version: 9, round: 0, num_samples: 0 },
            &Weights::default(),
            &ValidationPolicy::default(),
        );
        assert_eq!(r.reason, RejectReason::ProtocolVersion);
    }

    #[test]
    fn stale_and_future_rounds() {
        let r = reject(&UpdateHeader { round: 11, ..header() }, &global(), &ValidationPolicy::default());
        assert_eq!(r.reason, RejectReason::StaleRound);
        assert!(r.detail.contains("round 11") && r.detail.contains("round 12"), "{}", r.detail);
        let r = reject(&UpdateHeader { round: 13, ..header() }, &global(), &ValidationPolicy::default());
        assert_eq!(r.reason, RejectReason::StaleRound);
        assert!(r.detail.contains("future") && r.detail.contains("13") && r.detail.contains("12"), "{}", r.detail);
    }

    #[test]
    fn zero_samples() {
        let r = reject(&UpdateHeader { num_samples: 0, ..header() }, &global(), &ValidationPolicy::default());
        assert_eq!(r.reason, RejectReason::ZeroSamples);
    }

    #[test]
    fn sample_bound() {
        let p = ValidationPolicy { max_samples: Some(99), ..Default::default() };
        let r = reject(&header(), &global(), &p);
        assert_eq!(r.reason, RejectReason::SampleBound);
        assert!(r.detail.contains("100") && r.detail.contains("99"), "{}", r.detail);
    }

    #[test]
    fn wrong_tensors_names_the_first_missing_or_extra() {
        let missing = model(&[("d.bias", vec![2], 0.0), ("g.weight", vec![4], 0.0)]);
        let r = reject(&header(), &missing, &ValidationPolicy::default());
        assert_eq!(r.reason, RejectReason::WrongTensors);
        assert!(r.detail.contains("`d.weight` is missing"), "{}", r.detail);
        let extra = model(&[
            ("d.bias", vec![2], 0.0),
            ("d.weight", vec![2, 3], 0.0),
            ("e.extra", vec![1], 0.0),
            ("g.weight", vec![4], 0.0),
        ]);
        let r = reject(&header(), &extra, &ValidationPolicy::default());
        assert_eq!(r.reason, RejectReason::WrongTensors);
        assert!(r.detail.contains("unexpected tensor `e.extra`"), "{}", r.detail);
        let trailing_extra = model(&[
            ("d.bias", vec![2], 0.0),
            ("d.weight", vec![2, 3], 0.0),
            ("g.weight", vec![4], 0.0),
            ("z", vec![1], 0.0),
        ]);
        assert!(reject(&header(), &trailing_extra, &ValidationPolicy::default()).detail.contains("`z`"));
        let trailing_missing = model(&[("d.bias", vec![2], 0.0), ("d.weight", vec![2, 3], 0.0)]);
        assert!(reject(&header(), &trailing_missing, &ValidationPolicy::default())
            .detail
            .contains("`g.weight` is missing"));
    }

    #[test]
    fn wrong_shape_names_tensor_and_both_shapes() {
        let u = model(&[("d.bias", vec![2], 0.0), ("d.weight", vec![3, 2], 0.0), ("g.weight", vec![4], 0.0)]);
        let r = reject(&header(), &u, &ValidationPolicy::default());
        assert_eq!(r.reason, RejectReason::WrongShape);
        assert!(
            r.detail.contains("d.weight") && r.detail.contains("[3, 2]") && r.detail.contains("[2, 3]"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn data_length_disagreeing_with_shape_is_malformed() {
        let mut u = global();
        u.tensors_mut()[2].data.push(0.0);
        let r = reject(&header(), &u, &ValidationPolicy::default());
        assert_eq!(r.reason, RejectReason::Malformed);
        assert!(r.detail.contains("g.weight"), "{}", r.detail);
    }

    #[test]
    fn non_finite_names_the_tensor() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut u = global();
            u.tensors_mut()[1].data[4] = bad;
            let r = reject(&header(), &u, &ValidationPolicy::default());
            assert_eq!(r.reason, RejectReason::NonFinite);
            assert!(r.detail.contains("d.weight"), "{}", r.detail);
        }
    }

    #[test]
    fn norm_bound_reports_norm_and_bound() {
        let mut u = global();
        u.tensors_mut()[0].data[0] = 3.0;
        u.tensors_mut()[2].data[3] = 4.0; // ‖Δ‖ = 5
        let p = ValidationPolicy { max_update_norm: Some(4.5), ..Default::default() };
        let r = reject(&header(), &u, &p);
        assert_eq!(r.reason, RejectReason::NormBound);
        assert!(r.detail.contains("5.000000e0") && r.detail.contains("4.5"), "{}", r.detail);
        let p = ValidationPolicy { max_update_norm: Some(5.0), ..Default::default() };
        assert_eq!(check(&header(), &u, &p), Ok(()));
        let p = ValidationPolicy { max_update_norm: Some(f64::NAN), ..Default::default() };
        assert_eq!(reject(&header(), &global(), &p).reason, RejectReason::NormBound);
    }

    #[test]
    fn reasons_have_unique_labels_matching_serde() {
        let mut seen = std::collections::HashSet::new();
        for r in RejectReason::ALL {
            assert!(seen.insert(r.as_str()));
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{}\"", r.as_str()));
            assert_eq!(r.to_string(), r.as_str());
        }
        let r = Rejection::new(RejectReason::Duplicate, "site-a sent twice");
        assert_eq!(r.to_string(), "Duplicate: site-a sent twice");
        assert_eq!(Rejection::new(RejectReason::UnknownSite, "x").reason.as_str(), "unknown-site");
        assert_eq!(Rejection::new(RejectReason::Malformed, "x").reason.as_str(), "malformed");
    }
}
