//! Planning: repositories in, jobs out. No queue, no files written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use gah_core::job::{Compiler, Job};
use gah_ebuild::{plan_ebuild, read_repository, Budget, Diagnostic, Planned, Profile, Repository, Severity, Stats, Strategy};
use serde::Serialize;

use crate::distfiles::{Index, Mirror, MissingFile};

/// What a plan is made of. Deliberately no `Default`: every caller says what it wants.
#[derive(Debug, Clone)]
pub struct Config {
    /// The compiler axis: every configuration is crossed with each of these.
    pub compilers: Vec<Compiler>,
    /// How configurations are picked per ebuild.
    pub strategy: Strategy,
    /// The target profile (implicit flags, masks, forces).
    pub profile: Profile,
    /// The wall-clock limit written into each job.
    pub timeout_secs: u64,
    /// Worker threads for the per-ebuild work (1 = in the calling thread).
    pub threads: usize,
    /// Per-ebuild bounds (time, flags, combinations): an ebuild past one ends with a
    /// diagnostic naming its file, and the run moves on.
    pub budget: Budget,
}

/// The jobs for a set of repositories, with what went wrong on the way.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// One job per (ebuild, configuration, compiler), in repository, cpv, configuration,
    /// compiler order.
    pub jobs: Vec<Job>,
    /// Reader diagnostics and per-ebuild notes (empty valid space, fallbacks).
    pub diagnostics: Vec<Diagnostic>,
    /// `_md5_` of every planned ebuild, keyed by (repo, cpv): the rotation uses it to move
    /// changed ebuilds to the front.
    pub ebuild_md5: BTreeMap<(String, String), String>,
    /// Ebuilds read, and how many of them got at least one job.
    pub ebuilds: usize,
    /// Ebuilds with at least one job.
    pub ebuilds_planned: usize,
    /// Jobs held back by the hermetic check (only with a mirror: [`plan_with`]), with the
    /// distfiles they lack. They are not in `jobs`.
    pub blocked: Vec<Blocked>,
    /// What each ebuild cost and gave, in planning order (for `--stats`).
    pub stats: Vec<EbuildStats>,
    /// The distfiles the issued jobs of each ebuild need (theirs and their dependencies'), by
    /// (repo, cpv): the union over its configurations, what its workunits' `data.json` name
    /// (a USE-conditional distfile is then fetched by every job of the ebuild, not only the
    /// ones that unpack it). Only with a mirror ([`plan_with`]).
    pub distfiles: BTreeMap<(String, String), BTreeSet<String>>,
}

/// One ebuild's [`Stats`], with where it is.
#[derive(Debug, Clone)]
pub struct EbuildStats {
    /// The repository's name.
    pub repo: String,
    /// `category/package-version`.
    pub cpv: String,
    /// Time, rows, coverage.
    pub stats: Stats,
}

impl Plan {
    /// The `n` ebuilds that took longest, slowest first.
    pub fn slowest(&self, n: usize) -> Vec<&EbuildStats> {
        let mut v: Vec<&EbuildStats> = self.stats.iter().collect();
        v.sort_by(|a, b| b.stats.elapsed.cmp(&a.stats.elapsed).then_with(|| a.cpv.cmp(&b.cpv)));
        v.truncate(n);
        v
    }
}

/// A job blocked on fetch: some distfile of it or its dependencies is missing from the
/// mirror or does not match its Manifest.
#[derive(Debug, Clone)]
pub struct Blocked {
    /// The job that would have been issued.
    pub job: Job,
    /// What is missing, sorted by (needing ebuild, file).
    pub missing: Vec<MissingFile>,
}

/// One line of the `blocked` listing (jsonl): the plan line plus the missing files.
#[derive(Debug, Serialize)]
pub struct BlockedLine<'a> {
    /// The job, as `plan` prints it.
    #[serde(flatten)]
    pub job: PlanLine<'a>,
    /// The distfiles it lacks.
    pub missing: &'a [MissingFile],
}

