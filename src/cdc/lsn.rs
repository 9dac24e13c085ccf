//! WAL positions and PostgreSQL timestamps as the replication protocol carries them.
//!
//! An LSN is a plain `u64` byte position in the WAL; PostgreSQL prints it as two hex halves
//! (`16/B374D848`), and so do we, so log lines and `SHOW STORES` can be compared with
//! `pg_current_wal_lsn()` by eye. Timestamps on the wire are microseconds since
//! 2000-01-01 00:00:00 UTC (PostgreSQL's epoch), not the Unix epoch.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A WAL position (log sequence number). `Lsn(0)` is PostgreSQL's `InvalidXLogRecPtr`, which
/// `START_REPLICATION` reads as "wherever the slot's confirmed position is".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    /// Bytes from `earlier` to `self`, 0 when `earlier` is not earlier.
    pub fn bytes_after(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The text is not `X/X` with two hex numbers of at most 8 digits each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {0:?}: expected two hex numbers separated by '/', e.g. 16/B374D848")]
pub struct LsnParseError(pub String);

impl FromStr for Lsn {
    type Err = LsnParseError;

    fn from_str(text: &str) -> Result<Lsn, LsnParseError> {
        let bad = || LsnParseError(text.to_string());
        let (hi, lo) = text.trim().split_once('/').ok_or_else(bad)?;
        let half = |s: &str| {
            if s.is_empty() || s.len() > 8 {
                return Err(bad());
            }
            u32::from_str_radix(s, 16).map_err(|_| bad())
        };
        Ok(Lsn((u64::from(half(hi)?) << 32) | u64::from(half(lo)?)))
    }
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Lsn {
        Lsn(v)
    }
}

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_OFFSET_SECS: u64 = 946_684_800;

/// A wire timestamp (µs since 2000-01-01 UTC) as a `SystemTime`. Values that do not fit
/// (corrupt input) clamp to the PostgreSQL epoch rather than panic.
pub fn pg_time_to_system(micros: i64) -> SystemTime {
    let epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_OFFSET_SECS);
    let delta = Duration::from_micros(micros.unsigned_abs());
    let t = if micros >= 0 {
        epoch.checked_add(delta)
    } else {
        epoch.checked_sub(delta)
    };
    t.unwrap_or(epoch)
}

/// A `SystemTime` as a wire timestamp (µs since 2000-01-01 UTC), saturating.
pub fn system_to_pg_time(t: SystemTime) -> i64 {
    let epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_OFFSET_SECS);
    match t.duration_since(epoch) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |v| -v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_and_parses_like_postgres() {
        let l = Lsn(0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!("16/B374D848".parse::<Lsn>(), Ok(l));
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!("0/0".parse::<Lsn>(), Ok(Lsn(0)));
        assert_eq!(Lsn(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
        assert_eq!("ffffffff/ffffffff".parse::<Lsn>(), Ok(Lsn(u64::MAX)));
        for bad in ["", "1", "1/", "/1", "x/1", "1/123456789", "1/2/3"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad}");
        }
    }

    #[test]
    fn byte_distance_saturates() {
        assert_eq!(Lsn(10).bytes_after(Lsn(4)), 6);
        assert_eq!(Lsn(4).bytes_after(Lsn(10)), 0);
    }

    #[test]
    fn timestamps_round_trip_and_clamp() {
        assert_eq!(
            pg_time_to_system(0),
            UNIX_EPOCH + Duration::from_secs(946_684_800)
        );
        let now = SystemTime::now();
        let back = pg_time_to_system(system_to_pg_time(now));
        let diff = match back.duration_since(now) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        assert!(diff < Duration::from_micros(1));
        let _ = pg_time_to_system(i64::MIN);
        let _ = pg_time_to_system(i64::MAX);
        assert_eq!(system_to_pg_time(UNIX_EPOCH), -946_684_800_000_000);
    }
}
