//! The results database: schema, migrations and the writes the assimilator makes here;
//! every read in [`read`] (typed rows, no SQL outside this module).
//!
//! SQLite in WAL mode. Logs are stored beside the database, gzip-compressed and
//! content-addressed by the sha256 of the uncompressed log (`logs/ab/abcd….log.gz`), so the
//! same log is stored once and a row names it by hash.
//!
//! Files on their way into a store (logs, quarantined uploads) are written first under
//! `tmp/` beside the database ([`Database::staging_dir`]), named after their writer's pid,
//! then renamed into place. A writer killed mid-write leaves its temporaries there, in one
//! small folder, and [`Database::open`] removes those whose writer is gone.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use gah_util::sqlite::Migration;
use rusqlite::{params, Connection};

use crate::outcome::Outcome;

pub mod read;

pub use read::{BlobId, Filter, LocalisationState, Order, Page, StoredLocalisation, StoredOutcome};

/// Named migrations, applied in order, each in its own transaction (as crater does).
const MIGRATIONS: &[Migration] = &[
    Migration {
        name: "0001_outcomes",
        sql: "CREATE TABLE outcomes (
        wu_name        TEXT PRIMARY KEY,
        job_id         TEXT NOT NULL,
        repo           TEXT NOT NULL,
        cpv            TEXT NOT NULL,
        use_flags      TEXT NOT NULL,
        compiler       TEXT NOT NULL,
        status         TEXT NOT NULL,
        failed_phase   TEXT,
        test_ran       INTEGER NOT NULL,
        failing_tests  TEXT NOT NULL,
        phases         TEXT NOT NULL,
        duration_secs  REAL NOT NULL,
        backend        TEXT NOT NULL,
        accelerator    TEXT NOT NULL,
        summary        TEXT NOT NULL,
        log_sha256     TEXT NOT NULL,
        outcome_json   TEXT NOT NULL,
        assimilated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
    );
    CREATE INDEX outcomes_cell ON outcomes (repo, cpv, use_flags, compiler);
    CREATE TABLE infra_failures (
        wu_name     TEXT PRIMARY KEY,
        error_mask  INTEGER NOT NULL,
        wu_id       INTEGER NOT NULL,
        batch_id    INTEGER NOT NULL,
        recorded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
    );",
    },
    Migration {
        name: "0002_quarantine",
        sql: "CREATE TABLE quarantine (
        wu_name     TEXT PRIMARY KEY,
        file        TEXT NOT NULL,
        file_sha256 TEXT,
        reason      TEXT NOT NULL,
        recorded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
    );",
    },
    // History: one row per (workunit, tree snapshot), so a cell (repo, cpv, USE, compiler)
    // accumulates rows as the tree moves; `seq` orders rows by assimilation. The table is
    // rebuilt because SQLite cannot change a primary key in place; old rows go to snapshot 0.
    Migration {
        name: "0003_snapshots_history",
        sql: "CREATE TABLE snapshots (
        id          INTEGER PRIMARY KEY,
        label       TEXT NOT NULL UNIQUE,
        recorded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
    );
    INSERT INTO snapshots (id, label) VALUES (0, 'unrecorded');
    CREATE TABLE outcomes_v3 (
        seq                INTEGER PRIMARY KEY,
        wu_name            TEXT NOT NULL,
        snapshot           INTEGER NOT NULL DEFAULT 0 REFERENCES snapshots (id),
        job_id             TEXT NOT NULL,
        repo               TEXT NOT NULL,
        cpv                TEXT NOT NULL,
        use_flags          TEXT NOT NULL,
        compiler           TEXT NOT NULL,
        status             TEXT NOT NULL,
        failed_phase       TEXT,
        test_ran           INTEGER NOT NULL,
        failing_tests      TEXT NOT NULL,
        phases             TEXT NOT NULL,
        duration_secs      REAL NOT NULL,
        backend            TEXT NOT NULL,
        accelerator        TEXT NOT NULL,
        summary            TEXT NOT NULL,
        log_sha256         TEXT NOT NULL,
        emerge_info_sha256 TEXT,
        outcome_json       TEXT NOT NULL,
        assimilated_at     TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
        UNIQUE (wu_name, snapshot)
    );
    INSERT INTO outcomes_v3 (wu_name, job_id, repo, cpv, use_flags, compiler, status, failed_phase, test_ran,
            failing_tests, phases, duration_secs, backend, accelerator, summary, log_sha256, outcome_json, assimilated_at)
        SELECT wu_name, job_id, repo, cpv, use_flags, compiler, status, failed_phase, test_ran,
            failing_tests, phases, duration_secs, backend, accelerator, summary, log_sha256, outcome_json, assimilated_at
        FROM outcomes ORDER BY assimilated_at, rowid;
    DROP TABLE outcomes;
    ALTER TABLE outcomes_v3 RENAME TO outcomes;
    CREATE INDEX outcomes_cell ON outcomes (repo, cpv, use_flags, compiler, snapshot);
    CREATE INDEX outcomes_cpv ON outcomes (cpv);",
    },
    // The dependency a deps_failed build blames (`crate::buildlog::failed_dependency`), read
    // from its log once, when the row is stored, so that grouping failures by dependency reads
    // no log: `dep_kind` is `FailedDependency`'s code, `dep_cpv` and `dep_phase` its package.
    // NULL on other rows, and on deps_failed rows stored before (readers read their log).
    Migration {
        name: "0004_failed_dependency",
        sql: "ALTER TABLE outcomes ADD COLUMN dep_kind TEXT;
    ALTER TABLE outcomes ADD COLUMN dep_cpv TEXT;
    ALTER TABLE outcomes ADD COLUMN dep_phase TEXT;",
    },
    // Each cell's latest row (highest snapshot, then latest stored), kept by a trigger on
    // every insert, so that a page of cell states reads its rows through an index instead of
    // ranking every row (`read::Database::latest`). Keyed in the order listings use. And the
    // rows of one snapshot by index (`read::Database::changes`).
    Migration {
        name: "0005_cell_latest",
        sql: "CREATE TABLE cell_latest (
        cpv       TEXT NOT NULL,
        use_flags TEXT NOT NULL,
        compiler  TEXT NOT NULL,
        repo      TEXT NOT NULL,
        snapshot  INTEGER NOT NULL,
        seq       INTEGER NOT NULL,
        PRIMARY KEY (cpv, use_flags, compiler, repo)
    ) WITHOUT ROWID;
    CREATE INDEX cell_latest_seq ON cell_latest (seq);
    CREATE INDEX outcomes_snapshot ON outcomes (snapshot, seq);
    INSERT INTO cell_latest (cpv, use_flags, compiler, repo, snapshot, seq)
        SELECT cpv, use_flags, compiler, repo, snapshot, seq FROM (
            SELECT *, row_number() OVER (PARTITION BY repo, cpv, use_flags, compiler ORDER BY snapshot DESC, seq DESC) AS n
            FROM outcomes)
        WHERE n = 1;
    CREATE TRIGGER outcomes_cell_latest AFTER INSERT ON outcomes BEGIN
        INSERT INTO cell_latest (cpv, use_flags, compiler, repo, snapshot, seq)
            VALUES (new.cpv, new.use_flags, new.compiler, new.repo, new.snapshot, new.seq)
            ON CONFLICT (cpv, use_flags, compiler, repo) DO UPDATE SET snapshot = excluded.snapshot, seq = excluded.seq
            WHERE excluded.snapshot > cell_latest.snapshot
               OR (excluded.snapshot = cell_latest.snapshot AND excluded.seq > cell_latest.seq);
    END;",
    },
    // The cells a failing package blocks, by the dependency their log names
    // (`read::Database::dependents`): the web page's dependency view asks it per page view.
    Migration { name: "0006_dependents", sql: "CREATE INDEX outcomes_dep_cpv ON outcomes (dep_cpv) WHERE dep_cpv IS NOT NULL;" },
    // A failure's localisation (issue 13): per failing row (`failing_seq`; its cell, snapshot
    // and status copied so listings need no join), the state (`running` while follow-ups
    // run, `done`), the evidence so far and, once done, the conclusion: its kind, its cause
    // as JSON and in Gentoo's text, and the whole `crate::localisation::Conclusion` as JSON.
    // The follow-ups' own outcomes are ordinary `outcomes` rows.
    Migration {
        name: "0007_localisations",
        sql: "CREATE TABLE localisations (
        failing_seq     INTEGER PRIMARY KEY REFERENCES outcomes (seq),
        repo            TEXT NOT NULL,
        cpv             TEXT NOT NULL,
        use_flags       TEXT NOT NULL,
        compiler        TEXT NOT NULL,
        snapshot        INTEGER NOT NULL REFERENCES snapshots (id),
        status          TEXT NOT NULL,
        state           TEXT NOT NULL CHECK (state IN ('running', 'done')),
        kind            TEXT CHECK (kind IN ('localised', 'flaky', 'inconclusive')),
        cause_json      TEXT,
        cause_text      TEXT,
        conclusion_json TEXT,
        evidence_json   TEXT NOT NULL,
        followups       INTEGER NOT NULL,
        started_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
        updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
    );
    CREATE INDEX localisations_cell ON localisations (cpv, use_flags, compiler, repo);
    CREATE INDEX localisations_running ON localisations (state) WHERE state = 'running';",
    },
    // Each cell's latest status beside its latest row, so "cells whose state is X" (the web
    // page's search, the overview's counts' links) is a range of an index rather than a scan
    // of every cell's row.
    Migration {
        name: "0008_cell_latest_status",
        sql: "ALTER TABLE cell_latest ADD COLUMN status TEXT NOT NULL DEFAULT '';
    UPDATE cell_latest SET status = (SELECT o.status FROM outcomes o WHERE o.seq = cell_latest.seq);
    DROP TRIGGER outcomes_cell_latest;
    CREATE TRIGGER outcomes_cell_latest AFTER INSERT ON outcomes BEGIN
        INSERT INTO cell_latest (cpv, use_flags, compiler, repo, snapshot, seq, status)
            VALUES (new.cpv, new.use_flags, new.compiler, new.repo, new.snapshot, new.seq, new.status)
            ON CONFLICT (cpv, use_flags, compiler, repo) DO UPDATE
            SET snapshot = excluded.snapshot, seq = excluded.seq, status = excluded.status
            WHERE excluded.snapshot > cell_latest.snapshot
               OR (excluded.snapshot = cell_latest.snapshot AND excluded.seq > cell_latest.seq);
    END;
    CREATE INDEX cell_latest_status ON cell_latest (status, cpv, use_flags, compiler, repo);",
    },
    // Issue 13's localisations are moved on by the results database's writer (the
    // assimilator, `gah_assimilator::localise`) and read by the work generator, which submits
    // each running one's pending follow-up (`next_*`: its cell; `next_job_id` matches the
    // result that answers it; `next_tries`: its workunits lost so far, each submitted anew). `localisations_waiting`: failures that wait for a running
    // localisation of the same ebuild and status. `localisation_marks`: how far the step has
    // read `outcomes` and `infra_failures`; an existing database starts after its last rows,
    // so an upgrade does not localise every old failure at once.
    Migration {
        name: "0009_localisation_followups",
        sql: "ALTER TABLE localisations ADD COLUMN next_use_flags TEXT;
    ALTER TABLE localisations ADD COLUMN next_compiler TEXT;
    ALTER TABLE localisations ADD COLUMN next_job_id TEXT;
    ALTER TABLE localisations ADD COLUMN next_tries INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX localisations_next ON localisations (next_job_id) WHERE next_job_id IS NOT NULL;
    CREATE TABLE localisations_waiting (failing_seq INTEGER PRIMARY KEY REFERENCES outcomes (seq));
    CREATE TABLE localisation_marks (source TEXT PRIMARY KEY, last_id INTEGER NOT NULL);
    INSERT INTO localisation_marks SELECT 'outcomes', COALESCE(MAX(seq), 0) FROM outcomes;
    INSERT INTO localisation_marks SELECT 'infra_failures', COALESCE(MAX(rowid), 0) FROM infra_failures;",
    },
];

