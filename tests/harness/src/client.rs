//! Drives Debian's real BOINC client (`/usr/bin/boinc`, `/usr/bin/boinccmd`, 7.20) in a
//! private data folder, attached to the harness without the web RPC (an account file),
//! under anonymous platform (the test lays out `projects/<dir>/app_info.xml` and the files).
//!
//! The client is started in a process group of its own; its apps inherit that group (the
//! 7.20 client does not change it), so [`Client`]'s `Drop` kills the client, the app and any
//! guest, then anything else whose command line or folder points into the data folder.
//!
//! Waits on the client ([`Client::watch`], [`Client::wait_task`], [`Client::wait_exit`]) stop
//! at the first poll that shows they can no longer succeed (the client exited, the task is past
//! computing or gone, the server holds its report), with the client's log, the task's stderr
//! and its last listed state in the error.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::server::{Harness, Snapshot};
use crate::wait::{self, Ended, Step, WaitError};

/// The client program.
pub const BOINC: &str = "/usr/bin/boinc";
/// The GUI RPC tool.
pub const BOINCCMD: &str = "/usr/bin/boinccmd";

/// What the client's data folder holds.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `--dir`.
    pub data_dir: PathBuf,
    /// The project to attach to.
    pub master_url: String,
    /// Its authenticator (goes into the account file).
    pub authenticator: String,
    /// `--gui_rpc_port`; 0 picks a free one.
    pub gui_rpc_port: u16,
    /// `gui_rpc_auth.cfg`.
    pub gui_rpc_password: String,
    /// `disk_interval`: the apps' checkpoint period, seconds.
    pub checkpoint_secs: u32,
    /// `<ncpus>` in cc_config (None: all).
    pub ncpus: Option<u32>,
    /// `--exit_when_idle`: exit once no results are left (after the first fetch).
    pub exit_when_idle: bool,
}

impl ClientConfig {
    /// Defaults: checkpoint every 60 s, exit when idle.
    pub fn new(data_dir: &Path, master_url: &str, authenticator: &str) -> ClientConfig {
        ClientConfig {
            data_dir: data_dir.to_path_buf(),
            master_url: master_url.into(),
            authenticator: authenticator.into(),
            gui_rpc_port: 0,
            gui_rpc_password: "gah-harness".into(),
            checkpoint_secs: 60,
            ncpus: None,
            exit_when_idle: true,
        }
    }

    /// `projects/<dir>/`: where anonymous platform's `app_info.xml` and app files go.
    pub fn project_dir(&self) -> PathBuf {
        self.data_dir.join("projects").join(crate::server::project_dir_name(&self.master_url))
    }

    /// Writes `cc_config.xml`, `global_prefs_override.xml`, `gui_rpc_auth.cfg`, the account
    /// file and the project folder (which the caller fills).
    pub fn write(&mut self) -> anyhow::Result<()> {
        if self.gui_rpc_port == 0 {
            self.gui_rpc_port = free_port()?;
        }
        fs::create_dir_all(self.project_dir()).with_context(|| format!("create {}", self.project_dir().display()))?;
        let w = |name: &str, text: String| fs::write(self.data_dir.join(name), text).with_context(|| format!("write {name}"));
        w("cc_config.xml", self.cc_config())?;
        w("global_prefs_override.xml", self.global_prefs())?;
        w("gui_rpc_auth.cfg", format!("{}\n", self.gui_rpc_password))?;
        let account = format!("account_{}.xml", crate::server::project_dir_name(&self.master_url));
        w(
            &account,
            format!(
                "<account>\n    <master_url>{}</master_url>\n    <authenticator>{}</authenticator>\n</account>\n",
                crate::xml::esc(&self.master_url),
                crate::xml::esc(&self.authenticator)
            ),
        )?;
        Ok(())
    }

