//! Constrained t-wise covering arrays: few valid configurations that together show every
//! combination of `t` flag values that any valid configuration can show.
//!
//! Construction (deterministic for a seed):
//! 1. seed rows: the valid configurations closest to the IUSE defaults, to all-on and to
//!    all-off (what QA expects from tatt); they are always kept;
//! 2. greedy builds add rows until every combination is covered or proven infeasible:
//!    - the first build is the plain one-candidate greedy: fix the first uncovered
//!      combination (dropping it if the solver proves it infeasible), then give every other
//!      flag, in a seeded order, the value that covers most uncovered combinations with the
//!      flags already fixed, as long as a valid completion exists (the witness with that flag
//!      flipped, else a short solver search);
//!    - when the valid space is small (at most `ENUMERATE_LIMIT` configurations), further
//!      builds pick, at each step, the valid configuration covering most uncovered
//!      combinations (ties at random);
//!    - otherwise further builds keep, at each step, the best of several such greedy rows
//!      (AETG's candidates), started at random uncovered combinations with random
//!      tie-breaks; fewer candidates the more flags there are;
//!    - each build then drops the rows whose combinations are all shown by other rows
//!      (never the seed rows); builds run within a counted work budget, and the smallest
//!      array wins (the first on ties), so the result is never larger than the first build's;
//! 3. post-optimisation (`shrink`): a row goes when every combination only it shows can be
//!    moved into another non-seed row that stays valid and loses nothing only it showed
//!    (within a counted budget, so still deterministic);
//! 4. pairwise arrays over at most `TABU_MAX_N` flags with a REQUIRED_USE then get a local
//!    search (`tabu_search`, in the manner of CASA and TCA): one row fewer, each missing pair
//!    moved into the row where it costs least, kept when every pair is shown again, until
//!    the lower bound; seeded, within a counted number of moves.
//!
//! [`covering_array_unseeded`] is the same without the seed rows (for comparisons with tools
//! that have no such rows).
//!
//! Every row is a solver witness or an enumerated configuration checked by the exact
//! evaluator, so every row is valid.

use gah_util::rng::SplitMix64;
use std::collections::HashMap;
use std::rc::Rc;

use crate::solve::{Config, Space};

/// What a covering array build produced.
#[derive(Debug, Clone)]
pub struct Cover {
    /// The configurations; the first are the seeds (default, closest to all-on, to all-off),
    /// without duplicates.
    pub rows: Vec<Config>,
    /// Combinations dropped as infeasible: the solver proved that no valid configuration
    /// shows them.
    pub infeasible: usize,
    /// Combinations left uncovered because the ebuild's time budget ran out
    /// ([`Space::out_of_time`]); 0 for a complete array.
    pub uncovered: usize,
    /// Every t-way combination of values (feasible or not) the array was asked to cover.
    pub combinations: u128,
}

/// The number of t-way value combinations over `n` binary variables: `C(n, t) * 2^t`.
pub fn combinations(n: usize, t: usize) -> u128 {
    let t = t.min(n);
    let mut c: u128 = 1;
    for k in 0..t {
        c = c * (n - k) as u128 / (k as u128 + 1);
    }
    c << t
}

/// Above this many variables, pairwise arrays keep pair bookkeeping only for the
/// constrained variables; the unconstrained ones get a direct construction (see
/// [`covering_array`]), so the cost grows with |IUSE| linearly, not quadratically.
pub const SPLIT_N: usize = 512;

/// The variables a row sets, as a bit set.
fn bit_set(row: &[bool]) -> Vec<u64> {
    let mut ones = vec![0u64; row.len().div_ceil(64)];
    for (j, &v) in row.iter().enumerate() {
        if v {
            ones[j / 64] |= 1 << (j % 64);
        }
    }
    ones
}

