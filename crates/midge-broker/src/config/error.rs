//! Why a configuration cannot be used. Typed, so that a caller can tell a value that cannot
//! be read from an option midge does not have (`midge audit` reports them differently),
//! while the text stays what users see: every message names the file, the line and what is
//! wrong.
use super::lex::LexError;

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file, or a directory it includes, cannot be read.
    #[error(transparent)]
    Include(#[from] LexError),
    /// A line is wrong.
    #[error("{file}:{line}: {problem}")]
    Line {
        /// The file (or "<string>").
        file: String,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        problem: LineError,
    },
}

/// What is wrong with one line of a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// An option written without its value.
    #[error("{option} needs a value ({expected})")]
    MissingValue {
        /// The option.
        option: String,
        /// What its value is.
        expected: &'static str,
    },
    /// An option of one value written with several.
    #[error("{option} takes one value ({expected}), found {found}")]
    TooManyValues {
        /// The option.
        option: String,
        /// What its value is.
        expected: &'static str,
        /// How many values the line has.
        found: usize,
    },
    /// `listener` without a port.
    #[error("listener needs a port and optionally an address: listener PORT [ADDRESS]")]
    ListenerArgs,
    /// A port that is not a number from 0 to 65535.
    #[error("invalid port '{0}': expected a number 0-65535")]
    Port(String),
    /// A boolean that is none of `true`, `false`, `1` and `0`.
    #[error("invalid value '{0}': expected true or false")]
    Bool(String),
    /// A number out of its type's range, or not a number.
    #[error("invalid value '{value}' for {option}: expected a number from 0 to {max}")]
    Number {
        /// The option.
        option: String,
        /// The value as written.
        value: String,
        /// The largest value.
        max: u64,
    },
    /// A value an option does not take ("invalid value 'V' for OPTION: ...").
    #[error("invalid value '{value}' for {option}: expected {expected}")]
    InvalidValue {
        /// The option.
        option: String,
        /// The value as written.
        value: String,
        /// What the option takes.
        expected: &'static str,
    },
    /// A word an option does not know ("invalid OPTION 'V': ...").
    #[error("invalid {option} '{value}': expected {expected}")]
    InvalidWord {
        /// The option.
        option: String,
        /// The value as written.
        value: String,
        /// The words it knows.
        expected: &'static str,
    },
    /// `log_dest file` without the file.
    #[error("log_dest file needs a file: log_dest file PATH")]
    LogFileMissing,
    /// `tls_version` below TLS 1.2 (`tlsv1.1`, `tlsv1`): read, and refused as insecure.
    #[error("tls_version {0} is not supported: versions below TLS 1.2 are insecure")]
    OldTlsVersion(String),
    /// `per_listener_settings true` after security settings, which would then belong to no
    /// listener (as mosquitto refuses it).
    #[error("per_listener_settings must be set before any other security settings")]
    PerListenerSettingsLate,
    /// An option set to the value that restricts clients, which midge does not have yet
    /// (`use_username_as_clientid true`): ignoring it would run the broker less secure.
    #[error("{option} {value} is not supported by midge yet; refusing to start without it")]
    RestrictingValue {
        /// The option.
        option: String,
        /// The restricting value.
        value: bool,
    },
    /// A listener option that mosquitto takes only after a `listener` line (`mount_point`).
    #[error("{0} needs a listener: write it after a listener line")]
    NeedsListener(String),
    /// `include_dir` in text that is not a file (there is no directory to take it from).
    #[error("include_dir is read from a configuration file only (midge broker -c FILE)")]
    IncludeOutsideFile,
    /// A security option midge does not have yet (`psk_file`, `plugin`, `bind_interface`):
    /// running without it would leave open what the user meant to close.
    #[error("option '{0}' is not supported by midge yet; refusing to start without it")]
    Unsupported(String),
    /// An option neither midge nor mosquitto has.
    #[error("unknown option '{0}'")]
    Unknown(String),
}

impl LineError {
    /// True when the line's value was read and is refused because midge does not have what
    /// it asks for (an option, or a value of one): the line says what the user meant, so
    /// [`super::parse_lenient`] keeps it in [`super::Sources`] for `midge audit`. False for
    /// a value that cannot be read, an option nobody knows, or a line in the wrong place.
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            LineError::OldTlsVersion(_) | LineError::RestrictingValue { .. } | LineError::Unsupported(_)
        )
    }
}
