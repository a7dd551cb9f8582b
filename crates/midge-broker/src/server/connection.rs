//! One client connection: CONNECT, then a loop over the socket, the session's mailbox and
//! control messages, until the session says to close. Everything between the socket and the
//! shared state is the [`Link`]'s: this task reads, decodes, encodes and writes.
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use midge_codec::{
    decode_within, ConnAck, DecodeError, DecodeLimits, FixedHeader, Packet, PacketType, PropertyId,
    ProtocolVersion, ReasonCode,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::broker::{
    Authenticated, Broker, ConnInfo, EnhancedLogin, Link, LoginStep, Opening, Owned, Refusal,
};
use crate::control::{Control, ControlSlot};
use crate::logging::describe;
use crate::metrics::{Metrics, Tally};
use crate::session::CloseReason;

use midge_net::{flush, poll_io, ready, IoEvent, OutQueue};

/// Payloads larger than this are written from the message itself, shared between
/// subscribers, instead of being copied into each connection's buffer.
const SHARE_PAYLOADS_ABOVE: usize = 16 * 1024;

/// While this much waits to be written, the connection neither turns deliveries into packets
/// nor reads the client: a client that does not read is not read either, and what the broker
/// holds for it stays bounded (its mailbox absorbs the deliveries).
pub const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Packets decoded per round before the connection lets other tasks run.
const PACKETS_PER_ROUND: usize = 128;
/// PUBLISH packets produced per round.
const DELIVERIES_PER_ROUND: usize = 1024;
/// How long a closing connection may take to write its last bytes, and then how long it
/// reads (and discards) what the client still sends before closing, so that the client reads
/// the reason instead of a reset.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// How often a publisher waiting for a congested subscriber looks again without a signal
/// (the subscriber may have become a slow consumer, which holds no one up).
const ROOM_RECHECK: Duration = Duration::from_millis(50);
/// How long a takeover waits for the old connection to hand the session over.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client's DISCONNECT waits for the store to have what it sent before (the
/// acknowledgements wait for it), so that they are sent.
const STORE_WAIT_AT_DISCONNECT: Duration = Duration::from_secs(2);

/// The largest packet read before the client has logged in (CONNECT, and AUTH during enhanced
/// authentication), when max_packet_size is not smaller: what a client nobody knows yet can
/// make the broker hold. mosquitto's limit: at most 100,000 bytes after the fixed header
/// (mosquitto 2.0.12 and later refuse a larger CONNECT as malformed), so 100,004 in all.
const LOGIN_REMAINING_LENGTH: usize = 100_000;
const MAX_LOGIN_PACKET: usize = LOGIN_REMAINING_LENGTH + 4;

/// The smallest and largest reads: idle connections keep a small buffer, busy ones grow it.
const MIN_READ: usize = 256;
const MAX_READ: usize = 64 * 1024;

struct Conn<S> {
    stream: S,
    rbuf: BytesMut,
    wbuf: OutQueue,
    peer: SocketAddr,
    /// Room made for the next read; doubles when a read fills it, halves when reads are small.
    read_size: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Encodes a packet into the write buffer; returns its size.
    fn encode(&mut self, packet: &Packet, version: ProtocolVersion, client_id: &str) -> usize {
        let before = self.wbuf.len();
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!("Sending {} to {client_id}{}", packet.packet_type(), describe(packet, version));
        }
        match packet.encode_sharing(version, self.wbuf.tail(), SHARE_PAYLOADS_ABOVE) {
            Ok(Some(payload)) => self.wbuf.push_shared(payload),
            Ok(None) => {}
            // Only a broker bug can get here (every packet is built from validated parts).
            Err(e) => tracing::error!("Cannot encode {} for {client_id}: {e}", packet.packet_type()),
        }
        self.wbuf.len() - before
    }

    /// Encodes a packet sent outside the serving loop (CONNACK, DISCONNECT), and counts it.
    fn encode_counted(
        &mut self,
        metrics: &Metrics,
        packet: &Packet,
        version: ProtocolVersion,
        client_id: &str,
    ) {
        let mut t = Tally::default();
        t.bytes(self.encode(packet, version, client_id));
        t.packet(packet);
        metrics.sent(&t);
    }

    /// After a read of `n` bytes was decoded: size the next read, and give back a large
    /// buffer once it is empty, so an idle connection holds little memory.
    fn after_read(&mut self, n: usize) {
        if n >= self.read_size {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        } else if n < self.read_size / 4 {
            self.read_size = (self.read_size / 2).max(MIN_READ);
        }
        // An idle connection holds no read buffer between its packets; a busy one keeps it.
        if self.rbuf.is_empty() && (self.read_size == MIN_READ || self.rbuf.capacity() > 2 * self.read_size) {
            self.rbuf = BytesMut::new();
        }
    }

    /// Moves what is left to read into a buffer of its own (with room for a read), so that
    /// nothing read from now on shares the allocation of what was read before.
    fn fresh_rbuf(&mut self) {
        let mut fresh = BytesMut::with_capacity(self.rbuf.len() + self.read_size);
        fresh.extend_from_slice(&self.rbuf);
        self.rbuf = fresh;
    }

    /// After a write: an emptied large write buffer is given back.
    fn after_write(&mut self) {
        self.wbuf.shrink(4 * MAX_READ);
    }

    /// Closes gracefully: writes what is left, shuts the write side down, then reads and
    /// discards what the client still sends until it closes too (at most [`CLOSE_LINGER`]):
    /// closing with unread data would send a reset, and the client could lose the packet
    /// that tells it why.
    async fn close(&mut self) {
        let _ = tokio::time::timeout(CLOSE_LINGER, flush(&mut self.stream, &mut self.wbuf)).await;
        let _ = tokio::time::timeout(CLOSE_LINGER, self.stream.shutdown()).await;
        self.rbuf = BytesMut::new();
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            let mut sink = [0u8; 4096];
            while matches!(self.stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

/// A future of the task that serves one connection.
type Phase<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

/// One client connection's task, from CONNECT to close. Its phases are futures of their
/// own: the CONNECT phase and the close are boxed and freed when they end, so the task
/// holds, for the life of the connection, only what [`Serving`] needs: what an idle
/// connection costs.
pub(crate) struct ConnTask<S> {
    phase: TaskPhase<S>,
    /// Uncounts the connection when the task ends (`max_connections`), when it counted it,
    /// with its listener.
    counted: Option<(Arc<Broker>, usize)>,
}

/// A connection with its session, and its largest packet.
type Opened<S> = (Conn<S>, Box<Link>, usize);

enum TaskPhase<S> {
    Establishing(Phase<Option<Opened<S>>>),
    Serving(Serving<S>),
    Finishing(Phase<()>),
    Done,
}

impl<S> Drop for ConnTask<S> {
    fn drop(&mut self) {
        if let Some((b, listener)) = self.counted.take() {
            b.remove_connection(listener);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Future for ConnTask<S> {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        loop {
            let next = match &mut self.phase {
                TaskPhase::Establishing(f) => match f.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(None) => TaskPhase::Done,
                    Poll::Ready(Some((conn, link, max_packet))) => {
                        let more = !conn.rbuf.is_empty();
                        TaskPhase::Serving(Serving {
                            conn: Some(conn),
                            link: Some(link),
                            max_packet,
                            more,
                            room: None,
                        })
                    }
                },
                TaskPhase::Serving(s) => match std::pin::Pin::new(s).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready((conn, link, handover)) => TaskPhase::Finishing(Box::pin(async move {
                        let mut conn = conn;
                        finish(&mut conn, link, handover).await
                    })),
                },
                TaskPhase::Finishing(f) => match f.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(()) => TaskPhase::Done,
                },
                TaskPhase::Done => return Poll::Ready(()),
            };
            self.phase = next;
        }
    }
}

/// Serves one client until it leaves, breaks the protocol or the broker stops. `counted`:
/// the task uncounts the connection when it ends.
pub(crate) fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    broker: Arc<Broker>,
    stream: S,
    info: ConnInfo,
    counted: bool,
) -> ConnTask<S> {
    let counted = counted.then(|| (broker.clone(), info.listener));
    ConnTask { phase: TaskPhase::Establishing(Box::pin(open(broker, stream, info))), counted }
}

/// The CONNECT phase: a connection with its session, or `None` when the client was refused
/// or went away.
async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    broker: Arc<Broker>,
    stream: S,
    info: ConnInfo,
) -> Option<Opened<S>> {
    let peer = info.peer;
    let mut conn =
        Conn { stream, rbuf: BytesMut::new(), wbuf: OutQueue::default(), peer, read_size: MIN_READ };
    let max_packet = broker.config.max_packet_bytes();
    let link = establish(&broker, &mut conn, info, max_packet).await?;
    // The CONNECT is decoded: its bytes (and the buffer under them) are not kept, nor shared
    // by what the client sent after it.
    if conn.rbuf.is_empty() {
        conn.rbuf = BytesMut::new();
    } else {
        conn.fresh_rbuf();
    }
    // An idle connection holds no write buffer either: the CONNACK is written as it goes.
    if broker.is_shutting_down() {
        link.control().send(Control::Shutdown);
    }
    Some((conn, link, max_packet))
}

