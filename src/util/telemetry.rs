//! Logging set-up shared by every binary: human-readable on a terminal, JSON with `--log-format json` (what the
//! Kubernetes manifests use), to stderr or to a file. `RUST_LOG` refines the filter; ractor_cluster's per-frame
//! chatter is kept at warnings by default.
//!
//! Colour (ANSI escape sequences) only where someone reads it: human-readable text on stderr when stderr is a
//! terminal and `NO_COLOR` is unset or empty (<https://no-color.org>). A log file, a pipe, a redirect
//! (`2>site.log`) and JSON never carry escape sequences.

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Whether log lines get ANSI colours: only human-readable text going to a terminal, and never when `NO_COLOR` is
/// set to a non-empty value. `to_terminal` is false for a log file, a pipe or a redirected stream.
pub fn use_color(format: LogFormat, to_terminal: bool, no_color: Option<&OsStr>) -> bool {
    format == LogFormat::Text && to_terminal && no_color.is_none_or(|v| v.is_empty())
}

pub fn init(format: LogFormat, file: Option<&Path>, verbose: u8) -> anyhow::Result<()> {
    let default = match verbose {
        0 => "info,ractor_cluster=warn,ractor=warn",
        1 => "debug,ractor_cluster=info,ractor=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let to_terminal = file.is_none() && std::io::stderr().is_terminal();
    let ansi = use_color(format, to_terminal, std::env::var_os("NO_COLOR").as_deref());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi);
    let result = match (format, file) {
        (LogFormat::Text, None) => builder.with_writer(std::io::stderr).try_init(),
        (LogFormat::Json, None) => builder.json().with_writer(std::io::stderr).try_init(),
        (fmt, Some(path)) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            let b = builder.with_writer(Mutex::new(f));
            match fmt {
                LogFormat::Text => b.try_init(),
                LogFormat::Json => b.json().try_init(),
            }
        }
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_for_text_on_a_terminal_without_no_color() {
        let empty = OsStr::new("");
        let set = OsStr::new("1");
        for format in [LogFormat::Text, LogFormat::Json] {
            for to_terminal in [false, true] {
                for no_color in [None, Some(empty), Some(set)] {
                    let want = format == LogFormat::Text && to_terminal && no_color != Some(set);
                    assert_eq!(use_color(format, to_terminal, no_color), want, "{format:?} {to_terminal} {no_color:?}");
                }
            }
        }
        assert!(use_color(LogFormat::Text, true, None));
        assert!(!use_color(LogFormat::Text, false, None), "a file, pipe or redirect gets no escape sequences");
        assert!(!use_color(LogFormat::Text, true, Some(set)), "NO_COLOR=1 turns colour off on a terminal");
        assert!(!use_color(LogFormat::Json, true, None), "JSON is never coloured");
    }
}
