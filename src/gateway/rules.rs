//! An account's Graph rules (`[[accounts.graph]]`): which methods on which
//! paths, and which mailboxes `{mailbox}` may name. Pure: a request that
//! names a mailbox in the form the rule does not list (an object id for a
//! listed user principal name, or the reverse) asks the caller to look it
//! up ([`Verdict::Lookup`]) and to ask again with what the directory said.

use super::path::GraphPath;
use std::collections::HashSet;

/// One segment of a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Compared case-insensitively.
    Literal(String),
    /// `*`: any one segment.
    One,
    /// `**`: any number of remaining segments, zero included (last only).
    Rest,
    /// `{mailbox}`: one segment naming one of the rule's mailboxes.
    Mailbox,
}

/// A path pattern such as `/users/{mailbox}/messages/**`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    parts: Vec<Part>,
    text: String,
}

/// Why a pattern was refused in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("\"{0}\" must start with /")]
    NoSlash(String),
    #[error("\"{0}\" has an empty segment")]
    Empty(String),
    #[error("\"{0}\": ** may only be the last segment")]
    RestNotLast(String),
    #[error("\"{0}\": a segment is either a literal, *, ** or {{mailbox}}, not a mix (\"{1}\")")]
    Mixed(String, String),
    #[error("\"{0}\" starts with /me, which app-only access does not have")]
    Me(String),
}

impl Pattern {
    /// Parses a configured pattern.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| PatternError::NoSlash(text.to_owned()))?;
        let mut parts = Vec::new();
        for segment in rest.split('/') {
            let part = match segment {
                "" => return Err(PatternError::Empty(text.to_owned())),
                "*" => Part::One,
                "**" => Part::Rest,
                "{mailbox}" => Part::Mailbox,
                s if s.contains(['*', '{', '}']) => {
                    return Err(PatternError::Mixed(text.to_owned(), s.to_owned()))
                }
                s => Part::Literal(s.to_owned()),
            };
            if parts.last() == Some(&Part::Rest) {
                return Err(PatternError::RestNotLast(text.to_owned()));
            }
            parts.push(part);
        }
        if matches!(parts.first(), Some(Part::Literal(s)) if s.eq_ignore_ascii_case("me")) {
            return Err(PatternError::Me(text.to_owned()));
        }
        Ok(Pattern {
            parts,
            text: text.to_owned(),
        })
    }

    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The segments `{mailbox}` captured, when `segments` match.
    fn captures<'a>(&self, segments: &'a [String]) -> Option<Vec<&'a str>> {
        let mut mailboxes = Vec::new();
        let mut at = 0;
        for part in &self.parts {
            match part {
                Part::Rest => return Some(mailboxes),
                Part::One => {}
                Part::Literal(literal) => {
                    if !segments.get(at)?.eq_ignore_ascii_case(literal) {
                        return None;
                    }
                }
                Part::Mailbox => mailboxes.push(segments.get(at)?.as_str()),
            }
            if at >= segments.len() {
                return None;
            }
            at += 1;
        }
        (at == segments.len()).then_some(mailboxes)
    }
}

/// Whether `name` is an object id (a GUID, 8-4-4-4-12) rather than a user
/// principal name.
fn is_object_id(name: &str) -> bool {
    name.len() == 36 && uuid::Uuid::try_parse(name).is_ok()
}

/// The mailboxes a rule's `{mailbox}` may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mailboxes {
    /// `"*"`: any.
    Any,
    /// User principal names and object ids, lower-cased.
    Listed {
        upns: HashSet<String>,
        ids: HashSet<String>,
    },
}

impl Mailboxes {
    /// From the configured list: `"*"`, object ids (GUIDs) and user
    /// principal names (anything with an `@`).
    pub fn new(listed: &[String]) -> Mailboxes {
        if listed.iter().any(|m| m == "*") {
            return Mailboxes::Any;
        }
        let (ids, upns) = listed
            .iter()
            .map(|m| m.to_ascii_lowercase())
            .partition(|m| is_object_id(m));
        Mailboxes::Listed { upns, ids }
    }

    /// Whether `named` (as the request wrote it) is listed, in either form
    /// the directory knows it by.
    fn allows(&self, named: &str, directory: &dyn Directory) -> Allowed {
        let Mailboxes::Listed { upns, ids } = self else {
            return Allowed::Yes;
        };
        let named = named.to_ascii_lowercase();
        if upns.contains(&named) || ids.contains(&named) {
            return Allowed::Yes;
        }
        // The other form is listed only if the rule lists any of that form.
        let other_form_listed = if is_object_id(&named) {
            !upns.is_empty()
        } else {
            !ids.is_empty()
        };
        if !other_form_listed {
            return Allowed::No;
        }
        match directory.lookup(&named) {
            Some(entry) => {
                let yes = ids.contains(&entry.id.to_ascii_lowercase())
                    || upns.contains(&entry.upn.to_ascii_lowercase());
                if yes {
                    Allowed::Yes
                } else {
                    Allowed::No
                }
            }
            None => Allowed::Unknown,
        }
    }
}

