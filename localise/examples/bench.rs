//! The localisation benchmark (`bench/localise.sh`): models from real md5-cache entries,
//! injected faults, and follow-up jobs per failure for the localiser against
//! one-flag-at-a-time and plain ddmin.
//!
//! Models: every ebuild of the repositories given with 10 to 60 varied flags (IUSE without
//! `test`) and a non-empty REQUIRED_USE that Portage accepts, under the built-in amd64/Linux
//! profile (the work generator's default), distinct (IUSE, REQUIRED_USE) pairs only. Known
//! outcomes: the pairwise covering array (`gah_ebuild::cover`, seed 0) under gcc and clang.
//! Faults: per model, `--per-model` faults of 1, 2, 3, 1, 2, 3… flag values (a quarter of
//! them with the compiler as one more value), drawn from a random failing row of the array
//! (so the fault is satisfiable and the failing start configuration triggers it), seeded.
//! A configuration fails exactly when it shows the whole fault. Correct: the named cause
//! matches the fault on every valid configuration (REQUIRED_USE may make a smaller
//! combination the same cause) and names the same compiler.
//!
//! Usage: `cargo run --release -p gah-localise --example bench -- [--per-model N] [--seed S] [--flags MIN-MAX] REPO...`
//! (`--flags` replaces the 10 to 60 flags of the models).

#![allow(clippy::print_stdout, clippy::print_stderr)] // An example reports on its terminal.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use gah_core::job::Compiler;
use gah_core::outcome::Status;
use gah_ebuild::solve::Space;
use gah_ebuild::{cover, Profile};
use gah_localise::{Conclusion, Localiser, Probe, Settings, Step};

/// A fault: flag values (by index) and maybe a compiler.
#[derive(Debug, Clone)]
struct Fault {
    flags: Vec<(usize, bool)>,
    compiler: Option<Compiler>,
}

impl Fault {
    fn fails(&self, p: &Probe) -> bool {
        self.compiler.is_none_or(|c| c == p.compiler) && self.flags.iter().all(|&(i, v)| p.config[i] == v)
    }
}

/// What one method concluded and what it cost.
struct Result {
    cause: Option<Fault>,
    jobs: usize,
}

use gah_util::rng::SplitMix64 as Rng;

/// Builds configurations through the simulated fault, counting new ones; known outcomes are
/// free. Panics on an invalid configuration: no method may run one.
struct Builder<'a> {
    space: &'a Space<'a>,
    fault: &'a Fault,
    cache: HashMap<Probe, bool>,
    jobs: usize,
}

impl Builder<'_> {
    fn fails(&mut self, p: &Probe) -> bool {
        assert!(self.space.is_valid(&p.config), "an invalid configuration was proposed");
        if let Some(&f) = self.cache.get(p) {
            return f;
        }
        self.jobs += 1;
        let f = self.fault.fails(p);
        self.cache.insert(p.clone(), f);
        f
    }
}

fn other(c: Compiler) -> Compiler {
    if c == Compiler::Gcc {
        Compiler::Clang
    } else {
        Compiler::Gcc
    }
}

/// One flag at a time: rerun, then each flag flipped (the solver repairing the rest, closest
/// to the failing configuration), then the other compiler; a flip that passes names its value.
fn one_at_a_time(b: &mut Builder, failing: &Probe) -> Result {
    b.jobs += 1; // The rerun.
    let n = failing.config.len();
    let mut cause = Fault { flags: Vec::new(), compiler: None };
    for d in 0..n {
        let mut fixed = vec![None; n];
        fixed[d] = Some(!failing.config[d]);
        if let Some(config) = b.space.solve(&fixed, &failing.config) {
            if !b.fails(&Probe { config, compiler: failing.compiler }) {
                cause.flags.push((d, failing.config[d]));
            }
        }
    }
    if !b.fails(&Probe { config: failing.config.clone(), compiler: other(failing.compiler) }) {
        cause.compiler = Some(failing.compiler);
    }
    Result { cause: Some(cause), jobs: b.jobs }
}

