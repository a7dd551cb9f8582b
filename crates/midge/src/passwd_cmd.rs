//! `midge passwd`: mosquitto_passwd. Hashes are PBKDF2-HMAC-SHA512 (`$7$`), readable by
//! mosquitto; files are written atomically, new ones with mode 0600 (made by root: 0640 in
//! the group of the broker's user, `--user`, mosquitto by default, so that the broker reads
//! them on SIGHUP), existing ones keeping their owner, group and mode (less other users'
//! bits; a world-readable file of root's gets that group, read-only).
use std::io::{BufRead, IsTerminal, Write};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use midge_broker::auth::password::{validate_username, Hash, PasswordFile, DEFAULT_ITERATIONS};

/// Manage password files, as mosquitto_passwd.
///
/// `--help` (and no argument at all) prints mosquitto_passwd's usage, in the name midge
/// was run by (`midge passwd`, or `mosquitto_passwd` through a link), and exits 1, as
/// mosquitto_passwd does.
#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct PasswdArgs {
    /// Batch mode: the password is the last argument.
    #[arg(short = 'b')]
    batch: bool,
    /// Create the file, overwriting any that exists.
    #[arg(short = 'c')]
    create: bool,
    /// Delete the user.
    #[arg(short = 'D')]
    delete: bool,
    /// Hash every password of a plain text file (user:password lines), in place.
    #[arg(short = 'U')]
    update: bool,
    /// Hash: sha512-pbkdf2 (the default) or sha512 (mosquitto 1.6's, weaker).
    #[arg(short = 'H', default_value = "sha512-pbkdf2")]
    hash: String,
    /// PBKDF2 iterations.
    #[arg(short = 'I', default_value_t = DEFAULT_ITERATIONS)]
    iterations: u32,
    /// Print usage.
    #[arg(short = 'h', long = "help")]
    help: bool,
    /// The user the broker runs as (as `midge cert --user`): run as root, midge passwd
    /// gives the file that user's group, so that the broker reads it again on SIGHUP.
    #[arg(long, value_name = "NAME", default_value = midge_broker::config::DEFAULT_USER)]
    user: String,
    /// FILE, then USER, then PASSWORD with -b.
    args: Vec<String>,
}

/// A failure: the message (after "Error: ") and the exit code.
struct Fail(String, u8);

fn fail(message: impl Into<String>) -> Fail {
    Fail(message.into(), 1)
}

/// The name to show in the usage: mosquitto_passwd when run through a link of that name.
fn program_name() -> &'static str {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    match Path::new(&argv0).file_name().and_then(|n| n.to_str()) {
        Some("mosquitto_passwd") => "mosquitto_passwd",
        _ => "midge passwd",
    }
}

/// mosquitto_passwd's usage, in its layout, with midge's options.
fn usage(name: &str) -> String {
    format!(
        "{name} is a tool for managing password files for mosquitto.\n\n\
         Usage: {name} [-H sha512-pbkdf2] [-I iterations] [-c | -D] passwordfile username\n\
         {pad}{name} [-H sha512-pbkdf2] [-I iterations] [-c] -b passwordfile username password\n\
         {pad}{name} -U passwordfile\n\
         {options}",
        pad = " ".repeat("Usage: ".len()),
        options = [
            " -b : run in batch mode to allow passing passwords on the command line.",
            " -c : create a new password file. This will overwrite existing files.",
            " -D : delete the username rather than adding/updating its password.",
            " -H : specify the hashing algorithm: sha512-pbkdf2, the default and the only one",
            "      midge writes (mosquitto 1.6's sha512 is refused).",
            &format!(" -I : PBKDF2 iterations (default {DEFAULT_ITERATIONS})."),
            " -U : update a plain text password file to use hashed passwords.",
            "",
            "Without -b, the password is asked for twice: on the terminal, without echo, or as two",
            "lines of standard input when it is not a terminal.",
            "",
            "Run as root, it gives the file the group of the broker's user, read-only, so that the",
            "broker reads it again on SIGHUP: --user NAME (default mosquitto).",
            "",
        ]
        .join("\n"),
    )
}

