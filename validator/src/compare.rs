//! The equivalence policy for two replicas of one workunit. Pure: no IO.
//!
//! **Must agree** (a difference is a mismatch):
//! - the job answered: `job_id`, repository, cpv, USE assignment, compiler;
//! - `status`, `failed_phase` and `test_ran`;
//! - the *set* of failing tests (order and repetitions ignored);
//! - when both replicas list installed files: the set of installed paths, exactly;
//! - the sha256 of every installed file both list whose content must be reproducible (see
//!   [`hash_must_match`]): executables and libraries (`bin`, `sbin`, `lib*`, `libexec`, under
//!   `/` or `/usr`) and headers (`include`). Two builds of one configuration in the same
//!   guest image give identical binaries (docs: field notes, "Portage from PyPI"), so a
//!   differing ELF means a different build, or a forged one.
//!
//! **Reported, never counted** (a note on a valid verdict):
//! - differing hashes of every other file (documentation, man pages, data, `/etc`, Python
//!   bytecode): these may embed dates, and the policy has no per-package allowlist to keep;
//! - one replica listing installed files while the other lists none (an older agent, or a
//!   failure before the install phase on both sides already caught by `status`).
//!
//! **Binary packages** (the results' `binpkgs.tar`) never make the replicas disagree: the
//! outcome is what they are asked for. A package both built with the same digest
//! ([`gah_core::binpkg`]: everything it installs and says of itself but when it was built) is
//! *agreed*, and only agreed packages may ever be offered to other jobs; one built by a single
//! replica, or built differently by the two, is said in a note and goes no further.
//!
//! **Ignored**: timings and durations, backend, accelerator, summary line, the package list's
//! binary/source flags, and the log text.

use std::collections::{BTreeMap, BTreeSet};

use gah_core::binpkg::BuiltPackage;
use gah_core::outcome::{InstalledFile, Outcome};

/// Names listed in one difference before `and N more`.
const SHOWN: usize = 5;

/// The differences between two replicas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Differences that make the pair disagree; empty when it agrees.
    pub mismatches: Vec<String>,
    /// Differences the policy tolerates, for the record.
    pub notes: Vec<String>,
}

