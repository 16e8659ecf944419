//! The nine tissue painters, one per NCT-CRC-HE class (fat cells, background, debris, lymphocytes, mucus, muscle,
//! normal mucosa, stroma, tumour), each drawing densities on a canvas.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::f32::consts::{PI, TAU};

use super::canvas::*;

// ---------------------------------------------------------------------------------------------------------------
// Class morphologies. Densities here are before the per-image jitter; typical nucleus h ≈ 1.0–1.5,
// cytoplasm / collagen e ≈ 0.3–0.8.

/// ADI: large white polygonal fat cells separated by thin eosin membranes, a few flattened nuclei.
pub(super) fn adipose(c: &mut Canvas, rng: &mut ChaCha8Rng) {
    let spacing = rr(rng, 13.0, 26.0);
    let jitter = rr(rng, 0.5, 0.9);
    let cells = (96.0 / spacing).ceil() as usize + 1;
    let mut seeds = Vec::with_capacity(cells * cells);
    for gy in 0..cells {
        for gx in 0..cells {
            let x = -16.0 + (gx as f32 + 0.5) * spacing + (rng.random::<f32>() - 0.5) * jitter * spacing;
            let y = -16.0 + (gy as f32 + 0.5) * spacing + (rng.random::<f32>() - 0.5) * jitter * spacing;
            seeds.push((x, y));
        }
    }
    // nearest and second-nearest seed distance, searching the 3x3 grid cells around the point (Worley noise)
    let f12 = |x: f32, y: f32| {
        let gx = (((x + 16.0) / spacing).floor() as i64).clamp(0, cells as i64 - 1);
        let gy = (((y + 16.0) / spacing).floor() as i64).clamp(0, cells as i64 - 1);
        let (mut d1, mut d2) = (f32::MAX, f32::MAX);
        for yy in (gy - 1).max(0)..=(gy + 1).min(cells as i64 - 1) {
            for xx in (gx - 1).max(0)..=(gx + 1).min(cells as i64 - 1) {
                let (sx, sy) = seeds[yy as usize * cells + xx as usize];
                let d = (x - sx).powi(2) + (y - sy).powi(2);
                if d < d1 {
                    d2 = d1;
                    d1 = d;
                } else if d < d2 {
                    d2 = d;
                }
            }
        }
        (d1.sqrt(), d2.sqrt())
    };
    let width = rr(rng, 0.35, 0.8);
    let mem_e = rr(rng, 0.5, 0.95);
    let bg = rr(rng, 0.0, 0.05);
    let nz = Noise::new(rng);
    let torn = Noise::new(rng);
    // optionally a band of fibrous septum / vessel wall crossing the tile
    let septum = rng.random::<f32>() < 0.35;
    let (sa, sd, sw) = (rr(rng, 0.0, PI), rr(rng, 10.0, 54.0), rr(rng, 1.5, 5.0));
    c.paint(|x, y, h, e| {
        let (d1, d2) = f12(x, y);
        let edge = (d2 - d1) * 0.5;
        let keep = smoothstep(0.2, 0.35, torn.value(x / 7.0, y / 7.0));
        let mem = (1.0 - smoothstep(0.0, width, edge)) * keep;
        let var = 0.6 + 0.8 * nz.value(x / 3.0, y / 3.0);
        *e = bg + mem_e * mem * var;
        *h = bg * 0.5 + 0.06 * mem;
        if septum {
            let d = (x * sa.cos() + y * sa.sin() - sd).abs();
            let s = 1.0 - smoothstep(sw * 0.6, sw, d);
            *e = e.max(s * 0.55 * var);
            *h = h.max(s * 0.1);
        }
    });
    // flattened nuclei riding on membranes
    let chrom = Noise::new(rng);
    let count = rng.random_range(0..6);
    for _ in 0..count {
        let (a, b) = (seeds[rng.random_range(0..seeds.len())], seeds[rng.random_range(0..seeds.len())]);
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let dist = (dx * dx + dy * dy).sqrt();
        if dist < 1.0 || dist > spacing * 1.6 {
            continue;
        }
        let (mx, my) = ((a.0 + b.0) * 0.5, (a.1 + b.1) * 0.5);
        let angle = dy.atan2(dx) + PI / 2.0;
        let mut nuc = Nucleus::round(mx, my, 1.0, rr(rng, 0.9, 1.3));
        nuc.rx = rr(rng, 2.2, 3.2);
        nuc.ry = rr(rng, 0.6, 0.9);
        nuc.angle = angle;
        c.nucleus(&nuc, &chrom);
    }
}

