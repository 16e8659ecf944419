//! MedMNIST `.npz` (e.g. PathMNIST): a zip (stored or deflated) of `.npy` arrays `train_images`, `train_labels`,
//! `val_*`, `test_*`. Images must be `(N, H, W, 3)` uint8 in C order; labels `(N,)` or `(N, 1)` of any integer
//! dtype. The `.npy` header is parsed here (no numpy dependency) and image data is streamed and resized image by
//! image, so a 224-px PathMNIST never has to fit in memory at full size.
//!
//! `train_*` is required; `val_*` / `test_*` are optional as pairs — a missing split is carved from train per class
//! with `val_fraction` / `test_fraction`.

use super::{complete_splits, fit_square, par_map, LoadOptions, Splits};
use crate::data::{DataError, Dataset, NCT_CLASSES};
use image::RgbImage;
use std::io::{Read, Seek};
use std::path::Path;

/// Largest single image accepted from an npz (bytes), and largest `.npy` header.
const MAX_IMAGE_BYTES: usize = 1 << 28;
const MAX_HEADER_BYTES: usize = 1 << 20;
/// Images decoded per parallel resize batch.
const BATCH: usize = 512;

/// The parsed header of a `.npy` array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    /// numpy type string, e.g. `|u1`, `<i8`.
    pub descr: String,
    pub fortran_order: bool,
    pub shape: Vec<usize>,
}

/// One split of an npz: images (HWC u8, `size`×`size`) and raw integer labels.
#[derive(Clone, Debug, PartialEq)]
pub struct NpzSplit {
    /// `train`, `val` or `test`.
    pub name: String,
    pub size: u32,
    pub images: Vec<u8>,
    pub labels: Vec<i64>,
}

/// Parses an in-memory `.npz` as MedMNIST splits at native resolution (non-square images are centre-cropped).
/// This is the fuzzing entry point: any byte string gives `Ok` or a [`DataError`], never a panic.
pub fn parse_npz_bytes(bytes: &[u8]) -> Result<Vec<NpzSplit>, DataError> {
    read_npz(std::io::Cursor::new(bytes), Path::new("<npz bytes>"), None)
}

/// Reads a `.npy` header (magic, version 1/2/3, Python-dict header) from `r`, leaving `r` at the data.
pub fn parse_npy_header<R: Read>(r: &mut R) -> Result<NpyHeader, String> {
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre).map_err(|_| "truncated before the end of the magic string".to_string())?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err("not a .npy array (bad magic)".into());
    }
    let len = match pre[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(|_| "truncated header length".to_string())?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(|_| "truncated header length".to_string())?;
            u32::from_le_bytes(b) as usize
        }
        v => return Err(format!("unsupported .npy format version {v}.{}", pre[7])),
    };
    if len > MAX_HEADER_BYTES {
        return Err(format!("header length {len} is implausibly large"));
    }
    let mut header = Vec::new();
    r.take(len as u64).read_to_end(&mut header).map_err(|e| format!("cannot read header: {e}"))?;
    if header.len() != len {
        return Err(format!("truncated header ({} of {len} bytes)", header.len()));
    }
    let text = String::from_utf8(header).map_err(|_| "header is not UTF-8".to_string())?;
    parse_header_dict(&text)
}

#[derive(Debug, PartialEq)]
enum PyVal {
    Str(String),
    Bool(bool),
    Int(usize),
    Tuple(Vec<usize>),
}

