//! A job's inputs from the project's CernVM-FS repository (issue 11): `data.json`
//! ([`gah_core::data_ref::DataRef`]) names the repository, the revision the job was planned
//! from, the ebuild repository's folder and the distfiles; they are read on the host with
//! `gah_publish`'s verifying reader through one cache per host (the project folder's
//! `cvmfs-cache`, shared by the project's tasks, bounded, kept across restarts), by way of
//! the volunteer's proxy, and written into the slot as the plain folders the guest is given.
//! The guest itself never reaches the network.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use gah_core::data_ref::DataRef;
use gah_publish::fetch::{materialise, Cache, Http, Links, PREFETCH_THREADS};
use gah_publish::Reader;

use crate::SAY;

/// Why the inputs could not be had: each names the repository path or file concerned.
#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    /// `data.json` could not be read or is not valid.
    #[error("read {}", path.display())]
    Ref {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: gah_core::Error,
    },
    /// The repository, or a path of it, could not be read and verified.
    #[error("{what} from {url}")]
    Read {
        /// What was being read.
        what: String,
        /// The repository's URL.
        url: String,
        /// The reader's error.
        #[source]
        source: gah_publish::VerifyError,
    },
    /// The repository no longer has the revision the job names, or names it differently.
    #[error("{url}: revision {revision} is {found}, not the root catalog {expected} the job names")]
    Revision {
        /// The repository's URL.
        url: String,
        /// The revision.
        revision: u64,
        /// What the history says.
        found: String,
        /// What the job says.
        expected: String,
    },
    /// The path named as the guest root is not a folder with a catalog of its own.
    #[error("{url}: {path} is not a guest root (a folder with a catalog of its own)")]
    NotABase {
        /// The repository's URL.
        url: String,
        /// The path.
        path: String,
    },
    /// The path named as the root disk is not a regular file of at most 16 GiB.
    #[error("{url}: {path} is not a root disk (a regular file of at most 16 GiB)")]
    NotADisk {
        /// The repository's URL.
        url: String,
        /// The path.
        path: String,
    },
    /// The host's copy of the root disk is marked whole but its file is gone.
    #[error("{} is gone from the host's copy of the root disk: remove {} to have it read again", path.display(), tree.display())]
    DiskGone {
        /// The disk file.
        path: PathBuf,
        /// Its folder.
        tree: PathBuf,
    },
    /// The host's tree of the guest root, or its copy of the root disk, could not be made.
    #[error("the guest root (or root disk) from the repository")]
    Base(#[from] crate::rootfs_archive::RootfsError),
}

impl DataPlaneError {
    /// The project's server gave no answer, and the host's cache could not stand in: the
    /// same read may work later.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DataPlaneError::Read { source, .. } if source.is_unreachable())
    }
}

/// Where the inputs were written: the ebuild repository, the distfiles folder and the
/// binary packages, if the job names some.
#[derive(Debug)]
pub struct Fetched {
    /// The ebuild repository.
    pub repo: PathBuf,
    /// The distfiles.
    pub distfiles: PathBuf,
    /// The binary packages (`Packages` and the package files).
    pub binpkgs: Option<PathBuf>,
}

/// How to reach the repository.
#[derive(Debug, Clone)]
pub struct Access<'a> {
    /// The repository's public master key (`<name>.pub`).
    pub master_key: &'a Path,
    /// The host's cache folder.
    pub cache: &'a Path,
    /// The most it keeps, in bytes.
    pub cache_quota: u64,
    /// The volunteer's HTTP proxy.
    pub proxy: Option<&'a str>,
}

/// Reads `data.json` at `path`.
pub fn read_ref(path: &Path) -> Result<DataRef, DataPlaneError> {
    let bytes = std::fs::read(path)
        .map_err(|source| DataPlaneError::Ref { path: path.to_owned(), source: gah_core::Error::Read { path: path.to_owned(), source } })?;
    DataRef::from_json(&bytes).map_err(|source| DataPlaneError::Ref { path: path.to_owned(), source })
}

/// The project's repository as one task reads it: opened once (its signed manifest and
/// whitelist verified), then read for the guest root and for the job's inputs.
pub struct Repository {
    data: DataRef,
    /// The repository's current revision.
    current: Reader,
    /// Once checked: the revision `data` names, when it is not the current one (read from
    /// the history).
    pinned: std::cell::OnceCell<Option<Reader>>,
    http: Arc<Http>,
}

impl Repository {
    /// The repository `data` names, through the host's cache (its last verified manifest
    /// when the server cannot be reached).
    pub fn open(data: &DataRef, access: &Access<'_>) -> Result<Repository, DataPlaneError> {
        let read = read_error(data);
        let cache = Cache::open(access.cache, access.cache_quota).map_err(read("the host's cache"))?;
        let http = Arc::new(Http::new(&data.url, &data.name, cache, access.proxy).map_err(read("the connection"))?);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let current = gah_publish::verify_from(http.clone(), &data.name, access.master_key, i64::try_from(now).unwrap_or(i64::MAX))
            .map_err(read("the repository's signed manifest"))?;
        Ok(Repository { data: data.clone(), current, pinned: std::cell::OnceCell::new(), http })
    }

