//! Connection budgets: how many connections a listener serves at once, and
//! which one gives way when it is full.
//!
//! A connection that has not yet presented a valid credential can be
//! displaced: at the cap, a new connection takes the place of the oldest
//! unauthenticated one, so a local process holding connections open without
//! a secret cannot lock callers out. Each account holds at most its share
//! (`server.max_connections_per_account`): past it, its own oldest idle
//! connection is closed; and at the cap with every connection
//! authenticated, the busiest account's oldest idle connection gives way,
//! so one account cannot starve another. Each listener has its own budget
//! (the Unix socket's callers are never crowded out by TCP ones), and a
//! connection idle longer than `server.idle_timeout` is closed.

use super::access::AccessLine;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
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
    /// When the connection opened.
    opened: Instant,
    /// When a request last started or ended, in µs since `opened` (an
    /// atomic: every request writes it twice).
    last_active_us: AtomicU64,
    /// The account its first authenticated request was for.
    account: OnceLock<Arc<str>>,
    /// Its place in its budget (none for a connection outside one).
    budget: Weak<Budget>,
    id: u64,
    /// Access lines of answered requests, written by the connection's task.
    unwritten: Mutex<Vec<AccessLine>>,
}

impl Default for Conn {
    fn default() -> Self {
        Conn::new(Weak::new(), 0)
    }
}

impl Conn {
    fn new(budget: Weak<Budget>, id: u64) -> Conn {
        Conn {
            authenticated: AtomicBool::new(false),
            close: Notify::new(),
            busy: AtomicU64::new(0),
            opened: Instant::now(),
            last_active_us: AtomicU64::new(0),
            account: OnceLock::new(),
            budget,
            id,
            unwritten: Mutex::new(Vec::new()),
        }
    }

