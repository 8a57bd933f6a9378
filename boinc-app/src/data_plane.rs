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
    /// The host's tree of the guest root could not be made.
    #[error("the guest root from the repository")]
    Base(#[from] crate::rootfs_archive::RootfsError),
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

/// The revision `data` names, its signatures, whitelist and root catalog verified.
fn open(data: &DataRef, access: &Access<'_>) -> Result<(Reader, Arc<Http>), DataPlaneError> {
    let (current, http) = open_current(data, access)?;
    Ok((pin(current, data)?, http))
}

/// The repository's current revision, its signatures and whitelist verified.
fn open_current(data: &DataRef, access: &Access<'_>) -> Result<(Reader, Arc<Http>), DataPlaneError> {
    let read = read_error(data);
    let cache = Cache::open(access.cache, access.cache_quota).map_err(read("the host's cache"))?;
    let http = Arc::new(Http::new(&data.url, &data.name, cache, access.proxy).map_err(read("the connection"))?);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let current = gah_publish::verify_from(http.clone(), &data.name, access.master_key, i64::try_from(now).unwrap_or(i64::MAX))
        .map_err(read("the repository's signed manifest"))?;
    Ok((current, http))
}

/// The revision `data` names, through `current`'s history; its root catalog checked.
fn pin(current: Reader, data: &DataRef) -> Result<Reader, DataPlaneError> {
    let read = read_error(data);
    let pinned = if current.manifest.revision == data.revision {
        current
    } else {
        current.at_revision(data.revision).map_err(read(&format!("revision {}", data.revision)))?
    };
    let found = hex::encode(pinned.root_catalog());
    if !found.eq_ignore_ascii_case(&data.root_catalog) {
        return Err(DataPlaneError::Revision {
            url: data.url.clone(),
            revision: data.revision,
            found,
            expected: data.root_catalog.clone(),
        });
    }
    tracing::info!(target: SAY, "reading {} revision {} from {}", data.name, data.revision, data.url);
    Ok(pinned)
}

/// Says what was downloaded rather than found in the host's cache.
fn say_downloaded(http: &Http, what: &str) {
    let (n, bytes) = (http.downloads.load(Ordering::Relaxed), http.downloaded_bytes.load(Ordering::Relaxed));
    tracing::info!(target: SAY, "{what}: {n} files downloaded ({} KB), the rest from the host's cache", bytes.div_ceil(1024));
}

fn read_error(data: &DataRef) -> impl Fn(&str) -> Box<dyn FnOnce(gah_publish::VerifyError) -> DataPlaneError> + '_ {
    move |what: &str| {
        let (what, url) = (what.to_owned(), data.url.clone());
        Box::new(move |source| DataPlaneError::Read { what, url, source })
    }
}

/// The guest root `data` names (`base`), as a folder of the host shared by its tasks: `dir`
/// holds one tree per base content (the hash of the base's catalog, which covers everything
/// below it), made once, with links and modes (never set-id bits). A `data` that names no
/// base (a workunit made before the project published one) gets the current revision's
/// `/base`, what an app version without a root of its own can run it on; `None` when there
/// is none either.
pub fn base(data: &DataRef, access: &Access<'_>, dir: &Path) -> Result<Option<PathBuf>, DataPlaneError> {
    let read = read_error(data);
    let (current, http) = open_current(data, access)?;
    let (reader, base) = match &data.base {
        Some(base) => (pin(current, data)?, base.as_str()),
        None => match current.lookup(gah_core::data_ref::BASE_AT) {
            Ok(entry) if entry.kind == gah_publish::Kind::Dir => (current, gah_core::data_ref::BASE_AT),
            _ => return Ok(None),
        },
    };
    let key = hex::encode(reader.catalog_of(base).map_err(read(base))?);
    let tree = crate::rootfs_archive::from_repository(dir, &key, |tmp: &Path| -> Result<(), DataPlaneError> {
        let started = std::time::Instant::now();
        tracing::info!(target: SAY, "reading the guest root {base} ({key}) once for this host");
        // Thousands of small files: downloaded several at a time first.
        reader.prefetch(base, PREFETCH_THREADS).map_err(read(base))?;
        // Into `root/` of the fresh folder: materialise makes its target itself.
        let got = materialise(&reader, base, &tmp.join("root"), Links::Keep).map_err(read(base))?;
        tracing::info!(target: SAY, "guest root read: {} files, {} MB in {:.1} s", got.files, got.bytes >> 20, started.elapsed().as_secs_f64());
        say_downloaded(&http, "the guest root");
        Ok(())
    })?;
    Ok(Some(tree.join("root")))
}

/// Writes the job's inputs into `into` (`repo/`, `distfiles/`, `binpkgs/`; `into` must not
/// hold them yet).
pub fn fetch(data: &DataRef, access: &Access<'_>, into: &Path) -> Result<Fetched, DataPlaneError> {
    let read = read_error(data);
    let (pinned, http) = open(data, access)?;
    let repo = into.join("repo");
    let distfiles = into.join("distfiles");
    std::fs::create_dir_all(into).map_err(|e| read("the slot")(gah_publish::VerifyError::Io(into.display().to_string(), e)))?;
    pinned.prefetch(&data.repo, PREFETCH_THREADS).map_err(read(&data.repo))?;
    // Plain trees, as an input tar's are: a link has no business there.
    let got = materialise(&pinned, &data.repo, &repo, Links::LeaveOut).map_err(read(&data.repo))?;
    if got.links_left_out > 0 {
        tracing::warn!(links = got.links_left_out, "symbolic links in the repository were left out");
    }
    std::fs::create_dir(&distfiles).map_err(|e| read("the slot")(gah_publish::VerifyError::Io(distfiles.display().to_string(), e)))?;
    for path in &data.distfiles {
        // Checked by `DataRef::from_json`: an absolute path with a last part that is a name.
        let name = path.rsplit('/').next().unwrap_or(path);
        materialise(&pinned, path, &distfiles.join(name), Links::LeaveOut).map_err(read(path))?;
    }
    let binpkgs = match &data.binpkgs {
        Some(path) => {
            let to = into.join("binpkgs");
            materialise(&pinned, path, &to, Links::LeaveOut).map_err(read(path))?;
            Some(to)
        }
        None => None,
    };
    say_downloaded(&http, "the job's inputs");
    Ok(Fetched { repo, distfiles, binpkgs })
}
