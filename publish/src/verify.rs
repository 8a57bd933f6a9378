//! Our own verifying reader of a CernVM-FS repository folder, doing what a client does
//! before it trusts a byte: the whitelist's signature by the master key, its expiry and
//! repository name; the certificate's fingerprint on the whitelist; the manifest's checksum
//! and signature by the certificate's key; and, on every read, the hash of each object
//! (catalogs, history, file contents) against its name.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags};

use crate::catalog::md5_pair;
use crate::fetch::{Folder, Source};
use crate::objects::{fetch_object, Hash, Suffix, MAX_CHUNK, MAX_METADATA_OBJECT, MIN_CHUNK};
use crate::signed::{self, Letter};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// No answer from the server (refused, unresolved, timed out): another time may do.
    #[error("{url}: the server cannot be reached: {why}")]
    Unreachable { url: String, why: String },
    #[error("the {0} is malformed: {1}")]
    Malformed(&'static str, String),
    #[error("the {0}'s checksum line does not match its contents")]
    Checksum(&'static str),
    #[error("the {0}'s signature does not verify")]
    Signature(&'static str),
    #[error("the whitelist expired at {0} (UTC)")]
    Expired(String),
    #[error("the whitelist is for {found}, not {expected}")]
    WrongName { found: String, expected: String },
    #[error("the manifest's certificate ({0}) is not on the whitelist")]
    NotWhitelisted(String),
    #[error("{object}: its bytes hash to {actual}, not to its name: tampered with or damaged")]
    ObjectHash { object: String, actual: String },
    #[error("{0}: no such entry")]
    NotFound(String),
    #[error("{0}: not a regular file")]
    NotAFile(String),
    #[error("{path}: {found} bytes, the catalog says {expected}")]
    Size { path: String, found: u64, expected: u64 },
    #[error("the manifest's revision {found} is older than revision {seen}, already seen: a replayed repository state")]
    Rollback { found: u64, seen: u64 },
    #[error("revision {0} is not in the history")]
    NoRevision(u64),
    #[error("catalog database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl VerifyError {
    /// The server gave no answer at all (as opposed to an answer that was refused): the
    /// same read may work later.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, VerifyError::Unreachable { .. })
    }
}

/// The manifest's fields a reader needs.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub root_catalog: Hash,
    pub root_catalog_size: u64,
    pub revision: u64,
    pub name: String,
    pub certificate: Hash,
    pub history: Option<Hash>,
    pub timestamp: i64,
}

fn hash_field(what: &str, value: &str) -> Result<Hash, VerifyError> {
    let mut h = [0u8; 20];
    hex::decode_to_slice(value, &mut h).map_err(|_| VerifyError::Malformed("manifest", format!("{what}: {value:?}")))?;
    Ok(h)
}

pub(crate) fn parse_manifest(letter: &Letter) -> Result<Manifest, VerifyError> {
    let (mut root, mut size, mut revision, mut name, mut cert, mut history, mut timestamp) = (None, 0, None, None, None, None, 0);
    let bad = |line: &str| VerifyError::Malformed("manifest", line.to_owned());
    for line in letter.text.lines() {
        let Some(key) = line.chars().next() else { continue };
        let value = &line[key.len_utf8()..];
        match key {
            'C' => root = Some(hash_field("C", value)?),
            'B' => size = value.parse().map_err(|_| bad(line))?,
            'S' => revision = Some(value.parse().map_err(|_| bad(line))?),
            'N' => name = Some(value.to_owned()),
            'X' => cert = Some(hash_field("X", value)?),
            'H' => history = Some(hash_field("H", value)?),
            'T' => timestamp = value.parse().map_err(|_| bad(line))?,
            _ => {}
        }
    }
    Ok(Manifest {
        root_catalog: root.ok_or_else(|| bad("no C line"))?,
        root_catalog_size: size,
        revision: revision.ok_or_else(|| bad("no S line"))?,
        name: name.ok_or_else(|| bad("no N line"))?,
        certificate: cert.ok_or_else(|| bad("no X line"))?,
        history,
        timestamp,
    })
}

