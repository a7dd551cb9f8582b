//! Text output: one line per message, like tshark's, the key fields on it; `-v` adds every
//! field and property below the line. Warnings go to standard error.
use std::io::{self, Write};

use super::{format_time, Field, Finding, Protocol, Record, Sink, Summary, Value};

/// Text longer than this is cut on the one-line summary (not with `-v`).
const LINE_TEXT: usize = 64;
/// Binary data longer than this is cut on the one-line summary (not with `-v`).
const LINE_BYTES: usize = 32;
/// What a hidden password looks like.
pub const MASK: &str = "********";

/// Prints text lines to `out` and warnings to `err`.
pub struct TextPrinter<W: Write, E: Write> {
    out: W,
    err: E,
    verbose: bool,
    reveal: bool,
    flush_each: bool,
}

impl<W: Write, E: Write> TextPrinter<W, E> {
    /// `verbose`: every field; `reveal`: passwords in clear; `flush_each`: flush after each
    /// line (live capture).
    pub fn new(out: W, err: E, verbose: bool, reveal: bool, flush_each: bool) -> Self {
        TextPrinter { out, err, verbose, reveal, flush_each }
    }

    fn done(&mut self) -> io::Result<()> {
        if self.flush_each {
            self.out.flush()?;
        }
        Ok(())
    }

    /// The writer back.
    pub fn into_inner(self) -> (W, E) {
        (self.out, self.err)
    }
}

impl<W: Write, E: Write> Sink for TextPrinter<W, E> {
    fn record(&mut self, r: &Record) -> io::Result<()> {
        let mut line = format!(
            "{:>6} {:>11} {} {} → {} {} {}{}",
            r.frame,
            format_time(r.time_ns),
            r.direction,
            r.src(),
            r.dst(),
            client_id(r.client_id.as_deref()),
            if r.protocol == Protocol::Tls { "TLS " } else { "" },
            r.name
        );
        for f in r.fields.iter().filter(|f| f.key) {
            line.push(' ');
            line.push_str(f.name);
            line.push('=');
            line.push_str(&self.compact(&f.value));
        }
        writeln!(self.out, "{line}")?;
        if self.verbose {
            if let Protocol::Mqtt { version, assumed } = r.protocol {
                let note = if assumed { " (assumed: the CONNECT was not captured)" } else { "" };
                writeln!(self.out, "{:18}protocol: MQTT {version}{note}", "")?;
            }
            for f in &r.fields {
                self.verbose_field(f, 18)?;
            }
        }
        self.done()
    }

    fn finding(&mut self, f: &Finding) -> io::Result<()> {
        // `!!` for what an eavesdropper reads; `--` for a note (an encrypted stream).
        let mark = if f.is_problem() { "!!" } else { "--" };
        writeln!(self.out, "{:>6} {:>11} {mark} {}", f.frame, format_time(f.time_ns), f.message())?;
        self.done()
    }

    fn warning(&mut self, message: &str) -> io::Result<()> {
        writeln!(self.err, "midge inspect: warning: {message}")?;
        self.err.flush()
    }

    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        let o = &mut self.out;
        let packets: u64 = s.packets.values().map(|(_, n)| n).sum();
        writeln!(o)?;
        writeln!(
            o,
            "Summary: {}, {} ({} MQTT, {} TLS), {}",
            plural(s.frames, "frame"),
            plural(s.tcp_connections, "TCP connection"),
            s.mqtt_connections,
            s.tls_connections,
            plural(packets, "MQTT packet")
        )?;
        if s.retransmissions + s.out_of_order > 0 {
            writeln!(
                o,
                "TCP: {} retransmitted and {} out-of-order segments reassembled",
                s.retransmissions, s.out_of_order
            )?;
        }
        writeln!(o, "Clients:{}", if s.clients.is_empty() { " none" } else { "" })?;
        let width =
            s.clients.iter().map(|c| client_id(Some(&c.client_id)).chars().count()).max().unwrap_or(0);
        for c in &s.clients {
            let user = c.user.as_ref().map(|u| format!("  user '{}'", escape(u))).unwrap_or_default();
            let id = client_id(Some(&c.client_id));
            writeln!(o, "  {id:width$}  {} → {}  MQTT {}{user}", c.client, c.broker, c.version)?;
        }
        writeln!(o, "Topics:{}", if s.topics.is_empty() { " none" } else { "" })?;
        let width = s.topics.keys().map(|t| t.chars().count() + 2).max().unwrap_or(0);
        for (topic, n) in &s.topics {
            let quoted = format!("'{}'", escape(topic));
            // Both directions: a message published once and delivered once is two PUBLISH.
            writeln!(o, "  {quoted:width$}  {}", plural(*n, "PUBLISH packet"))?;
        }
        let counts: Vec<String> = s.packets.values().map(|(name, n)| format!("{name} {n}")).collect();
        writeln!(o, "Packets: {}", if counts.is_empty() { "none".to_string() } else { counts.join(", ") })?;
        // Findings proper first, then the notes (encrypted streams), each under its heading.
        let (problems, notes): (Vec<&Finding>, Vec<&Finding>) =
            s.findings.iter().partition(|f| f.is_problem());
        writeln!(o, "Findings:{}", if problems.is_empty() { " none" } else { "" })?;
        for f in problems {
            writeln!(o, "  {}: {}", f.severity(), f.message())?;
        }
        if !notes.is_empty() {
            writeln!(o, "Notes:")?;
            for f in notes {
                writeln!(o, "  {}: {}", f.severity(), f.message())?;
            }
        }
        if s.warnings > 0 {
            writeln!(o, "Warnings: {} (on standard error)", s.warnings)?;
        }
        o.flush()
    }
}

