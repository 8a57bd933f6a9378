//! `gah-workgen`: the command line over the `gah_workgen` library. Glue only: parse, call,
//! print; every decision lives in the library.
// A command line prints: its results on stdout, diagnostics and the error chain on stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use gah_core::db::Database;
use gah_core::job::Compiler;
use gah_core::project::{Overrides, Resolved};
use gah_ebuild::{Budget, Profile, Severity, Strategy};
use gah_workgen::boinc::{write_submission, DataPlane, Submission};
use gah_workgen::daemon::{self, CommandCount, DaemonConfig, LocalSubmitter, RemoteSubmitter, Submitter};
use gah_workgen::distfiles::Mirror;
use gah_workgen::remote::Remote;
use gah_workgen::{load_repos, plan_with, BlockedLine, Config, Plan, PlanLine, Queue, Zap};

const LONG_ABOUT: &str = "\
Generates gentoo@home build jobs from ebuild repositories and keeps the queue of them.

A job is one ebuild × one USE configuration × one compiler. The configurations come from the
ebuild's md5-cache metadata (metadata/md5-cache/CATEGORY/PF): every one satisfies
REQUIRED_USE as Portage evaluates it. `test` is never varied: the guest builds with
FEATURES=test, so each job's `test` is on unless RESTRICT contains test.

Examples:
  # What would be built, one JSON object per line, without touching any queue:
  gah-workgen plan --repo vm-images/overlay --format jsonl

  # Pairwise configurations of GURU and Funtoo core-kit, gcc only, as a table:
  gah-workgen plan --repo ../shared/data/md5-cache/guru --repo ../shared/data/md5-cache/funtoo-core-kit \\
      --strategy pairwise --compiler gcc --format text

  # Fill a queue folder and write the BOINC submission script (each workunit's data.json
  # names the repository gah deploy published):
  gah-workgen generate --repo vm-images/overlay --distfiles .cache/distfiles --queue /var/lib/gah/queue \
      --boinc-project ~/projects/gah --published ~/projects/gah/download/cvmfs/gentoo.gah \
      --data-url http://gah.example.org/gah/download/cvmfs/gentoo.gah
  sh /var/lib/gah/queue/create_work.sh      # as the BOINC project's administrator

  # Under a real profile (parents, masks, USE_EXPAND), issuing only jobs whose distfiles
  # (and their dependencies') are in the mirror with the Manifest's checksums:
  gah-workgen plan --repo vm-images/overlay --profile vm-images/portage/etc-portage/make.profile \
      --distfiles .cache/distfiles

  # Keep 100 results unsent on a BOINC server, like its sample work generator:
  gah-workgen daemon --queue /var/lib/gah/queue --boinc-project ~/projects/gah --keep-unsent 100 \
      --interval 60 --unsent-cmd 'mysql -N -e \"select count(*) from result where server_state=2\" gah'

  # The rotation: what runs next, what keeps failing, put it back:
  gah-workgen next --queue /var/lib/gah/queue -n 20
  gah-workgen fails --queue /var/lib/gah/queue
  gah-workgen zap --queue /var/lib/gah/queue dev-libs/libffi

Broken md5-cache entries are reported on stderr (file:line) and skipped; they never stop a run.
Skipped too, each with its reason: entries that are folders, links that loop or dangle,
ebuilds in an EAPI Portage does not support (it masks them), and ebuilds whose REQUIRED_USE
names a flag outside IUSE and the profile's implicit IUSE (Portage: InvalidDependString).
Each ebuild is planned within a budget (--ebuild-time-budget; at most 1024 constrained
flags; a bounded number of tracked combinations): past it the ebuild ends with a diagnostic
naming its file, and the run moves on. --stats shows where the time goes.

--profile reads a Portage profile with its parent stack; a parent written `repo:path`
(`gentoo:default/linux/amd64/23.0`) is profiles/path of the --repo of that name, so give
::gentoo with --repo when an overlay's profile stacks on it. A profile folder whose `eapi`
file names an unsupported EAPI is refused with its parents, as Portage refuses it.";

