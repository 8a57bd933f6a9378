//! `REQUIRED_USE`: the parser for the whole PMS grammar and an evaluator that reproduces
//! Portage's `portage.dep.check_required_use` exactly, including its corner cases:
//!
//! - a conditional (`flag? ( )`) whose condition is off contributes *nothing* to the group
//!   around it (not `true`): `|| ( a? ( b ) )` with `a` off is an empty `||`, hence false;
//! - a plain group `( )` with no contributing member contributes nothing either;
//! - an empty `|| ( )` or `^^ ( )` is false and an empty `?? ( )` true, except in EAPIs 0–6
//!   where Portage takes every empty group as true (`empty_groups_always_true`).
//!
//! Besides the exact evaluator ([`RequiredUse::eval`]) there is a three-valued one
//! ([`RequiredUse::eval_partial`]) over partial assignments, which the solver uses to prune:
//! it over-approximates what a completion could give and is exact once every flag is set.

use std::collections::{HashMap, HashSet};
use std::fmt;

/// A parsed `REQUIRED_USE` (the top level is an implicit all-of group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredUse {
    nodes: Vec<Node>,
    /// Every flag named, in order of first appearance, without duplicates.
    flags: Vec<String>,
    /// `nodes` with flags replaced by their index in `flags`: what the evaluators walk.
    compiled: Vec<C>,
}

/// A node with its flag as an index into [`RequiredUse::flags`] (no string lookups in the
/// solver's inner loop).
#[derive(Debug, Clone, PartialEq, Eq)]
enum C {
    Lit(usize, bool),
    Cond(usize, bool, Vec<C>),
    Group(Op, Vec<C>),
    All(Vec<C>),
}

fn compile(nodes: &[Node], ids: &HashMap<&str, usize>) -> Vec<C> {
    let id = |name: &str| ids[name];
    nodes
        .iter()
        .map(|n| match n {
            Node::Flag { name, negated } => C::Lit(id(name), *negated),
            Node::Conditional { flag, negated, children } => C::Cond(id(flag), *negated, compile(children, ids)),
            Node::Group { op, children } => C::Group(*op, compile(children, ids)),
            Node::All(children) => C::All(compile(children, ids)),
        })
        .collect()
}

/// Deepest nesting of groups and conditionals a `REQUIRED_USE` may have. Real ebuilds nest
/// a handful of levels; Portage's own parser has no limit, but every walker here recurses
/// once per level, so a deeper string is refused (with this reason) rather than allowed to
/// overflow the stack.
pub const MAX_DEPTH: usize = 100;

/// One element of a `REQUIRED_USE` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// `flag` or `!flag`: the flag must be on (off).
    Flag {
        /// The flag's name.
        name: String,
        /// True for `!flag`.
        negated: bool,
    },
    /// `flag? ( ... )` or `!flag? ( ... )`: the children must hold when the condition does.
    Conditional {
        /// The condition's flag.
        flag: String,
        /// True for `!flag?`.
        negated: bool,
        /// The group's members.
        children: Vec<Node>,
    },
    /// `|| ( ... )`, `^^ ( ... )`, `?? ( ... )`.
    Group {
        /// Which operator.
        op: Op,
        /// The group's members.
        children: Vec<Node>,
    },
    /// `( ... )`: every member must hold.
    All(Vec<Node>),
}

/// The counting operators of `REQUIRED_USE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `||`: at least one.
    AnyOf,
    /// `^^`: exactly one.
    ExactlyOne,
    /// `??`: at most one.
    AtMostOne,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::AnyOf => "||",
            Op::ExactlyOne => "^^",
            Op::AtMostOne => "??",
        }
    }

    /// Portage's `is_satisfied` for a non-empty (or, in EAPI ≥ 7, empty) member list.
    fn holds(self, trues: usize) -> bool {
        match self {
            Op::AnyOf => trues >= 1,
            Op::ExactlyOne => trues == 1,
            Op::AtMostOne => trues <= 1,
        }
    }
}

/// Why a `REQUIRED_USE` string did not parse. `offset` is the byte offset of the offending
/// token in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset of the offending token (the input's length for "unexpected end").
    pub offset: usize,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Flag-name syntax from PMS 3.1.4: `[A-Za-z0-9][A-Za-z0-9+_@-]*`.
pub fn is_valid_flag_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '_' | '@' | '-'))
}