/// The set of t-way combinations: every `t`-subset of variables (in lexicographic order)
/// times every value pattern (bit k = value of the k-th variable of the subset).
///
/// For t = 2 the uncovered pairs are also kept as bit sets (`masks`), so that a value's gain
/// and a row's count are a few popcounts per variable instead of a walk over subsets.
#[derive(Clone)]
struct Tuples {
    t: usize,
    /// Shared, not copied, between the restarts' clones.
    subsets: Rc<Vec<Vec<usize>>>,
    /// For each variable, the subsets holding it (so `gain` looks at n^(t-1) subsets, not n^t).
    by_var: Rc<Vec<Vec<usize>>>,
    uncovered: Vec<bool>,
    left: usize,
    /// Uncovered combinations, lazily pruned of covered ones (for random picks).
    live: Vec<usize>,
    /// t = 2 only: words per variable set.
    words: usize,
    /// t = 2 only: for variable i, value a of i and value b: the variables j (bit j of
    /// `words` words at `((i * 2 + a) * 2 + b) * words`) whose pair (i = a, j = b) is uncovered.
    masks: Vec<u64>,
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
        let words = n.div_ceil(64);
        let mut masks = Vec::new();
        if t == 2 {
            masks = vec![!0u64; n * 4 * words];
            for i in 0..n {
                for ab in 0..4 {
                    let m = &mut masks[(i * 4 + ab) * words..][..words];
                    m[i / 64] &= !(1 << (i % 64));
                    if !n.is_multiple_of(64) {
                        m[words - 1] &= (1 << (n % 64)) - 1;
                    }
                }
            }
        }
        Tuples {
            t,
            subsets: Rc::new(subsets),
            by_var: Rc::new(by_var),
            uncovered: vec![true; total],
            left: total,
            live: (0..total).collect(),
            words,
            masks,
        }
    }

    fn pattern(&self, subset: &[usize], row: &[bool]) -> usize {
        subset.iter().enumerate().fold(0, |p, (k, &v)| p | (usize::from(row[v]) << k))
    }

    /// The variables and values of combination `idx`.
    fn combination(&self, idx: usize) -> impl Iterator<Item = (usize, bool)> + '_ {
        let pattern = idx & ((1 << self.t) - 1);
        self.subsets[idx >> self.t].iter().enumerate().map(move |(k, &v)| (v, pattern >> k & 1 == 1))
    }

    /// Calls `f` with the index of every combination `row` shows.
    fn for_each(&self, row: &[bool], mut f: impl FnMut(usize)) {
        for s in 0..self.subsets.len() {
            f((s << self.t) | self.pattern(&self.subsets[s], row));
        }
    }

    fn cover(&mut self, row: &[bool]) {
        for s in 0..self.subsets.len() {
            let idx = (s << self.t) | self.pattern(&self.subsets[s], row);
            self.drop_tuple(idx);
        }
    }

    /// How many uncovered combinations `row` shows.
    fn count(&self, row: &[bool]) -> usize {
        if self.t == 2 {
            return self.count_set(row, &bit_set(row));
        }
        let mut k = 0;
        self.for_each(row, |i| k += usize::from(self.uncovered[i]));
        k
    }

    /// [`Tuples::count`] for t = 2, with `ones` the row's [`bit_set`].
    #[inline(always)]
    fn count_set(&self, row: &[bool], ones: &[u64]) -> usize {
        let w = self.words;
        let mut k = 0;
        for (i, &a) in row.iter().enumerate() {
            let base = (i * 2 + usize::from(a)) * 2 * w;
            for (x, &o) in ones.iter().enumerate().take(w) {
                k += (self.masks[base + x] & !o).count_ones() + (self.masks[base + w + x] & o).count_ones();
            }
        }
        // Each pair was counted from both ends.
        k as usize / 2
    }

    fn drop_tuple(&mut self, idx: usize) {
        if self.uncovered[idx] {
            self.uncovered[idx] = false;
            self.left -= 1;
            if self.t == 2 {
                let (i, j) = (self.subsets[idx >> 2][0], self.subsets[idx >> 2][1]);
                let (a, b) = (idx & 1, idx >> 1 & 1);
                let w = self.words;
                self.masks[((i * 2 + a) * 2 + b) * w + j / 64] &= !(1 << (j % 64));
                self.masks[((j * 2 + b) * 2 + a) * w + i / 64] &= !(1 << (i % 64));
            }
        }
    }

    /// A uniformly drawn uncovered combination (`None` when none is left).
    fn random_uncovered(&mut self, rng: &mut SplitMix64) -> Option<usize> {
        while !self.live.is_empty() {
            #[allow(clippy::cast_possible_truncation)]
            let k = rng.index(self.live.len());
            if self.uncovered[self.live[k]] {
                return Some(self.live[k]);
            }
            self.live.swap_remove(k);
        }
        None
    }

    /// Uncovered combinations whose variables are all `fixed` once `var` is set to `value`,
    /// counting only those that contain `var`. `set` holds, for t = 2, the variables fixed
    /// off (`set[0]`) and on (`set[1]`) as bit sets.
    fn gain(&self, fixed: &[Option<bool>], set: &[Vec<u64>; 2], var: usize, value: bool) -> usize {
        if self.t == 2 {
            let w = self.words;
            let base = (var * 2 + usize::from(value)) * 2 * w;
            let mut k = 0;
            for (x, (&off, &on)) in set[0].iter().zip(&set[1]).enumerate().take(w) {
                k += (self.masks[base + x] & off).count_ones() + (self.masks[base + w + x] & on).count_ones();
            }
            return k as usize;
        }
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
///
/// Pairwise arrays over more than [`SPLIT_N`] variables, some unconstrained, are built in
/// two parts: an array over the constrained variables alone (this construction, on the
/// space without the others), each row taken twice, with every unconstrained flag off and
/// on (so every constrained value meets both values of every unconstrained flag), plus a
/// strength-2 binary covering array of the unconstrained flags (distinct columns of equal
/// weight greater than half: any two show all four value pairs), O(|IUSE| log |IUSE|).
pub fn covering_array(space: &Space, t: usize, seed: u64) -> Cover {
    build(space, t, seed, true)
}

/// [`covering_array`] without the three mandatory rows (closest to the defaults, to all-on,
/// to all-off): the plain array, for comparisons with tools that know no such rows. Never
/// split (see [`SPLIT_N`]).
pub fn covering_array_unseeded(space: &Space, t: usize, seed: u64) -> Cover {
    build(space, t, seed, false)
}

fn build(space: &Space, t: usize, seed: u64, mandatory: bool) -> Cover {
    let n = space.vars().len();
    let free = (0..n).filter(|&v| !space.is_constrained(v)).count();
    if mandatory && t == 2 && n > SPLIT_N && free > 0 {
        return split_cover(space, seed);
    }
    let mut rows: Vec<Config> = Vec::new();
    for target in [space.defaults().to_vec(), vec![true; n], vec![false; n]] {
        if let Some(c) = space.closest(&target) {
            if !rows.contains(&c) {
                rows.push(c);
            }
        }
    }
    let t = t.min(n);
    let total = combinations(n, t);
    if rows.is_empty() {
        // No valid configuration at all (or the budget ran out before finding one).
        return Cover { rows, infeasible: 0, uncovered: 0, combinations: total };
    }
    if t == 0 {
        return Cover { rows, infeasible: 0, uncovered: 0, combinations: total };
    }
    // Literals no valid configuration has: every combination holding one is dropped without
    // a solver call (flags tied to another architecture, say).
    let lit_ok: Vec<[bool; 2]> = (0..n)
        .map(|v| {
            if !space.is_constrained(v) || space.out_of_time() {
                // Past the deadline nothing more is asked: both values count as possible.
                return [true, true];
            }
            [false, true].map(|val| {
                rows.iter().any(|r| r[v] == val) || {
                    let mut fixed = vec![None; n];
                    fixed[v] = Some(val);
                    space.solve(&fixed, &rows[0]).is_some()
                }
            })
        })
        .collect();
    let prefer = rows[0].clone();
    if !mandatory {
        rows.clear();
    }
    let mut base = Tuples::new(n, t);
    for r in &rows {
        base.cover(r);
    }
    let mut b =
        Builder { space, n, lit_ok, prefer, dead: vec![false; base.uncovered.len()], witnesses: HashMap::new(), infeasible: 0, work: 0 };
    let mut rng = SplitMix64(seed);
    // Small valid spaces: every greedy step takes the best valid configuration outright.
    let all = space.enumerate(ENUMERATE_LIMIT).map(|v| v.into_iter().filter(|c| space.is_valid(c)).collect::<Vec<_>>());
    let candidates = (CANDIDATES_PER_FLAG / n).clamp(1, MAX_CANDIDATES);
    // The smallest complete build wins; one the deadline cut short only if nothing better.
    let mut best: Option<(usize, Vec<Config>)> = None;
    for restart in 0..MAX_RESTARTS {
        if (restart > 1 && b.work >= WORK_BUDGET) || (restart > 0 && space.out_of_time()) {
            break;
        }
        let mut tuples = base.clone();
        // The first build is the plain one-candidate greedy (cheap; the others must beat it).
        let mut extra = match &all {
            _ if restart == 0 => b.greedy(&mut tuples, 1, &mut rng),
            Some(all) => b.greedy_exact(&mut tuples, all, &mut rng),
            None => b.greedy(&mut tuples, candidates, &mut rng),
        };
        prune(&rows, &mut extra, &base);
        // A build the deadline cut short leaves combinations uncovered (not infeasible).
        let left = if space.out_of_time() { tuples.left } else { 0 };
        if best.as_ref().is_none_or(|(l, b)| (left, extra.len()) < (*l, b.len())) {
            best = Some((left, extra));
        }
    }
    let (uncovered, mut extra) = best.unwrap_or_default();
    if uncovered == 0 && !space.out_of_time() {
        shrink(space, &rows, &mut extra, &base);
        // Unconstrained spaces are left alone: the greedy is near the known optima there, and
        // they are most ebuilds, so searching them would cost the run its time goal.
        if t == 2 && n <= TABU_MAX_N && !space.ebuild().required_use.is_empty() {
            tabu_search(space, &rows, &mut extra, seed);
        }
    }
    rows.extend(extra);
    Cover { rows, infeasible: b.infeasible, uncovered, combinations: total }
}

/// Pairwise arrays over at most this many flags get searched by [`tabu_search`].
const TABU_MAX_N: usize = 24;
/// Candidate moves [`tabu_search`] may weigh per array (counted, so deterministic).
const TABU_WORK: u64 = 10_000;
/// Candidate moves per attempt at one row fewer.
const TABU_WORK_PER_TRY: u64 = 500;
/// Rows tried for removal, fewest combinations only they show first, before a size is given up.
const TABU_DROPS: usize = 10;
/// TCA's tabu tenure: a flag a move set in a row may be changed again only this many moves
/// later (so not during the next `TABU_TENURE - 1`).
const TABU_TENURE: u64 = 4;

/// Post-optimisation, a local search in the manner of CASA and TCA over a fixed number of
/// rows: drops a non-seed row (fewest combinations only it shows first), then repeatedly
/// takes a missing pair at random and puts it into the non-seed row where doing so keeps
/// the row valid and uncovers fewest other pairs (ties at random; a flag just set in a row
/// is not set back until [`TABU_TENURE`] moves later, so the search does not cycle). A success
/// (every pair the array showed before is shown again) keeps the smaller array and tries one
/// row fewer; a failure tries the next row to drop, up to [`TABU_DROPS`]. It stops at the
/// lower bound (the most value pairs any two flags show) or when [`TABU_WORK`] candidate
/// moves have been weighed; seeded by `seed`. Seed rows never change; the result is as
/// complete as the input.
fn tabu_search(space: &Space, seeds: &[Config], extra: &mut Vec<Config>, seed: u64) {
    let n = space.vars().len();
    let search = PairSearch::new(n, seeds, extra);
    let lower_bound = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .map(|(i, j)| (0..4).filter(|&ab| search.need[search.pair(i, j, ab & 2 != 0, ab & 1 != 0)]).count())
        .max()
        .unwrap_or(1);
    let mut rng = SplitMix64(seed ^ 0x0a11_ea1e);
    let mut work_left = TABU_WORK;
    'smaller: while !extra.is_empty() && seeds.len() + extra.len() > lower_bound {
        let counts = search.counts(seeds, extra);
        let mut order: Vec<usize> = (0..extra.len()).collect();
        order.sort_by_key(|&k| (search.unique(&extra[k], &counts), k));
        for &drop in order.iter().take(TABU_DROPS) {
            if work_left == 0 {
                return;
            }
            let mut rows = extra.clone();
            rows.remove(drop);
            let budget = TABU_WORK_PER_TRY.min(work_left);
            let (done, used) = search.complete(space, seeds, &mut rows, budget, &mut rng);
            work_left = work_left.saturating_sub(used);
            if done {
                *extra = rows;
                continue 'smaller;
            }
        }
        return;
    }
}

