//! Site updates as they arrive on the bulk plane. The actor does only the cheap part — the metadata, the round's
//! bookkeeping (is this site asked, is this its first update) — and hands the upload to the aggregator, which decodes
//! and validates it on the blocking pool and folds it on its thread; its answer (`ServerMsg::Folded`) counts the site
//! in or drops it from the round.
//! A refusal is counted under its typed reason, from here or from the thread.

use super::aggregator::Check;
use super::state::*;
use crate::actors::messages::{decode_masked, Folded, MaskedArrival, ServerMsg, UpdateMeta};
use crate::cluster::bulk::Upload;
use crate::federation::fencing::FrameCheck;
use crate::federation::round::UpdateVerdict;
use crate::federation::validate::{round_mismatch, Refused, RejectReason, UpdateHeader};
use ractor::ActorRef;

/// An update arrived on the bulk plane: refuse it at once, or hand it to the aggregator thread.
pub(super) fn on_upload(me: &ActorRef<ServerMsg>, st: &mut ServerState, up: Upload) {
    let (site_id, round) = (up.site_id, up.round);
    let meta = match admit_upload(st, &up) {
        Ok(meta) => meta,
        Err((kind, why)) => {
            reject(st, site_id, round, kind, why);
            return;
        }
    };
    let attempt = st.current.as_ref().map(|c| c.attempt).unwrap_or(0);
    if let Some(masked) = meta.masked {
        // A masked input: only its shape can be checked, by the protocol once decoded (off the actor).
        let me = me.clone();
        tokio::spawn(async move {
            let body = tokio::task::spawn_blocking(move || decode_masked(site_id, &up.body)).await;
            let input = body.unwrap_or_else(|e| Err(format!("decoding the masked input panicked: {e}")));
            let _ =
                me.cast(ServerMsg::Masked(Box::new(MaskedArrival { site: meta.site, round, attempt: masked, input })));
        });
        return;
    }
    let header =
        UpdateHeader { protocol_version: meta.protocol, round: meta.round, num_samples: meta.site.num_samples };
    // With a round open, the global weights are that round's: they change only once it is aggregated.
    let check = Check { header, global: st.global.clone() };
    st.aggregator.fold(me, up, check, meta.site, attempt);
}

/// The metadata and the round's bookkeeping: on success the site's update is in check.
fn admit_upload(st: &mut ServerState, up: &Upload) -> Result<UpdateMeta, (Refused, String)> {
    let malformed = |why: String| (Refused::Invalid(RejectReason::Malformed), why);
    let site_id = up.site_id;
    let meta = match UpdateMeta::decode(&up.meta) {
        Ok(m) if m.site.site_id == site_id && m.round == up.round => m,
        Ok(m) => {
            return Err(malformed(format!(
                "metadata names site {} round {}, the upload site {site_id} round {}",
                m.site.site_id, m.round, up.round
            )));
        }
        Err(why) => return Err(malformed(why)),
    };
    super::secure::expects_upload(st, meta.masked)?;
    if meta.masked.is_some() && meta.site.num_samples == 0 {
        return Err((Refused::Invalid(RejectReason::ZeroSamples), "a masked input of a site with no samples".into()));
    }
    if let (Some(_), Some(max)) = (meta.masked, st.aggregator.policy().max_samples) {
        // The server weighs a survivor by the sample count it claims: the same bound as for a plain update.
        if meta.site.num_samples > max {
            return Err((
                Refused::Invalid(RejectReason::SampleBound),
                format!("claims {} samples, over the bound {max}", meta.site.num_samples),
            ));
        }
    }
    // Fencing: the update must come under the site's current admission, with that admission's token.
    match st.fencing.check(site_id, meta.generation) {
        FrameCheck::Current(adm) if adm.token == up.token => {}
        // An earlier admission of the same process (it re-joined while this upload was on the way): its own work.
        FrameCheck::Stale => {}
        FrameCheck::Fenced { instance, current } => {
            st.tell_fenced(site_id, instance, current);
            return Err((
                Refused::Fenced,
                format!(
                    "process {instance:016x} of site {site_id} (generation {}) was taken over by generation {}",
                    meta.generation, current.generation
                ),
            ));
        }
        FrameCheck::Current(_) | FrameCheck::Unknown => {
            return Err((
                Refused::Fenced,
                format!(
                    "generation {} is not a current admission of site {site_id} (or not its token)",
                    meta.generation
                ),
            ));
        }
    }
    let Some(current) = st.current.as_mut() else {
        return Err((
            Refused::Invalid(RejectReason::StaleRound),
            format!("update for round {} while no round is open", meta.round),
        ));
    };
    match current.on_update(site_id, meta.round) {
        UpdateVerdict::Accept => Ok(meta),
        UpdateVerdict::WrongRound { expected, got } => {
            Err((Refused::Invalid(RejectReason::StaleRound), round_mismatch(got, expected).to_string()))
        }
        verdict => Err((verdict.clone().into(), format!("{verdict:?}"))),
    }
}

/// The aggregator thread checked an update: count the site in, or drop it from the round.
pub(super) fn on_folded(st: &mut ServerState, f: Folded) {
    let Some(current) = st.current.as_mut().filter(|c| c.round == f.round && c.attempt == f.attempt) else {
        // Not reachable by construction (a round with an update in check does not close), but never counted if so.
        let why = format!("round {} attempt {} closed while its update was checked", f.round, f.attempt);
        return reject(st, f.site.site_id, f.round, Refused::Invalid(RejectReason::StaleRound), why);
    };
    current.on_checked(f.site.site_id, f.outcome.is_ok());
    match f.outcome {
        Ok(secs) => {
            st.obs.metrics.update_accepted();
            st.aggregate_secs += secs;
            st.contributors.push(f.site);
            st.progress.sites.inc(1);
        }
        Err((kind, why)) => reject(st, f.site.site_id, f.round, kind, why),
    }
}

fn reject(st: &mut ServerState, site_id: u32, round: u64, kind: Refused, why: String) {
    tracing::warn!(site_id, round, %why, reason = kind.label(), "update rejected");
    st.obs.metrics.update_rejected(kind.label());
    st.rejected.push((site_id, why));
}
