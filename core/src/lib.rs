//! `gah-core`: the formats every gentoo@home program shares, each defined once.
//!
//! - [`job::Job`]: one configuration to build (`job.json`), issued by the work generator and
//!   run by the guest agent.
//! - [`outcome::Outcome`] and [`outcome::Status`]: what a job produced (`outcome.json`).
//! - [`archive`]: the outcome archive a volunteer uploads, written by the app and checked by
//!   the validator before anything in it is trusted.
//! - [`binpkg`]: the binary packages a job built, as a volunteer uploads them
//!   (`binpkgs.tar`), with the reader that checks an untrusted upload and digests each package.
//! - [`db::Database`]: the results database: its schema, migrations and writes, and every
//!   read of it ([`db::read`]: typed rows keyed by [`job::Cell`], latest state, history,
//!   matrix, changes between snapshots, failures by package and by dependency, counts).
//! - [`localisation`]: a failure's localisation as stored and shown (cause, evidence,
//!   conclusion); `gah-localise` finds it.
//! - [`buildlog`]: what a stored build log says (the dependency it blames, its excerpt).
//! - [`project`]: where the server programs find the results database and the queue
//!   (command line, the project's `gah.conf`, environment).
//!
//! **Invariant:** this crate knows nothing about qemu, namespaces or BOINC's API, and of
//! Portage only the text of its build logs ([`buildlog`]) and the GPKG binary package format
//! ([`binpkg`]); it does no process management and no network IO.
//!
//! ```
//! use gah_core::job::{Compiler, Job, UseAssignment};
//! let job = Job::new("gah", "app-arch/bzip2-1.0.8", UseAssignment::default(), Compiler::Gcc, 3600);
//! assert_eq!(Job::from_json(&job.to_json()).unwrap(), job);
//! ```
#![deny(missing_docs)]

pub mod archive;
pub mod binpkg;
pub mod buildlog;
pub mod data_ref;
pub mod db;
pub mod job;
pub mod localisation;
pub mod outcome;
pub mod progress;
pub mod project;

/// Errors from parsing the shared formats.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A JSON document did not parse or did not match its schema.
    #[error("{what}")]
    Json {
        /// Which document.
        what: &'static str,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// A file could not be read.
    #[error("read {}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file's document is not valid.
    #[error("{}", path.display())]
    InFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        source: Box<Error>,
    },
    /// A field of a document is over its cap (see [`outcome::Limits`]).
    #[error("{what}")]
    Limit {
        /// Which document.
        what: &'static str,
        /// The field and its cap.
        source: outcome::LimitError,
    },
    /// A document of another format version.
    #[error("{what}: format version {found}, this program reads version {expected}")]
    Format {
        /// Which document.
        what: &'static str,
        /// The version found.
        found: u32,
        /// The version understood.
        expected: u32,
    },
    /// A document that parsed but says something it may not.
    #[error("{what}: {why}")]
    Invalid {
        /// Which document.
        what: &'static str,
        /// What is wrong.
        why: String,
    },
}
