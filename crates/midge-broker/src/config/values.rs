//! The values of options: booleans, ports and numbers, read as mosquitto reads them.
use super::error::LineError;
use super::lex::Directive;

/// The value of an option of one value.
pub(super) fn one<'d>(d: &'d Directive, expected: &'static str) -> Result<&'d str, LineError> {
    match d.args.as_slice() {
        [v] => Ok(v),
        [] => Err(LineError::MissingValue { option: d.name.clone(), expected }),
        many => Err(LineError::TooManyValues { option: d.name.clone(), expected, found: many.len() }),
    }
}

/// The value of an option that is true or false, as [`parse_bool`] reads it; an error names
/// the option ("invalid value 'maybe' for try_private: expected true or false").
pub(super) fn flag(d: &Directive) -> Result<bool, LineError> {
    let v = one(d, "true or false")?;
    parse_bool(v).map_err(|_| LineError::InvalidValue {
        option: d.name.clone(),
        value: v.to_owned(),
        expected: "true or false",
    })
}

/// A boolean option's value: `true` or `false` (mosquitto takes `1` and `0` too).
pub fn parse_bool(s: &str) -> Result<bool, LineError> {
    match s {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(LineError::Bool(s.to_owned())),
    }
}

/// A port, 0 to 65535.
pub(super) fn parse_port(s: &str) -> Result<u16, LineError> {
    s.parse().map_err(|_| LineError::Port(s.to_owned()))
}

/// The unsigned integer types options are read into, with their range for messages.
pub(super) trait Unsigned: std::str::FromStr {
    const MAX: u64;
}

macro_rules! unsigned {
    ($($t:ty),*) => { $(impl Unsigned for $t { const MAX: u64 = <$t>::MAX as u64; })* };
}
unsigned!(u16, u32, u64, usize);

/// The number `s` of option `name`, in `T`'s range.
pub(super) fn parse_num<T: Unsigned>(name: &str, s: &str) -> Result<T, LineError> {
    s.parse().map_err(|_| LineError::Number { option: name.to_owned(), value: s.to_owned(), max: T::MAX })
}
