//! What every worker of a reproduction shares, made once by [`prepare`]: the checked preset and splits, each
//! regime's real training set, the assessment options, the key of stored results — and phase 1, the reference
//! classifier (trained once, by whichever thread first needs it, while the others wait) with the two baselines every
//! quality number is read against.
//!
//! Why apart from `run`: both entry points (`run`, `privacy`) start here, and the judge's gate is the one piece of
//! shared state the worker threads synchronise on.

use std::cell::OnceCell;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use tch::Device;

use crate::data::{Dataset, Splits};
use crate::eval::assessment::{AssessOptions, Assessor, Baseline};
use crate::eval::quality::QualityOptions;
use crate::eval::reference::ReferenceOptions;
use crate::records::QualitySummary;

use super::stored::result_key;
use super::{ReproduceError, ReproduceOptions};

/// Batch size of every classifier the protocol trains.
pub(super) const CLASSIFIER_BATCH: usize = 32;

/// The first `per_class` training images of every class (in the split's order): the regime's real training set.
pub(super) fn regime_subset(train: &Dataset, per_class: usize) -> Result<Dataset, ReproduceError> {
    let counts = train.class_counts();
    for (k, &have) in counts.iter().enumerate() {
        if have < per_class {
            let class = train.classes.get(k).cloned().unwrap_or_else(|| k.to_string());
            return Err(ReproduceError::Regime { wanted: per_class, class, have });
        }
    }
    Ok(train.subset(&train.first_per_class(per_class, |_| true)))
}

/// What every worker shares (read only): the data, the options, the assessment set-up.
pub(super) struct Shared<'a> {
    pub(super) opts: &'a ReproduceOptions,
    pub(super) splits: &'a Splits,
    regimes: Vec<(usize, Arc<Dataset>)>,
    pub(super) assess: AssessOptions,
    pub(super) key: String,
    /// Results kept from an earlier invocation (GAN runs, and the arms as one).
    pub(super) kept: std::sync::atomic::AtomicUsize,
    /// Set once the reference classifier is in its cache: whether this run trained it (false: it was cached), or
    /// why it cannot be made.
    judge: OnceLock<Result<bool, String>>,
}

impl Shared<'_> {
    pub(super) fn regime(&self, per_class: usize) -> Result<&Arc<Dataset>, ReproduceError> {
        self.regimes
            .iter()
            .find(|(r, _)| *r == per_class)
            .map(|(_, d)| d)
            .ok_or_else(|| ReproduceError::Preset(format!("no regime of {per_class} images per class")))
    }

    /// An assessor on this thread (the reference classifier from its cache, the real splits embedded).
    pub(super) fn assessor(&self) -> Result<Assessor, ReproduceError> {
        Assessor::new(&self.splits.train, &self.splits.test, self.assess.clone())
            .map_err(|e| ReproduceError::Reference(e.to_string()))
    }

    /// An assessor on this thread once the reference classifier is in its cache: the first caller trains it (or
    /// loads it) and keeps the assessor it made doing so, the others wait for that and make theirs from the cache.
    /// Training it once, not once per worker, is what lets the workers build assessors from the cache. With it,
    /// whether this run trained the classifier (false: it was cached).
    pub(super) fn ready_assessor(&self) -> Result<(Assessor, bool), ReproduceError> {
        let mut made = None;
        let trained = self
            .judge
            .get_or_init(|| {
                let a = self.assessor().map_err(|e| e.to_string())?;
                let trained = !a.info.cache_hit;
                made = Some(a);
                Ok(trained)
            })
            .clone()
            .map_err(ReproduceError::Reference)?;
        let assessor = match made {
            Some(a) => a,
            None => self.assessor()?,
        };
        Ok((assessor, trained))
    }

    /// This worker's assessor, made on first use ([`Shared::ready_assessor`]).
    pub(super) fn worker_assessor<'c>(&self, cell: &'c OnceCell<Assessor>) -> Result<&'c Assessor, ReproduceError> {
        if let Some(a) = cell.get() {
            return Ok(a);
        }
        let (a, _) = self.ready_assessor()?;
        Ok(cell.get_or_init(|| a))
    }

    pub(super) fn runs_dir(&self) -> PathBuf {
        self.opts.out_dir.join("runs")
    }

    pub(super) fn device(&self) -> Device {
        self.opts.device
    }
}

