//! `gah-boinc-harness`: a **test harness** that lets the integration tests run gentoo@home's
//! `gah-app` under Debian's real BOINC client, end to end, on 127.0.0.1 only. Product code
//! never depends on this crate.
//!
//! - [`server::Harness`] plays just enough of a BOINC project's server side: the master page,
//!   the scheduler RPC (`scheduler_request` → `scheduler_reply` with `app`, `file_info`,
//!   `workunit`, `result`, `result_ack`, `request_delay`, `message`), file download (with
//!   `Range`), and the upload handler protocol (`get_file_size`, `file_upload`). When the
//!   client reports a result it runs `gah_validator::init` (and `compare` once a quorum of two
//!   or more is valid) and `gah_assimilator::assimilate` into `results/results.sqlite`, like
//!   BOINC's `script_validator`/`script_assimilator` would with the `gah-*` binaries.
//!   The app comes by anonymous platform (the client's `app_info.xml`) or server-sent
//!   ([`server::Harness::add_app_versions`]): [`app_versions`] plays `update_versions`
//!   (signing every file with the project's code-signing key in BOINC's format, staging,
//!   gzip) and the scheduler's app version XML, with the key and the plan class's
//!   `avg_ncpus` and `--memory_size_mb`/`--nthreads` command line in the reply.
//!   With [`server::HarnessConfig::daemons`] set, validation and assimilation instead run
//!   the installed programs through [`boinc_scripts`], BOINC's own command-line rules, with
//!   the `config.xml` lines of `templates/README.md`.
//! - [`create_work`]: what the real server does around the scheduler, copied with its BOINC
//!   source named: workunits built from `templates/gah_in` by `create_work`'s rules (every
//!   `<file_info>` needs a staged file, the template's `<workunit>` values win), `file_deleter`
//!   removing a decided workunit's inputs unless `<no_delete/>`, and the plan class additions
//!   to the app's command line.
//! - [`client::Client`] runs `/usr/bin/boinc` in a private `--dir`, attached through an
//!   account file, and talks to it with `boinccmd`; dropping it kills the client, its app and
//!   any guest, so no qemu outlives a test, even a failing one.
//!
//! ```no_run
//! use gah_boinc_harness::{client::{Client, ClientConfig}, server::{Harness, HarnessConfig, WorkunitSpec}};
//! # fn job() -> gah_core::job::Job { unimplemented!() }
//! let tmp = std::path::Path::new("/tmp/x");
//! let harness = Harness::start(HarnessConfig::new(&tmp.join("server"))).unwrap();
//! let results = harness.add_workunit(WorkunitSpec::new("wu1", job())).unwrap();
//! let mut config = ClientConfig::new(&tmp.join("client"), &harness.master_url(), harness.authenticator());
//! config.write().unwrap();
//! // ... put app_info.xml and the app files into config.project_dir() ...
//! let mut client = Client::start(&config).unwrap();
//! // Gives up at once, with the client's log and the task's stderr, if the client exits first.
//! let snap = client
//!     .watch()
//!     .task(&results[0])
//!     .server(&harness)
//!     .until("wu1 decided", std::time::Duration::from_secs(600), |s| {
//!         s.snap.clone().filter(|snap| snap.outcome("wu1") != gah_boinc_harness::server::WuOutcome::Pending)
//!     })
//!     .unwrap();
//! # drop((client, snap));
//! ```
//!
//! Every wait goes through [`wait::poll`]: it stops as soon as what it waits for can no longer
//! happen ([`wait::Ended`]), with the evidence in its [`wait::WaitError`]; the time limit is
//! only the last resort.

pub mod app_versions;
pub mod boinc_scripts;
pub mod client;
pub mod create_work;
pub mod server;
pub mod xml;

/// The harness's log line on the test's stderr (cargo test shows it for a failing test). The
/// one place the harness prints.
#[allow(clippy::print_stderr)]
pub(crate) fn say(line: &str) {
    eprintln!("[harness] {line}");
}

/// Waiting, one way for every wait: poll until the thing holds, and stop at the first poll
/// that shows it can no longer happen instead of sitting out the time limit.
pub mod wait {
    use std::fmt;
    use std::time::{Duration, Instant};

    use crate::client::Task;

    /// One poll's verdict.
    #[derive(Debug)]
    pub enum Step<T> {
        /// What the wait is for holds.
        Done(T),
        /// Not yet.
        Pending,
        /// It can no longer happen.
        Ended(Ended),
    }

