//! The parser's tests: what each option sets, the errors users see, mosquitto's default
//! listener and per_listener_settings, and what the lenient reading keeps for audit.
use std::net::SocketAddr;
use std::path::Path;

use super::options::IMPLEMENTED;
use super::*;

#[test]
fn reads_the_options_of_this_issue() {
    let text =
        "# a comment\n\nlistener 1884 127.0.0.1\nlistener 1885\nallow_anonymous true\nmax_keepalive 30\n\
                max_packet_size 1024\nmax_inflight_messages 5\nmax_queued_messages 7\nmax_connections 3\n";
    let (c, w) = parse_str(text, "t.conf").unwrap();
    assert!(w.is_empty());
    assert_eq!(c.listeners.len(), 2);
    assert_eq!(c.listeners[0].port, 1884);
    assert_eq!(c.listeners[0].bind.as_deref(), Some("127.0.0.1"));
    assert_eq!(c.listeners[1].bind, None);
    assert_eq!(c.security.allow_anonymous, Some(true));
    assert_eq!(c.max_keepalive, Some(30));
    assert_eq!(c.max_packet_size, 1024);
    assert_eq!(c.max_inflight_messages, 5);
    assert_eq!(c.max_queued_messages, 7);
    assert_eq!((c.listeners[0].max_connections, c.listeners[1].max_connections), (None, Some(3)));
}

#[test]
fn listener_options_belong_to_their_listener_as_in_mosquitto() {
    // max_qos and max_connections before any `listener` line open mosquitto's default
    // listener and are its own; after one, they are that listener's.
    let text = "max_qos 1\nmax_connections 5\nlistener 1884\nmaximum_qos 0\nlistener 1885 127.0.0.1\n\
                accept_protocol_versions 3, 4\nlistener 1886\nbind_interface lo\naccept_protocol_versions 5\n";
    let (c, w) = parse_str(text, "t.conf").unwrap();
    assert!(w.is_empty(), "{w:?}");
    let ports: Vec<u16> = c.listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, [1883, 1884, 1885, 1886]);
    let qos: Vec<u8> = c.listeners.iter().map(|l| l.max_qos.as_u8()).collect();
    assert_eq!(qos, [1, 0, 2, 2]);
    let max: Vec<Option<usize>> = c.listeners.iter().map(|l| l.max_connections).collect();
    assert_eq!(max, [Some(5), None, None, None]);
    assert_eq!(c.listeners[2].accept_protocol_versions.as_deref(), Some(&[3, 4][..]));
    assert_eq!(c.listeners[3].accept_protocol_versions.as_deref(), Some(&[5][..]));
    assert_eq!(c.listeners[3].bind_interface.as_deref(), Some("lo"));
    // Bound to the interface's own addresses (lo: 127.0.0.1, and ::1 where there is IPv6).
    let addresses = c.listeners[3].addresses();
    assert!(addresses.iter().any(|a| a.to_string() == "127.0.0.1:1886"), "{addresses:?}");
    assert!(addresses.iter().all(|a| a.ip().is_loopback()), "{addresses:?}");
    let e = parse_str("accept_protocol_versions 5\n", "t").unwrap_err().to_string();
    assert!(e.contains("accept_protocol_versions"), "{e}");
    let e = parse_str("listener 1\naccept_protocol_versions 4,6\n", "t").unwrap_err().to_string();
    assert_eq!(e, "t:2: invalid accept_protocol_versions '6': expected 3, 4 or 5, separated by commas");
    let mut none = c.listeners[3].clone();
    none.bind_interface = Some("no-such-interface0".into());
    assert!(none.addresses().is_empty());
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
        ("listener\n", "t.conf:1: listener needs a port and optionally an address: listener PORT [ADDRESS]"),
        ("\nlistener abc\n", "t.conf:2: invalid port 'abc': expected a number 0-65535"),
        (
            "allow_anonymous yes\n",
            "t.conf:1: invalid value 'yes' for allow_anonymous: expected true or false",
        ),
        (
            "max_keepalive 70000\n",
            "t.conf:1: invalid value '70000' for max_keepalive: expected a number from 0 to 65535",
        ),
        (
            "allow_anonymous true\nper_listener_settings true\n",
            "t.conf:2: per_listener_settings must be set before any other security settings",
        ),
        (
            "plugin /usr/lib/p.so\n",
            "t.conf:1: option 'plugin' is not supported by midge yet; refusing to start without it",
        ),
        ("max_keepalive\n", "t.conf:1: max_keepalive needs a value (seconds, 0-65535)"),
        ("frobnicate 1\n", "t.conf:1: unknown option 'frobnicate'"),
        // Bridges mosquitto refuses (attack round atk22).
        (
            "connection b\naddress h:1884\ntry_private maybe\n",
            "t.conf:3: invalid value 'maybe' for try_private: expected true or false",
        ),
        (
            "connection b\naddress h:1884\n",
            "t.conf:1: topic (bridge b) needs a value (PATTERN [in|out|both [QOS [LOCAL REMOTE]]])",
        ),
        (
            "connection b\naddress h:1884\ntopic # both\naddress h2:1884\n",
            "t.conf:4: invalid value 'h2:1884' for address: expected one address line per bridge (its addresses go on that line)",
        ),
        ("connection b\naddress h:0\n", "t.conf:2: invalid value 'h:0' for address: expected a port from 1 to 65535"),
        (
            "connection b\naddress h:1884\ntopic # both\nnotification_topic st/#\n",
            "t.conf:4: invalid value 'st/#' for notification_topic: expected a topic name (no + or #)",
        ),
        (
            "connection b1\naddress h:1884\nremote_clientid same\ntopic # both\n\
             connection b2\naddress h2:1884\nremote_clientid same\ntopic # both\n",
            "t.conf:5: invalid value 'local.same' for local_clientid (bridge b2): expected a local client id no \
             other bridge has (set local_clientid or remote_clientid)",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_str(text, "t.conf").unwrap_err().to_string(), expected, "{text:?}");
    }
}

