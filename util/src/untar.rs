//! Unpacking a tar under explicit rules: which kinds of entry are allowed, how much may land.
//!
//! Every entry goes through `tar::Entry::unpack_in`, which refuses `..` and writing through a
//! symlink that leaves the destination; an entry it refuses is an error here, never skipped.
//! Ownership is never restored (an unprivileged caller could not, and root must not).

use std::io::Read;
use std::path::{Path, PathBuf};

/// What an unpack accepts.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Symlinks and hard links are unpacked (a whole root needs them); otherwise skipped.
    pub links: bool,
    /// Permissions and mtimes are kept (a root's `/usr/bin` must stay executable).
    pub preserve_metadata: bool,
    /// At most this many bytes of file data in all; past it the unpack fails.
    pub max_bytes: u64,
}

impl Rules {
    /// Workunit inputs and guest outputs: regular files and folders only; links, devices and
    /// fifos are skipped (and counted), at most `max_bytes`.
    pub fn plain_files(max_bytes: u64) -> Rules {
        Rules { links: false, preserve_metadata: false, max_bytes }
    }

    /// A whole root file system: links and modes kept; device and fifo nodes skipped (the
    /// sandbox mounts its own `/dev`, and an unprivileged client could not make them anyway).
    pub fn whole_root() -> Rules {
        Rules { links: true, preserve_metadata: true, max_bytes: u64::MAX }
    }
}

/// What an unpack did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// Regular files written.
    pub files: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// Entries the rules skipped, by path.
    pub skipped: Vec<PathBuf>,
}

/// An archive that broke the rules or could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum UntarError {
    /// The archive could not be read (corrupt, or not a tar).
    #[error("read the archive")]
    Read(#[source] std::io::Error),
    /// An entry could not be written under the destination.
    #[error("unpack {}", entry.display())]
    Write {
        /// The entry's path in the archive.
        entry: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An entry would land outside the destination.
    #[error("entry {} would land outside the destination", entry.display())]
    Escape {
        /// The entry's path in the archive.
        entry: PathBuf,
    },
    /// The files add up to more than the rules allow.
    #[error("more than {max_bytes} bytes of files (at {})", entry.display())]
    TooLarge {
        /// The limit.
        max_bytes: u64,
        /// The entry that crossed it.
        entry: PathBuf,
    },
}

/// Unpacks the tar stream `reader` into the existing folder `into` under `rules`.
pub fn unpack(reader: impl Read, into: &Path, rules: Rules) -> Result<Unpacked, UntarError> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(rules.preserve_metadata);
    archive.set_preserve_mtime(rules.preserve_metadata);
    archive.set_preserve_ownerships(false);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let mut done = Unpacked::default();
    // Folders last (as `Archive::unpack` does), so a read-only folder is filled first.
    let mut folders = Vec::new();
    for entry in archive.entries().map_err(UntarError::Read)? {
        let mut entry = entry.map_err(UntarError::Read)?;
        let path = entry.path().map_err(UntarError::Read)?.into_owned();
        let kind = entry.header().entry_type();
        // Contiguous and GNU sparse entries are regular files too (tar unpacks them as such).
        let is_file = kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse();
        let allowed = is_file || kind.is_dir() || (rules.links && (kind.is_symlink() || kind.is_hard_link()));
        if !allowed {
            done.skipped.push(path);
            continue;
        }
        if kind.is_dir() {
            folders.push(entry);
            continue;
        }
        if is_file {
            done.bytes = done.bytes.saturating_add(entry.size());
            if done.bytes > rules.max_bytes {
                return Err(UntarError::TooLarge { max_bytes: rules.max_bytes, entry: path });
            }
            done.files += 1;
        }
        put(&mut entry, into, path)?;
    }
    // Deepest first, so a parent's mode is set after its children are created.
    folders.sort_by_key(|d| std::cmp::Reverse(d.path().map(|p| p.components().count()).unwrap_or(0)));
    for mut folder in folders {
        let path = folder.path().map_err(UntarError::Read)?.into_owned();
        put(&mut folder, into, path)?;
    }
    Ok(done)
}

fn put<R: Read>(entry: &mut tar::Entry<'_, R>, into: &Path, path: PathBuf) -> Result<(), UntarError> {
    match entry.unpack_in(into) {
        Ok(true) => Ok(()),
        Ok(false) => Err(UntarError::Escape { entry: path }),
        Err(source) => Err(UntarError::Write { entry: path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o4755);
        b.append_data(&mut h, path, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, target: &str) {
        let mut h = header(kind, 0, 0o777);
        b.append_link(&mut h, path, target).unwrap();
    }

    #[test]
    fn plain_files_skip_links_devices_and_fifos() {
        let data = tar_of(|b| {
            file(b, "a/b.txt", b"hello");
            link(b, tar::EntryType::Symlink, "a/shadow", "/etc/shadow");
            link(b, tar::EntryType::Link, "a/hard", "a/b.txt");
            let mut fifo = header(tar::EntryType::Fifo, 0, 0o644);
            b.append_data(&mut fifo, "a/fifo", std::io::empty()).unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let done = unpack(&data[..], dir.path(), Rules::plain_files(1 << 20)).unwrap();
        assert_eq!((done.files, done.bytes, done.skipped.len()), (1, 5, 3));
        assert!(!dir.path().join("a/shadow").exists() && dir.path().join("a/shadow").symlink_metadata().is_err());
        assert!(dir.path().join("a/fifo").symlink_metadata().is_err());
        // No setuid: plain files keep only the permission bits.
        assert_eq!(std::fs::metadata(dir.path().join("a/b.txt")).unwrap().permissions().mode() & 0o7000, 0);
    }

    #[test]
    fn a_whole_root_keeps_links_and_modes() {
        let data = tar_of(|b| {
            file(b, "usr/bin/tool", b"#!/bin/sh\n");
            link(b, tar::EntryType::Symlink, "bin", "usr/bin");
        });
        let dir = tempfile::tempdir().unwrap();
        unpack(&data[..], dir.path(), Rules::whole_root()).unwrap();
        assert!(dir.path().join("bin").symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(std::fs::metadata(dir.path().join("usr/bin/tool")).unwrap().permissions().mode() & 0o7777, 0o4755);
    }

    #[test]
    fn escapes_and_writes_through_links_are_errors() {
        let through_link = tar_of(|b| {
            link(b, tar::EntryType::Symlink, "out", "/tmp");
            file(b, "out/planted", b"x");
        });
        let dir = tempfile::tempdir().unwrap();
        let e = unpack(&through_link[..], dir.path(), Rules::whole_root()).unwrap_err();
        assert!(matches!(e, UntarError::Escape { .. } | UntarError::Write { .. }), "{e:?}");
        assert!(!Path::new("/tmp/planted").exists());
    }

    #[test]
    fn the_byte_cap_holds() {
        let data = tar_of(|b| {
            file(b, "one", &[0; 600]);
            file(b, "two", &[0; 600]);
        });
        let dir = tempfile::tempdir().unwrap();
        let e = unpack(&data[..], dir.path(), Rules::plain_files(1000)).unwrap_err();
        assert!(matches!(&e, UntarError::TooLarge { entry, .. } if entry == Path::new("two")), "{e:?}");
    }

    #[test]
    fn garbage_is_a_read_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = unpack(&[7u8; 1024][..], dir.path(), Rules::whole_root()).unwrap_err();
        assert!(matches!(e, UntarError::Read(_)), "{e:?}");
    }
}
