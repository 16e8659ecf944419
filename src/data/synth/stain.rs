//! Colour: the Beer–Lambert stain model (Macenko reference vectors, `I0`), the per-hospital stain shift, and turning
//! a canvas of hematoxylin/eosin densities into RGB bytes.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::canvas::*;

/// Incident light intensity of the Beer–Lambert model.
pub const I0: f32 = 240.0;

/// Macenko reference hematoxylin optical-density vector (R, G, B).
pub const H_REF: [f32; 3] = [0.5626, 0.7201, 0.4062];

/// Macenko reference eosin optical-density vector (R, G, B).
pub const E_REF: [f32; 3] = [0.2159, 0.8012, 0.5581];

/// Macenko reference maximum stain concentrations (H, E); densities are clamped to twice these.
pub const MAX_CONC: [f32; 2] = [1.9705, 1.0308];

/// Global density gain, calibrated so the mean colour over all nine classes lands in the range of real tiles.
pub(super) const DENSITY_GAIN: f32 = 2.0;

/// Per-site hospital variation of staining and scanning. All fields are zero for "no shift" (the `Default`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StainShift {
    /// Natural log of the hematoxylin intensity scale (0 = unchanged, 0.2 ≈ 22 % stronger).
    pub h_log_scale: f32,
    /// Natural log of the eosin intensity scale.
    pub e_log_scale: f32,
    /// Rotation (radians) of the hematoxylin OD vector within the H–E plane.
    pub h_rotation: f32,
    /// Rotation (radians) of the eosin OD vector within the H–E plane.
    pub e_rotation: f32,
    /// Relative change of the illumination `I0` (0 = unchanged, 0.05 = 5 % brighter).
    pub brightness: f32,
}

impl StainShift {
    /// A deterministic pseudo-random shift for federation site `site`. `strength` 0 gives no shift, 1 a realistic
    /// inter-hospital difference (H/E intensity ±25 %, stain vectors rotated up to ±0.12 rad, brightness ±6 %).
    pub fn for_site(site: usize, strength: f32, seed: u64) -> Self {
        if strength == 0.0 || !strength.is_finite() {
            return StainShift::default();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(mix64(seed ^ 0x5354_4149_4e53_4849, site as u64));
        let mut u = || rng.random_range(-1.0f32..=1.0);
        StainShift {
            h_log_scale: 0.25 * strength * u(),
            e_log_scale: 0.25 * strength * u(),
            h_rotation: 0.12 * strength * u(),
            e_rotation: 0.12 * strength * u(),
            brightness: 0.06 * strength * u(),
        }
    }

    /// The (unit-length) hematoxylin and eosin OD vectors after rotation.
    pub fn stain_vectors(&self) -> ([f32; 3], [f32; 3]) {
        let n = normalize(cross(H_REF, E_REF));
        (rotate_about(H_REF, n, self.h_rotation), rotate_about(E_REF, n, self.e_rotation))
    }

    pub(super) fn is_finite(&self) -> bool {
        [self.h_log_scale, self.e_log_scale, self.h_rotation, self.e_rotation, self.brightness]
            .iter()
            .all(|v| v.is_finite())
    }
}

pub(super) fn cross(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]
}

pub(super) fn normalize(v: [f32; 3]) -> [f32; 3] {
    let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt().max(1e-12);
    [v[0] / n, v[1] / n, v[2] / n]
}

/// Rotates `v` (perpendicular to the unit axis `n`) by `angle`; keeps OD components positive.
pub(super) fn rotate_about(v: [f32; 3], n: [f32; 3], angle: f32) -> [f32; 3] {
    let (s, c) = angle.sin_cos();
    let nxv = cross(n, v);
    let dot = n[0] * v[0] + n[1] * v[1] + n[2] * v[2];
    let r = [0, 1, 2].map(|i| v[i] * c + nxv[i] * s + n[i] * dot * (1.0 - c));
    normalize(r.map(|x| x.max(0.01)))
}

/// Beer–Lambert colouring with the stain shift, per-image stain jitter and a little sensor noise.
pub(super) fn colourize(c: &Canvas, stain: &StainShift, noise: f32, rng: &mut ChaCha8Rng, out: &mut [u8]) {
    let (hv, ev) = stain.stain_vectors();
    // per-image stain intensity jitter (slide-to-slide variation inside one hospital)
    let hj = DENSITY_GAIN * stain.h_log_scale.exp() * (rr(rng, -0.25, 0.25)).exp();
    let ej = DENSITY_GAIN * stain.e_log_scale.exp() * (rr(rng, -0.25, 0.25)).exp();
    let i0 = (I0 * (1.0 + stain.brightness) * (1.0 + rr(rng, -0.02, 0.02))).clamp(1.0, 255.0);
    let (hmax, emax) = (2.0 * MAX_CONC[0], 2.0 * MAX_CONC[1]);
    let grain = Noise::new(rng);
    for (i, px) in out.chunks_exact_mut(3).enumerate() {
        let h = (c.h[i] * hj).clamp(0.0, hmax);
        let e = (c.e[i] * ej).clamp(0.0, emax);
        let r = grain.hash(i as i32, 0x51ed);
        let g: f32 = 1.0 + noise * (r + grain.hash(i as i32, 0x2b7e) - 1.0);
        let chroma = 0.008 * (grain.hash(i as i32, 0x9e37) - 0.5);
        for k in 0..3 {
            let od = (h * hv[k] + e * ev[k]) * g + if k == 1 { -chroma } else { chroma };
            // non-negative, so +0.5 and a saturating cast round to nearest
            px[k] = (i0 * (-od).exp() + 0.5) as u8;
        }
    }
}