#[test]
fn options_that_would_loosen_security_are_refused_only_when_they_would() {
    assert!(parse_str("per_listener_settings false\nuse_username_as_clientid false\n", "t").is_ok());
    for text in ["psk_file p\n", "plugin /p.so\n"] {
        assert!(parse_str(text, "t").is_err(), "{text:?}");
    }
    let (c, _) = parse_str("use_username_as_clientid true\nclientid_prefixes sensor-\n", "t").unwrap();
    assert!(c.security.use_username_as_clientid);
    assert_eq!(c.security.clientid_prefixes.as_deref(), Some("sensor-"));
}

#[test]
fn listeners_speak_mqtt_websockets_or_http() {
    use crate::config::ListenerProtocol;
    let text = "listener 1\nlistener 2\nprotocol websockets\nlistener 3\nprotocol http\nsys_interval 0\n\
                websockets_headers_size 2048\n";
    let (c, warnings) = parse_str(text, "t").unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let protocols: Vec<_> = c.listeners.iter().map(|l| l.protocol).collect();
    assert_eq!(protocols, [ListenerProtocol::Mqtt, ListenerProtocol::WebSockets, ListenerProtocol::Http]);
    assert_eq!((c.sys_interval, c.websockets_headers_limit()), (0, 2048));
    let (c, _) = parse_str("listener 1\n", "t").unwrap();
    assert_eq!((c.sys_interval, c.websockets_headers_limit()), (10, 4096));
    assert_eq!(
        parse_str("listener 1\nprotocol mqtts\n", "t").unwrap_err().to_string(),
        "t:2: invalid protocol 'mqtts': expected mqtt, websockets or http"
    );
    assert!(parse_str("websockets_headers_size 70000\n", "t").is_err());
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
    let (c, _) = parse_str("listener 1\nallow_anonymous true\nlistener 2\npassword_file p\n", "t").unwrap();
    assert!(c.listeners.iter().all(|l| l.security.is_none()));
    assert_eq!(c.security.password_file.as_deref(), Some(Path::new("p")));
}

