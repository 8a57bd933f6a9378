//! `gah-assimilator`: BOINC `script_assimilator`'s script.
//!
//! ```text
//! gah-assimilator [OPTIONS] WU_NAME FILE                           # one workunit's canonical result
//! gah-assimilator [OPTIONS] --error MASK WU_NAME WU_ID BATCH_ID    # a workunit that failed as a whole
//! gah-assimilator [OPTIONS] --batch LIST                           # many at once: lines `WU_NAME FILE` (`-`: stdin)
//!                 [--threads N] [--batch-size N] [--batch-mib MIB]  # a transaction: N outcomes or MIB of them at most
//! ```
//!
//! Options: `--db PATH` (else `results_db` in the project file, `--config FILE` or
//! `./gah.conf` or `../gah.conf`, else `$GAH_RESULTS_DB`, else `./results/results.sqlite`);
//! `--snapshot LABEL` (else the project file's `snapshot`, else `$GAH_SNAPSHOT`) or
//! `--snapshot-of REPO` names the tree snapshot the outcomes belong to. It writes only the
//! results database: the work generator's rotation reads from there.
//!
//! Exit 0 once the row is durable (or the upload is quarantined, see the library docs);
//! 1 on a transient failure or wrong arguments (with `--batch`: if any workunit had one; every
//! other workunit is stored, and running the same list again is harmless), 2 on a command line
//! that does not parse. Any nonzero exit stops BOINC's assimilator daemon, so that an
//! administrator looks.
//!
//! For humans and tools. BOINC's `script_assimilator` runs `gah-assimilate` (see
//! `gah_assimilator::boinc`): it passes only its keywords' values, never these options.

// A command-line program: it talks to its user on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use gah_assimilator::boinc::{self, Settings};
use gah_assimilator::Assimilated;
use gah_core::db::{Database, Recorded, SnapshotId, NO_SNAPSHOT};
use gah_core::project::Overrides;

/// Stores gentoo@home outcomes in the results database, for BOINC's script_assimilator.
#[derive(Parser)]
#[command(name = "gah-assimilator", version)]
struct Cli {
    /// The results database [default: results_db in the project file, else $GAH_RESULTS_DB,
    /// else results/results.sqlite].
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// The project file [default: ./gah.conf, else ../gah.conf].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The tree snapshot the outcomes belong to (e.g. git:COMMIT) [default: $GAH_SNAPSHOT;
    /// none: snapshot 0, `unrecorded`].
    #[arg(long, value_name = "LABEL", conflicts_with = "snapshot_of")]
    snapshot: Option<String>,
    /// Label the snapshot with the md5-cache hash of this repository (reads the whole
    /// cache: prefer setting GAH_SNAPSHOT once per sync on a large tree).
    #[arg(long, value_name = "REPO")]
    snapshot_of: Option<PathBuf>,
    /// The workunit failed as a whole, with this BOINC error mask: the arguments are then
    /// WU_NAME WU_ID BATCH_ID.
    #[arg(long, value_name = "MASK", allow_negative_numbers = true, conflicts_with = "batch")]
    error: Option<i64>,
    /// Assimilate every `WU_NAME FILE` line of this file (`-` for stdin) in batches: one
    /// transaction and two filesystem syncs per batch.
    #[arg(long, value_name = "LIST")]
    batch: Option<PathBuf>,
    /// Threads reading and checking archives in --batch mode (each holds one archive being
    /// read: up to ~150 MiB for one at the format's caps).
    #[arg(long, default_value_t = 2, requires = "batch")]
    threads: usize,
    /// Outcomes per transaction in --batch mode at most.
    #[arg(long, default_value_t = 500, requires = "batch")]
    batch_size: usize,
    /// Memory for checked outcomes (logs, emerge --info, parsed outcome.json) waiting for
    /// their transaction in --batch mode, in MiB: a transaction also ends once they reach
    /// this. Peak memory is about this plus --threads archives being read.
    #[arg(long, value_name = "MIB", default_value_t = 256, requires = "batch")]
    batch_mib: usize,
    /// WU_NAME FILE, or with --error: WU_NAME WU_ID BATCH_ID.
    #[arg(value_name = "ARGS", required_unless_present = "batch")]
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
    let over = Overrides { config: cli.config.clone(), results_db: cli.db.clone(), queue_dir: None, snapshot: cli.snapshot.clone() };
    let project = gah_core::project::resolve_here(&over)?;
    let db_path = project.results_db.clone().unwrap_or_else(gah_assimilator::default_db_path);
    let label = match (&cli.snapshot_of, &project.snapshot) {
        (Some(repo), _) => Some(gah_assimilator::md5_cache_snapshot(repo).with_context(|| format!("snapshot of {}", repo.display()))?),
        (None, label) => label.clone(),
    };
    let open = || -> anyhow::Result<(Database, SnapshotId)> {
        let mut db = Database::open(&db_path)?;
        let snapshot = match &label {
            Some(label) => db.snapshot(label)?,
            None => NO_SNAPSHOT,
        };
        Ok((db, snapshot))
    };
    let settings = Settings {
        db: db_path.clone(),
        snapshot: label.clone(),
        localise: boinc::localise_of(&project),
        binpkgs_dir: project.binpkgs_dir.clone(),
    };
    // Failure localisation (gah.conf's `localise_repo`) after whatever was stored.
    let then_localise = |line: String| -> anyhow::Result<String> {
        Ok(match boinc::localise(&settings)? {
            Some(said) => format!("{line}\n{said}"),
            None => line,
        })
    };
    if let Some(list) = &cli.batch {
        anyhow::ensure!(cli.args.is_empty(), "--batch takes no other arguments");
        let items = read_list(list)?;
        let (mut db, snapshot) = open()?;
        return then_localise(batch(&mut db, snapshot, &items, &cli)?);
    }
    then_localise(match (cli.error, cli.args.as_slice()) {
        (None, [wu_name, file]) => {
            let done = boinc::assimilate_result(&settings, wu_name, file.as_ref())?;
            format!("{wu_name}: {done}")
        }
        (Some(mask), [wu_name, wu_id, batch_id]) => {
            let wu_id: i64 = wu_id.parse().with_context(|| format!("WU_ID `{wu_id}` is not an integer"))?;
            let batch_id: i64 = batch_id.parse().with_context(|| format!("BATCH_ID `{batch_id}` is not an integer"))?;
            let (_, recorded) = boinc::record_failed(&settings, mask, Some(wu_name), wu_id, batch_id)?;
            let what = match recorded {
                Recorded::Inserted => "recorded",
                Recorded::AlreadyPresent => "already recorded",
            };
            format!("{wu_name}: infrastructure failure (error mask {mask:#x}) {what}")
        }
        (None, args) => bail!("expected WU_NAME FILE, got {} argument(s)", args.len()),
        (Some(_), args) => bail!("with --error, expected WU_NAME WU_ID BATCH_ID, got {} argument(s)", args.len()),
    })
}

