//! The history database (`H` object): one row in `tags` per published revision, so that a
//! reader can go back to any revision's root catalog. Tables and properties as
//! `history_sql.cc` creates them (schema 1.0, revision 3); each revision copies the previous
//! database and adds its tag, `generic-r<revision>` (`cvmfs_server` names its automatic tags
//! `generic-<timestamp>`; ours are unique even within one second).

use rusqlite::{params, Connection};

use crate::objects::{Hash, Store, Suffix};
use crate::PublishError;

pub struct Tag<'a> {
    pub root_catalog: &'a Hash,
    pub root_catalog_size: u64,
    pub revision: u64,
    pub timestamp: i64,
}

/// Writes the history with `tag` added to `previous` (none on the first publication).
pub fn write(store: &mut Store, previous: Option<&Hash>, name: &str, tag: &Tag) -> Result<Hash, PublishError> {
    let temp = match previous {
        Some(hash) => store.unpack_to_temp(hash, Suffix::History)?,
        None => store.temp_file()?,
    };
    {
        let db = Connection::open(temp.path())?;
        if previous.is_none() {
            db.execute_batch(
                "CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key));
                 CREATE TABLE branches (branch TEXT, parent TEXT, initial_revision INTEGER,
                   CONSTRAINT pk_branch PRIMARY KEY (branch),
                   FOREIGN KEY (parent) REFERENCES branches (branch),
                   CHECK ((branch <> '') OR (parent IS NULL)),
                   CHECK ((branch = '') OR (parent IS NOT NULL)));
                 INSERT INTO branches (branch, parent, initial_revision) VALUES ('', NULL, 0);
                 CREATE TABLE tags (name TEXT, hash TEXT, revision INTEGER, timestamp INTEGER, channel INTEGER,
                   description TEXT, size INTEGER, branch TEXT, CONSTRAINT pk_tags PRIMARY KEY (name),
                   FOREIGN KEY (branch) REFERENCES branches (branch));
                 CREATE TABLE recycle_bin (hash TEXT, flags INTEGER, CONSTRAINT pk_hash PRIMARY KEY (hash));
                 INSERT INTO properties (key, value) VALUES ('schema', '1.0'), ('schema_revision', '3');",
            )?;
            db.execute("INSERT INTO properties (key, value) VALUES ('fqrn', ?1)", [name])?;
        }
        db.execute(
            "INSERT INTO tags (name, hash, revision, timestamp, channel, description, size, branch) \
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, '')",
            params![
                format!("generic-r{}", tag.revision),
                hex::encode(tag.root_catalog),
                i64::try_from(tag.revision).unwrap_or(i64::MAX),
                tag.timestamp,
                "published by gah-publish",
                i64::try_from(tag.root_catalog_size).unwrap_or(i64::MAX)
            ],
        )?;
        db.close().map_err(|(_, e)| e)?;
    }
    Ok(store.put_file(temp.path(), Suffix::History)?.0)
}
