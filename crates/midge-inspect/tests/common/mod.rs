//! Test captures made from known packets: TCP conversations built with etherparse, wrapped in
//! each link layer, written as pcap or pcapng by hand (independently of the reader under test),
//! and a sink that keeps everything inspection reports.
#![allow(dead_code)]

use std::io::Cursor;
use std::net::SocketAddr;

use etherparse::PacketBuilder;
use midge_codec::{Packet, ProtocolVersion};
use midge_inspect::capture::LinkType;
use midge_inspect::report::{Finding, Record, Sink, Summary, Value};
use midge_inspect::{Config, InspectError};

pub const CLIENT: &str = "10.0.0.5:51234";
pub const BROKER: &str = "10.0.0.1:1883";
pub const CLIENT6: &str = "[2001:db8::5]:51234";
pub const BROKER6: &str = "[2001:db8::1]:1883";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// An MQTT packet's bytes.
pub fn mqtt(p: Packet, v: ProtocolVersion) -> Vec<u8> {
    p.to_bytes(v).expect("encodes").to_vec()
}

/// One TCP segment as an IP packet (v4 or v6 after the addresses).
pub fn ip_segment(src: SocketAddr, dst: SocketAddr, seq: u32, flags: &str, payload: &[u8]) -> Vec<u8> {
    let b = match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => PacketBuilder::ipv4(s.ip().octets(), d.ip().octets(), 64),
        (SocketAddr::V6(s), SocketAddr::V6(d)) => PacketBuilder::ipv6(s.ip().octets(), d.ip().octets(), 64),
        _ => panic!("mixed address families"),
    };
    let mut t = b.tcp(src.port(), dst.port(), seq, 65000);
    if flags.contains('S') {
        t = t.syn();
    }
    if flags.contains('A') {
        t = t.ack(1);
    }
    if flags.contains('F') {
        t = t.fin();
    }
    if flags.contains('R') {
        t = t.rst();
    }
    let mut out = Vec::with_capacity(t.size(payload.len()));
    t.write(&mut out, payload).expect("builds");
    out
}

/// A TCP conversation, frame by frame (IP packets), with the sequence numbers kept.
pub struct Conv {
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// The next sequence number of each side.
    pub cseq: u32,
    pub sseq: u32,
    pub frames: Vec<Vec<u8>>,
}

impl Conv {
    pub fn new(client: &str, server: &str) -> Conv {
        Conv { client: addr(client), server: addr(server), cseq: 1000, sseq: 70_000, frames: Vec::new() }
    }

    /// SYN, SYN-ACK, ACK.
    pub fn handshake(&mut self) -> &mut Self {
        self.frames.push(ip_segment(self.client, self.server, self.cseq, "S", b""));
        self.frames.push(ip_segment(self.server, self.client, self.sseq, "SA", b""));
        self.cseq += 1;
        self.sseq += 1;
        self.frames.push(ip_segment(self.client, self.server, self.cseq, "A", b""));
        self
    }

    /// A segment from the client at the next sequence number.
    pub fn client(&mut self, data: &[u8]) -> &mut Self {
        self.frames.push(ip_segment(self.client, self.server, self.cseq, "A", data));
        self.cseq = self.cseq.wrapping_add(data.len() as u32);
        self
    }

    /// A segment from the server at the next sequence number.
    pub fn server(&mut self, data: &[u8]) -> &mut Self {
        self.frames.push(ip_segment(self.server, self.client, self.sseq, "A", data));
        self.sseq = self.sseq.wrapping_add(data.len() as u32);
        self
    }

    /// A client segment at `offset` bytes after `base` (out of order, retransmitted...),
    /// leaving the next sequence number alone.
    pub fn client_at(&mut self, base: u32, offset: u32, data: &[u8]) -> &mut Self {
        self.frames.push(ip_segment(self.client, self.server, base.wrapping_add(offset), "A", data));
        self
    }

    /// FIN both ways.
    pub fn close(&mut self) -> &mut Self {
        self.frames.push(ip_segment(self.client, self.server, self.cseq, "FA", b""));
        self.frames.push(ip_segment(self.server, self.client, self.sseq, "FA", b""));
        self
    }
}

