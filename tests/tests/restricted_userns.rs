//! Issue 15, item 7: hosts whose unprivileged user namespaces have no capabilities (Ubuntu
//! 24.04's default `kernel.apparmor_restrict_unprivileged_userns=1`). The refusal is
//! simulated by the test double `GAH_SIMULATE_USERNS_WITHOUT_CAPS`, which makes the
//! sandbox helper drop every capability right after creating its user namespace, as
//! AppArmor's `unprivileged_userns` profile does. `gah-app`, run as an unprivileged user,
//! must never build half a sandbox: asked for the sandbox it stops and says what to do;
//! left to choose, it takes the VM.

#![allow(clippy::print_stderr)] // What gah-app said goes to the test log.

use std::os::unix::fs::chown;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use gah_core::job::Compiler;
use gah_tests::{artefacts, overlay_job, program};

/// The unprivileged user (`nobody`), as BOINC's `boinc` user would be.
const NOBODY: u32 = 65534;

fn gah_app_as_nobody(dir: &Path, backend: &str) -> std::process::Command {
    let a = artefacts();
    let job = overlay_job("app-arch/bzip2", Compiler::Gcc, 600);
    std::fs::write(dir.join("job.json"), job.to_json()).unwrap();
    chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
    chown(dir.join("job.json"), Some(NOBODY), Some(NOBODY)).unwrap();
    let mut cmd = gah_util::process::command("setpriv");
    cmd.current_dir(dir)
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .args(["--clear-groups", "--"])
        .arg(program("gah-app"))
        .args(["--job", "job.json", "--output", "outcome.tar.gz", "--binpkgs", "binpkgs"])
        .arg("--repo")
        .arg(&a.overlay)
        .arg("--distfiles")
        .arg(&a.distfiles)
        .arg("--image")
        .arg(&a.image)
        .args(["--backend", backend])
        .env("GAH_SIMULATE_USERNS_WITHOUT_CAPS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("gah-userns-").tempdir().unwrap()
}

#[test]
fn asked_for_the_sandbox_it_stops_and_says_why() {
    let dir = tempdir();
    let status = gah_app_as_nobody(dir.path(), "sandbox").status().unwrap();
    let stderr = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap_or_default();
    eprintln!("{stderr}");
    assert!(!status.success(), "gah-app went on without a sandbox:\n{stderr}");
    assert!(stderr.contains("no capabilities") && stderr.contains("vm backend"), "no advice for the volunteer:\n{stderr}");
    // The simulated refusal itself, as the helper reported it: its step 2 refused.
    assert!(stderr.contains("helper said: gah sandbox: step 2"), "the refusal did not come from the helper's namespaces:\n{stderr}");
    assert!(!stderr.contains("sandbox started"), "a sandbox was started:\n{stderr}");
}

#[test]
fn left_to_choose_it_takes_the_vm() {
    let dir = tempdir();
    let mut app = gah_app_as_nobody(dir.path(), "auto").spawn().unwrap();
    let stderr_txt = dir.path().join("stderr.txt");
    let started = Instant::now();
    let chosen = loop {
        let stderr = std::fs::read_to_string(&stderr_txt).unwrap_or_default();
        if let Some(line) = stderr.lines().find(|l| l.contains("backend ") && l.contains("accelerator")) {
            break line.to_owned();
        }
        if let Some(status) = app.try_wait().unwrap() {
            panic!("gah-app ended ({status}) before choosing:\n{stderr}");
        }
        assert!(started.elapsed() < Duration::from_secs(300), "no backend chosen in 5 minutes:\n{stderr}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // The choice is what this test is about; the VM job itself is the pipeline test's.
    let _ = app.kill();
    let _ = app.wait();
    eprintln!("{chosen}");
    assert!(chosen.contains("backend vm"), "{chosen}");
    // Where KVM works, auto takes it before trying the sandbox: nothing to refuse then.
    if !chosen.contains("accelerator kvm") {
        assert!(chosen.contains("no capabilities"), "the reason is not given: {chosen}");
    }
}
