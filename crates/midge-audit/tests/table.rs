//! A table of configurations, each written to a temporary directory with real files
//! (password files with `$7$` hashes made by the broker's code and `$6$` lines by hand,
//! certificates made with rcgen with chosen validity, files with chosen modes), and the
//! exact findings each gives: severity, file:line and kind.
mod support;

use std::num::NonZeroU32;
use std::os::unix::fs::PermissionsExt;

use midge_audit::{audit_file, AuditOptions, Kind, Severity};
use midge_broker::auth::password::Hash;
use support::{brief, Fixture};
use time::{Duration, OffsetDateTime};

/// mosquitto_passwd -H sha512 (carol, "x").
const SHA512_LINE: &str = "carol:$6$aoM5FnGlGplekuDU$zUlOO/tiPdmtjOAjhVjlygN1DuSyT79zikfVzxtgHHL6zIXnuL0vYCkwGxOhcujR5T0uVP6TwVMKTd4VrwECxw==";

struct Case {
    name: &'static str,
    setup: fn(&Fixture),
    config: &'static str,
    options: fn(&mut AuditOptions),
    expected: &'static [&'static str],
}

fn defaults(_: &mut AuditOptions) {}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "passwords: plain on localhost is low, over TLS on the network fine; files 0600",
            setup: |f| {
                f.tls().passwd("passwd", &[("alice", 10_000)], 0o600).file("acl", "user alice\n", 0o600);
            },
            config: "listener 1883 127.0.0.1\nlistener 8883\ncertfile server.crt\nkeyfile server.key\n\
                     cafile ca.crt\ncrlfile crl.pem\nrequire_certificate true\ntls_version tlsv1.2\n\
                     password_file passwd\nacl_file acl\n",
            options: defaults,
            expected: &["INFO broker.conf:1 password-without-tls"],
        },
        Case {
            name: "clean: mutual TLS only, no passwords",
            setup: |f| {
                f.tls().file("acl", "user a\n", 0o600);
            },
            config: "# the README's shape\nlistener 1883 127.0.0.1\nlistener 8883\ncertfile server.crt\n\
                     keyfile server.key\ncafile ca.crt\ncrlfile crl.pem\nrequire_certificate true\n\
                     use_identity_as_username true\nacl_file acl\n",
            options: defaults,
            expected: &[],
        },
        Case {
            name: "anonymous allowed and an ACL by user name: user names claimed, except where certificates name them",
            setup: |f| {
                f.tls().file("acl", "topic read public/#\nuser sensor-1\ntopic write s/1/#\n", 0o600);
            },
            config: "listener 1883 127.0.0.1\nlistener 8883\ncertfile server.crt\nkeyfile server.key\n\
                     cafile ca.crt\ncrlfile crl.pem\nrequire_certificate true\nuse_identity_as_username true\n\
                     allow_anonymous true\nacl_file acl\n",
            options: defaults,
            expected: &["MEDIUM broker.conf:1 unverified-user-names"],
        },
        Case {
            name: "socket_domain before any listener opens mosquitto's default listener on the network",
            setup: |_| {},
            config: "socket_domain ipv4\nlistener 17001 127.0.0.1\nallow_anonymous true\n",
            options: defaults,
            expected: &["HIGH broker.conf:1 anonymous-network", "MEDIUM broker.conf:1 no-acl"],
        },
        Case {
            name: "tls_version before any listener does not open it",
            setup: |_| {},
            config: "tls_version tlsv1.2\nlistener 17001 127.0.0.1\nallow_anonymous true\n",
            options: defaults,
            expected: &[],
        },
        Case {
            name: "started as root, the broker's user must be able to re-read its files",
            setup: |f| {
                f.passwd("passwd", &[("alice", 10_000)], 0o600).file("acl", "", 0o640);
            },
            config: "user nobody\npassword_file passwd\nacl_file acl\nlistener 8883 127.0.0.1\n",
            options: |o| o.started_as_root = true,
            // Owned by the test's user: nobody reads neither.
            expected: &[
                "MEDIUM broker.conf:2 unreadable-by-broker-user",
                "MEDIUM broker.conf:3 unreadable-by-broker-user",
                "INFO broker.conf:4 password-without-tls",
            ],
        },
        Case {
            name: "started as root: files the broker's user can read are fine",
            setup: |f| {
                f.file("acl", "topic read x\n", 0o644);
            },
            config: "user nobody\nallow_anonymous true\nacl_file acl\nlistener 1883 127.0.0.1\n",
            options: |o| o.started_as_root = true,
            expected: &["LOW broker.conf:3 file-world-readable"],
        },
        Case {
            name: "started as root: a password file in the broker's user's group (what midge passwd makes)",
            setup: |f| {
                f.passwd("passwd", &[("alice", 10_000)], 0o640);
                let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
                // Only root gives a file another group (the tests run as root in CI).
                if std::os::unix::fs::chown(f.path().join("passwd"), None, Some(nobody.gid.as_raw())).is_err() {
                    std::fs::set_permissions(f.path().join("passwd"), std::fs::Permissions::from_mode(0o600))
                        .unwrap();
                }
            },
            config: "user nobody\npassword_file passwd\nlistener 8883 127.0.0.1\n",
            options: |o| o.started_as_root = true,
            // Readable by its group, which is how the broker's user reads it: no finding.
            expected: &["INFO broker.conf:3 password-without-tls"],
        },
        Case {
            name: "started as root with a user that does not exist",
            setup: |_| {},
            config: "user no-such-user-here\nlistener 1883 127.0.0.1\n",
            options: |o| o.started_as_root = true,
            expected: &["INFO broker.conf:1 invalid-value"],
        },
        Case {
            name: "user root keeps root privileges; the last user line decides",
            setup: |_| {},
            config: "user root\nmax_keepalive 60\n",
            options: defaults,
            expected: &["MEDIUM broker.conf:1 runs-as-root"],
        },
        Case {
            name: "user mosquitto after user root",
            setup: |_| {},
            config: "user root\nuser mosquitto\n",
            options: defaults,
            expected: &[],
        },
        Case {
            name: "no listener: local only mode, anonymous is fine",
            setup: |_| {},
            config: "allow_anonymous true\nmax_keepalive 60\n",
            options: defaults,
            expected: &[],
        },
        Case {
            name: "no listener with a password file: loopback only, low",
            setup: |f| {
                f.passwd("passwd", &[("alice", 10_000)], 0o600);
            },
            config: "\npassword_file passwd\n",
            options: defaults,
            expected: &["INFO broker.conf:2 password-without-tls"],
        },
        Case {
            name: "passwords on a plain network listener",
            setup: |f| {
                f.passwd("passwd", &[("alice", 10_000)], 0o600).file("acl", "", 0o600);
            },
            config: "listener 1883\npassword_file passwd\nacl_file acl\n",
            options: defaults,
            expected: &["HIGH broker.conf:1 password-without-tls"],
        },
        Case {
            name: "anonymous on the network; default listener from `port`",
            setup: |f| {
                f.file("acl", "", 0o600);
            },
            config: "acl_file acl\nport 1884\nallow_anonymous true\n",
            options: defaults,
            expected: &["HIGH broker.conf:2 anonymous-network"],
        },
        Case {
            name: "per_listener_settings: the `port` listener without allow_anonymous takes anonymous clients",
            setup: |f| {
                f.file("acl", "", 0o600);
            },
            config: "per_listener_settings true\nport 1884\nacl_file acl\nlistener 1885 127.0.0.1\n",
            options: defaults,
            expected: &["HIGH broker.conf:2 anonymous-network"],
        },
        Case {
            name: "listeners without allow_anonymous: refused by default, only the ACL is missing",
            setup: |_| {},
            config: "listener 1883\nlistener 1884 127.0.0.1\n",
            options: defaults,
            expected: &["MEDIUM broker.conf:1 no-acl"],
        },
        Case {
            name: "TLS with passwords but no ACL",
            setup: |f| {
                f.cert("server", -1, 365).passwd("passwd", &[("alice", 20_000)], 0o600);
            },
            config: "password_file passwd\nlistener 8883 0.0.0.0\ncertfile server.crt\nkeyfile server.key\n",
            options: defaults,
            expected: &["MEDIUM broker.conf:2 no-acl"],
        },
        Case {
            name: "file modes: password file 0644, key 0640, ACL 0644",
            setup: |f| {
                f.tls().passwd("passwd", &[("alice", 10_000)], 0o644).file("acl", "", 0o644);
                std::fs::set_permissions(f.path().join("server.key"), std::fs::Permissions::from_mode(0o640))
                    .unwrap();
            },
            config: "password_file passwd\nacl_file acl\nlistener 8883\ncertfile server.crt\n\
                     keyfile server.key\ncafile ca.crt\ncrlfile crl.pem\nrequire_certificate true\n",
            options: defaults,
            expected: &[
                "HIGH broker.conf:1 file-world-readable",
                "LOW broker.conf:2 file-world-readable",
                "LOW broker.conf:5 file-group-readable",
            ],
        },
        Case {
            name: "writable files: a world-writable password file, a group-writable ACL",
            setup: |f| {
                f.passwd("passwd", &[("alice", 10_000)], 0o602).file("acl", "", 0o620);
            },
            config: "listener 1883 127.0.0.1\npassword_file passwd\nacl_file acl\n",
            options: defaults,
            expected: &[
                "HIGH broker.conf:2 file-world-writable",
                "MEDIUM broker.conf:3 file-group-writable",
                "INFO broker.conf:1 password-without-tls",
            ],
        },
        Case {
            name: "missing files, and a directory where a key should be",
            setup: |f| {
                f.cert("server", -1, 365).file("acl", "", 0o600);
                std::fs::create_dir(f.path().join("key.d")).unwrap();
            },
            config: "listener 8883\ncertfile server.crt\nkeyfile key.d\ncrlfile nowhere/crl.pem\n\
                     require_certificate true\npassword_file missing.passwd\nacl_file acl\n",
            options: defaults,
            expected: &[
                "MEDIUM broker.conf:3 file-unreadable",
                "MEDIUM broker.conf:4 file-missing",
                "MEDIUM broker.conf:6 file-missing",
            ],
        },
        Case {
            name: "password hashes: $6$, few iterations, a bad line (line numbers past a comment)",
            setup: |f| {
                let good = Hash::new_pbkdf2(b"pw", NonZeroU32::new(10_000).unwrap());
                let weak = Hash::new_pbkdf2(b"pw", NonZeroU32::new(1_000).unwrap());
                let text = format!("{SHA512_LINE}\n# comment\n\nbob:{weak}\nnocolon\ndan:{good}\neve:$7$x\n");
                f.tls().file("passwd", &text, 0o600).file("acl", "", 0o600);
            },
            config:
                "password_file passwd\nacl_file acl\nlistener 8883\ncertfile server.crt\nkeyfile server.key\n",
            options: defaults,
            expected: &[
                "MEDIUM passwd:1 weak-hash",
                "MEDIUM passwd:4 low-iterations",
                "MEDIUM passwd:5 password-file-invalid",
                "MEDIUM passwd:7 password-file-invalid",
            ],
        },
        Case {
            name: "--min-iterations raises the bar",
            setup: |f| {
                f.tls().passwd("passwd", &[("alice", 20_000), ("bob", 60_000)], 0o600).file("acl", "", 0o600);
            },
            config:
                "password_file passwd\nacl_file acl\nlistener 8883\ncertfile server.crt\nkeyfile server.key\n",
            options: |o| o.min_iterations = 50_000,
            expected: &["MEDIUM passwd:1 low-iterations"],
        },
        Case {
            name: "TLS versions below 1.2, and one midge cannot read",
            setup: |f| {
                f.tls().file("acl", "", 0o600);
            },
            config:
                "acl_file acl\nlistener 8883\ncertfile server.crt\nkeyfile server.key\ntls_version tlsv1.1\n\
                     listener 8884\ncertfile server.crt\nkeyfile server.key\ntls_version tlsv1\n\
                     listener 8885\ncertfile server.crt\nkeyfile server.key\ntls_version tlsv1.2\n\
                     listener 8886\ncertfile server.crt\nkeyfile server.key\ntls_version sslv3\n",
            options: defaults,
            expected: &[
                "MEDIUM broker.conf:5 old-tls-version",
                "MEDIUM broker.conf:9 old-tls-version",
                "INFO broker.conf:17 invalid-value",
            ],
        },
        Case {
            name: "an expired certificate and a CA expiring in 10 days",
            setup: |f| {
                f.cert("server", -400, -5)
                    .cert("ca", -400, 10)
                    .file("crl.pem", "", 0o644)
                    .file("acl", "", 0o600);
            },
            config: TLS_ACL,
            options: defaults,
            expected: &[
                "HIGH broker.conf:3 certificate-expired",
                "MEDIUM broker.conf:5 certificate-expiring",
            ],
        },
        Case {
            name: "a certificate valid for 40 days: fine by default",
            setup: |f| {
                f.cert("server", -1, 40)
                    .cert("ca", -1, 3650)
                    .file("crl.pem", "", 0o644)
                    .file("acl", "", 0o600);
            },
            config: TLS_ACL,
            options: defaults,
            expected: &[],
        },
        Case {
            name: "a certificate valid for 40 days, with --expiry-days 60",
            setup: |f| {
                f.cert("server", -1, 40)
                    .cert("ca", -1, 3650)
                    .file("crl.pem", "", 0o644)
                    .file("acl", "", 0o600);
            },
            config: TLS_ACL,
            options: |o| o.expiry_days = 60,
            expected: &["MEDIUM broker.conf:3 certificate-expiring"],
        },
        Case {
            name: "a CA not valid yet, a certificate file that is not PEM",
            setup: |f| {
                f.cert("server", -1, 365).cert("ca", 3, 365).file("acl", "", 0o600);
                f.file("crl.pem", "", 0o644).file("server.crt", "not a certificate\n", 0o644);
            },
            config: TLS_ACL,
            options: defaults,
            expected: &[
                "MEDIUM broker.conf:3 certificate-invalid",
                "MEDIUM broker.conf:5 certificate-not-yet-valid",
            ],
        },
        Case {
            name: "client certificates required without a CRL",
            setup: |f| {
                f.tls().file("acl", "", 0o600);
            },
            config: "acl_file acl\nlistener 8883\ncertfile server.crt\nkeyfile server.key\ncafile ca.crt\n\
                     require_certificate true\n",
            options: defaults,
            expected: &["MEDIUM broker.conf:6 no-crl"],
        },
        Case {
            name: "a required client certificate is not anonymous",
            setup: |f| {
                f.tls().file("acl", "", 0o600);
            },
            config:
                "allow_anonymous true\nacl_file acl\nlistener 8883\ncertfile server.crt\nkeyfile server.key\n\
                     cafile ca.crt\ncrlfile crl.pem\nrequire_certificate true\n",
            options: defaults,
            expected: &[],
        },
        Case {
            name: "per_listener_settings: anonymous on localhost only, passwords over TLS",
            setup: |f| {
                f.tls().passwd("passwd", &[("alice", 10_000)], 0o600).file("acl", "", 0o600);
            },
            config: "per_listener_settings true\nlistener 1883 127.0.0.1\nallow_anonymous true\n\
                     listener 8883\ncertfile server.crt\nkeyfile server.key\npassword_file passwd\n\
                     acl_file acl\nlistener 1884\nallow_anonymous true\n",
            options: defaults,
            expected: &[
                "HIGH broker.conf:9 anonymous-network",
                "MEDIUM broker.conf:9 no-acl",
            ],
        },
        Case {
            name: "an auth plugin takes passwords (and may do the ACL); PSK is TLS",
            setup: |f| {
                f.file("psk", "dev1:0123456789abcdef\n", 0o644);
            },
            config: "plugin /usr/lib/auth.so\nlistener 1883\nlistener 8883\npsk_hint midge\npsk_file psk\n",
            options: defaults,
            expected: &[
                "HIGH broker.conf:2 password-without-tls",
                "HIGH broker.conf:5 file-world-readable",
                // midge has no plugins yet and refuses to start rather than run without it.
                "INFO broker.conf:1 invalid-value",
            ],
        },
        Case {
            name: "unknown options and unreadable values are informational; loopback by name and socket",
            setup: |f| {
                f.passwd("passwd", &[("alice", 10_000)], 0o600);
            },
            config:
                "listener 1883 localhost\nlistener 0 /run/midge.sock\nfrobnicate 1\npassword_file passwd\n\
                     allow_anonymous yes\nbridge_cafile x\n",
            options: defaults,
            expected: &[
                "INFO broker.conf:1 password-without-tls",
                "INFO broker.conf:2 password-without-tls",
                "INFO broker.conf:3 unknown-option",
                "INFO broker.conf:5 invalid-value",
                // A bridge option without a `connection` line: refused, as mosquitto does.
                "INFO broker.conf:6 invalid-value",
            ],
        },
        Case {
            name: "include_dir: findings name the included file",
            setup: |f| {
                f.file("conf.d/10-net.conf", "listener 1883\nallow_anonymous true\n", 0o644);
                f.file("conf.d/20-acl.conf", "acl_file acl\n", 0o644).file("acl", "", 0o600);
            },
            config: "max_keepalive 60\ninclude_dir conf.d\n",
            options: defaults,
            expected: &["HIGH conf.d/10-net.conf:1 anonymous-network"],
        },
    ]
}

