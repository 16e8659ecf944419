//! The role extension seam: how a new kind of node joins a running federation without any change to the server or
//! site code.
//!
//! A role is two things:
//! - [`Role`], the *pure* per-round logic a user writes (archive a model, score it, push it somewhere). It runs on
//!   a dedicated OS thread ([`crate::actors::worker`]), so it may hold tch state and block;
//! - the generic host, [`RoleHost`], which does everything else and is the same for every role: it starts a cluster
//!   node ([`crate::cluster`]: cookie, mTLS, frame limit), joins the `histofed.roles` process group, says
//!   `RoleHello` to the server, downloads each completed round's global weights from the bulk plane (SHA-256
//!   checked, with the download-only token the server grants it), hands them to a supervised runner, and sends
//!   what the role reports back. It reconnects when the server goes away (a restarted server resumes and keeps
//!   sending rounds) and restarts a crashed runner under the restart policy ([`crate::actors::restart_policy`]);
//!   past the budget the node stops with an error, as a site does.
//!
//! Why the role is built by a factory and not passed in: a runner that panicked lost its state, and the restart
//! must start from a fresh one (built on the new thread, so tch objects are born where they are used).
//!
//! Why events are pushed by the server and not pulled: a round counts only once its checkpoint is durable, and only
//! the server knows that moment; it casts one `RoundEvent` per completed round to every member of the group, and
//! keeps the round's weights downloadable for the server's `ROLE_BLOBS_KEPT` rounds. A role joining
//! late gets the newest completed round at once. At the end of a run the server waits (bounded by the round
//! deadline) for the roles' reports on the last round before it exits.
//!
//! A user's binary calls [`run_node`]; `examples/model_registry.rs` is a complete role.

use std::collections::{BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{pg, Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::NodeServerMessage;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::actors::link::{Connect, ServerLink};
use crate::actors::messages::{
    role_actor_name, BlobRef, RoleMsg, RunnerMsg, ToRole, ToServer, PROTOCOL_VERSION, ROLES_GROUP, SERVER_GROUP,
};
pub use crate::actors::messages::{RoleReport, RoundEvent, RoundSummary};
use crate::actors::restart_policy::{Decision, RestartPolicy, RestartTracker};
use crate::actors::worker::Worker;
use crate::actors::{set_exit, Exit};
use crate::cluster::bulk::{self, BulkTls, ClientOpts};
use crate::cluster::{self, ClusterError, NodeEvent};
use crate::config::Config;
use crate::federation::weights::{Weights, WeightsError};

/// The per-round logic of a role. Runs on the role's own thread, one round at a time, in round order.
pub trait Role: Send + 'static {
    /// `false` for roles that only need the round's record: the host then skips the download.
    fn wants_weights(&self) -> bool {
        true
    }

    /// Round `event.round` is completed (durable on the server). `global` holds its global weights (generator
    /// and discriminator, prefixed `generator.` / `discriminator.`) when [`Role::wants_weights`]. A report is
    /// recorded in the round's record (report.json `roles`) and exported as `histofed_role_metric{role,metric}`.
    /// An error counts as a failure of the runner: the round is tried again under the restart policy.
    fn on_round(&mut self, event: &RoundEvent, global: Option<&Weights>) -> Result<Option<RoleReport>, RoleError>;
}

/// Builds a fresh role (at start and after every runner restart), on the runner's thread.
pub type RoleFactory = Arc<dyn Fn() -> Result<Box<dyn Role>, RoleError> + Send + Sync>;

#[derive(Debug, Error)]
pub enum RoleError {
    #[error("{0}")]
    Failed(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("role name {0:?} must be a lowercase DNS label of at most 48 characters ([a-z0-9-])")]
    BadName(String),
    #[error("the role host could not run: {0}")]
    Actor(String),
    #[error("{0}")]
    Stopped(String),
}

impl RoleError {
    pub fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        RoleError::Io { path: path.to_string(), source }
    }
}

