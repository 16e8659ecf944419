//! PatchCamelyon (PCam): a folder of the HDF5 files the dataset ships as, once gunzipped,
//! `camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`. Each `*_x.h5` holds a dataset `x` of 96×96 RGB
//! `uint8` patches, shape `(N, 96, 96, 3)`; each `*_y.h5` a dataset `y` of binary labels, shape `(N, 1, 1, 1)`
//! (`(N, 1)` and `(N,)` are accepted too) of an integer type: 0 = no tumour (`normal`), 1 = tumour (`tumor`).
//!
//! PCam's own splits are used: train → train, valid → val, test → test. The train pair is required; a missing
//! valid or test pair is carved from train per class with `val_fraction` / `test_fraction` (as for npz), and half
//! a pair is an error naming the missing file. `max_images` reads only the first N rows of every split (an HDF5
//! hyperslab; PCam's files come shuffled, so they are a random sample with both classes), and images are read
//! and resized in batches, so the 7 GB train split never has to fit in memory at 96 px.

use super::cache::{stamp, FileStamp};
use super::{complete_splits, fit_square, par_map, LoadOptions, Splits};
use crate::data::{DataError, Dataset};
use hdf5::types::{IntSize, TypeDescriptor};
use hdf5::{Hyperslab, SliceOrIndex};
use image::RgbImage;
use std::path::{Path, PathBuf};

/// Class names of labels 0 and 1.
pub const PCAM_CLASSES: [&str; 2] = ["normal", "tumor"];
/// Side of a PCam patch in pixels.
pub const PCAM_SIDE: usize = 96;
/// Patches read (and resized) per HDF5 read: 1024 × 27 KiB = 27 MiB.
const BATCH: usize = 1024;
/// PCam's split names, and histofed's.
const SPLITS: [(&str, &str); 3] = [("train", "train"), ("valid", "val"), ("test", "test")];

/// `DIR/camelyonpatch_level_2_split_{split}_{x|y}.h5`.
pub fn pcam_file(dir: &Path, split: &str, xy: &str) -> PathBuf {
    dir.join(format!("camelyonpatch_level_2_split_{split}_{xy}.h5"))
}

struct SplitFiles {
    /// histofed's name: `train`, `val` or `test`.
    name: &'static str,
    x: PathBuf,
    y: PathBuf,
}

pub(crate) struct Plan {
    splits: Vec<SplitFiles>,
    pub fingerprint: Vec<FileStamp>,
}

fn missing(path: &Path, split: &str, what: &str) -> DataError {
    let gz = path.with_extension("h5.gz");
    let hint = if gz.is_file() {
        format!("; {} is here: decompress it first (gunzip -k)", gz.file_name().unwrap_or_default().to_string_lossy())
    } else {
        String::new()
    };
    DataError::NoData { path: path.to_path_buf(), msg: format!("PCam split '{split}' needs this file ({what}){hint}") }
}

/// Finds the split files under `dir` (nothing is opened yet).
pub(crate) fn scan(dir: &Path) -> Result<Plan, DataError> {
    let md = std::fs::metadata(dir).map_err(|e| DataError::io(dir, "cannot read PCam folder", e))?;
    if !md.is_dir() {
        return Err(DataError::NoData {
            path: dir.to_path_buf(),
            msg: "pcam:DIR names the folder holding camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5".into(),
        });
    }
    let mut splits = Vec::new();
    let mut fingerprint = Vec::new();
    for (pcam, name) in SPLITS {
        let (x, y) = (pcam_file(dir, pcam, "x"), pcam_file(dir, pcam, "y"));
        match (x.is_file(), y.is_file()) {
            (true, true) => {}
            (false, false) if pcam != "train" => continue,
            (false, _) => return Err(missing(&x, pcam, "the images, dataset 'x'")),
            (true, false) => return Err(missing(&y, pcam, "the labels, dataset 'y'")),
        }
        for p in [&x, &y] {
            let rel = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
            fingerprint.push(stamp(p, rel)?);
        }
        splits.push(SplitFiles { name, x, y });
    }
    Ok(Plan { splits, fingerprint })
}

