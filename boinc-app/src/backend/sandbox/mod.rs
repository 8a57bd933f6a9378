//! The `sandbox` backend: the guest root in Linux namespaces, for hosts where no VM is fast
//! enough.
//!
//! Two halves, as Firecracker splits its jailer from the VMM: [`jail`] is what the helper
//! process (`gah-app __sandbox-init SPEC`) does to build the guest's world and run the agent
//! in it; this module is `gah-app`'s side, which probes, starts, pauses, watches and kills it,
//! and reads what it left as untrusted data. [`seccomp`] holds the guest's filter.
//!
//! The guest never runs with host privileges: its root is an unprivileged host id (a
//! dedicated range when `gah-app` is root, the caller when not), in a user namespace of its
//! own, where every mount the jail made is locked.

use std::fs;
use std::io::{self, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod jail;
pub mod seccomp;

pub use jail::{enter, GuestIds, Input, Report, SandboxError, SandboxSpec, GUEST_ID_COUNT, LIMIT_EXCEEDED, REPORT_FD, SETUP_FAILED};

use super::{
    parse_progress, Accelerator, Backend, BackendError, BackendKind, Guest, GuestEvent, GuestInput, GuestProgress, Limit,
    CONSOLE_TAIL_BYTES,
};

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
    /// The user namespace was made but gives no capabilities (Ubuntu 24.04 and later).
    #[error(
        "this host lets unprivileged users create user namespaces but gives them no capabilities{}, so the \
         sandbox cannot be built; the vm backend works instead, or allow it with `sysctl \
         kernel.apparmor_restrict_unprivileged_userns=0` (helper said: {stderr_tail})",
        if *apparmor { " (kernel.apparmor_restrict_unprivileged_userns=1)" } else { "" }
    )]
    UserNamespaceWithoutCapabilities {
        /// The last lines of the helper's stderr.
        stderr_tail: String,
        /// Whether AppArmor's sysctl is the reason.
        apparmor: bool,
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
    /// Test double: make the helper's user namespace powerless, as Ubuntu's AppArmor
    /// default does, to test what `gah-app` does on such hosts (`GAH_SIMULATE_USERNS_WITHOUT_CAPS`).
    pub simulate_userns_without_caps: bool,
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
            inputs: vec![],
            outputs: vec![],
            argv: vec!["/bin/sh".into(), "-c".into(), "exit 0".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cgroups: vec![],
            ids: self.guest_ids(),
            max_file_bytes: 1 << 20,
            max_disk_bytes: 1 << 30,
            watch_memory_bytes: None,
            max_processes: 64,
            report_fd: false,
            simulate_userns_without_caps: self.simulate_userns_without_caps,
        };
        let spec_path = scratch.path().join("spec.json");
        write_spec(&spec, &spec_path)?;
        let out = helper_command(&self.helper)
            .arg("__sandbox-init")
            .arg(&spec_path)
            .output()
            .map_err(|source| SandboxGuestError::Start { program: self.helper.clone(), source })?;
        if out.status.success() {
            return Ok(());
        }
        let stderr_tail = gah_util::process::tail(&out.stderr, 3);
        // The helper's own report: the outer namespaces (step 2) refused for want of a capability.
        let powerless = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter_map(Report::parse)
            .any(|r| matches!(r, Report::SetupFailed(ref what) if what.starts_with("step 2") && what.contains("EPERM")));
        if spec.ids == GuestIds::Caller && powerless {
            // Created, but powerless: what Ubuntu's AppArmor default does (24.04 and later).
            return Err(SandboxGuestError::UserNamespaceWithoutCapabilities { stderr_tail, apparmor: apparmor_restricts_userns() });
        }
        Err(SandboxGuestError::Trial { stderr_tail })
    }

    /// Where the guest's ids live: a dedicated range when this process is root.
    fn guest_ids(&self) -> GuestIds {
        GuestIds::for_euid(nix::unistd::geteuid().as_raw())
    }

    fn start_sandbox(&self, input: &GuestInput) -> Result<SandboxGuest, SandboxGuestError> {
        let create = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SandboxGuestError::Create { path, source }
        };
        let out = input.output_dir();
        fs::create_dir_all(&out).map_err(create(&out))?;
        // The guest may leave setuid files in /gah/out (nosuid in the guest, not on the host)
        // and owns that folder: only a parent it cannot touch keeps other host users out.
        fs::set_permissions(&input.slot, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(create(&input.slot))?;
        let scratch = input.slot.join("sandbox");
        fs::create_dir_all(&scratch).map_err(create(&scratch))?;
        reap_orphaned_cgroups();
        // Unique per task: under BOINC every slot folder is called `slot`.
        let job_tag =
            format!("{}-{}", std::process::id(), input.slot.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        let cgroups: Vec<PathBuf> = cgroup_dirs(&job_tag).into_iter().filter(|d| fs::create_dir_all(d).is_ok()).collect();
        let memory_bytes = input.memory_mib * 1024 * 1024;
        let mut memory_capped = false;
        let mut pids_capped = false;
        for cg in &cgroups {
            // Memory cap on v1 or v2.
            memory_capped |= fs::write(cg.join("memory.limit_in_bytes"), memory_bytes.to_string()).is_ok();
            memory_capped |= fs::write(cg.join("memory.max"), memory_bytes.to_string()).is_ok();
            // A fork bomb stops at this many tasks instead of taking the host's pid space.
            pids_capped |= fs::write(cg.join("pids.max"), MAX_GUEST_TASKS.to_string()).is_ok();
        }
        if !pids_capped {
            // RLIMIT_NPROC still holds, but per guest id: a guest root that spreads its
            // processes over several ids passes it. Say so rather than pretend.
            tracing::warn!("no pids controller here: the guest's processes are capped per guest id (RLIMIT_NPROC) only");
        }
        if cgroups.is_empty() {
            // An unprivileged user without a delegated cgroup: say what protects the host instead.
            tracing::warn!(
                "no cgroups here (unprivileged, none delegated): memory is watched by the sandbox's PID 1, processes capped by \
                 RLIMIT_NPROC, no freezer (suspend stops the process group) and no guest CPU accounting"
            );
        }
        let ids = self.guest_ids();
        let spec = SandboxSpec {
            lower: self.rootfs.clone(),
            scratch: scratch.clone(),
            inputs: vec![
                Input { source: input.staged.clone(), target: "/gah/in".into() },
                Input { source: input.repo.clone(), target: "/gah/in/repo".into() },
                Input { source: input.distfiles.clone(), target: "/gah/in/distfiles".into() },
                Input { source: input.binpkgs.clone(), target: "/gah/in/binpkgs".into() },
            ],
            outputs: vec![GUEST_OUT.into()],
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
            ids,
            max_file_bytes: 16 << 30,
            max_disk_bytes: input.disk_mib << 20,
            watch_memory_bytes: (!memory_capped).then_some(memory_bytes),
            max_processes: u64::from(MAX_GUEST_TASKS),
            report_fd: true,
            simulate_userns_without_caps: self.simulate_userns_without_caps,
        };
        let spec_path = scratch.join("spec.json");
        write_spec(&spec, &spec_path)?;
        let console = input.slot.join("sandbox-stderr.log");
        let console_file = fs::File::create(&console).map_err(create(&console))?;
        // The jail's own reports travel apart from stderr, which the guest shares.
        let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| SandboxGuestError::Create { path: console.clone(), source: e.into() })?;
        let report_raw = std::os::fd::AsRawFd::as_raw_fd(&report_w);
        let mut cmd = helper_command(&self.helper);
        cmd.arg("__sandbox-init").arg(&spec_path).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // SAFETY: setsid, dup2 and fcntl are async-signal-safe; the closure allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                // A session of its own: no controlling terminal for the guest to type into
                // (TIOCSTI) or take over; its process group is its pid.
                nix::unistd::setsid()?;
                if report_raw == REPORT_FD {
                    nix::fcntl::fcntl(REPORT_FD, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))?;
                } else {
                    nix::unistd::dup2(report_raw, REPORT_FD)?;
                }
                Ok(())
            });
        }
        gah_util::process::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|source| SandboxGuestError::Start { program: self.helper.clone(), source })?;
        drop(report_w);
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        // Bounded: a guest that floods progress blocks on its own pipe, not gah-app's memory.
        let (tx, rx) = mpsc::sync_channel(256);
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
        // The guest's stderr lands in the console log up to a cap; the rest is drained unread.
        std::thread::spawn(move || {
            let mut stderr = stderr;
            let _ = io::copy(&mut io::Read::take(&mut stderr, CONSOLE_MAX_BYTES), &mut { console_file });
            let _ = io::copy(&mut stderr, &mut io::sink());
        });
        let reports = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = io::Read::read_to_string(&mut io::Read::take(fs::File::from(report_r), REPORTS_MAX_BYTES), &mut text);
            text
        });
        tracing::info!(pid = child.id(), cgroups = ?cgroups, "sandbox started");
        Ok(SandboxGuest { child, events: rx, reports: Some(reports), cgroups, console, scratch, out, finished: false })
    }
}

