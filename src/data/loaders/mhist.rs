//! MHIST-style datasets: one folder of images (directly, or under `images/`) plus an annotations CSV with an image
//! name column, a label column and optionally a partition column, e.g. MHIST's
//! `Image Name,Majority Vote Label,Number of Annotators who Selected SSA (Out of 7),Partition`.
//!
//! Columns are found by header name (case-insensitive): name = contains "image", "file" or "name"; label =
//! contains "label", "class", "vote" or "diagnosis"; partition = contains "partition" or "split", or is "set" /
//! "subset". Partitions `train`, `test`, `val`/`valid`/`validation` are honoured (validation is carved from train
//! with `val_fraction` when absent); without a partition column the split is stratified by the option fractions.
//! The CSV is `annotations.csv` if present, otherwise the only `*.csv` in the folder; `mhist:FILE.csv` names it.

use super::cache::{stamp, FileStamp};
use super::imagefolder::read_dir_sorted;
use super::{decode_files, split_dataset, stratified_split, LoadOptions, Splits};
use crate::data::{DataError, Dataset};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// One annotation row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MhistRow {
    pub image: String,
    pub label: String,
    /// Normalised to `train`, `val` or `test`; `None` when the CSV has no partition column.
    pub partition: Option<String>,
}

/// Parses annotation CSV text (fuzzing entry point: never panics).
pub fn parse_mhist_csv(text: &str) -> Result<Vec<MhistRow>, DataError> {
    parse_csv_at(text, Path::new("<csv text>"))
}

fn find_col(headers: &[String], pred: impl Fn(&str) -> bool, taken: &[usize]) -> Option<usize> {
    headers.iter().enumerate().find(|(i, h)| !taken.contains(i) && pred(&h.to_ascii_lowercase())).map(|(i, _)| i)
}

fn normalise_partition(p: &str) -> Option<&'static str> {
    match p.trim().to_ascii_lowercase().as_str() {
        "train" | "training" => Some("train"),
        "test" | "testing" => Some("test"),
        "val" | "valid" | "validation" => Some("val"),
        _ => None,
    }
}

pub(crate) fn parse_csv_at(text: &str, path: &Path) -> Result<Vec<MhistRow>, DataError> {
    let err = |msg: String| DataError::Csv { path: path.to_path_buf(), msg };
    let mut rdr =
        csv::ReaderBuilder::new().has_headers(true).trim(csv::Trim::All).flexible(true).from_reader(text.as_bytes());
    let headers: Vec<String> =
        rdr.headers().map_err(|e| err(format!("cannot read header: {e}")))?.iter().map(String::from).collect();
    let label = find_col(
        &headers,
        |h| h.contains("label") || h.contains("class") || h.contains("vote") || h.contains("diagnosis"),
        &[],
    );
    let name = find_col(
        &headers,
        |h| h.contains("image") || h.contains("file") || h.contains("name"),
        &label.into_iter().collect::<Vec<_>>(),
    );
    let (Some(name), Some(label)) = (name, label) else {
        return Err(err(format!(
            "cannot find the image-name and label columns in header {headers:?} (expected e.g. 'Image Name', \
             'Majority Vote Label', 'Partition')"
        )));
    };
    let part = find_col(
        &headers,
        |h| h.contains("partition") || h.contains("split") || h == "set" || h == "subset",
        &[name, label],
    );
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    for (k, rec) in rdr.records().enumerate() {
        let line = k + 2;
        let rec = rec.map_err(|e| err(format!("line {line}: {e}")))?;
        if rec.iter().all(|f| f.is_empty()) {
            continue;
        }
        let get = |i: usize, what: &str| -> Result<String, DataError> {
            match rec.get(i) {
                Some(v) if !v.is_empty() => Ok(v.to_string()),
                _ => Err(err(format!("line {line}: missing {what}"))),
            }
        };
        let image = get(name, "image name")?;
        if image.contains("..") || Path::new(&image).is_absolute() {
            return Err(err(format!("line {line}: image name '{image}' must be a plain relative file name")));
        }
        let label = get(label, "label")?;
        let partition = match part {
            None => None,
            Some(p) => {
                let v = get(p, "partition")?;
                Some(
                    normalise_partition(&v)
                        .ok_or_else(|| {
                            err(format!("line {line}: unknown partition '{v}' (expected train, val or test)"))
                        })?
                        .to_string(),
                )
            }
        };
        if !seen.insert(image.clone()) {
            return Err(err(format!("line {line}: image '{image}' is listed twice")));
        }
        rows.push(MhistRow { image, label, partition });
    }
    if rows.is_empty() {
        return Err(err("no annotation rows".into()));
    }
    Ok(rows)
}