/// BACK: near-white glass with faint noise, sometimes a faint smudge or a grey cast.
pub(super) fn background(c: &mut Canvas, rng: &mut ChaCha8Rng) {
    let base_h = rr(rng, 0.0, 0.06);
    let base_e = rr(rng, 0.0, 0.06);
    let nz = Noise::new(rng);
    let smudge = Noise::new(rng);
    let smudge_amp = if rng.random::<f32>() < 0.35 { rr(rng, 0.05, 0.25) } else { 0.0 };
    let freq = rr(rng, 6.0, 14.0);
    c.paint(|x, y, h, e| {
        let n = nz.fbm(x / freq, y / freq, 2) - 0.5;
        let s = smoothstep(0.55, 0.8, smudge.fbm(x / 20.0, y / 20.0, 2)) * smudge_amp;
        *h = (base_h + 0.04 * n + s * 0.4).max(0.0);
        *e = (base_e + 0.04 * n + s).max(0.0);
    });
}

/// DEB: blotchy necrotic eosin with cracks, many small dark nuclear fragments and pyknotic nuclei.
pub(super) fn debris(c: &mut Canvas, rng: &mut ChaCha8Rng) {
    let e0 = rr(rng, 0.3, 0.65);
    let h0 = rr(rng, 0.12, 0.3);
    let blotch = Noise::new(rng);
    let blotch2 = Noise::new(rng);
    let crack = Noise::new(rng);
    let crack_thr = rr(rng, 0.25, 0.42);
    let freq = rr(rng, 5.0, 10.0);
    c.paint(|x, y, h, e| {
        let b = blotch.fbm(x / freq, y / freq, 3);
        let b2 = blotch2.fbm(x / (freq * 0.7), y / (freq * 0.7), 2);
        let k = smoothstep(crack_thr - 0.08, crack_thr + 0.04, crack.fbm(x / 9.0, y / 9.0, 2));
        *e = e0 * (0.4 + 1.2 * b) * (0.25 + 0.75 * k);
        *h = h0 * (0.4 + 1.2 * b2) * (0.3 + 0.7 * k);
    });
    let chrom = Noise::new(rng);
    let fragments = rng.random_range(30..140);
    for _ in 0..fragments {
        let (x, y) = (rr(rng, -1.0, 65.0), rr(rng, -1.0, 65.0));
        let r = rr(rng, 0.5, 1.5);
        let mut nuc = Nucleus::round(x, y, r, rr(rng, 0.9, 1.7)).with_irregularity(rng, 0.35);
        nuc.ry = r * rr(rng, 0.5, 1.0);
        nuc.angle = rr(rng, 0.0, PI);
        c.nucleus(&nuc, &chrom);
    }
    let pyknotic = rng.random_range(3..18);
    for _ in 0..pyknotic {
        let (x, y) = (rr(rng, -1.0, 65.0), rr(rng, -1.0, 65.0));
        let nuc = Nucleus::round(x, y, rr(rng, 1.3, 2.2), rr(rng, 1.3, 1.8)).with_irregularity(rng, 0.12);
        c.nucleus(&nuc, &chrom);
    }
    if rng.random::<f32>() < 0.3 {
        let n = rng.random_range(5..25);
        c.scatter_lymphocytes(rng, n, |_, _| 1.0);
    }
}