/// A candidate move of [`PairSearch::complete`]: row `row` becomes `moved`, which changes
/// the pairs it shows from each `.0` to its `.1`.
struct Move {
    row: usize,
    moved: Config,
    changes: Vec<(usize, usize)>,
}

/// The state of [`tabu_search`]'s search: which value pairs must be shown, and how often each is.
struct PairSearch {
    n: usize,
    /// Per pair index ([`PairSearch::pair`]): shown by the array the search started from.
    need: Vec<bool>,
}

impl PairSearch {
    fn new(n: usize, seeds: &[Config], extra: &[Config]) -> PairSearch {
        let mut need = vec![false; n * n * 4];
        let search = PairSearch { n, need: Vec::new() };
        for r in seeds.iter().chain(extra) {
            search.for_each_pair(r, |c| need[c] = true);
        }
        PairSearch { need, ..search }
    }

    /// The index of flags `i < j` showing values `a`, `b`.
    fn pair(&self, i: usize, j: usize, a: bool, b: bool) -> usize {
        ((i * self.n + j) << 2) | (usize::from(a) << 1) | usize::from(b)
    }

    fn for_each_pair(&self, r: &[bool], mut f: impl FnMut(usize)) {
        for i in 0..self.n {
            for j in i + 1..self.n {
                f(self.pair(i, j, r[i], r[j]));
            }
        }
    }

