//! Procedural H&E-like tissue tiles, nine classes named and ordered like NCT-CRC-HE-100K.
//!
//! Each tile is first drawn as two per-pixel stain *densities* — hematoxylin `h` (nuclei, blue/purple) and eosin
//! `e` (cytoplasm, collagen, muscle, pink) — and then coloured with the Beer–Lambert law
//! `RGB = I0 · exp(−(h·H + e·E))` using the Macenko reference stain vectors and `I0 = 240`. Morphology is
//! class-specific (fat cells, lymphocyte sheets, glands, fibres…, see `docs/data.md`), with per-image randomness
//! in position, density, orientation, size and stain intensity, and a little deliberate overlap between classes
//! (lymphocytes in stroma, stroma in tumour, debris in mucus…) so that the classes are learnable but not trivial.
//!
//! Determinism: every image has its own ChaCha8 stream derived from `(seed, class, instance)`, so the same config
//! gives byte-identical output whatever the thread count, and a larger `per_class` extends a smaller one.
//! All lengths are expressed in "64-px units" and scaled by `size / 64`, so any size ≥ 16 renders the same tissue.
//!
//! Files: [`stain`] (colour), [`difficulty`], [`canvas`] (densities, noise, nuclei), [`tissue`] (the nine painters);
//! this file draws a tile (class, neighbouring tissue, colour) and makes datasets.

mod canvas;
mod difficulty;
mod stain;
mod tissue;

pub use difficulty::{Difficulty, HARD_GRAIN, HARD_MIX_PROBABILITY, HARD_STAIN_STRENGTH};
pub use stain::{StainShift, E_REF, H_REF, I0, MAX_CONC};

use crate::data::{DataError, Dataset, NCT_CLASSES};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::f32::consts::TAU;

use canvas::*;
use stain::*;
use tissue::*;

/// Configuration of [`generate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// Number of classes, 2..=9; takes the first N of [`NCT_CLASSES`] order.
    pub num_classes: usize,
    /// Images per class (the output holds exactly this many of each class).
    pub per_class: usize,
    /// Side length in pixels (16..=1024; sizes below 16 render but lose most morphology).
    pub size: u32,
    /// Seed; the same config gives byte-identical images.
    pub seed: u64,
    /// Stain / scanner shift applied to every image (a hospital's "house style").
    pub stain: StainShift,
    /// How hard the classes are to tell apart ([`Difficulty`]); `Standard` is the data every other part uses.
    #[serde(default)]
    pub difficulty: Difficulty,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            num_classes: 9,
            per_class: 100,
            size: 64,
            seed: 0,
            stain: StainShift::default(),
            difficulty: Difficulty::Standard,
        }
    }
}

/// Generates `num_classes * per_class` images, interleaved by class (image `j` has label `j % num_classes`).
pub fn generate(cfg: &SynthConfig) -> Result<Dataset, DataError> {
    if !(2..=NCT_CLASSES.len()).contains(&cfg.num_classes) {
        return Err(DataError::Config(format!("synthetic num_classes must be 2..=9, got {}", cfg.num_classes)));
    }
    if !(8..=1024).contains(&cfg.size) {
        return Err(DataError::Config(format!("synthetic image size must be 8..=1024, got {}", cfg.size)));
    }
    if !cfg.stain.is_finite() {
        return Err(DataError::Config(format!("stain shift has non-finite values: {:?}", cfg.stain)));
    }
    let n = cfg
        .per_class
        .checked_mul(cfg.num_classes)
        .filter(|&n| n.checked_mul(cfg.size as usize * cfg.size as usize * 3).is_some_and(|b| b <= 1 << 36))
        .ok_or_else(|| {
            DataError::Config(format!(
                "synthetic dataset too large: {} x {} images of {} px",
                cfg.per_class, cfg.num_classes, cfg.size
            ))
        })?;
    let bytes = cfg.size as usize * cfg.size as usize * 3;
    let mut images = vec![0u8; n * bytes];
    let labels: Vec<u32> = (0..n).map(|j| (j % cfg.num_classes) as u32).collect();
    let threads = std::thread::available_parallelism().map(|t| t.get()).unwrap_or(1).clamp(1, 16);
    let per_thread = n.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (t, chunk) in images.chunks_mut(per_thread * bytes).enumerate() {
            scope.spawn(move || {
                for (k, out) in chunk.chunks_exact_mut(bytes).enumerate() {
                    let j = t * per_thread + k;
                    let class = j % cfg.num_classes;
                    let instance = j / cfg.num_classes;
                    render_tile_at(class, instance as u64, cfg.size, cfg.seed, &cfg.stain, cfg.difficulty, out);
                }
            });
        }
    });
    let classes = NCT_CLASSES[..cfg.num_classes].iter().map(|s| s.to_string()).collect();
    Ok(Dataset { size: cfg.size, classes, images, labels })
}

