//! Messages to the client: the inflight window of QoS 1 and 2 PUBLISH awaiting their
//! acknowledgements, in the order sent, and the deliveries waiting for a free slot.
use std::collections::VecDeque;

use midge_codec::QoS;

use super::message::{Delivery, StoreEntry};

/// Where a QoS 1 or 2 message sent to the client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // named after the packets awaited
pub enum Awaiting {
    /// QoS 1, PUBLISH sent: awaiting PUBACK.
    PubAck,
    /// QoS 2, PUBLISH sent: awaiting PUBREC.
    PubRec,
    /// QoS 2, PUBREL sent: awaiting PUBCOMP.
    PubComp,
}

/// One message in flight.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// Its packet identifier.
    pub packet_id: u16,
    /// Its state.
    pub state: Awaiting,
    /// The delivery, kept for resending.
    pub delivery: Delivery,
    /// False while a resumed session holds it beyond the new connection's Receive Maximum:
    /// it is resent, with its identifier, once acknowledgements make room.
    pub sent: bool,
}

/// What a PUBREC means for the message it acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubRecOutcome {
    /// Send PUBREL; `first` unless a repeated PUBREC of a message already released. The
    /// message's store entry comes along.
    Release {
        /// The first PUBREC for it.
        first: bool,
        /// Its store entry.
        entry: Option<StoreEntry>,
    },
    /// The client refused the message (5.0 reason code of 0x80 or more): it is done.
    Refused(Option<StoreEntry>),
    /// No such packet identifier in flight.
    Unknown,
}

/// Above this many messages in flight, their packet identifiers are also kept in a bitmap:
/// looking for a free identifier by scanning the window costs up to n² once identifiers
/// wrap round a full one (65,535 in flight with `max_inflight_messages 0`: 1.8 s of CPU per
/// acknowledgement).
const INDEXED_ABOVE: usize = 64;

/// What is known of a large window without walking it.
#[derive(Debug)]
struct Index {
    /// The payload bytes in flight (`max_inflight_bytes`).
    payload: usize,
    /// The packet identifiers in flight, one bit each.
    ids: [u64; 1024],
}

impl Index {
    fn of(inflight: &VecDeque<InFlight>) -> Box<Index> {
        let mut index = Box::new(Index { payload: 0, ids: [0; 1024] });
        for f in inflight {
            index.add(f);
        }
        index
    }

    fn set(&mut self, id: u16, on: bool) {
        let (word, bit) = (usize::from(id / 64), id % 64);
        if on {
            self.ids[word] |= 1 << bit;
        } else {
            self.ids[word] &= !(1 << bit);
        }
    }

    fn add(&mut self, f: &InFlight) {
        self.payload += f.delivery.message.payload.len();
        self.set(f.packet_id, true);
    }

    fn remove(&mut self, f: &InFlight) {
        self.payload -= f.delivery.message.payload.len();
        self.set(f.packet_id, false);
    }

    fn in_use(&self, id: u16) -> bool {
        self.ids[usize::from(id / 64)] & (1 << (id % 64)) != 0
    }
}

/// The outgoing half of a session.
#[derive(Debug, Default)]
pub struct Outgoing {
    last_id: u16,
    /// How many of `inflight` are not sent on this connection yet (`sent` false); u16, as
    /// packet identifiers, so it fits beside `last_id`.
    unsent: u16,
    inflight: VecDeque<InFlight>,
    /// While more than [`INDEXED_ABOVE`] messages are in flight (8 KiB, so only then).
    index: Option<Box<Index>>,
    /// Deliveries waiting for a slot in the window (retained messages at subscribe time, and
    /// what was drained from the mailbox ahead of them).
    pub pending: VecDeque<Delivery>,
}

impl Outgoing {
    /// How many QoS 1 and 2 messages await acknowledgement.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// How many messages in flight were sent on this connection: what counts against the
    /// client's Receive Maximum [MQTT-3.3.4-9].
    pub fn sent_len(&self) -> usize {
        self.inflight.len() - usize::from(self.unsent)
    }

