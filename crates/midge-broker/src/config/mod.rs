//! Broker configuration: a mosquitto.conf-style file read into a typed [`Config`], in two
//! layers: [`lex`] turns lines into directives, [`parse_directives`] reads them strictly
//! (the broker) and [`parse_lenient`] reads them past wrong lines (`midge audit`), both
//! with the same scoping, recording where each value came from in [`Sources`].
pub mod bridge;
pub mod cluster;
mod error;
pub mod lex;
mod options;
mod parse;
mod run_as;
mod sources;
#[cfg(test)]
mod tests;
mod values;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use error::{ConfigError, LineError};
pub use lex::{lex_file, lex_file_including, lex_str, Directive, LexError};
pub use options::{is_known_option, makes_default_listener};
pub use parse::{parse_directives, parse_file, parse_lenient, parse_str, Parsed};
pub use run_as::{can_read, can_write, run_as, RunAs, RunAsError, DEFAULT_USER};
pub use sources::{Section, Sources};
pub use values::parse_bool;

/// The lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2 (and 1.3).
    V1_2,
    /// TLS 1.3 only.
    V1_3,
}

/// The TLS settings of a listener (mosquitto's certfile, keyfile, cafile, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// The server certificate chain (PEM).
    pub certfile: Option<PathBuf>,
    /// Its private key (PEM).
    pub keyfile: Option<PathBuf>,
    /// CA certificates that client certificates must chain to (PEM file).
    pub cafile: Option<PathBuf>,
    /// A directory of such CA certificates.
    pub capath: Option<PathBuf>,
    /// Certificate revocation lists (PEM).
    pub crlfile: Option<PathBuf>,
    /// Clients must present a certificate signed by the CA.
    pub require_certificate: bool,
    /// The certificate's Common Name is the client's user name.
    pub use_identity_as_username: bool,
    /// The certificate's whole subject is the client's user name.
    pub use_subject_as_username: bool,
    /// The lowest TLS version accepted (`tls_version`); 1.2 when unset.
    pub min_version: Option<TlsVersion>,
}

impl TlsSettings {
    /// True when the listener speaks TLS: it has a certificate and a key.
    pub fn enabled(&self) -> bool {
        self.certfile.is_some() || self.keyfile.is_some()
    }

    /// Its files, by option: key, certificate, CA, CRL and CA directory.
    pub fn files(&self) -> [(&'static str, Option<&PathBuf>); 5] {
        [
            ("keyfile", self.keyfile.as_ref()),
            ("certfile", self.certfile.as_ref()),
            ("cafile", self.cafile.as_ref()),
            ("crlfile", self.crlfile.as_ref()),
            ("capath", self.capath.as_ref()),
        ]
    }
}

/// mosquitto's Topic Alias Maximum for a listener without `max_topic_alias`.
pub const DEFAULT_MAX_TOPIC_ALIAS: u16 = 10;

/// What a listener speaks (`protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// MQTT over TCP (or TLS): mosquitto's `protocol mqtt`, the default.
    #[default]
    Mqtt,
    /// MQTT over WebSockets (or secure WebSockets with certfile/keyfile): `protocol
    /// websockets`, as mosquitto.
    WebSockets,
    /// The HTTP endpoint of the broker's metrics (`/metrics`, `/healthz`): `protocol http`,
    /// a midge option. Not MQTT: the security options do not apply to it.
    Http,
}

