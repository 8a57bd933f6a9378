//! A test double of how BOINC's `script_validator` and `script_assimilator` build the
//! command line they run, and of how they read its exit status: exactly BOINC's rules, so that
//! a test (and the harness's server) runs our programs with the lines an administrator pastes
//! into `config.xml`, and fails where a real server would.
//!
//! Copied from BOINC's source (the mirror's HEAD, commit c5c6cb79b9, `git describe`
//! dockerwrapper/22-312-gc5c6cb79b9, August 2026; nothing of it is committed here):
//! - `sched/script_validator.cpp` lines 68-83 (`validate_handler_init`: `split(arg, ' ')`, a
//!   one-word `--init_script` gets `files`, a one-word `--compare_script` gets `files files2`),
//!   129-146 (`init_result`: `../bin/<word 0>`, then per keyword `files` → the output paths,
//!   `runtime` → `" %f"` of the elapsed time, `result_id` → `" %lu"`; any other word dropped;
//!   `system()`), 148-162 (exit 0 valid, `VAL_RESULT_TRANSIENT_ERROR` = 3 (`validate_util2.h`
//!   line 35) retried later, anything else invalid), 186-228 (`compare_results`: also
//!   `files2`, `runtime2`, `result_id2`; exit 0 match, 3 retry, else mismatch). Unchanged in
//!   substance since client_release/7.20.5.
//! - `sched/script_assimilator.cpp` lines 65-76 (`split`; a one-word `--script` gets
//!   `wu_id files`), 101-141 (`files`, `files2` (path and logical name), `wu_id`, `wu_name`,
//!   `result_id`, `runtime`, `batch_id`; no canonical result: `--error %d %s %lu %d` with the
//!   error mask, name, id, batch), 143-149 (any nonzero status is an error, which stops the
//!   daemon). Older releases had fewer keywords: see [`BoincServer`].
//! - `lib/str_util.cpp` lines 838-846, `split()`: `getline(ss, item, delim)` then
//!   `push_back(item+delim)` since commit 55e16adf3a (2025-07-04, "split(): add delimiter to
//!   output strings"), first released in client_release/8.2.5 and server_release/1.6.1. Every
//!   word then ends in a blank, so **no keyword matches** on BOINC 8.2.5 and later (8.2.15,
//!   server 1.6.x, master): only the defaults appended to a one-word script, which have no
//!   blank, reach our programs. Before it (server_release/1.4.x, client_release 7.x, 8.0.x,
//!   8.2.0-8.2.4) `push_back(item)`, and keywords work.
//!
//! So the README's one-word lines (`--init_script gah-validate-init`, `--compare_script
//! gah-validate-compare`, `--script gah-assimilate`) work on every version; multi-word lines
//! work only before 8.2.5.

use std::path::Path;
use std::process::Output;

/// Which BOINC server's rules to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoincServer {
    /// client_release 7.x (7.20.5 is Debian bookworm's) and server_release/1.4.x:
    /// `script_assimilator` knows `files`, `wu_id`, `result_id`, `runtime`; a failed
    /// workunit is `--error MASK WU_ID`.
    Release7,
    /// client_release 8.0.x: adds `batch_id`; a failed workunit is
    /// `--error MASK WU_NAME WU_ID BATCH_ID`.
    Release8_0,
    /// client_release 8.2.0 to 8.2.4: adds `wu_name` and `files2` to `script_assimilator`.
    Release8_2_4,
    /// client_release 8.2.5 and later, server_release/1.6.x, master (c5c6cb79b9): as 8.2.4,
    /// but `split()` leaves a blank on every word, so no written keyword matches.
    Master,
}

impl BoincServer {
    /// Every modelled version, oldest first.
    pub const ALL: [BoincServer; 4] = [BoincServer::Release7, BoincServer::Release8_0, BoincServer::Release8_2_4, BoincServer::Master];

    fn assimilator_knows(self, keyword: &str) -> bool {
        match keyword {
            "files" | "wu_id" | "result_id" | "runtime" => true,
            "batch_id" => self != BoincServer::Release7,
            "wu_name" | "files2" => matches!(self, BoincServer::Release8_2_4 | BoincServer::Master),
            _ => false,
        }
    }
}

/// `lib/str_util.cpp`'s `split(s, ' ')`: `std::getline` pieces (empty pieces between two
/// blanks kept, none after a final blank), each with the blank appended on [`BoincServer::Master`].
pub fn split(s: &str, server: BoincServer) -> Vec<String> {
    let mut words: Vec<&str> = s.split(' ').collect();
    if words.last() == Some(&"") {
        words.pop();
    }
    words.into_iter().map(|w| if server == BoincServer::Master { format!("{w} ") } else { w.to_owned() }).collect()
}

/// What `script_validator` knows of one result.
#[derive(Debug, Clone)]
pub struct ValidatorResult {
    /// `result.id`.
    pub id: u64,
    /// `result.elapsed_time`, seconds.
    pub elapsed_time: f64,
    /// `get_output_file_paths()`: the result's output files on the server.
    pub paths: Vec<String>,
}