/// How a role node runs.
#[derive(Clone)]
pub struct RoleNodeOptions {
    /// The role's name: its actor is `histofed-role-<name>`, its report key and metric label are `<name>`.
    pub role: String,
    /// The run's configuration (server address, cookie, TLS directory, frame limit, torch threads).
    pub config: Config,
    /// Cluster node name, and with mTLS the certificate it loads from `cluster.tls_dir` (default `role-<name>`).
    pub node_name: Option<String>,
    pub restart_policy: RestartPolicy,
    /// Stop once the server says the run is over (default: stay up, keep serving, wait for a resumed server).
    pub exit_when_run_over: bool,
}

impl RoleNodeOptions {
    pub fn new(role: impl Into<String>, config: Config) -> Self {
        Self {
            role: role.into(),
            config,
            node_name: None,
            restart_policy: RestartPolicy::default(),
            exit_when_run_over: false,
        }
    }
}

/// Starts a cluster node for `make`'s role, joins the federation and serves round events until the host stops
/// (run over with `exit_when_run_over`, restart budget exhausted, refused by the server). `Ok` carries why it
/// stopped. Wrap it in `tokio::select!` with a signal to stop it from outside.
pub async fn run_node(make: RoleFactory, opts: RoleNodeOptions) -> Result<String, RoleError> {
    if !crate::actors::messages::valid_role_name(&opts.role) {
        return Err(RoleError::BadName(opts.role.clone()));
    }
    // A role node receives a model-sized blob every round: keep freed buffers for reuse (see `heap`).
    crate::util::heap::retain_freed_memory();
    let cfg = &opts.config;
    let server_addr = cluster::resolve(&cfg.cluster.server_addr)?;
    let ip = if server_addr.ip().is_loopback() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let node_name = opts.node_name.clone().unwrap_or_else(|| format!("role-{}", opts.role));
    let security = cluster::Security::from_dir(cfg.cluster.tls_dir.as_deref(), &node_name)?;
    let max_frame = cfg.cluster.max_frame_mib << 20;
    let node = cluster::start_node(&node_name, cluster::ephemeral(ip), cfg.cookie(), max_frame, security).await?;
    let tls = match &node.security {
        cluster::Security::Plain => BulkTls::Plain,
        cluster::Security::Mtls(m) => BulkTls::Client(
            m.connector().map_err(|e| RoleError::Cluster(e.into()))?,
            crate::cluster::certs::SERVER_NAME.to_string(),
        ),
    };
    let exit: Exit = Arc::new(Mutex::new(None));
    let args = RoleHostArgs {
        role: opts.role.clone(),
        make,
        node: node.server.clone(),
        security: node.security.clone(),
        server_addr,
        reconnect: Duration::from_secs_f64(cfg.cluster.reconnect_secs),
        bulk: ClientOpts {
            tls,
            stall: Duration::from_secs_f64(cfg.cluster.transfer_stall_secs),
            chunk: 1 << 20,
            max_body: max_frame.max(4 << 30),
        },
        threads: cfg.runtime.threads,
        restart_policy: opts.restart_policy.clone(),
        exit_when_run_over: opts.exit_when_run_over,
        exit: exit.clone(),
    };
    let spawned = Actor::spawn(Some(role_actor_name(&opts.role)), RoleHost, args).await;
    let (_host, handle) = match spawned {
        Ok(h) => h,
        Err(e) => {
            node.shutdown().await;
            return Err(RoleError::Actor(e.to_string()));
        }
    };
    let _ = handle.await;
    node.shutdown().await;
    let outcome = exit.lock().ok().and_then(|mut e| e.take());
    match outcome {
        Some(Ok(why)) => Ok(why),
        Some(Err(why)) => Err(RoleError::Stopped(why)),
        None => Err(RoleError::Actor("the role host stopped unexpectedly (see the log)".into())),
    }
}

pub struct RoleHost;

pub struct RoleHostArgs {
    pub role: String,
    pub make: RoleFactory,
    pub node: ActorRef<NodeServerMessage>,
    pub security: cluster::Security,
    pub server_addr: SocketAddr,
    pub reconnect: Duration,
    pub bulk: ClientOpts,
    /// Torch threads of the runner's thread.
    pub threads: i32,
    pub restart_policy: RestartPolicy,
    pub exit_when_run_over: bool,
    pub exit: Exit,
}

