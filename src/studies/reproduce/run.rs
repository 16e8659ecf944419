//! The reproduction loop. Four phases, each writing what it finishes so a rerun keeps it:
//!
//! 1. the reference classifier, the real-image floor and the noise null baseline (one thread), while
//! 2. every GAN × discriminator × GAN seed is trained centralized on the full regime (worker threads, one torch
//!    thread each), then measured (once the reference classifier is ready) and scored by a classifier trained on
//!    its images only;
//! 3. the pre-registered federated model on the real runtime, one federation per GAN seed (the caller's
//!    [`FederatedRunner`] starts the processes);
//! 4. the best centralized model retrained on the low regime and the classifier arms of claim 3 for every regime ×
//!    classifier seed × GAN seed, in one pool (worker threads): the full regime's arms need no new run, so they
//!    fill the cores while the low-regime runs train, and the low regimes' arms wait for those runs ([`Pending`]).
//!
//! Then the claims (`claims`), the targets and the report. Heavy work runs on `preset.workers` threads, plus the
//! reference classifier's during phase 1 (it used to run alone, with the other workers' cores idle); every result
//! is a pure function of the preset, the seed and the data.

use std::cell::OnceCell;
use std::path::PathBuf;
use std::time::Instant;

use crate::data::{Dataset, Splits};
use crate::eval::assessment::Assessor;
use crate::eval::sampling::synthesize;
use crate::federation::strategy::Summation;
use crate::federation::weights::Weights;
use crate::models::{ClassifierConfig, Gan};
use crate::studies::augment::{predict, score, train_classifier, train_classifier_once};
use crate::train::simulation::train_centralized;

use super::job::{FederatedJob, FederatedRunner, JobPrivacy, RunnerError};
use super::pool::parallel;
use super::shared::{judge_and_baselines, prepare, Shared, CLASSIFIER_BATCH};
use super::stored::{load_stored, store, write_err, write_file};
use super::{
    cell_err, claims, report, run_name, Arm, ArmResult, GanRun, PhaseTime, Preset, ReproduceError, ReproduceOptions,
    Reproduction, Setting, FED_PARTITION,
};

fn classifier_config(p: &Preset, data: &Dataset) -> Result<ClassifierConfig, ReproduceError> {
    let mut c = ClassifierConfig::preset(&p.classifier, i64::from(data.size), data.num_classes() as i64)?;
    c.total_steps = i64::from(p.classifier_steps.max(1));
    Ok(c)
}

/// One generator of the protocol: trained here (centralized) or by a federation, then measured.
#[derive(Debug, Clone)]
pub(super) struct GanJob {
    pub(super) gan: String,
    pub(super) disc: String,
    pub(super) setting: Setting,
    pub(super) regime: usize,
    pub(super) seed: u64,
}

impl GanJob {
    /// The pre-registered federated model (the preset's GAN × discriminator, Dirichlet non-IID, full regime).
    pub(super) fn federated(p: &Preset, seed: u64) -> Self {
        GanJob {
            gan: p.fed_gan.clone(),
            disc: p.fed_disc.clone(),
            setting: Setting::FedDirichlet,
            regime: p.full_regime(),
            seed,
        }
    }

    pub(super) fn name(&self) -> String {
        run_name(&self.gan, &self.disc, self.setting, self.regime, self.seed)
    }
}

fn weights_path(shared: &Shared, name: &str) -> PathBuf {
    shared.runs_dir().join(name).join("gan.safetensors")
}

