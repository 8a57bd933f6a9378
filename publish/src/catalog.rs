//! File catalogs: the source tree read into memory (file contents go straight into the
//! object store), then written as CernVM-FS SQLite catalogs in schema 2.5 (revision 7),
//! exactly the tables `catalog_sql.cc` creates. One catalog for the root, and a nested one
//! for every top-level directory (one per category of an ebuild repository), for every
//! directory holding a `.cvmfscatalog` file, as `cvmfs_server` does, and for every directory
//! whose subtree holds at least [`AUTO_CATALOG_MIN`] entries (as `cvmfs_server`'s
//! autocatalogs do, by weight): a reader then opens only the catalogs on the path it looks
//! up, and a change rewrites only the catalogs on its path, each small (an md5-cache's
//! categories, ::gentoo's 30,000 entries, each get one).
//!
//! A nested catalog whose contents did not change since the previous revision is not
//! written again: its previous hash is kept (as `cvmfs_server` keeps untouched catalogs).
//! Whether it changed is a digest of its rows, stored in the catalog's properties as
//! `gah_content` (readers ignore properties they do not know).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use md5::Md5;
use rusqlite::{params, Connection};
use sha1::{Digest, Sha1};

use crate::objects::{chunk_spans, Content, Hash, Store, Suffix};
use crate::PublishError;

// Flags, from catalog_sql.h.
const FLAG_DIR: u32 = 1;
const FLAG_NESTED_MOUNTPOINT: u32 = 2;
const FLAG_FILE: u32 = 4;
const FLAG_LINK: u32 = 8;
const FLAG_NESTED_ROOT: u32 = 32;
const FLAG_FILE_CHUNK: u32 = 64;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

/// The marker file that makes its directory a nested catalog.
pub const CATALOG_MARKER: &str = ".cvmfscatalog";

pub enum Node {
    Dir { mode: u32, mtime: i64, children: BTreeMap<String, Node> },
    File { mode: u32, mtime: i64, content: Content },
    Symlink { mtime: i64, target: String },
}

/// Reads `dir` into a tree, storing every regular file's contents as an object. Hard links
/// become separate files (same object, link count 1); devices, fifos and sockets are left
/// out with a warning.
pub fn read_tree(dir: &Path, store: &mut Store) -> Result<Node, PublishError> {
    let meta = fs::symlink_metadata(dir).map_err(|e| PublishError::io(dir, e))?;
    let mut children = BTreeMap::new();
    let mut entries: Vec<_> =
        fs::read_dir(dir).map_err(|e| PublishError::io(dir, e))?.collect::<Result<_, _>>().map_err(|e| PublishError::io(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().into_string().map_err(|_| PublishError::NotUtf8(path.clone()))?;
        let m = fs::symlink_metadata(&path).map_err(|e| PublishError::io(&path, e))?;
        let ft = m.file_type();
        let node = if ft.is_dir() {
            read_tree(&path, store)?
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| PublishError::io(&path, e))?;
            let target = target.into_os_string().into_string().map_err(|_| PublishError::NotUtf8(path.clone()))?;
            Node::Symlink { mtime: m.mtime(), target }
        } else if ft.is_file() {
            let content = store.put_source_file(&path)?;
            Node::File { mode: m.permissions().mode() & 0o7777, mtime: m.mtime(), content }
        } else {
            // Device nodes, fifos, sockets: a guest root's /dev has some (the sandbox mounts
            // its own). Counted and said once per publication.
            tracing::debug!(path = %path.display(), "not a file, directory or symlink: left out");
            store.left_out.get_or_insert((0, path.clone())).0 += 1;
            continue;
        };
        children.insert(name, node);
    }
    Ok(Node::Dir { mode: meta.permissions().mode() & 0o7777, mtime: meta.mtime(), children })
}

