//! `gah results`: what the results database says, for a QA team.
//!
//! A renderer: every query is `gah_core::db`'s read API (no SQL here), and this module turns
//! its typed rows into text or JSON (the shapes in `wire`, documented in `docs/FORMATS.md`).
//! Nothing here writes to the database. A *cell* is one configuration: (repository, `category/package-version`, USE,
//! compiler). A cell has one row per tree snapshot it was built in; "the state of a cell" is
//! its latest row (highest snapshot, then latest assimilated).
//!
//! - `list`: every stored outcome (the default; `--json` prints JSON lines).
//! - `fails`: failures by package, the package's own failures (`build_failed`,
//!   `test_failed`) apart from "a dependency failed" (`deps_failed`) and from spurious
//!   results (timeouts, infrastructure errors).
//! - `matrix PKG`: USE rows × compiler columns for one package (`cat/pkg` or `cat/pkg-ver`).
//! - `history CPV [--use FLAGS] [--compiler C]`: every row of a cell, oldest first.
//! - `changes [--snapshot S] [--against B]`: cells newly failing and newly fixed in a snapshot
//!   (default: the latest), against each cell's previous non-spurious result (up to snapshot
//!   B when given).
//! - `blame`: cells whose dependency failed, grouped by the dependency the build log names.
//! - `bug CPV [--use FLAGS] [--compiler C] [--out DIR]`: a bug-report bundle for one failure
//!   in the form Gentoo's bugzilla asks for (summary line, reproduction, build log excerpt,
//!   `emerge --info`, attachments).
//! - `snapshots`: the tree snapshots.
//! - `localised`: each localised failure's minimal failing set (`gah run`'s follow-ups), with
//!   its evidence in `--json`; `history` and `matrix` name a cell's localisation too, and
//!   `bug` puts the minimal set in the summary.
//!
//! With `--json` every command prints one JSON document on stdout (except `list`: JSON lines).
//! A closed stdout (`gah results | head`) ends the command quietly: see `main`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use gah_core::db::read::Changes;
use gah_core::db::{Database, Filter, Order, Page, StoredOutcome};
use gah_core::job::{Compiler, UseAssignment};
use gah_core::outcome::Status;
use serde::Serialize;

use gah_qa::bug::status_text as short;
use gah_qa::wire;

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
    compiler: Option<Compiler>,
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
        /// Compare with each cell's latest result up to this snapshot (label or id)
        /// [default: every earlier snapshot].
        #[arg(long, value_name = "SNAPSHOT")]
        against: Option<String>,
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
    /// Localised failures: each failure's minimal failing set of flags and compiler (or
    /// flaky, or inconclusive) and how many follow-up builds found it, newest first.
    Localised,
}

/// The database `gah results` reads: `--db`, else `$GAH_RESULTS_DB`, else `None` (then the
/// checkout's `results/results.sqlite`, which needs a checkout to find).
pub fn explicit_db(args: &ResultsArgs) -> anyhow::Result<Option<PathBuf>> {
    // As the server programs decide it (gah_core::project): --db, else the project's gah.conf
    // (./ or ../, so `bin/gah results` works in a BOINC project), else GAH_RESULTS_DB.
    let over = gah_core::project::Overrides { results_db: args.db.clone(), ..Default::default() };
    Ok(gah_core::project::resolve_here(&over)?.results_db)
}

