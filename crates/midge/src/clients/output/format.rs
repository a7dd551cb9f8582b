//! mosquitto_sub's `-F` language: `%` fields with printf's flags, width and precision, `@`
//! time conversions and `\` escapes. Checked once when the options are read, as mosquitto_sub
//! does, so that a bad format is refused before connecting.
use thiserror::Error;

/// A parsed `-F` format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub(super) tokens: Vec<Token>,
    /// Whether any part prints the time: only then is the local time zone looked up.
    pub(super) needs_time: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Token {
    /// Plain text and `\` escapes, printed as they are.
    Literal(Vec<u8>),
    /// A `%` sequence.
    Field(Spec),
    /// `@X`: strftime's `%X`.
    Time(u8),
    /// `@N`: nanoseconds within the second.
    Nanos,
}

/// One `%` sequence: `%[-][0][width][.precision]conversion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Spec {
    pub(super) conv: u8,
    pub(super) left: bool,
    pub(super) zero: bool,
    pub(super) width: usize,
    pub(super) precision: Option<usize>,
}

/// mosquitto accepts any width; a width this large would only exhaust memory, so it is capped.
const MAX_WIDTH: usize = 1 << 20;

/// The `%` conversions mosquitto_sub accepts.
const CONVERSIONS: &[u8] = b"%ACDEFIlmPpqRSrtjJUxX";

impl Format {
    /// Parses a `-F` string, refusing what mosquitto_sub refuses (see [`FormatError`]).
    pub fn parse(s: &str) -> Result<Format, FormatError> {
        let b = s.as_bytes();
        check(b)?;
        let tokens = tokenize(b);
        let needs_time = tokens.iter().any(|t| match t {
            Token::Time(_) | Token::Nanos => true,
            Token::Field(spec) => matches!(spec.conv, b'I' | b'U' | b'j' | b'J'),
            Token::Literal(_) => false,
        });
        Ok(Format { tokens, needs_time })
    }
}

/// Why mosquitto_sub refuses a `-F` string: its message less the leading `Error: ` (it prints
/// `Error: Invalid format specifier 'z'.`, a blank line, then
/// `Use 'mosquitto_sub --help' to see usage.`), so that the caller words the usage failure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FormatError {
    #[error("Incomplete format specifier.")]
    IncompleteFormat,
    #[error("Invalid format specifier '{0}'.")]
    InvalidFormat(char),
    #[error("Incomplete escape specifier.")]
    IncompleteEscape,
    #[error("Invalid escape specifier '{0}'.")]
    InvalidEscape(char),
}

/// The byte as mosquitto prints it with `%c`: a byte of a multi-byte character cannot be put
/// in a `String` alone, so those show as the replacement character.
fn shown(c: u8) -> char {
    if c.is_ascii() {
        c as char
    } else {
        char::REPLACEMENT_CHARACTER
    }
}

