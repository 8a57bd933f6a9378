//! The work generator end to end on the fixture overlay (`tests/fixtures/overlay`): plan,
//! queue, BOINC submission script, rotation across restarts.

mod common;

use std::path::{Path, PathBuf};

use gah_core::job::Compiler;
use gah_core::outcome::Status;
use gah_ebuild::{Budget, Profile, Severity, Strategy};
use gah_workgen::boinc::{create_work_command, write_submission, Submission, Workunit};
use gah_workgen::{load_repos, plan, record_result, Config, Plan, Queue, Zap};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/overlay")
}

fn config(strategy: Strategy) -> Config {
    Config {
        compilers: vec![Compiler::Gcc, Compiler::Clang],
        strategy,
        profile: Profile::amd64_linux(),
        timeout_secs: 1800,
        threads: 2,
        budget: Budget::default(),
    }
}

fn fixture_plan(strategy: Strategy) -> (Plan, Vec<gah_ebuild::Diagnostic>) {
    let (repos, mut diags) = load_repos(&[fixture()]);
    let p = plan(&repos, &config(strategy));
    diags.extend(p.diagnostics.iter().cloned());
    (p, diags)
}

/// Renders a plan (jobs as `repo cpv compiler use`, then diagnostics relative to the
/// fixture) and compares it with `expected`.
fn check(strategy: Strategy, expected: &str) {
    let (p, diags) = fixture_plan(strategy);
    let mut got = String::new();
    for j in &p.jobs {
        got.push_str(&format!("{} {} {} {}\n", j.repo, j.cpv, j.compiler, j.use_flags.to_package_use()));
    }
    let root = fixture();
    for d in &diags {
        let rel = d.path.strip_prefix(&root).unwrap_or(&d.path).display().to_string();
        got.push_str(&format!("{:?} {rel}:{:?} {}\n", d.severity, d.line, d.message));
    }
    assert_eq!(got.trim_end(), expected.trim());
}

#[test]
fn plan_exhaustive_on_fixture() {
    check(
        Strategy::Exhaustive { limit: 64 },
        "
fixture app-arch/bzip2-1.0.8 gcc -static-libs -verify
fixture app-arch/bzip2-1.0.8 clang -static-libs -verify
fixture app-arch/bzip2-1.0.8 gcc -static-libs verify
fixture app-arch/bzip2-1.0.8 clang -static-libs verify
fixture app-arch/bzip2-1.0.8 gcc static-libs -verify
fixture app-arch/bzip2-1.0.8 clang static-libs -verify
fixture app-arch/bzip2-1.0.8 gcc static-libs verify
fixture app-arch/bzip2-1.0.8 clang static-libs verify
fixture dev-libs/jemalloc-5.3.0 gcc -debug -prof -prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 clang -debug -prof -prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 gcc -debug prof -prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 clang -debug prof -prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 gcc -debug prof prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 clang -debug prof prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 gcc debug -prof -prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 clang debug -prof -prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 gcc debug prof -prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 clang debug prof -prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 gcc debug prof prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 clang debug prof prof-libunwind stats test
Error metadata/md5-cache/sys-libs/broken-1:Some(3) REQUIRED_USE: at byte 8: unclosed `(` opened at byte 3
Warning metadata/md5-cache/sys-libs/impossible-2:None no valid configuration (REQUIRED_USE cannot be satisfied)
",
    );
}

