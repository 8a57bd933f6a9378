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

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use gah_core::job::Job;

use crate::boinc::{create_work_batch_command, create_work_stdin_line, Submission};
use crate::queue::Queue;
use crate::remote::{self, Remote};

/// Where the number of unsent results comes from.
pub trait UnsentSource {
    /// The number of results the server has not sent yet.
    fn unsent(&mut self) -> anyhow::Result<u64>;
}

/// `sh -c COMMAND`, whose stdout is the count (surrounding blanks allowed).
pub struct CommandCount(pub String);

impl UnsentSource for CommandCount {
    fn unsent(&mut self) -> anyhow::Result<u64> {
        let out =
            Command::new("sh").arg("-c").arg(&self.0).stdin(Stdio::null()).output().with_context(|| format!("running `{}`", self.0))?;
        if !out.status.success() {
            anyhow::bail!("`{}` failed ({}): {}", self.0, out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim().parse().with_context(|| format!("`{}` printed `{}`, not a count", self.0, text.trim()))
    }
}

/// Where jobs are submitted.
pub trait Submitter {
    /// Submits `jobs` (all or nothing, as far as the server allows).
    fn submit(&mut self, jobs: &[Job]) -> anyhow::Result<()>;
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

impl Submitter for LocalSubmitter {
    fn submit(&mut self, jobs: &[Job]) -> anyhow::Result<()> {
        let Some(first) = jobs.first() else { return Ok(()) };
        std::fs::create_dir_all(self.project.join("templates"))?;
        std::fs::write(self.project.join("templates/gah_in"), crate::boinc::INPUT_TEMPLATE)?;
        std::fs::write(self.project.join("templates/gah_out"), crate::boinc::OUTPUT_TEMPLATE)?;
        let mut lines = String::new();
        for job in jobs {
            let name = format!("{}.json", job.job_id);
            let out = Command::new(self.project.join("bin/dir_hier_path"))
                .arg(&name)
                .current_dir(&self.project)
                .output()
                .context("running bin/dir_hier_path")?;
            if !out.status.success() {
                anyhow::bail!("bin/dir_hier_path {name} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
            let dest = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            let dest = if dest.is_absolute() { dest } else { self.project.join(dest) };
            std::fs::copy(self.queue.join("pending").join(&name), &dest)
                .with_context(|| format!("staging {name} to {}", dest.display()))?;
            lines.push_str(&create_work_stdin_line(job));
            lines.push('\n');
        }
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(create_work_batch_command(first, &self.sub))
            .current_dir(&self.project)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting bin/create_work")?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("piped stdin");
            stdin.write_all(lines.as_bytes()).context("writing create_work's stdin")?;
        }
        let out = child.wait_with_output().context("waiting for bin/create_work")?;
        if !out.status.success() {
            anyhow::bail!("bin/create_work --stdin failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}

/// A remote project: one `submit_batch` per call.
pub struct RemoteSubmitter {
    /// Where and as whom.
    pub remote: Remote,
    /// The per-workunit values.
    pub sub: Submission,
    /// The HTTP client.
    pub client: reqwest::blocking::Client,
    /// Batches submitted so far (names the next batch).
    pub batches: Vec<u64>,
}

impl Submitter for RemoteSubmitter {
    fn submit(&mut self, jobs: &[Job]) -> anyhow::Result<()> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let name = format!("gah-{now}-{}", self.batches.len());
        let req = remote::submit_batch_request(jobs, &self.sub, &self.remote, &name);
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
/// restarts it); jobs are marked submitted only after the server accepted them.
pub fn run(
    queue: &Queue,
    source: &mut dyn UnsentSource,
    submitter: &mut dyn Submitter,
    cfg: DaemonConfig,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<Round>> {
    let mut rounds = Vec::new();
    let mut k = 0u64;
    loop {
        let unsent = source.unsent().context("counting unsent results")?;
        let mut submitted = 0;
        if unsent < cfg.keep_unsent {
            // Round up: a cushion of 5 with 2 results per job needs 3 jobs, not 2.
            let want = (cfg.keep_unsent - unsent).div_ceil(cfg.results_per_job.max(1));
            let jobs = queue.next_unsubmitted(usize::try_from(want).unwrap_or(usize::MAX))?;
            if !jobs.is_empty() {
                submitter.submit(&jobs)?;
                queue.mark_submitted(&jobs)?;
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
