//! The outcome of one job: what the guest agent reports and what the database stores.
//! Serialised as `outcome.json` inside the outcome archive (see `docs/FORMATS.md`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::job::{Compiler, Job, UseAssignment};

/// Version of the `outcome.json` format.
pub const OUTCOME_FORMAT: u32 = 1;

/// Caps on every string and list of `outcome.json`, which comes from an untrusted host and
/// is stored as it is: [`Outcome::from_json`] refuses an outcome over any of them. Generous
/// for every real package (Gentoo's largest install ~150 000 files), tight enough that one
/// upload cannot fill the results database. `docs/FORMATS.md` lists them.
pub mod limits {
    /// `job_id`, `repo`, `cpv`, and each `packages[].cpv`: bytes.
    pub const NAME: usize = 256;
    /// Entries of `use`.
    pub const USE_FLAGS: usize = 4096;
    /// Each USE flag's name: bytes.
    pub const USE_FLAG: usize = 128;
    /// `failed_phase`, each `phases[].phase`, `backend`, `accelerator`: bytes.
    pub const WORD: usize = 64;
    /// Entries of `failing_tests`.
    pub const FAILING_TESTS: usize = 10_000;
    /// Each failing test's name: bytes.
    pub const TEST_NAME: usize = 512;
    /// Entries of `phases`.
    pub const PHASES: usize = 64;
    /// Entries of `packages`.
    pub const PACKAGES: usize = 10_000;
    /// Entries of `installed_files`.
    pub const INSTALLED_FILES: usize = 200_000;
    /// Each `installed_files[].path`: bytes (Linux's PATH_MAX).
    pub const PATH: usize = 4096;
    /// Each `installed_files[].sha256`: bytes (64 hex digits, or empty).
    pub const SHA256: usize = 64;
    /// `summary`: bytes.
    pub const SUMMARY: usize = 4096;
}

/// A field of `outcome.json` over its cap in [`limits`], named as a path into the document
/// (`installed_files[12].path`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A string is longer than its cap.
    #[error("field `{field}` is {len} bytes, over its {max}-byte cap")]
    TooLong {
        /// The field.
        field: String,
        /// Its length in bytes.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// A list or map has more entries than its cap.
    #[error("field `{field}` has {len} entries, over its {max}-entry cap")]
    TooMany {
        /// The field.
        field: &'static str,
        /// Its number of entries.
        len: usize,
        /// The cap.
        max: usize,
    },
}

/// How a job ended. The string codes are stable: they are stored in the results database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Built, and the tests (if any ran) passed.
    Success,
    /// A dependency of the package failed to build or install.
    DepsFailed,
    /// The package itself failed before its test phase (unpack, prepare, configure, compile, install).
    BuildFailed,
    /// The package built but its test phase failed.
    TestFailed,
    /// The job ran out of its wall-clock limit.
    Timeout,
    /// The platform failed (VM did not boot, disk full, agent crashed): says nothing about the package.
    InfraError,
    /// The guest passed one of the volunteer's limits (disk written, memory, processes); the
    /// summary names it. Not spurious: a retry on the same limits gives the same answer.
    ResourceLimit,
}

impl Status {
    /// Every status, for exhaustive tests and listings.
    pub const ALL: [Status; 7] = [
        Status::Success,
        Status::DepsFailed,
        Status::BuildFailed,
        Status::TestFailed,
        Status::Timeout,
        Status::InfraError,
        Status::ResourceLimit,
    ];

    /// The stable string code.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::DepsFailed => "deps_failed",
            Status::BuildFailed => "build_failed",
            Status::TestFailed => "test_failed",
            Status::Timeout => "timeout",
            Status::InfraError => "infra_error",
            Status::ResourceLimit => "resource_limit",
        }
    }

    /// True when the result says nothing about the package (as crater's `is_spurious`):
    /// such a result is retried rather than counted against the package.
    pub fn is_spurious(self) -> bool {
        matches!(self, Status::Timeout | Status::InfraError)
    }

    /// True when the package itself failed: its build (`build_failed`) or its tests
    /// (`test_failed`); not a dependency's failure, a limit or a spurious result.
    pub fn is_own_failure(self) -> bool {
        matches!(self, Status::BuildFailed | Status::TestFailed)
    }

    /// True for the failures that count against the package in the failcount rotation.
    pub fn is_failure(self) -> bool {
        !matches!(self, Status::Success) && !self.is_spurious()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown status `{s}`"))
    }
}