pub fn run(args: PasswdArgs) -> ExitCode {
    if args.help || args.args.is_empty() {
        print!("{}", usage(program_name()));
        return ExitCode::from(1);
    }
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(m, code)) => {
            eprintln!("Error: {m}");
            ExitCode::from(code)
        }
    }
}

fn run_inner(a: PasswdArgs) -> Result<(), Fail> {
    let iterations =
        NonZeroU32::new(a.iterations).ok_or_else(|| fail("-I needs a positive number of iterations."))?;
    let make = |password: &[u8]| -> Result<Hash, Fail> {
        match a.hash.as_str() {
            "sha512-pbkdf2" => Ok(Hash::new_pbkdf2(password, iterations)),
            "sha512" => Err(fail("-H sha512 makes weak hashes; midge writes sha512-pbkdf2 only.")),
            other => Err(fail(format!("Unknown hash type '{other}': use sha512-pbkdf2."))),
        }
    };
    if a.update {
        let [file] = a.args.as_slice() else {
            return Err(fail("-U takes one argument: the plain text file."));
        };
        let path = Path::new(file);
        let text = read(path)?;
        let mut out = PasswordFile::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let Some((user, password)) = line.split_once(':') else {
                return Err(fail(format!("{file}:{}: expected user:password.", i + 1)));
            };
            if password.starts_with("$7$") || password.starts_with("$6$") {
                return Err(fail(format!(
                    "{file}:{}: the password of '{user}' is already hashed; -U hashes plain text files only.",
                    i + 1
                )));
            }
            validate_username(user).map_err(|e| fail(e.to_string()))?;
            out.set(user, make(password.as_bytes())?);
        }
        return write_atomic(path, &out.render(), &a.user);
    }
    let (file, user, password) = match (a.batch, a.delete, a.args.as_slice()) {
        (true, false, [f, u, p]) => (f, u, Some(p.clone().into_bytes())),
        (false, _, [f, u]) => (f, u, None),
        (true, true, _) => return Err(fail("-b and -D cannot be used together.")),
        (true, _, _) => return Err(fail("-b needs a file, a user name and a password.")),
        _ => return Err(fail("expected a file and a user name.")),
    };
    if a.create && a.delete {
        return Err(fail("-c and -D cannot be used together."));
    }
    validate_username(user).map_err(|e| fail(format!("{}.", upper_first(&e.to_string()))))?;
    let path = PathBuf::from(file);
    let mut pf = if a.create {
        PasswordFile::default()
    } else {
        PasswordFile::parse(&read(&path)?, file).map_err(|e| fail(e.to_string()))?
    };
    if a.delete {
        if !pf.remove(user) {
            return Err(fail(format!("User {user} not found in password file.")));
        }
    } else {
        let password = match password {
            Some(p) if p.is_empty() => return Err(fail("Empty password.")),
            Some(p) => p,
            None => read_password_twice()?,
        };
        pf.set(user, make(&password)?);
    }
    write_atomic(&path, &pf.render(), &a.user)
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

fn read(path: &Path) -> Result<String, Fail> {
    std::fs::read_to_string(path).map_err(|e| {
        fail(format!(
            "Unable to open password file {}. {}.",
            path.display(),
            crate::clients::common::strip_os_error(&e.to_string())
        ))
    })
}

/// Asks for the password and again for its confirmation, as mosquitto_passwd does: an
/// empty answer (or none: end of input) fails with exit code 1, two different ones with
/// exit code 2. On a terminal the answers are typed without echo; otherwise they are two
/// lines of standard input (`printf 'pw\npw\n' | midge passwd -c FILE USER`), the prompts
/// on standard output, each followed by a line break once answered.
fn read_password_twice() -> Result<Vec<u8>, Fail> {
    let terminal = std::io::stdin().is_terminal();
    let mut input = std::io::stdin().lock();
    let mut ask = |prompt: &str| -> Result<Vec<u8>, Fail> {
        let answer = if terminal {
            match rpassword::prompt_password(prompt) {
                Ok(p) => p.into_bytes(),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Vec::new(),
                Err(e) => return Err(fail(format!("cannot read the password: {e}."))),
            }
        } else {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(prompt.as_bytes()).and_then(|_| out.flush());
            let mut line = Vec::new();
            input
                .read_until(b'\n', &mut line)
                .map_err(|e| fail(format!("cannot read the password: {e}.")))?;
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            line
        };
        if answer.is_empty() {
            return Err(fail("Empty password."));
        }
        if !terminal {
            println!();
        }
        Ok(answer)
    };
    let first = ask("Password: ")?;
    let second = ask("Reenter password: ")?;
    if first != second {
        return Err(Fail("Passwords do not match.".into(), 2));
    }
    Ok(first)
}

