//! `REQUIRED_USE` compiled to CNF (Tseitin), and a thin incremental SAT solver over it.
//!
//! The encoding reproduces Portage's `check_required_use` (see [`crate::required_use`]): every
//! node gives two formulas, whether it *contributes* to its parent's member list (`act`) and
//! its verdict when it does (`val`):
//!
//! - `flag`, `!flag`: contributes; its literal.
//! - `c? ( … )`: contributes when `c` holds; true when every contributing member is true.
//! - `( … )`: contributes when some member does; the same verdict.
//! - `|| ^^ ?? ( … )`: always contributes; the operator over the members that contribute and
//!   are true (an empty group is false for `||`/`^^`, true for `??`, and true for every
//!   operator in EAPIs 0–6).
//!
//! The top level asserts `act → val` for each member. Gates are full equivalences, so every
//! auxiliary variable is a function of the flags: a model projected on the flags is exactly a
//! valid configuration, and two models that agree on the flags agree everywhere (which makes
//! blocking clauses over the flags enumerate configurations, not models).
//!
//! The solver is [batsat](https://github.com/c-cube/batsat) (a Rust MiniSat): incremental, with
//! assumptions and unsat cores, deterministic for a given input. [`Sat::solve`] stops at a
//! deadline or a conflict limit when asked to, and says so ([`Outcome::Unknown`]).

use std::cell::Cell;
use std::time::Instant;

use batsat::{lbool, Callbacks, Lit, SolverInterface, SolverOpts, Var};

use crate::required_use::{Node, Op};

/// A formula's value while compiling: a constant or a literal of the CNF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F {
    /// Known at compile time.
    Const(bool),
    /// A solver literal.
    Lit(Lit),
}

impl std::ops::Not for F {
    type Output = F;

    fn not(self) -> F {
        match self {
            F::Const(b) => F::Const(!b),
            F::Lit(l) => F::Lit(!l),
        }
    }
}

/// A CNF under construction: a variable count and clauses.
#[derive(Debug, Clone, Default)]
pub struct Cnf {
    vars: u32,
    clauses: Vec<Vec<Lit>>,
}

impl Cnf {
    /// A fresh variable, as its positive literal.
    pub fn fresh(&mut self) -> Lit {
        let v = Var::unsafe_from_idx(self.vars);
        self.vars += 1;
        Lit::new(v, true)
    }

    /// Variables allocated so far.
    pub fn num_vars(&self) -> u32 {
        self.vars
    }

    /// The clauses.
    pub fn clauses(&self) -> &[Vec<Lit>] {
        &self.clauses
    }

    /// Adds a clause (constants folded: a true member drops the clause, false members go).
    pub fn clause(&mut self, lits: &[F]) {
        let mut out = Vec::with_capacity(lits.len());
        for l in lits {
            match *l {
                F::Const(true) => return,
                F::Const(false) => {}
                F::Lit(l) => out.push(l),
            }
        }
        self.clauses.push(out);
    }

    /// Asserts `f`.
    pub fn assert(&mut self, f: F) {
        self.clause(&[f]);
    }

    /// A formula equivalent to the conjunction of `xs`.
    pub fn and(&mut self, xs: &[F]) -> F {
        let mut lits = Vec::new();
        for x in xs {
            match *x {
                F::Const(false) => return F::Const(false),
                F::Const(true) => {}
                F::Lit(l) => lits.push(l),
            }
        }
        lits.sort_unstable_by_key(|l| l.idx());
        lits.dedup();
        if lits.windows(2).any(|w| w[0].var() == w[1].var()) {
            return F::Const(false);
        }
        match lits.len() {
            0 => F::Const(true),
            1 => F::Lit(lits[0]),
            _ => {
                let g = self.fresh();
                let mut long = vec![g];
                for &l in &lits {
                    self.clauses.push(vec![!g, l]);
                    long.push(!l);
                }
                self.clauses.push(long);
                F::Lit(g)
            }
        }
    }

    /// A formula equivalent to the disjunction of `xs`.
    pub fn or(&mut self, xs: &[F]) -> F {
        let negated: Vec<F> = xs.iter().map(|x| !*x).collect();
        !self.and(&negated)
    }

    /// `a → b`.
    pub fn implies(&mut self, a: F, b: F) -> F {
        self.or(&[!a, b])
    }

