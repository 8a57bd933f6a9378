//! `gah-ebuild`: what gentoo@home knows about ebuilds, from their md5-cache metadata to the
//! USE configurations worth building.
//!
//! - [`md5cache`] and [`repo`]: the reader. [`read_repository`] gives a [`Repository`] of
//!   [`Ebuild`]s plus [`Diagnostic`]s; a broken entry is one diagnostic (file and line) and is
//!   skipped, never a failed run.
//! - [`required_use`]: the `REQUIRED_USE` parser for the whole PMS grammar and an evaluator
//!   that matches Portage's `check_required_use`, empty groups included.
//! - [`profile`]: what the target [`Profile`] decides: implicit ARCH/ELIBC/KERNEL and
//!   `IUSE_IMPLICIT` flags, masked and forced flags, the profile's USE and USE_EXPAND
//!   defaults; [`Profile::read`] reads a profile folder with its `parent` stack.
//! - [`atom`]: PMS versions, package atoms and `*DEPEND` strings reduced under a USE
//!   assignment (for `package.use.*` and the work generator's distfile closure).
//! - [`solve`]: an ebuild's configuration [`Space`] and a backtracking solver over the flags
//!   `REQUIRED_USE` names (never `2^|IUSE|`), with the `test` policy (derived from
//!   `RESTRICT`, never varied).
//! - [`cover`]: constrained t-wise covering arrays.
//! - [`configurations`]: the entry point, one ebuild and a [`Strategy`] to its valid USE
//!   assignments.
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
pub mod cover;
pub mod md5cache;
pub mod profile;
pub mod repo;
pub mod required_use;
pub mod solve;

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

/// The valid USE assignments of `ebuild` under `profile` and `strategy` (each names every
/// IUSE flag), and
/// notes for the operator: an empty valid space, an exhaustive run that fell back to a
/// covering array, a solver budget that ran out.
pub fn configurations(ebuild: &Ebuild, profile: &Profile, strategy: Strategy) -> (Vec<UseAssignment>, Vec<String>) {
    let space = Space::new(ebuild, profile);
    let mut notes = Vec::new();
    let rows = match strategy {
        Strategy::Exhaustive { limit } => match space.enumerate(limit) {
            Some(rows) => rows,
            None => {
                notes.push(format!("more than {limit} valid configurations: pairwise covering array instead"));
                cover::covering_array(&space, 2, 0).rows
            }
        },
        Strategy::Covering { t, seed } => cover::covering_array(&space, t, seed).rows,
    };
    if rows.is_empty() {
        notes.push("no valid configuration (REQUIRED_USE cannot be satisfied)".into());
    }
    if space.budget_exhausted() {
        notes.push("solver node budget exhausted: some configurations may be missing".into());
    }
    // Belt and braces: the solver already checked each row.
    let out = rows.iter().filter(|r| space.is_valid(r)).map(|r| space.assignment(r)).collect();
    (out, notes)
}
