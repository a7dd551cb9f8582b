//! One task per bridge (`connection` block): connects to the remote broker (TCP or TLS,
//! midge-client's transport), drives the bridge's session on this broker (a [`Link`])
//! between the remote and the router, and connects again after a loss with mosquitto's
//! waits. What is decided is in [`crate::bridge`]; this is the sockets and the clock.
use std::future::poll_fn;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use midge_codec::{
    decode, Packet, Properties, QoS, RetainHandling, Subscribe, SubscriptionOptions, Unsubscribe, Will,
};
use midge_net::{flush, ready, BoxStream, IoEvent, OutQueue};
use tokio::sync::watch;

use crate::bridge::backoff::Backoff;
use crate::bridge::relay::{self, FromRemote, Relay, Terms};
use crate::broker::{BridgeSide, Broker, Link, Opening};
use crate::config::bridge::{Bridge, StartType};
use crate::config::TlsVersion;
use crate::control::ControlSlot;

/// How long the TCP connection, the TLS handshake and the CONNACK may take together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// While this much waits to be written to the remote, no more deliveries are taken.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Deliveries turned into PUBLISH packets per round.
const DELIVERIES_PER_ROUND: usize = 1024;
/// How often a bridge connected to another address than its first looks whether the first
/// is back (mosquitto: 5 s).
const PRIMARY_RETRY: Duration = Duration::from_secs(5);
/// How often a bridge whose incoming messages wait for a congested subscriber looks again.
const ROOM_RECHECK: Duration = Duration::from_millis(50);

/// Why a connection to the remote did not come up.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("{0}")]
    Network(String),
    #[error("{0}")]
    Tls(String),
    #[error("no CONNACK within {} s", CONNECT_TIMEOUT.as_secs())]
    Timeout,
    #[error("the remote refused the connection: {}", .0.description())]
    Refused(midge_codec::ReasonCode),
    #[error("{0}")]
    Protocol(String),
}

impl From<std::io::Error> for ConnectError {
    fn from(e: std::io::Error) -> Self {
        ConnectError::Network(e.to_string())
    }
}

/// The connection to the remote broker.
struct Remote {
    stream: BoxStream,
    /// The TCP socket under the stream (TLS included), to reset a broken connection.
    socket: socket2::Socket,
    rbuf: BytesMut,
    wbuf: OutQueue,
    bridge_version: midge_codec::ProtocolVersion,
    max_packet: usize,
}

impl Remote {
    fn send(&mut self, name: &str, p: &Packet) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(
                "Sending {} to bridge {name}{}",
                p.packet_type(),
                crate::logging::describe(p, self.bridge_version)
            );
        }
        if let Err(e) = p.encode(self.bridge_version, self.wbuf.tail()) {
            tracing::error!("Bridge {name}: cannot encode {}: {e}", p.packet_type());
        }
    }

    /// Sends `p` unless it is larger than the remote's Maximum Packet Size `max`
    /// [MQTT-3.1.2-24]: a PUBLISH is then dropped [MQTT-3.1.2-25] (the session drops its own
    /// before they come here); any other packet cannot be, and the error says why the
    /// connection closes before it, as the session closes a client's.
    fn send_within(&mut self, name: &str, p: &Packet, max: usize) -> Result<(), String> {
        let len = if max == usize::MAX { 0 } else { p.encoded_len(self.bridge_version) };
        if len <= max {
            self.send(name, p);
        } else if !matches!(p, Packet::Publish(_)) {
            return Err(format!(
                "a {} of {len} bytes is larger than the remote's Maximum Packet Size ({max} bytes)",
                p.packet_type()
            ));
        }
        Ok(())
    }
}

