//! The job: one configuration of one ebuild, as the work generator issues it and the guest
//! agent runs it. Serialised as `job.json` (see `docs/FORMATS.md`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Version of the `job.json` format; bumped on any incompatible change.
pub const JOB_FORMAT: u32 = 1;

/// A C/C++ toolchain the guest can build with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compiler {
    /// GCC (`gcc`/`g++`).
    Gcc,
    /// LLVM Clang (`clang`/`clang++`).
    Clang,
}

impl Compiler {
    /// Every compiler the guest image carries, in a stable order.
    pub const ALL: [Compiler; 2] = [Compiler::Gcc, Compiler::Clang];

    /// The stable lower-case name used in files, databases and workunit names.
    pub fn as_str(self) -> &'static str {
        match self {
            Compiler::Gcc => "gcc",
            Compiler::Clang => "clang",
        }
    }

    /// The `CC` and `CXX` values Portage builds with.
    pub fn cc_cxx(self) -> (&'static str, &'static str) {
        match self {
            Compiler::Gcc => ("gcc", "g++"),
            Compiler::Clang => ("clang", "clang++"),
        }
    }
}

impl fmt::Display for Compiler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Compiler {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gcc" => Ok(Compiler::Gcc),
            "clang" => Ok(Compiler::Clang),
            other => Err(format!("unknown compiler `{other}` (expected gcc or clang)")),
        }
    }
}

/// The USE assignment of a job: every IUSE flag of the ebuild, on or off.
///
/// Explicit for every flag so that a configuration means the same thing whatever the
/// profile's defaults are.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UseAssignment(pub BTreeMap<String, bool>);

impl UseAssignment {
    /// The enabled flags, sorted.
    pub fn enabled(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter(|(_, on)| **on).map(|(f, _)| f.as_str())
    }

    /// Portage's `package.use` notation: `a -b c`, every flag named.
    pub fn to_package_use(&self) -> String {
        let words: Vec<String> = self.0.iter().map(|(flag, on)| if *on { flag.clone() } else { format!("-{flag}") }).collect();
        words.join(" ")
    }

    /// Parses Portage's `package.use` notation (`a -b +c`), the inverse of
    /// [`UseAssignment::to_package_use`]; the error names the word that is not a flag.
    pub fn from_package_use(text: &str) -> Result<UseAssignment, String> {
        let mut flags = BTreeMap::new();
        for word in text.split_whitespace() {
            let (flag, on) = match word.strip_prefix('-') {
                Some(f) => (f, false),
                None => (word.strip_prefix('+').unwrap_or(word), true),
            };
            if flag.is_empty() || flag.starts_with(['-', '+']) {
                return Err(format!("`{word}` is not a USE flag"));
            }
            flags.insert(flag.to_owned(), on);
        }
        Ok(UseAssignment(flags))
    }

    /// True when every flag of `wanted` has the same value here (other flags any value).
    pub fn has_all(&self, wanted: &UseAssignment) -> bool {
        wanted.0.iter().all(|(flag, on)| self.0.get(flag) == Some(on))
    }

    /// A compact, human-readable form: the enabled flags, or `-` when none is.
    pub fn summary(&self) -> String {
        let on: Vec<&str> = self.enabled().collect();
        if on.is_empty() {
            "-".to_owned()
        } else {
            on.join(" ")
        }
    }
}

/// One configuration to build and test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Always [`JOB_FORMAT`].
    pub format: u32,
    /// Stable identifier, also the BOINC workunit name's stem.
    pub job_id: String,
    /// The repository's `repo_name`.
    pub repo: String,
    /// `category/package-version`.
    pub cpv: String,
    /// Every IUSE flag of the ebuild, on or off.
    #[serde(rename = "use")]
    pub use_flags: UseAssignment,
    /// The toolchain to build with.
    pub compiler: Compiler,
    /// Wall-clock limit for the whole job inside the guest, in seconds.
    pub timeout_secs: u64,
}

/// A cell: one configuration of one ebuild, the identity results are filed under. A job is
/// a cell with a time limit; every submission of the job, in every tree snapshot, is a row
/// of the same cell in the results database.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell {
    /// The repository's `repo_name`.
    pub repo: String,
    /// `category/package-version`.
    pub cpv: String,
    /// Every IUSE flag of the ebuild, on or off.
    pub use_flags: UseAssignment,
    /// The toolchain.
    pub compiler: Compiler,
}

