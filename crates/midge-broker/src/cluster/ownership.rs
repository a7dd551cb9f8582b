//! Which node holds a client id: each node claims the client ids its connections take in the
//! JetStream key-value bucket `MIDGE_SESSIONS`, and the latest connection wins
//! [MQTT-3.1.4-3]. "Latest" is the time the connection was opened (the nodes' clocks, as NTP
//! keeps them), with the node's origin to break ties: the order in which claims reach the
//! bucket is not the order of the connections (a claim is written after CONNACK, or before
//! it for a session taken from another node, and one that loses a compare-and-set race
//! writes again), so the bucket's revisions alone would let an older connection win.
//!
//! A claim is written with compare-and-set on the revision it read, only over an older claim;
//! a node that reads a newer claim than its own closes its connection instead of writing, and
//! a node that sees a newer claim arrive (watching the bucket) closes its connection too.

/// A node's claim of a client id: the value of its key in the bucket, `ORIGIN AT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// `NODE/BOOT` of the claiming node.
    pub origin: String,
    /// When the connection was opened (or, claimed before its CONNACK, asked for its session
    /// from another node), in nanoseconds since the Unix epoch.
    pub at: u64,
}

impl Claim {
    /// When the connection was opened, on this node's clock: never later than now. The
    /// nodes' clocks may differ: with the other node's behind, this is earlier than it was
    /// (a will whose delay had just passed may then be dropped, as if the client came back
    /// in time).
    pub fn instant(&self) -> std::time::Instant {
        let now = std::time::Instant::now();
        let ago = std::time::Duration::from_nanos(unix_nanos().saturating_sub(self.at));
        now.checked_sub(ago).unwrap_or(now)
    }

    /// The value written in the bucket.
    pub fn encode(&self) -> String {
        format!("{} {}", self.origin, self.at)
    }

    /// A value read from the bucket.
    pub fn decode(value: &[u8]) -> Option<Claim> {
        let (origin, at) = std::str::from_utf8(value).ok()?.rsplit_once(' ')?;
        Some(Claim { origin: origin.to_owned(), at: at.parse().ok()? })
    }

    /// True when this claim is of a later connection than `other`'s.
    pub fn supersedes(&self, other: &Claim) -> bool {
        (self.at, &self.origin) > (other.at, &other.origin)
    }
}

/// Now, as a claim's time: nanoseconds since the Unix epoch.
pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_connections_win_and_ties_are_broken_by_origin() {
        let a = Claim { origin: "node-a/1".into(), at: 100 };
        let b = Claim { origin: "node-b/1".into(), at: 200 };
        assert!(b.supersedes(&a) && !a.supersedes(&b));
        let a2 = Claim { at: 200, ..a.clone() };
        assert!(b.supersedes(&a2) && !a2.supersedes(&b));
        assert!(!a.supersedes(&a));
        assert_eq!(Claim::decode(a.encode().as_bytes()), Some(a));
        assert_eq!(Claim::decode(b"node-a/1"), None);
        assert_eq!(Claim::decode(b"node-a/1 x"), None);
    }
}
