//! `[[accounts.graph]]`: the Graph gateway's rules of one account.

use super::{broken, Broken};

/// The methods a Graph rule may name.
const GRAPH_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// An account's `[[accounts.graph]]` rules.
pub(super) fn graph_rules(i: usize, account: &crate::config::AccountConfig) -> Result<(), Broken> {
    use crate::gateway::rules::Pattern;
    if account.graph_only && account.graph.is_empty() {
        return Err(broken(
            format!("accounts[{i}].graph_only"),
            "is true but the account has no [[accounts.graph]] rules: it could do nothing; add rules or drop graph_only",
        ));
    }
    for (j, rule) in account.graph.iter().enumerate() {
        let key = |field: &str| format!("accounts[{i}].graph[{j}].{field}");
        if rule.methods.is_empty() {
            return Err(broken(
                key("methods"),
                "is empty; list methods, e.g. [\"GET\"]",
            ));
        }
        if let Some(bad) = rule
            .methods
            .iter()
            .find(|m| !GRAPH_METHODS.contains(&m.as_str()))
        {
            return Err(broken(
                key("methods"),
                format!("\"{bad}\" is not one of {}", GRAPH_METHODS.join(", ")),
            ));
        }
        if rule.paths.is_empty() {
            return Err(broken(
                key("paths"),
                "is empty; list path patterns, e.g. [\"/users/{mailbox}/messages/**\"]",
            ));
        }
        for path in &rule.paths {
            if path.len() > crate::gateway::path::MAX_PATH_BYTES {
                return Err(broken(key("paths"), "a pattern is longer than 2048 bytes"));
            }
            Pattern::parse(path).map_err(|e| broken(key("paths"), e.to_string()))?;
        }
        let names_mailbox = rule.paths.iter().any(|p| p.contains("{mailbox}"));
        if names_mailbox && rule.mailboxes.is_empty() {
            return Err(broken(
                key("mailboxes"),
                "is empty but a pattern has {mailbox}; list user principal names or object ids, or \"*\" for any",
            ));
        }
        for mailbox in &rule.mailboxes {
            let ok = mailbox == "*"
                || crate::config::is_guid(mailbox)
                || (mailbox.len() <= 256
                    && mailbox.split_once('@').is_some_and(|(user, domain)| {
                        !user.is_empty()
                            && !domain.is_empty()
                            && !mailbox.contains(['/', '\\', '?', '#', '%'])
                            && !mailbox.chars().any(|c| c.is_control() || c.is_whitespace())
                    }));
            if !ok {
                return Err(broken(
                    key("mailboxes"),
                    format!("\"{mailbox}\" is neither a user principal name (user@domain), an object id (GUID) nor \"*\""),
                ));
            }
        }
    }
    Ok(())
}
