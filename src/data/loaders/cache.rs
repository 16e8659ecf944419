//! A compact, checksummed cache of decoded splits.
//!
//! File layout: `CACHE_MAGIC` (8 bytes) | payload length (u64 LE) | SHA-256 of the payload (32 bytes) | payload,
//! payload = JSON metadata length (u64 LE) | JSON metadata | labels (u32 LE, train, val, test) | images (same order).
//! The file name carries a hash of the source path, its file list with sizes and mtimes, and every option that
//! changes the result; the metadata repeats the full key. Anything that does not check out is rebuilt.

use super::{LoadInfo, LoadOptions, Splits};
use crate::data::{DataError, Dataset};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// First bytes of every cache file.
pub const CACHE_MAGIC: &[u8; 8] = b"HFDCACH1";
const FORMAT_VERSION: u32 = 1;

/// What the cache did during a load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// No `cache_dir` (or a synthetic source).
    Disabled,
    /// Read from the cache; nothing was decoded.
    Hit,
    /// No cache file yet; decoded and written.
    Miss,
    /// A cache file existed but failed its checks (reason given); decoded and rewritten.
    Rebuilt(String),
}

/// Identity of one input file: relative path, length, modification time.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct FileStamp {
    pub path: String,
    pub len: u64,
    pub mtime_ns: u128,
}

pub(crate) fn stamp(path: &Path, rel: String) -> Result<FileStamp, DataError> {
    let md = std::fs::metadata(path).map_err(|e| DataError::io(path, "cannot stat file", e))?;
    let mtime_ns = md.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    Ok(FileStamp { path: rel, len: md.len(), mtime_ns })
}

pub(crate) fn file_fingerprint(path: &Path) -> Result<Vec<FileStamp>, DataError> {
    Ok(vec![stamp(path, String::new())?])
}

#[derive(Serialize)]
struct KeyInput<'a> {
    version: u32,
    kind: &'a str,
    source: String,
    files: &'a [FileStamp],
    size: u32,
    skip_bad: bool,
    seed: u64,
    classes: &'a Option<Vec<String>>,
    val_fraction: f64,
    test_fraction: f64,
    /// Left out when unset, so that the keys of caches written before it existed still match.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_images: Option<usize>,
}

fn cache_key(opts: &LoadOptions, kind: &str, source: &Path, files: &[FileStamp]) -> Result<String, DataError> {
    let source = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
    let input = KeyInput {
        version: FORMAT_VERSION,
        kind,
        source: source.to_string_lossy().into_owned(),
        files,
        size: opts.size,
        skip_bad: opts.skip_bad,
        seed: opts.seed,
        classes: &opts.classes,
        val_fraction: opts.val_fraction,
        test_fraction: opts.test_fraction,
        max_images: opts.max_images,
    };
    let json = serde_json::to_vec(&input).map_err(|e| DataError::Config(format!("cannot hash cache key: {e}")))?;
    Ok(hex::encode(Sha256::digest(&json)))
}

#[derive(Serialize, Deserialize)]
struct Meta {
    key: String,
    size: u32,
    classes: Vec<String>,
    counts: [usize; 3],
    skipped: Vec<(PathBuf, String)>,
}

/// Runs `build` unless a valid cache file for this source and options exists; writes the cache after building.
pub(crate) fn with_cache(
    opts: &LoadOptions,
    kind: &str,
    source: &Path,
    files: &[FileStamp],
    build: impl FnOnce() -> Result<Splits, DataError>,
) -> Result<(Splits, LoadInfo), DataError> {
    let Some(dir) = &opts.cache_dir else {
        let info = LoadInfo { cache: CacheStatus::Disabled, cache_path: None, cache_warning: None };
        return Ok((build()?, info));
    };
    let key = cache_key(opts, kind, source, files)?;
    let path = dir.join(format!("{kind}-{}.hfcache", &key[..32]));
    let status = match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => CacheStatus::Miss,
        Err(e) => CacheStatus::Rebuilt(format!("unreadable: {e}")),
        Ok(bytes) => match decode_cache(&bytes, &key, &path) {
            Ok(splits) => {
                let info = LoadInfo { cache: CacheStatus::Hit, cache_path: Some(path), cache_warning: None };
                return Ok((splits, info));
            }
            Err(e) => CacheStatus::Rebuilt(e.to_string()),
        },
    };
    let splits = build()?;
    let cache_warning = write_cache(&path, &key, &splits).err().map(|e| e.to_string());
    Ok((splits, LoadInfo { cache: status, cache_path: Some(path), cache_warning }))
}

