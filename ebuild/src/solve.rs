//! The configuration space of one ebuild and a backtracking solver over it.
//!
//! A [`Space`] has one variable per IUSE flag except `test`. The solver never enumerates
//! `2^|IUSE|`: only the flags `REQUIRED_USE` names are searched (depth-first, pruned by
//! [`RequiredUse::eval_partial`]); every other flag is free and takes the value asked for.
//! Every configuration this module returns has been checked by the exact evaluator.
//!
//! **`test` is not a variable.** The guest builds with `FEATURES=test`, and Portage then sets
//! `USE=test` itself unless `RESTRICT` contains `test` (which masks it). So each
//! configuration's `test` is derived, never varied: on, unless `RESTRICT` (its conditionals
//! evaluated under that configuration with `test` on) contains `test`. Configurations whose
//! derived `test` violates `REQUIRED_USE` are invalid like any other.

use std::collections::HashMap;

use gah_core::job::UseAssignment;

use crate::md5cache::Ebuild;
use crate::profile::Profile;
use crate::required_use::RequiredUse;

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
    /// Whether each variable can affect validity (named in REQUIRED_USE, or in RESTRICT
    /// conditionals when `test` is derived). The others are free.
    constrained: Vec<bool>,
    /// The constrained variables in search order (order of appearance in REQUIRED_USE).
    order: Vec<usize>,
    defaults: Vec<bool>,
    test: TestRule,
    empty_groups_true: bool,
    /// Where each REQUIRED_USE flag's value comes from, in [`RequiredUse::flags`] order.
    sources: Vec<Source>,
    /// Upper bound on search nodes per query; see [`Space::budget_exhausted`].
    node_budget: u64,
    exhausted: std::cell::Cell<bool>,
    /// When the ebuild's time budget ends ([`Space::set_deadline`]); `timed_out` says it did.
    deadline: Option<std::time::Instant>,
    timed_out: std::cell::Cell<bool>,
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

        let mut constrained = vec![false; vars.len()];
        let mut order = Vec::new();
        let mut mark = |name: &str, order: &mut Vec<usize>| {
            if let Some(&i) = index.get(name) {
                if !constrained[i] {
                    constrained[i] = true;
                    order.push(i);
                }
            }
        };
        for (i, p) in pinned.iter().enumerate() {
            if p.is_some() {
                mark(&vars[i], &mut order);
            }
        }
        for f in ebuild.required_use.flags() {
            mark(f, &mut order);
        }
        if test == TestRule::Derived {
            for f in restrict_condition_flags(&ebuild.restrict) {
                mark(f, &mut order);
            }
        }
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
        Space {
            ebuild,
            profile,
            sources,
            vars,
            pinned,
            index,
            constrained,
            order,
            defaults,
            test,
            empty_groups_true: ebuild.empty_groups_true(),
            node_budget: 200_000,
            exhausted: std::cell::Cell::new(false),
            deadline: None,
            timed_out: std::cell::Cell::new(false),
        }
    }

    /// Ends every search, and the covering-array builds, at `deadline`: what was found by then
    /// is kept, and [`Space::out_of_time`] says so.
    pub fn set_deadline(&mut self, deadline: std::time::Instant) {
        self.deadline = Some(deadline);
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
        self.constrained[i]
    }

    /// True when some query gave up after its node budget, so a result may be missing
    /// (never wrong: everything returned is still checked).
    pub fn budget_exhausted(&self) -> bool {
        self.exhausted.get()
    }

    fn required_use(&self) -> &RequiredUse {
        &self.ebuild.required_use
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
        self.required_use().eval_values(self.empty_groups_true, &values)
    }

    fn partial_ok(&self, partial: &[Option<bool>]) -> bool {
        let test = match self.test {
            TestRule::Absent => Some(false),
            TestRule::Fixed(v) => Some(v),
            TestRule::Derived => None,
        };
        let values: Vec<Option<bool>> = self
            .sources
            .iter()
            .map(|s| match *s {
                Source::Var(i) => partial[i],
                Source::Test => test,
                Source::Implicit(v) => Some(v),
            })
            .collect();
        self.required_use().eval_partial_values(self.empty_groups_true, &values) != Some(false)
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

    /// A valid configuration agreeing with `fixed` wherever it is `Some`, preferring the
    /// values of `prefer` elsewhere (exactly `prefer` on free variables); `None` when there is
    /// none (or the node budget ran out).
    pub fn solve(&self, fixed: &[Option<bool>], prefer: &[bool]) -> Option<Config> {
        let (found, out_of_budget) = self.solve_bounded(fixed, prefer, self.node_budget);
        if out_of_budget {
            self.exhausted.set(true);
        }
        found
    }

    /// [`Space::solve`] within `nodes` search nodes, for heuristic queries whose `None` only
    /// means "not found cheaply": running out of nodes is not recorded in
    /// [`Space::budget_exhausted`].
    pub fn solve_within(&self, fixed: &[Option<bool>], prefer: &[bool], nodes: u64) -> Option<Config> {
        self.solve_bounded(fixed, prefer, nodes.min(self.node_budget)).0
    }

    /// The search behind [`Space::solve`]: the configuration found, and whether the search
    /// gave up after `budget` nodes.
    fn solve_bounded(&self, fixed: &[Option<bool>], prefer: &[bool], budget: u64) -> (Option<Config>, bool) {
        // Fixed values are visible to the pruning from the start, not only when the search
        // reaches their variable: an infeasible request fails at the root.
        if self.out_of_time() {
            return (None, true);
        }
        let Some(fixed) = self.with_pinned(fixed) else { return (None, false) };
        let fixed = &fixed[..];
        let mut partial: Vec<Option<bool>> = fixed.to_vec();
        if !self.partial_ok(&partial) {
            return (None, false);
        }
        let mut nodes = 0u64;
        let mut found = None;
        self.dfs(0, &mut partial, fixed, prefer, &mut nodes, budget, &mut |p| {
            found = Some(p.to_vec());
            true
        });
        let out_of_budget = nodes > budget;
        (found.map(|p| self.complete(&p, fixed, prefer)), out_of_budget)
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

    /// Fills the free variables: `fixed` first, then `prefer`.
    fn complete(&self, partial: &[Option<bool>], fixed: &[Option<bool>], prefer: &[bool]) -> Config {
        (0..self.vars.len()).map(|i| partial[i].or(fixed[i]).unwrap_or(prefer[i])).collect()
    }

    /// Depth-first search over the constrained variables. `leaf` is called with every valid
    /// complete assignment of them (free variables still `None`) and returns true to stop.
    #[allow(clippy::too_many_arguments)]
    fn dfs(
        &self,
        depth: usize,
        partial: &mut Vec<Option<bool>>,
        fixed: &[Option<bool>],
        prefer: &[bool],
        nodes: &mut u64,
        budget: u64,
        leaf: &mut dyn FnMut(&[Option<bool>]) -> bool,
    ) -> bool {
        *nodes += 1;
        if *nodes & 1023 == 0 && self.out_of_time() {
            *nodes = budget.saturating_add(1);
        }
        if *nodes > budget {
            // The caller sees `nodes > budget` and decides whether that is worth recording.
            return true;
        }
        if depth == self.order.len() {
            // Exact check: the partial evaluator over-approximates, and a derived `test`
            // is only known here.
            let full: Config = (0..self.vars.len()).map(|i| partial[i].or(fixed[i]).unwrap_or(prefer[i])).collect();
            return self.is_valid(&full) && leaf(partial);
        }
        let var = self.order[depth];
        if fixed[var].is_some() {
            // Already in `partial` (set by the caller) and checked.
            return self.dfs(depth + 1, partial, fixed, prefer, nodes, budget, leaf);
        }
        let choices: &[bool] = if prefer[var] { &[true, false] } else { &[false, true] };
        for &v in choices {
            partial[var] = Some(v);
            if self.partial_ok(partial) && self.dfs(depth + 1, partial, fixed, prefer, nodes, budget, leaf) {
                partial[var] = None;
                return true;
            }
        }
        partial[var] = None;
        false
    }

    /// The valid configuration closest to `target` (fewest flags differing), by branch and
    /// bound; ties go to the first found with `target`'s values tried first. After the node
    /// budget the best found so far is returned.
    pub fn closest(&self, target: &[bool]) -> Option<Config> {
        if self.out_of_time() {
            self.exhausted.set(true);
            return None;
        }
        let fixed = self.with_pinned(&vec![None; self.vars.len()])?;
        let mut best: Option<(usize, Config)> = None;
        let mut partial: Vec<Option<bool>> = fixed.clone();
        let mut nodes = 0u64;
        self.bnb(0, 0, &mut partial, target, &fixed, &mut nodes, &mut best);
        best.map(|(_, c)| c)
    }

    #[allow(clippy::too_many_arguments)]
    fn bnb(
        &self,
        depth: usize,
        cost: usize,
        partial: &mut Vec<Option<bool>>,
        target: &[bool],
        fixed: &[Option<bool>],
        nodes: &mut u64,
        best: &mut Option<(usize, Config)>,
    ) {
        *nodes += 1;
        if *nodes > self.node_budget || (*nodes & 1023 == 0 && self.out_of_time()) {
            self.exhausted.set(true);
            *nodes = self.node_budget.saturating_add(1);
            return;
        }
        if best.as_ref().is_some_and(|(b, _)| cost >= *b) {
            return;
        }
        if depth == self.order.len() {
            let full = self.complete(partial, fixed, target);
            if self.is_valid(&full) {
                *best = Some((cost, full));
            }
            return;
        }
        let var = self.order[depth];
        if fixed[var].is_some() {
            // Pinned by the profile: no choice, no cost.
            return self.bnb(depth + 1, cost, partial, target, fixed, nodes, best);
        }
        for v in [target[var], !target[var]] {
            partial[var] = Some(v);
            if self.partial_ok(partial) {
                self.bnb(depth + 1, cost + usize::from(v != target[var]), partial, target, fixed, nodes, best);
            }
        }
        partial[var] = None;
    }

    /// Every valid configuration, in a stable order; `None` when there are more than `limit`.
    pub fn enumerate(&self, limit: usize) -> Option<Vec<Config>> {
        let free: Vec<usize> = (0..self.vars.len()).filter(|&i| !self.constrained[i]).collect();
        if free.len() >= 32 || (1usize << free.len()) > limit {
            return None;
        }
        let Some(fixed) = self.with_pinned(&vec![None; self.vars.len()]) else { return Some(Vec::new()) };
        let prefer = vec![false; self.vars.len()];
        let mut partial: Vec<Option<bool>> = fixed.clone();
        let mut constrained_solutions: Vec<Vec<Option<bool>>> = Vec::new();
        let mut nodes = 0u64;
        if self.out_of_time() {
            return None;
        }
        let per_free = 1usize << free.len();
        let mut too_many = false;
        self.dfs(0, &mut partial, &fixed, &prefer, &mut nodes, self.node_budget, &mut |p| {
            constrained_solutions.push(p.to_vec());
            too_many = constrained_solutions.len() * per_free > limit;
            too_many
        });
        if nodes > self.node_budget {
            self.exhausted.set(true);
        }
        if too_many || self.exhausted.get() {
            return None;
        }
        let mut out = Vec::new();
        for sol in &constrained_solutions {
            for bits in 0..per_free {
                let mut c: Config = sol.iter().zip(&fixed).map(|(v, f)| v.or(*f).unwrap_or(false)).collect();
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
        assert!(!s.budget_exhausted());
    }
}