/// A temporary file in the staging folder older than this is an orphan even when its
/// writer's pid is alive (the pid was reused): no write takes nearly that long.
const ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The snapshot id of rows recorded without one (and of rows from before snapshots existed).
pub const NO_SNAPSHOT: SnapshotId = SnapshotId(0);

/// A tree snapshot's id in the results database: a later snapshot has a larger id (ids
/// follow first sight). [`NO_SNAPSHOT`] is the one of rows recorded without a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotId(pub i64);

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl rusqlite::ToSql for SnapshotId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

impl rusqlite::types::FromSql for SnapshotId {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        i64::column_result(value).map(SnapshotId)
    }
}

/// Errors from the results database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused.
    #[error("results database {path}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The database could not be opened or brought up to date.
    #[error(transparent)]
    Open(#[from] gah_util::sqlite::SqliteError),
    /// The log store could not be written.
    #[error("log store {path}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl DbError {
    /// True when SQLite gave up waiting for another writer (busy or locked past the busy
    /// timeout): a failure that passes.
    pub fn is_busy(&self) -> bool {
        matches!(self, DbError::Sqlite { source: rusqlite::Error::SqliteFailure(e, _), .. }
            if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
    }
}

/// One outcome to record: what [`Database::record`] and [`Database::record_outcomes`] take.
#[derive(Debug, Clone, Copy)]
pub struct NewOutcome<'a> {
    /// The BOINC workunit name. With `snapshot`, the row's identity: recording the same
    /// pair again changes nothing.
    pub wu_name: &'a str,
    /// The tree snapshot the outcome belongs to (from [`Database::snapshot`]), or
    /// [`NO_SNAPSHOT`].
    pub snapshot: SnapshotId,
    /// The checked outcome.
    pub outcome: &'a Outcome,
    /// The (capped) build log.
    pub log: &'a [u8],
    /// `emerge --info`, when the archive had it.
    pub emerge_info: Option<&'a [u8]>,
}

