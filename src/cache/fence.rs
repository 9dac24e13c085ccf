//! Freshness fences for sessions that wrote, without a query per session.
//!
//! A session that wrote may be served from the cache only once the change feed has applied
//! past a WAL position taken *after* its write finished. Asking Postgres for that position
//! (`pg_current_wal_insert_lsn()`) once per write would add a round trip to every read that
//! follows a write. Instead a session takes a ticket when it is idle again, and one
//! background query answers every ticket taken before it started: the position it returns is
//! after all of their writes. Until its ticket is answered the session simply passes through,
//! which it would do anyway while the feed catches up.

use crate::cdc::Lsn;
use crate::context::ProxyContext;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::debug;

#[derive(Debug, Default)]
pub struct FenceService {
    /// Tickets handed out (the last one's number).
    issued: AtomicU64,
    /// The highest ticket answered, and the position that answers it (and all before it).
    answered: Mutex<(u64, Lsn)>,
    wake: Notify,
    /// Positions fetched (each answers every ticket taken before it).
    pub queries: AtomicU64,
}

impl FenceService {
    /// A ticket for a session whose writes have all finished.
    pub fn request(&self) -> u64 {
        let t = self.issued.fetch_add(1, Relaxed) + 1;
        self.wake.notify_one();
        t
    }

    /// The fence for `ticket`, once a position taken after it is known.
    pub fn lsn_for(&self, ticket: u64) -> Option<Lsn> {
        let a = self.answered.lock().unwrap_or_else(|e| e.into_inner());
        (a.0 >= ticket).then_some(a.1)
    }
}

/// Queries in flight at once (pipelined on one connection). A ticket taken while a query
/// runs needs a query that starts after it: with one at a time it would wait for the
/// running one and then its own, about twice the round trip.
const MAX_IN_FLIGHT: usize = 4;

/// Answers tickets until shutdown: each query covers every ticket issued before it began;
/// a new one starts as soon as tickets wait that no running query covers.
pub async fn run(ctx: Arc<ProxyContext>, mut shutdown: watch::Receiver<bool>) {
    let fences = &ctx.cache.fences;
    let mut client: Option<Arc<tokio_postgres::Client>> = None;
    let mut in_flight = FuturesUnordered::new();
    // The last ticket a started query covers.
    let mut asked = 0u64;
    loop {
        let answered = fences.answered.lock().unwrap_or_else(|e| e.into_inner()).0;
        let issued = fences.issued.load(Relaxed);
        if issued > asked.max(answered) && in_flight.len() < MAX_IN_FLIGHT {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                match crate::side::connect(&ctx).await {
                    Ok(c) => client = Some(Arc::new(c)),
                    Err(e) => {
                        debug!(error = %e, "fence: cannot connect");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            }
            let Some(c) = client.as_ref().map(Arc::clone) else {
                continue;
            };
            asked = issued;
            in_flight.push(async move {
                let lsn = tokio::time::timeout(
                    Duration::from_secs(5),
                    crate::cdc::setup::current_wal_lsn(&c),
                )
                .await;
                (issued, lsn)
            });
            continue;
        }
        tokio::select! {
            Some((upto, result)) = in_flight.next(), if !in_flight.is_empty() => match result {
                Ok(Ok(lsn)) => {
                    fences.queries.fetch_add(1, Relaxed);
                    let mut a = fences.answered.lock().unwrap_or_else(|e| e.into_inner());
                    *a = (upto.max(a.0), lsn.max(a.1));
                }
                _ => {
                    // Ask again, on a new connection, for whatever is still unanswered.
                    client = None;
                    asked = 0;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = fences.wake.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_answered_by_later_positions_only() {
        let f = FenceService::default();
        let t1 = f.request();
        assert_eq!(f.lsn_for(t1), None);
        *f.answered.lock().unwrap() = (t1, Lsn(100));
        assert_eq!(f.lsn_for(t1), Some(Lsn(100)));
        let t2 = f.request();
        assert_eq!(f.lsn_for(t2), None);
    }
}
