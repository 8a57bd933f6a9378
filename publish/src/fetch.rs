//! Where a [`Reader`](crate::Reader) gets a repository's files: the stratum's own folder
//! ([`Folder`]), or a web server through a cache shared by every job of the host ([`Http`]),
//! as a CernVM-FS client does (issue 11, item 2).
//!
//! Nothing here is trusted: the reader checks the whitelist and the manifest's signatures
//! and every object's hash (`verify`). [`Http`] only makes it cheap and robust:
//! - **lazy**: an object is downloaded the first time it is asked for, never before;
//! - **one bounded cache per host** ([`Cache`]): objects under `objects/XX/<rest><suffix>`,
//!   written to `tmp/` and renamed into place (a reader never sees half an object; a
//!   download killed mid-way leaves only a temporary file, removed on the next open when
//!   its writer is dead), a hit refreshes the file's mtime, and when the cache grows past
//!   its quota the least recently used objects go (under an exclusive `flock` of `lock`, so
//!   two tasks do not evict at once); an object that vanished under a reader is downloaded
//!   again. Each task looks at the whole cache when it opens it and after adding an eighth
//!   of the quota, so N tasks at once may overshoot by N eighths between looks;
//! - **offline from the cache**: the manifest and whitelist last verified are kept under
//!   `top/` (written only once the reader verified them, never what a server merely sent),
//!   and read from there when the server cannot be reached, so a job whose objects are
//!   cached still runs (until the whitelist expires: the reader checks its date);
//! - **no rollback**: a manifest of a lower revision than the one last seen is refused, so
//!   a hostile proxy cannot replay an older, signed repository state;
//! - **the volunteer's proxy**: [`Http::new`] takes the HTTP proxy the BOINC client was given
//!   (`init_data.xml`'s `<proxy_info>`, read by `gah-app`).
//!
//! An object whose bytes do not hash to its name is never put in the cache, and one that is
//! found damaged there is removed and downloaded again.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use sha1::{Digest, Sha1};

use crate::objects::{object_path, object_rel, Hash, Suffix};
use crate::VerifyError;

/// The most bytes one download may bring (a compressed object; metadata objects are bounded
/// again when inflated): a hostile server's endless body ends here.
pub const MAX_DOWNLOAD: u64 = 1 << 30;
/// The most a top-level file (manifest, whitelist: a few hundred bytes) may be.
pub const MAX_TOP: u64 = 1 << 20;

/// Where a reader gets the repository's top-level files and objects.
pub trait Source {
    /// A top-level file: `.cvmfspublished` or `.cvmfswhitelist`.
    fn top(&self, name: &str) -> Result<Vec<u8>, VerifyError>;
    /// An object's compressed bytes, as stored (the caller checks them against the hash).
    fn object(&self, hash: &Hash, suffix: Suffix) -> Result<Vec<u8>, VerifyError>;
    /// Whether the object is at hand without a download (its bytes are still checked when
    /// read): what [`crate::Reader::prefetch`] skips.
    fn has(&self, _hash: &Hash, _suffix: Suffix) -> bool {
        false
    }
    /// Says that `revision` was verified: a source that remembers refuses older ones later.
    fn verified(&self, _revision: u64) -> Result<(), VerifyError> {
        Ok(())
    }
    /// Where it reads from, for messages.
    fn describe(&self) -> String;
}

/// The stratum's own folder (the publisher's check, tests).
pub struct Folder(pub PathBuf);

impl Source for Folder {
    fn top(&self, name: &str) -> Result<Vec<u8>, VerifyError> {
        let p = self.0.join(name);
        fs::read(&p).map_err(|e| VerifyError::Io(p.display().to_string(), e))
    }
    fn object(&self, hash: &Hash, suffix: Suffix) -> Result<Vec<u8>, VerifyError> {
        let p = object_path(&self.0, hash, suffix);
        fs::read(&p).map_err(|e| VerifyError::Io(p.display().to_string(), e))
    }
    fn has(&self, _hash: &Hash, _suffix: Suffix) -> bool {
        true
    }
    fn describe(&self) -> String {
        self.0.display().to_string()
    }
}

/// The host's object cache (see the module docs).
pub struct Cache {
    dir: PathBuf,
    quota: u64,
    /// Bytes this process added since its last look at the whole cache: when they could push
    /// it past the quota, it looks (and evicts).
    added: AtomicU64,
}