/// A tree snapshot: the state of the ebuild repositories outcomes were built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Its id; a later snapshot has a larger id (ids follow first sight).
    pub id: SnapshotId,
    /// What identifies the tree, e.g. `git:<commit>` or `md5-cache:<sha256>`.
    pub label: String,
    /// When it was first recorded (UTC).
    pub recorded_at: String,
}

/// What [`Database::record_outcome`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// A new row.
    Inserted,
    /// The workunit already had a row; nothing changed.
    AlreadyPresent,
}

/// One stored result as the work generator's rotation reads it
/// ([`Database::outcomes_since`], [`Database::infra_failures_since`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredStatus {
    /// The row's id in its table (`outcomes.seq` or `infra_failures.rowid`): increasing.
    pub id: i64,
    /// The BOINC workunit name.
    pub wu_name: String,
    /// The job (cell) it is a result of.
    pub job_id: String,
    /// Its status.
    pub status: crate::outcome::Status,
}

/// A localisation as [`Database::save_localisation`] stores it.
#[derive(Debug, Clone, Copy)]
pub enum LocalisationProgress<'a> {
    /// Follow-ups are still running: the evidence so far and the follow-up it waits for
    /// (a cell of the failing row's ebuild).
    Running {
        /// The evidence so far.
        evidence: &'a crate::localisation::Evidence,
        /// The follow-up whose result moves it on.
        next: &'a crate::job::Cell,
        /// Its workunits lost so far (each lost one is submitted again).
        tries: u32,
    },
    /// Finished.
    Done(&'a crate::localisation::Conclusion),
}

/// The results tables a localisation step reads, each past its own mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    /// `outcomes`, by `seq`.
    Outcomes,
    /// `infra_failures`, by row id.
    InfraFailures,
}

impl EventSource {
    fn as_str(self) -> &'static str {
        match self {
            EventSource::Outcomes => "outcomes",
            EventSource::InfraFailures => "infra_failures",
        }
    }
}

/// What one localisation step writes, all in one transaction
/// ([`Database::apply_localisation_step`]): a crash leaves all of it or none, and the row
/// it handled is then handled again, once.
#[derive(Debug, Default)]
pub struct LocalisationStep<'a> {
    /// Localisations stored as they now stand.
    pub saves: Vec<(i64, LocalisationProgress<'a>)>,
    /// Failing rows that now wait for a running localisation of the same ebuild.
    pub wait: Vec<i64>,
    /// Failing rows that wait no more.
    pub unwait: Vec<i64>,
    /// The row this step handled: the mark of its table moves to it.
    pub through: Option<(EventSource, i64)>,
}