type Job = (Box<RoundEvent>, Option<Arc<Weights>>);

pub struct RoleHostState {
    args: RoleHostArgs,
    link: ServerLink,
    /// Download-only credentials on the bulk plane: (reader id, token).
    reader: Option<(u32, u64)>,
    runner: Option<ActorRef<RunnerMsg>>,
    /// Rounds fetched and waiting for the runner, in arrival order.
    queue: VecDeque<Job>,
    /// The round the runner works on (handed again to a restarted runner).
    busy: Option<Job>,
    /// Rounds handled (or being fetched/queued), so a catch-up event after a rejoin is not done twice.
    seen: BTreeSet<u64>,
    restarts: RestartTracker,
    /// Whether the role wants the weights (asked once, from a role built for the purpose, on the runner thread).
    wants_weights: bool,
}

impl RoleHostState {
    fn send(&self, frame: ToServer) {
        self.link.send(frame);
    }

    fn find_server(&mut self) {
        if self.link.find_server() {
            self.say_hello();
        }
    }

    fn say_hello(&self) {
        tracing::info!(role = %self.args.role, "found the server; saying hello");
        self.send(ToServer::RoleHello { protocol: PROTOCOL_VERSION, role: self.args.role.clone() });
    }

    fn pump(&mut self, me: &ActorRef<RoleMsg>) {
        if self.busy.is_some() {
            return;
        }
        let Some(runner) = &self.runner else { return };
        let Some((event, weights)) = self.queue.pop_front() else { return };
        let msg = RunnerMsg::Run { event: event.clone(), weights: weights.clone(), reply_to: me.clone() };
        if let Err(e) = runner.cast(msg) {
            tracing::warn!(error = %e, "runner unreachable");
        }
        self.busy = Some((event, weights));
    }

    /// Fetches the event's weights off this actor (a few tries: the blob may be briefly unreachable), then
    /// `RoleMsg::Fetched`.
    fn fetch(&self, me: &ActorRef<RoleMsg>, event: Box<RoundEvent>) {
        if !self.wants_weights {
            let _ = me.cast(RoleMsg::Fetched { event, result: Ok(None) });
            return;
        }
        let (Some(blob), Some((reader, token))) = (event.weights.clone(), self.reader) else {
            let why = format!("round {}: no weights published, or not admitted yet", event.round);
            let _ = me.cast(RoleMsg::Fetched { event, result: Err(why) });
            return;
        };
        let (me, opts, addr) =
            (me.clone(), self.args.bulk.clone(), SocketAddr::new(self.args.server_addr.ip(), blob.port));
        tokio::spawn(async move {
            let mut result = Err(String::new());
            for attempt in 0..3u32 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(300 * u64::from(attempt))).await;
                }
                result = match bulk::download(addr, &opts, reader, token, blob.key).await {
                    Ok(bytes) => {
                        let blob = blob.clone();
                        tokio::task::spawn_blocking(move || decode_blob(&bytes, &blob))
                            .await
                            .unwrap_or_else(|e| Err(format!("decoding the weights failed: {e}")))
                    }
                    Err(e) => Err(e.to_string()),
                };
                // A refusal (blob gone, token revoked) will not heal by retrying.
                if result.is_ok() || result.as_ref().is_err_and(|e| e.contains("refused")) {
                    break;
                }
            }
            let _ = me.cast(RoleMsg::Fetched { event, result: result.map(|w| Some(Arc::new(w))) });
        });
    }
}

/// Checks a downloaded blob against its announced size and SHA-256, then decodes it.
pub fn decode_blob(bytes: &[u8], blob: &BlobRef) -> Result<Weights, String> {
    if bytes.len() as u64 != blob.len {
        return Err(format!("weights are {} bytes, {} were announced", bytes.len(), blob.len));
    }
    let sha = hex::encode(Sha256::digest(bytes));
    if sha != blob.sha256 {
        return Err(format!("weights have SHA-256 {sha}, {} was announced", blob.sha256));
    }
    Weights::from_safetensors(bytes).map(|(w, _)| w).map_err(|e| format!("malformed weights: {e}"))
}

