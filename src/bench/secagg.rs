//! The compute cost of secure aggregation (`federation::secagg`) against plain FedAvg of the same updates.
//!
//! Why compute only: it isolates what the protocol adds per round — each site's key agreements, Shamir sharing,
//! quantization and mask streams, and the server's sum, reconstructions and mask removal — from the network and
//! the runtime. Sites run in parallel in a federation, so a round's critical path is the slowest site's work plus
//! the server's; the table gives both beside FedAvg's fold of the same K updates.

use std::time::Instant;

use super::federation::{median, one_tensor, random_f32};
use crate::federation::secagg::{NoiseOptions, SecAggOptions, ServerRound, SiteRound};
use crate::federation::strategy::StrategyConfig;

/// One measured configuration.
#[derive(Debug, Clone)]
pub struct SecAggRow {
    pub k: usize,
    pub p: usize,
    pub dropped: usize,
    pub neighbours: usize,
    pub threshold: usize,
    /// Per rep: the slowest site's share + receive + mask seconds.
    pub site_secs: Vec<f64>,
    /// Per rep: the server's routing, sum, reconstruction and unmasking seconds.
    pub server_secs: Vec<f64>,
    /// Per rep: FedAvg's fold of the same K updates.
    pub fedavg_secs: Vec<f64>,
}

/// `k` sites with updates of `p` values, the last `dropped` of them killed after sharing; `reps` repetitions. With
/// `noise` = Some(z), the sites add distributed DP's Skellam noise (clip norm 1, calibrated for 2 contributors) and
/// weigh their updates 1/k, as with `privacy.noise = "sites"`.
pub fn secagg_bench(k: usize, p: usize, dropped: usize, reps: usize, noise: Option<f64>) -> Result<SecAggRow, String> {
    if k < 2 || p == 0 || dropped >= k {
        return Err("secagg bench needs k ≥ 2, p ≥ 1 and fewer dropped sites than sites".into());
    }
    let ids: Vec<u32> = (0..k as u32).collect();
    let updates: Vec<Vec<f32>> = (0..k).map(|i| random_f32(p, i as u64 + 1)).collect();
    let global = one_tensor(vec![0.0; p])?;
    let (mut site_secs, mut server_secs, mut fedavg_secs) = (Vec::new(), Vec::new(), Vec::new());
    let mut shape = (0, 0);
    for rep in 0..reps.max(1) {
        let options = SecAggOptions {
            clip_range: 1.0,
            neighbours: None,
            threshold: None,
            quant_bits: None,
            noise: noise.map(|z| NoiseOptions { clip_norm: 1.0, noise_multiplier: z, min_contributors: 2 }),
        };
        let params = options.params(rep as u64, &ids, p as u64).map_err(|e| e.to_string())?;
        let weight = if noise.is_some() { 1.0 / k as f32 } else { 1.0 };
        shape = (params.degree(), params.threshold);
        let mut server = ServerRound::new(params.clone(), p).map_err(|e| e.to_string())?;
        let mut site_time = vec![0.0f64; k];
        let mut sites = Vec::new();
        let mut server_time = 0.0;
        for (i, &id) in ids.iter().enumerate() {
            let t = Instant::now();
            let (s, adv) = SiteRound::new(params.clone(), id).map_err(|e| e.to_string())?;
            site_time[i] += t.elapsed().as_secs_f64();
            let t = Instant::now();
            server.advertise(adv).map_err(|e| e.to_string())?;
            server_time += t.elapsed().as_secs_f64();
            sites.push(s);
        }
        for (i, s) in sites.iter_mut().enumerate() {
            let adverts = server.adverts_for(ids[i]).map_err(|e| e.to_string())?;
            let t = Instant::now();
            let sealed = s.share(&adverts).map_err(|e| e.to_string())?;
            site_time[i] += t.elapsed().as_secs_f64();
            let t = Instant::now();
            server.shares(ids[i], sealed).map_err(|e| e.to_string())?;
            server_time += t.elapsed().as_secs_f64();
        }
        for (i, s) in sites.iter_mut().enumerate() {
            let routed = server.shares_for(ids[i]);
            let t = Instant::now();
            s.receive(&routed).map_err(|e| e.to_string())?;
            let (masked, _) = s.mask(&updates[i], weight).map_err(|e| e.to_string())?;
            site_time[i] += t.elapsed().as_secs_f64();
            if i < k - dropped {
                let t = Instant::now();
                server.masked(masked).map_err(|e| e.to_string())?;
                server_time += t.elapsed().as_secs_f64();
            }
        }
        let t = Instant::now();
        let req = server.unmask_request().map_err(|e| e.to_string())?;
        server_time += t.elapsed().as_secs_f64();
        for (i, s) in sites.iter().enumerate().take(k - dropped) {
            let reveals = s.unmask(&req).map_err(|e| e.to_string())?;
            let t = Instant::now();
            server.reveal(ids[i], reveals).map_err(|e| e.to_string())?;
            server_time += t.elapsed().as_secs_f64();
        }
        let t = Instant::now();
        let out = server.finish().map_err(|e| e.to_string())?;
        server_time += t.elapsed().as_secs_f64();
        std::hint::black_box(&out);
        site_secs.push(site_time.iter().copied().fold(0.0, f64::max));
        server_secs.push(server_time);

        let owned = updates.iter().take(k - dropped).map(|u| one_tensor(u.clone())).collect::<Result<Vec<_>, _>>()?;
        let mut fedavg = StrategyConfig::FedAvg.build().map_err(|e| e.to_string())?;
        let t = Instant::now();
        fedavg.begin_round(&global);
        for u in owned {
            fedavg.accumulate(u, 1).map_err(|e| e.to_string())?;
        }
        let out = fedavg.finish().map_err(|e| e.to_string())?;
        fedavg_secs.push(t.elapsed().as_secs_f64());
        std::hint::black_box(&out);
    }
    Ok(SecAggRow { k, p, dropped, neighbours: shape.0, threshold: shape.1, site_secs, server_secs, fedavg_secs })
}

/// Markdown table of [`secagg_bench`] rows (medians over the repetitions).
pub fn render_secagg(rows: &[SecAggRow]) -> String {
    let mut s = String::from(
        "| K | P | dropped | neighbours / threshold | slowest site s | server s | FedAvg fold s | \
         (site + server) / FedAvg fold |\n|---:|---:|---:|---|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let (site, server, fold) = (median(&r.site_secs), median(&r.server_secs), median(&r.fedavg_secs));
        s.push_str(&format!(
            "| {} | {} | {} | {} / {} | {:.3} | {:.3} | {:.3} | {:.1} |\n",
            r.k,
            r.p,
            r.dropped,
            r.neighbours,
            r.threshold,
            site,
            server,
            fold,
            (site + server) / fold
        ));
    }
    s
}
