//! The protocol end to end, in memory: sums, every dropout case, tampering, and what the server sees.

use super::*;

/// Runs one aggregation over `updates` (site id, values, weight). Sites in `silent_after_advert` never send shares,
/// sites in `silent_after_shares` never send a masked input.
struct Run<'a> {
    params: SecAggParams,
    updates: &'a [(u32, Vec<f32>, f32)],
    silent_after_advert: &'a [u32],
    silent_after_shares: &'a [u32],
}

impl Run<'_> {
    fn go(&self) -> Result<(Unmasked, Vec<MaskedInput>), SecAggError> {
        self.go_with(|_| {}, |_, r| r)
    }

    /// With hooks that may alter what the server routes (sealed shares) and what a holder reveals.
    fn go_with(
        &self,
        tamper_sealed: impl Fn(&mut Vec<SealedShares>),
        tamper_reveals: impl Fn(u32, Vec<Reveal>) -> Vec<Reveal>,
    ) -> Result<(Unmasked, Vec<MaskedInput>), SecAggError> {
        let len = self.updates[0].1.len();
        let mut server = ServerRound::new(self.params.clone(), len)?;
        let mut sites = Vec::new();
        for (id, _, _) in self.updates {
            let (s, adv) = SiteRound::new(self.params.clone(), *id)?;
            server.advertise(adv)?;
            sites.push((*id, s));
        }
        for (id, s) in sites.iter_mut() {
            let sealed = s.share(&server.adverts_for(*id)?)?;
            if !self.silent_after_advert.contains(id) {
                server.shares(*id, sealed)?;
            }
        }
        let mut seen = Vec::new();
        for ((id, s), (_, update, weight)) in sites.iter_mut().zip(self.updates) {
            if self.silent_after_advert.contains(id) {
                continue;
            }
            let mut routed = server.shares_for(*id);
            tamper_sealed(&mut routed);
            s.receive(&routed)?;
            let (masked, _) = s.mask(update, *weight)?;
            if !self.silent_after_shares.contains(id) {
                seen.push(masked.clone());
                server.masked(masked)?;
            }
        }
        let req = server.unmask_request()?;
        for (id, s) in &sites {
            if req.survivors.contains(id) {
                server.reveal(*id, tamper_reveals(*id, s.unmask(&req)?))?;
            }
        }
        Ok((server.finish()?, seen))
    }
}

fn updates(ids: &[u32], len: usize) -> Vec<(u32, Vec<f32>, f32)> {
    ids.iter()
        .map(|&i| {
            let v: Vec<f32> = (0..len).map(|k| ((i as f32 + 1.0) * 0.37 * (k as f32 + 0.5)).sin() * 0.9).collect();
            (i, v, 0.25 + 0.25 * (i % 3) as f32)
        })
        .collect()
}

/// The weighted sum over `who`, computed in the clear.
fn plain_sum(u: &[(u32, Vec<f32>, f32)], who: &[u32]) -> Vec<f32> {
    let len = u[0].1.len();
    let mut s = vec![0.0f32; len];
    for (id, v, w) in u.iter().filter(|(id, _, _)| who.contains(id)) {
        let _ = id;
        for (a, b) in s.iter_mut().zip(v) {
            *a += b * w;
        }
    }
    s
}