/// One listener: a port, the address to bind, and its TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// TCP port (0 picks a free one).
    pub port: u16,
    /// The address to bind; `None` binds every interface, IPv4 and IPv6, as mosquitto does.
    pub bind: Option<String>,
    /// `socket_domain`: only IPv4 or only IPv6 addresses (`None`: both).
    pub domain: Option<IpDomain>,
    /// mosquitto's default listener, made by `port`, `bind_address` or listener options
    /// before any `listener` line: it uses the security settings written before the first
    /// `listener` line, even with `per_listener_settings true`.
    pub default: bool,
    /// Its own security settings (`per_listener_settings true`); `None`: the global ones.
    pub security: Option<SecuritySettings>,
    /// Where it was declared, for messages ("file:line"), if from a file.
    pub origin: Option<String>,
    /// TLS settings; TLS is on when [`TlsSettings::enabled`].
    pub tls: TlsSettings,
    /// `max_topic_alias`: the Topic Alias Maximum announced to 5.0 clients (mosquitto's
    /// default 10; 0: no aliases from clients).
    pub max_topic_alias: u16,
    /// `mount_point`: a prefix put before every topic its clients publish and subscribe to,
    /// and taken off what they receive, so that they see a tree of their own.
    pub mount_point: Option<String>,
    /// What it speaks.
    pub protocol: ListenerProtocol,
    /// `max_qos`: the highest QoS its clients may use (5.0 clients are told; subscriptions
    /// are granted at most this).
    pub max_qos: midge_codec::QoS,
    /// `max_connections`: its clients at once (`None`: no limit).
    pub max_connections: Option<usize>,
    /// `bind_interface`: bind to this network interface's address (of each family), as
    /// mosquitto does, instead of to `bind`'s.
    pub bind_interface: Option<String>,
    /// `accept_protocol_versions` (mosquitto 2.1): the protocol levels its clients may
    /// speak, of 3 (3.1), 4 (3.1.1) and 5; `None`: all.
    pub accept_protocol_versions: Option<Vec<u8>>,
    /// `http_dir`: on a WebSockets listener, the directory whose files plain HTTP requests
    /// get.
    pub http_dir: Option<PathBuf>,
}

impl Listener {
    /// A listener on `address:port`.
    pub fn new(port: u16, bind: Option<&str>) -> Self {
        Listener {
            port,
            bind: bind.map(str::to_owned),
            domain: None,
            default: false,
            security: None,
            origin: None,
            tls: TlsSettings::default(),
            max_topic_alias: DEFAULT_MAX_TOPIC_ALIAS,
            mount_point: None,
            protocol: ListenerProtocol::Mqtt,
            max_qos: midge_codec::QoS::ExactlyOnce,
            max_connections: None,
            bind_interface: None,
            accept_protocol_versions: None,
            http_dir: None,
        }
    }

    /// True for a listener MQTT clients connect to (over TCP or WebSockets), false for the
    /// metrics endpoint.
    pub fn is_mqtt(&self) -> bool {
        self.protocol != ListenerProtocol::Http
    }

    /// True when its IPv6 address comes with an IPv4 one and may be left out on a system
    /// without IPv6: every address, or `localhost`.
    pub fn ipv6_optional(&self) -> bool {
        matches!(self.bind.as_deref(), None | Some("localhost"))
    }

    /// True when bound to a loopback address only.
    pub fn is_local(&self) -> bool {
        match &self.bind {
            Some(b) => b == "localhost" || b.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
            None => false,
        }
    }

    /// A name for messages: "port 1883 on 127.0.0.1 (broker.conf:3)".
    pub fn describe(&self) -> String {
        let mut s = format!("port {}", self.port);
        if let Some(b) = &self.bind {
            s.push_str(&format!(" on {b}"));
        }
        if let Some(i) = &self.bind_interface {
            s.push_str(&format!(" on interface {i}"));
        }
        if let Some(o) = &self.origin {
            s.push_str(&format!(" ({o})"));
        }
        s
    }