/// Runs a bridge until `stop` says the broker stops.
pub(crate) async fn run(broker: Arc<Broker>, bridge: Bridge, mut stop: watch::Receiver<bool>) {
    let connector = match tls_connector(&bridge) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("Bridge {}: {e}; the bridge does not start.", bridge.name);
            return;
        }
    };
    if bridge.loses_its_remote_session() {
        tracing::warn!(
            "Bridge {}: mqttv50 with cleansession false but no bridge_session_expiry_interval: the remote \
             ends the bridge's session at each disconnection (as with mosquitto), and what it queued \
             for the bridge is lost; set bridge_session_expiry_interval to keep it.",
            bridge.name
        );
    }
    let mut backoff = Backoff::new(bridge.restart_timeout.0, bridge.restart_timeout.1);
    // The local session and its subscriptions from the start: what the remote is to get
    // waits for it in the session while it is away.
    let mut handle = prepare(&broker, &bridge, true).await;
    let lazy = bridge.start_type == StartType::Lazy;
    let mut address = 0;
    // The Maximum QoS of the remote's last CONNACK (its will's QoS depends on it).
    let mut remote_max_qos = QoS::ExactlyOnce;
    // try_private: the bridge flag in the protocol level, until a remote refuses it.
    let mut private = bridge.try_private;
    loop {
        if lazy {
            // As mosquitto: a lazy bridge connects once `threshold` messages wait for the
            // remote. Woken by each message queued, not polled.
            let Some(h) = handle.clone() else {
                let _ = stop.changed().await;
                return;
            };
            tokio::select! {
                _ = poll_fn(|cx| h.mailbox.poll_len(cx, bridge.threshold)) => {}
                _ = stop.changed() => return,
            }
        }
        let (host, port) = &bridge.addresses[address];
        tracing::info!("Connecting bridge {} ({host}:{port})", bridge.name);
        // As mosquitto's bridge, which queues QoS 0 messages once its socket is open: what
        // comes while the CONNACK is awaited goes once it is there, rather than being dropped
        // as for an offline session (the session clears this when it opens, for a lazy bridge
        // keeps it).
        let queue_qos0 = |on: bool| {
            if let Some(h) = &handle {
                h.set_queues_qos0_offline(on || lazy);
            }
        };
        queue_qos0(true);
        let attempt = tokio::select! {
            r = connect(&broker, &bridge, host, *port, connector.clone(), remote_max_qos, private) => r,
            _ = stop.changed() => return,
        };
        if attempt.is_err() {
            queue_qos0(false);
        }
        match attempt {
            Ok((remote, terms)) => {
                backoff.reset();
                remote_max_qos = terms.max_qos;
                broker.metrics.bridge_connected(true);
                // Without round_robin, a bridge on another address goes back to the first
                // (the main one) as soon as it answers, as mosquitto's does.
                let primary = (!bridge.round_robin && address != 0).then(|| bridge.addresses[0].clone());
                let why = serve(&broker, &bridge, remote, terms, primary, &mut stop).await;
                broker.metrics.bridge_connected(false);
                tracing::info!("Bridge {} disconnected: {why}.", bridge.name);
                if lazy && bridge.local_clean() && !*stop.borrow() && !broker.is_shutting_down() {
                    // The session ended with the connection: a new one waits for the next.
                    handle = prepare(&broker, &bridge, false).await;
                }
                // As mosquitto: without round_robin the first address, the main one, first.
                address = if bridge.round_robin { (address + 1) % bridge.addresses.len() } else { 0 };
            }
            Err(ConnectError::Refused(midge_codec::ReasonCode::QoSNotSupported))
                if remote_max_qos > QoS::AtMostOnce && bridge.protocol.is_v5() =>
            {
                // Its will (QoS 1) is above what the remote takes [MQTT-3.2.2-12]: at QoS 0
                // from the next attempt.
                tracing::warn!(
                    "Error creating bridge {} ({host}:{port}): the remote takes only QoS 0; its will goes at QoS 0 from now on.",
                    bridge.name
                );
                remote_max_qos = QoS::AtMostOnce;
                address = (address + 1) % bridge.addresses.len();
            }
            Err(ConnectError::Refused(midge_codec::ReasonCode::UnsupportedProtocolVersion)) if private => {
                // A remote that does not know the bridge flag (protocol level 0x83 or 0x84)
                // refuses it as an unacceptable version: as mosquitto, the bridge tries again
                // without it, as a plain client of that version.
                tracing::warn!(
                    "Bridge {}: {host}:{port} refused the bridge flag in the protocol version (try_private); \
                     trying again without it.",
                    bridge.name
                );
                private = false;
            }
            Err(ConnectError::Tls(why)) => {
                tracing::error!(
                    "Bridge {}: TLS with {host}:{port} failed, the remote is not trusted: {why}.",
                    bridge.name
                );
                address = (address + 1) % bridge.addresses.len();
            }
            Err(e) => {
                tracing::warn!("Error creating bridge {} ({host}:{port}): {e}.", bridge.name);
                address = (address + 1) % bridge.addresses.len();
            }
        }
        if *stop.borrow() || broker.is_shutting_down() {
            return;
        }
        if bridge.start_type == StartType::Once {
            tracing::info!("Bridge {} is not restarted (start_type once).", bridge.name);
            return;
        }
        let wait = backoff.next(random());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

fn random() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b)
}

