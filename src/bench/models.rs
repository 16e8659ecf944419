//! `histofed bench models`: per-step training time of every GAN combination in tch, side by side with the same
//! architecture written in PyTorch-Python (`bench/gan_step.py`), at the same thread count.
//!
//! Why interleaved subprocess runs: both sides call the same libtorch 2.13.0 kernels, so the interesting difference
//! (Rust FFI vs Python dispatch, optimiser and allocation overheads) is a few percent, smaller than the noise of a
//! shared machine. Running tch, PyTorch, tch, PyTorch … per combination and reporting medians lets drift and
//! neighbouring jobs hit both sides alike. The PyTorch side runs in its own process (from a venv holding the same
//! torch wheel) so the two runtimes never share an OpenMP pool; both wait passively (`OMP_WAIT_POLICY=PASSIVE`) so
//! the idle side's threads do not spin against the measured one.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::Deserialize;
use tch::Device;
use thiserror::Error;

use crate::models::device::synchronize;
use crate::models::rng::SeededRng;
use crate::models::{DiscKind, Gan, GanKind, ModelConfig, ModelError};

/// Number of classes of the benchmarked models (the PyTorch twin's default; cost barely depends on it).
const NUM_CLASSES: i64 = 4;

/// Characters of the Python side's stderr kept in an error.
const STDERR_TAIL: usize = 2000;

/// How to create the venv the PyTorch column needs (shown when it is missing).
pub const VENV_HINT: &str = "scripts/bench_venv.sh creates it (.venv-bench/bin/python; ~2.7 GB download)";

/// What to measure.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelBenchOptions {
    /// Model preset (see `ModelConfig::preset`): "small" is the 64×64 CPU setting.
    pub preset: String,
    /// Real-batch size per step.
    pub batch: i64,
    /// Timed steps per run for the objectives with one update per network (CGAN, ACGAN). WGAN-GP, whose step holds
    /// `n_critic` critic updates plus one generator update, runs `ceil(2 * steps / (n_critic + 1))` steps (at least
    /// 1), the same number of network updates; both sides always run the same count.
    pub steps: usize,
    /// Untimed steps before timing, per run (allocator warm-up, kernel selection).
    pub warmup: usize,
    /// Intra-op threads of both sides.
    pub threads: i32,
    /// The bench venv's python; `None` measures tch only. A path that does not exist is not an error: the PyTorch
    /// columns stay empty and the table says how to create the venv.
    pub python: Option<PathBuf>,
    /// Combinations to run; empty means all six.
    pub combos: Vec<(GanKind, DiscKind)>,
    /// Interleaved repeats (tch, PyTorch, tch, PyTorch …) per combination; medians are reported.
    pub repeats: usize,
    /// Where both sides run: "cpu", "cuda", "cuda:N" (`models::select_device`'s names).
    pub device: String,
}

impl Default for ModelBenchOptions {
    fn default() -> Self {
        ModelBenchOptions {
            preset: "small".into(),
            batch: 32,
            steps: 5,
            warmup: 1,
            threads: 2,
            python: None,
            combos: Vec::new(),
            repeats: 3,
            device: "cpu".into(),
        }
    }
}

/// One combination's result.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModelBenchRow {
    /// `gan-disc`, e.g. `wgan-gp-vit`.
    pub combo: String,
    /// Median seconds per step in tch.
    pub tch_secs: f64,
    /// Median seconds per step in PyTorch-Python; `None` without a venv.
    pub torch_secs: Option<f64>,
    /// `tch_secs / torch_secs`.
    pub ratio: Option<f64>,
    /// Trainable parameters of the generator and discriminator (tch side).
    pub g_params: usize,
    pub d_params: usize,
    /// Timed steps per run (the same on both sides).
    pub steps: usize,
    /// Every repeat's seconds per step, in run order.
    pub tch_runs: Vec<f64>,
    pub torch_runs: Vec<f64>,
    /// Settings shared by all rows, repeated so [`render_table`] can state them.
    pub preset: String,
    pub batch: i64,
    pub image_size: i64,
    pub threads: i32,
    pub warmup: usize,
    pub device: String,
    /// The PyTorch side's `torch.__version__`, or why that side did not run (missing venv).
    pub torch_version: Option<String>,
    pub torch_note: Option<String>,
    /// The PyTorch twin's parameter counts, when they differ from tch's (a sign the twins drifted apart).
    pub torch_param_mismatch: Option<(usize, usize)>,
}

