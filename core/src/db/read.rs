//! The results database's read side: every query anyone runs over it, typed.
//!
//! Rows come back as [`StoredOutcome`], keyed by the [`Cell`] they belong to, with
//! [`Status`] and [`Compiler`] as enums; columns are read by name. A cell has one row per
//! tree snapshot it was built in; "the state of a cell" is its latest row (highest snapshot,
//! then latest assimilated), which is what [`Database::latest`] returns.
//!
//! - rows: [`Database::outcomes`] (every row, paged), [`Database::for_each_outcome`]
//!   (streamed), [`Database::latest`] (each cell's latest row), [`Database::cell_history`],
//!   [`Database::outcome`] (one row by `seq`), all narrowed by a [`Filter`] (package text,
//!   `category/package`, exact cpv, repository, USE flag values, compiler, statuses,
//!   snapshot) and a [`Page`] (offset, limit, [`Order`]);
//! - views: [`Database::matrix`] (USE rows × compiler columns), [`Database::changes`]
//!   (newly failing and newly fixed between two snapshots), [`Database::failures_by_package`],
//!   [`Database::dependency_roots`] (deps_failed cells grouped by the dependency their log
//!   names);
//! - counts: [`Database::status_counts`], [`Database::totals`], [`Database::snapshot_summaries`];
//! - the rest: [`Database::infra_failures`], [`Database::quarantined`], a row's log and
//!   `emerge --info` ([`Database::read_blob`] with [`StoredOutcome::log`]), snapshots by label or id
//!   ([`Database::find_snapshot`]), [`Database::integrity_check`].
//!
//! Status sets in SQL (spurious, own failure) are built from [`Status`]'s own predicates,
//! never written out by hand.

use std::collections::BTreeMap;

use rusqlite::types::Value;
use rusqlite::{params_from_iter, OptionalExtension, Row};

use super::{Database, DbError, Snapshot, SnapshotId};
use crate::buildlog::FailedDependency;
use crate::job::{split_cpv, Cell, Compiler, UseAssignment};
use crate::localisation::{Conclusion, Evidence};
use crate::outcome::{PackageVersion, PhaseTime, Status};

/// A blob in the store beside the database (a build log or `emerge --info`), by the sha256 of
/// its uncompressed content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobId(pub String);

impl BlobId {
    /// The sha256, 64 hex digits.
    pub fn sha256(&self) -> &str {
        &self.0
    }

    /// Where it lives, relative to the database's folder (`logs/ab/abcd….log.gz`).
    pub fn relative_path(&self) -> String {
        Database::log_relative_path(&self.0)
    }
}

/// One stored outcome: a row of `outcomes`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredOutcome {
    /// The row's id: increasing with assimilation, never reused.
    pub seq: i64,
    /// The BOINC workunit name.
    pub wu_name: String,
    /// The job the workunit ran.
    pub job_id: String,
    /// The tree snapshot it was built from.
    pub snapshot: SnapshotId,
    /// That snapshot's label.
    pub snapshot_label: String,
    /// The configuration.
    pub cell: Cell,
    /// How it ended.
    pub status: Status,
    /// The phase that failed, when one did.
    pub failed_phase: Option<String>,
    /// True when the test phase ran.
    pub test_ran: bool,
    /// Names of failing tests.
    pub failing_tests: Vec<String>,
    /// Durations of the phases that ran, in order.
    pub phases: Vec<PhaseTime>,
    /// Whole-job seconds.
    pub duration_secs: f64,
    /// `vm` or `sandbox`.
    pub backend: String,
    /// The accelerator (`kvm`, `tcg`, `none`).
    pub accelerator: String,
    /// One line for people.
    pub summary: String,
    /// The build log.
    pub log: BlobId,
    /// `emerge --info`, when the upload had it.
    pub emerge_info: Option<BlobId>,
    /// When it was stored (UTC, `YYYY-MM-DDTHH:MM:SSZ`).
    pub assimilated_at: String,
    /// For a `deps_failed` row, the dependency its log blames, as read when it was stored
    /// (`None` for other rows, and for rows stored before the database read it: see
    /// [`Database::failed_dependency`]).
    pub failed_dependency: Option<FailedDependency>,
}

/// Where a localisation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalisationState {
    /// Follow-ups are still to run (or were interrupted: replay the evidence and go on).
    Running,
    /// It has its conclusion.
    Done,
}

impl LocalisationState {
    /// The stored code: `running`, `done`.
    pub fn as_str(self) -> &'static str {
        match self {
            LocalisationState::Running => "running",
            LocalisationState::Done => "done",
        }
    }
}

impl std::str::FromStr for LocalisationState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "running" => Ok(LocalisationState::Running),
            "done" => Ok(LocalisationState::Done),
            _ => Err(format!("unknown localisation state `{s}`")),
        }
    }
}

/// One failure's localisation: a row of `localisations` (see
/// [`Database::save_localisation`](super::Database::save_localisation)).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLocalisation {
    /// The failing row it localises ([`StoredOutcome::seq`]).
    pub failing_seq: i64,
    /// The failing row's cell.
    pub cell: Cell,
    /// The failing row's snapshot.
    pub snapshot: SnapshotId,
    /// The failure localised (`build_failed`, `test_failed`).
    pub status: Status,
    /// Running or done.
    pub state: LocalisationState,
    /// The conclusion, once done.
    pub conclusion: Option<Conclusion>,
    /// The evidence (the conclusion's, once done; so far, while running).
    pub evidence: Evidence,
    /// While running: the follow-up it waits for (a cell of the failing row's ebuild).
    pub next: Option<Cell>,
    /// The follow-up's workunits lost so far.
    pub next_tries: u32,
    /// When it started and when it last moved (UTC).
    pub started_at: String,
    /// When it last moved (UTC).
    pub updated_at: String,
}

/// Which rows a query considers; every field narrows, the default is everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this repository.
    pub repo: Option<String>,
    /// Only this `category/package-version`.
    pub cpv: Option<String>,
    /// Only every version of this `category/package`.
    pub package: Option<String>,
    /// Only cpvs containing this text (ASCII case-insensitive), as a search box does.
    pub text: Option<String>,
    /// Only cells with these flag values (other flags any value).
    pub use_flags: UseAssignment,
    /// Only this compiler.
    pub compiler: Option<Compiler>,
    /// Only these statuses (empty: any). For [`Database::latest`] it applies to the latest
    /// row: "cells whose state is one of these".
    pub statuses: Vec<Status>,
    /// Only rows of this snapshot ([`Database::latest`]: the latest row within it).
    pub snapshot: Option<SnapshotId>,
    /// Only rows of this snapshot or earlier ([`Database::latest`]: each cell as it was then).
    pub up_to: Option<SnapshotId>,
}

impl Filter {
    /// The ebuild (repository, cpv) of the failing row `row`, with its status, whatever the
    /// configuration: the failures one localisation may explain.
    pub fn same_failure(row: &StoredOutcome) -> Filter {
        Filter { repo: Some(row.cell.repo.clone()), cpv: Some(row.cell.cpv.clone()), statuses: vec![row.status], ..Filter::default() }
    }

    /// Only the cell `cell`.
    pub fn cell(cell: &Cell) -> Filter {
        Filter {
            repo: Some(cell.repo.clone()),
            cpv: Some(cell.cpv.clone()),
            use_flags: cell.use_flags.clone(),
            compiler: Some(cell.compiler),
            ..Filter::default()
        }
    }

    /// The conditions on a cell and its snapshot (everything but the status), for `outcomes`
    /// columns prefixed with `p`.
    fn cell_conditions(&self, p: &str, sql: &mut Vec<String>, params: &mut Vec<Value>) {
        if let Some(repo) = &self.repo {
            params.push(Value::Text(repo.clone()));
            sql.push(format!("{p}repo = ?{}", params.len()));
        }
        if let Some(cpv) = &self.cpv {
            params.push(Value::Text(cpv.clone()));
            sql.push(format!("{p}cpv = ?{}", params.len()));
        }
        if let Some(cp) = &self.package {
            // PMS: a package name never ends in `-` and a valid version, so the version starts
            // with the digit right after `cp-` (as split_cpv reads it).
            // `cp-` and a digit: a range of the binary collation (`:` follows `9`), which the
            // index on cpv answers.
            params.push(Value::Text(format!("{cp}-0")));
            params.push(Value::Text(format!("{cp}-:")));
            sql.push(format!("{p}cpv >= ?{} AND {p}cpv < ?{}", params.len() - 1, params.len()));
        }
        if let Some(text) = &self.text {
            params.push(Value::Text(format!("%{}%", like_escape(text))));
            sql.push(format!("{p}cpv LIKE ?{} ESCAPE '\\'", params.len()));
        }
        for (flag, on) in &self.use_flags.0 {
            // Stored in package.use notation: every flag one word, `-` when off.
            params.push(Value::Text(format!("% {}{} %", if *on { "" } else { "-" }, like_escape(flag))));
            sql.push(format!("(' ' || {p}use_flags || ' ') LIKE ?{} ESCAPE '\\'", params.len()));
        }
        if let Some(c) = self.compiler {
            params.push(Value::Text(c.as_str().to_owned()));
            sql.push(format!("{p}compiler = ?{}", params.len()));
        }
        if let Some(s) = self.snapshot {
            params.push(Value::Integer(s.0));
            sql.push(format!("{p}snapshot = ?{}", params.len()));
        }
        if let Some(s) = self.up_to {
            params.push(Value::Integer(s.0));
            sql.push(format!("{p}snapshot <= ?{}", params.len()));
        }
    }