/// The script words of `--init_script ARG` (`validate_handler_init`).
pub fn validator_init_words(arg: &str, server: BoincServer) -> Vec<String> {
    let mut words = split(arg, server);
    if words.len() == 1 {
        words.push("files".into());
    }
    words
}

/// The script words of `--compare_script ARG` (`validate_handler_init`).
pub fn validator_compare_words(arg: &str, server: BoincServer) -> Vec<String> {
    let mut words = split(arg, server);
    if words.len() == 1 {
        words.push("files".into());
        words.push("files2".into());
    }
    words
}

/// The command `init_result` hands to `system()` for `--init_script ARG`.
pub fn validator_init_command(arg: &str, r: &ValidatorResult, server: BoincServer) -> String {
    let words = validator_init_words(arg, server);
    let mut cmd = format!("../bin/{}", words[0]);
    for w in &words[1..] {
        match w.as_str() {
            "files" => r.paths.iter().for_each(|p| cmd.push_str(&format!(" {p}"))),
            "runtime" => cmd.push_str(&format!(" {:.6}", r.elapsed_time)),
            "result_id" => cmd.push_str(&format!(" {}", r.id)),
            _ => {}
        }
    }
    cmd
}

/// The command `compare_results` hands to `system()` for `--compare_script ARG`.
pub fn validator_compare_command(arg: &str, r1: &ValidatorResult, r2: &ValidatorResult, server: BoincServer) -> String {
    let words = validator_compare_words(arg, server);
    let mut cmd = format!("../bin/{}", words[0]);
    for w in &words[1..] {
        match w.as_str() {
            "files" => r1.paths.iter().for_each(|p| cmd.push_str(&format!(" {p}"))),
            "files2" => r2.paths.iter().for_each(|p| cmd.push_str(&format!(" {p}"))),
            "runtime" => cmd.push_str(&format!(" {:.6}", r1.elapsed_time)),
            "result_id" => cmd.push_str(&format!(" {}", r1.id)),
            "runtime2" => cmd.push_str(&format!(" {:.6}", r2.elapsed_time)),
            "result_id2" => cmd.push_str(&format!(" {}", r2.id)),
            _ => {}
        }
    }
    cmd
}

/// What `script_validator` makes of the script's exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidatorDecision {
    /// Exit 0: valid (init) or equivalent (compare).
    Valid,
    /// Exit 3 (`VAL_RESULT_TRANSIENT_ERROR`): the workunit is validated again later.
    RetryLater,
    /// Any other exit, or no exit (a signal): invalid, or not equivalent.
    Invalid,
}

/// `WIFEXITED`/`WEXITSTATUS` as `init_result` and `compare_results` read them.
pub fn validator_decision(exit_code: Option<i32>) -> ValidatorDecision {
    match exit_code {
        Some(0) => ValidatorDecision::Valid,
        Some(3) => ValidatorDecision::RetryLater,
        _ => ValidatorDecision::Invalid,
    }
}

/// What `script_assimilator` knows of a workunit.
#[derive(Debug, Clone)]
pub struct AssimilatorWorkunit {
    /// `wu.id`.
    pub id: u64,
    /// `wu.name`.
    pub name: String,
    /// `wu.batch`.
    pub batch: i64,
    /// `wu.error_mask`.
    pub error_mask: i64,
    /// The canonical result, if the workunit has one.
    pub canonical: Option<Canonical>,
}

/// The canonical result as `script_assimilator` passes it.
#[derive(Debug, Clone)]
pub struct Canonical {
    /// `wu.canonical_resultid`.
    pub result_id: u64,
    /// `canonical_result.elapsed_time`.
    pub elapsed_time: f64,
    /// `get_output_file_infos()`: (path, logical name) of each output file.
    pub files: Vec<(String, String)>,
}

/// The command `assimilate_handler` hands to `system()` for `--script ARG`.
pub fn assimilator_command(arg: &str, wu: &AssimilatorWorkunit, server: BoincServer) -> String {
    let mut words = split(arg, server);
    if words.len() == 1 {
        words.push("wu_id".into());
        words.push("files".into());
    }
    let Some(c) = &wu.canonical else {
        return match server {
            BoincServer::Release7 => format!("../bin/{} --error {} {}", words[0], wu.error_mask, wu.id),
            _ => format!("../bin/{} --error {} {} {} {}", words[0], wu.error_mask, wu.name, wu.id, wu.batch),
        };
    };
    let mut cmd = format!("../bin/{}", words[0]);
    for w in &words[1..] {
        if !server.assimilator_knows(w) {
            continue;
        }
        match w.as_str() {
            "files" => c.files.iter().for_each(|(p, _)| cmd.push_str(&format!(" {p}"))),
            "files2" => c.files.iter().for_each(|(p, l)| cmd.push_str(&format!(" {p} {l}"))),
            "wu_id" => cmd.push_str(&format!(" {}", wu.id)),
            "wu_name" => cmd.push_str(&format!(" {}", wu.name)),
            "result_id" => cmd.push_str(&format!(" {}", c.result_id)),
            "runtime" => cmd.push_str(&format!(" {:.6}", c.elapsed_time)),
            "batch_id" => cmd.push_str(&format!(" {}", wu.batch)),
            _ => {}
        }
    }
    cmd
}