    /// The socket addresses to bind: those `bind` resolves to (`localhost`: 127.0.0.1 and
    /// ::1), or without it the IPv4 and the IPv6 wildcard addresses (as mosquitto binds them:
    /// one socket each), kept to the `socket_domain` family when one is set.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        let all: Vec<SocketAddr> = match &self.bind {
            Some(host) if host == "localhost" => vec![
                SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, self.port)),
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, self.port)),
            ],
            Some(host) => {
                use std::net::ToSocketAddrs;
                (host.as_str(), self.port).to_socket_addrs().map(Iterator::collect).unwrap_or_default()
            }
            None => vec![
                SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, self.port)),
                SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, self.port)),
            ],
        };
        let all = match &self.bind_interface {
            Some(name) => on_interface(all, name),
            None => all,
        };
        let mut out: Vec<SocketAddr> = Vec::with_capacity(all.len());
        for a in all {
            let wanted = match self.domain {
                Some(IpDomain::V4) => a.is_ipv4(),
                Some(IpDomain::V6) => a.is_ipv6(),
                None => true,
            };
            if wanted && !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }
}

/// `bind_interface`: each address of `wanted` becomes the first address of interface
/// `name` (its name compared without case) of the same family, as mosquitto binds it; a
/// family the interface has no address of is left out, and so is an address `bind_address`
/// named that is not the interface's (mosquitto warns of both).
fn on_interface(wanted: Vec<SocketAddr>, name: &str) -> Vec<SocketAddr> {
    let found: Vec<SocketAddr> = nix::ifaddrs::getifaddrs()
        .map(|all| {
            all.filter(|i| i.interface_name.eq_ignore_ascii_case(name))
                .filter_map(|i| {
                    let a = i.address?;
                    if let Some(v4) = a.as_sockaddr_in() {
                        Some(SocketAddr::from((v4.ip(), 0)))
                    } else {
                        // With its scope: a link-local address needs it to be bound.
                        let v6 = a.as_sockaddr_in6()?;
                        Some(std::net::SocketAddrV6::new(v6.ip(), 0, 0, v6.scope_id()).into())
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    wanted
        .into_iter()
        .filter_map(|a| {
            let mut at = *found.iter().find(|f| f.is_ipv4() == a.is_ipv4())?;
            if !a.ip().is_unspecified() && a.ip() != at.ip() {
                tracing::warn!(
                    "Interface address for {name} does not match specified listener address ({}).",
                    a.ip()
                );
                return None;
            }
            at.set_port(a.port());
            Some(at)
        })
        .collect()
}

/// Where log lines go (`log_dest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDest {
    /// Standard error.
    Stderr,
    /// Standard output.
    Stdout,
    /// A file, appended to (reopened on SIGHUP, for log rotation).
    File(PathBuf),
    /// Nowhere (`log_dest none`).
    Nowhere,
    /// Messages on `$SYS/broker/log/...` ([`crate::log_topic`]).
    Topic,
    /// The system log, through `/dev/log`, as mosquitto's `syslog(3)`: facility daemon, or
    /// local0 to local7 with `log_facility 0` to `7`.
    Syslog,
}

/// A kind of log line, as mosquitto sorts them (`log_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogType {
    /// `error`.
    Error,
    /// `warning`.
    Warning,
    /// `notice`: clients coming and going.
    Notice,
    /// `information`: the broker's other events (start, listeners, reload, ...).
    Information,
    /// `subscribe`: a line per subscription (`CLIENT QOS FILTER`).
    Subscribe,
    /// `unsubscribe`: a line per unsubscription (`CLIENT FILTER`).
    Unsubscribe,
    /// `websockets`: mosquitto's libwebsockets lines; midge has none (its WebSocket
    /// clients come and go in notices as any other).
    Websockets,
    /// `debug`: every packet, as `-v`.
    Debug,
}

/// The kinds of line logged (`log_type`): mosquitto's mask. The lines given are exactly
/// what is logged (`log_type subscribe` alone logs subscriptions and nothing else); `none`
/// clears what the lines before it gave, `all` sets every kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogTypes(u8);

impl LogTypes {
    /// Nothing (`log_type none`).
    pub const NONE: LogTypes = LogTypes(0);
    /// Everything (`log_type all`, `-v`).
    pub const ALL: LogTypes = LogTypes(u8::MAX);
    /// No `log_type` line: mosquitto's error, warning, notice and information.
    pub const DEFAULT: LogTypes = LogTypes::NONE
        .with(LogType::Error)
        .with(LogType::Warning)
        .with(LogType::Notice)
        .with(LogType::Information);

    /// These and `kind`.
    pub const fn with(self, kind: LogType) -> LogTypes {
        LogTypes(self.0 | 1 << kind as u8)
    }

    /// Whether lines of `kind` are logged.
    pub const fn has(self, kind: LogType) -> bool {
        self.0 & 1 << kind as u8 != 0
    }
}

impl Default for LogTypes {
    fn default() -> LogTypes {
        LogTypes::DEFAULT
    }
}

/// An address family a listener is kept to (`socket_domain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpDomain {
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
}

/// Who may connect and what they may do: for every listener, or with
/// `per_listener_settings true` for one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecuritySettings {
    /// `allow_anonymous`; when unset, anonymous clients are allowed only in local only mode,
    /// as mosquitto 2.0 does.
    pub allow_anonymous: Option<bool>,
    /// `password_file`: users and their password hashes (mosquitto's format).
    pub password_file: Option<PathBuf>,
    /// `acl_file`: who may publish and subscribe where (mosquitto's format).
    pub acl_file: Option<PathBuf>,
    /// `allow_zero_length_clientid`: whether a client may connect with an empty client id
    /// and be given one (unset: yes, as mosquitto).
    pub allow_zero_length_clientid: Option<bool>,
    /// `auto_id_prefix`: what the client ids the broker gives begin with (unset: `auto-`).
    pub auto_id_prefix: Option<String>,
    /// `use_username_as_clientid`: a client's id is its user name; a client without one is
    /// refused (Not authorized), as mosquitto.
    pub use_username_as_clientid: bool,
    /// `clientid_prefixes`: only client ids that begin with this may connect (the others are
    /// refused: Not authorized), as mosquitto.
    pub clientid_prefixes: Option<String>,
}

impl SecuritySettings {
    /// Whether a client may connect with an empty client id (mosquitto's default: yes).
    pub fn zero_length_clientid_allowed(&self) -> bool {
        self.allow_zero_length_clientid.unwrap_or(true)
    }

    /// The prefix of the client ids the broker assigns.
    pub fn id_prefix(&self) -> &str {
        self.auto_id_prefix.as_deref().unwrap_or("auto-")
    }
}

/// Where and how the broker keeps its state on disk (mosquitto's `persistence` options, and
/// midge's `persistence_sync_interval`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistence {
    /// `persistence`: keep retained messages, persistent sessions and their queued messages
    /// across restarts.
    pub enabled: bool,
    /// `persistence_location`: the directory (none: the working directory).
    pub location: Option<PathBuf>,
    /// `persistence_file`: mosquitto's database file name (default `mosquitto.db`); midge
    /// imports it at first start, and keeps its own store beside it in the directory of that
    /// name with `.midge` appended.
    pub file: String,
    /// `autosave_interval`: seconds between compactions of the store (0: only at SIGUSR1).
    /// With `autosave_on_changes`, a count of changes instead.
    pub autosave_interval: u64,
    /// `autosave_on_changes`.
    pub autosave_on_changes: bool,
    /// `persistence_sync_interval`: milliseconds between syncs to disk, with
    /// acknowledgements not waiting for them (0, the default: every acknowledgement waits
    /// for its sync). A midge option.
    pub sync_interval_ms: u64,
}

