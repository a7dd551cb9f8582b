//! The public handle: [`connect`], [`Client`] and [`Events`].
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use midge_codec::{
    decode, ConnAck, Disconnect, Packet, ProtocolVersion, Publish, ReasonCode, SubAck, Subscribe, UnsubAck,
    Unsubscribe,
};
use midge_net::{ready, IoEvent};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Kind};
use crate::options::{Direction, Options};
use crate::state::{closed, Reply, State};
use crate::task::Task;
use crate::transport::{open, BoxStream};

/// Room made for each read.
pub(crate) const READ_SIZE: usize = 4096;

pub(crate) enum Request {
    Publish(Publish, Option<Reply<ReasonCode>>),
    Subscribe(Subscribe, Reply<SubAck>),
    Unsubscribe(Unsubscribe, Reply<UnsubAck>),
    Disconnect(Disconnect, oneshot::Sender<()>),
}

/// What the connection delivers to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A message from a subscription.
    Message(Publish),
    /// The server sent DISCONNECT (5.0); the connection is closed.
    Disconnected(Disconnect),
    /// The connection ended without DISCONNECT from the server: `Some` with the error when it
    /// was not the application's own disconnect.
    Closed(Option<String>),
}

/// Sends requests to the connection. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    tx: mpsc::Sender<Request>,
    version: ProtocolVersion,
    client_id: bytestring::ByteString,
}

/// Incoming messages and the end of the connection.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event; `None` after the connection has ended and every event was read.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

/// Resolves when a QoS 1 / 2 PUBLISH is acknowledged (at once for QoS 0), with the reason
/// code of the acknowledgement.
#[derive(Debug)]
pub struct AckFuture(oneshot::Receiver<Result<ReasonCode, Error>>);

impl AckFuture {
    /// The outcome if it is in already, without waiting.
    pub fn try_take(&mut self) -> Option<Result<ReasonCode, Error>> {
        match self.0.try_recv() {
            Ok(r) => Some(r),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(closed())),
        }
    }
}

impl Future for AckFuture {
    type Output = Result<ReasonCode, Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| r.unwrap_or_else(|_| Err(closed())))
    }
}

impl Client {
    /// The protocol version of the connection.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The client identifier in use (the one the server assigned, if it did).
    pub fn client_id(&self) -> &bytestring::ByteString {
        &self.client_id
    }

    async fn request(&self, r: Request) -> Result<(), Error> {
        self.tx.send(r).await.map_err(|_| closed())
    }

    /// Queues a PUBLISH and returns a future for its acknowledgement: many may be in flight.
    /// The packet identifier is assigned by the connection.
    pub async fn start_publish(&self, p: Publish) -> Result<AckFuture, Error> {
        let (tx, rx) = oneshot::channel();
        self.request(Request::Publish(p, Some(tx))).await?;
        Ok(AckFuture(rx))
    }

    /// Publishes and waits for the acknowledgement (QoS 1: PUBACK; QoS 2: PUBCOMP).
    pub async fn publish(&self, p: Publish) -> Result<ReasonCode, Error> {
        self.start_publish(p).await?.await
    }

    /// Sends SUBSCRIBE and returns a future for its SUBACK.
    pub async fn start_subscribe(
        &self,
        s: Subscribe,
    ) -> Result<impl Future<Output = Result<SubAck, Error>>, Error> {
        let (tx, rx) = oneshot::channel();
        self.request(Request::Subscribe(s, tx)).await?;
        Ok(async move { rx.await.unwrap_or_else(|_| Err(closed())) })
    }

    /// Subscribes and waits for SUBACK. The packet identifier is assigned by the connection.
    pub async fn subscribe(&self, s: Subscribe) -> Result<SubAck, Error> {
        let (tx, rx) = oneshot::channel();
        self.request(Request::Subscribe(s, tx)).await?;
        rx.await.unwrap_or_else(|_| Err(closed()))
    }

    /// Sends UNSUBSCRIBE without waiting for UNSUBACK.
    pub async fn start_unsubscribe(&self, u: Unsubscribe) -> Result<(), Error> {
        let (tx, _rx) = oneshot::channel();
        self.request(Request::Unsubscribe(u, tx)).await
    }

    /// Unsubscribes and waits for UNSUBACK.
    pub async fn unsubscribe(&self, u: Unsubscribe) -> Result<UnsubAck, Error> {
        let (tx, rx) = oneshot::channel();
        self.request(Request::Unsubscribe(u, tx)).await?;
        rx.await.unwrap_or_else(|_| Err(closed()))
    }

