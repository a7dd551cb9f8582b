//! The connections of the flat-out mode: CONNECT and SUBSCRIBE through midge-codec, then
//! publishers that write as fast as the socket takes and subscribers that read as fast as the
//! broker sends, many packets per system call, all on one thread.
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use midge_client::{BoxStream, Options};
use midge_codec::{decode, ConnAck, Packet, ProtocolVersion, ReasonCode, SubAck, Subscribe};
use tokio::io::{AsyncWriteExt, ReadBuf};

use super::tally::Receiver;
use super::wire::{self, Frame, Template};

/// Bytes of PUBLISHes a publisher writes at once (refilled when written).
const BATCH_BYTES: usize = 64 * 1024;
/// A subscriber's read buffer: one read takes up to this much.
const SUBSCRIBER_READ: usize = 256 * 1024;
/// A publisher's read buffer (acknowledgements).
const PUBLISHER_READ: usize = 64 * 1024;
/// A subscriber whose read brought less than this waits a millisecond before the next one:
/// a broker that sends packet by packet would otherwise cost a wake-up and a system call per
/// message. The socket's receive buffer holds far more than a millisecond of what such a
/// broker sends, so the wait slows nothing down; a busy subscriber never waits.
const SMALL_READ: usize = 8 * 1024;

/// Where the run is. Tasks read it; the run changes it and wakes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Publish flat out.
    Run,
    /// Publishers stop at the end of the PUBLISH they are writing (QoS 1 / 2: they finish
    /// the flows in flight); subscribers keep reading.
    Stop,
    /// Everyone sends DISCONNECT and closes.
    End,
}

/// The phase, and a waker per task to tell it of a change.
pub struct Control {
    phase: Cell<Phase>,
    wakers: RefCell<Vec<Option<Waker>>>,
}

impl Control {
    pub fn new(tasks: usize) -> Rc<Control> {
        Rc::new(Control { phase: Cell::new(Phase::Run), wakers: RefCell::new(vec![None; tasks]) })
    }

    pub fn set(&self, phase: Phase) {
        self.phase.set(phase);
        for w in self.wakers.borrow_mut().iter_mut().filter_map(Option::take) {
            w.wake();
        }
    }

    fn register(&self, slot: usize, cx: &Context<'_>) {
        let mut wakers = self.wakers.borrow_mut();
        if !wakers[slot].as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            wakers[slot] = Some(cx.waker().clone());
        }
    }
}

/// What one connection reports, shared with the run (one thread: cells, no atomics).
#[derive(Default)]
pub struct Report {
    /// Publisher: PUBLISHes completely written. Subscriber: PUBLISHes read.
    pub messages: Cell<u64>,
    /// Publisher: PUBLISHes acknowledged (QoS 1: PUBACK; QoS 2: PUBCOMP).
    pub acked: Cell<u64>,
    /// Publisher (5.0): PUBLISHes refused with a reason code of 0x80 or more.
    pub refused: Cell<u64>,
    /// Publisher (5.0): the first refusal's reason code.
    pub refused_reason: Cell<Option<u8>>,
    /// Publisher, after the stop: every PUBLISH written and (QoS 1 / 2) acknowledged.
    pub flushed: Cell<bool>,
    /// Subscriber: when the last PUBLISH was read.
    pub last_read: Cell<Option<Instant>>,
    /// Why the connection failed, if it did.
    pub error: RefCell<Option<String>>,
}

impl Report {
    fn refuse(&self, reason: u8) {
        self.refused.set(self.refused.get() + 1);
        if self.refused_reason.get().is_none() {
            self.refused_reason.set(Some(reason));
        }
    }

    fn fail(&self, e: impl std::fmt::Display) {
        self.error.borrow_mut().get_or_insert_with(|| e.to_string());
    }
}

/// What a poll of the socket did.
struct Io {
    read: Option<usize>,
}

/// A socket with its buffers: bytes read and not yet scanned, bytes to write.
pub struct Conn {
    stream: BoxStream,
    rbuf: Vec<u8>,
    rlen: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    /// Bytes ever written (the stream offset of `wbuf[wpos]`).
    written: u64,
    version: ProtocolVersion,
}