/// An IP packet behind the link header of `link`.
pub fn wrap(link: LinkType, ip: &[u8]) -> Vec<u8> {
    let v6 = ip[0] >> 4 == 6;
    let ether_type: u16 = if v6 { 0x86dd } else { 0x0800 };
    let head: Vec<u8> = match link {
        LinkType::ETHERNET => {
            [&[2, 0, 0, 0, 0, 1][..], &[2, 0, 0, 0, 0, 2], &ether_type.to_be_bytes()].concat()
        }
        // BSD loopback, little-endian host; macOS's AF_INET6 (30).
        LinkType::NULL => (if v6 { 30u32 } else { 2 }).to_le_bytes().to_vec(),
        // OpenBSD loopback: network byte order; OpenBSD's AF_INET6 (24).
        LinkType::LOOP => (if v6 { 24u32 } else { 2 }).to_be_bytes().to_vec(),
        LinkType::LINUX_SLL => {
            // packet type 0 (to us), ARPHRD_LOOPBACK (772), 6 address bytes, padded to 8.
            [
                &0u16.to_be_bytes()[..],
                &772u16.to_be_bytes(),
                &6u16.to_be_bytes(),
                &[0; 8],
                &ether_type.to_be_bytes(),
            ]
            .concat()
        }
        LinkType::LINUX_SLL2 => [
            &ether_type.to_be_bytes()[..],
            &[0, 0],
            &1u32.to_be_bytes(),
            &772u16.to_be_bytes(),
            &[0, 6],
            &[0; 8],
        ]
        .concat(),
        _ => Vec::new(), // raw IP
    };
    [head, ip.to_vec()].concat()
}

/// A pcap file: microsecond or nanosecond timestamps, either byte order.
pub fn pcap(link: LinkType, frames: &[(i128, Vec<u8>)], nanos: bool, big_endian: bool) -> Vec<u8> {
    let u32b = |v: u32| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let u16b = |v: u16| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
    let mut out = Vec::new();
    out.extend(u32b(magic));
    out.extend(u16b(2));
    out.extend(u16b(4));
    out.extend(u32b(0)); // thiszone
    out.extend(u32b(0)); // sigfigs
    out.extend(u32b(262_144));
    out.extend(u32b(link.0 as u32));
    for (ts, data) in frames {
        let secs = (ts / 1_000_000_000) as u32;
        let frac = (ts % 1_000_000_000) as u32;
        out.extend(u32b(secs));
        out.extend(u32b(if nanos { frac } else { frac / 1000 }));
        out.extend(u32b(data.len() as u32));
        out.extend(u32b(data.len() as u32));
        out.extend_from_slice(data);
    }
    out
}

/// Ethernet frames a microsecond apart from 1 700 000 000 s, as a little-endian pcap.
pub fn ethernet_pcap(ip_frames: &[Vec<u8>]) -> Vec<u8> {
    pcap(LinkType::ETHERNET, &timed(LinkType::ETHERNET, ip_frames), false, false)
}

/// Frames wrapped in `link`, 1 ms apart from 1 700 000 000 s.
pub fn timed(link: LinkType, ip_frames: &[Vec<u8>]) -> Vec<(i128, Vec<u8>)> {
    ip_frames
        .iter()
        .enumerate()
        .map(|(i, f)| (1_700_000_000_000_000_000 + i as i128 * 1_000_000, wrap(link, f)))
        .collect()
}

/// A pcapng file, block by block (little-endian).
#[derive(Default)]
pub struct PcapNg(pub Vec<u8>);

impl PcapNg {
    fn block(&mut self, kind: u32, body: &[u8]) -> &mut Self {
        let pad = (4 - body.len() % 4) % 4;
        let len = (12 + body.len() + pad) as u32;
        self.0.extend(kind.to_le_bytes());
        self.0.extend(len.to_le_bytes());
        self.0.extend_from_slice(body);
        self.0.extend(std::iter::repeat(0).take(pad));
        self.0.extend(len.to_le_bytes());
        self
    }

