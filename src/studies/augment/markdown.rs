//! `augment.md`: the study's tables for people (`augment.json` is the record).

use std::path::{Path, PathBuf};

use super::*;
use crate::federation::checkpoint::{write_atomic, CheckpointError};

pub(super) fn pm(s: &Stat) -> String {
    format!("{:.3} ± {:.3}", s.mean, s.std)
}

pub(super) fn gain(s: &Option<Stat>) -> String {
    match s {
        Some(s) => format!("{:+.3} ± {:.3}", s.mean, s.std),
        None => "—".into(),
    }
}

pub(super) fn table(out: &mut String, conditions: &[Condition]) {
    out.push_str("| condition | synthetic images | accuracy | macro-F1 | Δ accuracy | Δ macro-F1 |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|\n");
    for c in conditions {
        let synth = c.runs.first().map_or(0, |r| r.synthetic_images);
        out.push_str(&format!(
            "| {} | {synth} | {} | {} | {} | {} |\n",
            c.name,
            pm(&c.accuracy),
            pm(&c.macro_f1),
            gain(&c.gain_accuracy),
            gain(&c.gain_macro_f1)
        ));
    }
}

/// The report as Markdown: one table per setting (mean ± std over seeds; Δ = paired gain over real only).
pub fn to_markdown(r: &AugmentReport) -> String {
    let mut out = String::from("# Augmentation study\n\n");
    let round = r.generator_round.map(|n| format!(", round {n}")).unwrap_or_default();
    out.push_str(&format!("- generator: `{}`{round} ({})\n", r.generator, r.model));
    out.push_str(&format!(
        "- classifier: ViT `{}`, {} steps, batch {}, seeds {:?}\n",
        r.classifier_preset, r.steps, r.batch_size, r.seeds
    ));
    out.push_str(&format!(
        "- data: {} classes, {} training images {:?}, {} test images\n",
        r.classes.len(),
        r.train_class_counts.iter().sum::<usize>(),
        r.train_class_counts,
        r.test_images
    ));
    if let Some(c) = &r.reference {
        let fd = c.frechet_distance.map_or("—".to_string(), |f| format!("{f:.3}"));
        out.push_str(&format!(
            "- reference classifier ({} steps, {}): test accuracy {:.3}; on synthetic images: label agreement {:.3}, \
             Fréchet distance to the test split {fd}\n",
            c.steps,
            if c.cache_hit { "cached" } else { "trained" },
            c.test_accuracy,
            c.synthetic_label_agreement
        ));
    }
    out.push_str("\nMean ± standard deviation over seeds; Δ is the per-seed gain over real only (mean ± std).\n");
    out.push_str("\n## Centralized\n\n");
    table(&mut out, &r.centralized);
    if let Some(f) = &r.federated {
        out.push_str(&format!(
            "\n## Federated (FedAvg, {} sites, partition `{}`, {} rounds × {} local steps)\n\n",
            f.sites, f.partition, f.rounds, f.local_steps
        ));
        table(&mut out, &f.conditions);
        out.push_str(&format!("\nSynthetic images: {}.\n\nReal images per site and class:\n\n", f.synthetic_policy));
        for (i, counts) in f.site_class_counts.iter().enumerate() {
            out.push_str(&format!("- site {i}: {counts:?}\n"));
        }
    }
    out.push_str(&format!("\n{:.1} s in all.\n", r.secs));
    out
}

/// Writes `augment.json` and `augment.md` into `out_dir` (created if needed), each atomically.
pub fn write_report(r: &AugmentReport, out_dir: &Path) -> Result<(PathBuf, PathBuf), AugmentError> {
    let werr = |path: &Path, m: String| AugmentError::Write { path: path.to_path_buf(), message: m };
    std::fs::create_dir_all(out_dir).map_err(|e| werr(out_dir, e.to_string()))?;
    let json = serde_json::to_vec_pretty(r).map_err(|e| werr(&out_dir.join("augment.json"), e.to_string()))?;
    let map = |e: CheckpointError| werr(out_dir, e.to_string());
    let j = write_atomic(out_dir, "augment.json", &json).map_err(map)?;
    let m = write_atomic(out_dir, "augment.md", to_markdown(r).as_bytes()).map_err(map)?;
    Ok((j, m))
}
