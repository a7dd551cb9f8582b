//! The configuration as mosquitto 2.0 reads it, for the checks: listeners with their TLS
//! settings, and the security settings (global, or per listener with
//! `per_listener_settings true`), each value with the line it came from.
//!
//! Unlike the broker's strict parser this never fails: a value it cannot read becomes an
//! informational finding and is left out; options it does not need are skipped.
use midge_broker::config::{makes_default_listener, parse_bool, Directive, Listener as BrokerListener};

use crate::finding::{Finding, Kind, Location, Severity};

/// A value and the line that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    /// The value (paths as written).
    pub value: T,
    /// Its line.
    pub at: Location,
}

/// Who may connect and what they may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// `allow_anonymous`.
    pub allow_anonymous: Option<Setting<bool>>,
    /// `password_file`.
    pub password_file: Option<Setting<String>>,
    /// `acl_file`.
    pub acl_file: Option<Setting<String>>,
    /// `psk_file`.
    pub psk_file: Option<Setting<String>>,
    /// `plugin` / `auth_plugin` lines: authentication and access control done elsewhere.
    pub plugins: Vec<Location>,
}

impl Security {
    /// Where passwords are checked (a password file or a plugin), if anywhere.
    pub fn password_source(&self) -> Option<&Location> {
        self.password_file.as_ref().map(|s| &s.at).or(self.plugins.first())
    }
}

/// A listener's TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// `certfile`.
    pub certfile: Option<Setting<String>>,
    /// `keyfile`.
    pub keyfile: Option<Setting<String>>,
    /// `cafile`.
    pub cafile: Option<Setting<String>>,
    /// `capath`.
    pub capath: Option<Setting<String>>,
    /// `crlfile`.
    pub crlfile: Option<Setting<String>>,
    /// `require_certificate`.
    pub require_certificate: Option<Setting<bool>>,
    /// `use_identity_as_username` or `use_subject_as_username`: the certificate names the user.
    pub identity_as_username: Option<Setting<bool>>,
    /// `tls_version`, as written.
    pub tls_version: Option<Setting<String>>,
    /// `psk_hint`: the listener speaks TLS-PSK.
    pub psk_hint: Option<Setting<String>>,
}

impl Tls {
    /// True when the listener speaks TLS (a certificate, or pre-shared keys).
    pub fn enabled(&self) -> bool {
        self.certfile.is_some() || self.keyfile.is_some() || self.psk_hint.is_some()
    }

    /// True when clients must present a certificate.
    pub fn requires_certificate(&self) -> bool {
        self.require_certificate.as_ref().is_some_and(|s| s.value)
    }

    /// True when the user name of every client comes from its certificate.
    pub fn names_users_by_certificate(&self) -> bool {
        self.requires_certificate() && self.identity_as_username.as_ref().is_some_and(|s| s.value)
    }
}

/// A listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The port, as written.
    pub port: String,
    /// The address bound; `None`: every interface.
    pub bind: Option<String>,
    /// `bind_interface`.
    pub bind_interface: Option<String>,
    /// The `listener` (or `port`) line.
    pub at: Location,
    /// TLS.
    pub tls: Tls,
    /// Its own security settings, used with `per_listener_settings true`.
    pub security: Security,
    /// mosquitto's default listener: made by `port`, `bind_address` or listener options
    /// before any `listener` line; it takes the security settings before the first listener.
    pub default: bool,
}

impl Listener {
    fn new(port: &str, bind: Option<&str>, at: Location, default: bool) -> Self {
        Listener {
            port: port.to_owned(),
            bind: bind.map(str::to_owned),
            bind_interface: None,
            at,
            tls: Tls::default(),
            security: Security::default(),
            default,
        }
    }

    /// True when only this host can reach it: a loopback address, a Unix socket, or the
    /// loopback interface.
    pub fn is_local(&self) -> bool {
        let bound_local = self
            .bind
            .as_deref()
            .is_some_and(|b| b.starts_with('/') || BrokerListener::new(0, Some(b)).is_local());
        bound_local || self.bind_interface.as_deref() == Some("lo")
    }

    /// "listener 1883 (0.0.0.0)", for messages.
    pub fn name(&self) -> String {
        let address = match (&self.bind, &self.bind_interface) {
            (Some(b), _) => b.clone(),
            (None, Some(i)) => format!("interface {i}"),
            (None, None) => "0.0.0.0".to_owned(),
        };
        if self.default {
            format!("listener {} ({address}, mosquitto's default listener)", self.port)
        } else {
            format!("listener {} ({address})", self.port)
        }
    }
}

