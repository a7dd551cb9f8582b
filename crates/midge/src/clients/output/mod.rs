//! How `midge sub` and `midge rr` print a received message: byte for byte what
//! mosquitto_sub / mosquitto_rr 2.0.11 print (Debian's build, with cJSON 1.7.15) for the
//! default output, `-v`, `-N`, `-F FORMAT` and `--pretty`.
//!
//! Every rule here was checked against the real programs; the captured output is in
//! `captured.rs`, and the test at the end of this file replays it. In short:
//!
//! * default: the payload, then `\n`; an empty payload prints nothing at all.
//! * `-v`: `topic payload\n`; an empty payload prints `topic (null)\n`, and nothing with `-N`.
//! * `-F`: the format (it overrides `-v`), then `\n` unless `-N` ([`format`], [`fields`]).
//! * `%j` / `%J` print one JSON object the way cJSON does (`--pretty`: cJSON's formatted style,
//!   tabs and all); `%J` re-prints a JSON payload through cJSON's parser and printer, and when
//!   the payload is not JSON prints nothing and reports
//!   `Error: Message payload is not valid JSON on topic T.` on stderr ([`json`], [`json_parse`]).
//! * time (`%I`, `%U`, `%j`, `%J`, `@X`) is the message's reception time in the local time zone
//!   (`TZ`, else `/etc/localtime`), formatted as glibc's `strftime` does in the C locale
//!   ([`time`]).
//!
//! The caller resolves a 5.0 Topic Alias into [`Publish::topic`] before printing, as libmosquitto
//! does; the Topic Alias property itself stays in the message and `%A` prints it.
#[cfg(test)]
mod captured;
mod fields;
mod format;
mod json;
mod json_parse;
mod time;

use std::time::SystemTime;

use jiff::tz::TimeZone;
use midge_codec::{Properties, ProtocolVersion, Publish};

use fields::Ctx;
use format::Token;
pub use format::{Format, FormatError};
use time::LocalTime;
pub use time::{local_time_zone, strftime};

/// How to print received messages: mosquitto_sub's `-v`, `-N`, `--pretty` and `-F`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputOptions {
    /// `-v`: print the topic, a space, then the payload. `-F` overrides it.
    pub verbose: bool,
    /// End each message with a newline; false with `-N`.
    pub eol: bool,
    /// `--pretty`: formatted JSON for `%j` and `%J`.
    pub pretty: bool,
    /// `-F`: the parsed output format.
    pub format: Option<Format>,
}

impl Default for OutputOptions {
    fn default() -> Self {
        OutputOptions { verbose: false, eol: true, pretty: false, format: None }
    }
}

/// Appends what mosquitto_sub prints for one received message, in the local time zone, and
/// drops what it would print to standard error (the tests use it).
#[cfg(test)]
pub fn write_message(
    opts: &OutputOptions,
    msg: &Publish,
    version: ProtocolVersion,
    received_at: SystemTime,
    out: &mut Vec<u8>,
) {
    let tz = match &opts.format {
        Some(f) if f.needs_time => local_time_zone(),
        _ => TimeZone::UTC,
    };
    let mut err = Vec::new();
    write_message_in(opts, msg, version, received_at, &tz, out, &mut err);
}

/// [`write_message`] in a given time zone (see [`local_time_zone`]), also appending to `err`
/// what mosquitto_sub prints on stderr for this message: only `%J` with a payload that is not
/// JSON does, and not with `--quiet`.
pub fn write_message_in(
    opts: &OutputOptions,
    msg: &Publish,
    version: ProtocolVersion,
    received_at: SystemTime,
    tz: &TimeZone,
    out: &mut Vec<u8>,
    err: &mut Vec<u8>,
) {
    let Some(format) = &opts.format else {
        if opts.verbose {
            if !msg.payload.is_empty() {
                out.extend_from_slice(c_str(msg.topic.as_bytes()));
                out.push(b' ');
                out.extend_from_slice(&msg.payload);
                if opts.eol {
                    out.push(b'\n');
                }
            } else if opts.eol {
                out.extend_from_slice(c_str(msg.topic.as_bytes()));
                out.extend_from_slice(b" (null)\n");
            }
        } else if !msg.payload.is_empty() {
            out.extend_from_slice(&msg.payload);
            if opts.eol {
                out.push(b'\n');
            }
        }
        return;
    };
    // 3.1 and 3.1.1 messages have no properties.
    let no_properties = Properties::new();
    let props = if version.is_v5() { &msg.properties } else { &no_properties };
    let time = format.needs_time.then(|| LocalTime::new(received_at, tz));
    let ctx = Ctx { msg, props, time: time.as_ref(), pretty: opts.pretty };
    for token in &format.tokens {
        match token {
            Token::Literal(bytes) => out.extend_from_slice(bytes),
            Token::Field(spec) => ctx.field(spec, out, err),
            Token::Time(c) => {
                if let Some(t) = &time {
                    t.strftime(*c, out);
                }
            }
            Token::Nanos => {
                if let Some(t) = &time {
                    out.extend_from_slice(format!("{:09}", t.nanos).as_bytes());
                }
            }
        }
    }
    if opts.eol {
        out.push(b'\n');
    }
}

