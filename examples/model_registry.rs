//! A model-registry role: joins a running federation, archives every completed round's global generator (an
//! atomically written safetensors file plus a JSON sidecar with the round's metrics) into a directory, and serves
//! the list over HTTP:
//!
//! - `GET /models`: JSON list of `{round, sha256, bytes, metrics, path}`, oldest first;
//! - `GET /models/{round}`: that round's generator (safetensors bytes; loads with `safetensors.torch.load_file`).
//!
//! It needs no change to the server or the sites: it is a [`Role`] hosted by `histofed::actors::role::run_node`.
//! The archive survives restarts (the index is rebuilt from the sidecars), and the SHA-256 is that of the file's
//! bytes, which are the generator's tensors only (no metadata), so equal weights give equal hashes.
//!
//! ```text
//! cargo run --example model_registry -- --config run.toml --dir registry --http 127.0.0.1:9300
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use histofed::actors::role::{run_node, Role, RoleError, RoleFactory, RoleNodeOptions, RoleReport, RoundEvent};
use histofed::config::Config;
use histofed::federation::checkpoint::write_atomic;
use histofed::federation::weights::Weights;
use histofed::models::GENERATOR_PREFIX;

#[derive(Parser)]
#[command(about = "Archive every round's global generator of a running federation and serve the list over HTTP")]
struct Args {
    /// The run's configuration file (server address, cookie, TLS directory).
    #[arg(long)]
    config: PathBuf,
    /// Where the archive lives.
    #[arg(long, default_value = "model-registry")]
    dir: PathBuf,
    /// HTTP address of `GET /models`.
    #[arg(long, default_value = "127.0.0.1:9300")]
    http: SocketAddr,
    /// Role name (report key, metric label; node name `role-<name>` and its certificate with mTLS).
    #[arg(long, default_value = "model-registry")]
    name: String,
    /// Exit once the server says the run is over (default: keep serving the archive).
    #[arg(long)]
    exit_when_run_over: bool,
    #[arg(long)]
    log_file: Option<PathBuf>,
}

/// One archived round (also its sidecar file, `round-NNNNNN.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    round: u64,
    sha256: String,
    bytes: u64,
    metrics: BTreeMap<String, serde_json::Value>,
    path: String,
}

type Index = Arc<Mutex<BTreeMap<u64, Entry>>>;

/// The role: pure file work, on the runner's thread.
struct Registry {
    dir: PathBuf,
    index: Index,
}

fn metrics_of(event: &RoundEvent) -> BTreeMap<String, serde_json::Value> {
    let s = &event.summary;
    let mut m = BTreeMap::new();
    m.insert("d_loss".into(), s.mean_losses.d_loss.into());
    m.insert("g_loss".into(), s.mean_losses.g_loss.into());
    m.insert("frechet_distance".into(), s.frechet_distance.into());
    m.insert("contributors".into(), serde_json::json!(s.contributors));
    m.insert("num_samples".into(), s.num_samples.into());
    m.insert("global_step_norm".into(), s.global_step_norm.into());
    m.insert("wall_secs".into(), s.wall_secs.into());
    m.insert("checkpoint".into(), s.checkpoint.clone().into());
    m
}

impl Role for Registry {
    fn on_round(&mut self, event: &RoundEvent, global: Option<&Weights>) -> Result<Option<RoleReport>, RoleError> {
        let global = global.ok_or_else(|| RoleError::Failed("no weights for the round".into()))?;
        let generator = global.strip_prefix(GENERATOR_PREFIX);
        if generator.is_empty() {
            return Err(RoleError::Failed(format!("round {}: the global weights hold no generator", event.round)));
        }
        let bytes = generator.to_safetensors(None)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let file = format!("round-{:06}.generator.safetensors", event.round);
        // The weights first, then the sidecar: an entry is listed only once both are whole on disk.
        let path = write_atomic(&self.dir, &file, &bytes).map_err(|e| RoleError::Failed(e.to_string()))?;
        let entry = Entry {
            round: event.round,
            sha256,
            bytes: bytes.len() as u64,
            metrics: metrics_of(event),
            path: path.display().to_string(),
        };
        let json = serde_json::to_vec_pretty(&entry).map_err(|e| RoleError::Failed(e.to_string()))?;
        write_atomic(&self.dir, &format!("round-{:06}.json", event.round), &json)
            .map_err(|e| RoleError::Failed(e.to_string()))?;
        let archived = {
            let mut index = self.index.lock().map_err(|_| RoleError::Failed("index lock poisoned".into()))?;
            index.insert(event.round, entry.clone());
            index.len()
        };
        let metrics =
            BTreeMap::from([("bytes".to_string(), entry.bytes as f64), ("archived".to_string(), archived as f64)]);
        Ok(Some(RoleReport { metrics, artifacts: vec![entry.path] }))
    }
}

/// Rebuilds the index from the sidecars already on disk (a restarted registry keeps its archive).
fn load_index(dir: &Path) -> Result<BTreeMap<u64, Entry>> {
    let mut index = BTreeMap::new();
    for item in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = item?.path();
        let is_sidecar = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("round-") && n.ends_with(".json") && !n.starts_with('.'));
        if !is_sidecar {
            continue;
        }
        match std::fs::read(&path).map_err(anyhow::Error::from).and_then(|b| Ok(serde_json::from_slice::<Entry>(&b)?)) {
            Ok(e) if Path::new(&e.path).exists() => {
                index.insert(e.round, e);
            }
            Ok(e) => tracing::warn!(round = e.round, "sidecar without its weights; ignored"),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "unreadable sidecar; ignored"),
        }
    }
    Ok(index)
}

async fn list(State(index): State<Index>) -> impl IntoResponse {
    let entries: Vec<Entry> = index.lock().map(|i| i.values().cloned().collect()).unwrap_or_default();
    Json(entries)
}

async fn model(State(index): State<Index>, UrlPath(round): UrlPath<u64>) -> axum::response::Response {
    let path = index.lock().ok().and_then(|i| i.get(&round).map(|e| e.path.clone()));
    let Some(path) = path else {
        return (StatusCode::NOT_FOUND, format!("round {round} is not archived")).into_response();
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read {path}: {e}")).into_response(),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    histofed::util::telemetry::init(histofed::util::telemetry::LogFormat::Text, args.log_file.as_deref(), 0)?;
    let config = Config::load(&args.config).with_context(|| format!("loading {}", args.config.display()))?;
    tch::set_num_threads(config.runtime.threads);
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let index: Index = Arc::new(Mutex::new(load_index(&dir)?));

    let app = Router::new().route("/models", get(list)).route("/models/{round}", get(model)).with_state(index.clone());
    let listener = tokio::net::TcpListener::bind(args.http).await.with_context(|| format!("binding {}", args.http))?;
    tracing::info!(addr = %listener.local_addr()?, dir = %dir.display(), "model registry serving");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });

    let make: RoleFactory = {
        let (dir, index) = (dir.clone(), index.clone());
        Arc::new(move || Ok(Box::new(Registry { dir: dir.clone(), index: index.clone() }) as Box<dyn Role>))
    };
    let mut opts = RoleNodeOptions::new(args.name.clone(), config);
    opts.exit_when_run_over = args.exit_when_run_over;
    tokio::select! {
        outcome = run_node(make, opts) => {
            let why = outcome?;
            tracing::info!(%why, "model registry stopped");
        }
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
    }
    Ok(())
}
