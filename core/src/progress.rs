//! What crosses the guest boundary while a job runs, and what `gah-app` reports to whoever
//! runs it, typed: one format each, written and parsed here only.
//!
//! - [`GuestProgress`]: the guest agent's progress line (`GAH-PROGRESS 0.5000 compile`), on
//!   the VM's virtio-serial port or the sandbox agent's stdout. It comes from the guest, so
//!   parsing it is strict: an unknown phase or a fraction outside 0..=1 is no progress.
//! - [`AppReport`]: a line `gah-app` writes to its stderr (`gah-app: report {...}`), which
//!   `gah run` follows; BOINC keeps the same stderr as the task's `stderr.txt`.
//! - [`Phase`], [`BackendKind`], [`Accelerator`]: the closed sets both speak of.

use serde::{Deserialize, Serialize};

/// Where a job is: the agent's own steps and Portage's phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The guest is starting (the supervisor's state before the agent's first line).
    Boot,
    /// The agent started.
    Start,
    /// Portage installs the dependencies.
    Deps,
    /// `src_unpack`.
    Unpack,
    /// `src_prepare`.
    Prepare,
    /// `src_configure`.
    Configure,
    /// `src_compile`.
    Compile,
    /// `src_test`.
    Test,
    /// `src_install`.
    Install,
    /// The binary package is written.
    Package,
    /// The package is merged into the guest's root.
    Merge,
    /// The agent wrote its outcome.
    Done,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 12] = [
        Phase::Boot,
        Phase::Start,
        Phase::Deps,
        Phase::Unpack,
        Phase::Prepare,
        Phase::Configure,
        Phase::Compile,
        Phase::Test,
        Phase::Install,
        Phase::Package,
        Phase::Merge,
        Phase::Done,
    ];

    /// The stable name (also what `outcome.json`'s phase times and failed phase say).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Boot => "boot",
            Phase::Start => "start",
            Phase::Deps => "deps",
            Phase::Unpack => "unpack",
            Phase::Prepare => "prepare",
            Phase::Configure => "configure",
            Phase::Compile => "compile",
            Phase::Test => "test",
            Phase::Install => "install",
            Phase::Package => "package",
            Phase::Merge => "merge",
            Phase::Done => "done",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Phase, String> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| format!("unknown phase `{s}`"))
    }
}

/// The guest agent's progress: how far, and in which phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuestProgress {
    /// Fraction done, 0..=1.
    pub fraction: f64,
    /// The phase.
    pub phase: Phase,
}

impl GuestProgress {
    const PREFIX: &'static str = "GAH-PROGRESS ";

    /// The longest line worth reading from the guest's progress channel: a progress line is
    /// some 30 bytes, and anything longer is noise the host drops unread.
    pub const MAX_LINE: usize = 4096;

    /// The line the agent writes (without newline); the fraction is clamped to 0..=1.
    pub fn to_line(&self) -> String {
        format!("{}{:.4} {}", Self::PREFIX, self.fraction.clamp(0.0, 1.0), self.phase)
    }

    /// Reads a line from the guest; `None` for anything that is not a well-formed progress
    /// line (console noise, a fraction out of range, an unknown phase).
    pub fn parse(line: &str) -> Option<GuestProgress> {
        let rest = line.trim().strip_prefix(Self::PREFIX)?;
        let (fraction, phase) = rest.split_once(' ')?;
        let fraction: f64 = fraction.parse().ok()?;
        if !(0.0..=1.0).contains(&fraction) {
            return None;
        }
        Some(GuestProgress { fraction, phase: phase.trim().parse().ok()? })
    }
}

/// The kind of guest that ran a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A qemu virtual machine.
    Vm,
    /// Linux namespaces over the same root.
    Sandbox,
}

impl BackendKind {
    /// The stable name (as `outcome.json`'s `backend` says it).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Vm => "vm",
            BackendKind::Sandbox => "sandbox",
        }
    }
}

/// What runs a VM's CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accelerator {
    /// Hardware virtualisation.
    Kvm,
    /// qemu's emulator (slow).
    Tcg,
    /// No VM (the sandbox).
    None,
}

impl Accelerator {
    /// The stable name (as `outcome.json`'s `accelerator` says it).
    pub fn as_str(self) -> &'static str {
        match self {
            Accelerator::Kvm => "kvm",
            Accelerator::Tcg => "tcg",
            Accelerator::None => "none",
        }
    }
}

/// What `gah-app` reports on its stderr for the program that runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "lowercase", deny_unknown_fields)]
pub enum AppReport {
    /// The backend chosen for this task, and why.
    Backend {
        /// The backend.
        backend: BackendKind,
        /// Its accelerator.
        accelerator: Accelerator,
        /// Why this one (what was tried and how it went).
        why: String,
    },
    /// The guest entered a new phase.
    Progress {
        /// Fraction done, 0..=1.
        fraction: f64,
        /// The phase.
        phase: Phase,
    },
}

impl AppReport {
    const PREFIX: &'static str = "report ";

    /// The message (after `gah-app: `): `report` and the JSON.
    pub fn to_message(&self) -> String {
        format!("{}{}", Self::PREFIX, serde_json::to_string(self).expect("a report always serialises"))
    }

    /// Reads a line of gah-app's stderr; `None` for any other line.
    pub fn parse(line: &str) -> Option<AppReport> {
        let message = line.trim().strip_prefix("gah-app: ")?;
        serde_json::from_str(message.strip_prefix(Self::PREFIX)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip_by_name() {
        for phase in Phase::ALL {
            assert_eq!(phase.as_str().parse::<Phase>(), Ok(phase));
            assert_eq!(serde_json::to_string(&phase).unwrap(), format!("\"{phase}\""));
        }
        assert!("pretend".parse::<Phase>().is_err());
    }

    #[test]
    fn guest_progress_is_parsed_strictly() {
        let p = GuestProgress { fraction: 0.25, phase: Phase::Compile };
        assert_eq!(p.to_line(), "GAH-PROGRESS 0.2500 compile");
        assert_eq!(GuestProgress::parse(&p.to_line()), Some(p));
        for noise in ["GAH-PROGRESS 7 compile", "GAH-PROGRESS 0.5 rm-rf", "GAH-PROGRESS 0.5", "noise", "GAH-PROGRESS NaN test"] {
            assert_eq!(GuestProgress::parse(noise), None, "{noise}");
        }
    }

    #[test]
    fn app_reports_round_trip_as_stderr_lines() {
        let reports = [
            AppReport::Backend { backend: BackendKind::Sandbox, accelerator: Accelerator::None, why: "KVM unusable".into() },
            AppReport::Progress { fraction: 0.5, phase: Phase::Test },
        ];
        for report in reports {
            let line = format!("gah-app: {}\n", report.to_message());
            assert_eq!(AppReport::parse(&line), Some(report));
        }
        assert_eq!(AppReport::parse("gah-app: backend vm"), None);
        assert_eq!(AppReport::parse(r#"gah-app: report {"report":"progress","fraction":0.5,"phase":"test","extra":1}"#), None);
    }
}
