//! What mosquitto_pub, mosquitto_sub and mosquitto_rr share: connection options, the
//! CONNECT they build, `-d`, and errors with mosquitto's words and exit codes.
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::ArgAction;
use midge_client::Options;
use midge_codec::{Bytes, Connect, Property, PropertyContext, ProtocolVersion, QoS, Will};
use thiserror::Error;

use super::c_numbers::{atoi, strtol_whole};
use super::output::{Format, FormatError};
use super::properties::{PropertyArgs, PropertyError};
use super::tls::TlsArgs;

/// Options every client tool takes, as mosquitto's clients spell them. As theirs, an option
/// that takes a value takes the next word whatever it is (`-k -1`), and its value is
/// checked when it is read, in mosquitto's words.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// MQTT host to connect to (default localhost).
    #[arg(short = 'h', long = "host", allow_hyphen_values = true)]
    pub host: Option<String>,
    /// Network port (default 1883, or 8883 with TLS).
    #[arg(short = 'p', long = "port", allow_hyphen_values = true, value_parser = port)]
    pub port: Option<u16>,
    /// User name.
    #[arg(short = 'u', long = "username", allow_hyphen_values = true)]
    pub username: Option<String>,
    /// Password.
    #[arg(short = 'P', long = "pw", allow_hyphen_values = true)]
    pub password: Option<String>,
    /// Client id (default: assigned by the broker; random for MQTT 3.1).
    #[arg(short = 'i', long = "id", allow_hyphen_values = true)]
    pub id: Option<String>,
    /// Client id prefix, followed by the process id.
    #[arg(short = 'I', long = "id-prefix", allow_hyphen_values = true)]
    pub id_prefix: Option<String>,
    /// Keep alive in seconds (5 to 65535; default 60).
    #[arg(short = 'k', long = "keepalive", allow_hyphen_values = true, value_parser = keepalive)]
    pub keepalive: Option<u16>,
    /// Persistent session: no clean session (5.0: the session does not expire).
    #[arg(short = 'c', long = "disable-clean-session")]
    pub persistent: bool,
    /// Session expiry interval (5.0), seconds; -1 or ∞ for never.
    #[arg(short = 'x', long = "session-expiry-interval", allow_hyphen_values = true, value_parser = session_expiry)]
    pub session_expiry: Option<u32>,
    /// Quality of service (default 0).
    #[arg(short = 'q', long = "qos", allow_hyphen_values = true, value_parser = qos)]
    pub qos: Option<QoS>,
    /// Protocol version: mqttv5 (5), mqttv311 (311) or mqttv31 (31).
    #[arg(short = 'V', long = "protocol-version", allow_hyphen_values = true, value_parser = version)]
    pub version: Option<ProtocolVersion>,
    /// Whether a -D came after the last -V: as with mosquitto, -D makes it MQTT 5.0 (set
    /// from the order of the arguments, by [`CommonArgs::note_order`]).
    #[arg(skip)]
    pub property_after_version: bool,
    /// Print every packet sent and received.
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,
    /// Print no error messages.
    #[arg(long = "quiet")]
    pub quiet: bool,
    /// Bind the outgoing socket to this address.
    #[arg(short = 'A', allow_hyphen_values = true, value_parser = bind_address)]
    pub bind_address: Option<IpAddr>,
    /// mqtt(s)://[username[:password]@]host[:port]/topic
    #[arg(short = 'L', long = "url", allow_hyphen_values = true, value_parser = parse_url)]
    pub url: Option<Url>,
    /// MQTT 5.0 property: -D command identifier value [value].
    #[arg(short = 'D', long = "property", num_args = 3..=4, allow_negative_numbers = true, action = ArgAction::Append, value_names = ["COMMAND", "IDENTIFIER", "VALUE"])]
    pub properties: Vec<String>,
    /// Maximum QoS 1 / 2 messages in flight.
    #[arg(short = 'M', allow_hyphen_values = true, value_parser = max_inflight)]
    pub max_inflight: Option<u16>,
    /// Will topic.
    #[arg(long = "will-topic", allow_hyphen_values = true, value_parser = will_topic)]
    pub will_topic: Option<String>,
    /// Will payload.
    #[arg(long = "will-payload", allow_hyphen_values = true)]
    pub will_payload: Option<String>,
    /// Will QoS.
    #[arg(long = "will-qos", allow_hyphen_values = true, value_parser = will_qos)]
    pub will_qos: Option<QoS>,
    /// Retain the will.
    #[arg(long = "will-retain")]
    pub will_retain: bool,
    /// Disable Nagle's algorithm (always done).
    #[arg(long = "nodelay")]
    pub nodelay: bool,
    /// A SOCKS5 proxy: not supported (the option is known, to be refused in so many words).
    #[arg(long = "proxy", hide = true, allow_hyphen_values = true, value_parser = |_: &str| Err::<String, _>(ArgError::Unsupported("--proxy")))]
    pub proxy: Option<String>,
    /// A Unix socket: not supported (as --proxy).
    #[arg(long = "unix", hide = true, allow_hyphen_values = true, value_parser = |_: &str| Err::<String, _>(ArgError::Unsupported("--unix")))]
    pub unix: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Print usage.
    #[arg(long = "help")]
    pub help: bool,
    /// Print the version (exit code 1, as mosquitto's clients).
    #[arg(long = "version")]
    pub version_asked: bool,
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
}

