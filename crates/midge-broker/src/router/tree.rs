//! The subscription tree: one node per topic level, `+` and `#` as their own edges.
//!
//! Every walk is a loop or uses an explicit stack, and a node drops its children without
//! recursing: the depth of the tree is the number of levels of the filters clients send,
//! which the broker bounds ([`super::TOPIC_HIERARCHY_LIMIT`]) but which must never decide how
//! deep the broker's own stack goes.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ahash::AHashMap;
use midge_codec::SubscriptionOptions;
use smallvec::SmallVec;

use crate::mailbox::SessionHandle;
use crate::memory_limit::Held;

/// One subscription of one session.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The subscriber.
    pub handle: Arc<SessionHandle>,
    /// Its options (maximum QoS, No Local, Retain As Published, Retain Handling).
    pub options: SubscriptionOptions,
    /// Its Subscription Identifier (5.0), if any.
    pub id: Option<u32>,
    /// What it takes, counted while it lives (`memory_limit`).
    pub held: Held,
}

/// Roughly what one subscription takes in memory beside its filter: its node of the tree
/// and the map entries that lead to it, its entry among the filter's subscribers, and the
/// session's record (measured: a million subscriptions of one level, 516 MB).
pub const SUBSCRIPTION_COST: usize = 512;

/// What each level of a filter after the first may add: a node of its own, in its parent's
/// map of children (made for it when it is the first child). Counted for every level, as if
/// none were shared with another filter: 65,535 filters of 100 levels each took 3.2 GB.
pub const LEVEL_COST: usize = 512;

/// The members of one shared subscription group (`$share/GROUP/filter`).
#[derive(Debug)]
pub(crate) struct SharedGroup {
    pub(crate) members: Vec<Subscription>,
    next: AtomicUsize,
    /// The whole shared filter, carried by deliveries so they can be given to another member.
    pub(crate) key: Arc<str>,
}

impl SharedGroup {
    /// The member to receive the next message: round robin among the members online with
    /// room in their queue; when none has room, the online member with the shortest queue
    /// (the publisher then waits for it, as for any congested subscriber); with none online,
    /// the next member. So a message is neither parked with an absent member nor dropped by
    /// one that does not keep up while another could take it (with a member that never
    /// acknowledged, every other message was lost; mosquitto loses them too).
    pub(crate) fn pick(&self) -> Option<&Subscription> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let members = || (0..n).map(|i| &self.members[(start + i) % n]);
        members()
            .find(|s| s.handle.is_online() && s.handle.mailbox.has_space_now())
            .or_else(|| {
                // One that still slows its publishers (it drains) before one that no
                // longer keeps up (a slow consumer, which would drop the message).
                let now = std::time::Instant::now();
                members()
                    .filter(|s| s.handle.is_online())
                    .min_by_key(|s| (s.handle.mailbox.is_slow(now), s.handle.mailbox.len()))
            })
            .or_else(|| self.members.get(start % n))
    }

    /// The online members other than `exclude`, from the next one round robin.
    pub(crate) fn others_online(&self, exclude: u64) -> impl Iterator<Item = &Subscription> {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(move |i| &self.members[(start + i) % n])
            .filter(move |s| s.handle.id != exclude && s.handle.is_online())
    }
}

/// The sessions subscribed to one filter, not shared: a short list searched in place (most
/// filters have one subscriber, which takes no allocation), a map by session once there are
/// more than [`Direct::FEW`].
#[derive(Debug, Default)]
pub(crate) struct Direct {
    few: SmallVec<[Subscription; 1]>,
    many: Option<Box<AHashMap<u64, Subscription>>>,
}

impl Direct {
    const FEW: usize = 8;

    fn is_empty(&self) -> bool {
        self.few.is_empty() && self.many.is_none()
    }

    /// Adds or replaces; true when the session was there.
    fn insert(&mut self, sub: Subscription) -> bool {
        let key = sub.handle.id;
        if let Some(many) = &mut self.many {
            return many.insert(key, sub).is_some();
        }
        if let Some(s) = self.few.iter_mut().find(|s| s.handle.id == key) {
            *s = sub;
            return true;
        }
        if self.few.len() < Self::FEW {
            self.few.push(sub);
        } else {
            let mut many: AHashMap<u64, Subscription> =
                self.few.drain(..).map(|s| (s.handle.id, s)).collect();
            many.insert(key, sub);
            self.few = SmallVec::new();
            self.many = Some(Box::new(many));
        }
        false
    }

    /// Removes the session's subscription; true when it was there.
    fn remove(&mut self, key: u64) -> bool {
        if let Some(many) = &mut self.many {
            let removed = many.remove(&key).is_some();
            if many.len() <= Self::FEW / 2 {
                self.few = many.drain().map(|(_, s)| s).collect();
                self.many = None;
            }
            return removed;
        }
        match self.few.iter().position(|s| s.handle.id == key) {
            Some(i) => {
                self.few.remove(i);
                if self.few.is_empty() {
                    self.few = SmallVec::new();
                }
                true
            }
            None => false,
        }
    }

