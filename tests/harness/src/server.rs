//! The project side: one HTTP server on 127.0.0.1 playing BOINC's master page, scheduler
//! (`cgi`), download server and `file_upload_handler`, plus a tiny transitioner, validator
//! and assimilator that call gentoo@home's own (`gah_validator`, `gah_assimilator`).
//!
//! URLs (PORT from [`Harness::port`]):
//! - `http://127.0.0.1:PORT/gah/` master page, naming the scheduler both ways BOINC reads
//!   (`<scheduler>` and `<link rel="boinc_scheduler">`);
//! - `POST /gah_cgi/cgi` scheduler RPC;
//! - `POST /gah_cgi/file_upload_handler` upload handler (`get_file_size`, `file_upload`);
//! - `GET /gah/download/PATH` input and app version files (with `Range: bytes=N-`), and any
//!   file below the download folder, as Apache serves it (the data plane's `cvmfs/`).
//!
//! App versions: anonymous platform (the client's `app_info.xml`) or server-sent
//! ([`Harness::add_app_versions`], signed and sent as [`crate::app_versions`] says).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use gah_core::db::Database;
use gah_core::job::Job;

use crate::app_versions::{self, AppVersion, CodeSignKey};
use crate::boinc_scripts::{self, AssimilatorWorkunit, BoincServer, Canonical, ValidatorDecision, ValidatorResult};
use crate::create_work::{self, InputFile, InputTemplate, PlanClass, WorkunitValues};
use crate::wait::{self, Ended, Step, WaitError};
use crate::xml::{self, esc, ReportedResult, SchedulerRequest};

/// Client result states (BOINC `common_defs.h`).
pub mod client_state {
    /// The app failed.
    pub const COMPUTE_ERROR: i64 = 3;
    /// Output uploaded: a success from the client's side.
    pub const FILES_UPLOADED: i64 = 5;
    /// Aborted (by the user, the client or the project).
    pub const ABORTED: i64 = 6;
    /// An upload failed for good.
    pub const UPLOAD_FAILED: i64 = 7;

    /// The state's name, as `boinccmd` shows it.
    pub fn name(state: i64) -> &'static str {
        match state {
            0 => "new",
            1 => "downloading",
            2 => "downloaded",
            COMPUTE_ERROR => "compute error",
            4 => "uploading",
            FILES_UPLOADED => "uploaded",
            ABORTED => "aborted",
            UPLOAD_FAILED => "upload failed",
            _ => "unknown",
        }
    }
}

/// BOINC's `WU_ERROR_TOO_MANY_ERROR_RESULTS` (`db/boinc_db_types.h`): more error results
/// than `max_error_results`.
pub const WU_ERROR_TOO_MANY_ERROR_RESULTS: i64 = 2;
/// BOINC's `WU_ERROR_TOO_MANY_TOTAL_RESULTS`: another result needed, `max_total_results` made.
pub const WU_ERROR_TOO_MANY_TOTAL_RESULTS: i64 = 8;
/// BOINC's `EXIT_ABORTED_VIA_GUI` (`lib/error_numbers.h`): the exit status of a task the
/// user aborted, which the transitioner does not count as an error.
pub const EXIT_ABORTED_VIA_GUI: i32 = 203;

/// How the harness presents itself.
#[derive(Debug, Clone)]
pub struct HarnessConfig {
    /// Where served inputs (`download/`), uploads (`upload/`) and the results database
    /// (`results/results.sqlite`) live.
    pub state_dir: PathBuf,
    /// TCP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// `<project_name>`.
    pub project_name: String,
    /// The account's authenticator; requests with another one get an error message.
    pub authenticator: String,
    /// The BOINC app name.
    pub app_name: String,
    /// `<request_delay>` in replies, seconds.
    pub request_delay_secs: f64,
    /// Run validation and assimilation as a real server does, through the installed
    /// programs and BOINC's command-line rules; `None`: call the libraries in process.
    pub daemons: Option<Daemons>,
    /// The input template `create_work` builds workunits from (default: the product's
    /// `templates/gah_in`).
    pub input_template: InputTemplate,
    /// The project's `plan_class_spec.xml` (default: the product's
    /// `templates/plan_class_spec.xml`): a server-sent version's plan class gives its
    /// `avg_ncpus` and `cmdline` ([`PlanClass::usage`]).
    pub plan_classes: Vec<PlanClass>,
}

/// BOINC's `script_validator` and `script_assimilator`, as the harness plays them when
/// [`HarnessConfig::daemons`] is set: each command is built by [`crate::boinc_scripts`] from
/// the daemon's option (as written in `config.xml`) and run from `project/tmp_harness/`, so
/// `../bin/NAME` is `project/bin/NAME`; the project's `gah.conf` names the harness's results
/// database ([`Daemons::configure`]), and no daemon gets it from its environment.
#[derive(Debug, Clone)]
pub struct Daemons {
    /// The project folder; its `bin/` holds the programs.
    pub project: PathBuf,
    /// `script_validator --init_script`.
    pub init_script: String,
    /// `script_validator --compare_script`.
    pub compare_script: String,
    /// `script_assimilator --script`.
    pub assimilator_script: String,
    /// Whose rules.
    pub server: BoincServer,
}

impl Daemons {
    /// The daemons configured by the `<cmd>script_validator ...</cmd>` and
    /// `<cmd>script_assimilator ...</cmd>` lines of `readme` (the `config.xml` block an
    /// administrator pastes, `templates/README.md`), for the project folder `project`.
    pub fn from_readme(readme: &str, project: &Path, server: BoincServer) -> anyhow::Result<Daemons> {
        let cmd = |daemon: &str| -> anyhow::Result<String> {
            let open = format!("<cmd>{daemon} ");
            let line =
                readme.lines().find_map(|l| l.split_once(&open).map(|(_, rest)| rest)).with_context(|| format!("no `{open}` line"))?;
            Ok(format!("{daemon} {}", line.split_once("</cmd>").map_or(line, |(cmd, _)| cmd)))
        };
        let (validator, assimilator) = (cmd("script_validator")?, cmd("script_assimilator")?);
        let option = |line: &str, name: &str| boinc_scripts::daemon_option(line, name).with_context(|| format!("`{line}` has no {name}"));
        Ok(Daemons {
            project: project.to_owned(),
            init_script: option(&validator, "--init_script")?,
            compare_script: option(&validator, "--compare_script")?,
            assimilator_script: option(&assimilator, "--script")?,
            server,
        })
    }

    /// Puts `programs` into the project's `bin/` under their own names (symbolic links), as
    /// the administrator installs them.
    /// Writes the project's `gah.conf` naming `results_db`, as an admin (or `gah deploy`) does.
    pub fn configure(&self, results_db: &Path) -> anyhow::Result<()> {
        let conf = self.project.join(gah_core::project::FILE_NAME);
        fs::create_dir_all(&self.project).with_context(|| format!("create {}", self.project.display()))?;
        fs::write(&conf, format!("results_db = {}\n", results_db.display())).with_context(|| format!("write {}", conf.display()))
    }

    pub fn install(&self, programs: &[PathBuf]) -> anyhow::Result<()> {
        let bin = self.project.join("bin");
        fs::create_dir_all(&bin).with_context(|| format!("create {}", bin.display()))?;
        for p in programs {
            let to = bin.join(p.file_name().context("a program has a file name")?);
            let _ = fs::remove_file(&to);
            std::os::unix::fs::symlink(p, &to).with_context(|| format!("link {} to {}", to.display(), p.display()))?;
        }
        Ok(())
    }
}

impl HarnessConfig {
    /// Defaults for app `gah` with state under `state_dir`.
    pub fn new(state_dir: &Path) -> HarnessConfig {
        HarnessConfig {
            state_dir: state_dir.to_path_buf(),
            port: 0,
            project_name: "gentoo@home test harness".into(),
            authenticator: "gah-harness-authenticator".into(),
            app_name: "gah".into(),
            request_delay_secs: 5.0,
            daemons: None,
            input_template: InputTemplate::gah_in(),
            plan_classes: PlanClass::parse_spec(PLAN_CLASS_SPEC).expect("templates/plan_class_spec.xml parses"),
        }
    }
}

/// The product's `templates/plan_class_spec.xml`.
pub const PLAN_CLASS_SPEC: &str = include_str!("../../../templates/plan_class_spec.xml");

/// One workunit to hand out: what the work generator gives `create_work` (its command line).
/// The input template ([`HarnessConfig::input_template`]) then has the last word, as with
/// the real `create_work` ([`crate::create_work`]).
#[derive(Debug, Clone)]
pub struct WorkunitSpec {
    /// Workunit name.
    pub name: String,
    /// Its job: staged as `<name>.json` and given to create_work as the first input file.
    pub job: Job,
    /// The further input files named on create_work's command line, in the template's order,
    /// each already staged ([`Harness::stage_file`]): for `templates/gah_in` the workunit's
    /// `data.json`.
    pub files: Vec<String>,
    /// `<command_line>` (appended to the app version's `<cmdline>`); empty for none.
    pub command_line: String,
    /// `rsc_fpops_est`.
    pub fpops_est: f64,
    /// `rsc_fpops_bound` (the client's time limit is bound / host flops).
    pub fpops_bound: f64,
    /// `rsc_memory_bound`, bytes.
    pub memory_bound: f64,
    /// `rsc_disk_bound`, bytes.
    pub disk_bound: f64,
    /// Seconds from sending to the report deadline.
    pub delay_bound_secs: u64,
    /// Valid results needed before assimilation.
    pub min_quorum: u32,
    /// Replicas created up front.
    pub target_nresults: u32,
    /// More error results than this fail the workunit as a whole
    /// (`WU_ERROR_TOO_MANY_ERROR_RESULTS`).
    pub max_error_results: u32,
    /// Results ever created, at most; needing one more fails the workunit
    /// (`WU_ERROR_TOO_MANY_TOTAL_RESULTS`). create_work raises it to `target_nresults`.
    pub max_total_results: u32,
    /// The output template (create_work's `--result_template`): `templates/gah_out`.
    pub result_template: String,
}

