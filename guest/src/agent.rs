//! The guest agent (`gah-agent`): runs inside the guest (VM or sandbox), builds and tests
//! one job with Portage, and leaves `outcome.json`, `build.log` and `emerge-info.txt` in the
//! output folder (see `docs/GUEST.md`).
//!
//! Steps: pin the job's USE for the target only (`package.use`) and FEATURES=test for the
//! target only (`package.env`); install the dependencies, binary packages first; build and
//! test the target from source; record phases, packages and installed files.
//!
//! **Invariant:** the agent's exit status says whether the *agent* worked, not whether the
//! package did: a failed build is a successful run with `status: build_failed`.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gah_core::job::Job;
use gah_core::outcome::{InstalledFile, Outcome, PackageVersion, PhaseTime, Status};
use gah_util::atomic::AtomicError;

use gah_core::progress::{GuestProgress, Phase};
use gah_util::pkgdir::PkgdirError;

/// A failure of the agent itself (a package that fails to build is no error: it is an
/// outcome).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The job file could not be read or is no valid job.
    #[error("the job")]
    Job(#[source] gah_core::Error),
    /// The progress port could not be opened.
    #[error("open progress port {}", path.display())]
    ProgressPort {
        /// The port's device file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file or folder of the output or of Portage's configuration could not be written.
    #[error("write {}", path.display())]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The cached binary packages could not be copied into the job's package folder.
    #[error("seed {} with the cached binary packages", path.display())]
    SeedBinpkgs {
        /// The job's package folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: PkgdirError,
    },
    /// emerge could not be started or waited for.
    #[error("run emerge")]
    Emerge(#[source] io::Error),
    /// `outcome.json` could not be written.
    #[error("write the outcome")]
    Outcome(#[source] AtomicError),
}

fn write_error(path: &Path) -> impl FnOnce(io::Error) -> AgentError + '_ {
    move |source| AgentError::Write { path: path.to_path_buf(), source }
}

/// Where the agent's inputs and outputs are.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `job.json`.
    pub job: PathBuf,
    /// The writable output folder (`/gah/out`).
    pub out: PathBuf,
    /// Where progress lines go: a path, or `-` for stdout.
    pub progress: String,
    /// Parallel make jobs.
    pub jobs: u32,
    /// Portage's configuration root (`/` in the guest).
    pub config_root: PathBuf,
    /// The installed-package database (`/var/db/pkg` in the guest).
    pub vdb: PathBuf,
}

/// Ebuild phases in order, with the marker Portage prints when entering each and the
/// fraction of the job done at that point.
const PHASE_MARKERS: &[(&str, Phase, f64)] = &[
    (">>> Unpacking source", Phase::Unpack, 0.32),
    (">>> Preparing source", Phase::Prepare, 0.35),
    (">>> Configuring source", Phase::Configure, 0.40),
    (">>> Compiling source", Phase::Compile, 0.50),
    (">>> Test phase", Phase::Test, 0.75),
    (">>> Install ", Phase::Install, 0.88),
    (">>> Creating binpkg", Phase::Package, 0.93),
    (">>> Installing (", Phase::Merge, 0.96),
];

struct Progress {
    sink: Box<dyn Write>,
}

impl Progress {
    fn open(target: &str) -> Result<Progress, AgentError> {
        let sink: Box<dyn Write> = if target == "-" {
            Box::new(io::stdout())
        } else {
            let port = fs::OpenOptions::new()
                .write(true)
                .open(target)
                .map_err(|source| AgentError::ProgressPort { path: target.into(), source })?;
            Box::new(port)
        };
        Ok(Progress { sink })
    }

    fn report(&mut self, fraction: f64, phase: Phase) {
        // Progress is advisory: a broken channel must not fail the build.
        let _ = writeln!(self.sink, "{}", GuestProgress { fraction, phase }.to_line());
        let _ = self.sink.flush();
    }
}

/// What one emerge invocation did.
struct EmergeRun {
    success: bool,
    timed_out: bool,
    failed_phase: Option<String>,
    phases: Vec<PhaseTime>,
    packages: Vec<PackageVersion>,
    test_ran: bool,
}

/// Runs the job and writes the outcome. Errors are the agent's own failures.
pub fn run(config: &AgentConfig) -> Result<(), AgentError> {
    let started = Instant::now();
    let job = Job::read(&config.job).map_err(AgentError::Job)?;
    let mut progress = Progress::open(&config.progress)?;
    progress.report(0.01, Phase::Start);
    let logs = config.out.join("logs");
    fs::create_dir_all(&logs).map_err(write_error(&logs))?;
    let pkgdir = config.out.join("binpkgs");
    fs::create_dir_all(&pkgdir).map_err(write_error(&pkgdir))?;
    // The cached packages seed the writable PKGDIR (Portage rewrites its index).
    // The input is the project's (checked on the host); anything refused is only noted.
    let seeded = gah_util::pkgdir::merge(Path::new("/gah/in/binpkgs"), &pkgdir)
        .map_err(|source| AgentError::SeedBinpkgs { path: pkgdir.clone(), source })?;
    for why in &seeded.skipped {
        eprintln!("gah-agent: cached binary package skipped: {why}");
    }
    pin_job_configuration(&config.config_root, &job)?;

    let deadline = started + Duration::from_secs(job.timeout_secs);
    let log_path = config.out.join("build.log");
    let mut log = Log { file: fs::File::create(&log_path).map_err(write_error(&log_path))?, path: log_path };
    let mut outcome = Outcome::for_job(&job, Status::Success);

    let info = emerge_command(config, &job, &pkgdir).args(["--info", &format!("={}", job.cpv)]).output().map_err(AgentError::Emerge)?;
    let info_path = config.out.join("emerge-info.txt");
    fs::write(&info_path, [info.stdout, info.stderr].concat()).map_err(write_error(&info_path))?;

    progress.report(0.05, Phase::Deps);
    log.line(format_args!("### gentoo@home: installing the dependencies of ={} (binary packages first)", job.cpv))?;
    let deps_started = Instant::now();
    let mut deps_cmd = emerge_command(config, &job, &pkgdir);
    deps_cmd
        .args(["--oneshot", "--onlydeps", "--usepkg", "--buildpkg", "--quiet-build=n", "--color=n", "--nospinner"])
        .arg(format!("={}", job.cpv));
    let deps = run_emerge(deps_cmd, &mut log, deadline, &mut progress, (0.05, 0.30), &job.cpv)?;
    outcome.phases.push(PhaseTime { phase: "deps".into(), seconds: deps_started.elapsed().as_secs_f64() });
    outcome.packages.extend(deps.packages.iter().cloned());
    if deps.timed_out {
        return finish(config, outcome, Status::Timeout, Some("deps"), "timed out installing the dependencies", started, &mut progress);
    }
    if !deps.success {
        return finish(
            config,
            outcome,
            Status::DepsFailed,
            Some("deps"),
            "a dependency failed to build or install",
            started,
            &mut progress,
        );
    }

    log.line(format_args!("### gentoo@home: building and testing ={} with {} (USE: {})", job.cpv, job.compiler, job.use_flags.summary()))?;
    let mut build_cmd = emerge_command(config, &job, &pkgdir);
    build_cmd.args(["--oneshot", "--buildpkg", "--usepkg=n", "--quiet-build=n", "--color=n", "--nospinner"]).arg(format!("={}", job.cpv));
    let build = run_emerge(build_cmd, &mut log, deadline, &mut progress, (0.30, 0.98), &job.cpv)?;
    outcome.phases.extend(build.phases);
    outcome.packages.extend(build.packages);
    outcome.test_ran = build.test_ran;
    if build.timed_out {
        return finish(
            config,
            outcome,
            Status::Timeout,
            build.failed_phase.as_deref().or(Some("build")),
            "timed out building the package",
            started,
            &mut progress,
        );
    }
    if !build.success {
        let phase = build.failed_phase.unwrap_or_else(|| "build".into());
        let status = if phase == "test" { Status::TestFailed } else { Status::BuildFailed };
        let summary = format!("{} phase failed", phase);
        return finish(config, outcome, status, Some(&phase), &summary, started, &mut progress);
    }
    outcome.installed_files = installed_files(&config.vdb, &job.cpv).unwrap_or_default();
    finish(config, outcome, Status::Success, None, "ok", started, &mut progress)
}

fn finish(
    config: &AgentConfig,
    mut outcome: Outcome,
    status: Status,
    failed_phase: Option<&str>,
    summary: &str,
    started: Instant,
    progress: &mut Progress,
) -> Result<(), AgentError> {
    outcome.status = status;
    outcome.failed_phase = failed_phase.map(str::to_owned);
    outcome.summary = summary.to_owned();
    outcome.duration_secs = started.elapsed().as_secs_f64();
    gah_util::atomic::write(&config.out.join("outcome.json"), &outcome.to_json()).map_err(AgentError::Outcome)?;
    progress.report(1.0, Phase::Done);
    Ok(())
}

/// The build log, named in its write errors.
struct Log {
    file: fs::File,
    path: PathBuf,
}

impl Log {
    fn write(&mut self, bytes: &[u8]) -> Result<(), AgentError> {
        self.file.write_all(bytes).map_err(write_error(&self.path))
    }

    fn line(&mut self, line: std::fmt::Arguments<'_>) -> Result<(), AgentError> {
        self.write(format!("{line}\n").as_bytes())
    }
}

/// Writes the job's USE (every IUSE flag, for the target only) and FEATURES=test (target
/// only: dependencies are not tested) into Portage's configuration.
fn pin_job_configuration(config_root: &Path, job: &Job) -> Result<(), AgentError> {
    let etc = config_root.join("etc/portage");
    // `test` is driven by FEATURES=test and RESTRICT, never pinned.
    let flags: Vec<String> =
        job.use_flags.0.iter().filter(|(f, _)| f.as_str() != "test").map(|(f, on)| if *on { f.clone() } else { format!("-{f}") }).collect();
    write_config_entry(&etc.join("package.use"), "gah-job", &format!("={} {}\n", job.cpv, flags.join(" ")))?;
    let env = etc.join("env");
    fs::create_dir_all(&env).map_err(write_error(&env))?;
    let test_conf = env.join("gah-test.conf");
    fs::write(&test_conf, "FEATURES=\"${FEATURES} test\"\n").map_err(write_error(&test_conf))?;
    write_config_entry(&etc.join("package.env"), "gah-job", &format!("={} gah-test.conf\n", job.cpv))?;
    Ok(())
}

/// Portage accepts `package.*` as a file or a folder of files: add to whichever it is.
fn write_config_entry(path: &Path, name: &str, line: &str) -> Result<(), AgentError> {
    if path.is_file() {
        fs::OpenOptions::new().append(true).open(path).and_then(|mut f| f.write_all(line.as_bytes())).map_err(write_error(path))
    } else {
        fs::create_dir_all(path).map_err(write_error(path))?;
        let file = path.join(name);
        fs::write(&file, line).map_err(write_error(&file))
    }
}

fn emerge_command(config: &AgentConfig, job: &Job, pkgdir: &Path) -> std::process::Command {
    let (cc, cxx) = job.compiler.cc_cxx();
    let mut cmd = gah_util::process::command("emerge");
    // Naming our repositories replaces Portage's built-in ::gentoo entry, which points at a
    // folder the guest does not have.
    if let Ok(repos) = fs::read_to_string(config.config_root.join("etc/portage/repos.conf/gah.conf")) {
        cmd.env("PORTAGE_REPOSITORIES", repos);
    }
    cmd.env("EPREFIX", "")
        .env("PORTAGE_CONFIGROOT", &config.config_root)
        .env("ROOT", "/")
        .env("PKGDIR", pkgdir)
        .env("PORTAGE_LOGDIR", config.out.join("logs"))
        .env("CC", cc)
        .env("CXX", cxx)
        .env("MAKEOPTS", format!("-j{}", config.jobs.max(1)))
        // The guest is already its own pid and mount namespace, and the sandbox's filter
        // refuses new mounts: Portage's own pid/mount sandboxes (which mount a /proc) would
        // fail the build. Off in both backends, so their results stay comparable.
        // `-pkgdir-index-trusted`: Portage indexes the seeded packages itself rather than
        // trust an index it did not write (the project publishes packages without one).
        .env("FEATURES", "-pid-sandbox -mount-sandbox -pkgdir-index-trusted")
        .env("PYTHONUNBUFFERED", "1");
    cmd
}

/// Runs emerge, copying its output to the build log and turning Portage's phase markers
/// into progress, phase times and the failed phase.
fn run_emerge(
    mut cmd: std::process::Command,
    log: &mut Log,
    deadline: Instant,
    progress: &mut Progress,
    span: (f64, f64),
    target: &str,
) -> Result<EmergeRun, AgentError> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = cmd.spawn().map_err(AgentError::Emerge)?;
    // emerge leads its own process group (`process_group(0)`): its pid is the group's id, and
    // a pid (at most 2^22) fits in an i32.
    let group = nix::unistd::Pid::from_raw(-i32::try_from(child.id()).unwrap_or(i32::MAX));
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            while reader.read_until(b'\n', &mut buf).map(|n| n > 0).unwrap_or(false) {
                if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                    break;
                }
                buf.clear();
            }
        });
    }
    drop(tx);

    let mut run = EmergeRun { success: false, timed_out: false, failed_phase: None, phases: vec![], packages: vec![], test_ran: false };
    let mut current: Option<(String, Instant)> = None;
    let close_phase = |current: &mut Option<(String, Instant)>, phases: &mut Vec<PhaseTime>| {
        if let Some((phase, since)) = current.take() {
            phases.push(PhaseTime { phase, seconds: since.elapsed().as_secs_f64() });
        }
    };
    let mut in_target = false;
    loop {
        let now = Instant::now();
        if now >= deadline {
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            run.timed_out = true;
            close_phase(&mut current, &mut run.phases);
            run.failed_phase = run.phases.last().map(|p| p.phase.clone());
            return Ok(run);
        }
        match rx.recv_timeout((deadline - now).min(Duration::from_secs(1))) {
            Ok(line) => {
                log.write(line.as_bytes())?;
                let trimmed = line.trim();
                if let Some(pkg) = emerging_package(trimmed) {
                    in_target = pkg.cpv == target;
                    run.packages.push(pkg);
                }
                if let Some(phase) = failed_phase(trimmed) {
                    run.failed_phase = Some(phase);
                }
                if in_target {
                    if let Some((_, phase, fraction)) = PHASE_MARKERS.iter().find(|(marker, _, _)| trimmed.starts_with(marker)) {
                        close_phase(&mut current, &mut run.phases);
                        current = Some((phase.as_str().to_owned(), Instant::now()));
                        if *phase == Phase::Test {
                            run.test_ran = true;
                        }
                        progress.report(span.0 + (span.1 - span.0) * fraction, *phase);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    close_phase(&mut current, &mut run.phases);
    let status = child.wait().map_err(AgentError::Emerge)?;
    run.success = status.success();
    Ok(run)
}

/// `>>> Emerging (1 of 2) app-arch/bzip2-1.0.8::gah` or `>>> Emerging binary (…) …`.
fn emerging_package(line: &str) -> Option<PackageVersion> {
    let rest = line.strip_prefix(">>> Emerging ")?;
    let binary = rest.starts_with("binary ");
    let atom = rest.rsplit(' ').next()?;
    let cpv = atom.split("::").next()?.to_owned();
    Some(PackageVersion { cpv, binary })
}

/// ` * ERROR: app-arch/bzip2-1.0.8::gah failed (compile phase):` → `compile`.
fn failed_phase(line: &str) -> Option<String> {
    let rest = line.trim_start_matches(['*', ' ']).strip_prefix("ERROR: ")?;
    let start = rest.find(" failed (")? + " failed (".len();
    let end = rest[start..].find(" phase)")?;
    Some(rest[start..start + end].to_owned())
}

/// The package's installed files from Portage's `CONTENTS`, hashed.
fn installed_files(vdb: &Path, cpv: &str) -> io::Result<Vec<InstalledFile>> {
    let contents = fs::read_to_string(vdb.join(cpv).join("CONTENTS"))?;
    let mut files = Vec::new();
    for line in contents.lines() {
        // `obj /usr/bin/bzip2 <md5> <mtime>`: the path may hold spaces, so cut from the right.
        if let Some(rest) = line.strip_prefix("obj ") {
            let mut parts = rest.rsplitn(3, ' ');
            let (_mtime, _md5, path) = (parts.next(), parts.next(), parts.next());
            if let Some(path) = path {
                let sha256 = fs::read(path).map(|b| gah_core::archive::sha256_hex(&b)).unwrap_or_default();
                files.push(InstalledFile { path: path.to_owned(), sha256 });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_portage_markers() {
        assert_eq!(failed_phase(" * ERROR: app-arch/bzip2-1.0.8::gah failed (compile phase):").as_deref(), Some("compile"));
        assert_eq!(failed_phase("ERROR: dev-libs/jemalloc-5.3.0::gah failed (test phase):").as_deref(), Some("test"));
        assert_eq!(failed_phase(">>> Compiling source"), None);
        let p = emerging_package(">>> Emerging binary (1 of 2) app-arch/xz-utils-5.2.5::gah").unwrap();
        assert_eq!((p.cpv.as_str(), p.binary), ("app-arch/xz-utils-5.2.5", true));
        let p = emerging_package(">>> Emerging (2 of 2) app-arch/bzip2-1.0.8::gah").unwrap();
        assert_eq!((p.cpv.as_str(), p.binary), ("app-arch/bzip2-1.0.8", false));
    }
}
