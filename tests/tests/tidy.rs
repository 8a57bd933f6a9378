//! Tidy: the project's habits as a test, in the manner of rust-analyzer's `xtask/src/tidy.rs`.
//! Each rule is one `#[test]`; ARCHITECTURE.md's invariants name the test that keeps them.
//!
//! - every Rust file opens with a `//!` doc comment;
//! - libraries return typed errors: no `anyhow` in a library crate's code (binaries and test
//!   support may use it);
//! - no `#[ignore]` (a test that cannot run says why and returns, as the slow ones do);
//! - `Command::new` only in `gah_util::process` (clippy's `disallowed_methods` says the same
//!   for the workspace; this also covers code clippy does not build, such as `fuzz/`);
//! - the crate graph is the table in ARCHITECTURE.md's code map, edge for edge, and no
//!   product crate depends on test support;
//! - gah-app's `app` and `supervisor` name no concrete backend;
//! - no SQL over the results database outside gah-core: no SQL string naming its tables, and
//!   `rusqlite` only in gah-core and the crates with SQLite databases of their own.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use gah_tests::project_root;

/// Every Rust source file of the checkout, skipping build output, caches and hidden folders.
fn rust_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                if !(name.starts_with('.') || name == "target" || name == "results" || name == "node_modules") {
                    walk(&path, out);
                }
            } else if kind.is_file() && name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&project_root(), &mut out);
    out.sort();
    assert!(out.len() > 50, "found only {} Rust files under {}", out.len(), project_root().display());
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(project_root()).unwrap_or(path).display().to_string()
}

/// Lines of code, without line comments (so a comment may name what it forbids).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| (i + 1, l.split("//").next().unwrap_or(""))).filter(|(_, l)| !l.trim().is_empty())
}

/// Files that may name what they forbid: this test, and the one place allowed to spawn.
fn scanned_for_code_rules() -> impl Iterator<Item = PathBuf> {
    let exempt = [project_root().join("tests/tests/tidy.rs"), project_root().join("util/src/process.rs")];
    rust_files().into_iter().filter(move |f| !exempt.contains(f))
}

fn fail_with(rule: &str, offenders: &[String]) {
    assert!(offenders.is_empty(), "tidy: {rule}:\n  {}", offenders.join("\n  "));
}

#[test]
fn every_module_opens_with_a_doc_comment() {
    let offenders: Vec<String> = rust_files()
        .into_iter()
        .filter(|f| {
            let text = fs::read_to_string(f).unwrap_or_default();
            !text.lines().find(|l| !l.trim().is_empty()).is_some_and(|l| l.starts_with("//!"))
        })
        .map(|f| relative(&f))
        .collect();
    fail_with("these files do not open with a `//!` comment saying what they are for", &offenders);
}

#[test]
fn no_ignored_tests() {
    let mut offenders = Vec::new();
    for f in scanned_for_code_rules() {
        let text = fs::read_to_string(&f).unwrap_or_default();
        for (n, line) in code_lines(&text) {
            if line.contains("#[ignore") || (line.contains("cfg_attr(") && line.contains("ignore")) {
                offenders.push(format!("{}:{n}", relative(&f)));
            }
        }
    }
    fail_with("`#[ignore]` hides a test; gate a slow one on RUN_SLOW_TESTS and say why it returned", &offenders);
}

#[test]
fn programs_are_spawned_only_by_the_process_helper() {
    let mut offenders = Vec::new();
    for f in scanned_for_code_rules() {
        let text = fs::read_to_string(&f).unwrap_or_default();
        for (n, line) in code_lines(&text) {
            if line.contains("Command::new(") {
                offenders.push(format!("{}:{n}", relative(&f)));
            }
        }
    }
    fail_with("spawn programs with gah_util::process::command, not Command::new", &offenders);
}

/// `cargo metadata` for the workspace: the real crate graph, as Cargo sees it.
fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = gah_util::process::run_checked(
        gah_util::process::command(cargo).args(["metadata", "--format-version", "1", "--no-deps", "--offline"]).current_dir(project_root()),
    )
    .expect("cargo metadata");
    serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON")
}

/// Test support: may use anyhow, and no product crate may depend on it.
const TEST_SUPPORT: &[&str] = &["gah-tests", "gah-boinc-harness"];

