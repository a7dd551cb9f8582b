//! How `midge sub` and `midge rr` print a received message: byte for byte what
//! mosquitto_sub / mosquitto_rr 2.0.11 print (Debian's build, with cJSON 1.7.15) for the
//! default output, `-v`, `-N`, `-F FORMAT` and `--pretty`.
//!
//! Every rule here was checked against the real programs; the test table at the end of this
//! file holds their captured output. In short:
//!
//! * default: the payload, then `\n`; an empty payload prints nothing at all.
//! * `-v`: `topic payload\n`; an empty payload prints `topic (null)\n`, and nothing with `-N`.
//! * `-F`: the format (it overrides `-v`), then `\n` unless `-N`.
//! * `%j` / `%J` print one JSON object the way cJSON does (`--pretty`: cJSON's formatted style,
//!   tabs and all); `%J` re-prints a JSON payload through cJSON's parser and printer, and when
//!   the payload is not JSON prints nothing and reports
//!   `Error: Message payload is not valid JSON on topic T.` on stderr.
//! * time (`%I`, `%U`, `%j`, `%J`, `@X`) is the message's reception time in the local time zone
//!   (`TZ`, else `/etc/localtime`), formatted as glibc's `strftime` does in the C locale.
//!
//! The caller resolves a 5.0 Topic Alias into [`Publish::topic`] before printing, as libmosquitto
//! does; the Topic Alias property itself stays in the message and `%A` prints it.
use std::time::SystemTime;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use midge_codec::{Properties, Property, ProtocolVersion, Publish};

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

/// A parsed `-F` format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    tokens: Vec<Token>,
    needs_time: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
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
struct Spec {
    conv: u8,
    left: bool,
    zero: bool,
    width: usize,
    precision: Option<usize>,
}

/// mosquitto accepts any width; a width this large would only exhaust memory, so it is capped.
const MAX_WIDTH: usize = 1 << 20;

/// The `%` conversions mosquitto_sub accepts.
const CONVERSIONS: &[u8] = b"%ACDEFIlmPpqRSrtjJUxX";