impl WorkunitSpec {
    /// One replica, quorum 1, generous bounds, no second chance: one failed result fails the
    /// workunit (one result at most, so the next one needed is one too many).
    pub fn new(name: &str, job: Job) -> WorkunitSpec {
        WorkunitSpec {
            name: name.into(),
            job,
            files: Vec::new(),
            command_line: String::new(),
            fpops_est: 3.6e12,
            fpops_bound: 1e17,
            memory_bound: 1e9,
            disk_bound: 2e10,
            delay_bound_secs: 86_400,
            min_quorum: 1,
            target_nresults: 1,
            max_error_results: 1,
            max_total_results: 1,
            result_template: RESULT_TEMPLATE.to_owned(),
        }
    }
}

/// What happened to a workunit on the server's side.
#[derive(Debug, Clone, PartialEq)]
pub enum WuOutcome {
    /// Waiting for results.
    Pending,
    /// The canonical result is in the results database (the assimilator's words).
    Assimilated {
        /// The canonical result's name.
        canonical: String,
        /// `gah_assimilator`'s summary ("stored", "quarantined: ...").
        detail: String,
    },
    /// Too many errors: recorded as an infrastructure failure.
    Failed {
        /// Why.
        detail: String,
    },
}

#[derive(Debug, Clone)]
struct Wu {
    id: i64,
    spec: WorkunitSpec,
    inputs: Vec<InputFile>,
    results: Vec<String>,
    outcome: WuOutcome,
    /// The transitioner's error mask (0: none).
    error_mask: i64,
    /// `file_delete_state` DONE.
    inputs_deleted: bool,
}

/// The project's output template, as `gah deploy` installs it.
pub const RESULT_TEMPLATE: &str = include_str!("../../../templates/gah_out");

#[derive(Debug, Clone)]
struct ResultRec {
    id: u64,
    name: String,
    wu: String,
    /// Its output files, from the workunit's output template.
    files: create_work::ResultFiles,
    sent: Option<f64>,
    report: Option<ReportedResult>,
    /// The init script's word or the client's failure: "valid", "invalid: ...",
    /// "retry: ...", "error: ...".
    verdict: Option<String>,
    /// BOINC's `validate_state`, which the validator's compare pass sets.
    validate_state: ValidateState,
    /// Outcome `DIDNT_NEED`: never to be sent.
    didnt_need: bool,
}

/// BOINC's `VALIDATE_STATE_*` (`db/boinc_db_types.h`), the ones the harness reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValidateState {
    Init,
    Valid,
    Invalid,
    Inconclusive,
}

/// A result's server state and outcome as the transitioner counts them
/// (`sched/transitioner.cpp` 216-319).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerOutcome {
    Unsent,
    InProgress,
    Success,
    ClientError,
    /// The init script refused it (`RESULT_OUTCOME_VALIDATE_ERROR`, `check_set` 111-118).
    ValidateError,
    /// A user abort (exit status 203), counted as no reply, not as an error.
    NoReply,
    DidntNeed,
}

impl ResultRec {
    fn server_outcome(&self) -> ServerOutcome {
        match &self.report {
            _ if self.didnt_need => ServerOutcome::DidntNeed,
            None if self.sent.is_none() => ServerOutcome::Unsent,
            None => ServerOutcome::InProgress,
            Some(r) if r.state == client_state::FILES_UPLOADED && r.exit_status == 0 => {
                if self.verdict.as_deref().is_some_and(|v| v.starts_with("invalid")) {
                    ServerOutcome::ValidateError
                } else {
                    ServerOutcome::Success
                }
            }
            Some(r) if r.exit_status == i64::from(EXIT_ABORTED_VIA_GUI) => ServerOutcome::NoReply,
            Some(_) => ServerOutcome::ClientError,
        }
    }
}

/// Everything the harness saw, for tests to wait on and assert.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Scheduler RPCs answered.
    pub scheduler_rpcs: u32,
    /// Master page fetches.
    pub master_fetches: u32,
    /// Results sent to the client.
    pub sent: Vec<String>,
    /// Results reported back, in order.
    pub reports: Vec<ReportedResult>,
    /// Completed uploads: (file name, bytes).
    pub uploads: Vec<(String, u64)>,
    /// Validator verdicts per result.
    pub verdicts: BTreeMap<String, String>,
    /// Per workunit.
    pub workunits: BTreeMap<String, WuOutcome>,
    /// A line per request and decision.
    pub log: Vec<String>,
}

impl Snapshot {
    /// The workunit's outcome, `Pending` when unknown.
    pub fn outcome(&self, wu: &str) -> WuOutcome {
        self.workunits.get(wu).cloned().unwrap_or(WuOutcome::Pending)
    }

    /// The report of `result`, if any.
    pub fn report(&self, result: &str) -> Option<&ReportedResult> {
        self.reports.iter().find(|r| r.name == result)
    }
}

struct State {
    config: HarnessConfig,
    base_url: String,
    wus: BTreeMap<String, Wu>,
    results: BTreeMap<String, ResultRec>,
    snap: Snapshot,
    next_wu_id: i64,
    /// The project's code-signing key, made with the first server-sent app version.
    code_sign_key: Option<CodeSignKey>,
    /// Server-sent app versions ([`Harness::add_app_versions`]).
    app_versions: Vec<AppVersion>,
}

/// The running harness; stops its server thread on drop.
pub struct Harness {
    state: Arc<Mutex<State>>,
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    config: HarnessConfig,
}

