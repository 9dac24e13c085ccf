//! A raw PostgreSQL wire-protocol client for tests.
//!
//! Real client libraries hide exactly what the proxy must preserve: they decode rows into
//! values, swallow ParameterStatus and notices, and never show message order. This client
//! keeps every backend message as raw bytes (`tag` + `body`, framed by the length prefix), so
//! tests can compare the proxy with Postgres byte for byte, and decodes fields only on request
//! (RowDescription, ErrorResponse/NoticeResponse, ReadyForQuery, ...).
//!
//! Supported: StartupMessage with extra parameters; trust, cleartext and md5 authentication
//! (not SCRAM: use tokio-postgres for that); simple Query; the extended protocol (unnamed
//! Parse/Bind/Describe portal/Execute/Sync); COPY in (data supplied by the test, or CopyFail)
//! and COPY out; raw frames for tests of malformed input.

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::{TcpStream, ToSocketAddrs};

/// Frames larger than this are treated as a protocol error rather than allocated.
const MAX_FRAME: usize = 1 << 30;
/// CopyData chunk size when sending COPY FROM STDIN data.
const COPY_CHUNK: usize = 64 * 1024;

/// One backend message: its type byte and its body (without the length prefix).
#[derive(Clone, PartialEq, Eq)]
pub struct BackendMessage {
    pub tag: u8,
    pub body: Vec<u8>,
}

/// One RowDescription field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription {
    pub name: String,
    pub table_oid: u32,
    pub column: i16,
    pub type_oid: u32,
    pub type_size: i16,
    pub typmod: i32,
    pub format: i16,
}

/// A NotificationResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub pid: i32,
    pub channel: String,
    pub payload: String,
}

