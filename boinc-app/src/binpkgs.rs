//! Binary package folders (Portage's PKGDIR): the one way they are copied between the host's
//! cache and a job.

use std::fs;
use std::path::Path;

/// Adds what `from` has and `to` lacks. Packages are immutable once written, so existing
/// ones are kept; the `Packages` index changes with every build and is replaced. Each file
/// lands through a rename, so a reader never sees half of one.
pub fn merge(from: &Path, to: &Path) -> anyhow::Result<()> {
    if !from.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            merge(&entry.path(), &target)?;
        } else if entry.file_name() == "Packages" || !target.exists() {
            let tmp = target.with_extension("gah-tmp");
            fs::copy(entry.path(), &tmp)?;
            fs::rename(&tmp, &target)?;
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
