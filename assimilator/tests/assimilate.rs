//! The assimilator in process and through its binary: idempotence, quarantine, the
//! `--error` path and which failures exit nonzero.

use std::path::{Path, PathBuf};

use gah_assimilator::Assimilated;
use gah_core::db::read::Totals;
use gah_core::db::{Database, Filter, Page, Recorded, SnapshotId};
use gah_core::job::{Compiler, Job, UseAssignment};
use gah_core::outcome::{Outcome, Status};

const BIN: &str = env!("CARGO_BIN_EXE_gah-assimilator");

fn archive(dir: &Path, name: &str, status: Status, log: &[u8]) -> (PathBuf, Outcome) {
    let job = Job::new("gah", "app-arch/bzip2-1.0.8", UseAssignment::default(), Compiler::Clang, 60);
    let mut outcome = Outcome::for_job(&job, status);
    outcome.test_ran = true;
    if status == Status::TestFailed {
        outcome.failed_phase = Some("test".into());
    }
    let path = dir.join(name);
    gah_core::archive::write(std::fs::File::create(&path).unwrap(), &job, &outcome, log, None).unwrap();
    (path, outcome)
}

fn totals(db: &Database) -> Totals {
    db.totals().unwrap()
}

fn run(args: &[&str], db: &Path) -> (i32, String) {
    let out = gah_util::process::command(BIN).args(args).env("GAH_RESULTS_DB", db).output().unwrap();
    (out.status.code().expect("exited"), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn the_same_workunit_twice_is_one_row() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, outcome) = archive(tmp.path(), "r.tar.gz", Status::TestFailed, b">>> Test phase\nFAIL\n");
    let mut db = Database::temp().unwrap();
    let wu = outcome.job_id.as_str();
    assert_eq!(gah_assimilator::assimilate(&mut db, wu, &path).unwrap(), Assimilated::Stored(Recorded::Inserted));
    assert_eq!(gah_assimilator::assimilate(&mut db, wu, &path).unwrap(), Assimilated::Stored(Recorded::AlreadyPresent));
    let rows = db.outcomes(&Filter::default(), Page::ALL).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, outcome.status);
    assert_eq!(rows[0].failed_phase.as_deref(), Some("test"));
    assert!(db.path().parent().unwrap().join(rows[0].log.relative_path()).exists());
}

#[test]
fn the_binary_stores_once_and_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let (path, outcome) = archive(tmp.path(), "r.tar.gz", Status::Success, b"log\n");
    let db_path = tmp.path().join("results/results.sqlite");
    let (file, wu) = (path.to_str().unwrap(), outcome.job_id.as_str());
    let (code, stderr) = run(&[wu, file], &db_path);
    assert_eq!((code, stderr), (0, format!("gah-assimilator: {wu}: stored\n")));
    let (code, stderr) = run(&["--db", db_path.to_str().unwrap(), wu, file], Path::new("/nonexistent/ignored.sqlite"));
    assert_eq!((code, stderr), (0, format!("gah-assimilator: {wu}: already stored\n")));
    let db = Database::open(&db_path).unwrap();
    assert_eq!(totals(&db).outcomes, 1);
}

#[test]
fn a_permanently_bad_file_is_quarantined_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.tar.gz");
    std::fs::write(&bad, b"this is not an outcome archive").unwrap();
    let db_path = tmp.path().join("results.sqlite");
    let (code, stderr) = run(&["wu_bad", bad.to_str().unwrap()], &db_path);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("wu_bad: quarantined: ") && stderr.contains("not a readable tar.gz"), "{stderr}");
    let (code, stderr) = run(&["wu_bad", bad.to_str().unwrap()], &db_path);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("already quarantined"), "{stderr}");

    let db = Database::open(&db_path).unwrap();
    assert_eq!(totals(&db).outcomes, 0);
    let q = db.quarantined(Page::ALL).unwrap();
    let (file, sha, reason) = match &q[..] {
        [q] if q.wu_name == "wu_bad" => (q.file.clone(), q.file_sha256.clone().unwrap(), q.reason.clone()),
        other => panic!("{other:?}"),
    };
    assert_eq!(file, bad.to_str().unwrap());
    assert!(reason.contains("bad.tar.gz") && reason.contains("not a readable tar.gz"), "{reason}");
    let copy = tmp.path().join("quarantine").join(format!("{sha}.tar.gz"));
    assert_eq!(std::fs::read(copy).unwrap(), b"this is not an outcome archive");
    // The upload itself is untouched: the assimilator never deletes.
    assert!(bad.exists());
}

