//! A cheap learnability proxy for a labelled dataset: hand-made colour/texture features and two trivial
//! classifiers (nearest centroid on standardised features, and softmax regression). Used to check that the
//! synthetic classes are neither trivial nor impossible before spending GPU time on them.

use crate::data::Dataset;

/// Accuracies of the two proxy classifiers on a held-out set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProxyReport {
    pub nearest_centroid: f64,
    pub softmax: f64,
}

/// Features of one image: 4×4 mean-pooled RGB (48), per-cell luminance variance (16), and the global RGB mean and
/// standard deviation (6).
pub fn features(img: &[u8], size: u32) -> Vec<f64> {
    let s = size as usize;
    let cell = (s / 4).max(1);
    let mut f = vec![0.0; 48 + 16 + 6];
    for cy in 0..4 {
        for cx in 0..4 {
            let (mut sum, mut lum, mut lum2, mut n) = ([0.0f64; 3], 0.0, 0.0, 0.0);
            for y in cy * cell..((cy + 1) * cell).min(s) {
                for x in cx * cell..((cx + 1) * cell).min(s) {
                    let p = &img[(y * s + x) * 3..(y * s + x) * 3 + 3];
                    for c in 0..3 {
                        sum[c] += p[c] as f64;
                    }
                    let l = (p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0;
                    lum += l;
                    lum2 += l * l;
                    n += 1.0;
                }
            }
            let n = f64::max(n, 1.0);
            let k = cy * 4 + cx;
            for c in 0..3 {
                f[k * 3 + c] = sum[c] / n;
            }
            f[48 + k] = (lum2 / n - (lum / n).powi(2)).max(0.0).sqrt();
        }
    }
    let npx = (img.len() / 3).max(1) as f64;
    for c in 0..3 {
        let mean = img.iter().skip(c).step_by(3).map(|&v| v as f64).sum::<f64>() / npx;
        let var = img.iter().skip(c).step_by(3).map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / npx;
        f[64 + c] = mean;
        f[67 + c] = var.sqrt();
    }
    f
}

fn feature_matrix(ds: &Dataset) -> Vec<Vec<f64>> {
    (0..ds.len()).map(|i| features(ds.image(i), ds.size)).collect()
}

/// Trains both proxies on `train` and reports accuracy on `test` (same class list assumed).
pub fn proxy_accuracy(train: &Dataset, test: &Dataset) -> ProxyReport {
    let k = train.num_classes();
    let mut xtr = feature_matrix(train);
    let mut xte = feature_matrix(test);
    let d = xtr.first().map_or(0, Vec::len);
    if d == 0 || xte.is_empty() || k == 0 {
        return ProxyReport { nearest_centroid: 0.0, softmax: 0.0 };
    }
    // standardise with training statistics
    for j in 0..d {
        let m = xtr.iter().map(|r| r[j]).sum::<f64>() / xtr.len() as f64;
        let sd = (xtr.iter().map(|r| (r[j] - m).powi(2)).sum::<f64>() / xtr.len() as f64).sqrt().max(1e-9);
        for r in xtr.iter_mut().chain(xte.iter_mut()) {
            r[j] = (r[j] - m) / sd;
        }
    }
    let acc = |pred: &dyn Fn(&[f64]) -> usize| {
        xte.iter().zip(&test.labels).filter(|(x, &l)| pred(x) == l as usize).count() as f64 / xte.len() as f64
    };
    // nearest centroid
    let mut cent = vec![vec![0.0; d]; k];
    let mut cnt = vec![0.0; k];
    for (x, &l) in xtr.iter().zip(&train.labels) {
        cnt[l as usize] += 1.0;
        for j in 0..d {
            cent[l as usize][j] += x[j];
        }
    }
    for c in 0..k {
        for v in &mut cent[c] {
            *v /= f64::max(cnt[c], 1.0);
        }
    }
    let nc = |x: &[f64]| {
        let dist = |c: &Vec<f64>| c.iter().zip(x).map(|(a, b)| (a - b).powi(2)).sum::<f64>();
        (0..k).min_by(|&a, &b| dist(&cent[a]).total_cmp(&dist(&cent[b]))).unwrap_or(0)
    };
    let nearest_centroid = acc(&nc);
    // softmax regression, full-batch gradient descent with a little L2
    let mut w = vec![vec![0.0; d + 1]; k];
    let (lr, l2, epochs) = (0.5, 1e-3, 300);
    let n = xtr.len() as f64;
    for _ in 0..epochs {
        let mut grad = vec![vec![0.0; d + 1]; k];
        for (x, &l) in xtr.iter().zip(&train.labels) {
            let logits: Vec<f64> =
                w.iter().map(|wc| wc[d] + wc[..d].iter().zip(x).map(|(a, b)| a * b).sum::<f64>()).collect();
            let mx = logits.iter().cloned().fold(f64::MIN, f64::max);
            let exps: Vec<f64> = logits.iter().map(|z| (z - mx).exp()).collect();
            let z: f64 = exps.iter().sum();
            for c in 0..k {
                let g = exps[c] / z - f64::from(u8::from(c == l as usize));
                for j in 0..d {
                    grad[c][j] += g * x[j];
                }
                grad[c][d] += g;
            }
        }
        for c in 0..k {
            for j in 0..=d {
                w[c][j] -= lr * (grad[c][j] / n + l2 * w[c][j]);
            }
        }
    }
    let sm = |x: &[f64]| {
        let score = |c: usize| w[c][d] + w[c][..d].iter().zip(x).map(|(a, b)| a * b).sum::<f64>();
        (0..k).max_by(|&a, &b| score(a).total_cmp(&score(b))).unwrap_or(0)
    };
    let softmax = acc(&sm);
    ProxyReport { nearest_centroid, softmax }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::{generate, SynthConfig};

    fn split(per_class: usize, size: u32, seed: u64) -> (Dataset, Dataset) {
        let ds = generate(&SynthConfig { per_class, size, seed, ..Default::default() }).unwrap();
        let n = ds.len();
        let cut = n * 3 / 4 / 9 * 9;
        (ds.subset(&(0..cut).collect::<Vec<_>>()), ds.subset(&(cut..n).collect::<Vec<_>>()))
    }

    #[test]
    fn proxy_small_is_above_chance() {
        let (tr, te) = split(24, 32, 3);
        let r = proxy_accuracy(&tr, &te);
        assert!(r.nearest_centroid > 0.3 && r.softmax > 0.3, "{r:?}");
    }

    /// The number reported in docs/data.md: 200 images/class at 64 px, 150/50 train/test split.
    /// Run with `cargo test --release -- --ignored --nocapture learnability`.
    #[test]
    #[ignore]
    fn learnability_proxy_200_per_class() {
        let (tr, te) = split(200, 64, 2024);
        let r = proxy_accuracy(&tr, &te);
        println!("proxy accuracy (train {} / test {}): {r:?}", tr.len(), te.len());
        assert!(r.nearest_centroid > 0.3 && r.softmax < 0.99, "{r:?}");
    }
}
