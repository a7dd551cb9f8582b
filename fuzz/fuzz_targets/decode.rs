//! Feeds arbitrary bytes to the decoder in every protocol version: it must return packets or
//! an error, never panic, and every packet it returns must encode and decode back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use midge_codec::{decode, BytesMut, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
    let version = match selector % 3 {
        0 => ProtocolVersion::V3_1,
        1 => ProtocolVersion::V3_1_1,
        _ => ProtocolVersion::V5,
    };
    let max = if selector & 0x80 != 0 { 256 } else { usize::MAX };
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(packet)) = decode(&mut buf, version, max) {
        // CONNECT carries its own version.
        let v = match &packet {
            midge_codec::Packet::Connect(c) => c.protocol,
            _ => version,
        };
        let wire = packet.to_bytes(v).expect("a decoded packet encodes");
        let mut again = BytesMut::from(&wire[..]);
        let back = decode(&mut again, v, usize::MAX).expect("re-decodes").expect("complete");
        assert_eq!(back, packet);
    }
});