pub(crate) struct Plan {
    csv: PathBuf,
    classes: Vec<String>,
    files: Vec<(PathBuf, u32)>,
    partitions: Option<Vec<String>>,
    pub fingerprint: Vec<FileStamp>,
}

fn find_csv(root: &Path) -> Result<PathBuf, DataError> {
    if root.is_file() {
        return Ok(root.to_path_buf());
    }
    let preferred = root.join("annotations.csv");
    if preferred.is_file() {
        return Ok(preferred);
    }
    let csvs: Vec<PathBuf> = read_dir_sorted(root, "cannot read MHIST folder")?
        .into_iter()
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")))
        .collect();
    match csvs.as_slice() {
        [one] => Ok(one.clone()),
        [] => {
            Err(DataError::NoData { path: root.to_path_buf(), msg: "no annotations CSV (e.g. annotations.csv)".into() })
        }
        _ => Err(DataError::Csv {
            path: root.to_path_buf(),
            msg: format!("{} CSV files and none is annotations.csv; name one with mhist:FILE.csv", csvs.len()),
        }),
    }
}

pub(crate) fn scan(root: &Path, opts: &LoadOptions) -> Result<Plan, DataError> {
    let csv = find_csv(root)?;
    let text = std::fs::read_to_string(&csv).map_err(|e| DataError::io(&csv, "cannot read annotations CSV", e))?;
    let rows = parse_csv_at(&text, &csv)?;
    let folder = csv.parent().map(Path::to_path_buf).unwrap_or_default();
    let images_dir = if folder.join("images").is_dir() { folder.join("images") } else { folder };
    let classes = match &opts.classes {
        Some(c) => c.clone(),
        None => {
            let mut c: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
            c.sort();
            c.dedup();
            c
        }
    };
    let mut files = Vec::with_capacity(rows.len());
    let mut fingerprint = vec![stamp(&csv, "<csv>".into())?];
    let mut partitions = Vec::new();
    for r in &rows {
        let label = classes.iter().position(|c| *c == r.label).ok_or_else(|| DataError::UnknownClass {
            path: csv.clone(),
            class: r.label.clone(),
            expected: classes.join(", "),
        })?;
        let p = images_dir.join(&r.image);
        match stamp(&p, r.image.clone()) {
            Ok(s) => fingerprint.push(s),
            // a missing image is reported (or skipped) when decoding
            Err(_) if opts.skip_bad => {}
            Err(e) => return Err(e),
        }
        files.push((p, label as u32));
        if let Some(part) = &r.partition {
            partitions.push(part.clone());
        }
    }
    let partitions = if partitions.len() == rows.len() { Some(partitions) } else { None };
    Ok(Plan { csv, classes, files, partitions, fingerprint })
}

