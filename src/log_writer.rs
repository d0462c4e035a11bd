//! Where log lines go: stderr, in batches. A busy gateway logs an access
//! line per request; a `write` per line is a system call (and a wake-up of
//! journald or whatever reads the pipe) per request, a tenth of a proxied
//! GET's cost (BENCHMARKS.md, "the gateway's own work"). So lines are
//! gathered and written together at most [`FLUSH_EVERY`] after the first
//! of a batch, as nginx's `access_log … buffer= flush=` does.
//!
//! Nothing waits on that: a warning or an error is written at once, with
//! the lines before it, so what goes wrong is never late or out of order;
//! more than [`MAX_HELD`] bytes held (the reader stalled) are written by the
//! logging thread itself, as unbatched logging would; and the [`LogGuard`]
//! that `serve` holds writes what is left when it ends.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The longest an info line waits to be written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Bytes held before the logging thread writes them itself.
pub const MAX_HELD: usize = 256 * 1024;

/// Log lines on their way to `W` (stderr when serving).
pub struct Batched<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
}

struct Shared<W> {
    held: Mutex<Vec<u8>>,
    /// Signalled when a batch starts (the flusher sleeps until then).
    started: Condvar,
    /// Taken while a batch is written, so batches land in order.
    sink: Mutex<W>,
    /// Whether lines may be held: a flusher thread runs (else each line
    /// is written at once).
    batching: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A thread that panicked while logging left whole lines or none.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<W: Write + Send + 'static> Shared<W> {
    /// Writes every held line (in order with any other flush).
    fn flush(&self) {
        let mut sink = lock(&self.sink);
        let batch = std::mem::take(&mut *lock(&self.held));
        if !batch.is_empty() {
            // Logging has nowhere to report its own failure.
            let _ = sink.write_all(&batch);
            let _ = sink.flush();
        }
    }
}

impl<W: Write + Send + 'static> Batched<W> {
    /// Lines to `sink`, written by a thread of their own in batches; if
    /// that thread cannot start, each line at once.
    pub fn new(sink: W) -> Batched<W> {
        let batched = Batched::with(sink, false);
        let weak = Arc::downgrade(&batched.shared);
        let spawned = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || flush_in_batches(&weak));
        batched
            .shared
            .batching
            .store(spawned.is_ok(), Ordering::Release);
        batched
    }

    fn with(sink: W, batching: bool) -> Batched<W> {
        Batched {
            shared: Arc::new(Shared {
                held: Mutex::new(Vec::new()),
                started: Condvar::new(),
                sink: Mutex::new(sink),
                batching: AtomicBool::new(batching),
            }),
        }
    }

    /// Lines held until a warning, [`MAX_HELD`], a flush or the guard: no
    /// flusher thread, so the tests decide when batches are written.
    #[cfg(test)]
    fn held(sink: W) -> Batched<W> {
        Batched::with(sink, true)
    }

    /// Writes what is held now.
    pub fn flush(&self) {
        self.shared.flush();
    }

    /// A guard that writes what is held when dropped.
    pub fn guard(&self) -> LogGuard {
        let shared = Arc::clone(&self.shared);
        LogGuard {
            flush: Box::new(move || shared.flush()),
        }
    }
}

/// The flusher: sleeps until a batch starts, lets it gather for
/// [`FLUSH_EVERY`], writes it. Ends with the last [`Batched`].
fn flush_in_batches<W: Write + Send + 'static>(shared: &std::sync::Weak<Shared<W>>) {
    loop {
        let Some(s) = shared.upgrade() else {
            return;
        };
        {
            let held = lock(&s.held);
            if held.is_empty() {
                // Woken when a line starts a batch, or now and then to
                // see whether logging is gone.
                let _ = s
                    .started
                    .wait_timeout(held, Duration::from_secs(1))
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
        }
        drop(s);
        std::thread::sleep(FLUSH_EVERY);
        match shared.upgrade() {
            Some(s) => s.flush(),
            None => return,
        }
    }
}

impl<W: Write + Send + 'static> std::fmt::Debug for Batched<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batched")
            .field("held_bytes", &lock(&self.shared.held).len())
            .finish()
    }
}

/// Writes what is left when `serve` ends.
pub struct LogGuard {
    flush: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogGuard")
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        (self.flush)();
    }
}

