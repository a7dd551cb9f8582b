//! Exactly what each receiver got: one bit per sequence number per publisher, so a message
//! counts once however late or often it arrives, and what never arrived is lost.
//!
//! A receiver is a subscriber, or a `$share` group (its members share one count: each message
//! goes to one of them). It expects messages from some publishers (pairs: its own; fan-in and
//! fan-out: all); a message from another, or of the wrong size, is invalid.
use super::wire::stamp;

/// What a receiver got from one publisher.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    bits: Vec<u64>,
    /// Sequence numbers received at least once.
    distinct: u64,
    /// Copies of sequence numbers already received.
    duplicates: u64,
    /// Sequence numbers received after a higher one.
    out_of_order: u64,
    /// The highest sequence number received, plus one.
    next: u64,
}

impl Seen {
    #[inline]
    pub fn record(&mut self, seq: u32) {
        let word = (seq >> 6) as usize;
        if word >= self.bits.len() {
            let len = (word + 1).max(self.bits.len() * 2).max(1024);
            self.bits.resize(len, 0);
        }
        let bit = 1u64 << (seq & 63);
        if self.bits[word] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        self.bits[word] |= bit;
        self.distinct += 1;
        if u64::from(seq) < self.next {
            self.out_of_order += 1;
        } else {
            self.next = u64::from(seq) + 1;
        }
    }

    /// Distinct sequence numbers at or above `published`: never published, so invalid.
    fn beyond(&self, published: u64) -> u64 {
        if self.next <= published {
            return 0;
        }
        let first = (published >> 6) as usize;
        let mut n: u64 =
            self.bits.get(first + 1..).map_or(0, |w| w.iter().map(|w| u64::from(w.count_ones())).sum());
        if let Some(w) = self.bits.get(first) {
            n += u64::from((w >> (published & 63)).count_ones());
        }
        n
    }
}

/// One receiver's count.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// By publisher: `Some` for the publishers it expects.
    from: Vec<Option<Seen>>,
    size: usize,
    invalid: u64,
    /// Whether order is kept: not across the members of a `$share` group.
    ordered: bool,
}

impl Receiver {
    /// A receiver of `size`-byte payloads expecting the publishers where `expects` is true.
    pub fn new(expects: impl IntoIterator<Item = bool>, size: usize) -> Receiver {
        Receiver {
            from: expects.into_iter().map(|e| e.then(Seen::default)).collect(),
            size,
            invalid: 0,
            ordered: true,
        }
    }

    /// A `$share` group's: its members' messages interleave, so order is not counted.
    pub fn unordered(mut self) -> Receiver {
        self.ordered = false;
        self
    }

    /// Counts one payload.
    #[inline]
    pub fn record(&mut self, payload: &[u8]) {
        match stamp(payload) {
            Some((publisher, seq)) if payload.len() == self.size => {
                match self.from.get_mut(publisher as usize) {
                    Some(Some(seen)) => seen.record(seq),
                    _ => self.invalid += 1,
                }
            }
            _ => self.invalid += 1,
        }
    }

    /// Distinct messages received so far.
    pub fn distinct(&self) -> u64 {
        self.from.iter().flatten().map(|s| s.distinct).sum()
    }
}

/// The outcome of a run, once every receiver has drained.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// Messages each receiver should have got: what its publishers published.
    pub expected: u64,
    /// Distinct messages received.
    pub delivered: u64,
    /// Expected and never received: `expected - delivered`.
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Messages no publisher sent to that receiver (or not of the payload size).
    pub invalid: u64,
}

/// Adds up the receivers, given what each publisher published (complete packets written).
pub fn count<'a>(receivers: impl IntoIterator<Item = &'a Receiver>, published: &[u64]) -> Count {
    let mut c = Count::default();
    for r in receivers {
        c.invalid += r.invalid;
        for (p, seen) in r.from.iter().enumerate() {
            let Some(seen) = seen else { continue };
            let sent = published.get(p).copied().unwrap_or(0);
            let beyond = seen.beyond(sent);
            c.expected += sent;
            c.delivered += seen.distinct - beyond;
            c.invalid += beyond;
            c.duplicates += seen.duplicates;
            if r.ordered {
                c.out_of_order += seen.out_of_order;
            }
        }
    }
    c.lost = c.expected - c.delivered;
    c
}

#[cfg(test)]
mod tests {
    use super::super::wire::{PUBLISHER_AT, SEQ_AT};
    use super::*;

    fn payload(publisher: u32, seq: u32, size: usize) -> Vec<u8> {
        let mut p = vec![0u8; size];
        p[PUBLISHER_AT..SEQ_AT].copy_from_slice(&publisher.to_be_bytes());
        p[SEQ_AT..SEQ_AT + 4].copy_from_slice(&seq.to_be_bytes());
        p
    }

    #[test]
    fn gaps_are_lost_late_ones_are_not_duplicates_count_once() {
        let mut r = Receiver::new([true, true], 16);
        for seq in [0, 1, 2, 5, 3, 3, 9, 200_000] {
            r.record(&payload(0, seq, 16));
        }
        r.record(&payload(1, 0, 16));
        let c = count([&r], &[200_001, 4]);
        assert_eq!(
            c,
            Count {
                expected: 200_005,
                delivered: 8,
                lost: 199_997,
                duplicates: 1,
                out_of_order: 1,
                invalid: 0
            }
        );
        assert_eq!(c.expected, c.delivered + c.lost);
    }

    #[test]
    fn what_was_never_published_or_not_expected_is_invalid() {
        let mut r = Receiver::new([false, true], 16);
        r.record(&payload(0, 0, 16)); // not this receiver's publisher
        r.record(&payload(7, 0, 16)); // no such publisher
        r.record(&payload(1, 0, 17)); // wrong size
        r.record(&[0; 8]); // no stamp
        for seq in [0, 1, 63, 64, 65, 130] {
            r.record(&payload(1, seq, 16));
        }
        // Publisher 1 completed 64 messages: 64, 65 and 130 were never published.
        let c = count([&r], &[10, 64]);
        assert_eq!((c.expected, c.delivered, c.lost, c.invalid), (64, 3, 61, 4 + 3));
        assert_eq!(r.distinct(), 6);
    }

    #[test]
    fn beyond_counts_bits_at_and_above_the_published_count() {
        let mut s = Seen::default();
        for seq in 0..300 {
            s.record(seq);
        }
        for published in [0u64, 1, 63, 64, 65, 128, 299, 300, 5000] {
            assert_eq!(s.beyond(published), 300u64.saturating_sub(published), "published {published}");
        }
    }
}
