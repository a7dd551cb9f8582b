//! The operations a `broker` fuzz input decodes to, and their byte format.
//!
//! The format is hand-made so that seeds can be written with [`encode`] and so that a byte
//! flipped by the fuzzer changes one choice: every field is one byte taken modulo the number
//! of choices (a missing byte reads as 0), and every operation starts with its opcode byte.
//! The first byte of an input picks the broker's configuration.

/// Topic levels that topics and filters are made of: wildcards, `$` levels, an empty level,
/// and the names the ACL speaks of.
pub const LEVELS: &[&str] =
    &["a", "b", "", "$SYS", "+", "#", "alice", "bob", "c", "c0", "c1", "sensors", "$share", "g"];

/// The will topics a CONNECT may carry.
pub const WILL_TOPICS: &[&str] = &["a/w", "alice/w", "$SYS/w", "c/c0/w", "sensors/alice", "b"];

/// User names (none, and three the ACL knows, one of which has no rules of its own).
pub const USERS: &[Option<&str>] = &[None, Some("alice"), Some("bob"), Some("carol")];

/// Time steps, in milliseconds: around the keep alive and hold limits, the will delays and
/// the session expiries.
pub const ADVANCE_MS: &[u64] = &[1, 100, 999, 1_500, 2_001, 5_000, 31_000, 3_600_000];

/// How many clients (connection slots) there are.
pub const SLOTS: usize = 4;

/// At most this many operations are run per input.
pub const MAX_OPS: usize = 256;

/// A topic name or filter: levels from [`LEVELS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic(pub Vec<u8>);

impl Topic {
    /// The topic as text.
    pub fn text(&self) -> String {
        self.0.iter().map(|&l| LEVELS[usize::from(l) % LEVELS.len()]).collect::<Vec<_>>().join("/")
    }
}

/// A topic filter, perhaps shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// 0: not shared, 1: `$share/g/`, 2: `$share/h/`.
    pub share: u8,
    /// The filter's levels.
    pub topic: Topic,
}

impl Filter {
    /// The filter as text.
    pub fn text(&self) -> String {
        match self.share % 3 {
            0 => self.topic.text(),
            1 => format!("$share/g/{}", self.topic.text()),
            _ => format!("$share/h/{}", self.topic.text()),
        }
    }
}

/// Which packet identifier to use in a PUBLISH, SUBSCRIBE or UNSUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewId {
    /// The next of the connection's counter.
    Fresh,
    /// This one (collisions on purpose).
    Fixed(u16),
}

/// Which packet identifier an acknowledgement carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckId {
    /// The n-th (modulo) identifier the acknowledgement could be for, as the harness knows
    /// them; 1 when there is none.
    Known(u8),
    /// This one.
    Fixed(u16),
}

/// A CONNECT's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOp {
    /// The slot, which the new connection replaces (a takeover when the client id is the same).
    pub slot: u8,
    /// 0: 3.1, 1: 3.1.1, 2: 5.0.
    pub version: u8,
    /// Clean session / clean start.
    pub clean: bool,
    /// Session Expiry Interval (5.0): 0, 2, 30, never.
    pub expiry: u8,
    /// Keep alive: 0, 1, 10, 200 s (above the max_keepalive of some configurations).
    pub keep_alive: u8,
    /// Index into [`USERS`].
    pub user: u8,
    /// 0, 1: the slot's own id `cN`; 2: the next slot's; 3: empty (the broker assigns one).
    pub id: u8,
    /// 0: no will; else an index (from 1) into [`WILL_TOPICS`].
    pub will_topic: u8,
    /// Will QoS (bits 0-1), retain (bit 2), Will Delay Interval 0/1/10/0 s (bits 3-4).
    pub will_opts: u8,
    /// Receive Maximum (5.0): none, 1, 2, 100.
    pub receive_maximum: u8,
    /// Maximum Packet Size (5.0): none, 20, 60, 1000.
    pub max_packet: u8,
    /// Topic Alias Maximum (5.0): 0, 1, 4.
    pub alias_max: u8,
    /// Enhanced authentication (5.0): none, `fuzz` with data ok / more / bad, an unknown method.
    pub auth: u8,
    /// Request Response Information (5.0).
    pub response_info: bool,
}

/// A PUBLISH's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOp {
    /// The topic.
    pub topic: Topic,
    /// QoS 0, 1, 2.
    pub qos: u8,
    /// RETAIN.
    pub retain: bool,
    /// The packet identifier.
    pub id: NewId,
    /// An empty payload (clears a retained message) instead of a unique one.
    pub empty: bool,
    /// Message Expiry Interval (5.0): none, 1, 100 s.
    pub expiry: u8,
    /// Topic alias (5.0): none; 1 with the topic; 1 without it; 70 (above the maximum).
    pub alias: u8,
    /// Other properties (5.0): none; a user property; response topic and correlation data; a
    /// subscription identifier (forbidden from clients).
    pub extra: u8,
}