async fn spawn_runner(me: &ActorRef<RoleMsg>, args: &RoleHostArgs) -> Result<ActorRef<RunnerMsg>, ActorProcessingErr> {
    let runner_args = RunnerArgs { role: args.role.clone(), make: args.make.clone(), threads: args.threads };
    Ok(Actor::spawn_linked(None, RoleRunner, runner_args, me.get_cell()).await?.0)
}

/// Builds one role on a throwaway thread to ask whether it wants the weights (cheap for any sane role; a failure
/// to build is found here, before joining).
async fn ask_wants_weights(make: &RoleFactory) -> Result<bool, ActorProcessingErr> {
    let make = make.clone();
    let built = tokio::task::spawn_blocking(move || make().map(|r| r.wants_weights())).await?;
    Ok(built?)
}

impl Actor for RoleHost {
    type Msg = RoleMsg;
    type State = RoleHostState;
    type Arguments = RoleHostArgs;

    async fn pre_start(&self, me: ActorRef<RoleMsg>, args: RoleHostArgs) -> Result<RoleHostState, ActorProcessingErr> {
        let wants_weights = ask_wants_weights(&args.make).await?;
        pg::join(ROLES_GROUP.to_string(), vec![me.get_cell()]);
        pg::monitor(SERVER_GROUP.to_string(), me.get_cell());
        let runner = spawn_runner(&me, &args).await?;
        let events = me.clone();
        cluster::subscribe(&args.node, &format!("role-{}", args.role), move |ev| {
            let _ = events.cast(RoleMsg::Node(ev));
        });
        me.cast(RoleMsg::Connect)?;
        let restarts = RestartTracker::new(args.restart_policy.clone(), 7);
        Ok(RoleHostState {
            link: ServerLink::new(args.node.clone(), args.security.clone(), args.server_addr, args.reconnect),
            args,
            reader: None,
            runner: Some(runner),
            queue: VecDeque::new(),
            busy: None,
            seen: BTreeSet::new(),
            restarts,
            wants_weights,
        })
    }

