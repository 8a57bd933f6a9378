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
//! Exit codes are [`Verdict::exit_code`]'s: 0 valid, 1 invalid, 3 (BOINC's
//! `VAL_RESULT_TRANSIENT_ERROR`) retry later; arguments that are not what BOINC passes are a
//! configuration error, so they exit 3 too, never invalidating a volunteer's result.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::hosts::{self, HostStats};
use crate::{Verdict, VerdictKind};

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

/// `gah-validate-init FILE [RESULT_ID]`: checks one result ([`crate::init`], without a job:
/// `script_validator` cannot pass the workunit's input). An invalid result counts against
/// RESULT_ID in the host statistics at `$GAH_HOST_STATS` when given.
pub fn init_main(args: &[OsString]) -> Run {
    const USAGE: &str = "FILE [RESULT_ID] (--init_script gah-validate-init)";
    let (file, id) = match args {
        [file] => (file, None),
        [file, id] => (file, Some(id.to_string_lossy().into_owned())),
        _ => return refused(USAGE, args),
    };
    let verdict = crate::init(Path::new(file), None);
    let warning = match (id, verdict.kind()) {
        (Some(id), VerdictKind::Invalid) => record(None, |stats| stats.record_invalid(&id)),
        _ => None,
    };
    Run { verdict, warning }
}

/// `gah-validate-compare FILE1 FILE2 [RESULT_ID1 RESULT_ID2]`: compares two replicas
/// ([`crate::compare`]); with the ids, the comparison is counted in the host statistics.
pub fn compare_main(args: &[OsString]) -> Run {
    const USAGE: &str = "FILE1 FILE2 [RESULT_ID1 RESULT_ID2] (--compare_script gah-validate-compare)";
    let (a, b, ids) = match args {
        [a, b] => (a, b, None),
        [a, b, x, y] => (a, b, Some((x.to_string_lossy().into_owned(), y.to_string_lossy().into_owned()))),
        _ => return refused(USAGE, args),
    };
    let verdict = crate::compare(Path::new(a), Path::new(b));
    let warning = match ids {
        Some((x, y)) if verdict.kind() != VerdictKind::RetryLater => {
            record(None, |stats| stats.record_comparison(&x, &y, verdict.is_valid()))
        }
        _ => None,
    };
    Run { verdict, warning }
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
