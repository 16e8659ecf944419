//! The long-running roles: `demo`, `server`, `site`, `evaluator`, and `status` against a running server.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use ractor::{Actor, ActorRef};

use super::kube_link::{kube_setup, watch_site_pods};
use super::*;
use crate::actors::evaluator::EvaluatorArgs;
use crate::actors::messages::ServerMsg;
use crate::actors::messages::{site_actor_name, site_process_name};
use crate::actors::restart_policy::RestartPolicy;
use crate::actors::server::resume::{fresh_report, resume, save_initial};
use crate::actors::server::{Observed, ServerActor, ServerArgs};
use crate::actors::site::{SiteActor, SiteArgs};
use crate::actors::trainer::TrainerArgs;
use crate::actors::Exit;
use crate::cluster;
use crate::cluster::bulk::{BulkLimits, BulkTls, ClientOpts};
use crate::config::Config;
use crate::data::{self, partition};
use crate::faults::FaultPlan;
use crate::federation::checkpoint::CheckpointStore;
use crate::federation::site_store::SiteStore;
use crate::models::{select_device, Gan};
use crate::models::{DISCRIMINATOR_PREFIX, GENERATOR_PREFIX};
use crate::train::LocalCheckpoints;

/// `histofed demo`.
pub(super) fn demo(a: DemoArgs) -> Result<()> {
    let mut cfg = load_config(&a.config, Some(crate::launcher::demo_config()?))?;
    if let Some(s) = a.sites {
        cfg.federation.sites = s;
        cfg.federation.min_sites = cfg.federation.min_sites.min(s);
    }
    if let Some(r) = a.rounds {
        cfg.federation.rounds = r;
    }
    cfg.validate()?;
    runtime()?.block_on(crate::launcher::demo(cfg, a.out, !a.no_tls))
}

/// `histofed server`.
pub(super) fn server(a: ServerCmd) -> Result<()> {
    let mut cfg = load_config(&a.config, None)?;
    if let Some(out) = a.out {
        cfg.runtime.out_dir = out;
    }
    runtime()?.block_on(run_server(
        cfg,
        ServerOpts { http: a.http, k8s_site_selector: a.k8s_site_selector, stay_up: a.stay_up },
    ))
}

/// `histofed status`.
pub(super) fn status(a: StatusCmd) -> Result<()> {
    runtime()?.block_on(async {
        let s = crate::observability::fetch_status(&a.addr).await?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            print!("{}", crate::observability::render_status(&s));
        }
        Ok(())
    })
}

/// `histofed site`.
pub(super) fn site(a: SiteCmd) -> Result<()> {
    let mut cfg = load_config(&a.config, None)?;
    if let Some(s) = a.server {
        cfg.cluster.server_addr = s;
    }
    cfg.validate()?;
    let protocol = a.protocol_version.unwrap_or(crate::actors::messages::PROTOCOL_VERSION);
    let site_id = match (a.site_id, &a.site_id_from_pod_name) {
        (Some(id), _) => id,
        (None, Some(pod)) => crate::kube::membership::ordinal_from_pod_name(pod)
            .with_context(|| format!("pod name {pod:?} does not end in -N (a StatefulSet ordinal)"))?,
        (None, None) => bail!("give --site-id or --site-id-from-pod-name"),
    };
    runtime()?.block_on(run_site(cfg, site_id, protocol, a.http, a.stay_up))
}

/// `histofed evaluator`.
pub(super) fn evaluator(a: EvaluatorCmd) -> Result<()> {
    let cfg = load_config(&a.config, None)?;
    runtime()?.block_on(run_evaluator_node(cfg, a))
}

#[derive(Args, Debug)]
pub(super) struct DemoArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Output folder (samples, checkpoints, reports, logs).
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Number of site processes.
    #[arg(long)]
    sites: Option<u32>,
    /// Rounds to run.
    #[arg(long)]
    rounds: Option<u64>,
    /// Plaintext TCP with the cookie only (by default the demo issues certificates and runs mutual TLS).
    #[arg(long)]
    no_tls: bool,
}

