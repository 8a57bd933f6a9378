//! Test driver for the `boinc-api` integration tests; not for production.
//!
//! Usage (run in a scratch directory, standalone, i.e. without a client):
//! - `boinc-api-selftest finish [STATUS]`: init, resolve `input.txt`, report
//!   progress, print `key=value` lines, then `finish(STATUS)`.
//! - `boinc-api-selftest temporary-exit SECONDS REASON [notice]`
//! - `boinc-api-selftest double-init`: a second `init` must fail.

// A test driver: its output is its interface.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("finish");
    let before = proc_status();
    let rt = match boinc_api::init(&boinc_api::Options::wrapper()) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("init: {e}");
            std::process::exit(boinc_api::EXIT_INIT_FAILURE);
        }
    };
    match mode {
        "finish" => {
            let status: i32 = args.get(1).map_or(0, |s| s.parse().expect("status"));
            println!("standalone={}", rt.is_standalone());
            println!("before_init={before}");
            println!("after_init={}", proc_status());
            let p = rt.resolve_filename("input.txt").expect("resolve");
            println!("resolved={}", p.display());
            rt.fraction_done(0.5);
            println!("fraction_done={}", rt.fraction_done_reported());
            let st = rt.status();
            println!(
                "status=no_heartbeat:{} suspended:{} quit:{} abort:{}",
                st.no_heartbeat, st.suspended, st.quit_request, st.abort_request
            );
            // Sleep across several SIGALRM ticks (0.1 s) of the runtime.
            std::thread::sleep(Duration::from_millis(350));
            println!("time_to_checkpoint={}", rt.time_to_checkpoint());
            rt.checkpoint_completed();
            {
                let _cs = rt.critical_section();
            }
            println!("cpu={}", rt.worker_thread_cpu_time() >= 0.0);
            println!("wu_cpu={}", rt.wu_cpu_time() >= 0.0);
            println!("elapsed={}", rt.elapsed_time() >= 0.0);
            rt.finish(status)
        }
        "temporary-exit" => {
            let secs: u64 = args[1].parse().expect("seconds");
            let notice = args.get(3).is_some_and(|a| a == "notice");
            let err = rt.temporary_exit(Duration::from_secs(secs), &args[2], notice).unwrap_err();
            eprintln!("temporary_exit: {err}{}", std::error::Error::source(&err).map(|s| format!(": {s}")).unwrap_or_default());
            std::process::exit(1)
        }
        "double-init" => {
            match boinc_api::init(&boinc_api::Options::default()) {
                Err(boinc_api::Error::AlreadyInitialized) => println!("second-init=rejected"),
                other => println!("second-init=unexpected {other:?}"),
            }
            rt.finish(0)
        }
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2)
        }
    }
}

/// Thread count and caught-signal mask from /proc/self/status.
fn proc_status() -> String {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .filter(|l| l.starts_with("Threads:") || l.starts_with("SigCgt:"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(""))
        .collect::<Vec<_>>()
        .join(",")
}
