//! Go's duration strings (`time.ParseDuration`), as Navarch's scenarios
//! write them: `0`, `500ms`, `5s`, `1m30s`, `1.5h`, `2h45m`, `250us`.
//!
//! The grammar is Go's: an optional sign, then one or more numbers (digits
//! with an optional fraction, `1.5`, `.5`, `1.`) each followed by a unit
//! (`ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`); a bare `0` is the only
//! number allowed without a unit. Flotilla keeps milliseconds: a length is
//! rounded *up* to a whole millisecond, so a nonzero duration never becomes
//! zero (`500us` is 1 ms). A negative duration is an error (nothing in a
//! scenario can happen before it starts), and so is one beyond Go's range
//! (about 292 years), which Go rejects too.

use serde::de::{self, Deserializer, Visitor};
use std::fmt;

const NANOS_PER_MILLI: u128 = 1_000_000;
/// Go's `time.Duration` is an `int64` of nanoseconds.
const MAX_NANOS: u128 = i64::MAX as u128;
/// Fraction digits past this are below a nanosecond for every unit (and
/// past any precision of the `f64` Go computes fractions with).
const MAX_FRACTION_DIGITS: usize = 18;
const UNITS: &str = "ns, us, µs, ms, s, m, h";

/// Parses a Go duration string into milliseconds, rounding up.
pub fn parse_millis(text: &str) -> Result<u64, String> {
    let nanos = parse_nanos(text)?;
    // MAX_NANOS / 1e6 fits a u64, so the cast cannot truncate.
    Ok(nanos.div_ceil(NANOS_PER_MILLI) as u64)
}

/// Parses a Go duration string into nanoseconds.
fn parse_nanos(text: &str) -> Result<u128, String> {
    let (negative, body) = split_sign(text);
    if body == "0" {
        return Ok(0);
    }
    if body.is_empty() {
        return Err(format!("{text:?} is not a duration (e.g. 30s, 5m, 1h30m)"));
    }
    if body.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(missing_unit(text));
    }
    let mut total = 0u128;
    let mut rest = body;
    while !rest.is_empty() {
        let (nanos, tail) = component(text, rest)?;
        total = total.saturating_add(nanos);
        if total > MAX_NANOS {
            return Err(format!(
                "{text:?} is too long (Go's limit is about 2562047h)"
            ));
        }
        rest = tail;
    }
    if negative && total > 0 {
        return Err(format!("{text:?} is negative: durations must be >= 0"));
    }
    Ok(total)
}

fn split_sign(text: &str) -> (bool, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    }
}

fn missing_unit(text: &str) -> String {
    format!("{text:?} has no unit: write e.g. {text}s ({UNITS}); only 0 may go without one")
}

/// One `number unit` component of `rest`: its length in nanoseconds and
/// what follows it. `text` is the whole string, for messages.
fn component<'a>(text: &str, rest: &'a str) -> Result<(u128, &'a str), String> {
    let (whole, fraction, after) =
        number(rest).ok_or_else(|| format!("{text:?} is not a duration (e.g. 30s, 5m, 1h30m)"))?;
    let unit_len = after
        .find(|c: char| c == '.' || c.is_ascii_digit())
        .unwrap_or(after.len());
    let (unit, tail) = after.split_at(unit_len);
    if unit.is_empty() {
        return Err(missing_unit(text));
    }
    let scale = unit_nanos(unit)
        .ok_or_else(|| format!("unknown unit {unit:?} in {text:?} (units: {UNITS})"))?;
    Ok((scaled(text, whole, fraction, scale)?, tail))
}

/// Splits a leading `digits[.digits]` (at least one digit) off `s`.
fn number(s: &str) -> Option<(&str, &str, &str)> {
    let whole_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (whole, rest) = s.split_at(whole_len);
    let (fraction, rest) = match rest.strip_prefix('.') {
        Some(after_dot) => {
            let len = after_dot
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_dot.len());
            after_dot.split_at(len)
        }
        None => ("", rest),
    };
    let has_digits = !(whole.is_empty() && fraction.is_empty());
    has_digits.then_some((whole, fraction, rest))
}