enum Allowed {
    Yes,
    No,
    Unknown,
}

/// What the directory says of a mailbox: its object id and user principal name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    pub id: String,
    pub upn: String,
}

/// The mailboxes looked up so far (a cache in front of Graph's `/users/{x}`).
pub trait Directory {
    /// What is known of `mailbox` (lower-cased UPN or id); `None`: not looked up yet.
    fn lookup(&self, mailbox: &str) -> Option<DirectoryEntry>;
}

/// A directory that knows nothing (every other-form mailbox needs a lookup).
#[derive(Debug, Default)]
pub struct Unknown;

impl Directory for Unknown {
    fn lookup(&self, _mailbox: &str) -> Option<DirectoryEntry> {
        None
    }
}

/// One `[[accounts.graph]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Upper-case HTTP methods.
    pub methods: Vec<String>,
    pub paths: Vec<Pattern>,
    pub mailboxes: Mailboxes,
}

impl Rule {
    /// A configured rule (`methods`, `paths`, `mailboxes`), methods
    /// upper-cased. Configuration validation has checked each pattern.
    pub fn new(
        methods: &[String],
        paths: &[String],
        mailboxes: &[String],
    ) -> Result<Rule, PatternError> {
        Ok(Rule {
            methods: methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
            paths: paths
                .iter()
                .map(|p| Pattern::parse(p))
                .collect::<Result<_, _>>()?,
            mailboxes: Mailboxes::new(mailboxes),
        })
    }
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No rule allows it; says what was asked.
    Denied,
    /// A rule would allow it if this mailbox (named in the other form) is
    /// one it lists: look it up, then ask again.
    Lookup(String),
}

