//! The `vm` backend: the guest under qemu (`-machine microvm`), KVM where it works, TCG
//! otherwise.
//!
//! One [`VmGuest`] owns one qemu process for its whole life and is its only controller:
//! QMP over a unix socket in the slot for `stop`/`cont`, SIGKILL for the end. The guest has
//! no network device and no shared folder: disks are virtio-blk (root overlay, read-only
//! input, raw output) and progress comes over a virtio-serial port written to a file.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use gah_util::atomic::AtomicError;
use gah_util::process::{command, run_checked, ProcessError};
use gah_util::untar::{self, Rules, UntarError};

use super::{
    parse_progress, Accelerator, Backend, BackendError, BackendKind, Guest, GuestEvent, GuestInput, GuestProgress, Image, MissingImageFile,
    CONSOLE_TAIL_BYTES,
};

/// Name of the virtio-serial port the agent writes progress to.
pub const PROGRESS_PORT: &str = "org.gentoo-at-home.progress";
/// Size of the blank output disk the guest writes its tar stream to.
const OUTPUT_DISK_BYTES: u64 = 1 << 30;
/// Most file data taken from the output disk: the tar stream cannot be larger than the disk,
/// so more means a corrupt stream.
const MAX_OUTPUT_BYTES: u64 = OUTPUT_DISK_BYTES;

