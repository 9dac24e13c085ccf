//! Every open client session, for `SHOW CLIENTS` and the HTTP API.
//!
//! A session registers itself after its start-up packet and is removed when its guard drops,
//! whatever way the session ends.

use super::state::SharedState;
use dashmap::DashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::SystemTime;

/// What the admin views show about one session.
#[derive(Debug)]
pub struct SessionInfo {
    pub id: u64,
    pub peer: SocketAddr,
    pub user: String,
    pub database: String,
    pub application_name: String,
    pub tls: bool,
    /// True for admin-console sessions (database `pgpolyglot`).
    pub admin: bool,
    pub connected_at: SystemTime,
    pub shared: Arc<SharedState>,
}

#[derive(Debug, Default)]
pub struct SessionRegistry {
    sessions: DashMap<u64, Arc<SessionInfo>>,
    next_id: AtomicU64,
}

/// Removes its session from the registry when dropped.
pub struct Registered<'a> {
    registry: &'a SessionRegistry,
    pub info: Arc<SessionInfo>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry.sessions.remove(&self.info.id);
    }
}

/// The parts of [`SessionInfo`] a session supplies.
pub struct NewSession {
    pub peer: SocketAddr,
    pub user: String,
    pub database: String,
    pub application_name: String,
    pub tls: bool,
    pub admin: bool,
}

impl SessionRegistry {
    pub fn register(&self, new: NewSession, shared: Arc<SharedState>) -> Registered<'_> {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let info = Arc::new(SessionInfo {
            id,
            peer: new.peer,
            user: new.user,
            database: new.database,
            application_name: new.application_name,
            tls: new.tls,
            admin: new.admin,
            connected_at: SystemTime::now(),
            shared,
        });
        self.sessions.insert(id, Arc::clone(&info));
        Registered {
            registry: self,
            info,
        }
    }

    /// Open sessions, oldest first.
    pub fn list(&self) -> Vec<Arc<SessionInfo>> {
        let mut v: Vec<_> = self
            .sessions
            .iter()
            .map(|e| Arc::clone(e.value()))
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}
