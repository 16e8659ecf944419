//! The drawing surface: two stain-density planes in 64-px units, value noise, and the nucleus primitive every
//! tissue shares.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::f32::consts::TAU;

// ---------------------------------------------------------------------------------------------------------------
// Noise

/// Hash-based value noise on the integer lattice, smooth-step interpolated; values in [0, 1].
#[derive(Clone, Copy)]
pub(super) struct Noise(u32);

impl Noise {
    pub(super) fn new(rng: &mut ChaCha8Rng) -> Self {
        Noise(rng.random())
    }

    #[inline]
    pub(super) fn hash(&self, x: i32, y: i32) -> f32 {
        let mut h = self.0 ^ (x as u32).wrapping_mul(0x8da6_b343);
        h = h.wrapping_add((y as u32).wrapping_mul(0xd816_3841));
        h ^= h >> 16;
        h = h.wrapping_mul(0x7feb_352d);
        h ^= h >> 15;
        h = h.wrapping_mul(0x846c_a68b);
        h ^= h >> 16;
        (h >> 8) as f32 * (1.0 / 16_777_216.0)
    }

    #[inline]
    pub(super) fn value(&self, x: f32, y: f32) -> f32 {
        // fast floor (f32::floor is a libm call on baseline x86-64)
        let (mut xi, mut yi) = (x as i32, y as i32);
        xi -= i32::from((xi as f32) > x);
        yi -= i32::from((yi as f32) > y);
        let (tx, ty) = (x - xi as f32, y - yi as f32);
        let sx = tx * tx * (3.0 - 2.0 * tx);
        let sy = ty * ty * (3.0 - 2.0 * ty);
        let a = self.hash(xi, yi);
        let b = self.hash(xi + 1, yi);
        let c = self.hash(xi, yi + 1);
        let d = self.hash(xi + 1, yi + 1);
        let top = a + (b - a) * sx;
        let bot = c + (d - c) * sx;
        top + (bot - top) * sy
    }

    /// Fractal sum of `octaves` octaves, normalised to roughly [0, 1] (mean 0.5).
    #[inline]
    pub(super) fn fbm(&self, x: f32, y: f32, octaves: u32) -> f32 {
        let (mut sum, mut amp, mut norm, mut f) = (0.0, 1.0, 0.0, 1.0);
        for o in 0..octaves {
            sum += amp * self.value(x * f + o as f32 * 17.3, y * f - o as f32 * 9.1);
            norm += amp;
            amp *= 0.5;
            f *= 2.03;
        }
        sum / norm
    }
}

#[inline]
pub(super) fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