impl Default for Persistence {
    fn default() -> Self {
        Persistence {
            enabled: false,
            location: None,
            file: "mosquitto.db".to_owned(),
            autosave_interval: 1800,
            autosave_on_changes: false,
            sync_interval_ms: 0,
        }
    }
}

impl Persistence {
    /// mosquitto's database file (imported at first start).
    pub fn mosquitto_file(&self) -> PathBuf {
        self.location.clone().unwrap_or_default().join(&self.file)
    }

    /// midge's store directory.
    pub fn store_dir(&self) -> PathBuf {
        self.location.clone().unwrap_or_default().join(format!("{}.midge", self.file))
    }
}

/// Everything the broker needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Listeners; empty means the default: localhost:1883, IPv4 and IPv6 ("local only mode").
    pub listeners: Vec<Listener>,
    /// The security settings of every listener, or with `per_listener_settings true` of
    /// the default listener (those written before the first `listener` line).
    pub security: SecuritySettings,
    /// `per_listener_settings`: each listener has its own security settings.
    pub per_listener_settings: bool,
    /// `max_keepalive`: the longest keep alive a client may ask for, in seconds; a keep
    /// alive of 0 (none) counts as longer. `None` (the default, or 0 in the file, as
    /// mosquitto 2.0.20): no limit.
    pub max_keepalive: Option<u16>,
    /// `max_packet_size`: the largest packet accepted, in bytes (0: the protocol's maximum).
    pub max_packet_size: u32,
    /// `max_inflight_messages`: QoS 1 and 2 messages in flight to each client (0: 65535).
    pub max_inflight_messages: u16,
    /// `max_queued_messages`: deliveries queued per session beyond those in flight.
    pub max_queued_messages: usize,
    /// `max_queued_bytes`: the payload bytes queued per session beyond those in flight,
    /// beside their count; the first limit reached applies (0: none).
    pub max_queued_bytes: usize,
    /// `memory_limit`: the bytes of messages held (topic, payload and properties) past which publishers are
    /// disconnected and their messages dropped (0: none).
    pub memory_limit: usize,
    /// `connection_messages`: log each connection, client and disconnection (true).
    pub connection_messages: bool,
    /// `max_inflight_bytes`: the payload bytes of QoS 1 and 2 messages in flight to each
    /// client, beside their count (0: no limit).
    pub max_inflight_bytes: usize,
    /// `message_size_limit`: the largest payload accepted, in bytes (0: no limit); a larger
    /// PUBLISH is dropped (5.0: 0x97 in its acknowledgement), a CONNECT with a larger will
    /// refused.
    pub message_size_limit: u32,
    /// `upgrade_outgoing_qos`: messages go to subscribers at the subscription's QoS, even
    /// when published at a lower one (as mosquitto: not what the MQTT spec says).
    pub upgrade_outgoing_qos: bool,
    /// `check_retain_source`: a retained message goes to a new subscription only while its
    /// publisher may still publish on its topic (the ACL in force is asked each time).
    pub check_retain_source: bool,
    /// `queue_qos0_messages`: QoS 0 messages are queued for persistent sessions while their
    /// client is away (within `max_queued_messages`), as mosquitto's option.
    pub queue_qos0_messages: bool,
    /// `retain_available`: whether retained messages are supported (5.0 clients are told).
    pub retain_available: bool,
    /// `response_information`: a topic prefix given to 5.0 clients that ask for Response
    /// Information; the client id is appended ("responses/" gives "responses/CLIENT/").
    /// A midge option.
    pub response_information: Option<String>,
    /// `auth_failure_delay`: the longest a refused login from one address is delayed, in
    /// seconds, as failures from it repeat (0 turns the slowdown off). A midge option.
    pub auth_failure_delay_ms: u64,
    /// `log_dest`: where log lines go (none given: standard error).
    pub log_dest: Vec<LogDest>,
    /// `log_timestamp_format`: strftime's format of the time a line begins with, in the
    /// local time zone, instead of the Unix time.
    pub log_timestamp_format: Option<String>,
    /// `log_facility`: the syslog facility local0 to local7 (`None`: daemon).
    pub log_facility: Option<u8>,
    /// `log_type`: the kinds of line logged (none given: [`LogTypes::DEFAULT`]).
    pub log_types: Option<LogTypes>,
    /// `log_timestamp`: lines begin with the time in seconds since 1970.
    pub log_timestamp: bool,
    /// `pid_file`: written with the broker's process id at start, removed at exit.
    pub pid_file: Option<PathBuf>,
    /// `user`: started as root, the broker runs as this user once its listeners are open
    /// and its files read (none given: `mosquitto`, or `nobody` when there is no such user).
    pub user: Option<String>,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Persistence to disk.
    pub persistence: Persistence,
    /// `persistent_client_expiration`: sessions that never expire by themselves (3.1.1
    /// clean session off, 5.0 expiry 0xFFFFFFFF) end after this long offline.
    pub persistent_client_expiration: Option<std::time::Duration>,
    /// Bridges to other brokers (`connection` blocks).
    pub bridges: Vec<bridge::Bridge>,
    /// Cluster mode on NATS JetStream (`cluster_*` options); `None`: a single node.
    pub cluster: Option<cluster::Cluster>,
    /// `sys_interval`: seconds between updates of the `$SYS/broker/...` topics (0: none).
    pub sys_interval: u64,
    /// `websockets_headers_size`: the largest WebSocket handshake request accepted, in bytes
    /// (0: the default, [`DEFAULT_WEBSOCKETS_HEADERS_SIZE`]).
    pub websockets_headers_size: u16,
    /// The file it was read from.
    pub source: Option<PathBuf>,
}