/// Writes `text` to a temporary file beside `path` with mode 0600 (0640 in the group of
/// `broker_user`, mosquitto by default, when made by root and that user exists), then
/// renames it over
/// `path`: readers see the old file or the new one, never half of one. A file that exists
/// keeps its owner, group and mode (as mosquitto_passwd's does, less the permissions of
/// other users), so a broker that runs as another user can still read it.
fn write_atomic(path: &Path, text: &str, broker_user: &str) -> Result<(), Fail> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let err = |e: std::io::Error| fail(format!("Unable to write {}: {e}.", path.display()));
    // A symbolic link is followed, as mosquitto_passwd does: the file it names is replaced.
    let path = &std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(err)?;
    let mut result = f.write_all(text.as_bytes());
    // Run as root, a file root alone could read would stop a broker that runs as another
    // user (mosquitto, its default) from reading it again on SIGHUP: it is given that user's
    // group.
    let broker = nix::unistd::geteuid()
        .is_root()
        .then(|| nix::unistd::User::from_name(broker_user).ok().flatten())
        .flatten()
        .filter(|u| !u.uid.is_root());
    let group_name = broker
        .as_ref()
        .and_then(|u| nix::unistd::Group::from_gid(u.gid).ok().flatten())
        .map_or_else(|| broker_user.to_owned(), |g| g.name);
    let broker_group = broker.map(|u| u.gid.as_raw());
    let old = std::fs::metadata(path).ok();
    if old.is_none() {
        if let Some(gid) = broker_group {
            result = result.and_then(|_| {
                std::os::unix::fs::fchown(&f, None, Some(gid))?;
                f.set_permissions(std::fs::Permissions::from_mode(0o640))
            });
        }
    }
    if let Some(old) = old {
        // Mode and owner are set on the open file, never through a path someone could swap.
        result = result.and_then(|_| {
            // Not readable by every user, though: the hashes are secrets. A broker that read
            // it that way reads it through its group (root's file gets the broker's group).
            let world_readable = old.mode() & 0o004 != 0;
            let regroup = broker_group.filter(|_| world_readable && old.gid() == 0);
            // Given a group, that group reads it, never writes it.
            let mode = if regroup.is_some() { old.mode() & 0o740 | 0o040 } else { old.mode() & 0o770 };
            if world_readable {
                eprintln!(
                    "Warning: {} was readable by every user; it is not any more (mode {mode:04o}{}).{}",
                    path.display(),
                    if regroup.is_some() { format!(", group {group_name}") } else { String::new() },
                    if regroup.is_some() {
                        ""
                    } else {
                        " A broker that read it as another user needs it in its group or owned by it."
                    },
                );
            }
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            // Only root can give a file away; another user keeps its group when a member of
            // it (so a broker that reads it through its group still can).
            let mine = f.metadata()?;
            let theirs = (old.uid(), regroup.unwrap_or(old.gid()));
            if nix::unistd::geteuid().is_root() && (mine.uid(), mine.gid()) != theirs {
                std::os::unix::fs::fchown(&f, Some(theirs.0), Some(theirs.1))?;
            } else if mine.gid() != theirs.1 {
                if let Err(e) = std::os::unix::fs::fchown(&f, None, Some(theirs.1)) {
                    eprintln!(
                        "Warning: {} keeps its mode but not its group (gid {}): {e}.",
                        path.display(),
                        theirs.1
                    );
                }
            }
            Ok(())
        });
    }
    result = result.and_then(|_| f.sync_all());
    drop(f);
    if let Err(e) = result.and_then(|_| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}
