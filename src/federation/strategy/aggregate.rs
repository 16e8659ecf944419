//! The arithmetic every strategy is made of, as plain functions over [`Weights`] (Flower's `strategy/aggregate.py`
//! is the model): layout checks, the streaming f32 fold of FedAvg (see the numerics note in the module above), the
//! collection of a round's updates for order statistics, a coordinate-wise reduction, and an f64 reference mean.

use super::api::{AggregateError, Strategy};
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