#[derive(Parser)]
#[command(name = "gah-workgen", version, about = "Generates gentoo@home build jobs and keeps their queue", long_about = LONG_ABOUT)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Print the jobs the repositories give, without touching any queue.
    #[command(long_about = "Print the jobs the repositories give, one per line, without touching any queue.\n\n\
jsonl lines look like {\"repo\":\"gah\",\"cpv\":\"app-arch/bzip2-1.0.8\",\"use\":[\"static\"],\"compiler\":\"gcc\"},\n\
\"use\" listing the enabled IUSE flags (every other IUSE flag is off).\n\n\
Example:\n  gah-workgen plan --repo vm-images/overlay --format jsonl | jq -r .cpv | sort | uniq -c")]
    Plan {
        #[command(flatten)]
        plan: PlanArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
    },
    /// Write the jobs into a queue folder and a BOINC create_work.sh.
    #[command(long_about = "Write the jobs into a queue folder and a BOINC create_work.sh.\n\n\
The queue folder gets pending/<job_id>.json for each new job (jobs already there are kept as\n\
they are), state.sqlite (the rotation), templates/gah_in and templates/gah_out, and\n\
create_work.sh, which a BOINC administrator runs from the project folder: it installs the\n\
templates, stages each job file with bin/dir_hier_path and calls bin/create_work with every\n\
rsc_* bound, the deadline and the replication (quorum 2) set explicitly. Re-running it skips\n\
jobs already submitted. Each workunit also gets a data.json (templates/gah_in's second\n\
file; create_work refuses workunits without it) naming the current revision of the CernVM-FS\n\
repository in --published, served at --data-url, and the distfiles its ebuild needs (found\n\
with --distfiles: give it, or jobs get none).\n\n\
Example:\n  gah-workgen generate --repo vm-images/overlay --distfiles .cache/distfiles --queue .cache/queue \\\n      --boinc-project ~/projects/gah --published ~/projects/gah/download/cvmfs/gentoo.gah \\\n      --data-url http://gah.example.org/gah/download/cvmfs/gentoo.gah")]
    Generate {
        #[command(flatten)]
        plan: PlanArgs,
        /// The queue folder (created if missing).
        #[arg(long)]
        queue: PathBuf,
        /// The BOINC project folder create_work.sh changes to (default: the folder it is run from;
        /// BOINC_PROJECT overrides both).
        #[arg(long)]
        boinc_project: Option<PathBuf>,
        /// The BOINC application name.
        #[arg(long, default_value = "gah")]
        appname: String,
        /// Submit with one `create_work --stdin` per batch instead of one create_work per job.
        #[arg(long)]
        stdin_batch: bool,
        #[command(flatten)]
        data: DataArgs,
    },
    /// List the jobs the last `generate` held back because distfiles are missing or corrupt.
    Blocked {
        /// The queue folder.
        #[arg(long)]
        queue: PathBuf,
    },
    /// Submit the next N unsubmitted jobs of the rotation now (locally or remotely).
    #[command(long_about = "Submit the next N unsubmitted jobs of the rotation now.\n\n\
With --boinc-project, each job file is staged with bin/dir_hier_path and the batch goes to one\n\
`bin/create_work --stdin`. With --remote-url, one submit_batch request is POSTed to\n\
URL/submit_rpc_handler.php; each job's inputs are given by URL (--job-url-base + <job_id>.json\n\
and <wu_name>.data.json, the queue's pending/ folder published over HTTP) with size and MD5. The authenticator is\n\
read from --authenticator-file or GAH_BOINC_AUTHENTICATOR, never from the command line.\n\n\
Example:\n  gah-workgen submit --queue q -n 50 --remote-url https://gah.example.org/gah/ \\\n      --job-url-base https://gah.example.org/jobs/ --authenticator-file ~/.gah-auth")]
    Submit {
        /// The queue folder [default: queue_dir in the project file, else $GAH_QUEUE_DIR].
        #[arg(long)]
        queue: Option<PathBuf>,
        /// How many jobs.
        #[arg(short, default_value_t = 10)]
        n: usize,
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        results: ResultsArgs,
    },
    /// Keep N unsent results on the BOINC server (BOINC's sample_work_generator loop).
    #[command(long_about = "Keep N unsent results on the BOINC server, like BOINC's sample_work_generator:\n\