/// Renders one tile of class `class` (index into [`NCT_CLASSES`]) into `out` (`size*size*3` HWC bytes).
/// Deterministic in `(class, instance, size, seed, stain)`. `class >= 9` draws TUM; `out` shorter than
/// `size*size*3` is filled as far as it goes.
pub fn render_tile(class: usize, instance: u64, size: u32, seed: u64, stain: &StainShift, out: &mut [u8]) {
    render_tile_at(class, instance, size, seed, stain, Difficulty::Standard, out)
}

/// [`render_tile`] at a [`Difficulty`]; `Standard` gives exactly `render_tile`'s bytes.
pub fn render_tile_at(
    class: usize,
    instance: u64,
    size: u32,
    seed: u64,
    stain: &StainShift,
    difficulty: Difficulty,
    out: &mut [u8],
) {
    let mut rng = ChaCha8Rng::seed_from_u64(mix64(mix64(seed, class as u64 + 1), instance));
    let mut c = Canvas::new(size as usize);
    draw_class(class, &mut c, &mut rng);
    // Real tiles are rarely pure: with some probability a neighbouring tissue occupies part of the tile
    // (tumour next to stroma, lymphocytes in mucosa, ...). The primary class always keeps the majority.
    if rng.random::<f32>() < difficulty.mix_probability() {
        let neighbours = NEIGHBOURS[class];
        let other = neighbours[rng.random_range(0..neighbours.len())];
        let mut o = Canvas::new(size as usize);
        draw_class(other, &mut o, &mut rng);
        let mask = Noise::new(&mut rng);
        let (lo, hi) = difficulty.mix_cover();
        let cover = rr(&mut rng, lo, hi);
        let angle = rr(&mut rng, 0.0, TAU);
        let (sa, ca) = angle.sin_cos();
        // a soft half-plane boundary, wobbled by noise, leaving roughly `cover` of the tile to the other class
        let offset = 32.0 + (0.5 - cover) * 64.0;
        let inv = 1.0 / c.scale;
        for py in 0..c.n {
            for px in 0..c.n {
                let (x, y) = ((px as f32 + 0.5) * inv, (py as f32 + 0.5) * inv);
                let d = (x - 32.0) * ca + (y - 32.0) * sa + 32.0 + 10.0 * (mask.fbm(x / 12.0, y / 12.0, 2) - 0.5);
                let t = smoothstep(offset - 1.5, offset + 1.5, d);
                let i = py * c.n + px;
                c.h[i] += t * (o.h[i] - c.h[i]);
                c.e[i] += t * (o.e[i] - c.e[i]);
            }
        }
    }
    match difficulty {
        Difficulty::Standard => colourize(&c, stain, difficulty.grain(), &mut rng, out),
        Difficulty::Hard => {
            // Slide-to-slide variation on top of the hospital's own shift, from the tile's own stream.
            let tile = StainShift::for_site(rng.random::<u32>() as usize, HARD_STAIN_STRENGTH, seed);
            let s = StainShift {
                h_log_scale: stain.h_log_scale + tile.h_log_scale,
                e_log_scale: stain.e_log_scale + tile.e_log_scale,
                h_rotation: stain.h_rotation + tile.h_rotation,
                e_rotation: stain.e_rotation + tile.e_rotation,
                brightness: stain.brightness + tile.brightness,
            };
            colourize(&c, &s, difficulty.grain(), &mut rng, out)
        }
    }
}

/// Tissues plausibly found next to each class (indices into [`NCT_CLASSES`]).
const NEIGHBOURS: [&[usize]; 9] = [
    &[1, 7],       // ADI: background, stroma
    &[0, 4, 2],    // BACK: fat, mucus, debris
    &[8, 3, 4],    // DEB: tumour, lymphocytes, mucus
    &[6, 7, 2],    // LYM: mucosa, stroma, debris
    &[8, 1, 2],    // MUC: tumour, background, debris
    &[7, 0],       // MUS: stroma, fat
    &[3, 7, 5],    // NORM: lymphocytes, stroma, muscle
    &[5, 3, 8, 0], // STR: muscle, lymphocytes, tumour, fat
    &[7, 2, 4],    // TUM: stroma, debris, mucus
];

