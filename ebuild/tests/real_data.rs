//! Real repository metadata (`/work/shared/data/md5-cache`: GURU and Funtoo core-kit):
//! every entry parsed or diagnosed, every emitted configuration valid, the solver complete
//! and the covering arrays complete, each checked by code independent of the solver.
//! Skips, saying why, when the data is absent.

#![allow(clippy::print_stdout, clippy::print_stderr)] // A test that cannot run, or measures, says so on its terminal.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use gah_core::job::UseAssignment;
use gah_ebuild::{configurations, read_repository, Ebuild, Profile, Severity, Strategy};

fn data_root() -> Option<PathBuf> {
    let root = std::env::var_os("GAH_MD5_CACHE_DATA").map_or_else(|| PathBuf::from("/work/shared/data/md5-cache"), PathBuf::from);
    if root.join("guru/metadata/md5-cache").is_dir() {
        Some(root)
    } else {
        eprintln!("skipping: no md5-cache data at {} (set GAH_MD5_CACHE_DATA)", root.display());
        None
    }
}

fn cache_files(repo: &Path) -> usize {
    let mut n = 0;
    for cat in std::fs::read_dir(repo.join("metadata/md5-cache")).unwrap() {
        let cat = cat.unwrap().path();
        if cat.is_dir() {
            n += std::fs::read_dir(&cat).unwrap().filter(|e| e.as_ref().unwrap().path().is_file()).count();
        }
    }
    n
}

/// The `test` value under FEATURES=test, computed here from RESTRICT without the solver.
fn test_value(e: &Ebuild, on: &dyn Fn(&str) -> bool) -> bool {
    !e.restricts("test", &|f| f == "test" || on(f))
}

/// REQUIRED_USE of `a`, evaluated directly from the assignment and the profile.
fn satisfies(e: &Ebuild, profile: &Profile, a: &UseAssignment) -> bool {
    let value = |f: &str| a.0.get(f).copied().unwrap_or_else(|| profile.implicit(f));
    e.required_use.eval(e.empty_groups_true(), &value)
}

/// Every valid assignment of a small ebuild by brute force over 2^n (no solver).
fn brute_force(e: &Ebuild, profile: &Profile) -> BTreeSet<UseAssignment> {
    let vars: Vec<&str> = e.iuse.iter().map(|f| f.name.as_str()).filter(|f| *f != "test").collect();
    let mut out = BTreeSet::new();
    for bits in 0u32..(1 << vars.len()) {
        let mut a = UseAssignment::default();
        for (i, v) in vars.iter().enumerate() {
            a.0.insert((*v).to_owned(), bits >> i & 1 == 1);
        }
        if e.has_iuse("test") {
            let t = test_value(e, &|f| a.0.get(f).copied().unwrap_or(false));
            a.0.insert("test".into(), t);
        }
        if satisfies(e, profile, &a) {
            out.insert(a);
        }
    }
    out
}

#[test]
fn every_entry_is_parsed_or_diagnosed() {
    let Some(root) = data_root() else { return };
    for name in ["guru", "funtoo-core-kit"] {
        let path = root.join(name);
        let (repo, diags) = read_repository(&path);
        let errors: BTreeSet<&Path> = diags.iter().filter(|d| d.severity == Severity::Error).map(|d| d.path.as_path()).collect();
        let files = cache_files(&path);
        assert_eq!(repo.ebuilds.len() + errors.len(), files, "{name}: every file is an ebuild or one error");
        for d in &diags {
            eprintln!("{d}");
        }
        assert!(errors.is_empty(), "{name}: the real data has no broken entry");
        assert_eq!(repo.name, if name == "guru" { "guru" } else { "core-kit" });
    }
}

#[test]
fn every_configuration_is_valid_and_small_spaces_are_complete() {
    let Some(root) = data_root() else { return };
    let profile = Profile::amd64_linux();
    let mut stats = BTreeMap::new();
    for name in ["guru", "funtoo-core-kit"] {
        let (repo, _) = read_repository(&root.join(name));
        let (mut configs, mut checked_complete, mut checked_pairs, mut empty) = (0, 0, 0, 0);
        for e in &repo.ebuilds {
            let (pairwise, _) = configurations(e, &profile, Strategy::Covering { t: 2, seed: 0 });
            let n = e.iuse.iter().filter(|f| f.name != "test").count();
            // Exhaustive only where brute force can check it (the rest is the pairwise path).
            let exhaustive = if n <= 8 { configurations(e, &profile, Strategy::Exhaustive { limit: 512 }).0 } else { Vec::new() };
            for a in pairwise.iter().chain(&exhaustive) {
                let names: BTreeSet<&str> = a.0.keys().map(String::as_str).collect();
                let iuse: BTreeSet<&str> = e.iuse.iter().map(|f| f.name.as_str()).collect();
                assert_eq!(names, iuse, "{}: the assignment names every IUSE flag", e.cpv);
                assert!(satisfies(e, &profile, a), "{}: invalid configuration {}", e.cpv, a.to_package_use());
                if e.has_iuse("test") {
                    let t = test_value(e, &|f| a.0.get(f).copied().unwrap_or(false));
                    assert_eq!(a.0["test"], t, "{}: test follows RESTRICT", e.cpv);
                }
            }
            configs += pairwise.len();
            if pairwise.is_empty() {
                empty += 1;
            }
            if n <= 8 {
                // The solver's exhaustive list is exactly the brute-force one.
                let truth = brute_force(e, &profile);
                let got: BTreeSet<UseAssignment> = exhaustive.iter().cloned().collect();
                let diff: Vec<String> = got.symmetric_difference(&truth).take(3).map(|a| a.to_package_use()).collect();
                assert!(diff.is_empty(), "{}: solver enumeration differs from brute force: {diff:?}", e.cpv);
                assert_eq!(pairwise.is_empty(), truth.is_empty(), "{}", e.cpv);
                checked_complete += 1;
                // Independent pair counter: every pair of values some valid configuration
                // shows appears in the pairwise rows.
                let vars: Vec<&String> = e.iuse.iter().map(|f| &f.name).filter(|f| *f != "test").collect();
                for valid in &truth {
                    for i in 0..vars.len() {
                        for j in i + 1..vars.len() {
                            let (a, b) = (valid.0[vars[i]], valid.0[vars[j]]);
                            assert!(
                                pairwise.iter().any(|r| r.0[vars[i]] == a && r.0[vars[j]] == b),
                                "{}: pair {}={a} {}={b} uncovered",
                                e.cpv,
                                vars[i],
                                vars[j]
                            );
                        }
                    }
                }
                checked_pairs += 1;
            }
        }
        stats.insert(name, (repo.ebuilds.len(), configs, empty, checked_complete, checked_pairs));
    }
    eprintln!("(ebuilds, pairwise configurations, empty spaces, brute-force checked, pair-checked): {stats:?}");
}