each round runs --unsent-cmd (which prints the number of unsent results; on a real project a\n\
query such as `select count(*) from result where server_state=2 and appid=...`, as BOINC's\n\
count_unsent_results does), and when it is below --keep-unsent submits\n\
ceil((keep - unsent) / target_nresults) new jobs in rotation order, then sleeps --interval.\n\
Jobs already submitted (submitted/<job_id>) are never submitted again.\n\n\
Each round first folds the results the assimilator stored since the last round into the\n\
rotation (past a watermark kept in the queue). The results database and the queue come from\n\
the command line, else the project's gah.conf (./gah.conf, else ../gah.conf: the project\n\
folder seen from a BOINC daemon's tmp_<host>/), else GAH_RESULTS_DB and GAH_QUEUE_DIR; the\n\
daemon refuses to start without a results database.")]
    Daemon {
        /// The queue folder [default: queue_dir in the project file, else $GAH_QUEUE_DIR].
        #[arg(long)]
        queue: Option<PathBuf>,
        /// Unsent results to keep.
        #[arg(long)]
        keep_unsent: u64,
        /// Seconds between rounds.
        #[arg(long, default_value_t = 60)]
        interval: u64,
        /// A shell command printing the number of unsent results.
        #[arg(long)]
        unsent_cmd: String,
        /// Stop after this many rounds (default: run forever).
        #[arg(long)]
        rounds: Option<u64>,
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        results: ResultsArgs,
        /// Issue failure localisations' follow-ups (issue 13): the repositories the queue's
        /// jobs were planned from; repeat for several. The assimilator starts a localisation
        /// after each real failure and stores the follow-up it waits for (gah.conf's
        /// `localise_repo`); with this, the daemon submits those follow-ups ahead of the
        /// rotation, since a person waits for the answer. Read again when they change on
        /// disk.
        #[arg(long = "localise-repo", value_name = "PATH")]
        localise_repos: Vec<PathBuf>,
        /// Ignored: kept so that daemon lines written by earlier `gah deploy` still start.
        /// The profile is the assimilator's now (gah.conf's `localise_profile`).
        #[arg(long, value_name = "PATH", hide = true)]
        localise_profile: Option<PathBuf>,
        /// The follow-up jobs' wall-clock limit inside the guest, seconds.
        #[arg(long, default_value_t = 3600)]
        localise_timeout_secs: u64,
    },
    /// Print the next jobs of the rotation (localisation follow-ups, then changed ebuilds, then never tested, then lowest failcount).
    Next {
        /// The queue folder.
        #[arg(long)]
        queue: PathBuf,
        /// How many.
        #[arg(short, default_value_t = 10)]
        n: usize,
        /// Print the job ids only.
        #[arg(long)]
        ids: bool,
        #[command(flatten)]
        results: ResultsArgs,
    },
    /// List cells with failures, highest failcount first (3 = out of rotation).
    Fails {
        /// The queue folder.
        #[arg(long)]
        queue: PathBuf,
        #[command(flatten)]
        results: ResultsArgs,
    },
    /// Reset failcounts: of the cells matching a job id, cat/pkg-ver or cat/pkg, or all with --all.
    Zap {
        /// The queue folder.
        #[arg(long)]
        queue: PathBuf,
        /// Reset every cell.
        #[arg(long, conflicts_with = "selectors")]
        all: bool,
        /// Job ids, cat/pkg-ver or cat/pkg.
        #[arg(required_unless_present = "all")]
        selectors: Vec<String>,
    },
    /// Record a result by hand (results the assimilator stores are folded in from the results database).
    Record {
        /// The queue folder.
        #[arg(long)]
        queue: PathBuf,
        /// The job id (the workunit name).
        job_id: String,
        /// success, deps_failed, build_failed, test_failed, timeout, infra_error or resource_limit.
        status: gah_core::outcome::Status,
    },
}

/// What says a repository changed: the modification time and inode of the folder, its
/// md5-cache and each category folder in it (a new or rewritten entry is a rename in its
/// category folder; `gah deploy` renames a whole new copy into place). Unreadable parts count
/// as absent.
fn repos_stamp(paths: &[PathBuf]) -> Vec<(PathBuf, Option<(std::time::SystemTime, u64)>)> {
    use std::os::unix::fs::MetadataExt;
    let stat = |p: &Path| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.ino())));
    let mut out = Vec::new();
    for repo in paths {
        let cache = repo.join("metadata/md5-cache");
        out.push((repo.clone(), stat(repo)));
        out.push((cache.clone(), stat(&cache)));
        let mut categories: Vec<PathBuf> =
            std::fs::read_dir(&cache).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
        categories.sort();
        out.extend(categories.into_iter().map(|c| {
            let s = stat(&c);
            (c, s)
        }));
    }
    out
}

