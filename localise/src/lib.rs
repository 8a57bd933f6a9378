//! `gah-localise`: after a failure, the smallest combination of flag values (and compiler)
//! that makes an ebuild fail, found with few follow-up builds, every one valid.
//!
//! A [`Localiser`] is a pure, deterministic state machine: no IO, no database, no processes.
//! It is given the ebuild's configuration [`Space`], the failing configuration and its
//! status, the outcomes already known for the same ebuild (the covering array's results) and
//! the compilers available. [`Localiser::next`] proposes the next configuration to build
//! ([`Step::Run`]) or gives the [`Conclusion`] ([`Step::Done`]); [`Localiser::record`] feeds
//! an outcome back. The same inputs and outcomes give the same proposals, so a caller that
//! stores the evidence can rebuild the state by replaying it.
//!
//! The conclusion is the minimal failure-inducing [`Cause`] (`USE="jemalloc" (clang only)`,
//! `USE="-static-libs threads"`) with its [`Evidence`], or [`Conclusion::Flaky`] when the
//! failing configuration passes when run again, or [`Conclusion::Inconclusive`] with the
//! reason when the outcomes contradict every small cause or the valid configurations cannot
//! tell two causes apart.
//!
//! # Method
//! 1. **Reproduce.** The failing configuration runs again first; if it passes, the failure is
//!    flaky and is not localised.
//! 2. **Candidates from what is known** (combinatorial fault localisation, as comFIL and BEN
//!    do): a cause is a combination of at most [`MAX_SIZE`] values of the failing
//!    configuration, the compiler counting as one more dimension. Every combination shown by
//!    a passing configuration is ruled out; every failing configuration with the same status
//!    must show the cause. With a pairwise covering array behind it this leaves few
//!    candidates, each with a prior weight (uniform over the cause's size).
//! 3. **Adaptive follow-ups.** Each step builds candidate configurations with the REQUIRED_USE
//!    solver (the values under test fixed, the rest as close as the solver can get to the
//!    failing configuration, its complement, or the nearest passing one; ddmin's "keep this
//!    subset, change the rest" and one-value-flipped neighbours of the leading candidates,
//!    plus seeded random splits), drops those already run, and proposes the one whose
//!    predicted outcome splits the candidates' weight most evenly (most expected
//!    information). When no candidate configuration splits them, the two leading causes are
//!    separated directly (a valid configuration showing one and not the other); when no
//!    valid configuration can, REQUIRED_USE makes them the same cause and the smaller is kept
//!    (this is the case "the obvious neighbour is invalid").
//! 4. **Conclude** when one candidate is left and the configuration that keeps it and changes
//!    everything else (as far as REQUIRED_USE allows) has failed too: it fails wherever it
//!    was shown, and each of its values is needed (a configuration without that value passed). If the
//!    known failing rows contradict every candidate (two different causes), they stop being
//!    binding and the search restarts from the failing configuration and the follow-ups
//!    alone; if those contradict it too, the result is inconclusive.
//!
//! ```
//! use gah_core::job::Compiler;
//! use gah_core::outcome::Status;
//! use gah_ebuild::{md5cache::parse_entry, Profile, Space};
//! use gah_localise::{Conclusion, Localiser, Probe, Settings, Step};
//!
//! let text = "EAPI=8\nIUSE=a b c d\nREQUIRED_USE=a? ( b )\nSLOT=0\n_md5_=0\n";
//! let ebuild = parse_entry("cat/pkg-1", text, &mut Vec::new()).unwrap();
//! let profile = Profile::none();
//! let space = Space::new(&ebuild, &profile);
//! // It fails whenever `b` is on under clang; all four flags on failed.
//! let fails = |p: &Probe| p.config[1] && p.compiler == Compiler::Clang;
//! let failing = Probe { config: vec![true; 4], compiler: Compiler::Clang };
//! let mut l = Localiser::new(&space, failing, Status::BuildFailed, &[], &Compiler::ALL, Settings::default()).unwrap();
//! let conclusion = loop {
//!     match l.next() {
//!         Step::Run(p) => {
//!             let status = if fails(&p) { Status::BuildFailed } else { Status::Success };
//!             l.record(&p, status).unwrap();
//!         }
//!         Step::Done(c) => break c,
//!     }
//! };
//! assert_eq!(conclusion.to_string(), r#"fails with USE="b" (clang only)"#);
//! ```
#![deny(missing_docs)]

mod hypotheses;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};

