//! What the proxy shows operators: the metric registry ([`metrics`]) and the HTTP endpoint
//! ([`http`]: `/health`, `/metrics`). Read-only views; nothing here is on the query path
//! except the relaxed atomic increments in [`metrics::Metrics`].

pub mod dashboard;
pub mod history;
pub mod http;
pub mod metrics;
pub mod prometheus;
pub mod search;
pub mod table;
pub mod views;
