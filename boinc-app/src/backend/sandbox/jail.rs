//! The jail: what `gah-app __sandbox-init SPEC` does, in a fresh single-threaded process.
//!
//! Modelled on Firecracker's jailer, it builds the guest's world in steps, each failure
//! naming its step (on stderr, which the backend shows):
//!
//! 1. join the job's cgroups, before anything forks;
//! 2. the *outer* namespaces (mount, pid, ipc, uts, network: only a down `lo`). An
//!    unprivileged caller first needs a user namespace of its own (its id as 0); root needs
//!    none;
//! 3. the pid namespace's PID 1 (non-dumpable, so nothing in the guest can ptrace it) mounts
//!    the guest root: an overlay over the image (idmapped onto the guest's id range when
//!    root), `/gah/in` parts as read-only overlays, `/gah/out` in the upper layer, a fresh `/proc` with `/proc/sys`
//!    and friends read-only and kernel files masked, a minimal `/dev`; then `pivot_root`;
//! 4. resource limits (core, file size, open files);
//! 5. the *guest* namespace: the agent's process unshares a user and mount namespace whose
//!    root is an unprivileged host id (a dedicated range when `gah-app` is root, the caller
//!    otherwise). Every mount of step 3 is locked in it: read-only stays read-only and
//!    nothing can be unmounted to look beneath;
//! 6. `no_new_privs`, the seccomp filter ([`super::seccomp`]), the process limit, a clean
//!    environment, and `exec` of the agent;
//! 7. PID 1 reaps, watches the disk the guest writes (and its memory when no cgroup caps
//!    it), and when the agent exits kills whatever is left in the namespace.
//!
//! Every process in the chain has a parent-death signal, so killing `gah-app` kills the
//! sandbox.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::fmt::Display;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{AtFlags, OFlag};
use nix::libc;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Gid, Pid, Uid};
use serde::{Deserialize, Serialize};

use super::seccomp;
use crate::backend::{Limit, GUEST_ID_BASE};

/// Exit code of the helper when setting up the sandbox failed (the step is on stderr).
pub const SETUP_FAILED: i32 = 125;

/// Exit code of the helper when the guest passed a limit and was killed; the limit is on
/// stderr as a `gah sandbox: limit <name>: <detail>` line.
pub const LIMIT_EXCEEDED: i32 = 124;

/// Where guest ids live on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum GuestIds {
    /// `gah-app` runs as root: guest ids `0..count` are host ids `base..base + count`, owned
    /// by no one on the host; the guest root is idmapped onto them.
    Range { base: u32, count: u32 },
    /// `gah-app` runs unprivileged (as under BOINC): guest root is the caller's own id and no
    /// other id exists. The guest root tree must be the caller's (unpacked by it).
    Caller,
}

impl GuestIds {
    /// The ids for a `gah-app` running with `euid`: a dedicated range for root.
    pub fn for_euid(euid: u32) -> GuestIds {
        if euid == 0 {
            GuestIds::Range { base: GUEST_ID_BASE, count: GUEST_ID_COUNT }
        } else {
            GuestIds::Caller
        }
    }

    /// The host uid/gid that guest root is.
    pub fn host_root(self) -> Option<u32> {
        match self {
            GuestIds::Range { base, .. } => Some(base),
            GuestIds::Caller => None,
        }
    }
}

/// Ids a guest has when `gah-app` is root: the usual 16-bit range Portage's users live in.
pub const GUEST_ID_COUNT: u32 = 65536;

/// One read-only input folder of the guest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Host folder.
    pub source: PathBuf,
    /// Absolute path inside the sandbox.
    pub target: PathBuf,
}

/// Everything the helper needs; written by the backend as JSON into the slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    /// The guest root, never written (overlay lower layer).
    pub lower: PathBuf,
    /// The job's scratch folder: `upper/`, `work/`, `root/` go here.
    pub scratch: PathBuf,
    /// Read-only inputs, mounted in order (a later one may sit inside an earlier one).
    pub inputs: Vec<Input>,
    /// Folders the guest writes its results into (`/gah/out`): made in the overlay's upper
    /// layer, owned by guest root; the backend takes them from there once the guest is gone.
    pub outputs: Vec<PathBuf>,
    /// The program and its arguments, as seen inside the sandbox.
    pub argv: Vec<String>,
    /// The whole environment of the program.
    pub env: Vec<(String, String)>,
    /// The cgroup folders (one per v1 controller, or one v2 folder) to join first.
    pub cgroups: Vec<PathBuf>,
    /// Where guest ids live on the host.
    pub ids: GuestIds,
    /// Largest file the guest may write, in bytes.
    pub max_file_bytes: u64,
    /// Most bytes the guest may write in all (its overlay's upper layer and `/gah/out`).
    pub max_disk_bytes: u64,
    /// Most resident memory of all guest processes together, watched by PID 1; `None` when
    /// a cgroup caps it.
    pub watch_memory_bytes: Option<u64>,
    /// Most processes of the guest (RLIMIT_NPROC, counted in the guest's own namespace).
    pub max_processes: u64,
    /// The backend passed [`REPORT_FD`] for the jail's reports.
    #[serde(default)]
    pub report_fd: bool,
    /// Test double: drop every capability right after creating the user namespace, as
    /// Ubuntu's `apparmor_restrict_unprivileged_userns` does (see the backend's probe).
    #[serde(default)]
    pub simulate_userns_without_caps: bool,
}

