//! The broker, its clients as the connection tasks drive them, and the model of what each
//! client may see. The driving mirrors `server/connection.rs`: CONNECT decoded by the real
//! decoder, authentication (enhanced too), `Broker::open` and takeovers, then for each
//! connection in turn: control messages, the client's bytes decoded while the link wants
//! input, `Link::poll`, the output drained, `Link::watch_timers`, and `Link::finish` once the
//! session says to close.
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use midge_broker::auth::{Acl, AuthExchange, AuthMethod, AuthStep};
use midge_broker::broker::{ConnInfo, Link, LoginStep, Opening};
use midge_broker::config::parse_str;
use midge_broker::control::ControlSlot;
use midge_broker::session::CloseReason;
use midge_broker::{Broker, Config};
use midge_codec::{
    decode_within, Auth, Bytes, BytesMut, Connect, DecodeLimits, Disconnect, Packet, Properties, Property, PropertyId,
    ProtocolVersion, Publish, PublishAck, QoS, ReasonCode, RetainHandling, Subscribe, SubscriptionOptions,
    Unsubscribe, Will,
};
use tokio::sync::oneshot;

use super::ops::{AckId, ConnectOp, NewId, Op, PacketOp, PublishOp, ADVANCE_MS, SLOTS, USERS, WILL_TOPICS};

/// The ACL every configuration with one uses: rules for anonymous clients, per user (with
/// deny rules), and patterns with `%c` and `%u`.
pub const ACL: &str = "\
topic read a/#
topic readwrite b/#
topic write a/b
topic read $SYS/#
user alice
topic readwrite alice/#
topic readwrite a/#
topic deny a/b
topic read sensors/#
user bob
topic readwrite #
topic deny alice/#
topic readwrite $SYS/#
user carol
pattern readwrite c/%c/#
pattern write sensors/%u
pattern read %u/#
";

/// The configurations an input chooses from, with their ACL (for the model).
fn configs() -> &'static [(Config, Option<Acl>)] {
    static CONFIGS: OnceLock<Vec<(Config, Option<Acl>)>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("midge-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let path = dir.join("acl");
        std::fs::write(&path, ACL).expect("the ACL file is written");
        let acl = path.display().to_string();
        let texts = [
            format!(
                "allow_anonymous true\nacl_file {acl}\nmax_inflight_messages 3\nmax_queued_messages 4\n\
                 max_keepalive 100\n"
            ),
            format!(
                "allow_anonymous true\nacl_file {acl}\nmax_packet_size 300\nmax_qos 1\n\
                 retain_available false\nresponse_information resp/\n"
            ),
            "allow_anonymous true\nmax_inflight_messages 2\nmax_queued_messages 6\n".to_owned(),
        ];
        texts
            .iter()
            .map(|t| {
                let (config, _) = parse_str(t, "fuzz.conf").expect("the fuzz configurations parse");
                let acl = t.contains("acl_file").then(|| Acl::parse(ACL, "acl").expect("the ACL parses"));
                (config, acl)
            })
            .collect()
    })
}

/// The `fuzz` enhanced authentication method: data `ok` succeeds (as user bob), `bad`
/// fails, anything else asks again, three times at most.
struct FuzzAuth;

struct FuzzExchange {
    rounds: u8,
}

impl AuthMethod for FuzzAuth {
    fn name(&self) -> &str {
        "fuzz"
    }

    fn start(&self, _client_id: &str) -> Box<dyn AuthExchange> {
        Box::new(FuzzExchange { rounds: 0 })
    }
}

impl AuthExchange for FuzzExchange {
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        self.rounds += 1;
        match data {
            Some(b"ok") => {
                AuthStep::Success { username: Some("bob".into()), data: Some(Bytes::from_static(b"welcome")) }
            }
            Some(b"bad") => AuthStep::Failure(ReasonCode::NotAuthorized),
            _ if self.rounds > 3 => AuthStep::Failure(ReasonCode::NotAuthorized),
            _ => AuthStep::Continue(Bytes::from_static(b"challenge")),
        }
    }
}

/// Where a QoS 2 packet identifier a client published stands at the broker, as far as the
/// model can tell: known to be held until PUBREL, or perhaps (absent from the map: not held).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Q2 {
    /// The broker holds it: a PUBLISH with it again is a duplicate, PUBREL is answered 0x00.
    Present,
    /// It may or may not.
    Uncertain,
}

/// Where a QoS 1 / 2 message the broker sent to a client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    /// PUBACK.
    Ack,
    /// PUBREC.
    Rec,
    /// PUBCOMP (PUBREL sent).
    Comp,
}

/// A message in flight towards a client.
#[derive(Debug, Clone)]
pub struct Out {
    pub qos: QoS,
    pub state: Awaiting,
    pub payload: Bytes,
    pub topic: String,
    /// Order of sending, within the session.
    pub order: u64,
    /// It may have come through a shared subscription (another member may take it over).
    pub shared: bool,
    /// Not resent at resume (the new connection's Receive Maximum was reached): it is resent
    /// later, as acknowledgements make room.
    pub held: bool,
}

/// A subscription's history in a session.
#[derive(Debug, Clone, Default)]
pub struct FilterHist {
    /// Steps during which it was (granted and) not yet unsubscribed; the last may be open.
    pub intervals: Vec<(u64, u64)>,
    pub active_since: Option<u64>,
    /// The highest QoS it was granted.
    pub max_qos: Option<QoS>,
    /// Ever granted without No Local.
    pub no_local_false: bool,
    /// The step of the last grant, and its No Local.
    pub last_grant: (u64, bool),
}