    /// Why a wait stopped without what it waited for.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Ended {
        /// The time limit passed (the last resort: nothing said it could not happen).
        TimedOut(Duration),
        /// The client process exited (its exit status, as shown).
        ClientExited(String),
        /// The task is past computing: BOINC's `state` ("compute error", "aborted",
        /// "uploading", ...) and `exit_status`, as `boinccmd` listed it last.
        TaskOver {
            /// `state`.
            state: String,
            /// `exit_status`, when listed.
            exit_status: Option<i64>,
        },
        /// The task left the client's list (reported and acknowledged).
        TaskGone,
        /// The server holds the task's report: it is over.
        Reported {
            /// The client's result state (see `server::client_state`).
            state: i64,
            /// The app's exit status.
            exit_status: i64,
        },
        /// The client put the task off for longer than the wait has left.
        Postponed {
            /// For how long, seconds.
            secs: f64,
            /// The app's reason.
            reason: String,
        },
        /// Every workunit is decided and every result reported: the server's state is final.
        ServerSettled,
        /// A reason of the caller's.
        Other(String),
    }

    impl fmt::Display for Ended {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Ended::TimedOut(d) => write!(f, "not met within the time limit of {d:?}"),
                Ended::ClientExited(s) => write!(f, "the client exited ({s})"),
                Ended::TaskOver { state, exit_status: Some(x) } => write!(f, "the task ended: {state}, exit status {x}"),
                Ended::TaskOver { state, exit_status: None } => write!(f, "the task ended: {state}"),
                Ended::TaskGone => write!(f, "the task left the client's task list"),
                Ended::Reported { state, exit_status } => write!(
                    f,
                    "the server already holds the task's report: {} (client state {state}), exit status {exit_status}",
                    crate::server::client_state::name(*state)
                ),
                Ended::Postponed { secs, reason } => write!(f, "the client postponed the task for {secs:.0} s: {reason}"),
                Ended::ServerSettled => write!(f, "every workunit is decided and every result reported: nothing more will come"),
                Ended::Other(why) => f.write_str(why),
            }
        }
    }

    /// A wait that stopped: what it waited for, why it stopped, and the evidence (logs).
    pub struct WaitError {
        /// What was waited for.
        pub what: String,
        /// Why it stopped.
        pub ended: Ended,
        /// After how long.
        pub after: Duration,
        /// The task as `boinccmd` listed it last, when a task was watched (boxed: keeps the
        /// error small).
        pub task: Option<Box<Task>>,
        /// The logs that say why, labelled.
        pub evidence: String,
    }

    impl fmt::Display for WaitError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}: gave up after {:.1} s: {}\n{}", self.what, self.after.as_secs_f64(), self.ended, self.evidence)
        }
    }

    // `expect` shows the error's Debug: make it the readable message, logs and all.
    impl fmt::Debug for WaitError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            fmt::Display::fmt(self, f)
        }
    }

    impl std::error::Error for WaitError {}

    /// How a [`poll`] stopped, before the caller adds the evidence.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Stopped {
        /// Why.
        pub ended: Ended,
        /// After how long.
        pub after: Duration,
    }

    impl Stopped {
        /// The error, with what was waited for and the evidence.
        pub fn into_error(self, what: &str, task: Option<Task>, evidence: String) -> WaitError {
            WaitError { what: what.into(), ended: self.ended, after: self.after, task: task.map(Box::new), evidence }
        }
    }

    /// Calls `step` every `every` until it is done or ended, or `limit` passed.
    pub fn poll<T>(limit: Duration, every: Duration, mut step: impl FnMut() -> Step<T>) -> Result<T, Stopped> {
        let start = Instant::now();
        loop {
            match step() {
                Step::Done(t) => return Ok(t),
                Step::Ended(ended) => return Err(Stopped { ended, after: start.elapsed() }),
                Step::Pending => {}
            }
            if start.elapsed() >= limit {
                return Err(Stopped { ended: Ended::TimedOut(limit), after: start.elapsed() });
            }
            std::thread::sleep(every.min(limit.saturating_sub(start.elapsed())).max(Duration::from_millis(10)));
        }
    }

    /// The last `n` lines of `text`.
    pub fn tail(text: &str, n: usize) -> String {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn poll_stops_at_the_poll_that_says_it_cannot_happen() {
            let mut polls = 0;
            let r: Result<(), Stopped> = poll(Duration::from_secs(3600), Duration::from_millis(20), || {
                polls += 1;
                if polls == 3 {
                    Step::Ended(Ended::TaskOver { state: "compute error".into(), exit_status: Some(2) })
                } else {
                    Step::Pending
                }
            });
            let stopped = r.unwrap_err();
            assert_eq!(polls, 3);
            assert!(stopped.after < Duration::from_secs(1), "{stopped:?}");
            let e = stopped.into_error("task mid-build", None, "client log:\nx".into());
            assert_eq!(
                e.to_string().lines().next().map(|l| l.ends_with("the task ended: compute error, exit status 2")),
                Some(true),
                "{e}"
            );
            assert!(format!("{e:?}").contains("client log:\nx"));
        }

        #[test]
        fn poll_times_out_only_as_the_last_resort() {
            let r = poll(Duration::from_millis(100), Duration::from_millis(20), || Step::<()>::Pending);
            assert_eq!(r.unwrap_err().ended, Ended::TimedOut(Duration::from_millis(100)));
            assert_eq!(poll(Duration::ZERO, Duration::from_secs(1), || Step::Done(7)), Ok(7));
        }
    }
}
