//! `%J`'s reading of a payload: cJSON 1.7.15's parser, quirks included.
//!
//! Hand-written rather than serde_json, which refuses much of what cJSON takes (a UTF-8 BOM,
//! control bytes as white space, `1.`, `-.5`, `01`, strings that are not UTF-8), and whose
//! objects keep neither the order of keys nor repeated ones. What cJSON takes, mosquitto_sub
//! prints; what it refuses, it reports.
use super::json::Json;

/// cJSON's nesting limit.
const NESTING_LIMIT: usize = 1000;

/// `%J`'s test: cJSON_ParseWithOpts on the payload as a C string, requiring it to end the
/// payload (so a payload with a NUL never passes).
pub(super) fn parse_json(payload: &[u8]) -> Option<Json> {
    if payload.contains(&0) {
        return None;
    }
    let mut buf = Vec::with_capacity(payload.len() + 1);
    buf.extend_from_slice(payload);
    buf.push(0);
    let mut p = Parser { buf: &buf, off: 0, depth: 0 };
    if p.can_access(4) && buf.starts_with(b"\xEF\xBB\xBF") {
        p.off = 3;
    }
    p.skip_whitespace();
    let v = p.value()?;
    p.skip_whitespace();
    if p.off >= buf.len() || buf[p.off] != 0 {
        return None;
    }
    Some(v)
}

/// cJSON's parse buffer: the payload and its terminating NUL.
struct Parser<'a> {
    buf: &'a [u8],
    off: usize,
    depth: usize,
}

impl Parser<'_> {
    fn can_access(&self, i: usize) -> bool {
        self.off + i < self.buf.len()
    }

    fn can_read(&self, n: usize) -> bool {
        self.off + n <= self.buf.len()
    }

    fn at(&self) -> u8 {
        self.buf[self.off]
    }

    /// Skips every byte up to 0x20, NUL included, then backs up onto the last byte if that
    /// reached the end.
    fn skip_whitespace(&mut self) {
        if !self.can_access(0) {
            return;
        }
        while self.can_access(0) && self.at() <= 32 {
            self.off += 1;
        }
        if self.off == self.buf.len() {
            self.off -= 1;
        }
    }

    fn value(&mut self) -> Option<Json> {
        let rest = &self.buf[self.off..];
        if self.can_read(4) && rest.starts_with(b"null") {
            self.off += 4;
            return Some(Json::Null);
        }
        if self.can_read(5) && rest.starts_with(b"false") {
            self.off += 5;
            return Some(Json::False);
        }
        if self.can_read(4) && rest.starts_with(b"true") {
            self.off += 4;
            return Some(Json::True);
        }
        if !self.can_access(0) {
            return None;
        }
        match self.at() {
            b'"' => self.string().map(Json::String),
            b'-' | b'0'..=b'9' => self.number(),
            b'[' => self.array(),
            b'{' => self.object(),
            _ => None,
        }
    }

    fn string(&mut self) -> Option<Vec<u8>> {
        let buf = self.buf;
        if buf[self.off] != b'"' {
            return None;
        }
        let mut end = self.off + 1;
        while end < buf.len() && buf[end] != b'"' {
            if buf[end] == b'\\' {
                if end + 1 >= buf.len() {
                    return None;
                }
                end += 1;
            }
            end += 1;
        }
        if end >= buf.len() || buf[end] != b'"' {
            return None;
        }
        let mut out = Vec::with_capacity(end - self.off);
        let mut p = self.off + 1;
        while p < end {
            if buf[p] != b'\\' {
                out.push(buf[p]);
                p += 1;
                continue;
            }
            let mut len = 2;
            match buf[p + 1] {
                b'b' => out.push(0x08),
                b'f' => out.push(0x0c),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                c @ (b'"' | b'\\' | b'/') => out.push(c),
                b'u' => len = utf16_literal(&buf[p..end], &mut out)?,
                _ => return None,
            }
            p += len;
        }
        self.off = end + 1;
        Some(out)
    }

    /// strtod on the longest run of number characters.
    fn number(&mut self) -> Option<Json> {
        let rest = &self.buf[self.off..];
        let run =
            rest.iter().take_while(|c| matches!(c, b'0'..=b'9' | b'+' | b'-' | b'e' | b'E' | b'.')).count();
        let (value, used) = strtod(&rest[..run])?;
        self.off += used;
        Some(Json::Number(value))
    }

    fn array(&mut self) -> Option<Json> {
        if self.depth >= NESTING_LIMIT {
            return None;
        }
        self.depth += 1;
        let mut items = Vec::new();
        self.off += 1;
        self.skip_whitespace();
        if !(self.can_access(0) && self.at() == b']') {
            if !self.can_access(0) {
                return None;
            }
            self.off -= 1;
            loop {
                self.off += 1;
                self.skip_whitespace();
                items.push(self.value()?);
                self.skip_whitespace();
                if !(self.can_access(0) && self.at() == b',') {
                    break;
                }
            }
            if !self.can_access(0) || self.at() != b']' {
                return None;
            }
        }
        self.depth -= 1;
        self.off += 1;
        Some(Json::Array(items))
    }

    fn object(&mut self) -> Option<Json> {
        if self.depth >= NESTING_LIMIT {
            return None;
        }
        self.depth += 1;
        let mut pairs = Vec::new();
        self.off += 1;
        self.skip_whitespace();
        if !(self.can_access(0) && self.at() == b'}') {
            if !self.can_access(0) {
                return None;
            }
            self.off -= 1;
            loop {
                self.off += 1;
                self.skip_whitespace();
                if !self.can_access(0) {
                    return None;
                }
                let k = self.string()?;
                self.skip_whitespace();
                if !self.can_access(0) || self.at() != b':' {
                    return None;
                }
                self.off += 1;
                self.skip_whitespace();
                let v = self.value()?;
                pairs.push((k, v));
                self.skip_whitespace();
                if !(self.can_access(0) && self.at() == b',') {
                    break;
                }
            }
            if !self.can_access(0) || self.at() != b'}' {
                return None;
            }
        }
        self.depth -= 1;
        self.off += 1;
        Some(Json::Object(pairs))
    }
}

