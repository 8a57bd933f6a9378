//! The candidate causes: every combination of at most `k` values of the failing
//! configuration (flag values and, as one more dimension, its compiler) that the outcomes
//! seen so far do not rule out, each with a prior weight.
//!
//! A cause is a conjunction: a configuration fails exactly when it shows every value of the
//! cause. So a passing configuration rules out every combination it shows, and a failing one
//! every combination it does not show. A dimension is named by its index: the flags in
//! [`gah_ebuild::Space::vars`] order, then the compiler.
//!
//! The prior is uniform over the size of the cause (0 to `k`), then uniform among the
//! combinations of that size: small causes are not drowned by the many large ones.

/// The largest cause the localiser looks for (flag values plus the compiler).
pub const MAX_SIZE: usize = 4;

/// Most candidate combinations enumerated at the start; above it the largest size is lowered.
pub(crate) const LIMIT: u128 = 1_500_000;

/// One candidate cause: the dimensions on which a configuration must agree with the failing
/// one for it to fail.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hyp {
    dims: [u32; MAX_SIZE],
    len: u8,
    pub(crate) weight: f64,
}

impl Hyp {
    /// The dimensions, in increasing order.
    pub(crate) fn dims(&self) -> &[u32] {
        &self.dims[..usize::from(self.len)]
    }

    /// True when a configuration agreeing with the failing one where `agree` says shows this
    /// combination (and so, were this the cause, fails).
    pub(crate) fn within(&self, agree: &[bool]) -> bool {
        self.dims().iter().all(|&d| agree[d as usize])
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub(crate) fn contains(&self, d: u32) -> bool {
        self.dims().contains(&d)
    }
}

/// `C(m, s)`, saturating.
pub(crate) fn choose(m: usize, s: usize) -> u128 {
    if s > m {
        return 0;
    }
    let mut c: u128 = 1;
    for i in 0..s {
        c = c.saturating_mul((m - i) as u128) / (i as u128 + 1);
    }
    c
}

/// How many combinations of at most `k` out of `m` values there are.
pub(crate) fn count(m: usize, k: usize) -> u128 {
    (0..=k).map(|s| choose(m, s)).fold(0u128, u128::saturating_add)
}

/// Every combination of at most `k` of `literals` (dimension indices) that no passing
/// configuration (its agreement vector in `passes`) shows.
pub(crate) fn enumerate(literals: &[u32], k: usize, passes: &[&[bool]]) -> Vec<Hyp> {
    let m = literals.len();
    let k = k.min(MAX_SIZE).min(m);
    let mut out = Vec::new();
    let mut stack = [0u32; MAX_SIZE];
    for size in 0..=k {
        #[allow(clippy::cast_precision_loss)]
        let weight = 1.0 / ((k + 1) as f64 * choose(m, size) as f64);
        combos(literals, size, 0, &mut stack, 0, &mut |dims| {
            let mut h = Hyp { dims: [0; MAX_SIZE], len: 0, weight };
            h.dims[..dims.len()].copy_from_slice(dims);
            h.len = u8::try_from(dims.len()).expect("at most MAX_SIZE");
            if !passes.iter().any(|p| h.within(p)) {
                out.push(h);
            }
        });
    }
    out
}

fn combos(literals: &[u32], size: usize, from: usize, stack: &mut [u32; MAX_SIZE], depth: usize, emit: &mut dyn FnMut(&[u32])) {
    if depth == size {
        emit(&stack[..size]);
        return;
    }
    for i in from..=literals.len() - (size - depth) {
        stack[depth] = literals[i];
        combos(literals, size, i + 1, stack, depth + 1, emit);
    }
}

/// The binary entropy of splitting `total` weight into `fail` and the rest: how much a run
/// predicted to fail with weight `fail` is expected to tell.
pub(crate) fn entropy(fail: f64, total: f64) -> f64 {
    if total <= 0.0 {
        return 0.0;
    }
    let p = (fail / total).clamp(0.0, 1.0);
    let h = |x: f64| if x <= 1e-12 { 0.0 } else { -x * x.log2() };
    h(p) + h(1.0 - p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enumeration_counts_and_filters() {
        let lits = [0, 1, 2, 3];
        assert_eq!(enumerate(&lits, 2, &[]).len() as u128, count(4, 2));
        // A pass showing dims 0 and 1 rules out {}, {0}, {1}, {0,1}.
        let pass = [true, true, false, false];
        let hs = enumerate(&lits, 2, &[&pass]);
        assert_eq!(hs.len(), 11 - 4);
        assert!(hs.iter().all(|h| !h.within(&pass)));
    }

    #[test]
    fn entropy_is_one_bit_at_half() {
        assert!((entropy(1.0, 2.0) - 1.0).abs() < 1e-9);
        assert_eq!(entropy(0.0, 2.0), 0.0);
        assert_eq!(entropy(2.0, 2.0), 0.0);
    }
}
