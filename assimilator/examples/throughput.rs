//! Throughput of validation plus assimilation on generated outcome archives (issue 4's
//! `bench/`): `cargo run --release -p gah-assimilator --example throughput -- [N] [THREADS]`
//! (defaults 10000 archives, 2 validator threads). `bench/assimilator-throughput.sh` runs it.
//!
//! Measures, in process and from files on disk: `gah_validator::init` on every archive
//! (THREADS workers), `gah_validator::compare` on pairs, and `gah_assimilator::assimilate`
//! into a fresh results database (one writer, one durable transaction per outcome).

use std::path::PathBuf;
use std::time::Instant;

use gah_core::db::Database;
use gah_core::job::{Compiler, Job, UseAssignment};
use gah_core::outcome::{InstalledFile, Outcome, Status};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse().expect("N")).unwrap_or(10_000);
    let threads: usize = args.next().map(|a| a.parse().expect("THREADS")).unwrap_or(2);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("uploads");
    std::fs::create_dir(&dir).unwrap();

    let t = Instant::now();
    let files: Vec<PathBuf> = (0..n)
        .map(|i| {
            let job = Job::new("gah", &format!("app-misc/bench{}-1.{}", i / 8, i % 8), UseAssignment::default(), Compiler::ALL[i % 2], 3600);
            let status = if i % 10 == 0 { Status::BuildFailed } else { Status::Success };
            let mut o = Outcome::for_job(&job, status);
            o.failed_phase = (status == Status::BuildFailed).then(|| "compile".into());
            o.test_ran = status == Status::Success;
            o.installed_files = (0..20).map(|k| InstalledFile { path: format!("/usr/lib64/libbench{k}.so"), sha256: format!("{k:064x}") }).collect();
            // A realistic log: ~60 kB of compiler lines, a tenth of them shared.
            let log: String = (0..600).map(|l| format!("x86_64-pc-linux-gnu-gcc -O2 -c src/file{l}.c -o file{l}.o # {}\n", i % 10)).collect();
            let path = dir.join(format!("wu_{i}.tar.gz"));
            gah_core::archive::write(std::fs::File::create(&path).unwrap(), &job, &o, log.as_bytes(), None).unwrap();
            path
        })
        .collect();
    let bytes: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    println!("generated {n} archives ({} kB each on average) in {:.1}s", bytes / n as u64 / 1024, t.elapsed().as_secs_f64());

    let t = Instant::now();
    std::thread::scope(|s| {
        for chunk in files.chunks(n.div_ceil(threads)) {
            s.spawn(move || {
                for f in chunk {
                    let v = gah_validator::init(f, None);
                    assert!(v.is_valid(), "{v}");
                }
            });
        }
    });
    let init_rate = n as f64 / t.elapsed().as_secs_f64();
    println!("validator init:    {init_rate:>8.0} results/s ({threads} threads)");

    let t = Instant::now();
    std::thread::scope(|s| {
        for chunk in files.chunks(n.div_ceil(threads)) {
            s.spawn(move || {
                for f in chunk {
                    assert!(gah_validator::compare(f, f).is_valid());
                }
            });
        }
    });
    let compare_rate = n as f64 / t.elapsed().as_secs_f64();
    println!("validator compare: {compare_rate:>8.0} pairs/s ({threads} threads)");

    let mut db = Database::open(&tmp.path().join("results/results.sqlite")).unwrap();
    let t = Instant::now();
    for (i, f) in files.iter().enumerate() {
        let done = gah_assimilator::assimilate(&mut db, &format!("wu_{i}"), f).unwrap();
        assert!(matches!(done, gah_assimilator::Assimilated::Stored(_)));
    }
    let assim_rate = n as f64 / t.elapsed().as_secs_f64();
    println!("assimilator:       {assim_rate:>8.0} results/s (1 writer, fsync per outcome)");
    // A workunit of two replicas costs two inits, one compare and one assimilation.
    let per_wu = 2.0 / init_rate + 1.0 / compare_rate + 1.0 / assim_rate;
    println!("pipeline (2 replicas per workunit, stages in series): {:.0} results/s", 2.0 / per_wu);
}