    /// The messages in flight, oldest first.
    pub fn inflight(&self) -> impl Iterator<Item = &InFlight> {
        self.inflight.iter()
    }

    /// The payload bytes of the messages in flight.
    pub fn inflight_payload(&self) -> usize {
        match &self.index {
            Some(index) => index.payload,
            None => self.inflight.iter().map(|f| f.delivery.message.payload.len()).sum(),
        }
    }

    /// Adds a message to the window.
    fn push(&mut self, f: InFlight) {
        if let Some(index) = &mut self.index {
            index.add(&f);
        }
        self.inflight.push_back(f);
        self.reindex();
    }

    /// Makes the index when the window grows past [`INDEXED_ABOVE`], drops it when it
    /// empties.
    fn reindex(&mut self) {
        if self.inflight.is_empty() {
            self.index = None;
        } else if self.index.is_none() && self.inflight.len() > INDEXED_ABOVE {
            self.index = Some(Index::of(&self.inflight));
        }
    }

    /// A packet identifier not in use by any message in flight [MQTT-2.2.1-3]; `None` when
    /// all 65,535 are.
    fn next_id(&mut self) -> Option<u16> {
        if self.inflight.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            self.last_id = self.last_id.wrapping_add(1);
            if self.last_id == 0 {
                continue;
            }
            let id = self.last_id;
            let in_use = match &self.index {
                Some(index) => index.in_use(id),
                None => self.inflight.iter().any(|f| f.packet_id == id),
            };
            if !in_use {
                return Some(id);
            }
        }
    }

    /// The packet identifier given last (kept with a persistent session's record).
    pub fn last_id(&self) -> u16 {
        self.last_id
    }

    /// Where identifiers go on from, for a session restored from the store.
    pub fn set_last_id(&mut self, id: u16) {
        self.last_id = id;
    }

    /// Passes over the next packet identifier (none when all are in flight).
    pub fn skip_id(&mut self) {
        self.next_id();
    }

    /// The next packet identifier, not in flight, for a packet the session does not track
    /// (with all 65,535 in flight, the one after the last given: the packet is the
    /// session's own, and a window that full has no room for it anyway).
    pub fn reserve_id(&mut self) -> u16 {
        self.next_id().unwrap_or(self.last_id.wrapping_add(1).max(1))
    }

    /// Puts a QoS 1 or 2 delivery in flight; returns its packet identifier. The caller
    /// keeps the window below 65,535 (Receive Maximum and max_inflight_messages are).
    pub fn start(&mut self, delivery: Delivery) -> u16 {
        let packet_id = self.next_id().unwrap_or(self.last_id);
        let state = if delivery.qos == QoS::ExactlyOnce { Awaiting::PubRec } else { Awaiting::PubAck };
        self.push(InFlight { packet_id, state, delivery, sent: true });
        packet_id
    }

    /// A new connection resumes the session: nothing in flight is sent on it yet.
    pub fn mark_unsent(&mut self) {
        for f in &mut self.inflight {
            f.sent = false;
        }
        self.unsent = self.inflight.len() as u16; // at most one per packet identifier
    }

    /// The oldest message in flight not sent on this connection, now marked sent.
    pub fn next_unsent(&mut self) -> Option<&InFlight> {
        if self.unsent == 0 {
            return None;
        }
        let f = self.inflight.iter_mut().find(|f| !f.sent)?;
        f.sent = true;
        self.unsent -= 1;
        Some(f)
    }

    /// Lowers the QoS of the messages in flight whose PUBLISH is not acknowledged yet to
    /// `max`: a QoS 2 one then awaits PUBACK; at QoS 0 they leave the window and are
    /// returned, oldest first. A released message (awaiting PUBCOMP) stays as it is.
    pub fn cap_qos(&mut self, max: QoS) -> Vec<Delivery> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.inflight.len() {
            let f = &mut self.inflight[i];
            if f.state == Awaiting::PubComp || f.delivery.qos <= max {
                i += 1;
            } else if max == QoS::AtMostOnce {
                out.extend(self.remove(i).map(|f| Delivery { qos: max, ..f.delivery }));
            } else {
                f.delivery.qos = max;
                f.state = Awaiting::PubAck;
                i += 1;
            }
        }
        out
    }

    fn remove(&mut self, i: usize) -> Option<InFlight> {
        let f = self.inflight.remove(i)?;
        if !f.sent {
            self.unsent -= 1;
        }
        if let Some(index) = &mut self.index {
            index.remove(&f);
        }
        self.reindex();
        Some(f)
    }

    fn position(&self, packet_id: u16, state: Awaiting) -> Option<usize> {
        self.inflight.iter().position(|f| f.packet_id == packet_id && f.state == state)
    }

    /// PUBACK received: the QoS 1 message is done. `None` for an unknown identifier.
    pub fn puback(&mut self, packet_id: u16) -> Option<InFlight> {
        self.position(packet_id, Awaiting::PubAck).and_then(|i| self.remove(i))
    }

    /// PUBREC received.
    pub fn pubrec(&mut self, packet_id: u16, refused: bool) -> PubRecOutcome {
        if let Some(i) = self.position(packet_id, Awaiting::PubRec) {
            if refused {
                let entry = self.remove(i).and_then(|f| f.delivery.entry);
                return PubRecOutcome::Refused(entry);
            }
            let f = &mut self.inflight[i];
            f.state = Awaiting::PubComp;
            // Its PUBREL goes now, so it is no longer held back (if it was).
            if !std::mem::replace(&mut f.sent, true) {
                self.unsent -= 1;
            }
            return PubRecOutcome::Release { first: true, entry: self.inflight[i].delivery.entry };
        }
        if let Some(i) = self.position(packet_id, Awaiting::PubComp) {
            return PubRecOutcome::Release { first: false, entry: self.inflight[i].delivery.entry };
        }
        PubRecOutcome::Unknown
    }

    /// PUBCOMP received: the QoS 2 message is done. `None` for an unknown identifier.
    pub fn pubcomp(&mut self, packet_id: u16) -> Option<InFlight> {
        self.position(packet_id, Awaiting::PubComp).and_then(|i| self.remove(i))
    }

    /// Puts back a message that was in flight when the session was stored (read back from
    /// the store at start), with its packet identifier and state.
    pub fn restore(&mut self, packet_id: u16, state: Awaiting, delivery: Delivery) {
        self.last_id = self.last_id.max(packet_id);
        self.push(InFlight { packet_id, state, delivery, sent: true });
    }

    /// Drops everything (the session ends) and returns what was in flight and pending.
    pub fn drain_all(&mut self) -> Vec<Delivery> {
        self.unsent = 0;
        self.index = None;
        let mut all: Vec<Delivery> = self.inflight.drain(..).map(|f| f.delivery).collect();
        all.extend(self.pending.drain(..));
        all
    }

    /// Offers each message that came through a shared subscription and that the client has
    /// not received yet to `give`, for another member: a QoS 1 message in flight (5.0 section
    /// 4.8.2: the Server MAY send it to another member as soon as the connection is lost) and
    /// what is pending. A QoS 2 message in flight is not offered: its delivery completes with
    /// this client when it is back, and never goes to another [MQTT-4.8.2-4], [MQTT-4.8.2-5].
    /// What `give` hands back stays as it was: in flight with its packet identifier and in
    /// its place (the client may have it, and must get it again with that identifier, not
    /// as a new message [MQTT-4.3.3-2]), or pending.
    pub fn give_shared(&mut self, mut give: impl FnMut(Delivery) -> Result<(), Delivery>) {
        let offered = |d: &Delivery| d.share.is_some();
        let in_flight = |f: &InFlight| offered(&f.delivery) && f.state == Awaiting::PubAck;
        if self.inflight.iter().any(in_flight) {
            let mut kept = VecDeque::with_capacity(self.inflight.len());
            for mut f in self.inflight.drain(..) {
                if in_flight(&f) {
                    match give(f.delivery) {
                        Ok(()) => continue,
                        Err(d) => f.delivery = d,
                    }
                }
                kept.push_back(f);
            }
            self.inflight = kept;
            self.unsent = self.inflight.iter().filter(|f| !f.sent).count() as u16;
            self.index = None;
            self.reindex();
        }
        if self.pending.iter().any(offered) {
            let mut kept = VecDeque::with_capacity(self.pending.len());
            for d in self.pending.drain(..) {
                match if offered(&d) { give(d) } else { Err(d) } {
                    Ok(()) => {}
                    Err(d) => kept.push_back(d),
                }
            }
            self.pending = kept;
        }
    }

    /// Drops the QoS 0 deliveries pending (none is ever in flight).
    pub fn drop_pending_qos0(&mut self) {
        self.pending.retain(|d| d.qos != QoS::AtMostOnce);
    }

    /// Drops everything (the session ends).
    pub fn clear(&mut self) {
        self.unsent = 0;
        self.index = None;
        self.inflight.clear();
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::session::Message;

    fn delivery(size: usize) -> Delivery {
        let payload = Bytes::from(vec![b'x'; size]);
        let m = Message::from_publish(
            "t".into(),
            payload,
            QoS::AtLeastOnce,
            false,
            Default::default(),
            "p".into(),
            Instant::now(),
        );
        Delivery::plain(m)
    }

    /// What the index says agrees with the window itself.
    fn check(o: &Outgoing) {
        let ids: Vec<u16> = o.inflight().map(|f| f.packet_id).collect();
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "an identifier in flight twice [MQTT-2.2.1-3]");
        let payload: usize = o.inflight().map(|f| f.delivery.message.payload.len()).sum();
        assert_eq!(o.inflight_payload(), payload);
        if o.inflight.len() > INDEXED_ABOVE {
            assert!(o.index.is_some());
        }
        if ids.is_empty() {
            assert!(o.index.is_none());
        }
        if let Some(index) = &o.index {
            // Every identifier in flight is marked, and nothing else.
            assert!(ids.iter().all(|&id| index.in_use(id)));
            assert_eq!(index.ids.iter().map(|w| w.count_ones() as usize).sum::<usize>(), ids.len());
        }
    }

    #[test]
    fn a_full_window_finds_the_one_free_identifier_at_once() {
        // 65,535 in flight, the newest acknowledged: the next message takes that identifier,
        // found in the bitmap (scanning the window for each candidate took 1.8 s).
        let mut o = Outgoing::default();
        for _ in 0..u16::MAX {
            o.start(delivery(1));
        }
        assert!(o.puback(u16::MAX).is_some());
        let started = Instant::now();
        for _ in 0..100 {
            let id = o.start(delivery(1));
            assert_eq!(id, u16::MAX);
            assert!(o.puback(id).is_some());
        }
        assert!(started.elapsed().as_secs_f64() < 1.0, "{:?}", started.elapsed());
        check(&o);
        assert_eq!(o.inflight_payload(), 65_534);
        // All 65,535 in flight: passing over an identifier (an expired delivery) finds none
        // and returns, instead of looking for ever.
        o.start(delivery(1));
        o.skip_id();
        assert_eq!(o.inflight_len(), usize::from(u16::MAX));
    }

    proptest! {
        #[test]
        fn the_index_follows_the_window(ops in proptest::collection::vec((0u8..4, 0u16..300, 0usize..40), 1..600)) {
            let mut o = Outgoing::default();
            for (op, n, size) in ops {
                match op {
                    0 | 1 => {
                        for _ in 0..n.min(100) {
                            o.start(delivery(size));
                        }
                    }
                    2 => {
                        // Acknowledge the n-th oldest, if there is one.
                        let id = o.inflight().nth(usize::from(n)).map(|f| f.packet_id);
                        if let Some(id) = id {
                            prop_assert!(o.puback(id).is_some());
                        }
                    }
                    _ => {
                        if n % 7 == 0 {
                            o.drain_all();
                        } else {
                            o.give_shared(Err);
                        }
                    }
                }
                check(&o);
            }
        }
    }
}
