//! gentoo@home under Debian's real BOINC client (`/usr/bin/boinc` 7.20), end to end, on
//! 127.0.0.1 only: the test harness (`gah-boinc-harness`) plays the project's server; the
//! client, attached under anonymous platform, fetches a workunit for the overlay's smallest
//! package (app-arch/bzip2, default USE, gcc), runs the real `gah-app`, uploads the outcome
//! archive and reports it; the harness validates and assimilates it into a results database.
//!
//! `cargo test --release real_boinc_client` runs them (with `RUN_SLOW_TESTS=1`), one at a
//! time. `GAH_BOINC_BACKEND=sandbox` runs gah-app's sandbox backend instead of the VM (TCG
//! here): ~1 min a test instead of ~6. `GAH_KEEP_TMP=1` keeps the temp folders;
//! `GAH_BOINC_CMDLINE` replaces the app version's `<cmdline>` (experiments).
//!
//! Every test kills the client and anything of its data folder at its end, also on failure
//! (the `Client` drop guard), and checks that no qemu of its own is left.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gah_boinc_harness::client::{qemus_of, Client, ClientConfig};
use gah_boinc_harness::server::{client_state, Harness, HarnessConfig, WorkunitSpec, WuOutcome};
use gah_core::db::Database;
use gah_core::job::Compiler;
use gah_tests::{artefacts, overlay_job, program, project_root, slow_tests_enabled};

/// One BOINC client at a time: two cores, and each test's VM wants both.
static SERIAL: Mutex<()> = Mutex::new(());

fn backend() -> String {
    std::env::var("GAH_BOINC_BACKEND").unwrap_or_else(|_| "vm".into())
}

fn is_vm() -> bool {
    backend() != "sandbox"
}

/// Bounded waits, by backend (TCG builds are slow, and the app runs at idle priority).
fn job_limit() -> Duration {
    Duration::from_secs(if is_vm() { 45 * 60 } else { 15 * 60 })
}

/// How long a task must have run to be "mid-build".
fn mid_build() -> Duration {
    Duration::from_secs(if is_vm() { 120 } else { 20 })
}