/// The guest's output folder.
const GUEST_OUT: &str = "/gah/out";

/// Most of the guest's stderr kept in the console log.
const CONSOLE_MAX_BYTES: u64 = 16 << 20;

/// Most of the jail's reports read (a few lines in practice).
const REPORTS_MAX_BYTES: u64 = 64 << 10;

/// True when AppArmor denies capabilities in unprivileged user namespaces (Ubuntu 24.04's
/// default).
/// The helper (this program again, as the guest's PID 1) with none of gah-app's environment
/// (the client's paths, account details) but the library path the client set
/// (client/app_start.cpp: `../../projects/X:.:../..`, relative to the slot, where the helper
/// starts too): a server-sent version has the BOINC libraries only in the slot, under their
/// sonames, so `$ORIGIN` alone does not find them.
fn helper_command(helper: &Path) -> std::process::Command {
    let mut cmd = gah_util::process::command(helper);
    cmd.env_clear();
    if let Some(path) = std::env::var_os("LD_LIBRARY_PATH") {
        cmd.env("LD_LIBRARY_PATH", path);
    }
    cmd
}

fn apparmor_restricts_userns() -> bool {
    fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").is_ok_and(|v| v.trim() == "1")
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

    fn recover_output(&self, slot: &Path) {
        // The guest's /gah/out lives in its upper layer until cleanup moves it; an app killed
        // first left it there. No guest runs now (it died with its app).
        take_output(&slot.join("sandbox"), &slot.join("out"));
    }
}

