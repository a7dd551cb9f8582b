//! Network plumbing shared by the midge broker and client, so neither writes it twice.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod io;
pub mod tls;

pub use io::{flush, poll_io, ready, IoEvent, OutQueue, WriteBuf, SMALL_READ};

use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream: TCP, TLS over TCP, or an in-memory pipe in tests.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A boxed [`Stream`].
pub type BoxStream = Box<dyn Stream>;
