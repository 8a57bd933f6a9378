//! The dependency-specification grammar of PMS 8.2, parsed once for every string that uses
//! it: `REQUIRED_USE` ([`crate::required_use`]), `RESTRICT`/`PROPERTIES`/`SRC_URI`
//! ([`crate::md5cache::use_reduce`]) and `*DEPEND` ([`crate::atom::reduce_depend`]).
//!
//! Tokens are separated by whitespace only (as Portage splits them). A `flag? ( … )` is a
//! [`Item::Cond`], `( … )`, `|| ( … )`, `^^ ( … )` and `?? ( … )` are [`Item::Group`]s,
//! anything else is a [`Item::Leaf`] the caller interprets (a USE flag, an atom, a URI).
//!
//! The parser is depth-limited ([`MAX_DEPTH`]): it recurses once per level, never more than
//! that, so no input can overflow the stack. [`parse`] is strict (Portage's errors, with the
//! byte offset); [`parse_lenient`] reads what it can: a `)` without its `(` is ignored, an
//! unclosed group ends at the end, an operator or conditional not followed by `(` is
//! dropped, and a group nested deeper than the limit is dropped whole (and reported).

pub use crate::required_use::{ParseError, MAX_DEPTH};

/// One element of a dependency specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<'a> {
    /// A plain token.
    Leaf {
        /// Byte offset in the input.
        offset: usize,
        /// The token.
        text: &'a str,
    },
    /// `flag? ( … )` or `!flag? ( … )`.
    Cond {
        /// Byte offset of the `flag?` token.
        offset: usize,
        /// The flag.
        flag: &'a str,
        /// True for `!flag?`.
        negated: bool,
        /// The members.
        children: Vec<Item<'a>>,
    },
    /// `( … )` and the counting groups.
    Group {
        /// Byte offset of the operator (or of the `(`).
        offset: usize,
        /// Which group.
        op: GroupOp,
        /// The members.
        children: Vec<Item<'a>>,
    },
}

/// The kind of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupOp {
    /// `( … )`.
    All,
    /// `|| ( … )`.
    AnyOf,
    /// `^^ ( … )`.
    ExactlyOne,
    /// `?? ( … )`.
    AtMostOne,
}

/// Whitespace-separated tokens with their byte offsets.
fn tokens(input: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in input.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                out.push((s, &input[s..i]));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push((s, &input[s..]));
    }
    out
}

/// Parses `input` strictly: `leaf` judges each plain token and `cond` each conditional's
/// flag (`Err(message)` makes the token an error at its offset).
pub fn parse<'a>(
    input: &'a str,
    leaf: &dyn Fn(&str) -> Result<(), String>,
    cond: &dyn Fn(&str) -> bool,
) -> Result<Vec<Item<'a>>, ParseError> {
    let mut p = Parser { toks: tokens(input), pos: 0, len: input.len(), depth: 0, strict: true, leaf, cond, too_deep: false };
    p.members(None)
}

/// Parses `input` leniently (see the module docs). The flag is true when a group nested
/// deeper than [`MAX_DEPTH`] was dropped.
pub fn parse_lenient(input: &str) -> (Vec<Item<'_>>, bool) {
    let mut p = Parser {
        toks: tokens(input),
        pos: 0,
        len: input.len(),
        depth: 0,
        strict: false,
        leaf: &|_| Ok(()),
        cond: &|_| true,
        too_deep: false,
    };
    let items = p.members(None).unwrap_or_default();
    (items, p.too_deep)
}

struct Parser<'a, 'f> {
    toks: Vec<(usize, &'a str)>,
    pos: usize,
    len: usize,
    /// Groups open around the current position.
    depth: usize,
    strict: bool,
    leaf: &'f dyn Fn(&str) -> Result<(), String>,
    cond: &'f dyn Fn(&str) -> bool,
    too_deep: bool,
}

impl<'a> Parser<'a, '_> {
    fn err(&self, offset: usize, message: impl Into<String>) -> ParseError {
        ParseError { offset, message: message.into() }
    }

