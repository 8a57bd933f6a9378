//! The daemon mode: keep N unsent results on the BOINC server, like BOINC's
//! `sched/sample_work_generator.cpp`. Its loop is: count the unsent results
//! (`count_unsent_results`, a `select count(*) from result where server_state<=2 and
//! appid=…` on the project database: 2 = UNSENT), and when the count is at or below the
//! cushion, create `(cushion - n) / replication` jobs; then sleep.
//!
//! Here the count comes from an [`UnsentSource`] (for a real project, a command such as
//! `mysql -N -e "select count(*) from result where server_state<=2 and appid=(select id from
//! app where name='gah')" gah_db`), and the jobs, taken in rotation order from the queue and
//! never submitted twice, go to a [`Submitter`]: the project's `bin/create_work --stdin`
//! ([`LocalSubmitter`]) or a remote `submit_batch` ([`RemoteSubmitter`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use gah_core::db::Database;
use gah_util::process::{command, run_checked, ProcessError};

use crate::boinc::{create_work_batch_command, create_work_stdin_line, write_data_refs, Submission, Workunit};
use crate::queue::{Queue, QueueError};
use crate::remote::{self, Remote, RemoteError};

/// Another implementation's error, for [`UnsentSource`]s and [`Submitter`]s outside this crate.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The unsent count could not be had.
#[derive(Debug, thiserror::Error)]
pub enum UnsentError {
    /// The count command could not be run or failed (the error names it).
    #[error(transparent)]
    Command(#[from] ProcessError),
    /// The count command printed something else than a count.
    #[error("`{command}` printed `{output}`, not a count")]
    NotACount {
        /// The shell command.
        command: String,
        /// What it printed, trimmed.
        output: String,
        /// The cause.
        #[source]
        source: std::num::ParseIntError,
    },
    /// Another source's failure.
    #[error(transparent)]
    Other(BoxError),
}

/// Jobs that could not be submitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// A template could not be installed into the project.
    #[error("write {}", path.display())]
    Template {
        /// The template's path in the project.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `bin/dir_hier_path` failed for a job file.
    #[error("find where {file} goes (bin/dir_hier_path)")]
    DirHierPath {
        /// The job file's name.
        file: String,
        /// The cause.
        #[source]
        source: ProcessError,
    },
    /// A job file could not be copied into the download hierarchy.
    #[error("stage {} to {}", from.display(), to.display())]
    Stage {
        /// The job file in the queue.
        from: PathBuf,
        /// Where `dir_hier_path` put it.
        to: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The workunits' `data.json` files could not be written.
    #[error(transparent)]
    DataRef(#[from] crate::boinc::DataRefError),
    /// `bin/create_work --stdin` could not be started or failed.
    #[error("create_work in {}", project.display())]
    CreateWork {
        /// The project folder.
        project: PathBuf,
        /// The cause.
        #[source]
        source: ProcessError,
    },
    /// `bin/create_work --stdin` could not be given its jobs or waited for.
    #[error("feed create_work in {} its jobs", project.display())]
    Feed {
        /// The project folder.
        project: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The remote project did not take the batch.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// Another submitter's failure.
    #[error(transparent)]
    Other(BoxError),
}

/// The daemon stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The unsent count failed.
    #[error("count unsent results")]
    Count(#[source] UnsentError),
    /// The queue could not be read or marked.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A batch was not submitted.
    #[error("submit {count} jobs from {first}")]
    Submit {
        /// The batch's first job.
        first: String,
        /// Jobs in the batch.
        count: usize,
        /// The cause.
        #[source]
        source: SubmitError,
    },
}

/// Where the number of unsent results comes from.
pub trait UnsentSource {
    /// The number of results the server has not sent yet.
    fn unsent(&mut self) -> Result<u64, UnsentError>;
}

/// `sh -c COMMAND`, whose stdout is the count (surrounding blanks allowed).
pub struct CommandCount(pub String);

impl UnsentSource for CommandCount {
    fn unsent(&mut self) -> Result<u64, UnsentError> {
        let out = run_checked(command("sh").arg("-c").arg(&self.0).stdin(Stdio::null()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let text = text.trim();
        text.parse().map_err(|source| UnsentError::NotACount { command: self.0.clone(), output: text.to_owned(), source })
    }
}

/// Where jobs are submitted.
pub trait Submitter {
    /// Submits `wus` (all or nothing, as far as the server allows).
    fn submit(&mut self, wus: &[Workunit]) -> Result<(), SubmitError>;
}

/// A local BOINC project: stage each job file with `bin/dir_hier_path`, then one
/// `bin/create_work --stdin` for the batch.
pub struct LocalSubmitter {
    /// The project folder (holds `bin/`, `templates/`).
    pub project: PathBuf,
    /// The queue folder (the job files are `pending/<job_id>.json`).
    pub queue: PathBuf,
    /// The per-workunit values.
    pub sub: Submission,
}

impl LocalSubmitter {
    fn install_templates(&self) -> Result<(), SubmitError> {
        let dir = self.project.join("templates");
        std::fs::create_dir_all(&dir).map_err(|source| SubmitError::Template { path: dir.clone(), source })?;
        for (name, text) in [("gah_in", crate::boinc::INPUT_TEMPLATE), ("gah_out", crate::boinc::OUTPUT_TEMPLATE)] {
            let path = dir.join(name);
            // create_work reads these while we may rewrite them: never half a template.
            gah_util::atomic::write(&path, text.as_bytes()).map_err(|e| SubmitError::Template { path: e.path, source: e.source })?;
        }
        Ok(())
    }

    /// Copies a workunit's job file and its `data.json` to where `bin/dir_hier_path` says
    /// `<wu_name>.json` and `<wu_name>.data.json` go.
    fn stage(&self, wu: &Workunit) -> Result<(), SubmitError> {
        let pending = self.queue.join("pending");
        for (file, from) in
            [(wu.job_file(), pending.join(format!("{}.json", wu.job.job_id))), (wu.data_file(), pending.join(wu.data_file()))]
        {
            let out = run_checked(command(self.project.join("bin/dir_hier_path")).arg(&file).current_dir(&self.project))
                .map_err(|source| SubmitError::DirHierPath { file: file.clone(), source })?;
            let to = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            let to = if to.is_absolute() { to } else { self.project.join(to) };
            if let Err(source) = std::fs::copy(&from, &to) {
                return Err(SubmitError::Stage { from, to, source });
            }
        }
        Ok(())
    }
}

impl Submitter for LocalSubmitter {
    fn submit(&mut self, wus: &[Workunit]) -> Result<(), SubmitError> {
        let Some(first) = wus.first() else { return Ok(()) };
        self.install_templates()?;
        write_data_refs(&self.queue, wus, self.sub.data.as_ref())?;
        let mut lines = String::new();
        for wu in wus {
            self.stage(wu)?;
            lines.push_str(&create_work_stdin_line(wu));
            lines.push('\n');
        }
        let mut cmd = command("sh");
        cmd.arg("-c")
            .arg(create_work_batch_command(&first.job, &self.sub))
            .current_dir(&self.project)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let shown = format!("{cmd:?}");
        let create_work_err = |source| SubmitError::CreateWork { project: self.project.clone(), source };
        let feed_err = |source| SubmitError::Feed { project: self.project.clone(), source };
        let mut child = cmd.spawn().map_err(|source| create_work_err(ProcessError::Start { command: shown.clone(), source }))?;
        // The pipe closes at the end of this statement: create_work sees the end of its input.
        let fed = child.stdin.take().expect("piped stdin").write_all(lines.as_bytes());
        let out = child.wait_with_output().map_err(feed_err)?;
        if !out.status.success() {
            // Its own complaint explains a broken pipe better than the pipe does.
            let stderr_tail = gah_util::process::tail(&out.stderr, 6);
            return Err(create_work_err(ProcessError::Failed { command: shown, status: out.status, stderr_tail }));
        }
        fed.map_err(feed_err)?;
        // Staged into download/ and now the workunits' own (file_deleter removes them there):
        // the queue's copies would only pile up, one per workunit.
        for wu in wus {
            let _ = std::fs::remove_file(self.queue.join("pending").join(wu.data_file()));
        }
        Ok(())
    }
}

/// A remote project: one `submit_batch` per call.
pub struct RemoteSubmitter {
    /// Where and as whom.
    pub remote: Remote,
    /// The queue folder: its `pending/` is published under the remote's `job_url_base`, and
    /// the workunits' `data.json` files are put there for the server to fetch.
    pub queue: PathBuf,
    /// The per-workunit values.
    pub sub: Submission,
    /// The HTTP client.
    pub client: reqwest::blocking::Client,
    /// Batches submitted so far (names the next batch).
    pub batches: Vec<u64>,
}

impl Submitter for RemoteSubmitter {
    fn submit(&mut self, wus: &[Workunit]) -> Result<(), SubmitError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let name = format!("gah-{now}-{}", self.batches.len());
        let data = write_data_refs(&self.queue, wus, self.sub.data.as_ref())?;
        let req = remote::submit_batch_request(wus, &data, &self.sub, &self.remote, &name);
        let id = remote::send(&self.client, &self.remote, &req)?;
        self.batches.push(id);
        Ok(())
    }
}

/// How the daemon runs.
#[derive(Debug, Clone, Copy)]
pub struct DaemonConfig {
    /// Unsent results to keep (the sample's `CUSHION`).
    pub keep_unsent: u64,
    /// Results each job makes (`target_nresults`): unsent results / this = jobs to add.
    pub results_per_job: u64,
    /// Sleep between rounds.
    pub interval: Duration,
    /// Stop after this many rounds (`None`: forever).
    pub rounds: Option<u64>,
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// The unsent count read.
    pub unsent: u64,
    /// Jobs submitted this round.
    pub submitted: usize,
}

/// Runs the loop; `log` gets one line per round. Returns every round's result. A failing
/// count or submission ends the daemon with the error, as in the sample (a supervisor
/// restarts it); jobs are marked submitted only after the server accepted them. Each round
/// first folds the new results of the results database at `results` into the rotation
/// ([`Queue::fold_results`]), once the assimilator has created it (never created here); a
/// fold that fails (the database busy) is logged and tried again next round.
pub fn run(
    queue: &Queue,
    results: Option<&Path>,
    source: &mut dyn UnsentSource,
    submitter: &mut dyn Submitter,
    cfg: DaemonConfig,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Round>, DaemonError> {
    run_localising(queue, results, None, source, submitter, cfg, log)
}

/// [`run`], and with `localise`, failure localisation: after each fold, the pending
/// follow-ups of the running localisations are queued ([`crate::followup::step`]) and the
/// round submits them ahead of the rotation. A step that fails is logged and tried again
/// next round.
pub fn run_localising(
    queue: &Queue,
    results: Option<&Path>,
    localise: Option<&crate::followup::LocaliseConfig<'_>>,
    source: &mut dyn UnsentSource,
    submitter: &mut dyn Submitter,
    cfg: DaemonConfig,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<Round>, DaemonError> {
    let mut rounds = Vec::new();
    let mut k = 0u64;
    loop {
        if let Some(results) = results.filter(|p| p.exists()) {
            match Database::open(results).map_err(QueueError::Results).and_then(|db| queue.fold_results(&db)) {
                Ok(f) if f.counted + f.unknown > 0 => {
                    log(&format!("rotation: {} results folded in, {} of jobs not in this queue", f.counted, f.unknown))
                }
                Ok(_) => {}
                Err(e) => log(&format!("rotation not updated this round: {}", gah_util::error_chain(&e))),
            }
            if let Some(localise) = localise {
                let queued = Database::open(results)
                    .map_err(crate::followup::LocaliseError::Results)
                    .and_then(|db| crate::followup::step(queue, &db, localise));
                match queued {
                    Ok(0) => {}
                    Ok(n) => log(&format!("localisation: {n} follow-ups queued")),
                    Err(e) => log(&format!("follow-ups not queued this round: {}", gah_util::error_chain(&e))),
                }
            }
        }
        let unsent = source.unsent().map_err(DaemonError::Count)?;
        let mut submitted = 0;
        if unsent < cfg.keep_unsent {
            // Round up: a cushion of 5 with 2 results per job needs 3 jobs, not 2.
            let want = (cfg.keep_unsent - unsent).div_ceil(cfg.results_per_job.max(1));
            let jobs = queue.next_unsubmitted(usize::try_from(want).unwrap_or(usize::MAX))?;
            if let Some(first) = jobs.first() {
                // Each submission is a new workunit name: never one BOINC already has.
                let wus = queue.reserve(&jobs)?;
                submitter.submit(&wus).map_err(|source| DaemonError::Submit { first: first.job_id.clone(), count: jobs.len(), source })?;
                queue.mark_submitted(&wus)?;
            }
            submitted = jobs.len();
        }
        log(&format!("unsent {unsent} (keeping {}): submitted {submitted} jobs", cfg.keep_unsent));
        rounds.push(Round { unsent, submitted });
        k += 1;
        if cfg.rounds.is_some_and(|r| k >= r) {
            return Ok(rounds);
        }
        std::thread::sleep(cfg.interval);
    }
}