impl FilterHist {
    /// True when it was active at some step in `from..=to`.
    pub fn active_between(&self, from: u64, to: u64) -> bool {
        self.intervals.iter().any(|&(a, b)| a <= to && b >= from)
            || self.active_since.is_some_and(|a| a <= to)
    }
}

/// What the model knows of a session (by client id); reset when a CONNACK says no session
/// was present.
#[derive(Debug, Default)]
pub struct Sess {
    pub filters: HashMap<String, FilterHist>,
    pub inflight: BTreeMap<u16, Out>,
    pub order: u64,
    /// QoS 2 identifiers the client published, with a generation bumped at each change.
    pub q2: HashMap<u16, (Q2, u64)>,
    pub gen: u64,
    pub sub_ids: HashSet<u32>,
    /// Live deliveries (not DUP, not RETAIN) by payload and topic.
    pub live: HashMap<(Bytes, String), u32>,
}

/// A will's life.
#[derive(Debug, Clone, Default)]
pub struct WillInfo {
    /// It must never be published (normal DISCONNECT, the client came back in time...).
    pub forbidden: bool,
    /// When its connection ended.
    pub lost_at: Option<Instant>,
    /// The earliest time it may be published.
    pub due_min: Option<Instant>,
}

/// A message a client published (or a will).
#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub publisher: String,
    pub publisher_user: Option<String>,
    /// The step it was sent at (a will: the step its connection ended).
    pub step: u64,
    /// How many times the broker may have routed it (0: a QoS 2 duplicate).
    pub sends: u32,
    /// When it was routed, if the broker handled it at once (not deferred).
    pub routed_at: Option<Instant>,
    pub expiry: Option<u32>,
    /// The properties forwarded to 5.0 subscribers, in order.
    pub forwarded: Vec<Property>,
    pub will: Option<WillInfo>,
}

/// A QoS 1 / 2 PUBLISH from the client awaiting its PUBACK / PUBREC.
#[derive(Debug, Clone)]
pub struct PendingAck {
    pub id: u16,
    pub qos: QoS,
    pub denied: bool,
    pub gen: u64,
    /// The message.
    pub msg: usize,
    /// Certainly not a duplicate of a QoS 2 message the broker holds (which it acknowledges
    /// without routing it again).
    pub first: bool,
}

/// A SUBSCRIBE awaiting its SUBACK: identifier, filters and options, Subscription Identifier.
pub type PendingSub = (u16, Vec<(String, SubscriptionOptions)>, Option<u32>);

/// One client connection as its connection task sees it, and what the model expects of it.
pub struct Conn {
    pub link: Box<Link>,
    pub control: Arc<ControlSlot>,
    pub version: ProtocolVersion,
    pub client_id: String,
    pub username: Option<String>,
    pub rbuf: BytesMut,
    pub reading: bool,
    pub max_inflight: usize,
    pub max_packet: Option<u32>,
    pub alias_max: u16,
    pub keep_alive: u16,
    pub enhanced: bool,
    pub last_received: Instant,
    /// Topic aliases from the broker.
    pub aliases_in: HashMap<u16, String>,
    /// Topic aliases the client set.
    pub aliases_out: HashMap<u16, String>,
    pub acks: VecDeque<PendingAck>,
    pub subs: VecDeque<PendingSub>,
    pub unsubs: VecDeque<(u16, Vec<String>)>,
    /// The client's PUBRELs awaiting PUBCOMP: identifier, state before, generation after.
    pub pubrels: VecDeque<(u16, Option<Q2>, u64)>,
    /// PUBRELs the broker owes for the client's PUBRECs: identifier, known.
    pub owed_pubrels: VecDeque<(u16, bool)>,
    pub pings: usize,
    pub next_id: u16,
    pub last_publish: Option<Publish>,
    pub will: Option<usize>,
    pub will_delay: u32,
    /// The lowest Session Expiry Interval the session may have (CONNECT, DISCONNECT).
    pub expiry_min: u32,
    pub got_disconnect: bool,
    /// While the resent messages of a resumed session are checked: the order of the last
    /// one, and the identifiers resent.
    pub resume: (u64, HashSet<u16>),
    /// The step it connected at.
    pub since: u64,
}

/// The broker, the clients and the model.
pub struct World {
    pub broker: Arc<Broker>,
    pub acl: Option<&'static Acl>,
    pub max_qos: QoS,
    pub window: usize,
    pub max_packet_bytes: usize,
    pub now: Instant,
    pub step: u64,
    pub slots: Vec<Option<Conn>>,
    pub sessions: HashMap<String, Sess>,
    /// The subscriptions of sessions that were replaced: client id, filter, history.
    pub retired: Vec<(String, String, FilterHist)>,
    pub msgs: Vec<Msg>,
    pub by_payload: HashMap<Bytes, Vec<usize>>,
    pub next_tag: u64,
    pub timers_ran: bool,
    pub trace: bool,
}

/// Invariants the broker is known to break, each with an ignored regression test in
/// `crates/midge-broker/tests/fuzz_findings.rs`: reported, not fatal (see [`World::known`]).
/// Remove an entry once the broker is fixed.
/// (All six found so far are fixed.)
pub const KNOWN_FINDINGS: &[&str] = &[];

