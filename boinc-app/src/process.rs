//! The one place that spawns external programs (qemu, qemu-img, mkfs.ext4, emerge).
//!
//! Modelled on ripgrep's `CommandReader`: stderr is captured, and its trimmed tail goes into
//! the error, so a failure says what the program said.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{bail, Context};

/// A `Command` for `program` with a predictable locale.
pub fn command(program: impl AsRef<Path>) -> Command {
    let mut cmd = Command::new(program.as_ref());
    cmd.env("LC_ALL", "C.UTF-8");
    cmd
}

/// Runs `cmd` to completion; a nonzero exit becomes an error carrying stderr's last lines.
pub fn run_checked(cmd: &mut Command) -> anyhow::Result<Output> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("could not start {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed ({}): {}", out.status, tail(&out.stderr, 6));
    }
    Ok(out)
}

/// The last `lines` lines of `bytes`, trimmed, joined with ` | `.
pub fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut last: Vec<&str> = text.lines().rev().filter(|l| !l.trim().is_empty()).take(lines).collect();
    last.reverse();
    last.join(" | ")
}

/// Finds `name` on PATH.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}
