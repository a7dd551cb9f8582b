//! The user name a client certificate stands for: its subject as RFC 2253 text
//! (`use_subject_as_username`), as mosquitto prints it with OpenSSL's `XN_FLAG_RFC2253`, or
//! its Common Name (`use_identity_as_username`).
//!
//! Two certificates with different subjects must never read the same: the ACL would give
//! one the other's rights. So the special characters of a value are escaped (one Common Name
//! `alice,O=Org` reads `CN=alice\,O=Org`, not the `CN=alice,O=Org` of two attributes), the
//! attributes of one multi-valued RDN are joined by `+`, strings in the older encodings
//! (BMPString, UniversalString, T61String) are decoded, and a value of any other type is
//! written `#` and its DER in hexadecimal.
use std::fmt::Write;

use x509_parser::der_parser::asn1_rs::{Any, Tag};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// The subject in RFC 2253 form: the RDNs last first, joined by `,`; the attributes of an
/// RDN joined by `+`; each `NAME=value`, the value escaped.
pub fn rfc2253(subject: &X509Name<'_>) -> String {
    let rdns: Vec<String> =
        subject.iter_rdn().map(|rdn| rdn.iter().map(attribute).collect::<Vec<_>>().join("+")).collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// The Common Name, decoded; none when there is none, or when it holds a control character
/// (a NUL would end it early for a C reader, a line break would forge log lines).
pub fn common_name(subject: &X509Name<'_>) -> Option<String> {
    let attr = subject.iter_common_name().next()?;
    let text = decode(attr.attr_value())?;
    (!text.chars().any(char::is_control)).then_some(text)
}

fn attribute(attr: &AttributeTypeAndValue<'_>) -> String {
    let oid = attr.attr_type();
    let known = x509_parser::objects::oid2abbrev(oid, x509_parser::objects::oid_registry()).ok();
    let mut out = match known {
        Some(name) => name.to_owned(),
        None => oid.to_id_string(),
    };
    out.push('=');
    match decode(attr.attr_value()).filter(|_| known.is_some()) {
        Some(text) => escape(&text, &mut out),
        None => dump(attr.attr_value(), &mut out),
    }
    out
}

/// A string value as text: the string types X.509 names use, decoded (T61String read as
/// Latin-1, as OpenSSL reads it).
fn decode(value: &Any<'_>) -> Option<String> {
    let data = value.data;
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString | Tag::VisibleString => {
            std::str::from_utf8(data).ok().map(str::to_owned)
        }
        Tag::T61String => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            if !data.len().is_multiple_of(2) {
                return None;
            }
            let units = data.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units).collect::<Result<String, _>>().ok()
        }
        Tag::UniversalString => {
            if !data.len().is_multiple_of(4) {
                return None;
            }
            data.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

/// RFC 2253 section 2.4, as OpenSSL's `ASN1_STRFLGS_RFC2253` escapes: `,+"\<>;` with a
/// backslash, as `#` first and a space first or last; control characters and every byte of
/// a character beyond ASCII as `\XX`.
fn escape(text: &str, out: &mut String) {
    let last = text.chars().count().saturating_sub(1);
    for (i, c) in text.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            c if c.is_ascii_control() || !c.is_ascii() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\{b:02X}");
                }
            }
            c => out.push(c),
        }
    }
}

/// `#` and the value's DER in hexadecimal (RFC 2253 section 2.4).
fn dump(value: &Any<'_>, out: &mut String) {
    out.push('#');
    let tag = value.tag().0;
    let len = value.data.len();
    let mut der = Vec::with_capacity(len + 6);
    // A universal tag of one byte, as the string and simple types of names have.
    der.push(u8::try_from(tag).unwrap_or(0x1f) | if value.header.is_constructed() { 0x20 } else { 0 });
    if len < 0x80 {
        der.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        der.push(0x80 | (bytes.len() - skip) as u8);
        der.extend_from_slice(&bytes[skip..]);
    }
    der.extend_from_slice(value.data);
    for b in der {
        let _ = write!(out, "{b:02X}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, DnValue, KeyPair};

    fn subject_of(dn: DistinguishedName) -> (String, Option<String>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = dn;
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
        (rfc2253(parsed.subject()), common_name(parsed.subject()))
    }

    fn dn(attrs: &[(DnType, DnValue)]) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        for (t, v) in attrs {
            dn.push(t.clone(), v.clone());
        }
        dn
    }

    #[test]
    fn plain_names_read_as_openssl_prints_them() {
        let (s, cn) = subject_of(dn(&[
            (DnType::OrganizationName, DnValue::Utf8String("Org".into())),
            (DnType::CommonName, DnValue::Utf8String("alice".into())),
        ]));
        assert_eq!(s, "CN=alice,O=Org");
        assert_eq!(cn.as_deref(), Some("alice"));
    }

    #[test]
    fn a_value_cannot_pass_for_more_attributes() {
        let (one, _) = subject_of(dn(&[(DnType::CommonName, DnValue::Utf8String("alice,O=Org".into()))]));
        assert_eq!(one, "CN=alice\\,O=Org");
        let (two, _) = subject_of(dn(&[
            (DnType::OrganizationName, DnValue::Utf8String("Org".into())),
            (DnType::CommonName, DnValue::Utf8String("alice".into())),
        ]));
        assert_ne!(one, two);
        let (s, _) = subject_of(dn(&[(DnType::CommonName, DnValue::Utf8String("#a+b\"c\\d<e>f;g ".into()))]));
        assert_eq!(s, "CN=\\#a\\+b\\\"c\\\\d\\<e\\>f\\;g\\ ");
    }

    #[test]
    fn older_string_types_are_decoded() {
        let bmp = DnValue::BmpString("zed".try_into().unwrap());
        let (s, cn) = subject_of(dn(&[(DnType::CommonName, bmp)]));
        assert_eq!(s, "CN=zed");
        assert_eq!(cn.as_deref(), Some("zed"));
        let universal = DnValue::UniversalString("eve".try_into().unwrap());
        assert_eq!(subject_of(dn(&[(DnType::CommonName, universal)])).0, "CN=eve");
        let teletex = DnValue::TeletexString("joe".try_into().unwrap());
        assert_eq!(subject_of(dn(&[(DnType::CommonName, teletex)])).0, "CN=joe");
        let (s, _) = subject_of(dn(&[(DnType::CommonName, DnValue::Utf8String("jé".into()))]));
        assert_eq!(s, "CN=j\\C3\\A9");
    }

    #[test]
    fn control_characters_are_escaped_and_keep_a_common_name_out() {
        let (s, cn) = subject_of(dn(&[(DnType::CommonName, DnValue::Utf8String("a\nb\0".into()))]));
        assert_eq!(s, "CN=a\\0Ab\\00");
        assert_eq!(cn, None);
    }
}