#[test]
fn per_listener_settings_default_listener_allows_anonymous_unless_told_not_to() {
    // mosquitto 2.0 (and its test 06-bridge-per-listener-settings): the `port` listener with no
    // allow_anonymous lets anonymous clients in; a `listener` listener does not.
    let (c, warnings) = parse_str("per_listener_settings true\nport 1883\nlistener 1884\n", "t").unwrap();
    let [default, other] = &c.listeners[..] else { panic!("{:?}", c.listeners) };
    assert!(c.anonymous_allowed(c.security_of(default)));
    assert!(!c.anonymous_allowed(c.security_of(other)));
    assert!(
        warnings.iter().any(|w| w.contains("port 1883") && w.contains("allow_anonymous false")),
        "{warnings:?}"
    );
    let text = "per_listener_settings true\nport 1883\nallow_anonymous false\nlistener 1884\n";
    let (c, warnings) = parse_str(text, "t").unwrap();
    assert!(!c.anonymous_allowed(c.security_of(&c.listeners[0])) && warnings.is_empty(), "{warnings:?}");
    // Without per_listener_settings the global default (false) holds for every listener.
    let (c, _) = parse_str("port 1883\nlistener 1884\n", "t").unwrap();
    assert!(!c.anonymous_allowed(c.security_of(&c.listeners[0])));
}

#[test]
fn words_after_an_options_value_are_ignored_with_a_warning_as_mosquitto_does() {
    let text = "listener 1884 127.0.0.1 # the local one\nallow_anonymous true # for now\n\
                max_connections 100 # limit\nlog_type error warning\nlog_timestamp_format %H # x\n";
    let (c, w) = parse_str(text, "m.conf").unwrap();
    // The whole line, read first and refused, opened no default listener.
    for line in ["max_connections -1 # none", "max_connections -1 two three"] {
        let (d, _) = parse_str(&format!("{line}\nlistener 8883\n"), "m.conf").unwrap();
        assert_eq!(d.listeners.iter().map(|l| l.port).collect::<Vec<_>>(), [8883], "{line}");
    }
    // Paths and other values that are the rest of the line to mosquitto: refused as before
    // (mosquitto would take "/etc/p # x" as the file).
    let e = parse_str("password_file /etc/p # x\n", "m.conf").unwrap_err().to_string();
    assert!(e.starts_with("m.conf:1: password_file takes one value"), "{e}");
    assert_eq!(c.listeners[0].bind.as_deref(), Some("127.0.0.1"));
    assert_eq!(c.security.allow_anonymous, Some(true));
    assert_eq!(c.listeners[0].max_connections, Some(100));
    assert_eq!(c.log_types(), LogTypes::NONE.with(LogType::Error), "mosquitto takes the first word only");
    assert_eq!(c.log_timestamp_format.as_deref(), Some("%H # x"), "the rest of the line, as mosquitto");
    assert_eq!(
        w,
        [
            "m.conf:1: '# the local one' after listener's value is ignored, as mosquitto ignores it: a comment is a line of its own",
            "m.conf:2: '# for now' after allow_anonymous's value is ignored, as mosquitto ignores it: a comment is a line of its own",
            "m.conf:3: '# limit' after max_connections's value is ignored, as mosquitto ignores it: a comment is a line of its own",
            "m.conf:4: 'warning' after log_type's value is ignored, as mosquitto ignores it (write a line for each value)",
        ]
    );
}

#[test]
fn log_type_is_mosquittos_mask() {
    let types = |text: &str| parse_str(text, "t").unwrap().0.log_types();
    let of = |kinds: &[LogType]| kinds.iter().fold(LogTypes::NONE, |t, k| t.with(*k));
    use LogType::*;
    assert_eq!(types(""), of(&[Error, Warning, Notice, Information]), "mosquitto's default");
    assert_eq!(types("log_type subscribe\n"), of(&[Subscribe]), "the lines given, nothing else");
    assert_eq!(types("log_type error\nlog_type notice\n"), of(&[Error, Notice]));
    assert_eq!(types("log_type debug\nlog_type none\nlog_type warning\n"), of(&[Warning]), "none clears");
    assert_eq!(types("log_type none\n"), LogTypes::NONE);
    assert_eq!(types("log_type error\nlog_type all\n"), LogTypes::ALL);
    assert!(LogTypes::ALL.has(Websockets) && !of(&[Error]).has(Warning));
}

