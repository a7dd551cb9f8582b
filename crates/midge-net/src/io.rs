//! One future that reads and writes the same stream: whichever is ready first. This lets a
//! connection task wait on its socket in both directions, its mailbox and its timers with one
//! `select!`, without splitting the stream (which TLS streams make costly).
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

/// Reads of at most this many bytes into an empty buffer go through the stack.
pub const SMALL_READ: usize = 256;

/// What the socket did.
pub enum IoEvent {
    /// Bytes were read into the read buffer (0: the peer closed).
    Read(usize),
    /// Bytes of the write buffer were written and removed from it.
    Wrote,
}

/// Polls the stream once: writes some of `wbuf` if it holds anything, reads into `rbuf`
/// when `read` is `Some(n)`, with room for at least `n` bytes (the caller sizes its reads:
/// small for idle connections, large under load). For callers that wait on more than the
/// socket in one `poll_fn`.
pub fn poll_io<S: AsyncRead + AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    stream: &mut S,
    rbuf: &mut BytesMut,
    wbuf: &mut BytesMut,
    read: Option<usize>,
) -> Poll<io::Result<IoEvent>> {
    if !wbuf.is_empty() {
        if let Poll::Ready(r) = Pin::new(&mut *stream).poll_write(cx, wbuf) {
            let n = r?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            wbuf.advance(n);
            return Poll::Ready(Ok(IoEvent::Wrote));
        }
    }
    if let Some(want) = read {
        if rbuf.capacity() == 0 && want <= SMALL_READ {
            // An idle connection waits without a buffer of its own: a small read lands on the
            // stack and is copied, so thousands of idle connections hold no read buffers.
            let mut small = [0u8; SMALL_READ];
            let mut rb = tokio::io::ReadBuf::new(&mut small);
            if let Poll::Ready(r) = Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                r?;
                let n = rb.filled().len();
                rbuf.extend_from_slice(rb.filled());
                return Poll::Ready(Ok(IoEvent::Read(n)));
            }
        } else {
            if rbuf.capacity() - rbuf.len() < want {
                rbuf.reserve(want);
            }
            if let Poll::Ready(r) = tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, rbuf) {
                return Poll::Ready(r.map(IoEvent::Read));
            }
        }
    }
    Poll::Pending
}

/// Waits until the stream can make progress (see [`poll_io`]).
pub async fn ready<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    wbuf: &mut BytesMut,
    read: Option<usize>,
) -> io::Result<IoEvent> {
    poll_fn(|cx| poll_io(cx, stream, rbuf, wbuf, read)).await
}

/// Writes out everything in `wbuf`.
pub async fn flush<S: AsyncWrite + Unpin>(stream: &mut S, wbuf: &mut BytesMut) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    while !wbuf.is_empty() {
        let n = stream.write_buf(wbuf).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
    stream.flush().await
}
