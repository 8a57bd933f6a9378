//! An independent oracle: Portage's own `portage.dep.check_required_use` (PyPI `portage`, in
//! the venv `.cache/portage-venv` or `$GAH_PORTAGE_PYTHON`) judges every pairwise
//! configuration emitted for GURU and Funtoo core-kit (it must find 0 invalid), and agrees
//! with our evaluator on seeded random assignments (valid and invalid alike).
//! Skips, saying why, when the venv or the data is absent.

#![allow(clippy::print_stdout, clippy::print_stderr)] // A test that cannot run, or measures, says so on its terminal.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use gah_ebuild::{configurations, read_repository, Ebuild, Profile, Strategy};

const ORACLE: &str = r#"
import json, sys
from portage.dep import check_required_use
out = []
for line in sys.stdin:
    q = json.loads(line)
    ok = check_required_use(q["r"], frozenset(q["on"]), lambda f: True, eapi=q["eapi"])
    out.append("1" if ok else "0")
sys.stdout.write("".join(out))
"#;

fn python() -> Option<PathBuf> {
    let p = std::env::var_os("GAH_PORTAGE_PYTHON")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/portage-venv/bin/python3"), PathBuf::from);
    if !p.exists() {
        eprintln!("skipping: no Portage venv python at {} (set GAH_PORTAGE_PYTHON)", p.display());
        return None;
    }
    let ok = gah_util::process::command(&p).args(["-c", "import portage.dep"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipping: {} cannot import portage.dep", p.display());
        return None;
    }
    Some(p)
}

/// One query: REQUIRED_USE, EAPI, and the flags on (IUSE and profile-implicit).
struct Query {
    cpv: String,
    line: String,
    ours: bool,
    emitted: bool,
}

fn query(e: &Ebuild, profile: &Profile, on: &dyn Fn(&str) -> bool, emitted: bool) -> Query {
    let flags_on: Vec<&str> = e.required_use.flags().iter().map(String::as_str).filter(|f| on(f)).collect();
    let ours = e.required_use.eval(e.empty_groups_true(), on);
    let _ = profile;
    let line = serde_json::json!({ "r": e.required_use.to_string(), "eapi": e.eapi, "on": flags_on }).to_string();
    Query { cpv: e.cpv.clone(), line, ours, emitted }
}

#[test]
fn portage_agrees() {
    let Some(py) = python() else { return };
    let root = PathBuf::from("/work/shared/data/md5-cache");
    if !root.join("guru").is_dir() {
        eprintln!("skipping: no md5-cache data at {}", root.display());
        return;
    }
    let profile = Profile::amd64_linux();
    let mut queries = Vec::new();
    let mut seed = 0x5eed_u64;
    let mut rand = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        seed >> 33
    };
    for name in ["guru", "funtoo-core-kit"] {
        let (repo, _) = read_repository(&root.join(name));
        for e in repo.ebuilds.iter().filter(|e| !e.required_use.is_empty()) {
            let (configs, _) = configurations(e, &profile, Strategy::Covering { t: 2, seed: 0 });
            for a in &configs {
                let on = |f: &str| a.0.get(f).copied().unwrap_or_else(|| profile.implicit(f));
                queries.push(query(e, &profile, &on, true));
            }
            // Random assignments of the named flags: both verdicts must match Portage's.
            for _ in 0..8 {
                let bits = rand();
                let flags = e.required_use.flags();
                let on = |f: &str| flags.iter().position(|x| x == f).is_some_and(|i| bits >> (i % 31) & 1 == 1);
                queries.push(query(e, &profile, &on, false));
            }
        }
    }
    // Corner cases of the grammar, every assignment of a..d, in an EAPI with and without
    // Portage's empty_groups_always_true.
    let corners = [
        "|| ( )",
        "^^ ( )",
        "?? ( )",
        "( )",
        "a? ( )",
        "|| ( a? ( b ) )",
        "|| ( a? ( b ) c )",
        "^^ ( a? ( b ) c? ( d ) )",
        "|| ( ( ) )",
        "?? ( ( a b ) c )",
        "^^ ( a? ( b ) c? ( d ) ( ) )",
        "?? ( ( a b ) !c d? ( ) )",
        "a? ( || ( b? ( c ) !d ) ) !a? ( ^^ ( b c d ) )",
        "|| ( ( a? ( b ) ) ( c ) )",
        "!a? ( !b? ( ?? ( c d ) ) )",
        "^^ ( ( a b ) ( c d ) )",
    ];
    for (i, expr) in corners.iter().enumerate() {
        for eapi in ["6", "8"] {
            let text = format!("EAPI={eapi}\nIUSE=a b c d\nREQUIRED_USE={expr}\nSLOT=0\n_md5_=0\n");
            let e = gah_ebuild::md5cache::parse_entry(&format!("corner/case{i}-1"), &text, &mut Vec::new()).unwrap();
            for bits in 0..16u32 {
                let on = |f: &str| ["a", "b", "c", "d"].iter().position(|x| *x == f).is_some_and(|k| bits >> k & 1 == 1);
                queries.push(query(&e, &profile, &on, false));
            }
        }
    }
    let mut child = gah_util::process::command(&py)
        .args(["-c", ORACLE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the oracle");
    let input: String = queries.iter().map(|q| format!("{}\n", q.line)).collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "oracle failed: {}", String::from_utf8_lossy(&out.stderr));
    let verdicts: Vec<bool> = out.stdout.iter().map(|b| *b == b'1').collect();
    assert_eq!(verdicts.len(), queries.len());
    let mut invalid_emitted = Vec::new();
    let mut disagreements = Vec::new();
    for (q, portage) in queries.iter().zip(&verdicts) {
        if q.emitted && !portage {
            invalid_emitted.push(format!("{} {}", q.cpv, q.line));
        }
        if q.ours != *portage {
            disagreements.push(format!("{} ours={} portage={portage} {}", q.cpv, q.ours, q.line));
        }
    }
    let emitted = queries.iter().filter(|q| q.emitted).count();
    eprintln!(
        "oracle: {} queries ({emitted} emitted configurations), {} invalid, {} disagreements",
        queries.len(),
        invalid_emitted.len(),
        disagreements.len()
    );
    assert!(invalid_emitted.is_empty(), "Portage rejects emitted configurations: {:#?}", &invalid_emitted[..invalid_emitted.len().min(5)]);
    assert!(disagreements.is_empty(), "evaluator disagrees with Portage: {:#?}", &disagreements[..disagreements.len().min(5)]);
}

const REFUSALS: &str = r#"
import json, sys
from portage.dep import check_required_use
from portage.exception import InvalidDependString
for line in sys.stdin:
    q = json.loads(line)
    known = frozenset(q["known"])
    try:
        check_required_use(q["r"], frozenset(), lambda f: f in known, eapi=q["eapi"])
        print("ok")
    except InvalidDependString as e:
        print(str(e).replace("\n", " "))
"#;

/// Issue 12, item 2: we refuse an ebuild for a REQUIRED_USE flag outside IUSE exactly when
/// Portage's `check_required_use` raises `InvalidDependString` for it, naming the same flag.
/// Portage is given, as IUSE_EFFECTIVE, IUSE plus the flags our profile model says are
/// implicit: what is checked is which flags count (all those named, taken branch or not) and
/// which one is reported.
#[test]
fn portage_refuses_what_we_refuse() {
    let Some(py) = python() else { return };
    let profile = Profile::amd64_linux();
    let mut ebuilds = Vec::new();
    let root = PathBuf::from("/work/shared/data/md5-cache");
    for name in ["guru", "funtoo-core-kit"] {
        if root.join(name).is_dir() {
            ebuilds.extend(read_repository(&root.join(name)).0.ebuilds.into_iter().filter(|e| !e.required_use.is_empty()));
        }
    }
    let cases = [
        ("8", "a", "|| ( a miniz )"),
        ("8", "a", "a? ( x )"),
        ("8", "a", "!a? ( ^^ ( a x y ) )"),
        ("8", "a", "x? ( a ) y"),
        ("8", "a", "^^ ( a kernel_linux elibc_musl x86 prefix )"),
        ("8", "a", "a? ( build )"),
        ("4", "a", "a? ( build userland_GNU )"),
        ("6", "a", "|| ( a ( b ) )"),
    ];
    for (i, (eapi, iuse, ru)) in cases.iter().enumerate() {
        let text = format!("EAPI={eapi}\nIUSE={iuse}\nREQUIRED_USE={ru}\nSLOT=0\n_md5_=0\n");
        ebuilds.push(gah_ebuild::md5cache::parse_entry(&format!("case/c{i}-1"), &text, &mut Vec::new()).unwrap());
    }
    let lines: String = ebuilds
        .iter()
        .map(|e| {
            let known: Vec<&str> = e
                .required_use
                .flags()
                .iter()
                .map(String::as_str)
                .filter(|f| e.has_iuse(f) || profile.in_iuse_effective(f, &e.eapi))
                .collect();
            format!("{}\n", serde_json::json!({ "r": e.required_use.to_string(), "eapi": e.eapi, "known": known }))
        })
        .collect();
    let mut child = gah_util::process::command(&py)
        .args(["-c", REFUSALS])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the oracle");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(lines.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "oracle failed: {}", String::from_utf8_lossy(&out.stderr));
    let verdicts: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(verdicts.len(), ebuilds.len());
    let mut refused = 0;
    for (e, portage) in ebuilds.iter().zip(&verdicts) {
        let planned = gah_ebuild::plan_ebuild(e, &profile, Strategy::Covering { t: 2, seed: 0 }, &gah_ebuild::Budget::default());
        let ours = planned.notes.iter().find(|(s, m)| *s == gah_ebuild::Severity::Error && m.contains("is not in IUSE"));
        match ours {
            Some((_, m)) => {
                refused += 1;
                assert!(m.contains(portage.as_str()), "{}: we say `{m}`, Portage `{portage}`", e.cpv);
            }
            None => assert_eq!(portage, "ok", "{}: Portage refuses it, we do not", e.cpv),
        }
    }
    eprintln!("{} ebuilds, {refused} refused for a REQUIRED_USE flag outside IUSE, as Portage does", ebuilds.len());
    assert!(refused >= 6, "the synthetic cases refuse");
}
