//! What mosquitto_pub, mosquitto_sub and mosquitto_rr share: connection options, the
//! CONNECT they build, `-d`, and errors with mosquitto's words and exit codes.
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::ArgAction;
use midge_client::Options;
use midge_codec::{Bytes, Connect, Property, PropertyContext, ProtocolVersion, QoS, Will};
use thiserror::Error;

use super::properties::{PropertyArgs, PropertyError};
use super::tls::TlsArgs;

/// Options every client tool takes, as mosquitto's clients spell them.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// MQTT host to connect to (default localhost).
    #[arg(short = 'h', long = "host")]
    pub host: Option<String>,
    /// Network port (default 1883, or 8883 with TLS).
    #[arg(short = 'p', long = "port")]
    pub port: Option<String>,
    /// User name.
    #[arg(short = 'u', long = "username")]
    pub username: Option<String>,
    /// Password.
    #[arg(short = 'P', long = "pw")]
    pub password: Option<String>,
    /// Client id (default: assigned by the broker; random for MQTT 3.1).
    #[arg(short = 'i', long = "id")]
    pub id: Option<String>,
    /// Client id prefix, followed by the process id.
    #[arg(short = 'I', long = "id-prefix")]
    pub id_prefix: Option<String>,
    /// Keep alive in seconds (5 to 65535; default 60).
    #[arg(short = 'k', long = "keepalive")]
    pub keepalive: Option<String>,
    /// Persistent session: no clean session (5.0: the session does not expire).
    #[arg(short = 'c', long = "disable-clean-session")]
    pub persistent: bool,
    /// Session expiry interval (5.0), seconds; -1 or ∞ for never.
    #[arg(short = 'x', long = "session-expiry-interval", allow_hyphen_values = true)]
    pub session_expiry: Option<String>,
    /// Quality of service (default 0).
    #[arg(short = 'q', long = "qos")]
    pub qos: Option<String>,
    /// Protocol version: mqttv5 (5), mqttv311 (311) or mqttv31 (31).
    #[arg(short = 'V', long = "protocol-version")]
    pub version: Option<String>,
    /// Print every packet sent and received.
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,
    /// Print no error messages.
    #[arg(long = "quiet")]
    pub quiet: bool,
    /// Bind the outgoing socket to this address.
    #[arg(short = 'A')]
    pub bind_address: Option<IpAddr>,
    /// mqtt(s)://[username[:password]@]host[:port]/topic
    #[arg(short = 'L', long = "url")]
    pub url: Option<String>,
    /// MQTT 5.0 property: -D command identifier value [value].
    #[arg(short = 'D', long = "property", num_args = 3..=4, action = ArgAction::Append, value_names = ["COMMAND", "IDENTIFIER", "VALUE"])]
    pub properties: Vec<String>,
    /// Will topic.
    #[arg(long = "will-topic")]
    pub will_topic: Option<String>,
    /// Will payload.
    #[arg(long = "will-payload")]
    pub will_payload: Option<String>,
    /// Will QoS.
    #[arg(long = "will-qos")]
    pub will_qos: Option<String>,
    /// Retain the will.
    #[arg(long = "will-retain")]
    pub will_retain: bool,
    /// Disable Nagle's algorithm (always done).
    #[arg(long = "nodelay")]
    pub nodelay: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Print usage.
    #[arg(long = "help")]
    pub help: bool,
}

/// Which tool runs, for messages ("Use 'mosquitto_pub --help' to see usage.").
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub name: &'static str,
}

/// A connection ready to open, and what the tool needs to know of it.
pub struct Setup {
    pub options: Options,
    pub version: ProtocolVersion,
    pub qos: QoS,
    pub properties: PropertyArgs,
    /// The topic from -L, if any.
    pub url_topic: Option<String>,
}

/// A failure, as mosquitto reports it: message lines for standard error and an exit code.
#[derive(Debug)]
pub struct Failure {
    pub lines: Vec<String>,
    pub code: u8,
}

impl Failure {
    pub fn usage(tool: Tool, message: impl Into<String>) -> Self {
        Failure {
            lines: vec![message.into(), String::new(), format!("Use '{} --help' to see usage.", tool.name)],
            code: 1,
        }
    }

