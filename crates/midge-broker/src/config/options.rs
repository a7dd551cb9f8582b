//! What midge knows of mosquitto's options: those it reads, those it refuses, those it
//! accepts with a warning, which of them belong to a listener, and which open mosquitto's
//! default listener. One list for the parser and for `midge audit`.
use super::values::parse_bool;

/// mosquitto's security options, per listener with `per_listener_settings true` (which must
/// come before any of them).
pub(super) const SECURITY_OPTIONS: &[&str] = &[
    "allow_anonymous",
    "allow_zero_length_clientid",
    "acl_file",
    "auth_plugin",
    "auto_id_prefix",
    "password_file",
    "plugin",
    "psk_file",
    "use_username_as_clientid",
    "clientid_prefixes",
];

/// Security options midge does not implement yet: refused, because running without them
/// would leave open what the user meant to close.
pub(super) const SECURITY_NOT_YET: &[&str] = &[
    // mosquitto 2.1's plugin for every listener.
    "global_plugin",
    "psk_file",
    "auth_plugin",
    "plugin",
    // TLS-PSK towards a bridge's remote.
    "bridge_identity",
    "bridge_psk",
];

/// Options that restrict who connects or what they see when set to one value (given here):
/// midge does not have them yet, and ignoring them would run the broker less secure than
/// its configuration says, so that value is refused. The other value is what midge does.
pub(super) const RESTRICTING_VALUE: &[(&str, bool)] = &[];

/// Options of mosquitto that midge knows of but does not implement yet: accepted with a
/// warning, so a mosquitto configuration still starts.
const NOT_YET: &[&str] = &[
    "auth_opt_",
    "auth_plugin_deny_special_chars",
    "dhparamfile",
    "plugin_opt_",
    "psk_hint",
    "tls_engine",
    "tls_engine_kpass_sha1",
    "tls_keyform",
];

/// Options mosquitto reads as the rest of their line (its `conf__parse_string`: spaces, a
/// `#` and all): paths, names, passwords. Words after the first are not left out for them
/// (`password_file my file` names "my file" to mosquitto): midge refuses the line, as
/// before, where it takes one word.
pub(super) const REST_OF_LINE: &[&str] = &[
    "acl_file",
    "auth_plugin",
    "auto_id_prefix",
    "bind_interface",
    "bridge_cafile",
    "bridge_capath",
    "bridge_certfile",
    "bridge_identity",
    "bridge_keyfile",
    "bridge_psk",
    "cafile",
    "capath",
    "certfile",
    "ciphers",
    "ciphers_tls1.3",
    "clientid_prefixes",
    "crlfile",
    "dhparamfile",
    "global_plugin",
    "http_dir",
    "keyfile",
    "local_clientid",
    "local_password",
    "local_username",
    "log_timestamp_format",
    "mount_point",
    "notification_topic",
    "password_file",
    "persistence_file",
    "persistence_location",
    "pid_file",
    "plugin",
    "psk_file",
    "psk_hint",
    "remote_clientid",
    "remote_password",
    "remote_username",
    "tls_engine",
    "tls_keyform",
    "user",
];

/// The options [`super::parse_directives`] reads.
pub(super) const IMPLEMENTED: &[&str] = &[
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
    "maximum_qos",
    "max_topic_alias",
    "accept_protocol_versions",
    "bind_interface",
    "http_dir",
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
    "max_queued_bytes",
    "memory_limit",
    "connection_messages",
    "set_tcp_nodelay",
    "allow_duplicate_messages",
    "websockets_log_level",
    "max_connections",
    "max_inflight_bytes",
    "message_size_limit",
    "upgrade_outgoing_qos",
    "check_retain_source",
    "queue_qos0_messages",
    "allow_zero_length_clientid",
    "auto_id_prefix",
    "use_username_as_clientid",
    "clientid_prefixes",
    "mount_point",
    "include_dir",
    "log_dest",
    "log_type",
    "log_facility",
    "log_timestamp",
    "log_timestamp_format",
    "pid_file",
    "user",
    "persistence",
    "retained_persistence",
    "retry_interval",
    "persistence_location",
    "persistence_file",
    "persistence_sync_interval",
    "autosave_interval",
    "autosave_on_changes",
    "persistent_client_expiration",
    "sys_interval",
    "websockets_headers_size",
];

/// True when `name` is an option midge knows: one it reads, one it refuses (a security
/// option it does not have), or a mosquitto option it accepts with a warning.
pub fn is_known_option(name: &str) -> bool {
    IMPLEMENTED.contains(&name)
        || name == "connection"
        || super::bridge::BRIDGE_OPTIONS.contains(&name)
        || super::cluster::CLUSTER_OPTIONS.contains(&name)
        || RESTRICTING_VALUE.iter().any(|(o, _)| *o == name)
        || SECURITY_NOT_YET.contains(&name)
        || not_yet(name)
}

/// True for the options of [`NOT_YET`]; an entry ending in `_` stands for every option
/// with that prefix (`bridge_`, `auth_opt_`).
pub(super) fn not_yet(name: &str) -> bool {
    NOT_YET.iter().any(|k| name == *k || (k.ends_with('_') && name.starts_with(k)))
}

/// Options that belong to the listener of the `listener` line above them (before any, to
/// mosquitto's default listener): those midge reads, and those of mosquitto it does not
/// have, so that `midge audit` finds each where mosquitto puts it.
const LISTENER_OPTIONS: &[&str] = &[
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
    "max_topic_alias",
    "mount_point",
    "max_qos",
    "maximum_qos",
    "max_connections",
    "accept_protocol_versions",
    "bind_interface",
    "http_dir",
    // Not in midge yet.
    "dhparamfile",
    "psk_hint",
    "tls_engine",
    "tls_engine_kpass_sha1",
    "tls_keyform",
];

/// Which part of the configuration an option sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Belongs {
    /// The listener above it (`port` and `bind_address`: always the default listener).
    Listener,
    /// The security settings: with `per_listener_settings true`, of the listener above it.
    Security,
    /// The broker as a whole.
    General,
}

/// Which part of the configuration `name` sets.
pub(super) fn belongs(name: &str) -> Belongs {
    if LISTENER_OPTIONS.contains(&name) {
        Belongs::Listener
    } else if SECURITY_OPTIONS.contains(&name) {
        Belongs::Security
    } else {
        Belongs::General
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
        "max_qos" | "maximum_qos" => value.parse::<i64>() != Ok(2),
        "max_connections" => !value.parse::<i64>().is_ok_and(|n| n < 0),
        "protocol" => value != "mqtt",
        "password_file" | "psk_file" | "auth_plugin" | "plugin" => per_listener_settings,
        "allow_zero_length_clientid" => per_listener_settings && parse_bool(value) == Ok(false),
        _ => false,
    }
}
