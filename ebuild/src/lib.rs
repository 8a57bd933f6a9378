//! `gah-ebuild`: what gentoo@home knows about ebuilds, from their md5-cache metadata to the
//! USE configurations worth building.
//!
//! - [`md5cache`] and [`repo`]: the reader. [`read_repository`] gives a [`Repository`] of
//!   [`Ebuild`]s plus [`Diagnostic`]s; a broken entry is one diagnostic (file and line) and is
//!   skipped, never a failed run.
//! - [`depspec`]: the one depth-limited parser of the dependency-specification grammar
//!   (REQUIRED_USE, RESTRICT/SRC_URI, `*DEPEND`).
//! - [`required_use`]: the `REQUIRED_USE` parser for the whole PMS grammar and an evaluator
//!   that matches Portage's `check_required_use`, empty groups included.
//! - [`profile`]: what the target [`Profile`] decides: implicit ARCH/ELIBC/KERNEL and
//!   `IUSE_IMPLICIT` flags, masked and forced flags, the profile's USE and USE_EXPAND
//!   defaults; [`Profile::read`] reads a profile folder with its `parent` stack.
//! - [`atom`]: PMS versions, package atoms and `*DEPEND` strings reduced under a USE
//!   assignment (for `package.use.*` and the work generator's distfile closure).
//! - [`cnf`]: `REQUIRED_USE` compiled to CNF with Portage's semantics, and the incremental SAT
//!   solver (batsat) it is loaded into.
//! - [`solve`]: an ebuild's configuration [`Space`]: exact SAT queries over the flags
//!   `REQUIRED_USE` names (never `2^|IUSE|`), with the `test` policy (derived from
//!   `RESTRICT`, never varied).
//! - [`cover`]: constrained t-wise covering arrays.
//! - [`configurations`]: the entry point, one ebuild and a [`Strategy`] to its valid USE
//!   assignments; [`plan_ebuild`] the same within a per-ebuild [`Budget`], with refusals
//!   (what Portage refuses) and [`Stats`].
//!
//! **Invariants:** every configuration this crate returns satisfies `REQUIRED_USE` by the
//! exact evaluator. No IO outside `md5cache`/`repo` and [`Profile::read`]; nothing here knows about BOINC, queues
//! or job files (it uses `gah-core`'s `UseAssignment` for the result and nothing else).
//!
//! ```
//! use gah_ebuild::{configurations, md5cache::parse_entry, Profile, Strategy};
//! let text = "EAPI=8\nIUSE=+a b\nREQUIRED_USE=?? ( a b )\nSLOT=0\n_md5_=0\n";
//! let ebuild = parse_entry("cat/pkg-1", text, &mut Vec::new()).unwrap();
//! let (configs, notes) = configurations(&ebuild, &Profile::amd64_linux(), Strategy::Exhaustive { limit: 64 });
//! let shown: Vec<String> = configs.iter().map(|c| c.summary()).collect();
//! assert_eq!(shown, ["-", "b", "a"]);
//! assert!(notes.is_empty());
//! ```
#![deny(missing_docs)]

pub mod atom;
pub mod cnf;
pub mod cover;
pub mod depspec;
pub mod md5cache;
pub mod profile;
pub mod repo;
pub mod required_use;
pub mod solve;

use std::time::{Duration, Instant};

use gah_core::job::UseAssignment;

pub use md5cache::{Diagnostic, Ebuild, IuseFlag, Severity};
pub use profile::Profile;
pub use repo::{read_repository, Repository};
pub use required_use::RequiredUse;
pub use solve::Space;

/// How to pick an ebuild's configurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Every valid configuration, when there are at most `limit`; above that, a t = 2
    /// covering array (with a note saying so).
    Exhaustive {
        /// Most configurations per ebuild.
        limit: usize,
    },
    /// A t-wise covering array (t = 2: pairwise), deterministic for `seed`.
    Covering {
        /// Strength: every combination of `t` flag values is covered.
        t: usize,
        /// Seed of the greedy construction's variable order.
        seed: u64,
    },
}

