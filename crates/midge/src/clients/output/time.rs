//! The reception time as mosquitto_sub prints it: `localtime` in the zone glibc would pick,
//! then glibc's `strftime` in the C locale, for `%I`, `%U`, `@X` and the JSON `tst`.
//!
//! jiff's `strftime` does the conversions (with its POSIX locale for `%c`, `%r`, `%x` and
//! `%X`): its output was compared with glibc's over years 1 to 9999 in several zones. Where
//! the two differ, this module says so and does what glibc does.
use std::time::SystemTime;

use jiff::fmt::strtime::{BrokenDownTime, Config, PosixCustom};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// The time zone mosquitto_sub would use: `TZ` (a zone name, a file, or a POSIX rule), else
/// `/etc/localtime`, else UTC.
pub fn local_time_zone() -> TimeZone {
    match std::env::var_os("TZ") {
        // glibc reads an empty TZ as UTC.
        Some(tz) if tz.is_empty() => TimeZone::UTC,
        Some(tz) => TimeZone::try_system().unwrap_or_else(|_| unknown_zone(&tz.to_string_lossy())),
        None => TimeZone::try_system().unwrap_or(TimeZone::UTC),
    }
}

/// glibc's reading of a TZ that names no zone: UTC, under the name its leading letters make
/// when there are at least three of them (`TZ=Europe/Nowhere` prints `Europe` for `@Z`).
fn unknown_zone(tz: &str) -> TimeZone {
    let letters: String = tz.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    if letters.len() >= 3 {
        TimeZone::posix(&format!("{letters}0")).unwrap_or(TimeZone::UTC)
    } else {
        TimeZone::UTC
    }
}

