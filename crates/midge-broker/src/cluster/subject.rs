//! MQTT topics as NATS subjects, and MQTT filters as NATS subscriptions.
//!
//! A NATS subject is tokens separated by `.`; a token may not be empty or contain white space,
//! and the tokens `*` and `>` are wildcards. An MQTT topic level may be empty and may contain
//! any UTF-8 character but U+0000 (`.`, spaces, `*`, `>` included). So each level becomes one
//! token, escaped:
//!
//! - the bytes `!` to `~` (printable ASCII) stand for themselves, except `.`, `*`, `>` and `%`;
//! - every other byte (those four, space, control characters, each byte of a multi-byte UTF-8
//!   character) is written `%XX`, two upper-case hexadecimal digits;
//! - an empty level is the token `%` alone, which escaping never produces otherwise (an
//!   escape is always `%` and two digits).
//!
//! The subject is then a prefix (`midge.m` for messages, `midge.r` for the retained stream)
//! and the levels' tokens: `a/b.c//d e` is `midge.m.a.b%2Ec.%.d%20e`. Decoding is the inverse
//! and refuses anything escaping cannot produce, so what decodes is exactly one topic.
//!
//! Filters map level by level the same way, with `+` as `*` and `#` as `>`. NATS's `>` needs
//! at least one more token, while MQTT's `#` also matches the parent level [MQTT-4.7.1-2]
//! (`a/#` matches `a`): such a filter becomes two subscriptions, `P.a.>` and `P.a`. A filter
//! that is only `#` needs no parent (the prefix alone is no topic). NATS may deliver more than
//! the MQTT filter would (`#` and `+/...` match `$` topics on NATS, [MQTT-4.7.2-1] says they
//! must not): what arrives is routed by the local router, which applies the MQTT rules, so a
//! wider NATS subscription costs traffic, never a wrong delivery.
use std::fmt::Write;

/// The prefix of the subjects that carry messages between nodes.
pub const MESSAGES: &str = "midge.m";
/// The prefix of the subjects of the stream of QoS 1 and 2 messages between nodes.
pub const QOS: &str = "midge.q";
/// The prefix of the subjects of the retained-message stream.
pub const RETAINED: &str = "midge.r";
/// The prefix of the subject a node answers requests for sessions on (its run's name
/// follows, escaped as a topic).
pub const HANDOFF: &str = "midge.h";

/// A subject that escaping did not produce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subject '{0}' is not an MQTT topic escaped by midge")]
pub struct NotATopic(pub String);

fn plain(b: u8) -> bool {
    matches!(b, b'!'..=b'~') && !matches!(b, b'.' | b'*' | b'>' | b'%')
}

/// Appends one topic level as a subject token.
fn push_level(out: &mut String, level: &str) {
    if level.is_empty() {
        out.push('%');
        return;
    }
    for &b in level.as_bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The subject of a topic name under `prefix`.
pub fn topic_to_subject(prefix: &str, topic: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + topic.len() + 8);
    out.push_str(prefix);
    for level in topic.split('/') {
        out.push('.');
        push_level(&mut out, level);
    }
    out
}