impl<W: Write, E: Write> TextPrinter<W, E> {
    /// A value on the one-line summary: long text and data are cut.
    fn compact(&self, v: &Value) -> String {
        match v {
            Value::Bool(b) => u8::from(*b).to_string(),
            Value::Int(n) => n.to_string(),
            Value::Text(t) => quote_cut(t, t.len()),
            Value::Bytes(b) => bytes(b, true),
            Value::Secret(b) if self.reveal => bytes(b, false),
            Value::Secret(_) => format!("'{MASK}'"),
            Value::Reason { code, name } => format!("{name} (0x{code:02x})"),
            Value::List(items) => {
                format!("[{}]", items.iter().map(|i| self.compact(i)).collect::<Vec<_>>().join(", "))
            }
            Value::Group(fields) => {
                // The group's key fields (all of them when none is key).
                let any_key = fields.iter().any(|f| f.key);
                let inner: Vec<String> = fields
                    .iter()
                    .filter(|f| f.key || !any_key)
                    .map(|f| format!("{}={}", f.name, self.compact(&f.value)))
                    .collect();
                format!("{{{}}}", inner.join(" "))
            }
        }
    }

    /// A value in full, for `-v`.
    fn full(&self, v: &Value) -> String {
        match v {
            Value::Text(t) => format!("'{}'", escape(t)),
            Value::Bytes(b) => bytes(b, false),
            Value::List(items) => {
                format!("[{}]", items.iter().map(|i| self.full(i)).collect::<Vec<_>>().join(", "))
            }
            other => self.compact(other),
        }
    }

    fn verbose_field(&mut self, f: &Field, indent: usize) -> io::Result<()> {
        match &f.value {
            Value::Group(fields) => {
                writeln!(self.out, "{:indent$}{}:", "", f.name)?;
                for sub in fields {
                    self.verbose_field(sub, indent + 2)?;
                }
            }
            Value::List(items) if items.iter().any(|i| matches!(i, Value::Group(_))) => {
                for (n, item) in items.iter().enumerate() {
                    writeln!(self.out, "{:indent$}{}[{n}]:", "", f.name)?;
                    if let Value::Group(fields) = item {
                        for sub in fields {
                            self.verbose_field(sub, indent + 2)?;
                        }
                    } else {
                        writeln!(self.out, "{:w$}{}", "", self.full(item), w = indent + 2)?;
                    }
                }
            }
            v => {
                let shown = self.full(v);
                writeln!(self.out, "{:indent$}{}: {shown}", "", f.name)?;
            }
        }
        Ok(())
    }
}

/// "1 frame", "2 frames".
fn plural(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// What an empty client id means: the broker assigns one (a 5.0 broker says which in
/// CONNACK, and that one is shown from then on; a 3.1.1 broker keeps it to itself).
pub const EMPTY_CLIENT_ID: &str = "(empty: the broker assigns one)";

/// The client id column: `-` when unknown, quoted when it has spaces or odd characters.
fn client_id(id: Option<&str>) -> String {
    match id {
        None => "-".into(),
        Some("") => EMPTY_CLIENT_ID.into(),
        Some(id) if !id.is_empty() && id.chars().all(|c| c.is_ascii_graphic() && c != '\'') => id.into(),
        Some(id) => format!("'{}'", escape(id)),
    }
}

/// Text with quotes, backslashes and control characters escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Quoted text, cut after [`LINE_TEXT`] characters; `len` is the size in bytes to report.
fn quote_cut(t: &str, len: usize) -> String {
    if t.chars().count() <= LINE_TEXT {
        return format!("'{}'", escape(t));
    }
    let head: String = t.chars().take(LINE_TEXT).collect();
    format!("'{}'… ({len} bytes)", escape(&head))
}

/// Binary data: quoted text when it is printable UTF-8, else hex.
fn bytes(b: &[u8], cut: bool) -> String {
    if let Ok(t) = std::str::from_utf8(b) {
        if t.chars().all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t')) {
            return if cut { quote_cut(t, b.len()) } else { format!("'{}'", escape(t)) };
        }
    }
    let shown = if cut { &b[..b.len().min(LINE_BYTES)] } else { b };
    let hex: String = shown.iter().map(|x| format!("{x:02x}")).collect();
    if shown.len() < b.len() {
        format!("0x{hex}… ({} bytes)", b.len())
    } else {
        format!("0x{hex}")
    }
}