    /// `cc_config.xml`: verbose task/transfer/scheduler logs; report at once; fetch one job.
    pub fn cc_config(&self) -> String {
        let ncpus = self.ncpus.map(|n| format!("        <ncpus>{n}</ncpus>\n")).unwrap_or_default();
        format!(
            r#"<cc_config>
    <log_flags>
        <task>1</task>
        <file_xfer>1</file_xfer>
        <sched_ops>1</sched_ops>
        <task_debug>1</task_debug>
        <sched_op_debug>1</sched_op_debug>
        <checkpoint_debug>1</checkpoint_debug>
        <slot_debug>0</slot_debug>
        <unparsed_xml>1</unparsed_xml>
    </log_flags>
    <options>
        <exit_when_idle>{}</exit_when_idle>
        <report_results_immediately>1</report_results_immediately>
        <fetch_minimal_work>1</fetch_minimal_work>
        <no_gpus>1</no_gpus>
        <no_info_fetch>1</no_info_fetch>
        <skip_cpu_benchmarks>1</skip_cpu_benchmarks>
        <allow_multiple_clients>1</allow_multiple_clients>
        <dont_contact_ref_site>1</dont_contact_ref_site>
        <suppress_net_info>1</suppress_net_info>
        <max_stderr_file_size>1000000</max_stderr_file_size>
{ncpus}    </options>
</cc_config>
"#,
            u8::from(self.exit_when_idle)
        )
    }

    /// `global_prefs_override.xml`: compute always, every CPU at 100 %, no network or disk
    /// limits, keep suspended apps in memory, checkpoint every `checkpoint_secs`.
    pub fn global_prefs(&self) -> String {
        format!(
            r#"<global_preferences>
    <run_on_batteries>1</run_on_batteries>
    <run_if_user_active>1</run_if_user_active>
    <run_gpu_if_user_active>1</run_gpu_if_user_active>
    <idle_time_to_run>0</idle_time_to_run>
    <suspend_cpu_usage>0</suspend_cpu_usage>
    <niu_suspend_cpu_usage>0</niu_suspend_cpu_usage>
    <suspend_if_no_recent_input>0</suspend_if_no_recent_input>
    <start_hour>0</start_hour>
    <end_hour>0</end_hour>
    <net_start_hour>0</net_start_hour>
    <net_end_hour>0</net_end_hour>
    <leave_apps_in_memory>1</leave_apps_in_memory>
    <confirm_before_connecting>0</confirm_before_connecting>
    <hangup_if_dialed>0</hangup_if_dialed>
    <work_buf_min_days>0</work_buf_min_days>
    <work_buf_additional_days>0</work_buf_additional_days>
    <max_ncpus_pct>100</max_ncpus_pct>
    <niu_max_ncpus_pct>100</niu_max_ncpus_pct>
    <cpu_usage_limit>100</cpu_usage_limit>
    <niu_cpu_usage_limit>100</niu_cpu_usage_limit>
    <cpu_scheduling_period_minutes>600</cpu_scheduling_period_minutes>
    <disk_interval>{}</disk_interval>
    <disk_max_used_gb>1000</disk_max_used_gb>
    <disk_max_used_pct>100</disk_max_used_pct>
    <disk_min_free_gb>0.1</disk_min_free_gb>
    <vm_max_used_pct>100</vm_max_used_pct>
    <ram_max_used_busy_pct>100</ram_max_used_busy_pct>
    <ram_max_used_idle_pct>100</ram_max_used_idle_pct>
    <max_bytes_sec_up>0</max_bytes_sec_up>
    <max_bytes_sec_down>0</max_bytes_sec_down>
    <daily_xfer_limit_mb>0</daily_xfer_limit_mb>
    <daily_xfer_period_days>0</daily_xfer_period_days>
</global_preferences>
"#,
            self.checkpoint_secs
        )
    }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// One task as `boinccmd --get_tasks` shows it: its `key: value` lines.
#[derive(Debug, Clone, Default)]
pub struct Task(pub BTreeMap<String, String>);

impl Task {
    /// A field, empty when absent.
    pub fn get(&self, key: &str) -> &str {
        self.0.get(key).map(String::as_str).unwrap_or("")
    }
    /// `name`.
    pub fn name(&self) -> &str {
        self.get("name")
    }
    /// `active_task_state` (EXECUTING, SUSPENDED, UNINITIALIZED, ABORT_PENDING, ...).
    pub fn active_state(&self) -> &str {
        self.get("active_task_state")
    }
    /// `fraction done`.
    pub fn fraction_done(&self) -> f64 {
        self.get("fraction done").parse().unwrap_or(0.0)
    }
    /// `elapsed task time` (7.20 prints it as "elapsed task time").
    pub fn elapsed(&self) -> f64 {
        self.get("elapsed task time").parse().unwrap_or(0.0)
    }
    /// `state`: the result's state (new, downloading, downloaded, compute error, uploading,
    /// uploaded, aborted, upload failed).
    pub fn state(&self) -> &str {
        self.get("state")
    }
    /// `exit_status` (listed once the task is past computing).
    pub fn exit_status(&self) -> Option<i64> {
        self.get("exit_status").parse().ok()
    }
    /// True once the task can no longer compute: it failed, was aborted, or its output is on
    /// its way. BOINC's states only move forward.
    pub fn past_computing(&self) -> bool {
        self.get("ready to report") == "yes"
            || matches!(self.state(), "compute error" | "uploading" | "uploaded" | "aborted" | "upload failed")
    }
    /// Every field on one line, for messages.
    pub fn summary(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("; ")
    }
}

/// Parses `boinccmd --get_tasks`.
pub fn parse_tasks(text: &str) -> Vec<Task> {
    let mut tasks = Vec::new();
    let mut cur: Option<Task> = None;
    for line in text.lines() {
        let t = line.trim();
        if t.ends_with("-----------") && t.contains(')') {
            if let Some(c) = cur.take() {
                tasks.push(c);
            }
            cur = Some(Task::default());
        } else if let (Some(c), Some((k, v))) = (cur.as_mut(), t.split_once(':')) {
            c.0.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    tasks.extend(cur);
    tasks
}

/// A process seen in `/proc`.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    /// Its pid.
    pub pid: i32,
    /// Its process group.
    pub pgid: i32,
    /// Its parent.
    pub ppid: i32,
    /// `cmdline` with NULs as spaces.
    pub cmdline: String,
}

/// Every process (but this one) in one of `pgids`, or whose command line, working folder or
/// executable points into `dir`.
pub fn processes_of(dir: &Path, pgids: &[i32]) -> Vec<ProcInfo> {
    let me = std::process::id() as i32;
    let dir_s = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else { return out };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let f: Vec<&str> = after.split_whitespace().collect();
        if f.first() == Some(&"Z") {
            continue;
        }
        let ppid = f.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let pgid = f.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " ").trim().to_owned())
            .unwrap_or_default();
        let points_in = |link: &str| fs::read_link(format!("/proc/{pid}/{link}")).map(|p| p.starts_with(dir)).unwrap_or(false);
        if pgids.contains(&pgid) || cmdline.contains(&dir_s) || points_in("cwd") || points_in("exe") {
            out.push(ProcInfo { pid, pgid, ppid, cmdline });
        }
    }
    out
}