impl<'a> BlockedLine<'a> {
    /// The line for `b`.
    pub fn new(b: &'a Blocked) -> BlockedLine<'a> {
        BlockedLine { job: PlanLine::new(&b.job), missing: &b.missing }
    }
}

/// Reads every repository's md5-cache. Never fails: problems are diagnostics.
pub fn load_repos(paths: &[PathBuf]) -> (Vec<Repository>, Vec<Diagnostic>) {
    // Repositories are read side by side (as many at once as the machine has cores), their
    // order and diagnostics kept.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let read = map_parallel(paths, threads, |p| read_repository(p));
    let mut repos = Vec::new();
    let mut diags = Vec::new();
    for (r, d) in read {
        repos.push(r);
        diags.extend(d);
    }
    (repos, diags)
}

/// The jobs for `repos` under `config`: for every ebuild, its valid USE configurations
/// (never an invalid one) crossed with `config.compilers`.
pub fn plan(repos: &[Repository], config: &Config) -> Plan {
    plan_with(repos, config, None)
}

/// [`plan()`], and with a `mirror`, the hermetic check: a job whose distfiles (its own and
/// its dependencies', see [`crate::distfiles`]) are not all in the mirror with their
/// Manifest checksums goes to [`Plan::blocked`] instead of [`Plan::jobs`].
pub fn plan_with(repos: &[Repository], config: &Config, mirror: Option<&Mirror>) -> Plan {
    let mut out = Plan::default();
    let index = mirror.map(|_| Index::new(repos));
    for (ri, repo) in repos.iter().enumerate() {
        let per_ebuild = map_parallel(&repo.ebuilds, config.threads.max(1), |e| plan_one(e, config));
        for (ebuild, planned) in repo.ebuilds.iter().zip(per_ebuild) {
            out.ebuilds += 1;
            let path = repo.path.join("metadata/md5-cache").join(&ebuild.cpv);
            for (severity, message) in planned.notes {
                out.diagnostics.push(Diagnostic { severity, path: path.clone(), line: None, message });
            }
            out.stats.push(EbuildStats { repo: repo.name.clone(), cpv: ebuild.cpv.clone(), stats: planned.stats });
            let uses = planned.configs;
            if uses.is_empty() {
                continue;
            }
            out.ebuilds_planned += 1;
            out.ebuild_md5.insert((repo.name.clone(), ebuild.cpv.clone()), ebuild.md5.clone());
            for u in uses {
                // The compiler does not change what is fetched: one check per configuration.
                let needs = match (mirror, &index) {
                    (Some(m), Some(ix)) => ix.needs(m, &config.profile, ri, ebuild, &u),
                    _ => Vec::new(),
                };
                let files: Vec<String> = needs.iter().map(|n| n.file.clone()).collect();
                let missing: Vec<MissingFile> = needs
                    .into_iter()
                    .filter_map(|n| Some(MissingFile { problem: n.problem?, file: n.file, needed_by: n.needed_by }))
                    .collect();
                for &c in &config.compilers {
                    let job = Job::new(&repo.name, &ebuild.cpv, u.clone(), c, config.timeout_secs);
                    if missing.is_empty() {
                        if mirror.is_some() {
                            out.distfiles.entry((repo.name.clone(), ebuild.cpv.clone())).or_default().extend(files.iter().cloned());
                        }
                        out.jobs.push(job);
                    } else {
                        out.blocked.push(Blocked { job, missing: missing.clone() });
                    }
                }
            }
        }
    }
    out
}

/// One ebuild's [`plan_ebuild`]; a panic (a bug of ours) ends that ebuild with an error
/// naming it instead of the whole run.
fn plan_one(e: &gah_ebuild::Ebuild, config: &Config) -> Planned {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| plan_ebuild(e, &config.profile, config.strategy, &config.budget)))
        .unwrap_or_else(|panic| {
            let what = panic.downcast_ref::<String>().map(String::as_str).or_else(|| panic.downcast_ref::<&str>().copied()).unwrap_or("?");
            Planned {
                configs: Vec::new(),
                notes: vec![(Severity::Error, format!("internal error while planning (a bug of gah-workgen): {what}"))],
                stats: Stats::default(),
            }
        })
}

/// `f` over `items` on `threads` scoped threads, results in input order.
fn map_parallel<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if threads <= 1 || items.len() < 2 {
        return items.iter().map(f).collect();
    }
    // Interleaved chunks balance the few large ebuilds across threads.
    let f = &f;
    let mut slots: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|k| s.spawn(move || items.iter().enumerate().skip(k).step_by(threads).map(|(i, x)| (i, f(x))).collect::<Vec<_>>()))
            .collect();
        for h in handles {
            for (i, r) in h.join().expect("a planning thread panicked") {
                slots[i] = Some(r);
            }
        }
    });
    slots.into_iter().map(|r| r.expect("every slot filled")).collect()
}

/// One line of `gah-workgen plan --format jsonl` (issue 3, item 7): the job as people and
/// tools want it, enabled flags only.
#[derive(Debug, Serialize)]
pub struct PlanLine<'a> {
    /// The repository's name.
    pub repo: &'a str,
    /// `category/package-version`.
    pub cpv: &'a str,
    /// The enabled IUSE flags, sorted.
    #[serde(rename = "use")]
    pub use_flags: Vec<&'a str>,
    /// The compiler.
    pub compiler: Compiler,
}

impl<'a> PlanLine<'a> {
    /// The line for `job`.
    pub fn new(job: &'a Job) -> PlanLine<'a> {
        PlanLine { repo: &job.repo, cpv: &job.cpv, use_flags: job.use_flags.enabled().collect(), compiler: job.compiler }
    }
}