    /// Members until `)` (when `nested`) or the end.
    fn members(&mut self, nested: Option<usize>) -> Result<Vec<Item<'a>>, ParseError> {
        let mut items = Vec::new();
        loop {
            let Some(&(off, tok)) = self.toks.get(self.pos) else {
                return match nested {
                    Some(open) if self.strict => Err(self.err(self.len, format!("unclosed `(` opened at byte {open}"))),
                    _ => Ok(items),
                };
            };
            self.pos += 1;
            match tok {
                ")" => {
                    if nested.is_some() {
                        return Ok(items);
                    }
                    if self.strict {
                        return Err(self.err(off, "`)` without a matching `(`"));
                    }
                }
                "(" => {
                    if let Some(children) = self.nested(off)? {
                        items.push(Item::Group { offset: off, op: GroupOp::All, children });
                    }
                }
                "||" | "^^" | "??" => {
                    let op = match tok {
                        "||" => GroupOp::AnyOf,
                        "^^" => GroupOp::ExactlyOne,
                        _ => GroupOp::AtMostOne,
                    };
                    if let Some(children) = self.group_body(off, tok)? {
                        items.push(Item::Group { offset: off, op, children });
                    }
                }
                _ if tok.ends_with('?') => {
                    let name = &tok[..tok.len() - 1];
                    let (negated, flag) = match name.strip_prefix('!') {
                        Some(f) => (true, f),
                        None => (false, name),
                    };
                    if self.strict && !(self.cond)(flag) {
                        return Err(self.err(off, format!("`{tok}` is not a valid USE conditional")));
                    }
                    if let Some(children) = self.group_body(off, tok)? {
                        items.push(Item::Cond { offset: off, flag, negated, children });
                    }
                }
                _ => {
                    if let Err(message) = (self.leaf)(tok) {
                        return Err(self.err(off, message));
                    }
                    items.push(Item::Leaf { offset: off, text: tok });
                }
            }
        }
    }

    /// The members of a group opened at byte `open`, within [`MAX_DEPTH`]; `None` when the
    /// lenient parser dropped it for its depth.
    fn nested(&mut self, open: usize) -> Result<Option<Vec<Item<'a>>>, ParseError> {
        if self.depth >= MAX_DEPTH {
            if self.strict {
                return Err(self.err(open, format!("groups nested deeper than {MAX_DEPTH} levels")));
            }
            // Skip to the matching `)` without recursing.
            self.too_deep = true;
            let mut depth = 1usize;
            while let Some(&(_, t)) = self.toks.get(self.pos) {
                self.pos += 1;
                match t {
                    "(" => depth += 1,
                    ")" => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            return Ok(None);
        }
        self.depth += 1;
        let r = self.members(Some(open));
        self.depth -= 1;
        r.map(Some)
    }

    /// The `( … )` an operator or conditional must be followed by (leniently: none, and the
    /// operator is dropped).
    fn group_body(&mut self, op_off: usize, op: &str) -> Result<Option<Vec<Item<'a>>>, ParseError> {
        match self.toks.get(self.pos) {
            Some(&(off, "(")) => {
                self.pos += 1;
                self.nested(off)
            }
            _ if !self.strict => Ok(None),
            Some(&(off, other)) => Err(self.err(off, format!("expected `(` after `{op}` (byte {op_off}), found `{other}`"))),
            None => Err(self.err(self.len, format!("expected `(` after `{op}` (byte {op_off}), found the end"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lenient tree, leaves under their conditions: `c?[…]`, `||[…]`, `[…]`.
    fn show(items: &[Item<'_>]) -> String {
        items
            .iter()
            .map(|i| match i {
                Item::Leaf { text, .. } => (*text).to_owned(),
                Item::Cond { flag, negated, children, .. } => format!("{}{flag}?[{}]", if *negated { "!" } else { "" }, show(children)),
                Item::Group { op, children, .. } => {
                    let op = match op {
                        GroupOp::All => "",
                        GroupOp::AnyOf => "||",
                        GroupOp::ExactlyOne => "^^",
                        GroupOp::AtMostOne => "??",
                    };
                    format!("{op}[{}]", show(children))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn lenient_reads_what_it_can() {
        let check = |s: &str, want: &str, deep: bool| {
            let (items, too_deep) = parse_lenient(s);
            assert_eq!((show(&items).as_str(), too_deep), (want, deep), "{s}");
        };
        check("a !b? ( c || ( d e ) ) ( f )", "a !b?[c ||[d e]] [f]", false);
        check("a ) b", "a b", false);
        check("a? ( b", "a?[b]", false);
        check("|| b x? c", "b c", false);
        let deep = format!("a {}b{} c", "x? ( ".repeat(30_000), " )".repeat(30_000));
        let (items, too_deep) = parse_lenient(&deep);
        assert!(too_deep);
        assert_eq!(show(&items).matches("x?[").count(), MAX_DEPTH);
        assert!(show(&items).starts_with("a x?[") && show(&items).ends_with("] c"));
    }

    #[test]
    fn strict_refuses_with_the_offset() {
        let ok = |_: &str| Ok(());
        let err = |s: &str| parse(s, &ok, &|_| true).unwrap_err().to_string();
        assert_eq!(err("a )"), "at byte 2: `)` without a matching `(`");
        assert_eq!(err("|| a"), "at byte 3: expected `(` after `||` (byte 0), found `a`");
        assert_eq!(err(&"( ".repeat(MAX_DEPTH + 1)), format!("at byte {}: groups nested deeper than {MAX_DEPTH} levels", 2 * MAX_DEPTH));
    }
}
