//! Secure aggregation on the server's round loop: the shell around `federation::secagg::SecureRound`.
//!
//! Why it rides on the round's own bookkeeping: the masked inputs come after training, exactly when plain updates
//! would, so they arrive on the bulk plane as uploads, are admitted by `federation::round` like updates (quorum,
//! grace, deadline, lost sites) and decoded off this mailbox; what is new are the three small stages around them
//! (keys, shares, reveals), each closed by "everyone answered, or `secagg.stage_deadline_secs`". The protocol's
//! decisions come back as [`Next`] and are carried out here; removing the masks (heavy) runs on the aggregator
//! thread, which folds the survivors' mean into the strategy as one update. A round whose protocol fails — too few
//! sites left, a tampered share that cannot be told apart — is retried like a round without quorum: no model
//! comes out of a sum that cannot be trusted.

use std::collections::BTreeMap;
use std::time::Duration;

use ractor::{ActorProcessingErr, ActorRef};

use super::aggregator::UnmaskJob;
use super::rounds::{on_aggregated, retry_round};
use super::state::ServerState;
use crate::actors::messages::{
    Aggregated, MaskedArrival, SecAggFromSite, SecAggToSite, SecureTrain, ServerMsg, SiteMsg, ToSite, UnmaskedRound,
};
use crate::config::SecAggSettings;
use crate::federation::secagg::{MaskedInput, Next, SecAggError, SecureRound, Stage};
use crate::federation::validate::{Refused, RejectReason};

/// The open round's secure aggregation.
pub(super) struct OpenSecure {
    round: u64,
    attempt: u32,
    /// `None` once handed to the aggregator thread for unmasking.
    driver: Option<SecureRound>,
    /// What the participants were told (resent to nobody: a site that joins mid-round waits for the next one).
    pub(super) train: Box<SecureTrain>,
    /// The survivors' sample counts, from their uploads' metadata.
    samples: BTreeMap<u32, u64>,
    /// Decisions taken where no actor reference is at hand (a site lost), carried out after the message.
    deferred: Vec<Next>,
}

impl OpenSecure {
    pub(super) fn is(&self, round: u64, attempt: u32) -> bool {
        self.round == round && self.attempt == attempt
    }
}