#[test]
fn libraries_return_typed_errors() {
    let meta = metadata();
    let mut offenders = Vec::new();
    for package in meta["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().unwrap_or_default();
        if TEST_SUPPORT.contains(&name) {
            continue;
        }
        for target in package["targets"].as_array().into_iter().flatten() {
            if !target["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "lib")) {
                continue;
            }
            // The library's folder: every module below it belongs to the library, except a
            // binary's own `main.rs` and `bin/`.
            let root = PathBuf::from(target["src_path"].as_str().expect("src_path"));
            let dir = root.parent().expect("lib.rs has a folder");
            for f in rust_files().into_iter().filter(|f| f.starts_with(dir)) {
                let rel = f.strip_prefix(dir).unwrap_or(&f);
                if rel == Path::new("main.rs") || rel.starts_with("bin") {
                    continue;
                }
                let text = fs::read_to_string(&f).unwrap_or_default();
                for (n, line) in code_lines(&text) {
                    if line.contains("anyhow") {
                        offenders.push(format!("{}:{n} (crate {name})", relative(&f)));
                    }
                }
            }
        }
    }
    fail_with("library code returns typed errors (thiserror); anyhow belongs in binaries and tests", &offenders);
}

/// The crate graph as ARCHITECTURE.md's code map states it: its table of `| `crate` |
/// `dep`, `dep` |` rows (a row saying "nothing of ours" has no edges). A new edge is a design
/// decision: the table and `Cargo.toml` change together.
fn documented_edges() -> BTreeMap<String, BTreeSet<String>> {
    let doc = fs::read_to_string(project_root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut edges = BTreeMap::new();
    let ticked = |cell: &str| -> Vec<String> { cell.split('`').skip(1).step_by(2).map(str::to_owned).collect() };
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if let [_, krate, deps, ..] = cells[..] {
            if let [name] = &ticked(krate)[..] {
                edges.insert(name.clone(), ticked(deps).into_iter().collect());
            }
        }
    }
    assert!(edges.len() >= 5, "ARCHITECTURE.md has no crate table (| `crate` | `dep`, ... |)");
    edges
}

#[test]
fn the_crate_graph_is_the_one_in_architecture_md() {
    let meta = metadata();
    let packages = meta["packages"].as_array().expect("packages");
    let ours: BTreeSet<&str> = packages.iter().map(|p| p["name"].as_str().unwrap()).collect();
    let documented = documented_edges();
    let mut offenders = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap();
        let test_support = TEST_SUPPORT.contains(&name);
        let actual: BTreeSet<String> = package["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["kind"].as_str() != Some("dev"))
            .map(|d| d["name"].as_str().unwrap())
            .filter(|d| ours.contains(d))
            .map(str::to_owned)
            .collect();
        for dep in package["dependencies"].as_array().into_iter().flatten().map(|d| d["name"].as_str().unwrap()) {
            if TEST_SUPPORT.contains(&dep) && !test_support {
                offenders.push(format!("{name} → {dep}: product code never depends on test support"));
            }
        }
        if test_support {
            continue;
        }
        let Some(stated) = documented.get(name) else {
            offenders.push(format!("{name}: not in ARCHITECTURE.md's crate table"));
            continue;
        };
        for dep in actual.difference(stated) {
            offenders.push(format!("{name} → {dep}: in Cargo.toml, not in ARCHITECTURE.md"));
        }
        for dep in stated.difference(&actual) {
            offenders.push(format!("{name} → {dep}: in ARCHITECTURE.md, not in Cargo.toml"));
        }
    }
    for name in documented.keys().filter(|n| !ours.contains(n.as_str())) {
        offenders.push(format!("{name}: in ARCHITECTURE.md's crate table, not in the workspace"));
    }
    fail_with("the crate graph and ARCHITECTURE.md's table disagree", &offenders);
}

/// ARCHITECTURE.md: `app` and `supervisor` know only the `Backend`/`Guest` traits.
#[test]
fn the_supervisor_and_the_app_know_only_the_backend_traits() {
    let mut offenders = Vec::new();
    for file in ["boinc-app/src/app.rs", "boinc-app/src/supervisor.rs"] {
        let text = fs::read_to_string(project_root().join(file)).expect(file);
        for (n, line) in code_lines(&text) {
            if ["vm::", "sandbox::", "VmBackend", "SandboxBackend"].iter().any(|name| line.contains(name)) {
                offenders.push(format!("{file}:{n}"));
            }
        }
    }
    fail_with("a concrete backend is named outside backend::choose; go through the Backend/Guest traits", &offenders);
}

