//! Fuzzes the MHIST annotations CSV parser.
//! Run: `cargo +nightly fuzz run csv` from the repository root.
#![no_main]

use histofed::data::loaders::parse_mhist_csv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = parse_mhist_csv(text) {
            let _ = e.to_string();
        }
    }
});
