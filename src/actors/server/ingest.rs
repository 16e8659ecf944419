//! Site updates as they arrive on the bulk plane: decoded, validated against the round and the global model, and
//! folded into the strategy; a rejection is counted under its reason.

use std::time::Instant;

use super::state::*;
use crate::actors::messages::{UpdateMeta, PROTOCOL_VERSION};
use crate::cluster::bulk::Upload;
use crate::federation::round::UpdateVerdict;
use crate::federation::validate::{validate_update, RejectReason, UpdateHeader, ValidationPolicy};
use crate::federation::weights::Weights;

/// Why an upload was not folded in. The metric's `reason` label comes from this value, never from the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// It failed validation, or could not be read at all (`Malformed`), or the round bookkeeping refused it
    /// (`StaleRound` for another round or none open, `UnknownSite` for a site not asked, `Duplicate`).
    Invalid(RejectReason),
    /// It was valid but the strategy refused to fold it (a layout it cannot take).
    Aggregation,
}

impl Refused {
    /// The bounded metric label.
    pub(super) fn label(self) -> &'static str {
        match self {
            Refused::Invalid(r) => r.as_str(),
            Refused::Aggregation => "aggregation",
        }
    }
}

impl From<UpdateVerdict> for Refused {
    fn from(v: UpdateVerdict) -> Self {
        Refused::Invalid(match v {
            UpdateVerdict::Accept | UpdateVerdict::WrongRound { .. } => RejectReason::StaleRound,
            UpdateVerdict::NotParticipant => RejectReason::UnknownSite,
            UpdateVerdict::Duplicate => RejectReason::Duplicate,
        })
    }
}

/// An update arrived on the bulk plane: check it, fold it in, and let go of it (which frees its upload slot).
pub(super) fn on_upload(st: &mut ServerState, up: Upload) {
    let (site_id, round) = (up.site_id, up.round);
    match fold_upload(st, up) {
        Ok(()) => st.obs.metrics.update_accepted(),
        Err((kind, why)) => {
            tracing::warn!(site_id, round, %why, reason = kind.label(), "update rejected");
            st.obs.metrics.update_rejected(kind.label());
            st.rejected.push((site_id, why));
        }
    }
}

/// Decodes, validates and folds one upload; a refusal comes back typed, with the detail for the report.
fn fold_upload(st: &mut ServerState, up: Upload) -> Result<(), (Refused, String)> {
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
    let round = meta.round;
    let Some(current) = st.current.as_mut() else {
        return Err((
            Refused::Invalid(RejectReason::StaleRound),
            format!("update for round {round} while no round is open"),
        ));
    };
    let expected_round = current.round;
    let decoded = tokio::task::block_in_place(|| Weights::from_safetensors(&up.body)).map(|(w, _)| w);
    drop(up);
    let checked = match decoded {
        Ok(w) => validate_update(
            PROTOCOL_VERSION,
            expected_round,
            &UpdateHeader { protocol_version: meta.protocol, round, num_samples: meta.site.num_samples },
            &st.global,
            &w,
            &ValidationPolicy { max_update_norm: st.cfg.federation.max_update_norm, max_samples: None },
        )
        .map(|()| w)
        .map_err(|r| (Refused::Invalid(r.reason), r.to_string())),
        Err(e) => Err(malformed(format!("malformed weights: {e}"))),
    };
    let w = match checked {
        Ok(w) => w,
        Err(refused) => {
            if round == expected_round {
                current.on_site_dropped(site_id);
            }
            return Err(refused);
        }
    };
    match current.on_update(site_id, round) {
        UpdateVerdict::Accept => {}
        verdict => return Err((verdict.clone().into(), format!("{verdict:?}"))),
    }
    let t = Instant::now();
    let folded = tokio::task::block_in_place(|| st.strategy.accumulate(w, meta.site.num_samples));
    st.aggregate_secs += t.elapsed().as_secs_f64();
    folded.map_err(|e| (Refused::Aggregation, format!("aggregation refused it: {e}")))?;
    st.contributors.push(meta.site);
    st.progress.sites.inc(1);
    Ok(())
}
