//! The admin console: a client connecting with database `pgpolyglot` talks to the proxy
//! itself (`SHOW HOT_KEYS`, `SHOW QUERIES`, ..., `RELOAD`, `EXPLAIN ROUTE`).
//!
//! Who may: users in `admin_users` whose role is a superuser or a member of `pg_monitor`,
//! authenticated by the upstream Postgres (the proxy relays the authentication exchange,
//! whatever the method, against the upstream URL's database, asks that connection whether
//! the role is privileged, then closes it). The console needs no password file of its own,
//! a wrong password gets Postgres's own error, and membership in `admin_users` is checked
//! only after Postgres accepted the credentials. If the upstream trusts the proxy's address
//! (pg_hba `trust`), it trusts console clients too, as it trusts every client of the proxy.
//! Only the simple query protocol is answered; extended-protocol messages get an error (as
//! PgBouncer's console does).

use super::error::SessionError;
use super::upstream;
use crate::admin::table::{ColumnType, ResultTable};
use crate::admin::views::{self, View};
use crate::context::ProxyContext;
use crate::protocol::messages::{sqlstate, ErrorResponse};
use crate::protocol::results;
use crate::protocol::startup::StartupMessage;
use crate::protocol::stream::ClientStream;
use crate::router::{self, SessionView};
use bytes::BytesMut;
use std::sync::atomic::Ordering::Relaxed;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info};

/// The database name that selects the admin console.
pub const ADMIN_DATABASE: &str = "pgpolyglot";

/// Largest message accepted from an admin client or during the relayed authentication.
const MAX_ADMIN_MESSAGE: usize = 1 << 20;

/// Authenticate through the upstream, then answer admin commands until the client leaves.
pub async fn serve(
    client: &mut ClientStream,
    startup: &StartupMessage,
    ctx: &ProxyContext,
) -> Result<(), SessionError> {
    let user = startup.user();
    let Some(privileged) = authenticate(client, startup, ctx).await? else {
        return Ok(());
    };
    // Checked only after Postgres accepted the credentials, so nobody can probe which
    // names are admin users without a password.
    if !ctx.config.admin_users.contains(&user) {
        return Err(SessionError::NotAdmin { user });
    }
    if !privileged {
        return Err(SessionError::AdminPrivilege { user });
    }
    info!(%user, "admin console session");
    let mut out = BytesMut::new();
    results::ready_for_query(&mut out, b'I');
    client
        .write_all(&out)
        .await
        .map_err(SessionError::ClientIo)?;
    command_loop(client, ctx).await
}

/// The startup message the upstream sees: only the user, the upstream URL's database and
/// the application name (no `replication`, `options` or protocol extensions).
fn upstream_startup(startup: &StartupMessage, database: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + database.len());
    body.extend_from_slice(&(3u32 << 16).to_be_bytes());
    let mut param = |k: &str, v: &[u8]| {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v);
        body.push(0);
    };
    param("user", startup.user().as_bytes());
    param("database", database.as_bytes());
    if let Some(app) = startup.param("application_name") {
        param("application_name", app.as_bytes());
    }
    body.push(0);
    let mut raw = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    raw.extend(body);
    raw
}

/// Reads whole messages from a stream through a buffer, so a read interrupted by
/// `select!` loses nothing (`read_buf` is cancel-safe; the buffer keeps partial frames).
#[derive(Default)]
struct MessageReader {
    buf: BytesMut,
}

impl MessageReader {
    async fn next<R: AsyncRead + Unpin>(
        &mut self,
        rd: &mut R,
    ) -> std::io::Result<Option<(u8, Vec<u8>)>> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if !(4..=MAX_ADMIN_MESSAGE).contains(&len) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("message length {len} out of range"),
                    ));
                }
                if self.buf.len() > len {
                    let frame = self.buf.split_to(len + 1);
                    return Ok(Some((frame[0], frame[5..].to_vec())));
                }
            }
            if rd.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }
}