/// mosquitto_sub's check of `-F` (client_shared.c), done once when the options are read.
fn check(b: &[u8]) -> Result<(), FormatError> {
    use FormatError::*;
    let len = b.len();
    let mut i = 0;
    while i < len {
        match b[i] {
            b'%' => {
                if i == len - 1 {
                    return Err(IncompleteFormat);
                }
                if b[i + 1] == b'0' || b[i + 1] == b'-' {
                    i += 1;
                    if i == len - 1 {
                        return Err(IncompleteFormat);
                    }
                }
                while b[i + 1].is_ascii_digit() {
                    i += 1;
                    if i == len - 1 {
                        return Err(IncompleteFormat);
                    }
                }
                if b[i + 1] == b'.' {
                    i += 1;
                    if i == len - 1 {
                        return Err(IncompleteFormat);
                    }
                    while b[i + 1].is_ascii_digit() {
                        i += 1;
                        if i == len - 1 {
                            return Err(IncompleteFormat);
                        }
                    }
                }
                if !CONVERSIONS.contains(&b[i + 1]) {
                    return Err(InvalidFormat(shown(b[i + 1])));
                }
                i += 1;
            }
            b'@' => {
                if i == len - 1 {
                    return Err(IncompleteFormat);
                }
                i += 1;
            }
            b'\\' => {
                if i == len - 1 {
                    return Err(IncompleteEscape);
                }
                if !b"\\0aenrtv".contains(&b[i + 1]) {
                    return Err(InvalidEscape(shown(b[i + 1])));
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Splits a checked format the way mosquitto_sub's printer reads it (sub_client_output.c).
fn tokenize(b: &[u8]) -> Vec<Token> {
    let len = b.len();
    let mut tokens = Vec::new();
    let mut lit = Vec::new();
    let flush = |lit: &mut Vec<u8>, tokens: &mut Vec<Token>| {
        if !lit.is_empty() {
            tokens.push(Token::Literal(std::mem::take(lit)));
        }
    };
    let mut i = 0;
    while i < len {
        match b[i] {
            b'%' if i + 1 < len => {
                i += 1;
                let mut spec = Spec { conv: 0, left: false, zero: false, width: 0, precision: None };
                if b[i] == b'-' {
                    spec.left = true;
                    if i < len - 1 {
                        i += 1;
                    }
                }
                // "%-05t" gets both flags; a left-aligned field is padded with spaces anyway
                // (except an absent number, padded with the pad character: see `blank`).
                if b[i] == b'0' {
                    spec.zero = true;
                    if i < len - 1 {
                        i += 1;
                    }
                }
                while i < len - 1 && b[i].is_ascii_digit() {
                    spec.width = (spec.width * 10 + usize::from(b[i] - b'0')).min(MAX_WIDTH);
                    i += 1;
                }
                if b[i] == b'.' && i < len - 1 {
                    i += 1;
                    let mut p = 0usize;
                    while i < len - 1 && b[i].is_ascii_digit() {
                        p = (p * 10 + usize::from(b[i] - b'0')).min(MAX_WIDTH);
                        i += 1;
                    }
                    spec.precision = Some(p);
                }
                spec.conv = b[i];
                if spec.conv == b'%' {
                    lit.push(b'%');
                } else if CONVERSIONS.contains(&spec.conv) {
                    flush(&mut lit, &mut tokens);
                    tokens.push(Token::Field(spec));
                }
            }
            b'@' if i + 1 < len => {
                i += 1;
                match b[i] {
                    b'@' => lit.push(b'@'),
                    c => {
                        flush(&mut lit, &mut tokens);
                        tokens.push(if c == b'N' { Token::Nanos } else { Token::Time(c) });
                    }
                }
            }
            b'\\' if i + 1 < len => {
                i += 1;
                match b[i] {
                    b'\\' => lit.push(b'\\'),
                    b'0' => lit.push(0),
                    b'a' => lit.push(0x07),
                    b'e' => lit.push(0x1b),
                    b'n' => lit.push(b'\n'),
                    b'r' => lit.push(b'\r'),
                    b't' => lit.push(b'\t'),
                    b'v' => lit.push(0x0b),
                    _ => {}
                }
            }
            // A lone '%', '@' or '\' at the end prints nothing (the check refuses them anyway).
            b'%' | b'@' | b'\\' => {}
            c => lit.push(c),
        }
        i += 1;
    }
    flush(&mut lit, &mut tokens);
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `-F` strings mosquitto_sub 2.0.11 refuses, with its message (captured with
    /// `mosquitto_sub -t x -F FORMAT`; it prints `Error: ` before it).
    #[test]
    fn refuses_formats_as_mosquitto_sub_does() {
        let cases: &[(&str, &str)] = &[
            ("%", "Incomplete format specifier."),
            ("a%", "Incomplete format specifier."),
            ("a%-", "Incomplete format specifier."),
            ("a%0", "Incomplete format specifier."),
            ("a%5", "Incomplete format specifier."),
            ("a%.", "Incomplete format specifier."),
            ("a%05", "Incomplete format specifier."),
            ("a%-0", "Incomplete format specifier."),
            ("a%.5", "Incomplete format specifier."),
            ("a%5.", "Incomplete format specifier."),
            ("%t%", "Incomplete format specifier."),
            ("%z", "Invalid format specifier 'z'."),
            ("a%%|%z", "Invalid format specifier 'z'."),
            ("%-z", "Invalid format specifier 'z'."),
            ("%0-5t", "Invalid format specifier '-'."),
            ("%--t", "Invalid format specifier '-'."),
            ("%-00-t", "Invalid format specifier '-'."),
            ("%.5-t", "Invalid format specifier '-'."),
            ("%@s", "Invalid format specifier '@'."),
            ("%5.5.5t", "Invalid format specifier '.'."),
            ("%\\", "Invalid format specifier '\\'."),
            ("@", "Incomplete format specifier."),
            ("x@", "Incomplete format specifier."),
            ("\\", "Incomplete escape specifier."),
            ("a\\", "Incomplete escape specifier."),
            ("\\q", "Invalid escape specifier 'q'."),
            ("\\N", "Invalid escape specifier 'N'."),
            ("\\%", "Invalid escape specifier '%'."),
        ];
        for (f, e) in cases {
            assert_eq!(Format::parse(f).map_err(|e| e.to_string()), Err(e.to_string()), "format {f:?}");
        }
        // mosquitto prints the first byte of a multi-byte character; a String cannot hold it.
        assert_eq!(Format::parse("%\u{e9}"), Err(FormatError::InvalidFormat('\u{fffd}')));
        for ok in [
            "",
            "%%",
            "@@",
            "@x",
            "%-05t",
            "%-010.3t",
            "%00t",
            "%.t",
            "\\0\\a\\e\\n\\r\\t\\v\\\\",
            "%I%U%j%J",
        ] {
            assert!(Format::parse(ok).is_ok(), "format {ok:?}");
        }
    }
}
