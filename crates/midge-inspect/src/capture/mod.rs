//! Capture files: pcap (microsecond, nanosecond and the "modified" variant) and pcapng, read
//! record by record from a file or a pipe, so that `tcpdump -w -` can be decoded as it writes.
//!
//! The record formats are parsed by `pcap-parser`; this module picks the format from the
//! magic number, turns each record into a [`Frame`] (timestamp, link type, bytes) and turns
//! damage into warnings: a capture cut short or corrupt in the middle still yields every frame
//! before the damage.
pub mod link;
mod pcapng;

use std::cell::RefCell;
use std::io::{self, Cursor, Read};
use std::rc::Rc;

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{LegacyPcapReader, PcapBlockOwned, PcapError, PcapNGReader};

use crate::InspectError;
pub use link::LinkType;

/// The reader's buffer at first; it grows for larger records, up to [`MAX_RECORD`].
const INITIAL_CAPACITY: usize = 256 * 1024;
/// The largest record read (pcap's largest snapshot length is 256 KiB; pcapng blocks may be
/// larger, rarely). A larger length is taken as corruption.
const MAX_RECORD: usize = 64 * 1024 * 1024;
/// The largest pcapng Section Header Block accepted (its options are a few strings).
const MAX_SECTION_HEADER: usize = 1024 * 1024;

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its number in the capture, from 1, as Wireshark and tshark number frames.
    pub number: u64,
    /// When it was captured: nanoseconds since the Unix epoch.
    pub timestamp_ns: i128,
    /// The link layer of `data`.
    pub link: LinkType,
    /// The captured bytes (possibly fewer than were on the wire: see `orig_len`).
    pub data: Vec<u8>,
    /// The frame's length on the wire.
    pub orig_len: u32,
}

/// The two container formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// libpcap's format (tcpdump -w).
    Pcap,
    /// pcapng (Wireshark, dumpcap).
    PcapNg,
}

/// Reads frames from a pcap or pcapng stream.
pub struct CaptureReader {
    format: Format,
    inner: Box<dyn PcapReaderIterator>,
    read_error: Rc<RefCell<Option<io::Error>>>,
    capacity: usize,
    done: bool,
    state: State,
}

/// What the records so far said about those to come.
struct State {
    format: Format,
    /// pcap: the file's link type, timestamp unit, byte order and record header size.
    pcap_link: LinkType,
    pcap_nanos: bool,
    pcap_big_endian: bool,
    pcap_record_header: usize,
    /// pcapng: the current section's byte order.
    ng_big_endian: bool,
    /// pcapng: the interfaces of the current section.
    interfaces: pcapng::Interfaces,
    frames: u64,
    last_ts: i128,
    warnings: Vec<String>,
}

impl CaptureReader {
    /// Reads the file header and prepares to read frames. Fails when the input is not a
    /// capture (or ends inside its header).
    pub fn new(reader: impl Read + 'static) -> Result<CaptureReader, InspectError> {
        let read_error = Rc::new(RefCell::new(None));
        let mut reader = Tracked { inner: reader, error: Rc::clone(&read_error) };
        let (format, header) = read_file_header(&mut reader)?;
        let chained = Cursor::new(header).chain(reader);
        let bad = |e: PcapError<&[u8]>| InspectError::BadHeader(describe(&e));
        let inner: Box<dyn PcapReaderIterator> = match format {
            Format::Pcap => Box::new(LegacyPcapReader::new(INITIAL_CAPACITY, chained).map_err(bad)?),
            Format::PcapNg => Box::new(PcapNGReader::new(INITIAL_CAPACITY, chained).map_err(bad)?),
        };
        Ok(CaptureReader {
            format,
            inner,
            read_error,
            capacity: INITIAL_CAPACITY,
            done: false,
            state: State {
                format,
                pcap_link: LinkType::ETHERNET,
                pcap_nanos: false,
                pcap_big_endian: false,
                pcap_record_header: 16,
                ng_big_endian: false,
                interfaces: pcapng::Interfaces::default(),
                frames: 0,
                last_ts: 0,
                warnings: Vec::new(),
            },
        })
    }

