//! Where audit read a configuration differently from the broker before it read it with the
//! broker's own parser, and the broker's reading now decides. Each case names what audit
//! reported before, and gives what it reports now.
mod support;

use midge_audit::{AuditOptions, Finding};
use support::{brief, Fixture};

struct Case {
    name: &'static str,
    setup: fn(&Fixture),
    config: &'static str,
    expected: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            // Before: the `port` line (3).
            name: "mosquitto's default listener is named by the line that opened it, not a later `port`",
            setup: |f| {
                f.passwd("passwd", &[("alice", 10_000)], 0o600);
            },
            config: "password_file passwd\nbind_address 0.0.0.0\nport 1884\n",
            expected: &["HIGH broker.conf:2 password-without-tls", "MEDIUM broker.conf:2 no-acl"],
        },
        Case {
            // Before: the file "my passwd" checked (world-readable, high), the listener's
            // passwords noted. The broker takes one word for a path and refuses the line.
            name: "a path of several words is refused by the broker, and sets nothing",
            setup: |f| {
                f.passwd("my passwd", &[("alice", 10_000)], 0o644);
            },
            config: "listener 1883 127.0.0.1\npassword_file my passwd\n",
            expected: &["INFO broker.conf:2 invalid-value"],
        },
        Case {
            // Before: old-tls-version (medium), as if it were tlsv1.
            name: "tls_version tlsv1.0 is no version the broker knows",
            setup: |f| {
                f.tls().file("acl", "", 0o600);
            },
            config: "acl_file acl\nlistener 8883\ncertfile server.crt\nkeyfile server.key\ntls_version tlsv1.0\n",
            expected: &["INFO broker.conf:5 invalid-value"],
        },
        Case {
            // Before: tls_version sslv3 hid the tlsv1.1 line above it.
            name: "a tls_version the broker cannot read sets nothing; the one before stays",
            setup: |f| {
                f.tls().file("acl", "", 0o600);
            },
            config: "acl_file acl\nlistener 8883\ncertfile server.crt\nkeyfile server.key\ntls_version tlsv1.1\n\
                     tls_version sslv3\n",
            expected: &["MEDIUM broker.conf:5 old-tls-version", "INFO broker.conf:6 invalid-value"],
        },
        Case {
            // Before: any `true` line stuck, and certificates named the users.
            name: "the last use_identity_as_username line decides",
            setup: |f| {
                f.tls().file("acl", "user sensor-1\ntopic write s/1/#\n", 0o600);
            },
            config: "allow_anonymous true\nacl_file acl\nlistener 8883\ncertfile server.crt\nkeyfile server.key\n\
                     cafile ca.crt\ncrlfile crl.pem\nrequire_certificate true\nuse_identity_as_username true\n\
                     use_identity_as_username false\n",
            expected: &["MEDIUM broker.conf:3 unverified-user-names"],
        },
        Case {
            // Before: the last per_listener_settings line applied to the whole file, so
            // allow_anonymous was listener 1884's own and 1883 refused anonymous clients.
            name: "per_listener_settings true after a security option is refused, and not applied",
            setup: |_| {},
            config: "listener 1883\nlistener 1884 127.0.0.1\nallow_anonymous true\nper_listener_settings true\n",
            expected: &[
                "HIGH broker.conf:1 anonymous-network",
                "MEDIUM broker.conf:1 no-acl",
                "INFO broker.conf:4 invalid-value",
            ],
        },
        Case {
            // Before: per_listener_settings false at the end made every line global.
            name: "per_listener_settings false at the end: lines read as a listener's own are not global",
            setup: |_| {},
            config: "per_listener_settings true\nlistener 1883\nallow_anonymous true\nper_listener_settings false\n",
            expected: &["MEDIUM broker.conf:2 no-acl"],
        },
        Case {
            // Before: read with per_listener_settings true, the password_file opened
            // mosquitto's default listener on every address (high, and no-acl).
            name: "a refused per_listener_settings does not open the default listener for a password_file",
            setup: |f| {
                f.passwd("passwd", &[("alice", 10_000)], 0o600);
            },
            config: "password_file passwd\nper_listener_settings true\nlistener 1883 127.0.0.1\n",
            expected: &["INFO broker.conf:2 invalid-value", "INFO broker.conf:3 password-without-tls"],
        },
        Case {
            // Before: only the first line the broker refuses (3). A listener line of three
            // words (5) is taken as mosquitto takes it: the third is left out, with a warning.
            name: "every line the broker refuses is reported, not only the first",
            setup: |_| {},
            config: "listener 1883 127.0.0.1\nallow_anonymous true\ntls_version tlsv1.1\naccept_protocol_versions 6\n\
                     listener 1884 127.0.0.1 extra\n",
            expected: &["INFO broker.conf:3 invalid-value", "INFO broker.conf:4 invalid-value"],
        },
    ]
}

fn audit(f: &Fixture, config: &str) -> Vec<Finding> {
    f.audit(config, &AuditOptions { started_as_root: false, ..AuditOptions::default() })
}

#[test]
fn audit_reads_as_the_broker_does() {
    let mut failures = Vec::new();
    for case in cases() {
        let f = Fixture::new();
        (case.setup)(&f);
        let found: Vec<String> = audit(&f, case.config).iter().map(|x| brief(x, f.path())).collect();
        if found != case.expected {
            failures.push(format!("{}:\n  expected {:?}\n  found    {:?}", case.name, case.expected, found));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn refused_lines_say_what_the_broker_says() {
    let f = Fixture::new();
    let found = audit(
        &f,
        "listener 1883 127.0.0.1\nallow_anonymous yes\nlistener abc 127.0.0.1\ntls_version tlsv1.1\n",
    );
    let lines: Vec<String> =
        found.iter().map(|x| x.to_string().replace(&format!("{}/", f.path().display()), "")).collect();
    assert_eq!(
        lines,
        [
            "INFO broker.conf:2: invalid value 'yes' for allow_anonymous: expected true or false; the broker refuses to start with this line",
            "INFO broker.conf:3: invalid port 'abc': expected a number 0-65535; the broker refuses to start with this line",
            "INFO broker.conf:4: midge broker refuses this line (tls_version tlsv1.1 is not supported: versions below TLS 1.2 are insecure), and does not start",
        ]
    );
    // `port abc` set nothing: the default listener it opened is on 1883 (before: "listener abc").
    let found = audit(&f, "port abc\npassword_file passwd\n");
    assert!(
        found.iter().any(|x| x.message.contains("listener 1883 (0.0.0.0, mosquitto's default listener)")),
        "{found:?}"
    );
}