/// CONNECT, authentication, the session (new, resumed or taken over) and CONNACK. `None`
/// when the client was refused or went away (the connection is closed then).
async fn establish<S: AsyncRead + AsyncWrite + Unpin>(
    broker: &Arc<Broker>,
    conn: &mut Conn<S>,
    info: ConnInfo,
    max_packet: usize,
) -> Option<Box<Link>> {
    let peer = info.peer;
    let connect_timeout = Duration::from_secs(broker.config.connect_timeout_secs);
    let login_max = max_packet.min(MAX_LOGIN_PACKET);
    let mut connect =
        match tokio::time::timeout(connect_timeout, read_connect(conn, login_max, &broker.metrics)).await {
            Err(_) => {
                tracing::info!("Client {} did not send CONNECT in time, closing.", peer);
                return None;
            }
            Ok(Err(())) => {
                conn.close().await;
                return None;
            }
            Ok(Ok(c)) => c,
        };
    // A CONNECT's user properties are used by nothing, and decoded each takes 72 bytes for
    // its 5 on the wire: they go before the login, which may wait for its address's turn
    // (300 CONNECTs of 19,000 held 450 MB while their logins waited).
    if connect.properties.user_properties().next().is_some() {
        connect.properties =
            connect.properties.iter().filter(|p| p.id() != PropertyId::UserProperty).cloned().collect();
    }
    broker.metrics.connect_received();
    broker.metrics.received(&{
        let mut t = Tally::default();
        t.packet(&Packet::Connect(connect.clone()));
        t
    });
    let version = connect.protocol;
    let shown_id =
        if connect.client_id.is_empty() { "<unknown>".to_owned() } else { connect.client_id.to_string() };
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!(
            "Received CONNECT from {shown_id}{}",
            describe(&Packet::Connect(connect.clone()), version)
        );
    }
    // A reload asked for before this CONNECT was read applies to it (mosquitto's order).
    broker.reload_gate.settled(RELOAD_WAIT).await;
    let conn_id = broker.next_conn_id();
    let control = ControlSlot::new();
    let generation = broker.security_generation();
    let username = connect.username.clone();
    let login = async {
        broker.check_protocol_version(&connect, info.listener)?;
        match broker.begin_enhanced(&connect, &shown_id, &info) {
            None => broker.authenticate_async(&connect, &info).await,
            Some((login, step)) => enhanced_login(conn, login, step, login_max).await,
        }
    };
    let auth = match tokio::time::timeout(connect_timeout, login).await {
        Ok(Ok(auth)) => auth,
        Ok(Err(refusal)) => {
            // Never the password: the client id, the address and the user name.
            tracing::info!(
                "Client {shown_id} from {peer} refused: {}{}.",
                refusal_reason(&refusal),
                username.as_ref().map(|u| format!(" (user '{u}')")).unwrap_or_default()
            );
            // Repeated failures from this address wait longer each time.
            tokio::time::sleep(refusal.delay).await;
            if let Some(connack) = broker.refusal_connack(&refusal, version, info.listener) {
                conn.encode_counted(&broker.metrics, &Packet::ConnAck(connack), version, &shown_id);
            }
            conn.close().await;
            return None;
        }
        Err(_) => {
            tracing::info!("Client {shown_id} from {peer} did not complete authentication in time, closing.");
            conn.close().await;
            return None;
        }
    };
    let mut opening = broker.open(*connect, auth, conn_id, control.clone(), Instant::now());
    if let Opening::TakeOver(pending) = opening {
        let mut pending = *pending;
        let waited = tokio::time::timeout(TAKEOVER_TIMEOUT, &mut pending.old).await;
        let old = match (waited, pending.remote.clone()) {
            (Ok(Ok(owned)), _) => Some(owned),
            // Cluster mode: no node had a session of this client id.
            (Ok(Err(_)), Some(_)) => None,
            // Cluster mode: the session did not come in time. One being sent now is taken;
            // otherwise none is adopted after this (the client gets a new session).
            (Err(_), Some(gave_up)) => {
                let mut gave_up = gave_up.lock();
                match pending.old.try_recv() {
                    Ok(owned) => Some(owned),
                    Err(_) => {
                        *gave_up = true;
                        tracing::warn!(
                            "Client {}: its session did not come from the other node in time: it starts afresh.",
                            pending.client_id()
                        );
                        None
                    }
                }
            }
            _ => {
                tracing::warn!(
                    "Client {}: the previous connection did not hand its session over.",
                    pending.client_id()
                );
                None
            }
        };
        opening = broker.finish_takeover(pending, old, Instant::now());
    }
    let (link, connack, clean_start) = match opening {
        Opening::Ready { link, connack, clean_start } => (link, connack, clean_start),
        Opening::Refused(refusal) => {
            tracing::info!(
                "Client {shown_id} from {peer} refused: {}{}.",
                refusal_reason(&refusal),
                username.as_ref().map(|u| format!(" (user '{u}')")).unwrap_or_default()
            );
            if let Some(connack) = broker.refusal_connack(&refusal, version, info.listener) {
                conn.encode_counted(&broker.metrics, &Packet::ConnAck(connack), version, &shown_id);
            }
            conn.close().await;
            return None;
        }
        Opening::TakeOver(_) => return None,
    };
    // Logged in: a WebSocket connection is read on (nothing was read since the CONNECT).
    if let Some(gate) = &info.login_gate {
        gate.open();
    }
    let session = link.session();
    if broker.config.connection_messages {
        tracing::info!(
            // mosquitto's line: the address and the client's port.
            "New client connected from {}:{} as {} (p{}, c{}, k{}{}).",
            peer.ip(),
            peer.port(),
            session.client_id,
            mosquitto_protocol_number(version),
            u8::from(clean_start),
            session.keep_alive,
            session.username().map(|u| format!(", u'{u}'")).unwrap_or_default()
        );
    }
    let (len, max) = (connack.encoded_len(version), session.limits().client_max_packet_size);
    if len > max {
        // The session is open: it ends as any does, without a packet [MQTT-3.1.2-24].
        let mut link = link;
        link.close(CloseReason::ConnAckTooLarge { len, max });
        finish(conn, link, None).await;
        return None;
    }
    conn.encode_counted(&broker.metrics, &connack, version, &session.client_id);
    if broker.security_generation() != generation {
        // Reloaded while this client was being authenticated: check it again.
        control.send(Control::Recheck);
    }
    Some(link)
}