#[derive(Args, Debug)]
pub(super) struct ServerCmd {
    #[command(flatten)]
    config: ConfigArgs,
    /// Output folder; overrides runtime.out_dir.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Serve /healthz, /readyz, /metrics and /status on this address (e.g. 0.0.0.0:9090).
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Watch the site pods with this label selector through the Kubernetes API (in the namespace of
    /// POD_NAMESPACE or the kubeconfig): a deleted or NotReady pod drops its site at once.
    #[arg(long, value_name = "SELECTOR")]
    k8s_site_selector: Option<String>,
    /// After the last round, keep serving /status and /metrics until SIGTERM instead of exiting (a Deployment
    /// would otherwise restart a finished server over and over).
    #[arg(long)]
    stay_up: bool,
}

#[derive(Args, Debug)]
pub(super) struct SiteCmd {
    #[command(flatten)]
    config: ConfigArgs,
    /// This site's id (0-based).
    #[arg(long, required_unless_present = "site_id_from_pod_name", conflicts_with = "site_id_from_pod_name")]
    site_id: Option<u32>,
    /// Take the site id from a StatefulSet pod name (`histofed-site-2` → 2), e.g. `$(POD_NAME)`.
    #[arg(long, value_name = "POD_NAME")]
    site_id_from_pod_name: Option<String>,
    /// Serve /healthz, /readyz and /metrics on this address.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// The server's host:port; overrides cluster.server_addr.
    #[arg(long)]
    server: Option<String>,
    /// Announce this protocol version instead of ours (compatibility tests only).
    #[arg(long, hide = true)]
    protocol_version: Option<u32>,
    /// When the server ends the run, stay idle until SIGTERM instead of exiting (under a StatefulSet).
    #[arg(long)]
    stay_up: bool,
}

#[derive(Args, Debug)]
pub(super) struct EvaluatorCmd {
    #[command(flatten)]
    config: ConfigArgs,
    /// Role name (report key, metric label, actor `histofed-role-<name>`; with mTLS the certificate `role-<name>`).
    #[arg(long, default_value = "evaluator")]
    name: String,
    /// Where grids and quality reports go (default: <runtime.out_dir>/evaluator-<name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Stop when the server says the run is over (default: stay, and follow a resumed server).
    #[arg(long)]
    exit_when_run_over: bool,
}

#[derive(Args, Debug)]
pub(super) struct StatusCmd {
    /// The server's HTTP endpoint (its --http address), host:port.
    #[arg(long, default_value = "127.0.0.1:9090")]
    addr: String,
    /// Print the status document as JSON.
    #[arg(long)]
    json: bool,
}

/// Operational options of the server process (not part of the run's configuration).
#[derive(Debug, Default, Clone)]
pub struct ServerOpts {
    pub http: Option<SocketAddr>,
    pub k8s_site_selector: Option<String>,
    pub stay_up: bool,
}

/// The site's share of the validation split (partitioned like the training data, so it has the site's class mix)
/// and its evaluator's settings; `None` when federated evaluation is off or this site's share is too small to
/// score (the site then answers the server's requests with the reason).
pub(super) fn site_evaluator(
    cfg: &Config,
    model: &crate::models::ModelConfig,
    device: tch::Device,
    val: &data::Dataset,
    site_id: u32,
) -> Option<crate::actors::evaluator::SiteEvaluatorArgs> {
    if !cfg.evaluation.at_sites || cfg.model.bench_params.is_some() {
        return None;
    }
    let need = crate::eval::site_eval::PR_K + 1;
    // The same scheme and seed as the training data, so the site's share has its class mix; a Dirichlet draw's
    // minimum size is meant for training shards and is not asked of the (ten times smaller) validation split.
    let shard = cfg.partition().map_err(anyhow::Error::from).and_then(|scheme| {
        let scheme = match scheme {
            partition::Partition::Dirichlet { alpha, .. } => partition::Partition::Dirichlet { alpha, min_size: 0 },
            other => other,
        };
        shard_of(cfg, val, site_id, &scheme)
    });
    let shard = match shard {
        Ok(s) if s.len() >= need => s,
        Ok(s) => {
            tracing::warn!(
                images = s.len(),
                need,
                "this site's share of the validation split is too small; it will not evaluate \
                 (raise data.val_fraction)"
            );
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot partition the validation split; this site will not evaluate");
            return None;
        }
    };
    tracing::info!(site_id, images = shard.len(), "site validation split ready (federated evaluation)");
    Some(crate::actors::evaluator::SiteEvaluatorArgs {
        site_id,
        model: model.clone(),
        device,
        val: Arc::new(shard),
        seed: cfg.federation.seed,
        threads: cfg.runtime.threads,
    })
}

/// `--stay-up`: the run is over; keep the HTTP endpoint answering until told to stop.
pub(super) async fn stay_up() {
    tracing::info!("run finished; staying up (--stay-up) until SIGTERM");
    wait_for_signal().await;
}

/// Resolves on the first SIGINT or SIGTERM.
pub(super) async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; relying on the default actions");
            std::future::pending::<()>().await
        }
    }
}