impl Harness {
    /// Binds 127.0.0.1 and starts serving.
    pub fn start(config: HarnessConfig) -> anyhow::Result<Harness> {
        for d in ["download", "upload", "results"] {
            fs::create_dir_all(config.state_dir.join(d)).with_context(|| format!("create {}", config.state_dir.join(d).display()))?;
        }
        if let Some(d) = &config.daemons {
            d.configure(&config.state_dir.join("results/results.sqlite"))?;
        }
        let server =
            tiny_http::Server::http(("127.0.0.1", config.port)).map_err(|e| anyhow::anyhow!("bind 127.0.0.1:{}: {e}", config.port))?;
        let port = server.server_addr().to_ip().context("server address")?.port();
        let base_url = format!("http://127.0.0.1:{port}");
        let state = Arc::new(Mutex::new(State {
            config: config.clone(),
            base_url,
            wus: BTreeMap::new(),
            results: BTreeMap::new(),
            snap: Snapshot::default(),
            next_wu_id: 1,
            code_sign_key: None,
            app_versions: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = state.clone();
            let stop = stop.clone();
            std::thread::Builder::new().name("gah-boinc-harness".into()).spawn(move || serve(server, state, stop))?
        };
        Ok(Harness { state, port, stop, thread: Some(thread), config })
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The master URL the client attaches to (with BOINC's trailing slash).
    pub fn master_url(&self) -> String {
        format!("http://127.0.0.1:{}/gah/", self.port)
    }

    /// The scheduler URL the master page names.
    pub fn scheduler_url(&self) -> String {
        format!("http://127.0.0.1:{}/gah_cgi/cgi", self.port)
    }

    /// The project's folder name under the client's `projects/` (BOINC's
    /// `escape_project_url`: scheme dropped, other characters than `[A-Za-z0-9._-]` → `_`,
    /// one trailing `_` removed).
    pub fn project_dir_name(&self) -> String {
        project_dir_name(&self.master_url())
    }

    /// The authenticator the account file must carry.
    pub fn authenticator(&self) -> &str {
        &self.config.authenticator
    }

    /// The results database the assimilator writes.
    pub fn results_db(&self) -> PathBuf {
        self.config.state_dir.join("results/results.sqlite")
    }

    /// Where uploads land.
    pub fn upload_dir(&self) -> PathBuf {
        self.config.state_dir.join("upload")
    }

    /// The download folder (BOINC's download hierarchy, with no fan-out).
    pub fn download_dir(&self) -> PathBuf {
        self.config.state_dir.join("download")
    }

    /// Stages `path` into the download folder under its own file name, as `dir_hier_path` and
    /// a copy (or `stage_file`) do; returns that name. Download files are immutable in BOINC
    /// (`tools/stage_file`: "file exists with different contents"): a name already staged
    /// with other bytes is refused, the same bytes are fine.
    pub fn stage_file(&self, path: &Path) -> anyhow::Result<String> {
        let name = path.file_name().and_then(|n| n.to_str()).with_context(|| format!("{} has no file name", path.display()))?;
        let bytes = fs::read(path).with_context(|| format!("read {}", path.display()))?;
        stage_bytes(&self.download_dir(), name, &bytes)?;
        Ok(name.to_owned())
    }

    /// Queues a workunit and its `target_nresults` results as `create_work` would
    /// ([`InputTemplate::create_work`]): the job staged as `<name>.json`, then the job file and
    /// `spec.files` given to the input template, whose `<workunit>` values win over the
    /// spec's. Returns the result names.
    pub fn add_workunit(&self, mut spec: WorkunitSpec) -> anyhow::Result<Vec<String>> {
        let download = self.download_dir();
        let job_file = format!("{}.json", spec.name);
        stage_bytes(&download, &job_file, &spec.job.to_json())?;
        let mut infiles = vec![job_file.as_str()];
        infiles.extend(spec.files.iter().map(String::as_str));
        let mut values = WorkunitValues {
            fpops_est: spec.fpops_est,
            fpops_bound: spec.fpops_bound,
            memory_bound: spec.memory_bound,
            disk_bound: spec.disk_bound,
            delay_bound_secs: spec.delay_bound_secs,
            min_quorum: spec.min_quorum,
            target_nresults: spec.target_nresults,
            max_error_results: spec.max_error_results,
            max_total_results: spec.max_total_results,
        };
        let inputs = self.config.input_template.create_work(&download, &infiles, &mut values).context("create_work")?;
        spec.fpops_est = values.fpops_est;
        spec.fpops_bound = values.fpops_bound;
        spec.memory_bound = values.memory_bound;
        spec.disk_bound = values.disk_bound;
        spec.delay_bound_secs = values.delay_bound_secs;
        spec.min_quorum = values.min_quorum;
        spec.target_nresults = values.target_nresults;
        spec.max_error_results = values.max_error_results;
        spec.max_total_results = values.max_total_results;
        let mut st = self.state.lock().unwrap();
        if st.wus.contains_key(&spec.name) {
            bail!("workunit {} exists", spec.name);
        }
        let id = st.next_wu_id;
        st.next_wu_id += 1;
        let name = spec.name.clone();
        let n = spec.target_nresults.max(1);
        st.wus.insert(
            name.clone(),
            Wu { id, spec, inputs, results: Vec::new(), outcome: WuOutcome::Pending, error_mask: 0, inputs_deleted: false },
        );
        st.snap.workunits.insert(name.clone(), WuOutcome::Pending);
        let mut names = Vec::new();
        for _ in 0..n {
            names.push(st.new_result(&name));
        }
        st.log(format!("workunit {name} (id {id}) queued with results {names:?}"));
        Ok(names)
    }

    /// Adds the server-sent app versions laid out under `apps` (a project's `apps/`, as
    /// `scripts/package-app-version.sh --boinc-apps` writes it), as the project's
    /// `bin/update_versions` does ([`app_versions::update_versions`]): every file signed with
    /// the project's code-signing key (made now if there is none yet), staged into the
    /// download folder, gzipped where `<gzip/>`. From now on the scheduler sends a client
    /// without anonymous platform the best of them for its host, and the key.
    pub fn add_app_versions(&self, apps: &Path) -> anyhow::Result<Vec<AppVersion>> {
        let key = self.make_code_sign_key()?;
        let url = format!("http://127.0.0.1:{}/gah/download", self.port);
        let avs = app_versions::update_versions(apps, &self.config.app_name, &key, &self.download_dir(), &url)?;
        let mut st = self.state.lock().unwrap();
        for av in &avs {
            st.log(format!("update_versions: app version {} {} {} added", av.version_num, av.platform, av.plan_class));
        }
        st.app_versions.extend(avs.iter().cloned());
        Ok(avs)
    }

    /// The project's code-signing key, made now if there is none (`crypt_prog -genkey`).
    pub fn make_code_sign_key(&self) -> anyhow::Result<CodeSignKey> {
        if let Some(k) = self.code_sign_key() {
            return Ok(k);
        }
        let k = CodeSignKey::generate()?;
        Ok(self.state.lock().unwrap().code_sign_key.get_or_insert(k).clone())
    }

    /// The project's code-signing key, once there is one.
    pub fn code_sign_key(&self) -> Option<CodeSignKey> {
        self.state.lock().unwrap().code_sign_key.clone()
    }

    /// A copy of what the harness saw so far.
    pub fn snapshot(&self) -> Snapshot {
        self.state.lock().unwrap().snap.clone()
    }

    /// The last `n` lines of the harness's log.
    pub fn log_tail(&self, n: usize) -> String {
        let st = self.state.lock().unwrap();
        st.snap.log[st.snap.log.len().saturating_sub(n)..].join("\n")
    }

    /// Waits (polling every 0.5 s) until `done` holds, at most `timeout`; stops early once the
    /// server's state is final ([`Ended::ServerSettled`]). The error carries the harness log.
    /// To stop when the client exits too, wait through [`crate::client::Client::watch`].
    pub fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&Snapshot) -> bool) -> Result<Snapshot, WaitError> {
        wait::poll(timeout, Duration::from_millis(500), || {
            let (snap, settled) = {
                let st = self.state.lock().unwrap();
                (st.snap.clone(), st.settled())
            };
            if done(&snap) {
                Step::Done(snap)
            } else if settled {
                Step::Ended(Ended::ServerSettled)
            } else {
                Step::Pending
            }
        })
        .map_err(|stopped| stopped.into_error("harness condition", None, format!("harness log (last 80 lines):\n{}", self.log_tail(80))))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// BOINC's project folder name for a master URL.
pub fn project_dir_name(master_url: &str) -> String {
    let rest = master_url.split_once("://").map(|(_, r)| r).unwrap_or(master_url);
    let mut out: String = rest.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect();
    if out.ends_with('_') {
        out.pop();
    }
    out
}

/// Puts `bytes` into the download folder as `name`, unless the same bytes are there;
/// different bytes under a staged name are refused (BOINC never changes a download file).
fn stage_bytes(download: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    if name.is_empty() || name.contains('/') || name.contains("..") {
        bail!("bad download file name {name:?}");
    }
    let path = download.join(name);
    match fs::read(&path) {
        Ok(old) if old == bytes => return Ok(()),
        Ok(_) => bail!("stage {name}: file exists with different contents"),
        Err(_) => {}
    }
    let tmp = download.join(format!(".{name}.tmp"));
    fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

/// A byte count or offset the client sent as a double (BOINC's XML does).
#[allow(clippy::cast_possible_truncation)] // `as` saturates: negatives and NaN give 0, and the client sends whole numbers.
fn byte_count(x: f64) -> u64 {
    x as u64
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl State {
    fn log(&mut self, line: String) {
        crate::say(&line);
        self.snap.log.push(line);
    }

    /// Nothing can change any more: every workunit decided, every result reported or no
    /// longer needed.
    fn settled(&self) -> bool {
        !self.wus.is_empty()
            && self.wus.values().all(|w| w.outcome != WuOutcome::Pending)
            && self.results.values().all(|r| r.didnt_need || (r.sent.is_some() && r.report.is_some()))
    }

    fn new_result(&mut self, wu: &str) -> String {
        let w = self.wus.get_mut(wu).expect("workunit");
        let name = format!("{}_{}", wu, w.results.len());
        w.results.push(name.clone());
        let files = create_work::process_result_template(&w.spec.result_template, &name).expect("the output template");
        let id = self.results.len() as u64 + 1;
        let rec = ResultRec {
            id,
            name: name.clone(),
            wu: wu.into(),
            files,
            sent: None,
            report: None,
            verdict: None,
            validate_state: ValidateState::Init,
            didnt_need: false,
        };
        self.results.insert(name.clone(), rec);
        name
    }

    fn scheduler(&mut self, body: &[u8]) -> String {
        self.snap.scheduler_rpcs += 1;
        let mut reply = String::from("<scheduler_reply>\n<scheduler_version>720</scheduler_version>\n");
        let _ = writeln!(reply, "<project_name>{}</project_name>", esc(&self.config.project_name));
        let _ = writeln!(reply, "<master_url>{}/gah/</master_url>", self.base_url);
        let req = match xml::parse_scheduler_request(body) {
            Ok(r) => r,
            Err(e) => {
                self.log(format!("scheduler: bad request: {e:#}"));
                let _ = writeln!(reply, "<message priority=\"notice\">harness: bad request: {}</message>", esc(&format!("{e:#}")));
                let _ = writeln!(reply, "<request_delay>{}</request_delay>\n</scheduler_reply>", self.config.request_delay_secs);
                return reply;
            }
        };
        self.log(format!(
            "scheduler: client {} hostid {} reports {:?} wants work {} (req {} s, {} inst), app versions {:?}, other results {:?}",
            req.client_version,
            req.hostid,
            req.results.iter().map(|r| format!("{} state {} exit {}", r.name, r.state, r.exit_status)).collect::<Vec<_>>(),
            req.wants_work(),
            req.work_req_seconds.max(req.cpu_req_secs),
            req.cpu_req_instances,
            req.app_versions,
            req.other_results
        ));
        if req.authenticator != self.config.authenticator {
            let _ = writeln!(reply, "<message priority=\"notice\">harness: unknown authenticator</message>");
            let _ = writeln!(reply, "<request_delay>{}</request_delay>\n</scheduler_reply>", self.config.request_delay_secs);
            return reply;
        }
        if req.hostid == 0 {
            reply.push_str("<hostid>1</hostid>\n");
        }
        let _ = writeln!(reply, "<request_delay>{}</request_delay>", self.config.request_delay_secs);

        // Reported results: acknowledge every one (also unknown ones, so the client lets go).
        for r in &req.results {
            let _ = writeln!(reply, "<result_ack>\n    <name>{}</name>\n</result_ack>", esc(&r.name));
            self.handle_report(r);
        }

        // sched/handle_request.cpp `send_code_sign_key`: a client without the key gets it; one
        // with another key would need a signature of the new key by the old one, which the
        // harness has none of: such a client gets no work.
        let mut key_ok = true;
        if let Some(key) = &self.code_sign_key {
            let public = key.public_hex();
            let public = public.trim();
            if req.code_sign_key.is_empty() {
                let _ = writeln!(reply, "<code_sign_key>\n{public}\n</code_sign_key>");
            } else if req.code_sign_key.trim() != public {
                key_ok = false;
                self.log("scheduler: the client has another code-signing key: no work".into());
            }
        }
        if req.wants_work() && key_ok {
            self.send_work(&req, &mut reply);
        }
        reply.push_str("</scheduler_reply>\n");
        reply
    }

    fn send_work(&mut self, req: &SchedulerRequest, reply: &mut String) {
        let app = self.config.app_name.clone();
        // Anonymous platform when the client says its platform is "anonymous"
        // (`sched/sched_send.cpp` `send_work_setup`, `is_anonymous`; the client sends
        // `<app_versions>` in every request, `client/cs_scheduler.cpp`): its `app_info.xml`
        // versions. Else the server's own, sent with the result (`add_result_to_reply`).
        let (av, server_sent) = if req.platform_name == "anonymous" {
            let Some(av) = req.app_versions.iter().find(|a| a.app_name == app).cloned() else {
                self.log("scheduler: anonymous platform without an app version of the app: nothing sent".into());
                let _ = writeln!(reply, "<message priority=\"notice\">harness: app_info.xml has no app {}</message>", esc(&app));
                return;
            };
            (av, None)
        } else {
            match self.server_sent_version(req, reply) {
                Some((av, xml)) => (av, Some(xml)),
                None => return,
            }
        };
        let Some(result) = self.results.values().find(|r| r.sent.is_none() && !r.didnt_need).map(|r| r.name.clone()) else {
            let _ = writeln!(reply, "<message priority=\"low\">harness: no work available</message>");
            return;
        };
        let (wu_name, files) = {
            let r = &self.results[&result];
            (r.wu.clone(), r.files.clone())
        };
        let w = self.wus[&wu_name].clone();
        let base = self.base_url.clone();
        let platform = if av.platform.is_empty() { req.platform_name.clone() } else { av.platform.clone() };
        let _ = writeln!(reply, "<app>\n    <name>{}</name>\n    <user_friendly_name>gentoo@home</user_friendly_name>\n</app>", esc(&app));
        if let Some(xml) = &server_sent {
            reply.push_str(xml);
        }
        for f in &w.inputs {
            let _ = writeln!(
                reply,
                "<file_info>\n    <name>{}</name>\n    <url>{base}/gah/download/{}</url>\n    <md5_cksum>{}</md5_cksum>\n    <nbytes>{}</nbytes>\n{}{}</file_info>",
                esc(&f.physical),
                esc(&f.physical),
                f.md5,
                f.nbytes,
                if f.sticky { "    <sticky/>\n" } else { "" },
                if f.no_delete { "    <no_delete/>\n" } else { "" },
            );
        }
        reply.push_str(&files.file_infos.replace("<UPLOAD_URL/>", &format!("{base}/gah_cgi/file_upload_handler")));
        let _ = write!(
            reply,
            "<workunit>\n    <name>{}</name>\n    <app_name>{}</app_name>\n    <version_num>{}</version_num>\n",
            esc(&wu_name),
            esc(&app),
            av.version_num
        );
        if !w.spec.command_line.is_empty() {
            let _ = writeln!(reply, "    <command_line>{}</command_line>", esc(&w.spec.command_line));
        }
        let _ = writeln!(
            reply,
            "    <rsc_fpops_est>{:e}</rsc_fpops_est>\n    <rsc_fpops_bound>{:e}</rsc_fpops_bound>\n    <rsc_memory_bound>{:e}</rsc_memory_bound>\n    <rsc_disk_bound>{:e}</rsc_disk_bound>",
            w.spec.fpops_est, w.spec.fpops_bound, w.spec.memory_bound, w.spec.disk_bound
        );
        for f in &w.inputs {
            let _ = writeln!(
                reply,
                "    <file_ref>\n        <file_name>{}</file_name>\n        <open_name>{}</open_name>\n    </file_ref>",
                esc(&f.physical),
                esc(&f.open_name)
            );
        }
        reply.push_str("</workunit>\n");
        let deadline = now() + w.spec.delay_bound_secs as f64;
        let _ = write!(
            reply,
            "<result>\n    <name>{}</name>\n    <wu_name>{}</wu_name>\n    <report_deadline>{deadline:.0}</report_deadline>\n    <platform>{}</platform>\n    <version_num>{}</version_num>\n",
            esc(&result),
            esc(&wu_name),
            esc(&platform),
            av.version_num
        );
        if !av.plan_class.is_empty() {
            let _ = writeln!(reply, "    <plan_class>{}</plan_class>", esc(&av.plan_class));
        }
        reply.push_str(&files.file_refs);
        reply.push_str("</result>\n");
        self.results.get_mut(&result).expect("result").sent = Some(now());
        self.snap.sent.push(result.clone());
        self.log(format!("scheduler: sent {result} of {wu_name} (app version {} {})", av.version_num, av.plan_class));
    }

    /// The server-sent app version for the requesting host, as the scheduler picks and writes
    /// it: versions of the request's platform whose plan class accepts the host, the highest
    /// version number, then the most projected flops (`sched/sched_version.cpp`
    /// `get_app_version`); `avg_ncpus` and `cmdline` from the plan class for the host's
    /// usable CPUs (`sched/sched_send.cpp` `get_job_limits`: `p_ncpus` cut by
    /// `max_ncpus_pct`) and memory (`get_mem_sizes`: `m_nbytes` times the larger of the
    /// `ram_max_used_*` fractions), `flops` = `p_fpops` · `avg_ncpus` ·
    /// `projected_flops_scale` (`plan_class_spec.cpp`). None (with a message) when none fits.
    fn server_sent_version(&mut self, req: &SchedulerRequest, reply: &mut String) -> Option<(xml::ClientAppVersion, String)> {
        let mut n = req.p_ncpus.trunc();
        if req.max_ncpus_pct > 0.0 && req.max_ncpus_pct < 100.0 {
            n = (n * req.max_ncpus_pct / 100.0).trunc();
        }
        let effective_ncpus = n.max(1.0);
        // DEFAULT_RAM_SIZE (sched/sched_send.h).
        let ram = if req.m_nbytes > 0.0 { req.m_nbytes } else { 64_000_000.0 };
        let (busy, idle) = (req.ram_max_used_busy_pct / 100.0, req.ram_max_used_idle_pct / 100.0);
        let usable_ram = if busy > 0.0 && idle > 0.0 { ram * busy.max(idle).min(1.0) } else { ram };
        let fpops = if req.p_fpops > 0.0 { req.p_fpops } else { 1e9 };
        let mut best: Option<(i64, f64, usize, f64, String)> = None;
        let mut refused = Vec::new();
        for (i, av) in self.app_versions.iter().enumerate() {
            if av.app_name != self.config.app_name || av.platform != req.platform_name {
                continue;
            }
            let (avg_ncpus, cmdline, scale) = if av.plan_class.is_empty() {
                (1.0, String::new(), 1.0)
            } else {
                let Some(pc) = self.config.plan_classes.iter().find(|p| p.name == av.plan_class) else {
                    refused.push(format!("{}: unknown plan class", av.plan_class));
                    continue;
                };
                let Some((avg, cmdline)) = pc.usage(effective_ncpus, usable_ram) else {
                    refused.push(format!("{}: not enough memory", av.plan_class));
                    continue;
                };
                (avg, cmdline, pc.projected_flops_scale)
            };
            let flops = fpops * avg_ncpus * scale;
            if best.as_ref().is_none_or(|b| (av.version_num, flops) > (b.0, b.1)) {
                best = Some((av.version_num, flops, i, avg_ncpus, cmdline));
            }
        }
        let Some((_, flops, i, avg_ncpus, cmdline)) = best else {
            self.log(format!(
                "scheduler: no app version for platform {} ({} known; {refused:?}): nothing sent",
                req.platform_name,
                self.app_versions.len()
            ));
            let _ = writeln!(
                reply,
                "<message priority=\"notice\">harness: no app version for your platform {}</message>",
                esc(&req.platform_name)
            );
            return None;
        };
        let av = self.app_versions[i].clone();
        let client_av = xml::ClientAppVersion {
            app_name: av.app_name.clone(),
            version_num: av.version_num,
            platform: av.platform.clone(),
            plan_class: av.plan_class.clone(),
        };
        self.log(format!(
            "scheduler: server-sent app version {} {} for {effective_ncpus} CPUs, {:.0} MB: avg_ncpus {avg_ncpus}, cmdline {cmdline:?}",
            av.version_num,
            av.plan_class,
            usable_ram / 1_048_576.0
        ));
        Some((client_av, av.scheduler_xml(avg_ncpus, flops, &cmdline)))
    }

    fn handle_report(&mut self, r: &ReportedResult) {
        self.snap.reports.push(r.clone());
        let Some(rec) = self.results.get_mut(&r.name) else {
            self.log(format!("report: unknown result {}", r.name));
            return;
        };
        if rec.report.is_some() {
            self.log(format!("report: {} reported again", r.name));
            return;
        }
        rec.report = Some(r.clone());
        let wu_name = rec.wu.clone();
        let name = r.name.clone();
        let verdict = if r.state == client_state::FILES_UPLOADED && r.exit_status == 0 {
            // Also when the upload is missing: script_validator passes its path regardless.
            self.init_verdict(&name)
        } else {
            let lines: Vec<&str> = r.stderr_out.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n    ");
            self.log(format!("report: {name} failed on the client; its stderr ends:\n    {tail}"));
            format!("error: client state {} exit status {}", r.state, r.exit_status)
        };
        self.log(format!("validator: {name}: {verdict}"));
        self.results.get_mut(&name).expect("result").verdict = Some(verdict.clone());
        self.snap.verdicts.insert(name, verdict);
        self.transition(&wu_name);
    }

    /// BOINC's validator, transitioner and assimilator for one workunit, in one step, each
    /// doing what its source says (BOINC master, c5c6cb79b9):
    /// - the validator (`sched/validator.cpp` 420-438, 454-469, 572-646, 687-743;
    ///   `sched/validate_util2.cpp` `check_set`, 64-197) runs once a reported success has not
    ///   been validated and there are `min_quorum` viable results (success, not invalid): the
    ///   init script on each (exit 3, "retry later", leaves the result viable; any other
    ///   failure makes it a validate error); with `min_quorum` good ones, each is compared
    ///   with the others, and one that matches `min_quorum/2+1` (itself included) is
    ///   canonical. A compare exit 3 (`VAL_RESULT_TRANSIENT_ERROR`, `script_validator.cpp`
    ///   221-222; `check_set` 162-165) ends the pass at once with no canonical result, as
    ///   "retry later", never as a disagreement: no result is marked invalid. Every viable
    ///   result not decided is then inconclusive, and with no canonical result and as many
    ///   viable results as `target_nresults` the target grows by one (an exit 3 too: the
    ///   6-hour `DELAYED` re-transition it asks for is then overridden by `IMMEDIATE`, and
    ///   otherwise re-transitions a workunit whose results are all inconclusive, which
    ///   validates nothing; the harness has no such timer). A canonical result is
    ///   assimilated and the unsent results become "didn't need" (703-711).
    /// - the transitioner (`sched/transitioner.cpp` 216-319, 357-447): errors are client
    ///   errors (not a user abort, exit status 203) and validate errors;
    ///   `WU_ERROR_TOO_MANY_ERROR_RESULTS` when there are **more** than `max_error_results`;
    ///   new results for `target_nresults` − unsent − in progress − successes, at most
    ///   `max_total_results` in all, and `WU_ERROR_TOO_MANY_TOTAL_RESULTS` when more are
    ///   needed and none allowed. A workunit with an error mask loses its unsent results and
    ///   goes to the assimilator without a canonical result, which `script_assimilator`
    ///   passes as `--error MASK ...` (`sched/script_assimilator.cpp` 137-140).
    /// - `file_deleter` ([`State::file_deleter`]) once it is assimilated and every result is over.
    fn transition(&mut self, wu_name: &str) {
        if self.wus[wu_name].outcome != WuOutcome::Pending {
            self.file_deleter(wu_name);
            return;
        }
        if let Some(canonical) = self.validate(wu_name) {
            self.assimilate_canonical(wu_name, &canonical);
            return;
        }
        let w = self.wus[wu_name].clone();
        let recs: Vec<ResultRec> = w.results.iter().map(|n| self.results[n].clone()).collect();
        let (mut nerrors, mut nsuccess, mut nunsent, mut ninprogress) = (0u32, 0u32, 0u32, 0u32);
        for r in &recs {
            match r.server_outcome() {
                ServerOutcome::Unsent => nunsent += 1,
                ServerOutcome::InProgress => ninprogress += 1,
                ServerOutcome::Success => nsuccess += u32::from(r.validate_state != ValidateState::Invalid),
                ServerOutcome::ClientError | ServerOutcome::ValidateError => nerrors += 1,
                ServerOutcome::NoReply | ServerOutcome::DidntNeed => {}
            }
        }
        let ntotal = u32::try_from(recs.len()).unwrap_or(u32::MAX);
        let mut error_mask = 0;
        if nerrors > w.spec.max_error_results {
            error_mask |= WU_ERROR_TOO_MANY_ERROR_RESULTS;
        }
        let needed = w.spec.target_nresults.saturating_sub(nunsent + ninprogress + nsuccess);
        let allowed = i64::from(w.spec.max_total_results) - i64::from(ntotal);
        if allowed < 0 || (allowed == 0 && needed > 0) {
            error_mask |= WU_ERROR_TOO_MANY_TOTAL_RESULTS;
        }
        if error_mask != 0 {
            self.log(format!(
                "transitioner: {wu_name}: error mask {error_mask} ({nerrors} errors, {ntotal} results of at most {}, {needed} more needed)",
                w.spec.max_total_results
            ));
            self.assimilate_error(wu_name, error_mask, nerrors);
            return;
        }
        let new = needed.min(u32::try_from(allowed).unwrap_or(0));
        for _ in 0..new {
            let r = self.new_result(wu_name);
            self.log(format!("transitioner: {wu_name}: new result {r}"));
        }
    }

    /// The validator's pass over `wu_name` (see [`State::transition`]); the canonical result's
    /// name when it found one.
    fn validate(&mut self, wu_name: &str) -> Option<String> {
        let w = self.wus[wu_name].clone();
        let viable: Vec<String> = w
            .results
            .iter()
            .filter(|n| {
                self.results[*n].server_outcome() == ServerOutcome::Success && self.results[*n].validate_state != ValidateState::Invalid
            })
            .cloned()
            .collect();
        // transitioner.cpp 270-290, 329: a new result to validate and min_quorum successes.
        let new = viable.iter().any(|n| self.results[n].validate_state == ValidateState::Init);
        if !new || viable.len() < w.spec.min_quorum as usize {
            return None;
        }
        // check_set: init_result on each (re-run where it asked to retry).
        let mut good = Vec::new();
        let mut retry = false;
        for n in &viable {
            if self.results[n].verdict.as_deref().is_some_and(|v| v.starts_with("retry")) {
                let verdict = self.init_verdict(n);
                self.log(format!("validator: {n}: {verdict}"));
                self.results.get_mut(n).expect("result").verdict = Some(verdict.clone());
                self.snap.verdicts.insert(n.clone(), verdict);
            }
            match self.results[n].verdict.as_deref() {
                Some("valid") => good.push(n.clone()),
                Some(v) if v.starts_with("retry") => retry = true,
                _ => {}
            }
        }
        let min_valid = w.spec.min_quorum as usize / 2 + 1;
        let mut canonical = None;
        if good.len() >= w.spec.min_quorum as usize {
            'sets: for (i, a) in good.iter().enumerate() {
                let mut matches = vec![false; good.len()];
                matches[i] = true;
                for (j, b) in good.iter().enumerate() {
                    if i == j {
                        continue;
                    }
                    match self.compare(a, b) {
                        ValidatorDecision::Valid => matches[j] = true,
                        ValidatorDecision::Invalid => {}
                        // check_set 162-165: `retry = true; goto cleanup`.
                        ValidatorDecision::RetryLater => {
                            retry = true;
                            break 'sets;
                        }
                    }
                }
                if matches.iter().filter(|m| **m).count() >= min_valid {
                    for (n, m) in good.iter().zip(&matches) {
                        self.results.get_mut(n).expect("result").validate_state =
                            if *m { ValidateState::Valid } else { ValidateState::Invalid };
                    }
                    canonical = Some(a.clone());
                    break;
                }
            }
        }
        let mut n_viable = 0;
        for n in &viable {
            let r = self.results.get_mut(n).expect("result");
            if r.server_outcome() == ServerOutcome::Success && r.validate_state != ValidateState::Invalid {
                n_viable += 1;
            }
            if r.validate_state == ValidateState::Init {
                r.validate_state = ValidateState::Inconclusive;
            }
        }
        if canonical.is_none() {
            let w = self.wus.get_mut(wu_name).expect("wu");
            let why = if retry { "retry later (a script said so)" } else { "no consensus" };
            if n_viable >= w.spec.target_nresults {
                w.spec.target_nresults = n_viable + 1;
                let t = w.spec.target_nresults;
                self.log(format!("validator: {wu_name}: {why}: target_nresults now {t}"));
            } else {
                self.log(format!("validator: {wu_name}: {why}"));
            }
        }
        canonical
    }

    /// The init script's verdict on `result`'s upload ("valid", "invalid: ...", "retry: ..."):
    /// run whether or not the file is there, as `script_validator` passes the path
    /// `get_output_file_paths` builds without looking (`sched/validate_util.cpp` 103-157).
    fn init_verdict(&mut self, result: &str) -> String {
        let r = self.results[result].clone();
        let paths = self.upload_paths(&r);
        if let Some(d) = self.config.daemons.clone() {
            let v = ValidatorResult {
                id: r.id,
                elapsed_time: r.report.as_ref().map_or(0.0, |x| x.final_elapsed_time),
                paths: paths.iter().map(|p| p.display().to_string()).collect(),
            };
            let cmd = boinc_scripts::validator_init_command(&d.init_script, &v, d.server);
            let (decision, said) = self.validator_script(&d, &cmd);
            match decision {
                ValidatorDecision::Valid => "valid".to_owned(),
                ValidatorDecision::Invalid => format!("invalid: {said}"),
                ValidatorDecision::RetryLater => format!("retry: {said}"),
            }
        } else {
            let job = self.wus[&r.wu].spec.job.clone();
            let v = match gah_validator::Uploads::from_files(&paths) {
                Some(uploads) => gah_validator::init_uploads(&uploads, Some(&job)),
                None => gah_validator::Verdict::retry_later("the output template names no output, or more than two"),
            };
            match v.kind() {
                gah_validator::VerdictKind::Valid => "valid".to_owned(),
                gah_validator::VerdictKind::Invalid => format!("invalid: {}", v.reason()),
                gah_validator::VerdictKind::RetryLater => format!("retry: {}", v.reason()),
            }
        }
    }

    /// The compare script (or `gah_validator::compare`) on two results' uploads.
    fn compare(&mut self, a: &str, b: &str) -> ValidatorDecision {
        let upload_dir = self.config.state_dir.join("upload");
        let (ra, rb) = (self.results[a].clone(), self.results[b].clone());
        let (decision, v) = match self.config.daemons.clone() {
            Some(d) => {
                let side = |r: &ResultRec| ValidatorResult {
                    id: r.id,
                    elapsed_time: r.report.as_ref().map_or(0.0, |x| x.final_elapsed_time),
                    paths: r.files.outputs.iter().map(|(name, _)| upload_dir.join(name).display().to_string()).collect(),
                };
                let cmd = boinc_scripts::validator_compare_command(&d.compare_script, &side(&ra), &side(&rb), d.server);
                let (decision, said) = self.validator_script(&d, &cmd);
                (decision, said)
            }
            None => {
                let v = match (
                    gah_validator::Uploads::from_files(&self.upload_paths(&ra)),
                    gah_validator::Uploads::from_files(&self.upload_paths(&rb)),
                ) {
                    (Some(a), Some(b)) => gah_validator::compare_uploads(&a, &b),
                    _ => gah_validator::Verdict::retry_later("the output template names no output, or more than two"),
                };
                let decision = match v.kind() {
                    gah_validator::VerdictKind::Valid => ValidatorDecision::Valid,
                    gah_validator::VerdictKind::Invalid => ValidatorDecision::Invalid,
                    gah_validator::VerdictKind::RetryLater => ValidatorDecision::RetryLater,
                };
                (decision, v.to_string())
            }
        };
        self.log(format!("validator: compare {a} {b}: {decision:?}: {v}"));
        decision
    }

    /// Where `r`'s output files are uploaded (each named whether it is there or not, as
    /// `get_output_file_paths` does).
    fn upload_paths(&self, r: &ResultRec) -> Vec<PathBuf> {
        r.files.outputs.iter().map(|(name, _)| self.config.state_dir.join("upload").join(name)).collect()
    }

    /// The assimilator on a workunit with a canonical result.
    fn assimilate_canonical(&mut self, wu_name: &str, canonical: &str) {
        let w = self.wus[wu_name].clone();
        let c = self.results[canonical].clone();
        let uploads = self.upload_paths(&c);
        let upload = uploads[0].clone();
        self.log(format!("validator: {wu_name}: canonical result {canonical}"));
        let outcome = if let Some(d) = self.config.daemons.clone() {
            let wu = AssimilatorWorkunit {
                id: w.id as u64,
                name: wu_name.to_owned(),
                batch: 0,
                error_mask: 0,
                canonical: Some(Canonical {
                    result_id: c.id,
                    elapsed_time: c.report.as_ref().map_or(0.0, |x| x.final_elapsed_time),
                    files: uploads
                        .iter()
                        .zip(&c.files.outputs)
                        .map(|(path, (_, open))| (path.display().to_string(), open.clone()))
                        .collect(),
                }),
            };
            match self.assimilator_script(&d, &wu) {
                Ok(said) => WuOutcome::Assimilated { canonical: canonical.to_owned(), detail: said },
                Err(said) => WuOutcome::Failed { detail: format!("assimilator: {said}") },
            }
        } else {
            let db_path = self.config.state_dir.join("results/results.sqlite");
            match Database::open(&db_path) {
                Ok(mut db) => match gah_assimilator::assimilate(&mut db, wu_name, &upload) {
                    Ok(done) => WuOutcome::Assimilated { canonical: canonical.to_owned(), detail: done.to_string() },
                    Err(e) => WuOutcome::Failed { detail: format!("assimilator: {e}") },
                },
                Err(e) => WuOutcome::Failed { detail: format!("open {}: {}", db_path.display(), gah_util::error_chain(&e)) },
            }
        };
        self.log(format!("assimilator: {wu_name}: {outcome:?}"));
        self.set_outcome(wu_name, outcome);
    }

    /// The assimilator on a workunit the transitioner gave up, with its error mask.
    fn assimilate_error(&mut self, wu_name: &str, error_mask: i64, nerrors: u32) {
        let w = self.wus[wu_name].clone();
        self.wus.get_mut(wu_name).expect("wu").error_mask = error_mask;
        let detail = if let Some(d) = self.config.daemons.clone() {
            let wu = AssimilatorWorkunit { id: w.id as u64, name: wu_name.to_owned(), batch: 0, error_mask, canonical: None };
            match self.assimilator_script(&d, &wu) {
                Ok(said) => format!("error mask {error_mask}, {nerrors} error result(s); {said}"),
                Err(said) => format!("error mask {error_mask}, {nerrors} error result(s); assimilator failed: {said}"),
            }
        } else {
            let db_path = self.config.state_dir.join("results/results.sqlite");
            match Database::open(&db_path).map(|mut db| gah_assimilator::record_error(&mut db, error_mask, wu_name, w.id, 0)) {
                Ok(Ok(r)) => format!("error mask {error_mask}, {nerrors} error result(s); infrastructure failure recorded ({r:?})"),
                Ok(Err(e)) => {
                    format!("error mask {error_mask}, {nerrors} error result(s); recording failed: {}", gah_util::error_chain(&e))
                }
                Err(e) => {
                    format!("error mask {error_mask}, {nerrors} error result(s); open {}: {}", db_path.display(), gah_util::error_chain(&e))
                }
            }
        };
        self.log(format!("assimilator: {wu_name}: failed: {detail}"));
        self.set_outcome(wu_name, WuOutcome::Failed { detail });
    }

    /// Runs a validator command as `script_validator` does; its decision and its last stderr
    /// line (or why it did not run).
    fn validator_script(&mut self, d: &Daemons, cmd: &str) -> (ValidatorDecision, String) {
        self.log(format!("script_validator: {cmd}"));
        match boinc_scripts::run_like_a_daemon(&d.project, cmd) {
            Ok(out) => {
                let said = String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_owned();
                (boinc_scripts::validator_decision(out.status.code()), format!("exit {:?}: {said}", out.status.code()))
            }
            Err(e) => (ValidatorDecision::RetryLater, format!("sh did not start: {e}")),
        }
    }

    /// Runs the assimilator command for `wu` as `script_assimilator` does: Ok with its last
    /// stderr line on exit 0, else Err (a real daemon would stop).
    fn assimilator_script(&mut self, d: &Daemons, wu: &AssimilatorWorkunit) -> Result<String, String> {
        let cmd = boinc_scripts::assimilator_command(&d.assimilator_script, wu, d.server);
        self.log(format!("script_assimilator: {cmd}"));
        let out = boinc_scripts::run_like_a_daemon(&d.project, &cmd).map_err(|e| format!("sh did not start: {e}"))?;
        let said = String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_owned();
        if out.status.success() {
            Ok(said)
        } else {
            Err(format!("exit {:?}: {said}", out.status.code()))
        }
    }

    /// Records a workunit's outcome (assimilation done, or given up). Its unsent results are
    /// no longer needed (`sched/validator.cpp` 703-711 with a canonical result,
    /// `sched/transitioner.cpp` 403-417 with an error mask); then [`State::file_deleter`].
    fn set_outcome(&mut self, wu_name: &str, outcome: WuOutcome) {
        let decided = outcome != WuOutcome::Pending;
        let w = self.wus.get_mut(wu_name).expect("wu");
        w.outcome = outcome.clone();
        let results = w.results.clone();
        self.snap.workunits.insert(wu_name.into(), outcome);
        if decided {
            for n in results {
                let r = self.results.get_mut(&n).expect("result");
                if r.sent.is_none() {
                    r.didnt_need = true;
                }
            }
            self.file_deleter(wu_name);
        }
    }

    /// `file_deleter` for a decided workunit, when BOINC's transitioner would let it:
    /// `file_delete_state` becomes READY only once the workunit is assimilated (also one that
    /// failed: the assimilator gets those too) and every result is over and validated, none
    /// unsent or in progress (`sched/transitioner.cpp` 504-528, 546-559; the project's
    /// `delete_delay` is 0 by default). Then its input files go, except those whose
    /// `<file_info>` has `<no_delete/>` ([`create_work::delete_input_files`]). Once.
    fn file_deleter(&mut self, wu_name: &str) {
        let w = &self.wus[wu_name];
        if w.outcome == WuOutcome::Pending || w.inputs_deleted {
            return;
        }
        let busy: Vec<String> =
            w.results.iter().filter(|n| !self.results[*n].didnt_need && self.results[*n].report.is_none()).cloned().collect();
        if !busy.is_empty() {
            self.log(format!("file_deleter: {wu_name}: not yet, results not over: {busy:?}"));
            return;
        }
        let (name, inputs) = (w.spec.name.clone(), w.inputs.clone());
        self.wus.get_mut(wu_name).expect("wu").inputs_deleted = true;
        let removed = create_work::delete_input_files(&self.config.state_dir.join("download"), &name, &inputs);
        self.log(format!("file_deleter: {wu_name}: removed {removed:?}"));
    }

    fn upload(&mut self, body: &[u8]) -> String {
        let req = xml::parse_data_server_request(body);
        let ok = |extra: &str| format!("<data_server_reply>\n    <status>0</status>\n{extra}</data_server_reply>\n");
        let err = |transient: bool, msg: &str| {
            format!(
                "<data_server_reply>\n    <status>{}</status>\n    <message>{}</message>\n</data_server_reply>\n",
                if transient { 1 } else { -1 },
                esc(msg)
            )
        };
        let known = |name: &str| self.results.values().find(|r| r.files.outputs.iter().any(|(n, _)| n == name)).map(|r| r.name.clone());
        let upload_dir = self.config.state_dir.join("upload");
        if let Some(name) = &req.get_file_size {
            if name.contains("..") || name.contains('/') {
                return err(false, "Bad filename");
            }
            let size = fs::metadata(upload_dir.join(name)).map(|m| m.len()).unwrap_or(0);
            self.log(format!("upload: get_file_size {name} = {size}"));
            return ok(&format!("    <file_size>{size}</file_size>\n"));
        }
        if !req.is_upload {
            return err(true, "no command");
        }
        let Some(start) = req.data_start else { return err(false, "Missing <data> tag") };
        if req.name.is_empty() || req.name.contains("..") || req.name.contains('/') {
            return err(false, "Missing or bad name");
        }
        if known(&req.name).is_none() {
            self.log(format!("upload: refused unknown file {}", req.name));
            return err(false, "unknown file");
        }
        let Some(nbytes) = req.nbytes.filter(|n| *n >= 0.0) else { return err(false, "nbytes missing or negative") };
        if let Some(max) = req.max_nbytes {
            if nbytes > max {
                return err(false, &format!("file size ({nbytes}) exceeds limit ({max})"));
            }
        }
        let data = &body[start..];
        let path = upload_dir.join(&req.name);
        let write = || -> std::io::Result<u64> {
            let mut f = fs::OpenOptions::new().create(true).write(true).truncate(false).open(&path)?;
            let len = f.metadata()?.len();
            let offset = byte_count(req.offset);
            if len < offset {
                return Err(std::io::Error::other(format!("file has {len} bytes < offset {offset}")));
            }
            f.set_len(offset)?;
            f.seek(SeekFrom::Start(offset))?;
            let want = usize::try_from(byte_count(nbytes).saturating_sub(offset)).unwrap_or(usize::MAX).min(data.len());
            f.write_all(&data[..want])?;
            f.sync_all()?;
            Ok(offset + want as u64)
        };
        match write() {
            Ok(size) => {
                self.log(format!("upload: {} offset {} -> {size} of {nbytes} bytes", req.name, req.offset));
                if size as f64 >= nbytes {
                    self.snap.uploads.push((req.name.clone(), size));
                }
                ok("")
            }
            Err(e) => {
                self.log(format!("upload: {}: {e}", req.name));
                err(true, &e.to_string())
            }
        }
    }
}

fn serve(server: tiny_http::Server, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        let mut request = match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                crate::say(&format!("accept: {e}"));
                continue;
            }
        };
        let url = request.url().to_owned();
        let path = url.split('?').next().unwrap_or("").to_owned();
        let method = request.method().clone();
        let mut body = Vec::new();
        if method == tiny_http::Method::Post {
            if let Err(e) = request.as_reader().read_to_end(&mut body) {
                crate::say(&format!("read body of {path}: {e}"));
                let _ = request.respond(tiny_http::Response::empty(400));
                continue;
            }
        }
        let text = |s: String| {
            tiny_http::Response::from_string(s)
                .with_header(tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"text/plain"[..]).expect("header"))
        };
        let result = match (method, path.as_str()) {
            (tiny_http::Method::Get, "/gah" | "/gah/" | "/gah/index.html") => {
                let mut st = state.lock().unwrap();
                st.snap.master_fetches += 1;
                st.log("master page".into());
                let sched = format!("{}/gah_cgi/cgi", st.base_url);
                let page = format!(
                    "<html>\n<head>\n<title>{}</title>\n<link rel=\"boinc_scheduler\" href=\"{sched}\">\n</head>\n<body>\n<!-- <scheduler>{sched}</scheduler> -->\n</body>\n</html>\n",
                    esc(&st.config.project_name)
                );
                request.respond(
                    tiny_http::Response::from_string(page)
                        .with_header(tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"text/html"[..]).expect("header")),
                )
            }
            (tiny_http::Method::Post, "/gah_cgi/cgi") => {
                let reply = state.lock().unwrap().scheduler(&body);
                request.respond(text(reply))
            }
            (tiny_http::Method::Post, "/gah_cgi/file_upload_handler") => {
                let reply = state.lock().unwrap().upload(&body);
                request.respond(text(reply))
            }
            (tiny_http::Method::Get, p) if p.starts_with("/gah/download/") => {
                let name = &p["/gah/download/".len()..];
                let dir = state.lock().unwrap().config.state_dir.join("download");
                download(request, &dir, name, &state)
            }
            (m, p) => {
                state.lock().unwrap().log(format!("404 {m} {p}"));
                request.respond(tiny_http::Response::empty(404))
            }
        };
        if let Err(e) = result {
            crate::say(&format!("respond to {path}: {e}"));
        }
    }
}

