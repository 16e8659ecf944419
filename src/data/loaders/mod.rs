//! Loaders for the dataset formats a user can point the project at, plus the built-in synthetic source.
//!
//! | `--data`            | format                                                                              |
//! |---------------------|-------------------------------------------------------------------------------------|
//! | `synthetic`         | [`crate::data::synth`] tiles, `synth_num_classes` × `synth_per_class`                 |
//! | `imagefolder:PATH`  | `PATH/<CLASS>/*.{tif,tiff,png,jpg,jpeg}` (NCT-CRC-HE-100K, CRC-VAL-HE-7K, Kather 2016) |
//! | `npz:PATH`          | MedMNIST `.npz` (PathMNIST): `{train,val,test}_{images,labels}`                       |
//! | `mhist:PATH`        | MHIST-style folder: images + an annotations CSV (image name, label, partition)       |
//! | `pcam:DIR`          | PatchCamelyon: `camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5` (HDF5)      |
//!
//! Every image is converted to RGB, centre-cropped to a square and resized (triangle filter) to `size`.
//! Formats with a split of their own (npz, MHIST's partition column, PCam) keep it; formats without one, and the
//! splits such a format leaves out, are split train/val/test per class, deterministically by `seed`.
//! With `cache_dir` set, decoded splits are stored in a checksummed file keyed by a hash of the source path, the
//! file list with sizes and mtimes, and every option that affects the result; a second load reads that file
//! instead of decoding, and a corrupt cache file is detected and rebuilt, never trusted.

mod cache;
mod imagefolder;
mod mhist;
mod npz;
#[cfg(feature = "pcam")]
mod pcam;
#[cfg(test)]
mod robustness;

pub use cache::{CacheStatus, CACHE_MAGIC};
pub use mhist::{parse_mhist_csv, MhistRow};
pub use npz::{parse_npy_header, parse_npz_bytes, NpyHeader, NpzSplit};
#[cfg(feature = "pcam")]
pub use pcam::{pcam_file, PCAM_CLASSES, PCAM_SIDE};

use crate::data::synth::{self, SynthConfig};
use crate::data::{DataError, Dataset, NCT_CLASSES};
use image::imageops::FilterType;
use image::{ColorType, RgbImage};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where the data comes from; parsed from the `--data` string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// The procedural generator ([`crate::data::synth`]).
    Synthetic,
    /// `ROOT/<CLASS>/*.{tif,tiff,png,jpg,jpeg}`.
    ImageFolder(PathBuf),
    /// A MedMNIST-style `.npz` file.
    Npz(PathBuf),
    /// An MHIST-style folder (images + annotations CSV), or the CSV file itself.
    Mhist(PathBuf),
    /// A PatchCamelyon folder: `camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`.
    Pcam(PathBuf),
}

impl FromStr for DataSource {
    type Err = DataError;

    /// Parses `synthetic`, `imagefolder:PATH`, `npz:PATH`, `mhist:PATH`, `pcam:DIR` (scheme case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |msg: &str| DataError::SourceSpec { spec: s.to_string(), msg: msg.to_string() };
        let t = s.trim();
        if t.eq_ignore_ascii_case("synthetic") || t.eq_ignore_ascii_case("synth") {
            return Ok(DataSource::Synthetic);
        }
        let Some((scheme, path)) = t.split_once(':') else {
            return Err(err("expected synthetic, imagefolder:PATH, npz:PATH, mhist:PATH or pcam:DIR"));
        };
        if path.is_empty() {
            return Err(err("the path after ':' is empty"));
        }
        let path = PathBuf::from(path);
        match scheme.to_ascii_lowercase().as_str() {
            "imagefolder" | "folder" => Ok(DataSource::ImageFolder(path)),
            "npz" | "medmnist" => Ok(DataSource::Npz(path)),
            "mhist" | "csv" => Ok(DataSource::Mhist(path)),
            "pcam" | "patchcamelyon" => Ok(DataSource::Pcam(path)),
            _ => Err(err("unknown scheme; expected synthetic, imagefolder:PATH, npz:PATH, mhist:PATH or pcam:DIR")),
        }
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Synthetic => write!(f, "synthetic"),
            DataSource::ImageFolder(p) => write!(f, "imagefolder:{}", p.display()),
            DataSource::Npz(p) => write!(f, "npz:{}", p.display()),
            DataSource::Mhist(p) => write!(f, "mhist:{}", p.display()),
            DataSource::Pcam(p) => write!(f, "pcam:{}", p.display()),
        }
    }
}