fn draw_class(class: usize, c: &mut Canvas, rng: &mut ChaCha8Rng) {
    match class {
        0 => adipose(c, rng),
        1 => background(c, rng),
        2 => debris(c, rng),
        3 => lymphocytes(c, rng),
        4 => mucus(c, rng),
        5 => muscle(c, rng),
        6 => normal_mucosa(c, rng),
        7 => stroma(c, rng),
        _ => tumour(c, rng),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(per_class: usize, size: u32, seed: u64) -> SynthConfig {
        SynthConfig { num_classes: 9, per_class, size, seed, ..Default::default() }
    }

    #[test]
    fn hard_tiles_are_deterministic_differ_from_standard_and_standard_is_unchanged() {
        let n = 32 * 32 * 3;
        let (mut a, mut b, mut c, mut d) = (vec![0u8; n], vec![0u8; n], vec![0u8; n], vec![0u8; n]);
        let stain = StainShift::default();
        render_tile(3, 7, 32, 1, &stain, &mut a);
        render_tile_at(3, 7, 32, 1, &stain, Difficulty::Standard, &mut b);
        assert_eq!(a, b, "Standard is exactly the data every other part of histofed uses");
        render_tile_at(3, 7, 32, 1, &stain, Difficulty::Hard, &mut c);
        render_tile_at(3, 7, 32, 1, &stain, Difficulty::Hard, &mut d);
        assert_eq!(c, d);
        assert_ne!(a, c);
        let hard = generate(&SynthConfig { difficulty: Difficulty::Hard, ..cfg(4, 16, 2) }).unwrap();
        assert_eq!(hard.class_counts(), vec![4; 9]);
        assert_eq!("Hard".parse::<Difficulty>().unwrap(), Difficulty::Hard);
        let err = "extreme".parse::<Difficulty>().unwrap_err().to_string();
        assert!(err.contains("extreme") && err.contains("standard or hard"), "{err}");
    }

    #[test]
    fn deterministic_and_seed_sensitive() {
        let a = generate(&cfg(3, 32, 7)).unwrap();
        let b = generate(&cfg(3, 32, 7)).unwrap();
        let c = generate(&cfg(3, 32, 8)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.images, c.images);
        assert_eq!(a.labels, c.labels);
    }

    #[test]
    fn balanced_and_interleaved() {
        let ds = generate(&SynthConfig { num_classes: 4, per_class: 5, size: 16, ..Default::default() }).unwrap();
        assert_eq!(ds.len(), 20);
        assert_eq!(ds.class_counts(), vec![5; 4]);
        assert_eq!(ds.classes, vec!["ADI", "BACK", "DEB", "LYM"]);
        assert_eq!(&ds.labels[..5], &[0, 1, 2, 3, 0]);
        assert_eq!(ds.images.len(), 20 * 16 * 16 * 3);
    }

    #[test]
    fn prefix_stable_across_per_class() {
        let small = generate(&cfg(2, 32, 3)).unwrap();
        let big = generate(&cfg(4, 32, 3)).unwrap();
        assert_eq!(small.images[..], big.images[..small.images.len()]);
    }

    #[test]
    fn sizes_render() {
        for size in [16u32, 32, 64, 128, 100] {
            let ds = generate(&SynthConfig { num_classes: 9, per_class: 1, size, ..Default::default() }).unwrap();
            assert_eq!(ds.images.len(), 9 * (size * size * 3) as usize);
            // not blank: some variation in every tile but BACK
            for i in 0..9 {
                let img = ds.image(i);
                let (mn, mx) = img.iter().fold((255u8, 0u8), |(a, b), &v| (a.min(v), b.max(v)));
                assert!(mx > mn, "class {i} size {size} is flat");
            }
        }
    }

    #[test]
    fn rejects_bad_config() {
        assert!(generate(&SynthConfig { num_classes: 1, ..Default::default() }).is_err());
        assert!(generate(&SynthConfig { num_classes: 10, ..Default::default() }).is_err());
        assert!(generate(&SynthConfig { size: 4, ..Default::default() }).is_err());
        assert!(generate(&SynthConfig { per_class: usize::MAX, ..Default::default() }).is_err());
        let stain = StainShift { brightness: f32::NAN, ..Default::default() };
        assert!(generate(&SynthConfig { stain, ..Default::default() }).is_err());
    }

    #[test]
    fn stain_shift_changes_colour_deterministically() {
        assert_eq!(StainShift::for_site(3, 0.0, 1), StainShift::default());
        let s1 = StainShift::for_site(1, 1.0, 42);
        assert_eq!(s1, StainShift::for_site(1, 1.0, 42));
        assert_ne!(s1, StainShift::for_site(2, 1.0, 42));
        assert!(s1.h_log_scale.abs() <= 0.25 && s1.h_rotation.abs() <= 0.12);
        let (h, e) = s1.stain_vectors();
        for v in [h, e] {
            let n: f32 = v.iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-4);
        }
        let (h0, e0) = StainShift::default().stain_vectors();
        for k in 0..3 {
            assert!((h0[k] - H_REF[k]).abs() < 1e-3 && (e0[k] - E_REF[k]).abs() < 1e-3);
        }
        let plain = generate(&cfg(1, 32, 5)).unwrap();
        let shifted = generate(&SynthConfig { stain: s1, ..cfg(1, 32, 5) }).unwrap();
        assert_ne!(plain.images, shifted.images);
    }

    #[test]
    fn mean_colour_is_tissue_like() {
        let ds = generate(&cfg(20, 32, 11)).unwrap();
        let m = ds.mean_rgb();
        // real NCT tiles: about (165–181, 106–143, 148–177); allow a margin around it
        assert!((150.0..195.0).contains(&m[0]), "{m:?}");
        assert!((95.0..155.0).contains(&m[1]), "{m:?}");
        assert!((135.0..190.0).contains(&m[2]), "{m:?}");
        assert!(m[0] > m[1] && m[2] > m[1], "H&E tiles are pink/purple: {m:?}");
    }
}
