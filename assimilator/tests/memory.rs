//! Issue 9, item 11: `gah-assimilator --batch` holds a bounded amount of memory whatever the
//! uploads. Each item here is one archive at the size an attacker can reach within the
//! format's caps (150 000 installed files, ~25 MB once parsed); a transaction of 500 of them
//! used to be held in memory at once. Alone in its test binary: peak memory is read from
//! `getrusage(RUSAGE_CHILDREN)`, which covers every child this process has waited for.

use std::path::Path;

use gah_core::job::{Compiler, Job, UseAssignment};
use gah_core::outcome::{InstalledFile, Outcome, Status};

const BIN: &str = env!("CARGO_BIN_EXE_gah-assimilator");

fn peak_child_rss_mib() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap().max_rss() / 1024
}

fn run_batch(db: &Path, list: &Path, mib: &str) {
    let out = gah_util::process::command(BIN)
        .args(["--db", db.to_str().unwrap(), "--batch", list.to_str().unwrap(), "--batch-mib", mib])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_batch_of_large_outcomes_stays_within_its_memory_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let job = Job::new("gah", "app-misc/huge-1", UseAssignment::default(), Compiler::Gcc, 60);
    let mut outcome = Outcome::for_job(&job, Status::Success);
    outcome.installed_files = (0..150_000u32)
        .map(|i| InstalledFile {
            path: format!("/usr/share/doc/huge-1/html/page{i}.html"),
            sha256: gah_core::archive::sha256_hex(&i.to_le_bytes()),
        })
        .collect();
    let file = tmp.path().join("huge.tar.gz");
    gah_core::archive::write(std::fs::File::create(&file).unwrap(), &job, &outcome, b"log\n", None).unwrap();
    drop(outcome);
    // The same delivery twelve times: each is read, checked and held like a distinct one.
    let list = tmp.path().join("list");
    std::fs::write(&list, format!("{} {}\n", job.job_id, file.display()).repeat(12)).unwrap();

    run_batch(&tmp.path().join("a/results.sqlite"), &list, "16");
    let bounded = peak_child_rss_mib();
    // The same list with the bound out of the way: every item held until the end.
    run_batch(&tmp.path().join("b/results.sqlite"), &list, "100000");
    let unbounded = peak_child_rss_mib();
    println!("peak RSS: {bounded} MiB with --batch-mib 16, {unbounded} MiB without a byte bound");
    assert!(unbounded > bounded + 150, "the bound saves nothing here: {bounded} vs {unbounded} MiB");
    assert!(bounded < 256, "{bounded} MiB");
}