/// The configuration, as far as the checks need it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    /// Listeners, mosquitto's default listener first if there is one. Empty: local only mode
    /// (localhost:1883, anonymous allowed).
    pub listeners: Vec<Listener>,
    /// The global security settings (with `per_listener_settings`, those before the first
    /// `listener` line, which the default listener takes).
    pub global: Security,
    /// `per_listener_settings true`.
    pub per_listener_settings: bool,
    /// `user` (the last line): who the broker runs as once started as root.
    pub user: Option<Setting<String>>,
    /// The configuration's files (the main one and those of `include_dir`), in order.
    pub config_files: Vec<String>,
    /// Values that could not be read.
    pub findings: Vec<Finding>,
}

/// Options that belong to the listener above them.
const LISTENER_OPTIONS: &[&str] = &[
    "certfile",
    "keyfile",
    "cafile",
    "capath",
    "crlfile",
    "require_certificate",
    "use_identity_as_username",
    "use_subject_as_username",
    "tls_version",
    "psk_hint",
    "bind_interface",
];

/// Security options: per listener with `per_listener_settings true`, global otherwise.
const SECURITY_OPTIONS: &[&str] =
    &["allow_anonymous", "password_file", "acl_file", "psk_file", "auth_plugin", "plugin"];

fn at(d: &Directive) -> Location {
    Location::new(d.file.clone(), d.line)
}

impl Model {
    /// Reads the directives as mosquitto 2.0 does.
    pub fn build(directives: &[Directive]) -> Model {
        let mut m = Model {
            per_listener_settings: directives
                .iter()
                .rev()
                .find(|d| d.name == "per_listener_settings")
                .is_some_and(|d| parse_bool(&d.value) == Ok(true)),
            ..Model::default()
        };
        for d in directives {
            if !m.config_files.contains(&d.file) {
                m.config_files.push(d.file.clone());
            }
        }
        let mut default: Option<Listener> = None;
        // Whether mosquitto opens its default listener (settings written before any
        // `listener` line may only be kept for it).
        let mut default_opened = false;
        for d in directives {
            let name = d.name.as_str();
            let before_listeners = m.listeners.is_empty() || name == "port" || name == "bind_address";
            if before_listeners
                && !default_opened
                && makes_default_listener(name, &d.value, m.per_listener_settings)
            {
                // Named by the line that opens it.
                default_opened = true;
                default.get_or_insert_with(|| Listener::new("1883", None, at(d), true)).at = at(d);
            }
            match name {
                "listener" => match d.args.first() {
                    Some(port) => {
                        m.check_port(d, port);
                        m.listeners.push(Listener::new(
                            port,
                            d.args.get(1).map(String::as_str),
                            at(d),
                            false,
                        ));
                    }
                    None => m.invalid(d, "listener needs a port: listener PORT [ADDRESS]"),
                },
                "port" => {
                    m.check_port(d, &d.value);
                    let l = default.get_or_insert_with(|| Listener::new("1883", None, at(d), true));
                    l.port = d.value.clone();
                    l.at = at(d);
                }
                "bind_address" => {
                    default.get_or_insert_with(|| Listener::new("1883", None, at(d), true)).bind =
                        Some(d.value.clone());
                }
                "global_plugin" => m.global.plugins.push(at(d)),
                "user" => m.user = Some(Setting { value: d.value.clone(), at: at(d) }),
                _ if LISTENER_OPTIONS.contains(&name) => {
                    let l = match m.listeners.last_mut() {
                        Some(l) => l,
                        None => default.get_or_insert_with(|| Listener::new("1883", None, at(d), true)),
                    };
                    let problem = set_listener_option(l, d);
                    if let Some(p) = problem {
                        m.invalid(d, &p);
                    }
                }
                _ if SECURITY_OPTIONS.contains(&name) => {
                    let scope = match m.listeners.last_mut() {
                        Some(l) if m.per_listener_settings => &mut l.security,
                        _ => &mut m.global,
                    };
                    if let Some(p) = set_security_option(scope, d) {
                        m.invalid(d, &p);
                    }
                }
                _ => {}
            }
        }
        if let Some(l) = default.filter(|_| default_opened) {
            m.listeners.insert(0, l);
        }
        m
    }

    /// The security settings a listener uses.
    pub fn security_of<'a>(&'a self, l: &'a Listener) -> &'a Security {
        if self.per_listener_settings && !l.default {
            &l.security
        } else {
            &self.global
        }
    }

    /// Every set of security settings in use: the global one, and each listener's own with
    /// `per_listener_settings`.
    pub fn scopes(&self) -> Vec<&Security> {
        let mut out = vec![&self.global];
        if self.per_listener_settings {
            out.extend(self.listeners.iter().filter(|l| !l.default).map(|l| &l.security));
        }
        out
    }

