//! The arithmetic every strategy is made of, as plain functions over [`Weights`] (Flower's `strategy/aggregate.py`
//! is the model): layout checks, the streaming f32 fold of FedAvg and its exact twin (see the numerics note in the
//! module above), the collection of a round's updates for order statistics, a coordinate-wise reduction, and an f64
//! reference mean.

use super::api::{AggregateError, Strategy, Summation};
use crate::federation::weights::{NamedTensor, Weights};

/// Names and shapes of a model, used to check every update against the round's layout.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Layout(Vec<(String, Vec<usize>)>);

impl Layout {
    pub(super) fn of(w: &Weights) -> Self {
        Layout(w.tensors().iter().map(|t| (t.name.clone(), t.shape.clone())).collect())
    }

    /// Names the first tensor that is missing, extra, reshaped or whose data length disagrees with its shape.
    pub(super) fn check(&self, w: &Weights) -> Result<(), AggregateError> {
        let tensors = w.tensors();
        for (i, (name, shape)) in self.0.iter().enumerate() {
            let Some(t) = tensors.get(i) else {
                return Err(AggregateError::Layout(format!("tensor `{name}` is missing")));
            };
            if t.name != *name {
                return Err(if w.get(name).is_none() {
                    AggregateError::Layout(format!("tensor `{name}` is missing"))
                } else {
                    AggregateError::Layout(format!("unexpected tensor `{}`", t.name))
                });
            }
            if t.shape != *shape {
                return Err(AggregateError::Layout(format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    t.shape
                )));
            }
            if t.data.len() != shape.iter().product::<usize>() {
                return Err(AggregateError::Layout(format!(
                    "tensor `{name}` holds {} values but shape {shape:?} needs {}",
                    t.data.len(),
                    shape.iter().product::<usize>()
                )));
            }
        }
        if let Some(extra) = tensors.get(self.0.len()) {
            return Err(AggregateError::Layout(format!("unexpected tensor `{}`", extra.name)));
        }
        Ok(())
    }
}

/// Checks an update against the round's layout, adopting the update's layout if the round has none yet.
pub(super) fn check_or_adopt(layout: &mut Option<Layout>, update: &Weights) -> Result<(), AggregateError> {
    match layout {
        Some(l) => l.check(update),
        None => {
            let l = Layout::of(update);
            l.check(update)?;
            *layout = Some(l);
            Ok(())
        }
    }
}

/// `m ← m + c·(x − m)`, over contiguous slices so that it auto-vectorizes.
#[inline]
pub(super) fn fold1(m: &mut [f32], x: &[f32], c: f32) {
    for (m, &x) in m.iter_mut().zip(x) {
        let mv = *m;
        *m = mv + c * (x - mv);
    }
}

/// `m ← m + c₁·(x − m) + c₂·(y − m)`: two updates per pass, so each value of the mean is read and written once per
/// two updates.
#[inline]
pub(super) fn fold2(m: &mut [f32], x: &[f32], y: &[f32], c1: f32, c2: f32) {
    for ((m, &x), &y) in m.iter_mut().zip(x).zip(y) {
        let mv = *m;
        *m = mv + c1 * (x - mv) + c2 * (y - mv);
    }
}

/// Streaming sample-weighted mean: FedAvg's (and FedProx's) aggregation.
///
/// Holds the running mean (the first update's buffer, reused), the total sample count, and at most one pending
/// update so that folds go two at a time.
#[derive(Debug, Default)]
pub(super) struct StreamingMean {
    layout: Option<Layout>,
    mean: Option<Weights>,
    /// Samples folded into `mean` so far (u128: a sum of u64 counts cannot overflow).
    total: u128,
    pending: Option<(Weights, u64)>,
    count: usize,
}

impl StreamingMean {
    /// Updates folded so far this round.
    pub(super) fn count(&self) -> usize {
        self.count
    }

