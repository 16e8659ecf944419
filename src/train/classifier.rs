//! Training the ViT tissue classifier on a labelled split: the reference classifier's training (its features are
//! what the quality metrics measure in), `histofed train --classifier`, and the studies' classifier arms.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::Device;
use thiserror::Error;

use super::local::batch_tensors;
use crate::data::Dataset;
use crate::models::{Classifier, ClassifierConfig, ModelError};

#[derive(Debug, Error)]
pub enum ClassifierError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the {0} split is empty")]
    EmptySplit(&'static str),
}

/// One evaluation point of a classifier run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierPoint {
    pub step: u64,
    pub loss: f64,
    pub test_accuracy: f64,
    pub secs: f64,
}

/// Test accuracy of a classifier, in batches so memory stays bounded.
pub fn accuracy(clf: &Classifier, ds: &Dataset, device: Device) -> Result<f64, ModelError> {
    let mut correct = 0.0;
    let all: Vec<usize> = (0..ds.len()).collect();
    for chunk in all.chunks(256) {
        let (x, y) = batch_tensors(ds, chunk, device);
        correct += clf.try_accuracy(&x, &y)? * chunk.len() as f64;
    }
    Ok(correct / ds.len().max(1) as f64)
}

pub struct ClassifierRun<'a> {
    pub config: &'a ClassifierConfig,
    pub device: Device,
    pub train: &'a Dataset,
    pub test: &'a Dataset,
    pub steps: u64,
    pub every: u64,
    pub batch_size: usize,
    pub seed: u64,
}

/// Trains the ViT classifier on `train` for `steps`, measuring test accuracy every `every` steps.
pub fn train_classifier(
    run: &ClassifierRun,
    mut on_point: impl FnMut(&ClassifierPoint),
) -> Result<(Classifier, Vec<ClassifierPoint>), ClassifierError> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let ClassifierRun { config: cfg, device, train, test, steps, every, batch_size, seed } = *run;
    if train.is_empty() {
        return Err(ClassifierError::EmptySplit("training"));
    }
    if test.is_empty() {
        return Err(ClassifierError::EmptySplit("test"));
    }
    let start = Instant::now();
    let mut clf = Classifier::new(cfg, device, seed as i64)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let batch = batch_size.clamp(1, train.len());
    let (mut cursor, mut loss_sum, mut n) = (order.len(), 0.0, 0u64);
    let mut points = Vec::new();
    for step in 1..=steps {
        if cursor + batch > order.len() {
            order.shuffle(&mut rng);
            cursor = 0;
        }
        let (x, y) = batch_tensors(train, &order[cursor..cursor + batch], device);
        cursor += batch;
        loss_sum += clf.train_step(&x, &y)?;
        n += 1;
        if step % every.max(1) == 0 || step == steps {
            let point = ClassifierPoint {
                step,
                loss: loss_sum / n as f64,
                test_accuracy: accuracy(&clf, test, device)?,
                secs: start.elapsed().as_secs_f64(),
            };
            on_point(&point);
            points.push(point);
            loss_sum = 0.0;
            n = 0;
        }
    }
    Ok((clf, points))
}
