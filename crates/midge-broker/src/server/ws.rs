//! MQTT over WebSockets (`protocol websockets`): the handshake, and [`WsStream`], which makes a
//! WebSocket look like the byte stream a connection task reads and writes, so that a
//! WebSocket client is served by the same code as a TCP one.
//!
//! MQTT section 6: packets go in binary frames [MQTT-6.0.0-1], a frame may hold part of a
//! packet or several [MQTT-6.0.0-2], and the subprotocol is `mqtt` [MQTT-6.0.0-3]
//! [MQTT-6.0.0-4] (`mqttv3.1` for clients of 3.1, which mosquitto accepts too). tungstenite
//! does the HTTP upgrade and the framing (masking, fragments, ping and pong, close); this
//! module only moves bytes between its messages and the connection's buffers.
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_core::Stream;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::ws_frames::Reframer;
use crate::broker::LoginGate;

/// The subprotocols served, in order of preference.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Why a WebSocket handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The request (request line and headers) is larger than `websockets_headers_size`.
    #[error("the handshake request is larger than {limit} bytes (websockets_headers_size)")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The client did not offer the `mqtt` subprotocol [MQTT-6.0.0-3].
    #[error("the client did not ask for the mqtt subprotocol (Sec-WebSocket-Protocol: {offered})")]
    NoMqttSubprotocol {
        /// What it offered.
        offered: String,
    },
    /// Not a WebSocket upgrade, or a broken one.
    #[error("{0}")]
    Protocol(WsError),
}

/// Settings of the WebSocket layer of one listener.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// `http_dir`: plain HTTP requests get its files ([`super::http_dir`]).
    pub http_dir: Option<std::sync::Arc<std::path::Path>>,
    /// The largest handshake request, in bytes.
    pub headers_limit: usize,
    /// The largest message (and frame) taken from a client: the largest MQTT packet, which a
    /// client may send in one frame.
    pub max_message: usize,
    /// Opened once the client has logged in: until then, at most [`LOGIN_READ_AHEAD`] bytes
    /// are read past the handshake.
    pub login_gate: Arc<LoginGate>,
}

/// The smallest bound on a WebSocket message (and frame) from a client, whatever
/// max_packet_size: a message may carry several packets of that size.
pub const MIN_MESSAGE: usize = 1 << 20;

/// How far a WebSocket connection is read before its client has logged in: a CONNECT of at
/// most 100,004 bytes in its frames (6 bytes or more each), and what the client sends
/// right after it. Past it, reading waits for the login, as the socket pushes back: a client
/// nobody knows yet cannot make the broker take in a message of max_packet_size. What is
/// read is held up to twice (tungstenite's read buffer, and the message it puts together):
/// 256 KiB a connection at most (at 256 KiB read ahead, 508 kB were measured).
pub const LOGIN_READ_AHEAD: usize = 128 * 1024;

/// What a connection to a WebSockets listener turned out to be.
pub enum Accepted<S> {
    /// A WebSocket: the connection as a byte stream, and the path it asked for.
    WebSocket(Box<WsStream<S>>, String),
    /// A plain HTTP request, for `http_dir` ([`super::http_dir::answer`]): the connection and
    /// the request.
    Http(Box<S>, super::http_dir::Head),
}

