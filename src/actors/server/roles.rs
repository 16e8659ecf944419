//! Extension roles: the role hello (admission as a download-only reader of the bulk plane), their reports on rounds
//! (checked, recorded, exported), and the run's bounded wait for the last round's reports.

use ractor::{pg, ActorProcessingErr, ActorRef};

use super::state::*;
use crate::actors::messages::{role_actor_name, RoleMsg, RoleReport, ServerMsg, ToRole, PROTOCOL_VERSION, ROLES_GROUP};
use crate::observability::RoleReportOutcome;
use crate::records::RoleOutcome;

/// Most roles admitted at once (names become metric labels).
pub const MAX_ROLES: usize = 16;

/// Limits of one role report: metrics, artifact paths, and the length of a name or path.
pub(super) const MAX_ROLE_METRICS: usize = 64;

pub(super) const MAX_ROLE_ARTIFACTS: usize = 64;

pub(super) const MAX_ROLE_TEXT: usize = 512;

/// Why a role report is refused, if it is ( non-finite values, too many or too long entries).
pub fn check_role_report(report: &RoleReport) -> Result<(), String> {
    if report.metrics.len() > MAX_ROLE_METRICS || report.artifacts.len() > MAX_ROLE_ARTIFACTS {
        return Err(format!(
            "{} metrics and {} artifacts (at most {MAX_ROLE_METRICS} and {MAX_ROLE_ARTIFACTS})",
            report.metrics.len(),
            report.artifacts.len()
        ));
    }
    if let Some((k, v)) = report.metrics.iter().find(|(k, v)| !v.is_finite() || k.is_empty() || k.len() > 64) {
        return Err(format!("metric {k:?} = {v}: names are 1..64 characters, values finite"));
    }
    if report.artifacts.iter().any(|a| a.len() > MAX_ROLE_TEXT) {
        return Err(format!("an artifact path is longer than {MAX_ROLE_TEXT} characters"));
    }
    Ok(())
}

/// Role `name` has nothing more to say about the last round (it reported or left): maybe the run can end now.
pub(super) fn role_settled(me: &ActorRef<ServerMsg>, st: &mut ServerState, name: &str) {
    if st.pending_roles.remove(name) {
        finish_if_settled(me, st);
    }
}

/// A role's host said hello: admit it as a download-only reader and bring it up to date with the last round.
pub(super) async fn on_role_hello(st: &mut ServerState, protocol: u32, name: String) -> Result<(), ActorProcessingErr> {
    let wanted = role_actor_name(&name);
    let Some(actor) = pg::get_members(&ROLES_GROUP.to_string())
        .into_iter()
        .find(|c| !c.get_id().is_local() && c.get_name().as_deref() == Some(wanted.as_str()))
        .map(ActorRef::<RoleMsg>::from)
    else {
        tracing::warn!(role = %name, "hello from a role that is not in the roles group; ignored");
        return Ok(());
    };
    let refuse = |st: &mut ServerState, reason: String| {
        tracing::warn!(role = %name, %reason, "refusing role");
        st.event(None, "role-refused", format!("{name}: {reason}"));
        let _ = actor.cast(RoleMsg::FromServer(Ok(ToRole::Refused { reason })));
    };
    if let Some(reason) = &st.finished {
        let _ = actor.cast(RoleMsg::FromServer(Ok(ToRole::RunOver { reason: reason.clone() })));
        return Ok(());
    }
    if protocol != PROTOCOL_VERSION {
        refuse(st, format!("protocol version {protocol} is not supported (server speaks {PROTOCOL_VERSION})"));
        return Ok(());
    }
    if !crate::actors::messages::valid_role_name(&name) {
        refuse(st, format!("role name {name:?} is not a lowercase DNS label of at most 48 characters"));
        return Ok(());
    }
    if !st.roles.contains_key(&name) && st.roles.len() >= MAX_ROLES {
        refuse(st, format!("{MAX_ROLES} roles are joined already"));
        return Ok(());
    }
    // With mTLS the reader is bound to the certificate its session proved; without, the cookie is all there is.
    let identity = if st.mtls {
        match crate::cluster::verified_node(&st.node, actor.get_id().node()).await {
            Some(id) => Some(id),
            None => {
                refuse(st, "its session presented no verified certificate".into());
                return Ok(());
            }
        }
    } else {
        None
    };
    st.drop_role(&name, "rejoined");
    let reader_id = st.next_reader;
    st.next_reader = st.next_reader.checked_add(1).unwrap_or(ROLE_READER_BASE);
    let token: u64 = rand::random();
    st.bulk.grant_reader(reader_id, token, identity);
    actor.cast(RoleMsg::FromServer(Ok(ToRole::Welcome { protocol: PROTOCOL_VERSION, reader_id, token })))?;
    tracing::info!(role = %name, reader_id, "role joined");
    st.event(None, "role-joined", name.clone());
    if let Some(event) = &st.last_event {
        // Catch up with the newest completed round (older ones' weights may be gone).
        let _ = actor.cast(RoleMsg::FromServer(Ok(ToRole::Round(Box::new(event.clone())))));
    }
    st.roles.insert(name, RoleEntry { actor, reader_id });
    st.obs.metrics.set_roles_joined(st.roles.len());
    Ok(())
}

/// A role's report on round `round`: add it to the round's record (however late), export its numbers.
pub(super) fn on_role_report(
    me: &ActorRef<ServerMsg>,
    st: &mut ServerState,
    name: String,
    round: u64,
    report: RoleReport,
) {
    if !st.roles.contains_key(&name) {
        tracing::warn!(role = %name, round, "report from a role that is not joined; ignored");
        return;
    }
    if let Err(why) = check_role_report(&report) {
        tracing::warn!(role = %name, round, %why, "role report refused");
        st.obs.metrics.role_report(&name, RoleReportOutcome::Invalid);
        role_settled(me, st, &name);
        return;
    }
    match st.report.rounds.iter_mut().find(|r| r.round == round) {
        Some(record) => {
            for (metric, value) in &report.metrics {
                st.obs.metrics.role_metric(&name, metric, *value);
            }
            record.roles.insert(name.clone(), RoleOutcome { metrics: report.metrics, artifacts: report.artifacts });
            st.obs.metrics.role_report(&name, RoleReportOutcome::Recorded);
            tracing::info!(role = %name, round, "role report recorded");
            if st.finishing.is_none() {
                st.write_report();
            }
        }
        None => {
            tracing::warn!(role = %name, round, "role report for a round the report does not hold; counted only");
            st.obs.metrics.role_report(&name, RoleReportOutcome::Unknown);
        }
    }
    if round >= st.cfg.federation.rounds {
        role_settled(me, st, &name);
    }
}
