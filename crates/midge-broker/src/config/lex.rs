//! The lexical layer of mosquitto.conf: lines into directives `(file, line, name, args)`.
//!
//! It knows nothing of what options mean, so it never fails on a line: the strict parser
//! ([`super::parse_str`]) and `midge audit` (which must read what the broker refuses) both
//! start from here. A line is an option name and its values separated by white space;
//! blank lines and lines whose first non-blank character is `#` are skipped (a `#` later
//! in a line is part of the value, as in mosquitto).
use std::path::{Path, PathBuf};

/// How deep `include_dir` may nest: deeper is a directory that includes itself.
const MAX_INCLUDE_DEPTH: usize = 16;

/// One option line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The file it is in ("<string>" or whatever name the caller gave).
    pub file: String,
    /// The line number, from 1.
    pub line: usize,
    /// The option's name (the first word).
    pub name: String,
    /// The words after the name.
    pub args: Vec<String>,
    /// Everything after the name, trimmed: what mosquitto takes for a string or path
    /// value, so a path may contain spaces.
    pub value: String,
}

impl Directive {
    /// "file:line", for messages.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// A configuration file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    /// The file cannot be read (or is not UTF-8 text).
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// An `include_dir` cannot be listed.
    #[error("{file}:{line}: cannot read include_dir {dir}: {message}")]
    IncludeDir {
        /// The file with the `include_dir` line.
        file: String,
        /// Its line.
        line: usize,
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        message: String,
    },
    /// `include_dir` nested deeper than [`MAX_INCLUDE_DEPTH`].
    #[error("{file}:{line}: include_dir nested more than {MAX_INCLUDE_DEPTH} deep: does a directory include itself?")]
    TooDeep {
        /// The file with the `include_dir` line.
        file: String,
        /// Its line.
        line: usize,
    },
}

/// The directives of configuration text; `file` names it in each directive.
pub fn lex_str(text: &str, file: &str) -> Vec<Directive> {
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut words = trimmed.split_whitespace();
        let Some(name) = words.next() else { continue };
        out.push(Directive {
            file: file.to_owned(),
            line: index + 1,
            name: name.to_owned(),
            args: words.map(str::to_owned).collect(),
            value: trimmed[name.len()..].trim().to_owned(),
        });
    }
    out
}

/// The directives of a file, named as `path` displays.
pub fn lex_file(path: &Path) -> Result<Vec<Directive>, LexError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LexError::Read { path: path.to_owned(), message: e.to_string() })?;
    Ok(lex_str(&text, &path.display().to_string()))
}

/// The directives of a file with every `include_dir DIR` replaced by the directives of the
/// `*.conf` files in DIR, in alphabetical order, as mosquitto reads them. A relative DIR is
/// taken from `base` (the broker's working directory; an empty path for the current one).
pub fn lex_file_including(path: &Path, base: &Path) -> Result<Vec<Directive>, LexError> {
    let mut out = Vec::new();
    include_into(&mut out, lex_file(path)?, base, 0)?;
    Ok(out)
}

fn include_into(
    out: &mut Vec<Directive>,
    directives: Vec<Directive>,
    base: &Path,
    depth: usize,
) -> Result<(), LexError> {
    for d in directives {
        if d.name != "include_dir" {
            out.push(d);
            continue;
        }
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(LexError::TooDeep { file: d.file, line: d.line });
        }
        let dir = base.join(&d.value);
        let err = |e: std::io::Error| LexError::IncludeDir {
            file: d.file.clone(),
            line: d.line,
            dir: dir.clone(),
            message: e.to_string(),
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(err)? {
            let path = entry.map_err(err)?.path();
            if path.extension().is_some_and(|e| e == "conf") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        for f in files {
            include_into(out, lex_file(&f)?, base, depth + 1)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_into_directives() {
        let d = lex_str("# c\n\n  listener 8883  0.0.0.0 \n\t#x\ncertfile /a b/c.crt\nflag\n", "t.conf");
        assert_eq!(d.len(), 3);
        assert_eq!((d[0].line, d[0].name.as_str()), (3, "listener"));
        assert_eq!(d[0].args, ["8883", "0.0.0.0"]);
        assert_eq!(d[0].location(), "t.conf:3");
        assert_eq!(d[1].value, "/a b/c.crt");
        assert_eq!(d[1].args, ["/a", "b/c.crt"]);
        assert!(d[2].args.is_empty() && d[2].value.is_empty());
    }

    #[test]
    fn include_dir_in_alphabetical_order() {
        let dir = std::env::temp_dir().join(format!("midge-lex-{}", std::process::id()));
        let inc = dir.join("conf.d");
        std::fs::create_dir_all(&inc).unwrap();
        std::fs::write(inc.join("b.conf"), "max_qos 1\n").unwrap();
        std::fs::write(inc.join("a.conf"), "\nlistener 1\n").unwrap();
        std::fs::write(inc.join("skip.txt"), "nope 1\n").unwrap();
        let main = dir.join("main.conf");
        std::fs::write(&main, "port 1883\ninclude_dir conf.d\nallow_anonymous false\n").unwrap();
        let d = lex_file_including(&main, &dir).unwrap();
        let names: Vec<_> = d.iter().map(|d| (d.name.as_str(), d.line)).collect();
        assert_eq!(names, [("port", 1), ("listener", 2), ("max_qos", 1), ("allow_anonymous", 3)]);
        assert!(d[1].file.ends_with("a.conf"));
        std::fs::write(&main, "include_dir missing.d\n").unwrap();
        let e = lex_file_including(&main, &dir).unwrap_err();
        assert!(matches!(e, LexError::IncludeDir { line: 1, .. }), "{e}");
        std::fs::write(inc.join("a.conf"), "include_dir conf.d\n").unwrap();
        std::fs::write(&main, "include_dir conf.d\n").unwrap();
        assert!(matches!(lex_file_including(&main, &dir).unwrap_err(), LexError::TooDeep { .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
