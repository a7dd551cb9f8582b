//! TLS handshakes, read only as far as an eavesdropper can: the ClientHello's server name
//! (SNI), offered versions and ALPN protocols, and the ServerHello's chosen version. Nothing
//! after the hellos is read: in TLS 1.3 the rest of the handshake is encrypted.
//!
//! Hand-written rather than tls-parser: two messages and three extensions are read, with
//! bounds-checked slices, where the crate would bring nom 7, two derive macros and a phf build
//! step; handshake messages split over records are joined here either way.
//!
//! References: RFC 8446 sections 4 (handshake message header), 4.1.2 (ClientHello), 4.1.3
//! (ServerHello, HelloRetryRequest), 4.2 (extensions), 4.2.1 (supported_versions) and 5.1
//! (record layer); RFC 6066 section 3 (server_name); RFC 7301 section 3.1 (ALPN).

/// Record content type of handshake records (RFC 8446, section 5.1).
const HANDSHAKE: u8 = 22;
/// The largest plaintext fragment (2^14) and the slack a record may carry beyond it.
const MAX_RECORD: usize = (1 << 14) + 2048;
/// Handshake message types.
const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
/// Extension types.
const SERVER_NAME: u16 = 0;
const ALPN: u16 = 16;
const SUPPORTED_VERSIONS: u16 = 43;
/// The ServerHello.random of a HelloRetryRequest: SHA-256 of "HelloRetryRequest" (4.1.3).
const HELLO_RETRY_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91, 0xc2,
    0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// Whether a stream starting with `first` is TLS: a handshake record of SSL 3.0 to TLS 1.3
/// (RFC 8446, section 5.1: legacy_record_version 0x0301 or 0x0303; older stacks use 0x0300
/// and 0x0302). `None` while fewer than three bytes are known.
pub fn starts_tls(first: &[u8]) -> Option<bool> {
    match *first {
        [] | [HANDSHAKE] | [HANDSHAKE, 3] => None,
        [HANDSHAKE, major, minor, ..] => Some(major == 3 && minor <= 4),
        _ => Some(false),
    }
}

/// The protocol name of a TLS version number.
pub fn version_name(v: u16) -> String {
    match v {
        0x0300 => "SSL 3.0".into(),
        0x0301 => "TLS 1.0".into(),
        0x0302 => "TLS 1.1".into(),
        0x0303 => "TLS 1.2".into(),
        0x0304 => "TLS 1.3".into(),
        // GREASE values (RFC 8701) and anything else, as a number.
        other => format!("0x{other:04x}"),
    }
}

/// What a ClientHello tells.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// The host name of the server_name extension.
    pub sni: Option<String>,
    /// legacy_version.
    pub legacy_version: u16,
    /// The supported_versions extension, in the client's order (GREASE values left out).
    pub versions: Vec<u16>,
    /// ALPN protocol names.
    pub alpn: Vec<String>,
}

/// What a ServerHello tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello {
    /// The negotiated version: supported_versions when present (TLS 1.3), else legacy_version.
    pub version: u16,
    /// A HelloRetryRequest (the real ServerHello follows).
    pub retry: bool,
}

/// A hello read from one direction of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// From the client.
    Client(ClientHello),
    /// From the server.
    Server(ServerHello),
}

/// Reads one direction of a TLS stream until its hello.
#[derive(Debug, Default)]
pub struct HelloReader {
    /// Stream bytes not yet split into records.
    records: Vec<u8>,
    /// Handshake bytes from records, not yet split into messages.
    handshake: Vec<u8>,
    done: bool,
}