    /// Sends DISCONNECT (normal disconnection) after everything queued, and closes.
    pub async fn disconnect(&self) -> Result<(), Error> {
        self.disconnect_with(Disconnect::new(ReasonCode::Success)).await
    }

    /// Sends this DISCONNECT after everything queued, and closes.
    pub async fn disconnect_with(&self, d: Disconnect) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.request(Request::Disconnect(d, tx)).await?;
        let _ = rx.await;
        Ok(())
    }
}

/// Connects: TCP (and TLS when the options carry a connector), CONNECT, CONNACK. A refusal
/// is an error with [`Error::refused_code`]. On success the connection runs in a task.
pub async fn connect(opts: Options) -> Result<(Client, Events, ConnAck), Error> {
    let timeout = opts.connect_timeout;
    let (stream, rbuf, connack) = tokio::time::timeout(timeout, handshake(&opts))
        .await
        .map_err(|_| Error::new(Kind::Timeout("CONNACK")))??;
    let version = opts.connect.protocol;
    let client_id = connack
        .properties
        .assigned_client_identifier()
        .cloned()
        .unwrap_or_else(|| opts.connect.client_id.clone());
    let keep_alive = connack.properties.server_keep_alive().unwrap_or(opts.connect.keep_alive);
    let receive_maximum =
        connack.properties.receive_maximum().unwrap_or(u16::MAX).min(opts.max_inflight.max(1));
    let (req_tx, req_rx) = mpsc::channel(256);
    let (ev_tx, ev_rx) = mpsc::channel(opts.event_capacity.max(1));
    let mut state = State::new(version, receive_maximum);
    state.set_server_maximum_packet_size(connack.properties.maximum_packet_size());
    let task =
        Task::new(stream, rbuf, version, keep_alive, state, opts.on_packet.clone(), opts.on_message.clone());
    tokio::spawn(task.run(req_rx, ev_tx));
    Ok((Client { tx: req_tx, version, client_id }, Events { rx: ev_rx }, connack))
}

/// The first byte of a TLS alert record (content type 21).
const TLS_ALERT_RECORD: u8 = 0x15;

async fn handshake(opts: &Options) -> Result<(BoxStream, BytesMut, ConnAck), Error> {
    let version = opts.connect.protocol;
    let connect = Packet::Connect(Box::new(opts.connect.clone()));
    let mut stream = match open(opts).await {
        Ok(s) => s,
        Err(e) => {
            // A server that refuses the client's certificate in a TLS 1.2 handshake: its
            // alert comes after libmosquitto has queued CONNECT (and logged it), so mosquitto's
            // clients show the CONNECT line before the alert; so does the hook.
            if let (Some(hook), Some(_)) = (&opts.on_packet, e.tls_alert()) {
                hook(Direction::Sent, &connect);
            }
            return Err(e);
        }
    };
    if let Some(hook) = &opts.on_packet {
        hook(Direction::Sent, &connect);
    }
    let mut wbuf = BytesMut::new();
    connect.encode(version, &mut wbuf)?;
    let mut rbuf = BytesMut::with_capacity(1024);
    loop {
        if let Some(&first) = rbuf.first() {
            // The server's first packet is CONNACK [MQTT-3.2.0-1]; CONNECT, SUBSCRIBE and
            // UNSUBSCRIBE are packets no server sends: something else is talking (a TLS
            // listener answering in TLS, say), reported as mosquitto's clients do.
            let command = first & 0xF0;
            if matches!(command, 0x10 | 0x80 | 0xA0) {
                // 0x15 0x03: a TLS alert record (content type 21, version 3.x).
                let tls_record = first == TLS_ALERT_RECORD && rbuf.get(1).copied().unwrap_or(3) == 3;
                return Err(Error::new(Kind::Unrecognised { command, tls_record }));
            }
        }
        if let Some(p) = decode(&mut rbuf, version, usize::MAX)? {
            if let Some(hook) = &opts.on_packet {
                hook(Direction::Received, &p);
            }
            return match p {
                Packet::ConnAck(a) if a.reason_code == ReasonCode::Success => Ok((stream, rbuf, a)),
                Packet::ConnAck(a) => Err(Error::new(Kind::Refused { code: a.reason_code, version })),
                other => Err(Error::protocol(format!("{} instead of CONNACK", other.packet_type()))),
            };
        }
        match ready(&mut stream, &mut rbuf, &mut wbuf, Some(READ_SIZE)).await {
            Ok(IoEvent::Read(0)) => {
                return Err(Error::new(Kind::Lost(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "the server closed the connection before CONNACK",
                ))))
            }
            Ok(_) => {}
            Err(e) => return Err(Error::new(Kind::Lost(e))),
        }
    }
}
