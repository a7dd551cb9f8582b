//! IPv4 / IPv6 and TCP headers, read with etherparse (VLAN tags and IPv6 extension headers
//! included): a frame's TCP segment, if it carries one.
use std::net::{IpAddr, SocketAddr};

use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};

use crate::capture::link::LinkPayload;

/// A TCP segment: its addresses, sequence number, flags and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// The sender.
    pub src: SocketAddr,
    /// The receiver.
    pub dst: SocketAddr,
    /// The sequence number of the first byte (of the SYN, on a SYN).
    pub seq: u32,
    /// SYN flag.
    pub syn: bool,
    /// ACK flag.
    pub ack: bool,
    /// The acknowledgment number (meaningful with the ACK flag).
    pub ack_number: u32,
    /// FIN flag.
    pub fin: bool,
    /// RST flag.
    pub rst: bool,
    /// The payload.
    pub payload: &'a [u8],
}

/// Why a frame gave no TCP segment although it looked like IP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IpError(String);

/// The TCP segment in a frame; `Ok(None)` for anything else (UDP, ARP, ICMP, IP fragments).
pub fn tcp_segment(payload: LinkPayload<'_>) -> Result<Option<Segment<'_>>, IpError> {
    let sliced = match payload {
        LinkPayload::Ethernet(d) => SlicedPacket::from_ethernet(d),
        LinkPayload::EtherType(t, d) => SlicedPacket::from_ether_type(EtherType(t), d),
        LinkPayload::Ip(d) => SlicedPacket::from_ip(d),
    }
    .map_err(|e| IpError(e.to_string()))?;
    let (src_ip, dst_ip): (IpAddr, IpAddr) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => (v4.header().source_addr().into(), v4.header().destination_addr().into()),
        Some(NetSlice::Ipv6(v6)) => (v6.header().source_addr().into(), v6.header().destination_addr().into()),
        _ => return Ok(None),
    };
    let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
        return Ok(None);
    };
    Ok(Some(Segment {
        src: SocketAddr::new(src_ip, tcp.source_port()),
        dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        seq: tcp.sequence_number(),
        syn: tcp.syn(),
        ack: tcp.ack(),
        ack_number: tcp.acknowledgment_number(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        payload: tcp.payload(),
    }))
}
