//! Logging on stderr: the tracing subscriber, and the buffer that access lines wait in.
//!
//! A `write(2)` per access line is a system call per request that nginx's tuned config
//! (`access_log ... buffer=64k`) does not make. So `serve` gathers access lines in a buffer that
//! goes out in one write when a runtime worker runs out of work (`flush_when_idle`, the runtime's
//! park hook), when it holds `log.access_buffer` bytes, and at least once a second. Under load
//! many lines share a write; an idle gateway's line still appears as soon as its response is done. Every
//! other event (warnings, errors, failed requests) is written at once, after whatever is
//! buffered, so stderr keeps the order in which things happened.
//!
//! Access lines are also formatted here rather than by the subscriber (`access`): its
//! per-field formatting (a visitor, `fmt::Write` per piece, colour codes even when off) was
//! about 14% of the instructions of a small GET (callgrind). The bytes are the ones the
//! subscriber writes, which a unit test checks against it for both formats.

use std::io::{self, IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, Once, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    let ansi = io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    // A terminal gets the subscriber's colours; speed does not matter there.
    if !ansi {
        DIRECT.store(
            match format {
                LogFormat::Text => TEXT,
                LogFormat::Json => JSON,
            },
            Ordering::Relaxed,
        );
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

/// How `access` writes: through the subscriber (not ours: tests, a terminal), or itself.
static DIRECT: AtomicU8 = AtomicU8::new(VIA_TRACING);
const VIA_TRACING: u8 = 0;
const TEXT: u8 = 1;
const JSON: u8 = 2;

/// One request's access line.
pub struct Access<'a> {
    pub client: SocketAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub upstream: &'a str,
    pub server: &'a str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub ms: f64,
    pub backfill: Option<&'a str>,
    /// Makes the line a WARN.
    pub error: Option<&'a str>,
}

/// Writes an access line: INFO, or WARN when the request failed. RUST_LOG filters it as the
/// event it is (target `access`).
pub fn access(line: &Access<'_>) {
    let enabled = match line.error {
        None => tracing::enabled!(target: ACCESS, Level::INFO),
        Some(_) => tracing::enabled!(target: ACCESS, Level::WARN),
    };
    if !enabled {
        return;
    }
    let format = DIRECT.load(Ordering::Relaxed);
    if format == VIA_TRACING {
        return access_event(line);
    }
    let may_wait = line.error.is_none();
    let capacity = CAPACITY.load(Ordering::Relaxed);
    let mut buf = BUFFER.lock().unwrap_or_else(PoisonError::into_inner);
    let now = now();
    if format == JSON {
        access_json(&mut buf, &now, line);
    } else {
        access_text(&mut buf, &now, line);
    }
    PENDING.store(true, Ordering::Relaxed);
    if !may_wait || buf.len() >= capacity {
        write_out(&mut buf);
    }
}

/// The line as a tracing event, formatted by whatever subscriber is set.
fn access_event(line: &Access<'_>) {
    // tracing needs the level at compile time; the fields are the same either way.
    macro_rules! event {
        ($level:expr, $($error:tt)*) => {
            tracing::event!(
                target: ACCESS,
                $level,
                client = %line.client,
                method = %line.method,
                path = %line.path,
                route = %line.route,
                upstream = %line.upstream,
                server = %line.server,
                status = line.status,
                bytes_in = line.bytes_in,
                bytes_out = line.bytes_out,
                ms = %Tenths(line.ms),
                backfill = line.backfill,
                $($error)*
            )
        };
    }
    match line.error {
        None => event!(Level::INFO,),
        Some(error) => event!(Level::WARN, error),
    }
}

/// `2026-11-23T16:39:41.126439Z  INFO access: client=... error="..."`, as the text subscriber
/// writes it (strings quoted as `Debug`, everything else as `Display`).
fn access_text(buf: &mut Vec<u8>, now: &str, l: &Access<'_>) {
    let level = if l.error.is_some() { "WARN" } else { "INFO" };
    for piece in [now, "  ", level, " ", ACCESS, ": client="] {
        buf.extend_from_slice(piece.as_bytes());
    }
    push_addr(buf, l.client);
    for (key, value) in [
        (" method=", l.method),
        (" path=", l.path),
        (" route=", l.route),
        (" upstream=", l.upstream),
        (" server=", l.server),
    ] {
        buf.extend_from_slice(key.as_bytes());
        buf.extend_from_slice(value.as_bytes());
    }
    for (key, value) in [
        (" status=", u64::from(l.status)),
        (" bytes_in=", l.bytes_in),
        (" bytes_out=", l.bytes_out),
    ] {
        buf.extend_from_slice(key.as_bytes());
        push_u64(buf, value);
    }
    buf.extend_from_slice(b" ms=");
    push_tenths(buf, l.ms);
    if let Some(b) = l.backfill {
        let _ = write!(buf, " backfill={b:?}");
    }
    if let Some(e) = l.error {
        let _ = write!(buf, " error={e:?}");
    }
    buf.push(b'\n');
}

/// The JSON subscriber's line (`flatten_event`): strings escaped by serde_json as it does.
fn access_json(buf: &mut Vec<u8>, now: &str, l: &Access<'_>) {
    let level = if l.error.is_some() { "WARN" } else { "INFO" };
    let _ = write!(
        buf,
        "{{\"timestamp\":\"{now}\",\"level\":\"{level}\",\"client\":\""
    );
    // An address needs no JSON escaping.
    push_addr(buf, l.client);
    buf.push(b'"');
    for (key, value) in [
        ("method", l.method),
        ("path", l.path),
        ("route", l.route),
        ("upstream", l.upstream),
        ("server", l.server),
    ] {
        let _ = write!(buf, ",\"{key}\":");
        let _ = serde_json::to_writer(&mut *buf, value);
    }
    for (key, value) in [
        (",\"status\":", u64::from(l.status)),
        (",\"bytes_in\":", l.bytes_in),
        (",\"bytes_out\":", l.bytes_out),
    ] {
        buf.extend_from_slice(key.as_bytes());
        push_u64(buf, value);
    }
    buf.extend_from_slice(b",\"ms\":\"");
    push_tenths(buf, l.ms);
    buf.push(b'"');
    for (key, value) in [("backfill", l.backfill), ("error", l.error)] {
        if let Some(value) = value {
            let _ = write!(buf, ",\"{key}\":");
            let _ = serde_json::to_writer(&mut *buf, value);
        }
    }
    let _ = writeln!(buf, ",\"target\":\"{ACCESS}\"}}");
}

/// RFC 3339 in UTC with microseconds, as the subscriber's default timer prints it. The part
/// down to the second is kept from the previous line while the second is the same.
fn now() -> String {
    static SECOND: Mutex<(u64, String)> = Mutex::new((u64::MAX, String::new()));
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut out = String::with_capacity(32);
    {
        let mut second = SECOND.lock().unwrap_or_else(PoisonError::into_inner);
        if second.0 != d.as_secs() {
            *second = (d.as_secs(), to_the_second(d.as_secs()));
        }
        out.push_str(&second.1);
    }
    push_micros(&mut out, d.subsec_micros());
    out
}

#[cfg(test)]
fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut out = to_the_second(d.as_secs());
    push_micros(&mut out, d.subsec_micros());
    out
}