/// `whole.fraction` times `scale` nanoseconds, the fraction truncated to
/// whole nanoseconds (as Go does).
fn scaled(text: &str, whole: &str, fraction: &str, scale: u128) -> Result<u128, String> {
    let too_long = || format!("{text:?} is too long (Go's limit is about 2562047h)");
    let mut whole_value = 0u128;
    for digit in whole.bytes() {
        whole_value = whole_value * 10 + u128::from(digit - b'0');
        if whole_value > MAX_NANOS {
            return Err(too_long());
        }
    }
    let fraction = &fraction[..fraction.len().min(MAX_FRACTION_DIGITS)];
    let (mut numerator, mut denominator) = (0u128, 1u128);
    for digit in fraction.bytes() {
        numerator = numerator * 10 + u128::from(digit - b'0');
        denominator *= 10;
    }
    let nanos = whole_value
        .checked_mul(scale)
        .ok_or_else(too_long)?
        .saturating_add(numerator * scale / denominator);
    Ok(nanos)
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Formats milliseconds as Go's `Duration.String` does: `0s`, `250ms`,
/// `1.5s`, `1m30s`, `2h0m0s`. [`parse_millis`] reads it back exactly.
pub fn format_millis(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (hours, minutes) = (ms / 3_600_000, ms / 60_000 % 60);
    let seconds = format_seconds(ms % 60_000);
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

/// `12s`, `12.5s`, `0.025s`: seconds with the milliseconds as a trimmed fraction.
fn format_seconds(ms: u64) -> String {
    let (whole, fraction) = (ms / 1000, ms % 1000);
    if fraction == 0 {
        return format!("{whole}s");
    }
    let digits = format!("{fraction:03}");
    format!("{whole}.{}s", digits.trim_end_matches('0'))
}

/// Deserializes a Go duration into milliseconds (for `deserialize_with`).
/// YAML numbers are accepted only as `0`, as Go reads them as text.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(MillisVisitor)
}

struct MillisVisitor;

impl Visitor<'_> for MillisVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration such as 500ms, 30s, 1m30s or 1.5h")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse_millis(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        Err(E::custom(missing_unit(&v.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_go_durations() {
        let cases = [
            ("0", 0),
            ("-0", 0),
            ("+5s", 5_000),
            ("500ms", 500),
            ("5s", 5_000),
            ("1m30s", 90_000),
            ("1.5h", 5_400_000),
            ("2h45m", 9_900_000),
            ("1.s", 1_000),
            (".5s", 500),
            ("1500us", 2),
            ("250µs", 1),
            ("250μs", 1),
            ("1ns", 1),
            ("0s", 0),
            ("0.0001ms", 1),
            ("1h1m1s1ms1us1ns", 3_661_002),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_millis(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        for text in [
            "", "s", ".s", "1", "30", "1.5", "1d", "5 s", " 5s", "1h-5m", "-",
        ] {
            assert!(parse_millis(text).is_err(), "{text} should fail");
        }
        assert!(parse_millis("30").unwrap_err().contains("30s"));
        assert!(parse_millis("-5s").unwrap_err().contains("negative"));
        assert!(parse_millis("3000000h").unwrap_err().contains("too long"));
        assert!(parse_millis("1d")
            .unwrap_err()
            .contains("unknown unit \"d\""));
    }

    #[test]
    fn formats_as_go_does() {
        assert_eq!(format_millis(0), "0s");
        assert_eq!(format_millis(250), "250ms");
        assert_eq!(format_millis(1_500), "1.5s");
        assert_eq!(format_millis(90_000), "1m30s");
        assert_eq!(format_millis(7_200_000), "2h0m0s");
        assert_eq!(format_millis(3_600_025), "1h0m0.025s");
    }

    proptest! {
        #[test]
        fn formatted_durations_read_back(ms in 0u64..=9_223_372_036_854) {
            prop_assert_eq!(parse_millis(&format_millis(ms)), Ok(ms));
        }

        #[test]
        fn components_add_up(h in 0u64..10_000, m in 0u64..1_000, s in 0u64..1_000, ms in 0u64..1_000) {
            let text = format!("{h}h{m}m{s}s{ms}ms");
            prop_assert_eq!(parse_millis(&text), Ok(((h * 60 + m) * 60 + s) * 1_000 + ms));
        }

        #[test]
        fn fractions_are_exact_to_the_millisecond(whole in 0u64..100_000, tenths in 0u64..10) {
            let text = format!("{whole}.{tenths}s");
            prop_assert_eq!(parse_millis(&text), Ok(whole * 1_000 + tenths * 100));
        }

        #[test]
        fn never_panics_on_any_text(text in "\\PC{0,24}") {
            let _ = parse_millis(&text);
        }

        #[test]
        fn never_panics_on_near_misses(text in "[-+]?([0-9]{0,25}\\.?[0-9]{0,25}(ns|us|µs|ms|s|m|h|d|)){1,4}") {
            let _ = parse_millis(&text);
        }
    }
}
