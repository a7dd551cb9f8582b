//! Log lines as mosquitto writes them: `1700000000: New client connected from ...`, to the
//! destinations of `log_dest` (a log file is reopened on SIGHUP, for log rotation).
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use midge_broker::config::{LogDest, LogType, LogTypes};
use parking_lot::Mutex;
use tracing_subscriber::fmt::MakeWriter;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// What a line begins with (`log_timestamp`, `log_timestamp_format`).
enum Stamp {
    None,
    /// Seconds since the epoch, mosquitto's default.
    Unix,
    /// strftime's format, in the local time zone.
    Format(String, jiff::tz::TimeZone),
}

struct UnixSecondsFormat {
    stamp: Stamp,
}

impl<S, N> FormatEvent<S, N> for UnixSecondsFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        match &self.stamp {
            Stamp::None => {}
            Stamp::Unix => {
                let now = std::time::SystemTime::now();
                let secs = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                write!(writer, "{secs}: ")?;
            }
            Stamp::Format(format, tz) => {
                let at = crate::clients::output::strftime(format, std::time::SystemTime::now(), tz);
                write!(writer, "{at}: ")?;
            }
        }
        if *event.metadata().level() <= tracing::Level::WARN {
            write!(writer, "{}: ", event.metadata().level().as_str().to_lowercase())?;
        }
        let mut capped = Capped { inner: writer.by_ref(), left: LINE_MAX };
        ctx.field_format().format_fields(Writer::new(&mut capped), event)?;
        writeln!(writer)
    }
}

/// The longest message of a log line, in bytes, as mosquitto (whose lines are at most 1000
/// bytes): a client chooses much of what is logged (a client id may be 65535 bytes long),
/// and must not fill the log, nor block the broker on a full pipe, with it.
const LINE_MAX: usize = 1000;

/// Passes on at most `left` bytes (whole characters), and drops the rest. Control
/// characters are written escaped (`\n`, `\u{0}`): what a client chose (a client id, a user
/// name, a certificate's name) cannot end a line and forge the next one.
struct Capped<'w> {
    inner: Writer<'w>,
    left: usize,
}

impl fmt::Write for Capped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if s.contains(char::is_control) {
            let escaped: String = s
                .chars()
                .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
                .collect();
            return self.write_plain(&escaped);
        }
        self.write_plain(s)
    }
}

impl Capped<'_> {
    fn write_plain(&mut self, s: &str) -> fmt::Result {
        if s.len() <= self.left {
            self.left -= s.len();
            return self.inner.write_str(s);
        }
        let mut end = self.left;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.left = 0;
        self.inner.write_str(&s[..end])
    }
}

/// A log file, appended to; reopened on SIGHUP so that a rotated log is let go. It is
/// opened by [`LogFile::open`] once the broker runs as its `user` (as mosquitto does: root
/// never opens a path the broker's user controls); lines logged before wait in memory.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    sink: Mutex<Sink>,
}

#[derive(Debug)]
enum Sink {
    /// Not opened yet: the lines so far (up to [`PENDING_MAX`] bytes).
    Pending(Vec<u8>),
    Open(File),
}

/// Start-up lines kept for a log file not opened yet.
const PENDING_MAX: usize = 1 << 20;

fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // Created readable by the broker's user only, as mosquitto creates its log.
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

impl LogFile {
    fn new(path: &Path) -> LogFile {
        LogFile { path: path.to_owned(), sink: Mutex::new(Sink::Pending(Vec::new())) }
    }

    /// Opens the file (as the user the broker runs as) and writes the lines logged so far.
    pub fn open(&self) -> io::Result<()> {
        let mut file = open_append(&self.path)?;
        let mut sink = self.sink.lock();
        if let Sink::Pending(lines) = &*sink {
            file.write_all(lines)?;
        }
        *sink = Sink::Open(file);
        Ok(())
    }

    /// Opens the file again by its name (after logrotate moved it away).
    pub fn reopen(&self) -> io::Result<()> {
        let file = open_append(&self.path)?;
        *self.sink.lock() = Sink::Open(file);
        Ok(())
    }

