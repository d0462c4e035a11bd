//! The integration tests, in one binary: one link instead of one per
//! file, and libtest runs tests of different files side by side (a test
//! that waits on an SDK process or a real-time schedule overlaps with the
//! others). `tests/logging.rs` stays a binary of its own: it installs a
//! process-wide log subscriber.
//!
//! Run one file's tests with `cargo test --test suite FILE::`, for example
//! `cargo test --test suite fleet::`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod acquisition;
mod apps;
mod assertion;
mod azure_sdk;
mod azure_sdk_js;
mod azure_sdk_rust;
mod cli;
mod cli_online;
mod credentials;
mod deploy;
mod deploy_kubernetes;
mod dev_mode;
mod federated;
mod fleet;
mod fuzz_corpus;
mod gateway;
mod graph_sdk;
mod graph_sdk_js;
mod hardening;
mod operations;
mod package;
mod pkcs11;
mod prometheus;
mod properties;
mod server;
mod shutdown;
mod token_files;
mod warm_restart;
