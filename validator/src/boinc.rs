//! The programs BOINC's `script_validator` runs: `gah-validate-init` and
//! `gah-validate-compare`, given nothing but what `script_validator` substitutes.
//!
//! `script_validator` runs `../bin/<first word of --init_script>` followed only by the
//! values of the keywords among the other words (`files`, `result_id`, `runtime`; for
//! `--compare_script` also `files2`, `result_id2`, `runtime2`); every other word is dropped.
//! A one-word script gets `files` (init) or `files files2` (compare). BOINC 8.2.5 and later
//! (server release 1.6, master) recognise no keyword written in the script line at all (their
//! `split()` keeps the blank on each word), but still append those defaults, so the one-word
//! form is the one that works on every BOINC server:
//!
//! ```text
//! --init_script gah-validate-init         →  ../bin/gah-validate-init FILE
//! --compare_script gah-validate-compare   →  ../bin/gah-validate-compare FILE1 FILE2
//! ```
//!
//! Up to 8.2.4, `gah-validate-init files result_id` and
//! `gah-validate-compare files files2 result_id result_id2` also pass the result ids, which
//! then key the host statistics ([`crate::hosts`]).
//!
//! `files` is every output file of the result template, in its order, uploaded or not
//! (`sched/validate_util.cpp`, `get_output_file_paths`, reads the result's `<file_ref>`s):
//! one (`outcome.tar.gz`) for workunits made with a one-file template, two (then
//! `binpkgs.tar`, optional) with `templates/gah_out` as it is now. So a result is one or two
//! paths, and a compare line holds two results of the same length:
//!
//! ```text
//! ../bin/gah-validate-init OUTCOME [BINPKGS] [RESULT_ID]
//! ../bin/gah-validate-compare OUTCOME1 [BINPKGS1] OUTCOME2 [BINPKGS2] [RESULT_ID1 RESULT_ID2]
//! ```
//!
//! When the pair agrees and the project has a `binpkgs_dir` (`gah_core::project`), the
//! packages both built alike are recorded for the assimilator ([`crate::agreed`]); a pair
//! whose agreement cannot be recorded is retried later (exit 3).
//!
//! The result ids are told from paths by being all digits (BOINC's upload paths never are:
//! `dir_hier_path` gives `<upload_dir>/<fanout>/<name>`).
//!
//! Exit codes are [`Verdict::exit_code`]'s: 0 valid, 1 invalid, 3 (BOINC's
//! `VAL_RESULT_TRANSIENT_ERROR`) retry later; arguments that are not what BOINC passes are a
//! configuration error, so they exit 3 too, never invalidating a volunteer's result.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::hosts::{self, HostStats};
use crate::{Uploads, Verdict, VerdictKind};

/// What an entry point decided, and a warning for the log if the advisory host statistics
/// could not be updated.
#[derive(Debug)]
pub struct Run {
    /// The verdict (its exit code is the program's).
    pub verdict: Verdict,
    /// Why the host statistics were not updated, if they were not.
    pub warning: Option<String>,
}

fn refused(usage: &str, args: &[OsString]) -> Run {
    let got: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    Run { verdict: Verdict::retry_later(&format!("bad command line `{}`: expected {usage}", got.join(" "))), warning: None }
}

