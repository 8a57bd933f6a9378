//! `gah-assimilator`: stores the canonical outcome of each finished workunit in the results
//! database, for BOINC's `script_assimilator` and in-process for `gah run`.
//!
//! - [`assimilate`] reads and checks the canonical result's archive with
//!   [`gah_validator::load`] (the same checks as the validator's `init`) and writes it with
//!   [`Database::record_outcome`]: one transaction, the log stored compressed and
//!   content-addressed beside the database first, idempotent on the workunit name.
//! - [`record_error`] is BOINC's failed-workunit path (`--error MASK WU_NAME WU_ID BATCH_ID`):
//!   an infrastructure failure row, never counted against the package.
//!
//! ## Exit policy (the binary's contract with `script_assimilator`)
//!
//! `script_assimilator` stops its daemon on *any* nonzero exit, and BOINC retries the same
//! workunit once the daemon is restarted. So:
//! - a file that is **permanently** unusable (corrupt, hostile, schema-violating) is not a
//!   reason to stop every later workunit: it is *quarantined* ([`Assimilated::Quarantined`]):
//!   a row in the `quarantine` table with the reason, and a copy of the upload (when under
//!   the archive size cap) at `quarantine/<sha256>.tar.gz` beside the database. Exit 0.
//! - a **transient** problem (the upload unreadable right now, the database locked past its
//!   busy timeout, the disk full) is an [`AssimilateError`]: exit nonzero, so the daemon
//!   stops, an administrator sees it, and the workunit is assimilated on restart. Nothing is
//!   lost: BOINC marks the workunit assimilated only after exit 0.
//!
//! Exit 0 means the row is durable: SQLite in WAL mode with `synchronous=FULL`, the log
//! fsynced before the row that names it.
//!
//! **Invariant:** the assimilator never deletes anything: not uploads, not rows, not logs.
//! It only inserts, and an insert for a workunit already stored changes nothing.
//!
//! ```no_run
//! use std::path::Path;
//! use gah_core::db::Database;
//! let mut db = Database::open(&gah_assimilator::default_db_path()).unwrap();
//! let done = gah_assimilator::assimilate(&mut db, "wu_42", Path::new("wu_42_0_r1_0")).unwrap();
//! println!("{done}");
//! ```
#![deny(missing_docs)]

use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use gah_core::archive::{self, Limits, OutcomeArchive};
use gah_core::db::{Database, DbError, Recorded};
use gah_validator::LoadError;

/// What [`assimilate`] did with a workunit's canonical result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assimilated {
    /// The outcome is stored: newly, or it already was.
    Stored(Recorded),
    /// The file is permanently unusable; the reason is recorded in the `quarantine` table.
    Quarantined {
        /// Why the file was refused (one line, naming the file).
        reason: String,
        /// Whether this call recorded it or it already was.
        recorded: Recorded,
    },
}

impl fmt::Display for Assimilated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Assimilated::Stored(Recorded::Inserted) => f.write_str("stored"),
            Assimilated::Stored(Recorded::AlreadyPresent) => f.write_str("already stored"),
            Assimilated::Quarantined { reason, recorded: Recorded::Inserted } => write!(f, "quarantined: {reason}"),
            Assimilated::Quarantined { reason, recorded: Recorded::AlreadyPresent } => {
                write!(f, "already quarantined: {reason}")
            }
        }
    }
}

/// A transient failure: nothing was recorded for the workunit (or what was is harmless to
/// repeat); assimilating it again later is correct.
#[derive(Debug)]
pub enum AssimilateError {
    /// The upload could not be read now (a server-side problem, not its content).
    Read(LoadError),
    /// The results database or the log or quarantine store refused.
    Db(DbError),
    /// Keeping a copy of a quarantined upload failed.
    Quarantine {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl fmt::Display for AssimilateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AssimilateError::Read(e) => write!(f, "{e}"),
            AssimilateError::Db(e) => write!(f, "{e}"),
            AssimilateError::Quarantine { path, source } => write!(f, "quarantine copy {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for AssimilateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AssimilateError::Read(e) => Some(e),
            AssimilateError::Db(e) => Some(e),
            AssimilateError::Quarantine { source, .. } => Some(source),
        }
    }
}

impl From<DbError> for AssimilateError {
    fn from(e: DbError) -> Self {
        AssimilateError::Db(e)
    }
}

/// The results database used when none is given: `$GAH_RESULTS_DB`, else
/// `./results/results.sqlite`. (`script_assimilator` passes only its own tokens, so the
/// environment is how a BOINC project names the database.)
pub fn default_db_path() -> PathBuf {
    std::env::var_os("GAH_RESULTS_DB").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("results/results.sqlite"))
}

/// Stores the canonical result of workunit `wu_name`, read from `path`. See the module docs
/// for which failures are quarantined and which are errors.
pub fn assimilate(db: &mut Database, wu_name: &str, path: &Path) -> Result<Assimilated, AssimilateError> {
    match gah_validator::load(path) {
        Ok(archive) => Ok(Assimilated::Stored(store(db, wu_name, &archive)?)),
        Err(e) if e.is_transient() => Err(AssimilateError::Read(e)),
        Err(e) => {
            let reason = gah_validator::one_line(&e.to_string());
            let copy = keep_copy(db, path)?;
            let recorded = db.record_quarantine(wu_name, &path.to_string_lossy(), copy.as_deref(), &reason)?;
            Ok(Assimilated::Quarantined { reason, recorded })
        }
    }
}

/// Stores an archive already checked in memory (for `gah run`, which has just validated
/// it). One transaction; idempotent on `wu_name`.
pub fn store(db: &mut Database, wu_name: &str, archive: &OutcomeArchive) -> Result<Recorded, DbError> {
    db.record_outcome(wu_name, &archive.outcome, &archive.build_log)
}

/// BOINC's failed-workunit path: records an infrastructure failure with BOINC's error mask.
/// Idempotent on `wu_name`.
pub fn record_error(db: &mut Database, error_mask: i64, wu_name: &str, wu_id: i64, batch_id: i64) -> Result<Recorded, DbError> {
    db.record_infra_failure(wu_name, error_mask, wu_id, batch_id)
}

/// Copies a refused upload to `quarantine/<sha256>.tar.gz` beside the database, durably,
/// and returns its hash; `None` when the file is over the archive size cap (only its
/// reason is kept) or vanished in between.
fn keep_copy(db: &Database, path: &Path) -> Result<Option<String>, AssimilateError> {
    let cap = Limits::default().max_compressed;
    let mut bytes = Vec::new();
    match fs::File::open(path).and_then(|f| f.take(cap + 1).read_to_end(&mut bytes)) {
        Ok(_) if bytes.len() as u64 <= cap => {}
        _ => return Ok(None),
    }
    let sha = archive::sha256_hex(&bytes);
    let dir = db.path().parent().map(Path::to_path_buf).unwrap_or_default().join("quarantine");
    let file = dir.join(format!("{sha}.tar.gz"));
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AssimilateError::Quarantine { path, source }
    };
    if !file.exists() {
        fs::create_dir_all(&dir).map_err(err(&dir))?;
        let tmp = dir.join(format!(".{sha}.{}.tmp", std::process::id()));
        let mut out = fs::File::create(&tmp).map_err(err(&tmp))?;
        out.write_all(&bytes).and_then(|()| out.sync_all()).map_err(err(&tmp))?;
        fs::rename(&tmp, &file).map_err(err(&file))?;
        fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(err(&dir))?;
    }
    Ok(Some(sha))
}
