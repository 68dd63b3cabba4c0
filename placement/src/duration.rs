//! Durations in config files and flags.
//!
//! Written like Go durations, as PD's TOML is (`"30m"`, `"1h30m"`, `"2s"`,
//! `"500ms"`, `"1.5s"`), or as a bare integer number of milliseconds (TOML
//! integer or string of digits). Shown back Go-style (`"30m0s"`), which is
//! what PD's `/config` prints.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ConfigDuration {
    ms: u64,
}

impl ConfigDuration {
    pub const fn from_millis(ms: u64) -> Self {
        ConfigDuration { ms }
    }

    pub const fn from_secs(secs: u64) -> Self {
        ConfigDuration { ms: secs * 1000 }
    }

    pub const fn as_millis(self) -> u64 {
        self.ms
    }

    pub const fn as_duration(self) -> Duration {
        Duration::from_millis(self.ms)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {reason} (use e.g. \"30m\", \"2s\", \"500ms\" or milliseconds)"
)]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

impl FromStr for ConfigDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| DurationError {
            input: text.to_string(),
            reason,
        };
        let s = text.trim();
        if s.is_empty() {
            return Err(fail("empty"));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse::<u64>()
                .map(ConfigDuration::from_millis)
                .map_err(|_| fail("too large"));
        }
        let mut rest = s;
        let mut total_ms = 0f64;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| fail("missing unit"))?;
            if number_len == 0 {
                return Err(fail("expected a number"));
            }
            let number: f64 = rest[..number_len].parse().map_err(|_| fail("bad number"))?;
            rest = &rest[number_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit_ms = match &rest[..unit_len] {
                "ms" => 1.0,
                "s" => 1_000.0,
                "m" => 60_000.0,
                "h" => 3_600_000.0,
                _ => return Err(fail("unknown unit (ms, s, m, h)")),
            };
            rest = &rest[unit_len..];
            total_ms += number * unit_ms;
        }
        if !total_ms.is_finite() || total_ms >= u64::MAX as f64 {
            return Err(fail("too large"));
        }
        Ok(ConfigDuration::from_millis(total_ms.round() as u64))
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::api::go_duration_ms(self.ms))
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = ConfigDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like \"30m\" or \"500ms\", or milliseconds")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ConfigDuration::from_millis(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(ConfigDuration::from_millis)
                    .map_err(|_| E::custom(format!("negative duration {v}")))
            }
        }

        deserializer.deserialize_any(DurationVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ms(text: &str) -> u64 {
        text.parse::<ConfigDuration>().unwrap().as_millis()
    }

    #[test]
    fn parses_go_style_and_milliseconds() {
        assert_eq!(ms("30m"), 1_800_000);
        assert_eq!(ms("1h30m"), 5_400_000);
        assert_eq!(ms("2s"), 2_000);
        assert_eq!(ms("500ms"), 500);
        assert_eq!(ms("1.5s"), 1_500);
        assert_eq!(ms("1m30s250ms"), 90_250);
        assert_eq!(ms("1500"), 1_500);
        assert_eq!(ms(" 0 "), 0);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "m",
            "10x",
            "1.2.3s",
            "-5s",
            "s10",
            "10 s",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<ConfigDuration>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn round_trips_through_toml_and_json() {
        #[derive(Deserialize, Serialize)]
        struct T {
            d: ConfigDuration,
        }
        let t: T = toml::from_str("d = \"2s\"").unwrap();
        assert_eq!(t.d.as_millis(), 2_000);
        let t: T = toml::from_str("d = 250").unwrap();
        assert_eq!(t.d.as_millis(), 250);
        assert!(toml::from_str::<T>("d = -1").is_err());
        assert!(toml::from_str::<T>("d = \"soon\"").is_err());
        let json = serde_json::to_string(&T {
            d: ConfigDuration::from_secs(1800),
        })
        .unwrap();
        assert_eq!(json, r#"{"d":"30m0s"}"#);
    }
}