/// The tree of several mounted folders ([`crate::Mount`]): each read with [`read_tree`] and
/// grafted at its path; a folder made only to hold a mount is 0755 with mtime 0 (so it is
/// the same in every revision and its catalog can be kept).
pub fn read_mounts(mounts: &[crate::Mount<'_>], store: &mut Store) -> Result<Node, PublishError> {
    let mut root: Option<Node> = None;
    for mount in mounts {
        let parts: Vec<&str> = mount.at.split('/').filter(|p| !p.is_empty()).collect();
        let bad = || PublishError::Nested(format!("mount point {:?}: want \"\" or an absolute path like /repos/gah", mount.at));
        // Checked before the folder is read: a bad mount point stores no object.
        if !(mount.at.is_empty() || mount.at.starts_with('/')) || parts.iter().any(|p| *p == "." || *p == "..") {
            return Err(bad());
        }
        let tree = read_mount(mount.from, store)?;
        let Some((last, above)) = parts.split_last() else {
            if !matches!(tree, Node::Dir { .. }) {
                return Err(PublishError::Nested(format!("{} is mounted at the root and is no folder", mount.from.display())));
            }
            if root.is_some() {
                return Err(PublishError::Nested("the root is mounted twice, or after another mount".into()));
            }
            root = Some(tree);
            continue;
        };
        let mut dir = root.get_or_insert_with(empty_dir);
        for part in above {
            let Node::Dir { children, .. } = dir else { return Err(bad()) };
            dir = children.entry((*part).to_owned()).or_insert_with(empty_dir);
        }
        let Node::Dir { children, .. } = dir else { return Err(bad()) };
        if children.insert((*last).to_owned(), tree).is_some() {
            return Err(PublishError::Nested(format!("{} is mounted over something already there", mount.at)));
        }
    }
    Ok(root.unwrap_or_else(empty_dir))
}

/// A mount's source: a folder ([`read_tree`]), or one file (a disk image published on its
/// own, e.g. at `/base-disk/rootfs.ext4`). A link given as the source is followed (the
/// admin's choice); links inside a folder are published as links.
fn read_mount(from: &Path, store: &mut Store) -> Result<Node, PublishError> {
    let m = fs::metadata(from).map_err(|e| PublishError::io(from, e))?;
    if m.file_type().is_file() {
        let content = store.put_source_file(from)?;
        return Ok(Node::File { mode: m.permissions().mode() & 0o7777, mtime: m.mtime(), content });
    }
    read_tree(from, store)
}

fn empty_dir() -> Node {
    Node::Dir { mode: 0o755, mtime: 0, children: BTreeMap::new() }
}

/// MD5 of a path, split into the two signed 64-bit halves the catalog keys on
/// (`Md5::ToIntPair`: native byte order, little-endian on every machine we run on).
pub fn md5_pair(path: &str) -> (i64, i64) {
    let d = Md5::digest(path.as_bytes());
    let half = |r: std::ops::Range<usize>| i64::from_le_bytes(d[r].try_into().expect("8 bytes"));
    (half(0..8), half(8..16))
}

fn parent_of(path: &str) -> &str {
    &path[..path.rfind('/').unwrap_or(0)]
}

/// One `catalog` row.
struct Row<'a> {
    path: String,
    name: &'a str,
    hash: Option<Hash>,
    size: u64,
    mode: u32,
    mtime: i64,
    flags: u32,
    symlink: &'a str,
    /// A big file's chunks, in order (see [`chunk_spans`]); empty for anything else.
    chunks: &'a [Hash],
    /// `hardlinks`' low 32 bits, the link count: 1 for a file or link, 2 plus its
    /// subfolders for a folder, as a file system counts it (`cvmfs_swissknife check`
    /// checks it; `find` relies on it).
    links: u32,
}