/// The role already finished successfully (it only waited for a signal, with --stay-up).
pub(super) fn finished_ok(exit: &Exit) -> bool {
    exit.lock().map(|e| matches!(*e, Some(Ok(_)))).unwrap_or(false)
}

pub(super) fn take_exit(exit: &Exit) -> Option<Result<String, String>> {
    exit.lock().ok().and_then(|mut e| e.take())
}

/// Starts the HTTP endpoint when asked to; the returned task ends with the process.
pub(super) async fn serve_http(addr: Option<SocketAddr>, state: crate::observability::HttpState) -> Result<()> {
    if let Some(addr) = addr {
        let (bound, _task) = crate::observability::serve(addr, state).await?;
        tracing::info!(%bound, "health, readiness, metrics and status served over HTTP");
    }
    Ok(())
}

/// `--stay-up` on a run that is already complete: answer health, metrics and status as finished until a signal.
async fn serve_finished(cfg: &Config, completed: u64, http: Option<SocketAddr>) -> Result<()> {
    let obs = Observed {
        metrics: crate::observability::Metrics::new("server"),
        status: crate::observability::StatusHandle::default(),
        readiness: crate::observability::Readiness::new("finished"),
        pulse: crate::observability::Pulse::default(),
    };
    obs.metrics.set_rounds_configured(cfg.federation.rounds);
    obs.status.update(|s| {
        s.role = "server".into();
        s.round = completed;
        s.rounds_configured = cfg.federation.rounds;
        s.phase = "finished".into();
    });
    obs.readiness.set_ready();
    serve_http(
        http,
        crate::observability::HttpState {
            metrics: obs.metrics,
            status: obs.status,
            readiness: obs.readiness,
            pulse: obs.pulse,
        },
    )
    .await?;
    stay_up().await;
    Ok(())
}

