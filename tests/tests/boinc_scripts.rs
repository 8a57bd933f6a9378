//! Issue 9, item 3: the `config.xml` lines of `templates/README.md`, run as BOINC's own
//! `script_validator` and `script_assimilator` run them (`gah_boinc_harness::boinc_scripts`,
//! a copy of their command-building rules), on every BOINC release line: the programs get
//! only the keywords' values and answer with the exit codes BOINC reads (0 valid, 3 retry
//! later, anything else invalid; the assimilator 0 or stop). Also issue 9, item 5: two
//! submissions of one job are two workunits that land in one cell.

// Test code: the helpers say what each daemon ran and got, for a failing test's output.
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};

use gah_boinc_harness::boinc_scripts::{self, AssimilatorWorkunit, BoincServer, Canonical, ValidatorDecision, ValidatorResult};
use gah_boinc_harness::server::Daemons;
use gah_core::db::{Database, Filter, Page};
use gah_core::job::{Compiler, Job, UseAssignment};
use gah_core::outcome::{Outcome, Status};
use gah_tests::{program, project_root};

fn job() -> Job {
    Job::new("gentoo", "app-arch/bzip2-1.0.8", UseAssignment::default(), Compiler::Gcc, 3600)
}

/// An outcome archive for `job` with `status`, uploaded as `upload/3a/NAME` (BOINC's fan-out).
fn upload(project: &Path, name: &str, job: &Job, status: Status) -> String {
    let mut outcome = Outcome::for_job(job, status);
    if status == Status::BuildFailed {
        outcome.failed_phase = Some("compile".into());
    }
    let dir = project.join("upload/3a");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    gah_core::archive::write(std::fs::File::create(&path).unwrap(), job, &outcome, b"build log\n", None).unwrap();
    path.display().to_string()
}

/// The daemons of the README's `config.xml` block, for a fresh project with our programs in bin/.
fn project(root: &Path, server: BoincServer) -> Daemons {
    let readme = std::fs::read_to_string(project_root().join("templates/README.md")).unwrap();
    let daemons = Daemons::from_readme(&readme, &root.join(format!("{server:?}")), server).unwrap();
    daemons.install(&[program("gah-validate-init"), program("gah-validate-compare"), program("gah-assimilate")]).unwrap();
    // As `gah deploy` writes it: relative to the project folder, where gah.conf is.
    daemons.configure(Path::new("results/results.sqlite")).unwrap();
    daemons
}

fn db_path(d: &Daemons) -> PathBuf {
    d.project.join("results/results.sqlite")
}

fn validate(d: &Daemons, cmd: &str) -> ValidatorDecision {
    let out = boinc_scripts::run_like_a_daemon(&d.project, cmd).unwrap();
    let decision = boinc_scripts::validator_decision(out.status.code());
    eprintln!("{:?}: {cmd} -> {:?} {decision:?}: {}", d.server, out.status.code(), String::from_utf8_lossy(&out.stderr).trim());
    decision
}

/// Runs the assimilator for `wu`; its exit code.
fn assimilate(d: &Daemons, wu: &AssimilatorWorkunit) -> Option<i32> {
    let cmd = boinc_scripts::assimilator_command(&d.assimilator_script, wu, d.server);
    let out = boinc_scripts::run_like_a_daemon(&d.project, &cmd).unwrap();
    eprintln!("{:?}: {cmd} -> {:?}: {}", d.server, out.status.code(), String::from_utf8_lossy(&out.stderr).trim());
    out.status.code()
}

fn result(id: u64, path: &str) -> ValidatorResult {
    ValidatorResult { id, elapsed_time: 612.25, paths: vec![path.to_owned()] }
}

fn workunit(id: u64, name: &str, canonical: Option<(u64, &str)>) -> AssimilatorWorkunit {
    AssimilatorWorkunit {
        id,
        name: name.to_owned(),
        batch: 0,
        error_mask: 0,
        canonical: canonical.map(|(result_id, path)| Canonical {
            result_id,
            elapsed_time: 612.25,
            files: vec![(path.to_owned(), "outcome.tar.gz".to_owned())],
        }),
    }
}