pub(crate) fn decode(plan: &Plan, opts: &LoadOptions) -> Result<Splits, DataError> {
    // decode row by row so partitions stay aligned with the images that survived `skip_bad`
    let (ds, skipped) = decode_files(&plan.files, plan.classes.clone(), opts)?;
    if ds.is_empty() {
        return Err(DataError::NoData { path: plan.csv.clone(), msg: "no image could be loaded".into() });
    }
    let Some(parts) = &plan.partitions else {
        return Ok(split_dataset(&ds, opts, skipped));
    };
    let bad: HashSet<&PathBuf> = skipped.iter().map(|(p, _)| p).collect();
    let kept: Vec<&String> =
        plan.files.iter().zip(parts).filter(|((p, _), _)| !bad.contains(p)).map(|(_, s)| s).collect();
    let pick = |name: &str| -> Vec<usize> { (0..ds.len()).filter(|&i| kept[i] == name).collect() };
    let (tr, va, te) = (pick("train"), pick("val"), pick("test"));
    let mut train = ds.subset(&tr);
    let val: Dataset = if va.is_empty() {
        let (t2, v2, _) = stratified_split(&train.labels, train.num_classes(), opts.val_fraction, 0.0, opts.seed);
        let v = train.subset(&v2);
        train = train.subset(&t2);
        v
    } else {
        ds.subset(&va)
    };
    Ok(Splits { train, val, test: ds.subset(&te), skipped })
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::{load, DataSource, LoadOptions};
    use super::*;
    use image::RgbImage;

    const HEADER: &str = "Image Name,Majority Vote Label,Number of Annotators who Selected SSA (Out of 7),Partition";

    fn write_mhist(dir: &Path, n: usize, sub: bool) -> String {
        let img_dir = if sub { dir.join("images") } else { dir.to_path_buf() };
        std::fs::create_dir_all(&img_dir).unwrap();
        let mut csv = format!("{HEADER}\n");
        for i in 0..n {
            let name = format!("MHIST_{i:03}.png");
            RgbImage::from_pixel(12, 12, image::Rgb([i as u8, 100, 200])).save(img_dir.join(&name)).unwrap();
            let label = if i % 2 == 0 { "HP" } else { "SSA" };
            let part = if i % 4 == 3 { "test" } else { "train" };
            csv.push_str(&format!("{name},{label},{},{part}\n", i % 7));
        }
        std::fs::write(dir.join("annotations.csv"), &csv).unwrap();
        csv
    }

    #[test]
    fn parse_real_header() {
        let rows =
            parse_mhist_csv(&format!("{HEADER}\nMHIST_aah.png,SSA,6,train\nMHIST_aai.png, HP ,0,test\n")).unwrap();
        assert_eq!(
            rows[1],
            MhistRow { image: "MHIST_aai.png".into(), label: "HP".into(), partition: Some("test".into()) }
        );
        let rows = parse_mhist_csv("file,class\na.png,x\n\nb.png,y\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].partition, None);
    }

    #[test]
    fn csv_errors() {
        for (text, want) in [
            ("", "cannot find"),
            ("foo,bar\n1,2\n", "cannot find"),
            ("image,label\n", "no annotation rows"),
            ("image,label,partition\na.png,HP,holdout\n", "unknown partition"),
            ("image,label\na.png,\n", "missing label"),
            ("image,label\na.png,HP\na.png,SSA\n", "twice"),
            ("image,label\n../etc/passwd,HP\n", "relative"),
            ("image,label\na.png\n", "missing label"),
        ] {
            let e = parse_mhist_csv(text).unwrap_err();
            assert!(matches!(e, DataError::Csv { .. }), "{text:?}: {e}");
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn mhist_folder_loads_with_partitions() {
        for sub in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            write_mhist(dir.path(), 16, sub);
            let o = LoadOptions { val_fraction: 0.25, ..opts(8) };
            let s = load(&DataSource::Mhist(dir.path().into()), &o).unwrap();
            assert_eq!(s.train.classes, vec!["HP", "SSA"]);
            assert_eq!(s.test.len(), 4); // i % 4 == 3
            assert_eq!(s.test.class_counts(), vec![0, 4]);
            assert_eq!(s.train.len() + s.val.len(), 12);
            assert_eq!(s.val.len(), 3);
            assert_eq!(s.train.size, 8);
            // pointing at the CSV itself works too
            let s2 = load(&DataSource::Mhist(dir.path().join("annotations.csv")), &o).unwrap();
            assert_eq!(s2, s);
        }
    }

    #[test]
    fn mhist_errors_and_skip() {
        let dir = tempfile::tempdir().unwrap();
        let src = DataSource::Mhist(dir.path().into());
        assert!(matches!(load(&src, &opts(8)), Err(DataError::NoData { .. })));
        write_mhist(dir.path(), 8, false);
        let o = LoadOptions { classes: Some(vec!["HP".into()]), ..opts(8) };
        let e = load(&src, &o).unwrap_err();
        assert!(matches!(e, DataError::UnknownClass { ref class, .. } if class == "SSA"), "{e}");
        assert!(e.to_string().contains("annotations.csv"));
        std::fs::remove_file(dir.path().join("MHIST_002.png")).unwrap();
        std::fs::write(dir.path().join("MHIST_005.png"), b"\x89PNG\r\n\x1a\ncorrupt").unwrap();
        let e = load(&src, &opts(8)).unwrap_err();
        assert!(e.to_string().contains("MHIST_002.png"), "{e}");
        let s = load(&src, &LoadOptions { skip_bad: true, ..opts(8) }).unwrap();
        assert_eq!(s.skipped.len(), 2);
        assert_eq!(s.train.len() + s.val.len() + s.test.len(), 6);
        // the corrupt image was at i=5 (train), the missing one at i=2 (train); tests are i=3,7
        assert_eq!(s.test.len(), 2);
        std::fs::write(dir.path().join("other.csv"), "x").unwrap();
        std::fs::remove_file(dir.path().join("annotations.csv")).unwrap();
        std::fs::write(dir.path().join("b.csv"), "x").unwrap();
        assert!(matches!(load(&src, &opts(8)), Err(DataError::Csv { .. })));
    }
}
