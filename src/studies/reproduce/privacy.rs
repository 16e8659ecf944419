//! `histofed reproduce --privacy …`: what client-level DP costs at the reproduction's scale. The protocol's
//! federated model (its GAN, discriminator, sites, Dirichlet split, rounds and local steps) is trained on the real
//! runtime once per privacy level and GAN seed, and its final global generator measured exactly as the
//! reproduction measures every generator (KID and FD in the reference classifier's features, class agreement,
//! coverage, memorization, classification accuracy score), beside the real floor and the noise baseline.
//!
//! Why a level "clip only" (clipping, z = 10⁻⁹): it separates what clipping costs from what the noise costs. The
//! level "∞" is the reproduction's own federated cell, so a rerun in the reproduction's folder keeps it. Each cell
//! is written when it ends; a cell whose generator cannot be measured (DP noise can make its output non-finite)
//! is recorded with the reason, and the table says so, rather than ending the study.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::Splits;
use crate::federation::checkpoint::write_atomic;
use crate::records::{QualitySummary, RoundPrivacy, RunReport};

use super::run::{federated_cell, gan_seeds, GanJob};
use super::shared::{baselines, prepare};
use super::stats::mean_sd;
use super::stored::{load_stored, store};
use super::{FederatedRunner, JobNoise, JobPrivacy};
use super::{GanRun, ReproduceError, ReproduceOptions};

/// z of the "clip only" level: positive as the accountant needs, and no noise worth the name.
const CLIP_ONLY_Z: f64 = 1e-9;

/// One privacy level of the table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DpLevel {
    /// No DP: plain FedAvg (the reproduction's federated cell).
    Off,
    /// Clipping without noise.
    ClipOnly,
    /// DP-FedAvg with the z that meets this ε over the run's rounds.
    Epsilon(f64),
}

impl FromStr for DpLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "inf" | "∞" | "off" => Ok(DpLevel::Off),
            "clip" => Ok(DpLevel::ClipOnly),
            other => match other.parse::<f64>() {
                Ok(e) if e.is_finite() && e > 0.0 => Ok(DpLevel::Epsilon(e)),
                _ => Err(format!(
                    "privacy level {other:?}: expected inf (no DP), clip (clipping only) or a positive finite ε"
                )),
            },
        }
    }
}

impl fmt::Display for DpLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DpLevel::Off => write!(f, "∞ (no DP)"),
            DpLevel::ClipOnly => write!(f, "clip only (z = 10⁻⁹)"),
            DpLevel::Epsilon(e) => write!(f, "{e}"),
        }
    }
}

impl DpLevel {
    /// Its runs' folder suffix.
    fn tag(self) -> String {
        match self {
            DpLevel::Off => String::new(),
            DpLevel::ClipOnly => "-dp-clip".into(),
            DpLevel::Epsilon(e) => format!("-dp-eps{e}"),
        }
    }

    fn job(self, o: &PrivacyOptions) -> Option<JobPrivacy> {
        let noise = match self {
            DpLevel::Off => return None,
            DpLevel::ClipOnly => JobNoise::Multiplier(CLIP_ONLY_Z),
            DpLevel::Epsilon(e) => JobNoise::Epsilon(e),
        };
        Some(JobPrivacy { noise, clip_norm: o.clip_norm, target_quantile: o.target_quantile })
    }
}

/// What the study varies and how it clips.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacyOptions {
    pub levels: Vec<DpLevel>,
    /// C (the first round's with adaptive clipping).
    pub clip_norm: f64,
    /// Adaptive clipping's target quantile (none: C fixed).
    pub target_quantile: Option<f64>,
    /// GAN seeds per level (the preset's first ones).
    pub seeds: u32,
}

impl PrivacyOptions {
    pub fn check(&self) -> Result<(), ReproduceError> {
        let bad = |m: String| Err(ReproduceError::Preset(m));
        if self.levels.is_empty() {
            return bad("the privacy study needs at least one level".into());
        }
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) {
            return bad(format!("the privacy study's clip norm {} must be a positive number", self.clip_norm));
        }
        if let Some(q) = self.target_quantile {
            if !(q > 0.0 && q < 1.0) {
                return bad(format!("the privacy study's target quantile {q} must lie strictly between 0 and 1"));
            }
        }
        if self.seeds == 0 {
            return bad("the privacy study needs at least one GAN seed".into());
        }
        Ok(())
    }
}

