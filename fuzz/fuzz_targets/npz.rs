//! Fuzzes the MedMNIST `.npz` reader (zip container + hand-written `.npy` header parser).
//! Run: `cargo +nightly fuzz run npz` from the repository root.
#![no_main]

use histofed::data::loaders::{parse_npy_header, parse_npz_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = parse_npz_bytes(data) {
        let _ = e.to_string();
    }
    // the bare `.npy` header parser too
    let _ = parse_npy_header(&mut std::io::Cursor::new(data));
});
