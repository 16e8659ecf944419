//! The site role: one per hospital (one per pod). It owns the local data shard, keeps a connection to the server
//! (reconnecting with backoff when it is lost), answers the server's rounds and supervises its generator-trainer:
//! a trainer that fails is restarted under the restart policy and handed the interrupted job again; past the
//! budget the site tells the server it is out of this round instead of vanishing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ractor::{pg, Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::NodeServerMessage;

use crate::actors::messages::{
    site_actor_name, LocalJob, ServerMsg, SiteMsg, ToServer, ToSite, TrainerMsg, PROTOCOL_VERSION, SERVER_GROUP,
    SITES_GROUP,
};
use crate::actors::restart_policy::{Decision, RestartPolicy, RestartTracker};
use crate::actors::trainer::{TrainerActor, TrainerArgs};
use crate::cluster::{self, NodeEvent};
use crate::federation::weights::Weights;

/// How a site process ended: `Ok` after the server's shutdown, `Err` when refused.
pub type SiteExit = crate::actors::Exit;

pub struct SiteActor;

pub struct SiteArgs {
    pub site_id: u32,
    pub node: ActorRef<NodeServerMessage>,
    pub server_addr: SocketAddr,
    pub reconnect: Duration,
    pub num_samples: u64,
    pub class_counts: Vec<u64>,
    pub trainer: TrainerArgs,
    pub restart_policy: RestartPolicy,
    /// Fault injection: trainer panics still to happen, per round.
    pub panics: Vec<(u64, u32)>,
    pub exit: SiteExit,
}

pub struct SiteState {
    args: SiteArgs,
    trainer: Option<ActorRef<TrainerMsg>>,
    server: Option<ActorRef<ServerMsg>>,
    connected: bool,
    connect_failures: u32,
    job: Option<LocalJob>,
    restarts: RestartTracker,
    restarts_this_job: u32,
}

impl SiteState {
    fn send(&self, frame: ToServer) {
        match &self.server {
            Some(server) => {
                if let Err(e) = server.cast(ServerMsg::FromSite(Ok(frame))) {
                    tracing::warn!(error = %e, "cannot reach the server");
                }
            }
            None => tracing::warn!("no server to send to"),
        }
    }

    fn take_panic(&mut self, round: u64) -> bool {
        for (r, left) in self.args.panics.iter_mut() {
            if *r == round && *left > 0 {
                *left -= 1;
                return true;
            }
        }
        false
    }

    fn hello(&self) -> ToServer {
        ToServer::Hello {
            protocol: PROTOCOL_VERSION,
            site_id: self.args.site_id,
            num_samples: self.args.num_samples,
            class_counts: self.args.class_counts.clone(),
        }
    }

    /// Adopts the remote server actor if one is in the server group.
    fn find_server(&mut self) {
        let remote = pg::get_members(&SERVER_GROUP.to_string()).into_iter().find(|c| !c.get_id().is_local());
        if let Some(cell) = remote {
            let fresh = self.server.as_ref().map(|s| s.get_id()) != Some(cell.get_id());
            if fresh {
                self.server = Some(ActorRef::<ServerMsg>::from(cell));
                tracing::info!(site = self.args.site_id, "found the server; saying hello");
                self.send(self.hello());
            }
        }
    }
}

async fn spawn_trainer(me: &ActorRef<SiteMsg>, args: &TrainerArgs) -> Result<ActorRef<TrainerMsg>, ActorProcessingErr> {
    let (trainer, _) = Actor::spawn_linked(None, TrainerActor, args.clone(), me.get_cell()).await?;
    Ok(trainer)
}

impl Actor for SiteActor {
    type Msg = SiteMsg;
    type State = SiteState;
    type Arguments = SiteArgs;