impl HelloReader {
    /// Takes the next bytes of the stream; returns the hellos they complete. Stops reading at
    /// the first record that is not a handshake record, or after the hello.
    pub fn push(&mut self, data: &[u8]) -> Vec<Hello> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.records.extend_from_slice(data);
        while !self.done && self.records.len() >= 5 {
            let len = usize::from(u16::from_be_bytes([self.records[3], self.records[4]]));
            if self.records[0] != HANDSHAKE || len > MAX_RECORD {
                self.finish();
                break;
            }
            if self.records.len() < 5 + len {
                break;
            }
            self.handshake.extend_from_slice(&self.records[5..5 + len]);
            self.records.drain(..5 + len);
            self.messages(&mut out);
        }
        out
    }

    /// Whether reading is over.
    pub fn done(&self) -> bool {
        self.done
    }

    fn finish(&mut self) {
        self.done = true;
        self.records = Vec::new();
        self.handshake = Vec::new();
    }

    fn messages(&mut self, out: &mut Vec<Hello>) {
        while self.handshake.len() >= 4 {
            let h = &self.handshake;
            let len = usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]);
            if h.len() < 4 + len {
                if len > 1 << 20 {
                    self.finish(); // no hello is that large
                }
                return;
            }
            let body = &h[4..4 + len];
            let hello = match h[0] {
                CLIENT_HELLO => parse_client_hello(body).map(Hello::Client),
                SERVER_HELLO => parse_server_hello(body).map(Hello::Server),
                _ => None,
            };
            self.handshake.drain(..4 + len);
            match hello {
                Some(Hello::Server(s)) if s.retry => out.push(Hello::Server(s)),
                Some(hello) => {
                    out.push(hello);
                    self.finish();
                    return;
                }
                None => {
                    self.finish();
                    return;
                }
            }
        }
    }
}

/// A bounds-checked reader over a message body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// GREASE values (RFC 8701): 0x?a?a, sent to keep peers tolerant, never chosen.
fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// Each extension: (type, data).
fn extensions(r: &mut Reader<'_>) -> Option<Vec<(u16, Vec<u8>)>> {
    // Extensions may be absent altogether before TLS 1.3 (RFC 5246, section 7.4.1.2).
    if r.is_empty() {
        return Some(Vec::new());
    }
    let mut list = Reader(r.vec16()?);
    let mut out = Vec::new();
    while !list.is_empty() {
        let t = list.u16()?;
        out.push((t, list.vec16()?.to_vec()));
    }
    Some(out)
}