impl Cache {
    /// Opens (creating) the cache in `dir`, holding at most about `quota` bytes of objects;
    /// removes what killed downloads left.
    pub fn open(dir: &Path, quota: u64) -> Result<Cache, VerifyError> {
        for sub in ["objects", "tmp", "top"] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| VerifyError::Io(dir.join(sub).display().to_string(), e))?;
        }
        gah_util::atomic::remove_orphans(&dir.join("tmp"), Duration::from_secs(3600));
        let cache = Cache { dir: dir.to_owned(), quota, added: AtomicU64::new(0) };
        cache.evict_if_needed(0)?;
        Ok(cache)
    }

    fn object_path(&self, hash: &Hash, suffix: Suffix) -> PathBuf {
        // The repository's own layout, under `objects/` instead of `data/`.
        let rel = object_rel(hash, suffix);
        self.dir.join("objects").join(rel.strip_prefix("data/").unwrap_or(&rel))
    }

    /// The cached object, if there and whole (its bytes hash to its name); its mtime is
    /// refreshed, which is what the eviction's order goes by.
    fn get(&self, hash: &Hash, suffix: Suffix) -> Option<Vec<u8>> {
        let path = self.object_path(hash, suffix);
        let bytes = fs::read(&path).ok()?;
        if Sha1::digest(&bytes).as_slice() != hash {
            // Damaged on disk: never served, downloaded again.
            let _ = fs::remove_file(&path);
            return None;
        }
        if let Ok(f) = fs::File::options().write(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(bytes)
    }

    /// Puts `bytes` (already checked against `hash`) into the cache.
    fn put(&self, hash: &Hash, suffix: Suffix, bytes: &[u8]) -> Result<(), VerifyError> {
        let target = self.object_path(hash, suffix);
        // Not synced: every read checks the object's hash, so one a crash left short is
        // downloaded again, and a fsync per object would cost more than its download.
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| VerifyError::Io(parent.display().to_string(), e))?;
        }
        gah_util::atomic::write_in_unsynced(&self.dir.join("tmp"), &target, bytes)
            .map_err(|e| VerifyError::Io(format!("the cache {}", self.dir.display()), std::io::Error::other(e)))?;
        let n = self.added.fetch_add(bytes.len() as u64, Ordering::Relaxed) + bytes.len() as u64;
        self.evict_if_needed(n)
    }

    fn write(&self, target: &Path, bytes: &[u8]) -> Result<(), VerifyError> {
        let io = |e: gah_util::atomic::AtomicError| VerifyError::Io(format!("the cache {}", self.dir.display()), std::io::Error::other(e));
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| VerifyError::Io(parent.display().to_string(), e))?;
        }
        gah_util::atomic::write_in(&self.dir.join("tmp"), target, bytes).map_err(io)
    }

    /// Looks at the whole cache when `added` bytes could have pushed it past the quota, and
    /// then removes the least recently used objects down to 3/4 of it.
    fn evict_if_needed(&self, added: u64) -> Result<(), VerifyError> {
        if added != 0 && added < self.quota / 8 {
            return Ok(());
        }
        let _held = self.lock()?;
        self.added.store(0, Ordering::Relaxed);
        let mut objects = Vec::new();
        let mut total = 0u64;
        for dir in fs::read_dir(self.dir.join("objects")).into_iter().flatten().flatten() {
            for entry in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                total += meta.len();
                objects.push((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len(), entry.path()));
            }
        }
        if total <= self.quota {
            return Ok(());
        }
        objects.sort();
        let goal = self.quota / 4 * 3;
        for (_, len, path) in objects {
            if total <= goal {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
        Ok(())
    }

    /// The cache's exclusive lock (evictions, the verified top-level files), held while the
    /// value lives.
    fn lock(&self) -> Result<nix::fcntl::Flock<fs::File>, VerifyError> {
        let lock_path = self.dir.join("lock");
        let lock = fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| VerifyError::Io(lock_path.display().to_string(), e))?;
        nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| VerifyError::Io(lock_path.display().to_string(), e.into()))
    }

    /// The bytes of objects in the cache now.
    pub fn size(&self) -> u64 {
        let mut total = 0;
        for dir in fs::read_dir(self.dir.join("objects")).into_iter().flatten().flatten() {
            for entry in fs::read_dir(dir.path()).into_iter().flatten().flatten() {
                total += entry.metadata().map_or(0, |m| m.len());
            }
        }
        total
    }
}

/// A repository served over HTTP (its stratum 0 or a stratum 1), read through a [`Cache`].
pub struct Http {
    base: String,
    name: String,
    client: reqwest::blocking::Client,
    cache: Cache,
    /// Objects downloaded by this source (the benchmarks' and tests' count).
    pub downloads: AtomicU64,
    /// Bytes downloaded by this source.
    pub downloaded_bytes: AtomicU64,
    /// The top-level files fetched by this source, kept for offline use only once the reader
    /// verified them ([`Source::verified`]).
    fetched: std::sync::Mutex<Vec<(String, Vec<u8>)>>,
}

