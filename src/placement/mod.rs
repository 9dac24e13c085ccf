//! Placement: which policy covers which table, and (later) which keys and indexes live in
//! which store.
//!
//! - [`store`]: the live policy set behind an `Arc` that is swapped whole on reload, so a
//!   session reads a consistent set without locking for longer than an `Arc` clone.
//! - [`reload`]: replaces that set on SIGHUP, on a change to the policy directory (polled)
//!   and on the admin `RELOAD`, only once the new set validates; an invalid one is logged
//!   and counted and the old one keeps running.
//! - [`planner`]: a pure function from the policies and the access statistics to the
//!   placement they call for (`SHOW PLAN`, `/api/plan`, `pgpolyglot plan`). Nothing is
//!   placed yet in this build: it is a dry run.

pub mod planner;
pub mod reload;
pub mod store;

pub use planner::{plan, Plan};
pub use reload::{reload, ReloadError, ReloadOutcome, ReloadTrigger};
pub use store::{PolicySet, PolicyStore};