    pub(super) fn begin(&mut self, global: &Weights) {
        *self = StreamingMean { layout: Some(Layout::of(global)), ..StreamingMean::default() };
    }

    pub(super) fn push(&mut self, update: Weights, n: u64) -> Result<(), AggregateError> {
        check_or_adopt(&mut self.layout, &update)?;
        self.count += 1;
        if self.mean.is_none() {
            self.mean = Some(update);
            self.total = u128::from(n);
        } else if let Some((x, nx)) = self.pending.take() {
            self.fold_pair(&x, nx, &update, n);
        } else {
            self.pending = Some((update, n));
        }
        Ok(())
    }

    pub(super) fn fold_pair(&mut self, x: &Weights, nx: u64, y: &Weights, ny: u64) {
        let Some(mean) = self.mean.as_mut() else { return };
        let new_total = self.total + u128::from(nx) + u128::from(ny);
        if new_total == 0 {
            return;
        }
        // u128 → f64 is exact up to 2^53 samples and then off by < 1 ulp, which is harmless for a weight.
        let c1 = (nx as f64 / new_total as f64) as f32;
        let c2 = (ny as f64 / new_total as f64) as f32;
        for ((m, a), b) in mean.tensors_mut().iter_mut().zip(x.tensors()).zip(y.tensors()) {
            fold2(&mut m.data, &a.data, &b.data, c1, c2);
        }
        self.total = new_total;
    }

    pub(super) fn fold_one(&mut self, x: &Weights, nx: u64) {
        let Some(mean) = self.mean.as_mut() else { return };
        let new_total = self.total + u128::from(nx);
        if new_total == 0 {
            return;
        }
        let c = (nx as f64 / new_total as f64) as f32;
        for (m, a) in mean.tensors_mut().iter_mut().zip(x.tensors()) {
            fold1(&mut m.data, &a.data, c);
        }
        self.total = new_total;
    }

    pub(super) fn finish(&mut self) -> Result<Weights, AggregateError> {
        let layout = self.layout.clone();
        let mut state = std::mem::take(self);
        // Keep the round's layout so that a strategy reused without `begin_round` still checks updates.
        self.layout = layout;
        if let Some((x, nx)) = state.pending.take() {
            state.fold_one(&x, nx);
        }
        let mean = state.mean.take().ok_or(AggregateError::NoUpdates)?;
        if state.total == 0 {
            return Err(AggregateError::ZeroSamples);
        }
        if let Some(bad) = mean.first_non_finite() {
            return Err(AggregateError::NonFinite(bad.to_string()));
        }
        Ok(mean)
    }
}

/// Binary digits after the point of [`ExactMean`]'s fixed-point grid: every `n·x` is kept in units of 2⁻⁷².
/// Why 72: values down to 2⁻⁴⁹ ≈ 1.8e-15 keep all 24 bits of their f32 mantissa (a consensus stays bit-exact), and
/// an i128 then holds sums with `Σ nᵢ·max|xᵢ|` up to [`MEAN_RANGE`] = 2⁵⁴ ≈ 1.8e16 (a billion samples of weights up
/// to 10⁷), far past any model's weights.
const FRAC_BITS: i32 = 72;

/// The largest `Σ nᵢ·max|xᵢ|` (real units) an i128 on the [`FRAC_BITS`] grid holds: 2¹²⁶ / 2⁷².
const MEAN_RANGE: f64 = (1u64 << (126 - FRAC_BITS)) as f64;

/// 2^FRAC_BITS, 2^63 and 2^64, as f64 (exact powers of two).
const GRID: f64 = f64::from_bits(((1023 + FRAC_BITS) as u64) << 52);
const HALF_WORD: f64 = f64::from_bits((1023 + 63) << 52);
const WORD: f64 = f64::from_bits((1023 + 64) << 52);

