//! The start-up packets a client sends before the message stream begins: SSLRequest,
//! GSSENCRequest, CancelRequest and StartupMessage. They have no type byte, only a length.

use super::ProtocolError;
use tokio::io::{AsyncRead, AsyncReadExt};

pub const SSL_REQUEST_CODE: u32 = 80877103;
pub const GSSENC_REQUEST_CODE: u32 = 80877104;
pub const CANCEL_REQUEST_CODE: u32 = 80877102;
/// Postgres's own MAX_STARTUP_PACKET_LENGTH.
pub const MAX_STARTUP_PACKET: u32 = 10000;

/// One start-up packet, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    CancelRequest { pid: u32, secret: u32 },
    Startup(StartupMessage),
}

/// A StartupMessage: the raw bytes (relayed unchanged to the upstream) and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    /// The whole packet including its length word, exactly as the client sent it.
    pub raw: Vec<u8>,
    pub major: u16,
    pub minor: u16,
    /// Parameters in the order sent. Values are bytes: their encoding is the client's business.
    pub params: Vec<(String, Vec<u8>)>,
}

impl StartupMessage {
    /// A parameter's value, lossily decoded for logs and routing decisions. When a name
    /// repeats, the last value counts, as it does for Postgres (which the packet is relayed
    /// to unchanged): the proxy must never act on a different user or database than the one
    /// Postgres authenticates.
    pub fn param(&self, name: &str) -> Option<String> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    pub fn user(&self) -> String {
        self.param("user").unwrap_or_default()
    }

    /// The database, which defaults to the user name as in Postgres.
    pub fn database(&self) -> String {
        self.param("database")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| self.user())
    }
}

/// Read one start-up packet. A client that connects and closes without a byte gives
/// [`ProtocolError::Closed`] (load balancers' health checks do that; it is not an error).
pub async fn read_startup_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<StartupPacket, ProtocolError> {
    let mut len_buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = stream.read(&mut len_buf[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Err(ProtocolError::Closed)
            } else {
                Err(ProtocolError::MalformedStartup("incomplete startup packet"))
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len_buf);
    if !(8..=MAX_STARTUP_PACKET).contains(&len) {
        return Err(ProtocolError::InvalidStartupLength(len));
    }
    let mut raw = vec![0u8; len as usize];
    raw[..4].copy_from_slice(&len_buf);
    stream.read_exact(&mut raw[4..]).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtocolError::MalformedStartup("incomplete startup packet")
        } else {
            ProtocolError::Io(e)
        }
    })?;
    decode_startup_packet(raw)
}

/// Decode a complete start-up packet (length word included).
pub fn decode_startup_packet(raw: Vec<u8>) -> Result<StartupPacket, ProtocolError> {
    let word = |i: usize| -> u32 {
        raw.get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0)
    };
    let code = word(4);
    match code {
        SSL_REQUEST_CODE => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST_CODE => {
            if raw.len() != 16 {
                return Err(ProtocolError::MalformedStartup(
                    "cancel request must be 16 bytes",
                ));
            }
            Ok(StartupPacket::CancelRequest {
                pid: word(8),
                secret: word(12),
            })
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(ProtocolError::UnsupportedProtocol { major, minor });
            }
            let params = decode_params(&raw[8..])?;
            Ok(StartupPacket::Startup(StartupMessage {
                raw,
                major,
                minor,
                params,
            }))
        }
    }
}

fn decode_params(mut body: &[u8]) -> Result<Vec<(String, Vec<u8>)>, ProtocolError> {
    let mut params = Vec::new();
    loop {
        match body {
            [0] => return Ok(params),
            [] => return Err(ProtocolError::MalformedStartup("missing terminator")),
            _ => {}
        }
        let (key, rest) = super::frames::read_cstr(body).ok_or(ProtocolError::MalformedStartup(
            "unterminated parameter name",
        ))?;
        let (value, rest) = super::frames::read_cstr(rest).ok_or(
            ProtocolError::MalformedStartup("unterminated parameter value"),
        )?;
        let key = std::str::from_utf8(key)
            .map_err(|_| ProtocolError::MalformedStartup("parameter name is not UTF-8"))?;
        params.push((key.to_string(), value.to_vec()));
        body = rest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_resolve_like_postgres() {
        let raw = startup(&[("user", "postgres"), ("database", "a"), ("user", "mallory")]);
        let StartupPacket::Startup(m) = decode_startup_packet(raw).unwrap() else {
            panic!("not a startup message");
        };
        assert_eq!(m.user(), "mallory");
        assert_eq!(m.database(), "a");
    }

    fn startup(params: &[(&str, &str)]) -> Vec<u8> {
        let mut body = 196608u32.to_be_bytes().to_vec();
        for (k, v) in params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut raw = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        raw.extend(body);
        raw
    }

    #[tokio::test]
    async fn reads_startup_and_requests() {
        let raw = startup(&[
            ("user", "app"),
            ("database", "db"),
            ("application_name", "x"),
        ]);
        let mut r = &raw[..];
        match read_startup_packet(&mut r).await.unwrap() {
            StartupPacket::Startup(m) => {
                assert_eq!(m.user(), "app");
                assert_eq!(m.database(), "db");
                assert_eq!(m.raw, raw);
            }
            other => panic!("{other:?}"),
        }
        let ssl = crate::protocol::messages::ssl_request();
        assert_eq!(
            read_startup_packet(&mut &ssl[..]).await.unwrap(),
            StartupPacket::SslRequest
        );
        let c = crate::protocol::messages::cancel_request(7, 9);
        assert_eq!(
            read_startup_packet(&mut &c[..]).await.unwrap(),
            StartupPacket::CancelRequest { pid: 7, secret: 9 }
        );
    }

    #[tokio::test]
    async fn rejects_malformed() {
        let empty: &[u8] = &[];
        assert!(matches!(
            read_startup_packet(&mut &empty[..]).await,
            Err(ProtocolError::Closed)
        ));
        let huge = 100_000u32.to_be_bytes();
        assert!(matches!(
            read_startup_packet(&mut &huge[..]).await,
            Err(ProtocolError::InvalidStartupLength(100_000))
        ));
        let mut bad = startup(&[("user", "x")]);
        let n = bad.len();
        bad[n - 1] = b'x'; // no terminator
        assert!(matches!(
            read_startup_packet(&mut &bad[..]).await,
            Err(ProtocolError::MalformedStartup(_))
        ));
        let mut v2 = startup(&[("user", "x")]);
        v2[4..8].copy_from_slice(&0x0002_0000u32.to_be_bytes());
        assert!(matches!(
            read_startup_packet(&mut &v2[..]).await,
            Err(ProtocolError::UnsupportedProtocol { major: 2, minor: 0 })
        ));
        let truncated = &startup(&[("user", "x")])[..10];
        assert!(matches!(
            read_startup_packet(&mut &truncated[..]).await,
            Err(ProtocolError::MalformedStartup(_))
        ));
    }
}
