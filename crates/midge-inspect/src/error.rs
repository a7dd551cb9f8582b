//! The errors of this crate: what a caller can match on.
use std::io;

/// Why a capture could not be read, or live capture could not start.
///
/// A damaged record in the middle of a capture is not an error: what was read before it is
/// decoded, and a warning says where reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Reading the file or the pipe failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The input does not start with a pcap or pcapng header.
    #[error("not a pcap or pcapng capture (the file starts with {magic})")]
    NotACapture {
        /// The first bytes, in hex.
        magic: String,
    },
    /// The input ends inside the file header.
    #[error("the capture is empty or ends inside its file header ({got} bytes)")]
    TruncatedHeader {
        /// How many bytes there were.
        got: usize,
    },
    /// The file header is there but cannot be read.
    #[error("corrupt capture file header: {0}")]
    BadHeader(String),
    /// tcpdump is not installed (live capture).
    #[error(
        "tcpdump is not installed: `midge inspect --interface` captures with it \
         (Debian/Ubuntu: apt install tcpdump)"
    )]
    TcpdumpMissing,
    /// tcpdump may not capture: no root, no CAP_NET_RAW.
    #[error(
        "tcpdump may not capture on {interface}: {message}\n\
         Capturing needs root or the CAP_NET_RAW capability: run midge as root (sudo), or give \
         tcpdump the capabilities once with\n    \
         sudo setcap cap_net_raw,cap_net_admin=eip $(command -v tcpdump)"
    )]
    TcpdumpPermission {
        /// The interface.
        interface: String,
        /// What tcpdump said.
        message: String,
    },
    /// tcpdump failed for another reason (no such interface, bad filter, ...).
    #[error("tcpdump failed ({status}): {message}")]
    TcpdumpFailed {
        /// Its exit status.
        status: String,
        /// What it printed on standard error.
        message: String,
    },
}
