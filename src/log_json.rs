//! The broker's own JSON log lines, written straight into the line.
//!
//! tracing-subscriber's JSON formatter serialises each line through serde
//! into an `io::Write` adapter that checks every fragment is UTF-8 before
//! it reaches the line: about 130 fragments, a seventh of a gateway
//! request's own work, for the access line alone (BENCHMARKS.md, "the
//! gateway's own work"). [`JsonLines`] writes the same line, byte for byte,
//! with the fields pushed straight into it. It does so for events of the
//! broker's own targets outside any span (every event the broker logs);
//! everything else (a library's event, a span's context, a record from the
//! `log` crate) goes to tracing-subscriber's formatter as before. The tests
//! below hold the two outputs equal. One difference: a field whose `Debug`
//! fails drops the line here, where tracing-subscriber panics.

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::time::{Duration, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, Format, Json, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The targets written directly: the broker's own.
const OWN_TARGET: &str = "tokenbroker";

/// `--log-format json`: one object per line, the event's fields flattened
/// into it (`timestamp`, `level`, the fields, `target`).
#[derive(Debug)]
pub struct JsonLines<T = Clock> {
    timer: T,
    stock: Format<Json, T>,
}

impl JsonLines {
    pub fn new() -> JsonLines {
        JsonLines::with_timer(Clock)
    }
}

impl Default for JsonLines {
    fn default() -> JsonLines {
        JsonLines::new()
    }
}

impl<T: FormatTime + Clone> JsonLines<T> {
    fn with_timer(timer: T) -> JsonLines<T> {
        let stock = format::format()
            .json()
            .flatten_event(true)
            .with_timer(timer.clone());
        JsonLines { timer, stock }
    }
}

impl<S, N, T> FormatEvent<S, N> for JsonLines<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        // A `log` record's target is "log"; a span adds "span" and "spans".
        let direct = meta.target().starts_with(OWN_TARGET)
            && event.parent().is_none()
            && ctx.lookup_current().is_none();
        if !direct {
            return self.stock.format_event(ctx, writer, event);
        }
        writer.write_str("{\"timestamp\":\"")?;
        // The timer writes digits, '-', ':', '.', 'T' and 'Z' only.
        self.timer.format_time(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\"", meta.level())?;
        let mut fields = Fields {
            line: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        string(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// Each field as `,"name":value`, typed as tracing-serde types it: bool and
/// numbers bare, anything else a string (of its `Debug` form).
struct Fields<'a, W> {
    line: &'a mut W,
    result: fmt::Result,
}

impl<W: Write> Fields<'_, W> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self
                .line
                .write_char(',')
                .and_then(|()| string(self.line, field.name()))
                .and_then(|()| self.line.write_char(':'))
                .and_then(|()| value(self.line));
        }
    }
}

