//! A result's second upload, the binary packages its job built (`binpkgs.tar`), through the
//! programs BOINC's `script_validator` runs, with the command lines it gives them: every
//! output file of the result template in order, uploaded or not
//! (`sched/validate_util.cpp`, `get_output_file_paths`), then the result ids up to BOINC
//! 8.2.4.

mod common;

use std::path::Path;

use gah_core::binpkg::fixture::{gpkg, upload};
use gah_core::outcome::Status;

const INIT: &str = env!("CARGO_BIN_EXE_gah-validate-init");
const COMPARE: &str = env!("CARGO_BIN_EXE_gah-validate-compare");
const AT: &str = "dev-libs/jemalloc/jemalloc-5.3.0-1.gpkg.tar";

/// Runs `program` in `cwd` as script_validator does; returns (exit code, stderr).
fn run(program: &str, cwd: &Path, args: &[&str]) -> (i32, String) {
    let out =
        gah_util::process::command(program).args(args).current_dir(cwd).env("GAH_HOST_STATS", cwd.join("hosts.sqlite")).output().unwrap();
    (out.status.code().expect("exited, not killed"), String::from_utf8(out.stderr).unwrap())
}

fn jemalloc(build_time: &[u8], lib: &[u8], mtime: u64) -> Vec<u8> {
    gpkg(
        "jemalloc-5.3.0-1",
        &[("CATEGORY", b"dev-libs\n"), ("PF", b"jemalloc-5.3.0\n"), ("BUILD_TIME", build_time)],
        &[("usr/lib64/libjemalloc.so.2", 0o755, lib)],
        mtime,
    )
}

/// Two replicas' outcome archives (agreeing) in `dir`: `a.tar.gz`, `b.tar.gz`.
fn outcomes(dir: &Path) {
    let job = common::job();
    let outcome = common::outcome(&job, Status::Success);
    std::fs::write(dir.join("a.tar.gz"), common::good(&job, &outcome, b"log A\n")).unwrap();
    std::fs::write(dir.join("b.tar.gz"), common::good(&job, &outcome, b"log B\n")).unwrap();
}

#[test]
fn init_takes_one_or_two_files_and_a_result_id() {
    let tmp = tempfile::tempdir().unwrap();
    outcomes(tmp.path());
    std::fs::write(tmp.path().join("a.binpkgs"), upload(&[(AT, &jemalloc(b"1\n", b"lib", 1))])).unwrap();
    // A workunit made with the one-file template, then with both, then with a result id.
    assert_eq!(run(INIT, tmp.path(), &["a.tar.gz"]).0, 0);
    let (code, said) = run(INIT, tmp.path(), &["a.tar.gz", "a.binpkgs"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("1 binary packages"), "{said}");
    assert_eq!(run(INIT, tmp.path(), &["a.tar.gz", "a.binpkgs", "1234"]).0, 0);
    // The packages upload is optional: a result that uploaded none is valid.
    assert_eq!(run(INIT, tmp.path(), &["a.tar.gz", "absent.binpkgs", "1234"]), (0, String::new()));
    // Three paths are not a result.
    assert_eq!(run(INIT, tmp.path(), &["a.tar.gz", "a.binpkgs", "b.tar.gz"]).0, 3);
}

/// The packages are optional and not what the job asks: a hostile upload is refused, named,
/// and never agreed on, but the result stands on its outcome.
#[test]
fn a_hostile_packages_upload_is_refused_and_the_outcome_stands() {
    let tmp = tempfile::tempdir().unwrap();
    outcomes(tmp.path());
    let lying = gpkg("jemalloc-5.3.0-1", &[("CATEGORY", b"sys-apps"), ("PF", b"jemalloc-5.3.0")], &[], 1);
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("escape", upload(&[("../../../etc/cron.d/x", b"* * * * * root sh")]), "not a binary package"),
        ("lying", upload(&[(AT, &lying)]), "CATEGORY `sys-apps`"),
        ("garbage", b"\x00garbage that is no tar".repeat(100), "binary package"),
        ("index", upload(&[("Packages", b"PACKAGES: 1\n")]), "Packages"),
    ];
    for (name, bytes, says) in cases {
        std::fs::write(tmp.path().join(name), bytes).unwrap();
        let (code, said) = run(INIT, tmp.path(), &["a.tar.gz", name]);
        assert_eq!(code, 0, "{name}: {said}");
        assert!(said.contains("binary packages not taken") && said.contains(name) && said.contains(says), "{name}: {said}");
    }
    // A link where the upload should be is the server's oddity, never followed: retry later.
    std::os::unix::fs::symlink("/etc/passwd", tmp.path().join("linked")).unwrap();
    assert_eq!(run(INIT, tmp.path(), &["a.tar.gz", "linked"]).0, 3);
    // Nothing was written beside the uploads.
    let mut names: Vec<String> =
        std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["a.tar.gz", "b.tar.gz", "escape", "garbage", "index", "linked", "lying"]);
}