/// The TLS connector of a bridge with `bridge_cafile` or `bridge_capath`.
fn tls_connector(b: &Bridge) -> Result<Option<Arc<dyn midge_client::Connector>>, midge_client::Error> {
    if !b.tls.enabled() {
        return Ok(None);
    }
    let opts = midge_client::TlsOptions {
        cafile: b.tls.cafile.clone(),
        capath: b.tls.capath.clone(),
        cert: b.tls.certfile.clone(),
        key: b.tls.keyfile.clone(),
        os_certs: false,
        insecure: b.tls.insecure,
        version: match b.tls.min_version {
            Some(TlsVersion::V1_3) => Some(midge_client::TlsVersion::V1_3),
            _ => None,
        },
        alpn: b.tls.alpn.clone(),
    };
    opts.connector().map(Some)
}

/// The bridge's side on this broker: while it waits for the remote (`terms` `None`), or on
/// the remote's terms. A lazy bridge with `local_cleansession` keeps a session while it
/// waits, so that what comes for the remote counts towards its `threshold` and goes once it
/// is connected; that session ends with the connection (a new one starts afterwards).
fn side(broker: &Broker, b: &Bridge, terms: Option<&Terms>) -> BridgeSide {
    let window = broker.config.inflight_window();
    let own = if b.max_packet_size > 0 { b.max_packet_size as usize } else { usize::MAX };
    let lazy_clean = b.start_type == StartType::Lazy && b.local_clean();
    let waiting = terms.is_none();
    BridgeSide {
        client_id: b.local_clientid(),
        username: b.local_username.clone(),
        clean: if lazy_clean { waiting } else { b.local_clean() },
        keep: if lazy_clean { waiting } else { !b.local_clean() },
        max_inflight: terms.and_then(|t| t.receive_maximum).unwrap_or(window).min(window),
        max_packet: terms.and_then(|t| t.max_packet).map_or(own, |m| own.min(m as usize)),
        max_qos: terms.map_or(QoS::ExactlyOnce, |t| t.max_qos),
    }
}

/// Opens the bridge's session on this broker (resumed when it persists).
async fn open_link(broker: &Arc<Broker>, b: &Bridge, side: &BridgeSide) -> Option<Box<Link>> {
    let control = ControlSlot::new();
    let mut opening = broker.open_bridge(side, broker.next_conn_id(), control, Instant::now());
    if let Opening::TakeOver(pending) = opening {
        let mut pending = *pending;
        let old =
            tokio::time::timeout(Duration::from_secs(5), &mut pending.old).await.ok().and_then(Result::ok);
        opening = broker.finish_takeover(pending, old, Instant::now());
    }
    match opening {
        Opening::Ready { link, .. } => Some(link),
        Opening::Refused(r) => {
            tracing::warn!("Bridge {}: its local session {} was refused: {}.", b.name, side.client_id, r.why);
            None
        }
        Opening::TakeOver(_) => None,
    }
}

/// At start: the local session with the `out` topics' subscriptions (parked at once, so
/// that it queues for the remote), and with `notify` the `0` notification. Returns its
/// mailbox's owner. A lazy bridge's session queues QoS 0 messages too, as mosquitto's.
async fn prepare(
    broker: &Arc<Broker>,
    b: &Bridge,
    notify: bool,
) -> Option<Arc<crate::mailbox::SessionHandle>> {
    let mut link = open_link(broker, b, &side(broker, b, None)).await?;
    let now = Instant::now();
    link.handle().set_queues_qos0_offline(b.start_type == StartType::Lazy);
    subscribe_locally(&mut link, b, QoS::ExactlyOnce, false, now);
    // What the session would send now is sent once the remote is there.
    drop(link.take_output());
    if notify && b.notifications {
        notify_locally(broker, b, link.client_id(), false);
    }
    let handle = link.handle().clone();
    link.finish(None, now);
    Some(handle)
}