impl Cell {
    /// The id of the cell's job ([`job_id`]).
    pub fn job_id(&self) -> String {
        job_id(&self.repo, &self.cpv, &self.use_flags, self.compiler)
    }

    /// `category/package`.
    pub fn cp(&self) -> &str {
        split_cpv(&self.cpv).map(|(cp, _)| cp).unwrap_or(&self.cpv)
    }
}

impl Job {
    /// The cell this job builds.
    pub fn cell(&self) -> Cell {
        Cell { repo: self.repo.clone(), cpv: self.cpv.clone(), use_flags: self.use_flags.clone(), compiler: self.compiler }
    }

    /// Builds a job and derives its identifier from its content, so the same configuration
    /// always gets the same identifier.
    pub fn new(repo: &str, cpv: &str, use_flags: UseAssignment, compiler: Compiler, timeout_secs: u64) -> Job {
        let job_id = job_id(repo, cpv, &use_flags, compiler);
        Job { format: JOB_FORMAT, job_id, repo: repo.to_owned(), cpv: cpv.to_owned(), use_flags, compiler, timeout_secs }
    }

    /// Parses `job.json`, refusing other format versions.
    pub fn from_json(bytes: &[u8]) -> Result<Job, crate::Error> {
        let job: Job = serde_json::from_slice(bytes).map_err(|e| crate::Error::Json { what: "job.json", source: e })?;
        if job.format != JOB_FORMAT {
            return Err(crate::Error::Format { what: "job.json", found: job.format, expected: JOB_FORMAT });
        }
        Ok(job)
    }

    /// Reads and parses the job file `path`; an error names the file.
    pub fn read(path: &std::path::Path) -> Result<Job, crate::Error> {
        let bytes = std::fs::read(path).map_err(|source| crate::Error::Read { path: path.to_path_buf(), source })?;
        Job::from_json(&bytes).map_err(|e| crate::Error::InFile { path: path.to_path_buf(), source: Box::new(e) })
    }

    /// Serialises to pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a Job always serialises")
    }

    /// True when `job_id` is the identifier of this job's own configuration, as [`Job::new`]
    /// derives it (an upload cannot claim one job's id for another configuration).
    pub fn has_own_id(&self) -> bool {
        self.job_id == job_id(&self.repo, &self.cpv, &self.use_flags, self.compiler)
    }

    /// `category/package`.
    pub fn cp(&self) -> &str {
        split_cpv(&self.cpv).map(|(cp, _)| cp).unwrap_or(&self.cpv)
    }
}

/// True when `wu_name` names a workunit of job `job_id`: the job id itself, or the job id
/// followed by a suffix that starts with a character other than an ASCII letter or digit
/// (a submission's mark, e.g. `…-3f2a9c1b7d0e_2`). Only meaningful for a `job_id` checked to
/// be its configuration's own (see [`Job::has_own_id`]): a forged id could be any prefix.
pub fn is_workunit_of(wu_name: &str, job_id: &str) -> bool {
    !job_id.is_empty() && wu_name.strip_prefix(job_id).is_some_and(|rest| rest.chars().next().is_none_or(|c| !c.is_ascii_alphanumeric()))
}

/// A deterministic identifier: readable prefix plus a short content hash.
pub fn job_id(repo: &str, cpv: &str, use_flags: &UseAssignment, compiler: Compiler) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(repo.as_bytes());
    h.update([0]);
    h.update(cpv.as_bytes());
    h.update([0]);
    h.update(use_flags.to_package_use().as_bytes());
    h.update([0]);
    h.update(compiler.as_str().as_bytes());
    let digest = hex::encode(h.finalize());
    let readable: String = cpv.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
    format!("{readable}-{compiler}-{}", &digest[..12])
}

/// The BOINC workunit name of the `submission`-th submission of job `job_id`:
/// `<job_id>_<submission>`. BOINC never takes a workunit name twice, so every submission of a
/// configuration (a resubmission, a changed timeout) is a workunit of its own; the results
/// database still files them under one cell, which comes from the outcome's content.
pub fn wu_name(job_id: &str, submission: u64) -> String {
    format!("{job_id}_{submission}")
}

/// The job id a workunit name stands for: [`wu_name`] undone. A name without a submission
/// suffix (workunits submitted before there was one, `gah run`) is its own job id.
///
/// Unambiguous because a [`job_id`] ends in `-<compiler>-<hash>`: whatever follows its last
/// `_` holds a `-`, so an all-digit tail after the last `_` can only be a submission number.
pub fn job_id_of_wu(wu_name: &str) -> &str {
    match wu_name.rsplit_once('_') {
        Some((job, n)) if !job.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => job,
        _ => wu_name,
    }
}

