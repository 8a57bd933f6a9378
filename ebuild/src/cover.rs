//! Constrained t-wise covering arrays: few valid configurations that together show every
//! combination of `t` flag values that any valid configuration can show.
//!
//! Construction (AETG-style greedy, deterministic for a seed):
//! 1. seed rows: the valid configurations closest to the IUSE defaults, to all-on and to
//!    all-off (what QA expects from tatt);
//! 2. while a t-way value combination is uncovered: fix it (dropping it if the solver proves
//!    it infeasible), then give every other flag, in a seeded order, the value that covers
//!    most uncovered combinations with the flags already fixed, as long as the solver still
//!    finds a valid completion.
//!
//! Every row is a solver witness, so every row is valid.

use crate::solve::{Config, Space};

/// What a covering array build produced.
#[derive(Debug, Clone)]
pub struct Cover {
    /// The configurations; the first are the seeds (default, closest to all-on, to all-off),
    /// without duplicates.
    pub rows: Vec<Config>,
    /// Combinations dropped as infeasible (none of them is reachable by a valid
    /// configuration, unless [`Space::budget_exhausted`]).
    pub infeasible: usize,
}

/// Small deterministic generator (splitmix64): seeded shuffles without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            #[allow(clippy::cast_possible_truncation)]
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// The set of t-way combinations: every `t`-subset of variables (in lexicographic order)
/// times every value pattern (bit k = value of the k-th variable of the subset).
struct Tuples {
    t: usize,
    subsets: Vec<Vec<usize>>,
    /// For each variable, the subsets holding it (so `gain` looks at n^(t-1) subsets, not n^t).
    by_var: Vec<Vec<usize>>,
    uncovered: Vec<bool>,
    left: usize,
}

impl Tuples {
    fn new(n: usize, t: usize) -> Tuples {
        let mut subsets = Vec::new();
        let mut cur = Vec::with_capacity(t);
        fn rec(start: usize, n: usize, t: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
            if cur.len() == t {
                out.push(cur.clone());
                return;
            }
            for i in start..n {
                cur.push(i);
                rec(i + 1, n, t, cur, out);
                cur.pop();
            }
        }
        rec(0, n, t, &mut cur, &mut subsets);
        let total = subsets.len() << t;
        let mut by_var = vec![Vec::new(); n];
        for (i, sub) in subsets.iter().enumerate() {
            for &v in sub {
                by_var[v].push(i);
            }
        }
        Tuples { t, subsets, by_var, uncovered: vec![true; total], left: total }
    }

    fn pattern(&self, subset: &[usize], row: &[bool]) -> usize {
        subset.iter().enumerate().fold(0, |p, (k, &v)| p | (usize::from(row[v]) << k))
    }

    fn cover(&mut self, row: &[bool]) {
        for s in 0..self.subsets.len() {
            let idx = (s << self.t) | self.pattern(&self.subsets[s], row);
            if self.uncovered[idx] {
                self.uncovered[idx] = false;
                self.left -= 1;
            }
        }
    }

    fn drop_tuple(&mut self, idx: usize) {
        if self.uncovered[idx] {
            self.uncovered[idx] = false;
            self.left -= 1;
        }
    }

    /// Uncovered combinations whose variables are all `fixed` once `var` is set to `value`,
    /// counting only those that contain `var`.
    fn gain(&self, fixed: &[Option<bool>], var: usize, value: bool) -> usize {
        let mut n = 0;
        for &s in &self.by_var[var] {
            let subset = &self.subsets[s];
            if !subset.iter().all(|&v| v == var || fixed[v].is_some()) {
                continue;
            }
            let p = subset
                .iter()
                .enumerate()
                .fold(0, |p, (k, &v)| p | (usize::from(if v == var { value } else { fixed[v] == Some(true) }) << k));
            if self.uncovered[(s << self.t) | p] {
                n += 1;
            }
        }
        n
    }
}