/// A refusal for the log: the reason code's description, and why when it says more.
fn refusal_reason(r: &Refusal) -> String {
    let description = r.code.description();
    if r.why.eq_ignore_ascii_case(description) {
        description.to_owned()
    } else {
        format!("{description} ({})", r.why)
    }
}

/// mosquitto's protocol numbers in its log: 1 for 3.1, 2 for 3.1.1, 5 for 5.0.
fn mosquitto_protocol_number(v: ProtocolVersion) -> u8 {
    match v {
        ProtocolVersion::V3_1 => 1,
        ProtocolVersion::V3_1_1 => 2,
        ProtocolVersion::V5 => 5,
    }
}

/// Runs an enhanced authentication (5.0 AUTH exchange) to its end.
async fn enhanced_login<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    mut login: Option<EnhancedLogin>,
    mut step: LoginStep,
    max_packet: usize,
) -> Result<Authenticated, Refusal> {
    loop {
        match step {
            LoginStep::Done(auth) => return Ok(auth),
            LoginStep::Refuse(r) => return Err(r),
            LoginStep::Send(p) => {
                conn.encode(&p, ProtocolVersion::V5, "<authenticating>");
                let read = read_packet(conn, max_packet).await;
                let (Some(l), Ok(Packet::Auth(a))) = (login.as_mut(), &read) else {
                    return Err(match read {
                        // An AUTH that does not decode gets its reason, where a CONNACK may
                        // carry it (as `CloseReason::malformed` does for DISCONNECT).
                        Err(Some(e)) => {
                            tracing::info!("Bad AUTH from {}: {e}.", conn.peer);
                            let code = Some(e.reason_code())
                                .filter(|r| r.is_connack_code() && r.is_error())
                                .unwrap_or(ReasonCode::ProtocolError);
                            Refusal::new(code, "an AUTH that does not decode")
                        }
                        _ => Refusal::new(
                            ReasonCode::ProtocolError,
                            "expected AUTH to continue authentication",
                        ),
                    });
                };
                step = l.on_auth(a);
            }
        }
    }
}

