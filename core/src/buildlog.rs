//! What a stored build log says, read as text: the dependency a `deps_failed` build names
//! ([`failed_dependency`]) and the excerpt around its errors ([`excerpt`]).
//!
//! The only Portage knowledge in this crate: the shape of the lines Portage and compilers
//! print (` * ERROR: cat/pkg-ver::repo failed (PHASE phase):`, `error:`); nothing here runs
//! Portage.

use std::fmt;
use std::ops::Range;

/// The dependency a `deps_failed` build log blames.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailedDependency {
    /// Portage's ` * ERROR: cat/pkg-ver::repo failed (PHASE phase):` line named a package.
    Package {
        /// `category/package-version`.
        cpv: String,
        /// The phase it failed in, when the line says.
        phase: Option<String>,
    },
    /// Dependency resolution found no ebuild for a dependency.
    Unsatisfiable,
    /// Dependency resolution hit a slot conflict or a blocker.
    Conflict,
    /// The log names no failing package.
    Unnamed,
    /// The log could not be read back from the store (the reason).
    Unreadable(String),
}

impl fmt::Display for FailedDependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailedDependency::Package { cpv, phase: Some(p) } => write!(f, "{cpv} ({p})"),
            FailedDependency::Package { cpv, phase: None } => f.write_str(cpv),
            FailedDependency::Unsatisfiable => f.write_str("(dependency resolution: no ebuild satisfies a dependency)"),
            FailedDependency::Conflict => f.write_str("(dependency resolution: conflict or blocker)"),
            FailedDependency::Unnamed => f.write_str("(the log names no failing package)"),
            FailedDependency::Unreadable(why) => write!(f, "(log unreadable: {why})"),
        }
    }
}

impl FailedDependency {
    /// How the results database stores it: a stable kind code (`package`, `unsatisfiable`,
    /// `conflict`, `unnamed`, `unreadable`), the package and the phase (or the reason, for
    /// `unreadable`).
    pub fn to_columns(&self) -> (&'static str, Option<&str>, Option<&str>) {
        match self {
            FailedDependency::Package { cpv, phase } => ("package", Some(cpv), phase.as_deref()),
            FailedDependency::Unsatisfiable => ("unsatisfiable", None, None),
            FailedDependency::Conflict => ("conflict", None, None),
            FailedDependency::Unnamed => ("unnamed", None, None),
            FailedDependency::Unreadable(why) => ("unreadable", None, Some(why)),
        }
    }

    /// [`FailedDependency::to_columns`] undone; `None` for a kind it does not know.
    pub fn from_columns(kind: &str, cpv: Option<String>, phase: Option<String>) -> Option<FailedDependency> {
        Some(match kind {
            "package" => FailedDependency::Package { cpv: cpv?, phase },
            "unsatisfiable" => FailedDependency::Unsatisfiable,
            "conflict" => FailedDependency::Conflict,
            "unnamed" => FailedDependency::Unnamed,
            "unreadable" => FailedDependency::Unreadable(phase.unwrap_or_default()),
            _ => return None,
        })
    }
}

/// The package a `deps_failed` build log blames: Portage's ` * ERROR: cat/pkg-ver::repo
/// failed (PHASE phase):` line, else a dependency-resolution failure.
pub fn failed_dependency(log: &[u8]) -> FailedDependency {
    let text = String::from_utf8_lossy(log);
    for line in text.lines() {
        if let Some(rest) = line.split("ERROR: ").nth(1) {
            if let Some((pkg, tail)) = rest.split_once(" failed") {
                let cpv = pkg.split("::").next().unwrap_or(pkg).trim().to_owned();
                let phase = tail.split_once('(').and_then(|(_, p)| p.split_once(" phase")).map(|(p, _)| p.to_owned());
                return FailedDependency::Package { cpv, phase };
            }
        }
    }
    if text.contains("there are no ebuilds to satisfy") || text.contains("emerge: there are no ebuilds") {
        return FailedDependency::Unsatisfiable;
    }
    if text.contains("slot conflict") || text.contains("blocked by") {
        return FailedDependency::Conflict;
    }
    FailedDependency::Unnamed
}

/// Lines that usually mark an error in a Portage build log.
const ERROR_MARKERS: &[&str] =
    &["error:", "Error:", "ERROR:", "Error ", "undefined reference", "FAIL:", "FAILED", "make: ***", "Segmentation fault"];
/// Lines of context kept around each error line, and the most windows kept.
const CONTEXT: usize = 6;
const MAX_WINDOWS: usize = 4;

/// True when `line` looks like an error (a compiler's, make's, a test harness's or
/// Portage's): the lines an excerpt is centred on and a page highlights.
pub fn is_error_line(line: &str) -> bool {
    ERROR_MARKERS.iter().any(|m| line.contains(m))
}

