//! What audit asks of the broker's reading: listeners with the lines that set them, their
//! security settings, and the lines the broker refuses but audit keeps.
use midge_broker::config::lex_str;

use super::*;

fn model(text: &str) -> Model {
    Model::read(&lex_str(text, "c"))
}

#[test]
fn listener_scoping() {
    let text = "password_file pw\ncertfile early.crt\nport 1884\nlistener 8883\ncertfile s.crt\n\
                allow_anonymous true\nlistener 1883 127.0.0.1\nrequire_certificate maybe\n";
    let m = model(text);
    let l: Vec<ListenerView<'_>> = m.listeners().collect();
    assert_eq!(l.len(), 3);
    // The default listener is named by the line that opened it, as the broker names it.
    assert!(l[0].listener.default && l[0].listener.port == 1884 && l[0].at() == Location::new("c", 2));
    assert_eq!(l[0].tls_files()[0].path, PathBuf::from("early.crt"));
    assert_eq!(l[1].setting("certfile").map(|s| s.line), Some(5));
    assert!(l[2].is_local() && !l[1].is_local());
    assert_eq!(m.global().anonymous(), Some("allow_anonymous true at c:6".to_owned()));
    assert_eq!(m.errors.len(), 1);
    assert!(matches!(&m.errors[0], ConfigError::Line { line: 8, .. }));
}

#[test]
fn per_listener_settings() {
    let text = "per_listener_settings true\nlistener 1883 127.0.0.1\nallow_anonymous true\n\
                listener 8883\npassword_file pw\n";
    let m = model(text);
    let l: Vec<ListenerView<'_>> = m.listeners().collect();
    assert!(m.global().settings.allow_anonymous.is_none());
    assert_eq!(l[0].security().anonymous(), Some("allow_anonymous true at c:3".to_owned()));
    assert_eq!(l[1].security().file("password_file").map(|f| f.at.line), Some(5));
    assert_eq!(m.scopes().len(), 3);
}

#[test]
fn what_the_broker_refuses_but_audit_keeps() {
    let text = "plugin /usr/lib/auth.so\nglobal_plugin /usr/lib/g.so\nlistener 8883\npsk_hint midge\n\
                bind_interface lo\ntls_version tlsv1.1\npsk_file /etc/psk\n";
    let m = model(text);
    let l = m.listeners().next().unwrap();
    assert!(l.tls_enabled() && l.is_local());
    assert_eq!(l.name(), "listener 8883 (interface lo)");
    assert_eq!(l.line("tls_version").map(|d| d.value.as_str()), Some("tlsv1.1"));
    let global = m.global();
    assert_eq!(global.plugins(), [Location::new("c", 1), Location::new("c", 2)]);
    assert_eq!(global.password_source(), Some(Location::new("c", 1)));
    assert_eq!(global.file("psk_file").map(|f| (f.path, f.at.line)), Some(("/etc/psk".into(), 7)));
    // Each is a line the broker refuses, and the only thing wrong with it.
    let lines: Vec<usize> = m
        .errors
        .iter()
        .map(|e| match e {
            ConfigError::Line { line, problem, .. } => {
                assert!(problem.is_unsupported(), "{e}");
                *line
            }
            other => panic!("{other}"),
        })
        .collect();
    // bind_interface (5) is read: midge binds the interface's addresses as mosquitto does.
    assert_eq!(lines, [1, 2, 6, 7]);
}

#[test]
fn a_listener_with_a_wrong_port_keeps_its_lines() {
    let m = model("listener 1883 127.0.0.1\nlistener abc\ncertfile s.crt\n");
    let l: Vec<ListenerView<'_>> = m.listeners().collect();
    assert_eq!(l.len(), 2);
    assert_eq!(l[1].name(), "listener abc (0.0.0.0)", "named as written");
    assert!(l[1].setting("certfile").is_some() && l[0].setting("certfile").is_none());
    assert_eq!(m.errors[0].to_string(), "c:2: invalid port 'abc': expected a number 0-65535");
}