/// Where the rotation reads results from: the results database the assimilator writes.
#[derive(Args)]
struct ResultsArgs {
    /// The results database whose new outcomes are folded into the rotation first
    /// [default: results_db in the project file, else $GAH_RESULTS_DB; none: nothing folded].
    #[arg(long, value_name = "PATH")]
    results_db: Option<PathBuf>,
    /// The project file [default: ./gah.conf, else ../gah.conf (from a BOINC daemon's tmp_<host>/)].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ResultsArgs {
    /// The settings: the command line, the project file, then the environment.
    fn resolve(&self, queue: Option<&Path>) -> anyhow::Result<Resolved> {
        let over = Overrides {
            config: self.config.clone(),
            results_db: self.results_db.clone(),
            queue_dir: queue.map(Path::to_path_buf),
            snapshot: None,
        };
        Ok(gah_core::project::resolve_here(&over)?)
    }

    /// Folds the new results into `q`'s rotation when a results database is configured
    /// and exists (the assimilator creates it), saying what it did on stderr.
    fn fold(&self, q: &Queue) -> anyhow::Result<()> {
        let project = self.resolve(None)?;
        if let Some(results) = open_results(&project)? {
            let f = q.fold_results(&results)?;
            if f.counted + f.unknown > 0 {
                eprintln!("gah-workgen: rotation: {} results folded in, {} of jobs not in this queue", f.counted, f.unknown);
            }
        }
        Ok(())
    }
}

/// The configured results database if it exists: never created here.
fn open_results(project: &Resolved) -> anyhow::Result<Option<Database>> {
    match &project.results_db {
        Some(path) if path.exists() => Ok(Some(Database::open(path)?)),
        _ => Ok(None),
    }
}

/// The queue folder: `--queue`, else the project file's `queue_dir`, else `$GAH_QUEUE_DIR`.
fn queue_of(project: &Resolved) -> anyhow::Result<PathBuf> {
    project.queue_dir.clone().context(
        "no queue folder configured: give --queue, or `queue_dir = PATH` in the project's gah.conf (./gah.conf or ../gah.conf), or set GAH_QUEUE_DIR",
    )
}

/// Where each workunit's `data.json` says its inputs are: the project's CernVM-FS repository
/// (`templates/gah_in`'s file 1).
#[derive(Args)]
struct DataArgs {
    /// The folder the repository is published in (by `gah deploy` or `gah-publish`): each
    /// workunit names its current revision. BOINC's create_work refuses workunits without a
    /// data.json, so submitting needs it.
    #[arg(long, requires = "data_url")]
    published: Option<PathBuf>,
    /// The URL volunteers read that repository from (e.g.
    /// http://host/gah/download/cvmfs/gentoo.gah).
    #[arg(long, requires = "published")]
    data_url: Option<String>,
    /// The repository's name (the app version carries its key as <name>.pub).
    #[arg(long, default_value = gah_core::data_ref::DEFAULT_NAME)]
    data_name: String,
}

impl DataArgs {
    fn plane(&self) -> Option<DataPlane> {
        let (published, url) = (self.published.as_ref()?, self.data_url.as_ref()?);
        // The daemon runs in tmp_<host>/: one absolute path, whatever the folder.
        let published = std::fs::canonicalize(published).unwrap_or_else(|_| published.clone());
        Some(DataPlane { name: self.data_name.clone(), url: url.clone(), published })
    }
}