/// The [`crate::depspec`] tree as `REQUIRED_USE` nodes.
fn nodes_of(items: &[crate::depspec::Item<'_>]) -> Vec<Node> {
    use crate::depspec::{GroupOp, Item};
    items
        .iter()
        .map(|item| match item {
            Item::Leaf { text, .. } => match text.strip_prefix('!') {
                Some(f) => Node::Flag { name: f.to_owned(), negated: true },
                None => Node::Flag { name: (*text).to_owned(), negated: false },
            },
            Item::Cond { flag, negated, children, .. } => {
                Node::Conditional { flag: (*flag).to_owned(), negated: *negated, children: nodes_of(children) }
            }
            Item::Group { op, children, .. } => {
                let children = nodes_of(children);
                match op {
                    GroupOp::All => Node::All(children),
                    GroupOp::AnyOf => Node::Group { op: Op::AnyOf, children },
                    GroupOp::ExactlyOne => Node::Group { op: Op::ExactlyOne, children },
                    GroupOp::AtMostOne => Node::Group { op: Op::AtMostOne, children },
                }
            }
        })
        .collect()
}

impl RequiredUse {
    /// Parses a `REQUIRED_USE` value.
    pub fn parse(input: &str) -> Result<RequiredUse, ParseError> {
        let leaf = |tok: &str| {
            let name = tok.strip_prefix('!').unwrap_or(tok);
            if is_valid_flag_name(name) {
                Ok(())
            } else {
                Err(format!("`{tok}` is not a valid USE flag"))
            }
        };
        let items = crate::depspec::parse(input, &leaf, &is_valid_flag_name)?;
        let nodes = nodes_of(&items);
        let mut flags = Vec::new();
        collect_flags(&nodes, &mut flags, &mut HashSet::new());
        let ids: HashMap<&str, usize> = flags.iter().enumerate().map(|(i, f)| (f.as_str(), i)).collect();
        let compiled = compile(&nodes, &ids);
        Ok(RequiredUse { nodes, flags, compiled })
    }

    /// The top-level members.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Every flag the expression names, in order of first appearance.
    pub fn flags(&self) -> &[String] {
        &self.flags
    }

    /// True when the expression constrains nothing.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Portage's verdict on a complete assignment (`is_on(flag)` for every named flag).
    /// `empty_groups_true` is [`empty_groups_always_true`] of the ebuild's EAPI.
    pub fn eval(&self, empty_groups_true: bool, is_on: &dyn Fn(&str) -> bool) -> bool {
        let values: Vec<bool> = self.flags.iter().map(|f| is_on(f)).collect();
        self.eval_values(empty_groups_true, &values)
    }

    /// [`RequiredUse::eval`] with the values given in [`RequiredUse::flags`] order.
    pub fn eval_values(&self, empty_groups_true: bool, values: &[bool]) -> bool {
        let ctx = Exact { empty_groups_true, values };
        self.compiled.iter().filter_map(|n| ctx.node(n)).all(|v| v)
    }

    /// Three-valued verdict over a partial assignment: `value(flag)` is `None` for a flag not
    /// yet decided. Returns `None` when some completions may hold and others may not,
    /// `Some(false)` when no completion can hold. Exact when every flag is decided.
    pub fn eval_partial(&self, empty_groups_true: bool, value: &dyn Fn(&str) -> Option<bool>) -> Option<bool> {
        let values: Vec<Option<bool>> = self.flags.iter().map(|f| value(f)).collect();
        self.eval_partial_values(empty_groups_true, &values)
    }

    /// [`RequiredUse::eval_partial`] with the values given in [`RequiredUse::flags`] order.
    pub fn eval_partial_values(&self, empty_groups_true: bool, values: &[Option<bool>]) -> Option<bool> {
        let ctx = Partial { empty_groups_true, values };
        let m = ctx.all_of(&self.compiled);
        // The top level is an all-of whose empty list is true.
        let can_true = m & (T | A) != 0;
        let can_false = m & F != 0;
        match (can_true, can_false) {
            (true, false) => Some(true),
            (false, _) => Some(false),
            (true, true) => None,
        }
    }
}

impl fmt::Display for RequiredUse {
    /// The canonical, single-spaced form, which parses back to the same tree.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_nodes(f, &self.nodes)
    }
}

fn write_nodes(f: &mut fmt::Formatter<'_>, nodes: &[Node]) -> fmt::Result {
    for (i, n) in nodes.iter().enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        let bang = |neg: bool| if neg { "!" } else { "" };
        match n {
            Node::Flag { name, negated } => write!(f, "{}{name}", bang(*negated))?,
            Node::Conditional { flag, negated, children } => {
                write!(f, "{}{flag}? ( ", bang(*negated))?;
                write_nodes(f, children)?;
                f.write_str(" )")?;
            }
            Node::Group { op, children } => {
                write!(f, "{} ( ", op.as_str())?;
                write_nodes(f, children)?;
                f.write_str(" )")?;
            }
            Node::All(children) => {
                f.write_str("( ")?;
                write_nodes(f, children)?;
                f.write_str(" )")?;
            }
        }
    }
    Ok(())
}

