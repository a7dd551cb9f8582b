//! `midge inspect`: MQTT as an eavesdropper sees it, from packet captures.
//!
//! A capture ([`capture`]: pcap or pcapng, Ethernet, loopback, Linux cooked v1/v2 or raw IP)
//! is read frame by frame; TCP is reassembled ([`net::tcp`]: out-of-order segments,
//! retransmissions, overlaps); each connection is classified ([`stream`]) and decoded: MQTT of
//! every version with the codec the broker uses ([`mqtt`]), TLS as far as the hellos ([`tls`]).
//! What is found goes to a [`report::Sink`] as it is found: records, findings (credentials in
//! clear text, encrypted streams), warnings, and a summary at the end.
//!
//! Live capture ([`live`]) runs tcpdump and reads its pcap output through the same path.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod capture;
mod error;
pub mod inspector;
pub mod live;
pub mod mqtt;
pub mod net;
pub mod report;
pub mod stream;
pub mod tls;

use std::io::Read;

pub use error::InspectError;
pub use inspector::{Config, Inspector};
pub use report::{Sink, Summary};

/// Reads a whole capture (a file, standard input or tcpdump's pipe) and reports it to `sink`;
/// returns the summary (also given to `sink`).
///
/// Fails only when the input is not a capture, or reading or writing fails; damage inside
/// the capture is reported as warnings and what can be read is.
pub fn inspect(
    reader: impl Read + 'static,
    config: &Config,
    sink: &mut dyn Sink,
) -> Result<Summary, InspectError> {
    let mut capture = capture::CaptureReader::new(reader)?;
    let mut inspector = Inspector::new(config);
    while let Some(frame) = capture.next_frame()? {
        for w in capture.take_warnings() {
            inspector.warning(&w, sink)?;
        }
        inspector.frame(&frame, sink)?;
    }
    for w in capture.take_warnings() {
        inspector.warning(&w, sink)?;
    }
    Ok(inspector.finish(sink)?)
}