/// One federated training at one level and seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrivacyCell {
    pub level: DpLevel,
    pub seed: u64,
    /// The measured generator; none when it could not be measured (`error` says why).
    pub run: Option<GanRun>,
    pub error: Option<String>,
    /// The run's privacy ledger (empty without DP).
    pub ledger: Vec<RoundPrivacy>,
}

/// The whole study, as `privacy.json` holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrivacyStudy {
    pub preset: String,
    pub data: String,
    pub commit: String,
    pub model: String,
    pub sites: u32,
    pub rounds: u32,
    pub local_steps: u32,
    pub clip_norm: f64,
    pub target_quantile: Option<f64>,
    pub floor: QualitySummary,
    pub noise: QualitySummary,
    pub cells: Vec<PrivacyCell>,
    pub total_secs: f64,
}

/// The ledger a federated run wrote into its report.
fn ledger(fed_dir: &Path) -> Vec<RoundPrivacy> {
    RunReport::read(fed_dir).map(|r| r.rounds.into_iter().filter_map(|x| x.privacy).collect()).unwrap_or_default()
}

/// Runs the study: every level × seed (kept from an earlier invocation when its key still holds), then writes
/// `privacy.md` and `privacy.json` into the reproduction's folder.
pub fn run(
    opts: &ReproduceOptions,
    splits: &Splits,
    runner: &dyn FederatedRunner,
    study: &PrivacyOptions,
    mut progress: impl FnMut(&str),
) -> Result<PrivacyStudy, ReproduceError> {
    study.check()?;
    let start = Instant::now();
    let p = &opts.preset;
    let shared = prepare(opts, splits)?;
    let progress: &mut dyn FnMut(&str) = &mut progress;
    let assessor = shared.assessor()?;
    let (floor, noise) = baselines(opts, splits, &assessor, progress)?;
    let mut cells = Vec::new();
    for &level in &study.levels {
        for seed in gan_seeds(opts).into_iter().take(study.seeds as usize) {
            let job = GanJob::federated(p, seed);
            let name = format!("{}{}", job.name(), level.tag());
            let dir = shared.runs_dir().join(&name);
            let cell_path = dir.join("privacy-cell.json");
            let key = format!("{}-{:?}-{:?}", shared.key, study.clip_norm, study.target_quantile);
            if let Some(c) = load_stored::<PrivacyCell>(&cell_path, &key) {
                progress(&format!("{name}: done in an earlier run, kept"));
                cells.push(c);
                continue;
            }
            // The reproduction's own federated cell is the ∞ level.
            let kept =
                (level == DpLevel::Off).then(|| load_stored::<GanRun>(&dir.join("run.json"), &shared.key)).flatten();
            let cell = if let Some(r) = kept {
                progress(&format!("{name}: the reproduction's federated cell, kept"));
                PrivacyCell { level, seed, run: Some(r), error: None, ledger: Vec::new() }
            } else {
                progress(&format!("{name}: ε {level}, server + {} site processes on loopback", p.sites));
                let (run, error) = match federated_cell(&shared, &assessor, runner, &job, &name, level.job(study), &key)
                {
                    Ok(r) => (Some(r), None),
                    // Stopped on purpose: not a failed cell; the same command runs it again.
                    Err(ReproduceError::Interrupted) => return Err(ReproduceError::Interrupted),
                    Err(e) => (None, Some(e.to_string())),
                };
                PrivacyCell { level, seed, run, error, ledger: ledger(&dir.join("federation")) }
            };
            progress(&cell_line(&name, &cell));
            store(&cell_path, &key, &cell)?;
            cells.push(cell);
        }
    }
    let out = PrivacyStudy {
        preset: p.name.clone(),
        data: opts.data_label.clone(),
        commit: opts.commit.clone(),
        model: format!("{}-{}", p.fed_gan, p.fed_disc),
        sites: p.sites,
        rounds: p.rounds,
        local_steps: p.local_steps(),
        clip_norm: study.clip_norm,
        target_quantile: study.target_quantile,
        floor,
        noise,
        cells,
        total_secs: start.elapsed().as_secs_f64(),
    };
    write(&opts.out_dir, &out)?;
    Ok(out)
}

