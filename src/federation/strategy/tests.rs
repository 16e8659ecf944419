use super::aggregate::*;
use super::*;
use crate::federation::weights::{NamedTensor, Weights};

fn w(values: &[(&str, Vec<f32>)]) -> Weights {
    Weights::new(values.iter().map(|(n, d)| NamedTensor::new(*n, vec![d.len()], d.clone()).unwrap()).collect()).unwrap()
}

fn one(d: Vec<f32>) -> Weights {
    w(&[("layer.weight", d)])
}

fn run(strategy: &mut dyn Strategy, global: &Weights, updates: Vec<(Weights, u64)>) -> Result<Weights, AggregateError> {
    strategy.begin_round(global);
    for (u, n) in updates {
        strategy.accumulate(u, n)?;
    }
    strategy.finish()
}

/// Deterministic pseudo-random values in [-1, 1) (xorshift), so tests need no RNG crate features.
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn fedavg_is_exact_on_known_inputs() {
    let g = one(vec![0.0, 0.0]);
    let mut s = FedAvg::new();
    let out = run(&mut s, &g, vec![(one(vec![1.0, 2.0]), 1), (one(vec![4.0, 8.0]), 3)]).unwrap();
    assert_eq!(out, one(vec![3.25, 6.5]));
    assert_eq!(weighted_mean(&[(&one(vec![1.0, 2.0]), 1), (&one(vec![4.0, 8.0]), 3)]).unwrap(), out);
}

#[test]
fn fedavg_counts_and_resets_between_rounds() {
    let g = one(vec![0.0]);
    let mut s = FedAvg::new();
    s.begin_round(&g);
    for (v, n) in [(1.0, 1), (2.0, 1), (3.0, 1), (6.0, 1), (7.0, 4)] {
        s.accumulate(one(vec![v]), n).unwrap();
    }
    assert_eq!(s.count(), 5);
    let mean = s.finish().unwrap().tensors()[0].data[0];
    assert!((mean - 5.0).abs() < 1e-6, "{mean}");
    assert_eq!(s.count(), 0);
    assert_eq!(s.finish(), Err(AggregateError::NoUpdates));
    let out = run(&mut s, &g, vec![(one(vec![7.0]), 2)]).unwrap();
    assert_eq!(out, one(vec![7.0]));
}

#[test]
fn fedavg_matches_f64_reference_within_documented_error() {
    let g = w(&[("a", vec![0.0; 1000]), ("b", vec![0.0; 17])]);
    for k in [1usize, 2, 3, 8, 33] {
        let updates: Vec<(Weights, u64)> = (0..k)
            .map(|i| (w(&[("a", noise(i as u64 * 2 + 1, 1000)), ("b", noise(i as u64 * 2 + 2, 17))]), 1 + i as u64 * 7))
            .collect();
        let reference = weighted_mean(&updates.iter().map(|(u, n)| (u, *n)).collect::<Vec<_>>()).unwrap();
        // max |x| is 1. The f32 fold: a few ulps per fold; the exact sum rounds once to f32 (after two f64
        // roundings far below it), as the f64 reference does.
        for (summation, bound) in [(Summation::Fast, k as f32 * 4.0 * f32::EPSILON), (Summation::Exact, f32::EPSILON)] {
            let got = run(&mut FedAvg::with(summation, None), &g, updates.clone()).unwrap();
            for (a, b) in got.tensors().iter().zip(reference.tensors()) {
                for (x, y) in a.data.iter().zip(&b.data) {
                    assert!((x - y).abs() <= bound, "{summation:?}, k={k}: {x} vs {y}");
                }
            }
        }
    }
}

#[test]
fn fedavg_keeps_consensus_bit_exact() {
    let v = noise(5, 257);
    let g = one(vec![0.0; 257]);
    let updates = (0..7).map(|i| (one(v.clone()), 3 + i)).collect();
    assert_eq!(run(&mut FedAvg::new(), &g, updates).unwrap(), one(v));
}

fn exact() -> FedAvg {
    FedAvg::with(Summation::Exact, None)
}

