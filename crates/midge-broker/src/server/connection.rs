//! One client connection: CONNECT, then a loop over the socket, the session's mailbox, its
//! keep alive timer and control messages, until the session says to close.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use midge_codec::{decode, ConnAck, DecodeError, Packet, ProtocolVersion, ReasonCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::broker::{Authenticated, Broker, ConnInfo, EnhancedLogin, LoginStep, Opened, Opening, Refusal};
use crate::logging::describe;
use crate::registry::Control;
use crate::session::{CloseReason, Session, SessionState};
use midge_net::{flush, ready, IoEvent};

/// Stop turning deliveries into packets while this much waits to be written: the socket is
/// slow, and the session's bounded mailbox absorbs the rest.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// How long a closing connection may take to write its last bytes.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// How often held acknowledgements are looked at again when no room was signalled.
const HELD_RECHECK: Duration = Duration::from_millis(50);
/// How long a takeover waits for the old connection to hand the session over.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);

struct Conn<S> {
    stream: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    peer: SocketAddr,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn encode(&mut self, packet: &Packet, version: ProtocolVersion, client_id: &str) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!("Sending {} to {client_id}{}", packet.packet_type(), describe(packet, version));
        }
        if let Err(e) = packet.encode(version, &mut self.wbuf) {
            // Only a broker bug can get here (every packet is built from validated parts).
            tracing::error!("Cannot encode {} for {client_id}: {e}", packet.packet_type());
        }
    }

    async fn close(&mut self) {
        let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, flush(&mut self.stream, &mut self.wbuf)).await;
        let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, self.stream.shutdown()).await;
    }
}

/// Serves one client until it leaves, breaks the protocol or the broker stops.
pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    broker: Arc<Broker>,
    stream: S,
    info: ConnInfo,
    stop: watch::Receiver<bool>,
) {
    let peer = info.peer;
    let mut conn = Conn { stream, rbuf: BytesMut::with_capacity(1024), wbuf: BytesMut::new(), peer };
    let max_packet = broker.config.max_packet_bytes();
    let connect_timeout = Duration::from_secs(broker.config.connect_timeout_secs);
    let connect = match tokio::time::timeout(connect_timeout, read_connect(&mut conn, max_packet)).await {
        Err(_) => {
            tracing::info!("Client {} did not send CONNECT in time, closing.", peer);
            return;
        }
        Ok(Err(())) => {
            conn.close().await;
            return;
        }
        Ok(Ok(c)) => c,
    };
    let version = connect.protocol;
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!(
            "Received CONNECT from {}{}",
            connect.client_id,
            describe(&Packet::Connect(connect.clone()), version)
        );
    }
    let conn_id = broker.next_conn_id();
    let (control_tx, mut control_rx) = mpsc::unbounded_channel();
    let username = connect.username.clone();
    let shown_id =
        if connect.client_id.is_empty() { "<unknown>".to_owned() } else { connect.client_id.to_string() };
    let login = async {
        match broker.begin_enhanced(&connect, &shown_id) {
            None => broker.authenticate_async(&connect, &info, Instant::now()).await,
            Some((login, step)) => enhanced_login(&mut conn, login, step, max_packet).await,
        }
    };
    let auth = match tokio::time::timeout(connect_timeout, login).await {
        Ok(Ok(auth)) => auth,
        Ok(Err(refusal)) => {
            // Never the password: the client id, the address and the user name.
            tracing::info!(
                "Client {shown_id} from {peer} refused: {} ({}){}.",
                refusal.code.description(),
                refusal.why,
                username.as_ref().map(|u| format!(" (user '{u}')")).unwrap_or_default()
            );
            // Repeated failures from this address wait longer each time.
            tokio::time::sleep(refusal.delay).await;
            conn.encode(&Packet::ConnAck(refusal.connack()), version, &shown_id);
            conn.close().await;
            return;
        }
        Err(_) => {
            tracing::info!("Client {shown_id} from {peer} did not complete authentication in time, closing.");
            conn.close().await;
            return;
        }
    };
    let opened = match broker.open(*connect, auth, conn_id, control_tx, Instant::now()) {
        Opening::Ready(opened) => *opened,
        Opening::Refused(connack, code) => {
            tracing::info!(
                "Client {shown_id} from {} refused: {}{}.",
                peer,
                code.description(),
                username.as_ref().map(|u| format!(" (user '{u}')")).unwrap_or_default()
            );
            conn.encode(&Packet::ConnAck(connack), version, &shown_id);
            conn.close().await;
            return;
        }
        Opening::TakeOver(pending) => {
            let mut pending = *pending;
            let old = match tokio::time::timeout(TAKEOVER_TIMEOUT, &mut pending.old).await {
                Ok(Ok(state)) => Some(state),
                _ => {
                    tracing::warn!(
                        "Client {}: the previous connection did not hand its session over.",
                        pending.client_id()
                    );
                    None
                }
            };
            broker.finish_takeover(pending, old, Instant::now())
        }
    };
    let Opened { mut session, connack, clean_start } = opened;
    let client_id = session.client_id.clone();
    tracing::info!(
        "New client connected from {} as {} (p{}, c{}, k{}{}).",
        peer.ip(),
        client_id,
        mosquitto_protocol_number(version),
        u8::from(clean_start),
        session.keep_alive,
        session.username.as_ref().map(|u| format!(", u'{u}'")).unwrap_or_default()
    );
    conn.encode(&connack, version, &client_id);

    let reason = run(&broker, &mut conn, &mut session, &mut control_rx, stop, max_packet).await;
    let handover = match reason {
        Ended::TakenOver(reply) => Some(reply),
        Ended::Closed => None,
    };
    finish(&broker, conn, session, conn_id, handover, control_rx).await;
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
                let (Some(l), Ok(Packet::Auth(a))) = (login.as_mut(), read_packet(conn, max_packet).await)
                else {
                    return Err(Refusal::new(
                        ReasonCode::ProtocolError,
                        "expected AUTH to continue authentication",
                    ));
                };
                step = l.on_auth(&a);
            }
        }
    }
}