pub async fn run_server(mut cfg: Config, opts: ServerOpts) -> Result<()> {
    tch::set_num_threads(cfg.runtime.threads);
    // First the data: a real source decides the model's classes, hence the model and the configuration's hash.
    let splits = load_data(&mut cfg)?;
    let model = cfg.model_config()?;
    let device = select_device(Some(&cfg.model.device).filter(|d| !d.is_empty()).map(|s| s.as_str()))?;
    let out = cfg.runtime.out_dir.clone();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let store = CheckpointStore::open(out.join("checkpoints"), cfg.federation.keep_checkpoints)?;
    let (initial, completed, mut report, strategy_state) = match resume(&store, &cfg, &out)? {
        Some(r) => (r.initial, r.completed, r.report, r.strategy_state),
        None => {
            let (m, seed, bench) = (model.clone(), cfg.federation.seed as i64, cfg.model.bench_params);
            let gan = tokio::task::spawn_blocking(move || match bench {
                Some(p) => crate::train::bench_weights(p, seed as u64).map_err(anyhow::Error::from),
                None => Ok(Gan::new(&m, device, seed)?.weights()?),
            })
            .await??;
            save_initial(&store, &cfg, &gan)?;
            (gan, 0, fresh_report(&cfg), None)
        }
    };
    if completed >= cfg.federation.rounds {
        println!("all {} rounds are already complete in {}", cfg.federation.rounds, out.display());
        if opts.stay_up {
            serve_finished(&cfg, completed, opts.http).await?;
        }
        return Ok(());
    }
    report.classes = splits.train.classes.clone();
    tracing::info!(
        model = %report.model,
        generator_values = initial.strip_prefix(GENERATOR_PREFIX).num_values(),
        discriminator_values = initial.strip_prefix(DISCRIMINATOR_PREFIX).num_values(),
        bytes = initial.num_bytes(),
        "global model ready"
    );
    let initial_bytes = initial.num_bytes();
    let quality = quality_setup(&cfg, &splits.train, device)?;
    let evaluator = EvaluatorArgs {
        model: model.clone(),
        device,
        real: Arc::new(splits.test),
        per_class: cfg.runtime.grid_per_class,
        out_dir: out.clone(),
        seed: cfg.federation.seed,
        threads: cfg.runtime.threads,
        quality,
    };
    let listen = cluster::resolve(&cfg.cluster.server_addr)?;
    let security = cluster::Security::from_dir(cfg.cluster.tls_dir.as_deref(), crate::cluster::certs::SERVER_NAME)?;
    let mtls = security.is_mtls();
    let bulk_tls = match &security {
        cluster::Security::Plain => BulkTls::Plain,
        cluster::Security::Mtls(m) => BulkTls::Server(m.acceptor()?),
    };
    let bulk_port = match cfg.cluster.bulk_port {
        Some(p) => p,
        None if listen.port() == 0 => 0,
        None => listen.port().checked_add(1).context("cluster.server_addr port 65535 leaves no bulk port")?,
    };
    let kube = kube_setup(&cfg, opts.k8s_site_selector.as_deref()).await?;
    let node = cluster::start_node("server", listen, cfg.cookie(), cfg.cluster.max_frame_mib << 20, security).await?;
    let exit: Exit = Arc::new(Mutex::new(None));
    let obs = Observed {
        metrics: crate::observability::Metrics::new("server"),
        status: crate::observability::StatusHandle::default(),
        readiness: crate::observability::Readiness::new("starting"),
        pulse: crate::observability::Pulse::default(),
    };
    let args = ServerArgs {
        node: node.server.clone(),
        mtls,
        strategy: {
            let mut s = cfg.build_strategy()?;
            if let Some(state) = &strategy_state {
                tracing::info!(strategy = s.name(), "restoring the strategy's state from the checkpoint");
                s.restore_state_weights(state);
            }
            // Adaptive clipping resumes the clip norm the last durable round chose.
            if let Some(c) = report.rounds.last().and_then(|r| r.privacy).and_then(|p| p.next_clip_norm) {
                tracing::info!(clip_norm = c, "resuming adaptive clipping from the privacy ledger");
                s.resume_clip_norm(c);
            }
            s
        },
        config: cfg.clone(),
        out_dir: out.clone(),
        initial,
        completed_rounds: completed,
        report,
        store,
        evaluator: cfg.model.bench_params.is_none().then_some(evaluator),
        exit: exit.clone(),
        bulk_listen: SocketAddr::new(listen.ip(), bulk_port),
        bulk_tls,
        bulk_limits: BulkLimits {
            max_body: (cfg.cluster.max_frame_mib << 20).max(initial_bytes as u64 * 2),
            max_inflight_uploads: cfg.cluster.max_inflight_uploads,
            stall: Duration::from_secs_f64(cfg.cluster.transfer_stall_secs),
            ..BulkLimits::default()
        },
        restart_policy: RestartPolicy::default(),
        obs: obs.clone(),
        stay_up: opts.stay_up,
        remediation: kube.as_ref().and_then(|k| k.remediation.clone()),
    };
    serve_http(
        opts.http,
        crate::observability::HttpState {
            metrics: obs.metrics.clone(),
            status: obs.status.clone(),
            readiness: obs.readiness.clone(),
            pulse: obs.pulse.clone(),
        },
    )
    .await?;
    let (server, handle) = Actor::spawn(Some("histofed-server".into()), ServerActor, args).await?;
    if let Some(k) = kube {
        watch_site_pods(server.clone(), k);
    }
    tracing::info!(%listen, mtls, "server listening");
    wait_for_server(server, handle, node, &exit, &out).await
}