/// A sandbox setup step that failed, with the path involved and the OS error (the source,
/// printed after the step by [`gah_util::error_chain`] or `{:#}`).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("step 1, join cgroup {}", path.display())]
    Cgroup { path: PathBuf, source: io::Error },
    #[error("step 2, {what}")]
    UserNamespace { what: &'static str, source: nix::Error },
    #[error("step 2, write {}", path.display())]
    IdMap { path: PathBuf, source: io::Error },
    #[error("step 2, unshare namespaces")]
    Unshare(#[source] nix::Error),
    #[error("step 3, {what} {}", path.display())]
    Mount { what: &'static str, path: PathBuf, source: nix::Error },
    #[error("step 3, prepare {}", path.display())]
    Prepare { path: PathBuf, source: io::Error },
    #[error("step 3, pivot_root into {}", path.display())]
    Pivot { path: PathBuf, source: nix::Error },
    #[error("step 4, set resource limits")]
    Limits(#[source] nix::Error),
    #[error("step 5, {what}")]
    GuestNamespace { what: &'static str, source: nix::Error },
    #[error("step 6, {what}")]
    Spawn { what: &'static str, source: nix::Error },
    #[error("step 6, seccomp filter")]
    Filter(#[from] seccomp::FilterError),
}

/// The descriptor the backend hands the helper for the jail's own reports (setup failures,
/// limits), apart from stderr, which the guest shares and could forge lines on.
pub const REPORT_FD: i32 = 3;

/// Whether [`REPORT_FD`] is the report channel (set once at the start of [`enter`]).
static REPORT_TO_FD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One line of the jail's report channel: written by the helper, read by the backend.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// A setup step failed (the step and its cause).
    SetupFailed(String),
    /// PID 1 ended the guest past one of its limits.
    LimitExceeded { limit: Limit, detail: String },
}

impl Report {
    const PREFIX: &'static str = "gah sandbox: ";

    /// The report a line says, if it is one.
    pub fn parse(line: &str) -> Option<Report> {
        let rest = line.strip_prefix(Self::PREFIX)?;
        let limit =
            rest.strip_prefix("limit ").and_then(|l| l.split_once(": ")).and_then(|(name, detail)| Some((Limit::parse(name)?, detail)));
        Some(match limit {
            Some((limit, detail)) => Report::LimitExceeded { limit, detail: detail.to_owned() },
            None => Report::SetupFailed(rest.to_owned()),
        })
    }
}

impl Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Report::SetupFailed(what) => write!(f, "{}{what}", Self::PREFIX),
            Report::LimitExceeded { limit, detail } => write!(f, "{}limit {}: {detail}", Self::PREFIX, limit.as_str()),
        }
    }
}

/// Sends a report, as one line: the report descriptor when the backend gave one, else
/// stderr (the probe, a person). The helper has no tracing (it stays single-threaded and
/// small).
#[allow(clippy::print_stderr)]
fn send(report: &Report) {
    if REPORT_TO_FD.load(std::sync::atomic::Ordering::Relaxed) {
        // SAFETY: REPORT_FD was checked open at start; ManuallyDrop keeps it open after the write.
        let mut channel = std::mem::ManuallyDrop::new(unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(REPORT_FD) });
        let _ = writeln!(channel, "{report}");
    } else {
        eprintln!("{report}");
    }
}

/// Says why the sandbox could not be set up.
fn report(what: impl Display) {
    send(&Report::SetupFailed(what.to_string()));
}

/// Runs the whole sandbox in the current (fresh, single-threaded) process and returns the
/// agent's exit code (or [`SETUP_FAILED`], [`LIMIT_EXCEEDED`]).
pub fn enter(spec: &SandboxSpec) -> Result<i32, SandboxError> {
    if spec.report_fd {
        // Close-on-exec: the guest never holds the report channel.
        let set = nix::fcntl::fcntl(REPORT_FD, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
        REPORT_TO_FD.store(set.is_ok(), std::sync::atomic::Ordering::Relaxed);
    }
    // Step 1: cgroups first, so every process below is accounted and can be frozen.
    for cg in &spec.cgroups {
        let procs = cg.join("cgroup.procs");
        fs::write(&procs, format!("{}\n", std::process::id())).map_err(|source| SandboxError::Cgroup { path: procs.clone(), source })?;
    }
    // Step 2.
    // A cgroup namespace too, rooted at the job's cgroup (joined in step 1): the guest's
    // /proc/self/cgroup names no host cgroup.
    let outer = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWCGROUP;
    let namespaces = |idmap: Option<&OwnedFd>| -> i32 {
        if spec.simulate_userns_without_caps && spec.ids == GuestIds::Caller {
            drop_all_capabilities();
        }
        match unshare(outer).map_err(SandboxError::Unshare).and_then(|()| fork_pid_one(spec, idmap)) {
            Ok(code) => code,
            Err(e) => {
                report(gah_util::error_chain(&e));
                SETUP_FAILED
            }
        }
    };
    match spec.ids {
        GuestIds::Range { .. } => {
            // Made here, where /proc still shows our own pid namespace.
            let idmap = id_map_namespace(&IdMaps::for_guest(spec.ids))?;
            Ok(namespaces(Some(&idmap)))
        }
        GuestIds::Caller => {
            let (uid, gid) = (Uid::effective().as_raw(), Gid::effective().as_raw());
            let maps = IdMaps { uid: format!("0 {uid} 1\n"), gid: format!("0 {gid} 1\n"), deny_setgroups: true };
            let child = fork_into_user_namespace(CloneFlags::empty(), &maps, || namespaces(None))?;
            Ok(wait_exit_code(child))
        }
    }
}

/// The id maps of a new user namespace, written from its parent namespace.
struct IdMaps {
    uid: String,
    gid: String,
    /// Needed when the writer may not allow `setgroups` (an unprivileged caller).
    deny_setgroups: bool,
}

impl IdMaps {
    fn for_guest(ids: GuestIds) -> IdMaps {
        match ids {
            GuestIds::Range { base, count } => {
                IdMaps { uid: format!("0 {base} {count}\n"), gid: format!("0 {base} {count}\n"), deny_setgroups: false }
            }
            // Inside the caller's own namespace, whose 0 is the caller.
            GuestIds::Caller => IdMaps { uid: "0 0 1\n".into(), gid: "0 0 1\n".into(), deny_setgroups: true },
        }
    }

    fn write(&self, child: Pid) -> Result<(), SandboxError> {
        let proc_dir = PathBuf::from(format!("/proc/{child}"));
        let write = |name: &str, text: &str| {
            let path = proc_dir.join(name);
            fs::write(&path, text).map_err(|source| SandboxError::IdMap { path, source })
        };
        if self.deny_setgroups {
            write("setgroups", "deny\n")?;
        }
        write("uid_map", &self.uid)?;
        write("gid_map", &self.gid)
    }
}

/// Forks a child that unshares a user namespace (plus `flags`), waits until this process
/// has written its id maps, then runs `body` and exits with its code. Returns the child.
fn fork_into_user_namespace(flags: CloneFlags, maps: &IdMaps, body: impl FnOnce() -> i32) -> Result<Pid, SandboxError> {
    let pipe_error = |source| SandboxError::UserNamespace { what: "pipe", source };
    let (ready_r, ready_w) = nix::unistd::pipe().map_err(pipe_error)?;
    let (go_r, go_w) = nix::unistd::pipe().map_err(pipe_error)?;
    // SAFETY: this process is single-threaded (a fresh exec that started no threads), so the
    // child may allocate and run ordinary code after fork.
    match unsafe { fork() }.map_err(|source| SandboxError::UserNamespace { what: "fork", source })? {
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(go_r);
            let mut byte = [0u8; 1];
            if fs::File::from(ready_r).read_exact(&mut byte).is_ok() {
                maps.write(child)?;
                fs::File::from(go_w).write_all(b"g").ok();
            }
            Ok(child)
        }
        ForkResult::Child => {
            drop(ready_r);
            drop(go_w);
            set_parent_death_signal();
            // A non-dumpable parent (PID 1) passes that on, and then its own /proc files
            // would be host root's: the parent could not write the maps.
            let _ = nix::sys::prctl::set_dumpable(true);
            if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER | flags) {
                report(format_args!("step 2, unshare user namespace: {e}"));
                std::process::exit(SETUP_FAILED);
            }
            fs::File::from(ready_w).write_all(b"r").ok();
            let mut byte = [0u8; 1];
            if fs::File::from(go_r).read_exact(&mut byte).is_err() {
                report("step 2, the id maps were not written");
                std::process::exit(SETUP_FAILED);
            }
            std::process::exit(body());
        }
    }
}