/// Options of [`load`].
#[derive(Clone, Debug, PartialEq)]
pub struct LoadOptions {
    /// Output image side in pixels (images are centre-cropped to square, then resized).
    pub size: u32,
    /// Skip undecodable image files (reported in [`Splits::skipped`]) instead of failing.
    pub skip_bad: bool,
    /// Directory of the decode cache; `None` disables caching. (Synthetic data is never cached.)
    pub cache_dir: Option<PathBuf>,
    /// Seed of the train/val/test split (and of the synthetic generator).
    pub seed: u64,
    /// Class names in label order. ImageFolder: folders must be among these; MHIST: label names; npz: names of
    /// labels `0..n`; synthetic: a subset of [`NCT_CLASSES`]. `None`: inferred (see `docs/data.md`).
    pub classes: Option<Vec<String>>,
    /// Synthetic: images per class (before splitting).
    pub synth_per_class: usize,
    /// Synthetic: number of classes (first N of [`NCT_CLASSES`]) when `classes` is `None`.
    pub synth_num_classes: usize,
    /// Fraction of each class put into validation where the format has no split.
    pub val_fraction: f64,
    /// Fraction of each class put into test where the format has no split.
    pub test_fraction: f64,
    /// Synthetic: stain shift of this site's hospital (labels and morphology are unchanged, so every site still
    /// agrees on the partition).
    pub synth_stain: synth::StainShift,
    /// Synthetic: how hard the classes are to tell apart.
    pub synth_difficulty: synth::Difficulty,
    /// PCam: read at most this many images (the first rows) from each split file; `None` reads them all.
    pub max_images: Option<usize>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            size: 64,
            skip_bad: false,
            cache_dir: None,
            seed: 0,
            classes: None,
            synth_per_class: 200,
            synth_num_classes: 9,
            val_fraction: 0.1,
            test_fraction: 0.1,
            synth_stain: synth::StainShift::default(),
            synth_difficulty: synth::Difficulty::Standard,
            max_images: None,
        }
    }
}

/// The result of [`load`]: three datasets with the same class list and image size.
#[derive(Clone, Debug, PartialEq)]
pub struct Splits {
    pub train: Dataset,
    pub val: Dataset,
    pub test: Dataset,
    /// Image files skipped because of `skip_bad`, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// What [`load_verbose`] did besides loading.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadInfo {
    /// Whether the cache was used, missed, or rebuilt.
    pub cache: CacheStatus,
    /// The cache file for this source and options, if caching is enabled.
    pub cache_path: Option<PathBuf>,
    /// Set when the cache could not be written (loading still succeeded).
    pub cache_warning: Option<String>,
}

/// Loads `source` as train/val/test splits.
pub fn load(source: &DataSource, opts: &LoadOptions) -> Result<Splits, DataError> {
    load_verbose(source, opts).map(|(s, _)| s)
}