    /// A formula true when at most one of `xs` holds (a sequential counter: `seen` is "one of
    /// the first i holds", `two` "two of them do").
    pub fn at_most_one(&mut self, xs: &[F]) -> F {
        let mut seen = F::Const(false);
        let mut two = F::Const(false);
        for &x in xs {
            let both = self.and(&[seen, x]);
            two = self.or(&[two, both]);
            seen = self.or(&[seen, x]);
        }
        !two
    }
}

/// Compiles `REQUIRED_USE` (its top-level members `nodes`) into `cnf`, asserting it. `flag`
/// gives each named flag's formula (a variable, or a constant for flags the profile or the
/// EAPI decides); `empty_groups_true` is Portage's EAPI rule for empty groups.
pub fn compile_required_use(cnf: &mut Cnf, nodes: &[Node], empty_groups_true: bool, flag: &dyn Fn(&str) -> F) {
    let mut c = Compiler { cnf, empty_groups_true, flag };
    for n in nodes {
        let (act, val) = c.node(n);
        let ok = c.cnf.implies(act, val);
        c.cnf.assert(ok);
    }
}

struct Compiler<'c, 'f> {
    cnf: &'c mut Cnf,
    empty_groups_true: bool,
    flag: &'f dyn Fn(&str) -> F,
}

impl Compiler<'_, '_> {
    /// `(act, val)` of a node (see the module docs). Recursion follows the nesting, which the
    /// parser bounds by [`crate::required_use::MAX_DEPTH`].
    fn node(&mut self, n: &Node) -> (F, F) {
        match n {
            Node::Flag { name, negated } => {
                let f = (self.flag)(name);
                (F::Const(true), if *negated { !f } else { f })
            }
            Node::Conditional { flag, negated, children } => {
                let f = (self.flag)(flag);
                let cond = if *negated { !f } else { f };
                if cond == F::Const(false) {
                    return (F::Const(false), F::Const(true));
                }
                let (_, val) = self.all_of(children);
                (cond, val)
            }
            Node::All(children) => self.all_of(children),
            Node::Group { op, children } => {
                let mut acts = Vec::with_capacity(children.len());
                let mut trues = Vec::with_capacity(children.len());
                for ch in children {
                    let (act, val) = self.node(ch);
                    acts.push(act);
                    trues.push(self.cnf.and(&[act, val]));
                }
                let holds = match op {
                    Op::AnyOf => self.cnf.or(&trues),
                    Op::AtMostOne => self.cnf.at_most_one(&trues),
                    Op::ExactlyOne => {
                        let any = self.cnf.or(&trues);
                        let amo = self.cnf.at_most_one(&trues);
                        self.cnf.and(&[any, amo])
                    }
                };
                if self.empty_groups_true {
                    let some = self.cnf.or(&acts);
                    let val = self.cnf.or(&[holds, !some]);
                    (F::Const(true), val)
                } else {
                    (F::Const(true), holds)
                }
            }
        }
    }

    /// An all-of member list: whether some member contributes, and whether every
    /// contributing member is true.
    fn all_of(&mut self, children: &[Node]) -> (F, F) {
        let mut acts = Vec::with_capacity(children.len());
        let mut oks = Vec::with_capacity(children.len());
        for ch in children {
            let (act, val) = self.node(ch);
            acts.push(act);
            oks.push(self.cnf.implies(act, val));
        }
        let act = self.cnf.or(&acts);
        let val = self.cnf.and(&oks);
        (act, val)
    }
}

/// What a query gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A model exists (read it with [`Sat::value`]).
    Sat,
    /// None exists under the assumptions ([`Sat::in_core`] names the culprits).
    Unsat,
    /// Stopped by the deadline or the conflict limit.
    Unknown,
}

/// The solver's stop rule: a deadline and a conflict limit (checked at every conflict).
struct Stop {
    deadline: Option<Instant>,
    conflicts_left: Cell<Option<u64>>,
}

impl Callbacks for Stop {
    fn stop(&self) -> bool {
        if let Some(left) = self.conflicts_left.get() {
            if left == 0 {
                return true;
            }
            self.conflicts_left.set(Some(left - 1));
        }
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// An incremental solver loaded with a [`Cnf`].
pub struct Sat {
    solver: batsat::Solver<Stop>,
}

impl std::fmt::Debug for Sat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sat({} vars, {} clauses)", self.solver.num_vars(), self.solver.num_clauses())
    }
}