/// The duration of one phase of the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseTime {
    /// The phase: `deps`, or an ebuild phase (`unpack`, `prepare`, `configure`, `compile`,
    /// `test`, `install`), or `merge`/`package`.
    pub phase: String,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// A package the job installed or built, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageVersion {
    /// `category/package-version`.
    pub cpv: String,
    /// True when installed from a cached binary package rather than built.
    pub binary: bool,
}

/// What a job produced. Written by the guest agent, checked by the validator, stored by the
/// assimilator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// Always [`OUTCOME_FORMAT`].
    pub format: u32,
    /// The job's identifier.
    pub job_id: String,
    /// The repository's `repo_name`.
    pub repo: String,
    /// `category/package-version`.
    pub cpv: String,
    /// The USE assignment the package was built with.
    #[serde(rename = "use")]
    pub use_flags: UseAssignment,
    /// The toolchain.
    pub compiler: Compiler,
    /// How it ended.
    pub status: Status,
    /// The phase that failed, when one did (`deps` for a dependency).
    pub failed_phase: Option<String>,
    /// True when the package's test phase ran (whatever its result).
    pub test_ran: bool,
    /// Names of failing tests, when the test suite says (sorted, for comparison).
    pub failing_tests: Vec<String>,
    /// Durations of the phases that ran, in order.
    pub phases: Vec<PhaseTime>,
    /// Every package installed for the job, the target last.
    pub packages: Vec<PackageVersion>,
    /// Files the package installed with their sha256, for replica comparison.
    pub installed_files: Vec<InstalledFile>,
    /// Which backend ran the job (`vm` or `sandbox`) and with which accelerator
    /// (`kvm`, `tcg`, `none`).
    pub backend: String,
    /// The accelerator, when the backend is a VM.
    pub accelerator: String,
    /// Whole job wall-clock seconds inside the guest.
    pub duration_secs: f64,
    /// One line for people: why it failed, or `ok`.
    pub summary: String,
}

/// One file the package installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstalledFile {
    /// Absolute path inside the guest root.
    pub path: String,
    /// sha256 of the content (empty for directories and links).
    pub sha256: String,
}

impl Outcome {
    /// A blank outcome for `job` with the given status; the agent fills in the rest.
    pub fn for_job(job: &Job, status: Status) -> Outcome {
        Outcome {
            format: OUTCOME_FORMAT,
            job_id: job.job_id.clone(),
            repo: job.repo.clone(),
            cpv: job.cpv.clone(),
            use_flags: job.use_flags.clone(),
            compiler: job.compiler,
            status,
            failed_phase: None,
            test_ran: false,
            failing_tests: Vec::new(),
            phases: Vec::new(),
            packages: Vec::new(),
            installed_files: Vec::new(),
            backend: String::new(),
            accelerator: String::new(),
            duration_secs: 0.0,
            summary: String::new(),
        }
    }

    /// Parses `outcome.json`, refusing other format versions and any field over its cap in
    /// [`limits`].
    pub fn from_json(bytes: &[u8]) -> Result<Outcome, crate::Error> {
        let outcome: Outcome = serde_json::from_slice(bytes).map_err(|e| crate::Error::Json { what: "outcome.json", source: e })?;
        if outcome.format != OUTCOME_FORMAT {
            return Err(crate::Error::Format { what: "outcome.json", found: outcome.format, expected: OUTCOME_FORMAT });
        }
        outcome.check_limits().map_err(|source| crate::Error::Limit { what: "outcome.json", source })?;
        Ok(outcome)
    }

