//! `gah-validate-compare`: BOINC `script_validator`'s compare script, run as
//! `--compare_script gah-validate-compare` (→ `../bin/gah-validate-compare FILE1 FILE2`). See
//! `gah_validator::boinc` for the arguments and exit codes.

// A command-line program: it talks to its user on stderr.
#![allow(clippy::print_stderr)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let run = gah_validator::boinc::compare_main(&args);
    for line in run.lines("gah-validate-compare") {
        eprintln!("{line}");
    }
    ExitCode::from(run.verdict.exit_code())
}