/// The largest WebSocket handshake request (request line and headers) accepted without
/// `websockets_headers_size`. mosquitto's default, 1024 bytes, counts only the header values
/// libwebsockets keeps; midge counts the whole request, and a browser's (with its user agent,
/// origin and cookies) often passes 1 KiB: 4 KiB lets in what mosquitto lets in.
pub const DEFAULT_WEBSOCKETS_HEADERS_SIZE: usize = 4096;

impl Default for Config {
    fn default() -> Self {
        Config {
            listeners: Vec::new(),
            security: SecuritySettings::default(),
            per_listener_settings: false,
            max_keepalive: None,
            max_packet_size: 0,
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            memory_limit: 0,
            connection_messages: true,
            max_inflight_bytes: 0,
            message_size_limit: 0,
            upgrade_outgoing_qos: false,
            check_retain_source: false,
            queue_qos0_messages: false,
            retain_available: true,
            response_information: None,
            auth_failure_delay_ms: 5000,
            log_dest: Vec::new(),
            log_facility: None,
            log_timestamp_format: None,
            log_types: None,
            log_timestamp: true,
            pid_file: None,
            user: None,
            connect_timeout_secs: 10,
            persistence: Persistence::default(),
            persistent_client_expiration: None,
            bridges: Vec::new(),
            cluster: None,
            sys_interval: 10,
            websockets_headers_size: 0,
            source: None,
        }
    }
}

