//! `gah run`: the whole pipeline on one machine, as the BOINC server and its volunteers
//! would run it: generate jobs, run each as two replicas through `gah-app`, validate,
//! compare, assimilate, and print the results.
//!
//! It also plays the project's part for binary packages, as the server does: each replica
//! uploads what it built (`binpkgs.tar`), and only the packages an accepted job's replicas
//! built alike join the package store that later jobs' guests read (`settle_binpkgs`: the
//! validator's comparison, the assimilator's store).

use std::fs;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use gah_assimilator::binpkgs::Stored;
use gah_core::archive::OutcomeArchive;
use gah_core::db::Database;
use gah_core::job::{Job, UseAssignment};
use gah_core::outcome::Status;
use gah_core::progress::AppReport;

use crate::layout::Layout;
use crate::plane::{GuestRoot, LocalPlane};

/// Options of `gah run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// `auto`, `vm` or `sandbox`, passed to `gah-app`.
    pub backend: String,
    /// Replicas per job (BOINC's target_nresults); 2 lets the validator compare.
    pub replicas: u32,
    /// Only jobs whose `category/package` contains this.
    pub only: Option<String>,
    /// Only jobs whose configuration has these flag values (other flags any value).
    pub use_flags: Option<UseAssignment>,
    /// At most this many jobs.
    pub limit: Option<usize>,
    /// Wall-clock limit per job in the guest.
    pub timeout_secs: u64,
    /// Strength of the covering array: every t-way combination of flag values is built.
    pub t: usize,
    /// Build every configuration with every compiler (else: the default configuration with
    /// every compiler, the others with one compiler each, in turn).
    pub cross_compilers: bool,
    /// Print the plan and stop.
    pub dry_run: bool,
    /// After the sweep, localise each real failure (build_failed, test_failed) with
    /// follow-up builds (`--no-localise` turns it off).
    pub localise: bool,
    /// Most follow-ups per failure (the rerun included).
    pub max_followups: usize,
}

/// One finished configuration, for the table.
pub struct Row {
    pub(crate) job: Job,
    /// The stored outcome's status; `None` when nothing was stored (invalid, disagreeing or
    /// unstored replicas).
    pub(crate) outcome: Option<Status>,
    status: String,
    failed_phase: String,
    minutes: f64,
    note: String,
}

/// Runs the pipeline and prints the table.
pub fn run(layout: &Layout, config: &RunConfig) -> anyhow::Result<()> {
    layout.check_ready()?;
    let (mut jobs, repos) = plan_jobs(layout, config.t, config.timeout_secs)?;
    if !config.cross_compilers {
        jobs = alternate_compilers(jobs);
    }
    if let Some(only) = &config.only {
        jobs.retain(|j| j.cp().contains(only.as_str()));
    }
    if let Some(wanted) = &config.use_flags {
        jobs.retain(|j| j.use_flags.has_all(wanted));
    }
    if let Some(limit) = config.limit {
        jobs.truncate(limit);
    }
    anyhow::ensure!(!jobs.is_empty(), "no jobs to run");
    let packages: std::collections::BTreeSet<&str> = jobs.iter().map(|j| j.cp()).collect();
    println!(
        "gah run: {} configurations of {} packages, {} replicas each, backend {}",
        jobs.len(),
        packages.len(),
        config.replicas,
        config.backend
    );
    if config.dry_run {
        for job in &jobs {
            println!("  {} {} ({})", job.cpv, job.compiler, job.use_flags.summary());
        }
        return Ok(());
    }
    let mut db = Database::open(&layout.db)?;
    // Outcomes are filed under the tree they were built from, so a changed overlay starts a
    // new history for its cells (see `gah results changes`).
    let snapshot = db.snapshot(&gah_assimilator::md5_cache_snapshot(&layout.overlay)?)?;
    fs::create_dir_all(&layout.binpkgs)?;
    // The store holds packages and no index (the guest's Portage writes its own): one left
    // by an older `gah run` would be published for nothing.
    for index in ["Packages", "Packages.gz"] {
        let _ = fs::remove_file(layout.binpkgs.join(index));
    }
    let app = sibling_program("gah-app")?;
    // Every job reads its inputs as a volunteer's does: through the data plane.
    // The guest root goes through the plane too, as on a BOINC server: the sandbox's tree,
    // or the vm's disk (stored in chunks; gah-app reads it once into the host's cache).
    let (tree, disk) = (layout.image.join("rootfs"), layout.image.join("rootfs.ext4"));
    let guest_root = match config.backend.as_str() {
        "vm" if disk.is_file() => GuestRoot::Disk(disk),
        "vm" => GuestRoot::Image,
        _ if tree.is_dir() => GuestRoot::Tree(tree),
        _ => GuestRoot::Image,
    };
    let plane = LocalPlane::start(layout, repos, gah_ebuild::Profile::amd64_linux(), guest_root)?;
    let mut rows = Vec::new();
    let total = jobs.len();
    let ctx = JobRunner { app: &app, layout, config, snapshot, plane: &plane };
    for (i, job) in jobs.into_iter().enumerate() {
        let prefix = format!("[{:>2}/{total}]", i + 1);
        // A sweep's workunit is named after its job (a follow-up's gets a number).
        let wu_name = job.job_id.clone();
        rows.push(ctx.run_job(&mut db, job, &wu_name, &prefix)?);
    }
    print_table(&rows);
    if config.localise {
        let failures: Vec<Job> = rows.iter().filter(|r| r.outcome.is_some_and(|s| s.is_own_failure())).map(|r| r.job.clone()).collect();
        crate::localise::localise_failures(&ctx, &mut db, &failures)?;
    }
    println!("\nresults database: {}", layout.db.display());
    println!("job folders (logs, archives): {}", layout.runs.display());
    Ok(())
}