/// Checks the whitelist and the manifest of the repository `name` in `repo` against the
/// master public key in `master_pub`, at the current time. Returns a reader of the current
/// revision that checks every object it reads.
pub fn verify(repo: &Path, name: &str, master_pub: &Path) -> Result<Reader, VerifyError> {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    verify_at(repo, name, master_pub, now)
}

/// [`verify`] at time `now` (Unix seconds).
pub fn verify_at(repo: &Path, name: &str, master_pub: &Path, now: i64) -> Result<Reader, VerifyError> {
    verify_from(Arc::new(Folder(repo.to_owned())), name, master_pub, now)
}

/// [`verify`] of the repository `source` gives (its folder, or a web server through the
/// host's cache: [`crate::fetch`]) at time `now` (Unix seconds).
pub fn verify_from(source: Arc<dyn Source + Send + Sync>, name: &str, master_pub: &Path, now: i64) -> Result<Reader, VerifyError> {
    let master = crate::keys::read_master_pub(master_pub)?;
    let read = |file: &str| source.top(file);

    let whitelist_bytes = read(crate::WHITELIST)?;
    let whitelist = signed::cut_letter(&whitelist_bytes, "whitelist")?;
    signed::verify_whitelist_signature(&whitelist, &master)?;
    let mut lines = whitelist.text.lines();
    let bad = |why: &str| VerifyError::Malformed("whitelist", why.to_owned());
    let _issued = lines.next().and_then(signed::parse_compact_utc).ok_or_else(|| bad("no issue time"))?;
    let expiry_text = lines.next().and_then(|l| l.strip_prefix('E')).ok_or_else(|| bad("no E line"))?;
    let expires = signed::parse_compact_utc(expiry_text).ok_or_else(|| bad("bad E line"))?;
    if now >= expires {
        return Err(VerifyError::Expired(expiry_text.to_owned()));
    }
    let found = lines.next().and_then(|l| l.strip_prefix('N')).ok_or_else(|| bad("no N line"))?;
    if found != name {
        return Err(VerifyError::WrongName { found: found.to_owned(), expected: name.to_owned() });
    }
    let fingerprints: Vec<&str> = lines.map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty()).collect();

    let manifest_bytes = read(crate::MANIFEST)?;
    let letter = signed::cut_letter(&manifest_bytes, "manifest")?;
    let manifest = parse_manifest(&letter)?;
    if manifest.name != name {
        return Err(VerifyError::WrongName { found: manifest.name, expected: name.to_owned() });
    }
    let cert = fetch_object(source.as_ref(), &manifest.certificate, Suffix::Certificate, 64 << 10)?;
    let (cert_key, cert_der) = crate::keys::certificate_key(&cert)?;
    let fingerprint = signed::fingerprint(&cert_der);
    if !fingerprints.iter().any(|f| f.eq_ignore_ascii_case(&fingerprint)) {
        return Err(VerifyError::NotWhitelisted(fingerprint));
    }
    signed::verify_manifest_signature(&letter, &cert_key)?;
    source.verified(manifest.revision)?;
    Ok(Reader { source, root: manifest.root_catalog, manifest, catalogs: RefCell::default() })
}

/// One revision of a verified repository.
pub struct Reader {
    source: Arc<dyn Source + Send + Sync>,
    root: Hash,
    pub manifest: Manifest,
    /// Catalogs opened so far (each checked once, kept in a temporary file).
    catalogs: RefCell<HashMap<Hash, (tempfile::TempPath, Connection)>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// A file that is one object, named by `hash`.
    File {
        hash: Hash,
    },
    /// A big file stored in chunks ([`Reader::chunks`]); as `cvmfs_server` writes them, it
    /// has no hash of its own (one stored for old clients is not used).
    Chunked,
    Symlink(String),
}

