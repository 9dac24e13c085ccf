//! The upstream PostgreSQL URL: where relayed connections go and how (TLS mode).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("invalid upstream URL {url:?}: {message}")]
    Invalid { url: String, message: String },
}

/// libpq's `sslmode` values that the proxy honours towards the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// Try TLS, fall back to plain TCP if the server answers 'N'.
    Prefer,
    /// TLS required; the certificate is not verified (libpq semantics).
    Require,
    /// TLS required; the certificate chain is verified against `sslrootcert`, not the host name.
    VerifyCa,
    /// TLS required; chain and host name are verified.
    VerifyFull,
}

/// A parsed `postgres://user:password@host:port/db?sslmode=...` URL.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    pub host: String,
    pub port: u16,
    /// User for the proxy's own side connections (relayed sessions use the client's user).
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
}

impl UpstreamTarget {
    pub fn parse(text: &str) -> Result<UpstreamTarget, UpstreamError> {
        let invalid = |message: &str| UpstreamError::Invalid {
            url: redact(text),
            message: message.to_string(),
        };
        let url = url::Url::parse(text).map_err(|e| invalid(&e.to_string()))?;
        if url.scheme() != "postgres" && url.scheme() != "postgresql" {
            return Err(invalid("scheme must be postgres:// or postgresql://"));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("missing host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url.port().unwrap_or(5432);
        let user = match url.username() {
            "" => "postgres".to_string(),
            u => percent_decode(u),
        };
        let password = url.password().map(percent_decode);
        let database = match url.path().trim_start_matches('/') {
            "" => user.clone(),
            d => percent_decode(d),
        };
        let mut sslmode = SslMode::Disable;
        let mut sslrootcert = None;
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "sslmode" => {
                    sslmode = match v.as_ref() {
                        "disable" | "allow" => SslMode::Disable,
                        "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => return Err(invalid(&format!("unknown sslmode {other:?}"))),
                    }
                }
                "sslrootcert" => sslrootcert = Some(PathBuf::from(v.as_ref())),
                "connect_timeout" | "application_name" => {}
                other => return Err(invalid(&format!("unsupported parameter {other:?}"))),
            }
        }
        if matches!(sslmode, SslMode::VerifyCa | SslMode::VerifyFull) && sslrootcert.is_none() {
            return Err(invalid(
                "sslmode verify-ca/verify-full needs sslrootcert=FILE",
            ));
        }
        Ok(UpstreamTarget {
            host,
            port,
            user,
            password,
            database,
            sslmode,
            sslrootcert,
        })
    }

    /// `host:port`, suitable for `TcpStream::connect`.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

/// The URL with any password replaced, for error messages and logs.
pub fn redact(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url() {
        let t =
            UpstreamTarget::parse("postgres://app:s%40cret@db.local:6543/appdb?sslmode=require")
                .unwrap();
        assert_eq!(t.host, "db.local");
        assert_eq!(t.port, 6543);
        assert_eq!(t.user, "app");
        assert_eq!(t.password.as_deref(), Some("s@cret"));
        assert_eq!(t.database, "appdb");
        assert_eq!(t.sslmode, SslMode::Require);
        assert_eq!(t.addr(), "db.local:6543");
    }

    #[test]
    fn defaults() {
        let t = UpstreamTarget::parse("postgresql://127.0.0.1").unwrap();
        assert_eq!(t.port, 5432);
        assert_eq!(t.user, "postgres");
        assert_eq!(t.database, "postgres");
        assert_eq!(t.sslmode, SslMode::Disable);
    }

    #[test]
    fn rejects_bad_urls_without_leaking_password() {
        for bad in [
            "mysql://x@h/db",
            "postgres:///db",
            "postgres://h/db?sslmode=maybe",
            "postgres://h/db?sslmode=verify-full",
        ] {
            assert!(UpstreamTarget::parse(bad).is_err(), "{bad}");
        }
        let e = UpstreamTarget::parse("postgres://u:topsecret@h/db?sslmode=nope").unwrap_err();
        assert!(!e.to_string().contains("topsecret"));
    }
}
