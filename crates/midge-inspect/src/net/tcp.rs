//! TCP reassembly: segments, in capture order, to the two byte streams of each connection.
//!
//! Each direction keeps the sequence number of the next byte it expects (RFC 9293, section
//! 3.4). A segment at that number is delivered, with any held segments it makes contiguous;
//! a segment beyond it is held; bytes before it were delivered already (retransmissions and
//! the overlapping part of a segment are dropped: the first copy wins). Sequence numbers
//! wrap at 2^32, so positions are kept as 64-bit offsets from the first byte.
//!
//! A hole is given up on when the receiver acknowledges bytes beyond it (it got them: the
//! capture missed them, and no retransmission will come), when too much is held behind it, or
//! at the end; what follows it is then delivered after a [`TcpEvent::Gap`].
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;

use super::ip::Segment;

/// A connection's number, in the order connections were first seen.
pub type ConnId = u64;

/// Held out-of-order bytes per direction before the hole in front of them is given up on.
const MAX_HELD: usize = 8 * 1024 * 1024;

/// What reassembly found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpEvent {
    /// A new connection. `start_seen`: its SYN was captured, so its streams start at their
    /// first byte.
    Opened {
        /// The connection.
        id: ConnId,
        /// The side that opened it (or, without a SYN, the best guess).
        client: SocketAddr,
        /// The other side.
        server: SocketAddr,
        /// Whether the SYN was captured.
        start_seen: bool,
    },
    /// The next bytes of one direction, in order.
    Data {
        /// The connection.
        id: ConnId,
        /// Sent by the client (else by the server).
        from_client: bool,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Bytes of one direction that were not captured: what follows is not contiguous.
    Gap {
        /// The connection.
        id: ConnId,
        /// Sent by the client (else by the server).
        from_client: bool,
        /// How many bytes are missing.
        missing: u64,
    },
    /// The connection ended (FIN both ways or RST), or the capture did.
    Closed {
        /// The connection.
        id: ConnId,
    },
}

/// Counters for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Segments whose bytes had all been delivered already.
    pub retransmissions: u64,
    /// Segments held until the bytes before them arrived.
    pub out_of_order: u64,
}

/// One direction of a connection.
#[derive(Debug, Default)]
struct Direction {
    /// The initial sequence number, when the SYN was seen.
    isn: Option<u32>,
    /// Whether `next_seq` is known.
    started: bool,
    /// The sequence number of the next byte to deliver.
    next_seq: u32,
    /// Bytes delivered (or skipped over a gap) so far.
    delivered: u64,
    /// Held segments by offset.
    held: BTreeMap<u64, Vec<u8>>,
    held_bytes: usize,
    /// The receiver acknowledged the bytes before this offset.
    acked: u64,
    fin: bool,
}

#[derive(Debug)]
struct Conn {
    id: ConnId,
    client: SocketAddr,
    /// [from the client, from the server].
    dirs: [Direction; 2],
    closed: bool,
}

/// Reassembles every TCP connection of a capture.
#[derive(Debug)]
pub struct Reassembler {
    conns: HashMap<(SocketAddr, SocketAddr), Conn>,
    next_id: ConnId,
    server_ports: HashSet<u16>,
    stats: TcpStats,
}