/// An open results database.
pub struct Database {
    conn: Connection,
    path: PathBuf,
    log_root: PathBuf,
    staging: PathBuf,
    // Keeps a temporary database's folder alive.
    _temp: Option<TempDir>,
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl Database {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    /// Removes the temporary files that killed writers left in [`Database::staging_dir`].
    pub fn open(path: &Path) -> Result<Database, DbError> {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let conn = gah_util::sqlite::open(path, MIGRATIONS, gah_util::sqlite::Options::default())?;
        let staging = dir.join("tmp");
        // Best effort: a reader without write access leaves them to the next writer.
        gah_util::atomic::remove_orphans(&staging, ORPHAN_AGE);
        Ok(Database { conn, path: path.to_path_buf(), log_root: dir.join("logs"), staging, _temp: None })
    }

    /// A database in a fresh temporary folder, removed on drop (for tests).
    pub fn temp() -> Result<Database, DbError> {
        let dir = std::env::temp_dir().join(format!("gah-db-{}-{}", std::process::id(), unique()));
        let mut db = Database::open(&dir.join("results.sqlite"))?;
        db._temp = Some(TempDir(dir));
        Ok(db)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where files bound for the stores beside the database are written before they are
    /// renamed into place (same filesystem): `tmp/` beside the database. Write there through
    /// `gah_util::atomic::AtomicFile::create_in`, so a killed writer's leftovers are found.
    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    fn sql_err(&self, source: rusqlite::Error) -> DbError {
        DbError::Sqlite { path: self.path.clone(), source }
    }

    /// Where a log with this hash lives, relative to the database's folder.
    pub fn log_relative_path(sha256: &str) -> String {
        // `get` rather than indexing: a hand-edited row must not panic a listing.
        format!("logs/{}/{}.log.gz", sha256.get(..2).unwrap_or("__"), sha256)
    }

    /// Stores `log` in the content-addressed log store (durably, before any row names it) and
    /// returns its hash.
    pub fn store_log(&self, log: &[u8]) -> Result<String, DbError> {
        let sha = crate::archive::sha256_hex(log);
        if let Some(p) = write_blob(&self.log_root, &self.staging, &sha, log)? {
            gah_util::atomic::rename_durably(&p.tmp, &p.file).map_err(|e| DbError::Io { path: e.path, source: e.source })?;
        }
        Ok(sha)
    }

    /// Records the canonical outcome of workunit `wu_name` in one transaction, without a
    /// snapshot or `emerge --info` (see [`Database::record`]).
    pub fn record_outcome(&mut self, wu_name: &str, outcome: &Outcome, log: &[u8]) -> Result<Recorded, DbError> {
        self.record(&NewOutcome { wu_name, snapshot: NO_SNAPSHOT, outcome, log, emerge_info: None })
    }

    /// Records one outcome durably in one transaction: its blobs (log, `emerge --info`) are
    /// fsynced before the row that names them commits. Idempotent on (workunit, snapshot): a
    /// second call changes nothing and says so.
    pub fn record(&mut self, new: &NewOutcome<'_>) -> Result<Recorded, DbError> {
        let log_sha = self.store_log(new.log)?;
        let info_sha = new.emerge_info.map(|info| self.store_log(info)).transpose()?;
        let path = self.path.clone();
        let sql = |source| DbError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(sql)?;
        let recorded = insert_outcome(&tx, new, &log_sha, info_sha.as_deref()).map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(recorded)
    }

    /// Records a batch of outcomes with one transaction and two filesystem syncs in all,
    /// instead of three fsyncs per outcome: every new blob is written to a temporary file,
    /// the filesystem is synced, the blobs are renamed to their final names, it is synced
    /// again, and only then do the rows commit (so a row never names a blob that is not
    /// durable, and a blob's final name never holds a partial file). All or nothing: on an
    /// error no row of the batch is stored, and recording the batch again is correct.
    /// Idempotent per (workunit, snapshot), like [`Database::record`]; the result is in
    /// the batch's order.
    pub fn record_outcomes(&mut self, batch: &[NewOutcome<'_>]) -> Result<Vec<Recorded>, DbError> {
        // Hashing and compressing the blobs is most of a batch's cost: spread it over the
        // cores. Each thread skips blobs it has already seen; a blob two threads both write
        // is renamed into place twice with the same content, which is harmless.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        let per = batch.len().div_ceil(threads).max(1);
        let (root, staging) = (self.log_root.as_path(), self.staging.as_path());
        type Part = (Vec<(String, Option<String>)>, Vec<PendingBlob>);
        let parts: Vec<Result<Part, DbError>> = std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .chunks(per)
                .map(|part| {
                    s.spawn(move || {
                        let mut seen = std::collections::HashSet::new();
                        let (mut shas, mut pending) = (Vec::with_capacity(part.len()), Vec::new());
                        let mut blob = |bytes: &[u8]| -> Result<String, DbError> {
                            let sha = crate::archive::sha256_hex(bytes);
                            if seen.insert(sha.clone()) {
                                pending.extend(write_blob(root, staging, &sha, bytes)?);
                            }
                            Ok(sha)
                        };
                        for new in part {
                            let log = blob(new.log)?;
                            let info = new.emerge_info.map(&mut blob).transpose()?;
                            shas.push((log, info));
                        }
                        Ok((shas, pending))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("hashing and compressing do not panic")).collect()
        });
        let (mut shas, mut pending) = (Vec::with_capacity(batch.len()), Vec::new());
        for part in parts {
            let (s, p) = part?;
            shas.extend(s);
            pending.extend(p);
        }
        if !pending.is_empty() {
            sync_filesystem(&self.log_root, pending.iter().map(|p| p.tmp.as_path()))?;
            for p in &pending {
                p.publish()?;
            }
            let mut dirs: Vec<&Path> = pending.iter().map(|p| p.dir.as_path()).collect();
            dirs.sort();
            dirs.dedup();
            sync_filesystem(&self.log_root, dirs.into_iter())?;
        }
        let path = self.path.clone();
        let sql = |source| DbError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(sql)?;
        let mut out = Vec::with_capacity(batch.len());
        for (new, (log, info)) in batch.iter().zip(&shas) {
            out.push(insert_outcome(&tx, new, log, info.as_deref()).map_err(sql)?);
        }
        tx.commit().map_err(sql)?;
        Ok(out)
    }

    /// The id of the tree snapshot labelled `label`, recorded now if it is new.
    pub fn snapshot(&mut self, label: &str) -> Result<SnapshotId, DbError> {
        let path = self.path.clone();
        let sql = |source| DbError::Sqlite { path: path.clone(), source };
        self.conn.execute("INSERT INTO snapshots (label) VALUES (?1) ON CONFLICT (label) DO NOTHING", [label]).map_err(sql)?;
        self.conn.query_row("SELECT id FROM snapshots WHERE label = ?1", [label], |r| r.get(0)).map_err(sql)
    }

    /// Every snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>, DbError> {
        let mut stmt = self.conn.prepare("SELECT id, label, recorded_at FROM snapshots ORDER BY id").map_err(|e| self.sql_err(e))?;
        let rows = stmt
            .query_map([], |r| Ok(Snapshot { id: r.get(0)?, label: r.get(1)?, recorded_at: r.get(2)? }))
            .map_err(|e| self.sql_err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql_err(e))
    }

    /// Reads a blob back from the store (a log or `emerge --info`), checking its hash.
    pub fn read_blob(&self, sha256: &str) -> Result<Vec<u8>, DbError> {
        use std::io::Read;
        // The hash may come from a reader's request (a web page's link): it names a file, so
        // anything but 64 hex digits is refused before it reaches a path.
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            let source = std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a sha256 (64 hex digits)");
            return Err(DbError::Io { path: PathBuf::from(sha256), source });
        }
        let dir = self.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let file = dir.join(Database::log_relative_path(sha256));
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(fs::File::open(&file).map_err(io_err(&file))?).read_to_end(&mut out).map_err(io_err(&file))?;
        if crate::archive::sha256_hex(&out) != sha256 {
            let source = std::io::Error::new(std::io::ErrorKind::InvalidData, "content does not match its sha256");
            return Err(DbError::Io { path: file, source });
        }
        Ok(out)
    }

    /// Records BOINC's report that workunit `wu_name` failed as a whole (the assimilator's
    /// `--error` path): an infrastructure failure, never counted against the package.
    pub fn record_infra_failure(&mut self, wu_name: &str, error_mask: i64, wu_id: i64, batch_id: i64) -> Result<Recorded, DbError> {
        let changed = self
            .conn
            .execute(
                "INSERT INTO infra_failures (wu_name, error_mask, wu_id, batch_id) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (wu_name) DO NOTHING",
                params![wu_name, error_mask, wu_id, batch_id],
            )
            .map_err(|e| self.sql_err(e))?;
        Ok(if changed == 1 { Recorded::Inserted } else { Recorded::AlreadyPresent })
    }

    /// Records that the canonical result of workunit `wu_name` could not be stored because
    /// its file is permanently unusable (the assimilator's quarantine: the reason, the upload's
    /// path and, when it was kept, the sha256 of its copy). Idempotent on the workunit name.
    pub fn record_quarantine(&mut self, wu_name: &str, file: &str, file_sha256: Option<&str>, reason: &str) -> Result<Recorded, DbError> {
        let changed = self
            .conn
            .execute(
                "INSERT INTO quarantine (wu_name, file, file_sha256, reason) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (wu_name) DO NOTHING",
                params![wu_name, file, file_sha256, reason],
            )
            .map_err(|e| self.sql_err(e))?;
        Ok(if changed == 1 { Recorded::Inserted } else { Recorded::AlreadyPresent })
    }

    /// The stored outcomes after row `seq` (exclusive), oldest first, at most `limit`: what
    /// the work generator's failcount rotation folds in past its watermark. `seq` only grows,
    /// so a reader that remembers the last `seq` it folded sees each row once.
    pub fn outcomes_since(&self, seq: i64, limit: usize) -> Result<Vec<StoredStatus>, DbError> {
        self.events_since("SELECT seq, wu_name, job_id, status FROM outcomes WHERE seq > ?1 ORDER BY seq LIMIT ?2", seq, limit)
    }

    /// The infrastructure failures ([`Database::record_infra_failure`]) after row `id`
    /// (exclusive), oldest first, at most `limit`; each with status
    /// [`Status::InfraError`](crate::outcome::Status::InfraError) and the job id of its
    /// workunit name ([`crate::job::job_id_of_wu`]).
    pub fn infra_failures_since(&self, id: i64, limit: usize) -> Result<Vec<StoredStatus>, DbError> {
        self.events_since(
            "SELECT rowid, wu_name, NULL, 'infra_error' FROM infra_failures WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
            id,
            limit,
        )
    }

    /// Stores the localisation of the failing row `failing_seq` as it stands: running with
    /// the evidence so far and the follow-up it waits for, or done with its conclusion. One
    /// row per failing row, replaced as the localisation moves on (a later call wins). The
    /// cell, snapshot and status are the failing row's.
    pub fn save_localisation(&mut self, failing_seq: i64, progress: LocalisationProgress<'_>) -> Result<(), DbError> {
        self.apply_localisation_step(&LocalisationStep { saves: vec![(failing_seq, progress)], ..LocalisationStep::default() })
    }

    /// Writes one localisation step ([`LocalisationStep`]) in one transaction.
    pub fn apply_localisation_step(&mut self, step: &LocalisationStep<'_>) -> Result<(), DbError> {
        let path = self.path.clone();
        let sql = |source| DbError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(sql)?;
        for (failing_seq, progress) in &step.saves {
            if save_localisation(&tx, *failing_seq, *progress).map_err(sql)? == 0 {
                return Err(sql(rusqlite::Error::QueryReturnedNoRows));
            }
        }
        for seq in &step.wait {
            tx.execute("INSERT INTO localisations_waiting (failing_seq) VALUES (?1) ON CONFLICT DO NOTHING", [seq]).map_err(sql)?;
        }
        for seq in &step.unwait {
            tx.execute("DELETE FROM localisations_waiting WHERE failing_seq = ?1", [seq]).map_err(sql)?;
        }
        if let Some((source, id)) = step.through {
            tx.execute(
                "INSERT INTO localisation_marks (source, last_id) VALUES (?1, ?2)
                 ON CONFLICT (source) DO UPDATE SET last_id = MAX(last_id, excluded.last_id)",
                params![source.as_str(), id],
            )
            .map_err(sql)?;
        }
        tx.commit().map_err(sql)
    }

    /// Moves the localisation step's marks past every row stored so far: with localisation
    /// off, nothing is left for it to catch up on when it is turned on.
    pub fn skip_localisation(&mut self) -> Result<(), DbError> {
        self.conn
            .execute_batch(
                "UPDATE localisation_marks SET last_id = MAX(last_id, (SELECT COALESCE(MAX(seq), 0) FROM outcomes)) WHERE source = 'outcomes';
                 UPDATE localisation_marks SET last_id = MAX(last_id, (SELECT COALESCE(MAX(rowid), 0) FROM infra_failures))
                 WHERE source = 'infra_failures';",
            )
            .map_err(|e| self.sql_err(e))
    }

    /// How far the localisation step has read `source` (the last row id it handled).
    pub fn localisation_mark(&self, source: EventSource) -> Result<i64, DbError> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row("SELECT last_id FROM localisation_marks WHERE source = ?1", [source.as_str()], |r| r.get(0))
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(|e| self.sql_err(e))
    }

    /// The failing rows waiting for a running localisation of the same ebuild, oldest first.
    pub fn waiting_localisations(&self) -> Result<Vec<i64>, DbError> {
        let mut stmt =
            self.conn.prepare("SELECT failing_seq FROM localisations_waiting ORDER BY failing_seq").map_err(|e| self.sql_err(e))?;
        let rows = stmt.query_map([], |r| r.get(0)).map_err(|e| self.sql_err(e))?;
        rows.collect::<Result<Vec<i64>, _>>().map_err(|e| self.sql_err(e))
    }

    fn events_since(&self, sql: &str, after: i64, limit: usize) -> Result<Vec<StoredStatus>, DbError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.sql_err(e))?;
        let rows = stmt
            .query_map(params![after, limit], |r| {
                let wu_name: String = r.get(1)?;
                let job_id: Option<String> = r.get(2)?;
                let status: String = r.get(3)?;
                let status = status.parse::<crate::outcome::Status>().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(std::io::Error::other(e)))
                })?;
                let job_id = job_id.unwrap_or_else(|| crate::job::job_id_of_wu(&wu_name).to_owned());
                Ok(StoredStatus { id: r.get(0)?, wu_name, job_id, status })
            })
            .map_err(|e| self.sql_err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql_err(e))
    }
}