    pub fn new(message: impl Into<String>, code: u8) -> Self {
        Failure { lines: vec![message.into()], code }
    }

    pub fn report(self, quiet: bool) -> ExitCode {
        if !quiet {
            for l in &self.lines {
                eprintln!("{l}");
            }
        }
        ExitCode::from(self.code)
    }
}

/// An option value mosquitto's clients refuse, in their words: each is printed as it is,
/// followed by the usage hint.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ArgError {
    #[error("Error: Invalid protocol version argument given.")]
    Version,
    #[error("Error: Invalid QoS given: {0}")]
    Qos(String),
    #[error("Error: Invalid will QoS {0}.")]
    WillQos(String),
    #[error("Error: unsupported URL scheme.")]
    Url,
    #[error("Error: Invalid session-expiry-interval '{0}'.")]
    SessionExpiry(String),
    #[error(transparent)]
    Property(#[from] PropertyError),
}

pub fn parse_version(s: Option<&str>, default: ProtocolVersion) -> Result<ProtocolVersion, ArgError> {
    match s {
        None => Ok(default),
        Some("mqttv5" | "5") => Ok(ProtocolVersion::V5),
        Some("mqttv311" | "311") => Ok(ProtocolVersion::V3_1_1),
        Some("mqttv31" | "31") => Ok(ProtocolVersion::V3_1),
        Some(_) => Err(ArgError::Version),
    }
}

/// A QoS argument; `bad` is mosquitto's message for a bad one, which differs between `-q`
/// ([`ArgError::Qos`]) and `--will-qos` ([`ArgError::WillQos`]).
pub fn parse_qos(v: Option<&str>, bad: impl Fn(String) -> ArgError) -> Result<QoS, ArgError> {
    match v {
        None => Ok(QoS::AtMostOnce),
        Some(s) => s.parse::<u8>().ok().and_then(QoS::from_u8).ok_or_else(|| bad(s.to_owned())),
    }
}

/// A positive whole number argument.
pub fn parse_positive(v: &str) -> Option<u64> {
    v.parse::<u64>().ok().filter(|n| *n > 0)
}

struct Url {
    tls: bool,
    username: Option<String>,
    password: Option<String>,
    host: String,
    port: Option<u16>,
    topic: String,
}

fn parse_url(s: &str) -> Result<Url, ArgError> {
    let bad = || ArgError::Url;
    let (tls, rest) = if let Some(r) = s.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = s.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(bad());
    };
    let (authority, topic) = rest.split_once('/').ok_or_else(bad)?;
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((a, b)) => (Some(a.to_owned()), Some(b.to_owned())),
            None => (Some(u.to_owned()), None),
        },
        None => (None, None),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => (h.to_owned(), Some(p.parse().map_err(|_| bad())?)),
        _ => (hostport.to_owned(), None),
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(Url { tls, username, password, host, port, topic: topic.to_owned() })
}

fn random_client_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let mut x = h.finish();
    let mut id = String::from("mosq-");
    for _ in 0..18 {
        id.push(ALPHABET[(x % ALPHABET.len() as u64) as usize] as char);
        x = x.rotate_left(7).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5DEE_CE66;
    }
    id
}

fn parse_expiry(s: &str) -> Result<u32, ArgError> {
    match s {
        "-1" | "∞" => Ok(u32::MAX),
        n => n.parse().map_err(|_| ArgError::SessionExpiry(n.to_owned())),
    }
}

