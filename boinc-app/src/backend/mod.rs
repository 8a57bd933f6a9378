//! Isolation backends behind one interface: [`vm`] (qemu) and [`sandbox`] (namespaces).
//!
//! Both run the same guest agent on the same guest root (see `docs/GUEST.md`). The app and the
//! supervisor know only [`Backend`] and [`Guest`]; [`choose`] is the one place that picks and
//! builds a backend.

pub mod accel;
pub mod choose;
pub mod sandbox;
pub mod vm;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use gah_core::progress::{Accelerator, BackendKind, GuestProgress, Phase};

/// How much of a guest's console (or the sandbox's stderr log) is read for a diagnostic: the
/// guest writes it, and could make it as large as its disk.
pub const CONSOLE_TAIL_BYTES: u64 = 64 << 10;

/// The guest image's files the vm backend boots (see `docs/GUEST.md`).
#[derive(Debug, Clone)]
pub struct Image {
    /// `rootfs.ext4`.
    pub rootfs_ext4: PathBuf,
    /// `vmlinux`.
    pub kernel: PathBuf,
    /// `initramfs.cpio.gz`.
    pub initramfs: PathBuf,
}

/// A file of the guest image that is not there.
#[derive(Debug, thiserror::Error)]
#[error("guest image file {} is missing (build it with vm-images/test-image/build.sh)", path.display())]
pub struct MissingImageFile {
    /// The file.
    pub path: PathBuf,
}

impl Image {
    /// The image files in `dir`.
    pub fn in_dir(dir: &Path) -> Image {
        Image { rootfs_ext4: dir.join("rootfs.ext4"), kernel: dir.join("vmlinux"), initramfs: dir.join("initramfs.cpio.gz") }
    }

    /// Names the first missing file, if any.
    pub fn check(&self) -> Result<(), MissingImageFile> {
        self.check_boot_files()?;
        match self.rootfs_ext4.is_file() {
            true => Ok(()),
            false => Err(MissingImageFile { path: self.rootfs_ext4.clone() }),
        }
    }

    /// Names the kernel or the initramfs if missing (the disk may come from elsewhere).
    pub fn check_boot_files(&self) -> Result<(), MissingImageFile> {
        match [&self.kernel, &self.initramfs].into_iter().find(|f| !f.is_file()) {
            Some(f) => Err(MissingImageFile { path: f.clone() }),
            None => Ok(()),
        }
    }
}

/// What failed in a backend or its guest. The supervisor only passes it on.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// In the qemu backend.
    #[error(transparent)]
    Vm(#[from] vm::VmError),
    /// In the namespace backend.
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxGuestError),
}

/// What a backend needs to start a guest for one job.
#[derive(Debug, Clone)]
pub struct GuestInput {
    /// The staged `/gah/in` tree: `job.json`, `gah-agent`, and mount points for the rest.
    pub staged: PathBuf,
    /// The ebuild repository (`/gah/in/repo`).
    pub repo: PathBuf,
    /// The distfiles (`/gah/in/distfiles`).
    pub distfiles: PathBuf,
    /// Cached binary packages (`/gah/in/binpkgs`).
    pub binpkgs: PathBuf,
    /// The job's private working folder (the "slot"): scratch, logs, the output.
    pub slot: PathBuf,
    /// Memory for the guest, in MiB.
    pub memory_mib: u64,
    /// Most the guest may write (scratch and outputs), in MiB.
    pub disk_mib: u64,
    /// CPUs for the guest.
    pub cpus: u32,
}

impl GuestInput {
    /// Where the guest's `/gah/out` ends up on the host once the guest is done.
    pub fn output_dir(&self) -> PathBuf {
        self.slot.join("out")
    }
}

/// The host id that guests and everything facing them run as when `gah-app` is root: the
/// first of a range that `/etc/subuid`, systemd-nspawn (up to 0x6FFFFFFF) and systemd's
/// foreign range (0x7FFE0000) leave alone, so no host user or container owns it. The
/// sandbox maps guest ids `0..65536` onto `GUEST_ID_BASE..`; qemu runs as `GUEST_ID_BASE`.
pub const GUEST_ID_BASE: u32 = 0x7F00_0000;

