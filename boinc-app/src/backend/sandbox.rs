//! The `sandbox` backend: the guest root in Linux namespaces, for hosts where no VM is fast
//! enough.
//!
//! Jailer-style: [`enter`] runs in a fresh, single-threaded helper process (`gah-app
//! __sandbox-init SPEC`, spawned by [`SandboxBackend`]) and performs these steps in order,
//! each failure naming its step:
//!
//! 1. join the job's cgroup (freezer, memory), before anything forks;
//! 2. fork; the child unshares a user namespace and the helper maps its ids (identity map for
//!    root, the caller's id to 0 otherwise);
//! 3. the child unshares mount, pid, ipc, uts and network namespaces (the new network
//!    namespace has only a down `lo`: no network);
//! 4. it forks the namespace's PID 1, which makes `/` private, mounts the overlay (guest root
//!    read-only below, the slot's upper above), bind-mounts `/gah/in` parts read-only and
//!    `/gah/out` writable, mounts a fresh `/proc`, a minimal `/dev`, sets the hostname;
//! 5. `pivot_root`s into the overlay and detaches the old root;
//! 6. sets resource limits;
//! 7. forks the agent with a clean environment and `no_new_privs`, and reaps everything until
//!    it exits. (The helper itself starts with an empty environment: it is the guest's PID 1.)
//!
//! Every process in the chain has a parent-death signal, so killing `gah-app` kills the
//! sandbox.

use std::ffi::CString;
use std::fmt::Display;
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use serde::{Deserialize, Serialize};

use super::{
    parse_progress, Accelerator, Backend, BackendError, BackendKind, Guest, GuestEvent, GuestInput, GuestProgress, CONSOLE_TAIL_BYTES,
};

/// Exit code of the sandbox helper when setting up the sandbox failed (the step is on stderr).
pub const SETUP_FAILED: i32 = 125;

/// One bind mount into the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    /// Host path.
    pub source: PathBuf,
    /// Absolute path inside the sandbox.
    pub target: PathBuf,
    /// False for a read-only bind.
    pub writable: bool,
}

/// Everything the helper needs; written by the backend as JSON into the slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    /// The guest root, never written (overlay lower layer).
    pub lower: PathBuf,
    /// A folder on the same file system as nothing special: `upper/`, `work/`, `root/` go here.
    pub scratch: PathBuf,
    /// Bind mounts, applied in order.
    pub binds: Vec<Bind>,
    /// The program and its arguments, as seen inside the sandbox.
    pub argv: Vec<String>,
    /// The whole environment of the program.
    pub env: Vec<(String, String)>,
    /// The cgroup folders (one per v1 controller, or one v2 folder) to join first.
    pub cgroups: Vec<PathBuf>,
    /// Largest file the guest may write, in bytes.
    pub max_file_bytes: u64,
}