impl<W: Write> Visit for Fields<'_, W> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json's form of a float (shortest round trip; null if not finite).
        self.entry(field, |w| match serde_json::to_string(&value) {
            Ok(number) => w.write_str(&number),
            Err(_) => w.write_str("null"),
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |w| string(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// tracing-subscriber's [`SystemTime`] (`2026-12-03T14:00:00.123456Z`, UTC),
/// the part up to the second formatted once a second per thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock;

/// The first second of the year 10000, which [`SystemTime`] writes as
/// `+10000`: from there on, and before 1970, a clock that cannot be right,
/// [`SystemTime`] writes the time itself.
const LAST_SECOND: u64 = 253_402_300_800;

thread_local! {
    /// The second last written, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl FormatTime for Clock {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        write_time(w, std::time::SystemTime::now())
    }
}

fn write_time(w: &mut impl Write, now: std::time::SystemTime) -> fmt::Result {
    let Some(since) = now
        .duration_since(UNIX_EPOCH)
        .ok()
        .filter(|d| d.as_secs() < LAST_SECOND)
    else {
        let mut text = String::new();
        SystemTime.format_time(&mut Writer::new(&mut text))?;
        return w.write_str(&text);
    };
    let second = since.as_secs();
    // A thread logging while it ends has no cache left: uncached, then.
    let cached = SECOND.try_with(|cell| {
        let mut cell = cell.try_borrow_mut().ok()?;
        let (cached, text) = &mut *cell;
        if *cached != second {
            *text = up_to(second);
            *cached = second;
        }
        Some(w.write_str(text))
    });
    match cached.ok().flatten() {
        Some(written) => written?,
        None => w.write_str(&up_to(second))?,
    }
    let mut buffer = itoa::Buffer::new();
    let micros = buffer.format(since.subsec_micros());
    w.write_char('.')?;
    for _ in micros.len()..6 {
        w.write_char('0')?;
    }
    w.write_str(micros)?;
    w.write_char('Z')
}

/// `YYYY-MM-DDTHH:MM:SS` of a second since 1970.
fn up_to(second: u64) -> String {
    let whole = UNIX_EPOCH + Duration::from_secs(second);
    let formatted = humantime::format_rfc3339_seconds(whole).to_string();
    formatted.trim_end_matches('Z').to_owned()
}

/// `s` as a JSON string.
fn string<W: Write>(w: &mut W, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(&mut *w).write_str(s)?;
    w.write_char('"')
}

/// Writes what it is given escaped as serde_json escapes a string's
/// contents: `"` and `\` by a backslash, control characters by their short
/// form or `\u00XX`; everything else as it is.
struct Escaped<'a, W>(&'a mut W);

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (at, byte) in s.bytes().enumerate() {
            let short = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0x00..=0x1f => "",
                _ => continue,
            };
            // Only ASCII is escaped, so `plain..at` falls on char boundaries.
            self.0.write_str(s.get(plain..at).unwrap_or_default())?;
            if short.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(short)?;
            }
            plain = at + 1;
        }
        self.0.write_str(s.get(plain..).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::log_writer::Sink;
    use proptest::prelude::*;

    /// A fixed time, so both formatters write the same timestamp.
    #[derive(Clone)]
    struct Fixed;

    impl FormatTime for Fixed {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            w.write_str("2026-12-03T14:00:00.123456Z")
        }
    }

    /// What `emit` logs, through tracing-subscriber's JSON formatter and
    /// through [`JsonLines`].
    fn both(emit: impl Fn()) -> (String, String) {
        let stock = Sink::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_timer(Fixed)
            .with_writer(stock.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, &emit);
        let ours = Sink::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .event_format(JsonLines::with_timer(Fixed))
            .with_writer(ours.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, &emit);
        (stock.text(), ours.text())
    }

    #[derive(Debug)]
    #[allow(dead_code)] // Read through Debug.
    struct Thing {
        name: &'static str,
        n: u8,
    }

    #[test]
    fn the_access_line_is_written_as_tracing_subscriber_writes_it() {
        let (stock, ours) = both(|| {
            tracing::info!(
                target: "tokenbroker::access",
                route = "graph",
                status = 200u16,
                latency_us = 123u64,
                account = Some("mail-sync"),
                tenant = None::<&str>,
                uid = Some(1000u32),
                path = Some("/users/{mailbox}/messages"),
                bytes = Some(2048u64),
                "request"
            );
        });
        assert!(ours.contains("\"route\":\"graph\""), "{ours}");
        assert!(!ours.contains("tenant"), "{ours}");
        assert_eq!(stock, ours);
    }

    #[test]
    fn every_kind_of_field_is_written_as_tracing_subscriber_writes_it() {
        let error = std::io::Error::other("disk \"full\"\n");
        let (stock, ours) = both(|| {
            tracing::warn!(
                yes = true,
                negative = -5i64,
                big = u128::MAX,
                small = i128::MIN,
                half = 0.5f64,
                tiny = 1e-300f64,
                huge = 1e300f64,
                nan = f64::NAN,
                infinite = f64::INFINITY,
                error = &error as &(dyn std::error::Error + 'static),
                thing = ?Thing { name: "a\tb", n: 7 },
                shown = %"tab\there",
                "Entra answered {} for tenant {:?}",
                503,
                "con\"toso\\\u{1}\u{7f}é€😀"
            );
            tracing::error!(r#type = "raw", "field.with.dots" = 1u64);
            tracing::debug!("filtered out or not, the same either way");
        });
        assert!(ours.contains("\"half\":0.5"), "{ours}");
        assert_eq!(stock, ours);
    }

    #[test]
    fn other_targets_and_events_in_a_span_go_to_tracing_subscriber() {
        let (stock, ours) = both(|| {
            tracing::info!(target: "hyper::proto", "a library's line");
            let span = tracing::info_span!("refresh", tenant = "contoso");
            let _entered = span.enter();
            tracing::info!("inside a span");
        });
        assert!(ours.contains("\"spans\""), "{ours}");
        assert_eq!(stock, ours);
    }

    #[test]
    fn the_clock_writes_the_time_as_tracing_subscriber_does() {
        // tracing-subscriber's own, now, against ours a moment later.
        let mut theirs = String::new();
        SystemTime
            .format_time(&mut Writer::new(&mut theirs))
            .unwrap();
        let mut ours = String::new();
        Clock.format_time(&mut Writer::new(&mut ours)).unwrap();
        assert_eq!(theirs.len(), ours.len(), "{theirs} {ours}");
        let at = |s: &str| humantime::parse_rfc3339(s).unwrap();
        let apart = at(&ours).duration_since(at(&theirs)).unwrap();
        assert!(apart < Duration::from_secs(5), "{theirs} {ours}");
        // A clock before 1970 or past the year 9999 is left to
        // tracing-subscriber, which reads the clock itself.
        for odd in [
            UNIX_EPOCH - Duration::from_secs(1),
            UNIX_EPOCH + Duration::from_secs(LAST_SECOND),
        ] {
            let mut left = String::new();
            write_time(&mut left, odd).unwrap();
            let apart = at(&left).duration_since(at(&theirs)).unwrap();
            assert!(apart < Duration::from_secs(5), "{theirs} {left}");
        }
    }

    proptest! {
        #[test]
        fn any_time_is_written_as_humantime_writes_it(secs in 0..LAST_SECOND, micros in 0u32..1_000_000) {
            let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(u64::from(micros));
            let mut ours = String::new();
            write_time(&mut ours, t).unwrap();
            prop_assert_eq!(ours, humantime::format_rfc3339_micros(t).to_string());
        }

        #[test]
        fn any_string_is_escaped_as_serde_json_escapes_it(
            s in prop_oneof![any::<String>(), "[\\x00-\\x7f]{0,40}"]
        ) {
            let mut ours = String::new();
            string(&mut ours, &s).unwrap();
            prop_assert_eq!(ours, serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn any_message_and_field_match_tracing_subscriber(s in "\\PC*|[\\x00-\\x7f]{0,40}", n in any::<u64>()) {
            let (stock, ours) = both(|| {
                tracing::info!(target: "tokenbroker::access", path = s.as_str(), n, "{s}");
            });
            prop_assert_eq!(stock, ours);
        }
    }
}
