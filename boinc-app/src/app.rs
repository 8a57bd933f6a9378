//! `gah-app`: what a volunteer's BOINC client runs for one workunit.
//!
//! Resolves the inputs by logical name, picks a backend that works here (saying which and
//! why), stages `/gah/in`, supervises the guest while answering the client (progress,
//! suspend/resume, quit, abort), packs the outcome archive and calls `boinc_finish`.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use gah_core::job::Job;
use gah_core::outcome::{Outcome, Status};
use gah_core::progress::{Accelerator, BackendKind};
use gah_util::atomic::{AtomicError, AtomicFile};
use gah_util::error_chain;
use gah_util::pkgdir::PkgdirError;
use gah_util::untar::{self, Rules, UntarError};

pub use crate::backend::choose::BackendChoice;
use crate::backend::choose::{choose, ChooseError};
use crate::backend::{Backend, BackendError, GuestInput, Image, CONSOLE_TAIL_BYTES};
use crate::rootfs_archive::RootfsError;
use crate::supervisor::{Command, Ending, Supervisor, SupervisorError};
use crate::SAY;

/// Most file data unpacked from one input tar (the repository or the distfiles): the
/// workunit's disk bound (`rsc_disk_bound` in `templates/gah_in`), past which the client
/// would abort the task anyway.
const MAX_INPUT_BYTES: u64 = 10_000_000_000;
/// The guest agent's logical name in the app version (templates/app_info.xml, version.xml).
const AGENT_LOGICAL_NAME: &str = "gah-agent";

/// What the guest leaves is hostile until checked (`gah_util::untrusted`): these caps bound
/// what gah-app reads of it. The log's cap is the outcome archive's own, so a longer log
/// could not be uploaded anyway.
const MAX_OUTCOME_BYTES: u64 = 16 << 20;
const MAX_LOG_BYTES: u64 = 64 << 20;
const MAX_INFO_BYTES: u64 = 1 << 20;