/// Runs `gah results` against the database at `db`, writing to `out`. An error writing `out`
/// (a closed pipe) comes back as the `std::io::Error` it is, for `main` to tell apart.
pub fn command(args: ResultsArgs, db: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    // Reading must not create an empty database where the user expected results.
    anyhow::ensure!(db.exists(), "no results database at {} (run `gah run` first, or set GAH_RESULTS_DB or --db)", db.display());
    let db = Database::open(db)?;
    let json = args.json;
    let done = match args.query.unwrap_or(Query::List) {
        Query::List => return list(&db, json, out),
        Query::Fails => fails(&db)?,
        Query::Matrix { package } => matrix(&db, &package)?,
        Query::History(cell) => history(&db, &cell)?,
        Query::Changes { snapshot, against } => changes(&db, snapshot.as_deref(), against.as_deref())?,
        Query::Blame => blame(&db)?,
        Query::Bug { cell, out: dir } => bug(&db, &cell, dir.as_deref())?,
        Query::Snapshots => snapshots(&db)?,
        Query::Localised => localised(&db)?,
    };
    if json {
        serde_json::to_writer_pretty(&mut *out, &done.json)?;
        writeln!(out)?;
    } else {
        out.write_all(done.text.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// A command's answer in both forms.
#[derive(Debug)]
struct Output {
    text: String,
    json: serde_json::Value,
}

impl Output {
    fn new(text: String, json: impl Serialize) -> anyhow::Result<Output> {
        Ok(Output { text, json: serde_json::to_value(json)? })
    }
}

/// The filter a cell selector means; the error names a bad `--use`.
fn cell_filter(cell: &CellArgs) -> anyhow::Result<Filter> {
    let use_flags = match &cell.use_flags {
        Some(text) => UseAssignment::from_package_use(text).map_err(anyhow::Error::msg)?,
        None => UseAssignment::default(),
    };
    Ok(Filter { cpv: Some(cell.cpv.clone()), use_flags, compiler: cell.compiler, ..Filter::default() })
}

/// The rows of the cells `cell` selects (each cell's latest only, or every row); an error
/// when there are none, saying whether the package has any.
fn cell_rows(db: &Database, cell: &CellArgs, all: bool) -> anyhow::Result<Vec<StoredOutcome>> {
    let filter = cell_filter(cell)?;
    let rows = if all { db.outcomes(&filter, Page::ALL)? } else { db.latest(&filter, Page::ALL)? };
    if rows.is_empty() {
        let any = Filter { cpv: Some(cell.cpv.clone()), ..Filter::default() };
        if db.outcomes(&any, Page::first(1, Order::Cell))?.is_empty() {
            bail!("no outcomes for {} (is it category/package-version?)", cell.cpv);
        }
        bail!("{} has outcomes, but none with {}", cell.cpv, describe_selector(cell));
    }
    Ok(rows)
}

fn describe_selector(cell: &CellArgs) -> String {
    let mut parts = Vec::new();
    if let Some(u) = &cell.use_flags {
        parts.push(format!("USE=\"{u}\""));
    }
    if let Some(c) = &cell.compiler {
        parts.push(c.to_string());
    }
    parts.join(" and ")
}

/// Every row, streamed: a million rows are never in memory at once.
fn list(db: &Database, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    db.for_each_outcome(&Filter::default(), Order::Cell, |r| -> anyhow::Result<()> {
        if json {
            serde_json::to_writer(&mut *out, &wire::Outcome::from(&r))?;
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "{:<28} {:<40} {:<6} {:<13} {:<8} {:>6.0}s {:<12} {}",
                r.cell.cpv,
                r.cell.use_flags.to_package_use(),
                r.cell.compiler.as_str(),
                r.status.as_str(),
                r.failed_phase.as_deref().unwrap_or("-"),
                r.duration_secs,
                r.snapshot_label,
                r.log.relative_path()
            )?;
        }
        Ok(())
    })?;
    out.flush()?;
    Ok(())
}

fn fails(db: &Database) -> anyhow::Result<Output> {
    let doc = wire::Fails::read(db)?;
    let mut text = String::new();
    let w = doc.packages.iter().map(|p| p.cpv.len()).max().unwrap_or(7).max(7);
    let _ = writeln!(
        text,
        "{:<w$}  {:>4}  {:>4}  {:>8}  {:>5}  {:>4}  {:>5}  own failures",
        "package", "own", "deps", "spurious", "limit", "ok", "cells"
    );
    for p in &doc.packages {
        let phases: BTreeSet<String> = p.failing_cells.iter().map(|r| r.failed_phase.clone().unwrap_or_default()).collect();
        let _ = writeln!(
            text,
            "{:<w$}  {:>4}  {:>4}  {:>8}  {:>5}  {:>4}  {:>5}  {}",
            p.cpv,
            p.own_failures,
            p.deps_failed,
            p.spurious,
            p.resource_limit,
            p.success,
            p.cells,
            if phases.is_empty() { "-".into() } else { phases.into_iter().collect::<Vec<_>>().join(", ") }
        );
    }
    if doc.packages.is_empty() {
        text = "no failures: every cell's latest outcome is a success\n".into();
    }
    let _ = writeln!(
        text,
        "\nown = build_failed/test_failed; deps = a dependency failed (see `gah results blame`); spurious = timeout/infra_error; \
         limit = resource_limit.\n\
         Not counted: {} workunit(s) failed as a whole (BOINC error path), {} quarantined upload(s).",
        doc.infra_failures, doc.quarantined
    );
    Output::new(text, doc)
}

fn matrix(db: &Database, package: &str) -> anyhow::Result<Output> {
    let versions = db.matrix(package)?;
    if versions.is_empty() {
        bail!("no outcomes for {package}");
    }
    let mut text = String::new();
    for m in &versions {
        let cells = m.rows.iter().flat_map(|r| r.cells.iter().flatten());
        let uw = m.rows.iter().map(|r| r.use_flags.to_package_use().len()).max().unwrap_or(3).clamp(14, 70);
        let cw = cells.map(|r| short(r).len()).max().unwrap_or(8).max(8);
        let _ = writeln!(text, "{}", m.cpv);
        let _ = write!(text, "  {:<uw$}", "USE");
        for c in &m.compilers {
            let _ = write!(text, "  {:<cw$}", c.as_str());
        }
        text.push('\n');
        for row in &m.rows {
            let u = row.use_flags.to_package_use();
            let shown = if u.is_empty() { "(no USE flags)" } else { &u };
            let _ = write!(text, "  {shown:<uw$}");
            for cell in &row.cells {
                let _ = write!(text, "  {:<cw$}", cell.as_ref().map_or("-".into(), short));
            }
            text.push('\n');
        }
        for l in db.localisations(&Filter { cpv: Some(m.cpv.clone()), repo: Some(m.repo.clone()), ..Filter::default() }, None, Page::ALL)? {
            let _ = writeln!(
                text,
                "  localised: {} USE=\"{}\" {}: {}",
                l.status,
                l.cell.use_flags.to_package_use(),
                l.cell.compiler,
                localisation_text(&wire::Localisation::new(&l, false))
            );
        }
        text.push('\n');
    }
    Output::new(text, wire::MatrixDoc { package: package.to_owned(), versions: versions.iter().map(wire::Version::from).collect() })
}

fn history(db: &Database, cell: &CellArgs) -> anyhow::Result<Output> {
    let rows = cell_rows(db, cell, true)?;
    let mut text = String::new();
    let mut cells: Vec<wire::CellHistory> = Vec::new();
    for r in &rows {
        let same = cells.last().is_some_and(|c| {
            c.repo == r.cell.repo
                && c.cpv == r.cell.cpv
                && c.compiler == r.cell.compiler
                && c.use_flags == r.cell.use_flags.to_package_use()
        });
        if !same {
            let use_flags = r.cell.use_flags.to_package_use();
            let _ = writeln!(
                text,
                "{}{}::{} USE=\"{use_flags}\" {}",
                if text.is_empty() { "" } else { "\n" },
                r.cell.cpv,
                r.cell.repo,
                r.cell.compiler
            );
            let _ = writeln!(text, "  {:<24}  {:<20}  {:<22}  summary", "snapshot", "assimilated", "status");
            cells.push(wire::CellHistory {
                repo: r.cell.repo.clone(),
                cpv: r.cell.cpv.clone(),
                use_flags,
                compiler: r.cell.compiler,
                history: Vec::new(),
                localisation: db.cell_localisation(&r.cell)?.map(|l| wire::Localisation::new(&l, false)),
            });
        }
        let _ = writeln!(text, "  {:<24}  {:<20}  {:<22}  {}", r.snapshot_label, r.assimilated_at, short(r), r.summary);
        if let Some(c) = cells.last_mut() {
            c.history.push(wire::Outcome::from(r));
            if let Some(l) = c.localisation.as_ref().filter(|l| l.failing_seq == r.seq) {
                let _ = writeln!(text, "  {:<24}  localised: {}", "", localisation_text(l));
            }
        }
    }
    Output::new(text, wire::History { cells })
}

fn snapshot_named(db: &Database, label_or_id: &str) -> anyhow::Result<gah_core::db::SnapshotId> {
    Ok(db.find_snapshot(label_or_id)?.with_context(|| format!("no snapshot `{label_or_id}` (see `gah results snapshots`)"))?.id)
}

fn changes(db: &Database, snapshot: Option<&str>, against: Option<&str>) -> anyhow::Result<Output> {
    let target = match snapshot {
        Some(s) => snapshot_named(db, s)?,
        None => db.latest_snapshot()?.context("the database has no outcomes")?,
    };
    let base = against.map(|s| snapshot_named(db, s)).transpose()?;
    let c: Changes = db.changes(target, base)?;
    let mut text = match against {
        Some(b) => format!("changes in snapshot {} (against each cell's latest result up to {b})\n", c.snapshot.label),
        None => format!("changes in snapshot {} (against each cell's previous result)\n", c.snapshot.label),
    };
    for (title, list) in [("newly failing", &c.newly_failing), ("newly fixed", &c.newly_fixed)] {
        let _ = writeln!(text, "\n{title}: {}", list.len());
        for ch in list.iter() {
            let r = &ch.after;
            let blame = if r.status == Status::DepsFailed { "  [a dependency failed]" } else { "" };
            let _ = writeln!(
                text,
                "  {} USE=\"{}\" {}: {} -> {} (was in {}){blame}",
                r.cell.cpv,
                r.cell.use_flags.to_package_use(),
                r.cell.compiler,
                short(&ch.before),
                short(r),
                ch.before.snapshot_label
            );
        }
    }
    let _ = writeln!(text, "\n{} cell(s) built for the first time in this snapshot", c.new_cells);
    Output::new(text, wire::Changes::from(&c))
}

fn blame(db: &Database) -> anyhow::Result<Output> {
    let doc = wire::Blame::read(db)?;
    let mut text = String::new();
    if doc.dependencies.is_empty() {
        text.push_str("no cell is blocked by a failing dependency\n");
    }
    for d in &doc.dependencies {
        let _ = writeln!(text, "{}: blocks {} cell(s)", d.dependency, d.blocked.len());
        for r in &d.blocked {
            let _ = writeln!(text, "  {} USE=\"{}\" {}", r.cpv, r.use_flags, r.compiler);
        }
    }
    let _ = writeln!(text, "\n{} cell(s) fail on their own (build_failed/test_failed): see `gah results fails`", doc.own_failures);
    Output::new(text, doc)
}

fn bug(db: &Database, cell: &CellArgs, out: Option<&Path>) -> anyhow::Result<Output> {
    let rows = cell_rows(db, cell, false)?;
    let failing: Vec<&StoredOutcome> = rows.iter().filter(|r| gah_qa::bug::is_reportable(r.status)).collect();
    let Some((r, also)) = failing.split_first() else {
        let deps = rows.iter().filter(|r| r.status == Status::DepsFailed).count();
        if deps > 0 {
            bail!(
                "{} does not fail on its own here: {deps} cell(s) failed because a dependency did; \
                 `gah results blame` names it, file the bug against that package",
                cell.cpv
            );
        }
        bail!("no failure of {} to report: the latest outcome of every matching cell is {}", cell.cpv, rows[0].status);
    };
    let mut report = gah_qa::bug::report(db, r, also)?;
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
        };
        write("summary.txt", format!("{}\n", report.doc.summary).as_bytes())?;
        write("comment.txt", report.doc.comment.as_bytes())?;
        write("build.log", &report.log)?;
        if let Some(i) = &report.emerge_info {
            write("emerge-info.txt", i)?;
        }
        report.doc.written_to = Some(dir.display().to_string());
    }
    Output::new(report.text(), report.doc)
}

