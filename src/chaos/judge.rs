//! The judge of a chaos scenario: its invariants (outcome, no round lost, no corrupt checkpoint accepted, no
//! process left, intruders refused, a site killed mid-round resumed it), from the run's report and what the driver
//! recorded.

use std::path::Path;
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use super::report::{FaultRecord, Invariant, ScenarioResult};
use super::scenario::{Action, Outcome, Scenario};
use crate::records::RunReport;

/// What driving a scenario left behind for the judge.
pub(super) struct Driven {
    pub(super) server_status: Option<std::process::ExitStatus>,
    pub(super) timed_out: bool,
    pub(super) records: Vec<FaultRecord>,
    /// Rounds whose checkpoint was damaged on purpose.
    pub(super) corrupted: Vec<u64>,
    /// The highest round the report ever showed.
    pub(super) max_seen: u64,
}

/// A site killed at its local checkpoint (`at_local_checkpoint`) must have resumed that round from it: its update
/// of round r + 1 says it started from a step past 0. None when no fault asks for that.
fn resumed_mid_round(s: &Scenario, report: &RunReport) -> Option<Invariant> {
    let (site, round) = s.faults.iter().find_map(|f| match f {
        Action::KillSite { site: Some(site), when, .. } if when.at_local_checkpoint => {
            when.after_round.map(|r| (*site, r + 1))
        }
        _ => None,
    })?;
    let step = report
        .rounds
        .iter()
        .filter(|r| r.round == round)
        .flat_map(|r| r.contributors.iter())
        .find(|c| c.site_id == site)
        .map(|c| c.resumed_from_step);
    Some(match step {
        Some(step) if step > 0 => {
            Invariant::pass("resumed-mid-round", format!("site {site} resumed round {round} from local step {step}"))
        }
        Some(_) => Invariant::fail("resumed-mid-round", format!("site {site} trained round {round} from step 0")),
        None => Invariant::fail("resumed-mid-round", format!("site {site} contributed nothing to round {round}")),
    })
}

/// Under differential privacy: every completed round has its ledger entry, and each entry's ε equals ε recomputed
/// from the rounds completed up to it — nothing charged twice (a retried round, a resumed server) or lost; with
/// adaptive clipping each round's clip norm is the one the round before chose.
fn privacy_ledger(report: &RunReport) -> Option<Invariant> {
    let entries: Vec<_> = report.rounds.iter().map(|r| (r.round, r.privacy)).collect();
    let (_, first) = entries.iter().find(|(_, p)| p.is_some())?;
    let delta = first.map(|p| p.delta)?;
    let mut ledger = Vec::new();
    for (round, p) in &entries {
        let Some(p) = p else {
            return Some(Invariant::fail("privacy-ledger", format!("round {round} has no ledger entry")));
        };
        // Adaptive clipping: each round clipped at the norm the previous one chose (a resumed server included).
        if let Some(prev) = ledger.last().and_then(|q: &crate::records::RoundPrivacy| q.next_clip_norm) {
            if prev != p.clip_norm {
                return Some(Invariant::fail(
                    "privacy-ledger",
                    format!("round {round}: clip norm {} but the round before chose {prev}", p.clip_norm),
                ));
            }
        }
        ledger.push(*p);
        let charged =
            ledger.iter().map(|p| crate::federation::privacy::round_release(p.noise_multiplier, p.skellam_parts()));
        let want = crate::federation::privacy::ledger_epsilon(
            charged,
            0,
            crate::federation::privacy::Release::gaussian(0.0),
            delta,
        );
        if (p.epsilon - want).abs() > 1e-9 * want.max(1.0) {
            return Some(Invariant::fail(
                "privacy-ledger",
                format!("round {round}: ε {} in the report, {want} recomputed from rounds 1..={round}", p.epsilon),
            ));
        }
    }
    let last = ledger.last()?;
    Some(Invariant::pass(
        "privacy-ledger",
        format!(
            "ε {:.3} at δ {delta} after {} rounds, each entry equal to its recomputation",
            last.epsilon,
            ledger.len()
        ),
    ))
}

/// Under secure aggregation: every completed round was unmasked securely (never a silent fallback to the clear),
/// from at least its threshold of survivors, the survivors are exactly the round's contributors, and no dropped
/// site is among them.
fn secure_rounds(report: &RunReport) -> Option<Invariant> {
    report.rounds.iter().find(|r| r.secure.is_some())?;
    let mut dropped = Vec::new();
    for r in &report.rounds {
        let fail = |why: String| Some(Invariant::fail("secure-aggregation", format!("round {}: {why}", r.round)));
        let Some(s) = &r.secure else { return fail("aggregated in the clear".into()) };
        let mut contributors: Vec<u32> = r.contributors.iter().map(|c| c.site_id).collect();
        contributors.sort_unstable();
        if s.survivors != contributors {
            return fail(format!("survivors {:?} but contributors {contributors:?}", s.survivors));
        }
        if s.survivors.len() < s.threshold {
            return fail(format!("{} survivors, threshold {}", s.survivors.len(), s.threshold));
        }
        if let Some(d) = s.dropped.iter().find(|d| s.survivors.contains(d)) {
            return fail(format!("site {d} both dropped and a survivor"));
        }
        // Noise at the sites: the round is charged for the noise of exactly its survivors.
        if let Some(k) = r.privacy.and_then(|p| p.skellam) {
            if k.contributors != s.survivors.len() {
                return fail(format!("charged the noise of {} sites, {} survived", k.contributors, s.survivors.len()));
            }
        }
        dropped.extend(s.dropped.iter().map(|d| (r.round, *d)));
    }
    Some(Invariant::pass(
        "secure-aggregation",
        format!(
            "{} rounds unmasked securely from their survivors; dropped after sharing (round, site): {dropped:?}",
            report.rounds.len()
        ),
    ))
}