/// `x` times `weight` (= n·2^FRAC_BITS) on the fixed-point grid, truncated toward zero: a pure function of `x` and
/// `n`, so the same term always lands on the same integer. Exact while n < 2^29 (24 bits of mantissa times 29 fit
/// an f64's 53); a larger count rounds the product once, the same way every time. The caller guarantees that `x` is
/// finite and `|x|·n < MEAN_RANGE`, so the product is below 2^126.
#[inline]
fn fixed_term(x: f32, weight: f64) -> i128 {
    let y = f64::from(x) * weight;
    // Two exact halves that convert with the machine's f64 → i64 instruction (an f64 → i128 cast is a slow
    // library call): y = hi·2^63 + lo with |lo| < 2^63 and lo of y's sign, so truncating lo truncates y.
    let hi = (y * (1.0 / HALF_WORD)) as i64;
    let lo = (y - hi as f64 * HALF_WORD) as i64;
    (i128::from(hi) << 63).wrapping_add(i128::from(lo))
}

/// `s` as f64 from its two 64-bit halves (an i128 → f64 cast is a slow library call): exact below 2^53, within an
/// ulp above.
#[inline]
fn to_f64(s: i128) -> f64 {
    let m = s.unsigned_abs();
    let v = (m >> 64) as u64 as f64 * WORD + m as u64 as f64;
    if s < 0 {
        -v
    } else {
        v
    }
}

/// Streaming sample-weighted mean, exact and independent of arrival order (`federation.summation = "exact"`).
///
/// Each update is folded in as it arrives into one i128 per value, `Σ nᵢ·xᵢ` in units of 2⁻[`FRAC_BITS`]: every
/// term is a pure function of `(xᵢ, nᵢ)` and integer addition is associative, so the mean does not depend on which
/// site's update came first (a float running mean does, in its last bits, and one bit is enough to make a GAN
/// federation's later rounds diverge). Memory: 16 bytes per value for the round, no copy of any update; time: the
/// i128 read and write per value make it several times slower than [`StreamingMean`]'s memory-bound fold.
#[derive(Debug, Default)]
pub(super) struct ExactMean {
    layout: Option<Layout>,
    /// One accumulator per tensor of the layout, allocated by the first update.
    sums: Vec<Vec<i128>>,
    /// Samples folded in so far (u128: a sum of u64 counts cannot overflow).
    total: u128,
    /// An upper bound of every `|Σ nᵢ·xᵢ|` so far, `Σ nᵢ·max|xᵢ|`, checked against [`MEAN_RANGE`] before a fold.
    magnitude: f64,
    count: usize,
}

impl ExactMean {
    /// Updates folded so far this round.
    pub(super) fn count(&self) -> usize {
        self.count
    }

    pub(super) fn begin(&mut self, global: &Weights) {
        *self = ExactMean { layout: Some(Layout::of(global)), ..ExactMean::default() };
    }