/// A packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacketOp {
    /// PUBLISH.
    Publish(PublishOp),
    /// SUBSCRIBE with its filters (QoS bits 0-1, No Local bit 2, Retain As Published bit 3,
    /// Retain Handling bits 4-5 of each options byte) and a Subscription Identifier (none, 1, 42).
    Subscribe { id: NewId, filters: Vec<(Filter, u8)>, sub_id: u8 },
    /// UNSUBSCRIBE.
    Unsubscribe { id: NewId, filters: Vec<Filter> },
    /// PUBACK of a message the broker sent.
    PubAck(AckId),
    /// PUBREC of a message the broker sent; `refuse`: reason 0x80.
    PubRec(AckId, bool),
    /// PUBREL of a QoS 2 message the client published.
    PubRel(AckId),
    /// PUBCOMP of a message the broker released.
    PubComp(AckId),
    /// PINGREQ.
    PingReq,
    /// DISCONNECT: normal, with will, 0x80; Session Expiry Interval: none, 0, 60.
    Disconnect { reason: u8, expiry: u8 },
    /// AUTH: Re-authenticate, Continue, Success; the `fuzz` method or another; data none, ok, bad.
    Auth { reason: u8, other_method: bool, data: u8 },
    /// A second CONNECT.
    Connect,
}

/// One step of a fuzz input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A new connection in a slot.
    Connect(ConnectOp),
    /// A client sends a packet (encoded, then decoded by the broker's decoder).
    Send(u8, PacketOp),
    /// A client sends bytes as they are (up to 63).
    Raw(u8, Vec<u8>),
    /// A client sends its last PUBLISH again, with DUP.
    Resend(u8),
    /// Time passes (an index into [`ADVANCE_MS`]), and the timers run or not.
    Advance { ms: u8, timers: bool },
    /// A client's connection is lost (no DISCONNECT).
    Lose(u8),
    /// A client stops or starts reading its socket: the broker writes nothing more to it.
    Reading(u8, bool),
    /// The security settings are reloaded (SIGHUP).
    Reload,
}

/// A fuzz input: the configuration and the operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Which configuration (modulo the number of them).
    pub config: u8,
    /// The operations.
    pub ops: Vec<Op>,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn pick(&mut self, n: u8) -> u8 {
        self.byte() % n
    }

    fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    fn topic(&mut self) -> Topic {
        let n = 1 + self.pick(4);
        Topic((0..n).map(|_| self.pick(LEVELS.len() as u8)).collect())
    }

    fn filter(&mut self) -> Filter {
        let share = self.pick(3);
        Filter { share, topic: self.topic() }
    }

    fn new_id(&mut self) -> NewId {
        match self.byte() {
            b if b < 192 => NewId::Fresh,
            b => NewId::Fixed(u16::from(b - 191)),
        }
    }

    fn ack_id(&mut self) -> AckId {
        match self.byte() {
            b if b < 200 => AckId::Known(b),
            b => AckId::Fixed(u16::from(b - 199)),
        }
    }

    fn slot(&mut self) -> u8 {
        self.pick(SLOTS as u8)
    }

    fn connect(&mut self) -> ConnectOp {
        ConnectOp {
            slot: self.slot(),
            version: self.pick(3),
            clean: self.bool(),
            expiry: self.pick(4),
            keep_alive: self.pick(4),
            user: self.pick(USERS.len() as u8),
            id: self.pick(4),
            will_topic: self.pick(WILL_TOPICS.len() as u8 + 1),
            will_opts: self.byte(),
            receive_maximum: self.pick(4),
            max_packet: self.pick(4),
            alias_max: self.pick(3),
            auth: self.pick(5),
            response_info: self.bool(),
        }
    }

    fn packet(&mut self) -> PacketOp {
        match self.pick(11) {
            0 => PacketOp::Publish(PublishOp {
                topic: self.topic(),
                qos: self.pick(3),
                retain: self.bool(),
                id: self.new_id(),
                empty: self.byte() >= 224,
                expiry: self.pick(3),
                alias: self.pick(4),
                extra: self.pick(4),
            }),
            1 => {
                let id = self.new_id();
                let n = 1 + self.pick(3);
                let filters = (0..n).map(|_| (self.filter(), self.byte())).collect();
                PacketOp::Subscribe { id, filters, sub_id: self.pick(3) }
            }
            2 => {
                let id = self.new_id();
                let n = 1 + self.pick(2);
                PacketOp::Unsubscribe { id, filters: (0..n).map(|_| self.filter()).collect() }
            }
            3 => PacketOp::PubAck(self.ack_id()),
            4 => PacketOp::PubRec(self.ack_id(), self.bool()),
            5 => PacketOp::PubRel(self.ack_id()),
            6 => PacketOp::PubComp(self.ack_id()),
            7 => PacketOp::PingReq,
            8 => PacketOp::Disconnect { reason: self.pick(3), expiry: self.pick(3) },
            9 => PacketOp::Auth { reason: self.pick(3), other_method: self.bool(), data: self.pick(3) },
            _ => PacketOp::Connect,
        }
    }

    fn op(&mut self) -> Op {
        match self.pick(16) {
            0 | 1 => Op::Connect(self.connect()),
            2..=7 => {
                let slot = self.slot();
                Op::Send(slot, self.packet())
            }
            8 => {
                let slot = self.slot();
                let n = self.pick(64);
                Op::Raw(slot, (0..n).map(|_| self.byte()).collect())
            }
            9 => Op::Resend(self.slot()),
            10 | 11 => Op::Advance { ms: self.pick(ADVANCE_MS.len() as u8), timers: self.byte() < 192 },
            12 => Op::Lose(self.slot()),
            13 | 14 => {
                let slot = self.slot();
                Op::Reading(slot, self.bool())
            }
            _ => Op::Reload,
        }
    }
}