/// The results database's tables (`core/src/db/mod.rs`'s migrations).
const RESULTS_TABLES: &[&str] = &["outcomes", "outcomes_v3", "infra_failures", "quarantine", "snapshots", "cell_latest", "localisations"];

/// Files outside gah-core that keep SQLite databases of their own and so may use rusqlite:
/// the migration helper, the work generator's queue (`state.sqlite`), the validator's
/// host statistics, and the publisher's CernVM-FS catalogs and history.
const OWN_SQLITE_FILES: &[&str] = &[
    "util/src/sqlite.rs",
    "work-generator/src/queue.rs",
    "validator/src/hosts.rs",
    "validator/src/agreed.rs",
    "validator/src/boinc.rs",
    "publish/src/lib.rs",
    "publish/src/catalog.rs",
    "publish/src/history.rs",
    "publish/src/verify.rs",
];
/// The crates those files are in, and gah-core: the only ones that may depend on rusqlite.
const SQLITE_CRATES: &[&str] = &["gah-core", "gah-util", "gah-workgen", "gah-validator", "gah-publish"];

/// The results table `text` names after an SQL keyword written as this project writes SQL,
/// in capitals (`FROM outcomes`, `JOIN snapshots`, `INTO quarantine`, ...), if any. Capitals
/// keep Rust (`Totals::from(outcomes)`) and prose apart from SQL.
fn names_a_results_table(text: &str) -> Option<&'static str> {
    let words: Vec<&str> = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| !w.is_empty()).collect();
    words.windows(2).find_map(|w| {
        let keyword = ["FROM", "JOIN", "INTO", "UPDATE", "TABLE", "EXISTS"].contains(&w[0]);
        keyword.then(|| RESULTS_TABLES.iter().find(|t| **t == w[1]).copied()).flatten()
    })
}

/// ARCHITECTURE.md: gah-core owns the results database, reads included.
#[test]
fn sql_over_the_results_database_stays_in_gah_core() {
    let core = project_root().join("core");
    let mut offenders = Vec::new();
    for f in scanned_for_code_rules().filter(|f| !f.starts_with(&core)) {
        let rel = relative(&f);
        let text = fs::read_to_string(&f).unwrap_or_default();
        let lines: Vec<(usize, &str)> = code_lines(&text).collect();
        for (i, (n, line)) in lines.iter().enumerate() {
            if line.contains("rusqlite") && !OWN_SQLITE_FILES.contains(&rel.as_str()) {
                offenders.push(format!("{rel}:{n}: uses rusqlite"));
            }
            // A statement may break its line between keyword and table.
            let next = lines.get(i + 1).map_or("", |(_, l)| l);
            // (Reported on the keyword's line: a match wholly on the next line is the next one's.)
            if let Some(table) = names_a_results_table(&format!("{line} {next}")) {
                if names_a_results_table(line).is_some() || names_a_results_table(next).is_none() {
                    offenders.push(format!("{rel}:{n}: SQL over `{table}`"));
                }
            }
        }
    }
    let meta = metadata();
    for package in meta["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().unwrap_or_default();
        let uses = package["dependencies"].as_array().into_iter().flatten().any(|d| d["name"] == "rusqlite");
        if uses && !SQLITE_CRATES.contains(&name) {
            offenders.push(format!("{name}: depends on rusqlite"));
        }
    }
    fail_with(
        "SQL over the results database belongs in gah-core: add the query to gah_core::db::read (typed rows, \
         columns by name, a unit test there) and call it; only gah-core and the crates with databases of their own \
         (the queue, the validator's host statistics and agreed packages, gah_util::sqlite) use rusqlite",
        &offenders,
    );
}

#[test]
fn the_results_sql_rule_sees_what_it_should() {
    assert_eq!(names_a_results_table(r#""SELECT count(*) FROM outcomes WHERE x""#), Some("outcomes"));
    assert_eq!(names_a_results_table(r#""INSERT INTO quarantine (wu_name)"#), Some("quarantine"));
    assert_eq!(names_a_results_table("LEFT JOIN snapshots s"), Some("snapshots"));
    assert_eq!(names_a_results_table("FROM\n outcomes"), Some("outcomes"));
    assert_eq!(names_a_results_table("Totals::from(outcomes)"), None);
    assert_eq!(names_a_results_table(r#""quarantined: {reason}""#), None);
    assert_eq!(names_a_results_table(r#""SELECT md5 FROM cells WHERE job_id = ?1""#), None);
    assert_eq!(names_a_results_table("the outcomes from a batch"), None);
}
