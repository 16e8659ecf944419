//! Between model weights and the protocol: what a site feeds into its masked input, and how the server turns the
//! unmasked sum into the next global model.
//!
//! Why deltas and weights this way: a site masks Δᵢ·wᵢ (its update minus the round's global weights, times its
//! share of the round's samples), so the only thing the server ever learns is Σ wᵢΔᵢ over the survivors; it knows
//! the survivors and their weights, so it divides by Σ wᵢ and the result is FedAvg's sample-weighted mean of the
//! survivors' updates, to quantization precision. Deltas, not weights, because they are small and centred: a clip
//! range sized for them keeps the quantization step fine.

use super::SecAggError;
use crate::federation::weights::Weights;

fn layout(e: impl std::fmt::Display) -> SecAggError {
    SecAggError::Refused(format!("weights do not match the round's global model: {e}"))
}

/// A site's input to the protocol: `update − global`, flattened in the bundle's tensor order (names sorted).
pub fn delta_values(update: &Weights, global: &Weights) -> Result<Vec<f32>, SecAggError> {
    update.check_same_layout(global).map_err(layout)?;
    let mut out = Vec::with_capacity(global.num_values());
    for (u, g) in update.tensors().iter().zip(global.tensors()) {
        out.extend(u.data.iter().zip(&g.data).map(|(a, b)| a - b));
    }
    Ok(out)
}

