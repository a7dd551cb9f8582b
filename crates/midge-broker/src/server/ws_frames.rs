//! [`Reframer`]: the client's WebSocket frames as tungstenite is handed them, a large data
//! frame cut into frames of at most [`PIECE`] bytes. No I/O: bytes in, bytes out.
//!
//! tungstenite reserves a frame's whole announced length as soon as it has read the frame's
//! header (RFC 6455 section 5.2): a client could make the broker reserve max_packet_size
//! (up to 256 MB) with 14 bytes, on each connection, and abort it under a bound on address
//! space (`ulimit -v`, strict overcommit). Cut, a frame costs what has arrived of it: the
//! pieces are fragments of the same message (section 5.4: the first keeps the opcode, the
//! others are continuations, the last keeps FIN), and tungstenite puts the message together
//! as they come, within max_message_size. A piece is a multiple of 4 bytes long, so the
//! client's masking key still unmasks each piece from its first byte (section 5.3).
use std::io;

use tokio::io::ReadBuf;

/// The largest frame handed on as it is; a longer data frame goes on in pieces of this size.
pub const PIECE: u64 = 64 * 1024;

const _: () = assert!(PIECE.is_multiple_of(4), "a piece keeps the masking key's alignment");

/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte masking key.
const HEADER_MAX: usize = 14;

/// A frame header, as read or as made.
#[derive(Debug, Default, Clone, Copy)]
struct Header {
    bytes: [u8; HEADER_MAX],
    len: u8,
}

impl Header {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    fn push(&mut self, b: &[u8]) {
        let at = usize::from(self.len);
        self.bytes[at..at + b.len()].copy_from_slice(b);
        self.len += b.len() as u8;
    }

    /// How long the header being read is, from what of it was read.
    fn full_len(&self) -> usize {
        if self.len < 2 {
            return 2;
        }
        let extended = match self.bytes[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + extended + if self.bytes[1] & 0x80 != 0 { 4 } else { 0 }
    }

    fn is_whole(&self) -> bool {
        self.len >= 2 && usize::from(self.len) == self.full_len()
    }

    /// The payload's length, of a whole header.
    fn payload_len(&self) -> u64 {
        match self.bytes[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.bytes[2], self.bytes[3]])),
            127 => u64::from_be_bytes(self.bytes[2..10].try_into().expect("8 bytes")),
            n => u64::from(n),
        }
    }

    /// The masking key, of a whole header of a masked frame.
    fn mask(&self) -> Option<[u8; 4]> {
        let at = usize::from(self.len) - 4;
        (self.bytes[1] & 0x80 != 0).then(|| self.bytes[at..at + 4].try_into().expect("4 bytes"))
    }

    /// A header of its own: first byte (FIN, RSV, opcode), length, masking key.
    fn made(first: u8, len: u64, mask: Option<[u8; 4]>) -> Header {
        let mut h = Header::default();
        let masked = if mask.is_some() { 0x80 } else { 0 };
        h.push(&[first]);
        match len {
            0..=125 => h.push(&[masked | len as u8]),
            126..=0xffff => {
                h.push(&[masked | 126]);
                h.push(&(len as u16).to_be_bytes());
            }
            _ => {
                h.push(&[masked | 127]);
                h.push(&len.to_be_bytes());
            }
        }
        if let Some(key) = mask {
            h.push(&key);
        }
        h
    }
}

/// Where the reading stands in the client's frames.
#[derive(Debug)]
pub struct Reframer {
    /// The header being read.
    reading: Header,
    /// A header to hand on, and how much of it was.
    out: Header,
    out_given: u8,
    /// Payload of the frame (or piece) handed on still to come.
    piece: u64,
    /// Of a frame being cut: its payload after the current piece, whether it ends its message
    /// (FIN), and its masking key.
    after: u64,
    fin: bool,
    mask: Option<[u8; 4]>,
    /// A frame longer than this goes on as it is: tungstenite refuses it from its header
    /// (max_frame_size), before it reserves anything.
    max_frame: u64,
}

impl Reframer {
    /// A reframer for frames of at most `max_frame` bytes (tungstenite's max_frame_size).
    pub fn new(max_frame: usize) -> Self {
        Reframer {
            reading: Header::default(),
            out: Header::default(),
            out_given: 0,
            piece: 0,
            after: 0,
            fin: false,
            mask: None,
            max_frame: max_frame as u64,
        }
    }

