//! Numbers read from the command line as mosquitto's clients read them, with C's `atoi`,
//! `atol`, `atof` and `strtol(s, &end, 0)`: the same values are accepted, and the errors
//! print the same numbers ("Error: Invalid QoS given: -1").

/// The leading integer of `s` as C's `strtol` reads it in `radix`: leading white space, a
/// sign, digits up to the first that is not one; saturated at the ends of `i64`. Also gives
/// how many bytes were read (0 when there is no digit).
fn leading_integer(s: &str, radix: u32) -> (i64, usize) {
    let b = s.as_bytes();
    let mut i = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    let negative = match b.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits = b[i..].iter().take_while(|c| (**c as char).is_digit(radix)).count();
    if digits == 0 {
        return (0, 0);
    }
    let magnitude = b[i..i + digits].iter().fold(0i64, |n, c| {
        let d = i64::from((*c as char).to_digit(radix).unwrap_or(0));
        n.saturating_mul(i64::from(radix)).saturating_add(d)
    });
    (if negative { magnitude.saturating_neg() } else { magnitude }, i + digits)
}

/// C's `atol`: 0 when `s` does not start with a number.
pub fn atol(s: &str) -> i64 {
    leading_integer(s, 10).0
}

/// C's `atoi` (glibc's: `atol` cut to an `int`).
pub fn atoi(s: &str) -> i32 {
    atol(s) as i32
}

/// C's `atof`: the longest leading part of `s` that is a number, else 0.
pub fn atof(s: &str) -> f64 {
    let t = s.trim_start();
    (1..=t.len()).rev().filter(|n| t.is_char_boundary(*n)).find_map(|n| t[..n].parse().ok()).unwrap_or(0.0)
}

/// `strtol(s, &end, 0)` where all of `s` must be the number: decimal, `0x` hexadecimal or
/// `0` octal, with a sign; `None` when anything else is left.
pub fn strtol_whole(s: &str) -> Option<i64> {
    let body = s.trim_start().trim_start_matches(['+', '-']);
    let (radix, skip) = if body.len() > 2 && (body.starts_with("0x") || body.starts_with("0X")) {
        (16, s.len() - body.len() + 2)
    } else if body.len() > 1 && body.starts_with('0') {
        (8, 0)
    } else {
        (10, 0)
    };
    let (value, read) = if skip > 0 {
        // The digits after "0x", with the sign before it.
        let (magnitude, read) = leading_integer(&body[2..], 16);
        let value = if s.trim_start().starts_with('-') { magnitude.saturating_neg() } else { magnitude };
        (value, if read == 0 { 0 } else { skip + read })
    } else {
        leading_integer(s, radix)
    };
    (read > 0 && read == s.len()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_c_reads_them() {
        assert_eq!(atoi("12abc"), 12);
        assert_eq!(atoi("abc"), 0);
        assert_eq!(atoi(" -1"), -1);
        assert_eq!(atoi("4294967296"), 0);
        assert_eq!(atol("4294967296"), 4_294_967_296);
        assert_eq!(atof("0.5s"), 0.5);
        assert_eq!(atof("-1"), -1.0);
        assert_eq!(atof("x"), 0.0);
        assert_eq!(strtol_whole("42"), Some(42));
        assert_eq!(strtol_whole("-1"), Some(-1));
        assert_eq!(strtol_whole("0x10"), Some(16));
        assert_eq!(strtol_whole("010"), Some(8));
        assert_eq!(strtol_whole("0"), Some(0));
        assert_eq!(strtol_whole("A"), None);
        assert_eq!(strtol_whole("1s"), None);
        assert_eq!(strtol_whole(""), None);
        assert_eq!(strtol_whole("09"), None);
    }
}
