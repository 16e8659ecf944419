//! The protocol's primitives, each a thin call into a well-kept crate: X25519 agreement (x25519-dalek), key
//! derivation (HKDF-SHA256), authenticated encryption of the shares (ChaCha20-Poly1305) and the mask stream
//! (ChaCha12 seeded with 32 bytes: the rand crate's own cryptographically secure generator, `StdRng`; twelve rounds
//! keep a wide margin over the best known attack, on seven, and cost 60 % of twenty on the mask streams, which are
//! most of secure aggregation's compute — see BENCHMARKS.md).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

use super::SecAggError;

/// 32 bytes from an OS-seeded ChaCha20 stream.
pub(super) fn fresh_secret() -> [u8; 32] {
    let mut out = [0u8; 32];
    rand_chacha::ChaCha20Rng::from_os_rng().fill_bytes(&mut out);
    out
}

pub(super) fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*secret)).to_bytes()
}

pub(super) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The X25519 agreement of `secret` with `peer`'s public key; a low-order key (no contributory agreement) is refused.
pub(super) fn agree(secret: &[u8; 32], peer_pk: &[u8; 32], peer: u32) -> Result<[u8; 32], SecAggError> {
    let shared = StaticSecret::from(*secret).diffie_hellman(&PublicKey::from(*peer_pk));
    if !shared.was_contributory() {
        return Err(SecAggError::WeakKey { site: peer });
    }
    Ok(shared.to_bytes())
}

/// A 32-byte key for (`label`, round, a, b) from an agreement.
pub(super) fn derive(shared: &[u8; 32], round: u64, label: &str, a: u32, b: u32) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(&round.to_le_bytes()), shared);
    let mut info = Vec::with_capacity(label.len() + 8);
    info.extend_from_slice(label.as_bytes());
    info.extend_from_slice(&a.to_le_bytes());
    info.extend_from_slice(&b.to_le_bytes());
    let mut okm = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit of 255 · 32: expand cannot fail.
    let _ = hk.expand(&info, &mut okm);
    okm
}

/// Encrypts `plaintext` under a key used for this one message (so the zero nonce is never reused).
pub(super) fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    // Encryption fails only for messages beyond 2^38 bytes.
    cipher.encrypt(Nonce::from_slice(&[0u8; 12]), Payload { msg: plaintext, aad }).unwrap_or_default()
}

/// Decrypts and authenticates; `None` when the ciphertext or its context was altered.
pub(super) fn open(key: &[u8; 32], aad: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    cipher.decrypt(Nonce::from_slice(&[0u8; 12]), Payload { msg: ciphertext, aad }).ok()
}

/// Adds (or subtracts) the mask stream of `seed` to `values`, modulo 2³².
pub(super) fn apply_mask(values: &mut [u32], seed: &[u8; 32], add: bool) {
    let mut rng = rand_chacha::ChaCha12Rng::from_seed(*seed);
    let mut buf = [0u8; 4096];
    for chunk in values.chunks_mut(1024) {
        let bytes = &mut buf[..chunk.len() * 4];
        rng.fill_bytes(bytes);
        for (v, b) in chunk.iter_mut().zip(bytes.chunks_exact(4)) {
            let m = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            *v = if add { v.wrapping_add(m) } else { v.wrapping_sub(m) };
        }
    }
}

/// The additional data binding a sealed share to its round, sender and holder.
pub(super) fn share_aad(round: u64, from: u32, to: u32) -> Vec<u8> {
    let mut aad = b"histofed secagg shares".to_vec();
    aad.extend_from_slice(&round.to_le_bytes());
    aad.extend_from_slice(&from.to_le_bytes());
    aad.extend_from_slice(&to.to_le_bytes());
    aad
}