/// Builds a t-wise covering array of `space`'s valid configurations. `t` is capped at the
/// number of variables; with no variables the result is the single valid configuration
/// (if any).
pub fn covering_array(space: &Space, t: usize, seed: u64) -> Cover {
    let n = space.vars().len();
    let mut rows: Vec<Config> = Vec::new();
    let push = |rows: &mut Vec<Config>, c: Config| {
        if !rows.contains(&c) {
            rows.push(c);
        }
    };
    for target in [space.defaults().to_vec(), vec![true; n], vec![false; n]] {
        if let Some(c) = space.closest(&target) {
            push(&mut rows, c);
        }
    }
    if rows.is_empty() {
        // No valid configuration at all (or the budget ran out before finding one).
        return Cover { rows, infeasible: 0 };
    }
    let t = t.min(n);
    if t == 0 {
        return Cover { rows, infeasible: 0 };
    }
    let mut tuples = Tuples::new(n, t);
    for r in &rows {
        tuples.cover(r);
    }
    // Literals no valid configuration has: every combination holding one is dropped without
    // a solver call (flags tied to another architecture, say).
    let lit_ok: Vec<[bool; 2]> = (0..n)
        .map(|v| {
            if !space.is_constrained(v) {
                return [true, true];
            }
            [false, true].map(|val| rows.iter().any(|r| r[v] == val) || {
                let mut fixed = vec![None; n];
                fixed[v] = Some(val);
                space.solve(&fixed, &rows[0]).is_some()
            })
        })
        .collect();
    let mut rng = Rng(seed);
    let mut infeasible = 0;
    let mut next_idx = 0;
    while tuples.left > 0 {
        while !tuples.uncovered[next_idx] {
            next_idx += 1;
        }
        let idx = next_idx;
        let subset = tuples.subsets[idx >> t].clone();
        let pattern = idx & ((1 << t) - 1);
        let mut fixed: Vec<Option<bool>> = vec![None; n];
        for (k, &v) in subset.iter().enumerate() {
            fixed[v] = Some(pattern >> k & 1 == 1);
        }
        let prefer: Vec<bool> = rows[0].clone();
        let lits_ok = subset.iter().all(|&v| lit_ok[v][usize::from(fixed[v] == Some(true))]);
        let Some(mut witness) = lits_ok.then(|| space.solve(&fixed, &prefer)).flatten() else {
            tuples.drop_tuple(idx);
            infeasible += 1;
            continue;
        };
        let mut order: Vec<usize> = (0..n).filter(|v| fixed[*v].is_none()).collect();
        rng.shuffle(&mut order);
        for var in order {
            let gains = [tuples.gain(&fixed, var, false), tuples.gain(&fixed, var, true)];
            // Prefer the witness's value on ties: it needs no solver call.
            let best = if !lit_ok[var][0] || !lit_ok[var][1] || gains[0] == gains[1] { witness[var] } else { gains[1] > gains[0] };
            if best == witness[var] || !space.is_constrained(var) {
                fixed[var] = Some(best);
                witness[var] = best;
                continue;
            }
            fixed[var] = Some(best);
            match space.solve(&fixed, &witness) {
                Some(w) => witness = w,
                None => fixed[var] = Some(witness[var]),
            }
        }
        debug_assert!(space.is_valid(&witness));
        tuples.cover(&witness);
        push(&mut rows, witness);
    }
    Cover { rows, infeasible }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solve::tests::ebuild;

    /// Builds a t-wise array and checks it with an independent counter: every combination of
    /// `t` values some valid configuration shows must appear in a row; then compares the
    /// number of rows (the figure of merit) with `expected_rows`.
    fn check(iuse: &str, required_use: &str, t: usize, expected_rows: usize) {
        let e = ebuild(iuse, required_use, "");
        let p = crate::Profile::none();
        let s = Space::new(&e, &p);
        let cover = covering_array(&s, t, 1);
        for r in &cover.rows {
            assert!(s.is_valid(r));
        }
        let all = s.enumerate(1 << 16).unwrap();
        let n = s.vars().len();
        let t = t.min(n);
        let mut missing = Vec::new();
        for c in &all {
            for_each_subset(n, t, &mut |sub| {
                if !cover.rows.iter().any(|r| sub.iter().all(|&v| r[v] == c[v])) {
                    missing.push(sub.iter().map(|&v| format!("{}={}", s.vars()[v], c[v])).collect::<Vec<_>>().join(","));
                }
            });
        }
        assert!(missing.is_empty(), "uncovered: {missing:?}");
        eprintln!("{iuse} | {required_use} | t={t}: {} rows", cover.rows.len());
        assert_eq!(cover.rows.len(), expected_rows, "rows: {:?}", cover.rows);
        assert_eq!(s.assignment(&cover.rows[0]), s.assignment(&s.closest(s.defaults()).unwrap()));
    }

    fn for_each_subset(n: usize, t: usize, f: &mut dyn FnMut(&[usize])) {
        fn rec(start: usize, n: usize, t: usize, cur: &mut Vec<usize>, f: &mut dyn FnMut(&[usize])) {
            if cur.len() == t {
                f(cur);
                return;
            }
            for i in start..n {
                cur.push(i);
                rec(i + 1, n, t, cur, f);
                cur.pop();
            }
        }
        rec(0, n, t, &mut Vec::new(), f);
    }

    #[test]
    fn unconstrained() {
        check("a", "", 2, 2);
        check("+a b c", "", 2, 5);
        check("a b c d e f g h i j", "", 2, 8);
        check("a b c d e", "", 3, 14);
    }

    #[test]
    fn constrained() {
        check("a b c d", "^^ ( a b c )", 2, 6);
        check("a b c d e", "a? ( b ) ?? ( c d ) || ( d e )", 2, 7);
        check("py1 py2 py3 x y", "^^ ( py1 py2 py3 ) x? ( || ( py2 py3 ) )", 2, 7);
    }
}