impl Config {
    /// True when no listener is configured: the broker listens on localhost only and allows
    /// anonymous clients, as mosquitto 2.0 does without a configuration.
    pub fn local_only(&self) -> bool {
        self.listeners.is_empty()
    }

    /// The kinds of line logged (`log_type`, or mosquitto's default).
    pub fn log_types(&self) -> LogTypes {
        self.log_types.unwrap_or(LogTypes::DEFAULT)
    }

    /// The listeners to open.
    pub fn effective_listeners(&self) -> Vec<Listener> {
        if self.listeners.is_empty() {
            vec![Listener::new(1883, Some("localhost"))]
        } else {
            self.listeners.clone()
        }
    }

    /// The security settings `listener` uses: its own with `per_listener_settings true`,
    /// the global ones otherwise.
    pub fn security_of<'a>(&'a self, listener: &'a Listener) -> &'a SecuritySettings {
        match &listener.security {
            Some(own) if self.per_listener_settings => own,
            _ => &self.security,
        }
    }

    /// Whether clients without a user name may connect with these security settings.
    pub fn anonymous_allowed(&self, security: &SecuritySettings) -> bool {
        security.allow_anonymous.unwrap_or_else(|| self.local_only())
    }

    /// The options of `new` that differ from these and take effect only when the broker
    /// starts (a reload applies the security settings only).
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut check = |name: &'static str, differs: bool| {
            if differs {
                changed.push(name);
            }
        };
        // Listener options (the listeners themselves are compared by the reload).
        let (old_l, new_l) = (self.effective_listeners(), new.effective_listeners());
        let mut listener = |name: &'static str, differs: &dyn Fn(&Listener, &Listener) -> bool| {
            check(name, old_l.iter().zip(&new_l).any(|(a, b)| differs(a, b)));
        };
        listener("max_qos", &|a, b| a.max_qos != b.max_qos);
        listener("max_connections", &|a, b| a.max_connections != b.max_connections);
        listener("max_topic_alias", &|a, b| a.max_topic_alias != b.max_topic_alias);
        listener("mount_point", &|a, b| a.mount_point != b.mount_point);
        listener("bind_interface", &|a, b| a.bind_interface != b.bind_interface);
        listener("accept_protocol_versions", &|a, b| {
            a.accept_protocol_versions != b.accept_protocol_versions
        });
        listener("http_dir", &|a, b| a.http_dir != b.http_dir);
        check("max_keepalive", self.max_keepalive != new.max_keepalive);
        check("max_packet_size", self.max_packet_size != new.max_packet_size);
        check("max_inflight_messages", self.max_inflight_messages != new.max_inflight_messages);
        check("max_queued_messages", self.max_queued_messages != new.max_queued_messages);
        check("max_queued_bytes", self.max_queued_bytes != new.max_queued_bytes);
        check("memory_limit", self.memory_limit != new.memory_limit);
        check("connection_messages", self.connection_messages != new.connection_messages);
        check("max_inflight_bytes", self.max_inflight_bytes != new.max_inflight_bytes);
        check("message_size_limit", self.message_size_limit != new.message_size_limit);
        check("upgrade_outgoing_qos", self.upgrade_outgoing_qos != new.upgrade_outgoing_qos);
        check("check_retain_source", self.check_retain_source != new.check_retain_source);
        check("queue_qos0_messages", self.queue_qos0_messages != new.queue_qos0_messages);
        check("retain_available", self.retain_available != new.retain_available);
        check("response_information", self.response_information != new.response_information);
        check("auth_failure_delay", self.auth_failure_delay_ms != new.auth_failure_delay_ms);
        check("log_dest", self.log_dest != new.log_dest);
        check("log_facility", self.log_facility != new.log_facility);
        check("log_timestamp_format", self.log_timestamp_format != new.log_timestamp_format);
        check("log_type", self.log_types != new.log_types);
        check("log_timestamp", self.log_timestamp != new.log_timestamp);
        check("pid_file", self.pid_file != new.pid_file);
        check("user", self.user != new.user);
        check("persistence", self.persistence != new.persistence);
        check("connection (bridges)", self.bridges != new.bridges);
        check("cluster_*", self.cluster != new.cluster);
        check("sys_interval", self.sys_interval != new.sys_interval);
        check("websockets_headers_size", self.websockets_headers_size != new.websockets_headers_size);
        check(
            "persistent_client_expiration",
            self.persistent_client_expiration != new.persistent_client_expiration,
        );
        changed
    }

    /// The largest WebSocket handshake request accepted, in bytes.
    pub fn websockets_headers_limit(&self) -> usize {
        match self.websockets_headers_size {
            0 => DEFAULT_WEBSOCKETS_HEADERS_SIZE,
            n => usize::from(n),
        }
    }

    /// The largest packet accepted, in bytes.
    pub fn max_packet_bytes(&self) -> usize {
        match self.max_packet_size {
            0 => midge_codec::MAX_REMAINING_LENGTH + 5,
            n => n as usize,
        }
    }

    /// The outgoing inflight window.
    pub fn inflight_window(&self) -> u16 {
        match self.max_inflight_messages {
            0 => u16::MAX,
            n => n,
        }
    }
}
