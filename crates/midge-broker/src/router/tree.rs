//! The subscription tree: one node per topic level, `+` and `#` as their own edges.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ahash::AHashMap;
use midge_codec::SubscriptionOptions;

use crate::session::SessionHandle;

/// One subscription of one session.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The subscriber.
    pub handle: Arc<SessionHandle>,
    /// Its options (maximum QoS, No Local, Retain As Published, Retain Handling).
    pub options: SubscriptionOptions,
    /// Its Subscription Identifier (5.0), if any.
    pub id: Option<u32>,
}

/// The members of one shared subscription group (`$share/GROUP/filter`).
#[derive(Debug)]
pub(crate) struct SharedGroup {
    pub(crate) members: Vec<Subscription>,
    next: AtomicUsize,
    /// The whole shared filter, carried by deliveries so they can be given to another member.
    pub(crate) key: Arc<str>,
}

impl SharedGroup {
    /// The member to receive the next message: round robin, preferring members that are
    /// online so that a message is not parked with an absent member while others are there.
    pub(crate) fn pick(&self) -> Option<&Subscription> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.members[(start + i) % n])
            .find(|s| s.handle.is_online())
            .or_else(|| self.members.get(start % n))
    }

    /// An online member other than `exclude`, round robin.
    pub(crate) fn pick_other(&self, exclude: u64) -> Option<&Subscription> {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.members[(start + i) % n])
            .find(|s| s.handle.id != exclude && s.handle.is_online())
    }
}

/// The subscribers of one filter.
#[derive(Debug, Default)]
pub(crate) struct Subscribers {
    pub(crate) direct: AHashMap<u64, Subscription>,
    pub(crate) shared: AHashMap<Box<str>, SharedGroup>,
}

impl Subscribers {
    fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.shared.is_empty()
    }

    /// Adds or replaces; returns true when the session was already subscribed. `group` is
    /// the share name and the whole shared filter.
    fn insert(&mut self, group: Option<(&str, &str)>, sub: Subscription) -> bool {
        let key = sub.handle.id;
        match group {
            None => self.direct.insert(key, sub).is_some(),
            Some((g, full)) => {
                let group = self.shared.entry(g.into()).or_insert_with(|| SharedGroup {
                    members: Vec::new(),
                    next: AtomicUsize::new(0),
                    key: Arc::from(full),
                });
                match group.members.iter_mut().find(|m| m.handle.id == key) {
                    Some(m) => {
                        *m = sub;
                        true
                    }
                    None => {
                        group.members.push(sub);
                        false
                    }
                }
            }
        }
    }

    fn remove(&mut self, group: Option<&str>, key: u64) -> bool {
        match group {
            None => self.direct.remove(&key).is_some(),
            Some(g) => {
                let Some(group) = self.shared.get_mut(g) else {
                    return false;
                };
                let before = group.members.len();
                group.members.retain(|m| m.handle.id != key);
                let removed = group.members.len() != before;
                if group.members.is_empty() {
                    self.shared.remove(g);
                }
                removed
            }
        }
    }
}

/// A node of the tree: the subscribers of the filter that ends here, of the filter that ends
/// here followed by `/#`, and the next levels.
#[derive(Debug, Default)]
pub(crate) struct Node {
    children: AHashMap<Box<str>, Node>,
    plus: Option<Box<Node>>,
    pub(crate) here: Subscribers,
    pub(crate) hash: Subscribers,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.plus.is_none() && self.here.is_empty() && self.hash.is_empty()
    }

    /// Adds a subscription for the filter split into `levels`.
    pub(crate) fn insert(&mut self, levels: &[&str], group: Option<(&str, &str)>, sub: Subscription) -> bool {
        match levels {
            [] => self.here.insert(group, sub),
            ["#"] => self.hash.insert(group, sub),
            [first, rest @ ..] => {
                let child = if *first == "+" {
                    self.plus.get_or_insert_with(Default::default)
                } else {
                    self.children.entry((*first).into()).or_default()
                };
                child.insert(rest, group, sub)
            }
        }
    }

    /// Removes a subscription; prunes nodes left empty. Returns true when it existed.
    pub(crate) fn remove(&mut self, levels: &[&str], group: Option<&str>, key: u64) -> bool {
        match levels {
            [] => self.here.remove(group, key),
            ["#"] => self.hash.remove(group, key),
            [first, rest @ ..] => {
                if *first == "+" {
                    let Some(child) = self.plus.as_mut() else {
                        return false;
                    };
                    let removed = child.remove(rest, group, key);
                    if child.is_empty() {
                        self.plus = None;
                    }
                    removed
                } else {
                    let Some(child) = self.children.get_mut(*first) else {
                        return false;
                    };
                    let removed = child.remove(rest, group, key);
                    if child.is_empty() {
                        self.children.remove(*first);
                    }
                    removed
                }
            }
        }
    }

    /// The subscribers of exactly the filter `levels` (no matching), if any.
    pub(crate) fn find(&self, levels: &[&str]) -> Option<&Subscribers> {
        match levels {
            [] => Some(&self.here),
            ["#"] => Some(&self.hash),
            [first, rest @ ..] => {
                let child = if *first == "+" { self.plus.as_deref()? } else { self.children.get(*first)? };
                child.find(rest)
            }
        }
    }

    /// Calls `f` with the subscribers of every filter that matches the topic levels `rest`
    /// (section 4.7): `None` when the topic ends at this node, else the remaining levels
    /// ("a/b", or "" for one empty level), split as the walk goes, without allocating.
    /// `dollar` is true for topics starting with `$`, which filters starting with a wildcard
    /// do not match [MQTT-4.7.2-1]; it only applies at the first level.
    pub(crate) fn walk<'a>(&'a self, rest: Option<&str>, dollar: bool, f: &mut impl FnMut(&'a Subscribers)) {
        if !dollar {
            // '#' matches the remaining levels, and the parent level itself ("a/#" matches "a").
            f(&self.hash);
        }
        let Some(levels) = rest else {
            f(&self.here);
            return;
        };
        let (first, rest) = split_level(levels);
        if let Some(child) = self.children.get(first) {
            child.walk(rest, false, f);
        }
        if !dollar {
            if let Some(plus) = &self.plus {
                plus.walk(rest, false, f);
            }
        }
    }
}

/// The first level of `levels` and the rest, if there is more: a byte scan, quicker than a
/// `str` pattern search for the few bytes of a topic level.
pub(crate) fn split_level(levels: &str) -> (&str, Option<&str>) {
    match levels.bytes().position(|b| b == b'/') {
        // '/' is ASCII: both sides are on character boundaries.
        Some(i) => (&levels[..i], Some(&levels[i + 1..])),
        None => (levels, None),
    }
}