impl Comparison {
    /// True when the replicas agree.
    pub fn agrees(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Compares two outcomes under the policy above.
pub fn compare_outcomes(a: &Outcome, b: &Outcome) -> Comparison {
    let mut c = Comparison::default();
    let mut differ = |what: &str, x: &dyn std::fmt::Display, y: &dyn std::fmt::Display| {
        c.mismatches.push(format!("{what} {x} vs {y}"));
    };
    if a.job_id != b.job_id {
        differ("job", &a.job_id, &b.job_id);
    }
    if a.repo != b.repo || a.cpv != b.cpv {
        differ("package", &format_args!("{}::{}", a.cpv, a.repo), &format_args!("{}::{}", b.cpv, b.repo));
    }
    if a.use_flags != b.use_flags {
        differ("USE", &format_args!("`{}`", a.use_flags.to_package_use()), &format_args!("`{}`", b.use_flags.to_package_use()));
    }
    if a.compiler != b.compiler {
        differ("compiler", &a.compiler, &b.compiler);
    }
    if a.status != b.status {
        differ("status", &a.status, &b.status);
    }
    if a.failed_phase != b.failed_phase {
        differ("failed phase", &a.failed_phase.as_deref().unwrap_or("none"), &b.failed_phase.as_deref().unwrap_or("none"));
    }
    if a.test_ran != b.test_ran {
        differ("test_ran", &a.test_ran, &b.test_ran);
    }

    let tests_a: BTreeSet<&str> = a.failing_tests.iter().map(String::as_str).collect();
    let tests_b: BTreeSet<&str> = b.failing_tests.iter().map(String::as_str).collect();
    if tests_a != tests_b {
        c.mismatches.push(format!(
            "failing tests differ (only in the first: {}; only in the second: {})",
            listing(tests_a.difference(&tests_b)),
            listing(tests_b.difference(&tests_a)),
        ));
    }

    match (a.installed_files.is_empty(), b.installed_files.is_empty()) {
        (true, true) => {}
        (false, true) | (true, false) => c.notes.push(format!(
            "only the {} replica lists installed files ({} files); not compared",
            if a.installed_files.is_empty() { "second" } else { "first" },
            a.installed_files.len().max(b.installed_files.len()),
        )),
        (false, false) => compare_files(&a.installed_files, &b.installed_files, &mut c),
    }
    c
}

fn compare_files(a: &[InstalledFile], b: &[InstalledFile], c: &mut Comparison) {
    let map = |files: &[InstalledFile]| -> BTreeMap<String, String> {
        files.iter().map(|f| (f.path.clone(), f.sha256.to_ascii_lowercase())).collect()
    };
    let (files_a, files_b) = (map(a), map(b));
    let only_a: Vec<&String> = files_a.keys().filter(|p| !files_b.contains_key(*p)).collect();
    let only_b: Vec<&String> = files_b.keys().filter(|p| !files_a.contains_key(*p)).collect();
    if !only_a.is_empty() || !only_b.is_empty() {
        c.mismatches.push(format!(
            "installed files differ (only in the first: {}; only in the second: {})",
            listing(only_a.iter()),
            listing(only_b.iter()),
        ));
    }
    let mut strict = Vec::new();
    let mut tolerated = Vec::new();
    for (path, hash_a) in &files_a {
        let Some(hash_b) = files_b.get(path) else { continue };
        if hash_a == hash_b {
            continue;
        }
        if hash_must_match(path) {
            strict.push(path);
        } else {
            tolerated.push(path);
        }
    }
    if !strict.is_empty() {
        c.mismatches.push(format!("{} binaries/headers differ in content: {}", strict.len(), listing(strict.iter())));
    }
    if !tolerated.is_empty() {
        c.notes.push(format!("{} other files differ in content (tolerated): {}", tolerated.len(), listing(tolerated.iter())));
    }
}

/// True for installed paths whose content two honest builds reproduce exactly: anything
/// under `bin`, `sbin`, `lib`, `lib32`, `lib64`, `libexec` or `include`, at the root or under
/// `/usr`, except Python bytecode (`.pyc`, `.pyo`, which embeds source mtimes).
pub fn hash_must_match(path: &str) -> bool {
    let rel = path.trim_start_matches('/');
    let rel = rel.strip_prefix("usr/").unwrap_or(rel);
    let top = rel.split('/').next().unwrap_or("");
    let code = matches!(top, "bin" | "sbin" | "lib" | "lib32" | "lib64" | "libexec" | "include");
    code && !(path.ends_with(".pyc") || path.ends_with(".pyo"))
}

/// What two replicas' binary packages have in common.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageComparison {
    /// The packages both built with the same digest (as the first replica has them).
    pub agreed: Vec<BuiltPackage>,
    /// The same packages as the second replica has them (their paths may differ).
    pub agreed_second: Vec<BuiltPackage>,
    /// What was not agreed, for the record.
    pub notes: Vec<String>,
}

/// Compares two replicas' binary packages by name and digest (the instance number in their
/// paths may differ).
pub fn compare_packages(a: &[BuiltPackage], b: &[BuiltPackage]) -> PackageComparison {
    let digests = |p: &[BuiltPackage]| -> BTreeMap<String, BTreeSet<String>> {
        let mut by_cpv: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for package in p {
            by_cpv.entry(package.cpv.clone()).or_default().insert(package.digest.clone());
        }
        by_cpv
    };
    let (of_a, of_b) = (digests(a), digests(b));
    let alike = |mine: &[BuiltPackage], theirs: &BTreeMap<String, BTreeSet<String>>| -> Vec<BuiltPackage> {
        mine.iter().filter(|p| theirs.get(&p.cpv).is_some_and(|d| d.contains(&p.digest))).cloned().collect()
    };
    let (agreed, agreed_second) = (alike(a, &of_b), alike(b, &of_a));
    let mut notes = Vec::new();
    let differing: Vec<&String> = of_a.keys().filter(|cpv| of_b.contains_key(*cpv) && !agreed.iter().any(|p| &p.cpv == *cpv)).collect();
    if !differing.is_empty() {
        notes.push(format!("binary packages built differently by the two replicas: {}", listing(differing.into_iter())));
    }
    for (which, mine, theirs) in [("first", &of_a, &of_b), ("second", &of_b, &of_a)] {
        let alone: Vec<&String> = mine.keys().filter(|cpv| !theirs.contains_key(*cpv)).collect();
        if !alone.is_empty() {
            notes.push(format!("binary packages only the {which} replica built: {}", listing(alone.into_iter())));
        }
    }
    if !agreed.is_empty() {
        notes.push(format!("{} binary packages agreed", agreed.len()));
    }
    PackageComparison { agreed, agreed_second, notes }
}

fn listing<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let items: Vec<String> = items.map(|i| i.to_string()).collect();
    if items.is_empty() {
        return "none".into();
    }
    let mut text = items.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > SHOWN {
        text.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use gah_core::job::{Compiler, Job, UseAssignment};
    use gah_core::outcome::Status;

    fn outcome() -> Outcome {
        let job = Job::new("gah", "app-arch/bzip2-1.0.8", UseAssignment::default(), Compiler::Gcc, 60);
        let mut o = Outcome::for_job(&job, Status::Success);
        o.test_ran = true;
        o.installed_files = vec![
            InstalledFile { path: "/usr/bin/bzip2".into(), sha256: "aa".into() },
            InstalledFile { path: "/usr/share/man/man1/bzip2.1.bz2".into(), sha256: "bb".into() },
            InstalledFile { path: "/usr/lib64/libbz2.so.1".into(), sha256: String::new() },
        ];
        o
    }

    #[test]
    fn timings_backend_and_summary_are_ignored() {
        let a = outcome();
        let mut b = outcome();
        b.duration_secs = 99.0;
        b.backend = "sandbox".into();
        b.accelerator = "none".into();
        b.summary = "whatever".into();
        b.phases.push(gah_core::outcome::PhaseTime { phase: "compile".into(), seconds: 3.0 });
        assert_eq!(compare_outcomes(&a, &b), Comparison::default());
    }

    #[test]
    fn failing_tests_compare_as_sets() {
        let mut a = outcome();
        let mut b = outcome();
        a.failing_tests = vec!["t1".into(), "t2".into()];
        b.failing_tests = vec!["t2".into(), "t1".into(), "t1".into()];
        assert!(compare_outcomes(&a, &b).agrees());
        b.failing_tests = vec!["t3".into()];
        let c = compare_outcomes(&a, &b);
        assert_eq!(c.mismatches, ["failing tests differ (only in the first: t1, t2; only in the second: t3)"]);
    }

    #[test]
    fn binary_hashes_count_doc_hashes_are_noted() {
        let a = outcome();
        let mut b = outcome();
        b.installed_files[1].sha256 = "cc".into();
        let c = compare_outcomes(&a, &b);
        assert!(c.agrees(), "{c:?}");
        assert_eq!(c.notes, ["1 other files differ in content (tolerated): /usr/share/man/man1/bzip2.1.bz2"]);
        b.installed_files[0].sha256 = "dd".into();
        let c = compare_outcomes(&a, &b);
        assert_eq!(c.mismatches, ["1 binaries/headers differ in content: /usr/bin/bzip2"]);
    }

    #[test]
    fn installed_path_sets_must_match_when_both_list_files() {
        let a = outcome();
        let mut b = outcome();
        b.installed_files.pop();
        let c = compare_outcomes(&a, &b);
        assert_eq!(c.mismatches, ["installed files differ (only in the first: /usr/lib64/libbz2.so.1; only in the second: none)"]);
        b.installed_files.clear();
        let c = compare_outcomes(&a, &b);
        assert!(c.agrees());
        assert_eq!(c.notes.len(), 1);
    }

    #[test]
    fn status_phase_and_test_ran_must_agree() {
        let a = outcome();
        let mut b = outcome();
        b.status = Status::TestFailed;
        b.failed_phase = Some("test".into());
        b.test_ran = false;
        let c = compare_outcomes(&a, &b);
        assert_eq!(c.mismatches, ["status success vs test_failed", "failed phase none vs test", "test_ran true vs false"]);
    }

    #[test]
    fn hash_policy_classes() {
        for strict in ["/usr/bin/x", "/bin/sh", "/usr/lib64/libz.so.1", "/lib/libc.so", "/usr/include/zlib.h", "/usr/libexec/x"] {
            assert!(hash_must_match(strict), "{strict}");
        }
        for loose in
            ["/usr/share/doc/x/README.bz2", "/etc/x.conf", "/usr/lib/python3.11/site-packages/__pycache__/a.pyc", "/usr/share/man/man1/x.1"]
        {
            assert!(!hash_must_match(loose), "{loose}");
        }
    }
}