/// Where jobs are submitted: a local project folder or a remote project.
#[derive(Args)]
struct TargetArgs {
    /// A local BOINC project folder (bin/create_work, bin/dir_hier_path).
    #[arg(long, conflicts_with = "remote_url", required_unless_present = "remote_url")]
    boinc_project: Option<PathBuf>,
    /// A remote project's URL (with trailing /): submit_batch to its submit_rpc_handler.php.
    #[arg(long, requires = "job_url_base")]
    remote_url: Option<String>,
    /// The URL prefix the queue's pending/ folder is served under (<job_id>.json and
    /// <wu_name>.data.json).
    #[arg(long)]
    job_url_base: Option<String>,
    /// A file holding the job submitter's authenticator (else GAH_BOINC_AUTHENTICATOR).
    #[arg(long)]
    authenticator_file: Option<PathBuf>,
    /// The BOINC application name.
    #[arg(long, default_value = "gah")]
    appname: String,
    #[command(flatten)]
    data: DataArgs,
}

impl TargetArgs {
    fn submitter(&self, queue: &std::path::Path) -> anyhow::Result<Box<dyn Submitter>> {
        // Refused now rather than at the first submission: create_work wants a data.json.
        let Some(plane) = self.data.plane() else {
            anyhow::bail!("give --published and --data-url: every workunit names the published repository (templates/gah_in's data.json)");
        };
        let sub = Submission { appname: self.appname.clone(), stdin_batch: true, data: Some(plane), ..Submission::standard() };
        if let Some(project) = &self.boinc_project {
            // BOINC's bin/start runs the daemon in tmp_<host>/ with `--boinc-project ..`, and
            // the project's tools run with the project as their folder: one absolute path.
            let project = std::fs::canonicalize(project).with_context(|| format!("BOINC project folder {}", project.display()))?;
            return Ok(Box::new(LocalSubmitter { project, queue: queue.to_owned(), sub }));
        }
        let (Some(url), Some(base)) = (&self.remote_url, &self.job_url_base) else {
            anyhow::bail!("give --boinc-project, or --remote-url with --job-url-base");
        };
        let authenticator = match &self.authenticator_file {
            Some(f) => std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?.trim().to_owned(),
            None => std::env::var("GAH_BOINC_AUTHENTICATOR").context("no --authenticator-file and no GAH_BOINC_AUTHENTICATOR")?,
        };
        let remote = Remote { project_url: url.clone(), authenticator, job_url_base: base.clone() };
        Ok(Box::new(RemoteSubmitter { remote, sub, queue: queue.to_owned(), client: gah_workgen::remote::client()?, batches: Vec::new() }))
    }
}

#[derive(Args)]
struct PlanArgs {
    /// A repository (its metadata/md5-cache is read); repeat for several.
    #[arg(long = "repo", required = true)]
    repos: Vec<PathBuf>,
    /// A compiler to cross configurations with; repeat for several (default: gcc and clang).
    #[arg(long = "compiler")]
    compilers: Vec<Compiler>,
    /// exhaustive: every valid configuration (up to --limit per ebuild, else pairwise);
    /// pairwise: a t-wise covering array (see --t).
    #[arg(long, value_enum, default_value_t = StrategyArg::Exhaustive)]
    strategy: StrategyArg,
    /// Most configurations per ebuild for --strategy exhaustive.
    #[arg(long, default_value_t = 256)]
    limit: usize,
    /// Covering strength for --strategy pairwise (2 = every pair of flag values).
    #[arg(long, default_value_t = 2)]
    t: usize,
    /// Seed of the covering-array construction (same seed, same plan).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The wall-clock limit of each job inside the guest, seconds.
    #[arg(long, default_value_t = 3600)]
    timeout_secs: u64,
    /// Planning threads (default: the machine's cores).
    #[arg(long)]
    threads: Option<usize>,
    /// A Portage profile folder (its parent stack, make.defaults, use.mask/use.force,
    /// package.use.mask/package.use.force); default: the built-in amd64/Linux/glibc profile.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// A distfile mirror folder: issue a job only when every distfile of it and its
    /// dependencies is there with its Manifest's size, SHA512 and BLAKE2B; list the others as
    /// blocked on fetch.
    #[arg(long)]
    distfiles: Option<PathBuf>,
    /// Keywords that make a dependency visible when resolving it for --distfiles.
    #[arg(long, default_value = "amd64 ~amd64")]
    accept_keywords: String,
    /// Wall-clock seconds one ebuild may take: past them its configurations found so far are
    /// kept, with a warning stating their coverage (or, with none found, an error).
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    ebuild_time_budget: f64,
    /// Print, on stderr, per-ebuild time, configurations and pair coverage for the 20
    /// slowest ebuilds (where the planning time goes).
    #[arg(long)]
    stats: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Jsonl,
    Text,
}