/// Reads one 5.0 packet while no session exists yet (during enhanced authentication): the
/// decoding error, or `None` when the connection closed.
async fn read_packet<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    max_packet: usize,
) -> Result<Packet, Option<DecodeError>> {
    loop {
        match decode_within(&mut conn.rbuf, ProtocolVersion::V5, DecodeLimits::server(max_packet)) {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => {}
            Err(e) => return Err(Some(e)),
        }
        match ready(&mut conn.stream, &mut conn.rbuf, &mut conn.wbuf, Some(conn.read_size)).await {
            Ok(IoEvent::Read(0)) | Err(_) => return Err(None),
            Ok(IoEvent::Read(n)) => conn.after_read(n),
            Ok(IoEvent::Wrote) => {}
        }
    }
}

/// Reads the first packet, which must be CONNECT [MQTT-3.1.0-1]. On a bad CONNECT, queues
/// the CONNACK the client should get (if any) and returns `Err`.
async fn read_connect<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    max_packet: usize,
    metrics: &Metrics,
) -> Result<Box<midge_codec::Connect>, ()> {
    loop {
        // CONNECT carries its own version; V5 here only admits packet type 15 at the header.
        // Another packet is refused at its first byte, as mosquitto refuses it: its body is
        // never read, so a client that has not connected cannot make the broker hold it.
        if let Some(Ok(t)) = conn.rbuf.first().map(|&b| FixedHeader::packet_type_of(b, ProtocolVersion::V5)) {
            if t != PacketType::Connect {
                sent_before_connect(conn.peer, t);
                return Err(());
            }
        }
        match decode_within(&mut conn.rbuf, ProtocolVersion::V5, DecodeLimits::server(max_packet)) {
            Ok(Some(Packet::Connect(c))) => return Ok(c),
            Ok(Some(other)) => {
                sent_before_connect(conn.peer, other.packet_type());
                return Err(());
            }
            Ok(None) => {}
            Err(e) => {
                refuse_bad_connect(conn, &e);
                return Err(());
            }
        }
        match ready(&mut conn.stream, &mut conn.rbuf, &mut conn.wbuf, Some(conn.read_size)).await {
            Ok(IoEvent::Read(0)) => {
                // As mosquitto: "Client <unknown> closed its connection."
                tracing::info!("Client {} closed its connection before CONNECT.", conn.peer);
                return Err(());
            }
            Err(e) => {
                // A socket error, or over WebSockets a frame the protocol forbids (a text
                // frame [MQTT-6.0.0-1], an unmasked one, reserved bits).
                tracing::info!("Socket error on client {} before CONNECT: {e}, closing.", conn.peer);
                return Err(());
            }
            Ok(IoEvent::Read(n)) => {
                metrics.bytes_received(n);
                conn.after_read(n)
            }
            Ok(IoEvent::Wrote) => {}
        }
    }
}