/// The next global model from the unmasked sum Σ wᵢΔᵢ of the survivors and their total weight Σ wᵢ:
/// `global + sum / total_weight`. Refuses a sum of the wrong length, a non-finite value, or (with `max_norm`) a
/// mean update longer than it — the checks the server can still make on what it cannot see one by one.
pub fn apply_sum(
    global: &Weights,
    sum: &[f32],
    total_weight: f64,
    max_norm: Option<f64>,
) -> Result<Weights, SecAggError> {
    if sum.len() != global.num_values() {
        return Err(SecAggError::Length { site: u32::MAX, got: sum.len(), want: global.num_values() });
    }
    if !(total_weight.is_finite() && total_weight > 0.0) {
        return Err(SecAggError::Refused(format!("total weight {total_weight} of the survivors must be positive")));
    }
    if let Some(i) = sum.iter().position(|v| !v.is_finite()) {
        return Err(SecAggError::Refused(format!("the unmasked sum has a non-finite value at {i}")));
    }
    let norm = sum.iter().map(|&v| (f64::from(v) / total_weight).powi(2)).sum::<f64>().sqrt();
    if let Some(max) = max_norm.filter(|&m| norm > m) {
        return Err(SecAggError::Refused(format!("the mean update is {norm:.4} long, over the bound {max}")));
    }
    let mut next = global.clone();
    let mut at = 0;
    for t in next.tensors_mut() {
        for v in t.data.iter_mut() {
            *v = (f64::from(*v) + f64::from(sum[at]) / total_weight) as f32;
            at += 1;
        }
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::super::{SecAggParams, SecureRound, SiteRound};
    use super::*;
    use crate::federation::secagg::Next;
    use crate::federation::weights::NamedTensor;

    fn bundle(seed: u32, scale: f32) -> Weights {
        let vals = |n: usize, k: u32| (0..n).map(move |i| ((i as f32 + 1.0) * 0.37 * (k as f32 + 1.3)).sin() * scale);
        Weights::new(vec![
            NamedTensor::new("a.weight", vec![3, 4], vals(12, seed).collect()).unwrap(),
            NamedTensor::new("b.bias", vec![5], vals(5, seed + 7).collect()).unwrap(),
        ])
        .unwrap()
    }

    /// Three sites with different sample counts through the driver and the real protocol, one of them dropping
    /// after sharing: the new global equals FedAvg of the two survivors' weights, to quantization precision.
    #[test]
    fn the_unmasked_sum_folds_into_fedavg_of_the_survivors() {
        let global = bundle(0, 0.5);
        // Each site's update: the global weights moved by up to 0.1 per value.
        let moved = |seed: u32| {
            let mut w = global.clone();
            for (t, d) in w.tensors_mut().iter_mut().zip(bundle(seed, 0.1).tensors()) {
                t.data.iter_mut().zip(&d.data).for_each(|(v, dv)| *v += dv);
            }
            w
        };
        let updates: Vec<(u32, Weights, f64)> = vec![
            (0, moved(1), 100.0),
            (1, moved(2), 300.0),
            (2, moved(3), 50.0), // hangs after sharing
        ];
        let total: f64 = updates.iter().map(|u| u.2).sum();
        let ids = [0, 1, 2];
        let params = SecAggParams::new(4, &ids, 0.2).unwrap();
        let mut driver = SecureRound::new(params.clone(), global.num_values(), 2).unwrap();
        let mut sites: Vec<SiteRound> = Vec::new();
        let mut next = Next::Wait;
        for &i in &ids {
            let (s, adv) = SiteRound::new(params.clone(), i).unwrap();
            sites.push(s);
            next = driver.on_advert(adv).unwrap();
        }
        let Next::Roster(roster) = std::mem::replace(&mut next, Next::Wait) else { panic!("no roster") };
        for (i, adverts) in roster {
            next = driver.on_shares(i, sites[i as usize].share(&adverts).unwrap()).unwrap();
        }
        let Next::Shares(routed) = std::mem::replace(&mut next, Next::Wait) else { panic!("no shares") };
        for (i, sealed) in routed {
            sites[i as usize].receive(&sealed).unwrap();
            let (_, update, n) = &updates[i as usize];
            let delta = delta_values(update, &global).unwrap();
            let (masked, clipped) = sites[i as usize].mask(&delta, (n / total) as f32).unwrap();
            assert_eq!(clipped, 0);
            if i != 2 {
                next = driver.on_masked(masked).unwrap();
            }
        }
        assert_eq!(next, Next::Wait, "still waiting for site 2");
        let Next::Reveal(req) = driver.on_deadline(super::super::Stage::Mask) else { panic!("the deadline closes") };
        for &i in &req.survivors {
            next = driver.on_reveal(i, sites[i as usize].unmask(&req).unwrap()).unwrap();
        }
        assert_eq!(next, Next::Unmask);
        let unmasked = driver.finish().unwrap();
        let survivors_weight: f64 = unmasked.survivors.iter().map(|&i| updates[i as usize].2 / total).sum();
        let folded = apply_sum(&global, &unmasked.sum, survivors_weight, Some(10.0)).unwrap();
        // FedAvg of the survivors (0 and 1), sample-weighted.
        let (w0, w1) = (updates[0].2 / 400.0, updates[1].2 / 400.0);
        let step = 2.0 * 0.2 / f64::from((1u32 << params.quant_bits) - 1);
        for ((f, a), b) in folded.tensors().iter().zip(updates[0].1.tensors()).zip(updates[1].1.tensors()) {
            for ((&got, &x), &y) in f.data.iter().zip(&a.data).zip(&b.data) {
                let want = w0 * f64::from(x) + w1 * f64::from(y);
                assert!((f64::from(got) - want).abs() < 4.0 * step / survivors_weight, "{} {got} {want}", f.name);
            }
        }
    }

    #[test]
    fn what_the_server_cannot_fold_is_refused() {
        let global = bundle(0, 0.5);
        let n = global.num_values();
        assert!(delta_values(&bundle(1, 0.5), &global).is_ok());
        let other = Weights::new(vec![NamedTensor::new("a.weight", vec![2], vec![0.0, 1.0]).unwrap()]).unwrap();
        assert!(delta_values(&other, &global).is_err(), "a layout mismatch");
        assert!(matches!(apply_sum(&global, &vec![0.0; n - 1], 1.0, None), Err(SecAggError::Length { .. })));
        let mut nan = vec![0.0; n];
        nan[3] = f32::NAN;
        assert!(apply_sum(&global, &nan, 1.0, None).is_err(), "a non-finite sum");
        assert!(apply_sum(&global, &vec![0.0; n], 0.0, None).is_err(), "no weight");
        assert!(apply_sum(&global, &vec![1.0; n], 1.0, Some(1.0)).is_err(), "a mean update over the bound");
        assert_eq!(apply_sum(&global, &vec![0.0; n], 1.0, Some(1.0)).unwrap(), global);
    }
}