#[derive(Clone, Copy, ValueEnum)]
enum StrategyArg {
    Exhaustive,
    Pairwise,
}

impl PlanArgs {
    fn config(&self, profile: Profile) -> Config {
        let mut compilers = if self.compilers.is_empty() { Compiler::ALL.to_vec() } else { self.compilers.clone() };
        compilers.dedup();
        Config {
            compilers,
            strategy: match self.strategy {
                StrategyArg::Exhaustive => Strategy::Exhaustive { limit: self.limit },
                StrategyArg::Pairwise => Strategy::Covering { t: self.t, seed: self.seed },
            },
            profile,
            timeout_secs: self.timeout_secs,
            threads: self.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            budget: Budget {
                time: std::time::Duration::try_from_secs_f64(self.ebuild_time_budget.max(0.0)).unwrap_or(std::time::Duration::MAX),
                ..Budget::default()
            },
        }
    }

    /// Reads and plans, printing diagnostics on stderr.
    fn run(&self) -> (Plan, bool) {
        let t0 = std::time::Instant::now();
        let (repos, mut diags) = load_repos(&self.repos);
        let profile = match &self.profile {
            Some(path) => {
                // `repo:path` parents resolve against the repositories given with --repo.
                let names: Vec<(String, PathBuf)> = repos.iter().map(|r| (r.name.clone(), r.path.clone())).collect();
                let (p, d) = Profile::read_in(path, &names);
                diags.extend(d);
                p
            }
            None => Profile::amd64_linux(),
        };
        let keywords: Vec<&str> = self.accept_keywords.split_whitespace().collect();
        let mirror = self.distfiles.as_ref().map(|d| Mirror::new(d, &keywords));
        let p = plan_with(&repos, &self.config(profile), mirror.as_ref());
        diags.extend(p.diagnostics.iter().cloned());
        let mut errors = false;
        for d in &diags {
            errors |= d.severity == Severity::Error;
            eprintln!("{d}");
        }
        let (e, w) = diags.iter().fold((0, 0), |(e, w), d| if d.severity == Severity::Error { (e + 1, w) } else { (e, w + 1) });
        for b in &p.blocked {
            let files: Vec<String> = b.missing.iter().map(|m| format!("{} ({}: {})", m.file, m.needed_by, m.problem)).collect();
            eprintln!("blocked on fetch: {} {} {}: {}", b.job.cpv, b.job.compiler, b.job.use_flags.summary(), files.join(", "));
        }
        if self.stats {
            print_stats(&p);
        }
        let blocked = if self.distfiles.is_some() { format!(", {} blocked on fetch", p.blocked.len()) } else { String::new() };
        eprintln!(
            "gah-workgen: {} ebuilds ({} with jobs), {} jobs{blocked}, {e} errors, {w} warnings, {:.2?}",
            p.ebuilds,
            p.ebuilds_planned,
            p.jobs.len(),
            t0.elapsed()
        );
        (p, errors)
    }
}

