//! The sandbox's guest root as a folder of the host, shared by its tasks.
//!
//! BOINC ships files, not folders, so the sandbox flavour of the app version carries the
//! guest root as one tar (`rootfs.tar`, gzipped only on the wire: the client gunzips
//! `<gzipped_url>` downloads). The first task on a host unpacks it beside itself in the
//! project folder (`<physical name>.d/`); later tasks reuse that tree read-only (the sandbox
//! writes into an overlay in its slot). One tree per host and app version, not one per task.
//!
//! Or, when the workunit's `data.json` names one (issue 11, item 3), the guest root comes from
//! the project's CernVM-FS repository instead ([`from_repository`]): one tree per host and
//! base content (`cvmfs-base/base-<catalog hash>.d/` in the project folder), so updating the
//! base is a publication, not a new app version. The vm's root disk from the repository is
//! kept the same way, one folder per disk content (`base-disk-<content id>.d/rootfs.ext4`),
//! leased while a task's overlays are over it.
//!
//! Concurrency: `<name>.lock` is held shared while a task uses a tree (any number of tasks at
//! once) and exclusively only while one is made, so two tasks never make it twice and a tree
//! is only pruned (when its tar is gone, i.e. the client dropped that app version, or when no
//! task used that base for a week) while nobody holds it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use gah_util::untar::{self, Rules, UntarError};
use nix::fcntl::{Flock, FlockArg};

use crate::SAY;

/// Written last into a complete tree: which tar (size, mtime) or which base content it holds.
const STAMP: &str = ".gah-unpacked";

/// Shared locks on the trees this process uses (by name: the archive, or `base-<key>`);
/// released when it exits.
static LEASES: Mutex<Vec<(PathBuf, Flock<File>)>> = Mutex::new(Vec::new());