fn fork_pid_one(spec: &SandboxSpec, idmap: Option<&OwnedFd>) -> Result<i32, SandboxError> {
    // SAFETY: still single-threaded.
    match unsafe { fork() }.map_err(|e| SandboxError::Spawn { what: "fork PID 1", source: e })? {
        ForkResult::Parent { child } => Ok(wait_exit_code(child)),
        ForkResult::Child => {
            set_parent_death_signal();
            let code = match pid_one(spec, idmap) {
                Ok(code) => code,
                Err(e) => {
                    report(gah_util::error_chain(&e));
                    SETUP_FAILED
                }
            };
            std::process::exit(code);
        }
    }
}

fn pid_one(spec: &SandboxSpec, idmap: Option<&OwnedFd>) -> Result<i32, SandboxError> {
    set_non_dumpable();
    let root = spec.scratch.join("root");
    mount_filesystems(spec, &root, idmap)?;
    // Opened before the host's tree goes away: PID 1 keeps measuring what the guest writes.
    let open_dir = |path: &Path| {
        nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            // SAFETY: `open` just returned this descriptor, owned by no one else.
            .map(|fd| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
            .map_err(|source| SandboxError::Mount { what: "open", path: path.to_path_buf(), source })
    };
    // Everything the guest writes lands in the upper layer, its outputs too.
    let watched = vec![open_dir(&spec.scratch.join("upper"))?];
    nix::unistd::chdir(&root).map_err(|e| SandboxError::Pivot { path: root.clone(), source: e })?;
    nix::unistd::pivot_root(".", ".").map_err(|e| SandboxError::Pivot { path: root.clone(), source: e })?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| SandboxError::Pivot { path: root.clone(), source: e })?;
    nix::unistd::chdir("/").map_err(|e| SandboxError::Pivot { path: root.clone(), source: e })?;
    // Step 4.
    use nix::sys::resource::{setrlimit, Resource};
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(SandboxError::Limits)?;
    let max_file = spec.max_file_bytes.min(spec.max_disk_bytes);
    setrlimit(Resource::RLIMIT_FSIZE, max_file, max_file).map_err(SandboxError::Limits)?;
    setrlimit(Resource::RLIMIT_NOFILE, 8192, 8192).map_err(SandboxError::Limits)?;
    let filter = seccomp::guest_filter()?;
    let argv: Vec<CString> = spec.argv.iter().map(|a| CString::new(a.as_str()).unwrap_or_default()).collect();
    let env: Vec<CString> = spec.env.iter().map(|(k, v)| CString::new(format!("{k}={v}")).unwrap_or_default()).collect();
    // Steps 5 and 6, in the agent's process.
    let agent = fork_into_user_namespace(CloneFlags::CLONE_NEWNS, &IdMaps::for_guest(spec.ids), || {
        match become_guest(spec, &filter, &argv, &env) {
            Ok(never) => match never {},
            Err(e) => {
                report(gah_util::error_chain(&e));
                SETUP_FAILED
            }
        }
    })?;
    // Step 7.
    let limits = Watch { dirs: watched, max_disk_bytes: spec.max_disk_bytes, max_memory_bytes: spec.watch_memory_bytes };
    std::thread::spawn(move || limits.run());
    let mut agent_code = None;
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == agent => agent_code = Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == agent => agent_code = Some(128 + sig as i32),
            Ok(_) => {}
            Err(nix::Error::EINTR) => {}
            Err(_) => break, // ECHILD: everyone is reaped.
        }
        if agent_code.is_some() {
            // Whatever the agent left running (a daemonised build step) ends with it.
            let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        }
    }
    // The helper's own codes mean the jail spoke, never the guest.
    Ok(match agent_code {
        Some(SETUP_FAILED | LIMIT_EXCEEDED) => 1,
        Some(code) => code,
        None => SETUP_FAILED,
    })
}