/// Moves the guest's `/gah/out` from the upper layer under `scratch` to `out`, replacing
/// it; a link or a file where the folder was is no output, and `out` is then empty.
fn take_output(scratch: &Path, out: &Path) {
    let guest_out = scratch.join("upper").join(GUEST_OUT.trim_start_matches('/'));
    if fs::symlink_metadata(&guest_out).is_ok_and(|m| m.is_dir()) {
        let _ = gah_util::untrusted::remove_tree(out);
        if let Err(e) = fs::rename(&guest_out, out) {
            tracing::warn!("could not take the guest's outputs from {}: {e}", guest_out.display());
        }
    }
    if !fs::symlink_metadata(out).is_ok_and(|m| m.is_dir()) {
        let _ = fs::remove_file(out);
        let _ = fs::create_dir_all(out);
    }
}

struct SandboxGuest {
    child: Child,
    events: mpsc::Receiver<GuestEvent>,
    /// The jail's report lines, once the helper has exited.
    reports: Option<std::thread::JoinHandle<String>>,
    cgroups: Vec<PathBuf>,
    console: PathBuf,
    scratch: PathBuf,
    /// Where the guest's `/gah/out` goes on the host once it is gone.
    out: PathBuf,
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

    /// The helper leads its own session and process group (`setsid`): its pid is the group's id.
    fn process_group(&self) -> i32 {
        // A pid is at most PID_MAX_LIMIT (2^22): it fits in an i32.
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    /// A limit the cgroups enforced during the run: a refused fork (pids) or an OOM kill.
    fn cgroup_limit_hit(&self) -> Option<(Limit, String)> {
        let counter = |file: &str, key: &str| -> u64 {
            self.cgroups
                .iter()
                .filter_map(|cg| fs::read_to_string(cg.join(file)).ok())
                .flat_map(|text| text.lines().filter_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok()).collect::<Vec<_>>())
                .sum()
        };
        let oom_kills = counter("memory.events", "oom_kill ") + counter("memory.oom_control", "oom_kill ");
        if oom_kills > 0 {
            return Some((Limit::Memory, format!("{oom_kills} guest processes killed for passing the guest's memory")));
        }
        let refused_forks = counter("pids.events", "max ");
        if refused_forks > 0 {
            return Some((Limit::Processes, format!("{refused_forks} forks refused at {MAX_GUEST_TASKS} guest processes")));
        }
        None
    }