    /// Checks every string and list against its cap in [`limits`]; the error names the first
    /// field over.
    pub fn check_limits(&self) -> Result<(), LimitError> {
        use limits as l;
        fn text(field: impl FnOnce() -> String, value: &str, max: usize) -> Result<(), LimitError> {
            if value.len() > max {
                return Err(LimitError::TooLong { field: field(), len: value.len(), max });
            }
            Ok(())
        }
        fn count(field: &'static str, len: usize, max: usize) -> Result<(), LimitError> {
            if len > max {
                return Err(LimitError::TooMany { field, len, max });
            }
            Ok(())
        }
        // Counts first: a list over its cap is refused before its entries are walked.
        count("use", self.use_flags.0.len(), l::USE_FLAGS)?;
        count("failing_tests", self.failing_tests.len(), l::FAILING_TESTS)?;
        count("phases", self.phases.len(), l::PHASES)?;
        count("packages", self.packages.len(), l::PACKAGES)?;
        count("installed_files", self.installed_files.len(), l::INSTALLED_FILES)?;
        text(|| "job_id".into(), &self.job_id, l::NAME)?;
        text(|| "repo".into(), &self.repo, l::NAME)?;
        text(|| "cpv".into(), &self.cpv, l::NAME)?;
        for flag in self.use_flags.0.keys() {
            text(|| format!("use.{}", flag.get(..32).unwrap_or("(a long name)")), flag, l::USE_FLAG)?;
        }
        text(|| "failed_phase".into(), self.failed_phase.as_deref().unwrap_or(""), l::WORD)?;
        for (i, t) in self.failing_tests.iter().enumerate() {
            text(|| format!("failing_tests[{i}]"), t, l::TEST_NAME)?;
        }
        for (i, p) in self.phases.iter().enumerate() {
            text(|| format!("phases[{i}].phase"), &p.phase, l::WORD)?;
        }
        for (i, p) in self.packages.iter().enumerate() {
            text(|| format!("packages[{i}].cpv"), &p.cpv, l::NAME)?;
        }
        for (i, f) in self.installed_files.iter().enumerate() {
            text(|| format!("installed_files[{i}].path"), &f.path, l::PATH)?;
            text(|| format!("installed_files[{i}].sha256"), &f.sha256, l::SHA256)?;
        }
        text(|| "backend".into(), &self.backend, l::WORD)?;
        text(|| "accelerator".into(), &self.accelerator, l::WORD)?;
        text(|| "summary".into(), &self.summary, l::SUMMARY)
    }

