//! `midge passwd`: mosquitto_passwd. Hashes are PBKDF2-HMAC-SHA512 (`$7$`), readable by
//! mosquitto; files are written atomically with mode 0600.
use std::io::Write;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use midge_broker::auth::password::{validate_username, Hash, PasswordFile, DEFAULT_ITERATIONS};

/// Manage password files, as mosquitto_passwd.
#[derive(clap::Args, Debug)]
#[command(override_usage = "midge passwd [-H sha512-pbkdf2] [-I ITERATIONS] [-c | -D] FILE USER\n       \
                      midge passwd [-H sha512-pbkdf2] [-I ITERATIONS] [-c] -b FILE USER PASSWORD\n       \
                      midge passwd -U FILE")]
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
    /// FILE, then USER, then PASSWORD with -b.
    #[arg(required = true)]
    args: Vec<String>,
}

struct Fail(String);

pub fn run(args: PasswdArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(m)) => {
            eprintln!("Error: {m}");
            ExitCode::from(1)
        }
    }
}

fn run_inner(a: PasswdArgs) -> Result<(), Fail> {
    let iterations = NonZeroU32::new(a.iterations)
        .ok_or_else(|| Fail("-I needs a positive number of iterations.".into()))?;
    let make = |password: &str| -> Result<Hash, Fail> {
        match a.hash.as_str() {
            "sha512-pbkdf2" => Ok(Hash::new_pbkdf2(password.as_bytes(), iterations)),
            "sha512" => Err(Fail("-H sha512 makes weak hashes; midge writes sha512-pbkdf2 only.".into())),
            other => Err(Fail(format!("Unknown hash type '{other}': use sha512-pbkdf2."))),
        }
    };
    if a.update {
        let [file] = a.args.as_slice() else {
            return Err(Fail("-U takes one argument: the plain text file.".into()));
        };
        let path = Path::new(file);
        let text = read(path)?;
        let mut out = PasswordFile::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let Some((user, password)) = line.split_once(':') else {
                return Err(Fail(format!("{file}:{}: expected user:password.", i + 1)));
            };
            if password.starts_with("$7$") || password.starts_with("$6$") {
                return Err(Fail(format!(
                    "{file}:{}: the password of '{user}' is already hashed; -U hashes plain text files only.",
                    i + 1
                )));
            }
            validate_username(user).map_err(Fail)?;
            out.set(user, make(password)?);
        }
        return write_atomic(path, &out.render());
    }
    let (file, user, password) = match (a.batch, a.delete, a.args.as_slice()) {
        (true, false, [f, u, p]) => (f, u, Some(p.clone())),
        (false, _, [f, u]) => (f, u, None),
        (true, true, _) => return Err(Fail("-b and -D cannot be used together.".into())),
        (true, _, _) => return Err(Fail("-b needs a file, a user name and a password.".into())),
        _ => return Err(Fail("expected a file and a user name.".into())),
    };
    if a.create && a.delete {
        return Err(Fail("-c and -D cannot be used together.".into()));
    }
    validate_username(user).map_err(|e| Fail(format!("{}.", upper_first(&e))))?;
    let path = PathBuf::from(file);
    let mut pf = if a.create {
        PasswordFile::default()
    } else {
        PasswordFile::parse(&read(&path)?, file).map_err(|e| Fail(e.to_string()))?
    };
    if a.delete {
        if !pf.remove(user) {
            return Err(Fail(format!("User {user} not found in password file.")));
        }
    } else {
        let password = match password {
            Some(p) => p,
            None => prompt_twice()?,
        };
        if password.is_empty() {
            return Err(Fail("Empty password.".into()));
        }
        pf.set(user, make(&password)?);
    }
    write_atomic(&path, &pf.render())
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

fn read(path: &Path) -> Result<String, Fail> {
    std::fs::read_to_string(path).map_err(|e| {
        Fail(format!(
            "Unable to open password file {}. {}.",
            path.display(),
            crate::clients::common::strip_os_error(&e.to_string())
        ))
    })
}

fn prompt_twice() -> Result<String, Fail> {
    let read = |prompt: &str| {
        rpassword::prompt_password(prompt).map_err(|e| Fail(format!("cannot read the password: {e}.")))
    };
    let first = read("Password: ")?;
    let second = read("Reenter password: ")?;
    if first != second {
        return Err(Fail("Passwords do not match.".into()));
    }
    Ok(first)
}

/// Writes `text` to a temporary file beside `path` with mode 0600, then renames it over
/// `path`: readers see the old file or the new one, never half of one.
fn write_atomic(path: &Path, text: &str) -> Result<(), Fail> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let err = |e: std::io::Error| Fail(format!("Unable to write {}: {e}.", path.display()));
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(err)?;
    let result = f.write_all(text.as_bytes()).and_then(|_| f.sync_all());
    drop(f);
    if let Err(e) = result.and_then(|_| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}