fn download(request: tiny_http::Request, dir: &Path, name: &str, state: &Mutex<State>) -> std::io::Result<()> {
    // Any file below the download folder, as make_project's Apache configuration serves it
    // (`Alias /gah/download <project>/download`): the project's CernVM-FS repository is
    // published in its `cvmfs/` folder. Nothing above it.
    if name.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return request.respond(tiny_http::Response::empty(400));
    }
    // Streamed from the file: an app version's root tar is most of a GB.
    let Ok(mut file) =
        fs::File::open(dir.join(name)).and_then(|f| if f.metadata()?.is_file() { Ok(f) } else { Err(std::io::ErrorKind::NotFound.into()) })
    else {
        state.lock().unwrap().log(format!("download: 404 {name}"));
        return request.respond(tiny_http::Response::empty(404));
    };
    let total = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    let range = request.headers().iter().find(|h| h.field.equiv("Range")).map(|h| h.value.as_str().to_owned());
    let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.split_once('-')) {
        Some((a, b)) => {
            let start: usize = a.trim().parse().unwrap_or(0);
            let end: usize = b.trim().parse().map(|e: usize| e + 1).unwrap_or(total).min(total);
            (start.min(total), end)
        }
        None => (0, total),
    };
    state.lock().unwrap().log(format!("download: {name} bytes {start}..{end} of {total}"));
    let partial = range.is_some();
    file.seek(SeekFrom::Start(start as u64))?;
    let len = end.saturating_sub(start);
    // One request per connection: tiny_http 0.12 was seen leaving the next request on a
    // kept-alive connection unread (130 bytes in the socket's queue, gah-app's prefetch
    // waiting on it for minutes) while eight downloads ran at once; Apache serves them.
    // The client opens a new connection instead, as it does with Apache's KeepAlive Off.
    let mut headers = vec![tiny_http::Header::from_bytes(&b"Connection"[..], &b"close"[..]).expect("header")];
    if partial {
        let v = format!("bytes {start}-{}/{total}", end.saturating_sub(1));
        headers.push(tiny_http::Header::from_bytes(&b"Content-Range"[..], v.as_bytes()).expect("header"));
    }
    let body = std::io::Read::take(file, len as u64);
    request.respond(tiny_http::Response::new(tiny_http::StatusCode(if partial { 206 } else { 200 }), headers, body, Some(len), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_stops_once_the_server_is_settled() {
        let dir = std::env::temp_dir().join(format!("gah-harness-settled-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let h = Harness::start(HarnessConfig::new(&dir)).unwrap();
        let mut spec = WorkunitSpec::new("wu", job());
        spec.files = gah_in_inputs(&h, &dir, "a");
        let result = h.add_workunit(spec).unwrap().remove(0);
        // Unsent work can still come back: only the time limit ends this wait.
        let e = h.wait_until(Duration::from_millis(300), |_| false).unwrap_err();
        assert_eq!(e.ended, Ended::TimedOut(Duration::from_millis(300)));
        {
            let mut st = h.state.lock().unwrap();
            st.results.get_mut(&result).unwrap().sent = Some(now());
            let report = ReportedResult {
                name: result.clone(),
                state: client_state::COMPUTE_ERROR,
                exit_status: 2,
                stderr_out: "gah-app: error: no such thing".into(),
                ..Default::default()
            };
            st.handle_report(&report);
        }
        let t0 = std::time::Instant::now();
        let e = h.wait_until(Duration::from_secs(3600), |s| !s.uploads.is_empty()).unwrap_err();
        assert_eq!(e.ended, Ended::ServerSettled);
        assert!(t0.elapsed() < Duration::from_secs(2), "{e}");
        assert!(e.to_string().contains("gah-app: error: no such thing"), "{e}");
        drop(h);
        let _ = fs::remove_dir_all(&dir);
    }

    fn job() -> Job {
        Job::new("test", "app-arch/bzip2-1.0.8", Default::default(), gah_core::job::Compiler::Gcc, 60)
    }

    /// The inputs `templates/gah_in` wants after the job file: a `data.json` (a stand-in
    /// whose bytes depend on `seed`), named `<seed>.data.json` and staged.
    fn gah_in_inputs(h: &Harness, dir: &Path, seed: &str) -> Vec<String> {
        let named = dir.join(format!("{seed}.data.json"));
        fs::write(&named, format!("data of {seed}")).unwrap();
        vec![h.stage_file(&named).unwrap()]
    }

    /// A template with one input every workunit shares after the job file (`<sticky/>`,
    /// `<no_delete/>` when `no_delete`), and that input staged: how BOINC's file_deleter
    /// treats shared inputs (gah_in had them until the data plane).
    fn shared_input_template(h_dir: &Path, no_delete: bool) -> (HarnessConfig, impl Fn(&Harness) -> String + use<>) {
        let keep = if no_delete { "<sticky/><no_delete/>" } else { "" };
        let mut config = HarnessConfig::new(h_dir);
        config.input_template = InputTemplate::parse(&format!(
            "<input_template><file_info><number>0</number></file_info><file_info><number>1</number>{keep}</file_info>\
             <workunit><file_ref><file_number>0</file_number><open_name>job.json</open_name></file_ref>\
             <file_ref><file_number>1</file_number><open_name>shared.tar</open_name></file_ref></workunit></input_template>"
        ))
        .unwrap();
        let staged = h_dir.with_extension("shared-a.tar");
        let stage = move |h: &Harness| {
            fs::write(&staged, "shared a").unwrap();
            h.stage_file(&staged).unwrap()
        };
        (config, stage)
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gah-harness-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// What the scheduler sends for the next unsent result, to an anonymous-platform client.
    fn send(h: &Harness) -> String {
        let req = SchedulerRequest {
            platform_name: "anonymous".into(),
            app_versions: vec![xml::ClientAppVersion { app_name: "gah".into(), version_num: 100, ..Default::default() }],
            ..Default::default()
        };
        let mut reply = String::new();
        h.state.lock().unwrap().send_work(&req, &mut reply);
        reply
    }

    #[test]
    fn workunits_are_built_from_gah_in_by_create_works_rules() {
        let dir = temp("gah-in");
        let h = Harness::start(HarnessConfig::new(&dir.join("server"))).unwrap();
        let files = gah_in_inputs(&h, &dir, "a");

        // Every <file_info> of the template needs a file, and a staged one.
        let e = h.add_workunit(WorkunitSpec::new("wu-bare", job())).unwrap_err();
        assert!(format!("{e:#}").contains("Too few var input files given; need at least 2"), "{e:#}");
        let mut spec = WorkunitSpec::new("wu-unstaged", job());
        spec.files = vec!["not-staged.data.json".into()];
        let e = h.add_workunit(spec).unwrap_err();
        assert!(format!("{e:#}").contains("md5_file: can't open"), "{e:#}");
        let mut spec = WorkunitSpec::new("wu-extra", job());
        spec.files = vec![files[0].clone(), files[0].clone()];
        let e = h.add_workunit(spec).unwrap_err();
        assert!(format!("{e:#}").contains("3 input files given, but template has 2"), "{e:#}");

        // The template sets no per-job value: the command line's stand.
        let mut spec = WorkunitSpec::new("wu", job());
        spec.files = files.clone();
        spec.fpops_bound = 1.25e15;
        spec.min_quorum = 2;
        spec.target_nresults = 2;
        spec.delay_bound_secs = 1234;
        let results = h.add_workunit(spec).unwrap();
        assert_eq!(results.len(), 2);
        {
            let st = h.state.lock().unwrap();
            let w = &st.wus["wu"];
            assert_eq!((w.spec.fpops_bound, w.spec.min_quorum, w.spec.delay_bound_secs), (1.25e15, 2, 1234));
            let names: Vec<_> = w.inputs.iter().map(|f| (f.physical.as_str(), f.open_name.as_str(), f.sticky, f.no_delete)).collect();
            assert_eq!(names, [("wu.json", "job.json", false, false), (files[0].as_str(), "data.json", false, false)]);
        }
        let reply = send(&h);
        assert!(reply.contains(&format!("<name>{}</name>\n    <url>", files[0])), "{reply}");
        assert!(!reply.contains("<sticky/>") && !reply.contains("<no_delete/>"), "{reply}");
        assert!(reply.contains("<open_name>data.json</open_name>"), "{reply}");
        assert!(reply.contains("<rsc_fpops_bound>1.25e15</rsc_fpops_bound>"), "{reply}");
        drop(h);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn template_workunit_values_win_over_the_command_line() {
        let dir = temp("template-wins");
        let mut config = HarnessConfig::new(&dir.join("server"));
        config.input_template = InputTemplate::parse(
            "<input_template><file_info><number>0</number></file_info><workunit><file_ref><file_number>0</file_number>\
             <open_name>job.json</open_name></file_ref><rsc_fpops_bound>7.2e13</rsc_fpops_bound><min_quorum>3</min_quorum>\
             </workunit></input_template>",
        )
        .unwrap();
        let h = Harness::start(config).unwrap();
        let mut spec = WorkunitSpec::new("wu", job());
        spec.fpops_bound = 1e17;
        assert_eq!(h.add_workunit(spec).unwrap().len(), 1);
        let st = h.state.lock().unwrap();
        assert_eq!((st.wus["wu"].spec.fpops_bound, st.wus["wu"].spec.min_quorum), (7.2e13, 3));
        drop(st);
        drop(h);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_deleter_keeps_shared_inputs_for_the_next_workunit() {
        let dir = temp("file-deleter");
        let (config, stage) = shared_input_template(&dir.join("server"), true);
        let h = Harness::start(config).unwrap();
        let files = vec![stage(&h)];
        for wu in ["wu1", "wu2"] {
            let mut spec = WorkunitSpec::new(wu, job());
            spec.files = files.clone();
            h.add_workunit(spec).unwrap();
        }
        let first = send(&h);
        assert!(first.contains("<name>wu1</name>") && first.contains(&files[0]), "{first}");
        h.state.lock().unwrap().set_outcome("wu1", WuOutcome::Assimilated { canonical: "wu1_0".into(), detail: "stored".into() });
        // wu1_0 is still in progress: the transitioner leaves file_delete_state alone
        // (sched/transitioner.cpp 524-526, 553), so wu1's job file stays until it is over.
        let download = h.download_dir();
        assert!(download.join("wu1.json").exists());
        report(&h, "wu1_0", client_state::COMPUTE_ERROR, 1);
        // Now it is gone; the shared files stay for wu2 and for later workunits.
        assert!(!download.join("wu1.json").exists());
        assert!(files.iter().all(|f| download.join(f).exists()));
        let second = send(&h);
        assert!(second.contains("<name>wu2</name>") && second.contains(&files[0]), "{second}");
        let mut spec = WorkunitSpec::new("wu3", job());
        spec.files = files.clone();
        h.add_workunit(spec).expect("a later workunit finds the shared inputs");
        drop(h);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_deleter_removes_inputs_without_no_delete() {
        // Shared inputs without <no_delete/> are gone once the first workunit is over, and
        // the next create_work fails as on a real server.
        let dir = temp("file-deleter-old");
        let (config, stage) = shared_input_template(&dir.join("server"), false);
        let h = Harness::start(config).unwrap();
        let files = vec![stage(&h)];
        let mut spec = WorkunitSpec::new("wu1", job());
        spec.files = files.clone();
        h.add_workunit(spec).unwrap();
        h.state.lock().unwrap().set_outcome("wu1", WuOutcome::Failed { detail: "too many errors".into() });
        assert!(files.iter().all(|f| !h.download_dir().join(f).exists()));
        let mut spec = WorkunitSpec::new("wu2", job());
        spec.files = files;
        let e = h.add_workunit(spec).unwrap_err();
        assert!(format!("{e:#}").contains("md5_file: can't open"), "{e:#}");
        drop(h);
        let _ = fs::remove_dir_all(&dir);
    }

    /// The client reports `result` (marked sent first, if it was not).
    fn report(h: &Harness, result: &str, state: i64, exit_status: i64) {
        let mut st = h.state.lock().unwrap();
        let r = st.results.get_mut(result).unwrap();
        r.sent.get_or_insert_with(now);
        let report = ReportedResult { name: result.into(), state, exit_status, final_elapsed_time: 60.0, ..Default::default() };
        st.handle_report(&report);
    }

    /// A harness whose daemons run the shell scripts `init`, `cmp` and `asm` (each logs its
    /// arguments to `<name>.log` in the project, then exits with the number in `<name>.exit`).
    fn scripted(dir: &Path) -> Harness {
        let project = dir.join("project");
        fs::create_dir_all(project.join("bin")).unwrap();
        for name in ["init", "cmp", "asm"] {
            let script = format!("#!/bin/sh\necho \"$*\" >> {0}/{name}.log\nexit $(cat {0}/{name}.exit)\n", project.display());
            let path = project.join("bin").join(name);
            fs::write(&path, script).unwrap();
            fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            fs::write(project.join(format!("{name}.exit")), "0").unwrap();
        }
        let mut config = HarnessConfig::new(&dir.join("server"));
        config.daemons = Some(Daemons {
            project,
            init_script: "init".into(),
            compare_script: "cmp".into(),
            assimilator_script: "asm".into(),
            server: BoincServer::Release8_2_4,
        });
        Harness::start(config).unwrap()
    }

    fn script_log(dir: &Path, name: &str) -> String {
        fs::read_to_string(dir.join("project").join(format!("{name}.log"))).unwrap_or_default()
    }

    #[test]
    fn a_compare_exit_3_is_retry_later_and_too_many_total_goes_to_the_assimilator() {
        let dir = temp("compare-retry");
        let h = scripted(&dir);
        fs::write(dir.join("project/cmp.exit"), "3").unwrap();
        let mut spec = WorkunitSpec::new("wu", job());
        spec.files = gah_in_inputs(&h, &dir, "a");
        (spec.min_quorum, spec.target_nresults, spec.max_error_results, spec.max_total_results) = (2, 2, 1, 3);
        let results = h.add_workunit(spec).unwrap();
        // Neither upload exists: script_validator runs the init script on their paths anyway.
        report(&h, &results[0], client_state::FILES_UPLOADED, 0);
        report(&h, &results[1], client_state::FILES_UPLOADED, 0);
        let init = script_log(&dir, "init");
        assert!(init.contains(&h.upload_dir().join("wu_0_r0_0").display().to_string()), "{init}");
        assert!(!h.upload_dir().join("wu_0_r0_0").exists());
        {
            let st = h.state.lock().unwrap();
            // check_set stopped at the first compare: nobody is invalid, both inconclusive,
            // and (as many viable results as the target) one more result is made.
            let states: Vec<_> = results.iter().map(|r| st.results[r].validate_state).collect();
            assert_eq!(states, [ValidateState::Inconclusive; 2]);
            assert_eq!(st.wus["wu"].results.len(), 3);
            assert_eq!(st.wus["wu"].spec.target_nresults, 3);
            assert_eq!(st.wus["wu"].outcome, WuOutcome::Pending);
        }
        assert_eq!(script_log(&dir, "cmp").lines().count(), 1, "one compare, then retry later");
        // The third fails on the client: another is needed, three made of at most three:
        // WU_ERROR_TOO_MANY_TOTAL_RESULTS, passed to the assimilator script as --error.
        report(&h, "wu_2", client_state::COMPUTE_ERROR, 1);
        assert_eq!(script_log(&dir, "asm").trim(), "--error 8 wu 1 0");
        assert!(matches!(h.snapshot().outcome("wu"), WuOutcome::Failed { .. }));
        drop(h);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_compare_exit_1_is_no_consensus_until_a_majority_agrees() {
        let dir = temp("compare-majority");
        let h = scripted(&dir);
        let mut spec = WorkunitSpec::new("wu", job());
        spec.files = gah_in_inputs(&h, &dir, "a");
        (spec.min_quorum, spec.target_nresults, spec.max_error_results, spec.max_total_results) = (2, 2, 1, 3);
        let results = h.add_workunit(spec).unwrap();
        fs::write(dir.join("project/cmp.exit"), "1").unwrap();
        report(&h, &results[0], client_state::FILES_UPLOADED, 0);
        report(&h, &results[1], client_state::FILES_UPLOADED, 0);
        // No consensus: both inconclusive, a third result.
        assert_eq!(h.state.lock().unwrap().wus["wu"].results.len(), 3);
        fs::write(dir.join("project/cmp.exit"), "0").unwrap();
        report(&h, "wu_2", client_state::FILES_UPLOADED, 0);
        // Now everything matches: the first is canonical and assimilated with its file.
        let snap = h.snapshot();
        assert_eq!(snap.outcome("wu"), WuOutcome::Assimilated { canonical: "wu_0".into(), detail: String::new() });
        let asm = script_log(&dir, "asm");
        assert!(asm.starts_with("1 ") && asm.contains("wu_0_r0_0"), "{asm}");
        drop(h);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn more_errors_than_max_error_results_fail_the_workunit_with_mask_2() {
        let dir = temp("too-many-errors");
        let h = scripted(&dir);
        let mut spec = WorkunitSpec::new("wu", job());
        spec.files = gah_in_inputs(&h, &dir, "a");
        (spec.max_error_results, spec.max_total_results) = (1, 4);
        h.add_workunit(spec).unwrap();
        // One error is not more than max_error_results: a new result.
        report(&h, "wu_0", client_state::COMPUTE_ERROR, 1);
        assert_eq!(h.snapshot().outcome("wu"), WuOutcome::Pending);
        // A user abort (exit 203) is no error either: another new result.
        report(&h, "wu_1", client_state::ABORTED, i64::from(EXIT_ABORTED_VIA_GUI));
        assert_eq!(h.snapshot().outcome("wu"), WuOutcome::Pending);
        report(&h, "wu_2", client_state::COMPUTE_ERROR, 1);
        assert_eq!(script_log(&dir, "asm").trim(), "--error 2 wu 1 0");
        assert!(h.state.lock().unwrap().settled());
        assert!(!h.download_dir().join("wu.json").exists(), "all results over: file_deleter ran");
        assert!(!h.download_dir().join("a.data.json").exists(), "the workunit's data.json too: it is its own");
        drop(h);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn project_dir_name_is_boincs() {
        assert_eq!(project_dir_name("http://127.0.0.1:31416/gah/"), "127.0.0.1_31416_gah");
        assert_eq!(project_dir_name("https://boinc.example.org/"), "boinc.example.org");
    }
}
