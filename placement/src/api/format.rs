//! Value formats PD's HTTP API uses: uppercase hex keys, human byte sizes,
//! RFC 3339 times and Go-style durations.

use std::fmt::Write;

pub fn hex_upper(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// Binary units with 4 significant digits, like go-units `BytesSize`:
/// `0B`, `1000B`, `1.5KiB`, `931.5GiB`.
pub fn byte_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let int_digits = if value < 1.0 {
        1
    } else {
        value.log10().floor() as usize + 1
    };
    let decimals = 4usize.saturating_sub(int_digits);
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", UNITS[unit])
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2024-05-01T12:34:56.789Z` (milliseconds only when non-zero).
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = i64::try_from(unix_ms / 1000).unwrap_or(i64::MAX);
    let ms = unix_ms % 1000;
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let mut out = format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}");
    if ms != 0 {
        let _ = write!(out, ".{ms:03}");
    }
    out.push('Z');
    out
}

/// Go's `time.Duration` string at millisecond precision: `0s`, `250ms`,
/// `1.5s`, `2m0s`, `1h2m3.004s`.
pub fn go_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = ms % 3_600_000 / 60_000;
    let secs = ms % 60_000 / 1000;
    let frac = ms % 1000;
    let mut out = String::new();
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    let _ = write!(out, "{secs}");
    if frac > 0 {
        let digits = format!("{frac:03}");
        let _ = write!(out, ".{}", digits.trim_end_matches('0'));
    }
    out.push('s');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_uppercase() {
        assert_eq!(hex_upper(b""), "");
        assert_eq!(hex_upper(&[0x74, 0x80, 0xff, 0x0a]), "7480FF0A");
    }

    #[test]
    fn byte_sizes_like_go_units() {
        assert_eq!(byte_size(0), "0B");
        assert_eq!(byte_size(1000), "1000B");
        assert_eq!(byte_size(1024), "1KiB");
        assert_eq!(byte_size(1536), "1.5KiB");
        assert_eq!(byte_size(1_000_000_000_000), "931.3GiB");
        assert_eq!(byte_size(u64::MAX), "16EiB");
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(go_duration_ms(0), "0s");
        assert_eq!(go_duration_ms(250), "250ms");
        assert_eq!(go_duration_ms(1500), "1.5s");
        assert_eq!(go_duration_ms(120_000), "2m0s");
        assert_eq!(go_duration_ms(3_723_004), "1h2m3.004s");
    }
}