/// A network listener with mutual TLS, and an ACL: certfile on line 3, cafile on line 5.
const TLS_ACL: &str = "acl_file acl\nlistener 8883\ncertfile server.crt\nkeyfile server.key\ncafile ca.crt\n\
                       crlfile crl.pem\nrequire_certificate true\n";

#[test]
fn table_of_configurations() {
    let cases = cases();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for case in cases {
        let f = Fixture::new();
        (case.setup)(&f);
        // As a broker started by its own user, unless a case says otherwise.
        let mut options = AuditOptions { started_as_root: false, ..AuditOptions::default() };
        (case.options)(&mut options);
        let found: Vec<String> = f.audit(case.config, &options).iter().map(|x| brief(x, f.path())).collect();
        if found != case.expected {
            failures.push(format!("{}:\n  expected {:?}\n  found    {:?}", case.name, case.expected, found));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_readme_example_message() {
    let f = Fixture::new();
    f.passwd("passwd", &[("alice", 10_000)], 0o600).file("acl", "", 0o600);
    let found = f.audit(
        "acl_file acl\npassword_file passwd\nlistener 1883\nlistener 1884 127.0.0.1\n",
        &AuditOptions { started_as_root: false, ..AuditOptions::default() },
    );
    let lines: Vec<String> =
        found.iter().map(|x| x.to_string().replace(&format!("{}/", f.path().display()), "")).collect();
    assert_eq!(
        lines,
        [
            "HIGH broker.conf:3: passwords accepted on listener 1883 (0.0.0.0) without TLS: they cross the network in \
             clear text; add certfile/keyfile, or bind it to 127.0.0.1",
            "INFO broker.conf:4: passwords accepted on listener 1884 (127.0.0.1) without TLS; it is loopback-only, \
             and capturing loopback traffic takes root (or a capture program given CAP_NET_RAW)",
        ]
    );
}

#[test]
fn certificate_messages_name_subject_and_date() {
    let f = Fixture::new();
    f.cert("server", -400, -5).cert("ca", -1, 10).file("crl.pem", "", 0o644).file("acl", "", 0o600);
    let found = f.audit(TLS_ACL, &AuditOptions { started_as_root: false, ..AuditOptions::default() });
    assert_eq!(found.len(), 2);
    let expired = &found[0];
    assert_eq!((expired.severity, expired.kind), (Severity::High, Kind::CertificateExpired));
    let date = (OffsetDateTime::now_utc() - Duration::days(5) + Duration::hours(1)).date().to_string();
    assert!(
        expired.message.contains(&format!("certificate 'CN=server.example' expired on {date} (")),
        "{}",
        expired.message
    );
    assert!(expired.message.contains("clients refuse to connect"), "{}", expired.message);
    assert!(found[1].message.contains("in 10 days"), "{}", found[1].message);
}

#[test]
fn an_unreadable_configuration_is_an_error() {
    let f = Fixture::new();
    assert!(audit_file(&f.path().join("none.conf"), &AuditOptions::default()).is_err());
    f.file("broker.conf", "include_dir nowhere\n", 0o644);
    let options =
        AuditOptions { base_dir: f.path().to_owned(), started_as_root: false, ..AuditOptions::default() };
    let e = audit_file(&f.path().join("broker.conf"), &options).unwrap_err();
    assert!(e.to_string().contains("broker.conf:1: cannot read include_dir"), "{e}");
}
