//! Link layers: what comes before the IP header in a frame of each link type
//! (tcpdump.org's list of LINKTYPE_ values).
use std::fmt;

/// A LINKTYPE_ value from a pcap header or a pcapng interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkType(pub i32);

impl LinkType {
    /// LINKTYPE_NULL: BSD loopback, a 4-byte address family in the capturing host's byte order.
    pub const NULL: LinkType = LinkType(0);
    /// LINKTYPE_ETHERNET: Ethernet II (and 802.1Q VLAN tags).
    pub const ETHERNET: LinkType = LinkType(1);
    /// LINKTYPE_RAW: a bare IPv4 or IPv6 packet.
    pub const RAW: LinkType = LinkType(101);
    /// LINKTYPE_LOOP: OpenBSD loopback, the address family in network byte order.
    pub const LOOP: LinkType = LinkType(108);
    /// LINKTYPE_LINUX_SLL: Linux "cooked" capture, version 1 (`tcpdump -i any`).
    pub const LINUX_SLL: LinkType = LinkType(113);
    /// LINKTYPE_IPV4: a bare IPv4 packet.
    pub const IPV4: LinkType = LinkType(228);
    /// LINKTYPE_IPV6: a bare IPv6 packet.
    pub const IPV6: LinkType = LinkType(229);
    /// LINKTYPE_LINUX_SLL2: Linux "cooked" capture, version 2 (libpcap 1.10 `-i any`).
    pub const LINUX_SLL2: LinkType = LinkType(276);
    /// DLT_RAW as OpenBSD and others number it in pcap headers (12 and 14).
    const RAW_12: LinkType = LinkType(12);
    const RAW_14: LinkType = LinkType(14);
}

impl fmt::Display for LinkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            LinkType::NULL => "NULL (BSD loopback)",
            LinkType::ETHERNET => "Ethernet",
            LinkType::RAW | LinkType::RAW_12 | LinkType::RAW_14 => "raw IP",
            LinkType::LOOP => "OpenBSD loopback",
            LinkType::LINUX_SLL => "Linux cooked (SLL)",
            LinkType::IPV4 => "IPv4",
            LinkType::IPV6 => "IPv6",
            LinkType::LINUX_SLL2 => "Linux cooked v2 (SLL2)",
            _ => return write!(f, "link type {}", self.0),
        };
        f.write_str(name)
    }
}

/// A frame with its link header understood: what to hand to the IP layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPayload<'a> {
    /// An Ethernet II frame, header included (VLAN tags are read with the IP layer).
    Ethernet(&'a [u8]),
    /// The payload after a link header that named its EtherType.
    EtherType(u16, &'a [u8]),
    /// An IP packet (the version is in its first byte).
    Ip(&'a [u8]),
}

/// Why a frame's link layer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// No decoder for this link type.
    #[error("{0} is not supported")]
    Unsupported(LinkType),
    /// The frame is shorter than its link header.
    #[error("{link} frame of {len} bytes is shorter than its header")]
    Short {
        /// The link type.
        link: LinkType,
        /// The frame's length.
        len: usize,
    },
    /// A loopback header names an address family that is not IP.
    #[error("loopback frame of address family {0} (not IPv4 or IPv6)")]
    NotIp(u32),
}

/// Address families found in NULL / LOOP headers: AF_INET is 2 everywhere; AF_INET6 is 10
/// on Linux, 24 on NetBSD/OpenBSD, 28 on FreeBSD, 30 on macOS.
const IP_FAMILIES: [u32; 5] = [2, 10, 24, 28, 30];

/// Splits the link header off a frame.
pub fn strip(link: LinkType, data: &[u8]) -> Result<LinkPayload<'_>, LinkError> {
    let short = || LinkError::Short { link, len: data.len() };
    match link {
        LinkType::ETHERNET => Ok(LinkPayload::Ethernet(data)),
        LinkType::RAW | LinkType::RAW_12 | LinkType::RAW_14 | LinkType::IPV4 | LinkType::IPV6 => {
            Ok(LinkPayload::Ip(data))
        }
        LinkType::NULL | LinkType::LOOP => {
            let head: [u8; 4] = data.get(..4).and_then(|h| h.try_into().ok()).ok_or_else(short)?;
            // NULL is in the capturing host's byte order, which the file does not say: either
            // reading that gives an IP family will do. LOOP is big-endian.
            let be = u32::from_be_bytes(head);
            let le = u32::from_le_bytes(head);
            let ip = if link == LinkType::LOOP {
                IP_FAMILIES.contains(&be)
            } else {
                IP_FAMILIES.contains(&be) || IP_FAMILIES.contains(&le)
            };
            if !ip {
                return Err(LinkError::NotIp(if link == LinkType::LOOP { be } else { le }));
            }
            Ok(LinkPayload::Ip(&data[4..]))
        }
        LinkType::LINUX_SLL => {
            // 16 bytes: packet type, ARPHRD type, address length, 8 address bytes, protocol.
            let proto = data.get(14..16).ok_or_else(short)?;
            Ok(LinkPayload::EtherType(u16::from_be_bytes([proto[0], proto[1]]), &data[16..]))
        }
        LinkType::LINUX_SLL2 => {
            // 20 bytes: protocol first, then reserved, interface index, ARPHRD type, packet
            // type, address length and 8 address bytes.
            if data.len() < 20 {
                return Err(short());
            }
            Ok(LinkPayload::EtherType(u16::from_be_bytes([data[0], data[1]]), &data[20..]))
        }
        other => Err(LinkError::Unsupported(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_families_in_either_byte_order() {
        let ip = [0x45u8, 0];
        for head in [[2u8, 0, 0, 0], [0, 0, 0, 2], [30, 0, 0, 0], [0, 0, 0, 24], [10, 0, 0, 0]] {
            let frame = [&head[..], &ip[..]].concat();
            assert_eq!(strip(LinkType::NULL, &frame), Ok(LinkPayload::Ip(&ip[..])));
        }
        assert_eq!(strip(LinkType::LOOP, &[0, 0, 0, 2, 0x45]), Ok(LinkPayload::Ip(&[0x45][..])));
        assert_eq!(strip(LinkType::LOOP, &[2, 0, 0, 0, 0x45]), Err(LinkError::NotIp(0x0200_0000)));
        assert_eq!(strip(LinkType::NULL, &[7, 0, 0, 0]), Err(LinkError::NotIp(7)));
        assert!(matches!(strip(LinkType::NULL, &[2, 0]), Err(LinkError::Short { .. })));
    }

    #[test]
    fn cooked_headers_give_the_ether_type() {
        let mut sll = vec![0u8; 16];
        sll[14..16].copy_from_slice(&0x86ddu16.to_be_bytes());
        sll.push(0x60);
        assert_eq!(strip(LinkType::LINUX_SLL, &sll), Ok(LinkPayload::EtherType(0x86dd, &[0x60][..])));
        let mut sll2 = vec![0u8; 20];
        sll2[0..2].copy_from_slice(&0x0800u16.to_be_bytes());
        sll2.push(0x45);
        assert_eq!(strip(LinkType::LINUX_SLL2, &sll2), Ok(LinkPayload::EtherType(0x0800, &[0x45][..])));
        assert!(matches!(strip(LinkType::LINUX_SLL2, &sll2[..19]), Err(LinkError::Short { .. })));
    }

    #[test]
    fn unknown_link_types_are_refused() {
        assert_eq!(strip(LinkType(147), &[0; 40]), Err(LinkError::Unsupported(LinkType(147))));
        assert_eq!(LinkType(147).to_string(), "link type 147");
    }
}