/// What both entry points share: the preset and the splits checked, each regime's real training set, the
/// assessment options and the key of stored results.
pub(super) fn prepare<'a>(opts: &'a ReproduceOptions, splits: &'a Splits) -> Result<Shared<'a>, ReproduceError> {
    let p = &opts.preset;
    p.check()?;
    for (split, ds) in [("training", &splits.train), ("test", &splits.test), ("validation", &splits.val)] {
        if ds.is_empty() {
            return Err(ReproduceError::EmptySplit(split));
        }
    }
    let regimes = p
        .regimes
        .iter()
        .map(|&r| Ok((r, Arc::new(regime_subset(&splits.train, r)?))))
        .collect::<Result<Vec<_>, ReproduceError>>()?;
    let reference_train = match (p.reference_per_class, &opts.reference_train) {
        (0, _) => None,
        (n, Some(set)) if set.class_counts().iter().all(|&c| c == n) && set.size == splits.train.size => {
            Some(Arc::clone(set))
        }
        (n, Some(set)) => {
            return Err(ReproduceError::Preset(format!(
                "the reference classifier's set has {:?} images per class at {} px; the preset asks for {n} at {} px",
                set.class_counts(),
                set.size,
                splits.train.size
            )))
        }
        (n, None) => {
            return Err(ReproduceError::Preset(format!(
                "the preset's reference classifier learns from its own draw of {n} images per class, and none was given"
            )))
        }
    };
    let assess = AssessOptions {
        reference: ReferenceOptions {
            preset: p.classifier.clone(),
            steps: u64::from(p.reference_steps),
            batch_size: CLASSIFIER_BATCH,
            seed: opts.seed,
            device: opts.device,
            standardise_input: p.reference_standardise,
        },
        cache_dir: opts.reference_cache.clone(),
        quality: QualityOptions::default(),
        samples_per_class: p.eval_per_class,
        reference_train,
    };
    Ok(Shared {
        opts,
        splits,
        regimes,
        assess,
        key: result_key(opts, splits),
        kept: Default::default(),
        judge: OnceLock::new(),
    })
}

/// Phase 1 on its own thread: the reference classifier and an assessor ([`Shared::ready_assessor`]), the floor and
/// the noise baseline, and the progress lines to print (this thread has no progress sink).
pub(super) fn judge_and_baselines(
    shared: &Shared,
) -> Result<(Assessor, QualitySummary, QualitySummary, Vec<String>), ReproduceError> {
    let (assessor, trained) = shared.ready_assessor()?;
    let mut lines = vec![format!(
        "reference classifier: test accuracy {:.3} ({})",
        assessor.reference_test_accuracy(),
        if trained { "trained" } else { "cached" }
    )];
    let (floor, noise) = baselines(shared.opts, shared.splits, &assessor, &mut |l: &str| lines.push(l.to_string()))?;
    Ok((assessor, floor, noise, lines))
}

/// The two reference points every quality number is read against: real images against real images (the floor)
/// and noise (what "no generator" scores).
pub(super) fn baselines(
    opts: &ReproduceOptions,
    splits: &Splits,
    assessor: &Assessor,
    progress: &mut dyn FnMut(&str),
) -> Result<(QualitySummary, QualitySummary), ReproduceError> {
    let base = |which: Baseline| -> Result<QualitySummary, ReproduceError> {
        let dir = opts.out_dir.join("baselines").join(if which == Baseline::Noise { "noise" } else { "floor" });
        let a = assessor
            .baseline(which, &splits.val, opts.seed as i64 + 5, &dir)
            .map_err(|e| ReproduceError::Reference(e.to_string()))?;
        Ok(a.summary)
    };
    let (floor, noise) = (base(Baseline::RealFloor)?, base(Baseline::Noise)?);
    progress(&format!(
        "baselines: real floor KID×10³ {:.1}, FD {:.2}, agreement {:.2}; noise KID×10³ {:.1}, FD {:.2}",
        1e3 * floor.kid.unwrap_or(f64::NAN),
        floor.fd,
        floor.label_agreement,
        1e3 * noise.kid.unwrap_or(f64::NAN),
        noise.fd
    ));

    Ok((floor, noise))
}

