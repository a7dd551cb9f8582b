//! The configuration as the broker reads it, for the checks: the broker's own parser in its
//! lenient mode ([`parse_lenient`]), so listener scoping, mosquitto's default listener and
//! `per_listener_settings` are decided once, by the code the broker runs with. The checks
//! read its [`Config`]; this module adds only what audit asks of it and the broker does not:
//! the line each value came from ([`Sources`]), the lines the broker refuses or ignores but
//! that say what the user meant (`psk_file`, `plugin`, `bind_interface`, `psk_hint`,
//! `tls_version tlsv1.1`), and the configuration's files.
use std::path::PathBuf;

use midge_broker::config::{
    parse_lenient, Config, ConfigError, Directive, Listener as BrokerListener, Parsed, Section,
    SecuritySettings, Sources,
};

use crate::finding::Location;

/// A file the configuration names, and the line that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSetting {
    /// The option (`password_file`, `keyfile`, ...).
    pub option: &'static str,
    /// The path as written.
    pub path: PathBuf,
    /// Its line.
    pub at: Location,
}

/// The configuration, as the broker reads it, with what only audit needs.
#[derive(Debug, Clone)]
pub struct Model {
    /// The broker's reading; the lines it refuses set nothing.
    pub config: Config,
    /// Where each value came from, and the lines the broker refuses for lacking what they ask.
    pub sources: Sources,
    /// The lines the broker refuses, in file order.
    pub errors: Vec<ConfigError>,
    /// The configuration's files (the main one and those of `include_dir`), in order.
    pub config_files: Vec<String>,
}

fn at(d: &Directive) -> Location {
    Location::new(d.file.clone(), d.line)
}

impl Model {
    /// Reads the directives with the broker's parser, past the lines it refuses.
    pub fn read(directives: &[Directive]) -> Model {
        let Parsed { config, sources, errors, .. } = parse_lenient(directives);
        let mut config_files: Vec<String> = Vec::new();
        for d in directives {
            if !config_files.contains(&d.file) {
                config_files.push(d.file.clone());
            }
        }
        Model { config, sources, errors, config_files }
    }

    /// No listener: mosquitto's local only mode (localhost:1883, anonymous allowed).
    pub fn local_only(&self) -> bool {
        self.config.local_only()
    }

    /// The listeners, mosquitto's default listener first if there is one.
    pub fn listeners(&self) -> impl Iterator<Item = ListenerView<'_>> {
        self.config.listeners.iter().enumerate().map(|(index, listener)| ListenerView {
            model: self,
            index,
            listener,
        })
    }

    /// The global security settings (with `per_listener_settings`, those before the first
    /// `listener` line, which the default listener takes).
    pub fn global(&self) -> Security<'_> {
        Security { model: self, section: Section::General, settings: &self.config.security }
    }

    /// Every set of security settings in use: the global one, and each listener's own with
    /// `per_listener_settings`.
    pub fn scopes(&self) -> Vec<Security<'_>> {
        let mut out = vec![self.global()];
        out.extend(self.listeners().map(|l| l.security()).filter(|s| s.section != Section::General));
        out
    }

    /// `user` (the last line) and where it is: who the broker runs as once started as root.
    pub fn user(&self) -> Option<(&str, Location)> {
        let line = self.sources.last(Section::General, "user")?;
        Some((self.config.user.as_deref()?, at(line)))
    }
}

/// A listener of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ListenerView<'a> {
    model: &'a Model,
    index: usize,
    /// The broker's listener.
    pub listener: &'a BrokerListener,
}

impl<'a> ListenerView<'a> {
    /// The line that opened it (the parser records one for every listener it opens).
    pub fn at(&self) -> Location {
        self.model.sources.listener(self.index).map_or_else(|| Location::new("", 0), at)
    }

