//! `gah-app`: what a volunteer's BOINC client runs for one workunit.
//!
//! Resolves the inputs by logical name, picks a backend that works here (saying which and
//! why), stages `/gah/in`, supervises the guest while answering the client (progress,
//! suspend/resume, quit, abort), packs the outcome archive and calls `boinc_finish`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use gah_core::job::Job;
use gah_core::outcome::{Outcome, Status};

use crate::backend::accel::{kvm_usable, qemu_binary};
use crate::backend::sandbox::SandboxBackend;
use crate::backend::vm::{Image, VmBackend};
use crate::backend::{Backend, GuestInput};
use crate::supervisor::{Command, Ending, Supervisor};

/// Which isolation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// A VM with working KVM, else the sandbox, else a VM under TCG.
    Auto,
    /// qemu (KVM when it works here, TCG otherwise).
    Vm,
    /// Linux namespaces over the guest root.
    Sandbox,
}

/// Builds and tests one Gentoo package configuration in an isolated guest.
///
/// Under the BOINC client every path is a logical name resolved through BOINC; run by hand
/// (standalone), names are plain paths.
///
/// Example (standalone):
///   gah-app --job job.json --repo vm-images/overlay --distfiles .cache/distfiles \
///           --binpkgs .cache/binpkgs --image .cache/images/test --output outcome.tar.gz
///
/// Under BOINC the defaults are the logical names: job.json, repo.tar and distfiles.tar
/// (workunit inputs), vmlinux, initramfs.cpio.gz, rootfs.ext4 (the vm app version's files),
/// rootfs.tar (the sandbox's: unpacked once per host into the project folder),
/// outcome.tar.gz (the result).
#[derive(Debug, Parser)]
#[command(name = "gah-app", version, verbatim_doc_comment)]
pub struct Args {
    /// The job file (logical name under BOINC).
    #[arg(long, default_value = "job.json")]
    pub job: String,
    /// Where to write the outcome archive (logical name under BOINC).
    #[arg(long, default_value = "outcome.tar.gz")]
    pub output: String,
    /// The ebuild repository: a folder, or a tar file (a workunit input) unpacked into the slot.
    #[arg(long, default_value = "repo.tar")]
    pub repo: String,
    /// The distfiles: a folder, or a tar file unpacked into the slot.
    #[arg(long, default_value = "distfiles.tar")]
    pub distfiles: String,
    /// Cached binary packages (read-only to the guest).
    #[arg(long, default_value = "binpkgs")]
    pub binpkgs: String,
    /// Add the binary packages the job built to --binpkgs afterwards.
    #[arg(long)]
    pub update_binpkgs: bool,
    /// A guest image folder holding vmlinux, initramfs.cpio.gz, rootfs.ext4 and rootfs/;
    /// sets the four options below at once (for runs by hand).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// The guest kernel (logical name under BOINC).
    #[arg(long, default_value = "vmlinux")]
    pub kernel: String,
    /// The guest initramfs.
    #[arg(long, default_value = "initramfs.cpio.gz")]
    pub initramfs: String,
    /// The guest root as an ext4 disk image (vm backend).
    #[arg(long, default_value = "rootfs.ext4")]
    pub rootfs_disk: String,
    /// The guest root as a folder (sandbox backend); when it is no folder, --rootfs-archive
    /// is used.
    #[arg(long, default_value = "rootfs")]
    pub rootfs_tree: String,
    /// The guest root as a tar file (sandbox backend; logical name under BOINC), unpacked
    /// once beside itself (`<file>.d/`) and shared by later tasks.
    #[arg(long, default_value = "rootfs.tar")]
    pub rootfs_archive: String,
    /// The guest agent program (default: `gah-agent` beside this program).
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// Which isolation backend.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// The job's private working folder (default: `./slot` in the current folder).
    #[arg(long)]
    pub slot: Option<PathBuf>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory_mib: u64,
    /// Guest CPUs (default: what the client allots, else the CPUs this host has).
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Also checkpoint every this many seconds (without a client, BOINC's runtime asks
    /// every 300 s). 0 never checkpoints, not even when asked: for measuring the overhead.
    #[arg(long)]
    pub checkpoint_secs: Option<u64>,
}

/// Runs the app; returns only in standalone error cases (BOINC's finish exits the process).
pub fn main(args: Args) -> anyhow::Result<()> {
    let runtime = boinc_api::init(&boinc_api::Options::wrapper()).context("initialise the BOINC runtime")?;
    // Absolute: the client hands out paths relative to the slot (`../../projects/…`), and
    // qemu-img reads a relative backing file relative to the overlay's own folder.
    let resolve = |name: &str| -> anyhow::Result<PathBuf> { Ok(std::path::absolute(runtime.resolve_filename(name)?)?) };
    let job_path = resolve(&args.job)?;
    let job = Job::from_json(&fs::read(&job_path).with_context(|| format!("read job {}", job_path.display()))?)
        .with_context(|| format!("job {}", job_path.display()))?;
    let image = match &args.image {
        Some(dir) => Image::in_dir(dir),
        None => Image { kernel: resolve(&args.kernel)?, initramfs: resolve(&args.initramfs)?, rootfs_ext4: resolve(&args.rootfs_disk)? },
    };
    // Only when the sandbox is a candidate: unpacking the archive costs a while, once.
    let rootfs_tree = || -> anyhow::Result<PathBuf> {
        let tree = match &args.image {
            Some(dir) => dir.join("rootfs"),
            None => resolve(&args.rootfs_tree)?,
        };
        if tree.is_dir() {
            return Ok(tree);
        }
        let archive = resolve(&args.rootfs_archive)?;
        if !archive.is_file() {
            bail!("no guest root: neither the folder {} nor the archive {} exists", tree.display(), archive.display());
        }
        crate::rootfs_archive::unpacked(&archive)
    };
    let output = resolve(&args.output)?;
    let binpkgs = resolve(&args.binpkgs)?;
    fs::create_dir_all(&binpkgs).with_context(|| format!("create {}", binpkgs.display()))?;
    let slot = args.slot.clone().unwrap_or_else(|| PathBuf::from("slot"));
    let slot = std::path::absolute(&slot)?;
    // A restarted task resumes from its checkpoint; otherwise it starts clean, keeping the
    // binary packages an earlier attempt built (the sandbox resumes by phase).
    if crate::backend::vm::Checkpoint::load(&slot.join("vm")).is_none() {
        salvage_binpkgs(&slot.join("out/binpkgs"), &binpkgs);
        let _ = fs::remove_dir_all(&slot);
    } else {
        eprintln!("gah-app: resuming from the checkpoint in {}", slot.join("vm").display());
    }
    fs::create_dir_all(&slot).with_context(|| format!("create slot {}", slot.display()))?;

    let backend = match choose_backend(args.backend, &image, rootfs_tree) {
        Ok(b) => b,
        Err(e) if !runtime.is_standalone() => {
            // Nothing here can run a guest: tell the volunteer, and let the client retry later.
            let reason = format!("gentoo@home cannot run here: {e:#}");
            runtime.temporary_exit(Duration::from_secs(86_400), &reason, true)?;
            unreachable!("temporary_exit exits");
        }
        Err(e) => return Err(e),
    };
    let agent = match &args.agent {
        Some(a) => a.clone(),
        None => std::env::current_exe()?.with_file_name("gah-agent"),
    };
    let staged = stage_input(&slot, &job_path, &agent)?;
    let limits = crate::init_data::read(Path::new(boinc_api::INIT_DATA_FILE));
    let host_cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    let cpus = args.cpus.or(limits.ncpus).unwrap_or(host_cpus).clamp(1, host_cpus);
    // The workunit's memory bound, less the VMM's own share, caps the guest.
    let memory_mib = match limits.memory_bound_bytes {
        Some(bytes) => ((bytes / (1 << 20)) * 9 / 10).clamp(512, args.memory_mib.max(512)),
        None => args.memory_mib,
    };
    let input = GuestInput {
        staged,
        repo: folder_or_unpacked(&resolve(&args.repo)?, &slot.join("inputs/repo"))?,
        distfiles: folder_or_unpacked(&resolve(&args.distfiles)?, &slot.join("inputs/distfiles"))?,
        binpkgs: std::path::absolute(&binpkgs)?,
        slot: slot.clone(),
        memory_mib,
        cpus,
    };
    eprintln!("gah-app: {} on backend {} ({})", job.job_id, backend.name(), backend.accelerator());
    let guest = backend.start(&input)?;
    // Boot and platform overhead on top of the job's own limit.
    let limit = Duration::from_secs(job.timeout_secs + 300);
    let mut supervisor = Supervisor::new(guest, limit);
    let mut last_checkpoint = std::time::Instant::now();
    let mut last_status_report = std::time::Instant::now();
    // CPU time as the client counts it: earlier runs up to their last checkpoint, plus this one.
    let earlier_cpu = limits.earlier_cpu_secs;
    let task_cpu = |supervisor: &Supervisor| earlier_cpu + own_cpu_seconds() + supervisor.cpu_seconds();
    let mut checkpoint_cpu = earlier_cpu;
    let never_checkpoint = args.checkpoint_secs == Some(0);
    let ending = loop {
        let status = runtime.status();
        let command = if status.abort_request {
            Some(Command::Abort)
        } else if status.quit_request || status.no_heartbeat {
            Some(Command::Quit)
        } else if status.suspended {
            Some(Command::Suspend)
        } else {
            Some(Command::Resume)
        };
        if let Some(command) = command {
            if let Some(ending) = supervisor.command(command)? {
                break ending;
            }
        }
        if let Some(ending) = supervisor.poll(Duration::from_millis(500))? {
            break ending;
        }
        runtime.fraction_done(supervisor.fraction);
        // The client counts only our own process: tell it what the guest used, as BOINC's
        // wrappers do (the runtime's own status messages are off: Options::wrapper). Not while
        // suspended, as the runtime itself: what the guest did before the freeze took hold
        // would show as progress made while suspended.
        if !status.suspended && last_status_report.elapsed() >= Duration::from_secs(1) {
            runtime.report_app_status(task_cpu(&supervisor), checkpoint_cpu, supervisor.fraction);
            last_status_report = std::time::Instant::now();
        }
        let own_period_due = args.checkpoint_secs.is_some_and(|secs| secs > 0 && last_checkpoint.elapsed() >= Duration::from_secs(secs));
        if !never_checkpoint && (runtime.time_to_checkpoint() || own_period_due) {
            last_checkpoint = std::time::Instant::now();
            match supervisor.checkpoint() {
                Ok(Some(bytes)) => {
                    checkpoint_cpu = task_cpu(&supervisor);
                    tracing::info!(bytes, "checkpoint for the client");
                }
                Ok(None) => {}
                // A failed checkpoint leaves the previous good one in place.
                Err(e) => tracing::warn!("checkpoint failed: {e:#}"),
            }
            runtime.checkpoint_completed();
        }
    };
    // The last word on CPU time before the guest is gone (the client keeps the last report).
    runtime.report_app_status(task_cpu(&supervisor), checkpoint_cpu, supervisor.fraction);
    let console = supervisor.console_log();
    drop(supervisor);
    match ending {
        Ending::Aborted => {
            let _ = fs::remove_dir_all(&slot);
            runtime.abort_exit();
        }
        Ending::Quit => {
            runtime.temporary_exit(Duration::from_secs(5), "gentoo@home: checkpointed, will resume", false)?;
            unreachable!("temporary_exit exits");
        }
        Ending::TimedOut | Ending::GuestExited { .. } => {}
    }

    let out_dir = input.output_dir();
    let outcome = read_outcome(&out_dir, &job, &ending, &console, backend.as_ref());
    let log = fs::read(out_dir.join("build.log")).unwrap_or_else(|_| fs::read(&console).unwrap_or_default());
    let info = fs::read(out_dir.join("emerge-info.txt")).ok();
    let tmp = output.with_extension("tmp");
    let file = fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    gah_core::archive::write(file, &job, &outcome, &log, info.as_deref())?;
    fs::rename(&tmp, &output).with_context(|| format!("write {}", output.display()))?;
    if args.update_binpkgs {
        crate::binpkgs::merge(&out_dir.join("binpkgs"), &binpkgs)?;
    }
    eprintln!("gah-app: {} {} ({}) -> {}", job.job_id, outcome.status, outcome.summary, output.display());
    let _ = fs::remove_dir_all(&slot);
    runtime.fraction_done(1.0);
    runtime.finish(0)
}

/// Picks the backend, saying why on stderr.
pub fn choose_backend(
    choice: BackendChoice,
    image: &Image,
    rootfs_tree: impl FnOnce() -> anyhow::Result<PathBuf>,
) -> anyhow::Result<Box<dyn Backend>> {
    let helper = std::env::current_exe()?;
    // The sandbox over its root, if that root can be had, and whether it runs here.
    let sandbox = move || -> Result<SandboxBackend, String> {
        let rootfs = rootfs_tree().map_err(|e| format!("{e:#}"))?;
        let sandbox = SandboxBackend { rootfs, helper };
        sandbox.probe()?;
        Ok(sandbox)
    };
    let probe_cache = image.kernel.with_file_name("gah-kvm-probe.json");
    let qemu = qemu_binary();
    // Probing boots a kernel: only when a VM is a candidate.
    let kvm = || match &qemu {
        Some(q) if image.kernel.is_file() => kvm_usable(q, &image.kernel, &probe_cache),
        Some(_) => crate::backend::accel::KvmProbe { usable: false, detail: "no guest kernel".into(), key: String::new() },
        None => crate::backend::accel::KvmProbe { usable: false, detail: "qemu-system-x86_64 is not installed".into(), key: String::new() },
    };
    let vm = |kvm_ok: bool| -> anyhow::Result<Box<dyn Backend>> {
        let Some(q) = qemu.clone() else { bail!("the vm backend needs qemu-system-x86_64 (Debian: qemu-system-x86)") };
        image.check()?;
        Ok(Box::new(VmBackend { qemu: q, image: image.clone(), kvm: kvm_ok }))
    };
    match choice {
        BackendChoice::Vm => {
            let kvm = kvm();
            eprintln!("gah-app: backend vm, accelerator {} ({})", if kvm.usable { "kvm" } else { "tcg" }, kvm.detail);
            vm(kvm.usable)
        }
        BackendChoice::Sandbox => {
            let sandbox = sandbox().map_err(|e| anyhow::anyhow!("the sandbox does not work here: {e}"))?;
            eprintln!("gah-app: backend sandbox (chosen)");
            Ok(Box::new(sandbox))
        }
        BackendChoice::Auto => {
            let kvm = kvm();
            if kvm.usable {
                eprintln!("gah-app: backend vm with kvm ({})", kvm.detail);
                return vm(true);
            }
            match sandbox() {
                Ok(sandbox) => {
                    eprintln!("gah-app: backend sandbox (KVM unusable: {})", kvm.detail);
                    Ok(Box::new(sandbox))
                }
                Err(why) => {
                    eprintln!("gah-app: backend vm with tcg, slow (KVM unusable: {}; sandbox unusable: {why})", kvm.detail);
                    vm(false)
                }
            }
        }
    }
}

/// CPU seconds of this process itself (unpacking inputs, supervising); the guest's are apart.
fn own_cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| {
            let (user, system) = (u.user_time(), u.system_time());
            user.tv_sec() as f64 + user.tv_usec() as f64 / 1e6 + system.tv_sec() as f64 + system.tv_usec() as f64 / 1e6
        })
        .unwrap_or(0.0)
}

