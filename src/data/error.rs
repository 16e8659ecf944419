//! The one error type of the data layer. Every variant that concerns a file names it, so a user pointed at a
//! broken dataset learns *which* file is broken and *why* without a backtrace.

use std::path::PathBuf;

/// Errors raised while generating, loading, caching, partitioning or saving data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading or writing a file or directory failed.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// An image file could not be decoded (corrupt, truncated, unknown format).
    #[error("{}: cannot decode image: {msg}", path.display())]
    Decode { path: PathBuf, msg: String },
    /// An image or array has a channel layout the loader does not accept (e.g. grayscale).
    #[error("{}: unsupported channel layout: {msg}", path.display())]
    Channels { path: PathBuf, msg: String },
    /// An image could not be encoded or written.
    #[error("{}: cannot encode image: {msg}", path.display())]
    Encode { path: PathBuf, msg: String },
    /// A class folder exists but holds no image files.
    #[error("{}: class folder '{class}' contains no image files (.tif/.tiff/.png/.jpg/.jpeg)", path.display())]
    EmptyClass { path: PathBuf, class: String },
    /// A dataset root holds no class folders / no samples at all.
    #[error("{}: no data found: {msg}", path.display())]
    NoData { path: PathBuf, msg: String },
    /// A class name that is not in the requested class list.
    #[error("{}: unknown class '{class}' (expected one of: {expected})", path.display())]
    UnknownClass { path: PathBuf, class: String, expected: String },
    /// A required key (array) is missing from an `.npz` archive.
    #[error("{}: npz archive has no array '{key}' (found: {found})", path.display())]
    MissingKey { path: PathBuf, key: String, found: String },
    /// Images and labels of one split disagree in length.
    #[error("{}: split '{split}' has {images} images but {labels} labels", path.display())]
    LengthMismatch { path: PathBuf, split: String, images: usize, labels: usize },
    /// A label outside `0..num_classes`.
    #[error("{}: label {label} at index {index} of '{what}' is out of range 0..{num_classes}", path.display())]
    LabelOutOfRange { path: PathBuf, what: String, index: usize, label: i64, num_classes: usize },
    /// An array has an unsupported dtype (images must be uint8, labels an integer type).
    #[error("{}: array '{array}' has dtype '{dtype}', expected {expected}", path.display())]
    Dtype { path: PathBuf, array: String, dtype: String, expected: String },
    /// An array has the wrong shape.
    #[error("{}: array '{array}' has shape {shape:?}, expected {expected}", path.display())]
    Shape { path: PathBuf, array: String, shape: Vec<usize>, expected: String },
    /// A malformed or truncated `.npy` member.
    #[error("{}: malformed .npy array '{array}': {msg}", path.display())]
    Npy { path: PathBuf, array: String, msg: String },
    /// A malformed zip container.
    #[error("{}: malformed npz (zip) archive: {msg}", path.display())]
    Zip { path: PathBuf, msg: String },
    /// An HDF5 file that cannot be opened or read (not HDF5, truncated, a dataset missing or unreadable).
    #[error("{}: HDF5: {msg}", path.display())]
    Hdf5 { path: PathBuf, msg: String },
    /// A malformed annotations CSV.
    #[error("{}: annotations CSV: {msg}", path.display())]
    Csv { path: PathBuf, msg: String },
    /// A cache file that failed its checksum or format check (callers rebuild; never surfaced by `load`).
    #[error("{}: cache file is corrupt: {msg}", path.display())]
    CacheCorrupt { path: PathBuf, msg: String },
    /// A `--data` source string that could not be parsed.
    #[error("invalid data source '{spec}': {msg}")]
    SourceSpec { spec: String, msg: String },
    /// A partition scheme string that could not be parsed.
    #[error("invalid partition scheme '{spec}': {msg}")]
    PartitionSpec { spec: String, msg: String },
    /// A partition request that cannot be satisfied.
    #[error("cannot partition: {0}")]
    Partition(String),
    /// An invalid option or configuration value.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, what: &'static str, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), what, source }
    }
}