#[test]
fn the_readme_lines_validate_and_assimilate_on_every_boinc_release() {
    let tmp = tempfile::tempdir().unwrap();
    for server in BoincServer::ALL {
        let d = project(tmp.path(), server);
        let job = job();
        let wu = gah_core::job::wu_name(&job.job_id, 1);
        let a = upload(&d.project, &format!("{wu}_0_r1804289383_0"), &job, Status::Success);
        let b = upload(&d.project, &format!("{wu}_1_r846930886_0"), &job, Status::Success);
        let other = upload(&d.project, &format!("{wu}_2_r1681692777_0"), &job, Status::BuildFailed);
        let garbage = d.project.join("upload/3a/garbage_0_r1_0");
        std::fs::write(&garbage, b"not an archive").unwrap();
        let garbage = garbage.display().to_string();
        let missing = d.project.join("upload/3a/missing_0_r1_0").display().to_string();

        let init = |path: &str| validate(&d, &boinc_scripts::validator_init_command(&d.init_script, &result(1, path), server));
        assert_eq!(init(&a), ValidatorDecision::Valid, "{server:?}");
        assert_eq!(init(&garbage), ValidatorDecision::Invalid, "{server:?}");
        assert_eq!(init(&missing), ValidatorDecision::RetryLater, "{server:?}");

        let compare = |x: &str, y: &str| {
            validate(&d, &boinc_scripts::validator_compare_command(&d.compare_script, &result(1, x), &result(2, y), server))
        };
        assert_eq!(compare(&a, &b), ValidatorDecision::Valid, "{server:?}");
        assert_eq!(compare(&a, &other), ValidatorDecision::Invalid, "{server:?}");
        assert_eq!(compare(&a, &missing), ValidatorDecision::RetryLater, "{server:?}");

        assert_eq!(assimilate(&d, &workunit(41, &wu, Some((1, &a)))), Some(0), "{server:?}");
        assert_eq!(assimilate(&d, &workunit(41, &wu, Some((1, &a)))), Some(0), "{server:?}: again");
        let mut failed = workunit(42, "gone_1", None);
        failed.error_mask = 2;
        assert_eq!(assimilate(&d, &failed), Some(0), "{server:?}");

        let db = Database::open(&db_path(&d)).unwrap();
        let rows = db.outcomes(&Filter::default(), Page::ALL).unwrap();
        assert_eq!(rows.iter().map(|r| r.wu_name.as_str()).collect::<Vec<_>>(), [wu.as_str()], "{server:?}");
        let infra = db.infra_failures(Page::ALL).unwrap().into_iter().map(|f| f.wu_name).collect::<Vec<_>>().join(" ");
        // BOINC 7 passes no workunit name with --error.
        assert_eq!(infra, if server == BoincServer::Release7 { "wu#42" } else { "gone_1" }, "{server:?}");
    }
}

/// What issue 9 saw: the old README line's subcommand never reaches the program, on any
/// release, so every result waits for validation forever.
#[test]
fn a_subcommand_in_the_script_line_never_reaches_the_program() {
    let tmp = tempfile::tempdir().unwrap();
    for server in BoincServer::ALL {
        let d = project(tmp.path(), server);
        Daemons::install(&d, &[program("gah-validator")]).unwrap();
        let a = upload(&d.project, "w_0_r1_0", &job(), Status::Success);
        let cmd = boinc_scripts::validator_init_command("gah-validator init files", &result(1, &a), server);
        assert!(!cmd.contains(" init"), "{cmd}");
        assert_eq!(validate(&d, &cmd), ValidatorDecision::RetryLater, "{server:?}");
    }
}

/// Issue 9, item 5: a resubmitted job is a new workunit; both land in the job's one cell.
#[test]
fn two_submissions_of_a_job_are_two_workunits_of_one_cell() {
    let tmp = tempfile::tempdir().unwrap();
    let d = project(tmp.path(), BoincServer::Master);
    let job = job();
    let (first, second) = (gah_core::job::wu_name(&job.job_id, 1), gah_core::job::wu_name(&job.job_id, 2));
    assert_ne!(first, second);
    let a = upload(&d.project, &format!("{first}_0_r5_0"), &job, Status::BuildFailed);
    let b = upload(&d.project, &format!("{second}_0_r6_0"), &job, Status::Success);
    assert_eq!(assimilate(&d, &workunit(1, &first, Some((1, &a)))), Some(0));
    assert_eq!(assimilate(&d, &workunit(2, &second, Some((2, &b)))), Some(0));
    let db = Database::open(&db_path(&d)).unwrap();
    let rows = db.outcomes(&Filter::default(), Page::ALL).unwrap();
    assert_eq!(rows.len(), 2);
    let cells: std::collections::BTreeSet<_> = rows.iter().map(|r| r.cell.clone()).collect();
    assert_eq!(cells.len(), 1, "{rows:?}");
    let jobs: std::collections::BTreeSet<String> = rows.iter().map(|r| r.job_id.clone()).collect();
    assert_eq!(jobs.into_iter().collect::<Vec<_>>(), [job.job_id]);
}

