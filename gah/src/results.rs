//! `gah results`: what the results database says, for a QA team.
//!
//! Every query reads the database the assimilator (or `gah run`) writes; nothing here writes
//! to it. A *cell* is one configuration: (repository, `category/package-version`, USE,
//! compiler). A cell has one row per tree snapshot it was built in; "the state of a cell" is
//! its latest row (highest snapshot, then latest assimilated).
//!
//! - `list`: every stored outcome (the default; `--json` prints JSON lines).
//! - `fails`: failures by package, the package's own failures (`build_failed`,
//!   `test_failed`) apart from "a dependency failed" (`deps_failed`) and from spurious
//!   results (timeouts, infrastructure errors).
//! - `matrix PKG`: USE rows × compiler columns for one package (`cat/pkg` or `cat/pkg-ver`).
//! - `history CPV [--use FLAGS] [--compiler C]`: every row of a cell, oldest first.
//! - `changes [--snapshot S]`: cells newly failing and newly fixed in a snapshot (default:
//!   the latest), against each cell's previous non-spurious result.
//! - `blame`: cells whose dependency failed, grouped by the dependency the build log names.
//! - `bug CPV [--use FLAGS] [--compiler C] [--out DIR]`: a bug-report bundle for one failure
//!   in the form Gentoo's bugzilla asks for (summary line, reproduction, build log excerpt,
//!   `emerge --info`, attachments).
//! - `snapshots`: the tree snapshots.
//!
//! With `--json` every command prints one JSON document on stdout (except `list`: JSON lines).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use gah_core::db::Database;
use gah_core::job::split_cpv;
use gah_core::outcome::Status;
use rusqlite::{params_from_iter, Connection};
use serde_json::{json, Value};

/// Options of `gah results`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = false)]
pub struct ResultsArgs {
    /// One JSON document on stdout instead of text (`list`: JSON lines).
    #[arg(long, global = true)]
    json: bool,
    /// The results database [default: $GAH_RESULTS_DB, else results/results.sqlite in the
    /// checkout]. With either, `gah results` needs no checkout: a BOINC server has only the
    /// database.
    #[arg(long, global = true, value_name = "PATH")]
    db: Option<PathBuf>,
    #[command(subcommand)]
    query: Option<Query>,
}

/// A cell selector: `CPV [--use FLAGS] [--compiler C]`.
#[derive(Debug, Args)]
struct CellArgs {
    /// `category/package-version`.
    cpv: String,
    /// Only cells with these flag values, e.g. `--use 'ssl -static'` (other flags any value).
    #[arg(long = "use", value_name = "FLAGS", allow_hyphen_values = true)]
    use_flags: Option<String>,
    /// Only this compiler (gcc or clang).
    #[arg(long)]
    compiler: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Query {
    /// Every stored outcome (the default).
    List,
    /// Failures by package: own failures apart from dependency failures and spurious results.
    Fails,
    /// One package's matrix: USE rows x compiler columns, the latest outcome of each cell.
    Matrix {
        /// `category/package` (every version) or `category/package-version`.
        package: String,
    },
    /// The history of a cell (or of every cell of CPV matching --use and --compiler).
    History(CellArgs),
    /// Cells newly failing and newly fixed in a snapshot, against their previous result.
    Changes {
        /// The snapshot (label or id) [default: the latest with outcomes].
        #[arg(long)]
        snapshot: Option<String>,
    },
    /// Cells whose dependency failed, grouped by the dependency their build log names.
    Blame,
    /// A bug-report bundle for one failure, in the form Gentoo's bugzilla expects.
    Bug {
        #[command(flatten)]
        cell: CellArgs,
        /// Also write summary.txt, comment.txt, build.log and emerge-info.txt here.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// The tree snapshots, oldest first.
    Snapshots,
}

/// The database `gah results` reads: `--db`, else `$GAH_RESULTS_DB`, else `None` (then the
/// checkout's `results/results.sqlite`, which needs a checkout to find).
pub fn explicit_db(args: &ResultsArgs) -> Option<PathBuf> {
    args.db.clone().or_else(|| std::env::var_os("GAH_RESULTS_DB").filter(|p| !p.is_empty()).map(PathBuf::from))
}

/// Runs `gah results` against the database at `db`.
pub fn command(args: ResultsArgs, db: &Path) -> anyhow::Result<()> {
    // Reading must not create an empty database where the user expected results.
    anyhow::ensure!(db.exists(), "no results database at {} (run `gah run` first, or set GAH_RESULTS_DB or --db)", db.display());
    let db = Database::open(db)?;
    let q = Queries::new(&db)?;
    let json = args.json;
    let out = match args.query.unwrap_or(Query::List) {
        Query::List => return list(&q, json),
        Query::Fails => fails(&q)?,
        Query::Matrix { package } => matrix(&q, &package)?,
        Query::History(cell) => history(&q, &cell)?,
        Query::Changes { snapshot } => changes(&q, snapshot.as_deref())?,
        Query::Blame => blame(&q)?,
        Query::Bug { cell, out } => bug(&q, &cell, out.as_deref())?,
        Query::Snapshots => snapshots(&q)?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&out.json)?);
    } else {
        print!("{}", out.text);
    }
    Ok(())
}

/// A command's answer in both forms.
#[derive(Debug)]
struct Output {
    text: String,
    json: Value,
}

