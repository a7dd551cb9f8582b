//! mosquitto's ACL files: `user NAME`, `topic [read|write|readwrite|deny] FILTER` and
//! `pattern [read|write|readwrite|deny] FILTER` with `%c` (client id) and `%u` (user name).
//! `topic` lines before the first `user` line apply to anonymous clients; patterns apply to
//! everyone. As mosquitto decides: the client's own rules first (a matching deny refuses, else
//! a matching grant allows), then, if they decided nothing, the patterns the same way.
use std::collections::HashMap;
use std::path::Path;

use midge_codec::{topic_matches, validate_topic_filter};

/// What a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Subscribe and receive.
    Read,
    /// Publish.
    Write,
    /// Both.
    ReadWrite,
    /// Nothing: matching topics are refused whatever the other rules of its kind (the
    /// client's own, or the patterns) say; a client's own grant comes before a pattern's deny.
    Deny,
}

impl Access {
    fn reads(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    fn writes(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    filter: String,
}

/// An ACL file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// Unreadable.
    #[error("cannot read ACL file {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A bad line.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The file.
        path: String,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The rules of an ACL file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

/// What a client wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Read,
    Write,
    Subscribe,
}

impl Acl {
    /// Reads an ACL file.
    pub fn load(path: &Path) -> Result<Acl, AclError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AclError::Read { path: path.display().to_string(), message: e.to_string() })?;
        Acl::parse(&text, &path.display().to_string())
    }

    /// Parses ACL text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Acl, AclError> {
        let mut acl = Acl::default();
        let mut user: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| AclError::Line { path: path.to_owned(), line: i + 1, message };
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim();
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(err("user needs a name".into()));
                    }
                    user = Some(rest.to_owned());
                }
                "topic" | "pattern" => {
                    // One word: the filter, read and write. More: an access word, then the
                    // filter (which may hold spaces). As mosquitto, a first word that is no
                    // access word is an error: `topic raed secret/#` or `topic dney a/#`
                    // must not become a rule of another meaning. Words are split at spaces
                    // only, as mosquitto splits them (a tab or another space character
                    // belongs to the filter).
                    let (access, filter) = match rest.split_once(' ') {
                        None => (Access::ReadWrite, rest),
                        Some((word, f)) => {
                            let access = match word {
                                "read" => Access::Read,
                                "write" => Access::Write,
                                "readwrite" => Access::ReadWrite,
                                "deny" => Access::Deny,
                                other => {
                                    return Err(err(format!(
                                        "invalid access type '{other}' (expected read, write, readwrite or deny, \
                                         then the topic filter)"
                                    )))
                                }
                            };
                            (access, f.trim())
                        }
                    };
                    if filter.is_empty() {
                        return Err(err(format!("{keyword} needs a topic filter")));
                    }
                    if let Err(e) = validate_topic_filter(filter) {
                        return Err(err(format!("invalid topic filter '{filter}': {e}")));
                    }
                    let rule = Rule { access, filter: filter.to_owned() };
                    match (keyword, &user) {
                        ("pattern", _) => acl.patterns.push(rule),
                        (_, None) => acl.anonymous.push(rule),
                        (_, Some(u)) => acl.users.entry(u.clone()).or_default().push(rule),
                    }
                }
                other => {
                    return Err(err(format!("unknown keyword '{other}' (expected user, topic or pattern)")))
                }
            }
        }
        Ok(acl)
    }

    /// May this client publish to `topic`?
    pub fn can_publish(&self, user: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.check(user, client_id, topic, Want::Write)
    }

    /// May this client receive a message published to `topic`?
    pub fn can_read(&self, user: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.check(user, client_id, topic, Want::Read)
    }

    /// May this client subscribe to `filter`? An allow rule must cover the whole filter
    /// ("a/#" covers "a/b/+", "a/b" does not cover "a/#"), and no deny rule of the same kind
    /// may cover it ([`Acl::check`]'s order).
    /// Messages are checked again as they are delivered ([`Acl::can_read`]).
    pub fn can_subscribe(&self, user: Option<&str>, client_id: &str, filter: &str) -> bool {
        // A shared subscription is checked on its topic filter.
        let plain = match midge_codec::parse_shared(filter) {
            Ok(Some(s)) => s.filter,
            _ => filter,
        };
        self.check(user, client_id, plain, Want::Subscribe)
    }

    /// As mosquitto decides: the client's own rules (its user's, or the anonymous ones)
    /// first, a deny before any grant; then, when none of them decided, the patterns, the
    /// same way. A client whose user name or client id holds a wildcard gets no pattern at
    /// all ("+" would make `clients/%c/#` everybody's tree).
    fn check(&self, user: Option<&str>, client_id: &str, topic: &str, want: Want) -> bool {
        let own: &[Rule] = match user {
            None => &self.anonymous,
            Some(u) => self.users.get(u).map_or(&[], Vec::as_slice),
        };
        let matches = |filter: &str| match want {
            Want::Subscribe => covers(filter, topic),
            Want::Read | Want::Write => topic_matches(filter, topic),
        };
        let grants = |access: Access| match want {
            Want::Write => access.writes(),
            Want::Read | Want::Subscribe => access.reads(),
        };
        let decide = |rules: &mut dyn Iterator<Item = (Access, &str)>| -> Option<bool> {
            let mut granted = false;
            for (access, _) in rules.filter(|(_, f)| matches(f)) {
                if access == Access::Deny {
                    return Some(false);
                }
                granted |= grants(access);
            }
            granted.then_some(true)
        };
        if let Some(decided) = decide(&mut own.iter().map(|r| (r.access, r.filter.as_str()))) {
            return decided;
        }
        if self.patterns.is_empty()
            || user.is_some_and(|u| u.contains(['+', '#']))
            || client_id.contains(['+', '#'])
        {
            return false;
        }
        let patterns: Vec<(Access, String)> = self
            .patterns
            .iter()
            .filter_map(|r| expand(&r.filter, user, client_id).map(|f| (r.access, f)))
            .collect();
        decide(&mut patterns.iter().map(|(a, f)| (*a, f.as_str()))).unwrap_or(false)
    }
}

