//! A replication connection to the upstream: start-up with `replication=database`,
//! authentication (trust, cleartext, md5, SCRAM-SHA-256), the few replication commands the
//! feed needs, and frame-level I/O for the copy-both stream that follows `START_REPLICATION`.
//!
//! Why not tokio-postgres: it cannot enter copy-both mode. The transport is the proxy's own
//! ([`crate::session::upstream::connect`]), so the feed honours the upstream URL's `sslmode`
//! and root certificate exactly as relayed sessions do. Frames are parsed here by hand
//! (five-byte header, bounded length) because postgres-protocol's backend parser does not know
//! CopyBothResponse; its frontend builders and its md5/SCRAM code are used as they are.

use super::event::{quote_ident, quote_literal};
use super::lsn::Lsn;
use super::CdcError;
use crate::context::ProxyContext;
use crate::protocol::stream::UpstreamStream;
use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::debug;

/// Largest backend message accepted: the walsender builds each message in one buffer, which
/// PostgreSQL caps at 1 GiB, so anything larger is a corrupt length.
const MAX_BACKEND_MESSAGE: usize = (1 << 30) + 1024;

/// `application_name` of the feed's replication connection (visible in `pg_stat_replication`).
pub const APPLICATION_NAME: &str = "pgpolyglot-cdc";

/// One backend message: its type byte and body (without the length).
#[derive(Debug, Clone)]
pub struct Frame {
    pub tag: u8,
    pub body: Bytes,
}

/// What `IDENTIFY_SYSTEM` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    pub system_id: String,
    pub timeline: u32,
    /// The server's current WAL flush position.
    pub xlogpos: Lsn,
    pub dbname: Option<String>,
}

/// An authenticated replication connection.
pub struct ReplConnection {
    stream: UpstreamStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// ParameterStatus values reported at start-up (`server_version`, `TimeZone`,
    /// `DateStyle`, ...), and settings read with [`Self::pin_setting`].
    pub params: BTreeMap<String, String>,
    /// The settings this session's text values are printed under, once the feed has pinned
    /// them all (see [`super::event::Transaction::output`]).
    pub output: Option<std::sync::Arc<super::event::OutputSettings>>,
}

impl ReplConnection {
    /// Connects, authenticates as the upstream URL's user and waits for ReadyForQuery.
    pub async fn connect(ctx: &ProxyContext) -> Result<Self, CdcError> {
        let stream = crate::session::upstream::connect(ctx).await?;
        let mut conn = ReplConnection {
            stream,
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: BytesMut::with_capacity(1024),
            params: BTreeMap::new(),
            output: None,
        };
        let up = &ctx.upstream;
        conn.startup(&up.user, &up.database, up.password.as_deref())
            .await?;
        Ok(conn)
    }