#[test]
fn logging_options() {
    let text = "log_dest file /var/log/mosquitto/my log.txt\nlog_dest stdout\nlog_dest stdout\n\
                log_type error\nlog_type information\nlog_timestamp false\npid_file /run/m.pid\n";
    let (c, w) = parse_str(text, "t").unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.log_dest, [LogDest::File("/var/log/mosquitto/my log.txt".into()), LogDest::Stdout]);
    let error_and_information = LogTypes::NONE.with(LogType::Error).with(LogType::Information);
    assert_eq!(c.log_types(), error_and_information, "the lines given replace the default");
    assert!(!c.log_timestamp);
    assert_eq!(c.pid_file.as_deref(), Some(Path::new("/run/m.pid")));
    let (c, w) =
        parse_str("log_dest syslog\nlog_type all\nlog_facility 5\nlog_dest topic\nlog_dest dlt\n", "t")
            .unwrap();
    assert_eq!(c.log_dest, [LogDest::Syslog, LogDest::Topic, LogDest::Stderr]);
    assert_eq!((c.log_types(), c.log_facility), (LogTypes::ALL, Some(5)));
    assert_eq!(w, ["t:5: log_dest dlt is not supported by midge yet; logging to stderr instead"]);
    let e = parse_str("log_facility 8\n", "t").unwrap_err().to_string();
    assert_eq!(e, "t:1: invalid value '8' for log_facility: expected 0 to 7");
    for (text, expected) in [
        ("log_dest file\n", "t:1: log_dest file needs a file: log_dest file PATH"),
        ("log_dest printer\n", "t:1: invalid log_dest 'printer': expected stderr, stdout, syslog, topic, file PATH or none"),
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
fn every_option_of_mosquitto_2_0_11s_parser_is_known() {
    // retained_persistence is persistence's older name; retry_interval is read with
    // mosquitto's warning; the plugin option warns as the other plugin options (the plugin
    // itself is refused); bridge_require_ocsp true is refused (rustls checks no OCSP
    // response), false is what midge does.
    let (c, w) = parse_str("retained_persistence true\nretry_interval 20\n", "m.conf").unwrap();
    assert!(c.persistence.enabled);
    assert_eq!(w, vec!["m.conf:2: the retry_interval option is no longer available; ignored".to_owned()]);
    let (_, w) = parse_str("auth_plugin_deny_special_chars true\n", "m.conf").unwrap();
    assert_eq!(
        w,
        vec!["m.conf:1: option 'auth_plugin_deny_special_chars' is not supported by midge yet; ignored"]
    );
    let bridge = "connection b\naddress 127.0.0.1:1884\ntopic # both\nbridge_require_ocsp ";
    assert!(parse_str(&format!("{bridge}false\n"), "m.conf").is_ok());
    let e = parse_str(&format!("{bridge}true\n"), "m.conf").unwrap_err();
    assert_eq!(
        e.to_string(),
        "m.conf:4: bridge_require_ocsp true is not supported by midge yet; refusing to start without it"
    );
    for name in
        ["retained_persistence", "retry_interval", "auth_plugin_deny_special_chars", "bridge_require_ocsp"]
    {
        assert!(is_known_option(name), "{name}");
    }
}

#[test]
fn known_mosquitto_options_warn() {
    let (_, w) = parse_str("dhparamfile dh.pem\ntls_keyform engine\n", "m.conf").unwrap();
    assert_eq!(w.len(), 2);
    // Read, and what midge does anyway: no warning.
    let text = "set_tcp_nodelay false\nallow_duplicate_messages true\nwebsockets_log_level 255\n";
    assert_eq!(parse_str(text, "m.conf").unwrap().1, Vec::<String>::new());
    assert!(parse_str("set_tcp_nodelay maybe\n", "m.conf").is_err());
    assert_eq!(w[0], "m.conf:1: option 'dhparamfile' is not supported by midge yet; ignored");
    let e = parse_str("\npsk_file /etc/x\n", "m.conf").unwrap_err();
    assert_eq!(
        e.to_string(),
        "m.conf:2: option 'psk_file' is not supported by midge yet; refusing to start without it"
    );
    // mosquitto 2.1's plugin for every listener: refused as the others (was "unknown option").
    let e = parse_str("global_plugin /usr/lib/auth.so\n", "m.conf").unwrap_err();
    assert_eq!(
        e.to_string(),
        "m.conf:1: option 'global_plugin' is not supported by midge yet; refusing to start without it"
    );
}

#[test]
fn errors_are_typed() {
    let problem = |text: &str| match parse_str(text, "t").unwrap_err() {
        ConfigError::Line { problem, .. } => problem,
        other => panic!("{other}"),
    };
    assert_eq!(
        problem("allow_anonymous yes\n"),
        LineError::InvalidValue {
            option: "allow_anonymous".into(),
            value: "yes".into(),
            expected: "true or false"
        }
    );
    assert_eq!(
        problem("max_packet_size -1\n"),
        LineError::Number { option: "max_packet_size".into(), value: "-1".into(), max: u32::MAX.into() }
    );
    for small in ["0", "1", "19"] {
        // mosquitto: "Error: Invalid max_packet_size value (19)."
        assert!(
            problem(&format!("max_packet_size {small}\n")).to_string().starts_with(&format!(
                "invalid value '{small}' for max_packet_size: expected a size from 20 bytes"
            )),
            "{small}"
        );
    }
    assert_eq!(parse_str("max_packet_size 20\n", "t").unwrap().0.max_packet_size, 20);
    assert_eq!(problem("listener 1\ntls_version tlsv1\n"), LineError::OldTlsVersion("tlsv1".into()));
    assert_eq!(problem("global_plugin /x.so\n"), LineError::Unsupported("global_plugin".into()));
    assert!(problem("psk_file p\n").is_unsupported() && problem("plugin /p.so\n").is_unsupported());
    assert!(!problem("frobnicate 1\n").is_unsupported() && !problem("max_qos 3\n").is_unsupported());
}

#[test]
fn lenient_reading_collects_every_wrong_line_and_sets_nothing_with_them() {
    let text =
        "max_qos 1\nmax_qos 7\nlistener 1883\nallow_anonymous maybe\npsk_file /etc/psk\nmax_keepalive 60\n";
    let strict = parse_str(text, "t").unwrap_err();
    let parsed = parse_lenient(&lex::lex_str(text, "t"));
    let errors: Vec<String> = parsed.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "t:2: invalid value '7' for max_qos: expected 0, 1 or 2",
            "t:4: invalid value 'maybe' for allow_anonymous: expected true or false",
            "t:5: option 'psk_file' is not supported by midge yet; refusing to start without it",
        ]
    );
    assert_eq!(parsed.errors[0], strict, "the first is the broker's error");
    let c = &parsed.config;
    let qos = c.listeners[0].max_qos;
    assert_eq!((qos, c.max_keepalive), (midge_codec::QoS::AtLeastOnce, Some(60)), "read on past them");
    assert_eq!(c.security, SecuritySettings::default());
    // A wrong `listener` line still opens its listener, so the lines below stay its own.
    let parsed = parse_lenient(&lex::lex_str("listener 1 127.0.0.1\nlistener x\ncertfile c\n", "t"));
    assert_eq!(parsed.config.listeners.len(), 2);
    assert!(
        parsed.config.listeners[1].tls.certfile.is_some()
            && parsed.config.listeners[0].tls.certfile.is_none()
    );
}

