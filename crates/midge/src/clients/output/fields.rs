//! Printing one `%` field of a message as mosquitto_sub's printf calls do: which
//! properties a field reads, and the width, precision and flag rules of each conversion,
//! quirks included (an absent property is still padded; `%x` halves its width).
use midge_codec::{Properties, Publish};

use super::format::Spec;
use super::json::{json_message, print_json};
use super::time::LocalTime;
use super::{c_str, pad};

/// What a field can print: the message, its properties (none before 5.0), the reception
/// time when the format needs it, and `--pretty`.
pub(super) struct Ctx<'a> {
    pub(super) msg: &'a Publish,
    pub(super) props: &'a Properties,
    pub(super) time: Option<&'a LocalTime>,
    pub(super) pretty: bool,
}

impl Ctx<'_> {
    /// Appends the field to `out`; `%J` with a payload that is not JSON reports it in `err`.
    pub(super) fn field(&self, spec: &Spec, out: &mut Vec<u8>, err: &mut Vec<u8>) {
        let msg = self.msg;
        let props = self.props;
        match spec.conv {
            b'A' => int_or_blank(props.topic_alias().map(i64::from), spec, out),
            b'C' => match props.content_type() {
                Some(v) => string(v.as_bytes(), spec, out),
                None => pad(out, b' ', spec.width),
            },
            b'D' => {
                if let Some(v) = props.correlation_data() {
                    out.extend_from_slice(v);
                }
            }
            // An unsigned 32-bit value printed as a C int: 4294967295 shows as -1.
            b'E' => int_or_blank(props.message_expiry_interval().map(|v| i64::from(v as i32)), spec, out),
            b'F' => int_or_blank(props.payload_format_indicator().map(i64::from), spec, out),
            b'I' => {
                if let Some(t) = self.time {
                    string(t.iso8601().as_bytes(), spec, out);
                }
            }
            b'j' | b'J' => {
                let Some(t) = self.time else { return };
                match json_message(msg, props, t, spec.conv == b'j') {
                    Some(root) => print_json(&root, self.pretty, out),
                    None => {
                        err.extend_from_slice(b"Error: Message payload is not valid JSON on topic ");
                        err.extend_from_slice(c_str(msg.topic.as_bytes()));
                        err.extend_from_slice(b".\n");
                    }
                }
            }
            b'l' => int(msg.payload.len() as i64, spec, out),
            b'm' => int(i64::from(msg.packet_id), spec, out),
            b'P' => {
                for (n, (k, v)) in props.user_properties().enumerate() {
                    if n > 0 {
                        out.push(b' ');
                    }
                    out.extend_from_slice(c_str(k.as_bytes()));
                    out.push(b':');
                    out.extend_from_slice(c_str(v.as_bytes()));
                }
            }
            b'p' => payload(&msg.payload, Hex::No, spec, out),
            b'x' => payload(&msg.payload, Hex::Lower, spec, out),
            b'X' => payload(&msg.payload, Hex::Upper, spec, out),
            b'q' => out.push(b'0' + msg.qos.as_u8()),
            b'R' => {
                if let Some(v) = props.response_topic() {
                    string(v.as_bytes(), spec, out);
                }
            }
            b'r' => out.push(if msg.retain { b'1' } else { b'0' }),
            b'S' => {
                int_or_blank(props.subscription_identifiers().next().map(|v| i64::from(v as i32)), spec, out)
            }
            b't' => string(msg.topic.as_bytes(), spec, out),
            b'U' => {
                if let Some(t) = self.time {
                    out.extend_from_slice(format!("{}.{:09}", t.epoch, t.nanos).as_bytes());
                }
            }
            _ => {}
        }
    }
}

/// An integer field: `%d`, `%-*d`, `%0*d` or `%*d`.
fn int(v: i64, spec: &Spec, out: &mut Vec<u8>) {
    let w = spec.width;
    let s = if w == 0 {
        v.to_string()
    } else if spec.left {
        format!("{v:<w$}")
    } else if spec.zero {
        format!("{v:0w$}")
    } else {
        format!("{v:>w$}")
    };
    out.extend_from_slice(s.as_bytes());
}

/// An optional integer property: when absent, `width` pad characters (zeros with the `0` flag,
/// even when left-aligned).
fn int_or_blank(v: Option<i64>, spec: &Spec, out: &mut Vec<u8>) {
    match v {
        Some(v) => int(v, spec, out),
        None => pad(out, if spec.zero { b'0' } else { b' ' }, spec.width),
    }
}

/// A string field: `%s` with width and precision counted in bytes, space padded.
fn string(v: &[u8], spec: &Spec, out: &mut Vec<u8>) {
    let mut v = c_str(v);
    if let Some(p) = spec.precision {
        v = &v[..v.len().min(p)];
    }
    let padding = spec.width.saturating_sub(v.len());
    if !spec.left {
        pad(out, b' ', padding);
    }
    out.extend_from_slice(v);
    if spec.left {
        pad(out, b' ', padding);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hex {
    No,
    Lower,
    Upper,
}

/// `%p`, `%x`, `%X`. With a width, mosquitto prints at most `width` bytes of the payload, and in
/// hex only `min(len, width) / 2` bytes; without one, left alignment (`%-p`) still pads with as
/// many spaces as the payload has bytes.
fn payload(p: &[u8], hex: Hex, spec: &Spec, out: &mut Vec<u8>) {
    let width = spec.width;
    let mut n = p.len();
    let padding: usize;
    if width > 0 {
        n = n.min(width);
        if hex != Hex::No {
            n /= 2;
            padding = width - n * 2;
        } else {
            padding = width - n;
        }
    } else {
        // printf("%*s", -len, ""): a negative width pads on the right.
        padding = n;
    }
    if !spec.left && width > 0 {
        pad(out, if spec.zero { b'0' } else { b' ' }, padding);
    }
    let p = &p[..n];
    match hex {
        Hex::No => out.extend_from_slice(p),
        Hex::Lower => {
            for b in p {
                out.extend_from_slice(format!("{b:02x}").as_bytes());
            }
        }
        Hex::Upper => {
            for b in p {
                out.extend_from_slice(format!("{b:02X}").as_bytes());
            }
        }
    }
    if spec.left {
        pad(out, b' ', padding);
    }
}