#[test]
fn plan_pairwise_on_fixture() {
    // jemalloc: `test` is forced on by FEATURES=test (RESTRICT only when test is off), so
    // `stats` is pinned on by `test? ( stats )`; prof-libunwind needs prof.
    check(
        Strategy::Covering { t: 2, seed: 0 },
        "
fixture app-arch/bzip2-1.0.8 gcc static-libs -verify
fixture app-arch/bzip2-1.0.8 clang static-libs -verify
fixture app-arch/bzip2-1.0.8 gcc static-libs verify
fixture app-arch/bzip2-1.0.8 clang static-libs verify
fixture app-arch/bzip2-1.0.8 gcc -static-libs -verify
fixture app-arch/bzip2-1.0.8 clang -static-libs -verify
fixture app-arch/bzip2-1.0.8 gcc -static-libs verify
fixture app-arch/bzip2-1.0.8 clang -static-libs verify
fixture dev-libs/jemalloc-5.3.0 gcc -debug -prof -prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 clang -debug -prof -prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 gcc debug prof prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 clang debug prof prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 gcc debug -prof -prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 clang debug -prof -prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 gcc -debug prof -prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 clang -debug prof -prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 gcc -debug prof prof-libunwind stats test
fixture dev-libs/jemalloc-5.3.0 clang -debug prof prof-libunwind stats test
Error metadata/md5-cache/sys-libs/broken-1:Some(3) REQUIRED_USE: at byte 8: unclosed `(` opened at byte 3
Warning metadata/md5-cache/sys-libs/impossible-2:None no valid configuration (REQUIRED_USE cannot be satisfied)
",
    );
}

#[test]
fn generate_writes_each_job_once_and_a_submission_script() {
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("queue");
    let (p, _) = fixture_plan(Strategy::Exhaustive { limit: 64 });
    let mut q = Queue::open(&qdir).unwrap();
    let first = q.add(&p).unwrap();
    assert_eq!((first.added, first.existing, first.changed), (20, 0, 0));
    let again = q.add(&p).unwrap();
    assert_eq!((again.added, again.existing, again.changed), (0, 20, 0));

    // Every job file is the gah-core job.json of its id, and nothing else is in pending/.
    let files: Vec<_> = std::fs::read_dir(qdir.join("pending")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 20);
    for job in &p.jobs {
        let bytes = std::fs::read(q.job_path(&job.job_id)).unwrap();
        assert_eq!(&gah_core::job::Job::from_json(&bytes).unwrap(), job);
    }

    let order = q.reserve(&q.next(usize::MAX).unwrap()).unwrap();
    let sub = Submission { data: Some(common::published_plane(dir.path())), ..Submission::standard() };
    let script = write_submission(&q, &order, &sub, None).unwrap();
    let text = std::fs::read_to_string(&script).unwrap();
    assert_eq!(text.matches("bin/create_work --appname").count(), 20);
    assert_eq!(text.matches("stage '").count(), 20);
    for needle in ["bin/dir_hier_path", "templates/gah_in", "--min_quorum 2", "--target_nresults 2", "--delay_bound 259200"] {
        assert!(text.contains(needle), "{needle} missing from create_work.sh");
    }
    assert_eq!(std::fs::read_to_string(qdir.join("templates/gah_in")).unwrap(), gah_workgen::boinc::INPUT_TEMPLATE);
    // The script is valid sh.
    let status = gah_util::process::command("sh").arg("-n").arg(&script).status().unwrap();
    assert!(status.success());

    let wu = Workunit { name: gah_core::job::wu_name(&p.jobs[0].job_id, 7), job: p.jobs[0].clone() };
    let cmd = create_work_command(&wu, &Submission::standard());
    let expected = format!(
        "bin/create_work --appname 'gah' --wu_name '{id}_7' --wu_template templates/gah_in --result_template templates/gah_out \
--rsc_fpops_est 2.25e12 --rsc_fpops_bound 3.6e13 --rsc_memory_bound 4e9 --rsc_disk_bound 1e10 --delay_bound 259200 \
--min_quorum 2 --target_nresults 2 --max_error_results 4 --max_total_results 8 --max_success_results 4 '{id}_7.json' '{id}_7.data.json'",
        id = p.jobs[0].job_id
    );
    assert_eq!(cmd, expected);
}

