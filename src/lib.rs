//! # pgpolyglot
//!
//! A PostgreSQL-wire proxy. Applications point their connection string at it and change
//! nothing else; Postgres stays the source of truth.
//!
//! ## Data flow
//!
//! ```text
//! client socket ─▶ protocol (frames, startup, TLS, cancel keys)
//!               ─▶ session (per connection: relay, txn state, prepared statements)
//!               ─▶ sql (lex → normalize → fingerprint → cached classification)
//!               ─▶ upstream PostgreSQL (bytes relayed unchanged)
//! ```
//!
//! ## Modules
//!
//! - [`config`]: `pgpolyglot.toml` and `policies/*.toml`, parsed with unknown keys rejected and
//!   validated before anything starts; flag > environment > file > default.
//! - [`protocol`]: the wire protocol as far as a relay needs it: finding frame boundaries
//!   without copying, start-up packets, the messages the proxy writes itself, TLS with rustls,
//!   and the proxy's own cancel keys. Knows no SQL.
//! - [`session`]: one client connection: start-up exchange, upstream connect, then two relay
//!   directions running concurrently in one task, each polled only when its own socket woke
//!   it (`session::pair`). Tracks transaction status, server-reported
//!   settings and prepared statements; maps every error to an ErrorResponse in one place.
//! - [`sql`]: classification of every statement, parsed once per shape: a fast lexer replaces
//!   literals so `WHERE id = 42` and `WHERE id = 43` share one cached parse.
//! - [`stats`]: per-key access statistics (decayed Space-Saving top-K per table) and per-shape
//!   and per-route latency histograms; recorded on the hot path into a bounded queue that
//!   never waits, aggregated off it by a background task, read as published snapshots.
//! - [`cache`]: hot keys answered from the proxy's memory: table descriptions, output
//!   profiles, the L1 store and its staleness rules, the migrator's fills, privilege checks,
//!   the bytes of an answer, and the background tasks (schema refresh, feed applier, placer,
//!   filler). Sessions consult it through `session::cache_serve`.
//! - [`search`]: text predicates narrowed by an inverted index (tantivy on local disk): per-table
//!   indexes kept by their own change feed and backfills, candidate keys from trigrams and
//!   Postgres's own lexemes, and the rewritten statement that restricts Postgres to them.
//! - [`cdc`]: the change feed: `pgoutput` logical replication with its own slot, in commit order.
//! - [`runtime`]: the tokio runtime `serve` runs on: worker count and kernel scheduling policy.
//! - [`server`]: accept loop, connection limit, graceful shutdown; [`server::start`] is also
//!   what the tests use to run a proxy in-process.
//! - [`context`]: what all sessions share (config, TLS, cancel table, classifier, metrics).
//! - [`admin`]: the metric registry and the HTTP endpoint (`/health`, `/metrics`).
//! - [`embedded_pg`]: a throwaway PostgreSQL from the system's binaries, for `demo` and tests.
//! - [`es_server`]: throwaway Elasticsearch-API servers (osmem-server, noida-db) for tests and benchmarks.
//! - [`demo`]: `pgpolyglot demo`.

pub mod admin;
pub mod cache;
pub mod catalog;
pub mod cdc;
pub mod config;
pub mod context;
pub mod demo;
pub mod embedded_pg;
pub mod es_server;
pub mod placement;
pub mod protocol;
pub mod router;
pub mod runtime;
pub mod search;
pub mod server;
pub mod session;
pub mod side;
pub mod sql;
pub mod stats;