    /// Takes the guest's `/gah/out` from the upper layer (the guest is gone: nothing can
    /// swap it now), then removes the cgroups and the scratch disk.
    fn cleanup(&mut self) {
        take_output(&self.scratch, &self.out);
        for cg in &self.cgroups {
            let _ = fs::remove_dir(cg);
        }
        // The overlay's upper layer is the guest's scratch disk: gone with the job, whatever
        // modes the guest (or overlayfs's work folder) left.
        let _ = gah_util::untrusted::remove_tree(&self.scratch);
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
                // Read before cleanup removes the cgroups.
                let cgroup_limit = self.cgroup_limit_hit();
                self.cleanup();
                let code = status.code().unwrap_or(-1);
                // Only the jail writes its report channel; the guest cannot forge a line there.
                let text = self.reports.take().and_then(|r| r.join().ok()).unwrap_or_default();
                let reports: Vec<Report> = text.lines().filter_map(Report::parse).collect();
                if code == LIMIT_EXCEEDED {
                    if let Some(Report::LimitExceeded { limit, detail }) =
                        reports.iter().rev().find(|r| matches!(r, Report::LimitExceeded { .. }))
                    {
                        return Ok(Some(GuestEvent::LimitExceeded { limit: *limit, detail: detail.clone() }));
                    }
                }
                if let Some((limit, detail)) = cgroup_limit {
                    return Ok(Some(GuestEvent::LimitExceeded { limit, detail }));
                }
                let detail = if code == SETUP_FAILED {
                    // Nothing reported: the helper failed before its jail (its own stderr says why).
                    let console = || gah_util::process::tail(&gah_util::untrusted::read_tail(&self.console, CONSOLE_TAIL_BYTES), 2);
                    let said = reports.iter().rev().find_map(|r| match r {
                        Report::SetupFailed(what) => Some(what.clone()),
                        Report::LimitExceeded { .. } => None,
                    });
                    format!("sandbox setup failed: {}", said.unwrap_or_else(console))
                } else {
                    format!("agent exited with {status}")
                };
                Ok(Some(GuestEvent::Exited { ok: code == 0, detail }))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An app killed mid-job left the guest's outputs in the upper layer: a fresh start
    /// finds them where outputs go, and a link planted there is no output.
    #[test]
    fn an_interrupted_guests_outputs_are_recovered() {
        let slot = tempfile::tempdir().unwrap();
        let pkg = slot.path().join("sandbox/upper/gah/out/binpkgs/app-arch/bzip2/bzip2-1.0.8-1.gpkg.tar");
        fs::create_dir_all(pkg.parent().unwrap()).unwrap();
        fs::write(&pkg, b"built").unwrap();
        take_output(&slot.path().join("sandbox"), &slot.path().join("out"));
        assert_eq!(fs::read(slot.path().join("out/binpkgs/app-arch/bzip2/bzip2-1.0.8-1.gpkg.tar")).unwrap(), b"built");

        let planted = tempfile::tempdir().unwrap();
        fs::create_dir_all(planted.path().join("sandbox/upper/gah")).unwrap();
        std::os::unix::fs::symlink("/etc", planted.path().join("sandbox/upper/gah/out")).unwrap();
        take_output(&planted.path().join("sandbox"), &planted.path().join("out"));
        let out = planted.path().join("out");
        assert!(fs::symlink_metadata(&out).unwrap().is_dir() && fs::read_dir(&out).unwrap().next().is_none());
    }

    #[test]
    fn the_jails_reports_read_back_as_written() {
        for report in [
            Report::SetupFailed("step 3, mount overlay on /x: EPERM".into()),
            Report::LimitExceeded { limit: Limit::Disk, detail: "the guest wrote 512 MiB: more than 256".into() },
        ] {
            assert_eq!(Report::parse(&report.to_string()), Some(report));
        }
        assert_eq!(Report::parse("the guest's own line"), None);
    }
}
