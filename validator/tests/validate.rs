//! The validator against well-formed, corrupt, hostile and disagreeing archives, in process
//! and through the binary (exit codes and the one-line reason).

#![allow(clippy::cast_possible_truncation)] // The mutation loops cut random u64s down on purpose.

mod common;

use std::path::{Path, PathBuf};

use gah_core::outcome::Status;
use gah_validator::VerdictKind;

const BIN: &str = env!("CARGO_BIN_EXE_gah-validator");

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Runs the binary in `cwd`; returns (exit code, stderr).
fn run(cwd: &Path, args: &[&str]) -> (i32, String) {
    let out = gah_util::process::command(BIN).args(args).current_dir(cwd).env("GAH_HOST_STATS", cwd.join("hosts.sqlite")).output().unwrap();
    (out.status.code().expect("exited, not killed"), String::from_utf8(out.stderr).unwrap())
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = walk(dir).into_iter().map(|p| p.strip_prefix(dir).unwrap().display().to_string()).collect();
    names.sort();
    names
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn a_well_formed_archive_is_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let job = common::job();
    let path = write(tmp.path(), "ok.tar.gz", &common::good(&job, &common::outcome(&job, Status::Success), b"log\n"));
    let verdict = gah_validator::init(&path, Some(&job));
    assert!(verdict.is_valid(), "{verdict}");
    write(tmp.path(), "job.json", &job.to_json());
    assert_eq!(run(tmp.path(), &["init", "ok.tar.gz"]), (0, String::new()));
    assert_eq!(run(tmp.path(), &["init", "ok.tar.gz", "--job", "job.json"]), (0, String::new()));
}