/// The qemu processes among [`processes_of`].
pub fn qemus_of(dir: &Path, pgids: &[i32]) -> Vec<ProcInfo> {
    processes_of(dir, pgids).into_iter().filter(|p| p.cmdline.contains("qemu")).collect()
}

/// A running (or stopped) BOINC client; killed with everything it started on drop.
pub struct Client {
    config: ClientConfig,
    child: Option<Child>,
    /// Every process group a client of this folder ever had.
    pgids: Vec<i32>,
    started: Instant,
    /// Every task `boinccmd` ever listed, as last listed and when: the evidence once the
    /// client forgot it or is gone.
    seen: Mutex<BTreeMap<String, (Instant, Task)>>,
}

impl Client {
    /// Writes nothing: call [`ClientConfig::write`] first. Starts `boinc`.
    pub fn start(config: &ClientConfig) -> anyhow::Result<Client> {
        let mut c =
            Client { config: config.clone(), child: None, pgids: Vec::new(), started: Instant::now(), seen: Mutex::new(BTreeMap::new()) };
        c.spawn()?;
        Ok(c)
    }

    /// The command line the client runs with (after the program).
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--dir".into(),
            self.config.data_dir.to_string_lossy().into_owned(),
            "--gui_rpc_port".into(),
            self.config.gui_rpc_port.to_string(),
            "--fetch_minimal_work".into(),
            "--skip_cpu_benchmarks".into(),
            "--no_gpus".into(),
            "--no_info_fetch".into(),
            "--allow_multiple_clients".into(),
            "--suppress_net_info".into(),
        ];
        if self.config.exit_when_idle {
            a.push("--exit_when_idle".into());
        }
        a
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        use std::os::unix::process::CommandExt;
        let log = fs::OpenOptions::new().create(true).append(true).open(self.log_path())?;
        let mut cmd = gah_util::process::command(BOINC);
        cmd.args(self.args()).current_dir(&self.config.data_dir).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).process_group(0);
        // The harness is on loopback: no proxy may stand in between.
        for v in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
            cmd.env_remove(v);
        }
        cmd.env("no_proxy", "127.0.0.1,localhost");
        let child = cmd.spawn().with_context(|| format!("start {BOINC}"))?;
        self.pgids.push(child.id() as i32);
        self.child = Some(child);
        self.started = Instant::now();
        Ok(())
    }

    /// Starts the client again in the same folder (after [`Client::kill_client`] or an exit).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            bail!("the client is still running");
        }
        self.spawn()
    }

    /// The client's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Every process group of this folder's clients so far (apps inherit them).
    pub fn pgids(&self) -> &[i32] {
        &self.pgids
    }

    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Where the client's stdout and stderr (its event log) go.
    pub fn log_path(&self) -> PathBuf {
        self.config.data_dir.join("client.log")
    }

    /// The event log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `n` lines of the event log.
    pub fn log_tail(&self, n: usize) -> String {
        wait::tail(&self.log(), n)
    }

    /// The whole lines of the event log from byte `*offset` on; moves `*offset` past them.
    fn log_lines_since(&self, offset: &mut u64) -> String {
        let mut text = Vec::new();
        if let Ok(mut f) = fs::File::open(self.log_path()) {
            if f.seek(SeekFrom::Start(*offset)).is_ok() {
                let _ = f.read_to_end(&mut text);
            }
        }
        // A line still being written waits for the next poll.
        text.truncate(text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1));
        *offset += text.len() as u64;
        String::from_utf8_lossy(&text).into_owned()
    }

    /// True while the client process lives.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exit_status().is_none()
    }

    /// The client's exit status once it exited (or could not be asked).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the client to exit, at most `timeout`; the error says what it still holds.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, WaitError> {
        self.watch().every(Duration::from_millis(200)).until("the client's exit", timeout, |s| s.exit)
    }

    /// The task as `boinccmd` listed it last (in this client's life or an earlier one).
    pub fn last_seen(&self, name: &str) -> Option<Task> {
        self.seen.lock().unwrap().get(name).map(|(_, t)| t.clone())
    }

    /// SIGKILL to the client process only (its app lives on, as after a client crash).
    pub fn kill_client(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Runs `boinccmd --host 127.0.0.1:PORT --passwd PW ARGS` (at most 30 s); its stdout.
    pub fn boinccmd(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut child = gah_util::process::command(BOINCCMD)
            .arg("--host")
            .arg(format!("127.0.0.1:{}", self.config.gui_rpc_port))
            .arg("--passwd")
            .arg(&self.config.gui_rpc_password)
            .args(args)
            .current_dir(&self.config.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {BOINCCMD}"))?;
        let start = Instant::now();
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                bail!("boinccmd {args:?} took over 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!("boinccmd {args:?}: {}: {}{}", out.status, stdout, String::from_utf8_lossy(&out.stderr));
        }
        Ok(stdout)
    }

    /// `boinccmd --get_tasks`, parsed.
    pub fn tasks(&self) -> anyhow::Result<Vec<Task>> {
        let tasks = parse_tasks(&self.boinccmd(&["--get_tasks"])?);
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap();
        for t in &tasks {
            seen.insert(t.name().to_owned(), (now, t.clone()));
        }
        Ok(tasks)
    }

    /// `boinccmd --task URL NAME OP` (suspend, resume, abort, ...).
    pub fn task_op(&self, name: &str, op: &str) -> anyhow::Result<()> {
        self.boinccmd(&["--task", &self.config.master_url, name, op]).map(|_| ())
    }

    /// Polls `--get_tasks` every second until `cond` holds for the named task while it
    /// computes (EXECUTING, SUSPENDED, mid-build, ...), at most `timeout`; GUI RPC errors
    /// (client starting) are retried. Stops as soon as the task is past computing, gone, put
    /// off beyond the time left, or the client exited ([`Watch::computing`]).
    pub fn wait_task(&mut self, name: &str, timeout: Duration, mut cond: impl FnMut(&Task) -> bool) -> Result<Task, WaitError> {
        self.watch().task(name).computing().until(&format!("task {name}"), timeout, |s| s.task.clone().filter(|t| cond(t)))
    }

    /// A wait on this client, and on a task and the server if named: see [`Watch`].
    pub fn watch(&mut self) -> Watch<'_> {
        Watch { client: self, task: None, server: None, computing: false, every: Duration::from_secs(1) }
    }

    /// The app's stderr for task `name`, and where it was found: its slot's `stderr.txt`
    /// (while it runs), the result's `<stderr_out>` in `client_state.xml` (once it ended),
    /// or the report the server holds.
    pub fn task_stderr(&self, name: &str, server: Option<&Harness>) -> Option<(String, String)> {
        let slots = self.config.data_dir.join("slots");
        let slot = self.last_seen(name).map(|t| t.get("slot").to_owned()).filter(|s| !s.is_empty());
        let mut dirs: Vec<PathBuf> = match slot {
            Some(n) => vec![slots.join(n)],
            None => fs::read_dir(&slots).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default(),
        };
        dirs.sort();
        for d in dirs {
            let path = d.join("stderr.txt");
            if let Ok(t) = fs::read_to_string(&path) {
                if !t.trim().is_empty() {
                    return Some((path.display().to_string(), t));
                }
            }
        }
        let state_file = self.config.data_dir.join("client_state.xml");
        if let Some(t) = fs::read_to_string(&state_file).ok().and_then(|x| stderr_in_state_file(&x, name)) {
            return Some((format!("<stderr_out> in {}", state_file.display()), t));
        }
        let report = server.and_then(|h| h.snapshot().report(name).map(|r| r.stderr_out.clone()));
        report.filter(|t| !t.trim().is_empty()).map(|t| ("the report the server holds".to_owned(), t))
    }

    /// The logs that say why a wait on this client stopped: the client's state, the task's
    /// last listed state, its stderr, the client's log and the server's, labelled.
    pub fn evidence(&mut self, task: Option<&str>, server: Option<&Harness>) -> String {
        let mut out = String::new();
        match self.exit_status() {
            Some(s) => {
                let _ = writeln!(out, "client: exited ({s})");
            }
            None => {
                let listed = match self.tasks() {
                    Ok(ts) => {
                        ts.iter().map(|t| format!("{} ({}, {})", t.name(), t.state(), t.active_state())).collect::<Vec<_>>().join(", ")
                    }
                    Err(e) => format!("(boinccmd: {e:#})"),
                };
                let _ = writeln!(out, "client: running, pid {}; its tasks now: [{listed}]", self.pid().unwrap_or(0));
            }
        }
        if let Some(name) = task {
            match self.seen.lock().unwrap().get(name) {
                Some((when, t)) => {
                    let _ = writeln!(out, "task {name} as boinccmd listed it {:.0} s ago: {}", when.elapsed().as_secs_f64(), t.summary());
                }
                None => {
                    let _ = writeln!(out, "task {name}: boinccmd never listed it");
                }
            }
            match self.task_stderr(name, server) {
                Some((from, text)) => {
                    let _ = writeln!(out, "task {name} stderr ({from}), last 40 lines:\n{}", wait::tail(&text, 40));
                }
                None => {
                    let _ = writeln!(out, "task {name} stderr: none found (no slot stderr.txt, no <stderr_out>, no report)");
                }
            }
        }
        let _ = writeln!(out, "client log ({}), last 40 lines:\n{}", self.log_path().display(), self.log_tail(40));
        if let Some(h) = server {
            let _ = writeln!(out, "harness log, last 40 lines:\n{}", h.log_tail(40));
        }
        out
    }

    /// Asks the client to quit (GUI RPC), then kills what is left after `grace`.
    pub fn shutdown(&mut self, grace: Duration) {
        if self.is_running() {
            let _ = self.boinccmd(&["--quit"]);
            let _ = wait::poll(grace, Duration::from_millis(200), || match self.exit_status() {
                Some(s) => Step::Done(s),
                None => Step::Pending,
            });
        }
        self.kill_everything();
    }

    /// SIGKILL to every process group the client had and to every process pointing into
    /// the data folder; waits (≤ 10 s) until they are gone. Returns what had to be killed
    /// besides the client itself.
    pub fn kill_everything(&mut self) -> Vec<ProcInfo> {
        let client_pid = self.pid().map(|p| p as i32);
        let mut killed = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let procs = processes_of(&self.config.data_dir, &self.pgids);
            if procs.is_empty() {
                break;
            }
            for &g in &self.pgids {
                let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
            }
            for p in &procs {
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
                if Some(p.pid) != client_pid && !killed.iter().any(|k: &ProcInfo| k.pid == p.pid) {
                    killed.push(p.clone());
                }
            }
            if let Some(c) = self.child.as_mut() {
                let _ = c.try_wait();
            }
            if Instant::now() > deadline {
                crate::say(&format!("processes survive SIGKILL: {procs:?}"));
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Some(c) = self.child.as_mut() {
            let _ = c.wait();
        }
        killed
    }

    /// Seconds since the client was (re)started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let left = self.kill_everything();
        if !left.is_empty() {
            crate::say(&format!("killed leftover processes: {left:?}"));
        }
    }
}