    /// How many rows show each pair.
    fn counts(&self, seeds: &[Config], rows: &[Config]) -> Vec<u32> {
        let mut count = vec![0u32; self.n * self.n * 4];
        for r in seeds.iter().chain(rows) {
            self.for_each_pair(r, |c| count[c] += 1);
        }
        count
    }

    /// The pairs only `r` shows.
    fn unique(&self, r: &[bool], count: &[u32]) -> usize {
        let mut u = 0;
        self.for_each_pair(r, |c| u += usize::from(count[c] == 1));
        u
    }

    /// Changes non-seed `rows` until they, with `seeds`, show every needed pair again, weighing
    /// at most `budget` candidate moves. Returns whether it succeeded and the moves weighed.
    fn complete(&self, space: &Space, seeds: &[Config], rows: &mut [Config], budget: u64, rng: &mut SplitMix64) -> (bool, u64) {
        let n = self.n;
        let mut count = self.counts(seeds, rows);
        let mut missing_list: Vec<usize> = (0..count.len()).filter(|&c| self.need[c] && count[c] == 0).collect();
        let mut missing = missing_list.len();
        if rows.is_empty() {
            return (missing == 0, 1);
        }
        // The move number until which flag `v` of row `q` may not be set back: tabu[q * n + v].
        let mut tabu = vec![0u64; rows.len() * n];
        let mut used = 0u64;
        let mut step = 0u64;
        let mut best: Vec<Move> = Vec::new();
        while missing > 0 && used < budget {
            step += 1;
            // A missing pair, drawn from a lazily pruned list.
            let c = loop {
                let k = rng.index(missing_list.len());
                if count[missing_list[k]] == 0 {
                    break missing_list[k];
                }
                missing_list.swap_remove(k);
            };
            let (ij, a, b) = (c >> 2, c >> 1 & 1 == 1, c & 1 == 1);
            let (i, j) = (ij / n, ij % n);
            // Every row it could go into, by pairs lost minus pairs won; the best valid one moves.
            let mut best_delta = i64::MAX;
            best.clear();
            for (q, old) in rows.iter().enumerate() {
                used += 1;
                if (old[i] != a && tabu[q * n + i] > step) || (old[j] != b && tabu[q * n + j] > step) {
                    continue;
                }
                let mut moved = old.clone();
                moved[i] = a;
                moved[j] = b;
                let (mut lost, mut won) = (0i64, 0i64);
                let mut changes = Vec::with_capacity(2 * n);
                for v in [i, j] {
                    if old[v] == moved[v] {
                        continue;
                    }
                    for w in 0..n {
                        // The pair (i, j) itself is counted once, from i.
                        if w == v || (v == j && w == i && old[i] != moved[i]) {
                            continue;
                        }
                        let (x, y) = if v < w { (v, w) } else { (w, v) };
                        let before = self.pair(x, y, old[x], old[y]);
                        let after = self.pair(x, y, moved[x], moved[y]);
                        lost += i64::from(self.need[before] && count[before] == 1);
                        won += i64::from(self.need[after] && count[after] == 0);
                        changes.push((before, after));
                    }
                }
                let delta = lost - won;
                if delta > best_delta || !space.is_valid(&moved) {
                    continue;
                }
                if delta < best_delta {
                    best_delta = delta;
                    best.clear();
                }
                best.push(Move { row: q, moved, changes });
            }
            if best.is_empty() {
                continue;
            }
            let Move { row: q, moved, changes } = best.swap_remove(rng.index(best.len()));
            for (before, after) in changes {
                count[before] -= 1;
                if self.need[before] && count[before] == 0 {
                    missing += 1;
                    missing_list.push(before);
                }
                if self.need[after] && count[after] == 0 {
                    missing -= 1;
                }
                count[after] += 1;
            }
            for v in [i, j] {
                if rows[q][v] != moved[v] {
                    tabu[q * n + v] = step + TABU_TENURE;
                }
            }
            rows[q] = moved;
        }
        (missing == 0, used)
    }
}

