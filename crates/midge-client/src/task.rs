//! The connection task: owns the socket, runs the protocol state, keeps the connection alive.
use std::collections::VecDeque;
use std::time::Duration;

use bytes::BytesMut;
use midge_codec::{decode, Packet, ProtocolVersion};
use midge_net::{flush, ready, IoEvent};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::client::{Event, Request};
use crate::error::{Error, Kind};
use crate::options::{Direction, MessageHook, PacketHook};
use crate::state::{closed, Incoming, State};
use crate::transport::BoxStream;

/// Stop reading from the socket while this many events wait for the application.
const MAX_BUFFERED_EVENTS: usize = 1024;
/// Publishes accepted from the application beyond the server's Receive Maximum.
const MAX_WAITING_PUBLISHES: usize = 1024;
/// Stop taking requests while this much waits to be written: a fast publisher is slowed to
/// the socket's pace instead of buffering without bound.
const WRITE_HIGH_WATER: usize = 256 * 1024;

pub(crate) struct Task {
    stream: BoxStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    version: ProtocolVersion,
    keep_alive: Option<Duration>,
    state: State,
    hook: Option<PacketHook>,
    on_message: Option<MessageHook>,
    buffered: VecDeque<Event>,
    waiting: VecDeque<Request>,
}

enum End {
    /// The application disconnected.
    Requested(oneshot::Sender<()>),
    /// The server sent DISCONNECT.
    Server(midge_codec::Disconnect),
    /// The connection failed.
    Failed(Error),
    /// Every Client handle is gone.
    Dropped,
}

impl Task {
    pub(crate) fn new(
        stream: BoxStream,
        rbuf: BytesMut,
        version: ProtocolVersion,
        keep_alive: u16,
        state: State,
        hook: Option<PacketHook>,
        on_message: Option<MessageHook>,
    ) -> Self {
        Task {
            stream,
            rbuf,
            wbuf: BytesMut::new(),
            version,
            keep_alive: (keep_alive > 0).then(|| Duration::from_secs(u64::from(keep_alive))),
            state,
            hook,
            on_message,
            buffered: VecDeque::new(),
            waiting: VecDeque::new(),
        }
    }

    fn encode_output(&mut self) -> bool {
        let mut any = false;
        while let Some(p) = self.state.out.pop_front() {
            if let Some(h) = &self.hook {
                h(Direction::Sent, &p);
            }
            if let Err(e) = p.encode(self.version, &mut self.wbuf) {
                // Only a malformed request gets here; report it instead of sending it.
                self.buffered.push_back(Event::Closed(Some(format!("cannot send {}: {e}", p.packet_type()))));
            }
            any = true;
        }
        any
    }

    fn take_request(&mut self, r: Request) -> Option<End> {
        match r {
            Request::Publish(p, reply) => {
                if p.qos != midge_codec::QoS::AtMostOnce && !self.state.can_publish() {
                    self.waiting.push_back(Request::Publish(p, reply));
                } else {
                    self.state.publish(p, reply);
                }
            }
            Request::Subscribe(s, reply) => self.state.subscribe(s, reply),
            Request::Unsubscribe(u, reply) => self.state.unsubscribe(u, reply),
            Request::Disconnect(d, reply) => {
                if !self.waiting.is_empty() {
                    // After the publishes still waiting for the server's quota.
                    self.waiting.push_back(Request::Disconnect(d, reply));
                    return None;
                }
                self.state.out.push_back(Packet::Disconnect(d));
                return Some(End::Requested(reply));
            }
        }
        None
    }

    fn release_waiting(&mut self) -> Option<End> {
        while let Some(front) = self.waiting.front() {
            let blocked = matches!(front, Request::Publish(p, _) if p.qos != midge_codec::QoS::AtMostOnce)
                && !self.state.can_publish();
            if blocked {
                return None;
            }
            let r = self.waiting.pop_front()?;
            if let Some(end) = self.take_request(r) {
                return Some(end);
            }
        }
        None
    }

