//! gentoo@home under Debian's real BOINC client (`/usr/bin/boinc` 7.20), end to end, on
//! 127.0.0.1 only: the test harness (`gah-boinc-harness`) plays the project's server; the
//! client, attached under anonymous platform, fetches a workunit for the overlay's smallest
//! package (app-arch/bzip2, default USE, gcc), runs the real `gah-app`, uploads the outcome
//! archive and reports it; the harness validates and assimilates it into a results database
//! by running `gah-validate-init`, `gah-validate-compare` and `gah-assimilate` with the
//! `config.xml` lines of `templates/README.md`, under BOINC's own command-line rules.
//!
//! `real_boinc_client_runs_a_server_sent_app_version` runs the job with the app version
//! server-sent instead (no `app_info.xml`: `package-app-version.sh --boinc-apps`, signed and
//! sent by the harness as `update_versions` and the scheduler do), and
//! `real_boinc_client_refuses_a_badly_signed_app_file` checks the client refuses a file whose
//! signature is not the project key's.
//!
//! `cargo test --release real_boinc_client` runs them (with `RUN_SLOW_TESTS=1`), one at a
//! time. `GAH_BOINC_BACKEND=sandbox` runs gah-app's sandbox backend instead of the VM (TCG
//! here): ~1 min a test instead of ~6. `GAH_KEEP_TMP=1` keeps the temp folders;
//! `GAH_BOINC_CMDLINE` replaces the app version's `<cmdline>` (experiments).
//!
//! Every test kills the client and anything of its data folder at its end, also on failure
//! (the `Client` drop guard), and checks that no qemu of its own is left.
//!
//! Every wait fails as soon as what it waits for can no longer happen (the task ended or is
//! gone, the client exited, the server holds the report), with the client's log, the task's
//! stderr and its last state: `job_limit()` is only the last resort.
//! `real_boinc_client_fails_fast_on_a_compute_error` proves it in well under a minute, with
//! no guest at all.

// Test code: clippy's allow-print-in-tests misses the helpers outside `#[test]` functions.
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gah_boinc_harness::app_versions::CodeSignKey;
use gah_boinc_harness::boinc_scripts::BoincServer;
use gah_boinc_harness::client::{qemus_of, Client, ClientConfig, Task};
use gah_boinc_harness::server::{client_state, Daemons, Harness, HarnessConfig, Snapshot, WorkunitSpec, WuOutcome};
use gah_boinc_harness::wait::{self, Ended, Step, WaitError};
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

/// Harness up with one workunit for app-arch/bzip2; client data folder laid out (anonymous
/// platform, the backend's flavour); client started.
fn start(test: &str) -> Run {
    start_with(test, false)
}

/// [`start`]; with `base_in_repository`, the guest root is published as `gah deploy` does
/// (the sandbox's tree at `/base`, the vm's disk at `/base-disk/rootfs.ext4`) and the app
/// version carries none.
fn start_with(test: &str, base_in_repository: bool) -> Run {
    let a = artefacts();
    let root = match (base_in_repository, is_vm()) {
        (false, _) => GuestRoot::None,
        (true, false) => GuestRoot::Tree(a.image.join("rootfs")),
        (true, true) => GuestRoot::Disk(a.image.join("rootfs.ext4")),
    };
    launch(
        test,
        |tmp, harness, spec| stage_data_with_base(tmp, harness, spec, &a.overlay, &a.distfiles, &root),
        |project_dir, tmp, _| {
            let guest = if is_vm() { "vm" } else { "sandbox" };
            let mut script = package_script(tmp, &a.image, guest);
            if let Ok(c) = std::env::var("GAH_BOINC_CMDLINE") {
                script.arg("--cmdline").arg(c);
            }
            script.args(match root {
                GuestRoot::None => None,
                GuestRoot::Tree(_) => Some("--base-in-repository"),
                GuestRoot::Disk(_) => Some("--disk-in-repository"),
            });
            run_package_script(script, project_dir);
        },
    )
}

/// The workunit's second input as `templates/gah_in` declares it, its `data.json`, made as
/// on a server: the ebuild repository `repo` and the distfiles folder `distfiles` published as
/// `gah deploy` publishes them (`/repos/<name>`, `/distfiles`) into the harness's download
/// folder (`cvmfs/gentoo.gah`, served as Apache serves that folder), keys in `TMP/keys` (the
/// app version carries `gentoo.gah.pub`: [`cvmfs_key`]); the repository planned into a queue
/// with the distfile mirror, and the data.json written by the work generator's own
/// `write_data_refs`. No tarball.
fn stage_data(tmp: &Path, harness: &Harness, spec: &mut WorkunitSpec, repo: &Path, distfiles: &Path) {
    stage_data_with_base(tmp, harness, spec, repo, distfiles, &GuestRoot::None);
}

/// What of the guest root is published with the tree.
enum GuestRoot {
    /// Nothing: the app version carries it.
    None,
    /// The sandbox's tree, at `/base`.
    Tree(PathBuf),
    /// The vm's disk, at `/base-disk/rootfs.ext4`.
    Disk(PathBuf),
}