    /// Holds a request's access line until [`Conn::write_access_lines`].
    ///
    /// Formatting and writing a line costs as much as a tenth of a proxied
    /// GET (BENCHMARKS.md, "the gateway's own work"), so it is not done
    /// before the answer goes out: the connection's task writes the lines
    /// after the poll in which hyper queued and flushed the answers, as
    /// nginx logs after it sends (a streamed body, or one the socket could
    /// not take at once, may still be going out), in the same task (a task
    /// of their own woke the other worker thread). Lines still held when
    /// the connection goes are written then: every request keeps its line.
    pub(super) fn answered(&self, line: AccessLine) {
        self.unwritten
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line);
    }

    /// Writes the access lines of the requests answered since the last
    /// call (each writes itself as it is dropped): the connection's task
    /// calls it after each poll of hyper's. Only that task takes the lock,
    /// so writing under it keeps nobody waiting, and the list keeps its
    /// room for the next.
    pub(super) fn write_access_lines(&self) {
        self.unwritten
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// A request on it presented `account`'s credential: it can no longer
    /// be displaced by an unauthenticated one, and counts against the
    /// account's share (the first account it authenticated as).
    pub fn authenticated_as(&self, account: &str) {
        self.authenticated.store(true, Ordering::Release);
        if self.account.get().is_none() && self.account.set(Arc::from(account)).is_ok() {
            if let Some(budget) = self.budget.upgrade() {
                budget.keep_share(self.id, account);
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }

    fn account(&self) -> Option<&str> {
        self.account.get().map(|a| &**a)
    }

    fn touch(&self, at: Instant) {
        let us = at.saturating_duration_since(self.opened).as_micros();
        self.last_active_us
            .fetch_max(u64::try_from(us).unwrap_or(u64::MAX), Ordering::AcqRel);
    }

    fn last_active(&self) -> Instant {
        self.opened + Duration::from_micros(self.last_active_us.load(Ordering::Acquire))
    }

    /// A request starts on this connection at `at` (the handler's clock
    /// reading, so the hot path reads the clock once for both).
    pub fn request_started(&self, at: Instant) {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.touch(at);
    }

    /// A request on this connection was answered at `at`.
    pub fn request_ended(&self, at: Instant) {
        self.touch(at);
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }

    /// Resolves once the connection has been idle (no request in flight)
    /// for `limit`.
    pub async fn idle_for(&self, limit: Duration) {
        loop {
            let due = self.last_active() + limit;
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
    /// Admitted in place of the oldest unauthenticated connection, or of
    /// the busiest account's oldest idle one.
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
    /// Most connections one account holds.
    per_account: usize,
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
    /// A budget of `cap` connections, at most `per_account` of them one
    /// account's.
    pub fn new(cap: usize, per_account: usize) -> Arc<Budget> {
        Arc::new(Budget {
            cap: cap.max(1),
            per_account: per_account.max(1),
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
                .position(|e| !e.conn.authenticated.load(Ordering::Acquire))
                .or_else(|| busiest_accounts_oldest_idle(&entries));
            match oldest.and_then(|i| entries.remove(i)) {
                Some(displaced) => {
                    displaced.conn.close.notify_one();
                    outcome = Outcome::Displaced;
                }
                None => return (None, Outcome::Full),
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(Arc::downgrade(self), id));
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

    /// Connection `id` now counts for `account`: past the account's share,
    /// its own oldest idle connection (another one) is closed.
    fn keep_share(&self, id: u64, account: &str) {
        let mut entries = self.lock();
        let mine = entries
            .iter()
            .filter(|e| e.conn.account() == Some(account))
            .count();
        if mine <= self.per_account {
            return;
        }
        let oldest_idle = entries
            .iter()
            .position(|e| e.id != id && e.conn.account() == Some(account) && e.conn.is_idle());
        if let Some(gone) = oldest_idle.and_then(|i| entries.remove(i)) {
            gone.conn.close.notify_one();
        }
    }

    /// Connections held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The oldest idle connection of the account holding the most connections
/// among those with one idle (where a full budget of authenticated callers
/// makes room).
fn busiest_accounts_oldest_idle(entries: &VecDeque<Entry>) -> Option<usize> {
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for account in entries.iter().filter_map(|e| e.conn.account()) {
        *counts.entry(account).or_default() += 1;
    }
    entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.conn.is_idle())
        .filter_map(|(i, e)| Some((i, counts.get(e.conn.account()?)?)))
        // The most connections; among equals, the oldest (first) one.
        .max_by_key(|(i, n)| (**n, std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_unauthenticated_connection_gives_way() {
        let budget = Budget::new(3, 3);
        let (a, _) = budget.admit();
        let (b, _) = budget.admit();
        let (c, outcome) = budget.admit();
        assert_eq!(outcome, Outcome::Admitted);
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        a.conn.authenticated_as("a");
        // Full: b (the oldest unauthenticated) is displaced, a is kept.
        let (d, outcome) = budget.admit();
        assert_eq!(outcome, Outcome::Displaced);
        assert_eq!(budget.len(), 3);
        // b was told to close (a permit is stored for it).
        let told = futures_util::FutureExt::now_or_never(b.conn.close.notified());
        assert!(told.is_some());
        drop(b); // its task ends: nothing more to free
        assert_eq!(budget.len(), 3);
        c.conn.authenticated_as("a");
        d.as_ref()
            .unwrap()
            .conn
            .authenticated
            .store(true, Ordering::Release);
        // Full of authenticated callers, each busy with a request: refused.
        for conn in [&a.conn, &c.conn, &d.as_ref().unwrap().conn] {
            conn.request_started(Instant::now());
        }
        let (e, outcome) = budget.admit();
        assert!(e.is_none());
        assert_eq!(outcome, Outcome::Full);
        // A caller leaving frees its place.
        c.conn.request_ended(Instant::now());
        drop(c);
        let (f, outcome) = budget.admit();
        assert!(f.is_some());
        assert_eq!(outcome, Outcome::Admitted);
        drop((a, d, f));
        assert!(budget.is_empty());
    }

    #[test]
    fn one_account_cannot_hold_every_connection() {
        let budget = Budget::new(5, 2);
        let admit = || budget.admit().0.unwrap();
        let (a1, a2, a3) = (admit(), admit(), admit());
        a1.conn.authenticated_as("a");
        a2.conn.authenticated_as("a");
        let told =
            |t: &Ticket| futures_util::FutureExt::now_or_never(t.conn.close.notified()).is_some();
        // A third connection of the same account: its own oldest idle one goes.
        a3.conn.authenticated_as("a");
        assert!(told(&a1) && !told(&a2) && !told(&a3));
        assert_eq!(budget.len(), 2);
        // Another account fills the rest; a busy connection is never closed.
        let (b1, b2) = (admit(), admit());
        b1.conn.authenticated_as("b");
        b2.conn.authenticated_as("b");
        let c1 = admit();
        assert_eq!(budget.len(), 5);
        // Full, all authenticated: a new caller still gets in, in place of
        // the busiest account's oldest idle connection (the accounts tie at
        // two: either may give way, but never a busy one).
        a2.conn.request_started(Instant::now());
        c1.conn.authenticated_as("c");
        let (d, outcome) = budget.admit();
        assert!(d.is_some());
        assert_eq!(outcome, Outcome::Displaced);
        assert!(!told(&a2), "a busy connection is kept");
        assert!(told(&a3) || told(&b1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_between_requests() {
        let budget = Budget::new(1, 1);
        let (ticket, _) = budget.admit();
        let conn = Arc::clone(&ticket.unwrap().conn);
        let started = Instant::now();
        conn.request_started(Instant::now());
        // A slow request is not idleness.
        let idle = tokio::spawn({
            let conn = Arc::clone(&conn);
            async move { conn.idle_for(Duration::from_secs(60)).await }
        });
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert!(!idle.is_finished());
        conn.request_ended(Instant::now());
        idle.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(150));
    }
}
