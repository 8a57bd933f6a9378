//! Package atoms and versions, as far as the work generator needs them: PMS version
//! comparison, atom matching (for `package.use.mask`/`package.use.force` and dependency
//! resolution) and dependency strings reduced under a USE assignment.
//!
//! Best effort by design: slot and USE dependencies (`:0`, `[foo]`) are parsed and dropped;
//! the work generator only needs to know *which* package a dependency names.

use std::cmp::Ordering;

use gah_core::job::split_cpv;

/// A parsed PMS version (`1.2.3b_rc4_p5-r6`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    numbers: Vec<String>,
    letter: Option<char>,
    /// (suffix rank, number): `_alpha` < `_beta` < `_pre` < `_rc` < (none) < `_p`.
    suffixes: Vec<(u8, u64)>,
    revision: u64,
}

impl Version {
    /// Parses a version; `None` when it is not one PMS allows.
    pub fn parse(s: &str) -> Option<Version> {
        let (main, revision) = match s.rsplit_once("-r") {
            Some((m, r)) if !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()) => (m, r.parse().ok()?),
            _ => (s, 0),
        };
        let mut parts = main.split('_');
        let head = parts.next()?;
        let (head, letter) = match head.chars().last() {
            Some(c) if c.is_ascii_lowercase() => (&head[..head.len() - 1], Some(c)),
            _ => (head, None),
        };
        let numbers: Vec<String> = head.split('.').map(str::to_owned).collect();
        if numbers.iter().any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit())) {
            return None;
        }
        let mut suffixes = Vec::new();
        for p in parts {
            let (rank, rest) = [("alpha", 0), ("beta", 1), ("pre", 2), ("rc", 3), ("p", 5)]
                .iter()
                .find_map(|(name, rank)| p.strip_prefix(name).map(|rest| (*rank, rest)))?;
            if !rest.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            suffixes.push((rank, if rest.is_empty() { 0 } else { rest.parse().ok()? }));
        }
        Some(Version { numbers, letter, suffixes, revision })
    }

    /// The version without its revision (for `~` atoms).
    fn without_revision(&self) -> Version {
        Version { revision: 0, ..self.clone() }
    }
}

impl Ord for Version {
    /// PMS 3.3: numeric components (a leading-zero component compares as a decimal
    /// fraction), letter, suffixes (a missing suffix ranks between `_rc` and `_p`), revision.
    fn cmp(&self, other: &Version) -> Ordering {
        let big = |s: &str| s.trim_start_matches('0').len();
        let int_cmp = |a: &str, b: &str| {
            let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
            big(a).cmp(&big(b)).then_with(|| a.cmp(b))
        };
        let first = int_cmp(&self.numbers[0], &other.numbers[0]);
        if first != Ordering::Equal {
            return first;
        }
        for i in 1..self.numbers.len().max(other.numbers.len()) {
            let (Some(a), Some(b)) = (self.numbers.get(i), other.numbers.get(i)) else {
                return self.numbers.len().cmp(&other.numbers.len());
            };
            let o =
                if a.starts_with('0') || b.starts_with('0') { a.trim_end_matches('0').cmp(b.trim_end_matches('0')) } else { int_cmp(a, b) };
            if o != Ordering::Equal {
                return o;
            }
        }
        let o = self.letter.cmp(&other.letter);
        if o != Ordering::Equal {
            return o;
        }
        for i in 0..self.suffixes.len().max(other.suffixes.len()) {
            let a = self.suffixes.get(i).copied().unwrap_or((4, 0));
            let b = other.suffixes.get(i).copied().unwrap_or((4, 0));
            if a != b {
                return a.cmp(&b);
            }
        }
        self.revision.cmp(&other.revision)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Version) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares two `category/package-version` strings' versions; unparsable versions sort
/// first.
pub fn cmp_cpv_versions(a: &str, b: &str) -> Ordering {
    let v = |s: &str| split_cpv(s).and_then(|(_, v)| Version::parse(v));
    v(a).cmp(&v(b))
}

/// A version operator of an atom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Less,
    LessEq,
    Eq,
    /// `=cat/pkg-1.2*`.
    EqGlob,
    /// `~cat/pkg-1.2`: any revision.
    Tilde,
    GreaterEq,
    Greater,
}

