//! Output profiles: the session settings a value's text form depends on.
//!
//! Postgres prints timestamps per `TimeZone`, `DateStyle` and `IntervalStyle`, floats per
//! `extra_float_digits`, bytea per `bytea_output`, money per `lc_monetary`. A cached text
//! value is served only to a session whose profile equals the one it was produced under, and
//! the migrator produces values for a profile by setting exactly these on its own connection.
//! Binary values depend on none of them (only on `client_encoding`, which must be UTF8 for
//! the cache to serve at all), but are kept per profile too: one fill makes both.
//!
//! Postgres reports the first three to the client (ParameterStatus), so the proxy always knows
//! them. The other three it does not report: the proxy takes them from the start-up packet
//! when the client set them there, else the server's defaults, and gives up (no cache for the
//! session) when the session changed one with SET, when a database or role default might
//! apply, or when the start-up packet carries `options`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// Settings Postgres reports with ParameterStatus that change text output.
pub const REPORTED: [&str; 3] = ["TimeZone", "DateStyle", "IntervalStyle"];

/// Settings Postgres does not report that change text output.
pub const UNREPORTED: [&str; 3] = ["extra_float_digits", "bytea_output", "lc_monetary"];

/// Most distinct profiles served at once; sessions with another one pass through.
pub const MAX_PROFILES: usize = 8;

/// One combination of output settings, in [`REPORTED`] then [`UNREPORTED`] order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutputProfile {
    pub values: [Box<str>; 6],
}

impl OutputProfile {
    /// `(name, value)` pairs, for `SET` on a fill connection and for display.
    pub fn settings(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        REPORTED
            .iter()
            .chain(UNREPORTED.iter())
            .copied()
            .zip(self.values.iter().map(|v| &**v))
    }

    /// One line for logs and `SHOW STORES`.
    pub fn describe(&self) -> String {
        self.settings()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Profiles in use, numbered in order of first use; a number is never reused for another
/// profile within one proxy's life, so cache entries keyed by it stay unambiguous.
#[derive(Debug, Default)]
pub struct ProfileRegistry {
    list: RwLock<Vec<Registered>>,
}

#[derive(Debug)]
struct Registered {
    profile: Arc<OutputProfile>,
    /// Milliseconds since `epoch` of the last use (for choosing what to fill).
    last_used_ms: AtomicU64,
}

impl ProfileRegistry {
    /// The profile's number, registering it if there is room.
    pub fn id(&self, profile: &OutputProfile, epoch: Instant) -> Option<u32> {
        let now = epoch.elapsed().as_millis() as u64;
        {
            let list = self.list.read().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = list.iter().position(|r| *r.profile == *profile) {
                list[i].last_used_ms.store(now, Relaxed);
                return u32::try_from(i).ok();
            }
        }
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = list.iter().position(|r| *r.profile == *profile) {
            return u32::try_from(i).ok();
        }
        if list.len() >= MAX_PROFILES {
            return None;
        }
        list.push(Registered {
            profile: Arc::new(profile.clone()),
            last_used_ms: AtomicU64::new(now),
        });
        u32::try_from(list.len() - 1).ok()
    }

    /// The profile's number if it is registered (without registering it or marking it used).
    pub fn find(&self, profile: &OutputProfile) -> Option<u32> {
        let list = self.list.read().unwrap_or_else(|e| e.into_inner());
        list.iter()
            .position(|r| *r.profile == *profile)
            .and_then(|i| u32::try_from(i).ok())
    }

    pub fn get(&self, id: u32) -> Option<Arc<OutputProfile>> {
        let list = self.list.read().unwrap_or_else(|e| e.into_inner());
        list.get(id as usize).map(|r| Arc::clone(&r.profile))
    }

    /// Profiles used within `recent_ms` milliseconds of now (relative to `epoch`).
    pub fn active(&self, epoch: Instant, recent_ms: u64) -> Vec<u32> {
        let now = epoch.elapsed().as_millis() as u64;
        let list = self.list.read().unwrap_or_else(|e| e.into_inner());
        (0..list.len())
            .filter(|&i| now.saturating_sub(list[i].last_used_ms.load(Relaxed)) <= recent_ms)
            .filter_map(|i| u32::try_from(i).ok())
            .collect()
    }

    /// Every registered profile id.
    pub fn all(&self) -> Vec<u32> {
        let n = self.list.read().unwrap_or_else(|e| e.into_inner()).len();
        (0..n).filter_map(|i| u32::try_from(i).ok()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(tz: &str) -> OutputProfile {
        OutputProfile {
            values: [
                tz.into(),
                "ISO, MDY".into(),
                "postgres".into(),
                "1".into(),
                "hex".into(),
                "C".into(),
            ],
        }
    }

    #[test]
    fn ids_are_stable_and_bounded() {
        let r = ProfileRegistry::default();
        let epoch = Instant::now();
        assert_eq!(r.id(&profile("UTC"), epoch), Some(0));
        assert_eq!(r.id(&profile("Europe/Paris"), epoch), Some(1));
        assert_eq!(r.id(&profile("UTC"), epoch), Some(0));
        assert_eq!(r.find(&profile("Europe/Paris")), Some(1));
        assert_eq!(r.find(&profile("Asia/Tokyo")), None);
        for i in 2..MAX_PROFILES {
            assert_eq!(r.id(&profile(&format!("tz{i}")), epoch), Some(i as u32));
        }
        assert_eq!(r.id(&profile("one too many"), epoch), None);
        assert_eq!(
            r.get(1).map(|p| p.values[0].to_string()),
            Some("Europe/Paris".into())
        );
        assert_eq!(r.active(epoch, 60_000).len(), MAX_PROFILES);
        assert!(profile("UTC")
            .describe()
            .starts_with("TimeZone=UTC, DateStyle=ISO, MDY"));
    }
}
