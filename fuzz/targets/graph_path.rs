//! The Graph gateway's path normaliser and its rule matcher: a security
//! boundary, so every property is asserted on whatever bytes come in.

use tokenbroker::gateway::path::GraphPath;
use tokenbroker::gateway::rules::{check, Mailboxes, Pattern, Rule, Unknown, Verdict};

pub fn run(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = GraphPath::parse(raw) else {
        return;
    };
    // What is forwarded parses to the very same path.
    let encoded = path.encoded();
    assert_eq!(
        GraphPath::parse(encoded).as_ref(),
        Ok(&path),
        "{raw:?} -> {encoded:?}"
    );
    for segment in path.segments() {
        assert!(!segment.is_empty() && segment != "." && segment != "..");
        assert!(!segment.contains(['/', '\\']) && !segment.chars().any(char::is_control));
    }
    assert!(!path.segments()[0].eq_ignore_ascii_case("me"));
    // An allowed path is one of the shapes the rule names, for the mailbox it lists.
    let rules = [Rule {
        methods: vec!["GET".into()],
        paths: vec![Pattern::parse("/users/{mailbox}/messages/**").expect("pattern")],
        mailboxes: Mailboxes::new(&["alice@contoso.com".to_owned()]),
    }];
    if check(&rules, "GET", &path, &Unknown) == Verdict::Allowed {
        let s = path.segments();
        assert!(s.len() >= 3);
        assert!(s[0].eq_ignore_ascii_case("users") && s[2].eq_ignore_ascii_case("messages"));
        assert!(s[1].eq_ignore_ascii_case("alice@contoso.com"), "{raw:?}");
    }
}
