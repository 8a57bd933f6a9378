//! The project's package store: the binary packages of validated jobs that two replicas
//! built alike, which the next publication offers to every later job at `/binpkgs`.
//!
//! The store is a Portage package folder (`binpkg-multi-instance` layout,
//! `<category>/<PN>/<PF>-<BUILD_ID>.gpkg.tar`) with no `Packages` index: the guest's Portage
//! indexes what it is given itself (`gah-agent` runs emerge with `-pkgdir-index-trusted`), so
//! no index of ours, and none a guest wrote, is ever trusted.
//!
//! [`store_agreed`] takes from one upload the packages a comparison agreed on
//! (`gah_validator::agreed`), each copied to a staging folder beside the store, read again
//! there and kept only when its digest is the agreed one (the bytes stored are the bytes
//! checked), then renamed into place. A package whose digest the store already holds for
//! that `PF` is not stored twice; another digest of the same `PF` (other USE, another
//! compiler's build) becomes the next instance. One writer at a time: BOINC runs one
//! assimilator per application, `gah run` one job at a time.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use gah_core::binpkg::{self, Place};
use gah_validator::agreed::AgreedPackage;

/// The store's folder in the project's `binpkgs_dir`.
pub const STORE: &str = "store";
/// The staging folder beside it (same file system, never published).
pub const STAGING: &str = "incoming";

/// What [`store_agreed`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Packages added, by their path in the store.
    pub added: Vec<String>,
    /// Agreed packages the store already held (same `PF`, same digest), by path in the upload.
    pub known: Vec<String>,
    /// Agreed packages not stored, and why (absent from the upload, or not what was agreed).
    pub refused: Vec<String>,
}

impl std::fmt::Display for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} binary packages stored, {} already held", self.added.len(), self.known.len())?;
        if !self.refused.is_empty() {
            write!(f, ", {} refused ({})", self.refused.len(), self.refused.join("; "))?;
        }
        Ok(())
    }
}

