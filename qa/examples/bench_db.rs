//! The benchmark's database: `bench-db generate OUT [--outcomes N] [--ebuilds E] [--snapshots S]`
//! writes a results database of N outcomes over E ebuilds in S tree snapshots (defaults:
//! 1,000,000 / 32,000 / 4), through gah-core's own write API, as the assimilator does;
//! `bench-db write DB --per-second R` then keeps adding outcomes at R a second (the
//! assimilator's load while `gah serve` is measured) until killed. Used by
//! `bench/serve-load.sh`; see docs/BENCHMARKS.md.
//!
//! The tree is synthetic but shaped like a sweep: each ebuild has a few USE configurations
//! × two compilers; about 90 % of cells succeed, the rest fail to build, fail tests, time out
//! or are blocked by one of a few hundred failing dependencies; between snapshots about 1 % of
//! cells change state. Logs are shared among cells (a few hundred distinct ones), as real logs'
//! storage is content-addressed.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gah_core::db::{Database, NewOutcome, SnapshotId};
use gah_core::job::{Compiler, Job, UseAssignment};
use gah_core::outcome::{Outcome, Status};
use gah_util::rng::SplitMix64 as Rng;

const FLAGS: [&str; 6] = ["ssl", "static-libs", "threads", "doc", "test", "jemalloc"];

fn cpv(ebuild: u64) -> String {
    format!("cat-{}/pkg{}-1.{}", ebuild % 160, ebuild, ebuild % 7)
}

fn use_of(config: u64) -> UseAssignment {
    UseAssignment(FLAGS.iter().enumerate().map(|(i, f)| ((*f).to_owned(), config >> i & 1 == 1)).collect())
}

/// The status of (ebuild, config, compiler) in `snapshot`: stable, with ~1 % flipping per
/// snapshot.
fn status(rng: &mut Rng, snapshot: u64) -> Status {
    let roll = rng.below(1000);
    let flip = rng.below(100) < snapshot.min(3);
    let s = match roll {
        0..=899 => Status::Success,
        900..=949 => Status::BuildFailed,
        950..=969 => Status::TestFailed,
        970..=989 => Status::DepsFailed,
        _ => Status::Timeout,
    };
    match (flip, s) {
        (true, Status::Success) => Status::BuildFailed,
        (true, _) => Status::Success,
        (false, s) => s,
    }
}

fn log_for(status: Status, variant: u64) -> Vec<u8> {
    let mut log = String::new();
    for i in 0..200 {
        log.push_str(&format!(">>> line {i} of a build (variant {variant})\n"));
    }
    match status {
        Status::BuildFailed => log.push_str("x.c:1:2: error: something\n * ERROR: cat-1/pkg-1::gentoo failed (compile phase):\n"),
        Status::TestFailed => log.push_str("FAIL: t_something\n"),
        Status::DepsFailed => log.push_str(&format!(" * ERROR: dev-libs/dep{}-1.0::gentoo failed (configure phase):\n", variant % 300)),
        _ => {}
    }
    log.into_bytes()
}

fn outcome_for(ebuild: u64, config: u64, compiler: Compiler, status: Status, rng: &mut Rng) -> Outcome {
    let job = Job::new("gentoo", &cpv(ebuild), use_of(config), compiler, 3600);
    let mut o = Outcome::for_job(&job, status);
    o.failed_phase = match status {
        Status::BuildFailed => Some("compile".into()),
        Status::TestFailed => Some("test".into()),
        Status::DepsFailed => Some("deps".into()),
        Status::Timeout => Some("compile".into()),
        _ => None,
    };
    o.test_ran = status != Status::BuildFailed;
    o.summary = format!("{status}");
    o.duration_secs = f64::from(u32::try_from(rng.below(3600)).unwrap_or(0)) + 30.0;
    o.backend = "vm".into();
    o.accelerator = "kvm".into();
    o
}

