//! `gah-validate-init`: BOINC `script_validator`'s init script, run as
//! `--init_script gah-validate-init` (→ `../bin/gah-validate-init FILE`). See
//! `gah_validator::boinc` for the arguments and exit codes.

// A command-line program: it talks to its user on stderr.
#![allow(clippy::print_stderr)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let run = gah_validator::boinc::init_main(&args);
    for line in run.lines("gah-validate-init") {
        eprintln!("{line}");
    }
    ExitCode::from(run.verdict.exit_code())
}
