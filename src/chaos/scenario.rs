//! A chaos scenario as written in `chaos/*.toml`: the federation to start, the faults with their timing, and what
//! the run must end with. Parsing and validation only; running is `chaos::runner`.
//!
//! Two kinds of fault live in a scenario. `[[fault]]` entries are done *to* the processes from outside, by the
//! runner, at a trigger (after round r, after t seconds, every k rounds): kill, hang, partition, corrupt a
//! checkpoint, fill the disk, start an intruder. `[[inject]]` entries are the in-process faults of
//! `crate::faults` (trainer panic, NaN, OOM, bad update, slow site), handed to the sites through their
//! configuration and fired at the exact code points where real failures happen.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::faults::Fault;

use super::ChaosError;

/// When a runner-side fault fires.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Once this many rounds have completed.
    pub after_round: Option<u64>,
    /// This many seconds after the federation started.
    pub after_secs: Option<f64>,
    /// Every this many completed rounds (with `count`).
    pub every_rounds: Option<u64>,
    /// Repetitions of an `every_rounds` fault.
    pub count: Option<u32>,
    /// With `after_round`: this many seconds after that round completed, i.e. in the middle of the next one.
    pub then_secs: Option<f64>,
    /// With `after_round = r` and a fault on one site: fire once that site has saved a local checkpoint of round
    /// r + 1 (it is training, and has progress to resume from), whatever the device's speed.
    #[serde(default)]
    pub at_local_checkpoint: bool,
}

/// Credentials an intruder presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Intruder {
    /// The right certificates (if any) but the wrong cluster cookie.
    WrongCookie,
    /// A certificate signed by another CA.
    ForeignCa,
    /// Site 0's certificate, claiming to be the intruder's site id.
    StolenIdentity,
}

/// A fault the runner does to the processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Action {
    /// SIGKILL a site (rotating over the sites when `site` is absent), restart it after `restart_after_secs`.
    KillSite {
        site: Option<u32>,
        #[serde(flatten)]
        when: Trigger,
        #[serde(default = "one_sec")]
        restart_after_secs: f64,
    },
    /// SIGKILL the server, restart it after `restart_after_secs`.
    KillServer {
        #[serde(flatten)]
        when: Trigger,
        #[serde(default = "one_sec")]
        restart_after_secs: f64,
    },
    /// SIGSTOP a site for `secs`, then SIGCONT.
    HangSite {
        site: u32,
        #[serde(flatten)]
        when: Trigger,
        secs: f64,
    },
    /// Cut a site off the network for `secs` (its process runs in a network namespace the runner makes; needs
    /// root and `ip`).
    Partition {
        site: u32,
        #[serde(flatten)]
        when: Trigger,
        secs: f64,
    },
    /// Kill the server, damage the newest checkpoint, restart the server: it must fall back, not load it.
    CorruptCheckpoint {
        #[serde(flatten)]
        when: Trigger,
    },
    /// The checkpoint volume is a tmpfs of this size (needs root): it fills up during the run.
    DiskFull { size_kib: u64 },
    /// An intruder claiming site `site` joins with bad credentials; it must never become a member.
    BadCredentials { site: u32, what: Intruder },
}

fn one_sec() -> f64 {
    1.0
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::KillSite { .. } => "kill-site",
            Action::KillServer { .. } => "kill-server",
            Action::HangSite { .. } => "hang-site",
            Action::Partition { .. } => "partition",
            Action::CorruptCheckpoint { .. } => "corrupt-checkpoint",
            Action::DiskFull { .. } => "disk-full",
            Action::BadCredentials { .. } => "bad-credentials",
        }
    }

    /// The site the fault is done to, where it names one.
    pub fn site(&self) -> Option<u32> {
        match self {
            Action::KillSite { site, .. } => *site,
            Action::HangSite { site, .. } | Action::Partition { site, .. } | Action::BadCredentials { site, .. } => {
                Some(*site)
            }
            Action::KillServer { .. } | Action::CorruptCheckpoint { .. } | Action::DiskFull { .. } => None,
        }
    }

    /// Its trigger, for the faults that happen during the run (set-up faults have none).
    pub fn trigger(&self) -> Option<&Trigger> {
        match self {
            Action::KillSite { when, .. }
            | Action::KillServer { when, .. }
            | Action::HangSite { when, .. }
            | Action::Partition { when, .. }
            | Action::CorruptCheckpoint { when } => Some(when),
            Action::DiskFull { .. } | Action::BadCredentials { .. } => None,
        }
    }
}