/// Why a wire operation failed.
#[derive(Debug)]
pub enum WireError {
    Io(std::io::Error),
    /// The server answered the startup with an ErrorResponse.
    Server(BackendMessage),
    /// Something the protocol does not allow (or this client does not support).
    Protocol(String),
    /// No message within the client's timeout; carries what had arrived so far.
    Timeout(Vec<BackendMessage>),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Io(e) => write!(f, "i/o error: {e}"),
            WireError::Server(msg) => write!(f, "server error: {msg:?}"),
            WireError::Protocol(what) => write!(f, "protocol error: {what}"),
            WireError::Timeout(so_far) => {
                write!(f, "timed out waiting for the server; received so far:")?;
                for msg in so_far.iter().rev().take(10).rev() {
                    write!(f, "\n  {msg:?}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for WireError {}

impl From<std::io::Error> for WireError {
    fn from(e: std::io::Error) -> Self {
        WireError::Io(e)
    }
}

/// Reads big-endian integers and C strings out of a message body.
struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn cstr(&mut self) -> Option<String> {
        let end = self.buf.iter().position(|&b| b == 0)?;
        let s = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf = &self.buf[end + 1..];
        Some(s)
    }
}

impl BackendMessage {
    fn cursor(&self) -> Cursor<'_> {
        Cursor { buf: &self.body }
    }

    /// RowDescription ('T') fields.
    pub fn fields(&self) -> Option<Vec<FieldDescription>> {
        if self.tag != b'T' {
            return None;
        }
        let mut c = self.cursor();
        let n = c.i16()?;
        (0..n)
            .map(|_| {
                Some(FieldDescription {
                    name: c.cstr()?,
                    table_oid: c.i32()? as u32,
                    column: c.i16()?,
                    type_oid: c.i32()? as u32,
                    type_size: c.i16()?,
                    typmod: c.i32()?,
                    format: c.i16()?,
                })
            })
            .collect()
    }

    /// Byte offsets in the body of each RowDescription field's table OID (type OID is at +6).
    pub fn field_oid_offsets(&self) -> Vec<usize> {
        let mut offsets = Vec::new();
        if self.tag != b'T' || self.body.len() < 2 {
            return offsets;
        }
        let n = i16::from_be_bytes([self.body[0], self.body[1]]);
        let mut pos = 2;
        for _ in 0..n {
            let Some(nul) = self.body[pos..].iter().position(|&b| b == 0) else {
                break;
            };
            pos += nul + 1;
            if pos + 18 > self.body.len() {
                break;
            }
            offsets.push(pos);
            pos += 18;
        }
        offsets
    }

    /// ErrorResponse ('E') or NoticeResponse ('N') fields as `(code, value)`.
    pub fn error_fields(&self) -> Option<Vec<(u8, String)>> {
        if self.tag != b'E' && self.tag != b'N' {
            return None;
        }
        let mut c = self.cursor();
        let mut fields = Vec::new();
        loop {
            match c.u8()? {
                0 => return Some(fields),
                code => fields.push((code, c.cstr()?)),
            }
        }
    }

    /// One ErrorResponse/NoticeResponse field (`b'C'` for the SQLSTATE, `b'M'` message, ...).
    pub fn error_field(&self, code: u8) -> Option<String> {
        self.error_fields()?
            .into_iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v)
    }

    /// The SQLSTATE of an ErrorResponse/NoticeResponse.
    pub fn sqlstate(&self) -> Option<String> {
        self.error_field(b'C')
    }

    /// ReadyForQuery ('Z') transaction status: `b'I'`, `b'T'` or `b'E'`.
    pub fn ready_status(&self) -> Option<u8> {
        (self.tag == b'Z')
            .then(|| self.body.first().copied())
            .flatten()
    }

    /// DataRow ('D') column values (`None` for NULL).
    pub fn columns(&self) -> Option<Vec<Option<Vec<u8>>>> {
        if self.tag != b'D' {
            return None;
        }
        let mut c = self.cursor();
        let n = c.i16()?;
        (0..n)
            .map(|_| match c.i32()? {
                -1 => Some(None),
                len => c.take(usize::try_from(len).ok()?).map(|b| Some(b.to_vec())),
            })
            .collect()
    }

    /// CommandComplete ('C') tag, e.g. `"INSERT 0 1"`.
    pub fn command_tag(&self) -> Option<String> {
        (self.tag == b'C').then(|| self.cursor().cstr()).flatten()
    }

    /// ParameterStatus ('S') name and value.
    pub fn parameter_status(&self) -> Option<(String, String)> {
        if self.tag != b'S' {
            return None;
        }
        let mut c = self.cursor();
        Some((c.cstr()?, c.cstr()?))
    }

    /// NotificationResponse ('A').
    pub fn notification(&self) -> Option<Notification> {
        if self.tag != b'A' {
            return None;
        }
        let mut c = self.cursor();
        Some(Notification {
            pid: c.i32()?,
            channel: c.cstr()?,
            payload: c.cstr()?,
        })
    }

    /// BackendKeyData ('K') process id and secret key.
    pub fn backend_key(&self) -> Option<(i32, i32)> {
        if self.tag != b'K' {
            return None;
        }
        let mut c = self.cursor();
        Some((c.i32()?, c.i32()?))
    }

    /// The message as it travels on the wire (tag, length, body).
    pub fn to_frame(&self) -> Vec<u8> {
        frame(self.tag, &self.body)
    }
}

/// Shows a value readably: UTF-8 text quoted, otherwise hex; long values are cut.
fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let cut = &bytes[..bytes.len().min(MAX)];
    let shown = match std::str::from_utf8(cut) {
        Ok(text)
            if !text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t') =>
        {
            format!("{text:?}")
        }
        _ => format!(
            "x'{}'",
            cut.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    };
    if bytes.len() > MAX {
        format!("{shown}..({} bytes)", bytes.len())
    } else {
        shown
    }
}

impl fmt::Debug for BackendMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = self.tag as char;
        match self.tag {
            b'T' => match self.fields() {
                Some(fields) => {
                    write!(f, "RowDescription[")?;
                    for (i, fd) in fields.iter().enumerate() {
                        let sep = if i == 0 { "" } else { ", " };
                        write!(
                            f,
                            "{sep}{:?} table={} att={} type={} size={} typmod={} fmt={}",
                            fd.name,
                            fd.table_oid,
                            fd.column,
                            fd.type_oid,
                            fd.type_size,
                            fd.typmod,
                            fd.format
                        )?;
                    }
                    write!(f, "]")
                }
                None => write!(f, "RowDescription(malformed {})", preview(&self.body)),
            },
            b'D' => match self.columns() {
                Some(cols) => {
                    let shown: Vec<String> = cols
                        .iter()
                        .map(|c| c.as_deref().map_or("NULL".into(), preview))
                        .collect();
                    write!(f, "DataRow[{}]", shown.join(", "))
                }
                None => write!(f, "DataRow(malformed {})", preview(&self.body)),
            },
            b'E' | b'N' => {
                let kind = if self.tag == b'E' {
                    "ErrorResponse"
                } else {
                    "NoticeResponse"
                };
                let fields = self.error_fields().unwrap_or_default();
                let shown: Vec<String> = fields
                    .iter()
                    .map(|(c, v)| format!("{}={v:?}", *c as char))
                    .collect();
                write!(f, "{kind}{{{}}}", shown.join(", "))
            }
            b'C' => write!(
                f,
                "CommandComplete({:?})",
                self.command_tag().unwrap_or_default()
            ),
            b'Z' => write!(
                f,
                "ReadyForQuery({})",
                self.body.first().map_or('?', |&b| b as char)
            ),
            b'S' => match self.parameter_status() {
                Some((k, v)) => write!(f, "ParameterStatus({k}={v:?})"),
                None => write!(f, "ParameterStatus(malformed)"),
            },
            b'K' => write!(f, "BackendKeyData{:?}", self.backend_key()),
            b'A' => write!(f, "{:?}", self.notification()),
            b'R' => write!(f, "Authentication({})", preview(&self.body)),
            b'I' => write!(f, "EmptyQueryResponse"),
            b'1' => write!(f, "ParseComplete"),
            b'2' => write!(f, "BindComplete"),
            b'3' => write!(f, "CloseComplete"),
            b'n' => write!(f, "NoData"),
            b's' => write!(f, "PortalSuspended"),
            b't' => write!(f, "ParameterDescription({})", preview(&self.body)),
            b'G' => write!(f, "CopyInResponse({})", preview(&self.body)),
            b'H' => write!(f, "CopyOutResponse({})", preview(&self.body)),
            b'd' => write!(f, "CopyData({})", preview(&self.body)),
            b'c' => write!(f, "CopyDone"),
            _ => write!(f, "Message({tag:?}, {})", preview(&self.body)),
        }
    }
}

