//! The local queue folder and the failcount rotation.
//!
//! Layout of a queue folder `DIR`:
//! - `pending/<job_id>.json`: every job ever planned (the `gah-core` `job.json`), written
//!   atomically (temporary file + rename); a job already there is left alone.
//! - `state.sqlite`: one row per cell (= job: repo, cpv, USE, compiler) with its failcount,
//!   runs, last status and the ebuild `_md5_` it was planned and last tested from.
//! - `templates/`, `create_work.sh`, `submitted/`: BOINC submission (see [`crate::boinc`]).
//!
//! Rotation, in the spirit of Funtoo Metro's buildrepo: a real failure
//! ([`Status::is_failure`]) raises the cell's failcount, a success resets it, a spurious
//! result (timeout, infra error) leaves it; cells at [`MAX_FAILS`] are out of rotation until
//! zapped. Order: changed ebuilds (new `_md5_` since the last result) first, then cells never
//! tested, then lowest failcount, then least recently run. A changed ebuild also gets its
//! failcount reset: it is a new ebuild as far as its past failures go.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use gah_core::job::{split_cpv, Job};
use gah_core::outcome::Status;
use rusqlite::{params, Connection, OptionalExtension};

use crate::plan::Plan;

/// Failcount at which a cell leaves the rotation.
pub const MAX_FAILS: u32 = 3;

/// An open queue folder.
pub struct Queue {
    dir: PathBuf,
    db: Connection,
}

/// What [`Queue::add`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddStats {
    /// Job files written.
    pub added: usize,
    /// Jobs already in the queue.
    pub existing: usize,
    /// Cells whose ebuild changed (new `_md5_`): failcount reset, moved to the front.
    pub changed: usize,
}

/// One cell of the rotation, as `fails` and `next` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// The job's identifier.
    pub job_id: String,
    /// The repository's name.
    pub repo: String,
    /// `category/package-version`.
    pub cpv: String,
    /// Compiler name.
    pub compiler: String,
    /// The USE summary (enabled flags).
    pub use_summary: String,
    /// Consecutive real failures since the last success or zap.
    pub failcount: u32,
    /// Results recorded.
    pub runs: u32,
    /// The last status recorded, if any.
    pub last_status: Option<String>,
    /// True when the ebuild changed since its last result.
    pub changed: bool,
}

/// Which cells [`Queue::zap`] resets.
#[derive(Debug, Clone, Copy)]
pub enum Zap<'a> {
    /// Every cell.
    All,
    /// Cells matching any of these: a job id, a `cat/pkg-ver`, or a `cat/pkg`.
    Matching(&'a [String]),
}

/// What [`record_result`] did to a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The failcount before.
    pub before: u32,
    /// The failcount after.
    pub after: u32,
}

const MIGRATIONS: &[(&str, &str)] = &[(
    "0001_cells",
    "CREATE TABLE cells (
        job_id TEXT PRIMARY KEY,
        repo TEXT NOT NULL,
        cpv TEXT NOT NULL,
        compiler TEXT NOT NULL,
        use_summary TEXT NOT NULL,
        md5 TEXT NOT NULL,          -- _md5_ of the ebuild when last planned
        tested_md5 TEXT,            -- _md5_ when the last result came in; NULL = never tested
        failcount INTEGER NOT NULL DEFAULT 0,
        runs INTEGER NOT NULL DEFAULT 0,
        last_status TEXT,
        last_run INTEGER            -- unix seconds
    );
    CREATE INDEX cells_cpv ON cells (repo, cpv);",
)];

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