    /// A Section Header Block (version 1.0, unknown section length), with a shb_userappl option.
    pub fn section(&mut self) -> &mut Self {
        let mut body = Vec::new();
        body.extend(0x1a2b_3c4du32.to_le_bytes());
        body.extend(1u16.to_le_bytes());
        body.extend(0u16.to_le_bytes());
        body.extend((-1i64).to_le_bytes());
        body.extend(option(4, b"midge tests"));
        body.extend(option(0, b""));
        self.block(0x0a0d_0d0a, &body)
    }

    /// An Interface Description Block, with if_tsresol when given.
    pub fn interface(&mut self, link: LinkType, tsresol: Option<u8>) -> &mut Self {
        let mut body = Vec::new();
        body.extend((link.0 as u16).to_le_bytes());
        body.extend(0u16.to_le_bytes());
        body.extend(262_144u32.to_le_bytes());
        if let Some(r) = tsresol {
            body.extend(option(9, &[r]));
            body.extend(option(0, b""));
        }
        self.block(1, &body)
    }

    /// An Enhanced Packet Block: `ts` in the interface's units.
    pub fn packet(&mut self, interface: u32, ts: u64, data: &[u8]) -> &mut Self {
        let mut body = Vec::new();
        body.extend(interface.to_le_bytes());
        body.extend(((ts >> 32) as u32).to_le_bytes());
        body.extend((ts as u32).to_le_bytes());
        body.extend((data.len() as u32).to_le_bytes());
        body.extend((data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        body.extend(std::iter::repeat(0).take((4 - data.len() % 4) % 4));
        self.block(6, &body)
    }

    /// A Simple Packet Block (interface 0, no timestamp).
    pub fn simple(&mut self, data: &[u8]) -> &mut Self {
        let mut body = Vec::new();
        body.extend((data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        body.extend(std::iter::repeat(0).take((4 - data.len() % 4) % 4));
        self.block(3, &body)
    }

    /// A block of a type no reader knows (to be skipped).
    pub fn unknown(&mut self) -> &mut Self {
        self.block(0x0bad_0001, &[1, 2, 3, 4, 5, 6, 7, 8])
    }
}

fn option(code: u16, value: &[u8]) -> Vec<u8> {
    let pad = (4 - value.len() % 4) % 4;
    [&code.to_le_bytes()[..], &(value.len() as u16).to_le_bytes(), value, &vec![0; pad]].concat()
}

/// Everything inspection reported.
#[derive(Default, Debug)]
pub struct Collect {
    pub records: Vec<Record>,
    pub findings: Vec<Finding>,
    pub warnings: Vec<String>,
    pub summary: Option<Summary>,
}

impl Sink for Collect {
    fn record(&mut self, r: &Record) -> std::io::Result<()> {
        self.records.push(r.clone());
        Ok(())
    }
    fn finding(&mut self, f: &Finding) -> std::io::Result<()> {
        self.findings.push(f.clone());
        Ok(())
    }
    fn warning(&mut self, m: &str) -> std::io::Result<()> {
        self.warnings.push(m.to_string());
        Ok(())
    }
    fn summary(&mut self, s: &Summary) -> std::io::Result<()> {
        self.summary = Some(s.clone());
        Ok(())
    }
}

impl Collect {
    /// The record names ("CONNECT", "ClientHello", ...) in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.records.iter().map(|r| r.name).collect()
    }

    pub fn summary(&self) -> &Summary {
        self.summary.as_ref().expect("a summary")
    }
}

/// Inspects a capture held in memory.
pub fn try_run(capture: Vec<u8>, ports: &[u16]) -> Result<Collect, InspectError> {
    let mut c = Collect::default();
    midge_inspect::inspect(Cursor::new(capture), &Config::with_ports(ports), &mut c)?;
    Ok(c)
}

/// Inspects a capture held in memory; it must be readable.
pub fn run(capture: Vec<u8>, ports: &[u16]) -> Collect {
    try_run(capture, ports).expect("the capture is read")
}

/// A field of a record.
pub fn field<'a>(r: &'a Record, name: &str) -> Option<&'a Value> {
    r.fields.iter().find(|f| f.name == name).map(|f| &f.value)
}

pub fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}
