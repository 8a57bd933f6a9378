//! The binary packages two replicas built alike, handed from the validator to the
//! assimilator: only those may ever reach the project's package store.
//!
//! `gah-validate-compare` knows both replicas' uploads; `gah-assimilate` is given only the
//! canonical result's (`script_assimilator`'s `files`). So when a pair agrees, the validator
//! records here, for each side's `binpkgs.tar` (by its file name, which BOINC makes unique:
//! `<result_name>_r<random>_<i>`), the packages (path in the upload, digest) the other side
//! built with the same digest, and the assimilator reads what was recorded for the canonical
//! result's upload. The file is `agreed.sqlite` in the project's `binpkgs_dir`
//! (`gah_core::project`); the validator is its only writer, and drops rows older than
//! [`KEEP_DAYS`] as it writes (a workunit is assimilated long before).

use std::path::{Path, PathBuf};

use gah_core::binpkg::BuiltPackage;
use rusqlite::{params, Connection};

/// The file's name in the project's `binpkgs_dir`.
pub const FILE_NAME: &str = "agreed.sqlite";

/// How long a record is kept.
pub const KEEP_DAYS: u32 = 60;

const MIGRATIONS: &[gah_util::sqlite::Migration] = &[gah_util::sqlite::Migration {
    name: "0001_agreed",
    sql: "CREATE TABLE agreed (
                upload      TEXT NOT NULL,
                path        TEXT NOT NULL,
                digest      TEXT NOT NULL,
                recorded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
                PRIMARY KEY (upload, path, digest)
            )",
}];

/// One package of an upload that a comparison agreed on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AgreedPackage {
    /// Its path in the upload.
    pub path: String,
    /// Its digest (`gah_core::binpkg::BuiltPackage::digest`).
    pub digest: String,
}

/// The open record.
pub struct Agreed {
    conn: Connection,
    path: PathBuf,
}

/// The key of an upload: its file name.
fn key(upload: &Path) -> String {
    upload.file_name().map_or_else(|| upload.display().to_string(), |n| n.to_string_lossy().into_owned())
}

impl Agreed {
    /// Opens (creating if needed) the record in the project's `binpkgs_dir`.
    pub fn open(binpkgs_dir: &Path) -> Result<Agreed, gah_util::sqlite::SqliteError> {
        let path = binpkgs_dir.join(FILE_NAME);
        // The comparison is retried when this fails, so it must be durable once it returns.
        let options = gah_util::sqlite::Options { busy_timeout: std::time::Duration::from_secs(30), synchronous_full: true };
        Ok(Agreed { conn: gah_util::sqlite::open(&path, MIGRATIONS, options)?, path })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that `packages` of the upload `upload` were built alike by another replica.
    pub fn record(&mut self, upload: &Path, packages: &[BuiltPackage]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        for p in packages {
            tx.execute("INSERT OR IGNORE INTO agreed (upload, path, digest) VALUES (?1, ?2, ?3)", params![key(upload), p.path, p.digest])?;
        }
        tx.execute(&format!("DELETE FROM agreed WHERE recorded_at < strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '-{KEEP_DAYS} days')"), [])?;
        tx.commit()
    }

    /// The packages of `upload` some comparison agreed on, sorted by path.
    pub fn of(&self, upload: &Path) -> rusqlite::Result<Vec<AgreedPackage>> {
        let mut stmt = self.conn.prepare("SELECT path, digest FROM agreed WHERE upload = ?1 ORDER BY path, digest")?;
        let rows = stmt.query_map([key(upload)], |r| Ok(AgreedPackage { path: r.get(0)?, digest: r.get(1)? }))?;
        rows.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_recorded_for_an_upload_is_read_back_by_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let package = |path: &str, digest: &str| BuiltPackage {
            path: path.into(),
            cpv: "dev-libs/x-1".into(),
            build_id: 1,
            size: 1,
            digest: digest.into(),
        };
        let mut agreed = Agreed::open(dir.path()).unwrap();
        agreed.record(Path::new("/upload/1a/wu_0_r5_1"), &[package("dev-libs/x/x-1-1.gpkg.tar", "d1")]).unwrap();
        // Compared again (a third replica): recorded once.
        agreed.record(Path::new("/other/wu_0_r5_1"), &[package("dev-libs/x/x-1-1.gpkg.tar", "d1")]).unwrap();
        let again = Agreed::open(dir.path()).unwrap();
        assert_eq!(
            again.of(Path::new("wu_0_r5_1")).unwrap(),
            [AgreedPackage { path: "dev-libs/x/x-1-1.gpkg.tar".into(), digest: "d1".into() }]
        );
        assert!(again.of(Path::new("wu_1_r6_1")).unwrap().is_empty());
    }
}