/// Steps 5 and 6 in the agent's process, already in its user and mount namespace.
fn become_guest(
    spec: &SandboxSpec,
    filter: &[seccompiler::BpfProgram],
    argv: &[CString],
    env: &[CString],
) -> Result<std::convert::Infallible, SandboxError> {
    let step = |what| move |source| SandboxError::GuestNamespace { what, source };
    if let GuestIds::Range { .. } = spec.ids {
        // Root's supplementary groups (gid 0 among them) would still open host files.
        nix::unistd::setgroups(&[]).map_err(step("drop supplementary groups"))?;
    }
    let root_gid = Gid::from_raw(0);
    let root_uid = Uid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid).map_err(step("become guest root (gid)"))?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid).map_err(step("become guest root (uid)"))?;
    nix::unistd::chdir("/").map_err(step("chdir /"))?;
    use nix::sys::resource::{setrlimit, Resource};
    // Counted per user in the guest's own namespace: the guest's processes only.
    setrlimit(Resource::RLIMIT_NPROC, spec.max_processes, spec.max_processes).map_err(SandboxError::Limits)?;
    // No setuid or file-capability gains for anything the build runs.
    nix::sys::prctl::set_no_new_privs().map_err(|source| SandboxError::Spawn { what: "no_new_privs", source })?;
    seccomp::apply(filter).map_err(|e| SandboxError::Spawn { what: "install the seccomp filter", source: seccomp_errno(&e) })?;
    let Some(program) = argv.first() else {
        return Err(SandboxError::Spawn { what: "exec (no program)", source: nix::Error::EINVAL });
    };
    let err = nix::unistd::execve(program, argv, env).unwrap_err();
    Err(SandboxError::Spawn { what: "exec the agent", source: err })
}