/// A package atom: `[op]category/package[-version][*][:slot][[use]][::repo]`, blockers
/// excluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Atom {
    /// `category/package`.
    pub cp: String,
    op: Option<(Op, String)>,
}

impl Atom {
    /// Parses an atom; `None` for a blocker (`!`, `!!`) or something that is not an atom.
    pub fn parse(s: &str) -> Option<Atom> {
        if s.starts_with('!') {
            return None;
        }
        // Drop ::repo, [use deps] and :slot, in that order from the right.
        let s = s.split_once("::").map_or(s, |(a, _)| a);
        let s = s.split_once('[').map_or(s, |(a, _)| a);
        let s = s.split_once(':').map_or(s, |(a, _)| a);
        let ops = [(">=", Op::GreaterEq), ("<=", Op::LessEq), (">", Op::Greater), ("<", Op::Less), ("=", Op::Eq), ("~", Op::Tilde)];
        let (op, rest) = ops.iter().find_map(|(p, op)| s.strip_prefix(p).map(|r| (Some(*op), r))).unwrap_or((None, s));
        let (cat, pkg) = rest.split_once('/')?;
        if cat.is_empty() || pkg.is_empty() || pkg.contains('/') {
            return None;
        }
        match op {
            None => Some(Atom { cp: rest.to_owned(), op: None }),
            Some(mut op) => {
                let rest = match rest.strip_suffix('*') {
                    Some(r) if op == Op::Eq => {
                        op = Op::EqGlob;
                        r
                    }
                    _ => rest,
                };
                let (cp, ver) = split_cpv(rest)?;
                if op != Op::EqGlob {
                    Version::parse(ver)?;
                }
                Some(Atom { cp: cp.to_owned(), op: Some((op, ver.to_owned())) })
            }
        }
    }

    /// Whether the ebuild `cpv` satisfies this atom (slot and USE dependencies ignored).
    pub fn matches(&self, cpv: &str) -> bool {
        let Some((cp, ver)) = split_cpv(cpv) else { return false };
        if cp != self.cp {
            return false;
        }
        let Some((op, want)) = &self.op else { return true };
        if *op == Op::EqGlob {
            // PMS: the version must start with the given one at a component boundary.
            return ver == want
                || ver
                    .strip_prefix(want.as_str())
                    .is_some_and(|rest| !want.ends_with(|c: char| c.is_ascii_digit()) || !rest.starts_with(|c: char| c.is_ascii_digit()));
        }
        let (Some(have), Some(want)) = (Version::parse(ver), Version::parse(want)) else { return false };
        match op {
            Op::Less => have < want,
            Op::LessEq => have <= want,
            Op::Eq => have == want,
            Op::Tilde => have.without_revision() == want.without_revision(),
            Op::GreaterEq => have >= want,
            Op::Greater => have > want,
            Op::EqGlob => unreachable!("handled above"),
        }
    }
}

/// The dependencies of a `*DEPEND` string under a USE assignment: each item is a list of
/// alternatives (one atom, or the members of an `|| ( )` group, nested groups flattened in
/// order). Conditionals are evaluated with `is_on`; blockers and unparsable tokens dropped,
/// and so are groups nested deeper than [`crate::required_use::MAX_DEPTH`] (read by
/// [`crate::depspec::parse_lenient`], which never recurses deeper).
pub fn reduce_depend(s: &str, is_on: &dyn Fn(&str) -> bool) -> Vec<Vec<Atom>> {
    let (items, _) = crate::depspec::parse_lenient(s);
    let mut out = Vec::new();
    walk(&items, is_on, &mut |alts| out.push(alts));
    out
}