/// The local subscriptions of the `out` and `both` topics, with No Local (what the bridge
/// publishes locally does not go back) and Retain As Published; `retained`: the retained
/// messages they match go to the remote (mosquitto sends them at each connection).
/// Subscriptions of an earlier configuration go.
fn subscribe_locally(link: &mut Link, b: &Bridge, max_qos: QoS, retained: bool, now: Instant) {
    let wanted: Vec<(ByteString, SubscriptionOptions)> = b
        .topics
        .iter()
        .filter(|t| t.direction.outgoing())
        .map(|t| {
            let options = SubscriptionOptions {
                qos: t.qos.min(max_qos),
                no_local: true,
                retain_as_published: true,
                retain_handling: if retained {
                    RetainHandling::SendAtSubscribe
                } else {
                    RetainHandling::DoNotSend
                },
            };
            (ByteString::from(t.local_topic()), options)
        })
        .collect();
    let stale: Vec<ByteString> = link
        .session()
        .state
        .subscriptions
        .keys()
        .filter(|f| !wanted.iter().any(|(w, _)| w == *f))
        .cloned()
        .collect();
    if !stale.is_empty() {
        let u = Unsubscribe { packet_id: 1, properties: Properties::new(), filters: stale };
        link.handle_packet(Packet::Unsubscribe(u), now);
    }
    if !wanted.is_empty() {
        let s = Subscribe { packet_id: 1, properties: Properties::new(), filters: wanted };
        link.handle_packet(Packet::Subscribe(s), now);
    }
}

/// The bridge's state on this broker: `1` or `0`, retained, on its notification topic,
/// published as the bridge's session (so not sent back out by its own subscriptions).
fn notify_locally(broker: &Broker, b: &Bridge, client_id: &ByteString, connected: bool) {
    let will = Will {
        topic: ByteString::from(b.notification_topic()),
        payload: Bytes::from_static(if connected { b"1" } else { b"0" }),
        qos: QoS::AtLeastOnce,
        retain: broker.config.retain_available,
        properties: Properties::new(),
    };
    broker.publish_will(will, client_id, Instant::now());
}