#[cfg(test)]
mod tests {
    use super::super::Preset;
    use super::*;

    fn ds(labels: &[u32]) -> Dataset {
        let size = 2u32;
        let images = vec![0u8; labels.len() * (size * size * 3) as usize];
        Dataset::new(size, vec!["a".into(), "b".into()], images, labels.to_vec()).unwrap()
    }

    fn tiny_splits() -> Splits {
        Splits { train: ds(&[0, 1]), val: ds(&[0, 1]), test: ds(&[0, 1]), skipped: Vec::new() }
    }

    fn options(preset: Preset, reference_train: Option<Dataset>) -> ReproduceOptions {
        ReproduceOptions {
            preset,
            out_dir: "unused".into(),
            reference_cache: "unused".into(),
            device: tch::Device::Cpu,
            seed: 42,
            data_label: String::new(),
            commit: String::new(),
            reference_train: reference_train.map(Arc::new),
        }
    }

    #[test]
    fn a_regime_takes_the_first_images_of_each_class_and_refuses_too_few() {
        let train = ds(&[0, 1, 0, 1, 0, 1, 1]);
        let r = regime_subset(&train, 2).unwrap();
        assert_eq!(r.class_counts(), vec![2, 2]);
        let err = regime_subset(&train, 4).unwrap_err().to_string();
        assert!(err.contains("class a has only 3"), "{err}");
    }

    #[test]
    fn a_preset_with_its_own_reference_set_refuses_a_missing_or_wrong_one() {
        let splits = tiny_splits();
        let preset = Preset { regimes: vec![1], reference_per_class: 3, ..Preset::named("quick").unwrap() };
        let opts = |set: Option<Dataset>| options(preset.clone(), set);
        let err = |o: &ReproduceOptions| prepare(o, &splits).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(&opts(None)).contains("3 images per class, and none was given"), "{}", err(&opts(None)));
        let short = opts(Some(ds(&[0, 1, 0, 1])));
        assert!(err(&short).contains("[2, 2] images per class"), "{}", err(&short));
        let right = opts(Some(ds(&[0, 1, 0, 1, 0, 1])));
        let shared = prepare(&right, &splits).unwrap();
        assert_eq!(shared.assess.reference_train.as_ref().map(|d| d.len()), Some(6));
        let untouched = ReproduceOptions {
            preset: Preset { reference_per_class: 0, ..right.preset.clone() },
            ..opts(Some(ds(&[0, 1])))
        };
        assert!(prepare(&untouched, &splits).unwrap().assess.reference_train.is_none());
    }

    #[test]
    fn each_judge_keeps_its_results_apart_and_the_registered_keys_stay() {
        // The judge as first registered (raw pixels, the training split) leaves no trace in the key, so results
        // stored under it stay valid; each change of judge is another key.
        let preset = Preset { reference_standardise: false, reference_per_class: 0, ..Preset::named("cpu").unwrap() };
        let json = serde_json::to_string(&preset).unwrap();
        assert!(!json.contains("reference_standardise"), "a registered key must not change: {json}");
        assert!(!json.contains("reference_per_class"), "a registered key must not change: {json}");
        let opts = |p: Preset| options(p, None);
        let splits = tiny_splits();
        let plain = result_key(&opts(preset.clone()), &splits);
        let standardised = result_key(&opts(Preset { reference_standardise: true, ..preset.clone() }), &splits);
        let own_set = result_key(&opts(Preset { reference_per_class: 1000, ..preset }), &splits);
        assert_ne!(plain, standardised);
        assert_ne!(plain, own_set);
        assert_ne!(standardised, own_set);
    }
}
