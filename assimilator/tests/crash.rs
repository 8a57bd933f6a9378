//! Crash test: SIGKILL `gah-assimilator` at random points while it stores outcomes, re-run
//! it as BOINC would (a workunit counts as assimilated only after exit 0), then prove that
//! no outcome is lost and none is duplicated.
//!
//! Runs 40 outcomes by default; the full test (≥ 1,000 outcomes) is
//! `bench/assimilator-crash.sh`, i.e.
//!
//! ```text
//! GAH_CRASH_OUTCOMES=1000 cargo test --release -p gah-assimilator --test crash -- --nocapture
//! ```
//!
//! `GAH_CRASH_SEED` replays a run (the seed is printed). The second test does the same to
//! the batched path (`gah-assimilator --batch`): lists of workunits, each re-run until it
//! exits 0, with kills landing inside blob writes, syncs and commits.

#![allow(clippy::cast_possible_truncation)] // Seeds and kill points are random numbers cut to size on purpose.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use gah_core::db::{Database, Filter, Page};
use gah_core::job::{Compiler, Job, UseAssignment};
use gah_core::outcome::{Outcome, Status};

const BIN: &str = env!("CARGO_BIN_EXE_gah-assimilator");

use gah_util::rng::SplitMix64 as Rng;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name} must be an integer")))
}

/// Writes outcome `i`: a distinct job; logs shared by every seventh, to exercise the
/// content-addressed store.
fn make_outcome(dir: &Path, i: usize) -> (String, PathBuf, Outcome) {
    let mut flags = UseAssignment::default();
    flags.0.insert(format!("flag{}", i % 5), i & 1 == 0);
    let job = Job::new("gah", &format!("app-misc/crash{i}-1.{}", i % 10), flags, Compiler::ALL[i % 2], 60);
    let status = Status::ALL[i % Status::ALL.len()];
    let mut outcome = Outcome::for_job(&job, status);
    outcome.failed_phase = match status {
        Status::BuildFailed => Some("compile".into()),
        Status::TestFailed => Some("test".into()),
        Status::DepsFailed => Some("deps".into()),
        _ => None,
    };
    outcome.test_ran = status == Status::TestFailed;
    let log = format!(">>> log group {}\n{}", i % 7, "x".repeat(2000 + i % 7));
    let path = dir.join(format!("{i}.tar.gz"));
    gah_core::archive::write(std::fs::File::create(&path).unwrap(), &job, &outcome, log.as_bytes(), None).unwrap();
    (outcome.job_id.clone(), path, outcome)
}

fn assimilate(db: &Path, wu: &str, file: &Path) -> std::process::Child {
    gah_util::process::command(BIN).args(["--db", db.to_str().unwrap(), wu, file.to_str().unwrap()]).stderr(Stdio::null()).spawn().unwrap()
}

#[test]
fn sigkill_at_random_points_loses_and_duplicates_nothing() {
    let n = env_u64("GAH_CRASH_OUTCOMES").unwrap_or(40) as usize;
    let seed = env_u64("GAH_CRASH_SEED")
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let uploads = tmp.path().join("uploads");
    std::fs::create_dir(&uploads).unwrap();
    let db_path = tmp.path().join("results/results.sqlite");

    // How long one assimilation takes here, so kills land across its whole run.
    let calibration = tmp.path().join("calibration/results.sqlite");
    let mut took = Vec::new();
    for i in 0..5 {
        let (wu, file, _) = make_outcome(&uploads, 1_000_000 + i);
        let start = Instant::now();
        assert!(assimilate(&calibration, &wu, &file).wait().unwrap().success());
        took.push(start.elapsed());
    }
    took.sort();
    let typical = took[took.len() / 2];

    let outcomes: Vec<_> = (0..n).map(|i| make_outcome(&uploads, i)).collect();
    let (mut kills, mut runs, mut redeliveries) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    for (i, (wu, file, _)) in outcomes.iter().enumerate() {
        // BOINC re-runs the script until it exits 0.
        loop {
            runs += 1;
            let mut child = assimilate(&db_path, wu, file);
            let kill_after = Duration::from_micros(rng.below(typical.as_micros() as u64 * 3 / 2));
            std::thread::sleep(kill_after);
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                continue;
            }
            let status = child.wait().unwrap();
            assert!(status.success(), "{wu}: assimilator failed with {status} (seed {seed})");
            break;
        }
        // Now and then BOINC delivers an already-assimilated workunit again.
        if rng.below(10) == 0 {
            let (wu, file, _) = &outcomes[rng.below(i as u64 + 1) as usize];
            let mut child = assimilate(&db_path, wu, file);
            assert!(child.wait().unwrap().success());
            redeliveries += 1;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(leftovers(db_path.parent().unwrap()), Vec::<PathBuf>::new(), "seed {seed}");
    let (lost, duplicated, quarantined) = verify(&db_path, &outcomes);
    println!(
        "crash test: {n} outcomes, {runs} runs, {kills} SIGKILLs, {redeliveries} redeliveries, \
         kill window 0..{:?}, {:.1}s (seed {seed}): {lost} lost, {duplicated} duplicated, {quarantined} quarantined",
        typical * 3 / 2,
        elapsed.as_secs_f64()
    );
    assert_eq!((lost, duplicated, quarantined), (0, 0, 0), "seed {seed}");
    assert!(kills > 0 || n < 10, "no kill landed: the test proved nothing (seed {seed})");
}

/// Temporary files (`.NAME.tmp-PID-N`, see `gah_util::atomic`) anywhere under `dir`.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            found.extend(leftovers(&entry.path()));
        } else if entry.file_name().to_string_lossy().contains(".tmp-") {
            found.push(entry.path());
        }
    }
    found
}

