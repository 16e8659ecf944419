//! `ROOT/<CLASS>/*.{tif,tiff,png,jpg,jpeg}` — NCT-CRC-HE-100K, CRC-VAL-HE-7K, Kather 2016 and any class-per-folder
//! dataset.
//!
//! Class order: the `classes` option if given (every folder must be one of them); else the NCT order when the
//! folder names are exactly the nine NCT classes; else numeric-prefix order when every folder starts with digits
//! and `_` (Kather 2016 `01_TUMOR` … `08_EMPTY`, label = rank); else alphabetical.

use super::cache::{stamp, FileStamp};
use super::{decode_files, split_dataset, LoadOptions, Splits};
use crate::data::{DataError, NCT_CLASSES};
use std::path::{Path, PathBuf};

/// Extensions (lower-case) recognised as images.
pub const IMAGE_EXTENSIONS: [&str; 5] = ["tif", "tiff", "png", "jpg", "jpeg"];

pub(crate) struct Plan {
    pub classes: Vec<String>,
    pub files: Vec<(PathBuf, u32)>,
    pub fingerprint: Vec<FileStamp>,
}

pub(crate) fn is_image_file(path: &Path) -> bool {
    let hidden = path.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
    !hidden && ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())) && path.is_file()
}

pub(crate) fn read_dir_sorted(dir: &Path, what: &'static str) -> Result<Vec<PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, what, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| DataError::io(dir, what, e))?;
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// Numeric prefix of `01_TUMOR`-style names.
fn numeric_prefix(name: &str) -> Option<u64> {
    let (num, rest) = name.split_once('_')?;
    if rest.is_empty() || num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    num.parse().ok()
}

/// Orders class folder names as described in the module docs.
pub fn infer_class_order(names: &[String]) -> Vec<String> {
    let mut sorted = names.to_vec();
    sorted.sort();
    let mut nct: Vec<&str> = NCT_CLASSES.to_vec();
    nct.sort_unstable();
    if sorted.iter().map(String::as_str).eq(nct.iter().copied()) {
        return NCT_CLASSES.iter().map(|s| s.to_string()).collect();
    }
    if sorted.iter().all(|n| numeric_prefix(n).is_some()) {
        sorted.sort_by_key(|n| (numeric_prefix(n), n.clone()));
    }
    sorted
}

pub(crate) fn scan(root: &Path, opts: &LoadOptions) -> Result<Plan, DataError> {
    let mut folders = Vec::new();
    for p in read_dir_sorted(root, "cannot read dataset folder")? {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if p.is_dir() && !name.starts_with('.') {
            folders.push((name, p));
        }
    }
    if folders.is_empty() {
        return Err(DataError::NoData {
            path: root.to_path_buf(),
            msg: "no class folders; expected ROOT/<CLASS>/*.{tif,tiff,png,jpg,jpeg}".into(),
        });
    }
    let names: Vec<String> = folders.iter().map(|(n, _)| n.clone()).collect();
    let classes = match &opts.classes {
        Some(c) => {
            for (name, p) in &folders {
                if !c.contains(name) {
                    return Err(DataError::UnknownClass {
                        path: p.clone(),
                        class: name.clone(),
                        expected: c.join(", "),
                    });
                }
            }
            c.clone()
        }
        None => infer_class_order(&names),
    };
    let mut files = Vec::new();
    let mut fingerprint = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let Some((_, dir)) = folders.iter().find(|(n, _)| n == class) else {
            continue;
        };
        let imgs: Vec<PathBuf> =
            read_dir_sorted(dir, "cannot read class folder")?.into_iter().filter(|p| is_image_file(p)).collect();
        if imgs.is_empty() {
            return Err(DataError::EmptyClass { path: dir.clone(), class: class.clone() });
        }
        for p in imgs {
            let rel = format!("{}/{}", class, p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
            fingerprint.push(stamp(&p, rel)?);
            files.push((p, label as u32));
        }
    }
    Ok(Plan { classes, files, fingerprint })
}

pub(crate) fn decode(plan: &Plan, opts: &LoadOptions) -> Result<Splits, DataError> {
    let (ds, skipped) = decode_files(&plan.files, plan.classes.clone(), opts)?;
    Ok(split_dataset(&ds, opts, skipped))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::{load, load_verbose, write_imagefolder, CacheStatus, DataSource, LoadOptions};
    use super::*;
    use crate::data::Dataset;
    use image::{ImageFormat, RgbImage, RgbaImage};

    fn save_as(ds: &Dataset, root: &Path, fmt: ImageFormat, ext: &str) {
        for i in 0..ds.len() {
            let class = &ds.classes[ds.labels[i] as usize];
            let dir = root.join(class);
            std::fs::create_dir_all(&dir).unwrap();
            let img = RgbImage::from_raw(ds.size, ds.size, ds.image(i).to_vec()).unwrap();
            img.save_with_format(dir.join(format!("{class}-{i:04}.{ext}")), fmt).unwrap();
        }
    }

    fn roundtrip(fmt: ImageFormat, ext: &str, tolerance: i32) {
        let dir = tempfile::tempdir().unwrap();
        let ds = pattern_dataset(5, &["LYM", "ADI", "TUM"], 16);
        save_as(&ds, dir.path(), fmt, ext);
        let s = load(&DataSource::ImageFolder(dir.path().into()), &opts(16)).unwrap();
        assert_eq!(s.train.classes, vec!["ADI", "LYM", "TUM"]); // alphabetical (not the full NCT set)
        assert_eq!(s.train.len() + s.val.len() + s.test.len(), 15);
        assert_eq!(s.test.class_counts(), vec![1, 1, 1]);
        // compare against the originals, relabelled into alphabetical order
        let remap = [1u32, 0, 2];
        let mut want: Vec<(u32, Vec<u8>)> =
            (0..ds.len()).map(|i| (remap[ds.labels[i] as usize], ds.image(i).to_vec())).collect();
        want.sort();
        let got = all_images(&s);
        if tolerance == 0 {
            assert_eq!(got, want);
        } else {
            // JPEG is lossy: match each label group by mean absolute difference
            for (l, img) in &got {
                let best = want
                    .iter()
                    .filter(|(wl, _)| wl == l)
                    .map(|(_, w)| {
                        w.iter().zip(img).map(|(a, b)| (*a as i32 - *b as i32).abs()).sum::<i32>() / w.len() as i32
                    })
                    .min()
                    .unwrap();
                assert!(best <= tolerance, "jpeg mean abs diff {best}");
            }
        }
    }

    #[test]
    fn png_roundtrip() {
        roundtrip(ImageFormat::Png, "png", 0);
    }

    #[test]
    fn tiff_roundtrip() {
        roundtrip(ImageFormat::Tiff, "tif", 0);
    }

    #[test]
    fn jpeg_roundtrip() {
        roundtrip(ImageFormat::Jpeg, "jpg", 6);
    }

    /// Raw TIFFs are covered by `tiff_roundtrip`; LZW (with and without the horizontal predictor) and deflate are
    /// what slide-export tools write most.
    #[test]
    fn lzw_and_deflate_tiffs_load_exactly() {
        use tiff::encoder::{colortype::RGB8, compression::DeflateLevel, Compression, Predictor, TiffEncoder};
        let ds = pattern_dataset(2, &["A", "B"], 24);
        for (name, compression, predictor) in [
            ("lzw", Compression::Lzw, Predictor::None),
            ("lzw-predictor", Compression::Lzw, Predictor::Horizontal),
            ("deflate", Compression::Deflate(DeflateLevel::Balanced), Predictor::None),
        ] {
            let dir = tempfile::tempdir().unwrap();
            for i in 0..ds.len() {
                let class_dir = dir.path().join(&ds.classes[ds.labels[i] as usize]);
                std::fs::create_dir_all(&class_dir).unwrap();
                let mut bytes = std::io::Cursor::new(Vec::new());
                let mut enc =
                    TiffEncoder::new(&mut bytes).unwrap().with_compression(compression).with_predictor(predictor);
                enc.write_image::<RGB8>(24, 24, ds.image(i)).unwrap();
                std::fs::write(class_dir.join(format!("{i}.tif")), bytes.into_inner()).unwrap();
            }
            let o = LoadOptions { val_fraction: 0.0, test_fraction: 0.0, ..opts(24) };
            let s = load(&DataSource::ImageFolder(dir.path().into()), &o).unwrap();
            assert_eq!(s.train.images, ds.images, "{name}");
        }
    }

    /// A one-strip TIFF around a baseline JPEG stream: compression `compression` (7 = JPEG), photometric YCbCr,
    /// no chroma subsampling (what `image`'s encoder writes) — the layout of JPEG-compressed tiles.
    fn jpeg_tiff(jpeg: &[u8], w: u32, h: u32, compression: u16) -> Vec<u8> {
        const SHORT: u16 = 3;
        const LONG: u16 = 4;
        let entries: [(u16, u16, u32, u32); 11] = [
            (256, LONG, 1, w),    // ImageWidth
            (257, LONG, 1, h),    // ImageLength
            (258, SHORT, 3, 146), // BitsPerSample 8,8,8 (at offset 146)
            (259, SHORT, 1, u32::from(compression)),
            (262, SHORT, 1, 6),                // PhotometricInterpretation YCbCr
            (273, LONG, 1, 152),               // StripOffsets
            (277, SHORT, 1, 3),                // SamplesPerPixel
            (278, LONG, 1, h),                 // RowsPerStrip
            (279, LONG, 1, jpeg.len() as u32), // StripByteCounts
            (284, SHORT, 1, 1),                // PlanarConfiguration chunky
            (530, SHORT, 2, 1 | (1 << 16)),    // YCbCrSubsampling 1,1
        ];
        let mut out = b"II*\0".to_vec();
        out.extend_from_slice(&8u32.to_le_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for (tag, kind, count, value) in entries {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            out.extend_from_slice(&value.to_le_bytes());
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(out.len(), 146);
        for _ in 0..3 {
            out.extend_from_slice(&8u16.to_le_bytes());
        }
        assert_eq!(out.len(), 152);
        out.extend_from_slice(jpeg);
        out
    }

    #[test]
    fn jpeg_compressed_tiff_loads_and_unsupported_compression_is_named() {
        // A 224×224 tile like NCT-CRC-HE's, smooth enough for JPEG to keep it close.
        let (w, h) = (224, 224);
        let tile = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 150]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95).encode_image(&tile).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("TUM")).unwrap();
        let path = dir.path().join("TUM/tile.tif");
        std::fs::write(&path, jpeg_tiff(&jpeg, w, h, 7)).unwrap();
        // What `image` alone says about it (the reported symptom), so this test notices if it ever learns to.
        let plain = image::load_from_memory(&std::fs::read(&path).unwrap()).unwrap_err().to_string();
        assert!(plain.contains("Unknown(24)"), "{plain}");

        let px = super::super::decode_image_file(&path, w).unwrap();
        // The same JPEG stream decoded as a .jpg: only the YCbCr→RGB rounding may differ.
        let direct = image::load_from_memory(&jpeg).unwrap().to_rgb8().into_raw();
        let worst = px.iter().zip(&direct).map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs()).max().unwrap();
        assert!(worst <= 2, "largest difference to the plain JPEG decode: {worst}");
        let mean = px.iter().zip(tile.as_raw()).map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs()).sum::<i32>()
            / px.len() as i32;
        assert!(mean <= 3, "mean difference to the original tile: {mean}");
        let o = LoadOptions { val_fraction: 0.0, test_fraction: 0.0, ..opts(32) };
        let s = load(&DataSource::ImageFolder(dir.path().into()), &o).unwrap();
        assert_eq!((s.train.len(), s.train.size), (1, 32));

        // Old-style JPEG (compression 6) is not decodable: the error names the file and the compression.
        std::fs::write(&path, jpeg_tiff(&jpeg, w, h, 6)).unwrap();
        let e = load(&DataSource::ImageFolder(dir.path().into()), &o).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, DataError::Decode { .. }), "{e}");
        assert!(msg.contains("tile.tif") && msg.contains("compression old-style JPEG (6)"), "{msg}");
        assert!(msg.contains("photometric YCbCr (6)"), "{msg}");
    }

    #[test]
    fn nct_and_kather_orders() {
        let mut nct: Vec<String> = NCT_CLASSES.iter().map(|s| s.to_string()).collect();
        nct.reverse();
        assert_eq!(infer_class_order(&nct), NCT_CLASSES.map(String::from).to_vec());
        let kather: Vec<String> =
            ["08_EMPTY", "01_TUMOR", "10_X", "02_STROMA", "03_COMPLEX"].iter().map(|s| s.to_string()).collect();
        assert_eq!(infer_class_order(&kather), vec!["01_TUMOR", "02_STROMA", "03_COMPLEX", "08_EMPTY", "10_X"]);
        let plain: Vec<String> = ["b", "a", "1_"].iter().map(|s| s.to_string()).collect();
        assert_eq!(infer_class_order(&plain), vec!["1_", "a", "b"]);
    }

    #[test]
    fn full_nct_folder_uses_nct_order_and_resizes() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<&str> = NCT_CLASSES.iter().rev().copied().collect();
        let ds = pattern_dataset(2, &names, 20);
        write_imagefolder(&ds, dir.path()).unwrap();
        let s =
            load(&DataSource::ImageFolder(dir.path().into()), &LoadOptions { val_fraction: 0.0, ..opts(8) }).unwrap();
        assert_eq!(s.train.classes, NCT_CLASSES.map(String::from).to_vec());
        assert_eq!(s.train.size, 8);
        assert_eq!(s.train.class_counts(), vec![2; 9]); // round(2 * 0.2) = 0 go to test
        assert_eq!(s.train.images.len(), 18 * 8 * 8 * 3);
    }

    #[test]
    fn rgba_converted_grayscale_rejected_and_skip_bad() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("A");
        std::fs::create_dir_all(&a).unwrap();
        RgbaImage::from_pixel(8, 8, image::Rgba([10, 20, 30, 128])).save(a.join("rgba.png")).unwrap();
        RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3])).save(a.join("ok.png")).unwrap();
        std::fs::write(a.join("notes.txt"), "ignored").unwrap();
        std::fs::write(a.join(".hidden.png"), "ignored").unwrap();
        let src = DataSource::ImageFolder(dir.path().into());
        let o = LoadOptions { val_fraction: 0.0, test_fraction: 0.0, ..opts(8) };
        let s = load(&src, &o).unwrap();
        assert_eq!(s.train.len(), 2);
        assert_eq!(s.train.image(1)[..3], [10, 20, 30]);
        // grayscale: a clear error naming the file, or skipped
        image::GrayImage::from_pixel(8, 8, image::Luma([9])).save(a.join("gray.png")).unwrap();
        std::fs::write(a.join("broken.tif"), b"II*\0garbage").unwrap();
        let e = load(&src, &o).unwrap_err();
        assert!(matches!(e, DataError::Decode { .. } | DataError::Channels { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("broken.tif") || msg.contains("gray.png"), "{msg}");
        let s = load(&src, &LoadOptions { skip_bad: true, ..o.clone() }).unwrap();
        assert_eq!(s.train.len(), 2);
        let mut skipped: Vec<String> =
            s.skipped.iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        skipped.sort();
        assert_eq!(skipped, vec!["broken.tif", "gray.png"]);
        assert!(s.skipped.iter().any(|(_, why)| why.contains("grayscale")));
    }

    #[test]
    fn folder_errors() {
        let dir = tempfile::tempdir().unwrap();
        let src = DataSource::ImageFolder(dir.path().into());
        assert!(matches!(load(&src, &opts(8)), Err(DataError::NoData { .. })));
        let missing = DataSource::ImageFolder(dir.path().join("nope"));
        let e = load(&missing, &opts(8)).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }) && e.to_string().contains("nope"), "{e}");
        std::fs::create_dir_all(dir.path().join("ADI")).unwrap();
        RgbImage::new(4, 4).save(dir.path().join("ADI/x.png")).unwrap();
        std::fs::create_dir_all(dir.path().join("EMPTY")).unwrap();
        std::fs::write(dir.path().join("EMPTY/readme.txt"), "no images").unwrap();
        let e = load(&src, &opts(8)).unwrap_err();
        assert!(matches!(e, DataError::EmptyClass { ref class, .. } if class == "EMPTY"), "{e}");
        assert!(e.to_string().contains("EMPTY"));
        let o = LoadOptions { classes: Some(vec!["ADI".into(), "TUM".into()]), ..opts(8) };
        let e = load(&src, &o).unwrap_err();
        assert!(matches!(e, DataError::UnknownClass { ref class, .. } if class == "EMPTY"), "{e}");
        std::fs::remove_dir_all(dir.path().join("EMPTY")).unwrap();
        let s = load(&src, &o).unwrap();
        assert_eq!(s.train.classes, vec!["ADI", "TUM"]);
    }

    #[test]
    fn cache_hit_skips_decoding_and_corrupt_cache_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let ds = pattern_dataset(4, &["A", "B"], 8);
        write_imagefolder(&ds, dir.path()).unwrap();
        let src = DataSource::ImageFolder(dir.path().into());
        let o = LoadOptions { cache_dir: Some(cache.path().into()), ..opts(8) };
        let (first, info) = load_verbose(&src, &o).unwrap();
        assert_eq!(info.cache, CacheStatus::Miss);
        assert_eq!(info.cache_warning, None);
        let cache_file = info.cache_path.unwrap();
        assert!(cache_file.is_file());

        // corrupt an image but keep its size and mtime: only a cache hit can still succeed
        let victim = dir.path().join("A/A-00001.png");
        let md = std::fs::metadata(&victim).unwrap();
        let original = std::fs::read(&victim).unwrap();
        std::fs::write(&victim, vec![0u8; md.len() as usize]).unwrap();
        std::fs::File::options().write(true).open(&victim).unwrap().set_modified(md.modified().unwrap()).unwrap();
        let (second, info) = load_verbose(&src, &o).unwrap();
        assert_eq!(info.cache, CacheStatus::Hit);
        assert_eq!(second, first);
        // without the cache the same folder fails
        assert!(load(&src, &opts(8)).is_err());

        // a corrupt cache file is detected by checksum and rebuilt (here: decoding now fails => error surfaces)
        let mut bytes = std::fs::read(&cache_file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&cache_file, &bytes).unwrap();
        assert!(load(&src, &o).is_err(), "corrupt cache must not be trusted");
        // restore the image: rebuild succeeds and reports why
        std::fs::write(&victim, &original).unwrap();
        std::fs::File::options().write(true).open(&victim).unwrap().set_modified(md.modified().unwrap()).unwrap();
        std::fs::write(&cache_file, &bytes).unwrap();
        let (third, info) = load_verbose(&src, &o).unwrap();
        assert!(matches!(info.cache, CacheStatus::Rebuilt(ref why) if why.contains("checksum")), "{:?}", info.cache);
        assert_eq!(third, first);
        assert_eq!(load_verbose(&src, &o).unwrap().1.cache, CacheStatus::Hit);
        // different options -> different cache entry
        let o2 = LoadOptions { seed: 9, ..o.clone() };
        assert_eq!(load_verbose(&src, &o2).unwrap().1.cache, CacheStatus::Miss);
    }
}