/// The first packet is not CONNECT [MQTT-3.1.0-1]: the connection is closed without an answer.
fn sent_before_connect(peer: SocketAddr, packet_type: PacketType) {
    tracing::info!("Client {peer} sent {packet_type} before CONNECT, closing.");
}

/// A CONNECT that cannot be decoded: an unsupported protocol gets CONNACK 0x01 (0x84 for a
/// client speaking level 5) [MQTT-3.1.2-2]; other errors close the connection.
fn refuse_bad_connect<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut Conn<S>, e: &DecodeError) {
    // 0x16 is a TLS handshake record: a TLS client on a plain listener.
    let hint = match e {
        DecodeError::InvalidHeaderFlags { packet_type: PacketType::Connect, flags: 6 } => {
            " (this looks like a TLS client on a listener without TLS)".to_owned()
        }
        DecodeError::PacketTooLarge { max: MAX_LOGIN_PACKET, .. } => {
            format!(" (a CONNECT may have {LOGIN_REMAINING_LENGTH} bytes after its fixed header, as with mosquitto)")
        }
        _ => String::new(),
    };
    tracing::info!("Bad CONNECT from {}: {e}{hint}, closing.", conn.peer);
    if let DecodeError::UnsupportedProtocol { level, .. } = e {
        let version = if *level == 5 { ProtocolVersion::V5 } else { ProtocolVersion::V3_1_1 };
        let ack = ConnAck::new(ReasonCode::UnsupportedProtocolVersion);
        conn.encode(&Packet::ConnAck(ack), version, "<unknown>");
    }
    // Any other error closes the connection without CONNACK, as mosquitto closes it; a
    // CONNACK with the reason is a MAY for 5.0 [MQTT-4.13.1-1].
}