    fn on_read(&mut self) -> Option<End> {
        loop {
            match decode(&mut self.rbuf, self.version, usize::MAX) {
                Ok(Some(p)) => {
                    if let Some(h) = &self.hook {
                        h(Direction::Received, &p);
                    }
                    let incoming = self.state.handle(p);
                    // The acknowledgement goes out (and is shown by the packet hook) before
                    // the message is handed over, as libmosquitto orders them.
                    self.encode_output();
                    match incoming {
                        Ok(Incoming::Nothing) => {}
                        Ok(Incoming::Message(m)) => match &self.on_message {
                            Some(f) => f(&m),
                            None => self.buffered.push_back(Event::Message(m)),
                        },
                        Ok(Incoming::Disconnect(d)) => return Some(End::Server(d)),
                        Err(e) => return Some(End::Failed(e)),
                    }
                }
                Ok(None) => return self.release_waiting(),
                Err(e) => return Some(End::Failed(e.into())),
            }
        }
    }

    /// Serves `requests` from the application and delivers `events` to it until the
    /// connection ends.
    pub(crate) async fn run(mut self, mut requests: mpsc::Receiver<Request>, events: mpsc::Sender<Event>) {
        let mut last_sent = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let timer = tokio::time::sleep_until(self.keep_alive.map_or(far, |k| last_sent + k));
        tokio::pin!(timer);
        let end = loop {
            if self.encode_output() {
                last_sent = Instant::now();
            }
            let read = self.buffered.len() < MAX_BUFFERED_EVENTS;
            let take = self.waiting.len() < MAX_WAITING_PUBLISHES && self.wbuf.len() < WRITE_HIGH_WATER;
            tokio::select! {
                biased;
                permit = events.reserve(), if !self.buffered.is_empty() => match permit {
                    Ok(p) => if let Some(e) = self.buffered.pop_front() { p.send(e) },
                    // Nobody listens to events any more: drop them, keep serving requests.
                    Err(_) => self.buffered.clear(),
                },
                r = requests.recv(), if take => match r {
                    Some(r) => if let Some(end) = self.take_request(r) { break end },
                    None => break End::Dropped,
                },
                ev = ready(&mut self.stream, &mut self.rbuf, &mut self.wbuf, read.then_some(crate::client::READ_SIZE)) => match ev {
                    Ok(IoEvent::Read(0)) => break End::Failed(Error::new(Kind::Io(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset, "the server closed the connection")))),
                    Ok(IoEvent::Read(_)) => {
                        ping_sent = None;
                        if let Some(end) = self.on_read() { break end }
                    }
                    Ok(IoEvent::Wrote) => {}
                    Err(e) => break End::Failed(e.into()),
                },
                _ = &mut timer => {
                    let Some(k) = self.keep_alive else { continue };
                    let now = Instant::now();
                    if let Some(sent) = ping_sent {
                        if now >= sent + k {
                            break End::Failed(Error::new(Kind::Timeout("PINGRESP")));
                        }
                        timer.as_mut().reset(sent + k);
                    } else if now >= last_sent + k {
                        self.state.out.push_back(Packet::PingReq);
                        ping_sent = Some(now);
                        timer.as_mut().reset(now + k);
                    } else {
                        timer.as_mut().reset(last_sent + k);
                    }
                }
            }
        };
        self.finish(end, events).await;
    }

    async fn finish(mut self, end: End, events: mpsc::Sender<Event>) {
        self.encode_output();
        let _ = tokio::time::timeout(Duration::from_secs(5), flush(&mut self.stream, &mut self.wbuf)).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
        let event = match end {
            End::Requested(reply) => {
                let _ = reply.send(());
                Event::Closed(None)
            }
            End::Server(d) => {
                let code = d.reason_code;
                self.state.fail_all(|| Error::new(Kind::Disconnected(Some(code))));
                Event::Disconnected(d)
            }
            End::Failed(e) => Event::Closed(Some(e.to_string())),
            End::Dropped => Event::Closed(None),
        };
        self.state.fail_all(closed);
        for r in self.waiting.drain(..) {
            if let Request::Publish(_, Some(reply)) = r {
                let _ = reply.send(Err(closed()));
            }
        }
        self.buffered.push_back(event);
        for e in self.buffered.drain(..) {
            if events.send(e).await.is_err() {
                break;
            }
        }
    }
}
