//! `gah-agent`: the guest agent. See `gah_app::agent`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

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
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1));
    let config = gah_app::agent::AgentConfig {
        job: args.job,
        out: args.out,
        progress: args.progress,
        jobs,
        config_root: "/".into(),
        vdb: "/var/db/pkg".into(),
    };
    match gah_app::agent::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gah-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