/// Zeller's ddmin over the failing configuration's values (flags and compiler): a subset is
/// tested by keeping it and changing every other value (the solver repairing); results cached.
fn plain_ddmin(b: &mut Builder, failing: &Probe) -> Result {
    b.jobs += 1; // The rerun.
    let n = failing.config.len();
    let test = |keep: &[usize], b: &mut Builder| -> bool {
        let mut fixed = vec![None; n];
        for &d in keep.iter().filter(|d| **d < n) {
            fixed[d] = Some(failing.config[d]);
        }
        let prefer: Vec<bool> = failing.config.iter().map(|v| !v).collect();
        let compiler = if keep.contains(&n) { failing.compiler } else { other(failing.compiler) };
        match b.space.solve(&fixed, &prefer) {
            Some(config) => b.fails(&Probe { config, compiler }),
            None => false, // No valid configuration: unresolved, taken as "does not fail".
        }
    };
    let mut c: Vec<usize> = (0..=n).collect();
    let mut parts = 2usize;
    while c.len() >= 2 {
        let chunk = c.len().div_ceil(parts);
        let chunks: Vec<Vec<usize>> = c.chunks(chunk).map(<[usize]>::to_vec).collect();
        let mut reduced = false;
        for ch in &chunks {
            if test(ch, b) {
                c = ch.clone();
                parts = 2;
                reduced = true;
                break;
            }
        }
        if !reduced && chunks.len() > 2 {
            for ch in &chunks {
                let rest: Vec<usize> = c.iter().copied().filter(|d| !ch.contains(d)).collect();
                if test(&rest, b) {
                    c = rest;
                    parts = (parts - 1).max(2);
                    reduced = true;
                    break;
                }
            }
        }
        if !reduced {
            if parts >= c.len() {
                break;
            }
            parts = (parts * 2).min(c.len());
        }
    }
    let cause = Fault {
        flags: c.iter().copied().filter(|d| *d < n).map(|d| (d, failing.config[d])).collect(),
        compiler: c.contains(&n).then_some(failing.compiler),
    };
    Result { cause: Some(cause), jobs: b.jobs }
}

/// The localiser, through its state machine; asserts no configuration repeats.
fn ours(b: &mut Builder, failing: &Probe, known: &[(Probe, Status)], settings: Settings) -> (Result, Conclusion) {
    let mut l = Localiser::new(b.space, failing.clone(), Status::BuildFailed, known, &Compiler::ALL, settings).expect("a valid start");
    let mut seen: HashSet<Probe> = known.iter().map(|(p, _)| p.clone()).collect();
    let mut reran = false;
    let conclusion = loop {
        match l.next() {
            Step::Run(p) => {
                if p == *failing && !reran {
                    reran = true;
                } else {
                    assert!(seen.insert(p.clone()), "a configuration was proposed twice");
                }
                b.jobs += 1;
                let status = if b.fault.fails(&p) { Status::BuildFailed } else { Status::Success };
                assert!(b.space.is_valid(&p.config), "an invalid configuration was proposed");
                l.record(&p, status).expect("recorded");
            }
            Step::Done(c) => break c,
        }
    };
    let cause = conclusion.cause().map(|c| Fault {
        flags: c.flags.iter().map(|(f, v)| (b.space.vars().iter().position(|x| x == f).expect("a flag"), *v)).collect(),
        compiler: c.compiler,
    });
    (Result { cause, jobs: b.jobs }, conclusion)
}

/// True when every valid configuration showing `a` shows `b`.
fn implies(space: &Space, a: &Fault, b: &Fault) -> bool {
    let n = space.vars().len();
    let mut fixed = vec![None; n];
    for &(i, v) in &a.flags {
        fixed[i] = Some(v);
    }
    b.flags.iter().filter(|l| !a.flags.contains(l)).all(|&(i, v)| {
        let mut f = fixed.clone();
        if f[i] == Some(v) {
            return true;
        }
        f[i] = Some(!v);
        space.solve(&f, &vec![false; n]).is_none()
    })
}

fn correct(space: &Space, found: Option<&Fault>, fault: &Fault) -> bool {
    found.is_some_and(|f| f.compiler == fault.compiler && implies(space, f, fault) && implies(space, fault, f))
}

#[derive(Default)]
struct Tally {
    trials: usize,
    correct: [usize; 4],
    jobs: [Vec<usize>; 4],
}