/// Reads the client's upgrade request (at most `settings.headers_limit` bytes), answers with
/// the `mqtt` subprotocol (or refuses with 400 when the client does not offer it), and returns
/// the connection as a byte stream, with the path the client asked for. With `http_dir`, a
/// request that asks for no upgrade is answered from that directory instead.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    settings: WsSettings,
) -> Result<Accepted<S>, HandshakeError> {
    let mut prefix = BytesMut::new();
    if settings.http_dir.is_some() {
        // The request head, read here to see whether it asks for a WebSocket.
        use tokio::io::AsyncReadExt;
        // Where the empty line is looked for: in what the last read added (and the 3 bytes
        // before it), so a client sending a byte at a time costs no more than one read each.
        let mut searched = 0;
        while !head_ended(&prefix[searched..]) {
            searched = prefix.len().saturating_sub(3);
            if prefix.len() >= settings.headers_limit {
                return Err(HandshakeError::TooLarge { limit: settings.headers_limit });
            }
            let mut chunk = [0u8; 1024];
            let want = chunk.len().min(settings.headers_limit - prefix.len());
            let n = stream
                .read(&mut chunk[..want])
                .await
                .map_err(|e| HandshakeError::Protocol(WsError::Io(e)))?;
            if n == 0 {
                return Err(HandshakeError::Protocol(WsError::ConnectionClosed));
            }
            prefix.extend_from_slice(&chunk[..n]);
        }
        match super::http_dir::Head::parse(&prefix) {
            Some(head) if !head.upgrade => return Ok(Accepted::Http(Box::new(stream), head)),
            _ => {}
        }
    }
    let config = WebSocketConfig::default()
        // Read in small chunks: an idle connection keeps this buffer.
        .read_buffer_size(4 * 1024)
        .max_message_size(Some(settings.max_message))
        .max_frame_size(Some(settings.max_message));
    let mut path = String::new();
    let mut refused = None;
    let callback = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        path = request.uri().path().to_owned();
        let offered: Vec<&str> = request
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        match SUBPROTOCOLS.iter().find(|p| offered.contains(p)) {
            Some(p) => {
                response.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(p));
                Ok(response)
            }
            None => {
                refused = Some(offered.join(", "));
                let mut r =
                    ErrorResponse::new(Some("MQTT over WebSockets needs the subprotocol mqtt\n".into()));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                Err(r)
            }
        }
    };
    // What was read of the head already is handed on, and counted, as the rest.
    let limited = Limited::new(stream, settings.headers_limit, prefix.freeze());
    match tokio_tungstenite::accept_hdr_async_with_config(limited, callback, Some(config)).await {
        Ok(mut ws) => {
            let limited = ws.get_mut();
            limited.left = Some(LOGIN_READ_AHEAD);
            limited.login = Some(settings.login_gate);
            limited.frames = Reframer::new(settings.max_message);
            Ok(Accepted::WebSocket(
                Box::new(WsStream { ws, pending: Bytes::new(), unflushed: false, pongs_pending: 0 }),
                path,
            ))
        }
        Err(e) => Err(match (refused, e) {
            (Some(offered), _) => HandshakeError::NoMqttSubprotocol { offered },
            (None, WsError::Io(io))
                if io.get_ref().is_some_and(|e| e.downcast_ref::<HeadersTooLarge>().is_some()) =>
            {
                HandshakeError::TooLarge { limit: settings.headers_limit }
            }
            (None, e) => HandshakeError::Protocol(e),
        }),
    }
}

/// Whether `bytes` hold the empty line that ends a request head: after CRLF or a bare LF
/// (RFC 9112 section 2.2, as httparse and tungstenite read it).
fn head_ended(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
}

/// The error a [`Limited`] stream reads once its allowance is spent.
#[derive(Debug, thiserror::Error)]
#[error("handshake request too large")]
struct HeadersTooLarge;

/// A stream that lets at most `left` bytes be read while it is set: the bound on the
/// handshake request, then on what is read before the client has logged in. During the
/// handshake it hands on the request head and nothing after it (what a client sends after
/// it is frames, which go on through a [`Reframer`]).
#[derive(Debug)]
pub struct Limited<S> {
    inner: S,
    left: Option<usize>,
    /// After the handshake, until the client has logged in: once `left` is spent, reading
    /// waits for the gate (rather than failing), and the bound is lifted when it opens.
    login: Option<Arc<LoginGate>>,
    /// After the handshake: where the reading stands in the client's frames.
    frames: Reframer,
    /// During the handshake: how much of the empty line that ends the request head was seen
    /// (`\r\n\r\n`, 4 once it ended), once the head has begun (empty lines before the
    /// request line are skipped, RFC 9112 section 2.2).
    head_end: u8,
    head_begun: bool,
    /// Bytes read from the socket and not handed on yet (with `http_dir`, the request head
    /// read before the handshake began; what followed the head): read first.
    prefix: Bytes,
}