/// Why the store could not take an upload's packages (the server's disk, not the upload).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The upload could not be opened or read.
    #[error("read the binary packages upload")]
    Upload(#[source] gah_validator::LoadError),
    /// A file of the store or its staging folder.
    #[error("{}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// Puts the packages of `upload` that `agreed` names into `store`, as the module says.
pub fn store_agreed(upload: &Path, agreed: &[AgreedPackage], store: &Path, staging: &Path) -> Result<Stored, StoreError> {
    let mut stored = Stored::default();
    if agreed.is_empty() {
        return Ok(stored);
    }
    let mut wanted: BTreeSet<&str> = agreed.iter().map(|a| a.path.as_str()).collect();
    let (file, _) = gah_validator::open_upload(upload).map_err(StoreError::Upload)?;
    fs::create_dir_all(staging).map_err(io_at(staging))?;
    gah_util::atomic::remove_orphans(staging, std::time::Duration::from_secs(3600));
    let read_error = |e: io::Error| StoreError::Upload(gah_validator::LoadError::Io { path: upload.to_path_buf(), source: e });
    let mut tar = tar::Archive::new(io::BufReader::new(file).take(binpkg::MAX_UPLOAD + 1));
    for entry in tar.entries().map_err(read_error)? {
        let mut entry = entry.map_err(read_error)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let (Some(place), true) = (Place::parse(&name), entry.header().entry_type().is_file()) else { continue };
        if !wanted.remove(name.as_str()) {
            continue;
        }
        // `.NAME.tmp-PID-N`, unique in this process: what `remove_orphans` clears after a crash.
        let staged = gah_util::atomic::temp_path_in(staging, Path::new(&place.path().replace('/', "_")));
        let copied = copy_new(&mut entry, &staged);
        if let Err(e) = copied {
            let _ = fs::remove_file(&staged);
            return Err(e);
        }
        let outcome = place_one(&staged, &name, &place, agreed, store, &mut stored);
        let _ = fs::remove_file(&staged);
        outcome?;
    }
    stored.refused.extend(wanted.into_iter().map(|p| format!("{p}: not in the upload")));
    Ok(stored)
}

fn copy_new(from: &mut impl Read, to: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new().write(true).create_new(true).custom_flags(nix::libc::O_NOFOLLOW).open(to).map_err(io_at(to))?;
    io::copy(&mut from.take(binpkg::MAX_UPLOAD), &mut file).map_err(io_at(to))?;
    file.sync_all().map_err(io_at(to))
}

/// The digest of the package at `path` (a file of ours), read as an untrusted one.
fn digest_of(path: &Path, name: &str) -> Result<Result<String, String>, StoreError> {
    let file = fs::File::open(path).map_err(io_at(path))?;
    let size = file.metadata().map_err(io_at(path))?.len();
    Ok(binpkg::read_package(name, io::BufReader::new(file), size, binpkg::Limits::default())
        .map(|p| p.digest)
        .map_err(|e| gah_util::error_chain(&e)))
}

/// Checks the staged copy of upload member `name` against what was agreed and moves it into
/// the store unless the store holds it already.
fn place_one(
    staged: &Path,
    name: &str,
    place: &Place,
    agreed: &[AgreedPackage],
    store: &Path,
    stored: &mut Stored,
) -> Result<(), StoreError> {
    let digest = match digest_of(staged, name)? {
        Ok(d) if agreed.iter().any(|a| a.path == name && a.digest == d) => d,
        Ok(_) => {
            stored.refused.push(format!("{name}: not the package that was agreed on"));
            return Ok(());
        }
        Err(why) => {
            stored.refused.push(why);
            return Ok(());
        }
    };
    let folder = store.join(&place.category).join(&place.pn);
    let mut highest = 0;
    match fs::read_dir(&folder) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(io_at(&folder))?;
                let file_name = entry.file_name().to_string_lossy().into_owned();
                let Some(held) = Place::parse(&format!("{}/{}/{file_name}", place.category, place.pn)) else { continue };
                if held.pf != place.pf {
                    continue;
                }
                highest = highest.max(held.build_id);
                if digest_of(&entry.path(), &held.path())?.as_deref() == Ok(digest.as_str()) {
                    stored.known.push(name.to_owned());
                    return Ok(());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(&folder).map_err(io_at(&folder))?,
        Err(e) => return Err(StoreError::Io { path: folder, source: e }),
    }
    let target = place.with_build_id(highest + 1);
    let at = store.join(target.path());
    fs::rename(staged, &at).map_err(io_at(&at))?;
    fs::File::open(&folder).and_then(|d| d.sync_all()).map_err(io_at(&folder))?;
    stored.added.push(target.path());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gah_core::binpkg::fixture::{gpkg, upload};

    const AT: &str = "dev-libs/jemalloc/jemalloc-5.3.0-1.gpkg.tar";

    fn jemalloc(build_time: &[u8], lib: &[u8]) -> Vec<u8> {
        gpkg(
            "jemalloc-5.3.0-1",
            &[("CATEGORY", b"dev-libs\n"), ("PF", b"jemalloc-5.3.0\n"), ("BUILD_TIME", build_time)],
            &[("usr/lib64/libjemalloc.so.2", 0o755, lib)],
            1,
        )
    }

    fn digest(bytes: &[u8]) -> String {
        binpkg::read_package(AT, bytes, bytes.len() as u64, binpkg::Limits::default()).unwrap().digest
    }

    #[test]
    fn only_the_agreed_bytes_are_stored_and_each_package_once() {
        let dir = tempfile::tempdir().unwrap();
        let (store, staging) = (dir.path().join(STORE), dir.path().join(STAGING));
        let built = jemalloc(b"1\n", b"lib");
        let other = gpkg("bzip2-1.0.8-1", &[("CATEGORY", b"app-arch"), ("PF", b"bzip2-1.0.8")], &[], 1);
        let up = dir.path().join("wu_0_r1_1");
        std::fs::write(&up, upload(&[(AT, &built), ("app-arch/bzip2/bzip2-1.0.8-1.gpkg.tar", &other)])).unwrap();
        let agreed = [AgreedPackage { path: AT.into(), digest: digest(&built) }];
        let stored = store_agreed(&up, &agreed, &store, &staging).unwrap();
        assert_eq!(stored.added, [AT]);
        // Only the agreed package, byte for byte, and nothing left in staging.
        assert_eq!(std::fs::read(store.join(AT)).unwrap(), built);
        assert!(!store.join("app-arch").exists());
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
        // The same package built at another time (other bytes, same digest): held already.
        let again = jemalloc(b"2\n", b"lib");
        std::fs::write(&up, upload(&[(AT, &again)])).unwrap();
        let stored = store_agreed(&up, &[AgreedPackage { path: AT.into(), digest: digest(&again) }], &store, &staging).unwrap();
        assert!(stored.added.is_empty());
        assert_eq!(stored.known, [AT]);
        // Another build of the same PF (say, other USE): the next instance.
        let variant = jemalloc(b"3\n", b"lib built with other USE");
        std::fs::write(&up, upload(&[(AT, &variant)])).unwrap();
        let stored = store_agreed(&up, &[AgreedPackage { path: AT.into(), digest: digest(&variant) }], &store, &staging).unwrap();
        assert_eq!(stored.added, ["dev-libs/jemalloc/jemalloc-5.3.0-2.gpkg.tar"]);
    }

    #[test]
    fn an_upload_that_is_not_what_was_agreed_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, staging) = (dir.path().join(STORE), dir.path().join(STAGING));
        let agreed_bytes = jemalloc(b"1\n", b"lib");
        let swapped = jemalloc(b"1\n", b"trojan");
        let up = dir.path().join("wu_0_r1_1");
        // The upload was replaced after the comparison: the agreed digest is not its.
        std::fs::write(&up, upload(&[(AT, &swapped)])).unwrap();
        let agreed = [AgreedPackage { path: AT.into(), digest: digest(&agreed_bytes) }];
        let stored = store_agreed(&up, &agreed, &store, &staging).unwrap();
        assert!(stored.added.is_empty() && stored.refused[0].contains("not the package that was agreed on"), "{stored:?}");
        assert!(!store.join(AT).exists());
        // Agreed on, but absent from the upload.
        std::fs::write(&up, upload(&[])).unwrap();
        let stored = store_agreed(&up, &agreed, &store, &staging).unwrap();
        assert!(stored.refused[0].contains("not in the upload"), "{stored:?}");
        // A link in place of the upload is not followed.
        let link = dir.path().join("wu_1_r2_1");
        std::os::unix::fs::symlink(&up, &link).unwrap();
        assert!(matches!(store_agreed(&link, &agreed, &store, &staging), Err(StoreError::Upload(_))));
    }
}