impl Conn {
    /// Opens the connection and completes CONNECT / CONNACK.
    pub async fn connect(opts: &Options) -> Result<(Conn, ConnAck), String> {
        let timeout = opts.connect_timeout;
        let handshake = async {
            let stream = midge_client::open(opts).await.map_err(|e| super::super::connect_reason(&e))?;
            let version = opts.connect.protocol;
            let mut conn =
                Conn { stream, rbuf: vec![0; 4096], rlen: 0, wbuf: Vec::new(), wpos: 0, written: 0, version };
            match conn.exchange(Packet::Connect(Box::new(opts.connect.clone()))).await? {
                Packet::ConnAck(a) if a.reason_code == ReasonCode::Success => Ok((conn, a)),
                Packet::ConnAck(a) => Err(format!("the broker refused the connection: {}", a.reason_code)),
                other => Err(format!("{} instead of CONNACK", other.packet_type())),
            }
        };
        tokio::time::timeout(timeout, handshake).await.map_err(|_| "no CONNACK in time".to_owned())?
    }

    /// Subscribes; the SUBACK's reason codes are the caller's to check.
    pub async fn subscribe(&mut self, s: Subscribe) -> Result<SubAck, String> {
        match self.exchange(Packet::Subscribe(s)).await? {
            Packet::SubAck(a) => Ok(a),
            other => Err(format!("{} instead of SUBACK", other.packet_type())),
        }
    }

    /// Sends one packet and decodes the one that answers it (setup only: not the hot path).
    async fn exchange(&mut self, p: Packet) -> Result<Packet, String> {
        let mut out = BytesMut::new();
        p.encode(self.version, &mut out).map_err(|e| e.to_string())?;
        self.stream.write_all(&out).await.map_err(|e| e.to_string())?;
        loop {
            let mut buf = BytesMut::from(&self.rbuf[..self.rlen]);
            if let Some(p) = decode(&mut buf, self.version, usize::MAX).map_err(|e| e.to_string())? {
                let used = self.rlen - buf.len();
                self.rbuf.copy_within(used..self.rlen, 0);
                self.rlen -= used;
                return Ok(p);
            }
            if self.rlen == self.rbuf.len() {
                self.rbuf.resize(self.rbuf.len() * 2, 0);
            }
            let n = tokio::io::AsyncReadExt::read(&mut self.stream, &mut self.rbuf[self.rlen..])
                .await
                .map_err(|e| match midge_client::TlsAlert::from_io(&e) {
                    Some(alert) => super::super::refused_by_alert(alert),
                    None => e.to_string(),
                })?;
            if n == 0 {
                return Err("the broker closed the connection".to_owned());
            }
            self.rlen += n;
        }
    }

    fn unwritten(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Writes what is waiting and reads what has come, whichever the socket allows.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Io>> {
        let mut wrote = false;
        if self.wpos < self.wbuf.len() {
            if let Poll::Ready(r) = Pin::new(&mut *self.stream).poll_write(cx, &self.wbuf[self.wpos..]) {
                let n = r?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.wpos += n;
                self.written += n as u64;
                if self.wpos == self.wbuf.len() {
                    self.wbuf.clear();
                    self.wpos = 0;
                }
                wrote = true;
            }
        }
        if self.rlen < self.rbuf.len() {
            let mut rb = ReadBuf::new(&mut self.rbuf[self.rlen..]);
            if let Poll::Ready(r) = Pin::new(&mut *self.stream).poll_read(cx, &mut rb) {
                r?;
                let n = rb.filled().len();
                self.rlen += n;
                return Poll::Ready(Ok(Io { read: Some(n) }));
            }
        }
        if wrote {
            Poll::Ready(Ok(Io { read: None }))
        } else {
            Poll::Pending
        }
    }

    /// Waits for the socket, or for the phase to move past `phase` (`None`).
    async fn next(&mut self, ctl: &Control, slot: usize, phase: Phase) -> Option<io::Result<Io>> {
        poll_fn(|cx| {
            if ctl.phase.get() != phase {
                return Poll::Ready(None);
            }
            let r = self.poll_io(cx);
            if r.is_pending() {
                ctl.register(slot, cx);
            }
            r.map(Some)
        })
        .await
    }

    /// Scans what was read, hands each packet to `on` with the write buffer for answers,
    /// and keeps the bytes of a packet cut short for the next read.
    fn scan(&mut self, mut on: impl FnMut(Frame<'_>, &mut Vec<u8>)) -> Result<(), wire::ScanError> {
        let wbuf = &mut self.wbuf;
        let used = wire::scan(&self.rbuf[..self.rlen], self.version.is_v5(), |f| on(f, wbuf))?;
        self.rbuf.copy_within(used..self.rlen, 0);
        self.rlen -= used;
        if self.rlen == self.rbuf.len() {
            // One packet larger than the buffer: make room for all of it.
            let need = wire::packet_len(&self.rbuf)?.unwrap_or(self.rbuf.len() * 2);
            self.rbuf.resize(need.max(self.rbuf.len() * 2), 0);
        }
        Ok(())
    }

    /// DISCONNECT after whatever is being written, then close (a second at most).
    async fn close(mut self) {
        self.wbuf.extend_from_slice(&wire::DISCONNECT_BYTES);
        let flush = async {
            self.stream.write_all(&self.wbuf[self.wpos..]).await?;
            self.stream.shutdown().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), flush).await;
    }

    fn set_read_size(&mut self, n: usize) {
        if self.rbuf.len() < n {
            self.rbuf.resize(n, 0);
        }
    }
}

/// The packet identifiers of a publisher's QoS 1 / 2 messages in flight.
struct Window {
    free: Vec<u16>,
    busy: Vec<bool>,
    size: usize,
}

impl Window {
    fn new(size: u16) -> Window {
        let size = size.max(1);
        Window { free: (1..=size).rev().collect(), busy: vec![false; 65_536], size: usize::from(size) }
    }