/// `WU_NAME FILE` per line (whitespace between; the file is the rest of the line); blank
/// lines and `#` comments skipped.
fn read_list(list: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let reader: Box<dyn BufRead> = if list == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(list).with_context(|| format!("reading {}", list.display()))?))
    };
    let mut items = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", list.display()))?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((wu, file)) = line.split_once(char::is_whitespace) else {
            bail!("{} line {}: expected `WU_NAME FILE`", list.display(), i + 1);
        };
        items.push((wu.to_owned(), PathBuf::from(file.trim_start())));
    }
    Ok(items)
}

fn batch(db: &mut Database, snapshot: SnapshotId, items: &[(String, PathBuf)], cli: &Cli) -> anyhow::Result<String> {
    let started = std::time::Instant::now();
    let batching = gah_assimilator::Batching { threads: cli.threads, max_items: cli.batch_size, max_bytes: cli.batch_mib << 20 };
    let done = gah_assimilator::assimilate_batch(db, snapshot, items, batching);
    let (mut stored, mut already, mut quarantined, mut failed) = (0, 0, 0, 0);
    for item in &done {
        match &item.result {
            Ok(Assimilated::Stored(Recorded::Inserted)) => stored += 1,
            Ok(Assimilated::Stored(Recorded::AlreadyPresent)) => already += 1,
            Ok(q @ Assimilated::Quarantined { .. }) => {
                quarantined += 1;
                eprintln!("gah-assimilator: {}: {q}", item.wu_name);
            }
            Err(e) => {
                failed += 1;
                eprintln!("gah-assimilator: {}: error: {}", item.wu_name, gah_util::error_chain(&e));
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let summary = format!(
        "{} workunits in {secs:.2}s ({:.0}/s): {stored} stored, {already} already stored, {quarantined} quarantined, {failed} failed",
        done.len(),
        done.len() as f64 / secs.max(1e-9)
    );
    if failed > 0 {
        bail!("{summary}; run the same list again once the cause is fixed");
    }
    Ok(summary)
}