/// Opens round `round`'s secure aggregation over `participants` (each with its sample count), or says why it
/// cannot (fewer sites than its threshold): `Ok(None)` when secure aggregation is off.
pub(super) fn begin(
    settings: Option<SecAggSettings>,
    round: u64,
    attempt: u32,
    participants: &BTreeMap<u32, u64>,
    len: usize,
    quorum: usize,
) -> Result<Option<OpenSecure>, SecAggError> {
    let Some(settings) = settings else { return Ok(None) };
    let ids: Vec<u32> = participants.keys().copied().collect();
    let params = settings.options.params(round, &ids)?;
    let driver = SecureRound::new(params.clone(), len, quorum)?;
    let total_samples = participants.values().sum::<u64>().max(1);
    Ok(Some(OpenSecure {
        round,
        attempt,
        driver: Some(driver),
        train: Box::new(SecureTrain { attempt, params, total_samples }),
        samples: BTreeMap::new(),
        deferred: Vec::new(),
    }))
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
) -> Result<(), ActorProcessingErr> {
    let Some(driver) = st.secure.as_mut().filter(|o| o.is(round, attempt)).and_then(|o| o.driver.as_mut()) else {
        tracing::debug!(site_id = site, round, attempt, "a secure-aggregation frame of no open secure round");
        return Ok(());
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
            Ok(())
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
) -> Result<(), ActorProcessingErr> {
    let Some(driver) = st.secure.as_mut().filter(|o| o.is(round, attempt)).and_then(|o| o.driver.as_mut()) else {
        return Ok(());
    };
    let waiting_before = driver.active().len();
    let next = driver.on_deadline(stage);
    if next != Next::Wait {
        tracing::info!(round, ?stage, active_before = waiting_before, "secure-aggregation stage deadline");
    }
    act(me, st, next)
}

/// Site `id` left the open round (lost, out of the round): the protocol hears of it after the current message. A
/// site whose masked input is in hand (being decoded) is not lost to the protocol: that input still counts, as a
/// plain update in check does; if it fails to decode, the site leaves the protocol then.
pub(super) fn lost(st: &mut ServerState, id: u32) {
    if st.current.as_ref().is_some_and(|c| c.checking().contains(&id)) {
        return;
    }
    if let Some(open) = st.secure.as_mut() {
        if let Some(driver) = open.driver.as_mut() {
            let next = driver.on_lost(id);
            open.deferred.push(next);
        }
    }
}

/// Carries out the decisions deferred while handling the last message.
pub(super) fn drain(me: &ActorRef<ServerMsg>, st: &mut ServerState) -> Result<(), ActorProcessingErr> {
    loop {
        let Some(next) = st.secure.as_mut().and_then(|o| (!o.deferred.is_empty()).then(|| o.deferred.remove(0))) else {
            return Ok(());
        };
        act(me, st, next)?;
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

/// Decodes an upload's body as a masked input (off the actor).
pub(super) fn decode_masked(site: u32, body: &[u8]) -> Result<MaskedInput, String> {
    if !body.len().is_multiple_of(4) {
        return Err(format!("a masked input of {} bytes (not a whole number of u32 values)", body.len()));
    }
    let values = body.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok(MaskedInput { site, values })
}

/// A masked input was decoded: into the protocol, and the site counted (or dropped) in the round.
pub(super) fn on_masked(
    me: &ActorRef<ServerMsg>,
    st: &mut ServerState,
    m: MaskedArrival,
) -> Result<(), ActorProcessingErr> {
    let site_id = m.site.site_id;
    let open = st.secure.as_mut().filter(|o| o.is(m.round, m.attempt));
    let decided = match (open.and_then(|o| o.driver.as_mut()), m.input) {
        (None, _) => Err(format!("round {} attempt {} is not open any more", m.round, m.attempt)),
        (Some(_), Err(e)) => Err(e),
        (Some(driver), Ok(input)) => driver.on_masked(input).map_err(|e| e.to_string()),
    };
    let next = match decided {
        Ok(next) => {
            if let Some(open) = st.secure.as_mut() {
                open.samples.insert(site_id, m.site.num_samples);
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
            lost(st, site_id);
            Next::Wait
        }
    };
    act(me, st, next)?;
    drain(me, st)?;
    super::rounds::check_round(me, st)
}

/// The round's bookkeeping says the masked inputs are in (everyone answered, or the grace period or deadline
/// passed with quorum): close the mask stage with the inputs in hand. Later stages close by themselves.
pub(super) fn close_mask(me: &ActorRef<ServerMsg>, st: &mut ServerState) -> Result<(), ActorProcessingErr> {
    let Some(driver) = st.secure.as_mut().and_then(|o| o.driver.as_mut()) else { return Ok(()) };
    if driver.stage() != Stage::Mask {
        return Ok(());
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
fn act(me: &ActorRef<ServerMsg>, st: &mut ServerState, next: Next) -> Result<(), ActorProcessingErr> {
    let Some((round, attempt)) = st.secure.as_ref().map(|o| (o.round, o.attempt)) else { return Ok(()) };
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
        Next::Unmask => unmask(me, st)?,
        Next::Fail(e) => fail(me, st, e.to_string())?,
    }
    Ok(())
}

/// Every survivor revealed (or the deadline passed): the round closes and the aggregator removes the masks.
fn unmask(me: &ActorRef<ServerMsg>, st: &mut ServerState) -> Result<(), ActorProcessingErr> {
    let Some(open) = st.secure.as_mut() else { return Ok(()) };
    let Some(secure) = open.driver.take() else { return Ok(()) };
    let job = UnmaskJob {
        secure,
        samples: open.samples.clone(),
        total: open.train.total_samples,
        max_norm: st.cfg.federation.max_update_norm,
    };
    let (round, attempt) = (open.round, open.attempt);
    let Some(mut current) = st.current.take() else { return Ok(()) };
    current.close();
    st.aggregator.unmask(me, round, attempt, job)?;
    st.closing = Some(current);
    st.publish_status(&format!("unmasking round {round}"));
    Ok(())
}

/// The protocol cannot complete: the round is retried (or the run ends past its retries).
fn fail(me: &ActorRef<ServerMsg>, st: &mut ServerState, why: String) -> Result<(), ActorProcessingErr> {
    tracing::warn!(%why, "secure aggregation failed; the round is retried");
    st.event_in(st.completed + 1, None, "secagg-failed", why);
    let (received, needed) = match st.current.as_ref().or(st.closing.as_ref()) {
        Some(c) => (c.received().len(), st.cfg.federation.min_sites as usize),
        None => (0, st.cfg.federation.min_sites as usize),
    };
    st.secure = None;
    st.closing = None;
    st.contributors.clear();
    retry_round(me, st, received, needed)
}

/// The aggregator removed the masks: the round goes on as an aggregated one; or unmasking failed closed.
pub(super) fn on_unmasked(
    me: &ActorRef<ServerMsg>,
    st: &mut ServerState,
    u: UnmaskedRound,
) -> Result<(), ActorProcessingErr> {
    if !st.secure.as_ref().is_some_and(|o| o.is(u.round, u.attempt)) {
        tracing::warn!(round = u.round, attempt = u.attempt, "an unmasking for a round that is not closing; ignored");
        return Ok(());
    }
    match u.result {
        Err(why) => {
            st.aggregator.encoding = None;
            fail(me, st, format!("unmasking failed (closed: no model released): {why}"))
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
            on_aggregated(me, st, Aggregated { round: u.round, result: Ok(aggregate) })
        }
    }
}
