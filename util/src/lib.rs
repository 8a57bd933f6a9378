//! The small helpers every gentoo@home crate needs, each written once and tested once.
//!
//! - [`atomic`]: durable write-then-rename ([`atomic::write`], [`atomic::AtomicFile`]).
//! - [`untar`]: unpacking a tar under explicit [`untar::Rules`] (plain files only, or a
//!   whole root with links).
//! - [`process`]: the one place that spawns programs ([`process::command`]), with the tail of
//!   stderr in errors and [`process::KillOnDrop`].
//! - [`untrusted`]: reading what the guest left: regular files only, beneath a folder, no
//!   link followed, never blocking, capped; and removing it, whatever modes it left.
//! - [`pkgdir`]: merging binary package folders (Portage's PKGDIR), guest-made ones too.
//! - [`sqlite`]: opening a database with its named migrations ([`sqlite::open`]).
//! - [`shell`]: quoting for `sh`; [`error_chain`]: a typed error and its causes on one line.
//!
//! This crate knows nothing of jobs, outcomes, BOINC or Portage: it is plumbing.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! gah_util::atomic::write(&dir.path().join("job.json"), b"{}").unwrap();
//! assert_eq!(std::fs::read(dir.path().join("job.json")).unwrap(), b"{}");
//! ```

pub mod atomic;
pub mod pkgdir;
pub mod process;
pub mod rng;
pub mod shell;
pub mod sqlite;
pub mod untar;
pub mod untrusted;

/// An error and its causes on one line, `top: cause: root cause`, as anyhow's `{:#}` shows
/// them: for libraries, which return typed errors but sometimes log one.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_chain_shows_every_cause() {
        let e = crate::atomic::write(std::path::Path::new("/nonexistent-gah/x"), b"").unwrap_err();
        let line = super::error_chain(&e);
        assert!(line.starts_with("create /nonexistent-gah/.x.tmp-") && line.ends_with("No such file or directory (os error 2)"), "{line}");
    }
}