pub(super) fn rr(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

// ---------------------------------------------------------------------------------------------------------------
// Canvas of stain densities

/// Per-pixel hematoxylin / eosin densities. Geometry is in 64-px units: unit coordinate `u = (px + 0.5) / scale`.
pub(super) struct Canvas {
    pub(super) n: usize,
    pub(super) scale: f32,
    pub(super) h: Vec<f32>,
    pub(super) e: Vec<f32>,
}

/// A nucleus: an irregular ellipse of hematoxylin with chromatin texture.
#[derive(Clone, Copy)]
pub(super) struct Nucleus {
    pub(super) cx: f32,
    pub(super) cy: f32,
    pub(super) rx: f32,
    pub(super) ry: f32,
    pub(super) angle: f32,
    pub(super) density: f32,
    /// Relative chromatin texture amplitude (0 = flat).
    pub(super) chromatin: f32,
    /// Extra density at the rim (vesicular nuclei), 0 = none.
    pub(super) rim: f32,
    /// Outline irregularity: amplitudes of the 2nd, 3rd and 5th angular harmonics.
    pub(super) irregular: [f32; 3],
    pub(super) phases: [f32; 3],
    /// Fraction of the eosin kept under the nucleus.
    pub(super) eosin_keep: f32,
}

impl Nucleus {
    pub(super) fn round(cx: f32, cy: f32, r: f32, density: f32) -> Self {
        Nucleus {
            cx,
            cy,
            rx: r,
            ry: r,
            angle: 0.0,
            density,
            chromatin: 0.25,
            rim: 0.0,
            irregular: [0.0; 3],
            phases: [0.0; 3],
            eosin_keep: 0.4,
        }
    }

    pub(super) fn with_irregularity(mut self, rng: &mut ChaCha8Rng, amp: f32) -> Self {
        self.irregular = [rr(rng, 0.0, amp), rr(rng, 0.0, amp * 0.7), rr(rng, 0.0, amp * 0.4)];
        self.phases = [rr(rng, 0.0, TAU), rr(rng, 0.0, TAU), rr(rng, 0.0, TAU)];
        self
    }
}

impl Canvas {
    pub(super) fn new(n: usize) -> Self {
        Canvas { n, scale: n as f32 / 64.0, h: vec![0.0; n * n], e: vec![0.0; n * n] }
    }

    /// Calls `f(x, y, &mut h, &mut e)` for every pixel, with `(x, y)` the pixel centre in units.
    pub(super) fn paint(&mut self, mut f: impl FnMut(f32, f32, &mut f32, &mut f32)) {
        let inv = 1.0 / self.scale;
        for py in 0..self.n {
            let y = (py as f32 + 0.5) * inv;
            let row = py * self.n;
            for px in 0..self.n {
                let x = (px as f32 + 0.5) * inv;
                let i = row + px;
                f(x, y, &mut self.h[i], &mut self.e[i]);
            }
        }
    }

    /// Calls `f(x, y, &mut h, &mut e)` for the pixels whose centre lies within `r` units of `(cx, cy)`'s box.
    pub(super) fn paint_box(&mut self, cx: f32, cy: f32, r: f32, mut f: impl FnMut(f32, f32, &mut f32, &mut f32)) {
        let s = self.scale;
        let n = self.n as i64;
        let x0 = (((cx - r) * s).floor() as i64).clamp(0, n);
        let x1 = (((cx + r) * s).ceil() as i64 + 1).clamp(0, n);
        let y0 = (((cy - r) * s).floor() as i64).clamp(0, n);
        let y1 = (((cy + r) * s).ceil() as i64 + 1).clamp(0, n);
        let inv = 1.0 / s;
        for py in y0..y1 {
            let y = (py as f32 + 0.5) * inv;
            for px in x0..x1 {
                let x = (px as f32 + 0.5) * inv;
                let i = (py * n + px) as usize;
                f(x, y, &mut self.h[i], &mut self.e[i]);
            }
        }
    }

    pub(super) fn nucleus(&mut self, nuc: &Nucleus, chrom: &Noise) {
        let amp: f32 = nuc.irregular.iter().sum();
        let rmax = nuc.rx.max(nuc.ry) * (1.0 + amp) + 1.5 / self.scale;
        // edge softness of ~0.7 px, expressed in normalised radius
        let soft = (0.7 / self.scale) / nuc.rx.min(nuc.ry).max(0.3);
        let (sa, ca) = nuc.angle.sin_cos();
        let n = *nuc;
        let (inner, outer) = (1.0 - amp - soft, 1.0 + amp + soft);
        let (inner2, outer2) = (inner.max(0.0).powi(2), outer * outer);
        let ph = n.phases.map(|p| p.sin_cos());
        self.paint_box(n.cx, n.cy, rmax, |x, y, h, e| {
            let dx = x - n.cx;
            let dy = y - n.cy;
            let u = (dx * ca + dy * sa) / n.rx;
            let v = (-dx * sa + dy * ca) / n.ry;
            let rho2 = u * u + v * v;
            if rho2 >= outer2 {
                return;
            }
            let rho = rho2.sqrt();
            let b = if amp > 0.0 && rho2 > inner2 && rho > 1e-6 {
                // boundary radius 1 + Σ a_k sin(kφ + p_k), with cos/sin of kφ by the Chebyshev recurrence
                let (c1, s1) = (u / rho, v / rho);
                let (c2, s2) = (c1 * c1 - s1 * s1, 2.0 * s1 * c1);
                let (c3, s3) = (c2 * c1 - s2 * s1, s2 * c1 + c2 * s1);
                let (c5, s5) = (c3 * c2 - s3 * s2, s3 * c2 + c3 * s2);
                1.0 + n.irregular[0] * (s2 * ph[0].1 + c2 * ph[0].0)
                    + n.irregular[1] * (s3 * ph[1].1 + c3 * ph[1].0)
                    + n.irregular[2] * (s5 * ph[2].1 + c5 * ph[2].0)
            } else {
                1.0
            };
            let cov = smoothstep(b + soft * 0.5, b - soft * 0.5, rho);
            if cov <= 0.0 {
                return;
            }
            let tex = chrom.value(x * 1.4, y * 1.4);
            let mut d = n.density * (1.0 - n.chromatin + 2.0 * n.chromatin * tex);
            if n.rim > 0.0 {
                d += n.rim * n.density * smoothstep(b * 0.55, b * 0.9, rho);
            }
            *h = *h * (1.0 - cov) + cov * d.max(*h);
            *e *= 1.0 - cov * (1.0 - n.eosin_keep);
        });
    }

    /// Lightens an elliptical region (lumen, goblet cell, crack): densities multiplied by `1 - strength * cov`.
    pub(super) fn clear_ellipse(&mut self, cx: f32, cy: f32, rx: f32, ry: f32, angle: f32, strength: f32) {
        let (sa, ca) = angle.sin_cos();
        let soft = (0.8 / self.scale) / rx.min(ry).max(0.3);
        self.paint_box(cx, cy, rx.max(ry) + 1.5 / self.scale, |x, y, h, e| {
            let dx = x - cx;
            let dy = y - cy;
            let u = (dx * ca + dy * sa) / rx;
            let v = (-dx * sa + dy * ca) / ry;
            let rho = (u * u + v * v).sqrt();
            let cov = smoothstep(1.0 + soft * 0.5, 1.0 - soft * 0.5, rho) * strength;
            *h *= 1.0 - cov;
            *e *= 1.0 - cov;
        });
    }

    /// Scatters lymphocytes with probability density given by `weight(x, y)` in [0, 1].
    pub(super) fn scatter_lymphocytes(
        &mut self,
        rng: &mut ChaCha8Rng,
        count: usize,
        mut weight: impl FnMut(f32, f32) -> f32,
    ) {
        let chrom = Noise::new(rng);
        let mut placed = 0;
        let mut tries = 0;
        while placed < count && tries < count * 20 + 20 {
            tries += 1;
            let x = rr(rng, -2.0, 66.0);
            let y = rr(rng, -2.0, 66.0);
            if rng.random::<f32>() > weight(x, y) {
                continue;
            }
            let r = rr(rng, 1.5, 2.2);
            let nuc = Nucleus::round(x, y, r, rr(rng, 1.1, 1.5)).with_irregularity(rng, 0.06);
            self.nucleus(&nuc, &chrom);
            placed += 1;
        }
    }
}

/// SplitMix64-style mixing of two words.
pub(super) fn mix64(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ 0xD1B5_4A32_D192_ED03;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
