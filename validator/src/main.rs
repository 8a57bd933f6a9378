//! `gah-validator`: BOINC `script_validator`'s init and compare scripts.
//!
//! ```text
//! gah-validator init FILE [--binpkgs PATH] [--job JOBFILE] [--host ID] [--host-stats PATH]
//! gah-validator compare FILE1 FILE2 [--binpkgs PATH1 PATH2] [--hosts ID1 ID2] [--host-stats PATH]
//! ```
//!
//! For humans and tools. BOINC's `script_validator` passes only the values of its keywords,
//! never a subcommand: it runs `gah-validate-init` and `gah-validate-compare` (see
//! `gah_validator::boinc`).
//!
//! Exit codes (script_validator's): 0 valid/match, 1 invalid/mismatch, 3 retry later. A
//! refusal is one line on stderr naming the file. A command line that does not parse exits
//! 3, not 1: an administrator's typo must not invalidate volunteers' results.

// A command-line program: it talks to its user on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gah_validator::boinc::{record, Run};
use gah_validator::{Uploads, Verdict, VerdictKind};

/// Checks gentoo@home outcome archives for BOINC's script_validator.
#[derive(Parser)]
#[command(name = "gah-validator", version)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Checks one result (exit 0 valid, 1 invalid, 3 retry later).
    Init {
        /// The uploaded outcome archive.
        file: PathBuf,
        /// The result's binary packages upload (`binpkgs.tar`); absent means none.
        #[arg(long, value_name = "PATH")]
        binpkgs: Option<PathBuf>,
        /// The workunit's job.json: the result must answer exactly this job.
        #[arg(long, value_name = "JOBFILE")]
        job: Option<PathBuf>,
        /// Count an invalid result against this host (or result id) in the host statistics.
        #[arg(long, value_name = "ID")]
        host: Option<String>,
        /// Host statistics file [default: $GAH_HOST_STATS or results/host-stats.sqlite].
        #[arg(long, value_name = "PATH")]
        host_stats: Option<PathBuf>,
    },
    /// Compares two replicas (exit 0 match, 1 mismatch, 3 retry later).
    Compare {
        /// The first replica's archive.
        file1: PathBuf,
        /// The second replica's archive.
        file2: PathBuf,
        /// The two replicas' binary packages uploads (`binpkgs.tar`); what they agree on is
        /// said, never counted against them.
        #[arg(long, num_args = 2, value_names = ["PATH1", "PATH2"])]
        binpkgs: Option<Vec<PathBuf>>,
        /// Record the outcome of the comparison for these two hosts (or result ids).
        #[arg(long, num_args = 2, value_names = ["ID1", "ID2"])]
        hosts: Option<Vec<String>>,
        /// Host statistics file [default: $GAH_HOST_STATS or results/host-stats.sqlite].
        #[arg(long, value_name = "PATH")]
        host_stats: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let first = e.to_string();
            let first = first.lines().next().unwrap_or("bad command line");
            eprintln!("gah-validator: {first} (try --help)");
            return ExitCode::from(Verdict::retry_later("bad command line").exit_code());
        }
    };
    let run = run(cli.mode);
    for line in run.lines("gah-validator") {
        eprintln!("{line}");
    }
    ExitCode::from(run.verdict.exit_code())
}

fn run(mode: Mode) -> Run {
    match mode {
        Mode::Init { file, binpkgs, job, host, host_stats } => {
            let job = match job.as_deref().map(gah_validator::read_job).transpose() {
                Ok(job) => job,
                Err(verdict) => return Run { verdict, warning: None },
            };
            let verdict = gah_validator::init_uploads(&Uploads { outcome: file, binpkgs }, job.as_ref());
            let warning = match (host, verdict.kind()) {
                (Some(host), VerdictKind::Invalid) => record(host_stats, |stats| stats.record_invalid(&host)),
                _ => None,
            };
            Run { verdict, warning }
        }
        Mode::Compare { file1, file2, binpkgs, hosts, host_stats } => {
            let (b1, b2) = match binpkgs.as_deref() {
                Some([b1, b2]) => (Some(b1.clone()), Some(b2.clone())),
                _ => (None, None),
            };
            let verdict =
                gah_validator::compare_uploads(&Uploads { outcome: file1, binpkgs: b1 }, &Uploads { outcome: file2, binpkgs: b2 });
            let warning = match hosts.as_deref() {
                Some([a, b]) if verdict.kind() != VerdictKind::RetryLater => {
                    record(host_stats, |stats| stats.record_comparison(a, b, verdict.is_valid()))
                }
                _ => None,
            };
            Run { verdict, warning }
        }
    }
}