/// A step of getting the guest root's tree that failed.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The archive is missing or unreadable.
    #[error("guest root archive {}", path.display())]
    Archive {
        /// The archive.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The archive is a folder or some other non-file.
    #[error("guest root archive {} is not a file", path.display())]
    NotAFile {
        /// The archive.
        path: PathBuf,
    },
    /// The lock file could not be opened.
    #[error("open {}", path.display())]
    OpenLock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The lock could not be taken or changed.
    #[error("lock {}", path.display())]
    Lock {
        /// The tree whose lock it is (its archive, or `base-<key>`).
        path: PathBuf,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// The archive could not be unpacked.
    #[error("unpack {} (corrupt, or not a tar?)", path.display())]
    Unpack {
        /// The archive.
        path: PathBuf,
        /// The cause.
        #[source]
        source: UntarError,
    },
    /// A file or folder of the tree could not be written, renamed or removed.
    #[error("{action} {}", path.display())]
    Tree {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn tree_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Tree { action, path: path.to_path_buf(), source }
}

/// The unpacked tree of `archive` (a tar file), unpacking it first if needed; holds a
/// shared lease on it for the rest of the process.
pub fn unpacked(archive: &Path) -> Result<PathBuf, RootfsError> {
    let archive = std::path::absolute(archive).map_err(|source| RootfsError::Archive { path: archive.to_path_buf(), source })?;
    let meta = fs::metadata(&archive).map_err(|source| RootfsError::Archive { path: archive.clone(), source })?;
    if !meta.is_file() {
        return Err(RootfsError::NotAFile { path: archive });
    }
    let stamp = format!("{} {}\n", meta.size(), i128::from(meta.mtime_nsec()) + i128::from(meta.mtime()) * 1_000_000_000);
    let fill = |tmp: &Path| -> Result<(), RootfsError> {
        let started = std::time::Instant::now();
        tracing::info!(target: SAY, "unpacking the guest root {} (once per app version)", archive.display());
        let file = File::open(&archive).map_err(|source| RootfsError::Archive { path: archive.clone(), source })?;
        // A whole root: links and modes kept, no device or fifo nodes (the sandbox mounts its
        // own `/dev`, and an unprivileged client could not create them anyway).
        let done = untar::unpack(file, tmp, Rules::whole_root()).map_err(|source| RootfsError::Unpack { path: archive.clone(), source })?;
        tracing::debug!(files = done.files, bytes = done.bytes, skipped = done.skipped.len(), "guest root unpacked");
        tracing::info!(target: SAY, "guest root unpacked in {:.1} s", started.elapsed().as_secs_f64());
        Ok(())
    };
    let folder = archive.parent().unwrap_or(Path::new(".")).to_path_buf();
    prepared(&archive, &stamp, fill, || prune_dropped_archives(&folder, Some(&archive)))
}

/// The guest root read from the project's repository (issue 11, item 3): the tree for the
/// content `key` names (the hex hash of the base's catalog, or `disk-<content id>` for the
/// vm's root disk) in `dir`, written by `fill`
/// (into the empty folder it is given) if this host has no whole one yet; holds a shared
/// lease on it for the rest of the process. Trees of other content nobody uses are removed.
pub fn from_repository<E: From<RootfsError>>(dir: &Path, key: &str, fill: impl FnOnce(&Path) -> Result<(), E>) -> Result<PathBuf, E> {
    fs::create_dir_all(dir).map_err(tree_error("create", dir))?;
    let dir = std::path::absolute(dir).map_err(tree_error("find", dir))?;
    let name = dir.join(format!("{BASE_PREFIX}{key}"));
    // A host whose app version no longer carries a rootfs.tar makes no tar tree again, so
    // the trees of dropped archives in the project folder (beside `dir`) go here.
    let project = dir.parent().map(Path::to_path_buf);
    let prune_all = || {
        prune_bases(&name);
        if let Some(project) = &project {
            prune_dropped_archives(project, None);
        }
    };
    prepared(&name, &format!("{key}\n"), fill, prune_all)
}

/// What the trees of [`from_repository`] are called (`base-<key>.d`).
const BASE_PREFIX: &str = "base-";

/// The tree `<name>.d`, made with `fill` unless it holds `stamp` already, under the lock
/// `<name>.lock`: shared while a task uses the tree (many tasks at once), exclusive only
/// while it is made (then `prune` runs).
fn prepared<E: From<RootfsError>>(
    name: &Path,
    stamp: &str,
    fill: impl FnOnce(&Path) -> Result<(), E>,
    prune: impl FnOnce(),
) -> Result<PathBuf, E> {
    let tree = suffixed(name, ".d");
    // Already leased by this process: a second flock on a new descriptor would wait for our own.
    if LEASES.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|(a, _)| a == name) {
        return Ok(tree);
    }
    let lock_error = |source| RootfsError::Lock { path: name.to_owned(), source };
    let lock = Flock::lock(open_lock(name)?, FlockArg::LockShared).map_err(|(_, e)| lock_error(e))?;
    let complete = || fs::read_to_string(tree.join(STAMP)).ok().as_deref() == Some(stamp);
    let lock = if complete() {
        // The common case: whole, and other tasks may be using it too.
        lock
    } else {
        // Shared → exclusive is not atomic (another task may make the tree in between), so
        // the stamp is read again once exclusive.
        lock.relock(FlockArg::LockExclusive).map_err(lock_error)?;
        if !complete() {
            fill_fresh(&tree, stamp, fill)?;
        }
        lock.relock(FlockArg::LockShared).map_err(lock_error)?;
        lock
    };
    // On every use, not only when a tree is made: a host keeps using one tree for months
    // while the trees it used before wait to go. Under our lease (shared or exclusive) no
    // other task is making this tree, so its temp folders are debris; others' trees are
    // taken only with their own lock, never waited for.
    prune();
    // Its last use, which pruning goes by.
    let _ = lock.set_modified(std::time::SystemTime::now());
    LEASES.lock().unwrap_or_else(|e| e.into_inner()).push((name.to_owned(), lock));
    Ok(tree)
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn open_lock(archive: &Path) -> Result<File, RootfsError> {
    let path = suffixed(archive, ".lock");
    OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|source| RootfsError::OpenLock { path, source })
}

/// Fills a temp folder beside `tree`, stamps it, and swaps it in with a folder rename, so
/// another task finds no tree or a whole one; the temp folder goes whatever fails.
fn fill_fresh<E: From<RootfsError>>(tree: &Path, stamp: &str, fill: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
    let tmp = suffixed(tree, &format!(".tmp-{}", std::process::id()));
    remove_tree(&tmp)?;
    fs::create_dir_all(&tmp).map_err(tree_error("create", &tmp))?;
    let filled = fill(&tmp).and_then(|()| Ok(swap_in(&tmp, tree, stamp)?));
    if filled.is_err() {
        let _ = remove_tree(&tmp);
    }
    filled
}

fn swap_in(tmp: &Path, tree: &Path, stamp: &str) -> Result<(), RootfsError> {
    let stamp_file = tmp.join(STAMP);
    fs::write(&stamp_file, stamp).map_err(tree_error("write", &stamp_file))?;
    // The stamp says "complete": make the whole tree durable before it can be trusted (one
    // syncfs for its thousands of files), then the swap.
    let tmp_dir = fs::File::open(tmp).map_err(tree_error("open", tmp))?;
    nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&tmp_dir)).map_err(|e| tree_error("sync", tmp)(e.into()))?;
    remove_tree(tree)?;
    fs::rename(tmp, tree).map_err(tree_error("rename the filled tree to", tree))?;
    if let Some(parent) = tree.parent() {
        gah_util::atomic::sync_dir(parent).map_err(|e| tree_error("sync", parent)(e.source))?;
    }
    Ok(())
}

