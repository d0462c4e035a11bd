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
//! - [`server`]: the HTTP server (hyper 1). Listeners (TCP, Unix socket with
//!   peer-uid authentication, a separate metrics listener), connection
//!   limits and slow-client timeouts, the routes `/v1/token`, `/msi/token`
//!   (the App Service managed-identity protocol), `/healthz`, `/readyz`,
//!   `/metrics`, the access log and graceful shutdown. [`server::auth`]
//!   (caller secrets, Host allow-list) and [`server::respond`] (status
//!   mapping, JSON bodies) are pure.
//! - [`broker`]: validates the tenant and resource a caller names, resolves
//!   tenant names, and asks the cache.
//! - [`cache`]: one slot per (tenant, resource) in a bounded moka map;
//!   single-flight loads whose result (token or error) every waiter shares;
//!   remembered refusals and throttling; a background refresher per slot.
//!   [`cache::schedule`] holds the refresh and retry timing as pure functions.
//! - [`authority`]: the client-credentials request to Entra (reqwest on
//!   rustls/aws-lc-rs), retries with backoff, the AADSTS700024/700027
//!   remedies. [`authority::response`] parses and classifies Entra's answers.
//! - [`assertion`]: signs the client assertion (PS256 + `x5t#S256`, or
//!   RS256 + `x5t`) for each token request, through jsonwebtoken with an
//!   aws-lc-rs provider that reuses parsed keys.
//! - [`credentials`]: loads the certificate and key from PEM, DER and PFX
//!   files, checks them as Entra will (RSA, ≥ 2048 bits, key matches,
//!   certificate valid), computes thumbprints, and holds them in a
//!   swappable [`credentials::CredentialStore`].
//! - [`config`]: the TOML file operators write. Values are validated as they
//!   are parsed (so errors carry the key and line); rules spanning keys run
//!   after. [`cloud`] has the national clouds and the URLs built from them.
//! - [`metrics`]: the Prometheus metrics (prometheus-client), fed by the
//!   cache and authority through observer traits.
//! - [`simulated_authority`]: an in-process Entra token endpoint that checks
//!   requests as Entra does and injects faults; used by the tests, the
//!   benchmarks and [`dev`] (`serve --dev`).
//! - [`cli`]: the `tokenbroker` command line; the binary in `src/main.rs`
//!   only calls [`cli::run`].
//! - Small pieces: [`clock`] (injected wall-clock time), [`jitter`] (seeded
//!   randomness for schedules), [`token`] (the redacted access-token type).
//!
//! # Conventions
//!
//! - Pure logic (schedules, classification, validation, status mapping) is
//!   separate from I/O and unit-tested; the clock, the token source and the
//!   listeners are injected, so the cache is tested over simulated hours and
//!   the server on `127.0.0.1:0`.
//! - Scheduling uses tokio's `Instant`; wall-clock time comes from a
//!   [`clock::Clock`], read only where it leaves the process.
//! - Each layer has one error enum whose messages name the file, key or
//!   tenant at fault and say what to do.
//! - Secrets (keys, passwords, assertions, tokens, caller secrets) live in
//!   zeroizing or redacting types and never reach `Debug`, logs or metrics.

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
