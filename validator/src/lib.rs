//! `gah-validator`: decides whether an uploaded outcome archive can be trusted (`init`) and
//! whether two replicas of one workunit agree (`compare`), for BOINC's `script_validator`
//! and in-process for `gah run`.
//!
//! - [`init`] checks one result: [`load`] reads the file (size-capped) and hands the bytes to
//!   [`gah_core::archive::read`], which does every structural check (size and ratio caps,
//!   absolute paths, `..`, links, devices, duplicates, the sha256 manifest, the
//!   `outcome.json` schema and its consistency with the `job.json` inside). With the
//!   workunit's [`Job`], [`check_job`] also requires the archive to answer that job.
//! - [`compare`] checks two results, then [`compare::compare_outcomes`] applies the
//!   equivalence policy documented in [`compare`](mod@compare).
//! - [`agreed::Agreed`] hands the binary packages two replicas built alike to the
//!   assimilator (the project's `binpkgs_dir`), written by `gah-validate-compare`.
//! - [`hosts::HostStats`] keeps per-host agreement counts, so hosts that keep disagreeing can
//!   lose trust (BOINC's adaptive replication).
//! - Every check ends in a [`Verdict`], whose [`Verdict::exit_code`] is `script_validator`'s
//!   contract: 0 valid/match, 1 invalid/mismatch, 3 retry later.
//! - [`boinc`] is what the programs `script_validator` runs do (`gah-validate-init FILE`,
//!   `gah-validate-compare FILE1 FILE2`: only the arguments BOINC's keywords give).
//!
//! **Invariant:** the validator never writes outside its scratch folder. Archives are read
//! into memory and checked there; nothing from a member is ever written to disk, and no
//! member is trusted (parsed, compared, logged beyond its name) before
//! [`gah_core::archive::read`] has accepted the whole archive. The only files the validator
//! writes are the host statistics database, and only when asked to, and the record of agreed
//! binary packages ([`agreed`]) when the project has a `binpkgs_dir`.
//!
//! **Invariant:** a problem on the server's side (the upload unreadable right now, the job
//! file missing) is [`VerdictKind::RetryLater`], never `Invalid`: a volunteer's result is
//! rejected only for what is in it.
//!
//! ```no_run
//! use std::path::Path;
//! let verdict = gah_validator::init(Path::new("result_0.tar.gz"), None);
//! if !verdict.is_valid() {
//!     eprintln!("{}", verdict.reason());
//! }
//! std::process::exit(verdict.exit_code().into());
//! ```
#![deny(missing_docs)]

pub mod agreed;
pub mod boinc;
pub mod compare;
pub mod hosts;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use gah_core::archive::{self, ArchiveError, Limits, OutcomeArchive};
use gah_core::binpkg::{self, BinpkgError, BuiltPackage};
use gah_core::job::Job;

/// The longest reason a verdict carries; longer ones are cut (hostile archives can make
/// reasons long, and BOINC's logs are line-oriented).
pub const MAX_REASON: usize = 1000;

/// What a check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictKind {
    /// `init`: the result is valid; `compare`: the replicas agree. Exit 0.
    Valid,
    /// `init`: the result is invalid; `compare`: the replicas disagree. Exit 1.
    Invalid,
    /// The question cannot be answered now (IO error on the server's side). Exit 3.
    RetryLater,
}

/// The decision of [`init`] or [`compare`], with its reason on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    kind: VerdictKind,
    reason: String,
    notes: Vec<String>,
}

impl Verdict {
    /// A positive verdict with remarks that did not count against it (e.g. differing hashes
    /// of documentation files).
    pub fn valid(notes: Vec<String>) -> Verdict {
        Verdict { kind: VerdictKind::Valid, reason: String::new(), notes: notes.iter().map(|n| one_line(n)).collect() }
    }

    /// An invalid result or a mismatching pair. `reason` must name the file(s).
    pub fn invalid(reason: &str) -> Verdict {
        Verdict { kind: VerdictKind::Invalid, reason: one_line(reason), notes: Vec::new() }
    }

    /// Undecidable now. `reason` must name the file.
    pub fn retry_later(reason: &str) -> Verdict {
        Verdict { kind: VerdictKind::RetryLater, reason: one_line(reason), notes: Vec::new() }
    }

    /// What was decided.
    pub fn kind(&self) -> VerdictKind {
        self.kind
    }

    /// True for [`VerdictKind::Valid`].
    pub fn is_valid(&self) -> bool {
        self.kind == VerdictKind::Valid
    }