/// `format`, strftime's (as glibc's in the C locale), at `at` in `tz`: mosquitto's
/// `log_timestamp_format`.
pub fn strftime(format: &str, at: SystemTime, tz: &TimeZone) -> String {
    let t = LocalTime::new(at, tz);
    let mut out = Vec::new();
    let mut bytes = format.bytes();
    while let Some(b) = bytes.next() {
        match (b, b == b'%') {
            (_, true) => match bytes.next() {
                Some(c) => t.strftime(c, &mut out),
                None => out.push(b'%'),
            },
            (b, false) => out.push(b),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A reception time, broken down from its whole second as `localtime(&ts.tv_sec)` does, so
/// that `@s` and every field agree with `%U` before the epoch too.
pub(super) struct LocalTime {
    zoned: Zoned,
    /// Seconds since the epoch, rounded down.
    pub(super) epoch: i64,
    /// Nanoseconds within the second: they count up even before the epoch, as a timespec's do.
    pub(super) nanos: u32,
}

impl LocalTime {
    pub(super) fn new(at: SystemTime, tz: &TimeZone) -> LocalTime {
        let ts = Timestamp::try_from(at).unwrap_or(Timestamp::UNIX_EPOCH);
        let mut epoch = ts.as_second();
        let mut nanos = ts.subsec_nanosecond();
        if nanos < 0 {
            epoch -= 1;
            nanos += 1_000_000_000;
        }
        let second = Timestamp::from_second(epoch).unwrap_or(ts);
        LocalTime { zoned: second.to_zoned(tz.clone()), epoch, nanos: nanos as u32 }
    }

    /// jiff's `strftime`. Lenient, so that it cannot fail: every directive given here is one
    /// it knows anyway.
    fn jiff(&self, format: &str) -> String {
        let config = Config::new().custom(PosixCustom::new()).lenient(true);
        BrokenDownTime::from(&self.zoned).to_string_with_config(&config, format).unwrap_or_default()
    }

    /// strftime's `%z`, +hhmm, by hand: glibc drops the seconds of an offset (a POSIX TZ may
    /// have them), where jiff prints +hhmmss.
    fn numeric_zone(&self) -> String {
        let offset = self.zoned.offset().seconds();
        let sign = if offset < 0 { '-' } else { '+' };
        let minutes = offset.unsigned_abs() / 60;
        format!("{sign}{:02}{:02}", minutes / 60, minutes % 60)
    }

    /// `%I`: strftime's `%FT%T%z`.
    pub(super) fn iso8601(&self) -> String {
        self.jiff("%-Y-%m-%dT%H:%M:%S") + &self.numeric_zone()
    }

    /// The JSON `tst`: mosquitto prints the local time with microseconds, then a literal `Z`
    /// (wrongly: the time is not UTC), then the offset.
    pub(super) fn json_timestamp(&self) -> String {
        format!("{}.{:06}Z{}", self.jiff("%-Y-%m-%dT%H:%M:%S"), self.nanos / 1000, self.numeric_zone())
    }

    /// glibc's `strftime` with the one-conversion format `%c`, in the C locale.
    pub(super) fn strftime(&self, c: u8, out: &mut Vec<u8>) {
        let directive = [b'%', c];
        let format = match c {
            // glibc does not pad years to four digits; jiff does unless told not to.
            b'Y' => "%-Y",
            b'G' => "%-G",
            b'F' => "%-Y-%m-%d",
            b'c' => "%a %b %e %H:%M:%S %-Y",
            b'z' => {
                out.extend_from_slice(self.numeric_zone().as_bytes());
                return;
            }
            b'a' | b'A' | b'b' | b'B' | b'C' | b'd' | b'D' | b'e' | b'g' | b'h' | b'H' | b'I' | b'j'
            | b'k' | b'l' | b'm' | b'M' | b'n' | b'p' | b'P' | b'r' | b'R' | b's' | b'S' | b't' | b'T'
            | b'u' | b'U' | b'V' | b'w' | b'W' | b'x' | b'X' | b'y' | b'Z' | b'%' => {
                // ASCII, so never an error.
                std::str::from_utf8(&directive).unwrap_or_default()
            }
            // A width with no conversion: glibc prints "%N" padded to that width.
            b'1'..=b'9' => {
                let w = usize::from(c - b'0');
                out.resize(out.len() + w.saturating_sub(2), b' ');
                out.extend_from_slice(&directive);
                return;
            }
            // Anything else is copied: flags, the E and O modifiers, other bytes, and the
            // letters glibc does not know but jiff does (`%q`, `%N`, `%f`, `%Q`).
            _ => {
                out.extend_from_slice(&directive);
                return;
            }
        };
        out.extend_from_slice(self.jiff(format).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn conversion(t: &LocalTime, c: u8) -> String {
        let mut out = Vec::new();
        t.strftime(c, &mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    /// Time zones: each expected string is what mosquitto_sub printed for `-F '%I @Z @N' -N`
    /// (or `'%U @s @N'`) with that TZ, run under libfaketime at the same instant.
    #[test]
    fn time_zones() {
        let at = UNIX_EPOCH + Duration::new(1_588_801_680, 5);
        for (tz, expected) in [
            ("UTC0", "2020-05-06T21:48:00+0000 UTC 000000005"),
            ("CET-1CEST,M3.5.0,M10.5.0/3", "2020-05-06T23:48:00+0200 CEST 000000005"),
            ("<+03>-3", "2020-05-07T00:48:00+0300 +03 000000005"),
            ("NST3:30NDT,M3.2.0,M11.1.0", "2020-05-06T19:18:00-0230 NDT 000000005"),
        ] {
            let t = LocalTime::new(at, &TimeZone::posix(tz).expect("POSIX TZ"));
            assert_eq!(format!("{} {} {:09}", t.iso8601(), conversion(&t, b'Z'), t.nanos), expected);
        }
        // Before the epoch, nanoseconds still count up within the second, as timespec's do.
        let t = LocalTime::new(UNIX_EPOCH - Duration::new(1, 250_000_000), &TimeZone::UTC);
        assert_eq!(
            format!("{}.{:09} {} {:09}", t.epoch, t.nanos, conversion(&t, b's'), t.nanos),
            "-2.750000000 -2 750000000"
        );
        // A TZ naming no zone: mosquitto_sub printed `+0000 Foo` for TZ=Foo, `+0000 Europe` for
        // TZ=Europe/Nowhere.
        for (tz, name) in [("Foo", "Foo"), ("Europe/Nowhere", "Europe")] {
            let zone = unknown_zone(tz);
            let info = zone.to_offset_info(Timestamp::UNIX_EPOCH);
            assert_eq!((info.offset().seconds(), info.abbreviation()), (0, name));
        }
    }

    /// Where jiff and glibc differ. The expected strings are glibc's `strftime` for the same
    /// instant and TZ (a C program calling it).
    #[test]
    fn what_glibc_prints_where_jiff_differs() {
        // Year 2: glibc pads no year to four digits.
        let t = LocalTime::new(UNIX_EPOCH - Duration::from_secs(62_101_036_800), &TimeZone::UTC);
        let got: Vec<String> = b"YGFcCyg".iter().map(|&c| conversion(&t, c)).collect();
        assert_eq!(got, ["2", "2", "2-02-05", "Tue Feb  5 00:00:00 2", "0", "02", "02"]);
        // An offset with seconds: glibc's %z drops them.
        let t = LocalTime::new(UNIX_EPOCH, &TimeZone::posix("<+0130>-1:30:15").expect("POSIX TZ"));
        assert_eq!(conversion(&t, b'z'), "+0130");
        assert_eq!(t.iso8601(), "1970-01-01T01:30:15+0130");
        // Conversions glibc does not know are printed as they are; jiff knows these.
        let got: Vec<String> = b"qNfQ".iter().map(|&c| conversion(&t, c)).collect();
        assert_eq!(got, ["%q", "%N", "%f", "%Q"]);
    }
}