/// Measures a trained generator: the quality suite, a sample grid, and the classification accuracy score.
/// `name` is the run's folder under `runs/`.
fn measure(
    shared: &Shared,
    assessor: &Assessor,
    gan: &Gan,
    job: &GanJob,
    name: &str,
    train_secs: f64,
) -> Result<GanRun, ReproduceError> {
    let p = &shared.opts.preset;
    let dir = shared.runs_dir().join(name);
    let t = Instant::now();
    let seed = job.seed as i64;
    let a = assessor.assess(gan, seed.wrapping_mul(7919).wrapping_add(1), &dir).map_err(|e| cell_err(name, e))?;
    let grid_rel = format!("runs/{name}/samples.png");
    let grid = match crate::eval::gan_evaluator::sample_grid(gan, 8, seed, &shared.opts.out_dir.join(&grid_rel)) {
        Ok(()) => Some(grid_rel),
        Err(e) => {
            tracing::warn!(run = name, error = %e, "cannot draw the sample grid");
            None
        }
    };
    // Classification accuracy score: as many synthetic images per class as the regime has real ones, a classifier
    // trained on them only (the first classifier seed), tested on the real test split.
    let train = shared.regime(job.regime)?;
    let counts = vec![job.regime; train.num_classes()];
    let synth = synthesize(gan, &counts, &train.classes, train.size, seed.wrapping_mul(31).wrapping_add(17))
        .map_err(|e| cell_err(name, e))?;
    let cfg = classifier_config(p, &synth)?;
    let cas = train_classifier_once(
        &cfg,
        &synth,
        &shared.splits.test,
        u64::from(p.classifier_steps),
        CLASSIFIER_BATCH,
        classifier_seeds(shared.opts)[0],
        shared.device(),
    )
    .map_err(|e| cell_err(name, e))?
    .accuracy;
    Ok(GanRun {
        gan: job.gan.clone(),
        disc: job.disc.clone(),
        setting: job.setting,
        regime: job.regime,
        seed: job.seed,
        quality: a.summary,
        cas,
        train_secs,
        eval_secs: t.elapsed().as_secs_f64(),
        grid,
    })
}

/// Trains one centralized run, then measures it with this worker's assessor (made when first needed, so training
/// starts before the reference classifier is ready).
fn gan_job(shared: &Shared, assessor: &OnceCell<Assessor>, job: &GanJob) -> Result<GanRun, ReproduceError> {
    let p = &shared.opts.preset;
    let name = job.name();
    let train = shared.regime(job.regime)?.clone();
    let model = p.model_config(&job.gan, &job.disc, train.num_classes())?;
    let t0 = Instant::now();
    let chunk = (p.gan_steps / 5).max(1);
    let weights = train_centralized(&model, shared.device(), train, p.gan_steps, chunk, p.batch_size, job.seed, |_| {})
        .map_err(|e| cell_err(&name, e))?;
    let train_secs = t0.elapsed().as_secs_f64();
    let mut gan = Gan::new(&model, shared.device(), job.seed as i64)?;
    gan.load_weights(&weights)?;
    let path = weights_path(shared, &name);
    write_file(&path, &weights.to_safetensors(None).map_err(|e| write_err(&path, e))?)?;
    measure(shared, shared.worker_assessor(assessor)?, &gan, job, &name, train_secs)
}

/// Loads a stored generator (whole-GAN weights of a centralized run, or the federated run's checkpoints).
fn load_gan(shared: &Shared, job: &GanJob) -> Result<Gan, ReproduceError> {
    let p = &shared.opts.preset;
    let name = job.name();
    let model = p.model_config(&job.gan, &job.disc, shared.splits.train.num_classes())?;
    let path = weights_path(shared, &name);
    let bytes = std::fs::read(&path).map_err(|e| cell_err(&name, format!("{}: {e}", path.display())))?;
    let (w, _) = Weights::from_safetensors(&bytes).map_err(|e| cell_err(&name, e))?;
    let mut gan = Gan::new(&model, shared.device(), job.seed as i64)?;
    gan.load_weights(&w)?;
    Ok(gan)
}

fn classifier_seeds(opts: &ReproduceOptions) -> Vec<u64> {
    (0..u64::from(opts.preset.classifier_seeds.max(1))).map(|i| opts.seed + 1000 + i).collect()
}

