//! The JSON that `%j` and `%J` print, as cJSON 1.7.15 builds and prints it.
//!
//! Hand-written rather than serde_json: cJSON prints numbers with `%1.15g` (or `%1.17g` when
//! that does not read back), strings as bytes that need not be UTF-8, cut at a NUL, keys in
//! the order given and repeated if they were, and `--pretty` with tabs. serde_json does none
//! of these.
use midge_codec::{Properties, Property, Publish};

use super::json_parse::parse_json;
use super::time::LocalTime;
use super::{c_str, pad};

/// A cJSON value. Strings are bytes: cJSON neither checks nor changes their encoding, and stops
/// at a NUL when printing them.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Json {
    Null,
    False,
    True,
    Number(f64),
    String(Vec<u8>),
    Array(Vec<Json>),
    Object(Vec<(Vec<u8>, Json)>),
}

fn num(v: impl Into<f64>) -> Json {
    Json::Number(v.into())
}

fn key(k: &str) -> Vec<u8> {
    k.as_bytes().to_vec()
}

/// The object `%j` (`escaped`) or `%J` prints; `None` when `%J` finds no JSON in the payload.
pub(super) fn json_message(msg: &Publish, props: &Properties, t: &LocalTime, escaped: bool) -> Option<Json> {
    let mut root = vec![
        (key("tst"), Json::String(t.json_timestamp().into_bytes())),
        (key("topic"), Json::String(msg.topic.as_bytes().to_vec())),
        (key("qos"), num(msg.qos.as_u8())),
        (key("retain"), num(u8::from(msg.retain))),
        (key("payloadlen"), num(msg.payload.len() as u32)),
    ];
    if msg.qos.as_u8() > 0 {
        root.push((key("mid"), num(msg.packet_id)));
    }
    if !props.is_empty() {
        root.push((key("properties"), json_properties(props)));
    }
    let payload = if msg.payload.is_empty() {
        Json::Null
    } else if escaped {
        Json::String(msg.payload.to_vec())
    } else {
        parse_json(&msg.payload)?
    };
    root.push((key("payload"), payload));
    Some(Json::Object(root))
}

/// The `properties` object, in the order the properties came.
fn json_properties(props: &Properties) -> Json {
    let mut obj: Vec<(Vec<u8>, Json)> = Vec::new();
    let mut user: Option<usize> = None;
    // mosquitto reads the Topic Alias with the wrong property identifier, which fails and
    // leaves the 16-bit variable it prints as it was: 0, or the length of the Correlation Data
    // read before it.
    let mut last_u16: u16 = 0;
    for p in props.iter() {
        let (name, value) = match p {
            Property::PayloadFormatIndicator(v) => ("payload-format-indicator", num(*v)),
            Property::MessageExpiryInterval(v) => ("message-expiry-interval", num(*v)),
            Property::ContentType(v) => ("content-type", Json::String(v.as_bytes().to_vec())),
            Property::ResponseTopic(v) => ("response-topic", Json::String(v.as_bytes().to_vec())),
            Property::CorrelationData(v) => {
                last_u16 = v.len() as u16;
                ("correlation-data", Json::String(v.to_vec()))
            }
            Property::SubscriptionIdentifier(v) => ("subscription-identifier", num(*v)),
            Property::TopicAlias(_) => ("topic-alias", num(last_u16)),
            Property::UserProperty(k, v) => {
                let i = *user.get_or_insert_with(|| {
                    obj.push((key("user-properties"), Json::Object(Vec::new())));
                    obj.len() - 1
                });
                if let Json::Object(pairs) = &mut obj[i].1 {
                    pairs.push((k.as_bytes().to_vec(), Json::String(v.as_bytes().to_vec())));
                }
                continue;
            }
            _ => continue,
        };
        obj.push((key(name), value));
    }
    Json::Object(obj)
}

/// cJSON_Print (pretty) or cJSON_PrintUnformatted.
pub(super) fn print_json(v: &Json, pretty: bool, out: &mut Vec<u8>) {
    let mut depth = 0usize;
    print_value(v, pretty, &mut depth, out);
}

