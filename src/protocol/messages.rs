//! Messages the proxy writes itself. Everything else is relayed byte for byte.

use bytes::{BufMut, BytesMut};

/// Severity of an ErrorResponse the proxy sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// An ErrorResponse as the proxy builds it: severity, SQLSTATE, message and optional detail/hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ErrorResponse {
    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        ErrorResponse {
            severity: Severity::Fatal,
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        ErrorResponse {
            severity: Severity::Error,
            ..Self::fatal(code, message)
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Encode as an 'E' frame (fields S, V, C, M, D, H).
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u8(b'E');
        out.put_u32(0);
        let sev = self.severity.as_str();
        put_field(out, b'S', sev);
        put_field(out, b'V', sev);
        put_field(out, b'C', self.code);
        put_field(out, b'M', &self.message);
        if let Some(d) = &self.detail {
            put_field(out, b'D', d);
        }
        if let Some(h) = &self.hint {
            put_field(out, b'H', h);
        }
        out.put_u8(0);
        patch_len(out, start);
    }

    pub fn to_bytes(&self) -> BytesMut {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b
    }
}

fn put_field(out: &mut BytesMut, code: u8, value: &str) {
    out.put_u8(code);
    // A NUL inside a value would end the field early; messages come from our own text.
    out.extend(value.bytes().filter(|&b| b != 0));
    out.put_u8(0);
}

fn patch_len(out: &mut BytesMut, start: usize) {
    let len = (out.len() - start - 1) as u32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

/// Well-known SQLSTATEs the proxy uses (names as in Postgres's errcodes.txt).
pub mod sqlstate {
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const UNABLE_TO_CONNECT: &str = "08001";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    pub const INTERNAL_ERROR: &str = "XX000";
    pub const INVALID_AUTHORIZATION: &str = "28000";
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const SYNTAX_ERROR: &str = "42601";
    pub const CONFIG_FILE_ERROR: &str = "F0000";
}

/// A CancelRequest packet (16 bytes) for `pid`/`secret`.
pub fn cancel_request(pid: u32, secret: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&16u32.to_be_bytes());
    b[4..8].copy_from_slice(&super::startup::CANCEL_REQUEST_CODE.to_be_bytes());
    b[8..12].copy_from_slice(&pid.to_be_bytes());
    b[12..16].copy_from_slice(&secret.to_be_bytes());
    b
}

/// An SSLRequest packet (8 bytes).
pub fn ssl_request() -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0..4].copy_from_slice(&8u32.to_be_bytes());
    b[4..8].copy_from_slice(&super::startup::SSL_REQUEST_CODE.to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_layout() {
        let e = ErrorResponse::fatal("53300", "sorry, too many clients already");
        let b = e.to_bytes();
        assert_eq!(b[0], b'E');
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        assert_eq!(len + 1, b.len());
        assert!(b.ends_with(b"already\0\0"));
        let body = &b[5..];
        assert!(body.starts_with(b"SFATAL\0VFATAL\0C53300\0M"));
    }
}