/// LYM: a dense sheet of small round dark nuclei, with clustering.
pub(super) fn lymphocytes(c: &mut Canvas, rng: &mut ChaCha8Rng) {
    let e0 = rr(rng, 0.15, 0.4);
    let h0 = rr(rng, 0.08, 0.2);
    let bg = Noise::new(rng);
    c.paint(|x, y, h, e| {
        let n = bg.fbm(x / 8.0, y / 8.0, 2);
        *e = e0 * (0.6 + 0.8 * n);
        *h = h0 * (0.6 + 0.8 * n);
    });
    let fill = rr(rng, 0.45, 0.95);
    let r_mean = rr(rng, 1.6, 2.3);
    let count = (fill * 64.0 * 64.0 / (PI * r_mean * r_mean)) as usize;
    let cluster = Noise::new(rng);
    let cluster_amp = rr(rng, 0.0, 0.9);
    let chrom = Noise::new(rng);
    let mut placed = 0;
    let mut tries = 0;
    while placed < count && tries < count * 10 {
        tries += 1;
        let (x, y) = (rr(rng, -2.0, 66.0), rr(rng, -2.0, 66.0));
        let w = 1.0 - cluster_amp * (1.0 - smoothstep(0.3, 0.6, cluster.fbm(x / 14.0, y / 14.0, 2)));
        if rng.random::<f32>() > w {
            continue;
        }
        let r = r_mean * rr(rng, 0.85, 1.15);
        let mut nuc = Nucleus::round(x, y, r, rr(rng, 1.15, 1.6)).with_irregularity(rng, 0.06);
        nuc.ry = r * rr(rng, 0.85, 1.0);
        nuc.angle = rr(rng, 0.0, PI);
        c.nucleus(&nuc, &chrom);
        placed += 1;
    }
    // a few larger cells (plasma cells / histiocytes)
    for _ in 0..rng.random_range(0..6) {
        let (x, y) = (rr(rng, 0.0, 64.0), rr(rng, 0.0, 64.0));
        let nuc = Nucleus::round(x, y, rr(rng, 2.6, 3.4), rr(rng, 0.8, 1.1)).with_irregularity(rng, 0.1);
        c.nucleus(&nuc, &chrom);
    }
}

/// MUC: pale bluish, low-density wispy mucin with a few floating cells.
pub(super) fn mucus(c: &mut Canvas, rng: &mut ChaCha8Rng) {
    let h0 = rr(rng, 0.04, 0.16);
    let e0 = rr(rng, 0.02, 0.12);
    let wh = rr(rng, 0.2, 0.55);
    let we = rr(rng, 0.04, 0.22);
    let angle = rr(rng, 0.0, PI);
    let (sa, ca) = angle.sin_cos();
    let wisp = Noise::new(rng);
    let warp = Noise::new(rng);
    let lo = rr(rng, 0.4, 0.55);
    let stretch = rr(rng, 8.0, 20.0);
    c.paint(|x, y, h, e| {
        let u = x * ca + y * sa;
        let v = -x * sa + y * ca;
        let w = warp.fbm(x / 12.0, y / 12.0, 2) * 6.0;
        let n = wisp.fbm(u / stretch + w * 0.2, (v + w) / 2.5, 3);
        let s = smoothstep(lo, lo + 0.3, n);
        *h = h0 + wh * s;
        *e = e0 + we * s;
    });
    let chrom = Noise::new(rng);
    for _ in 0..rng.random_range(0..7) {
        let (x, y) = (rr(rng, 0.0, 64.0), rr(rng, 0.0, 64.0));
        let nuc = Nucleus::round(x, y, rr(rng, 1.3, 2.4), rr(rng, 0.6, 1.2)).with_irregularity(rng, 0.15);
        c.nucleus(&nuc, &chrom);
    }
}