    /// Every subscription.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Subscription> {
        self.few.iter().chain(self.many.iter().flat_map(|m| m.values()))
    }
}

/// The subscribers of one filter.
#[derive(Debug, Default)]
pub(crate) struct Subscribers {
    pub(crate) direct: Direct,
    /// Its shared subscription groups, by share name (none for most filters).
    pub(crate) shared: Option<Box<AHashMap<Box<str>, SharedGroup>>>,
}

impl Subscribers {
    pub(crate) fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.shared.is_none()
    }

    /// The shared subscription group of this share name.
    pub(crate) fn group(&self, name: &str) -> Option<&SharedGroup> {
        self.shared.as_ref()?.get(name)
    }

    /// Every shared subscription group.
    pub(crate) fn groups(&self) -> impl Iterator<Item = &SharedGroup> {
        self.shared.iter().flat_map(|m| m.values())
    }

    /// Adds or replaces; returns true when the session was already subscribed. `group` is
    /// the share name and the whole shared filter.
    fn insert(&mut self, group: Option<(&str, &str)>, sub: Subscription) -> bool {
        let key = sub.handle.id;
        match group {
            None => self.direct.insert(sub),
            Some((g, full)) => {
                let shared = self.shared.get_or_insert_with(Default::default);
                let group = shared.entry(g.into()).or_insert_with(|| SharedGroup {
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
            None => self.direct.remove(key),
            Some(g) => {
                let Some(shared) = self.shared.as_mut() else { return false };
                let Some(group) = shared.get_mut(g) else {
                    return false;
                };
                let before = group.members.len();
                group.members.retain(|m| m.handle.id != key);
                let removed = group.members.len() != before;
                if group.members.is_empty() {
                    shared.remove(g);
                    if shared.is_empty() {
                        self.shared = None;
                    }
                }
                removed
            }
        }
    }
}

/// A node of the tree: the subscribers of the filter that ends here, of the filter that ends
/// here followed by `/#`, and the next levels. Subscribers are boxed, made only where a
/// filter ends: a node is 88 bytes, in its parent's map.
#[derive(Debug, Default)]
pub(crate) struct Node {
    children: AHashMap<Box<str>, Node>,
    plus: Option<Box<Node>>,
    here: Option<Box<Subscribers>>,
    hash: Option<Box<Subscribers>>,
}

/// Adds to the subscribers in `slot`, made if there were none.
fn insert_into(slot: &mut Option<Box<Subscribers>>, group: Option<(&str, &str)>, sub: Subscription) -> bool {
    slot.get_or_insert_with(Default::default).insert(group, sub)
}

/// Removes from the subscribers in `slot`, dropped once empty.
fn remove_from(slot: &mut Option<Box<Subscribers>>, group: Option<&str>, key: u64) -> bool {
    let Some(subs) = slot.as_mut() else { return false };
    let removed = subs.remove(group, key);
    if subs.is_empty() {
        *slot = None;
    }
    removed
}

/// Where a filter's levels lead from a node: its subscribers, or a child edge.
enum Step<'f> {
    /// The filter ends at this node.
    Here,
    /// The filter's last level is `#`.
    Hash,
    /// A `+` level, then the rest.
    Plus(Option<&'f str>),
    /// A literal level, then the rest.
    Child(&'f str, Option<&'f str>),
}

fn step(rest: Option<&str>) -> Step<'_> {
    match rest {
        None => Step::Here,
        Some(levels) => match split_level(levels) {
            ("#", None) => Step::Hash,
            ("+", next) => Step::Plus(next),
            (level, next) => Step::Child(level, next),
        },
    }
}

impl Node {
    pub(crate) fn is_empty(&self) -> bool {
        self.children.is_empty() && self.plus.is_none() && self.here.is_none() && self.hash.is_none()
    }

    /// True when the node holds nothing but the one edge a removal walks through: if what
    /// lies below that edge empties, this node can go too.
    fn only_passes_through(&self) -> bool {
        self.here.is_none()
            && self.hash.is_none()
            && self.children.len() + usize::from(self.plus.is_some()) == 1
    }

    /// Adds a subscription for `filter` (valid, not shared). Returns true when the session
    /// was already subscribed to it.
    pub(crate) fn insert(&mut self, filter: &str, group: Option<(&str, &str)>, sub: Subscription) -> bool {
        let mut node = self;
        let mut rest = Some(filter);
        loop {
            node = match step(rest) {
                Step::Here => return insert_into(&mut node.here, group, sub),
                Step::Hash => return insert_into(&mut node.hash, group, sub),
                Step::Plus(next) => {
                    rest = next;
                    node.plus.get_or_insert_with(Default::default)
                }
                Step::Child(level, next) => {
                    rest = next;
                    node.children.entry(level.into()).or_default()
                }
            };
        }
    }

    /// Removes a subscription, and the nodes it leaves empty. Returns true when it existed.
    pub(crate) fn remove(&mut self, filter: &str, group: Option<&str>, key: u64) -> bool {
        // The deepest node that stays whatever happens below it, and the number of edges from
        // the root to it: if the subscription's node empties, the edge leaving it goes.
        let mut keep_depth = 0usize;
        let mut depth = 0usize;
        let mut node = &mut *self;
        let mut rest = Some(filter);
        let emptied = loop {
            let step = step(rest);
            if depth > 0 && matches!(step, Step::Plus(_) | Step::Child(..)) && !node.only_passes_through() {
                keep_depth = depth;
            }
            let next = match step {
                Step::Here => {
                    let removed = remove_from(&mut node.here, group, key);
                    break removed.then(|| node.is_empty());
                }
                Step::Hash => {
                    let removed = remove_from(&mut node.hash, group, key);
                    break removed.then(|| node.is_empty());
                }
                Step::Plus(next) => {
                    rest = next;
                    node.plus.as_deref_mut()
                }
                Step::Child(level, next) => {
                    rest = next;
                    node.children.get_mut(level)
                }
            };
            let Some(next) = next else { return false };
            node = next;
            depth += 1;
        };
        match emptied {
            None => false,
            Some(false) => true,
            Some(true) => {
                if depth > 0 {
                    self.cut(filter, keep_depth);
                }
                true
            }
        }
    }

    /// Removes the edge that leaves the node `depth` edges down `filter`'s path, with all
    /// below it (a chain the caller found empty).
    fn cut(&mut self, filter: &str, depth: usize) {
        let mut node = self;
        let mut rest = Some(filter);
        for _ in 0..depth {
            let next = match step(rest) {
                Step::Plus(next) => {
                    rest = next;
                    node.plus.as_deref_mut()
                }
                Step::Child(level, next) => {
                    rest = next;
                    node.children.get_mut(level)
                }
                Step::Here | Step::Hash => None,
            };
            match next {
                Some(n) => node = n,
                None => return,
            }
        }
        match step(rest) {
            Step::Plus(_) => node.plus = None,
            Step::Child(level, _) => {
                node.children.remove(level);
            }
            Step::Here | Step::Hash => {}
        }
    }

    /// The subscribers of exactly `filter` (no matching), if any.
    pub(crate) fn find(&self, filter: &str) -> Option<&Subscribers> {
        let mut node = self;
        let mut rest = Some(filter);
        loop {
            node = match step(rest) {
                Step::Here => return node.here.as_deref(),
                Step::Hash => return node.hash.as_deref(),
                Step::Plus(next) => {
                    rest = next;
                    node.plus.as_deref()?
                }
                Step::Child(level, next) => {
                    rest = next;
                    node.children.get(level)?
                }
            };
        }
    }

    /// Calls `f` with the subscribers of every filter that matches `topic` (section 4.7).
    /// `dollar` is true for topics starting with `$`, which filters starting with a wildcard
    /// do not match [MQTT-4.7.2-1]: it applies at the first level only. Levels are split as
    /// the walk goes, without allocating for topics of up to 16 levels.
    pub(crate) fn walk<'a>(&'a self, topic: &str, dollar: bool, f: &mut impl FnMut(&'a Subscribers)) {
        let mut stack: SmallVec<[(&'a Node, Option<&str>, bool); 16]> = SmallVec::new();
        stack.push((self, Some(topic), dollar));
        while let Some((node, rest, dollar)) = stack.pop() {
            if !dollar {
                // '#' matches the remaining levels, and the parent level itself ("a/#" matches "a").
                if let Some(hash) = node.hash.as_deref() {
                    f(hash);
                }
            }
            let Some(levels) = rest else {
                if let Some(here) = node.here.as_deref() {
                    f(here);
                }
                continue;
            };
            let (first, rest) = split_level(levels);
            if !dollar {
                if let Some(plus) = &node.plus {
                    stack.push((plus, rest, false));
                }
            }
            if let Some(child) = node.children.get(first) {
                stack.push((child, rest, false));
            }
        }
    }
}

impl Drop for Node {
    /// Drops the subtree with an explicit stack: a chain of levels as deep as a filter is long
    /// would otherwise be dropped by as many nested calls.
    fn drop(&mut self) {
        if self.children.is_empty() && self.plus.is_none() {
            return;
        }
        let mut stack: Vec<Node> = self.children.drain().map(|(_, n)| n).collect();
        stack.extend(self.plus.take().map(|b| *b));
        while let Some(mut n) = stack.pop() {
            stack.extend(n.children.drain().map(|(_, c)| c));
            stack.extend(n.plus.take().map(|b| *b));
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