/// The bytes before the first NUL: what C's string functions see.
fn c_str(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(n) => &b[..n],
        None => b,
    }
}

/// `n` copies of `c`: printf's padding, and cJSON's indentation.
fn pad(out: &mut Vec<u8>, c: u8, n: usize) {
    out.resize(out.len() + n, c);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use midge_codec::{ByteString, Bytes, Property, QoS};

    use super::captured::{Case, CASES, P};
    use super::*;

    fn options(args: &[&str]) -> OutputOptions {
        let mut opts = OutputOptions::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match *a {
                "-v" => opts.verbose = true,
                "-N" => opts.eol = false,
                "--pretty" => opts.pretty = true,
                "-F" => opts.format = Some(Format::parse(it.next().expect("format")).expect("valid format")),
                other => panic!("unknown option {other}"),
            }
        }
        opts
    }

    fn message(c: &Case) -> Publish {
        let mut m = Publish::new(ByteString::from(c.topic), Bytes::from_static(c.payload));
        m.qos = QoS::from_u8(c.qos).expect("qos");
        m.retain = c.retain;
        m.packet_id = c.mid;
        for p in c.props {
            m.properties.push(match *p {
                P::Pfi(v) => Property::PayloadFormatIndicator(v),
                P::Mei(v) => Property::MessageExpiryInterval(v),
                P::Ct(v) => Property::ContentType(v.into()),
                P::Rt(v) => Property::ResponseTopic(v.into()),
                P::Cd(v) => Property::CorrelationData(Bytes::from_static(v)),
                P::Si(v) => Property::SubscriptionIdentifier(v),
                P::Ta(v) => Property::TopicAlias(v),
                P::Up(k, v) => Property::UserProperty(k.into(), v.into()),
            });
        }
        m
    }

    fn render(c: &Case) -> (Vec<u8>, Vec<u8>) {
        let tz = TimeZone::posix(c.tz).expect("POSIX TZ");
        let at = UNIX_EPOCH + Duration::new(c.at.0, c.at.1);
        let version = if c.v5 { ProtocolVersion::V5 } else { ProtocolVersion::V3_1_1 };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        write_message_in(&options(c.args), &message(c), version, at, &tz, &mut out, &mut err);
        (out, err)
    }

    #[test]
    fn matches_captured_mosquitto_sub_output() {
        assert!(CASES.len() >= 40);
        let mut failures = Vec::new();
        for (i, c) in CASES.iter().enumerate() {
            let (out, err) = render(c);
            if out != c.out || err != c.err {
                failures.push(format!(
                    "case {i}: {}\n  expected {:?}\n       got {:?}\n  expected stderr {:?}\n       got {:?}",
                    c.cmd,
                    String::from_utf8_lossy(c.out),
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(c.err),
                    String::from_utf8_lossy(&err),
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases differ:\n{}",
            failures.len(),
            CASES.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn write_message_uses_the_local_zone() {
        let opts = options(&["-F", "%t %p %l", "-N"]);
        let mut out = Vec::new();
        write_message(
            &opts,
            &Publish::new("a/b", "xyz"),
            ProtocolVersion::V3_1_1,
            SystemTime::now(),
            &mut out,
        );
        assert_eq!(out, b"a/b xyz 3");
    }
}
