//! Binary package folders (Portage's PKGDIR): the one way they are copied between the host's
//! cache and a job.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use gah_util::atomic::{AtomicError, AtomicFile};

/// A step of [`merge`] that failed.
#[derive(Debug, thiserror::Error)]
pub enum BinpkgsError {
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
pub fn merge(from: &Path, to: &Path) -> Result<(), BinpkgsError> {
    if !from.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(to).map_err(|source| BinpkgsError::Create { path: to.to_path_buf(), source })?;
    let read = |source| BinpkgsError::Read { path: from.to_path_buf(), source };
    for entry in fs::read_dir(from).map_err(read)? {
        let entry = entry.map_err(read)?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(read)?.is_dir() {
            merge(&entry.path(), &target)?;
        } else if entry.file_name() == "Packages" || !target.exists() {
            let file = AtomicFile::create(&target)?;
            // fs::copy keeps the kernel's fast paths (copy_file_range, reflinks).
            fs::copy(entry.path(), file.temp_path()).map_err(|source| BinpkgsError::Copy { from: entry.path(), source })?;
            file.commit()?;
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
}