/// MUS: smooth-muscle bundles of direction-smoothed eosin noise with elongated, blunt-ended nuclei.
pub(super) fn muscle(c: &mut Canvas, rng: &mut ChaCha8Rng) {
    let angle = rr(rng, 0.0, PI);
    let e0 = rr(rng, 0.5, 0.9);
    let fibre = Noise::new(rng);
    let cleft = Noise::new(rng);
    let bend = Noise::new(rng);
    let along = rr(rng, 10.0, 22.0);
    let across = rr(rng, 0.9, 1.6);
    let cleft_thr = rr(rng, 0.62, 0.8);
    let bend_amp = rr(rng, 0.0, 0.5);
    c.paint(|x, y, h, e| {
        let a = angle + bend_amp * (bend.value(x / 25.0, y / 25.0) - 0.5);
        let (sa, ca) = a.sin_cos();
        let u = x * ca + y * sa;
        let v = -x * sa + y * ca;
        let f = fibre.fbm(u / along, v / across, 2);
        let k = cleft.value(u / (along * 2.0), v / (across * 3.0));
        let gap = 1.0 - 0.75 * smoothstep(cleft_thr, cleft_thr + 0.08, k);
        *e = e0 * (0.65 + 0.6 * f) * gap;
        *h = (0.05 + 0.08 * f) * gap;
    });
    let chrom = Noise::new(rng);
    let count = rng.random_range(6..22);
    for _ in 0..count {
        let (x, y) = (rr(rng, -2.0, 66.0), rr(rng, -2.0, 66.0));
        let a = angle + bend_amp * (bend.value(x / 25.0, y / 25.0) - 0.5);
        let mut nuc = Nucleus::round(x, y, 1.0, rr(rng, 0.85, 1.25));
        nuc.rx = rr(rng, 3.5, 6.0);
        nuc.ry = rr(rng, 0.65, 1.05);
        nuc.angle = a + rr(rng, -0.1, 0.1);
        nuc.chromatin = 0.15;
        nuc.eosin_keep = 0.6;
        c.nucleus(&nuc, &chrom);
    }
}