/// Splits `script_validator`'s arguments into paths and the `ids` trailing result ids, when
/// there are that many and they are all digits.
fn split_ids(args: &[OsString], ids: usize) -> (Vec<PathBuf>, Vec<String>) {
    let is_id = |a: &OsString| a.to_str().is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    let at = args.len().saturating_sub(ids);
    if ids > 0 && args.len() > ids && args[at..].iter().all(is_id) {
        let ids = args[at..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
        (args[..at].iter().map(PathBuf::from).collect(), ids)
    } else {
        (args.iter().map(PathBuf::from).collect(), Vec::new())
    }
}

/// `gah-validate-init OUTCOME [BINPKGS] [RESULT_ID]`: checks one result's uploads
/// ([`crate::init_uploads`], without a job: `script_validator` cannot pass the workunit's
/// input). An invalid result counts against RESULT_ID in the host statistics at
/// `$GAH_HOST_STATS` when given.
pub fn init_main(args: &[OsString]) -> Run {
    const USAGE: &str = "OUTCOME [BINPKGS] [RESULT_ID] (--init_script gah-validate-init)";
    let (files, ids) = split_ids(args, 1);
    let Some(uploads) = Uploads::from_files(&files) else { return refused(USAGE, args) };
    let verdict = crate::init_uploads(&uploads, None);
    let warning = match (ids.first(), verdict.kind()) {
        (Some(id), VerdictKind::Invalid) => record(None, |stats| stats.record_invalid(id)),
        _ => None,
    };
    Run { verdict, warning }
}

/// `gah-validate-compare OUTCOME1 [BINPKGS1] OUTCOME2 [BINPKGS2] [RESULT_ID1 RESULT_ID2]`:
/// compares two replicas ([`crate::compare_uploads`]); with the ids, the comparison is
/// counted in the host statistics.
pub fn compare_main(args: &[OsString]) -> Run {
    const USAGE: &str = "OUTCOME1 [BINPKGS1] OUTCOME2 [BINPKGS2] [RESULT_ID1 RESULT_ID2] (--compare_script gah-validate-compare)";
    let (files, ids) = split_ids(args, 2);
    let (first, second) = files.split_at(files.len() / 2);
    let (Some(a), Some(b)) = (Uploads::from_files(first), Uploads::from_files(second)) else {
        return refused(USAGE, args);
    };
    if files.len() % 2 != 0 {
        return refused(USAGE, args);
    }
    let (verdict, agreed) = crate::compare_uploads_with(&a, &b);
    // What the pair agreed on goes to the assimilator; until it is recorded, the pair is
    // undecided (retried), so no agreement is ever lost to a busy or full disk.
    let verdict = match record_agreed(&a, &b, &agreed) {
        Err(why) if verdict.is_valid() => Verdict::retry_later(&why),
        _ => verdict,
    };
    let warning = match &ids[..] {
        [x, y] if verdict.kind() != VerdictKind::RetryLater => record(None, |stats| stats.record_comparison(x, y, verdict.is_valid())),
        _ => None,
    };
    Run { verdict, warning }
}

/// Records the packages both replicas built alike ([`crate::agreed`]) in the project's
/// `binpkgs_dir`, when it has one and there is something to record.
fn record_agreed(a: &Uploads, b: &Uploads, agreed: &[Vec<gah_core::binpkg::BuiltPackage>; 2]) -> Result<(), String> {
    let (Some(upload_a), Some(upload_b)) = (&a.binpkgs, &b.binpkgs) else { return Ok(()) };
    if agreed.iter().all(Vec::is_empty) {
        return Ok(());
    }
    let project = gah_core::project::resolve_here(&gah_core::project::Overrides::default()).map_err(|e| gah_util::error_chain(&e))?;
    let Some(dir) = project.binpkgs_dir else { return Ok(()) };
    let mut record = crate::agreed::Agreed::open(&dir).map_err(|e| gah_util::error_chain(&e))?;
    let at = record.path().display().to_string();
    let failed = |e: rusqlite::Error| format!("{at}: {}", gah_util::error_chain(&e));
    record.record(upload_a, &agreed[0]).map_err(failed)?;
    record.record(upload_b, &agreed[1]).map_err(failed)
}

/// Updates the host statistics at `path` (default [`hosts::default_path`]). They are
/// advisory: a failure is returned as a warning and never changes a verdict.
pub fn record(path: Option<PathBuf>, update: impl FnOnce(&mut HostStats) -> rusqlite::Result<()>) -> Option<String> {
    let path = path.unwrap_or_else(hosts::default_path);
    let updated = match HostStats::open(&path) {
        Ok(mut stats) => update(&mut stats).map_err(|e| gah_util::error_chain(&e)),
        Err(e) => Err(gah_util::error_chain(&e)),
    };
    updated.err().map(|e| format!("host statistics {} not updated: {e}", path.display()))
}

impl Run {
    /// The lines the program prints on stderr, each prefixed with `program: `: the warning,
    /// then the verdict's notes (valid) or the verdict (invalid, retry later).
    pub fn lines(&self, program: &str) -> Vec<String> {
        let mut lines: Vec<String> = self.warning.iter().map(|w| format!("{program}: warning: {w}")).collect();
        match self.verdict.kind() {
            VerdictKind::Valid => lines.extend(self.verdict.notes().iter().map(|n| format!("{program}: note: {n}"))),
            VerdictKind::Invalid | VerdictKind::RetryLater => lines.push(format!("{program}: {}", self.verdict)),
        }
        lines
    }
}