/// Claim 3's classifiers for one regime and one classifier seed: real only, then for every GAN seed of `model`
/// real + synthetic 1:1 and real + filtered synthetic 1:1 (the filter is this seed's real-only classifier).
fn arms_job(
    shared: &Shared,
    regime: usize,
    clf_seed: u64,
    generators: &[GanJob],
) -> Result<Vec<ArmResult>, ReproduceError> {
    let p = &shared.opts.preset;
    let device = shared.device();
    let name = format!("arms-{regime}pc-c{clf_seed}");
    let real = shared.regime(regime)?;
    let test = &shared.splits.test;
    let cfg = classifier_config(p, real)?;
    let steps = u64::from(p.classifier_steps);
    let e = |e: crate::studies::augment::AugmentError| cell_err(&name, e);
    let fit = |pool: &Dataset| train_classifier(&cfg, pool, steps, CLASSIFIER_BATCH, clf_seed, device).map_err(e);
    let filter = fit(real)?;
    let (accuracy, macro_f1) = score(&filter, test, device).map_err(e)?;
    let mut out = vec![ArmResult {
        regime,
        arm: Arm::RealOnly,
        gan_seed: None,
        classifier_seed: clf_seed,
        accuracy,
        macro_f1,
        kept_share: None,
    }];
    let k = real.num_classes();
    for job in generators {
        let gan = load_gan(shared, job)?;
        // The same synthetic images for every classifier seed (drawn by the GAN seed): the arms are paired.
        let draw = (job.seed as i64).wrapping_mul(104_729).wrapping_add(regime as i64);
        let synth = synthesize(&gan, &vec![regime; k], &real.classes, real.size, draw).map_err(|x| e(x.into()))?;
        let mut mixed = (**real).clone();
        mixed.extend_from(&synth)?;
        let (accuracy, macro_f1) = score(&fit(&mixed)?, test, device).map_err(e)?;
        out.push(ArmResult {
            regime,
            arm: Arm::Mixed,
            gan_seed: Some(job.seed),
            classifier_seed: clf_seed,
            accuracy,
            macro_f1,
            kept_share: None,
        });
        // Filtered: draw three times as many, keep those the real-only classifier assigns to their conditioned
        // class, at most `regime` per class.
        let pool = synthesize(&gan, &vec![3 * regime; k], &real.classes, real.size, draw.wrapping_add(1))
            .map_err(|x| e(x.into()))?;
        let pred = predict(&filter, &pool, device).map_err(e)?;
        let mut agreeing = 0usize;
        let keep = pool.first_per_class(regime, |i| {
            let agrees = pred.get(i).is_some_and(|&p| p == i64::from(pool.labels[i]));
            agreeing += usize::from(agrees);
            agrees
        });
        let mut filtered = (**real).clone();
        filtered.extend_from(&pool.subset(&keep))?;
        let (accuracy, macro_f1) = score(&fit(&filtered)?, test, device).map_err(e)?;
        out.push(ArmResult {
            regime,
            arm: Arm::Filtered,
            gan_seed: Some(job.seed),
            classifier_seed: clf_seed,
            accuracy,
            macro_f1,
            kept_share: Some(agreeing as f64 / pool.len().max(1) as f64),
        });
    }
    Ok(out)
}

pub(super) fn summary_line(r: &GanRun) -> String {
    format!(
        "{}: KID×10³ {:.1}, FD {:.2}, agreement {:.2}, coverage {:.2}, CAS {:.2} ({:.0} s + {:.0} s)",
        r.name(),
        1e3 * r.kid(),
        r.quality.fd,
        r.quality.label_agreement,
        r.quality.class_coverage,
        r.cas,
        r.train_secs,
        r.eval_secs
    )
}

/// GAN jobs: stored results are kept (and reported); the others run in parallel.
fn run_gans(shared: &Shared, jobs: Vec<GanJob>, progress: &mut dyn FnMut(&str)) -> Result<Vec<GanRun>, ReproduceError> {
    let (mut out, todo) = split_kept(shared, jobs, progress);
    let fresh = parallel(
        shared,
        shared.opts.preset.workers,
        todo,
        |j: &GanJob| j.name(),
        |_: &Shared| Ok(OnceCell::new()),
        |shared, assessor, job| gan_job_stored(shared, assessor, job),
        progress,
    )?;
    for r in &fresh {
        progress(&summary_line(r));
    }
    out.extend(fresh);
    Ok(out)
}