struct Run {
    harness: Harness,
    client: Client,
    wu: String,
    result: String,
    started: Instant,
    tmp: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// Harness up with one workunit; client data folder laid out (anonymous platform); client
/// started.
fn start(test: &str) -> Run {
    let started = Instant::now();
    let a = artefacts();
    let tmp_dir = tempfile::Builder::new().prefix(&format!("gah-{test}-")).tempdir_in(std::env::temp_dir()).expect("temp dir");
    let tmp = tmp_dir.path().to_path_buf();
    let keep = std::env::var_os("GAH_KEEP_TMP").is_some();
    let tmp_guard = if keep {
        eprintln!("{test}: keeping {}", tmp.display());
        let _ = tmp_dir.keep();
        None
    } else {
        Some(tmp_dir)
    };

    let harness = Harness::start(HarnessConfig::new(&tmp.join("server"))).expect("harness");
    // The workunit's inputs: the job, the overlay and the distfiles as tar files.
    let inputs = tmp.join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    tar_dir(&a.overlay, &inputs.join("repo.tar"));
    tar_dir(&a.distfiles, &inputs.join("distfiles.tar"));
    let job = overlay_job("app-arch/bzip2", Compiler::Gcc, 3600);
    let wu = format!("gah_{test}");
    let mut spec = WorkunitSpec::new(&wu, job);
    spec.inputs = vec![("repo.tar".into(), inputs.join("repo.tar")), ("distfiles.tar".into(), inputs.join("distfiles.tar"))];
    let result = harness.add_workunit(spec).expect("workunit").remove(0);

    let mut config = ClientConfig::new(&tmp.join("client"), &harness.master_url(), harness.authenticator());
    config.checkpoint_secs = 60;
    config.write().expect("client config");
    package_app_version(&config.project_dir(), &a.image);
    let client = Client::start(&config).expect("start boinc");
    eprintln!(
        "{test}: {} {} (backend {}), master URL {}, data folder {}",
        gah_boinc_harness::client::BOINC,
        client.args().join(" "),
        backend(),
        harness.master_url(),
        tmp.display()
    );
    Run { harness, client, wu, result, started, tmp, _tmp: tmp_guard }
}

fn tar_dir(dir: &Path, out: &Path) {
    let status = Command::new("tar").arg("-C").arg(dir).arg("-cf").arg(out).arg(".").status().expect("tar");
    assert!(status.success(), "tar {}", dir.display());
}

/// Anonymous platform: `scripts/package-app-version.sh --link` straight into the project
/// folder (hard links: the root disk is GBs), in the backend's flavour.
fn package_app_version(project_dir: &Path, image: &Path) {
    let bin = program("gah-app").parent().unwrap().to_path_buf();
    let mut script = Command::new("bash");
    script.arg(project_root().join("scripts/package-app-version.sh")).arg("--link").arg("--bin").arg(&bin).arg("--image").arg(image);
    // The flavour's own files: the vm's kernel and disks, or the sandbox's root as a tar that
    // gah-app unpacks into the project folder.
    script.arg("--guest").arg(if is_vm() { "vm" } else { "sandbox" });
    if let Ok(c) = std::env::var("GAH_BOINC_CMDLINE") {
        script.arg("--cmdline").arg(c);
    }
    let out = script.arg(project_dir).output().expect("package-app-version.sh");
    assert!(
        out.status.success(),
        "package-app-version.sh: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Run {
    fn done(&self) -> impl FnMut(&gah_boinc_harness::server::Snapshot) -> bool + '_ {
        move |s| s.outcome(&self.wu) != WuOutcome::Pending
    }

    /// Waits for the workunit to be decided, with the client's log on failure.
    fn wait_decided(&mut self) -> gah_boinc_harness::server::Snapshot {
        let limit = job_limit();
        let start = Instant::now();
        loop {
            let snap = self.harness.snapshot();
            if (self.done())(&snap) {
                return snap;
            }
            if !self.client.is_running() {
                // The client may exit right after its final report: look once more.
                std::thread::sleep(Duration::from_secs(1));
                let snap = self.harness.snapshot();
                if (self.done())(&snap) {
                    return snap;
                }
                panic!(
                    "the client exited before the workunit was decided\nharness:\n{}\nclient log:\n{}\n{}",
                    snap.log.join("\n"),
                    self.client.log_tail(60),
                    self.slot_stderr()
                );
            }
            if start.elapsed() > limit {
                panic!(
                    "workunit undecided after {limit:?}\nharness:\n{}\nclient log:\n{}\n{}",
                    snap.log.join("\n"),
                    self.client.log_tail(60),
                    self.slot_stderr()
                );
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// Every slot's `stderr.txt` (the app's stderr), for failure messages.
    fn slot_stderr(&self) -> String {
        let mut out = String::new();
        if let Ok(slots) = std::fs::read_dir(self.client.data_dir().join("slots")) {
            for s in slots.flatten() {
                if let Ok(t) = std::fs::read_to_string(s.path().join("stderr.txt")) {
                    out.push_str(&format!("--- {}:\n{}\n", s.path().display(), tail(&t, 40)));
                }
            }
        }
        out
    }

    /// Waits until the task runs and is mid-build (fraction done ≥ 0.2, or running for
    /// [`mid_build`]).
    fn wait_mid_build(&self) -> gah_boinc_harness::client::Task {
        let first_exec = std::cell::Cell::new(None::<Instant>);
        self.client
            .wait_task(&self.result, job_limit(), |t| {
                if t.active_state() != "EXECUTING" {
                    return false;
                }
                let since = *first_exec.get().get_or_insert_with(Instant::now);
                first_exec.set(Some(since));
                t.fraction_done() >= 0.2 || since.elapsed() >= mid_build()
            })
            .expect("task mid-build")
    }

    /// The outcome must be the undisturbed run's: success, no failed phase, tests ran; the
    /// row is in the results database.
    fn assert_stored_success(&self, snap: &gah_boinc_harness::server::Snapshot) {
        let outcome = snap.outcome(&self.wu);
        assert!(
            matches!(&outcome, WuOutcome::Assimilated { detail, .. } if detail.starts_with("stored")),
            "workunit {}: {outcome:?}\nverdicts {:?}\nharness:\n{}\nclient log:\n{}",
            self.wu,
            snap.verdicts,
            snap.log.join("\n"),
            self.client.log_tail(60)
        );
        let db = Database::open(&self.harness.results_db()).expect("results db");
        let rows = db.outcomes().expect("rows");
        let row = rows.iter().find(|r| r.wu_name == self.wu).unwrap_or_else(|| panic!("no row for {} in {:?}", self.wu, rows));
        assert_eq!(row.cpv, "app-arch/bzip2-1.0.8");
        assert_eq!(row.status, "success", "{row:?}");
        assert_eq!(row.failed_phase, None, "{row:?}");
        assert!(row.test_ran, "{row:?}");
        let report = snap.report(&self.result).expect("report");
        assert_eq!((report.state, report.exit_status), (client_state::FILES_UPLOADED, 0));
        // The client must hear of the guest's CPU time (qemu's, or the sandbox's processes'),
        // not only gah-app's own: the build keeps at least one core busy much of the time.
        assert!(
            report.final_cpu_time >= 0.2 * report.final_elapsed_time,
            "CPU time {:.1} s for {:.1} s elapsed: the guest's CPU time was not reported",
            report.final_cpu_time,
            report.final_elapsed_time
        );
        eprintln!(
            "{}: row {} {} {} {:.0} s in the guest; task {:.0} s elapsed, {:.0} s CPU; test {:.0} s",
            self.wu,
            row.cpv,
            row.status,
            row.compiler,
            row.duration_secs,
            report.final_elapsed_time,
            report.final_cpu_time,
            self.started.elapsed().as_secs_f64()
        );
    }

    /// After the client let go of the task: no qemu of ours, no process of ours but the
    /// client, slot folders empty (the client cleans a slot once its task is over).
    fn assert_clean(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let client_pid = self.client.pid().map(|p| p as i32);
            let qemus = qemus_of(&self.tmp, self.client.pgids());
            let others: Vec<_> = gah_boinc_harness::client::processes_of(&self.tmp, self.client.pgids())
                .into_iter()
                .filter(|p| Some(p.pid) != client_pid && !p.cmdline.contains("boinccmd"))
                .collect();
            let slots = leftover_slot_files(&self.client.data_dir().join("slots"));
            if qemus.is_empty() && others.is_empty() && slots.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: left behind after 60 s: qemu {qemus:?}; processes {others:?}; slot files {slots:?}\nclient log:\n{}",
                    self.client.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

fn leftover_slot_files(slots: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(slots) {
        for slot in entries.flatten() {
            if let Ok(files) = std::fs::read_dir(slot.path()) {
                out.extend(files.flatten().map(|f| f.path()));
            }
        }
    }
    out
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn real_boinc_client_runs_a_job_end_to_end() {
    if !slow_tests_enabled("real_boinc_client_runs_a_job_end_to_end") {
        return;
    }
    let _one = serial();
    let mut run = start("e2e");
    let snap = run.wait_decided();
    run.assert_stored_success(&snap);
    assert_eq!(snap.uploads.len(), 1, "{:?}", snap.uploads);
    if !is_vm() {
        // The sandbox's root came as the app version's rootfs.tar, unpacked in the project folder.
        let stderr = &snap.report(&run.result).expect("report").stderr_out;
        let unpacked = stderr.lines().find(|l| l.contains("gah-app: guest root unpacked"));
        assert!(unpacked.is_some(), "the app did not unpack rootfs.tar; stderr:\n{}", tail(stderr, 40));
        eprintln!("e2e: {}", unpacked.unwrap_or_default());
    }
    // --exit_when_idle: the client leaves once the server acknowledged the report.
    let exited = run.client.wait_exit(Duration::from_secs(120));
    assert!(exited.is_some(), "the client did not exit when idle:\n{}", run.client.log_tail(30));
    run.assert_clean("after the job");
}

#[test]
fn real_boinc_client_suspend_resume() {
    if !slow_tests_enabled("real_boinc_client_suspend_resume") {
        return;
    }
    let _one = serial();
    let mut run = start("suspend");
    let before = run.wait_mid_build();
    run.client.task_op(&run.result, "suspend").expect("suspend");
    let t0 = Instant::now();
    let suspended =
        run.client.wait_task(&run.result, Duration::from_secs(60), |t| t.active_state() == "SUSPENDED").expect("task suspended");
    eprintln!(
        "suspend: {:.1} s to SUSPENDED (fraction {:.3} -> {:.3})",
        t0.elapsed().as_secs_f64(),
        before.fraction_done(),
        suspended.fraction_done()
    );
    // Suspended means suspended: progress stands still (leave_apps_in_memory keeps the app).
    // The client says SUSPENDED when it sends the request; give the app a moment to act on it
    // (its runtime polls about once a second) before taking the reference.
    std::thread::sleep(Duration::from_secs(3));
    let suspended = run.client.wait_task(&run.result, Duration::from_secs(30), |_| true).expect("task listed");
    std::thread::sleep(Duration::from_secs(20));
    let later = run.client.wait_task(&run.result, Duration::from_secs(30), |_| true).expect("task listed");
    assert_eq!(later.active_state(), "SUSPENDED");
    assert!(
        (later.fraction_done() - suspended.fraction_done()).abs() < 1e-6,
        "progress moved while suspended: {} -> {}",
        suspended.fraction_done(),
        later.fraction_done()
    );
    if is_vm() {
        assert!(!qemus_of(&run.tmp, run.client.pgids()).is_empty(), "the VM should be paused, not gone");
    }
    run.client.task_op(&run.result, "resume").expect("resume");
    run.client.wait_task(&run.result, Duration::from_secs(60), |t| t.active_state() == "EXECUTING").expect("task running again");
    let snap = run.wait_decided();
    run.assert_stored_success(&snap);
    let _ = run.client.wait_exit(Duration::from_secs(120));
    run.assert_clean("after suspend/resume");
}

#[test]
fn real_boinc_client_kill_restart() {
    if !slow_tests_enabled("real_boinc_client_kill_restart") {
        return;
    }
    let _one = serial();
    let mut run = start("killrestart");
    // Past at least one checkpoint (every 60 s) before the crash.
    let before = run.wait_mid_build();
    let checkpoint_cpu = before.get("CPU time at last checkpoint").to_owned();
    run.client.kill_client();
    let killed_at = Instant::now();
    eprintln!("kill_restart: client SIGKILLed at fraction {:.3} (CPU time at last checkpoint {checkpoint_cpu})", before.fraction_done());
    // The orphaned app notices the lost heartbeat, checkpoints and exits (no qemu left).
    let orphans_gone = loop {
        let left = gah_boinc_harness::client::processes_of(&run.tmp, run.client.pgids());
        if left.is_empty() {
            break Ok(killed_at.elapsed());
        }
        if killed_at.elapsed() > Duration::from_secs(180) {
            break Err(left);
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    eprintln!("kill_restart: app after the client's death: {orphans_gone:?}");
    if orphans_gone.is_err() {
        // Go on to learn whether the task resumes; the assertion below still fails.
        run.client.kill_everything();
    }
    run.client.restart().expect("restart boinc");
    let restarted = Instant::now();
    match run.client.wait_task(&run.result, Duration::from_secs(300), |t| t.active_state() == "EXECUTING") {
        Ok(_) => {
            eprintln!("kill_restart: task EXECUTING {:.1} s after the restart", restarted.elapsed().as_secs_f64());
            if is_vm() {
                // Resumed, not restarted: progress carries on from where it was. (This catches
                // a task that began again; a report of 0 it cannot, as the client ignores
                // zeros: the supervisor's unit tests cover the app's own fraction.)
                std::thread::sleep(Duration::from_secs(10));
                let now = run.client.wait_task(&run.result, Duration::from_secs(30), |_| true).map(|t| t.fraction_done()).unwrap_or(-1.0);
                assert!(
                    now >= before.fraction_done() - 1e-3,
                    "progress after the restart is {now:.3}, below {:.3} before the kill",
                    before.fraction_done()
                );
                eprintln!("kill_restart: fraction {now:.3} after the restart ({:.3} at the kill)", before.fraction_done());
            }
        }
        // A short task can finish and be reported (and the client exit when idle) before a
        // poll sees it run: then the report below is the proof that it ran again.
        Err(e) => {
            let snap = run.wait_decided();
            assert!(snap.report(&run.result).is_some(), "task neither ran again nor was reported: {e:#}");
            eprintln!("kill_restart: task finished {:.1} s after the restart, before a poll saw it run", restarted.elapsed().as_secs_f64());
        }
    }
    let snap = run.wait_decided();
    run.assert_stored_success(&snap);
    let stderr = &snap.report(&run.result).expect("report").stderr_out;
    let resumed: Vec<&str> = stderr.lines().filter(|l| l.contains("checkpoint") || l.contains("resum") || l.contains("restor")).collect();
    eprintln!("kill_restart: app lines about checkpoints:\n{}", resumed.join("\n"));
    if is_vm() {
        // The orphaned app checkpointed on the lost heartbeat; the restarted one must have
        // resumed the VM from it, not booted afresh.
        assert!(
            stderr.contains("gah-app: resuming from the checkpoint"),
            "the restarted task did not resume from a checkpoint; app stderr:\n{}",
            tail(stderr, 60)
        );
    }
    let _ = run.client.wait_exit(Duration::from_secs(120));
    run.assert_clean("after kill/restart");
    assert!(orphans_gone.is_ok(), "the app outlived its client by over 180 s: {orphans_gone:?}");
}

#[test]
fn real_boinc_client_abort() {
    if !slow_tests_enabled("real_boinc_client_abort") {
        return;
    }
    let _one = serial();
    let mut run = start("abort");
    run.wait_mid_build();
    let t0 = Instant::now();
    run.client.task_op(&run.result, "abort").expect("abort");
    // The client reports the aborted task at once; the harness records the workunit failed.
    let snap = run.harness.wait_until(Duration::from_secs(300), |s| s.report(&run.result).is_some()).expect("aborted task reported");
    let report = snap.report(&run.result).unwrap();
    assert_eq!(report.state, client_state::ABORTED, "{report:?}");
    eprintln!("abort: reported {:.1} s after the abort, exit status {}", t0.elapsed().as_secs_f64(), report.exit_status);
    assert!(matches!(snap.outcome(&run.wu), WuOutcome::Failed { .. }), "{:?}", snap.outcome(&run.wu));
    run.assert_clean("after abort");
    eprintln!("abort: clean {:.1} s after the abort", t0.elapsed().as_secs_f64());
}
