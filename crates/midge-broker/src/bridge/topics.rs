//! A bridge's topics: the filters it subscribes to on each side, and how a topic is renamed
//! on its way across, by prefix, exactly as mosquitto renames it (`bridge_topic.c`): the
//! first topic line of the right direction whose filter matches decides; its prefix on one
//! side is taken off and the other side's put on. A topic no line matches crosses unchanged.
use midge_codec::topic_matches;

use crate::config::bridge::BridgeTopic;

/// The name on the remote broker of a local topic the bridge forwards.
pub fn to_remote(topics: &[BridgeTopic], topic: &str) -> String {
    for t in topics.iter().filter(|t| t.direction.outgoing() && has_prefix(t)) {
        if topic_matches(&t.local_topic(), topic) {
            return rename(topic, t.local_prefix.as_deref(), t.remote_prefix.as_deref());
        }
    }
    topic.to_owned()
}

/// The name on this broker of a topic received from the remote.
pub fn to_local(topics: &[BridgeTopic], topic: &str) -> String {
    for t in topics.iter().filter(|t| t.direction.incoming() && has_prefix(t)) {
        if topic_matches(&t.remote_topic(), topic) {
            return rename(topic, t.remote_prefix.as_deref(), t.local_prefix.as_deref());
        }
    }
    topic.to_owned()
}

fn has_prefix(t: &BridgeTopic) -> bool {
    t.local_prefix.is_some() || t.remote_prefix.is_some()
}

fn rename(topic: &str, from: Option<&str>, to: Option<&str>) -> String {
    let rest = from.and_then(|p| topic.strip_prefix(p)).unwrap_or(topic);
    format!("{}{rest}", to.unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::bridge::Direction;
    use midge_codec::QoS;

    fn topic(
        pattern: Option<&str>,
        direction: Direction,
        local: Option<&str>,
        remote: Option<&str>,
    ) -> BridgeTopic {
        BridgeTopic {
            pattern: pattern.map(str::to_owned),
            direction,
            qos: QoS::AtLeastOnce,
            local_prefix: local.map(str::to_owned),
            remote_prefix: remote.map(str::to_owned),
        }
    }

    #[test]
    fn prefixes_are_swapped_both_ways() {
        let t = [topic(Some("sensors/#"), Direction::Both, Some("site/"), Some("central/site1/"))];
        assert_eq!(to_remote(&t, "site/sensors/t1"), "central/site1/sensors/t1");
        assert_eq!(to_local(&t, "central/site1/sensors/t1"), "site/sensors/t1");
    }

    #[test]
    fn an_empty_pattern_maps_one_topic_to_another() {
        let t = [topic(None, Direction::In, Some("local/cmd"), Some("remote/cmd"))];
        assert_eq!(to_local(&t, "remote/cmd"), "local/cmd");
        // Not an outgoing line: unchanged.
        assert_eq!(to_remote(&t, "local/cmd"), "local/cmd");
    }

    #[test]
    fn the_first_matching_line_of_the_direction_decides() {
        let t = [
            topic(Some("a/#"), Direction::Out, None, Some("x/")),
            topic(Some("a/b"), Direction::Out, None, Some("y/")),
            topic(Some("#"), Direction::In, Some("in/"), None),
        ];
        assert_eq!(to_remote(&t, "a/b"), "x/a/b");
        assert_eq!(to_local(&t, "a/b"), "in/a/b");
        assert_eq!(to_remote(&t, "other"), "other");
    }
}
