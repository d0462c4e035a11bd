//! # tokenbroker
//!
//! A daemon that holds one multi-tenant Entra ID app registration (client ID,
//! certificate, private key) and hands out app-only Microsoft Graph tokens for
//! the customer tenants that granted it admin consent.
//!
//! # Layout
//!
//! Read the modules in the order a token request meets them:
//!
//! - [`config`]: the TOML file operators write. Values are validated as they
//!   are parsed (so errors carry the key and line); rules spanning keys run
//!   after. Nothing else reads the file.
//! - [`cloud`]: the national clouds, their authority hosts and Graph
//!   resources, and the token-endpoint and admin-consent URLs built from them.
//! - [`credentials`]: loading the certificate and key from PEM, DER and PFX
//!   files, checking them as Entra will (RSA, ≥ 2048 bits, key matches,
//!   certificate valid), thumbprints, and the swappable [`credentials::CredentialStore`].
//! - [`assertion`]: signing the client assertion (PS256 + `x5t#S256`, or
//!   RS256 + `x5t`) for one token request.
//! - [`cli`]: the `tokenbroker` command line; the binary in `src/main.rs`
//!   only calls [`cli::run`].
//!
//! # Conventions
//!
//! - Pure logic takes the time as an argument; nothing in the library reads
//!   the wall clock except at the command-line edge.
//! - Each layer has one error enum whose messages name the file, key or
//!   tenant at fault and say what to do.
//! - Secrets (keys, passwords, assertions) live in zeroizing or redacting
//!   types; their `Debug` never prints them.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

pub mod assertion;
pub mod authority;
pub mod broker;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod credentials;
pub mod dev;
pub mod jitter;
pub mod metrics;
pub mod server;
pub mod simulated_authority;
pub mod token;
