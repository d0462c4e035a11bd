//! The credential file loader: a certificate file (PEM, DER or PFX) and a
//! The body is in `fuzz/targets/credentials.rs`, which `tests/fuzz_corpus.rs`
//! also replays over the committed corpus on every test run.
#![no_main]

#[path = "../targets/credentials.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