/// Inserts or replaces the localisation of `failing_seq`; the number of rows written (0:
/// no such failing row).
fn save_localisation(tx: &rusqlite::Transaction<'_>, failing_seq: i64, progress: LocalisationProgress<'_>) -> rusqlite::Result<usize> {
    use crate::localisation::Conclusion;
    let (state, kind, cause, conclusion, evidence, next) = match progress {
        LocalisationProgress::Running { evidence, next, tries } => ("running", None, None, None, evidence, Some((next, tries))),
        LocalisationProgress::Done(c) => {
            let kind = match c {
                Conclusion::Localised { .. } => "localised",
                Conclusion::Flaky { .. } => "flaky",
                Conclusion::Inconclusive { .. } => "inconclusive",
            };
            ("done", Some(kind), c.cause(), Some(serde_json::to_string(c).expect("a conclusion serialises")), c.evidence(), None)
        }
    };
    let cause_json = cause.map(|c| serde_json::to_string(c).expect("a cause serialises"));
    let cause_text = cause.map(ToString::to_string);
    let evidence_json = serde_json::to_string(evidence).expect("evidence serialises");
    let followups = i64::try_from(evidence.runs.len()).unwrap_or(i64::MAX);
    let (next_use, next_compiler, next_job, tries) = match next {
        Some((c, tries)) => (Some(c.use_flags.to_package_use()), Some(c.compiler.as_str()), Some(c.job_id()), tries),
        None => (None, None, None, 0),
    };
    tx.execute(
        "INSERT INTO localisations (failing_seq, repo, cpv, use_flags, compiler, snapshot, status, state, kind,
            cause_json, cause_text, conclusion_json, evidence_json, followups, next_use_flags, next_compiler, next_job_id, next_tries)
         SELECT seq, repo, cpv, use_flags, compiler, snapshot, status, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12
         FROM outcomes WHERE seq = ?1
         ON CONFLICT (failing_seq) DO UPDATE SET state = excluded.state, kind = excluded.kind,
            cause_json = excluded.cause_json, cause_text = excluded.cause_text,
            conclusion_json = excluded.conclusion_json, evidence_json = excluded.evidence_json,
            followups = excluded.followups, next_use_flags = excluded.next_use_flags,
            next_compiler = excluded.next_compiler, next_job_id = excluded.next_job_id, next_tries = excluded.next_tries,
            updated_at = strftime('%Y-%m-%dT%H:%M:%SZ', 'now')",
        params![
            failing_seq,
            state,
            kind,
            cause_json,
            cause_text,
            conclusion,
            evidence_json,
            followups,
            next_use,
            next_compiler,
            next_job,
            tries
        ],
    )
}