/// `--stats`: the slowest ebuilds, one line each, on stderr.
fn print_stats(p: &Plan) {
    let total: std::time::Duration = p.stats.iter().map(|s| s.stats.elapsed).sum();
    eprintln!("gah-workgen: stats: {} ebuilds, {:.2?} planning in all (summed over threads); slowest:", p.stats.len(), total);
    eprintln!("{:>10} {:>6} {:>6} {:>8}  ebuild", "time", "flags", "rows", "covered");
    for s in p.slowest(20) {
        let st = &s.stats;
        eprintln!("{:>10.2?} {:>6} {:>6} {:>7.1}%  {}::{}", st.elapsed, st.flags, st.rows, st.coverage_percent(), s.cpv, s.repo);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.mode) {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`| head`) is not an error.
            if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) {
                return ExitCode::SUCCESS;
            }
            eprintln!("gah-workgen: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(mode: Mode) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match mode {
        Mode::Plan { plan, format } => {
            let (p, _) = plan.run();
            for job in &p.jobs {
                match format {
                    Format::Jsonl => {
                        serde_json::to_writer(&mut out, &PlanLine::new(job))?;
                        writeln!(out)?;
                    }
                    Format::Text => writeln!(out, "{:<12} {:<50} {:<5} {}", job.repo, job.cpv, job.compiler, job.use_flags.summary())?,
                }
            }
        }
        Mode::Generate { plan, queue, boinc_project, appname, stdin_batch, data } => {
            let (p, _) = plan.run();
            let mut q = Queue::open(&queue)?;
            let stats = q.add(&p)?;
            // The blocked listing is rewritten on every run: it is the mirror's state now.
            let mut listing = Vec::new();
            for b in &p.blocked {
                serde_json::to_writer(&mut listing, &BlockedLine::new(b))?;
                listing.push(b'\n');
            }
            gah_util::atomic::write(&queue.join("blocked.jsonl"), &listing)?;
            let order = q.next(usize::MAX)?;
            // Without the data plane the queue is written but no script: create_work would
            // refuse every workunit without its data.json.
            let script = match data.plane() {
                Some(plane) => {
                    let sub = Submission { appname, stdin_batch, data: Some(plane), ..Submission::standard() };
                    // Names for this script's submissions (a job it skips as submitted leaves a gap).
                    let wus = q.reserve(&order)?;
                    write_submission(&q, &wus, &sub, boinc_project.as_deref())?.display().to_string()
                }
                None => "none written (give --published and --data-url for a create_work.sh)".to_owned(),
            };
            writeln!(
                out,
                "{} new jobs, {} already queued, {} changed ebuilds, {} blocked on fetch; {} jobs in rotation\nqueue: {}\nBOINC submission: {}",
                stats.added,
                stats.existing,
                stats.changed,
                p.blocked.len(),
                order.len(),
                queue.display(),
                script
            )?;
        }
        Mode::Blocked { queue } => {
            let path = queue.join("blocked.jsonl");
            let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
            out.write_all(text.as_bytes())?;
        }
        Mode::Submit { queue, n, target, results } => {
            let queue = queue_of(&results.resolve(queue.as_deref())?)?;
            let q = Queue::open(&queue)?;
            results.fold(&q)?;
            let jobs = q.next_unsubmitted(n)?;
            if !jobs.is_empty() {
                let wus = q.reserve(&jobs)?;
                target.submitter(&queue)?.submit(&wus)?;
                q.mark_submitted(&wus)?;
            }
            writeln!(out, "{} jobs submitted", jobs.len())?;
        }
        Mode::Daemon {
            queue,
            keep_unsent,
            interval,
            unsent_cmd,
            rounds,
            target,
            results,
            localise_repos,
            localise_profile,
            localise_timeout_secs,
        } => {
            let project = results.resolve(queue.as_deref())?;
            let db_path = project.require_results_db()?;
            let queue = queue_of(&project)?;
            let q = Queue::open(&queue)?;
            if !db_path.exists() {
                eprintln!(
                    "gah-workgen daemon: no results database at {} yet: nothing to fold until the assimilator makes it",
                    db_path.display()
                );
            }
            let mut submitter = target.submitter(&queue)?;
            let cfg = DaemonConfig {
                keep_unsent,
                results_per_job: u64::from(Submission::standard().target_nresults),
                interval: std::time::Duration::from_secs(interval),
                rounds,
            };
            // The repositories are read again whenever they change on disk (`gah deploy`
            // replaces the project's copy): a failure is localised over the current tree, so an
            // ebuild added since the start is not skipped.
            let mut log = |line: &str| eprintln!("gah-workgen daemon: {line}");
            if localise_profile.is_some() {
                log("--localise-profile is ignored: the assimilator localises, under gah.conf's localise_profile");
            }
            let (mut read_at, mut repos) = (None, Vec::new());
            // The stamp of the last read refused, so that it is said once.
            let mut refused_at = None;
            let mut k = 0u64;
            loop {
                if !localise_repos.is_empty() {
                    let stamp = repos_stamp(&localise_repos);
                    if read_at.as_ref() != Some(&stamp) {
                        let (read, diags) = load_repos(&localise_repos);
                        for d in &diags {
                            eprintln!("{d}");
                        }
                        // A read that overlapped `gah deploy`'s swap of the folder may miss
                        // ebuilds, and would then end their localisations or drop their
                        // failures: only a read the folder did not change under is taken.
                        if repos_stamp(&localise_repos) == stamp && read.iter().all(|r| !r.ebuilds.is_empty()) {
                            if read_at.is_some() {
                                log("localisation: the repositories changed: read again");
                            }
                            (repos, read_at) = (read, Some(stamp));
                        } else if refused_at.replace(stamp.clone()).as_ref() != Some(&stamp) {
                            log("localisation: a repository changed while it was read, or is empty: kept the last whole read, reading again next round");
                        }
                    }
                }
                let localise = gah_workgen::followup::LocaliseConfig { repos: &repos, timeout_secs: localise_timeout_secs };
                // No follow-ups before a whole read (their new cells' `_md5_`).
                let localise = read_at.is_some().then_some(&localise);
                let round = DaemonConfig { rounds: Some(1), ..cfg };
                daemon::run_localising(
                    &q,
                    Some(db_path),
                    localise,
                    &mut CommandCount(unsent_cmd.clone()),
                    submitter.as_mut(),
                    round,
                    &mut log,
                )?;
                k += 1;
                if cfg.rounds.is_some_and(|r| k >= r) {
                    break;
                }
                std::thread::sleep(cfg.interval);
            }
        }
        Mode::Next { queue, n, ids, results } => {
            let q = Queue::open(&queue)?;
            results.fold(&q)?;
            for cell in q.cells(false)?.into_iter().take(n) {
                if ids {
                    writeln!(out, "{}", cell.job_id)?;
                } else {
                    let tag = if cell.followup {
                        "followup".to_owned()
                    } else if cell.changed {
                        "changed".to_owned()
                    } else if cell.runs == 0 {
                        "new".to_owned()
                    } else {
                        format!("fails={}", cell.failcount)
                    };
                    writeln!(out, "{:<8} {:<40} {:<5} {:<30} {}", tag, cell.cpv, cell.compiler, cell.use_summary, cell.job_id)?;
                }
            }
        }
        Mode::Fails { queue, results } => {
            let q = Queue::open(&queue)?;
            results.fold(&q)?;
            for c in q.fails()? {
                let mark = if c.failcount >= gah_workgen::MAX_FAILS { " (out of rotation)" } else { "" };
                writeln!(
                    out,
                    "{} {:<40} {:<5} {:<30} last={} {}{mark}",
                    c.failcount,
                    c.cpv,
                    c.compiler,
                    c.use_summary,
                    c.last_status.as_deref().unwrap_or("-"),
                    c.job_id
                )?;
            }
        }
        Mode::Zap { queue, all, selectors } => {
            let mut q = Queue::open(&queue)?;
            let n = q.zap(if all { Zap::All } else { Zap::Matching(&selectors) })?;
            writeln!(out, "{n} cells back in rotation")?;
        }
        Mode::Record { queue, job_id, status } => {
            let r = gah_workgen::record_result(&queue, &job_id, status)?;
            writeln!(out, "{job_id}: failcount {} -> {}", r.before, r.after)?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