#[test]
fn replicas_agree_on_outcomes_and_say_which_packages_they_share() {
    let tmp = tempfile::tempdir().unwrap();
    outcomes(tmp.path());
    let other = gpkg("bzip2-1.0.8-1", &[("CATEGORY", b"app-arch"), ("PF", b"bzip2-1.0.8")], &[("usr/bin/bzip2", 0o755, b"elf")], 1);
    let write = |name: &str, bytes: Vec<u8>| std::fs::write(tmp.path().join(name), bytes).unwrap();
    // Built at other times (other bytes), alike in what they install: agreed.
    write("a.binpkgs", upload(&[(AT, &jemalloc(b"100\n", b"lib", 100)), ("app-arch/bzip2/bzip2-1.0.8-1.gpkg.tar", &other)]));
    write("b.binpkgs", upload(&[(AT, &jemalloc(b"200\n", b"lib", 200))]));
    // A forged library: the outcomes still agree, the package is not agreed.
    write("c.binpkgs", upload(&[(AT, &jemalloc(b"200\n", b"trojan", 200))]));
    let (code, said) = run(COMPARE, tmp.path(), &["a.tar.gz", "a.binpkgs", "b.tar.gz", "b.binpkgs", "11", "12"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("1 binary packages agreed") && said.contains("only the first replica built: app-arch/bzip2-1.0.8"), "{said}");
    let (code, said) = run(COMPARE, tmp.path(), &["a.tar.gz", "a.binpkgs", "b.tar.gz", "c.binpkgs"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("built differently by the two replicas: dev-libs/jemalloc-5.3.0") && !said.contains("agreed"), "{said}");
    let a = gah_validator::Uploads { outcome: tmp.path().join("a.tar.gz"), binpkgs: Some(tmp.path().join("a.binpkgs")) };
    let b = gah_validator::Uploads { outcome: tmp.path().join("b.tar.gz"), binpkgs: Some(tmp.path().join("b.binpkgs")) };
    let (verdict, [agreed, theirs]) = gah_validator::compare_uploads_with(&a, &b);
    assert!(verdict.is_valid());
    assert_eq!(agreed.iter().map(|p| p.cpv.as_str()).collect::<Vec<_>>(), ["dev-libs/jemalloc-5.3.0"]);
    assert_eq!(theirs.iter().map(|p| (p.cpv.as_str(), &p.digest)).collect::<Vec<_>>(), [("dev-libs/jemalloc-5.3.0", &agreed[0].digest)]);
    // Old one-file workunits, with and without ids; an odd count is no pair.
    assert_eq!(run(COMPARE, tmp.path(), &["a.tar.gz", "b.tar.gz"]).0, 0);
    assert_eq!(run(COMPARE, tmp.path(), &["a.tar.gz", "b.tar.gz", "11", "12"]).0, 0);
    assert_eq!(run(COMPARE, tmp.path(), &["a.tar.gz", "a.binpkgs", "b.tar.gz"]).0, 3);
    // A hostile packages upload on either side is named, and nothing is agreed with it.
    write("bad.binpkgs", upload(&[("../x", b"x")]));
    let (code, said) = run(COMPARE, tmp.path(), &["a.tar.gz", "a.binpkgs", "b.tar.gz", "bad.binpkgs"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("bad.binpkgs") && !said.contains("agreed"), "{said}");
}

#[test]
fn an_agreement_is_recorded_for_the_assimilator_or_the_pair_is_retried() {
    let tmp = tempfile::tempdir().unwrap();
    outcomes(tmp.path());
    let write = |name: &str, bytes: Vec<u8>| std::fs::write(tmp.path().join(name), bytes).unwrap();
    write("a_0_r1_1", upload(&[(AT, &jemalloc(b"100\n", b"lib", 100))]));
    write("b_1_r2_1", upload(&[(AT, &jemalloc(b"200\n", b"lib", 200))]));
    // The project file BOINC's daemons find from tmp_<host>/ (here: the working folder).
    write("gah.conf", b"binpkgs_dir = binpkgs\n".to_vec());
    let (code, said) = run(COMPARE, tmp.path(), &["a.tar.gz", "a_0_r1_1", "b.tar.gz", "b_1_r2_1"]);
    assert_eq!(code, 0, "{said}");
    let agreed = gah_validator::agreed::Agreed::open(&tmp.path().join("binpkgs")).unwrap();
    for upload in ["a_0_r1_1", "b_1_r2_1"] {
        let got = agreed.of(Path::new(upload)).unwrap();
        assert_eq!(got.iter().map(|p| p.path.as_str()).collect::<Vec<_>>(), [AT], "{upload}");
    }
    // Where the record cannot be written, the pair is retried rather than its packages lost.
    write("gah.conf", b"binpkgs_dir = a.tar.gz\n".to_vec());
    let (code, said) = run(COMPARE, tmp.path(), &["a.tar.gz", "a_0_r1_1", "b.tar.gz", "b_1_r2_1"]);
    assert_eq!(code, 3, "{said}");
    assert!(said.contains("retry later"), "{said}");
}