/// Parses `{'descr': '<i8', 'fortran_order': False, 'shape': (3, 1), }`.
fn parse_header_dict(text: &str) -> Result<NpyHeader, String> {
    let mut p = DictParser { s: text.as_bytes(), i: 0 };
    p.expect(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let key = match p.value()? {
            PyVal::Str(k) => k,
            other => return Err(format!("header key is not a string: {other:?}")),
        };
        p.expect(b':')?;
        let val = p.value()?;
        match (key.as_str(), val) {
            ("descr", PyVal::Str(s)) => descr = Some(s),
            ("fortran_order", PyVal::Bool(b)) => fortran = Some(b),
            ("shape", PyVal::Tuple(t)) => shape = Some(t),
            ("descr" | "fortran_order" | "shape", v) => return Err(format!("header '{key}' has bad value {v:?}")),
            _ => {}
        }
        p.ws();
        if !p.eat(b',') {
            p.expect(b'}')?;
            break;
        }
    }
    Ok(NpyHeader {
        descr: descr.ok_or("header has no 'descr'")?,
        fortran_order: fortran.ok_or("header has no 'fortran_order'")?,
        shape: shape.ok_or("header has no 'shape'")?,
    })
}

struct DictParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl DictParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("header: expected '{}' at byte {}", c as char, self.i))
        }
    }
    fn int(&mut self) -> Result<usize, String> {
        self.ws();
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
            self.i += 1;
        }
        let digits = std::str::from_utf8(&self.s[start..self.i]).map_err(|_| "header: bad integer")?;
        let v = digits.parse::<usize>().map_err(|_| format!("header: bad integer at byte {start}"))?;
        // numpy may write 3L in old Python-2 files
        if self.s.get(self.i) == Some(&b'L') {
            self.i += 1;
        }
        Ok(v)
    }
    fn value(&mut self) -> Result<PyVal, String> {
        self.ws();
        match self.s.get(self.i) {
            Some(&q @ (b'\'' | b'"')) => {
                let start = self.i + 1;
                let end = self.s[start..].iter().position(|&c| c == q).ok_or("header: unterminated string")?;
                self.i = start + end + 1;
                let s = std::str::from_utf8(&self.s[start..start + end]).map_err(|_| "header: bad string")?;
                Ok(PyVal::Str(s.to_string()))
            }
            Some(b'(') => {
                self.i += 1;
                let mut t = Vec::new();
                loop {
                    if self.eat(b')') {
                        break;
                    }
                    t.push(self.int()?);
                    if !self.eat(b',') {
                        self.expect(b')')?;
                        break;
                    }
                }
                Ok(PyVal::Tuple(t))
            }
            Some(b'T') if self.s[self.i..].starts_with(b"True") => {
                self.i += 4;
                Ok(PyVal::Bool(true))
            }
            Some(b'F') if self.s[self.i..].starts_with(b"False") => {
                self.i += 5;
                Ok(PyVal::Bool(false))
            }
            Some(c) if c.is_ascii_digit() => Ok(PyVal::Int(self.int()?)),
            _ => Err(format!("header: unexpected input at byte {}", self.i)),
        }
    }
}

/// An integer dtype: signedness, byte width, byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IntType {
    signed: bool,
    size: usize,
    big_endian: bool,
}

fn parse_int_dtype(descr: &str) -> Option<IntType> {
    let b = descr.as_bytes();
    let (order, rest) = match b.first() {
        Some(&c @ (b'<' | b'>' | b'|' | b'=')) => (c, &b[1..]),
        _ => (b'=', b),
    };
    let (&kind, digits) = rest.split_first()?;
    let size: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    if !matches!(kind, b'i' | b'u') || ![1, 2, 4, 8].contains(&size) || (order == b'|' && size != 1) {
        return None;
    }
    Some(IntType { signed: kind == b'i', size, big_endian: order == b'>' && size > 1 })
}

fn decode_int(t: IntType, b: &[u8]) -> i64 {
    let mut buf = [0u8; 8];
    if t.big_endian {
        for (k, &x) in b.iter().rev().enumerate() {
            buf[k] = x;
        }
    } else {
        buf[..b.len()].copy_from_slice(b);
    }
    let raw = u64::from_le_bytes(buf);
    if t.signed {
        let shift = 64 - 8 * t.size as u32;
        ((raw << shift) as i64) >> shift
    } else {
        i64::try_from(raw).unwrap_or(i64::MAX)
    }
}

