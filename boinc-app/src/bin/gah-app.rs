//! `gah-app`: the BOINC application. See `gah_app::app`.

// A program's last word goes to stderr (the task's stderr.txt): tracing is not set up yet in
// the sandbox helper, and an error must show even when tracing is filtered.
#![allow(clippy::print_stderr)]

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use gah_app::backend::sandbox::{self, SandboxSpec};

fn main() -> ExitCode {
    // The sandbox helper must stay single-threaded: dispatch before anything starts threads.
    let mut argv = std::env::args_os();
    if argv.nth(1).is_some_and(|a| a == "__sandbox-init") {
        let Some(spec_path) = argv.next() else {
            eprintln!("gah-app __sandbox-init: missing SPEC");
            return ExitCode::from(2);
        };
        let spec = std::fs::read(&spec_path)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(serde_json::from_slice::<SandboxSpec>(&b)?))
            .with_context(|| format!("read spec {}", std::path::Path::new(&spec_path).display()));
        let code = spec.and_then(|spec| Ok(sandbox::enter(&spec)?)).unwrap_or_else(|e| {
            eprintln!("gah sandbox: {e:#}");
            sandbox::SETUP_FAILED
        });
        return exit_code(code);
    }
    init_tracing();
    match gah_app::app::main(gah_app::app::Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gah-app: error: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}

/// The agent's exit code passed on; codes outside 0..=255 cannot be exit statuses.
fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(u8::MAX))
}

/// Logs to stderr. What the app says to the volunteer (target [`gah_app::SAY`]) is printed as
/// plain `gah-app: …` lines, everything else with time and level.
fn init_tracing() {
    use tracing_subscriber::filter::{filter_fn, EnvFilter};
    use tracing_subscriber::prelude::*;

    let said = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_level(false)
        .with_filter(filter_fn(|m| m.target() == gah_app::SAY));
    let logged = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_filter(filter_fn(|m| m.target() != gah_app::SAY))
        // GAH_LOG filters the diagnostics only: what gah-app says to the volunteer (and what
        // `gah run` and the tests read) is never filtered away.
        .with_filter(EnvFilter::try_from_env("GAH_LOG").unwrap_or_else(|_| "info".into()));
    tracing_subscriber::registry().with(said).with(logged).init();
}