fn h5_err(path: &Path, what: &str, e: impl std::fmt::Display) -> DataError {
    DataError::Hdf5 { path: path.to_path_buf(), msg: format!("{what}: {e}") }
}

/// Opens `path` and its dataset `name`, with its shape.
fn open_dataset(path: &Path, name: &str) -> Result<(hdf5::Dataset, Vec<usize>), DataError> {
    let file = hdf5::File::open(path).map_err(|e| h5_err(path, "cannot open as HDF5", e))?;
    let ds = file.dataset(name).map_err(|_| {
        let found = file.member_names().map(|m| m.join(", ")).unwrap_or_default();
        DataError::Hdf5 { path: path.to_path_buf(), msg: format!("no dataset '{name}' (found: {found})") }
    })?;
    let shape = ds.space().map_err(|e| h5_err(path, &format!("cannot read the shape of '{name}'"), e))?.shape();
    Ok((ds, shape))
}

fn dtype_name(ds: &hdf5::Dataset) -> String {
    match ds.dtype().and_then(|t| t.to_descriptor()) {
        Ok(d) => d.to_string(),
        Err(e) => format!("unreadable ({e})"),
    }
}

/// Rows `start..end` (all of every other axis) of a dataset with `ndim` axes: an HDF5 hyperslab.
fn rows(start: usize, end: usize, ndim: usize) -> Hyperslab {
    let mut s = vec![SliceOrIndex::from(start..end)];
    s.extend((1..ndim).map(|_| SliceOrIndex::from(..)));
    Hyperslab::from(s)
}

/// Reads one split: labels checked to be 0/1, images resized to `opts.size`, at most `opts.max_images` rows.
fn read_split(files: &SplitFiles, classes: &[String], opts: &LoadOptions) -> Result<Dataset, DataError> {
    let (y, x) = (&files.y, &files.x);
    let (yd, yshape) = open_dataset(y, "y")?;
    let n_labels = match yshape.as_slice() {
        [n] | [n, 1] | [n, 1, 1, 1] => *n,
        _ => {
            return Err(DataError::Shape {
                path: y.clone(),
                array: "y".into(),
                shape: yshape,
                expected: "(N, 1, 1, 1) as PCam ships it, (N, 1) or (N,)".into(),
            })
        }
    };
    if !matches!(
        yd.dtype().and_then(|t| t.to_descriptor()),
        Ok(TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_))
    ) {
        return Err(DataError::Dtype {
            path: y.clone(),
            array: "y".into(),
            dtype: dtype_name(&yd),
            expected: "an integer type (PCam: uint8)".into(),
        });
    }
    let (xd, xshape) = open_dataset(x, "x")?;
    let n_images = match xshape.as_slice() {
        [n, PCAM_SIDE, PCAM_SIDE, 3] => *n,
        _ => {
            return Err(DataError::Shape {
                path: x.clone(),
                array: "x".into(),
                shape: xshape,
                expected: "(N, 96, 96, 3): 96×96 RGB patches".into(),
            })
        }
    };
    if !matches!(xd.dtype().and_then(|t| t.to_descriptor()), Ok(TypeDescriptor::Unsigned(IntSize::U1))) {
        return Err(DataError::Dtype {
            path: x.clone(),
            array: "x".into(),
            dtype: dtype_name(&xd),
            expected: "uint8".into(),
        });
    }
    if n_images != n_labels {
        return Err(DataError::LengthMismatch {
            path: x.clone(),
            split: files.name.into(),
            images: n_images,
            labels: n_labels,
        });
    }
    let n = opts.max_images.map_or(n_images, |m| m.min(n_images));

    let raw: Vec<i64> = if n == 0 {
        Vec::new()
    } else {
        let sel = rows(0, n, yshape.len());
        let a = yd.read_slice::<i64, _, ndarray::IxDyn>(sel).map_err(|e| h5_err(y, "cannot read labels 'y'", e))?;
        a.iter().copied().collect()
    };
    if raw.len() != n {
        return Err(DataError::Hdf5 { path: y.clone(), msg: format!("read {} labels, expected {n}", raw.len()) });
    }
    let mut labels = Vec::with_capacity(n);
    for (index, &l) in raw.iter().enumerate() {
        if !(0..classes.len() as i64).contains(&l) {
            return Err(DataError::LabelOutOfRange {
                path: y.clone(),
                what: "y".into(),
                index,
                label: l,
                num_classes: classes.len(),
            });
        }
        labels.push(l as u32);
    }

    let per_in = PCAM_SIDE * PCAM_SIDE * 3;
    let per_out = opts.size as usize * opts.size as usize * 3;
    let mut images = Vec::with_capacity(n * per_out);
    for start in (0..n).step_by(BATCH) {
        let end = (start + BATCH).min(n);
        let what = || format!("cannot read images {start}..{end} of 'x'");
        let batch = xd.read_slice::<u8, _, ndarray::IxDyn>(rows(start, end, 4)).map_err(|e| h5_err(x, &what(), e))?;
        let (raw, _) = batch.into_raw_vec_and_offset();
        if raw.len() != (end - start) * per_in {
            return Err(DataError::Hdf5 { path: x.clone(), msg: format!("{}: got {} bytes", what(), raw.len()) });
        }
        if opts.size as usize == PCAM_SIDE {
            images.extend_from_slice(&raw);
            continue;
        }
        let chunks: Vec<&[u8]> = raw.chunks_exact(per_in).collect();
        let resized = par_map(&chunks, |c| {
            RgbImage::from_raw(PCAM_SIDE as u32, PCAM_SIDE as u32, c.to_vec()).map(|img| fit_square(img, opts.size))
        });
        for img in resized {
            let img =
                img.ok_or_else(|| DataError::Hdf5 { path: x.clone(), msg: "image buffer size mismatch".into() })?;
            images.extend_from_slice(img.as_raw());
        }
    }
    Dataset::new(opts.size, classes.to_vec(), images, labels)
}

