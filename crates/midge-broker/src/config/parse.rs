//! Directives (see [`super::lex`]) read into a [`Config`] as mosquitto 2.0 reads them:
//! strictly for the broker, where the first wrong line is the error, or leniently for
//! `midge audit`, where every wrong line is collected and reading goes on. One reader does
//! both, and records where each value came from ([`Sources`]), so the broker and audit
//! cannot read a configuration differently.
use std::path::Path;

use super::error::{ConfigError, LineError};
use super::lex::{lex_file_including, lex_str, Directive};
use super::options::{
    belongs, makes_default_listener, not_yet, Belongs, RESTRICTING_VALUE, REST_OF_LINE, SECURITY_NOT_YET,
    SECURITY_OPTIONS,
};
use super::sources::{Section, Sources};
use super::values::{flag, one, parse_num, parse_port};
use super::{
    Config, IpDomain, Listener, ListenerProtocol, LogDest, LogType, LogTypes, SecuritySettings, TlsVersion,
};

/// A configuration read leniently ([`parse_lenient`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Parsed {
    /// What the broker would run with, had it not refused the wrong lines: they set nothing.
    pub config: Config,
    /// Where each value came from, and the lines midge refuses for lacking what they ask.
    pub sources: Sources,
    /// Options accepted but not implemented.
    pub warnings: Vec<String>,
    /// Every wrong line, in file order; the first is the broker's error.
    pub errors: Vec<ConfigError>,
}

/// Reads a configuration file, with the files of its `include_dir` lines in their place
/// (relative directories from the working directory, as mosquitto takes them).
pub fn parse_file(path: &Path) -> Result<(Config, Vec<String>), ConfigError> {
    let directives = lex_file_including(path, Path::new(""))?;
    let (mut config, warnings) = parse_directives(&directives)?;
    config.source = Some(path.to_owned());
    Ok((config, warnings))
}

/// Parses configuration text; `file` names it in messages. Returns the configuration and
/// warnings for options accepted but not implemented.
pub fn parse_str(text: &str, file: &str) -> Result<(Config, Vec<String>), ConfigError> {
    parse_directives(&lex_str(text, file))
}

/// Reads directives into a configuration, strictly: a wrong value, an unknown option or a
/// security option midge does not have is an error naming its line.
pub fn parse_directives(directives: &[Directive]) -> Result<(Config, Vec<String>), ConfigError> {
    let Parsed { config, warnings, errors, .. } = read(directives, Mode::Strict);
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok((config, warnings)),
    }
}

/// Reads directives as [`parse_directives`] does, but goes on past wrong lines: each is
/// collected, and sets nothing. For `midge audit`, which must read what the broker refuses.
pub fn parse_lenient(directives: &[Directive]) -> Parsed {
    read(directives, Mode::Lenient)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Stop at the first wrong line.
    Strict,
    /// Collect every wrong line.
    Lenient,
}

fn read(directives: &[Directive], mode: Mode) -> Parsed {
    let mut reader = Reader::default();
    let mut errors = Vec::new();
    for d in directives {
        if let Err(problem) = reader.line(d) {
            errors.push(ConfigError::Line { file: d.file.clone(), line: d.line, problem });
            if mode == Mode::Strict {
                break;
            }
        }
    }
    reader.finish(errors)
}

/// Where a line belongs while reading: a listener by its index before mosquitto's default
/// listener is put first (`None`: the default listener).
#[derive(Debug, Clone, Copy)]
enum At {
    General,
    Listener(Option<usize>),
}

#[derive(Default)]
struct Reader {
    config: Config,
    warnings: Vec<String>,
    /// As mosquitto: `port`, `bind_address` and listener options written before any
    /// `listener` line belong to one default listener (port 1883 unless `port` says),
    /// which is opened when one of them makes it (see `makes_default_listener`); listener
    /// options after a `listener` line belong to that listener.
    default: Option<Listener>,
    /// The line that opened the default listener.
    default_opener: Option<Directive>,
    /// The `listener` line of each listener.
    openers: Vec<Directive>,
    /// The lines read, where they belong.
    lines: Vec<(At, Directive)>,
    /// The listener of the last `listener` line.
    current: Option<usize>,
    /// A security option was read (per_listener_settings must come before them).
    security_set: bool,
}