/// Whether `rules` allow `method` on `path`.
pub fn check(rules: &[Rule], method: &str, path: &GraphPath, directory: &dyn Directory) -> Verdict {
    let mut lookup = None;
    for rule in rules {
        if !rule.methods.iter().any(|m| m.eq_ignore_ascii_case(method)) {
            continue;
        }
        for pattern in &rule.paths {
            let Some(mailboxes) = pattern.captures(path.segments()) else {
                continue;
            };
            let mut unknown = None;
            let mut all = true;
            for named in mailboxes {
                match rule.mailboxes.allows(named, directory) {
                    Allowed::Yes => {}
                    Allowed::No => all = false,
                    Allowed::Unknown => unknown = unknown.or(Some(named.to_owned())),
                }
            }
            match (all, unknown) {
                (true, None) => return Verdict::Allowed,
                (true, Some(named)) => lookup = lookup.or(Some(named)),
                (false, _) => {}
            }
        }
    }
    lookup.map_or(Verdict::Denied, Verdict::Lookup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const ALICE_ID: &str = "7d6c2f0e-1111-2222-3333-444444444444";

    fn rule(methods: &[&str], paths: &[&str], mailboxes: &[&str]) -> Rule {
        Rule {
            methods: methods.iter().map(|m| m.to_string()).collect(),
            paths: paths.iter().map(|p| Pattern::parse(p).unwrap()).collect(),
            mailboxes: Mailboxes::new(&mailboxes.iter().map(|m| m.to_string()).collect::<Vec<_>>()),
        }
    }

    fn mail_sync() -> Vec<Rule> {
        vec![
            rule(
                &["GET"],
                &[
                    "/users/{mailbox}/messages",
                    "/users/{mailbox}/messages/**",
                    "/users/{mailbox}/mailFolders/**",
                ],
                &["alice@contoso.com", "bob@contoso.com"],
            ),
            rule(
                &["POST"],
                &["/users/{mailbox}/sendMail"],
                &["noreply@contoso.com"],
            ),
        ]
    }

    struct Known(HashMap<String, DirectoryEntry>);

    impl Directory for Known {
        fn lookup(&self, mailbox: &str) -> Option<DirectoryEntry> {
            self.0.get(mailbox).cloned()
        }
    }

    fn verdict(rules: &[Rule], method: &str, raw: &str) -> Verdict {
        check(rules, method, &GraphPath::parse(raw).unwrap(), &Unknown)
    }

    #[test]
    fn methods_paths_and_mailboxes_each_must_be_allowed() {
        let rules = mail_sync();
        assert_eq!(
            verdict(&rules, "GET", "/users/alice@contoso.com/messages"),
            Verdict::Allowed
        );
        assert_eq!(
            verdict(
                &rules,
                "get",
                "/USERS/Alice@Contoso.com/Messages/AAMk=/$value"
            ),
            Verdict::Allowed
        );
        assert_eq!(
            verdict(&rules, "GET", "/users/alice@contoso.com/mailFolders"),
            Verdict::Allowed,
            "** takes zero segments"
        );
        assert_eq!(
            verdict(&rules, "DELETE", "/users/alice@contoso.com/messages/x"),
            Verdict::Denied
        );
        assert_eq!(
            verdict(&rules, "GET", "/users/carol@contoso.com/messages"),
            Verdict::Denied
        );
        assert_eq!(
            verdict(&rules, "GET", "/users/alice@contoso.com/events"),
            Verdict::Denied
        );
        assert_eq!(verdict(&rules, "GET", "/users"), Verdict::Denied);
        assert_eq!(
            verdict(&rules, "POST", "/users/noreply@contoso.com/sendMail"),
            Verdict::Allowed
        );
        assert_eq!(
            verdict(&rules, "POST", "/users/alice@contoso.com/sendMail"),
            Verdict::Denied
        );
        assert_eq!(
            verdict(&[], "GET", "/users/alice@contoso.com/messages"),
            Verdict::Denied
        );
        let any = vec![rule(&["GET"], &["/users/{mailbox}/events/*"], &["*"])];
        assert_eq!(
            verdict(&any, "GET", "/users/x@y.com/events/1"),
            Verdict::Allowed
        );
        assert_eq!(
            verdict(&any, "GET", "/users/x@y.com/events/1/2"),
            Verdict::Denied
        );
        assert_eq!(
            verdict(&any, "GET", "/users/x@y.com/events"),
            Verdict::Denied
        );
    }

    #[test]
    fn a_mailbox_in_the_other_form_is_looked_up_once_then_decided() {
        let rules = mail_sync();
        let by_id = format!("/users/{ALICE_ID}/messages");
        assert_eq!(
            verdict(&rules, "GET", &by_id),
            Verdict::Lookup(ALICE_ID.to_owned())
        );
        let known = Known(HashMap::from([(
            ALICE_ID.to_owned(),
            DirectoryEntry {
                id: ALICE_ID.to_owned(),
                upn: "Alice@contoso.com".to_owned(),
            },
        )]));
        let path = GraphPath::parse(&by_id).unwrap();
        assert_eq!(check(&rules, "GET", &path, &known), Verdict::Allowed);
        let someone = Known(HashMap::from([(
            ALICE_ID.to_owned(),
            DirectoryEntry {
                id: ALICE_ID.to_owned(),
                upn: "mallory@contoso.com".to_owned(),
            },
        )]));
        assert_eq!(check(&rules, "GET", &path, &someone), Verdict::Denied);
        // A rule listing only ids never looks up a UPN, and the reverse.
        let ids_only = vec![rule(&["GET"], &["/users/{mailbox}"], &[ALICE_ID])];
        assert_eq!(
            verdict(&ids_only, "GET", "/users/alice@contoso.com"),
            Verdict::Lookup("alice@contoso.com".into())
        );
        let upns_only = vec![rule(
            &["GET"],
            &["/users/{mailbox}"],
            &["alice@contoso.com"],
        )];
        assert_eq!(
            verdict(&upns_only, "GET", "/users/bob@contoso.com"),
            Verdict::Denied
        );
    }

    #[test]
    fn patterns_are_checked_when_configured() {
        assert!(Pattern::parse("/users/{mailbox}/messages/**").is_ok());
        assert_eq!(
            Pattern::parse("users"),
            Err(PatternError::NoSlash("users".into()))
        );
        assert!(matches!(
            Pattern::parse("/users//x"),
            Err(PatternError::Empty(_))
        ));
        assert!(matches!(
            Pattern::parse("/users/**/x"),
            Err(PatternError::RestNotLast(_))
        ));
        assert!(matches!(
            Pattern::parse("/users/a*"),
            Err(PatternError::Mixed(..))
        ));
        assert!(matches!(
            Pattern::parse("/users/{id}"),
            Err(PatternError::Mixed(..))
        ));
        assert!(matches!(
            Pattern::parse("/me/messages"),
            Err(PatternError::Me(_))
        ));
    }
}
