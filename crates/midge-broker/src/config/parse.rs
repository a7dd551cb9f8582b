//! The mosquitto.conf format: one option per line, `#` comments, values after the name.
//! Every error names the file, the line and what is wrong.
use std::path::Path;

use super::lex::{lex_file_including, lex_str, Directive, LexError};
use super::{Config, IpDomain, Listener, LogDest, LogLevel, TlsVersion};

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file, or a directory it includes, cannot be read.
    #[error(transparent)]
    Include(#[from] LexError),
    /// A line is wrong.
    #[error("{file}:{line}: {message}")]
    Line {
        /// The file (or "<string>").
        file: String,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// mosquitto's security options, per listener with `per_listener_settings true` (which must
/// come before any of them).
const SECURITY_OPTIONS: &[&str] = &[
    "allow_anonymous",
    "allow_zero_length_clientid",
    "acl_file",
    "auth_plugin",
    "auto_id_prefix",
    "password_file",
    "plugin",
    "psk_file",
    "use_username_as_clientid",
];

/// Security options midge does not implement yet: refused, because running without them
/// would leave open what the user meant to close.
const SECURITY_NOT_YET: &[&str] = &[
    "accept_protocol_versions",
    "bind_interface",
    "clientid_prefixes",
    "mount_point",
    "psk_file",
    "auth_plugin",
    "plugin",
];

/// Options that restrict who connects or what they see when set to one value (given here):
/// midge does not have them yet, and ignoring them would run the broker less secure than
/// its configuration says, so that value is refused. The other value is what midge does.
const RESTRICTING_VALUE: &[(&str, bool)] = &[
    ("use_username_as_clientid", true),
    ("allow_zero_length_clientid", false),
    ("check_retain_source", true),
];

/// Options of mosquitto that midge knows of but does not implement yet: accepted with a
/// warning, so a mosquitto configuration still starts.
const NOT_YET: &[&str] = &[
    "allow_duplicate_messages",
    "auth_opt_",
    "auto_id_prefix",
    "autosave_interval",
    "autosave_on_changes",
    "connection",
    "connection_messages",
    "dhparamfile",
    "http_dir",
    "log_facility",
    "log_timestamp_format",
    "max_queued_bytes",
    "memory_limit",
    "message_size_limit",
    "persistence",
    "persistence_file",
    "persistence_location",
    "persistent_client_expiration",
    "plugin_opt_",
    "psk_hint",
    "queue_qos0_messages",
    "set_tcp_nodelay",
    "sys_interval",
    "tls_engine",
    "tls_engine_kpass_sha1",
    "tls_keyform",
    "upgrade_outgoing_qos",
    "websockets_headers_size",
    "websockets_log_level",
    "address",
    "bridge_",
    "cleansession",
    "keepalive_interval",
    "notifications",
    "remote_",
    "restart_timeout",
    "round_robin",
    "start_type",
    "threshold",
    "topic",
    "try_private",
    "idle_timeout",
    "local_",
    "max_topic_alias",
];

/// The options [`parse_directives`] reads.
const IMPLEMENTED: &[&str] = &[
    "listener",
    "port",
    "bind_address",
    "socket_domain",
    "certfile",
    "keyfile",
    "cafile",
    "capath",
    "crlfile",
    "require_certificate",
    "use_identity_as_username",
    "use_subject_as_username",
    "tls_version",
    "ciphers",
    "ciphers_tls1.3",
    "protocol",
    "retain_available",
    "max_qos",
    "response_information",
    "per_listener_settings",
    "password_file",
    "acl_file",
    "auth_failure_delay",
    "allow_anonymous",
    "max_keepalive",
    "max_packet_size",
    "max_inflight_messages",
    "max_queued_messages",
    "max_connections",
    "include_dir",
    "log_dest",
    "log_type",
    "log_timestamp",
    "pid_file",
    "user",
];

/// True when `name` is an option midge knows: one it reads, one it refuses (a security
/// option it does not have), or a mosquitto option it accepts with a warning.
pub fn is_known_option(name: &str) -> bool {
    IMPLEMENTED.contains(&name)
        || RESTRICTING_VALUE.iter().any(|(o, _)| *o == name)
        || SECURITY_NOT_YET.contains(&name)
        || not_yet(name)
}

/// True for the options of [`NOT_YET`]; an entry ending in `_` stands for every option
/// with that prefix (`bridge_`, `auth_opt_`).
fn not_yet(name: &str) -> bool {
    NOT_YET.iter().any(|k| name == *k || (k.ends_with('_') && name.starts_with(k)))
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

/// Reads directives (see [`super::lex`]) into a configuration, strictly: a wrong value, an
/// unknown option or a security option midge does not have is an error naming its line.
pub fn parse_directives(directives: &[Directive]) -> Result<(Config, Vec<String>), ConfigError> {
    let mut config = Config::default();
    let mut warnings = Vec::new();
    // As mosquitto: `port`, `bind_address` and listener options written before any
    // `listener` line belong to one default listener (port 1883 unless `port` says), which
    // is opened when one of them makes it (see `makes_default_listener`); listener options
    // after a `listener` line belong to that listener.
    let mut default = Listener::new(1883, None);
    default.default = true;
    let mut current: Option<usize> = None;
    // A security option was read (per_listener_settings must come before them).
    let mut security_set = false;
    for d in directives {
        let (file, line, name) = (d.file.as_str(), d.line, d.name.as_str());
        let err = |message: String| ConfigError::Line { file: file.to_owned(), line, message };
        let args: Vec<&str> = d.args.iter().map(String::as_str).collect();
        let one = |what: &str| -> Result<&str, ConfigError> {
            match args.as_slice() {
                [v] => Ok(*v),
                [] => Err(err(format!("{name} needs a value ({what})"))),
                _ => Err(err(format!("{name} takes one value ({what}), found {}", args.len()))),
            }
        };
        if SECURITY_OPTIONS.contains(&name) {
            security_set = true;
        }
        let before_listeners = current.is_none() || name == "port" || name == "bind_address";
        if before_listeners
            && default.origin.is_none()
            && makes_default_listener(name, &d.value, config.per_listener_settings)
        {
            default.origin = Some(format!("{file}:{line}"));
        }
        match name {
            "listener" => {
                let (port, bind) = match args.as_slice() {
                    [port] => (*port, None),
                    [port, bind] => (*port, Some(*bind)),
                    _ => {
                        return Err(err(
                            "listener needs a port and optionally an address: listener PORT [ADDRESS]".into(),
                        ))
                    }
                };
                let port = parse_port(port).map_err(&err)?;
                let mut l = Listener::new(port, bind);
                l.origin = Some(format!("{file}:{line}"));
                config.listeners.push(l);
                current = Some(config.listeners.len() - 1);
            }
            "port" => {
                default.port = parse_port(one("a port number")?).map_err(&err)?;
            }
            "bind_address" => {
                default.bind = Some(one("an address")?.to_owned());
            }
            "socket_domain" => {
                let value = one("ipv4 or ipv6")?;
                let domain = match value {
                    "ipv4" => IpDomain::V4,
                    "ipv6" => IpDomain::V6,
                    other => {
                        return Err(err(format!("invalid socket_domain '{other}': expected ipv4 or ipv6")))
                    }
                };
                match current {
                    Some(i) => config.listeners[i].domain = Some(domain),
                    None => default.domain = Some(domain),
                }
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
            | "ciphers_tls1.3"
            | "protocol" => {
                let value = one("a value")?;
                let tls = match current {
                    Some(i) => &mut config.listeners[i].tls,
                    None => &mut default.tls,
                };
                match name {
                    "certfile" => tls.certfile = Some(value.into()),
                    "keyfile" => tls.keyfile = Some(value.into()),
                    "cafile" => tls.cafile = Some(value.into()),
                    "capath" => tls.capath = Some(value.into()),
                    "crlfile" => tls.crlfile = Some(value.into()),
                    "require_certificate" => tls.require_certificate = parse_bool(value).map_err(&err)?,
                    "use_identity_as_username" => {
                        tls.use_identity_as_username = parse_bool(value).map_err(&err)?
                    }
                    "use_subject_as_username" => {
                        tls.use_subject_as_username = parse_bool(value).map_err(&err)?
                    }
                    "tls_version" => {
                        tls.min_version = Some(match value {
                            "tlsv1.2" => TlsVersion::V1_2,
                            "tlsv1.3" => TlsVersion::V1_3,
                            "tlsv1.1" | "tlsv1" => {
                                return Err(err(format!(
                                "tls_version {value} is not supported: versions below TLS 1.2 are insecure"
                            )))
                            }
                            other => {
                                return Err(err(format!(
                                    "invalid tls_version '{other}': expected tlsv1.2 or tlsv1.3"
                                )))
                            }
                        })
                    }
                    "protocol" => {
                        if value != "mqtt" {
                            return Err(err(format!(
                                "protocol {value} is not supported by midge yet (only mqtt)"
                            )));
                        }
                    }
                    // OpenSSL cipher lists do not apply to rustls, whose suites are all modern.
                    _ => warnings.push(format!(
                        "{file}:{line}: option '{name}' does not apply to midge's TLS; ignored"
                    )),
                }
            }
            "retain_available" => {
                config.retain_available = parse_bool(one("true or false")?).map_err(&err)?
            }
            "max_qos" => {
                let v = one("0, 1 or 2")?;
                config.max_qos = v
                    .parse::<u8>()
                    .ok()
                    .and_then(midge_codec::QoS::from_u8)
                    .ok_or_else(|| err(format!("invalid value '{v}' for max_qos: expected 0, 1 or 2")))?;
            }
            "log_dest" => {
                let dest = match args.as_slice() {
                    ["stderr"] => LogDest::Stderr,
                    ["stdout"] => LogDest::Stdout,
                    ["none"] => LogDest::Nowhere,
                    // The rest of the line, as mosquitto takes it: a path may have spaces.
                    ["file", _, ..] => LogDest::File(d.value["file".len()..].trim().into()),
                    [] => {
                        return Err(err("log_dest needs a value (stderr, stdout, file PATH or none)".into()))
                    }
                    ["file"] => return Err(err("log_dest file needs a file: log_dest file PATH".into())),
                    [other @ ("syslog" | "topic" | "dlt"), ..] => {
                        warnings.push(format!(
                            "{file}:{line}: log_dest {other} is not supported by midge yet; logging to stderr instead"
                        ));
                        LogDest::Stderr
                    }
                    _ => {
                        return Err(err(format!(
                            "invalid log_dest '{}': expected stderr, stdout, file PATH or none",
                            args.join(" ")
                        )))
                    }
                };
                if !config.log_dest.contains(&dest) {
                    config.log_dest.push(dest);
                }
            }
            "log_type" => {
                let level = match one("a kind of message")? {
                    "none" => LogLevel::Off,
                    "error" => LogLevel::Error,
                    "warning" => LogLevel::Warning,
                    "notice" | "information" | "subscribe" | "unsubscribe" | "websockets" => {
                        LogLevel::Information
                    }
                    "debug" | "all" => LogLevel::Debug,
                    other => {
                        return Err(err(format!(
                            "invalid log_type '{other}': expected none, error, warning, notice, information, \
                             subscribe, unsubscribe, websockets, debug or all"
                        )))
                    }
                };
                // Several log_type lines: the most detailed one decides.
                config.log_level = config.log_level.max(Some(level));
            }
            "log_timestamp" => config.log_timestamp = parse_bool(one("true or false")?).map_err(&err)?,
            "pid_file" => config.pid_file = Some(one("a file")?.into()),
            "user" => config.user = Some(one("a user name")?.to_owned()),
            "response_information" => config.response_information = Some(one("a topic prefix")?.to_owned()),
            "per_listener_settings" => {
                let on = parse_bool(one("true or false")?).map_err(&err)?;
                if on && security_set {
                    // As mosquitto: the settings already read would belong to no listener.
                    return Err(err(
                        "per_listener_settings must be set before any other security settings".into()
                    ));
                }
                config.per_listener_settings = on;
            }
            "password_file" | "acl_file" | "allow_anonymous" => {
                // With per_listener_settings, the listener of the last `listener` line;
                // before any, the default listener (the global settings).
                let scope = match current {
                    Some(i) if config.per_listener_settings => {
                        config.listeners[i].security.get_or_insert_with(Default::default)
                    }
                    _ => &mut config.security,
                };
                match name {
                    "password_file" => scope.password_file = Some(one("a file")?.into()),
                    "acl_file" => scope.acl_file = Some(one("a file")?.into()),
                    _ => scope.allow_anonymous = Some(parse_bool(one("true or false")?).map_err(&err)?),
                }
            }
            "auth_failure_delay" => {
                let v = one("seconds")?;
                let secs = v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && (0.0..=3600.0).contains(s))
                    .ok_or_else(|| {
                        err(format!(
                            "invalid value '{v}' for auth_failure_delay: expected seconds, 0 to 3600"
                        ))
                    })?;
                config.auth_failure_delay_ms = (secs * 1000.0) as u64;
            }
            "max_keepalive" => {
                config.max_keepalive = parse_num(name, one("seconds, 0-65535")?).map_err(&err)?
            }
            "max_packet_size" => config.max_packet_size = parse_num(name, one("bytes")?).map_err(&err)?,
            "max_inflight_messages" => {
                config.max_inflight_messages = parse_num(name, one("a count, 0-65535")?).map_err(&err)?
            }
            "max_queued_messages" => {
                let n: usize = parse_num(name, one("a count")?).map_err(&err)?;
                // mosquitto: 0 means no limit; midge keeps memory bounded, so 0 means a large one.
                config.max_queued_messages = if n == 0 { 1_000_000 } else { n };
            }
            "max_connections" => {
                let v = one("a count, or -1 for no limit")?;
                config.max_connections = match v.parse::<i64>() {
                    Ok(n) if n < 0 => None,
                    Ok(n) => Some(n as usize),
                    Err(_) => {
                        return Err(err(format!(
                            "invalid value '{v}' for max_connections: expected a number"
                        )))
                    }
                };
            }
            // Options that restrict who connects or what they see: ignoring them would run
            // the broker less secure than its configuration says, so midge refuses to start.
            other if RESTRICTING_VALUE.iter().any(|(o, _)| *o == other) => {
                let restricting =
                    RESTRICTING_VALUE.iter().find(|(o, _)| *o == other).is_some_and(|(_, v)| *v);
                if parse_bool(one("true or false")?).map_err(&err)? == restricting {
                    return Err(err(format!(
                        "{other} {restricting} is not supported by midge yet; refusing to start without it"
                    )));
                }
            }
            // parse_file puts the files of an include_dir in its place; text has no directory.
            "include_dir" => {
                return Err(err(
                    "include_dir is read from a configuration file only (midge broker -c FILE)".into()
                ))
            }
            other if SECURITY_NOT_YET.contains(&other) => {
                return Err(err(format!(
                    "option '{other}' is not supported by midge yet; refusing to start without it"
                )))
            }
            other if not_yet(other) => {
                warnings
                    .push(format!("{file}:{line}: option '{other}' is not supported by midge yet; ignored"));
            }
            other => return Err(err(format!("unknown option '{other}'"))),
        }
    }
    if default.origin.is_some() {
        config.listeners.insert(0, default);
    }
    if config.per_listener_settings {
        // A listener without security options of its own has none: no password file, no
        // ACL, and anonymous clients only as allow_anonymous's default says.
        for l in config.listeners.iter_mut().filter(|l| !l.default) {
            l.security.get_or_insert_with(Default::default);
        }
    }
    Ok((config, warnings))
}

fn parse_port(s: &str) -> Result<u16, String> {
    s.parse().map_err(|_| format!("invalid port '{s}': expected a number 0-65535"))
}

/// A boolean option's value: `true` or `false` (mosquitto takes `1` and `0` too).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("invalid value '{s}': expected true or false")),
    }
}

/// True when `name value`, written before any `listener` line (`port` and `bind_address`:
/// anywhere), makes mosquitto open its default listener: port 1883 on every address unless
/// `port` and `bind_address` say otherwise. As mosquitto 2.0.11 does (each case tried): a
/// listener setting with a value other than its default does; `tls_version`, `mount_point`,
/// `allow_anonymous` and `acl_file` do not; `password_file` and `psk_file` do with
/// `per_listener_settings true`.
pub fn makes_default_listener(name: &str, value: &str, per_listener_settings: bool) -> bool {
    let on = parse_bool(value) == Ok(true);
    match name {
        "port" | "bind_address" | "bind_interface" | "socket_domain" | "certfile" | "keyfile" | "cafile"
        | "capath" | "crlfile" | "ciphers" | "ciphers_tls1.3" | "psk_hint" => true,
        "require_certificate"
        | "use_identity_as_username"
        | "use_subject_as_username"
        | "use_username_as_clientid" => on,
        // As numbers: `max_qos 02` is 2.
        "max_qos" => value.parse::<i64>() != Ok(2),
        "max_connections" => !value.parse::<i64>().is_ok_and(|n| n < 0),
        "protocol" => value != "mqtt",
        "password_file" | "psk_file" | "auth_plugin" | "plugin" => per_listener_settings,
        _ => false,
    }
}

/// The unsigned integer types options are read into, with their range for messages.
trait Unsigned: std::str::FromStr {
    const MAX: u64;
}

macro_rules! unsigned {
    ($($t:ty),*) => { $(impl Unsigned for $t { const MAX: u64 = <$t>::MAX as u64; })* };
}
unsigned!(u16, u32, u64, usize);

fn parse_num<T: Unsigned>(name: &str, s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("invalid value '{s}' for {name}: expected a number from 0 to {}", T::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LogDest, LogLevel, SecuritySettings};
    use std::net::SocketAddr;

    #[test]
    fn reads_the_options_of_this_issue() {
        let text = "# a comment\n\nlistener 1884 127.0.0.1\nlistener 1885\nallow_anonymous true\nmax_keepalive 30\n\
                    max_packet_size 1024\nmax_inflight_messages 5\nmax_queued_messages 7\nmax_connections 3\n";
        let (c, w) = parse_str(text, "t.conf").unwrap();
        assert!(w.is_empty());
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[0].port, 1884);
        assert_eq!(c.listeners[0].bind.as_deref(), Some("127.0.0.1"));
        assert_eq!(c.listeners[1].bind, None);
        assert_eq!(c.security.allow_anonymous, Some(true));
        assert_eq!(c.max_keepalive, 30);
        assert_eq!(c.max_packet_size, 1024);
        assert_eq!(c.max_inflight_messages, 5);
        assert_eq!(c.max_queued_messages, 7);
        assert_eq!(c.max_connections, Some(3));
    }

    #[test]
    fn anonymous_defaults_as_mosquitto_2() {
        let (none, _) = parse_str("", "t").unwrap();
        assert!(none.local_only() && none.anonymous_allowed(&none.security));
        let (l, _) = parse_str("listener 1883\n", "t").unwrap();
        assert!(!l.anonymous_allowed(&l.security));
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let cases = [
            (
                "listener\n",
                "t.conf:1: listener needs a port and optionally an address: listener PORT [ADDRESS]",
            ),
            ("\nlistener abc\n", "t.conf:2: invalid port 'abc': expected a number 0-65535"),
            ("allow_anonymous yes\n", "t.conf:1: invalid value 'yes': expected true or false"),
            (
                "max_keepalive 70000\n",
                "t.conf:1: invalid value '70000' for max_keepalive: expected a number from 0 to 65535",
            ),
            (
                "allow_anonymous true\nper_listener_settings true\n",
                "t.conf:2: per_listener_settings must be set before any other security settings",
            ),
            (
                "mount_point a/\n",
                "t.conf:1: option 'mount_point' is not supported by midge yet; refusing to start without it",
            ),
            ("max_keepalive\n", "t.conf:1: max_keepalive needs a value (seconds, 0-65535)"),
            ("frobnicate 1\n", "t.conf:1: unknown option 'frobnicate'"),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_str(text, "t.conf").unwrap_err().to_string(), expected, "{text:?}");
        }
    }

    #[test]
    fn options_that_would_loosen_security_are_refused_only_when_they_would() {
        assert!(parse_str("per_listener_settings false\nuse_username_as_clientid false\n", "t").is_ok());
        for text in [
            "use_username_as_clientid true\n",
            "clientid_prefixes sensor-\n",
            "listener 1\nprotocol websockets\n",
        ] {
            assert!(parse_str(text, "t").is_err(), "{text:?}");
        }
    }

    #[test]
    fn include_dir_files_are_read_in_place() {
        let dir = std::env::temp_dir().join(format!("midge-parse-include-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::write(dir.join("conf.d/acl.conf"), "acl_file /etc/midge/acl\n").unwrap();
        std::fs::write(dir.join("conf.d/bad.conf"), "\nmax_qos 7\n").unwrap();
        let main = dir.join("main.conf");
        let inc = format!("listener 1883\ninclude_dir {}\n", dir.join("conf.d").display());
        std::fs::write(&main, &inc).unwrap();
        let e = parse_file(&main).unwrap_err().to_string();
        assert!(e.ends_with("bad.conf:2: invalid value '7' for max_qos: expected 0, 1 or 2"), "{e}");
        std::fs::remove_file(dir.join("conf.d/bad.conf")).unwrap();
        let (c, _) = parse_file(&main).unwrap();
        assert_eq!(c.security.acl_file.as_deref(), Some(Path::new("/etc/midge/acl")));
        std::fs::write(&main, "include_dir nowhere.d\n").unwrap();
        let e = parse_file(&main).unwrap_err().to_string();
        assert!(e.contains("main.conf:1: cannot read include_dir nowhere.d"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls_options_belong_to_the_last_listener() {
        let text = "password_file /etc/midge/passwd\nacl_file /etc/midge/acl\nlistener 1883 127.0.0.1\n\
                    listener 8883\ncertfile s.crt\nkeyfile s.key\ncafile ca.crt\nrequire_certificate true\n\
                    use_identity_as_username true\ncrlfile crl.pem\ntls_version tlsv1.3\n";
        let (c, _) = parse_str(text, "t").unwrap();
        assert_eq!(c.security.password_file.as_deref(), Some(Path::new("/etc/midge/passwd")));
        assert_eq!(c.security.acl_file.as_deref(), Some(Path::new("/etc/midge/acl")));
        assert!(!c.listeners[0].tls.enabled());
        let tls = &c.listeners[1].tls;
        assert!(tls.enabled() && tls.require_certificate && tls.use_identity_as_username);
        assert_eq!(tls.min_version, Some(TlsVersion::V1_3));
        assert_eq!(tls.crlfile.as_deref(), Some(Path::new("crl.pem")));
        // Before any listener line: mosquitto's default listener, 1883 on every address.
        let (c, _) = parse_str("certfile x\nkeyfile y\nlistener 1884 127.0.0.1\n", "t").unwrap();
        assert_eq!((c.listeners[0].port, c.listeners[0].bind.as_deref()), (1883, None));
        assert!(c.listeners[0].tls.enabled() && !c.listeners[1].tls.enabled());
        assert_eq!(
            parse_str("listener 1\ntls_version tlsv1.1\n", "t").unwrap_err().to_string(),
            "t:2: tls_version tlsv1.1 is not supported: versions below TLS 1.2 are insecure"
        );
    }

    #[test]
    fn port_and_bind_address_set_the_default_listener_wherever_they_are() {
        // The review's example: bind_address after a listener line is still the default
        // listener's, and a second `port` moves it rather than adding a listener.
        let text =
            "listener 8883 127.0.0.1\nbind_address 0.0.0.0\nport 1883\nport 1884\nbind_address 127.0.0.1\n";
        let (c, _) = parse_str(text, "t").unwrap();
        let got: Vec<_> = c.listeners.iter().map(|l| (l.port, l.bind.as_deref())).collect();
        assert_eq!(got, [(1884, Some("127.0.0.1")), (8883, Some("127.0.0.1"))]);
        assert!(c.listeners.iter().all(Listener::is_local));
    }

    #[test]
    fn what_opens_mosquittos_default_listener() {
        // Each line before `listener 17001 127.0.0.1`, and whether mosquitto 2.0.11 then also
        // listened on port 1883 (tried one by one).
        let cases = [
            ("allow_anonymous true", false),
            ("per_listener_settings true\nallow_anonymous true", false),
            ("per_listener_settings true\nacl_file acl", false),
            ("per_listener_settings true\npassword_file passwd", true),
            ("password_file passwd", false),
            ("max_qos 1", true),
            ("max_qos 2", false),
            ("max_connections 10", true),
            ("max_connections -1", false),
            ("socket_domain ipv4", true),
            ("protocol mqtt", false),
            ("max_keepalive 10", false),
            ("cafile ca.crt", true),
            ("require_certificate true", true),
            ("require_certificate false", false),
            ("use_identity_as_username true", true),
            ("tls_version tlsv1.2", false),
            ("ciphers_tls1.3 TLS_AES_128_GCM_SHA256", true),
        ];
        for (lines, opens) in cases {
            let text = format!("{lines}\nlistener 17001 127.0.0.1\n");
            let (c, _) = parse_str(&text, "t").unwrap();
            let ports: Vec<u16> = c.listeners.iter().map(|l| l.port).collect();
            let expected: &[u16] = if opens { &[1883, 17001] } else { &[17001] };
            assert_eq!(ports, expected, "{lines:?}");
        }
        // Its settings are kept even when another line opens it.
        let (c, _) = parse_str("tls_version tlsv1.3\ncertfile c\nkeyfile k\nlistener 1\n", "t").unwrap();
        assert_eq!(c.listeners[0].tls.min_version, Some(TlsVersion::V1_3));
        assert_eq!(c.listeners[0].origin.as_deref(), Some("t:2"), "named by the line that opens it");
        let (c, _) = parse_str("allow_anonymous 1\nretain_available 0\n", "t").unwrap();
        assert!(c.security.allow_anonymous == Some(true) && !c.retain_available, "mosquitto's 1 and 0");
    }

    #[test]
    fn per_listener_settings_give_each_listener_its_own_security() {
        let text = "per_listener_settings true\nport 1883\nallow_anonymous true\nacl_file global.acl\n\
                    listener 8883\npassword_file passwd\nlistener 1884 127.0.0.1\nallow_anonymous true\n";
        let (c, _) = parse_str(text, "t").unwrap();
        let [default, tls, local] = &c.listeners[..] else { panic!("{:?}", c.listeners) };
        // The default listener takes what comes before the first `listener` line.
        assert!(default.default);
        let global = SecuritySettings {
            allow_anonymous: Some(true),
            acl_file: Some("global.acl".into()),
            ..Default::default()
        };
        assert_eq!(c.security_of(default), &global);
        let own = SecuritySettings { password_file: Some("passwd".into()), ..Default::default() };
        assert_eq!(c.security_of(tls), &own);
        assert!(
            !c.anonymous_allowed(c.security_of(tls)),
            "a listener without allow_anonymous: mosquitto 2.0's false"
        );
        let own = SecuritySettings { allow_anonymous: Some(true), ..Default::default() };
        assert_eq!(c.security_of(local), &own, "nothing from the global settings or the listener before");
        // Without per_listener_settings every listener has the global settings.
        let (c, _) =
            parse_str("listener 1\nallow_anonymous true\nlistener 2\npassword_file p\n", "t").unwrap();
        assert!(c.listeners.iter().all(|l| l.security.is_none()));
        assert_eq!(c.security.password_file.as_deref(), Some(Path::new("p")));
    }

    #[test]
    fn logging_options() {
        let text = "log_dest file /var/log/mosquitto/my log.txt\nlog_dest stdout\nlog_dest stdout\n\
                    log_type error\nlog_type information\nlog_timestamp false\npid_file /run/m.pid\n";
        let (c, w) = parse_str(text, "t").unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.log_dest, [LogDest::File("/var/log/mosquitto/my log.txt".into()), LogDest::Stdout]);
        assert_eq!(c.log_level, Some(LogLevel::Information), "the most detailed log_type decides");
        assert!(!c.log_timestamp);
        assert_eq!(c.pid_file.as_deref(), Some(Path::new("/run/m.pid")));
        let (c, w) = parse_str("log_dest syslog\nlog_type all\n", "t").unwrap();
        assert_eq!(c.log_dest, [LogDest::Stderr]);
        assert_eq!(c.log_level, Some(LogLevel::Debug));
        assert_eq!(w, ["t:1: log_dest syslog is not supported by midge yet; logging to stderr instead"]);
        for (text, expected) in [
            ("log_dest file\n", "t:1: log_dest file needs a file: log_dest file PATH"),
            ("log_dest printer\n", "t:1: invalid log_dest 'printer': expected stderr, stdout, file PATH or none"),
            ("log_type verbose\n", "t:1: invalid log_type 'verbose': expected none, error, warning, notice, information, subscribe, unsubscribe, websockets, debug or all"),
        ] {
            assert_eq!(parse_str(text, "t").unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn socket_domain_keeps_a_listener_to_one_family() {
        let (c, _) = parse_str("listener 1883\nlistener 1884\nsocket_domain ipv4\n", "t").unwrap();
        let v4 = std::net::Ipv4Addr::UNSPECIFIED;
        let v6 = std::net::Ipv6Addr::UNSPECIFIED;
        // Without an address, both wildcard addresses: one socket each, as mosquitto.
        assert_eq!(c.listeners[0].addresses(), [(v4, 1883).into(), (v6, 1883).into()]);
        assert_eq!(c.listeners[1].addresses(), [(v4, 1884).into()]);
        let (c, _) = parse_str("socket_domain ipv6\n", "t").unwrap();
        assert_eq!(c.listeners[0].addresses(), [(v6, 1883).into()]);
        // localhost is both loopback addresses, without a resolver (local only mode's listener).
        let (c, _) = parse_str("listener 1884 localhost\n", "t").unwrap();
        let local: [SocketAddr; 2] =
            [(std::net::Ipv4Addr::LOCALHOST, 1884).into(), (std::net::Ipv6Addr::LOCALHOST, 1884).into()];
        assert_eq!(c.listeners[0].addresses(), local);
        assert!(c.listeners[0].is_local() && c.listeners[0].ipv6_optional());
        assert_eq!(Config::default().effective_listeners()[0].bind.as_deref(), Some("localhost"));
        let (c, _) = parse_str("listener 1 127.0.0.1\nsocket_domain ipv6\n", "t").unwrap();
        assert!(c.listeners[0].addresses().is_empty());
        assert_eq!(
            parse_str("listener 1\nsocket_domain inet\n", "t").unwrap_err().to_string(),
            "t:2: invalid socket_domain 'inet': expected ipv4 or ipv6"
        );
    }

    #[test]
    fn every_implemented_option_is_read() {
        for name in IMPLEMENTED {
            // Without its value, an option with a match arm of its own asks for the value;
            // one that fell through to the refused or ignored lists would say so instead.
            let text = format!("listener 1\n{name}\n");
            let e = parse_str(&text, "t").map(|_| ()).unwrap_err().to_string();
            assert!(
                e.contains("needs a value")
                    || (*name == "listener" && e.contains("listener needs a port"))
                    || (*name == "include_dir" && e.contains("read from a configuration file")),
                "{name}: {e}"
            );
            assert!(is_known_option(name));
        }
        assert!(is_known_option("bridge_cafile") && is_known_option("psk_file"));
        assert!(!is_known_option("frobnicate"));
    }

    #[test]
    fn known_mosquitto_options_warn() {
        let (_, w) = parse_str("persistence true\nsys_interval 10\n", "m.conf").unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0], "m.conf:1: option 'persistence' is not supported by midge yet; ignored");
        let e = parse_str("\npsk_file /etc/x\n", "m.conf").unwrap_err();
        assert_eq!(
            e.to_string(),
            "m.conf:2: option 'psk_file' is not supported by midge yet; refusing to start without it"
        );
    }
}