struct Ctx<'a> {
    path: &'a Path,
    array: &'a str,
}

impl Ctx<'_> {
    fn npy(&self, msg: impl Into<String>) -> DataError {
        DataError::Npy { path: self.path.to_path_buf(), array: self.array.to_string(), msg: msg.into() }
    }
    fn shape(&self, shape: &[usize], expected: &str) -> DataError {
        DataError::Shape {
            path: self.path.to_path_buf(),
            array: self.array.to_string(),
            shape: shape.to_vec(),
            expected: expected.to_string(),
        }
    }
}

fn read_labels<R: Read>(r: &mut R, ctx: &Ctx) -> Result<Vec<i64>, DataError> {
    let h = parse_npy_header(r).map_err(|m| ctx.npy(m))?;
    let t = parse_int_dtype(&h.descr).ok_or_else(|| DataError::Dtype {
        path: ctx.path.to_path_buf(),
        array: ctx.array.to_string(),
        dtype: h.descr.clone(),
        expected: "an integer dtype (|u1, <i2, <i4, <i8, <u2, ...)".into(),
    })?;
    let n = match h.shape.as_slice() {
        [n] | [n, 1] => *n,
        _ => return Err(ctx.shape(&h.shape, "(N,) or (N, 1)")),
    };
    let bytes = n.checked_mul(t.size).ok_or_else(|| ctx.npy("label count overflows"))?;
    let mut data = Vec::new();
    r.take(bytes as u64).read_to_end(&mut data).map_err(|e| ctx.npy(format!("cannot read labels: {e}")))?;
    if data.len() != bytes {
        return Err(ctx.npy(format!("truncated: {} labels declared, data holds {}", n, data.len() / t.size)));
    }
    Ok(data.chunks_exact(t.size).map(|c| decode_int(t, c)).collect())
}

/// Reads the image header and returns `(n, h, w)`.
fn read_image_header<R: Read>(r: &mut R, ctx: &Ctx) -> Result<(usize, usize, usize), DataError> {
    let h = parse_npy_header(r).map_err(|m| ctx.npy(m))?;
    if !matches!(h.descr.as_str(), "|u1" | "<u1" | ">u1" | "=u1" | "u1") {
        return Err(DataError::Dtype {
            path: ctx.path.to_path_buf(),
            array: ctx.array.to_string(),
            dtype: h.descr,
            expected: "uint8 ('|u1')".into(),
        });
    }
    let (n, hh, ww) = match h.shape.as_slice() {
        [n, hh, ww, 3] => (*n, *hh, *ww),
        [_, _, _] => return Err(ctx.shape(&h.shape, "(N, H, W, 3): this is a 1-channel (grayscale) array")),
        [_, _, _, c] => return Err(ctx.shape(&h.shape, &format!("(N, H, W, 3): got {c} channels"))),
        _ => return Err(ctx.shape(&h.shape, "(N, H, W, 3)")),
    };
    if h.fortran_order && n > 0 {
        return Err(ctx.npy("Fortran-order (column-major) image arrays are not supported; save with C order"));
    }
    if n > 0 && (hh == 0 || ww == 0 || hh.saturating_mul(ww).saturating_mul(3) > MAX_IMAGE_BYTES) {
        return Err(ctx.shape(&h.shape, "(N, H, W, 3) with 0 < H*W*3 <= 256 MiB"));
    }
    Ok((n, hh, ww))
}