impl CommonArgs {
    /// Builds the connection: CONNECT, address, TLS, debug hook.
    pub fn setup(&self, tool: Tool, default_version: ProtocolVersion) -> Result<Setup, Failure> {
        let usage = |m: String| Failure::usage(tool, m);
        let bad = |e: ArgError| usage(e.to_string());
        let version = parse_version(self.version.as_deref(), default_version).map_err(bad)?;
        let qos = parse_qos(self.qos.as_deref(), ArgError::Qos).map_err(bad)?;
        let will_qos = parse_qos(self.will_qos.as_deref(), ArgError::WillQos).map_err(bad)?;
        let keepalive = match &self.keepalive {
            None => 60,
            Some(k) => k.parse::<u16>().ok().filter(|k| *k >= 5).ok_or_else(|| {
                usage("Error: Invalid keepalive given, it must be between 5 and 65535 inclusive.".into())
            })?,
        };
        let port_arg = match &self.port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| usage(format!("Error: Invalid port given: {p}")))?,
            ),
        };
        let mut properties = PropertyArgs::parse(&self.properties).map_err(|e| bad(e.into()))?;
        let url = self.url.as_deref().map(parse_url).transpose().map_err(bad)?;
        let tls_wanted = self.tls.wanted() || url.as_ref().is_some_and(|u| u.tls);
        let host = url
            .as_ref()
            .map(|u| u.host.clone())
            .or_else(|| self.host.clone())
            .unwrap_or_else(|| "localhost".into());
        let port =
            url.as_ref().and_then(|u| u.port).or(port_arg).unwrap_or(if tls_wanted { 8883 } else { 1883 });
        let client_id = match (&self.id, &self.id_prefix) {
            (Some(id), _) => id.clone(),
            (None, Some(prefix)) => format!("{prefix}{}", std::process::id()),
            (None, None) if version == ProtocolVersion::V3_1 => random_client_id(),
            (None, None) => String::new(),
        };
        if client_id.is_empty() && self.persistent {
            return Err(usage("Error: You must provide a client id if you are using the -c option.".into()));
        }
        let mut c = Connect::new(version, client_id.clone());
        c.clean_start = !self.persistent;
        c.keep_alive = keepalive;
        c.username =
            url.as_ref().and_then(|u| u.username.clone()).or_else(|| self.username.clone()).map(Into::into);
        c.password = url
            .as_ref()
            .and_then(|u| u.password.clone())
            .or_else(|| self.password.clone())
            .map(|p| Bytes::from(p.into_bytes()));
        if c.password.is_some() && c.username.is_none() && !version.is_v5() {
            return Err(Failure::new("Error: Problem setting username and/or password.", 1));
        }
        if let Some(topic) = &self.will_topic {
            c.will = Some(Will {
                topic: topic.clone().into(),
                payload: Bytes::from(self.will_payload.clone().unwrap_or_default().into_bytes()),
                qos: will_qos,
                retain: self.will_retain,
                properties: std::mem::take(&mut properties.will),
            });
        } else if self.will_payload.is_some() {
            return Err(usage("Error: Will payload given, but no will topic given.".into()));
        } else if self.will_retain {
            return Err(usage("Error: Will retain given, but no will topic given.".into()));
        }
        if version.is_v5() {
            c.properties = std::mem::take(&mut properties.connect);
            let expiry = match &self.session_expiry {
                Some(x) => Some(parse_expiry(x).map_err(bad)?),
                None if self.persistent => Some(u32::MAX),
                None => None,
            };
            if let Some(e) = expiry {
                if c.properties.session_expiry_interval().is_some() {
                    return Err(bad(PropertyError::Duplicate(PropertyContext::Connect).into()));
                }
                c.properties.push(Property::SessionExpiryInterval(e));
            }
        }
        let mut options = Options::new(host, port, c);
        options.bind_address = self.bind_address;
        options.connect_timeout = Duration::from_secs(30);
        if tls_wanted {
            options.connector =
                Some(self.tls.connector().map_err(|e| Failure::new(format!("Error: {e}"), 1))?);
        }
        if self.debug {
            options.on_packet = Some(super::debug::hook(&client_id, version));
        }
        Ok(Setup { options, version, qos, properties, url_topic: url.map(|u| u.topic) })
    }
}

/// The port of MQTT over TLS (IANA's secure-mqtt).
const MQTT_TLS_PORT: u16 = 8883;

/// What a connection was opened to, for the messages about its failure.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub version: ProtocolVersion,
    pub port: u16,
    /// Whether the client spoke TLS.
    pub tls: bool,
}

impl Target {
    pub fn of(setup: &Setup) -> Target {
        Target { version: setup.version, port: setup.options.port, tls: setup.options.connector.is_some() }
    }
}