/// Something the guest reported.
#[derive(Debug, Clone, PartialEq)]
pub enum GuestEvent {
    /// A `GAH-PROGRESS` line ([`GuestProgress`]): fraction done (0..1) and the phase.
    Progress { fraction: f64, phase: Phase },
    /// The guest has finished (whatever the job's own outcome); its output is in
    /// [`GuestInput::output_dir`]. `ok` is false when the guest itself failed.
    Exited { ok: bool, detail: String },
    /// The guest passed one of the volunteer's limits (and was killed, or had a process
    /// refused or killed by it); its output is whatever it left.
    LimitExceeded { limit: Limit, detail: String },
}

/// A limit the host sets on a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Bytes written to the guest's scratch disk and outputs.
    Disk,
    /// Resident memory of the guest's processes.
    Memory,
    /// Processes and threads of the guest.
    Processes,
}

impl Limit {
    /// The limit's name in statuses and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Disk => "disk",
            Limit::Memory => "memory",
            Limit::Processes => "processes",
        }
    }

    /// The limit named by [`Limit::as_str`].
    pub fn parse(name: &str) -> Option<Limit> {
        [Limit::Disk, Limit::Memory, Limit::Processes].into_iter().find(|l| l.as_str() == name)
    }
}

/// A running guest. Owned by exactly one supervisor.
pub trait Guest {
    /// Waits up to `timeout` for the next event; `None` if nothing happened.
    fn next_event(&mut self, timeout: Duration) -> Result<Option<GuestEvent>, BackendError>;
    /// Stops the guest's CPUs / processes, keeping its state.
    fn pause(&mut self) -> Result<(), BackendError>;
    /// Undoes [`Guest::pause`].
    fn resume(&mut self) -> Result<(), BackendError>;
    /// Saves the guest's whole state so a later start in the same slot resumes from here.
    /// Returns the checkpoint's size, or `None` when the backend resumes by phase instead.
    fn checkpoint(&mut self, fraction: f64) -> Result<Option<u64>, BackendError>;
    /// Kills the guest for good; nothing of it keeps running afterwards.
    fn kill(&mut self) -> Result<(), BackendError>;
    /// CPU seconds the guest has used so far (qemu's, or every sandboxed process's).
    fn cpu_seconds(&self) -> f64;
    /// Host-side log of the guest (console or sandbox stderr), for diagnostics.
    fn console_log(&self) -> PathBuf;
}

/// An isolation backend.
pub trait Backend {
    /// Which kind of guest this is.
    fn kind(&self) -> BackendKind;
    /// What runs the guest's CPUs.
    fn accelerator(&self) -> Accelerator;
    /// The saved guest state a start in `slot` would resume from, if a good one is there;
    /// `None` when a start begins afresh (always for a backend that resumes by phase).
    fn resumes_from(&self, slot: &Path) -> Option<PathBuf>;
    /// Puts what an interrupted guest in `slot` left (an app killed before it could clean
    /// up) where [`GuestInput::output_dir`] is, so a fresh start can keep its binary
    /// packages. Nothing to do for a backend whose outputs are there already.
    fn recover_output(&self, _slot: &Path) {}
    /// Starts a guest for the job staged in `input`, from its saved state if there is one.
    fn start(&self, input: &GuestInput) -> Result<Box<dyn Guest>, BackendError>;
}

/// User + system CPU seconds of one process, from `/proc/PID/stat`.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Parses a `GAH-PROGRESS <fraction> <phase>` line.
pub fn parse_progress(line: &str) -> Option<GuestEvent> {
    GuestProgress::parse(line).map(|p| GuestEvent::Progress { fraction: p.fraction, phase: p.phase })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_round_trip() {
        let line = GuestProgress { fraction: 0.25, phase: Phase::Compile }.to_line();
        assert_eq!(parse_progress(&line), Some(GuestEvent::Progress { fraction: 0.25, phase: Phase::Compile }));
        assert_eq!(parse_progress("GAH-PROGRESS 7 compile"), None);
        assert_eq!(parse_progress("noise"), None);
    }
}