/// A step of the app that failed, with the file or name involved.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The BOINC runtime could not be initialised.
    #[error("initialise the BOINC runtime")]
    Init(#[source] boinc_api::Error),
    /// A logical file name could not be resolved.
    #[error("find the file {name:?}")]
    Resolve {
        /// The logical name.
        name: String,
        /// The cause.
        #[source]
        source: boinc_api::Error,
    },
    /// A path could not be made absolute.
    #[error("make {} absolute", path.display())]
    Absolute {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The job file could not be read or is no valid job.
    #[error("the job")]
    Job(#[source] gah_core::Error),
    /// The sandbox's guest root is neither a folder nor an archive here.
    #[error("no guest root: neither the folder {} nor the archive {} exists", tree.display(), archive.display())]
    NoGuestRoot {
        /// The folder looked for.
        tree: PathBuf,
        /// The archive looked for.
        archive: PathBuf,
    },
    /// The guest root's archive could not be unpacked.
    #[error(transparent)]
    GuestRoot(#[from] RootfsError),
    /// The guest root named by `data.json` could not be read from the project's repository.
    #[error("{0}")]
    Base(String),
    /// No backend could be had.
    #[error(transparent)]
    Choose(#[from] ChooseError),
    /// The client could not be told to retry later.
    #[error("ask the client to retry later")]
    TemporaryExit(#[source] boinc_api::Error),
    /// A folder could not be created.
    #[error("create {}", path.display())]
    Create {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The running program (beside which the agent is) could not be found.
    #[error("find this program")]
    CurrentExe(#[source] io::Error),
    /// The job or the agent could not be copied into `/gah/in`.
    #[error("stage {}", path.display())]
    Stage {
        /// The file copied.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An input tar could not be opened.
    #[error("open input {}", path.display())]
    OpenInput {
        /// The input.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An input tar could not be unpacked.
    #[error("unpack input {}", path.display())]
    UnpackInput {
        /// The input.
        path: PathBuf,
        /// The cause.
        #[source]
        source: UntarError,
    },
    /// The inputs could not be read from the project's CernVM-FS repository.
    #[error("the job's inputs")]
    DataPlane(#[from] crate::data_plane::DataPlaneError),
    /// The guest could not be started.
    #[error("start the guest")]
    Start(#[source] BackendError),
    /// Supervising the guest failed.
    #[error(transparent)]
    Supervise(#[from] SupervisorError),
    /// The outcome archive could not be written.
    #[error("write the outcome archive {}", path.display())]
    WriteOutcome {
        /// The archive.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The outcome archive could not be put in place.
    #[error("write the outcome archive {}", path.display())]
    PlaceOutcome {
        /// The archive.
        path: PathBuf,
        /// The cause.
        #[source]
        source: AtomicError,
    },
    /// `--keep-binpkgs` names the guest's own input, or a folder inside or around it.
    #[error("--keep-binpkgs {} overlaps --binpkgs {}: gah-app never writes into its inputs", keep.display(), input.display())]
    KeepIntoInput {
        /// The folder asked for.
        keep: PathBuf,
        /// The input.
        input: PathBuf,
    },
    /// The binary packages the guest is to see could not be put together.
    #[error("gather the binary packages for the guest in {}", path.display())]
    GatherBinpkgs {
        /// The private folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: PkgdirError,
    },
    /// The job's binary packages could not be copied into the `--keep-binpkgs` folder.
    #[error("keep the job's binary packages in {}", path.display())]
    KeepBinpkgs {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: PkgdirError,
    },
}

fn absolute(path: &Path) -> Result<PathBuf, AppError> {
    std::path::absolute(path).map_err(|source| AppError::Absolute { path: path.to_path_buf(), source })
}

fn create_dir(path: &Path) -> Result<(), AppError> {
    fs::create_dir_all(path).map_err(|source| AppError::Create { path: path.to_path_buf(), source })
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
/// Under BOINC the defaults are the logical names: job.json and data.json (workunit
/// inputs: the job, and where its ebuild repository and distfiles are in the project's
/// CernVM-FS repository, whose key is the app version's <name>.pub), binpkgs (a tar, only if the workunit or app version brings one),
/// vmlinux, initramfs.cpio.gz, rootfs.ext4 (the vm app version's files), rootfs.tar (the
/// sandbox's: unpacked once per host into the project folder), outcome.tar.gz (the result),
/// binpkgs.tar (the packages the job built, when the result template names it).
///
/// gah-app never writes into its inputs: what a job builds reaches another job only through
/// the project (its binpkgs.tar upload, compared with another replica's) or whoever runs
/// gah-app (--keep-binpkgs, --binpkgs-output), after it has validated the job.
#[derive(Debug, Parser)]
#[command(name = "gah-app", version, verbatim_doc_comment)]
pub struct Args {
    /// The job file (logical name under BOINC).
    #[arg(long, default_value = "job.json")]
    pub job: String,
    /// Where to write the outcome archive (logical name under BOINC).
    #[arg(long, default_value = "outcome.tar.gz")]
    pub output: String,
    /// The ebuild repository as a folder, or a tar file unpacked into the slot, instead of
    /// --data (run by hand, tests).
    #[arg(long, requires = "distfiles", conflicts_with = "data")]
    pub repo: Option<String>,
    /// The distfiles as a folder, or a tar file unpacked into the slot; with --repo.
    #[arg(long, requires = "repo")]
    pub distfiles: Option<String>,
    /// Read the repository and the distfiles from the project's CernVM-FS repository as this
    /// `data.json` says (a workunit input): through the host's cache, by way of the client's
    /// proxy, verified against --cvmfs-key.
    #[arg(long, default_value = "data.json")]
    pub data: String,
    /// The repository's public master key (default: the app version's `<name>.pub`).
    #[arg(long)]
    pub cvmfs_key: Option<PathBuf>,
    /// The host's cache for --data (default: `cvmfs-cache` in the BOINC project folder,
    /// shared by the project's tasks; run by hand, `./cvmfs-cache`). Guest roots read from
    /// the repository are kept beside it, in `cvmfs-base`.
    #[arg(long)]
    pub cvmfs_cache: Option<PathBuf>,
    /// Most the cache keeps, in MiB.
    #[arg(long, default_value_t = 4096)]
    pub cvmfs_cache_mib: u64,
    /// Binary packages for the guest (read-only there): a folder, or a tar file unpacked into
    /// the slot; none if absent.
    #[arg(long, default_value = "binpkgs")]
    pub binpkgs: String,
    /// Copy the binary packages this job built (regular files only, and Portage's index) into
    /// this folder afterwards: a fresh folder the caller owns and has given to no guest. What
    /// is in it is the guest's doing; it should reach another job only once the job's
    /// replicas have been validated (as `gah run` does).
    #[arg(long)]
    pub keep_binpkgs: Option<PathBuf>,
    /// Write the binary packages this job built as an upload (`binpkgs.tar`, see
    /// `gah_core::binpkg`) to this logical name. Under the BOINC client, `binpkgs.tar` is
    /// written without it whenever the result template names that output (templates/gah_out).
    #[arg(long, value_name = "NAME")]
    pub binpkgs_output: Option<String>,
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
    /// The guest root as an ext4 disk image (vm backend). A disk the workunit's data.json
    /// names is read from the repository instead (once per host and content, into
    /// `cvmfs-base` beside the cache); so is the repository's, when this file is missing.
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
    /// The guest agent program (default: the app version's `gah-agent` under BOINC, else
    /// `gah-agent` beside this program).
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
    /// Most the guest may write, in MiB (its scratch disk and its outputs together). Under
    /// BOINC the workunit's disk bound, less the inputs' share, is used instead. Past it the
    /// job ends with status resource_limit.
    #[arg(long, default_value_t = 20480)]
    pub max_disk_mib: u64,
    /// Guest CPUs (default: what the client allots, else the CPUs this host has).
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Added by BOINC's scheduler when the plan class sets `nthreads_cmdline`
    /// (sched/plan_class_spec.cpp): the CPUs this task was given. Same as --cpus.
    #[arg(long, value_name = "N")]
    pub nthreads: Option<u32>,
    /// Added by BOINC's scheduler when the plan class sets `mem_usage_base_mb` or
    /// `mem_usage_per_cpu_mb` (sched/plan_class_spec.cpp): the memory it counted for this
    /// task, in MB. Caps the guest's memory like the workunit's memory bound.
    #[arg(long = "memory_size_mb", value_name = "MB")]
    pub memory_size_mb: Option<f64>,
    /// Also checkpoint every this many seconds (without a client, BOINC's runtime asks
    /// every 300 s). 0 never checkpoints, not even when asked: for measuring the overhead.
    #[arg(long)]
    pub checkpoint_secs: Option<u64>,
}

/// Runs the app; returns only in standalone error cases (BOINC's finish exits the process).
pub fn main(args: Args) -> Result<(), AppError> {
    let runtime = boinc_api::init(&boinc_api::Options::wrapper()).map_err(AppError::Init)?;
    // Absolute: the client hands out paths relative to the slot (`../../projects/…`), and
    // qemu-img reads a relative backing file relative to the overlay's own folder.
    let resolve = |name: &str| -> Result<PathBuf, AppError> {
        absolute(&runtime.resolve_filename(name).map_err(|source| AppError::Resolve { name: name.to_owned(), source })?)
    };
    let job_path = resolve(&args.job)?;
    let job = Job::read(&job_path).map_err(AppError::Job)?;
    let image = match &args.image {
        Some(dir) => Image::in_dir(dir),
        None => Image { kernel: resolve(&args.kernel)?, initramfs: resolve(&args.initramfs)?, rootfs_ext4: resolve(&args.rootfs_disk)? },
    };
    let output = resolve(&args.output)?;
    // Where the job's inputs are in the project's repository (unless given as folders), and
    // how to reach it.
    let plane = match &args.repo {
        Some(_) => None,
        None => Some(DataPlane::new(&args, crate::data_plane::read_ref(&resolve(&args.data)?)?, &resolve)?),
    };
    // Why the repository's guest root (or root disk) could not be had, if that is why no
    // backend is: what was said, whether the server was unreachable, which backend needed it.
    let base_failure = std::cell::RefCell::new(None);
    // The guest root from the repository (the sandbox's tree, or the vm's disk): with
    // `named`, only the one the workunit names; without, only the repository's current one
    // for a workunit that names none. A failure is kept, to say why no backend is.
    let from_plane = |kind: BackendKind, named: bool| -> Result<Option<PathBuf>, AppError> {
        let Some(plane) = plane.as_ref() else { return Ok(None) };
        let is_vm = kind == BackendKind::Vm;
        if named != if is_vm { plane.data.disk.is_some() } else { plane.data.base.is_some() } {
            return Ok(None);
        }
        let (what, got) = match is_vm {
            true => ("the root disk", plane.repository().and_then(|r| r.disk(&plane.base_dir))),
            false => ("the guest root", plane.repository().and_then(|r| r.base(&plane.base_dir))),
        };
        got.map_err(|e| {
            let why = format!("{what} could not be read: {}", error_chain(&e));
            *base_failure.borrow_mut() = Some((why.clone(), e.is_unreachable(), kind));
            AppError::Base(why)
        })
    };
    // Only when the sandbox is a candidate: unpacking the archive or reading the base costs
    // a while, once per host.
    let rootfs_tree = || -> Result<PathBuf, AppError> {
        let tree = match &args.image {
            Some(dir) => dir.join("rootfs"),
            None => resolve(&args.rootfs_tree)?,
        };
        if tree.is_dir() {
            return Ok(tree);
        }
        // The base the workunit names, else the app version's archive, else (a workunit made
        // before the project published a base, run by a version that carries no root) the
        // repository's current base.
        if let Some(tree) = from_plane(BackendKind::Sandbox, true)? {
            return Ok(tree);
        }
        let archive = resolve(&args.rootfs_archive)?;
        if archive.is_file() {
            return Ok(crate::rootfs_archive::unpacked(&archive)?);
        }
        if let Some(tree) = from_plane(BackendKind::Sandbox, false)? {
            return Ok(tree);
        }
        Err(AppError::NoGuestRoot { tree, archive })
    };
    // Only when a VM is chosen: reading the disk costs hundreds of MB, once per host. As for
    // the sandbox's root: the disk the workunit names, else the app version's, else the
    // repository's current one; else the app version's path, which the image check names.
    let rootfs_disk = || -> Result<PathBuf, AppError> {
        if let Some(disk) = from_plane(BackendKind::Vm, true)? {
            return Ok(disk);
        }
        if image.rootfs_ext4.is_file() {
            return Ok(image.rootfs_ext4.clone());
        }
        Ok(from_plane(BackendKind::Vm, false)?.unwrap_or_else(|| image.rootfs_ext4.clone()))
    };
    let binpkgs = resolve(&args.binpkgs)?;
    // Checked now, not after hours of building.
    let keep = args.keep_binpkgs.as_deref().map(|dir| keep_folder(dir, &binpkgs)).transpose()?;
    // Under the client, a logical name resolves to another path only when the slot holds
    // its link file, that is when the result template names the output.
    let upload = match &args.binpkgs_output {
        Some(name) => Some(resolve(name)?),
        None => match runtime.resolve_filename(gah_core::binpkg::OPEN_NAME) {
            Ok(path) if !runtime.is_standalone() && path != Path::new(gah_core::binpkg::OPEN_NAME) => Some(absolute(&path)?),
            _ => None,
        },
    };
    let slot = absolute(&args.slot.clone().unwrap_or_else(|| PathBuf::from("slot")))?;

    let backend = match choose(args.backend, &image, rootfs_tree, rootfs_disk) {
        Ok(b) => b,
        Err(_) if base_failure.borrow().as_ref().is_some_and(|(_, unreachable, _)| *unreachable) && !runtime.is_standalone() => {
            // The project's server gave no answer and this host has no copy of the root yet:
            // nothing has started, so the task waits (its slot kept) rather than spend its
            // result; the client runs it again later.
            let why = base_failure.borrow().clone().map(|(why, ..)| why).unwrap_or_default();
            tracing::warn!(target: SAY, "{why}; trying again in {} minutes", BASE_RETRY.as_secs() / 60);
            let never = runtime.temporary_exit(BASE_RETRY, &why, true).map_err(AppError::TemporaryExit)?;
            match never {}
        }
        Err(_) if base_failure.borrow().is_some() => {
            // The guest root could not be had (refused by the reader as tampered, or the
            // host's disk; or, run by hand, the repository unreachable): nothing about the
            // package, so infra_error, which the validator takes and the QA pages discount.
            let (why, _, kind) = base_failure.borrow().clone().unwrap_or_else(|| (String::new(), false, BackendKind::Sandbox));
            tracing::warn!(target: SAY, "{why}");
            let ended = Ended { job: &job, output: &output, slot: &slot, built: None };
            let outcome = infra(&job, &why).on(kind, Accelerator::None);
            match ended.finish(&runtime, &outcome, format!("gah-app: {why}\n").as_bytes(), None)? {}
        }
        Err(e) if !runtime.is_standalone() => {
            // Nothing here can run a guest: tell the volunteer, and let the client retry later.
            let reason = format!("gentoo@home cannot run here: {}", error_chain(&e));
            let never = runtime.temporary_exit(Duration::from_secs(86_400), &reason, true).map_err(AppError::TemporaryExit)?;
            match never {}
        }
        Err(e) => return Err(e.into()),
    };
    // A restarted task resumes from its checkpoint; otherwise it starts clean, keeping the
    // binary packages an earlier attempt built (the sandbox resumes by phase).
    match backend.resumes_from(&slot) {
        Some(checkpoint) => tracing::info!(target: SAY, "resuming from the checkpoint in {}", checkpoint.display()),
        None => {
            backend.recover_output(&slot);
            start_afresh(&slot);
        }
    }
    create_dir(&slot)?;
    // Under BOINC the agent is a file of the app version, found by its logical name (a
    // server-sent version names it by content); run by hand, it is beside this program.
    let agent = match &args.agent {
        Some(a) => a.clone(),
        None => match resolve(AGENT_LOGICAL_NAME) {
            Ok(path) if !runtime.is_standalone() && path.is_file() => path,
            _ => std::env::current_exe().map_err(AppError::CurrentExe)?.with_file_name(AGENT_LOGICAL_NAME),
        },
    };
    let staged = stage_input(&slot, &job_path, &agent)?;
    let limits = crate::init_data::read(Path::new(boinc_api::INIT_DATA_FILE));
    // Far fewer CPUs than u32::MAX.
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
    let cpus = args.cpus.or(args.nthreads).or(limits.ncpus).unwrap_or(host_cpus).clamp(1, host_cpus);
    // The workunit's memory bound (or what the scheduler counted for the plan class), less
    // the VMM's own share, caps the guest.
    // BOINC's MB is 2^20 bytes (lib/util.h MEGA); a count from its command line, far below 2^53.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let scheduler_bytes = args.memory_size_mb.filter(|mb| mb.is_finite() && *mb > 0.0).map(|mb| (mb * 1_048_576.0) as u64);
    let memory_mib = match limits.memory_bound_bytes.into_iter().chain(scheduler_bytes).min() {
        Some(bytes) => ((bytes / (1 << 20)) * 9 / 10).clamp(512, args.memory_mib.max(512)),
        None => args.memory_mib,
    };
    // The client aborts a task past its disk bound; stop the guest first, with a clear status.
    let disk_mib = match limits.disk_bound_bytes {
        Some(bytes) => ((bytes / (1 << 20)) * 8 / 10).max(256),
        None => args.max_disk_mib,
    };
    let (repo, distfiles, binpkgs) = match (&args.repo, &args.distfiles) {
        (Some(repo), Some(distfiles)) => (
            folder_or_unpacked(&resolve(repo)?, &slot.join("inputs/repo"))?,
            folder_or_unpacked(&resolve(distfiles)?, &slot.join("inputs/distfiles"))?,
            binpkgs,
        ),
        _ => {
            let plane = plane.as_ref().expect("read when no --repo is given");
            // Written afresh each run (a resumed task too): they are the repository's, not the job's.
            let inputs = slot.join("inputs/cvmfs");
            let _ = fs::remove_dir_all(&inputs);
            let fetched = match plane.repository().and_then(|r| r.fetch(&inputs)) {
                Ok(fetched) => fetched,
                Err(e) => {
                    // The project's repository could not be read (the server unreachable and
                    // the file not in the host's cache, a damaged or tampered object): nothing
                    // about the package, and not the volunteer's error. An infra_error outcome
                    // naming the file, as the validator and the assimilator take it, rather
                    // than a client error that loses the result.
                    let why = format!("the job's inputs could not be read: {}", error_chain(&e));
                    tracing::warn!(target: SAY, "{why}");
                    let outcome = infra(&job, &why).on(backend.kind(), backend.accelerator());
                    let ended = Ended { job: &job, output: &output, slot: &slot, built: None };
                    match ended.finish(&runtime, &outcome, format!("gah-app: {why}\n").as_bytes(), None)? {}
                }
            };
            // The repository's binary packages, when the job names some, instead of --binpkgs.
            (fetched.repo, fetched.distfiles, fetched.binpkgs.unwrap_or(binpkgs))
        }
    };
    let input = GuestInput {
        staged,
        repo,
        distfiles,
        binpkgs: guest_binpkgs(&binpkgs, &slot.join(EARLIER_BINPKGS), &slot.join("inputs/binpkgs"))?,
        slot: slot.clone(),
        memory_mib,
        disk_mib,
        cpus,
    };
    tracing::info!(target: SAY, "{} on backend {} ({})", job.job_id, backend.kind().as_str(), backend.accelerator().as_str());
    let guest = backend.start(&input).map_err(AppError::Start)?;
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
                Err(e) => tracing::warn!("checkpoint failed: {}", error_chain(&e)),
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
            let _ = gah_util::untrusted::remove_tree(&slot);
            runtime.abort_exit();
        }
        Ending::Quit => {
            let never = runtime
                .temporary_exit(Duration::from_secs(5), "gentoo@home: checkpointed, will resume", false)
                .map_err(AppError::TemporaryExit)?;
            match never {}
        }
        Ending::TimedOut | Ending::GuestExited { .. } | Ending::LimitExceeded { .. } => {}
    }

    let out_dir = input.output_dir();
    let outcome = read_outcome(&out_dir, &job, &ending, &console, backend.as_ref());
    let log = match gah_util::untrusted::read_beneath(&out_dir, Path::new("build.log"), MAX_LOG_BYTES) {
        Ok(log) => log,
        Err(e) => {
            // The console tells what happened instead; a refused log says why it is not there.
            let why = if e.is_missing() { String::new() } else { format!("gah-app: no build log taken: {}\n", gah_util::error_chain(&e)) };
            let mut log = why.into_bytes();
            log.extend(gah_util::untrusted::read_tail(&console, MAX_LOG_BYTES));
            log
        }
    };
    let info = gah_util::untrusted::read_beneath(&out_dir, Path::new("emerge-info.txt"), MAX_INFO_BYTES)
        .map_err(|e| tracing::warn!("emerge --info not taken: {}", gah_util::error_chain(&e)))
        .ok();
    let built = out_dir.join("binpkgs");
    let ended = Ended {
        job: &job,
        output: &output,
        slot: &slot,
        built: Some(Built { out: &built, given: &input.binpkgs, keep: keep.as_deref(), upload: upload.as_deref() }),
    };
    match ended.finish(&runtime, &outcome, &log, info.as_deref())? {}
}

/// How long a task waits before it tries again to read the guest root from a server that
/// gave no answer.
const BASE_RETRY: Duration = Duration::from_secs(30 * 60);

/// How a task ends once it has an outcome: the archive written and put in place, the
/// binary packages kept and uploaded (when asked), the slot removed, the client told.
struct Ended<'a> {
    job: &'a Job,
    output: &'a Path,
    slot: &'a Path,
    built: Option<Built<'a>>,
}

/// The binary packages a guest left, and where the new ones go.
struct Built<'a> {
    /// What the guest left (its PKGDIR: the seeds, what it built, its index).
    out: &'a Path,
    /// What it was given (the seeds).
    given: &'a Path,
    /// The caller's folder for the new ones (`--keep-binpkgs`).
    keep: Option<&'a Path>,
    /// The upload of the new ones (`--binpkgs-output`, or the result template's `binpkgs.tar`).
    upload: Option<&'a Path>,
}

impl Ended<'_> {
    fn finish(
        &self,
        runtime: &boinc_api::Runtime,
        outcome: &Outcome,
        log: &[u8],
        info: Option<&[u8]>,
    ) -> Result<std::convert::Infallible, AppError> {
        let place = |source| AppError::PlaceOutcome { path: self.output.to_path_buf(), source };
        let mut file = AtomicFile::create(self.output).map_err(place)?;
        gah_core::archive::write(&mut file, self.job, outcome, log, info)
            .map_err(|source| AppError::WriteOutcome { path: self.output.to_path_buf(), source })?;
        file.commit().map_err(place)?;
        if let Some(built) = &self.built {
            if let Some(keep) = built.keep {
                keep_built_binpkgs(built.out, built.given, keep)?;
            }
            if let Some(upload) = built.upload {
                // Optional in the result template: a failure costs the project the packages,
                // never the volunteer the result.
                if let Err(e) = upload_built_binpkgs(built.out, built.given, &self.slot.join("upload-binpkgs"), upload) {
                    tracing::warn!(target: SAY, "the binary packages this job built are not uploaded: {}", error_chain(&*e));
                }
            }
        }
        tracing::info!(target: SAY, "{} {} ({}) -> {}", self.job.job_id, outcome.status, outcome.summary, self.output.display());
        let _ = gah_util::untrusted::remove_tree(self.slot);
        runtime.fraction_done(1.0);
        runtime.finish(0)
    }
}

/// The job's data plane: its `data.json`, the repository's key and the host's folders.
struct DataPlane {
    data: gah_core::data_ref::DataRef,
    key: PathBuf,
    cache: PathBuf,
    cache_quota: u64,
    proxy: Option<String>,
    /// Where the guest roots read from the repository are kept (beside the cache).
    base_dir: PathBuf,
    /// Opened on first use, once per task (the guest root and the inputs read through it).
    repository: std::cell::OnceCell<crate::data_plane::Repository>,
}

impl DataPlane {
    fn new(
        args: &Args,
        data: gah_core::data_ref::DataRef,
        resolve: &dyn Fn(&str) -> Result<PathBuf, AppError>,
    ) -> Result<DataPlane, AppError> {
        let network = crate::init_data::read_network(Path::new(boinc_api::INIT_DATA_FILE));
        let key = match &args.cvmfs_key {
            Some(k) => k.clone(),
            None => resolve(&format!("{}.pub", data.name))?,
        };
        let cache = match (&args.cvmfs_cache, &network.project_dir) {
            (Some(c), _) => c.clone(),
            (None, Some(project)) => project.join("cvmfs-cache"),
            (None, None) => PathBuf::from("cvmfs-cache"),
        };
        let base_dir = cache.with_file_name("cvmfs-base");
        let proxy = network.proxy_for(&data.url).map(str::to_owned);
        let cache_quota = args.cvmfs_cache_mib.saturating_mul(1 << 20);
        Ok(DataPlane { data, key, cache, cache_quota, proxy, base_dir, repository: std::cell::OnceCell::new() })
    }

    /// The repository, opened (its manifest verified) on the first call.
    fn repository(&self) -> Result<&crate::data_plane::Repository, crate::data_plane::DataPlaneError> {
        if let Some(repository) = self.repository.get() {
            return Ok(repository);
        }
        let access = crate::data_plane::Access {
            master_key: &self.key,
            cache: &self.cache,
            cache_quota: self.cache_quota,
            proxy: self.proxy.as_deref(),
        };
        let opened = crate::data_plane::Repository::open(&self.data, &access)?;
        Ok(self.repository.get_or_init(|| opened))
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
fn folder_or_unpacked(path: &Path, into: &Path) -> Result<PathBuf, AppError> {
    if path.is_dir() {
        return absolute(path);
    }
    let file = fs::File::open(path).map_err(|source| AppError::OpenInput { path: path.to_path_buf(), source })?;
    create_dir(into)?;
    let reader: Box<dyn io::Read> =
        if path.extension().is_some_and(|e| e == "gz") { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) };
    // Inputs are plain trees: links and devices have no business there.
    let unpacked = untar::unpack(reader, into, Rules::plain_files(MAX_INPUT_BYTES))
        .map_err(|source| AppError::UnpackInput { path: path.to_path_buf(), source })?;
    if !unpacked.skipped.is_empty() {
        tracing::warn!(input = %path.display(), skipped = ?unpacked.skipped, "input entries that are not plain files were left out");
    }
    absolute(into)
}

/// Lays out `/gah/in`: the job, the agent, and mount points for the big trees.
fn stage_input(slot: &Path, job: &Path, agent: &Path) -> Result<PathBuf, AppError> {
    let staged = slot.join("in");
    create_dir(&staged)?;
    for (from, name) in [(job, "job.json"), (agent, AGENT_LOGICAL_NAME)] {
        fs::copy(from, staged.join(name)).map_err(|source| AppError::Stage { path: from.to_path_buf(), source })?;
    }
    // A downloaded file keeps the mode the client gave it; the guest must be able to run this.
    let staged_agent = staged.join(AGENT_LOGICAL_NAME);
    fs::set_permissions(&staged_agent, fs::Permissions::from_mode(0o755))
        .map_err(|source| AppError::Stage { path: staged_agent.clone(), source })?;
    for dir in ["repo", "distfiles", "binpkgs"] {
        create_dir(&staged.join(dir))?;
    }
    Ok(staged)
}

/// The agent's outcome, or an infrastructure failure that says what went wrong.
fn read_outcome(out_dir: &Path, job: &Job, ending: &Ending, console: &Path, backend: &dyn Backend) -> Outcome {
    let mut outcome = match gah_util::untrusted::read_beneath(out_dir, Path::new("outcome.json"), MAX_OUTCOME_BYTES) {
        Ok(bytes) => match Outcome::from_json(&bytes) {
            Ok(o) if o.mismatch_with(job).is_none() => o,
            Ok(o) => infra(job, &format!("agent answered another job: {}", o.mismatch_with(job).unwrap_or_default())),
            Err(e) => infra(job, &format!("agent wrote a bad outcome: {}", gah_util::error_chain(&e))),
        },
        // A link, FIFO, hard link or oversize file: never read, and said so.
        Err(refused) if !refused.is_missing() => {
            infra(job, &format!("the guest left an unusable outcome: {}", gah_util::error_chain(&refused)))
        }
        Err(_) => match ending {
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
                    gah_util::process::tail(&gah_util::untrusted::read_tail(console, CONSOLE_TAIL_BYTES), 3)
                ),
            ),
            _ => infra(job, "no outcome"),
        },
    };
    if let Ending::LimitExceeded { limit, detail } = ending {
        // A build that finished well despite a refused fork keeps its verdict; any other
        // result is the limit's doing, and says which.
        if outcome.status != Status::Success {
            let mut limited = Outcome::for_job(job, Status::ResourceLimit);
            limited.failed_phase = outcome.failed_phase.clone().or_else(|| Some("build".into()));
            limited.summary = format!("{} limit: {detail}", limit.as_str());
            limited.phases = std::mem::take(&mut outcome.phases);
            outcome = limited;
        }
    }
    outcome.backend = backend.kind().as_str().to_owned();
    outcome.accelerator = backend.accelerator().as_str().to_owned();
    outcome
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate_on_char(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

fn infra(job: &Job, summary: &str) -> Outcome {
    let mut o = Outcome::for_job(job, Status::InfraError);
    // The outcome format's bound on a summary; a cause chain can be longer.
    o.summary = truncate_on_char(summary, 2048);
    o
}

/// An outcome's backend fields.
trait On {
    fn on(self, backend: BackendKind, accelerator: Accelerator) -> Self;
}

impl On for Outcome {
    fn on(mut self, backend: BackendKind, accelerator: Accelerator) -> Outcome {
        self.backend = backend.as_str().to_owned();
        self.accelerator = accelerator.as_str().to_owned();
        self
    }
}

/// Where a task keeps, in its own slot, the binary packages its earlier attempts built.
const EARLIER_BINPKGS: &str = "earlier-binpkgs";

/// Empties the slot for a fresh start but keeps the binary packages an interrupted attempt
/// built, so a restart does not rebuild the dependencies. They stay in the slot: they are
/// this task's guest's own doing and reach no other task.
fn start_afresh(slot: &Path) {
    let earlier = slot.join(EARLIER_BINPKGS);
    match gah_util::pkgdir::merge(&slot.join("out/binpkgs"), &earlier) {
        Ok(merged) => {
            for why in &merged.skipped {
                tracing::warn!("binary package of the earlier attempt not kept: {why}");
            }
        }
        Err(e) => tracing::warn!("could not keep the binary packages of the earlier attempt: {}", error_chain(&e)),
    }
    let Ok(entries) = fs::read_dir(slot) else { return };
    for entry in entries.flatten() {
        if entry.file_name() == EARLIER_BINPKGS {
            continue;
        }
        let path = entry.path();
        // DirEntry::file_type does not follow links: a link is removed, not what it names.
        let _ = if entry.file_type().is_ok_and(|t| t.is_dir()) { gah_util::untrusted::remove_tree(&path) } else { fs::remove_file(&path) };
    }
}

/// The folder the guest reads as `/gah/in/binpkgs`: `given` itself (a folder, or a tar
/// unpacked into `private`), or, when an earlier attempt of this task left packages in
/// `earlier`, a copy of both in `private`. Never `given` written to.
fn guest_binpkgs(given: &Path, earlier: &Path, private: &Path) -> Result<PathBuf, AppError> {
    let given = if given.exists() { Some(folder_or_unpacked(given, private)?) } else { None };
    let private = absolute(private)?;
    match given {
        Some(dir) if !earlier.is_dir() => return Ok(dir),
        Some(dir) if dir != private => merge_into(&dir, &private)?,
        _ => {}
    }
    create_dir(&private)?;
    if earlier.is_dir() {
        merge_into(earlier, &private)?;
    }
    Ok(private)
}

fn merge_into(from: &Path, to: &Path) -> Result<(), AppError> {
    let merged = gah_util::pkgdir::merge(from, to).map_err(|source| AppError::GatherBinpkgs { path: to.to_path_buf(), source })?;
    for why in &merged.skipped {
        tracing::warn!("binary package not given to the guest: {why}");
    }
    Ok(())
}

/// The folder `--keep-binpkgs` names, made absolute; refused when it overlaps `input` (the
/// folder the guest is given, or its tar), links resolved where the paths exist.
fn keep_folder(dir: &Path, input: &Path) -> Result<PathBuf, AppError> {
    let keep = absolute(dir)?;
    let real = |p: &Path| fs::canonicalize(p).ok();
    let keep_real = real(&keep).or_else(|| Some(real(keep.parent()?)?.join(keep.file_name()?))).unwrap_or_else(|| keep.clone());
    let input_real = match real(input) {
        Some(path) => path,
        None => absolute(input)?,
    };
    if keep_real.starts_with(&input_real) || input_real.starts_with(&keep_real) {
        return Err(AppError::KeepIntoInput { keep, input: input.to_path_buf() });
    }
    Ok(keep)
}

/// Copies what the guest built (`out`, beyond the `given` packages it was seeded from) into
/// the caller's `keep` folder: regular files only, links and special files skipped and said.
fn keep_built_binpkgs(out: &Path, given: &Path, keep: &Path) -> Result<gah_util::pkgdir::Merged, AppError> {
    let merged =
        gah_util::pkgdir::merge_new(out, given, keep).map_err(|source| AppError::KeepBinpkgs { path: keep.to_path_buf(), source })?;
    for why in &merged.skipped {
        tracing::warn!("binary package not taken from the guest: {why}");
    }
    tracing::info!("{} files of binary packages kept in {}", merged.copied, keep.display());
    Ok(merged)
}

/// Writes the upload of what the guest built (`out`, beyond the `given` seeds): the packages
/// taken from the guest into `scratch` first as [`keep_built_binpkgs`] does (regular files
/// only), then written in `gah_core::binpkg`'s format, smallest first up to its cap.
fn upload_built_binpkgs(out: &Path, given: &Path, scratch: &Path, upload: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let _ = gah_util::untrusted::remove_tree(scratch);
    keep_built_binpkgs(out, given, scratch)?;
    // Nothing built: the folder was not made, and the upload is an empty tar.
    fs::create_dir_all(scratch)?;
    let mut file = AtomicFile::create(upload)?;
    let written = gah_core::binpkg::write_upload(file.as_file_mut(), scratch, gah_core::binpkg::MAX_UPLOAD)?;
    file.commit()?;
    if !written.left_out.is_empty() {
        tracing::warn!("binary packages left out of the upload, over its cap: {}", written.left_out.join(", "));
    }
    tracing::info!(target: SAY, "{} binary packages uploaded in {}", written.packages.len(), upload.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Issue 9: BOINC's scheduler appends these for plan classes with memory usage or
    /// nthreads_cmdline (sched/plan_class_spec.cpp); gah-app refused them.
    #[test]
    fn the_schedulers_command_line_additions_are_taken() {
        let args = Args::try_parse_from(["gah-app", "--memory_size_mb", "1536", "--nthreads", "2"]).expect("parsed");
        assert_eq!(args.memory_size_mb, Some(1536.0));
        assert_eq!(args.nthreads, Some(2));
    }

    #[test]
    fn an_input_tar_lands_as_plain_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        b.append_data(&mut h, "app-arch/bzip2/bzip2-1.0.8.ebuild", &b"EAPI="[..]).unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        b.append_link(&mut link, "app-arch/shadow", "/etc/shadow").unwrap();
        let input = dir.path().join("repo.tar.gz");
        fs::write(&input, b.into_inner().unwrap().finish().unwrap()).unwrap();

        let tree = folder_or_unpacked(&input, &dir.path().join("repo")).unwrap();
        assert_eq!(fs::read(tree.join("app-arch/bzip2/bzip2-1.0.8.ebuild")).unwrap(), b"EAPI=");
        assert!(tree.join("app-arch/shadow").symlink_metadata().is_err(), "links are left out");
        // A folder is taken as it is.
        assert_eq!(folder_or_unpacked(&tree, &dir.path().join("unused")).unwrap(), tree);
        let e = folder_or_unpacked(&dir.path().join("absent.tar"), &dir.path().join("x")).unwrap_err();
        assert!(error_chain(&e).starts_with(&format!("open input {}: ", dir.path().join("absent.tar").display())), "{}", error_chain(&e));
    }

    /// Every file beneath `dir`, as relative paths, sorted (links and FIFOs included).
    fn files(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                out.extend(files(&entry.path()).into_iter().map(|f| format!("{name}/{f}")));
            } else {
                out.push(name);
            }
        }
        out.sort();
        out
    }

    fn package(dir: &Path, name: &str, content: &[u8]) {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    /// Issue 15 item 4: --keep-binpkgs takes what the job built as regular files, nothing the
    /// guest could point elsewhere, and not the packages it was given.
    #[test]
    fn kept_binary_packages_are_the_jobs_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let (given, out, keep) = (dir.path().join("given"), dir.path().join("out"), dir.path().join("keep"));
        package(&given, "app-arch/bzip2/bzip2-1.0.8-1.gpkg.tar", b"seed");
        package(&out, "app-arch/bzip2/bzip2-1.0.8-1.gpkg.tar", b"seed");
        package(&out, "dev-libs/jemalloc/jemalloc-5.3.1-1.gpkg.tar", b"built");
        package(&out, "Packages", b"index");
        let secret = dir.path().join("secret");
        fs::write(&secret, b"host secret").unwrap();
        std::os::unix::fs::symlink(&secret, out.join("dev-libs/jemalloc/jemalloc-5.3.1-2.gpkg.tar")).unwrap();
        nix::unistd::mkfifo(&out.join("dev-libs/jemalloc/jemalloc-5.3.1-3.gpkg.tar"), nix::sys::stat::Mode::S_IRWXU).unwrap();

        let merged = keep_built_binpkgs(&out, &given, &keep).unwrap();
        assert_eq!((merged.copied, merged.skipped.len()), (2, 2), "{merged:?}");
        assert_eq!(files(&keep), ["Packages", "dev-libs/jemalloc/jemalloc-5.3.1-1.gpkg.tar"]);
        assert_eq!(fs::read(keep.join("dev-libs/jemalloc/jemalloc-5.3.1-1.gpkg.tar")).unwrap(), b"built");
        assert_eq!(files(&given), ["app-arch/bzip2/bzip2-1.0.8-1.gpkg.tar"], "the input is never written");
    }

    #[test]
    fn the_keep_folder_never_overlaps_the_input() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("cache/binpkgs");
        fs::create_dir_all(&input).unwrap();
        std::os::unix::fs::symlink(&input, dir.path().join("alias")).unwrap();
        for overlapping in
            [input.clone(), input.join("sub"), dir.path().join("cache"), dir.path().join("alias"), dir.path().join("alias/new")]
        {
            let e = keep_folder(&overlapping, &input).unwrap_err();
            assert!(matches!(e, AppError::KeepIntoInput { .. }), "{}: {e:?}", overlapping.display());
        }
        let fresh = dir.path().join("run/replica-1-binpkgs");
        assert_eq!(keep_folder(&fresh, &input).unwrap(), fresh);
        // An input that does not exist is compared as it is spelled.
        assert!(keep_folder(&dir.path().join("none/x"), &dir.path().join("none")).is_err());
    }

    /// A restarted task keeps its earlier attempt's packages in its own slot; the guest then
    /// gets a private copy of the input and them, and the input is left as it was.
    #[test]
    fn a_restart_keeps_its_packages_without_writing_into_the_input() {
        let dir = tempfile::tempdir().unwrap();
        let (input, slot) = (dir.path().join("cache"), dir.path().join("slot"));
        package(&input, "app-arch/bzip2/bzip2-1.0.8-1.gpkg.tar", b"seed");
        package(&input, "Packages", b"index 1");
        package(&slot, "out/binpkgs/app-arch/bzip2/bzip2-1.0.8-1.gpkg.tar", b"seed");
        package(&slot, "out/binpkgs/dev-libs/jemalloc/jemalloc-5.3.1-1.gpkg.tar", b"built");
        package(&slot, "out/binpkgs/Packages", b"index 2");
        package(&slot, "vm/output.raw", b"disk");

        // No earlier packages: the input as it is.
        let private = slot.join("inputs/binpkgs");
        assert_eq!(guest_binpkgs(&input, &slot.join(EARLIER_BINPKGS), &private).unwrap(), input);
        start_afresh(&slot);
        assert_eq!(fs::read_dir(&slot).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>(), [EARLIER_BINPKGS]);
        let seen = guest_binpkgs(&input, &slot.join(EARLIER_BINPKGS), &private).unwrap();
        assert_eq!(seen, private);
        assert_eq!(files(&seen), ["Packages", "app-arch/bzip2/bzip2-1.0.8-1.gpkg.tar", "dev-libs/jemalloc/jemalloc-5.3.1-1.gpkg.tar"]);
        assert_eq!(fs::read(seen.join("Packages")).unwrap(), b"index 2");
        assert_eq!(files(&input), ["Packages", "app-arch/bzip2/bzip2-1.0.8-1.gpkg.tar"]);
        assert_eq!(fs::read(input.join("Packages")).unwrap(), b"index 1");
        // No input at all: an empty private folder, and nothing made where the input was named.
        let empty = guest_binpkgs(&dir.path().join("absent"), &dir.path().join("no-earlier"), &dir.path().join("empty")).unwrap();
        assert!(files(&empty).is_empty());
        assert!(!dir.path().join("absent").exists());
    }
}
