//! # tokenbroker
//!
//! A daemon that holds one multi-tenant Entra ID app registration (client ID,
//! certificate, private key) and hands out app-only Microsoft Graph tokens for
//! the customer tenants that granted it admin consent. What it promises from
//! the outside (commands, configuration, HTTP API, metrics) is in
//! `docs/contract.md`; the Entra and Azure SDK facts it relies on are in
//! `docs/entra.md` and `docs/app-service-protocol.md`.
//!
//! # A token request, from the socket to Entra and back
//!
//! 1. [`server`] accepts the connection (TCP, or the Unix socket where the
//!    kernel tells the peer uid), picks the [`server::Route`], checks method
//!    and Host, and reads the caller's secret ([`server::auth`]).
//! 2. It asks the [`broker`] who that is ([`broker::Broker::authenticate`])
//!    and then the one question: "a token for this caller, this tenant, this
//!    resource" ([`broker::Broker::token`]). The server never touches access
//!    rules or the cache; it maps the broker's answer to HTTP
//!    ([`server::respond`]).
//! 3. The broker judges the request against one snapshot of its state: the
//!    [`access`] policy resolves the tenant reference to a validated
//!    [`config::TenantId`] and the resource to a [`config::Resource`], then
//!    decides whether the account may have them.
//! 4. The [`cache`] answers from memory when it can (no lock on a hit); on a
//!    miss it runs one load per (tenant, resource) in its own task, shares the
//!    result with every waiter, remembers refusals and throttling, refreshes
//!    ahead of expiry in the background (where in each token's window is the
//!    [`cache::pacing`] module's choice), and cuts a caller off at
//!    `cache.load_timeout`. It knows only a [`cache::TokenSource`] and a clock.
//! 5. With `[shared_cache]`, the source first asks the [`fleet`] cache on
//!    Redis: a refusal another host saw, a newer sealed token, or a lease so
//!    that one host of the fleet fetches and the others read its token.
//! 6. The token source is the [`authority`] client: one logical
//!    client-credentials request to the tenant's v2.0 endpoint, with retries
//!    ([`backoff`]), and [`authority::response`] to parse and classify
//!    Entra's answer.
//! 7. Each attempt carries a client assertion from one of the [`credentials`]:
//!    a fresh [`assertion`] signed with a key it loaded and checked (PEM, DER,
//!    PFX; thumbprints as the portal shows them) or that a PKCS#11 token
//!    holds, or a federated token (a token file, or the host's managed
//!    identity). A credential Entra refuses passes the request to the next.
//!
//! # Around the request
//!
//! - [`config`]: the TOML file (schema, vocabulary types, cross-key rules);
//!   [`cloud`]: the national clouds and their URLs.
//! - [`daemon`]: start-up, one path for `serve`, `serve --dev`, tests and
//!   benches; [`cli`]: the command line (the binary only calls [`cli::run`]).
//! - [`metrics`]: Prometheus metrics, fed by the cache and the authority
//!   client through observer traits.
//! - `dev` (feature `dev-mode`, on by default): `serve --dev`, backed by the
//!   `entra-sim` crate of this workspace, a strict simulated Entra authority.
//! - Small pieces: [`clock`] (injected wall-clock time), [`jitter`] (seeded
//!   randomness for schedules), [`token`] (the redacted access-token type).
//!
//! # Conventions
//!
//! - Pure logic (schedules, classification, validation, access rules, status
//!   mapping) is separate from I/O and unit-tested; the clock, the token
//!   source and the listeners are injected, so the cache is tested over
//!   simulated hours and the server on `127.0.0.1:0`.
//! - Scheduling uses tokio's `Instant`; wall-clock time comes from a
//!   [`clock::Clock`], read only where it leaves the process.
//! - Each layer has one error enum whose messages name the file, key or
//!   tenant at fault and say what to do.
//! - Secrets (keys, passwords, assertions, tokens, caller secrets) live in
//!   zeroizing or redacting types and never reach `Debug`, logs or metrics.

pub mod access;
pub mod assertion;
pub mod authority;
pub mod backoff;
pub mod broker;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod credentials;
pub mod daemon;
#[cfg(feature = "dev-mode")]
pub mod dev;
pub mod fetch;
pub mod fleet;
pub mod jitter;
pub mod metrics;
pub mod route;
pub mod server;
pub mod sys;
pub mod token;