/// Waits for the server actor to end (or a signal), then shuts the node down and turns the run's outcome into the
/// process's result.
async fn wait_for_server(
    server: ActorRef<ServerMsg>,
    handle: tokio::task::JoinHandle<()>,
    node: cluster::Node,
    exit: &Exit,
    out: &std::path::Path,
) -> Result<()> {
    tokio::select! {
        _ = handle => {},
        _ = wait_for_signal() => {
            server.stop(Some("signal".into()));
            // With --stay-up a finished run waits for exactly this signal.
            if !finished_ok(exit) {
                node.shutdown().await;
                tracing::warn!("signal received; stopping (completed rounds are checkpointed)");
                bail!("interrupted");
            }
        }
    }
    if node.refused_handshakes() > 0 {
        tracing::warn!(refused = node.refused_handshakes(), "TLS handshakes refused during the run");
    }
    node.shutdown().await;
    match take_exit(exit) {
        Some(Ok(msg)) => {
            tracing::info!(%msg, "run finished");
            println!("{msg}; outputs in {}", out.display());
            Ok(())
        }
        Some(Err(msg)) => bail!("run failed: {msg}"),
        None => bail!("the server actor stopped unexpectedly (see the log)"),
    }
}

pub async fn run_site(
    mut cfg: Config,
    site_id: u32,
    protocol: u32,
    http: Option<SocketAddr>,
    stay_up: bool,
) -> Result<()> {
    tch::set_num_threads(cfg.runtime.threads);
    if site_id >= cfg.federation.sites {
        bail!("--site-id {site_id} is outside 0..{} (federation.sites)", cfg.federation.sites);
    }
    let stain = data::synth::StainShift::for_site(site_id as usize, cfg.data.stain_shift, cfg.federation.seed);
    let splits = load_data_stained(&mut cfg, stain)?;
    let model = cfg.model_config()?;
    let device = select_device(Some(&cfg.model.device).filter(|d| !d.is_empty()).map(|s| s.as_str()))?;
    let shard = site_shard(&cfg, &splits.train, site_id)?;
    let state_dir = cfg.runtime.site_state_dir(site_id);
    let store =
        SiteStore::open(&state_dir).with_context(|| format!("opening the site's state in {}", state_dir.display()))?;
    let local_state = store.newest_round();
    match local_state {
        None => tracing::info!(
            dir = %state_dir.display(),
            "no local state (a new volume, or one lost with its node): this site starts from the server's current \
             global weights"
        ),
        Some(round) => tracing::info!(
            dir = %state_dir.display(),
            round,
            "local state found: resumed if its round is the one the server has open"
        ),
    }
    let class_counts: Vec<u64> = shard.class_counts().iter().map(|&c| c as u64).collect();
    tracing::info!(site_id, images = shard.len(), ?class_counts, "site shard ready");
    let evaluator = site_evaluator(&cfg, &model, device, &splits.val, site_id);
    let server_addr = cluster::resolve(&cfg.cluster.server_addr)?;
    let ip = if server_addr.ip().is_loopback() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let identity = crate::cluster::certs::site_name(site_id);
    let security = cluster::Security::from_dir(cfg.cluster.tls_dir.as_deref(), &identity)?;
    // One node name per process: a replacement for this site must not collide with a zombie's session.
    let instance: u64 = rand::random();
    let node_name = cluster::tls::process_node_name(&identity, instance);
    let node = cluster::start_node(
        &node_name,
        cluster::ephemeral(ip),
        cfg.cookie(),
        cfg.cluster.max_frame_mib << 20,
        security,
    )
    .await?;
    let exit: Exit = Arc::new(Mutex::new(None));
    let metrics = crate::observability::Metrics::new("site");
    metrics.set_rounds_configured(cfg.federation.rounds);
    let args = SiteArgs {
        site_id,
        local_state,
        node: node.server.clone(),
        security: node.security.clone(),
        server_addr,
        reconnect: Duration::from_secs_f64(cfg.cluster.reconnect_secs),
        num_samples: shard.len() as u64,
        class_counts,
        trainer: TrainerArgs {
            site_id,
            model,
            device,
            data: Arc::new(shard),
            seed: cfg.federation.seed,
            threads: cfg.runtime.threads,
            checkpoints: Some(LocalCheckpoints { store: store.clone(), every: cfg.federation.local_checkpoint_every }),
            bench: cfg.model.bench_params.is_some(),
        },
        evaluator,
        restart_policy: RestartPolicy::default(),
        min_batch: cfg.federation.min_batch_size,
        faults: FaultPlan::for_site(&cfg.faults, site_id),
        exit: exit.clone(),
        bulk: bulk_client(&cfg, &node.security)?,
        store: Some(store.clone()),
        keep_finished: cfg.federation.keep_finished_update,
        metrics: metrics.clone(),
        give_up: cfg.cluster.site_give_up_secs.map(Duration::from_secs_f64),
        secagg: cfg.secagg()?.map(|s| s.options),
        protocol,
        stay_up,
        instance,
    };
    let readiness = serve_site_http(http, site_id, metrics).await?;
    let name = site_process_name(site_id, args.instance);
    tracing::info!(site_id, process = %name, "site process");
    let (site, handle) = Actor::spawn(Some(name), SiteActor, args).await?;
    // Ready = data loaded, node up, actor running; a hung process stops answering the probe.
    readiness.set_ready();
    tokio::select! {
        _ = handle => {},
        _ = wait_for_signal() => {
            site.stop(Some("signal".into()));
            if !finished_ok(&exit) {
                node.shutdown().await;
                bail!("interrupted");
            }
        }
    }
    node.shutdown().await;
    match take_exit(&exit) {
        Some(Ok(msg)) => {
            tracing::info!(%msg, "site done");
            Ok(())
        }
        Some(Err(msg)) => bail!("{msg}"),
        None => bail!("the site actor stopped unexpectedly (see the log)"),
    }
}