/// What one poll of a [`Watch`] saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The client's exit status, once it exited.
    pub exit: Option<ExitStatus>,
    /// True when `boinccmd --get_tasks` answered this poll (a task was watched, the client runs).
    pub answered: bool,
    /// The watched task as this poll listed it.
    pub task: Option<Task>,
    /// The harness's state, when the server is watched (taken after the client's exit
    /// status: a client seen exited has said all it will).
    pub snap: Option<Snapshot>,
}

/// A wait on a client (and a task, and the server): each poll looks at them all, returns
/// what `until`'s function makes of it, and stops as soon as it can no longer come:
/// - the client exited;
/// - with a task: it was put off beyond the time left;
/// - with [`Watch::computing`]: the task is past computing ([`Task::past_computing`]), left
///   the list, or was reported to the server;
/// - with a task but neither `computing` nor a server: the task left the list.
pub struct Watch<'a> {
    client: &'a mut Client,
    task: Option<String>,
    server: Option<&'a Harness>,
    computing: bool,
    every: Duration,
}

impl<'a> Watch<'a> {
    /// Watches task `name`: listed each poll, its state and stderr in the error.
    pub fn task(mut self, name: &str) -> Self {
        self.task = Some(name.into());
        self
    }

    /// Waits for a state of the task while it computes: stop once it can compute no more.
    pub fn computing(mut self) -> Self {
        self.computing = true;
        self
    }

