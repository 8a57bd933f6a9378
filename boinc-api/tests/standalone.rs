//! Runs the `boinc-api-selftest` binary in standalone mode (a scratch
//! directory without `init_data.xml`, so no client shared memory).

use std::path::Path;
use std::process::Output;

const SELFTEST: &str = env!("CARGO_BIN_EXE_boinc-api-selftest");

fn run(dir: &Path, args: &[&str]) -> Output {
    gah_util::process::command(SELFTEST).args(args).current_dir(dir).output().expect("run boinc-api-selftest")
}

fn stdout_value<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

#[test]
fn finish_writes_finish_file_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["finish", "0"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout: {stdout}");
    assert_eq!(stdout_value(&stdout, "standalone"), Some("true"));
    assert_eq!(stdout_value(&stdout, "resolved"), Some("input.txt"));
    assert_eq!(stdout_value(&stdout, "fraction_done"), Some("0.5"));
    assert_eq!(stdout_value(&stdout, "status"), Some("no_heartbeat:false suspended:false quit:false abort:false"));
    assert_eq!(stdout_value(&stdout, "elapsed"), Some("true"));
    // BOINC 7.x writes the exit status into the finish file.
    let finish = std::fs::read_to_string(dir.path().join(boinc_api::FINISH_CALLED_FILE)).expect("boinc_finish_called written");
    assert_eq!(finish.trim(), "0");
    // The runtime released and deleted its lock file.
    assert!(!dir.path().join(boinc_api::LOCKFILE).exists());
    // BOINC's diagnostics redirect stderr to stderr.txt even standalone.
    let stderr = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap_or_default();
    assert!(stderr.contains("boinc_finish"), "stderr.txt: {stderr}");
}

#[test]
fn finish_with_error_status() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["finish", "3"]);
    assert_eq!(out.status.code(), Some(3));
    let finish = std::fs::read_to_string(dir.path().join(boinc_api::FINISH_CALLED_FILE)).unwrap();
    assert_eq!(finish.trim(), "3");
}

#[test]
fn temporary_exit_writes_file_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["temporary-exit", "600", "KVM busy"]);
    assert_eq!(out.status.code(), Some(0));
    let t = std::fs::read_to_string(dir.path().join(boinc_api::TEMPORARY_EXIT_FILE)).unwrap();
    assert_eq!(t, "600\nKVM busy\n");
    assert!(!dir.path().join(boinc_api::FINISH_CALLED_FILE).exists());
    assert!(!dir.path().join(boinc_api::LOCKFILE).exists());
}

#[test]
fn temporary_exit_as_notice() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["temporary-exit", "90000", "enable VT-x\nin the BIOS", "notice"]);
    assert_eq!(out.status.code(), Some(0));
    let t = std::fs::read_to_string(dir.path().join(boinc_api::TEMPORARY_EXIT_FILE)).unwrap();
    assert_eq!(t, "86400\nenable VT-x in the BIOS\nnotice\n");
}

#[test]
fn second_init_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["double-init"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout_value(&stdout, "second-init"), Some("rejected"));
}

#[test]
fn resolve_follows_soft_link_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("input.txt"), "<soft_link>../../projects/example.org/input_123</soft_link>\n").unwrap();
    let out = run(dir.path(), &["finish", "0"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout_value(&stdout, "resolved"), Some("../../projects/example.org/input_123"));
}