/// The stored results of `jobs` (kept), and the jobs still to run.
fn split_kept(shared: &Shared, jobs: Vec<GanJob>, progress: &mut dyn FnMut(&str)) -> (Vec<GanRun>, Vec<GanJob>) {
    let mut out = Vec::new();
    let mut todo = Vec::new();
    for job in jobs {
        let path = shared.runs_dir().join(job.name()).join("run.json");
        match load_stored::<GanRun>(&path, &shared.key) {
            Some(r) if weights_path(shared, &job.name()).is_file() => {
                progress(&format!("{}: done in an earlier run, kept", job.name()));
                shared.kept.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                out.push(r);
            }
            _ => todo.push(job),
        }
    }
    (out, todo)
}

/// [`gan_job`], its result stored for a rerun.
fn gan_job_stored(shared: &Shared, assessor: &OnceCell<Assessor>, job: &GanJob) -> Result<GanRun, ReproduceError> {
    let r = gan_job(shared, assessor, job)?;
    store(&shared.runs_dir().join(job.name()).join("run.json"), &shared.key, &r)?;
    Ok(r)
}

/// Low-regime GAN runs not yet finished: the classifier arms of those regimes wait for them (on a worker thread,
/// while the other workers go on), and a failed or abandoned run releases them with an error instead of a hang.
struct Pending {
    state: std::sync::Mutex<(usize, bool)>,
    changed: std::sync::Condvar,
}

/// Counts one low-regime run as finished when dropped (also when its job fails or panics): failed unless
/// [`Finished::succeeded`] was called.
struct Finished<'p>(&'p Pending, bool);

impl Finished<'_> {
    fn succeeded(mut self) {
        self.1 = true;
    }
}

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 = st.0.saturating_sub(1);
        st.1 |= !self.1;
        self.0.changed.notify_all();
    }
}

impl Pending {
    fn new(runs: usize) -> Self {
        Pending { state: std::sync::Mutex::new((runs, false)), changed: std::sync::Condvar::new() }
    }

    fn start(&self) -> Finished<'_> {
        Finished(self, false)
    }

    /// Blocks until every low-regime run has finished; an error if one failed.
    fn wait(&self) -> Result<(), ReproduceError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.0 > 0 && !st.1 {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.1 {
            return Err(cell_err("classifier arms", "a low-regime GAN run they need failed"));
        }
        Ok(())
    }
}

/// One job of the protocol's tail: a low-regime GAN run or one regime × classifier seed of the arms.
enum TailJob {
    Gan(GanJob),
    Arms(usize, u64, Vec<GanJob>),
}

enum TailOut {
    Gan(Box<GanRun>),
    Arms(Vec<ArmResult>),
}