    /// Nothing in flight.
    fn idle(&self) -> bool {
        self.free.len() == self.size
    }

    fn take(&mut self) -> Option<u16> {
        let id = self.free.pop()?;
        self.busy[usize::from(id)] = true;
        Some(id)
    }

    fn release(&mut self, id: u16) -> bool {
        let was = std::mem::replace(&mut self.busy[usize::from(id)], false);
        if was {
            self.free.push(id);
        }
        was
    }
}

/// What a publisher publishes.
pub struct Job {
    pub template: Template,
    pub qos: u8,
    /// QoS 1 / 2: messages in flight at most.
    pub window: u16,
}

/// Publishes flat out until the phase is `Stop`, then finishes the PUBLISH being written
/// (QoS 1 / 2: the flows in flight) and waits for `End`.
pub async fn publisher(mut conn: Conn, job: Job, ctl: Rc<Control>, slot: usize, report: Rc<Report>) {
    conn.set_read_size(PUBLISHER_READ);
    let len = job.template.len();
    let batch = (BATCH_BYTES / len).max(1);
    let mut window = Window::new(job.window);
    // Stream offsets where the PUBLISHes not yet completely written end.
    let mut ends: VecDeque<u64> = VecDeque::new();
    let mut appended = 0u64;
    let mut seq = 0u32;
    let mut phase = Phase::Run;
    loop {
        if phase == Phase::Run {
            if job.qos == 0 {
                if conn.unwritten() == 0 {
                    let room = (u32::MAX - seq).min(batch as u32);
                    for _ in 0..room {
                        job.template.append(&mut conn.wbuf, seq, 0);
                        seq += 1;
                        appended += len as u64;
                        ends.push_back(appended);
                    }
                }
            } else {
                // Refill as soon as a slot is free: waiting for several would let the broker's
                // Nagle (mosquitto's default) and our delayed ACK hold each other up.
                while conn.unwritten() < BATCH_BYTES && seq < u32::MAX {
                    let Some(id) = window.take() else { break };
                    job.template.append(&mut conn.wbuf, seq, id);
                    seq += 1;
                    appended += len as u64;
                    ends.push_back(appended);
                }
            }
        }
        let io = conn.next(&ctl, slot, phase).await;
        let Some(io) = io else {
            phase = ctl.phase.get();
            if phase == Phase::End {
                break;
            }
            if job.qos == 0 {
                // Stop at the end of the PUBLISH being written: drop the ones not started.
                if let Some(&end) = ends.front() {
                    let keep = conn.wpos + (end - conn.written) as usize;
                    conn.wbuf.truncate(keep);
                    ends.truncate(1);
                }
            }
            report.flushed.set(ends.is_empty() && window.idle());
            continue;
        };
        let io = match io {
            Ok(io) => io,
            Err(e) => {
                report.fail(e);
                break;
            }
        };
        // One system call per turn: the other connections on this thread get theirs.
        tokio::task::yield_now().await;
        let before = ends.len();
        while ends.front().is_some_and(|&e| e <= conn.written) {
            ends.pop_front();
        }
        report.messages.set(report.messages.get() + (before - ends.len()) as u64);
        match io.read {
            Some(0) => {
                report.fail("the broker closed the connection");
                break;
            }
            Some(_) => {
                if let Err(e) = take_acks(&mut conn, &mut window, &report) {
                    report.fail(e);
                    break;
                }
            }
            None => {}
        }
        if phase != Phase::Run {
            report.flushed.set(ends.is_empty() && window.idle());
        }
    }
    conn.close().await;
}

/// Reads and counts until the phase is `End`; acknowledges QoS 1 / 2 messages.
pub async fn subscriber(
    mut conn: Conn,
    receiver: Rc<RefCell<Receiver>>,
    ctl: Rc<Control>,
    slot: usize,
    report: Rc<Report>,
) {
    conn.set_read_size(SUBSCRIBER_READ);
    loop {
        let io = match conn.next(&ctl, slot, ctl.phase.get()).await {
            None if ctl.phase.get() == Phase::End => break,
            None => continue,
            Some(Ok(io)) => io,
            Some(Err(e)) => {
                report.fail(e);
                break;
            }
        };
        tokio::task::yield_now().await;
        match io.read {
            Some(0) => {
                report.fail("the broker closed the connection");
                break;
            }
            Some(bytes) => {
                let counted = take_messages(&mut conn, &mut receiver.borrow_mut());
                match counted {
                    Ok(0) => {}
                    Ok(n) => {
                        report.messages.set(report.messages.get() + n);
                        report.last_read.set(Some(Instant::now()));
                    }
                    Err(e) => {
                        report.fail(e);
                        break;
                    }
                }
                if bytes < SMALL_READ && conn.unwritten() == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            None => {}
        }
    }
    conn.close().await;
}

/// A publisher's packets from the broker: acknowledgements free their slots (QoS 2: PUBREC is
/// answered with PUBREL).
fn take_acks(conn: &mut Conn, window: &mut Window, report: &Report) -> Result<(), String> {
    let mut problem = None;
    conn.scan(|f, wbuf| match f {
        Frame::Ack { kind: wire::PUBACK | wire::PUBCOMP, id, reason } if window.release(id) => {
            report.acked.set(report.acked.get() + 1);
            if reason >= 0x80 {
                report.refuse(reason);
            }
        }
        // 5.0: a PUBREC refusing the message ends its flow.
        Frame::Ack { kind: wire::PUBREC, id, reason } if reason >= 0x80 && window.release(id) => {
            report.refuse(reason);
        }
        Frame::Ack { kind: wire::PUBREC, id, reason } if reason < 0x80 => {
            wire::append_ack(wbuf, wire::PUBREL, id)
        }
        Frame::Disconnect { reason } => {
            problem = Some(format!("the broker sent DISCONNECT (reason 0x{reason:02x})"))
        }
        _ => {}
    })
    .map_err(|e| e.to_string())?;
    problem.map_or(Ok(()), Err)
}

/// A subscriber's packets from the broker: each PUBLISH counted (and acknowledged at QoS 1 /
/// 2), PUBREL answered. Returns the PUBLISHes read.
fn take_messages(conn: &mut Conn, receiver: &mut Receiver) -> Result<u64, String> {
    let mut n = 0u64;
    let mut problem = None;
    conn.scan(|f, wbuf| match f {
        Frame::Publish { qos, id, payload } => {
            n += 1;
            receiver.record(payload);
            match qos {
                1 => wire::append_ack(wbuf, wire::PUBACK, id),
                2 => wire::append_ack(wbuf, wire::PUBREC, id),
                _ => {}
            }
        }
        Frame::Ack { kind: wire::PUBREL, id, .. } => wire::append_ack(wbuf, wire::PUBCOMP, id),
        Frame::Disconnect { reason } => {
            problem = Some(format!("the broker sent DISCONNECT (reason 0x{reason:02x})"))
        }
        _ => {}
    })
    .map_err(|e| e.to_string())?;
    problem.map_or(Ok(n), Err)
}
