//! `gah-assimilator`: BOINC `script_assimilator`'s script.
//!
//! ```text
//! gah-assimilator [--db PATH] WU_NAME FILE                           # --script "gah-assimilator wu_name files"
//! gah-assimilator [--db PATH] --error MASK WU_NAME WU_ID BATCH_ID    # a workunit that failed as a whole
//! ```
//!
//! The database is `--db`, else `$GAH_RESULTS_DB`, else `./results/results.sqlite`.
//! Exit 0 once the row is durable (or the upload is quarantined, see the library docs);
//! 1 on a transient failure or wrong arguments, 2 on a command line that does not parse.
//! Any nonzero exit stops BOINC's assimilator daemon, so that an administrator looks.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use gah_core::db::{Database, Recorded};

/// Stores gentoo@home outcomes in the results database, for BOINC's script_assimilator.
#[derive(Parser)]
#[command(name = "gah-assimilator", version)]
struct Cli {
    /// The results database [default: $GAH_RESULTS_DB or results/results.sqlite].
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// The workunit failed as a whole, with this BOINC error mask: the arguments are then
    /// WU_NAME WU_ID BATCH_ID.
    #[arg(long, value_name = "MASK", allow_negative_numbers = true)]
    error: Option<i64>,
    /// WU_NAME FILE, or with --error: WU_NAME WU_ID BATCH_ID.
    #[arg(value_name = "ARGS", required = true)]
    args: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(line) => {
            eprintln!("gah-assimilator: {line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gah-assimilator: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<String> {
    let db_path = cli.db.unwrap_or_else(gah_assimilator::default_db_path);
    match (cli.error, cli.args.as_slice()) {
        (None, [wu_name, file]) => {
            let mut db = Database::open(&db_path)?;
            let done = gah_assimilator::assimilate(&mut db, wu_name, file.as_ref())?;
            Ok(format!("{wu_name}: {done}"))
        }
        (Some(mask), [wu_name, wu_id, batch_id]) => {
            let wu_id: i64 = wu_id.parse().with_context(|| format!("WU_ID `{wu_id}` is not an integer"))?;
            let batch_id: i64 = batch_id.parse().with_context(|| format!("BATCH_ID `{batch_id}` is not an integer"))?;
            let mut db = Database::open(&db_path)?;
            let recorded = gah_assimilator::record_error(&mut db, mask, wu_name, wu_id, batch_id)?;
            let what = match recorded {
                Recorded::Inserted => "recorded",
                Recorded::AlreadyPresent => "already recorded",
            };
            Ok(format!("{wu_name}: infrastructure failure (error mask {mask:#x}) {what}"))
        }
        (None, args) => bail!("expected WU_NAME FILE, got {} argument(s)", args.len()),
        (Some(_), args) => bail!("with --error, expected WU_NAME WU_ID BATCH_ID, got {} argument(s)", args.len()),
    }
}
