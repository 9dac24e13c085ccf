//! The cache store: hot keys answered from the proxy's memory, kept exactly fresh by the
//! change feed.
//!
//! ```text
//! stats snapshot ─▶ planner (pure) ─▶ placed keys ─▶ filler (side connections, one per
//!                                                   output profile, batched, snapshot-tagged)
//! change feed ─▶ applier ─▶ store (invalidate keys/tables, store the new rows it
//!                                   printed exactly, ack the slot)             │
//! session ─▶ gates (feed fresh, table ready, role allowed, fence met) ─▶ store lookup ─▶ bytes
//! ```
//!
//! - [`key`]: canonical keys from literals, parameters and Postgres's output.
//! - [`feed_image`]: rows the change feed printed, stored in place of the images it removes.
//! - [`profile`]: the session settings text values depend on.
//! - [`schema`]: table descriptions (RowDescription fields) and servability.
//! - [`trust`]: whether the descriptions may be served from (DDL through the proxy vs reloads).
//! - [`store`]: the L1 store and the rules that keep stale rows out.
//! - [`l2`]: the shared Redis tier and the rules that keep it as trustworthy as L1.
//! - [`fill`]: the migrator's batched reads.
//! - [`coalesce`]: misses of many sessions fetched in one round trip and answered from it.
//! - [`access`]: privilege checks.
//! - [`fence`]: read-your-writes fences, one background query for many sessions.
//! - [`response`]: the bytes of an answer.
//! - [`service`]: the shared service (what sessions call) and the start of its tasks:
//!   `refresh` (table descriptions, the feed's table list, readiness), `applier` (feed →
//!   stores), `placer` (statistics → placed keys), `filler` (batched fetches into L1 and Redis).
//!
//! Only what this module can prove fresh is served; every doubt is a pass-through.

pub mod access;
mod applier;
mod coalesce;
pub mod feed_image;
pub mod fence;
pub mod fill;
mod filler;
pub mod key;
pub mod l2;
mod placer;
pub mod profile;
mod refresh;
pub mod response;
pub mod schema;
pub mod service;
pub mod store;
pub mod trust;

pub use service::{CacheService, Gate};

use std::time::Duration;

/// How often table descriptions are re-read (the bound for DDL that bypasses the proxy).
pub const SCHEMA_REFRESH: Duration = Duration::from_secs(1);

/// How often the placement is recomputed from the statistics.
pub const PLACE_INTERVAL: Duration = Duration::from_millis(500);

/// Errors of the cache's own connections. None reaches a client: a failure only means
/// "not from the cache".
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("upstream: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Side(#[from] crate::side::SideError),
    #[error(transparent)]
    Cdc(#[from] crate::cdc::CdcError),
    #[error("unexpected answer from the upstream: {0}")]
    Unexpected(&'static str),
    #[error("timed out: {0}")]
    Timeout(&'static str),
}