/// NORM: crypts cut in cross-section — white lumen, pale goblet-rich epithelium with basal palisaded nuclei —
/// in a lamina propria of loose eosin with scattered lymphocytes and plasma cells.
pub(super) fn normal_mucosa(c: &mut Canvas, rng: &mut ChaCha8Rng) {
    struct Crypt {
        x: f32,
        y: f32,
        r: f32,
        aspect: f32,
        angle: f32,
        lumen: f32,
        sin: f32,
        cos: f32,
    }
    let e_lp = rr(rng, 0.25, 0.45);
    let h_lp = rr(rng, 0.1, 0.2);
    let e_epi = rr(rng, 0.18, 0.35);
    let h_epi = rr(rng, 0.1, 0.2);
    let ncrypt = rng.random_range(1..=4);
    let mut crypts: Vec<Crypt> = Vec::new();
    let mut tries = 0;
    while crypts.len() < ncrypt && tries < 60 {
        tries += 1;
        let r = rr(rng, 11.0, 20.0);
        let (x, y) = (rr(rng, 4.0, 60.0), rr(rng, 4.0, 60.0));
        if crypts.iter().any(|k| ((k.x - x).powi(2) + (k.y - y).powi(2)).sqrt() < (k.r + r) * 0.95) {
            continue;
        }
        let angle = rr(rng, 0.0, PI);
        let (sin, cos) = angle.sin_cos();
        crypts.push(Crypt { x, y, r, aspect: rr(rng, 1.0, 1.5), angle, lumen: rr(rng, 0.18, 0.42), sin, cos });
    }
    let lp = Noise::new(rng);
    let rho_of = |k: &Crypt, x: f32, y: f32| {
        let dx = x - k.x;
        let dy = y - k.y;
        let u = (dx * k.cos + dy * k.sin) / (k.r * k.aspect);
        let v = (-dx * k.sin + dy * k.cos) / k.r;
        (u * u + v * v).sqrt()
    };
    c.paint(|x, y, h, e| {
        let (mut rho, mut lumen) = (f32::MAX, 0.0f32);
        for k in &crypts {
            let r = rho_of(k, x, y);
            rho = rho.min(r);
            lumen = lumen.max(smoothstep(k.lumen + 0.06, k.lumen - 0.02, r));
        }
        let n = lp.fbm(x / 6.0, y / 6.0, 2);
        let epi = smoothstep(1.04, 0.96, rho);
        *e = (e_lp * (0.5 + n) * (1.0 - epi) + e_epi * epi) * (1.0 - 0.92 * lumen);
        *h = (h_lp * (0.6 + 0.8 * n) * (1.0 - epi) + h_epi * epi) * (1.0 - 0.9 * lumen);
    });
    let chrom = Noise::new(rng);
    for k in &crypts {
        let (sa, ca) = k.angle.sin_cos();
        let (a, b) = (k.r * k.aspect, k.r);
        let perimeter = PI * (3.0 * (a + b) - ((3.0 * a + b) * (a + 3.0 * b)).sqrt());
        let spacing = rr(rng, 2.0, 2.8);
        let count = (perimeter * 0.85 / spacing) as usize;
        let t0 = rr(rng, 0.0, TAU);
        let basal = rr(rng, 0.8, 0.88);
        // goblet cells: pale vacuoles in the apical half of the epithelium
        let goblets = (perimeter / rr(rng, 4.0, 8.0)) as usize;
        for g in 0..goblets {
            let t = t0 + TAU * (g as f32 + 0.5) / goblets as f32;
            let rho = (k.lumen + basal) * 0.5 + 0.05;
            let (lx, ly) = (a * rho * t.cos(), b * rho * t.sin());
            let (x, y) = (k.x + lx * ca - ly * sa, k.y + lx * sa + ly * ca);
            let r = rr(rng, 1.3, 2.2);
            c.clear_ellipse(x, y, r, r * 0.8, t + k.angle, rr(rng, 0.5, 0.85));
        }
        for j in 0..count {
            let t = t0 + TAU * j as f32 / count as f32 + rr(rng, -0.03, 0.03);
            let rho = basal + rr(rng, -0.04, 0.04);
            let (lx, ly) = (a * rho * t.cos(), b * rho * t.sin());
            let (x, y) = (k.x + lx * ca - ly * sa, k.y + lx * sa + ly * ca);
            // outward normal of the ellipse at parameter t
            let normal = (a * t.sin()).atan2(b * t.cos()) + k.angle;
            let mut nuc = Nucleus::round(x, y, 1.0, rr(rng, 1.0, 1.4));
            nuc.rx = rr(rng, 1.9, 2.7);
            nuc.ry = rr(rng, 0.8, 1.1);
            nuc.angle = normal;
            c.nucleus(&nuc, &chrom);
        }
    }
    // lamina propria cells
    let lp_cells = rng.random_range(5..35);
    let crypts_ref = &crypts;
    c.scatter_lymphocytes(
        rng,
        lp_cells,
        |x, y| {
            if crypts_ref.iter().any(|k| rho_of(k, x, y) < 1.1) {
                0.0
            } else {
                1.0
            }
        },
    );
}

/// STR: wavy collagen fibres (sinusoid with noise-warped phase), loose gaps, sparse spindle nuclei.
pub(super) fn stroma(c: &mut Canvas, rng: &mut ChaCha8Rng) {
    let angle = rr(rng, 0.0, PI);
    let (sa, ca) = angle.sin_cos();
    let wavelength = rr(rng, 2.0, 3.6);
    let waviness = rr(rng, 1.0, 3.0);
    let sharp_halves = rng.random_range(2..=5); // fibre sharpness exponent = sharp_halves / 2
    let e0 = rr(rng, 0.4, 0.7);
    let warp = Noise::new(rng);
    let loose = Noise::new(rng);
    let loose_thr = rr(rng, 0.3, 0.55);
    let tone = Noise::new(rng);
    c.paint(|x, y, h, e| {
        let u = x * ca + y * sa;
        let v = -x * sa + y * ca;
        let phase = v / wavelength + waviness * warp.fbm(u / 14.0, v / 10.0, 2);
        let f = (0.5 + 0.5 * (TAU * phase).cos()).sqrt().powi(sharp_halves);
        let l = 0.45 + 0.55 * smoothstep(loose_thr - 0.1, loose_thr + 0.1, loose.fbm(x / 10.0, y / 10.0, 2));
        let t = 0.75 + 0.5 * tone.value(x / 16.0, y / 16.0);
        *e = e0 * (0.3 + 0.7 * f) * l * t;
        *h = (0.06 + 0.05 * f) * l;
    });
    let chrom = Noise::new(rng);
    for _ in 0..rng.random_range(3..14) {
        let (x, y) = (rr(rng, -2.0, 66.0), rr(rng, -2.0, 66.0));
        let mut nuc = Nucleus::round(x, y, 1.0, rr(rng, 0.9, 1.3)).with_irregularity(rng, 0.08);
        nuc.rx = rr(rng, 2.8, 4.8);
        nuc.ry = rr(rng, 0.6, 1.0);
        nuc.angle = angle + rr(rng, -0.25, 0.25);
        c.nucleus(&nuc, &chrom);
    }
    if rng.random::<f32>() < 0.5 {
        let n = rng.random_range(2..20);
        c.scatter_lymphocytes(rng, n, |_, _| 1.0);
    }
}

