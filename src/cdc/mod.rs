//! Change data capture: the logical replication consumer that keeps every store fresh.
//!
//! One component, consumed by the cache store now and the search store next: it owns a
//! publication and a `pgoutput` slot (names from `[change_feed]`), streams committed
//! transactions in commit order, confirms progress only as far as its consumer has
//! acknowledged, keeps the slot moving while the watched tables are idle, and says so with a
//! [`FeedEvent::Reset`] whenever continuity is lost.
//!
//! ```text
//! side connection ── publication + slot checks (setup)
//! replication connection (conn) ── CopyData ─▶ walproto ─▶ pgoutput ─▶ assemble
//!     ─▶ stream (outbox, status updates) ─▶ mpsc::Receiver<FeedEvent> ─▶ consumer
//!     ◀── FeedHandle::ack(end_lsn) ── consumer
//! ```
//!
//! - [`lsn`]: WAL positions (`X/XXXXXXXX`) and PostgreSQL timestamps.
//! - [`conn`]: the replication connection: start-up, auth, replication commands, frames.
//! - [`walproto`]: XLogData, keepalive and standby status update messages.
//! - [`pgoutput`]: pure decoder of pgoutput v1 messages and the relation cache.
//! - [`assemble`]: buffers changes per transaction, emits them at commit with names.
//! - [`event`]: what the consumer receives ([`FeedEvent`], [`Transaction`], [`Change`]).
//! - [`setup`]: publication and slot management over a side connection.
//! - [`stream`]: one session's streaming loop and the outbox towards the consumer.
//! - [`status`]: shared positions, acknowledgements, lag and [`FeedStatus`].
//! - [`feed`]: [`ChangeFeed`] and [`FeedHandle`]: the task, reconnects and back-off.

pub mod assemble;
pub mod conn;
pub mod event;
pub mod feed;
pub mod lsn;
pub mod pgoutput;
pub mod setup;
pub mod status;
pub mod stream;
pub mod walproto;

pub use event::{Change, ChangeKind, FeedEvent, ResetReason, TableName, Transaction, Value};
pub use feed::{ChangeFeed, FeedHandle, TablesChanged};
pub use lsn::Lsn;
pub use status::{FeedHealth, FeedState, FeedStatus};

use crate::session::error::SessionError;
use crate::side::SideError;

/// Everything that can break a replication session or a publication change.
#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    #[error("cannot reach the upstream: {0}")]
    Connect(#[from] SessionError),
    #[error("replication connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the replication connection")]
    Closed,
    #[error("server error {code}: {message}{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Server {
        code: String,
        message: String,
        detail: Option<String>,
    },
    #[error("replication protocol: {0}")]
    Protocol(String),
    #[error("replication authentication: {0}")]
    Auth(String),
    #[error(transparent)]
    WalProto(#[from] walproto::WalProtoError),
    #[error(transparent)]
    Assemble(#[from] assemble::AssembleError),
    #[error("side connection: {0}")]
    Side(String),
    #[error("upstream query failed{}: {message}", code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Query {
        code: Option<String>,
        message: String,
    },
    #[error("replication slot {slot:?} cannot be used: {message}")]
    SlotConflict { slot: String, message: String },
    #[error("timed out: {0}")]
    Timeout(String),
}

impl CdcError {
    /// The SQLSTATE the server sent, if this is a server error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            CdcError::Server { code, .. } => Some(code),
            CdcError::Query { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

impl From<tokio_postgres::Error> for CdcError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => CdcError::Query {
                code: Some(db.code().code().to_string()),
                message: db.message().to_string(),
            },
            None => CdcError::Query {
                code: None,
                message: error_chain(&e),
            },
        }
    }
}

impl From<SideError> for CdcError {
    fn from(e: SideError) -> Self {
        match e {
            SideError::Connect(s) => CdcError::Connect(s),
            SideError::Postgres(p) => match CdcError::from(p) {
                CdcError::Query { code, message } => CdcError::Side(match code {
                    Some(c) => format!("{message} ({c})"),
                    None => message,
                }),
                other => other,
            },
        }
    }
}

/// `err` and its sources, joined (tokio-postgres's own `Display` often says only "db error").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
