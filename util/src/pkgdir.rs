//! Binary package folders (Portage's PKGDIR): the one way they are copied between the host's
//! cache and a job, on the host (gah-app) and in the guest (gah-agent) alike.

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
/// ones are kept; the `Packages` index changes with every build and is replaced. Each file
/// lands durably through a rename, so a reader never sees half of one.
///
/// `from` may be what a guest left: only real folders and regular files are taken, each
/// opened beneath `from` without following links (`gah_util::untrusted`); links, FIFOs,
/// devices, sockets and hard links are skipped (and listed in [`Merged::skipped`]), never
/// copied.
pub fn merge(from: &Path, to: &Path) -> Result<Merged, PkgdirError> {
    let mut merged = Merged::default();
    match fs::symlink_metadata(from) {
        Ok(meta) if meta.is_dir() => merge_below(from, Path::new(""), to, &mut merged)?,
        Ok(_) => merged.skipped.push(format!("{}: not a real folder", from.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(PkgdirError::Read { path: from.to_path_buf(), source }),
    }
    Ok(merged)
}

fn merge_below(root: &Path, relative: &Path, to: &Path, merged: &mut Merged) -> Result<(), PkgdirError> {
    fs::create_dir_all(to).map_err(|source| PkgdirError::Create { path: to.to_path_buf(), source })?;
    let dir = root.join(relative);
    let read = |source| PkgdirError::Read { path: dir.clone(), source };
    for entry in fs::read_dir(&dir).map_err(read)? {
        let entry = entry.map_err(read)?;
        let (name, target) = (relative.join(entry.file_name()), to.join(entry.file_name()));
        // DirEntry::file_type does not follow links.
        let kind = entry.file_type().map_err(read)?;
        if kind.is_dir() {
            merge_below(root, &name, &target, merged)?;
        } else if entry.file_name() == "Packages" || !target.exists() {
            let mut source = match open_beneath(root, &name) {
                Ok(file) => file,
                Err(e) if e.is_missing() => continue,
                Err(UntrustedError::Io { source, .. }) => return Err(PkgdirError::Copy { from: root.join(&name), source }),
                Err(refused) => {
                    merged.skipped.push(crate::error_chain(&refused));
                    continue;
                }
            };
            let mut file = AtomicFile::create(&target)?;
            io::copy(&mut source, file.as_file_mut()).map_err(|source| PkgdirError::Copy { from: root.join(&name), source })?;
            file.commit()?;
            merged.copied += 1;
        }
    }
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