/// One event's line, added to the batch when the event is formatted.
pub struct Line<'a, W: Write + Send + 'static> {
    shared: &'a Shared<W>,
    urgent: bool,
    line: Vec<u8>,
}

impl<W: Write + Send + 'static> std::fmt::Debug for Line<'_, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The line may hold anything logged: its length only.
        f.debug_struct("Line")
            .field("urgent", &self.urgent)
            .field("bytes", &self.line.len())
            .finish()
    }
}

impl<W: Write + Send + 'static> Write for Line<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for Line<'_, W> {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let (started, full) = {
            let mut held = lock(&self.shared.held);
            let started = held.is_empty();
            held.extend_from_slice(&self.line);
            (started, held.len() >= MAX_HELD)
        };
        if self.urgent || full || !self.shared.batching.load(Ordering::Acquire) {
            self.shared.flush();
        } else if started {
            self.shared.started.notify_one();
        }
    }
}

impl<'a, W: Write + Send + 'static> MakeWriter<'a> for Batched<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Line<'a, W> {
        self.line(false)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line<'a, W> {
        // Levels order by verbosity: ERROR < WARN < INFO.
        self.line(*meta.level() <= Level::WARN)
    }
}

impl<W: Write + Send + 'static> Batched<W> {
    fn line(&self, urgent: bool) -> Line<'_, W> {
        Line {
            shared: &self.shared,
            urgent,
            line: Vec::new(),
        }
    }
}

/// A writer tests read back (this module's, the JSON formatter's, the
/// access lines'): every write, as one string.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Sink(Arc<Mutex<Vec<u8>>>);

#[cfg(test)]
impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl<'a> MakeWriter<'a> for Sink {
    type Writer = Sink;
    fn make_writer(&'a self) -> Sink {
        self.clone()
    }
}

#[cfg(test)]
impl Sink {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(lock(&self.0).clone()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<W: Write + Send + 'static>(b: &Batched<W>, level: Level, text: &str) {
        let mut w = b.line(level <= Level::WARN);
        w.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn info_lines_wait_for_the_batch_and_a_warning_takes_them_along_in_order() {
        let sink = Sink::default();
        let b = Batched::held(sink.clone());
        line(&b, Level::INFO, "one\n");
        line(&b, Level::INFO, "two\n");
        assert_eq!(sink.text(), "");
        line(&b, Level::WARN, "careful\n");
        assert_eq!(sink.text(), "one\ntwo\ncareful\n");
        line(&b, Level::INFO, "three\n");
        line(&b, Level::ERROR, "broken\n");
        assert_eq!(sink.text(), "one\ntwo\ncareful\nthree\nbroken\n");
    }

    #[test]
    fn the_flusher_writes_a_batch_without_being_asked() {
        let sink = Sink::default();
        let b = Batched::new(sink.clone());
        line(&b, Level::INFO, "access\n");
        // Waits for the flusher (FLUSH_EVERY, 50 ms), at most 10 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.text().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(sink.text(), "access\n");
    }

    #[test]
    fn too_much_held_is_written_by_the_logging_thread_and_the_guard_writes_the_rest() {
        let sink = Sink::default();
        let b = Batched::held(sink.clone());
        let guard = b.guard();
        line(&b, Level::INFO, "held\n");
        let big = "x".repeat(MAX_HELD);
        line(&b, Level::INFO, &big);
        assert_eq!(sink.text().len(), "held\n".len() + MAX_HELD);
        line(&b, Level::INFO, "last\n");
        assert!(!sink.text().ends_with("last\n"));
        drop(guard);
        assert!(sink.text().ends_with("xlast\n"));
    }

    #[test]
    fn through_tracing_an_info_event_is_held_and_a_warning_is_not() {
        let sink = Sink::default();
        let b = Batched::held(sink.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(b)
            .finish();
        let probe = sink.clone();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("served");
            assert_eq!(probe.text(), "");
            tracing::warn!("Entra is slow");
        });
        let text = sink.text();
        let served = text.find("served").unwrap();
        let warned = text.find("Entra is slow").unwrap();
        assert!(served < warned, "{text}");
    }

    #[test]
    fn without_a_flusher_every_line_is_written_at_once() {
        let sink = Sink::default();
        let b = Batched::with(sink.clone(), false);
        line(&b, Level::INFO, "now\n");
        assert_eq!(sink.text(), "now\n");
    }
}