/// Why a model benchmark could not run.
#[derive(Debug, Error)]
pub enum BenchError {
    #[error("invalid benchmark options: {0}")]
    Options(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the PyTorch benchmark script is missing at {}", .0.display())]
    ScriptMissing(PathBuf),
    #[error("could not start {}: {source}", .python.display())]
    PythonSpawn { python: PathBuf, source: std::io::Error },
    #[error("{} bench/gan_step.py failed ({status}) for {combo}; stderr tail:\n{stderr_tail}", .python.display())]
    PythonFailed { python: PathBuf, combo: String, status: String, stderr_tail: String },
    #[error(
        "unreadable output of bench/gan_step.py for {combo}: {message}; stdout: {stdout_tail}; stderr:\n{stderr_tail}"
    )]
    PythonOutput { combo: String, message: String, stdout_tail: String, stderr_tail: String },
}

/// The `--json` line of `bench/gan_step.py` (fields this module uses).
#[derive(Debug, Deserialize)]
struct TorchResult {
    torch_version: String,
    secs_per_step: f64,
    steps: usize,
    threads: i32,
    g_params: usize,
    d_params: usize,
}

/// Where `bench/gan_step.py` lives: `HISTOFED_GAN_STEP` when set (a binary run away from its source tree, e.g. the
/// GPU bundle), else next to this crate's manifest.
pub fn gan_step_script() -> PathBuf {
    match std::env::var_os("HISTOFED_GAN_STEP") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("bench").join("gan_step.py"),
    }
}

/// The python that `scripts/bench_venv.sh` installs by default (it may not exist yet).
pub fn default_venv_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-bench").join("bin").join("python")
}

/// Timed steps of one combination (see [`ModelBenchOptions::steps`]).
fn steps_for(cfg: &ModelConfig, steps: usize) -> usize {
    match cfg.gan {
        GanKind::WganGp => {
            let updates_per_step = usize::try_from(cfg.n_critic).unwrap_or(1).max(1) + 1;
            (2 * steps).div_ceil(updates_per_step).max(1)
        }
        GanKind::Cgan | GanKind::Acgan => steps,
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

fn tail(s: &str, max_chars: usize) -> String {
    let s = s.trim_end();
    let n = s.chars().count();
    if n <= max_chars {
        s.to_string()
    } else {
        let cut: String = s.chars().skip(n - max_chars).collect();
        format!("…{cut}")
    }
}

/// One tch run, exactly as `bench_step_on` (fresh GAN with seed 0, one fixed random batch) but with a configurable
/// warm-up: mean seconds per step and the parameter counts.
fn tch_run(
    cfg: &ModelConfig,
    batch: i64,
    steps: usize,
    warmup: usize,
    device: Device,
) -> Result<(f64, (usize, usize)), BenchError> {
    let mut gan = Gan::new(cfg, device, 0)?;
    let mut rng = SeededRng::new(1);
    let s = cfg.image_size;
    let real = rng.uniform_tensor(&[batch, 3, s, s], -1.0, 1.0, device);
    let labels = rng.index_tensor(batch as usize, cfg.num_classes as u64, device);
    for _ in 0..warmup {
        gan.train_step(&real, &labels)?;
    }
    synchronize(device);
    let start = Instant::now();
    for _ in 0..steps {
        gan.train_step(&real, &labels)?;
    }
    synchronize(device);
    Ok((start.elapsed().as_secs_f64() / steps as f64, gan.param_counts()))
}

/// One PyTorch run of `bench/gan_step.py --json` in a subprocess with the same thread count.
fn torch_run(
    python: &Path,
    opts: &ModelBenchOptions,
    gan: GanKind,
    disc: DiscKind,
    steps: usize,
) -> Result<TorchResult, BenchError> {
    let script = gan_step_script();
    if !script.is_file() {
        return Err(BenchError::ScriptMissing(script));
    }
    let combo = format!("{gan}-{disc}");
    let threads = opts.threads.to_string();
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .args(["--preset", &opts.preset, "--gan", gan.as_str(), "--disc", disc.as_str()])
        .args(["--batch", &opts.batch.to_string(), "--steps", &steps.to_string()])
        .args(["--warmup", &opts.warmup.to_string(), "--threads", &threads, "--device", &opts.device, "--json"])
        .env("OMP_NUM_THREADS", &threads)
        .env("MKL_NUM_THREADS", &threads)
        .env("OMP_WAIT_POLICY", "PASSIVE");
    if opts.device == "cpu" {
        // The cu130 wheel runs on CPU here; keep it from probing for GPUs when the machine has one.
        cmd.env("CUDA_VISIBLE_DEVICES", "");
    }
    let out = cmd.output().map_err(|source| BenchError::PythonSpawn { python: python.to_path_buf(), source })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(BenchError::PythonFailed {
            python: python.to_path_buf(),
            combo,
            status: out.status.to_string(),
            stderr_tail: tail(&stderr, STDERR_TAIL),
        });
    }
    let bad = |message: String| BenchError::PythonOutput {
        combo: combo.clone(),
        message,
        stdout_tail: tail(&stdout, 500),
        stderr_tail: tail(&stderr, STDERR_TAIL),
    };
    let line =
        stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).ok_or_else(|| bad("no JSON line".into()))?;
    let r: TorchResult = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
    if r.steps != steps || r.threads != opts.threads || !(r.secs_per_step.is_finite() && r.secs_per_step > 0.0) {
        return Err(bad(format!(
            "expected {steps} steps on {} threads, got {} steps on {} threads at {} s/step",
            opts.threads, r.steps, r.threads, r.secs_per_step
        )));
    }
    Ok(r)
}

