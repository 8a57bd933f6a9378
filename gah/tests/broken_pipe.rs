//! `gah results | head -1`: a reader that stops reading ends `gah results` quietly, exit 0
//! and nothing on stderr, as ripgrep does (issue 10), for text and JSON lines alike.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use gah_core::db::{Database, NewOutcome, NO_SNAPSHOT};
use gah_core::job::{Compiler, Job, UseAssignment};
use gah_core::outcome::{Outcome, Status};

/// A database with enough rows that its listing overflows a pipe's buffer many times over.
fn fixture(dir: &Path) -> PathBuf {
    let path = dir.join("results.sqlite");
    let mut db = Database::open(&path).unwrap();
    let outcomes: Vec<(String, Outcome)> = (0..3000)
        .map(|i| {
            let flags = UseAssignment([(format!("flag{i}"), i % 2 == 0)].into_iter().collect());
            let job = Job::new("gentoo", &format!("app-misc/pkg{}-1.{i}", i % 50), flags, Compiler::ALL[i % 2], 60);
            (format!("{}_1", job.job_id), Outcome::for_job(&job, if i % 7 == 0 { Status::BuildFailed } else { Status::Success }))
        })
        .collect();
    let batch: Vec<NewOutcome<'_>> = outcomes
        .iter()
        .map(|(wu, o)| NewOutcome { wu_name: wu, snapshot: NO_SNAPSHOT, outcome: o, log: b"log", emerge_info: None })
        .collect();
    db.record_outcomes(&batch).unwrap();
    path
}

/// Runs `gah results ARGS --db DB`, reads one line of its stdout, closes the pipe, and
/// returns its exit code and stderr.
fn read_one_line_and_close(db: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = gah_util::process::command(env!("CARGO_BIN_EXE_gah"))
        .arg("results")
        .args(args)
        .arg("--db")
        .arg(db)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gah");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).unwrap();
    // The reader is dropped here: the pipe's read end is closed while gah still writes.
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned(), first)
}

#[test]
fn a_closed_pipe_ends_gah_results_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path());
    for args in [&[][..], &["--json"], &["list"], &["--json", "fails"], &["matrix", "app-misc/pkg1"]] {
        let (code, stderr, first) = read_one_line_and_close(&db, args);
        assert!(!first.is_empty(), "{args:?}: no output at all; stderr:\n{stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}: stderr:\n{stderr}");
        assert_eq!((code, stderr.as_str()), (Some(0), ""), "{args:?}");
    }
}