/// Work [`shrink`] may spend per array, in combinations visited (counted, not timed, so the
/// result stays deterministic).
const SHRINK_BUDGET: u64 = 4_000_000;

/// Post-optimisation: removes rows of `extra` whose combinations can all be moved into other
/// rows. For a row, each combination only it shows is re-homed in another non-seed row by
/// setting that row's flags of the combination, when the changed row is still valid and
/// loses no combination that nobody else shows; if every one finds a home the row goes.
/// Rows are tried fewest-unique-combinations first; seed rows never change.
fn shrink(space: &Space, seeds: &[Config], extra: &mut Vec<Config>, shape: &Tuples) {
    let mut work = 0u64;
    let mut count = vec![0u32; shape.uncovered.len()];
    for r in seeds.iter().chain(extra.iter()) {
        shape.for_each(r, |i| count[i] += 1);
    }
    let per_row = shape.subsets.len() as u64;
    'rows: loop {
        // Candidate rows by how many combinations only they show.
        let mut order: Vec<(usize, usize)> = extra
            .iter()
            .enumerate()
            .map(|(k, r)| {
                let mut u = 0;
                shape.for_each(r, |i| u += usize::from(count[i] == 1));
                (u, k)
            })
            .collect();
        work += per_row * extra.len() as u64;
        order.sort_unstable();
        for &(_, k) in &order {
            if work > SHRINK_BUDGET {
                return;
            }
            let mut trial_rows = extra.clone();
            let mut trial = count.clone();
            // Take row k out; its sole combinations need a new home.
            shape.for_each(&trial_rows[k], |i| trial[i] -= 1);
            let mut orphans = Vec::new();
            shape.for_each(&trial_rows[k], |i| {
                if trial[i] == 0 {
                    orphans.push(i);
                }
            });
            work += per_row;
            let mut homed_all = true;
            for &c in &orphans {
                if trial[c] > 0 {
                    continue; // an earlier move covered it too
                }
                let mut homed = false;
                for q in (0..trial_rows.len()).filter(|&q| q != k) {
                    let mut moved = trial_rows[q].clone();
                    for (v, val) in shape.combination(c) {
                        moved[v] = val;
                    }
                    work += 2 * per_row;
                    if !space.is_valid(&moved) {
                        continue;
                    }
                    // The row may lose only combinations someone else still shows.
                    let mut loses = false;
                    let old = &trial_rows[q];
                    let mut lost = Vec::new();
                    for sub in 0..shape.subsets.len() {
                        let a = (sub << shape.t) | shape.pattern(&shape.subsets[sub], old);
                        let b = (sub << shape.t) | shape.pattern(&shape.subsets[sub], &moved);
                        if a != b {
                            if trial[a] == 1 {
                                loses = true;
                                break;
                            }
                            lost.push((a, b));
                        }
                    }
                    if loses {
                        continue;
                    }
                    for (a, b) in lost {
                        trial[a] -= 1;
                        trial[b] += 1;
                    }
                    trial_rows[q] = moved;
                    homed = true;
                    break;
                }
                if !homed {
                    homed_all = false;
                    break;
                }
            }
            if homed_all {
                trial_rows.remove(k);
                *extra = trial_rows;
                count = trial;
                continue 'rows;
            }
        }
        return;
    }
}