fn read_images<R: Read>(r: &mut R, ctx: &Ctx, n: usize, hh: usize, ww: usize, size: u32) -> Result<Vec<u8>, DataError> {
    let per_in = hh * ww * 3;
    let per_out = size as usize * size as usize * 3;
    let mut out = Vec::with_capacity(n.saturating_mul(per_out).min(1 << 24));
    let mut k = 0;
    while k < n {
        let m = BATCH.min(n - k);
        let mut raw = Vec::new();
        let want = m * per_in;
        r.take(want as u64).read_to_end(&mut raw).map_err(|e| ctx.npy(format!("cannot read image data: {e}")))?;
        if raw.len() != want {
            return Err(ctx.npy(format!(
                "truncated: {n} images of {hh}x{ww}x3 declared, data ends inside image {}",
                k + raw.len() / per_in
            )));
        }
        if hh == size as usize && ww == size as usize {
            out.extend_from_slice(&raw);
        } else {
            let chunks: Vec<&[u8]> = raw.chunks_exact(per_in).collect();
            let resized = par_map(&chunks, |c| {
                RgbImage::from_raw(ww as u32, hh as u32, c.to_vec()).map(|img| fit_square(img, size).into_raw())
            });
            for img in resized {
                out.extend_from_slice(&img.ok_or_else(|| ctx.npy("image buffer size mismatch"))?);
            }
        }
        k += m;
    }
    Ok(out)
}

/// Reads all splits. `size = None` keeps the native (square-cropped) size.
pub(crate) fn read_npz<R: Read + Seek>(reader: R, path: &Path, size: Option<u32>) -> Result<Vec<NpzSplit>, DataError> {
    let zip_err = |e: zip::result::ZipError| DataError::Zip { path: path.to_path_buf(), msg: e.to_string() };
    let mut zip = zip::ZipArchive::new(reader).map_err(zip_err)?;
    let names: Vec<String> = zip.file_names().map(String::from).collect();
    let find = |key: &str| names.iter().find(|n| n.strip_suffix(".npy").unwrap_or(n) == key).cloned();
    let found = || {
        let mut f: Vec<&str> = names.iter().map(|n| n.strip_suffix(".npy").unwrap_or(n)).collect();
        f.sort_unstable();
        f.join(", ")
    };
    let mut out = Vec::new();
    for split in ["train", "val", "test"] {
        let (ik, lk) = (format!("{split}_images"), format!("{split}_labels"));
        let (iname, lname) = match (find(&ik), find(&lk)) {
            (None, None) if split != "train" => continue,
            (Some(i), Some(l)) => (i, l),
            (None, _) => return Err(DataError::MissingKey { path: path.to_path_buf(), key: ik, found: found() }),
            (_, None) => return Err(DataError::MissingKey { path: path.to_path_buf(), key: lk, found: found() }),
        };
        let labels = {
            let mut f = zip.by_name(&lname).map_err(zip_err)?;
            read_labels(&mut f, &Ctx { path, array: &lk })?
        };
        let mut f = zip.by_name(&iname).map_err(zip_err)?;
        let ctx = Ctx { path, array: &ik };
        let (n, hh, ww) = read_image_header(&mut f, &ctx)?;
        if n != labels.len() {
            return Err(DataError::LengthMismatch {
                path: path.to_path_buf(),
                split: split.into(),
                images: n,
                labels: labels.len(),
            });
        }
        let target = size.unwrap_or(hh.min(ww).min(u32::MAX as usize) as u32).max(1);
        let images = read_images(&mut f, &ctx, n, hh, ww, target)?;
        out.push(NpzSplit { name: split.into(), size: target, images, labels });
    }
    Ok(out)
}

fn to_dataset(s: NpzSplit, classes: &[String], path: &Path) -> Result<Dataset, DataError> {
    let mut labels = Vec::with_capacity(s.labels.len());
    for (index, &l) in s.labels.iter().enumerate() {
        if l < 0 || l as u64 >= classes.len() as u64 {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                what: format!("{}_labels", s.name),
                index,
                label: l,
                num_classes: classes.len(),
            });
        }
        labels.push(l as u32);
    }
    Dataset::new(s.size, classes.to_vec(), s.images, labels)
}