    /// Watches the server too: its snapshot each poll, its log and the report in the error.
    pub fn server(mut self, harness: &'a Harness) -> Self {
        self.server = Some(harness);
        self
    }

    /// The poll period (1 s by default).
    pub fn every(mut self, period: Duration) -> Self {
        self.every = period;
        self
    }

    /// Polls until `done` returns something, at most `limit`.
    pub fn until<T>(self, what: &str, limit: Duration, mut done: impl FnMut(&Seen) -> Option<T>) -> Result<T, WaitError> {
        let Watch { client, task, server, computing, every } = self;
        let name = task.as_deref();
        // From the client's start: a postponement logged before this wait began counts too.
        let mut log_at = 0;
        let mut put_off = None;
        let start = Instant::now();
        // A task missing from one listing may be a client still reading its state file.
        let mut missing = 0;
        let r = wait::poll(limit, every, || {
            let exit = client.exit_status();
            let listing = match (name, exit) {
                (Some(_), None) => client.tasks().ok(),
                _ => None,
            };
            let answered = listing.is_some();
            let listed = name.and_then(|n| listing.into_iter().flatten().find(|t| t.name() == n));
            let seen = Seen { exit, answered, task: listed, snap: server.map(Harness::snapshot) };
            if let Some(t) = done(&seen) {
                return Step::Done(t);
            }
            let before = name.and_then(|n| client.last_seen(n));
            missing = if answered && seen.task.is_none() && before.is_some() { missing + 1 } else { 0 };
            if let (Some(n), true) = (name, computing) {
                // The task's own end says more than the client's exit: look at it first.
                if let Some(t) = seen.task.as_ref().or(before.as_ref()).filter(|t| t.past_computing()) {
                    return Step::Ended(Ended::TaskOver { state: t.state().into(), exit_status: t.exit_status() });
                }
                if let Some(r) = seen.snap.as_ref().and_then(|s| s.report(n)) {
                    return Step::Ended(Ended::Reported { state: r.state, exit_status: r.exit_status });
                }
                if missing >= 2 {
                    return Step::Ended(Ended::TaskGone);
                }
            }
            // Put off beyond the time left (gah-app's temporary exit when no guest can run
            // here): nothing this wait looks for can come, computing or not.
            if let Some(n) = name {
                if let Some(p) = postponed(&client.log_lines_since(&mut log_at), n) {
                    put_off = Some(p);
                }
                let left = limit.saturating_sub(start.elapsed()).as_secs_f64();
                if let Some((secs, reason)) = put_off.clone().filter(|(secs, _)| *secs > left) {
                    return Step::Ended(Ended::Postponed { secs, reason });
                }
            }
            if let Some(s) = exit {
                return Step::Ended(Ended::ClientExited(s.to_string()));
            }
            if name.is_some() && !computing && server.is_none() && missing >= 2 {
                return Step::Ended(Ended::TaskGone);
            }
            Step::Pending
        });
        r.map_err(|stopped| {
            let evidence = client.evidence(name, server);
            stopped.into_error(what, name.and_then(|n| client.last_seen(n)), evidence)
        })
    }
}

