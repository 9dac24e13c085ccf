//! The admin console: a client connecting with database `pgpolyglot` talks to the proxy
//! itself (`SHOW HOT_KEYS`, `SHOW QUERIES`, ..., `RELOAD`, `EXPLAIN ROUTE`).
//!
//! Who may: users in `admin_users`, authenticated by the upstream Postgres exactly as any
//! other connection (the proxy relays the authentication exchange against the upstream URL's
//! database, then closes that connection), so the console needs no password file of its own
//! and a wrong password gets Postgres's own error. Only the simple query protocol is
//! answered; extended-protocol messages get an error (as PgBouncer's console does).

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
    if !ctx.config.admin_users.contains(&user) {
        return Err(SessionError::NotAdmin { user });
    }
    if !authenticate(client, startup, ctx).await? {
        return Ok(());
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

/// The startup message the upstream sees: the client's, with the database replaced.
fn upstream_startup(startup: &StartupMessage, database: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(startup.raw.len() + database.len());
    body.extend_from_slice(&(3u32 << 16).to_be_bytes());
    let mut has_db = false;
    for (k, v) in &startup.params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        if k == "database" {
            has_db = true;
            body.extend_from_slice(database.as_bytes());
        } else {
            body.extend_from_slice(v);
        }
        body.push(0);
    }
    if !has_db {
        body.extend_from_slice(b"database\0");
        body.extend_from_slice(database.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut raw = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    raw.extend(body);
    raw
}

/// Read one whole message. `Ok(None)` on a clean close.
async fn read_message<R: AsyncRead + Unpin>(rd: &mut R) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut header = [0u8; 5];
    match rd.read_exact(&mut header[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    rd.read_exact(&mut header[1..]).await?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if !(4..=MAX_ADMIN_MESSAGE).contains(&len) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("message length {len} out of range"),
        ));
    }
    let mut body = vec![0u8; len - 4];
    rd.read_exact(&mut body).await?;
    Ok(Some((header[0], body)))
}

fn encode(typ: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 5);
    v.push(typ);
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// Relay the authentication exchange with the upstream. Returns false when the upstream
/// refused (its ErrorResponse has been passed on).
async fn authenticate(
    client: &mut ClientStream,
    startup: &StartupMessage,
    ctx: &ProxyContext,
) -> Result<bool, SessionError> {
    if startup.major != 3 {
        return Err(SessionError::AdminStartup);
    }
    let mut up = upstream::connect(ctx).await?;
    up.write_all(&upstream_startup(startup, &ctx.upstream.database))
        .await
        .map_err(SessionError::UpstreamIo)?;
    loop {
        let Some((typ, mut body)) = read_message(&mut up)
            .await
            .map_err(SessionError::UpstreamIo)?
        else {
            return Err(SessionError::UpstreamIo(
                std::io::ErrorKind::UnexpectedEof.into(),
            ));
        };
        match typ {
            b'R' => {
                let code = body
                    .get(..4)
                    .map_or(0, |c| u32::from_be_bytes(c.try_into().unwrap_or([0; 4])));
                client
                    .write_all(&encode(typ, &body))
                    .await
                    .map_err(SessionError::ClientIo)?;
                // Cleartext, MD5, SASL, SASL continue: the client answers.
                if matches!(code, 3 | 5 | 10 | 11) {
                    let Some((ctyp, cbody)) =
                        read_message(client).await.map_err(SessionError::ClientIo)?
                    else {
                        return Ok(false);
                    };
                    up.write_all(&encode(ctyp, &cbody))
                        .await
                        .map_err(SessionError::UpstreamIo)?;
                }
            }
            b'E' => {
                client
                    .write_all(&encode(typ, &body))
                    .await
                    .map_err(SessionError::ClientIo)?;
                return Ok(false);
            }
            b'K' => {
                // Nothing to cancel on the console: a key that matches no backend.
                body.iter_mut().for_each(|b| *b = 0);
                client
                    .write_all(&encode(typ, &body))
                    .await
                    .map_err(SessionError::ClientIo)?;
            }
            b'Z' => {
                let _ = up.write_all(&encode(b'X', &[])).await;
                let _ = up.shutdown().await;
                return Ok(true);
            }
            _ => {
                client
                    .write_all(&encode(typ, &body))
                    .await
                    .map_err(SessionError::ClientIo)?;
            }
        }
    }
}

async fn command_loop<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    ctx: &ProxyContext,
) -> Result<(), SessionError> {
    // After an extended-protocol message, ignore everything up to Sync, like Postgres.
    let mut skipping = false;
    loop {
        let msg = match read_message(client).await {
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
