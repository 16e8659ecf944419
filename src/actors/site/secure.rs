//! A site's part of secure aggregation: the shell around `federation::secagg::SiteRound`.
//!
//! Why the update waits for the shares: a site masks its update with one pairwise mask per neighbour whose shares
//! it holds (the server can only remove masks whose keys it can rebuild), so the masked input is made once both
//! are in — the trained update and the shares the server routed here — whichever comes last. Masking (a ChaCha
//! stream per neighbour over every value) runs on the blocking pool, never on this mailbox. The masked input goes
//! up the bulk plane like an update, but is never kept on disk: its keys die with the attempt, so a restarted site
//! trains the round's next attempt with fresh keys instead of re-sending it.

use ractor::{ActorProcessingErr, ActorRef};

use super::upload::Uploader;
use super::SiteState;
use crate::actors::messages::{
    encode_masked, SecAggFromSite, SecAggToSite, SecureTrain, SiteMsg, ToServer, UpdateMeta,
};
use crate::faults::ExitPoint;
use crate::federation::secagg::{delta_values, SiteRound as Protocol};
use crate::federation::weights::Weights;

/// The site's state in one attempt of a secure round.
pub(super) struct SiteSecure {
    round: u64,
    attempt: u32,
    /// This site's share of the round's samples (its masked input is Δ · weight).
    weight: f32,
    /// `None` while it is masking on the blocking pool (or after a failure).
    protocol: Option<Protocol>,
    shares_in: bool,
    /// The trained update, its metadata and the round's global weights, waiting for the shares.
    ready: Option<(UpdateMeta, Weights, Weights)>,
}

/// A round was announced: whether this site takes part (`false`: it told the server why not). A secure round gets
/// fresh keys and the advertisement is sent. A site takes part only in rounds that match its own configuration:
/// one configured for secure aggregation never sends its update in the clear, and checks that the round's
/// parameters (neighbour graph, threshold, quantization) are the ones its configuration gives for the round's
/// participants — a server cannot weaken them (say, a threshold of 1) without the sites refusing.
pub(super) fn begin(st: &mut SiteState, round: u64, secure: Option<Box<SecureTrain>>) -> bool {
    st.secure = None;
    let refuse = |st: &SiteState, why: String| {
        tracing::error!(round, %why, "refusing the round");
        st.out_of_round(round, why);
        false
    };
    let s =
        match (st.args.secagg, secure) {
            (None, None) => return true,
            (Some(_), None) => return refuse(
                st,
                "this site's configuration requires secure aggregation (secagg.enabled) and the server asked for its \
                 update in the clear"
                    .into(),
            ),
            (None, Some(_)) => return refuse(
                st,
                "the server asked for secure aggregation, which this site's configuration does not enable (different \
                 configurations?)"
                    .into(),
            ),
            (Some(options), Some(s)) => match options.params(round, &s.params.participants, s.params.values) {
                Ok(expected) if expected == s.params => s,
                Ok(expected) => {
                    return refuse(
                        st,
                        format!(
                        "the round's secure-aggregation parameters {:?} are not the ones this site's configuration \
                         gives for its participants ({expected:?})",
                        s.params
                    ),
                    )
                }
                Err(e) => return refuse(st, format!("secure-aggregation parameters refused: {e}")),
            },
        };
    let (site, participants) = (st.args.site_id, s.params.participants.len().max(1));
    match Protocol::new(s.params, site) {
        Ok((protocol, adv)) => {
            let weight = if s.uniform {
                1.0 / participants as f32
            } else {
                (st.args.num_samples as f64 / s.total_samples.max(1) as f64) as f32
            };
            tracing::info!(round, attempt = s.attempt, weight, "secure round: keys advertised");
            st.secure = Some(SiteSecure {
                round,
                attempt: s.attempt,
                weight,
                protocol: Some(protocol),
                shares_in: false,
                ready: None,
            });
            send(st, round, s.attempt, SecAggFromSite::Advertise(adv));
            true
        }
        Err(e) => refuse(st, format!("secure-aggregation parameters refused: {e}")),
    }
}

fn send(st: &SiteState, round: u64, attempt: u32, stage: SecAggFromSite) {
    let (site_id, generation) = (st.args.site_id, st.generation());
    st.send(ToServer::SecAgg { site_id, generation, round, attempt, stage });
}