    async fn pre_start(&self, me: ActorRef<SiteMsg>, args: SiteArgs) -> Result<SiteState, ActorProcessingErr> {
        pg::join(SITES_GROUP.to_string(), vec![me.get_cell()]);
        pg::monitor(SERVER_GROUP.to_string(), me.get_cell());
        let trainer = spawn_trainer(&me, &args.trainer).await?;
        let events = me.clone();
        cluster::subscribe(&args.node, &format!("site-{}", args.site_id), move |ev| {
            let _ = events.cast(SiteMsg::Node(ev));
        });
        me.cast(SiteMsg::Connect)?;
        let restarts = RestartTracker::new(args.restart_policy.clone(), u64::from(args.site_id));
        Ok(SiteState {
            args,
            trainer: Some(trainer),
            server: None,
            connected: false,
            connect_failures: 0,
            job: None,
            restarts,
            restarts_this_job: 0,
        })
    }

    async fn handle(&self, me: ActorRef<SiteMsg>, msg: SiteMsg, st: &mut SiteState) -> Result<(), ActorProcessingErr> {
        match msg {
            SiteMsg::Connect => {
                if st.connected {
                    return Ok(());
                }
                if let Err(e) = cluster::connect(&st.args.node, st.args.server_addr).await {
                    st.connect_failures += 1;
                    let delay = st.args.reconnect * 2u32.pow(st.connect_failures.min(3));
                    tracing::info!(error = %e, retry_in = ?delay, "server not reachable yet");
                    me.send_after(delay, || SiteMsg::Connect);
                }
            }
            SiteMsg::Node(NodeEvent::Ready { peer, .. }) => {
                tracing::info!(%peer, "session ready");
                st.connected = true;
                st.connect_failures = 0;
                st.find_server();
            }
            SiteMsg::Node(NodeEvent::Disconnected { peer, .. }) => {
                tracing::warn!(%peer, "lost the server; reconnecting");
                st.connected = false;
                st.server = None;
                st.job = None;
                me.send_after(st.args.reconnect, || SiteMsg::Connect);
            }
            SiteMsg::FromServer(Ok(ToSite::Train { protocol, round, local_steps, batch_size, hints, weights })) => {
                if protocol != PROTOCOL_VERSION {
                    tracing::error!(protocol, "server speaks another protocol version");
                    return Ok(());
                }
                let global = match Weights::from_safetensors(&weights) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        let reason = format!("undecodable global weights: {e}");
                        tracing::error!(round, %reason);
                        st.send(ToServer::OutOfRound { site_id: st.args.site_id, round, reason });
                        return Ok(());
                    }
                };
                tracing::info!(round, local_steps, "training round");
                let inject_panic = st.take_panic(round);
                let job = LocalJob { round, global, local_steps, batch_size, hints, inject_panic };
                st.job = Some(job.clone());
                st.restarts_this_job = 0;
                if let Some(trainer) = &st.trainer {
                    trainer.cast(TrainerMsg::Train { job, reply_to: me.clone() })?;
                }
            }
            SiteMsg::FromServer(Ok(ToSite::Refused { reason })) => {
                tracing::error!(%reason, "the server refused this site");
                set_exit(&st.args.exit, Err(format!("refused by the server: {reason}")));
                me.stop(Some(reason));
            }
            SiteMsg::FromServer(Ok(ToSite::Shutdown { reason })) => {
                tracing::info!(%reason, "server ended the run");
                set_exit(&st.args.exit, Ok(reason.clone()));
                me.stop(Some(reason));
            }
            SiteMsg::FromServer(Err(e)) => tracing::warn!(error = %e, "dropped a malformed frame from the server"),
            SiteMsg::TrainerDone(Ok(result)) => {
                let Some(job) = st.job.take() else { return Ok(()) };
                if job.round != result.round {
                    return Ok(());
                }
                let weights = match result.weights.to_safetensors(None) {
                    Ok(b) => b,
                    Err(e) => {
                        let reason = format!("cannot encode weights: {e}");
                        st.send(ToServer::OutOfRound { site_id: st.args.site_id, round: job.round, reason });
                        return Ok(());
                    }
                };
                tracing::info!(
                    round = job.round,
                    d_loss = result.losses.d_loss,
                    g_loss = result.losses.g_loss,
                    secs = result.train_secs,
                    "round trained"
                );
                st.send(ToServer::Update {
                    protocol: PROTOCOL_VERSION,
                    site_id: st.args.site_id,
                    round: job.round,
                    num_samples: st.args.num_samples,
                    losses: result.losses,
                    steps: result.steps,
                    train_secs: result.train_secs,
                    trainer_restarts: st.restarts_this_job,
                    weights,
                });
            }
            SiteMsg::TrainerDone(Err(reason)) => {
                // The trainer is alive but its job failed (error, NaN): same policy as a crash.
                tracing::warn!(%reason, "trainer job failed");
                on_trainer_failure(&me, st, reason);
            }
            SiteMsg::RestartTrainer => {
                let trainer = spawn_trainer(&me, &st.args.trainer).await?;
                if let Some(mut job) = st.job.clone() {
                    job.inject_panic = st.take_panic(job.round);
                    trainer.cast(TrainerMsg::Train { job, reply_to: me.clone() })?;
                }
                st.trainer = Some(trainer);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<SiteMsg>,
        evt: SupervisionEvent,
        st: &mut SiteState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, err) if is_trainer(st, &cell) => {
                tracing::warn!(error = %err, "trainer failed");
                st.trainer = None;
                on_trainer_failure(&me, st, err.to_string());
            }
            SupervisionEvent::ActorTerminated(cell, _, _) if is_trainer(st, &cell) => {
                st.trainer = None;
                me.send_after(st.args.reconnect, || SiteMsg::RestartTrainer);
            }
            SupervisionEvent::ProcessGroupChanged(change) if change.get_group() == SERVER_GROUP => match change {
                pg::GroupChangeMessage::Join(..) => st.find_server(),
                pg::GroupChangeMessage::Leave(_, _, cells) => {
                    if cells.iter().any(|c| Some(c.get_id()) == st.server.as_ref().map(|s| s.get_id())) {
                        st.server = None;
                    }
                }
            },
            _ => {}
        }
        Ok(())
    }
}

