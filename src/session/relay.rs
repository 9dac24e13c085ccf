//! The relay: two directions running at once in one task, forwarding frames unchanged.
//!
//! Each direction reads what its socket has, lets [`FrameScanner`] find the frames it must look
//! at, and forwards every complete byte with one write. The directions run concurrently (not
//! one select loop that blocks on a write) so a pipelining client that is not reading yet can
//! never deadlock the proxy: that is exactly as much buffering as a direct connection has.
//!
//! The frontend (client → upstream) direction looks at Query, Parse, Bind, Execute, Sync,
//! FunctionCall, Close and Terminate to classify and route statements, record their keys,
//! track prepared statements and portals, and start each statement's clock. The backend
//! (upstream → client) direction looks at ReadyForQuery (transaction status), ParameterStatus
//! (client_encoding and the settings that later decide whether cached text values may be
//! served), BackendKeyData (whose secret it replaces with the proxy's own) and the messages
//! that complete statements (latency, rows, errors).

use super::cache_serve::{self, CacheSession};
use super::error::SessionError;
use super::pair::{First, Pair};
use super::search_serve::{self, Track};
use super::state::{FrontendState, SharedState};
use super::tracker::tag_rows;
use crate::context::ProxyContext;
use crate::protocol::cancel::{CancelGuard, CancelTarget};
use crate::protocol::frames::{read_cstr, FrameScanner, HEADER_LEN};
use crate::protocol::stream::{ClientStream, MaybeTls, UpstreamStream};
use bytes::{Buf, BytesMut};
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, Notify};

/// Bytes of free buffer space each read asks for.
const READ_CHUNK: usize = 16 * 1024;

/// Answers from the cache queued behind a half-forwarded frame at most; beyond, the frontend
/// waits (a client that sends without reading cannot grow the queue).
const SERVED_QUEUE: usize = 64;

/// The client's write half, shared by both directions: the backend forwards Postgres's
/// frames, the frontend writes answers from the cache itself (handing them to the backend
/// would wake the session's task a second time per answer). An answer may go out only
/// between two of Postgres's frames: one that comes while a frame is half forwarded waits
/// in `queued` until the backend has forwarded the frame's end.
struct ClientOut<W> {
    wr: W,
    /// The backend has forwarded part of a frame and not its end.
    mid_frame: bool,
    queued: Vec<BytesMut>,
}

impl<W: AsyncWrite + Unpin> ClientOut<W> {
    /// Writes the queued answers (the backend calls this at a frame boundary).
    async fn write_queued(&mut self) -> Result<(), SessionError> {
        for a in self.queued.drain(..) {
            self.wr
                .write_all(&a)
                .await
                .map_err(SessionError::ClientIo)?;
        }
        Ok(())
    }
}

/// Writes a cache answer to the client, or queues it behind the frame the backend is
/// forwarding; waits while the queue is full.
async fn write_answer<W: AsyncWrite + Unpin>(
    out: &Mutex<ClientOut<W>>,
    drained: &Notify,
    answer: BytesMut,
) -> Result<(), SessionError> {
    loop {
        let mut o = out.lock().await;
        if !o.mid_frame {
            return o
                .wr
                .write_all(&answer)
                .await
                .map_err(SessionError::ClientIo);
        }
        if o.queued.len() < SERVED_QUEUE {
            o.queued.push(answer);
            return Ok(());
        }
        let wait = drained.notified();
        drop(o);
        wait.await;
    }
}

/// How long the backend direction may take to finish its current write once the client side
/// has ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the frontend direction tells the backend direction when it stops: set once, read by
/// the backend before each read (a plain slot, not a channel: both directions run in one
/// task, and once the frontend has stopped the backend is polled by the relay itself).
type ControlSlot = std::sync::Mutex<Option<Control>>;

enum Control {
    /// The client is gone: stop at the next frame boundary.
    Stop,
    /// Send these bytes (a FATAL ErrorResponse) to the client at a frame boundary, then stop.
    Fatal(BytesMut),
}