#[test]
fn transient_failures_exit_nonzero_and_record_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let db_path = tmp.path().join("results.sqlite");
    let (code, stderr) = run(&["wu_gone", tmp.path().join("gone.tar.gz").to_str().unwrap()], &db_path);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("gone.tar.gz: cannot read"), "{stderr}");
    let db = Database::open(&db_path).unwrap();
    assert_eq!(totals(&db).outcomes + totals(&db).quarantined, 0);

    // A database that cannot be opened (its folder is a file).
    let (path, _) = archive(tmp.path(), "r.tar.gz", Status::Success, b"log\n");
    let blocked = tmp.path().join("r.tar.gz").join("results.sqlite");
    let (code, stderr) = run(&["wu_a", path.to_str().unwrap()], &blocked);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.starts_with("gah-assimilator: error: "), "{stderr}");
}

#[test]
fn the_error_path_records_an_infrastructure_failure_once() {
    let tmp = tempfile::tempdir().unwrap();
    let db_path = tmp.path().join("results.sqlite");
    let (code, stderr) = run(&["--error", "8", "wu_failed", "1234", "7"], &db_path);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("wu_failed: infrastructure failure (error mask 0x8) recorded"), "{stderr}");
    let (code, stderr) = run(&["--error", "8", "wu_failed", "1234", "7"], &db_path);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("already recorded"), "{stderr}");
    let db = Database::open(&db_path).unwrap();
    let infra = db.infra_failures(Page::ALL).unwrap();
    let row: Vec<_> = infra.iter().map(|f| (f.wu_name.as_str(), f.error_mask, f.wu_id, f.batch_id)).collect();
    assert_eq!(row, [("wu_failed", 8, 1234, 7)]);
    assert_eq!(totals(&db).infra_failures, 1);

    let mut db = Database::temp().unwrap();
    assert_eq!(gah_assimilator::record_error(&mut db, 4, "wu_x", 1, 0).unwrap(), Recorded::Inserted);
}

#[test]
fn bad_command_lines_exit_nonzero() {
    let tmp = tempfile::tempdir().unwrap();
    let db_path = tmp.path().join("results.sqlite");
    assert_ne!(run(&["only_a_name"], &db_path).0, 0);
    assert_ne!(run(&["--error", "8", "wu", "not-a-number", "0"], &db_path).0, 0);
    assert_ne!(run(&["--error", "8", "wu"], &db_path).0, 0);
    assert_ne!(run(&[], &db_path).0, 0);
}

fn job_archive(dir: &Path, name: &str, cpv: &str, status: Status) -> (PathBuf, gah_core::job::Job) {
    let job = Job::new("gah", cpv, UseAssignment::default(), Compiler::Gcc, 60);
    let mut outcome = Outcome::for_job(&job, status);
    outcome.failed_phase = (status == Status::BuildFailed).then(|| "compile".into());
    let path = dir.join(name);
    let log = format!("log of {name}\n");
    gah_core::archive::write(std::fs::File::create(&path).unwrap(), &job, &outcome, log.as_bytes(), Some(b"emerge --info")).unwrap();
    (path, job)
}

#[test]
fn a_batch_stores_quarantines_and_can_be_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let db_path = tmp.path().join("results.sqlite");
    let mut list = String::from("# wu file\n\n");
    for i in 0..7 {
        let (path, job) = job_archive(tmp.path(), &format!("{i}.tar.gz"), &format!("app-misc/p{i}-1"), Status::Success);
        list.push_str(&format!("{} {}\n", job.job_id, path.display()));
    }
    std::fs::write(tmp.path().join("bad.tar.gz"), b"junk").unwrap();
    list.push_str(&format!("wu_bad {}\n", tmp.path().join("bad.tar.gz").display()));
    let gone = tmp.path().join("late.tar.gz");
    let late = Job::new("gah", "app-misc/late-1", UseAssignment::default(), Compiler::Gcc, 60).job_id;
    list.push_str(&format!("{late} {}\n", gone.display()));
    std::fs::write(tmp.path().join("list"), &list).unwrap();
    let list_path = tmp.path().join("list");
    let args = ["--batch", list_path.to_str().unwrap(), "--batch-size", "3", "--snapshot", "git:1"];

    // One upload is missing (transient): exit 1, everything else stored.
    let (code, stderr) = run(&args, &db_path);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{late}: error: ")) && stderr.contains("7 stored, 0 already stored, 1 quarantined, 1 failed"),
        "{stderr}"
    );
    // It arrives; the same list again stores only it.
    job_archive(tmp.path(), "late.tar.gz", "app-misc/late-1", Status::BuildFailed);
    let (code, stderr) = run(&args, &db_path);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("1 stored, 7 already stored, 1 quarantined, 0 failed"), "{stderr}");

    let db = Database::open(&db_path).unwrap();
    assert_eq!((totals(&db).outcomes, totals(&db).quarantined), (8, 1));
    let rows = db.outcomes(&Filter::default(), Page::ALL).unwrap();
    assert!(rows.iter().all(|r| db.path().parent().unwrap().join(r.log.relative_path()).exists()));
    let info = rows.iter().filter(|r| r.emerge_info.is_some()).count();
    assert_eq!(info, 8, "emerge --info is kept");
}