/// A step of the vm backend that failed, with the file or program involved.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A file of the guest image is missing.
    #[error(transparent)]
    Image(#[from] MissingImageFile),
    /// A file could not be given to qemu's unprivileged user.
    #[error("give {} to qemu's user", path.display())]
    HandOver {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file or folder in the slot could not be created.
    #[error("create {}", path.display())]
    Create {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file in the slot could not be opened.
    #[error("open {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `qemu-img create` failed for a copy-on-write layer.
    #[error("create the disk layer {}", path.display())]
    Overlay {
        /// The new layer.
        path: PathBuf,
        /// What qemu-img said.
        #[source]
        source: ProcessError,
    },
    /// A staged input could not be copied for the input disk.
    #[error("copy {} for the input disk", path.display())]
    CopyInput {
        /// The file or folder copied.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `mkfs.ext4` failed to build the input disk.
    #[error("build the input disk {}", path.display())]
    InputDisk {
        /// The disk image.
        path: PathBuf,
        /// What mkfs said.
        #[source]
        source: ProcessError,
    },
    /// The progress log could not be cut back to the checkpoint's length.
    #[error("rewind the progress log {} to the checkpoint", path.display())]
    RewindProgress {
        /// The progress log.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// qemu could not be started.
    #[error("start {}", program.display())]
    Start {
        /// The qemu binary.
        program: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// qemu's state could not be read.
    #[error("wait for qemu")]
    Wait(#[source] io::Error),
    /// A QMP command to the running qemu failed.
    #[error("{step}")]
    Qmp {
        /// What it was for.
        step: &'static str,
        /// The cause.
        #[source]
        source: QmpError,
    },
    /// qemu's migration of the guest's memory to the checkpoint file failed.
    #[error("checkpoint migration {status}")]
    Migration {
        /// qemu's `query-migrate` answer.
        status: String,
    },
    /// A checkpoint file could not be made durable.
    #[error("sync {}", path.display())]
    Sync {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The checkpoint manifest could not be serialised.
    #[error("serialise the checkpoint manifest")]
    Manifest(#[source] serde_json::Error),
    /// The memory file or the manifest could not be committed.
    #[error("commit the checkpoint's {what}")]
    Commit {
        /// `memory file` or `manifest`.
        what: &'static str,
        /// The cause.
        #[source]
        source: AtomicError,
    },
    /// `qemu-img convert` failed to flatten the output disk's layers.
    #[error("flatten the output disk {}", path.display())]
    Flatten {
        /// The top layer.
        path: PathBuf,
        /// What qemu-img said.
        #[source]
        source: ProcessError,
    },
    /// The tar stream on the output disk could not be unpacked.
    #[error("unpack the output disk {}", path.display())]
    UnpackOutput {
        /// The raw disk.
        path: PathBuf,
        /// The cause.
        #[source]
        source: UntarError,
    },
}

fn create(path: &Path) -> impl FnOnce(io::Error) -> VmError + '_ {
    move |source| VmError::Create { path: path.to_path_buf(), source }
}

fn qmp(step: &'static str) -> impl FnOnce(QmpError) -> VmError {
    move |source| VmError::Qmp { step, source }
}

/// Lifecycle of the qemu process, logged on every transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// qemu started, the guest has not reported yet.
    Booting,
    /// The guest agent is reporting.
    Running,
    /// CPUs stopped through QMP.
    Paused,
    /// qemu has exited.
    Done,
}

/// The qemu backend.
pub struct VmBackend {
    /// The qemu binary.
    pub qemu: PathBuf,
    /// The guest image.
    pub image: Image,
    /// True to use KVM, false for TCG.
    pub kvm: bool,
}

impl Backend for VmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Vm
    }

    fn accelerator(&self) -> Accelerator {
        if self.kvm {
            Accelerator::Kvm
        } else {
            Accelerator::Tcg
        }
    }

    fn resumes_from(&self, slot: &Path) -> Option<PathBuf> {
        let dir = slot.join("vm");
        Checkpoint::load(&dir).filter(|cp| self.over_our_disk(cp)).map(|_| dir)
    }

    fn start(&self, input: &GuestInput) -> Result<Box<dyn Guest>, BackendError> {
        Ok(Box::new(self.start_vm(input)?))
    }
}

/// What a qemu process is started with; a restored process must match its checkpoint.
#[derive(Debug, Clone)]
struct Launch {
    /// The root disk the layers are over (the app version's, or the host's copy of the
    /// repository's).
    disk: PathBuf,
    root: PathBuf,
    output: PathBuf,
    layer: u32,
    memory_mib: u64,
    cpus: u32,
    cmdline: String,
}

impl VmBackend {
    /// Whether `cp`'s layers are over the disk this task has: a workunit that names no disk
    /// takes the repository's current one, which may have changed since the checkpoint (and
    /// the old one is no longer leased, so it may go). One written before checkpoints named
    /// their disk is taken as over it.
    fn over_our_disk(&self, cp: &Checkpoint) -> bool {
        let ours = cp.disk.as_ref().is_none_or(|d| d == &self.image.rootfs_ext4);
        if !ours {
            tracing::warn!(checkpoint = ?cp.disk, now = %self.image.rootfs_ext4.display(), "the checkpoint is over another root disk: starting afresh");
        }
        ours
    }

    fn start_vm(&self, input: &GuestInput) -> Result<VmGuest, VmError> {
        self.image.check()?;
        let dir = input.slot.join("vm");
        fs::create_dir_all(&dir).map_err(create(&dir))?;
        // An earlier qemu owned this folder: nothing it left may steer what root does here.
        sanitize(&dir)?;
        let runs_as = unprivileged_qemu_user();
        if let Some(id) = runs_as {
            // qemu's user may pass through the slot to its own folder, and list nothing else;
            // qemu-img, as that user, writes the layers there.
            fs::set_permissions(&input.slot, std::os::unix::fs::PermissionsExt::from_mode(0o711)).map_err(create(&input.slot))?;
            nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(id)), Some(nix::unistd::Gid::from_raw(id)))
                .map_err(|e| VmError::HandOver { path: dir.clone(), source: e.into() })?;
        }
        let output_dir = input.output_dir();
        fs::create_dir_all(&output_dir).map_err(create(&output_dir))?;
        let progress = dir.join("progress.log");
        let console = dir.join("console.log");

        // A checkpoint asks for what it was taken with; more than this task has is refused.
        let checkpoint =
            Checkpoint::load(&dir).filter(|cp| cp.memory_mib <= input.memory_mib && cp.cpus <= input.cpus.max(1) && self.over_our_disk(cp));
        let (launch, incoming) = match checkpoint {
            Some(cp) => {
                // Resume: fresh writable layers over the frozen ones, memory from the file.
                let root = dir.join(layer_name("root", cp.layer));
                let output = dir.join(layer_name("output", cp.layer));
                create_overlay(&root, &dir.join(&cp.root_frozen), "qcow2")?;
                create_overlay(&output, &dir.join(&cp.output_frozen), if cp.layer == 1 { "raw" } else { "qcow2" })?;
                tracing::info!(layer = cp.layer, memory = %cp.memory, "resuming from checkpoint");
                // Progress the guest reported after the checkpoint never happened now.
                fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&progress)
                    .and_then(|f| f.set_len(cp.progress_offset))
                    .map_err(|source| VmError::RewindProgress { path: progress.clone(), source })?;
                let launch = Launch {
                    disk: self.image.rootfs_ext4.clone(),
                    root,
                    output,
                    layer: cp.layer,
                    memory_mib: cp.memory_mib,
                    cpus: cp.cpus,
                    cmdline: cp.cmdline.clone(),
                };
                (launch, Some(dir.join(&cp.memory)))
            }
            None => {
                Checkpoint::discard_partial(&dir);
                // Root: a private copy-on-write layer; the image itself is never written.
                let root = dir.join(layer_name("root", 0));
                let _ = fs::remove_file(&root);
                create_overlay(&root, &self.image.rootfs_ext4, "raw")?;
                let input_disk = dir.join("input.ext4");
                make_input_disk(input, &dir.join("input-tree"), &input_disk)?;
                let output = dir.join("output.raw");
                let _ = fs::remove_file(&output);
                fs::File::create(&output).and_then(|f| f.set_len(OUTPUT_DISK_BYTES)).map_err(create(&output))?;
                for f in [&progress, &console] {
                    fs::File::create(f).map_err(create(f))?;
                }
                let launch = Launch {
                    disk: self.image.rootfs_ext4.clone(),
                    root,
                    output,
                    layer: 0,
                    memory_mib: input.memory_mib,
                    cpus: input.cpus,
                    cmdline: kernel_command_line(self.kvm),
                };
                (launch, None)
            }
        };
        let qmp_path = dir.join("qmp.sock");
        let _ = fs::remove_file(&qmp_path);
        if let Some(id) = runs_as {
            hand_over(&dir, id)?;
        }
        let mut cmd = self.command(&dir, &launch, &qmp_path, &progress, &console, runs_as)?;
        if let Some(memory) = incoming.as_deref() {
            cmd.arg("-incoming").arg(format!("exec:cat {}", quote_path(memory)));
        }
        let started = Instant::now();
        let child = cmd.spawn().map_err(|source| VmError::Start { program: self.qemu.clone(), source })?;
        let state = if incoming.is_some() { VmState::Running } else { VmState::Booting };
        // Read from the start, also after a restore: replaying the progress up to the
        // checkpoint puts the supervisor back at its phase and fraction (not at 0, which the
        // client would show as progress lost).
        let progress_reader = BufReader::new(open_no_follow(&progress).map_err(|source| VmError::Open { path: progress.clone(), source })?);
        tracing::info!(pid = child.id(), accel = self.accelerator().as_str(), state = ?state, "qemu started");
        Ok(VmGuest {
            child: Some(child),
            state,
            dir: dir.clone(),
            launch,
            qmp_path,
            qmp: None,
            progress: gah_util::untrusted::LineReader::new(progress_reader, GuestProgress::MAX_LINE),
            progress_path: progress,
            console,
            output_dir,
            started,
        })
    }

    fn command(
        &self,
        dir: &Path,
        launch: &Launch,
        qmp_path: &Path,
        progress: &Path,
        console: &Path,
        runs_as: Option<u32>,
    ) -> Result<std::process::Command, VmError> {
        let format_of = |p: &Path| if p.extension().is_some_and(|e| e == "qcow2") { "qcow2" } else { "raw" };
        let drive = |id: &str, file: &Path, ro: bool| {
            format!(
                "id={id},file={},format={},if=none,cache=writeback,discard=unmap{}",
                file.display(),
                format_of(file),
                if ro { ",readonly=on" } else { "" }
            )
        };
        let stderr_log = dir.join("qemu-stderr.log");
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&stderr_log)
            .map_err(create(&stderr_log))?;
        let mut cmd = command(&self.qemu);
        cmd.args(["-machine", "microvm,acpi=on,rtc=on", "-nodefaults", "-no-user-config", "-no-reboot"])
            .args(["-accel", if self.kvm { "kvm" } else { "tcg" }, "-cpu", if self.kvm { "host" } else { "max" }])
            .args(["-m", &launch.memory_mib.to_string(), "-smp", &launch.cpus.to_string()])
            .args(["-nic", "none", "-display", "none", "-monitor", "none"])
            // qemu's own seccomp filter: no obsolete calls, no setuid/setgid, no scheduler or
            // CPU-affinity changes. Not `spawn=deny`: checkpoints migrate through `exec:cat`.
            .args(["-sandbox", "on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .arg("-kernel")
            .arg(&self.image.kernel)
            .arg("-initrd")
            .arg(&self.image.initramfs)
            .arg("-append")
            .arg(&launch.cmdline)
            // Device order is the guest's vda, vdb, vdc.
            .args(["-drive", &drive("root", &launch.root, false), "-device", "virtio-blk-device,drive=root"])
            .args(["-drive", &drive("input", &dir.join("input.ext4"), true), "-device", "virtio-blk-device,drive=input"])
            .args(["-drive", &drive("output", &launch.output, false), "-device", "virtio-blk-device,drive=output"])
            .args(["-device", "virtio-serial-device", "-chardev"])
            .arg(format!("file,id=progress,path={},append=on", progress.display()))
            .args(["-device", &format!("virtserialport,chardev=progress,name={PROGRESS_PORT}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // SAFETY: setsid and setrlimit are async-signal-safe; nothing is allocated.
        unsafe {
            cmd.pre_exec(|| {
                // A session of its own (no controlling terminal), leading its process group.
                nix::unistd::setsid()?;
                // No file qemu writes (console, progress, layers, memory) grows past this.
                nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE, QEMU_MAX_FILE_BYTES, QEMU_MAX_FILE_BYTES)?;
                Ok(())
            });
        }
        if let Some(id) = runs_as {
            // /dev/kvm's group, if it has one: the only host resource qemu needs beyond its files.
            let kvm_group = fs::metadata("/dev/kvm").ok().map(|m| std::os::unix::fs::MetadataExt::gid(&m)).filter(|&g| g != 0);
            gah_util::process::run_as(&mut cmd, id, id, kvm_group.into_iter().collect());
        }
        gah_util::process::die_with_parent(&mut cmd);
        Ok(cmd)
    }
}

/// Largest file qemu may write: a layer over the 4 GiB root, the output disk, a memory
/// state, the console and progress logs all stay well below it.
const QEMU_MAX_FILE_BYTES: u64 = 16 << 30;

/// The unprivileged id qemu runs as when `gah-app` is root ([`super::GUEST_ID_BASE`]): the
/// guest's kernel is untrusted, and qemu is what it talks to.
fn unprivileged_qemu_user() -> Option<u32> {
    nix::unistd::geteuid().is_root().then_some(super::GUEST_ID_BASE)
}

/// Gives qemu's user the VM folder and what qemu writes in it (layers, output disk, logs,
/// sockets, checkpoints). The input disk stays root's: qemu opens it read-only, and could
/// not write it even if it tried.
fn hand_over(dir: &Path, id: u32) -> Result<(), VmError> {
    let owner = (Some(nix::unistd::Uid::from_raw(id)), Some(nix::unistd::Gid::from_raw(id)));
    let chown = |path: &Path| {
        nix::unistd::chown(path, owner.0, owner.1).map_err(|e| VmError::HandOver { path: path.to_path_buf(), source: e.into() })
    };
    chown(dir)?;
    for entry in fs::read_dir(dir).map_err(create(dir))?.flatten() {
        let path = entry.path();
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file && entry.file_name() != "input.ext4" {
            chown(&path)?;
        }
    }
    Ok(())
}

fn layer_name(drive: &str, layer: u32) -> String {
    format!("{drive}-L{layer}.qcow2")
}

fn create_overlay(file: &Path, backing: &Path, backing_format: &str) -> Result<(), VmError> {
    let _ = fs::remove_file(file);
    run_checked(qemu_img().args(["create", "-q", "-f", "qcow2", "-F", backing_format, "-b"]).arg(backing).arg(file))
        .map_err(|source| VmError::Overlay { path: file.to_path_buf(), source })?;
    Ok(())
}

/// `qemu-img`, as qemu's unprivileged user when `gah-app` is root: the layers it reads were
/// written by a qemu that ran the guest, and a rewritten header (a backing file naming a host
/// file) must find nothing that user cannot read.
fn qemu_img() -> std::process::Command {
    let mut cmd = command("qemu-img");
    if let Some(id) = unprivileged_qemu_user() {
        gah_util::process::run_as(&mut cmd, id, id, vec![]);
    }
    cmd
}

/// Opens a file of the VM folder for reading, never through a link.
fn open_no_follow(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW).open(path)
}

/// Removes from the VM folder (qemu's) every entry that is not a plain file or folder, and
/// every hard-linked file: root then never follows a link qemu planted. Called while no qemu
/// runs.
fn sanitize(dir: &Path) -> Result<(), VmError> {
    use std::os::unix::fs::MetadataExt;
    for entry in fs::read_dir(dir).map_err(create(dir))?.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() || (meta.is_file() && meta.nlink() == 1) {
            continue;
        }
        tracing::warn!(path = %path.display(), "removing what is no plain file from the VM folder");
        fs::remove_file(&path).map_err(create(&path))?;
    }
    Ok(())
}

/// A path as one word for the `sh -c` behind qemu's `exec:` migration URIs.
fn quote_path(path: &Path) -> String {
    gah_util::shell::quote(&path.to_string_lossy())
}

/// A committed checkpoint: the frozen disk layers and the memory file, named by
/// `checkpoint.json`, which is written last (durably, through a rename). A checkpoint whose
/// manifest is missing or names missing files is torn and ignored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The layer number; the running guest writes layer `layer` after this checkpoint.
    pub layer: u32,
    /// The root disk as it was, relative to the vm folder.
    pub root_frozen: String,
    /// The output disk as it was.
    pub output_frozen: String,
    /// The guest's memory and device state (qemu's migration stream).
    pub memory: String,
    /// The launch parameters the restored qemu must match.
    pub memory_mib: u64,
    /// Guest CPUs.
    pub cpus: u32,
    /// Kernel command line.
    pub cmdline: String,
    /// Fraction done when it was taken.
    pub fraction: f64,
    /// Length of the progress log then: what the guest wrote later is undone by a restore.
    pub progress_offset: u64,
    /// The root disk the layers are over, by absolute path (absent in checkpoints written
    /// before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<PathBuf>,
}

impl Checkpoint {
    const MANIFEST: &'static str = "checkpoint.json";

    /// The newest good checkpoint in `dir`, if any.
    pub fn load(dir: &Path) -> Option<Checkpoint> {
        let bytes = fs::read(dir.join(Self::MANIFEST)).ok()?;
        let cp: Checkpoint = match serde_json::from_slice(&bytes) {
            Ok(cp) => cp,
            Err(e) => {
                tracing::warn!("ignoring a torn checkpoint manifest: {e}");
                return None;
            }
        };
        for f in [&cp.root_frozen, &cp.output_frozen, &cp.memory] {
            // Names in this folder only: the folder is qemu's, and an absolute path would
            // make `join` leave it.
            let plain_name = matches!(Path::new(f).components().collect::<Vec<_>>().as_slice(), [std::path::Component::Normal(_)]);
            if !plain_name {
                tracing::warn!(name = %f, "ignoring a checkpoint that names a file outside its folder");
                return None;
            }
            if !dir.join(f).is_file() || !dir.join("input.ext4").is_file() {
                tracing::warn!(missing = %f, "ignoring a checkpoint whose files are missing");
                return None;
            }
        }
        Some(cp)
    }

    /// Removes what an interrupted checkpoint left behind.
    fn discard_partial(dir: &Path) {
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                // `.tmp`: qemu's unfinished memory file; `.tmp-`: an unfinished manifest.
                if name.ends_with(".tmp") || name.contains(".tmp-") || name.starts_with("memory-") || name == Self::MANIFEST {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    fn commit(&self, dir: &Path) -> Result<(), VmError> {
        let json = serde_json::to_vec_pretty(self).map_err(VmError::Manifest)?;
        gah_util::atomic::write(&dir.join(Self::MANIFEST), &json).map_err(|source| VmError::Commit { what: "manifest", source })
    }
}

/// The guest kernel's command line. Under TCG microvm has no timer to calibrate the TSC
/// against and the kernel hangs before init; RDTSC in a TCG guest reads the host's TSC, so
/// the host's frequency is the right value to give it.
fn kernel_command_line(kvm: bool) -> String {
    let base = "console=ttyS0 reboot=t panic=-1 root=/dev/vda rw quiet";
    match (kvm, host_tsc_khz()) {
        (false, Some(khz)) => format!("{base} tsc_early_khz={khz} tsc=reliable"),
        _ => base.to_owned(),
    }
}

/// The host's TSC frequency in kHz, measured against CLOCK_MONOTONIC_RAW over 100 ms.
pub fn host_tsc_khz() -> Option<u64> {
    #[cfg(target_arch = "x86_64")]
    {
        use nix::time::{clock_gettime, ClockId};
        let now = || clock_gettime(ClockId::CLOCK_MONOTONIC_RAW).ok().map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9);
        let t0 = now()?;
        // SAFETY: RDTSC has no memory effects; every x86_64 CPU has it.
        let c0 = unsafe { core::arch::x86_64::_rdtsc() };
        std::thread::sleep(Duration::from_millis(100));
        let t1 = now()?;
        // SAFETY: as above.
        let c1 = unsafe { core::arch::x86_64::_rdtsc() };
        let khz = (c1.wrapping_sub(c0)) as f64 / (t1 - t0) / 1000.0;
        // A clock rate in kHz (1e5 up to some 1e7) fits in u64, and `as` saturates anyway.
        #[allow(clippy::cast_possible_truncation)]
        let whole = khz.round() as u64;
        (khz > 100_000.0).then_some(whole)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// Builds the read-only input disk: an ext4 image of the staged `/gah/in` tree.
fn make_input_disk(input: &GuestInput, tree: &Path, disk: &Path) -> Result<(), VmError> {
    let _ = fs::remove_dir_all(tree);
    fs::create_dir_all(tree).map_err(create(tree))?;
    copy_tree(&input.staged, tree)?;
    for (src, name) in [(&input.repo, "repo"), (&input.distfiles, "distfiles"), (&input.binpkgs, "binpkgs")] {
        let _ = fs::remove_dir(tree.join(name));
        copy_tree(src, &tree.join(name))?;
    }
    let bytes = tree_size(tree).map_err(|source| VmError::CopyInput { path: tree.to_path_buf(), source })?;
    // ext4 metadata plus slack; small inputs still get a usable file system.
    let size = bytes + bytes / 3 + (64 << 20);
    let _ = fs::remove_file(disk);
    fs::File::create(disk).and_then(|f| f.set_len(size)).map_err(create(disk))?;
    run_checked(command("mkfs.ext4").args(["-q", "-F", "-L", "gah-in", "-E", "root_owner=0:0", "-d"]).arg(tree).arg(disk))
        .map_err(|source| VmError::InputDisk { path: disk.to_path_buf(), source })?;
    let _ = fs::remove_dir_all(tree);
    Ok(())
}

/// Copies a tree, hard-linking regular files where the file system allows.
fn copy_tree(from: &Path, to: &Path) -> Result<(), VmError> {
    let failed = |source| VmError::CopyInput { path: from.to_path_buf(), source };
    fs::create_dir_all(to).map_err(create(to))?;
    for entry in fs::read_dir(from).map_err(failed)? {
        let entry = entry.map_err(failed)?;
        let kind = entry.file_type().map_err(failed)?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            fs::read_link(entry.path())
                .and_then(|link| std::os::unix::fs::symlink(link, &target))
                .map_err(|source| VmError::CopyInput { path: entry.path(), source })?;
        } else if fs::hard_link(entry.path(), &target).is_err() {
            fs::copy(entry.path(), &target).map_err(|source| VmError::CopyInput { path: entry.path(), source })?;
        }
    }
    Ok(())
}

fn tree_size(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { tree_size(&entry.path())? + 4096 } else { meta.len() + 4096 };
    }
    Ok(total)
}

/// A running qemu guest.
pub struct VmGuest {
    child: Option<Child>,
    state: VmState,
    dir: PathBuf,
    launch: Launch,
    qmp_path: PathBuf,
    qmp: Option<Qmp>,
    progress: gah_util::untrusted::LineReader<BufReader<fs::File>>,
    progress_path: PathBuf,
    console: PathBuf,
    output_dir: PathBuf,
    started: Instant,
}

impl VmGuest {
    fn transition(&mut self, to: VmState, why: &str) {
        if self.state != to {
            tracing::info!(from = ?self.state, to = ?to, elapsed_s = self.started.elapsed().as_secs_f64(), why, "vm state");
            self.state = to;
        }
    }

    fn qmp(&mut self) -> Result<&mut Qmp, QmpError> {
        match &mut self.qmp {
            Some(qmp) => Ok(qmp),
            none => Ok(none.insert(Qmp::connect(&self.qmp_path)?)),
        }
    }

    /// Runs a QMP command for `step`.
    fn execute(&mut self, step: &'static str, command: &str, arguments: serde_json::Value) -> Result<serde_json::Value, VmError> {
        self.qmp().and_then(|q| q.execute_with(command, arguments)).map_err(qmp(step))
    }

    fn read_progress(&mut self) -> Option<GuestEvent> {
        // A line still being written stays in the reader for the next call.
        while let Some(line) = self.progress.next_line() {
            if let Some(event) = parse_progress(&line) {
                return Some(event);
            }
        }
        None
    }

    fn collect_output(&self) -> Result<(), VmError> {
        // After checkpoints the output disk is a qcow2 chain: flatten it to raw first.
        let raw = if self.launch.output.extension().is_some_and(|e| e == "qcow2") {
            let flat = self.dir.join("output-flat.raw");
            sanitize(&self.dir)?;
            let _ = fs::remove_file(&flat);
            run_checked(qemu_img().args(["convert", "-O", "raw"]).arg(&self.launch.output).arg(&flat))
                .map_err(|source| VmError::Flatten { path: self.launch.output.clone(), source })?;
            flat
        } else {
            self.launch.output.clone()
        };
        // The guest wrote a tar stream at the start of the raw disk (the zeros after it end
        // the archive). Only plain files: the guest is not trusted with links.
        let file = open_no_follow(&raw).map_err(|source| VmError::Open { path: raw.clone(), source })?;
        let unpacked = untar::unpack(file, &self.output_dir, Rules::plain_files(MAX_OUTPUT_BYTES))
            .map_err(|source| VmError::UnpackOutput { path: raw.clone(), source })?;
        if !unpacked.skipped.is_empty() {
            tracing::warn!(skipped = ?unpacked.skipped, "the output disk held entries that are not plain files");
        }
        Ok(())
    }
}

impl VmGuest {
    /// Takes a checkpoint: stop, freeze the writable disks under new layers, save memory,
    /// commit the manifest, continue. Returns the memory file's size.
    fn take_checkpoint(&mut self, fraction: f64) -> Result<u64, VmError> {
        let was_running = self.state != VmState::Paused;
        let t0 = Instant::now();
        self.execute("stop the guest for a checkpoint", "stop", serde_json::Value::Null)?;
        let layer = self.launch.layer + 1;
        let root_frozen = file_name(&self.launch.root);
        let output_frozen = file_name(&self.launch.output);
        let (root_next, output_next) = (self.dir.join(layer_name("root", layer)), self.dir.join(layer_name("output", layer)));
        for (device, next) in [("root", &root_next), ("output", &output_next)] {
            let _ = fs::remove_file(next);
            self.execute(
                "freeze a disk under a new layer",
                "blockdev-snapshot-sync",
                serde_json::json!({ "device": device, "snapshot-file": next.display().to_string(), "format": "qcow2", "mode": "absolute-paths" }),
            )?;
        }
        self.launch.root = root_next;
        self.launch.output = output_next;
        self.launch.layer = layer;
        let memory = format!("memory-{layer}.state");
        let tmp = self.dir.join(format!("{memory}.tmp"));
        self.execute("save the memory", "migrate", serde_json::json!({ "uri": format!("exec:cat > {}", quote_path(&tmp)) }))?;
        loop {
            let status = self.execute("follow the memory's saving", "query-migrate", serde_json::Value::Null)?;
            match status.get("status").and_then(|s| s.as_str()) {
                Some("completed") => break,
                Some("failed") | Some("cancelled") => return Err(VmError::Migration { status: status.to_string() }),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let size = fs::metadata(&tmp).map_err(|source| VmError::Open { path: tmp.clone(), source })?.len();
        for frozen in [&root_frozen, &output_frozen] {
            let path = self.dir.join(frozen);
            fs::File::open(&path).and_then(|f| f.sync_all()).map_err(|source| VmError::Sync { path, source })?;
        }
        gah_util::atomic::rename_durably(&tmp, &self.dir.join(&memory))
            .map_err(|source| VmError::Commit { what: "memory file", source })?;
        let cp = Checkpoint {
            layer,
            root_frozen,
            output_frozen,
            memory: memory.clone(),
            memory_mib: self.launch.memory_mib,
            cpus: self.launch.cpus,
            cmdline: self.launch.cmdline.clone(),
            fraction,
            progress_offset: fs::metadata(&self.progress_path).map(|m| m.len()).unwrap_or(0),
            disk: Some(self.launch.disk.clone()),
        };
        cp.commit(&self.dir)?;
        // Only the newest memory file is ever needed; the frozen layers form the chain.
        for old in 1..layer {
            let _ = fs::remove_file(self.dir.join(format!("memory-{old}.state")));
        }
        if was_running {
            self.execute("continue the guest after a checkpoint", "cont", serde_json::Value::Null)?;
        }
        tracing::info!(layer, bytes = size, seconds = t0.elapsed().as_secs_f64(), "checkpoint committed");
        Ok(size)
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

impl Guest for VmGuest {
    fn checkpoint(&mut self, fraction: f64) -> Result<Option<u64>, BackendError> {
        if self.state == VmState::Done {
            return Ok(None);
        }
        Ok(Some(self.take_checkpoint(fraction)?))
    }

    fn next_event(&mut self, timeout: Duration) -> Result<Option<GuestEvent>, BackendError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.read_progress() {
                if self.state == VmState::Booting {
                    self.transition(VmState::Running, "first progress line");
                }
                return Ok(Some(event));
            }
            let Some(child) = self.child.as_mut() else { return Ok(None) };
            if let Some(status) = child.try_wait().map_err(VmError::Wait)? {
                self.child = None;
                self.transition(VmState::Done, "qemu exited");
                let collected = self.collect_output();
                let has_outcome = self.output_dir.join("outcome.json").is_file();
                let ok = status.success() && collected.is_ok() && has_outcome;
                let detail = match collected {
                    Err(e) => format!("qemu exited with {status}; output disk unreadable: {}", gah_util::error_chain(&e)),
                    Ok(()) if !has_outcome => format!(
                        "qemu exited with {status} without an outcome; console: {}",
                        gah_util::process::tail(&gah_util::untrusted::read_tail(&self.console, CONSOLE_TAIL_BYTES), 4)
                    ),
                    Ok(()) => format!("qemu exited with {status}"),
                };
                return Ok(Some(GuestEvent::Exited { ok, detail }));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pause(&mut self) -> Result<(), BackendError> {
        if self.state == VmState::Done {
            return Ok(());
        }
        self.execute("pause the guest", "stop", serde_json::Value::Null)?;
        self.transition(VmState::Paused, "pause requested");
        Ok(())
    }

    fn resume(&mut self) -> Result<(), BackendError> {
        if self.state != VmState::Paused {
            return Ok(());
        }
        self.execute("resume the guest", "cont", serde_json::Value::Null)?;
        self.transition(VmState::Running, "resume requested");
        Ok(())
    }

    fn kill(&mut self) -> Result<(), BackendError> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.transition(VmState::Done, "killed");
        Ok(())
    }

    fn cpu_seconds(&self) -> f64 {
        self.child.as_ref().map(|c| super::process_cpu_seconds(c.id())).unwrap_or(0.0)
    }

    fn console_log(&self) -> PathBuf {
        self.console.clone()
    }
}

impl Drop for VmGuest {
    fn drop(&mut self) {
        // Last defence: qemu never outlives its owner.
        let _ = self.kill();
    }
}

/// A QMP exchange that failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be connected to (qemu gone, or never listening).
    #[error("connect to QMP at {}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The connected socket could not be set up.
    #[error("set up the QMP socket {}", path.display())]
    Socket {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A command could not be sent.
    #[error("send QMP {command}")]
    Send {
        /// The command.
        command: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A reply could not be read (including the read timeout).
    #[error("read a QMP reply")]
    Read(#[source] io::Error),
    /// qemu closed the connection.
    #[error("QMP connection closed")]
    Closed,
    /// qemu sent something that is not JSON.
    #[error("QMP sent `{line}`")]
    Garbled {
        /// What it sent.
        line: String,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// qemu refused a command.
    #[error("QMP {command}: {error}")]
    Refused {
        /// The command.
        command: String,
        /// qemu's `error` object.
        error: serde_json::Value,
    },
}

/// A minimal QMP client: greeting, capabilities, then one command at a time.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects (retrying while qemu creates the socket) and negotiates capabilities.
    pub fn connect(path: &Path) -> Result<Qmp, QmpError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("QMP not ready: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(source) => return Err(QmpError::Connect { path: path.to_path_buf(), source }),
            }
        };
        let socket = |source| QmpError::Socket { path: path.to_path_buf(), source };
        stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(socket)?;
        let mut qmp = Qmp { reader: BufReader::new(stream.try_clone().map_err(socket)?), writer: stream };
        qmp.read_reply()?; // greeting
        qmp.execute("qmp_capabilities")?;
        Ok(qmp)
    }

    /// Runs a command without arguments and returns its `return` value.
    pub fn execute(&mut self, command: &str) -> Result<serde_json::Value, QmpError> {
        self.execute_with(command, serde_json::Value::Null)
    }

    /// Runs a command with arguments.
    pub fn execute_with(&mut self, command: &str, arguments: serde_json::Value) -> Result<serde_json::Value, QmpError> {
        let mut msg = serde_json::json!({ "execute": command });
        if !arguments.is_null() {
            msg["arguments"] = arguments;
        }
        let line = format!("{msg}\n");
        self.writer.write_all(line.as_bytes()).map_err(|source| QmpError::Send { command: command.to_owned(), source })?;
        let mut reply = self.read_reply()?;
        if let Some(error) = reply.get_mut("error") {
            return Err(QmpError::Refused { command: command.to_owned(), error: error.take() });
        }
        Ok(reply.get_mut("return").map(serde_json::Value::take).unwrap_or_default())
    }

    fn read_reply(&mut self) -> Result<serde_json::Value, QmpError> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).map_err(QmpError::Read)? == 0 {
                return Err(QmpError::Closed);
            }
            let value: serde_json::Value =
                serde_json::from_str(&line).map_err(|source| QmpError::Garbled { line: line.trim().to_owned(), source })?;
            // Asynchronous events interleave with replies; they are logged, not answers.
            if value.get("event").is_some() {
                tracing::debug!(event = %value, "QMP event");
                continue;
            }
            return Ok(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> VmBackend {
        VmBackend { qemu: "qemu-system-x86_64".into(), image: Image::in_dir(Path::new("/nonexistent")), kvm: false }
    }

    #[test]
    fn a_start_resumes_only_from_a_whole_checkpoint() {
        let slot = tempfile::tempdir().unwrap();
        let dir = slot.path().join("vm");
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(backend().resumes_from(slot.path()), None);
        for f in ["input.ext4", "root-L0.qcow2", "output.raw", "memory-1.state"] {
            fs::write(dir.join(f), b"").unwrap();
        }
        let cp = Checkpoint {
            layer: 1,
            root_frozen: "root-L0.qcow2".into(),
            output_frozen: "output.raw".into(),
            memory: "memory-1.state".into(),
            memory_mib: 512,
            cpus: 1,
            cmdline: "console=ttyS0".into(),
            fraction: 0.5,
            progress_offset: 0,
            disk: Some(backend().image.rootfs_ext4),
        };
        cp.commit(&dir).unwrap();
        assert_eq!(backend().resumes_from(slot.path()), Some(dir.clone()));
        // Over another disk (the repository's current one changed since): not resumed.
        Checkpoint { disk: Some("/elsewhere/rootfs.ext4".into()), ..cp.clone() }.commit(&dir).unwrap();
        assert_eq!(backend().resumes_from(slot.path()), None);
        cp.commit(&dir).unwrap();
        // A torn checkpoint (its memory file lost) is no checkpoint.
        fs::remove_file(dir.join("memory-1.state")).unwrap();
        assert_eq!(backend().resumes_from(slot.path()), None);
    }

    #[test]
    fn a_fresh_start_discards_what_an_interrupted_checkpoint_left() {
        let dir = tempfile::tempdir().unwrap();
        let debris = ["checkpoint.json", ".checkpoint.json.tmp-7-0", "memory-2.state.tmp", "memory-1.state"];
        for f in debris.iter().chain(&["input.ext4"]) {
            fs::write(dir.path().join(f), b"").unwrap();
        }
        Checkpoint::discard_partial(dir.path());
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["input.ext4"]);
    }
}