/// [`load`], also reporting what the cache did.
pub fn load_verbose(source: &DataSource, opts: &LoadOptions) -> Result<(Splits, LoadInfo), DataError> {
    validate_options(opts)?;
    if opts.max_images.is_some() && !matches!(source, DataSource::Pcam(_)) {
        return Err(DataError::Config(format!("max_images applies to pcam: sources only, not to {source}")));
    }
    let no_cache = LoadInfo { cache: CacheStatus::Disabled, cache_path: None, cache_warning: None };
    match source {
        DataSource::Synthetic => Ok((load_synthetic(opts)?, no_cache)),
        DataSource::ImageFolder(root) => {
            let plan = imagefolder::scan(root, opts)?;
            cache::with_cache(opts, "imagefolder", root, &plan.fingerprint, || imagefolder::decode(&plan, opts))
        }
        DataSource::Npz(path) => {
            let fp = cache::file_fingerprint(path)?;
            cache::with_cache(opts, "npz", path, &fp, || npz::load_npz_file(path, opts))
        }
        DataSource::Mhist(path) => {
            let plan = mhist::scan(path, opts)?;
            cache::with_cache(opts, "mhist", path, &plan.fingerprint, || mhist::decode(&plan, opts))
        }
        #[cfg(feature = "pcam")]
        DataSource::Pcam(dir) => {
            let plan = pcam::scan(dir)?;
            cache::with_cache(opts, "pcam", dir, &plan.fingerprint, || pcam::decode(&plan, opts))
        }
        #[cfg(not(feature = "pcam"))]
        DataSource::Pcam(dir) => Err(DataError::Config(format!(
            "pcam:{}: this histofed was built without the PatchCamelyon loader (cargo feature `pcam`, which links \
             the system HDF5 library; the CUDA bundle leaves it out): convert the .h5 files to an ImageFolder or \
             use a build with the feature",
            dir.display()
        ))),
    }
}

fn validate_options(opts: &LoadOptions) -> Result<(), DataError> {
    if !(1..=4096).contains(&opts.size) {
        return Err(DataError::Config(format!("image size must be 1..=4096, got {}", opts.size)));
    }
    let (v, t) = (opts.val_fraction, opts.test_fraction);
    if !((0.0..1.0).contains(&v) && (0.0..1.0).contains(&t) && v + t < 1.0) {
        return Err(DataError::Config(format!(
            "val_fraction ({v}) and test_fraction ({t}) must be in [0, 1) and sum to less than 1"
        )));
    }
    if opts.max_images == Some(0) {
        return Err(DataError::Config("max_images must be at least 1 (leave it unset to read everything)".into()));
    }
    if let Some(c) = &opts.classes {
        if c.is_empty() {
            return Err(DataError::Config("the class list is empty".into()));
        }
        let mut sorted = c.clone();
        sorted.sort();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(DataError::Config(format!("class '{}' is listed twice", w[0])));
        }
    }
    Ok(())
}

fn load_synthetic(opts: &LoadOptions) -> Result<Splits, DataError> {
    let (num_classes, pick): (usize, Option<Vec<usize>>) = match &opts.classes {
        None => (opts.synth_num_classes, None),
        Some(names) => {
            let mut idx = Vec::new();
            for n in names {
                let i = NCT_CLASSES.iter().position(|c| c.eq_ignore_ascii_case(n)).ok_or_else(|| {
                    DataError::UnknownClass {
                        path: PathBuf::from("synthetic"),
                        class: n.clone(),
                        expected: NCT_CLASSES.join(", "),
                    }
                })?;
                idx.push(i);
            }
            (idx.iter().max().map_or(2, |m| m + 1).max(2), Some(idx))
        }
    };
    let cfg = SynthConfig {
        num_classes,
        per_class: opts.synth_per_class,
        size: opts.size,
        seed: opts.seed,
        stain: opts.synth_stain,
        difficulty: opts.synth_difficulty,
    };
    let mut ds = synth::generate(&cfg)?;
    if let Some(pick) = pick {
        let keep: Vec<usize> = (0..ds.len()).filter(|&i| pick.contains(&(ds.labels[i] as usize))).collect();
        ds = ds.subset(&keep);
        for l in &mut ds.labels {
            *l = pick.iter().position(|&p| p == *l as usize).unwrap_or(0) as u32;
        }
        ds.classes = pick.iter().map(|&i| NCT_CLASSES[i].to_string()).collect();
    }
    Ok(split_dataset(&ds, opts, Vec::new()))
}

/// Mixed into the data seed for [`synthetic_reference_set`], so its images come from another stream than every split.
const REFERENCE_SEED_SALT: u64 = 0x6a75_6467_655f_7365; // "judge_se"

