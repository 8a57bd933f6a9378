//! `gah-workgen`: turns ebuild repositories into jobs and keeps the queue of them.
//!
//! - [`plan`]: repositories in ([`load_repos`]), [`Plan`] out ([`plan()`]): for every
//!   ebuild, its valid USE configurations (from `gah-ebuild`) crossed with the compilers,
//!   as `gah-core` [`Job`](gah_core::job::Job)s. Pure: writes nothing.
//! - [`distfiles`]: the hermetic check: a job is issued only when every distfile of it and
//!   its dependencies is in the mirror with its Manifest's size, SHA512 and BLAKE2B
//!   ([`plan_with`]); otherwise it is listed as blocked on fetch, the files named.
//! - [`queue`]: the local queue folder (`pending/<job_id>.json`, written atomically, never
//!   duplicated) and the failcount rotation in `state.sqlite` ([`Queue`]), which folds in
//!   the results the assimilator stored in the results database past a watermark
//!   ([`Queue::fold_results`]); [`record_result`] records one by hand.
//! - [`boinc`]: the BOINC side: input/output templates and a `create_work.sh` that stages
//!   each job with `dir_hier_path` and submits it with every `rsc_*` value explicit, one
//!   `create_work` per job or `--stdin` batches.
//! - [`remote`]: remote submission, a `submit_batch` request POSTed to the project's
//!   `submit_rpc_handler.php` (reqwest, blocking, rustls).
//! - [`daemon`]: keeps N unsent results on the server like BOINC's sample work generator,
//!   with a pluggable unsent count ([`daemon::UnsentSource`]) and submitter.
//! - [`followup`]: failure localisation on the server: the pending follow-up of each running
//!   localisation (the assimilator starts and moves them on in the results database) is
//!   queued once, as an ordinary job ahead of the rotation. The work generator only reads
//!   the results database.
//!
//! **Invariants:** never emits a configuration that violates `REQUIRED_USE` (the solver and
//! a final exact check in `gah-ebuild` see to it); never defines its own job format (jobs are
//! `gah_core::job::Job`, made by `Job::new`); talks to a BOINC server only through its
//! documented interfaces (`bin/create_work`, `bin/dir_hier_path`, the `submit_batch` web
//! RPC), never its database; never issues a job whose distfiles are not verified when a
//! mirror is given.
//!
//! ```no_run
//! use gah_core::job::Compiler;
//! use gah_ebuild::{Budget, Profile, Strategy};
//! use gah_workgen::{load_repos, plan, Config};
//! let (repos, diags) = load_repos(&["vm-images/overlay".into()]);
//! let config = Config {
//!     compilers: Compiler::ALL.to_vec(),
//!     strategy: Strategy::Exhaustive { limit: 64 },
//!     profile: Profile::amd64_linux(),
//!     timeout_secs: 3600,
//!     threads: 2,
//!     budget: Budget::default(),
//! };
//! let plan = plan(&repos, &config);
//! println!("{} jobs, {} diagnostics", plan.jobs.len(), diags.len() + plan.diagnostics.len());
//! ```
#![deny(missing_docs)]

pub mod boinc;
pub mod daemon;
pub mod distfiles;
pub mod followup;
pub mod plan;
pub mod queue;
pub mod remote;

pub use plan::{load_repos, plan, plan_with, Blocked, BlockedLine, Config, EbuildStats, Plan, PlanLine};
pub use queue::{record_result, Folded, Queue, Recorded, Zap, MAX_FAILS};