/// How the run must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every configured round completes.
    #[default]
    Complete,
    /// The server stops with an error (the right outcome, e.g. when checkpoints cannot be written).
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub outcome: Outcome,
    /// With `outcome = "error"`: text the server's error must contain.
    pub error_contains: Option<String>,
    /// The whole scenario must finish within this (seconds).
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
}

fn default_timeout() -> f64 {
    300.0
}

impl Default for Expect {
    fn default() -> Self {
        Self { outcome: Outcome::Complete, error_contains: None, timeout_secs: default_timeout() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Defaults to the file name.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub about: String,
    /// Run the federation over mutual TLS (certificates made by the runner).
    #[serde(default)]
    pub tls: bool,
    /// Configuration overrides (`section.key=value`) on top of the chaos base config (tiny model, loopback).
    #[serde(default)]
    pub set: Vec<String>,
    #[serde(default, rename = "fault")]
    pub faults: Vec<Action>,
    #[serde(default, rename = "inject")]
    pub injects: Vec<Fault>,
    #[serde(default)]
    pub expect: Expect,
    /// Part of the quick subset that runs in `make test`.
    #[serde(default)]
    pub quick: bool,
}

/// The configuration every scenario starts from: small and fast, so a scenario is about the fault, not the model.
pub fn base_config() -> Config {
    let mut c = Config::default();
    c.federation.rounds = 6;
    c.federation.sites = 3;
    c.federation.min_sites = 2;
    c.federation.local_steps = 10;
    c.federation.batch_size = 16;
    c.federation.round_deadline_secs = 60.0;
    c.federation.join_timeout_secs = 60.0;
    c.federation.grace_secs = 2.0;
    c.federation.heartbeat_secs = 0.5;
    c.federation.seed = 11;
    c.data.per_class = 24;
    c.data.num_classes = Some(4);
    c.data.partition = "dirichlet:0.5:min=8".into();
    c.model.preset = "tiny".into();
    c.cluster.reconnect_secs = 0.2;
    c.cluster.site_give_up_secs = Some(15.0);
    c.runtime.threads = 1;
    c.runtime.grid_per_class = 2;
    // Chaos runs judge recovery, not sample quality: no reference classifier to train.
    c.evaluation.eval_every = 0;
    c
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ChaosError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ChaosError::Scenario { path: path.to_path_buf(), message: format!("cannot read: {e}") })?;
        let mut s: Scenario = toml::from_str(&text)
            .map_err(|e| ChaosError::Scenario { path: path.to_path_buf(), message: e.to_string() })?;
        if s.name.is_empty() {
            s.name = path.file_stem().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        }
        s.validate().map_err(|message| ChaosError::Scenario { path: path.to_path_buf(), message })?;
        Ok(s)
    }

    /// The scenario files of a directory (sorted), or the one file given.
    pub fn discover(path: &Path) -> Result<Vec<PathBuf>, ChaosError> {
        if path.is_file() {
            return Ok(vec![path.to_path_buf()]);
        }
        let entries = std::fs::read_dir(path).map_err(|e| ChaosError::Scenario {
            path: path.to_path_buf(),
            message: format!("neither a scenario file nor a readable directory: {e}"),
        })?;
        let mut files: Vec<PathBuf> =
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
        files.sort();
        if files.is_empty() {
            return Err(ChaosError::Scenario { path: path.to_path_buf(), message: "no *.toml scenarios".into() });
        }
        Ok(files)
    }