    /// Why the result was refused, on one line with no control characters (empty when valid).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Remarks that did not change the decision, one line each.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// BOINC `script_validator`'s exit code: 0 valid/match, 1 invalid/mismatch, 3 retry later.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            VerdictKind::Valid => 0,
            VerdictKind::Invalid => 1,
            VerdictKind::RetryLater => 3,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            VerdictKind::Valid => f.write_str("valid"),
            VerdictKind::Invalid => write!(f, "invalid: {}", self.reason),
            VerdictKind::RetryLater => write!(f, "retry later: {}", self.reason),
        }
    }
}

/// Why [`load`] could not produce a checked archive.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read now (missing, permissions, EIO): a server-side problem.
    Io {
        /// The upload.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The path is a symbolic link (not followed), directory, FIFO, socket or device: a
    /// server-side problem, never read.
    NotRegular {
        /// The upload.
        path: PathBuf,
    },
    /// The archive itself is refused: the result is invalid.
    Rejected {
        /// The upload.
        path: PathBuf,
        /// Why.
        source: ArchiveError,
    },
    /// The binary packages upload is refused: the result is invalid.
    RejectedPackages {
        /// The upload.
        path: PathBuf,
        /// Why.
        source: BinpkgError,
    },
}

impl LoadError {
    /// True when the same file might be accepted later (the problem is not in its bytes).
    pub fn is_transient(&self) -> bool {
        !matches!(self, LoadError::Rejected { .. } | LoadError::RejectedPackages { .. })
    }

    /// The file concerned.
    pub fn path(&self) -> &Path {
        match self {
            LoadError::Io { path, .. }
            | LoadError::NotRegular { path }
            | LoadError::Rejected { path, .. }
            | LoadError::RejectedPackages { path, .. } => path,
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io { path, .. } => write!(f, "{}: cannot read", path.display()),
            LoadError::NotRegular { path } => write!(f, "{}: not a regular file", path.display()),
            LoadError::Rejected { path, .. } | LoadError::RejectedPackages { path, .. } => write!(f, "{}", path.display()),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Io { source, .. } => Some(source),
            LoadError::Rejected { source, .. } => Some(source),
            LoadError::RejectedPackages { source, .. } => Some(source),
            LoadError::NotRegular { .. } => None,
        }
    }
}

impl From<LoadError> for Verdict {
    fn from(e: LoadError) -> Verdict {
        if e.is_transient() {
            Verdict::retry_later(&gah_util::error_chain(&e))
        } else {
            Verdict::invalid(&gah_util::error_chain(&e))
        }
    }
}

/// Reads the upload at `path` (never more than the compressed-size cap) and checks it with
/// [`gah_core::archive::read`] under the default [`Limits`].
pub fn load(path: &Path) -> Result<OutcomeArchive, LoadError> {
    load_with(path, Limits::default())
}

/// [`load`] with explicit caps.
///
/// The upload is checked to be a regular file before it is opened, and opened so that
/// nothing else can be: `lstat` first (a symbolic link, FIFO, socket, device or folder is
/// [`LoadError::NotRegular`], never opened, so a link is not followed and a FIFO never blocks
/// the daemon), then `open` with `O_NOFOLLOW | O_NONBLOCK` (a link or FIFO put in its place in
/// between fails or does not block) and the opened file's own metadata checked again.
pub fn load_with(path: &Path, limits: Limits) -> Result<OutcomeArchive, LoadError> {
    let (file, size) = open_upload(path)?;
    if size > limits.max_compressed {
        let source = ArchiveError::TooLarge { size, max: limits.max_compressed };
        return Err(LoadError::Rejected { path: path.to_path_buf(), source });
    }
    // The file may grow between the stat and the read: read one byte past the cap at most,
    // and `archive::read` refuses anything over it.
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limits.max_compressed + 1).read_to_end(&mut bytes).map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
    archive::read(&bytes, limits).map_err(|source| LoadError::Rejected { path: path.to_path_buf(), source })
}

/// Opens an upload as [`load_with`] says, so that nothing but a regular file is read; with
/// its size.
pub fn open_upload(path: &Path) -> Result<(std::fs::File, u64), LoadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| LoadError::Io { path: path.to_path_buf(), source };
    let not_regular = || LoadError::NotRegular { path: path.to_path_buf() };
    if !std::fs::symlink_metadata(path).map_err(io)?.is_file() {
        return Err(not_regular());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
        .map_err(|e| if e.raw_os_error() == Some(nix::libc::ELOOP) { not_regular() } else { io(e) })?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    Ok((file, meta.len()))
}

