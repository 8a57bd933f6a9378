//! Opening a SQLite database with its schema brought up to date, as crater does: an ordered
//! list of named migrations, each applied once in its own transaction and recorded in a
//! `migrations` table; foreign keys on for every connection.
//!
//! Opening is safe for many processes at once on a database that does not exist yet (BOINC
//! starts its daemons together, and a nonzero exit stops one): creation, the switch to WAL
//! and the migrations run under an exclusive `flock` on a sibling `NAME.lock` file, so one
//! opener does them and the others wait for it instead of failing with `database is locked`
//! (SQLite answers some of those races with SQLITE_BUSY at once, without its busy handler).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

/// One schema step. Names sort in the order they must run ("0001_cells", ...) and never change
/// once released: a database remembers the names it has applied.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The stable name.
    pub name: &'static str,
    /// The SQL, run as one batch.
    pub sql: &'static str,
}

/// How to open: durability and waiting for other writers.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long a statement waits for another connection's lock.
    pub busy_timeout: Duration,
    /// `synchronous=FULL` (a committed transaction survives power loss); otherwise `NORMAL`
    /// (in WAL mode: consistent after a crash, the last transactions may be lost).
    pub synchronous_full: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { busy_timeout: Duration::from_secs(30), synchronous_full: true }
    }
}

/// A database that could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    /// The folder for the file could not be made.
    #[error("create the folder {}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused to open or configure the file.
    #[error("open {}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The sibling lock file that serialises openers could not be made or locked.
    #[error("lock {}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A migration failed; the database keeps every step before it.
    #[error("migration {name} of {}", path.display())]
    Migration {
        /// The database file.
        path: PathBuf,
        /// The migration's name.
        name: &'static str,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
}

/// Opens (creating it and its folder if needed) the database at `path` in WAL mode with
/// foreign keys on, and applies the `migrations` it has not applied yet. Concurrent openers
/// of the same file wait for each other (see the module docs).
pub fn open(path: &Path, migrations: &[Migration], options: Options) -> Result<Connection, SqliteError> {
    let open_err = |source| SqliteError::Open { path: path.to_path_buf(), source };
    // A database already in WAL with every migration applied needs no lock and no write: a
    // reader (`gah results` on a server, maybe without write access to the folder) opens it
    // as it is.
    if path.is_file() {
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(options.busy_timeout).map_err(open_err)?;
        if is_current(&conn, migrations) {
            conn.pragma_update(None, "synchronous", if options.synchronous_full { "FULL" } else { "NORMAL" }).map_err(open_err)?;
            conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
            return Ok(conn);
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| SqliteError::Folder { path: dir.to_path_buf(), source })?;
    }
    let _lock = lock_openers(path)?;
    let mut conn = Connection::open(path).map_err(open_err)?;
    // Before any statement: the first ones are the likeliest to meet another writer.
    conn.busy_timeout(options.busy_timeout).map_err(open_err)?;
    // Switching to WAL takes an exclusive lock; a database already in WAL needs no switch.
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
    }
    conn.pragma_update(None, "synchronous", if options.synchronous_full { "FULL" } else { "NORMAL" }).map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
    migrate(&mut conn, migrations).map_err(|(name, source)| SqliteError::Migration { path: path.to_path_buf(), name, source })?;
    Ok(conn)
}

/// True when `conn` is in WAL mode and has applied every one of `migrations` (read only).
fn is_current(conn: &Connection, migrations: &[Migration]) -> bool {
    let wal = conn.pragma_query_value(None, "journal_mode", |r| r.get::<_, String>(0)).is_ok_and(|m| m.eq_ignore_ascii_case("wal"));
    let applied = || -> rusqlite::Result<std::collections::HashSet<String>> {
        let mut stmt = conn.prepare("SELECT name FROM migrations")?;
        let names = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        Ok(names)
    };
    wal && applied().is_ok_and(|done| migrations.iter().all(|m| done.contains(m.name)))
}