    /// Folds one update of `n` samples in. A refused update (wrong layout, a value that is not finite, or values too
    /// large for the accumulator) leaves the round's state as it was.
    pub(super) fn push(&mut self, update: Weights, n: u64) -> Result<(), AggregateError> {
        check_or_adopt(&mut self.layout, &update)?;
        // The largest |value| by its bits (sign cleared, the order of non-negative floats is that of their bits): an
        // integer max vectorizes, and every NaN or infinity has bits at or above +∞'s.
        let mut largest_bits = 0u32;
        for t in update.tensors() {
            let bits = t.data.iter().fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff));
            if bits >= f32::INFINITY.to_bits() {
                return Err(AggregateError::NonFinite(t.name.clone()));
            }
            largest_bits = largest_bits.max(bits);
        }
        let largest = f32::from_bits(largest_bits);
        let magnitude = self.magnitude + f64::from(largest) * n as f64;
        if magnitude >= MEAN_RANGE {
            return Err(AggregateError::OutOfRange { largest, samples: self.total + u128::from(n) });
        }
        if self.sums.is_empty() {
            self.sums = update.tensors().iter().map(|t| vec![0i128; t.data.len()]).collect();
        }
        let weight = n as f64 * GRID;
        for (sum, t) in self.sums.iter_mut().zip(update.tensors()) {
            for (s, &v) in sum.iter_mut().zip(&t.data) {
                // Every |term| ≤ |v|·n·2^FRAC_BITS and the sum of those stays below 2^126: no overflow.
                *s = s.wrapping_add(fixed_term(v, weight));
            }
        }
        self.magnitude = magnitude;
        self.total += u128::from(n);
        self.count += 1;
        Ok(())
    }

    pub(super) fn finish(&mut self) -> Result<Weights, AggregateError> {
        let layout = self.layout.clone();
        let state = std::mem::take(self);
        // Keep the round's layout so that a strategy reused without `begin_round` still checks updates.
        self.layout = layout;
        if state.count == 0 {
            return Err(AggregateError::NoUpdates);
        }
        if state.total == 0 {
            return Err(AggregateError::ZeroSamples);
        }
        let Some(Layout(names)) = state.layout else {
            return Err(AggregateError::NoUpdates);
        };
        // u128 → f64 is exact up to 2^53 samples; the division and the scaling round once each, the f32 once more.
        let total = state.total as f64;
        let mut out = Vec::with_capacity(names.len());
        for ((name, shape), sum) in names.into_iter().zip(state.sums) {
            // From a borrowed slice: collecting the i128 vector in place would shrink its buffer by a copy.
            let data = sum.iter().map(|&s| (to_f64(s) / total / GRID) as f32).collect();
            out.push(NamedTensor { name, shape, data });
        }
        Weights::new(out).map_err(|e| AggregateError::Layout(e.to_string()))
    }
}

/// The sample-weighted mean of FedAvg and FedProx, in the arithmetic the federation asked for.
#[derive(Debug)]
pub(super) enum Mean {
    Fast(StreamingMean),
    Exact(ExactMean),
}

impl Mean {
    pub(super) fn new(summation: Summation) -> Self {
        match summation {
            Summation::Fast => Mean::Fast(StreamingMean::default()),
            Summation::Exact => Mean::Exact(ExactMean::default()),
        }
    }

    pub(super) fn count(&self) -> usize {
        match self {
            Mean::Fast(m) => m.count(),
            Mean::Exact(m) => m.count(),
        }
    }

    pub(super) fn begin(&mut self, global: &Weights) {
        match self {
            Mean::Fast(m) => m.begin(global),
            Mean::Exact(m) => m.begin(global),
        }
    }

    pub(super) fn push(&mut self, update: Weights, n: u64) -> Result<(), AggregateError> {
        match self {
            Mean::Fast(m) => m.push(update, n),
            Mean::Exact(m) => m.push(update, n),
        }
    }

    pub(super) fn finish(&mut self) -> Result<Weights, AggregateError> {
        match self {
            Mean::Fast(m) => m.finish(),
            Mean::Exact(m) => m.finish(),
        }
    }
}

/// All of a round's updates, for strategies that need order statistics or pairwise distances.
#[derive(Debug, Default)]
struct Collected {
    layout: Option<Layout>,
    updates: Vec<Weights>,
}

impl Collected {
    /// Updates collected so far this round.
    fn len(&self) -> usize {
        self.updates.len()
    }

    fn begin(&mut self, global: &Weights) {
        *self = Collected { layout: Some(Layout::of(global)), updates: Vec::new() };
    }

    fn push(&mut self, update: Weights) -> Result<(), AggregateError> {
        check_or_adopt(&mut self.layout, &update)?;
        self.updates.push(update);
        Ok(())
    }

    /// Takes the round's updates out, leaving the layout for the next round.
    fn take(&mut self) -> Result<Vec<Weights>, AggregateError> {
        let updates = std::mem::take(&mut self.updates);
        if updates.is_empty() {
            Err(AggregateError::NoUpdates)
        } else {
            Ok(updates)
        }
    }
}