fn max_err(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Quantization error bound of a sum of n values: n steps of 2c/(2^q − 1).
fn tolerance(p: &SecAggParams, n: usize) -> f32 {
    n as f32 * 2.0 * p.clip_range / ((1u64 << p.quant_bits) - 1) as f32
}

#[test]
fn the_unmasked_sum_equals_the_plain_weighted_sum() {
    let ids = [0, 1, 2, 3, 4];
    let u = updates(&ids, 2000);
    let params = SecAggParams::new(7, &ids, 1.0).unwrap();
    let (out, _) =
        Run { params: params.clone(), updates: &u, silent_after_advert: &[], silent_after_shares: &[] }.go().unwrap();
    assert_eq!((out.survivors.clone(), out.dropped.clone()), (ids.to_vec(), vec![]));
    let err = max_err(&out.sum, &plain_sum(&u, &ids));
    assert!(err <= tolerance(&params, 5), "error {err} beyond quantization {}", tolerance(&params, 5));
}

#[test]
fn a_site_that_drops_after_sharing_is_unmasked_from_its_neighbours_shares() {
    let ids = [0, 1, 2, 3, 4];
    let u = updates(&ids, 500);
    let params = SecAggParams::new(3, &ids, 1.0).unwrap();
    let (out, _) =
        Run { params: params.clone(), updates: &u, silent_after_advert: &[], silent_after_shares: &[3] }.go().unwrap();
    assert_eq!(out.dropped, vec![3]);
    let survivors = [0, 1, 2, 4];
    assert!(max_err(&out.sum, &plain_sum(&u, &survivors)) <= tolerance(&params, 4));
}

#[test]
fn a_site_that_drops_before_sharing_is_left_out_of_every_mask() {
    let ids = [0, 1, 2, 3, 4];
    let u = updates(&ids, 500);
    let params = SecAggParams::new(3, &ids, 1.0).unwrap();
    let (out, _) =
        Run { params: params.clone(), updates: &u, silent_after_advert: &[1], silent_after_shares: &[] }.go().unwrap();
    assert_eq!((out.survivors.len(), out.dropped.len()), (4, 0));
    assert!(max_err(&out.sum, &plain_sum(&u, &[0, 2, 3, 4])) <= tolerance(&params, 4));
}

/// SecAgg+ with a sparse graph: 14 sites, 8 neighbours each, two dropped at different stages.
#[test]
fn a_sparse_graph_of_many_sites_survives_two_dropouts() {
    let ids: Vec<u32> = (0..14).collect();
    let u = updates(&ids, 300);
    let params = SecAggParams::new(11, &ids, 1.0).unwrap();
    assert_eq!((params.degree(), params.threshold), (8, 5));
    for s in &ids {
        let n = params.neighbours_of(*s).unwrap();
        assert_eq!(n.len(), 8);
        for j in &n {
            assert!(params.neighbours_of(*j).unwrap().contains(s), "the graph is symmetric");
        }
        assert_eq!(params.graph()[s], n, "the graph drawn once agrees");
    }
    let (out, _) =
        Run { params: params.clone(), updates: &u, silent_after_advert: &[5], silent_after_shares: &[9] }.go().unwrap();
    let survivors: Vec<u32> = ids.iter().copied().filter(|i| *i != 5 && *i != 9).collect();
    assert_eq!((out.survivors.clone(), out.dropped.clone()), (survivors.clone(), vec![9]));
    assert!(max_err(&out.sum, &plain_sum(&u, &survivors)) <= tolerance(&params, survivors.len()));
}

#[test]
fn too_few_survivors_fail_the_aggregation() {
    let ids = [0, 1, 2];
    let u = updates(&ids, 10);
    let params = SecAggParams::new(1, &ids, 1.0).unwrap();
    assert_eq!(params.threshold, 2);
    let err = Run { params, updates: &u, silent_after_advert: &[], silent_after_shares: &[1, 2] }.go().unwrap_err();
    assert!(matches!(err, SecAggError::TooFew { have: 1, need: 2, .. }), "{err:?}");
}

/// The server cannot read or alter the shares it routes: a flipped bit fails the holder's decryption.
#[test]
fn a_share_altered_in_transit_fails_closed() {
    let ids = [0, 1, 2];
    let u = updates(&ids, 10);
    let params = SecAggParams::new(1, &ids, 1.0).unwrap();
    let err = Run { params, updates: &u, silent_after_advert: &[], silent_after_shares: &[] }
        .go_with(
            |sealed| {
                if let Some(s) = sealed.first_mut() {
                    s.ciphertext[3] ^= 1;
                }
            },
            |_, r| r,
        )
        .unwrap_err();
    assert!(matches!(err, SecAggError::BadShares { .. }), "{err:?}");
}

/// A holder that reveals a wrong share: found by leaving it out when there are spare shares, else the aggregation
/// fails closed — never a wrong sum.
#[test]
fn a_tampered_revealed_share_is_found_or_fails_closed() {
    let corrupt = |who: u32| {
        move |holder: u32, mut r: Vec<Reveal>| {
            if holder == who {
                for x in &mut r {
                    x.share[5] ^= 0x55;
                }
            }
            r
        }
    };
    // 5 sites, threshold 3: each seed has 5 holders, one of them lies.
    let ids = [0, 1, 2, 3, 4];
    let u = updates(&ids, 50);
    let params = SecAggParams::new(2, &ids, 1.0).unwrap();
    let (out, _) = Run { params: params.clone(), updates: &u, silent_after_advert: &[], silent_after_shares: &[] }
        .go_with(|_| {}, corrupt(2))
        .unwrap();
    assert!(out.bad_holders.iter().all(|(h, _)| *h == 2) && !out.bad_holders.is_empty(), "{:?}", out.bad_holders);
    assert!(max_err(&out.sum, &plain_sum(&u, &ids)) <= tolerance(&params, 5));
    // 3 sites, threshold 2, one dropped: the seed of each survivor has exactly 2 revealed shares, one bad.
    let ids = [0, 1, 2];
    let u = updates(&ids, 50);
    let params = SecAggParams::new(2, &ids, 1.0).unwrap();
    let err = Run { params, updates: &u, silent_after_advert: &[], silent_after_shares: &[2] }
        .go_with(|_| {}, corrupt(1))
        .unwrap_err();
    assert!(matches!(err, SecAggError::Tampered { .. }), "{err:?}");
}

/// What the server sees of one site is uniform noise whatever the update: the top 4 bits of the masked values fall
/// evenly into 16 bins for an update of all −c and one of all +c (χ² with 15 degrees of freedom, p = 0.001 at
/// 37.7). Without masks the quantized values would all sit in bin 0 or bin 15.
#[test]
fn a_masked_input_is_independent_of_the_update() {
    let ids = [0, 1, 2];
    for value in [-1.0f32, 1.0] {
        let u: Vec<(u32, Vec<f32>, f32)> = ids.iter().map(|&i| (i, vec![value; 40_000], 1.0)).collect();
        let params = SecAggParams::new(9, &ids, 1.0).unwrap();
        let (out, seen) = Run { params, updates: &u, silent_after_advert: &[], silent_after_shares: &[] }.go().unwrap();
        assert!((out.sum[0] - 3.0 * value).abs() < 1e-4);
        for m in &seen {
            let mut bins = [0f64; 16];
            for v in &m.values {
                bins[(v >> 28) as usize] += 1.0;
            }
            let e = m.values.len() as f64 / 16.0;
            let chi2: f64 = bins.iter().map(|b| (b - e).powi(2) / e).sum();
            assert!(chi2 < 37.7, "site {}: χ² {chi2} for update {value}", m.site);
        }
    }
}

#[test]
fn a_site_refuses_an_inconsistent_unmask_request() {
    let ids = [0, 1, 2];
    let params = SecAggParams::new(4, &ids, 1.0).unwrap();
    let mut server = ServerRound::new(params.clone(), 4).unwrap();
    let mut sites = Vec::new();
    for &i in &ids {
        let (s, adv) = SiteRound::new(params.clone(), i).unwrap();
        server.advertise(adv).unwrap();
        sites.push(s);
    }
    for (i, s) in sites.iter_mut().enumerate() {
        let sealed = s.share(&server.adverts_for(i as u32).unwrap()).unwrap();
        server.shares(i as u32, sealed).unwrap();
    }
    for (i, s) in sites.iter_mut().enumerate() {
        s.receive(&server.shares_for(i as u32)).unwrap();
        s.mask(&[0.1; 4], 1.0).unwrap();
    }
    let both = UnmaskRequest { survivors: vec![0, 1], dropped: vec![1, 2] };
    assert!(matches!(sites[0].unmask(&both), Err(SecAggError::Refused(m)) if m.contains("both")));
    let missing = UnmaskRequest { survivors: vec![0, 1], dropped: vec![] };
    assert!(matches!(sites[0].unmask(&missing), Err(SecAggError::Refused(m)) if m.contains("neither")));
    let not_me = UnmaskRequest { survivors: vec![1, 2], dropped: vec![0] };
    assert!(sites[0].unmask(&not_me).is_err());
    assert!(server.masked(MaskedInput { site: 0, values: vec![0; 3] }).is_err(), "wrong length");
}

#[test]
fn parameters_that_could_overflow_or_cannot_work_are_refused() {
    assert_eq!(params::max_quant_bits(8), 29);
    assert_eq!(params::max_quant_bits(2), 31);
    let mut p = SecAggParams::new(0, &[0, 1, 2, 3, 4, 5, 6, 7], 8.0).unwrap();
    assert_eq!((p.neighbours, p.threshold, p.quant_bits), (7, 5, 24));
    p.quant_bits = 30;
    assert!(matches!(p.validate(), Err(SecAggError::Params(m)) if m.contains("overflow")));
    let mut p = SecAggParams::new(0, &(0..20).collect::<Vec<_>>(), 8.0).unwrap();
    assert_eq!(p.neighbours, 10);
    p.neighbours = 5;
    assert!(p.validate().is_err(), "odd k on a ring");
    assert!(SecAggParams::new(0, &[3], 1.0).is_err(), "one site");
    assert!(SecAggParams::new(0, &[0, 1], 0.0).is_err(), "clip range");
}

/// Distributed DP: the unmasked sum is the plain sum plus the survivors' Skellam noise — centred, of the variance
/// the parameters give for the survivors, a dropped site's share absent — and the sites' noise decodes correctly
/// through the modular sum even where it takes a value below zero.
#[test]
fn with_noise_at_the_sites_the_sum_carries_the_survivors_noise_and_nothing_else() {
    let ids = [0, 1, 2, 3];
    let len = 20_000;
    // Updates at the clip range's edges: −c codes are 0, so the noise wraps below zero about half the time.
    let u: Vec<(u32, Vec<f32>, f32)> = ids
        .iter()
        .map(|&i| (i, (0..len).map(|k| if (k + i as usize).is_multiple_of(2) { -1.0 } else { 1.0 }).collect(), 0.25))
        .collect();
    let opts = SecAggOptions {
        clip_range: 0.25,
        neighbours: None,
        threshold: None,
        quant_bits: Some(12),
        noise: Some(NoiseOptions { clip_norm: 4.0, noise_multiplier: 0.05, min_contributors: 2 }),
    };
    let params = opts.params(5, &ids, len as u64).unwrap();
    let noise = params.noise.expect("noise configured");
    assert_eq!(noise.min_contributors, params.threshold.max(2), "calibrated for the fewest that can complete");
    let (out, _) =
        Run { params: params.clone(), updates: &u, silent_after_advert: &[], silent_after_shares: &[2] }.go().unwrap();
    assert_eq!((out.survivors.clone(), out.dropped.clone()), (vec![0, 1, 3], vec![2]));
    let plain = plain_sum(&u, &out.survivors);
    let step = f64::from(2.0 * params.clip_range) / ((1u64 << params.quant_bits) - 1) as f64;
    let diff: Vec<f64> = out.sum.iter().zip(&plain).map(|(a, b)| f64::from(a - b) / step).collect();
    let mean = diff.iter().sum::<f64>() / len as f64;
    let var = diff.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / len as f64;
    // In code units: the noise of 3 survivors plus stochastic rounding (variance ≤ 1/4 per value and site).
    let want = noise.total_variance(3);
    assert!(mean.abs() < 4.0 * (want / len as f64).sqrt() + 0.5, "centred: mean {mean}");
    assert!(var > want * 0.95 && var < want * 1.05 + 0.75, "variance {var}, the survivors' noise {want}");
    assert!(diff.iter().all(|d| d.abs() < 12.0 * want.sqrt()), "decoded around the centre, never wrapped");
    // Without noise the same sum is exact to the quantization.
    let plain_params = SecAggOptions { noise: None, ..opts }.params(5, &ids, len as u64).unwrap();
    let (clean, _) =
        Run { params: plain_params.clone(), updates: &u, silent_after_advert: &[], silent_after_shares: &[2] }
            .go()
            .unwrap();
    assert!(max_err(&clean.sum, &plain) <= tolerance(&plain_params, 3));
}

/// The noise needs room in the 32-bit sums: the default quantization leaves it; bits asked for that leave none are
/// refused with the reason; and a site refuses to mask an update of another length than the noise was made for.
#[test]
fn noise_at_the_sites_is_given_headroom_and_a_fixed_length() {
    let ids = [0, 1, 2];
    let noise = NoiseOptions { clip_norm: 1.0, noise_multiplier: 2.0, min_contributors: 2 };
    let opts = SecAggOptions {
        clip_range: 1.0 / 3.0,
        neighbours: None,
        threshold: None,
        quant_bits: None,
        noise: Some(noise),
    };
    let p = opts.params(1, &ids, 1_000_000).unwrap();
    let sd = p.noise.unwrap().total_variance(3).sqrt();
    let half_span = 3.0 * ((1u64 << p.quant_bits) - 1) as f64 / 2.0;
    assert!(half_span + 10.0 * sd < 2f64.powi(31), "q = {}: sd {sd:.3e}", p.quant_bits);
    assert_eq!(p.quant_bits, 24, "z = 2 leaves room at the default's 24 bits");
    let loud = NoiseOptions { noise_multiplier: 40.0, ..noise };
    let q = SecAggOptions { noise: Some(loud), ..opts }.params(1, &ids, 1_000_000).unwrap().quant_bits;
    assert!(q < 24, "z = 40 takes bits from the codes: q = {q}");
    let greedy = SecAggOptions { quant_bits: Some(29), ..opts }.params(1, &ids, 1_000_000).unwrap_err();
    assert!(greedy.to_string().contains("no room for the sites' noise"), "{greedy}");
    for q in [0, 32, 70] {
        let e = SecAggOptions { quant_bits: Some(q), ..opts }.params(1, &ids, 1_000_000).unwrap_err();
        assert!(e.to_string().contains("quantization bits"), "q = {q}: {e}");
    }
    let (mut site, _) = SiteRound::new(p, 0).unwrap();
    let err = site.mask(&[0.0; 10], 1.0 / 3.0).unwrap_err();
    assert!(matches!(err, SecAggError::Length { got: 10, want: 1_000_000, .. }), "{err}");
}