/// Takes the exclusive `flock` on `PATH.lock` that serialises openers of `path`; released
/// when the returned guard drops (or the process dies: a killed opener blocks nobody).
fn lock_openers(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, SqliteError> {
    let mut name = path.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push(".lock");
    let lock_path = path.with_file_name(name);
    let lock_err = |source| SqliteError::Lock { path: lock_path.clone(), source };
    let mut file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(lock_err)?;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive) {
            Ok(lock) => return Ok(lock),
            Err((again, nix::errno::Errno::EINTR)) => file = again,
            Err((_, errno)) => return Err(lock_err(errno.into())),
        }
    }
}

/// Applies the migrations `conn` has not recorded, each in its own transaction.
pub fn migrate(conn: &mut Connection, migrations: &[Migration]) -> Result<(), (&'static str, rusqlite::Error)> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')))",
    )
    .map_err(|e| ("migrations table", e))?;
    for m in migrations {
        let step = |conn: &mut Connection| -> rusqlite::Result<()> {
            // IMMEDIATE: take the write lock first, so the busy timeout applies to it; a
            // deferred transaction that reads, then writes, gets SQLITE_BUSY at once.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let done: Option<String> = tx.query_row("SELECT name FROM migrations WHERE name = ?1", [m.name], |r| r.get(0)).optional()?;
            if done.is_none() {
                tx.execute_batch(m.sql)?;
                tx.execute("INSERT INTO migrations (name) VALUES (?1)", [m.name])?;
            }
            tx.commit()
        };
        step(conn).map_err(|e| (m.name, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: &[Migration] = &[
        Migration { name: "0001_a", sql: "CREATE TABLE a (x INTEGER PRIMARY KEY)" },
        Migration { name: "0002_b", sql: "CREATE TABLE b (a INTEGER REFERENCES a (x))" },
    ];

    #[test]
    fn migrations_apply_once_and_foreign_keys_hold() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/db.sqlite");
        drop(open(&path, STEPS, Options::default()).unwrap());
        let conn = open(&path, STEPS, Options::default()).unwrap();
        let n: i64 = conn.query_row("SELECT count(*) FROM migrations", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 2);
        assert!(conn.execute("INSERT INTO b (a) VALUES (7)", []).is_err(), "foreign keys are on");
    }

    #[test]
    fn a_failed_migration_is_named_and_keeps_the_steps_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let broken = [STEPS[0], Migration { name: "0002_broken", sql: "CREATE TABLE b (; nonsense" }];
        let e = open(&path, &broken, Options::default()).unwrap_err();
        assert!(matches!(e, SqliteError::Migration { name: "0002_broken", .. }), "{e:?}");
        let conn = open(&path, &STEPS[..1], Options::default()).unwrap();
        let names: Vec<String> =
            conn.prepare("SELECT name FROM migrations").unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        assert_eq!(names, ["0001_a"]);
    }

    #[test]
    fn many_openers_of_a_fresh_database_all_succeed() {
        for round in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("fresh/db.sqlite");
            let start = std::sync::Barrier::new(40);
            let failures: Vec<String> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..40)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            open(&path, STEPS, Options::default()).map(drop).map_err(|e| crate::error_chain(&e))
                        })
                    })
                    .collect();
                handles.into_iter().filter_map(|h| h.join().unwrap().err()).collect()
            });
            assert!(failures.is_empty(), "round {round}: {} of 40 failed: {:?}", failures.len(), failures.first());
        }
    }

    /// A current database opens without its lock file: a reader may lack write access.
    #[test]
    fn a_current_database_opens_without_the_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.sqlite");
        let migrations = [Migration { name: "0001", sql: "CREATE TABLE t (x INTEGER)" }];
        drop(open(&path, &migrations, Options::default()).unwrap());
        std::fs::remove_file(dir.path().join("results.sqlite.lock")).unwrap();
        drop(open(&path, &migrations, Options::default()).unwrap());
        assert!(!dir.path().join("results.sqlite.lock").exists(), "a current database was locked to be opened");
    }
}
