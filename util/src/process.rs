//! The one place that spawns programs (qemu, qemu-img, mkfs.ext4, emerge, BOINC's tools, our
//! own binaries in tests): `clippy.toml` bans `Command::new` everywhere else.
//!
//! Modelled on ripgrep's `CommandReader`: a failure carries the trimmed tail of the program's
//! stderr, so it says what the program said; and a child owned through [`KillOnDrop`] cannot
//! outlive its owner's scope.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output};

/// A program that could not be started or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be started (missing, not executable, ...).
    #[error("could not start {command}")]
    Start {
        /// The command as it would have run.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The program ran and failed.
    #[error("{command} failed ({status}): {stderr_tail}")]
    Failed {
        /// The command as it ran.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// The last lines of its stderr, joined with ` | `.
        stderr_tail: String,
    },
}

/// A `Command` for `program` with a predictable locale (messages we parse or show are C's).
pub fn command(program: impl AsRef<OsStr>) -> Command {
    #[allow(clippy::disallowed_methods)] // This is the one place.
    let mut cmd = Command::new(program);
    cmd.env("LC_ALL", "C.UTF-8");
    cmd
}

/// Makes the program `cmd` starts die with its parent (SIGKILL on the parent's death, Linux's
/// parent-death signal): a guest or probe never outlives the gah-app that started it.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe, and the closure touches nothing else between fork
    // and exec.
    unsafe {
        cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from));
    }
    cmd
}

/// Makes `cmd` run as `uid`/`gid` with only `groups` as supplementary groups (a root parent
/// dropping privileges for a child that handles untrusted data). Call it before
/// [`die_with_parent`]: changing credentials clears the parent-death signal, so that must be
/// set after.
pub fn run_as(cmd: &mut Command, uid: u32, gid: u32, groups: Vec<u32>) -> &mut Command {
    use nix::unistd::{Gid, Uid};
    use std::os::unix::process::CommandExt;
    let groups: Vec<Gid> = groups.into_iter().map(Gid::from_raw).collect();
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    // SAFETY: setgroups, setresgid and setresuid are async-signal-safe system calls; the
    // closure allocates nothing (the groups were collected before the fork).
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setgroups(&groups)?;
            nix::unistd::setresgid(gid, gid, gid)?;
            nix::unistd::setresuid(uid, uid, uid)?;
            Ok(())
        });
    }
    cmd
}

/// Runs `cmd` to completion with its output captured; a nonzero exit becomes
/// [`ProcessError::Failed`] carrying stderr's last lines.
pub fn run_checked(cmd: &mut Command) -> Result<Output, ProcessError> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| ProcessError::Start { command: shown.clone(), source })?;
    if !out.status.success() {
        return Err(ProcessError::Failed { command: shown, status: out.status, stderr_tail: tail(&out.stderr, 6) });
    }
    Ok(out)
}

/// The last `lines` non-blank lines of `bytes`, trimmed, joined with ` | `.
pub fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut last: Vec<&str> = text.lines().rev().map(str::trim).filter(|l| !l.is_empty()).take(lines).collect();
    last.reverse();
    last.join(" | ")
}

/// Finds `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// A child that is killed and reaped when dropped: its owner's early return or panic cannot
/// leave it running.
#[derive(Debug)]
pub struct KillOnDrop(Child);

impl KillOnDrop {
    /// Spawns `cmd`.
    pub fn spawn(cmd: &mut Command) -> Result<KillOnDrop, ProcessError> {
        cmd.spawn().map(KillOnDrop).map_err(|source| ProcessError::Start { command: format!("{cmd:?}"), source })
    }

    /// The child.
    pub fn child(&mut self) -> &mut Child {
        &mut self.0
    }

    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_carries_the_tail_of_stderr() {
        let e = run_checked(command("sh").args(["-c", "echo one >&2; echo; echo two >&2; exit 3"])).unwrap_err();
        let ProcessError::Failed { status, stderr_tail, .. } = &e else { panic!("{e:?}") };
        assert_eq!(status.code(), Some(3));
        assert_eq!(stderr_tail, "one | two");
        assert!(e.to_string().contains("\"sh\""), "{e}");
    }

    #[test]
    fn a_missing_program_is_named() {
        let e = run_checked(&mut command("/nonexistent/gah-no-such-program")).unwrap_err();
        assert!(matches!(e, ProcessError::Start { .. }));
        assert!(e.to_string().contains("gah-no-such-program"), "{e}");
    }

    #[test]
    fn the_locale_is_fixed() {
        let out = run_checked(command("sh").args(["-c", "echo $LC_ALL"])).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "C.UTF-8");
    }

    #[test]
    fn kill_on_drop_kills_and_reaps() {
        let guard = KillOnDrop::spawn(command("sleep").arg("600")).unwrap();
        let pid = i32::try_from(guard.id()).unwrap();
        drop(guard);
        // Reaped: the pid no longer names our child.
        let gone = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG)).is_err();
        assert!(gone);
    }

    #[test]
    fn tail_keeps_the_last_non_blank_lines() {
        assert_eq!(tail(b"a\n\n b \nc\n", 2), "b | c");
        assert_eq!(tail(b"", 3), "");
    }
}