/// How a site reaches the server's bulk plane (mTLS when the cluster link has it).
fn bulk_client(cfg: &Config, security: &cluster::Security) -> Result<ClientOpts> {
    Ok(ClientOpts {
        tls: match security {
            cluster::Security::Plain => BulkTls::Plain,
            cluster::Security::Mtls(m) => {
                BulkTls::Client(m.connector()?, crate::cluster::certs::SERVER_NAME.to_string())
            }
        },
        stall: Duration::from_secs_f64(cfg.cluster.transfer_stall_secs),
        chunk: 1 << 20,
        max_body: cfg.cluster.max_frame_mib << 20,
    })
}

/// A site's `--http` endpoint (no `/pulse`: only the server answers it); returns its readiness, not ready yet.
async fn serve_site_http(
    http: Option<SocketAddr>,
    site_id: u32,
    metrics: crate::observability::Metrics,
) -> Result<crate::observability::Readiness> {
    let readiness = crate::observability::Readiness::new("starting");
    let status = crate::observability::StatusHandle::default();
    status.update(|s| {
        s.role = "site".into();
        s.expected = vec![site_actor_name(site_id)];
        s.phase = "running".into();
    });
    let pulse = crate::observability::Pulse::default();
    serve_http(http, crate::observability::HttpState { metrics, status, readiness: readiness.clone(), pulse }).await?;
    Ok(readiness)
}

pub(super) async fn run_evaluator_node(mut cfg: Config, a: EvaluatorCmd) -> Result<()> {
    use crate::actors::evaluator::EvaluatorRole;
    use crate::actors::role::{run_node, Role, RoleFactory, RoleNodeOptions};
    tch::set_num_threads(cfg.runtime.threads);
    let splits = load_data(&mut cfg)?;
    let model = cfg.model_config()?;
    let device = select_device(Some(&cfg.model.device).filter(|d| !d.is_empty()).map(|s| s.as_str()))?;
    let out = a.out.clone().unwrap_or_else(|| cfg.runtime.out_dir.join(format!("evaluator-{}", a.name)));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let args = EvaluatorArgs {
        model,
        device,
        quality: quality_setup(&cfg, &splits.train, device)?,
        real: Arc::new(splits.test),
        per_class: cfg.runtime.grid_per_class,
        out_dir: std::fs::canonicalize(&out)?,
        seed: cfg.federation.seed,
        threads: cfg.runtime.threads,
    };
    tracing::info!(name = %a.name, out = %out.display(), "evaluator node starting");
    let make: RoleFactory = Arc::new(move || Ok(Box::new(EvaluatorRole::new(&args)?) as Box<dyn Role>));
    let mut opts = RoleNodeOptions::new(a.name.clone(), cfg);
    opts.exit_when_run_over = a.exit_when_run_over;
    let why = run_node(make, opts).await?;
    tracing::info!(%why, "evaluator node stopped");
    Ok(())
}