/// The budget of deliveries per round, as the connection task's.
const DELIVERIES_PER_ROUND: usize = 1024;

fn version_of(n: u8) -> ProtocolVersion {
    [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1, ProtocolVersion::V5][usize::from(n % 3)]
}

fn qos_of(n: u8) -> QoS {
    QoS::from_u8(n % 3).unwrap_or(QoS::AtMostOnce)
}

/// One and a half times the keep alive.
pub fn grace(keep_alive: u16) -> Duration {
    Duration::from_millis(u64::from(keep_alive) * 1500)
}

/// The properties of a PUBLISH that the broker forwards, in order.
pub fn forwarded(props: &Properties) -> Vec<Property> {
    props
        .iter()
        .filter(|p| {
            matches!(
                p.id(),
                PropertyId::PayloadFormatIndicator
                    | PropertyId::ContentType
                    | PropertyId::ResponseTopic
                    | PropertyId::CorrelationData
                    | PropertyId::UserProperty
            )
        })
        .cloned()
        .collect()
}

impl World {
    /// A broker with configuration `config` (modulo the number of them), no clients.
    pub fn new(config: u8, trace: bool) -> World {
        let all = configs();
        let (config, acl) = &all[usize::from(config) % all.len()];
        let broker = Broker::new(config.clone()).expect("the broker starts");
        broker.add_auth_method(Arc::new(FuzzAuth));
        World {
            // The clients come in on listener 0 (ConnInfo::plain), whose max_qos applies.
            max_qos: config.listeners.first().map_or(QoS::ExactlyOnce, |l| l.max_qos),
            window: usize::from(config.inflight_window()),
            max_packet_bytes: config.max_packet_bytes(),
            broker,
            acl: acl.as_ref(),
            now: Instant::now(),
            step: 0,
            slots: (0..SLOTS).map(|_| None).collect(),
            sessions: HashMap::new(),
            retired: Vec::new(),
            msgs: Vec::new(),
            by_payload: HashMap::new(),
            next_tag: 0,
            timers_ran: false,
            trace,
        }
    }

    /// Reports a broken invariant.
    #[track_caller]
    pub fn violation(&self, what: String) -> ! {
        panic!("invariant broken at step {}: {what}", self.step)
    }

    /// Reports a broken invariant that is a known finding (see [`KNOWN_FINDINGS`]): the run
    /// goes on, so that fuzzing finds what else there is, unless `MIDGE_FUZZ_STRICT` says
    /// otherwise.
    #[track_caller]
    pub fn known(&self, finding: &str, what: String) {
        debug_assert!(KNOWN_FINDINGS.contains(&finding));
        // MIDGE_FUZZ_STRICT=1: every known finding is fatal; =ID: that one.
        if let Some(strict) = std::env::var_os("MIDGE_FUZZ_STRICT") {
            if strict == "1" || strict == finding {
                self.violation(format!("[{finding}] {what}"));
            }
        }
        if self.trace {
            eprintln!("   known finding [{finding}]: {what}");
        }
    }

    fn tag(&mut self) -> Bytes {
        self.next_tag += 1;
        Bytes::from(format!("m{}", self.next_tag))
    }

    fn add_msg(&mut self, m: Msg) -> usize {
        let k = self.msgs.len();
        self.by_payload.entry(m.payload.clone()).or_default().push(k);
        self.msgs.push(m);
        k
    }

    /// Runs one operation, then lets every connection run until nothing moves.
    pub fn apply(&mut self, op: &Op) {
        self.step += 1;
        self.timers_ran = false;
        if self.trace {
            eprintln!("-- step {}: {op:?}", self.step);
        }
        match op {
            Op::Connect(c) => self.connect(c),
            Op::Send(slot, p) => self.send(usize::from(*slot) % SLOTS, p),
            Op::Raw(slot, bytes) => {
                if let Some(conn) = self.slots[usize::from(*slot) % SLOTS].as_mut() {
                    conn.rbuf.extend_from_slice(bytes);
                }
            }
            Op::Resend(slot) => {
                if let Some(conn) = self.slots[usize::from(*slot) % SLOTS].as_mut() {
                    if let Some(mut p) = conn.last_publish.clone() {
                        p.dup = p.qos != QoS::AtMostOnce;
                        if let Ok(bytes) = Packet::Publish(p).to_bytes(conn.version) {
                            conn.rbuf.extend_from_slice(&bytes);
                        }
                    }
                }
            }
            Op::Advance { ms, timers } => {
                self.now += Duration::from_millis(ADVANCE_MS[usize::from(*ms) % ADVANCE_MS.len()]);
                if *timers {
                    self.broker.run_timers(self.now);
                    self.timers_ran = true;
                }
            }
            Op::Lose(slot) => {
                if let Some(conn) = self.slots[usize::from(*slot) % SLOTS].as_mut() {
                    conn.link.close(CloseReason::Closed);
                }
            }
            Op::Reading(slot, on) => {
                if let Some(conn) = self.slots[usize::from(*slot) % SLOTS].as_mut() {
                    conn.reading = *on;
                }
            }
            Op::Reload => {
                self.broker.reload_security(None).expect("the security files reload");
            }
        }
        self.settle();
        self.check_keep_alive();
    }

    /// The end of an input: every connection is lost, and time passes until every session
    /// that can expire has.
    pub fn end(&mut self) {
        self.step += 1;
        for slot in self.slots.iter_mut().flatten() {
            slot.link.close(CloseReason::Closed);
        }
        self.settle();
        self.now += Duration::from_secs(10 * 86_400);
        self.broker.run_timers(self.now);
        self.settle();
    }