/// [`stage_data`], with the guest root `root` published too.
fn stage_data_with_base(tmp: &Path, harness: &Harness, spec: &mut WorkunitSpec, repo: &Path, distfiles: &Path, root: &GuestRoot) {
    publish(tmp, harness, repo, distfiles, root, None);
    let (repos, _) = gah_workgen::plan::load_repos(&[repo.to_path_buf()]);
    let mirror = gah_workgen::distfiles::Mirror::new(distfiles, &["amd64", "~amd64"]);
    let config = gah_workgen::plan::Config {
        compilers: vec![Compiler::Gcc],
        strategy: gah_ebuild::Strategy::Covering { t: 1, seed: 0 },
        profile: gah_ebuild::Profile::amd64_linux(),
        timeout_secs: 3600,
        threads: 1,
        budget: gah_ebuild::Budget::default(),
    };
    let queue_dir = tmp.join("queue");
    let mut queue = gah_workgen::Queue::open(&queue_dir).expect("queue");
    queue.add(&gah_workgen::plan::plan_with(&repos, &config, Some(&mirror))).expect("plan into the queue");
    write_data_ref(tmp, harness, spec);
}

/// Publishes the next revision as `gah deploy` does: `repo` at `/repos/<name>`, `distfiles`
/// at `/distfiles`, the guest root `root`, and the package store `binpkgs` at `/binpkgs`.
fn publish(tmp: &Path, harness: &Harness, repo: &Path, distfiles: &Path, root: &GuestRoot, binpkgs: Option<&Path>) {
    use gah_core::data_ref::{repo_path, BASE_AT, BINPKGS_AT, DISK_AT, DISTFILES_AT};
    let published = harness.download_dir().join("cvmfs").join(CVMFS_NAME);
    let at = repo_path(&gah_ebuild::repo::repo_name(repo));
    let mut mounts = vec![gah_publish::Mount { at: &at, from: repo }, gah_publish::Mount { at: DISTFILES_AT, from: distfiles }];
    match root {
        GuestRoot::None => {}
        GuestRoot::Tree(from) => mounts.push(gah_publish::Mount { at: BASE_AT, from }),
        GuestRoot::Disk(from) => mounts.push(gah_publish::Mount { at: DISK_AT, from }),
    }
    if let Some(from) = binpkgs {
        mounts.push(gah_publish::Mount { at: BINPKGS_AT, from });
    }
    gah_publish::publish_mounts(&mounts, &published, CVMFS_NAME, &tmp.join("keys")).expect("publish");
}

/// The workunit's `data.json`, by the work generator's own `write_data_refs` over the queue
/// in `TMP/queue`, naming the current revision; staged as its input.
fn write_data_ref(tmp: &Path, harness: &Harness, spec: &mut WorkunitSpec) {
    let published = harness.download_dir().join("cvmfs").join(CVMFS_NAME);
    let queue_dir = tmp.join("queue");
    let plane = gah_workgen::boinc::DataPlane {
        name: CVMFS_NAME.into(),
        url: format!("{}download/cvmfs/{CVMFS_NAME}", harness.master_url()),
        published,
    };
    let wu = gah_workgen::boinc::Workunit { name: spec.name.clone(), job: spec.job.clone() };
    gah_workgen::boinc::write_data_refs(&queue_dir, std::slice::from_ref(&wu), Some(&plane)).expect("data.json");
    spec.files = vec![harness.stage_file(&queue_dir.join("pending").join(wu.data_file())).expect("stage")];
}

/// The project's CernVM-FS repository's name.
const CVMFS_NAME: &str = gah_core::data_ref::DEFAULT_NAME;

/// Its public master key, as [`stage_data`] made it: an app version file.
fn cvmfs_key(tmp: &Path) -> PathBuf {
    gah_publish::keys::master_pub_path(&tmp.join("keys"), CVMFS_NAME)
}

/// [`start`], with the app version server-sent instead of anonymous platform:
/// `scripts/package-app-version.sh --boinc-apps` lays out the version folder as
/// `tools/update_versions` reads it, the harness signs, stages and sends it
/// ([`Harness::add_app_versions`]); the client's project folder has no `app_info.xml`.
fn start_server_sent(test: &str) -> Run {
    let a = artefacts();
    launch(
        test,
        |tmp, harness, spec| stage_data(tmp, harness, spec, &a.overlay, &a.distfiles),
        |_, tmp, harness| {
            let guest = if is_vm() { "vm" } else { "sandbox" };
            package_server_sent(tmp, harness, &a.image, guest, |_| {});
        },
    )
}

