//! The small helpers every gentoo@home crate needs, each written once and tested once.
//!
//! - [`atomic`]: durable write-then-rename ([`atomic::write`], [`atomic::AtomicFile`]).
//! - [`untar`]: unpacking a tar under explicit [`untar::Rules`] (plain files only, or a
//!   whole root with links).
//! - [`process`]: the one place that spawns programs ([`process::command`]), with the tail of
//!   stderr in errors and [`process::KillOnDrop`].
//! - [`sqlite`]: opening a database with its named migrations ([`sqlite::open`]).
//! - [`shell`]: quoting for `sh`.
//!
//! This crate knows nothing of jobs, outcomes, BOINC or Portage: it is plumbing.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! gah_util::atomic::write(&dir.path().join("job.json"), b"{}").unwrap();
//! assert_eq!(std::fs::read(dir.path().join("job.json")).unwrap(), b"{}");
//! ```

pub mod atomic;
pub mod process;
pub mod shell;
pub mod sqlite;
pub mod untar;