/// How long a base tree no task used is kept: workunits made before a base update still name
/// the old one for a while (and retries), and reading a base again costs a GB.
const BASE_KEPT_UNUSED: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// Removes, beside `current` (whose lock the caller holds), the base trees of
/// other content that no task has used for [`BASE_KEPT_UNUSED`] and no task holds, and temp
/// folders of crashed fills. Lock files stay (empty): removing one another task has open
/// would let a third make the same tree beside it.
fn prune_bases(current: &Path) {
    let folder = current.parent().unwrap_or(Path::new("."));
    let Ok(entries) = fs::read_dir(folder) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(BASE_PREFIX) else { continue };
        let Some((key, _)) = rest.split_once(".d") else { continue };
        let owner = folder.join(format!("{BASE_PREFIX}{key}"));
        if owner == current {
            if name.contains(".tmp-") {
                let _ = remove_tree(&entry.path());
            }
            continue;
        }
        let Ok(lock) = open_lock(&owner) else { continue };
        let unused = lock.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
        if !name.contains(".tmp-") && unused.is_none_or(|age| age < BASE_KEPT_UNUSED) {
            continue;
        }
        let Ok(_held) = Flock::lock(lock, FlockArg::LockExclusiveNonblock) else { continue };
        tracing::info!(tree = %entry.path().display(), "removing a guest root no task used for a week");
        let _ = remove_tree(&entry.path());
    }
}

/// Removes a tree even where the archive made folders read-only.
fn remove_tree(tree: &Path) -> Result<(), RootfsError> {
    gah_util::untrusted::remove_tree(tree).map_err(tree_error("remove", tree))
}