fn encode_cache(key: &str, s: &Splits) -> Result<Vec<u8>, DataError> {
    let sets = [&s.train, &s.val, &s.test];
    let meta = Meta {
        key: key.to_string(),
        size: s.train.size,
        classes: s.train.classes.clone(),
        counts: sets.map(|d| d.len()),
        skipped: s.skipped.clone(),
    };
    let meta =
        serde_json::to_vec(&meta).map_err(|e| DataError::Config(format!("cannot encode cache metadata: {e}")))?;
    let mut payload =
        Vec::with_capacity(16 + meta.len() + sets.iter().map(|d| d.images.len() + 4 * d.len()).sum::<usize>());
    payload.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    payload.extend_from_slice(&meta);
    for d in sets {
        for l in &d.labels {
            payload.extend_from_slice(&l.to_le_bytes());
        }
    }
    for d in sets {
        payload.extend_from_slice(&d.images);
    }
    let mut out = Vec::with_capacity(48 + payload.len());
    out.extend_from_slice(CACHE_MAGIC);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&payload));
    out.extend_from_slice(&payload);
    Ok(out)
}

fn write_cache(path: &Path, key: &str, s: &Splits) -> Result<(), DataError> {
    let bytes = encode_cache(key, s)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, "cannot create cache directory", e))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| DataError::io(&tmp, "cannot create cache file", e))?;
    f.write_all(&bytes).map_err(|e| DataError::io(&tmp, "cannot write cache file", e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DataError::io(path, "cannot move cache file into place", e)
    })
}

fn decode_cache(bytes: &[u8], key: &str, path: &Path) -> Result<Splits, DataError> {
    let bad = |msg: &str| DataError::CacheCorrupt { path: path.to_path_buf(), msg: msg.to_string() };
    if bytes.len() < 48 || &bytes[..8] != CACHE_MAGIC {
        return Err(bad("bad magic / too short"));
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| bad("header"))?) as usize;
    let payload = &bytes[48..];
    if payload.len() != len {
        return Err(bad("length mismatch (truncated?)"));
    }
    if Sha256::digest(payload).as_slice() != &bytes[16..48] {
        return Err(bad("checksum mismatch"));
    }
    let meta_len =
        u64::from_le_bytes(payload.get(..8).ok_or_else(|| bad("short"))?.try_into().map_err(|_| bad("meta"))?) as usize;
    let meta_bytes = payload.get(8..8usize.saturating_add(meta_len)).ok_or_else(|| bad("metadata truncated"))?;
    let meta: Meta = serde_json::from_slice(meta_bytes).map_err(|e| bad(&format!("metadata: {e}")))?;
    if meta.key != key {
        return Err(bad("key mismatch"));
    }
    let per = meta.size as usize * meta.size as usize * 3;
    let total = meta.counts.iter().try_fold(0usize, |a, &n| a.checked_add(n)).ok_or_else(|| bad("count overflow"))?;
    let mut pos = 8 + meta_len;
    let mut labels = Vec::new();
    for &n in &meta.counts {
        let end = n.checked_mul(4).and_then(|b| b.checked_add(pos)).ok_or_else(|| bad("count overflow"))?;
        let raw = payload.get(pos..end).ok_or_else(|| bad("labels truncated"))?;
        labels.push(raw.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<_>>());
        pos = end;
    }
    if payload.len() - pos != total.checked_mul(per).ok_or_else(|| bad("size overflow"))? {
        return Err(bad("image data has the wrong length"));
    }
    let mut sets = Vec::new();
    for (n, labels) in meta.counts.iter().zip(labels) {
        let images = payload[pos..pos + n * per].to_vec();
        pos += n * per;
        let ds = Dataset::new(meta.size, meta.classes.clone(), images, labels).map_err(|e| bad(&e.to_string()))?;
        sets.push(ds);
    }
    let mut it = sets.into_iter();
    match (it.next(), it.next(), it.next()) {
        (Some(train), Some(val), Some(test)) => Ok(Splits { train, val, test, skipped: meta.skipped }),
        _ => Err(bad("missing split")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    #[test]
    fn encode_decode_roundtrip_and_corruption() {
        let ds = pattern_dataset(4, &["A", "B"], 4);
        let s = super::super::split_dataset(&ds, &opts(4), vec![(PathBuf::from("x.png"), "bad".into())]);
        let bytes = encode_cache("k", &s).unwrap();
        let p = Path::new("c.hfcache");
        assert_eq!(decode_cache(&bytes, "k", p).unwrap(), s);
        assert!(decode_cache(&bytes, "other", p).is_err());
        for i in [0, 10, 20, 60, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(matches!(decode_cache(&b, "k", p), Err(DataError::CacheCorrupt { .. })), "flip at {i}");
        }
        assert!(decode_cache(&bytes[..bytes.len() - 3], "k", p).is_err());
        assert!(decode_cache(&[], "k", p).is_err());
    }
}
