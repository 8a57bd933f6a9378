//! `gah-assimilate`: BOINC `script_assimilator`'s script, run as `--script gah-assimilate`
//! (→ `../bin/gah-assimilate WU_ID FILE`, or `--error MASK ...` for a failed workunit). See
//! `gah_assimilator::boinc` for every form BOINC passes; the settings come from
//! `GAH_RESULTS_DB`, `GAH_SNAPSHOT` and `GAH_QUEUE_DIR`.
//!
//! Exit 0 once the outcome is durable (or quarantined, or the failure recorded); 1 on a
//! transient failure, 2 on arguments BOINC would not pass. Any nonzero exit stops BOINC's
//! assimilator daemon, so that an administrator looks.

// A command-line program: it talks to its user on stderr.
#![allow(clippy::print_stderr)]

use std::process::ExitCode;

use gah_assimilator::boinc::{self, Call, Settings};
use gah_core::db::Recorded;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let call = match boinc::parse_args(&args) {
        Ok(call) => call,
        Err(e) => {
            eprintln!("gah-assimilate: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = Settings::from_env();
    let done = match call {
        Call::Result { wu_name, file } => boinc::assimilate_result(&settings, &wu_name, &file)
            .map(|(done, rotation)| (format!("{wu_name}: {done}"), rotation))
            .map_err(|e| format!("{wu_name}: {}", gah_util::error_chain(&e))),
        Call::Failed { mask, wu_name, wu_id, batch_id } => boinc::record_failed(&settings, mask, wu_name.as_deref(), wu_id, batch_id)
            .map(|(name, recorded, rotation)| {
                let what = match recorded {
                    Recorded::Inserted => "recorded",
                    Recorded::AlreadyPresent => "already recorded",
                };
                (format!("{name}: infrastructure failure (error mask {mask:#x}) {what}"), rotation)
            })
            .map_err(|e| format!("workunit {wu_id}: {}", gah_util::error_chain(&e))),
    };
    match done {
        Ok((line, rotation)) => {
            if let Some(rotation) = rotation {
                eprintln!("gah-assimilate: {rotation}");
            }
            eprintln!("gah-assimilate: {line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gah-assimilate: error: {e} (database {})", settings.db.display());
            ExitCode::from(1)
        }
    }
}