impl Format {
    /// Parses a `-F` string. Rejects what mosquitto_sub rejects, with its message less the
    /// leading `Error: `, e.g. `Invalid format specifier 'z'.` (mosquitto_sub prints
    /// `Error: Invalid format specifier 'z'.`, a blank line, then
    /// `Use 'mosquitto_sub --help' to see usage.`).
    pub fn parse(s: &str) -> Result<Format, String> {
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
fn check(b: &[u8]) -> Result<(), String> {
    const INCOMPLETE: &str = "Incomplete format specifier.";
    let len = b.len();
    let mut i = 0;
    while i < len {
        match b[i] {
            b'%' => {
                if i == len - 1 {
                    return Err(INCOMPLETE.into());
                }
                if b[i + 1] == b'0' || b[i + 1] == b'-' {
                    i += 1;
                    if i == len - 1 {
                        return Err(INCOMPLETE.into());
                    }
                }
                while b[i + 1].is_ascii_digit() {
                    i += 1;
                    if i == len - 1 {
                        return Err(INCOMPLETE.into());
                    }
                }
                if b[i + 1] == b'.' {
                    i += 1;
                    if i == len - 1 {
                        return Err(INCOMPLETE.into());
                    }
                    while b[i + 1].is_ascii_digit() {
                        i += 1;
                        if i == len - 1 {
                            return Err(INCOMPLETE.into());
                        }
                    }
                }
                if !CONVERSIONS.contains(&b[i + 1]) {
                    return Err(format!("Invalid format specifier '{}'.", shown(b[i + 1])));
                }
                i += 1;
            }
            b'@' => {
                if i == len - 1 {
                    return Err(INCOMPLETE.into());
                }
                i += 1;
            }
            b'\\' => {
                if i == len - 1 {
                    return Err("Incomplete escape specifier.".into());
                }
                if !b"\\0aenrtv".contains(&b[i + 1]) {
                    return Err(format!("Invalid escape specifier '{}'.", shown(b[i + 1])));
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

/// The time zone mosquitto_sub would use: `TZ` (a zone name, a file, or a POSIX rule), else
/// `/etc/localtime`, else UTC.
pub fn local_time_zone() -> TimeZone {
    match std::env::var_os("TZ") {
        // glibc reads an empty TZ as UTC.
        Some(tz) if tz.is_empty() => TimeZone::UTC,
        Some(tz) => TimeZone::try_system().unwrap_or_else(|_| unknown_zone(&tz.to_string_lossy())),
        None => TimeZone::try_system().unwrap_or(TimeZone::UTC),
    }
}

/// glibc's reading of a TZ that names no zone: UTC, under the name its leading letters make
/// when there are at least three of them (`TZ=Europe/Nowhere` prints `Europe` for `@Z`).
fn unknown_zone(tz: &str) -> TimeZone {
    let letters: String = tz.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    if letters.len() >= 3 {
        TimeZone::posix(&format!("{letters}0")).unwrap_or(TimeZone::UTC)
    } else {
        TimeZone::UTC
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

struct Ctx<'a> {
    msg: &'a Publish,
    props: &'a Properties,
    time: Option<&'a LocalTime>,
    pretty: bool,
}

impl Ctx<'_> {
    fn field(&self, spec: &Spec, out: &mut Vec<u8>, err: &mut Vec<u8>) {
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

fn pad(out: &mut Vec<u8>, c: u8, n: usize) {
    out.resize(out.len() + n, c);
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

// ---------------------------------------------------------------------------------------------
// Time

/// A reception time broken down in a time zone, as C's `struct tm` from `localtime`.
struct LocalTime {
    year: i32,
    month: i32,
    day: i32,
    hour: i32,
    minute: i32,
    second: i32,
    /// 0 = Sunday.
    wday: i32,
    /// 0 = January 1st.
    yday: i32,
    iso_year: i32,
    iso_week: i32,
    /// Seconds east of UTC.
    offset: i32,
    abbreviation: String,
    epoch: i64,
    nanos: u32,
}

const WEEKDAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

impl LocalTime {
    fn new(at: SystemTime, tz: &TimeZone) -> LocalTime {
        let ts = Timestamp::try_from(at).unwrap_or(Timestamp::UNIX_EPOCH);
        let mut epoch = ts.as_second();
        let mut nanos = ts.subsec_nanosecond();
        if nanos < 0 {
            epoch -= 1;
            nanos += 1_000_000_000;
        }
        let info = tz.to_offset_info(ts);
        let offset = info.offset();
        let dt = offset.to_datetime(ts);
        let iso = dt.date().iso_week_date();
        LocalTime {
            year: i32::from(dt.year()),
            month: i32::from(dt.month()),
            day: i32::from(dt.day()),
            hour: i32::from(dt.hour()),
            minute: i32::from(dt.minute()),
            second: i32::from(dt.second()),
            wday: i32::from(dt.weekday().to_sunday_zero_offset()),
            yday: i32::from(dt.day_of_year()) - 1,
            iso_year: i32::from(iso.year()),
            iso_week: i32::from(iso.week()),
            offset: offset.seconds(),
            abbreviation: info.abbreviation().to_string(),
            epoch,
            nanos: nanos as u32,
        }
    }

    fn hour12(&self) -> i32 {
        match self.hour % 12 {
            0 => 12,
            h => h,
        }
    }

    /// strftime's `%z`: +hhmm.
    fn numeric_zone(&self) -> String {
        let sign = if self.offset < 0 { '-' } else { '+' };
        let minutes = self.offset.unsigned_abs() / 60;
        format!("{sign}{:02}{:02}", minutes / 60, minutes % 60)
    }

    /// `%I`: strftime's `%FT%T%z`.
    fn iso8601(&self) -> String {
        format!(
            "{}-{:02}-{:02}T{:02}:{:02}:{:02}{}",
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.numeric_zone()
        )
    }

    /// The JSON `tst`: local time with microseconds, a literal `Z`, then the offset.
    fn json_timestamp(&self) -> String {
        format!(
            "{}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z{}",
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.nanos / 1000,
            self.numeric_zone()
        )
    }

    /// glibc's `strftime` with the one-conversion format `%c`, in the C locale.
    fn strftime(&self, c: u8, out: &mut Vec<u8>) {
        let s = match c {
            b'a' => WEEKDAYS[self.wday as usize][..3].to_string(),
            b'A' => WEEKDAYS[self.wday as usize].to_string(),
            b'b' | b'h' => MONTHS[self.month as usize - 1][..3].to_string(),
            b'B' => MONTHS[self.month as usize - 1].to_string(),
            b'c' => format!(
                "{} {} {:2} {:02}:{:02}:{:02} {}",
                &WEEKDAYS[self.wday as usize][..3],
                &MONTHS[self.month as usize - 1][..3],
                self.day,
                self.hour,
                self.minute,
                self.second,
                self.year
            ),
            b'C' => format!("{:02}", self.year.div_euclid(100)),
            b'd' => format!("{:02}", self.day),
            b'D' | b'x' => format!("{:02}/{:02}/{:02}", self.month, self.day, self.year.rem_euclid(100)),
            b'e' => format!("{:2}", self.day),
            b'F' => format!("{}-{:02}-{:02}", self.year, self.month, self.day),
            b'g' => format!("{:02}", self.iso_year.rem_euclid(100)),
            b'G' => self.iso_year.to_string(),
            b'H' => format!("{:02}", self.hour),
            b'I' => format!("{:02}", self.hour12()),
            b'j' => format!("{:03}", self.yday + 1),
            b'k' => format!("{:2}", self.hour),
            b'l' => format!("{:2}", self.hour12()),
            b'm' => format!("{:02}", self.month),
            b'M' => format!("{:02}", self.minute),
            b'n' => "\n".to_string(),
            b'p' => (if self.hour < 12 { "AM" } else { "PM" }).to_string(),
            b'P' => (if self.hour < 12 { "am" } else { "pm" }).to_string(),
            b'r' => format!(
                "{:02}:{:02}:{:02} {}",
                self.hour12(),
                self.minute,
                self.second,
                if self.hour < 12 { "AM" } else { "PM" }
            ),
            b'R' => format!("{:02}:{:02}", self.hour, self.minute),
            b's' => self.epoch.to_string(),
            b'S' => format!("{:02}", self.second),
            b't' => "\t".to_string(),
            b'T' | b'X' => format!("{:02}:{:02}:{:02}", self.hour, self.minute, self.second),
            b'u' => (if self.wday == 0 { 7 } else { self.wday }).to_string(),
            b'U' => format!("{:02}", (self.yday + 7 - self.wday) / 7),
            b'V' => format!("{:02}", self.iso_week),
            b'w' => self.wday.to_string(),
            b'W' => format!("{:02}", (self.yday + 7 - (self.wday + 6) % 7) / 7),
            b'y' => format!("{:02}", self.year.rem_euclid(100)),
            b'Y' => self.year.to_string(),
            b'z' => self.numeric_zone(),
            b'Z' => self.abbreviation.clone(),
            b'%' => "%".to_string(),
            // A width with no conversion: glibc prints "%N" padded to that width.
            b'1'..=b'9' => {
                let w = usize::from(c - b'0');
                out.resize(out.len() + w.saturating_sub(2), b' ');
                out.extend_from_slice(&[b'%', c]);
                return;
            }
            // Anything else (flags, E and O modifiers, unknown letters, other bytes) is copied.
            _ => {
                out.extend_from_slice(&[b'%', c]);
                return;
            }
        };
        out.extend_from_slice(s.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// JSON, as cJSON 1.7.15 parses and prints it

/// A cJSON value. Strings are bytes: cJSON neither checks nor changes their encoding, and stops
/// at a NUL when printing them.
#[derive(Debug, Clone, PartialEq)]
enum Json {
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
fn json_message(msg: &Publish, props: &Properties, t: &LocalTime, escaped: bool) -> Option<Json> {
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
fn print_json(v: &Json, pretty: bool, out: &mut Vec<u8>) {
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
fn format_number(d: f64) -> String {
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

/// C's `%1.<precision>g` for a finite number.
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

/// cJSON's nesting limit.
const NESTING_LIMIT: usize = 1000;

/// `%J`'s test: cJSON_ParseWithOpts on the payload as a C string, requiring it to end the
/// payload (so a payload with a NUL never passes).
fn parse_json(payload: &[u8]) -> Option<Json> {
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

/// cJSON's parse_hex4: an invalid digit makes the whole value 0.
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
/// prefix that is a decimal number, and its length.
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
    use std::time::{Duration, UNIX_EPOCH};

    use midge_codec::{ByteString, Bytes, QoS};

    use super::*;
    use P::*;

    /// A property of a captured message, in the order mosquitto_sub received them.
    enum P {
        Pfi(u8),
        Mei(u32),
        Ct(&'static str),
        Rt(&'static str),
        Cd(&'static [u8]),
        Si(u32),
        Ta(u16),
        Up(&'static str, &'static str),
    }

    /// One message as mosquitto_sub 2.0.11 printed it.
    struct Case {
        /// How it was captured. `R` cases: a mosquitto 2.0.11 broker on port 18831 and
        /// mosquitto_pub (`<payload` is the payload below, on standard input); the properties
        /// below are in the order the broker forwarded them. Scripted cases: mosquitto_sub
        /// connected to a small Python broker that answered CONNECT and SUBSCRIBE and then sent
        /// the PUBLISH packet whose bytes are given. mosquitto_sub ran under libfaketime
        /// (`LD_PRELOAD=.../faketime/libfaketime.so.1 DONT_FAKE_MONOTONIC=1`), so that the time
        /// it printed is `at` below, in the POSIX `TZ` given.
        cmd: &'static str,
        /// mosquitto_sub's output options.
        args: &'static [&'static str],
        tz: &'static str,
        /// Reception time: seconds and nanoseconds since the epoch (as `%U` printed it).
        at: (u64, u32),
        v5: bool,
        topic: &'static str,
        payload: &'static [u8],
        qos: u8,
        retain: bool,
        mid: u16,
        props: &'static [P],
        /// Standard output, then standard error, byte for byte.
        out: &'static [u8],
        err: &'static [u8],
    }

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
            assert_eq!(Format::parse(f), Err(e.to_string()), "format {f:?}");
        }
        // mosquitto prints the first byte of a multi-byte character; a String cannot hold it.
        assert_eq!(Format::parse("%\u{e9}"), Err("Invalid format specifier '\u{fffd}'.".to_string()));
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

    /// Time zones: each expected string is what mosquitto_sub printed for `-F '%I @Z %U' -N`
    /// (or `'%U @s @N'`) with that TZ, run under libfaketime at the same instant.
    #[test]
    fn time_zones() {
        let at = UNIX_EPOCH + Duration::new(1_588_801_680, 5);
        for (tz, expected) in [
            ("UTC0", "2020-05-06T21:48:00+0000 UTC 000000005"),
            ("CET-1CEST,M3.5.0,M10.5.0/3", "2020-05-06T23:48:00+0200 CEST 000000005"),
            ("<+03>-3", "2020-05-07T00:48:00+0300 +03 000000005"),
            ("NST3:30NDT,M3.2.0,M11.1.0", "2020-05-06T19:18:00-0230 NDT 000000005"),
        ] {
            let opts = options(&["-F", "%I @Z @N", "-N"]);
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let tz = TimeZone::posix(tz).expect("POSIX TZ");
            write_message_in(
                &opts,
                &Publish::new("t", "x"),
                ProtocolVersion::V5,
                at,
                &tz,
                &mut out,
                &mut err,
            );
            assert_eq!(String::from_utf8(out).expect("UTF-8"), expected);
        }
        // Before the epoch, nanoseconds still count up within the second, as timespec's do.
        let before = UNIX_EPOCH - Duration::new(1, 250_000_000);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        write_message_in(
            &options(&["-F", "%U @s @N", "-N"]),
            &Publish::new("t", "x"),
            ProtocolVersion::V5,
            before,
            &TimeZone::UTC,
            &mut out,
            &mut err,
        );
        assert_eq!(out, b"-2.750000000 -2 750000000");
        // A TZ naming no zone: mosquitto_sub printed `+0000 Foo` for TZ=Foo, `+0000 Europe` for
        // TZ=Europe/Nowhere.
        for (tz, name) in [("Foo", "Foo"), ("Europe/Nowhere", "Europe")] {
            let zone = unknown_zone(tz);
            let info = zone.to_offset_info(Timestamp::UNIX_EPOCH);
            assert_eq!((info.offset().seconds(), info.abbreviation()), (0, name));
        }
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

    /// Every captured case: 88 messages printed by mosquitto_sub 2.0.11 (Debian 2.0.11-1.2+deb12u2,
    /// cJSON 1.7.15-1+deb12u4), generated by a capture script from the commands in `cmd`.
    const CASES: &[Case] = &[
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c00 -q 0 & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c00 -q 0 -s <payload",
        args: &[],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c00",
        payload: b"hello",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"hello\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c01 -q 0 & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c01 -q 0 -n",
        args: &[],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c01",
        payload: b"",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c02 -q 0 & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c02 -q 0 -s <payload",
        args: &[],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c02",
        payload: b"a\nb\0c\xff\r",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"a\nb\0c\xff\r\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c03 -q 0 & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c03 -q 0 -s <payload",
        args: &[],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c03",
        payload: b"h\xc3\xa9llo \xe2\x82\xac",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"h\xc3\xa9llo \xe2\x82\xac\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c04 -q 0 -N & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c04 -q 0 -s <payload",
        args: &["-N"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c04",
        payload: b"hello",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"hello",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c05 -q 0 -N & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c05 -q 0 -n",
        args: &["-N"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c05",
        payload: b"",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c06 -q 0 -v & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c06 -q 0 -s <payload",
        args: &["-v"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c06",
        payload: b"hello world",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"midge/out/c06 hello world\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c07 -q 0 -v & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c07 -q 0 -n",
        args: &["-v"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c07",
        payload: b"",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"midge/out/c07 (null)\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c08 -q 0 -v -N & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c08 -q 0 -s <payload",
        args: &["-v", "-N"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c08",
        payload: b"hello",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"midge/out/c08 hello",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c09 -q 0 -v -N & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c09 -q 0 -n",
        args: &["-v", "-N"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c09",
        payload: b"",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c10 -q 1 -v & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c10 -q 1 -s <payload",
        args: &["-v"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c10",
        payload: b"\0\x01",
        qos: 1,
        retain: false,
        mid: 1,
        props: &[],
        out: b"midge/out/c10 \0\x01\n",
        err: b"",
    },
    Case {
        cmd: "mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c11 -q 2 -r -s <payload; TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c11 -q 2 -v",
        args: &["-v"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c11",
        payload: b"kept",
        qos: 2,
        retain: true,
        mid: 1,
        props: &[],
        out: b"midge/out/c11 kept\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c12 -q 0 --pretty -v & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c12 -q 0 -s <payload",
        args: &["--pretty", "-v"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c12",
        payload: b"{\"a\":1}",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"midge/out/c12 {\"a\":1}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c13 -q 0 -F '%t|%p' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c13 -q 0 -s <payload",
        args: &["-F", "%t|%p"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c13",
        payload: b"hello",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"midge/out/c13|hello\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c14 -q 0 -F '%t|%p' -v & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c14 -q 0 -s <payload",
        args: &["-F", "%t|%p", "-v"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c14",
        payload: b"hello",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"midge/out/c14|hello\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c15 -q 0 -F '%t|%p' -N & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c15 -q 0 -s <payload",
        args: &["-F", "%t|%p", "-N"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c15",
        payload: b"hello",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"midge/out/c15|hello",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c16 -q 0 -F '%t|%p' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c16 -q 0 -n",
        args: &["-F", "%t|%p"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c16",
        payload: b"",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"midge/out/c16|\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c17 -q 0 -F '%t|%p' -v -N & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c17 -q 0 -n",
        args: &["-F", "%t|%p", "-v", "-N"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c17",
        payload: b"",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"midge/out/c17|",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c18 -q 0 -F 'plain text, no specifiers' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c18 -q 0 -s <payload",
        args: &["-F", "plain text, no specifiers"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c18",
        payload: b"x",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"plain text, no specifiers\n",
        err: b"",
    },
    Case {
        cmd: "mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c19 -q 1 -r -s <payload; TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c19 -q 1 -F '%%|%l|%m|%q|%r'",
        args: &["-F", "%%|%l|%m|%q|%r"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c19",
        payload: b"12345",
        qos: 1,
        retain: true,
        mid: 1,
        props: &[],
        out: b"%|5|1|1|1\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c20 -q 2 -F '%q %m %r %l' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c20 -q 2 -s <payload",
        args: &["-F", "%q %m %r %l"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c20",
        payload: b"x",
        qos: 2,
        retain: false,
        mid: 1,
        props: &[],
        out: b"2 1 0 1\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c21 -q 0 -F '%q %m %r %l' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c21 -q 0 -n",
        args: &["-F", "%q %m %r %l"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c21",
        payload: b"",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"0 0 0 0\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p PORT -C 1 -V mqttv5 -t '#' -F '%q|%m|%r|%l'  # scripted broker sends PUBLISH 330c0006746f702f6963ffff0078",
        args: &["-F", "%q|%m|%r|%l"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "top/ic",
        payload: b"x",
        qos: 1,
        retain: true,
        mid: 65535,
        props: &[],
        out: b"1|65535|1|1\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c23 -q 0 -F '%x|%X' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c23 -q 0 -s <payload",
        args: &["-F", "%x|%X"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c23",
        payload: b"\0\x01\xab\xcd\xef\xff",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"0001abcdefff|0001ABCDEFFF\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c24 -q 0 -F '[%x][%X][%p]' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c24 -q 0 -n",
        args: &["-F", "[%x][%X][%p]"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c24",
        payload: b"",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"[][][]\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t top/ic -q 0 -F '[%10t][%-10t][%.2t][%10.2t][%-10.2t][%.10t][%010t][%3t][%-.3t][%.t][%00003t]' & mosquitto_pub -p 18831 -V mqttv5 -t top/ic -q 0 -s <payload",
        args: &["-F", "[%10t][%-10t][%.2t][%10.2t][%-10.2t][%.10t][%010t][%3t][%-.3t][%.t][%00003t]"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "top/ic",
        payload: b"hello",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"[    top/ic][top/ic    ][to][        to][to        ][top/ic][    top/ic][top/ic][top][][top/ic]\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p PORT -C 1 -V mqttv5 -t '#' -F '[%5l][%-5l][%05l][%-05l][%5m][%05m][%-5m][%2l][%5q][%5r][%.0l]'  # scripted broker sends PUBLISH 32100006746f702f6963002a0068656c6c6f",
        args: &["-F", "[%5l][%-5l][%05l][%-05l][%5m][%05m][%-5m][%2l][%5q][%5r][%.0l]"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "top/ic",
        payload: b"hello",
        qos: 1,
        retain: false,
        mid: 42,
        props: &[],
        out: b"[    5][5    ][00005][5    ][   42][00042][42   ][ 5][1][0][5]\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c27 -q 0 -F '[%8p][%-8p][%08p][%3p][%.2p][%5.2p][%0p][%-p][%-0p]' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c27 -q 0 -s <payload",
        args: &["-F", "[%8p][%-8p][%08p][%3p][%.2p][%5.2p][%0p][%-p][%-0p]"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c27",
        payload: b"hello",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"[   hello][hello   ][000hello][hel][hello][hello][hello][hello     ][hello     ]\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c28 -q 0 -F '[%12x][%-12x][%012x][%4x][%5x][%3X][%.2x][%11X][%10x][%-x][%-X]' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c28 -q 0 -s <payload",
        args: &["-F", "[%12x][%-12x][%012x][%4x][%5x][%3X][%.2x][%11X][%10x][%-x][%-X]"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c28",
        payload: b"hello",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"[        6865][6865        ][000000006865][6865][ 6865][ 68][68656c6c6f][       6865][      6865][68656c6c6f     ][68656C6C6F     ]\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c29 -q 0 -F '[%-p][%-5p][%5p][%05x][%-x][%5t]' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c29 -q 0 -n",
        args: &["-F", "[%-p][%-5p][%5p][%05x][%-x][%5t]"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c29",
        payload: b"",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"[][     ][     ][00000][][midge/out/c29]\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c30 -q 0 -F '[%5C][%05E][%5R][%05A][%5F][%05S][%-5S][%-05S][%5P][%5D][%-05E]' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c30 -q 0 -s <payload",
        args: &["-F", "[%5C][%05E][%5R][%05A][%5F][%05S][%-5S][%-05S][%5P][%5D][%-05E]"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c30",
        payload: b"x",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"[     ][00000][][00000][     ][00000][     ][00000][][][00000]\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv311 -t midge/out/c31 -q 0 -F '[%C][%E][%R][%A][%F][%S][%P][%D]' & mosquitto_pub -p 18831 -V mqttv311 -t midge/out/c31 -q 0 -s <payload",
        args: &["-F", "[%C][%E][%R][%A][%F][%S][%P][%D]"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: false,
        topic: "midge/out/c31",
        payload: b"x",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"[][][][][][][][]\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p PORT -C 1 -V mqttv5 -t '#' -F 'A=%A|C=%C|D=%D|E=%E|F=%F|P=%P|R=%R|S=%S|t=%t'  # scripted broker sends PUBLISH 33440006746f702f69631092370200000e102600016100016201012300070bac02090005000162696e080006726573702f7403000463742f7826000161000563225cc3a9706c",
        args: &["-F", "A=%A|C=%C|D=%D|E=%E|F=%F|P=%P|R=%R|S=%S|t=%t"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "top/ic",
        payload: b"pl",
        qos: 1,
        retain: true,
        mid: 4242,
        props: &[Mei(3600), Up("a", "b"), Pfi(1), Ta(7), Si(300), Cd(b"\0\x01bin"), Rt("resp/t"), Ct("ct/x"), Up("a", "c\"\\é")],
        out: b"A=7|C=ct/x|D=\0\x01bin|E=3600|F=1|P=a:b a:c\"\\\xc3\xa9|R=resp/t|S=300|t=top/ic\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p PORT -C 1 -V mqttv5 -t '#' -F '[%8C][%-8C][%.2C][%08C][%5A][%05A][%-5A][%5E][%05E][%5F][%05F][%5S][%05S][%8R][%.1R][%5D][%5P]'  # scripted broker sends PUBLISH 32290006746f702f6963002a190300056374797065020000004d01010b09230003080002727468656c6c6f",
        args: &["-F", "[%8C][%-8C][%.2C][%08C][%5A][%05A][%-5A][%5E][%05E][%5F][%05F][%5S][%05S][%8R][%.1R][%5D][%5P]"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "top/ic",
        payload: b"hello",
        qos: 1,
        retain: false,
        mid: 42,
        props: &[Ct("ctype"), Mei(77), Pfi(1), Si(9), Ta(3), Rt("rt")],
        out: b"[   ctype][ctype   ][ct][   ctype][    3][00003][3    ][   77][00077][    1][00001][    9][00009][      rt][r][][]\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p PORT -C 1 -V mqttv5 -t '#' -F '[%E][%05E][%-12E][%12E][%S]'  # scripted broker sends PUBLISH 30140006746f702f69630a02ffffffff0bffffff7f78",
        args: &["-F", "[%E][%05E][%-12E][%12E][%S]"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "top/ic",
        payload: b"x",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[Mei(4294967295), Si(268435455)],
        out: b"[-1][-0001][-1          ][          -1][268435455]\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p PORT -C 1 -V mqttv5 -t '#' -F '[%E][%F][%A]'  # scripted broker sends PUBLISH 30140006746f702f69630a0200000000010023ffff78",
        args: &["-F", "[%E][%F][%A]"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "top/ic",
        payload: b"x",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[Mei(0), Pfi(0), Ta(65535)],
        out: b"[0][0][65535]\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c36 -q 1 -D subscribe subscription-identifier 42 -F 'C=%C|D=%D|F=%F|P=%P|R=%R|S=%S' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c36 -q 1 -D publish content-type 'text/plain; charset=utf-8' -D publish correlation-data corr-42 -D publish payload-format-indicator 1 -D publish response-topic reply/here -D publish user-property k1 v1 -D publish user-property k2 'v 2' -D publish user-property k1 v3 -s <payload",
        args: &["-F", "C=%C|D=%D|F=%F|P=%P|R=%R|S=%S"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c36",
        payload: b"x",
        qos: 1,
        retain: false,
        mid: 1,
        props: &[Si(42), Ct("text/plain; charset=utf-8"), Cd(b"corr-42"), Pfi(1), Rt("reply/here"), Up("k1", "v1"), Up("k2", "v 2"), Up("k1", "v3")],
        out: b"C=text/plain; charset=utf-8|D=corr-42|F=1|P=k1:v1 k2:v 2 k1:v3|R=reply/here|S=42\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv311 -t midge/out/c37 -q 0 -F '%C|%P' & mosquitto_pub -p 18831 -V mqttv311 -t midge/out/c37 -q 0 -s <payload",
        args: &["-F", "%C|%P"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: false,
        topic: "midge/out/c37",
        payload: b"x",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"|\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c38 -q 0 -F '\\\\|\\0|\\a|\\e|\\n|\\r|\\t|\\v|%%|@@' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c38 -q 0 -s <payload",
        args: &["-F", "\\\\|\\0|\\a|\\e|\\n|\\r|\\t|\\v|%%|@@"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c38",
        payload: b"x",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"\\|\0|\x07|\x1b|\n|\r|\t|\x0b|%|@\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c39 -q 0 -F '\\e[92m%t \\e[96m%p\\e[0m' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c39 -q 0 -s <payload",
        args: &["-F", "\\e[92m%t \\e[96m%p\\e[0m"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c39",
        payload: b"colour",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"\x1b[92mmidge/out/c39 \x1b[96mcolour\x1b[0m\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t 'midge/out/a b' -q 0 -F '%t\\0%p\\0' & mosquitto_pub -p 18831 -V mqttv5 -t 'midge/out/a b' -q 0 -s <payload",
        args: &["-F", "%t\\0%p\\0"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/a b",
        payload: b"with space",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"midge/out/a b\0with space\0\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c41 -q 0 -F '@a|@A|@b|@B|@c|@C|@d|@D|@e|@F|@g|@G|@h|@H|@I|@j|@k|@l|@m|@M|@n|@p|@P|@r|@R|@s|@S|@t|@T|@u|@U|@V|@w|@W|@x|@X|@y|@Y|@z|@Z|@%|@N' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c41 -q 0 -s <payload",
        args: &["-F", "@a|@A|@b|@B|@c|@C|@d|@D|@e|@F|@g|@G|@h|@H|@I|@j|@k|@l|@m|@M|@n|@p|@P|@r|@R|@s|@S|@t|@T|@u|@U|@V|@w|@W|@x|@X|@y|@Y|@z|@Z|@%|@N"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c41",
        payload: b"hello",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"Wed|Wednesday|May|May|Wed May  6 21:48:00 2020|20|06|05/06/20| 6|2020-05-06|20|2020|May|21|09|127|21| 9|05|48|\n|PM|pm|09:48:00 PM|21:48|1588801680|00|\t|21:48:00|3|18|19|3|18|05/06/20|21:48:00|20|2020|+0000|UTC|%|123456789\n",
        err: b"",
    },
    Case {
        cmd: "TZ=CET-1CEST,M3.5.0,M10.5.0/3 FAKETIME='2021-01-03 07:05:09.250000000' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c42 -q 0 -F '@a|@A|@b|@B|@c|@C|@d|@D|@e|@F|@g|@G|@h|@H|@I|@j|@k|@l|@m|@M|@n|@p|@P|@r|@R|@s|@S|@t|@T|@u|@U|@V|@w|@W|@x|@X|@y|@Y|@z|@Z|@%|@N' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c42 -q 0 -s <payload",
        args: &["-F", "@a|@A|@b|@B|@c|@C|@d|@D|@e|@F|@g|@G|@h|@H|@I|@j|@k|@l|@m|@M|@n|@p|@P|@r|@R|@s|@S|@t|@T|@u|@U|@V|@w|@W|@x|@X|@y|@Y|@z|@Z|@%|@N"],
        tz: "CET-1CEST,M3.5.0,M10.5.0/3",
        at: (1609653909, 250000000),
        v5: true,
        topic: "midge/out/c42",
        payload: b"hello",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"Sun|Sunday|Jan|January|Sun Jan  3 07:05:09 2021|20|03|01/03/21| 3|2021-01-03|20|2020|Jan|07|07|003| 7| 7|01|05|\n|AM|am|07:05:09 AM|07:05|1609653909|09|\t|07:05:09|7|01|53|0|00|01/03/21|07:05:09|21|2021|+0100|CET|%|250000000\n",
        err: b"",
    },
    Case {
        cmd: "TZ=NST3:30NDT,M3.2.0,M11.1.0 FAKETIME='2019-12-31 23:59:59.500000000' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c43 -q 0 -F '@a|@A|@b|@B|@c|@C|@d|@D|@e|@F|@g|@G|@h|@H|@I|@j|@k|@l|@m|@M|@n|@p|@P|@r|@R|@s|@S|@t|@T|@u|@U|@V|@w|@W|@x|@X|@y|@Y|@z|@Z|@%|@N' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c43 -q 0 -s <payload",
        args: &["-F", "@a|@A|@b|@B|@c|@C|@d|@D|@e|@F|@g|@G|@h|@H|@I|@j|@k|@l|@m|@M|@n|@p|@P|@r|@R|@s|@S|@t|@T|@u|@U|@V|@w|@W|@x|@X|@y|@Y|@z|@Z|@%|@N"],
        tz: "NST3:30NDT,M3.2.0,M11.1.0",
        at: (1577849399, 500000000),
        v5: true,
        topic: "midge/out/c43",
        payload: b"hello",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"Tue|Tuesday|Dec|December|Tue Dec 31 23:59:59 2019|20|31|12/31/19|31|2019-12-31|20|2020|Dec|23|11|365|23|11|12|59|\n|PM|pm|11:59:59 PM|23:59|1577849399|59|\t|23:59:59|2|52|01|2|52|12/31/19|23:59:59|19|2019|-0330|NST|%|500000000\n",
        err: b"",
    },
    Case {
        cmd: "TZ=IST-5:30 FAKETIME='2024-02-29 00:00:00.001953125' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c44 -q 0 -F '@a|@A|@b|@B|@c|@C|@d|@D|@e|@F|@g|@G|@h|@H|@I|@j|@k|@l|@m|@M|@n|@p|@P|@r|@R|@s|@S|@t|@T|@u|@U|@V|@w|@W|@x|@X|@y|@Y|@z|@Z|@%|@N' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c44 -q 0 -s <payload",
        args: &["-F", "@a|@A|@b|@B|@c|@C|@d|@D|@e|@F|@g|@G|@h|@H|@I|@j|@k|@l|@m|@M|@n|@p|@P|@r|@R|@s|@S|@t|@T|@u|@U|@V|@w|@W|@x|@X|@y|@Y|@z|@Z|@%|@N"],
        tz: "IST-5:30",
        at: (1709145000, 1953125),
        v5: true,
        topic: "midge/out/c44",
        payload: b"hello",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"Thu|Thursday|Feb|February|Thu Feb 29 00:00:00 2024|20|29|02/29/24|29|2024-02-29|24|2024|Feb|00|12|060| 0|12|02|00|\n|AM|am|12:00:00 AM|00:00|1709145000|00|\t|00:00:00|4|08|09|4|09|02/29/24|00:00:00|24|2024|+0530|IST|%|001953125\n",
        err: b"",
    },
    Case {
        cmd: "TZ=EST5EDT,M3.2.0,M11.1.0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c45 -q 0 -F '@a|@A|@b|@B|@c|@C|@d|@D|@e|@F|@g|@G|@h|@H|@I|@j|@k|@l|@m|@M|@n|@p|@P|@r|@R|@s|@S|@t|@T|@u|@U|@V|@w|@W|@x|@X|@y|@Y|@z|@Z|@%|@N' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c45 -q 0 -s <payload",
        args: &["-F", "@a|@A|@b|@B|@c|@C|@d|@D|@e|@F|@g|@G|@h|@H|@I|@j|@k|@l|@m|@M|@n|@p|@P|@r|@R|@s|@S|@t|@T|@u|@U|@V|@w|@W|@x|@X|@y|@Y|@z|@Z|@%|@N"],
        tz: "EST5EDT,M3.2.0,M11.1.0",
        at: (1588816080, 123456789),
        v5: true,
        topic: "midge/out/c45",
        payload: b"hello",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"Wed|Wednesday|May|May|Wed May  6 21:48:00 2020|20|06|05/06/20| 6|2020-05-06|20|2020|May|21|09|127|21| 9|05|48|\n|PM|pm|09:48:00 PM|21:48|1588816080|00|\t|21:48:00|3|18|19|3|18|05/06/20|21:48:00|20|2020|-0400|EDT|%|123456789\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c46 -q 0 -F '[@0][@1][@2][@3][@9][@E][@O][@_][@-][@#][@^][@+][@q][@ ][@é][@f][@i][@J][@:]' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c46 -q 0 -s <payload",
        args: &["-F", "[@0][@1][@2][@3][@9][@E][@O][@_][@-][@#][@^][@+][@q][@ ][@é][@f][@i][@J][@:]"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c46",
        payload: b"hello",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"[%0][%1][%2][ %3][       %9][%E][%O][%_][%-][%#][%^][%+][%q][% ][%\xc3\xa9][%f][%i][%J][%:]\n",
        err: b"",
    },
    Case {
        cmd: "TZ=CET-1CEST,M3.5.0,M10.5.0/3 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c47 -q 0 -F '%I|%U|@N|[%30I][%-30I][%.10I][%030I][%-.4I][%32.4I][%30U]' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c47 -q 0 -s <payload",
        args: &["-F", "%I|%U|@N|[%30I][%-30I][%.10I][%030I][%-.4I][%32.4I][%30U]"],
        tz: "CET-1CEST,M3.5.0,M10.5.0/3",
        at: (1588794480, 123456789),
        v5: true,
        topic: "midge/out/c47",
        payload: b"hello",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"2020-05-06T21:48:00+0200|1588794480.123456789|123456789|[      2020-05-06T21:48:00+0200][2020-05-06T21:48:00+0200      ][2020-05-06][      2020-05-06T21:48:00+0200][2020][                            2020][1588794480.123456789]\n",
        err: b"",
    },
    Case {
        cmd: "TZ=NST3:30NDT,M3.2.0,M11.1.0 FAKETIME='2019-12-31 23:59:59.500000000' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c48 -q 0 -F '%I %U' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c48 -q 0 -s <payload",
        args: &["-F", "%I %U"],
        tz: "NST3:30NDT,M3.2.0,M11.1.0",
        at: (1577849399, 500000000),
        v5: true,
        topic: "midge/out/c48",
        payload: b"hello",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"2019-12-31T23:59:59-0330 1577849399.500000000\n",
        err: b"",
    },
    Case {
        cmd: "TZ=EST5EDT,M3.2.0,M11.1.0 FAKETIME='2021-01-03 07:05:09.250000000' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c49 -q 0 -F '@Y-@m-@dT@H:@M:@S@z : %t : %x' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c49 -q 0 -s <payload",
        args: &["-F", "@Y-@m-@dT@H:@M:@S@z : %t : %x"],
        tz: "EST5EDT,M3.2.0,M11.1.0",
        at: (1609675509, 250000000),
        v5: true,
        topic: "midge/out/c49",
        payload: b"hello",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"2021-01-03T07:05:09-0500 : midge/out/c49 : 68656c6c6f\n",
        err: b"",
    },
    Case {
        cmd: "TZ=IST-5:30 FAKETIME='2024-02-29 00:00:00.001953125' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c50 -q 2 -F '@s.@N : %r : %q : %m : %l' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c50 -q 2 -s <payload",
        args: &["-F", "@s.@N : %r : %q : %m : %l"],
        tz: "IST-5:30",
        at: (1709145000, 1953125),
        v5: true,
        topic: "midge/out/c50",
        payload: b"hello",
        qos: 2,
        retain: false,
        mid: 1,
        props: &[],
        out: b"1709145000.001953125 : 0 : 2 : 1 : 5\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c51 -q 0 -F %j & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c51 -q 0 -s <payload",
        args: &["-F", "%j"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c51",
        payload: b"hello world",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"midge/out/c51\",\"qos\":0,\"retain\":0,\"payloadlen\":11,\"payload\":\"hello world\"}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=CET-1CEST,M3.5.0,M10.5.0/3 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c52 -q 1 -F %j & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c52 -q 1 -s <payload",
        args: &["-F", "%j"],
        tz: "CET-1CEST,M3.5.0,M10.5.0/3",
        at: (1588794480, 123456789),
        v5: true,
        topic: "midge/out/c52",
        payload: b"hello",
        qos: 1,
        retain: false,
        mid: 1,
        props: &[],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0200\",\"topic\":\"midge/out/c52\",\"qos\":1,\"retain\":0,\"payloadlen\":5,\"mid\":1,\"payload\":\"hello\"}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c53 -q 0 -F %j & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c53 -q 0 -n",
        args: &["-F", "%j"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c53",
        payload: b"",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"midge/out/c53\",\"qos\":0,\"retain\":0,\"payloadlen\":0,\"payload\":null}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c54 -q 0 -F %j & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c54 -q 0 -s <payload",
        args: &["-F", "%j"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c54",
        payload: b"say \"hi\"\\ \t\n\r\x01\x08\x0c\x1f\x7f /",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"midge/out/c54\",\"qos\":0,\"retain\":0,\"payloadlen\":20,\"payload\":\"say \\\"hi\\\"\\\\ \\t\\n\\r\\u0001\\b\\f\\u001f\x7f /\"}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c55 -q 0 -F %j & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c55 -q 0 -s <payload",
        args: &["-F", "%j"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c55",
        payload: b"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"midge/out/c55\",\"qos\":0,\"retain\":0,\"payloadlen\":15,\"payload\":\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80\"}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c56 -q 0 -F %j & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c56 -q 0 -s <payload",
        args: &["-F", "%j"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c56",
        payload: b"\0\x01\xff",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"midge/out/c56\",\"qos\":0,\"retain\":0,\"payloadlen\":3,\"payload\":\"\"}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c57 -q 2 -F %j & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c57 -q 2 -s <payload",
        args: &["-F", "%j"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c57",
        payload: b"ab\0cd",
        qos: 2,
        retain: false,
        mid: 1,
        props: &[],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"midge/out/c57\",\"qos\":2,\"retain\":0,\"payloadlen\":5,\"mid\":1,\"payload\":\"ab\"}\n",
        err: b"",
    },
    Case {
        cmd: "mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c58 -q 0 -r -s <payload; TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c58 -q 0 -F %j",
        args: &["-F", "%j"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c58",
        payload: b"\xc3(\xff\xfe",
        qos: 0,
        retain: true,
        mid: 0,
        props: &[],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"midge/out/c58\",\"qos\":0,\"retain\":1,\"payloadlen\":4,\"payload\":\"\xc3(\xff\xfe\"}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t 'midge/out/\"q\"\\' -q 0 -F %j & mosquitto_pub -p 18831 -V mqttv5 -t 'midge/out/\"q\"\\' -q 0 -s <payload",
        args: &["-F", "%j"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/\"q\"\\",
        payload: b"{\"a\": 1.50}",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"midge/out/\\\"q\\\"\\\\\",\"qos\":0,\"retain\":0,\"payloadlen\":11,\"payload\":\"{\\\"a\\\": 1.50}\"}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c60 -q 1 -F %j --pretty & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c60 -q 1 -s <payload",
        args: &["-F", "%j", "--pretty"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c60",
        payload: b"hello",
        qos: 1,
        retain: false,
        mid: 1,
        props: &[],
        out: b"{\n\t\"tst\":\t\"2020-05-06T21:48:00.123456Z+0000\",\n\t\"topic\":\t\"midge/out/c60\",\n\t\"qos\":\t1,\n\t\"retain\":\t0,\n\t\"payloadlen\":\t5,\n\t\"mid\":\t1,\n\t\"payload\":\t\"hello\"\n}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c61 -q 0 -F %j --pretty -N & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c61 -q 0 -n",
        args: &["-F", "%j", "--pretty", "-N"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c61",
        payload: b"",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"{\n\t\"tst\":\t\"2020-05-06T21:48:00.123456Z+0000\",\n\t\"topic\":\t\"midge/out/c61\",\n\t\"qos\":\t0,\n\t\"retain\":\t0,\n\t\"payloadlen\":\t0,\n\t\"payload\":\tnull\n}",
        err: b"",
    },
    Case {
        cmd: "TZ=EST5EDT,M3.2.0,M11.1.0 FAKETIME='2021-01-03 07:05:09.250000000' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c62 -q 0 -F '%j|%j' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c62 -q 0 -s <payload",
        args: &["-F", "%j|%j"],
        tz: "EST5EDT,M3.2.0,M11.1.0",
        at: (1609675509, 250000000),
        v5: true,
        topic: "midge/out/c62",
        payload: b"twice",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"{\"tst\":\"2021-01-03T07:05:09.250000Z-0500\",\"topic\":\"midge/out/c62\",\"qos\":0,\"retain\":0,\"payloadlen\":5,\"payload\":\"twice\"}|{\"tst\":\"2021-01-03T07:05:09.250000Z-0500\",\"topic\":\"midge/out/c62\",\"qos\":0,\"retain\":0,\"payloadlen\":5,\"payload\":\"twice\"}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c63 -q 1 -D subscribe subscription-identifier 42 -F %j & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c63 -q 1 -D publish content-type text/plain -D publish correlation-data 'c\"or\\r' -D publish payload-format-indicator 1 -D publish response-topic r/t -D publish user-property k1 v1 -D publish user-property k2 'v 2' -D publish user-property k1 v3 -s <payload",
        args: &["-F", "%j"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c63",
        payload: b"x",
        qos: 1,
        retain: false,
        mid: 1,
        props: &[Si(42), Ct("text/plain"), Cd(b"c\"or\\r"), Pfi(1), Rt("r/t"), Up("k1", "v1"), Up("k2", "v 2"), Up("k1", "v3")],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"midge/out/c63\",\"qos\":1,\"retain\":0,\"payloadlen\":1,\"mid\":1,\"properties\":{\"subscription-identifier\":42,\"content-type\":\"text/plain\",\"correlation-data\":\"c\\\"or\\\\r\",\"payload-format-indicator\":1,\"response-topic\":\"r/t\",\"user-properties\":{\"k1\":\"v1\",\"k2\":\"v 2\",\"k1\":\"v3\"}},\"payload\":\"x\"}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p PORT -C 1 -V mqttv5 -t '#' -F %j  # scripted broker sends PUBLISH 33440006746f702f69631092370200000e102600016100016201012300070bac02090005000162696e080006726573702f7403000463742f7826000161000563225cc3a9706c",
        args: &["-F", "%j"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "top/ic",
        payload: b"pl",
        qos: 1,
        retain: true,
        mid: 4242,
        props: &[Mei(3600), Up("a", "b"), Pfi(1), Ta(7), Si(300), Cd(b"\0\x01bin"), Rt("resp/t"), Ct("ct/x"), Up("a", "c\"\\é")],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"top/ic\",\"qos\":1,\"retain\":1,\"payloadlen\":2,\"mid\":4242,\"properties\":{\"message-expiry-interval\":3600,\"user-properties\":{\"a\":\"b\",\"a\":\"c\\\"\\\\\xc3\xa9\"},\"payload-format-indicator\":1,\"topic-alias\":0,\"subscription-identifier\":300,\"correlation-data\":\"\",\"response-topic\":\"resp/t\",\"content-type\":\"ct/x\"},\"payload\":\"pl\"}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p PORT -C 1 -V mqttv5 -t '#' -F %j --pretty  # scripted broker sends PUBLISH 33440006746f702f69631092370200000e102600016100016201012300070bac02090005000162696e080006726573702f7403000463742f7826000161000563225cc3a9706c",
        args: &["-F", "%j", "--pretty"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "top/ic",
        payload: b"pl",
        qos: 1,
        retain: true,
        mid: 4242,
        props: &[Mei(3600), Up("a", "b"), Pfi(1), Ta(7), Si(300), Cd(b"\0\x01bin"), Rt("resp/t"), Ct("ct/x"), Up("a", "c\"\\é")],
        out: b"{\n\t\"tst\":\t\"2020-05-06T21:48:00.123456Z+0000\",\n\t\"topic\":\t\"top/ic\",\n\t\"qos\":\t1,\n\t\"retain\":\t1,\n\t\"payloadlen\":\t2,\n\t\"mid\":\t4242,\n\t\"properties\":\t{\n\t\t\"message-expiry-interval\":\t3600,\n\t\t\"user-properties\":\t{\n\t\t\t\"a\":\t\"b\",\n\t\t\t\"a\":\t\"c\\\"\\\\\xc3\xa9\"\n\t\t},\n\t\t\"payload-format-indicator\":\t1,\n\t\t\"topic-alias\":\t0,\n\t\t\"subscription-identifier\":\t300,\n\t\t\"correlation-data\":\t\"\",\n\t\t\"response-topic\":\t\"resp/t\",\n\t\t\"content-type\":\t\"ct/x\"\n\t},\n\t\"payload\":\t\"pl\"\n}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p PORT -C 1 -V mqttv5 -t '#' -F '%j|%A'  # scripted broker sends PUBLISH 30160006746f702f69630b0900056162636465230009706c",
        args: &["-F", "%j|%A"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "top/ic",
        payload: b"pl",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[Cd(b"abcde"), Ta(9)],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"top/ic\",\"qos\":0,\"retain\":0,\"payloadlen\":2,\"properties\":{\"correlation-data\":\"abcde\",\"topic-alias\":5},\"payload\":\"pl\"}|9\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p PORT -C 1 -V mqttv5 -t '#' -F %j  # scripted broker sends PUBLISH 301d0006746f702f69631202ffffffff0bffffff7f0900002600000000706c",
        args: &["-F", "%j"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "top/ic",
        payload: b"pl",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[Mei(4294967295), Si(268435455), Cd(b""), Up("", "")],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"top/ic\",\"qos\":0,\"retain\":0,\"payloadlen\":2,\"properties\":{\"message-expiry-interval\":4294967295,\"subscription-identifier\":268435455,\"correlation-data\":\"\",\"user-properties\":{\"\":\"\"}},\"payload\":\"pl\"}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv311 -t midge/out/c68 -q 1 -F %j & mosquitto_pub -p 18831 -V mqttv311 -t midge/out/c68 -q 1 -s <payload",
        args: &["-F", "%j"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: false,
        topic: "midge/out/c68",
        payload: b"v3",
        qos: 1,
        retain: false,
        mid: 1,
        props: &[],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"midge/out/c68\",\"qos\":1,\"retain\":0,\"payloadlen\":2,\"mid\":1,\"payload\":\"v3\"}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c69 -q 0 -F %J & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c69 -q 0 -s <payload",
        args: &["-F", "%J"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c69",
        payload: b"{\"a\": 1.50, \"b\":[1,2 ,3], \"c\":null, \"d\":true, \"e\":false}",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"midge/out/c69\",\"qos\":0,\"retain\":0,\"payloadlen\":56,\"payload\":{\"a\":1.5,\"b\":[1,2,3],\"c\":null,\"d\":true,\"e\":false}}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c70 -q 1 -F %J --pretty & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c70 -q 1 -s <payload",
        args: &["-F", "%J", "--pretty"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c70",
        payload: b"{\"a\": 1.50, \"b\":[1,2 ,3], \"c\":null, \"d\":true, \"e\":false}",
        qos: 1,
        retain: false,
        mid: 1,
        props: &[],
        out: b"{\n\t\"tst\":\t\"2020-05-06T21:48:00.123456Z+0000\",\n\t\"topic\":\t\"midge/out/c70\",\n\t\"qos\":\t1,\n\t\"retain\":\t0,\n\t\"payloadlen\":\t56,\n\t\"mid\":\t1,\n\t\"payload\":\t{\n\t\t\"a\":\t1.5,\n\t\t\"b\":\t[1, 2, 3],\n\t\t\"c\":\tnull,\n\t\t\"d\":\ttrue,\n\t\t\"e\":\tfalse\n\t}\n}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c71 -q 0 -F %J --pretty & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c71 -q 0 -s <payload",
        args: &["-F", "%J", "--pretty"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c71",
        payload: b"{\"x\":{},\"y\":[],\"z\":[{\"a\":[1,{\"b\":{}}]},[]]}",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"{\n\t\"tst\":\t\"2020-05-06T21:48:00.123456Z+0000\",\n\t\"topic\":\t\"midge/out/c71\",\n\t\"qos\":\t0,\n\t\"retain\":\t0,\n\t\"payloadlen\":\t43,\n\t\"payload\":\t{\n\t\t\"x\":\t{\n\t\t},\n\t\t\"y\":\t[],\n\t\t\"z\":\t[{\n\t\t\t\t\"a\":\t[1, {\n\t\t\t\t\t\t\"b\":\t{\n\t\t\t\t\t\t}\n\t\t\t\t\t}]\n\t\t\t}, []]\n\t}\n}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c72 -q 0 -F %J & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c72 -q 0 -n",
        args: &["-F", "%J"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c72",
        payload: b"",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"midge/out/c72\",\"qos\":0,\"retain\":0,\"payloadlen\":0,\"payload\":null}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c73 -q 0 -F %J --pretty & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c73 -q 0 -n",
        args: &["-F", "%J", "--pretty"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c73",
        payload: b"",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"{\n\t\"tst\":\t\"2020-05-06T21:48:00.123456Z+0000\",\n\t\"topic\":\t\"midge/out/c73\",\n\t\"qos\":\t0,\n\t\"retain\":\t0,\n\t\"payloadlen\":\t0,\n\t\"payload\":\tnull\n}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c74 -q 0 -F %J & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c74 -q 0 -s <payload",
        args: &["-F", "%J"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c74",
        payload: b"hello",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"\n",
        err: b"Error: Message payload is not valid JSON on topic midge/out/c74.\n",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c75 -q 0 -F '[%J]%t' -N & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c75 -q 0 -s <payload",
        args: &["-F", "[%J]%t", "-N"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c75",
        payload: b"{\"a\":1",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"[]midge/out/c75",
        err: b"Error: Message payload is not valid JSON on topic midge/out/c75.\n",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c76 -q 0 -F %J & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c76 -q 0 -s <payload",
        args: &["-F", "%J"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c76",
        payload: b"{\"a\":1}\0",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"\n",
        err: b"Error: Message payload is not valid JSON on topic midge/out/c76.\n",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c77 -q 0 -F %J & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c77 -q 0 -s <payload",
        args: &["-F", "%J"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c77",
        payload: b"  42  ",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"midge/out/c77\",\"qos\":0,\"retain\":0,\"payloadlen\":6,\"payload\":42}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c78 -q 0 -F %J & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c78 -q 0 -s <payload",
        args: &["-F", "%J"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c78",
        payload: b"\xef\xbb\xbf\x01 [true, false,null]\x1f\t",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"midge/out/c78\",\"qos\":0,\"retain\":0,\"payloadlen\":25,\"payload\":[true,false,null]}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c79 -q 0 -F %J & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c79 -q 0 -s <payload",
        args: &["-F", "%J"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c79",
        payload: b"[-0, -0.0, 0.30000000000000004, 1e400, -1e400, 1e-400, 123456789012, 1e15, 1e16, 1e21, 2147483648, -2147483649, 1., -.5, 01, 1E+2, 0.1, 5e-324, 0.000001, 0.0000001, 123456.7]",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"midge/out/c79\",\"qos\":0,\"retain\":0,\"payloadlen\":174,\"payload\":[-0,-0,0.3,null,null,0,123456789012,1e+15,1e+16,1e+21,2147483648,-2147483649,1,-0.5,1,100,0.1,4.94065645841247e-324,1e-06,1e-07,123456.7]}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c80 -q 0 -F %J & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c80 -q 0 -s <payload",
        args: &["-F", "%J"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c80",
        payload: b"[9007199254740993, 12345678901234567890, 1.7976931348623157e308, 2.2250738585072014e-308, 4.35, 2.675, 1e-320, 100000000000000.5, 0.1e1, 123.456e-2, 1.5e300, 1e100]",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"midge/out/c80\",\"qos\":0,\"retain\":0,\"payloadlen\":164,\"payload\":[9.00719925474099e+15,1.2345678901234567e+19,1.79769313486232e+308,2.2250738585072014e-308,4.35,2.675,9.99988867182683e-321,100000000000000.5,1,1.23456,1.5e+300,1e+100]}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c81 -q 0 -F %J & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c81 -q 0 -s <payload",
        args: &["-F", "%J"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c81",
        payload: b"[\"a\\u0000b\", {\"k\\u0000x\":\"v\"}, \"\\u12G4x\", \"\\ud83d\\ude00|\\u00e9|\\u20ac\", \"raw\ttab\x01\x7f\xff\", \"\\/\\b\\f\\n\\r\\t\\\"\\\\\", {\"a\":1,\"a\":2}]",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"midge/out/c81\",\"qos\":0,\"retain\":0,\"payloadlen\":120,\"payload\":[\"a\",{\"k\":\"v\"},\"\",\"\xf0\x9f\x98\x80|\xc3\xa9|\xe2\x82\xac\",\"raw\\ttab\\u0001\x7f\xff\",\"/\\b\\f\\n\\r\\t\\\"\\\\\",{\"a\":1,\"a\":2}]}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c82 -q 0 -F %J & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c82 -q 0 -s <payload",
        args: &["-F", "%J"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c82",
        payload: b"\"\\ud83d\"",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"\n",
        err: b"Error: Message payload is not valid JSON on topic midge/out/c82.\n",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c83 -q 0 -F %J & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c83 -q 0 -s <payload",
        args: &["-F", "%J"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c83",
        payload: b"[1,]",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"\n",
        err: b"Error: Message payload is not valid JSON on topic midge/out/c83.\n",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c84 -q 0 -F %J & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c84 -q 0 -s <payload",
        args: &["-F", "%J"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c84",
        payload: b"1e",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"\n",
        err: b"Error: Message payload is not valid JSON on topic midge/out/c84.\n",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c85 -q 1 -F %J & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c85 -q 1 -s <payload",
        args: &["-F", "%J"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "midge/out/c85",
        payload: b"\"\\uDBFF\\uDFFF\\uD834\\uDD1E\"",
        qos: 1,
        retain: false,
        mid: 1,
        props: &[],
        out: b"{\"tst\":\"2020-05-06T21:48:00.123456Z+0000\",\"topic\":\"midge/out/c85\",\"qos\":1,\"retain\":0,\"payloadlen\":26,\"mid\":1,\"payload\":\"\xf4\x8f\xbf\xbf\xf0\x9d\x84\x9e\"}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=UTC0 FAKETIME='2020-05-06 21:48:00.123456789' mosquitto_sub -p PORT -C 1 -V mqttv5 -t '#' -F %J --pretty  # scripted broker sends PUBLISH 34260006746f702f69630007092600016b00017601015b312c7b2275223a225c7530306539227d5d",
        args: &["-F", "%J", "--pretty"],
        tz: "UTC0",
        at: (1588801680, 123456789),
        v5: true,
        topic: "top/ic",
        payload: b"[1,{\"u\":\"\\u00e9\"}]",
        qos: 2,
        retain: false,
        mid: 7,
        props: &[Up("k", "v"), Pfi(1)],
        out: b"{\n\t\"tst\":\t\"2020-05-06T21:48:00.123456Z+0000\",\n\t\"topic\":\t\"top/ic\",\n\t\"qos\":\t2,\n\t\"retain\":\t0,\n\t\"payloadlen\":\t18,\n\t\"mid\":\t7,\n\t\"properties\":\t{\n\t\t\"user-properties\":\t{\n\t\t\t\"k\":\t\"v\"\n\t\t},\n\t\t\"payload-format-indicator\":\t1\n\t},\n\t\"payload\":\t[1, {\n\t\t\t\"u\":\t\"\xc3\xa9\"\n\t\t}]\n}\n",
        err: b"",
    },
    Case {
        cmd: "TZ=IST-5:30 FAKETIME='2024-02-29 00:00:00.001953125' mosquitto_sub -p 18831 -C 1 -W 5 -V mqttv5 -t midge/out/c87 -q 0 -F '%J|%j' & mosquitto_pub -p 18831 -V mqttv5 -t midge/out/c87 -q 0 -s <payload",
        args: &["-F", "%J|%j"],
        tz: "IST-5:30",
        at: (1709145000, 1953125),
        v5: true,
        topic: "midge/out/c87",
        payload: b"[1, \"two\", {\"three\": 3}]",
        qos: 0,
        retain: false,
        mid: 0,
        props: &[],
        out: b"{\"tst\":\"2024-02-29T00:00:00.001953Z+0530\",\"topic\":\"midge/out/c87\",\"qos\":0,\"retain\":0,\"payloadlen\":24,\"payload\":[1,\"two\",{\"three\":3}]}|{\"tst\":\"2024-02-29T00:00:00.001953Z+0530\",\"topic\":\"midge/out/c87\",\"qos\":0,\"retain\":0,\"payloadlen\":24,\"payload\":\"[1, \\\"two\\\", {\\\"three\\\": 3}]\"}\n",
        err: b"",
    },
    ];
}
