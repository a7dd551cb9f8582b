//! mosquitto's password files: `user:$7$ITERATIONS$SALT$HASH` (PBKDF2-HMAC-SHA512, 64-byte
//! hash) and the older `user:$6$SALT$HASH` (SHA-512 of the password followed by the salt),
//! salt and hash in standard base64 with padding.
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::SecureRandom;

/// The iterations `midge passwd` uses by default: OWASP's figure for PBKDF2-HMAC-SHA512.
pub const DEFAULT_ITERATIONS: u32 = 210_000;
const SALT_LEN: usize = 12;
const HASH_LEN: usize = 64;

/// A password hash as stored in the file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Hash {
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2 {
        /// Iterations.
        iterations: NonZeroU32,
        /// Salt, any length.
        salt: Vec<u8>,
        /// The 64-byte derived key.
        hash: Vec<u8>,
    },
    /// `$6$`: SHA-512(password || salt).
    Sha512 {
        /// Salt.
        salt: Vec<u8>,
        /// The 64-byte digest.
        hash: Vec<u8>,
    },
}

/// A password file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordFileError {
    /// The file cannot be read.
    #[error("cannot read password file {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A line is wrong.
    #[error("{path}:{line}: {problem}")]
    Line {
        /// The file.
        path: String,
        /// The line, from 1.
        line: usize,
        /// What is wrong.
        problem: EntryError,
    },
}

/// What is wrong with one entry line of a password file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The line has no `:` between the user and the hash.
    #[error("expected user:hash")]
    NoSeparator,
    /// Nothing before the `:`.
    #[error("no user name before ':'")]
    EmptyUser,
    /// The hash after the `:`.
    #[error(transparent)]
    Hash(#[from] HashError),
}

/// A hash (the part after `user:`) that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// `$7$` without its three parts.
    #[error("a $7$ hash needs $7$ITERATIONS$SALT$HASH")]
    Pbkdf2Parts,
    /// `$6$` without its two parts.
    #[error("a $6$ hash needs $6$SALT$HASH")]
    Sha512Parts,
    /// An iteration count that is not a number from 1 to 2^32-1.
    #[error("invalid iteration count '{0}'")]
    Iterations(String),
    /// The salt or the hash is not standard base64.
    #[error("invalid base64 in the {part}: {error}")]
    Base64 {
        /// "salt" or "hash".
        part: &'static str,
        /// What the decoder found.
        error: base64::DecodeError,
    },
    /// A hash of another length than SHA-512's 64 bytes.
    #[error("the hash is {0} bytes, not 64")]
    HashLength(usize),
    /// Neither `$7$` nor `$6$`: a password in plain text, most likely.
    #[error(
        "not a password hash (expected $7$ or $6$): a plain text file can be hashed with midge passwd -U"
    )]
    NotAHash,
}

/// A user name that cannot be written to a password file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UserNameError {
    /// The empty name.
    #[error("the user name is empty")]
    Empty,
    /// A name with ':', the file's separator.
    #[error("invalid user name '{0}': it may not contain ':'")]
    Colon(String),
    /// A name with control characters, which would break the line or the terminal.
    #[error("invalid user name {0:?}: it may not contain control characters")]
    ControlCharacter(String),
}