/// midge's own line under `-d` (mosquitto's tools have none) for a client without TLS on a TLS
/// port: the broker answered in TLS, or it is 8883 and closed the connection.
fn plain_to_tls_hint(port: u16) -> String {
    format!(
        "Hint: port {port} expects TLS: give the CA's certificate with --cafile (or --capath), and --cert and \
         --key if the broker requires a client certificate."
    )
}

/// How a failed connection is reported, in the words and exit codes of mosquitto's tools:
/// `Connection error: ...` for a refusal (exit code: the return or reason code), `Error:
/// ...` or `Unable to connect (...).` for the rest. With `debug` (-d), what libmosquitto
/// logs about the failure goes to standard output first, as -d prints its log there.
pub fn connect_failure(e: &midge_client::Error, to: &Target, tool_is_pub: bool, debug: bool) -> Failure {
    let Target { version, port, tls } = *to;
    if let Some(code) = e.refused_code() {
        let (text, exit) = if version.is_v5() {
            (code.description().to_owned(), code.as_u8())
        } else {
            let rc = midge_codec::ConnectReturnCode::from_reason(code);
            (rc.description().to_owned(), rc as u8)
        };
        let mut lines = vec![format!("Connection error: {text}")];
        if tool_is_pub {
            lines.push(if version.is_v5() {
                "Error: A network protocol error occurred when communicating with the broker.".into()
            } else {
                "Error: The connection was refused.".into()
            });
        }
        return Failure { lines, code: exit };
    }
    if e.is_lookup() {
        // libmosquitto's connect call fails at once, with MOSQ_ERR_EAI.
        return Failure::new("Unable to connect (Lookup error.).", 1);
    }
    if e.is_tls() {
        if debug && e.is_tls_host_name() {
            println!("Error: host name verification failed.");
        }
        // mosquitto_pub reports it as an error code of its own (8); sub and rr as a failure
        // to connect.
        return if tool_is_pub {
            Failure::new("Error: A TLS error occurred.", 8)
        } else {
            Failure::new("Unable to connect (A TLS error occurred.).", 1)
        };
    }
    if e.is_lost() {
        if debug {
            if let Some(alert) = e.tls_alert() {
                // The server refused the TLS connection (a revoked, unknown or missing client
                // certificate): libmosquitto prints OpenSSL's line for the alert.
                println!("{}", alert.openssl_line());
            } else if !tls && port == MQTT_TLS_PORT {
                println!("{}", plain_to_tls_hint(port));
            }
        }
        return Failure::new("Error: The connection was lost.", 7);
    }
    if e.is_protocol() {
        // A malformed packet, or one out of place, where CONNACK was due (MOSQ_ERR_PROTOCOL).
        if debug {
            if let Some(command) = e.unrecognised_command() {
                // libmosquitto's log line ends with a newline of its own.
                println!("Error: Unrecognised command {command}\n");
            }
            if e.answered_in_tls() {
                println!("{}", plain_to_tls_hint(port));
            }
        }
        return Failure::new(
            "Error: A network protocol error occurred when communicating with the broker.",
            2,
        );
    }
    Failure::new(format!("Error: {}", strip_os_error(&e.to_string())), 1)
}

/// "Connection refused (os error 111)" reads "Connection refused", as strerror says it.
pub fn strip_os_error(s: &str) -> String {
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_owned(),
        _ => s.to_owned(),
    }
}

/// A single-threaded runtime for a command-line client.
/// The options in the user's options file for `name` (`mosquitto_pub`, `mosquitto_sub`,
/// `mosquitto_rr`), as mosquitto's clients read it: `$XDG_CONFIG_HOME/NAME`, else
/// `$HOME/.config/NAME`; one option a line, its value the rest of the line after the first
/// space; lines starting with `#` left out; no file, no options. They come before those of
/// the command line, which win.
pub fn options_file_args(name: &str) -> Vec<std::ffi::OsString> {
    use std::os::unix::ffi::OsStrExt;
    let path = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(dir) => std::path::PathBuf::from(dir).join(name),
        None => match std::env::var_os("HOME") {
            Some(home) => std::path::PathBuf::from(home).join(".config").join(name),
            None => return Vec::new(),
        },
    };
    let Ok(text) = std::fs::read(&path) else { return Vec::new() };
    options_file_lines(&text).into_iter().map(|a| std::ffi::OsStr::from_bytes(a).to_os_string()).collect()
}

