//! Issue 12, items 2, 3 and 6: inputs that once stopped, hung or silently thinned a run.
//! Each fixture is generated here (never committed as megabytes); each run must exit 0, name
//! the culprit file with its reason, and plan the rest.

use std::fmt::Write as _;
use std::path::Path;

use gah_util::process::command;

/// Writes `metadata/md5-cache/<cpv>` under `repo`.
fn entry(repo: &Path, cpv: &str, text: &str) {
    let p = repo.join("metadata/md5-cache").join(cpv);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn flags(prefix: &str, n: usize) -> String {
    (0..n).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>().join(" ")
}

/// Runs `gah-workgen plan` with `args`: (exit code, stdout, stderr).
fn plan(args: &[&str]) -> (Option<i32>, String, String) {
    let out = command(env!("CARGO_BIN_EXE_gah-workgen")).arg("plan").args(args).output().unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// The stderr line naming `cpv`'s cache file, which must say `reason`.
fn assert_named(stderr: &str, cpv: &str, reason: &str) {
    let line = stderr.lines().find(|l| l.contains(&format!("md5-cache/{cpv}"))).unwrap_or_else(|| panic!("{cpv} not named:\n{stderr}"));
    assert!(line.contains(reason), "{cpv}: expected `{reason}` in `{line}`");
}

#[test]
fn no_input_stops_the_run_and_each_culprit_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(repo.join("profiles")).unwrap();
    std::fs::write(repo.join("profiles/repo_name"), "bad\n").unwrap();
    let ok = |iuse: &str, ru: &str| format!("EAPI=8\nIUSE={iuse}\nREQUIRED_USE={ru}\nSLOT=0\n_md5_=1\n");
    entry(&repo, "cat/good-1", &ok("a b", "?? ( a b )"));
    // REQUIRED_USE nested 30,000 deep: once a stack overflow of the whole process.
    entry(&repo, "cat/deep-1", &ok("a", &format!("{}a{}", "|| ( ".repeat(30_000), " )".repeat(30_000))));
    // The other dependency-spec strings nested as deep: kept (Portage takes them), warned.
    entry(&repo, "cat/deepdep-1", &format!("EAPI=8\nRDEPEND={}a/b{}\nSLOT=0\n_md5_=1\n", "x? ( ".repeat(30_000), " )".repeat(30_000)));
    // `^^` over 10,000 flags: once a stack overflow; now refused by the per-ebuild budget.
    entry(&repo, "cat/wide-1", &ok(&flags("w", 10_000), &format!("^^ ( {} )", flags("w", 10_000))));
    // IUSE of 10,000 flags: once minutes and GBs; now planned (near-linear).
    entry(&repo, "cat/big-1", &ok(&flags("f", 10_000), "f0? ( f1 )"));
    // What Portage refuses.
    entry(&repo, "cat/outside-1", &ok("a", "|| ( a miniz )"));
    entry(&repo, "cat/eapi-1", "EAPI=999\nIUSE=a\nSLOT=0\n_md5_=1\n");
    // What used to be skipped without a word.
    std::fs::create_dir_all(repo.join("metadata/md5-cache/cat/dir-1")).unwrap();
    std::os::unix::fs::symlink("loop-1", repo.join("metadata/md5-cache/cat/loop-1")).unwrap();
    std::os::unix::fs::symlink(".", repo.join("metadata/md5-cache/cat/dot-1")).unwrap();
    std::os::unix::fs::symlink("nowhere", repo.join("metadata/md5-cache/cat/dangling-1")).unwrap();
    // A FIFO would block a reader forever: refused unread. (Unreadable files are "cannot
    // read: Permission denied", which root, as CI runs, cannot be shown.)
    let fifo = repo.join("metadata/md5-cache/cat/fifo-1");
    assert!(command("mkfifo").arg(&fifo).status().unwrap().success());

    let repo_arg = repo.to_str().unwrap();
    let (code, stdout, stderr) =
        plan(&["--repo", repo_arg, "--strategy", "pairwise", "--compiler", "gcc", "--threads", "2", "--stats", "--format", "text"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_named(&stderr, "cat/deepdep-1", "RDEPEND: groups nested 30000 deep; what lies deeper than 100 levels is ignored");
    assert_named(&stderr, "cat/deep-1", "groups nested deeper than 100 levels");
    assert_named(
        &stderr,
        "cat/wide-1",
        "10000 flags constrained by REQUIRED_USE, the profile or RESTRICT: more than the per-ebuild limit of 1024",
    );
    assert_named(&stderr, "cat/outside-1", "USE flag 'miniz' is not in IUSE: Portage refuses the ebuild (InvalidDependString)");
    assert_named(&stderr, "cat/eapi-1", "EAPI `999` is not supported (Portage masks the ebuild: EAPI unsupported)");
    assert_named(&stderr, "cat/dir-1", "a folder where an md5-cache entry file should be");
    assert_named(&stderr, "cat/dot-1", "a folder where an md5-cache entry file should be");
    assert_named(&stderr, "cat/loop-1", "cannot read: Too many levels of symbolic links");
    assert_named(&stderr, "cat/dangling-1", "cannot read: No such file or directory");
    assert_named(&stderr, "cat/fifo-1", "not a regular file (a special file): skipped");
    // The rest is planned: good-1 fully (3 valid configurations), big-1 with a few rows.
    let planned = |cpv: &str| stdout.lines().filter(|l| l.split_whitespace().nth(1) == Some(cpv)).count();
    assert_eq!(planned("cat/good-1"), 3, "{stdout}");
    let big = planned("cat/big-1");
    assert!((2..=40).contains(&big), "big-1: {big} rows");
    assert_eq!(planned("cat/deepdep-1"), 1, "{stdout}");
    assert_eq!(stdout.lines().count(), 3 + big + 1, "nothing else planned:\n{stderr}");
    // --stats: a table of the slowest ebuilds.
    assert!(stderr.contains("gah-workgen: stats: 5 ebuilds") && stderr.contains("cat/big-1::bad"), "{stderr}");
}

#[test]
fn the_time_budget_ends_an_ebuild_with_its_coverage_and_moves_on() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    // `^^` over 1,000 flags: far more than a second's search for this solver.
    let w = flags("w", 1000);
    entry(&repo, "cat/p-1", &format!("EAPI=8\nIUSE={w}\nREQUIRED_USE=^^ ( {w} )\nSLOT=0\n_md5_=1\n"));
    entry(&repo, "cat/q-1", "EAPI=8\nIUSE=a\nSLOT=0\n_md5_=1\n");
    let (code, stdout, stderr) = plan(&[
        "--repo",
        repo.to_str().unwrap(),
        "--strategy",
        "pairwise",
        "--compiler",
        "gcc",
        "--ebuild-time-budget",
        "1",
        "--threads",
        "1",
        "--format",
        "text",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    // Either what was found by then is planned with its coverage stated, or, with nothing
    // found, the ebuild is an error; either way it is named and q-1 is planned.
    assert_named(&stderr, "cat/p-1", "time budget of 1s per ebuild ran out");
    let line = stderr.lines().find(|l| l.contains("cat/p-1")).unwrap();
    let rows = stdout.lines().filter(|l| l.contains("cat/p-1")).count();
    if rows > 0 {
        assert!(
            line.contains(&format!("{rows} configurations")) && line.contains("% of the combinations not proven infeasible covered"),
            "{line}"
        );
    } else {
        assert!(line.starts_with("error") && line.contains("before a valid configuration was found"), "{line}");
    }
    assert_eq!(stdout.lines().filter(|l| l.contains("cat/q-1")).count(), 2, "{stdout}");
}

#[test]
fn an_overlay_profile_stacks_on_gentoo_through_repo_path_parents() {
    let tmp = tempfile::tempdir().unwrap();
    let gentoo = tmp.path().join("gentoo");
    let overlay = tmp.path().join("overlay");
    let write = |p: &Path, text: &str| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(&gentoo.join("profiles/repo_name"), "gentoo\n");
    std::fs::create_dir_all(gentoo.join("metadata/md5-cache")).unwrap();
    let mut defaults = String::new();
    writeln!(defaults, "ARCH=\"amd64\"\nUSE_EXPAND=\"KERNEL\"\nUSE_EXPAND_IMPLICIT=\"ARCH KERNEL\"\nUSE_EXPAND_UNPREFIXED=\"ARCH\"")
        .unwrap();
    writeln!(defaults, "USE_EXPAND_VALUES_ARCH=\"amd64 x86\"\nUSE_EXPAND_VALUES_KERNEL=\"linux Darwin\"\nKERNEL=\"linux\"").unwrap();
    write(&gentoo.join("profiles/default/linux/amd64/make.defaults"), &defaults);
    write(&gentoo.join("profiles/default/linux/amd64/eapi"), "5\n");
    write(&overlay.join("profiles/repo_name"), "ovl\n");
    write(&overlay.join("profiles/hardened/parent"), "gentoo:default/linux/amd64\n");
    entry(&overlay, "cat/k-1", "EAPI=8\nIUSE=a\nREQUIRED_USE=kernel_linux\nSLOT=0\n_md5_=1\n");
    let profile = overlay.join("profiles/hardened");
    let args = |repos: &[&Path]| {
        let mut v = Vec::new();
        for r in repos {
            v.push("--repo".to_owned());
            v.push(r.to_str().unwrap().to_owned());
        }
        v.extend(["--profile", profile.to_str().unwrap(), "--compiler", "gcc", "--format", "text"].map(str::to_owned));
        v
    };
    // With ::gentoo given, the stack has kernel_linux: k-1 gets both of its configurations.
    let a = args(&[&overlay, &gentoo]);
    let (code, stdout, stderr) = plan(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout.lines().filter(|l| l.contains("cat/k-1")).count(), 2, "{stdout}\n{stderr}");
    assert!(!stderr.contains("error:"), "{stderr}");
    // Without it: a clear error naming the parent line, and the run goes on.
    let a = args(&[&overlay]);
    let (code, _, stderr) = plan(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("hardened/parent:1: `gentoo:default/linux/amd64`: no repository named `gentoo` among those given (--repo: ovl)"),
        "{stderr}"
    );
}