/// A localisation in a few words: its conclusion, or that it is still running.
fn localisation_text(l: &wire::Localisation) -> String {
    match &l.text {
        Some(t) => format!("{t} [{} follow-ups]", l.evidence.runs.len()),
        None => format!("running [{} follow-ups so far]", l.evidence.runs.len()),
    }
}

/// Every localisation: for each failure localised, its minimal failing set (or flaky, or
/// inconclusive), newest first.
fn localised(db: &Database) -> anyhow::Result<Output> {
    let all = db.localisations(&Filter::default(), None, Page { order: Order::Newest, ..Page::ALL })?;
    let docs: Vec<wire::Localisation> = all.iter().map(|l| wire::Localisation::new(l, false)).collect();
    let mut text = String::new();
    for l in &docs {
        let _ = writeln!(text, "{} {} (USE=\"{}\" {}): {}", l.cpv, l.status, l.use_flags, l.compiler, localisation_text(l));
    }
    Output::new(text, wire::Localisations { localisations: docs })
}

fn snapshots(db: &Database) -> anyhow::Result<Output> {
    let list = db.snapshot_summaries()?;
    let mut text = String::new();
    for s in &list {
        let _ = writeln!(text, "{:>4}  {:<40}  {:<20}  {} outcome(s)", s.snapshot.id, s.snapshot.label, s.snapshot.recorded_at, s.outcomes);
    }
    Output::new(text, wire::Snapshots { snapshots: list.iter().map(wire::SnapshotItem::from).collect() })
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
        CellArgs { cpv: cpv.into(), use_flags: use_flags.map(Into::into), compiler: compiler.map(|c| c.parse().unwrap()) }
    }

    #[test]
    fn fails_separates_own_dependency_and_spurious_failures() {
        let db = scenario();
        let out = fails(&db).unwrap();
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
        let out = matrix(&db, "a/b").unwrap();
        let lines: Vec<&str> = out.text.lines().map(str::trim_end).collect();
        assert_eq!(lines[0], "a/b-1");
        assert!(lines[1].contains("USE") && lines[1].find("gcc") < lines[1].find("clang"), "{}", out.text);
        assert!(lines[2].starts_with("  -ssl -static") && lines[2].contains("  -  ") && lines[2].ends_with("success"), "{}", out.text);
        assert!(lines[3].starts_with("  ssl -static") && lines[3].contains("build_failed (compile)"), "{}", out.text);
        assert_eq!(matrix(&db, "a/b-1").unwrap().json["versions"], out.json["versions"]);
        assert!(matrix(&db, "a/bb").is_err());
    }

    #[test]
    fn history_lists_a_cell_oldest_first() {
        let db = scenario();
        let out = history(&db, &cell("a/b-1", Some("ssl"), Some("clang"))).unwrap();
        let h = out.json["cells"][0]["history"].as_array().unwrap();
        let got: Vec<(&str, &str)> = h.iter().map(|r| (r["snapshot"].as_str().unwrap(), r["status"].as_str().unwrap())).collect();
        assert_eq!(got, [("git:s1", "success"), ("git:s2", "build_failed")]);
        assert_eq!(out.json["cells"].as_array().unwrap().len(), 1);
        assert!(history(&db, &cell("a/b-1", Some("doc"), None)).is_err());
    }

    #[test]
    fn changes_finds_newly_failing_and_newly_fixed() {
        let db = scenario();
        let out = changes(&db, None, None).unwrap();
        let pick = |k: &str| -> Vec<String> {
            out.json[k].as_array().unwrap().iter().map(|c| format!("{} {} {}", c["cpv"], c["compiler"], c["status"])).collect()
        };
        assert_eq!(pick("newly_failing"), [r#""a/b-1" "clang" "build_failed""#]);
        assert_eq!(pick("newly_fixed"), [r#""c/d-2" "gcc" "success""#]);
        assert_eq!(out.json["new_cells"], 1, "e/f-1 is new in s2");
        assert_eq!(changes(&db, Some("git:s1"), None).unwrap().json["new_cells"], 4);
    }

    #[test]
    fn blame_groups_cells_by_the_failing_dependency() {
        let db = scenario();
        let out = blame(&db).unwrap();
        assert_eq!(out.json["dependencies"][0]["dependency"], "dev-libs/foo-1.2 (configure)");
        assert_eq!(out.json["dependencies"][0]["blocked"][0]["cpv"], "e/f-1");
        assert_eq!(out.json["own_failures"], 1);
    }

    #[test]
    fn a_bug_bundle_has_what_bugzilla_asks_for() {
        let db = scenario();
        let dir = db.path().parent().unwrap().join("bug");
        let out = bug(&db, &cell("a/b-1", None, None), Some(&dir)).unwrap();
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
        let err = bug(&db, &cell("e/f-1", None, None), None).unwrap_err().to_string();
        assert!(err.contains("blame"), "{err}");
        assert!(bug(&db, &cell("c/d-2", None, None), None).unwrap_err().to_string().contains("success"));
    }
}
