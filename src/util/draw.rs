//! Drawing primitives shared by every picture histofed makes from numbers: the embedded font and a white RGB canvas
//! that a closure draws on (with plotters) and that comes back encoded as PNG.
//!
//! Why the font is embedded: plotters' default text backend asks the system for fonts (fontconfig), and a slim
//! container image has none, which would turn every plot into an error on exactly the machines that run histofed. So
//! DejaVu Sans (assets/fonts, Bitstream Vera license) is compiled in and registered with plotters' `ab_glyph`
//! backend once per process.
//!
//! Why here, at the bottom: the quality heatmaps (eval) and the run plots (report) both draw; neither should import
//! the other for it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use image::{ExtendedColorType, ImageEncoder};
use plotters::style::FontStyle;
use thiserror::Error;

/// DejaVu Sans, see assets/fonts/DejaVuSans-LICENSE.txt.
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
/// Family name the font is registered under; plotters' own default labels ask for it too.
pub const FAMILY: &str = "sans-serif";

/// Why a picture could not be made.
#[derive(Debug, Error)]
pub enum DrawError {
    #[error("the embedded plot font does not load")]
    Font,
    #[error("drawing the {plot} plot: {detail}")]
    Draw { plot: &'static str, detail: String },
    #[error("encoding the {plot} plot as PNG: {source}")]
    Encode { plot: &'static str, source: image::ImageError },
}

/// Registers the embedded font with plotters (once per process).
pub fn ensure_font() -> Result<(), DrawError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(DrawError::Font)
    }
}

/// Draws on a white `width`×`height` RGB canvas with `draw` and encodes the result as PNG. The embedded font is
/// registered first; a panic inside the plotting library becomes an error, never a lost run.
pub fn rasterize(
    plot: &'static str,
    width: u32,
    height: u32,
    draw: impl FnOnce(&mut [u8]) -> Result<(), String>,
) -> Result<Vec<u8>, DrawError> {
    ensure_font()?;
    let mut rgb = vec![255u8; (width as usize) * (height as usize) * 3];
    let drawn = catch_unwind(AssertUnwindSafe(|| draw(&mut rgb)))
        .map_err(|_| DrawError::Draw { plot, detail: "the plotting library panicked".into() })?;
    drawn.map_err(|detail| DrawError::Draw { plot, detail })?;
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, width, height, ExtendedColorType::Rgb8)
        .map_err(|source| DrawError::Encode { plot, source })?;
    Ok(png)
}
