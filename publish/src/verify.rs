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
use crate::objects::{fetch_object, Hash, Suffix, MAX_METADATA_OBJECT};
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
    File { hash: Hash },
    Symlink(String),
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
                Kind::File { hash: h.ok_or_else(|| VerifyError::Malformed("catalog", format!("{path}: no content hash")))? }
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

    /// The contents of the regular file at `path`, its object's hash checked.
    pub fn read(&self, path: &str) -> Result<Vec<u8>, VerifyError> {
        let entry = self.lookup(path)?;
        let Kind::File { hash } = entry.kind else { return Err(VerifyError::NotAFile(path.to_owned())) };
        let bytes = fetch_object(self.source.as_ref(), &hash, Suffix::None, entry.size)?;
        if bytes.len() as u64 != entry.size {
            return Err(VerifyError::Size { path: path.to_owned(), found: bytes.len() as u64, expected: entry.size });
        }
        Ok(bytes)
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
            match self.lookup(&path)?.kind {
                Kind::Dir => todo.extend(self.list(&path)?.into_iter().map(|name| format!("{path}/{name}"))),
                Kind::File { hash } => {
                    objects.insert(hash);
                }
                Kind::Symlink(_) => {}
            }
        }
        let source: &(dyn crate::fetch::Source + Send + Sync) = self.source.as_ref();
        // Only what a read would download: a cached object is checked when it is read.
        let objects: Vec<Hash> = objects.into_iter().filter(|h| !source.has(h, Suffix::None)).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads.max(1))
                .map(|_| {
                    scope.spawn(|| loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(hash) = objects.get(i) else { return Ok(()) };
                        if let Err(e) = source.object(hash, Suffix::None) {
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
            if matches!(entry.kind, Kind::File { .. }) {
                self.read(&entry.path)?;
                n += 1;
            }
        }
        Ok(n)
    }
}