    async fn handle(
        &self,
        me: ActorRef<RoleMsg>,
        msg: RoleMsg,
        st: &mut RoleHostState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RoleMsg::Connect => match st.link.connect().await {
                Connect::Wait => {}
                Connect::RetryIn(delay) => {
                    me.send_after(delay, || RoleMsg::Connect);
                }
                Connect::GiveUp(reason) => {
                    set_exit(&st.args.exit, Err(reason));
                    me.stop(None);
                }
            },
            RoleMsg::Node(NodeEvent::Ready { peer, .. }) => {
                tracing::info!(%peer, "session ready");
                if st.link.ready() {
                    st.say_hello();
                }
            }
            RoleMsg::Node(NodeEvent::Disconnected { peer, .. }) => {
                tracing::warn!(%peer, "lost the server; reconnecting");
                st.reader = None;
                if let Some(delay) = st.link.lost() {
                    me.send_after(delay, || RoleMsg::Connect);
                }
            }
            RoleMsg::FromServer(Ok(ToRole::Welcome { protocol, reader_id, token })) => {
                if protocol != PROTOCOL_VERSION {
                    tracing::error!(protocol, "server speaks another protocol version");
                    return Ok(());
                }
                tracing::info!(role = %st.args.role, "admitted by the server");
                st.reader = Some((reader_id, token));
            }
            RoleMsg::FromServer(Ok(ToRole::Refused { reason })) => {
                tracing::error!(%reason, "the server refused this role");
                set_exit(&st.args.exit, Err(format!("refused by the server: {reason}")));
                me.stop(None);
            }
            RoleMsg::FromServer(Ok(ToRole::Round(event))) => {
                if st.seen.insert(event.round) {
                    tracing::info!(round = event.round, "round completed on the server");
                    st.fetch(&me, event);
                }
            }
            RoleMsg::FromServer(Ok(ToRole::RunOver { reason })) => {
                tracing::info!(%reason, "the run is over");
                if st.args.exit_when_run_over && st.busy.is_none() && st.queue.is_empty() {
                    set_exit(&st.args.exit, Ok(reason));
                    me.stop(None);
                }
            }
            RoleMsg::FromServer(Err(e)) => tracing::warn!(error = %e, "dropped a malformed frame"),
            RoleMsg::Fetched { event, result } => match result {
                Ok(weights) => {
                    st.queue.push_back((event, weights));
                    st.pump(&me);
                }
                Err(e) => {
                    tracing::error!(round = event.round, error = %e, "cannot fetch the round's weights; skipping it");
                    st.seen.remove(&event.round);
                }
            },
            RoleMsg::RunnerDone { round, result } => {
                st.busy = None;
                let last = st.seen.last().copied() == Some(round);
                match result {
                    Ok(Some(report)) => st.send(ToServer::RoleReport { role: st.args.role.clone(), round, report }),
                    // Nothing to say; on the last round say so anyway, so the server need not wait for us.
                    Ok(None) if last => st.send(ToServer::RoleReport {
                        role: st.args.role.clone(),
                        round,
                        report: RoleReport::default(),
                    }),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(round, error = %e, "the role failed on this round"),
                }
                st.pump(&me);
            }
            RoleMsg::RestartRunner => {
                st.runner = Some(spawn_runner(&me, &st.args).await?);
                // The interrupted round goes first again.
                if let Some(job) = st.busy.take() {
                    st.queue.push_front(job);
                }
                st.pump(&me);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<RoleMsg>,
        evt: SupervisionEvent,
        st: &mut RoleHostState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, err) if is_runner(st, &cell) => {
                st.runner = None;
                let round = st.busy.as_ref().map(|(e, _)| e.round);
                match st.restarts.on_failure(Instant::now()) {
                    Decision::Restart { attempt, delay } => {
                        tracing::warn!(?round, attempt, ?delay, error = %err, "role runner failed; restarting it");
                        me.send_after(delay, || RoleMsg::RestartRunner);
                    }
                    Decision::Escalate { failures_in_window } => {
                        let why = format!("the role failed {failures_in_window} times (round {round:?}), last: {err}");
                        tracing::error!(%why, "restart budget exhausted; stopping");
                        set_exit(&st.args.exit, Err(why));
                        me.stop(None);
                    }
                }
            }
            SupervisionEvent::ProcessGroupChanged(change) if change.get_group() == SERVER_GROUP => match change {
                pg::GroupChangeMessage::Join(..) => st.find_server(),
                pg::GroupChangeMessage::Leave(_, _, cells) => st.link.left(&cells),
            },
            _ => {}
        }
        Ok(())
    }
}

fn is_runner(st: &RoleHostState, cell: &ActorCell) -> bool {
    st.runner.as_ref().map(|r| r.get_id()) == Some(cell.get_id())
}

/// The runner: owns the role on its dedicated thread. A panic or an error of the role fails this actor, and the
/// host's supervision applies the restart policy.
pub struct RoleRunner;

pub struct RunnerArgs {
    pub role: String,
    pub make: RoleFactory,
    pub threads: i32,
}

type RoleState = Result<Box<dyn Role>, String>;
type RoleResult = Result<Option<RoleReport>, String>;

impl Actor for RoleRunner {
    type Msg = RunnerMsg;
    type State = Worker<Job, RoleResult>;
    type Arguments = RunnerArgs;

    async fn pre_start(&self, _me: ActorRef<RunnerMsg>, a: RunnerArgs) -> Result<Self::State, ActorProcessingErr> {
        let make = a.make.clone();
        let worker = Worker::spawn(
            &format!("role-{}", a.role),
            a.threads,
            move || -> RoleState { make().map_err(|e| format!("cannot build the role: {e}")) },
            |role: &mut RoleState, (event, weights): Job| -> RoleResult {
                let role = role.as_mut().map_err(|e| e.clone())?;
                role.on_round(&event, weights.as_deref()).map_err(|e| e.to_string())
            },
        )?;
        Ok(worker)
    }