/// Checks a chunked file's chunk rows (offset, size, hash; by offset) against its `size`, as
/// they come from the catalog: they must cover it from 0 with no gap or overlap (else a
/// reader would write past or short of the file), each of [`MIN_CHUNK`] to [`MAX_CHUNK`]
/// bytes (the last may be shorter), so that one chunk's inflating and the list's length stay
/// bounded whatever a catalog says.
pub fn check_chunks(
    path: &str,
    size: u64,
    rows: impl Iterator<Item = Result<(i64, i64, Option<Vec<u8>>), VerifyError>>,
) -> Result<Vec<Chunk>, VerifyError> {
    let bad = |why: &str| VerifyError::Malformed("catalog", format!("{path}: chunks {why}"));
    let mut out: Vec<Chunk> = Vec::new();
    let mut next = 0u64;
    for row in rows {
        let (offset, chunk_size, hash) = row?;
        let (Ok(offset), Ok(chunk_size)) = (u64::try_from(offset), u64::try_from(chunk_size)) else {
            return Err(bad("with a negative offset or size"));
        };
        if offset != next || chunk_size == 0 {
            return Err(bad("that leave a gap, overlap or are empty"));
        }
        if chunk_size > MAX_CHUNK || out.last().is_some_and(|c| c.size < MIN_CHUNK) {
            return Err(bad(&format!("of other than {MIN_CHUNK} to {MAX_CHUNK} bytes")));
        }
        let hash = hash.and_then(|h| <Hash>::try_from(h.as_slice()).ok()).ok_or_else(|| bad("without a content hash"))?;
        next = offset.checked_add(chunk_size).filter(|n| *n <= size).ok_or_else(|| bad(&format!("past the file's {size} bytes")))?;
        out.push(Chunk { offset, size: chunk_size, hash });
    }
    if next != size || out.len() < 2 {
        return Err(bad(&format!("cover {next} bytes of {size} in {} chunks (two or more)", out.len())));
    }
    Ok(out)
}

/// One chunk of a big file: where it lies and the object (suffix `P`) that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub offset: u64,
    pub size: u64,
    pub hash: Hash,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub mode: u32,
    pub size: u64,
    pub kind: Kind,
}

impl Reader {
    /// This revision's root catalog.
    pub fn root_catalog(&self) -> Hash {
        self.root
    }