    /// The container format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The warnings so far (damaged records, unknown interfaces), emptied.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.state.warnings)
    }

    /// The next frame; `Ok(None)` at the end of the capture, or after damage that stops
    /// reading (a warning says which). Blocks while a pipe has no complete record yet.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, InspectError> {
        while !self.done {
            let at = self.inner.consumed();
            match self.inner.next() {
                Ok((offset, block)) => {
                    let frame = self.state.record(block);
                    self.inner.consume(offset);
                    if frame.is_some() {
                        return Ok(frame);
                    }
                }
                Err(PcapError::Eof) => self.done = true,
                Err(PcapError::Incomplete(_)) => {
                    let before = self.inner.data().len();
                    if self.inner.refill().is_err() {
                        return Err(self.io_error());
                    }
                    // No room was left to read into: the buffer must grow (or the record is
                    // implausibly large).
                    if self.inner.data().len() == before && !self.inner.reader_exhausted() {
                        let t = self.capacity * 2;
                        if t > 2 * MAX_RECORD || !self.inner.grow(t) {
                            self.state.warn(format!(
                                "corrupt capture at byte {at}: a record larger than {MAX_RECORD} bytes; \
                                 reading stopped after frame {}",
                                self.state.frames
                            ));
                            self.done = true;
                        } else {
                            self.capacity = t;
                        }
                    }
                }
                Err(PcapError::UnexpectedEof) => {
                    self.state.warn(format!(
                        "the capture ends in the middle of a record at byte {at} (cut short?); \
                         frames after {} are missing",
                        self.state.frames
                    ));
                    self.done = true;
                }
                Err(PcapError::BufferTooSmall) => {
                    // The record's length, from its header: grow for a plausible one; a larger
                    // one is corruption (and would make us read the whole input to find out).
                    let needed = self.state.record_len(self.inner.data());
                    let target = needed
                        .filter(|n| *n <= MAX_RECORD && self.capacity <= 2 * MAX_RECORD)
                        .map(|n| (n + 64 * 1024).max(self.capacity * 2));
                    match target {
                        Some(t) if self.inner.grow(t) => self.capacity = t,
                        _ => {
                            let len = needed.map_or_else(|| "?".to_string(), |n| n.to_string());
                            self.state.warn(format!(
                                "corrupt capture at byte {at}: a record of {len} bytes (more than {MAX_RECORD}); \
                                 reading stopped after frame {}",
                                self.state.frames
                            ));
                            self.done = true;
                        }
                    }
                }
                Err(e) => {
                    let why = describe(&e);
                    self.state.warn(format!(
                        "corrupt capture at byte {at}: {why}; reading stopped after frame {}",
                        self.state.frames
                    ));
                    self.done = true;
                }
            }
        }
        Ok(None)
    }

    fn io_error(&self) -> InspectError {
        let e = self.read_error.borrow_mut().take();
        InspectError::Io(e.unwrap_or_else(|| io::Error::other("reading the capture failed")))
    }
}

impl State {
    /// The size of the record at the start of `data`, from its header: a pcap record's
    /// captured length plus its header, or a pcapng block's total length.
    fn record_len(&self, data: &[u8]) -> Option<usize> {
        let (at, big_endian, extra) = match self.format {
            Format::Pcap => (8, self.pcap_big_endian, self.pcap_record_header),
            Format::PcapNg => (4, self.ng_big_endian, 0),
        };
        let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        let n = if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) };
        usize::try_from(n).ok()?.checked_add(extra)
    }

    fn record(&mut self, block: PcapBlockOwned<'_>) -> Option<Frame> {
        match block {
            PcapBlockOwned::LegacyHeader(h) => {
                self.pcap_link = LinkType(h.network.0);
                self.pcap_nanos = h.is_nanosecond_precision();
                self.pcap_big_endian = h.is_bigendian();
                // The "modified" format's records have 8 more header bytes (ifindex, protocol,
                // packet type, padding).
                self.pcap_record_header = if h.is_modified_format() { 24 } else { 16 };
                None
            }
            PcapBlockOwned::Legacy(b) => {
                let frac = if self.pcap_nanos { i128::from(b.ts_usec) } else { i128::from(b.ts_usec) * 1000 };
                let ts = i128::from(b.ts_sec) * 1_000_000_000 + frac;
                Some(self.frame(ts, self.pcap_link, b.data, b.origlen))
            }
            PcapBlockOwned::NG(Block::SectionHeader(shb)) => {
                self.ng_big_endian = shb.big_endian();
                self.interfaces.new_section();
                None
            }
            PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                if let Some(w) = self.interfaces.add(&idb) {
                    self.warn(w);
                }
                None
            }
            PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                let Some(iface) = self.interfaces.get(epb.if_id) else {
                    self.frames += 1;
                    let n = self.frames;
                    self.warn(format!(
                        "frame {n} names interface {} that no block described: skipped",
                        epb.if_id
                    ));
                    return None;
                };
                let ts = iface.timestamp_ns(epb.ts_high, epb.ts_low);
                Some(self.frame(ts, iface.link, epb.data, epb.origlen))
            }
            PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                // A Simple Packet Block has no timestamp and belongs to the first interface
                // (pcapng, section 4.4).
                let Some(iface) = self.interfaces.get(0) else {
                    self.frames += 1;
                    self.warn("a simple packet block comes before any interface description: skipped".into());
                    return None;
                };
                let link = iface.link;
                Some(self.frame(self.last_ts, link, spb.data, spb.origlen))
            }
            PcapBlockOwned::NG(_) => None,
        }
    }

    fn frame(&mut self, timestamp_ns: i128, link: LinkType, data: &[u8], orig_len: u32) -> Frame {
        self.frames += 1;
        self.last_ts = timestamp_ns;
        Frame { number: self.frames, timestamp_ns, link, data: data.to_vec(), orig_len }
    }

    fn warn(&mut self, message: String) {
        self.warnings.push(message);
    }
}