/// A frontend message frame: tag, length (including itself), body.
pub fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(s: &str) -> Vec<u8> {
    let mut out = s.as_bytes().to_vec();
    out.push(0);
    out
}

/// What to put in the StartupMessage.
#[derive(Debug, Clone, Default)]
pub struct Startup<'a> {
    pub user: &'a str,
    pub database: &'a str,
    /// For cleartext or md5 authentication.
    pub password: Option<&'a str>,
    /// Extra startup parameters, e.g. `("application_name", "x")`, `("options", "-c a=b")`.
    pub params: &'a [(&'a str, &'a str)],
    /// Messages sent right behind the StartupMessage, before authentication has ended
    /// (their answers follow the start-up ReadyForQuery).
    pub early: &'a [u8],
}

/// A connected, authenticated session.
pub struct WireClient {
    stream: BufStream<TcpStream>,
    /// Everything the server sent from the authentication result up to the first
    /// ReadyForQuery (AuthenticationOk, ParameterStatus..., BackendKeyData, ReadyForQuery).
    pub startup: Vec<BackendMessage>,
    /// How long to wait for any single message before failing.
    pub timeout: Duration,
}

impl WireClient {
    /// Connects and authenticates as `user` to `database` (trust or no password needed).
    pub async fn connect(
        addr: impl ToSocketAddrs,
        user: &str,
        database: &str,
    ) -> Result<Self, WireError> {
        Self::connect_with(
            addr,
            &Startup {
                user,
                database,
                ..Startup::default()
            },
        )
        .await
    }