    /// Takes what it can of `input` and puts what is to be handed on into `out`; returns how
    /// many bytes of `input` it took (the rest is to be fed again). A frame whose payload is
    /// longer than `most` less what this call took is not begun: its header waits
    /// ([`Reframer::waits`]). Fails on a
    /// control frame (or one of a reserved opcode) longer than [`PIECE`]: at most 125 bytes
    /// are allowed (section 5.5), and tungstenite would reserve it whole before it said so.
    pub fn feed(&mut self, input: &[u8], out: &mut ReadBuf<'_>, most: u64) -> io::Result<usize> {
        let mut used = 0;
        loop {
            if self.out_given < self.out.len {
                let rest = &self.out.as_slice()[usize::from(self.out_given)..];
                let n = rest.len().min(out.remaining());
                if n == 0 {
                    return Ok(used);
                }
                out.put_slice(&rest[..n]);
                self.out_given += n as u8;
                continue;
            }
            if self.piece > 0 {
                let n = (self.piece.min((input.len() - used) as u64) as usize).min(out.remaining());
                if n == 0 {
                    return Ok(used);
                }
                out.put_slice(&input[used..used + n]);
                used += n;
                self.piece -= n as u64;
                if self.piece == 0 && self.after > 0 {
                    self.next_piece();
                }
                continue;
            }
            if self.reading.is_whole() {
                // What this call took (its header included) is no longer to be read.
                if self.reading.payload_len() > most.saturating_sub(used as u64) {
                    return Ok(used);
                }
                self.start_frame()?;
                continue;
            }
            if used == input.len() {
                return Ok(used);
            }
            let n = (self.reading.full_len() - usize::from(self.reading.len)).min(input.len() - used);
            self.reading.push(&input[used..used + n]);
            used += n;
        }
    }

    /// Whether a frame's header was read and waits (its payload is longer than it may be).
    pub fn waits(&self) -> bool {
        self.reading.is_whole()
    }