    fn status_condition(&self, p: &str, sql: &mut Vec<String>) {
        if !self.statuses.is_empty() {
            sql.push(format!("{p}status IN ({})", status_list(|s| self.statuses.contains(&s))));
        }
    }
}

/// The order rows come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// By cell (cpv, USE, compiler, repository), then oldest first.
    #[default]
    Cell,
    /// Most recently stored first.
    Newest,
    /// Longest-running first.
    Slowest,
}

impl Order {
    fn sql(self, p: &str) -> String {
        match self {
            Order::Cell => format!("{p}cpv, {p}use_flags, {p}compiler, {p}repo, {p}snapshot, {p}seq"),
            Order::Newest => format!("{p}seq DESC"),
            Order::Slowest => format!("{p}duration_secs DESC, {p}seq"),
        }
    }
}

/// A slice of a query's answer: a web page asks for one page at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Page {
    /// Rows skipped.
    pub offset: u64,
    /// The most rows returned (`None`: all).
    pub limit: Option<u64>,
    /// The order.
    pub order: Order,
}

impl Page {
    /// Every row, by cell.
    pub const ALL: Page = Page { offset: 0, limit: None, order: Order::Cell };

    /// The first `limit` rows in `order`.
    pub fn first(limit: u64, order: Order) -> Page {
        Page { offset: 0, limit: Some(limit), order }
    }

    /// ` ORDER BY … LIMIT … OFFSET …` over columns prefixed with `p`.
    fn sql(self, p: &str, params: &mut Vec<Value>) -> String {
        format!(" ORDER BY {}{}", self.order.sql(p), self.limit_sql(params))
    }

    /// ` LIMIT … OFFSET …` alone.
    fn limit_sql(self, params: &mut Vec<Value>) -> String {
        params.push(Value::Integer(self.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX))));
        params.push(Value::Integer(i64::try_from(self.offset).unwrap_or(i64::MAX)));
        format!(" LIMIT ?{} OFFSET ?{}", params.len() - 1, params.len())
    }
}

/// How many cells are in each status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCounts(Vec<(Status, u64)>);

impl Default for StatusCounts {
    fn default() -> StatusCounts {
        StatusCounts(Status::ALL.iter().map(|s| (*s, 0)).collect())
    }
}

impl StatusCounts {
    /// The count of `status`.
    pub fn get(&self, status: Status) -> u64 {
        self.0.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n)
    }

    /// Every status with its count, in [`Status::ALL`]'s order (zeros included).
    pub fn iter(&self) -> impl Iterator<Item = (Status, u64)> + '_ {
        self.0.iter().copied()
    }

    /// The sum.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    /// The sum over the statuses `pick` keeps.
    pub fn sum(&self, pick: impl Fn(Status) -> bool) -> u64 {
        self.0.iter().filter(|(s, _)| pick(*s)).map(|(_, n)| n).sum()
    }

    fn add(&mut self, status: Status, n: u64) {
        if let Some(entry) = self.0.iter_mut().find(|(s, _)| *s == status) {
            entry.1 += n;
        }
    }
}

/// The size of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Rows of `outcomes`.
    pub outcomes: u64,
    /// Distinct cells.
    pub cells: u64,
    /// Workunits BOINC reported failed as a whole (`infra_failures`).
    pub infra_failures: u64,
    /// Uploads refused for good (`quarantine`).
    pub quarantined: u64,
}

/// A snapshot with its number of stored outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Rows stored under it.
    pub outcomes: u64,
}

/// One package version's matrix: USE rows × compiler columns, the latest row of each cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// The repository.
    pub repo: String,
    /// `category/package-version`.
    pub cpv: String,
    /// The columns: every compiler any version of the package was built with, in
    /// [`Compiler::ALL`]'s order.
    pub compilers: Vec<Compiler>,
    /// The rows, by USE configuration (`package.use` notation order).
    pub rows: Vec<MatrixRow>,
}

/// A row of a [`Matrix`].
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixRow {
    /// The USE configuration.
    pub use_flags: UseAssignment,
    /// One entry per [`Matrix::compilers`]: the cell's latest row, if it was built.
    pub cells: Vec<Option<StoredOutcome>>,
}

/// A cell whose state changed between two snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Its previous non-spurious row.
    pub before: StoredOutcome,
    /// Its row in the later snapshot.
    pub after: StoredOutcome,
}

/// What changed in a snapshot ([`Database::changes`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Changes {
    /// The snapshot looked at.
    pub snapshot: Snapshot,
    /// The latest snapshot compared against (each cell's latest non-spurious row up to it).
    pub base: SnapshotId,
    /// Cells failing now that did not before ([`Status::is_failure`]).
    pub newly_failing: Vec<Change>,
    /// Cells not failing now that did before.
    pub newly_fixed: Vec<Change>,
    /// Cells with a non-spurious row now and none up to `base`.
    pub new_cells: u64,
}

/// One package version with failing cells ([`Database::failures_by_package`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PackageFailures {
    /// The repository.
    pub repo: String,
    /// `category/package-version`.
    pub cpv: String,
    /// Its cells by their latest status.
    pub counts: StatusCounts,
    /// The latest rows of its cells that fail on their own ([`Status::is_own_failure`]).
    pub own_failures: Vec<StoredOutcome>,
}

/// Cells blocked by one failing dependency ([`Database::dependency_roots`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DependencyRoot {
    /// The dependency their logs name.
    pub dependency: FailedDependency,
    /// The latest rows of the cells it blocks (`deps_failed`), by cell.
    pub blocked: Vec<StoredOutcome>,
}

/// How far the database has been written: changes whenever anything is stored, so a reader
/// that keeps a computed view ([`Database::revision`]) knows when to compute it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Revision {
    /// The latest `outcomes` row (0: none).
    pub outcomes: i64,
    /// The latest infrastructure failure (0: none).
    pub infra_failures: i64,
    /// The latest quarantined upload (0: none).
    pub quarantined: i64,
}

/// A workunit BOINC reported failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfraFailure {
    /// The row's id (increasing).
    pub id: i64,
    /// The workunit name (`wu#<id>` when BOINC gave none).
    pub wu_name: String,
    /// BOINC's error mask.
    pub error_mask: i64,
    /// BOINC's workunit id.
    pub wu_id: i64,
    /// BOINC's batch id.
    pub batch_id: i64,
    /// When it was recorded (UTC).
    pub recorded_at: String,
}

/// An upload refused for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// The workunit name (`wu#<id>` when the upload's name named none).
    pub wu_name: String,
    /// The upload's path.
    pub file: String,
    /// The sha256 of the kept copy, when one was kept.
    pub file_sha256: Option<String>,
    /// Why it was refused.
    pub reason: String,
    /// When it was recorded (UTC).
    pub recorded_at: String,
}

/// The columns of a [`StoredOutcome`], from `outcomes` as `o` and `snapshots` as `s`.
const COLUMNS: &str = "o.seq, o.wu_name, o.job_id, o.snapshot, coalesce(s.label, o.snapshot) AS snapshot_label, o.repo, o.cpv,
    o.use_flags, o.compiler, o.status, o.failed_phase, o.test_ran, o.failing_tests, o.phases, o.duration_secs, o.backend,
    o.accelerator, o.summary, o.log_sha256, o.emerge_info_sha256, o.assimilated_at, o.dep_kind, o.dep_cpv, o.dep_phase";

/// The latest row of each cell among `outcomes` rows meeting `{}`, with its rank as `n`.
fn latest_of(conditions: &str) -> String {
    format!(
        "(SELECT *, row_number() OVER (PARTITION BY repo, cpv, use_flags, compiler ORDER BY snapshot DESC, seq DESC) AS n
          FROM outcomes WHERE {conditions})"
    )
}