/// A stage of the server's arrived.
pub(super) fn on_stage(
    me: &ActorRef<SiteMsg>,
    st: &mut SiteState,
    round: u64,
    attempt: u32,
    stage: SecAggToSite,
) -> Result<(), ActorProcessingErr> {
    let site = st.args.site_id;
    let Some(sec) = st.secure.as_mut().filter(|s| s.round == round && s.attempt == attempt) else {
        tracing::debug!(round, attempt, "a secure-aggregation stage of another attempt; ignored");
        return Ok(());
    };
    let Some(protocol) = sec.protocol.as_mut() else {
        tracing::warn!(round, "a secure-aggregation stage while masking or after a failure; ignored");
        return Ok(());
    };
    let answer = match stage {
        SecAggToSite::Roster(adverts) => protocol.share(&adverts).map(|s| Some(SecAggFromSite::Shares(s))),
        SecAggToSite::Shares(sealed) => protocol.receive(&sealed).map(|()| {
            sec.shares_in = true;
            None
        }),
        SecAggToSite::Unmask(req) => protocol.unmask(&req).map(|mut reveals| {
            if st.args.faults.tamper_share(round) {
                if let Some(last) = reveals.iter_mut().find(|r| r.owner != site).and_then(|r| r.share.last_mut()) {
                    tracing::warn!(round, "injected fault: altering a revealed share");
                    *last ^= 0x5a;
                }
            }
            Some(SecAggFromSite::Reveal(reveals))
        }),
    };
    match answer {
        Ok(Some(frame)) => send(st, round, attempt, frame),
        Ok(None) => mask_if_ready(me, st),
        Err(e) => {
            // A share that does not open, a request that would reveal both secrets of a neighbour: this site stops
            // taking part (the server counts it as dropped) rather than go on with what it cannot trust.
            tracing::error!(round, error = %e, "secure aggregation refused here; out of the round");
            st.secure = None;
            st.out_of_round(round, format!("secure aggregation: {e}"));
        }
    }
    Ok(())
}

/// Training finished in a secure round: the update waits for the shares (or is masked now). `false`: the round is
/// not secure here, the update goes in the clear.
pub(super) fn on_trained(
    me: &ActorRef<SiteMsg>,
    st: &mut SiteState,
    meta: UpdateMeta,
    update: Weights,
    global: Weights,
) -> Option<(UpdateMeta, Weights)> {
    let Some(sec) = st.secure.as_mut().filter(|s| s.round == meta.round) else { return Some((meta, update)) };
    sec.ready = Some((meta, update, global));
    mask_if_ready(me, st);
    None
}

fn mask_if_ready(me: &ActorRef<SiteMsg>, st: &mut SiteState) {
    let Some(sec) = st.secure.as_mut().filter(|s| s.shares_in && s.ready.is_some()) else { return };
    let (Some((mut meta, update, global)), Some(mut protocol)) = (sec.ready.take(), sec.protocol.take()) else {
        return;
    };
    let (round, attempt, weight) = (sec.round, sec.attempt, sec.weight);
    // The trainer is idle now: the masks may use the threads its budget gives it.
    let threads = usize::try_from(st.args.trainer.threads).unwrap_or(1).max(1);
    meta.masked = Some(attempt);
    let me = me.clone();
    tokio::spawn(async move {
        let done = tokio::task::spawn_blocking(move || {
            let masked = delta_values(&update, &global)
                .and_then(|delta| protocol.mask_on(&delta, weight, threads))
                .map(|(input, clipped)| (encode_masked(&input.values), clipped))
                .map_err(|e| e.to_string());
            (protocol, masked)
        })
        .await;
        let msg = match done {
            Ok((protocol, result)) => {
                SiteMsg::Masked { round, attempt, protocol: Some(Box::new(protocol)), meta, result }
            }
            Err(e) => {
                SiteMsg::Masked { round, attempt, protocol: None, meta, result: Err(format!("masking panicked: {e}")) }
            }
        };
        let _ = me.cast(msg);
    });
}

/// The masked input is made: keep the protocol's state for the reveal, and upload it.
pub(super) fn on_masked(
    me: &ActorRef<SiteMsg>,
    st: &mut SiteState,
    round: u64,
    attempt: u32,
    protocol: Option<Box<Protocol>>,
    meta: UpdateMeta,
    result: Result<(Vec<u8>, usize), String>,
) {
    let Some(sec) = st.secure.as_mut().filter(|s| s.round == round && s.attempt == attempt) else { return };
    sec.protocol = protocol.map(|p| *p);
    let body = match result {
        Ok((body, clipped)) => {
            if clipped > 0 {
                tracing::warn!(round, clipped, "values of the weighted update clipped to secagg.clip_range");
            }
            body
        }
        Err(e) => {
            tracing::error!(round, error = %e, "cannot mask the update; out of the round");
            st.secure = None;
            st.out_of_round(round, format!("cannot mask the update: {e}"));
            return;
        }
    };
    let Some((uploader, generation)) = Uploader::of(st, me) else {
        tracing::warn!(round, "no admission token or bulk endpoint: the masked input is not sent");
        return;
    };
    st.args.faults.exit_at(round, ExitPoint::BeforeUpload);
    let mut meta = meta;
    meta.generation = generation;
    let me = me.clone();
    tokio::spawn(async move {
        let result = match meta.encode() {
            Ok(m) => uploader.send(round, &m, &body).await,
            Err(e) => Err(e),
        };
        let _ = me.cast(SiteMsg::Uploaded { round, result });
    });
}