    /// Its last `option` line: the one in force.
    pub fn line(&self, option: &str) -> Option<&'a Directive> {
        self.model.sources.last(Section::Listener(self.index), option)
    }

    /// Where its `option` was set.
    pub fn setting(&self, option: &str) -> Option<Location> {
        self.line(option).map(at)
    }

    /// True when it speaks TLS: a certificate, or pre-shared keys (`psk_hint`, which midge
    /// does not have: it refuses the `psk_file` that goes with it).
    pub fn tls_enabled(&self) -> bool {
        self.listener.tls.enabled() || self.line("psk_hint").is_some()
    }

    /// True when clients must present a certificate.
    pub fn requires_certificate(&self) -> bool {
        self.listener.tls.require_certificate
    }

    /// True when the user name of every client comes from its certificate.
    pub fn names_users_by_certificate(&self) -> bool {
        let tls = &self.listener.tls;
        self.requires_certificate() && (tls.use_identity_as_username || tls.use_subject_as_username)
    }

    /// True when only this host can reach it: a loopback address, or what midge does not
    /// have but mosquitto does: a Unix socket, or the loopback interface (`bind_interface`).
    pub fn is_local(&self) -> bool {
        self.listener.is_local()
            || self.listener.bind.as_deref().is_some_and(|b| b.starts_with('/'))
            || self.line("bind_interface").is_some_and(|d| d.value == "lo")
    }

    /// "listener 1883 (0.0.0.0)", for messages; the port as written.
    pub fn name(&self) -> String {
        let address = match (&self.listener.bind, self.line("bind_interface")) {
            (Some(b), _) => b.clone(),
            (None, Some(i)) => format!("interface {}", i.value),
            (None, None) => "0.0.0.0".to_owned(),
        };
        let opener = self.model.sources.listener(self.index).filter(|d| d.name == "listener");
        let port =
            opener.and_then(|d| d.args.first()).cloned().unwrap_or_else(|| self.listener.port.to_string());
        if self.listener.default {
            format!("listener {port} ({address}, mosquitto's default listener)")
        } else {
            format!("listener {port} ({address})")
        }
    }

    /// The security settings it uses.
    pub fn security(&self) -> Security<'a> {
        let section = self.model.config.security_section(self.index);
        Security { model: self.model, section, settings: self.model.config.security_of(self.listener) }
    }

    /// Its TLS files: key, certificate, CA, CRL and CA directory.
    pub fn tls_files(&self) -> Vec<FileSetting> {
        self.listener
            .tls
            .files()
            .into_iter()
            .filter_map(|(option, path)| file(option, path, self.setting(option)))
            .collect()
    }
}

/// One set of security settings: the global one, or a listener's own.
#[derive(Debug, Clone, Copy)]
pub struct Security<'a> {
    model: &'a Model,
    section: Section,
    /// The broker's settings.
    pub settings: &'a SecuritySettings,
}

impl Security<'_> {
    fn setting(&self, option: &str) -> Option<Location> {
        self.model.sources.last(self.section, option).map(at)
    }

    /// Why anonymous clients are allowed, when they are: where `allow_anonymous true` is, or
    /// mosquitto 2.0's default for the `port` listener with `per_listener_settings true`.
    pub fn anonymous(&self) -> Option<String> {
        self.settings.allow_anonymous.filter(|allowed| *allowed)?;
        Some(match self.setting("allow_anonymous") {
            Some(at) => format!("allow_anonymous true at {at}"),
            None => "no allow_anonymous for the `port` listener, which mosquitto 2.0 and midge take as true \
                     with per_listener_settings true"
                .to_owned(),
        })
    }

    /// The `plugin` and `auth_plugin` lines (and for the global settings `global_plugin`):
    /// authentication and access control done elsewhere. midge refuses them.
    pub fn plugins(&self) -> Vec<Location> {
        let plugin = |d: &Directive| matches!(d.name.as_str(), "plugin" | "auth_plugin" | "global_plugin");
        self.model
            .sources
            .iter()
            .filter(|(s, d)| *s == self.section && plugin(d))
            .map(|(_, d)| at(d))
            .collect()
    }

    /// Where passwords are checked (a password file or a plugin), if anywhere.
    pub fn password_source(&self) -> Option<Location> {
        self.file("password_file").map(|f| f.at).or_else(|| self.plugins().into_iter().next())
    }

    /// `password_file`, `acl_file` or `psk_file` (which midge refuses, but names a file of
    /// secrets all the same).
    pub fn file(&self, option: &'static str) -> Option<FileSetting> {
        let path = match option {
            "password_file" => self.settings.password_file.clone(),
            "acl_file" => self.settings.acl_file.clone(),
            // Refused by the broker, so only its line has it.
            "psk_file" => self.model.sources.last(self.section, option).map(|d| PathBuf::from(&d.value)),
            _ => None,
        };
        file(option, path.as_ref(), self.setting(option))
    }
}

fn file(option: &'static str, path: Option<&PathBuf>, at: Option<Location>) -> Option<FileSetting> {
    Some(FileSetting { option, path: path?.clone(), at: at? })
}

#[cfg(test)]
mod tests;