/// The server-sent app version of flavour `guest` from `image`: `--boinc-apps TMP/apps`
/// (the anonymous-platform folder it also makes goes to `TMP/anonymous`, unused), `edit` on
/// the version folder, then the harness's `update_versions`. Returns the version folder.
fn package_server_sent(tmp: &Path, harness: &Harness, image: &Path, guest: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let apps = tmp.join("apps");
    let mut script = package_script(tmp, image, guest);
    let out = script.arg("--boinc-apps").arg(&apps).arg(tmp.join("anonymous")).output().expect("package-app-version.sh");
    assert!(
        out.status.success(),
        "package-app-version.sh: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let plan_class = guest.replace("both", "vm");
    let vdir = apps.join("gah/100").join(format!("x86_64-pc-linux-gnu__{plan_class}"));
    assert!(vdir.join("version.xml").is_file(), "no {}", vdir.join("version.xml").display());
    edit(&vdir);
    let avs = harness.add_app_versions(&apps).expect("update_versions");
    assert_eq!(avs.len(), 1, "{avs:?}");
    vdir
}

/// [`start`]'s steps, with the workunit (`workunit(tmp, harness, spec)`) and the app version
/// (`package(project_dir, tmp)`) up to the test.
fn launch(test: &str, workunit: impl FnOnce(&Path, &Harness, &mut WorkunitSpec), package: impl FnOnce(&Path, &Path, &Harness)) -> Run {
    let started = Instant::now();
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

    let mut harness_config = HarnessConfig::new(&tmp.join("server"));
    harness_config.daemons = Some(daemons(&tmp.join("project")));
    let harness = Harness::start(harness_config).expect("harness");
    let job = overlay_job("app-arch/bzip2", Compiler::Gcc, 3600);
    // The assimilator takes only outcomes of the workunit's job: its name starts with the job id.
    let wu = format!("{}_{test}", job.job_id);
    let mut spec = WorkunitSpec::new(&wu, job);
    workunit(&tmp, &harness, &mut spec);
    let wu = spec.name.clone();
    let result = harness.add_workunit(spec).expect("workunit").remove(0);

    let mut config = ClientConfig::new(&tmp.join("client"), &harness.master_url(), harness.authenticator());
    config.checkpoint_secs = 60;
    config.write().expect("client config");
    package(&config.project_dir(), &tmp, &harness);
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

/// Validation and assimilation as a stock BOINC server does them: the README's `config.xml`
/// lines, our programs in the project's `bin/`, BOINC master's command-building rules.
fn daemons(project: &Path) -> Daemons {
    let readme = std::fs::read_to_string(project_root().join("templates/README.md")).expect("templates/README.md");
    let daemons = Daemons::from_readme(&readme, project, BoincServer::Master).expect("the README's config.xml lines");
    daemons.install(&[program("gah-validate-init"), program("gah-validate-compare"), program("gah-assimilate")]).expect("install");
    daemons
}

fn tar_dir(dir: &Path, out: &Path) {
    let status = gah_util::process::command("tar").arg("-C").arg(dir).arg("-cf").arg(out).arg(".").status().expect("tar");
    assert!(status.success(), "tar {}", dir.display());
}

/// Anonymous platform: `scripts/package-app-version.sh --link` straight into the project
/// folder (hard links: the root disk is GBs), in flavour `guest`.
fn package_app_version(project_dir: &Path, tmp: &Path, image: &Path, guest: &str, cmdline: Option<&str>) {
    let mut script = package_script(tmp, image, guest);
    if let Some(c) = cmdline {
        script.arg("--cmdline").arg(c);
    }
    run_package_script(script, project_dir);
}

fn run_package_script(mut script: std::process::Command, project_dir: &Path) {
    let out = script.arg(project_dir).output().expect("package-app-version.sh");
    assert!(
        out.status.success(),
        "package-app-version.sh: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `scripts/package-app-version.sh --link --bin <ours> --image IMAGE --guest GUEST
/// --cvmfs-key TMP/keys/gentoo.gah.pub`: the flavour's own files, the vm's kernel and disks or
/// the sandbox's root as a tar that gah-app unpacks into the project folder, and the data
/// plane's key.
fn package_script(tmp: &Path, image: &Path, guest: &str) -> std::process::Command {
    let bin = program("gah-app").parent().unwrap().to_path_buf();
    let mut script = gah_util::process::command("bash");
    script.arg(project_root().join("scripts/package-app-version.sh")).arg("--link").arg("--bin").arg(&bin).arg("--image").arg(image);
    script.arg("--guest").arg(guest).arg("--cvmfs-key").arg(cvmfs_key(tmp));
    script
}

impl Run {
    /// Issue 11, item 4: both output files of `templates/gah_out` came back, and the second is
    /// the packages the job built (here, the target itself), in the upload format the
    /// validator reads.
    fn assert_packages_uploaded(&self, snap: &Snapshot) {
        assert_eq!(snap.uploads.len(), 2, "{:?}", snap.uploads);
        let (name, _) = snap.uploads.iter().find(|(n, _)| n.ends_with("_1")).expect("the packages upload");
        let packages = gah_validator::load_binpkgs(&self.harness.upload_dir().join(name))
            .unwrap_or_else(|e| panic!("{name}: {}", gah_util::error_chain(&e)));
        assert!(packages.iter().any(|p| p.cpv.starts_with("app-arch/bzip2-")), "{name}: {packages:?}");
        eprintln!("{}: packages uploaded: {:?}", self.wu, packages.iter().map(|p| (&p.cpv, p.size)).collect::<Vec<_>>());
    }

    /// Waits for the workunit to be decided; stops once the client exited without it.
    fn decided(&mut self) -> Result<Snapshot, WaitError> {
        let wu = &self.wu;
        self.client.watch().task(&self.result).server(&self.harness).every(Duration::from_secs(2)).until(
            &format!("workunit {wu} decided"),
            job_limit(),
            |s| s.snap.clone().filter(|snap| snap.outcome(wu) != WuOutcome::Pending),
        )
    }

    /// [`Run::decided`], or the test fails with the logs that say why.
    fn wait_decided(&mut self) -> Snapshot {
        self.decided().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits until the task runs and is mid-build (fraction done ≥ 0.2, or running for
    /// [`mid_build`]); stops once it can compute no more.
    fn mid_build(&mut self) -> Result<Task, WaitError> {
        let mut first_exec = None::<Instant>;
        self.client.watch().task(&self.result).computing().server(&self.harness).until(
            &format!("task {} mid-build", self.result),
            job_limit(),
            |s| {
                let t = s.task.as_ref().filter(|t| t.active_state() == "EXECUTING")?;
                let since = *first_exec.get_or_insert_with(Instant::now);
                (t.fraction_done() >= 0.2 || since.elapsed() >= mid_build()).then(|| t.clone())
            },
        )
    }

    /// [`Run::mid_build`], or the test fails with the logs that say why.
    fn wait_mid_build(&mut self) -> Task {
        self.mid_build().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Client::wait_task`], or the test fails with the logs that say why.
    fn wait_task(&mut self, timeout: Duration, cond: impl FnMut(&Task) -> bool) -> Task {
        self.client.wait_task(&self.result, timeout, cond).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The outcome must be the undisturbed run's: success, no failed phase, tests ran; the
    /// row is in the results database.
    fn assert_stored_success(&self, snap: &gah_boinc_harness::server::Snapshot) {
        self.assert_stored_success_since(snap, None, true);
    }

    /// [`Run::assert_stored_success`] for a task whose client was killed `restarted` ago
    /// (when it started again): the client only keeps CPU time up to the last checkpoint
    /// it heard of, so what the guest used before the kill may be lost to it (as on any
    /// BOINC host), and the CPU time is weighed against the time since the restart. Without
    /// `metered`, the client ran none of it (it found the task finished), and heard of no CPU
    /// time at all.
    fn assert_stored_success_since(&self, snap: &gah_boinc_harness::server::Snapshot, restarted: Option<Instant>, metered: bool) {
        let outcome = snap.outcome(&self.wu);
        assert!(
            matches!(&outcome, WuOutcome::Assimilated { detail, .. } if detail.ends_with(": stored")),
            "workunit {}: {outcome:?}\nverdicts {:?}\nharness:\n{}\nclient log:\n{}",
            self.wu,
            snap.verdicts,
            snap.log.join("\n"),
            self.client.log_tail(60)
        );
        let db = Database::open(&self.harness.results_db()).expect("results db");
        let rows = db.outcomes(&gah_core::db::Filter::default(), gah_core::db::Page::ALL).expect("rows");
        let row = rows.iter().find(|r| r.wu_name == self.wu).unwrap_or_else(|| panic!("no row for {} in {:?}", self.wu, rows));
        assert_eq!(row.cell.cpv, "app-arch/bzip2-1.0.8");
        assert_eq!(row.status, gah_core::outcome::Status::Success, "{row:?}");
        assert_eq!(row.failed_phase, None, "{row:?}");
        assert!(row.test_ran, "{row:?}");
        let report = snap.report(&self.result).expect("report");
        assert_eq!((report.state, report.exit_status), (client_state::FILES_UPLOADED, 0));
        // The client must hear of the guest's CPU time (qemu's, or the sandbox's processes'),
        // not only gah-app's own: the build keeps at least one core busy much of the time the
        // guest runs (not of the task's elapsed time: a host's first task may spend minutes
        // reading the guest root, waiting on the network).
        let since_restart = restarted.map_or(f64::INFINITY, |t| t.elapsed().as_secs_f64());
        assert!(
            !metered || report.final_cpu_time >= 0.2 * row.duration_secs.min(since_restart),
            "CPU time {:.1} s for {:.1} s in the guest ({:.1} s elapsed, {since_restart:.1} s since a restart): the guest's CPU time was not reported",
            report.final_cpu_time,
            row.duration_secs,
            report.final_elapsed_time
        );
        eprintln!(
            "{}: row {} {} {} {:.0} s in the guest; task {:.0} s elapsed, {:.0} s CPU; test {:.0} s",
            self.wu,
            row.cell.cpv,
            row.status,
            row.cell.compiler,
            row.duration_secs,
            report.final_elapsed_time,
            report.final_cpu_time,
            self.started.elapsed().as_secs_f64()
        );
    }

    /// After the client let go of the task: no qemu of ours, no process of ours but the
    /// client, slot folders empty (the client cleans a slot once its task is over).
    fn assert_clean(&mut self, what: &str) {
        let mut left = String::new();
        let client = &mut self.client;
        let tmp = &self.tmp;
        let r = wait::poll(Duration::from_secs(60), Duration::from_secs(1), || {
            let client_pid = client.pid().map(|p| p as i32);
            let qemus = qemus_of(tmp, client.pgids());
            let others: Vec<_> = gah_boinc_harness::client::processes_of(tmp, client.pgids())
                .into_iter()
                .filter(|p| Some(p.pid) != client_pid && !p.cmdline.contains("boinccmd"))
                .collect();
            let slots = leftover_slot_files(&client.data_dir().join("slots"));
            if qemus.is_empty() && others.is_empty() && slots.is_empty() {
                return Step::Done(());
            }
            left = format!("qemu {qemus:?}; processes {others:?}; slot files {slots:?}");
            // Only the client empties slots: once it is gone, nothing will.
            match client.exit_status() {
                Some(s) if !slots.is_empty() => Step::Ended(Ended::Other(format!("the client exited ({s}) and left its slots full"))),
                _ => Step::Pending,
            }
        });
        if let Err(stopped) = r {
            let evidence = self.client.evidence(Some(&self.result), Some(&self.harness));
            panic!("{}", stopped.into_error(&format!("{what}: nothing left behind"), None, format!("left: {left}\n{evidence}")));
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
    wait::tail(text, n)
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
    let mut run = start_with("e2e", true);
    let snap = run.wait_decided();
    run.assert_stored_success(&snap);
    run.assert_packages_uploaded(&snap);
    // Issue 11: the workunit had no tarball; gah-app read the repository's signed manifest
    // and the objects the job needed from the data plane, through the project folder's cache.
    let data_plane: Vec<&String> = snap.log.iter().filter(|l| l.starts_with("download: cvmfs/gentoo.gah/")).collect();
    assert!(data_plane.iter().any(|l| l.contains("/.cvmfspublished ")), "no manifest read: {data_plane:?}");
    assert!(data_plane.iter().filter(|l| l.contains("/data/")).count() >= 3, "catalogs and files: {data_plane:?}");
    assert!(!snap.log.iter().any(|l| l.contains(".tar bytes") && l.contains("gah-repo")), "a repository tarball went out");
    let cache = run.tmp.join("client/projects").read_dir().ok().into_iter().flatten().flatten().map(|p| p.path().join("cvmfs-cache"));
    assert!(cache.into_iter().any(|c| c.is_dir()), "no cvmfs-cache in the client's project folder");
    eprintln!("e2e: {} data plane downloads", data_plane.len());
    {
        // Issue 11, item 3: the guest's root came from the repository (the sandbox's tree at
        // `/base`, the vm's disk at `/base-disk`), read once into the project folder; the app
        // version carried none.
        let stderr = &snap.report(&run.result).expect("report").stderr_out;
        let said = if is_vm() { "gah-app: root disk read" } else { "gah-app: guest root read" };
        let read = stderr.lines().find(|l| l.contains(said));
        assert!(read.is_some(), "the app did not read the guest root from the repository; stderr:\n{}", tail(stderr, 40));
        eprintln!("e2e: {}", read.unwrap_or_default());
        if is_vm() {
            assert!(
                data_plane.iter().any(|l| l.contains("/data/") && l.contains("P bytes ")),
                "the disk's chunks came from the plane: {data_plane:?}"
            );
        } else {
            assert!(data_plane.iter().filter(|l| l.contains("/data/")).count() > 1000, "the base's objects came from the plane");
        }
        let projects: Vec<PathBuf> = run.tmp.join("client/projects").read_dir().unwrap().flatten().map(|e| e.path()).collect();
        let files: Vec<String> =
            projects.iter().flat_map(|p| p.read_dir().unwrap().flatten()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        assert!(!files.iter().any(|f| f.starts_with("rootfs")), "the app version carried a root: {files:?}");
        assert!(files.iter().any(|f| f == "cvmfs-base"), "no cvmfs-base in the project folder: {files:?}");
    }
    // --exit_when_idle: the client leaves once the server acknowledged the report.
    run.client.wait_exit(Duration::from_secs(120)).unwrap_or_else(|e| panic!("the client did not exit when idle: {e}"));
    run.assert_clean("after the job");
}

#[test]
fn real_boinc_client_suspend_resume() {
    if !slow_tests_enabled("real_boinc_client_suspend_resume") {
        return;
    }
    let _one = serial();
    let mut run = start("suspend");
    let mut before = run.wait_mid_build();
    if is_vm() {
        // What is tested is a running VM paused and resumed: the guest must have said it
        // started. (A CI run's task had reported nothing 120 s into EXECUTING and had no qemu
        // when suspended; before its VM runs, a suspend freezes gah-app itself.)
        let t0 = Instant::now();
        while before.fraction_done() < 0.01 || qemus_of(&run.tmp, run.client.pgids()).is_empty() {
            assert!(
                t0.elapsed() < job_limit(),
                "no running VM {:?} after mid-build (fraction {}); client log:\n{}",
                t0.elapsed(),
                before.fraction_done(),
                run.client.log_tail(60)
            );
            std::thread::sleep(Duration::from_secs(2));
            before = run.wait_task(Duration::from_secs(30), |_| true);
        }
        if t0.elapsed() > Duration::from_secs(2) {
            eprintln!("suspend: the VM ran {:.0} s after mid-build", t0.elapsed().as_secs_f64());
        }
    }
    run.client.task_op(&run.result, "suspend").expect("suspend");
    let t0 = Instant::now();
    let suspended = run.wait_task(Duration::from_secs(60), |t| t.active_state() == "SUSPENDED");
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
    let suspended = run.wait_task(Duration::from_secs(30), |_| true);
    std::thread::sleep(Duration::from_secs(20));
    let later = run.wait_task(Duration::from_secs(30), |_| true);
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
    run.wait_task(Duration::from_secs(60), |t| t.active_state() == "EXECUTING");
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
    // The vm's disk from the data plane: the restarted task's overlays still find their
    // backing file (the host's copy, read once). The sandbox's root from the app version.
    let mut run = start_with("killrestart", is_vm());
    // VM: past at least one checkpoint (every 60 s) before the crash. Sandbox (which resumes
    // by phase): as soon as the guest reports progress, since its job is short (seconds, with
    // binary packages) and the orphaned app, which notices the client's death within about
    // 5 s, must not finish it first.
    let before = if is_vm() {
        run.wait_mid_build()
    } else {
        run.wait_task(job_limit(), |t| t.active_state() == "EXECUTING" && t.fraction_done() > 0.0)
    };
    let checkpoint_cpu = before.get("CPU time at last checkpoint").to_owned();
    run.client.kill_client();
    let killed_at = Instant::now();
    eprintln!("kill_restart: client SIGKILLed at fraction {:.3} (CPU time at last checkpoint {checkpoint_cpu})", before.fraction_done());
    // The orphaned app notices the lost heartbeat, checkpoints and exits (no qemu left).
    // Only the orphans themselves can end this wait: it has no early end.
    let mut left = Vec::new();
    let orphans_gone = wait::poll(Duration::from_secs(180), Duration::from_secs(1), || {
        left = gah_boinc_harness::client::processes_of(&run.tmp, run.client.pgids());
        if left.is_empty() {
            Step::Done(killed_at.elapsed())
        } else {
            Step::Pending
        }
    })
    .map_err(|_| left.clone());
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
    // An orphan that finished the job before it noticed the client's death leaves BOINC's
    // finish file, and the restarted client takes the task as done without running it (nor
    // hearing of its CPU time): legitimate, but then nothing was resumed.
    let orphan_finished = run.client.log_tail(400).contains(&format!("Found finish file for {}", run.result));
    if orphan_finished {
        eprintln!("kill_restart: the orphaned app finished the task before it noticed the client's death; nothing resumed");
        assert!(!is_vm(), "a VM killed mid-build finished without its client: the orphan did not quit on the lost heartbeat");
    }
    run.assert_stored_success_since(&snap, Some(restarted), !orphan_finished);
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
        let reads = stderr.lines().filter(|l| l.contains("gah-app: root disk read")).count();
        assert_eq!(reads, 1, "the disk is read once per host, not per start; app stderr:\n{}", tail(stderr, 60));
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
    let result = &run.result;
    let snap = run
        .client
        .watch()
        .task(result)
        .server(&run.harness)
        .until("the aborted task's report", Duration::from_secs(300), |s| s.snap.clone().filter(|snap| snap.report(result).is_some()))
        .unwrap_or_else(|e| panic!("{e}"));
    let report = snap.report(&run.result).unwrap();
    assert_eq!(report.state, client_state::ABORTED, "{report:?}");
    eprintln!("abort: reported {:.1} s after the abort, exit status {}", t0.elapsed().as_secs_f64(), report.exit_status);
    assert!(matches!(snap.outcome(&run.wu), WuOutcome::Failed { .. }), "{:?}", snap.outcome(&run.wu));
    run.assert_clean("after abort");
    eprintln!("abort: clean {:.1} s after the abort", t0.elapsed().as_secs_f64());
}

/// An option gah-app does not know: a workunit command line that makes it fail at once.
const BAD_OPTION: &str = "--gah-test-fails-at-once";

/// Fail fast, with no guest at all: the workunit's command line makes gah-app fail at once
/// (a compute error). The wait for a mid-build state must stop at its next poll, naming the
/// compute error and carrying the app's own words and the client's log, instead of sitting out
/// job_limit(); the server's wait is as quick; and once the client has exited, a wait on it
/// stops at its first poll.
#[test]
fn real_boinc_client_fails_fast_on_a_compute_error() {
    if !slow_tests_enabled("real_boinc_client_fails_fast_on_a_compute_error") {
        return;
    }
    let _one = serial();
    let mut run = launch(
        "failfast",
        |tmp, harness, spec| {
            // Every input the template declares, or create_work refuses the workunit: empty
            // ones will do, gah-app fails on its command line first.
            let empty = tmp.join("empty-inputs");
            std::fs::create_dir_all(&empty).unwrap();
            stage_data(tmp, harness, spec, &empty, &empty);
            spec.command_line = BAD_OPTION.into();
        },
        |project_dir, tmp, _| {
            // The sandbox flavour packs the image's root: an empty one will do, nothing runs it.
            let (empty, image) = (tmp.join("empty"), tmp.join("no-image"));
            std::fs::create_dir_all(&empty).unwrap();
            std::fs::create_dir_all(&image).unwrap();
            tar_dir(&empty, &image.join("rootfs.tar"));
            package_app_version(project_dir, tmp, &image, "sandbox", None);
        },
    );
    let t0 = Instant::now();
    let err = run.mid_build().expect_err("gah-app cannot start with an unknown option");
    let took = t0.elapsed();
    eprintln!("failfast: the mid-build wait gave up {:.1} s after the client started:\n{err}", took.as_secs_f64());
    assert!(took < Duration::from_secs(60), "the wait took {took:?}: {err}");
    let compute_error = matches!(&err.ended, Ended::TaskOver { state, .. } if state == "compute error")
        || matches!(err.ended, Ended::Reported { state: client_state::COMPUTE_ERROR, .. });
    assert!(compute_error, "the reason should be the compute error: {err}");
    let message = err.to_string();
    // The app's own words (clap's, in its stderr), the client's log, the task's state.
    for needle in ["compute error", "unexpected argument", BAD_OPTION, "client log", "stderr ("] {
        assert!(message.contains(needle), "no {needle:?} in the message:\n{message}");
    }

    // The error report decides the workunit: the server's wait is as quick.
    let snap = run.wait_decided();
    assert!(matches!(snap.outcome(&run.wu), WuOutcome::Failed { .. }), "{:?}", snap.outcome(&run.wu));
    eprintln!("failfast: workunit failed {:.1} s after the client started", t0.elapsed().as_secs_f64());

    // With the client gone, a wait for anything more stops at its first poll.
    run.client.wait_exit(Duration::from_secs(300)).unwrap_or_else(|e| panic!("the client did not exit when idle: {e}"));
    eprintln!("failfast: the client exited {:.1} s after it started", t0.elapsed().as_secs_f64());
    let t1 = Instant::now();
    let err = run
        .client
        .watch()
        .server(&run.harness)
        .until("a second report", job_limit(), |s| s.snap.as_ref().filter(|snap| snap.reports.len() > 1).map(|_| ()))
        .expect_err("no second report can come");
    assert!(matches!(err.ended, Ended::ClientExited(_)), "{err}");
    assert!(t1.elapsed() < Duration::from_secs(5), "{err}");
    run.assert_clean("after the compute error");
}

/// Server-sent, end to end: no `app_info.xml`; the client gets the app version from the
/// scheduler with the project's code-signing key, downloads every file (gunzipping the
/// `<gzip/>` ones), checks each signature, copies the BOINC libraries into the slot, runs
/// gah-app with the plan class's `--memory_size_mb`, and the job is validated and assimilated
/// A job of `cp` with USE=jemalloc (its dependency on dev-libs/jemalloc on).
fn with_jemalloc(cp: &str) -> gah_core::job::Job {
    let base = overlay_job(cp, Compiler::Gcc, 3600);
    let mut flags = base.use_flags.clone();
    flags.0.insert("jemalloc".into(), true);
    gah_core::job::Job::new(&base.repo, &base.cpv, flags, Compiler::Gcc, 3600)
}

/// Issue 11, item 4, through the real client: workunit A (bzip2 USE=jemalloc, two replicas)
/// builds dev-libs/jemalloc; both replicas upload their packages, the validator records what
/// they built alike, the assimilator stores it in the project's `binpkgs_dir`, the next
/// publication offers it at `/binpkgs`; workunit B (xz-utils USE=jemalloc), whose data.json
/// names that revision, installs jemalloc as a binary package instead of compiling it.
/// Sandbox only (the vm phase skips it: the path is the same, the VM only slower).
#[test]
fn real_boinc_client_installs_a_validated_dependency_as_a_binary_package() {
    if !slow_tests_enabled("real_boinc_client_installs_a_validated_dependency_as_a_binary_package") {
        return;
    }
    let _one = serial();
    let a = artefacts();
    let bzip2 = with_jemalloc("app-arch/bzip2");
    let mut run = launch(
        "binpkgs",
        |tmp, harness, spec| {
            // As `gah deploy` writes it into the project's gah.conf.
            let conf = tmp.join("project").join(gah_core::project::FILE_NAME);
            let text = std::fs::read_to_string(&conf).expect("gah.conf");
            std::fs::write(&conf, format!("{text}binpkgs_dir = gah/binpkgs\n")).expect("gah.conf");
            *spec = WorkunitSpec {
                min_quorum: 2,
                target_nresults: 2,
                max_total_results: 2,
                ..WorkunitSpec::new(&format!("{}_binpkgs", bzip2.job_id), bzip2.clone())
            };
            stage_data(tmp, harness, spec, &a.overlay, &a.distfiles);
        },
        |project_dir, tmp, _| {
            let guest = if is_vm() { "vm" } else { "sandbox" };
            run_package_script(package_script(tmp, &a.image, guest), project_dir);
        },
    );
    // The second replica goes to a second volunteer (each client fetches one job and exits
    // when idle).
    let mut second = ClientConfig::new(&run.tmp.join("client-2"), &run.harness.master_url(), run.harness.authenticator());
    second.write().expect("second client's config");
    run_package_script(package_script(&run.tmp, &a.image, "sandbox"), &second.project_dir());
    let second = Client::start(&second).expect("start the second client");
    let decided = |run: &Run, wu: &str| {
        let wu = wu.to_owned();
        run.harness
            .wait_until(job_limit(), move |snap| snap.outcome(&wu) != WuOutcome::Pending)
            .unwrap_or_else(|e| panic!("{e}\nfirst client:\n{}\nsecond client:\n{}", run.client.log_tail(40), second.log_tail(40)))
    };
    let snap = decided(&run, &run.wu);
    let outcome = snap.outcome(&run.wu);
    assert!(
        matches!(&outcome, WuOutcome::Assimilated { detail, .. } if detail.contains("binary packages stored")),
        "{outcome:?}\nharness:\n{}",
        snap.log.join("\n")
    );
    eprintln!("binpkgs: workunit A: {outcome:?}");
    let store = run.tmp.join("project/gah/binpkgs/store");
    let held = std::fs::read_dir(store.join("dev-libs/jemalloc")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(held, 1, "jemalloc in the store {}", store.display());

    // The next publication offers the store; workunit B names that revision.
    publish(&run.tmp, &run.harness, &a.overlay, &a.distfiles, &GuestRoot::None, Some(&store));
    let xz = with_jemalloc("app-arch/xz-utils");
    let mut spec = WorkunitSpec::new(&format!("{}_binpkgs", xz.job_id), xz);
    write_data_ref(&run.tmp, &run.harness, &mut spec);
    let wu_b = spec.name.clone();
    let result_b = run.harness.add_workunit(spec).expect("workunit B").remove(0);
    // The first volunteer exited when idle: it comes back.
    let _ = run.client.wait_exit(Duration::from_secs(60));
    run.client.restart().expect("restart the first client");
    let snap = decided(&run, &wu_b);
    assert!(matches!(snap.outcome(&wu_b), WuOutcome::Assimilated { .. }), "{:?}", snap.outcome(&wu_b));
    let db = Database::open(&run.harness.results_db()).expect("results db");
    let row = db
        .outcomes(&gah_core::db::Filter::default(), gah_core::db::Page::ALL)
        .expect("rows")
        .into_iter()
        .find(|r| r.wu_name == wu_b)
        .expect("workunit B's row");
    assert_eq!(row.status, gah_core::outcome::Status::Success, "{row:?}");
    let report = snap.report(&result_b).expect("report");
    let stderr = &report.stderr_out;
    let archive = gah_validator::load(&run.harness.upload_dir().join(format!("{result_b}_r0_0"))).expect("workunit B's outcome");
    let jemalloc = archive.outcome.packages.iter().find(|p| p.cpv.starts_with("dev-libs/jemalloc-"));
    assert!(
        jemalloc.is_some_and(|p| p.binary),
        "jemalloc was not installed as a binary package: {:?}\n{}",
        archive.outcome.packages,
        tail(stderr, 30)
    );
    eprintln!("binpkgs: workunit B: packages {:?}", archive.outcome.packages);
}

/// as in [`real_boinc_client_runs_a_job_end_to_end`].
#[test]
fn real_boinc_client_runs_a_server_sent_app_version() {
    if !slow_tests_enabled("real_boinc_client_runs_a_server_sent_app_version") {
        return;
    }
    let _one = serial();
    let mut run = start_server_sent("serversent");
    let project_dir = run.client.data_dir().join("projects").join(run.harness.project_dir_name());
    assert!(!project_dir.join("app_info.xml").exists(), "a server-sent run has no app_info.xml");
    let snap = run.wait_decided();
    run.assert_stored_success(&snap);
    run.assert_packages_uploaded(&snap);
    let stderr = &snap.report(&run.result).expect("report").stderr_out;
    if !is_vm() {
        let unpacked = stderr.lines().find(|l| l.contains("gah-app: guest root unpacked"));
        assert!(unpacked.is_some(), "the app did not unpack rootfs.tar; stderr:\n{}", tail(stderr, 40));
    }
    // The scheduler's plan class additions were made, and the client took the key.
    assert!(snap.log.iter().any(|l| l.contains("server-sent app version") && l.contains("--memory_size_mb")), "{}", snap.log.join("\n"));
    let state = std::fs::read_to_string(run.client.data_dir().join("client_state.xml")).expect("client_state.xml");
    let key = run.harness.code_sign_key().expect("the harness made a key").public_hex();
    assert!(state.contains(key.trim()), "the client did not keep the project's code-signing key");
    assert!(state.contains("<signature_required/>"), "the client did not require signatures on the app version's files");
    assert!(!state.contains("<anonymous_platform/>"), "the project should not be anonymous platform");
    run.client.wait_exit(Duration::from_secs(120)).unwrap_or_else(|e| panic!("the client did not exit when idle: {e}"));
    run.assert_clean("after the server-sent job");
}

/// Server-sent app files whose signatures are wrong: the real client refuses them and never
/// runs the app. Cheap: no guest, an empty root. The bad signatures come the way
/// update_versions takes one, a `NAME.sig` beside the file: gah-agent's is made with another
/// key (above `ASYNC_FILE_THRESHOLD`, 10 MB, the client checks it in `ASYNC_VERIFY::finish`:
/// `decrypt_public` fails, -231 `ERR_CRYPTO`), libboinc's is the project key's signature of
/// another file (`FILE_INFO::verify_file`: "Signature verification failed", -120
/// `ERR_RSA_FAILED`). The task ends as a download error (-186 `ERR_RESULT_DOWNLOAD`,
/// "app_version download error") naming both files.
#[test]
fn real_boinc_client_refuses_a_badly_signed_app_file() {
    if !slow_tests_enabled("real_boinc_client_refuses_a_badly_signed_app_file") {
        return;
    }
    let _one = serial();
    let bad = Mutex::new(Vec::<String>::new());
    let mut run = launch(
        "badsig",
        |tmp, harness, spec| {
            let empty = tmp.join("empty-inputs");
            std::fs::create_dir_all(&empty).unwrap();
            stage_data(tmp, harness, spec, &empty, &empty);
        },
        |_, tmp, harness| {
            let (empty, image) = (tmp.join("empty"), tmp.join("no-image"));
            std::fs::create_dir_all(&empty).unwrap();
            std::fs::create_dir_all(&image).unwrap();
            tar_dir(&empty, &image.join("rootfs.tar"));
            package_server_sent(tmp, harness, &image, "sandbox", |vdir| {
                let named = |prefix: &str| {
                    std::fs::read_dir(vdir)
                        .unwrap()
                        .flatten()
                        .map(|e| e.path())
                        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)))
                        .unwrap_or_else(|| panic!("no {prefix}* in {}", vdir.display()))
                };
                let sig_of = |p: &Path| p.with_file_name(format!("{}.sig", p.file_name().unwrap().to_string_lossy()));
                let agent = named("gah-agent-");
                let stranger = CodeSignKey::generate().expect("key");
                std::fs::write(sig_of(&agent), stranger.sign_file(&agent).expect("sign")).unwrap();
                let lib = named("libboinc-");
                let project_key = harness.make_code_sign_key().expect("key");
                std::fs::write(sig_of(&lib), project_key.sign_file(&vdir.join("version.xml")).expect("sign")).unwrap();
                let mut bad = bad.lock().unwrap();
                for p in [agent, lib] {
                    bad.push(p.file_name().unwrap().to_string_lossy().into_owned());
                }
            });
        },
    );
    let bad = bad.into_inner().unwrap();
    let result = run.result.clone();
    let snap = run
        .client
        .watch()
        .task(&result)
        .server(&run.harness)
        .until("the task's report", Duration::from_secs(600), |s| s.snap.clone().filter(|snap| snap.report(&result).is_some()))
        .unwrap_or_else(|e| panic!("{e}"));
    let report = snap.report(&result).unwrap();
    let log = run.client.log();
    eprintln!(
        "badsig: reported state {} ({}), exit status {}; stderr:\n{}\nclient log:\n{}",
        report.state,
        client_state::name(report.state),
        report.exit_status,
        report.stderr_out,
        log.lines().filter(|l| bad.iter().any(|b| l.contains(b)) || l.to_lowercase().contains("signature")).collect::<Vec<_>>().join("\n")
    );
    // ERR_RESULT_DOWNLOAD: the app version's files could not be had.
    assert_eq!(report.exit_status, -186, "{report:?}");
    assert!(report.stderr_out.contains("app_version download error"), "{}", report.stderr_out);
    for (name, code) in bad.iter().zip(["-231", "-120"]) {
        let at = report
            .stderr_out
            .find(&format!("<file_name>{name}</file_name>"))
            .unwrap_or_else(|| panic!("{name} not refused: {}", report.stderr_out));
        assert!(report.stderr_out[at..].contains(&format!("<error_code>{code} ")), "{name} should be {code}: {}", report.stderr_out);
    }
    assert!(log.contains(&format!("Signature verification failed for {}", bad[1])), "log:\n{}", tail(&log, 60));
    assert!(!log.contains("Starting task"), "the app ran:\n{}", tail(&log, 60));
    assert!(matches!(snap.outcome(&run.wu), WuOutcome::Failed { .. }), "{:?}", snap.outcome(&run.wu));
    let _ = run.client.wait_exit(Duration::from_secs(120));
    run.assert_clean("after the refused files");
}