#[test]
fn the_strategies_with_a_mean_take_the_summation_they_are_built_with() {
    let g = one(vec![0.0; 64]);
    let ups: Vec<(Weights, u64)> = (0..4u64)
        .map(|i| (one(noise(i + 3, 64).iter().map(|v| v * 1e3f32.powi(i as i32 % 3 - 1)).collect()), 1 + i))
        .collect();
    let reversed: Vec<(Weights, u64)> = ups.iter().rev().cloned().collect();
    for name in ["fedavg", "fedprox:0.01", "fedavgm:1.0:0.0", "fedadam:0.1:0.001"] {
        let cfg: StrategyConfig = name.parse().unwrap();
        let a = run(cfg.build_with(Summation::Exact).unwrap().as_mut(), &g, ups.clone()).unwrap();
        let b = run(cfg.build_with(Summation::Exact).unwrap().as_mut(), &g, reversed.clone()).unwrap();
        assert_eq!(a, b, "{name}");
    }
}

#[test]
fn exact_fedavg_does_not_depend_on_the_order_updates_arrive_in() {
    let g = w(&[("a", vec![0.0; 4096]), ("b", vec![0.0; 3])]);
    let updates: Vec<(Weights, u64)> = (0..5u64)
        .map(|i| {
            // Values of very different sizes per update, so float sums of them round differently per order.
            let scale = [1.0f32, 1e-3, 3e2, 7e-6, 1.5][i as usize];
            let a = noise(i + 11, 4096).into_iter().map(|v| v * scale).collect();
            (w(&[("a", a), ("b", noise(i + 40, 3))]), 1 + 13 * i)
        })
        .collect();
    // The test can fail: a float running sum of these values in two orders differs somewhere.
    let float_sum = |order: &[usize]| -> Vec<f32> {
        let mut m = vec![0.0f32; 4096];
        for &i in order {
            let (u, n) = &updates[i];
            for (m, &x) in m.iter_mut().zip(&u.tensors()[0].data) {
                *m += x * *n as f32;
            }
        }
        m
    };
    assert_ne!(float_sum(&[0, 1, 2, 3, 4]), float_sum(&[4, 2, 0, 3, 1]));
    let first = run(&mut exact(), &g, updates.clone()).unwrap();
    for order in [[4, 2, 0, 3, 1], [1, 0, 3, 4, 2], [3, 4, 1, 2, 0], [2, 3, 4, 0, 1]] {
        let shuffled = order.iter().map(|&i| updates[i].clone()).collect();
        assert_eq!(run(&mut exact(), &g, shuffled).unwrap(), first, "order {order:?}");
    }
}

#[test]
fn exact_fedavg_refuses_an_update_it_cannot_sum_and_keeps_the_round() {
    let g = one(vec![0.0, 0.0]);
    let mut s = exact();
    s.begin_round(&g);
    s.accumulate(one(vec![1.0, -2.0]), 3).unwrap();
    let err = s.accumulate(one(vec![1e20, 0.0]), 5).unwrap_err();
    assert!(matches!(err, AggregateError::OutOfRange { samples: 8, .. }), "{err}");
    assert!(err.to_string().contains("2^54"), "{err}");
    assert_eq!(s.accumulate(one(vec![f32::NAN, 0.0]), 5), Err(AggregateError::NonFinite("layer.weight".into())));
    assert_eq!(s.count(), 1);
    s.accumulate(one(vec![3.0, 2.0]), 1).unwrap();
    assert_eq!(s.finish().unwrap(), one(vec![1.5, -1.0]));
}

#[test]
fn exact_fedavg_keeps_small_values_bit_exact_and_rounds_below_the_grid_toward_zero() {
    // Down to 2^-49 every f32 sits on the 2^-72 grid with its whole mantissa.
    let small = vec![1.8e-15f32, -3.3e-12, 2.5e-9, f32::MIN_POSITIVE * 2f32.powi(80)];
    let g = one(vec![0.0; 4]);
    let consensus = run(&mut exact(), &g, vec![(one(small.clone()), 3), (one(small.clone()), 9)]).unwrap();
    assert_eq!(consensus, one(small));
    // Below the grid a value truncates: 1e-30 is 0 on it, never a different non-zero number.
    let tiny = run(&mut exact(), &one(vec![0.0]), vec![(one(vec![1e-30]), 1), (one(vec![1e-30]), 1)]).unwrap();
    assert_eq!(tiny, one(vec![0.0]));
}