#[test]
fn a_new_snapshot_adds_a_row_the_same_snapshot_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let db_path = tmp.path().join("results.sqlite");
    let (path, job) = job_archive(tmp.path(), "r.tar.gz", "app-misc/a-1", Status::Success);
    let (file, wu) = (path.to_str().unwrap(), job.job_id.as_str());
    assert_eq!(run(&["--snapshot", "git:aaa", wu, file], &db_path).0, 0);
    let (code, stderr) = run(&["--snapshot", "git:aaa", wu, file], &db_path);
    assert_eq!((code, stderr), (0, format!("gah-assimilator: {wu}: already stored\n")));
    let out =
        gah_util::process::command(BIN).args([wu, file]).env("GAH_RESULTS_DB", &db_path).env("GAH_SNAPSHOT", "git:bbb").output().unwrap();
    assert!(out.status.success());
    let db = Database::open(&db_path).unwrap();
    let labels: Vec<String> = db.snapshots().unwrap().into_iter().map(|s| s.label).collect();
    assert_eq!(labels, ["unrecorded", "git:aaa", "git:bbb"]);
    let snapshots: Vec<SnapshotId> = db.outcomes(&Filter::default(), Page::ALL).unwrap().iter().map(|r| r.snapshot).collect();
    assert_eq!(snapshots, [SnapshotId(1), SnapshotId(2)]);
}

