//! The streaming replication sub-protocol inside CopyData, once `START_REPLICATION` has
//! switched the connection to copy-both mode (PostgreSQL docs, "Streaming Replication
//! Protocol"). Pure parsing and encoding; the connection does the I/O.

use super::lsn::Lsn;

/// A message from the server inside a CopyData frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage<'a> {
    /// 'w': a chunk of decoded WAL (one pgoutput message).
    XLogData {
        /// Where the data starts in the WAL.
        start: Lsn,
        /// The server's current end of WAL (for logical decoding: how far it has read).
        wal_end: Lsn,
        /// Server clock, µs since 2000-01-01.
        send_time: i64,
        data: &'a [u8],
    },
    /// 'k': the server's position and whether it wants a status update now.
    Keepalive {
        wal_end: Lsn,
        send_time: i64,
        reply_requested: bool,
    },
}

/// A CopyData payload that is not a well-formed 'w' or 'k' message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalProtoError {
    #[error("empty CopyData message")]
    Empty,
    #[error("unknown CopyData message type {0:?}")]
    Unknown(char),
    #[error("CopyData message {0:?} is truncated")]
    Truncated(char),
}

/// Parses one CopyData payload from the server.
pub fn parse(payload: &[u8]) -> Result<ServerMessage<'_>, WalProtoError> {
    let (&tag, body) = payload.split_first().ok_or(WalProtoError::Empty)?;
    let be64 = |at: usize| -> Result<u64, WalProtoError> {
        body.get(at..at + 8)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(u64::from_be_bytes)
            .ok_or(WalProtoError::Truncated(tag as char))
    };
    match tag {
        b'w' => Ok(ServerMessage::XLogData {
            start: Lsn(be64(0)?),
            wal_end: Lsn(be64(8)?),
            send_time: be64(16)? as i64,
            data: body.get(24..).unwrap_or_default(),
        }),
        b'k' => {
            let flag = *body.get(16).ok_or(WalProtoError::Truncated('k'))?;
            Ok(ServerMessage::Keepalive {
                wal_end: Lsn(be64(0)?),
                send_time: be64(8)? as i64,
                reply_requested: flag == 1,
            })
        }
        other => Err(WalProtoError::Unknown(other as char)),
    }
}

/// What a standby status update ('r') reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusUpdate {
    /// Last WAL position received.
    pub written: Lsn,
    /// Position up to which everything is durably handled: the slot's `confirmed_flush_lsn`
    /// becomes this, and the server may recycle WAL before it.
    pub flushed: Lsn,
    pub applied: Lsn,
    /// Client clock, µs since 2000-01-01.
    pub time: i64,
    /// Ask the server to answer with a keepalive at once (used as a ping).
    pub reply_requested: bool,
}

impl StatusUpdate {
    /// The CopyData payload (without the CopyData frame header).
    pub fn encode(&self) -> [u8; 34] {
        let mut out = [0u8; 34];
        out[0] = b'r';
        out[1..9].copy_from_slice(&self.written.0.to_be_bytes());
        out[9..17].copy_from_slice(&self.flushed.0.to_be_bytes());
        out[17..25].copy_from_slice(&self.applied.0.to_be_bytes());
        out[25..33].copy_from_slice(&self.time.to_be_bytes());
        out[33] = u8::from(self.reply_requested);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_xlogdata_and_keepalive() {
        let mut w = vec![b'w'];
        w.extend_from_slice(&1u64.to_be_bytes());
        w.extend_from_slice(&2u64.to_be_bytes());
        w.extend_from_slice(&3i64.to_be_bytes());
        w.extend_from_slice(b"BODY");
        assert_eq!(
            parse(&w),
            Ok(ServerMessage::XLogData {
                start: Lsn(1),
                wal_end: Lsn(2),
                send_time: 3,
                data: b"BODY"
            })
        );
        let mut k = vec![b'k'];
        k.extend_from_slice(&0x1_0000_0000u64.to_be_bytes());
        k.extend_from_slice(&(-1i64).to_be_bytes());
        k.push(1);
        assert_eq!(
            parse(&k),
            Ok(ServerMessage::Keepalive {
                wal_end: Lsn(0x1_0000_0000),
                send_time: -1,
                reply_requested: true
            })
        );
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert_eq!(parse(&[]), Err(WalProtoError::Empty));
        assert_eq!(parse(b"x"), Err(WalProtoError::Unknown('x')));
        assert_eq!(parse(b"w1234567"), Err(WalProtoError::Truncated('w')));
        let mut k = vec![b'k'];
        k.extend_from_slice(&[0; 16]);
        assert_eq!(parse(&k), Err(WalProtoError::Truncated('k')));
    }

    #[test]
    fn encodes_status_update() {
        let b = StatusUpdate {
            written: Lsn(1),
            flushed: Lsn(2),
            applied: Lsn(3),
            time: 4,
            reply_requested: true,
        }
        .encode();
        assert_eq!(b[0], b'r');
        assert_eq!(&b[1..9], &1u64.to_be_bytes());
        assert_eq!(&b[9..17], &2u64.to_be_bytes());
        assert_eq!(&b[17..25], &3u64.to_be_bytes());
        assert_eq!(&b[25..33], &4i64.to_be_bytes());
        assert_eq!(b[33], 1);
    }
}