/// The topic name of a subject under `prefix`.
pub fn subject_to_topic(prefix: &str, subject: &str) -> Result<String, NotATopic> {
    let bad = || NotATopic(subject.to_owned());
    let rest = subject.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')).ok_or_else(bad)?;
    let mut bytes = Vec::with_capacity(rest.len());
    for (i, token) in rest.split('.').enumerate() {
        if i > 0 {
            bytes.push(b'/');
        }
        if token == "%" {
            continue;
        }
        let t = token.as_bytes();
        if t.is_empty() {
            return Err(bad());
        }
        let mut at = 0;
        while at < t.len() {
            match t[at] {
                b'%' => {
                    let hex =
                        t.get(at + 1..at + 3).and_then(|h| std::str::from_utf8(h).ok()).ok_or_else(bad)?;
                    // Upper-case digits only, and only for bytes that are escaped: one topic,
                    // one subject.
                    if hex.bytes().any(|c| c.is_ascii_lowercase()) {
                        return Err(bad());
                    }
                    let b = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
                    if plain(b) {
                        return Err(bad());
                    }
                    bytes.push(b);
                    at += 3;
                }
                b if plain(b) => {
                    bytes.push(b);
                    at += 1;
                }
                _ => return Err(bad()),
            }
        }
    }
    // U+0000 is not allowed in a topic [MQTT-1.5.4-2].
    if bytes.contains(&0) {
        return Err(bad());
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

/// The NATS subjects to subscribe to for a (non-shared, valid) MQTT filter: one, or two for a
/// filter ending in `/#` (the parent level too, [MQTT-4.7.1-2]).
pub fn filter_to_subjects(prefix: &str, filter: &str) -> Vec<String> {
    let mut out = String::with_capacity(prefix.len() + filter.len() + 8);
    out.push_str(prefix);
    let mut parent = None;
    for level in filter.split('/') {
        match level {
            "+" => out.push_str(".*"),
            "#" => {
                if out.len() > prefix.len() {
                    parent = Some(out.clone());
                }
                out.push_str(".>");
            }
            _ => {
                out.push('.');
                push_level(&mut out, level);
            }
        }
    }
    let mut subjects = vec![out];
    subjects.extend(parent);
    subjects
}

/// True when a NATS subscription `pattern` matches `subject` (NATS's rules: `*` one token,
/// `>` one or more at the end). For the tests, and for checking the mapping.
pub fn nats_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// MQTT's matching of a topic name against a filter (4.7), written plainly for the tests.
    fn mqtt_matches(filter: &str, topic: &str) -> bool {
        if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
            return false;
        }
        let (f, t): (Vec<&str>, Vec<&str>) = (filter.split('/').collect(), topic.split('/').collect());
        for (i, level) in f.iter().enumerate() {
            match *level {
                "#" => return true,
                "+" if i < t.len() => {}
                l if t.get(i) == Some(&l) => {}
                _ => return false,
            }
        }
        f.len() == t.len()
    }

    #[test]
    fn examples() {
        assert_eq!(topic_to_subject(MESSAGES, "a/b"), "midge.m.a.b");
        assert_eq!(topic_to_subject(MESSAGES, "a/b.c//d e"), "midge.m.a.b%2Ec.%.d%20e");
        assert_eq!(topic_to_subject(MESSAGES, "*/>/%"), "midge.m.%2A.%3E.%25");
        assert_eq!(topic_to_subject(MESSAGES, "/"), "midge.m.%.%");
        assert_eq!(topic_to_subject(MESSAGES, "$SYS/x"), "midge.m.$SYS.x");
        assert_eq!(topic_to_subject(MESSAGES, "é"), "midge.m.%C3%A9");
        assert_eq!(filter_to_subjects(MESSAGES, "a/+/c"), vec!["midge.m.a.*.c"]);
        assert_eq!(filter_to_subjects(MESSAGES, "a/#"), vec!["midge.m.a.>", "midge.m.a"]);
        assert_eq!(filter_to_subjects(MESSAGES, "#"), vec!["midge.m.>"]);
        assert_eq!(filter_to_subjects(MESSAGES, "+/#"), vec!["midge.m.*.>", "midge.m.*"]);
        assert_eq!(filter_to_subjects(MESSAGES, "a b/.x"), vec!["midge.m.a%20b.%2Ex"]);
    }

    #[test]
    fn refuses_what_escaping_does_not_make() {
        for s in [
            "midge.m",
            "midge.m.",
            "midge.m.a..b",
            "midge.m.%2e",
            "midge.m.%41",
            "midge.m.%4",
            "midge.m.%zz",
            "midge.m.%00",
            "midge.m.%FF",
            "other.a",
            "midge.ma",
            "midge.m.*",
        ] {
            assert!(subject_to_topic(MESSAGES, s).is_err(), "{s}");
        }
    }

    /// A topic level: anything but `/` and U+0000, weighted towards what NATS treats
    /// specially.
    fn level() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[a-z.*> %$#+é\t]{1,6}", "[^/\u{0}]{1,4}",]
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..6).prop_map(|l| l.join("/"))
    }

    /// A valid filter: levels, `+` for some, maybe a final `#`.
    fn filter() -> impl Strategy<Value = String> {
        (prop::collection::vec(prop_oneof![level(), Just("+".to_owned())], 0..5), any::<bool>())
            .prop_filter_map("a filter has a level", |(mut levels, hash)| {
                if hash {
                    levels.push("#".into());
                }
                // Only a level that is all `+` (or `#`) is a wildcard, and `#` only as the last
                // (`level()` can make a `#` level: "+/#/#" is no filter).
                let hash_inside = levels.iter().rev().skip(1).any(|l| l == "#");
                if levels.iter().any(|l| l != "+" && l != "#" && l.contains(['+', '#']))
                    || levels.is_empty()
                    || hash_inside
                {
                    return None;
                }
                Some(levels.join("/"))
            })
    }

    proptest! {
        #[test]
        fn round_trips(t in topic()) {
            let s = topic_to_subject(MESSAGES, &t);
            // Tokens are never empty, never wildcards, never hold white space.
            for token in s.split('.') {
                prop_assert!(!token.is_empty() && token != "*" && token != ">");
                prop_assert!(!token.bytes().any(|b| b.is_ascii_whitespace() || !b.is_ascii()));
            }
            prop_assert_eq!(subject_to_topic(MESSAGES, &s).unwrap(), t);
        }

        /// A topic an MQTT filter matches is matched by one of its NATS subscriptions; one it
        /// does not match may be matched on NATS only when it is a `$` topic (the local router
        /// then drops it).
        #[test]
        fn filters_map_to_subscriptions(f in filter(), t in topic()) {
            let subject = topic_to_subject(MESSAGES, &t);
            let on_nats = filter_to_subjects(MESSAGES, &f).iter().any(|p| nats_matches(p, &subject));
            let mqtt = mqtt_matches(&f, &t);
            if mqtt {
                prop_assert!(on_nats, "{} should get {}", f, t);
            } else if on_nats {
                prop_assert!(t.starts_with('$'), "{} should not get {}", f, t);
            }
        }

        /// A topic matches its own filter (the topic as a filter, with no wildcards).
        #[test]
        fn topic_matches_itself(t in topic()) {
            prop_assume!(!t.split('/').any(|l| l == "+" || l == "#"));
            let subject = topic_to_subject(MESSAGES, &t);
            let subs = filter_to_subjects(MESSAGES, &t);
            prop_assert_eq!(subs.len(), 1);
            prop_assert!(nats_matches(&subs[0], &subject));
        }
    }

    #[test]
    fn hash_matches_parent_level() {
        // [MQTT-4.7.1-2]: `sport/tennis/player1/#` matches `sport/tennis/player1`.
        let subs = filter_to_subjects(MESSAGES, "sport/tennis/player1/#");
        for t in
            ["sport/tennis/player1", "sport/tennis/player1/ranking", "sport/tennis/player1/score/wimbledon"]
        {
            assert!(subs.iter().any(|p| nats_matches(p, &topic_to_subject(MESSAGES, t))), "{t}");
        }
        assert!(!subs.iter().any(|p| nats_matches(p, &topic_to_subject(MESSAGES, "sport/tennis"))));
        // `+` matches an empty level: `a/+` matches `a/`.
        let subs = filter_to_subjects(MESSAGES, "a/+");
        assert!(nats_matches(&subs[0], &topic_to_subject(MESSAGES, "a/")));
    }
}
