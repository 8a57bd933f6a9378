//! The local queue folder and the failcount rotation.
//!
//! Layout of a queue folder `DIR`:
//! - `pending/<job_id>.json`: every job ever planned (the `gah-core` `job.json`), written
//!   durably and atomically ([`gah_util::atomic::write`]); a job already there is left alone.
//! - `state.sqlite`: one row per cell (= job: repo, cpv, USE, compiler) with its failcount,
//!   runs, last status and the ebuild `_md5_` it was planned and last tested from.
//! - `templates/`, `create_work.sh`, `submitted/`: BOINC submission (see [`crate::boinc`]).
//!   Each submission of a job is a workunit of its own, named
//!   [`gah_core::job::wu_name`]`(job_id, n)` with `n` the cell's `submissions` counter
//!   ([`Queue::reserve`]): BOINC never takes a workunit name twice.
//!
//! Results reach the rotation one way: the assimilator writes only the results database, and
//! [`Queue::fold_results`] reads what it stored past a watermark kept here (`watermarks`).
//!
//! Rotation, in the spirit of Funtoo Metro's buildrepo: a real failure
//! ([`Status::is_failure`]) raises the cell's failcount, a success resets it, a spurious
//! result (timeout, infra error) leaves it; cells at [`MAX_FAILS`] are out of rotation until
//! zapped. Order: changed ebuilds (new `_md5_` since the last result) first, then cells never
//! tested, then lowest failcount, then least recently run. A changed ebuild also gets its
//! failcount reset: it is a new ebuild as far as its past failures go.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gah_core::db::Database;
use gah_core::job::{split_cpv, Job};
use gah_core::outcome::Status;
use gah_util::atomic::AtomicError;
use gah_util::sqlite::{Migration, Options, SqliteError};
use rusqlite::{params, Connection, OptionalExtension};

use crate::boinc::Workunit;
use crate::plan::Plan;

/// A queue folder that could not be opened, read or updated.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A folder of the queue could not be made.
    #[error("create the folder {}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `state.sqlite` could not be opened or migrated (the error names the file).
    #[error(transparent)]
    Open(#[from] SqliteError),
    /// A query on `state.sqlite` failed.
    #[error("query {}", path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// A job file could not be written.
    #[error("write the job file of {job_id}")]
    WriteJob {
        /// The job.
        job_id: String,
        /// The cause (it names the file).
        #[source]
        source: AtomicError,
    },
    /// The list of an ebuild's distfiles could not be written.
    #[error("write the distfiles of {cpv}")]
    WriteDistfiles {
        /// The ebuild.
        cpv: String,
        /// The cause (it names the file).
        #[source]
        source: AtomicError,
    },
    /// A job file could not be read or is not a job (the source names the file).
    #[error("the queue's job")]
    Job(#[source] gah_core::Error),
    /// A `submitted/` marker could not be written.
    #[error("write the marker {}", path.display())]
    Mark {
        /// The marker file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The results database could not be read.
    #[error("read the results for the rotation")]
    Results(#[source] gah_core::db::DbError),
    /// A result for a job the queue does not know.
    #[error("no cell {job_id} in {}", dir.display())]
    NoCell {
        /// The job id given.
        job_id: String,
        /// The queue folder.
        dir: PathBuf,
    },
}

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
    /// True when a localisation's follow-up of this cell waits to be submitted.
    pub followup: bool,
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

/// Released names never change: existing queues have recorded them.
const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "0001_cells",
        sql: "CREATE TABLE cells (
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
    },
    // Workunit names are `<job_id>_<n>`: n counts the cell's submissions.
    Migration { name: "0002_submissions", sql: "ALTER TABLE cells ADD COLUMN submissions INTEGER NOT NULL DEFAULT 0" },
    // The rotation reads results from the results database: per source table, the highest
    // row id folded in (see `Queue::fold_results`).
    Migration { name: "0003_watermarks", sql: "CREATE TABLE watermarks (source TEXT PRIMARY KEY, last_id INTEGER NOT NULL)" },
    // Failure localisation (`crate::followup`): the follow-up jobs queued for a localisation
    // (`failing_seq`: the failing row of the results database it localises), ahead of the
    // rotation until submitted.
    Migration {
        name: "0004_followups",
        sql: "CREATE TABLE followups (
        job_id      TEXT NOT NULL,
        failing_seq INTEGER NOT NULL,
        queued_at   INTEGER NOT NULL,
        submitted   INTEGER NOT NULL DEFAULT 0,
        done        INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (job_id, failing_seq)
    );",
    },
    // Failures that wait for a running localisation of the same ebuild and status (its cause
    // most likely explains them too) before theirs starts.
    Migration { name: "0005_deferred_localisations", sql: "CREATE TABLE deferred_localisations (failing_seq INTEGER PRIMARY KEY)" },
    // The localisation moved to the results database (its writer, the assimilator, keeps the
    // waiting failures); a follow-up is queued once per attempt (`attempt`: the workunits of
    // it lost so far, `localisations.next_tries`), so a lost one is submitted again.
    Migration {
        name: "0006_localisation_in_results",
        sql: "DROP TABLE deferred_localisations;
    CREATE TABLE followups_by_attempt (
        job_id      TEXT NOT NULL,
        failing_seq INTEGER NOT NULL,
        attempt     INTEGER NOT NULL,
        queued_at   INTEGER NOT NULL,
        submitted   INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (job_id, failing_seq, attempt)
    );
    INSERT INTO followups_by_attempt SELECT job_id, failing_seq, 0, queued_at, submitted FROM followups;
    DROP TABLE followups;
    ALTER TABLE followups_by_attempt RENAME TO followups;",
    },
];