/// Relay until either side closes. Returns the error that ended the session, if any.
///
/// Plain TCP on both sides (the common case) is split into borrowed halves, which cost
/// nothing per read or write; with TLS on either side, `tokio::io::split` shares the stream
/// between the directions behind its lock.
pub async fn run(
    client: ClientStream,
    upstream: UpstreamStream,
    ctx: &ProxyContext,
    shared: &SharedState,
    database: &str,
    cache: CacheSession,
) -> Result<(), SessionError> {
    let state = FrontendState::new(ctx, database, cache);
    match (client, upstream) {
        (MaybeTls::Plain(mut c), MaybeTls::Plain(mut u)) => {
            let (crd, cwr) = c.split();
            let (urd, uwr) = u.split();
            run_halves(crd, cwr, urd, uwr, ctx, shared, state).await
        }
        (client, upstream) => {
            let (crd, cwr) = tokio::io::split(client);
            let (urd, uwr) = tokio::io::split(upstream);
            run_halves(crd, cwr, urd, uwr, ctx, shared, state).await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_halves<CR, CW, UR, UW>(
    client_rd: CR,
    client_wr: CW,
    upstream_rd: UR,
    upstream_wr: UW,
    ctx: &ProxyContext,
    shared: &SharedState,
    mut frontend_state: FrontendState,
) -> Result<(), SessionError>
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    // Empty unless the frontend says otherwise: when the frontend fails only because the
    // upstream closed, the backend keeps draining so the client still gets Postgres's last
    // words (a FATAL).
    let control = ControlSlot::default();
    let out = Mutex::new(ClientOut {
        wr: client_wr,
        mid_frame: false,
        queued: Vec::new(),
    });
    let drained = Notify::new();
    let front = frontend(
        client_rd,
        upstream_wr,
        ctx,
        shared,
        &mut frontend_state,
        &control,
        (&out, &drained),
    );
    let back = backend(upstream_rd, (&out, &drained), ctx, shared, &control);
    tokio::pin!(front, back);
    match Pair::new(front.as_mut(), back.as_mut()).await {
        First::A(f) => {
            // The backend stops at its next frame boundary if told to, else when the upstream
            // closes.
            let b = tokio::time::timeout(DRAIN_TIMEOUT, back)
                .await
                .unwrap_or(Ok(()));
            f.and(b)
        }
        First::B(b) => b,
    }
}

/// Frontend messages whose body the proxy reads: Query, Parse, Bind, Execute, Sync,
/// FunctionCall, Close, Describe, Terminate, CopyDone, CopyFail.
fn frontend_wants(typ: u8) -> bool {
    matches!(
        typ,
        b'Q' | b'P' | b'B' | b'E' | b'S' | b'F' | b'C' | b'D' | b'X' | b'c' | b'f'
    )
}

/// The prepared statements a message needs Postgres to have (or, for a named Parse, must
/// not have): Bind's source, Describe/Close of a statement, a named Parse, and SQL `EXECUTE`,
/// `DEALLOCATE` and `PREPARE` of a name (found by [`sql_statement_name`]) in a Query or in
/// the text of a Parse (run later by its Execute; materialized at the Parse, which is early
/// but never wrong: Postgres would have had the statement all along).
fn referenced_statements(typ: u8, body: &[u8]) -> [Option<&[u8]>; 2] {
    match typ {
        b'B' => [
            read_cstr(body)
                .and_then(|(_, rest)| read_cstr(rest))
                .map(|(name, _)| name),
            None,
        ],
        b'D' | b'C' => [
            match body.split_first() {
                Some((b'S', rest)) => read_cstr(rest).map(|(name, _)| name),
                _ => None,
            },
            None,
        ],
        b'P' => match read_cstr(body) {
            Some((name, rest)) => [
                Some(name).filter(|n| !n.is_empty()),
                read_cstr(rest).and_then(|(sql, _)| sql_statement_name(sql)),
            ],
            None => [None, None],
        },
        b'Q' => [sql_statement_name(body), None],
        _ => [None, None],
    }
}

/// The statement name in `EXECUTE name`, `DEALLOCATE [PREPARE] name` or `PREPARE name`
/// (an unquoted identifier, lowercased as Postgres folds it; quoted names verbatim).
fn sql_statement_name(body: &[u8]) -> Option<&[u8]> {
    let text = body.strip_suffix(&[0]).unwrap_or(body);
    let trimmed = text.trim_ascii_start();
    let word_end = trimmed.iter().position(|b| !b.is_ascii_alphabetic())?;
    let word = &trimmed[..word_end];
    let is = |w: &str| word.eq_ignore_ascii_case(w.as_bytes());
    if !(is("execute") || is("deallocate") || is("prepare")) {
        return None;
    }
    let mut rest = trimmed[word_end..].trim_ascii_start();
    if is("deallocate") {
        let end = rest
            .iter()
            .position(|b| !b.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        if rest[..end].eq_ignore_ascii_case(b"prepare") {
            rest = rest[end..].trim_ascii_start();
        }
    }
    if let Some(quoted) = rest.strip_prefix(b"\"") {
        let end = quoted.iter().position(|&b| b == b'"')?;
        return Some(&quoted[..end]);
    }
    let end = rest
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$'))
        .unwrap_or(rest.len());
    let name = &rest[..end];
    // Unquoted names are folded to lower case: only already-lowercase ones match as is.
    (!name.is_empty() && !name.iter().any(u8::is_ascii_uppercase)).then_some(name)
}

/// Backend messages whose body the proxy reads: ReadyForQuery, ParameterStatus,
/// BackendKeyData, the completions of statements (CommandComplete, ErrorResponse,
/// EmptyQueryResponse, PortalSuspended), and ParseComplete / CloseComplete (which confirm
/// prepared statements).
fn backend_wants(typ: u8) -> bool {
    matches!(
        typ,
        b'Z' | b'S' | b'K' | b'C' | b'E' | b'I' | b's' | b'1' | b'3'
    )
}

fn ensure_space(buf: &mut BytesMut, pending_frame: usize) {
    let want = pending_frame.saturating_sub(buf.len()).max(READ_CHUNK);
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
}

async fn frontend<R, W, CW>(
    mut rd: R,
    mut wr: W,
    ctx: &ProxyContext,
    shared: &SharedState,
    state: &mut FrontendState,
    control: &ControlSlot,
    (client, drained): (&Mutex<ClientOut<CW>>, &Notify),
) -> Result<(), SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    CW: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut scanner = FrameScanner::new(ctx.config.max_message_bytes);
    let mut pending_frame = 0;
    // Set when a scan stopped early at a replaced frame: scan the rest before reading more.
    let mut rescan = false;
    loop {
        if !rescan {
            ensure_space(&mut buf, pending_frame);
            let n = match rd.read_buf(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    send(control, Control::Stop);
                    return Err(SessionError::ClientIo(e));
                }
            };
            if n == 0 {
                send(control, Control::Stop);
                return Ok(());
            }
            ctx.metrics.frontend_bytes.fetch_add(n as u64, Relaxed);
        }
        rescan = false;
        // A new batch while the session is idle: perhaps the cache can answer it. Not the
        // rest of a batch whose first messages (a Parse, say) already went to Postgres: its
        // Sync and the answers to those belong to Postgres.
        if shared.authenticated.load(Relaxed)
            && !state.extended_open
            && scanner.at_boundary()
            && !buf.is_empty()
            && ctx.cache.may_serve()
        {
            if let Some(answer) = cache_serve::try_serve(&buf, state, ctx, shared).await {
                if let Err(e) = write_answer(client, drained, answer.response).await {
                    send(control, Control::Stop);
                    return Err(e);
                }
                buf.advance(answer.consumed);
                rescan = !buf.is_empty();
                pending_frame = 0;
                continue;
            }
        }
        // A text-predicate Query or batch the search store can narrow: send its narrowed form.
        if shared.authenticated.load(Relaxed)
            && !state.extended_open
            && scanner.at_boundary()
            && !buf.is_empty()
            && ctx.search.may_narrow()
        {
            if let Some(n) = search_serve::try_narrow(&buf, state, ctx, shared).await {
                match &n.track {
                    Track::Explain => shared.tracker.query(None, crate::stats::Route::Postgres),
                    Track::Query(classified) => state.on_narrowed(classified, ctx, shared),
                    Track::Tracked => {}
                }
                wr.write_all(&n.frame)
                    .await
                    .map_err(SessionError::UpstreamIo)?;
                buf.advance(n.consumed);
                rescan = !buf.is_empty();
                pending_frame = 0;
                continue;
            }
        }
        let mut terminated = false;
        // A frame the proxy rewrites (EXPLAIN ROUTE): its length and its replacement.
        let mut replacement: Option<(usize, BytesMut)> = None;
        // Nothing is inspected before Postgres has authenticated the client.
        let inspect = shared.authenticated.load(Relaxed);
        // Before that, only password messages are expected; anything else (a client that
        // pipelines statements behind its start-up) is forwarded unread.
        let wants = |typ: u8| {
            if inspect {
                frontend_wants(typ)
            } else {
                typ != b'p'
            }
        };
        let mut unread = false;
        let scanned = scanner.scan(&mut buf, wants, |typ, body| {
            if !inspect {
                unread = true;
                return true;
            }
            // A message that refers to a statement only the proxy has (its Parse was
            // answered from the cache): send that Parse first.
            let mut inject: Option<BytesMut> = None;
            if shared.tracker.may_materialize() {
                for parse in referenced_statements(typ, body)
                    .into_iter()
                    .flatten()
                    .filter_map(|n| shared.tracker.materialize(n))
                {
                    inject
                        .get_or_insert_with(BytesMut::new)
                        .extend_from_slice(&parse);
                }
            }
            match typ {
                b'P' | b'B' | b'D' | b'E' | b'C' => state.extended_open = true,
                b'S' => state.extended_open = false,
                b'Q' | b'F' if state.extended_open => shared.tracker.query_inside_batch(),
                _ => {}
            }
            match typ {
                b'X' => {
                    terminated = true;
                    return false;
                }
                b'Q' => {
                    if let Some(new) = state.on_query(body, ctx, shared) {
                        replacement = Some((body.len() + HEADER_LEN, new));
                        return false;
                    }
                }
                b'P' => state.on_parse(body, ctx, shared),
                b'B' => state.on_bind(body, ctx, shared),
                b'E' => state.on_execute(body, ctx, shared),
                b'S' => shared.tracker.sync(),
                b'F' => {
                    // A function called by OID may be anything, set_config included.
                    shared.tracker.encoding_change_sent();
                    if state.cache.observe(None, false) {
                        shared.tracker.write_sent();
                    }
                    shared.tracker.query(None, crate::stats::Route::Postgres)
                }
                b'C' => state.on_close(body, shared),
                b'c' | b'f' => shared.tracker.copy_end(),
                _ => {}
            }
            if let Some(parse) = inject {
                let mut new = BytesMut::with_capacity(parse.len() + HEADER_LEN + body.len());
                new.extend_from_slice(&parse);
                new.extend_from_slice(&[typ]);
                new.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
                new.extend_from_slice(body);
                replacement = Some((body.len() + HEADER_LEN, new));
                return false;
            }
            true
        });
        if unread {
            state.messages_unread(shared);
        }
        let scanned = match scanned {
            Ok(s) => s,
            Err(e) => {
                // Forward nothing of the bad frame; tell the client why, as Postgres would.
                let e = SessionError::Protocol(e);
                match e.client_response() {
                    Some(resp) => send(control, Control::Fatal(resp.to_bytes())),
                    None => send(control, Control::Stop),
                }
                ctx.metrics.client_protocol_errors.fetch_add(1, Relaxed);
                return Err(e);
            }
        };
        if let Some((frame_len, new)) = replacement {
            let keep = scanned.ready - frame_len;
            if keep > 0 {
                wr.write_all(&buf[..keep])
                    .await
                    .map_err(SessionError::UpstreamIo)?;
            }
            wr.write_all(&new).await.map_err(SessionError::UpstreamIo)?;
            buf.advance(scanned.ready);
            rescan = true;
            pending_frame = 0;
            continue;
        }
        if scanned.ready > 0 {
            wr.write_all(&buf[..scanned.ready])
                .await
                .map_err(SessionError::UpstreamIo)?;
            buf.advance(scanned.ready);
        }
        if terminated {
            let _ = wr.shutdown().await;
            send(control, Control::Stop);
            return Ok(());
        }
        pending_frame = scanned.pending_frame;
    }
}

/// Tells the backend why the frontend stopped; the first word stands.
fn send(control: &ControlSlot, message: Control) {
    let mut slot = control.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_none() {
        *slot = Some(message);
    }
}

async fn backend<R, W>(
    mut rd: R,
    (client, drained): (&Mutex<ClientOut<W>>, &Notify),
    ctx: &ProxyContext,
    shared: &SharedState,
    control: &ControlSlot,
) -> Result<(), SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK * 2);
    let mut scanner = FrameScanner::new(usize::MAX);
    let mut pending_frame = 0;
    // Keeps this session's cancel key registered for as long as the relay runs.
    let mut cancel_guard: Option<CancelGuard> = None;
    loop {
        ensure_space(&mut buf, pending_frame);
        let read = rd.read_buf(&mut buf);
        tokio::pin!(read);
        // The frontend's word first: it is checked on every poll, before the read.
        let n = std::future::poll_fn(|cx| {
            if let Some(ctl) = control.lock().unwrap_or_else(|e| e.into_inner()).take() {
                return Poll::Ready(Err(ctl));
            }
            read.as_mut().poll(cx).map(Ok)
        })
        .await;
        let n = match n {
            Err(ctl) => {
                // Only between frames: inside a frame already partly forwarded (a large
                // DataRow), the client would read the error as part of that frame.
                let mut out = client.lock().await;
                if let (Control::Fatal(bytes), true) = (ctl, scanner.at_boundary()) {
                    let _ = out.wr.write_all(&bytes).await;
                }
                let _ = out.wr.shutdown().await;
                return Ok(());
            }
            Ok(r) => r.map_err(SessionError::UpstreamIo)?,
        };
        let mut out = client.lock().await;
        if n == 0 {
            let _ = out.wr.shutdown().await;
            return Ok(());
        }
        ctx.metrics.backend_bytes.fetch_add(n as u64, Relaxed);
        // With answers waiting inside a frame, forward only the rest of that frame first:
        // they go out before anything the upstream sends after it.
        if !out.queued.is_empty() && !scanner.at_boundary() {
            let upto = scanner.remaining_in_frame().min(buf.len());
            let scanned = scanner.scan(&mut buf[..upto], |_| false, |_, _| true)?;
            out.wr
                .write_all(&buf[..scanned.ready])
                .await
                .map_err(SessionError::ClientIo)?;
            buf.advance(scanned.ready);
            if scanner.at_boundary() {
                out.mid_frame = false;
                out.write_queued().await?;
                drained.notify_one();
            }
            if buf.is_empty() {
                continue;
            }
        }
        loop {
            // A ParseComplete / CloseComplete answering the proxy's own message: not forwarded.
            let mut drop_frame: Option<usize> = None;
            let scanned = scanner.scan(&mut buf, backend_wants, |typ, body| {
                match typ {
                    b'Z' => {
                        if let Some(&status) = body.first() {
                            shared.txn_status.store(status, Relaxed);
                        }
                        shared.authenticated.store(true, Relaxed);
                        let ready = shared
                            .tracker
                            .ready(body.first() == Some(&b'I'), &ctx.cache.fences);
                        if let Some(done) = ready.completed {
                            done.record(ctx);
                        }
                        // A schema or privilege change has committed (or rolled back):
                        // before the client hears of it, make the cache read the catalog
                        // and privileges again.
                        if ready.schema_changed {
                            ctx.schema_changed();
                        }
                    }
                    b'C' => {
                        if let Some(done) = shared.tracker.completion(tag_rows(body), false) {
                            done.record(ctx);
                        }
                    }
                    b'E' => {
                        if let Some(done) = shared.tracker.completion(0, true) {
                            done.record(ctx);
                        }
                    }
                    // A ParseComplete / CloseComplete answering a message the proxy
                    // injected is dropped.
                    b'1' | b'3' if shared.tracker.statement_op_completed() => {
                        drop_frame = Some(body.len() + HEADER_LEN);
                        return false;
                    }
                    b'I' | b's' => {
                        if let Some(done) = shared.tracker.completion(0, false) {
                            done.record(ctx);
                        }
                    }
                    b'S' => shared.on_parameter_status(body),
                    b'K' if body.len() == 8 => {
                        let pid = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                        let secret = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                        let (proxy_secret, guard) = ctx.cancel.register(CancelTarget {
                            upstream_addr: ctx.upstream.addr(),
                            pid,
                            secret,
                        });
                        body[4..8].copy_from_slice(&proxy_secret.to_be_bytes());
                        shared.backend_pid.store(pid, Relaxed);
                        cancel_guard = Some(guard);
                    }
                    _ => {}
                }
                true
            })?;
            let keep = scanned.ready - drop_frame.unwrap_or(0);
            if keep > 0 {
                out.wr
                    .write_all(&buf[..keep])
                    .await
                    .map_err(SessionError::ClientIo)?;
            }
            buf.advance(scanned.ready);
            out.mid_frame = !scanner.at_boundary();
            if !out.mid_frame && !out.queued.is_empty() {
                out.write_queued().await?;
                drained.notify_one();
            }
            pending_frame = scanned.pending_frame;
            if drop_frame.is_none() || buf.is_empty() {
                break;
            }
        }
    }
}
