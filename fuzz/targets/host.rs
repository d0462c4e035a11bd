//! The Host header parser and the allow-list check.

use tokenbroker::config::HostName;
use tokenbroker::server::auth::{host_allowed, host_name};

pub fn run(data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(host) = host_name(value) {
        // The host is a prefix of the value and carries no port or junk.
        assert!(value.starts_with(host));
        assert!(!host.contains('/') && !host.contains('@'));
    }
    let allowed = host_allowed(Some(value), &HostName::defaults());
    if allowed {
        assert!(host_name(value).is_some());
    }
}
