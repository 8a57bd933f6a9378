//! Durable atomic writes: a reader sees the old file or the whole new one, never half, and
//! after a crash the new one is there only if it was complete.
//!
//! The recipe: write a temporary file in the same folder (a rename does not cross
//! filesystems), fsync it, rename it over the target, fsync the folder (the rename lives in
//! the folder's entry).
//!
//! A process killed mid-write leaves its temporary file behind. Writers whose targets are
//! spread over many folders (the results database's stores) keep their temporaries in one
//! staging folder of the same filesystem instead ([`AtomicFile::create_in`],
//! [`temp_path_in`]), which [`remove_orphans`] clears cheaply on the next start.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A failed durable write, naming the file it was about.
#[derive(Debug, thiserror::Error)]
#[error("{action} {}", path.display())]
pub struct AtomicError {
    /// What was being done ("create", "write", "sync", "rename to", ...).
    pub action: &'static str,
    /// The file or folder concerned.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

fn err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> AtomicError + 'a {
    move |source| AtomicError { action, path: path.to_path_buf(), source }
}

/// Writes `bytes` to `path` durably and atomically.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), AtomicError> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes).map_err(err("write", file.temp_path()))?;
    file.commit()
}

/// A temporary file beside a target; [`AtomicFile::commit`] puts it in place durably, and
/// dropping it uncommitted removes it.
#[derive(Debug)]
pub struct AtomicFile {
    file: Option<File>,
    temp: PathBuf,
    target: PathBuf,
}

impl AtomicFile {
    /// Creates the temporary file for `target` (in the same folder, hidden, unique to this
    /// process and call).
    pub fn create(target: &Path) -> Result<AtomicFile, AtomicError> {
        let temp = temp_path_for(target);
        // A new file, never through a link: the folder may be writable by someone else (the
        // VM's folder is qemu's), and a planted temp name must not redirect the write.
        let open = || {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new().write(true).create_new(true).custom_flags(nix::libc::O_NOFOLLOW).open(&temp)
        };
        let file = match open() {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // A leftover of a crashed writer (or a plant): remove the name itself, once.
                std::fs::remove_file(&temp).map_err(err("remove", &temp))?;
                open()
            }
            other => other,
        }
        .map_err(err("create", &temp))?;
        Ok(AtomicFile { file: Some(file), temp, target: target.to_path_buf() })
    }

    /// Creates the temporary file for `target` in the folder `staging` (which must be on
    /// the same filesystem as `target`, so that the rename stays atomic), where
    /// [`remove_orphans`] finds it if this process dies before committing.
    pub fn create_in(staging: &Path, target: &Path) -> Result<AtomicFile, AtomicError> {
        let temp = temp_path_in(staging, target);
        let file = File::create(&temp).map_err(err("create", &temp))?;
        Ok(AtomicFile { file: Some(file), temp, target: target.to_path_buf() })
    }

    /// The temporary file's path (for error messages, or a program that writes it itself).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// The temporary file, for `io::copy` from another `File` (which keeps the kernel's
    /// `copy_file_range` fast path).
    pub fn as_file_mut(&mut self) -> &mut File {
        self.file.as_mut().expect("present until commit, which consumes self")
    }

    /// fsyncs the data, renames it over the target and fsyncs the folder.
    pub fn commit(mut self) -> Result<(), AtomicError> {
        if let Some(file) = self.file.take() {
            file.sync_all().map_err(err("sync", &self.temp))?;
        }
        rename_durably(&self.temp, &self.target)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().map_or_else(|| Err(io::Error::other("already committed")), |f| f.write(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // Committed: the temporary name is gone already. Otherwise nothing half-written stays.
        let _ = fs::remove_file(&self.temp);
    }
}

/// Puts a complete file `from` (written by someone else, e.g. qemu) in place as `to`:
/// fsync `from`, rename, fsync the folder.
pub fn rename_durably(from: &Path, to: &Path) -> Result<(), AtomicError> {
    File::open(from).and_then(|f| f.sync_all()).map_err(err("sync", from))?;
    fs::rename(from, to).map_err(err("rename to", to))?;
    sync_dir(parent_of(to))
}

/// fsyncs a folder, so that entries created or renamed in it survive a crash. Filesystems
/// that cannot sync a folder (EINVAL: vboxsf, some FUSE ones) give what they can: that is
/// not an error, or a volunteer on one would lose every result.
pub fn sync_dir(dir: &Path) -> Result<(), AtomicError> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if matches!(e.raw_os_error(), Some(nix::libc::EINVAL | nix::libc::ENOTSUP)) => Ok(()),
        other => other.map_err(err("sync", dir)),
    }
}

/// Creates `dir` and its missing ancestors so that they survive a crash: the parent of each
/// folder it creates is fsynced (a file renamed into a new folder is lost with the folder's
/// own entry otherwise).
pub fn create_dir_all_durably(dir: &Path) -> Result<(), AtomicError> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = parent_of(dir);
    create_dir_all_durably(parent)?;
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(err("create", dir)(e)),
    }
}

/// [`write`] with the temporary file in `staging` (see [`AtomicFile::create_in`]).
pub fn write_in(staging: &Path, target: &Path, bytes: &[u8]) -> Result<(), AtomicError> {
    let mut file = AtomicFile::create_in(staging, target)?;
    file.write_all(bytes).map_err(err("write", file.temp_path()))?;
    file.commit()
}