impl Hash {
    /// Parses the part after `user:`.
    pub fn parse(s: &str) -> Result<Hash, HashError> {
        let b64 = |part: &'static str, v: &str| {
            STANDARD.decode(v).map_err(|error| HashError::Base64 { part, error })
        };
        if let Some(rest) = s.strip_prefix("$7$") {
            let mut parts = rest.splitn(3, '$');
            let (Some(iter), Some(salt), Some(hash)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(HashError::Pbkdf2Parts);
            };
            let iterations = iter
                .parse::<u32>()
                .ok()
                .and_then(NonZeroU32::new)
                .ok_or_else(|| HashError::Iterations(iter.to_owned()))?;
            let hash = b64("hash", hash)?;
            if hash.len() != HASH_LEN {
                return Err(HashError::HashLength(hash.len()));
            }
            Ok(Hash::Pbkdf2 { iterations, salt: b64("salt", salt)?, hash })
        } else if let Some(rest) = s.strip_prefix("$6$") {
            let Some((salt, hash)) = rest.split_once('$') else {
                return Err(HashError::Sha512Parts);
            };
            let hash = b64("hash", hash)?;
            if hash.len() != HASH_LEN {
                return Err(HashError::HashLength(hash.len()));
            }
            Ok(Hash::Sha512 { salt: b64("salt", salt)?, hash })
        } else {
            Err(HashError::NotAHash)
        }
    }

    /// Hashes a password with PBKDF2-HMAC-SHA512 and a fresh random salt.
    pub fn new_pbkdf2(password: &[u8], iterations: NonZeroU32) -> Hash {
        let mut salt = vec![0u8; SALT_LEN];
        // The system RNG only fails when the OS has none; there is no safe fallback.
        ring::rand::SystemRandom::new()
            .fill(&mut salt)
            .expect("the operating system's random number generator");
        let mut hash = vec![0u8; HASH_LEN];
        ring::pbkdf2::derive(ring::pbkdf2::PBKDF2_HMAC_SHA512, iterations, &salt, password, &mut hash);
        Hash::Pbkdf2 { iterations, salt, hash }
    }

    /// Checks a password, in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Pbkdf2 { iterations, salt, hash } => {
                ring::pbkdf2::verify(ring::pbkdf2::PBKDF2_HMAC_SHA512, *iterations, salt, password, hash)
                    .is_ok()
            }
            Hash::Sha512 { salt, hash } => {
                let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
                ctx.update(password);
                ctx.update(salt);
                let digest = ctx.finish();
                constant_time_eq(digest.as_ref(), hash)
            }
        }
    }

    /// A hash of the same kind, iteration count and salt length, with a random salt and
    /// digest: checking a password against it costs what checking against `self` costs, and
    /// no password matches it (but with odds of 2^-512).
    pub fn decoy(&self) -> Hash {
        let random = |n: usize| {
            let mut b = vec![0u8; n];
            // As in new_pbkdf2: no safe fallback without the OS's generator.
            ring::rand::SystemRandom::new()
                .fill(&mut b)
                .expect("the operating system's random number generator");
            b
        };
        match self {
            Hash::Pbkdf2 { iterations, salt, .. } => {
                Hash::Pbkdf2 { iterations: *iterations, salt: random(salt.len()), hash: random(HASH_LEN) }
            }
            Hash::Sha512 { salt, .. } => Hash::Sha512 { salt: random(salt.len()), hash: random(HASH_LEN) },
        }
    }

    /// The iteration count of a PBKDF2 hash (`None` for `$6$`).
    pub fn iterations(&self) -> Option<u32> {
        match self {
            Hash::Pbkdf2 { iterations, .. } => Some(iterations.get()),
            Hash::Sha512 { .. } => None,
        }
    }
}

/// What an unknown user's password is checked against, so that a login as an unknown user
/// takes as long as one as a known user with a wrong password, and the time of a refusal does
/// not tell which user names exist: a [`Hash::decoy`] of the kind of hash most of `hashes`
/// have (the costlier one on a tie), or of `midge passwd`'s default when there are none.
pub fn decoy_for<'a>(hashes: impl IntoIterator<Item = &'a Hash>) -> Hash {
    let mut kinds: HashMap<(Option<u32>, usize), (usize, &Hash)> = HashMap::new();
    for h in hashes {
        let salt_len = match h {
            Hash::Pbkdf2 { salt, .. } | Hash::Sha512 { salt, .. } => salt.len(),
        };
        kinds.entry((h.iterations(), salt_len)).or_insert((0, h)).0 += 1;
    }
    let most = kinds.into_iter().max_by_key(|((iterations, _), (count, _))| (*count, *iterations));
    match most {
        Some((_, (_, h))) => h.decoy(),
        None => Hash::Pbkdf2 {
            iterations: NonZeroU32::new(DEFAULT_ITERATIONS).expect("not zero"),
            salt: vec![0; SALT_LEN],
            hash: vec![0; HASH_LEN],
        }
        .decoy(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl std::fmt::Display for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hash::Pbkdf2 { iterations, salt, hash } => {
                write!(f, "$7${}${}${}", iterations, STANDARD.encode(salt), STANDARD.encode(hash))
            }
            Hash::Sha512 { salt, hash } => {
                write!(f, "$6${}${}", STANDARD.encode(salt), STANDARD.encode(hash))
            }
        }
    }
}

/// Checks a user name for a password file: no ':' (the separator) and no control characters.
pub fn validate_username(name: &str) -> Result<(), UserNameError> {
    if name.is_empty() {
        return Err(UserNameError::Empty);
    }
    if name.contains(':') {
        return Err(UserNameError::Colon(name.to_owned()));
    }
    if name.chars().any(char::is_control) {
        return Err(UserNameError::ControlCharacter(name.to_owned()));
    }
    Ok(())
}

/// The users of a password file, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordFile {
    /// (user, hash), in order.
    pub entries: Vec<(String, Hash)>,
}

/// One entry line of a password file: its number (from 1), the user name (`None` when the
/// line has no `:`) and the hash, or what is wrong with it.
#[derive(Debug)]
pub struct Line<'a> {
    /// The line number, from 1.
    pub number: usize,
    /// The text before the first `:`.
    pub user: Option<&'a str>,
    /// The hash after it, or what is wrong with the line.
    pub hash: Result<Hash, EntryError>,
}

