//! The PostgreSQL wire protocol, version 3, as far as a relaying proxy needs it.
//!
//! This module knows frames, not SQL. A relay forwards bytes unchanged and only decodes the few
//! messages it must look at ([`frames::FrameScanner`] finds frame boundaries in a read buffer
//! without copying); everything the proxy says itself (errors, SSL answers) is built by
//! [`messages`]. The start-up exchange ([`startup`]), TLS ([`tls`]), the proxy's own cancel keys
//! ([`cancel`]) and the client/upstream stream type ([`stream`]) each have their own file.

pub mod cancel;
pub mod frames;
pub mod messages;
pub mod results;
pub mod startup;
pub mod stream;
pub mod tls;

/// Errors of the wire layer. Mapped to an ErrorResponse (if any) in `session::error`.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid message length {len} for message type {typ:?}")]
    InvalidLength { typ: char, len: u32 },
    #[error(
        "message of type {typ:?} is {len} bytes, over the limit of {max} bytes (max_message_bytes)"
    )]
    MessageTooLarge { typ: char, len: usize, max: usize },
    #[error("invalid length of startup packet: {0}")]
    InvalidStartupLength(u32),
    #[error("malformed startup packet: {0}")]
    MalformedStartup(&'static str),
    #[error("unsupported frontend protocol {major}.{minor}: the proxy supports 3.0 to 3.x")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("TLS error: {0}")]
    Tls(String),
    #[error("the connection was closed")]
    Closed,
}