/// A sandbox setup step that failed, with the path involved and the OS error (the source,
/// printed after the step by [`gah_util::error_chain`] or `{:#}`).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("step 1, join cgroup {}", path.display())]
    Cgroup { path: PathBuf, source: io::Error },
    #[error("step 2, {what}")]
    UserNamespace { what: String, source: nix::Error },
    #[error("step 2, write {}", path.display())]
    IdMap { path: PathBuf, source: io::Error },
    #[error("step 3, unshare namespaces")]
    Unshare(#[source] nix::Error),
    #[error("step 4, {what} {}", path.display())]
    Mount { what: &'static str, path: PathBuf, source: nix::Error },
    #[error("step 4, prepare {}", path.display())]
    Prepare { path: PathBuf, source: io::Error },
    #[error("step 5, pivot_root into {}", path.display())]
    Pivot { path: PathBuf, source: nix::Error },
    #[error("step 6, set resource limits")]
    Limits(#[source] nix::Error),
    #[error("step 7, {what}")]
    Spawn { what: &'static str, source: nix::Error },
}

/// A step of starting, probing or controlling a sandbox (from `gah-app`'s side) that failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxGuestError {
    /// The guest root lacks a shell, so it is no guest root.
    #[error("guest root {} has no /bin/sh", root.display())]
    NoShell {
        /// The guest root.
        root: PathBuf,
    },
    /// A file or folder could not be created.
    #[error("create {}", path.display())]
    Create {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The helper's spec could not be serialised (a path that is not UTF-8).
    #[error("serialise the sandbox spec {}", path.display())]
    Spec {
        /// Where it was going.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The helper could not be started.
    #[error("start {} __sandbox-init", program.display())]
    Start {
        /// The helper program.
        program: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A trial sandbox failed; the helper said why.
    #[error("a trial sandbox failed: {stderr_tail}")]
    Trial {
        /// The last lines of the helper's stderr.
        stderr_tail: String,
    },
    /// The helper's exit could not be waited for.
    #[error("wait for the sandbox helper")]
    Wait(#[source] io::Error),
    /// The cgroup freezer could not be set.
    #[error("write {}", path.display())]
    Freeze {
        /// The freezer file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The sandbox's process group could not be stopped or continued.
    #[error("signal the sandbox's process group {pgid}")]
    Signal {
        /// The process group.
        pgid: i32,
        /// The cause.
        #[source]
        source: nix::Error,
    },
}

/// Says on stderr why the sandbox could not be set up. The helper has no tracing (it stays
/// single-threaded and small), and its stderr is the channel: the backend shows its last
/// `gah sandbox:` line (see [`SandboxGuest`]'s `next_event`).
#[allow(clippy::print_stderr)]
fn report_setup_failure(what: impl Display) {
    eprintln!("gah sandbox: {what}");
}

/// Runs the whole sandbox in the current (fresh, single-threaded) process and returns the
/// agent's exit code.
pub fn enter(spec: &SandboxSpec) -> Result<i32, SandboxError> {
    // Step 1: cgroups first, so every process below is accounted and can be frozen.
    for cg in &spec.cgroups {
        let procs = cg.join("cgroup.procs");
        fs::write(&procs, format!("{}\n", std::process::id())).map_err(|source| SandboxError::Cgroup { path: procs.clone(), source })?;
    }
    // Step 2: the child makes the user namespace; we (still outside it) write its id maps.
    let (ready_r, ready_w) = nix::unistd::pipe().map_err(|e| SandboxError::UserNamespace { what: "pipe".into(), source: e })?;
    let (go_r, go_w) = nix::unistd::pipe().map_err(|e| SandboxError::UserNamespace { what: "pipe".into(), source: e })?;
    // SAFETY: this process is single-threaded (a fresh exec that started no threads), so the
    // child may allocate and run ordinary code after fork.
    match unsafe { fork() }.map_err(|e| SandboxError::UserNamespace { what: "fork".into(), source: e })? {
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(go_r);
            let mut byte = [0u8; 1];
            let mut ready = fs::File::from(ready_r);
            if ready.read_exact(&mut byte).is_err() {
                return Ok(wait_exit_code(child));
            }
            write_id_maps(child)?;
            fs::File::from(go_w).write_all(b"g").ok();
            Ok(wait_exit_code(child))
        }
        ForkResult::Child => {
            drop(ready_r);
            drop(go_w);
            set_parent_death_signal();
            let code = match namespace_child(spec, ready_w, go_r) {
                Ok(code) => code,
                Err(e) => {
                    report_setup_failure(gah_util::error_chain(&e));
                    SETUP_FAILED
                }
            };
            std::process::exit(code);
        }
    }
}

fn namespace_child(spec: &SandboxSpec, ready_w: std::os::fd::OwnedFd, go_r: std::os::fd::OwnedFd) -> Result<i32, SandboxError> {
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| SandboxError::UserNamespace { what: "unshare user namespace".into(), source: e })?;
    fs::File::from(ready_w).write_all(b"r").ok();
    let mut byte = [0u8; 1];
    fs::File::from(go_r).read_exact(&mut byte).map_err(|e| SandboxError::IdMap { path: "/proc/self/uid_map".into(), source: e })?;
    // Step 3.
    unshare(
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWNET,
    )
    .map_err(SandboxError::Unshare)?;
    // Step 4 onwards happens in the new pid namespace's PID 1.
    // SAFETY: still single-threaded.
    match unsafe { fork() }.map_err(|e| SandboxError::Spawn { what: "fork PID 1", source: e })? {
        ForkResult::Parent { child } => Ok(wait_exit_code(child)),
        ForkResult::Child => {
            set_parent_death_signal();
            let code = match pid_one(spec) {
                Ok(code) => code,
                Err(e) => {
                    report_setup_failure(gah_util::error_chain(&e));
                    SETUP_FAILED
                }
            };
            std::process::exit(code);
        }
    }
}

fn pid_one(spec: &SandboxSpec) -> Result<i32, SandboxError> {
    let root = spec.scratch.join("root");
    mount_filesystems(spec, &root)?;
    // Step 5.
    nix::unistd::chdir(&root).map_err(|e| SandboxError::Pivot { path: root.clone(), source: e })?;
    nix::unistd::pivot_root(".", ".").map_err(|e| SandboxError::Pivot { path: root.clone(), source: e })?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| SandboxError::Pivot { path: root.clone(), source: e })?;
    nix::unistd::chdir("/").map_err(|e| SandboxError::Pivot { path: root.clone(), source: e })?;
    // Step 6.
    use nix::sys::resource::{setrlimit, Resource};
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(SandboxError::Limits)?;
    setrlimit(Resource::RLIMIT_FSIZE, spec.max_file_bytes, spec.max_file_bytes).map_err(SandboxError::Limits)?;
    setrlimit(Resource::RLIMIT_NOFILE, 8192, 8192).map_err(SandboxError::Limits)?;
    // Step 7.
    let argv: Vec<CString> = spec.argv.iter().map(|a| CString::new(a.as_str()).unwrap_or_default()).collect();
    let env: Vec<CString> = spec.env.iter().map(|(k, v)| CString::new(format!("{k}={v}")).unwrap_or_default()).collect();
    // SAFETY: single-threaded; the child only execs.
    match unsafe { fork() }.map_err(|e| SandboxError::Spawn { what: "fork the agent", source: e })? {
        ForkResult::Child => {
            // No setuid or file-capability gains for anything the build runs.
            if let Err(err) = nix::sys::prctl::set_no_new_privs() {
                report_setup_failure(format_args!("step 7, no_new_privs: {err}"));
                std::process::exit(SETUP_FAILED);
            }
            let err = nix::unistd::execve(&argv[0], &argv, &env).unwrap_err();
            report_setup_failure(format_args!("step 7, exec {}: {err}", spec.argv[0]));
            std::process::exit(SETUP_FAILED);
        }
        ForkResult::Parent { child } => {
            // As PID 1 we reap orphans too; the agent's status is what counts.
            let mut agent_code = None;
            loop {
                match waitpid(None, None) {
                    Ok(WaitStatus::Exited(pid, code)) if pid == child => agent_code = Some(code),
                    Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => agent_code = Some(128 + sig as i32),
                    Ok(_) => {}
                    Err(nix::Error::EINTR) => {}
                    Err(_) => break, // ECHILD: everyone is reaped.
                }
            }
            Ok(agent_code.unwrap_or(SETUP_FAILED))
        }
    }
}

fn mount_filesystems(spec: &SandboxSpec, root: &Path) -> Result<(), SandboxError> {
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
    let options = format!("lowerdir={},upperdir={},workdir={}", spec.lower.display(), upper.display(), work.display());
    mount(Some("overlay"), root, Some("overlay"), MsFlags::empty(), Some(options.as_str())).map_err(mnt("mount overlay on", root))?;

    for bind in &spec.binds {
        let target = root.join(bind.target.strip_prefix("/").unwrap_or(&bind.target));
        if bind.source.is_dir() {
            fs::create_dir_all(&target).map_err(prep(&target))?;
        } else {
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(prep(parent))?;
            }
            if !target.exists() {
                fs::write(&target, b"").map_err(prep(&target))?;
            }
        }
        mount(Some(&bind.source), &target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .map_err(mnt("bind-mount onto", &target))?;
        if !bind.writable {
            // A read-only remount must keep the flags the kernel locked on the source mount.
            let locked = locked_flags(&bind.source);
            mount(None::<&str>, &target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked, None::<&str>)
                .map_err(mnt("remount read-only", &target))?;
        }
    }

    let proc_dir = root.join("proc");
    fs::create_dir_all(&proc_dir).map_err(prep(&proc_dir))?;
    mount(Some("proc"), &proc_dir, Some("proc"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC, None::<&str>)
        .map_err(mnt("mount proc on", &proc_dir))?;

    let dev = root.join("dev");
    fs::create_dir_all(&dev).map_err(prep(&dev))?;
    mount(Some("tmpfs"), &dev, Some("tmpfs"), MsFlags::MS_NOSUID, Some("mode=755,size=16m")).map_err(mnt("mount tmpfs on", &dev))?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
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
    mount(Some("devpts"), &pts, Some("devpts"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("newinstance,ptmxmode=0666,mode=620"))
        .map_err(mnt("mount devpts on", &pts))?;
    let shm = dev.join("shm");
    fs::create_dir_all(&shm).map_err(prep(&shm))?;
    mount(Some("tmpfs"), &shm, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=1777,size=256m"))
        .map_err(mnt("mount tmpfs on", &shm))?;

    nix::unistd::sethostname("gah-sandbox").map_err(mnt("set hostname", Path::new("/etc/hostname")))?;
    Ok(())
}

fn locked_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(st) = statvfs(path) else { return MsFlags::empty() };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs_flag, ms_flag) in [
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

fn write_id_maps(child: Pid) -> Result<(), SandboxError> {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let proc_dir = PathBuf::from(format!("/proc/{child}"));
    let write = |name: &str, text: String| {
        let path = proc_dir.join(name);
        fs::write(&path, text).map_err(|source| SandboxError::IdMap { path, source })
    };
    if uid == 0 {
        // Root keeps every id: Portage may chown to any user the ebuild names.
        write("uid_map", "0 0 4294967295\n".into())?;
        write("gid_map", "0 0 4294967295\n".into())?;
    } else {
        write("setgroups", "deny\n".into())?;
        write("uid_map", format!("0 {uid} 1\n"))?;
        write("gid_map", format!("0 {gid} 1\n"))?;
    }
    Ok(())
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

/// Removes the cgroups of earlier gah-apps that died without cleaning up (`gah-<pid>-…`
/// whose pid is gone): thaws them and kills what is left in them. Needed because a process
/// frozen by the v1 freezer ignores even SIGKILL (the parent-death signal included) until
/// thawed, so a sandbox suspended when its app was killed would otherwise stay forever.
fn reap_orphaned_cgroups() {
    for parent in cgroup_parents() {
        let Ok(entries) = fs::read_dir(&parent) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("gah-").and_then(|rest| rest.split('-').next()).and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let cg = entry.path();
            let _ = fs::write(cg.join("freezer.state"), "THAWED");
            let _ = fs::write(cg.join("cgroup.freeze"), "0");
            if let Ok(procs) = fs::read_to_string(cg.join("cgroup.procs")) {
                if !procs.trim().is_empty() {
                    tracing::warn!(cgroup = %cg.display(), processes = procs.lines().count(), "killing the sandbox of an app that died");
                }
                for p in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
                }
            }
            // Empty once the killed processes are reaped; try for a moment.
            for _ in 0..20 {
                if fs::remove_dir(&cg).is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// Where our cgroups go: the v2 root, or the v1 controllers we use.
fn cgroup_parents() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_path_buf()];
    }
    ["freezer", "memory", "cpuacct", "pids"].iter().map(|c| base.join(c)).collect()
}

/// The job's cgroup under each parent (created by the caller, where it may).
fn cgroup_dirs(job: &str) -> Vec<PathBuf> {
    cgroup_parents().into_iter().map(|p| p.join(format!("gah-{job}"))).collect()
}

/// Most processes and threads the guest may have at once (the cgroup pids controller). A
/// parallel build runs a few hundred; Portage's own test suites stay well below this.
const MAX_GUEST_TASKS: u32 = 4096;

/// The namespace sandbox backend.
pub struct SandboxBackend {
    /// The guest root tree (the image's `rootfs/`).
    pub rootfs: PathBuf,
    /// The program that carries the hidden `__sandbox-init` command (normally `gah-app`).
    pub helper: PathBuf,
}

impl SandboxBackend {
    /// Checks that namespaces and overlayfs work here by running `true` in a sandbox over
    /// the guest root. Returns why not, if they don't.
    pub fn probe(&self) -> Result<(), SandboxGuestError> {
        if !self.rootfs.join("bin/sh").exists() {
            return Err(SandboxGuestError::NoShell { root: self.rootfs.clone() });
        }
        let scratch = tempfile::Builder::new()
            .prefix("gah-probe-")
            .tempdir()
            .map_err(|source| SandboxGuestError::Create { path: std::env::temp_dir().join("gah-probe-*"), source })?;
        let spec = SandboxSpec {
            lower: self.rootfs.clone(),
            scratch: scratch.path().to_path_buf(),
            binds: vec![],
            argv: vec!["/bin/sh".into(), "-c".into(), "exit 0".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cgroups: vec![],
            max_file_bytes: 1 << 20,
        };
        let spec_path = scratch.path().join("spec.json");
        write_spec(&spec, &spec_path)?;
        let out = gah_util::process::command(&self.helper)
            .env_clear()
            .arg("__sandbox-init")
            .arg(&spec_path)
            .output()
            .map_err(|source| SandboxGuestError::Start { program: self.helper.clone(), source })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(SandboxGuestError::Trial { stderr_tail: gah_util::process::tail(&out.stderr, 3) })
        }
    }

    fn start_sandbox(&self, input: &GuestInput) -> Result<SandboxGuest, SandboxGuestError> {
        let create = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SandboxGuestError::Create { path, source }
        };
        let out = input.output_dir();
        fs::create_dir_all(&out).map_err(create(&out))?;
        let scratch = input.slot.join("sandbox");
        fs::create_dir_all(&scratch).map_err(create(&scratch))?;
        reap_orphaned_cgroups();
        // Unique per task: under BOINC every slot folder is called `slot`.
        let job_tag =
            format!("{}-{}", std::process::id(), input.slot.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        let cgroups: Vec<PathBuf> = cgroup_dirs(&job_tag).into_iter().filter(|d| fs::create_dir_all(d).is_ok()).collect();
        for cg in &cgroups {
            // Memory cap on v1 or v2; a missing knob just means no cap.
            let bytes = input.memory_mib * 1024 * 1024;
            let _ = fs::write(cg.join("memory.limit_in_bytes"), bytes.to_string());
            let _ = fs::write(cg.join("memory.max"), bytes.to_string());
            // A fork bomb stops at this many tasks instead of taking the host's pid space.
            let _ = fs::write(cg.join("pids.max"), MAX_GUEST_TASKS.to_string());
        }
        let spec = SandboxSpec {
            lower: self.rootfs.clone(),
            scratch: scratch.clone(),
            binds: vec![
                Bind { source: input.staged.clone(), target: "/gah/in".into(), writable: false },
                Bind { source: input.repo.clone(), target: "/gah/in/repo".into(), writable: false },
                Bind { source: input.distfiles.clone(), target: "/gah/in/distfiles".into(), writable: false },
                Bind { source: input.binpkgs.clone(), target: "/gah/in/binpkgs".into(), writable: false },
                Bind { source: out.clone(), target: "/gah/out".into(), writable: true },
            ],
            argv: vec![
                "/gah/in/gah-agent".into(),
                "--job".into(),
                "/gah/in/job.json".into(),
                "--out".into(),
                "/gah/out".into(),
                "--progress".into(),
                "-".into(),
                "--jobs".into(),
                input.cpus.to_string(),
            ],
            env: vec![
                ("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
                ("HOME".into(), "/root".into()),
                ("LANG".into(), "C.UTF-8".into()),
                ("TERM".into(), "dumb".into()),
            ],
            cgroups: cgroups.clone(),
            max_file_bytes: 16 << 30,
        };
        let spec_path = scratch.join("spec.json");
        write_spec(&spec, &spec_path)?;
        let console = input.slot.join("sandbox-stderr.log");
        let stderr = fs::File::create(&console).map_err(create(&console))?;
        let mut cmd = gah_util::process::command(&self.helper);
        // The helper becomes the guest's PID 1, whose environment the guest can read in
        // /proc/1/environ: it gets none of gah-app's (the client's paths, account details).
        cmd.env_clear().arg("__sandbox-init").arg(&spec_path).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr).process_group(0);
        gah_util::process::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|source| SandboxGuestError::Start { program: self.helper.clone(), source })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        // The agent's stdout carries progress lines; read it on its own thread so the agent
        // never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut lines = gah_util::untrusted::LineReader::new(BufReader::new(stdout), GuestProgress::MAX_LINE);
            while let Some(line) = lines.next_line() {
                if let Some(event) = parse_progress(&line) {
                    if tx.send(event).is_err() {
                        break;
                    }
                }
            }
        });
        tracing::info!(pid = child.id(), cgroups = ?cgroups, "sandbox started");
        Ok(SandboxGuest { child, events: rx, cgroups, console, scratch, finished: false })
    }
}

fn write_spec(spec: &SandboxSpec, path: &Path) -> Result<(), SandboxGuestError> {
    let json = serde_json::to_vec_pretty(spec).map_err(|source| SandboxGuestError::Spec { path: path.to_path_buf(), source })?;
    fs::write(path, json).map_err(|source| SandboxGuestError::Create { path: path.to_path_buf(), source })
}

impl Backend for SandboxBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Sandbox
    }

    fn accelerator(&self) -> Accelerator {
        Accelerator::None
    }

    fn resumes_from(&self, _slot: &Path) -> Option<PathBuf> {
        // Processes can't be saved: a restart begins afresh and resumes by phase.
        None
    }

    fn start(&self, input: &GuestInput) -> Result<Box<dyn Guest>, BackendError> {
        Ok(Box::new(self.start_sandbox(input)?))
    }
}

struct SandboxGuest {
    child: Child,
    events: mpsc::Receiver<GuestEvent>,
    cgroups: Vec<PathBuf>,
    console: PathBuf,
    scratch: PathBuf,
    finished: bool,
}

impl SandboxGuest {
    fn freezer(&self) -> Option<PathBuf> {
        self.cgroups.iter().find(|c| c.join("freezer.state").exists() || c.join("cgroup.freeze").exists()).cloned()
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), SandboxGuestError> {
        if let Some(cg) = self.freezer() {
            let (path, text) = if cg.join("freezer.state").exists() {
                (cg.join("freezer.state"), if frozen { "FROZEN" } else { "THAWED" })
            } else {
                (cg.join("cgroup.freeze"), if frozen { "1" } else { "0" })
            };
            return fs::write(&path, text).map_err(|source| SandboxGuestError::Freeze { path, source });
        }
        // No freezer: stop the whole process group instead.
        let pgid = self.process_group();
        kill(Pid::from_raw(-pgid), if frozen { Signal::SIGSTOP } else { Signal::SIGCONT })
            .map_err(|source| SandboxGuestError::Signal { pgid, source })
    }

    /// The helper leads its own process group (`process_group(0)`): its pid is the group's id.
    fn process_group(&self) -> i32 {
        // A pid is at most PID_MAX_LIMIT (2^22): it fits in an i32.
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    fn cleanup(&mut self) {
        for cg in &self.cgroups {
            let _ = fs::remove_dir(cg);
        }
        // The overlay's upper layer is the guest's scratch disk: gone with the job.
        let _ = fs::remove_dir_all(&self.scratch);
    }
}

impl Guest for SandboxGuest {
    fn checkpoint(&mut self, _fraction: f64) -> Result<Option<u64>, BackendError> {
        // Processes can't be saved; a restart resumes by phase (binary packages are kept).
        Ok(None)
    }

    fn next_event(&mut self, timeout: Duration) -> Result<Option<GuestEvent>, BackendError> {
        if self.finished {
            return Ok(None);
        }
        match self.events.recv_timeout(timeout) {
            Ok(event) => Ok(Some(event)),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().map_err(SandboxGuestError::Wait)?;
                self.finished = true;
                self.cleanup();
                let code = status.code().unwrap_or(-1);
                let ok = code == 0;
                let detail = if code == SETUP_FAILED {
                    let stderr = String::from_utf8_lossy(&gah_util::untrusted::read_tail(&self.console, CONSOLE_TAIL_BYTES)).into_owned();
                    format!(
                        "sandbox setup failed: {}",
                        stderr.lines().rev().find(|l| l.contains("gah sandbox")).unwrap_or("see console log")
                    )
                } else {
                    format!("agent exited with {status}")
                };
                Ok(Some(GuestEvent::Exited { ok, detail }))
            }
        }
    }

    fn pause(&mut self) -> Result<(), BackendError> {
        Ok(self.set_frozen(true)?)
    }

    fn resume(&mut self) -> Result<(), BackendError> {
        Ok(self.set_frozen(false)?)
    }

    fn kill(&mut self) -> Result<(), BackendError> {
        if self.finished {
            return Ok(());
        }
        let _ = self.set_frozen(false);
        let _ = kill(Pid::from_raw(-self.process_group()), Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.finished = true;
        self.cleanup();
        Ok(())
    }

    fn cpu_seconds(&self) -> f64 {
        for cg in &self.cgroups {
            // v1 cpuacct (nanoseconds) or v2 cpu.stat (microseconds).
            if let Ok(ns) = fs::read_to_string(cg.join("cpuacct.usage")) {
                return ns.trim().parse::<f64>().unwrap_or(0.0) / 1e9;
            }
            if let Ok(stat) = fs::read_to_string(cg.join("cpu.stat")) {
                if let Some(us) = stat.lines().find_map(|l| l.strip_prefix("usage_usec ")) {
                    return us.trim().parse::<f64>().unwrap_or(0.0) / 1e6;
                }
            }
        }
        0.0
    }

    fn console_log(&self) -> PathBuf {
        self.console.clone()
    }
}

impl Drop for SandboxGuest {
    fn drop(&mut self) {
        // Last defence: no sandbox outlives its owner.
        let _ = self.kill();
    }
}