use gah_core::db::StoredOutcome;
use gah_core::job::{Compiler, UseAssignment};
use gah_core::outcome::Status;
use gah_ebuild::Space;

// The conclusion's types live in gah-core, which stores them in the results database and
// which gah-qa shows; they are this crate's vocabulary all the same.
pub use gah_core::localisation::{Cause, Conclusion, Evidence, Run, Verdict};

pub use hypotheses::MAX_SIZE;
use hypotheses::{entropy, Hyp};

/// One configuration to build: a value per flag of the [`Space`] (in [`Space::vars`] order)
/// and a compiler.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Probe {
    /// One value per variable of the space.
    pub config: Vec<bool>,
    /// The toolchain.
    pub compiler: Compiler,
}

/// What [`Localiser::next`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Build this configuration and [`Localiser::record`] its outcome.
    Run(Probe),
    /// Finished.
    Done(Conclusion),
}

/// The localiser's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Largest cause looked for (flag values plus the compiler), at most [`MAX_SIZE`].
    pub max_size: usize,
    /// Most follow-ups (the rerun included) before giving up as inconclusive.
    pub max_followups: usize,
    /// Seed of the random splits among the candidate configurations.
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { max_size: MAX_SIZE, max_followups: 64, seed: 0 }
    }
}

/// Why a localisation cannot start, or an outcome cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A configuration's length is not the space's.
    #[error("a configuration of {got} values for an ebuild with {want} flags")]
    Length {
        /// Values given.
        got: usize,
        /// Flags in the space.
        want: usize,
    },
    /// The failing configuration violates REQUIRED_USE.
    #[error("the failing configuration violates REQUIRED_USE")]
    InvalidFailing,
    /// Only the package's own failures are localised.
    #[error("`{}` is not a failure of the package itself", .0.as_str())]
    NotOwnFailure(Status),
    /// The failing configuration's compiler is not among the available ones.
    #[error("compiler {0} is not among the available compilers")]
    UnknownCompiler(Compiler),
    /// A stored configuration that does not name every flag of the space.
    #[error("a stored configuration does not name every flag of the ebuild")]
    Unmatched,
    /// An outcome recorded after the conclusion.
    #[error("the localisation has ended")]
    Finished,
}

/// The probe of a stored configuration (a cell's USE and compiler) in `space`, the inverse of
/// [`Space::assignment`]; `None` when it lacks one of the space's flags.
pub fn probe_of(space: &Space, use_flags: &UseAssignment, compiler: Compiler) -> Option<Probe> {
    let config = space.vars().iter().map(|f| use_flags.0.get(f).copied()).collect::<Option<Vec<bool>>>()?;
    Some(Probe { config, compiler })
}

/// One outcome as the search uses it.
#[derive(Debug, Clone)]
struct Obs {
    /// Per dimension: does the configuration agree with the failing one?
    agree: Vec<bool>,
    verdict: Verdict,
    /// A follow-up (or the failing configuration itself), not a row known beforehand.
    followup: bool,
}

/// The state machine; see the crate docs.
#[derive(Debug)]
pub struct Localiser<'s, 'e> {
    space: &'s Space<'e>,
    failing: Probe,
    failure: Status,
    /// The compiler a configuration disagreeing on the compiler dimension uses; `None` when
    /// only one compiler is available (the compiler is then not a dimension).
    other_compiler: Option<Compiler>,
    settings: Settings,
    dims: usize,
    obs: Vec<Obs>,
    seen: HashSet<Probe>,
    known: usize,
    runs: Vec<Run>,
    reproduced: bool,
    hyps: Option<Vec<Hyp>>,
    /// The largest cause searched (lowered from `settings.max_size` when too many).
    size: usize,
    /// Known failing rows no longer bind (they contradicted every candidate).
    relaxed: bool,
    pending: Option<Probe>,
    done: Option<Conclusion>,
    steps: u64,
}