fn seccomp_errno(e: &seccompiler::Error) -> nix::Error {
    match e {
        seccompiler::Error::Seccomp(io) => nix::Error::from_raw(io.raw_os_error().unwrap_or(libc::EINVAL)),
        _ => nix::Error::EINVAL,
    }
}

/// What PID 1 watches while the guest runs.
struct Watch {
    /// The overlay's upper layer and `/gah/out`, opened before `pivot_root`.
    dirs: Vec<OwnedFd>,
    max_disk_bytes: u64,
    max_memory_bytes: Option<u64>,
}

impl Watch {
    const EVERY: Duration = Duration::from_secs(5);

    fn run(self) {
        loop {
            std::thread::sleep(Self::EVERY);
            let open = open_files();
            let mut seen = HashSet::new();
            let mut disk = open.deleted_bytes;
            for dir in &self.dirs {
                match disk_usage(dir, 0, &mut seen) {
                    Some(bytes) => disk += bytes,
                    None => {
                        self.exceeded(Limit::Disk, format_args!("a folder tree deeper than {MAX_DEPTH} levels, which cannot be measured"))
                    }
                }
            }
            if disk > self.max_disk_bytes {
                self.exceeded(
                    Limit::Disk,
                    format_args!("the guest wrote {} MiB, more than its {} MiB", disk >> 20, self.max_disk_bytes >> 20),
                );
            }
            if let Some(max) = self.max_memory_bytes {
                let memory = resident_memory() + open.memory_bytes + shm_used();
                if memory > max {
                    self.exceeded(Limit::Memory, format_args!("the guest held {} MiB, more than its {} MiB", memory >> 20, max >> 20));
                }
            }
        }
    }

    fn exceeded(&self, limit: Limit, detail: impl Display) -> ! {
        send(&Report::LimitExceeded { limit, detail: detail.to_string() });
        // PID 1's exit kills every process of its namespace.
        std::process::exit(LIMIT_EXCEEDED);
    }
}

/// Deepest folder the disk watch measures; deeper is a limit passed (a walk needs one
/// descriptor a level).
const MAX_DEPTH: usize = 256;

/// Bytes allocated under `dir`, never following links; each inode counted once. `None` when
/// the tree is deeper than [`MAX_DEPTH`].
fn disk_usage(dir: &OwnedFd, depth: usize, seen: &mut HashSet<(u64, u64)>) -> Option<u64> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut total = 0;
    let Ok(mut entries) =
        nix::dir::Dir::openat(Some(dir.as_raw_fd()), ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
    else {
        return Some(0);
    };
    for entry in entries.iter().flatten() {
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let Ok(st) = nix::sys::stat::fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) else { continue };
        // The file type bits of st_mode.
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if st.st_nlink > 1 && !is_dir && !seen.insert((st.st_dev, st.st_ino)) {
            continue;
        }
        // st_blocks counts 512-byte units and is never negative.
        total += u64::try_from(st.st_blocks).unwrap_or(0) * 512;
        if is_dir {
            if let Ok(fd) = open_child_dir(dir, name) {
                total += disk_usage(&fd, depth + 1, seen)?;
            }
        }
    }
    Some(total)
}