fn print_value(v: &Json, pretty: bool, depth: &mut usize, out: &mut Vec<u8>) {
    match v {
        Json::Null => out.extend_from_slice(b"null"),
        Json::False => out.extend_from_slice(b"false"),
        Json::True => out.extend_from_slice(b"true"),
        Json::Number(d) => out.extend_from_slice(format_number(*d).as_bytes()),
        Json::String(s) => print_string(s, out),
        Json::Array(items) => {
            out.push(b'[');
            *depth += 1;
            for (i, item) in items.iter().enumerate() {
                print_value(item, pretty, depth, out);
                if i + 1 < items.len() {
                    out.push(b',');
                    if pretty {
                        out.push(b' ');
                    }
                }
            }
            out.push(b']');
            *depth -= 1;
        }
        Json::Object(pairs) => {
            out.push(b'{');
            *depth += 1;
            if pretty {
                out.push(b'\n');
            }
            for (i, (k, item)) in pairs.iter().enumerate() {
                if pretty {
                    pad(out, b'\t', *depth);
                }
                print_string(k, out);
                out.push(b':');
                if pretty {
                    out.push(b'\t');
                }
                print_value(item, pretty, depth, out);
                if i + 1 < pairs.len() {
                    out.push(b',');
                }
                if pretty {
                    out.push(b'\n');
                }
            }
            if pretty {
                pad(out, b'\t', *depth - 1);
            }
            out.push(b'}');
            *depth -= 1;
        }
    }
}

/// A cJSON string: up to the first NUL; `"` `\` and bytes below 0x20 escaped, the rest as is.
/// (serde_json escapes the same bytes, but only in a `str`, and these bytes need not be UTF-8.)
fn print_string(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &c in c_str(s) {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c if c < 0x20 => out.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
            c => out.push(c),
        }
    }
    out.push(b'"');
}

/// cJSON's number printing: `null` for NaN and infinities, else `%1.15g` when it reads back
/// as the same number (within a relative DBL_EPSILON), else `%1.17g`.
pub(super) fn format_number(d: f64) -> String {
    if !d.is_finite() {
        return "null".to_string();
    }
    let s = format_g(d, 15);
    let same = s.parse::<f64>().is_ok_and(|t| {
        let max = t.abs().max(d.abs());
        (t - d).abs() <= max * f64::EPSILON
    });
    if same {
        s
    } else {
        format_g(d, 17)
    }
}

/// C's `%1.<precision>g` for a finite number: Rust's formatting has no `%g` (the shortest
/// round-trip form it prints is what serde_json prints, not what cJSON does).
fn format_g(d: f64, precision: usize) -> String {
    if d == 0.0 {
        return if d.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let sci = format!("{:.*e}", precision - 1, d);
    let (mantissa, exp) = sci.split_once('e').expect("exponent");
    let exp: i32 = exp.parse().expect("exponent");
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exp < -4 || exp >= precision as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exp.unsigned_abs())
    } else {
        trim(&format!("{:.*}", (precision as i32 - 1 - exp) as usize, d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// C's `%1.15g` / `%1.17g`: the expected strings are glibc's printf output for the same
    /// doubles (a C program printing each with both formats).
    #[test]
    fn format_g_matches_printf() {
        for (d, g15, g17) in [
            (0.5, "0.5", "0.5"),
            (100000000000000.5, "100000000000000", "100000000000000.5"),
            (100000000000001.5, "100000000000002", "100000000000001.5"),
            (1e15, "1e+15", "1000000000000000"),
            (999999999999999.0, "999999999999999", "999999999999999"),
            (9999999999999999.0, "1e+16", "10000000000000000"),
            (0.0001, "0.0001", "0.0001"),
            (0.00001, "1e-05", "1.0000000000000001e-05"),
            (-1.5e-7, "-1.5e-07", "-1.4999999999999999e-07"),
            (1e100, "1e+100", "1e+100"),
            (0.1, "0.1", "0.10000000000000001"),
            (123456789.0, "123456789", "123456789"),
            (-0.0, "-0", "-0"),
            (2.5, "2.5", "2.5"),
            (0.125, "0.125", "0.125"),
            (1e22, "1e+22", "1e+22"),
            (5e-324, "4.94065645841247e-324", "4.9406564584124654e-324"),
            (1.7976931348623157e308, "1.79769313486232e+308", "1.7976931348623157e+308"),
            (0.3, "0.3", "0.29999999999999999"),
            (12345678901234567890.0, "1.23456789012346e+19", "1.2345678901234567e+19"),
        ] {
            assert_eq!(format_g(d, 15), g15, "{d:e} %1.15g");
            assert_eq!(format_g(d, 17), g17, "{d:e} %1.17g");
        }
    }
}
