//! `gah-qa`: what Gentoo's QA teams read, over the results database.
//!
//! The results database is gah-core's (schema, writes and every query live there); this crate
//! turns its typed rows into what people and tools read:
//!
//! - [`wire`]: the JSON shapes, shared by `gah results --json` and the web page's API
//!   (documented in `docs/FORMATS.md`);
//! - [`bug`]: the bug-report bundle for one failure, in the form Gentoo's bugzilla asks for;
//! - [`text`]: untrusted text (package names, flags, summaries and logs all come from
//!   volunteers' uploads) made inert for a page or a feed;
//! - [`web`]: `gah serve`, the web page (it writes nothing), its JSON API and its Atom feeds.
//!
//! Nothing here writes to the database, and nothing here runs SQL.

pub mod bug;
pub mod text;
pub mod web;
pub mod wire;

/// Why a QA view could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum QaError {
    /// The results database failed.
    #[error(transparent)]
    Db(#[from] gah_core::db::DbError),
    /// Nothing matches what was asked for (the message says what).
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be answered as asked (the message says why and what to do).
    #[error("{0}")]
    Refused(String),
}
