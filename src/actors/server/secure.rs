//! Secure aggregation on the server's round loop: the shell around `federation::secagg::SecureRound`.
//!
//! Why it rides on the round's own bookkeeping: the masked inputs come after training, exactly when plain updates
//! would, so they arrive on the bulk plane as uploads, are admitted by `federation::round` like updates (quorum,
//! grace, deadline, lost sites) and decoded off this mailbox; what is new are the three small stages around them
//! (keys, shares, reveals), each closed by "everyone answered, or `secagg.stage_deadline_secs`". The protocol's
//! decisions come back as [`Next`] and are carried out here; removing the masks (heavy) runs on the aggregator
//! thread, which folds the survivors' mean into the strategy as one update. A round whose protocol fails — too few
//! sites left, a tampered share that cannot be told apart — is retried like a round without quorum: no model
//! comes out of a sum that cannot be trusted. What the round loop does next comes back as [`After`], so this shell
//! sits beside the round loop (`rounds`), not above or below it.

use std::time::Duration;

use ractor::{ActorProcessingErr, ActorRef};

pub(super) use super::secure_state::{begin, upcoming_release};

use super::aggregator::UnmaskJob;
use super::state::ServerState;
use crate::actors::messages::{
    Aggregated, MaskedArrival, SecAggFromSite, SecAggToSite, ServerMsg, SiteMsg, ToSite, UnmaskedRound,
};
use crate::federation::secagg::{Next, SecAggError, SecureRound, Stage};
use crate::federation::validate::{Refused, RejectReason};

/// What the round loop does after a step of the protocol.
#[must_use]
pub(super) enum After {
    Nothing,
    /// The protocol failed (closed): retry the round, as one that missed quorum.
    Retry {
        received: usize,
        needed: usize,
    },
    /// The masks are off: the round is aggregated.
    Aggregated(Box<Aggregated>),
    /// A masked input was counted (or refused): the round's bookkeeping may let it close.
    CheckRound,
}

/// The protocol of attempt `attempt` of round `round`, while it is open and not handed over for unmasking.
fn driver(st: &mut ServerState, round: u64, attempt: u32) -> Option<&mut SecureRound> {
    st.secure.as_mut().filter(|o| o.is(round, attempt)).and_then(|o| o.driver.as_mut())
}

/// Arms the deadline of `stage` of the open secure round.
pub(super) fn arm(me: &ActorRef<ServerMsg>, st: &ServerState, stage: Stage) {
    let (Some(open), Some(settings)) = (&st.secure, st.secagg) else { return };
    let (round, attempt) = (open.round, open.attempt);
    me.send_after(Duration::from_secs_f64(settings.stage_deadline_secs), move || ServerMsg::SecAggDeadline {
        round,
        attempt,
        stage,
    });
}

/// A site's answer to a stage.
pub(super) fn on_frame(
    me: &ActorRef<ServerMsg>,
    st: &mut ServerState,
    site: u32,
    round: u64,
    attempt: u32,
    stage: SecAggFromSite,
) -> Result<After, ActorProcessingErr> {
    let Some(driver) = driver(st, round, attempt) else {
        tracing::debug!(site_id = site, round, attempt, "a secure-aggregation frame of no open secure round");
        return Ok(After::Nothing);
    };
    let decided = match stage {
        SecAggFromSite::Advertise(adv) if adv.site == site => driver.on_advert(adv),
        SecAggFromSite::Shares(sealed) => driver.on_shares(site, sealed),
        SecAggFromSite::Reveal(reveals) => driver.on_reveal(site, reveals),
        SecAggFromSite::Advertise(adv) => {
            Err(SecAggError::Refused(format!("site {site} advertised keys in the name of site {}", adv.site)))
        }
    };
    match decided {
        Ok(next) => act(me, st, next),
        Err(e) => {
            tracing::warn!(site_id = site, round, error = %e, "secure-aggregation message refused");
            st.event(Some(site), "secagg-refused", e.to_string());
            Ok(After::Nothing)
        }
    }
}

/// A stage's deadline passed.
pub(super) fn on_deadline(
    me: &ActorRef<ServerMsg>,
    st: &mut ServerState,
    round: u64,
    attempt: u32,
    stage: Stage,
) -> Result<After, ActorProcessingErr> {
    let Some(driver) = driver(st, round, attempt) else {
        return Ok(After::Nothing);
    };
    let active_before = driver.active().len();
    let next = driver.on_deadline(stage);
    if next != Next::Wait {
        tracing::info!(round, ?stage, active_before, "secure-aggregation stage deadline");
    }
    act(me, st, next)
}