/// Decodes and handles up to [`PACKETS_PER_ROUND`] packets from the read buffer, fewer once
/// routing them cost [`ROUTING_WORK_PER_POLL`]. Returns true when it stopped at a budget
/// with more to read.
fn handle_input<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    link: &mut Link,
    version: ProtocolVersion,
    max_packet: usize,
    now: Instant,
) -> bool {
    let mut tally = Tally::default();
    let more = decode_round(conn, link, version, max_packet, now, &mut tally);
    link.broker().metrics.received(&tally);
    more
}

/// [`handle_input`]'s loop, counting the packets in `tally`.
fn decode_round<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    link: &mut Link,
    version: ProtocolVersion,
    max_packet: usize,
    now: Instant,
    tally: &mut Tally,
) -> bool {
    for _ in 0..PACKETS_PER_ROUND {
        if !link.wants_input() || conn.wbuf.len() >= WRITE_HIGH_WATER {
            return false;
        }
        if link.routing_work() >= ROUTING_WORK_PER_POLL {
            break;
        }
        let buffered = conn.rbuf.len();
        match decode_within(&mut conn.rbuf, version, DecodeLimits::server(max_packet)) {
            Ok(Some(packet)) => {
                if buffered - conn.rbuf.len() > MAX_READ {
                    // The buffer grew for this packet: what follows it goes to one of its
                    // own, or a message kept as a slice of it (a retained one over 64 KiB)
                    // would keep the large one alive with it.
                    conn.fresh_rbuf();
                }
                tally.packet(&packet);
                if tracing::enabled!(tracing::Level::DEBUG) {
                    tracing::debug!(
                        "Received {} from {}{}",
                        packet.packet_type(),
                        link.client_id(),
                        describe(&packet, version)
                    );
                }
                if matches!(packet, Packet::Publish(_)) && link.broker().memory.reached() {
                    link.close(CloseReason::MemoryLimit);
                    return false;
                }
                link.handle_packet(packet, now);
            }
            Ok(None) => return false,
            Err(e) => {
                // A malformed packet closes this connection only (5.0 gets DISCONNECT).
                link.close(CloseReason::malformed(&e));
                return false;
            }
        }
    }
    !conn.rbuf.is_empty()
}

/// The longest a CONNECT waits for a reload asked for before it ([`crate::reload_gate`]).
const RELOAD_WAIT: Duration = Duration::from_secs(5);

/// At most this many reads when a connection taken over handles what its socket holds.
const HANDOVER_READS: usize = 4;

/// Before a connection hands its session to the one that took the client id over: handles
/// what is already in its read buffer and its socket (without waiting for more, and at most
/// [`HANDOVER_READS`] reads), and writes what that produced to its write buffer. Returns
/// whether complete packets are left undecoded.
fn drain_before_handover<S: AsyncRead + AsyncWrite + Unpin>(
    cx: &mut std::task::Context<'_>,
    conn: &mut Conn<S>,
    link: &mut Link,
    version: ProtocolVersion,
    max_packet: usize,
) -> bool {
    let mut more = false;
    for _ in 0..HANDOVER_READS {
        link.reset_routing_work();
        if !conn.rbuf.is_empty() {
            more = handle_input(conn, link, version, max_packet, Instant::now());
        }
        if more || link.close_reason().is_some() || !link.wants_input() {
            break;
        }
        match poll_io(cx, &mut conn.stream, &mut conn.rbuf, &mut conn.wbuf, Some(conn.read_size)) {
            Poll::Ready(Ok(IoEvent::Read(n))) if n > 0 => {
                more = took_input(conn, link, version, max_packet, n)
            }
            Poll::Ready(Ok(IoEvent::Wrote)) => conn.after_write(),
            Poll::Ready(Ok(IoEvent::Read(_))) => {
                link.close(CloseReason::Closed);
                break;
            }
            Poll::Ready(Err(_)) | Poll::Pending => break,
        }
    }
    write_output(conn, link, version);
    more
}

