//! Localisation against simulated builds: a fault is a combination of flag values (and maybe
//! a compiler); a configuration fails exactly when it shows the whole fault. The known
//! outcomes are a pairwise covering array's rows under every compiler, as the work
//! generator plans them. The simulated builder asserts that no proposed configuration is
//! invalid and none runs twice (except the failing one's rerun).

use std::collections::HashSet;

use gah_core::job::Compiler;
use gah_core::outcome::Status;
use gah_ebuild::md5cache::parse_entry;
use gah_ebuild::{cover, Ebuild, Profile, Space};

use super::*;

fn ebuild(iuse: &str, required_use: &str) -> Ebuild {
    let text = format!("EAPI=8\nIUSE={iuse}\nREQUIRED_USE={required_use}\nSLOT=0\n_md5_=0\n");
    parse_entry("cat/pkg-1", &text, &mut Vec::new()).unwrap()
}

/// A fault written as `flag -flag @clang`.
struct Fault {
    flags: Vec<(usize, bool)>,
    compiler: Option<Compiler>,
}

impl Fault {
    fn parse(space: &Space, spec: &str) -> Fault {
        let mut f = Fault { flags: Vec::new(), compiler: None };
        for w in spec.split_whitespace() {
            if let Some(c) = w.strip_prefix('@') {
                f.compiler = Some(if c == "clang" { Compiler::Clang } else { Compiler::Gcc });
                continue;
            }
            let (name, on) = w.strip_prefix('-').map_or((w, true), |n| (n, false));
            let i = space.vars().iter().position(|v| v == name).unwrap_or_else(|| panic!("{name} not in IUSE"));
            f.flags.push((i, on));
        }
        f
    }

    fn fails(&self, p: &Probe) -> bool {
        self.compiler.is_none_or(|c| c == p.compiler) && self.flags.iter().all(|&(i, v)| p.config[i] == v)
    }
}

/// The outcome of a localisation, and how many follow-ups it ran.
struct Outcome {
    conclusion: Conclusion,
    followups: usize,
}

/// Localises `fault` in the space of `iuse`/`required_use`, starting from the first failing
/// row of the covering array that has every flag of `start` on (or, with `known == false`,
/// from the first such row with nothing else known). `flaky`: the failure is noise, every
/// build passes.
fn localise(iuse: &str, required_use: &str, fault: &str, start: &str, known: bool, flaky: bool) -> Outcome {
    let e = ebuild(iuse, required_use);
    let profile = Profile::none();
    let space = Space::new(&e, &profile);
    let fault = Fault::parse(&space, fault);
    let start: Vec<usize> = start.split_whitespace().map(|f| space.vars().iter().position(|v| v == f).unwrap()).collect();
    let rows = cover::covering_array(&space, 2, 0).rows;
    let mut table: Vec<(Probe, Status)> = Vec::new();
    for r in &rows {
        for c in Compiler::ALL {
            let p = Probe { config: r.clone(), compiler: c };
            let status = if fault.fails(&p) { Status::BuildFailed } else { Status::Success };
            table.push((p, status));
        }
    }
    let failing = if flaky {
        table[0].0.clone()
    } else {
        match table.iter().find(|(p, s)| *s == Status::BuildFailed && start.iter().all(|&i| p.config[i])) {
            Some((p, _)) => p.clone(),
            None => {
                // A pairwise array need not contain a 3-way cause: the failure was then seen
                // in some other run, which the solver stands in for.
                let mut fixed = vec![None; space.vars().len()];
                for &(i, on) in &fault.flags {
                    fixed[i] = Some(on);
                }
                for &i in &start {
                    fixed[i] = Some(true);
                }
                let config = space.solve(&fixed, space.defaults()).expect("the fault is satisfiable");
                let p = Probe { config, compiler: fault.compiler.unwrap_or(Compiler::Gcc) };
                table.push((p.clone(), Status::BuildFailed));
                p
            }
        }
    };
    if flaky {
        table[0].1 = Status::BuildFailed;
    }
    let known_rows = if known { table.clone() } else { Vec::new() };
    let mut l = Localiser::new(&space, failing.clone(), Status::BuildFailed, &known_rows, &Compiler::ALL, Settings::default()).unwrap();
    let mut seen: HashSet<Probe> = known_rows.iter().map(|(p, _)| p.clone()).collect();
    seen.insert(failing.clone());
    let mut reran = false;
    let conclusion = loop {
        match l.next() {
            Step::Run(p) => {
                assert!(space.is_valid(&p.config), "proposed an invalid configuration: {}", space.assignment(&p.config).summary());
                if p == failing && !reran {
                    reran = true;
                } else {
                    assert!(seen.insert(p.clone()), "proposed a configuration again: {}", space.assignment(&p.config).summary());
                }
                let status = if !flaky && fault.fails(&p) { Status::BuildFailed } else { Status::Success };
                l.record(&p, status).unwrap();
            }
            Step::Done(c) => break c,
        }
    };
    assert_eq!(l.next(), Step::Done(conclusion.clone()), "the conclusion stays");
    Outcome { conclusion, followups: l.followups() }
}

