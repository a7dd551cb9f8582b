//! Retained messages: at most one per topic, kept in sorted maps so that a new subscription
//! reads the ones its filter matches a page at a time, through a [`RetainedCursor`], as its
//! client takes them: nothing is copied up front, however many are stored.
//!
//! The store is split into shards by the topic's first level, each behind its own lock, so
//! that retained publishes to different roots do not wait for each other. A filter with a
//! literal first level reads one shard; one starting with a wildcard reads them in turn.
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use midge_codec::topic_matches;
use parking_lot::RwLock;

use super::tree::split_level;
use crate::session::Message;

const SHARDS: usize = 16;

/// How many stored topics one page may look at, per message it returns: a page ends early
/// rather than scan a whole shard for a filter that matches little.
const SCAN_PER_MESSAGE: usize = 16;

/// Where a replay of retained messages stands: the shard, and the last topic returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetainedCursor {
    shard: usize,
    after: Option<ByteString>,
}

/// One page of a replay.
#[derive(Debug, Default)]
pub struct RetainedPage {
    /// The unexpired messages found, in topic order.
    pub messages: Vec<Arc<Message>>,
    /// Where to go on from, or `None` once every match was returned.
    pub next: Option<RetainedCursor>,
}

/// Who published a retained message, kept with `check_retain_source true`: each time the
/// message goes to a new subscription, its publisher's right to publish on the topic is
/// checked again against the ACL in force, so a retained message outlives no revoked right
/// (mosquitto's answer to CVE-2018-12546).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainSource {
    /// The publisher's client id.
    pub client_id: ByteString,
    /// Its user name, if it gave one.
    pub username: Option<ByteString>,
    /// The listener it connected to (index in `Config::effective_listeners`): whose ACL
    /// applies with `per_listener_settings true`.
    pub listener: usize,
}

/// Whether a retained message's publisher may still publish it (see [`RetainSource`]).
pub type AdmitSource<'a> = &'a dyn Fn(&RetainSource, &Message) -> bool;

/// A retained message, with its publisher when `check_retain_source` is on.
type Entry = (Arc<Message>, Option<Arc<RetainSource>>);

/// One shard: topics in order, each with its message.
type Shard = RwLock<BTreeMap<ByteString, Entry>>;

/// The retained messages, by topic.
#[derive(Debug)]
pub struct RetainedStore {
    shards: Box<[Shard]>,
    /// The earliest expiry among each shard's messages, in milliseconds from `base`
    /// (`u64::MAX`: none): [`RetainedStore::drop_expired`] walks a shard only once it has
    /// passed. Lowered by [`RetainedStore::set`], set again by the walk.
    next_expiry: Box<[AtomicU64]>,
    base: Instant,
    hasher: ahash::RandomState,
}

impl Default for RetainedStore {
    fn default() -> Self {
        RetainedStore {
            shards: (0..SHARDS).map(|_| RwLock::new(BTreeMap::new())).collect(),
            next_expiry: (0..SHARDS).map(|_| AtomicU64::new(u64::MAX)).collect(),
            base: Instant::now(),
            hasher: ahash::RandomState::new(),
        }
    }
}

/// The literal part of a filter before its first wildcard level, without the `/` that ends
/// it: every topic the filter matches starts with it. `None` when the first level is a
/// wildcard.
fn literal_prefix(filter: &str) -> Option<&str> {
    let mut end = 0;
    let mut rest = Some(filter);
    while let Some(levels) = rest {
        let (level, next) = split_level(levels);
        if level == "+" || level == "#" {
            break;
        }
        end = filter.len() - levels.len() + level.len();
        rest = next;
    }
    (end > 0 || !filter.starts_with(['+', '#'])).then(|| &filter[..end])
}

impl RetainedStore {
    fn shard_index(&self, topic: &str) -> usize {
        (self.hasher.hash_one(split_level(topic).0) as usize) % SHARDS
    }