/// An independent procedural draw of `per_class` images per class — the classes, size, stain and difficulty of
/// `opts`'s synthetic data, from a seed no split uses — for the quality suite's reference classifier to learn from
/// (`evaluation.reference_per_class`). Why: a judge that learns from the generators' own few training images knows
/// the classes no better than the classifiers it judges; the procedural source can teach it with as many as it needs.
pub fn synthetic_reference_set(opts: &LoadOptions, per_class: usize) -> Result<Dataset, DataError> {
    if per_class == 0 {
        return Err(DataError::Config("the reference set needs at least 1 image per class".into()));
    }
    let own = LoadOptions {
        seed: opts.seed ^ REFERENCE_SEED_SALT,
        synth_per_class: per_class,
        val_fraction: 0.0,
        test_fraction: 0.0,
        max_images: None,
        ..opts.clone()
    };
    Ok(load_synthetic(&own)?.train)
}

/// Splits a dataset per class into train/val/test with the option fractions (see [`stratified_split`]).
pub fn split_dataset(ds: &Dataset, opts: &LoadOptions, skipped: Vec<(PathBuf, String)>) -> Splits {
    let (tr, va, te) = stratified_split(&ds.labels, ds.num_classes(), opts.val_fraction, opts.test_fraction, opts.seed);
    Splits { train: ds.subset(&tr), val: ds.subset(&va), test: ds.subset(&te), skipped }
}

/// Splits of a format that brings its own: `val` and `test` as given, and a missing one carved from `train` per
/// class with the option fraction (see [`stratified_split`]).
pub(crate) fn complete_splits(
    train: Dataset,
    val: Option<Dataset>,
    test: Option<Dataset>,
    opts: &LoadOptions,
    skipped: Vec<(PathBuf, String)>,
) -> Splits {
    let vf = if val.is_none() { opts.val_fraction } else { 0.0 };
    let tf = if test.is_none() { opts.test_fraction } else { 0.0 };
    if vf == 0.0 && tf == 0.0 {
        let empty = || Dataset::empty(train.size, train.classes.clone());
        return Splits { val: val.unwrap_or_else(empty), test: test.unwrap_or_else(empty), train, skipped };
    }
    let (tr, va, te) = stratified_split(&train.labels, train.num_classes(), vf, tf, opts.seed);
    Splits {
        val: val.unwrap_or_else(|| train.subset(&va)),
        test: test.unwrap_or_else(|| train.subset(&te)),
        train: train.subset(&tr),
        skipped,
    }
}

/// Deterministic per-class split: each class's indices are shuffled with a seed derived from `(seed, class)` and
/// `round(n·test_fraction)` go to test, `round(n·val_fraction)` to val, the rest to train (each list ascending).
pub fn stratified_split(
    labels: &[u32],
    num_classes: usize,
    val_fraction: f64,
    test_fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let mut by_class = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        if let Some(v) = by_class.get_mut(l as usize) {
            v.push(i);
        }
    }
    let (mut tr, mut va, mut te) = (Vec::new(), Vec::new(), Vec::new());
    for (c, mut idx) in by_class.into_iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        idx.shuffle(&mut rng);
        let n = idx.len();
        let n_te = ((n as f64 * test_fraction).round() as usize).min(n);
        let n_va = ((n as f64 * val_fraction).round() as usize).min(n - n_te);
        te.extend_from_slice(&idx[..n_te]);
        va.extend_from_slice(&idx[n_te..n_te + n_va]);
        tr.extend_from_slice(&idx[n_te + n_va..]);
    }
    tr.sort_unstable();
    va.sort_unstable();
    te.sort_unstable();
    (tr, va, te)
}

/// Centre-crops to a square and resizes with a triangle (bilinear) filter to `size`×`size`.
pub fn fit_square(img: RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == size && h == size {
        return img;
    }
    let side = w.min(h);
    let img = if w != h {
        image::imageops::crop_imm(&img, (w - side) / 2, (h - side) / 2, side, side).to_image()
    } else {
        img
    };
    if side == size {
        img
    } else {
        image::imageops::resize(&img, size, size, FilterType::Triangle)
    }
}