/// Per-ebuild bounds. An ebuild past one of them ends with a diagnostic naming it, and the
/// run moves on: nothing in one ebuild's metadata can stop or exhaust the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Wall-clock time for one ebuild. When it runs out the configurations found so far are
    /// kept (each valid) and the note says what share of the combinations they cover.
    pub time: Duration,
    /// Most flags the solver searches (named by REQUIRED_USE, pinned by the profile or
    /// deciding RESTRICT=test): above it the ebuild is refused.
    pub max_constrained: usize,
    /// Most t-way combinations one covering array keeps track of (its memory): above it the
    /// ebuild is refused.
    pub max_combinations: u128,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget { time: Duration::from_secs(30), max_constrained: 1024, max_combinations: 4_000_000 }
    }
}

/// What one ebuild's planning cost and gave (for `gah-workgen --stats`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Wall-clock time spent on the ebuild.
    pub elapsed: Duration,
    /// Configurations returned.
    pub rows: usize,
    /// Flags varied (IUSE without `test`).
    pub flags: usize,
    /// For a covering array: every t-way combination asked for, the infeasible ones, and those
    /// left uncovered when the time budget ran out. All 0 for an exhaustive list.
    pub combinations: u128,
    /// Combinations proven infeasible.
    pub infeasible: usize,
    /// Feasible combinations not covered (time budget).
    pub uncovered: usize,
}

impl Stats {
    /// The covered share of the feasible combinations, in percent (100 for an exhaustive
    /// list or a complete array).
    pub fn coverage_percent(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let feasible = self.combinations.saturating_sub(self.infeasible as u128) as f64;
        if self.uncovered == 0 || feasible == 0.0 {
            return 100.0;
        }
        #[allow(clippy::cast_precision_loss)]
        let left = self.uncovered as f64;
        100.0 * (feasible - left) / feasible
    }
}

/// One ebuild planned: its configurations, what to tell the operator (an `Error` note
/// means the ebuild was refused and `configs` is empty), and what it cost.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The valid USE assignments (each names every IUSE flag).
    pub configs: Vec<UseAssignment>,
    /// Notes, each with its severity.
    pub notes: Vec<(Severity, String)>,
    /// Time, rows, coverage.
    pub stats: Stats,
}

/// The valid USE assignments of `ebuild` under `profile` and `strategy` (each names every
/// IUSE flag), and
/// notes for the operator: an empty valid space, an exhaustive run that fell back to a
/// covering array, a time budget that ran out, a refusal. [`plan_ebuild`] with the default
/// [`Budget`], notes as text.
pub fn configurations(ebuild: &Ebuild, profile: &Profile, strategy: Strategy) -> (Vec<UseAssignment>, Vec<String>) {
    let p = plan_ebuild(ebuild, profile, strategy, &Budget::default());
    (p.configs, p.notes.into_iter().map(|(_, m)| m).collect())
}