/// `n` bytes were read into the read buffer: counts them and handles what they complete
/// ([`handle_input`]'s answer).
fn took_input<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    link: &mut Link,
    version: ProtocolVersion,
    max_packet: usize,
    n: usize,
) -> bool {
    link.broker().metrics.bytes_received(n);
    let more = handle_input(conn, link, version, max_packet, Instant::now());
    conn.after_read(n);
    more
}

/// Encodes what the session has to send into the write buffer, counting it.
fn write_output<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    link: &mut Link,
    version: ProtocolVersion,
) {
    let id = link.client_id().clone();
    let mut sent = Tally::default();
    link.drain_output(|p| {
        sent.packet(&p);
        sent.bytes(conn.encode(&p, version, &id));
    });
    link.broker().metrics.sent(&sent);
}

/// Rounds of work per poll before a busy connection lets other tasks run.
const ROUNDS_PER_POLL: usize = 8;

/// The routing work ([`crate::router::RouteOutcome::work`]) a connection's publishes
/// may cost in one poll before it lets other tasks run: some 2 ms. Its rounds count packets,
/// and a PUBLISH matching one client's 65,536 overlapping filters costs 9 ms to route: two
/// publishers of them kept both worker threads for 9 s a poll, and new clients waited
/// minutes for their CONNACK. A publish to a few subscribers costs 2 (a poll of 1,024 of
/// them never reaches this), one to 16 costs 17.
const ROUTING_WORK_PER_POLL: usize = 32_768;

/// A connected client being served: the connection's loop as a future of its own, so that
/// an idle connection's task holds these fields and nothing else (an `async fn` would also
/// keep the locals of every round alive).
struct Serving<S> {
    conn: Option<Conn<S>>,
    link: Option<Box<Link>>,
    max_packet: usize,
    /// Complete packets are still in the read buffer (the last round stopped at its budget).
    more: bool,
    /// While the client's publishes wait for a congested subscriber or its answers for the
    /// store: what wakes it (boxed, and only then).
    room: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
}

/// What serving ends with: the connection, the session, and where to hand the session when
/// another connection took the client id over.
type Served<S> = (Conn<S>, Box<Link>, Option<tokio::sync::oneshot::Sender<Owned>>);

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Serving<S> {
    type Output = Served<S>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Served<S>> {
        let this = &mut *self;
        let (Some(conn), Some(link)) = (this.conn.as_mut(), this.link.as_mut()) else {
            return Poll::Pending;
        };
        let version = link.session().version;
        link.reset_routing_work();
        for _ in 0..ROUNDS_PER_POLL {
            if link.routing_work() >= ROUTING_WORK_PER_POLL {
                // Costly to route: the other tasks, and the news of the sockets (a new
                // client's CONNECT), go first. tokio's yield wakes the task only after the
                // worker has run its queue and looked at the sockets; a task that wakes
                // itself runs again after its queue only, and the sockets are looked at
                // every 61 task polls (0.55 s of such publishes).
                let _ = std::pin::pin!(tokio::task::yield_now()).poll(cx);
                return Poll::Pending;
            }
            let now = Instant::now();
            let control = link.control().clone();
            if let Some(c) = control.try_recv() {
                if matches!(c, Control::TakeOver(_)) {
                    // What this connection's client sent before the new connection's CONNECT
                    // takes effect first, as in mosquitto's single event loop: a PUBLISH (a
                    // retained message), a DISCONNECT that ends the session.
                    this.more = drain_before_handover(cx, conn, link, version, this.max_packet);
                }
                if let Some(reply) = link.on_control(c, now) {
                    return Poll::Ready(this.end(Some(reply)));
                }
            }
            // What was read and not decoded yet (a round's budget, or a client held back while
            // a subscriber was congested): decoded first, before reading more.
            if !conn.rbuf.is_empty() {
                this.more = handle_input(conn, link, version, this.max_packet, now);
            }
            let budget = if conn.wbuf.len() < WRITE_HIGH_WATER { DELIVERIES_PER_ROUND } else { 0 };
            link.poll(now, budget);
            write_output(conn, link, version);
            link.watch_timers();
            if link.close_reason().is_some() {
                return Poll::Ready(this.end(None));
            }
            let writable = conn.wbuf.len() < WRITE_HIGH_WATER;
            let want_mail = writable && link.wants_deliveries();
            let reading = writable && link.wants_input();
            this.more &= reading;
            // What wakes a client that waits: the store, or room in a congested subscriber's
            // queue. A subscriber with room already means another round at once.
            let mut progressed = this.more;
            if this.room.is_none() {
                this.room = link.awaiting_store().or_else(|| link.blocked_on_cluster()).or_else(|| {
                    link.blocked_on(now)
                        .map(|h| Box::pin(async move { h.mailbox.room(ROOM_RECHECK).await }) as _)
                });
                progressed |= this.room.is_none() && link.is_blocked();
            }
            // Every source is polled, so that each has the waker when nothing is ready.
            progressed |= control.poll_message(cx).is_ready();
            progressed |= want_mail && link.handle().mailbox.poll_mail(cx).is_ready();
            if let Some(r) = this.room.as_mut() {
                if r.as_mut().poll(cx).is_ready() {
                    this.room = None;
                    progressed = true;
                }
            }
            let read = (reading && !this.more).then_some(conn.read_size);
            match poll_io(cx, &mut conn.stream, &mut conn.rbuf, &mut conn.wbuf, read) {
                Poll::Pending => {}
                Poll::Ready(event) => {
                    progressed = true;
                    match event {
                        Ok(IoEvent::Read(0)) => link.close(CloseReason::Closed),
                        Ok(IoEvent::Read(n)) => {
                            this.more = took_input(conn, link, version, this.max_packet, n)
                        }
                        Ok(IoEvent::Wrote) => conn.after_write(),
                        // A TLS peer that closes without close_notify has closed its
                        // connection, as a plain one that sends FIN does: both are logged as
                        // mosquitto does.
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                            link.close(CloseReason::Closed)
                        }
                        Err(e) => link.close(CloseReason::Io(e.to_string())),
                    }
                }
            }
            if !progressed {
                // Waiting: a small empty write buffer goes (an idle connection holds none); a
                // large one stays for the busy connection it belongs to.
                if conn.wbuf.capacity() <= 16 * 1024 {
                    conn.wbuf.shrink(0);
                }
                return Poll::Pending;
            }
        }
        // Busy: let the other connections run, then go on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S> Serving<S> {
    fn end(&mut self, handover: Option<tokio::sync::oneshot::Sender<Owned>>) -> Served<S> {
        match (self.conn.take(), self.link.take()) {
            (Some(conn), Some(link)) => (conn, link, handover),
            _ => unreachable!("a Serving future is polled after it ended"),
        }
    }
}