/// The line ranges (0-based, end exclusive) of the log's excerpt: windows around the first
/// error lines and the last one (Portage's own ` * ERROR:` block), merged where they
/// overlap; the last 40 lines when no line looks like an error.
pub fn excerpt_windows(log: &str) -> Vec<Range<usize>> {
    let lines: Vec<&str> = log.lines().collect();
    let hits: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| is_error_line(l)).map(|(i, _)| i).collect();
    let mut windows: Vec<Range<usize>> = Vec::new();
    let mut chosen: Vec<usize> = hits.iter().copied().take(MAX_WINDOWS - 1).collect();
    chosen.extend(hits.last());
    for i in chosen {
        let (start, end) = (i.saturating_sub(CONTEXT), (i + CONTEXT + 1).min(lines.len()));
        match windows.last_mut() {
            Some(last) if start <= last.end => last.end = last.end.max(end),
            _ => windows.push(start..end),
        }
    }
    if windows.is_empty() {
        windows.push(lines.len().saturating_sub(40)..lines.len());
    }
    windows
}

/// One line of an excerpt: a log line with its 1-based number, or (`number: None`) the
/// `[... line N ...]` marker of a gap before a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExcerptLine<'a> {
    /// The line's number in the log, 1-based; `None` for a gap marker.
    pub number: Option<usize>,
    /// The line (a gap marker's own text for a gap).
    pub text: std::borrow::Cow<'a, str>,
}

/// The excerpt of [`excerpt_windows`] line by line, each window after the first (or not at the
/// log's start) introduced by a `[... line N ...]` gap marker.
pub fn excerpt_lines(log: &str) -> Vec<ExcerptLine<'_>> {
    let lines: Vec<&str> = log.lines().collect();
    let mut out = Vec::new();
    for (k, w) in excerpt_windows(log).into_iter().enumerate() {
        if k > 0 || w.start > 0 {
            out.push(ExcerptLine { number: None, text: format!("[... line {} ...]", w.start + 1).into() });
        }
        for (i, line) in lines[w.clone()].iter().enumerate() {
            out.push(ExcerptLine { number: Some(w.start + i + 1), text: (*line).into() });
        }
    }
    out
}

/// [`excerpt_lines`] as text.
pub fn excerpt(log: &str) -> String {
    let mut out = String::new();
    for line in excerpt_lines(log) {
        out.push_str(&line.text);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failed_dependency_is_read_from_portages_error_line() {
        let log = b"### deps\n * ERROR: dev-libs/foo-1.2::gentoo failed (compile phase):\n *   emake failed\n";
        let dep = failed_dependency(log);
        assert_eq!(dep, FailedDependency::Package { cpv: "dev-libs/foo-1.2".into(), phase: Some("compile".into()) });
        assert_eq!(dep.to_string(), "dev-libs/foo-1.2 (compile)");
        let none = failed_dependency(b"emerge: there are no ebuilds to satisfy \"dev-libs/x\".\n");
        assert_eq!(none.to_string(), "(dependency resolution: no ebuild satisfies a dependency)");
        assert_eq!(failed_dependency(b"slot conflict"), FailedDependency::Conflict);
        assert_eq!(failed_dependency(b"nothing").to_string(), "(the log names no failing package)");
        for d in [dep, none, FailedDependency::Conflict, FailedDependency::Unnamed, FailedDependency::Unreadable("gone".into())] {
            let (kind, cpv, phase) = d.to_columns();
            assert_eq!(FailedDependency::from_columns(kind, cpv.map(Into::into), phase.map(Into::into)), Some(d.clone()));
        }
        assert_eq!(FailedDependency::from_columns("package", None, None), None);
    }

    #[test]
    fn the_excerpt_keeps_error_context_and_portages_error_block() {
        let mut log: Vec<String> = (0..200).map(|i| format!("cc -c file{i}.c")).collect();
        log[50] = "file50.c:3:1: error: expected ';'".into();
        log[190] = " * ERROR: a/b-1::gah failed (compile phase):".into();
        let ex = excerpt(&log.join("\n"));
        assert!(ex.contains("error: expected ';'") && ex.contains("cc -c file44.c") && !ex.contains("cc -c file43.c\n"), "{ex}");
        assert!(ex.contains(" * ERROR: a/b-1::gah failed") && ex.contains("[... line 45 ...]"), "{ex}");
        assert!(!ex.contains("file100.c"), "{ex}");
        assert_eq!(excerpt_windows(&log.join("\n")), [44..57, 184..197]);
        assert_eq!(excerpt_windows("a\nb"), vec![Range { start: 0, end: 2 }]);
    }
}