fn insert_outcome(
    tx: &rusqlite::Transaction<'_>,
    new: &NewOutcome<'_>,
    log_sha: &str,
    info_sha: Option<&str>,
) -> rusqlite::Result<Recorded> {
    let o = new.outcome;
    let failing = serde_json::to_string(&o.failing_tests).expect("strings serialise");
    let phases = serde_json::to_string(&o.phases).expect("phases serialise");
    let json = String::from_utf8(o.to_json()).expect("JSON is UTF-8");
    let dep = (o.status == crate::outcome::Status::DepsFailed).then(|| crate::buildlog::failed_dependency(new.log));
    let (dep_kind, dep_cpv, dep_phase) = dep.as_ref().map_or((None, None, None), |d| {
        let (kind, cpv, phase) = d.to_columns();
        (Some(kind), cpv, phase)
    });
    let changed = tx
        .prepare_cached(
            "INSERT INTO outcomes (wu_name, snapshot, job_id, repo, cpv, use_flags, compiler, status, failed_phase,
                test_ran, failing_tests, phases, duration_secs, backend, accelerator, summary, log_sha256,
                emerge_info_sha256, outcome_json, dep_kind, dep_cpv, dep_phase)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)
             ON CONFLICT (wu_name, snapshot) DO NOTHING",
        )?
        .execute(params![
            new.wu_name,
            new.snapshot,
            o.job_id,
            o.repo,
            o.cpv,
            o.use_flags.to_package_use(),
            o.compiler.as_str(),
            o.status.as_str(),
            o.failed_phase,
            o.test_ran,
            failing,
            phases,
            o.duration_secs,
            o.backend,
            o.accelerator,
            o.summary,
            log_sha,
            info_sha,
            json,
            dep_kind,
            dep_cpv,
            dep_phase,
        ])?;
    Ok(if changed == 1 { Recorded::Inserted } else { Recorded::AlreadyPresent })
}