/// Counts lost, duplicated and quarantined outcomes, after checking the SQLite file and that
/// every stored row's log is whole.
fn verify(db_path: &Path, outcomes: &[(String, PathBuf, Outcome)]) -> (usize, i64, i64) {
    let n = outcomes.len();
    let db = Database::open(db_path).unwrap();
    assert_eq!(db.integrity_check().unwrap(), "ok");
    let rows = db.outcomes(&Filter::default(), Page::ALL).unwrap();
    let mut stored: BTreeMap<String, (String, Status, String)> = BTreeMap::new();
    for r in &rows {
        stored.insert(r.wu_name.clone(), (r.job_id.clone(), r.status, r.log.sha256().to_owned()));
    }
    let total = rows.len() as i64;
    let distinct_jobs = rows.iter().map(|r| r.job_id.as_str()).collect::<std::collections::BTreeSet<_>>().len() as i64;
    let mut lost = 0;
    for (wu, _, outcome) in outcomes {
        match stored.get(wu) {
            None => lost += 1,
            Some((job_id, status, log_sha)) => {
                assert_eq!((job_id, *status), (&outcome.job_id, outcome.status), "{wu}");
                let log = db.path().parent().unwrap().join(Database::log_relative_path(log_sha));
                let mut text = Vec::new();
                flate2::read::GzDecoder::new(std::fs::File::open(&log).unwrap()).read_to_end(&mut text).unwrap();
                assert_eq!(&gah_core::archive::sha256_hex(&text), log_sha, "{wu}: log store");
            }
        }
    }
    let duplicated = (total - n as i64) + (total - distinct_jobs);
    let quarantined = db.totals().unwrap().quarantined as i64;
    (lost, duplicated, quarantined)
}

#[test]
fn sigkill_during_batches_loses_and_duplicates_nothing() {
    let n = env_u64("GAH_CRASH_OUTCOMES").unwrap_or(40) as usize;
    let seed = env_u64("GAH_CRASH_SEED")
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1)
        ^ 0x5eed;
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let uploads = tmp.path().join("uploads");
    std::fs::create_dir(&uploads).unwrap();
    let db_path = tmp.path().join("results/results.sqlite");
    let outcomes: Vec<_> = (0..n).map(|i| make_outcome(&uploads, i)).collect();
    // Lists of up to 10 workunits, stored 3 per transaction, so a list spans several
    // batches and a kill can land between two of them.
    let lists: Vec<PathBuf> = outcomes
        .chunks(10)
        .enumerate()
        .map(|(k, chunk)| {
            let path = tmp.path().join(format!("list{k}"));
            std::fs::write(&path, chunk.iter().map(|(wu, f, _)| format!("{wu} {}\n", f.display())).collect::<String>()).unwrap();
            path
        })
        .collect();
    let batch = |list: &Path| {
        gah_util::process::command(BIN)
            .args(["--db", db_path.to_str().unwrap(), "--batch", list.to_str().unwrap(), "--batch-size", "3", "--snapshot", "crash"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // How long one list takes here: the fastest of three lists stored into a scratch
    // database (the first run also creates the database, which later runs do not).
    let calibration = tmp.path().join("calibration/results.sqlite");
    let typical = lists
        .iter()
        .take(3)
        .map(|list| {
            let start = Instant::now();
            let status = gah_util::process::command(BIN)
                .args(["--db", calibration.to_str().unwrap(), "--batch", list.to_str().unwrap(), "--batch-size", "3"])
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
            start.elapsed()
        })
        .min()
        .unwrap();

    let (mut kills, mut runs) = (0u64, 0u64);
    let started = Instant::now();
    for list in &lists {
        for attempt in 0.. {
            runs += 1;
            let mut child = batch(list);
            std::thread::sleep(Duration::from_micros(rng.below(typical.as_micros() as u64 * 6 / 5)));
            // After eight kills in a row the run is let finish, so a slow machine still ends.
            if attempt < 8 && child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                continue;
            }
            assert!(child.wait().unwrap().success(), "{} (seed {seed})", list.display());
            break;
        }
    }
    // Every list once more, as a redelivery of everything: nothing may change.
    for list in &lists {
        assert!(batch(list).wait().unwrap().success());
    }
    // Every kill left its temporary files; each later start removed those of dead runs.
    assert_eq!(leftovers(db_path.parent().unwrap()), Vec::<PathBuf>::new(), "seed {seed}");
    let (lost, duplicated, quarantined) = verify(&db_path, &outcomes);
    println!(
        "batch crash test: {n} outcomes in {} lists, {runs} runs, {kills} SIGKILLs, kill window 0..{:?}, {:.1}s \
         (seed {seed}): {lost} lost, {duplicated} duplicated, {quarantined} quarantined",
        lists.len(),
        typical * 6 / 5,
        started.elapsed().as_secs_f64()
    );
    assert_eq!((lost, duplicated, quarantined), (0, 0, 0), "seed {seed}");
    assert!(kills > 0 || n < 10, "no kill landed: the test proved nothing (seed {seed})");
}