fn is_trainer(st: &SiteState, cell: &ActorCell) -> bool {
    st.trainer.as_ref().map(|t| t.get_id() == cell.get_id()).unwrap_or(false)
}

fn set_exit(exit: &SiteExit, value: Result<String, String>) {
    if let Ok(mut slot) = exit.lock() {
        slot.get_or_insert(value);
    }
}

fn on_trainer_failure(me: &ActorRef<SiteMsg>, st: &mut SiteState, reason: String) {
    match st.restarts.on_failure(Instant::now()) {
        Decision::Restart { attempt, delay } => {
            st.restarts_this_job += 1;
            tracing::warn!(attempt, ?delay, %reason, "restarting the trainer");
            // A failed job leaves the old trainer alive: stop it so only the new one holds the model.
            if let Some(old) = st.trainer.take() {
                old.stop(None);
            }
            me.send_after(delay, || SiteMsg::RestartTrainer);
        }
        Decision::Escalate { failures_in_window } => {
            tracing::error!(failures_in_window, %reason, "restart budget exhausted; out of this round");
            if let Some(job) = st.job.take() {
                st.send(ToServer::OutOfRound {
                    site_id: st.args.site_id,
                    round: job.round,
                    reason: format!("trainer failed {failures_in_window} times: {reason}"),
                });
            }
            if st.trainer.is_none() {
                me.send_after(st.args.reconnect, || SiteMsg::RestartTrainer);
            }
        }
    }
}

/// The name under which a site actor registers (and by which the server knows it).
pub fn actor_name(site_id: u32) -> String {
    site_actor_name(site_id)
}