/// A pcap-parser error in words (its own Display prints the input bytes).
fn describe<I>(e: &PcapError<I>) -> String {
    match e {
        PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => {
            format!("unreadable record ({})", kind.description())
        }
        PcapError::HeaderNotRecognized => "not a pcap or pcapng header".into(),
        PcapError::BufferTooSmall => "record too large".into(),
        PcapError::Eof | PcapError::UnexpectedEof | PcapError::Incomplete(_) => "unexpected end".into(),
        PcapError::ReadError => "read error".into(),
    }
}

/// Reads the whole file header (pcap: 24 bytes; pcapng: the Section Header Block), so that
/// the record reader's first read holds all of it even from a pipe that delivers it in parts.
fn read_file_header(r: &mut impl Read) -> Result<(Format, Vec<u8>), InspectError> {
    let mut buf = vec![0u8; 4];
    fill(r, &mut buf, 0)?;
    let magic = [buf[0], buf[1], buf[2], buf[3]];
    let format = match magic {
        // pcapng Section Header Block type (pcapng, section 4.1): the same in both byte orders.
        [0x0a, 0x0d, 0x0d, 0x0a] => Format::PcapNg,
        // pcap: microsecond, nanosecond and "modified" (Kuznetzov) magic numbers, in either
        // byte order.
        [0xd4, 0xc3, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0xc3, 0xd4]
        | [0x4d, 0x3c, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0x3c, 0x4d]
        | [0x34, 0xcd, 0xb2, 0xa1]
        | [0xa1, 0xb2, 0xcd, 0x34] => Format::Pcap,
        _ => {
            let magic = magic.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
            return Err(InspectError::NotACapture { magic });
        }
    };
    match format {
        Format::Pcap => {
            buf.resize(24, 0);
            fill(r, &mut buf, 4)?;
        }
        Format::PcapNg => {
            buf.resize(12, 0);
            fill(r, &mut buf, 4)?;
            let len_bytes = [buf[4], buf[5], buf[6], buf[7]];
            let len = match [buf[8], buf[9], buf[10], buf[11]] {
                [0x4d, 0x3c, 0x2b, 0x1a] => u32::from_le_bytes(len_bytes),
                [0x1a, 0x2b, 0x3c, 0x4d] => u32::from_be_bytes(len_bytes),
                _ => return Err(InspectError::BadHeader("pcapng byte-order magic missing".into())),
            } as usize;
            if !(28..=MAX_SECTION_HEADER).contains(&len) || len % 4 != 0 {
                return Err(InspectError::BadHeader(format!("pcapng section header of {len} bytes")));
            }
            buf.resize(len, 0);
            fill(r, &mut buf, 12)?;
        }
    }
    Ok((format, buf))
}

/// Fills `buf[from..]`, or fails with [`InspectError::TruncatedHeader`] at the end of input.
fn fill(r: &mut impl Read, buf: &mut [u8], mut from: usize) -> Result<(), InspectError> {
    while from < buf.len() {
        match r.read(&mut buf[from..]) {
            Ok(0) => return Err(InspectError::TruncatedHeader { got: from }),
            Ok(n) => from += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(InspectError::Io(e)),
        }
    }
    Ok(())
}

/// A reader that retries interrupted reads (a signal during a pipe read) and keeps the last
/// error, which pcap-parser reduces to "read error".
struct Tracked<R> {
    inner: R,
    error: Rc<RefCell<Option<io::Error>>>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let copy = io::Error::new(e.kind(), e.to_string());
                    *self.error.borrow_mut() = Some(e);
                    return Err(copy);
                }
                ok => return ok,
            }
        }
    }
}