impl Reader {
    /// Reads one line. As mosquitto, which reads the words an option takes and ignores the
    /// rest, words after the last one an option takes (`allow_anonymous true # comment`,
    /// `log_type error warning`) are left out, with a warning, rather than refused.
    /// Not for options whose value is the rest of the line to mosquitto ([`REST_OF_LINE`]).
    fn line(&mut self, d: &Directive) -> Result<(), LineError> {
        let retry = d.args.len() > 1 && !REST_OF_LINE.contains(&d.name.as_str());
        // What reading the whole line may leave behind before it is refused: the default
        // listener it opened (`max_connections -1 # none` reads "-1 # none" as a value).
        let before = retry.then(|| (self.default.clone(), self.default_opener.clone()));
        let read = self.line_as_written(d);
        let Some(before) = before.filter(|_| matches!(read, Err(LineError::TooManyValues { .. }))) else {
            return read;
        };
        // A comment ends the line; otherwise, the words that fit.
        let comment = d.args.iter().skip(1).position(|a| a.starts_with('#')).map(|i| i + 1);
        let mut keep = comment.unwrap_or(d.args.len() - 1);
        loop {
            // Each reading starts from where the line did (a refused one left nothing).
            (self.default, self.default_opener) = before.clone();
            let shorter =
                Directive { args: d.args[..keep].to_vec(), value: d.args[..keep].join(" "), ..d.clone() };
            match self.line_as_written(&shorter) {
                Err(LineError::TooManyValues { .. }) if keep > 1 => keep -= 1,
                Ok(()) => {
                    let ignored = d.args[keep..].join(" ");
                    self.warnings.push(format!(
                        "{}: '{ignored}' after {}'s value is ignored, as mosquitto ignores it{}",
                        d.location(),
                        d.name,
                        if ignored.starts_with('#') {
                            ": a comment is a line of its own"
                        } else {
                            " (write a line for each value)"
                        },
                    ));
                    return Ok(());
                }
                other => return other,
            }
        }
    }

    /// Reads one line as it is written; a line whose value is read is recorded where it
    /// belongs.
    fn line_as_written(&mut self, d: &Directive) -> Result<(), LineError> {
        let name = d.name.as_str();
        if SECURITY_OPTIONS.contains(&name) {
            self.security_set = true;
        }
        let before_listeners = self.current.is_none() || name == "port" || name == "bind_address";
        if before_listeners
            && self.default_opener.is_none()
            && makes_default_listener(name, &d.value, self.config.per_listener_settings)
        {
            self.default_listener().origin = Some(d.location());
            self.default_opener = Some(d.clone());
        }
        let at = match belongs(name) {
            _ if name == "port" || name == "bind_address" => At::Listener(None),
            Belongs::Listener => At::Listener(self.current),
            // With per_listener_settings, the listener of the last `listener` line; before
            // any, the default listener, which has the global settings.
            Belongs::Security if self.config.per_listener_settings && self.current.is_some() => {
                At::Listener(self.current)
            }
            Belongs::Security | Belongs::General => At::General,
        };
        let read = self.apply(d, at);
        let kept = match &read {
            Ok(()) => true,
            Err(e) => e.is_unsupported(),
        };
        if kept && name != "listener" {
            self.lines.push((at, d.clone()));
        }
        read
    }

    fn default_listener(&mut self) -> &mut Listener {
        self.default.get_or_insert_with(|| Listener { default: true, ..Listener::new(1883, None) })
    }

    /// The listener options of a line belonging to `at` go to.
    fn listener_at(&mut self, at: At) -> &mut Listener {
        match at {
            At::Listener(Some(i)) => &mut self.config.listeners[i],
            At::Listener(None) | At::General => self.default_listener(),
        }
    }

    /// The security settings a line belonging to `at` goes to.
    fn security_at(&mut self, at: At) -> &mut SecuritySettings {
        match at {
            At::Listener(Some(i)) => self.config.listeners[i].security.get_or_insert_with(Default::default),
            At::Listener(None) | At::General => &mut self.config.security,
        }
    }