/// What running one job needs: the program, the folders, the options, the snapshot its
/// outcome is filed under. The sweep and the localiser's follow-ups go through it alike.
pub struct JobRunner<'a> {
    /// `gah-app`.
    pub app: &'a Path,
    /// The folders.
    pub layout: &'a Layout,
    /// `gah run`'s options.
    pub config: &'a RunConfig,
    /// The tree snapshot outcomes are filed under.
    pub snapshot: gah_core::db::SnapshotId,
    /// Where jobs read their inputs.
    pub plane: &'a LocalPlane,
}

impl JobRunner<'_> {
    /// Runs `job` as the workunit `wu_name`: its replicas through `gah-app`, the validator's
    /// checks and comparison, the accepted job's binary packages into the cache, the
    /// canonical outcome into the results database. `prefix` starts its progress lines.
    pub fn run_job(&self, db: &mut Database, job: Job, wu_name: &str, prefix: &str) -> anyhow::Result<Row> {
        let (layout, config) = (self.layout, self.config);
        let started = Instant::now();
        let dir = layout.runs.join(wu_name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let job_file = dir.join("job.json");
        fs::write(&job_file, job.to_json())?;
        let data_file = dir.join("data.json");
        fs::write(&data_file, self.plane.data_ref(&job)?.to_json())?;
        let inputs = self.plane.app_args(&data_file);
        let (mut archives, mut binpkgs) = (Vec::new(), Vec::new());
        for replica in 1..=config.replicas {
            let label =
                format!("{prefix} {} {} ({}) replica {replica}/{}", job.cpv, job.compiler, job.use_flags.summary(), config.replicas);
            let (archive, built) = run_replica(self.app, config, &dir, &job_file, &inputs, replica, &label)?;
            archives.push(archive);
            binpkgs.push(built);
        }
        let verdict = validate(&job, &archives);
        match settle_binpkgs(verdict.canonical().is_some(), &binpkgs, &layout.binpkgs, &layout.binpkgs_staging()) {
            Ok(stored) => {
                for why in &stored.refused {
                    eprintln!("gah run: binary package not stored: {why}");
                }
                // Published, as the project publishes its validated packages: later jobs'
                // guests install them through the data plane.
                if !stored.added.is_empty() {
                    if let Err(e) = self.plane.republish() {
                        eprintln!("gah run: binary packages not published: {e:#}");
                    }
                }
            }
            Err(e) => eprintln!("gah run: binary packages not stored: {e:#}"),
        }
        let row = assimilate(db, self.snapshot, &job, wu_name, verdict, started.elapsed());
        println!("        -> {} {} {}", row.status, row.failed_phase, row.note);
        Ok(row)
    }
}