/// What the guest's processes hold open that no folder walk sees.
#[derive(Default)]
struct OpenFiles {
    /// Deleted files still open: disk the guest uses but no folder lists.
    deleted_bytes: u64,
    /// memfds and deleted files on `/dev/shm`: memory, not disk.
    memory_bytes: u64,
}

/// Scans every guest process's descriptors (PID 1 sees only the guest's in its /proc).
fn open_files() -> OpenFiles {
    let mut open = OpenFiles::default();
    let mut seen = HashSet::new();
    let shm_dev = nix::sys::stat::stat("/dev/shm").ok().map(|st| st.st_dev);
    let Ok(procs) = fs::read_dir("/proc") else { return open };
    for process in procs.flatten().filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit())) {
        let Ok(fds) = fs::read_dir(process.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = fs::read_link(fd.path()) else { continue };
            let target = target.to_string_lossy();
            let memfd = target.starts_with("/memfd:");
            if !memfd && !target.ends_with(" (deleted)") {
                continue;
            }
            // stat follows the magic link to the open file itself.
            let Ok(st) = nix::sys::stat::stat(&fd.path()) else { continue };
            if st.st_mode & libc::S_IFMT != libc::S_IFREG || !seen.insert((st.st_dev, st.st_ino)) {
                continue;
            }
            let bytes = u64::try_from(st.st_blocks).unwrap_or(0) * 512;
            if memfd || Some(st.st_dev) == shm_dev {
                open.memory_bytes += bytes;
            } else {
                open.deleted_bytes += bytes;
            }
        }
    }
    open
}

/// Bytes used on the guest's `/dev/shm` (a tmpfs: memory).
fn shm_used() -> u64 {
    nix::sys::statvfs::statvfs("/dev/shm").map(|st| (st.blocks() - st.blocks_free()) * st.fragment_size()).unwrap_or(0)
}