/// The entry lines of password file text, as mosquitto reads them: every line that is not
/// blank or a `#` comment. [`PasswordFile::parse`] stops at the first bad one; `midge
/// audit` reports each.
pub fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
    text.lines().enumerate().filter_map(|(i, raw)| {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            return None;
        }
        let (user, hash) = match line.split_once(':') {
            None => (None, Err(EntryError::NoSeparator)),
            Some(("", _)) => (Some(""), Err(EntryError::EmptyUser)),
            Some((user, hash)) => (Some(user), Hash::parse(hash).map_err(EntryError::from)),
        };
        Some(Line { number: i + 1, user, hash })
    })
}

impl PasswordFile {
    /// Reads and parses a file; every bad line is an error naming the line.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| PasswordFileError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        PasswordFile::parse(&text, &path.display().to_string())
    }

    /// Reads a file as the broker does, as mosquitto does: a bad entry is left out (its
    /// user cannot log in) and returned with what is wrong, so the broker logs it and starts.
    pub fn load_skipping_bad(
        path: &Path,
    ) -> Result<(PasswordFile, Vec<PasswordFileError>), PasswordFileError> {
        let text = std::fs::read_to_string(path).map_err(|e| PasswordFileError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let shown = path.display().to_string();
        let mut entries = Vec::new();
        let mut bad = Vec::new();
        for l in lines(&text) {
            match l.hash {
                Ok(hash) => entries.push((l.user.unwrap_or_default().to_owned(), hash)),
                Err(problem) => {
                    bad.push(PasswordFileError::Line { path: shown.clone(), line: l.number, problem })
                }
            }
        }
        Ok((PasswordFile { entries }, bad))
    }

    /// Parses password file text.
    pub fn parse(text: &str, path: &str) -> Result<PasswordFile, PasswordFileError> {
        let mut entries = Vec::new();
        for l in lines(text) {
            let err = |problem| PasswordFileError::Line { path: path.to_owned(), line: l.number, problem };
            let hash = l.hash.map_err(err)?;
            entries.push((l.user.unwrap_or_default().to_owned(), hash));
        }
        Ok(PasswordFile { entries })
    }

    /// The hashes by user name.
    pub fn by_user(&self) -> HashMap<String, Hash> {
        self.entries.iter().cloned().collect()
    }

    /// The file's text.
    pub fn render(&self) -> String {
        self.entries.iter().map(|(u, h)| format!("{u}:{h}\n")).collect()
    }

    /// Sets a user's hash, keeping the order; new users go at the end.
    pub fn set(&mut self, user: &str, hash: Hash) {
        match self.entries.iter_mut().find(|(u, _)| u == user) {
            Some(e) => e.1 = hash,
            None => self.entries.push((user.to_owned(), hash)),
        }
    }

    /// Removes a user; false if absent.
    pub fn remove(&mut self, user: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(u, _)| u != user);
        self.entries.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by mosquitto_passwd 2.0.11 (Debian): `mosquitto_passwd -c -b pw alice secret` and
    // `mosquitto_passwd -H sha512 -b pw carol x`.
    const MOSQUITTO: &str = "alice:$7$101$bH+nk2qVkCOifh+L$wUEW1s8cpHAUO2S9eG4rmVJer1HTNIp+GZue4OybudsdDVTQZ9ZaWHxz/nxke5x6e89th9cdahYPoWWHE/tt6w==\n\
                             carol:$6$aoM5FnGlGplekuDU$zUlOO/tiPdmtjOAjhVjlygN1DuSyT79zikfVzxtgHHL6zIXnuL0vYCkwGxOhcujR5T0uVP6TwVMKTd4VrwECxw==\n";

    #[test]
    fn verifies_mosquitto_hashes() {
        let f = PasswordFile::parse(MOSQUITTO, "pw").unwrap();
        let users = f.by_user();
        assert!(users["alice"].verify(b"secret"));
        assert!(!users["alice"].verify(b"Secret"));
        assert!(users["carol"].verify(b"x"));
        assert!(!users["carol"].verify(b"y"));
        assert_eq!(users["alice"].iterations(), Some(101));
    }

    #[test]
    fn the_decoy_costs_what_most_of_the_file_costs_and_matches_nothing() {
        let f = PasswordFile::parse(MOSQUITTO, "pw").unwrap();
        let pbkdf2 = &f.entries[0].1;
        let decoy = pbkdf2.decoy();
        assert_eq!(decoy.iterations(), Some(101));
        assert!(!decoy.verify(b"secret") && !decoy.verify(b""));
        assert_ne!(decoy, pbkdf2.decoy(), "a fresh salt each time");
        // Two $7$ 1000 and one $6$: the decoy is $7$ 1000.
        let a = Hash::new_pbkdf2(b"a", NonZeroU32::new(1000).unwrap());
        let b = Hash::new_pbkdf2(b"b", NonZeroU32::new(1000).unwrap());
        let sha = &f.entries[1].1;
        assert_eq!(decoy_for([sha, &a, &b]).iterations(), Some(1000));
        // A tie goes to the costlier: one $7$ 101, one $6$.
        assert_eq!(decoy_for([sha, pbkdf2]).iterations(), Some(101));
        assert!(matches!(decoy_for([sha]), Hash::Sha512 { .. }));
        assert_eq!(decoy_for([]).iterations(), Some(DEFAULT_ITERATIONS));
    }

    #[test]
    fn round_trips_its_own_hashes() {
        let h = Hash::new_pbkdf2(b"pw", NonZeroU32::new(1000).unwrap());
        let text = h.to_string();
        assert!(text.starts_with("$7$1000$"));
        let back = Hash::parse(&text).unwrap();
        assert_eq!(back, h);
        assert!(back.verify(b"pw"));
        assert!(!back.verify(b"pw2"));
    }

    #[test]
    fn bad_lines_name_the_line() {
        let e = PasswordFile::parse("alice:$7$101$abc$def\n", "pw").unwrap_err();
        assert!(e.to_string().starts_with("pw:1: "), "{e}");
        let e = PasswordFile::parse("\nbob:plaintext\n", "pw").unwrap_err();
        assert!(e.to_string().starts_with("pw:2: not a password hash"), "{e}");
        let e = PasswordFile::parse("nocolon\n", "pw").unwrap_err();
        assert_eq!(e.to_string(), "pw:1: expected user:hash");
        let e = PasswordFile::parse(":$6$aoM5FnGlGplekuDU$zUlOO\n", "pw").unwrap_err();
        assert_eq!(e.to_string(), "pw:1: no user name before ':'");
    }

    #[test]
    fn the_broker_leaves_bad_entries_out() {
        let dir = std::env::temp_dir().join(format!("midge-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pw");
        std::fs::write(&path, format!("bad:$6$\n#comment\n{MOSQUITTO}:$6$x$y\n")).unwrap();
        let (file, bad) = PasswordFile::load_skipping_bad(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(file.entries.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>(), ["alice", "carol"]);
        let lines: Vec<String> = bad.iter().map(|e| e.to_string()).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].ends_with("pw:1: a $6$ hash needs $6$SALT$HASH"), "{lines:?}");
        assert!(lines[1].ends_with("pw:5: no user name before ':'"), "{lines:?}");
    }

    #[test]
    fn user_names() {
        assert!(validate_username("alice").is_ok());
        assert_eq!(
            validate_username("a:b").unwrap_err().to_string(),
            "invalid user name 'a:b': it may not contain ':'"
        );
        assert_eq!(
            validate_username("a\u{7}b").unwrap_err().to_string(),
            "invalid user name \"a\\u{7}b\": it may not contain control characters"
        );
        assert_eq!(validate_username(""), Err(UserNameError::Empty));
    }

    #[test]
    fn hash_errors_are_typed_with_the_messages_users_see() {
        let cases = [
            ("$7$101$abc", HashError::Pbkdf2Parts, "a $7$ hash needs $7$ITERATIONS$SALT$HASH"),
            ("$7$0$abc$def", HashError::Iterations("0".into()), "invalid iteration count '0'"),
            ("$7$10$AAAA$AAAA", HashError::HashLength(3), "the hash is 3 bytes, not 64"),
            ("$6$salt", HashError::Sha512Parts, "a $6$ hash needs $6$SALT$HASH"),
            (
                "secret",
                HashError::NotAHash,
                "not a password hash (expected $7$ or $6$): a plain text file can be hashed with midge passwd -U",
            ),
        ];
        for (text, error, message) in cases {
            let e = Hash::parse(text).unwrap_err();
            assert_eq!((&e, e.to_string().as_str()), (&error, message), "{text}");
        }
        let e = Hash::parse("$6$AAAA$!").unwrap_err();
        assert!(matches!(e, HashError::Base64 { part: "hash", .. }), "{e:?}");
        assert!(e.to_string().starts_with("invalid base64 in the hash: "), "{e}");
        let e = PasswordFile::parse("a:b:c\nnocolon\n", "pw").unwrap_err();
        assert!(matches!(
            &e,
            PasswordFileError::Line { line: 1, problem: EntryError::Hash(HashError::NotAHash), .. }
        ));
    }
}