/// A failure, as mosquitto reports it: message lines for standard error and an exit code.
#[derive(Debug)]
pub struct Failure {
    pub lines: Vec<String>,
    pub code: u8,
    /// Printed even with --quiet, as mosquitto's clients print their usage errors.
    pub loud: bool,
}

impl Failure {
    /// A usage error, followed by a blank line and "Use 'mosquitto_pub --help' to see
    /// usage." (after one more blank line where mosquitto prints one).
    pub fn usage(tool: Tool, e: &ArgError) -> Self {
        let mut lines = vec![e.to_string()];
        if e.spaced() {
            lines.push(String::new());
        }
        lines.extend([String::new(), format!("Use '{} --help' to see usage.", tool.name)]);
        Failure::loud(lines)
    }

    /// A failure of the command line that mosquitto reports even with --quiet (exit code 1).
    pub fn loud(lines: Vec<String>) -> Self {
        Failure { lines, code: 1, loud: true }
    }

    pub fn new(message: impl Into<String>, code: u8) -> Self {
        Failure::lines(vec![message.into()], code)
    }

    pub fn lines(lines: Vec<String>, code: u8) -> Self {
        Failure { lines, code, loud: false }
    }

    pub fn report(self, quiet: bool) -> ExitCode {
        if !quiet || self.loud {
            for l in &self.lines {
                eprintln!("{l}");
            }
        }
        ExitCode::from(self.code)
    }
}