#[test]
fn submission_script_runs_against_a_fake_project_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("queue");
    let proj = dir.path().join("project");
    std::fs::create_dir_all(proj.join("bin")).unwrap();
    std::fs::create_dir_all(proj.join("download")).unwrap();
    // Stand-ins with the real tools' interfaces: dir_hier_path prints a path in the
    // download hierarchy; create_work logs its arguments.
    let fake = |name: &str, body: &str| {
        let p = proj.join("bin").join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    fake("dir_hier_path", "mkdir -p download/ab && echo \"$(pwd)/download/ab/$1\"");
    fake("create_work", "test -f templates/gah_in && echo \"$@\" >> create_work.log");
    let (p, _) = fixture_plan(Strategy::Exhaustive { limit: 64 });
    let mut q = Queue::open(&qdir).unwrap();
    q.add(&p).unwrap();
    let order = q.reserve(&q.next(usize::MAX).unwrap()).unwrap();
    // templates/gah_in's second file, the data.json, names a published repository.
    let plane = common::published_plane(dir.path());
    let sub = Submission { data: Some(plane), ..Submission::standard() };
    let script = write_submission(&q, &order, &sub, Some(&proj)).unwrap();
    for expected in ["20 submitted, 0 already submitted", "0 submitted, 20 already submitted"] {
        let out = gah_util::process::command("sh").arg(&script).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("create_work.sh: {expected}"));
    }
    let log = std::fs::read_to_string(proj.join("create_work.log")).unwrap();
    assert_eq!(log.lines().count(), 20);
    // Every workunit names its job file, then its data.json, in the template's order.
    assert!(log.lines().zip(&order).all(|(l, wu)| l.ends_with(&format!("{0}.json {0}.data.json", wu.name))), "{log}");
    // 20 job files and 20 data.json files, each staged.
    assert_eq!(std::fs::read_dir(proj.join("download/ab")).unwrap().count(), 40);
}

/// Issue 9, item 9: the rotation reads the results database (which only the assimilator
/// writes) past its watermark: each result counts once, however often the fold runs, and a
/// reopened queue resumes where it stopped.
#[test]
fn the_rotation_folds_each_stored_result_once() {
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("queue");
    let (p, _) = fixture_plan(Strategy::Exhaustive { limit: 64 });
    Queue::open(&qdir).unwrap().add(&p).unwrap();
    let (a, b) = (&p.jobs[0], &p.jobs[1]);
    let mut results = gah_core::db::Database::open(&dir.path().join("results.sqlite")).unwrap();
    let store = |db: &mut gah_core::db::Database, job: &gah_core::job::Job, n: u64, status: Status| {
        let outcome = gah_core::outcome::Outcome::for_job(job, status);
        db.record_outcome(&gah_core::job::wu_name(&job.job_id, n), &outcome, b"log").unwrap();
    };
    let failcount = |id: &str| Queue::open(&qdir).unwrap().cells(true).unwrap().into_iter().find(|c| c.job_id == id).unwrap();

    store(&mut results, a, 1, Status::BuildFailed);
    store(&mut results, b, 1, Status::Success);
    store(&mut results, a, 1, Status::BuildFailed); // redelivered: no new row
    let other = gah_core::job::Job::new("elsewhere", "x/y-1", Default::default(), gah_core::job::Compiler::Gcc, 60);
    store(&mut results, &other, 1, Status::BuildFailed);
    let folded = Queue::open(&qdir).unwrap().fold_results(&results).unwrap();
    assert_eq!((folded.counted, folded.unknown), (2, 1));
    assert_eq!(Queue::open(&qdir).unwrap().fold_results(&results).unwrap(), gah_workgen::Folded::default());
    assert_eq!((failcount(&a.job_id).failcount, failcount(&a.job_id).runs), (1, 1));
    assert_eq!((failcount(&b.job_id).runs, failcount(&b.job_id).last_status.as_deref()), (1, Some("success")));

    // Later results, and a whole-workunit failure (spurious: a run, no failcount).
    store(&mut results, a, 2, Status::TestFailed);
    results.record_infra_failure(&gah_core::job::wu_name(&a.job_id, 3), 8, 3, 0).unwrap();
    results.record_infra_failure("wu#9", 8, 9, 0).unwrap();
    let q = Queue::open(&qdir).unwrap();
    assert_eq!(q.fold_results(&results).unwrap(), gah_workgen::Folded { counted: 2, unknown: 1 });
    assert_eq!(q.fold_results(&results).unwrap(), gah_workgen::Folded::default());
    let cell = failcount(&a.job_id);
    assert_eq!((cell.failcount, cell.runs, cell.last_status.as_deref()), (2, 3, Some("infra_error")));
}