impl Reassembler {
    /// `server_ports` tell which side is the server when a connection's SYN was not captured.
    pub fn new(server_ports: impl IntoIterator<Item = u16>) -> Reassembler {
        Reassembler {
            conns: HashMap::new(),
            next_id: 0,
            server_ports: server_ports.into_iter().collect(),
            stats: TcpStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> TcpStats {
        self.stats
    }

    /// Takes one segment; what it completes is appended to `out`.
    pub fn push(&mut self, seg: &Segment<'_>, out: &mut Vec<TcpEvent>) {
        let key = if seg.src <= seg.dst { (seg.src, seg.dst) } else { (seg.dst, seg.src) };
        let pure_syn = seg.syn && !seg.ack;
        if let Some(conn) = self.conns.get_mut(&key) {
            let dir = usize::from(seg.src != conn.client);
            // A SYN with another initial sequence number: the ports were reused for a new
            // connection (whose predecessor's end may not have been captured).
            if pure_syn && conn.dirs[dir].isn != Some(seg.seq) {
                if !conn.closed {
                    conn.close(out);
                }
                self.conns.remove(&key);
            }
        }
        if !self.conns.contains_key(&key) {
            if !seg.syn && seg.payload.is_empty() {
                return; // a stray ACK, FIN or RST of a connection whose data was not captured
            }
            let client = if seg.syn {
                if seg.ack {
                    seg.dst
                } else {
                    seg.src
                }
            } else if self.server_ports.contains(&seg.dst.port())
                && !self.server_ports.contains(&seg.src.port())
            {
                seg.src
            } else if self.server_ports.contains(&seg.src.port())
                && !self.server_ports.contains(&seg.dst.port())
            {
                seg.dst
            } else {
                seg.src
            };
            let server = if client == seg.src { seg.dst } else { seg.src };
            let id = self.next_id;
            self.next_id += 1;
            out.push(TcpEvent::Opened { id, client, server, start_seen: seg.syn });
            self.conns.insert(key, Conn { id, client, dirs: Default::default(), closed: false });
        }
        let Some(conn) = self.conns.get_mut(&key) else { return };
        if conn.closed {
            return;
        }
        let from_client = seg.src == conn.client;
        let dir = &mut conn.dirs[usize::from(!from_client)];
        dir.accept(seg, conn.id, from_client, out, &mut self.stats);
        if seg.ack {
            // The other direction's bytes up to the acknowledgment number were received.
            conn.dirs[usize::from(from_client)].acked(seg.ack_number, conn.id, !from_client, out);
        }
        if seg.rst || (conn.dirs[0].fin && conn.dirs[1].fin) {
            conn.close(out);
        }
    }

    /// The capture ended: every open connection is closed (held bytes after holes are
    /// delivered after a [`TcpEvent::Gap`]).
    pub fn finish(&mut self, out: &mut Vec<TcpEvent>) {
        let mut open: Vec<&mut Conn> = self.conns.values_mut().filter(|c| !c.closed).collect();
        open.sort_by_key(|c| c.id);
        for conn in open {
            conn.close(out);
        }
    }
}

impl Conn {
    fn close(&mut self, out: &mut Vec<TcpEvent>) {
        for (i, dir) in self.dirs.iter_mut().enumerate() {
            dir.flush_held(self.id, i == 0, out);
        }
        self.closed = true;
        out.push(TcpEvent::Closed { id: self.id });
    }
}

impl Direction {
    fn accept(
        &mut self,
        seg: &Segment<'_>,
        id: ConnId,
        from_client: bool,
        out: &mut Vec<TcpEvent>,
        stats: &mut TcpStats,
    ) {
        let mut data_seq = seg.seq;
        if seg.syn {
            if self.isn.is_none() && self.delivered == 0 {
                self.isn = Some(seg.seq);
                self.next_seq = seg.seq.wrapping_add(1);
                self.started = true;
            }
            // The SYN takes one sequence number; data on a SYN (TCP Fast Open) follows it.
            data_seq = seg.seq.wrapping_add(1);
        }
        if seg.fin {
            self.fin = true;
        }
        if seg.payload.is_empty() {
            return;
        }
        if !self.started {
            // The connection's start was not captured: this stream starts here.
            self.next_seq = data_seq;
            self.started = true;
        }
        // The segment's offset from the next expected byte, within +-2 GiB: sequence numbers
        // compare modulo 2^32 (RFC 9293, section 3.4).
        let ahead = i64::from(data_seq.wrapping_sub(self.next_seq) as i32);
        let delivered = self.delivered as i64;
        let start = delivered + ahead;
        let end = start + seg.payload.len() as i64;
        if end <= delivered {
            stats.retransmissions += 1;
            return;
        }
        if start <= delivered {
            // Starts at or before the next byte: the part not yet delivered goes out now.
            let skip = (delivered - start) as usize;
            self.deliver(&seg.payload[skip..], id, from_client, out);
            self.drain(id, from_client, out);
            return;
        }
        stats.out_of_order += 1;
        let offset = start as u64;
        let keep = match self.held.get(&offset) {
            Some(held) => held.len() < seg.payload.len(),
            None => true,
        };
        if keep {
            let old = self.held.insert(offset, seg.payload.to_vec()).map_or(0, |v| v.len());
            self.held_bytes = self.held_bytes + seg.payload.len() - old;
        }
        self.skip_acknowledged_holes(id, from_client, out);
        if self.held_bytes > MAX_HELD {
            // The hole in front is not going to be filled: give it up.
            self.skip_to_first_held(id, from_client, out);
            self.drain(id, from_client, out);
        }
    }

    /// The receiver acknowledged everything before `ack` (RFC 9293, section 3.4): a hole
    /// before that was delivered to it and missed by the capture. Nothing is reported until
    /// bytes after the hole arrive (a missed FIN is acknowledged too, and is no hole).
    fn acked(&mut self, ack: u32, id: ConnId, from_client: bool, out: &mut Vec<TcpEvent>) {
        if !self.started {
            return;
        }
        let ahead = ack.wrapping_sub(self.next_seq) as i32;
        if ahead <= 0 {
            return;
        }
        self.acked = self.acked.max(self.delivered + ahead as u64);
        self.skip_acknowledged_holes(id, from_client, out);
    }

    fn skip_acknowledged_holes(&mut self, id: ConnId, from_client: bool, out: &mut Vec<TcpEvent>) {
        while let Some((&offset, _)) = self.held.first_key_value() {
            if offset > self.acked {
                break;
            }
            self.skip_to_first_held(id, from_client, out);
            self.drain(id, from_client, out);
        }
    }

    fn deliver(&mut self, data: &[u8], id: ConnId, from_client: bool, out: &mut Vec<TcpEvent>) {
        if data.is_empty() {
            return;
        }
        self.delivered += data.len() as u64;
        self.next_seq = self.next_seq.wrapping_add(data.len() as u32);
        out.push(TcpEvent::Data { id, from_client, data: data.to_vec() });
    }

    /// Delivers held segments that the delivered bytes have reached.
    fn drain(&mut self, id: ConnId, from_client: bool, out: &mut Vec<TcpEvent>) {
        while let Some(entry) = self.held.first_entry() {
            let offset = *entry.key();
            if offset > self.delivered {
                break;
            }
            let data = entry.remove();
            self.held_bytes -= data.len();
            let end = offset + data.len() as u64;
            if end > self.delivered {
                let skip = (self.delivered - offset) as usize;
                self.deliver(&data[skip..], id, from_client, out);
            }
        }
    }

    fn skip_to_first_held(&mut self, id: ConnId, from_client: bool, out: &mut Vec<TcpEvent>) {
        if let Some((&offset, _)) = self.held.first_key_value() {
            let missing = offset - self.delivered;
            out.push(TcpEvent::Gap { id, from_client, missing });
            self.delivered = offset;
            self.next_seq = self.next_seq.wrapping_add(missing as u32);
        }
    }

    fn flush_held(&mut self, id: ConnId, from_client: bool, out: &mut Vec<TcpEvent>) {
        while !self.held.is_empty() {
            self.skip_to_first_held(id, from_client, out);
            self.drain(id, from_client, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "10.0.0.5:51234";
    const S: &str = "10.0.0.1:1883";

    fn seg(from_client: bool, seq: u32, flags: &str, payload: &'static [u8]) -> Segment<'static> {
        seg_ack(from_client, seq, flags, 0, payload)
    }

    fn seg_ack(
        from_client: bool,
        seq: u32,
        flags: &str,
        ack_number: u32,
        payload: &'static [u8],
    ) -> Segment<'static> {
        let (c, s) = (C.parse().unwrap(), S.parse().unwrap());
        let (src, dst) = if from_client { (c, s) } else { (s, c) };
        Segment {
            src,
            dst,
            seq,
            syn: flags.contains('S'),
            ack: flags.contains('A'),
            ack_number,
            fin: flags.contains('F'),
            rst: flags.contains('R'),
            payload,
        }
    }

    /// The bytes delivered for each direction, and every event.
    fn run(segs: &[Segment<'static>]) -> (Vec<u8>, Vec<u8>, Vec<TcpEvent>) {
        let mut r = Reassembler::new([1883]);
        let mut events = Vec::new();
        for s in segs {
            r.push(s, &mut events);
        }
        r.finish(&mut events);
        let (mut c, mut s) = (Vec::new(), Vec::new());
        for e in &events {
            if let TcpEvent::Data { from_client, data, .. } = e {
                if *from_client { &mut c } else { &mut s }.extend_from_slice(data);
            }
        }
        (c, s, events)
    }

    #[test]
    fn in_order_with_handshake() {
        let (c, s, events) = run(&[
            seg(true, 100, "S", b""),
            seg(false, 500, "SA", b""),
            seg(true, 101, "A", b"hello "),
            seg(true, 107, "A", b"world"),
            seg(false, 501, "A", b"ok"),
        ]);
        assert_eq!(c, b"hello world");
        assert_eq!(s, b"ok");
        assert_eq!(
            events[0],
            TcpEvent::Opened {
                id: 0,
                client: C.parse().unwrap(),
                server: S.parse().unwrap(),
                start_seen: true
            }
        );
        assert_eq!(events.last(), Some(&TcpEvent::Closed { id: 0 }));
    }

    #[test]
    fn out_of_order_segments_wait_for_the_hole() {
        let (c, _, events) = run(&[
            seg(true, 100, "S", b""),
            seg(true, 107, "A", b"world"),
            seg(true, 112, "A", b"!"),
            seg(true, 101, "A", b"hello "),
        ]);
        assert_eq!(c, b"hello world!");
        assert!(!events.iter().any(|e| matches!(e, TcpEvent::Gap { .. })));
    }

    #[test]
    fn retransmissions_and_overlaps_are_delivered_once() {
        let mut r = Reassembler::new([1883]);
        let mut events = Vec::new();
        for s in [
            seg(true, 100, "S", b""),
            seg(true, 101, "A", b"abcdef"),
            seg(true, 101, "A", b"abcdef"),   // retransmission
            seg(true, 104, "A", b"defghi"),   // overlaps the delivered bytes
            seg(true, 113, "A", b"mn"),       // ahead of a hole
            seg(true, 113, "A", b"mn"),       // held twice
            seg(true, 106, "A", b"fghijklm"), // fills the hole, overlapping both sides
        ] {
            r.push(&s, &mut events);
        }
        let data: Vec<u8> = events
            .iter()
            .filter_map(|e| if let TcpEvent::Data { data, .. } = e { Some(data.clone()) } else { None })
            .collect::<Vec<_>>()
            .concat();
        assert_eq!(data, b"abcdefghijklmn");
        assert_eq!(r.stats().retransmissions, 1);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let (c, _, _) = run(&[
            seg(true, u32::MAX - 2, "S", b""),
            seg(true, u32::MAX - 1, "A", b"ab"),
            seg(true, 1, "A", b"cd"), // after the wrap, before the bytes at 0
            seg(true, 0, "A", b"X"),
        ]);
        assert_eq!(c, b"abXcd");
    }

    #[test]
    fn a_hole_never_filled_is_a_gap_at_the_end() {
        let (c, _, events) =
            run(&[seg(true, 100, "S", b""), seg(true, 101, "A", b"ab"), seg(true, 110, "A", b"yz")]);
        assert_eq!(c, b"abyz");
        assert!(events.contains(&TcpEvent::Gap { id: 0, from_client: true, missing: 7 }));
    }

    #[test]
    fn mid_stream_capture_uses_the_ports() {
        // No SYN: the side talking to 1883 is the client, even when the broker speaks first.
        let (c, s, events) = run(&[seg(false, 9000, "A", b"srv"), seg(true, 77, "A", b"cli")]);
        assert_eq!((c.as_slice(), s.as_slice()), (&b"cli"[..], &b"srv"[..]));
        assert!(matches!(events[0], TcpEvent::Opened { start_seen: false, .. }));
        if let TcpEvent::Opened { client, .. } = events[0] {
            assert_eq!(client, C.parse().unwrap());
        }
    }

    #[test]
    fn port_reuse_after_close_is_a_new_connection() {
        let (_, _, events) = run(&[
            seg(true, 100, "S", b""),
            seg(true, 101, "A", b"one"),
            seg(true, 104, "FA", b""),
            seg(false, 700, "FA", b""),
            seg(true, 100, "A", b"late"), // a stray retransmission after the close
            seg(true, 5000, "S", b""),
            seg(true, 5001, "A", b"two"),
        ]);
        let opened: Vec<_> = events.iter().filter(|e| matches!(e, TcpEvent::Opened { .. })).collect();
        let closed: Vec<_> = events.iter().filter(|e| matches!(e, TcpEvent::Closed { .. })).collect();
        assert_eq!((opened.len(), closed.len()), (2, 2));
        assert!(events.contains(&TcpEvent::Data { id: 1, from_client: true, data: b"two".to_vec() }));
        assert!(!events.iter().any(|e| matches!(e, TcpEvent::Data { data, .. } if data == b"late")));
    }

    #[test]
    fn an_acknowledged_hole_is_given_up_at_once() {
        let mut r = Reassembler::new([1883]);
        let mut events = Vec::new();
        for s in [
            seg(true, 100, "S", b""),
            seg_ack(false, 500, "SA", 101, b""),
            seg(true, 101, "A", b"ab"),
            seg(true, 106, "A", b"fg"),         // 103..106 ("cde") never captured
            seg_ack(false, 501, "A", 108, b""), // the broker got it all
            seg(true, 108, "A", b"h"),
        ] {
            r.push(&s, &mut events);
        }
        let tail: Vec<&TcpEvent> = events.iter().skip_while(|e| !matches!(e, TcpEvent::Gap { .. })).collect();
        assert_eq!(
            tail,
            [
                &TcpEvent::Gap { id: 0, from_client: true, missing: 3 },
                &TcpEvent::Data { id: 0, from_client: true, data: b"fg".to_vec() },
                &TcpEvent::Data { id: 0, from_client: true, data: b"h".to_vec() },
            ]
        );
        // An acknowledgment beyond everything seen: the next data is delivered at once; an
        // acknowledged FIN that was not captured is no hole.
        let mut r = Reassembler::new([1883]);
        let mut events = Vec::new();
        for s in [
            seg(true, 100, "S", b""),
            seg(true, 101, "A", b"ab"),
            seg_ack(false, 501, "A", 110, b""),
            seg(true, 110, "A", b"z"),
            seg_ack(false, 501, "FA", 112, b""), // acknowledges a FIN never captured
        ] {
            r.push(&s, &mut events);
        }
        let gaps: Vec<&TcpEvent> = events.iter().filter(|e| matches!(e, TcpEvent::Gap { .. })).collect();
        assert_eq!(gaps, [&TcpEvent::Gap { id: 0, from_client: true, missing: 7 }]);
        assert!(events.contains(&TcpEvent::Data { id: 0, from_client: true, data: b"z".to_vec() }));
    }

    #[test]
    fn rst_closes_and_stray_segments_open_nothing() {
        let (_, _, events) = run(&[seg(true, 5, "RA", b""), seg(true, 5, "FA", b"")]);
        assert!(events.is_empty());
        let (_, _, events) = run(&[seg(true, 100, "S", b""), seg(false, 1, "R", b"")]);
        assert_eq!(events.iter().filter(|e| matches!(e, TcpEvent::Closed { .. })).count(), 1);
    }
}
