//! Issue 13 with real builds: `gah run` on the overlay's localiser fixtures
//! (`app-misc/fixture-*`, vm-images/overlay/README.md) builds their sweep on the sandbox
//! backend, localises every failure with real follow-up builds, and must name exactly each
//! fixture's known minimal failing set and mark the flaky one; the localisations are in the
//! results database and `gah results bug` puts the minimal set in the summary.
//!
//! Slow (about 45 real builds of a few seconds each): runs when RUN_SLOW_TESTS is set.

#![allow(clippy::print_stderr)] // The run's table and timing go to the CI log.

use std::path::Path;
use std::time::Instant;

use gah_core::db::{Database, Filter, LocalisationState, Page};
use gah_core::localisation::Conclusion;
use gah_tests::{artefacts, program, project_root, slow_tests_enabled};
use gah_util::process::command;

/// Each fixture's failing cells' expected conclusion, as `Conclusion`'s text.
const EXPECTED: &[(&str, &str)] = &[
    ("app-misc/fixture-compiler-1", r#"fails with USE="beta" (clang only)"#),
    ("app-misc/fixture-flag-off-1", r#"fails with USE="-alpha""#),
    ("app-misc/fixture-flag-on-1", r#"fails with USE="beta""#),
    ("app-misc/fixture-flag-pair-1", r#"fails with USE="alpha gamma""#),
    ("app-misc/fixture-flaky-1", "flaky: the failing configuration passed when run again"),
    ("app-misc/fixture-required-use-1", r#"fails with USE="alpha""#),
];

#[test]
fn gah_run_localises_each_fixture_failure_to_its_known_minimal_set() {
    if !slow_tests_enabled("gah_run_localises_each_fixture_failure_to_its_known_minimal_set") {
        return;
    }
    let a = artefacts();
    // A project root of its own: the checkout's overlay and artefacts, but a fresh
    // binary-package cache (the flaky fixture fails only while the cache lacks
    // fixture-flaky-later) and its own job folders.
    let dir = tempfile::Builder::new().prefix("gah-localise-").tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join(".cache")).unwrap();
    symlink(&project_root().join("vm-images"), &root.join("vm-images"));
    symlink(&a.distfiles, &root.join(".cache/distfiles"));
    symlink(a.image.parent().unwrap(), &root.join(".cache/images"));
    let db_path = root.join("results.sqlite");

    let started = Instant::now();
    let run = command(program("gah"))
        .args(["run", "--backend", "sandbox", "--replicas", "1", "--only", "app-misc/fixture-", "--db"])
        .arg(&db_path)
        .env("GAH_ROOT", root)
        .current_dir(root)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    let err = String::from_utf8_lossy(&run.stderr);
    eprintln!("localise: gah run took {:.0} s", started.elapsed().as_secs_f64());
    assert!(run.status.success(), "gah run failed:\n{out}\n{err}");
    let summary = out.split("minimal failing sets:").nth(1).unwrap_or_else(|| panic!("no minimal failing sets printed:\n{out}"));
    eprintln!("minimal failing sets:{summary}");

    let db = Database::open(&db_path).unwrap();
    let done = db.localisations(&Filter::default(), None, Page::ALL).unwrap();
    assert!(done.iter().all(|l| l.state == LocalisationState::Done), "a localisation did not finish:\n{out}");
    for (cpv, expected) in EXPECTED {
        let of_cpv: Vec<_> = done.iter().filter(|l| l.cell.cpv == *cpv).collect();
        assert!(!of_cpv.is_empty(), "{cpv}: no localisation stored:\n{out}");
        for l in &of_cpv {
            let c = l.conclusion.as_ref().unwrap();
            assert_eq!(&c.to_string(), expected, "{cpv} {} ({}):\n{c:#?}", l.cell.compiler, l.cell.use_flags.to_package_use());
            // Every follow-up's outcome is an ordinary row of the database.
            let rows = db.outcomes(&Filter { cpv: Some(cpv.to_string()), ..Filter::default() }, Page::ALL).unwrap();
            assert!(rows.len() > c.evidence().runs.len(), "{cpv}: follow-ups missing from the outcomes");
        }
        let printed = summary.lines().find(|line| line.contains(cpv)).unwrap_or_else(|| panic!("{cpv} not in the summary:{summary}"));
        assert!(printed.contains(expected.trim_start_matches("fails with ")), "{cpv}: printed `{printed}`");
    }
    assert!(
        done.iter().filter(|l| matches!(l.conclusion, Some(Conclusion::Flaky { .. }))).all(|l| l.cell.cpv == "app-misc/fixture-flaky-1"),
        "only the flaky fixture is flaky"
    );
    assert!(!summary.contains("fixture-flaky-later"), "fixture-flaky-later never fails");

    // The bug report's summary carries the minimal set in Gentoo's form.
    let bug =
        command(program("gah")).args(["results", "--db"]).arg(&db_path).args(["bug", "app-misc/fixture-compiler-1"]).output().unwrap();
    let text = String::from_utf8_lossy(&bug.stdout);
    assert!(bug.status.success(), "gah results bug failed:\n{text}\n{}", String::from_utf8_lossy(&bug.stderr));
    assert!(
        text.contains(r#"Summary: app-misc/fixture-compiler-1: fails to compile with USE="beta" (clang only)"#),
        "no minimal set in the bug summary:\n{text}"
    );
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap_or_else(|e| panic!("link {} -> {}: {e}", link.display(), target.display()));
}