#[test]
fn sources_record_each_line_where_the_broker_applies_it() {
    let text = "tls_version tlsv1.2\nuser midge\ncertfile early.crt\nlistener 8883\npsk_hint hint\n\
                tls_version tlsv1.1\nrequire_certificate maybe\nbind_interface eth0\nplugin /p.so\n";
    let parsed = parse_lenient(&lex::lex_str(text, "t"));
    let (c, s) = (&parsed.config, &parsed.sources);
    let line = |section, option| s.last(section, option).map(|d| d.line);
    // certfile opened the default listener, put first: its lines are listener 0's.
    assert_eq!(s.listener(0).map(|d| d.line), Some(3));
    assert_eq!(s.listener(1).map(|d| d.line), Some(4));
    assert_eq!(c.listeners[0].origin.as_deref(), Some("t:3"));
    assert_eq!(line(Section::Listener(0), "tls_version"), Some(1));
    assert_eq!(line(Section::General, "user"), Some(2));
    // Refused for what midge lacks: kept, with the value as written.
    assert_eq!(s.last(Section::Listener(1), "tls_version").map(|d| d.value.as_str()), Some("tlsv1.1"));
    assert_eq!(c.listeners[1].tls.min_version, None, "but sets nothing");
    assert_eq!(line(Section::Listener(1), "bind_interface"), Some(8));
    assert_eq!(line(Section::Listener(1), "psk_hint"), Some(5), "ignored with a warning, and kept");
    assert_eq!(line(Section::General, "plugin"), Some(9), "security: general without per_listener_settings");
    // A value that cannot be read is not a source of anything.
    assert_eq!(line(Section::Listener(1), "require_certificate"), None);
    // The lines of a default listener that was never opened belong to nothing.
    let parsed = parse_lenient(&lex::lex_str("tls_version tlsv1.3\nlistener 1\n", "t"));
    assert_eq!(parsed.sources.iter().count(), 0);
}