    /// No listener: mosquitto's local only mode.
    pub fn local_only(&self) -> bool {
        self.listeners.is_empty()
    }

    fn invalid(&mut self, d: &Directive, why: &str) {
        self.findings.push(Finding::new(
            Severity::Info,
            Kind::InvalidValue,
            at(d),
            format!("{why}; the broker refuses to start with this line"),
        ));
    }

    fn check_port(&mut self, d: &Directive, port: &str) {
        if port.parse::<u16>().is_err() {
            self.invalid(d, &format!("invalid port '{port}': expected a number 0-65535"));
        }
    }
}

fn path(d: &Directive) -> Result<Setting<String>, String> {
    if d.value.is_empty() {
        return Err(format!("{} needs a file", d.name));
    }
    Ok(Setting { value: d.value.clone(), at: at(d) })
}

fn boolean(d: &Directive) -> Result<Setting<bool>, String> {
    parse_bool(&d.value)
        .map(|value| Setting { value, at: at(d) })
        .map_err(|_| format!("invalid value '{}' for {}: expected true or false", d.value, d.name))
}

/// Sets a listener option; `Some(problem)` when its value cannot be read.
fn set_listener_option(l: &mut Listener, d: &Directive) -> Option<String> {
    let tls = &mut l.tls;
    let r = match d.name.as_str() {
        "certfile" => path(d).map(|s| tls.certfile = Some(s)),
        "keyfile" => path(d).map(|s| tls.keyfile = Some(s)),
        "cafile" => path(d).map(|s| tls.cafile = Some(s)),
        "capath" => path(d).map(|s| tls.capath = Some(s)),
        "crlfile" => path(d).map(|s| tls.crlfile = Some(s)),
        "require_certificate" => boolean(d).map(|s| tls.require_certificate = Some(s)),
        "use_identity_as_username" | "use_subject_as_username" => boolean(d).map(|s| {
            if s.value || tls.identity_as_username.is_none() {
                tls.identity_as_username = Some(s)
            }
        }),
        "tls_version" => {
            tls.tls_version = Some(Setting { value: d.value.clone(), at: at(d) });
            Ok(())
        }
        "psk_hint" => {
            tls.psk_hint = Some(Setting { value: d.value.clone(), at: at(d) });
            Ok(())
        }
        _ => {
            l.bind_interface = Some(d.value.clone());
            Ok(())
        }
    };
    r.err()
}

/// Sets a security option; `Some(problem)` when its value cannot be read.
fn set_security_option(s: &mut Security, d: &Directive) -> Option<String> {
    let r = match d.name.as_str() {
        "allow_anonymous" => boolean(d).map(|v| s.allow_anonymous = Some(v)),
        "password_file" => path(d).map(|v| s.password_file = Some(v)),
        "acl_file" => path(d).map(|v| s.acl_file = Some(v)),
        "psk_file" => path(d).map(|v| s.psk_file = Some(v)),
        _ => {
            s.plugins.push(at(d));
            Ok(())
        }
    };
    r.err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_broker::config::lex_str;

    #[test]
    fn listener_scoping() {
        let text = "password_file pw\ncertfile early.crt\nport 1884\nlistener 8883\ncertfile s.crt\n\
                    allow_anonymous true\nlistener 1883 127.0.0.1\nrequire_certificate maybe\n";
        let m = Model::build(&lex_str(text, "c"));
        assert_eq!(m.listeners.len(), 3);
        let d = &m.listeners[0];
        assert!(d.default && d.port == "1884" && d.at == Location::new("c", 3));
        assert_eq!(d.tls.certfile.as_ref().map(|s| s.value.as_str()), Some("early.crt"));
        assert_eq!(m.listeners[1].tls.certfile.as_ref().map(|s| s.at.line), Some(5));
        assert!(m.listeners[2].is_local() && !m.listeners[1].is_local());
        assert_eq!(m.global.allow_anonymous.as_ref().map(|s| s.value), Some(true));
        assert_eq!(m.findings.len(), 1);
        assert_eq!(m.findings[0].at.line, 8);
    }

    #[test]
    fn per_listener_settings() {
        let text = "per_listener_settings true\nlistener 1883 127.0.0.1\nallow_anonymous true\n\
                    listener 8883\npassword_file pw\n";
        let m = Model::build(&lex_str(text, "c"));
        assert!(m.global.allow_anonymous.is_none());
        assert!(m.security_of(&m.listeners[0]).allow_anonymous.is_some());
        assert!(m.security_of(&m.listeners[1]).password_file.is_some());
        assert_eq!(m.scopes().len(), 3);
    }
}