fn parse_client_hello(body: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(body);
    let legacy_version = r.u16()?;
    r.take(32)?; // random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    let mut hello = ClientHello { legacy_version, ..ClientHello::default() };
    for (t, data) in extensions(&mut r)? {
        let mut e = Reader(&data);
        match t {
            SERVER_NAME => {
                let mut names = Reader(e.vec16()?);
                while !names.is_empty() {
                    let kind = names.u8()?;
                    let name = names.vec16()?;
                    if kind == 0 && hello.sni.is_none() {
                        hello.sni = Some(String::from_utf8_lossy(name).into_owned());
                    }
                }
            }
            SUPPORTED_VERSIONS => {
                let mut list = Reader(e.vec8()?);
                while !list.is_empty() {
                    let v = list.u16()?;
                    if !is_grease(v) {
                        hello.versions.push(v);
                    }
                }
            }
            ALPN => {
                let mut list = Reader(e.vec16()?);
                while !list.is_empty() {
                    hello.alpn.push(String::from_utf8_lossy(list.vec8()?).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

fn parse_server_hello(body: &[u8]) -> Option<ServerHello> {
    let mut r = Reader(body);
    let legacy_version = r.u16()?;
    let random = r.take(32)?;
    r.vec8()?; // legacy_session_id_echo
    r.u16()?; // cipher_suite
    r.u8()?; // legacy_compression_method
    let mut version = legacy_version;
    for (t, data) in extensions(&mut r)? {
        if t == SUPPORTED_VERSIONS {
            version = Reader(&data).u16()?;
        }
    }
    Some(ServerHello { version, retry: random == HELLO_RETRY_RANDOM })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn ext(t: u16, data: &[u8]) -> Vec<u8> {
        [&t.to_be_bytes()[..], &(data.len() as u16).to_be_bytes(), data].concat()
    }

    fn vec16(data: &[u8]) -> Vec<u8> {
        [&(data.len() as u16).to_be_bytes()[..], data].concat()
    }

    fn handshake(t: u8, body: &[u8]) -> Vec<u8> {
        let n = body.len() as u32;
        [&[t][..], &n.to_be_bytes()[1..], body].concat()
    }

    fn record(fragment: &[u8]) -> Vec<u8> {
        [&[HANDSHAKE, 3, 1][..], &(fragment.len() as u16).to_be_bytes(), fragment].concat()
    }

    /// A ClientHello record for `sni` offering TLS 1.3 and 1.2 (and a GREASE value).
    pub(crate) fn client_hello(sni: &str) -> Vec<u8> {
        let name = [&[0u8][..], &vec16(sni.as_bytes())].concat();
        let exts = [
            ext(SERVER_NAME, &vec16(&name)),
            ext(SUPPORTED_VERSIONS, &[6, 0x7a, 0x7a, 3, 4, 3, 3]),
            ext(ALPN, &vec16(&[4, b'm', b'q', b't', b't'])),
        ]
        .concat();
        let body = [&[3, 3][..], &[7; 32], &[0], &vec16(&[0x13, 0x01]), &[1, 0], &vec16(&exts)].concat();
        record(&handshake(CLIENT_HELLO, &body))
    }

    /// A ServerHello record choosing `version` through supported_versions.
    pub(crate) fn server_hello(version: u16, random: [u8; 32]) -> Vec<u8> {
        let exts = ext(SUPPORTED_VERSIONS, &version.to_be_bytes());
        let body = [&[3, 3][..], &random, &[0], &[0x13, 0x01], &[0], &vec16(&exts)].concat();
        record(&handshake(SERVER_HELLO, &body))
    }

    #[test]
    fn client_hello_gives_sni_versions_and_alpn() {
        let mut r = HelloReader::default();
        let bytes = client_hello("localhost");
        assert!(r.push(&bytes[..7]).is_empty());
        let hellos = r.push(&bytes[7..]);
        assert_eq!(
            hellos,
            vec![Hello::Client(ClientHello {
                sni: Some("localhost".into()),
                legacy_version: 0x0303,
                versions: vec![0x0304, 0x0303],
                alpn: vec!["mqtt".into()],
            })]
        );
        assert!(r.done());
    }

    #[test]
    fn a_hello_split_over_records_is_joined() {
        let whole = client_hello("broker.example");
        let message = &whole[5..];
        let split = [record(&message[..10]), record(&message[10..])].concat();
        let hellos = HelloReader::default().push(&split);
        assert!(matches!(&hellos[..], [Hello::Client(c)] if c.sni.as_deref() == Some("broker.example")));
    }

    #[test]
    fn server_hello_version_comes_from_supported_versions() {
        let mut r = HelloReader::default();
        let retry = server_hello(0x0304, HELLO_RETRY_RANDOM);
        let real = server_hello(0x0304, [1; 32]);
        let hellos = r.push(&[retry, real].concat());
        assert_eq!(
            hellos,
            vec![
                Hello::Server(ServerHello { version: 0x0304, retry: true }),
                Hello::Server(ServerHello { version: 0x0304, retry: false })
            ]
        );
        assert_eq!(version_name(0x0304), "TLS 1.3");
        assert_eq!(version_name(0x0303), "TLS 1.2");
    }

    #[test]
    fn tls_starts_are_recognised() {
        assert_eq!(starts_tls(&[]), None);
        assert_eq!(starts_tls(&[0x16]), None);
        assert_eq!(starts_tls(&[0x16, 3]), None);
        assert_eq!(starts_tls(&[0x16, 3, 1, 0, 5]), Some(true));
        assert_eq!(starts_tls(&[0x16, 4]), Some(false));
        assert_eq!(starts_tls(&[0x10, 0x20]), Some(false));
    }

    #[test]
    fn garbage_never_panics_and_ends_reading() {
        let hello = client_hello("x");
        for cut in 0..hello.len() {
            let mut damaged = hello.clone();
            damaged[cut] ^= 0xff;
            let mut r = HelloReader::default();
            let _ = r.push(&damaged);
            let _ = r.push(&damaged);
        }
        let mut r = HelloReader::default();
        assert!(r.push(&[23, 3, 3, 0, 1, 0]).is_empty());
        assert!(r.done());
    }
}
