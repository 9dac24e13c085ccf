//! Human-readable durations (`"250ms"`, `"10s"`, `"5m"`, `"1h"`) as used in config and policies.

use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "invalid duration {0:?}: expected a number followed by ms, s, m or h (e.g. \"250ms\", \"10s\")"
)]
pub struct DurationParseError(pub String);

/// Parse a duration such as `"250ms"`, `"1.5s"`, `"5m"`, `"1h"`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationParseError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| DurationParseError(text.into()))?;
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| DurationParseError(text.into()))?;
    let secs = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(DurationParseError(text.into())),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(DurationParseError(text.into()));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub(crate) mod serde_str {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "10", "s", "10 parsecs", "-1s", "1e400s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
