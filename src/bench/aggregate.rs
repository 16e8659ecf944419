//! P3 of the federation benchmarks (`histofed bench aggregate`): FedAvg's mean, in both arithmetics, against a
//! memcpy of the same bytes, and the peak memory of a streaming round. Why its own file: the other two benchmarks
//! move bytes between processes; this one is a single process's arithmetic, and it is what a change to
//! `federation::strategy::aggregate` is measured by.

use std::time::Instant;

use super::federation::{median, one_tensor, random_f32, MB};
use crate::federation::strategy::{StrategyConfig, Summation};

/// FedAvg against memcpy over the same bytes.
#[derive(Debug, Clone)]
pub struct AggregateRow {
    pub k: usize,
    pub p: usize,
    /// Seconds of each rep: begin_round + K × accumulate + finish.
    pub fold_secs: Vec<f64>,
    /// Seconds of each rep: K copies of P f32 into one destination.
    pub memcpy_secs: Vec<f64>,
    /// Median of per-rep memcpy/fold time ratios (1.0 = as fast as memcpy).
    pub ratio: f64,
    /// Peak RSS growth of a streaming round (updates created one at a time and handed over), in bytes; `None`
    /// where the kernel does not let us reset the high-water mark.
    pub peak_rss_growth: Option<u64>,
    /// The same with `federation.summation = "exact"`: seconds of each rep (interleaved with the others) and the
    /// peak RSS growth of its streaming round.
    pub exact_secs: Vec<f64>,
    pub exact_peak_rss_growth: Option<u64>,
}

/// `VmHWM` (peak resident set) of this process, in bytes.
fn vm_hwm() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets `VmHWM` to the current RSS (Linux: write 5 to /proc/self/clear_refs).
fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak RSS growth of one FedAvg round whose K updates are produced one at a time (as they arrive from sites).
fn streaming_peak(k: usize, p: usize, summation: Summation) -> Result<Option<u64>, String> {
    let global = one_tensor(vec![0.0; p])?;
    let mut strategy = StrategyConfig::FedAvg.build_with(summation).map_err(|e| e.to_string())?;
    if !reset_hwm() {
        return Ok(None);
    }
    let Some(base) = vm_hwm() else { return Ok(None) };
    strategy.begin_round(&global);
    for i in 0..k {
        let update = one_tensor(random_f32(p, 1000 + i as u64))?;
        strategy.accumulate(update, 100 + i as u64).map_err(|e| e.to_string())?;
    }
    let out = strategy.finish().map_err(|e| e.to_string())?;
    std::hint::black_box(&out);
    Ok(vm_hwm().map(|peak| peak.saturating_sub(base)))
}

/// P3: FedAvg of `k` updates of `p` values against memcpy, `reps` interleaved pairs, plus the streaming peak RSS.
pub fn aggregate_bench(k: usize, p: usize, reps: usize) -> Result<AggregateRow, String> {
    if k == 0 || p == 0 {
        return Err("aggregate bench needs k ≥ 1 and p ≥ 1".into());
    }
    // Memory first, before the timed part holds K·P values.
    let peak_rss_growth = streaming_peak(k, p, Summation::Fast)?;
    let exact_peak_rss_growth = streaming_peak(k, p, Summation::Exact)?;
    let global = one_tensor(vec![0.0; p])?;
    let sources: Vec<Vec<f32>> = (0..k).map(|i| random_f32(p, i as u64 + 1)).collect();
    let mut dst = vec![0.0f32; p];
    let (mut fold_secs, mut memcpy_secs, mut exact_secs) = (Vec::new(), Vec::new(), Vec::new());
    // One round of `summation`'s FedAvg over fresh owned updates (as the server receives them; cloning not timed).
    let round = |summation: Summation| -> Result<f64, String> {
        let updates = sources.iter().map(|d| one_tensor(d.clone())).collect::<Result<Vec<_>, _>>()?;
        let mut strategy = StrategyConfig::FedAvg.build_with(summation).map_err(|e| e.to_string())?;
        let t = Instant::now();
        strategy.begin_round(&global);
        for (i, u) in updates.into_iter().enumerate() {
            strategy.accumulate(u, 100 + i as u64).map_err(|e| e.to_string())?;
        }
        let out = strategy.finish().map_err(|e| e.to_string())?;
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(&out);
        Ok(secs)
    };
    for _ in 0..reps.max(1) {
        fold_secs.push(round(Summation::Fast)?);
        exact_secs.push(round(Summation::Exact)?);

        let t = Instant::now();
        for src in &sources {
            dst.copy_from_slice(src);
            std::hint::black_box(&mut dst);
        }
        memcpy_secs.push(t.elapsed().as_secs_f64());
    }
    let ratios: Vec<f64> = memcpy_secs.iter().zip(&fold_secs).map(|(c, f)| c / f).collect();
    Ok(AggregateRow {
        k,
        p,
        ratio: median(&ratios),
        fold_secs,
        memcpy_secs,
        peak_rss_growth,
        exact_secs,
        exact_peak_rss_growth,
    })
}

/// Markdown table of [`aggregate_bench`] rows.
pub fn render_aggregate(rows: &[AggregateRow]) -> String {
    let mut s = String::from(
        "| K | P | bytes in | FedAvg ms | GB/s | memcpy ms | GB/s | memcpy/FedAvg (median of per-rep) | \
         peak RSS growth (streaming round) | exact FedAvg ms | its peak RSS growth |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|\n",
    );
    let rss = |growth: Option<u64>, p: usize| match growth {
        Some(b) => format!("{:.0} MB = {:.2} × P·4 bytes", b as f64 / MB as f64, b as f64 / (p * 4) as f64),
        None => "n/a".into(),
    };
    for r in rows {
        let bytes = (r.k * r.p * 4) as f64;
        let (f, c) = (median(&r.fold_secs), median(&r.memcpy_secs));
        s.push_str(&format!(
            "| {} | {} | {:.0} MB | {:.1} | {:.2} | {:.1} | {:.2} | {:.2} | {} | {:.1} | {} |\n",
            r.k,
            r.p,
            bytes / MB as f64,
            f * 1e3,
            bytes / f / 1e9,
            c * 1e3,
            bytes / c / 1e9,
            r.ratio,
            rss(r.peak_rss_growth, r.p),
            median(&r.exact_secs) * 1e3,
            rss(r.exact_peak_rss_growth, r.p),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_aggregate_bench_runs_both_arithmetics_end_to_end() {
        let row = aggregate_bench(3, 1000, 2).unwrap();
        assert_eq!((row.fold_secs.len(), row.exact_secs.len()), (2, 2));
        assert!(row.exact_secs.iter().all(|s| *s > 0.0));
        assert!(render_aggregate(&[row]).contains("| 3 | 1000 |"));
        assert!(aggregate_bench(0, 1000, 1).is_err());
    }
}
