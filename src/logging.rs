//! Logging on stderr: the tracing subscriber, and the buffer that access lines wait in.
//!
//! A `write(2)` per access line is a system call per request that nginx's tuned config
//! (`access_log ... buffer=64k`) does not make. So `serve` gathers access lines in a buffer that
//! goes out in one write when a runtime worker runs out of work (`flush_when_idle`, the runtime's
//! park hook), when it holds `log.access_buffer` bytes, and at least once a second. Under load
//! many lines share a write; an idle gateway's line still appears as soon as its response is done. Every
//! other event (warnings, errors, failed requests) is written at once, after whatever is
//! buffered, so stderr keeps the order in which things happened.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, Once, PoisonError};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// The target of access lines (`tracing::event!(target: ACCESS, ...)`).
pub const ACCESS: &str = "access";

/// Sets the global subscriber: `RUST_LOG` (default `info`) in `format`, on stderr. Lines are
/// written at once until `buffer_access_lines` says otherwise.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr)
        .with_ansi(io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    // A panic's message goes straight to stderr: what was logged before it comes first.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // try_lock: the panicking thread may be the one holding the buffer.
        if let Ok(mut buf) = BUFFER.try_lock() {
            write_out(&mut buf);
        }
        report(info);
    }));
}

/// Buffer up to `bytes` of access lines (0: write each line at once). Called at start and on
/// every reload; the first call with a buffer starts the once-a-second flush.
pub fn buffer_access_lines(bytes: usize) {
    let bytes = if NO_FLUSHER.load(Ordering::Relaxed) {
        0
    } else {
        bytes
    };
    CAPACITY.store(bytes, Ordering::Relaxed);
    if bytes == 0 {
        flush();
        return;
    }
    static TICK: Once = Once::new();
    TICK.call_once(|| {
        // A worker that never runs out of work never parks; this bounds how late a line can be.
        let spawned = std::thread::Builder::new()
            .name("dockgate-log".into())
            .spawn(|| loop {
                std::thread::sleep(FLUSH_AT_LEAST_EVERY);
                flush_when_idle();
            });
        if let Err(e) = spawned {
            NO_FLUSHER.store(true, Ordering::Relaxed);
            CAPACITY.store(0, Ordering::Relaxed);
            tracing::warn!(error = %e, "cannot start the log flusher; access lines are written one by one");
        }
    });
}

/// The runtime's `on_thread_park` hook: a worker with nothing left to do writes what waits.
pub fn flush_when_idle() {
    if PENDING.load(Ordering::Relaxed) {
        flush();
    }
}

/// Writes whatever access lines wait (before exit, and from the hooks above).
pub fn flush() {
    let mut buf = BUFFER.lock().unwrap_or_else(PoisonError::into_inner);
    write_out(&mut buf);
}

const FLUSH_AT_LEAST_EVERY: Duration = Duration::from_secs(1);

static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());
/// `log.access_buffer`; 0 until `serve` sets it.
static CAPACITY: AtomicUsize = AtomicUsize::new(0);
/// The flusher thread could not start: write line by line, whatever the config says.
static NO_FLUSHER: AtomicBool = AtomicBool::new(false);
/// Lets an idle worker skip the lock when nothing waits.
static PENDING: AtomicBool = AtomicBool::new(false);

fn write_out(buf: &mut Vec<u8>) {
    if buf.is_empty() {
        return;
    }
    // stderr that cannot be written to (a closed pipe) loses the lines, as it did unbuffered.
    let _ = sink(buf);
    buf.clear();
    PENDING.store(false, Ordering::Relaxed);
}

#[cfg(not(test))]
fn sink(bytes: &[u8]) -> io::Result<()> {
    io::stderr().write_all(bytes)
}

/// What the unit tests read instead of stderr.
#[cfg(test)]
static WRITTEN: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

#[cfg(test)]
fn sink(bytes: &[u8]) -> io::Result<()> {
    WRITTEN.lock().unwrap().push(bytes.to_vec());
    Ok(())
}

/// The subscriber's writer: picks, per event, whether its line may wait.
struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { may_wait: false }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        // A failed request's line (WARN) is news: it goes out at once, like any warning.
        Line {
            may_wait: meta.target() == ACCESS && *meta.level() == Level::INFO,
        }
    }
}

/// One event's formatted text (the subscriber writes it with a single `write_all`).
struct Line {
    may_wait: bool,
}

impl Write for Line {
    fn write(&mut self, text: &[u8]) -> io::Result<usize> {
        let capacity = CAPACITY.load(Ordering::Relaxed);
        let mut buf = BUFFER.lock().unwrap_or_else(PoisonError::into_inner);
        if buf.is_empty() && !(self.may_wait && capacity > 0) {
            sink(text)?;
            return Ok(text.len());
        }
        buf.extend_from_slice(text);
        PENDING.store(true, Ordering::Relaxed);
        if !self.may_wait || buf.len() >= capacity {
            write_out(&mut buf);
        }
        Ok(text.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written() -> Vec<String> {
        let mut w = WRITTEN.lock().unwrap();
        w.drain(..).map(|b| String::from_utf8(b).unwrap()).collect()
    }

    fn line(may_wait: bool, text: &str) {
        Line { may_wait }.write_all(text.as_bytes()).unwrap();
    }

    // One test: the buffer is process-wide.
    #[test]
    fn access_lines_wait_until_full_idle_or_news_and_keep_their_order() {
        CAPACITY.store(16, Ordering::Relaxed);
        line(true, "a1\n");
        line(true, "a2\n");
        assert!(written().is_empty(), "6 of 16 bytes wait");
        line(false, "WARN\n");
        assert_eq!(
            written(),
            ["a1\na2\nWARN\n"],
            "news goes out after what waited"
        );

        line(true, "a3\n");
        flush_when_idle();
        assert_eq!(written(), ["a3\n"], "an idle worker writes what waits");
        flush_when_idle();
        assert!(written().is_empty(), "nothing waits, nothing written");

        for i in 0..5 {
            line(true, &format!("b{i}\n"));
        }
        assert!(written().is_empty(), "15 of 16 bytes wait");
        line(true, "b5\n");
        assert_eq!(written(), ["b0\nb1\nb2\nb3\nb4\nb5\n"], "full: one write");
        line(true, "c\n");
        flush();
        assert_eq!(written(), ["c\n"]);

        CAPACITY.store(0, Ordering::Relaxed);
        line(true, "d\n");
        line(true, "e\n");
        assert_eq!(
            written(),
            ["d\n", "e\n"],
            "access_buffer = 0: one write per line"
        );
    }
}
