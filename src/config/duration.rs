//! Go's duration syntax, as `[timeouts]` and plugin settings are written: parsing like
//! `time.ParseDuration` and printing like `time.Duration.String`, in exact integer
//! nanoseconds.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Config, ConfigError};

/// The largest duration Go can hold (`math.MaxInt64` nanoseconds).
const MAX_NANOS: u128 = i64::MAX as u128;

const NANOS_PER_SEC: u128 = 1_000_000_000;

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3600 * NANOS_PER_SEC,
        _ => return None,
    })
}

/// Parses a Go duration such as `1h2m3.5s`, `100ms`, `-1.5s`, `+2us` or `0`.
///
/// Go allows negative durations, `Duration` cannot hold them: a negative value becomes zero,
/// which is how Go treats a timeout that has already passed.
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    let bad = || ConfigError::Duration(s.to_string());
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    // Go allows one more nanosecond below zero than above it.
    let limit = if negative { MAX_NANOS + 1 } else { MAX_NANOS };
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = digits(rest);
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut fraction = "";
        if let Some(after) = rest.strip_prefix('.') {
            let len = digits(after);
            fraction = &after[..len];
            rest = &after[len..];
        }
        if int_part.is_empty() && fraction.is_empty() {
            return Err(bad());
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = unit_nanos(&rest[..unit_len]).ok_or_else(bad)?;
        rest = &rest[unit_len..];

        let mut value: u128 = 0;
        for digit in int_part.bytes() {
            value = value * 10 + u128::from(digit - b'0');
            if value > limit {
                return Err(bad());
            }
        }
        value *= unit;
        if value > limit {
            return Err(bad());
        }
        let (numerator, scale) = leading_fraction(fraction);
        if numerator > 0 {
            // Go scales the fraction in floating point; doing the same keeps results equal.
            value += (numerator as f64 * (unit as f64 / scale)) as u128;
        }
        total += value;
        if total > limit {
            return Err(bad());
        }
    }
    if negative {
        return Ok(Duration::ZERO);
    }
    let nanos = u64::try_from(total).map_err(|_| bad())?;
    Ok(Duration::from_nanos(nanos))
}

/// The fraction's digits as an integer and the power of ten it is over; digits that would
/// overflow are dropped, as Go does.
fn leading_fraction(fraction: &str) -> (u64, f64) {
    let mut numerator: u64 = 0;
    let mut scale = 1.0;
    for digit in fraction.bytes() {
        let Some(next) = numerator
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(digit - b'0')))
            .filter(|n| i64::try_from(*n).is_ok())
        else {
            break;
        };
        numerator = next;
        scale *= 10.0;
    }
    (numerator, scale)
}

fn digits(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

/// Formats like Go: `0s`, `7ns`, `1.5µs`, `100ms`, `1.5s`, `1m0s`, `1h0m0s`.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}\u{b5}s", decimal(nanos, 3));
    }
    if nanos < NANOS_PER_SEC {
        return format!("{}ms", decimal(nanos, 6));
    }
    let seconds = decimal(nanos % (60 * NANOS_PER_SEC), 9);
    let total_minutes = nanos / (60 * NANOS_PER_SEC);
    if total_minutes == 0 {
        return format!("{seconds}s");
    }
    let hours = total_minutes / 60;
    let minutes = total_minutes % 60;
    if hours == 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{hours}h{minutes}m{seconds}s")
    }
}

