//! Secure aggregation (SecAgg+: Bonawitz et al. 2017, Bell et al. 2020): the server learns the sum of the sites'
//! updates and nothing about any one of them, and the round still completes when sites drop out.
//!
//! Why double masking: each site adds to its quantized update a pairwise mask per neighbour (derived from an X25519
//! agreement; the two members of a pair add it with opposite signs, so it cancels in the sum) and a self mask (from
//! a private seed). If a site drops after it shared its secrets, its neighbours' pairwise masks with it would not
//! cancel: the server reconstructs the dropped site's mask key from Shamir shares its neighbours hold and removes
//! them. The self mask is what keeps a site that was merely slow private: the server gets the shares of a
//! survivor's self-mask seed, or of a dropped site's mask key, never both (an honest site reveals one or the other
//! for each neighbour, from one survivor/dropped partition).
//!
//! The rounds of one aggregation, as pure state machines ([`SiteRound`], [`ServerRound`]) that know no sockets:
//! 1. **advertise**: each site sends two fresh public keys (share encryption, mask agreement) and a SHA-256
//!    commitment to its self-mask seed;
//! 2. **share**: each site splits its seed and its mask key into Shamir shares for its neighbours and itself
//!    (threshold t), encrypted for each neighbour with ChaCha20-Poly1305 under an HKDF key of their agreement, so the
//!    server that routes them cannot read them;
//! 3. **mask**: each site sends its clipped, quantized, weighted update plus its masks, modulo 2³²;
//! 4. **unmask**: the server names the survivors and the dropped; each site reveals the survivors' seed shares and
//!    the dropped sites' key shares; the server reconstructs them (checked against the commitment and the public
//!    key: a tampered share is found, or the round fails closed), removes the masks and dequantizes the sum.
//!
//! With differential privacy's noise at the sites (`privacy.noise = "sites"`), step 3 also adds integer Skellam
//! noise to the codes before the masks (`noise.rs`): the sum the server unmasks is already noised, so no party
//! ever holds a noise-free aggregate, and the parameters carry the noise's calibration so that a site checks it.
//!
//! Primitives are well-kept crates (x25519-dalek, hkdf + sha2, chacha20poly1305, blahaj for Shamir, rand_chacha
//! for the mask stream — ChaCha12, seeded with the full 32-byte secret, never folded to fewer bits).

mod crypto;
mod driver;
mod fold;
mod noise;
mod params;
mod quantize;
mod server;
mod site;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use driver::{Next, SecureRound, Stage};
pub use fold::{apply_sum, delta_values};
pub use noise::{NoiseOptions, SiteNoise};
pub use params::{SecAggOptions, SecAggParams};
pub use quantize::{dequantize_noisy_sum, dequantize_sum, quant_step, quantize};
pub use server::{ServerRound, Unmasked};
pub use site::SiteRound;

/// A site's public keys for one round and its commitment to its self-mask seed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advertisement {
    pub site: u32,
    /// X25519 public key for the shares' encryption.
    pub cipher_pk: [u8; 32],
    /// X25519 public key for the pairwise masks.
    pub mask_pk: [u8; 32],
    /// SHA-256 of the self-mask seed: a reconstructed seed must match it.
    pub seed_commitment: [u8; 32],
}

/// One site's shares for one holder, encrypted for it (the server routes it and cannot read it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedShares {
    pub from: u32,
    pub to: u32,
    pub ciphertext: Vec<u8>,
}

/// A site's masked, quantized update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedInput {
    pub site: u32,
    pub values: Vec<u32>,
}

/// The server's partition of the sites that shared: who sent a masked input, who did not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmaskRequest {
    pub survivors: Vec<u32>,
    pub dropped: Vec<u32>,
}

/// Which secret a revealed share belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Secret {
    /// A survivor's self-mask seed.
    SelfMaskSeed,
    /// A dropped site's mask-agreement key.
    MaskKey,
}

/// One share a holder reveals at unmasking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reveal {
    pub holder: u32,
    pub owner: u32,
    pub secret: Secret,
    pub share: Vec<u8>,
}

/// What can go wrong in a secure aggregation.
#[derive(Debug, Error, PartialEq)]
pub enum SecAggError {
    #[error("secure aggregation parameters: {0}")]
    Params(String),
    #[error("site {0} is not a participant of this round")]
    NotParticipant(u32),
    #[error("site {site}'s public key is of low order (a contributory agreement is impossible)")]
    WeakKey { site: u32 },
    #[error("the shares from site {from} to site {to} do not decrypt (tampered or misrouted)")]
    BadShares { from: u32, to: u32 },
    #[error("{what} arrived twice from site {site}")]
    Duplicate { site: u32, what: &'static str },
    #[error("{stage}: {have} sites remain, the threshold needs {need}")]
    TooFew { stage: &'static str, have: usize, need: usize },
    #[error("site {site}'s {secret:?} has {have} revealed shares, {need} are needed")]
    NotEnoughShares { site: u32, secret: Secret, have: usize, need: usize },
    #[error("site {site}'s {secret:?} reconstructs to a value that fails its commitment (a tampered share)")]
    Tampered { site: u32, secret: Secret },
    #[error("site {site}'s masked input has {got} values, the round has {want}")]
    Length { site: u32, got: usize, want: usize },
    #[error("refused: {0}")]
    Refused(String),
}
