//! gah-publish: publishes a source tree (an ebuild repository, distfiles, images) as a real
//! CernVM-FS repository in a plain folder that any web server can serve as stratum 0, and
//! verifies one. The folder holds what `cvmfs_server` would put there: zlib objects under
//! `data/` named by the SHA-1 of their compressed bytes, SQLite file catalogs (schema 2.5)
//! nested per top-level directory, a history database, the certificate, the whitelist signed
//! by the master key and, written last, the manifest signed by the certificate's key.
//!
//! What is not done as CernVM-FS does: files are never chunked; hard links are separate
//! files; owners are stored as root (0/0); no reflog, no `.cvmfs_master_replica` semantics
//! beyond the marker file. docs/FORMATS.md, "The CernVM-FS repository", has the details.

pub mod catalog;
pub mod fetch;
pub mod history;
pub mod keys;
pub mod objects;
pub mod signed;
pub mod verify;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use objects::{Hash, Store, Suffix};
pub use verify::{verify, verify_from, Chunk, Entry, Kind, Reader, VerifyError};

/// The manifest file, the whitelist, and the empty marker a stratum 1 looks for before it
/// replicates.
pub const MANIFEST: &str = ".cvmfspublished";
pub const WHITELIST: &str = ".cvmfswhitelist";
pub const MASTER_REPLICA: &str = ".cvmfs_master_replica";
/// How long a whitelist is valid: `cvmfs_server`'s default, 30 days. Each publication signs
/// a new one.
pub const WHITELIST_DAYS: i64 = 30;
/// How long readers may cache the manifest (`D`, seconds; `CVMFS_REPOSITORY_TTL`'s default).
pub const TTL: u64 = 240;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: the name is not UTF-8, which a CernVM-FS catalog cannot hold", .0.display())]
    NotUtf8(PathBuf),
    #[error("keys: {0}")]
    Keys(String),
    #[error("repository name {0:?}: want a fully qualified name such as gentoo.gah")]
    Name(String),
    #[error("{} is being published by another process", .0.display())]
    Locked(PathBuf),
    #[error("catalog database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Atomic(#[from] gah_util::atomic::AtomicError),
    #[error("{0}")]
    Nested(String),
    #[error("the previous revision: {0}")]
    Previous(#[from] VerifyError),
}

impl PublishError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> PublishError {
        PublishError::Io { path: path.to_owned(), source }
    }
}

/// Refuses keys inside the published tree or the served folder (the private keys would be
/// published), and the served folder inside the tree (each publication would take in the
/// previous one).
fn refuse_nesting(source: &Path, out: &Path, keys: &Path) -> Result<(), PublishError> {
    let real = |p: &Path| fs::canonicalize(p).map_err(|e| PublishError::io(p, e));
    let (source, out, keys) = (real(source)?, real(out)?, real(keys)?);
    for (inner, outer, what) in [
        (&keys, &source, "the keys are inside the source tree"),
        (&keys, &out, "the keys are inside the repository folder"),
        (&out, &source, "the repository folder is inside the source tree"),
    ] {
        if inner.starts_with(outer) {
            return Err(PublishError::Nested(format!("{what}: {} is under {}", inner.display(), outer.display())));
        }
    }
    Ok(())
}

/// What a publication did.
#[derive(Debug, Clone)]
pub struct Published {
    pub revision: u64,
    /// Hex SHA-1 of the root catalog object.
    pub root_catalog_hash: String,
    /// Objects under `data/` written by this publication (objects already there are not).
    pub objects_written: u64,
    /// Their compressed bytes.
    pub bytes_written: u64,
    /// Catalogs written anew, and nested catalogs kept from the previous revision.
    pub catalogs_written: u64,
    pub catalogs_kept: u64,
    /// Source files read and compressed; the others were unchanged since the last
    /// publication by their stat (the stat cache, `<keys>/<name>.stat-cache`).
    pub files_read: u64,
    /// Source entries left out: not files, folders or links (device nodes, fifos, sockets).
    pub left_out: u64,
    /// The keys were made by this publication (the folder had none).
    pub keys_generated: bool,
    /// The public master key readers must be given (out of band) to trust the repository.
    pub master_pub: PathBuf,
}

/// One folder of the published tree: `from`'s contents appear at `at` (`""` for the root,
/// else an absolute repository path such as `/repos/gah`; the folders above it are made).
#[derive(Debug, Clone, Copy)]
pub struct Mount<'a> {
    /// Where in the repository.
    pub at: &'a str,
    /// The folder on disk, or a file (not at the root).
    pub from: &'a Path,
}