/// Carries out the decisions deferred while handling the last message.
pub(super) fn drain(me: &ActorRef<ServerMsg>, st: &mut ServerState) -> Result<After, ActorProcessingErr> {
    loop {
        let Some(next) = st.secure.as_mut().and_then(|o| (!o.deferred.is_empty()).then(|| o.deferred.remove(0))) else {
            return Ok(After::Nothing);
        };
        if let retry @ After::Retry { .. } = act(me, st, next)? {
            return Ok(retry);
        }
    }
}

/// Whether a masked input of `attempt` is what the open round expects of an upload (`Err`: why not).
pub(super) fn expects_upload(st: &ServerState, masked: Option<u32>) -> Result<(), (Refused, String)> {
    let malformed = |why: String| Err((Refused::Invalid(RejectReason::Malformed), why));
    match (&st.secure, masked) {
        (None, None) => Ok(()),
        (Some(open), Some(a)) if a == open.attempt => Ok(()),
        (Some(open), Some(a)) => malformed(format!("a masked input of attempt {a}; attempt {} is open", open.attempt)),
        (Some(_), None) => malformed("weights in the clear in a round that is aggregated securely".into()),
        (None, Some(_)) => malformed("a masked input in a round that is not aggregated securely".into()),
    }
}

/// A masked input was decoded: into the protocol, and the site counted (or dropped) in the round.
pub(super) fn on_masked(
    me: &ActorRef<ServerMsg>,
    st: &mut ServerState,
    m: MaskedArrival,
) -> Result<After, ActorProcessingErr> {
    let site_id = m.site.site_id;
    let decided = match (driver(st, m.round, m.attempt), m.input) {
        (None, _) => Err(format!("round {} attempt {} is not open any more", m.round, m.attempt)),
        (Some(_), Err(e)) => Err(e),
        (Some(driver), Ok(input)) => driver.on_masked(input).map_err(|e| e.to_string()),
    };
    let next = match decided {
        Ok(next) => {
            if let Some(open) = st.secure.as_mut() {
                open.samples.insert(site_id, m.site.num_samples);
                // Lost while its input was decoded: a survivor that will not reveal.
                if open.lost_in_check.remove(&site_id) {
                    open.lost(site_id, false);
                }
            }
            if let Some(current) = st.current.as_mut().filter(|c| c.round == m.round && c.attempt == m.attempt) {
                current.on_checked(site_id, true);
            }
            st.obs.metrics.update_accepted();
            st.contributors.push(m.site);
            st.progress.sites.inc(1);
            next
        }
        Err(why) => {
            if let Some(current) = st.current.as_mut().filter(|c| c.round == m.round && c.attempt == m.attempt) {
                current.on_checked(site_id, false);
            }
            tracing::warn!(site_id, round = m.round, %why, "masked input refused");
            st.obs.metrics.update_rejected(Refused::Invalid(RejectReason::Malformed).label());
            st.rejected.push((site_id, why));
            // The site is out of the mask stage: the protocol treats it as dropped after sharing.
            if let Some(open) = st.secure.as_mut() {
                open.lost(site_id, false);
            }
            Next::Wait
        }
    };
    if let retry @ After::Retry { .. } = act(me, st, next)? {
        return Ok(retry);
    }
    match drain(me, st)? {
        retry @ After::Retry { .. } => Ok(retry),
        _ => Ok(After::CheckRound),
    }
}

/// The round's bookkeeping says the masked inputs are in (everyone answered, or the grace period or deadline
/// passed with quorum): close the mask stage with the inputs in hand. Later stages close by themselves.
pub(super) fn close_mask(me: &ActorRef<ServerMsg>, st: &mut ServerState) -> Result<After, ActorProcessingErr> {
    let Some(driver) = st.secure.as_mut().and_then(|o| o.driver.as_mut()) else { return Ok(After::Nothing) };
    if driver.stage() != Stage::Mask {
        return Ok(After::Nothing);
    }
    let next = driver.on_deadline(Stage::Mask);
    act(me, st, next)
}

fn cast(st: &ServerState, site: u32, round: u64, attempt: u32, stage: SecAggToSite) {
    if let Some(entry) = st.sites.get(&site) {
        if let Err(e) = entry.actor.cast(SiteMsg::FromServer(Ok(ToSite::SecAgg { round, attempt, stage }))) {
            tracing::warn!(site_id = site, error = %e, "cannot send a secure-aggregation stage");
        }
    }
}