/// The latest row of each cell `filter` keeps, as `o` (the columns of `outcomes`), and the
/// conditions that select it; the order's column prefix. Without a snapshot bound it is
/// `cell_latest`'s (kept by a trigger on every insert, migration `0005_cell_latest`), which
/// its index answers page by page; with one, a window over the rows up to the bound.
fn latest_from(filter: &Filter, order: Order, params: &mut Vec<Value>) -> (String, Vec<String>, &'static str) {
    let mut conditions = Vec::new();
    if filter.snapshot.is_none() && filter.up_to.is_none() {
        filter.cell_conditions("c.", &mut conditions, params);
        // cell_latest keeps the latest status too (migration 0008), indexed with the cell.
        filter.status_condition("c.", &mut conditions);
        let prefix = if order == Order::Slowest { "o." } else { "c." };
        ("cell_latest c JOIN outcomes o ON o.seq = c.seq".into(), conditions, prefix)
    } else {
        let mut inner = Vec::new();
        filter.cell_conditions("", &mut inner, params);
        conditions.push("o.n = 1".to_owned());
        filter.status_condition("o.", &mut conditions);
        (format!("{} o", latest_of(&and(&inner))), conditions, "o.")
    }
}

/// `'a', 'b'`: the codes of the statuses `pick` keeps, for `status IN (...)`; built from the
/// enum (the codes are fixed identifiers, no quoting needed).
fn status_list(pick: impl Fn(Status) -> bool) -> String {
    let codes: Vec<String> = Status::ALL.into_iter().filter(|s| pick(*s)).map(|s| format!("'{}'", s.as_str())).collect();
    if codes.is_empty() {
        "NULL".into()
    } else {
        codes.join(", ")
    }
}

fn like_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

fn and(conditions: &[String]) -> String {
    if conditions.is_empty() {
        "1".into()
    } else {
        conditions.join(" AND ")
    }
}