    /// The revisions in the history: (revision, root catalog).
    pub fn revisions(&self) -> Result<Vec<(u64, Hash)>, VerifyError> {
        let Some(h) = self.manifest.history else { return Ok(vec![(self.manifest.revision, self.root)]) };
        let (_temp, db) = self.open_db(&h, Suffix::History)?;
        let mut stmt = db.prepare("SELECT revision, hash FROM tags ORDER BY revision")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (rev, hash) = row?;
            out.push((u64::try_from(rev).unwrap_or(0), hash_field("history tag", &hash)?));
        }
        Ok(out)
    }

    /// A reader of an older revision, through the history.
    pub fn at_revision(&self, revision: u64) -> Result<Reader, VerifyError> {
        let root = self.revisions()?.into_iter().find(|r| r.0 == revision).ok_or(VerifyError::NoRevision(revision))?.1;
        Ok(Reader { source: self.source.clone(), root, manifest: self.manifest.clone(), catalogs: RefCell::default() })
    }

    fn open_db(&self, hash: &Hash, suffix: Suffix) -> Result<(tempfile::TempPath, Connection), VerifyError> {
        let bytes = fetch_object(self.source.as_ref(), hash, suffix, MAX_METADATA_OBJECT)?;
        let temp = tempfile::NamedTempFile::new().map_err(|e| VerifyError::Io("temporary file".into(), e))?;
        std::fs::write(temp.path(), bytes).map_err(|e| VerifyError::Io(temp.path().display().to_string(), e))?;
        let temp = temp.into_temp_path();
        let db = Connection::open_with_flags(&temp, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        Ok((temp, db))
    }

    /// Runs `f` on the catalog that holds `path`: down from the root, into the nested
    /// catalog with the longest mount path that is `path` or above it.
    fn with_catalog<T>(&self, path: &str, f: impl FnOnce(&Connection) -> Result<T, VerifyError>) -> Result<T, VerifyError> {
        let hash = self.catalog_of(path)?;
        let catalogs = self.catalogs.borrow();
        f(&catalogs[&hash].1)
    }

    /// The catalog that holds `path` (opened and kept): the nested catalog with the longest
    /// mount path that is `path` or above it. Its hash covers everything below that mount
    /// path (a nested catalog names its own nested catalogs by hash), so for a nested
    /// catalog's mount point, such as a top-level folder, it names that folder's contents
    /// whatever else the revision changed.
    pub fn catalog_of(&self, path: &str) -> Result<Hash, VerifyError> {
        Ok(self.catalog_walk(path)?.0)
    }

    /// The nested catalog mounted at `path` exactly (its hash covers everything below it);
    /// `None` when `path` is not a mount point (a plain folder, a file, a link).
    pub fn nested_catalog_at(&self, path: &str) -> Result<Option<Hash>, VerifyError> {
        let (hash, mounted_here) = self.catalog_walk(path)?;
        Ok(mounted_here.then_some(hash))
    }

    /// The deepest catalog holding `path`, and whether it is mounted at `path` itself.
    fn catalog_walk(&self, path: &str) -> Result<(Hash, bool), VerifyError> {
        let path = path.trim_end_matches('/');
        let mut hash = self.root;
        let mut mounted_here = false;
        loop {
            if !self.catalogs.borrow().contains_key(&hash) {
                let opened = self.open_db(&hash, Suffix::Catalog)?;
                self.catalogs.borrow_mut().insert(hash, opened);
            }
            let catalogs = self.catalogs.borrow();
            let db = &catalogs[&hash].1;
            let mut stmt = db.prepare("SELECT path, sha1 FROM nested_catalogs")?;
            let nested = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut best: Option<(String, String)> = None;
            for n in nested {
                let (p, h) = n?;
                let under = path == p || (path.starts_with(&p) && path.as_bytes().get(p.len()) == Some(&b'/'));
                if under && best.as_ref().is_none_or(|b| p.len() > b.0.len()) {
                    best = Some((p, h));
                }
            }
            match best {
                Some((p, h)) => {
                    mounted_here = p == path;
                    hash = hash_field("nested catalog", &h)?;
                }
                None => return Ok((hash, mounted_here)),
            }
        }
    }

    /// The entry at `path` ("" or "/" for the root; otherwise "/a/b").
    pub fn lookup(&self, path: &str) -> Result<Entry, VerifyError> {
        let path = path.trim_end_matches('/');
        let (m1, m2) = md5_pair(path);
        self.with_catalog(path, |db| {
            let row = db.query_row(
                "SELECT hash, size, mode, flags, symlink FROM catalog WHERE md5path_1 = ?1 AND md5path_2 = ?2",
                [m1, m2],
                |r| {
                    Ok((
                        r.get::<_, Option<Vec<u8>>>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, u32>(2)?,
                        r.get::<_, u32>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                },
            );
            let (hash, size, mode, flags, symlink) = match row {
                Err(rusqlite::Error::QueryReturnedNoRows) => return Err(VerifyError::NotFound(path.to_owned())),
                r => r?,
            };
            let kind = if flags & 1 != 0 {
                Kind::Dir
            } else if flags & 8 != 0 {
                Kind::Symlink(symlink.unwrap_or_default())
            } else {
                let h = hash.and_then(|h| <Hash>::try_from(h.as_slice()).ok());
                if flags & 64 != 0 {
                    Kind::Chunked
                } else {
                    Kind::File { hash: h.ok_or_else(|| VerifyError::Malformed("catalog", format!("{path}: no content hash")))? }
                }
            };
            Ok(Entry { path: path.to_owned(), mode, size: u64::try_from(size).unwrap_or(0), kind })
        })
    }

    /// The names in the directory `path`.
    pub fn list(&self, path: &str) -> Result<Vec<String>, VerifyError> {
        let path = path.trim_end_matches('/');
        let (p1, p2) = md5_pair(path);
        self.with_catalog(path, |db| {
            let mut stmt = db.prepare("SELECT name FROM catalog WHERE parent_1 = ?1 AND parent_2 = ?2 ORDER BY name")?;
            let names = stmt.query_map([p1, p2], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
            // A hostile catalog's "" or "a/b" would make a directory its own child (`walk`
            // would not end) or name a path outside its parent.
            if let Some(bad) = names.iter().find(|n| n.is_empty() || *n == "." || *n == ".." || n.contains(['/', '\0'])) {
                return Err(VerifyError::Malformed("catalog", format!("{path}: entry named {bad:?}")));
            }
            Ok(names)
        })
    }

    /// The chunks of the chunked file `entry`, in order, as [`check_chunks`] accepts them.
    pub fn chunks(&self, entry: &Entry) -> Result<Vec<Chunk>, VerifyError> {
        let (m1, m2) = md5_pair(&entry.path);
        self.with_catalog(&entry.path, |db| {
            let mut stmt = db.prepare("SELECT offset, size, hash FROM chunks WHERE md5path_1 = ?1 AND md5path_2 = ?2 ORDER BY offset")?;
            let rows = stmt.query_map([m1, m2], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<Vec<u8>>>(2)?)))?;
            check_chunks(&entry.path, entry.size, rows.map(|r| r.map_err(VerifyError::from)))
        })
    }

    /// The contents of the regular file at `path`, each object's hash checked: the whole
    /// file in memory (see [`Reader::read_into`] for big ones).
    pub fn read(&self, path: &str) -> Result<Vec<u8>, VerifyError> {
        let mut bytes = Vec::new();
        self.read_into(path, &mut bytes)?;
        Ok(bytes)
    }

    /// Writes the contents of the regular file at `path` to `out`, one object at a time (a
    /// chunked file is never whole in memory), each checked before any of its bytes are
    /// written; returns its size.
    pub fn read_into(&self, path: &str, out: &mut dyn std::io::Write) -> Result<u64, VerifyError> {
        let entry = self.lookup(path)?;
        let pieces: Vec<(Hash, Suffix, u64)> = match entry.kind {
            Kind::File { hash } => vec![(hash, Suffix::None, entry.size)],
            Kind::Chunked => self.chunks(&entry)?.into_iter().map(|c| (c.hash, Suffix::Partial, c.size)).collect(),
            _ => return Err(VerifyError::NotAFile(path.to_owned())),
        };
        for (hash, suffix, size) in pieces {
            let bytes = fetch_object(self.source.as_ref(), &hash, suffix, size)?;
            if bytes.len() as u64 != size {
                return Err(VerifyError::Size { path: path.to_owned(), found: bytes.len() as u64, expected: size });
            }
            out.write_all(&bytes).map_err(|e| VerifyError::Io(path.to_owned(), e))?;
        }
        Ok(entry.size)
    }

    /// The objects a read of the file `entry` fetches.
    fn objects_of(&self, entry: &Entry) -> Result<Vec<(Hash, Suffix)>, VerifyError> {
        Ok(match entry.kind {
            Kind::Chunked => self.chunks(entry)?.into_iter().map(|c| (c.hash, Suffix::Partial)).collect(),
            Kind::File { hash } => vec![(hash, Suffix::None)],
            _ => Vec::new(),
        })
    }

    /// What names a regular file's contents, whole or chunked: its object's hash, or the
    /// SHA-1 of its size and its chunks' hashes in order. Equal ids, equal bytes (each object
    /// is checked against its hash when read): a reader can keep one copy per id.
    pub fn content_id(&self, entry: &Entry) -> Result<Hash, VerifyError> {
        use sha1::Digest;
        match entry.kind {
            Kind::File { hash } => Ok(hash),
            Kind::Chunked => {
                let mut h = sha1::Sha1::new();
                h.update(entry.size.to_le_bytes());
                for chunk in self.chunks(entry)? {
                    h.update(chunk.hash);
                }
                Ok(h.finalize().into())
            }
            _ => Err(VerifyError::NotAFile(entry.path.clone())),
        }
    }

    /// Has the source fetch, `threads` at a time, the object of every regular file below
    /// `from` (each once), so that reading them later does not wait on one download after
    /// another: what a folder of thousands of small files (a guest root) needs over HTTP. The
    /// source checks each object's hash as it does for any read; returns how many objects it
    /// fetched (those it did not have).
    pub fn prefetch(&self, from: &str, threads: usize) -> Result<usize, VerifyError> {
        let mut objects = std::collections::BTreeSet::new();
        let mut todo = vec![from.trim_end_matches('/').to_owned()];
        while let Some(path) = todo.pop() {
            let entry = self.lookup(&path)?;
            match entry.kind {
                Kind::Dir => todo.extend(self.list(&path)?.into_iter().map(|name| format!("{path}/{name}"))),
                Kind::File { .. } | Kind::Chunked => objects.extend(self.objects_of(&entry)?),
                Kind::Symlink(_) => {}
            }
        }
        let source: &(dyn crate::fetch::Source + Send + Sync) = self.source.as_ref();
        // Only what a read would download: a cached object is checked when it is read.
        let objects: Vec<(Hash, Suffix)> = objects.into_iter().filter(|(h, suffix)| !source.has(h, *suffix)).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads.max(1))
                .map(|_| {
                    scope.spawn(|| loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((hash, suffix)) = objects.get(i) else { return Ok(()) };
                        if let Err(e) = source.object(hash, *suffix) {
                            // The others stop at their next object.
                            next.store(objects.len(), std::sync::atomic::Ordering::Relaxed);
                            return Err(e);
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().unwrap_or_else(|_| Err(VerifyError::Malformed("prefetch", "a worker panicked".into()))))
        })?;
        Ok(objects.len())
    }

    /// Every entry of this revision, parents before children.
    pub fn walk(&self) -> Result<Vec<Entry>, VerifyError> {
        let mut out = vec![self.lookup("")?];
        let mut i = 0;
        while i < out.len() {
            if out[i].kind == Kind::Dir {
                let dir = out[i].path.clone();
                for name in self.list(&dir)? {
                    out.push(self.lookup(&format!("{dir}/{name}"))?);
                }
            }
            i += 1;
        }
        Ok(out)
    }

    /// Reads every file of this revision, checking every object; returns how many.
    pub fn check_all(&self) -> Result<usize, VerifyError> {
        let mut n = 0;
        for entry in self.walk()? {
            if matches!(entry.kind, Kind::File { .. } | Kind::Chunked) {
                self.read_into(&entry.path, &mut std::io::sink())?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 1 << 20;

    fn check(size: u64, rows: &[(i64, i64, Option<&[u8]>)]) -> Result<Vec<(u64, u64)>, String> {
        let rows = rows.iter().map(|(o, s, h)| Ok((*o, *s, h.map(<[u8]>::to_vec))));
        check_chunks("/f", size, rows).map(|c| c.iter().map(|c| (c.offset, c.size)).collect()).map_err(|e| e.to_string())
    }

    #[test]
    fn chunks_must_cover_the_file_exactly_in_bounded_pieces() {
        let h = Some(&[7u8; 20][..]);
        assert_eq!(check(8 * 1024 * 1024 + 5, &[(0, 8 * M, h), (8 * M, 5, h)]).unwrap(), [(0, 8 << 20), (8 << 20, 5)]);
        for (size, rows, why) in [
            (10, vec![], "cover 0 bytes"),
            (8 << 20, vec![(0, 8 * M, h)], "two or more"),
            (16 << 20, vec![(0, 8 * M, h), (9 * M, 7 * M, h)], "gap"),
            (16 << 20, vec![(0, 8 * M, h), (4 * M, 12 * M, h)], "overlap"),
            (16 << 20, vec![(0, 8 * M, h), (8 * M, 8 * M, h), (8 * M, 8 * M, h)], "overlap"),
            (16 << 20, vec![(0, 0, h), (0, 16 * M, h)], "empty"),
            (16 << 20, vec![(0, -1, h), (0, 16 * M, h)], "negative"),
            (32 << 20, vec![(0, 32 * M, h)], "bytes"),
            (16 << 20, vec![(0, 1, h), (1, 16 * M - 1, h)], "bytes"),
            (16 << 20, vec![(0, 8 * M, h), (8 * M, 16 * M, h)], "past the file"),
            (u64::MAX, vec![(i64::MAX, 8 * M, h)], "gap"),
            (16 << 20, vec![(0, 8 * M, h), (8 * M, 8 * M, None)], "without a content hash"),
            (16 << 20, vec![(0, 8 * M, h), (8 * M, 8 * M, Some(&[1u8; 19][..]))], "without a content hash"),
        ] {
            let e = check(size, &rows).expect_err(why);
            assert!(e.contains(why), "{why}: {e}");
        }
    }
}
