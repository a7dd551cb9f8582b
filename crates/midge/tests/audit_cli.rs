//! `midge audit` as a user runs it: exit codes 0 / 1 / 2, text and --json output, and the
//! README's secure configuration (made with `midge cert`) found clean.
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const MIDGE: &str = env!("CARGO_BIN_EXE_midge");

fn midge(dir: &Path, args: &[&str]) -> Output {
    Command::new(MIDGE).args(args).current_dir(dir).output().unwrap()
}

/// `midge audit ARGS`, for a broker started by the user who owns the files (as root, the
/// broker would run as user mosquitto: a check of its own, in the audit's table tests).
fn audit(dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["audit", "--started-as-root", "false"];
    all.extend_from_slice(args);
    midge(dir, &all)
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn exit_codes_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "acl", "topic read public/#\n", 0o600);
    write(d, "clean.conf", "listener 1883 127.0.0.1\nallow_anonymous true\nacl_file acl\n", 0o644);
    write(d, "weak.conf", "acl_file acl\nlistener 1883\nallow_anonymous true\nfrobnicate 1\n", 0o644);

    let clean = audit(d, &["-c", "clean.conf"]);
    assert_eq!(clean.status.code(), Some(0), "{clean:?}");
    assert_eq!(stdout(&clean), "clean.conf: no weaknesses found\n");
    let clean_json = audit(d, &["--json", "-c", "clean.conf"]);
    assert_eq!((clean_json.status.code(), stdout(&clean_json).as_str()), (Some(0), "[]\n"));

    let weak = audit(d, &["-c", "weak.conf"]);
    assert_eq!(weak.status.code(), Some(1), "{weak:?}");
    let text = stdout(&weak);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("HIGH weak.conf:2: anonymous clients accepted on listener 1883 (0.0.0.0)"));
    assert!(lines[1].starts_with("INFO weak.conf:4: unknown option 'frobnicate'"));
    assert_eq!(lines[2], "weak.conf: 1 weakness (1 high), 1 informational note");

    let json = audit(d, &["-c", "weak.conf", "--json"]);
    assert_eq!(json.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["severity"], "high");
    assert_eq!(items[0]["kind"], "anonymous-network");
    assert_eq!(items[0]["file"], "weak.conf");
    assert_eq!(items[0]["line"], 2);
    assert_eq!(items[1]["severity"], "info");

    // Only informational notes: exit 0.
    write(d, "info.conf", "listener 1883 127.0.0.1\nfrobnicate 1\n", 0o644);
    assert_eq!(audit(d, &["-c", "info.conf"]).status.code(), Some(0));

    // --dir: relative paths taken from another directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let conf = d.join("weak.conf");
    let o = audit(elsewhere.path(), &["-c", conf.to_str().unwrap(), "--dir", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!stdout(&o).contains("acl_file"), "the ACL is found through --dir: {}", stdout(&o));
    let o = audit(elsewhere.path(), &["-c", conf.to_str().unwrap()]);
    assert!(stdout(&o).contains("MEDIUM ") && stdout(&o).contains("acl does not exist"), "{}", stdout(&o));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = audit(dir.path(), &["-c", "none.conf"]);
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.starts_with("midge audit: cannot read none.conf: "), "{err}");
    assert!(missing.stdout.is_empty());
    assert_eq!(midge(dir.path(), &["audit"]).status.code(), Some(2));
    assert_eq!(audit(dir.path(), &["-c", "x", "--min-iterations", "many"]).status.code(), Some(2));
    assert_eq!(audit(dir.path(), &["-c", "x", "--frobnicate"]).status.code(), Some(2));
    assert_eq!(audit(dir.path(), &["-c", "."]).status.code(), Some(2));
}

/// The code blocks of the README's section "Security: a secure configuration in a few
/// commands": the `midge cert` commands, broker.conf and acl.
fn readme_secure_configuration() -> (Vec<String>, String, String) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme.find("## Security: a secure configuration in a few commands").unwrap();
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let blocks: Vec<&str> = section.split("```").skip(1).step_by(2).collect();
    let commands = blocks
        .iter()
        .flat_map(|b| b.lines())
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| {
            (l.starts_with("midge cert ") && !l.contains("revoke") && !l.contains("list"))
                || l.starts_with("midge passwd ")
        })
        .map(str::to_owned)
        .collect();
    let block = |first: &str| {
        blocks.iter().map(|b| b.trim_start()).find(|b| b.starts_with(first)).unwrap().to_owned()
    };
    (commands, block("listener "), block("user "))
}