/// A text column parsed by `T`'s `FromStr`; a value it refuses is a conversion error naming it.
fn parsed<T: std::str::FromStr>(r: &Row<'_>, column: &str) -> rusqlite::Result<T>
where
    T::Err: std::fmt::Display,
{
    let text: String = r.get(column)?;
    text.parse().map_err(|e: T::Err| conversion(r, column, e.to_string()))
}

fn json_column<T: serde::de::DeserializeOwned>(r: &Row<'_>, column: &str) -> rusqlite::Result<T> {
    let text: String = r.get(column)?;
    serde_json::from_str(&text).map_err(|e| conversion(r, column, e.to_string()))
}

fn conversion(r: &Row<'_>, column: &str, why: String) -> rusqlite::Error {
    let index = r.as_ref().column_index(column).unwrap_or(0);
    rusqlite::Error::FromSqlConversionFailure(
        index,
        rusqlite::types::Type::Text,
        Box::new(std::io::Error::other(format!("{column}: {why}"))),
    )
}

/// The cell a row names (`repo`, `cpv`, `use_flags`, `compiler`).
fn cell_columns(r: &Row<'_>) -> rusqlite::Result<Cell> {
    let text: String = r.get("use_flags")?;
    Ok(Cell {
        repo: r.get("repo")?,
        cpv: r.get("cpv")?,
        use_flags: UseAssignment::from_package_use(&text).map_err(|e| conversion(r, "use_flags", e))?,
        compiler: parsed(r, "compiler")?,
    })
}

fn stored_outcome(r: &Row<'_>) -> rusqlite::Result<StoredOutcome> {
    Ok(StoredOutcome {
        seq: r.get("seq")?,
        wu_name: r.get("wu_name")?,
        job_id: r.get("job_id")?,
        snapshot: r.get("snapshot")?,
        snapshot_label: r.get("snapshot_label")?,
        cell: cell_columns(r)?,
        status: parsed(r, "status")?,
        failed_phase: r.get("failed_phase")?,
        test_ran: r.get("test_ran")?,
        failing_tests: json_column(r, "failing_tests")?,
        phases: json_column(r, "phases")?,
        duration_secs: r.get("duration_secs")?,
        backend: r.get("backend")?,
        accelerator: r.get("accelerator")?,
        summary: r.get("summary")?,
        log: BlobId(r.get("log_sha256")?),
        emerge_info: r.get::<_, Option<String>>("emerge_info_sha256")?.map(BlobId),
        assimilated_at: r.get("assimilated_at")?,
        failed_dependency: match r.get::<_, Option<String>>("dep_kind")? {
            Some(kind) => Some(
                FailedDependency::from_columns(&kind, r.get("dep_cpv")?, r.get("dep_phase")?)
                    .ok_or_else(|| conversion(r, "dep_kind", format!("unknown kind `{kind}`")))?,
            ),
            None => None,
        },
    })
}

fn stored_localisation(r: &Row<'_>) -> rusqlite::Result<StoredLocalisation> {
    let conclusion: Option<String> = r.get("conclusion_json")?;
    Ok(StoredLocalisation {
        failing_seq: r.get("failing_seq")?,
        cell: cell_columns(r)?,
        snapshot: r.get("snapshot")?,
        status: parsed(r, "status")?,
        state: parsed(r, "state")?,
        conclusion: conclusion
            .map(|text| serde_json::from_str(&text).map_err(|e| conversion(r, "conclusion_json", e.to_string())))
            .transpose()?,
        evidence: json_column(r, "evidence_json")?,
        next: match (r.get::<_, Option<String>>("next_use_flags")?, r.get::<_, Option<String>>("next_compiler")?) {
            (Some(use_flags), Some(compiler)) => Some(Cell {
                repo: r.get("repo")?,
                cpv: r.get("cpv")?,
                use_flags: UseAssignment::from_package_use(&use_flags).map_err(|e| conversion(r, "next_use_flags", e))?,
                compiler: compiler.parse().map_err(|e: String| conversion(r, "next_compiler", e))?,
            }),
            _ => None,
        },
        next_tries: r.get("next_tries")?,
        started_at: r.get("started_at")?,
        updated_at: r.get("updated_at")?,
    })
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Database {
    /// Runs `sql` (selecting [`COLUMNS`]) and hands each row to `each`, in order, without
    /// holding the answer in memory.
    fn each_row<E: From<DbError>>(
        &self,
        sql: &str,
        params: &[Value],
        mut each: impl FnMut(StoredOutcome) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.sql_err(e))?;
        let mut rows = stmt.query(params_from_iter(params)).map_err(|e| self.sql_err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.sql_err(e))? {
            each(stored_outcome(r).map_err(|e| self.sql_err(e))?)?;
        }
        Ok(())
    }

    fn collect_rows(&self, sql: &str, params: &[Value]) -> Result<Vec<StoredOutcome>, DbError> {
        let mut out = Vec::new();
        self.each_row(sql, params, |r| {
            out.push(r);
            Ok::<(), DbError>(())
        })?;
        Ok(out)
    }

    fn outcomes_sql(filter: &Filter, page: Page) -> (String, Vec<Value>) {
        let (mut conditions, mut params) = (Vec::new(), Vec::new());
        filter.cell_conditions("o.", &mut conditions, &mut params);
        filter.status_condition("o.", &mut conditions);
        let tail = page.sql("o.", &mut params);
        (format!("SELECT {COLUMNS} FROM outcomes o LEFT JOIN snapshots s ON s.id = o.snapshot WHERE {}{tail}", and(&conditions)), params)
    }

    /// Every row `filter` keeps (each cell's whole history), one page of them.
    pub fn outcomes(&self, filter: &Filter, page: Page) -> Result<Vec<StoredOutcome>, DbError> {
        let (sql, params) = Database::outcomes_sql(filter, page);
        self.collect_rows(&sql, &params)
    }

    /// Every row `filter` keeps, in `order`, handed to `each` one at a time (a listing of a
    /// million rows holds one in memory); the first error `each` returns stops it.
    pub fn for_each_outcome<E: From<DbError>>(
        &self,
        filter: &Filter,
        order: Order,
        each: impl FnMut(StoredOutcome) -> Result<(), E>,
    ) -> Result<(), E> {
        let (sql, params) = Database::outcomes_sql(filter, Page { order, ..Page::ALL });
        self.each_row(&sql, &params, each)
    }

    fn latest_sql(filter: &Filter, page: Page) -> (String, Vec<Value>) {
        let mut params = Vec::new();
        let (from, conditions, prefix) = latest_from(filter, page.order, &mut params);
        let tail = page.sql(prefix, &mut params);
        (format!("SELECT {COLUMNS} FROM {from} LEFT JOIN snapshots s ON s.id = o.snapshot WHERE {}{tail}", and(&conditions)), params)
    }

    /// The latest row of each cell `filter` keeps (its status filter applies to that latest
    /// row), one page of them.
    pub fn latest(&self, filter: &Filter, page: Page) -> Result<Vec<StoredOutcome>, DbError> {
        let (sql, params) = Database::latest_sql(filter, page);
        self.collect_rows(&sql, &params)
    }

    /// Every row of `cell`, oldest first.
    pub fn cell_history(&self, cell: &Cell) -> Result<Vec<StoredOutcome>, DbError> {
        let rows = self.outcomes(&Filter::cell(cell), Page::ALL)?;
        // The USE filter matches flag values; the cell is the exact assignment.
        Ok(rows.into_iter().filter(|r| r.cell.use_flags == cell.use_flags).collect())
    }

    /// The row `seq`, if there is one.
    pub fn outcome(&self, seq: i64) -> Result<Option<StoredOutcome>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM outcomes o LEFT JOIN snapshots s ON s.id = o.snapshot WHERE o.seq = ?1");
        self.conn.query_row(&sql, [seq], stored_outcome).optional().map_err(|e| self.sql_err(e))
    }

    /// The cells `filter` keeps, counted by their latest status.
    pub fn status_counts(&self, filter: &Filter) -> Result<StatusCounts, DbError> {
        let mut out = StatusCounts::default();
        for (_, _, status, n) in self.counts_by_package(filter)? {
            out.add(status, n);
        }
        Ok(out)
    }

    /// (repo, cpv, status, cells) over the latest row of each cell `filter` keeps.
    fn counts_by_package(&self, filter: &Filter) -> Result<Vec<(String, String, Status, u64)>, DbError> {
        let mut params = Vec::new();
        let (from, conditions, _) = latest_from(filter, Order::Cell, &mut params);
        let sql = format!(
            "SELECT o.repo AS repo, o.cpv AS cpv, o.status AS status, count(*) AS cells FROM {from} WHERE {}
             GROUP BY o.repo, o.cpv, o.status ORDER BY o.cpv, o.repo",
            and(&conditions)
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.sql_err(e))?;
        let rows = stmt
            .query_map(params_from_iter(&params), |r| Ok((r.get("repo")?, r.get("cpv")?, parsed(r, "status")?, count(r.get("cells")?))))
            .map_err(|e| self.sql_err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql_err(e))
    }

    /// The rows, cells, infrastructure failures and quarantined uploads stored.
    pub fn totals(&self) -> Result<Totals, DbError> {
        let one =
            |sql: &str| -> Result<u64, DbError> { self.conn.query_row(sql, [], |r| r.get(0)).map(count).map_err(|e| self.sql_err(e)) };
        Ok(Totals {
            outcomes: one("SELECT count(*) FROM outcomes")?,
            cells: one("SELECT count(*) FROM cell_latest")?,
            infra_failures: one("SELECT count(*) FROM infra_failures")?,
            quarantined: one("SELECT count(*) FROM quarantine")?,
        })
    }

    /// Every snapshot, oldest first, with its number of rows.
    pub fn snapshot_summaries(&self) -> Result<Vec<SnapshotSummary>, DbError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT s.id, s.label, s.recorded_at, (SELECT count(*) FROM outcomes o WHERE o.snapshot = s.id) AS outcomes
                 FROM snapshots s ORDER BY s.id",
            )
            .map_err(|e| self.sql_err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(SnapshotSummary {
                    snapshot: Snapshot { id: r.get("id")?, label: r.get("label")?, recorded_at: r.get("recorded_at")? },
                    outcomes: count(r.get("outcomes")?),
                })
            })
            .map_err(|e| self.sql_err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql_err(e))
    }

    /// The snapshot whose label, or else id, is `label_or_id`.
    pub fn find_snapshot(&self, label_or_id: &str) -> Result<Option<Snapshot>, DbError> {
        let all = self.snapshots()?;
        let by_label = all.iter().find(|s| s.label == label_or_id);
        Ok(by_label.or_else(|| all.iter().find(|s| s.id.to_string() == label_or_id)).cloned())
    }

    /// The latest snapshot that has outcomes.
    pub fn latest_snapshot(&self) -> Result<Option<SnapshotId>, DbError> {
        self.conn.query_row("SELECT max(snapshot) FROM outcomes", [], |r| r.get(0)).map_err(|e| self.sql_err(e))
    }

    /// One package's matrices, one per version (and repository): `package` is
    /// `category/package` (every version) or `category/package-version`. Empty when nothing
    /// of it is stored.
    pub fn matrix(&self, package: &str) -> Result<Vec<Matrix>, DbError> {
        let filter = if split_cpv(package).is_some() {
            Filter { cpv: Some(package.to_owned()), ..Filter::default() }
        } else {
            Filter { package: Some(package.to_owned()), ..Filter::default() }
        };
        let rows = self.latest(&filter, Page::ALL)?;
        let compilers: Vec<Compiler> = Compiler::ALL.into_iter().filter(|c| rows.iter().any(|r| r.cell.compiler == *c)).collect();
        let mut versions: BTreeMap<(String, String), BTreeMap<String, MatrixRow>> = BTreeMap::new();
        for r in rows {
            let column = compilers.iter().position(|c| *c == r.cell.compiler).expect("every row's compiler is a column");
            let row = versions
                .entry((r.cell.cpv.clone(), r.cell.repo.clone()))
                .or_default()
                .entry(r.cell.use_flags.to_package_use())
                .or_insert_with(|| MatrixRow { use_flags: r.cell.use_flags.clone(), cells: vec![None; compilers.len()] });
            row.cells[column] = Some(r);
        }
        Ok(versions
            .into_iter()
            .map(|((cpv, repo), rows)| Matrix { repo, cpv, compilers: compilers.clone(), rows: rows.into_values().collect() })
            .collect())
    }

    /// What changed in `snapshot`: each cell's latest row in it, against the cell's latest
    /// non-spurious row up to `base` (default: every earlier snapshot). Cells whose row in
    /// `snapshot` is spurious are left out; so are cells whose state did not change.
    pub fn changes(&self, snapshot: SnapshotId, base: Option<SnapshotId>) -> Result<Changes, DbError> {
        let base = base.unwrap_or(SnapshotId(snapshot.0 - 1));
        let target = self.snapshots()?.into_iter().find(|s| s.id == snapshot).unwrap_or_else(|| Snapshot {
            id: snapshot,
            label: snapshot.to_string(),
            recorded_at: String::new(),
        });
        let spurious = status_list(Status::is_spurious);
        // Each cell's previous row is one index seek (outcomes_cell) per row of the snapshot,
        // whose rows the index on snapshot finds.
        let sql = format!(
            "SELECT {COLUMNS}, p.seq AS prev_seq, p.status AS prev_status
             FROM (SELECT t.*,
                     (SELECT q.seq FROM outcomes q
                      WHERE q.repo = t.repo AND q.cpv = t.cpv AND q.use_flags = t.use_flags AND q.compiler = t.compiler
                        AND q.snapshot <= ?2 AND q.status NOT IN ({spurious})
                      ORDER BY q.snapshot DESC, q.seq DESC LIMIT 1) AS prev
                   FROM {now} t WHERE t.n = 1 AND t.status NOT IN ({spurious})) o
             LEFT JOIN outcomes p ON p.seq = o.prev
             LEFT JOIN snapshots s ON s.id = o.snapshot
             ORDER BY {order}",
            now = latest_of("snapshot = ?1"),
            order = Order::Cell.sql("o."),
        );
        let mut changed: Vec<(i64, StoredOutcome, bool)> = Vec::new();
        let mut new_cells = 0;
        {
            let mut stmt = self.conn.prepare(&sql).map_err(|e| self.sql_err(e))?;
            let mut rows = stmt.query(rusqlite::params![snapshot, base]).map_err(|e| self.sql_err(e))?;
            while let Some(r) = rows.next().map_err(|e| self.sql_err(e))? {
                let now = stored_outcome(r).map_err(|e| self.sql_err(e))?;
                let Some(prev_seq) = r.get::<_, Option<i64>>("prev_seq").map_err(|e| self.sql_err(e))? else {
                    new_cells += 1;
                    continue;
                };
                let was: Status = parsed(r, "prev_status").map_err(|e| self.sql_err(e))?;
                if now.status.is_failure() != was.is_failure() {
                    changed.push((prev_seq, now, was.is_failure()));
                }
            }
        }
        let mut out = Changes { snapshot: target, base, newly_failing: Vec::new(), newly_fixed: Vec::new(), new_cells };
        for (prev_seq, after, was_failing) in changed {
            let Some(before) = self.outcome(prev_seq)? else { continue };
            let change = Change { before, after };
            if was_failing {
                out.newly_fixed.push(change);
            } else {
                out.newly_failing.push(change);
            }
        }
        Ok(out)
    }

    /// Package versions with a cell whose latest row is not a success, most own failures
    /// first, then most dependency failures, then by cpv; one page of them (the page's
    /// order is ignored).
    pub fn failures_by_package(&self, filter: &Filter, page: Page) -> Result<Vec<PackageFailures>, DbError> {
        let mut packages: BTreeMap<(String, String), StatusCounts> = BTreeMap::new();
        for (repo, cpv, status, n) in self.counts_by_package(filter)? {
            packages.entry((cpv, repo)).or_default().add(status, n);
        }
        let mut failing: Vec<((String, String), StatusCounts)> =
            packages.into_iter().filter(|(_, c)| c.get(Status::Success) < c.total()).collect();
        let own = |c: &StatusCounts| c.sum(Status::is_own_failure);
        failing.sort_by(|a, b| {
            own(&b.1).cmp(&own(&a.1)).then(b.1.get(Status::DepsFailed).cmp(&a.1.get(Status::DepsFailed))).then(a.0.cmp(&b.0))
        });
        let skip = usize::try_from(page.offset).unwrap_or(usize::MAX);
        let take = page.limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        let mut out = Vec::new();
        for ((cpv, repo), counts) in failing.into_iter().skip(skip).take(take) {
            let own_failures = if own(&counts) == 0 {
                Vec::new()
            } else {
                let narrowed = Filter {
                    repo: Some(repo.clone()),
                    cpv: Some(cpv.clone()),
                    statuses: Status::ALL.into_iter().filter(|s| s.is_own_failure()).collect(),
                    ..filter.clone()
                };
                self.latest(&narrowed, Page::ALL)?
            };
            out.push(PackageFailures { repo, cpv, counts, own_failures });
        }
        Ok(out)
    }

    /// The cells `filter` keeps whose latest row is `deps_failed`, grouped by the dependency
    /// their build log names ([`Database::failed_dependency`]: read when the row was stored;
    /// only rows stored before that are read from their log now), the largest group first.
    pub fn dependency_roots(&self, filter: &Filter) -> Result<Vec<DependencyRoot>, DbError> {
        let filter = Filter { statuses: vec![Status::DepsFailed], ..filter.clone() };
        let mut groups: BTreeMap<FailedDependency, Vec<StoredOutcome>> = BTreeMap::new();
        for r in self.latest(&filter, Page::ALL)? {
            groups.entry(self.failed_dependency(&r)).or_default().push(r);
        }
        let mut out: Vec<DependencyRoot> = groups.into_iter().map(|(dependency, blocked)| DependencyRoot { dependency, blocked }).collect();
        out.sort_by(|a, b| b.blocked.len().cmp(&a.blocked.len()).then(a.dependency.to_string().cmp(&b.dependency.to_string())));
        Ok(out)
    }

    /// The dependency `row` blames: the one read when it was stored, else read from its log now
    /// (rows stored before migration `0004_failed_dependency`). Meaningful for `deps_failed`
    /// rows only.
    pub fn failed_dependency(&self, row: &StoredOutcome) -> FailedDependency {
        if let Some(d) = &row.failed_dependency {
            return d.clone();
        }
        match self.read_blob(row.log.sha256()) {
            Ok(log) => crate::buildlog::failed_dependency(&log),
            Err(e) => FailedDependency::Unreadable(gah_util::error_chain(&e)),
        }
    }

    /// Workunits BOINC reported failed as a whole, newest first, one page of them (the page's
    /// order is ignored).
    pub fn infra_failures(&self, page: Page) -> Result<Vec<InfraFailure>, DbError> {
        let mut params = Vec::new();
        let tail = page.limit_sql(&mut params);
        let sql =
            format!("SELECT rowid AS id, wu_name, error_mask, wu_id, batch_id, recorded_at FROM infra_failures ORDER BY rowid DESC{tail}");
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.sql_err(e))?;
        let rows = stmt
            .query_map(params_from_iter(&params), |r| {
                Ok(InfraFailure {
                    id: r.get("id")?,
                    wu_name: r.get("wu_name")?,
                    error_mask: r.get("error_mask")?,
                    wu_id: r.get("wu_id")?,
                    batch_id: r.get("batch_id")?,
                    recorded_at: r.get("recorded_at")?,
                })
            })
            .map_err(|e| self.sql_err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql_err(e))
    }

    /// Uploads refused for good, newest first, one page of them (the page's order is ignored).
    pub fn quarantined(&self, page: Page) -> Result<Vec<Quarantined>, DbError> {
        let mut params = Vec::new();
        let tail = page.limit_sql(&mut params);
        let sql = format!("SELECT wu_name, file, file_sha256, reason, recorded_at FROM quarantine ORDER BY rowid DESC{tail}");
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.sql_err(e))?;
        let rows = stmt
            .query_map(params_from_iter(&params), |r| {
                Ok(Quarantined {
                    wu_name: r.get("wu_name")?,
                    file: r.get("file")?,
                    file_sha256: r.get("file_sha256")?,
                    reason: r.get("reason")?,
                    recorded_at: r.get("recorded_at")?,
                })
            })
            .map_err(|e| self.sql_err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql_err(e))
    }

    /// How far the database has been written (three index reads).
    pub fn revision(&self) -> Result<Revision, DbError> {
        let max = |sql: &str| -> Result<i64, DbError> {
            self.conn.query_row(sql, [], |r| r.get::<_, Option<i64>>(0)).map(Option::unwrap_or_default).map_err(|e| self.sql_err(e))
        };
        Ok(Revision {
            outcomes: max("SELECT max(seq) FROM outcomes")?,
            infra_failures: max("SELECT max(rowid) FROM infra_failures")?,
            quarantined: max("SELECT max(rowid) FROM quarantine")?,
        })
    }

    /// The packages row `seq`'s job merged (its dependencies and itself, in merge order, each
    /// built or installed from a binary package), as its outcome recorded them; `None` when
    /// there is no such row.
    pub fn merged_packages(&self, seq: i64) -> Result<Option<Vec<PackageVersion>>, DbError> {
        let json: Option<String> = self
            .conn
            .query_row("SELECT outcome_json FROM outcomes WHERE seq = ?1", [seq], |r| r.get(0))
            .optional()
            .map_err(|e| self.sql_err(e))?;
        let Some(json) = json else { return Ok(None) };
        // Stored after the validator checked it; a row that no longer parses shows no packages
        // rather than failing the page that asked.
        Ok(Some(serde_json::from_str::<crate::outcome::Outcome>(&json).map(|o| o.packages).unwrap_or_default()))
    }

    /// The cells whose latest row is `deps_failed` because the package `cpv` failed (as their
    /// logs name it), one page of them by cell (the page's order is ignored).
    pub fn dependents(&self, cpv: &str, page: Page) -> Result<Vec<StoredOutcome>, DbError> {
        let mut params = vec![Value::Text(cpv.to_owned())];
        let tail = Page { order: Order::Cell, ..page }.sql("o.", &mut params);
        let sql = format!(
            "SELECT {COLUMNS} FROM outcomes o JOIN cell_latest c ON c.seq = o.seq LEFT JOIN snapshots s ON s.id = o.snapshot
             WHERE o.dep_cpv = ?1 AND o.status = '{}'{tail}",
            Status::DepsFailed.as_str()
        );
        self.collect_rows(&sql, &params)
    }

    /// The localisation of the failing row `failing_seq`, if one was started.
    pub fn localisation(&self, failing_seq: i64) -> Result<Option<StoredLocalisation>, DbError> {
        self.conn
            .query_row("SELECT * FROM localisations WHERE failing_seq = ?1", [failing_seq], stored_localisation)
            .optional()
            .map_err(|e| self.sql_err(e))
    }

    /// The newest localisation of `cell` (of its latest failing row that has one): what a
    /// cell's page and its bug report show. A localisation's own rerun of the failing
    /// configuration is a later row of the same cell, so this goes by cell, not by row.
    pub fn cell_localisation(&self, cell: &Cell) -> Result<Option<StoredLocalisation>, DbError> {
        let rows = self.localisations(&Filter::cell(cell), None, Page { order: Order::Newest, ..Page::ALL })?;
        Ok(rows.into_iter().find(|l| l.cell.use_flags == cell.use_flags))
    }

    /// The localisations `filter` keeps (its cell, snapshot and status conditions, on the
    /// failing row's), in `state` when given, one page of them: by cell with
    /// [`Order::Cell`], newest failing row first otherwise.
    pub fn localisations(&self, filter: &Filter, state: Option<LocalisationState>, page: Page) -> Result<Vec<StoredLocalisation>, DbError> {
        let (mut conditions, mut params) = (Vec::new(), Vec::new());
        filter.cell_conditions("l.", &mut conditions, &mut params);
        filter.status_condition("l.", &mut conditions);
        if let Some(state) = state {
            params.push(Value::Text(state.as_str().to_owned()));
            conditions.push(format!("l.state = ?{}", params.len()));
        }
        let order = match page.order {
            Order::Cell => "l.cpv, l.use_flags, l.compiler, l.repo, l.snapshot, l.failing_seq",
            Order::Newest | Order::Slowest => "l.failing_seq DESC",
        };
        let tail = page.limit_sql(&mut params);
        let sql = format!("SELECT l.* FROM localisations l WHERE {} ORDER BY {order}{tail}", and(&conditions));
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.sql_err(e))?;
        let rows = stmt.query_map(params_from_iter(&params), stored_localisation).map_err(|e| self.sql_err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql_err(e))
    }

    /// The running localisations waiting for a result of job `job_id` (their pending
    /// follow-up's cell has that id), oldest failure first.
    pub fn localisations_awaiting(&self, job_id: &str) -> Result<Vec<StoredLocalisation>, DbError> {
        let mut stmt = self
            .conn
            .prepare("SELECT * FROM localisations WHERE next_job_id = ?1 AND state = 'running' ORDER BY failing_seq")
            .map_err(|e| self.sql_err(e))?;
        let rows = stmt.query_map([job_id], stored_localisation).map_err(|e| self.sql_err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.sql_err(e))
    }

    /// The newest finished localisation of the same ebuild (repository, cpv) and status as
    /// `failing` whose cause `failing`'s configuration shows: what explains that failure
    /// without a localisation of its own (the assimilator does not start one then; a bug
    /// report cites it).
    pub fn localisation_explaining(&self, failing: &StoredOutcome) -> Result<Option<StoredLocalisation>, DbError> {
        let done =
            self.localisations(&Filter::same_failure(failing), Some(LocalisationState::Done), Page { order: Order::Newest, ..Page::ALL })?;
        Ok(done.into_iter().find(|l| {
            l.conclusion.as_ref().and_then(Conclusion::cause).is_some_and(|c| c.matches(&failing.cell.use_flags, failing.cell.compiler))
        }))
    }

    /// True when workunit `wu_name` has an infrastructure failure row.
    pub fn has_infra_failure(&self, wu_name: &str) -> Result<bool, DbError> {
        self.conn
            .query_row("SELECT EXISTS (SELECT 1 FROM infra_failures WHERE wu_name = ?1)", [wu_name], |r| r.get(0))
            .map_err(|e| self.sql_err(e))
    }

    /// SQLite's `PRAGMA integrity_check`: `ok`, or what is wrong.
    pub fn integrity_check(&self) -> Result<String, DbError> {
        self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(|e| self.sql_err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::NewOutcome;
    use crate::job::Job;
    use crate::outcome::Outcome;

    fn flags(text: &str) -> UseAssignment {
        UseAssignment::from_package_use(text).unwrap()
    }

    /// Records `status` for `cpv` with USE `use_flags` and `compiler` under snapshot `label`.
    fn put(db: &mut Database, label: &str, cpv: &str, use_flags: &str, compiler: Compiler, status: Status, log: &str) {
        let snapshot = db.snapshot(label).unwrap();
        let job = Job::new("gah", cpv, flags(use_flags), compiler, 60);
        let mut o = Outcome::for_job(&job, status);
        o.failed_phase = match status {
            Status::BuildFailed => Some("compile".into()),
            Status::TestFailed => Some("test".into()),
            Status::DepsFailed => Some("deps".into()),
            _ => None,
        };
        o.failing_tests = if status == Status::TestFailed { vec!["t_ssl".into()] } else { Vec::new() };
        o.summary = status.to_string();
        o.duration_secs = cpv.len() as f64 + if compiler == Compiler::Clang { 0.5 } else { 0.0 };
        let wu = format!("{}_{label}", job.job_id);
        let new = NewOutcome { wu_name: &wu, snapshot, outcome: &o, log: log.as_bytes(), emerge_info: Some(b"Portage 3.0.66\n") };
        db.record(&new).unwrap();
    }

    const BAD: &str = "cc -c a.c\nb.c:1:2: error: ssl.h: No such file\n * ERROR: a/b-1::gah failed (compile phase):\n";

    /// Two snapshots of a small tree: a/b-1 breaks with clang+ssl in s2, c/d-2 is fixed in
    /// s2, e/f-1 and e/g-1 are blocked by dev-libs/foo, g/h-1 times out in s2 after failing
    /// in s1, a/bc-1 is another package whose name starts like a/b.
    fn scenario() -> Database {
        let mut db = Database::temp().unwrap();
        for (label, clang_ssl) in [("git:s1", Status::Success), ("git:s2", Status::BuildFailed)] {
            put(&mut db, label, "a/b-1", "ssl -static", Compiler::Gcc, Status::Success, "ok");
            put(&mut db, label, "a/b-1", "ssl -static", Compiler::Clang, clang_ssl, BAD);
            put(&mut db, label, "a/b-1", "-ssl -static", Compiler::Clang, Status::Success, "ok");
        }
        put(&mut db, "git:s1", "c/d-2", "-ssl", Compiler::Gcc, Status::TestFailed, "FAIL: t_ssl");
        put(&mut db, "git:s2", "c/d-2", "-ssl", Compiler::Gcc, Status::Success, "ok");
        let deps = " * ERROR: dev-libs/foo-1.2::gentoo failed (configure phase):";
        put(&mut db, "git:s2", "e/f-1", "", Compiler::Gcc, Status::DepsFailed, deps);
        put(&mut db, "git:s2", "e/g-1", "", Compiler::Gcc, Status::DepsFailed, deps);
        put(&mut db, "git:s1", "g/h-1", "", Compiler::Gcc, Status::BuildFailed, BAD);
        put(&mut db, "git:s2", "g/h-1", "", Compiler::Gcc, Status::Timeout, "");
        put(&mut db, "git:s2", "a/bc-1", "", Compiler::Gcc, Status::ResourceLimit, "");
        db
    }

    fn names(rows: &[StoredOutcome]) -> Vec<String> {
        rows.iter()
            .map(|r| {
                format!("{} [{}] {} {} {}", r.cell.cpv, r.cell.use_flags.to_package_use(), r.cell.compiler, r.status, r.snapshot_label)
            })
            .collect()
    }

    #[test]
    fn rows_come_typed_by_cell_and_filtered() {
        let db = scenario();
        let all = db.outcomes(&Filter::default(), Page::ALL).unwrap();
        assert_eq!(all.len(), 13);
        let r = &all[0];
        assert_eq!((r.cell.cpv.as_str(), r.cell.compiler, r.status), ("a/b-1", Compiler::Clang, Status::Success));
        assert_eq!((r.snapshot_label.as_str(), r.cell.use_flags.to_package_use().as_str()), ("git:s1", "-ssl -static"));
        assert_eq!(r.job_id, r.cell.job_id());
        assert!(r.emerge_info.is_some() && db.read_blob(r.log.sha256()).unwrap() == b"ok");

        let clang_ssl = Filter { use_flags: flags("ssl"), compiler: Some(Compiler::Clang), ..Filter::default() };
        assert_eq!(
            names(&db.outcomes(&clang_ssl, Page::ALL).unwrap()),
            ["a/b-1 [ssl -static] clang success git:s1", "a/b-1 [ssl -static] clang build_failed git:s2"]
        );
        let text = Filter { text: Some("B-".into()), ..Filter::default() };
        assert_eq!(db.outcomes(&text, Page::ALL).unwrap().len(), 6, "case-insensitive substring of the cpv");
        let package = Filter { package: Some("a/b".into()), ..Filter::default() };
        assert!(db.outcomes(&package, Page::ALL).unwrap().iter().all(|r| r.cell.cpv == "a/b-1"), "a/bc-1 is another package");
        assert_eq!(db.outcomes(&package, Page::ALL).unwrap().len(), 6);
        assert!(db.outcomes(&Filter { package: Some("A/B".into()), ..Filter::default() }, Page::ALL).unwrap().is_empty());
        let s1 = db.find_snapshot("git:s1").unwrap().unwrap().id;
        let failed_in_s1 = Filter { snapshot: Some(s1), statuses: vec![Status::BuildFailed, Status::TestFailed], ..Filter::default() };
        assert_eq!(
            names(&db.outcomes(&failed_in_s1, Page::ALL).unwrap()),
            ["c/d-2 [-ssl] gcc test_failed git:s1", "g/h-1 [] gcc build_failed git:s1"]
        );
        let odd = Filter { text: Some("%_".into()), use_flags: flags("x_y"), ..Filter::default() };
        assert!(db.outcomes(&odd, Page::ALL).unwrap().is_empty(), "LIKE wildcards are escaped");
    }

    #[test]
    fn pages_slice_and_order() {
        let db = scenario();
        let all = db.outcomes(&Filter::default(), Page::ALL).unwrap();
        let page = db.outcomes(&Filter::default(), Page { offset: 2, limit: Some(3), order: Order::Cell }).unwrap();
        assert_eq!(page, all[2..5]);
        let newest = db.outcomes(&Filter::default(), Page::first(1, Order::Newest)).unwrap();
        assert_eq!(newest[0].seq, all.iter().map(|r| r.seq).max().unwrap());
        let slowest = db.latest(&Filter::default(), Page::first(2, Order::Slowest)).unwrap();
        assert_eq!(names(&slowest), ["a/bc-1 [] gcc resource_limit git:s2", "a/b-1 [ssl -static] clang build_failed git:s2"]);
        // Streaming stops at the first error its callback returns.
        let mut seen = 0;
        let stopped = db.for_each_outcome(&Filter::default(), Order::Cell, |_| {
            seen += 1;
            if seen == 3 {
                Err(DbError::Io { path: "stop".into(), source: std::io::Error::other("enough") })
            } else {
                Ok(())
            }
        });
        assert!(stopped.is_err() && seen == 3);
    }

    #[test]
    fn latest_is_each_cells_state_and_history_its_rows() {
        let db = scenario();
        let latest = db.latest(&Filter { cpv: Some("a/b-1".into()), ..Filter::default() }, Page::ALL).unwrap();
        assert_eq!(
            names(&latest),
            [
                "a/b-1 [-ssl -static] clang success git:s2",
                "a/b-1 [ssl -static] clang build_failed git:s2",
                "a/b-1 [ssl -static] gcc success git:s2"
            ]
        );
        let failing_now = Filter { statuses: vec![Status::BuildFailed], ..Filter::default() };
        assert_eq!(names(&db.latest(&failing_now, Page::ALL).unwrap()), ["a/b-1 [ssl -static] clang build_failed git:s2"]);
        let s1 = db.find_snapshot("1").unwrap().unwrap().id;
        let then = db.latest(&Filter { up_to: Some(s1), ..Filter::default() }, Page::ALL).unwrap();
        assert_eq!(then.len(), 5, "the cells as they were in s1");

        let cell = latest[1].cell.clone();
        let history = db.cell_history(&cell).unwrap();
        assert_eq!(history.iter().map(|r| r.status).collect::<Vec<_>>(), [Status::Success, Status::BuildFailed]);
        assert_eq!(db.outcome(history[1].seq).unwrap().as_ref(), Some(&history[1]));
        assert_eq!(db.outcome(-1).unwrap(), None);
    }

    #[test]
    fn the_kept_latest_rows_are_the_windows_answer_even_for_late_rows() {
        let mut db = scenario();
        // A row of an older snapshot stored last: not the cell's state.
        put(&mut db, "git:s1", "e/f-1", "", Compiler::Gcc, Status::Success, "ok");
        let fresh = |db: &Database| db.latest(&Filter::default(), Page::ALL).unwrap();
        let last = db.latest_snapshot().unwrap();
        let window = db.latest(&Filter { up_to: last, ..Filter::default() }, Page::ALL).unwrap();
        assert_eq!(fresh(&db), window);
        assert!(names(&window).contains(&"e/f-1 [] gcc deps_failed git:s2".to_owned()));
        // A database from before the table: the migration fills it from the rows.
        db.conn
            .execute_batch(
                "DELETE FROM cell_latest; DELETE FROM migrations WHERE name IN ('0005_cell_latest', '0008_cell_latest_status');
                 DROP TRIGGER outcomes_cell_latest; DROP INDEX cell_latest_status; DROP TABLE cell_latest; DROP INDEX outcomes_snapshot;",
            )
            .unwrap();
        let again = Database::open(db.path()).unwrap();
        assert_eq!(fresh(&again), window);
        // ... and 0008 the latest status, which status filters read.
        let blocked = Filter { statuses: vec![Status::DepsFailed], ..Filter::default() };
        let blocked_then = Filter { up_to: last, ..blocked.clone() };
        assert_eq!(again.latest(&blocked, Page::ALL).unwrap(), again.latest(&blocked_then, Page::ALL).unwrap());
        assert_eq!(again.latest(&blocked, Page::ALL).unwrap().len(), 2);
        for order in [Order::Newest, Order::Slowest] {
            let page = Page::first(3, order);
            assert_eq!(
                again.latest(&Filter::default(), page).unwrap(),
                again.latest(&Filter { up_to: last, ..Filter::default() }, page).unwrap()
            );
        }
    }

    #[test]
    fn counts_and_totals() {
        let mut db = scenario();
        let counts = db.status_counts(&Filter::default()).unwrap();
        assert_eq!(counts.total(), 8);
        let got: Vec<(Status, u64)> = counts.iter().filter(|(_, n)| *n > 0).collect();
        assert_eq!(
            got,
            [(Status::Success, 3), (Status::DepsFailed, 2), (Status::BuildFailed, 1), (Status::Timeout, 1), (Status::ResourceLimit, 1)]
        );
        assert_eq!(db.status_counts(&Filter { compiler: Some(Compiler::Clang), ..Filter::default() }).unwrap().total(), 2);
        db.record_infra_failure("wu_gone_1", 8, 1, 0).unwrap();
        db.record_quarantine("wu_bad", "/up/wu_bad", Some("ab"), "not a tar").unwrap();
        db.record_quarantine("wu#9", "/up/x", None, "no workunit").unwrap();
        assert_eq!(db.totals().unwrap(), Totals { outcomes: 13, cells: 8, infra_failures: 1, quarantined: 2 });
        let infra = db.infra_failures(Page::ALL).unwrap();
        assert_eq!((infra[0].wu_name.as_str(), infra[0].error_mask), ("wu_gone_1", 8));
        let q = db.quarantined(Page::first(1, Order::Cell)).unwrap();
        assert_eq!((q.len(), q[0].wu_name.as_str(), q[0].file_sha256.as_deref()), (1, "wu#9", None));
        assert_eq!(db.integrity_check().unwrap(), "ok");
    }

    #[test]
    fn snapshots_are_found_by_label_or_id_and_counted() {
        let db = scenario();
        let summaries: Vec<(String, u64)> = db.snapshot_summaries().unwrap().into_iter().map(|s| (s.snapshot.label, s.outcomes)).collect();
        assert_eq!(summaries, [("unrecorded".to_owned(), 0), ("git:s1".into(), 5), ("git:s2".into(), 8)]);
        let s2 = db.find_snapshot("git:s2").unwrap().unwrap();
        assert_eq!(db.find_snapshot(&s2.id.to_string()).unwrap(), Some(s2.clone()));
        assert_eq!(db.latest_snapshot().unwrap(), Some(s2.id));
        assert_eq!(db.find_snapshot("git:none").unwrap(), None);
        assert_eq!(Database::temp().unwrap().latest_snapshot().unwrap(), None);
    }

    #[test]
    fn the_matrix_has_use_rows_and_compiler_columns() {
        let db = scenario();
        let m = db.matrix("a/b").unwrap();
        assert_eq!(m.len(), 1, "a/bc-1 is another package");
        assert_eq!((m[0].cpv.as_str(), m[0].compilers.as_slice()), ("a/b-1", &[Compiler::Gcc, Compiler::Clang][..]));
        let cells: Vec<(String, Vec<Option<Status>>)> = m[0]
            .rows
            .iter()
            .map(|r| (r.use_flags.to_package_use(), r.cells.iter().map(|c| c.as_ref().map(|c| c.status)).collect()))
            .collect();
        assert_eq!(
            cells,
            [
                ("-ssl -static".to_owned(), vec![None, Some(Status::Success)]),
                ("ssl -static".to_owned(), vec![Some(Status::Success), Some(Status::BuildFailed)])
            ]
        );
        assert_eq!(db.matrix("a/b-1").unwrap(), m);
        assert!(db.matrix("a/bb").unwrap().is_empty());
    }

    #[test]
    fn changes_find_newly_failing_and_newly_fixed() {
        let db = scenario();
        let s2 = db.latest_snapshot().unwrap().unwrap();
        let c = db.changes(s2, None).unwrap();
        let pick = |list: &[Change]| -> Vec<String> {
            list.iter()
                .map(|ch| format!("{} {} {} -> {}", ch.after.cell.cpv, ch.after.cell.compiler, ch.before.status, ch.after.status))
                .collect()
        };
        assert_eq!(c.snapshot.label, "git:s2");
        assert_eq!(pick(&c.newly_failing), ["a/b-1 clang success -> build_failed"]);
        assert_eq!(pick(&c.newly_fixed), ["c/d-2 gcc test_failed -> success"]);
        assert_eq!(c.newly_failing[0].before.snapshot_label, "git:s1");
        assert_eq!(c.new_cells, 3, "e/f-1, e/g-1 and a/bc-1 are new in s2; g/h-1's timeout is left out");
        let s1 = db.find_snapshot("git:s1").unwrap().unwrap().id;
        assert_eq!(db.changes(s1, None).unwrap().new_cells, 5);
        // Against a base: nothing up to s1 compares with s1 itself.
        let same = db.changes(s1, Some(s1)).unwrap();
        assert!(same.newly_failing.is_empty() && same.newly_fixed.is_empty() && same.new_cells == 0);
    }

    #[test]
    fn failures_by_package_and_by_dependency() {
        let db = scenario();
        let pkgs = db.failures_by_package(&Filter::default(), Page::ALL).unwrap();
        let got: Vec<(&str, u64, u64, usize)> = pkgs
            .iter()
            .map(|p| (p.cpv.as_str(), p.counts.get(Status::DepsFailed), p.counts.sum(Status::is_spurious), p.own_failures.len()))
            .collect();
        assert_eq!(got, [("a/b-1", 0, 0, 1), ("e/f-1", 1, 0, 0), ("e/g-1", 1, 0, 0), ("a/bc-1", 0, 0, 0), ("g/h-1", 0, 1, 0)]);
        assert_eq!(pkgs[0].own_failures[0].cell.compiler, Compiler::Clang);
        assert_eq!(pkgs[3].counts.get(Status::ResourceLimit), 1);
        let second = db.failures_by_package(&Filter::default(), Page { offset: 1, limit: Some(1), order: Order::Cell }).unwrap();
        assert_eq!(second[0].cpv, "e/f-1");

        let roots = db.dependency_roots(&Filter::default()).unwrap();
        assert_eq!(roots.len(), 1);
        assert_eq!(roots[0].dependency, FailedDependency::Package { cpv: "dev-libs/foo-1.2".into(), phase: Some("configure".into()) });
        assert_eq!(roots[0].blocked.iter().map(|r| r.cell.cpv.as_str()).collect::<Vec<_>>(), ["e/f-1", "e/g-1"]);
        assert_eq!(roots[0].blocked[0].failed_dependency.as_ref(), Some(&roots[0].dependency), "read when stored");
        // A row stored before the database read it at storing time: its log is read instead.
        db.conn.execute("UPDATE outcomes SET dep_kind = NULL, dep_cpv = NULL, dep_phase = NULL WHERE cpv = 'e/g-1'", []).unwrap();
        let again = db.dependency_roots(&Filter::default()).unwrap();
        assert_eq!((again.len(), &again[0].dependency, again[0].blocked.len()), (1, &roots[0].dependency, 2));
        assert_eq!(again[0].blocked[1].failed_dependency, None);
        assert!(db.dependency_roots(&Filter { text: Some("a/".into()), ..Filter::default() }).unwrap().is_empty());
    }

    #[test]
    fn a_row_the_enums_do_not_know_is_an_error_not_a_guess() {
        let db = scenario();
        db.conn.execute("UPDATE outcomes SET status = 'exploded' WHERE cpv = 'c/d-2'", []).unwrap();
        let e = db.outcomes(&Filter::default(), Page::ALL).unwrap_err();
        assert!(gah_util::error_chain(&e).contains("unknown status `exploded`"), "{}", gah_util::error_chain(&e));
        assert!(db.latest(&Filter { cpv: Some("a/b-1".into()), ..Filter::default() }, Page::ALL).is_ok());
    }

    #[test]
    fn the_revision_moves_with_every_write() {
        let mut db = scenario();
        let before = db.revision().unwrap();
        assert_eq!(before.outcomes, 13);
        put(&mut db, "git:s2", "z/z-1", "", Compiler::Gcc, Status::Success, "ok");
        assert!(db.revision().unwrap().outcomes > before.outcomes);
        db.record_quarantine("wu_1", "up", None, "bad").unwrap();
        assert!(db.revision().unwrap().quarantined > before.quarantined);
    }

    #[test]
    fn dependents_are_the_cells_a_failing_package_blocks() {
        let db = scenario();
        let blocked = db.dependents("dev-libs/foo-1.2", Page::ALL).unwrap();
        assert_eq!(names(&blocked), ["e/f-1 [] gcc deps_failed git:s2", "e/g-1 [] gcc deps_failed git:s2"]);
        assert_eq!(db.dependents("dev-libs/foo-1.2", Page::first(1, Order::Newest)).unwrap().len(), 1);
        assert!(db.dependents("a/b-1", Page::ALL).unwrap().is_empty());
    }

    #[test]
    fn merged_packages_come_from_the_stored_outcome() {
        let db = scenario();
        let first = db.outcomes(&Filter::default(), Page::first(1, Order::Cell)).unwrap().remove(0);
        assert_eq!(db.merged_packages(first.seq).unwrap(), Some(Vec::new()));
        assert_eq!(db.merged_packages(999_999).unwrap(), None);
    }

    #[test]
    fn a_localisation_is_stored_running_then_done_and_found_by_cell() {
        use crate::db::LocalisationProgress;
        use crate::localisation::{Cause, Run, Verdict};
        let mut db = scenario();
        let failing = db.latest(&Filter { cpv: Some("a/b-1".into()), statuses: vec![Status::BuildFailed], ..Filter::default() }, Page::ALL);
        let failing = failing.unwrap().remove(0);
        assert!(db.localisation(failing.seq).unwrap().is_none());
        let run = |status| Run {
            use_flags: failing.cell.use_flags.clone(),
            compiler: failing.cell.compiler,
            status,
            verdict: Verdict::of(status, Status::BuildFailed),
        };
        let mut evidence = Evidence { failing: run(Status::BuildFailed), known: 3, runs: vec![run(Status::BuildFailed)] };
        let next = Cell { use_flags: flags("-ssl"), ..failing.cell.clone() };
        db.save_localisation(failing.seq, LocalisationProgress::Running { evidence: &evidence, next: &next, tries: 0 }).unwrap();
        let stored = db.localisation(failing.seq).unwrap().unwrap();
        assert_eq!((stored.state, stored.conclusion.as_ref(), stored.status), (LocalisationState::Running, None, Status::BuildFailed));
        assert_eq!(stored.next.as_ref(), Some(&next));
        assert_eq!(db.localisations_awaiting(&next.job_id()).unwrap().len(), 1);
        assert_eq!(stored.cell, failing.cell);
        assert_eq!(db.localisations(&Filter::default(), Some(LocalisationState::Running), Page::ALL).unwrap().len(), 1);

        evidence.runs.push(Run { use_flags: flags("-ssl -static"), ..run(Status::Success) });
        let cause = Cause { flags: [("ssl".to_owned(), true)].into(), compiler: Some(Compiler::Clang) };
        let conclusion = Conclusion::Localised { cause, evidence: evidence.clone() };
        db.save_localisation(failing.seq, LocalisationProgress::Done(&conclusion)).unwrap();
        let stored = db.cell_localisation(&failing.cell).unwrap().unwrap();
        assert_eq!((stored.state, stored.conclusion.as_ref()), (LocalisationState::Done, Some(&conclusion)));
        assert_eq!(stored.evidence.runs.len(), 2);
        assert!(db.localisations(&Filter::default(), Some(LocalisationState::Running), Page::ALL).unwrap().is_empty());
        assert!(stored.next.is_none() && db.localisations_awaiting(&next.job_id()).unwrap().is_empty());
        // Narrowed like every listing; another cell has none.
        let by_flag = Filter { use_flags: flags("ssl"), compiler: Some(Compiler::Clang), ..Filter::default() };
        assert_eq!(db.localisations(&by_flag, None, Page::ALL).unwrap().len(), 1);
        let other = Cell { compiler: Compiler::Gcc, ..failing.cell.clone() };
        assert!(db.cell_localisation(&other).unwrap().is_none());
        // A row that does not exist has no localisation to store.
        assert!(db.save_localisation(987_654, LocalisationProgress::Running { evidence: &evidence, next: &next, tries: 0 }).is_err());
    }
}
