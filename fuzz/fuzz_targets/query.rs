//! `/v1/token` and `/msi/token` query strings, then the tenant and resource
//! The body is in `fuzz/targets/query.rs`, which `tests/fuzz_corpus.rs`
//! also replays over the committed corpus on every test run.
#![no_main]

#[path = "../targets/query.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