/// Removes, in `folder`, the trees and lock files of archives the client has deleted, and
/// temp folders of crashed unpacks, once no task holds them. `current` is the archive whose
/// lock the caller holds (its crashed unpacks go too).
fn prune_dropped_archives(folder: &Path, current: Option<&Path>) {
    let Ok(entries) = fs::read_dir(folder) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((stem, _)) = name.rsplit_once(".tar.d").filter(|(_, rest)| rest.is_empty() || rest.starts_with(".tmp-")) else { continue };
        let archive = folder.join(format!("{stem}.tar"));
        let crashed_unpack = name.contains(".tmp-");
        // Only complete trees of ours (stamped) count as orphans.
        let orphan = !archive.exists() && (crashed_unpack || path.join(STAMP).is_file());
        if !orphan && !crashed_unpack {
            continue;
        }
        if Some(archive.as_path()) == current {
            if crashed_unpack {
                let _ = remove_tree(&path);
            }
            continue;
        }
        // A crashed unpack's temp folder belongs to the archive's lock; an orphan's tree too.
        let Ok(lock) = open_lock(&archive) else { continue };
        let Ok(_held) = Flock::lock(lock, FlockArg::LockExclusiveNonblock) else { continue };
        if orphan {
            tracing::info!(tree = %path.display(), "removing the guest root of an app version the client dropped");
        }
        let _ = remove_tree(&path);
        if orphan {
            let _ = fs::remove_file(suffixed(&archive, ".lock"));
        }
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

    fn add(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, mode: u32, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_path(path).unwrap();
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    #[test]
    fn unpacks_once_and_reuses_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("rootfs-0123.tar");
        fs::write(
            &archive,
            tar_of(|b| {
                add(b, "bin/", tar::EntryType::Directory, 0o755, b"");
                add(b, "bin/sh", tar::EntryType::Regular, 0o755, b"#!");
                // Read-only folder with a file in it: must still unpack.
                add(b, "root/", tar::EntryType::Directory, 0o500, b"");
                add(b, "root/.profile", tar::EntryType::Regular, 0o644, b"x");
                add(b, "dev/null", tar::EntryType::Char, 0o666, b"");
            }),
        )
        .unwrap();
        let tree = unpacked(&archive).unwrap();
        assert_eq!(tree, dir.path().join("rootfs-0123.tar.d"));
        assert_eq!(fs::read(tree.join("bin/sh")).unwrap(), b"#!");
        assert_eq!(fs::read(tree.join("root/.profile")).unwrap(), b"x");
        assert!(!tree.join("dev/null").exists(), "device nodes are skipped");
        assert_eq!(fs::metadata(tree.join("root")).unwrap().permissions().mode() & 0o777, 0o500);
        // Another task's use (this one's lease dropped): no unpack, a marker file survives.
        fs::write(tree.join("bin/marker"), b"").unwrap();
        LEASES.lock().unwrap().retain(|(a, _)| *a != archive);
        assert_eq!(unpacked(&archive).unwrap(), tree);
        assert!(tree.join("bin/marker").exists());
        // A changed archive (another mtime) is unpacked afresh.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        File::options().write(true).open(&archive).unwrap().set_modified(later).unwrap();
        LEASES.lock().unwrap().retain(|(a, _)| *a != archive);
        unpacked(&archive).unwrap();
        assert!(!tree.join("bin/marker").exists());
    }

    fn base(dir: &Path, key: &str) -> Result<PathBuf, RootfsError> {
        from_repository(dir, key, |tmp: &Path| -> Result<(), RootfsError> {
            fs::write(tmp.join("sh"), key).unwrap();
            Ok(())
        })
    }

    fn drop_lease(dir: &Path, key: &str) {
        LEASES.lock().unwrap().retain(|(a, _)| *a != dir.join(format!("{BASE_PREFIX}{key}")));
    }

    #[test]
    fn another_tasks_lease_does_not_hold_up_a_task_of_the_same_tree() {
        let dir = tempfile::tempdir().unwrap();
        let bases = dir.path().join("bases");
        let tree = base(&bases, "aa").unwrap();
        drop_lease(&bases, "aa");
        // Another task uses the tree: its own descriptor, a shared lock.
        let other = Flock::lock(open_lock(&bases.join("base-aa")).unwrap(), FlockArg::LockShared).unwrap();
        let (done, got) = std::sync::mpsc::channel();
        let bases2 = bases.clone();
        std::thread::spawn(move || {
            let r = from_repository(&bases2, "aa", |_: &Path| -> Result<(), RootfsError> { panic!("made again") });
            let _ = done.send(r.map_err(|e| e.to_string()));
        });
        let r = got.recv_timeout(std::time::Duration::from_secs(10)).expect("waited for the other task's lease");
        assert_eq!(r.unwrap(), tree);
        drop(other);
    }

    #[test]
    fn a_base_is_pruned_only_after_a_week_unused_and_its_lock_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let bases = dir.path().join("bases");
        let recent = base(&bases, "aa").unwrap();
        drop_lease(&bases, "aa");
        let old = base(&bases, "bb").unwrap();
        drop_lease(&bases, "bb");
        let week_ago = std::time::SystemTime::now() - BASE_KEPT_UNUSED - std::time::Duration::from_secs(60);
        File::options().write(true).open(bases.join("base-bb.lock")).unwrap().set_modified(week_ago).unwrap();
        // A crashed fill of another base.
        fs::create_dir_all(bases.join("base-cc.d.tmp-999999")).unwrap();
        base(&bases, "dd").unwrap();
        assert!(recent.join("sh").is_file(), "used lately: kept");
        assert!(!old.exists(), "unused for a week: pruned");
        assert!(bases.join("base-bb.lock").exists(), "lock files stay");
        assert!(!bases.join("base-cc.d.tmp-999999").exists(), "debris of a crashed fill");
        assert_eq!(fs::read(bases.join("base-dd.d/sh")).unwrap(), b"dd");
    }

    #[test]
    fn a_fill_that_fails_leaves_no_temp_folder() {
        let dir = tempfile::tempdir().unwrap();
        let bases = dir.path().join("bases");
        let e = from_repository(&bases, "ee", |tmp: &Path| -> Result<(), RootfsError> {
            fs::write(tmp.join("half"), b"").unwrap();
            Err(RootfsError::NotAFile { path: tmp.to_owned() })
        });
        assert!(e.is_err());
        let left: Vec<_> = fs::read_dir(&bases).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["base-ee.lock"], "only the lock file");
    }

    #[test]
    fn a_corrupt_archive_is_named_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("rootfs-bad.tar");
        let mut bytes = tar_of(|b| add(b, "bin/sh", tar::EntryType::Regular, 0o755, &[7; 4000]));
        bytes.truncate(700);
        fs::write(&archive, bytes).unwrap();
        let err = gah_util::error_chain(&unpacked(&archive).unwrap_err());
        assert!(err.contains("rootfs-bad.tar"), "{err}");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 2, "only the archive and its lock file: {left:?}");
    }

    #[test]
    fn an_escaping_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("evil.tar");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &b"x"[..]).unwrap();
        fs::write(&archive, b.into_inner().unwrap()).unwrap();
        assert!(unpacked(&archive).is_err());
        assert!(!dir.path().join("escape").exists());
    }

    #[test]
    fn prunes_the_tree_of_a_dropped_app_version() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("rootfs-old.tar.d");
        fs::create_dir_all(old.join("ro")).unwrap();
        fs::write(old.join(STAMP), "1 1\n").unwrap();
        let not_ours = dir.path().join("other.tar.d");
        fs::create_dir_all(&not_ours).unwrap();
        fs::set_permissions(old.join("ro"), fs::Permissions::from_mode(0o500)).unwrap();
        let new = dir.path().join("rootfs-new.tar");
        fs::write(&new, tar_of(|b| add(b, "bin/sh", tar::EntryType::Regular, 0o755, b"#!"))).unwrap();
        unpacked(&new).unwrap();
        assert!(!old.exists(), "the orphaned tree is gone");
        assert!(not_ours.exists(), "an unstamped folder is not ours to remove");
        assert!(dir.path().join("rootfs-new.tar.d/bin/sh").exists());
    }

    #[test]
    fn a_base_in_use_prunes_the_tree_of_a_dropped_app_versions_archive() {
        // The project folder of a host that ran the rootfs.tar flavour, now given a base: the
        // client dropped the old version only after the base was made.
        let project = tempfile::tempdir().unwrap();
        base(&project.path().join("cvmfs-base"), "ff").unwrap();
        drop_lease(&project.path().join("cvmfs-base"), "ff");
        let old = project.path().join("rootfs-old.tar.d");
        fs::create_dir_all(&old).unwrap();
        fs::write(old.join(STAMP), "1 1\n").unwrap();
        let kept = project.path().join("rootfs-kept.tar");
        fs::write(&kept, b"").unwrap();
        fs::create_dir_all(project.path().join("rootfs-kept.tar.d")).unwrap();
        fs::write(project.path().join("rootfs-kept.tar.d").join(STAMP), "0 0\n").unwrap();
        base(&project.path().join("cvmfs-base"), "ff").unwrap();
        assert!(!old.exists(), "the tree of an archive the client dropped is gone");
        assert!(project.path().join("rootfs-kept.tar.d").exists(), "an archive still there keeps its tree");
    }
}