#[test]
fn the_readme_secure_configuration_is_clean() {
    let (commands, conf, acl) = readme_secure_configuration();
    assert!(commands.len() >= 3 && conf.contains("require_certificate true") && acl.contains("topic"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(commands.iter().any(|c| c.starts_with("midge passwd -c passwd ")), "{commands:?}");
    for c in &commands {
        let mut args: Vec<&str> = c.split_whitespace().skip(1).collect();
        if args[0] == "passwd" {
            // The README's prompt, answered on the command line: passwd -c -b FILE USER PASSWORD.
            args.insert(2, "-b");
            args.push("a-long-password");
        }
        let o = midge(d, &args);
        assert!(o.status.success(), "{c}: {o:?}");
    }
    write(d, "broker.conf", &conf, 0o644);
    // midge passwd run as root gives the file the group of the broker's user (0640), which
    // is how that user reads it once the broker, started as root, runs as it; audited here
    // as a broker that is not started as root, it is 0600, as midge passwd makes it then.
    std::fs::set_permissions(d.join("passwd"), std::fs::Permissions::from_mode(0o600)).unwrap();
    // As an editor leaves it, with the usual umask: one low finding, which the README's
    // `chmod 600 acl` cures.
    write(d, "acl", &acl, 0o644);
    let o = audit(d, &["-c", "broker.conf"]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("LOW broker.conf:") && lines[0].contains("acl_file acl is readable by every"),
        "{text}"
    );
    assert!(lines[1..lines.len() - 1].iter().all(|l| l.starts_with("INFO ")), "{text}");
    std::fs::set_permissions(d.join("acl"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = audit(d, &["-c", "broker.conf"]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[..lines.len() - 1].iter().all(|l| l.starts_with("INFO ")), "{text}");
    assert!(lines[lines.len() - 1].starts_with("broker.conf: no weaknesses found"), "{text}");
}

/// The log file, the pid file and the store must be writable by the user the broker writes
/// them as: started as root, its `user` (here mosquitto), which opens them after root is given
/// up; a directory only root may write stops the broker at start. Not root: the user auditing.
#[test]
fn what_the_broker_writes_must_be_writable_by_its_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = nix::unistd::geteuid().is_root();
    if root && nix::unistd::User::from_name("mosquitto").ok().flatten().is_none() {
        panic!("this test drops to user mosquitto: install Debian's mosquitto package (scripts/test does)");
    }
    for sub in ["logs", "run", "store"] {
        std::fs::create_dir(d.join(sub)).unwrap();
        // Root's (or, not root, closed to its owner): as /var/log before a package makes its own.
        std::fs::set_permissions(
            d.join(sub),
            std::fs::Permissions::from_mode(if root { 0o755 } else { 0o555 }),
        )
        .unwrap();
    }
    write(
        d,
        "broker.conf",
        "user mosquitto\nlistener 1883 127.0.0.1\nallow_anonymous true\nlog_dest file logs/midge.log\n\
         pid_file run/midge.pid\npersistence true\npersistence_location store/\n",
        0o644,
    );
    let started_as_root = if root { "true" } else { "false" };
    let run = || midge(d, &["audit", "--started-as-root", started_as_root, "--json", "-c", "broker.conf"]);
    let out = run();
    let json = stdout(&out);
    let found: Vec<&str> =
        json.lines().filter(|l| l.contains("\"kind\":\"unwritable-by-broker-user\"")).collect();
    assert_eq!(found.len(), 3, "{json}");
    let user = if root {
        "mosquitto".to_owned()
    } else {
        nix::unistd::User::from_uid(nix::unistd::geteuid()).unwrap().unwrap().name
    };
    for (line, what) in [
        (4, "log_dest file logs/midge.log"),
        (5, "pid_file run/midge.pid"),
        (7, "persistence_location store/"),
    ] {
        let f = found
            .iter()
            .find(|l| l.contains(&format!("\"line\":{line},")))
            .unwrap_or_else(|| panic!("line {line}: {json}"));
        assert!(f.contains(what) && f.contains(&format!("user '{user}'")), "{f}");
    }
    assert_eq!(out.status.code(), Some(1));
    // Made the user's, as the Debian package and the systemd unit make them: nothing to report.
    for sub in ["logs", "run", "store"] {
        if root {
            let account = nix::unistd::User::from_name("mosquitto").unwrap().unwrap();
            nix::unistd::chown(&d.join(sub), Some(account.uid), Some(account.gid)).unwrap();
        } else {
            std::fs::set_permissions(d.join(sub), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let json = stdout(&run());
    assert!(!json.contains("unwritable-by-broker-user"), "{json}");
    // A directory that is not there is named too.
    std::fs::remove_dir(d.join("run")).unwrap();
    let json = stdout(&run());
    assert!(json.contains("does not exist: the broker will not start"), "{json}");
}