#[test]
fn with_per_listener_settings_security_lines_are_the_listeners_own() {
    let text = "per_listener_settings true\npassword_file global\nlistener 1 127.0.0.1\nacl_file a\n\
                listener 2\npsk_file p\n";
    let parsed = parse_lenient(&lex::lex_str(text, "t"));
    let (c, s) = (&parsed.config, &parsed.sources);
    // password_file before the first listener opened the default listener (per listener).
    assert_eq!(c.listeners.len(), 3);
    assert_eq!(c.security_section(0), Section::General);
    assert_eq!(c.security_section(1), Section::Listener(1));
    assert_eq!(s.last(Section::General, "password_file").map(|d| d.line), Some(2));
    assert_eq!(s.last(Section::Listener(1), "acl_file").map(|d| d.line), Some(4));
    assert_eq!(s.last(Section::Listener(2), "psk_file").map(|d| d.line), Some(6));
    assert_eq!(c.security_of(&c.listeners[1]).acl_file.as_deref(), Some(Path::new("a")));
    // Without it every listener reads the general section.
    let (c, _) = parse_str("listener 1\nallow_anonymous true\n", "t").unwrap();
    assert_eq!(c.security_section(0), Section::General);
}

#[test]
fn persistence_options_are_read_as_mosquitto_writes_them() {
    let (c, w) = parse_str(
        "persistence true\npersistence_location /var/lib/mosquitto/\nautosave_interval 60\n\
         autosave_on_changes true\npersistent_client_expiration 2w\npersistence_sync_interval 50\n",
        "p.conf",
    )
    .unwrap();
    assert!(w.is_empty(), "{w:?}");
    let p = &c.persistence;
    assert!(p.enabled && p.autosave_on_changes);
    assert_eq!((p.autosave_interval, p.sync_interval_ms), (60, 50));
    assert_eq!(p.mosquitto_file(), std::path::Path::new("/var/lib/mosquitto/mosquitto.db"));
    assert_eq!(p.store_dir(), std::path::Path::new("/var/lib/mosquitto/mosquitto.db.midge"));
    assert_eq!(c.persistent_client_expiration, Some(std::time::Duration::from_secs(14 * 86_400)));
    for bad in ["2x", "d", "0d", "-1h"] {
        let e = parse_str(&format!("persistent_client_expiration {bad}\n"), "p.conf").unwrap_err();
        assert!(e.to_string().starts_with("p.conf:1: invalid value"), "{bad}: {e}");
    }
}

