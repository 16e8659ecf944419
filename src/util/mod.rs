//! The foundation every other layer may use: nothing here knows models, data, federation or actors.
//!
//! * [`heap`] — keep freed model-sized buffers for reuse (glibc `mmap` threshold);
//! * [`telemetry`] — text or JSON logs, to stderr or a file, coloured only on a terminal;
//! * [`exe`] — the running binary as a path to start copies of itself from, even after a rebuild replaced it;
//! * [`draw`] — the embedded font and a panic-safe raster canvas encoded as PNG, shared by the quality heatmaps and
//!   the report's plots.

pub mod draw;
pub mod exe;
pub mod heap;
pub mod telemetry;