/// The jobs for the embedded overlay, from the work generator, and the overlay as read.
fn plan_jobs(layout: &Layout, t: usize, timeout_secs: u64) -> anyhow::Result<(Vec<Job>, Vec<gah_ebuild::Repository>)> {
    let config = gah_workgen::plan::Config {
        compilers: gah_core::job::Compiler::ALL.to_vec(),
        strategy: gah_ebuild::Strategy::Covering { t, seed: 0 },
        profile: gah_ebuild::Profile::amd64_linux(),
        timeout_secs,
        threads: 1,
        budget: gah_ebuild::Budget::default(),
    };
    let (repos, mut diagnostics) = gah_workgen::plan::load_repos(std::slice::from_ref(&layout.overlay));
    let plan = gah_workgen::plan::plan(&repos, &config);
    diagnostics.extend(plan.diagnostics);
    for d in &diagnostics {
        eprintln!("gah run: {d}");
    }
    Ok((plan.jobs, repos))
}

/// Keeps, per ebuild, its first configuration (the one closest to the defaults) with every
/// compiler and each further configuration with one compiler, taking turns: every compiler
/// still builds every flag value, at half the cost of the full cross product.
fn alternate_compilers(jobs: Vec<Job>) -> Vec<Job> {
    let mut kept = Vec::new();
    let mut rows_seen: std::collections::BTreeMap<(String, String), Vec<gah_core::job::UseAssignment>> = Default::default();
    for job in jobs {
        let rows = rows_seen.entry((job.repo.clone(), job.cpv.clone())).or_default();
        let row = match rows.iter().position(|u| *u == job.use_flags) {
            Some(i) => i,
            None => {
                rows.push(job.use_flags.clone());
                rows.len() - 1
            }
        };
        let compilers = gah_core::job::Compiler::ALL;
        if row == 0 || compilers[row % compilers.len()] == job.compiler {
            kept.push(job);
        }
    }
    kept
}

/// The path of another program of ours installed beside this one.
pub fn sibling_program(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    anyhow::ensure!(path.is_file(), "{} is missing; build the workspace (cargo build --release)", path.display());
    Ok(path)
}