/// Reads every split of the plan (see the module docs).
pub(crate) fn decode(plan: &Plan, opts: &LoadOptions) -> Result<Splits, DataError> {
    let classes: Vec<String> = match &opts.classes {
        Some(c) if c.len() == 2 => c.clone(),
        Some(c) => {
            return Err(DataError::Config(format!(
                "PCam has 2 classes (labels 0 and 1, by default named normal and tumor); {} class names were given",
                c.len()
            )))
        }
        None => PCAM_CLASSES.iter().map(|s| s.to_string()).collect(),
    };
    let (mut train, mut val, mut test) = (None, None, None);
    for files in &plan.splits {
        // The HDF5 library is C; the Rust wrapper should not panic, but a file must never be able to take the
        // process down through it.
        let read =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_split(files, &classes, opts))).map_err(
                |_| DataError::Hdf5 { path: files.x.clone(), msg: "the HDF5 reader panicked on this file".into() },
            )??;
        match files.name {
            "train" => train = Some(read),
            "val" => val = Some(read),
            _ => test = Some(read),
        }
    }
    let Some(train) = train else {
        return Err(DataError::NoData { path: PathBuf::new(), msg: "PCam train split not found".into() });
    };
    if train.is_empty() {
        let path = plan.splits.first().map(|s| s.x.clone()).unwrap_or_default();
        return Err(DataError::NoData { path, msg: "the PCam train split holds no images".into() });
    }
    Ok(complete_splits(train, val, test, opts, Vec::new()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::test_util::*;
    use super::super::{load, load_verbose, CacheStatus, DataSource};
    use super::*;

    /// A PCam-layout pair of files for split `split` of `dir`: `n` 96×96 patches, image i a gradient keyed on
    /// `seed + i` whose label is `labels[i]`; `y` written as `(N, 1, 1, 1)` uint8 like PCam.
    pub fn write_pcam_split(dir: &Path, split: &str, labels: &[u8], seed: u8) {
        let n = labels.len();
        let mut x = Vec::with_capacity(n * PCAM_SIDE * PCAM_SIDE * 3);
        for i in 0..n {
            for r in 0..PCAM_SIDE {
                for c in 0..PCAM_SIDE {
                    x.extend_from_slice(&[(c * 2) as u8, (r * 2) as u8, seed.wrapping_add(i as u8).wrapping_mul(7)]);
                }
            }
        }
        write_h5(&pcam_file(dir, split, "x"), "x", &[n, PCAM_SIDE, PCAM_SIDE, 3], &x);
        write_h5(&pcam_file(dir, split, "y"), "y", &[n, 1, 1, 1], labels);
    }

    /// One dataset `name` of `T` with `shape` in a new file.
    pub fn write_h5<T: hdf5::H5Type>(path: &Path, name: &str, shape: &[usize], data: &[T]) {
        let f = hdf5::File::create(path).unwrap();
        let ds = f.new_dataset::<T>().shape(shape.to_vec()).create(name).unwrap();
        ds.write_raw(data).unwrap();
    }

    fn alternating(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 2) as u8).collect()
    }

    fn pcam(dir: &Path) -> DataSource {
        DataSource::Pcam(dir.to_path_buf())
    }

    #[test]
    fn predefined_splits_and_resizing() {
        let dir = tempfile::tempdir().unwrap();
        write_pcam_split(dir.path(), "train", &alternating(10), 0);
        write_pcam_split(dir.path(), "valid", &[1, 0, 1], 100);
        write_pcam_split(dir.path(), "test", &[0, 0, 1, 1], 200);
        let s = load(&pcam(dir.path()), &opts(96)).unwrap();
        assert_eq!(s.train.classes, ["normal", "tumor"]);
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (10, 3, 4), "PCam's own splits, not the fractions");
        assert_eq!(s.train.labels, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
        assert_eq!(s.val.labels, [1, 0, 1]);
        assert_eq!(s.test.labels, [0, 0, 1, 1]);
        // native size: the bytes as written
        assert_eq!(&s.train.image(3)[..6], &[0, 0, 21, 2, 0, 21]);
        assert_eq!(s.val.image(0)[2], 100u8.wrapping_mul(7));
        // the other sizes go through the shared resize
        for size in [32, 64, 128] {
            let r = load(&pcam(dir.path()), &opts(size)).unwrap();
            assert_eq!(r.train.size, size);
            assert_eq!(r.train.images.len(), 10 * size as usize * size as usize * 3);
            let img = RgbImage::from_raw(96, 96, s.test.image(2).to_vec()).unwrap();
            assert_eq!(r.test.image(2), fit_square(img, size).as_raw().as_slice());
        }
    }

    #[test]
    fn max_images_reads_the_first_rows_only() {
        let dir = tempfile::tempdir().unwrap();
        write_pcam_split(dir.path(), "train", &alternating(12), 0);
        // labels past the cap are never read: a bad one there does not matter
        write_pcam_split(dir.path(), "valid", &[0, 1, 7], 50);
        write_pcam_split(dir.path(), "test", &[1, 0, 1, 0, 1], 90);
        let o = LoadOptions { max_images: Some(2), ..opts(96) };
        let s = load(&pcam(dir.path()), &o).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (2, 2, 2));
        assert_eq!((s.train.labels.as_slice(), s.test.labels.as_slice()), ([0, 1].as_slice(), [1, 0].as_slice()));
        assert_eq!((s.train.image(1)[2], s.test.image(1)[2]), (7, 91u8.wrapping_mul(7)), "the first rows, in order");
        for cap in [3, 100] {
            let e = load(&pcam(dir.path()), &LoadOptions { max_images: Some(cap), ..o.clone() }).unwrap_err();
            assert!(matches!(e, DataError::LabelOutOfRange { label: 7, index: 2, .. }), "{e}");
        }
    }

    #[test]
    fn missing_valid_and_test_are_carved_from_train() {
        let dir = tempfile::tempdir().unwrap();
        write_pcam_split(dir.path(), "train", &alternating(20), 0);
        let o = LoadOptions { val_fraction: 0.2, test_fraction: 0.1, ..opts(32) };
        let s = load(&pcam(dir.path()), &o).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (14, 4, 2));
        assert_eq!(s.test.class_counts(), [1, 1]);
        write_pcam_split(dir.path(), "test", &[0, 1, 1], 9);
        let s = load(&pcam(dir.path()), &o).unwrap();
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (16, 4, 3));
    }

    #[test]
    fn cached_load_decodes_nothing_the_second_time() {
        let dir = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        write_pcam_split(dir.path(), "train", &alternating(6), 0);
        let o = LoadOptions { cache_dir: Some(cache.path().into()), ..opts(32) };
        let (a, info) = load_verbose(&pcam(dir.path()), &o).unwrap();
        assert_eq!(info.cache, CacheStatus::Miss);
        let (b, info) = load_verbose(&pcam(dir.path()), &o).unwrap();
        assert_eq!(info.cache, CacheStatus::Hit);
        assert_eq!(a, b);
        // the cap is part of the key
        let (c, info) = load_verbose(&pcam(dir.path()), &LoadOptions { max_images: Some(4), ..o }).unwrap();
        assert_eq!(info.cache, CacheStatus::Miss);
        assert_eq!(c.train.len() + c.val.len() + c.test.len(), 4);
    }

    /// Loads `dir`, expects an error that names `file`.
    fn err_naming(dir: &Path, file: &str) -> DataError {
        let e = load(&pcam(dir), &opts(32)).unwrap_err();
        assert!(e.to_string().contains(file), "error does not name {file}: {e}");
        e
    }

    #[test]
    fn missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let e = err_naming(dir.path(), "camelyonpatch_level_2_split_train_x.h5");
        assert!(matches!(e, DataError::NoData { .. }), "{e}");
        write_pcam_split(dir.path(), "train", &alternating(4), 0);
        write_pcam_split(dir.path(), "valid", &alternating(4), 0);
        std::fs::remove_file(pcam_file(dir.path(), "valid", "y")).unwrap();
        let e = err_naming(dir.path(), "camelyonpatch_level_2_split_valid_y.h5");
        assert!(e.to_string().contains("labels"), "{e}");
        // a still-compressed download is pointed out
        std::fs::write(dir.path().join("camelyonpatch_level_2_split_valid_y.h5.gz"), b"\x1f\x8b").unwrap();
        let e = err_naming(dir.path(), "camelyonpatch_level_2_split_valid_y.h5");
        assert!(e.to_string().contains("gunzip"), "{e}");
        std::fs::remove_file(pcam_file(dir.path(), "train", "x")).unwrap();
        err_naming(dir.path(), "camelyonpatch_level_2_split_train_x.h5");
        let e = load(&pcam(&dir.path().join("nope")), &opts(32)).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }) && e.to_string().contains("nope"), "{e}");
        let e = load(&pcam(&pcam_file(dir.path(), "train", "y")), &opts(32)).unwrap_err();
        assert!(matches!(e, DataError::NoData { .. }) && e.to_string().contains("folder"), "{e}");
    }

    #[test]
    fn truncated_and_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        write_pcam_split(dir.path(), "train", &alternating(8), 0);
        let x = pcam_file(dir.path(), "train", "x");
        let bytes = std::fs::read(&x).unwrap();
        std::fs::write(&x, &bytes[..bytes.len() / 2]).unwrap();
        let e = err_naming(dir.path(), "camelyonpatch_level_2_split_train_x.h5");
        assert!(matches!(e, DataError::Hdf5 { .. }), "{e}");
        std::fs::write(&x, b"this is not HDF5").unwrap();
        let e = err_naming(dir.path(), "camelyonpatch_level_2_split_train_x.h5");
        assert!(matches!(e, DataError::Hdf5 { .. }), "{e}");
        // a file without the dataset
        write_h5(&x, "images", &[8, 96, 96, 3], &vec![0u8; 8 * 96 * 96 * 3]);
        let e = err_naming(dir.path(), "camelyonpatch_level_2_split_train_x.h5");
        assert!(e.to_string().contains("no dataset 'x' (found: images)"), "{e}");
    }

    #[test]
    fn shapes_dtypes_and_labels_that_disagree() {
        let dir = tempfile::tempdir().unwrap();
        let (x, y) = (pcam_file(dir.path(), "train", "x"), pcam_file(dir.path(), "train", "y"));
        let xfile = "camelyonpatch_level_2_split_train_x.h5";
        let yfile = "camelyonpatch_level_2_split_train_y.h5";
        write_pcam_split(dir.path(), "train", &alternating(6), 0);
        // x rows != y rows
        write_h5(&y, "y", &[5, 1, 1, 1], &alternating(5));
        let e = err_naming(dir.path(), xfile);
        assert!(matches!(e, DataError::LengthMismatch { images: 6, labels: 5, .. }), "{e}");
        // labels not 0/1
        write_h5(&y, "y", &[6, 1, 1, 1], &[0u8, 1, 0, 2, 1, 0]);
        let e = err_naming(dir.path(), yfile);
        assert!(matches!(e, DataError::LabelOutOfRange { label: 2, index: 3, num_classes: 2, .. }), "{e}");
        write_h5(&y, "y", &[6], &[0i64, 1, 0, -1, 1, 0]);
        let e = err_naming(dir.path(), yfile);
        assert!(matches!(e, DataError::LabelOutOfRange { label: -1, .. }), "{e}");
        write_h5(&y, "y", &[6, 1], &[0.0f32; 6]);
        let e = err_naming(dir.path(), yfile);
        assert!(matches!(e, DataError::Dtype { .. }), "{e}");
        write_h5(&y, "y", &[6, 2], &[0u8; 12]);
        let e = err_naming(dir.path(), yfile);
        assert!(matches!(e, DataError::Shape { .. }), "{e}");
        // labels as (N,) and (N, 1) of other integer types are fine
        write_h5(&y, "y", &[6, 1], &[1i32, 0, 1, 0, 1, 0]);
        let whole = LoadOptions { val_fraction: 0.0, test_fraction: 0.0, ..opts(32) };
        assert_eq!(load(&pcam(dir.path()), &whole).unwrap().train.class_counts(), [3, 3]);
        // not 96×96×3
        for shape in [[6, 64, 64, 3], [6, 96, 96, 1], [6, 96, 96, 4]] {
            write_h5(&x, "x", &shape, &vec![0u8; shape.iter().product()]);
            let e = err_naming(dir.path(), xfile);
            assert!(matches!(e, DataError::Shape { .. }) && e.to_string().contains("96, 96, 3"), "{e}");
        }
        write_h5(&x, "x", &[6, 96, 96], &vec![0u8; 6 * 96 * 96]);
        assert!(matches!(err_naming(dir.path(), xfile), DataError::Shape { .. }));
        write_h5(&x, "x", &[6, 96, 96, 3], &vec![0u16; 6 * 96 * 96 * 3]);
        let e = err_naming(dir.path(), xfile);
        assert!(matches!(e, DataError::Dtype { .. }), "{e}");
        // classes: two names, or none
        write_h5(&x, "x", &[6, 96, 96, 3], &vec![0u8; 6 * 96 * 96 * 3]);
        let o = LoadOptions { classes: Some(vec!["a".into(), "b".into(), "c".into()]), ..opts(32) };
        assert!(matches!(load(&pcam(dir.path()), &o), Err(DataError::Config(_))));
        let o = LoadOptions { classes: Some(vec!["benign".into(), "metastasis".into()]), ..opts(32) };
        assert_eq!(load(&pcam(dir.path()), &o).unwrap().train.classes, ["benign", "metastasis"]);
    }
}
