//! Retained messages: at most one per topic, in a tree of topic levels so that a new
//! subscription finds the ones its filter matches without scanning them all.
use std::sync::Arc;
use std::time::Instant;

use ahash::AHashMap;

use crate::session::Message;

#[derive(Debug, Default)]
pub(crate) struct RetainedNode {
    children: AHashMap<Box<str>, RetainedNode>,
    message: Option<Arc<Message>>,
}

impl RetainedNode {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.message.is_none()
    }

    /// Stores `message` for the topic `levels`, replacing the one there; returns true when
    /// the topic had none before.
    pub(crate) fn set(&mut self, levels: &[&str], message: Arc<Message>) -> bool {
        match levels.split_first() {
            None => self.message.replace(message).is_none(),
            Some((first, rest)) => self.children.entry((*first).into()).or_default().set(rest, message),
        }
    }

    /// Removes the message of the topic `levels`; prunes empty nodes. True when one existed.
    pub(crate) fn remove(&mut self, levels: &[&str]) -> bool {
        match levels.split_first() {
            None => self.message.take().is_some(),
            Some((first, rest)) => {
                let Some(child) = self.children.get_mut(*first) else {
                    return false;
                };
                let removed = child.remove(rest);
                if child.is_empty() {
                    self.children.remove(*first);
                }
                removed
            }
        }
    }

    /// Collects the unexpired messages whose topics match the filter `levels`. At the first
    /// level, wildcards do not match topics starting with `$` [MQTT-4.7.2-1].
    pub(crate) fn collect(&self, levels: &[&str], first: bool, now: Instant, out: &mut Vec<Arc<Message>>) {
        let Some((level, rest)) = levels.split_first() else {
            self.push(now, out);
            return;
        };
        match *level {
            "#" => {
                // The parent level matches too.
                self.push(now, out);
                for (name, child) in &self.children {
                    if !(first && name.starts_with('$')) {
                        child.collect_all(now, out);
                    }
                }
            }
            "+" => {
                for (name, child) in &self.children {
                    if !(first && name.starts_with('$')) {
                        child.collect(rest, false, now, out);
                    }
                }
            }
            literal => {
                if let Some(child) = self.children.get(literal) {
                    child.collect(rest, false, now, out);
                }
            }
        }
    }

    fn collect_all(&self, now: Instant, out: &mut Vec<Arc<Message>>) {
        self.push(now, out);
        for child in self.children.values() {
            child.collect_all(now, out);
        }
    }

    fn push(&self, now: Instant, out: &mut Vec<Arc<Message>>) {
        if let Some(m) = &self.message {
            if !m.is_expired(now) {
                out.push(m.clone());
            }
        }
    }

    /// How many messages are retained.
    pub(crate) fn count(&self) -> usize {
        usize::from(self.message.is_some()) + self.children.values().map(RetainedNode::count).sum::<usize>()
    }
}