/// Reads one 5.0 packet while no session exists yet (during enhanced authentication).
async fn read_packet<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    max_packet: usize,
) -> Result<Packet, ()> {
    loop {
        match decode(&mut conn.rbuf, ProtocolVersion::V5, max_packet) {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => {}
            Err(_) => return Err(()),
        }
        match ready(&mut conn.stream, &mut conn.rbuf, &mut conn.wbuf, true).await {
            Ok(IoEvent::Read(0)) | Err(_) => return Err(()),
            Ok(_) => {}
        }
    }
}

/// Reads the first packet, which must be CONNECT [MQTT-3.1.0-1]. On a bad CONNECT, queues
/// the CONNACK the client should get (if any) and returns `Err`.
async fn read_connect<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    max_packet: usize,
) -> Result<Box<midge_codec::Connect>, ()> {
    loop {
        // Read before decoding consumes the bytes: a 5.0 client is told why its CONNECT failed.
        let level = connect_level(&conn.rbuf);
        // CONNECT carries its own version; V5 here only admits packet type 15 at the header.
        match decode(&mut conn.rbuf, ProtocolVersion::V5, max_packet) {
            Ok(Some(Packet::Connect(c))) => return Ok(c),
            Ok(Some(other)) => {
                tracing::info!("Client {} sent {} before CONNECT, closing.", conn.peer, other.packet_type());
                return Err(());
            }
            Ok(None) => {}
            Err(e) => {
                refuse_bad_connect(conn, &e, level);
                return Err(());
            }
        }
        match ready(&mut conn.stream, &mut conn.rbuf, &mut conn.wbuf, true).await {
            Ok(IoEvent::Read(0)) | Err(_) => return Err(()),
            Ok(_) => {}
        }
    }
}

/// A CONNECT that cannot be decoded: an unsupported protocol gets CONNACK 0x01 (0x84 for a
/// client speaking level 5) [MQTT-3.1.2-2]; other errors get a 5.0 CONNACK with the reason
/// code when the client asked for 5.0, and 3.1.1 clients are just disconnected.
fn refuse_bad_connect<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
    e: &DecodeError,
    level: Option<u8>,
) {
    tracing::info!("Bad CONNECT from {}: {e}, closing.", conn.peer);
    let level = match e {
        DecodeError::UnsupportedProtocol { level, .. } => {
            let version = if *level == 5 { ProtocolVersion::V5 } else { ProtocolVersion::V3_1_1 };
            let ack = ConnAck::new(ReasonCode::UnsupportedProtocolVersion);
            conn.encode(&Packet::ConnAck(ack), version, "<unknown>");
            return;
        }
        _ => level,
    };
    if level == Some(5) {
        conn.encode(&Packet::ConnAck(ConnAck::new(e.reason_code())), ProtocolVersion::V5, "<unknown>");
    }
}