/// The statistics counters of `catalog_counters.h`, `self_` half.
#[derive(Default, Clone, Copy)]
struct Counters {
    regular: i64,
    symlink: i64,
    dir: i64,
    nested: i64,
    file_size: i64,
    chunked: i64,
    chunks: i64,
    chunked_size: i64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.regular += o.regular;
        self.symlink += o.symlink;
        self.dir += o.dir;
        self.nested += o.nested;
        self.file_size += o.file_size;
        self.chunked += o.chunked;
        self.chunks += o.chunks;
        self.chunked_size += o.chunked_size;
    }
    fn fields(&self) -> [(&'static str, i64); 12] {
        [
            ("regular", self.regular),
            ("symlink", self.symlink),
            ("special", 0),
            ("dir", self.dir),
            ("nested", self.nested),
            ("chunked", self.chunked),
            ("chunks", self.chunks),
            ("file_size", self.file_size),
            ("chunked_size", self.chunked_size),
            ("xattr", 0),
            ("external", 0),
            ("external_file_size", 0),
        ]
    }
}

/// A written (or kept) catalog, as its parent refers to it.
pub struct CatalogRef {
    pub hash: Hash,
    pub size: u64,
    /// Every counter of this catalog and the ones below it.
    total: Counters,
}

/// What the previous revision's catalogs were, by mount path ("" for the root).
#[derive(Default)]
pub struct Previous {
    pub catalogs: HashMap<String, (Hash, u64, String)>,
}

/// The catalogs of the revision whose root catalog is `root`, read from the store.
pub fn previous_catalogs(store: &Store, root: Hash, root_size: u64) -> Result<Previous, PublishError> {
    let mut previous = Previous::default();
    let mut todo = vec![(String::new(), root, root_size)];
    while let Some((path, hash, size)) = todo.pop() {
        let temp = store.unpack_to_temp(&hash, Suffix::Catalog)?;
        let db = Connection::open(temp.path())?;
        let digest: String = db.query_row("SELECT value FROM properties WHERE key = 'gah_content'", [], |r| r.get(0)).unwrap_or_default();
        let mut stmt = db.prepare("SELECT path, sha1, size FROM nested_catalogs")?;
        let nested = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        for (p, h, s) in nested {
            let mut nh = [0u8; 20];
            hex::decode_to_slice(&h, &mut nh).map_err(|_| PublishError::Keys(format!("previous catalog: bad hash {h}")))?;
            todo.push((p, nh, u64::try_from(s).unwrap_or(0)));
        }
        previous.catalogs.insert(path, (hash, size, digest));
    }
    Ok(previous)
}

pub struct CatalogWriter<'a> {
    pub store: &'a mut Store,
    pub previous: &'a Previous,
    pub revision: u64,
    pub now: i64,
    /// Catalogs written anew, kept from the previous revision.
    pub written: u64,
    pub kept: u64,
}

/// A directory whose subtree holds this many entries or more gets a catalog of its own.
pub const AUTO_CATALOG_MIN: u64 = 128;

fn is_nested_root(depth: usize, children: &BTreeMap<String, Node>) -> bool {
    depth == 1 || children.contains_key(CATALOG_MARKER) || weight(children) >= AUTO_CATALOG_MIN
}

/// The entries below a directory, counted up to [`AUTO_CATALOG_MIN`] (all that the rule
/// needs to know).
fn weight(children: &BTreeMap<String, Node>) -> u64 {
    let mut n = 0;
    for child in children.values() {
        n += 1;
        if let Node::Dir { children, .. } = child {
            n += weight(children);
        }
        if n >= AUTO_CATALOG_MIN {
            break;
        }
    }
    n
}