fn options_file_lines(text: &[u8]) -> Vec<&[u8]> {
    let mut args = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first() == Some(&b'#') {
            continue;
        }
        // strtok(line, " "): leading spaces are skipped; the value is all after the space.
        let start = line.iter().position(|&b| b != b' ').unwrap_or(line.len());
        let line = &line[start..];
        if line.is_empty() {
            continue;
        }
        match line.iter().position(|&b| b == b' ') {
            Some(i) => {
                args.push(&line[..i]);
                args.push(&line[i + 1..]);
            }
            None => args.push(line),
        }
    }
    args
}

pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("Error: {e}"), 1))
}

/// A command-line error in mosquitto's words: "Error: Unknown option '-z'.", "Error: -t
/// argument given but no topic specified."
pub fn clap_error(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    match e.kind() {
        ErrorKind::UnknownArgument => format!("Error: Unknown option '{arg}'."),
        ErrorKind::InvalidValue | ErrorKind::WrongNumberOfValues | ErrorKind::TooFewValues => {
            // "--topic <TOPIC>" or "-t <TOPIC>": name the short flag, as mosquitto does.
            let long = arg.split_whitespace().next().unwrap_or("");
            let (flag, what) = match long {
                "--topic" => ("-t", "topic"),
                "--message" => ("-m", "message"),
                "--host" => ("-h", "host"),
                "--port" => ("-p", "port"),
                "--id" => ("-i", "id"),
                "--id-prefix" => ("-I", "id prefix"),
                "--username" => ("-u", "username"),
                "--pw" => ("-P", "password"),
                "--qos" => ("-q", "QoS"),
                "--keepalive" => ("-k", "keepalive"),
                "--file" => ("-f", "file"),
                "--filter-out" => ("-T", "topic filter"),
                "--unsubscribe" => ("-U", "unsubscribe topic"),
                "--response-topic" => ("-e", "response topic"),
                "--url" => ("-L", "URL"),
                "--protocol-version" => ("-V", "protocol version"),
                "--property" => ("-D", "property"),
                other => (other, "value"),
            };
            format!("Error: {flag} argument given but no {what} specified.")
        }
        _ => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            format!("Error: {}", first.strip_prefix("error: ").unwrap_or(first))
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_options_file_is_read_as_mosquittos_clients_read_it() {
        let text = b"# my broker\n-h broker.example\r\n-u  bob smith\n\n   -d\n-P p#1\n";
        let args: Vec<&[u8]> = options_file_lines(text);
        let want: Vec<&[u8]> = vec![b"-h", b"broker.example", b"-u", b" bob smith", b"-d", b"-P", b"p#1"];
        assert_eq!(args, want);
    }

    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("mqtts://alice:secret@broker.example:8884/a/b").unwrap();
        assert!(u.tls);
        assert_eq!(u.username.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, "broker.example");
        assert_eq!(u.port, Some(8884));
        assert_eq!(u.topic, "a/b");
        let u = parse_url("mqtt://h/t").unwrap();
        assert!(!u.tls && u.port.is_none() && u.username.is_none());
        assert!(parse_url("http://h/t").is_err());
        assert!(parse_url("mqtt://h").is_err());
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version(Some("mqttv5"), ProtocolVersion::V3_1_1), Ok(ProtocolVersion::V5));
        assert_eq!(parse_version(Some("311"), ProtocolVersion::V5), Ok(ProtocolVersion::V3_1_1));
        assert_eq!(parse_version(Some("31"), ProtocolVersion::V5), Ok(ProtocolVersion::V3_1));
        assert!(parse_version(Some("4"), ProtocolVersion::V5).is_err());
    }

    #[test]
    fn random_ids_look_like_libmosquitto_ones() {
        let id = random_client_id();
        assert_eq!(id.len(), 23);
        assert!(id.starts_with("mosq-"));
    }

    #[test]
    fn os_error_suffix() {
        assert_eq!(strip_os_error("Connection refused (os error 111)"), "Connection refused");
    }
}