    /// Gives every connection turns until none has anything to do.
    pub fn settle(&mut self) {
        for _ in 0..64 {
            let mut moved = false;
            for i in 0..SLOTS {
                moved |= self.turn(i);
            }
            if !moved {
                return;
            }
        }
    }

    /// One round of a connection task. Returns true when something happened.
    fn turn(&mut self, i: usize) -> bool {
        let Some(mut conn) = self.slots[i].take() else { return false };
        let now = self.now;
        let mut moved = false;
        if let Some(c) = conn.control.try_recv() {
            moved = true;
            if let Some(reply) = conn.link.on_control(c, now) {
                let out: Vec<Packet> = conn.link.take_output();
                self.receive(&mut conn, out, false);
                let last: Vec<Packet> = conn.link.disconnect_packet().into_iter().collect();
                self.receive(&mut conn, last, false);
                self.finish(conn, Some(reply));
                return true;
            }
        }
        // The client's bytes, while the connection reads (not while its writes are backed up).
        while conn.reading && conn.link.wants_input() {
            match decode_within(&mut conn.rbuf, conn.version, DecodeLimits::server(self.max_packet_bytes)) {
                Ok(Some(p)) => {
                    moved = true;
                    self.client_packet(&mut conn, p);
                }
                Ok(None) => break,
                Err(e) => {
                    moved = true;
                    if self.trace {
                        eprintln!("   {} sent a malformed packet: {e}", conn.client_id);
                    }
                    conn.link.close(CloseReason::malformed(&e));
                    break;
                }
            }
        }
        let budget = if conn.reading { DELIVERIES_PER_ROUND } else { 0 };
        conn.link.poll(now, budget);
        let out: Vec<Packet> = conn.link.take_output();
        if !out.is_empty() {
            moved = true;
            self.receive(&mut conn, out, false);
        }
        conn.link.watch_timers();
        if conn.link.close_reason().is_some() {
            let last: Vec<Packet> = conn.link.disconnect_packet().into_iter().collect();
            self.receive(&mut conn, last, false);
            self.finish(conn, None);
            return true;
        }
        self.slots[i] = Some(conn);
        moved
    }

    /// The connection ends: the model learns what becomes of its will and of what it left
    /// unanswered, then the link hands its session on.
    fn finish(&mut self, mut conn: Conn, handover: Option<oneshot::Sender<midge_broker::broker::Owned>>) {
        let reason = conn.link.close_reason().cloned().unwrap_or(CloseReason::Closed);
        if self.trace {
            eprintln!("   {} closes: {reason:?}", conn.client_id);
        }
        if reason == CloseReason::KeepAliveTimeout
            && (conn.keep_alive == 0 || self.now < conn.last_received + grace(conn.keep_alive))
        {
            let what = format!(
                "{} was closed for its keep alive ({} s) although its last packet came {:?} ago",
                conn.client_id,
                conn.keep_alive,
                self.now - conn.last_received
            );
            self.violation(what);
        }
        if let Some(k) = conn.will {
            let delay = conn.will_delay;
            let expiry = conn.expiry_min;
            let taken_over = handover.is_some();
            let now = self.now;
            let step = self.step;
            let m = &mut self.msgs[k];
            m.step = step;
            let w = m.will.get_or_insert_with(Default::default);
            if reason == (CloseReason::Disconnect { with_will: false }) || (taken_over && delay > 0) {
                w.forbidden = true;
            } else {
                w.lost_at = Some(now);
                let wait = if expiry == 0 { 0 } else { delay.min(expiry) };
                w.due_min = Some(now + Duration::from_secs(u64::from(wait)));
            }
        }
        if let Some(sess) = self.sessions.get_mut(&conn.client_id) {
            // What the client sent and the broker did not answer may or may not have been handled.
            for a in conn.acks.iter().filter(|a| a.qos == QoS::ExactlyOnce) {
                sess.gen += 1;
                if sess.q2.get(&a.id).map(|s| s.0) != Some(Q2::Present) {
                    sess.q2.insert(a.id, (Q2::Uncertain, sess.gen));
                }
            }
            for &(id, _, _) in &conn.pubrels {
                sess.gen += 1;
                sess.q2.insert(id, (Q2::Uncertain, sess.gen));
            }
        }
        conn.acks.clear();
        let link = conn.link;
        Link::finish(*link, handover, self.now);
    }

    fn send(&mut self, i: usize, op: &PacketOp) {
        let Some(mut conn) = self.slots[i].take() else { return };
        if let Some(p) = self.build(&mut conn, op) {
            if let Ok(bytes) = p.to_bytes(conn.version) {
                conn.rbuf.extend_from_slice(&bytes);
            }
        }
        self.slots[i] = Some(conn);
    }

    fn fresh_id(conn: &mut Conn, id: NewId) -> u16 {
        match id {
            NewId::Fixed(n) => n,
            NewId::Fresh => {
                conn.next_id = conn.next_id.wrapping_add(1).max(1);
                conn.next_id
            }
        }
    }

    /// The n-th of `ids` (sorted), or 1.
    fn known_id(ids: Vec<u16>, a: AckId) -> u16 {
        match a {
            AckId::Fixed(n) => n,
            AckId::Known(n) if !ids.is_empty() => ids[usize::from(n) % ids.len()],
            AckId::Known(_) => 1,
        }
    }