    /// The lines logged while the file was not open yet (empty once it is).
    fn pending(&self) -> Vec<u8> {
        match &*self.sink.lock() {
            Sink::Pending(lines) => lines.clone(),
            Sink::Open(_) => Vec::new(),
        }
    }

    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        match &mut *self.sink.lock() {
            Sink::Open(f) => f.write_all(line),
            Sink::Pending(lines) => {
                if lines.len() + line.len() <= PENDING_MAX {
                    lines.extend_from_slice(line);
                }
                Ok(())
            }
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[derive(Clone)]
enum Target {
    Stderr,
    Stdout,
    File(Arc<LogFile>),
    Syslog(Arc<Syslog>),
    /// `log_dest topic`: lines for the broker to publish (a full channel drops them).
    Topic(tokio::sync::mpsc::Sender<(&'static str, String)>),
}

/// The other end of `log_dest topic`'s channel, until the broker takes it ([`topic_lines`]).
static TOPIC_LINES: parking_lot::Mutex<Option<tokio::sync::mpsc::Receiver<(&'static str, String)>>> =
    parking_lot::Mutex::new(None);

/// With `log_dest topic`: the lines logged so far and from now on, for
/// [`midge_broker::log_topic::run`] to publish (once).
pub fn topic_lines() -> Option<tokio::sync::mpsc::Receiver<(&'static str, String)>> {
    TOPIC_LINES.lock().take()
}

/// `log_dest syslog`: each line a datagram to the system log's socket, as syslog(3) sends
/// it (`<PRIORITY>IDENT[PID]: MESSAGE`), the message with its time as mosquitto sends it. The
/// socket is made at start, before the broker gives root up; anyone may write to `/dev/log`.
struct Syslog {
    socket: std::os::unix::net::UnixDatagram,
    path: PathBuf,
    /// The facility, shifted: daemon (3), or local0 to local7 (16 to 23).
    facility: u8,
    /// The program's name (`mosquitto` when started under that name), and its pid.
    tag: String,
}

/// The system log's socket; `MIDGE_SYSLOG_SOCKET` names another (the tests' own).
fn syslog_path() -> PathBuf {
    std::env::var_os("MIDGE_SYSLOG_SOCKET").map_or_else(|| PathBuf::from("/dev/log"), PathBuf::from)
}

impl Syslog {
    fn new(facility: Option<u8>) -> io::Result<Syslog> {
        let name = std::env::args_os()
            .next()
            .and_then(|a| Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "midge".to_owned());
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        // A stalled system log drops lines rather than stopping the threads that log.
        socket.set_nonblocking(true)?;
        Ok(Syslog {
            socket,
            path: syslog_path(),
            facility: facility.map_or(3, |n| 16 + n) << 3,
            tag: format!("{name}[{}]", std::process::id()),
        })
    }

    fn write_line(&self, level: Option<tracing::Level>, line: &[u8]) -> io::Result<()> {
        let message = line.strip_suffix(b"\n").unwrap_or(line);
        let severity = match level {
            Some(tracing::Level::ERROR) => 3,
            Some(tracing::Level::WARN) => 4,
            Some(tracing::Level::INFO) => 6,
            _ => 7,
        };
        let mut datagram = format!("<{}>{}: ", self.facility | severity, self.tag).into_bytes();
        datagram.extend_from_slice(message);
        self.socket.send_to(&datagram, &self.path).map(drop)
    }
}

/// Every destination of `log_dest`; a line of a kind `log_type` gives is written whole to
/// each (one write call).
#[derive(Clone)]
struct Tee {
    targets: Arc<[Target]>,
    /// The kinds of line written (`log_type`).
    types: LogTypes,
    /// The level of the line being written (for syslog's priority).
    level: Option<tracing::Level>,
    /// Its kind, before the line is read ([`midge_broker::log_topic::kind_of`]).
    kind: Option<LogType>,
}

impl<'a> MakeWriter<'a> for Tee {
    type Writer = Tee;

    fn make_writer(&'a self) -> Tee {
        self.clone()
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Tee {
        Tee {
            targets: self.targets.clone(),
            types: self.types,
            level: Some(*meta.level()),
            kind: Some(midge_broker::log_topic::kind_of(meta.target(), *meta.level())),
        }
    }
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf.strip_suffix(b"\n").unwrap_or(buf));
        let kind = self.kind.map(|k| midge_broker::log_topic::sorted(k, &text));
        if kind.is_some_and(|k| !self.types.has(k)) {
            return Ok(buf.len());
        }
        for t in self.targets.iter() {
            // A full disk, a closed terminal or no system log must not stop the broker: the
            // line is lost.
            let _ = match t {
                Target::Stderr => io::stderr().write_all(buf),
                Target::Stdout => io::stdout().write_all(buf),
                Target::File(f) => f.write_line(buf),
                Target::Syslog(s) => s.write_line(self.level, buf),
                Target::Topic(tx) => {
                    if let Some(topic) = kind.and_then(midge_broker::log_topic::topic) {
                        let _ = tx.try_send((topic, text.clone().into_owned()));
                    }
                    Ok(())
                }
            };
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The broker's logging: which lines, where, and with or without a timestamp.
#[derive(Debug, Clone, Default)]
pub struct LogSettings<'a> {
    /// `log_type` (`-v`: all, set by the configuration's reading).
    pub types: LogTypes,
    /// `log_dest` (empty: standard error).
    pub dest: &'a [LogDest],
    /// `log_timestamp`.
    pub timestamp: bool,
    /// `log_timestamp_format`.
    pub timestamp_format: Option<&'a str>,
    /// `log_facility` (none: daemon).
    pub facility: Option<u8>,
}

/// Starts logging; `RUST_LOG` overrides the level. Returns the log files, to open once the
/// broker runs as its user ([`LogFile::open`]) and to reopen on SIGHUP.
pub fn init(settings: &LogSettings<'_>) -> Vec<Arc<LogFile>> {
    // RUST_LOG, when set, says which lines.
    let rust_log = tracing_subscriber::EnvFilter::try_from_default_env().ok();
    let types = if rust_log.is_some() { LogTypes::ALL } else { settings.types };
    // tracing's filter lets through the most detailed level a kind needs (the lines of the
    // other kinds at that level are dropped as they are written, [`Tee`]). rustls narrates
    // handshakes at debug level, and warns about what clients send (an IP address as SNI,
    // from mosquitto_pub -h 127.0.0.1): the broker logs TLS failures itself. The NATS client
    // (cluster mode) narrates every message at debug level and its connection at info level:
    // the cluster logs its own events ("Cluster: ...").
    let has = |kinds: &[LogType]| kinds.iter().any(|k| types.has(*k));
    let default = if has(&[LogType::Debug]) {
        "debug,rustls=error,async_nats=warn"
    } else if has(&[LogType::Notice, LogType::Information, LogType::Subscribe, LogType::Unsubscribe]) {
        "info,rustls=error,async_nats=warn"
    } else if has(&[LogType::Warning]) {
        "warn,rustls=error"
    } else if has(&[LogType::Error]) {
        "error"
    } else {
        "off"
    };
    let filter = rust_log.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    let mut targets = Vec::new();
    let mut files = Vec::new();
    for d in settings.dest {
        match d {
            LogDest::Stderr => targets.push(Target::Stderr),
            LogDest::Stdout => targets.push(Target::Stdout),
            LogDest::File(path) => {
                let f = Arc::new(LogFile::new(path));
                files.push(f.clone());
                targets.push(Target::File(f));
            }
            LogDest::Nowhere => {}
            LogDest::Topic => {
                let (tx, rx) = tokio::sync::mpsc::channel(midge_broker::log_topic::BACKLOG);
                *TOPIC_LINES.lock() = Some(rx);
                targets.push(Target::Topic(tx));
            }
            LogDest::Syslog => match Syslog::new(settings.facility) {
                Ok(s) => {
                    if !s.path.exists() {
                        eprintln!(
                            "Warning: log_dest syslog: {} does not exist (no system log here?): those lines are lost.",
                            s.path.display()
                        );
                    }
                    targets.push(Target::Syslog(Arc::new(s)));
                }
                Err(e) => {
                    eprintln!("Warning: log_dest syslog: cannot make a socket ({e}): those lines are lost.")
                }
            },
        }
    }
    if settings.dest.is_empty() {
        targets.push(Target::Stderr);
    }
    STDERR_IS_DEST
        .store(targets.iter().any(|t| matches!(t, Target::Stderr)), std::sync::atomic::Ordering::Relaxed);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Tee { targets: targets.into(), types, level: None, kind: None })
        .event_format(UnixSecondsFormat {
            stamp: match (settings.timestamp, settings.timestamp_format) {
                (false, _) => Stamp::None,
                (true, None) => Stamp::Unix,
                (true, Some(f)) => Stamp::Format(f.to_owned(), crate::clients::output::local_time_zone()),
            },
        })
        .init();
    files
}

/// The message for a log file that cannot be opened.
pub fn open_error(f: &LogFile, e: &io::Error) -> String {
    format!("Error: Unable to open log file {} for writing: {e}.", f.path().display())
}

/// The broker stops before its log files were opened: what it logged for them goes to
/// standard error (unless it went there already), so the reason is not lost, and, with
/// `open`, to the log files too, where they can be opened (call it so once root is given
/// up: root never writes to a path the broker's user controls).
pub fn failed_before_open(files: &[Arc<LogFile>], open: bool) {
    if !STDERR_IS_DEST.load(std::sync::atomic::Ordering::Relaxed) {
        if let Some(first) = files.first() {
            let _ = io::stderr().write_all(&first.pending());
        }
    }
    if open {
        for f in files {
            let _ = f.open();
        }
    }
}

/// Whether standard error is one of the log's destinations.
static STDERR_IS_DEST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A start-up error: logged, and on standard error too when standard error is not one of
/// the log's destinations (with `-d` it is still the terminal until the broker is ready), so
/// that a broker that fails to start always says why where it was started.
pub fn error_to_log_and_stderr(message: &str) {
    tracing::error!("{}", message.strip_prefix("Error: ").unwrap_or(message));
    if !STDERR_IS_DEST.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{message}");
    }
}
