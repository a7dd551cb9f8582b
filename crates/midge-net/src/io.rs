//! One future that reads and writes the same stream: whichever is ready first. This lets a
//! connection task wait on its socket in both directions, its mailbox and its timers with one
//! `select!`, without splitting the stream (which TLS streams make costly).
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
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

/// Bytes waiting to be written: a plain buffer, or an [`OutQueue`].
pub trait WriteBuf {
    /// True when nothing waits.
    fn is_empty(&self) -> bool;
    /// Writes some of it, removing what was written.
    fn poll_write_to<S: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut S,
    ) -> Poll<io::Result<usize>>;
}

impl WriteBuf for BytesMut {
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn poll_write_to<S: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut S,
    ) -> Poll<io::Result<usize>> {
        let n = std::task::ready!(Pin::new(stream).poll_write(cx, self))?;
        self.advance(n);
        Poll::Ready(Ok(n))
    }
}

/// Packets to write: encoded into a buffer, except large payloads, which wait as they are
/// (shared with every other subscriber of the message, never copied) and go out with a
/// vectored write.
#[derive(Debug, Default)]
pub struct OutQueue {
    /// Boxed: most connections never write a large payload, and an idle one holds no queue.
    #[allow(clippy::box_collection)]
    chunks: Option<Box<VecDeque<Bytes>>>,
    /// Bytes in `chunks`.
    queued: usize,
    tail: BytesMut,
}

impl OutQueue {
    /// Where to encode the next packet.
    pub fn tail(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Queues `b` after what is there, without copying it.
    pub fn push_shared(&mut self, b: Bytes) {
        let chunks = self.chunks.get_or_insert_with(Default::default);
        if !self.tail.is_empty() {
            let t = self.tail.split().freeze();
            self.queued += t.len();
            chunks.push_back(t);
        }
        self.queued += b.len();
        chunks.push_back(b);
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.queued + self.tail.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The encoding buffer's capacity (what an idle connection holds).
    pub fn capacity(&self) -> usize {
        self.tail.capacity()
    }

    /// Gives back the encoding buffer when it is empty and holds more than `above` bytes.
    pub fn shrink(&mut self, above: usize) {
        if self.tail.is_empty() && self.tail.capacity() > above {
            self.tail = BytesMut::new();
        }
    }

    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            match self.chunks.as_mut().and_then(|c| c.front_mut()) {
                Some(c) => {
                    let k = n.min(c.len());
                    c.advance(k);
                    self.queued -= k;
                    n -= k;
                    if c.is_empty() {
                        self.chunks.as_mut().map(|c| c.pop_front());
                    }
                }
                None => {
                    self.tail.advance(n);
                    break;
                }
            }
        }
        if self.chunks.as_ref().is_some_and(|c| c.is_empty()) {
            self.chunks = None;
        }
    }
}

impl WriteBuf for OutQueue {
    fn is_empty(&self) -> bool {
        OutQueue::is_empty(self)
    }

    fn poll_write_to<S: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut S,
    ) -> Poll<io::Result<usize>> {
        let Some(chunks) = self.chunks.as_ref() else {
            return self.tail.poll_write_to(cx, stream);
        };
        let mut slices: [IoSlice<'_>; 16] = std::array::from_fn(|_| IoSlice::new(&[]));
        let mut count = 0;
        for c in chunks.iter().take(15) {
            slices[count] = IoSlice::new(c);
            count += 1;
        }
        if count < 16 && !self.tail.is_empty() {
            slices[count] = IoSlice::new(&self.tail);
            count += 1;
        }
        let n = std::task::ready!(Pin::new(stream).poll_write_vectored(cx, &slices[..count]))?;
        self.consume(n);
        Poll::Ready(Ok(n))
    }
}

/// Polls the stream once: writes some of `wbuf` if it holds anything, reads into `rbuf`
/// when `read` is `Some(n)`, with room for at least `n` bytes (the caller sizes its reads:
/// small for idle connections, large under load). For callers that wait on more than the
/// socket in one `poll_fn`.
pub fn poll_io<S: AsyncRead + AsyncWrite + Unpin, W: WriteBuf>(
    cx: &mut Context<'_>,
    stream: &mut S,
    rbuf: &mut BytesMut,
    wbuf: &mut W,
    read: Option<usize>,
) -> Poll<io::Result<IoEvent>> {
    if !wbuf.is_empty() {
        if let Poll::Ready(r) = wbuf.poll_write_to(cx, stream) {
            if r? == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            return Poll::Ready(Ok(IoEvent::Wrote));
        }
    } else if let Poll::Ready(Err(e)) = Pin::new(&mut *stream).poll_flush(cx) {
        // Nothing of ours waits, but the stream may hold the end of what it took (a TLS
        // record, a WebSocket frame the socket did not take whole): it goes out as soon as
        // the socket takes it, even while the caller is not reading.
        return Poll::Ready(Err(e));
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
            // At most `want` bytes: the read buffer grows by what the caller asked for, never
            // by whatever capacity it happens to have (a connection that is not decoding, while
            // its client is held back, must not read on). The bytes are zeroed first: the
            // price of reading into a slice without unsafe code, small next to the read.
            let start = rbuf.len();
            rbuf.resize(start + want, 0);
            let mut rb = tokio::io::ReadBuf::new(&mut rbuf[start..]);
            match Pin::new(&mut *stream).poll_read(cx, &mut rb) {
                Poll::Ready(r) => {
                    let n = rb.filled().len();
                    rbuf.truncate(start + n);
                    r?;
                    return Poll::Ready(Ok(IoEvent::Read(n)));
                }
                Poll::Pending => rbuf.truncate(start),
            }
        }
    }
    Poll::Pending
}

/// Waits until the stream can make progress (see [`poll_io`]).
pub async fn ready<S: AsyncRead + AsyncWrite + Unpin, W: WriteBuf>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    wbuf: &mut W,
    read: Option<usize>,
) -> io::Result<IoEvent> {
    poll_fn(|cx| poll_io(cx, stream, rbuf, wbuf, read)).await
}

/// Writes out everything in `wbuf`.
pub async fn flush<S: AsyncWrite + Unpin, W: WriteBuf>(stream: &mut S, wbuf: &mut W) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    while !wbuf.is_empty() {
        let n = poll_fn(|cx| wbuf.poll_write_to(cx, stream)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
    }
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_out_queue_writes_its_chunks_in_order() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let mut q = OutQueue::default();
        q.tail().extend_from_slice(b"head-");
        let big = Bytes::from(vec![b'x'; 1000]);
        q.push_shared(big.clone());
        q.tail().extend_from_slice(b"-tail");
        assert_eq!(q.len(), 1010);
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            got
        });
        flush(&mut a, &mut q).await.unwrap();
        drop(a);
        let got = reader.await.unwrap();
        assert_eq!(&got[..5], b"head-");
        assert_eq!(&got[1005..], b"-tail");
        assert!(got[5..1005].iter().all(|&c| c == b'x'));
        assert!(q.is_empty());
    }
}