/// Publishes `source` as the next revision of the repository `name` in `out`, signing with
/// the keys in `keys` (made there when absent). Objects first, then the whitelist, then the
/// manifest, each letter by temp file and rename: a reader sees the old revision or the new
/// one, never half of one.
pub fn publish(source: &Path, out: &Path, name: &str, keys: &Path) -> Result<Published, PublishError> {
    publish_mounts(&[Mount { at: "", from: source }], out, name, keys)
}

/// [`publish`] of several folders, each at its place in one tree (e.g. an ebuild repository
/// at `/repos/gah` and the distfiles at `/distfiles`), without copying them together first.
pub fn publish_mounts(mounts: &[Mount<'_>], out: &Path, name: &str, keys: &Path) -> Result<Published, PublishError> {
    if name.is_empty() || !name.contains('.') || name.contains(['/', '\n', ' ']) {
        return Err(PublishError::Name(name.to_owned()));
    }
    fs::create_dir_all(out).map_err(|e| PublishError::io(out, e))?;
    // Taken before the keys are made, so two first publications cannot both make them.
    let _lock = lock(out)?;
    let (keys_loaded, keys_generated) = keys::load_or_generate(keys, name)?;
    if keys_generated {
        tracing::info!(dir = %keys.display(), "no keys for {name}: made a master key, a signing key and its certificate");
    }
    for mount in mounts {
        refuse_nesting(mount.from, out, keys)?;
    }
    // Beside the keys, not in the served folder: it names the publisher's own paths' inodes.
    let mut store = Store::open(out)?.with_stat_cache(&keys.join(format!("{name}.stat-cache")));
    gah_util::atomic::remove_orphans(&out.join("data/txn"), Duration::from_secs(3600));

    let previous = read_previous_manifest(out, name)?;
    let revision = previous.as_ref().map_or(1, |p| p.revision + 1);
    let now = unix_now();

    let tree = catalog::read_mounts(mounts, &mut store)?;
    let previous_catalogs = match &previous {
        Some(p) => catalog::previous_catalogs(&store, p.root_catalog, p.root_catalog_size)?,
        None => catalog::Previous::default(),
    };
    let mut writer = catalog::CatalogWriter { store: &mut store, previous: &previous_catalogs, revision, now, written: 0, kept: 0 };
    let root = writer.write("", "", &tree)?;
    let (catalogs_written, catalogs_kept) = (writer.written, writer.kept);
    let tag = history::Tag { root_catalog: &root.hash, root_catalog_size: root.size, revision, timestamp: now };
    let history_hash = history::write(&mut store, previous.as_ref().and_then(|p| p.history.as_ref()), name, &tag)?;
    let cert_hash = store.put_bytes(keys_loaded.cert_pem.as_bytes(), Suffix::Certificate)?;

    // Every object the letters point to is on disk before the letters are.
    sync_filesystem(out)?;
    write_whitelist(out, name, &keys_loaded, now)?;
    let root_hex = hex::encode(root.hash);
    let manifest_text = signed::manifest_text(&signed::ManifestFields {
        root_catalog: &root_hex,
        root_catalog_size: root.size,
        ttl: TTL,
        revision,
        name,
        certificate: &hex::encode(cert_hash),
        history: &hex::encode(history_hash),
        timestamp: now,
    });
    gah_util::atomic::write(&out.join(MANIFEST), &signed::sign_manifest(&manifest_text, &keys_loaded.key))?;
    if !out.join(MASTER_REPLICA).exists() {
        gah_util::atomic::write(&out.join(MASTER_REPLICA), b"")?;
    }
    store.save_stat_cache()?;
    if let Some((n, first)) = &store.left_out {
        tracing::info!(
            "{n} entries that are not files, folders or links were left out (devices, fifos, sockets; e.g. {})",
            first.display()
        );
    }
    let published = Published {
        revision,
        root_catalog_hash: root_hex,
        objects_written: store.objects_written,
        bytes_written: store.bytes_written,
        catalogs_written,
        catalogs_kept,
        files_read: store.files_read,
        left_out: store.left_out.as_ref().map_or(0, |l| l.0),
        keys_generated,
        master_pub: keys::master_pub_path(keys, name),
    };
    tracing::info!(?published, "published {name}");
    Ok(published)
}

/// Signs a new whitelist for `name` in `out`, valid [`WHITELIST_DAYS`] from `now`.
fn write_whitelist(out: &Path, name: &str, keys: &keys::Keys, now: i64) -> Result<(), PublishError> {
    let text = signed::whitelist_text(now, now + WHITELIST_DAYS * 86_400, name, &signed::fingerprint(&keys.cert_der));
    let whitelist = signed::sign_whitelist(&text, &keys.master).map_err(|e| PublishError::Keys(e.to_string()))?;
    gah_util::atomic::write(&out.join(WHITELIST), &whitelist)?;
    Ok(())
}

/// Signs the whitelist of the repository `name` in `out` again, valid [`WHITELIST_DAYS`] from
/// now, without a new revision (`cvmfs_server resign`): readers refuse a repository whose
/// whitelist expired, so one that is not published for a month needs this (from cron).
pub fn resign(out: &Path, name: &str, keys: &Path) -> Result<(), PublishError> {
    let _lock = lock(out)?;
    let manifest_path = out.join(MANIFEST);
    let bytes = fs::read(&manifest_path).map_err(|e| PublishError::io(&manifest_path, e))?;
    let manifest = verify::parse_manifest(&signed::cut_letter(&bytes, "manifest")?)?;
    if manifest.name != name {
        return Err(PublishError::Name(format!("{name} (but {} holds {})", out.display(), manifest.name)));
    }
    if !keys::master_pub_path(keys, name).exists() {
        return Err(PublishError::Keys(format!("no keys for {name} in {}", keys.display())));
    }
    let (loaded, _) = keys::load_or_generate(keys, name)?;
    // The whitelist vouches for the certificate the manifest names: signing another would
    // make every reader refuse the repository.
    let cert = objects::read_object(out, &manifest.certificate, Suffix::Certificate, 64 << 10)?;
    if cert != loaded.cert_pem.as_bytes() {
        return Err(PublishError::Keys(format!(
            "the certificate in {} is not the one the manifest of {} names: wrong keys folder?",
            keys.display(),
            out.display()
        )));
    }
    write_whitelist(out, name, &loaded, unix_now())
}

/// A published revision: its number and its root catalog (hex SHA-1), what a job's
/// `data.json` pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// The revision number.
    pub revision: u64,
    /// Its root catalog's hash, hex.
    pub root_catalog: String,
    /// Its top-level folders (each a nested catalog), e.g. `/repos`, `/distfiles`, `/base`.
    pub top_level: Vec<String>,
}

