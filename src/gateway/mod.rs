//! The Graph gateway: callers send Microsoft Graph requests to the broker,
//! which checks them against their account's rules, adds the tenant's token
//! and forwards them, so a caller never holds a token and reaches only the
//! mailboxes its rules name.
//!
//! - [`path`]: the one normal form of a Graph path (a security boundary:
//!   every spelling comes down to it, and it is what is forwarded);
//! - [`rules`]: which methods, paths and mailboxes an account may use.

pub mod path;
pub mod rules;