/// The TCP connection (from `bridge_bind_address` when given) and TLS over it, with the
/// socket kept aside: midge-client's transport, one step at a time.
async fn open(opts: &midge_client::Options) -> Result<(BoxStream, socket2::Socket), ConnectError> {
    let addrs = tokio::net::lookup_host((opts.host.as_str(), opts.port)).await?;
    let mut last = None;
    for addr in addrs {
        let socket =
            if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        if let Some(ip) = opts.bind_address {
            socket.bind((ip, 0).into())?;
        }
        match socket.connect(addr).await {
            Ok(tcp) => {
                tcp.set_nodelay(true)?;
                let kept = socket2::SockRef::from(&tcp).try_clone()?;
                let stream = match &opts.connector {
                    Some(c) => {
                        c.connect(&opts.host, tcp).await.map_err(|e| ConnectError::Tls(e.to_string()))?
                    }
                    None => Box::new(tcp) as BoxStream,
                };
                return Ok((stream, kept));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(ConnectError::Network(
        last.map_or_else(|| "the host name does not resolve".to_owned(), |e| e.to_string()),
    ))
}

/// Opens the connection to the remote: TCP (or TLS), CONNECT, CONNACK.
async fn connect(
    broker: &Broker,
    b: &Bridge,
    host: &str,
    port: u16,
    connector: Option<Arc<dyn midge_client::Connector>>,
    remote_max_qos: QoS,
    private: bool,
) -> Result<(Remote, Terms), ConnectError> {
    let mut connect = relay::connect_packet(b, broker.config.inflight_window(), remote_max_qos);
    connect.bridge &= private;
    let mut opts = midge_client::Options::new(host, port, connect.clone());
    opts.connector = connector;
    opts.bind_address = b.bind_address.as_deref().and_then(|a| a.parse().ok());
    let attempt = async {
        let (stream, socket) = open(&opts).await?;
        let max_packet = broker.config.max_packet_bytes();
        let mut remote = Remote {
            stream,
            socket,
            rbuf: BytesMut::new(),
            wbuf: OutQueue::default(),
            bridge_version: b.protocol,
            max_packet,
        };
        remote.send(&b.name, &Packet::Connect(Box::new(connect)));
        flush(&mut remote.stream, &mut remote.wbuf).await?;
        loop {
            match decode(&mut remote.rbuf, b.protocol, max_packet) {
                Ok(Some(Packet::ConnAck(ack))) => {
                    let terms = relay::on_connack(&ack).map_err(ConnectError::Refused)?;
                    return Ok((remote, terms));
                }
                Ok(Some(other)) => {
                    return Err(ConnectError::Protocol(format!("{} instead of CONNACK", other.packet_type())))
                }
                Ok(None) => {}
                Err(e) => return Err(ConnectError::Protocol(e.to_string())),
            }
            match ready(&mut remote.stream, &mut remote.rbuf, &mut remote.wbuf, Some(4096)).await {
                Ok(IoEvent::Read(0)) => {
                    return Err(ConnectError::Network("the remote closed the connection".into()))
                }
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt).await.map_err(|_| ConnectError::Timeout)?
}

/// True when the main address takes a TCP connection (within a second).
async fn primary_answers(primary: Option<&(String, u16)>) -> bool {
    let Some((host, port)) = primary else { return false };
    let attempt = tokio::net::TcpStream::connect((host.as_str(), *port));
    matches!(tokio::time::timeout(Duration::from_secs(1), attempt).await, Ok(Ok(_)))
}

/// Relays between the remote and the local session until the connection ends; returns why.
async fn serve(
    broker: &Arc<Broker>,
    b: &Bridge,
    mut remote: Remote,
    terms: Terms,
    primary: Option<(String, u16)>,
    stop: &mut watch::Receiver<bool>,
) -> String {
    let Some(mut link) = open_link(broker, b, &side(broker, b, Some(&terms))).await else {
        return "its local session could not be opened".into();
    };
    link.handle().set_queues_qos0_offline(b.start_type == StartType::Lazy);
    tracing::info!("Bridge {} connected (local client {}).", b.name, link.client_id());
    let mut relay = Relay::new(b, terms);
    let start = Instant::now();
    let max_packet = terms.max_packet.map_or(usize::MAX, |m| m as usize);
    // Notification, SUBSCRIBE, UNSUBSCRIBE, then what the session resends, then the rest.
    let mut oversize = None;
    for p in relay.greeting(|| link.reserve_packet_id()) {
        if let Err(why) = remote.send_within(&b.name, &p, max_packet) {
            oversize = Some(why);
            break;
        }
    }
    subscribe_locally(&mut link, b, terms.max_qos, true, start);
    if b.notifications {
        notify_locally(broker, b, link.client_id(), true);
    }
    // The remote's Server Keep Alive, if it sent one, instead of keepalive_interval
    // [MQTT-3.2.2-21] (a remote with a lower max_keepalive closes a bridge that pings later).
    let keep_alive = Duration::from_secs(u64::from(terms.server_keep_alive.unwrap_or(b.keepalive)));
    let idle = (b.start_type == StartType::Lazy).then(|| Duration::from_secs(b.idle_timeout.max(1)));
    let (mut last_in, mut last_out, mut last_message) = (start, start, start);
    let handle = link.handle().clone();
    let control = link.control().clone();
    let mut handover = None;
    let mut broken = false;
    let mut probe_at = start + PRIMARY_RETRY;
    let why: String = 'serving: loop {
        if let Some(why) = oversize.take() {
            break why;
        }
        let now = Instant::now();
        if let Some(c) = control.try_recv() {
            if let Some(reply) = link.on_control(c, now) {
                handover = Some(reply);
                break "its local session was taken over".into();
            }
        }
        // Nothing more is read while the answers already made wait to be written: a remote
        // that sends and never reads (PINGREQ, QoS 1 PUBLISH, PUBREL) would otherwise grow
        // them without bound. It is then silent for the keep alive, which closes it.
        while link.wants_input() && remote.wbuf.len() < WRITE_HIGH_WATER {
            match decode(&mut remote.rbuf, b.protocol, remote.max_packet) {
                Ok(Some(p)) => {
                    last_in = now;
                    if tracing::enabled!(tracing::Level::DEBUG) {
                        tracing::debug!(
                            "Received {} from bridge {}{}",
                            p.packet_type(),
                            b.name,
                            crate::logging::describe(&p, b.protocol)
                        );
                    }
                    match relay.from_remote(p) {
                        FromRemote::ToLink(p) => {
                            if matches!(p, Packet::Publish(_)) {
                                last_message = now;
                            }
                            link.handle_packet(p, now);
                        }
                        FromRemote::Consumed => {}
                        FromRemote::Reply(p) => remote.send(&b.name, &p),
                        FromRemote::Close(why) => break 'serving why,
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    broken = true;
                    break 'serving format!("undecodable packet from the remote: {e}");
                }
            }
        }
        let budget = if remote.wbuf.len() < WRITE_HIGH_WATER { DELIVERIES_PER_ROUND } else { 0 };
        if link.poll(now, budget) > 0 {
            last_message = now;
        }
        let before = remote.wbuf.len();
        link.drain_output(|p| {
            if let Some(p) = relay.to_remote(p).filter(|_| oversize.is_none()) {
                oversize = remote.send_within(&b.name, &p, max_packet).err();
            }
        });
        if let Some(why) = oversize.take() {
            break why;
        }
        link.watch_timers();
        if let Some(r) = link.close_reason() {
            break r.log_line(link.client_id());
        }
        if keep_alive > Duration::ZERO {
            if now.duration_since(last_in) >= keep_alive * 3 / 2 {
                break "the remote did not answer within the keep alive".into();
            }
            if remote.wbuf.len() == before && now.duration_since(last_out) >= keep_alive {
                remote.send(&b.name, &Packet::PingReq);
            }
        }
        if !remote.wbuf.is_empty() {
            last_out = now;
        }
        if let Some(idle) = idle.filter(|i| now.duration_since(last_message) >= *i) {
            break format!("idle for {} s (lazy bridge)", idle.as_secs());
        }
        let mut deadline = now + Duration::from_secs(3600);
        if keep_alive > Duration::ZERO {
            deadline = deadline.min(last_out + keep_alive).min(last_in + keep_alive * 3 / 2);
        }
        if let Some(i) = idle {
            deadline = deadline.min(last_message + i);
        }
        let read = (link.wants_input() && remote.wbuf.len() < WRITE_HIGH_WATER).then_some(4096);
        let wants_mail = link.wants_deliveries() && remote.wbuf.len() < WRITE_HIGH_WATER;
        let blocked = link.is_blocked();
        let store = link.awaiting_store();
        let waiting_store = store.is_some();
        tokio::select! {
            ev = ready(&mut remote.stream, &mut remote.rbuf, &mut remote.wbuf, read) => match ev {
                Ok(IoEvent::Read(0)) => break "the remote closed the connection".into(),
                Ok(_) => {}
                Err(e) => break e.to_string(),
            },
            _ = poll_fn(|cx| handle.mailbox.poll_mail(cx)), if wants_mail => {}
            _ = poll_fn(|cx| control.poll_message(cx)) => {}
            _ = tokio::time::sleep(ROOM_RECHECK), if blocked => {}
            _ = async move { if let Some(w) = store { w.await } }, if waiting_store => {}
            _ = tokio::time::sleep_until(deadline.into()) => {}
            _ = stop.changed() => break "midge is shutting down".into(),
            _ = tokio::time::sleep_until(probe_at.into()), if primary.is_some() => {
                probe_at = Instant::now() + PRIMARY_RETRY;
                if primary_answers(primary.as_ref()).await {
                    break "its main address answers again".into();
                }
            }
        }
    };
    let now = Instant::now();
    if b.notifications {
        notify_locally(broker, b, link.client_id(), false);
    }
    if broken {
        // A remote that broke the protocol is reset (as mosquitto's connection is), so that
        // it learns its packet was refused rather than seeing an orderly close.
        let _ = remote.socket.set_linger(Some(Duration::ZERO));
    } else {
        // What is written goes; the session keeps what the remote did not acknowledge.
        let _ =
            tokio::time::timeout(Duration::from_secs(1), flush(&mut remote.stream, &mut remote.wbuf)).await;
    }
    link.finish(handover, now);
    why
}
