//! One configuration built and tested end to end through the real `gah-app`, in each
//! backend: real Portage in the real guest root, the outcome archive checked by the
//! validator's reader, the Portage log lines present.

#![allow(clippy::print_stderr)] // Measurements go to the CI log.

use gah_core::job::Compiler;
use gah_core::outcome::Status;
use gah_tests::{overlay_job, run_app, slow_tests_enabled};

fn check_one_configuration(backend: &str) {
    let job = overlay_job("app-arch/bzip2", Compiler::Gcc, 3600);
    let dir = tempfile::Builder::new().prefix(&format!("gah-{backend}-")).tempdir().unwrap();
    let (archive, stderr) = run_app(&job, backend, dir.path());
    let archive = gah_validator::load(&archive).unwrap_or_else(|e| panic!("archive refused: {}\n{stderr}", gah_util::error_chain(&e)));
    let outcome = &archive.outcome;
    let log = String::from_utf8_lossy(&archive.build_log);
    assert_eq!(outcome.status, Status::Success, "{}\n{log}", outcome.summary);
    assert!(outcome.test_ran, "the test phase did not run:\n{log}");
    assert_eq!(outcome.backend, backend);
    assert!(log.contains(">>> Compiling source") && log.contains(">>> Test phase"), "no Portage phase lines in the log:\n{log}");
    assert!(outcome.phases.iter().any(|p| p.phase == "test"), "{:?}", outcome.phases);
    assert!(!outcome.installed_files.is_empty());
    eprintln!("{backend}: accelerator {}, {:.0} s in the guest, phases {:?}", outcome.accelerator, outcome.duration_secs, outcome.phases);
}

#[test]
fn sandbox_builds_and_tests_one_configuration() {
    if slow_tests_enabled("sandbox_builds_and_tests_one_configuration") {
        check_one_configuration("sandbox");
    }
}

#[test]
fn vm_builds_and_tests_one_configuration() {
    if slow_tests_enabled("vm_builds_and_tests_one_configuration") {
        check_one_configuration("vm");
    }
}