/// The last "Task NAME postponed for N seconds: REASON" of `log`: (N, REASON).
pub fn postponed(log: &str, name: &str) -> Option<(f64, String)> {
    let key = format!("Task {name} postponed for ");
    let line = log.lines().rev().find(|l| l.contains(&key))?;
    let rest = &line[line.find(&key)? + key.len()..];
    let (secs, reason) = rest.split_once(" seconds")?;
    Some((secs.trim().parse().ok()?, reason.trim_start_matches(':').trim().to_owned()))
}

/// The `<stderr_out>` of result `name` in a `client_state.xml`.
pub fn stderr_in_state_file(state: &str, name: &str) -> Option<String> {
    let key = format!("<name>{}</name>", crate::xml::esc(name));
    let block = state.split("<result>").skip(1).map(|b| b.split("</result>").next().unwrap_or(b)).find(|b| b.contains(&key))?;
    let text = block.split_once("<stderr_out>")?.1.split_once("</stderr_out>")?.0.trim();
    let text = text.strip_prefix("<![CDATA[").and_then(|t| t.strip_suffix("]]>")).unwrap_or(text);
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_get_tasks() {
        let text = "\n======== Tasks ========\n1) -----------\n   name: wu_0\n   WU name: wu\n   project URL: http://127.0.0.1:1/gah/\n   active_task_state: EXECUTING\n   fraction done: 0.250000\n   elapsed task time: 12.5\n2) -----------\n   name: wu2_0\n   active_task_state: SUSPENDED\n";
        let t = parse_tasks(text);
        assert_eq!(t.len(), 2);
        assert_eq!((t[0].name(), t[0].active_state(), t[0].fraction_done(), t[0].elapsed()), ("wu_0", "EXECUTING", 0.25, 12.5));
        assert_eq!(t[0].get("project URL"), "http://127.0.0.1:1/gah/");
        assert_eq!(t[1].active_state(), "SUSPENDED");
        assert!(!t[0].past_computing());
    }

    #[test]
    fn knows_when_a_task_can_compute_no_more() {
        let text = "1) -----------\n   name: a_0\n   ready to report: yes\n   state: compute error\n   active_task_state: UNINITIALIZED\n   exit_status: 2\n2) -----------\n   name: b_0\n   ready to report: no\n   state: uploading\n3) -----------\n   name: c_0\n   ready to report: no\n   state: downloaded\n   active_task_state: EXECUTING\n";
        let t = parse_tasks(text);
        assert_eq!((t[0].past_computing(), t[0].state(), t[0].exit_status()), (true, "compute error", Some(2)));
        assert!(t[1].past_computing());
        assert_eq!((t[2].past_computing(), t[2].exit_status()), (false, None));
    }

    #[test]
    fn reads_the_client_s_words_on_a_task() {
        let log = "01-Dec-2026 10:00:00 [127.0.0.1_1_gah] Task w_0 postponed for 86400 seconds: gentoo@home cannot run here: no qemu\n";
        assert_eq!(postponed(log, "w_0"), Some((86400.0, "gentoo@home cannot run here: no qemu".into())));
        assert_eq!(postponed(log, "w_1"), None);
        let state = "<client_state>\n<workunit><name>w</name></workunit>\n<result>\n    <name>w_0</name>\n    <stderr_out>\n<![CDATA[\n<stderr_txt>\ngah-app: error: bad\n</stderr_txt>\n]]>\n    </stderr_out>\n</result>\n<result>\n    <name>w_1</name>\n</result>\n</client_state>\n";
        assert_eq!(stderr_in_state_file(state, "w_0").as_deref(), Some("<stderr_txt>\ngah-app: error: bad\n</stderr_txt>"));
        assert_eq!(stderr_in_state_file(state, "w_1"), None);
    }
}