impl CatalogWriter<'_> {
    /// Writes the catalog rooted at `path` ("" for the repository root) and, first, every
    /// catalog nested below it.
    pub fn write(&mut self, path: &str, name: &str, node: &Node) -> Result<CatalogRef, PublishError> {
        let Node::Dir { mode, mtime, children } = node else { unreachable!("catalogs are rooted at directories") };
        let is_root = path.is_empty();
        let mut rows = Vec::new();
        let mut nested = Vec::new();
        let mut counters = Counters::default();
        let mut subtree = Counters::default();
        let flags = if is_root { FLAG_DIR } else { FLAG_DIR | FLAG_NESTED_ROOT };
        rows.push(dir_row(path.to_owned(), name, *mode, *mtime, flags, children));
        counters.dir += 1;
        self.collect(path, children, path.matches('/').count(), &mut rows, &mut nested, &mut counters)?;
        if !is_root && !children.contains_key(CATALOG_MARKER) {
            // Every nested catalog's root holds its marker, as `cvmfs_server` leaves one
            // where it makes a catalog (`CreateCatalogMarkers`: an empty 0644 file);
            // `cvmfs_swissknife check` refuses a nested catalog without one. The folder's
            // mtime, so that an unchanged folder's catalog is kept.
            let hash = self.store.put_bytes(b"", Suffix::None)?;
            counters.regular += 1;
            rows.push(Row {
                path: format!("{path}/{CATALOG_MARKER}"),
                name: CATALOG_MARKER,
                hash: Some(hash),
                size: 0,
                mode: S_IFREG | 0o644,
                mtime: *mtime,
                flags: FLAG_FILE,
                symlink: "",
                chunks: &[],
                links: 1,
            });
        }
        for r in &nested {
            subtree.add(&r.1.total);
        }
        counters.nested = nested.len() as i64;

        let digest = content_digest(&rows, &nested);
        let previous = self.previous.catalogs.get(path);
        let mut total = counters;
        total.add(&subtree);
        if !is_root {
            if let Some((hash, size, _)) = previous.filter(|p| p.2 == digest) {
                self.kept += 1;
                return Ok(CatalogRef { hash: *hash, size: *size, total });
            }
        }
        let temp = self.store.temp_file()?;
        {
            let db = Connection::open(temp.path())?;
            create_schema(&db)?;
            let tx = db.unchecked_transaction()?;
            let mut props = vec![
                ("schema", "2.5".to_owned()),
                ("schema_revision", "7".to_owned()),
                ("revision", self.revision.to_string()),
                ("last_modified", self.now.to_string()),
                ("gah_content", digest),
            ];
            if !is_root {
                props.push(("root_prefix", path.to_owned()));
            }
            if let Some((hash, _, _)) = previous {
                props.push(("previous_revision", hex::encode(hash)));
            }
            for (k, v) in props {
                tx.execute("INSERT INTO properties (key, value) VALUES (?1, ?2)", params![k, v])?;
            }
            {
                let mut insert = tx.prepare(
                    "INSERT INTO catalog (md5path_1, md5path_2, parent_1, parent_2, hash, hardlinks, size, mode, \
                     mtime, mtimens, flags, name, symlink, uid, gid, xattr) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?12, ?6, ?7, ?8, NULL, ?9, ?10, ?11, 0, 0, NULL)",
                )?;
                for (i, r) in rows.iter().enumerate() {
                    let (m1, m2) = md5_pair(&r.path);
                    // The root entry's parent is the null hash (`shash::Md5()`).
                    let (p1, p2) = if is_root && i == 0 { (0, 0) } else { md5_pair(parent_of(&r.path)) };
                    let size = i64::try_from(r.size).unwrap_or(i64::MAX);
                    insert.execute(params![
                        m1,
                        m2,
                        p1,
                        p2,
                        r.hash.as_ref().map(|h| &h[..]),
                        size,
                        r.mode,
                        r.mtime,
                        r.flags,
                        r.name,
                        r.symlink,
                        r.links
                    ])?;
                }
                let mut insert = tx.prepare("INSERT INTO chunks (md5path_1, md5path_2, offset, size, hash) VALUES (?1, ?2, ?3, ?4, ?5)")?;
                for r in rows.iter().filter(|r| !r.chunks.is_empty()) {
                    let (m1, m2) = md5_pair(&r.path);
                    for ((offset, size), hash) in chunk_spans(r.size).zip(r.chunks) {
                        insert.execute(params![m1, m2, offset as i64, size as i64, &hash[..]])?;
                    }
                }
                let mut insert = tx.prepare("INSERT INTO nested_catalogs (path, sha1, size) VALUES (?1, ?2, ?3)")?;
                for (p, r) in &nested {
                    insert.execute(params![p, hex::encode(r.hash), i64::try_from(r.size).unwrap_or(i64::MAX)])?;
                }
                let mut insert = tx.prepare("INSERT INTO statistics (counter, value) VALUES (?1, ?2)")?;
                for (half, c) in [("self_", counters), ("subtree_", subtree)] {
                    for (field, value) in c.fields() {
                        insert.execute(params![format!("{half}{field}"), value])?;
                    }
                }
            }
            tx.commit()?;
            db.close().map_err(|(_, e)| e)?;
        }
        let (hash, size) = self.store.put_file(temp.path(), Suffix::Catalog)?;
        self.written += 1;
        Ok(CatalogRef { hash, size, total })
    }

    /// The rows of one catalog below `path`, stopping at nested catalogs (written first).
    fn collect<'n>(
        &mut self,
        path: &str,
        children: &'n BTreeMap<String, Node>,
        depth: usize,
        rows: &mut Vec<Row<'n>>,
        nested: &mut Vec<(String, CatalogRef)>,
        counters: &mut Counters,
    ) -> Result<(), PublishError> {
        for (name, child) in children {
            let child_path = format!("{path}/{name}");
            match child {
                Node::Dir { mode, mtime, children: grandchildren } => {
                    counters.dir += 1;
                    if is_nested_root(depth + 1, grandchildren) {
                        let r = self.write(&child_path, name, child)?;
                        rows.push(dir_row(child_path.clone(), name, *mode, *mtime, FLAG_DIR | FLAG_NESTED_MOUNTPOINT, grandchildren));
                        nested.push((child_path, r));
                    } else {
                        rows.push(dir_row(child_path.clone(), name, *mode, *mtime, FLAG_DIR, grandchildren));
                        self.collect(&child_path, grandchildren, depth + 1, rows, nested, counters)?;
                    }
                }
                Node::File { mode, mtime, content } => {
                    let size = i64::try_from(content.size()).unwrap_or(i64::MAX);
                    counters.regular += 1;
                    counters.file_size += size;
                    let (hash, flags, chunks) = match content {
                        Content::Whole { hash, .. } => (Some(*hash), FLAG_FILE, &[][..]),
                        Content::Chunked { chunks, .. } => {
                            counters.chunked += 1;
                            counters.chunks += chunks.len() as i64;
                            counters.chunked_size += size;
                            (None, FLAG_FILE | FLAG_FILE_CHUNK, &chunks[..])
                        }
                    };
                    rows.push(Row {
                        path: child_path,
                        name,
                        hash,
                        size: content.size(),
                        mode: S_IFREG | mode,
                        mtime: *mtime,
                        flags,
                        symlink: "",
                        chunks,
                        links: 1,
                    });
                }
                Node::Symlink { mtime, target } => {
                    counters.symlink += 1;
                    rows.push(Row {
                        path: child_path,
                        name,
                        hash: None,
                        size: target.len() as u64,
                        mode: S_IFLNK | 0o777,
                        mtime: *mtime,
                        flags: FLAG_FILE | FLAG_LINK,
                        symlink: target,
                        chunks: &[],
                        links: 1,
                    });
                }
            }
        }
        Ok(())
    }
}