/// Runs `cmd` as `system()` does (`/bin/sh -c`) from `project/tmp_<host>/`, the folder BOINC's
/// daemons run in (so `../bin/` is the project's `bin/`). Without gentoo@home's variables:
/// `bin/start` gives a daemon only its starter's environment (sched/start), so the programs
/// must find their settings in the project's `gah.conf`, as on a real server.
pub fn run_like_a_daemon(project: &Path, cmd: &str) -> std::io::Result<Output> {
    let cwd = project.join("tmp_harness");
    std::fs::create_dir_all(&cwd)?;
    let mut command = gah_util::process::command("/bin/sh");
    command.arg("-c").arg(cmd).current_dir(&cwd);
    for var in ["GAH_RESULTS_DB", "GAH_QUEUE_DIR", "GAH_SNAPSHOT", "GAH_BINPKGS_DIR"] {
        command.env_remove(var);
    }
    command.output()
}

/// The value of option `name` in a daemon's `<cmd>` line from `config.xml`, split into words
/// as a shell would (double quotes group words; no other quoting is used in ours).
pub fn daemon_option(cmd_line: &str, name: &str) -> Option<String> {
    let mut words = Vec::new();
    let (mut word, mut quoted, mut any) = (String::new(), false, false);
    for ch in cmd_line.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            c => word.push(c),
        }
    }
    if any || !word.is_empty() {
        words.push(word);
    }
    let i = words.iter().position(|w| w == name)?;
    words.get(i + 1).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: u64, path: &str) -> ValidatorResult {
        ValidatorResult { id, elapsed_time: 1.5, paths: vec![path.into()] }
    }

    #[test]
    fn keywords_work_before_8_2_5_and_not_after() {
        let (a, b) = (result(7, "/u/a"), result(8, "/u/b"));
        let line = "gah-validator compare files files2 result_id runtime2";
        assert_eq!(validator_compare_command(line, &a, &b, BoincServer::Release8_2_4), "../bin/gah-validator /u/a /u/b 7 1.500000");
        assert_eq!(validator_compare_command(line, &a, &b, BoincServer::Master), "../bin/gah-validator ");
        for server in BoincServer::ALL {
            // The one-word form works everywhere; on master the name keeps its blank.
            let expected = if server == BoincServer::Master { "../bin/gah-validate-init  /u/a" } else { "../bin/gah-validate-init /u/a" };
            assert_eq!(validator_init_command("gah-validate-init", &a, server), expected);
        }
    }

    #[test]
    fn the_assimilators_forms_follow_the_release() {
        let mut wu = AssimilatorWorkunit {
            id: 42,
            name: "j_1".into(),
            batch: 3,
            error_mask: 4,
            canonical: Some(Canonical { result_id: 9, elapsed_time: 2.0, files: vec![("/u/j_1_0_r5_0".into(), "outcome.tar.gz".into())] }),
        };
        assert_eq!(assimilator_command("gah-assimilate", &wu, BoincServer::Release7), "../bin/gah-assimilate 42 /u/j_1_0_r5_0");
        assert_eq!(assimilator_command("gah-assimilate", &wu, BoincServer::Master), "../bin/gah-assimilate  42 /u/j_1_0_r5_0");
        assert_eq!(assimilator_command("x wu_name files", &wu, BoincServer::Release8_0), "../bin/x /u/j_1_0_r5_0");
        assert_eq!(assimilator_command("x wu_name files", &wu, BoincServer::Release8_2_4), "../bin/x j_1 /u/j_1_0_r5_0");
        wu.canonical = None;
        assert_eq!(assimilator_command("x wu_name files", &wu, BoincServer::Release7), "../bin/x --error 4 42");
        assert_eq!(assimilator_command("x wu_name files", &wu, BoincServer::Master), "../bin/x  --error 4 j_1 42 3");
    }

    #[test]
    fn split_is_getlines() {
        assert_eq!(split("a  b ", BoincServer::Release7), ["a", "", "b"]);
        assert_eq!(split("a b", BoincServer::Master), ["a ", "b "]);
        assert!(split("", BoincServer::Release7).is_empty());
    }

    #[test]
    fn daemon_options_are_read_like_a_shell() {
        let cmd = r#"script_validator --app gah --init_script "gah-validate-init" --compare_script gah-validate-compare -d 3"#;
        assert_eq!(daemon_option(cmd, "--init_script").as_deref(), Some("gah-validate-init"));
        assert_eq!(daemon_option(cmd, "--compare_script").as_deref(), Some("gah-validate-compare"));
        assert_eq!(daemon_option(r#"x --script "a b c""#, "--script").as_deref(), Some("a b c"));
        assert_eq!(daemon_option(cmd, "--script"), None);
    }
}