const IUSE: &str = "jemalloc static-libs threads doc examples lto debug ipv6 ssl zstd";
const REQUIRED: &str = "lto? ( !debug ) ?? ( ssl zstd )";

fn check(fault: &str, start: &str, expected: &str) -> usize {
    let out = localise(IUSE, REQUIRED, fault, start, true, false);
    assert_eq!(out.conclusion.to_string(), expected, "{:#?}", out.conclusion.evidence());
    out.followups
}

#[test]
fn one_flag_on() {
    check("jemalloc", "", r#"fails with USE="jemalloc""#);
}

#[test]
fn one_flag_off() {
    check("-static-libs", "", r#"fails with USE="-static-libs""#);
}

#[test]
fn a_pair_of_flags() {
    check("-static-libs threads", "", r#"fails with USE="-static-libs threads""#);
}

#[test]
fn three_flags() {
    check("jemalloc -doc ipv6", "", r#"fails with USE="-doc ipv6 jemalloc""#);
}

#[test]
fn a_flag_with_one_compiler_only() {
    check("jemalloc @clang", "", r#"fails with USE="jemalloc" (clang only)"#);
    check("-threads @gcc", "", r#"fails with USE="-threads" (gcc only)"#);
}

#[test]
fn a_compiler_alone() {
    check("@clang", "", "fails with any USE (clang only)");
}

#[test]
fn every_configuration() {
    check("", "", "fails with any USE, any compiler");
}

#[test]
fn the_obvious_neighbour_is_invalid() {
    // `b` cannot go off while `a` is on: the neighbour of the failing configuration without
    // `b` must turn `a` off too, which says nothing about `a` alone.
    let iuse = "a b c d e f g h";
    let out = localise(iuse, "a? ( b )", "b", "a", true, false);
    assert_eq!(out.conclusion.to_string(), r#"fails with USE="b""#);
    // A cause that implies another value is stated without it: USE="a" (b is then on anyway).
    let out = localise(iuse, "a? ( b )", "a b", "a", true, false);
    assert_eq!(out.conclusion.to_string(), r#"fails with USE="a""#);
    // Exactly one of x y z: turning y off alone is never valid.
    let out = localise("x y z p q r s", "^^ ( x y z )", "y -p", "y", true, false);
    assert_eq!(out.conclusion.to_string(), r#"fails with USE="-p y""#);
    // Under `^^ ( x y )`, `x` on and `y` off are the same cause: the first kept is named.
    let out = localise("x y p q r", "^^ ( x y )", "x", "x", true, false);
    let shown = out.conclusion.to_string();
    assert!(shown == r#"fails with USE="x""# || shown == r#"fails with USE="-y""#, "{shown}");
}

#[test]
fn flaky_is_not_localised() {
    let out = localise(IUSE, REQUIRED, "", "", true, true);
    assert!(matches!(out.conclusion, Conclusion::Flaky { .. }), "{}", out.conclusion);
    assert_eq!(out.followups, 1, "only the rerun");
    assert_eq!(out.conclusion.to_string(), "flaky: the failing configuration passed when run again");
}

#[test]
fn from_the_failing_configuration_alone() {
    let out = localise(IUSE, REQUIRED, "-static-libs threads @gcc", "", false, false);
    assert_eq!(out.conclusion.to_string(), r#"fails with USE="-static-libs threads" (gcc only)"#);
}

#[test]
fn known_outcomes_save_follow_ups() {
    let iuse: Vec<String> = (0..24).map(|i| format!("f{i}")).collect();
    let iuse = iuse.join(" ");
    let with = localise(&iuse, "?? ( f0 f1 )", "f3 -f7", "", true, false);
    let without = localise(&iuse, "?? ( f0 f1 )", "f3 -f7", "", false, false);
    assert_eq!(with.conclusion.to_string(), r#"fails with USE="f3 -f7""#);
    assert_eq!(without.conclusion.to_string(), r#"fails with USE="f3 -f7""#);
    // Flipping one flag at a time would take 26 (the rerun, 24 flags, the compiler).
    assert!(with.followups < without.followups && with.followups <= 12, "{} vs {}", with.followups, without.followups);
}

#[test]
fn two_causes_are_inconclusive_not_wrong() {
    // Fails with `a` on or with `b` on: no single combination explains that.
    let e = ebuild("a b c d e", "");
    let profile = Profile::none();
    let space = Space::new(&e, &profile);
    let fails = |p: &Probe| p.config[0] || p.config[1];
    let failing = Probe { config: vec![true; 5], compiler: Compiler::Gcc };
    let mut l = Localiser::new(&space, failing, Status::BuildFailed, &[], &Compiler::ALL, Settings::default()).unwrap();
    let conclusion = loop {
        match l.next() {
            Step::Run(p) => l.record(&p, if fails(&p) { Status::BuildFailed } else { Status::Success }).unwrap(),
            Step::Done(c) => break c,
        }
    };
    assert!(matches!(conclusion, Conclusion::Inconclusive { .. }), "{conclusion}");
}

#[test]
fn another_failure_tells_nothing() {
    assert_eq!(Verdict::of(Status::TestFailed, Status::BuildFailed), Verdict::Unresolved);
    assert_eq!(Verdict::of(Status::InfraError, Status::BuildFailed), Verdict::Unresolved);
    assert_eq!(Verdict::of(Status::BuildFailed, Status::BuildFailed), Verdict::Fail);
    assert_eq!(Verdict::of(Status::Success, Status::TestFailed), Verdict::Pass);
}

#[test]
fn refusals() {
    let e = ebuild("a b", "a? ( b )");
    let profile = Profile::none();
    let space = Space::new(&e, &profile);
    let bad = Probe { config: vec![true, false], compiler: Compiler::Gcc };
    let new = |p: Probe, s: Status, c: &[Compiler]| Localiser::new(&space, p, s, &[], c, Settings::default()).map(|_| ());
    assert_eq!(new(bad, Status::BuildFailed, &Compiler::ALL), Err(Error::InvalidFailing));
    let good = Probe { config: vec![true, true], compiler: Compiler::Clang };
    assert_eq!(new(good.clone(), Status::DepsFailed, &Compiler::ALL), Err(Error::NotOwnFailure(Status::DepsFailed)));
    assert_eq!(new(good.clone(), Status::BuildFailed, &[Compiler::Gcc]), Err(Error::UnknownCompiler(Compiler::Clang)));
    let short = Probe { config: vec![true], compiler: Compiler::Gcc };
    assert_eq!(new(short, Status::BuildFailed, &Compiler::ALL), Err(Error::Length { got: 1, want: 2 }));
    assert_eq!(Error::NotOwnFailure(Status::DepsFailed).to_string(), "`deps_failed` is not a failure of the package itself");
}

#[test]
fn one_compiler_only_is_not_a_dimension() {
    let e = ebuild("a b c", "");
    let profile = Profile::none();
    let space = Space::new(&e, &profile);
    let failing = Probe { config: vec![true; 3], compiler: Compiler::Gcc };
    let mut l = Localiser::new(&space, failing, Status::TestFailed, &[], &[Compiler::Gcc], Settings::default()).unwrap();
    let conclusion = loop {
        match l.next() {
            Step::Run(p) => {
                assert_eq!(p.compiler, Compiler::Gcc);
                l.record(&p, if p.config[2] { Status::TestFailed } else { Status::Success }).unwrap();
            }
            Step::Done(c) => break c,
        }
    };
    assert_eq!(conclusion.to_string(), r#"fails with USE="c""#);
}

#[test]
fn the_conclusion_as_json() {
    let out = localise("a b c", "", "-a c @clang", "", true, false);
    let json = serde_json::to_value(&out.conclusion).unwrap();
    assert_eq!(json["kind"], "localised");
    assert_eq!(json["cause"], serde_json::json!({"flags": {"a": false, "c": true}, "compiler": "clang"}));
    assert_eq!(json["evidence"]["failing"]["status"], "build_failed");
    assert_eq!(json["evidence"]["runs"][0]["verdict"], "fail", "the rerun comes first");
    let back: Conclusion = serde_json::from_value(json).unwrap();
    assert_eq!(back, out.conclusion);
    let cause = out.conclusion.cause().unwrap();
    let u = UseAssignment::from_package_use("-a b c").unwrap();
    assert!(cause.matches(&u, Compiler::Clang) && !cause.matches(&u, Compiler::Gcc));
}

#[test]
fn replaying_the_evidence_gives_the_same_state() {
    let e = ebuild(IUSE, REQUIRED);
    let profile = Profile::none();
    let space = Space::new(&e, &profile);
    let fault = Fault::parse(&space, "-static-libs threads @clang");
    let mut fixed = vec![None; 10];
    fixed[1] = Some(false);
    fixed[2] = Some(true);
    let failing = Probe { config: space.solve(&fixed, &[true; 10]).unwrap(), compiler: Compiler::Clang };
    let start = || Localiser::new(&space, failing.clone(), Status::BuildFailed, &[], &Compiler::ALL, Settings::default()).unwrap();
    let mut l = start();
    let mut proposals = Vec::new();
    let conclusion = loop {
        match l.next() {
            Step::Run(p) => {
                proposals.push(p.clone());
                l.record(&p, if fault.fails(&p) { Status::BuildFailed } else { Status::Success }).unwrap();
            }
            Step::Done(c) => break c,
        }
    };
    assert_eq!(conclusion.to_string(), r#"fails with USE="-static-libs threads" (clang only)"#);
    let runs = &conclusion.evidence().runs;
    for cut in [0, 1, 3, runs.len() - 1] {
        let mut again = start();
        again.replay(&runs[..cut]).unwrap();
        assert_eq!(again.next(), Step::Run(proposals[cut].clone()), "after {cut} runs");
    }
    let mut again = start();
    again.replay(runs).unwrap();
    assert_eq!(again.next(), Step::Done(conclusion));
}

#[test]
fn resuming_from_the_evidence_with_more_known_still_localises() {
    let e = ebuild(IUSE, REQUIRED);
    let profile = Profile::none();
    let space = Space::new(&e, &profile);
    let fault = Fault::parse(&space, "-static-libs threads @clang");
    let mut fixed = vec![None; 10];
    fixed[1] = Some(false);
    fixed[2] = Some(true);
    let failing = Probe { config: space.solve(&fixed, &[true; 10]).unwrap(), compiler: Compiler::Clang };
    let status = |p: &Probe| if fault.fails(p) { Status::BuildFailed } else { Status::Success };
    let mut l = Localiser::new(&space, failing.clone(), Status::BuildFailed, &[], &Compiler::ALL, Settings::default()).unwrap();
    // Two follow-ups run; meanwhile the sweep stored an outcome the first localiser never saw.
    for _ in 0..2 {
        let Step::Run(p) = l.next() else { panic!("concluded early") };
        l.record(&p, status(&p)).unwrap();
    }
    let runs = l.evidence().runs;
    let extra = Probe { config: space.solve(&[None; 10], &[false; 10]).unwrap(), compiler: Compiler::Gcc };
    let known = [(extra.clone(), status(&extra))];
    let mut again = Localiser::new(&space, failing, Status::BuildFailed, &known, &Compiler::ALL, Settings::default()).unwrap();
    again.resume(&runs).unwrap();
    let conclusion = loop {
        match again.next() {
            Step::Run(p) => {
                assert!(!runs.iter().any(|r| probe_of(&space, &r.use_flags, r.compiler).as_ref() == Some(&p)), "{p:?} ran before");
                again.record(&p, status(&p)).unwrap();
            }
            Step::Done(c) => break c,
        }
    };
    assert_eq!(conclusion.to_string(), r#"fails with USE="-static-libs threads" (clang only)"#);
    assert_eq!(conclusion.evidence().runs[..2], runs[..]);
}

#[test]
fn a_second_cause_in_the_array_does_not_mislead() {
    // The array's rows fail for two reasons (`a` on, or `h` off), both as build failures;
    // the failing configuration has `h` on, so only `a` explains it: the array's failing rows
    // contradict every candidate, stop binding, and the follow-ups find `a`.
    let e = ebuild("a b c d e f g h", "");
    let profile = Profile::none();
    let space = Space::new(&e, &profile);
    let fails = |p: &Probe| p.config[0] || !p.config[7];
    let rows = cover::covering_array(&space, 2, 0).rows;
    let known: Vec<(Probe, Status)> = rows
        .iter()
        .flat_map(|r| Compiler::ALL.map(|c| Probe { config: r.clone(), compiler: c }))
        .map(|p| {
            let s = if fails(&p) { Status::BuildFailed } else { Status::Success };
            (p, s)
        })
        .collect();
    let failing = known.iter().find(|(p, s)| *s == Status::BuildFailed && p.config[7]).unwrap().0.clone();
    let mut l = Localiser::new(&space, failing, Status::BuildFailed, &known, &Compiler::ALL, Settings::default()).unwrap();
    let conclusion = loop {
        match l.next() {
            Step::Run(p) => l.record(&p, if fails(&p) { Status::BuildFailed } else { Status::Success }).unwrap(),
            Step::Done(c) => break c,
        }
    };
    assert_eq!(conclusion.to_string(), r#"fails with USE="a""#);
}