/// Substitutes `%c` and `%u` in a pattern; one with `%u` does not apply to anonymous clients.
fn expand(pattern: &str, user: Option<&str>, client_id: &str) -> Option<String> {
    if pattern.contains("%u") && user.is_none() {
        return None;
    }
    Some(pattern.replace("%c", client_id).replace("%u", user.unwrap_or("")))
}

/// Whether every topic matched by `sub` is also matched by `acl`.
fn covers(acl: &str, sub: &str) -> bool {
    let mut a = acl.split('/');
    let mut s = sub.split('/');
    loop {
        match (a.next(), s.next()) {
            (Some("#"), _) => return !(sub.starts_with('$') && acl == "#"),
            (Some("+"), Some(l)) if l != "#" => {}
            (Some(al), Some(sl)) if al == sl && al != "+" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACL: &str = "\
# anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic read shared/+
topic deny shared/secret
topic write sensors/alice

user bob
topic shared/bob

pattern readwrite clients/%c/#
pattern read users/%u/inbox
";

    fn acl() -> Acl {
        Acl::parse(ACL, "acl").unwrap()
    }

    #[test]
    fn anonymous_rules_come_before_the_first_user() {
        let a = acl();
        assert!(a.can_read(None, "c1", "public/news"));
        assert!(a.can_subscribe(None, "c1", "public/#"));
        assert!(!a.can_publish(None, "c1", "public/news"));
        assert!(!a.can_read(Some("alice"), "c1", "public/news"), "alice has her own rules");
    }

    #[test]
    fn user_rules_with_deny_first() {
        let a = acl();
        let alice = Some("alice");
        assert!(a.can_publish(alice, "c", "alice/x/y"));
        assert!(a.can_read(alice, "c", "shared/any"));
        assert!(!a.can_read(alice, "c", "shared/secret"), "deny wins");
        assert!(!a.can_publish(alice, "c", "shared/any"), "read only");
        assert!(a.can_publish(alice, "c", "sensors/alice"));
        assert!(!a.can_read(alice, "c", "sensors/alice"), "write only");
        assert!(a.can_publish(Some("bob"), "c", "shared/bob"), "no access word: readwrite");
        assert!(!a.can_publish(Some("mallory"), "c", "alice/x"));
    }

    #[test]
    fn subscriptions_must_be_covered() {
        let a = acl();
        let alice = Some("alice");
        assert!(a.can_subscribe(alice, "c", "alice/#"));
        assert!(a.can_subscribe(alice, "c", "alice/+/z"));
        assert!(a.can_subscribe(alice, "c", "shared/+"));
        assert!(!a.can_subscribe(alice, "c", "shared/#"), "shared/+ does not cover shared/#");
        assert!(!a.can_subscribe(alice, "c", "shared/secret"), "deny covers it");
        assert!(!a.can_subscribe(alice, "c", "#"));
        assert!(a.can_subscribe(alice, "c", "$share/g/alice/#"));
    }

    #[test]
    fn patterns_substitute_client_id_and_user() {
        let a = acl();
        assert!(a.can_publish(None, "dev42", "clients/dev42/status"));
        assert!(!a.can_publish(None, "dev42", "clients/dev43/status"));
        assert!(a.can_read(Some("bob"), "x", "users/bob/inbox"));
        assert!(!a.can_read(None, "x", "users//inbox"), "%u never matches anonymous clients");
        assert!(!a.can_publish(None, "evil/#", "clients/evil/x"), "no wildcard injection");
    }

    #[test]
    fn own_rules_decide_before_patterns_as_in_mosquitto() {
        let a = Acl::parse(
            "topic read public/#\nuser alice\ntopic readwrite alice/#\ntopic deny secret/#\n\
             pattern deny alice/%c\npattern readwrite secret/%u\npattern read everyone/#\npattern write users/%u/%c\n",
            "f",
        )
        .unwrap();
        let alice = Some("alice");
        assert!(a.can_publish(alice, "x", "alice/x"), "her own grant comes before the pattern's deny");
        assert!(!a.can_publish(alice, "c", "secret/alice"), "her own deny comes before the pattern's grant");
        assert!(a.can_read(alice, "c", "everyone/x"));
        assert!(a.can_publish(alice, "c", "users/alice/c"));
        // A wildcard in the user name or client id: no pattern at all, not only those that
        // would carry it (mosquitto denies such a client every pattern).
        assert!(!a.can_read(alice, "x+y", "everyone/x"));
        assert!(!a.can_publish(alice, "x+y", "users/alice/x"));
        assert!(!a.can_read(Some("a#"), "c", "everyone/x"));
        assert!(a.can_publish(alice, "x+y", "alice/x"), "her own rules still apply");
        assert!(a.can_read(None, "+", "public/x"), "and the anonymous ones");
    }

    #[test]
    fn bad_lines() {
        assert_eq!(
            Acl::parse("topic read a/#/b\n", "f").unwrap_err().to_string(),
            "f:1: invalid topic filter 'a/#/b': '#' must be the last level, alone"
        );
        assert_eq!(
            Acl::parse("\nfoo bar\n", "f").unwrap_err().to_string(),
            "f:2: unknown keyword 'foo' (expected user, topic or pattern)"
        );
        assert_eq!(Acl::parse("user\n", "f").unwrap_err().to_string(), "f:1: user needs a name");
        // A misspelt access word is refused, as mosquitto refuses it, rather than read as
        // part of a filter (the rule would then mean something else: no deny at all here).
        assert_eq!(
            Acl::parse("user a\ntopic dney secret/#\n", "f").unwrap_err().to_string(),
            "f:2: invalid access type 'dney' (expected read, write, readwrite or deny, then the topic filter)"
        );
        assert!(Acl::parse("pattern raed a/%c\n", "f").is_err());
    }

    #[test]
    fn filters_may_hold_spaces_after_an_access_word() {
        let a = Acl::parse("topic read a b/#\ntopic read\n", "f").unwrap();
        assert!(a.can_read(None, "c", "a b/c"));
        assert!(!a.can_read(None, "c", "a"));
        assert!(a.can_publish(None, "c", "read"), "one word is the filter, read and write");
        let a = Acl::parse("topic 東京\u{3000}駅/#\n", "f").unwrap();
        assert!(a.can_publish(None, "c", "東京\u{3000}駅/x"), "not split at a space other than ' '");
    }

    #[test]
    fn coverage() {
        assert!(covers("#", "a/b"));
        assert!(covers("a/#", "a"));
        assert!(covers("a/+", "a/+"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("#", "$SYS/x"));
        assert!(covers("$SYS/#", "$SYS/x"));
    }
}
