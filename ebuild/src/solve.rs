//! The configuration space of one ebuild and a SAT solver over it.
//!
//! A [`Space`] has one variable per IUSE flag except `test`. Only the flags that can affect
//! validity (named by `REQUIRED_USE`, pinned by the profile, or deciding a derived `test`) are
//! solver variables: `REQUIRED_USE` is compiled once per ebuild to CNF ([`crate::cnf`]), the
//! profile's masked and forced flags are unit clauses, and every query fixes values through
//! assumptions on one incremental solver. Every other flag is free and takes the value asked
//! for. Queries are exact: "no configuration" means none exists (only the ebuild's deadline
//! can stop a query early, and [`Space::out_of_time`] then says so). Every configuration this
//! module returns also satisfies the exact evaluator ([`Space::is_valid`]).
//!
//! **`test` is not a variable.** The guest builds with `FEATURES=test`, and Portage then sets
//! `USE=test` itself unless `RESTRICT` contains `test` (which masks it). So each
//! configuration's `test` is derived, never varied: on, unless `RESTRICT` (its conditionals
//! evaluated under that configuration with `test` on) contains `test`. Configurations whose
//! derived `test` violates `REQUIRED_USE` are invalid like any other.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use batsat::Lit;
use gah_core::job::UseAssignment;

use crate::cnf::{self, Cnf, Outcome, Sat, F};
use crate::md5cache::Ebuild;
use crate::profile::Profile;

/// How an ebuild's `test` flag is set (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestRule {
    /// `test` is not in IUSE.
    Absent,
    /// Always this value: `RESTRICT` names `test` regardless of other flags, or never.
    Fixed(bool),
    /// Depends on other flags through `RESTRICT` conditionals (computed per configuration).
    Derived,
}

/// One ebuild's configuration space.
#[derive(Debug)]
pub struct Space<'e> {
    ebuild: &'e Ebuild,
    profile: &'e Profile,
    vars: Vec<String>,
    /// Values the profile imposes (masked: off, forced: on); never varied.
    pinned: Vec<Option<bool>>,
    index: HashMap<String, usize>,
    /// The solver literal of each constrained variable (named in REQUIRED_USE, pinned, or in
    /// RESTRICT conditionals when `test` is derived); `None` for the free ones.
    lits: Vec<Option<Lit>>,
    /// REQUIRED_USE, the pins and the derived `test` as CNF over `lits` (and auxiliaries).
    cnf: Cnf,
    /// The incremental solver every [`Space::solve`] query goes to.
    sat: RefCell<Sat>,
    defaults: Vec<bool>,
    test: TestRule,
    empty_groups_true: bool,
    /// Where each REQUIRED_USE flag's value comes from, in [`RequiredUse::flags`] order.
    ///
    /// [`RequiredUse::flags`]: crate::RequiredUse::flags
    sources: Vec<Source>,
    /// When the ebuild's time budget ends ([`Space::set_deadline`]); `timed_out` says it did.
    deadline: Option<std::time::Instant>,
    timed_out: Cell<bool>,
}

/// Where the value of a flag named in REQUIRED_USE comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    Var(usize),
    Test,
    Implicit(bool),
}

/// A configuration: one value per variable of its [`Space`], in [`Space::vars`] order.
pub type Config = Vec<bool>;

/// Most clauses [`Space::closest`] spends on its cardinality counter (flags times distance);
/// past it the closest configuration the preference search found is returned as it is.
const CLOSEST_COUNTER_LIMIT: usize = 400_000;

impl<'e> Space<'e> {
    /// The space of `ebuild` under `profile`.
    pub fn new(ebuild: &'e Ebuild, profile: &'e Profile) -> Space<'e> {
        let vars: Vec<String> = ebuild.iuse.iter().map(|f| f.name.clone()).filter(|f| f != "test").collect();
        let pinned: Vec<Option<bool>> = vars.iter().map(|f| profile.pinned(&ebuild.cpv, f)).collect();
        let index: HashMap<String, usize> = vars.iter().enumerate().map(|(i, f)| (f.clone(), i)).collect();
        // The profile's USE (make.defaults, USE_EXPAND variables) overrides IUSE defaults.
        let defaults = ebuild.iuse.iter().filter(|f| f.name != "test").map(|f| profile.default_value(&f.name, f.default_on())).collect();

