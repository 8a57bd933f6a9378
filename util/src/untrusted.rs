//! Reading what an untrusted party left in a folder (the guest's `/gah/out`): regular files
//! only, opened beneath the folder without following any link, never blocking, with a size
//! cap, and read through the descriptor that was checked, never again by path.
//!
//! A hostile guest can leave `outcome.json -> /etc/shadow`, a FIFO named `build.log` (an
//! `open` for reading blocks until a writer comes, which is never), a socket, a hard link to
//! a file it could not read itself, or a tree of links. Each is refused here with a typed
//! error that names the file.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

/// A file that is not safe to read, or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedError {
    /// The name is not a plain relative path (`..`, absolute, empty).
    #[error("{}: not a plain relative name", name.display())]
    BadName {
        /// The name asked for.
        name: PathBuf,
    },
    /// It is a link, or a path through one.
    #[error("{}: a symbolic link (not followed)", name.display())]
    Link {
        /// The name asked for.
        name: PathBuf,
    },
    /// It is not a regular file (a FIFO, socket, device or folder).
    #[error("{}: not a regular file ({kind})", name.display())]
    NotRegular {
        /// The name asked for.
        name: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// It has other names (a hard link): it may be somebody else's file.
    #[error("{}: a hard link ({links} names)", name.display())]
    HardLink {
        /// The name asked for.
        name: PathBuf,
        /// Its link count.
        links: u64,
    },
    /// It is larger than allowed.
    #[error("{}: larger than {max_bytes} bytes", name.display())]
    TooLarge {
        /// The name asked for.
        name: PathBuf,
        /// The cap.
        max_bytes: u64,
    },
    /// It is not there.
    #[error("{}: missing", name.display())]
    Missing {
        /// The name asked for.
        name: PathBuf,
    },
    /// Opening or reading failed otherwise.
    #[error("{}", name.display())]
    Io {
        /// The name asked for.
        name: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl UntrustedError {
    /// True when the file simply is not there (an optional output).
    pub fn is_missing(&self) -> bool {
        matches!(self, UntrustedError::Missing { .. })
    }
}

/// Opens the regular file `name` beneath the folder `dir` for reading, refusing links on the
/// way, non-regular files and hard links, without blocking. The folder itself is the
/// caller's (trusted); everything below it is not.
pub fn open_beneath(dir: &Path, name: &Path) -> Result<File, UntrustedError> {
    let err = |source: io::Error| UntrustedError::Io { name: name.to_path_buf(), source };
    if name.as_os_str().is_empty() || !name.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(UntrustedError::BadName { name: name.to_path_buf() });
    }
    let dir_fd = File::open(dir).map_err(err)?;
    // O_PATH: nothing is opened for IO yet, so a FIFO or device never sees an open.
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let path_fd = match nix::fcntl::openat2(dir_fd.as_raw_fd(), name, how) {
        // SAFETY: openat2 returned a new descriptor that nothing else owns.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(Errno::ENOENT) => return Err(UntrustedError::Missing { name: name.to_path_buf() }),
        // ELOOP: a link on the way (or the last component, with O_NOFOLLOW|O_PATH it is
        // opened as the link itself: caught by the type check below). EXDEV: it escaped.
        Err(Errno::ELOOP | Errno::EXDEV) => return Err(UntrustedError::Link { name: name.to_path_buf() }),
        Err(Errno::ENOSYS) => walk_nofollow(&dir_fd, name)?,
        Err(e) => return Err(err(e.into())),
    };
    let meta = File::from(path_fd.try_clone().map_err(err)?).metadata().map_err(err)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(UntrustedError::Link { name: name.to_path_buf() });
    }
    if !kind.is_file() {
        let kind = if kind.is_dir() {
            "folder"
        } else if kind.is_fifo() {
            "fifo"
        } else if kind.is_socket() {
            "socket"
        } else {
            "device"
        };
        return Err(UntrustedError::NotRegular { name: name.to_path_buf(), kind });
    }
    if meta.nlink() > 1 {
        return Err(UntrustedError::HardLink { name: name.to_path_buf(), links: meta.nlink() });
    }
    // Reopen the very inode that was checked for reading: the guest cannot swap it in between.
    let reopen = format!("/proc/self/fd/{}", path_fd.as_raw_fd());
    File::options().read(true).custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY).open(reopen).map_err(err)
}