/// The protocol level byte of a CONNECT at the start of `buf`, if it can be found.
fn connect_level(buf: &[u8]) -> Option<u8> {
    let header = midge_codec::FixedHeader::parse(buf, ProtocolVersion::V5, usize::MAX).ok().flatten()?;
    let body = buf.get(header.header_len..)?;
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + name_len).copied()
}

enum Ended {
    Closed,
    TakenOver(tokio::sync::oneshot::Sender<SessionState>),
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    broker: &Broker,
    conn: &mut Conn<S>,
    session: &mut Session,
    control: &mut mpsc::UnboundedReceiver<Control>,
    mut stop: watch::Receiver<bool>,
    max_packet: usize,
) -> Ended {
    let handle = session.state.handle.clone();
    let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let timer = tokio::time::sleep_until(session.next_timeout().map_or(far, tokio::time::Instant::from_std));
    tokio::pin!(timer);
    let budget = 1024;
    let version = session.version;
    let client_id = session.client_id.clone();
    loop {
        if session.has_held_acks() {
            session.release_held_acks(Instant::now());
        }
        if conn.wbuf.len() < WRITE_HIGH_WATER {
            session.pump(Instant::now(), budget);
        }
        for p in session.drain_output() {
            conn.encode(&p, version, &client_id);
        }
        if session.close_reason().is_some() {
            return Ended::Closed;
        }
        let want_mail = session.wants_deliveries() && conn.wbuf.len() < WRITE_HIGH_WATER;
        let waiter = session.held_waiter();
        let room = async {
            // No waiter while acknowledgements are held: the queues have room since the
            // release above, so go round again at once.
            if let Some(h) = &waiter {
                h.mailbox.room(HELD_RECHECK).await;
            }
        };
        tokio::select! {
            biased;
            ctl = control.recv() => match ctl {
                Some(Control::TakeOver(reply)) => {
                    session.close(CloseReason::TakenOver);
                    return Ended::TakenOver(reply);
                }
                None => session.close(CloseReason::Shutdown),
            },
            _ = stop.changed() => session.close(CloseReason::Shutdown),
            ev = ready(&mut conn.stream, &mut conn.rbuf, &mut conn.wbuf, session.wants_input()) => match ev {
                Ok(IoEvent::Read(0)) => session.close(CloseReason::Closed),
                Ok(IoEvent::Read(_)) => {
                    let now = Instant::now();
                    loop {
                        match decode(&mut conn.rbuf, version, max_packet) {
                            Ok(Some(packet)) => {
                                if tracing::enabled!(tracing::Level::DEBUG) {
                                    tracing::debug!("Received {} from {client_id}{}", packet.packet_type(), describe(&packet, version));
                                }
                                session.handle_packet(packet, now, &broker.router);
                                if session.close_reason().is_some() {
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                // A malformed packet closes this connection only, with the
                                // reason code the codec determined (5.0 gets DISCONNECT).
                                session.close(CloseReason::ProtocolError { reason: e.reason_code(), detail: e.to_string() });
                                break;
                            }
                        }
                    }
                }
                Ok(IoEvent::Wrote) => {}
                Err(e) => session.close(CloseReason::Io(e.to_string())),
            },
            _ = handle.mailbox.notified(), if want_mail => {}
            _ = room, if session.has_held_acks() => {}
            _ = &mut timer => {
                session.handle_timeout(Instant::now());
                let next = session.next_timeout().map_or(far, tokio::time::Instant::from_std);
                timer.as_mut().reset(next);
            }
        }
    }
}

/// Closes the connection: the last DISCONNECT for 5.0, then the broker decides about the
/// will and the session.
async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
    broker: &Broker,
    mut conn: Conn<S>,
    session: Session,
    conn_id: u64,
    handover: Option<tokio::sync::oneshot::Sender<SessionState>>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let reason = session.close_reason().cloned().unwrap_or(CloseReason::Closed);
    tracing::info!("{}", reason.log_line(&session.client_id));
    if let Some(p) = session.disconnect_packet() {
        // 5.0 clients are told why before the server closes (section 4.13.1).
        conn.encode(&p, session.version, &session.client_id);
    }
    conn.close().await;
    broker.close(session, conn_id, handover, &mut control, Instant::now());
}