/// A folder as it is, or a tar file unpacked (safely: nothing lands outside `into`).
fn folder_or_unpacked(path: &Path, into: &Path) -> anyhow::Result<PathBuf> {
    if path.is_dir() {
        return Ok(std::path::absolute(path)?);
    }
    let file = fs::File::open(path).with_context(|| format!("open input {}", path.display()))?;
    fs::create_dir_all(into)?;
    let reader: Box<dyn std::io::Read> =
        if path.extension().is_some_and(|e| e == "gz") { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().with_context(|| format!("read {}", path.display()))? {
        let mut entry = entry.with_context(|| format!("read {}", path.display()))?;
        let kind = entry.header().entry_type();
        // Inputs are plain trees: links and devices have no business there.
        if kind.is_file() || kind.is_dir() {
            entry.unpack_in(into).with_context(|| format!("unpack {}", path.display()))?;
        }
    }
    Ok(std::path::absolute(into)?)
}

/// Lays out `/gah/in`: the job, the agent, and mount points for the big trees.
fn stage_input(slot: &Path, job: &Path, agent: &Path) -> anyhow::Result<PathBuf> {
    let staged = slot.join("in");
    fs::create_dir_all(&staged)?;
    fs::copy(job, staged.join("job.json")).with_context(|| format!("copy {}", job.display()))?;
    fs::copy(agent, staged.join("gah-agent")).with_context(|| format!("copy the guest agent {}", agent.display()))?;
    for dir in ["repo", "distfiles", "binpkgs"] {
        fs::create_dir_all(staged.join(dir))?;
    }
    Ok(staged)
}

/// The agent's outcome, or an infrastructure failure that says what went wrong.
fn read_outcome(out_dir: &Path, job: &Job, ending: &Ending, console: &Path, backend: &dyn Backend) -> Outcome {
    let mut outcome = match fs::read(out_dir.join("outcome.json")).ok().map(|b| Outcome::from_json(&b)) {
        Some(Ok(o)) if o.mismatch_with(job).is_none() => o,
        Some(Ok(o)) => infra(job, &format!("agent answered another job: {}", o.mismatch_with(job).unwrap_or_default())),
        Some(Err(e)) => infra(job, &format!("agent wrote a bad outcome: {e}")),
        None => match ending {
            Ending::TimedOut => {
                let mut o = Outcome::for_job(job, Status::Timeout);
                o.failed_phase = Some("build".into());
                o.summary = "the guest ran out of time".into();
                o
            }
            Ending::GuestExited { detail, .. } => infra(
                job,
                &format!(
                    "guest ended without an outcome: {detail}; log: {}",
                    crate::process::tail(&fs::read(console).unwrap_or_default(), 3)
                ),
            ),
            _ => infra(job, "no outcome"),
        },
    };
    outcome.backend = backend.name().to_owned();
    outcome.accelerator = backend.accelerator().to_owned();
    outcome
}

fn infra(job: &Job, summary: &str) -> Outcome {
    let mut o = Outcome::for_job(job, Status::InfraError);
    o.summary = summary.to_owned();
    o
}

/// Keeps the binary packages an interrupted attempt built, so a restart does not rebuild
/// the dependencies.
fn salvage_binpkgs(from: &Path, to: &Path) {
    if from.is_dir() {
        if let Err(e) = crate::binpkgs::merge(from, to) {
            tracing::warn!("could not keep the binary packages of the earlier attempt: {e:#}");
        }
    }
}