/// Compresses `blob` (whose hash is `sha`) into a temporary file in `staging` for the store
/// under `log_root`, unsynced, and returns it pending; `None` when the store already has it. The
/// batch path syncs many pending blobs with one `syncfs` before publishing them, which is why
/// this is not `gah_util::atomic::AtomicFile` (one fsync per file). Invariant kept by every caller: a file
/// reaches its final name only after its content is durable, so a name in the store always
/// holds the whole blob, even after a power loss.
fn write_blob(log_root: &Path, staging: &Path, sha: &str, blob: &[u8]) -> Result<Option<PendingBlob>, DbError> {
    let dir = log_root.join(&sha[..2]);
    let file = dir.join(format!("{sha}.log.gz"));
    if file.exists() {
        return Ok(None);
    }
    let mkdir = |d: &Path| gah_util::atomic::create_dir_all_durably(d).map_err(|e| DbError::Io { path: e.path, source: e.source });
    mkdir(&dir)?;
    mkdir(staging)?;
    let tmp = gah_util::atomic::temp_path_in(staging, &file);
    // The fastest level: logs still shrink ~10x, and compression is the batch path's
    // main cost. The hash is of the uncompressed bytes, so the level is free to change.
    let mut gz = flate2::write::GzEncoder::new(fs::File::create(&tmp).map_err(io_err(&tmp))?, flate2::Compression::fast());
    gz.write_all(blob).map_err(io_err(&tmp))?;
    gz.finish().map_err(io_err(&tmp))?;
    Ok(Some(PendingBlob { tmp, file, dir }))
}

/// A blob compressed into a temporary file, not yet under its final name.
struct PendingBlob {
    tmp: PathBuf,
    file: PathBuf,
    dir: PathBuf,
}

