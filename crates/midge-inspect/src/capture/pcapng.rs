//! pcapng interfaces: each Enhanced Packet Block names an interface, whose description gives
//! the link type and the timestamp unit (pcapng, sections 4.2 and 4.3).
use pcap_parser::pcapng::InterfaceDescriptionBlock;

use super::LinkType;

/// One interface of the current section.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Interface {
    pub link: LinkType,
    /// Timestamp units per second (if_tsresol; 10^6 when absent).
    units_per_second: u64,
    /// Seconds added to every timestamp (if_tsoffset).
    offset_secs: i64,
}

impl Interface {
    /// A packet's timestamp in nanoseconds since the epoch, from its two 32-bit halves.
    pub fn timestamp_ns(&self, high: u32, low: u32) -> i128 {
        let raw = (u128::from(high) << 32) | u128::from(low);
        // raw < 2^64 and 10^9 < 2^30: the product fits in u128, and the quotient in i128.
        let ns = raw * 1_000_000_000 / u128::from(self.units_per_second.max(1));
        i128::try_from(ns).unwrap_or(i128::MAX / 2) + i128::from(self.offset_secs) * 1_000_000_000
    }
}

/// The interfaces described so far in the current section.
#[derive(Debug, Default)]
pub(crate) struct Interfaces(Vec<Interface>);

impl Interfaces {
    /// A new section starts: interface numbers start again (pcapng, section 4.1).
    pub fn new_section(&mut self) {
        self.0.clear();
    }

    /// Adds the next interface; a warning when its timestamp unit is unusable.
    pub fn add(&mut self, idb: &InterfaceDescriptionBlock<'_>) -> Option<String> {
        let (units_per_second, warning) = match idb.ts_resolution() {
            Some(u) if u > 0 => (u, None),
            _ => (
                1_000_000,
                Some(format!(
                    "interface {} has an invalid timestamp resolution ({}): taken as microseconds",
                    self.0.len(),
                    idb.if_tsresol
                )),
            ),
        };
        self.0.push(Interface {
            link: LinkType(idb.linktype.0),
            units_per_second,
            offset_secs: idb.ts_offset(),
        });
        warning
    }

    /// The interface with this number.
    pub fn get(&self, id: u32) -> Option<&Interface> {
        self.0.get(usize::try_from(id).ok()?)
    }
}