impl<S: AsyncRead + Unpin> Limited<S> {
    fn new(inner: S, left: usize, prefix: Bytes) -> Self {
        Limited {
            inner,
            left: Some(left),
            login: None,
            frames: Reframer::new(usize::MAX),
            head_end: 0,
            head_begun: false,
            prefix,
        }
    }

    /// Reads into `out` what was held back first, then from the socket; 0 at its end.
    fn poll_source(&mut self, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(out.len());
            out[..n].copy_from_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(n));
        }
        let mut rb = ReadBuf::new(out);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut rb))?;
        Poll::Ready(Ok(rb.filled().len()))
    }

    /// Puts bytes back in front of what is to be read.
    fn hold(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            let mut held = BytesMut::with_capacity(bytes.len() + self.prefix.len());
            held.extend_from_slice(bytes);
            held.extend_from_slice(&self.prefix);
            self.prefix = held.freeze();
        }
    }

    /// The handshake: the request head, up to `left` bytes, and nothing after it.
    fn poll_read_handshake(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        left: usize,
    ) -> Poll<io::Result<()>> {
        if left == 0 {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, HeadersTooLarge)));
        }
        if self.head_end == 4 {
            // tungstenite has the whole head and reads no more before it answers.
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "data read past the handshake request",
            )));
        }
        // Through a small buffer: the request is small, and this happens once per connection.
        let mut small = [0u8; 1024];
        let n = left.min(small.len()).min(buf.remaining());
        let got = ready!(self.poll_source(cx, &mut small[..n]))?;
        let mut give = got;
        for (i, &b) in small[..got].iter().enumerate() {
            self.head_begun |= !matches!(b, b'\r' | b'\n');
            if !self.head_begun {
                continue;
            }
            // CRLF, or a bare LF, ends a line (RFC 9112 section 2.2): 2 is the start of a
            // line, 4 the empty line that ends the head.
            self.head_end = match (self.head_end, b) {
                (0 | 2, b'\r') => self.head_end + 1,
                (1 | 3, b'\n') => self.head_end + 1,
                (0, b'\n') => 2,
                (2, b'\n') => 4,
                (_, b'\r') => 1,
                _ => 0,
            };
            if self.head_end == 4 {
                give = i + 1;
                break;
            }
        }
        buf.put_slice(&small[..give]);
        self.hold(&small[give..got]);
        self.left = Some(left - give);
        Poll::Ready(Ok(()))
    }

    /// After the handshake: the client's frames, through the [`Reframer`] (a large frame goes
    /// on in pieces, so that tungstenite reserves no more than what arrives); before the
    /// login, `left` bytes at most, then a wait for the gate.
    fn poll_read_frames(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let start = buf.filled().len();
        loop {
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // Before the login, no frame longer than what may still be read is begun: its
            // header waits for the login (tungstenite takes in a message whole before MQTT
            // sees any of it, so what is read of it would only be held).
            let most = match (self.left, &self.login) {
                (Some(left), Some(gate)) if !gate.is_open() => left as u64,
                _ => u64::MAX,
            };
            // A header the reframer made, or one that waited, goes on first, without reading.
            self.frames.feed(&[], buf, most)?;
            if buf.filled().len() > start {
                return Poll::Ready(Ok(()));
            }
            if self.frames.waits() && most != u64::MAX {
                self.left = Some(0);
            }
            let allowance = match (self.left, &self.login) {
                (Some(0), Some(gate)) => {
                    // The bound is spent: reading waits for the login, then goes on unbounded.
                    ready!(gate.poll_open(cx));
                    (self.left, self.login) = (None, None);
                    continue;
                }
                (Some(left), Some(gate)) if !gate.is_open() => left,
                _ => {
                    (self.left, self.login) = (None, None);
                    usize::MAX
                }
            };
            let mut chunk = [0u8; 4096];
            let want = chunk.len().min(allowance).min(buf.remaining());
            let got = ready!(self.poll_source(cx, &mut chunk[..want]))?;
            if got == 0 {
                // The end of the stream: what there is of a header goes on, then the end.
                let rest = self.frames.take_partial_header();
                buf.put_slice(&rest[..rest.len().min(buf.remaining())]);
                return Poll::Ready(Ok(()));
            }
            let used = self.frames.feed(&chunk[..got], buf, most)?;
            self.hold(&chunk[used..got]);
            if let Some(left) = &mut self.left {
                *left -= used;
            }
            if buf.filled().len() > start {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match (this.left, &this.login) {
            (Some(left), None) => this.poll_read_handshake(cx, buf, left),
            _ => this.poll_read_frames(cx, buf),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A WebSocket connection as a byte stream: reads return the bytes of the client's binary
/// messages in order, whatever their framing; each write goes out as one binary message.
pub struct WsStream<S> {
    ws: WebSocketStream<Limited<S>>,
    /// What is left of the last message read.
    pending: Bytes,
    /// A message was written into tungstenite's buffer and not all of it to the socket yet.
    unflushed: bool,
    /// Pings read whose pongs tungstenite may not have written to the socket yet.
    pongs_pending: u8,
}

/// Pongs that may wait to be written while the client is read on; past them, it is read no
/// further until they are out.
const PONGS_PENDING_MAX: u8 = 16;

impl<S> WsStream<S> {
    /// The stream under the WebSocket (the TLS stream of a `wss` listener, for its
    /// certificate).
    pub fn get_ref(&self) -> &S
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        &self.ws.get_ref().inner
    }
}

fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::NotConnected.into(),
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    /// Writes out what tungstenite holds, if anything.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.unflushed {
            ready!(Pin::new(&mut self.ws).poll_flush(cx)).map_err(io_error)?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Sends `data` as one binary message.
    fn poll_send(&mut self, cx: &mut Context<'_>, data: Bytes) -> Poll<io::Result<usize>> {
        // One message at a time: what the socket does not take waits here, and the caller
        // (its own buffer) waits with the rest.
        ready!(self.poll_drain(cx))?;
        let n = data.len();
        Pin::new(&mut self.ws).start_send(Message::Binary(data)).map_err(io_error)?;
        self.unflushed = true;
        // Written now if the socket takes it; otherwise the next write, read or flush does.
        if let Poll::Ready(r) = self.poll_drain(cx) {
            r?;
        }
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // A message the socket did not take whole goes on while the client is read.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.pongs_pending > 0 {
                // A client that pings and never reads would otherwise have the broker queue
                // a pong per ping without bound: past a few, it is read on once its pongs are
                // out (its socket pushes back, as a TCP client that never reads its
                // PINGRESPs). A few pings do not stop reading while a message is going out.
                match Pin::new(&mut this.ws).poll_flush(cx) {
                    Poll::Ready(r) => {
                        r.map_err(io_error)?;
                        this.pongs_pending = 0;
                        this.unflushed = false;
                    }
                    Poll::Pending if this.pongs_pending >= PONGS_PENDING_MAX => return Poll::Pending,
                    Poll::Pending => {}
                }
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                // The end of the stream, or a close frame (tungstenite answers it): read as
                // the client closing its connection.
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(data))) => this.pending = data,
                // [MQTT-6.0.0-1]: a data frame other than binary closes the connection.
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text frame (MQTT packets go in binary frames) [MQTT-6.0.0-1]",
                    )))
                }
                // tungstenite answers pings (its pong waits in its buffer).
                Some(Ok(Message::Ping(_))) => this.pongs_pending = this.pongs_pending.saturating_add(1),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