/// The federated runs, one after the other (each already uses every core: one process per site).
fn run_federated(
    shared: &Shared,
    assessor: &Assessor,
    runner: &dyn FederatedRunner,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<GanRun>, ReproduceError> {
    let p = &shared.opts.preset;
    let mut out = Vec::new();
    for seed in gan_seeds(shared.opts) {
        let job = GanJob::federated(p, seed);
        let name = job.name();
        let path = shared.runs_dir().join(&name).join("run.json");
        if let Some(r) = load_stored::<GanRun>(&path, &shared.key) {
            progress(&format!("{name}: done in an earlier run, kept"));
            shared.kept.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            out.push(r);
            continue;
        }
        progress(&format!("{name}: server + {} site processes on loopback", p.sites));
        let r = federated_cell(shared, assessor, runner, &job, &name, None, &shared.key)?;
        store(&path, &shared.key, &r)?;
        progress(&summary_line(&r));
        out.push(r);
    }
    Ok(out)
}

/// Trains `job` (federated) on the real runtime into `runs/<name>/federation` and measures its final global
/// generator under `runs/<name>`. `key` decides the training: a federation folder left by an interrupted run of the
/// same key is resumed (the runtime resumes from its checkpoints), one of another key is removed first.
pub(super) fn federated_cell(
    shared: &Shared,
    assessor: &Assessor,
    runner: &dyn FederatedRunner,
    job: &GanJob,
    name: &str,
    privacy: Option<JobPrivacy>,
    key: &str,
) -> Result<GanRun, ReproduceError> {
    let p = &shared.opts.preset;
    let seed = job.seed;
    let fed_dir = shared.runs_dir().join(name).join("federation");
    let key_path = shared.runs_dir().join(name).join("federation.key");
    if std::fs::read_to_string(&key_path).ok().as_deref() != Some(key) {
        if fed_dir.exists() {
            std::fs::remove_dir_all(&fed_dir).map_err(|e| write_err(&fed_dir, e))?;
        }
        write_file(&key_path, key.as_bytes())?;
    }
    let fed = FederatedJob {
        gan: job.gan.clone(),
        disc: job.disc.clone(),
        seed,
        sites: p.sites,
        rounds: p.rounds,
        local_steps: p.local_steps(),
        batch_size: p.batch_size,
        partition: FED_PARTITION.into(),
        out_dir: fed_dir,
        privacy,
        summation: Summation::Exact,
    };
    let t0 = Instant::now();
    let dir = runner.run(&fed).map_err(|e| match e {
        RunnerError::Interrupted => ReproduceError::Interrupted,
        RunnerError::Failed(message) => ReproduceError::Federated { seed, message },
    })?;
    let train_secs = t0.elapsed().as_secs_f64();
    let model = p.model_config(&job.gan, &job.disc, shared.splits.train.num_classes())?;
    let loaded = crate::eval::sampling::load_generator(&dir, &model, shared.device(), seed as i64)
        .map_err(|e| ReproduceError::Federated { seed, message: e.to_string() })?;
    measure(shared, assessor, &loaded.gan, job, name, train_secs)
}

pub(super) fn gan_seeds(opts: &ReproduceOptions) -> Vec<u64> {
    (0..u64::from(opts.preset.gan_seeds.max(1))).map(|i| opts.seed + i).collect()
}

/// Real-only classifier accuracy per regime (one value per classifier seed): how hard the data is, before any GAN
/// is trained. `histofed reproduce --baseline-only` prints it; the protocol needs the low regime at 65–80 %.
pub fn real_only_baseline(
    opts: &ReproduceOptions,
    splits: &Splits,
    mut progress: impl FnMut(&str),
) -> Result<Vec<(usize, Vec<f64>)>, ReproduceError> {
    let shared = prepare(opts, splits)?;
    let p = &opts.preset;
    let jobs: Vec<(usize, u64)> =
        p.regimes.iter().flat_map(|&r| classifier_seeds(opts).into_iter().map(move |c| (r, c))).collect();
    let accuracies = parallel(
        &shared,
        p.workers,
        jobs.clone(),
        |(r, c): &(usize, u64)| format!("real only, {r} per class, classifier seed {c}"),
        |_| Ok(()),
        |shared, _, &(r, c)| {
            let real = shared.regime(r)?;
            let cfg = classifier_config(p, real)?;
            let device = shared.device();
            let clf = train_classifier(&cfg, real, u64::from(p.classifier_steps), CLASSIFIER_BATCH, c, device)
                .map_err(|e| cell_err("baseline", e))?;
            Ok(score(&clf, &shared.splits.test, device).map_err(|e| cell_err("baseline", e))?.0)
        },
        &mut progress,
    )?;
    let mut out: Vec<(usize, Vec<f64>)> = p.regimes.iter().map(|&r| (r, Vec::new())).collect();
    for ((r, _), acc) in jobs.into_iter().zip(accuracies) {
        progress(&format!("real only, {r} per class: accuracy {acc:.3}"));
        if let Some((_, v)) = out.iter_mut().find(|(x, _)| *x == r) {
            v.push(acc);
        }
    }
    Ok(out)
}

/// Phase 4: the classifier arms (real only, real + synthetic) for every regime and classifier seed, kept from an
/// earlier run of the same protocol when there is one.
fn classifier_arms(
    shared: &Shared,
    generators: &[(usize, Vec<GanJob>)],
    best: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<GanRun>, Vec<ArmResult>), ReproduceError> {
    let (opts, p) = (shared.opts, &shared.opts.preset);
    let low: Vec<GanJob> =
        generators.iter().filter(|(r, _)| *r != p.full_regime()).flat_map(|(_, g)| g.iter().cloned()).collect();
    let (mut runs, todo) = split_kept(shared, low, progress);
    let arms_path = opts.out_dir.join("arms.json");
    let arms_key = format!("{}-{best}", shared.key);
    let stored = load_stored::<Vec<ArmResult>>(&arms_path, &arms_key);
    if stored.is_some() {
        progress("classifier arms: done in an earlier run, kept");
        shared.kept.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    // The low-regime runs first, then the full regime's arms (which need none of them), then the low regimes'
    // arms, which wait for the runs: no worker idles while a run is still training.
    let mut jobs: Vec<TailJob> = todo.into_iter().map(TailJob::Gan).collect();
    let pending = Pending::new(jobs.len());
    if stored.is_none() {
        for (regime, gens) in generators {
            for c in classifier_seeds(opts) {
                jobs.push(TailJob::Arms(*regime, c, gens.clone()));
            }
        }
        progress(&format!(
            "classifier arms: {} jobs (regime × classifier seed)",
            p.regimes.len() * classifier_seeds(opts).len()
        ));
    }
    let done = parallel(
        shared,
        p.workers,
        jobs,
        |j: &TailJob| match j {
            TailJob::Gan(g) => g.name(),
            TailJob::Arms(r, c, _) => format!("arms {r}/class, classifier seed {c}"),
        },
        |_: &Shared| Ok(OnceCell::new()),
        |shared, assessor, job| match job {
            TailJob::Gan(g) => {
                let finished = pending.start();
                let r = gan_job_stored(shared, assessor, g)?;
                finished.succeeded();
                Ok(TailOut::Gan(Box::new(r)))
            }
            TailJob::Arms(r, c, gens) => {
                if *r != p.full_regime() {
                    pending.wait()?;
                }
                Ok(TailOut::Arms(arms_job(shared, *r, *c, gens)?))
            }
        },
        progress,
    )?;
    let mut arms = Vec::new();
    for out in done {
        match out {
            TailOut::Gan(r) => {
                progress(&summary_line(&r));
                runs.push(*r);
            }
            TailOut::Arms(a) => arms.extend(a),
        }
    }
    let arms = match stored {
        Some(a) => a,
        None => {
            store(&arms_path, &arms_key, &arms)?;
            arms
        }
    };
    Ok((runs, arms))
}

/// Runs the whole protocol. `splits` is the data (train/val/test); `progress` hears one line per step.
pub fn run(
    opts: &ReproduceOptions,
    splits: &Splits,
    runner: &dyn FederatedRunner,
    mut progress: impl FnMut(&str),
) -> Result<Reproduction, ReproduceError> {
    let start = Instant::now();
    let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let p = &opts.preset;
    let shared = prepare(opts, splits)?;
    let progress: &mut dyn FnMut(&str) = &mut progress;

    // Phases 1 and 2: the reference classifier and the baselines on one thread, the centralized grid on the
    // workers (which wait for the reference classifier only to measure).
    let jobs: Vec<GanJob> = p
        .gans
        .iter()
        .flat_map(|gan| p.discs.iter().map(move |disc| (gan, disc)))
        .flat_map(|(gan, disc)| {
            gan_seeds(opts).into_iter().map(move |seed| GanJob {
                gan: gan.clone(),
                disc: disc.clone(),
                setting: Setting::Centralized,
                regime: p.full_regime(),
                seed,
            })
        })
        .collect();
    progress("reference classifier: loading from cache or training, beside the centralized grid");
    progress(&format!("centralized grid: {} GAN runs on {} worker thread(s)", jobs.len(), p.workers));
    let (judged, grid) = std::thread::scope(|scope| {
        let judge = scope.spawn(|| judge_and_baselines(&shared));
        let grid = run_gans(&shared, jobs, progress);
        let judged =
            judge.join().unwrap_or_else(|_| Err(ReproduceError::Reference("the judge's thread panicked".into())));
        (judged, grid)
    });
    let (assessor, floor, noise, lines) = judged?;
    for l in &lines {
        progress(l);
    }
    let mut runs = grid?;
    // Each phase's wall time, for the report's "Time" table (what the minutes went to).
    let mut phases: Vec<PhaseTime> = Vec::new();
    let lap = |phases: &mut Vec<PhaseTime>, phase: &str| {
        let before: f64 = phases.iter().map(|p| p.secs).sum();
        phases.push(PhaseTime { phase: phase.into(), secs: start.elapsed().as_secs_f64() - before });
    };
    lap(&mut phases, "preparation; the judge and the baselines beside the centralized grid");

    // Phase 3: federated on the real runtime, and the best model on the low regime.
    runs.extend(run_federated(&shared, &assessor, runner, progress)?);
    lap(&mut phases, "the federated runs (server + site processes)");
    let (best_gan, best_disc) = claims::best_model(&runs, p.full_regime())
        .ok_or_else(|| ReproduceError::Reference("no centralized run".into()))?;
    let best = format!("{best_gan}-{best_disc}");
    progress(&format!("best centralized model by mean KID (pre-registered rule): {best}"));
    let mut generators: Vec<(usize, Vec<GanJob>)> = Vec::new();
    for &regime in &p.regimes {
        let jobs: Vec<GanJob> = gan_seeds(opts)
            .into_iter()
            .map(|seed| GanJob {
                gan: best_gan.clone(),
                disc: best_disc.clone(),
                setting: Setting::Centralized,
                regime,
                seed,
            })
            .collect();
        if regime != p.full_regime() {
            progress(&format!("{best} on {regime} real images per class: {} GAN runs", jobs.len()));
        }
        generators.push((regime, jobs));
    }

    // Phase 4: the classifier arms, in one pool with the low-regime runs (the full regime's arms need none of them).
    let (low_runs, arms) = classifier_arms(&shared, &generators, &best, progress)?;
    runs.extend(low_runs);
    lap(&mut phases, "the low-regime GAN runs and the classifier arms, in one pool");

    let claims = claims::judge(&runs, &arms, p, &floor, &noise);
    let targets = claims::targets(&runs, p, &floor, &noise, &best_gan, &best_disc, splits.train.num_classes());
    let rep = Reproduction {
        preset: p.clone(),
        data: opts.data_label.clone(),
        commit: opts.commit.clone(),
        started,
        total_secs: start.elapsed().as_secs_f64(),
        kept_results: shared.kept.load(std::sync::atomic::Ordering::Relaxed),
        phases,
        reference_test_accuracy: assessor.reference_test_accuracy(),
        floor,
        noise,
        best_model: best,
        runs,
        arms,
        claims,
        targets,
    };
    report::write(&opts.out_dir, &rep)?;
    if let Err(e) = report::plots(&opts.out_dir, &rep) {
        tracing::warn!(error = %e, "cannot draw the reproduction plots");
    }
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::QualitySummary;

    fn run(gan: &str, disc: &str, seed: u64, kid: f64) -> GanRun {
        GanRun {
            gan: gan.into(),
            disc: disc.into(),
            setting: Setting::Centralized,
            regime: 100,
            seed,
            quality: QualitySummary { kid: Some(kid), ..QualitySummary::default() },
            cas: 0.5,
            train_secs: 0.0,
            eval_secs: 0.0,
            grid: None,
        }
    }

    #[test]
    fn arms_waiting_for_low_regime_runs_go_on_when_they_finish_and_fail_when_one_fails() {
        let all_done = Pending::new(2);
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| all_done.wait());
            all_done.start().succeeded();
            all_done.start().succeeded();
            assert!(waiter.join().unwrap().is_ok());
        });
        let one_fails = Pending::new(2);
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| one_fails.wait());
            one_fails.start().succeeded();
            drop(one_fails.start()); // the job returned an error (or panicked) before succeeding
            let err = waiter.join().unwrap().unwrap_err().to_string();
            assert!(err.contains("low-regime GAN run"), "{err}");
        });
        assert!(Pending::new(0).wait().is_ok(), "no runs to wait for");
    }

    #[test]
    fn the_best_model_is_the_lowest_mean_kid_over_seeds() {
        let runs = vec![
            run("cgan", "cnn", 1, 0.01),
            run("cgan", "cnn", 2, 0.05),
            run("acgan", "vit", 1, 0.02),
            run("acgan", "vit", 2, 0.02),
        ];
        assert_eq!(claims::best_model(&runs, 100), Some(("acgan".into(), "vit".into())));
        assert_eq!(claims::best_model(&runs, 25), None);
    }
}