    /// Connects with full control over the StartupMessage.
    pub async fn connect_with(
        addr: impl ToSocketAddrs,
        startup: &Startup<'_>,
    ) -> Result<Self, WireError> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let mut client = WireClient {
            stream: BufStream::with_capacity(64 * 1024, 64 * 1024, tcp),
            startup: Vec::new(),
            timeout: Duration::from_secs(60),
        };
        let mut body = 196608i32.to_be_bytes().to_vec();
        let mut params = vec![("user", startup.user), ("database", startup.database)];
        params.extend_from_slice(startup.params);
        for (k, v) in params {
            body.extend(cstr(k));
            body.extend(cstr(v));
        }
        body.push(0);
        let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        msg.extend(body);
        msg.extend(startup.early);
        client.send_raw(&msg).await?;
        client.authenticate(startup).await?;
        Ok(client)
    }

    async fn authenticate(&mut self, startup: &Startup<'_>) -> Result<(), WireError> {
        loop {
            let msg = self.read_message().await?;
            match msg.tag {
                b'E' => return Err(WireError::Server(msg)),
                b'R' => {
                    let code = Cursor { buf: &msg.body }.i32().unwrap_or(-1);
                    match code {
                        0 => {
                            self.startup.push(msg);
                            break;
                        }
                        3 => {
                            let pw = self.password(startup)?;
                            self.send(b'p', &cstr(pw)).await?;
                        }
                        5 if msg.body.len() == 8 => {
                            let salt = [msg.body[4], msg.body[5], msg.body[6], msg.body[7]];
                            let pw = self.password(startup)?;
                            let response = super::md5::password_response(startup.user, pw, salt);
                            self.send(b'p', &cstr(&response)).await?;
                        }
                        other => {
                            return Err(WireError::Protocol(format!(
                                "authentication method {other} is not supported by the test \
                                 wire client (use tokio-postgres for SCRAM)"
                            )))
                        }
                    }
                }
                _ => {
                    return Err(WireError::Protocol(format!(
                        "unexpected message during authentication: {msg:?}"
                    )))
                }
            }
        }
        let rest = self.collect_until_ready(&[], false).await?;
        if let Some(err) = rest.iter().find(|m| m.tag == b'E') {
            return Err(WireError::Server(err.clone()));
        }
        self.startup.extend(rest);
        Ok(())
    }

    fn password<'a>(&self, startup: &Startup<'a>) -> Result<&'a str, WireError> {
        startup
            .password
            .ok_or_else(|| WireError::Protocol("server asked for a password; none given".into()))
    }

    /// Writes raw bytes and flushes.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Buffers one framed message (call [`flush`](Self::flush) or a sending method after).
    pub async fn queue(&mut self, tag: u8, body: &[u8]) -> Result<(), WireError> {
        self.stream.write_all(&frame(tag, body)).await?;
        Ok(())
    }

    /// Flushes queued messages.
    pub async fn flush(&mut self) -> Result<(), WireError> {
        self.stream.flush().await?;
        Ok(())
    }

    /// Sends one framed message and flushes.
    pub async fn send(&mut self, tag: u8, body: &[u8]) -> Result<(), WireError> {
        self.queue(tag, body).await?;
        self.flush().await
    }

    /// Reads one backend message (waits at most `self.timeout`).
    pub async fn read_message(&mut self) -> Result<BackendMessage, WireError> {
        match tokio::time::timeout(self.timeout, self.read_frame()).await {
            Ok(result) => result,
            Err(_) => Err(WireError::Timeout(Vec::new())),
        }
    }

    async fn read_frame(&mut self) -> Result<BackendMessage, WireError> {
        let tag = self.stream.read_u8().await?;
        let len = self.stream.read_i32().await?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| (4..=MAX_FRAME).contains(&l))
            .ok_or_else(|| {
                WireError::Protocol(format!("bad frame length {len} for tag {:?}", tag as char))
            })?;
        let mut body = vec![0; len - 4];
        self.stream.read_exact(&mut body).await?;
        Ok(BackendMessage { tag, body })
    }

    /// Runs a simple Query; returns every message up to and including ReadyForQuery.
    /// A COPY FROM STDIN is answered with CopyFail.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<BackendMessage>, WireError> {
        self.simple_query_copy(sql, &[]).await
    }

    /// Like [`simple_query`](Self::simple_query); the n-th CopyInResponse is answered with
    /// `copy_in[n]` (CopyData + CopyDone), or with CopyFail when there is no n-th entry.
    pub async fn simple_query_copy(
        &mut self,
        sql: &str,
        copy_in: &[&[u8]],
    ) -> Result<Vec<BackendMessage>, WireError> {
        self.send(b'Q', &cstr(sql)).await?;
        self.collect_until_ready(copy_in, false).await
    }

    /// Extended protocol, unnamed statement and portal: Parse (no parameter types), Bind,
    /// Describe portal, Execute (no row limit), Sync. Returns every message up to and
    /// including ReadyForQuery. `param_formats`/`result_formats` are the Bind format codes
    /// (empty: all text; one entry: applies to all).
    pub async fn extended(
        &mut self,
        sql: &str,
        params: &[Option<&[u8]>],
        param_formats: &[i16],
        result_formats: &[i16],
    ) -> Result<Vec<BackendMessage>, WireError> {
        self.extended_copy(sql, params, param_formats, result_formats, &[])
            .await
    }

    /// [`extended`](Self::extended) with data for a COPY FROM STDIN.
    pub async fn extended_copy(
        &mut self,
        sql: &str,
        params: &[Option<&[u8]>],
        param_formats: &[i16],
        result_formats: &[i16],
        copy_in: &[&[u8]],
    ) -> Result<Vec<BackendMessage>, WireError> {
        let mut parse = cstr("");
        parse.extend(cstr(sql));
        parse.extend(0i16.to_be_bytes());
        self.queue(b'P', &parse).await?;

        let mut bind = cstr("");
        bind.extend(cstr(""));
        bind.extend((param_formats.len() as i16).to_be_bytes());
        for f in param_formats {
            bind.extend(f.to_be_bytes());
        }
        bind.extend((params.len() as i16).to_be_bytes());
        for p in params {
            match p {
                None => bind.extend((-1i32).to_be_bytes()),
                Some(v) => {
                    bind.extend((v.len() as i32).to_be_bytes());
                    bind.extend_from_slice(v);
                }
            }
        }
        bind.extend((result_formats.len() as i16).to_be_bytes());
        for f in result_formats {
            bind.extend(f.to_be_bytes());
        }
        self.queue(b'B', &bind).await?;
        self.queue(b'D', b"P\0").await?;
        let mut execute = cstr("");
        execute.extend(0i32.to_be_bytes());
        self.queue(b'E', &execute).await?;
        self.send(b'S', &[]).await?;
        self.collect_until_ready(copy_in, true).await
    }

    /// Reads until ReadyForQuery, answering CopyInResponse as described above. In the
    /// extended protocol the server ignores the Sync it got during COPY IN, so another Sync
    /// follows CopyDone/CopyFail.
    async fn collect_until_ready(
        &mut self,
        copy_in: &[&[u8]],
        extended: bool,
    ) -> Result<Vec<BackendMessage>, WireError> {
        let mut copy_in = copy_in.iter();
        let mut out = Vec::new();
        loop {
            let msg = match self.read_message().await {
                Ok(msg) => msg,
                Err(WireError::Timeout(_)) => return Err(WireError::Timeout(out)),
                Err(e) => return Err(e),
            };
            let tag = msg.tag;
            out.push(msg);
            match tag {
                b'Z' => return Ok(out),
                b'G' => {
                    match copy_in.next() {
                        Some(data) => {
                            for chunk in data.chunks(COPY_CHUNK) {
                                self.queue(b'd', chunk).await?;
                            }
                            self.queue(b'c', &[]).await?;
                        }
                        None => {
                            self.queue(b'f', &cstr("no COPY data supplied by the test"))
                                .await?
                        }
                    }
                    if extended {
                        self.queue(b'S', &[]).await?;
                    }
                    self.flush().await?;
                }
                b'W' => {
                    return Err(WireError::Protocol(
                        "CopyBothResponse (replication) is not supported".into(),
                    ))
                }
                _ => {}
            }
        }
    }

    /// Sends Terminate and closes the connection.
    pub async fn terminate(mut self) -> Result<(), WireError> {
        self.send(b'X', &[]).await?;
        self.stream.shutdown().await?;
        Ok(())
    }
}
