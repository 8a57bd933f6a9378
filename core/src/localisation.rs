//! A failure's localisation as it is stored and shown: the minimal failure-inducing
//! [`Cause`] (`USE="jemalloc" (clang only)`), the [`Evidence`] it rests on (the follow-up
//! configurations run and how each ended), and the [`Conclusion`] (localised, flaky or
//! inconclusive), with serde (the results database stores it as JSON, the JSON API carries
//! it: `docs/FORMATS.md`) and `Display` in Gentoo's form.
//!
//! `gah-localise` finds them (its `Localiser` is the method); they are defined here because
//! the results database owns what it stores and its readers (gah-qa) show it without
//! depending on the method.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::job::{Compiler, UseAssignment};
use crate::outcome::Status;

/// What an outcome says about the failure being localised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The configuration built and passed its tests.
    Pass,
    /// It failed the same way (the same status) as the failure being localised.
    Fail,
    /// Anything else (another kind of failure, a dependency, a limit, a spurious result): it
    /// tells nothing either way.
    Unresolved,
}

impl Verdict {
    /// The verdict of `status` when the failure being localised is `failure`.
    pub fn of(status: Status, failure: Status) -> Verdict {
        if status == Status::Success {
            Verdict::Pass
        } else if status == failure {
            Verdict::Fail
        } else {
            Verdict::Unresolved
        }
    }
}

/// One configuration that ran, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// Every IUSE flag (`test` included, as the job has it).
    #[serde(rename = "use")]
    pub use_flags: UseAssignment,
    /// The toolchain.
    pub compiler: Compiler,
    /// How it ended.
    pub status: Status,
    /// What that says about the failure.
    pub verdict: Verdict,
}

impl Verdict {
    /// The verdict in words, for people: `fails`, `passes`, `tells nothing`.
    pub fn as_words(self) -> &'static str {
        match self {
            Verdict::Fail => "fails",
            Verdict::Pass => "passes",
            Verdict::Unresolved => "tells nothing",
        }
    }
}

/// `USE="a -b" clang: build_failed (fails)`: one line of the evidence, for people.
impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "USE=\"{}\" {}: {} ({})", self.use_flags.to_package_use(), self.compiler, self.status, self.verdict.as_words())
    }
}

/// What a conclusion rests on: the failure, how many outcomes were already known, and the
/// follow-ups run (the failing configuration's own rerun first), in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// The failing configuration and its status.
    pub failing: Run,
    /// Outcomes of the same ebuild known beforehand (the covering array's), all used.
    pub known: usize,
    /// The follow-ups, in the order they were proposed.
    pub runs: Vec<Run>,
}

/// A minimal failure-inducing combination: every configuration showing all of it fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cause {
    /// Flag values (on/off), by flag name. Empty: any USE.
    pub flags: BTreeMap<String, bool>,
    /// The compiler, when the failure needs it. `None`: any compiler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiler: Option<Compiler>,
}

impl Cause {
    /// True when a configuration shows the whole cause.
    pub fn matches(&self, use_flags: &UseAssignment, compiler: Compiler) -> bool {
        self.compiler.is_none_or(|c| c == compiler) && self.flags.iter().all(|(f, v)| use_flags.0.get(f) == Some(v))
    }

    /// True when the cause holds under any compiler and [`Display`](fmt::Display) leaves that
    /// unsaid, as Gentoo's bug summaries do (flags named, no compiler): a reader that needs
    /// it said (a table, a comment) adds it.
    pub fn any_compiler_unsaid(&self) -> bool {
        self.compiler.is_none() && !self.flags.is_empty()
    }

    /// Gentoo's form of the flag values: `USE="-static-libs threads"` (`any USE` when none).
    pub fn use_string(&self) -> String {
        if self.flags.is_empty() {
            return "any USE".to_owned();
        }
        let words: Vec<String> = self.flags.iter().map(|(f, on)| if *on { f.clone() } else { format!("-{f}") }).collect();
        format!("USE=\"{}\"", words.join(" "))
    }
}

impl fmt::Display for Cause {
    /// `USE="jemalloc" (clang only)`, `USE="-static-libs threads"`, `any USE (gcc only)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.use_string())?;
        match self.compiler {
            Some(c) => write!(f, " ({c} only)"),
            None if self.flags.is_empty() => f.write_str(", any compiler"),
            None => Ok(()),
        }
    }
}

/// How a localisation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Conclusion {
    /// The minimal failure-inducing combination.
    Localised {
        /// The combination.
        cause: Cause,
        /// What shows it.
        evidence: Evidence,
    },
    /// The failing configuration passed when run again: not localised.
    Flaky {
        /// The rerun.
        evidence: Evidence,
    },
    /// No single answer: the reason says why.
    Inconclusive {
        /// Why, in one line.
        why: String,
        /// What was run.
        evidence: Evidence,
    },
}

impl Conclusion {
    /// The evidence, whatever the conclusion.
    pub fn evidence(&self) -> &Evidence {
        match self {
            Conclusion::Localised { evidence, .. } | Conclusion::Flaky { evidence } | Conclusion::Inconclusive { evidence, .. } => evidence,
        }
    }

    /// The cause, when localised.
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            Conclusion::Localised { cause, .. } => Some(cause),
            _ => None,
        }
    }
}

impl fmt::Display for Conclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conclusion::Localised { cause, .. } => write!(f, "fails with {cause}"),
            Conclusion::Flaky { .. } => f.write_str("flaky: the failing configuration passed when run again"),
            Conclusion::Inconclusive { why, .. } => write!(f, "inconclusive: {why}"),
        }
    }
}