/// Reads and checks a result's binary packages upload ([`binpkg::read_upload`], streamed:
/// packages are hashed as they are read, never held whole). The upload is optional in the
/// result template, so an absent file is a result that uploaded none: no packages.
pub fn load_binpkgs(path: &Path) -> Result<Vec<BuiltPackage>, LoadError> {
    let (file, size) = match open_upload(path) {
        Err(LoadError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other?,
    };
    let rejected = |source| LoadError::RejectedPackages { path: path.to_path_buf(), source };
    let limits = binpkg::Limits::default();
    if size > limits.max_upload {
        return Err(rejected(BinpkgError::TooLarge { size, max: limits.max_upload }));
    }
    binpkg::read_upload(std::io::BufReader::new(file), limits).map_err(rejected)
}

/// [`load`], then [`archive::check_workunit`]: the upload must answer workunit `wu_name`
/// (the assimilator's check; it knows the workunit's name, not its job file).
pub fn load_for_workunit(path: &Path, wu_name: &str) -> Result<OutcomeArchive, LoadError> {
    let archive = load(path)?;
    archive::check_workunit(&archive, wu_name).map_err(|source| LoadError::Rejected { path: path.to_path_buf(), source })?;
    Ok(archive)
}

/// Checks that a (structurally valid) archive answers the workunit's `job`: the same job,
/// package, USE assignment and compiler, and a `job.json` identical to the one issued.
pub fn check_job(archive: &OutcomeArchive, job: &Job) -> Result<(), String> {
    if let Some(why) = archive.outcome.mismatch_with(job) {
        return Err(why);
    }
    if archive.job != *job {
        return Err(format!("job.json differs from the workunit's job `{}`", job.job_id));
    }
    Ok(())
}

/// `init`: is the result at `path` valid (and, given the workunit's `job`, an answer to it)?
pub fn init(path: &Path, job: Option<&Job>) -> Verdict {
    let archive = match load(path) {
        Ok(archive) => archive,
        Err(e) => return e.into(),
    };
    if let Some(job) = job {
        if let Err(why) = check_job(&archive, job) {
            return Verdict::invalid(&format!("{}: {why}", path.display()));
        }
    }
    Verdict::valid(Vec::new())
}

/// Reads the workunit's job file, as the server wrote it. A failure is the server's
/// problem, so it is a [`VerdictKind::RetryLater`] verdict, never an invalid result.
pub fn read_job(path: &Path) -> Result<Job, Verdict> {
    Job::read(path).map_err(|e| Verdict::retry_later(&format!("job file: {}", gah_util::error_chain(&e))))
}

/// `compare`: do the results at `a` and `b` agree? Each is checked as [`init`] does first.
pub fn compare(a: &Path, b: &Path) -> Verdict {
    let (left, right) = match (load(a), load(b)) {
        (Ok(left), Ok(right)) => (left, right),
        // A transient error on either side wins: the pair may still be decidable later.
        (Err(e), _) | (_, Err(e)) if e.is_transient() => return e.into(),
        (Err(e), _) | (_, Err(e)) => return e.into(),
    };
    let result = compare::compare_outcomes(&left.outcome, &right.outcome);
    if result.mismatches.is_empty() {
        Verdict::valid(result.notes)
    } else {
        Verdict::invalid(&format!("{} and {} disagree: {}", a.display(), b.display(), result.mismatches.join("; ")))
    }
}

/// A result's uploads, in the result template's order (`templates/gah_out`): the outcome
/// archive, then, when the template names it, the binary packages the job built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploads {
    /// The outcome archive (`outcome.tar.gz`).
    pub outcome: PathBuf,
    /// The binary packages (`binpkgs.tar`), optional in the template: the path is given
    /// whether or not the volunteer uploaded one.
    pub binpkgs: Option<PathBuf>,
}

impl Uploads {
    /// The uploads of one result from the paths `script_validator` passes for it (`files`):
    /// one or two. `None` for any other count.
    pub fn from_files(files: &[PathBuf]) -> Option<Uploads> {
        match files {
            [outcome] => Some(Uploads { outcome: outcome.clone(), binpkgs: None }),
            [outcome, binpkgs] => Some(Uploads { outcome: outcome.clone(), binpkgs: Some(binpkgs.clone()) }),
            _ => None,
        }
    }

    fn packages(&self) -> Result<Vec<BuiltPackage>, LoadError> {
        self.binpkgs.as_deref().map_or(Ok(Vec::new()), load_binpkgs)
    }
}

/// [`init`] over all of a result's uploads: the outcome archive decides; the binary packages
/// are read as hostile and said in the notes (see `side_packages`).
pub fn init_uploads(uploads: &Uploads, job: Option<&Job>) -> Verdict {
    let verdict = init(&uploads.outcome, job);
    if !verdict.is_valid() {
        return verdict;
    }
    let mut notes = Vec::new();
    match side_packages(uploads, &mut notes) {
        Ok(packages) if packages.is_empty() && notes.is_empty() => verdict,
        Ok(packages) => {
            notes.insert(0, format!("{} binary packages", packages.len()));
            Verdict::valid(notes)
        }
        Err(retry) => retry,
    }
}

