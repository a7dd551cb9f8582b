//! The password file's hashes: `$6$` (one round of salted SHA-512) and PBKDF2 (`$7$`) with
//! too few iterations are cheap to guess once the file leaks. Read line by line with the
//! broker's hash parser, so that every bad line is reported, not only the first.
use std::collections::HashSet;

use midge_broker::auth::password::{self, Hash, DEFAULT_ITERATIONS};

use super::Context;
use crate::finding::{Finding, Kind, Location, Severity};

pub(super) fn check(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let mut seen = HashSet::new();
    for scope in cx.model.scopes() {
        let Some(setting) = scope.file("password_file") else { continue };
        let path = cx.path(&setting.path);
        if !seen.insert(path.clone()) || !path.is_file() {
            // Checked already, or missing (the file check says so).
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let file = path.display().to_string();
        let Ok(text) = String::from_utf8(bytes) else {
            out.push(Finding::new(
                Severity::Medium,
                Kind::PasswordFileInvalid,
                setting.at.clone(),
                format!("password_file {file} is not UTF-8 text: the broker will not start"),
            ));
            continue;
        };
        check_text(&text, &file, cx.options.min_iterations, out);
    }
}

fn check_text(text: &str, file: &str, min_iterations: u32, out: &mut Vec<Finding>) {
    for l in password::lines(text) {
        let at = Location::new(file, l.number);
        let Some(user) = l.user else {
            out.push(Finding::new(
                Severity::Medium,
                Kind::PasswordFileInvalid,
                at,
                "expected user:hash: the broker refuses the whole file",
            ));
            continue;
        };
        match l.hash {
            Err(why) => out.push(Finding::new(
                Severity::Medium,
                Kind::PasswordFileInvalid,
                at,
                format!("user '{user}': {why}; the broker refuses the whole file"),
            )),
            Ok(Hash::Sha512 { .. }) => out.push(Finding::new(
                Severity::Medium,
                Kind::WeakHash,
                at,
                format!(
                    "user '{user}' has a $6$ hash, one round of salted SHA-512: a GPU tries billions a second \
                     once the file leaks; set the password again with midge passwd (PBKDF2, $7$)"
                ),
            )),
            Ok(h) => {
                if let Some(n) = h.iterations().filter(|n| *n < min_iterations) {
                    out.push(Finding::new(
                        Severity::Medium,
                        Kind::LowIterations,
                        at,
                        format!(
                            "user '{user}' has a PBKDF2 hash of {n} iterations (fewer than {min_iterations}): \
                             cheap to guess once the file leaks; set the password again with midge passwd \
                             ({DEFAULT_ITERATIONS} iterations)"
                        ),
                    ));
                }
            }
        }
    }
}
