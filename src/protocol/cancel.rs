//! Cancel keys: the proxy hands each client its own secret and maps it to the upstream's.
//!
//! The process id is passed through unchanged (clients compare it with the pid in
//! NotificationResponse and `pg_backend_pid()`), but the secret is the proxy's own, so a client
//! never learns the upstream's secret and a CancelRequest is honoured only through the proxy's
//! table, for a session that is still open.

use dashmap::DashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Where a cancel for one session must go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelTarget {
    pub upstream_addr: String,
    pub pid: u32,
    pub secret: u32,
}

/// Open sessions' cancel keys, keyed by (pid, proxy secret).
#[derive(Default, Debug)]
pub struct CancelRegistry {
    keys: DashMap<(u32, u32), CancelTarget>,
}

/// Removes a session's key when the session ends.
pub struct CancelGuard {
    registry: Arc<CancelRegistry>,
    key: (u32, u32),
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.registry.keys.remove(&self.key);
    }
}

impl CancelRegistry {
    /// Register an upstream key; returns the secret to hand to the client and the guard.
    pub fn register(self: &Arc<Self>, target: CancelTarget) -> (u32, CancelGuard) {
        loop {
            let secret: u32 = rand::random();
            let key = (target.pid, secret);
            if let dashmap::Entry::Vacant(v) = self.keys.entry(key) {
                v.insert(target);
                return (
                    secret,
                    CancelGuard {
                        registry: self.clone(),
                        key,
                    },
                );
            }
        }
    }

    pub fn lookup(&self, pid: u32, secret: u32) -> Option<CancelTarget> {
        self.keys.get(&(pid, secret)).map(|t| t.clone())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Deliver a CancelRequest to the upstream, as libpq does: a fresh plain connection, the
/// 16-byte packet, then close. Postgres sends no answer.
pub async fn send_cancel(target: &CancelTarget, timeout: Duration) -> std::io::Result<()> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(&target.upstream_addr).await?;
        s.write_all(&super::messages::cancel_request(target.pid, target.secret))
            .await?;
        s.shutdown().await?;
        // Wait for the server to close, so the cancel is processed before we report success.
        let mut b = [0u8; 1];
        let _ = tokio::io::AsyncReadExt::read(&mut s, &mut b).await;
        Ok(())
    };
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "cancel timed out",
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_lookup_and_drop() {
        let reg = Arc::new(CancelRegistry::default());
        let t = CancelTarget {
            upstream_addr: "127.0.0.1:1".into(),
            pid: 42,
            secret: 7,
        };
        let (secret, guard) = reg.register(t.clone());
        assert_eq!(reg.lookup(42, secret), Some(t));
        assert_eq!(reg.lookup(42, secret.wrapping_add(1)), None);
        drop(guard);
        assert!(reg.is_empty());
    }
}
