//! `gah-assimilate`: BOINC `script_assimilator`'s script, run as `--script gah-assimilate`
//! (→ `../bin/gah-assimilate WU_ID FILE`, or `--error MASK ...` for a failed workunit). See
//! `gah_assimilator::boinc` for every form BOINC passes; the settings come from the
//! project's `gah.conf` (`../gah.conf` from the daemon's `tmp_<host>/`), else
//! `GAH_RESULTS_DB` and `GAH_SNAPSHOT`.
//!
//! Exit 0 once the outcome is durable, or the result's problem is recorded (quarantined,
//! missing upload, an upload naming no workunit, the failure recorded): one result never
//! stops the daemon. 1 on a transient failure (the database busy) or when no results
//! database is configured, 2 on arguments BOINC would not pass. Any nonzero exit stops
//! BOINC's assimilator daemon, so that an administrator looks.

// A command-line program: it talks to its user on stderr.
#![allow(clippy::print_stderr)]

use std::process::ExitCode;

use gah_assimilator::boinc::{self, Settings};
use gah_core::project::Overrides;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let call = match boinc::parse_args(&args) {
        Ok(call) => call,
        Err(e) => {
            eprintln!("gah-assimilate: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = match Settings::resolve(&Overrides::default()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("gah-assimilate: error: {}", gah_util::error_chain(&e));
            return ExitCode::from(1);
        }
    };
    match boinc::perform(&settings, &call) {
        Ok(boinc::Done(line)) => {
            eprintln!("gah-assimilate: {line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gah-assimilate: error: {} (database {})", gah_util::error_chain(&e), settings.db.display());
            ExitCode::from(1)
        }
    }
}