/// `value / 10^places` with the fraction's trailing zeros (and a bare point) dropped.
fn decimal(value: u128, places: u32) -> String {
    let unit = 10u128.pow(places);
    let whole = value / unit;
    let fraction = value % unit;
    if fraction == 0 {
        return whole.to_string();
    }
    let width = places as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// A duration in a plugin's typed config, written as Go writes it (`"100ms"`, `"1m0s"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoDuration(pub Duration);

impl serde::Serialize for GoDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(GoDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// Every `[timeouts]` entry parsed; the first bad one is the error.
pub fn parse_timeouts(config: &Config) -> Result<BTreeMap<String, Duration>, ConfigError> {
    config
        .timeouts
        .iter()
        .map(|(key, value)| Ok((key.clone(), parse_duration(value)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        for (text, want) in [
            ("0", Duration::ZERO),
            ("+0", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("5s", secs(5)),
            ("30s", secs(30)),
            ("1478s", secs(1478)),
            ("-5s", Duration::ZERO),
            ("+5s", secs(5)),
            ("-0s", Duration::ZERO),
            ("-9223372036854775808ns", Duration::ZERO),
            ("5.0s", secs(5)),
            ("5.6s", ms(5600)),
            ("5.s", secs(5)),
            (".5s", ms(500)),
            ("1.0s", secs(1)),
            ("1.00s", secs(1)),
            ("1.004s", ms(1004)),
            ("1.0040s", ms(1004)),
            ("100.00100s", Duration::from_micros(100_001_000)),
            ("10ns", Duration::from_nanos(10)),
            ("11us", Duration::from_micros(11)),
            ("12\u{b5}s", Duration::from_micros(12)),
            ("12\u{3bc}s", Duration::from_micros(12)),
            ("13ms", ms(13)),
            ("14s", secs(14)),
            ("15m", secs(15 * 60)),
            ("16h", secs(16 * 3600)),
            ("3h30m", secs(3 * 3600 + 30 * 60)),
            ("10.5s4m", secs(4 * 60 + 10) + ms(500)),
            ("-2m3.4s", Duration::ZERO),
            ("1h2m3s4ms5us6ns", Duration::from_nanos(3_723_004_005_006)),
            ("39h9m14.425s", Duration::from_millis(140_954_425)),
            ("52763797000ns", Duration::from_nanos(52_763_797_000)),
            ("0.3333333333333333333h", secs(20 * 60)),
            (
                "9007199254740993ns",
                Duration::from_nanos(9_007_199_254_740_993),
            ),
            (
                "9223372036854775807ns",
                Duration::from_nanos(9_223_372_036_854_775_807),
            ),
            ("0.100000000000000000000h", secs(6 * 60)),
            (
                "0.830103483285477580700h",
                secs(49 * 60 + 48) + Duration::from_nanos(372_539_827),
            ),
        ] {
            assert_eq!(parse_duration(text).expect(text), want, "{text}");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "1x",
            "5 parsecs",
            "1.5.s",
            "\u{b5}s",
            "9223372036854775808ns",
            "9223372036854775.808us",
            "3000000h",
            "-9223372036854775809ns",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert_eq!(
                err.to_string(),
                format!("unable to parse {bad} into a time duration")
            );
        }
    }

    #[test]
    fn formats_like_go() {
        for (d, want) in [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(1100), "1.1\u{b5}s"),
            (Duration::from_micros(2), "2\u{b5}s"),
            (Duration::from_nanos(2_200_000), "2.2ms"),
            (Duration::from_millis(100), "100ms"),
            (Duration::from_nanos(1_000_001), "1.000001ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_nanos(3_300_000_000), "3.3s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(4 * 60 + 5), "4m5s"),
            (Duration::from_millis(4 * 60_000 + 5_001), "4m5.001s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (
                Duration::from_millis(5 * 3_600_000 + 6 * 60_000 + 7_001),
                "5h6m7.001s",
            ),
            (
                Duration::from_nanos(8 * 60_000_000_000 + 1),
                "8m0.000000001s",
            ),
            (
                Duration::from_nanos(9_223_372_036_854_775_807),
                "2562047h47m16.854775807s",
            ),
        ] {
            assert_eq!(format_duration(d), want);
            assert_eq!(parse_duration(want).expect(want), d, "{want}");
        }
    }

    #[test]
    fn timeouts_are_checked_one_by_one() {
        let mut config = Config::default();
        let parsed = parse_timeouts(&config).expect("defaults parse");
        assert_eq!(
            parsed["io.containerd.timeout.shim.load"],
            Duration::from_secs(5)
        );
        assert_eq!(parsed["io.containerd.timeout.bolt.open"], Duration::ZERO);
        config
            .timeouts
            .insert("io.containerd.timeout.x".into(), "5 parsecs".into());
        assert_eq!(
            parse_timeouts(&config).expect_err("bad").to_string(),
            "unable to parse 5 parsecs into a time duration"
        );
    }
}
