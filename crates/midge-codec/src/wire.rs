//! Primitive wire types of MQTT (section 1.5): integers, variable byte integers, strings and
//! binary data, read from a [`Bytes`] without copying and written into a [`BytesMut`].
use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::{DecodeError, EncodeError, PacketType};

/// The largest value a variable byte integer can carry (four bytes).
pub(crate) const VARINT_MAX: u32 = 268_435_455;

/// Reads fields from the body of one packet. Every read checks the length first, so a short
/// packet is a [`DecodeError::Truncated`], never a panic.
pub(crate) struct Reader {
    buf: Bytes,
    packet_type: PacketType,
    limits: crate::DecodeLimits,
}

impl Reader {
    pub(crate) fn new(buf: Bytes, packet_type: PacketType, limits: crate::DecodeLimits) -> Self {
        Reader { buf, packet_type, limits }
    }

    /// The bounds the packet is decoded within.
    pub(crate) fn limits(&self) -> crate::DecodeLimits {
        self.limits
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn packet_type(&self) -> PacketType {
        self.packet_type
    }

    fn need(&self, n: usize, field: &'static str) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            Err(DecodeError::Truncated { packet_type: self.packet_type, field })
        } else {
            Ok(())
        }
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(2, field)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(4, field)?;
        Ok(self.buf.get_u32())
    }

    /// A variable byte integer (section 1.5.5): at most four bytes.
    pub(crate) fn varint(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        match read_varint(&self.buf) {
            VarInt::Value(v, n) => {
                self.buf.advance(n);
                Ok(v)
            }
            VarInt::Incomplete => Err(DecodeError::Truncated { packet_type: self.packet_type, field }),
            VarInt::TooLong => Err(DecodeError::InvalidVarInt { field }),
            // Inside a packet, malformed, as mosquitto's packet__read_varint has it.
            VarInt::NotMinimal(..) => Err(DecodeError::InvalidVarInt { field }),
        }
    }

    /// Binary data (section 1.5.6): a two-byte length and that many bytes, shared, not copied.
    pub(crate) fn binary(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u16(field)? as usize;
        self.need(len, field)?;
        Ok(self.buf.split_to(len))
    }

    /// A UTF-8 encoded string (section 1.5.4), validated [MQTT-1.5.4-1], [MQTT-1.5.4-2]
    /// (3.1.1: [MQTT-1.5.3-1], [MQTT-1.5.3-2]).
    /// A byte order mark is kept as U+FEFF, never stripped [MQTT-1.5.4-3].
    pub(crate) fn string(&mut self, field: &'static str) -> Result<ByteString, DecodeError> {
        let raw = self.binary(field)?;
        to_string(raw, field, self.limits.control_characters)
    }

    /// All bytes left in the body (the PUBLISH payload, CONNECT's will payload is `binary`).
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Splits off the next `n` bytes as a reader of their own (a property block).
    pub(crate) fn sub_reader(&mut self, n: usize) -> Result<Reader, DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::PropertiesTooLong);
        }
        Ok(Reader { buf: self.buf.split_to(n), packet_type: self.packet_type, limits: self.limits })
    }

    /// Fails unless every byte of the body was used.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes { packet_type: self.packet_type, extra: self.buf.len() })
        }
    }
}

/// Validates raw bytes as an MQTT UTF-8 string without copying them.
/// `control_characters`: control characters and non-characters are taken
/// ([`crate::DecodeLimits::stored`]).
pub(crate) fn to_string(
    raw: Bytes,
    field: &'static str,
    control_characters: bool,
) -> Result<ByteString, DecodeError> {
    // std's UTF-8 validation rejects encoded surrogates (U+D800..U+DFFF) and overlong forms,
    // as [MQTT-1.5.4-1] requires.
    let s = ByteString::try_from(raw).map_err(|_| DecodeError::InvalidUtf8 { field })?;
    // Printable ASCII, what nearly every topic and client id is, needs no closer look.
    if s.as_bytes().iter().all(|b| (0x20..0x7f).contains(b)) {
        return Ok(s);
    }
    if s.as_bytes().contains(&0) {
        // [MQTT-1.5.4-2] a UTF-8 Encoded String MUST NOT include U+0000.
        return Err(DecodeError::NullCharacter { field });
    }
    if let Some(c) = s.chars().find(|&c| is_disallowed_char(c)).filter(|_| !control_characters) {
        return Err(DecodeError::DisallowedCharacter { field, code_point: u32::from(c) });
    }
    Ok(s)
}

/// The code points a string "SHOULD NOT include" (MQTT 5.0 section 1.5.4, 3.1.1 section
/// 1.5.3): control characters and non-characters. The specification lets a receiver treat
/// them as malformed; mosquitto does, in every string of every packet (its
/// `mosquitto_validate_utf8`, client library included), and so does midge: a client id or
/// topic with a line break cannot reach a log, an ACL pattern or a subscriber. U+0000, which
/// a string MUST NOT include [MQTT-1.5.4-2], is one of them.
pub fn is_disallowed_char(c: char) -> bool {
    let c = u32::from(c);
    c <= 0x1f || (0x7f..=0x9f).contains(&c) || (0xfdd0..=0xfdef).contains(&c) || c & 0xfffe == 0xfffe
}

/// The outcome of reading a variable byte integer from the front of a slice.
pub(crate) enum VarInt {
    /// The value and how many bytes it took.
    Value(u32, usize),
    /// The slice ends inside the integer.
    Incomplete,
    /// A fifth byte would be needed: malformed (section 1.5.5).
    TooLong,
    /// The value, in more bytes than it needs (a last byte of 0 after a continuation),
    /// and how many: "the encoded value MUST use the minimum number of bytes necessary"
    /// [MQTT-1.5.5-1], which binds the sender and names nothing for the receiver.
    NotMinimal(u32, usize),
}

pub(crate) fn read_varint(buf: &[u8]) -> VarInt {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return VarInt::Incomplete;
        };
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return VarInt::NotMinimal(value, i + 1);
            }
            return VarInt::Value(value, i + 1);
        }
    }
    VarInt::TooLong
}

/// How many bytes a variable byte integer takes.
pub(crate) fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(crate) fn put_varint(out: &mut BytesMut, mut v: usize) -> Result<(), EncodeError> {
    if v > VARINT_MAX as usize {
        return Err(EncodeError::Invalid("variable byte integer above 268,435,455"));
    }
    loop {
        let mut b = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if v == 0 {
            return Ok(());
        }
    }
}

/// Writes a two-byte length and the bytes (strings and binary data).
pub(crate) fn put_binary(out: &mut BytesMut, b: &[u8], field: &'static str) -> Result<(), EncodeError> {
    let len = u16::try_from(b.len()).map_err(|_| EncodeError::FieldTooLong(field))?;
    out.put_u16(len);
    out.put_slice(b);
    Ok(())
}

/// The encoded size of a string or binary field.
pub(crate) fn binary_len(b: &[u8]) -> usize {
    2 + b.len()
}