fn main() {
    let mut per_model = 6usize;
    let mut seed = 1u64;
    let mut flag_range = (10usize, 60usize);
    let mut repos = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--per-model" => per_model = args.next().and_then(|v| v.parse().ok()).expect("--per-model N"),
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).expect("--seed S"),
            "--flags" => {
                let v = args.next().expect("--flags MIN-MAX");
                let (a, b) = v.split_once('-').expect("--flags MIN-MAX");
                flag_range = (a.parse().expect("MIN"), b.parse().expect("MAX"));
            }
            _ => repos.push(a),
        }
    }
    assert!(!repos.is_empty(), "usage: bench [--per-model N] [--seed S] [--flags MIN-MAX] REPO...");
    let profile = Profile::amd64_linux();
    let mut seen = BTreeSet::new();
    let mut ebuilds = Vec::new();
    for path in &repos {
        let (repo, _) = gah_ebuild::read_repository(Path::new(path));
        ebuilds.extend(repo.ebuilds);
    }
    let t0 = Instant::now();
    let mut by_size: BTreeMap<String, Tally> = BTreeMap::new();
    let mut models = 0usize;
    let mut flags_total = 0usize;
    let mut model_flags = Vec::new();
    let mut wrong_examples: Vec<String> = Vec::new();
    for e in &ebuilds {
        if e.required_use.is_empty() || !e.required_use.flags().iter().all(|f| e.has_iuse(f) || profile.in_iuse_effective(f, &e.eapi)) {
            continue;
        }
        let space = Space::new(e, &profile);
        let n = space.vars().len();
        if !(flag_range.0..=flag_range.1).contains(&n) || !seen.insert((space.vars().to_vec(), e.required_use.to_string())) {
            continue;
        }
        let rows = cover::covering_array(&space, 2, 0).rows;
        if rows.is_empty() {
            continue;
        }
        models += 1;
        flags_total += n;
        model_flags.push(n);
        for t in 0..per_model {
            let mut rng = Rng(seed ^ (models as u64).wrapping_mul(0x100_0000_01B3) ^ (t as u64) << 48);
            let size = 1 + t % 3;
            let row = &rows[rng.index(rows.len())];
            let compiler = Compiler::ALL[rng.index(2)];
            let mut dims: Vec<usize> = (0..n).collect();
            let mut flags = Vec::new();
            for _ in 0..size {
                let d = dims.swap_remove(rng.index(dims.len()));
                flags.push((d, row[d]));
            }
            flags.sort_unstable();
            let fault = Fault { flags, compiler: (rng.below(4) == 0).then_some(compiler) };
            let failing = Probe { config: row.clone(), compiler };
            let known: Vec<(Probe, Status)> = rows
                .iter()
                .flat_map(|r| Compiler::ALL.map(|c| Probe { config: r.clone(), compiler: c }))
                .map(|p| {
                    let s = if fault.fails(&p) { Status::BuildFailed } else { Status::Success };
                    (p, s)
                })
                .collect();
            let cache: HashMap<Probe, bool> = known.iter().map(|(p, s)| (p.clone(), *s == Status::BuildFailed)).collect();
            let label = format!(
                "{} flag value{}{}",
                size,
                if size > 1 { "s" } else { "" },
                if fault.compiler.is_some() { " + compiler" } else { "" }
            );
            let mut results = Vec::new();
            let mut b = Builder { space: &space, fault: &fault, cache: cache.clone(), jobs: 0 };
            let (r, conclusion) = ours(&mut b, &failing, &known, Settings { seed, ..Settings::default() });
            if !correct(&space, r.cause.as_ref(), &fault) && wrong_examples.len() < 10 {
                wrong_examples.push(format!("{} n={n} fault {:?}: {conclusion}", e.cpv, fault));
            }
            results.push(r);
            let mut b = Builder { space: &space, fault: &fault, cache: cache.clone(), jobs: 0 };
            results.push(one_at_a_time(&mut b, &failing));
            let mut b = Builder { space: &space, fault: &fault, cache: cache.clone(), jobs: 0 };
            results.push(plain_ddmin(&mut b, &failing));
            // Ours again, from the failing configuration alone (no covering array known).
            let mut b = Builder { space: &space, fault: &fault, cache, jobs: 0 };
            let (r, conclusion) = ours(&mut b, &failing, &[], Settings { seed, ..Settings::default() });
            if !correct(&space, r.cause.as_ref(), &fault) && wrong_examples.len() < 10 {
                wrong_examples.push(format!("{} n={n} fault {:?} (no array): {conclusion}", e.cpv, fault));
            }
            results.push(r);
            for key in [label, "all".to_owned()] {
                let tally = by_size.entry(key).or_default();
                tally.trials += 1;
                for (m, r) in results.iter().enumerate() {
                    tally.correct[m] += usize::from(correct(&space, r.cause.as_ref(), &fault));
                    tally.jobs[m].push(r.jobs);
                }
            }
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    #[allow(clippy::cast_precision_loss)]
    let mean = |v: &[usize]| v.iter().sum::<usize>() as f64 / v.len().max(1) as f64;
    let median = |v: &[usize]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    println!(
        "{models} models ({:.1} flags on average), {} faults, seed {seed}, {:.1} s",
        flags_total as f64 / models.max(1) as f64,
        by_size.get("all").map_or(0, |t| t.trials),
        t0.elapsed().as_secs_f64()
    );
    println!();
    println!("Per method: ours / one flag at a time / plain ddmin / ours without the array's outcomes.");
    println!();
    println!("| faults | n | localised correctly | follow-up jobs, mean | median | max |");
    println!("| --- | ---: | --- | --- | --- | --- |");
    let four = |f: &dyn Fn(usize) -> String| (0..4).map(f).collect::<Vec<_>>().join(" / ");
    for (label, t) in &by_size {
        println!(
            "| {label} | {} | {} | {} | {} | {} |",
            t.trials,
            four(&|m| format!("{:.1} %", pct(t.correct[m], t.trials))),
            four(&|m| format!("{:.1}", mean(&t.jobs[m]))),
            four(&|m| median(&t.jobs[m]).to_string()),
            four(&|m| t.jobs[m].iter().max().unwrap_or(&0).to_string()),
        );
    }
    let mut sizes: BTreeMap<usize, usize> = BTreeMap::new();
    for n in &model_flags {
        *sizes.entry(n / 10 * 10).or_default() += 1;
    }
    let shown: Vec<String> = sizes.iter().map(|(b, c)| format!("{b}–{}: {c}", b + 9)).collect();
    println!();
    println!("Models by flags: {}", shown.join(", "));
    for w in &wrong_examples {
        eprintln!("not localised: {w}");
    }
}