/// [`covering_array`] for t = 2 over many variables: see its docs.
fn split_cover(space: &Space, seed: u64) -> Cover {
    let n = space.vars().len();
    let ebuild = space.ebuild();
    let constrained: std::collections::HashSet<&str> =
        (0..n).filter(|&v| space.is_constrained(v)).map(|v| space.vars()[v].as_str()).collect();
    let mut reduced = ebuild.clone();
    reduced.iuse.retain(|f| f.name == "test" || constrained.contains(f.name.as_str()));
    let mut sub = Space::new(&reduced, space.profile());
    if let Some(d) = space.deadline() {
        sub.set_deadline(d);
    }
    let inner = covering_array(&sub, 2, seed);
    let index: HashMap<&str, usize> = space.vars().iter().enumerate().map(|(i, f)| (f.as_str(), i)).collect();
    let map: Vec<usize> = sub.vars().iter().map(|f| index[f.as_str()]).collect();
    let free: Vec<usize> = (0..n).filter(|&v| !space.is_constrained(v)).collect();
    let lift = |r: &Config, free_value: Option<bool>| -> Config {
        let mut c = space.defaults().to_vec();
        for (k, &v) in map.iter().enumerate() {
            c[v] = r[k];
        }
        if let Some(x) = free_value {
            for &v in &free {
                c[v] = x;
            }
        }
        c
    };
    let mut rows: Vec<Config> = Vec::new();
    let push = |c: Config, rows: &mut Vec<Config>| {
        if !rows.contains(&c) {
            rows.push(c);
        }
    };
    if let Some(r0) = inner.rows.first() {
        // The seed first (the default configuration as the profile and IUSE give it).
        push(lift(r0, None), &mut rows);
        for r in &inner.rows {
            push(lift(r, Some(false)), &mut rows);
            push(lift(r, Some(true)), &mut rows);
        }
        for pattern in free_pairs(free.len()) {
            let mut c = lift(r0, None);
            for (k, &v) in free.iter().enumerate() {
                c[v] = pattern[k];
            }
            push(c, &mut rows);
        }
    }
    Cover { rows, infeasible: inner.infeasible, uncovered: inner.uncovered, combinations: combinations(n, 2) }
}

/// A strength-2 binary covering array of `k` columns, as rows: row 0 all off, the others
/// give each column a distinct pattern of `w` ones over `m` rows, `w > m / 2`. Two such
/// columns differ (so both `(on, off)` and `(off, on)` appear), overlap (`(on, on)`), and
/// share row 0 (`(off, off)`).
fn free_pairs(k: usize) -> Vec<Vec<bool>> {
    let binom = |m: u32, w: u32| (0..w).fold(1u128, |c, i| c * u128::from(m - i) / u128::from(i + 1));
    let mut m = 2u32;
    while binom(m, m / 2 + 1) < k as u128 {
        m += 1;
    }
    let w = m / 2 + 1;
    let mut rows = vec![vec![false; k]; m as usize + 1];
    // Gosper's hack: the next larger integer with the same number of ones.
    let mut v: u64 = (1u64 << w) - 1;
    for col in 0..k {
        for (j, row) in rows.iter_mut().skip(1).enumerate() {
            row[col] = v >> j & 1 == 1;
        }
        let c = v & v.wrapping_neg();
        let r = v + c;
        v = (((r ^ v) >> 2) / c) | r;
    }
    rows
}

/// Valid spaces up to this size are enumerated, and each greedy step picks the best of them.
const ENUMERATE_LIMIT: usize = 256;
/// Candidate rows per greedy step: this divided by the number of flags, within
/// `1..=MAX_CANDIDATES` (a candidate costs about n^2 / 64 word operations plus solver calls).
const CANDIDATES_PER_FLAG: usize = 300;
const MAX_CANDIDATES: usize = 30;
/// Whole-array restarts (different random choices; the smallest array wins) run while the
/// builds so far cost less than `WORK_BUDGET` units (roughly one word operation or loop
/// step each), at most `MAX_RESTARTS`. Counted, not timed, so the result is deterministic.
const WORK_BUDGET: u64 = 30_000;
const MAX_RESTARTS: usize = 30;

/// Removes the rows of `extra` whose combinations are all covered by other rows (the seed
/// rows `seeds` are never removed), latest rows first.
fn prune(seeds: &[Config], extra: &mut Vec<Config>, shape: &Tuples) {
    let mut count = vec![0u32; shape.uncovered.len()];
    for r in seeds.iter().chain(extra.iter()) {
        shape.for_each(r, |i| count[i] += 1);
    }
    let mut k = extra.len();
    while k > 0 {
        k -= 1;
        let mut redundant = true;
        shape.for_each(&extra[k], |i| redundant &= count[i] > 1);
        if redundant {
            shape.for_each(&extra[k], |i| count[i] -= 1);
            extra.remove(k);
        }
    }
}

/// State shared by the greedy builds of one array.
struct Builder<'s, 'e> {
    space: &'s Space<'e>,
    n: usize,
    lit_ok: Vec<[bool; 2]>,
    /// Values the solver prefers where nothing else decides: the default-closest row.
    prefer: Config,
    /// Combinations proven infeasible (by any build).
    dead: Vec<bool>,
    /// The solver's witness for each combination asked so far (candidates and restarts
    /// start from the same combinations again and again).
    witnesses: HashMap<usize, Config>,
    infeasible: usize,
    /// Work done so far, in rough word operations (see [`WORK_BUDGET`]).
    work: u64,
}

