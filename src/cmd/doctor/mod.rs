//! `dockgate doctor`: talks to every upstream server from where dockgate runs, reads the
//! server certificate, and prints one verdict per check (`ok`, `warn`, `FAIL`) with what was
//! seen and the fix, then a summary. The checks are in `reach` (`/v2/` and the auth
//! challenge), `put` (writable, `X-Forwarded-Host`), `get` (reads, `--image`) and `cert`.

mod cert;
mod get;
mod probe;
mod put;
mod reach;
mod realm;

use std::fmt;
use std::io::Write;

use crate::config::{Config, Target, UpstreamUrl};

use probe::Probe;

/// Runs every check against `config`; true when none failed.
pub fn run(config: &Config, image: Option<&str>) -> bool {
    let mut report = Report::default();
    // One request at a time, in the order the lines are printed: a current-thread runtime is
    // all that needs.
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(upstreams(config, image, &mut report)),
        Err(e) => report.add(Verdict::fail(
            "doctor",
            "runtime",
            format!("cannot start an async runtime: {e}"),
            "free some threads or memory and run doctor again",
        )),
    }
    cert::check(config, &mut report);
    report.summary()
}

/// Every server of every upstream: does it answer, how does it ask for credentials, and does
/// it do its upstream's job (put takes uploads, get serves reads).
async fn upstreams(config: &Config, image: Option<&str>, report: &mut Report) {
    let probe = Probe::new(config);
    let origins: Vec<&UpstreamUrl> = config
        .upstreams
        .iter()
        .flat_map(|(_, s)| s.servers())
        .collect();
    for (target, spec) in config.upstreams.iter() {
        for url in spec.servers() {
            let subject = format!("{} {url}", target.as_str());
            match target {
                Target::Put => {
                    if reach::registry(&probe, report, &subject, url, &origins).await
                        && put::writable(&probe, report, &subject, url).await
                    {
                        put::forwarded_host(&probe, report, &subject, url, &config.headers).await;
                    }
                }
                Target::Get => {
                    if reach::registry(&probe, report, &subject, url, &origins).await {
                        get::reads(&probe, report, &subject, url).await;
                    }
                }
                // Not registries: the Nexus UI, a token service. Answering is their whole check.
                Target::Web | Target::Token => {
                    reach::answers(&probe, report, &subject, target, url).await
                }
            }
        }
        if let (Target::Get, Some(image)) = (target, image) {
            get::image(&probe, report, spec, image).await;
        }
    }
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`, so that `{:<4}` lines the verdicts up.
        f.pad(match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        })
    }
}

/// One printed line: `LEVEL SUBJECT CHECK: what was seen; fix: what to do`.
#[derive(Debug)]
pub struct Verdict {
    pub level: Level,
    /// `put http://nexus:8082`, `tls`.
    pub subject: String,
    pub check: &'static str,
    pub seen: String,
    pub fix: Option<String>,
}

impl Verdict {
    pub fn ok(subject: &str, check: &'static str, seen: String) -> Verdict {
        Verdict {
            level: Level::Ok,
            subject: subject.to_string(),
            check,
            seen,
            fix: None,
        }
    }

    pub fn warn(
        subject: &str,
        check: &'static str,
        seen: String,
        fix: impl Into<String>,
    ) -> Verdict {
        Verdict {
            level: Level::Warn,
            fix: Some(fix.into()),
            ..Verdict::ok(subject, check, seen)
        }
    }

    pub fn fail(
        subject: &str,
        check: &'static str,
        seen: String,
        fix: impl Into<String>,
    ) -> Verdict {
        Verdict {
            level: Level::Fail,
            fix: Some(fix.into()),
            ..Verdict::ok(subject, check, seen)
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<4} {} {}: {}",
            self.level, self.subject, self.check, self.seen
        )?;
        match &self.fix {
            Some(fix) => write!(f, "; fix: {fix}"),
            None => Ok(()),
        }
    }
}

/// The verdicts so far: each printed as it comes, so a slow server shows where doctor is.
#[derive(Default)]
pub struct Report {
    counts: [usize; 3],
}

impl Report {
    pub fn add(&mut self, verdict: Verdict) {
        // A reader gone (`doctor | head`) is no reason to stop checking or to panic.
        let _ = writeln!(std::io::stdout(), "{verdict}");
        self.counts[verdict.level as usize] += 1;
    }

    /// Prints the totals; true when nothing failed.
    fn summary(&self) -> bool {
        let [ok, warn, fail] = self.counts;
        let _ = writeln!(
            std::io::stdout(),
            "doctor: {ok} ok, {warn} warn, {fail} FAIL"
        );
        fail == 0
    }
}
