//! Connection budgets: how many connections a listener serves at once, and
//! which one gives way when it is full.
//!
//! A connection that has not yet presented a valid credential can be
//! displaced: at the cap, a new connection takes the place of the oldest
//! unauthenticated one, so a local process holding connections open without
//! a secret cannot lock callers out. Each listener has its own budget (the
//! Unix socket's callers are never crowded out by TCP ones), and a
//! connection idle longer than `server.idle_timeout` is closed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What one connection shares with its budget.
#[derive(Debug)]
pub struct Conn {
    /// A request on it presented a valid credential: it is no longer displaceable.
    pub authenticated: AtomicBool,
    /// Told when the connection must close (displaced).
    pub close: Notify,
    /// Requests being answered on it (keep-alive connections idle between them).
    busy: AtomicU64,
    /// When a request last started or ended (or the connection opened).
    last_active: Mutex<Instant>,
}

impl Default for Conn {
    fn default() -> Self {
        Conn {
            authenticated: AtomicBool::new(false),
            close: Notify::new(),
            busy: AtomicU64::new(0),
            last_active: Mutex::new(Instant::now()),
        }
    }
}

impl Conn {
    fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// A request starts on this connection.
    pub fn request_started(&self) {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.touch();
    }

    /// A request on this connection was answered.
    pub fn request_ended(&self) {
        self.touch();
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }

    /// Resolves once the connection has been idle (no request in flight)
    /// for `limit`.
    pub async fn idle_for(&self, limit: Duration) {
        loop {
            let last = *self.last_active.lock().unwrap_or_else(|p| p.into_inner());
            let due = last + limit;
            if Instant::now() < due {
                tokio::time::sleep_until(due).await;
            } else if self.busy.load(Ordering::Acquire) == 0 {
                return;
            } else {
                // A long request: look again later.
                tokio::time::sleep(limit).await;
            }
        }
    }
}

/// Why a new connection was not admitted, or an old one went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted with room to spare.
    Admitted,
    /// Admitted in place of the oldest unauthenticated connection.
    Displaced,
    /// Refused: full, and every connection authenticated.
    Full,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    conn: Arc<Conn>,
}

/// One listener's budget.
#[derive(Debug)]
pub struct Budget {
    cap: usize,
    entries: Mutex<VecDeque<Entry>>,
    next_id: AtomicU64,
}

/// A connection's place in a budget; leaving it frees the place.
#[derive(Debug)]
pub struct Ticket {
    budget: Arc<Budget>,
    id: u64,
    pub conn: Arc<Conn>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.budget.lock().retain(|e| e.id != self.id);
    }
}

impl Budget {
    pub fn new(cap: usize) -> Arc<Budget> {
        Arc::new(Budget {
            cap: cap.max(1),
            entries: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Entry>> {
        // Entries are pushed and removed whole: a poisoned lock holds no
        // half-made entry.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a new connection, displacing the oldest unauthenticated one
    /// when full. `None` when full of authenticated connections.
    pub fn admit(self: &Arc<Self>) -> (Option<Ticket>, Outcome) {
        let mut entries = self.lock();
        let mut outcome = Outcome::Admitted;
        if entries.len() >= self.cap {
            let oldest = entries
                .iter()
                .position(|e| !e.conn.authenticated.load(Ordering::Acquire));
            match oldest.and_then(|i| entries.remove(i)) {
                Some(displaced) => {
                    displaced.conn.close.notify_one();
                    outcome = Outcome::Displaced;
                }
                None => return (None, Outcome::Full),
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::default());
        entries.push_back(Entry {
            id,
            conn: Arc::clone(&conn),
        });
        drop(entries);
        (
            Some(Ticket {
                budget: Arc::clone(self),
                id,
                conn,
            }),
            outcome,
        )
    }

    /// Connections held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_unauthenticated_connection_gives_way() {
        let budget = Budget::new(3);
        let (a, _) = budget.admit();
        let (b, _) = budget.admit();
        let (c, outcome) = budget.admit();
        assert_eq!(outcome, Outcome::Admitted);
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        a.conn.authenticated.store(true, Ordering::Release);
        // Full: b (the oldest unauthenticated) is displaced, a is kept.
        let (d, outcome) = budget.admit();
        assert_eq!(outcome, Outcome::Displaced);
        assert_eq!(budget.len(), 3);
        // b was told to close (a permit is stored for it).
        let told = futures_util::FutureExt::now_or_never(b.conn.close.notified());
        assert!(told.is_some());
        drop(b); // its task ends: nothing more to free
        assert_eq!(budget.len(), 3);
        c.conn.authenticated.store(true, Ordering::Release);
        d.as_ref()
            .unwrap()
            .conn
            .authenticated
            .store(true, Ordering::Release);
        // Full of authenticated callers: refused.
        let (e, outcome) = budget.admit();
        assert!(e.is_none());
        assert_eq!(outcome, Outcome::Full);
        // A caller leaving frees its place.
        drop(c);
        let (f, outcome) = budget.admit();
        assert!(f.is_some());
        assert_eq!(outcome, Outcome::Admitted);
        drop((a, d, f));
        assert!(budget.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_between_requests() {
        let budget = Budget::new(1);
        let (ticket, _) = budget.admit();
        let conn = Arc::clone(&ticket.unwrap().conn);
        let started = Instant::now();
        conn.request_started();
        // A slow request is not idleness.
        let idle = tokio::spawn({
            let conn = Arc::clone(&conn);
            async move { conn.idle_for(Duration::from_secs(60)).await }
        });
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert!(!idle.is_finished());
        conn.request_ended();
        idle.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(150));
    }
}