/// [`configurations`] within `budget`. Refused (an `Error` note, no configurations), as
/// Portage refuses them or as too large for the budget:
/// - a REQUIRED_USE naming a flag outside IUSE and the profile's implicit IUSE (Portage:
///   `InvalidDependString: USE flag 'x' is not in IUSE`);
/// - more constrained flags than [`Budget::max_constrained`], or a covering array that
///   would track more than [`Budget::max_combinations`] combinations.
///
/// Past [`Budget::time`] the configurations found so far are returned with a warning
/// stating their coverage.
pub fn plan_ebuild(ebuild: &Ebuild, profile: &Profile, strategy: Strategy, budget: &Budget) -> Planned {
    let t0 = Instant::now();
    let mut space = Space::new(ebuild, profile);
    if let Some(deadline) = t0.checked_add(budget.time) {
        space.set_deadline(deadline);
    }
    let n = space.vars().len();
    let mut stats = Stats { flags: n, ..Stats::default() };
    let refuse = |message: String, stats: Stats| Planned { configs: Vec::new(), notes: vec![(Severity::Error, message)], stats };

    let outside: Vec<&str> = ebuild
        .required_use
        .flags()
        .iter()
        .map(String::as_str)
        .filter(|f| !ebuild.has_iuse(f) && !profile.in_iuse_effective(f, &ebuild.eapi))
        .collect();
    if let Some(first) = outside.first() {
        let more = if outside.len() > 1 { format!(" (nor {})", outside[1..].join(", ")) } else { String::new() };
        stats.elapsed = t0.elapsed();
        return refuse(
            format!("REQUIRED_USE: USE flag '{first}' is not in IUSE{more}: Portage refuses the ebuild (InvalidDependString)"),
            stats,
        );
    }
    let constrained = (0..n).filter(|&v| space.is_constrained(v)).count();
    if constrained > budget.max_constrained {
        stats.elapsed = t0.elapsed();
        return refuse(
            format!(
                "{constrained} flags constrained by REQUIRED_USE, the profile or RESTRICT: more than the per-ebuild limit of {}",
                budget.max_constrained
            ),
            stats,
        );
    }
    let cover_t = match strategy {
        Strategy::Exhaustive { .. } => 2,
        Strategy::Covering { t, .. } => t,
    };
    let tracked = if cover_t == 2 && n > cover::SPLIT_N && constrained < n { constrained } else { n };
    let tracked_combinations = cover::combinations(tracked, cover_t);

    let mut notes = Vec::new();
    let cover_of = |notes: &mut Vec<(Severity, String)>, stats: &mut Stats, t: usize, seed: u64| -> Option<Vec<solve::Config>> {
        if tracked_combinations > budget.max_combinations {
            notes.push((
                Severity::Error,
                format!(
                    "a {t}-wise covering array over {tracked} flags tracks {tracked_combinations} combinations: more than the per-ebuild limit of {}",
                    budget.max_combinations
                ),
            ));
            return None;
        }
        let c = cover::covering_array(&space, t, seed);
        stats.combinations = c.combinations;
        stats.infeasible = c.infeasible;
        stats.uncovered = c.uncovered;
        Some(c.rows)
    };
    let rows = match strategy {
        Strategy::Exhaustive { limit } => match space.enumerate(limit) {
            Some(rows) => Some(rows),
            None if space.out_of_time() => Some(Vec::new()),
            None => {
                notes.push((Severity::Warning, format!("more than {limit} valid configurations: pairwise covering array instead")));
                cover_of(&mut notes, &mut stats, 2, 0)
            }
        },
        Strategy::Covering { t, seed } => cover_of(&mut notes, &mut stats, t, seed),
    };
    let Some(rows) = rows else {
        stats.elapsed = t0.elapsed();
        return Planned { configs: Vec::new(), notes, stats };
    };
    if space.out_of_time() {
        let secs = budget.time.as_secs_f64();
        if rows.is_empty() {
            notes.push((Severity::Error, format!("time budget of {secs}s per ebuild ran out before a valid configuration was found")));
        } else {
            notes.push((
                Severity::Warning,
                format!(
                    "time budget of {secs}s per ebuild ran out: {} configurations, {:.1}% of the combinations not proven infeasible covered ({} left)",
                    rows.len(),
                    stats.coverage_percent(),
                    stats.uncovered
                ),
            ));
        }
    } else {
        if rows.is_empty() {
            notes.push((Severity::Warning, "no valid configuration (REQUIRED_USE cannot be satisfied)".into()));
        }
    }
    // Belt and braces: the solver already checked each row.
    let configs: Vec<UseAssignment> = rows.iter().filter(|r| space.is_valid(r)).map(|r| space.assignment(r)).collect();
    stats.rows = configs.len();
    stats.elapsed = t0.elapsed();
    Planned { configs, notes, stats }
}
