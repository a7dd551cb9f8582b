//! The metrics endpoint (`listener PORT` with `protocol http`): `GET /metrics`, every counter in
//! Prometheus's text format, and `GET /healthz`, 200 while the broker takes new MQTT clients
//! and 503 when it does not (stopping, or `max_connections` reached), for load balancers and
//! orchestrators. Nothing else: it reads the counters and never touches a session.
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::broker::Broker;
use crate::metrics::exposition;

/// How long a scrape's connection may stay open without a request.
const IDLE: Duration = Duration::from_secs(30);

/// The connections a metrics listener serves at once: scrapers are few, and each holds up to
/// [`MAX_REQUEST_HEAD`]. Past it, a connection is closed at once.
pub const MAX_CONNECTIONS: usize = 64;

/// Of those, the connections from one address: 64 idle keep-alive connections from one
/// client made every other scraper's request, and a liveness probe's `/healthz`, fail for
/// as long as it kept them open.
pub const MAX_PER_ADDRESS: usize = 16;

/// How long an answer may wait for the client to read it: a client that sends requests and
/// never reads the answers held its connection (and its place among [`MAX_CONNECTIONS`])
/// for good, hyper's timer being for reading only.
const WRITE_STALL: Duration = Duration::from_secs(10);

/// A stream whose writes fail once one has waited `limit` for the peer to take bytes.
struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// Set when a write first found the peer not reading; cleared when one goes through.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, limit: Duration) -> Self {
        WriteDeadline { inner, limit, stalled: None }
    }

    /// Pending while the deadline is not past; an error once it is.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let limit = self.limit;
        let sleep = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client has not read its answer for {} s", limit.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(&mut self, cx: &mut Context<'_>, done: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match done {
            Poll::Pending => match self.check(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            },
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let done = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(cx, done)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let done = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(cx, done)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The largest request head read (hyper's smallest buffer limit is 8 KiB; a scrape's request
/// is a few hundred bytes): a larger one is refused with 431.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// A metrics listener's connections open now, by client address.
#[derive(Debug, Default)]
pub struct Scrapes(Mutex<HashMap<IpAddr, usize>>);

/// One of a metrics listener's [`MAX_CONNECTIONS`] (and of its address's
/// [`MAX_PER_ADDRESS`]), given back when dropped.
pub struct Open(Arc<Scrapes>, IpAddr);

impl Open {
    /// A place among the listener's connections for a client at `ip`, if one is free.
    pub fn new(scrapes: &Arc<Scrapes>, ip: IpAddr) -> Option<Open> {
        // An IPv6 host has a /64 of addresses: they count as one.
        let ip = crate::auth::turns::source_of(ip);
        let mut open = scrapes.0.lock();
        if open.values().sum::<usize>() >= MAX_CONNECTIONS {
            return None;
        }
        let here = open.entry(ip).or_default();
        if *here >= MAX_PER_ADDRESS {
            return None;
        }
        *here += 1;
        Some(Open(scrapes.clone(), ip))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut open = self.0 .0.lock();
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// Serves one HTTP connection (keep-alive: a scraper reuses it).
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    broker: Arc<Broker>,
    stream: S,
    peer: SocketAddr,
) {
    let service = hyper::service::service_fn(move |req| {
        let broker = broker.clone();
        async move { Ok::<_, Infallible>(respond(&broker, &req)) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(IDLE)
        .max_buf_size(MAX_REQUEST_HEAD)
        .serve_connection(TokioIo::new(WriteDeadline::new(stream, WRITE_STALL)), service);
    if let Err(e) = connection.await {
        tracing::debug!("Metrics connection from {peer}: {e}.");
    }
}

/// The answer to one request.
fn respond(broker: &Broker, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    match req.uri().path() {
        _ if !get => text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into()),
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(exposition::render(broker))));
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(exposition::CONTENT_TYPE));
            r
        }
        "/healthz" => match health(broker) {
            Ok(()) => text(StatusCode::OK, "ok\n".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, "not found: /metrics or /healthz\n".into()),
    }
}

/// Whether the broker takes new clients, and why not.
fn health(broker: &Broker) -> Result<(), &'static str> {
    if broker.is_shutting_down() {
        Err("shutting down")
    } else if !broker.accepts_connections() {
        Err("max_connections reached")
    } else {
        Ok(())
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}