/// Closes the connection: the session is handed on first (parked, discarded, or given to the
/// connection that took it over, which should not wait for this socket), then the last
/// DISCONNECT for 5.0 and a graceful close.
async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    mut link: Box<Link>,
    handover: Option<tokio::sync::oneshot::Sender<Owned>>,
) {
    let reason = link.close_reason().cloned().unwrap_or(CloseReason::Closed);
    let version = link.session().version;
    if handover.is_none() && matches!(reason, CloseReason::Disconnect { .. }) {
        // What the client sent before its DISCONNECT is answered, as mosquitto answers it:
        // acknowledgements that wait for the store (persistence) go once it has their records.
        // A client that writes CONNECT, SUBSCRIBE, PUBLISH and DISCONNECT at once got only
        // its CONNACK, and would have sent the message again.
        let deadline = tokio::time::Instant::now() + STORE_WAIT_AT_DISCONNECT;
        while let Some(stored) = link.awaiting_store() {
            if tokio::time::Instant::now() >= deadline
                || tokio::time::timeout_at(deadline, stored).await.is_err()
            {
                break;
            }
            write_output(conn, &mut link, version);
        }
    }
    if link.broker().config.connection_messages {
        tracing::info!("{}", reason.log_line(link.client_id()));
    }
    if let Some(p) = link.disconnect_packet() {
        // 5.0 clients are told why before the server closes (section 4.13.1).
        conn.encode_counted(&link.broker().metrics, &p, version, link.client_id());
    }
    Link::finish(*link, handover, Instant::now());
    conn.close().await;
}

#[cfg(test)]
mod tests {
    /// What an idle connection costs is mostly its task: keep it small. (The memory per
    /// connection as a whole is measured by `midge bench conn --pid`.)
    #[tokio::test]
    async fn the_connection_task_stays_small() {
        let broker = crate::Broker::new(crate::Config::default()).unwrap();
        let info = crate::broker::ConnInfo::plain("127.0.0.1:1".parse().unwrap());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = tokio::net::TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let task = super::serve(broker, stream, info, false);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 256, "the connection task grew to {size} bytes");
        let link = std::mem::size_of::<crate::broker::Link>();
        assert!(link <= 384, "the link grew to {link} bytes");
    }
}