    /// Serialises to pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("an Outcome always serialises")
    }

    /// Says how this outcome disagrees with the job it claims to answer, if it does.
    pub fn mismatch_with(&self, job: &Job) -> Option<String> {
        if self.job_id != job.job_id {
            return Some(format!("outcome is for job `{}`, not `{}`", self.job_id, job.job_id));
        }
        if self.cpv != job.cpv || self.repo != job.repo {
            return Some(format!("outcome is for {}::{}, the job is {}::{}", self.cpv, self.repo, job.cpv, job.repo));
        }
        if self.use_flags != job.use_flags {
            return Some(format!(
                "outcome USE `{}` differs from the job's `{}`",
                self.use_flags.to_package_use(),
                job.use_flags.to_package_use()
            ));
        }
        if self.compiler != job.compiler {
            return Some(format!("outcome compiler {} differs from the job's {}", self.compiler, job.compiler));
        }
        None
    }

    /// Checks the internal consistency a well-behaved agent guarantees.
    pub fn check_consistency(&self) -> Result<(), String> {
        match (self.status, self.failed_phase.as_deref()) {
            (Status::Success, Some(p)) => return Err(format!("status success but failed phase `{p}`")),
            (Status::BuildFailed | Status::TestFailed | Status::DepsFailed, None) => {
                return Err(format!("status {} without a failed phase", self.status))
            }
            (Status::TestFailed, Some(p)) if p != "test" => return Err(format!("status test_failed but failed phase `{p}`")),
            (Status::DepsFailed, Some(p)) if p != "deps" => return Err(format!("status deps_failed but failed phase `{p}`")),
            _ => {}
        }
        if self.status == Status::TestFailed && !self.test_ran {
            return Err("status test_failed but the test phase did not run".into());
        }
        if self.phases.iter().any(|p| !p.seconds.is_finite() || p.seconds < 0.0) {
            return Err("a phase has a negative or non-finite duration".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_code() {
        for st in Status::ALL {
            assert_eq!(st.as_str().parse::<Status>().unwrap(), st);
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
        }
        assert!(Status::InfraError.is_spurious());
        assert!(Status::TestFailed.is_failure());
        assert!(!Status::Success.is_failure());
    }

    #[test]
    fn every_capped_field_is_refused_one_past_its_cap_and_named() {
        use limits as l;
        let job = Job::new("gah", "a/b-1", UseAssignment::default(), Compiler::Gcc, 10);
        let base = Outcome::for_job(&job, Status::Success);
        let long = |n: usize| "x".repeat(n);
        let file = |path: String, sha256: String| InstalledFile { path, sha256 };
        let phase = |phase: String| PhaseTime { phase, seconds: 1.0 };
        let pkg = |cpv: String| PackageVersion { cpv, binary: false };
        type Edit = Box<dyn Fn(&mut Outcome, usize)>;
        let cases: Vec<(&str, usize, Edit)> = vec![
            ("job_id", l::NAME, Box::new(move |o, n| o.job_id = long(n))),
            ("repo", l::NAME, Box::new(move |o, n| o.repo = long(n))),
            ("cpv", l::NAME, Box::new(move |o, n| o.cpv = long(n))),
            ("use", l::USE_FLAGS, Box::new(|o, n| o.use_flags.0 = (0..n).map(|i| (format!("f{i}"), true)).collect())),
            (
                "use.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                l::USE_FLAG,
                Box::new(move |o, n| {
                    o.use_flags.0.insert(long(n), true);
                }),
            ),
            ("failed_phase", l::WORD, Box::new(move |o, n| o.failed_phase = Some(long(n)))),
            ("failing_tests", l::FAILING_TESTS, Box::new(|o, n| o.failing_tests = vec![String::new(); n])),
            ("failing_tests[1]", l::TEST_NAME, Box::new(move |o, n| o.failing_tests = vec![String::new(), long(n)])),
            ("phases", l::PHASES, Box::new(move |o, n| o.phases = vec![phase("x".into()); n])),
            ("phases[0].phase", l::WORD, Box::new(move |o, n| o.phases = vec![phase(long(n))])),
            ("packages", l::PACKAGES, Box::new(move |o, n| o.packages = vec![pkg("a/b-1".into()); n])),
            ("packages[0].cpv", l::NAME, Box::new(move |o, n| o.packages = vec![pkg(long(n))])),
            ("installed_files", l::INSTALLED_FILES, Box::new(move |o, n| o.installed_files = vec![file("/a".into(), String::new()); n])),
            ("installed_files[0].path", l::PATH, Box::new(move |o, n| o.installed_files = vec![file(long(n), String::new())])),
            ("installed_files[0].sha256", l::SHA256, Box::new(move |o, n| o.installed_files = vec![file("/a".into(), long(n))])),
            ("backend", l::WORD, Box::new(move |o, n| o.backend = long(n))),
            ("accelerator", l::WORD, Box::new(move |o, n| o.accelerator = long(n))),
            ("summary", l::SUMMARY, Box::new(move |o, n| o.summary = long(n))),
        ];
        for (field, max, edit) in cases {
            let mut at_cap = base.clone();
            edit(&mut at_cap, max);
            assert_eq!(at_cap.check_limits(), Ok(()), "{field} at its cap");
            let mut over = base.clone();
            edit(&mut over, max + 1);
            let e = Outcome::from_json(&over.to_json()).unwrap_err();
            let crate::Error::Limit { source, .. } = &e else { panic!("{field}: {e:?}") };
            let (named, len) = match source {
                LimitError::TooLong { field, len, .. } => (field.clone(), *len),
                LimitError::TooMany { field, len, .. } => ((*field).to_owned(), *len),
            };
            assert_eq!(len, max + 1, "{field}");
            assert_eq!(named, field);
        }
    }

    #[test]
    fn consistency_catches_contradictions() {
        let job = Job::new("gah", "a/b-1", UseAssignment::default(), Compiler::Gcc, 10);
        let mut o = Outcome::for_job(&job, Status::TestFailed);
        assert!(o.check_consistency().is_err());
        o.failed_phase = Some("test".into());
        o.test_ran = true;
        assert!(o.check_consistency().is_ok());
        assert!(o.mismatch_with(&job).is_none());
        let other = Job::new("gah", "a/b-1", UseAssignment::default(), Compiler::Clang, 10);
        assert!(o.mismatch_with(&other).is_some());
    }
}