/// A rule that needs every update of the round at once (order statistics, pairwise distances), unweighted so that
/// a site's sample count cannot buy it influence: combining the round's updates is all such a rule does, and
/// [`Collecting`] makes it a [`Strategy`].
pub trait Combine: Send {
    fn name(&self) -> &'static str;
    /// The new global weights from all of the round's updates (at least one; all of the round's layout).
    fn combine(&self, updates: Vec<Weights>) -> Result<Weights, AggregateError>;
}

/// A [`Combine`] rule as a [`Strategy`]: it keeps the round's updates (O(K·P) memory) and combines them at the end.
#[derive(Debug, Default)]
pub struct Collecting<R> {
    rule: R,
    collected: Collected,
}

impl<R: Combine> Collecting<R> {
    pub fn new(rule: R) -> Self {
        Self { rule, collected: Collected::default() }
    }
}

impl<R: Combine> Strategy for Collecting<R> {
    fn name(&self) -> &'static str {
        self.rule.name()
    }
    fn begin_round(&mut self, global: &Weights) {
        self.collected.begin(global);
    }
    fn accumulate(&mut self, update: Weights, _num_samples: u64) -> Result<(), AggregateError> {
        self.collected.push(update)
    }
    fn count(&self) -> usize {
        self.collected.len()
    }
    fn finish(&mut self) -> Result<Weights, AggregateError> {
        self.rule.combine(self.collected.take()?)
    }
}

/// Applies `reduce` to the K values at every coordinate; the result has the updates' layout.
pub(super) fn coordinate_wise(
    updates: Vec<Weights>,
    mut reduce: impl FnMut(&mut [f32]) -> f32,
) -> Result<Weights, AggregateError> {
    let mut column = vec![0.0f32; updates.len()];
    let mut iter = updates.into_iter();
    let Some(mut out) = iter.next() else {
        return Err(AggregateError::NoUpdates);
    };
    let rest: Vec<Weights> = iter.collect();
    for (t, tensor) in out.tensors_mut().iter_mut().enumerate() {
        for i in 0..tensor.data.len() {
            column[0] = tensor.data[i];
            for (slot, w) in column[1..].iter_mut().zip(&rest) {
                *slot = w.tensors()[t].data[i];
            }
            tensor.data[i] = reduce(&mut column);
        }
    }
    Ok(out)
}

/// Sample-weighted mean of borrowed updates, accumulated in f64 (for evaluators and as a reference in tests).
pub fn weighted_mean(updates: &[(&Weights, u64)]) -> Result<Weights, AggregateError> {
    let Some(&(first, _)) = updates.first() else {
        return Err(AggregateError::NoUpdates);
    };
    let layout = Layout::of(first);
    for (w, _) in updates {
        layout.check(w)?;
    }
    let total: u128 = updates.iter().map(|&(_, n)| u128::from(n)).sum();
    if total == 0 {
        return Err(AggregateError::ZeroSamples);
    }
    let total = total as f64;
    let mut out = Vec::with_capacity(first.tensors().len());
    for (t, proto) in first.tensors().iter().enumerate() {
        let mut acc = vec![0.0f64; proto.data.len()];
        for &(w, n) in updates {
            let scale = n as f64 / total;
            for (a, &v) in acc.iter_mut().zip(&w.tensors()[t].data) {
                *a += scale * f64::from(v);
            }
        }
        let data: Vec<f32> = acc.into_iter().map(|v| v as f32).collect();
        if data.iter().any(|v| !v.is_finite()) {
            return Err(AggregateError::NonFinite(proto.name.clone()));
        }
        out.push(NamedTensor { name: proto.name.clone(), shape: proto.shape.clone(), data });
    }
    Weights::new(out).map_err(|e| AggregateError::Layout(e.to_string()))
}