impl Sat {
    /// A solver holding `cnf`, stopping every query at `deadline` (if any).
    pub fn new(cnf: &Cnf, deadline: Option<Instant>) -> Sat {
        let stop = Stop { deadline, conflicts_left: Cell::new(None) };
        let mut solver = batsat::Solver::new(SolverOpts::default(), stop);
        for _ in 0..cnf.num_vars() {
            solver.new_var_default();
        }
        for c in cnf.clauses() {
            solver.add_clause_reuse(&mut c.clone());
        }
        Sat { solver }
    }

    /// Adds a variable (for clauses added later with [`Sat::add`]).
    pub fn fresh(&mut self) -> Lit {
        Lit::new(self.solver.new_var_default(), true)
    }

    /// Adds a clause.
    pub fn add(&mut self, clause: &[Lit]) {
        self.solver.add_clause_reuse(&mut clause.to_vec());
    }

    /// Changes the deadline of later queries.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.solver.cb_mut().deadline = deadline;
    }

    /// Is there a model in which every literal of `assumptions` holds? `conflicts` bounds the
    /// search (`None`: only the deadline does).
    pub fn solve(&mut self, assumptions: &[Lit], conflicts: Option<u64>) -> Outcome {
        self.solver.cb().conflicts_left.set(conflicts);
        let r = self.solver.solve_limited(assumptions);
        self.solver.cb().conflicts_left.set(None);
        if r == lbool::TRUE {
            Outcome::Sat
        } else if r == lbool::FALSE {
            Outcome::Unsat
        } else {
            Outcome::Unknown
        }
    }

    /// The value of `l` in the last model.
    pub fn value(&self, l: Lit) -> bool {
        self.solver.value_lit(l) == lbool::TRUE
    }

    /// After [`Outcome::Unsat`]: whether the assumption `l` is part of the reason.
    pub fn in_core(&self, l: Lit) -> bool {
        self.solver.unsat_core_contains_var(l.var())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::required_use::RequiredUse;

    /// Every assignment of the named flags: the CNF (flags as assumptions) agrees with the
    /// exact evaluator.
    fn agree(expr: &str, empty_groups_true: bool) {
        let ru = RequiredUse::parse(expr).unwrap();
        let flags = ru.flags().to_vec();
        let mut cnf = Cnf::default();
        let lits: Vec<Lit> = flags.iter().map(|_| cnf.fresh()).collect();
        compile_required_use(&mut cnf, ru.nodes(), empty_groups_true, &|f| F::Lit(lits[flags.iter().position(|x| x == f).unwrap()]));
        let mut sat = Sat::new(&cnf, None);
        for bits in 0..1u32 << flags.len() {
            let values: Vec<bool> = (0..flags.len()).map(|k| bits >> k & 1 == 1).collect();
            let assumptions: Vec<Lit> = lits.iter().zip(&values).map(|(l, v)| if *v { *l } else { !*l }).collect();
            let want = ru.eval_values(empty_groups_true, &values);
            let got = sat.solve(&assumptions, None) == Outcome::Sat;
            assert_eq!(got, want, "{expr} (empty groups true: {empty_groups_true}) at {values:?}");
        }
    }

    #[test]
    fn the_cnf_agrees_with_portages_evaluator() {
        for expr in [
            "a",
            "!a b",
            "|| ( a b c )",
            "^^ ( a b c )",
            "?? ( a b c )",
            "a? ( b )",
            "!a? ( b !c )",
            "|| ( a? ( b ) )",
            "^^ ( a? ( b ) c? ( d ) )",
            "?? ( ( a? ( b ) ) c )",
            "|| ( ( a? ( b ) ) )",
            "^^ ( ( ) a )",
            "|| ( )",
            "^^ ( )",
            "?? ( )",
            "a? ( || ( ) )",
            "^^ ( a b ( c d ) ) e? ( ?? ( a b c ) )",
            "|| ( a? ( ^^ ( b c ) ) !a? ( ?? ( b c d ) ) )",
            "( ( a? ( b ) ) ) !b? ( c )",
            "^^ ( a a b )",
            "a !a",
        ] {
            agree(expr, false);
            agree(expr, true);
        }
    }
}