/// The scenario's invariants, judged from the report and what happened.
#[allow(clippy::too_many_arguments)]
pub(super) fn judge(
    s: &Scenario,
    dir: &Path,
    configured: u64,
    intruders: &BTreeSet<u32>,
    servers_started: u32,
    driven: Driven,
    left: Vec<String>,
    started: Instant,
) -> ScenarioResult {
    let Driven { server_status, timed_out, mut records, corrupted, max_seen } = driven;
    let limit = Duration::from_secs_f64(s.expect.timeout_secs);
    let report = RunReport::read(&dir.join("run")).unwrap_or_default();
    let completed = report.rounds.len() as u64;
    for r in records.iter_mut() {
        r.measure(&report);
    }
    let rounds: Vec<u64> = report.rounds.iter().map(|r| r.round).collect();
    let lost = (1..=max_seen).filter(|r| !rounds.contains(r)).count() as u64;
    let contiguous = rounds == (1..=completed).collect::<Vec<_>>();
    let last_server_log =
        std::fs::read_to_string(dir.join("logs").join(format!("server-{}.log", servers_started))).unwrap_or_default();
    let mut invariants = Vec::new();
    let outcome_ok = match (s.expect.outcome, &server_status) {
        _ if timed_out => Invariant::fail("outcome", format!("timed out after {:.0} s", limit.as_secs_f64())),
        (Outcome::Complete, Some(st)) if st.success() && report.finished && completed == configured => {
            Invariant::pass("outcome", format!("all {configured} rounds completed"))
        }
        (Outcome::Complete, st) => Invariant::fail(
            "outcome",
            format!("server {st:?}, {completed} of {configured} rounds, finished = {}", report.finished),
        ),
        (Outcome::Error, Some(st)) => {
            let needle = s.expect.error_contains.clone().unwrap_or_default();
            if !st.success() && last_server_log.contains(&needle) {
                Invariant::pass(
                    "outcome",
                    format!("stopped with the expected error ({needle:?}) after {completed} rounds"),
                )
            } else {
                Invariant::fail("outcome", format!("expected an error containing {needle:?}; server {st}"))
            }
        }
        (Outcome::Error, None) => Invariant::fail("outcome", "no server exit".into()),
    };
    invariants.push(outcome_ok);
    invariants.push(if lost == 0 && contiguous {
        Invariant::pass("no-round-lost", format!("rounds 1..={completed} each once (highest seen {max_seen})"))
    } else {
        Invariant::fail("no-round-lost", format!("{lost} lost; rounds in the report: {rounds:?}"))
    });
    let accepted: Vec<u64> = corrupted.iter().copied().filter(|c| report.resumed_from_round == Some(*c)).collect();
    invariants.push(if accepted.is_empty() {
        Invariant::pass(
            "no-corrupt-checkpoint-accepted",
            match corrupted.is_empty() {
                true => "none corrupted".into(),
                false => format!("damaged round {corrupted:?}; resumed from {:?}", report.resumed_from_round),
            },
        )
    } else {
        Invariant::fail("no-corrupt-checkpoint-accepted", format!("resumed from damaged round {accepted:?}"))
    });
    invariants.push(if left.is_empty() {
        Invariant::pass("no-process-left", "every process ended by itself".into())
    } else {
        Invariant::fail("no-process-left", format!("still running 30 s after the server: {left:?}"))
    });
    if let Some(inv) = resumed_mid_round(s, &report) {
        invariants.push(inv);
    }
    if let Some(inv) = privacy_ledger(&report) {
        invariants.push(inv);
    }
    if let Some(inv) = secure_rounds(&report) {
        invariants.push(inv);
    }
    if !intruders.is_empty() {
        let joined: Vec<u32> = intruders.iter().copied().filter(|id| report.site_classes.contains_key(id)).collect();
        invariants.push(if joined.is_empty() {
            Invariant::pass("intruder-refused", format!("site(s) {intruders:?} never in membership"))
        } else {
            Invariant::fail("intruder-refused", format!("intruder(s) {joined:?} joined"))
        });
    }
    ScenarioResult {
        name: s.name.clone(),
        about: s.about.clone(),
        faults: s.fault_kinds(),
        rounds_completed: completed,
        rounds_configured: configured,
        rounds_lost: lost,
        corrupt_checkpoints_accepted: accepted.len() as u64,
        fault_records: records,
        invariants,
        distance_to_baseline: None,
        wall_secs: started.elapsed().as_secs_f64(),
        dir: dir.to_path_buf(),
        notes: Vec::new(),
    }
}