/// Runs one replica, its inputs as `inputs` (gah-app's arguments) say; returns its archive
/// and the folder holding the binary packages it built (the guest's doing: see
/// `settle_binpkgs`).
#[allow(clippy::too_many_arguments)]
fn run_replica(
    app: &Path,
    config: &RunConfig,
    dir: &Path,
    job_file: &Path,
    inputs: &[std::ffi::OsString],
    replica: u32,
    label: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let slot = dir.join(format!("replica-{replica}"));
    fs::create_dir_all(&slot)?;
    let archive = dir.join(format!("replica-{replica}.tar.gz"));
    // Fresh (the job's folder was emptied), this replica's own, and read by no guest.
    let binpkgs = dir.join(format!("replica-{replica}-{}", gah_core::binpkg::OPEN_NAME));
    let mut cmd = gah_util::process::command(app);
    cmd.current_dir(&slot)
        .arg("--job")
        .arg(job_file)
        .arg("--output")
        .arg(&archive)
        .args(inputs)
        .arg("--binpkgs-output")
        .arg(&binpkgs)
        .arg("--backend")
        .arg(&config.backend)
        .arg("--slot")
        .arg(slot.join("slot"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // An early return (or Ctrl-C's unwinding) must not leave gah-app building on its own.
    let mut child = gah_util::process::KillOnDrop::spawn(&mut cmd)?;
    // The BOINC runtime sends gah-app's stderr to stderr.txt in its folder: follow it for
    // the phase the guest is in.
    let stderr_txt = slot.join("stderr.txt");
    let started = Instant::now();
    let mut offset = 0u64;
    let mut last_phase = None;
    println!("{label}: starting");
    let status = loop {
        if let Some(status) = child.child().try_wait()? {
            break status;
        }
        // gah-app's typed reports (gah_core::progress::AppReport), nothing else of its stderr.
        for report in new_lines(&stderr_txt, &mut offset).iter().filter_map(|l| AppReport::parse(l)) {
            match report {
                AppReport::Progress { phase, .. } if Some(phase) != last_phase => {
                    println!("{label}: {phase} ({:.0} s)", started.elapsed().as_secs_f64());
                    last_phase = Some(phase);
                }
                AppReport::Progress { .. } => {}
                AppReport::Backend { backend, accelerator, why } => {
                    println!("{label}: backend {}, accelerator {} ({why})", backend.as_str(), accelerator.as_str());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if !status.success() || !archive.is_file() {
        let tail = fs::read(&stderr_txt).map(|b| gah_util::process::tail(&b, 5)).unwrap_or_default();
        anyhow::bail!("gah-app failed for {label} ({status}): {tail}");
    }
    Ok((archive, binpkgs))
}

fn new_lines(path: &Path, offset: &mut u64) -> Vec<String> {
    let Ok(mut f) = fs::File::open(path) else { return vec![] };
    if f.seek(SeekFrom::Start(*offset)).is_err() {
        return vec![];
    }
    let mut lines = Vec::new();
    let mut reader = BufReader::new(f);
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        if !line.ends_with('\n') {
            break;
        }
        *offset += line.len() as u64;
        lines.push(std::mem::take(&mut line));
    }
    lines
}

/// What the validator made of a job's replicas, as BOINC's would.
enum Verdict {
    /// Every replica passed the checks and they agree; the first is canonical.
    Accepted(Vec<OutcomeArchive>),
    /// A replica failed the checks (the reason names it).
    Invalid(String),
    /// The replicas disagree.
    Disagree(String),
}

impl Verdict {
    /// The replica whose binary packages may feed later jobs: an accepted job's canonical
    /// one, else none.
    fn canonical(&self) -> Option<usize> {
        match self {
            Verdict::Accepted(_) => Some(0),
            Verdict::Invalid(_) | Verdict::Disagree(_) => None,
        }
    }
}

/// Checks each upload (once; the checks are the validator's own) and compares them.
fn validate(job: &Job, archives: &[PathBuf]) -> Verdict {
    let mut loaded = Vec::with_capacity(archives.len());
    for path in archives {
        let checked =
            gah_validator::load(path).map_err(|e| gah_util::error_chain(&e)).and_then(|a| gah_validator::check_job(&a, job).map(|()| a));
        match checked {
            Ok(archive) => loaded.push(archive),
            Err(why) => return Verdict::Invalid(format!("validator rejected {}: {}", path.display(), gah_validator::one_line(&why))),
        }
    }
    if loaded.is_empty() {
        return Verdict::Invalid("no replica to validate".into());
    }
    for pair in loaded.windows(2) {
        let comparison = gah_validator::compare::compare_outcomes(&pair[0].outcome, &pair[1].outcome);
        if !comparison.agrees() {
            return Verdict::Disagree(format!("replicas disagree: {}", comparison.mismatches.join("; ")));
        }
    }
    Verdict::Accepted(loaded)
}

/// Lets the packages that an accepted job's replicas all built alike (their uploads,
/// compared as the validator compares them: `gah_validator::compare::compare_packages`) into
/// `store`, the folder later jobs' guests read as `/gah/in/binpkgs`, as the server's
/// assimilator does (`gah_assimilator::binpkgs::store_agreed`: staged, read again, kept only
/// when the digest is the agreed one). Without an accepted verdict, nothing; with one
/// replica (`--replicas 1`), its packages as they are. Every upload is deleted afterwards,
/// but the first one when storing failed: it is kept where it is, and named.
fn settle_binpkgs(accepted: bool, uploads: &[PathBuf], store: &Path, staging: &Path) -> anyhow::Result<Stored> {
    let settled = (|| -> anyhow::Result<Stored> {
        let [first, others @ ..] = uploads else { return Ok(Stored::default()) };
        if !accepted {
            return Ok(Stored::default());
        }
        // With `--replicas 1` there is nothing to compare with: on one's own machine, the one
        // replica's packages (checked as any upload is) are taken as they are, as its outcome is.
        let mut agreed = gah_validator::load_binpkgs(first)?;
        for other in others {
            agreed = gah_validator::compare::compare_packages(&agreed, &gah_validator::load_binpkgs(other)?).agreed;
        }
        let agreed: Vec<_> = agreed.into_iter().map(|p| gah_validator::agreed::AgreedPackage { path: p.path, digest: p.digest }).collect();
        Ok(gah_assimilator::binpkgs::store_agreed(first, &agreed, store, staging)?)
    })();
    let keep = settled.as_ref().err().and(uploads.first());
    for upload in uploads.iter().filter(|u| Some(*u) != keep) {
        let _ = fs::remove_file(upload);
    }
    settled.with_context(|| format!("store the packages of {} in {} (left in place)", uploads[0].display(), store.display()))
}

fn assimilate(db: &mut Database, snapshot: gah_core::db::SnapshotId, job: &Job, wu_name: &str, verdict: Verdict, elapsed: Duration) -> Row {
    let minutes = elapsed.as_secs_f64() / 60.0;
    let row = |status: &str, phase: &str, note: String| Row {
        job: job.clone(),
        outcome: status.parse().ok(),
        status: status.into(),
        failed_phase: phase.into(),
        minutes,
        note,
    };
    let loaded = match verdict {
        Verdict::Accepted(loaded) => loaded,
        Verdict::Invalid(why) => return row("invalid", "-", why),
        Verdict::Disagree(why) => return row("disagree", "-", why),
    };
    let canonical = &loaded[0];
    match gah_assimilator::store_at(db, snapshot, wu_name, canonical) {
        Ok(_) => {
            let o = &canonical.outcome;
            row(o.status.as_str(), o.failed_phase.as_deref().unwrap_or("-"), o.summary.clone())
        }
        Err(e) => row("unstored", "-", format!("assimilator: {e:#}")),
    }
}

fn print_table(rows: &[Row]) {
    let pkg_w = rows.iter().map(|r| r.job.cpv.len()).max().unwrap_or(7).max(7);
    let use_w = rows.iter().map(|r| r.job.use_flags.to_package_use().len()).max().unwrap_or(3).clamp(3, 60);
    println!("\n{:<pkg_w$}  {:<use_w$}  {:<8}  {:<12}  {:<12}  {:>7}", "package", "USE", "compiler", "status", "failed phase", "minutes");
    println!("{}", "-".repeat(pkg_w + use_w + 8 + 12 + 12 + 7 + 10));
    for r in rows {
        let mut flags = r.job.use_flags.to_package_use();
        if flags.is_empty() {
            flags = "-".into();
        }
        if flags.len() > use_w {
            flags.truncate(use_w - 1);
            flags.push('…');
        }
        println!(
            "{:<pkg_w$}  {:<use_w$}  {:<8}  {:<12}  {:<12}  {:>7.1}",
            r.job.cpv,
            flags,
            r.job.compiler.as_str(),
            r.status,
            r.failed_phase,
            r.minutes
        );
    }
    let count = |s: &str| rows.iter().filter(|r| r.status == s).count();
    println!(
        "\n{} configurations: {} success, {} build_failed, {} test_failed, {} deps_failed, {} other",
        rows.len(),
        count("success"),
        count("build_failed"),
        count("test_failed"),
        count("deps_failed"),
        rows.len() - count("success") - count("build_failed") - count("test_failed") - count("deps_failed")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use gah_core::job::{Compiler, UseAssignment};
    use gah_core::outcome::{Outcome, Status};

    fn job() -> Job {
        Job::new("gah", "app-arch/bzip2-1.0.8", UseAssignment::default(), Compiler::Gcc, 60)
    }

    fn outcome(job: &Job, status: Status) -> Outcome {
        let mut o = Outcome::for_job(job, status);
        o.test_ran = true;
        if status == Status::BuildFailed {
            o.failed_phase = Some("compile".into());
        }
        o
    }

    /// Replica `n` of `job` as gah-app leaves it: its archive and its packages upload, whose
    /// library is `lib`.
    fn replica(dir: &Path, n: u32, job: &Job, outcome: Option<&Outcome>, lib: &[u8]) -> (PathBuf, PathBuf) {
        let archive = dir.join(format!("replica-{n}.tar.gz"));
        match outcome {
            Some(o) => gah_core::archive::write(fs::File::create(&archive).unwrap(), job, o, b"log\n", None).unwrap(),
            None => fs::write(&archive, b"not an archive").unwrap(),
        }
        let upload = dir.join(format!("replica-{n}-binpkgs.tar"));
        let built_at = n.to_string();
        let package = gah_core::binpkg::fixture::gpkg(
            "bzip2-1.0.8-1",
            &[("CATEGORY", b"app-arch"), ("PF", b"bzip2-1.0.8"), ("BUILD_TIME", built_at.as_bytes())],
            &[("usr/lib64/libbz2.so.1", 0o755, lib)],
            u64::from(n),
        );
        fs::write(&upload, gah_core::binpkg::fixture::upload(&[(AT, &package)])).unwrap();
        (archive, upload)
    }

    const AT: &str = "app-arch/bzip2/bzip2-1.0.8-1.gpkg.tar";

    fn cache_files(cache: &Path) -> Vec<String> {
        let mut found = Vec::new();
        for entry in walk(cache) {
            found.push(entry.strip_prefix(cache).unwrap().to_string_lossy().into_owned());
        }
        found.sort();
        found
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(dir) else { return vec![] };
        entries
            .flat_map(|e| {
                let path = e.unwrap().path();
                if path.is_dir() {
                    walk(&path)
                } else {
                    vec![path]
                }
            })
            .collect()
    }

    /// Issue 15 item 4: no job feeds another unless the validator accepted its replicas, and
    /// then only with what they built alike (issue 11, item 4).
    #[test]
    fn only_what_an_accepted_jobs_replicas_built_alike_reaches_the_store() {
        let job = job();
        let ok = outcome(&job, Status::Success);
        let failed = outcome(&job, Status::BuildFailed);
        let cases = [
            ("accepted", Some(&ok), Some(&ok), b"lib".as_slice(), vec![AT]),
            ("built differently", Some(&ok), Some(&ok), b"trojan".as_slice(), vec![]),
            ("invalid", Some(&ok), None, b"lib".as_slice(), vec![]),
            ("disagree", Some(&ok), Some(&failed), b"lib".as_slice(), vec![]),
        ];
        for (name, first, second, second_lib, stored) in cases {
            let dir = tempfile::tempdir().unwrap();
            let (store, staging) = (dir.path().join("store"), dir.path().join("incoming"));
            let (a1, u1) = replica(dir.path(), 1, &job, first, b"lib");
            let (a2, u2) = replica(dir.path(), 2, &job, second, second_lib);
            let verdict = validate(&job, &[a1, a2]);
            settle_binpkgs(verdict.canonical().is_some(), &[u1.clone(), u2.clone()], &store, &staging).unwrap();
            assert_eq!(cache_files(&store), stored, "{name}");
            assert!(!u1.exists() && !u2.exists(), "{name}: every upload is gone once settled");
        }
    }

    /// Storing that fails loses nothing: the canonical upload stays, and the error names it.
    #[test]
    fn a_failed_store_keeps_the_canonical_upload() {
        let dir = tempfile::tempdir().unwrap();
        let job = job();
        let ok = outcome(&job, Status::Success);
        let (_, u1) = replica(dir.path(), 1, &job, Some(&ok), b"lib");
        let (_, u2) = replica(dir.path(), 2, &job, Some(&ok), b"lib");
        let store = dir.path().join("store");
        // A file where the store's category folder should go.
        fs::create_dir_all(&store).unwrap();
        fs::write(store.join("app-arch"), b"in the way").unwrap();
        let e = settle_binpkgs(true, &[u1.clone(), u2.clone()], &store, &dir.path().join("incoming")).unwrap_err();
        assert!(format!("{e:#}").contains(&u1.display().to_string()), "{e:#}");
        assert!(u1.is_file() && !u2.exists());
    }
}
