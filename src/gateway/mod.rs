//! The Graph gateway: callers send Microsoft Graph requests to the broker,
//! which checks them against their account's rules, adds the tenant's token
//! and forwards them, so a caller never holds a token and reaches only the
//! mailboxes its rules name. The HTTP side (authentication, bodies, the
//! upstream-401 retry) is `server::graph`; here is what it decides with.
//!
//! - [`path`]: the one normal form of a Graph path (a security boundary:
//!   every spelling comes down to it, and it is what is forwarded);
//! - [`rules`]: which methods, paths and mailboxes an account may use;
//! - [`batch`]: the sub-requests of a `$batch`, each checked alone;
//! - [`directory`]: mailboxes looked up in their other form, remembered;
//! - [`forward`]: which headers pass, and the upstream URL;
//! - [`links`]: links to Graph in answers pointed back at the gateway;
//! - [`upstream`]: the connection pool to Graph.

pub mod batch;
pub mod directory;
pub mod forward;
pub mod links;
pub mod path;
pub mod rules;
pub mod upstream;