fn open_child_dir(dir: &OwnedFd, name: &CStr) -> nix::Result<OwnedFd> {
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: `openat` just returned this descriptor, owned by no one else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Resident bytes of every process in this pid namespace (PID 1 sees only the guest's).
fn resident_memory() -> u64 {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().and_then(|p| u64::try_from(p).ok()).unwrap_or(4096);
    let Ok(procs) = fs::read_dir("/proc") else { return 0 };
    procs
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| fs::read_to_string(e.path().join("statm")).ok())
        .filter_map(|statm| statm.split_whitespace().nth(1).and_then(|r| r.parse::<u64>().ok()))
        .map(|pages| pages * page)
        .sum()
}

fn mount_filesystems(spec: &SandboxSpec, root: &Path, idmap: Option<&OwnedFd>) -> Result<(), SandboxError> {
    let mnt = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| SandboxError::Mount { what, path, source }
    };
    let prep = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SandboxError::Prepare { path, source }
    };
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(mnt("make private", Path::new("/")))?;
    let upper = spec.scratch.join("upper");
    let work = spec.scratch.join("work");
    for dir in [&upper, &work, &root.to_path_buf()] {
        fs::create_dir_all(dir).map_err(prep(dir))?;
    }
    let lower = match (spec.ids, idmap) {
        (GuestIds::Range { .. }, Some(userns)) => {
            // The image's files keep their on-disk owners; the guest sees them as its own.
            let lower = spec.scratch.join("lower");
            fs::create_dir_all(&lower).map_err(prep(&lower))?;
            idmapped_bind(&spec.lower, &lower, userns)?;
            // The overlay's root directory is the upper layer's: the guest's root owns it.
            if let Some(host_root) = spec.ids.host_root() {
                nix::unistd::chown(&upper, Some(Uid::from_raw(host_root)), Some(Gid::from_raw(host_root))).map_err(mnt("chown", &upper))?;
            }
            lower
        }
        _ => {
            // Bound under the scratch folder only to keep its host path out of the guest's mountinfo.
            let lower = spec.scratch.join("lower");
            fs::create_dir_all(&lower).map_err(prep(&lower))?;
            mount(Some(&spec.lower), &lower, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                .map_err(mnt("bind", &lower))?;
            lower
        }
    };
    for output in &spec.outputs {
        let dir = upper.join(output.strip_prefix("/").unwrap_or(output));
        fs::create_dir_all(&dir).map_err(prep(&dir))?;
        if let Some(host_root) = spec.ids.host_root() {
            nix::unistd::chown(&dir, Some(Uid::from_raw(host_root)), Some(Gid::from_raw(host_root))).map_err(mnt("chown", &dir))?;
        }
    }
    // Relative to the scratch folder, so the guest's mountinfo does not show where it is.
    nix::unistd::chdir(&spec.scratch).map_err(mnt("chdir", &spec.scratch))?;
    let relative = |p: &Path| p.strip_prefix(&spec.scratch).map(Path::to_path_buf).unwrap_or_else(|_| p.to_path_buf());
    let options =
        format!("lowerdir={},upperdir={},workdir={}", relative(&lower).display(), relative(&upper).display(), relative(&work).display());
    mount(Some("overlay"), root, Some("overlay"), MsFlags::empty(), Some(options.as_str())).map_err(mnt("mount overlay on", root))?;

    // Inputs: each a read-only overlay over a private bind of its folder, so the guest's
    // mountinfo names only `lowerdir=<n>:empty`, never where the folder is on the host. The
    // binds themselves live outside the new root: the guest never sees them.
    let staging = spec.scratch.join("inputs");
    let empty = staging.join("empty");
    fs::create_dir_all(&empty).map_err(prep(&empty))?;
    for (n, input) in spec.inputs.iter().enumerate() {
        let private = staging.join(n.to_string());
        fs::create_dir_all(&private).map_err(prep(&private))?;
        mount(Some(&input.source), &private, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .map_err(mnt("bind", &input.source))?;
        let target = root.join(input.target.strip_prefix("/").unwrap_or(&input.target));
        if !target.is_dir() {
            fs::create_dir_all(&target).map_err(prep(&target))?;
        }
        nix::unistd::chdir(&staging).map_err(mnt("chdir", &staging))?;
        let options = format!("lowerdir={n}:empty");
        mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(mnt("mount the read-only input on", &target))?;
    }

    let dev = root.join("dev");
    fs::create_dir_all(&dev).map_err(prep(&dev))?;
    mount(Some("tmpfs"), &dev, Some("tmpfs"), MsFlags::MS_NOSUID, Some("mode=755,size=16m")).map_err(mnt("mount tmpfs on", &dev))?;
    // Not `tty`: the host's would be gah-app's controlling terminal (TIOCSTI types into it).
    for node in ["null", "zero", "full", "random", "urandom"] {
        let target = dev.join(node);
        fs::write(&target, b"").map_err(prep(&target))?;
        let source = Path::new("/dev").join(node);
        mount(Some(&source), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(mnt("bind device onto", &target))?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(link)).map_err(prep(&dev.join(link)))?;
    }
    let pts = dev.join("pts");
    fs::create_dir_all(&pts).map_err(prep(&pts))?;
    mount(Some("devpts"), &pts, Some("devpts"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("newinstance,ptmxmode=0666,mode=620,max=64"))
        .map_err(mnt("mount devpts on", &pts))?;
    let shm = dev.join("shm");
    fs::create_dir_all(&shm).map_err(prep(&shm))?;
    mount(Some("tmpfs"), &shm, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=1777,size=256m"))
        .map_err(mnt("mount tmpfs on", &shm))?;

    mount_proc(root)?;
    nix::unistd::sethostname("gah-sandbox").map_err(mnt("set hostname", Path::new("/etc/hostname")))?;
    Ok(())
}

/// `/proc` as container runtimes leave it (runc's defaults): the kernel's knobs read-only,
/// files that show or poke the host's kernel masked.
fn mount_proc(root: &Path) -> Result<(), SandboxError> {
    const READ_ONLY: &[&str] = &["sys", "sysrq-trigger", "bus", "fs", "irq"];
    const MASKED_FILES: &[&str] =
        &["kcore", "keys", "latency_stats", "timer_list", "timer_stats", "sched_debug", "kallsyms", "kpagecount", "kpageflags"];
    const MASKED_DIRS: &[&str] = &["acpi", "scsi"];
    let proc_dir = root.join("proc");
    let mnt = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| SandboxError::Mount { what, path, source }
    };
    fs::create_dir_all(&proc_dir).map_err(|source| SandboxError::Prepare { path: proc_dir.clone(), source })?;
    mount(Some("proc"), &proc_dir, Some("proc"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None::<&str>)
        .map_err(mnt("mount proc on", &proc_dir))?;
    for name in READ_ONLY {
        let path = proc_dir.join(name);
        if path.exists() {
            mount(Some(&path), &path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>).map_err(mnt("bind", &path))?;
            remount_bind(&path, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC)
                .map_err(mnt("remount read-only", &path))?;
        }
    }
    for name in MASKED_FILES {
        let path = proc_dir.join(name);
        if path.exists() {
            mount(Some("/dev/null"), &path, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(mnt("mask", &path))?;
        }
    }
    for name in MASKED_DIRS {
        let path = proc_dir.join(name);
        if path.is_dir() {
            mount(
                Some("tmpfs"),
                &path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(mnt("mask", &path))?;
        }
    }
    Ok(())
}

/// Remounts a bind with `flags` added to those the kernel locked on its source (an
/// unprivileged caller may not clear them).
fn remount_bind(target: &Path, flags: MsFlags) -> nix::Result<()> {
    let flags = flags | locked_flags(target);
    mount(None::<&str>, target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags, None::<&str>)
}

fn locked_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(st) = statvfs(path) else { return MsFlags::empty() };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs_flag, ms_flag) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs_flag) {
            out |= ms_flag;
        }
    }
    out
}

/// A user namespace that only carries `maps`, for an idmapped mount: its process waits
/// until the namespace is open, then is killed.
fn id_map_namespace(maps: &IdMaps) -> Result<OwnedFd, SandboxError> {
    let holder = fork_into_user_namespace(CloneFlags::empty(), maps, || loop {
        nix::unistd::pause();
    })?;
    let userns = open_path(Path::new(&format!("/proc/{holder}/ns/user")), OFlag::O_RDONLY);
    let _ = kill(holder, Signal::SIGKILL);
    let _ = waitpid(holder, None);
    userns.map_err(|source| SandboxError::UserNamespace { what: "open the id map's user namespace", source })
}

/// Mounts `source` at `target` read-only with its owners shifted by the maps of `userns` (an
/// idmapped mount, Linux 5.12; overlayfs takes it as a lower layer since 5.19).
fn idmapped_bind(source: &Path, target: &Path, userns: &OwnedFd) -> Result<(), SandboxError> {
    let err = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| SandboxError::Mount { what, path, source }
    };
    let source_c = path_cstring(source)?;
    // SAFETY: open_tree with a valid C string; the returned descriptor is checked.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source_c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC.unsigned_abs() | AT_RECURSIVE.unsigned_abs(),
        )
    };
    let tree = owned_fd(tree).map_err(err("clone the guest root", source))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: u64::try_from(userns.as_raw_fd()).unwrap_or(0),
    };
    // SAFETY: mount_setattr on the descriptor open_tree gave, with an attr of the size passed.
    let set = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | AT_RECURSIVE,
            &attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    nix::errno::Errno::result(set).map_err(err("idmap the guest root (needs Linux 5.12, overlayfs on it 5.19)", source))?;
    let target_c = path_cstring(target)?;
    // SAFETY: move_mount from the detached tree to a valid path.
    let moved = unsafe {
        libc::syscall(libc::SYS_move_mount, tree.as_raw_fd(), c"".as_ptr(), libc::AT_FDCWD, target_c.as_ptr(), MOVE_MOUNT_F_EMPTY_PATH)
    };
    nix::errno::Errno::result(moved).map(drop).map_err(err("attach the idmapped guest root at", target))
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