/// Decodes a fuzz input.
pub fn decode(data: &[u8]) -> Input {
    let mut r = Reader { data, pos: 0 };
    let config = r.byte();
    let mut ops = Vec::new();
    while !r.done() && ops.len() < MAX_OPS {
        ops.push(r.op());
    }
    Input { config, ops }
}

/// Writes an input in the format [`decode`] reads (for seeds).
pub fn encode(input: &Input) -> Vec<u8> {
    let mut w = Vec::new();
    w.push(input.config);
    for op in &input.ops {
        write_op(&mut w, op);
    }
    w
}

fn write_topic(w: &mut Vec<u8>, t: &Topic) {
    assert!((1..=4).contains(&t.0.len()), "topics have 1 to 4 levels");
    w.push(t.0.len() as u8 - 1);
    w.extend(&t.0);
}

fn write_filter(w: &mut Vec<u8>, f: &Filter) {
    w.push(f.share);
    write_topic(w, &f.topic);
}

fn write_new_id(w: &mut Vec<u8>, id: NewId) {
    w.push(match id {
        NewId::Fresh => 0,
        NewId::Fixed(n) => 191 + n as u8,
    });
}

fn write_ack_id(w: &mut Vec<u8>, id: AckId) {
    w.push(match id {
        AckId::Known(n) => n,
        AckId::Fixed(n) => 199 + n as u8,
    });
}

fn write_op(w: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Connect(c) => {
            w.push(0);
            w.extend([
                c.slot,
                c.version,
                u8::from(c.clean),
                c.expiry,
                c.keep_alive,
                c.user,
                c.id,
                c.will_topic,
                c.will_opts,
                c.receive_maximum,
                c.max_packet,
                c.alias_max,
                c.auth,
                u8::from(c.response_info),
            ]);
        }
        Op::Send(slot, p) => {
            w.extend([2, *slot]);
            match p {
                PacketOp::Publish(p) => {
                    w.push(0);
                    write_topic(w, &p.topic);
                    w.extend([p.qos, u8::from(p.retain)]);
                    write_new_id(w, p.id);
                    w.extend([if p.empty { 255 } else { 0 }, p.expiry, p.alias, p.extra]);
                }
                PacketOp::Subscribe { id, filters, sub_id } => {
                    w.push(1);
                    write_new_id(w, *id);
                    w.push(filters.len() as u8 - 1);
                    for (f, o) in filters {
                        write_filter(w, f);
                        w.push(*o);
                    }
                    w.push(*sub_id);
                }
                PacketOp::Unsubscribe { id, filters } => {
                    w.push(2);
                    write_new_id(w, *id);
                    w.push(filters.len() as u8 - 1);
                    for f in filters {
                        write_filter(w, f);
                    }
                }
                PacketOp::PubAck(a) => {
                    w.push(3);
                    write_ack_id(w, *a);
                }
                PacketOp::PubRec(a, refuse) => {
                    w.push(4);
                    write_ack_id(w, *a);
                    w.push(u8::from(*refuse));
                }
                PacketOp::PubRel(a) => {
                    w.push(5);
                    write_ack_id(w, *a);
                }
                PacketOp::PubComp(a) => {
                    w.push(6);
                    write_ack_id(w, *a);
                }
                PacketOp::PingReq => w.push(7),
                PacketOp::Disconnect { reason, expiry } => w.extend([8, *reason, *expiry]),
                PacketOp::Auth { reason, other_method, data } => {
                    w.extend([9, *reason, u8::from(*other_method), *data])
                }
                PacketOp::Connect => w.push(10),
            }
        }
        Op::Raw(slot, bytes) => {
            assert!(bytes.len() < 64);
            w.extend([8, *slot, bytes.len() as u8]);
            w.extend(bytes);
        }
        Op::Resend(slot) => w.extend([9, *slot]),
        Op::Advance { ms, timers } => w.extend([10, *ms, if *timers { 0 } else { 255 }]),
        Op::Lose(slot) => w.extend([12, *slot]),
        Op::Reading(slot, on) => w.extend([13, *slot, u8::from(*on)]),
        Op::Reload => w.push(15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_decode_to_what_was_encoded() {
        for (name, input) in super::super::seeds::all() {
            assert_eq!(decode(&encode(&input)), input, "{name}");
        }
    }
}