    async fn startup(
        &mut self,
        user: &str,
        database: &str,
        password: Option<&str>,
    ) -> Result<(), CdcError> {
        let params = [
            ("user", user),
            ("database", database),
            ("replication", "database"),
            ("application_name", APPLICATION_NAME),
            // pgoutput sends text values in the client encoding; the decoder wants UTF-8.
            ("client_encoding", "UTF8"),
        ];
        frontend::startup_message(params, &mut self.wbuf)?;
        self.flush().await?;
        self.authenticate(user, password).await?;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                b'S' => self.record_param(&frame.body),
                b'K' | b'N' => {}
                b'Z' => return Ok(()),
                b'E' => return Err(server_error(&frame.body)),
                other => return Err(unexpected(other, "start-up")),
            }
        }
    }

    async fn authenticate(&mut self, user: &str, password: Option<&str>) -> Result<(), CdcError> {
        let need_password = || {
            CdcError::Auth(format!(
                "the server asks for a password for user {user:?}; put it in the upstream URL"
            ))
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                b'R' => {}
                b'E' => return Err(server_error(&frame.body)),
                other => return Err(unexpected(other, "authentication")),
            }
            let body = &frame.body[..];
            let (code, rest) = match body.split_first_chunk::<4>() {
                Some((code, rest)) => (i32::from_be_bytes(*code), rest),
                None => return Err(CdcError::Protocol("short authentication request".into())),
            };
            match code {
                0 => return Ok(()),
                3 => {
                    let pw = password.ok_or_else(need_password)?;
                    frontend::password_message(pw.as_bytes(), &mut self.wbuf)?;
                }
                5 => {
                    let pw = password.ok_or_else(need_password)?;
                    let salt: [u8; 4] = rest
                        .get(..4)
                        .and_then(|s| s.try_into().ok())
                        .ok_or_else(|| CdcError::Protocol("short md5 salt".into()))?;
                    let hash = md5_hash(user.as_bytes(), pw.as_bytes(), salt);
                    frontend::password_message(hash.as_bytes(), &mut self.wbuf)?;
                }
                10 => {
                    let pw = password.ok_or_else(need_password)?;
                    let offered = rest
                        .split(|&b| b == 0)
                        .any(|m| m == SCRAM_SHA_256.as_bytes());
                    if !offered {
                        return Err(CdcError::Auth(format!(
                            "no supported SASL mechanism offered ({})",
                            String::from_utf8_lossy(rest).replace('\0', " ")
                        )));
                    }
                    // Channel binding (-PLUS) is not needed: TLS, when used, already
                    // authenticates the server per sslmode.
                    let s = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut self.wbuf)?;
                    scram = Some(s);
                }
                11 => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| CdcError::Protocol("SASL continue before start".into()))?;
                    s.update(rest)
                        .map_err(|e| CdcError::Auth(format!("SCRAM: {e}")))?;
                    frontend::sasl_response(s.message(), &mut self.wbuf)?;
                }
                12 => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| CdcError::Protocol("SASL final before start".into()))?;
                    s.finish(rest)
                        .map_err(|e| CdcError::Auth(format!("SCRAM server proof: {e}")))?;
                    continue;
                }
                other => {
                    return Err(CdcError::Auth(format!(
                        "unsupported authentication method (request code {other}); \
                         use trust, password, md5 or scram-sha-256 for replication"
                    )))
                }
            }
            self.flush().await?;
        }
    }

    fn record_param(&mut self, body: &[u8]) {
        let mut parts = body.split(|&b| b == 0);
        if let (Some(k), Some(v)) = (parts.next(), parts.next()) {
            self.params.insert(
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            );
        }
    }

    /// Runs one command with the simple query protocol; returns its rows as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, CdcError> {
        debug!(sql, "replication command");
        frontend::query(sql, &mut self.wbuf)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                b'D' => rows.push(data_row(&frame.body)?),
                b'T' | b'C' | b'I' | b'N' => {}
                b'S' => self.record_param(&frame.body),
                b'E' => error = Some(server_error(&frame.body)),
                b'Z' => return error.map_or(Ok(rows), Err),
                other => return Err(unexpected(other, "a replication command")),
            }
        }
    }

    /// Reads a setting (`SHOW`) and sets it to that value for the session (`SET`, SQL a
    /// walsender in database mode runs), so a configuration reload cannot change it under
    /// the session; the value is kept in [`Self::params`]. `name` must be a plain identifier.
    pub async fn pin_setting(&mut self, name: &str) -> Result<String, CdcError> {
        let rows = self.simple_query(&format!("SHOW {name}")).await?;
        let value = rows
            .into_iter()
            .next()
            .and_then(|row| row.into_iter().next().flatten())
            .ok_or_else(|| CdcError::Protocol(format!("SHOW {name} returned no value")))?;
        self.simple_query(&format!("SET {name} TO {}", quote_literal(&value)))
            .await?;
        self.params.insert(name.to_string(), value.clone());
        Ok(value)
    }

    pub async fn identify_system(&mut self) -> Result<SystemInfo, CdcError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows
            .into_iter()
            .next()
            .ok_or_else(|| CdcError::Protocol("IDENTIFY_SYSTEM returned no row".into()))?;
        let col = |i: usize| row.get(i).cloned().flatten();
        let bad = |what: &str| CdcError::Protocol(format!("IDENTIFY_SYSTEM: bad {what}"));
        Ok(SystemInfo {
            system_id: col(0).ok_or_else(|| bad("systemid"))?,
            timeline: col(1)
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| bad("timeline"))?,
            xlogpos: col(2)
                .and_then(|l| l.parse().ok())
                .ok_or_else(|| bad("xlogpos"))?,
            dbname: col(3),
        })
    }

    /// `CREATE_REPLICATION_SLOT <slot> LOGICAL pgoutput` without exporting a snapshot;
    /// returns the slot's consistent point (changes committed after it will be streamed).
    pub async fn create_logical_slot(&mut self, slot: &str) -> Result<Lsn, CdcError> {
        // The pre-15 spelling, still accepted by every later server.
        let sql = format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput NOEXPORT_SNAPSHOT",
            quote_ident(slot)
        );
        let rows = self.simple_query(&sql).await?;
        rows.first()
            .and_then(|r| r.get(1).cloned().flatten())
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| {
                CdcError::Protocol("CREATE_REPLICATION_SLOT: no consistent point".into())
            })
    }

    /// Starts streaming pgoutput v1 for `publication` from `start` (`Lsn::ZERO`: the slot's
    /// confirmed position). On success the connection is in copy-both mode.
    pub async fn start_replication(
        &mut self,
        slot: &str,
        start: Lsn,
        publication: &str,
    ) -> Result<(), CdcError> {
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} (proto_version '1', publication_names {})",
            quote_ident(slot),
            quote_literal(&quote_ident(publication))
        );
        debug!(sql, "replication command");
        frontend::query(&sql, &mut self.wbuf)?;
        self.flush().await?;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                b'W' => return Ok(()),
                b'N' => {}
                b'S' => self.record_param(&frame.body),
                b'E' => return Err(server_error(&frame.body)),
                other => return Err(unexpected(other, "START_REPLICATION")),
            }
        }
    }

    /// Reads whatever the socket has into the buffer. Cancel-safe (only `read_buf`), so the
    /// stream loop can `select!` on it; frames are then taken with [`Self::next_frame`].
    pub async fn fill(&mut self) -> Result<(), CdcError> {
        if self.rbuf.capacity() - self.rbuf.len() < 8 * 1024 {
            self.rbuf.reserve(64 * 1024);
        }
        match self.stream.read_buf(&mut self.rbuf).await? {
            0 => Err(CdcError::Closed),
            _ => Ok(()),
        }
    }

    /// The next complete frame in the buffer, if any.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, CdcError> {
        let Some(header) = self.rbuf.get(..5) else {
            return Ok(None);
        };
        let tag = header[0];
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if !(4..=MAX_BACKEND_MESSAGE).contains(&len) {
            return Err(CdcError::Protocol(format!(
                "backend message {:?} with invalid length {len}",
                tag as char
            )));
        }
        if self.rbuf.len() < 1 + len {
            self.rbuf.reserve(1 + len - self.rbuf.len());
            return Ok(None);
        }
        let mut frame = self.rbuf.split_to(1 + len).freeze();
        let body = frame.split_off(5);
        Ok(Some(Frame { tag, body }))
    }

    /// Reads until one whole frame is there.
    pub async fn read_frame(&mut self) -> Result<Frame, CdcError> {
        loop {
            if let Some(frame) = self.next_frame()? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// Sends one CopyData message (copy-both mode).
    pub async fn send_copy_data(&mut self, payload: &[u8]) -> Result<(), CdcError> {
        let len = u32::try_from(payload.len() + 4)
            .map_err(|_| CdcError::Protocol("CopyData too large".into()))?;
        self.wbuf.extend_from_slice(b"d");
        self.wbuf.extend_from_slice(&len.to_be_bytes());
        self.wbuf.extend_from_slice(payload);
        self.flush().await
    }

    /// Leaves copy-both mode: sends CopyDone and waits (at most `wait`) for the server to
    /// return to command mode. The server handles messages in order, so once it answers,
    /// every status update sent before has been applied to the slot. Best effort: streamed
    /// data still arriving is discarded (it was not acknowledged, so it comes again).
    pub async fn finish_streaming(&mut self, wait: Duration) {
        frontend::copy_done(&mut self.wbuf);
        if self.flush().await.is_err() {
            return;
        }
        let drain = async {
            while let Ok(frame) = self.read_frame().await {
                if matches!(frame.tag, b'Z' | b'E') {
                    break;
                }
            }
        };
        if tokio::time::timeout(wait, drain).await.is_err() {
            debug!("the server did not end the stream in time");
        }
    }

    /// Sends Terminate and closes the socket (best effort: the server may be gone).
    pub async fn terminate(mut self) {
        frontend::terminate(&mut self.wbuf);
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }

    async fn flush(&mut self) -> Result<(), CdcError> {
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        self.stream.flush().await?;
        Ok(())
    }
}

fn unexpected(tag: u8, during: &str) -> CdcError {
    CdcError::Protocol(format!(
        "unexpected message {:?} during {during}",
        tag as char
    ))
}

/// The fields of an ErrorResponse body as a [`CdcError::Server`].
pub(crate) fn server_error(body: &[u8]) -> CdcError {
    let mut code = String::new();
    let mut message = String::new();
    let mut detail = None;
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        let value = String::from_utf8_lossy(&tail[..end]).into_owned();
        match field {
            b'C' => code = value,
            b'M' => message = value,
            b'D' => detail = Some(value),
            _ => {}
        }
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    CdcError::Server {
        code,
        message,
        detail,
    }
}

/// A DataRow body as text columns.
fn data_row(body: &[u8]) -> Result<Vec<Option<String>>, CdcError> {
    let bad = || CdcError::Protocol("malformed DataRow".into());
    let (count, mut rest) = body.split_first_chunk::<2>().ok_or_else(bad)?;
    let count = u16::from_be_bytes(*count);
    let mut out = Vec::with_capacity(usize::from(count).min(rest.len() / 4));
    for _ in 0..count {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = i32::from_be_bytes(*len);
        if len < 0 {
            out.push(None);
            rest = tail;
            continue;
        }
        let len = len as usize;
        let value = tail.get(..len).ok_or_else(bad)?;
        out.push(Some(String::from_utf8(value.to_vec()).map_err(|_| bad())?));
        rest = &tail[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_error_fields() {
        let body = b"SERROR\0VERROR\0C42704\0Mreplication slot \"x\" does not exist\0Dmore\0\0";
        match server_error(body) {
            CdcError::Server {
                code,
                message,
                detail,
            } => {
                assert_eq!(code, "42704");
                assert_eq!(message, "replication slot \"x\" does not exist");
                assert_eq!(detail.as_deref(), Some("more"));
            }
            other => panic!("{other:?}"),
        }
        // Truncated bodies do not panic.
        let _ = server_error(b"C4270");
        let _ = server_error(b"");
    }

    #[test]
    fn parses_data_rows() {
        let mut body = vec![0, 2];
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(b"abc");
        body.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(data_row(&body).unwrap(), vec![Some("abc".into()), None]);
        assert!(data_row(&body[..6]).is_err());
        assert!(data_row(&[0]).is_err());
    }
}
