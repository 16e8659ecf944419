//! Bounded, seeded stand-in for the cargo-fuzz targets in `fuzz/`: random and mutated byte strings fed to the
//! npz, npy-header and CSV parsers must give `Ok` or an error, never a panic.

use super::npz::tests::{labels_i64, medmnist, npy, npz};
use super::test_util::pattern_dataset;
use super::{parse_mhist_csv, parse_npy_header, parse_npz_bytes};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Iterations per test: 2000, or `HISTOFED_FUZZ_ITERS` for a longer local campaign.
fn iters() -> usize {
    std::env::var("HISTOFED_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}

fn mutate(rng: &mut ChaCha8Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.random_range(1..6) {
        match rng.random_range(0..6) {
            0 if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                v[i] = rng.random();
            }
            2 => {
                let cut = rng.random_range(0..=v.len());
                v.truncate(cut);
            }
            3 => {
                let i = rng.random_range(0..=v.len());
                let n = rng.random_range(1..16);
                for _ in 0..n {
                    v.insert(i, rng.random());
                }
            }
            4 if v.len() > 2 => {
                let a = rng.random_range(0..v.len());
                let b = rng.random_range(a..v.len());
                v.drain(a..b.min(a + 32));
            }
            _ => {
                // interesting integers where a length or shape might live
                if v.len() >= 4 {
                    let i = rng.random_range(0..v.len() - 3);
                    let x: u32 = [0, 1, 0xff, 0xffff, 0x7fff_ffff, 0xffff_ffff][rng.random_range(0..6)];
                    v[i..i + 4].copy_from_slice(&x.to_le_bytes());
                }
            }
        }
    }
    v
}

#[test]
fn npz_parser_never_panics() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xF022);
    let ds = pattern_dataset(2, &["A", "B"], 4);
    let seeds = [
        medmnist(&ds, false),
        medmnist(&ds, true),
        npz(
            &[("train_images", npy("|u1", &[1, 3, 2, 3], &[9; 18])), ("train_labels", npy("<i2", &[1], &[1, 0]))],
            false,
        ),
        npz(
            &[
                ("train_images", npy("|u1", &[2, 2, 2, 3], &[1; 24])),
                ("train_labels", npy("<i8", &[2, 1], &labels_i64(&[0, 1]))),
            ],
            true,
        ),
    ];
    let mut ok = 0;
    for i in 0..iters() {
        let input: Vec<u8> = if i % 5 == 0 {
            (0..rng.random_range(0..300)).map(|_| rng.random()).collect()
        } else {
            mutate(&mut rng, &seeds[i % seeds.len()])
        };
        match parse_npz_bytes(&input) {
            Ok(splits) => {
                ok += 1;
                for s in splits {
                    assert_eq!(s.images.len(), s.labels.len() * (s.size as usize).pow(2) * 3);
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    assert!(ok > 0, "no mutated input parsed at all: mutation too aggressive to be useful");
}

#[test]
fn npy_header_parser_never_panics() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x4e50);
    let seed = npy("<i8", &[3, 1], &labels_i64(&[1, 2, 3]));
    for i in 0..iters() {
        let input = if i % 4 == 0 {
            let mut v = b"\x93NUMPY\x01\x00".to_vec();
            v.extend((0..rng.random_range(0..100)).map(|_| rng.random::<u8>()));
            v
        } else {
            mutate(&mut rng, &seed)
        };
        let _ = parse_npy_header(&mut std::io::Cursor::new(&input));
    }
}

#[test]
fn csv_parser_never_panics() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xC5F);
    let seed = "Image Name,Majority Vote Label,Number of Annotators who Selected SSA (Out of 7),Partition\n\
                MHIST_aaa.png,SSA,6,train\nMHIST_aab.png,HP,0,test\n\"MHIST,q.png\",HP,1,train\n";
    let alphabet = b"ab,\"\n\r .-_/\\0123 imagelabelpartitiontrainvaltest\xc3\xa9";
    let mut ok = 0;
    for i in 0..iters() {
        let bytes = if i % 3 == 0 {
            (0..rng.random_range(0..200)).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect()
        } else {
            mutate(&mut rng, seed.as_bytes())
        };
        let text = String::from_utf8_lossy(&bytes);
        match parse_mhist_csv(&text) {
            Ok(rows) => {
                ok += 1;
                assert!(!rows.is_empty());
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    assert!(ok > 0);
}