impl Http {
    /// Reads the repository `name` at `base` (e.g. `http://host/cvmfs/gentoo.gah`) through
    /// `cache`, by way of `proxy` (an HTTP proxy URL) when given.
    pub fn new(base: &str, name: &str, cache: Cache, proxy: Option<&str>) -> Result<Http, VerifyError> {
        let mut builder = reqwest::blocking::Client::builder().connect_timeout(Duration::from_secs(10)).timeout(Duration::from_secs(300));
        builder = match proxy {
            Some(p) => builder.proxy(reqwest::Proxy::all(p).map_err(|e| VerifyError::Malformed("proxy", e.to_string()))?),
            // Only the proxy the volunteer gave, not whatever the environment says.
            None => builder.no_proxy(),
        };
        let client = builder.build().map_err(|e| VerifyError::Malformed("HTTP client", e.to_string()))?;
        Ok(Http {
            base: base.trim_end_matches('/').to_owned(),
            name: name.to_owned(),
            client,
            cache,
            downloads: AtomicU64::new(0),
            downloaded_bytes: AtomicU64::new(0),
            fetched: std::sync::Mutex::default(),
        })
    }

    /// GETs `rel` below the base: the body, at most `limit` bytes.
    fn get(&self, rel: &str, limit: u64) -> Result<Vec<u8>, VerifyError> {
        let url = format!("{}/{rel}", self.base);
        let failed = |e: &dyn std::fmt::Display| VerifyError::Io(url.clone(), std::io::Error::other(e.to_string()));
        let response =
            self.client.get(&url).send().map_err(|e| VerifyError::Unreachable { url: url.clone(), why: gah_util::error_chain(&e) })?;
        if !response.status().is_success() {
            return Err(failed(&format!("HTTP {}", response.status())));
        }
        let mut body = Vec::new();
        response.take(limit + 1).read_to_end(&mut body).map_err(|e| VerifyError::Io(url.clone(), e))?;
        if body.len() as u64 > limit {
            return Err(failed(&format!("more than {limit} bytes")));
        }
        self.downloads.fetch_add(1, Ordering::Relaxed);
        self.downloaded_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(body)
    }

    /// Where the last verified copy of the top-level file `name` is kept.
    fn top_path(&self, name: &str) -> PathBuf {
        self.cache.dir.join("top").join(format!("{}{name}", self.name))
    }
}

impl Source for Http {
    fn top(&self, name: &str) -> Result<Vec<u8>, VerifyError> {
        let mut fetched = self.fetched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fetched.retain(|(n, _)| n != name);
        match self.get(name, MAX_TOP) {
            Ok(bytes) => {
                // Kept for offline use only after the reader verified it (`verified`).
                fetched.push((name.to_owned(), bytes.clone()));
                Ok(bytes)
            }
            // The server cannot be reached: the last verified copy (checked again by the reader).
            Err(online) => fs::read(self.top_path(name)).map_err(|_| online),
        }
    }

    fn has(&self, hash: &Hash, suffix: Suffix) -> bool {
        self.cache.object_path(hash, suffix).is_file()
    }

    fn object(&self, hash: &Hash, suffix: Suffix) -> Result<Vec<u8>, VerifyError> {
        if let Some(bytes) = self.cache.get(hash, suffix) {
            return Ok(bytes);
        }
        let rel = object_rel(hash, suffix);
        // A request the server or a proxy lost (no answer, a dropped connection) is tried once
        // more, as the CernVM-FS client does (`CVMFS_MAX_RETRIES`, 1 by default).
        let bytes = match self.get(&rel, MAX_DOWNLOAD) {
            Err(VerifyError::Unreachable { .. }) => self.get(&rel, MAX_DOWNLOAD)?,
            got => got?,
        };
        // Checked here too (the reader checks again): a bad object never enters the cache.
        let actual: Hash = Sha1::digest(&bytes).into();
        if &actual != hash {
            return Err(VerifyError::ObjectHash { object: format!("{}/{rel}", self.base), actual: hex::encode(actual) });
        }
        self.cache.put(hash, suffix, &bytes)?;
        Ok(bytes)
    }

