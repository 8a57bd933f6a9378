//! Issue 11's faults, through the `gah-app` binary run by hand (standalone): when the
//! project's repository cannot be read — the server gone with the file not in the host's
//! cache, or an object tampered with — the job ends as `infra_error` with the file named (an
//! outcome archive the validator takes), not as a client error that loses the result, and no
//! guest starts. Checked on a real BOINC server by hand before this existed: the task then
//! exited 1 ("client error"), the result lost.

use std::path::Path;

use gah_core::data_ref::{repo_path, DataRef, DEFAULT_NAME, DISTFILES_AT};
use gah_core::job::Compiler;
use gah_tests::{artefacts, overlay_job, program};

/// Publishes the overlay and the distfiles into `dir/published`; returns the data.json for
/// bzip2's job read from `url`, and the key.
fn published(dir: &Path, url: &str) -> (DataRef, std::path::PathBuf) {
    let a = artefacts();
    let at = repo_path("gah");
    let mounts = [gah_publish::Mount { at: &at, from: &a.overlay }, gah_publish::Mount { at: DISTFILES_AT, from: &a.distfiles }];
    let p = gah_publish::publish_mounts(&mounts, &dir.join("published"), DEFAULT_NAME, &dir.join("keys")).unwrap();
    let data = DataRef::new(DEFAULT_NAME, url, p.revision, &p.root_catalog_hash, "gah", ["bzip2-1.0.8.tar.gz".to_owned()], false).unwrap();
    (data, p.master_pub)
}

/// Runs gah-app on `data`; returns its exit status, the outcome archive's outcome (if any)
/// and its stderr.
fn run(dir: &Path, data: &DataRef, key: &Path) -> (bool, Option<gah_core::outcome::Outcome>, String) {
    let a = artefacts();
    let job = overlay_job("app-arch/bzip2", Compiler::Gcc, 600);
    std::fs::write(dir.join("job.json"), job.to_json()).unwrap();
    std::fs::write(dir.join("data.json"), data.to_json()).unwrap();
    let archive = dir.join("outcome.tar.gz");
    let status = gah_util::process::command(program("gah-app"))
        .current_dir(dir)
        .args(["--job", "job.json", "--data", "data.json", "--output", "outcome.tar.gz", "--backend", "sandbox"])
        .arg("--cvmfs-key")
        .arg(key)
        .arg("--cvmfs-cache")
        .arg(dir.join("cache"))
        .arg("--image")
        .arg(&a.image)
        .status()
        .unwrap();
    let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
    let outcome = archive.is_file().then(|| gah_validator::load(&archive).unwrap().outcome);
    (status.success(), outcome, stderr)
}

#[test]
fn an_unreachable_server_ends_the_job_as_infra_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: the server is gone, and nothing is cached.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (data, key) = published(dir.path(), &format!("http://127.0.0.1:{port}/{DEFAULT_NAME}"));
    let (ok, outcome, stderr) = run(dir.path(), &data, &key);
    assert!(ok, "an infra_error outcome is a result, not a client error:\n{stderr}");
    let outcome = outcome.expect("an outcome archive");
    assert_eq!(outcome.status, gah_core::outcome::Status::InfraError, "{outcome:?}");
    assert!(outcome.summary.contains(&format!("127.0.0.1:{port}")) && outcome.summary.contains("could not be read"), "{}", outcome.summary);
    assert!(!stderr.contains(" on backend "), "no guest started:\n{stderr}");
}