fn cell_line(name: &str, c: &PrivacyCell) -> String {
    let spent = c.ledger.last().map(|l| format!(", ε spent {}", sig(l.epsilon))).unwrap_or_default();
    match (&c.run, &c.error) {
        (Some(r), _) => format!(
            "{name}: KID×10³ {:.1}, FD {:.2}, agreement {:.2}, coverage {:.2}, memorized {:.2}, CAS {:.2}{spent}",
            1e3 * r.kid(),
            r.quality.fd,
            r.quality.label_agreement,
            r.quality.class_coverage,
            r.quality.memorized_share,
            r.cas
        ),
        (None, e) => format!("{name}: not measurable: {}{spent}", e.as_deref().unwrap_or("unknown")),
    }
}

fn write(dir: &Path, s: &PrivacyStudy) -> Result<(), ReproduceError> {
    let json = serde_json::to_vec_pretty(s)
        .map_err(|e| ReproduceError::Write { path: dir.join("privacy.json"), message: e.to_string() })?;
    for (name, bytes) in [("privacy.json", json), ("privacy.md", markdown(s).into_bytes())] {
        write_atomic(dir, name, &bytes)
            .map_err(|e| ReproduceError::Write { path: dir.join(name), message: e.to_string() })?;
    }
    Ok(())
}

/// "m ± sd" of a measure over the level's measured cells; "—" when none.
fn stat(runs: &[&GanRun], f: impl Fn(&GanRun) -> f64, scale: f64, digits: usize) -> String {
    let xs: Vec<f64> = runs.iter().map(|r| scale * f(r)).filter(|x| x.is_finite()).collect();
    match xs.len() {
        0 => "—".into(),
        1 => format!("{:.*}", digits, xs[0]),
        _ => {
            let (m, sd) = mean_sd(&xs);
            format!("{m:.digits$} ± {sd:.digits$}")
        }
    }
}

/// Four significant digits (clip norms, multipliers and ε span many decades).
fn sig(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    if !(1e-3..1e6).contains(&x.abs()) {
        return format!("{x:.3e}");
    }
    let digits = (3 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.digits$}")
}

fn summary_row(label: &str, q: &QualitySummary) -> String {
    format!(
        "| {label} | — | — | — | {} / {} | {:.2} | {:.2} | {:.2} | {:.2} | — | — |",
        q.kid.map(|k| format!("{:.1}", 1e3 * k)).unwrap_or_else(|| "—".into()),
        q.kid_random_cnn.map(|k| format!("{:.1}", 1e3 * k)).unwrap_or_else(|| "—".into()),
        q.fd,
        q.label_agreement,
        q.class_coverage,
        q.memorized_share,
    )
}