    fn verified(&self, revision: u64) -> Result<(), VerifyError> {
        // Under the cache's lock: tasks sharing the cache keep the highest revision seen.
        let _held = self.cache.lock()?;
        let seen_path = self.cache.dir.join("top").join(format!("{}.revision", self.name));
        let seen: u64 = fs::read_to_string(&seen_path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        if revision < seen {
            return Err(VerifyError::Rollback { found: revision, seen });
        }
        // What this source fetched and the reader has just verified; a copy read from the
        // cache (offline) is already the kept one.
        let fetched = std::mem::take(&mut *self.fetched.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for (name, bytes) in fetched {
            self.cache.write(&self.top_path(&name), &bytes)?;
        }
        self.cache.write(&seen_path, revision.to_string().as_bytes())
    }

    fn describe(&self) -> String {
        self.base.clone()
    }
}

/// Downloads at a time when a whole folder is read ([`crate::Reader::prefetch`]): a web
/// server or proxy serves several; more would mostly add contention on a volunteer's link.
pub const PREFETCH_THREADS: usize = 8;

/// What [`materialise`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Materialised {
    /// Regular files written.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Symbolic links left out (with [`Links::LeaveOut`]).
    pub links_left_out: u64,
}

/// Writes to a file, leaving runs of zeros (a whole [`SPARSE_BLOCK`]) as holes: a disk
/// image's unused space costs its reader no disk, as it cost none on the publisher's side.
struct Sparse<'a>(&'a fs::File);

/// The unit a run of zeros is skipped in (a file system block or more).
const SPARSE_BLOCK: usize = 64 << 10;

impl std::io::Write for Sparse<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use std::io::Seek;
        let mut file = self.0;
        for block in buf.chunks(SPARSE_BLOCK) {
            if block.len() == SPARSE_BLOCK && block.iter().all(|b| *b == 0) {
                file.seek(std::io::SeekFrom::Current(SPARSE_BLOCK as i64))?;
            } else {
                file.write_all(block)?;
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What [`materialise`] does with symbolic links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Written as links.
    Keep,
    /// Left out: a guest's inputs are plain trees, as an input tar's are.
    LeaveOut,
}

/// Writes the subtree `from` of `reader`'s revision (a directory, or one file) into `into`,
/// which must not exist: directories with their permission bits (and sticky bit; always
/// owner-writable), regular files with their permission bits (never set-id), symbolic links as `links` says (never followed here). Names come from the
/// verified catalogs, which the reader refuses when they could leave their parent.
/// `.cvmfscatalog` markers are left out (the publisher adds one to every nested catalog's
/// root; a source tree's own marker only told the publisher where to cut). Runs of zeros
/// become holes (a sparse disk image stays sparse).
pub fn materialise(reader: &crate::Reader, from: &str, into: &Path, links: Links) -> Result<Materialised, VerifyError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |p: &Path, e: std::io::Error| VerifyError::Io(p.display().to_string(), e);
    let mut done = Materialised::default();
    let mut todo = vec![(from.trim_end_matches('/').to_owned(), into.to_owned())];
    // Directory modes are set once their contents are written (a 0555 one could not be
    // filled), deepest first.
    let mut dirs = Vec::new();
    while let Some((path, target)) = todo.pop() {
        let entry = reader.lookup(&path)?;
        match entry.kind {
            crate::Kind::Dir => {
                fs::create_dir(&target).map_err(|e| io(&target, e))?;
                dirs.push((target.clone(), entry.mode & 0o1777));
                for name in reader.list(&path)? {
                    if name == crate::catalog::CATALOG_MARKER {
                        // The publisher's marker at each nested catalog's root (an empty
                        // file): not part of the tree that was published.
                        continue;
                    }
                    todo.push((format!("{path}/{name}"), target.join(&name)));
                }
            }
            crate::Kind::Symlink(to) => match links {
                Links::Keep => std::os::unix::fs::symlink(&to, &target).map_err(|e| io(&target, e))?,
                Links::LeaveOut => done.links_left_out += 1,
            },
            crate::Kind::File { .. } | crate::Kind::Chunked => {
                let f = fs::File::options()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(|e| io(&target, e))?;
                let size = reader.read_into(&path, &mut Sparse(&f))?;
                // A file ending in a hole gets its length here.
                f.set_len(size).map_err(|e| io(&target, e))?;
                f.set_permissions(fs::Permissions::from_mode(entry.mode & 0o777)).map_err(|e| io(&target, e))?;
                done.files += 1;
                done.bytes += size;
            }
        }
    }
    for (dir, mode) in dirs.iter().rev() {
        // Never one the owner could not list or clean up.
        fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o700)).map_err(|e| io(dir, e))?;
    }
    Ok(done)
}
