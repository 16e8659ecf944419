//! Logging set-up shared by every binary: human-readable on a terminal, JSON with `--log-format json` (what the
//! Kubernetes manifests use), to stderr or to a file. `RUST_LOG` refines the filter; ractor_cluster's per-frame
//! chatter is kept at warnings by default.

use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat, file: Option<&Path>, verbose: u8) -> anyhow::Result<()> {
    let default = match verbose {
        0 => "info,ractor_cluster=warn,ractor=warn",
        1 => "debug,ractor_cluster=info,ractor=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let result = match (format, file) {
        (LogFormat::Text, None) => builder.with_writer(std::io::stderr).try_init(),
        (LogFormat::Json, None) => builder.json().with_writer(std::io::stderr).try_init(),
        (fmt, Some(path)) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            let b = builder.with_ansi(false).with_writer(Mutex::new(f));
            match fmt {
                LogFormat::Text => b.try_init(),
                LogFormat::Json => b.json().try_init(),
            }
        }
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}
