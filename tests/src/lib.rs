//! Shared helpers for the integration tests under `tests/tests/`: where the project and its
//! built programs are, whether slow tests run, and how to get a real job for the overlay.
//!
//! Slow tests (a VM boot, whole package builds) run only with `RUN_SLOW_TESTS=1`, which
//! `scripts/test.sh` (and so CI) sets; without it they print why they did nothing.

#![allow(clippy::print_stderr)] // A slow test that is off says so, and why.

use std::path::{Path, PathBuf};

use gah_core::job::{Compiler, Job};

/// The project checkout.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// A program of the workspace, from the same profile folder as the running test.
pub fn program(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let path = exe.parent().and_then(Path::parent).expect("target/<profile>").join(name);
    assert!(path.is_file(), "{} is missing: run `cargo build --workspace --bins` with the same profile first", path.display());
    path
}

/// True when slow tests should run; otherwise says so on stderr.
pub fn slow_tests_enabled(test: &str) -> bool {
    if std::env::var_os("RUN_SLOW_TESTS").is_some() {
        return true;
    }
    eprintln!("{test}: skipped, set RUN_SLOW_TESTS=1 to run it (scripts/test.sh does)");
    false
}

/// The cached artefacts `scripts/setup.sh` builds.
pub struct Artefacts {
    /// The test overlay.
    pub overlay: PathBuf,
    /// Repacked upstream sources.
    pub distfiles: PathBuf,
    /// The guest image folder.
    pub image: PathBuf,
}

/// The artefacts, panicking with the set-up command when one is missing.
pub fn artefacts() -> Artefacts {
    let root = project_root();
    let a = Artefacts {
        overlay: root.join("vm-images/overlay"),
        distfiles: root.join(".cache/distfiles"),
        image: root.join(".cache/images/test"),
    };
    for p in [&a.overlay, &a.distfiles, &a.image.join("rootfs"), &a.image.join("vmlinux")] {
        assert!(p.exists(), "{} is missing: run scripts/setup.sh", p.display());
    }
    a
}

/// The overlay's job for `cp` with its default-most valid configuration and `compiler`.
pub fn overlay_job(cp: &str, compiler: Compiler, timeout_secs: u64) -> Job {
    repo_job(&project_root().join("vm-images/overlay"), cp, compiler, timeout_secs)
}

/// The job for `cp` in the repository at `repo` (for example the hostile one,
/// `vm-images/overlay-hostile`) with its default-most valid configuration and `compiler`.
pub fn repo_job(repo: &Path, cp: &str, compiler: Compiler, timeout_secs: u64) -> Job {
    let config = gah_workgen::plan::Config {
        compilers: vec![compiler],
        strategy: gah_ebuild::Strategy::Exhaustive { limit: 64 },
        profile: gah_ebuild::Profile::amd64_linux(),
        timeout_secs,
        threads: 1,
        budget: gah_ebuild::Budget::default(),
    };
    let (repos, _) = gah_workgen::plan::load_repos(&[repo.to_path_buf()]);
    let plan = gah_workgen::plan::plan(&repos, &config);
    plan.jobs
        .into_iter()
        .filter(|j| j.cp() == cp)
        // Fewest flags changed from "all off" keeps the build small and avoids fixtures.
        .min_by_key(|j| {
            (
                j.use_flags.0.keys().filter(|f| f.starts_with("fixture")).count(),
                j.use_flags.enabled().filter(|f| f.starts_with("fixture")).count(),
                j.use_flags.enabled().count(),
            )
        })
        .unwrap_or_else(|| panic!("{} has no job for {cp}", repo.display()))
}

/// Runs `gah-app` for `job` with `backend` in a fresh folder; returns the archive's path and
/// the app's stderr (the BOINC runtime's `stderr.txt`).
pub fn run_app(job: &Job, backend: &str, dir: &Path) -> (PathBuf, String) {
    run_app_with(job, backend, dir, &[])
}

/// [`run_app`] with more of gah-app's arguments. Its binary packages are `dir/binpkgs`.
pub fn run_app_with(job: &Job, backend: &str, dir: &Path, more: &[&std::ffi::OsStr]) -> (PathBuf, String) {
    let a = artefacts();
    let job_file = dir.join("job.json");
    std::fs::write(&job_file, job.to_json()).unwrap();
    let archive = dir.join("outcome.tar.gz");
    let binpkgs = dir.join("binpkgs");
    let status = gah_util::process::command(program("gah-app"))
        .current_dir(dir)
        .arg("--job")
        .arg(&job_file)
        .arg("--output")
        .arg(&archive)
        .arg("--repo")
        .arg(&a.overlay)
        .arg("--distfiles")
        .arg(&a.distfiles)
        .arg("--binpkgs")
        .arg(&binpkgs)
        .arg("--image")
        .arg(&a.image)
        .arg("--backend")
        .arg(backend)
        .args(more)
        .status()
        .expect("start gah-app");
    let stderr = std::fs::read_to_string(dir.join("stderr.txt")).unwrap_or_default();
    assert!(status.success(), "gah-app failed ({status}):\n{stderr}");
    (archive, stderr)
}