impl<'s, 'e> Localiser<'s, 'e> {
    /// A localisation of `failing`, which ended with `failure` (`build_failed` or
    /// `test_failed`), given the outcomes `known` for the same ebuild (the failing one may be
    /// among them; rows with a compiler outside `compilers` are left out) and the compilers
    /// follow-ups may use.
    pub fn new(
        space: &'s Space<'e>,
        failing: Probe,
        failure: Status,
        known: &[(Probe, Status)],
        compilers: &[Compiler],
        settings: Settings,
    ) -> Result<Localiser<'s, 'e>, Error> {
        let n = space.vars().len();
        if failing.config.len() != n {
            return Err(Error::Length { got: failing.config.len(), want: n });
        }
        if !space.is_valid(&failing.config) {
            return Err(Error::InvalidFailing);
        }
        if !failure.is_own_failure() {
            return Err(Error::NotOwnFailure(failure));
        }
        if !compilers.contains(&failing.compiler) {
            return Err(Error::UnknownCompiler(failing.compiler));
        }
        let other_compiler = compilers.iter().copied().find(|c| *c != failing.compiler);
        let dims = n + usize::from(other_compiler.is_some());
        let mut l = Localiser {
            space,
            failing,
            failure,
            other_compiler,
            settings,
            dims,
            obs: Vec::new(),
            seen: HashSet::new(),
            known: 0,
            runs: Vec::new(),
            reproduced: false,
            hyps: None,
            size: settings.max_size.min(MAX_SIZE),
            relaxed: false,
            pending: None,
            done: None,
            steps: 0,
        };
        l.seen.insert(l.failing.clone());
        l.obs.push(Obs { agree: vec![true; dims], verdict: Verdict::Fail, followup: true });
        for (probe, status) in known {
            if probe.config.len() != n {
                return Err(Error::Length { got: probe.config.len(), want: n });
            }
            if !compilers.contains(&probe.compiler) {
                continue;
            }
            l.known += 1;
            l.seen.insert(probe.clone());
            if *probe != l.failing {
                let o = Obs { agree: l.agreement(probe), verdict: Verdict::of(*status, failure), followup: false };
                l.obs.push(o);
            }
        }
        Ok(l)
    }