    fn inflight_ids(&self, conn: &Conn, states: &[Awaiting]) -> Vec<u16> {
        self.sessions
            .get(&conn.client_id)
            .map(|s| {
                s.inflight.iter().filter(|(_, o)| states.contains(&o.state)).map(|(&id, _)| id).collect()
            })
            .unwrap_or_default()
    }

    /// The packet a client sends for an operation.
    fn build(&mut self, conn: &mut Conn, op: &PacketOp) -> Option<Packet> {
        let v5 = conn.version.is_v5();
        Some(match op {
            PacketOp::Publish(p) => Packet::Publish(self.build_publish(conn, p)),
            PacketOp::Subscribe { id, filters, sub_id } => {
                let mut s = Subscribe {
                    packet_id: Self::fresh_id(conn, *id),
                    properties: Properties::new(),
                    filters: Vec::new(),
                };
                for (f, o) in filters {
                    let mut options = SubscriptionOptions::qos(qos_of(o & 3));
                    if v5 {
                        options.no_local = o & 4 != 0;
                        options.retain_as_published = o & 8 != 0;
                        options.retain_handling = match (o >> 4) % 3 {
                            0 => RetainHandling::SendAtSubscribe,
                            1 => RetainHandling::SendIfNew,
                            _ => RetainHandling::DoNotSend,
                        };
                    }
                    s.filters.push((f.text().into(), options));
                }
                if v5 && sub_id % 3 > 0 {
                    s.properties.push(Property::SubscriptionIdentifier(if sub_id % 3 == 1 { 1 } else { 42 }));
                }
                Packet::Subscribe(s)
            }
            PacketOp::Unsubscribe { id, filters } => Packet::Unsubscribe(Unsubscribe {
                packet_id: Self::fresh_id(conn, *id),
                properties: Properties::new(),
                filters: filters.iter().map(|f| f.text().into()).collect(),
            }),
            PacketOp::PubAck(a) => {
                let id = Self::known_id(self.inflight_ids(conn, &[Awaiting::Ack]), *a);
                Packet::PubAck(PublishAck::new(id))
            }
            PacketOp::PubRec(a, refuse) => {
                let id = Self::known_id(self.inflight_ids(conn, &[Awaiting::Rec, Awaiting::Comp]), *a);
                let code = if *refuse && v5 { ReasonCode::UnspecifiedError } else { ReasonCode::Success };
                Packet::PubRec(PublishAck::with_reason(id, code))
            }
            PacketOp::PubRel(a) => {
                let mut ids: Vec<u16> = self
                    .sessions
                    .get(&conn.client_id)
                    .map(|s| s.q2.keys().copied().collect())
                    .unwrap_or_default();
                ids.sort_unstable();
                Packet::PubRel(PublishAck::new(Self::known_id(ids, *a)))
            }
            PacketOp::PubComp(a) => {
                let id = Self::known_id(self.inflight_ids(conn, &[Awaiting::Comp]), *a);
                Packet::PubComp(PublishAck::new(id))
            }
            PacketOp::PingReq => Packet::PingReq,
            PacketOp::Disconnect { reason, expiry } => {
                let code = match reason % 3 {
                    0 => ReasonCode::Success,
                    1 => ReasonCode::DisconnectWithWill,
                    _ => ReasonCode::UnspecifiedError,
                };
                let mut d = Disconnect::new(code);
                match expiry % 3 {
                    1 => d.properties.push(Property::SessionExpiryInterval(0)),
                    2 => d.properties.push(Property::SessionExpiryInterval(60)),
                    _ => {}
                }
                Packet::Disconnect(d)
            }
            PacketOp::Auth { reason, other_method, data } => {
                let reason_code = match reason % 3 {
                    0 => ReasonCode::ReAuthenticate,
                    1 => ReasonCode::ContinueAuthentication,
                    _ => ReasonCode::Success,
                };
                let mut properties = Properties::new();
                properties.push(Property::AuthenticationMethod(
                    if *other_method { "other" } else { "fuzz" }.into(),
                ));
                match data % 3 {
                    1 => properties.push(Property::AuthenticationData(Bytes::from_static(b"ok"))),
                    2 => properties.push(Property::AuthenticationData(Bytes::from_static(b"bad"))),
                    _ => {}
                }
                Packet::Auth(Auth { reason_code, properties })
            }
            PacketOp::Connect => {
                Packet::Connect(Box::new(Connect::new(conn.version, conn.client_id.as_str())))
            }
        })
    }

    fn build_publish(&mut self, conn: &mut Conn, op: &PublishOp) -> Publish {
        let payload = if op.empty { Bytes::new() } else { self.tag() };
        let mut p = Publish::new(op.topic.text(), payload);
        p.qos = qos_of(op.qos);
        p.retain = op.retain;
        p.packet_id = if p.qos == QoS::AtMostOnce { 0 } else { Self::fresh_id(conn, op.id) };
        if conn.version.is_v5() {
            match op.expiry % 3 {
                1 => p.properties.push(Property::MessageExpiryInterval(1)),
                2 => p.properties.push(Property::MessageExpiryInterval(100)),
                _ => {}
            }
            match op.alias % 4 {
                1 => p.properties.push(Property::TopicAlias(1)),
                2 => {
                    p.properties.push(Property::TopicAlias(1));
                    p.topic = "".into();
                }
                3 => p.properties.push(Property::TopicAlias(70)),
                _ => {}
            }
            match op.extra % 4 {
                1 => p.properties.push(Property::UserProperty("k".into(), "v".into())),
                2 => {
                    p.properties.push(Property::ResponseTopic("b/reply".into()));
                    p.properties.push(Property::CorrelationData(Bytes::from_static(b"x")));
                }
                3 => p.properties.push(Property::SubscriptionIdentifier(5)),
                _ => {}
            }
        }
        conn.last_publish = Some(p.clone());
        p
    }