/// Splits `category/package-version` into (`category/package`, `version`), following PMS:
/// the version starts at the last `-` followed by a digit that leaves a valid version,
/// with an optional `-rN` revision.
pub fn split_cpv(cpv: &str) -> Option<(&str, &str)> {
    let (_, pkg_and_ver) = cpv.split_once('/')?;
    let base = cpv.len() - pkg_and_ver.len();
    // Walk the `-` positions from the right, skipping a trailing `-rN`.
    let bytes = pkg_and_ver.as_bytes();
    let mut candidates: Vec<usize> = bytes.iter().enumerate().filter(|(_, b)| **b == b'-').map(|(i, _)| i).collect();
    candidates.reverse();
    for i in candidates {
        let ver = &pkg_and_ver[i + 1..];
        if ver.starts_with(|c: char| c.is_ascii_digit()) {
            return Some((&cpv[..base + i], ver));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpv_splits_at_version() {
        assert_eq!(split_cpv("app-arch/bzip2-1.0.8"), Some(("app-arch/bzip2", "1.0.8")));
        assert_eq!(split_cpv("dev-libs/libffi-3.4.4-r1"), Some(("dev-libs/libffi", "3.4.4-r1")));
        assert_eq!(split_cpv("dev-python/x-y-2-1.0"), Some(("dev-python/x-y-2", "1.0")));
        assert_eq!(split_cpv("nocategory"), None);
    }

    #[test]
    fn job_round_trips_and_ids_are_stable() {
        let mut flags = UseAssignment::default();
        flags.0.insert("static".into(), false);
        flags.0.insert("debug".into(), true);
        let job = Job::new("gah", "app-arch/bzip2-1.0.8", flags.clone(), Compiler::Clang, 3600);
        let again = Job::new("gah", "app-arch/bzip2-1.0.8", flags, Compiler::Clang, 3600);
        assert_eq!(job.job_id, again.job_id);
        assert!(job.job_id.starts_with("app-arch_bzip2-1.0.8-clang-"));
        assert_eq!(Job::from_json(&job.to_json()).unwrap(), job);
        assert_eq!(job.use_flags.to_package_use(), "debug -static");
    }

    #[test]
    fn package_use_notation_round_trips() {
        let flags = UseAssignment::from_package_use("ssl -static +doc").unwrap();
        assert_eq!(flags.to_package_use(), "doc ssl -static");
        assert_eq!(UseAssignment::from_package_use(&flags.to_package_use()).unwrap(), flags);
        assert_eq!(UseAssignment::from_package_use("").unwrap(), UseAssignment::default());
        assert!(UseAssignment::from_package_use("-").is_err() && UseAssignment::from_package_use("--x").is_err());
        assert!(flags.has_all(&UseAssignment::from_package_use("ssl -static").unwrap()));
        assert!(!flags.has_all(&UseAssignment::from_package_use("ssl static").unwrap()));
        assert!(!flags.has_all(&UseAssignment::from_package_use("test").unwrap()));
        let job = Job::new("gah", "a/b-1", flags, Compiler::Gcc, 1);
        assert_eq!(job.cell().job_id(), job.job_id);
    }

    #[test]
    fn job_refuses_unknown_fields() {
        let text = br#"{"format":1,"job_id":"x","repo":"r","cpv":"a/b-1","use":{},"compiler":"gcc","timeout_secs":1,"extra":1}"#;
        assert!(Job::from_json(text).is_err());
    }

    #[test]
    fn workunit_names_are_per_submission_and_lead_back_to_their_job() {
        let flags = UseAssignment([("ssl".to_string(), true)].into_iter().collect());
        let job = Job::new("gentoo", "dev-libs/foo_bar-1.2_p3", flags, Compiler::Clang, 60);
        let (first, second) = (wu_name(&job.job_id, 1), wu_name(&job.job_id, 2));
        assert_ne!(first, second);
        assert_eq!((job_id_of_wu(&first), job_id_of_wu(&second)), (job.job_id.as_str(), job.job_id.as_str()));
        // Names from before the suffix, and anything else, are their own job id.
        assert_eq!(job_id_of_wu(&job.job_id), job.job_id);
        for other in ["wu_a", "x_", "_1", "plain"] {
            assert_eq!(job_id_of_wu(other), other);
        }
    }
}