/// One stored row, as the queries read it.
#[derive(Debug, Clone)]
struct Row {
    seq: i64,
    wu_name: String,
    snapshot: i64,
    repo: String,
    cpv: String,
    use_flags: String,
    compiler: String,
    status: String,
    failed_phase: Option<String>,
    failing_tests: Vec<String>,
    summary: String,
    log_sha256: String,
    emerge_info_sha256: Option<String>,
    backend: String,
    accelerator: String,
    duration_secs: f64,
    assimilated_at: String,
}

impl Row {
    fn status(&self) -> Option<Status> {
        self.status.parse().ok()
    }

    fn cell(&self) -> (String, String, String, String) {
        (self.repo.clone(), self.cpv.clone(), self.use_flags.clone(), self.compiler.clone())
    }

    fn is_own_failure(&self) -> bool {
        matches!(self.status(), Some(Status::BuildFailed | Status::TestFailed))
    }

    fn is_spurious(&self) -> bool {
        self.status().is_none_or(Status::is_spurious)
    }

    /// `status` or `status (phase)`.
    fn short(&self) -> String {
        match (&self.failed_phase, self.status()) {
            (Some(p), Some(Status::BuildFailed | Status::Timeout)) => format!("{} ({p})", self.status),
            _ => self.status.clone(),
        }
    }

    fn to_json(&self, q: &Queries<'_>) -> Value {
        json!({
            "seq": self.seq, "wu_name": self.wu_name, "snapshot": q.label(self.snapshot), "repo": self.repo, "cpv": self.cpv,
            "use": self.use_flags, "compiler": self.compiler, "status": self.status,
            "failed_phase": self.failed_phase, "failing_tests": self.failing_tests, "summary": self.summary,
            "duration_secs": self.duration_secs, "assimilated_at": self.assimilated_at,
            "log": Database::log_relative_path(&self.log_sha256),
            "emerge_info": self.emerge_info_sha256.as_deref().map(Database::log_relative_path),
        })
    }
}

const COLUMNS: &str = "seq, wu_name, snapshot, repo, cpv, use_flags, compiler, status, failed_phase, failing_tests, summary,
    log_sha256, emerge_info_sha256, backend, accelerator, duration_secs, assimilated_at";

struct Queries<'a> {
    db: &'a Database,
    labels: BTreeMap<i64, String>,
}