/// Kernels before 5.6 lack openat2: walk one component at a time with O_NOFOLLOW.
fn walk_nofollow(dir: &File, name: &Path) -> Result<OwnedFd, UntrustedError> {
    let mut current: OwnedFd = dir.try_clone().map_err(|source| UntrustedError::Io { name: name.to_path_buf(), source })?.into();
    let components: Vec<_> = name.components().collect();
    for (i, component) in components.iter().enumerate() {
        let last = i + 1 == components.len();
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | if last { OFlag::empty() } else { OFlag::O_DIRECTORY };
        match nix::fcntl::openat(Some(current.as_raw_fd()), component.as_os_str(), flags, nix::sys::stat::Mode::empty()) {
            // SAFETY: openat returned a new descriptor that nothing else owns.
            Ok(fd) => current = unsafe { OwnedFd::from_raw_fd(fd) },
            Err(Errno::ENOENT) => return Err(UntrustedError::Missing { name: name.to_path_buf() }),
            Err(Errno::ELOOP | Errno::ENOTDIR) => return Err(UntrustedError::Link { name: name.to_path_buf() }),
            Err(e) => return Err(UntrustedError::Io { name: name.to_path_buf(), source: e.into() }),
        }
    }
    Ok(current)
}

/// Reads the regular file `name` beneath `dir` (see [`open_beneath`]), at most `max_bytes`.
pub fn read_beneath(dir: &Path, name: &Path, max_bytes: u64) -> Result<Vec<u8>, UntrustedError> {
    let file = open_beneath(dir, name)?;
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| UntrustedError::Io { name: name.to_path_buf(), source })?;
    if bytes.len() as u64 > max_bytes {
        return Err(UntrustedError::TooLarge { name: name.to_path_buf(), max_bytes });
    }
    Ok(bytes)
}

/// The last `max_bytes` of the file at `path` (empty if it cannot be read): for logs a guest
/// writes (its console, its stderr), which it can make as large as its disk allows.
pub fn read_tail(path: &Path, max_bytes: u64) -> Vec<u8> {
    use std::io::{Seek, SeekFrom};
    let Ok(mut file) = File::open(path) else { return Vec::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if file.seek(SeekFrom::Start(len.saturating_sub(max_bytes))).is_err() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    let _ = file.take(max_bytes).read_to_end(&mut bytes);
    bytes
}

/// Lines from a stream a guest writes (a pipe, or a file still growing), each at most `max`
/// bytes: a longer line is dropped whole, so a line that never ends cannot grow our memory.
/// A line not yet ended is kept for the next call.
pub struct LineReader<R> {
    inner: R,
    partial: Vec<u8>,
    overlong: bool,
    max: usize,
}

impl<R: io::BufRead> LineReader<R> {
    /// Reads `inner` in lines of at most `max` bytes.
    pub fn new(inner: R, max: usize) -> LineReader<R> {
        LineReader { inner, partial: Vec::new(), overlong: false, max }
    }

    /// The next whole line (without its newline, lossily UTF-8), or `None` when none is
    /// available now: the end of a pipe, or no more of a growing file yet.
    pub fn next_line(&mut self) -> Option<String> {
        loop {
            let (line, used) = {
                let buf = match self.inner.fill_buf() {
                    Ok(buf) if !buf.is_empty() => buf,
                    _ => return None,
                };
                match buf.iter().position(|b| *b == b'\n') {
                    Some(end) => {
                        let fits = !self.overlong && self.partial.len() + end <= self.max;
                        let line = fits.then(|| {
                            let mut line = std::mem::take(&mut self.partial);
                            line.extend_from_slice(&buf[..end]);
                            String::from_utf8_lossy(&line).into_owned()
                        });
                        self.partial.clear();
                        self.overlong = false;
                        (line, end + 1)
                    }
                    None => {
                        if self.overlong || self.partial.len() + buf.len() > self.max {
                            self.overlong = true;
                            self.partial.clear();
                        } else {
                            self.partial.extend_from_slice(buf);
                        }
                        (None, buf.len())
                    }
                }
            };
            self.inner.consume(used);
            if line.is_some() {
                return line;
            }
        }
    }
}

/// Removes a folder a guest wrote into, whatever modes it left (a folder of mode 000 stops
/// `remove_dir_all`; overlayfs leaves one in its work folder). Links are removed, never
/// followed.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            open_up(path);
            fs::remove_dir_all(path)
        }
    }
}