impl Queue {
    /// Opens (creating if needed) the queue folder `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Queue> {
        std::fs::create_dir_all(dir.join("pending")).with_context(|| format!("creating {}", dir.join("pending").display()))?;
        let path = dir.join("state.sqlite");
        let mut db = Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // The assimilator records results while `generate` or `next` may run.
        db.busy_timeout(std::time::Duration::from_secs(30))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.execute_batch("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY)")?;
        for (name, sql) in MIGRATIONS {
            let tx = db.transaction()?;
            let done: Option<String> = tx.query_row("SELECT name FROM migrations WHERE name = ?1", [name], |r| r.get(0)).optional()?;
            if done.is_none() {
                tx.execute_batch(sql).with_context(|| format!("migration {name}"))?;
                tx.execute("INSERT INTO migrations (name) VALUES (?1)", [name])?;
            }
            tx.commit()?;
        }
        Ok(Queue { dir: dir.to_owned(), db })
    }

    /// The queue folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a job's file is.
    pub fn job_path(&self, job_id: &str) -> PathBuf {
        self.dir.join("pending").join(format!("{job_id}.json"))
    }

    /// Adds a plan's jobs: job files for the new ones, cells for the rotation.
    pub fn add(&mut self, plan: &Plan) -> anyhow::Result<AddStats> {
        let mut stats = AddStats::default();
        let tx = self.db.transaction()?;
        for job in &plan.jobs {
            let path = self.dir.join("pending").join(format!("{}.json", job.job_id));
            if path.exists() {
                stats.existing += 1;
            } else {
                write_atomically(&path, &job.to_json())?;
                stats.added += 1;
            }
            let md5 = plan.ebuild_md5.get(&(job.repo.clone(), job.cpv.clone())).cloned().unwrap_or_default();
            let old: Option<String> = tx.query_row("SELECT md5 FROM cells WHERE job_id = ?1", [&job.job_id], |r| r.get(0)).optional()?;
            match old {
                None => {
                    tx.execute(
                        "INSERT INTO cells (job_id, repo, cpv, compiler, use_summary, md5) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![job.job_id, job.repo, job.cpv, job.compiler.as_str(), job.use_flags.summary(), md5],
                    )?;
                }
                Some(old) if old != md5 => {
                    stats.changed += 1;
                    tx.execute("UPDATE cells SET md5 = ?2, failcount = 0 WHERE job_id = ?1", params![job.job_id, md5])?;
                }
                Some(_) => {}
            }
        }
        tx.commit()?;
        Ok(stats)
    }

    /// Every cell in rotation order; with `include_out` also those out of rotation (last).
    pub fn cells(&self, include_out: bool) -> anyhow::Result<Vec<Cell>> {
        let mut stmt = self.db.prepare(
            "SELECT job_id, repo, cpv, compiler, use_summary, failcount, runs, last_status,
                    (tested_md5 IS NOT NULL AND tested_md5 != md5) AS changed
             FROM cells
             WHERE ?2 OR failcount < ?1
             ORDER BY failcount >= ?1, changed DESC, tested_md5 IS NOT NULL, failcount, COALESCE(last_run, 0), job_id",
        )?;
        let rows = stmt.query_map(params![MAX_FAILS, include_out], |r| {
            Ok(Cell {
                job_id: r.get(0)?,
                repo: r.get(1)?,
                cpv: r.get(2)?,
                compiler: r.get(3)?,
                use_summary: r.get(4)?,
                failcount: r.get(5)?,
                runs: r.get(6)?,
                last_status: r.get(7)?,
                changed: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The next `n` jobs of the rotation, read from their files.
    pub fn next(&self, n: usize) -> anyhow::Result<Vec<Job>> {
        let mut out = Vec::new();
        for cell in self.cells(false)?.into_iter().take(n) {
            let path = self.job_path(&cell.job_id);
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            out.push(Job::from_json(&bytes).with_context(|| format!("parsing {}", path.display()))?);
        }
        Ok(out)
    }

    /// The next `n` jobs of the rotation that have not been submitted to BOINC yet (no
    /// `submitted/<job_id>` marker, the one `create_work.sh` also writes and skips).
    pub fn next_unsubmitted(&self, n: usize) -> anyhow::Result<Vec<Job>> {
        let mut out = Vec::new();
        for cell in self.cells(false)? {
            if out.len() == n {
                break;
            }
            if self.dir.join("submitted").join(&cell.job_id).exists() {
                continue;
            }
            let path = self.job_path(&cell.job_id);
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            out.push(Job::from_json(&bytes).with_context(|| format!("parsing {}", path.display()))?);
        }
        Ok(out)
    }

    /// Records that `jobs` were submitted (their `submitted/<job_id>` markers).
    pub fn mark_submitted(&self, jobs: &[Job]) -> anyhow::Result<()> {
        let dir = self.dir.join("submitted");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for j in jobs {
            let p = dir.join(&j.job_id);
            std::fs::write(&p, b"").with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    }

    /// Cells with a nonzero failcount, highest first.
    pub fn fails(&self) -> anyhow::Result<Vec<Cell>> {
        let mut cells: Vec<Cell> = self.cells(true)?.into_iter().filter(|c| c.failcount > 0).collect();
        cells.sort_by(|a, b| b.failcount.cmp(&a.failcount).then_with(|| a.job_id.cmp(&b.job_id)));
        Ok(cells)
    }

    /// Resets failcounts (back into the rotation). Returns how many cells changed.
    pub fn zap(&mut self, which: Zap<'_>) -> anyhow::Result<usize> {
        let selectors = match which {
            Zap::All => return Ok(self.db.execute("UPDATE cells SET failcount = 0 WHERE failcount > 0", [])?),
            Zap::Matching(s) => s,
        };
        let failing: Vec<(String, String)> = {
            let mut stmt = self.db.prepare("SELECT job_id, cpv FROM cells WHERE failcount > 0")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let tx = self.db.transaction()?;
        let mut n = 0;
        for (job_id, cpv) in failing {
            let cp = split_cpv(&cpv).map_or(cpv.as_str(), |(cp, _)| cp);
            if selectors.iter().any(|s| *s == job_id || *s == cpv || *s == cp) {
                n += tx.execute("UPDATE cells SET failcount = 0 WHERE job_id = ?1", [&job_id])?;
            }
        }
        tx.commit()?;
        Ok(n)
    }

    /// Records a result for `job_id` (see the module docs for the rule).
    pub fn record(&mut self, job_id: &str, status: Status) -> anyhow::Result<Recorded> {
        let tx = self.db.transaction()?;
        let before: Option<u32> = tx.query_row("SELECT failcount FROM cells WHERE job_id = ?1", [job_id], |r| r.get(0)).optional()?;
        let Some(before) = before else {
            anyhow::bail!("no cell {job_id} in {}", self.dir.display());
        };
        let after = if status == Status::Success {
            0
        } else if status.is_failure() {
            before.saturating_add(1)
        } else {
            before
        };
        tx.execute(
            "UPDATE cells SET failcount = ?2, runs = runs + 1, last_status = ?3, last_run = ?4, tested_md5 = md5 WHERE job_id = ?1",
            params![job_id, after, status.as_str(), now()],
        )?;
        tx.commit()?;
        Ok(Recorded { before, after })
    }
}

/// Records a result in the queue at `queue_dir`: the entry point for the assimilator.
/// `job_id` is the job's identifier (the BOINC workunit name).
pub fn record_result(queue_dir: &Path, job_id: &str, status: Status) -> anyhow::Result<Recorded> {
    Queue::open(queue_dir)?.record(job_id, status)
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// reader never sees half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("path without a parent folder")?;
    let name = path.file_name().context("path without a file name")?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}