/// The current revision of the repository `name` published in `out`, as its manifest says
/// (read as the publisher reads its own folder: the manifest's checksum checked, not its
/// signature); `None` when nothing is published there yet.
pub fn current_revision(out: &Path, name: &str) -> Result<Option<Revision>, PublishError> {
    let Some(m) = read_previous_manifest(out, name)? else { return Ok(None) };
    let store = Store::open(out)?;
    let temp = store.unpack_to_temp(&m.root_catalog, Suffix::Catalog)?;
    let db = rusqlite::Connection::open(temp.path())?;
    let mut stmt = db.prepare("SELECT path FROM nested_catalogs ORDER BY path")?;
    let nested = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
    let top_level = nested.into_iter().filter(|p| p.matches('/').count() == 1).collect();
    Ok(Some(Revision { revision: m.revision, root_catalog: hex::encode(m.root_catalog), top_level }))
}

/// The previous revision, as this folder's manifest says (its checksum checked; the
/// publisher trusts its own folder for the rest).
struct PreviousManifest {
    revision: u64,
    root_catalog: Hash,
    root_catalog_size: u64,
    history: Option<Hash>,
}

fn read_previous_manifest(out: &Path, name: &str) -> Result<Option<PreviousManifest>, PublishError> {
    let path = out.join(MANIFEST);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PublishError::io(&path, e)),
    };
    let m = verify::parse_manifest(&signed::cut_letter(&bytes, "manifest")?)?;
    if m.name != name {
        return Err(PublishError::Name(format!("{name} (but {} holds {})", out.display(), m.name)));
    }
    Ok(Some(PreviousManifest {
        revision: m.revision,
        root_catalog: m.root_catalog,
        root_catalog_size: m.root_catalog_size,
        history: m.history,
    }))
}

fn lock(out: &Path) -> Result<nix::fcntl::Flock<fs::File>, PublishError> {
    let path = out.join(".gah-publish.lock");
    let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| PublishError::io(&path, e))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| PublishError::Locked(out.to_owned()))
}

fn sync_filesystem(out: &Path) -> Result<(), PublishError> {
    let dir = fs::File::open(out).map_err(|e| PublishError::io(out, e))?;
    use std::os::fd::AsRawFd;
    nix::unistd::syncfs(dir.as_raw_fd()).map_err(|e| PublishError::io(out, e.into()))
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