#[test]
fn an_archive_for_another_job_is_invalid() {
    let tmp = tempfile::tempdir().unwrap();
    let job = common::job();
    let mut other = job.clone();
    other.compiler = gah_core::job::Compiler::Clang;
    let other = gah_core::job::Job::new(&other.repo, &other.cpv, other.use_flags.clone(), other.compiler, other.timeout_secs);
    write(tmp.path(), "ok.tar.gz", &common::good(&job, &common::outcome(&job, Status::Success), b"log\n"));
    write(tmp.path(), "other.json", &other.to_json());
    let (code, stderr) = run(tmp.path(), &["init", "ok.tar.gz", "--job", "other.json"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("ok.tar.gz") && stderr.contains("outcome is for job"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1);

    // Same job identity but a different timeout: job.json must be the one issued.
    let mut longer = job.clone();
    longer.timeout_secs += 1;
    let verdict = gah_validator::init(&tmp.path().join("ok.tar.gz"), Some(&longer));
    assert_eq!(verdict.kind(), VerdictKind::Invalid);
    assert!(verdict.reason().contains("job.json differs"), "{verdict}");
}

#[test]
fn server_side_problems_mean_retry_later() {
    let tmp = tempfile::tempdir().unwrap();
    let job = common::job();
    write(tmp.path(), "ok.tar.gz", &common::good(&job, &common::outcome(&job, Status::Success), b"log\n"));
    let (code, stderr) = run(tmp.path(), &["init", "missing.tar.gz"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("missing.tar.gz") && stderr.contains("cannot read"), "{stderr}");
    let (code, stderr) = run(tmp.path(), &["init", "ok.tar.gz", "--job", "no-such-job.json"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("job file: read no-such-job.json"), "{stderr}");
    std::fs::create_dir(tmp.path().join("a-dir")).unwrap();
    assert_eq!(run(tmp.path(), &["init", "a-dir"]).0, 3);
    // A typo in the project's configuration must not invalidate results.
    assert_eq!(run(tmp.path(), &["inti", "ok.tar.gz"]).0, 3);
    assert_eq!(run(tmp.path(), &["compare", "ok.tar.gz"]).0, 3);
}

#[test]
fn an_oversized_upload_is_invalid_without_being_read() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("huge.tar.gz");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(gah_core::archive::Limits::default().max_compressed + 1).unwrap();
    let verdict = gah_validator::init(&path, None);
    assert_eq!(verdict.kind(), VerdictKind::Invalid);
    assert!(verdict.reason().contains("over the") && verdict.reason().contains("huge.tar.gz"), "{verdict}");
}

/// Every hostile archive is refused, in process and by the binary, with a one-line reason
/// naming the file, no panic, and nothing written anywhere.
#[test]
fn hostile_archives_are_rejected_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let abs_target = tmp.path().join("absolute-escape");
    let abs_target = abs_target.to_str().unwrap().to_owned();
    let uploads = tmp.path().join("uploads");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&uploads).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let cases = common::hostile(&abs_target);
    for case in &cases {
        write(&uploads, &format!("{}.tar.gz", case.name), &case.bytes());
    }
    let before = listing(tmp.path());
    for common::Case { name, words: expected, .. } in &cases {
        let file = uploads.join(format!("{name}.tar.gz"));
        let verdict = gah_validator::init(&file, Some(&common::job()));
        assert_eq!(verdict.kind(), VerdictKind::Invalid, "{name}: {verdict}");
        assert!(verdict.reason().contains(expected), "{name}: `{}` lacks `{expected}`", verdict.reason());

        let (code, stderr) = run(&work, &["init", file.to_str().unwrap()]);
        assert_eq!(code, 1, "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.starts_with("gah-validator: invalid: "), "{name}: {stderr}");
        assert!(stderr.contains(&format!("{name}.tar.gz")) && stderr.contains(expected), "{name}: {stderr}");
    }
    assert_eq!(listing(tmp.path()), before, "the validator wrote something");
    assert!(!Path::new(&abs_target).exists());
    assert!(!tmp.path().join("gah-escaped").exists());
}

#[test]
fn truncated_and_garbage_uploads_are_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let job = common::job();
    let good = common::good(&job, &common::outcome(&job, Status::Success), &vec![b'x'; 100_000]);
    for cut in [1, 10, good.len() / 3, good.len() - 9, good.len() - 1] {
        let path = write(tmp.path(), "cut.tar.gz", &good[..cut]);
        let verdict = gah_validator::init(&path, None);
        assert_eq!(verdict.kind(), VerdictKind::Invalid, "cut at {cut}: {verdict}");
    }
    let path = write(tmp.path(), "garbage.tar.gz", b"\x1f\x8b garbage after a gzip magic");
    assert_eq!(gah_validator::init(&path, None).kind(), VerdictKind::Invalid);
}

#[test]
fn replicas_that_agree_match_despite_timings_and_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let job = common::job();
    let a = common::outcome(&job, Status::TestFailed);
    let mut b = a.clone();
    b.backend = "vm".into();
    b.accelerator = "tcg".into();
    b.duration_secs = 300.0;
    b.summary = "tests failed on a slow machine".into();
    write(tmp.path(), "a.tar.gz", &common::good(&job, &a, b"log A\n"));
    write(tmp.path(), "b.tar.gz", &common::good(&job, &b, b"a different log B\n"));
    assert_eq!(run(tmp.path(), &["compare", "a.tar.gz", "b.tar.gz"]), (0, String::new()));
}