/// The most one message sent carries: a larger packet goes out in several (a receiver "MUST
/// NOT assume that MQTT Control Packets are aligned on WebSocket frame boundaries"
/// [MQTT-6.0.0-2]). Each message is a copy, and tungstenite's write buffer keeps the size of
/// the largest: in one message, a 50 MB message cost every WebSocket subscriber 50 MB more,
/// for as long as it stayed connected.
const MESSAGE_MAX: usize = 64 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let n = buf.len().min(MESSAGE_MAX);
        self.poll_send(cx, Bytes::copy_from_slice(&buf[..n]))
    }

    /// The connection's queue hands over a packet's header and a large shared payload as two
    /// slices: they go out together, in messages of at most [`MESSAGE_MAX`].
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut data = BytesMut::with_capacity(bufs.iter().map(|b| b.len()).sum::<usize>().min(MESSAGE_MAX));
        for b in bufs {
            let room = MESSAGE_MAX - data.len();
            data.extend_from_slice(&b[..b.len().min(room)]);
            if data.len() == MESSAGE_MAX {
                break;
            }
        }
        self.poll_send(cx, data.freeze())
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_drain(cx)
    }

    /// Sends a close frame and waits for the client's answer (tungstenite's close handshake).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_sink::Sink;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    #[test]
    fn a_head_ends_at_an_empty_line_after_crlf_or_a_bare_lf() {
        assert!(head_ended(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(head_ended(b"GET / HTTP/1.1\nHost: x\n\n"));
        assert!(head_ended(b"GET / HTTP/1.1\nHost: x\n\r\n"));
        assert!(!head_ended(b"GET / HTTP/1.1\r\nHost: x\r\n"));
    }

    /// A listener's settings, for a client that `gate` says has logged in or not.
    fn settings(gate: &Arc<LoginGate>) -> WsSettings {
        WsSettings { http_dir: None, headers_limit: 1024, max_message: 4 << 20, login_gate: gate.clone() }
    }

    /// The gate of a client that has logged in.
    fn logged_in() -> Arc<LoginGate> {
        let gate = Arc::new(LoginGate::default());
        gate.open();
        gate
    }

    /// The WebSocket [`accept`] made (none of these tests asks for a page).
    async fn accept_ws<S: AsyncRead + AsyncWrite + Unpin>(
        stream: S,
        settings: WsSettings,
    ) -> Result<(WsStream<S>, String), HandshakeError> {
        accept(stream, settings).await.map(|a| match a {
            Accepted::WebSocket(ws, path) => (*ws, path),
            Accepted::Http(_, head) => panic!("a page was asked for: {head:?}"),
        })
    }

    /// A client over an in-memory pipe, offering `protocol`, logged in once `gate` opens.
    async fn pair_gated(
        protocol: &str,
        gate: &Arc<LoginGate>,
    ) -> (
        Result<(WsStream<tokio::io::DuplexStream>, String), HandshakeError>,
        Option<WebSocketStream<tokio::io::DuplexStream>>,
    ) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let mut request = "ws://localhost/some/path".into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_str(protocol).unwrap());
        let client = tokio::spawn(async move { tokio_tungstenite::client_async(request, b).await });
        let server = accept_ws(a, settings(gate)).await;
        let client = client.await.unwrap().ok().map(|(ws, response)| {
            assert_eq!(response.headers()["Sec-WebSocket-Protocol"], "mqtt");
            ws
        });
        (server, client)
    }

    /// A client over an in-memory pipe, offering `protocol`, logged in.
    async fn pair(
        protocol: &str,
    ) -> (
        Result<(WsStream<tokio::io::DuplexStream>, String), HandshakeError>,
        Option<WebSocketStream<tokio::io::DuplexStream>>,
    ) {
        pair_gated(protocol, &logged_in()).await
    }

    async fn send(client: &mut WebSocketStream<tokio::io::DuplexStream>, m: Message) {
        std::future::poll_fn(|cx| Pin::new(&mut *client).poll_ready(cx)).await.unwrap();
        Pin::new(&mut *client).start_send(m).unwrap();
        std::future::poll_fn(|cx| Pin::new(&mut *client).poll_flush(cx)).await.unwrap();
    }

    #[tokio::test]
    async fn messages_are_a_byte_stream_both_ways() {
        let (server, client) = pair("chat, mqtt").await;
        let (mut server, path) = server.unwrap();
        let mut client = client.unwrap();
        assert_eq!(path, "/some/path");
        // Two messages read as one stream, whatever the split.
        send(&mut client, Message::Binary(Bytes::from_static(b"\x10\x02"))).await;
        send(&mut client, Message::Binary(Bytes::from_static(b"ab\xc0\x00"))).await;
        let mut got = [0u8; 6];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x10\x02ab\xc0\x00");
        // Each write is one binary message.
        server.write_all(b"\x20\x02\x00\x00").await.unwrap();
        let m = std::future::poll_fn(|cx| Pin::new(&mut client).poll_next(cx)).await.unwrap().unwrap();
        assert_eq!(m, Message::Binary(Bytes::from_static(b"\x20\x02\x00\x00")));
        // A text frame is an error [MQTT-6.0.0-1]; a close frame is the end of the stream.
        send(&mut client, Message::Text("hi".into())).await;
        assert_eq!(server.read(&mut got).await.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_large_packet_goes_out_in_messages_of_64_kib_at_most() {
        let (server, client) = pair("mqtt").await;
        let (mut server, _) = server.unwrap();
        let mut client = client.unwrap();
        let head = [0x30u8; 5];
        let payload: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let writer = tokio::spawn(async move {
            let mut bufs = [io::IoSlice::new(&head), io::IoSlice::new(&payload)];
            let mut bufs = &mut bufs[..];
            while !bufs.is_empty() {
                let n = server.write_vectored(bufs).await.unwrap();
                io::IoSlice::advance_slices(&mut bufs, n);
            }
            server.flush().await.unwrap();
            server
        });
        let mut got = Vec::new();
        while got.len() < 200_005 {
            match std::future::poll_fn(|cx| Pin::new(&mut client).poll_next(cx)).await.unwrap().unwrap() {
                Message::Binary(m) => {
                    assert!(m.len() <= MESSAGE_MAX, "a message of {} bytes", m.len());
                    got.extend_from_slice(&m);
                }
                other => panic!("{other:?}"),
            }
        }
        let _server = writer.await.unwrap();
        assert_eq!(&got[..5], &[0x30u8; 5]);
        assert!(got[5..].iter().enumerate().all(|(i, &b)| b == i as u8));
    }

    #[tokio::test]
    async fn a_client_that_pings_and_never_reads_is_read_no_further() {
        let (server, client) = pair("mqtt").await;
        let (mut server, _) = server.unwrap();
        let mut client = client.unwrap();
        // The server reads on; its pongs go nowhere, as the client never reads them.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while server.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        // With 64 KiB each way, the client's pings stop going out once the pongs fill the
        // way back: without that, every ping is read and answered into memory.
        let mut sent = 0;
        let ping = Message::Ping(Bytes::from_static(&[b'p'; 125]));
        while sent < 10_000 {
            let sent_one = tokio::time::timeout(Duration::from_secs(2), send(&mut client, ping.clone()));
            if sent_one.await.is_err() {
                break;
            }
            sent += 1;
        }
        assert!(sent < 2_000, "{sent} pings were read with none of their pongs read");
        reader.abort();
    }

    #[tokio::test]
    async fn a_close_frame_ends_the_stream() {
        let (server, client) = pair("mqtt").await;
        let (mut server, _) = server.unwrap();
        let mut client = client.unwrap();
        std::future::poll_fn(|cx| Pin::new(&mut client).poll_close(cx)).await.unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(server.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_client_without_the_mqtt_subprotocol_is_refused() {
        let (server, client) = pair("chat").await;
        assert!(matches!(server, Err(HandshakeError::NoMqttSubprotocol { offered }) if offered == "chat"));
        assert!(client.is_none());
    }

    #[tokio::test]
    async fn a_handshake_larger_than_the_limit_is_refused() {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        let request = format!(
            "GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: mqtt\r\nCookie: {}\r\n\r\n",
            "c".repeat(2000)
        );
        b.write_all(request.as_bytes()).await.unwrap();
        let server = accept_ws(a, settings(&logged_in())).await;
        assert!(matches!(server, Err(HandshakeError::TooLarge { limit: 1024 })), "{:?}", server.err());
    }

    #[tokio::test(start_paused = true)]
    async fn before_the_login_a_message_is_read_only_so_far() {
        let gate = Arc::new(LoginGate::default());
        let (server, client) = pair_gated("mqtt", &gate).await;
        let (mut server, _) = server.unwrap();
        let mut client = client.unwrap();
        // A message of 1 MiB, as a client that has not logged in may send one.
        let big = Bytes::from(vec![0x5a; 1 << 20]);
        let sender = tokio::spawn({
            let big = big.clone();
            async move { send(&mut client, Message::Binary(big)).await }
        });
        // Nothing of it comes out before the login (tungstenite reads a message whole), and the
        // client cannot send it all: the broker read at most LOGIN_READ_AHEAD of it, and the
        // 64 KiB pipe is full (the time is paused: the wait ends once every task waits).
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 20];
            server.read_exact(&mut buf).await.map(|_| buf)
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!reader.is_finished(), "a message was read before the login");
        assert!(!sender.is_finished(), "the whole message was taken before the login");
        // Once the client has logged in, the waiting reader is woken and reads the rest.
        gate.open();
        assert_eq!(&reader.await.unwrap().unwrap()[..], &big[..]);
        sender.await.unwrap();
    }

    /// A [`Limited`] over one end of a pipe, as after the handshake (before the login, with
    /// `left` to read), and the other end.
    fn before_login(
        left: usize,
        gate: &Arc<LoginGate>,
    ) -> (Limited<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let mut limited = Limited::new(a, left, Bytes::new());
        limited.login = Some(gate.clone());
        (limited, b)
    }

    /// A masked client frame header announcing `len` bytes of binary payload.
    fn header(len: u64) -> Vec<u8> {
        let mut h = vec![0x82, 0x80 | 127];
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]);
        h
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_too_large_waits_for_the_login_then_goes_on_in_pieces() {
        let gate = Arc::new(LoginGate::default());
        let (mut limited, mut client) = before_login(1000, &gate);
        limited.frames = Reframer::new(256 << 20);
        // A frame that fits goes through, header and payload, as it comes.
        client.write_all(&header(10)).await.unwrap();
        client.write_all(&[7; 10]).await.unwrap();
        let mut got = [0u8; 24];
        limited.read_exact(&mut got).await.unwrap();
        assert_eq!((&got[..14], &got[14..]), (&header(10)[..], &[7u8; 10][..]));
        // One announcing 200 MB: nothing of it goes on before the login (tungstenite would
        // take in what it may read of it, and hold it).
        client.write_all(&header(200_000_000)).await.unwrap();
        client.write_all(&[8; 2000]).await.unwrap();
        let mut buf = [0u8; 64];
        assert!(tokio::time::timeout(Duration::from_secs(5), limited.read(&mut buf)).await.is_err());
        // After it, tungstenite is handed the header of a 64 KiB piece (it reserves what it
        // is told), then the payload as it comes.
        gate.open();
        let mut got = vec![0u8; 14 + 2000];
        limited.read_exact(&mut got).await.unwrap();
        let piece = [0x02, 0x80 | 127, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        assert_eq!(&got[..14], &piece[..], "a binary piece of 65,536 bytes, no FIN, the same masking key");
        assert!(got[14..].iter().all(|&b| b == 8));
    }

    #[tokio::test]
    async fn a_head_read_before_the_handshake_counts_once() {
        // With http_dir, the head is read before the handshake to see what it asks for: it
        // is handed on whole, within the limit, however much of it that took.
        let head = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "p".repeat(3000));
        let (a, _b) = tokio::io::duplex(64);
        let mut limited = Limited::new(a, 4096, Bytes::from(format!("\r\n{head}")));
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n\r\n") {
            let mut buf = [0u8; 512];
            let n = limited.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, format!("\r\n{head}").as_bytes());
    }

    #[tokio::test]
    async fn the_handshake_is_handed_the_request_head_and_nothing_after_it() {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        let mut limited = Limited::new(a, 1024, Bytes::from_static(b"GET / HTTP/1.1\r\nHost: x\r"));
        b.write_all(b"\n\r\nframes").await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut buf = [0u8; 8];
            let n = limited.read(&mut buf).await.unwrap();
            assert!(n > 0);
            head.extend_from_slice(&buf[..n]);
        }
        assert_eq!(head, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        // What follows the head is read once the handshake is over, as frames.
        limited.left = None;
        let mut rest = [0u8; 6];
        limited.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"frames");
    }
}
