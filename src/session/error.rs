//! Session errors and the one place where they become what the client sees.

use crate::protocol::messages::{sqlstate, ErrorResponse};
use crate::protocol::ProtocolError;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("could not connect to the upstream PostgreSQL at {addr}: {source}")]
    UpstreamConnect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connecting to the upstream PostgreSQL at {addr} timed out after {timeout:?}")]
    UpstreamTimeout { addr: String, timeout: Duration },
    #[error(
        "the upstream PostgreSQL at {addr} does not support SSL, but its sslmode requires SSL"
    )]
    UpstreamNoSsl { addr: String },
    #[error("TLS with the upstream PostgreSQL at {addr} failed: {message}")]
    UpstreamTls { addr: String, message: String },
    #[error("TLS handshake with the client failed: {0}")]
    ClientTls(std::io::Error),
    #[error("client connection: {0}")]
    ClientIo(std::io::Error),
    #[error("upstream connection: {0}")]
    UpstreamIo(std::io::Error),
    #[error("user {user:?} may not use the pgpolyglot admin console")]
    NotAdmin { user: String },
    #[error("the pgpolyglot admin console needs a superuser or a member of pg_monitor; {user:?} is neither")]
    AdminPrivilege { user: String },
}

impl SessionError {
    /// The ErrorResponse to send before closing, if the client can still be told anything.
    /// SQLSTATEs follow what Postgres itself sends for the same condition.
    pub fn client_response(&self) -> Option<ErrorResponse> {
        use ProtocolError as P;
        match self {
            SessionError::Protocol(p) => match p {
                P::InvalidLength { .. } | P::InvalidStartupLength(_) | P::MalformedStartup(_) => {
                    Some(ErrorResponse::fatal(
                        sqlstate::PROTOCOL_VIOLATION,
                        p.to_string(),
                    ))
                }
                P::MessageTooLarge { .. } => Some(
                    ErrorResponse::fatal(sqlstate::PROTOCOL_VIOLATION, p.to_string()).with_hint(
                        "The proxy's max_message_bytes setting bounds frontend messages.",
                    ),
                ),
                P::UnsupportedProtocol { .. } => Some(ErrorResponse::fatal(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    p.to_string(),
                )),
                P::Io(_) | P::Tls(_) | P::Closed => None,
            },
            SessionError::UpstreamConnect { .. }
            | SessionError::UpstreamTimeout { .. }
            | SessionError::UpstreamNoSsl { .. }
            | SessionError::UpstreamTls { .. } => Some(
                ErrorResponse::fatal(sqlstate::UNABLE_TO_CONNECT, format!("pgpolyglot: {self}"))
                    .with_hint("The proxy is running; its upstream server is not reachable."),
            ),
            SessionError::NotAdmin { .. } => Some(
                ErrorResponse::fatal(
                    sqlstate::INVALID_AUTHORIZATION,
                    format!("pgpolyglot: {self}"),
                )
                .with_hint("Admin users are listed in admin_users in pgpolyglot.toml."),
            ),
            SessionError::AdminPrivilege { .. } => Some(ErrorResponse::fatal(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!("pgpolyglot: {self}"),
            )),
            SessionError::ClientTls(_)
            | SessionError::ClientIo(_)
            | SessionError::UpstreamIo(_) => None,
        }
    }

    /// A client hanging up or a health check that connects and closes is not worth a warning.
    pub fn is_client_gone(&self) -> bool {
        match self {
            SessionError::Protocol(ProtocolError::Closed) => true,
            SessionError::ClientIo(e) | SessionError::Protocol(ProtocolError::Io(e)) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates() {
        let e = SessionError::UpstreamConnect {
            addr: "127.0.0.1:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(e.client_response().unwrap().code, "08001");
        let e = SessionError::Protocol(ProtocolError::MessageTooLarge {
            typ: 'Q',
            len: 10,
            max: 5,
        });
        assert_eq!(e.client_response().unwrap().code, "08P01");
        assert!(SessionError::Protocol(ProtocolError::Closed)
            .client_response()
            .is_none());
    }
}