/// Loads an npz file as [`Splits`] (see module docs). Class names: `opts.classes`, else the NCT names when every
/// label is < 9 (PathMNIST), else `class_0 …`.
pub(crate) fn load_npz_file(path: &Path, opts: &LoadOptions) -> Result<Splits, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, "cannot open npz file", e))?;
    let splits = read_npz(std::io::BufReader::new(file), path, Some(opts.size))?;
    let max = splits.iter().flat_map(|s| s.labels.iter().copied()).max().unwrap_or(0);
    let classes: Vec<String> = match &opts.classes {
        Some(c) => c.clone(),
        None if max < NCT_CLASSES.len() as i64 => NCT_CLASSES.iter().map(|s| s.to_string()).collect(),
        None if max < 100_000 => (0..=max).map(|k| format!("class_{k}")).collect(),
        None => {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                what: "labels".into(),
                index: 0,
                label: max,
                num_classes: 100_000,
            })
        }
    };
    let mut train = None;
    let (mut val, mut test) = (None, None);
    for s in splits {
        let name = s.name.clone();
        let ds = to_dataset(s, &classes, path)?;
        match name.as_str() {
            "train" => train = Some(ds),
            "val" => val = Some(ds),
            _ => test = Some(ds),
        }
    }
    let train = train.ok_or_else(|| DataError::MissingKey {
        path: path.to_path_buf(),
        key: "train_images".into(),
        found: String::new(),
    })?;
    Ok(complete_splits(train, val, test, opts, Vec::new()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::test_util::*;
    use super::super::{load, DataSource};
    use super::*;
    use std::io::Write;

    /// Builds a `.npy` v1 file.
    pub fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let shape_s = if shape.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_s}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    pub fn npz(entries: &[(&str, Vec<u8>)], deflate: bool) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let method = if deflate { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
        let opt = zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, data) in entries {
            w.start_file(format!("{name}.npy"), opt).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    pub fn labels_i64(l: &[i64]) -> Vec<u8> {
        l.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// A MedMNIST-like npz from a dataset, all three splits, labels as `(N,1) <i8`.
    pub fn medmnist(ds: &Dataset, deflate: bool) -> Vec<u8> {
        let s = ds.size as usize;
        let n = ds.len();
        let (a, b) = (n / 2, 3 * n / 4);
        let part = |r: std::ops::Range<usize>| {
            let imgs = npy("|u1", &[r.len(), s, s, 3], &ds.images[r.start * s * s * 3..r.end * s * s * 3]);
            let labels: Vec<i64> = ds.labels[r.clone()].iter().map(|&l| l as i64).collect();
            (imgs, npy("<i8", &[r.len(), 1], &labels_i64(&labels)))
        };
        let (ti, tl) = part(0..a);
        let (vi, vl) = part(a..b);
        let (si, sl) = part(b..n);
        npz(
            &[
                ("train_images", ti),
                ("train_labels", tl),
                ("val_images", vi),
                ("val_labels", vl),
                ("test_images", si),
                ("test_labels", sl),
            ],
            deflate,
        )
    }

    #[test]
    fn header_parsing() {
        let mut c = std::io::Cursor::new(npy("<i4", &[7, 1], &[]));
        let h = parse_npy_header(&mut c).unwrap();
        assert_eq!(h, NpyHeader { descr: "<i4".into(), fortran_order: false, shape: vec![7, 1] });
        let h = parse_header_dict("{\"shape\": (3,), \"fortran_order\": True, \"descr\": \"|u1\"}").unwrap();
        assert_eq!(h.shape, vec![3]);
        assert!(h.fortran_order);
        assert_eq!(
            parse_header_dict("{'descr': '<f4', 'fortran_order': False, 'shape': ()}").unwrap().shape,
            Vec::<usize>::new()
        );
        for bad in ["", "{", "{'descr': 1}", "{'descr': '<i8', 'shape': (1,)}", "{'shape': (1,2", "{'descr': 'x}"] {
            assert!(parse_header_dict(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn int_dtypes() {
        for (d, bytes, want) in [
            ("|u1", vec![200u8], 200i64),
            ("|i1", vec![0xff], -1),
            ("<u2", vec![0x01, 0x02], 0x0201),
            (">u2", vec![0x01, 0x02], 0x0102),
            ("<i2", vec![0xfe, 0xff], -2),
            ("<i4", vec![5, 0, 0, 0], 5),
            (">i8", vec![0, 0, 0, 0, 0, 0, 0, 9], 9),
            ("<u8", vec![0xff; 8], i64::MAX),
        ] {
            let t = parse_int_dtype(d).unwrap();
            assert_eq!(decode_int(t, &bytes), want, "{d}");
        }
        for bad in ["<f4", "|u2", "<i3", "<b1", "", "<", "O"] {
            assert!(parse_int_dtype(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn npz_roundtrip_stored_and_deflated() {
        let dir = tempfile::tempdir().unwrap();
        let ds = pattern_dataset(4, &["A", "B", "C"], 8);
        for deflate in [false, true] {
            let path = dir.path().join(format!("d{deflate}.npz"));
            std::fs::write(&path, medmnist(&ds, deflate)).unwrap();
            let s = load(&DataSource::Npz(path.clone()), &opts(8)).unwrap();
            assert_eq!(s.train.classes, NCT_CLASSES.map(String::from).to_vec()); // labels < 9 => PathMNIST names
            assert_eq!((s.train.len(), s.val.len(), s.test.len()), (6, 3, 3));
            let mut whole = s.train.clone();
            whole.extend_from(&s.val).unwrap();
            whole.extend_from(&s.test).unwrap();
            assert_eq!(whole.images, ds.images);
            assert_eq!(whole.labels, ds.labels);
            // resized on load
            let small = load(&DataSource::Npz(path), &opts(4)).unwrap();
            assert_eq!(small.train.size, 4);
            assert_eq!(small.train.images.len(), 6 * 4 * 4 * 3);
        }
        let parsed = parse_npz_bytes(&medmnist(&ds, true)).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0].labels, vec![0, 0, 0, 0, 1, 1]);
    }

    #[test]
    fn npz_train_only_is_split_and_label_dtypes_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let ds = pattern_dataset(10, &["A", "B"], 4);
        for (descr, lab) in [
            ("|u1", ds.labels.iter().map(|&l| l as u8).collect::<Vec<u8>>()),
            ("<i2", ds.labels.iter().flat_map(|&l| (l as i16).to_le_bytes()).collect()),
            ("<u4", ds.labels.iter().flat_map(|&l| l.to_le_bytes()).collect()),
        ] {
            let bytes = npz(
                &[("train_images", npy("|u1", &[20, 4, 4, 3], &ds.images)), ("train_labels", npy(descr, &[20], &lab))],
                true,
            );
            let path = dir.path().join("t.npz");
            std::fs::write(&path, bytes).unwrap();
            let o = LoadOptions { classes: Some(vec!["A".into(), "B".into()]), ..opts(4) };
            let s = load(&DataSource::Npz(path), &o).unwrap();
            assert_eq!((s.train.len(), s.val.len(), s.test.len()), (12, 4, 4), "{descr}");
            assert_eq!(s.test.class_counts(), vec![2, 2]);
        }
    }

    fn npz_err(entries: &[(&str, Vec<u8>)], o: &LoadOptions) -> DataError {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.npz");
        std::fs::write(&path, npz(entries, false)).unwrap();
        let e = load(&DataSource::Npz(path), o).unwrap_err();
        assert!(e.to_string().contains("bad.npz"), "error does not name the file: {e}");
        e
    }

    #[test]
    fn npz_errors() {
        let img = |n: usize| npy("|u1", &[n, 2, 2, 3], &vec![7u8; n * 12]);
        let lab = |l: &[i64]| npy("<i8", &[l.len(), 1], &labels_i64(l));
        let o = opts(2);
        let e = npz_err(&[("train_images", img(2))], &o);
        assert!(matches!(e, DataError::MissingKey { ref key, .. } if key == "train_labels"), "{e}");
        let e = npz_err(&[("val_images", img(2)), ("val_labels", lab(&[0, 1]))], &o);
        assert!(matches!(e, DataError::MissingKey { ref key, .. } if key == "train_images"), "{e}");
        let e = npz_err(&[("train_images", img(3)), ("train_labels", lab(&[0, 1]))], &o);
        assert!(matches!(e, DataError::LengthMismatch { images: 3, labels: 2, .. }), "{e}");
        let two = LoadOptions { classes: Some(vec!["A".into(), "B".into()]), ..opts(2) };
        let e = npz_err(&[("train_images", img(2)), ("train_labels", lab(&[0, 2]))], &two);
        assert!(matches!(e, DataError::LabelOutOfRange { label: 2, index: 1, num_classes: 2, .. }), "{e}");
        let e = npz_err(&[("train_images", img(2)), ("train_labels", lab(&[0, 9]))], &two);
        assert!(matches!(e, DataError::LabelOutOfRange { label: 9, index: 1, .. }), "{e}");
        let e = npz_err(&[("train_images", img(2)), ("train_labels", lab(&[0, -1]))], &o);
        assert!(matches!(e, DataError::LabelOutOfRange { label: -1, .. }), "{e}");
        let gray = npy("|u1", &[2, 2, 2], &[0u8; 8]);
        let e = npz_err(&[("train_images", gray), ("train_labels", lab(&[0, 1]))], &o);
        assert!(matches!(e, DataError::Shape { .. }) && e.to_string().contains("grayscale"), "{e}");
        let rgba = npy("|u1", &[2, 2, 2, 4], &[0u8; 32]);
        let e = npz_err(&[("train_images", rgba), ("train_labels", lab(&[0, 1]))], &o);
        assert!(matches!(e, DataError::Shape { .. }), "{e}");
        let f32s = npy("<f4", &[2, 2, 2, 3], &[0u8; 96]);
        let e = npz_err(&[("train_images", f32s), ("train_labels", lab(&[0, 1]))], &o);
        assert!(matches!(e, DataError::Dtype { ref dtype, .. } if dtype == "<f4"), "{e}");
        let float_labels = npy("<f8", &[2, 1], &[0u8; 16]);
        let e = npz_err(&[("train_images", img(2)), ("train_labels", float_labels)], &o);
        assert!(matches!(e, DataError::Dtype { .. }), "{e}");
        let multi = npy("<i8", &[2, 2], &[0u8; 32]);
        let e = npz_err(&[("train_images", img(2)), ("train_labels", multi)], &o);
        assert!(matches!(e, DataError::Shape { .. }), "{e}");
        let mut trunc = img(2);
        trunc.truncate(trunc.len() - 5);
        let e = npz_err(&[("train_images", trunc), ("train_labels", lab(&[0, 1]))], &o);
        assert!(matches!(e, DataError::Npy { .. }) && e.to_string().contains("truncated"), "{e}");
        let mut trunc_header = img(2);
        trunc_header.truncate(20);
        let e = npz_err(&[("train_images", trunc_header), ("train_labels", lab(&[0, 1]))], &o);
        assert!(matches!(e, DataError::Npy { .. }), "{e}");
        let e = npz_err(&[("train_images", b"not numpy".to_vec()), ("train_labels", lab(&[0, 1]))], &o);
        assert!(e.to_string().contains("magic"), "{e}");
        // not a zip at all
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.npz");
        std::fs::write(&path, b"hello").unwrap();
        assert!(matches!(load(&DataSource::Npz(path), &o), Err(DataError::Zip { .. })));
        let e = load(&DataSource::Npz(dir.path().join("missing.npz")), &o).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }) && e.to_string().contains("missing.npz"), "{e}");
    }
}