#[test]
fn rotation_failcounts_persist_and_zap_restores() {
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("queue");
    let (p, _) = fixture_plan(Strategy::Exhaustive { limit: 64 });
    Queue::open(&qdir).unwrap().add(&p).unwrap();
    let a = p.jobs[0].job_id.clone();
    let b = p.jobs[1].job_id.clone();

    // Three real failures take `a` out of rotation; a spurious one does not count; each call
    // reopens the queue, as the assimilator does.
    let fc = |s: Status, id: &str| record_result(&qdir, id, s).unwrap().after;
    assert_eq!(fc(Status::BuildFailed, &a), 1);
    assert_eq!(fc(Status::InfraError, &a), 1);
    assert_eq!(fc(Status::TestFailed, &a), 2);
    assert_eq!(fc(Status::Success, &b), 0);
    assert_eq!(fc(Status::DepsFailed, &a), 3);
    assert!(record_result(&qdir, "no-such-job", Status::Success).is_err());

    let q = Queue::open(&qdir).unwrap();
    let fails: Vec<(String, u32)> = q.fails().unwrap().into_iter().map(|c| (c.job_id, c.failcount)).collect();
    assert_eq!(fails, [(a.clone(), 3)]);
    let next: Vec<String> = q.cells(false).unwrap().into_iter().map(|c| c.job_id).collect();
    assert_eq!(next.len(), 19, "a is out of rotation");
    assert_eq!(next.last().unwrap(), &b, "never-tested cells come before tested ones");
    drop(q);

    // A success resets; zap by cat/pkg puts `a` back.
    let mut q = Queue::open(&qdir).unwrap();
    assert_eq!(q.zap(Zap::Matching(&["app-arch/bzip2".to_owned()])).unwrap(), 1);
    assert!(q.fails().unwrap().is_empty());
    assert_eq!(q.cells(false).unwrap().len(), 20);
    assert_eq!(fc(Status::BuildFailed, &a), 1);
    assert_eq!(fc(Status::Success, &a), 0);

    // A changed ebuild (new _md5_) goes to the front and loses its failcount.
    assert_eq!(fc(Status::BuildFailed, &b), 1);
    let mut changed = p.clone();
    for v in changed.ebuild_md5.values_mut() {
        v.push('x');
    }
    let stats = q.add(&changed).unwrap();
    assert_eq!(stats.changed, 20);
    let first = q.cells(false).unwrap();
    assert!(first[0].changed && first[1].changed, "tested cells of changed ebuilds first");
    assert!(q.fails().unwrap().is_empty());
}

#[test]
fn diagnostics_never_stop_the_run() {
    let (repos, diags) = load_repos(&[fixture(), PathBuf::from("/nonexistent/repo")]);
    assert_eq!(repos.len(), 2);
    assert_eq!(repos[0].ebuilds.len(), 3);
    assert!(repos[1].ebuilds.is_empty());
    let errors: Vec<String> = diags.iter().filter(|d| d.severity == Severity::Error).map(|d| d.message.clone()).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
}

/// Issue 9, item 5: BOINC never takes a workunit name twice, so each submission of a job
/// (again, or with a changed timeout) is a workunit of its own, named back to the same job.
#[test]
fn a_resubmission_or_a_new_timeout_is_a_new_workunit_of_the_same_job() {
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("queue");
    let (mut p, _) = fixture_plan(Strategy::Exhaustive { limit: 64 });
    let mut q = Queue::open(&qdir).unwrap();
    q.add(&p).unwrap();
    let job = p.jobs[0].clone();
    let first = q.reserve(std::slice::from_ref(&job)).unwrap();
    assert_eq!(first[0].name, format!("{}_1", job.job_id));

    // The timeout changes: the same job id, a new job file for the next submission.
    for j in &mut p.jobs {
        j.timeout_secs *= 2;
    }
    q.add(&p).unwrap();
    let reread = gah_core::job::Job::read(&q.job_path(&job.job_id)).unwrap();
    assert_eq!((reread.job_id.as_str(), reread.timeout_secs), (job.job_id.as_str(), job.timeout_secs * 2));
    let second = Queue::open(&qdir).unwrap().reserve(&[reread]).unwrap();
    assert_eq!(second[0].name, format!("{}_2", job.job_id));
    for wu in [&first[0], &second[0]] {
        assert_eq!(gah_core::job::job_id_of_wu(&wu.name), job.job_id);
    }
}