/// Decodes an image file (format from its content), rejects grayscale, drops alpha, fits to `size`.
pub fn decode_image_bytes(bytes: &[u8], path: &Path, size: u32) -> Result<Vec<u8>, DataError> {
    let decoded = std::panic::catch_unwind(|| decode_any(bytes)).map_err(|_| DataError::Decode {
        path: path.to_path_buf(),
        msg: "the image decoder panicked on this file".into(),
    })?;
    let img = decoded.map_err(|msg| DataError::Decode { path: path.to_path_buf(), msg })?;
    match img.color() {
        ColorType::L8 | ColorType::L16 | ColorType::La8 | ColorType::La16 => {
            return Err(DataError::Channels {
                path: path.to_path_buf(),
                msg: format!("{:?} (grayscale) image; expected RGB or RGBA", img.color()),
            })
        }
        _ => {}
    }
    if img.width() == 0 || img.height() == 0 {
        return Err(DataError::Decode { path: path.to_path_buf(), msg: "image has zero width or height".into() });
    }
    Ok(fit_square(img.to_rgb8(), size).into_raw())
}

/// `image`'s decoders, with two additions for TIFF: YCbCr TIFFs are decoded here ([`decode_ycbcr_tiff`]), and a
/// TIFF that cannot be decoded says which compression and photometric interpretation it uses.
fn decode_any(bytes: &[u8]) -> Result<image::DynamicImage, String> {
    if let Some(rgb) = decode_ycbcr_tiff(bytes)? {
        return Ok(image::DynamicImage::ImageRgb8(rgb));
    }
    image::load_from_memory(bytes).map_err(|e| match tiff_layout(bytes) {
        Some(layout) => format!("{e} ({layout})"),
        None => e.to_string(),
    })
}

fn is_tiff(bytes: &[u8]) -> bool {
    // Classic TIFF (42) and BigTIFF (43), either byte order.
    [b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"].iter().any(|m| bytes.starts_with(*m))
}

/// `TIFF, compression JPEG (7), photometric YCbCr (6)`: what an error about a TIFF should tell; `None` for
/// anything that is not a readable TIFF header.
fn tiff_layout(bytes: &[u8]) -> Option<String> {
    use tiff::tags::{CompressionMethod, PhotometricInterpretation, Tag};
    if !is_tiff(bytes) {
        return None;
    }
    let mut dec = tiff::decoder::Decoder::new(std::io::Cursor::new(bytes)).ok()?;
    let compression = dec.find_tag_unsigned::<u16>(Tag::Compression).ok().flatten().unwrap_or(1);
    let name = match CompressionMethod::from_u16(compression) {
        Some(CompressionMethod::None) => "none".to_string(),
        Some(CompressionMethod::JPEG) => "old-style JPEG".to_string(),
        Some(CompressionMethod::ModernJPEG) => "JPEG".to_string(),
        Some(m) => format!("{m:?}"),
        None => "unknown".to_string(),
    };
    let photometric = match dec.find_tag_unsigned::<u16>(Tag::PhotometricInterpretation).ok().flatten() {
        Some(p) => match PhotometricInterpretation::from_u16(p) {
            Some(known) => format!("{known:?} ({p})"),
            None => format!("unknown ({p})"),
        },
        None => "missing".to_string(),
    };
    Some(format!("TIFF, compression {name} ({compression}), photometric {photometric}"))
}

/// TIFFs whose pixels are YCbCr — what JPEG-compressed TIFFs (compression 7, as libtiff, Pillow and slide scanners
/// write them) carry, and which `image` refuses as "color type `Unknown(24)`". The `tiff` crate decodes them (JPEG
/// strips and tiles through zune-jpeg, which also upsamples subsampled chroma); the samples are converted to RGB
/// here with ITU-R BT.601 full range, what JPEG uses and TIFF's default YCbCrCoefficients and ReferenceBlackWhite
/// describe. `Ok(None)`: not a YCbCr TIFF, so `image` decodes it.
fn decode_ycbcr_tiff(bytes: &[u8]) -> Result<Option<RgbImage>, String> {
    if !is_tiff(bytes) {
        return Ok(None);
    }
    let Ok(mut dec) = tiff::decoder::Decoder::new(std::io::Cursor::new(bytes)) else { return Ok(None) };
    let Ok(tiff::ColorType::YCbCr(bits)) = dec.colortype() else { return Ok(None) };
    let layout = tiff_layout(bytes).unwrap_or_else(|| "TIFF".into());
    if bits != 8 {
        return Err(format!("{bits}-bit YCbCr samples are not supported, only 8-bit ({layout})"));
    }
    let fail = |e: tiff::TiffError| format!("{e} ({layout})");
    let (w, h) = dec.dimensions().map_err(fail)?;
    let tiff::decoder::DecodingResult::U8(ycc) = dec.read_image().map_err(fail)? else {
        return Err(format!("unexpected sample type ({layout})"));
    };
    let want = (w as usize).checked_mul(h as usize).and_then(|n| n.checked_mul(3));
    if want != Some(ycc.len()) {
        return Err(format!("{} decoded bytes for {w}×{h} YCbCr pixels ({layout})", ycc.len()));
    }
    let rgb: Vec<u8> = ycc.chunks_exact(3).flat_map(|p| ycbcr_to_rgb(p[0], p[1], p[2])).collect();
    Ok(RgbImage::from_raw(w, h, rgb))
}

/// ITU-R BT.601 full-range YCbCr (JPEG/JFIF) to RGB.
fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let (y, cb, cr) = (f32::from(y), f32::from(cb) - 128.0, f32::from(cr) - 128.0);
    let clamp = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    [clamp(y + 1.402 * cr), clamp(y - 0.344_136 * cb - 0.714_136 * cr), clamp(y + 1.772 * cb)]
}