// From <linux/mount.h> and <fcntl.h>.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_int = 0x8000;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

fn path_cstring(path: &Path) -> Result<CString, SandboxError> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SandboxError::Mount {
        what: "name",
        path: path.to_path_buf(),
        source: nix::Error::EINVAL,
    })
}

fn owned_fd(ret: libc::c_long) -> nix::Result<OwnedFd> {
    let fd = nix::errno::Errno::result(ret)?;
    let fd = i32::try_from(fd).map_err(|_| nix::Error::EBADF)?;
    // SAFETY: the kernel just returned this descriptor, owned by no one else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn open_path(path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let fd = nix::fcntl::open(path, flags | OFlag::O_CLOEXEC, Mode::empty())?;
    // SAFETY: `open` just returned this descriptor, owned by no one else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// What Ubuntu's AppArmor restriction does to an unprivileged user namespace: it is
/// created, with no capabilities in it.
fn drop_all_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [Data { effective: 0, permitted: 0, inheritable: 0 }, Data { effective: 0, permitted: 0, inheritable: 0 }];
    // SAFETY: capset with a v3 header and its two data words, both alive for the call.
    unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
}

fn wait_exit_code(child: Pid) -> i32 {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(_) => return SETUP_FAILED,
        }
    }
}

fn set_parent_death_signal() {
    // If our parent dies, so do we: no sandbox outlives gah-app.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
}

/// Nothing in the guest may ptrace or read the memory of the jail's own processes (PID 1
/// holds capabilities over the guest's mounts).
fn set_non_dumpable() {
    let _ = nix::sys::prctl::set_dumpable(false);
}
