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

/// Values per thread below which [`apply_masks`] does not split the work.
const PER_THREAD: usize = 1 << 18;

/// Adds (or subtracts) the mask stream of each `(seed, add)` to `values`, modulo 2³², on up to `threads` threads:
/// each takes a contiguous part of `values` and every stream from that word on (ChaCha seeks to any word), so the
/// result is the same as one stream after the other, whatever the split.
pub(super) fn apply_masks(values: &mut [u32], masks: &[([u8; 32], bool)], threads: usize) {
    let threads = threads.clamp(1, values.len().div_ceil(PER_THREAD).max(1));
    if threads == 1 {
        return masks_from(values, 0, masks);
    }
    let part = values.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for (i, chunk) in values.chunks_mut(part).enumerate() {
            scope.spawn(move || masks_from(chunk, i * part, masks));
        }
    });
}

/// `values` is the part of the masked vector that starts at word `start` of every stream.
fn masks_from(values: &mut [u32], start: usize, masks: &[([u8; 32], bool)]) {
    let mut buf = [0u8; 4096];
    for (seed, add) in masks {
        let mut rng = rand_chacha::ChaCha12Rng::from_seed(*seed);
        rng.set_word_pos(start as u128);
        for chunk in values.chunks_mut(1024) {
            let bytes = &mut buf[..chunk.len() * 4];
            rng.fill_bytes(bytes);
            for (v, b) in chunk.iter_mut().zip(bytes.chunks_exact(4)) {
                let m = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                *v = if *add { v.wrapping_add(m) } else { v.wrapping_sub(m) };
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Split over threads or not, the masks are the same stream: a site that masks on one thread and a server that
    /// unmasks on several cancel exactly.
    #[test]
    fn masks_split_over_threads_are_the_one_stream() {
        let n = 3 * PER_THREAD + 12_345;
        let base: Vec<u32> = (0..n as u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
        let masks = [([7u8; 32], true), ([9u8; 32], false), ([1u8; 32], true)];
        // One stream after the other, each over the whole vector.
        let mut one = base.clone();
        for m in &masks {
            apply_masks(&mut one, std::slice::from_ref(m), 1);
        }
        for threads in [2, 3, 8] {
            let mut split = base.clone();
            apply_masks(&mut split, &masks, threads);
            assert_eq!(split, one, "{threads} threads");
        }
        assert_ne!(one, base, "the masks change the values");
        let undo: Vec<([u8; 32], bool)> = masks.iter().map(|(s, a)| (*s, !*a)).collect();
        apply_masks(&mut one, &undo, 4);
        assert_eq!(one, base, "and the opposite masks take them off");
    }
}