fn encode(typ: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 5);
    v.push(typ);
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// Whether the authenticated role may see the proxy's statistics: a superuser or a member
/// of `pg_monitor` (who may read every session's statistics in Postgres too).
const PRIVILEGE_QUERY: &str =
    "SELECT (rolsuper OR pg_has_role(oid, 'pg_monitor', 'MEMBER'))::text \
     FROM pg_roles WHERE rolname = current_user";

/// Relay the authentication exchange with the upstream in both directions until Postgres
/// says ReadyForQuery (any method: password, md5, SCRAM, GSS), then ask it whether the role
/// is privileged. `None` when the upstream refused (its ErrorResponse has been passed on)
/// or the client left.
async fn authenticate(
    client: &mut ClientStream,
    startup: &StartupMessage,
    ctx: &ProxyContext,
) -> Result<Option<bool>, SessionError> {
    let mut up = upstream::connect(ctx).await?;
    up.write_all(&upstream_startup(startup, &ctx.upstream.database))
        .await
        .map_err(SessionError::UpstreamIo)?;
    let mut from_up = MessageReader::default();
    let mut from_client = MessageReader::default();
    loop {
        tokio::select! {
            msg = from_up.next(&mut up) => {
                let Some((typ, mut body)) = msg.map_err(SessionError::UpstreamIo)? else {
                    return Err(SessionError::UpstreamIo(std::io::ErrorKind::UnexpectedEof.into()));
                };
                match typ {
                    b'E' => {
                        client.write_all(&encode(typ, &body)).await.map_err(SessionError::ClientIo)?;
                        return Ok(None);
                    }
                    b'K' => {
                        // Nothing to cancel on the console: a key that matches no backend.
                        body.iter_mut().for_each(|b| *b = 0);
                        client.write_all(&encode(typ, &body)).await.map_err(SessionError::ClientIo)?;
                    }
                    b'Z' => break,
                    _ => {
                        client.write_all(&encode(typ, &body)).await.map_err(SessionError::ClientIo)?;
                    }
                }
            }
            msg = from_client.next(client) => {
                let Some((typ, body)) = msg.map_err(SessionError::ClientIo)? else {
                    return Ok(None);
                };
                up.write_all(&encode(typ, &body)).await.map_err(SessionError::UpstreamIo)?;
            }
        }
    }
    let mut query = PRIVILEGE_QUERY.as_bytes().to_vec();
    query.push(0);
    up.write_all(&encode(b'Q', &query))
        .await
        .map_err(SessionError::UpstreamIo)?;
    let mut privileged = false;
    loop {
        let Some((typ, body)) = from_up
            .next(&mut up)
            .await
            .map_err(SessionError::UpstreamIo)?
        else {
            break;
        };
        match typ {
            // DataRow: one column, 4-byte length, then "true"/"false".
            b'D' => privileged = body.get(6..) == Some(b"true"),
            b'Z' => break,
            _ => {}
        }
    }
    let _ = up.write_all(&encode(b'X', &[])).await;
    let _ = up.shutdown().await;
    Ok(Some(privileged))
}

async fn command_loop<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    ctx: &ProxyContext,
) -> Result<(), SessionError> {
    // After an extended-protocol message, ignore everything up to Sync, like Postgres.
    let mut skipping = false;
    let mut reader = MessageReader::default();
    loop {
        let msg = match reader.next(client).await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let resp = ErrorResponse::fatal(sqlstate::PROTOCOL_VIOLATION, e.to_string());
                let _ = client.write_all(&resp.to_bytes()).await;
                return Ok(());
            }
            Err(e) => return Err(SessionError::ClientIo(e)),
        };
        let mut out = BytesMut::new();
        match msg.0 {
            b'X' => return Ok(()),
            b'Q' => {
                let text = msg.1.strip_suffix(&[0]).unwrap_or(&msg.1);
                let text = String::from_utf8_lossy(text);
                ctx.metrics.admin_commands.fetch_add(1, Relaxed);
                run_command(ctx, &text, &mut out);
                results::ready_for_query(&mut out, b'I');
            }
            b'S' => {
                skipping = false;
                results::ready_for_query(&mut out, b'I');
            }
            b'H' => {}
            _ if skipping => {}
            _ => {
                skipping = true;
                ErrorResponse::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "the pgpolyglot admin console supports the simple query protocol only",
                )
                .encode(&mut out);
            }
        }
        if !out.is_empty() {
            client
                .write_all(&out)
                .await
                .map_err(SessionError::ClientIo)?;
        }
    }
}