/// Where the queue keeps the distfiles the plan found the ebuild `cpv` of `repo` needs:
/// `distfiles/<repo>/<category>/<pf>.json`; `None` for a name that is not one plain name.
fn distfiles_path(queue: &Path, repo: &str, cpv: &str) -> Option<PathBuf> {
    let (category, pf) = cpv.split_once('/')?;
    let plain = gah_ebuild::md5cache::is_plain_name;
    (plain(repo) && plain(category) && plain(pf)).then(|| queue.join("distfiles").join(repo).join(category).join(format!("{pf}.json")))
}

/// The distfiles the last plan found the ebuild `cpv` of `repo` needs (its own and its
/// dependencies', over its configurations); none when it was planned without a mirror. A
/// follow-up of any configuration of the ebuild names the same.
pub fn distfiles_of(queue: &Path, repo: &str, cpv: &str) -> Vec<String> {
    distfiles_path(queue, repo, cpv)
        .and_then(|path| std::fs::read(path).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// `1` for a cell with a follow-up waiting to be submitted (for `cells`' SQL).
const PENDING_FOLLOWUP: &str = "EXISTS (SELECT 1 FROM followups f WHERE f.job_id = cells.job_id AND f.submitted = 0)";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// The error of a query on the queue's database in `dir`.
fn db_err(dir: &Path) -> impl FnOnce(rusqlite::Error) -> QueueError + '_ {
    move |source| QueueError::Database { path: dir.join("state.sqlite"), source }
}

impl Queue {
    /// Opens (creating if needed) the queue folder `dir`.
    pub fn open(dir: &Path) -> Result<Queue, QueueError> {
        let pending = dir.join("pending");
        std::fs::create_dir_all(&pending).map_err(|source| QueueError::Folder { path: pending, source })?;
        // A daemon folds results while `generate` or `next` may run: wait for its lock. synchronous=NORMAL: a power cut may lose the last rotation updates, never
        // corrupt the file; the results database, not the queue, is the record.
        let options = Options { busy_timeout: Duration::from_secs(30), synchronous_full: false };
        let db = gah_util::sqlite::open(&dir.join("state.sqlite"), MIGRATIONS, options)?;
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
    pub fn add(&mut self, plan: &Plan) -> Result<AddStats, QueueError> {
        let mut stats = AddStats::default();
        // Job files first, outside the transaction: their fsyncs must not hold the database's
        // write lock, which a fold of the results waits for.
        for job in &plan.jobs {
            let path = self.job_path(&job.job_id);
            if path.exists() {
                stats.existing += 1;
                // Same configuration, other job content (a new timeout): the next submission,
                // a new workunit, carries it. A submitted workunit's input is its own copy.
                let json = job.to_json();
                if std::fs::read(&path).map_or(true, |old| old != json) {
                    gah_util::atomic::write(&path, &json).map_err(|source| QueueError::WriteJob { job_id: job.job_id.clone(), source })?;
                }
            } else {
                gah_util::atomic::write(&path, &job.to_json())
                    .map_err(|source| QueueError::WriteJob { job_id: job.job_id.clone(), source })?;
                stats.added += 1;
            }
        }
        // What each ebuild's workunits name in their data.json (`crate::boinc::write_data_refs`).
        for ((repo, cpv), files) in &plan.distfiles {
            let Some(path) = distfiles_path(&self.dir, repo, cpv) else { continue };
            let json = serde_json::to_vec(files).expect("a list of names serialises");
            if std::fs::read(&path).map_or(true, |old| old != json) {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|source| QueueError::Folder { path: parent.to_owned(), source })?;
                }
                gah_util::atomic::write(&path, &json).map_err(|source| QueueError::WriteDistfiles { cpv: cpv.clone(), source })?;
            }
        }
        let tx = self.db.transaction().map_err(db_err(&self.dir))?;
        for job in &plan.jobs {
            let md5 = plan.ebuild_md5.get(&(job.repo.clone(), job.cpv.clone())).cloned().unwrap_or_default();
            let old: Option<String> = tx
                .query_row("SELECT md5 FROM cells WHERE job_id = ?1", [&job.job_id], |r| r.get(0))
                .optional()
                .map_err(db_err(&self.dir))?;
            match old {
                None => {
                    tx.execute(
                        "INSERT INTO cells (job_id, repo, cpv, compiler, use_summary, md5) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![job.job_id, job.repo, job.cpv, job.compiler.as_str(), job.use_flags.summary(), md5],
                    )
                    .map_err(db_err(&self.dir))?;
                }
                Some(old) if old != md5 => {
                    stats.changed += 1;
                    tx.execute("UPDATE cells SET md5 = ?2, failcount = 0 WHERE job_id = ?1", params![job.job_id, md5])
                        .map_err(db_err(&self.dir))?;
                }
                Some(_) => {}
            }
        }
        tx.commit().map_err(db_err(&self.dir))?;
        Ok(stats)
    }

    /// Every cell in rotation order; with `include_out` also those out of rotation (last).
    pub fn cells(&self, include_out: bool) -> Result<Vec<Cell>, QueueError> {
        let query = || -> rusqlite::Result<Vec<Cell>> {
            // A follow-up of a localisation goes first, whatever its failcount: someone waits
            // for the answer.
            let mut stmt = self.db.prepare(&format!(
                "SELECT job_id, repo, cpv, compiler, use_summary, failcount, runs, last_status,
                        (tested_md5 IS NOT NULL AND tested_md5 != md5) AS changed, {PENDING_FOLLOWUP} AS followup
                 FROM cells
                 WHERE ?2 OR failcount < ?1 OR followup
                 ORDER BY followup DESC, failcount >= ?1, changed DESC, tested_md5 IS NOT NULL, failcount, COALESCE(last_run, 0), job_id",
            ))?;
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
                    followup: r.get(9)?,
                })
            })?;
            rows.collect()
        };
        query().map_err(db_err(&self.dir))
    }

    /// How far the sweep is: cells in the queue, and those with at least one result
    /// recorded.
    pub fn progress(&self) -> Result<(u64, u64), QueueError> {
        self.db
            .query_row("SELECT count(*), count(*) FILTER (WHERE runs > 0) FROM cells", [], |r| {
                Ok((u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0), u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0)))
            })
            .map_err(db_err(&self.dir))
    }

    /// The job in `job_id`'s file.
    fn read_job(&self, job_id: &str) -> Result<Job, QueueError> {
        let path = self.job_path(job_id);
        Job::read(&path).map_err(QueueError::Job)
    }

    /// The next `n` jobs of the rotation, read from their files.
    pub fn next(&self, n: usize) -> Result<Vec<Job>, QueueError> {
        self.cells(false)?.into_iter().take(n).map(|cell| self.read_job(&cell.job_id)).collect()
    }

    /// The next `n` jobs of the rotation that have not been submitted to BOINC yet (no
    /// `submitted/<job_id>` marker, the one `create_work.sh` also writes and skips).
    pub fn next_unsubmitted(&self, n: usize) -> Result<Vec<Job>, QueueError> {
        let mut out = Vec::new();
        for cell in self.cells(false)? {
            if out.len() == n {
                break;
            }
            // A follow-up is a new submission of its cell, submitted before or not.
            if !cell.followup && self.dir.join("submitted").join(&cell.job_id).exists() {
                continue;
            }
            out.push(self.read_job(&cell.job_id)?);
        }
        Ok(out)
    }

    /// Names the next submission of each of `jobs`: counts it in the cell's `submissions`
    /// and returns the workunits, named [`gah_core::job::wu_name`]`(job_id, n)`. A name
    /// reserved and never submitted is only a gap in the numbering.
    pub fn reserve(&self, jobs: &[Job]) -> Result<Vec<Workunit>, QueueError> {
        let tx = self.db.unchecked_transaction().map_err(db_err(&self.dir))?;
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            let n: Option<i64> = tx
                .query_row("UPDATE cells SET submissions = submissions + 1 WHERE job_id = ?1 RETURNING submissions", [&job.job_id], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(db_err(&self.dir))?;
            let Some(n) = n else {
                return Err(QueueError::NoCell { job_id: job.job_id.clone(), dir: self.dir.clone() });
            };
            let n = u64::try_from(n).unwrap_or_default();
            out.push(Workunit { name: gah_core::job::wu_name(&job.job_id, n), job: job.clone() });
        }
        tx.commit().map_err(db_err(&self.dir))?;
        Ok(out)
    }

    /// Records that `wus` were submitted (their jobs' `submitted/<job_id>` markers, each
    /// holding the last workunit's name).
    pub fn mark_submitted(&self, wus: &[Workunit]) -> Result<(), QueueError> {
        let dir = self.dir.join("submitted");
        std::fs::create_dir_all(&dir).map_err(|source| QueueError::Folder { path: dir.clone(), source })?;
        for wu in wus {
            let path = dir.join(&wu.job.job_id);
            if let Err(source) = std::fs::write(&path, format!("{}\n", wu.name)) {
                return Err(QueueError::Mark { path, source });
            }
            self.db.execute("UPDATE followups SET submitted = 1 WHERE job_id = ?1", [&wu.job.job_id]).map_err(db_err(&self.dir))?;
        }
        Ok(())
    }

    /// Queues `job` as a follow-up of the localisation of the failing row `failing_seq`: its
    /// job file (if new), its cell (if new; `md5` is its ebuild's `_md5_`), and the follow-up,
    /// which goes ahead of the rotation until submitted. Once per job, localisation and
    /// `attempt` (the follow-up's workunits lost so far): true when it was queued now, false
    /// when it already was.
    pub fn add_followup(&self, job: &Job, failing_seq: i64, attempt: u32, md5: &str) -> Result<bool, QueueError> {
        let path = self.job_path(&job.job_id);
        if !path.exists() {
            gah_util::atomic::write(&path, &job.to_json()).map_err(|source| QueueError::WriteJob { job_id: job.job_id.clone(), source })?;
        }
        let tx = self.db.unchecked_transaction().map_err(db_err(&self.dir))?;
        tx.execute(
            "INSERT INTO cells (job_id, repo, cpv, compiler, use_summary, md5) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (job_id) DO NOTHING",
            params![job.job_id, job.repo, job.cpv, job.compiler.as_str(), job.use_flags.summary(), md5],
        )
        .map_err(db_err(&self.dir))?;
        let queued = tx
            .execute(
                "INSERT INTO followups (job_id, failing_seq, attempt, queued_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (job_id, failing_seq, attempt) DO NOTHING",
                params![job.job_id, failing_seq, attempt, now()],
            )
            .map_err(db_err(&self.dir))?;
        tx.commit().map_err(db_err(&self.dir))?;
        Ok(queued == 1)
    }

    /// The highest row id of the results database's table `source` that the consumer named
    /// `source` has read (0: none).
    pub fn watermark(&self, source: &str) -> Result<i64, QueueError> {
        self.db
            .query_row("SELECT last_id FROM watermarks WHERE source = ?1", [source], |r| r.get(0))
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(db_err(&self.dir))
    }

    /// Moves the watermark of `source` to `last_id`.
    pub fn set_watermark(&self, source: &str, last_id: i64) -> Result<(), QueueError> {
        self.db
            .execute(
                "INSERT INTO watermarks (source, last_id) VALUES (?1, ?2) ON CONFLICT (source) DO UPDATE SET last_id = ?2",
                params![source, last_id],
            )
            .map(|_| ())
            .map_err(db_err(&self.dir))
    }

    /// Cells with a nonzero failcount, highest first.
    pub fn fails(&self) -> Result<Vec<Cell>, QueueError> {
        let mut cells: Vec<Cell> = self.cells(true)?.into_iter().filter(|c| c.failcount > 0).collect();
        cells.sort_by(|a, b| b.failcount.cmp(&a.failcount).then_with(|| a.job_id.cmp(&b.job_id)));
        Ok(cells)
    }

    /// Resets failcounts (back into the rotation). Returns how many cells changed.
    pub fn zap(&mut self, which: Zap<'_>) -> Result<usize, QueueError> {
        let selectors = match which {
            Zap::All => return self.db.execute("UPDATE cells SET failcount = 0 WHERE failcount > 0", []).map_err(db_err(&self.dir)),
            Zap::Matching(s) => s,
        };
        let failing = || -> rusqlite::Result<Vec<(String, String)>> {
            let mut stmt = self.db.prepare("SELECT job_id, cpv FROM cells WHERE failcount > 0")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        };
        let failing = failing().map_err(db_err(&self.dir))?;
        let update = |db: &mut Connection| -> rusqlite::Result<usize> {
            let tx = db.transaction()?;
            let mut n = 0;
            for (job_id, cpv) in failing {
                let cp = split_cpv(&cpv).map_or(cpv.as_str(), |(cp, _)| cp);
                if selectors.iter().any(|s| *s == job_id || *s == cpv || *s == cp) {
                    n += tx.execute("UPDATE cells SET failcount = 0 WHERE job_id = ?1", [&job_id])?;
                }
            }
            tx.commit()?;
            Ok(n)
        };
        update(&mut self.db).map_err(db_err(&self.dir))
    }

    /// Records a result for `job_id` (see the module docs for the rule). By hand only: the
    /// results the assimilator stores reach the rotation through [`Queue::fold_results`].
    pub fn record(&mut self, job_id: &str, status: Status) -> Result<Recorded, QueueError> {
        let tx = self.db.transaction().map_err(db_err(&self.dir))?;
        let Some(r) = apply(&tx, job_id, status).map_err(db_err(&self.dir))? else {
            return Err(QueueError::NoCell { job_id: job_id.to_owned(), dir: self.dir.clone() });
        };
        tx.commit().map_err(db_err(&self.dir))?;
        Ok(r)
    }

    /// Folds into the rotation every result the results database `results` stored since the
    /// last fold: outcomes ([`Database::outcomes_since`]) and whole-workunit failures
    /// ([`Database::infra_failures_since`], spurious: a run, no failcount). Each page of
    /// results and the watermark past it (the highest row id folded, per table, in
    /// `state.sqlite`) commit in one transaction, so a result is counted exactly once however
    /// often this runs, and a restart resumes at the watermark. A result of a job this queue
    /// does not know (another queue's, `gah run`'s) is passed over.
    ///
    /// The watermarks belong to one results database: point a queue at another one and it
    /// folds that one from its old watermarks.
    pub fn fold_results(&self, results: &Database) -> Result<Folded, QueueError> {
        const PAGE: usize = 1000;
        let mut folded = Folded::default();
        for source in ["outcomes", "infra_failures"] {
            loop {
                let tx = self.db.unchecked_transaction().map_err(db_err(&self.dir))?;
                let mark: i64 = tx
                    .query_row("SELECT last_id FROM watermarks WHERE source = ?1", [source], |r| r.get(0))
                    .optional()
                    .map_err(db_err(&self.dir))?
                    .unwrap_or(0);
                let page = if source == "outcomes" { results.outcomes_since(mark, PAGE) } else { results.infra_failures_since(mark, PAGE) };
                let page = page.map_err(QueueError::Results)?;
                let Some(last) = page.last() else { break };
                for row in &page {
                    match apply(&tx, &row.job_id, row.status).map_err(db_err(&self.dir))? {
                        Some(_) => folded.counted += 1,
                        None => folded.unknown += 1,
                    }
                }
                tx.execute(
                    "INSERT INTO watermarks (source, last_id) VALUES (?1, ?2) ON CONFLICT (source) DO UPDATE SET last_id = ?2",
                    params![source, last.id],
                )
                .map_err(db_err(&self.dir))?;
                tx.commit().map_err(db_err(&self.dir))?;
                if page.len() < PAGE {
                    break;
                }
            }
        }
        Ok(folded)
    }
}

