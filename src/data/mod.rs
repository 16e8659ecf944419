//! The data layer: everything between bytes on disk (or a seed) and the `[-1, 1]` NCHW batches a GAN eats.
//!
//! Why it is its own module, free of `tch`, `tokio` and networking: every site of the federation, the tests and the
//! demo need the *same* deterministic data, and real histopathology datasets cannot be shipped with the project
//! (licences, size, MHIST is access-by-request). So the layer offers
//!
//! * [`synth`] — a procedural H&E tile generator built on the Beer–Lambert stain model with nine tissue classes
//!   named and ordered like NCT-CRC-HE-100K, deterministic by seed, with optional per-site stain shift;
//! * [`loaders`] — readers for the real formats (ImageFolder of TIFF/PNG/JPEG, MedMNIST `.npz`, MHIST folder + CSV,
//!   PatchCamelyon HDF5) with resizing, deterministic stratified splits and a checksummed decode cache;
//! * [`partition`] — IID / Dirichlet / pathological / quantity-skew federated partitions, histograms and plots;
//! * [`grid`] — image grids and contact sheets for eyeballing data and GAN samples.
//!
//! All images are held as HWC RGB `u8` in one flat buffer ([`Dataset`]); conversion to `f32` happens per batch.
//! Every error is a [`DataError`] that names the file and the problem; nothing reachable from a file panics.

mod error;
pub mod grid;
pub mod loaders;
pub mod partition;
pub mod proxy;
pub mod synth;

pub use error::DataError;
pub use loaders::{load, synthetic_reference_set, write_imagefolder, DataSource, LoadOptions, Splits};

/// NCT-CRC-HE-100K class names in their usual index order (ADI=0 … TUM=8); PathMNIST uses the same order.
pub const NCT_CLASSES: [&str; 9] = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"];

/// A labelled set of square RGB images, stored contiguously as HWC `u8` (`len * size * size * 3` bytes).
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Side length in pixels of every image.
    pub size: u32,
    /// Class names; label `k` means `classes[k]`.
    pub classes: Vec<String>,
    /// `N * size * size * 3` bytes, image after image, each row-major HWC RGB.
    pub images: Vec<u8>,
    /// One label per image, each `< classes.len()`.
    pub labels: Vec<u32>,
}

impl Dataset {
    /// A dataset with no images.
    pub fn empty(size: u32, classes: Vec<String>) -> Self {
        Dataset { size, classes, images: Vec::new(), labels: Vec::new() }
    }

    /// Builds a dataset, checking that buffer length and labels are consistent.
    pub fn new(size: u32, classes: Vec<String>, images: Vec<u8>, labels: Vec<u32>) -> Result<Self, DataError> {
        let ds = Dataset { size, classes, images, labels };
        ds.validate()?;
        Ok(ds)
    }

    /// Checks buffer length and label range.
    pub fn validate(&self) -> Result<(), DataError> {
        if self.size == 0 {
            return Err(DataError::Config("dataset image size must be > 0".into()));
        }
        let want = self.labels.len().checked_mul(self.pixels_per_image());
        if want != Some(self.images.len()) {
            return Err(DataError::Config(format!(
                "dataset image buffer holds {} bytes, expected {} images x {}x{}x3",
                self.images.len(),
                self.labels.len(),
                self.size,
                self.size
            )));
        }
        if let Some((i, &l)) = self.labels.iter().enumerate().find(|(_, &l)| l as usize >= self.classes.len()) {
            return Err(DataError::Config(format!(
                "label {l} at index {i} is out of range for {} classes",
                self.classes.len()
            )));
        }
        Ok(())
    }

    /// Bytes per image (`size * size * 3`).
    pub fn pixels_per_image(&self) -> usize {
        self.size as usize * self.size as usize * 3
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// `true` when the dataset holds no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of classes (length of `classes`, not the number of distinct labels present).
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// The HWC RGB bytes of image `i`. Panics if `i >= len()` (like slice indexing).
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.pixels_per_image();
        &self.images[i * n..(i + 1) * n]
    }

