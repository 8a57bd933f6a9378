//! Issue 9, item 8 (and issue 10): `gah results` and `gah serve` on a BOINC server, which has
//! the results database and no gentoo@home checkout: `--db`, the project's `gah.conf` or
//! `$GAH_RESULTS_DB` alone is enough.

use std::path::Path;
use std::process::Output;

use gah_core::db::{Database, NewOutcome, NO_SNAPSHOT};
use gah_core::job::{Compiler, Job, UseAssignment};
use gah_core::outcome::{Outcome, Status};

/// Runs `gah ARGS` in `cwd` (outside any checkout), with `GAH_ROOT` unset and
/// `GAH_RESULTS_DB` set to `db` when given.
fn gah(cwd: &Path, db: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = gah_util::process::command(env!("CARGO_BIN_EXE_gah"));
    cmd.args(args).current_dir(cwd).env_remove("GAH_ROOT").env_remove("GAH_RESULTS_DB");
    if let Some(db) = db {
        cmd.env("GAH_RESULTS_DB", db);
    }
    cmd.output().expect("run gah")
}

fn server_database(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("server/results.sqlite");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut db = Database::open(&path).unwrap();
    let job = Job::new("gentoo", "app-arch/bzip2-1.0.8", UseAssignment(Default::default()), Compiler::Gcc, 60);
    let outcome = Outcome::for_job(&job, Status::BuildFailed);
    let wu = format!("{}_1", job.job_id);
    db.record(&NewOutcome { wu_name: &wu, snapshot: NO_SNAPSHOT, outcome: &outcome, log: b"error", emerge_info: None }).unwrap();
    path
}

#[test]
fn results_reads_gah_results_db_outside_a_checkout() {
    let dir = tempfile::tempdir().unwrap();
    let db = server_database(dir.path());
    let out = gah(dir.path(), Some(&db), &["results", "--json", "fails"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gah results failed: {stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("app-arch/bzip2"), "{stderr}");
}

#[test]
fn results_reads_the_db_option_outside_a_checkout() {
    let dir = tempfile::tempdir().unwrap();
    let db = server_database(dir.path());
    let out = gah(dir.path(), None, &["results", "--db", db.to_str().unwrap()]);
    assert!(out.status.success(), "gah results --db failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("app-arch/bzip2-1.0.8"));
}

#[test]
fn a_missing_database_is_named_and_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nothing-here.sqlite");
    let out = gah(dir.path(), Some(&db), &["results"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no results database at"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!db.exists());
}

#[test]
fn without_a_database_path_outside_a_checkout_gah_results_says_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let out = gah(dir.path(), None, &["results"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("GAH_ROOT"));
}

#[test]
fn results_reads_the_projects_gah_conf_from_bin() {
    // `bin/gah results` run in a BOINC project (or its tmp_<host>/): the project's gah.conf
    // names the database, relative to itself, as `gah deploy` writes it.
    let dir = tempfile::tempdir().unwrap();
    server_database(dir.path());
    std::fs::write(dir.path().join("gah.conf"), "results_db = server/results.sqlite\n").unwrap();
    std::fs::create_dir_all(dir.path().join("tmp_host")).unwrap();
    for cwd in [dir.path().to_path_buf(), dir.path().join("tmp_host")] {
        let out = gah(&cwd, None, &["results"]);
        assert!(out.status.success(), "gah results in {} failed: {}", cwd.display(), String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("app-arch/bzip2-1.0.8"));
    }
}

#[test]
fn serve_answers_with_gah_results_db_alone() {
    // `gah serve` on a server: no checkout, the database named by the environment alone.
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let db = server_database(dir.path());
    let mut cmd = gah_util::process::command(env!("CARGO_BIN_EXE_gah"));
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("GAH_ROOT")
        .env("GAH_RESULTS_DB", &db)
        .stdout(std::process::Stdio::piped());
    let mut server = gah_util::process::KillOnDrop::spawn(&mut cmd).unwrap();
    let mut line = String::new();
    BufReader::new(server.child().stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.strip_prefix("gah serve: http://").unwrap_or_else(|| panic!("no address in {line:?}"));
    let addr = url.split('/').next().unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET /api/fails HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("app-arch/bzip2-1.0.8"), "{answer}");
}
