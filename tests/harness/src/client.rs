//! Drives Debian's real BOINC client (`/usr/bin/boinc`, `/usr/bin/boinccmd`, 7.20) in a
//! private data folder, attached to the harness without the web RPC (an account file),
//! under anonymous platform (the test lays out `projects/<dir>/app_info.xml` and the files).
//!
//! The client is started in a process group of its own; its apps inherit that group (the
//! 7.20 client does not change it), so [`Client`]'s `Drop` kills the client, the app and any
//! guest, then anything else whose command line or folder points into the data folder.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

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
}

impl Client {
    /// Writes nothing: call [`ClientConfig::write`] first. Starts `boinc`.
    pub fn start(config: &ClientConfig) -> anyhow::Result<Client> {
        let mut c = Client { config: config.clone(), child: None, pgids: Vec::new(), started: Instant::now() };
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
        let mut cmd = Command::new(BOINC);
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
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// True while the client process lives.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits for the client to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            let c = self.child.as_mut()?;
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
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
        let mut child = Command::new(BOINCCMD)
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
        Ok(parse_tasks(&self.boinccmd(&["--get_tasks"])?))
    }

    /// `boinccmd --task URL NAME OP` (suspend, resume, abort, ...).
    pub fn task_op(&self, name: &str, op: &str) -> anyhow::Result<()> {
        self.boinccmd(&["--task", &self.config.master_url, name, op]).map(|_| ())
    }

    /// Polls `--get_tasks` every second until `cond` holds for the named task, at most
    /// `timeout`; GUI RPC errors (client starting) are retried.
    pub fn wait_task(&self, name: &str, timeout: Duration, mut cond: impl FnMut(&Task) -> bool) -> anyhow::Result<Task> {
        let start = Instant::now();
        let mut last: String;
        loop {
            match self.tasks() {
                Ok(tasks) => {
                    if let Some(t) = tasks.iter().find(|t| t.name() == name) {
                        if cond(t) {
                            return Ok(t.clone());
                        }
                        last = format!("{:?}", t.0);
                    } else {
                        last = format!("task {name} not listed ({} tasks)", tasks.len());
                    }
                }
                Err(e) => last = format!("{e:#}"),
            }
            if start.elapsed() > timeout {
                bail!("task {name}: condition not met after {timeout:?}; last: {last}\nclient log:\n{}", self.log_tail(40));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Asks the client to quit (GUI RPC), then kills what is left after `grace`.
    pub fn shutdown(&mut self, grace: Duration) {
        if self.is_running() {
            let _ = self.boinccmd(&["--quit"]);
            let _ = self.wait_exit(grace);
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
                eprintln!("[harness] processes survive SIGKILL: {procs:?}");
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
            eprintln!("[harness] killed leftover processes: {left:?}");
        }
    }
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
    }
}
