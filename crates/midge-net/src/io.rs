//! One future that reads and writes the same stream: whichever is ready first. This lets a
//! connection task wait on its socket in both directions, its mailbox and its timers with one
//! `select!`, without splitting the stream (which TLS streams make costly).
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

/// What the socket did.
pub enum IoEvent {
    /// Bytes were read into the read buffer (0: the peer closed).
    Read(usize),
    /// Bytes of the write buffer were written and removed from it.
    Wrote,
}

/// Waits until the stream can make progress: writes some of `wbuf` if it holds anything,
/// reads into `rbuf` when `read` is true.
pub async fn ready<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    wbuf: &mut BytesMut,
    read: bool,
) -> io::Result<IoEvent> {
    poll_fn(|cx| {
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
        if read {
            if rbuf.capacity() - rbuf.len() < 1024 {
                rbuf.reserve(4096);
            }
            if let Poll::Ready(r) = tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, rbuf) {
                return Poll::Ready(r.map(IoEvent::Read));
            }
        }
        Poll::Pending
    })
    .await
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