    /// The broker reads a packet from a client: the model learns what the client did, then
    /// the link handles it.
    fn client_packet(&mut self, conn: &mut Conn, p: Packet) {
        if self.trace {
            eprintln!("   {} -> broker: {p:?}", conn.client_id);
        }
        conn.last_received = self.now;
        let deferred = conn.link.is_blocked()
            && !matches!(p, Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) | Packet::PingReq);
        self.model_client_packet(conn, &p, deferred);
        conn.link.handle_packet(p, self.now);
    }

    fn model_client_packet(&mut self, conn: &mut Conn, p: &Packet, deferred: bool) {
        let v5 = conn.version.is_v5();
        let step = self.step;
        let now = self.now;
        match p {
            Packet::Publish(pb) => {
                let mut topic = pb.topic.to_string();
                if let Some(alias) = pb.properties.topic_alias() {
                    if alias == 0 || alias > midge_broker::config::DEFAULT_MAX_TOPIC_ALIAS {
                        return;
                    }
                    if topic.is_empty() {
                        match conn.aliases_out.get(&alias) {
                            Some(t) => topic = t.clone(),
                            None => return,
                        }
                    } else {
                        conn.aliases_out.insert(alias, topic.clone());
                    }
                }
                let sess = self.sessions.entry(conn.client_id.clone()).or_default();
                let mut sends = 1;
                let mut gen = 0;
                let first = pb.qos != QoS::ExactlyOnce || !sess.q2.contains_key(&pb.packet_id);
                if pb.qos == QoS::ExactlyOnce {
                    if sess.q2.get(&pb.packet_id).map(|s| s.0) == Some(Q2::Present) {
                        sends = 0;
                        gen = sess.q2[&pb.packet_id].1;
                    } else {
                        sess.gen += 1;
                        gen = sess.gen;
                        sess.q2.insert(pb.packet_id, (Q2::Uncertain, gen));
                    }
                }
                // As mosquitto, no client publishes under $SYS (but a bridge's connection
                // state) nor to $share/...: refused as the ACL refuses.
                let sys = topic.starts_with("$SYS")
                    && !(topic.starts_with("$SYS/broker/connection/") && topic.ends_with("/state"));
                let denied = sys
                    || topic.starts_with("$share")
                    || self
                        .acl
                        .is_some_and(|a| !a.can_publish(conn.username.as_deref(), &conn.client_id, &topic));
                let msg = self.add_msg(Msg {
                    topic,
                    payload: pb.payload.clone(),
                    qos: pb.qos,
                    retain: pb.retain,
                    publisher: conn.client_id.clone(),
                    publisher_user: conn.username.clone(),
                    step,
                    sends,
                    routed_at: (!deferred).then_some(now),
                    expiry: pb.properties.message_expiry_interval(),
                    forwarded: forwarded(&pb.properties),
                    will: None,
                });
                if pb.qos != QoS::AtMostOnce {
                    conn.acks.push_back(PendingAck {
                        id: pb.packet_id,
                        qos: pb.qos,
                        denied,
                        gen,
                        msg,
                        first,
                    });
                }
            }
            Packet::PubAck(a) => {
                let sess = self.sessions.entry(conn.client_id.clone()).or_default();
                if sess.inflight.get(&a.packet_id).is_some_and(|o| o.state == Awaiting::Ack) {
                    sess.inflight.remove(&a.packet_id);
                }
            }
            Packet::PubRec(a) => {
                let sess = self.sessions.entry(conn.client_id.clone()).or_default();
                match sess.inflight.get_mut(&a.packet_id).map(|o| o.state) {
                    Some(Awaiting::Rec) if v5 && a.reason_code.is_error() => {
                        sess.inflight.remove(&a.packet_id);
                    }
                    Some(Awaiting::Rec) => {
                        if let Some(o) = sess.inflight.get_mut(&a.packet_id) {
                            o.state = Awaiting::Comp;
                            // Its PUBREL goes now: no longer held back.
                            o.held = false;
                        }
                        conn.owed_pubrels.push_back((a.packet_id, true));
                    }
                    Some(Awaiting::Comp) => conn.owed_pubrels.push_back((a.packet_id, true)),
                    _ => conn.owed_pubrels.push_back((a.packet_id, false)),
                }
            }
            Packet::PubComp(a) => {
                let sess = self.sessions.entry(conn.client_id.clone()).or_default();
                if sess.inflight.get(&a.packet_id).is_some_and(|o| o.state == Awaiting::Comp) {
                    sess.inflight.remove(&a.packet_id);
                }
            }
            Packet::PubRel(a) => {
                let sess = self.sessions.entry(conn.client_id.clone()).or_default();
                let before = sess.q2.get(&a.packet_id).map(|s| s.0);
                sess.gen += 1;
                sess.q2.insert(a.packet_id, (Q2::Uncertain, sess.gen));
                conn.pubrels.push_back((a.packet_id, before, sess.gen));
            }
            Packet::PingReq => conn.pings += 1,
            Packet::Subscribe(s) => {
                let filters = s.filters.iter().map(|(f, o)| (f.to_string(), *o)).collect();
                conn.subs.push_back((s.packet_id, filters, s.properties.subscription_identifiers().next()));
            }
            Packet::Unsubscribe(u) => {
                conn.unsubs.push_back((u.packet_id, u.filters.iter().map(|f| f.to_string()).collect()));
            }
            Packet::Disconnect(d) => {
                if let Some(e) = d.properties.session_expiry_interval() {
                    conn.expiry_min = conn.expiry_min.min(e);
                }
            }
            _ => {}
        }
    }

    /// A new connection in a slot: CONNECT on the wire, authentication, `Broker::open`
    /// (with a takeover when the client id is connected), CONNACK, and the messages the
    /// session resends.
    fn connect(&mut self, c: &ConnectOp) {
        let slot = usize::from(c.slot) % SLOTS;
        let version = version_of(c.version);
        let v5 = version.is_v5();
        let id = match c.id % 4 {
            0 | 1 => format!("c{slot}"),
            2 => format!("c{}", (slot + 1) % SLOTS),
            _ => String::new(),
        };
        let mut connect = Connect::new(version, id.as_str());
        connect.clean_start = c.clean;
        connect.keep_alive = [0, 1, 10, 200][usize::from(c.keep_alive % 4)];
        connect.username = USERS[usize::from(c.user) % USERS.len()].map(Into::into);
        let mut expiry = if c.clean { 0 } else { u32::MAX };
        let mut max_packet = None;
        let mut receive_maximum = u16::MAX;
        let mut alias_max = 0;
        if v5 {
            expiry = [0, 2, 30, u32::MAX][usize::from(c.expiry % 4)];
            if expiry > 0 {
                connect.properties.push(Property::SessionExpiryInterval(expiry));
            }
            let rm = usize::from(c.receive_maximum % 4);
            if rm > 0 {
                receive_maximum = [0, 1, 2, 100][rm];
                connect.properties.push(Property::ReceiveMaximum(receive_maximum));
            }
            let mp = usize::from(c.max_packet % 4);
            if mp > 0 {
                let m = [0, 20, 60, 1000][mp];
                max_packet = Some(m);
                connect.properties.push(Property::MaximumPacketSize(m));
            }
            alias_max = [0, 1, 4][usize::from(c.alias_max % 3)];
            if alias_max > 0 {
                connect.properties.push(Property::TopicAliasMaximum(alias_max));
            }
            if c.response_info {
                connect.properties.push(Property::RequestResponseInformation(1));
            }
            match c.auth % 5 {
                0 => {}
                4 => connect.properties.push(Property::AuthenticationMethod("unknown".into())),
                n => {
                    connect.properties.push(Property::AuthenticationMethod("fuzz".into()));
                    let data: &'static [u8] = [b"ok".as_slice(), b"more", b"bad"][usize::from(n - 1)];
                    connect.properties.push(Property::AuthenticationData(Bytes::from_static(data)));
                }
            }
        }
        let mut will_delay = 0;
        let will_topic = usize::from(c.will_topic) % (WILL_TOPICS.len() + 1);
        if will_topic > 0 {
            let topic = WILL_TOPICS[will_topic - 1];
            let mut will = Will {
                topic: topic.into(),
                payload: self.tag(),
                qos: qos_of(c.will_opts & 3),
                retain: c.will_opts & 4 != 0,
                properties: Properties::new(),
            };
            if v5 {
                will_delay = [0, 1, 10, 0][usize::from((c.will_opts >> 3) & 3)];
                if will_delay > 0 {
                    will.properties.push(Property::WillDelayInterval(will_delay));
                }
            }
            connect.will = Some(will);
        }
        if self.trace {
            eprintln!("   CONNECT {connect:?}");
        }
        // On the wire, then decoded as the connection task decodes a CONNECT.
        let Ok(bytes) = Packet::Connect(Box::new(connect)).to_bytes(version) else { return };
        let mut buf = BytesMut::from(&bytes[..]);
        let connect = match decode_within(&mut buf, ProtocolVersion::V5, DecodeLimits::server(self.max_packet_bytes)) {
            Ok(Some(Packet::Connect(c))) => c,
            _ => return,
        };
        let now = self.now;
        let info = ConnInfo::plain("127.0.0.1:1".parse().expect("an address"));
        let shown =
            if connect.client_id.is_empty() { "<unknown>".to_owned() } else { connect.client_id.to_string() };
        let mut enhanced = false;
        let auth = match self.broker.begin_enhanced(&connect, &shown, &info) {
            None => self.broker.authenticate(&connect, &info, now),
            Some((mut login, mut step)) => loop {
                match step {
                    LoginStep::Done(a) => {
                        enhanced = true;
                        break Ok(a);
                    }
                    LoginStep::Refuse(r) => break Err(r),
                    LoginStep::Send(p) => {
                        self.check_wire(ProtocolVersion::V5, &p, max_packet, "AUTH at CONNECT");
                        if !matches!(&p, Packet::Auth(a) if a.reason_code == ReasonCode::ContinueAuthentication)
                        {
                            self.violation(format!("unexpected packet during authentication: {p:?}"));
                        }
                        let Some(l) = login.as_mut() else {
                            self.violation("an AUTH to send without an exchange".into())
                        };
                        let mut properties = Properties::new();
                        properties.push(Property::AuthenticationMethod("fuzz".into()));
                        properties.push(Property::AuthenticationData(Bytes::from_static(b"ok")));
                        step =
                            l.on_auth(&Auth { reason_code: ReasonCode::ContinueAuthentication, properties });
                    }
                }
            },
        };
        let auth = match auth {
            Ok(a) => a,
            Err(refusal) => {
                let ack = Packet::ConnAck(refusal.connack());
                self.check_connack(version, &ack, &connect, max_packet);
                return;
            }
        };
        let username = auth.username().map(|u| u.to_string());
        let control = ControlSlot::new();
        let conn_id = self.broker.next_conn_id();
        let connect_keep_alive = connect.keep_alive;
        let will = connect.will.clone();
        let mut opening = self.broker.open(*connect.clone(), auth, conn_id, control.clone(), now);
        if let Opening::TakeOver(pending) = opening {
            // The connection holding the client id serves the takeover in its turn.
            self.settle();
            let mut pending = *pending;
            let old = pending.old.try_recv().ok();
            if old.is_none() {
                self.violation(format!(
                    "the connection holding {} did not hand its session over",
                    pending.client_id()
                ));
            }
            opening = self.broker.finish_takeover(pending, old, now);
        }
        let (mut link, connack) = match opening {
            Opening::Ready { link, connack, .. } => (link, connack),
            Opening::Refused(refusal) => {
                // As the connection task: some refusals close a 3.1.1 client without CONNACK.
                if let Some(ack) = refusal.connack_for(version) {
                    self.check_connack(version, &Packet::ConnAck(ack), &connect, max_packet);
                }
                return;
            }
            Opening::TakeOver(_) => self.violation("a second takeover for one CONNECT".into()),
        };
        let session_present = self.check_connack(version, &connack, &connect, max_packet);
        let Packet::ConnAck(ack) = &connack else { unreachable!("checked") };
        // The slot's previous connection, if it is still there (another client id), is lost.
        if let Some(old) = self.slots[slot].as_mut() {
            old.link.close(CloseReason::Closed);
            self.turn(slot);
        }
        let client_id = link.client_id().to_string();
        if !session_present {
            if let Some(old) = self.sessions.insert(client_id.clone(), Sess::default()) {
                // Messages routed to the old session may still be acknowledged to publishers.
                for (f, mut h) in old.filters {
                    if let Some(since) = h.active_since.take() {
                        h.intervals.push((since, self.step));
                    }
                    self.retired.push((client_id.clone(), f, h));
                }
            }
        } else if !self.sessions.contains_key(&client_id) {
            self.violation(format!("{client_id}: CONNACK says a session is present, but none was ever made"));
        }
        // A will waiting for its delay is not published once the client is back [MQTT-3.1.3-9].
        for m in &mut self.msgs {
            if m.publisher == client_id {
                if let Some(w) = m.will.as_mut() {
                    if w.due_min.is_some_and(|d| d > now) {
                        w.forbidden = true;
                    }
                }
            }
        }
        let keep_alive = ack.properties.server_keep_alive().unwrap_or(connect_keep_alive);
        // What the session resends, before anything new.
        let burst: Vec<Packet> = link.take_output();
        let mut conn = Conn {
            control,
            version,
            client_id: client_id.clone(),
            username: username.clone(),
            rbuf: BytesMut::new(),
            reading: true,
            max_inflight: self.window.min(usize::from(receive_maximum)),
            max_packet,
            alias_max,
            keep_alive,
            enhanced,
            last_received: now,
            aliases_in: HashMap::new(),
            aliases_out: HashMap::new(),
            acks: VecDeque::new(),
            subs: VecDeque::new(),
            unsubs: VecDeque::new(),
            pubrels: VecDeque::new(),
            owed_pubrels: VecDeque::new(),
            pings: 0,
            next_id: 0,
            last_publish: None,
            will: None,
            will_delay,
            expiry_min: expiry,
            got_disconnect: false,
            resume: (0, HashSet::new()),
            since: self.step,
            link,
        };
        if let Some(w) = will {
            let step = self.step;
            let qos = w.qos.min(self.max_qos);
            let retain = w.retain && self.broker.config.retain_available;
            let k = self.add_msg(Msg {
                topic: w.topic.to_string(),
                payload: w.payload.clone(),
                qos,
                retain,
                publisher: client_id.clone(),
                publisher_user: username,
                step,
                sends: 1,
                routed_at: None,
                expiry: w.properties.message_expiry_interval(),
                forwarded: forwarded(&w.properties),
                will: Some(WillInfo::default()),
            });
            conn.will = Some(k);
        }
        if !session_present && !burst.is_empty() {
            self.violation(format!("{client_id}: a new session resends {burst:?}"));
        }
        self.receive(&mut conn, burst, true);
        self.end_of_resume(&mut conn);
        self.slots[slot] = Some(conn);
    }

    /// After the timers ran: every connection whose keep alive has run out is closed.
    fn check_keep_alive(&self) {
        if !self.timers_ran {
            return;
        }
        for conn in self.slots.iter().flatten() {
            if conn.keep_alive > 0 && self.now >= conn.last_received + grace(conn.keep_alive) {
                let what = format!(
                    "{} is still connected {:?} after its last packet, with a keep alive of {} s",
                    conn.client_id,
                    self.now - conn.last_received,
                    conn.keep_alive
                );
                self.violation(what);
            }
        }
    }
}