impl Builder<'_, '_> {
    /// Adds rows until `tuples` has nothing uncovered, each the configuration of `all` (every
    /// valid configuration) covering most uncovered combinations, ties drawn at random.
    /// Combinations no configuration covers are infeasible.
    fn greedy_exact(&mut self, tuples: &mut Tuples, all: &[Config], rng: &mut SplitMix64) -> Vec<Config> {
        // The scoring loop is popcounts; the default x86-64 target lacks the instruction.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU has POPCNT, checked just above.
            return unsafe { self.greedy_exact_popcnt(tuples, all, rng) };
        }
        self.greedy_exact_body(tuples, all, rng)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    fn greedy_exact_popcnt(&mut self, tuples: &mut Tuples, all: &[Config], rng: &mut SplitMix64) -> Vec<Config> {
        self.greedy_exact_body(tuples, all, rng)
    }

    #[inline(always)]
    fn greedy_exact_body(&mut self, tuples: &mut Tuples, all: &[Config], rng: &mut SplitMix64) -> Vec<Config> {
        let sets: Vec<Vec<u64>> = all.iter().map(|c| bit_set(c)).collect();
        let mut out = Vec::new();
        let mut ties = Vec::new();
        while tuples.left > 0 && !self.space.out_of_time() {
            let mut best = 0;
            ties.clear();
            for (k, c) in all.iter().enumerate() {
                let score = if tuples.t == 2 { tuples.count_set(c, &sets[k]) } else { tuples.count(c) };
                if score > best {
                    best = score;
                    ties.clear();
                }
                if score == best && score > 0 {
                    ties.push(k);
                }
            }
            self.work += (all.len() * self.n * tuples.words) as u64;
            if best == 0 {
                // The rest is infeasible: no valid configuration shows it.
                self.infeasible = tuples.left;
                break;
            }
            #[allow(clippy::cast_possible_truncation)]
            let row = all[ties[rng.index(ties.len())]].clone();
            tuples.cover(&row);
            out.push(row);
        }
        out
    }

    /// Adds rows until `tuples` has nothing uncovered; each row is the best of `candidates`
    /// randomized constrained greedy rows (the first one starts at the first uncovered
    /// combination and breaks ties towards the solver's witness, the others start at random
    /// uncovered combinations and break ties at random).
    fn greedy(&mut self, tuples: &mut Tuples, candidates: usize, rng: &mut SplitMix64) -> Vec<Config> {
        for (i, d) in self.dead.iter().enumerate() {
            if *d {
                tuples.drop_tuple(i);
            }
        }
        let mut out = Vec::new();
        let mut first = 0;
        while tuples.left > 0 && !self.space.out_of_time() {
            let mut best: Option<(usize, Config)> = None;
            for c in 0..candidates {
                if tuples.left == 0 {
                    break;
                }
                let idx = if c == 0 {
                    while !tuples.uncovered[first] {
                        first += 1;
                    }
                    first
                } else {
                    tuples.random_uncovered(rng).expect("tuples left")
                };
                let Some(row) = self.candidate(tuples, idx, c > 0, rng) else {
                    self.dead[idx] = true;
                    self.infeasible += 1;
                    tuples.drop_tuple(idx);
                    continue;
                };
                let score = tuples.count(&row);
                self.work += (self.n * (16 + 6 * tuples.words)) as u64;
                if best.as_ref().is_none_or(|(s, _)| score > *s) {
                    best = Some((score, row));
                }
            }
            if let Some((_, row)) = best {
                debug_assert!(self.space.is_valid(&row));
                tuples.cover(&row);
                out.push(row);
            }
        }
        out
    }