/// [`write_in`] without the fsyncs: a reader finds no file or a whole one while the system
/// runs, but after a crash a file may be empty or short. Only for data every reader checks
/// (content named by its hash, as a cache's objects), where a fsync per file would be the
/// whole cost of writing thousands of small ones.
pub fn write_in_unsynced(staging: &Path, target: &Path, bytes: &[u8]) -> Result<(), AtomicError> {
    let mut file = AtomicFile::create_in(staging, target)?;
    file.write_all(bytes).map_err(err("write", file.temp_path()))?;
    drop(file.file.take());
    fs::rename(&file.temp, target).map_err(err("rename", target))
}

/// A fresh hidden name beside `target`: `.NAME.tmp-PID-N`.
pub fn temp_path_for(target: &Path) -> PathBuf {
    temp_path_in(parent_of(target), target)
}

/// A fresh hidden name for `target`'s temporary file in the folder `staging`:
/// `.NAME.tmp-PID-N`, the writer's pid in it for [`remove_orphans`].
pub fn temp_path_in(staging: &Path, target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    staging.join(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Removes the temporary files in `dir` (named as [`temp_path_in`] names them) that no live
/// writer owns: those whose pid is no running process, and any older than `max_age` (a pid
/// reused by an unrelated process). Files of other names are left alone. Best effort: a file
/// that cannot be removed is skipped; returns how many were removed. Assumes the writers that
/// share `dir` run on this host, in this pid namespace.
pub fn remove_orphans(dir: &Path, max_age: std::time::Duration) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let Some(pid) = temp_owner(&entry.file_name().to_string_lossy()) else { continue };
        let old = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok()).is_some_and(|age| age > max_age);
        if (old || !process_alive(pid)) && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The writer's pid in a temporary file's name `.NAME.tmp-PID-N`.
fn temp_owner(name: &str) -> Option<i32> {
    let rest = name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".tmp-")?;
    let (pid, n) = tail.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok().filter(|p| *p > 0)
}

fn process_alive(pid: i32) -> bool {
    // Signal 0 checks existence; EPERM means it exists under another user.
    !matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn write_replaces_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a.json");
        write(&target, b"old").unwrap();
        write(&target, b"new contents").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new contents");
        assert_eq!(names(dir.path()), ["a.json"]);
    }

    #[test]
    fn an_uncommitted_file_leaves_the_target_alone_and_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a");
        write(&target, b"kept").unwrap();
        {
            let mut f = AtomicFile::create(&target).unwrap();
            f.write_all(b"half").unwrap();
        }
        assert_eq!(fs::read(&target).unwrap(), b"kept");
        assert_eq!(names(dir.path()), ["a"]);
    }

    #[test]
    fn a_missing_folder_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = write(&dir.path().join("no/such/a"), b"x").unwrap_err();
        assert_eq!(e.action, "create");
        assert!(e.path.to_string_lossy().contains("no/such/.a.tmp-"), "{e}");
    }

    #[test]
    fn create_dir_all_durably_makes_every_missing_level() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("logs/ab");
        create_dir_all_durably(&deep).unwrap();
        create_dir_all_durably(&deep).unwrap();
        assert!(deep.is_dir());
        fs::write(dir.path().join("file"), b"").unwrap();
        assert_eq!(create_dir_all_durably(&dir.path().join("file/sub")).unwrap_err().action, "create");
    }

    #[test]
    fn orphans_of_dead_or_old_writers_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path();
        // A pid that is surely dead: a child that has been reaped.
        let mut child = crate::process::command("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let live = temp_path_in(staging, Path::new("logs/ab/abc.log.gz"));
        fs::write(&live, b"in flight").unwrap();
        let orphan = staging.join(format!(".abc.log.gz.tmp-{dead}-7"));
        fs::write(&orphan, b"left by a SIGKILL").unwrap();
        let stale = staging.join(format!(".q.tar.gz.tmp-{}-3", std::process::id()));
        fs::write(&stale, b"old").unwrap();
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        fs::File::options().write(true).open(&stale).unwrap().set_modified(hour_ago).unwrap();
        for other in ["notes.txt", ".hidden", ".x.tmp-abc-1", ".y.tmp-12"] {
            fs::write(staging.join(other), b"").unwrap();
        }
        assert_eq!(remove_orphans(staging, std::time::Duration::from_secs(600)), 2);
        let mut left = names(staging);
        left.retain(|n| n.contains(".tmp-") && !n.starts_with(".x") && !n.starts_with(".y"));
        assert_eq!(left, [live.file_name().unwrap().to_string_lossy()]);
        assert_eq!(names(staging).len(), 5);
    }

    #[test]
    fn a_file_staged_elsewhere_commits_to_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let (staging, target) = (dir.path().join("tmp"), dir.path().join("store/a"));
        fs::create_dir_all(&staging).unwrap();
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        write_in(&staging, &target, b"whole").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"whole");
        assert!(names(&staging).is_empty());
    }

    #[test]
    fn rename_durably_moves_a_file_written_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("m.tmp"), dir.path().join("m"));
        fs::write(&from, b"state").unwrap();
        rename_durably(&from, &to).unwrap();
        assert_eq!(names(dir.path()), ["m"]);
    }
}