/// Reads and decodes one image file (see [`decode_image_bytes`]).
pub fn decode_image_file(path: &Path, size: u32) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, "cannot read image", e))?;
    decode_image_bytes(&bytes, path, size)
}

/// Maps `f` over `items` on up to 16 threads, keeping order.
pub(crate) fn par_map<T: Sync, U: Send>(items: &[T], f: impl Fn(&T) -> U + Sync) -> Vec<U> {
    let threads = std::thread::available_parallelism().map(|t| t.get()).unwrap_or(1).clamp(1, 16);
    if threads == 1 || items.len() < 2 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> =
            items.chunks(chunk).map(|c| s.spawn(move || c.iter().map(f).collect::<Vec<U>>())).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}

/// Decodes `files` (with labels) in parallel, skipping bad ones when `skip_bad`; returns a dataset and the skips.
pub(crate) fn decode_files(
    files: &[(PathBuf, u32)],
    classes: Vec<String>,
    opts: &LoadOptions,
) -> Result<(Dataset, Vec<(PathBuf, String)>), DataError> {
    let decoded = par_map(files, |(p, _)| decode_image_file(p, opts.size));
    let per = opts.size as usize * opts.size as usize * 3;
    let mut images = Vec::with_capacity(files.len() * per);
    let mut labels = Vec::with_capacity(files.len());
    let mut skipped = Vec::new();
    for ((path, label), r) in files.iter().zip(decoded) {
        match r {
            Ok(px) => {
                images.extend_from_slice(&px);
                labels.push(*label);
            }
            Err(e @ (DataError::Decode { .. } | DataError::Channels { .. } | DataError::Io { .. }))
                if opts.skip_bad =>
            {
                skipped.push((path.clone(), e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((Dataset::new(opts.size, classes, images, labels)?, skipped))
}

/// Writes `ds` as an ImageFolder: `dir/<CLASS>/<CLASS>-NNNNN.png`, numbered per class from 0.
pub fn write_imagefolder(ds: &Dataset, dir: &Path) -> Result<(), DataError> {
    ds.validate()?;
    let mut counters = vec![0usize; ds.num_classes()];
    for class in &ds.classes {
        let d = dir.join(class);
        std::fs::create_dir_all(&d).map_err(|e| DataError::io(&d, "cannot create class folder", e))?;
    }
    for i in 0..ds.len() {
        let l = ds.labels[i] as usize;
        let class = &ds.classes[l];
        let path = dir.join(class).join(format!("{class}-{:05}.png", counters[l]));
        counters[l] += 1;
        image::save_buffer_with_format(&path, ds.image(i), ds.size, ds.size, ColorType::Rgb8, image::ImageFormat::Png)
            .map_err(|e| DataError::Encode { path: path.clone(), msg: e.to_string() })?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;

    /// A small dataset of distinctive images: image i is a gradient keyed on i.
    pub fn pattern_dataset(n_per_class: usize, classes: &[&str], size: u32) -> Dataset {
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for c in 0..classes.len() {
            for k in 0..n_per_class {
                let i = c * n_per_class + k;
                for y in 0..size {
                    for x in 0..size {
                        images.push((x * 255 / size.max(1)) as u8);
                        images.push((y * 255 / size.max(1)) as u8);
                        images.push((i * 37 % 256) as u8);
                    }
                }
                labels.push(c as u32);
            }
        }
        Dataset::new(size, classes.iter().map(|s| s.to_string()).collect(), images, labels).unwrap()
    }

    pub fn opts(size: u32) -> LoadOptions {
        LoadOptions { size, val_fraction: 0.2, test_fraction: 0.2, ..Default::default() }
    }

    /// All images of the splits, sorted, for comparing content irrespective of split membership.
    pub fn all_images(s: &Splits) -> Vec<(u32, Vec<u8>)> {
        let mut v = Vec::new();
        for ds in [&s.train, &s.val, &s.test] {
            for i in 0..ds.len() {
                v.push((ds.labels[i], ds.image(i).to_vec()));
            }
        }
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    #[test]
    fn parse_source() {
        assert_eq!("synthetic".parse::<DataSource>().unwrap(), DataSource::Synthetic);
        assert_eq!("imagefolder:/data/NCT".parse::<DataSource>().unwrap(), DataSource::ImageFolder("/data/NCT".into()));
        assert_eq!("npz:a:b.npz".parse::<DataSource>().unwrap(), DataSource::Npz("a:b.npz".into()));
        assert_eq!("MHIST:/m".parse::<DataSource>().unwrap(), DataSource::Mhist("/m".into()));
        assert_eq!("pcam:/data/pcam".parse::<DataSource>().unwrap(), DataSource::Pcam("/data/pcam".into()));
        for s in ["", "nope", "npz:", "tar:/x", "pcam:"] {
            let e = s.parse::<DataSource>().unwrap_err();
            assert!(e.to_string().contains("invalid data source"), "{e}");
        }
        for s in [DataSource::Synthetic, DataSource::Npz("/x/y.npz".into()), DataSource::Pcam("/p".into())] {
            assert_eq!(s.to_string().parse::<DataSource>().unwrap(), s);
        }
    }

    #[test]
    fn split_is_stratified_and_deterministic() {
        let labels: Vec<u32> = (0..300).map(|i| (i % 3) as u32).collect();
        let (tr, va, te) = stratified_split(&labels, 3, 0.1, 0.2, 5);
        assert_eq!((tr.len(), va.len(), te.len()), (210, 30, 60));
        let mut all: Vec<usize> = tr.iter().chain(&va).chain(&te).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..300).collect::<Vec<_>>());
        for c in 0..3 {
            assert_eq!(te.iter().filter(|&&i| labels[i] == c).count(), 20);
        }
        assert_eq!((tr.clone(), va.clone(), te.clone()), stratified_split(&labels, 3, 0.1, 0.2, 5));
        assert_ne!(te, stratified_split(&labels, 3, 0.1, 0.2, 6).2);
    }

    #[test]
    fn synthetic_source() {
        let o = LoadOptions { size: 32, synth_per_class: 10, synth_num_classes: 3, ..opts(32) };
        let s = load(&DataSource::Synthetic, &o).unwrap();
        assert_eq!(s.train.len() + s.val.len() + s.test.len(), 30);
        assert_eq!(s.test.class_counts(), vec![2, 2, 2]);
        assert_eq!(s.train.classes, vec!["ADI", "BACK", "DEB"]);
        let o2 = LoadOptions { classes: Some(vec!["TUM".into(), "ADI".into()]), ..o.clone() };
        let s2 = load(&DataSource::Synthetic, &o2).unwrap();
        assert_eq!(s2.train.classes, vec!["TUM", "ADI"]);
        assert_eq!(s2.train.class_counts(), vec![6, 6]);
        let o3 = LoadOptions { classes: Some(vec!["FOO".into()]), ..o };
        assert!(matches!(load(&DataSource::Synthetic, &o3), Err(DataError::UnknownClass { .. })));
    }

    #[test]
    fn reference_set_is_its_own_draw_of_the_same_classes() {
        let o = LoadOptions { size: 16, synth_per_class: 12, synth_num_classes: 3, ..opts(16) };
        let s = load(&DataSource::Synthetic, &o).unwrap();
        let judge = synthetic_reference_set(&o, 7).unwrap();
        assert_eq!(judge.class_counts(), vec![7, 7, 7]);
        assert_eq!((judge.size, &judge.classes), (16, &s.train.classes));
        assert_eq!(judge, synthetic_reference_set(&o, 7).unwrap(), "deterministic");
        for split in [&s.train, &s.val, &s.test] {
            for i in 0..split.len() {
                for j in 0..judge.len() {
                    assert_ne!(split.image(i), judge.image(j), "a reference image is one of the splits'");
                }
            }
        }
        let picked = LoadOptions { classes: Some(vec!["TUM".into(), "ADI".into()]), ..o.clone() };
        assert_eq!(synthetic_reference_set(&picked, 2).unwrap().classes, vec!["TUM", "ADI"]);
        assert!(matches!(synthetic_reference_set(&o, 0), Err(DataError::Config(_))));
    }

    #[test]
    fn bad_options() {
        for o in [
            LoadOptions { size: 0, ..Default::default() },
            LoadOptions { val_fraction: 0.6, test_fraction: 0.5, ..Default::default() },
            LoadOptions { val_fraction: f64::NAN, ..Default::default() },
            LoadOptions { classes: Some(vec![]), ..Default::default() },
            LoadOptions { classes: Some(vec!["A".into(), "A".into()]), ..Default::default() },
            LoadOptions { max_images: Some(0), ..Default::default() },
            LoadOptions { max_images: Some(10), ..Default::default() },
        ] {
            assert!(matches!(load(&DataSource::Synthetic, &o), Err(DataError::Config(_))), "{o:?}");
        }
    }

    #[test]
    fn fit_square_crops_and_resizes() {
        let mut img = RgbImage::new(6, 4);
        for (x, _, p) in img.enumerate_pixels_mut() {
            p.0 = [x as u8 * 10, 0, 0];
        }
        let sq = fit_square(img.clone(), 4);
        assert_eq!(sq.dimensions(), (4, 4));
        assert_eq!(sq.get_pixel(0, 0).0[0], 10); // cropped one column on each side
        assert_eq!(fit_square(img, 2).dimensions(), (2, 2));
    }

    #[test]
    fn write_imagefolder_layout() {
        let dir = tempfile::tempdir().unwrap();
        let ds = pattern_dataset(3, &["A", "B"], 8);
        write_imagefolder(&ds, dir.path()).unwrap();
        assert!(dir.path().join("A/A-00000.png").is_file());
        assert!(dir.path().join("B/B-00002.png").is_file());
        assert!(!dir.path().join("B/B-00003.png").exists());
    }

    #[test]
    fn synthetic_stain_shift_changes_colour_but_not_labels() {
        let o = LoadOptions { size: 32, synth_per_class: 6, synth_num_classes: 3, ..opts(32) };
        let plain = load(&DataSource::Synthetic, &o).unwrap();
        let stain = synth::StainShift::for_site(1, 1.0, 3);
        let shifted = load(&DataSource::Synthetic, &LoadOptions { synth_stain: stain, ..o }).unwrap();
        assert_eq!(plain.train.labels, shifted.train.labels, "every site agrees on labels, hence on the partition");
        assert_ne!(plain.train.images, shifted.train.images, "the hospital's staining shows");
    }
}