/// Carries out one decision of the protocol.
fn act(me: &ActorRef<ServerMsg>, st: &mut ServerState, next: Next) -> Result<After, ActorProcessingErr> {
    let Some((round, attempt)) = st.secure.as_ref().map(|o| (o.round, o.attempt)) else { return Ok(After::Nothing) };
    match next {
        Next::Wait => {}
        Next::Roster(list) => {
            tracing::info!(round, sites = list.len(), "secure aggregation: keys in, sharing");
            for (site, adverts) in list {
                cast(st, site, round, attempt, SecAggToSite::Roster(adverts));
            }
            arm(me, st, Stage::Share);
        }
        Next::Shares(list) => {
            tracing::info!(round, sites = list.len(), "secure aggregation: shares routed, waiting for masked inputs");
            for (site, sealed) in list {
                cast(st, site, round, attempt, SecAggToSite::Shares(sealed));
            }
        }
        Next::Reveal(req) => {
            tracing::info!(round, survivors = ?req.survivors, dropped = ?req.dropped, "secure aggregation: unmasking");
            if !req.dropped.is_empty() {
                st.event(None, "secagg-dropped", format!("shared but sent no masked input: {:?}", req.dropped));
            }
            for &site in &req.survivors {
                cast(st, site, round, attempt, SecAggToSite::Unmask(req.clone()));
            }
            arm(me, st, Stage::Unmask);
        }
        Next::Unmask => return unmask(me, st),
        Next::Fail(e) => return Ok(fail(st, e.to_string())),
    }
    Ok(After::Nothing)
}

/// Every survivor revealed (or the deadline passed): the round closes and the aggregator removes the masks.
fn unmask(me: &ActorRef<ServerMsg>, st: &mut ServerState) -> Result<After, ActorProcessingErr> {
    // The round's bookkeeping goes to `closing` with the protocol's state; without it the round cannot close (not
    // reachable: the round stays current until here), so it is retried rather than left waiting.
    let Some(mut current) = st.current.take() else {
        return Ok(fail(st, "the round closed before its masks were removed".into()));
    };
    let Some((open, secure)) = st.secure.as_mut().and_then(|o| o.driver.take().map(|d| (o, d))) else {
        st.current = Some(current);
        return Ok(After::Nothing);
    };
    let job = UnmaskJob {
        secure,
        samples: open.samples.clone(),
        total: open.train.total_samples,
        uniform: open.train.uniform,
        max_norm: st.cfg.federation.max_update_norm,
    };
    let (round, attempt) = (open.round, open.attempt);
    current.close();
    st.aggregator.unmask(me, round, attempt, job)?;
    st.closing = Some(current);
    st.publish_status(&format!("unmasking round {round}"));
    Ok(After::Nothing)
}

/// The protocol cannot complete: the round is to be retried (or the run ends past its retries).
fn fail(st: &mut ServerState, why: String) -> After {
    tracing::warn!(%why, "secure aggregation failed; the round is retried");
    st.event_in(st.completed + 1, None, "secagg-failed", why);
    let received = st.current.as_ref().or(st.closing.as_ref()).map_or(0, |c| c.received().len());
    st.secure = None;
    st.closing = None;
    st.contributors.clear();
    After::Retry { received, needed: st.cfg.federation.min_sites as usize }
}

/// The aggregator removed the masks: the round goes on as an aggregated one; or unmasking failed closed.
pub(super) fn on_unmasked(st: &mut ServerState, u: UnmaskedRound) -> After {
    if !st.secure.as_ref().is_some_and(|o| o.is(u.round, u.attempt)) {
        tracing::warn!(round = u.round, attempt = u.attempt, "an unmasking for a round that is not closing; ignored");
        return After::Nothing;
    }
    match u.result {
        Err(why) => {
            st.aggregator.encoding = None;
            fail(st, format!("unmasking failed (closed: no model released): {why}"))
        }
        Ok(aggregate) => {
            st.secure = None;
            let record = aggregate.secure.clone().unwrap_or_default();
            for (holder, owner) in &record.bad_shares {
                st.event_in(
                    u.round,
                    Some(*holder),
                    "secagg-bad-share",
                    format!("site {holder} revealed a share of site {owner}'s secret that fails its check; left out"),
                );
            }
            tracing::info!(
                round = u.round,
                survivors = ?record.survivors,
                dropped = ?record.dropped,
                secs = aggregate.secs,
                "secure aggregation: unmasked"
            );
            After::Aggregated(Box::new(Aggregated { round: u.round, result: Ok(aggregate) }))
        }
    }
}