    /// The revision the job names, through the current one's history; its root catalog
    /// checked against the job's (once).
    fn pinned(&self) -> Result<&Reader, DataPlaneError> {
        if self.pinned.get().is_none() {
            let data = &self.data;
            let old = if self.current.manifest.revision == data.revision {
                None
            } else {
                Some(self.current.at_revision(data.revision).map_err(read_error(data)(&format!("revision {}", data.revision)))?)
            };
            let found = hex::encode(old.as_ref().unwrap_or(&self.current).root_catalog());
            if !found.eq_ignore_ascii_case(&data.root_catalog) {
                return Err(DataPlaneError::Revision {
                    url: data.url.clone(),
                    revision: data.revision,
                    found,
                    expected: data.root_catalog.clone(),
                });
            }
            tracing::info!(target: SAY, "reading {} revision {} from {}", data.name, data.revision, data.url);
            let _ = self.pinned.set(old);
        }
        Ok(self.pinned.get().and_then(Option::as_ref).unwrap_or(&self.current))
    }

    /// Downloads so far (files, bytes), to say what one step downloaded.
    fn downloaded(&self) -> (u64, u64) {
        (self.http.downloads.load(Ordering::Relaxed), self.http.downloaded_bytes.load(Ordering::Relaxed))
    }

    /// Says what `what` downloaded (since `before`) rather than found in the host's cache.
    fn say_downloaded(&self, what: &str, before: (u64, u64)) {
        let (n, bytes) = self.downloaded();
        let (n, bytes) = (n - before.0, bytes - before.1);
        tracing::info!(target: SAY, "{what}: {n} files downloaded ({} KB), the rest from the host's cache", bytes.div_ceil(1024));
    }

    /// The guest root the job names (`base`), as a folder of the host shared by its tasks:
    /// `dir` holds one tree per base content (the hash of the base's catalog, which covers
    /// everything below it), made once, with links and modes (never set-id bits). A job that
    /// names no base (a workunit made before the project published one) gets the current
    /// revision's `/base`, what an app version without a root of its own can run it on;
    /// `None` when there is none either.
    pub fn base(&self, dir: &Path) -> Result<Option<PathBuf>, DataPlaneError> {
        let read = read_error(&self.data);
        let (reader, base) = match &self.data.base {
            Some(base) => (self.pinned()?, base.as_str()),
            None => match self.current.lookup(gah_core::data_ref::BASE_AT) {
                Ok(entry) if entry.kind == gah_publish::Kind::Dir => (&self.current, gah_core::data_ref::BASE_AT),
                Ok(_) | Err(gah_publish::VerifyError::NotFound(_)) => return Ok(None),
                // Unreachable or refused: said as such, not taken for "none published".
                Err(e) => return Err(read(gah_core::data_ref::BASE_AT)(e)),
            },
        };
        // A guest root is a folder with a catalog of its own (as `gah deploy` publishes
        // `/base`): the tree is named by that catalog's hash, so a path below it or a link
        // (which would materialise pointing into the host) must not pass for one.
        let is_dir = reader.lookup(base).map_err(read(base))?.kind == gah_publish::Kind::Dir;
        let catalog = reader.nested_catalog_at(base).map_err(read(base))?;
        let Some(catalog) = catalog.filter(|_| is_dir) else {
            return Err(DataPlaneError::NotABase { url: self.data.url.clone(), path: base.to_owned() });
        };
        let key = hex::encode(catalog);
        let tree = crate::rootfs_archive::from_repository(dir, &key, |tmp: &Path| -> Result<(), DataPlaneError> {
            let (started, before) = (std::time::Instant::now(), self.downloaded());
            tracing::info!(target: SAY, "reading the guest root {base} ({key}) once for this host");
            // Thousands of small files: downloaded several at a time first.
            reader.prefetch(base, PREFETCH_THREADS).map_err(read(base))?;
            // Into `root/` of the fresh folder: materialise makes its target itself.
            let got = materialise(reader, base, &tmp.join("root"), Links::Keep).map_err(read(base))?;
            tracing::info!(target: SAY, "guest root read: {} files, {} MB in {:.1} s", got.files, got.bytes >> 20, started.elapsed().as_secs_f64());
            self.say_downloaded("the guest root", before);
            Ok(())
        })?;
        Ok(Some(tree.join("root")))
    }