fn collect_flags(nodes: &[Node], out: &mut Vec<String>, seen: &mut HashSet<String>) {
    let add = |name: &str, out: &mut Vec<String>, seen: &mut HashSet<String>| {
        if seen.insert(name.to_owned()) {
            out.push(name.to_owned());
        }
    };
    for n in nodes {
        match n {
            Node::Flag { name, .. } => add(name, out, seen),
            Node::Conditional { flag, children, .. } => {
                add(flag, out, seen);
                collect_flags(children, out, seen);
            }
            Node::Group { children, .. } | Node::All(children) => collect_flags(children, out, seen),
        }
    }
}

/// Portage's `eapi_empty_groups_always_true`: EAPIs 0 to 6 take every empty group as true.
pub fn empty_groups_always_true(eapi: &str) -> bool {
    matches!(eapi, "0" | "1" | "2" | "3" | "4" | "4-python" | "4-slot-abi" | "5" | "5-progress" | "6")
}

struct Exact<'a> {
    empty_groups_true: bool,
    values: &'a [bool],
}

impl Exact<'_> {
    /// `None` when the node contributes nothing to its parent's member list (Portage's
    /// untaken conditional, or a plain group that is itself empty).
    fn node(&self, n: &C) -> Option<bool> {
        match n {
            C::Lit(id, negated) => Some(self.values[*id] != *negated),
            C::Cond(id, negated, children) => {
                if self.values[*id] == *negated {
                    return None;
                }
                Some(children.iter().filter_map(|c| self.node(c)).all(|v| v))
            }
            C::Group(op, children) => {
                let (mut members, mut trues) = (0, 0);
                for v in children.iter().filter_map(|c| self.node(c)) {
                    members += 1;
                    trues += usize::from(v);
                }
                if members == 0 && self.empty_groups_true {
                    return Some(true);
                }
                Some(op.holds(trues))
            }
            C::All(children) => {
                let mut members = children.iter().filter_map(|c| self.node(c)).peekable();
                members.peek()?;
                Some(members.all(|v| v))
            }
        }
    }
}

// Possibility masks of the partial evaluator: which results a completion may give.
const A: u8 = 1; // contributes nothing
const T: u8 = 2;
const F: u8 = 4;

struct Partial<'a> {
    empty_groups_true: bool,
    values: &'a [Option<bool>],
}

/// What a member list may give, folded without allocating.
struct Members {
    can_empty: bool,
    can_nonempty: bool,
    min_true: usize,
    max_true: usize,
    any_certain_false: bool,
    any_may_false: bool,
}