pub fn markdown(s: &PrivacyStudy) -> String {
    let mut m = String::new();
    m.push_str(&format!(
        "# Utility against privacy at the `{}` scale\n\n{} federated over {} site processes (Dirichlet α = 0.3), {} rounds × \
         {} local steps; clip norm C = {}{}; δ from the run's configuration. Data: {}. Commit {}; {:.0} s.\n\n",
        s.preset,
        s.model,
        s.sites,
        s.rounds,
        s.local_steps,
        sig(s.clip_norm),
        s.target_quantile.map(|q| format!(" at the first round, then adaptive (target quantile {q})")).unwrap_or_default(),
        s.data,
        s.commit,
        s.total_secs
    ));
    m.push_str(
        "Quality is the reproduction's suite on the final global generator, mean ± sd over GAN seeds: KID×10³ in the \
         reference classifier's features / a fixed random CNN's, FD (reference), class agreement, coverage, the \
         share of generated images closer to a training image than real test images are (memorized), and the \
         classification accuracy score (a classifier trained on generated images only, tested on real ones).\n\n",
    );
    m.push_str(
        "| ε target | z | C first → last | ε spent (δ) | KID×10³ ref / random CNN | FD | agreement | coverage | memorized | CAS | measured |\n\
         |---|---:|---|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut levels: Vec<DpLevel> = Vec::new();
    for c in &s.cells {
        if !levels.contains(&c.level) {
            levels.push(c.level);
        }
    }
    for level in levels {
        let cells: Vec<&PrivacyCell> = s.cells.iter().filter(|c| c.level == level).collect();
        let runs: Vec<&GanRun> = cells.iter().filter_map(|c| c.run.as_ref()).collect();
        let first = cells.iter().find_map(|c| c.ledger.first());
        let last = cells.iter().find_map(|c| c.ledger.last());
        let (z, clip, spent) = match (first, last) {
            (Some(f), Some(l)) => (
                sig(f.noise_multiplier),
                format!("{} → {}", sig(f.clip_norm), sig(l.next_clip_norm.unwrap_or(l.clip_norm))),
                format!("{} ({:e})", sig(l.epsilon), l.delta),
            ),
            _ => ("—".into(), "—".into(), "—".into()),
        };
        m.push_str(&format!(
            "| {level} | {z} | {clip} | {spent} | {} / {} | {} | {} | {} | {} | {} | {}/{} |\n",
            stat(&runs, |r| r.kid(), 1e3, 1),
            stat(&runs, |r| r.quality.kid_random_cnn.unwrap_or(f64::NAN), 1e3, 1),
            stat(&runs, |r| r.quality.fd, 1.0, 2),
            stat(&runs, |r| r.quality.label_agreement, 1.0, 2),
            stat(&runs, |r| r.quality.class_coverage, 1.0, 2),
            stat(&runs, |r| r.quality.memorized_share, 1.0, 2),
            stat(&runs, |r| r.cas, 1.0, 2),
            runs.len(),
            cells.len()
        ));
    }
    m.push_str(&summary_row("real floor (real vs real)", &s.floor));
    m.push('\n');
    m.push_str(&summary_row("noise baseline", &s.noise));
    m.push_str("\n\n");
    let failed: Vec<&PrivacyCell> = s.cells.iter().filter(|c| c.run.is_none()).collect();
    if !failed.is_empty() {
        m.push_str("Cells that could not be measured:\n\n");
        for c in failed {
            m.push_str(&format!("- ε {}, seed {}: {}\n", c.level, c.seed, c.error.as_deref().unwrap_or("unknown")));
        }
        m.push('\n');
    }
    m.push_str("Sample grids (first seed of each level):\n\n");
    let mut shown: Vec<DpLevel> = Vec::new();
    for c in &s.cells {
        if shown.contains(&c.level) {
            continue;
        }
        if let Some(g) = c.run.as_ref().and_then(|r| r.grid.as_ref()) {
            m.push_str(&format!("- ε {}: `{}`\n", c.level, g));
            shown.push(c.level);
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_refuse_what_is_not_a_level() {
        assert_eq!("inf".parse::<DpLevel>(), Ok(DpLevel::Off));
        assert_eq!("clip".parse::<DpLevel>(), Ok(DpLevel::ClipOnly));
        assert_eq!(" 3 ".parse::<DpLevel>(), Ok(DpLevel::Epsilon(3.0)));
        for bad in ["0", "-1", "NaN", "ten", "inf3"] {
            let e = bad.parse::<DpLevel>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn the_options_refuse_a_bad_clip_norm_quantile_or_no_seed() {
        let ok = PrivacyOptions { levels: vec![DpLevel::Off], clip_norm: 1.0, target_quantile: None, seeds: 1 };
        assert!(ok.check().is_ok());
        for bad in [
            PrivacyOptions { levels: vec![], ..ok.clone() },
            PrivacyOptions { clip_norm: 0.0, ..ok.clone() },
            PrivacyOptions { clip_norm: f64::NAN, ..ok.clone() },
            PrivacyOptions { target_quantile: Some(1.0), ..ok.clone() },
            PrivacyOptions { seeds: 0, ..ok.clone() },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
