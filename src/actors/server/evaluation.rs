//! Scores of the global generator: the evaluator child's per-round numbers, and federated evaluation — asking the
//! member sites to score a durable round on their own validation splits and folding the answers.

use std::collections::BTreeSet;

use ractor::ActorRef;

use super::state::*;
use crate::actors::messages::{ServerMsg, SiteEval, SiteMsg, ToSite, PROTOCOL_VERSION};
use crate::eval::gan_evaluator::EvalReport;

/// A round's score came back: add it to the round's record.
pub(super) fn on_evaluated(
    me: &ActorRef<ServerMsg>,
    st: &mut ServerState,
    round: u64,
    result: Result<EvalReport, String>,
) {
    st.pending_eval.remove(&round);
    match result {
        Ok(eval) => {
            if let Some(r) = st.report.rounds.iter_mut().find(|r| r.round == round) {
                r.frechet_distance = Some(eval.frechet_distance);
                r.samples_png = Some(eval.samples_png.clone());
                r.quality = eval.quality.clone();
            }
            if let Some(q) = &eval.quality {
                st.obs.metrics.quality(&q.summary);
            }
            st.progress.rounds.set_message(format!("FD {:.3}", eval.frechet_distance));
            tracing::info!(round, frechet_distance = eval.frechet_distance, "round evaluated");
            st.obs.metrics.frechet_distance(eval.frechet_distance);
            st.write_report();
        }
        Err(e) => {
            tracing::warn!(round, error = %e, "evaluation failed");
            // In the report too: a round without scores must say why (e.g. a generator whose output is NaN).
            st.event(None, "evaluation-failed", format!("round {round}: {e}"));
        }
    }
    finish_if_settled(me, st);
}

/// A site's scores of a round's global generator (federated evaluation).
pub(super) fn on_site_evaluated(
    me: &ActorRef<ServerMsg>,
    st: &mut ServerState,
    site_id: u32,
    round: u64,
    result: Result<SiteEval, String>,
) {
    let num_classes = st.num_classes;
    let Some(e) = st.site_evals.get_mut(&round) else {
        tracing::info!(site_id, round, "a late or unasked evaluation; ignored");
        return;
    };
    if !e.asked.contains(&site_id) {
        tracing::warn!(site_id, round, "an evaluation from a site that was not asked; ignored");
        return;
    }
    // A peer's numbers are checked like its updates before they reach the report.
    let result =
        result.and_then(|ev| ev.check(round, num_classes).map(|()| ev).map_err(|why| format!("refused: {why}")));
    if let Err(why) = &result {
        tracing::warn!(site_id, round, reason = %why, "the site has no usable evaluation");
    }
    e.answers.insert(site_id, result);
    st.settle_site_evals(false);
    finish_if_settled(me, st);
}

impl ServerState {
    /// Round `round` is durable: ask every site to score its global generator on its validation split, when the
    /// configuration says this round is evaluated at the sites. Older evaluations still open are settled first
    /// with the answers they have (a site that rejoined meanwhile will not answer them).
    pub(super) fn ask_sites_to_evaluate(&mut self, round: u64) {
        let e = &self.cfg.evaluation;
        if self.cfg.model.bench_params.is_some() || !e.at_sites_due(round, self.cfg.federation.rounds) {
            return;
        }
        self.settle_site_evals(true);
        let Some(weights) = self.retain_round_blob(round) else {
            tracing::warn!(round, "cannot publish the round's weights; no federated evaluation of it");
            return;
        };
        let frame = ToSite::Evaluate { protocol: PROTOCOL_VERSION, round, weights };
        let mut asked = BTreeSet::new();
        for (id, site) in &self.sites {
            match site.actor.cast(SiteMsg::FromServer(Ok(frame.clone()))) {
                Ok(()) => {
                    asked.insert(*id);
                }
                Err(e) => tracing::warn!(site_id = id, round, error = %e, "cannot ask the site to evaluate"),
            }
        }
        if !asked.is_empty() {
            tracing::info!(round, sites = ?asked, "federated evaluation asked");
            self.site_evals.insert(round, SiteEvalRound { asked, ..SiteEvalRound::default() });
        }
    }

    /// Folds the federated evaluations that have every answer (with `force`: all of them, with what they have)
    /// into their rounds' records and `/metrics`.
    pub(super) fn settle_site_evals(&mut self, force: bool) {
        let ready: Vec<u64> =
            self.site_evals.iter().filter(|(_, e)| force || e.complete()).map(|(round, _)| *round).collect();
        for round in ready {
            let Some(e) = self.site_evals.remove(&round) else { continue };
            let missing: Vec<u32> = e.asked.iter().filter(|id| !e.answers.contains_key(id)).copied().collect();
            match crate::federation::evaluation::aggregate(round, self.num_classes, &e.answers, missing) {
                Some(f) => {
                    tracing::info!(
                        round,
                        fd = f.frechet_distance,
                        precision = f.precision,
                        recall = f.recall,
                        sites = f.sites.len(),
                        failed = f.failed.len(),
                        missing = f.missing.len(),
                        "federated evaluation"
                    );
                    self.obs.metrics.federated_eval(&f);
                    if let Some(r) = self.report.rounds.iter_mut().find(|r| r.round == round) {
                        r.federated_eval = Some(f);
                    }
                    self.write_report();
                }
                None => {
                    let why: Vec<String> = e
                        .answers
                        .iter()
                        .filter_map(|(id, a)| a.as_ref().err().map(|w| format!("site {id}: {w}")))
                        .collect();
                    tracing::warn!(round, reasons = ?why, "no site could evaluate the round");
                    self.event(None, "federated-eval-failed", format!("round {round}: {}", why.join("; ")));
                }
            }
        }
    }
}