/// A command line mosquitto's clients refuse, in their words. They print each as it is,
/// then the usage hint; [`ArgError::spaced`] says which have a blank line more.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ArgError {
    #[error("Error: Unknown option '{0}'.")]
    Unknown(String),
    #[error("Error: {flag} argument given but no {what} specified.")]
    Missing { flag: &'static str, what: &'static str },
    #[error("Error: -M argument given but max_inflight not specified.")]
    MissingMaxInflight,
    #[error("Error: {0} is not supported by midge.")]
    Unsupported(&'static str),
    #[error("Error: -i and -I argument cannot be used together.")]
    IdAndPrefix,
    #[error("Error: Only one type of message can be sent at once.")]
    MessageTypes,
    #[error("Error: Invalid protocol version argument given.")]
    Version,
    #[error("Error: Invalid QoS given: {0}")]
    Qos(i32),
    #[error("Error: Invalid will QoS {0}.")]
    WillQos(i32),
    #[error("Error: Invalid keepalive given, it must be between 5 and 65535 inclusive.")]
    Keepalive,
    #[error("Error: Invalid port given: {0}")]
    Port(i32),
    #[error("Error: Maximum inflight messages must be greater than 0.")]
    MaxInflight,
    #[error("Error: Invalid bind address '{0}'.")]
    BindAddress(String),
    #[error("Error: unsupported URL scheme.")]
    UrlScheme,
    #[error("Error: Invalid URL for -L argument specified - topic missing.")]
    UrlTopic,
    #[error("Error: session-expiry-interval not a number.")]
    ExpiryNotNumber,
    #[error("Error: session-expiry-interval out of range.")]
    ExpiryRange,
    #[error("Error: Malformed UTF-8 in {0} argument.")]
    Utf8(&'static str),
    /// A topic to publish to (`publish`, `response`, `will`) with a wildcard.
    #[error("Error: Invalid {0} topic '{1}', does it contain '+' or '#'?")]
    Topic(&'static str, String),
    /// A topic filter (`subscription`, `filter`, `unsubscribe`) with a misplaced wildcard.
    #[error("Error: Invalid {0} topic '{1}', are all '+' and '#' wildcards correct?")]
    Filter(&'static str, String),
    #[error("Error: --repeat argument must be >0.")]
    Repeat,
    #[error("Error: --repeat-delay argument must be >=0.0.")]
    RepeatDelay,
    #[error("Error: Invalid message count \"{0}\".")]
    Count(i32),
    #[error("Error: Invalid timeout \"{0}\".")]
    Timeout(i32),
    #[error("Error: --random-filter chance must be between 0.1-100.0")]
    RandomFilter,
    #[error("Error: {0}")]
    Format(#[from] FormatError),
    #[error(transparent)]
    Property(#[from] PropertyError),
    #[error("Error: Will payload given, but no will topic given.")]
    WillPayload,
    #[error("Error: Will retain given, but no will topic given.")]
    WillRetain,
    #[error("Error: Both certfile and keyfile must be provided if one of them is set.")]
    CertAndKey,
    #[error("Error: You must provide a client id if you are using an infinite session expiry interval.")]
    InfiniteExpiryId,
    #[error("Error: You must provide a client id if you are using the -c option.")]
    PersistentId,
    #[error("Error: You must specify a topic to subscribe to.")]
    NoSubscription,
    #[error("Error: All of topic, message, and response topic must be supplied.")]
    Incomplete,
    /// Anything else clap refuses, in its words.
    #[error("Error: {0}")]
    Other(String),
}

impl ArgError {
    /// Whether mosquitto prints a blank line after the message, before the blank line and
    /// the usage hint: it does for most errors in an option's value, not for an invalid
    /// topic, port or QoS, a -F format, nor for what it checks once all options are read.
    pub fn spaced(&self) -> bool {
        use ArgError::*;
        match self {
            Missing { .. }
            | MissingMaxInflight
            | Unsupported(_)
            | IdAndPrefix
            | MessageTypes
            | Version
            | WillQos(_)
            | Keepalive
            | MaxInflight
            | BindAddress(_)
            | UrlScheme
            | ExpiryNotNumber
            | ExpiryRange
            | Repeat
            | RepeatDelay
            | Count(_)
            | Timeout(_)
            | RandomFilter
            | Utf8(_) => true,
            Property(e) => e.spaced(),
            _ => false,
        }
    }
}

fn version(s: &str) -> Result<ProtocolVersion, ArgError> {
    match s {
        "mqttv5" | "5" => Ok(ProtocolVersion::V5),
        "mqttv311" | "311" => Ok(ProtocolVersion::V3_1_1),
        "mqttv31" | "31" => Ok(ProtocolVersion::V3_1),
        _ => Err(ArgError::Version),
    }
}

fn qos_or(s: &str, bad: fn(i32) -> ArgError) -> Result<QoS, ArgError> {
    let n = atoi(s);
    u8::try_from(n).ok().and_then(QoS::from_u8).ok_or(bad(n))
}

fn qos(s: &str) -> Result<QoS, ArgError> {
    qos_or(s, ArgError::Qos)
}

fn will_qos(s: &str) -> Result<QoS, ArgError> {
    qos_or(s, ArgError::WillQos)
}

fn keepalive(s: &str) -> Result<u16, ArgError> {
    u16::try_from(atoi(s)).ok().filter(|k| *k >= 5).ok_or(ArgError::Keepalive)
}

/// mosquitto takes port 0 (for a Unix socket); midge, without those, refuses it.
fn port(s: &str) -> Result<u16, ArgError> {
    let n = atoi(s);
    u16::try_from(n).ok().filter(|p| *p > 0).ok_or(ArgError::Port(n))
}

fn max_inflight(s: &str) -> Result<u16, ArgError> {
    match atoi(s) {
        n if n < 1 => Err(ArgError::MaxInflight),
        n => Ok(u16::try_from(n).unwrap_or(u16::MAX)),
    }
}

/// -A: an address, or a host name resolved to its first address (as libmosquitto binds to
/// what getaddrinfo gives).
fn bind_address(s: &str) -> Result<IpAddr, ArgError> {
    use std::net::ToSocketAddrs;
    if let Ok(ip) = s.parse() {
        return Ok(ip);
    }
    let first = (s, 0).to_socket_addrs().ok().and_then(|mut a| a.next());
    first.map(|a| a.ip()).ok_or_else(|| ArgError::BindAddress(s.to_owned()))
}

/// -x: seconds, -1 or ∞ for never (u32::MAX); a number as `strtol` reads one.
fn session_expiry(s: &str) -> Result<u32, ArgError> {
    if s == "∞" {
        return Ok(u32::MAX);
    }
    match strtol_whole(s).ok_or(ArgError::ExpiryNotNumber)? {
        -1 => Ok(u32::MAX),
        n => u32::try_from(n).map_err(|_| ArgError::ExpiryRange),
    }
}

/// A string mosquitto_validate_utf8 refuses for a character in it (a control character or a
/// non-character, [`midge_codec::is_disallowed_char`]), as a broker would.
fn has_disallowed_char(s: &str) -> bool {
    s.chars().any(midge_codec::is_disallowed_char)
}

/// As mosquitto's clients: a topic or filter longer than an MQTT string (65,535 bytes) or
/// with a character a broker refuses (a control character, a non-character) is "Malformed
/// UTF-8" (mosquitto_validate_utf8 refuses it), named by its option.
fn check_string(what: &'static str, s: &str) -> Result<(), ArgError> {
    if s.len() <= usize::from(u16::MAX) && !has_disallowed_char(s) {
        return Ok(());
    }
    let flag = match what {
        "will" => "--will-topic",
        "response" => "-e",
        "filter" => "-T",
        "unsubscribe" => "-U",
        _ => "-t",
    };
    Err(ArgError::Utf8(flag))
}

/// A topic to publish to, or an error naming it as `what` ("publish", "response", "will").
pub fn topic_name(what: &'static str, s: &str) -> Result<String, ArgError> {
    check_string(what, s)?;
    match midge_codec::validate_topic_name(s) {
        Ok(()) => Ok(s.to_owned()),
        Err(_) => Err(ArgError::Topic(what, s.to_owned())),
    }
}

/// A topic filter, or an error naming it as `what` ("subscription", "filter", "unsubscribe").
pub fn topic_filter(what: &'static str, s: &str) -> Result<String, ArgError> {
    check_string(what, s)?;
    match midge_codec::validate_topic_filter(s) {
        Ok(()) => Ok(s.to_owned()),
        Err(_) => Err(ArgError::Filter(what, s.to_owned())),
    }
}

fn will_topic(s: &str) -> Result<String, ArgError> {
    topic_name("will", s)
}

/// -W of sub and rr: whole seconds, at least 1.
pub fn timeout(s: &str) -> Result<u64, ArgError> {
    let n = atoi(s);
    u64::try_from(n).ok().filter(|n| *n > 0).ok_or(ArgError::Timeout(n))
}

/// -F of sub and rr, checked as mosquitto checks it.
pub fn format(s: &str) -> Result<Format, ArgError> {
    Ok(Format::parse(s)?)
}

#[derive(Debug, Clone)]
pub struct Url {
    tls: bool,
    username: Option<String>,
    password: Option<String>,
    host: String,
    port: Option<u16>,
    /// The topic after the address: the tool checks it as it checks -t.
    pub topic: String,
}

fn parse_url(s: &str) -> Result<Url, ArgError> {
    let scheme =
        |prefix: &str| s.get(..prefix.len()).filter(|p| p.eq_ignore_ascii_case(prefix)).map(|p| p.len());
    let (tls, rest) = match (scheme("mqtt://"), scheme("mqtts://")) {
        (Some(n), _) => (false, &s[n..]),
        (_, Some(n)) => (true, &s[n..]),
        _ => return Err(ArgError::UrlScheme),
    };
    let (authority, topic) = rest.split_once('/').ok_or(ArgError::UrlTopic)?;
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
        Some((h, p)) if !h.is_empty() => (h.to_owned(), Some(port(p)?)),
        _ => (hostport.to_owned(), None),
    };
    if host.is_empty() {
        return Err(ArgError::UrlScheme);
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

/// The common options once checked together, as mosquitto checks them after reading them.
pub struct Checked {
    pub version: ProtocolVersion,
    /// The properties of -D, with -x's (or -c's) Session Expiry Interval in CONNECT's.
    pub properties: PropertyArgs,
}

impl CommonArgs {
    /// Notes what depends on the order of the arguments: as mosquitto's clients, a -D makes
    /// the protocol MQTT 5.0, unless a -V comes after it.
    pub fn note_order(&mut self, m: &clap::ArgMatches) {
        let last = |id: &str| m.indices_of(id).and_then(Iterator::max);
        self.property_after_version = last("properties") > last("version");
    }

    /// An id the library refuses, as mosquitto's clients find when they create the client,
    /// after their own checks: an empty one, or none at all with a persistent session (-c
    /// with 5.0 and a finite -x, where their own check does not look).
    pub fn invalid_id(&self) -> bool {
        let none = self.id.is_none() && self.id_prefix.is_none();
        self.id.as_deref() == Some("") || (self.persistent && none)
    }

    /// An id mosquitto_validate_utf8 refuses (a control character): mosquitto_new fails
    /// without setting errno, so mosquitto's clients exit 1 without a word, and so do midge's
    /// ([`Failure::lines`] with none).
    pub fn malformed_id(&self) -> bool {
        self.id.as_deref().is_some_and(has_disallowed_char)
    }

    /// What mosquitto checks once all options are read, in its order.
    pub fn check(&self, default_version: ProtocolVersion) -> Result<Checked, ArgError> {
        let mut properties = PropertyArgs::parse(&self.properties)?;
        if self.id.is_some() && self.id_prefix.is_some() {
            return Err(ArgError::IdAndPrefix);
        }
        if self.will_topic.is_none() && self.will_payload.is_some() {
            return Err(ArgError::WillPayload);
        }
        if self.will_topic.is_none() && self.will_retain {
            return Err(ArgError::WillRetain);
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(ArgError::CertAndKey);
        }
        let version = if self.property_after_version {
            ProtocolVersion::V5
        } else {
            self.version.unwrap_or(default_version)
        };
        // A client id of one's own (not made from -I) is needed for a session that lasts.
        let own_id = self.id.is_some() && self.id_prefix.is_none();
        if version.is_v5() {
            let expiry = self.session_expiry.or(self.persistent.then_some(u32::MAX)).filter(|e| *e > 0);
            if expiry == Some(u32::MAX) && !own_id {
                return Err(ArgError::InfiniteExpiryId);
            }
            if let Some(e) = expiry {
                if properties.connect.session_expiry_interval().is_some() {
                    return Err(PropertyError::Duplicate(PropertyContext::Connect).into());
                }
                properties.connect.push(Property::SessionExpiryInterval(e));
            }
        } else if self.persistent && !own_id {
            return Err(ArgError::PersistentId);
        }
        Ok(Checked { version, properties })
    }

    /// Builds the connection: CONNECT, address, TLS, debug hook.
    pub fn setup(&self, checked: Checked, url: Option<&Url>) -> Result<Setup, Failure> {
        let Checked { version, mut properties } = checked;
        let tls_wanted = self.tls.wanted() || url.is_some_and(|u| u.tls);
        let host =
            url.map(|u| u.host.clone()).or_else(|| self.host.clone()).unwrap_or_else(|| "localhost".into());
        let port = url.and_then(|u| u.port).or(self.port).unwrap_or(if tls_wanted { 8883 } else { 1883 });
        let client_id = match (&self.id, &self.id_prefix) {
            (Some(id), _) => id.clone(),
            (None, Some(prefix)) => format!("{prefix}{}", std::process::id()),
            (None, None) if version == ProtocolVersion::V3_1 => random_client_id(),
            (None, None) => String::new(),
        };
        let mut c = Connect::new(version, client_id.clone());
        c.clean_start = !self.persistent;
        c.keep_alive = self.keepalive.unwrap_or(60);
        c.username = url.and_then(|u| u.username.clone()).or_else(|| self.username.clone()).map(Into::into);
        c.password = url
            .and_then(|u| u.password.clone())
            .or_else(|| self.password.clone())
            .map(|p| Bytes::from(p.into_bytes()));
        // mosquitto_username_pw_set refuses a user name mosquitto_validate_utf8 refuses.
        let bad_username = c.username.as_deref().is_some_and(has_disallowed_char);
        if bad_username || (c.password.is_some() && c.username.is_none() && !version.is_v5()) {
            return Err(Failure::new("Error: Problem setting username and/or password.", 1));
        }
        if let Some(topic) = &self.will_topic {
            c.will = Some(Will {
                topic: topic.clone().into(),
                payload: Bytes::from(self.will_payload.clone().unwrap_or_default().into_bytes()),
                qos: self.will_qos.unwrap_or(QoS::AtMostOnce),
                retain: self.will_retain,
                properties: std::mem::take(&mut properties.will),
            });
        }
        if version.is_v5() {
            c.properties = std::mem::take(&mut properties.connect);
        }
        let mut options = Options::new(host, port, c);
        options.bind_address = self.bind_address;
        options.connect_timeout = Duration::from_secs(30);
        options.max_inflight = self.max_inflight.unwrap_or(20);
        if tls_wanted {
            options.connector =
                Some(self.tls.connector().map_err(|e| Failure::new(format!("Error: {e}"), 1))?);
        }
        if self.debug {
            options.on_packet = Some(super::debug::hook(&client_id, version));
        }
        Ok(Setup { options, version, qos: self.qos.unwrap_or(QoS::AtMostOnce), properties })
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
        return Failure::lines(lines, exit);
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
            // An option and its value; an option followed by a space alone has none.
            Some(i) if i + 1 < line.len() => {
                args.push(&line[..i]);
                args.push(&line[i + 1..]);
            }
            Some(i) => args.push(&line[..i]),
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

/// What mosquitto says of an option given last without its value: the option as it names
/// it and what was missing, by the option's long name (or short, for those without one).
const MISSING: &[(&str, &str, &str)] = &[
    ("-A", "-A", "address"),
    ("--host", "-h", "host"),
    ("--port", "-p", "port"),
    ("--username", "-u", "username"),
    ("--pw", "-P", "password"),
    ("--id", "-i", "id"),
    ("--id-prefix", "-I", "id prefix"),
    ("--keepalive", "-k", "keepalive"),
    ("--session-expiry-interval", "-x", "session expiry interval"),
    ("--qos", "-q", "QoS"),
    ("--protocol-version", "--protocol-version", "version"),
    ("--url", "-L", "URL"),
    ("--will-topic", "--will-topic", "will topic"),
    ("--will-payload", "--will-payload", "will payload"),
    ("--will-qos", "--will-qos", "will QoS"),
    ("--proxy", "--proxy", "proxy url"),
    ("--unix", "--unix", "socket path"),
    ("--cafile", "--cafile", "file"),
    ("--capath", "--capath", "directory"),
    ("--cert", "--cert", "file"),
    ("--key", "--key", "file"),
    ("--ciphers", "--ciphers", "ciphers"),
    ("--tls-alpn", "--tls-alpn", "protocol"),
    ("--tls-version", "--tls-version", "version"),
    ("--topic", "-t", "topic"),
    ("--message", "-m", "message"),
    ("--file", "-f", "file"),
    ("--repeat", "--repeat", "count"),
    ("--repeat-delay", "--repeat-delay", "time"),
    ("-C", "-C", "count"),
    ("--random-filter", "--random-filter", "chance"),
    ("-F", "-F", "format"),
    ("-W", "-W", "timeout"),
    ("--filter-out", "-T", "topic filter"),
    ("--unsubscribe", "-U", "unsubscribe topic"),
    ("--response-topic", "-e", "response topic"),
];

/// An option given without its value (or -D without enough), in mosquitto's words; `arg`
/// as clap shows it ("--topic <TOPIC>").
fn missing_value(arg: &str) -> ArgError {
    let name = arg.split_whitespace().next().unwrap_or("");
    match name {
        "-M" => ArgError::MissingMaxInflight,
        "--property" => PropertyError::NotEnoughArguments.into(),
        _ => match MISSING.iter().find(|(n, _, _)| *n == name) {
            Some((_, flag, what)) => ArgError::Missing { flag, what },
            None => ArgError::Other(format!("{name} argument given but no value specified.")),
        },
    }
}

/// A command-line error in mosquitto's words: "Error: Unknown option '-z'.", "Error: -t
/// argument given but no topic specified.", or the check of a value that failed.
pub fn clap_error(e: &clap::Error) -> ArgError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if let Some(checked) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<ArgError>()) {
        return checked.clone();
    }
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    match e.kind() {
        ErrorKind::UnknownArgument => ArgError::Unknown(arg),
        ErrorKind::InvalidValue | ErrorKind::WrongNumberOfValues | ErrorKind::TooFewValues => {
            missing_value(&arg)
        }
        _ => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            ArgError::Other(first.strip_prefix("error: ").unwrap_or(first).to_owned())
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_options_file_is_read_as_mosquittos_clients_read_it() {
        let text = b"# my broker\n-h broker.example\r\n-u  bob smith\n\n   -d\n-P p#1\n-v \n";
        let args: Vec<&[u8]> = options_file_lines(text);
        let want: Vec<&[u8]> =
            vec![b"-h", b"broker.example", b"-u", b" bob smith", b"-d", b"-P", b"p#1", b"-v"];
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
        assert_eq!(parse_url("http://h/t").unwrap_err(), ArgError::UrlScheme);
        assert_eq!(parse_url("mqtt://h").unwrap_err(), ArgError::UrlTopic);
        assert!(parse_url("MQTT://h/t").is_ok());
    }

    #[test]
    fn versions() {
        assert_eq!(version("mqttv5"), Ok(ProtocolVersion::V5));
        assert_eq!(version("311"), Ok(ProtocolVersion::V3_1_1));
        assert_eq!(version("31"), Ok(ProtocolVersion::V3_1));
        assert_eq!(version("4"), Err(ArgError::Version));
    }

    #[test]
    fn values_are_read_as_mosquitto_reads_them() {
        assert_eq!(qos("-1"), Err(ArgError::Qos(-1)));
        assert_eq!(qos("2"), Ok(QoS::ExactlyOnce));
        assert_eq!(keepalive("65536"), Err(ArgError::Keepalive));
        assert_eq!(port("-1"), Err(ArgError::Port(-1)));
        assert_eq!(max_inflight("0"), Err(ArgError::MaxInflight));
        assert_eq!(session_expiry("-1"), Ok(u32::MAX));
        assert_eq!(session_expiry("∞"), Ok(u32::MAX));
        assert_eq!(session_expiry("A"), Err(ArgError::ExpiryNotNumber));
        assert_eq!(session_expiry("-2"), Err(ArgError::ExpiryRange));
        assert_eq!(session_expiry("4294967296"), Err(ArgError::ExpiryRange));
    }

    #[test]
    fn usage_errors_are_spaced_as_mosquittos() {
        let tool = Tool { name: "mosquitto_pub" };
        let lines = |e: ArgError| Failure::usage(tool, &e).lines.join("\n");
        assert_eq!(lines(ArgError::Keepalive).matches('\n').count(), 3);
        assert_eq!(
            lines(ArgError::Qos(3)),
            "Error: Invalid QoS given: 3\n\nUse 'mosquitto_pub --help' to see usage."
        );
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