/// `gah-assimilate` as BOINC's daemon runs it: from `tmp_<host>/` of the project, with
/// nothing but the environment `env`.
fn assimilate_daemon(project: &Path, args: &[&str], env: &[(&str, &Path)]) -> (i32, String) {
    let cwd = project.join("tmp_host");
    std::fs::create_dir_all(&cwd).unwrap();
    let mut cmd = gah_util::process::command(env!("CARGO_BIN_EXE_gah-assimilate"));
    cmd.args(args).current_dir(&cwd).env_remove("GAH_RESULTS_DB").env_remove("GAH_SNAPSHOT").env_remove("GAH_QUEUE_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.code().expect("exited"), String::from_utf8(out.stderr).unwrap())
}

/// Issue 9, item 6: the daemon's database comes from the project (`../gah.conf` from
/// `tmp_<host>/`) before the environment, and with neither it refuses, creating nothing.
#[test]
fn the_daemon_reads_the_project_file_and_refuses_without_a_database() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    let (path, job) = job_archive(tmp.path(), "up", "app-misc/a-1", Status::Success);
    let upload = tmp.path().join(format!("{}_0_r1_0", gah_core::job::wu_name(&job.job_id, 1)));
    std::fs::rename(&path, &upload).unwrap();
    let file = upload.to_str().unwrap();

    let (code, stderr) = assimilate_daemon(&project, &["42", file], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("no results database configured") && stderr.contains("../gah.conf") && stderr.contains("GAH_RESULTS_DB"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_dir(project.join("tmp_host")).unwrap().count(), 0, "nothing created under tmp_<host>/");

    std::fs::write(project.join("gah.conf"), "results_db = results/results.sqlite\nsnapshot = git:abc\n").unwrap();
    let env_db = tmp.path().join("env.sqlite");
    let (code, stderr) = assimilate_daemon(&project, &["42", file], &[("GAH_RESULTS_DB", &env_db)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!env_db.exists(), "the project file wins over the environment");
    let db = Database::open(&project.join("results/results.sqlite")).unwrap();
    assert_eq!(totals(&db).outcomes, 1);
    assert_eq!(db.snapshots().unwrap().last().unwrap().label, "git:abc");
}

/// Issue 9, item 6: a problem with one result is recorded and the daemon goes on (exit 0);
/// only a transient one (the database busy past its timeout) exits nonzero.
#[test]
fn one_results_problem_never_stops_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    let db_path = tmp.path().join("r/results.sqlite");
    let env = [("GAH_RESULTS_DB", db_path.as_path())];
    // A canonical upload that is not there.
    let missing = tmp.path().join("wu_a_1_r5_0");
    let (code, stderr) = assimilate_daemon(&project, &["42", missing.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("wu_a: quarantined"), "{stderr}");
    // An upload whose name names no workunit.
    let (path, _) = archive(tmp.path(), "outcome.tar.gz", Status::Success, b"log\n");
    let (code, stderr) = assimilate_daemon(&project, &["43", path.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("wu#43: quarantined") && stderr.contains("names no workunit"), "{stderr}");
    // A hostile archive.
    let bad = tmp.path().join("wu_b_1_r5_0");
    std::fs::write(&bad, b"not a gzip").unwrap();
    let (code, stderr) = assimilate_daemon(&project, &["44", bad.to_str().unwrap()], &env);
    assert_eq!(code, 0, "{stderr}");
    let db = Database::open(&db_path).unwrap();
    let mut reasons: Vec<String> = db.quarantined(Page::ALL).unwrap().into_iter().map(|q| q.wu_name).collect();
    reasons.sort();
    assert_eq!(reasons, ["wu#43", "wu_a", "wu_b"]);
}

/// Issue 9, item 10: BOINC starts its daemons together, and a nonzero exit stops one. Many
/// assimilators started at once on a database that does not exist yet all succeed.
#[test]
fn assimilators_started_together_on_a_fresh_database_all_succeed() {
    const N: usize = 40;
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = archive(tmp.path(), "r.tar.gz", Status::Success, b"log\n");
    let job_id = Job::new("gah", "app-arch/bzip2-1.0.8", UseAssignment::default(), Compiler::Clang, 60).job_id;
    let db_path = tmp.path().join("fresh/results.sqlite");
    let children: Vec<_> = (0..N)
        .map(|i| {
            let mut cmd = gah_util::process::command(BIN);
            // Half store the same upload, half record infrastructure failures: both paths
            // create and migrate the database.
            if i % 2 == 0 {
                cmd.args([job_id.as_str(), path.to_str().unwrap()]);
            } else {
                cmd.args(["--error", "1", &format!("wu_{i}"), "1", "0"]);
            }
            cmd.env("GAH_RESULTS_DB", &db_path).stderr(std::process::Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let failed: Vec<String> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .filter(|o| !o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    assert!(failed.is_empty(), "{} of {N} failed, e.g. {:?}", failed.len(), failed.first());
    let db = Database::open(&db_path).unwrap();
    assert_eq!((totals(&db).outcomes, totals(&db).infra_failures), (1, N as u64 / 2));
}

/// Issue 9, item 11: an upload that answers another job than the workunit's is quarantined,
/// in the single and the batch path; one for a suffixed workunit name of its job is stored.
#[test]
fn an_upload_for_another_job_is_quarantined() {
    let tmp = tempfile::tempdir().unwrap();
    let db_path = tmp.path().join("results.sqlite");
    let (path, job) = job_archive(tmp.path(), "r.tar.gz", "app-misc/a-1", Status::Success);
    let other = Job::new("gah", "app-misc/b-1", UseAssignment::default(), Compiler::Gcc, 60).job_id;
    let (code, stderr) = run(&[&other, path.to_str().unwrap()], &db_path);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains(&format!("{other}: quarantined: ")) && stderr.contains("not for workunit"), "{stderr}");
    let list = tmp.path().join("list");
    std::fs::write(&list, format!("{other}_2 {p}\n{}_2 {p}\n", job.job_id, p = path.display())).unwrap();
    let (code, stderr) = run(&["--batch", list.to_str().unwrap()], &db_path);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("1 stored, 0 already stored, 1 quarantined"), "{stderr}");
    let db = Database::open(&db_path).unwrap();
    assert_eq!((totals(&db).outcomes, totals(&db).quarantined), (1, 2));
}