    fn apply(&mut self, d: &Directive, at: At) -> Result<(), LineError> {
        let name = d.name.as_str();
        if name == "connection" {
            let b = super::bridge::connection(d, &self.config.bridges)?;
            self.config.bridges.push(b);
            return Ok(());
        }
        if super::bridge::BRIDGE_OPTIONS.contains(&name) {
            // As mosquitto: a bridge option belongs to the bridge of the last `connection`.
            let Some(b) = self.config.bridges.last_mut() else {
                return Err(LineError::InvalidValue {
                    option: d.name.clone(),
                    value: d.value.clone(),
                    expected: "a bridge option, after a `connection NAME` line",
                });
            };
            return super::bridge::option(d, b);
        }
        if super::cluster::CLUSTER_OPTIONS.contains(&name) {
            return super::cluster::option(d, &mut self.config.cluster);
        }
        let config = &mut self.config;
        match name {
            "listener" => self.listener(d)?,
            "port" => self.default_listener().port = parse_port(one(d, "a port number")?)?,
            "bind_address" => self.default_listener().bind = Some(one(d, "an address")?.to_owned()),
            "socket_domain" => {
                let domain = match one(d, "ipv4 or ipv6")? {
                    "ipv4" => IpDomain::V4,
                    "ipv6" => IpDomain::V6,
                    other => return Err(invalid_word(name, other, "ipv4 or ipv6")),
                };
                self.listener_at(at).domain = Some(domain);
            }
            "certfile"
            | "keyfile"
            | "cafile"
            | "capath"
            | "crlfile"
            | "require_certificate"
            | "use_identity_as_username"
            | "use_subject_as_username"
            | "tls_version"
            | "ciphers"
            | "ciphers_tls1.3" => self.tls_option(d, at)?,
            "protocol" => {
                self.listener_at(at).protocol = match one(d, "mqtt, websockets or http")? {
                    "mqtt" => ListenerProtocol::Mqtt,
                    "websockets" => ListenerProtocol::WebSockets,
                    "http" => ListenerProtocol::Http,
                    other => return Err(invalid_word(name, other, "mqtt, websockets or http")),
                }
            }
            "sys_interval" => config.sys_interval = parse_num(name, one(d, "seconds")?)?,
            "websockets_headers_size" => {
                config.websockets_headers_size = parse_num(name, one(d, "bytes, 0-65535")?)?
            }
            "retain_available" => config.retain_available = flag(d)?,
            // `maximum_qos` is mosquitto's other name for it.
            "max_qos" | "maximum_qos" => {
                let v = one(d, "0, 1 or 2")?;
                self.listener_at(at).max_qos = v
                    .parse::<u8>()
                    .ok()
                    .and_then(midge_codec::QoS::from_u8)
                    .ok_or_else(|| invalid_value(name, v, "0, 1 or 2"))?;
            }
            "log_dest" => self.log_dest(d)?,
            "log_type" => {
                // mosquitto's mask: the first line replaces the default, the next add to it.
                let types = config.log_types.unwrap_or(LogTypes::NONE);
                let kind = |kind| types.with(kind);
                let types = match one(d, "a kind of message")? {
                    "none" => LogTypes::NONE,
                    "all" => LogTypes::ALL,
                    "error" => kind(LogType::Error),
                    "warning" => kind(LogType::Warning),
                    "notice" => kind(LogType::Notice),
                    "information" => kind(LogType::Information),
                    "subscribe" => kind(LogType::Subscribe),
                    "unsubscribe" => kind(LogType::Unsubscribe),
                    "websockets" => kind(LogType::Websockets),
                    "debug" => kind(LogType::Debug),
                    other => {
                        return Err(invalid_word(
                            name,
                            other,
                            "none, error, warning, notice, information, subscribe, unsubscribe, \
                             websockets, debug or all",
                        ))
                    }
                };
                config.log_types = Some(types);
            }
            // The rest of the line, as mosquitto takes it: a format may have spaces.
            "log_timestamp_format" => {
                if d.args.is_empty() {
                    return Err(LineError::MissingValue {
                        option: d.name.clone(),
                        expected: "a strftime format such as %Y-%m-%dT%H:%M:%S",
                    });
                }
                config.log_timestamp_format = Some(d.value.trim().to_owned())
            }
            "log_facility" => {
                let v = one(d, "0 to 7 (local0 to local7)")?;
                config.log_facility = Some(
                    v.parse::<u8>()
                        .ok()
                        .filter(|n| *n <= 7)
                        .ok_or_else(|| invalid_value(name, v, "0 to 7"))?,
                );
            }
            "log_timestamp" => config.log_timestamp = flag(d)?,
            "pid_file" => config.pid_file = Some(one(d, "a file")?.into()),
            "user" => config.user = Some(one(d, "a user name")?.to_owned()),
            // `retained_persistence`: mosquitto's older name for it.
            "persistence" | "retained_persistence" => config.persistence.enabled = flag(d)?,
            // mosquitto 2.0 reads it and warns that it is gone: so does midge.
            "retry_interval" => {
                one(d, "a number of seconds")?;
                self.warnings.push(format!(
                    "{}: the retry_interval option is no longer available; ignored",
                    d.location()
                ))
            }
            "persistence_location" => config.persistence.location = Some(one(d, "a directory")?.into()),
            "persistence_file" => config.persistence.file = one(d, "a file name")?.to_owned(),
            "persistence_sync_interval" => {
                config.persistence.sync_interval_ms = parse_num(name, one(d, "milliseconds")?)?
            }
            "autosave_interval" => {
                config.persistence.autosave_interval = parse_num(name, one(d, "seconds")?)?
            }
            "autosave_on_changes" => config.persistence.autosave_on_changes = flag(d)?,
            "persistent_client_expiration" => {
                let v = one(d, "a duration such as 14d")?;
                config.persistent_client_expiration =
                    Some(parse_expiration(v).ok_or_else(|| {
                        invalid_value(name, v, "a number followed by h, d, w, m or y (14d)")
                    })?);
            }
            "response_information" => {
                config.response_information = Some(one(d, "a topic prefix")?.to_owned())
            }
            "per_listener_settings" => {
                let on = flag(d)?;
                if on && self.security_set {
                    // As mosquitto: the settings already read would belong to no listener.
                    return Err(LineError::PerListenerSettingsLate);
                }
                config.per_listener_settings = on;
            }
            "password_file" => self.security_at(at).password_file = Some(one(d, "a file")?.into()),
            "acl_file" => self.security_at(at).acl_file = Some(one(d, "a file")?.into()),
            "allow_anonymous" => self.security_at(at).allow_anonymous = Some(flag(d)?),
            "auth_failure_delay" => {
                let v = one(d, "seconds")?;
                let secs = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && (0.0..=3600.0).contains(s))
                    .ok_or_else(|| invalid_value(name, v, "seconds, 0 to 3600"))?;
                config.auth_failure_delay_ms = (secs * 1000.0) as u64;
            }
            "max_keepalive" => {
                // 0: no limit, as mosquitto 2.0.20 reads it.
                let max: u16 = parse_num(name, one(d, "seconds, 0-65535")?)?;
                config.max_keepalive = (max > 0).then_some(max);
            }
            "max_topic_alias" => {
                self.listener_at(at).max_topic_alias = parse_num(name, one(d, "a count, 0-65535")?)?
            }
            "max_packet_size" => {
                let value = one(d, "bytes")?;
                config.max_packet_size = parse_num(name, value)?;
                // As mosquitto: below 20 bytes no CONNECT with a client id fits, and 0 (which
                // would read as "no limit") is refused too.
                if config.max_packet_size < 20 {
                    return Err(LineError::InvalidValue {
                        option: name.into(),
                        value: value.into(),
                        expected: "a size from 20 bytes (leave the option out for no limit)",
                    });
                }
            }
            "max_inflight_messages" => {
                config.max_inflight_messages = parse_num(name, one(d, "a count, 0-65535")?)?
            }
            "max_queued_messages" => {
                let n: usize = parse_num(name, one(d, "a count")?)?;
                // mosquitto: 0 means no limit; midge keeps memory bounded, so 0 means a large one.
                config.max_queued_messages = if n == 0 { 1_000_000 } else { n };
            }
            // What midge does whatever they say: it writes each round of packets in one call,
            // so Nagle's algorithm would only delay them (TCP_NODELAY is always set); a client
            // gets one copy of a message matching several of its subscriptions, at the highest
            // of their QoS ([MQTT-3.3.5-1]; mosquitto's allow_duplicate_messages, deprecated,
            // is about the copies it sends instead); and it has no libwebsockets whose log
            // level would be set. Read, so that a wrong value is still an error.
            "set_tcp_nodelay" | "allow_duplicate_messages" => {
                flag(d)?;
            }
            "websockets_log_level" => {
                let v = one(d, "a number")?;
                v.parse::<i64>().map_err(|_| invalid_value(name, v, "a number"))?;
            }
            "connection_messages" => config.connection_messages = flag(d)?,
            "memory_limit" => config.memory_limit = parse_num(name, one(d, "bytes")?)?,
            "max_queued_bytes" => config.max_queued_bytes = parse_num(name, one(d, "bytes")?)?,
            "max_inflight_bytes" => config.max_inflight_bytes = parse_num(name, one(d, "bytes")?)?,
            "message_size_limit" => {
                // mosquitto's limit: the largest payload a packet can carry.
                let limit: u32 = parse_num(name, one(d, "bytes")?)?;
                if limit as usize > midge_codec::MAX_REMAINING_LENGTH {
                    return Err(invalid_value(name, &limit.to_string(), "at most 268435455 bytes"));
                }
                config.message_size_limit = limit;
            }
            "upgrade_outgoing_qos" => config.upgrade_outgoing_qos = flag(d)?,
            "check_retain_source" => config.check_retain_source = flag(d)?,
            "queue_qos0_messages" => config.queue_qos0_messages = flag(d)?,
            "allow_zero_length_clientid" => self.security_at(at).allow_zero_length_clientid = Some(flag(d)?),
            "auto_id_prefix" => self.security_at(at).auto_id_prefix = Some(one(d, "a prefix")?.to_owned()),
            "use_username_as_clientid" => self.security_at(at).use_username_as_clientid = flag(d)?,
            "clientid_prefixes" => {
                self.security_at(at).clientid_prefixes = Some(one(d, "a prefix")?.to_owned())
            }
            "http_dir" => self.listener_at(at).http_dir = Some(one(d, "a directory")?.into()),
            "bind_interface" => {
                self.listener_at(at).bind_interface = Some(one(d, "an interface name")?.to_owned())
            }
            "accept_protocol_versions" => {
                let At::Listener(Some(i)) = at else {
                    // As mosquitto 2.1: not for the default listener.
                    return Err(LineError::NeedsListener(name.to_owned()));
                };
                let mut versions = Vec::new();
                for word in d.value.split([',', ' ', '\t']).filter(|w| !w.is_empty()) {
                    match word {
                        "3" | "4" | "5" => versions.push(word.as_bytes()[0] - b'0'),
                        other => return Err(invalid_word(name, other, "3, 4 or 5, separated by commas")),
                    }
                }
                if versions.is_empty() {
                    return Err(LineError::MissingValue {
                        option: d.name.clone(),
                        expected: "3, 4 or 5, separated by commas",
                    });
                }
                self.config.listeners[i].accept_protocol_versions = Some(versions);
            }
            "mount_point" => {
                let At::Listener(Some(i)) = at else {
                    // As mosquitto: the default listener has no mount point.
                    return Err(LineError::NeedsListener(name.to_owned()));
                };
                let prefix = one(d, "a topic prefix")?;
                // As mosquitto: a prefix that is not a valid topic name is refused.
                if prefix.contains(['+', '#']) || prefix.contains('\0') {
                    return Err(invalid_value(name, prefix, "a topic prefix without wildcards"));
                }
                self.config.listeners[i].mount_point = Some(prefix.to_owned());
            }
            "max_connections" => {
                let v = one(d, "a count, or -1 for no limit")?;
                self.listener_at(at).max_connections = match v.parse::<i64>() {
                    Ok(n) if n < 0 => None,
                    Ok(n) => Some(n as usize),
                    Err(_) => return Err(invalid_value(name, v, "a number")),
                };
            }
            // Options that restrict who connects or what they see: ignoring them would run
            // the broker less secure than its configuration says, so midge refuses to start.
            other if RESTRICTING_VALUE.iter().any(|(o, _)| *o == other) => {
                let restricting =
                    RESTRICTING_VALUE.iter().find(|(o, _)| *o == other).is_some_and(|(_, v)| *v);
                if flag(d)? == restricting {
                    return Err(LineError::RestrictingValue { option: other.to_owned(), value: restricting });
                }
            }
            // parse_file puts the files of an include_dir in its place; text has no directory.
            "include_dir" => return Err(LineError::IncludeOutsideFile),
            other if SECURITY_NOT_YET.contains(&other) => {
                return Err(LineError::Unsupported(other.to_owned()))
            }
            other if not_yet(other) => self
                .warnings
                .push(format!("{}: option '{other}' is not supported by midge yet; ignored", d.location())),
            other => return Err(LineError::Unknown(other.to_owned())),
        }
        Ok(())
    }

    /// `listener PORT [ADDRESS]`. The listener is opened even when the line is wrong, so
    /// that the lines below it (read leniently, for audit) belong to it and not to the one
    /// before; the broker stops at the error.
    fn listener(&mut self, d: &Directive) -> Result<(), LineError> {
        let Some(written) = d.args.first() else { return Err(LineError::ListenerArgs) };
        if d.args.len() > 2 {
            let expected = "a port and optionally an address: listener PORT [ADDRESS]";
            return Err(LineError::TooManyValues { option: d.name.clone(), expected, found: d.args.len() });
        }
        let port = parse_port(written);
        let mut l =
            Listener::new(port.as_ref().ok().copied().unwrap_or(0), d.args.get(1).map(String::as_str));
        l.origin = Some(d.location());
        self.config.listeners.push(l);
        self.openers.push(d.clone());
        self.current = Some(self.config.listeners.len() - 1);
        port.map(drop)
    }

    /// The TLS options of a listener.
    fn tls_option(&mut self, d: &Directive, at: At) -> Result<(), LineError> {
        let name = d.name.as_str();
        let value = one(d, "a value")?;
        if name == "ciphers" || name == "ciphers_tls1.3" {
            // OpenSSL cipher lists do not apply to rustls, whose suites are all modern.
            self.warnings
                .push(format!("{}: option '{name}' does not apply to midge's TLS; ignored", d.location()));
            return Ok(());
        }
        let tls = &mut self.listener_at(at).tls;
        match name {
            "certfile" => tls.certfile = Some(value.into()),
            "keyfile" => tls.keyfile = Some(value.into()),
            "cafile" => tls.cafile = Some(value.into()),
            "capath" => tls.capath = Some(value.into()),
            "crlfile" => tls.crlfile = Some(value.into()),
            "require_certificate" => tls.require_certificate = flag(d)?,
            "use_identity_as_username" => tls.use_identity_as_username = flag(d)?,
            "use_subject_as_username" => tls.use_subject_as_username = flag(d)?,
            "tls_version" => {
                tls.min_version = Some(match value {
                    "tlsv1.2" => TlsVersion::V1_2,
                    "tlsv1.3" => TlsVersion::V1_3,
                    "tlsv1.1" | "tlsv1" => return Err(LineError::OldTlsVersion(value.to_owned())),
                    other => return Err(invalid_word(name, other, "tlsv1.2 or tlsv1.3")),
                })
            }
            _ => {}
        }
        Ok(())
    }

    fn log_dest(&mut self, d: &Directive) -> Result<(), LineError> {
        const EXPECTED: &str = "stderr, stdout, syslog, topic, file PATH or none";
        let args: Vec<&str> = d.args.iter().map(String::as_str).collect();
        let dest = match args.as_slice() {
            ["stderr"] => LogDest::Stderr,
            ["stdout"] => LogDest::Stdout,
            ["none"] => LogDest::Nowhere,
            // The rest of the line, as mosquitto takes it: a path may have spaces.
            ["file", _, ..] => LogDest::File(d.value["file".len()..].trim().into()),
            [] => return Err(LineError::MissingValue { option: d.name.clone(), expected: EXPECTED }),
            ["file"] => return Err(LineError::LogFileMissing),
            ["syslog"] => LogDest::Syslog,
            ["topic"] => LogDest::Topic,
            [other @ "dlt", ..] => {
                self.warnings.push(format!(
                    "{}: log_dest {other} is not supported by midge yet; logging to stderr instead",
                    d.location()
                ));
                LogDest::Stderr
            }
            _ => return Err(invalid_word(&d.name, &args.join(" "), EXPECTED)),
        };
        if !self.config.log_dest.contains(&dest) {
            self.config.log_dest.push(dest);
        }
        Ok(())
    }

    /// The configuration, mosquitto's default listener first if it was opened, and the
    /// lines by their final sections.
    fn finish(self, mut errors: Vec<ConfigError>) -> Parsed {
        let Reader { mut config, mut warnings, default, default_opener, mut openers, lines, .. } = self;
        for (i, b) in config.bridges.iter().enumerate() {
            // Named at its `connection` line, as mosquitto.
            let (file, line) = b.origin.rsplit_once(':').unwrap_or((&b.origin, "0"));
            let mut error = |problem| {
                errors.push(ConfigError::Line {
                    file: file.to_owned(),
                    line: line.parse().unwrap_or(0),
                    problem,
                })
            };
            if b.addresses.is_empty() {
                // mosquitto: "bridge has no address".
                let option = format!("address (bridge {})", b.name);
                error(LineError::MissingValue { option, expected: "HOST[:PORT]" });
            }
            if b.topics.is_empty() {
                // mosquitto: "Invalid bridge configuration: no topics defined."; such a bridge
                // forwards nothing.
                let option = format!("topic (bridge {})", b.name);
                error(LineError::MissingValue {
                    option,
                    expected: "PATTERN [in|out|both [QOS [LOCAL REMOTE]]]",
                });
            }
            let local = b.local_clientid();
            if config.bridges[..i].iter().any(|other| other.local_clientid() == local) {
                // Two bridges on one local session would take it from each other, each taking
                // the other's subscriptions away (mosquitto: "Bridge local_clientid '...' is
                // not unique").
                error(LineError::InvalidValue {
                    option: format!("local_clientid (bridge {})", b.name),
                    value: local,
                    expected: "a local client id no other bridge has (set local_clientid or remote_clientid)",
                });
            }
        }
        if let Some(problem) = config.cluster.as_ref().and_then(|c| c.incomplete(config.check_retain_source))
        {
            // Named at the first cluster line.
            let origin = config.cluster.as_ref().map(|c| c.origin.clone()).unwrap_or_default();
            let (file, line) = origin.rsplit_once(':').unwrap_or((&origin, "0"));
            errors.push(ConfigError::Line {
                file: file.to_owned(),
                line: line.parse().unwrap_or(0),
                problem,
            });
        }
        let opened = match (default, default_opener) {
            (Some(l), Some(opener)) => {
                config.listeners.insert(0, l);
                openers.insert(0, opener);
                true
            }
            _ => false,
        };
        if config.per_listener_settings {
            // A listener without security options of its own has none: no password file, no
            // ACL, and anonymous clients only as allow_anonymous's default says.
            for l in config.listeners.iter_mut().filter(|l| !l.default) {
                l.security.get_or_insert_with(Default::default);
            }
            // mosquitto 2.0 makes an unset allow_anonymous false for its `listener` listeners
            // only: the default listener (`port`), added after, keeps "unset", which its
            // authentication takes as true. A configuration that relies on it keeps working,
            // with a warning (and a finding of `midge audit`).
            if let Some(l) = config.listeners.iter().find(|l| l.default) {
                if config.security.allow_anonymous.is_none() {
                    config.security.allow_anonymous = Some(true);
                    warnings.push(format!(
                        "{}: per_listener_settings is true and this listener (port {}) has no allow_anonymous: \
                         anonymous clients are allowed on it, as mosquitto 2.0 does; add `allow_anonymous false` \
                         before the first `listener` line to refuse them",
                        l.origin.as_deref().unwrap_or("config"),
                        l.port
                    ));
                }
            }
        }
        let shift = usize::from(opened);
        let lines = lines
            .into_iter()
            .filter_map(|(at, d)| match at {
                At::General => Some((Section::General, d)),
                // Settings of a default listener that was never opened: the broker has none.
                At::Listener(None) => opened.then_some((Section::Listener(0), d)),
                At::Listener(Some(i)) => Some((Section::Listener(i + shift), d)),
            })
            .collect();
        Parsed { config, sources: Sources { listeners: openers, lines }, warnings, errors }
    }
}

/// mosquitto's expiration periods: a number and a unit, `h` (hour), `d` (day), `w` (week),
/// `m` (month: 30 days) or `y` (year: 365 days).
fn parse_expiration(v: &str) -> Option<std::time::Duration> {
    let unit = match v.chars().last()? {
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        'm' => 30 * 86_400,
        'y' => 365 * 86_400,
        _ => return None,
    };
    let n: u64 = v[..v.len() - 1].parse().ok().filter(|n| *n > 0)?;
    Some(std::time::Duration::from_secs(n.checked_mul(unit)?))
}

fn invalid_value(option: &str, value: &str, expected: &'static str) -> LineError {
    LineError::InvalidValue { option: option.to_owned(), value: value.to_owned(), expected }
}

fn invalid_word(option: &str, value: &str, expected: &'static str) -> LineError {
    LineError::InvalidWord { option: option.to_owned(), value: value.to_owned(), expected }
}
