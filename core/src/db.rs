//! The results database: schema, migrations and the writes the assimilator makes.
//!
//! SQLite in WAL mode. Logs are stored beside the database, gzip-compressed and
//! content-addressed by the sha256 of the uncompressed log (`logs/ab/abcd….log.gz`), so the
//! same log is stored once and a row names it by hash.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::outcome::Outcome;

/// Named migrations, applied in order, each in its own transaction (as crater does).
const MIGRATIONS: &[(&str, &str)] = &[(
    "0001_outcomes",
    "CREATE TABLE outcomes (
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
), (
    "0002_quarantine",
    "CREATE TABLE quarantine (
        wu_name     TEXT PRIMARY KEY,
        file        TEXT NOT NULL,
        file_sha256 TEXT,
        reason      TEXT NOT NULL,
        recorded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
    );",
)];

/// Errors from the results database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused.
    #[error("results database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The log store could not be written.
    #[error("log store {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What [`Database::record_outcome`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// A new row.
    Inserted,
    /// The workunit already had a row; nothing changed.
    AlreadyPresent,
}

/// One stored outcome, as listings read it.
#[derive(Debug, Clone)]
pub struct OutcomeRow {
    /// The BOINC workunit name.
    pub wu_name: String,
    /// `category/package-version`.
    pub cpv: String,
    /// Every flag in `package.use` notation.
    pub use_flags: String,
    /// `gcc` or `clang`.
    pub compiler: String,
    /// The status code.
    pub status: String,
    /// The failed phase, if any.
    pub failed_phase: Option<String>,
    /// Whether the test phase ran.
    pub test_ran: bool,
    /// Whole-job seconds.
    pub duration_secs: f64,
    /// Per-phase durations as JSON.
    pub phases: String,
    /// Where the compressed log is, relative to the database's folder.
    pub log_path: String,
}

/// An open results database.
pub struct Database {
    conn: Connection,
    path: PathBuf,
    log_root: PathBuf,
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
    pub fn open(path: &Path) -> Result<Database, DbError> {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        fs::create_dir_all(&dir).map_err(|source| DbError::Io { path: dir.clone(), source })?;
        let sql = |source| DbError::Sqlite { path: path.to_path_buf(), source };
        let conn = Connection::open(path).map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(sql)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(sql)?;
        let mut db = Database { conn, path: path.to_path_buf(), log_root: dir.join("logs"), _temp: None };
        db.migrate()?;
        Ok(db)
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

    /// The raw connection, for read-only queries by the results commands.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn sql_err(&self, source: rusqlite::Error) -> DbError {
        DbError::Sqlite { path: self.path.clone(), source }
    }

    fn migrate(&mut self) -> Result<(), DbError> {
        self.conn
            .execute_batch("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')))")
            .map_err(|e| self.sql_err(e))?;
        for (name, sql) in MIGRATIONS {
            let tx = self.conn.transaction().map_err(|e| DbError::Sqlite { path: self.path.clone(), source: e })?;
            let done: Option<String> = tx
                .query_row("SELECT name FROM migrations WHERE name = ?1", [name], |r| r.get(0))
                .optional()
                .map_err(|e| DbError::Sqlite { path: self.path.clone(), source: e })?;
            if done.is_none() {
                tx.execute_batch(sql).map_err(|e| DbError::Sqlite { path: self.path.clone(), source: e })?;
                tx.execute("INSERT INTO migrations (name) VALUES (?1)", [name])
                    .map_err(|e| DbError::Sqlite { path: self.path.clone(), source: e })?;
            }
            tx.commit().map_err(|e| DbError::Sqlite { path: self.path.clone(), source: e })?;
        }
        Ok(())
    }

    /// Where a log with this hash lives, relative to the database's folder.
    pub fn log_relative_path(sha256: &str) -> String {
        format!("logs/{}/{}.log.gz", &sha256[..2], sha256)
    }

