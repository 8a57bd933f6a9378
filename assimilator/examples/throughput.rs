//! Throughput of validation plus assimilation on generated outcome archives (issue 4's
//! `bench/`): `cargo run --release -p gah-assimilator --example throughput -- [N] [THREADS]`
//! (defaults 10000 archives, 2 validator threads). `bench/assimilator-throughput.sh` runs it.
//!
//! Measures, in process and from files on disk: `gah_validator::init` on every archive
//! (THREADS workers), `gah_validator::compare` on pairs, the single-outcome assimilator path
//! (`gah_assimilator::assimilate`: three fsyncs per outcome, on the first SINGLE archives,
//! default 2000), the batched path (`gah_assimilator::assimilate_batch`: THREADS readers,
//! 500 outcomes per transaction, two syncfs per batch) on all of them, each into a fresh
//! results database, and finally the `gah-assimilator --batch` binary on the same files.
//!
//! Every archive has its own ~60 kB build log and an `emerge --info`, so every outcome
//! writes new blobs to the log store (no deduplication flatters the numbers).

use std::path::PathBuf;
use std::time::Instant;

use gah_core::db::Database;
use gah_core::job::{Compiler, Job, UseAssignment};
use gah_core::outcome::{InstalledFile, Outcome, Status};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse().expect("N")).unwrap_or(10_000);
    let threads: usize = args.next().map(|a| a.parse().expect("THREADS")).unwrap_or(2);
    let single: usize = args.next().map(|a| a.parse().expect("SINGLE")).unwrap_or(2000).min(n);
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
            // A realistic log: ~60 kB of compiler lines, distinct per outcome.
            let log: String = (0..600).map(|l| format!("x86_64-pc-linux-gnu-gcc -O2 -c src/file{l}.c -o file{l}.o # job {i}\n")).collect();
            let info = format!("Portage 3.0.66 (python 3.12, default/linux/amd64/23.0, gcc-14, glibc-2.40)\nhost {i}\n{}", "CFLAGS=\"-O2 -pipe\"\n".repeat(40));
            let path = dir.join(format!("wu_{i}.tar.gz"));
            gah_core::archive::write(std::fs::File::create(&path).unwrap(), &job, &o, log.as_bytes(), Some(info.as_bytes())).unwrap();
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

    let mut db = Database::open(&tmp.path().join("single/results.sqlite")).unwrap();
    let t = Instant::now();
    for (i, f) in files.iter().take(single).enumerate() {
        let done = gah_assimilator::assimilate(&mut db, &format!("wu_{i}"), f).unwrap();
        assert!(matches!(done, gah_assimilator::Assimilated::Stored(_)));
    }
    let single_rate = single as f64 / t.elapsed().as_secs_f64();
    println!("assimilator single: {single_rate:>7.0} results/s (first {single}; 1 writer, 3 fsyncs per outcome)");

    let items: Vec<(String, PathBuf)> = files.iter().enumerate().map(|(i, f)| (format!("wu_{i}"), f.clone())).collect();
    let mut db = Database::open(&tmp.path().join("batch/results.sqlite")).unwrap();
    let t = Instant::now();
    let done = gah_assimilator::assimilate_batch(&mut db, 0, &items, threads, 500);
    let assim_rate = n as f64 / t.elapsed().as_secs_f64();
    assert!(done.iter().all(|d| matches!(d.result, Ok(gah_assimilator::Assimilated::Stored(_)))));
    let rows: i64 = db.connection().query_row("SELECT count(*) FROM outcomes", [], |r| r.get(0)).unwrap();
    assert_eq!(rows as usize, n);
    println!("assimilator batch:  {assim_rate:>7.0} results/s ({threads} reader threads, 500 per transaction, 2 syncfs per batch)");

    // The binary, as an administrator would run it on a list of finished workunits.
    let list = tmp.path().join("list");
    std::fs::write(&list, items.iter().map(|(wu, f)| format!("{wu} {}\n", f.display())).collect::<String>()).unwrap();
    let bin = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("gah-assimilator");
    if bin.exists() {
        let t = Instant::now();
        let out = std::process::Command::new(&bin)
            .args(["--db", tmp.path().join("bin/results.sqlite").to_str().unwrap(), "--batch", list.to_str().unwrap()])
            .args(["--threads", &threads.to_string(), "--snapshot", "bench"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        println!("gah-assimilator --batch: {:>4.0} results/s (whole process)", n as f64 / t.elapsed().as_secs_f64());
    }

    // A workunit of two replicas costs two inits, one compare and one assimilation.
    let per_wu = 2.0 / init_rate + 1.0 / compare_rate + 1.0 / assim_rate;
    println!("pipeline (2 replicas per workunit, stages in series, batched assimilator): {:.0} results/s", 2.0 / per_wu);
    let per_wu = 2.0 / init_rate + 1.0 / compare_rate + 1.0 / single_rate;
    println!("pipeline (same, single-outcome assimilator): {:.0} results/s", 2.0 / per_wu);
}