    /// Stores `message` as its topic's retained message, or clears the topic when the payload
    /// is empty [MQTT-3.3.1-6], [MQTT-3.3.1-7] (3.1.1: [MQTT-3.3.1-10], [MQTT-3.3.1-11]).
    pub fn set(&self, message: &Arc<Message>, source: Option<Arc<RetainSource>>) {
        let index = self.shard_index(&message.topic);
        let mut shard = self.shards[index].write();
        // Removed first, and the key is the new message's topic: the old key is a slice of
        // the old message's packet, which it would keep alive (payload and all).
        shard.remove(&message.topic);
        if !message.payload.is_empty() {
            if let Some(at) = message.expires_at {
                self.next_expiry[index].fetch_min(self.millis(at), Ordering::Relaxed);
            }
            shard.insert(message.topic.clone(), (message.clone(), source));
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Removes the messages whose Message Expiry Interval has passed (mosquitto frees them
    /// when a subscription reaches them; here they go also when none does, so that they
    /// count in `memory_limit` no longer), calling `gone` with each one's topic under its
    /// shard's lock (a journal records the removal before a new message on the topic).
    /// Walks only the shards whose earliest expiry has passed.
    pub fn drop_expired(&self, now: Instant, gone: &mut dyn FnMut(&ByteString)) -> usize {
        let mut dropped = 0;
        let now_ms = self.millis(now);
        for (index, shard) in self.shards.iter().enumerate() {
            if self.next_expiry[index].load(Ordering::Relaxed) > now_ms {
                continue;
            }
            let mut shard = shard.write();
            let mut next = u64::MAX;
            shard.retain(|topic, (m, _)| {
                let expired = m.is_expired(now);
                if expired {
                    gone(topic);
                    dropped += 1;
                } else if let Some(at) = m.expires_at {
                    next = next.min(self.millis(at));
                }
                !expired
            });
            // Under the write lock: no set lowers it meanwhile.
            self.next_expiry[index].store(next, Ordering::Relaxed);
        }
        dropped
    }

    /// The next page of at most `max` messages matching a (non-shared, valid) filter, from
    /// `cursor` (the start when `None`); a message whose publisher was kept goes only where
    /// `admit` says it may.
    pub fn page(
        &self,
        filter: &str,
        cursor: Option<&RetainedCursor>,
        max: usize,
        now: Instant,
        admit: AdmitSource<'_>,
    ) -> RetainedPage {
        let live = |(m, source): &Entry| !m.is_expired(now) && source.as_ref().is_none_or(|s| admit(s, m));
        let mut page = RetainedPage::default();
        let max = max.max(1);
        let prefix = literal_prefix(filter);
        if let Some(exact) = prefix.filter(|p| p.len() == filter.len()) {
            // No wildcard: one lookup.
            let shard = self.shards[self.shard_index(exact)].read();
            if cursor.is_none() {
                page.messages.extend(shard.get(exact).filter(|e| live(e)).map(|(m, _)| m.clone()));
            }
            return page;
        }
        let (mut shard_ix, mut after) = match cursor {
            Some(c) => (c.shard, c.after.clone()),
            None => (prefix.map_or(0, |p| self.shard_index(p)), None),
        };
        let mut budget = max * SCAN_PER_MESSAGE;
        loop {
            let shard = self.shards[shard_ix].read();
            let start = match (&after, prefix) {
                (Some(a), _) => Bound::Excluded(a.clone()),
                (None, Some(p)) => Bound::Included(ByteString::from(p)),
                (None, None) => Bound::Unbounded,
            };
            let mut finished_shard = true;
            for (topic, entry) in shard.range((start, Bound::Unbounded)) {
                if prefix.is_some_and(|p| !topic.starts_with(p)) {
                    break;
                }
                if budget == 0 || page.messages.len() == max {
                    finished_shard = false;
                    break;
                }
                budget -= 1;
                after = Some(topic.clone());
                if topic_matches(filter, topic) && live(entry) {
                    page.messages.push(entry.0.clone());
                }
            }
            drop(shard);
            if !finished_shard {
                page.next = Some(RetainedCursor { shard: shard_ix, after });
                return page;
            }
            // A literal first level lives in one shard; a wildcard one reads them all.
            if prefix.is_some() || shard_ix + 1 == SHARDS {
                return page;
            }
            shard_ix += 1;
            after = None;
            if budget == 0 || page.messages.len() == max {
                page.next = Some(RetainedCursor { shard: shard_ix, after: None });
                return page;
            }
        }
    }

    /// How many topics have a retained message.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// The payload bytes of every retained message.
    pub fn payload_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.read().values().map(|(m, _)| m.payload.len()).sum::<usize>()).sum()
    }

    /// True when no message is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(topic: &str) -> Arc<Message> {
        Arc::new(Message::from_publish(
            topic.into(),
            Bytes::from_static(b"x"),
            midge_codec::QoS::AtMostOnce,
            true,
            Default::default(),
            "p".into(),
            Instant::now(),
        ))
    }

