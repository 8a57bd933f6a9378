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
//! Each stage reports its wall-clock rate and, because this machine is shared, its rate per
//! CPU-second (user + system time of this process, or of the child for the binary): the
//! latter times 2 is what two dedicated cores would do when the stage is CPU-bound.
//!
//! Every archive has its own ~60 kB build log and an `emerge --info`, so every outcome
//! writes new blobs to the log store (no deduplication flatters the numbers).

#![allow(clippy::print_stdout, clippy::print_stderr)] // An example reports on its terminal.

use std::path::{Path, PathBuf};
use std::time::Instant;

use gah_core::db::Database;
use gah_core::job::{Compiler, Job, UseAssignment};
use gah_core::outcome::{InstalledFile, Outcome, Status};

/// Wall clock and CPU time (this process's, or its children's) since `start`.
struct Meter {
    wall: Instant,
    cpu: f64,
    children: bool,
}

impl Meter {
    fn start(children: bool) -> Meter {
        Meter { wall: Instant::now(), cpu: cpu_secs(children), children }
    }

    /// `rate/s wall, rate per CPU-second`.
    fn rates(&self, n: usize) -> (f64, f64) {
        let wall = self.wall.elapsed().as_secs_f64();
        let cpu = (cpu_secs(self.children) - self.cpu).max(1e-3);
        (n as f64 / wall, n as f64 / cpu)
    }
}

/// User + system seconds from /proc/self/stat (fields 14-15, or 16-17 for reaped
/// children), in clock ticks of 100 Hz (Linux's USER_HZ on x86).
fn cpu_secs(children: bool) -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    // After the `(comm)` field, field 14 of the whole line is index 11 here.
    let at = if children { 13 } else { 11 };
    let ticks: f64 = fields.get(at..at + 2).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

fn report(what: &str, (wall, per_cpu): (f64, f64), how: &str) {
    println!("{what:<26} {wall:>7.0} results/s wall, {per_cpu:>7.0} per CPU-second ({how})");
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

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
            let job =
                Job::new("gah", &format!("app-misc/bench{}-1.{}", i / 8, i % 8), UseAssignment::default(), Compiler::ALL[i % 2], 3600);
            let status = if i % 10 == 0 { Status::BuildFailed } else { Status::Success };
            let mut o = Outcome::for_job(&job, status);
            o.failed_phase = (status == Status::BuildFailed).then(|| "compile".into());
            o.test_ran = status == Status::Success;
            o.installed_files =
                (0..20).map(|k| InstalledFile { path: format!("/usr/lib64/libbench{k}.so"), sha256: format!("{k:064x}") }).collect();
            // A realistic log: ~60 kB of compiler lines, distinct per outcome.
            let log: String = (0..600).map(|l| format!("x86_64-pc-linux-gnu-gcc -O2 -c src/file{l}.c -o file{l}.o # job {i}\n")).collect();
            let info = format!(
                "Portage 3.0.66 (python 3.12, default/linux/amd64/23.0, gcc-14, glibc-2.40)\nhost {i}\n{}",
                "CFLAGS=\"-O2 -pipe\"\n".repeat(40)
            );
            // Named after the job: the workunit name the assimilator checks it against.
            let path = dir.join(format!("{}.tar.gz", job.job_id));
            gah_core::archive::write(std::fs::File::create(&path).unwrap(), &job, &o, log.as_bytes(), Some(info.as_bytes())).unwrap();
            path
        })
        .collect();
    let bytes: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    println!("generated {n} archives ({} kB each on average) in {:.1}s", bytes / n as u64 / 1024, t.elapsed().as_secs_f64());
    println!("load average before: {}", load());

    let t = Meter::start(false);
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
    let init = t.rates(n);
    report("validator init", init, &format!("{threads} threads"));

    let t = Meter::start(false);
    std::thread::scope(|s| {
        for chunk in files.chunks(n.div_ceil(threads)) {
            s.spawn(move || {
                for f in chunk {
                    assert!(gah_validator::compare(f, f).is_valid());
                }
            });
        }
    });
    let compare = t.rates(n);
    report("validator compare", compare, &format!("pairs, {threads} threads"));

    let mut db = Database::open(&tmp.path().join("single/results.sqlite")).unwrap();
    let t = Meter::start(false);
    for f in files.iter().take(single) {
        let done = gah_assimilator::assimilate(&mut db, &wu_of(f), f).unwrap();
        assert!(matches!(done, gah_assimilator::Assimilated::Stored(_)));
    }
    let single_r = t.rates(single);
    report("assimilator, single", single_r, &format!("first {single}; 1 writer, 3 fsyncs per blob + WAL"));

    let items: Vec<(String, PathBuf)> = files.iter().map(|f| (wu_of(f), f.clone())).collect();
    let mut db = Database::open(&tmp.path().join("batch/results.sqlite")).unwrap();
    let t = Meter::start(false);
    let batching = gah_assimilator::Batching { threads, max_items: 500, max_bytes: 256 << 20 };
    let done = gah_assimilator::assimilate_batch(&mut db, gah_core::db::NO_SNAPSHOT, &items, batching);
    let batch = t.rates(n);
    assert!(done.iter().all(|d| matches!(d.result, Ok(gah_assimilator::Assimilated::Stored(_)))));
    let rows = db.totals().unwrap().outcomes;
    assert_eq!(usize::try_from(rows).ok(), Some(n));
    report("assimilator, batch", batch, &format!("{threads} reader threads, 500 per transaction, 2 syncfs per batch"));

    // The binary, as an administrator would run it on a list of finished workunits.
    let list = tmp.path().join("list");
    std::fs::write(&list, items.iter().map(|(wu, f)| format!("{wu} {}\n", f.display())).collect::<String>()).unwrap();
    let bin = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("gah-assimilator");
    if bin.exists() {
        let t = Meter::start(true);
        let out = gah_util::process::command(&bin)
            .args(["--db", tmp.path().join("bin/results.sqlite").to_str().unwrap(), "--batch", list.to_str().unwrap()])
            .args(["--threads", &threads.to_string(), "--snapshot", "bench"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        report("gah-assimilator --batch", t.rates(n), "the binary, whole process");
    }

    // A workunit of two replicas costs two inits, one compare and one assimilation; the
    // stages run in series here (a BOINC server runs them as concurrent daemons).
    let pipeline = |assim: f64, pick: fn((f64, f64)) -> f64| 2.0 / (2.0 / pick(init) + 1.0 / pick(compare) + 1.0 / assim);
    let (wall, cpu) = (|r: (f64, f64)| r.0, |r: (f64, f64)| r.1);
    println!(
        "pipeline, batched assimilator: {:.0} results/s wall; {:.0} per CPU-second, so {:.0} results/s on 2 dedicated cores",
        pipeline(batch.0, wall),
        pipeline(batch.1, cpu),
        2.0 * pipeline(batch.1, cpu)
    );
    println!("pipeline, single-outcome assimilator: {:.0} results/s wall", pipeline(single_r.0, wall));
    println!("load average after: {}", load());
}

/// The workunit name of an archive written by this example: its job id.
fn wu_of(file: &Path) -> String {
    file.file_name().unwrap().to_string_lossy().trim_end_matches(".tar.gz").to_owned()
}