fn generate(out: PathBuf, outcomes: u64, ebuilds: u64, snapshots: u64) -> anyhow::Result<()> {
    let mut db = Database::open(&out)?;
    let per_snapshot = outcomes / snapshots;
    // Every ebuild gets `base` cells, the first `extra` one more: N outcomes exactly.
    let (base_cells, extra) = (per_snapshot / ebuilds, per_snapshot % ebuilds);
    let logs: Vec<(Status, Vec<Vec<u8>>)> = [Status::Success, Status::BuildFailed, Status::TestFailed, Status::DepsFailed, Status::Timeout]
        .into_iter()
        .map(|s| (s, (0..if s == Status::DepsFailed { 300 } else { 50 }).map(|v| log_for(s, v)).collect()))
        .collect();
    let info = b"Portage 3.0.66 (python 3.11.7-final-0, default/linux/amd64/23.0, gcc-14, glibc-2.40, 6.6.0 x86_64)\n".to_vec();
    let started = Instant::now();
    let mut written = 0u64;
    for s in 0..snapshots {
        let snapshot = db.snapshot(&format!("git:bench-{s:04}"))?;
        let mut batch_data: Vec<(String, Outcome, usize, usize)> = Vec::new();
        let mut rng_state = Rng(0x5eed);
        for e in 0..ebuilds {
            for c in 0..base_cells + u64::from(e < extra) {
                let config = c / 2;
                let compiler = if c % 2 == 0 { Compiler::Gcc } else { Compiler::Clang };
                // The cell's own stream, so its status is stable across snapshots but for flips.
                let mut rng = Rng(rng_state.next_u64() ^ (e << 20) ^ c);
                let mut cell_rng = Rng((e << 20) ^ c);
                let base = status(&mut cell_rng, 0);
                let st = if rng.below(100) < 1 && s > 0 { status(&mut rng, s) } else { base };
                let o = outcome_for(e, config, compiler, st, &mut rng);
                let kind = logs.iter().position(|(k, _)| *k == st).unwrap_or(0);
                let variant = usize::try_from(rng.below(logs[kind].1.len() as u64)).unwrap_or(0);
                batch_data.push((format!("{}_{s}", o.job_id), o, kind, variant));
                if batch_data.len() == 5000 {
                    written += flush(&mut db, snapshot, &mut batch_data, &logs, &info)?;
                    if written.is_multiple_of(100_000) {
                        eprintln!("bench-db: {written} outcomes, {:.0} s", started.elapsed().as_secs_f64());
                    }
                }
            }
        }
        written += flush(&mut db, snapshot, &mut batch_data, &logs, &info)?;
        let _ = &mut rng_state;
    }
    eprintln!("bench-db: {written} outcomes in {:.0} s: {}", started.elapsed().as_secs_f64(), out.display());
    Ok(())
}

type Logs = Vec<(Status, Vec<Vec<u8>>)>;

fn flush(
    db: &mut Database,
    snapshot: SnapshotId,
    batch: &mut Vec<(String, Outcome, usize, usize)>,
    logs: &Logs,
    info: &[u8],
) -> anyhow::Result<u64> {
    let news: Vec<NewOutcome<'_>> = batch
        .iter()
        .map(|(wu, o, kind, variant)| NewOutcome {
            wu_name: wu,
            snapshot,
            outcome: o,
            log: &logs[*kind].1[*variant],
            emerge_info: Some(info),
        })
        .collect();
    db.record_outcomes(&news)?;
    let n = batch.len() as u64;
    batch.clear();
    Ok(n)
}

/// Adds outcomes to the latest snapshot at `per_second`, as an assimilator would, until killed.
fn write(db_path: PathBuf, per_second: u64) -> anyhow::Result<()> {
    let mut db = Database::open(&db_path)?;
    let snapshot = db.snapshot("git:bench-writer")?;
    let mut rng = Rng(42);
    let mut n = 0u64;
    let tick = Duration::from_millis(100);
    let per_tick = (per_second / 10).max(1);
    loop {
        let started = Instant::now();
        let mut outs = Vec::new();
        for _ in 0..per_tick {
            let e = rng.below(32_000);
            let st = status(&mut rng, 1);
            outs.push((format!("writer_{n}"), outcome_for(e, rng.below(8), Compiler::Gcc, st, &mut rng)));
            n += 1;
        }
        let log = log_for(Status::Success, n % 50);
        let news: Vec<NewOutcome<'_>> =
            outs.iter().map(|(wu, o)| NewOutcome { wu_name: wu, snapshot, outcome: o, log: &log, emerge_info: None }).collect();
        db.record_outcomes(&news)?;
        std::thread::sleep(tick.saturating_sub(started.elapsed()));
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str, default: u64| -> anyhow::Result<u64> {
        match args.iter().position(|a| a == name) {
            Some(i) => Ok(args.get(i + 1).ok_or_else(|| anyhow::anyhow!("{name} needs a value"))?.parse()?),
            None => Ok(default),
        }
    };
    match args.first().map(String::as_str) {
        Some("generate") => {
            let out = PathBuf::from(args.get(1).ok_or_else(|| anyhow::anyhow!("generate OUT"))?);
            generate(out, value("--outcomes", 1_000_000)?, value("--ebuilds", 32_000)?, value("--snapshots", 4)?)
        }
        Some("write") => write(PathBuf::from(args.get(1).ok_or_else(|| anyhow::anyhow!("write DB"))?), value("--per-second", 20)?),
        _ => anyhow::bail!(
            "usage: bench-db generate OUT [--outcomes N] [--ebuilds E] [--snapshots S]\n       bench-db write DB [--per-second R]"
        ),
    }
}