        let test = if !ebuild.has_iuse("test") {
            TestRule::Absent
        } else {
            let others: Vec<&str> = restrict_condition_flags(&ebuild.restrict).filter(|f| *f != "test").collect();
            if others.is_empty() {
                TestRule::Fixed(!ebuild.restricts("test", &|f| f == "test"))
            } else {
                TestRule::Derived
            }
        };

        let mut cnf = Cnf::default();
        let mut lits: Vec<Option<Lit>> = vec![None; vars.len()];
        let mut mark = |name: &str, cnf: &mut Cnf| {
            if let Some(&i) = index.get(name) {
                if lits[i].is_none() {
                    lits[i] = Some(cnf.fresh());
                }
            }
        };
        for (i, p) in pinned.iter().enumerate() {
            if p.is_some() {
                mark(&vars[i], &mut cnf);
            }
        }
        for f in ebuild.required_use.flags() {
            mark(f, &mut cnf);
        }
        if test == TestRule::Derived {
            for f in restrict_condition_flags(&ebuild.restrict) {
                mark(f, &mut cnf);
            }
        }
        for (l, p) in lits.iter().zip(&pinned) {
            if let (Some(l), Some(v)) = (l, p) {
                cnf.assert(F::Lit(if *v { *l } else { !*l }));
            }
        }
        let var_formula = |name: &str| -> F {
            match index.get(name).and_then(|&i| lits[i]) {
                Some(l) => F::Lit(l),
                None => F::Const(profile.implicit(name)),
            }
        };
        let test_formula = match test {
            TestRule::Absent => F::Const(profile.implicit("test")),
            TestRule::Fixed(v) => F::Const(v),
            TestRule::Derived => restrict_test_formula(&mut cnf, &ebuild.restrict, &var_formula),
        };
        let empty_groups_true = ebuild.empty_groups_true();
        cnf::compile_required_use(&mut cnf, ebuild.required_use.nodes(), empty_groups_true, &|f| {
            if f == "test" && !index.contains_key(f) {
                test_formula
            } else {
                var_formula(f)
            }
        });
        let sources = ebuild
            .required_use
            .flags()
            .iter()
            .map(|f| match index.get(f) {
                Some(&i) => Source::Var(i),
                None if f == "test" && test != TestRule::Absent => Source::Test,
                None => Source::Implicit(profile.implicit(f)),
            })
            .collect();
        let sat = RefCell::new(Sat::new(&cnf, None));
        Space {
            ebuild,
            profile,
            sources,
            vars,
            pinned,
            index,
            lits,
            cnf,
            sat,
            defaults,
            test,
            empty_groups_true,
            deadline: None,
            timed_out: Cell::new(false),
        }
    }

    /// Ends every search, and the covering-array builds, at `deadline`: what was found by then
    /// is kept, and [`Space::out_of_time`] says so.
    pub fn set_deadline(&mut self, deadline: std::time::Instant) {
        self.deadline = Some(deadline);
        self.sat.get_mut().set_deadline(Some(deadline));
    }

    /// The deadline given with [`Space::set_deadline`].
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.deadline
    }

    /// True once the deadline has passed (checked now, and remembered).
    pub fn out_of_time(&self) -> bool {
        if !self.timed_out.get() && self.deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            self.timed_out.set(true);
        }
        self.timed_out.get()
    }

    /// The profile.
    pub fn profile(&self) -> &'e Profile {
        self.profile
    }

    /// The ebuild.
    pub fn ebuild(&self) -> &'e Ebuild {
        self.ebuild
    }

    /// The varied flags (IUSE without `test`), in IUSE order.
    pub fn vars(&self) -> &[String] {
        &self.vars
    }

    /// How `test` is set.
    pub fn test_rule(&self) -> TestRule {
        self.test
    }

    /// The default configuration: IUSE defaults (`+flag` on) overridden by the profile's USE.
    pub fn defaults(&self) -> &[bool] {
        &self.defaults
    }

    /// Whether variable `i` can affect validity.
    pub fn is_constrained(&self, i: usize) -> bool {
        self.lits[i].is_some()
    }

    /// The derived `test` value of a complete configuration.
    fn test_value(&self, config: &[bool]) -> bool {
        match self.test {
            TestRule::Absent => false,
            TestRule::Fixed(v) => v,
            TestRule::Derived => !self.ebuild.restricts("test", &|f| f == "test" || self.lookup(config, f)),
        }
    }

    fn lookup(&self, config: &[bool], flag: &str) -> bool {
        match self.index.get(flag) {
            Some(&i) => config[i],
            None => self.profile.implicit(flag),
        }
    }

    /// Portage's verdict on a complete configuration.
    pub fn is_valid(&self, config: &[bool]) -> bool {
        if self.pinned.iter().zip(config).any(|(p, v)| p.is_some_and(|p| p != *v)) {
            return false;
        }
        let test = self.test_value(config);
        let values: Vec<bool> = self
            .sources
            .iter()
            .map(|s| match *s {
                Source::Var(i) => config[i],
                Source::Test => test,
                Source::Implicit(v) => v,
            })
            .collect();
        self.ebuild.required_use.eval_values(self.empty_groups_true, &values)
    }

    /// The USE assignment of a configuration: every IUSE flag, `test` included.
    pub fn assignment(&self, config: &[bool]) -> UseAssignment {
        let mut a = UseAssignment::default();
        for (f, v) in self.vars.iter().zip(config) {
            a.0.insert(f.clone(), *v);
        }
        if self.test != TestRule::Absent {
            a.0.insert("test".into(), self.test_value(config));
        }
        a
    }

    /// The literal saying variable `i` has value `v` (`i` constrained).
    fn lit(&self, i: usize, v: bool) -> Option<Lit> {
        self.lits[i].map(|l| if v { l } else { !l })
    }

    /// A valid configuration agreeing with `fixed` wherever it is `Some`, preferring the
    /// values of `prefer` elsewhere (exactly `prefer` on free variables); `None` when there is
    /// none (or the ebuild's deadline passed: [`Space::out_of_time`]).
    ///
    /// The preference is honoured as far as it can be: every preferred value is an
    /// assumption, and those in an unsat core are dropped until the rest is satisfiable.
    pub fn solve(&self, fixed: &[Option<bool>], prefer: &[bool]) -> Option<Config> {
        self.solve_limited(fixed, prefer, None)
    }

    /// [`Space::solve`] within about `conflicts` solver conflicts, for heuristic queries whose
    /// `None` only means "not found cheaply".
    pub fn solve_within(&self, fixed: &[Option<bool>], prefer: &[bool], conflicts: u64) -> Option<Config> {
        self.solve_limited(fixed, prefer, Some(conflicts))
    }

    fn solve_limited(&self, fixed: &[Option<bool>], prefer: &[bool], conflicts: Option<u64>) -> Option<Config> {
        if self.out_of_time() {
            return None;
        }
        let fixed = self.with_pinned(fixed)?;
        let hard: Vec<Lit> = fixed.iter().enumerate().filter_map(|(i, v)| v.and_then(|v| self.lit(i, v))).collect();
        let mut soft: Vec<Lit> = (0..self.vars.len()).filter(|&i| fixed[i].is_none()).filter_map(|i| self.lit(i, prefer[i])).collect();
        let mut sat = self.sat.borrow_mut();
        let mut assumptions = Vec::with_capacity(hard.len() + soft.len());
        loop {
            assumptions.clear();
            assumptions.extend_from_slice(&hard);
            assumptions.extend_from_slice(&soft);
            match sat.solve(&assumptions, conflicts) {
                Outcome::Sat => {
                    let config: Config = (0..self.vars.len())
                        .map(|i| match self.lits[i] {
                            Some(l) => sat.value(l),
                            None => fixed[i].unwrap_or(prefer[i]),
                        })
                        .collect();
                    debug_assert!(self.is_valid(&config), "the CNF of {} disagrees with the evaluator", self.ebuild.cpv);
                    return Some(config);
                }
                Outcome::Unknown => return None,
                Outcome::Unsat => {
                    let before = soft.len();
                    soft.retain(|l| !sat.in_core(*l));
                    if soft.len() == before {
                        // The fixed values alone are contradictory.
                        return None;
                    }
                }
            }
        }
    }

    /// `fixed` plus the profile's pins; `None` when they contradict.
    fn with_pinned(&self, fixed: &[Option<bool>]) -> Option<Vec<Option<bool>>> {
        let mut out = fixed.to_vec();
        for (i, p) in self.pinned.iter().enumerate() {
            match (out[i], *p) {
                (Some(a), Some(b)) if a != b => return None,
                (_, Some(b)) => out[i] = Some(b),
                _ => {}
            }
        }
        Some(out)
    }

    /// The valid configuration closest to `target` (fewest flags differing). Exact: a first
    /// solution preferring `target`'s values gives a bound, then a cardinality counter over
    /// the differing flags (on a solver of its own) lowers it until no closer configuration
    /// exists. When the counter would exceed `CLOSEST_COUNTER_LIMIT` clauses the first
    /// solution is returned. `None` when there is no valid configuration (or past the
    /// deadline).
    pub fn closest(&self, target: &[bool]) -> Option<Config> {
        let first = self.solve(&vec![None; self.vars.len()], target)?;
        // Pinned flags cost the same in every configuration: only the others count.
        let counted: Vec<usize> = (0..self.vars.len()).filter(|&i| self.lits[i].is_some() && self.pinned[i].is_none()).collect();
        let cost = |c: &[bool]| counted.iter().filter(|&&i| c[i] != target[i]).count();
        let mut best_cost = cost(&first);
        let mut best = first;
        if best_cost == 0 || counted.len().saturating_mul(best_cost) > CLOSEST_COUNTER_LIMIT {
            return Some(best);
        }
        let mut sat = Sat::new(&self.cnf, self.deadline);
        // Sinz's sequential counter, upward half: `at_least[j - 1]` is forced on when at
        // least j of the counted flags differ from `target` (j ≤ best_cost).
        let k = best_cost;
        let mut prev: Vec<Lit> = Vec::new();
        for (n, &i) in counted.iter().enumerate() {
            let differs = self.lit(i, !target[i]).expect("counted flags are constrained");
            let width = (n + 1).min(k);
            let row: Vec<Lit> = (0..width).map(|_| sat.fresh()).collect();
            sat.add(&[!differs, row[0]]);
            for j in 0..width {
                if j < prev.len() {
                    sat.add(&[!prev[j], row[j]]);
                }
                if j > 0 && j - 1 < prev.len() {
                    sat.add(&[!differs, !prev[j - 1], row[j]]);
                }
            }
            prev = row;
        }
        while best_cost > 0 {
            // Fewer than best_cost differing flags.
            let bound = !prev[best_cost - 1];
            match sat.solve(&[bound], None) {
                Outcome::Sat => {
                    let c: Config = (0..self.vars.len())
                        .map(|i| match self.lits[i] {
                            Some(l) => sat.value(l),
                            None => target[i],
                        })
                        .collect();
                    best_cost = cost(&c);
                    best = c;
                }
                Outcome::Unsat => break,
                Outcome::Unknown => {
                    self.timed_out.set(true);
                    break;
                }
            }
        }
        debug_assert!(self.is_valid(&best));
        Some(best)
    }

    /// Every valid configuration, in a stable order; `None` when there are more than `limit`
    /// (or the deadline passed).
    pub fn enumerate(&self, limit: usize) -> Option<Vec<Config>> {
        let free: Vec<usize> = (0..self.vars.len()).filter(|&i| self.lits[i].is_none()).collect();
        if free.len() >= 32 || (1usize << free.len()) > limit {
            return None;
        }
        if self.out_of_time() {
            return None;
        }
        let per_free = 1usize << free.len();
        let constrained: Vec<usize> = (0..self.vars.len()).filter(|&i| self.lits[i].is_some()).collect();
        let mut sat = Sat::new(&self.cnf, self.deadline);
        let mut solutions: Vec<Vec<bool>> = Vec::new();
        loop {
            match sat.solve(&[], None) {
                Outcome::Sat => {}
                Outcome::Unsat => break,
                Outcome::Unknown => {
                    self.timed_out.set(true);
                    return None;
                }
            }
            let values: Vec<bool> = constrained.iter().map(|&i| sat.value(self.lits[i].expect("constrained"))).collect();
            // Block this assignment of the flags (auxiliaries are functions of them).
            let block: Vec<Lit> = constrained.iter().zip(&values).map(|(&i, &v)| self.lit(i, !v).expect("constrained")).collect();
            solutions.push(values);
            if solutions.len() * per_free > limit {
                return None;
            }
            if block.is_empty() {
                break;
            }
            sat.add(&block);
        }
        let mut out = Vec::new();
        for sol in &solutions {
            for bits in 0..per_free {
                let mut c: Config = vec![false; self.vars.len()];
                for (&i, &v) in constrained.iter().zip(sol) {
                    c[i] = v;
                }
                for (k, &i) in free.iter().enumerate() {
                    c[i] = bits >> k & 1 == 1;
                }
                out.push(c);
            }
        }
        out.sort();
        Some(out)
    }
}

