//! `gah run`: the whole pipeline on one machine, as the BOINC server and its volunteers
//! would run it: generate jobs, run each as two replicas through `gah-app`, validate,
//! compare, assimilate, and print the results.

use std::fs;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use gah_core::db::Database;
use gah_core::job::Job;
use gah_core::progress::AppReport;

use crate::layout::Layout;

/// Options of `gah run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// `auto`, `vm` or `sandbox`, passed to `gah-app`.
    pub backend: String,
    /// Replicas per job (BOINC's target_nresults); 2 lets the validator compare.
    pub replicas: u32,
    /// Only jobs whose `category/package` contains this.
    pub only: Option<String>,
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
}

/// One finished configuration, for the table.
pub struct Row {
    job: Job,
    status: String,
    failed_phase: String,
    minutes: f64,
    note: String,
}

/// Runs the pipeline and prints the table.
pub fn run(layout: &Layout, config: &RunConfig) -> anyhow::Result<()> {
    layout.check_ready()?;
    let mut jobs = plan_jobs(layout, config.t, config.timeout_secs)?;
    if !config.cross_compilers {
        jobs = alternate_compilers(jobs);
    }
    if let Some(only) = &config.only {
        jobs.retain(|j| j.cp().contains(only.as_str()));
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
    let app = sibling_program("gah-app")?;
    let mut rows = Vec::new();
    let total = jobs.len();
    for (i, job) in jobs.into_iter().enumerate() {
        let started = Instant::now();
        let dir = layout.runs.join(&job.job_id);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let job_file = dir.join("job.json");
        fs::write(&job_file, job.to_json())?;
        let mut archives = Vec::new();
        for replica in 1..=config.replicas {
            let label = format!(
                "[{:>2}/{total}] {} {} ({}) replica {replica}/{}",
                i + 1,
                job.cpv,
                job.compiler,
                job.use_flags.summary(),
                config.replicas
            );
            let archive = run_replica(&app, layout, config, &dir, &job_file, replica, &label)?;
            archives.push(archive);
        }
        let row = validate_and_assimilate(&mut db, snapshot, &job, &archives, started.elapsed());
        println!("        -> {} {} {}", row.status, row.failed_phase, row.note);
        rows.push(row);
    }
    print_table(&rows);
    println!("\nresults database: {}", layout.db.display());
    println!("job folders (logs, archives): {}", layout.runs.display());
    Ok(())
}

/// The jobs for the embedded overlay, from the work generator.
fn plan_jobs(layout: &Layout, t: usize, timeout_secs: u64) -> anyhow::Result<Vec<Job>> {
    let config = gah_workgen::plan::Config {
        compilers: gah_core::job::Compiler::ALL.to_vec(),
        strategy: gah_ebuild::Strategy::Covering { t, seed: 0 },
        profile: gah_ebuild::Profile::amd64_linux(),
        timeout_secs,
        threads: 1,
    };
    let (repos, mut diagnostics) = gah_workgen::plan::load_repos(std::slice::from_ref(&layout.overlay));
    let plan = gah_workgen::plan::plan(&repos, &config);
    diagnostics.extend(plan.diagnostics);
    for d in &diagnostics {
        eprintln!("gah run: {d}");
    }
    Ok(plan.jobs)
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

fn run_replica(
    app: &Path,
    layout: &Layout,
    config: &RunConfig,
    dir: &Path,
    job_file: &Path,
    replica: u32,
    label: &str,
) -> anyhow::Result<PathBuf> {
    let slot = dir.join(format!("replica-{replica}"));
    fs::create_dir_all(&slot)?;
    let archive = dir.join(format!("replica-{replica}.tar.gz"));
    let mut cmd = gah_util::process::command(app);
    cmd.current_dir(&slot)
        .arg("--job")
        .arg(job_file)
        .arg("--output")
        .arg(&archive)
        .arg("--repo")
        .arg(&layout.overlay)
        .arg("--distfiles")
        .arg(&layout.distfiles)
        .arg("--binpkgs")
        .arg(&layout.binpkgs)
        .arg("--update-binpkgs")
        .arg("--image")
        .arg(&layout.image)
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
    Ok(archive)
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

fn validate_and_assimilate(db: &mut Database, snapshot: i64, job: &Job, archives: &[PathBuf], elapsed: Duration) -> Row {
    let minutes = elapsed.as_secs_f64() / 60.0;
    let row = |status: &str, phase: &str, note: String| Row {
        job: job.clone(),
        status: status.into(),
        failed_phase: phase.into(),
        minutes,
        note,
    };
    // Each upload is read and checked once; the checks are the validator's own.
    let mut loaded = Vec::with_capacity(archives.len());
    for path in archives {
        let checked =
            gah_validator::load(path).map_err(|e| gah_util::error_chain(&e)).and_then(|a| gah_validator::check_job(&a, job).map(|()| a));
        match checked {
            Ok(archive) => loaded.push(archive),
            Err(why) => return row("invalid", "-", format!("validator rejected {}: {}", path.display(), gah_validator::one_line(&why))),
        }
    }
    for pair in loaded.windows(2) {
        let comparison = gah_validator::compare::compare_outcomes(&pair[0].outcome, &pair[1].outcome);
        if !comparison.agrees() {
            return row("disagree", "-", format!("replicas disagree: {}", comparison.mismatches.join("; ")));
        }
    }
    let canonical = &loaded[0];
    match gah_assimilator::store_at(db, snapshot, &job.job_id, canonical) {
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
