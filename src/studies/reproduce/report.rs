//! reproduction.md and reproduction.json: the claims with their intervals, the targets, the baselines, every model
//! over its seeds, and the classifier arms. Pure formatting of a [`Reproduction`]; the files are written atomically
//! so a reader never sees half.

use std::fmt::Write as _;
use std::path::Path;

use super::stats::mean_sd;
use super::{claims, Arm, GanRun, ReproduceError, Reproduction, Setting};
use crate::federation::checkpoint::write_atomic;
use crate::records::QualitySummary;
use crate::report::plots::{grouped_bars_png, BarSeries};

/// The rows of the model table: (model, setting, real images per class) and its runs, for each present, in a
/// stable order.
type Row<'a> = ((String, &'static str, usize), Vec<&'a GanRun>);

fn groups(r: &Reproduction) -> Vec<Row<'_>> {
    let mut out: Vec<Row> = Vec::new();
    for run in &r.runs {
        let key = (run.model(), run.setting.as_str(), run.regime);
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(run),
            None => out.push((key, vec![run])),
        }
    }
    out
}

fn ms(xs: &[f64], scale: f64, digits: usize) -> String {
    let (m, s) = mean_sd(xs);
    if xs.len() > 1 {
        format!("{:.d$} ± {:.d$}", scale * m, scale * s, d = digits)
    } else {
        format!("{:.d$}", scale * m, d = digits)
    }
}

/// The Markdown report.
pub fn markdown(r: &Reproduction) -> String {
    let mut s = String::new();
    for section in [header, claims_and_targets, generators, agreement_per_class, classifier_arms, time, pictures] {
        section(&mut s, r);
    }
    s
}

/// Title, provenance and the protocol in one paragraph.
fn header(s: &mut String, r: &Reproduction) {
    let p = &r.preset;
    let _ = writeln!(s, "# Reproduction of arXiv 2504.04130 — preset `{}`\n", p.name);
    let wall = if r.kept_results == 0 {
        format!("{:.0} s ({:.1} min) in total", r.total_secs, r.total_secs / 60.0)
    } else {
        format!(
            "{:.0} s ({:.1} min) in this invocation, which kept {} results of an earlier one (their own times are in \
             the tables)",
            r.total_secs,
            r.total_secs / 60.0,
            r.kept_results
        )
    };
    let _ = writeln!(
        s,
        "Commit `{}`, started {}, {wall}. Data: {}. Model preset `{}` at {} px, classifier preset `{}`.\n",
        r.commit, r.started, r.data, p.model, p.image_size, p.classifier
    );
    let _ = writeln!(
        s,
        "Protocol: every GAN × discriminator trained centralized for {} steps (batch {}) on {} real images per class, \
         {} GAN seeds; {}-{} federated over {} site processes (Dirichlet α = 0.3) for {} rounds × {} local steps (as \
         many images seen), {} GAN seeds; metrics on {} synthetic images per class against the real test split, in \
         the reference classifier's features (test accuracy {:.1} %{}{}) and a fixed random CNN's. Classifiers: {} \
         steps, {} seeds, flips and 90° rotations in every arm. Intervals: 95 % bootstrap over seeds, {} resamples.\n",
        p.gan_steps,
        p.batch_size,
        p.full_regime(),
        p.gan_seeds,
        p.fed_gan,
        p.fed_disc,
        p.sites,
        p.rounds,
        p.local_steps(),
        p.gan_seeds,
        p.eval_per_class,
        100.0 * r.reference_test_accuracy,
        if p.reference_standardise {
            "; it sees each image standardised per channel, so it judges structure, not mean colour"
        } else {
            "; raw pixels, as pre-registered: it can name a class by mean colour alone (docs/gan-recipe.md)"
        },
        match p.reference_per_class {
            0 => "; it learned from the generators' own training split".to_string(),
            n => format!(
                "; it learned from its own procedural draw of {n} images per class for {} steps, none of them in \
                 any split",
                p.reference_steps
            ),
        },
        p.classifier_steps,
        p.classifier_seeds,
        p.resamples
    );
}