    /// The next configuration to build, or the conclusion. Until its outcome is recorded, the
    /// same configuration is proposed again.
    // Not an `Iterator`: each step waits for the outcome `record` brings.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Step {
        if let Some(c) = &self.done {
            return Step::Done(c.clone());
        }
        if let Some(p) = &self.pending {
            return Step::Run(p.clone());
        }
        if !self.reproduced {
            self.pending = Some(self.failing.clone());
            return Step::Run(self.failing.clone());
        }
        self.steps += 1;
        match self.decide() {
            Ok(p) => {
                self.pending = Some(p.clone());
                Step::Run(p)
            }
            Err(c) => {
                self.done = Some(c.clone());
                Step::Done(c)
            }
        }
    }

    /// Takes the outcome of a configuration (normally the one [`Localiser::next`] proposed;
    /// any other is taken as more evidence).
    pub fn record(&mut self, probe: &Probe, status: Status) -> Result<(), Error> {
        if self.done.is_some() {
            return Err(Error::Finished);
        }
        let n = self.space.vars().len();
        if probe.config.len() != n {
            return Err(Error::Length { got: probe.config.len(), want: n });
        }
        if self.pending.as_ref() == Some(probe) {
            self.pending = None;
        }
        let verdict = Verdict::of(status, self.failure);
        self.runs.push(Run { use_flags: self.space.assignment(&probe.config), compiler: probe.compiler, status, verdict });
        self.seen.insert(probe.clone());
        if *probe == self.failing && !self.reproduced {
            match verdict {
                Verdict::Fail => self.reproduced = true,
                Verdict::Pass => self.done = Some(Conclusion::Flaky { evidence: self.evidence() }),
                Verdict::Unresolved => {
                    self.done = Some(self.inconclusive(format!("the failing configuration ended with {} when run again", status.as_str())))
                }
            }
            return Ok(());
        }
        let agree = self.agreement(probe);
        if let Some(h) = &mut self.hyps {
            match verdict {
                Verdict::Pass => h.retain(|h| !h.within(&agree)),
                Verdict::Fail => h.retain(|h| h.within(&agree)),
                Verdict::Unresolved => {}
            }
        }
        self.obs.push(Obs { agree, verdict, followup: true });
        Ok(())
    }

    /// Brings a new localiser (same inputs) to the state the stored follow-ups left: each is
    /// proposed and recorded in turn, as when it ran, so the next proposal is the one the
    /// original would have made. For a caller that keeps only the [`Evidence`].
    pub fn replay(&mut self, runs: &[Run]) -> Result<(), Error> {
        for run in runs {
            let probe = probe_of(self.space, &run.use_flags, run.compiler).ok_or(Error::Unmatched)?;
            let _ = self.next();
            self.record(&probe, run.status)?;
        }
        Ok(())
    }

    /// The localisation of a stored failing row taken up where it stands: `failing` is the
    /// row, `latest` the latest rows of the same ebuild in its snapshot (what is known: the
    /// covering array's rows, other localisations' follow-ups; the failing cell's own and the
    /// follow-ups in `runs` are left out, so [`Evidence::known`] counts only what was known
    /// beforehand), `runs` the follow-ups it ran so far (taken back by [`Localiser::resume`]).
    /// The one way a caller that stores localisations (`gah run`, the work generator) rebuilds
    /// one.
    pub fn resume_stored(
        space: &'s Space<'e>,
        failing: &StoredOutcome,
        latest: &[StoredOutcome],
        runs: &[Run],
        compilers: &[Compiler],
        settings: Settings,
    ) -> Result<Localiser<'s, 'e>, Error> {
        let cell = &failing.cell;
        let failing_probe = probe_of(space, &cell.use_flags, cell.compiler).ok_or(Error::Unmatched)?;
        let ran: Vec<Probe> = runs.iter().filter_map(|r| probe_of(space, &r.use_flags, r.compiler)).collect();
        let known: Vec<(Probe, Status)> = latest
            .iter()
            .filter(|r| r.seq != failing.seq && r.cell != failing.cell)
            .filter_map(|r| probe_of(space, &r.cell.use_flags, r.cell.compiler).map(|p| (p, r.status)))
            .filter(|(p, _)| !ran.contains(p))
            .collect();
        let mut localiser = Localiser::new(space, failing_probe, failing.status, &known, compilers, settings)?;
        localiser.resume(runs)?;
        Ok(localiser)
    }

    /// Takes stored follow-ups back as evidence, without proposing them again: for a caller
    /// whose known outcomes have grown since they ran (a server, where the sweep goes on
    /// meanwhile), so that [`Localiser::replay`]'s proposals would no longer be the ones
    /// made. The next proposal is then made from everything known and recorded.
    pub fn resume(&mut self, runs: &[Run]) -> Result<(), Error> {
        for run in runs {
            let probe = probe_of(self.space, &run.use_flags, run.compiler).ok_or(Error::Unmatched)?;
            self.record(&probe, run.status)?;
        }
        Ok(())
    }

    /// Follow-ups recorded so far (the rerun included).
    pub fn followups(&self) -> usize {
        self.runs.len()
    }

    /// The evidence so far.
    pub fn evidence(&self) -> Evidence {
        Evidence {
            failing: Run {
                use_flags: self.space.assignment(&self.failing.config),
                compiler: self.failing.compiler,
                status: self.failure,
                verdict: Verdict::Fail,
            },
            known: self.known,
            runs: self.runs.clone(),
        }
    }

    fn inconclusive(&self, why: String) -> Conclusion {
        Conclusion::Inconclusive { why, evidence: self.evidence() }
    }

    /// Per dimension, whether `probe` agrees with the failing configuration.
    fn agreement(&self, probe: &Probe) -> Vec<bool> {
        let mut a: Vec<bool> = probe.config.iter().zip(&self.failing.config).map(|(x, f)| x == f).collect();
        if self.other_compiler.is_some() {
            a.push(probe.compiler == self.failing.compiler);
        }
        a
    }

    /// The candidates consistent with every binding outcome.
    fn build_hypotheses(&mut self) -> Vec<Hyp> {
        let binding = |o: &&Obs| o.verdict == Verdict::Fail && (o.followup || !self.relaxed);
        let fails: Vec<&Obs> = self.obs.iter().filter(binding).collect();
        let literals: Vec<u32> = (0..self.dims)
            .filter(|&d| fails.iter().all(|o| o.agree[d]))
            .map(|d| u32::try_from(d).expect("fewer than 2^32 flags"))
            .collect();
        let mut k = self.settings.max_size.min(MAX_SIZE);
        while k > 0 && hypotheses::count(literals.len(), k) > hypotheses::LIMIT {
            k -= 1;
        }
        self.size = k;
        let passes: Vec<&[bool]> = self.obs.iter().filter(|o| o.verdict == Verdict::Pass).map(|o| &o.agree[..]).collect();
        hypotheses::enumerate(&literals, k, &passes)
    }

    /// The next follow-up, or the conclusion.
    fn decide(&mut self) -> Result<Probe, Conclusion> {
        loop {
            if self.hyps.is_none() {
                let h = self.build_hypotheses();
                self.hyps = Some(h);
            }
            let hyps = self.hyps.as_ref().expect("just built");
            if hyps.is_empty() {
                // Too many values to search causes of the full size at the start: the failing
                // follow-ups have narrowed the values since, so search larger causes now.
                if self.size < self.settings.max_size.min(MAX_SIZE) {
                    let before = self.size;
                    let h = self.build_hypotheses();
                    if self.size > before {
                        self.hyps = Some(h);
                        continue;
                    }
                }
                if !self.relaxed && self.obs.iter().any(|o| !o.followup && o.verdict == Verdict::Fail) {
                    self.relaxed = true;
                    self.hyps = None;
                    continue;
                }
                return Err(self.inconclusive(format!(
                    "no combination of at most {} values explains every outcome (more than one cause, or a flaky failure)",
                    self.size
                )));
            }
            if hyps.len() == 1 {
                // Confirm before concluding: the cause kept and everything else changed must
                // fail too (two causes, or noise, show here).
                let mut fixed = vec![None; self.dims];
                for &d in hyps[0].dims() {
                    fixed[d as usize] = Some(true);
                }
                if let Some(p) = self.build(&fixed, &vec![false; self.dims]).filter(|p| !self.seen.contains(p)) {
                    return Ok(p);
                }
                let cause = self.cause_of(&hyps[0]);
                return Err(Conclusion::Localised { cause, evidence: self.evidence() });
            }
            if self.runs.len() >= self.settings.max_followups {
                return Err(self.inconclusive(format!(
                    "{} follow-ups run and {} candidate causes left, among them {} and {}",
                    self.runs.len(),
                    hyps.len(),
                    self.cause_of(&self.leading(hyps, 2)[0]),
                    self.cause_of(&self.leading(hyps, 2)[1]),
                )));
            }
            if let Some(p) = self.best_split(hyps) {
                return Ok(p);
            }
            // No candidate configuration splits the candidates: separate the leading one from
            // each other directly, or learn that REQUIRED_USE makes them one.
            match self.separate_leading()? {
                Some(p) => return Ok(p),
                None => continue,
            }
        }
    }

    /// The `k` heaviest candidates (ties: the first).
    fn leading(&self, hyps: &[Hyp], k: usize) -> Vec<Hyp> {
        let mut idx: Vec<usize> = (0..hyps.len()).collect();
        idx.sort_by(|&a, &b| hyps[b].weight.total_cmp(&hyps[a].weight).then(a.cmp(&b)));
        idx.into_iter().take(k).map(|i| hyps[i]).collect()
    }

    fn cause_of(&self, h: &Hyp) -> Cause {
        let n = self.space.vars().len();
        let mut cause = Cause { flags: BTreeMap::new(), compiler: None };
        for &d in h.dims() {
            let d = d as usize;
            if d < n {
                cause.flags.insert(self.space.vars()[d].clone(), self.failing.config[d]);
            } else {
                cause.compiler = Some(self.failing.compiler);
            }
        }
        cause
    }

    /// A valid configuration with, per dimension, `fixed` agreement with the failing one
    /// where given and `prefer`'s elsewhere as far as REQUIRED_USE allows.
    fn build(&self, fixed: &[Option<bool>], prefer: &[bool]) -> Option<Probe> {
        let n = self.space.vars().len();
        let f = &self.failing.config;
        let fx: Vec<Option<bool>> = (0..n).map(|d| fixed[d].map(|a| if a { f[d] } else { !f[d] })).collect();
        let pr: Vec<bool> = (0..n).map(|d| if prefer[d] { f[d] } else { !f[d] }).collect();
        let config = self.space.solve(&fx, &pr)?;
        debug_assert!(self.space.is_valid(&config));
        let compiler = match self.other_compiler {
            Some(other) if !fixed[n].unwrap_or(prefer[n]) => other,
            _ => self.failing.compiler,
        };
        Some(Probe { config, compiler })
    }

    /// The candidate configurations of this step (see the crate docs), in a fixed order.
    fn candidates(&self, hyps: &[Hyp]) -> Vec<Probe> {
        let dims = self.dims;
        let mut literal = vec![false; dims];
        for h in hyps {
            for &d in h.dims() {
                literal[d as usize] = true;
            }
        }
        let flip_rest: Vec<bool> = literal.iter().map(|l| !l).collect();
        let stay = vec![true; dims];
        let nearest_pass = self
            .obs
            .iter()
            .filter(|o| o.verdict == Verdict::Pass)
            .max_by_key(|o| o.agree.iter().filter(|a| **a).count())
            .map(|o| o.agree.clone());
        let mut out = Vec::new();
        for h in self.leading(hyps, 3) {
            let mut fixed = vec![None; dims];
            for &d in h.dims() {
                fixed[d as usize] = Some(true);
            }
            // ddmin's test: keep this combination, change the rest.
            out.extend(self.build(&fixed, &flip_rest));
            if let Some(p) = &nearest_pass {
                out.extend(self.build(&fixed, p));
            }
            for &d in h.dims() {
                let mut without = fixed.clone();
                without[d as usize] = Some(false);
                // The neighbour without this value, and the complement without it.
                out.extend(self.build(&without, &stay));
                out.extend(self.build(&without, &flip_rest));
            }
        }
        let mut rng = gah_util::rng::SplitMix64(self.settings.seed ^ self.steps.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for q in [0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.75, 0.75, 0.1, 0.9, 0.35, 0.65] {
            let prefer: Vec<bool> = literal.iter().map(|&l| !l || rng.unit() >= q).collect();
            out.extend(self.build(&vec![None; dims], &prefer));
        }
        let mut unique = HashSet::new();
        out.retain(|p| !self.seen.contains(p) && unique.insert(p.clone()));
        out
    }

    /// The candidate configuration whose predicted outcome splits the candidates' weight most
    /// evenly; `None` when none splits it at all.
    fn best_split(&self, hyps: &[Hyp]) -> Option<Probe> {
        let total: f64 = hyps.iter().map(|h| h.weight).sum();
        let mut best: Option<(f64, Probe)> = None;
        for p in self.candidates(hyps) {
            let agree = self.agreement(&p);
            let fail: f64 = hyps.iter().filter(|h| h.within(&agree)).map(|h| h.weight).sum();
            let e = entropy(fail, total);
            if e > 1e-9 && best.as_ref().is_none_or(|(b, _)| e > *b + 1e-12) {
                best = Some((e, p));
            }
        }
        best.map(|(_, p)| p)
    }

    /// A new valid configuration showing `a` and not `b`; `Err(true)` when such
    /// configurations exist but have all been run, `Err(false)` when none is valid.
    fn showing_not(&self, a: &Hyp, b: &Hyp) -> Result<Probe, bool> {
        let dims = self.dims;
        let mut any = false;
        for &d in b.dims().iter().filter(|d| !a.contains(**d)) {
            let mut fixed = vec![None; dims];
            for &k in a.dims() {
                fixed[k as usize] = Some(true);
            }
            fixed[d as usize] = Some(false);
            for prefer in [vec![true; dims], vec![false; dims]] {
                if let Some(p) = self.build(&fixed, &prefer) {
                    if !self.seen.contains(&p) {
                        return Ok(p);
                    }
                    any = true;
                }
            }
        }
        Err(any)
    }

    /// Separates the leading candidate from the others: a configuration that tells it from one
    /// of them, or, when REQUIRED_USE makes them the same cause, drops the larger
    /// (`Ok(None)`: the candidates changed, decide again).
    fn separate_leading(&mut self) -> Result<Option<Probe>, Conclusion> {
        let hyps = self.hyps.as_ref().expect("built");
        let lead = self.leading(hyps, 1)[0];
        let mut same = Vec::new();
        let mut stuck = None;
        for (i, h) in hyps.iter().enumerate() {
            if h.dims() == lead.dims() {
                continue;
            }
            match (self.showing_not(&lead, h), self.showing_not(h, &lead)) {
                (Ok(p), _) | (_, Ok(p)) => return Ok(Some(p)),
                (Err(false), Err(false)) if h.len() < lead.len() => {
                    // The same cause, stated with fewer values: drop the leading one instead.
                    let lead_at = hyps.iter().position(|x| x.dims() == lead.dims()).expect("among them");
                    self.hyps.as_mut().expect("built").remove(lead_at);
                    return Ok(None);
                }
                (Err(false), Err(false)) => same.push(i),
                _ => stuck = stuck.or(Some(*h)),
            }
        }
        if same.is_empty() {
            let other = stuck.map(|h| self.cause_of(&h).to_string()).unwrap_or_default();
            return Err(self.inconclusive(format!(
                "the configurations that would tell {} from {other} have run and told nothing",
                self.cause_of(&lead)
            )));
        }
        // Equivalent under REQUIRED_USE: keep the leading (smallest) one.
        let hyps = self.hyps.as_mut().expect("built");
        let mut k = 0;
        hyps.retain(|_| {
            let keep = !same.contains(&k);
            k += 1;
            keep
        });
        Ok(None)
    }
}
