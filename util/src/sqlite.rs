//! Opening a SQLite database with its schema brought up to date, as crater does: an ordered
//! list of named migrations, each applied once in its own transaction and recorded in a
//! `migrations` table; foreign keys on for every connection.

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
/// foreign keys on, and applies the `migrations` it has not applied yet.
pub fn open(path: &Path, migrations: &[Migration], options: Options) -> Result<Connection, SqliteError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| SqliteError::Folder { path: dir.to_path_buf(), source })?;
    }
    let open_err = |source| SqliteError::Open { path: path.to_path_buf(), source };
    let mut conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(options.busy_timeout).map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
    conn.pragma_update(None, "synchronous", if options.synchronous_full { "FULL" } else { "NORMAL" }).map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
    migrate(&mut conn, migrations).map_err(|(name, source)| SqliteError::Migration { path: path.to_path_buf(), name, source })?;
    Ok(conn)
}

/// Applies the migrations `conn` has not recorded, each in its own transaction.
pub fn migrate(conn: &mut Connection, migrations: &[Migration]) -> Result<(), (&'static str, rusqlite::Error)> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')))",
    )
    .map_err(|e| ("migrations table", e))?;
    for m in migrations {
        let step = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
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
}