    /// A valid row holding combination `idx`, the other flags set greedily (in a random
    /// order) to the value covering most uncovered combinations with the flags already set;
    /// `None` when the combination is infeasible.
    fn candidate(&mut self, tuples: &Tuples, idx: usize, random_ties: bool, rng: &mut SplitMix64) -> Option<Config> {
        let (n, space) = (self.n, self.space);
        let mut fixed: Vec<Option<bool>> = vec![None; n];
        let words = n.div_ceil(64);
        let mut set = [vec![0u64; words], vec![0u64; words]];
        for (v, val) in tuples.combination(idx) {
            if !self.lit_ok[v][usize::from(val)] {
                return None;
            }
            fixed[v] = Some(val);
        }
        let mut witness = match self.witnesses.get(&idx) {
            Some(w) => w.clone(),
            None => {
                let w = space.solve(&fixed, &self.prefer)?;
                self.witnesses.insert(idx, w.clone());
                w
            }
        };
        for (v, val) in tuples.combination(idx) {
            set[usize::from(val)][v / 64] |= 1 << (v % 64);
        }
        let mut order: Vec<usize> = (0..n).filter(|v| fixed[*v].is_none()).collect();
        rng.shuffle(&mut order);
        for var in order {
            let ok = self.lit_ok[var];
            let gains = [tuples.gain(&fixed, &set, var, false), tuples.gain(&fixed, &set, var, true)];
            let best = if !ok[0] || !ok[1] {
                witness[var]
            } else if gains[0] != gains[1] {
                gains[1] > gains[0]
            } else if random_ties {
                rng.next_u64() & 1 == 1
            } else {
                witness[var]
            };
            if best != witness[var] && space.is_constrained(var) {
                // Cheap first: the witness with this one flag changed; else a short search.
                witness[var] = best;
                if !space.is_valid(&witness) {
                    witness[var] = !best;
                    fixed[var] = Some(best);
                    self.work += 50 * n as u64;
                    if let Some(w) = space.solve_within(&fixed, &witness, 200) {
                        witness = w;
                    }
                }
            }
            witness[var] = if space.is_constrained(var) { witness[var] } else { best };
            fixed[var] = Some(witness[var]);
            set[usize::from(witness[var])][var / 64] |= 1 << (var % 64);
        }
        Some(witness)
    }
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
        check("a b c d e", "", 3, 10);
    }

    #[test]
    fn free_pairs_cover_every_pair() {
        for k in [1, 2, 3, 5, 17, 100] {
            let rows = free_pairs(k);
            for a in 0..k {
                for b in a + 1..k {
                    for (x, y) in [(false, false), (false, true), (true, false), (true, true)] {
                        assert!(rows.iter().any(|r| r[a] == x && r[b] == y), "k={k} ({a},{b})=({x},{y})");
                    }
                }
            }
        }
        // Logarithmic: 10,000 columns in 17 rows.
        assert_eq!(free_pairs(10_000).len(), 17);
    }

    #[test]
    fn many_flags_are_split_and_still_cover_every_pair() {
        // 600 flags, 3 of them constrained: every pair covered, few rows, no n^2 row scans.
        let names: Vec<String> = (0..600).map(|i| format!("f{i}")).collect();
        let e = ebuild(&names.join(" "), "^^ ( f0 f1 ) f2? ( f0 )", "");
        let p = crate::Profile::none();
        let s = Space::new(&e, &p);
        let cover = covering_array(&s, 2, 1);
        assert!(cover.rows.iter().all(|r| s.is_valid(r)));
        assert_eq!(cover.uncovered, 0);
        let lits = |v: usize| -> Vec<bool> { [false, true].into_iter().filter(|&x| cover.rows.iter().any(|r| r[v] == x)).collect() };
        for a in 0..600 {
            for b in a + 1..600 {
                for x in lits(a) {
                    for y in lits(b) {
                        let feasible = !(a < 2 && b < 2 && x == y) && !(a == 1 && b == 2 && x && y) && !(a == 0 && b == 2 && !x && y);
                        let shown = cover.rows.iter().any(|r| r[a] == x && r[b] == y);
                        assert_eq!(shown, feasible, "({a}={x}, {b}={y})");
                    }
                }
            }
        }
        assert!(cover.rows.len() < 30, "{} rows", cover.rows.len());
    }

    #[test]
    fn plain_arrays_cover_every_feasible_pair_without_the_mandatory_rows() {
        for (iuse, ru, rows) in
            [("a b c d", "", 5), ("a b c d", "^^ ( a b c )", 6), ("py1 py2 py3 x y", "^^ ( py1 py2 py3 ) x? ( || ( py2 py3 ) )", 6)]
                .into_iter()
                // A REQUIRED_USE that forbids nothing (so the local search runs) over 10 and 15
                // flags: the optimal binary pairwise arrays have 6 and 7 rows (Kleitman-Spencer,
                // Katona: the least N with C(N-1, ceil(N/2)) >= flags).
                .chain([("a b c d e f g h i j", "a? ( a )", 6), ("a b c d e f g h i j k l m n o", "a? ( a )", 7)])
        {
            let e = ebuild(iuse, ru, "");
            let p = crate::Profile::none();
            let s = Space::new(&e, &p);
            let cover = covering_array_unseeded(&s, 2, 1);
            assert!(cover.rows.iter().all(|r| s.is_valid(r)));
            let n = s.vars().len();
            for c in s.enumerate(1 << 16).unwrap() {
                for_each_subset(n, 2, &mut |sub| {
                    assert!(cover.rows.iter().any(|r| sub.iter().all(|&v| r[v] == c[v])), "{iuse} | {ru}: {sub:?}")
                });
            }
            assert_eq!(cover.rows.len(), rows, "{iuse} | {ru}");
        }
    }

    #[test]
    fn arrays_are_deterministic_for_a_seed() {
        let e = ebuild("a b c d e f g h", "^^ ( a b c ) d? ( || ( e f ) ) g? ( !h )", "");
        let p = crate::Profile::none();
        let s = Space::new(&e, &p);
        for seed in [0, 1, 7] {
            assert_eq!(covering_array(&s, 2, seed).rows, covering_array(&s, 2, seed).rows);
            assert_eq!(covering_array_unseeded(&s, 2, seed).rows, covering_array_unseeded(&s, 2, seed).rows);
        }
    }

    #[test]
    fn constrained() {
        check("a b c d", "^^ ( a b c )", 2, 6);
        check("a b c d e", "a? ( b ) ?? ( c d ) || ( d e )", 2, 6);
        check("py1 py2 py3 x y", "^^ ( py1 py2 py3 ) x? ( || ( py2 py3 ) )", 2, 6);
    }
}
