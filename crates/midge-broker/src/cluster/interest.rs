//! Which filters this node's sessions hold, counted: the node subscribes on NATS once per
//! distinct filter, when the first local session subscribes to it, and unsubscribes when the
//! last one goes. The router tells each change (a session's subscription added or removed,
//! never one replaced) through [`crate::router::InterestHook`].
use std::collections::HashMap;

/// A change of the node's NATS subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The first local holder of this filter: subscribe.
    Subscribe(String),
    /// The last one went: unsubscribe.
    Unsubscribe(String),
}

/// How many local sessions hold each filter.
#[derive(Debug, Default)]
pub struct Interest {
    counts: HashMap<String, usize>,
}

impl Interest {
    /// A session subscribed to `filter`.
    pub fn add(&mut self, filter: &str) -> Option<Change> {
        let n = self.counts.entry(filter.to_owned()).or_insert(0);
        *n += 1;
        (*n == 1).then(|| Change::Subscribe(filter.to_owned()))
    }

    /// A session's subscription to `filter` went. A removal the node never saw added is
    /// ignored.
    pub fn remove(&mut self, filter: &str) -> Option<Change> {
        let n = self.counts.get_mut(filter)?;
        *n -= 1;
        if *n > 0 {
            return None;
        }
        self.counts.remove(filter);
        Some(Change::Unsubscribe(filter.to_owned()))
    }

    /// The distinct filters held.
    pub fn filters(&self) -> impl Iterator<Item = &str> {
        self.counts.keys().map(String::as_str)
    }

    /// How many local sessions hold `filter`.
    pub fn holders(&self, filter: &str) -> usize {
        self.counts.get(filter).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_distinct_filter() {
        let mut i = Interest::default();
        assert_eq!(i.add("a/#"), Some(Change::Subscribe("a/#".into())));
        assert_eq!(i.add("a/#"), None);
        assert_eq!(i.add("$share/g/a/#"), Some(Change::Subscribe("$share/g/a/#".into())));
        assert_eq!(i.remove("a/#"), None);
        assert_eq!(i.holders("a/#"), 1);
        assert_eq!(i.remove("a/#"), Some(Change::Unsubscribe("a/#".into())));
        assert_eq!(i.remove("a/#"), None);
        assert_eq!(i.remove("never"), None);
        assert_eq!(i.filters().collect::<Vec<_>>(), vec!["$share/g/a/#"]);
    }
}
