//! TLS alerts the server sent (RFC 8446 section 6.2, RFC 5246 section 7.2): a broker refuses
//! a client certificate (revoked, from an unknown CA, missing) with one. Named as OpenSSL
//! names them, since mosquitto's clients print OpenSSL's line for them with `-d`.
use std::fmt;

/// A fatal TLS alert received from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsAlert(u8);

/// Alert codes with their names in the RFCs and OpenSSL's reason names.
const ALERTS: &[(u8, &str, &str)] = &[
    (10, "unexpected message", "sslv3 alert unexpected message"),
    (20, "bad record mac", "sslv3 alert bad record mac"),
    (21, "decryption failed", "tlsv1 alert decryption failed"),
    (22, "record overflow", "tlsv1 alert record overflow"),
    (30, "decompression failure", "sslv3 alert decompression failure"),
    (40, "handshake failure", "sslv3 alert handshake failure"),
    (41, "no certificate", "sslv3 alert no certificate"),
    (42, "bad certificate", "sslv3 alert bad certificate"),
    (43, "unsupported certificate", "sslv3 alert unsupported certificate"),
    (44, "certificate revoked", "sslv3 alert certificate revoked"),
    (45, "certificate expired", "sslv3 alert certificate expired"),
    (46, "certificate unknown", "sslv3 alert certificate unknown"),
    (47, "illegal parameter", "sslv3 alert illegal parameter"),
    (48, "unknown ca", "tlsv1 alert unknown ca"),
    (49, "access denied", "tlsv1 alert access denied"),
    (50, "decode error", "tlsv1 alert decode error"),
    (51, "decrypt error", "tlsv1 alert decrypt error"),
    (60, "export restriction", "tlsv1 alert export restriction"),
    (70, "protocol version", "tlsv1 alert protocol version"),
    (71, "insufficient security", "tlsv1 alert insufficient security"),
    (80, "internal error", "tlsv1 alert internal error"),
    (86, "inappropriate fallback", "tlsv1 alert inappropriate fallback"),
    (90, "user canceled", "tlsv1 alert user cancelled"),
    (100, "no renegotiation", "tlsv1 alert no renegotiation"),
    (109, "missing extension", "tlsv13 alert missing extension"),
    (110, "unsupported extension", "tlsv1 unsupported extension"),
    (111, "certificate unobtainable", "tlsv1 certificate unobtainable"),
    (112, "unrecognized name", "tlsv1 unrecognized name"),
    (113, "bad certificate status response", "tlsv1 bad certificate status response"),
    (114, "bad certificate hash value", "tlsv1 bad certificate hash value"),
    (115, "unknown psk identity", "tlsv1 alert unknown psk identity"),
    (116, "certificate required", "tlsv13 alert certificate required"),
    (120, "no application protocol", "tlsv1 alert no application protocol"),
];

/// OpenSSL's reason numbers for received alerts: this offset plus the alert's code.
const OPENSSL_ALERT_REASON_OFFSET: u32 = 1000;
/// OpenSSL 3's library number for SSL routines (`ERR_LIB_SSL`), and where it sits in an
/// error code (`ERR_LIB_OFFSET`): the `0A` of `error:0A000414`.
const OPENSSL_LIB_SSL: u32 = 20;
const OPENSSL_LIB_OFFSET: u32 = 23;

impl TlsAlert {
    /// The alert with this code.
    pub fn from_code(code: u8) -> Self {
        TlsAlert(code)
    }

    /// The alert's code on the wire.
    pub fn code(self) -> u8 {
        self.0
    }

    fn entry(self) -> Option<&'static (u8, &'static str, &'static str)> {
        ALERTS.iter().find(|(c, _, _)| *c == self.0)
    }

    /// Its name: "certificate revoked".
    pub fn description(self) -> String {
        self.entry().map_or_else(|| format!("alert {}", self.0), |(_, name, _)| (*name).to_owned())
    }

    /// The line mosquitto's clients print with `-d` (OpenSSL's error queue):
    /// `OpenSSL Error[0]: error:0A000414:SSL routines::sslv3 alert certificate revoked`.
    pub fn openssl_line(self) -> String {
        let code =
            (OPENSSL_LIB_SSL << OPENSSL_LIB_OFFSET) | (OPENSSL_ALERT_REASON_OFFSET + u32::from(self.0));
        let reason =
            self.entry().map_or_else(|| format!("reason({})", 1000 + u32::from(self.0)), |e| e.2.to_owned());
        format!("OpenSSL Error[0]: error:{code:08X}:SSL routines::{reason}")
    }

    /// The alert in an I/O error from a TLS stream this crate opened, if the server sent one.
    pub fn from_io(e: &std::io::Error) -> Option<Self> {
        match e.get_ref()?.downcast_ref::<rustls::Error>()? {
            rustls::Error::AlertReceived(a) => Some(TlsAlert(u8::from(*a))),
            _ => None,
        }
    }
}

impl fmt::Display for TlsAlert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines mosquitto_pub 2.0.11 printed (OpenSSL 3) against a broker that refused.
    #[test]
    fn openssl_lines_as_mosquitto_prints_them() {
        assert_eq!(
            TlsAlert(44).openssl_line(),
            "OpenSSL Error[0]: error:0A000414:SSL routines::sslv3 alert certificate revoked"
        );
        assert_eq!(
            TlsAlert(116).openssl_line(),
            "OpenSSL Error[0]: error:0A00045C:SSL routines::tlsv13 alert certificate required"
        );
        assert_eq!(
            TlsAlert(51).openssl_line(),
            "OpenSSL Error[0]: error:0A00041B:SSL routines::tlsv1 alert decrypt error"
        );
        assert_eq!(TlsAlert(44).to_string(), "certificate revoked");
        assert_eq!(TlsAlert(48).to_string(), "unknown ca");
    }

    #[test]
    fn found_in_rustls_io_errors() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked),
        );
        assert_eq!(TlsAlert::from_io(&io), Some(TlsAlert(44)));
        let other = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(TlsAlert::from_io(&other), None);
    }
}