    /// A new dataset holding the given images, in the given order (indices may repeat). Panics on an out-of-range
    /// index (like slice indexing).
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let n = self.pixels_per_image();
        let mut images = Vec::with_capacity(indices.len() * n);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Dataset { size: self.size, classes: self.classes.clone(), images, labels }
    }

    /// Number of images per class, indexed by label (length `num_classes()`).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.classes.len()];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// Indices, ascending, of the first `per_class` images of each class among those `eligible` accepts (a class with
    /// fewer gives what it has; labels outside the classes are skipped). `eligible` is called once for every image,
    /// in order, whether or not its class is already full, so it can also count.
    pub fn first_per_class(&self, per_class: usize, mut eligible: impl FnMut(usize) -> bool) -> Vec<usize> {
        let mut taken = vec![0usize; self.classes.len()];
        (0..self.len())
            .filter(|&i| {
                let ok = eligible(i);
                match taken.get_mut(self.labels[i] as usize) {
                    Some(t) if ok && *t < per_class => {
                        *t += 1;
                        true
                    }
                    _ => false,
                }
            })
            .collect()
    }

    /// Indices of the images of each class: `[class] -> [image index]`, ascending.
    pub fn indices_by_class(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.classes.len()];
        for (i, &l) in self.labels.iter().enumerate() {
            if let Some(v) = out.get_mut(l as usize) {
                v.push(i);
            }
        }
        out
    }

    /// NCHW f32 in [-1, 1] for the given indices (what the GAN eats), plus labels as i64.
    /// Layout: `[indices.len(), 3, size, size]`, value `= byte / 127.5 - 1`.
    pub fn batch_f32(&self, indices: &[usize]) -> (Vec<f32>, Vec<i64>) {
        let hw = self.size as usize * self.size as usize;
        let mut out = vec![0f32; indices.len() * 3 * hw];
        let mut labels = Vec::with_capacity(indices.len());
        for (b, &i) in indices.iter().enumerate() {
            let img = self.image(i);
            let dst = &mut out[b * 3 * hw..(b + 1) * 3 * hw];
            for (p, px) in img.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    dst[c * hw + p] = px[c] as f32 / 127.5 - 1.0;
                }
            }
            labels.push(self.labels[i] as i64);
        }
        (out, labels)
    }

    /// Appends all images of `other` (same size and class list required).
    pub fn extend_from(&mut self, other: &Dataset) -> Result<(), DataError> {
        if other.size != self.size || other.classes != self.classes {
            return Err(DataError::Config(format!(
                "cannot concatenate datasets: size {} vs {}, classes {:?} vs {:?}",
                self.size, other.size, self.classes, other.classes
            )));
        }
        self.images.extend_from_slice(&other.images);
        self.labels.extend_from_slice(&other.labels);
        Ok(())
    }

    /// Mean RGB over all pixels of all images (0..255 scale); `[0; 3]` when empty.
    pub fn mean_rgb(&self) -> [f64; 3] {
        let mut sum = [0u64; 3];
        for px in self.images.chunks_exact(3) {
            for c in 0..3 {
                sum[c] += px[c] as u64;
            }
        }
        let n = (self.images.len() / 3).max(1) as f64;
        [sum[0] as f64 / n, sum[1] as f64 / n, sum[2] as f64 / n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        // 3 images of 2x2: image i has every byte = 10*i + channel
        let mut images = Vec::new();
        for i in 0..3u8 {
            for _ in 0..4 {
                images.extend_from_slice(&[10 * i, 10 * i + 1, 10 * i + 2]);
            }
        }
        Dataset::new(2, vec!["a".into(), "b".into()], images, vec![0, 1, 1]).unwrap()
    }

    #[test]
    fn first_per_class_caps_each_class_in_order_and_sees_every_image() {
        let labels = vec![0, 1, 0, 0, 1, 5, 1, 0];
        let ds = Dataset { size: 1, classes: vec!["a".into(), "b".into()], images: vec![0; 3 * labels.len()], labels };
        assert_eq!(ds.first_per_class(2, |_| true), vec![0, 1, 2, 4]);
        let mut seen = Vec::new();
        let odd = ds.first_per_class(2, |i| {
            seen.push(i);
            i % 2 == 1
        });
        assert_eq!(odd, vec![1, 3, 7], "index 5 has a label outside the classes");
        assert_eq!(seen, (0..8).collect::<Vec<_>>(), "called for every image, full classes and bad labels too");
        assert_eq!(ds.first_per_class(0, |_| true), Vec::<usize>::new());
    }

    #[test]
    fn basic_accessors() {
        let ds = tiny();
        assert_eq!(ds.len(), 3);
        assert!(!ds.is_empty());
        assert_eq!(ds.num_classes(), 2);
        assert_eq!(ds.image(1), &[10, 11, 12, 10, 11, 12, 10, 11, 12, 10, 11, 12]);
        assert_eq!(ds.class_counts(), vec![1, 2]);
        assert_eq!(ds.indices_by_class(), vec![vec![0], vec![1, 2]]);
        let s = ds.subset(&[2, 0]);
        assert_eq!(s.labels, vec![1, 0]);
        assert_eq!(s.image(0), ds.image(2));
        assert!(Dataset::empty(4, vec![]).is_empty());
    }

    #[test]
    fn batch_is_nchw_in_range() {
        let ds = tiny();
        let (x, y) = ds.batch_f32(&[1]);
        assert_eq!(x.len(), 12);
        assert_eq!(y, vec![1]);
        // channel-major: first 4 values are R (=10)
        for v in &x[0..4] {
            assert!((v - (10.0 / 127.5 - 1.0)).abs() < 1e-6);
        }
        for v in &x[4..8] {
            assert!((v - (11.0 / 127.5 - 1.0)).abs() < 1e-6);
        }
        let full = Dataset::new(1, vec!["a".into()], vec![0, 255, 128], vec![0]).unwrap();
        let (x, _) = full.batch_f32(&[0]);
        assert_eq!(x[0], -1.0);
        assert_eq!(x[1], 1.0);
    }

    #[test]
    fn validate_rejects_inconsistent() {
        assert!(Dataset::new(2, vec!["a".into()], vec![0; 11], vec![0]).is_err());
        assert!(Dataset::new(1, vec!["a".into()], vec![0; 3], vec![1]).is_err());
    }
}
