//! Placement: which policy covers which table, and (later) which keys and indexes live in
//! which store.
//!
//! - [`store`]: the live policy set behind an `Arc` that is swapped whole on reload, so a
//!   session reads a consistent set without locking for longer than an `Arc` clone.

pub mod planner;
pub mod store;

pub use store::{PolicySet, PolicyStore};
