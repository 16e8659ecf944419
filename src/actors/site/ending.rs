//! How a site process ends: the server ended the run (exit, or idle with `--stay-up`), the server stayed silent
//! past `cluster.site_give_up_secs`, or another process took the site over (fenced: a non-zero exit, never rejoin).

use ractor::ActorRef;

use super::SiteState;
use crate::actors::messages::SiteMsg;
use crate::actors::set_exit;

/// The server said another process holds this site now: stop for good (a non-zero exit; never rejoin).
pub(super) fn on_fenced(me: &ActorRef<SiteMsg>, st: &mut SiteState, reason: String) {
    tracing::error!(
        site = st.args.site_id,
        %reason,
        "fenced: another process took this site over (a replacement after node loss?); stopping"
    );
    st.job = None;
    st.pending = None;
    set_exit(&st.args.exit, Err(format!("fenced by the server: {reason}")));
    me.stop(Some(reason));
}

/// With `cluster.site_give_up_secs`: stop when the server has been silent for that long.
pub(super) fn on_give_up_check(me: &ActorRef<SiteMsg>, st: &mut SiteState) {
    let Some(limit) = st.args.give_up.filter(|_| !st.finished) else { return };
    if st.last_contact.elapsed() > limit {
        let reason = format!(
            "no word from the server at {} for {:.0} s (cluster.site_give_up_secs); giving up",
            st.args.server_addr,
            limit.as_secs_f64()
        );
        tracing::error!(%reason);
        set_exit(&st.args.exit, Err(reason.clone()));
        me.stop(Some(reason));
    }
}

/// The server ended the run: exit, or with `--stay-up` stay and idle.
pub(super) fn on_shutdown(me: &ActorRef<SiteMsg>, st: &mut SiteState, reason: String) {
    if st.finished {
        return;
    }
    tracing::info!(%reason, "server ended the run");
    set_exit(&st.args.exit, Ok(reason.clone()));
    if st.args.stay_up {
        tracing::info!("staying up (--stay-up) until SIGTERM");
        st.finished = true;
        st.job = None;
        st.pending = None;
    } else {
        me.stop(Some(reason));
    }
}