/// A parsed admin command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Show(View),
    Reload,
    ExplainRoute(String),
    Help,
    Empty,
}

/// Parse one admin command (keywords case-insensitive, one trailing `;` allowed).
pub fn parse_command(text: &str) -> Result<Command, String> {
    let text = text.trim().trim_end_matches(';').trim();
    if text.is_empty() {
        return Ok(Command::Empty);
    }
    if let Some(target) = super::explain::explain_route_target(text.as_bytes()) {
        return Ok(Command::ExplainRoute(
            String::from_utf8_lossy(target).into_owned(),
        ));
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    match upper.first().map(String::as_str) {
        Some("RELOAD") if words.len() == 1 => Ok(Command::Reload),
        Some("HELP") if words.len() == 1 => Ok(Command::Help),
        Some("SHOW") => {
            let name = words
                .get(1)
                .ok_or("SHOW needs a view name; try SHOW HELP")?;
            if name.eq_ignore_ascii_case("help") && words.len() == 2 {
                return Ok(Command::Help);
            }
            let mut table = None;
            let mut limit = None;
            let mut i = 2;
            while i < words.len() {
                if upper[i] == "LIMIT" {
                    let n = words
                        .get(i + 1)
                        .and_then(|n| n.parse::<usize>().ok())
                        .ok_or("LIMIT needs a non-negative integer")?;
                    limit = Some(n);
                    i += 2;
                } else if table.is_none() && upper[1] == "HOT_KEYS" {
                    table = Some(words[i].to_string());
                    i += 1;
                } else {
                    return Err(format!("unexpected {:?} after SHOW {name}", words[i]));
                }
            }
            View::from_name(name, table, limit)
                .map(Command::Show)
                .ok_or_else(|| format!("unknown view {name:?}; try SHOW HELP"))
        }
        _ => Err(format!(
            "unrecognized admin command {:?}; try SHOW HELP",
            words.first().copied().unwrap_or("")
        )),
    }
}

fn run_command(ctx: &ProxyContext, text: &str, out: &mut BytesMut) {
    debug!(command = %text, "admin command");
    match parse_command(text) {
        Err(message) => ErrorResponse::error(sqlstate::SYNTAX_ERROR, message).encode(out),
        Ok(Command::Empty) => results::empty_query(out),
        Ok(Command::Help) => results::result_set(out, &help(), "SHOW"),
        Ok(Command::Show(view)) => results::result_set(out, &views::render(ctx, &view), "SHOW"),
        Ok(Command::ExplainRoute(target)) => {
            let classified = ctx.classifier.classify(&target);
            let view = SessionView {
                in_transaction: false,
                pipelined: false,
                policy_database: true,
            };
            let decision = router::decide(Some(&classified.shape), view, &ctx.policies.current());
            let table = super::explain::explain_table(Some(&classified), &decision);
            results::result_set(out, &table, "EXPLAIN");
        }
        Ok(Command::Reload) => {
            match crate::placement::reload::reload(
                ctx,
                crate::placement::reload::ReloadTrigger::Admin,
            ) {
                Ok(outcome) => {
                    let mut t = ResultTable::new(&[
                        ("generation", ColumnType::Int8),
                        ("policies", ColumnType::Int8),
                    ]);
                    t.push(vec![outcome.generation.into(), outcome.policies.into()]);
                    results::result_set(out, &t, "RELOAD");
                }
                Err(errors) => {
                    let mut e = ErrorResponse::error(
                        sqlstate::CONFIG_FILE_ERROR,
                        "policy reload rejected: the policies in force keep running",
                    );
                    e = e.with_detail(errors.to_string());
                    e.encode(out);
                }
            }
        }
    }
}

fn help() -> ResultTable {
    let mut t = ResultTable::new(&[("command", ColumnType::Text), ("shows", ColumnType::Text)]);
    for (c, d) in [
        (
            "SHOW HOT_KEYS [table] [LIMIT n]",
            "hottest keys by decayed access count",
        ),
        (
            "SHOW QUERIES [LIMIT n]",
            "busiest query shapes: calls, rows, errors, latency",
        ),
        (
            "SHOW ROUTES",
            "statements, rows, errors and latency per route",
        ),
        (
            "SHOW STORES",
            "the upstream and the stores the policies name, with their state",
        ),
        ("SHOW POLICIES", "the placement policies in force"),
        ("SHOW PLACEMENTS", "keys and indexes placed in stores"),
        ("SHOW CLIENTS", "open client sessions"),
        (
            "SHOW MIGRATIONS",
            "search index builds: backfill progress, documents, state",
        ),
        (
            "SHOW PLAN",
            "what the policies and statistics would place now (dry run)",
        ),
        (
            "RELOAD",
            "re-read and validate policies/*.toml; keep the old set if invalid",
        ),
        (
            "EXPLAIN ROUTE <statement>",
            "the route a statement would take, and why",
        ),
    ] {
        t.push(vec![c.into(), d.into()]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse_command("show hot_keys accounts limit 5;"),
            Ok(Command::Show(View::HotKeys {
                table: Some("accounts".into()),
                limit: 5
            }))
        );
        assert_eq!(
            parse_command("SHOW HOT_KEYS"),
            Ok(Command::Show(View::HotKeys {
                table: None,
                limit: views::DEFAULT_LIMIT
            }))
        );
        assert_eq!(
            parse_command("SHOW QUERIES LIMIT 3"),
            Ok(Command::Show(View::Queries { limit: 3 }))
        );
        assert_eq!(
            parse_command("show routes"),
            Ok(Command::Show(View::Routes))
        );
        assert_eq!(parse_command("RELOAD;"), Ok(Command::Reload));
        assert_eq!(parse_command("  "), Ok(Command::Empty));
        assert_eq!(parse_command("SHOW HELP"), Ok(Command::Help));
        assert_eq!(
            parse_command("EXPLAIN ROUTE SELECT 1"),
            Ok(Command::ExplainRoute("SELECT 1".into()))
        );
        assert!(parse_command("SHOW").is_err());
        assert!(parse_command("SHOW NOPE").is_err());
        assert!(parse_command("SHOW QUERIES LIMIT x").is_err());
        assert!(parse_command("SHOW ROUTES extra").is_err());
        assert!(parse_command("DROP TABLE x").is_err());
    }

    #[test]
    fn startup_for_upstream_replaces_database() {
        let raw = {
            let mut b = vec![0, 3, 0, 0];
            b.extend(b"user\0alice\0database\0pgpolyglot\0\0");
            let mut r = ((b.len() + 4) as u32).to_be_bytes().to_vec();
            r.extend(b);
            r
        };
        let StartupPacketOrPanic(m) = decode(raw);
        let up = upstream_startup(&m, "app");
        let StartupPacketOrPanic(m2) = decode(up);
        assert_eq!(m2.database(), "app");
        assert_eq!(m2.user(), "alice");
    }

    struct StartupPacketOrPanic(StartupMessage);
    fn decode(raw: Vec<u8>) -> StartupPacketOrPanic {
        match crate::protocol::startup::decode_startup_packet(raw).unwrap() {
            crate::protocol::startup::StartupPacket::Startup(m) => StartupPacketOrPanic(m),
            other => panic!("{other:?}"),
        }
    }
}