/// TUM: sheets / cribriform glands of crowded, large, irregular, vesicular nuclei with nucleoli, in amphophilic
/// cytoplasm, sometimes with desmoplastic stroma between the nests.
pub(super) fn tumour(c: &mut Canvas, rng: &mut ChaCha8Rng) {
    let nest = Noise::new(rng);
    let nest_thr = rr(rng, 0.2, 0.55);
    let e_epi = rr(rng, 0.35, 0.6);
    let h_epi = rr(rng, 0.2, 0.38);
    let e_str = rr(rng, 0.35, 0.6);
    let lumen = Noise::new(rng);
    let lumen_thr = rr(rng, 0.62, 0.85);
    let fib = Noise::new(rng);
    let freq = rr(rng, 14.0, 24.0);
    let epi_at = move |x: f32, y: f32| smoothstep(nest_thr - 0.04, nest_thr + 0.04, nest.fbm(x / freq, y / freq, 2));
    c.paint(|x, y, h, e| {
        let m = epi_at(x, y);
        let l = smoothstep(lumen_thr, lumen_thr + 0.06, lumen.fbm(x / 5.0, y / 5.0, 2)) * m;
        let f = fib.fbm(x / 6.0, y / 1.5, 2);
        *e = (e_epi * m + e_str * (0.5 + f) * (1.0 - m)) * (1.0 - 0.9 * l);
        *h = (h_epi * m + 0.08 * (1.0 - m)) * (1.0 - 0.9 * l);
    });
    let fill = rr(rng, 0.55, 1.1);
    let r_mean = rr(rng, 2.6, 4.2);
    let count = (fill * 64.0 * 64.0 / (PI * r_mean * r_mean)) as usize;
    let chrom = Noise::new(rng);
    let mut placed = 0;
    let mut tries = 0;
    while placed < count && tries < count * 6 {
        tries += 1;
        let (x, y) = (rr(rng, -2.0, 66.0), rr(rng, -2.0, 66.0));
        if rng.random::<f32>() > epi_at(x, y) {
            continue;
        }
        let r = r_mean * rr(rng, 0.7, 1.35);
        let irregular = rr(rng, 0.06, 0.2);
        let mut nuc = Nucleus::round(x, y, r, rr(rng, 0.75, 1.25)).with_irregularity(rng, irregular);
        nuc.ry = r / rr(rng, 1.0, 1.8);
        nuc.angle = rr(rng, 0.0, PI);
        nuc.chromatin = 0.35;
        nuc.rim = rr(rng, 0.0, 0.4);
        c.nucleus(&nuc, &chrom);
        if rng.random::<f32>() < 0.35 {
            let nl = Nucleus::round(x + rr(rng, -0.5, 0.5), y + rr(rng, -0.5, 0.5), r * 0.22, 1.8);
            c.nucleus(&nl, &chrom);
        }
        placed += 1;
    }
    if rng.random::<f32>() < 0.25 {
        let n = rng.random_range(3..15);
        c.scatter_lymphocytes(rng, n, |x, y| 1.0 - epi_at(x, y));
    }
}