impl Partial<'_> {
    fn lit(&self, id: usize, negated: bool) -> u8 {
        match self.values[id] {
            Some(v) if v != negated => T,
            Some(_) => F,
            None => T | F,
        }
    }

    fn members(&self, children: &[C]) -> Members {
        let mut m =
            Members { can_empty: true, can_nonempty: false, min_true: 0, max_true: 0, any_certain_false: false, any_may_false: false };
        for c in children {
            let x = self.node(c);
            m.can_empty &= x & A != 0;
            m.can_nonempty |= x & (T | F) != 0;
            m.min_true += usize::from(x == T);
            m.max_true += usize::from(x & T != 0);
            m.any_certain_false |= x == F;
            m.any_may_false |= x & F != 0;
        }
        m
    }

    fn node(&self, n: &C) -> u8 {
        match n {
            C::Lit(id, negated) => self.lit(*id, *negated),
            C::Cond(id, negated, children) => {
                let cond = self.lit(*id, *negated);
                let mut m = 0;
                if cond & F != 0 {
                    m |= A;
                }
                if cond & T != 0 {
                    // An active conditional: all of its members; an empty list is true.
                    let inner = self.all_of(children);
                    if inner & (T | A) != 0 {
                        m |= T;
                    }
                    if inner & F != 0 {
                        m |= F;
                    }
                }
                m
            }
            C::Group(op, children) => {
                let m = self.members(children);
                let mut out = 0;
                if m.can_empty {
                    out |= if self.empty_groups_true || op.holds(0) { T } else { F };
                }
                if m.can_nonempty {
                    // Over-approximates: any count in the range is taken as reachable.
                    for k in m.min_true..=m.max_true {
                        out |= if op.holds(k) { T } else { F };
                        if out & (T | F) == T | F {
                            break;
                        }
                    }
                }
                out
            }
            C::All(children) => self.all_of(children),
        }
    }

    /// An all-of list: `A` when it may contribute nothing, `T`/`F` for its verdict otherwise.
    fn all_of(&self, children: &[C]) -> u8 {
        let m = self.members(children);
        let mut out = 0;
        if m.can_empty {
            out |= A;
        }
        if m.can_nonempty {
            if !m.any_certain_false {
                out |= T;
            }
            if m.any_may_false {
                out |= F;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input` and evaluates it for the assignment `on` (the flags that are on, all
    /// others off), in EAPI 8; `expected` is the canonical form and verdict, or the error.
    fn check(input: &str, on: &[&str], expected: &str) {
        let got = match RequiredUse::parse(input) {
            Ok(r) => {
                let exact = r.eval(false, &|f| on.contains(&f));
                let partial = r.eval_partial(false, &|f| Some(on.contains(&f)));
                assert_eq!(partial, Some(exact), "partial and exact evaluators disagree on `{input}`");
                let again = RequiredUse::parse(&r.to_string()).unwrap();
                assert_eq!(again, r, "canonical form does not round-trip");
                format!("{r} => {exact}")
            }
            Err(e) => format!("error {e}"),
        };
        assert_eq!(got, expected, "input `{input}` with {on:?}");
    }

    #[test]
    fn flags_and_negations() {
        check("", &[], " => true");
        check("a", &["a"], "a => true");
        check("a", &[], "a => false");
        check("!a", &[], "!a => true");
        check("a   !b\n c", &["a", "c"], "a !b c => true");
    }

    #[test]
    fn operators() {
        check("|| ( a b )", &[], "|| ( a b ) => false");
        check("|| ( a b )", &["b"], "|| ( a b ) => true");
        check("^^ ( a b c )", &["a", "b"], "^^ ( a b c ) => false");
        check("^^ ( a b c )", &["c"], "^^ ( a b c ) => true");
        check("^^ ( a b c )", &[], "^^ ( a b c ) => false");
        check("?? ( a b c )", &[], "?? ( a b c ) => true");
        check("?? ( a b c )", &["a", "c"], "?? ( a b c ) => false");
        check("( a b )", &["a"], "( a b ) => false");
        check("|| ( ( a b ) c )", &["a", "b"], "|| ( ( a b ) c ) => true");
        check("|| ( !a b )", &["a"], "|| ( !a b ) => false");
    }

    #[test]
    fn conditionals() {
        check("a? ( b )", &[], "a? ( b ) => true");
        check("a? ( b )", &["a"], "a? ( b ) => false");
        check("!a? ( b )", &[], "!a? ( b ) => false");
        check("a? ( !b ) b? ( c )", &["b", "c"], "a? ( !b ) b? ( c ) => true");
        check("a? ( || ( b c ) )", &["a", "c"], "a? ( || ( b c ) ) => true");
        check("test? ( a? ( ^^ ( b c ) ) )", &["test", "a"], "test? ( a? ( ^^ ( b c ) ) ) => false");
    }

    #[test]
    fn portage_corner_cases() {
        // Empty groups: `||` and `^^` false, `??` true, `( )` and `a? ( )` contribute nothing / true.
        check("|| ( )", &[], "|| (  ) => false");
        check("^^ ( )", &[], "^^ (  ) => false");
        check("?? ( )", &[], "?? (  ) => true");
        check("( )", &[], "(  ) => true");
        check("a? ( )", &["a"], "a? (  ) => true");
        // An untaken conditional is not a `true` member: the `||` below is empty.
        check("|| ( a? ( b ) )", &[], "|| ( a? ( b ) ) => false");
        check("|| ( a? ( b ) c )", &["c"], "|| ( a? ( b ) c ) => true");
        check("^^ ( a? ( b ) c? ( d ) )", &["c", "d"], "^^ ( a? ( b ) c? ( d ) ) => true");
        check("^^ ( a? ( b ) c? ( d ) )", &[], "^^ ( a? ( b ) c? ( d ) ) => false");
        check("|| ( ( ) )", &[], "|| ( (  ) ) => false");
        check("?? ( ( a b ) c )", &["a", "b", "c"], "?? ( ( a b ) c ) => false");
    }

    #[test]
    fn old_eapis_take_empty_groups_as_true() {
        let r = RequiredUse::parse("|| ( a? ( b ) ) ^^ ( )").unwrap();
        assert!(r.eval(true, &|_| false));
        assert!(!r.eval(false, &|_| false));
        assert!(empty_groups_always_true("6") && !empty_groups_always_true("7"));
    }

    #[test]
    fn parse_errors_name_the_position() {
        check("a? b", &[], "error at byte 3: expected `(` after `a?` (byte 0), found `b`");
        check("|| ( a", &[], "error at byte 6: unclosed `(` opened at byte 3");
        check("a )", &[], "error at byte 2: `)` without a matching `(`");
        check("^^", &[], "error at byte 2: expected `(` after `^^` (byte 0), found the end");
        check("(a b)", &[], "error at byte 0: `(a` is not a valid USE flag");
        check("a b? ( c ) ?", &[], "error at byte 11: `?` is not a valid USE conditional");
        check("!!a", &[], "error at byte 0: `!!a` is not a valid USE flag");
        check("-a", &[], "error at byte 0: `-a` is not a valid USE flag");
    }

    #[test]
    fn nesting_is_limited_not_a_stack_overflow() {
        let ok = format!("{}a{}", "( ".repeat(MAX_DEPTH), " )".repeat(MAX_DEPTH));
        assert!(RequiredUse::parse(&ok).is_ok());
        // 30,000 levels: refused at the first level too deep, never recursed into.
        let deep = format!("{}a{}", "|| ( ".repeat(30_000), " )".repeat(30_000));
        let e = RequiredUse::parse(&deep).unwrap_err();
        assert_eq!(e.to_string(), format!("at byte {}: groups nested deeper than {MAX_DEPTH} levels", MAX_DEPTH * 5 + 3));
        // A flat group of 10,000 flags is fine.
        let wide: Vec<String> = (0..10_000).map(|i| format!("f{i}")).collect();
        let r = RequiredUse::parse(&format!("^^ ( {} )", wide.join(" "))).unwrap();
        assert_eq!(r.flags().len(), 10_000);
    }

    #[test]
    fn partial_evaluation_prunes_only_dead_branches() {
        let r = RequiredUse::parse("^^ ( a b ) c? ( a )").unwrap();
        let with =
            |pairs: &'static [(&'static str, bool)]| r.eval_partial(false, &move |f| pairs.iter().find(|(n, _)| *n == f).map(|(_, v)| *v));
        assert_eq!(with(&[]), None);
        assert_eq!(with(&[("a", true), ("b", true)]), Some(false));
        assert_eq!(with(&[("c", true), ("a", false)]), Some(false));
        assert_eq!(with(&[("a", true), ("b", false)]), Some(true));
        assert_eq!(with(&[("b", true)]), None);
    }

    #[test]
    fn partial_agrees_with_exact_on_every_assignment() {
        // Exhaustive cross-check on tricky shapes: every total assignment, and every partial
        // one must not exclude a completion that holds.
        let cases = [
            "|| ( a? ( b ) c )",
            "^^ ( a? ( b ) c? ( d ) ( ) )",
            "?? ( ( a b ) !c d? ( ) )",
            "a? ( || ( b? ( c ) !d ) ) !a? ( ^^ ( b c d ) )",
            "|| ( ( a? ( b ) ) ( c ) )",
        ];
        let names = ["a", "b", "c", "d"];
        for case in cases {
            let r = RequiredUse::parse(case).unwrap();
            for egt in [false, true] {
                // 3^4 partial assignments: 0 unset, 1 off, 2 on.
                for code in 0..81u32 {
                    let vals: Vec<Option<bool>> = (0..4)
                        .map(|i| match code / 3u32.pow(i) % 3 {
                            0 => None,
                            1 => Some(false),
                            _ => Some(true),
                        })
                        .collect();
                    let get = |f: &str| vals[names.iter().position(|n| *n == f).unwrap()];
                    let partial = r.eval_partial(egt, &get);
                    let mut any_true = false;
                    let mut any_false = false;
                    for fill in 0..16u32 {
                        let full = |f: &str| {
                            let i = names.iter().position(|n| *n == f).unwrap();
                            vals[i].unwrap_or(fill >> i & 1 == 1)
                        };
                        if r.eval(egt, &full) {
                            any_true = true;
                        } else {
                            any_false = true;
                        }
                    }
                    if any_true {
                        assert_ne!(partial, Some(false), "`{case}` {vals:?}: pruned a satisfiable branch");
                    }
                    if any_false {
                        assert_ne!(partial, Some(true), "`{case}` {vals:?}: claimed true but a completion fails");
                    }
                }
            }
        }
    }
}
