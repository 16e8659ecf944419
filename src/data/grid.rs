//! Image grids: tiling HWC `u8` images into one picture for eyeballing data and GAN samples.

use crate::data::{DataError, Dataset};
use image::{Rgb, RgbImage};
use std::path::Path;

/// Gap in pixels between (and around) tiles.
pub const GRID_PAD: u32 = 2;
/// Colour of the gaps and of empty cells.
pub const GRID_BG: [u8; 3] = [255, 255, 255];

/// Tiles the first `count` images of `images` (HWC RGB u8, `size*size*3` bytes each) into a grid of `cols` columns,
/// with [`GRID_PAD`] pixels of white between and around tiles. `count` is clamped to the images available and
/// `cols` to `1..=count`; with nothing to draw a 1×1 white image is returned.
pub fn image_grid(images: &[u8], size: u32, count: usize, cols: usize) -> RgbImage {
    let per = size as usize * size as usize * 3;
    let count = images.len().checked_div(per).map_or(0, |m| count.min(m));
    if count == 0 {
        return RgbImage::from_pixel(1, 1, Rgb(GRID_BG));
    }
    let cols = cols.clamp(1, count);
    let rows = count.div_ceil(cols);
    let mut cells: Vec<Option<&[u8]>> = images.chunks_exact(per).take(count).map(Some).collect();
    cells.resize(rows * cols, None);
    draw_cells(&cells, size, rows, cols)
}

fn draw_cells(cells: &[Option<&[u8]>], size: u32, rows: usize, cols: usize) -> RgbImage {
    let w = cols as u32 * (size + GRID_PAD) + GRID_PAD;
    let h = rows as u32 * (size + GRID_PAD) + GRID_PAD;
    let mut out = RgbImage::from_pixel(w, h, Rgb(GRID_BG));
    for (k, cell) in cells.iter().enumerate() {
        let Some(img) = cell else { continue };
        let (r, c) = ((k / cols) as u32, (k % cols) as u32);
        let (ox, oy) = (GRID_PAD + c * (size + GRID_PAD), GRID_PAD + r * (size + GRID_PAD));
        for y in 0..size {
            for x in 0..size {
                let i = ((y * size + x) * 3) as usize;
                out.put_pixel(ox + x, oy + y, Rgb([img[i], img[i + 1], img[i + 2]]));
            }
        }
    }
    out
}

/// Saves an image as PNG, creating parent directories.
pub fn save_png(img: &RgbImage, path: &Path) -> Result<(), DataError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, "cannot create directory", e))?;
    }
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| DataError::Encode { path: path.to_path_buf(), msg: e.to_string() })
}

/// One row per class holding that class's first `per_class` images (empty cells stay white).
pub fn contact_sheet(ds: &Dataset, per_class: usize) -> RgbImage {
    let by_class = ds.indices_by_class();
    let rows = by_class.len();
    let cols = per_class.max(1);
    if rows == 0 || ds.is_empty() {
        return RgbImage::from_pixel(1, 1, Rgb(GRID_BG));
    }
    let mut cells: Vec<Option<&[u8]>> = vec![None; rows * cols];
    for (r, idx) in by_class.iter().enumerate() {
        for (c, &i) in idx.iter().take(per_class).enumerate() {
            cells[r * cols + c] = Some(ds.image(i));
        }
    }
    draw_cells(&cells, ds.size, rows, cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(n: usize, size: u32) -> Vec<u8> {
        (0..n).flat_map(|i| vec![(i * 40) as u8; (size * size * 3) as usize]).collect()
    }

    #[test]
    fn grid_layout() {
        let imgs = solid(5, 4);
        let g = image_grid(&imgs, 4, 5, 2);
        assert_eq!(g.dimensions(), (2 * 6 + 2, 3 * 6 + 2));
        assert_eq!(g.get_pixel(2, 2).0, [0, 0, 0]);
        assert_eq!(g.get_pixel(8, 2).0, [40, 40, 40]);
        assert_eq!(g.get_pixel(2, 14).0, [160, 160, 160]);
        assert_eq!(g.get_pixel(9, 15).0, GRID_BG); // empty 6th cell
        assert_eq!(g.get_pixel(0, 0).0, GRID_BG);
        // count clamps, cols 0 clamps
        assert_eq!(image_grid(&imgs, 4, 50, 0).dimensions(), (6 + 2, 5 * 6 + 2));
        assert_eq!(image_grid(&[], 4, 3, 3).dimensions(), (1, 1));
    }

    #[test]
    fn contact_sheet_rows_per_class() {
        let imgs = solid(5, 4);
        let ds = Dataset::new(4, vec!["a".into(), "b".into(), "c".into()], imgs, vec![1, 0, 1, 1, 0]).unwrap();
        let s = contact_sheet(&ds, 2);
        assert_eq!(s.dimensions(), (2 * 6 + 2, 3 * 6 + 2));
        assert_eq!(s.get_pixel(2, 2).0, [40, 40, 40]); // class a, first = image 1
        assert_eq!(s.get_pixel(8, 8).0, [80, 80, 80]); // class b, second = image 2
        assert_eq!(s.get_pixel(2, 14).0, GRID_BG); // class c empty
    }

    #[test]
    fn save_png_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/grid.png");
        let g = image_grid(&solid(3, 8), 8, 3, 3);
        save_png(&g, &p).unwrap();
        let back = image::open(&p).unwrap().to_rgb8();
        assert_eq!(back, g);
        let bad = save_png(&g, &dir.path().join("sub/grid.png/x.png")).unwrap_err();
        assert!(bad.to_string().contains("grid.png"), "{bad}");
    }
}
