//! Topic names and topic filters (MQTT 5.0 section 4.7, shared subscriptions 4.8).
use std::fmt;

/// Why a topic name or filter is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicError {
    /// Empty [MQTT-4.7.3-1].
    Empty,
    /// A topic name with `+` or `#` [MQTT-4.7.0-1] (3.1.1: [MQTT-4.7.1-1]).
    WildcardInName,
    /// `#` not alone in the last level [MQTT-4.7.1-1] (3.1.1: [MQTT-4.7.1-2]).
    MisplacedMultiLevelWildcard,
    /// `+` sharing a level with other characters [MQTT-4.7.1-2] (3.1.1: [MQTT-4.7.1-3]).
    MisplacedSingleLevelWildcard,
    /// `$share/` followed by an empty share name or one with `/`, `+` or `#` [MQTT-4.8.2-1].
    InvalidShareName,
    /// `$share/NAME` without `/` and a topic filter after it [MQTT-4.8.2-2].
    MissingSharedFilter,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicError::Empty => "empty",
            TopicError::WildcardInName => "wildcard character in a topic name",
            TopicError::MisplacedMultiLevelWildcard => "'#' must be the last level, alone",
            TopicError::MisplacedSingleLevelWildcard => "'+' must occupy a whole level",
            TopicError::InvalidShareName => "shared subscription with an invalid share name",
            TopicError::MissingSharedFilter => "shared subscription without a topic filter",
        })
    }
}

impl std::error::Error for TopicError {}

/// Checks a topic name, as carried by PUBLISH and wills.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        // [MQTT-4.7.0-1] wildcard characters MUST NOT be used within a Topic Name.
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a topic filter, as carried by SUBSCRIBE and UNSUBSCRIBE, including the rules of
/// `$share/{ShareName}/{filter}`.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    let plain = match parse_shared(filter)? {
        Some(shared) => shared.filter,
        None => filter,
    };
    validate_plain_filter(plain)
}

fn validate_plain_filter(filter: &str) -> Result<(), TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            // [MQTT-4.7.1-1] '#' MUST be the last character, alone in its level.
            return Err(TopicError::MisplacedMultiLevelWildcard);
        }
        if level.contains('+') && level != "+" {
            // [MQTT-4.7.1-2] '+' MUST occupy an entire level of the filter.
            return Err(TopicError::MisplacedSingleLevelWildcard);
        }
    }
    Ok(())
}

/// True when `topic` is a valid topic name.
pub fn is_valid_topic_name(topic: &str) -> bool {
    validate_topic_name(topic).is_ok()
}

/// True when `filter` is a valid topic filter.
pub fn is_valid_topic_filter(filter: &str) -> bool {
    validate_topic_filter(filter).is_ok()
}

/// A shared subscription filter split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    /// The share name (the group).
    pub group: &'a str,
    /// The topic filter after the group.
    pub filter: &'a str,
}

/// Splits `$share/{group}/{filter}`; `Ok(None)` for a filter that is not shared.
pub fn parse_shared(filter: &str) -> Result<Option<SharedFilter<'_>>, TopicError> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        if filter == "$share" {
            return Err(TopicError::MissingSharedFilter);
        }
        return Ok(None);
    };
    let (group, filter) = match rest.split_once('/') {
        Some(parts) => parts,
        None if rest.is_empty() || rest.contains(['+', '#']) => return Err(TopicError::InvalidShareName),
        None => return Err(TopicError::MissingSharedFilter),
    };
    // [MQTT-4.8.2-1] the ShareName MUST be at least one character long and MUST NOT contain
    // "/", "+" or "#".
    if group.is_empty() || group.contains(['+', '#']) {
        return Err(TopicError::InvalidShareName);
    }
    // [MQTT-4.8.2-2] the "/" after the ShareName MUST be followed by a Topic Filter.
    if filter.is_empty() {
        return Err(TopicError::MissingSharedFilter);
    }
    validate_plain_filter(filter)?;
    Ok(Some(SharedFilter { group, filter }))
}

/// Whether a (non-shared) topic filter matches a topic name (section 4.7).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    // [MQTT-4.7.2-1] a filter starting with a wildcard does not match topics starting with '$'.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            // '#' also matches the parent level: "a/#" matches "a" (section 4.7.1.2).
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(validate_topic_name("a/b"), Ok(()));
        assert_eq!(validate_topic_name("/"), Ok(()));
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a/#"), Err(TopicError::WildcardInName));
    }

    #[test]
    fn filters() {
        for ok in ["#", "+", "a/#", "a/+/b", "+/+", "/+", "a//b", "$SYS/#", "$share/g/a/#", "$share/g/#"] {
            assert_eq!(validate_topic_filter(ok), Ok(()), "{ok}");
        }
        let bad = [
            ("", TopicError::Empty),
            ("a/#/b", TopicError::MisplacedMultiLevelWildcard),
            ("a#", TopicError::MisplacedMultiLevelWildcard),
            ("a/b#", TopicError::MisplacedMultiLevelWildcard),
            ("a+", TopicError::MisplacedSingleLevelWildcard),
            ("a/+b/c", TopicError::MisplacedSingleLevelWildcard),
            ("$share/", TopicError::InvalidShareName),
            ("$share//a", TopicError::InvalidShareName),
            ("$share/g+/a", TopicError::InvalidShareName),
            ("$share/g", TopicError::MissingSharedFilter),
            ("$share/g/", TopicError::MissingSharedFilter),
            ("$share", TopicError::MissingSharedFilter),
            ("$share/g/a#", TopicError::MisplacedMultiLevelWildcard),
        ];
        for (f, e) in bad {
            assert_eq!(validate_topic_filter(f), Err(e), "{f}");
        }
    }

    #[test]
    fn matching() {
        assert!(topic_matches("a/b", "a/b"));
        assert!(topic_matches("a/+", "a/b"));
        assert!(!topic_matches("a/+", "a/b/c"));
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("#", "a/b"));
        assert!(topic_matches("+/+", "/a"));
        assert!(!topic_matches("+", "/a"));
        assert!(!topic_matches("#", "$SYS/x"));
        assert!(!topic_matches("+/x", "$SYS/x"));
        assert!(topic_matches("$SYS/#", "$SYS/x"));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(!topic_matches("a/b/c", "a/b"));
    }
}