    async fn handle(
        &self,
        _me: ActorRef<RunnerMsg>,
        msg: RunnerMsg,
        worker: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let RunnerMsg::Run { event, weights, reply_to } = msg;
        let round = event.round;
        // A dead thread (panic) or a role error fails this actor; the host restarts it and hands it the round again.
        let report = worker.run((event, weights)).await??;
        reply_to.cast(RoleMsg::RunnerDone { round, result: Ok(report) })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    use crate::federation::weights::NamedTensor;

    fn blob_of(w: &Weights) -> (Vec<u8>, BlobRef) {
        let bytes = w.to_safetensors(None).unwrap();
        let blob = BlobRef { port: 0, key: 1, len: bytes.len() as u64, sha256: hex::encode(Sha256::digest(&bytes)) };
        (bytes, blob)
    }

    #[test]
    fn downloaded_blobs_are_checked_before_decoding() {
        let w = Weights::new(vec![NamedTensor::new("generator.w", vec![2], vec![1.0, 2.0]).unwrap()]).unwrap();
        let (mut bytes, blob) = blob_of(&w);
        assert_eq!(decode_blob(&bytes, &blob).unwrap(), w);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(decode_blob(&bytes, &blob).unwrap_err().contains("SHA-256"));
        assert!(decode_blob(&bytes[1..], &blob).unwrap_err().contains("announced"));
    }

    /// Counts rounds; panics on the first attempt at round 2 (a crash the restart policy must absorb).
    struct Flaky {
        crashes: Arc<AtomicU32>,
    }

    impl Role for Flaky {
        fn wants_weights(&self) -> bool {
            false
        }
        fn on_round(&mut self, e: &RoundEvent, w: Option<&Weights>) -> Result<Option<RoleReport>, RoleError> {
            assert!(w.is_none());
            if e.round == 2 && self.crashes.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("flaky role crashed");
            }
            Ok(Some(RoleReport { metrics: [("round".to_string(), e.round as f64)].into(), artifacts: vec![] }))
        }
    }

    fn event(round: u64) -> Box<RoundEvent> {
        Box::new(RoundEvent { round, rounds_configured: 3, summary: RoundSummary::default(), weights: None })
    }

    /// A local stand-in for the host: receives the runner's answers.
    struct Collect(tokio::sync::mpsc::UnboundedSender<(u64, RoleResult)>);
    impl Actor for Collect {
        type Msg = RoleMsg;
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<RoleMsg>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
        async fn handle(&self, _: ActorRef<RoleMsg>, m: RoleMsg, _: &mut ()) -> Result<(), ActorProcessingErr> {
            if let RoleMsg::RunnerDone { round, result } = m {
                let _ = self.0.send((round, result));
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_crashing_runner_fails_as_an_actor_and_a_fresh_one_runs_the_round() {
        let crashes = Arc::new(AtomicU32::new(0));
        let c = crashes.clone();
        let make: RoleFactory = Arc::new(move || Ok(Box::new(Flaky { crashes: c.clone() }) as Box<dyn Role>));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let (host, _) = Actor::spawn(None, Collect(tx), ()).await.unwrap();
        let args = || RunnerArgs { role: "t".into(), make: make.clone(), threads: 1 };
        let (runner, handle) = Actor::spawn(None, RoleRunner, args()).await.unwrap();
        runner.cast(RunnerMsg::Run { event: event(1), weights: None, reply_to: host.clone() }).unwrap();
        let (round, result) = rx.recv().await.unwrap();
        assert_eq!((round, result.unwrap().unwrap().metrics["round"]), (1, 1.0));
        runner.cast(RunnerMsg::Run { event: event(2), weights: None, reply_to: host.clone() }).unwrap();
        // The panic kills the runner actor (what the host's supervision sees)...
        tokio::time::timeout(Duration::from_secs(10), handle).await.unwrap().unwrap();
        assert!(rx.try_recv().is_err(), "a crashed round has no answer");
        // ... and a fresh runner (fresh role from the factory) does the round.
        let (runner, _) = Actor::spawn(None, RoleRunner, args()).await.unwrap();
        runner.cast(RunnerMsg::Run { event: event(2), weights: None, reply_to: host.clone() }).unwrap();
        let (round, result) = rx.recv().await.unwrap();
        assert_eq!((round, result.unwrap().unwrap().metrics["round"]), (2, 2.0));
        assert_eq!(crashes.load(Ordering::SeqCst), 2);
        runner.stop(None);
        host.stop(None);
    }
}