    /// The federation's configuration: the base, the scenario's overrides, its injected faults.
    pub fn config(&self) -> Result<Config, String> {
        let mut c = base_config();
        c.apply_overrides(&self.set).map_err(|e| e.to_string())?;
        c.faults = self.injects.clone();
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), String> {
        let c = self.config()?;
        let sites = c.federation.sites;
        for f in &self.faults {
            let site = match f {
                Action::KillSite { site, .. } => *site,
                Action::HangSite { site, secs, .. } | Action::Partition { site, secs, .. } => {
                    if !(secs.is_finite() && *secs > 0.0) {
                        return Err(format!("{}: secs = {secs} must be positive", f.kind()));
                    }
                    Some(*site)
                }
                Action::BadCredentials { site, what } => {
                    if matches!(what, Intruder::ForeignCa | Intruder::StolenIdentity) && !self.tls {
                        return Err(format!("bad-credentials {what:?} needs `tls = true`"));
                    }
                    Some(*site)
                }
                _ => None,
            };
            if site.is_some_and(|s| s >= sites) {
                return Err(format!(
                    "{}: site {} is outside 0..{sites} (federation.sites)",
                    f.kind(),
                    site.unwrap_or(0)
                ));
            }
            if let Some(t) = f.trigger() {
                let set = [t.after_round.is_some(), t.after_secs.is_some(), t.every_rounds.is_some()];
                if set.iter().filter(|x| **x).count() != 1 {
                    return Err(format!("{}: give exactly one of after_round, after_secs, every_rounds", f.kind()));
                }
                if (t.then_secs.is_some() || t.at_local_checkpoint) && t.after_round.is_none() {
                    return Err(format!("{}: then_secs and at_local_checkpoint go with after_round", f.kind()));
                }
                if t.at_local_checkpoint && site.is_none() {
                    return Err(format!("{}: at_local_checkpoint needs the fault's site", f.kind()));
                }
                if t.then_secs.is_some_and(|x| !(x.is_finite() && x >= 0.0)) {
                    return Err(format!("{}: then_secs must be a non-negative number of seconds", f.kind()));
                }
                if t.every_rounds == Some(0) {
                    return Err(format!("{}: every_rounds must be at least 1", f.kind()));
                }
            }
        }
        if self.expect.outcome == Outcome::Error && self.expect.error_contains.is_none() {
            return Err("expect.outcome = \"error\" needs expect.error_contains".into());
        }
        if !(self.expect.timeout_secs.is_finite() && self.expect.timeout_secs > 0.0) {
            return Err("expect.timeout_secs must be positive".into());
        }
        Ok(())
    }

    /// The same federation without any fault: the reference for the final-model distance.
    pub fn fault_free(&self) -> Scenario {
        Scenario {
            name: format!("{}-baseline", self.name),
            faults: Vec::new(),
            injects: Vec::new(),
            expect: Expect { outcome: Outcome::Complete, ..self.expect.clone() },
            ..self.clone()
        }
    }

    pub fn fault_kinds(&self) -> Vec<String> {
        let mut k: Vec<String> = self.faults.iter().map(|f| f.kind().to_string()).collect();
        k.extend(self.injects.iter().map(inject_kind));
        k
    }
}

fn inject_kind(f: &Fault) -> String {
    f.label()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        s.validate()?;
        Ok(s)
    }

    #[test]
    fn scenarios_parse_and_bad_ones_are_named() {
        let s = parse(
            "set = [\"federation.rounds=4\"]\n[[fault]]\nkind = \"kill-site\"\nsite = 1\nafter_round = 2\n\
             [[inject]]\nkind = \"bad-update\"\nsite = 0\nround = 1\nwhat = \"nan\"\n",
        )
        .unwrap();
        assert_eq!(s.fault_kinds(), vec!["kill-site", "bad-update:nan"]);
        assert_eq!(s.config().unwrap().federation.rounds, 4);
        assert!(parse("[[fault]]\nkind = \"kill-site\"\nsite = 9\nafter_round = 1\n").unwrap_err().contains("site 9"));
        assert!(parse("[[fault]]\nkind = \"kill-site\"\n").unwrap_err().contains("exactly one"));
        assert!(parse("[[fault]]\nkind = \"explode\"\n").is_err());
        assert!(parse("[[fault]]\nkind = \"bad-credentials\"\nsite = 1\nwhat = \"foreign-ca\"\n")
            .unwrap_err()
            .contains("tls"));
        assert!(parse("set = [\"federation.rounds=0\"]\n").unwrap_err().contains("rounds"));
        assert!(parse("[expect]\noutcome = \"error\"\n").unwrap_err().contains("error_contains"));
        let mid = "[[fault]]\nkind = \"kill-site\"\nsite = 1\nafter_round = 2\nat_local_checkpoint = true\n";
        assert!(parse(mid).is_ok());
        let no_site = mid.replace("site = 1\n", "");
        assert!(parse(&no_site).unwrap_err().contains("needs the fault's site"), "{no_site}");
        let no_round = "[[fault]]\nkind = \"kill-site\"\nsite = 1\nafter_secs = 2\nthen_secs = 1\n";
        assert!(parse(no_round).unwrap_err().contains("go with after_round"));
    }

    #[test]
    fn every_shipped_scenario_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("chaos");
        let files = Scenario::discover(&dir).unwrap();
        assert!(files.len() >= 10, "{files:?}");
        for f in files {
            Scenario::load(&f).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
