//! Binary package folders (Portage's PKGDIR): the one way they are copied between the host's
//! cache and a job, on the host (gah-app, gah run) and in the guest (gah-agent) alike.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::atomic::{AtomicError, AtomicFile};
use crate::untrusted::{open_beneath, UntrustedError};

/// What [`merge`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Merged {
    /// Files copied.
    pub copied: u64,
    /// Entries refused (links, special files, hard links), each with why: for the caller to
    /// log, since `from` may be a guest's doing.
    pub skipped: Vec<String>,
}

/// A step of [`merge`] that failed.
#[derive(Debug, thiserror::Error)]
pub enum PkgdirError {
    /// A folder could not be created.
    #[error("create {}", path.display())]
    Create {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A folder could not be listed.
    #[error("read {}", path.display())]
    Read {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A package or the index could not be copied.
    #[error("copy {}", from.display())]
    Copy {
        /// The file copied.
        from: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A copy could not be put in place.
    #[error(transparent)]
    Place(#[from] AtomicError),
}

/// Adds what `from` has and `to` lacks. Packages are immutable once written, so existing
/// ones are kept; the index (`Packages`, `Packages.gz`) changes with every build and is
/// replaced. Each file lands durably through a rename, so a reader never sees half of one,
/// and a folder's index lands after its packages: Portage trusts the index
/// (`FEATURES=pkgdir-index-trusted`, its default), so it must never name a package that is
/// not there yet, even when a merge fails halfway.
///
/// `from` may be what a guest left: only real folders and regular files are taken, each
/// opened beneath `from` without following links (`gah_util::untrusted`); links, FIFOs,
/// devices, sockets and hard links are skipped (and listed in [`Merged::skipped`]), never
/// copied.
pub fn merge(from: &Path, to: &Path) -> Result<Merged, PkgdirError> {
    merge_except(from, None, to)
}

/// [`merge`], leaving out the packages `known` holds at the same place: what a job built
/// beyond the folder it was seeded from (the guest copies `/gah/in/binpkgs` into its own
/// PKGDIR first). The index is always taken, since it lists the seeds and the new packages.
pub fn merge_new(from: &Path, known: &Path, to: &Path) -> Result<Merged, PkgdirError> {
    merge_except(from, Some(known), to)
}

fn merge_except(from: &Path, known: Option<&Path>, to: &Path) -> Result<Merged, PkgdirError> {
    let mut merged = Merged::default();
    match fs::symlink_metadata(from) {
        Ok(meta) if meta.is_dir() => merge_below(from, Path::new(""), known, to, &mut merged)?,
        Ok(_) => merged.skipped.push(format!("{}: not a real folder", from.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(PkgdirError::Read { path: from.to_path_buf(), source }),
    }
    Ok(merged)
}

/// Portage's index of a package folder (`Packages.gz` with `FEATURES=compress-index`).
fn is_index(name: &OsStr) -> bool {
    name == "Packages" || name == "Packages.gz"
}

fn merge_below(root: &Path, relative: &Path, known: Option<&Path>, to: &Path, merged: &mut Merged) -> Result<(), PkgdirError> {
    let dir = root.join(relative);
    let read = |source| PkgdirError::Read { path: dir.clone(), source };
    let mut indexes = Vec::new();
    for entry in fs::read_dir(&dir).map_err(read)? {
        let entry = entry.map_err(read)?;
        let (name, target) = (relative.join(entry.file_name()), to.join(entry.file_name()));
        // DirEntry::file_type does not follow links.
        let kind = entry.file_type().map_err(read)?;
        if kind.is_dir() {
            merge_below(root, &name, known, &target, merged)?;
        } else if is_index(&entry.file_name()) {
            indexes.push((name, target));
        } else if !target.exists() && !known.is_some_and(|k| k.join(&name).exists()) {
            copy_beneath(root, &name, to, &target, merged)?;
        }
    }
    for (name, target) in indexes {
        copy_beneath(root, &name, to, &target, merged)?;
    }
    Ok(())
}

/// Copies the regular file `name` beneath `root` to `target` in the folder `to` (made when
/// first needed, so folders of packages left out stay absent), or notes why not.
fn copy_beneath(root: &Path, name: &Path, to: &Path, target: &Path, merged: &mut Merged) -> Result<(), PkgdirError> {
    let mut source = match open_beneath(root, name) {
        Ok(file) => file,
        Err(e) if e.is_missing() => return Ok(()),
        Err(UntrustedError::Io { source, .. }) => return Err(PkgdirError::Copy { from: root.join(name), source }),
        Err(refused) => {
            merged.skipped.push(crate::error_chain(&refused));
            return Ok(());
        }
    };
    fs::create_dir_all(to).map_err(|source| PkgdirError::Create { path: to.to_path_buf(), source })?;
    let mut file = AtomicFile::create(target)?;
    io::copy(&mut source, file.as_file_mut()).map_err(|source| PkgdirError::Copy { from: root.join(name), source })?;
    file.commit()?;
    merged.copied += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_packages_and_replaces_the_index() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        fs::create_dir_all(from.path().join("app-arch/bzip2")).unwrap();
        fs::write(from.path().join("app-arch/bzip2/bzip2-1.0.8-1.gpkg.tar"), b"new").unwrap();
        fs::write(from.path().join("Packages"), b"index 2").unwrap();
        fs::create_dir_all(to.path().join("app-arch/bzip2")).unwrap();
        fs::write(to.path().join("app-arch/bzip2/bzip2-1.0.8-1.gpkg.tar"), b"old").unwrap();
        fs::write(to.path().join("Packages"), b"index 1").unwrap();
        merge(from.path(), to.path()).unwrap();
        assert_eq!(fs::read(to.path().join("app-arch/bzip2/bzip2-1.0.8-1.gpkg.tar")).unwrap(), b"old");
        assert_eq!(fs::read(to.path().join("Packages")).unwrap(), b"index 2");
        assert!(merge(&from.path().join("absent"), to.path()).is_ok());
    }

    /// Issue 15: a symlinked `.gpkg.tar` made the cache copy a root-only host file.
    #[test]
    fn links_fifos_and_hard_links_never_reach_the_cache() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        let secret = tempfile::NamedTempFile::new().unwrap();
        fs::write(secret.path(), b"host secret").unwrap();
        fs::create_dir_all(from.path().join("app-arch/bzip2")).unwrap();
        std::os::unix::fs::symlink(secret.path(), from.path().join("app-arch/bzip2/bzip2-1.0.8-1.gpkg.tar")).unwrap();
        std::os::unix::fs::symlink("/etc", from.path().join("dev-libs")).unwrap();
        nix::unistd::mkfifo(&from.path().join("Packages"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        fs::write(from.path().join("app-arch/bzip2/real-1.gpkg.tar"), b"pkg").unwrap();
        fs::hard_link(from.path().join("app-arch/bzip2/real-1.gpkg.tar"), from.path().join("app-arch/bzip2/twin-1.gpkg.tar")).unwrap();
        fs::write(from.path().join("app-arch/bzip2/plain-1.gpkg.tar"), b"pkg").unwrap();
        let merged = merge(from.path(), to.path()).unwrap();
        assert_eq!((merged.copied, merged.skipped.len()), (1, 5), "{merged:?}");
        let mut found: Vec<String> = walk(to.path());
        found.sort();
        assert_eq!(found, ["app-arch/bzip2/plain-1.gpkg.tar"]);
        // A link as the folder itself is not followed either.
        let linked = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(from.path(), linked.path().join("binpkgs")).unwrap();
        let to2 = tempfile::tempdir().unwrap();
        merge(&linked.path().join("binpkgs"), to2.path()).unwrap();
        assert!(walk(to2.path()).is_empty());
    }

    #[test]
    fn merge_new_takes_what_the_job_built_and_the_index() {
        let known = tempfile::tempdir().unwrap();
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        for dir in [known.path(), from.path()] {
            fs::create_dir_all(dir.join("app-arch/bzip2")).unwrap();
            fs::write(dir.join("app-arch/bzip2/bzip2-1.0.8-1.gpkg.tar"), b"seed").unwrap();
        }
        fs::write(known.path().join("Packages"), b"index 1").unwrap();
        fs::create_dir_all(from.path().join("dev-libs/jemalloc")).unwrap();
        fs::write(from.path().join("dev-libs/jemalloc/jemalloc-5.3.1-1.gpkg.tar"), b"new").unwrap();
        fs::write(from.path().join("Packages"), b"index 2").unwrap();
        fs::write(from.path().join("Packages.gz"), b"index 2 gz").unwrap();
        let kept = to.path().join("kept");
        let merged = merge_new(from.path(), known.path(), &kept).unwrap();
        assert_eq!(merged, Merged { copied: 3, skipped: vec![] });
        let mut found = walk(&kept);
        found.sort();
        // The seed is left out, and so is its folder.
        assert_eq!(found, ["Packages", "Packages.gz", "dev-libs/jemalloc/jemalloc-5.3.1-1.gpkg.tar"]);
        // Nothing built, nothing made.
        assert_eq!(merge_new(&to.path().join("absent"), known.path(), &to.path().join("none")).unwrap(), Merged::default());
        assert!(!to.path().join("none").exists());
    }

    /// The index names every package: it must not land before them, not even when the merge
    /// fails halfway.
    #[test]
    fn the_index_lands_after_the_packages() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        fs::create_dir_all(from.path().join("app-arch/bzip2")).unwrap();
        fs::write(from.path().join("app-arch/bzip2/bzip2-1.0.8-1.gpkg.tar"), b"pkg").unwrap();
        fs::write(from.path().join("Packages"), b"index 2").unwrap();
        fs::write(to.path().join("Packages"), b"index 1").unwrap();
        // A file where the category folder should go: the package cannot be placed.
        fs::write(to.path().join("app-arch"), b"in the way").unwrap();
        let e = merge(from.path(), to.path()).unwrap_err();
        assert!(matches!(&e, PkgdirError::Create { path, .. } if path.ends_with("app-arch/bzip2")), "{e:?}");
        assert_eq!(fs::read(to.path().join("Packages")).unwrap(), b"index 1");
    }

    fn walk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()).into_iter().map(|p| format!("{}/{p}", e.file_name().to_string_lossy())));
            } else {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out
    }
}