#[test]
fn cluster_options() {
    let (c, _) = parse_str("listener 1883\n", "t").unwrap();
    assert_eq!(c.cluster, None, "no cluster lines: a single node");
    let text = "listener 1883\ncluster_nats_url nats://127.0.0.1:4222\ncluster_nats_url tls://nats2:4443\n\
                cluster_node_name node-1\ncluster_replicas 3\ncluster_nats_username midge\n\
                cluster_nats_password two words\ncluster_nats_cafile /etc/nats/ca.pem\n";
    let (c, _) = parse_str(text, "t.conf").unwrap();
    let cl = c.cluster.unwrap();
    assert_eq!(cl.urls, vec!["nats://127.0.0.1:4222", "tls://nats2:4443"]);
    assert_eq!(cl.node_name.as_deref(), Some("node-1"));
    assert_eq!(cl.replicas, 3);
    assert_eq!((cl.username.as_deref(), cl.password.as_deref()), (Some("midge"), Some("two words")));
    assert_eq!(cl.cafile.as_deref(), Some(std::path::Path::new("/etc/nats/ca.pem")));
    assert!(!c.listeners.is_empty());
    let (c, _) = parse_str("cluster_nats_url nats://h\n", "t").unwrap();
    assert_eq!(c.cluster.unwrap().replicas, 1);
    for name in super::cluster::CLUSTER_OPTIONS {
        let e = parse_str(&format!("{name}\n"), "t").map(|_| ()).unwrap_err().to_string();
        assert!(e.starts_with(&format!("t:1: {name} needs a value")), "{name}: {e}");
        assert!(is_known_option(name));
    }
    for (text, expected) in [
        (
            "cluster_nats_url 127.0.0.1:4222\n",
            "t.conf:1: invalid value '127.0.0.1:4222' for cluster_nats_url: expected nats://HOST:PORT or \
             tls://HOST:PORT",
        ),
        (
            "cluster_nats_url nats://h\ncluster_replicas 7\n",
            "t.conf:2: invalid value '7' for cluster_replicas: expected a number from 1 to 5 (JetStream replicas)",
        ),
        (
            "cluster_nats_url nats://h\ncluster_replicas x\n",
            "t.conf:2: invalid value 'x' for cluster_replicas: expected a number from 1 to 5 (JetStream replicas)",
        ),
        (
            "cluster_nats_url nats://h\ncluster_node_name a.b\n",
            "t.conf:2: invalid value 'a.b' for cluster_node_name: expected a name of 1 to 64 letters, digits, '-' \
             and '_'",
        ),
        (
            "# comment\ncluster_node_name n\n",
            "t.conf:2: cluster_nats_url needs a value (nats://HOST:PORT, at least one with cluster options)",
        ),
        (
            "cluster_nats_url nats://h\ncluster_nats_username u\n",
            "t.conf:1: cluster_nats_username needs a value (a cluster_nats_username and a cluster_nats_password, \
             both or neither)",
        ),
        (
            "check_retain_source true\ncluster_nats_url nats://h\n",
            "t.conf:2: invalid value 'true' for check_retain_source: expected false in cluster mode (retained \
             messages from other nodes carry no publisher yet)",
        ),
        ("cluster_nats_url nats://h\ncluster_nats_creds\n", "t.conf:2: cluster_nats_creds needs a value (a NATS credentials file)"),
    ] {
        assert_eq!(parse_str(text, "t.conf").unwrap_err().to_string(), expected, "{text:?}");
    }
}

#[test]
fn a_reload_names_the_listener_options_it_does_not_apply() {
    let (old, _) = parse_str("listener 1883\nmax_qos 2\nlistener 1884\nhttp_dir /srv\n", "t").unwrap();
    let (new, _) = parse_str(
        "listener 1883\nmax_qos 1\nmax_connections 5\nlistener 1884\nhttp_dir /var/www\naccept_protocol_versions 5\n",
        "t",
    )
    .unwrap();
    assert_eq!(
        old.restart_only_changes(&new),
        ["max_qos", "max_connections", "accept_protocol_versions", "http_dir"]
    );
    assert!(old.restart_only_changes(&old).is_empty());
}