impl<'a> Queries<'a> {
    fn new(db: &'a Database) -> anyhow::Result<Queries<'a>> {
        let labels = db.snapshots()?.into_iter().map(|s| (s.id, s.label)).collect();
        Ok(Queries { db, labels })
    }

    fn conn(&self) -> &Connection {
        self.db.connection()
    }

    fn label(&self, id: i64) -> String {
        self.labels.get(&id).cloned().unwrap_or_else(|| id.to_string())
    }

    /// Rows matching `filter` (SQL over the columns of `outcomes`), by cell then oldest first.
    fn rows(&self, filter: &str, params: &[&str]) -> anyhow::Result<Vec<Row>> {
        let sql = format!("SELECT {COLUMNS} FROM outcomes WHERE {filter} ORDER BY cpv, use_flags, compiler, repo, snapshot, seq");
        self.query(&sql, params)
    }

    /// The latest row of every cell matching `filter`.
    fn latest(&self, filter: &str, params: &[&str]) -> anyhow::Result<Vec<Row>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM (
                SELECT *, row_number() OVER (PARTITION BY repo, cpv, use_flags, compiler ORDER BY snapshot DESC, seq DESC) AS n
                FROM outcomes WHERE {filter})
             WHERE n = 1 ORDER BY cpv, use_flags, compiler, repo"
        );
        self.query(&sql, params)
    }

    fn query(&self, sql: &str, params: &[&str]) -> anyhow::Result<Vec<Row>> {
        let mut stmt = self.conn().prepare(sql)?;
        let rows = stmt.query_map(params_from_iter(params), |r| {
            let failing: String = r.get(9)?;
            Ok(Row {
                seq: r.get(0)?,
                wu_name: r.get(1)?,
                snapshot: r.get(2)?,
                repo: r.get(3)?,
                cpv: r.get(4)?,
                use_flags: r.get(5)?,
                compiler: r.get(6)?,
                status: r.get(7)?,
                failed_phase: r.get(8)?,
                failing_tests: serde_json::from_str(&failing).unwrap_or_default(),
                summary: r.get(10)?,
                log_sha256: r.get(11)?,
                emerge_info_sha256: r.get(12)?,
                backend: r.get(13)?,
                accelerator: r.get(14)?,
                duration_secs: r.get(15)?,
                assimilated_at: r.get(16)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Rows of the cells selected by `cell` (latest only, or every row).
    fn cell_rows(&self, cell: &CellArgs, all: bool) -> anyhow::Result<Vec<Row>> {
        let wanted = cell.use_flags.as_deref().map(parse_use).transpose()?;
        if let Some(c) = &cell.compiler {
            c.parse::<gah_core::job::Compiler>().map_err(anyhow::Error::msg)?;
        }
        let rows = if all { self.rows("cpv = ?1", &[&cell.cpv])? } else { self.latest("cpv = ?1", &[&cell.cpv])? };
        if rows.is_empty() {
            bail!("no outcomes for {} (is it category/package-version?)", cell.cpv);
        }
        let kept: Vec<Row> = rows
            .into_iter()
            .filter(|r| cell.compiler.as_deref().is_none_or(|c| c == r.compiler))
            .filter(|r| wanted.as_ref().is_none_or(|w| use_matches(&r.use_flags, w)))
            .collect();
        if kept.is_empty() {
            bail!("{} has outcomes, but none with {}", cell.cpv, describe_selector(cell));
        }
        Ok(kept)
    }
}

/// `--use 'a -b +c'` as flag → value.
fn parse_use(text: &str) -> anyhow::Result<BTreeMap<String, bool>> {
    let mut out = BTreeMap::new();
    for word in text.split_whitespace() {
        let (flag, on) = match word.strip_prefix('-') {
            Some(f) => (f, false),
            None => (word.strip_prefix('+').unwrap_or(word), true),
        };
        anyhow::ensure!(!flag.is_empty(), "`{word}` is not a USE flag");
        out.insert(flag.to_owned(), on);
    }
    Ok(out)
}

/// True when the stored assignment (`package.use` notation) has every wanted value.
fn use_matches(stored: &str, wanted: &BTreeMap<String, bool>) -> bool {
    let have = parse_use(stored).unwrap_or_default();
    wanted.iter().all(|(flag, on)| have.get(flag) == Some(on))
}

fn describe_selector(cell: &CellArgs) -> String {
    let mut parts = Vec::new();
    if let Some(u) = &cell.use_flags {
        parts.push(format!("USE=\"{u}\""));
    }
    if let Some(c) = &cell.compiler {
        parts.push(c.clone());
    }
    parts.join(" and ")
}

fn list(q: &Queries<'_>, json: bool) -> anyhow::Result<()> {
    for r in q.rows("1", &[])? {
        if json {
            println!("{}", r.to_json(q));
        } else {
            println!(
                "{:<28} {:<40} {:<6} {:<13} {:<8} {:>6.0}s {:<12} {}",
                r.cpv,
                r.use_flags,
                r.compiler,
                r.status,
                r.failed_phase.as_deref().unwrap_or("-"),
                r.duration_secs,
                q.label(r.snapshot),
                Database::log_relative_path(&r.log_sha256)
            );
        }
    }
    Ok(())
}

fn fails(q: &Queries<'_>) -> anyhow::Result<Output> {
    #[derive(Default)]
    struct Pkg {
        cells: usize,
        ok: usize,
        own: Vec<Row>,
        deps: usize,
        spurious: usize,
    }
    let mut pkgs: BTreeMap<(String, String), Pkg> = BTreeMap::new();
    for r in q.latest("1", &[])? {
        let p = pkgs.entry((r.cpv.clone(), r.repo.clone())).or_default();
        p.cells += 1;
        match r.status() {
            Some(Status::Success) => p.ok += 1,
            Some(Status::DepsFailed) => p.deps += 1,
            _ if r.is_own_failure() => p.own.push(r),
            _ => p.spurious += 1,
        }
    }
    let infra: i64 = q.conn().query_row("SELECT count(*) FROM infra_failures", [], |r| r.get(0))?;
    let quarantined: i64 = q.conn().query_row("SELECT count(*) FROM quarantine", [], |r| r.get(0))?;
    let mut failing: Vec<_> = pkgs.into_iter().filter(|(_, p)| !p.own.is_empty() || p.deps > 0 || p.spurious > 0).collect();
    failing.sort_by(|a, b| b.1.own.len().cmp(&a.1.own.len()).then(b.1.deps.cmp(&a.1.deps)).then(a.0.cmp(&b.0)));

    let mut text = String::new();
    let w = failing.iter().map(|((cpv, _), _)| cpv.len()).max().unwrap_or(7).max(7);
    let _ = writeln!(text, "{:<w$}  {:>4}  {:>4}  {:>8}  {:>4}  {:>5}  own failures", "package", "own", "deps", "spurious", "ok", "cells");
    let mut packages = Vec::new();
    for ((cpv, repo), p) in &failing {
        let phases: BTreeSet<String> = p.own.iter().map(|r| r.failed_phase.clone().unwrap_or_default()).collect();
        let _ = writeln!(
            text,
            "{cpv:<w$}  {:>4}  {:>4}  {:>8}  {:>4}  {:>5}  {}",
            p.own.len(),
            p.deps,
            p.spurious,
            p.ok,
            p.cells,
            if phases.is_empty() { "-".into() } else { phases.into_iter().collect::<Vec<_>>().join(", ") }
        );
        packages.push(json!({
            "cpv": cpv, "repo": repo, "cells": p.cells, "success": p.ok, "own_failures": p.own.len(),
            "deps_failed": p.deps, "spurious": p.spurious,
            "failing_cells": p.own.iter().map(|r| json!({"use": r.use_flags, "compiler": r.compiler, "status": r.status,
                "failed_phase": r.failed_phase, "summary": r.summary, "snapshot": q.label(r.snapshot)})).collect::<Vec<_>>(),
        }));
    }
    if failing.is_empty() {
        text = "no failures: every cell's latest outcome is a success\n".into();
    }
    let _ = writeln!(
        text,
        "\nown = build_failed/test_failed; deps = a dependency failed (see `gah results blame`); spurious = timeout/infra_error.\n\
         Not counted: {infra} workunit(s) failed as a whole (BOINC error path), {quarantined} quarantined upload(s)."
    );
    Ok(Output { text, json: json!({"packages": packages, "infra_failures": infra, "quarantined": quarantined}) })
}

fn matrix(q: &Queries<'_>, package: &str) -> anyhow::Result<Output> {
    let rows: Vec<Row> = if split_cpv(package).is_some() {
        q.latest("cpv = ?1", &[package])?
    } else {
        // Every version of `category/package`: LIKE narrows, split_cpv decides.
        let pattern = format!("{}-%", package.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        let rows = q.latest("cpv LIKE ?1 ESCAPE '\\'", &[&pattern])?;
        rows.into_iter().filter(|r| split_cpv(&r.cpv).is_some_and(|(cp, _)| cp == package)).collect()
    };
    if rows.is_empty() {
        bail!("no outcomes for {package}");
    }
    let compilers: Vec<String> = {
        let seen: BTreeSet<&str> = rows.iter().map(|r| r.compiler.as_str()).collect();
        let mut c: Vec<String> = ["gcc", "clang"].iter().filter(|c| seen.contains(*c)).map(|c| c.to_string()).collect();
        c.extend(seen.iter().filter(|c| !["gcc", "clang"].contains(c)).map(|c| c.to_string()));
        c
    };
    let mut text = String::new();
    let mut versions = Vec::new();
    let by_cpv: BTreeMap<&str, Vec<&Row>> = rows.iter().fold(BTreeMap::new(), |mut m, r| {
        m.entry(r.cpv.as_str()).or_insert_with(Vec::new).push(r);
        m
    });
    for (cpv, rows) in by_cpv {
        let use_rows: BTreeSet<&str> = rows.iter().map(|r| r.use_flags.as_str()).collect();
        let uw = use_rows.iter().map(|u| u.len()).max().unwrap_or(3).clamp(14, 70);
        let cw = rows.iter().map(|r| r.short().len()).max().unwrap_or(8).max(8);
        let _ = writeln!(text, "{cpv}");
        let _ = write!(text, "  {:<uw$}", "USE");
        for c in &compilers {
            let _ = write!(text, "  {c:<cw$}");
        }
        text.push('\n');
        let mut json_rows = Vec::new();
        for u in &use_rows {
            let shown = if u.is_empty() { "(no USE flags)" } else { u };
            let _ = write!(text, "  {shown:<uw$}");
            let mut cells = serde_json::Map::new();
            for c in &compilers {
                let cell = rows.iter().find(|r| r.use_flags == *u && r.compiler == *c);
                let _ = write!(text, "  {:<cw$}", cell.map_or("-".into(), |r| r.short()));
                if let Some(r) = cell {
                    cells.insert(
                        c.clone(),
                        json!({"status": r.status, "failed_phase": r.failed_phase,
                        "snapshot": q.label(r.snapshot), "wu_name": r.wu_name}),
                    );
                }
            }
            text.push('\n');
            json_rows.push(json!({"use": u, "cells": cells}));
        }
        text.push('\n');
        versions.push(json!({"cpv": cpv, "compilers": compilers, "rows": json_rows}));
    }
    Ok(Output { text, json: json!({"package": package, "versions": versions}) })
}

fn history(q: &Queries<'_>, cell: &CellArgs) -> anyhow::Result<Output> {
    let rows = q.cell_rows(cell, true)?;
    let mut text = String::new();
    let mut cells = Vec::new();
    let mut current: Option<(String, String, String, String)> = None;
    for r in &rows {
        if current.as_ref() != Some(&r.cell()) {
            current = Some(r.cell());
            let _ =
                writeln!(text, "{}{}::{} USE=\"{}\" {}", if text.is_empty() { "" } else { "\n" }, r.cpv, r.repo, r.use_flags, r.compiler);
            let _ = writeln!(text, "  {:<24}  {:<20}  {:<22}  summary", "snapshot", "assimilated", "status");
            cells.push(json!({"repo": r.repo, "cpv": r.cpv, "use": r.use_flags, "compiler": r.compiler, "history": []}));
        }
        let _ = writeln!(text, "  {:<24}  {:<20}  {:<22}  {}", q.label(r.snapshot), r.assimilated_at, r.short(), r.summary);
        if let Some(Value::Array(h)) = cells.last_mut().and_then(|c| c.get_mut("history")) {
            h.push(r.to_json(q));
        }
    }
    Ok(Output { text, json: json!({"cells": cells}) })
}

fn changes(q: &Queries<'_>, snapshot: Option<&str>) -> anyhow::Result<Output> {
    let target = match snapshot {
        Some(s) => q
            .labels
            .iter()
            .find(|(id, label)| label.as_str() == s || id.to_string() == s)
            .map(|(id, _)| *id)
            .with_context(|| format!("no snapshot `{s}` (see `gah results snapshots`)"))?,
        None => q
            .conn()
            .query_row("SELECT max(snapshot) FROM outcomes", [], |r| r.get::<_, Option<i64>>(0))?
            .context("the database has no outcomes")?,
    };
    let target_s = target.to_string();
    let now = q.latest("snapshot = ?1", &[&target_s])?;
    // Each cell's previous non-spurious result, from any earlier snapshot.
    let before: BTreeMap<_, Row> =
        q.latest("snapshot < ?1 AND status NOT IN ('timeout', 'infra_error')", &[&target_s])?.into_iter().map(|r| (r.cell(), r)).collect();
    let (mut failing, mut fixed, mut new_cells) = (Vec::new(), Vec::new(), 0usize);
    for r in now.iter().filter(|r| !r.is_spurious()) {
        let Some(prev) = before.get(&r.cell()) else {
            new_cells += 1;
            continue;
        };
        let was_failing = prev.status().is_some_and(Status::is_failure);
        let is_failing = r.status().is_some_and(Status::is_failure);
        if is_failing && !was_failing {
            failing.push((prev, r));
        } else if !is_failing && was_failing {
            fixed.push((prev, r));
        }
    }
    let mut text = format!("changes in snapshot {} (against each cell's previous result)\n", q.label(target));
    let item = |(prev, r): &(&Row, &Row)| {
        json!({"cpv": r.cpv, "repo": r.repo, "use": r.use_flags, "compiler": r.compiler, "status": r.status,
            "failed_phase": r.failed_phase, "dependency": r.status() == Some(Status::DepsFailed),
            "previous_status": prev.status, "previous_snapshot": q.label(prev.snapshot), "summary": r.summary})
    };
    for (title, list) in [("newly failing", &failing), ("newly fixed", &fixed)] {
        let _ = writeln!(text, "\n{title}: {}", list.len());
        for (prev, r) in list.iter() {
            let blame = if r.status() == Some(Status::DepsFailed) { "  [a dependency failed]" } else { "" };
            let _ = writeln!(
                text,
                "  {} USE=\"{}\" {}: {} -> {} (was in {}){blame}",
                r.cpv,
                r.use_flags,
                r.compiler,
                prev.short(),
                r.short(),
                q.label(prev.snapshot)
            );
        }
    }
    let _ = writeln!(text, "\n{new_cells} cell(s) built for the first time in this snapshot");
    let json = json!({
        "snapshot": q.label(target), "newly_failing": failing.iter().map(item).collect::<Vec<_>>(),
        "newly_fixed": fixed.iter().map(item).collect::<Vec<_>>(), "new_cells": new_cells,
    });
    Ok(Output { text, json })
}

/// The package a deps_failed build log blames: Portage's ` * ERROR: cat/pkg-ver::repo failed
/// (PHASE phase):` line, else a dependency-resolution failure.
fn blamed_dependency(log: &[u8]) -> String {
    let text = String::from_utf8_lossy(log);
    for line in text.lines() {
        if let Some(rest) = line.split("ERROR: ").nth(1) {
            if let Some((pkg, tail)) = rest.split_once(" failed") {
                let pkg = pkg.split("::").next().unwrap_or(pkg).trim();
                let phase = tail.split_once('(').and_then(|(_, p)| p.split_once(" phase")).map(|(p, _)| p);
                return match phase {
                    Some(p) => format!("{pkg} ({p})"),
                    None => pkg.to_owned(),
                };
            }
        }
    }
    if text.contains("there are no ebuilds to satisfy") || text.contains("emerge: there are no ebuilds") {
        return "(dependency resolution: no ebuild satisfies a dependency)".into();
    }
    if text.contains("slot conflict") || text.contains("blocked by") {
        return "(dependency resolution: conflict or blocker)".into();
    }
    "(the log names no failing package)".into()
}

fn blame(q: &Queries<'_>) -> anyhow::Result<Output> {
    let rows = q.latest("1", &[])?;
    let mut by_dep: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.status() == Some(Status::DepsFailed)) {
        let dep =
            q.db.read_blob(&r.log_sha256)
                .map(|log| blamed_dependency(&log))
                .unwrap_or_else(|e| format!("(log unreadable: {})", gah_util::error_chain(&e)));
        by_dep.entry(dep).or_default().push(r);
    }
    let own = rows.iter().filter(|r| r.is_own_failure()).count();
    let mut deps: Vec<_> = by_dep.into_iter().collect();
    deps.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    let mut text = String::new();
    if deps.is_empty() {
        text.push_str("no cell is blocked by a failing dependency\n");
    }
    for (dep, cells) in &deps {
        let _ = writeln!(text, "{dep}: blocks {} cell(s)", cells.len());
        for r in cells {
            let _ = writeln!(text, "  {} USE=\"{}\" {}", r.cpv, r.use_flags, r.compiler);
        }
    }
    let _ = writeln!(text, "\n{own} cell(s) fail on their own (build_failed/test_failed): see `gah results fails`");
    let json = json!({
        "dependencies": deps.iter().map(|(dep, cells)| json!({"dependency": dep, "blocked": cells.iter()
            .map(|r| json!({"cpv": r.cpv, "use": r.use_flags, "compiler": r.compiler, "snapshot": q.label(r.snapshot)}))
            .collect::<Vec<_>>()})).collect::<Vec<_>>(),
        "own_failures": own,
    });
    Ok(Output { text, json })
}

/// Lines that usually mark an error in a Portage build log.
const ERROR_MARKERS: &[&str] =
    &["error:", "Error:", "ERROR:", "Error ", "undefined reference", "FAIL:", "FAILED", "make: ***", "Segmentation fault"];
/// Lines of context kept around each error line, and the most windows kept.
const CONTEXT: usize = 6;
const MAX_WINDOWS: usize = 4;

/// The build log around its error lines: the first windows and the last one (Portage's own
/// ` * ERROR:` block), merged where they overlap; the last 40 lines when nothing matches.
fn excerpt(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let hits: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| ERROR_MARKERS.iter().any(|m| l.contains(m))).map(|(i, _)| i).collect();
    let mut windows: Vec<(usize, usize)> = Vec::new();
    let mut chosen: Vec<usize> = hits.iter().copied().take(MAX_WINDOWS - 1).collect();
    chosen.extend(hits.last());
    for i in chosen {
        let (start, end) = (i.saturating_sub(CONTEXT), (i + CONTEXT + 1).min(lines.len()));
        match windows.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => windows.push((start, end)),
        }
    }
    if windows.is_empty() {
        windows.push((lines.len().saturating_sub(40), lines.len()));
    }
    let mut out = String::new();
    for (k, (start, end)) in windows.iter().enumerate() {
        if k > 0 || *start > 0 {
            let _ = writeln!(out, "[... line {} ...]", start + 1);
        }
        for line in &lines[*start..*end] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `fails to compile`, `fails tests`, ...: the summary's verb for a failure.
fn failure_verb(r: &Row) -> String {
    match (r.status(), r.failed_phase.as_deref()) {
        (Some(Status::TestFailed), _) => "fails tests".into(),
        (Some(Status::BuildFailed), Some(p)) if p != "build" => format!("fails to {p}"),
        (Some(Status::Timeout), Some(p)) => format!("times out in {p}"),
        _ => "fails to build".into(),
    }
}

fn bug(q: &Queries<'_>, cell: &CellArgs, out: Option<&Path>) -> anyhow::Result<Output> {
    let rows = q.cell_rows(cell, false)?;
    let failing: Vec<&Row> = rows.iter().filter(|r| r.is_own_failure() || r.status() == Some(Status::Timeout)).collect();
    let Some(r) = failing.first().copied() else {
        let deps = rows.iter().filter(|r| r.status() == Some(Status::DepsFailed)).count();
        if deps > 0 {
            bail!(
                "{} does not fail on its own here: {deps} cell(s) failed because a dependency did; \
                 `gah results blame` names it, file the bug against that package",
                cell.cpv
            );
        }
        bail!("no failure of {} to report: the latest outcome of every matching cell is {}", cell.cpv, rows[0].status);
    };
    let log = q.db.read_blob(&r.log_sha256).context("reading the build log")?;
    let info = r.emerge_info_sha256.as_deref().map(|sha| q.db.read_blob(sha)).transpose().context("reading emerge --info")?;
    let log_text = String::from_utf8_lossy(&log);
    let cp = split_cpv(&r.cpv).map_or(r.cpv.as_str(), |(cp, _)| cp);
    let use_part = if r.use_flags.is_empty() { String::new() } else { format!(" with USE=\"{}\"", r.use_flags) };
    let summary = format!("{}: {}{use_part} ({})", r.cpv, failure_verb(r), r.compiler);

    let mut c = String::new();
    let _ = writeln!(c, "{} {} when built with {}{}.", r.cpv, failure_verb(r), r.compiler, use_part);
    let _ = writeln!(
        c,
        "Found by gentoo@home: workunit {}, tree snapshot {}, assimilated {}, {} backend ({}).",
        r.wu_name,
        q.label(r.snapshot),
        r.assimilated_at,
        r.backend,
        r.accelerator
    );
    let _ = writeln!(c, "Result: {} in phase {}: {}", r.status, r.failed_phase.as_deref().unwrap_or("-"), r.summary);
    if !r.failing_tests.is_empty() {
        let _ = writeln!(c, "\nFailing tests:");
        for t in &r.failing_tests {
            let _ = writeln!(c, "  {t}");
        }
    }
    let (cc, cxx) = if r.compiler == "clang" { ("clang", "clang++") } else { ("gcc", "g++") };
    let _ = writeln!(c, "\nReproduce:\n  echo '{cp} {}' >> /etc/portage/package.use/gah", r.use_flags);
    let _ = writeln!(c, "  CC={cc} CXX={cxx} emerge --oneshot ={}", r.cpv);
    let others: Vec<&&Row> = failing.iter().skip(1).collect();
    if !others.is_empty() {
        let _ = writeln!(c, "\nAlso fails with:");
        for o in &others {
            let _ = writeln!(c, "  USE=\"{}\" {}: {}", o.use_flags, o.compiler, o.short());
        }
    }
    let ex = excerpt(&log_text);
    let _ = writeln!(c, "\nBuild log excerpt (full log attached):\n{ex}");
    let info_text = info.as_deref().map(|i| String::from_utf8_lossy(i).into_owned());
    match &info_text {
        Some(i) => {
            let _ = writeln!(c, "emerge --info ={}:\n{}", r.cpv, i.trim_end());
        }
        None => {
            let _ = writeln!(c, "emerge --info: not in the uploaded archive");
        }
    }
    let mut attachments = vec![json!({"name": "build.log", "bytes": log.len(), "sha256": r.log_sha256,
        "stored": Database::log_relative_path(&r.log_sha256), "content_type": "text/plain"})];
    if let (Some(i), Some(sha)) = (&info, &r.emerge_info_sha256) {
        attachments.push(json!({"name": "emerge-info.txt", "bytes": i.len(), "sha256": sha,
            "stored": Database::log_relative_path(sha), "content_type": "text/plain"}));
    }
    let _ = writeln!(c, "\nAttachments:");
    for a in &attachments {
        let _ = writeln!(c, "  {} ({} bytes, sha256 {})", a["name"].as_str().unwrap_or(""), a["bytes"], a["sha256"].as_str().unwrap_or(""));
    }

    if let Some(dir) = out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
        };
        write("summary.txt", format!("{summary}\n").as_bytes())?;
        write("comment.txt", c.as_bytes())?;
        write("build.log", &log)?;
        if let Some(i) = &info {
            write("emerge-info.txt", i)?;
        }
    }
    let text = format!("Summary: {summary}\n\n{c}");
    let json = json!({
        "summary": summary, "comment": c, "cpv": r.cpv, "repo": r.repo, "use": r.use_flags, "compiler": r.compiler,
        "status": r.status, "failed_phase": r.failed_phase, "failing_tests": r.failing_tests, "wu_name": r.wu_name,
        "snapshot": q.label(r.snapshot), "excerpt": ex, "emerge_info": info_text, "attachments": attachments,
        "also_fails": others.iter().map(|o| json!({"use": o.use_flags, "compiler": o.compiler, "status": o.status,
            "failed_phase": o.failed_phase})).collect::<Vec<_>>(),
        "written_to": out.map(|d| d.display().to_string()),
    });
    Ok(Output { text, json })
}

fn snapshots(q: &Queries<'_>) -> anyhow::Result<Output> {
    let counts: BTreeMap<i64, i64> = {
        let mut stmt = q.conn().prepare("SELECT snapshot, count(*) FROM outcomes GROUP BY snapshot")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut text = String::new();
    let mut list = Vec::new();
    for s in q.db.snapshots()? {
        let n = counts.get(&s.id).copied().unwrap_or(0);
        let _ = writeln!(text, "{:>4}  {:<40}  {:<20}  {n} outcome(s)", s.id, s.label, s.recorded_at);
        list.push(json!({"id": s.id, "label": s.label, "recorded_at": s.recorded_at, "outcomes": n}));
    }
    Ok(Output { text, json: json!({"snapshots": list}) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gah_core::db::NewOutcome;
    use gah_core::job::{Compiler, Job, UseAssignment};
    use gah_core::outcome::Outcome;

    fn flags(words: &[(&str, bool)]) -> UseAssignment {
        UseAssignment(words.iter().map(|(f, on)| (f.to_string(), *on)).collect())
    }

    /// Records `status` for a/b-1 (USE ssl=`ssl`, compiler) under snapshot `label`.
    fn put(db: &mut Database, label: &str, cpv: &str, ssl: bool, compiler: Compiler, status: Status, log: &str) {
        let snapshot = db.snapshot(label).unwrap();
        let job = Job::new("gah", cpv, flags(&[("ssl", ssl), ("static", false)]), compiler, 60);
        let mut o = Outcome::for_job(&job, status);
        o.failed_phase = match status {
            Status::BuildFailed => Some("compile".into()),
            Status::TestFailed => Some("test".into()),
            Status::DepsFailed => Some("deps".into()),
            _ => None,
        };
        o.failing_tests = if status == Status::TestFailed { vec!["t_ssl".into()] } else { Vec::new() };
        o.summary = format!("{status}");
        let wu = format!("{}_{label}", job.job_id);
        let new =
            NewOutcome { wu_name: &wu, snapshot, outcome: &o, log: log.as_bytes(), emerge_info: Some(b"Portage 3.0.66\nUSE=\"ssl\"\n") };
        db.record(&new).unwrap();
    }

    /// Two snapshots of a small tree: a/b-1 breaks with clang+ssl in s2, c/d-2 is fixed in
    /// s2, e/f-1 is blocked by dev-libs/foo.
    fn scenario() -> Database {
        let mut db = Database::temp().unwrap();
        let bad = "cc -c a.c\nb.c:1:2: error: ssl.h: No such file\n * ERROR: a/b-1::gah failed (compile phase):\n";
        for (label, clang_ssl) in [("git:s1", Status::Success), ("git:s2", Status::BuildFailed)] {
            put(&mut db, label, "a/b-1", true, Compiler::Gcc, Status::Success, "ok");
            put(&mut db, label, "a/b-1", true, Compiler::Clang, clang_ssl, bad);
            put(&mut db, label, "a/b-1", false, Compiler::Clang, Status::Success, "ok");
        }
        put(&mut db, "git:s1", "c/d-2", false, Compiler::Gcc, Status::TestFailed, "FAIL: t_ssl");
        put(&mut db, "git:s2", "c/d-2", false, Compiler::Gcc, Status::Success, "ok");
        put(
            &mut db,
            "git:s2",
            "e/f-1",
            false,
            Compiler::Gcc,
            Status::DepsFailed,
            " * ERROR: dev-libs/foo-1.2::gentoo failed (configure phase):",
        );
        db
    }

    fn cell(cpv: &str, use_flags: Option<&str>, compiler: Option<&str>) -> CellArgs {
        CellArgs { cpv: cpv.into(), use_flags: use_flags.map(Into::into), compiler: compiler.map(Into::into) }
    }

    #[test]
    fn fails_separates_own_dependency_and_spurious_failures() {
        let db = scenario();
        let out = fails(&Queries::new(&db).unwrap()).unwrap();
        let pkgs = out.json["packages"].as_array().unwrap();
        let got: Vec<(&str, u64, u64)> = pkgs
            .iter()
            .map(|p| (p["cpv"].as_str().unwrap(), p["own_failures"].as_u64().unwrap(), p["deps_failed"].as_u64().unwrap()))
            .collect();
        assert_eq!(got, [("a/b-1", 1, 0), ("e/f-1", 0, 1)], "{}", out.text);
        assert!(out.text.contains("a/b-1") && out.text.contains("compile"), "{}", out.text);
    }

    #[test]
    fn the_matrix_has_use_rows_and_compiler_columns() {
        let db = scenario();
        let q = Queries::new(&db).unwrap();
        let out = matrix(&q, "a/b").unwrap();
        let lines: Vec<&str> = out.text.lines().map(str::trim_end).collect();
        assert_eq!(lines[0], "a/b-1");
        assert!(lines[1].contains("USE") && lines[1].find("gcc") < lines[1].find("clang"), "{}", out.text);
        assert!(lines[2].starts_with("  -ssl -static") && lines[2].contains("  -  ") && lines[2].ends_with("success"), "{}", out.text);
        assert!(lines[3].starts_with("  ssl -static") && lines[3].contains("build_failed (compile)"), "{}", out.text);
        assert_eq!(matrix(&q, "a/b-1").unwrap().json["versions"], out.json["versions"]);
        assert!(matrix(&q, "a/bb").is_err());
    }

    #[test]
    fn history_lists_a_cell_oldest_first() {
        let db = scenario();
        let q = Queries::new(&db).unwrap();
        let out = history(&q, &cell("a/b-1", Some("ssl"), Some("clang"))).unwrap();
        let h = out.json["cells"][0]["history"].as_array().unwrap();
        let got: Vec<(&str, &str)> = h.iter().map(|r| (r["snapshot"].as_str().unwrap(), r["status"].as_str().unwrap())).collect();
        assert_eq!(got, [("git:s1", "success"), ("git:s2", "build_failed")]);
        assert_eq!(out.json["cells"].as_array().unwrap().len(), 1);
        assert!(history(&q, &cell("a/b-1", Some("doc"), None)).is_err());
    }

    #[test]
    fn changes_finds_newly_failing_and_newly_fixed() {
        let db = scenario();
        let q = Queries::new(&db).unwrap();
        let out = changes(&q, None).unwrap();
        let pick = |k: &str| -> Vec<String> {
            out.json[k].as_array().unwrap().iter().map(|c| format!("{} {} {}", c["cpv"], c["compiler"], c["status"])).collect()
        };
        assert_eq!(pick("newly_failing"), [r#""a/b-1" "clang" "build_failed""#]);
        assert_eq!(pick("newly_fixed"), [r#""c/d-2" "gcc" "success""#]);
        assert_eq!(out.json["new_cells"], 1, "e/f-1 is new in s2");
        assert_eq!(changes(&q, Some("git:s1")).unwrap().json["new_cells"], 4);
    }

    #[test]
    fn blame_groups_cells_by_the_failing_dependency() {
        let db = scenario();
        let out = blame(&Queries::new(&db).unwrap()).unwrap();
        assert_eq!(out.json["dependencies"][0]["dependency"], "dev-libs/foo-1.2 (configure)");
        assert_eq!(out.json["dependencies"][0]["blocked"][0]["cpv"], "e/f-1");
        assert_eq!(out.json["own_failures"], 1);
    }

    #[test]
    fn a_bug_bundle_has_what_bugzilla_asks_for() {
        let db = scenario();
        let q = Queries::new(&db).unwrap();
        let dir = db.path().parent().unwrap().join("bug");
        let out = bug(&q, &cell("a/b-1", None, None), Some(&dir)).unwrap();
        assert_eq!(out.json["summary"], r#"a/b-1: fails to compile with USE="ssl -static" (clang)"#);
        let text = &out.text;
        assert!(text.starts_with("Summary: a/b-1: fails to compile"), "{text}");
        for needle in [
            "echo 'a/b ssl -static' >> /etc/portage/package.use/gah",
            "CC=clang CXX=clang++ emerge --oneshot =a/b-1",
            "error: ssl.h",
            "Portage 3.0.66",
            "build.log (",
            "emerge-info.txt (",
            "tree snapshot git:s2",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in\n{text}");
        }
        assert_eq!(std::fs::read_to_string(dir.join("build.log")).unwrap().lines().count(), 3);
        assert!(dir.join("emerge-info.txt").exists() && dir.join("comment.txt").exists());
        let err = bug(&q, &cell("e/f-1", None, None), None).unwrap_err().to_string();
        assert!(err.contains("blame"), "{err}");
        assert!(bug(&q, &cell("c/d-2", None, None), None).unwrap_err().to_string().contains("success"));
    }

    #[test]
    fn use_selectors_match_subsets() {
        let w = parse_use("ssl -static +doc").unwrap();
        assert!(use_matches("doc -static ssl -test", &w));
        assert!(!use_matches("doc static ssl", &w));
        assert!(!use_matches("ssl -static", &w));
        assert!(parse_use("-").is_err());
    }

    #[test]
    fn blame_reads_portages_error_line() {
        let log = b"### deps\n * ERROR: dev-libs/foo-1.2::gentoo failed (compile phase):\n *   emake failed\n";
        assert_eq!(blamed_dependency(log), "dev-libs/foo-1.2 (compile)");
        assert_eq!(
            blamed_dependency(b"emerge: there are no ebuilds to satisfy \"dev-libs/x\".\n"),
            "(dependency resolution: no ebuild satisfies a dependency)"
        );
        assert_eq!(blamed_dependency(b"nothing"), "(the log names no failing package)");
    }

    #[test]
    fn the_excerpt_keeps_error_context_and_portages_error_block() {
        let mut log: Vec<String> = (0..200).map(|i| format!("cc -c file{i}.c")).collect();
        log[50] = "file50.c:3:1: error: expected ';'".into();
        log[190] = " * ERROR: a/b-1::gah failed (compile phase):".into();
        let ex = excerpt(&log.join("\n"));
        assert!(ex.contains("error: expected ';'") && ex.contains("cc -c file44.c") && !ex.contains("cc -c file43.c\n"), "{ex}");
        assert!(ex.contains(" * ERROR: a/b-1::gah failed") && ex.contains("[... line 45 ...]"), "{ex}");
        assert!(!ex.contains("file100.c"), "{ex}");
    }
}
