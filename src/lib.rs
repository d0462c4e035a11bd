//! # tokenbroker
//!
//! A daemon that holds one or more multi-tenant Entra ID app registrations
//! (client ID, certificate, private key; `[app]` or `[[apps]]`) and hands out
//! app-only Microsoft Graph tokens for the customer tenants that granted them
//! admin consent. What it promises from
//! the outside (commands, configuration, HTTP API, metrics) is in
//! `docs/contract.md`; the Entra and Azure SDK facts it relies on are in
//! `docs/entra.md` and `docs/app-service-protocol.md`.
//!
//! # A token request, from the socket to Entra and back
//!
//! A cold miss goes straight down, one layer at a time, and straight back
//! up; no layer calls back into one above it.
//!
//! 1. [`server`] accepts the connection (TCP, or the Unix socket where the
//!    kernel tells the peer uid) and hands each request to its handler,
//!    which picks the [`route::Route`], checks method and Host, and reads
//!    the caller's secret ([`server::auth`]).
//! 2. The [`broker`] is the one door: [`broker::Broker::authenticate`]
//!    says who is calling, and [`broker::Broker::token`] answers "a token
//!    for this caller, this tenant, this resource, this app". Against one
//!    snapshot of its state, the [`access`] policy picks the app (the
//!    account's first unless the request names one) as a [`config::AppKey`],
//!    resolves the tenant to a validated [`config::TenantId`] and the
//!    resource to a [`config::Resource`], and decides whether the account
//!    may have them.
//! 3. The [`cache`] answers from memory when it can (no lock on a hit). On
//!    a miss it runs one load per (app, tenant, resource) in its own task and
//!    shares the outcome with every waiter. It knows only a
//!    [`cache::TokenSource`], and its source is a stack of layers:
//! 4. status recording (the admin status and consent metrics: it sees
//!    every outcome and changes none), then
//! 5. the [`fleet`] cache, [`fleet::SharedSource`]: with `[shared_cache]`,
//!    a refusal another host saw, a newer sealed token, or a lease so that
//!    one host of the fleet fetches; without it, a pass-through. Which of
//!    Entra's refusals are shared is the authority's decision
//!    ([`fleet::record::Shareable`]), then
//! 6. the [`authority`] client of the key's app (each app has its own, with
//!    its cloud and credentials): one logical client-credentials request to
//!    the tenant's v2.0 endpoint, with retries ([`backoff`]); Entra's
//!    answer is read bounded ([`fetch`]), parsed and classified
//!    ([`authority::response`], with the AADSTS codes named once in
//!    [`authority::aadsts`]).
//! 7. Each attempt carries a client assertion from one of the
//!    [`credentials`]: a fresh [`assertion`] signed with a key loaded and
//!    checked (PEM, DER, PFX; thumbprints as the portal shows them) or held
//!    in a PKCS#11 token, or a federated token (a token file, or the host's
//!    managed identity). A credential Entra refuses passes the request to
//!    the next.
//!
//! Back up: the token is written through to the fleet, recorded in the
//! status, cached (its refresh scheduled by [`cache::pacing`]), and handed
//! to every waiter; the broker returns it with its target, and the server
//! maps it, or the broker's [`broker::Refusal`], to HTTP
//! ([`server::respond`]).
//!
//! # A Graph request through the gateway
//!
//! `/graph/{tenant}/{version}/{path}` takes the same first steps (Host,
//! then who is calling: `server::access`), then the [`gateway`] decides
//! with pure code: the path comes down to one normal form
//! ([`gateway::path`]), the account's rules allow or deny it, every
//! `$batch` sub-request too ([`gateway::rules`], [`gateway::batch`]), and
//! a mailbox named in its other form is looked up once and remembered
//! ([`gateway::directory`]). Only then does the broker's one door hand
//! over the tenant's token ([`broker::Broker::graph_token`], the same cache
//! as above), and the request goes to Graph with its headers filtered
//! ([`gateway::forward`]) over a pooled client ([`gateway::upstream`]).
//! The answer streams back; paging links and `Location` are pointed at the
//! gateway, and an invalid-token 401 is retried once with a fresh token.
//!
//! # Changes of state: the control door
//!
//! Reloads go through the broker too ([`broker::Control`]): SIGHUP, the
//! admin API, `watch_config` and the credential watch ask
//! [`broker::Broker::reload`] or [`broker::Broker::reload_changed_credentials`],
//! and the authority client asks for changed credential files through the
//! same door when Entra refused every credential. One lock: two reloads
//! never interleave.
//!
//! # Around the request
//!
//! - [`config`]: the TOML file (schema, vocabulary types, cross-key rules);
//!   [`cloud`]: the national clouds and their URLs.
//! - [`daemon`]: start-up, one path for `serve`, `serve --dev`, tests and
//!   benches, and the triggers of reloads; [`cli`]: the command line, one
//!   file per command (the binary only calls [`cli::run`]).
//! - [`token_files`]: for callers that can only read a file, a current
//!   token kept in one (`[[token_files]]`): asked of the broker's one door
//!   like any token ([`broker::Broker::token_for_file`]), written whole
//!   by rename whenever the cache's token changes.
//! - [`metrics`]: Prometheus metrics, fed by the cache, the authority
//!   client and the fleet through observer traits; [`route`]: the routes
//!   and their metric labels, below both the server and the metrics.
//! - `dev` (feature `dev-mode`, on by default): `serve --dev`, backed by the
//!   `entra-sim` crate of this workspace: a strict simulated Entra authority
//!   and a Microsoft Graph stand-in behind the gateway.
//! - [`sys`]: what the broker asks of the operating system (bounded file
//!   reads, secrets from environment or file, the own uid, user and group
//!   names through the name service, time formats).
//! - Small pieces: [`clock`] (injected wall-clock time), [`jitter`] (seeded
//!   randomness for schedules), [`token`] (the redacted access-token type,
//!   and the one peek at a JWT's claims).

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

/// This build's version (Cargo.toml).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit this binary was built from (build.rs; "unknown" outside git).
pub const COMMIT: &str = env!("TOKENBROKER_COMMIT");

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
pub(crate) mod fetch;
pub mod fleet;
pub mod gateway;
pub(crate) mod jitter;
pub mod log_json;
pub(crate) mod log_limit;
pub mod log_writer;
pub mod metrics;
pub(crate) mod route;
pub mod seal;
pub mod server;
pub mod state_file;
pub(crate) mod sys;
pub(crate) mod token;
pub mod token_files;