impl PendingBlob {
    fn publish(&self) -> Result<(), DbError> {
        fs::rename(&self.tmp, &self.file).map_err(io_err(&self.file))
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DbError {
    let path = path.to_path_buf();
    move |source| DbError::Io { path, source }
}

/// Makes `paths` durable. On Linux one `syncfs` of the store's filesystem does it for all
/// of them at once (per-file fsync costs ~3 ms each on the ext4 we measured; one syncfs of a
/// batch of 500 files ~150 ms); elsewhere each path is fsynced.
fn sync_filesystem<'a>(store: &Path, paths: impl Iterator<Item = &'a Path>) -> Result<(), DbError> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let _ = paths;
        let dir = fs::File::open(store).map_err(io_err(store))?;
        nix::unistd::syncfs(dir.as_raw_fd()).map_err(|e| DbError::Io { path: store.to_path_buf(), source: e.into() })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = store;
        paths.into_iter().try_for_each(|p| fs::File::open(p).and_then(|f| f.sync_all()).map_err(io_err(p)))
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    (u64::from(nanos) << 16) | NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Compiler, Job, UseAssignment};
    use crate::outcome::Status;

    #[test]
    fn same_workunit_twice_is_one_row() {
        let mut db = Database::temp().unwrap();
        let job = Job::new("gah", "a/b-1", UseAssignment::default(), Compiler::Gcc, 60);
        let outcome = Outcome::for_job(&job, Status::Success);
        assert_eq!(db.record_outcome("wu1", &outcome, b"log").unwrap(), Recorded::Inserted);
        assert_eq!(db.record_outcome("wu1", &outcome, b"log").unwrap(), Recorded::AlreadyPresent);
        let rows = db.outcomes(&Filter::default(), Page::ALL).unwrap();
        assert_eq!(rows.len(), 1);
        assert!(db.path().parent().unwrap().join(rows[0].log.relative_path()).exists());
    }

    fn outcome(cpv: &str, status: Status) -> Outcome {
        let job = Job::new("gah", cpv, UseAssignment::default(), Compiler::Gcc, 60);
        Outcome::for_job(&job, status)
    }

    #[test]
    fn results_past_a_watermark_come_once_in_order() {
        let mut db = Database::temp().unwrap();
        let (a, b) = (outcome("a/b-1", Status::BuildFailed), outcome("a/c-1", Status::Success));
        db.record_outcome(&format!("{}_1", a.job_id), &a, b"l").unwrap();
        db.record_outcome(&format!("{}_1", b.job_id), &b, b"l").unwrap();
        db.record_outcome(&format!("{}_1", a.job_id), &a, b"l").unwrap(); // redelivered: no row
        let all = db.outcomes_since(0, 10).unwrap();
        let seen: Vec<_> = all.iter().map(|r| (r.job_id.as_str(), r.status)).collect();
        assert_eq!(seen, [(a.job_id.as_str(), Status::BuildFailed), (b.job_id.as_str(), Status::Success)]);
        assert_eq!(db.outcomes_since(0, 1).unwrap(), all[..1]);
        assert_eq!(db.outcomes_since(all[0].id, 10).unwrap(), all[1..]);
        assert!(db.outcomes_since(all[1].id, 10).unwrap().is_empty());

        db.record_infra_failure(&format!("{}_2", a.job_id), 8, 1, 0).unwrap();
        db.record_infra_failure("wu#7", 8, 7, 0).unwrap();
        let infra = db.infra_failures_since(0, 10).unwrap();
        let seen: Vec<_> = infra.iter().map(|r| (r.job_id.as_str(), r.status)).collect();
        assert_eq!(seen, [(a.job_id.as_str(), Status::InfraError), ("wu#7", Status::InfraError)]);
        assert_eq!(db.infra_failures_since(infra[0].id, 10).unwrap(), infra[1..]);
    }

    #[test]
    fn a_batch_is_idempotent_and_shares_logs() {
        let mut db = Database::temp().unwrap();
        let (a, b) = (outcome("a/b-1", Status::Success), outcome("a/c-1", Status::Success));
        let batch = [
            NewOutcome { wu_name: "wu1", snapshot: NO_SNAPSHOT, outcome: &a, log: b"same", emerge_info: Some(b"info") },
            NewOutcome { wu_name: "wu2", snapshot: NO_SNAPSHOT, outcome: &b, log: b"same", emerge_info: None },
            NewOutcome { wu_name: "wu1", snapshot: NO_SNAPSHOT, outcome: &a, log: b"same", emerge_info: None },
        ];
        let done = db.record_outcomes(&batch).unwrap();
        assert_eq!(done, [Recorded::Inserted, Recorded::Inserted, Recorded::AlreadyPresent]);
        assert_eq!(db.record_outcomes(&batch[..2]).unwrap(), [Recorded::AlreadyPresent; 2]);
        assert_eq!(db.outcomes(&Filter::default(), Page::ALL).unwrap().len(), 2);
        assert_eq!(db.read_blob(&crate::archive::sha256_hex(b"same")).unwrap(), b"same");
        assert_eq!(db.read_blob(&crate::archive::sha256_hex(b"info")).unwrap(), b"info");
        // No temporary file is left in the store.
        let leftovers = fs::read_dir(db.log_root.join(&crate::archive::sha256_hex(b"same")[..2])).unwrap();
        assert!(leftovers.map(|e| e.unwrap().file_name()).all(|n| !n.to_string_lossy().contains(".tmp")));
        assert_eq!(fs::read_dir(db.staging_dir()).unwrap().count(), 0);
    }

    #[test]
    fn a_cell_keeps_one_row_per_snapshot() {
        let mut db = Database::temp().unwrap();
        let (s1, s2) = (db.snapshot("git:111").unwrap(), db.snapshot("git:222").unwrap());
        assert!(s1 < s2 && db.snapshot("git:111").unwrap() == s1);
        let (bad, good) = (outcome("a/b-1", Status::BuildFailed), outcome("a/b-1", Status::Success));
        for (snapshot, o) in [(s1, &bad), (s2, &good), (s2, &good)] {
            db.record(&NewOutcome { wu_name: &o.job_id, snapshot, outcome: o, log: b"l", emerge_info: None }).unwrap();
        }
        let rows = db.outcomes(&Filter::default(), Page::ALL).unwrap();
        assert_eq!(rows.iter().map(|r| r.snapshot).collect::<Vec<_>>(), [s1, s2]);
        let labels: Vec<String> = db.snapshots().unwrap().into_iter().map(|s| s.label).collect();
        assert_eq!(labels, ["unrecorded", "git:111", "git:222"]);
    }

    #[test]
    fn rows_from_before_snapshots_survive_the_migration() {
        let dir = tempfile_dir();
        let path = dir.0.join("results.sqlite");
        {
            // The schema as the first two migrations left it, with one row.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT '')").unwrap();
            for m in &MIGRATIONS[..2] {
                conn.execute_batch(m.sql).unwrap();
                conn.execute("INSERT INTO migrations (name) VALUES (?1)", [m.name]).unwrap();
            }
            conn.execute(
                "INSERT INTO outcomes (wu_name, job_id, repo, cpv, use_flags, compiler, status, test_ran, failing_tests,
                    phases, duration_secs, backend, accelerator, summary, log_sha256, outcome_json)
                 VALUES ('old', 'j', 'gah', 'a/b-1', '', 'gcc', 'success', 0, '[]', '[]', 1.0, 'vm', 'kvm', 'ok', 'ab', '{}')",
                [],
            )
            .unwrap();
        }
        let mut db = Database::open(&path).unwrap();
        let rows = db.outcomes(&Filter::default(), Page::ALL).unwrap();
        assert_eq!((rows.len(), rows[0].wu_name.as_str(), rows[0].snapshot), (1, "old", NO_SNAPSHOT));
        let o = outcome("a/b-1", Status::BuildFailed);
        assert_eq!(db.record_outcome("old", &o, b"l").unwrap(), Recorded::AlreadyPresent);
    }

    #[test]
    fn open_removes_the_temporaries_of_dead_writers() {
        let db = Database::temp().unwrap();
        let mut child = gah_util::process::command("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        fs::create_dir_all(db.staging_dir()).unwrap();
        let orphan = db.staging_dir().join(format!(".{}.log.gz.tmp-{dead}-0", "ab".repeat(32)));
        fs::write(&orphan, b"half a log").unwrap();
        let ours = gah_util::atomic::temp_path_in(db.staging_dir(), Path::new("x.log.gz"));
        fs::write(&ours, b"in flight").unwrap();
        let again = Database::open(db.path()).unwrap();
        assert!(!orphan.exists() && ours.exists());
        drop(again);
    }

    fn tempfile_dir() -> TempDir {
        let dir = std::env::temp_dir().join(format!("gah-db-{}-{}", std::process::id(), unique()));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    #[test]
    fn migrations_are_idempotent() {
        let db = Database::temp().unwrap();
        let path = db.path().to_path_buf();
        let again = Database::open(&path).unwrap();
        let n: i64 = again.conn.query_row("SELECT count(*) FROM migrations", [], |r| r.get(0)).unwrap();
        assert_eq!(n, MIGRATIONS.len() as i64);
        drop(db);
    }
}