/// Issue 11, item 4: a result is two files with `templates/gah_out` (the outcome archive, then
/// the binary packages), and `files` passes both. The validator checks the packages upload as
/// hostile and records what two replicas built alike; the assimilator moves only that into
/// the project's package store.
#[test]
fn agreed_packages_reach_the_store_on_every_boinc_release() {
    use gah_core::binpkg::fixture::{gpkg, upload as packages};
    const AT: &str = "dev-libs/jemalloc/jemalloc-5.3.0-1.gpkg.tar";
    let jemalloc = |build_time: &[u8], lib: &[u8]| {
        gpkg(
            "jemalloc-5.3.0-1",
            &[("CATEGORY", b"dev-libs"), ("PF", b"jemalloc-5.3.0"), ("BUILD_TIME", build_time)],
            &[("usr/lib64/libjemalloc.so.2", 0o755, lib)],
            1,
        )
    };
    let tmp = tempfile::tempdir().unwrap();
    for server in BoincServer::ALL {
        let d = project(tmp.path(), server);
        let conf = d.project.join(gah_core::project::FILE_NAME);
        let text = std::fs::read_to_string(&conf).unwrap();
        std::fs::write(&conf, format!("{text}binpkgs_dir = binpkgs\n")).unwrap();
        let job = job();
        let wu = gah_core::job::wu_name(&job.job_id, 1);
        let a = upload(&d.project, &format!("{wu}_0_r1804289383_0"), &job, Status::Success);
        let b = upload(&d.project, &format!("{wu}_1_r846930886_0"), &job, Status::Success);
        let put = |name: &str, bytes: Vec<u8>| {
            let path = d.project.join("upload/3a").join(name);
            std::fs::write(&path, bytes).unwrap();
            path.display().to_string()
        };
        let a_pkgs = put(&format!("{wu}_0_r1804289383_1"), packages(&[(AT, &jemalloc(b"100", b"lib"))]));
        let b_pkgs = put(&format!("{wu}_1_r846930886_1"), packages(&[(AT, &jemalloc(b"200", b"lib"))]));
        let hostile = put(&format!("{wu}_2_r1681692777_1"), packages(&[("../../../html/user/index.php", b"<?php system($_GET[c]);")]));
        let two = |id: u64, outcome: &str, pkgs: &str| ValidatorResult {
            id,
            elapsed_time: 1.0,
            paths: vec![outcome.to_owned(), pkgs.to_owned()],
        };

        let init = |r: &ValidatorResult| validate(&d, &boinc_scripts::validator_init_command(&d.init_script, r, server));
        assert_eq!(init(&two(1, &a, &a_pkgs)), ValidatorDecision::Valid, "{server:?}");
        // Refused and never agreed on; the result stands on its outcome.
        assert_eq!(init(&two(3, &b, &hostile)), ValidatorDecision::Valid, "{server:?}");
        let compare = boinc_scripts::validator_compare_command(&d.compare_script, &two(1, &a, &a_pkgs), &two(2, &b, &b_pkgs), server);
        assert_eq!(validate(&d, &compare), ValidatorDecision::Valid, "{server:?}");

        let mut canonical = workunit(41, &wu, Some((1, &a)));
        canonical.canonical.as_mut().unwrap().files.push((a_pkgs.clone(), gah_core::binpkg::OPEN_NAME.to_owned()));
        assert_eq!(assimilate(&d, &canonical), Some(0), "{server:?}");
        let store = d.project.join("binpkgs/store");
        assert_eq!(std::fs::read(store.join(AT)).unwrap(), jemalloc(b"100", b"lib"), "{server:?}: the canonical result's bytes");
        // Nothing else reached the store, and the web folder is as it was.
        let mut held = Vec::new();
        for category in std::fs::read_dir(&store).unwrap() {
            held.push(category.unwrap().file_name().to_string_lossy().into_owned());
        }
        assert_eq!(held, ["dev-libs"], "{server:?}");
        assert!(!d.project.join("html").exists(), "{server:?}");
    }
}