fn push_micros(out: &mut String, micros: u32) {
    let digits = [100_000, 10_000, 1_000, 100, 10, 1].map(|p| b'0' + (micros / p % 10) as u8);
    out.push_str(std::str::from_utf8(&digits).unwrap_or("000000"));
    out.push('Z');
}

/// `2026-11-23T16:39:41.`
fn to_the_second(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

/// A duration in ms to one decimal (`0.7`), in both paths, without float formatting.
struct Tenths(f64);

impl std::fmt::Display for Tenths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenths = (self.0 * 10.0).round() as u64;
        write!(f, "{}.{}", tenths / 10, tenths % 10)
    }
}

fn push_tenths(buf: &mut Vec<u8>, ms: f64) {
    let tenths = (ms * 10.0).round() as u64;
    push_u64(buf, tenths / 10);
    buf.push(b'.');
    buf.push(b'0' + (tenths % 10) as u8);
}

fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// `1.2.3.4:5` without the formatter's padding machinery; IPv6 as `Display` writes it.
fn push_addr(buf: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                push_u64(buf, u64::from(octet));
            }
            buf.push(b':');
            push_u64(buf, u64::from(a.port()));
        }
        SocketAddr::V6(a) => {
            let _ = write!(buf, "{a}");
        }
    }
}

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

    /// A subscriber set up as `init` sets it, with a fixed clock, writing into `out`.
    fn subscriber(json: bool, out: Arc<Mutex<Vec<u8>>>) -> tracing::Dispatch {
        struct Fixed;
        impl tracing_subscriber::fmt::time::FormatTime for Fixed {
            fn format_time(
                &self,
                w: &mut tracing_subscriber::fmt::format::Writer<'_>,
            ) -> std::fmt::Result {
                w.write_str(NOW)
            }
        }
        let writer = move || Captured(out.clone());
        let builder = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .with_timer(Fixed);
        if json {
            builder.json().flatten_event(true).into()
        } else {
            builder.into()
        }
    }

    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const NOW: &str = "2026-11-23T16:39:41.126439Z";

    use std::sync::Arc;

    #[test]
    fn access_lines_are_the_bytes_the_subscriber_writes() {
        let client: SocketAddr = "[::1]:45338".parse().unwrap();
        let lines = [
            Access {
                client,
                method: "GET",
                path: "/v2/bench/manifests/latest",
                route: "manifest",
                upstream: "get",
                server: "127.0.0.1:39509",
                status: 200,
                bytes_in: 0,
                bytes_out: 2048,
                ms: 0.66,
                backfill: None,
                error: None,
            },
            Access {
                client: "192.168.100.250:65535".parse().unwrap(),
                method: "PUT",
                path: "/v2/a%20b\"x\\y/manifests/\u{e9}t\u{1}\u{8}",
                route: "manifest-push",
                upstream: "put",
                server: "-",
                status: 502,
                bytes_in: 1234,
                bytes_out: 0,
                ms: 12345.04,
                backfill: Some("copied=2 bytes=77 \"q\""),
                error: Some("upstream fault: cannot connect: \"x\"\n\ttab \u{1b}[31m"),
            },
        ];
        for json in [false, true] {
            for line in &lines {
                let out = Arc::new(Mutex::new(Vec::new()));
                tracing::dispatcher::with_default(&subscriber(json, out.clone()), || {
                    access_event(line)
                });
                let expected = String::from_utf8(out.lock().unwrap().clone()).unwrap();
                let mut ours = Vec::new();
                if json {
                    access_json(&mut ours, NOW, line);
                } else {
                    access_text(&mut ours, NOW, line);
                }
                assert_eq!(String::from_utf8(ours).unwrap(), expected, "json: {json}");
            }
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let at = |secs: u64, nanos: u32| timestamp(UNIX_EPOCH + Duration::new(secs, nanos));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 999_999_999), "2000-02-29T00:00:00.999999Z");
        assert_eq!(
            at(1_700_000_000, 123_456_789),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(
            at(1_795_451_981, 126_439_000),
            "2026-11-23T16:39:41.126439Z"
        );
        assert_eq!(at(4_107_542_399, 0), "2100-02-28T23:59:59.000000Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
    }
}