    /// The vm guest's root disk the job names (`disk`), as a file of the host shared by its
    /// tasks (the backing file of each task's overlay, which qemu opens read-only): `dir`
    /// holds one copy per disk content (its chunks' hashes), written once, one chunk at a
    /// time with runs of zeros as holes. A job that names no disk gets the current
    /// revision's [`DISK_AT`](gah_core::data_ref::DISK_AT) if there is one; `None` otherwise.
    pub fn disk(&self, dir: &Path) -> Result<Option<PathBuf>, DataPlaneError> {
        use gah_core::data_ref::DISK_AT;
        let read = read_error(&self.data);
        let (reader, path, entry) = match &self.data.disk {
            Some(disk) => {
                let reader = self.pinned()?;
                (reader, disk.as_str(), reader.lookup(disk).map_err(read(disk))?)
            }
            None => match self.current.lookup(DISK_AT) {
                Ok(entry) if matches!(entry.kind, gah_publish::Kind::File { .. } | gah_publish::Kind::Chunked) => {
                    (&self.current, DISK_AT, entry)
                }
                Ok(_) | Err(gah_publish::VerifyError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(read(DISK_AT)(e)),
            },
        };
        let is_file = matches!(entry.kind, gah_publish::Kind::File { .. } | gah_publish::Kind::Chunked);
        // Written out whole on the host, outside any slot's disk bound: bounded here.
        if !is_file || entry.size > MAX_DISK_BYTES {
            return Err(DataPlaneError::NotADisk { url: self.data.url.clone(), path: path.to_owned() });
        }
        let key = format!("disk-{}", hex::encode(reader.content_id(&entry).map_err(read(path))?));
        let tree = crate::rootfs_archive::from_repository(dir, &key, |tmp: &Path| -> Result<(), DataPlaneError> {
            let (started, before) = (std::time::Instant::now(), self.downloaded());
            tracing::info!(target: SAY, "reading the root disk {path} ({} MB) once for this host", entry.size >> 20);
            reader.prefetch(path, PREFETCH_THREADS).map_err(read(path))?;
            let file = tmp.join(DISK_FILE);
            let got = materialise(reader, path, &file, Links::LeaveOut).map_err(read(path))?;
            // Read-only for everyone: qemu (as its own user when gah-app is root) opens it as
            // the read-only backing file of each task's overlay, and nothing may write it;
            // qemu's user must reach it through the folders above, whatever the umask.
            use std::os::unix::fs::PermissionsExt;
            for (p, mode) in [(file.as_path(), 0o444), (tmp, 0o755), (dir, 0o711)] {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                    .map_err(|source| crate::rootfs_archive::RootfsError::Tree { action: "set the mode of", path: p.to_owned(), source })?;
            }
            tracing::info!(target: SAY, "root disk read: {} MB in {:.1} s", got.bytes >> 20, started.elapsed().as_secs_f64());
            self.say_downloaded("the root disk", before);
            Ok(())
        })?;
        let file = tree.join(DISK_FILE);
        // A whole copy's stamp with its disk gone (removed by hand): said here, naming what to
        // remove, rather than by qemu-img as a missing backing file.
        if !file.is_file() {
            return Err(DataPlaneError::DiskGone { path: file, tree });
        }
        Ok(Some(file))
    }

    /// Writes the job's inputs into `into` (`repo/`, `distfiles/`, `binpkgs/`; `into` must
    /// not hold them yet).
    pub fn fetch(&self, into: &Path) -> Result<Fetched, DataPlaneError> {
        let data = &self.data;
        let read = read_error(data);
        let before = self.downloaded();
        let pinned = self.pinned()?;
        let repo = into.join("repo");
        let distfiles = into.join("distfiles");
        std::fs::create_dir_all(into).map_err(|e| read("the slot")(gah_publish::VerifyError::Io(into.display().to_string(), e)))?;
        pinned.prefetch(&data.repo, PREFETCH_THREADS).map_err(read(&data.repo))?;
        // Plain trees, as an input tar's are: a link has no business there.
        let got = materialise(pinned, &data.repo, &repo, Links::LeaveOut).map_err(read(&data.repo))?;
        if got.links_left_out > 0 {
            tracing::warn!(links = got.links_left_out, "symbolic links in the repository were left out");
        }
        std::fs::create_dir(&distfiles).map_err(|e| read("the slot")(gah_publish::VerifyError::Io(distfiles.display().to_string(), e)))?;
        for path in &data.distfiles {
            // Checked by `DataRef::from_json`: an absolute path with a last part that is a name.
            let name = path.rsplit('/').next().unwrap_or(path);
            materialise(pinned, path, &distfiles.join(name), Links::LeaveOut).map_err(read(path))?;
        }
        let binpkgs = match &data.binpkgs {
            Some(path) => {
                let to = into.join("binpkgs");
                materialise(pinned, path, &to, Links::LeaveOut).map_err(read(path))?;
                Some(to)
            }
            None => None,
        };
        self.say_downloaded("the job's inputs", before);
        Ok(Fetched { repo, distfiles, binpkgs })
    }
}

/// The root disk's name in its host folder.
const DISK_FILE: &str = "rootfs.ext4";

/// The largest root disk a task takes (the test image's is 4 GiB, mostly holes).
const MAX_DISK_BYTES: u64 = 16 << 30;

fn read_error(data: &DataRef) -> impl Fn(&str) -> Box<dyn FnOnce(gah_publish::VerifyError) -> DataPlaneError> + '_ {
    move |what: &str| {
        let (what, url) = (what.to_owned(), data.url.clone());
        Box::new(move |source| DataPlaneError::Read { what, url, source })
    }
}
