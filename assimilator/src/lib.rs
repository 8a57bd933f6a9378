//! `gah-assimilator`: stores the canonical outcome of each finished workunit in the results
//! database, for BOINC's `script_assimilator` and in-process for `gah run`.
//!
//! - [`assimilate`] reads and checks the canonical result's archive with
//!   [`gah_validator::load_for_workunit`] (the same checks as the validator's `init`, and the
//!   outcome must answer this workunit's job) and writes it with
//!   [`Database::record_outcome`]: one transaction, the log stored compressed and
//!   content-addressed beside the database first, idempotent on the workunit name.
//! - [`record_error`] is BOINC's failed-workunit path (`--error MASK WU_NAME WU_ID BATCH_ID`):
//!   an infrastructure failure row, never counted against the package.
//! - [`assimilate_batch`] is the throughput path (`gah-assimilator --batch LIST`): archives
//!   checked on several threads, then stored by [`Database::record_outcomes`] with one
//!   transaction and two filesystem syncs per batch instead of three fsyncs per outcome.
//!   Same idempotence and durability as the single path. A batch is bounded by count and by
//!   the bytes its checked archives hold ([`Batching`]), so memory stays bounded whatever
//!   the uploads.
//! - The assimilator writes the results database and, when the project has a
//!   `binpkgs_dir`, the package store ([`binpkgs`]: the canonical result's packages that the
//!   validator recorded as agreed), and nothing else: the work generator's failcount rotation
//!   reads what was stored from there, past its own watermark
//!   (`gah_workgen::Queue::fold_results`), so data flows one way.
//! - [`boinc`] is what `gah-assimilate`, the program BOINC's `script_assimilator` runs,
//!   does with the arguments BOINC's keywords give (`WU_ID FILE`, `--error MASK ...`).
//!
//! ## Tree snapshots
//!
//! Each outcome is recorded under a tree snapshot ([`Database::snapshot`]): a label naming
//! the state of the ebuild repository the jobs were generated from, e.g. the repository's git
//! commit or [`md5_cache_snapshot`]. A row's identity is (workunit name, snapshot): the same
//! delivery twice is one row, the same cell built again after the tree moved is a new row,
//! which is what `gah results history` and `changes` read. The binary takes the label from
//! `--snapshot` or `$GAH_SNAPSHOT` (set by whoever syncs the tree and generates the work);
//! without one, rows go to snapshot 0 (`unrecorded`).
//!
//! ## Exit policy (the binary's contract with `script_assimilator`)
//!
//! `script_assimilator` stops its daemon on *any* nonzero exit, and BOINC retries the same
//! workunit once the daemon is restarted. So:
//! - a file that is **permanently** unusable (corrupt, hostile, schema-violating) is not a
//!   reason to stop every later workunit: it is *quarantined* ([`Assimilated::Quarantined`]):
//!   a row in the `quarantine` table with the reason, and a copy of the upload (when under
//!   the archive size cap) at `quarantine/<sha256>.tar.gz` beside the database. Exit 0.
//!   For BOINC's daemon ([`boinc::perform`]), a canonical upload that is **missing** is
//!   quarantined too (no copy, only the reason): BOINC will not make it appear.
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

pub mod binpkgs;
pub mod boinc;
pub mod localise;

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use gah_core::archive::{self, Limits, OutcomeArchive};
use gah_core::db::{Database, DbError, NewOutcome, Recorded, SnapshotId, NO_SNAPSHOT};
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
    /// The batch this workunit was in could not be stored (the database's error, shared by
    /// every workunit of the batch).
    Batch(String),
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
            AssimilateError::Batch(reason) => write!(f, "batch not stored: {reason}"),
            AssimilateError::Quarantine { path, .. } => write!(f, "quarantine copy {}", path.display()),
        }
    }
}

impl std::error::Error for AssimilateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent: their Display is the wrapped error's own.
            AssimilateError::Read(e) => e.source(),
            AssimilateError::Db(e) => e.source(),
            AssimilateError::Batch(_) => None,
            AssimilateError::Quarantine { source, .. } => Some(source),
        }
    }
}

impl From<DbError> for AssimilateError {
    fn from(e: DbError) -> Self {
        AssimilateError::Db(e)
    }
}