    /// What was read of a header and not handed on (at the end of the stream).
    pub fn take_partial_header(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.reading).as_slice().to_vec()
    }

    /// A whole header was read: hand it on, or the first piece's.
    fn start_frame(&mut self) -> io::Result<()> {
        let header = std::mem::take(&mut self.reading);
        let len = header.payload_len();
        let first = header.bytes[0];
        if len <= PIECE || len > self.max_frame {
            (self.out, self.piece, self.after) = (header, len, 0);
        } else if first & 0x0f <= 2 {
            // Continuation, text or binary: cut. The first piece keeps the opcode and the
            // RSV bits (tungstenite refuses those), not FIN.
            (self.fin, self.mask, self.after) = (first & 0x80 != 0, header.mask(), len - PIECE);
            (self.out, self.piece) = (Header::made(first & 0x7f, PIECE, self.mask), PIECE);
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a frame of opcode {:#x} and {len} bytes (a control frame has at most 125)",
                    first & 0x0f
                ),
            ));
        }
        self.out_given = 0;
        Ok(())
    }

    /// The next piece of a frame being cut: a continuation, FIN on the last if the frame had it.
    fn next_piece(&mut self) {
        let n = self.after.min(PIECE);
        self.after -= n;
        let fin = if self.after == 0 && self.fin { 0x80 } else { 0 };
        (self.out, self.out_given, self.piece) = (Header::made(fin, n, self.mask), 0, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: FIN and opcode in `first`, masked with `key`.
    fn frame(first: u8, payload: &[u8], key: Option<[u8; 4]>) -> Vec<u8> {
        let mut f = Header::made(first, payload.len() as u64, key).as_slice().to_vec();
        let masked = payload.iter().enumerate().map(|(i, b)| b ^ key.map_or(0, |k| k[i % 4]));
        f.extend(masked);
        f
    }

    /// Parses `bytes` as frames: (first byte, unmasked payload) each.
    fn parse(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let mut h = Header::default();
            while !h.is_whole() {
                let n = h.full_len() - usize::from(h.len);
                h.push(&bytes[..n]);
                bytes = &bytes[n..];
            }
            let len = h.payload_len() as usize;
            let key = h.mask();
            let payload =
                bytes[..len].iter().enumerate().map(|(i, b)| b ^ key.map_or(0, |k| k[i % 4])).collect();
            frames.push((h.bytes[0], payload));
            bytes = &bytes[len..];
        }
        frames
    }

    /// Feeds `input` in chunks of `chunk` bytes into outputs of `room` bytes.
    fn run(r: &mut Reframer, input: &[u8], chunk: usize, room: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        for part in input.chunks(chunk) {
            let mut part = part;
            loop {
                let mut buf = vec![0u8; room];
                let mut rb = ReadBuf::new(&mut buf);
                let used = r.feed(part, &mut rb, u64::MAX)?;
                out.extend_from_slice(rb.filled());
                part = &part[used..];
                if part.is_empty() && rb.filled().is_empty() {
                    break;
                }
            }
        }
        Ok(out)
    }

    #[test]
    fn small_frames_go_on_as_they_are() {
        let key = Some([1, 2, 3, 4]);
        let small =
            [frame(0x02, b"hello", key), frame(0x89, b"ping", key), frame(0x80, &[9; 65_536], key)].concat();
        let input = [&small[..], &frame(0x82, &[7; 70_000], key)].concat();
        for (chunk, room) in [(1, 1), (3, 7), (4096, 4096), (input.len(), 200_000)] {
            let mut r = Reframer::new(1 << 20);
            let out = run(&mut r, &input, chunk, room).unwrap();
            assert_eq!(out[..small.len()], small[..], "frames of a piece or less are not touched");
            // 70,000 bytes is over a piece: cut in two.
            let frames = parse(&out[small.len()..]);
            assert_eq!(frames, [(0x02, vec![7; 65_536]), (0x80, vec![7; 70_000 - 65_536])]);
        }
    }

    #[test]
    fn a_large_frame_goes_on_in_pieces_of_the_same_message() {
        let payload: Vec<u8> = (0..300_001u32).map(|i| (i * 7) as u8).collect();
        let key = Some([0xa1, 0xb2, 0xc3, 0xd4]);
        for (first, key) in [(0x82u8, key), (0xc2, key), (0x02, None), (0x80, key)] {
            let mut r = Reframer::new(1 << 20);
            let out = run(&mut r, &frame(first, &payload, key), 1000, 4096).unwrap();
            let frames = parse(&out);
            assert_eq!(frames.len(), 5, "300,001 bytes in pieces of 65,536");
            assert!(frames.iter().all(|(_, p)| p.len() as u64 <= PIECE));
            // The first keeps the opcode and RSV bits; the others continue; FIN on the last
            // only, if the frame had it.
            assert_eq!(frames[0].0, first & 0x7f);
            assert!(frames[1..4].iter().all(|(f, _)| *f == 0x00));
            assert_eq!(frames[4].0, first & 0x80);
            let joined: Vec<u8> = frames.into_iter().flat_map(|(_, p)| p).collect();
            assert_eq!(joined, payload);
        }
    }

    #[test]
    fn a_header_announcing_more_is_handed_on_before_the_payload_arrives() {
        // 14 bytes announcing 200 MB: what goes on is a piece's header, nothing to reserve.
        let mut r = Reframer::new(256 << 20);
        let header = Header::made(0x82, 200_000_000, Some([0; 4])).as_slice().to_vec();
        let out = run(&mut r, &header, 14, 64).unwrap();
        assert_eq!(out, Header::made(0x02, PIECE, Some([0; 4])).as_slice());
        // Beyond max_frame, it goes on as it is: tungstenite refuses it from its header.
        let mut r = Reframer::new(1 << 20);
        assert_eq!(run(&mut r, &header, 14, 64).unwrap(), header);
    }

    #[test]
    fn a_frame_longer_than_allowed_waits_with_its_header() {
        let mut r = Reframer::new(1 << 20);
        let input = [frame(0x82, b"ok", None), frame(0x82, &[5; 300], None)].concat();
        let mut buf = [0u8; 1024];
        let mut out = ReadBuf::new(&mut buf);
        // The first goes on; the second's header is read and waits, its payload not taken.
        assert_eq!(r.feed(&input, &mut out, 100).unwrap(), 4 + 4);
        assert_eq!(out.filled(), frame(0x82, b"ok", None));
        assert!(r.waits());
        let mut out = ReadBuf::new(&mut buf);
        assert_eq!(r.feed(&input[8..], &mut out, u64::MAX).unwrap(), 300);
        assert_eq!(out.filled(), frame(0x82, &[5; 300], None));
        assert!(!r.waits());
        // The header's own bytes count: 100 may be read, a 6-byte header announces 98.
        let mut r = Reframer::new(1 << 20);
        let mut out = ReadBuf::new(&mut buf);
        assert_eq!(r.feed(&frame(0x82, &[1; 98], Some([0; 4])), &mut out, 100).unwrap(), 6);
        assert!(r.waits() && out.filled().is_empty());
    }

    #[test]
    fn a_long_control_frame_is_refused() {
        let mut r = Reframer::new(256 << 20);
        let header = Header::made(0x89, 100_000_000, Some([0; 4]));
        let e = run(&mut r, header.as_slice(), 14, 64).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("opcode 0x9"), "{e}");
    }

    #[test]
    fn a_header_cut_short_is_kept() {
        let mut r = Reframer::new(1 << 20);
        let out = run(&mut r, &[0x82, 0xfe, 0x01], 3, 64).unwrap();
        assert!(out.is_empty());
        assert_eq!(r.take_partial_header(), [0x82, 0xfe, 0x01]);
    }
}
