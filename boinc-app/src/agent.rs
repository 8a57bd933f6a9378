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
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use gah_core::job::Job;
use gah_core::outcome::{InstalledFile, Outcome, PackageVersion, PhaseTime, Status};

use crate::backend::format_progress;

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
const PHASE_MARKERS: &[(&str, &str, f64)] = &[
    (">>> Unpacking source", "unpack", 0.32),
    (">>> Preparing source", "prepare", 0.35),
    (">>> Configuring source", "configure", 0.40),
    (">>> Compiling source", "compile", 0.50),
    (">>> Test phase", "test", 0.75),
    (">>> Install ", "install", 0.88),
    (">>> Creating binpkg", "package", 0.93),
    (">>> Installing (", "merge", 0.96),
];

struct Progress {
    sink: Box<dyn Write>,
}

impl Progress {
    fn open(target: &str) -> anyhow::Result<Progress> {
        let sink: Box<dyn Write> = if target == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(fs::OpenOptions::new().write(true).open(target).with_context(|| format!("open progress port {target}"))?)
        };
        Ok(Progress { sink })
    }

    fn report(&mut self, fraction: f64, phase: &str) {
        // Progress is advisory: a broken channel must not fail the build.
        let _ = writeln!(self.sink, "{}", format_progress(fraction, phase));
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
pub fn run(config: &AgentConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    let job = Job::from_json(&fs::read(&config.job).with_context(|| format!("read {}", config.job.display()))?)?;
    let mut progress = Progress::open(&config.progress)?;
    progress.report(0.01, "start");
    fs::create_dir_all(config.out.join("logs"))?;
    let pkgdir = config.out.join("binpkgs");
    fs::create_dir_all(&pkgdir)?;
    // The cached packages seed the writable PKGDIR (Portage rewrites its index).
    crate::binpkgs::merge(Path::new("/gah/in/binpkgs"), &pkgdir)?;
    pin_job_configuration(&config.config_root, &job)?;

    let deadline = started + Duration::from_secs(job.timeout_secs);
    let mut log = fs::File::create(config.out.join("build.log"))?;
    let mut outcome = Outcome::for_job(&job, Status::Success);

    let info = emerge_command(config, &job, &pkgdir).args(["--info", &format!("={}", job.cpv)]).output();
    match info {
        Ok(out) => fs::write(config.out.join("emerge-info.txt"), [out.stdout, out.stderr].concat())?,
        Err(e) => anyhow::bail!("cannot run emerge: {e}"),
    }

    progress.report(0.05, "deps");
    writeln!(log, "### gentoo@home: installing the dependencies of ={} (binary packages first)", job.cpv)?;
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

    writeln!(log, "### gentoo@home: building and testing ={} with {} (USE: {})", job.cpv, job.compiler, job.use_flags.summary())?;
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
) -> anyhow::Result<()> {
    outcome.status = status;
    outcome.failed_phase = failed_phase.map(str::to_owned);
    outcome.summary = summary.to_owned();
    outcome.duration_secs = started.elapsed().as_secs_f64();
    let tmp = config.out.join(".outcome.json.tmp");
    fs::write(&tmp, outcome.to_json())?;
    fs::rename(&tmp, config.out.join("outcome.json"))?;
    progress.report(1.0, "done");
    Ok(())
}

/// Writes the job's USE (every IUSE flag, for the target only) and FEATURES=test (target
/// only: dependencies are not tested) into Portage's configuration.
fn pin_job_configuration(config_root: &Path, job: &Job) -> anyhow::Result<()> {
    let etc = config_root.join("etc/portage");
    // `test` is driven by FEATURES=test and RESTRICT, never pinned.
    let flags: Vec<String> =
        job.use_flags.0.iter().filter(|(f, _)| f.as_str() != "test").map(|(f, on)| if *on { f.clone() } else { format!("-{f}") }).collect();
    write_config_entry(&etc.join("package.use"), "gah-job", &format!("={} {}\n", job.cpv, flags.join(" ")))?;
    fs::create_dir_all(etc.join("env"))?;
    fs::write(etc.join("env/gah-test.conf"), "FEATURES=\"${FEATURES} test\"\n")?;
    write_config_entry(&etc.join("package.env"), "gah-job", &format!("={} gah-test.conf\n", job.cpv))?;
    Ok(())
}

/// Portage accepts `package.*` as a file or a folder of files: add to whichever it is.
fn write_config_entry(path: &Path, name: &str, line: &str) -> anyhow::Result<()> {
    if path.is_file() {
        let mut f = fs::OpenOptions::new().append(true).open(path)?;
        f.write_all(line.as_bytes())?;
    } else {
        fs::create_dir_all(path)?;
        fs::write(path.join(name), line)?;
    }
    Ok(())
}

fn emerge_command(config: &AgentConfig, job: &Job, pkgdir: &Path) -> std::process::Command {
    let (cc, cxx) = job.compiler.cc_cxx();
    let mut cmd = crate::process::command("emerge");
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
        .env("PYTHONUNBUFFERED", "1");
    cmd
}

/// Runs emerge, copying its output to the build log and turning Portage's phase markers
/// into progress, phase times and the failed phase.
fn run_emerge(
    mut cmd: std::process::Command,
    log: &mut fs::File,
    deadline: Instant,
    progress: &mut Progress,
    span: (f64, f64),
    target: &str,
) -> anyhow::Result<EmergeRun> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = cmd.spawn().context("start emerge")?;
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
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-(child.id() as i32)), nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            run.timed_out = true;
            close_phase(&mut current, &mut run.phases);
            run.failed_phase = run.phases.last().map(|p| p.phase.clone());
            return Ok(run);
        }
        match rx.recv_timeout((deadline - now).min(Duration::from_secs(1))) {
            Ok(line) => {
                log.write_all(line.as_bytes())?;
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
                        current = Some(((*phase).to_owned(), Instant::now()));
                        if *phase == "test" {
                            run.test_ran = true;
                        }
                        progress.report(span.0 + (span.1 - span.0) * fraction, phase);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    close_phase(&mut current, &mut run.phases);
    let status = child.wait()?;
    run.success = status.success();
    log.flush()?;
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
fn installed_files(vdb: &Path, cpv: &str) -> anyhow::Result<Vec<InstalledFile>> {
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