/// cJSON's parse_hex4: an invalid digit makes the whole value 0 (u32::from_str_radix would
/// fail instead, and take a sign).
fn hex4(b: &[u8]) -> u32 {
    let mut h = 0;
    for &c in &b[..4] {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return 0,
        };
        h = h << 4 | u32::from(d);
    }
    h
}

/// A `\uXXXX` escape, or a surrogate pair of them, at the start of `s` (which ends where the
/// string does) as UTF-8; returns how many bytes it took.
fn utf16_literal(s: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    if s.len() < 6 {
        return None;
    }
    let first = hex4(&s[2..]);
    if (0xDC00..=0xDFFF).contains(&first) {
        return None;
    }
    let (code, len) = if (0xD800..=0xDBFF).contains(&first) {
        let second = &s[6..];
        if second.len() < 6 || second[0] != b'\\' || second[1] != b'u' {
            return None;
        }
        let low = hex4(&second[2..]);
        if !(0xDC00..=0xDFFF).contains(&low) {
            return None;
        }
        (0x10000 + (((first & 0x3FF) << 10) | (low & 0x3FF)), 12)
    } else {
        (first, 6)
    };
    // Never a surrogate here, and 0 gives a NUL byte, as in cJSON.
    let c = char::from_u32(code)?;
    let mut tmp = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
    Some(len)
}

/// C's strtod on `s` (digits, signs, exponents and points only): the value of the longest
/// prefix that is a decimal number, and its length. `str::parse` does the conversion, but
/// only of a whole string: finding the prefix is strtod's part.
fn strtod(s: &[u8]) -> Option<(f64, usize)> {
    let digits = |from: usize| s[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut i = 0;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        i += 1;
    }
    let int_digits = digits(i);
    i += int_digits;
    if i < s.len() && s[i] == b'.' {
        let frac_digits = digits(i + 1);
        if int_digits > 0 || frac_digits > 0 {
            i += 1 + frac_digits;
        } else {
            return None;
        }
    } else if int_digits == 0 {
        return None;
    }
    if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
        let mut j = i + 1;
        if j < s.len() && (s[j] == b'+' || s[j] == b'-') {
            j += 1;
        }
        let exp_digits = digits(j);
        if exp_digits > 0 {
            i = j + exp_digits;
        }
    }
    let text = std::str::from_utf8(&s[..i]).ok()?;
    Some((text.parse().ok()?, i))
}

#[cfg(test)]
mod tests {
    use super::super::json::{format_number, print_json};
    use super::*;

    /// cJSON's nesting limit: mosquitto_sub printed a payload of 1000 nested arrays (or
    /// objects) and refused 1001 (captured with `-F %J`).
    #[test]
    fn json_nesting_limit() {
        let arrays = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse_json(arrays(1000).as_bytes()).is_some());
        assert!(parse_json(arrays(1001).as_bytes()).is_none());
        let objects = format!("{}1{}", "{\"a\":".repeat(999), "}".repeat(999));
        let mut out = Vec::new();
        print_json(&parse_json(objects.as_bytes()).expect("999 objects"), false, &mut out);
        assert_eq!(out, objects.as_bytes());
        // Numbers of any length (Debian's cJSON has no 63-character limit).
        let long = "1".repeat(200);
        assert_eq!(
            format_number(match parse_json(long.as_bytes()) {
                Some(Json::Number(d)) => d,
                other => panic!("{other:?}"),
            }),
            "1.1111111111111111e+199"
        );
    }
}
