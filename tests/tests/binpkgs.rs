//! Issue 11, item 4, with real Portage in the real guest: the packages two replicas of one
//! job built alike (their uploads compared as the validator compares them) go into a package
//! store as the assimilator puts them there, with no index; a later job given that store
//! installs the dependency as a binary package instead of compiling it (its Portage indexes
//! the store itself, `-pkgdir-index-trusted`, and takes the package because its USE is what
//! the dependency asks, `--binpkg-respect-use`).

#![allow(clippy::print_stderr)] // Measurements go to the CI log.

use std::ffi::OsStr;
use std::path::Path;

use gah_core::job::{Compiler, Job};
use gah_core::outcome::Status;
use gah_tests::{overlay_job, run_app_with, slow_tests_enabled};

fn with_jemalloc(cp: &str) -> Job {
    let base = overlay_job(cp, Compiler::Gcc, 3600);
    let mut flags = base.use_flags.clone();
    flags.0.insert("jemalloc".into(), true);
    Job::new(&base.repo, &base.cpv, flags, Compiler::Gcc, 3600)
}

/// Runs `job` in a fresh folder under `root`; its outcome and its packages upload.
fn replica(job: &Job, root: &Path, name: &str) -> (gah_core::outcome::Outcome, std::path::PathBuf) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let upload = dir.join(gah_core::binpkg::OPEN_NAME);
    let started = std::time::Instant::now();
    let (archive, stderr) = run_app_with(job, "sandbox", &dir, &[OsStr::new("--binpkgs-output"), upload.as_os_str()]);
    let archive =
        gah_validator::load(&archive).unwrap_or_else(|e| panic!("{name}: archive refused: {}\n{stderr}", gah_util::error_chain(&e)));
    let log = String::from_utf8_lossy(&archive.build_log).into_owned();
    assert_eq!(archive.outcome.status, Status::Success, "{name}: {}\n{log}", archive.outcome.summary);
    eprintln!("{name}: {} in {:.0} s, packages {:?}", job.cpv, started.elapsed().as_secs_f64(), archive.outcome.packages);
    (archive.outcome, upload)
}

#[test]
fn a_dependency_two_replicas_built_alike_is_installed_as_a_binary_package() {
    if !slow_tests_enabled("a_dependency_two_replicas_built_alike_is_installed_as_a_binary_package") {
        return;
    }
    let root = tempfile::Builder::new().prefix("gah-binpkgs-").tempdir().unwrap();
    let bzip2 = with_jemalloc("app-arch/bzip2");
    let (first, upload_1) = replica(&bzip2, root.path(), "replica-1");
    let (_, upload_2) = replica(&bzip2, root.path(), "replica-2");
    let jemalloc = |o: &gah_core::outcome::Outcome| o.packages.iter().find(|p| p.cpv.starts_with("dev-libs/jemalloc-")).cloned();
    assert!(jemalloc(&first).is_some_and(|p| !p.binary), "the first job builds jemalloc: {:?}", first.packages);

    // Two real builds of one configuration: their bytes differ, their digests must not.
    let (built_1, built_2) = (gah_validator::load_binpkgs(&upload_1).unwrap(), gah_validator::load_binpkgs(&upload_2).unwrap());
    assert_ne!(std::fs::read(&upload_1).unwrap(), std::fs::read(&upload_2).unwrap(), "two builds, two sets of bytes");
    let compared = gah_validator::compare::compare_packages(&built_1, &built_2);
    eprintln!("built {:?}; {:?}", built_1.iter().map(|p| &p.cpv).collect::<Vec<_>>(), compared.notes);
    assert!(compared.agreed.iter().any(|p| p.cpv.starts_with("dev-libs/jemalloc-")), "jemalloc not agreed: {:?}", compared.notes);

    let store = root.path().join("later/binpkgs");
    let agreed: Vec<_> =
        compared.agreed.into_iter().map(|p| gah_validator::agreed::AgreedPackage { path: p.path, digest: p.digest }).collect();
    let stored = gah_assimilator::binpkgs::store_agreed(&upload_1, &agreed, &store, &root.path().join("incoming")).unwrap();
    assert!(stored.added.iter().any(|p| p.starts_with("dev-libs/jemalloc/")), "{stored:?}");
    assert!(!store.join("Packages").exists(), "the store has no index");

    // A later job of another package that needs jemalloc, given the store as its packages
    // (`run_app_with` passes `<dir>/binpkgs`).
    let xz = with_jemalloc("app-arch/xz-utils");
    let dir = root.path().join("later");
    let started = std::time::Instant::now();
    let (archive, stderr) = run_app_with(&xz, "sandbox", &dir, &[]);
    let archive = gah_validator::load(&archive).unwrap_or_else(|e| panic!("archive refused: {}\n{stderr}", gah_util::error_chain(&e)));
    let log = String::from_utf8_lossy(&archive.build_log);
    assert_eq!(archive.outcome.status, Status::Success, "{}\n{log}", archive.outcome.summary);
    eprintln!("later: {} in {:.0} s, packages {:?}", xz.cpv, started.elapsed().as_secs_f64(), archive.outcome.packages);
    assert!(jemalloc(&archive.outcome).is_some_and(|p| p.binary), "jemalloc was compiled again:\n{log}");
}
