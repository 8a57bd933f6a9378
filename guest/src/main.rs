//! `gah-agent`: the guest agent, the one program of ours that runs inside the guest (VM or
//! sandbox), where everything is untrusted: it builds and tests one job with Portage and
//! leaves the outcome in `/gah/out`. See [`agent`].
//!
//! It lives apart from `gah-app` (the host side) on purpose: the two share only the typed
//! formats of `gah_core` (job, outcome, progress) and the plumbing of `gah_util`.

// The agent's own failure goes to stderr (the guest's console, or the sandbox's stderr log).
#![allow(clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

mod agent;

/// Builds and tests one job with Portage inside the guest (VM or sandbox).
#[derive(Debug, Parser)]
#[command(name = "gah-agent", version)]
struct Args {
    /// The job file.
    #[arg(long, default_value = "/gah/in/job.json")]
    job: PathBuf,
    /// The writable output folder.
    #[arg(long, default_value = "/gah/out")]
    out: PathBuf,
    /// Where progress lines go: a path (the virtio-serial port) or `-` for stdout.
    #[arg(long, default_value = "-")]
    progress: String,
    /// Parallel make jobs (default: the CPUs the guest has).
    #[arg(long)]
    jobs: Option<u32>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Far fewer CPUs than u32::MAX.
    let cpus = std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
    let config = agent::AgentConfig {
        job: args.job,
        out: args.out,
        progress: args.progress,
        jobs: args.jobs.unwrap_or(cpus),
        config_root: "/".into(),
        vdb: "/var/db/pkg".into(),
    };
    match agent::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gah-agent: error: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}