#[test]
fn replicas_that_disagree_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let job = common::job();
    let base = common::outcome(&job, Status::TestFailed);
    write(tmp.path(), "a.tar.gz", &common::good(&job, &base, b"log\n"));

    let success = common::outcome(&job, Status::Success);
    write(tmp.path(), "status.tar.gz", &common::good(&job, &success, b"log\n"));
    let (code, stderr) = run(tmp.path(), &["compare", "a.tar.gz", "status.tar.gz"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1);
    assert!(stderr.contains("a.tar.gz and status.tar.gz disagree: status test_failed vs success"), "{stderr}");

    let mut tests = base.clone();
    tests.failing_tests = vec!["sample2".into(), "sample3".into()];
    write(tmp.path(), "tests.tar.gz", &common::good(&job, &tests, b"log\n"));
    let (code, stderr) = run(tmp.path(), &["compare", "a.tar.gz", "tests.tar.gz"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("failing tests differ (only in the first: sample1; only in the second: sample2, sample3)"), "{stderr}");

    let mut binary = base.clone();
    binary.installed_files[0].sha256 = "44".repeat(32);
    write(tmp.path(), "binary.tar.gz", &common::good(&job, &binary, b"log\n"));
    let (code, stderr) = run(tmp.path(), &["compare", "a.tar.gz", "binary.tar.gz"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("binaries/headers differ in content: /usr/bin/bzip2"), "{stderr}");

    let mut doc = base.clone();
    doc.installed_files[2].sha256 = "55".repeat(32);
    write(tmp.path(), "doc.tar.gz", &common::good(&job, &doc, b"log\n"));
    let (code, stderr) = run(tmp.path(), &["compare", "a.tar.gz", "doc.tar.gz"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("note: 1 other files differ in content (tolerated)"), "{stderr}");
}

/// Issue 4: one replica claims success with a fabricated log and an honest-looking
/// manifest; the pair must not validate.
#[test]
fn a_forged_replica_does_not_validate() {
    let tmp = tempfile::tempdir().unwrap();
    let job = common::job();
    let honest = common::outcome(&job, Status::TestFailed);
    let mut forged = common::outcome(&job, Status::Success);
    forged.installed_files = honest.installed_files.clone();
    write(
        tmp.path(),
        "honest.tar.gz",
        &common::good(&job, &honest, b">>> Test phase: app-arch/bzip2-1.0.8\n * ERROR: make check failed\n"),
    );
    write(tmp.path(), "forged.tar.gz", &common::good(&job, &forged, b">>> Test phase: all tests passed (trust me)\n"));
    // Each is well-formed on its own ...
    assert!(gah_validator::init(&tmp.path().join("forged.tar.gz"), Some(&job)).is_valid());
    // ... but the pair disagrees.
    let verdict = gah_validator::compare(&tmp.path().join("honest.tar.gz"), &tmp.path().join("forged.tar.gz"));
    assert_eq!(verdict.kind(), VerdictKind::Invalid);
    assert!(verdict.reason().contains("status test_failed vs success"), "{verdict}");
}

#[test]
fn compare_names_the_bad_file() {
    let tmp = tempfile::tempdir().unwrap();
    let job = common::job();
    write(tmp.path(), "a.tar.gz", &common::good(&job, &common::outcome(&job, Status::Success), b"log\n"));
    write(tmp.path(), "bad.tar.gz", b"not an archive");
    let (code, stderr) = run(tmp.path(), &["compare", "a.tar.gz", "bad.tar.gz"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("bad.tar.gz: archive is not a readable tar.gz"), "{stderr}");
    let (code, stderr) = run(tmp.path(), &["compare", "bad.tar.gz", "gone.tar.gz"]);
    assert_eq!(code, 3, "transient wins: {stderr}");
    assert!(stderr.contains("gone.tar.gz"), "{stderr}");
}

#[test]
fn host_error_counts_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let job = common::job();
    write(tmp.path(), "a.tar.gz", &common::good(&job, &common::outcome(&job, Status::Success), b"log\n"));
    write(tmp.path(), "b.tar.gz", &common::good(&job, &common::outcome(&job, Status::BuildFailed), b"log\n"));
    write(tmp.path(), "bad.tar.gz", b"junk");
    assert_eq!(run(tmp.path(), &["compare", "a.tar.gz", "a.tar.gz", "--hosts", "h1", "h2"]).0, 0);
    assert_eq!(run(tmp.path(), &["compare", "a.tar.gz", "b.tar.gz", "--hosts", "h1", "h3"]).0, 1);
    assert_eq!(run(tmp.path(), &["init", "bad.tar.gz", "--host", "h3"]).0, 1);
    let stats = gah_validator::hosts::HostStats::open(&tmp.path().join("hosts.sqlite")).unwrap();
    let h1 = stats.counts("h1").unwrap();
    assert_eq!((h1.agreed, h1.disagreed, h1.invalid), (1, 1, 0));
    let h3 = stats.counts("h3").unwrap();
    assert_eq!((h3.agreed, h3.disagreed, h3.invalid), (0, 1, 1));
}

/// A cheap stand-in for fuzzing: random byte flips, insertions and truncations of a valid
/// archive never panic, and a mutated archive is accepted only if it still reads the same.
#[test]
fn mutated_archives_never_panic() {
    let job = common::job();
    let outcome = common::outcome(&job, Status::TestFailed);
    let good = common::good(&job, &outcome, b">>> Test phase\nFAIL: sample1\n");
    let mut rng = gah_util::rng::SplitMix64(0x9E37_79B9_7F4A_7C15);
    let mut next = move || rng.next_u64();
    for round in 0..3000 {
        let mut bytes = good.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            match next() % 3 {
                0 => bytes[at] ^= 1 << (next() % 8),
                1 => bytes.insert(at, next() as u8),
                _ => bytes.truncate(at.max(1)),
            }
        }
        match gah_core::archive::read(&bytes, gah_core::archive::Limits::default()) {
            Ok(read) => assert_eq!(read.outcome, outcome, "round {round}: a mutation changed the outcome unnoticed"),
            // Core's messages may quote raw header bytes (newlines included); the verdict
            // makes them one line.
            Err(e) => assert!(!gah_validator::Verdict::invalid(&e.to_string()).reason().contains('\n')),
        }
    }
}

/// The stable-toolchain twin of the `outcome_from_json` fuzz target (fuzz/): mutated
/// `outcome.json` and `job.json` never panic `Outcome::from_json` / `Job::from_json`, what
/// parses round-trips, and the same bytes inside an archive with an honest manifest (so the
/// parser is reached through `archive::read`, as a forger would reach it) are refused with a
/// one-line reason or accepted self-consistent.
#[test]
fn mutated_outcome_json_never_panics() {
    use gah_core::job::Job;
    use gah_core::outcome::Outcome;
    let job = common::job();
    let good_outcome = common::outcome(&job, Status::TestFailed).to_json();
    let good_job = job.to_json();
    // Tokens a JSON fuzzer splices in: type confusion, huge and odd numbers, escapes.
    const TOKENS: &[&str] = &[
        "null",
        "true",
        "-1",
        "1e999",
        "18446744073709551616",
        "0.0",
        "\"\"",
        "[]",
        "{}",
        "\"\\u0000\"",
        "\"\\ud800\"",
        "\"success\"",
        "\"deps_failed\"",
        "\"gcc\"",
        ",",
        ":",
        "\"",
        "{",
        "]",
        "\"format\": 1,",
        "\"extra\": 0,",
    ];
    let mut state: u64 = 0x0DDB_A11C_AFE5_EED5;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut parsed, mut refused) = (0, 0);
    for round in 0..3000 {
        let target_job = round % 4 == 0;
        let mut bytes = if target_job { good_job.clone() } else { good_outcome.clone() };
        for _ in 0..1 + next() % 3 {
            let at = (next() % bytes.len() as u64) as usize;
            match next() % 4 {
                0 => bytes[at] ^= 1 << (next() % 8),
                1 => bytes.truncate(at.max(1)),
                2 => {
                    let token = TOKENS[(next() % TOKENS.len() as u64) as usize].as_bytes();
                    bytes.splice(at..at, token.iter().copied());
                }
                _ => {
                    // Replace a value: from `at` to the next `,` or `}`.
                    let end = bytes[at..].iter().position(|b| *b == b',' || *b == b'}').map_or(bytes.len(), |p| at + p);
                    let token = TOKENS[(next() % TOKENS.len() as u64) as usize].as_bytes();
                    bytes.splice(at..end, token.iter().copied());
                }
            }
        }
        match Outcome::from_json(&bytes) {
            Ok(o) => {
                parsed += 1;
                assert_eq!(Outcome::from_json(&o.to_json()).unwrap(), o, "round {round}");
            }
            Err(e) => {
                refused += 1;
                assert!(!gah_validator::Verdict::invalid(&e.to_string()).reason().contains('\n'));
            }
        }
        if let Ok(j) = Job::from_json(&bytes) {
            assert_eq!(Job::from_json(&j.to_json()).unwrap(), j, "round {round}");
        }
        // Through the archive reader, with a manifest that matches the mutated member.
        let mut members = common::members(&job, &common::outcome(&job, Status::TestFailed), b"log\n");
        members.pop();
        let slot = if target_job { 1 } else { 0 };
        members[slot] = common::Member::file(if target_job { "job.json" } else { "outcome.json" }, &bytes);
        members.push(common::manifest_for(&members));
        match gah_core::archive::read(&common::raw(&members), gah_core::archive::Limits::default()) {
            Ok(read) => {
                assert!(read.outcome.check_consistency().is_ok(), "round {round}");
                assert!(read.outcome.mismatch_with(&read.job).is_none(), "round {round}");
            }
            Err(e) => assert!(!gah_validator::Verdict::invalid(&e.to_string()).reason().contains('\n')),
        }
    }
    // The mutations must reach both sides of the parser, or the test proves little.
    assert!(parsed > 30 && refused > 1000, "parsed {parsed}, refused {refused}");
}