/// One result's packages for [`init_uploads`] and [`compare_uploads_with`]. The packages are
/// optional and not what the job is asked for: an upload refused for what is in it is said
/// in `notes` and taken as none (nothing of it can ever be agreed on), never held against
/// the result; one the server cannot read now makes the question wait (retry later).
fn side_packages(uploads: &Uploads, notes: &mut Vec<String>) -> Result<Vec<BuiltPackage>, Verdict> {
    match uploads.packages() {
        Ok(packages) => Ok(packages),
        Err(e) if e.is_transient() => Err(e.into()),
        Err(e) => {
            notes.push(format!("binary packages not taken: {}", gah_util::error_chain(&e)));
            Ok(Vec::new())
        }
    }
}

/// [`compare`] over all of two results' uploads. The replicas agree or disagree on their
/// outcomes alone; their binary packages are compared too ([`compare::compare_packages`]),
/// and what they agree on is said in the verdict's notes, never counted against them.
pub fn compare_uploads(a: &Uploads, b: &Uploads) -> Verdict {
    compare_uploads_with(a, b).0
}

/// [`compare_uploads`], with the packages both replicas built alike: `a`'s and `b`'s (each
/// as its own upload has them).
pub fn compare_uploads_with(a: &Uploads, b: &Uploads) -> (Verdict, [Vec<BuiltPackage>; 2]) {
    let verdict = compare(&a.outcome, &b.outcome);
    if !verdict.is_valid() {
        return (verdict, Default::default());
    }
    let mut notes = verdict.notes().to_vec();
    let left = match side_packages(a, &mut notes) {
        Ok(p) => p,
        Err(retry) => return (retry, Default::default()),
    };
    let right = match side_packages(b, &mut notes) {
        Ok(p) => p,
        Err(retry) => return (retry, Default::default()),
    };
    let packages = compare::compare_packages(&left, &right);
    notes.extend(packages.notes);
    (Verdict::valid(notes), [packages.agreed, packages.agreed_second])
}

/// Makes `text` one printable line: control characters escaped, cut at [`MAX_REASON`].
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_REASON));
    for c in text.chars() {
        if out.len() >= MAX_REASON {
            out.push_str(" [...]");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_one_line_and_capped() {
        let v = Verdict::invalid("a\nb\r\u{1b}[31m");
        assert_eq!(v.reason(), "a\\nb\\r\\u{1b}[31m");
        let long = "x".repeat(5000);
        assert!(Verdict::invalid(&long).reason().len() < MAX_REASON + 10);
    }

    #[test]
    fn exit_codes_follow_script_validator() {
        assert_eq!(Verdict::valid(Vec::new()).exit_code(), 0);
        assert_eq!(Verdict::invalid("x").exit_code(), 1);
        assert_eq!(Verdict::retry_later("x").exit_code(), 3);
    }

    #[test]
    fn a_symlink_or_fifo_upload_is_refused_unfollowed_and_unblocked() {
        let dir = tempfile::tempdir().unwrap();
        // A link to a readable regular file: following it would read the target.
        let target = dir.path().join("target");
        std::fs::write(&target, b"not an archive").unwrap();
        let link = dir.path().join("link_0_r1_0");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = load(&link).unwrap_err();
        assert!(matches!(e, LoadError::NotRegular { .. }), "{e:?}");
        // A link to a FIFO: neither followed nor opened.
        let fifo = dir.path().join("fifo_0_r1_0");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR).unwrap();
        let fifo_link = dir.path().join("fifo_link_0_r1_0");
        std::os::unix::fs::symlink(&fifo, &fifo_link).unwrap();
        // A FIFO with no writer: an open for reading without O_NONBLOCK would block forever.
        // Run in a thread, so a regression fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        let paths = [fifo.clone(), fifo_link.clone()];
        std::thread::spawn(move || {
            for p in paths {
                tx.send((p.clone(), load(&p).map(|_| ()))).unwrap();
            }
        });
        for _ in 0..2 {
            let (p, got) = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("load blocked on a FIFO");
            let e = got.unwrap_err();
            assert!(matches!(e, LoadError::NotRegular { .. }), "{}: {e:?}", p.display());
            assert!(e.is_transient());
        }
        // Through init, a not-regular upload is "retry later", as a missing one is.
        assert_eq!(init(&link, None).kind(), VerdictKind::RetryLater);
        // The regular file itself is read (and refused for its bytes: invalid).
        assert_eq!(init(&target, None).kind(), VerdictKind::Invalid);
    }
}