/// Runs the benchmark: per combination, `repeats` interleaved tch and PyTorch runs (tch first). `progress` gets one
/// line per run. The caller's process must have `OMP_WAIT_POLICY=PASSIVE` in its environment from the start (the
/// crate's `.cargo/config.toml` sets it for `cargo run`); this function sets the tch thread count.
pub fn run_model_bench(
    opts: &ModelBenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<Vec<ModelBenchRow>, BenchError> {
    if opts.batch < 1 || opts.steps < 1 || opts.threads < 1 || opts.repeats < 1 {
        return Err(BenchError::Options(format!(
            "batch ({}), steps ({}), threads ({}) and repeats ({}) must be >= 1",
            opts.batch, opts.steps, opts.threads, opts.repeats
        )));
    }
    let combos: Vec<(GanKind, DiscKind)> = if opts.combos.is_empty() {
        GanKind::ALL.into_iter().flat_map(|g| DiscKind::ALL.into_iter().map(move |d| (g, d))).collect()
    } else {
        opts.combos.clone()
    };
    // Validate every combination before spending minutes on the first.
    let cfgs = combos
        .iter()
        .map(|&(g, d)| ModelConfig::preset_with(&opts.preset, crate::models::Recipe::Paper, g, d, NUM_CLASSES))
        .collect::<Result<Vec<_>, _>>()?;
    if std::env::var("OMP_WAIT_POLICY").map(|v| !v.eq_ignore_ascii_case("passive")).unwrap_or(true) {
        progress("warning: OMP_WAIT_POLICY is not PASSIVE in this process; idle OpenMP threads may spin and skew tch");
    }
    let (python, torch_note) = match &opts.python {
        None => (None, Some(format!("PyTorch side not run (no --python); {VENV_HINT}"))),
        Some(p) if !p.exists() => {
            let note = format!("PyTorch side not run: {} does not exist; {VENV_HINT}", p.display());
            progress(&format!("warning: {note}"));
            (None, Some(note))
        }
        Some(p) => (Some(p.as_path()), None),
    };
    if python.is_some() {
        let script = gan_step_script();
        if !script.is_file() {
            return Err(BenchError::ScriptMissing(script));
        }
    }
    let device = crate::models::select_device(Some(&opts.device))?;
    tch::set_num_threads(opts.threads);
    let mut rows = Vec::with_capacity(cfgs.len());
    for cfg in &cfgs {
        let combo = format!("{}-{}", cfg.gan, cfg.discriminator);
        let steps = steps_for(cfg, opts.steps);
        let (mut tch_runs, mut torch_runs) = (Vec::new(), Vec::new());
        let (mut params, mut torch_version, mut torch_params) = ((0, 0), None, None);
        for rep in 1..=opts.repeats {
            let (t, p) = tch_run(cfg, opts.batch, steps, opts.warmup, device)?;
            params = p;
            tch_runs.push(t);
            progress(&format!("{combo} run {rep}/{}: tch {:.1} ms/step ({steps} steps)", opts.repeats, t * 1e3));
            if let Some(py) = python {
                let r = torch_run(py, opts, cfg.gan, cfg.discriminator, steps)?;
                torch_runs.push(r.secs_per_step);
                progress(&format!(
                    "{combo} run {rep}/{}: PyTorch {:.1} ms/step ({steps} steps)",
                    opts.repeats,
                    r.secs_per_step * 1e3
                ));
                torch_params = Some((r.g_params, r.d_params));
                torch_version = Some(r.torch_version);
            }
        }
        let tch_secs = median(&tch_runs);
        let torch_secs = (!torch_runs.is_empty()).then(|| median(&torch_runs));
        let torch_param_mismatch = torch_params.filter(|&tp| tp != params);
        if let Some((g, d)) = torch_param_mismatch {
            progress(&format!(
                "warning: {combo}: PyTorch twin has {g}/{d} parameters, tch {}/{}; the architectures differ",
                params.0, params.1
            ));
        }
        rows.push(ModelBenchRow {
            combo,
            tch_secs,
            torch_secs,
            ratio: torch_secs.map(|p| tch_secs / p),
            g_params: params.0,
            d_params: params.1,
            steps,
            tch_runs,
            torch_runs,
            preset: opts.preset.clone(),
            batch: opts.batch,
            image_size: cfg.image_size,
            threads: opts.threads,
            warmup: opts.warmup,
            device: opts.device.clone(),
            torch_version,
            torch_note: torch_note.clone(),
            torch_param_mismatch,
        });
    }
    Ok(rows)
}

/// Geometric mean of the rows' ratios, if any row has one.
pub fn geometric_mean_ratio(rows: &[ModelBenchRow]) -> Option<f64> {
    let logs: Vec<f64> = rows.iter().filter_map(|r| r.ratio).filter(|r| *r > 0.0).map(f64::ln).collect();
    (!logs.is_empty()).then(|| (logs.iter().sum::<f64>() / logs.len() as f64).exp())
}

fn fmt_params(n: usize) -> String {
    if n >= 1_000_000 {
        format!("{:.2} M", n as f64 / 1e6)
    } else {
        format!("{:.1} k", n as f64 / 1e3)
    }
}

/// A markdown table of `rows` (milliseconds per step, medians; the per-run ratio range shows the noise), the
/// settings, `machine` (see [`machine_description`]) and a summary line with the geometric-mean ratio.
pub fn render_table(rows: &[ModelBenchRow], machine: &str) -> String {
    let mut s = String::new();
    if let Some(r) = rows.first() {
        let repeats = rows.iter().map(|r| r.tch_runs.len()).max().unwrap_or(0);
        let _ = writeln!(
            s,
            "Preset `{}`, batch {}, {}×{} images, device {}, {} thread(s) on both sides, {} warm-up step(s), {} \
             interleaved repeat(s) (tch, PyTorch, …), medians of the per-run means.",
            r.preset, r.batch, r.image_size, r.image_size, r.device, r.threads, r.warmup, repeats
        );
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "| Combination | G params | D params | Steps/run | tch ms/step | PyTorch ms/step | tch/PyTorch | per-run ratios |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let torch = r.torch_secs.map_or_else(|| "–".to_string(), |t| format!("{:.1}", t * 1e3));
        let ratio = r.ratio.map_or_else(|| "–".to_string(), |x| format!("{x:.3}"));
        let paired: Vec<String> = r.tch_runs.iter().zip(&r.torch_runs).map(|(a, b)| format!("{:.2}", a / b)).collect();
        let paired = if paired.is_empty() { "–".to_string() } else { paired.join(", ") };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} | {} | {} | {} |",
            r.combo,
            fmt_params(r.g_params),
            fmt_params(r.d_params),
            r.steps,
            r.tch_secs * 1e3,
            torch,
            ratio,
            paired
        );
    }
    let _ = writeln!(s);
    match geometric_mean_ratio(rows) {
        Some(g) => {
            let within = rows.iter().filter(|r| r.ratio.is_some_and(|x| x <= 1.05)).count();
            let measured = rows.iter().filter(|r| r.ratio.is_some()).count();
            let verdict = if g <= 1.05 { "meets" } else { "misses" };
            let _ = writeln!(
                s,
                "**Geometric-mean tch/PyTorch ratio: {g:.3}** ({verdict} the ≤ 1.05 goal; {within} of {measured} \
                 combinations at or under 1.05)."
            );
        }
        None => {
            let _ = writeln!(s, "**No tch/PyTorch ratio**: only the tch side ran.");
        }
    }
    if let Some(v) = rows.iter().find_map(|r| r.torch_version.as_deref()) {
        let _ = writeln!(s, "\nPyTorch side: torch {v} (bench/gan_step.py in a separate process).");
    }
    if let Some(note) = rows.iter().find_map(|r| r.torch_note.as_deref()) {
        let _ = writeln!(s, "\n{note}.");
    }
    for r in rows {
        if let Some((g, d)) = r.torch_param_mismatch {
            let _ = writeln!(s, "\nWarning: {}: the PyTorch twin has {g}/{d} parameters (G/D).", r.combo);
        }
    }
    if !machine.trim().is_empty() {
        let _ = writeln!(s, "\nMachine:\n");
        for line in machine.lines().filter(|l| !l.trim().is_empty()) {
            let _ = writeln!(s, "- {}", line.trim());
        }
    }
    s
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The machine in a few lines: CPU model, logical cores (and those this process may use), memory, kernel, load
/// average, torch intra-op threads and `OMP_WAIT_POLICY` of this process.
pub fn machine_description() -> String {
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| std::env::consts::ARCH.to_string(), |(_, v)| v.trim().to_string());
    let logical = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let usable = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| kb / (1024.0 * 1024.0));
    let kernel = read("/proc/sys/kernel/osrelease");
    let load = read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" / ");
    let mut s = String::new();
    let _ = writeln!(s, "CPU: {model}");
    let _ = writeln!(s, "Cores: {logical} logical ({usable} usable by this process)");
    if let Some(m) = mem_gib {
        let _ = writeln!(s, "Memory: {m:.1} GiB");
    }
    if !kernel.trim().is_empty() {
        let _ = writeln!(s, "OS: {} {}", std::env::consts::OS, kernel.trim());
    }
    if !load.is_empty() {
        let _ = writeln!(s, "Load average (1 / 5 / 15 min) when written: {load}");
    }
    let _ = writeln!(s, "torch threads (tch): {}", tch::get_num_threads());
    let policy = std::env::var("OMP_WAIT_POLICY").unwrap_or_else(|_| "unset".into());
    let _ = writeln!(s, "OMP_WAIT_POLICY: {policy}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_keep_update_counts_equal() {
        let paper = crate::models::Recipe::Paper;
        let cgan = ModelConfig::preset_with("small", paper, GanKind::Cgan, DiscKind::Cnn, 4).unwrap();
        let wgan = ModelConfig::preset_with("small", paper, GanKind::WganGp, DiscKind::Cnn, 4).unwrap();
        assert_eq!(steps_for(&cgan, 6), 6);
        assert_eq!(steps_for(&wgan, 6), 2); // 5 critic + 1 generator updates per step
        assert_eq!(steps_for(&wgan, 1), 1);
    }

    #[test]
    fn median_and_tail() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(tail("abcdef", 3), "…def");
        assert_eq!(tail("ab\n", 3), "ab");
    }

    #[test]
    fn table_without_torch_says_how_to_get_it() {
        let opts = ModelBenchOptions {
            preset: "tiny".into(),
            batch: 2,
            steps: 1,
            warmup: 0,
            threads: 1,
            python: Some(PathBuf::from("/nonexistent/venv/bin/python")),
            combos: vec![(GanKind::Cgan, DiscKind::Cnn)],
            repeats: 1,
            device: "cpu".into(),
        };
        let mut lines = Vec::new();
        let rows = run_model_bench(&opts, |l| lines.push(l.to_string())).unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].tch_secs > 0.0 && rows[0].torch_secs.is_none() && rows[0].g_params > 0);
        let table = render_table(&rows, &machine_description());
        assert!(table.contains("| cgan-cnn |") && table.contains("bench_venv.sh"), "{table}");
        assert!(table.contains("CPU: "), "{table}");
        assert!(lines.iter().any(|l| l.contains("does not exist")));
    }

    #[test]
    fn bad_options_and_failing_python_are_errors() {
        let mut opts = ModelBenchOptions { preset: "tiny".into(), steps: 0, ..ModelBenchOptions::default() };
        assert!(matches!(run_model_bench(&opts, |_| {}), Err(BenchError::Options(_))));
        opts.steps = 1;
        opts.preset = "huge".into();
        assert!(matches!(run_model_bench(&opts, |_| {}), Err(BenchError::Model(_))));
        // `false` exits 1 without output: a failing python, reported with its status.
        opts.preset = "tiny".into();
        opts.batch = 2;
        opts.warmup = 0;
        opts.repeats = 1;
        opts.combos = vec![(GanKind::Cgan, DiscKind::Cnn)];
        opts.python = Some(PathBuf::from("/bin/false"));
        match run_model_bench(&opts, |_| {}) {
            Err(BenchError::PythonFailed { combo, .. }) => assert_eq!(combo, "cgan-cnn"),
            other => panic!("expected PythonFailed, got {other:?}"),
        }
    }

    #[test]
    fn geometric_mean_of_ratios() {
        let row = |ratio| ModelBenchRow {
            combo: "x".into(),
            tch_secs: 1.0,
            torch_secs: Some(1.0),
            ratio,
            g_params: 1,
            d_params: 1,
            steps: 1,
            tch_runs: vec![1.0],
            torch_runs: vec![1.0],
            preset: "tiny".into(),
            batch: 1,
            image_size: 32,
            threads: 1,
            warmup: 0,
            device: "cpu".into(),
            torch_version: None,
            torch_note: None,
            torch_param_mismatch: None,
        };
        let g = geometric_mean_ratio(&[row(Some(2.0)), row(Some(0.5)), row(None)]).unwrap();
        assert!((g - 1.0).abs() < 1e-12);
        assert!(geometric_mean_ratio(&[row(None)]).is_none());
    }

    /// The full comparison, as `histofed bench models` runs it, printing the table:
    /// `BENCH_PYTHON=.venv-bench/bin/python BENCH_STEPS=5 BENCH_REPEATS=3 cargo test --lib model_bench_table --
    /// --ignored --nocapture` (optional `BENCH_PRESET`, `BENCH_BATCH`, `BENCH_THREADS`, `BENCH_WARMUP`,
    /// `BENCH_ONLY=cgan-cnn,acgan-vit`).
    #[test]
    #[ignore]
    fn model_bench_table() {
        let var = |k: &str| std::env::var(k).ok();
        let d = ModelBenchOptions::default();
        let combos = var("BENCH_ONLY")
            .map(|s| {
                s.split(',')
                    .map(|c| {
                        let (g, disc) = c.trim().rsplit_once('-').unwrap();
                        (g.parse().unwrap(), disc.parse().unwrap())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let opts = ModelBenchOptions {
            preset: var("BENCH_PRESET").unwrap_or(d.preset),
            batch: var("BENCH_BATCH").map_or(d.batch, |v| v.parse().unwrap()),
            steps: var("BENCH_STEPS").map_or(d.steps, |v| v.parse().unwrap()),
            warmup: var("BENCH_WARMUP").map_or(d.warmup, |v| v.parse().unwrap()),
            threads: var("BENCH_THREADS").map_or(d.threads, |v| v.parse().unwrap()),
            python: var("BENCH_PYTHON").map(PathBuf::from),
            combos,
            repeats: var("BENCH_REPEATS").map_or(d.repeats, |v| v.parse().unwrap()),
            device: var("BENCH_DEVICE").unwrap_or(d.device),
        };
        let rows = run_model_bench(&opts, |l| eprintln!("{l}")).unwrap();
        println!("{}", render_table(&rows, &machine_description()));
    }
}