/// The results database `gah-assimilator` (the tool for humans) uses when none is
/// configured: `$GAH_RESULTS_DB`, else `./results/results.sqlite`. The daemon's program,
/// `gah-assimilate`, never falls back: see [`boinc::Settings::resolve`].
pub fn default_db_path() -> PathBuf {
    std::env::var_os("GAH_RESULTS_DB").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("results/results.sqlite"))
}

/// Stores the canonical result of workunit `wu_name`, read from `path`, without a snapshot.
/// See the module docs for which failures are quarantined and which are errors.
pub fn assimilate(db: &mut Database, wu_name: &str, path: &Path) -> Result<Assimilated, AssimilateError> {
    assimilate_at(db, NO_SNAPSHOT, wu_name, path)
}

/// [`assimilate`] under tree snapshot `snapshot` (an id from [`Database::snapshot`]).
pub fn assimilate_at(db: &mut Database, snapshot: SnapshotId, wu_name: &str, path: &Path) -> Result<Assimilated, AssimilateError> {
    match gah_validator::load_for_workunit(path, wu_name) {
        Ok(archive) => Ok(Assimilated::Stored(store_at(db, snapshot, wu_name, &archive)?)),
        Err(e) if e.is_transient() => Err(AssimilateError::Read(e)),
        Err(e) => quarantine(db, wu_name, path, &e),
    }
}

/// A canonical upload that is not there. Transient for the library and `gah-assimilator`
/// (it may still arrive); BOINC's daemon path quarantines it ([`boinc::perform`]).
pub(crate) fn is_missing(e: &LoadError) -> bool {
    matches!(e, LoadError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

fn quarantine(db: &mut Database, wu_name: &str, path: &Path, e: &LoadError) -> Result<Assimilated, AssimilateError> {
    let reason = gah_validator::one_line(&gah_util::error_chain(&e));
    let copy = keep_copy(db, path)?;
    let recorded = db.record_quarantine(wu_name, &path.to_string_lossy(), copy.as_deref(), &reason)?;
    Ok(Assimilated::Quarantined { reason, recorded })
}

/// Stores an archive already checked in memory (for `gah run`, which has just validated
/// it), without a snapshot. One transaction; idempotent on `wu_name`.
pub fn store(db: &mut Database, wu_name: &str, archive: &OutcomeArchive) -> Result<Recorded, DbError> {
    store_at(db, NO_SNAPSHOT, wu_name, archive)
}

/// [`store`] under tree snapshot `snapshot`. The log and `emerge --info` are both kept,
/// content-addressed, beside the database.
pub fn store_at(db: &mut Database, snapshot: SnapshotId, wu_name: &str, archive: &OutcomeArchive) -> Result<Recorded, DbError> {
    db.record(&new_outcome(snapshot, wu_name, archive))
}

fn new_outcome<'a>(snapshot: SnapshotId, wu_name: &'a str, archive: &'a OutcomeArchive) -> NewOutcome<'a> {
    NewOutcome { wu_name, snapshot, outcome: &archive.outcome, log: &archive.build_log, emerge_info: archive.emerge_info.as_deref() }
}

/// One workunit of a batch, and what became of it.
#[derive(Debug)]
pub struct BatchItem {
    /// The workunit name.
    pub wu_name: String,
    /// Its canonical result's file.
    pub file: PathBuf,
    /// Stored or quarantined, or a transient error (assimilate it again later).
    pub result: Result<Assimilated, AssimilateError>,
}

/// How [`assimilate_batch`] cuts its work.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Threads reading and checking archives; also how many are read at once.
    pub threads: usize,
    /// Outcomes per transaction at most.
    pub max_items: usize,
    /// Bytes of checked archives held at once (see [`OutcomeArchive::approx_bytes`]): a
    /// transaction also ends once its outcomes reach this. Peak memory is about this plus
    /// `threads` archives being read (each at most the compressed and inflated caps,
    /// 16 + 64 MiB, with its parsed outcome).
    pub max_bytes: usize,
}

/// Assimilates many workunits: archives are read and checked `threads` at a time, then
/// stored with [`Database::record_outcomes`] once `max_items` of them or `max_bytes` are
/// held. Items come back in the input's order. A transient read error affects only its item;
/// a database error fails every item of its transaction (none of it is stored; all of it
/// may be retried).
pub fn assimilate_batch(db: &mut Database, snapshot: SnapshotId, items: &[(String, PathBuf)], batching: Batching) -> Vec<BatchItem> {
    let threads = batching.threads.max(1);
    let mut results: Vec<Option<Result<Assimilated, AssimilateError>>> = (0..items.len()).map(|_| None).collect();
    let mut held: Vec<(usize, OutcomeArchive)> = Vec::new();
    let mut held_bytes = 0;
    let mut next = 0;
    for round in items.chunks(threads) {
        for load in load_parallel(round, threads) {
            let (i, (wu_name, file)) = (next, &items[next]);
            next += 1;
            match load {
                Ok(archive) => {
                    held_bytes += archive.approx_bytes();
                    held.push((i, archive));
                }
                Err(e) if e.is_transient() => results[i] = Some(Err(AssimilateError::Read(e))),
                Err(e) => results[i] = Some(quarantine(db, wu_name, file, &e)),
            }
            if held.len() >= batching.max_items.max(1) || held_bytes >= batching.max_bytes {
                store_held(db, snapshot, items, &mut held, &mut results);
                held_bytes = 0;
            }
        }
    }
    store_held(db, snapshot, items, &mut held, &mut results);
    items
        .iter()
        .zip(results)
        .map(|((wu_name, file), result)| BatchItem {
            wu_name: wu_name.clone(),
            file: file.clone(),
            result: result.expect("every item has a result"),
        })
        .collect()
}

/// Stores the archives `held` (indices into `items`) in one transaction and empties it.
fn store_held(
    db: &mut Database,
    snapshot: SnapshotId,
    items: &[(String, PathBuf)],
    held: &mut Vec<(usize, OutcomeArchive)>,
    results: &mut [Option<Result<Assimilated, AssimilateError>>],
) {
    if held.is_empty() {
        return;
    }
    let batch: Vec<NewOutcome<'_>> = held.iter().map(|(i, a)| new_outcome(snapshot, &items[*i].0, a)).collect();
    match db.record_outcomes(&batch) {
        Ok(recorded) => {
            for ((i, _), r) in held.iter().zip(recorded) {
                results[*i] = Some(Ok(Assimilated::Stored(r)));
            }
        }
        Err(e) => {
            let reason = gah_util::error_chain(&e);
            for (i, _) in held.iter() {
                results[*i] = Some(Err(AssimilateError::Batch(reason.clone())));
            }
        }
    }
    held.clear();
}

/// Reads and checks `chunk` on `threads` threads, results in order.
fn load_parallel(chunk: &[(String, PathBuf)], threads: usize) -> Vec<Result<OutcomeArchive, LoadError>> {
    let per = chunk.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = chunk
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().map(|(wu, f)| gah_validator::load_for_workunit(f, wu)).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("archive reading does not panic")).collect()
    })
}