    fn all(store: &RetainedStore, filter: &str, page_size: usize) -> Vec<String> {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = store.page(filter, cursor.as_ref(), page_size, now, &|_, _| true);
            out.extend(page.messages.iter().map(|m| m.topic.to_string()));
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        out.sort();
        out
    }

    #[test]
    fn prefixes() {
        assert_eq!(literal_prefix("a/b"), Some("a/b"));
        assert_eq!(literal_prefix("a/b/#"), Some("a/b"));
        assert_eq!(literal_prefix("a/+/c"), Some("a"));
        assert_eq!(literal_prefix("+/c"), None);
        assert_eq!(literal_prefix("#"), None);
        assert_eq!(literal_prefix("/+"), Some(""));
    }

    #[test]
    fn pages_return_every_match_once_whatever_their_size() {
        let s = RetainedStore::default();
        let mut topics = Vec::new();
        for i in 0..50 {
            for root in ["a", "b", "$SYS"] {
                let t = format!("{root}/{i}/x");
                s.set(&msg(&t), None);
                topics.push(t);
            }
        }
        s.set(&msg("a"), None);
        for size in [1, 3, 7, 100, 1000] {
            let got = all(&s, "#", size);
            assert_eq!(got.len(), 101, "page size {size}: '#' matches every topic but $SYS ones");
            assert!(got.iter().all(|t| !t.starts_with('$')));
            assert_eq!(all(&s, "a/#", size).len(), 51, "a and a/i/x");
            assert_eq!(all(&s, "+/7/x", size), vec!["a/7/x", "b/7/x"]);
            assert_eq!(all(&s, "$SYS/+/x", size).len(), 50);
            assert_eq!(all(&s, "a/1/x", size), vec!["a/1/x"]);
        }
        s.set(&Arc::new(Message { payload: Bytes::new(), ..(*msg("a/1/x")).clone() }), None);
        assert!(all(&s, "a/1/x", 10).is_empty(), "an empty payload clears the topic");
        assert_eq!(s.len(), 150);
    }

    #[test]
    fn a_replaced_message_leaves_nothing_of_itself_behind() {
        let s = RetainedStore::default();
        let old = msg("a/b");
        s.set(&old, None);
        s.set(&msg("a/b"), None);
        // The key was the old message's topic (a slice of its packet): it went with it.
        assert_eq!(Arc::strong_count(&old), 1);
        let shard = s.shards[s.shard_index("a/b")].read();
        let (key, (m, _)) = shard.iter().next().unwrap();
        assert_eq!(key.as_bytes().as_ptr(), m.topic.as_bytes().as_ptr(), "the key is the new topic");
    }

    #[test]
    fn expired_messages_are_dropped_and_named() {
        let s = RetainedStore::default();
        let now = Instant::now();
        let expiring = |topic: &str, secs| {
            let m = msg(topic);
            Arc::new(Message { expires_at: Some(now + std::time::Duration::from_secs(secs)), ..(*m).clone() })
        };
        s.set(&expiring("a/soon", 1), None);
        s.set(&expiring("b/later", 100), None);
        s.set(&msg("c/never"), None);
        // Replaced by a message without expiry: no longer counted as expiring.
        s.set(&expiring("d/replaced", 1), None);
        s.set(&msg("d/replaced"), None);
        let mut gone = Vec::new();
        assert_eq!(s.drop_expired(now, &mut |t| gone.push(t.to_string())), 0);
        let later = now + std::time::Duration::from_secs(2);
        assert_eq!(s.drop_expired(later, &mut |t| gone.push(t.to_string())), 1);
        assert_eq!(gone, ["a/soon"]);
        assert_eq!(all(&s, "#", 10), ["b/later", "c/never", "d/replaced"]);
        // The shard of b/later is walked again once b/later's time has come, not before.
        let next = |topic: &str| s.next_expiry[s.shard_index(topic)].load(Ordering::Relaxed);
        assert_eq!(next("b/later"), s.millis(now + std::time::Duration::from_secs(100)));
        assert_eq!(s.drop_expired(now + std::time::Duration::from_secs(101), &mut |_| {}), 1);
        assert_eq!(next("b/later"), u64::MAX);
    }
}