/// The formula "`test` stays on": `RESTRICT` does not contain `test` once its conditionals
/// are evaluated with `test` on, read by the parser [`crate::md5cache::use_reduce`] uses
/// ([`crate::depspec::parse_lenient`]), so the two agree on every string.
fn restrict_test_formula(cnf: &mut Cnf, restrict: &str, flag: &dyn Fn(&str) -> F) -> F {
    fn walk(cnf: &mut Cnf, items: &[crate::depspec::Item<'_>], under: F, flag: &dyn Fn(&str) -> F, out: &mut Vec<F>) {
        use crate::depspec::Item;
        for item in items {
            match item {
                Item::Leaf { text, .. } => {
                    if *text == "test" {
                        out.push(under);
                    }
                }
                Item::Cond { flag: name, negated, children, .. } => {
                    let f = if *name == "test" { F::Const(true) } else { flag(name) };
                    let cond = if *negated { !f } else { f };
                    let inner = cnf.and(&[under, cond]);
                    walk(cnf, children, inner, flag, out);
                }
                Item::Group { children, .. } => walk(cnf, children, under, flag, out),
            }
        }
    }
    let (items, _) = crate::depspec::parse_lenient(restrict);
    let mut restricted = Vec::new();
    walk(cnf, &items, F::Const(true), flag, &mut restricted);
    !cnf.or(&restricted)
}

/// The flags `RESTRICT`'s conditionals test (`flag?` and `!flag?`).
fn restrict_condition_flags(restrict: &str) -> impl Iterator<Item = &str> {
    restrict.split_whitespace().filter_map(|t| t.strip_suffix('?')).map(|t| t.trim_start_matches('!'))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::md5cache::parse_entry;

    pub(crate) fn ebuild(iuse: &str, required_use: &str, restrict: &str) -> Ebuild {
        let text = format!("EAPI=8\nIUSE={iuse}\nREQUIRED_USE={required_use}\nRESTRICT={restrict}\nSLOT=0\n_md5_=0\n");
        parse_entry("cat/pkg-1", &text, &mut Vec::new()).unwrap()
    }

    fn show(space: &Space, c: &[bool]) -> String {
        space.assignment(c).summary()
    }

    /// Renders every valid configuration (or `too many`), then the default-closest, all-on-closest
    /// and all-off-closest configurations.
    fn check(iuse: &str, required_use: &str, restrict: &str, expected: &str) {
        let e = ebuild(iuse, required_use, restrict);
        let p = Profile::none();
        let s = Space::new(&e, &p);
        let n = s.vars().len();
        let all = match s.enumerate(64) {
            Some(v) => {
                for c in &v {
                    assert!(s.is_valid(c));
                }
                v.iter().map(|c| format!("[{}]", show(&s, c))).collect::<Vec<_>>().join(" ")
            }
            None => "too many".into(),
        };
        let near = |t: Vec<bool>| s.closest(&t).map(|c| show(&s, &c)).unwrap_or_else(|| "none".into());
        let got = format!("{all}\ndefault: {}\non: {}\noff: {}", near(s.defaults().to_vec()), near(vec![true; n]), near(vec![false; n]));
        assert_eq!(got, expected);
    }

    #[test]
    fn free_flags_are_all_combinations() {
        check("+a b", "", "", "[-] [b] [a] [a b]\ndefault: a\non: a b\noff: -");
    }

    #[test]
    fn exactly_one_and_conditionals() {
        check("a b c", "^^ ( a b ) c? ( a )", "", "[b] [a] [a c]\ndefault: b\non: a c\noff: b");
        check("a b", "a? ( !a )", "", "[-] [b]\ndefault: -\non: b\noff: -");
        check("a", "a !a", "", "\ndefault: none\non: none\noff: none");
    }

    #[test]
    fn test_follows_restrict() {
        // `!test? ( test )`: FEATURES=test turns test on, so `test? ( a )` forces a.
        check("a test", "test? ( a )", "!test? ( test )", "[a test]\ndefault: a test\non: a test\noff: a test");
        // Unconditional RESTRICT=test: test stays off.
        check("a test", "test? ( a )", "test", "[-] [a]\ndefault: -\non: a\noff: -");
        // Derived: RESTRICT=test only when `nodeps`.
        check("nodeps test", "test? ( !nodeps )", "nodeps? ( test )", "[test] [nodeps]\ndefault: test\non: nodeps\noff: test");
    }

    #[test]
    fn profile_pins_and_implicit_flags() {
        let e = ebuild("a b c", "^^ ( a b ) c? ( amd64 )", "");
        let mut p = Profile::amd64_linux();
        p.mask(&["b"]);
        p.package_force("cat/pkg", &["c"]);
        let s = Space::new(&e, &p);
        let all: Vec<String> = s.enumerate(64).unwrap().iter().map(|c| show(&s, c)).collect();
        assert_eq!(all, ["a c"]);
        let none = Profile::none();
        let s = Space::new(&e, &none);
        let all: Vec<String> = s.enumerate(64).unwrap().iter().map(|c| show(&s, c)).collect();
        assert_eq!(all, ["b", "a"]);
    }

    #[test]
    fn solver_handles_many_flags_without_enumerating() {
        // 60 flags, exactly one of 40 targets: 40 * 2^20 configurations, far too many to list.
        let targets: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
        let free: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
        let iuse = format!("{} {}", targets.join(" "), free.join(" "));
        let e = ebuild(&iuse, &format!("^^ ( {} )", targets.join(" ")), "");
        let p = Profile::none();
        let s = Space::new(&e, &p);
        assert!(s.enumerate(4096).is_none());
        let on = s.closest(&[true; 60]).unwrap();
        assert_eq!(on.iter().filter(|v| **v).count(), 21);
        let mut fixed = vec![None; 60];
        fixed[39] = Some(true);
        let c = s.solve(&fixed, &[false; 60]).unwrap();
        assert!(s.is_valid(&c) && c[39] && c.iter().filter(|v| **v).count() == 1);
    }
}