fn dir_row<'a>(path: String, name: &'a str, mode: u32, mtime: i64, flags: u32, children: &BTreeMap<String, Node>) -> Row<'a> {
    let subfolders = children.values().filter(|c| matches!(c, Node::Dir { .. })).count();
    let links = u32::try_from(subfolders).unwrap_or(u32::MAX - 2).saturating_add(2);
    Row { path, name, hash: None, size: 4096, mode: S_IFDIR | mode, mtime, flags, symlink: "", chunks: &[], links }
}

fn content_digest(rows: &[Row], nested: &[(String, CatalogRef)]) -> String {
    let mut h = Sha1::new();
    // What the rows mean: a catalog written before folders had their link counts (all 1)
    // is written again once, not kept.
    h.update(b"links\0");
    for r in rows {
        let hash = r.hash.map(hex::encode).unwrap_or_default();
        h.update(format!("{}\0{hash}\0{}\0{}\0{}\0{}\0{}\0", r.path, r.size, r.mode, r.mtime, r.flags, r.symlink));
        for chunk in r.chunks {
            h.update(chunk);
        }
    }
    for (p, r) in nested {
        h.update(format!("N{p}\0{}\0", hex::encode(r.hash)));
    }
    hex::encode(h.finalize())
}

/// The tables of `CatalogDatabase::CreateEmptyDatabase` and the properties table of
/// `sql_impl.h`.
fn create_schema(db: &Connection) -> rusqlite::Result<()> {
    db.execute_batch(
        "CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key));
         CREATE TABLE catalog (md5path_1 INTEGER, md5path_2 INTEGER, parent_1 INTEGER, parent_2 INTEGER,
           hardlinks INTEGER, hash BLOB, size INTEGER, mode INTEGER, mtime INTEGER, mtimens INTEGER,
           flags INTEGER, name TEXT, symlink TEXT, uid INTEGER, gid INTEGER, xattr BLOB,
           CONSTRAINT pk_catalog PRIMARY KEY (md5path_1, md5path_2));
         CREATE INDEX idx_catalog_parent ON catalog (parent_1, parent_2);
         CREATE TABLE chunks (md5path_1 INTEGER, md5path_2 INTEGER, offset INTEGER, size INTEGER, hash BLOB,
           CONSTRAINT pk_chunks PRIMARY KEY (md5path_1, md5path_2, offset, size),
           FOREIGN KEY (md5path_1, md5path_2) REFERENCES catalog(md5path_1, md5path_2));
         CREATE TABLE nested_catalogs (path TEXT, sha1 TEXT, size INTEGER,
           CONSTRAINT pk_nested_catalogs PRIMARY KEY (path));
         CREATE TABLE bind_mountpoints (path TEXT, sha1 TEXT, size INTEGER,
           CONSTRAINT pk_bind_mountpoints PRIMARY KEY (path));
         CREATE TABLE statistics (counter TEXT, value INTEGER, CONSTRAINT pk_statistics PRIMARY KEY (counter));",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_hashes_split_like_cvmfs() {
        // MD5("") = d41d8cd98f00b204 e9800998ecf8427e, each half read little-endian.
        let (a, b) = md5_pair("");
        assert_eq!(a, i64::from_le_bytes([0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04]));
        assert_eq!(b, i64::from_le_bytes([0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8, 0x42, 0x7e]));
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(parent_of("/a"), "");
    }

    #[test]
    fn a_folder_counts_two_links_and_one_per_subfolder() {
        let dir = |children: Vec<(&str, Node)>| Node::Dir {
            mode: 0o755,
            mtime: 0,
            children: children.into_iter().map(|(n, c)| (n.to_owned(), c)).collect(),
        };
        let file = Node::Symlink { mtime: 0, target: "x".into() };
        let tree = dir(vec![("a", dir(vec![])), ("b", dir(vec![("c", dir(vec![]))])), ("f", file)]);
        let Node::Dir { children, .. } = &tree else { unreachable!() };
        assert_eq!(dir_row(String::new(), "", 0o755, 0, FLAG_DIR, children).links, 4);
        assert_eq!(dir_row("/a".into(), "a", 0o755, 0, FLAG_DIR, &BTreeMap::new()).links, 2);
    }
}
