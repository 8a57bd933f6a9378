//! `gah`: gentoo@home on one machine: the local pipeline (`gah run`) and the results.

mod layout;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// gentoo@home: build and test Gentoo package configurations in isolated guests.
///
/// `gah run` runs the whole chain locally on the embedded default (the test overlay in
/// vm-images/overlay): the work generator plans every valid USE configuration × compiler,
/// each job runs as two replicas through gah-app, the validator checks and compares them,
/// the assimilator stores the canonical outcome in the results database.
///
/// Examples:
///   gah run                          # everything, backend chosen automatically
///   gah run --only bzip2 --limit 2   # a quick look
///   gah results                      # what the database says
#[derive(Debug, Parser)]
#[command(name = "gah", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Run the whole pipeline on the embedded overlay and print a table of outcomes.
    Run {
        /// auto (KVM if it works, else the sandbox), vm, or sandbox.
        #[arg(long, default_value = "auto")]
        backend: String,
        /// Replicas per configuration (2 lets the validator compare them).
        #[arg(long, default_value_t = 2)]
        replicas: u32,
        /// Only packages whose category/name contains this text.
        #[arg(long)]
        only: Option<String>,
        /// At most this many configurations.
        #[arg(long)]
        limit: Option<usize>,
        /// Wall-clock limit per configuration, in seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
        /// Covering strength: 1 builds every flag value at least once, 2 every pair of values.
        #[arg(long, default_value_t = 1)]
        t: usize,
    },
    /// List the stored outcomes.
    Results {
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(
        tracing_subscriber::EnvFilter::try_from_env("GAH_LOG").unwrap_or_else(|_| "warn".into()),
    ).init();
    let cli = Cli::parse();
    let result = layout::Layout::discover().and_then(|layout| match cli.mode {
        Mode::Run { backend, replicas, only, limit, timeout_secs, t } => {
            run::run(&layout, &run::RunConfig { backend, replicas: replicas.max(1), only, limit, timeout_secs, t: t.max(1) })
        }
        Mode::Results { json } => results(&layout, json),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gah: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn results(layout: &layout::Layout, json: bool) -> anyhow::Result<()> {
    let db = gah_core::db::Database::open(&layout.db)?;
    for r in db.outcomes()? {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "wu_name": r.wu_name, "cpv": r.cpv, "use": r.use_flags, "compiler": r.compiler,
                    "status": r.status, "failed_phase": r.failed_phase, "test_ran": r.test_ran,
                    "duration_secs": r.duration_secs, "phases": serde_json::from_str::<serde_json::Value>(&r.phases).unwrap_or_default(),
                    "log": r.log_path,
                })
            );
        } else {
            println!("{:<28} {:<40} {:<6} {:<13} {:<8} {:>6.0}s {}", r.cpv, r.use_flags, r.compiler, r.status, r.failed_phase.as_deref().unwrap_or("-"), r.duration_secs, r.log_path);
        }
    }
    Ok(())
}