#[test]
fn fedavg_zero_samples_is_an_error() {
    let g = one(vec![0.0]);
    assert_eq!(
        run(&mut FedAvg::new(), &g, vec![(one(vec![1.0]), 0), (one(vec![2.0]), 0), (one(vec![3.0]), 0)]),
        Err(AggregateError::ZeroSamples)
    );
    // A zero-sample update carries no weight when others have samples.
    assert_eq!(run(&mut FedAvg::new(), &g, vec![(one(vec![100.0]), 0), (one(vec![2.0]), 5)]).unwrap(), one(vec![2.0]));
    assert_eq!(weighted_mean(&[(&one(vec![1.0]), 0)]), Err(AggregateError::ZeroSamples));
    assert_eq!(weighted_mean(&[]), Err(AggregateError::NoUpdates));
}

#[test]
fn layout_mismatch_names_the_tensor() {
    let g = w(&[("conv.bias", vec![0.0; 2]), ("conv.weight", vec![0.0; 4])]);
    let mut s = FedAvg::new();
    s.begin_round(&g);
    let reshaped = w(&[("conv.bias", vec![0.0; 3]), ("conv.weight", vec![0.0; 4])]);
    match s.accumulate(reshaped, 1) {
        Err(AggregateError::Layout(msg)) => assert!(msg.contains("conv.bias"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let missing = w(&[("conv.weight", vec![0.0; 4])]);
    match s.accumulate(missing, 1) {
        Err(AggregateError::Layout(msg)) => assert!(msg.contains("`conv.bias` is missing"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let extra = w(&[("conv.bias", vec![0.0; 2]), ("conv.weight", vec![0.0; 4]), ("fc.bias", vec![0.0])]);
    match s.accumulate(extra, 1) {
        Err(AggregateError::Layout(msg)) => assert!(msg.contains("`fc.bias`"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let mut bad_len = w(&[("conv.bias", vec![0.0; 2]), ("conv.weight", vec![0.0; 4])]);
    bad_len.tensors_mut()[1].data.pop();
    assert!(matches!(s.accumulate(bad_len, 1), Err(AggregateError::Layout(m)) if m.contains("conv.weight")));
    assert_eq!(s.count(), 0);
    let mut median = Collecting::new(FedMedian);
    median.begin_round(&g);
    assert!(matches!(median.accumulate(one(vec![0.0]), 1), Err(AggregateError::Layout(m)) if m.contains("conv.bias")));
    assert!(matches!(
        weighted_mean(&[(&g, 1), (&one(vec![1.0]), 1)]),
        Err(AggregateError::Layout(m)) if m.contains("conv.bias")
    ));
}

#[test]
fn fedprox_aggregates_like_fedavg_and_hints_mu() {
    let s = StrategyConfig::FedProx { mu: 0.01 }.build().unwrap();
    assert_eq!(s.site_hints(), SiteHints { proximal_mu: Some(0.01), dp_clip_norm: None });
    assert_eq!(s.name(), "fedprox");
    assert_eq!(FedAvg::new().site_hints(), SiteHints::default());
    let mut s = s;
    let g = one(vec![0.0, 0.0]);
    let out = run(s.as_mut(), &g, vec![(one(vec![1.0, 2.0]), 1), (one(vec![4.0, 8.0]), 3)]).unwrap();
    assert_eq!(out, one(vec![3.25, 6.5]));
}

#[test]
fn median_of_three_known_updates() {
    let g = w(&[("a", vec![0.0; 3]), ("b", vec![0.0])]);
    let updates = vec![
        (w(&[("a", vec![1.0, 9.0, -1.0]), ("b", vec![5.0])]), 10),
        (w(&[("a", vec![2.0, 3.0, -5.0]), ("b", vec![1.0])]), 1),
        (w(&[("a", vec![100.0, 4.0, 0.0]), ("b", vec![3.0])]), 1),
    ];
    let out = run(&mut Collecting::new(FedMedian), &g, updates).unwrap();
    assert_eq!(out, w(&[("a", vec![2.0, 4.0, -1.0]), ("b", vec![3.0])]));
    let even = run(&mut Collecting::new(FedMedian), &one(vec![0.0]), vec![(one(vec![1.0]), 1), (one(vec![4.0]), 1)]);
    assert_eq!(even.unwrap(), one(vec![2.5]));
}

#[test]
fn trimmed_mean_drops_an_outlier() {
    let g = one(vec![0.0, 0.0]);
    let updates = vec![
        (one(vec![1.0, 10.0]), 1),
        (one(vec![2.0, 20.0]), 1),
        (one(vec![3.0, 30.0]), 1),
        (one(vec![1e6, -1e6]), 1),
        (one(vec![2.0, 20.0]), 1),
    ];
    let mut s = StrategyConfig::TrimmedMean { beta: 0.2 }.build().unwrap();
    let out = run(s.as_mut(), &g, updates).unwrap();
    // column 0 sorted: 1 2 2 3 1e6 → keep 2 2 3; column 1: -1e6 10 20 20 30 → keep 10 20 20.
    assert_eq!(out, one(vec![7.0 / 3.0, 50.0 / 3.0]));
    let mut s = StrategyConfig::TrimmedMean { beta: 0.0 }.build().unwrap();
    assert_eq!(
        run(s.as_mut(), &g, vec![(one(vec![1.0, 2.0]), 1), (one(vec![3.0, 4.0]), 9)]).unwrap(),
        one(vec![2.0, 3.0])
    );
}

#[test]
fn krum_picks_an_honest_update() {
    let g = one(vec![0.0; 4]);
    let honest = |i: u64| one(noise(i, 4).iter().map(|v| 1.0 + 0.01 * v).collect());
    let mut updates: Vec<(Weights, u64)> = (1..=4).map(|i| (honest(i), 1)).collect();
    updates.insert(2, (one(vec![1e4, -1e4, 1e4, -1e4]), 1_000_000));
    let mut s = StrategyConfig::Krum { byzantine: 1, multi: 1 }.build().unwrap();
    assert_eq!(s.name(), "krum");
    let out = run(s.as_mut(), &g, updates.clone()).unwrap();
    assert!((1..=4).any(|i| out == honest(i)), "{out:?}");
    let mut s = StrategyConfig::Krum { byzantine: 1, multi: 3 }.build().unwrap();
    assert_eq!(s.name(), "multi-krum");
    let out = run(s.as_mut(), &g, updates).unwrap();
    assert!(out.tensors()[0].data.iter().all(|v| (v - 1.0).abs() < 0.02), "{out:?}");
}

#[test]
fn krum_needs_enough_updates() {
    let g = one(vec![0.0]);
    let updates: Vec<(Weights, u64)> = (0..4).map(|i| (one(vec![i as f32]), 1)).collect();
    let mut s = StrategyConfig::Krum { byzantine: 1, multi: 1 }.build().unwrap();
    assert_eq!(run(s.as_mut(), &g, updates.clone()), Err(AggregateError::TooFewForKrum { have: 4, need: 5 }));
    let mut s = StrategyConfig::Krum { byzantine: 0, multi: 4 }.build().unwrap();
    assert_eq!(run(s.as_mut(), &g, updates).unwrap(), one(vec![1.5]));
}

#[test]
fn parse_build_and_display() {
    let cases = [
        ("fedavg", StrategyConfig::FedAvg),
        ("FedProx:0.01", StrategyConfig::FedProx { mu: 0.01 }),
        ("fedmedian", StrategyConfig::FedMedian),
        ("trimmed-mean:0.1", StrategyConfig::TrimmedMean { beta: 0.1 }),
        ("krum:1", StrategyConfig::Krum { byzantine: 1, multi: 1 }),
        ("multi-krum:1:3", StrategyConfig::Krum { byzantine: 1, multi: 3 }),
    ];
    for (s, expected) in cases {
        let parsed: StrategyConfig = s.parse().unwrap();
        assert_eq!(parsed, expected);
        assert_eq!(parsed.to_string().parse::<StrategyConfig>().unwrap(), expected);
        assert!(parsed.build().is_ok());
    }
    for bad in [
        "",
        "fedsgd",
        "fedprox",
        "fedprox:-1",
        "fedprox:nan",
        "trimmed-mean:0.5",
        "krum:x",
        "multi-krum:1:0",
        "fedavg:1",
    ] {
        assert!(matches!(bad.parse::<StrategyConfig>(), Err(AggregateError::InvalidParameter(_))), "{bad}");
    }
    assert!(StrategyConfig::TrimmedMean { beta: -0.1 }.build().is_err());
    let json = serde_json::to_string(&StrategyConfig::TrimmedMean { beta: 0.1 }).unwrap();
    assert_eq!(json, r#"{"name":"trimmed-mean","beta":0.1}"#);
    let back: StrategyConfig = serde_json::from_str(r#"{"name":"fed-avg"}"#).unwrap();
    assert_eq!(back, StrategyConfig::FedAvg);
}

/// Throughput of the streaming FedAvg fold versus memcpy of the same bytes (K=8 updates of P=10M f32). The exact
/// mean's time is measured beside the fold by `histofed bench aggregate` (BENCHMARKS.md, P3).
/// Run: `cargo test --release -- --ignored --nocapture fedavg_throughput`.
#[test]
#[ignore]
fn fedavg_throughput() {
    use std::time::Instant;
    const K: usize = 8;
    const P: usize = 10_000_000;
    const REPS: usize = 5;
    let g = one(vec![0.0; P]);
    let bytes = (K * P * 4) as f64;
    let mut best_fold = f64::MAX;
    let mut best_copy = f64::MAX;
    let mut best_f64 = f64::MAX;
    let sources: Vec<Vec<f32>> = (0..K).map(|i| noise(i as u64 + 1, P)).collect();
    let mut dst = vec![0.0f32; P];
    let mut acc64 = vec![0.0f64; P];
    for _ in 0..REPS {
        // Fresh owned updates each rep (as the server receives them); cloning is outside the timed region.
        let updates: Vec<Weights> = sources.iter().map(|d| one(d.clone())).collect();
        let mut s = FedAvg::new();
        let t = Instant::now();
        s.begin_round(&g);
        for (i, u) in updates.into_iter().enumerate() {
            s.accumulate(u, 100 + i as u64).unwrap();
        }
        let out = s.finish().unwrap();
        best_fold = best_fold.min(t.elapsed().as_secs_f64());
        std::hint::black_box(&out);

        let t = Instant::now();
        for src in &sources {
            dst.copy_from_slice(src);
            std::hint::black_box(&mut dst);
        }
        best_copy = best_copy.min(t.elapsed().as_secs_f64());

        let t = Instant::now();
        acc64.iter_mut().for_each(|a| *a = 0.0);
        for (i, src) in sources.iter().enumerate() {
            let c = (100 + i) as f64;
            for (a, &v) in acc64.iter_mut().zip(src) {
                *a += c * f64::from(v);
            }
            std::hint::black_box(&mut acc64);
        }
        best_f64 = best_f64.min(t.elapsed().as_secs_f64());
    }
    let gbs = |secs: f64| bytes / secs / 1e9;
    println!(
        "K={K} P={P}: fedavg fold {:.2} GB/s ({:.1} ms), memcpy {:.2} GB/s ({:.1} ms), ratio {:.0}%; \
             f64-sum variant {:.2} GB/s ({:.0}%)",
        gbs(best_fold),
        best_fold * 1e3,
        gbs(best_copy),
        best_copy * 1e3,
        100.0 * best_copy / best_fold,
        gbs(best_f64),
        100.0 * best_copy / best_f64
    );
}