    /// Stores `log` in the content-addressed log store (durably, before any row names it) and
    /// returns its hash.
    pub fn store_log(&self, log: &[u8]) -> Result<String, DbError> {
        let sha = crate::archive::sha256_hex(log);
        let dir = self.log_root.join(&sha[..2]);
        let file = dir.join(format!("{sha}.log.gz"));
        if file.exists() {
            return Ok(sha);
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DbError::Io { path, source }
        };
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let tmp = dir.join(format!(".{sha}.{}.tmp", std::process::id()));
        let mut gz = flate2::write::GzEncoder::new(fs::File::create(&tmp).map_err(io(&tmp))?, flate2::Compression::default());
        gz.write_all(log).map_err(io(&tmp))?;
        let f = gz.finish().map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &file).map_err(io(&file))?;
        fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io(&dir))?;
        Ok(sha)
    }

    /// Records the canonical outcome of workunit `wu_name` in one transaction. Idempotent on
    /// the workunit name: a second call changes nothing and says so.
    pub fn record_outcome(&mut self, wu_name: &str, outcome: &Outcome, log: &[u8]) -> Result<Recorded, DbError> {
        let log_sha = self.store_log(log)?;
        let failing = serde_json::to_string(&outcome.failing_tests).expect("strings serialise");
        let phases = serde_json::to_string(&outcome.phases).expect("phases serialise");
        let json = String::from_utf8(outcome.to_json()).expect("JSON is UTF-8");
        let path = self.path.clone();
        let sql = |source| DbError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction().map_err(sql)?;
        let changed = tx
            .execute(
                "INSERT INTO outcomes (wu_name, job_id, repo, cpv, use_flags, compiler, status, failed_phase,
                    test_ran, failing_tests, phases, duration_secs, backend, accelerator, summary, log_sha256, outcome_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
                 ON CONFLICT (wu_name) DO NOTHING",
                params![
                    wu_name,
                    outcome.job_id,
                    outcome.repo,
                    outcome.cpv,
                    outcome.use_flags.to_package_use(),
                    outcome.compiler.as_str(),
                    outcome.status.as_str(),
                    outcome.failed_phase,
                    outcome.test_ran,
                    failing,
                    phases,
                    outcome.duration_secs,
                    outcome.backend,
                    outcome.accelerator,
                    outcome.summary,
                    log_sha,
                    json,
                ],
            )
            .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(if changed == 1 { Recorded::Inserted } else { Recorded::AlreadyPresent })
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

    /// Every stored outcome, ordered by package, USE and compiler.
    pub fn outcomes(&self) -> Result<Vec<OutcomeRow>, DbError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT wu_name, cpv, use_flags, compiler, status, failed_phase, test_ran, duration_secs, phases, log_sha256
                 FROM outcomes ORDER BY cpv, use_flags, compiler",
            )
            .map_err(|e| self.sql_err(e))?;
        let rows = stmt
            .query_map([], |r| {
                let sha: String = r.get(9)?;
                Ok(OutcomeRow {
                    wu_name: r.get(0)?,
                    cpv: r.get(1)?,
                    use_flags: r.get(2)?,
                    compiler: r.get(3)?,
                    status: r.get(4)?,
                    failed_phase: r.get(5)?,
                    test_ran: r.get(6)?,
                    duration_secs: r.get(7)?,
                    phases: r.get(8)?,
                    log_path: Database::log_relative_path(&sha),
                })
            })
            .map_err(|e| self.sql_err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql_err(e))
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
        let rows = db.outcomes().unwrap();
        assert_eq!(rows.len(), 1);
        assert!(db.path().parent().unwrap().join(&rows[0].log_path).exists());
    }

    #[test]
    fn migrations_are_idempotent() {
        let db = Database::temp().unwrap();
        let path = db.path().to_path_buf();
        let again = Database::open(&path).unwrap();
        let n: i64 = again.connection().query_row("SELECT count(*) FROM migrations", [], |r| r.get(0)).unwrap();
        assert_eq!(n, MIGRATIONS.len() as i64);
        drop(db);
    }
}