/// The four claims with their verdicts and pre-registered rules, then the targets.
fn claims_and_targets(s: &mut String, r: &Reproduction) {
    let _ = writeln!(s, "## The paper's claims\n");
    let _ = writeln!(s, "| # | claim | verdict | evidence |\n|---|---|---|---|");
    for c in &r.claims {
        let _ = writeln!(s, "| {} | {} | **{}** | {} |", c.id, c.statement, c.verdict.as_str(), c.evidence);
    }
    let _ = writeln!(s, "\nRules, fixed in `src/studies/reproduce/claims.rs` before the run:\n");
    for c in &r.claims {
        let _ = writeln!(s, "{}. {}", c.id, c.test);
    }
    let _ = writeln!(s, "\n## Targets (best centralized model by the pre-registered rule: {})\n", r.best_model);
    let _ = writeln!(s, "| target | goal | measured | met |\n|---|---|---|---|");
    for t in &r.targets {
        let _ = writeln!(s, "| {} | {} | {} | {} |", t.what, t.goal, t.measured, if t.met { "yes" } else { "**no**" });
    }
}

/// One row per model × setting × regime, against the real floor and the noise null.
fn generators(s: &mut String, r: &Reproduction) {
    let _ = writeln!(s, "\n## Generators\n");
    let _ = writeln!(
        s,
        "KID ×10³ (reference features; random-CNN features), FD (reference), agreement = share the reference \
         classifier assigns to the conditioned class, coverage = share of classes found, CAS = accuracy on real test \
         images of a classifier trained on synthetic images only (chance {:.1} %). Mean ± sd over seeds.\n",
        100.0 / r.floor_classes().max(1) as f64
    );
    let _ = writeln!(
        s,
        "| model | setting | real/class | seeds | KID×10³ ↓ | FD ↓ | KID×10³ random CNN ↓ | agreement | coverage | \
         precision | recall | CAS % | train s |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(s, "| real images (floor) | validation split | | | {} |", floor_cells(&r.floor));
    let _ = writeln!(s, "| colour-matched noise (null) | | | | {} |", floor_cells(&r.noise));
    for ((model, setting, regime), runs) in groups(r) {
        let f = |g: &dyn Fn(&GanRun) -> f64| runs.iter().map(|r| g(r)).collect::<Vec<f64>>();
        let _ = writeln!(
            s,
            "| {model} | {setting} | {regime} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            runs.len(),
            ms(&f(&|r| r.kid()), 1e3, 2),
            ms(&f(&|r| r.quality.fd), 1.0, 3),
            ms(&f(&|r| r.quality.kid_random_cnn.unwrap_or(f64::NAN)), 1e3, 2),
            ms(&f(&|r| r.quality.label_agreement), 1.0, 2),
            ms(&f(&|r| r.quality.class_coverage), 1.0, 2),
            ms(&f(&|r| r.quality.precision), 1.0, 2),
            ms(&f(&|r| r.quality.recall), 1.0, 2),
            ms(&f(&|r| r.cas), 100.0, 1),
            mean_sd(&f(&|r| r.train_secs)).0
        );
    }
}

/// The judge's agreement per class for the floor, the null and every model of the full regime (means over seeds):
/// which classes a generator draws recognisably, and which not even real images pass.
fn agreement_per_class(s: &mut String, r: &Reproduction) {
    let full = r.preset.full_regime();
    let mut columns: Vec<(String, Vec<&QualitySummary>)> =
        vec![("real (floor)".into(), vec![&r.floor]), ("noise (null)".into(), vec![&r.noise])];
    for ((model, _, regime), runs) in groups(r) {
        if regime != full {
            continue;
        }
        let fed = runs.first().is_some_and(|run| run.setting == Setting::FedDirichlet);
        let name = if fed { format!("{model} fed") } else { model };
        columns.push((name, runs.iter().map(|run| &run.quality).collect()));
    }
    let table = class_agreement_table(&columns);
    if !table.is_empty() {
        let _ = writeln!(s, "\n## Agreement per class ({full} real images per class; mean over seeds)\n");
        s.push_str(&table);
    }
}

/// Rows: the classes of the first column's first summary; columns: each named group's mean agreement per class.
/// Empty when that summary has no per-class agreement (reports written before it was recorded).
fn class_agreement_table(columns: &[(String, Vec<&QualitySummary>)]) -> String {
    let Some(classes) = columns.first().and_then(|(_, q)| q.first()).map(|q| &q.class_agreement) else {
        return String::new();
    };
    if classes.is_empty() {
        return String::new();
    }
    let mut s = String::new();
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    let _ = writeln!(s, "| class | {} |", names.join(" | "));
    let _ = writeln!(s, "|---|{}", "---:|".repeat(columns.len()));
    for (class, _) in classes {
        let cells: Vec<String> = columns
            .iter()
            .map(|(_, qs)| {
                let v: Vec<f64> = qs
                    .iter()
                    .filter_map(|q| q.class_agreement.iter().find(|(c, _)| c == class).map(|(_, a)| *a))
                    .collect();
                if v.is_empty() {
                    "—".into()
                } else {
                    format!("{:.2}", mean_sd(&v).0)
                }
            })
            .collect();
        let _ = writeln!(s, "| {class} | {} |", cells.join(" | "));
    }
    s
}

/// Test accuracy of every arm per regime, with the paired gain over real only.
fn classifier_arms(s: &mut String, r: &Reproduction) {
    let p = &r.preset;
    let _ = writeln!(s, "\n## Classifier arms ({})\n", r.best_model);
    let _ = writeln!(
        s,
        "Test accuracy; gain = paired difference to real only with its 95 % interval (GAN seeds, then classifier \
         seeds).\n"
    );
    let _ = writeln!(s, "| real/class | arm | runs | accuracy % | gain (points) | kept by filter |");
    let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|");
    for &regime in &p.regimes {
        for arm in [Arm::RealOnly, Arm::Mixed, Arm::Filtered] {
            let rows: Vec<f64> =
                r.arms.iter().filter(|a| a.regime == regime && a.arm == arm).map(|a| a.accuracy).collect();
            if rows.is_empty() {
                continue;
            }
            let gain = if arm == Arm::RealOnly {
                "—".to_string()
            } else {
                claims::gain_interval(&r.arms, regime, arm, p.resamples).show(100.0)
            };
            let kept: Vec<f64> =
                r.arms.iter().filter(|a| a.regime == regime && a.arm == arm).filter_map(|a| a.kept_share).collect();
            let kept = if kept.is_empty() { "—".into() } else { ms(&kept, 1.0, 2) };
            let _ = writeln!(
                s,
                "| {regime} | {} | {} | {} | {gain} | {kept} |",
                arm.as_str(),
                rows.len(),
                ms(&rows, 100.0, 1)
            );
        }
    }
}

/// Where the wall time went: each phase of this invocation, and the seconds the GAN runs spent training and being
/// measured (summed over runs, so over the cores; kept runs count with the times they took when they ran).
fn time(s: &mut String, r: &Reproduction) {
    if r.phases.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n## Time\n");
    let _ = writeln!(s, "| phase of this invocation | wall s |");
    let _ = writeln!(s, "|---|---:|");
    for p in &r.phases {
        let _ = writeln!(s, "| {} | {:.0} |", p.phase, p.secs);
    }
    let sum = |f: &dyn Fn(&GanRun) -> f64| r.runs.iter().map(f).sum::<f64>();
    let _ = writeln!(
        s,
        "\nThe {} GAN runs: {:.0} s of training and {:.0} s of measuring (quality suite, sample grid, classification \
         accuracy score), summed over runs; a federated run's training is its federation's wall time.",
        r.runs.len(),
        sum(&|g| g.train_secs),
        sum(&|g| g.eval_secs)
    );
}

/// Links to the plots and sample grids.
fn pictures(s: &mut String, r: &Reproduction) {
    let _ = writeln!(s, "\n## Pictures\n");
    let _ = writeln!(s, "![KID per model](kid.png)\n");
    for run in &r.runs {
        if let Some(g) = &run.grid {
            let _ = writeln!(s, "- {}: [{g}]({g})", run.name());
        }
    }
}

fn floor_cells(q: &QualitySummary) -> String {
    format!(
        "{:.2} | {:.3} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | | ",
        1e3 * q.kid.unwrap_or(f64::NAN),
        q.fd,
        1e3 * q.kid_random_cnn.unwrap_or(f64::NAN),
        q.label_agreement,
        q.class_coverage,
        q.precision,
        q.recall
    )
}

impl Reproduction {
    fn floor_classes(&self) -> usize {
        self.preset.num_classes
    }
}

/// Writes reproduction.md and reproduction.json into `dir`.
pub fn write(dir: &Path, r: &Reproduction) -> Result<(), ReproduceError> {
    let json = serde_json::to_vec_pretty(r)
        .map_err(|e| ReproduceError::Write { path: dir.join("reproduction.json"), message: e.to_string() })?;
    for (name, bytes) in [("reproduction.json", json), ("reproduction.md", markdown(r).into_bytes())] {
        write_atomic(dir, name, &bytes)
            .map_err(|e| ReproduceError::Write { path: dir.join(name), message: e.to_string() })?;
    }
    Ok(())
}

/// kid.png: one group per model, one bar per setting (full regime), and the real floor (the noise baseline, orders
/// of magnitude above, is in the table).
pub fn plots(dir: &Path, r: &Reproduction) -> Result<(), crate::report::plots::PlotError> {
    let full = r.preset.full_regime();
    let mut models: Vec<String> = Vec::new();
    for run in r.runs.iter().filter(|x| x.regime == full) {
        if !models.contains(&run.model()) {
            models.push(run.model());
        }
    }
    let mut groups = models.clone();
    groups.push("real floor".into());
    let series: Vec<BarSeries> = [Setting::Centralized, Setting::FedDirichlet]
        .iter()
        .map(|s| BarSeries {
            label: s.as_str().to_string(),
            values: models
                .iter()
                .map(|m| {
                    let k: Vec<f64> = r
                        .runs
                        .iter()
                        .filter(|x| x.model() == *m && x.setting == *s && x.regime == full)
                        .map(|x| 1e3 * x.kid())
                        .collect();
                    if k.is_empty() {
                        f64::NAN
                    } else {
                        mean_sd(&k).0
                    }
                })
                .chain([if *s == Setting::Centralized { 1e3 * r.floor.kid.unwrap_or(f64::NAN) } else { f64::NAN }])
                .collect(),
        })
        .collect();
    grouped_bars_png(
        "KID per model (reference features, mean over GAN seeds; lower is better)",
        "KID ×10³",
        &groups,
        &series,
        &dir.join("kid.png"),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(per_class: &[(&str, f64)]) -> QualitySummary {
        QualitySummary {
            class_agreement: per_class.iter().map(|(c, a)| (c.to_string(), *a)).collect(),
            ..QualitySummary::default()
        }
    }

    #[test]
    fn the_per_class_table_averages_each_column_over_its_seeds() {
        let floor = summary(&[("ADI", 1.0), ("MUS", 0.9)]);
        let (a, b) = (summary(&[("ADI", 0.5), ("MUS", 0.0)]), summary(&[("ADI", 0.7), ("MUS", 0.2)]));
        let missing = summary(&[("ADI", 0.3)]);
        let t = class_agreement_table(&[
            ("real (floor)".into(), vec![&floor]),
            ("acgan-vit".into(), vec![&a, &b]),
            ("old".into(), vec![&missing]),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "| class | real (floor) | acgan-vit | old |");
        assert_eq!(lines[2], "| ADI | 1.00 | 0.60 | 0.30 |");
        assert_eq!(lines[3], "| MUS | 0.90 | 0.10 | — |");
        assert_eq!(class_agreement_table(&[("real (floor)".into(), vec![&QualitySummary::default()])]), "");
    }
}