/// A snapshot label for the ebuild repository at `repo`: `md5-cache:` and the first 16 hex
/// digits of a sha256 over every file of its `metadata/md5-cache` (names and contents, in
/// sorted order): exactly what Portage sees, whatever the repository's VCS. Reads the whole
/// cache, so compute it once per sync, not once per workunit.
pub fn md5_cache_snapshot(repo: &Path) -> std::io::Result<String> {
    use gah_core::archive::sha256_hex;
    let cache = repo.join("metadata/md5-cache");
    let mut entries = Vec::new();
    for category in fs::read_dir(&cache)? {
        let category = category?;
        if !category.file_type()?.is_dir() {
            continue;
        }
        for file in fs::read_dir(category.path())? {
            let file = file?;
            if file.file_type()?.is_file() {
                entries.push((format!("{}/{}", category.file_name().to_string_lossy(), file.file_name().to_string_lossy()), file.path()));
            }
        }
    }
    entries.sort();
    let mut digests = String::new();
    for (name, path) in entries {
        digests.push_str(&format!("{}  {name}\n", sha256_hex(&fs::read(path)?)));
    }
    Ok(format!("md5-cache:{}", &sha256_hex(digests.as_bytes())[..16]))
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
    if !file.exists() {
        let err = |e: gah_util::atomic::AtomicError| AssimilateError::Quarantine { path: e.path, source: e.source };
        gah_util::atomic::create_dir_all_durably(&dir).map_err(err)?;
        gah_util::atomic::create_dir_all_durably(db.staging_dir()).map_err(err)?;
        // Staged where the next start looks for a killed run's leftovers.
        gah_util::atomic::write_in(db.staging_dir(), &file, &bytes).map_err(err)?;
    }
    Ok(Some(sha))
}