/// Calls `emit` with each dependency of `items`: an atom alone, or the alternatives of an
/// `|| ( )` group (its nested groups and taken conditionals flattened in order).
fn walk(items: &[crate::depspec::Item<'_>], is_on: &dyn Fn(&str) -> bool, emit: &mut dyn FnMut(Vec<Atom>)) {
    use crate::depspec::{GroupOp, Item};
    for item in items {
        match item {
            Item::Leaf { text, .. } => {
                if let Some(a) = Atom::parse(text) {
                    emit(vec![a]);
                }
            }
            Item::Cond { flag, negated, children, .. } => {
                if is_on(flag) != *negated {
                    walk(children, is_on, emit);
                }
            }
            Item::Group { op: GroupOp::AnyOf, children, .. } => {
                let mut alts = Vec::new();
                walk(children, is_on, &mut |a| alts.extend(a));
                if !alts.is_empty() {
                    emit(alts);
                }
            }
            Item::Group { children, .. } => walk(children, is_on, emit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_pms_says() {
        let ordered = [
            "0.9",
            "1",
            "1.0",
            "1.0.1",
            "1.01",
            "1.1",
            "1.1a",
            "1.1b",
            "1.2_alpha",
            "1.2_beta3",
            "1.2_pre",
            "1.2_rc1",
            "1.2",
            "1.2-r1",
            "1.2_p1",
            "1.10",
            "2.0_alpha1_p2",
            "2.0",
            "9999",
        ];
        for w in ordered.windows(2) {
            let (a, b) = (Version::parse(w[0]).unwrap(), Version::parse(w[1]).unwrap());
            assert_eq!(a.cmp(&b), Ordering::Less, "{} < {}", w[0], w[1]);
        }
        assert!(Version::parse("1.x").is_none() && Version::parse("1_foo").is_none());
    }

    #[test]
    fn atoms_match() {
        let m = |a: &str, cpv: &str| Atom::parse(a).unwrap().matches(cpv);
        assert!(m("dev-libs/foo", "dev-libs/foo-1.2"));
        assert!(!m("dev-libs/foo", "dev-libs/foobar-1.2"));
        assert!(m(">=dev-libs/foo-1.2:0/1=[bar,-baz]", "dev-libs/foo-1.10"));
        assert!(!m("<dev-libs/foo-1.2", "dev-libs/foo-1.2"));
        assert!(m("~dev-libs/foo-1.2", "dev-libs/foo-1.2-r3"));
        assert!(m("=dev-libs/foo-1.2*", "dev-libs/foo-1.2.5"));
        assert!(!m("=dev-libs/foo-1.2*", "dev-libs/foo-1.20"));
        assert!(Atom::parse("!dev-libs/foo").is_none() && Atom::parse("foo").is_none());
    }

    #[test]
    fn depend_reduces_under_use() {
        let show = |s: &str, on: &[&str]| -> String {
            reduce_depend(s, &|f| on.contains(&f))
                .iter()
                .map(|alts| alts.iter().map(|a| a.cp.as_str()).collect::<Vec<_>>().join("|"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let s = "a/b x? ( >=c/d-1 !e/f ) !x? ( g/h ) || ( i/j y? ( k/l ) ( m/n o/p ) ) ( q/r )";
        assert_eq!(show(s, &[]), "a/b g/h i/j|m/n|o/p q/r");
        assert_eq!(show(s, &["x", "y"]), "a/b c/d i/j|k/l|m/n|o/p q/r");
        // 30,000 levels: the part past the depth limit is dropped, the rest kept, no overflow.
        let deep = format!("a/b {}c/d{} e/f", "x? ( ".repeat(30_000), " )".repeat(30_000));
        assert_eq!(show(&deep, &["x"]), "a/b e/f");
    }
}
