//! `gah-app`: the BOINC application. See `gah_app::app`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The sandbox helper must stay single-threaded: dispatch before anything starts threads.
    let mut argv = std::env::args_os();
    if argv.nth(1).is_some_and(|a| a == "__sandbox-init") {
        let Some(spec_path) = argv.next() else {
            eprintln!("gah-app __sandbox-init: missing SPEC");
            return ExitCode::from(2);
        };
        let spec = match std::fs::read(&spec_path).map_err(anyhow::Error::from).and_then(|b| Ok(serde_json::from_slice(&b)?)) {
            Ok(spec) => spec,
            Err(e) => {
                eprintln!("gah sandbox: read spec {}: {e:#}", std::path::Path::new(&spec_path).display());
                return ExitCode::from(gah_app::backend::sandbox::SETUP_FAILED as u8);
            }
        };
        return match gah_app::backend::sandbox::enter(&spec) {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => {
                eprintln!("gah sandbox: {e}");
                ExitCode::from(gah_app::backend::sandbox::SETUP_FAILED as u8)
            }
        };
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("GAH_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    match gah_app::app::main(gah_app::app::Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gah-app: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