/// Makes every folder under `dir` (itself included) searchable and writable by its owner.
fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        return;
    }
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            open_up(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn read(dir: &Path, name: &str) -> Result<Vec<u8>, UntrustedError> {
        read_beneath(dir, Path::new(name), 1 << 20)
    }

    #[test]
    fn a_plain_file_reads() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/outcome.json"), b"{}").unwrap();
        assert_eq!(read(dir.path(), "sub/outcome.json").unwrap(), b"{}");
        assert!(read(dir.path(), "absent").unwrap_err().is_missing());
    }

    #[test]
    fn links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = tempfile::NamedTempFile::new().unwrap();
        fs::write(secret.path(), b"host secret").unwrap();
        symlink(secret.path(), dir.path().join("emerge-info.txt")).unwrap();
        symlink("/", dir.path().join("root")).unwrap();
        fs::create_dir(dir.path().join("real")).unwrap();
        fs::write(dir.path().join("real/x"), b"x").unwrap();
        symlink("real", dir.path().join("via")).unwrap();
        for name in ["emerge-info.txt", "root/etc/passwd", "via/x"] {
            let e = read(dir.path(), name).unwrap_err();
            assert!(matches!(e, UntrustedError::Link { .. }), "{name}: {e:?}");
        }
    }

    #[test]
    fn escapes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["../x", "/etc/passwd", ""] {
            assert!(matches!(read(dir.path(), name).unwrap_err(), UntrustedError::BadName { .. }), "{name}");
        }
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&dir.path().join("build.log"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = read(dir.path(), "build.log").unwrap_err();
        assert!(matches!(e, UntrustedError::NotRegular { kind: "fifo", .. }), "{e:?}");
        fs::create_dir(dir.path().join("d")).unwrap();
        assert!(matches!(read(dir.path(), "d").unwrap_err(), UntrustedError::NotRegular { kind: "folder", .. }));
    }

    #[test]
    fn hard_links_and_oversize_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), b"0123456789").unwrap();
        fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        assert!(matches!(read(dir.path(), "b").unwrap_err(), UntrustedError::HardLink { links: 2, .. }));
        fs::write(dir.path().join("big"), b"0123456789").unwrap();
        let e = read_beneath(dir.path(), Path::new("big"), 9).unwrap_err();
        assert!(matches!(e, UntrustedError::TooLarge { max_bytes: 9, .. }), "{e:?}");
        assert_eq!(read_beneath(dir.path(), Path::new("big"), 10).unwrap().len(), 10);
    }

    #[test]
    fn lines_are_bounded_and_partial_lines_wait() {
        let data: Vec<u8> = [b"short\n".as_slice(), &[b'x'; 100], b"\nok\nhalf"].concat();
        let mut lines = LineReader::new(io::BufReader::with_capacity(8, &data[..]), 10);
        assert_eq!(lines.next_line().as_deref(), Some("short"));
        // The 100-byte line is dropped whole; the next one still reads.
        assert_eq!(lines.next_line().as_deref(), Some("ok"));
        assert_eq!(lines.next_line(), None);
        assert_eq!(lines.partial, b"half");
    }

    #[test]
    fn read_tail_keeps_the_end() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("console"), b"0123456789").unwrap();
        assert_eq!(read_tail(&dir.path().join("console"), 4), b"6789");
        assert_eq!(read_tail(&dir.path().join("console"), 100), b"0123456789");
        assert!(read_tail(&dir.path().join("absent"), 4).is_empty());
    }

    #[test]
    fn the_fallback_walk_refuses_links_too() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("real")).unwrap();
        fs::write(dir.path().join("real/x"), b"x").unwrap();
        symlink("real", dir.path().join("via")).unwrap();
        let d = File::open(dir.path()).unwrap();
        assert!(walk_nofollow(&d, Path::new("real/x")).is_ok());
        assert!(matches!(walk_nofollow(&d, Path::new("via/x")).unwrap_err(), UntrustedError::Link { .. }));
        assert!(walk_nofollow(&d, Path::new("nope")).unwrap_err().is_missing());
    }

    #[test]
    fn a_tree_with_closed_folders_is_removed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("slot");
        fs::create_dir_all(tree.join("work/work/deep")).unwrap();
        fs::write(tree.join("work/work/deep/file"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", tree.join("link")).unwrap();
        fs::set_permissions(tree.join("work/work/deep"), fs::Permissions::from_mode(0o000)).unwrap();
        fs::set_permissions(tree.join("work/work"), fs::Permissions::from_mode(0o000)).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert!(Path::new("/etc").is_dir(), "the link was followed");
    }
}