/// What [`Queue::fold_results`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded {
    /// Results counted in a cell of this queue.
    pub counted: usize,
    /// Results of jobs this queue does not know (passed over).
    pub unknown: usize,
}

/// Applies one result to its cell in `tx`; `None` when the queue has no such cell.
fn apply(tx: &Connection, job_id: &str, status: Status) -> rusqlite::Result<Option<Recorded>> {
    let before: Option<u32> = tx.query_row("SELECT failcount FROM cells WHERE job_id = ?1", [job_id], |r| r.get(0)).optional()?;
    let Some(before) = before else { return Ok(None) };
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
    Ok(Some(Recorded { before, after }))
}

/// Records a result in the queue at `queue_dir` by hand (`gah-workgen record`). `job_id` is
/// the job's identifier ([`gah_core::job::job_id_of_wu`] of a workunit name).
pub fn record_result(queue_dir: &Path, job_id: &str, status: Status) -> Result<Recorded, QueueError> {
    Queue::open(queue_dir)?.record(job_id, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue made by the code before gah-util: its `migrations` table has no `applied_at`
    /// column, and `0001_cells` is recorded.
    fn old_queue(dir: &Path) {
        std::fs::create_dir_all(dir.join("pending")).unwrap();
        let db = Connection::open(dir.join("state.sqlite")).unwrap();
        db.pragma_update(None, "journal_mode", "WAL").unwrap();
        db.execute_batch("CREATE TABLE migrations (name TEXT PRIMARY KEY)").unwrap();
        db.execute_batch(MIGRATIONS[0].sql).unwrap();
        db.execute("INSERT INTO migrations (name) VALUES (?1)", [MIGRATIONS[0].name]).unwrap();
        db.execute(
            "INSERT INTO cells (job_id, repo, cpv, compiler, use_summary, md5, failcount) VALUES ('j', 'r', 'a/b-1', 'gcc', '', 'm', 2)",
            [],
        )
        .unwrap();
    }

    #[test]
    fn a_queue_made_by_the_old_migration_runner_opens_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        old_queue(dir.path());
        let mut q = Queue::open(dir.path()).unwrap();
        let cells = q.fails().unwrap();
        assert_eq!((cells.len(), cells[0].job_id.as_str(), cells[0].failcount), (1, "j", 2));
        assert_eq!(q.record("j", Status::BuildFailed).unwrap(), Recorded { before: 2, after: 3 });
        // Not applied twice, and the old table (without applied_at) still takes new names.
        let names: Vec<String> =
            q.db.prepare("SELECT name FROM migrations").unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        assert_eq!(
            names,
            [
                "0001_cells",
                "0002_submissions",
                "0003_watermarks",
                "0004_followups",
                "0005_deferred_localisations",
                "0006_localisation_in_results"
            ]
        );
        gah_util::sqlite::migrate(&mut q.db, &[Migration { name: "0003_test", sql: "CREATE TABLE t (x)" }]).unwrap();
        drop(q);
        let q = Queue::open(dir.path()).unwrap();
        let n: i64 = q.db.query_row("SELECT count(*) FROM migrations", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 7);
    }

    #[test]
    fn errors_name_the_culprit() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = Queue::open(dir.path()).unwrap();
        let e = q.record("no-such-job", Status::Success).unwrap_err();
        assert_eq!(e.to_string(), format!("no cell no-such-job in {}", dir.path().display()));
        std::fs::write(q.job_path("bad"), b"{").unwrap();
        let e = q.read_job("bad").unwrap_err();
        assert!(matches!(&e, QueueError::Job(gah_core::Error::InFile { path, .. }) if path.ends_with("pending/bad.json")), "{e:?}");
        let e = q.read_job("absent").unwrap_err();
        assert!(matches!(&e, QueueError::Job(gah_core::Error::Read { path, .. }) if path.ends_with("pending/absent.json")), "{e:?}");
    }
}
