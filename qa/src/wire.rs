//! The JSON that `gah results --json` prints and the web page's API answers: typed, stable
//! shapes, documented in `docs/FORMATS.md`. Status and compiler are their lowercase codes; a
//! USE configuration is a string in `package.use` notation (`"ssl -static"`); a snapshot is
//! its label, with its id beside it where a page needs to link. Fields are only ever added.

use std::collections::BTreeMap;

use gah_core::db::read::{Change, DependencyRoot, Matrix, PackageFailures, SnapshotSummary, StatusCounts};
use gah_core::db::{Database, DbError, Filter, Page, StoredOutcome};
use gah_core::job::Compiler;
use gah_core::outcome::Status;
use serde::Serialize;

/// One stored row (`list`, one per line; `history`).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub seq: i64,
    pub wu_name: String,
    pub job_id: String,
    pub snapshot: String,
    pub snapshot_id: i64,
    pub repo: String,
    pub cpv: String,
    #[serde(rename = "use")]
    pub use_flags: String,
    pub compiler: Compiler,
    pub status: Status,
    pub failed_phase: Option<String>,
    pub test_ran: bool,
    pub failing_tests: Vec<String>,
    pub summary: String,
    pub duration_secs: f64,
    pub backend: String,
    pub accelerator: String,
    pub assimilated_at: String,
    /// The build log, relative to the database's folder.
    pub log: String,
    /// `emerge --info`, relative to the database's folder.
    pub emerge_info: Option<String>,
    /// For `deps_failed`: the dependency its log blames, for people (as `blame`'s
    /// `dependency`), when it was read as the row was stored.
    pub failed_dependency: Option<String>,
}

impl From<&StoredOutcome> for Outcome {
    fn from(r: &StoredOutcome) -> Outcome {
        Outcome {
            seq: r.seq,
            wu_name: r.wu_name.clone(),
            job_id: r.job_id.clone(),
            snapshot: r.snapshot_label.clone(),
            snapshot_id: r.snapshot.0,
            repo: r.cell.repo.clone(),
            cpv: r.cell.cpv.clone(),
            use_flags: r.cell.use_flags.to_package_use(),
            compiler: r.cell.compiler,
            status: r.status,
            failed_phase: r.failed_phase.clone(),
            test_ran: r.test_ran,
            failing_tests: r.failing_tests.clone(),
            summary: r.summary.clone(),
            duration_secs: r.duration_secs,
            backend: r.backend.clone(),
            accelerator: r.accelerator.clone(),
            assimilated_at: r.assimilated_at.clone(),
            log: r.log.relative_path(),
            emerge_info: r.emerge_info.as_ref().map(|b| b.relative_path()),
            failed_dependency: r.failed_dependency.as_ref().map(ToString::to_string),
        }
    }
}

/// A cell in brief: where a list names cells (`fails`, `blame`, `bug`'s `also_fails`).
#[derive(Debug, Clone, Serialize)]
pub struct CellState {
    pub seq: i64,
    pub cpv: String,
    pub repo: String,
    #[serde(rename = "use")]
    pub use_flags: String,
    pub compiler: Compiler,
    pub status: Status,
    pub failed_phase: Option<String>,
    pub summary: String,
    pub snapshot: String,
}

impl From<&StoredOutcome> for CellState {
    fn from(r: &StoredOutcome) -> CellState {
        CellState {
            seq: r.seq,
            cpv: r.cell.cpv.clone(),
            repo: r.cell.repo.clone(),
            use_flags: r.cell.use_flags.to_package_use(),
            compiler: r.cell.compiler,
            status: r.status,
            failed_phase: r.failed_phase.clone(),
            summary: r.summary.clone(),
            snapshot: r.snapshot_label.clone(),
        }
    }
}

/// Cells by status: every status code, zeros included.
pub fn counts(c: &StatusCounts) -> BTreeMap<&'static str, u64> {
    c.iter().map(|(s, n)| (s.as_str(), n)).collect()
}

/// `fails`.
#[derive(Debug, Clone, Serialize)]
pub struct Fails {
    pub packages: Vec<PackageFails>,
    /// Workunits BOINC reported failed as a whole.
    pub infra_failures: u64,
    /// Uploads refused for good.
    pub quarantined: u64,
    /// Which slice of `packages` this is (the web API's pages; absent from the CLI's whole
    /// answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
}

/// Where a page of a long list stands.
#[derive(Debug, Clone, Serialize)]
pub struct Paging {
    /// 1-based.
    pub page: u64,
    pub per_page: u64,
    /// Items in the whole list.
    pub total: u64,
    pub more: bool,
}

impl Paging {
    /// Items per page of the web API's long lists.
    pub const PER_PAGE: usize = 100;
    /// Cells listed per item of those lists (a package's failing cells, a dependency's blocked
    /// cells): one dependency can block tens of thousands.
    pub const ITEM_CELLS: usize = 20;

    /// A page after the last of a list of `total` items.
    pub fn past_end(total: usize) -> Paging {
        let page = total.div_ceil(Paging::PER_PAGE).max(1) as u64 + 1;
        Paging { page, per_page: Paging::PER_PAGE as u64, total: total as u64, more: false }
    }

    /// Page `page` (1-based) of `items`, and where it stands.
    pub fn slice<T: Clone>(items: &[T], page: u64) -> (Vec<T>, Paging) {
        let page = page.max(1);
        let start = usize::try_from(page - 1).unwrap_or(usize::MAX).saturating_mul(Paging::PER_PAGE);
        let part: Vec<T> = items.iter().skip(start).take(Paging::PER_PAGE).cloned().collect();
        let more = start.saturating_add(Paging::PER_PAGE) < items.len();
        (part, Paging { page, per_page: Paging::PER_PAGE as u64, total: items.len() as u64, more })
    }
}

impl Fails {
    /// Every package version with a failing cell, and the totals beside them.
    pub fn read(db: &Database) -> Result<Fails, DbError> {
        let totals = db.totals()?;
        let packages = db.failures_by_package(&Filter::default(), Page::ALL)?;
        Ok(Fails {
            packages: packages.iter().map(PackageFails::from).collect(),
            infra_failures: totals.infra_failures,
            quarantined: totals.quarantined,
            paging: None,
        })
    }
}

/// A package version in `fails`.
#[derive(Debug, Clone, Serialize)]
pub struct PackageFails {
    pub cpv: String,
    pub repo: String,
    pub cells: u64,
    pub success: u64,
    /// `build_failed` + `test_failed`.
    pub own_failures: u64,
    pub deps_failed: u64,
    /// `timeout` + `infra_error`.
    pub spurious: u64,
    pub resource_limit: u64,
    pub by_status: BTreeMap<&'static str, u64>,
    pub failing_cells: Vec<CellState>,
    /// How many there are: the web API lists the first [`Paging::ITEM_CELLS`] only.
    pub failing_cells_total: usize,
}

impl From<&PackageFailures> for PackageFails {
    fn from(p: &PackageFailures) -> PackageFails {
        PackageFails {
            cpv: p.cpv.clone(),
            repo: p.repo.clone(),
            cells: p.counts.total(),
            success: p.counts.get(Status::Success),
            own_failures: p.counts.sum(Status::is_own_failure),
            deps_failed: p.counts.get(Status::DepsFailed),
            spurious: p.counts.sum(Status::is_spurious),
            resource_limit: p.counts.get(Status::ResourceLimit),
            by_status: counts(&p.counts),
            failing_cells: p.own_failures.iter().map(CellState::from).collect(),
            failing_cells_total: p.own_failures.len(),
        }
    }
}

/// `matrix`.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixDoc {
    pub package: String,
    pub versions: Vec<Version>,
}

/// One version's matrix.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    pub cpv: String,
    pub repo: String,
    pub compilers: Vec<Compiler>,
    pub rows: Vec<MatrixRow>,
}

/// A USE row: the built cells by compiler name.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixRow {
    #[serde(rename = "use")]
    pub use_flags: String,
    pub cells: BTreeMap<Compiler, MatrixCell>,
}

/// A cell of the matrix: its latest row.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixCell {
    pub status: Status,
    pub failed_phase: Option<String>,
    pub snapshot: String,
    pub wu_name: String,
    pub seq: i64,
}

impl From<&Matrix> for Version {
    fn from(m: &Matrix) -> Version {
        let rows = m
            .rows
            .iter()
            .map(|row| MatrixRow {
                use_flags: row.use_flags.to_package_use(),
                cells: m
                    .compilers
                    .iter()
                    .zip(&row.cells)
                    .filter_map(|(c, cell)| {
                        let r = cell.as_ref()?;
                        let cell = MatrixCell {
                            status: r.status,
                            failed_phase: r.failed_phase.clone(),
                            snapshot: r.snapshot_label.clone(),
                            wu_name: r.wu_name.clone(),
                            seq: r.seq,
                        };
                        Some((*c, cell))
                    })
                    .collect(),
            })
            .collect();
        Version { cpv: m.cpv.clone(), repo: m.repo.clone(), compilers: m.compilers.clone(), rows }
    }
}

/// `history`: one entry per cell.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub cells: Vec<CellHistory>,
}

/// A cell and its rows, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct CellHistory {
    pub repo: String,
    pub cpv: String,
    #[serde(rename = "use")]
    pub use_flags: String,
    pub compiler: Compiler,
    pub history: Vec<Outcome>,
    /// The cell's newest localisation, when one was run (`localised`'s shape).
    pub localisation: Option<Localisation>,
}

/// `changes`.
#[derive(Debug, Clone, Serialize)]
pub struct Changes {
    pub snapshot: String,
    pub snapshot_id: i64,
    /// The latest snapshot compared against.
    pub base_id: i64,
    pub newly_failing: Vec<ChangeItem>,
    pub newly_fixed: Vec<ChangeItem>,
    pub new_cells: u64,
}

impl From<&gah_core::db::read::Changes> for Changes {
    fn from(c: &gah_core::db::read::Changes) -> Changes {
        Changes {
            snapshot: c.snapshot.label.clone(),
            snapshot_id: c.snapshot.id.0,
            base_id: c.base.0,
            newly_failing: c.newly_failing.iter().map(ChangeItem::from).collect(),
            newly_fixed: c.newly_fixed.iter().map(ChangeItem::from).collect(),
            new_cells: c.new_cells,
        }
    }
}

/// A changed cell.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeItem {
    pub seq: i64,
    pub cpv: String,
    pub repo: String,
    #[serde(rename = "use")]
    pub use_flags: String,
    pub compiler: Compiler,
    pub status: Status,
    pub failed_phase: Option<String>,
    /// True when it fails because a dependency did.
    pub dependency: bool,
    pub previous_seq: i64,
    pub previous_status: Status,
    pub previous_snapshot: String,
    pub summary: String,
}

impl From<&Change> for ChangeItem {
    fn from(c: &Change) -> ChangeItem {
        let r = &c.after;
        ChangeItem {
            seq: r.seq,
            cpv: r.cell.cpv.clone(),
            repo: r.cell.repo.clone(),
            use_flags: r.cell.use_flags.to_package_use(),
            compiler: r.cell.compiler,
            status: r.status,
            failed_phase: r.failed_phase.clone(),
            dependency: r.status == Status::DepsFailed,
            previous_seq: c.before.seq,
            previous_status: c.before.status,
            previous_snapshot: c.before.snapshot_label.clone(),
            summary: r.summary.clone(),
        }
    }
}

/// `blame`.
#[derive(Debug, Clone, Serialize)]
pub struct Blame {
    pub dependencies: Vec<Blamed>,
    /// Cells failing on their own (`build_failed`/`test_failed`).
    pub own_failures: u64,
    /// Which slice of `dependencies` this is (the web API's pages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
}

impl Blame {
    /// The dependency roots, and the count of cells failing on their own.
    pub fn read(db: &Database) -> Result<Blame, DbError> {
        let roots = db.dependency_roots(&Filter::default())?;
        let own = db.status_counts(&Filter::default())?.sum(Status::is_own_failure);
        Ok(Blame { dependencies: roots.iter().map(Blamed::from).collect(), own_failures: own, paging: None })
    }
}

/// One failing dependency and the cells it blocks.
#[derive(Debug, Clone, Serialize)]
pub struct Blamed {
    /// For people: `cat/pkg-ver (phase)` or a parenthesised reason.
    pub dependency: String,
    /// The dependency's `category/package-version`, when the log names one.
    pub package: Option<String>,
    /// The phase it failed in, when the log says.
    pub phase: Option<String>,
    pub blocked: Vec<CellState>,
    /// How many there are: the web API lists the first [`Paging::ITEM_CELLS`] only.
    pub blocked_total: usize,
}

impl From<&DependencyRoot> for Blamed {
    fn from(d: &DependencyRoot) -> Blamed {
        let (package, phase) = match &d.dependency {
            gah_core::buildlog::FailedDependency::Package { cpv, phase } => (Some(cpv.clone()), phase.clone()),
            _ => (None, None),
        };
        Blamed {
            dependency: d.dependency.to_string(),
            package,
            phase,
            blocked: d.blocked.iter().map(CellState::from).collect(),
            blocked_total: d.blocked.len(),
        }
    }
}

/// `bug`.
#[derive(Debug, Clone, Serialize)]
pub struct Bug {
    pub summary: String,
    pub comment: String,
    pub seq: i64,
    pub cpv: String,
    pub repo: String,
    #[serde(rename = "use")]
    pub use_flags: String,
    pub compiler: Compiler,
    pub status: Status,
    pub failed_phase: Option<String>,
    pub failing_tests: Vec<String>,
    pub wu_name: String,
    pub snapshot: String,
    pub excerpt: String,
    pub emerge_info: Option<String>,
    pub attachments: Vec<Attachment>,
    pub also_fails: Vec<CellState>,
    pub written_to: Option<String>,
    /// The failure's localisation, when one was run (its own cell's, or another failing
    /// cell's of the same ebuild whose cause this cell shows).
    pub localisation: Option<Localisation>,
}

/// A file to attach to the bug.
#[derive(Debug, Clone, Serialize)]
pub struct Attachment {
    pub name: &'static str,
    pub bytes: usize,
    pub sha256: String,
    /// Where it is stored, relative to the database's folder.
    pub stored: String,
    pub content_type: &'static str,
}

/// `snapshots`.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshots {
    pub snapshots: Vec<SnapshotItem>,
}

/// A snapshot with its number of rows.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotItem {
    pub id: i64,
    pub label: String,
    pub recorded_at: String,
    pub outcomes: u64,
}

impl From<&SnapshotSummary> for SnapshotItem {
    fn from(s: &SnapshotSummary) -> SnapshotItem {
        SnapshotItem {
            id: s.snapshot.id.0,
            label: s.snapshot.label.clone(),
            recorded_at: s.snapshot.recorded_at.clone(),
            outcomes: s.outcomes,
        }
    }
}

/// The web page's overview (`/api/overview`): the latest snapshot at a glance. Computed in the
/// background whenever the database moves on, so `revision` and `computed_at` say how fresh
/// it is.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// The latest snapshot with outcomes, if any.
    pub snapshot: Option<SnapshotItem>,
    /// Cells by the status of their latest row, every status code present.
    pub cells_by_status: BTreeMap<&'static str, u64>,
    pub cells: u64,
    pub outcomes: u64,
    pub infra_failures: u64,
    pub quarantined: u64,
    /// Newly failing in the latest snapshot against each cell's previous result (the first
    /// [`Overview::LISTED`]; `newly_failing_total` counts them all).
    pub newly_failing: Vec<ChangeItem>,
    pub newly_failing_total: usize,
    pub newly_fixed: Vec<ChangeItem>,
    pub newly_fixed_total: usize,
    /// The failing dependencies blocking most cells, largest first.
    pub dependency_roots: Vec<RootBrief>,
    /// The longest-running cells (latest rows).
    pub slowest: Vec<SlowCell>,
    /// How far the sweep is, when the work generator's queue is known.
    pub progress: Option<Progress>,
    /// The database's latest outcome `seq` this was computed at.
    pub revision: i64,
    /// When it was computed (UTC).
    pub computed_at: String,
}

impl Overview {
    /// How many changes, roots and slow cells the overview lists.
    pub const LISTED: usize = 50;
}

/// A dependency root in brief.
#[derive(Debug, Clone, Serialize)]
pub struct RootBrief {
    pub dependency: String,
    pub package: Option<String>,
    pub blocked: usize,
    /// One blocked cell, to link to.
    pub example_seq: i64,
}

/// A cell and how long it ran.
#[derive(Debug, Clone, Serialize)]
pub struct SlowCell {
    #[serde(flatten)]
    pub cell: CellState,
    pub duration_secs: f64,
}

/// The sweep's progress: jobs the work generator planned, and how many have an outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub planned: u64,
    pub done: u64,
}

/// A cell's page (`/api/cell/{seq}`): one stored row, its cell's history, the log excerpt
/// and, for a failure of its own, the bug report.
#[derive(Debug, Clone, Serialize)]
pub struct CellPage {
    pub outcome: Outcome,
    /// Every row of the cell, oldest first.
    pub history: Vec<Outcome>,
    /// The build log around its errors, line by line.
    pub excerpt: Vec<LogLine>,
    /// Download paths of the whole log and of `emerge --info` (when stored).
    pub log_url: String,
    pub emerge_info_url: Option<String>,
    /// The bug report, when the row is a failure of its own package.
    pub bug: Option<Bug>,
    /// Why there is no bug report, otherwise.
    pub no_bug: Option<String>,
    /// The failure's localisation, when one was run (as the bug report's).
    pub localisation: Option<Localisation>,
}

/// A line of a log excerpt.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    /// 1-based; `None` for a `[...]` gap marker.
    pub number: Option<usize>,
    pub text: String,
    /// True for the lines that look like errors.
    pub error: bool,
}

/// A package's page (`/api/package/{category}/{name}`).
#[derive(Debug, Clone, Serialize)]
pub struct PackagePage {
    pub package: String,
    pub versions: Vec<Version>,
    /// Each version's IUSE defaults (flag → on), when the repository was given to `gah serve`.
    pub defaults: BTreeMap<String, BTreeMap<String, bool>>,
}

/// The dependency view of a row (`/api/cell/{seq}/deps`): the package, what its job merged,
/// and the cells its failure blocks; the failing node marked.
#[derive(Debug, Clone, Serialize)]
pub struct DepGraph {
    pub seq: i64,
    pub cpv: String,
    pub status: Status,
    /// The dependency its log blames, for a `deps_failed` row.
    pub failed_dependency: Option<String>,
    /// What the job merged before the package itself, in merge order (the first
    /// [`DepGraph::SHOWN`]).
    pub pulled: Vec<DepNode>,
    pub pulled_total: usize,
    /// Cells whose latest row failed because this package did (the first [`DepGraph::SHOWN`]).
    pub dependents: Vec<CellState>,
    pub dependents_more: bool,
}

impl DepGraph {
    /// The most nodes each side shows: the graph is kept small.
    pub const SHOWN: usize = 12;
}

/// A package the job merged.
#[derive(Debug, Clone, Serialize)]
pub struct DepNode {
    pub cpv: String,
    /// Installed from a binary package rather than built.
    pub binary: bool,
    /// The one whose failure stopped the job.
    pub failed: bool,
}

/// A search's answer (`/api/search`): one page of cells by their latest row.
#[derive(Debug, Clone, Serialize)]
pub struct Search {
    pub page: u64,
    pub per_page: u64,
    pub cells: Vec<CellState>,
    /// True when there is a next page.
    pub more: bool,
}

/// An error answer of the JSON API.
#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    pub error: String,
}

/// A failure's localisation (`localised`, the cell page, the bug report): which failing row it
/// localises, where it stands, and its conclusion with the evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Localisation {
    /// The failing row localised.
    pub failing_seq: i64,
    pub cpv: String,
    pub repo: String,
    #[serde(rename = "use")]
    pub use_flags: String,
    pub compiler: Compiler,
    pub status: Status,
    pub snapshot_id: i64,
    /// `running` or `done`.
    pub state: &'static str,
    /// In Gentoo's form: `fails with USE="foo" (clang only)`, `flaky: …`, `inconclusive: …`;
    /// null while running.
    pub text: Option<String>,
    /// The minimal set alone (`USE="foo" (clang only)`), when localised.
    pub cause_text: Option<String>,
    /// The conclusion as stored (docs/FORMATS.md), null while running.
    pub conclusion: Option<gah_core::localisation::Conclusion>,
    /// The evidence so far (the conclusion's, once done).
    pub evidence: gah_core::localisation::Evidence,
    /// True when it is another failing cell's localisation, whose cause this cell shows.
    pub by_cause: bool,
    /// The follow-ups for people, one a line (`USE="a -b" clang: build_failed (fails)`); the
    /// web page's, not in the JSON (which has `evidence`).
    #[serde(skip)]
    pub lines: Vec<String>,
}

impl Localisation {
    /// The document of a stored localisation; `by_cause` as [`Localisation::by_cause`].
    pub fn new(l: &gah_core::db::StoredLocalisation, by_cause: bool) -> Localisation {
        Localisation {
            failing_seq: l.failing_seq,
            cpv: l.cell.cpv.clone(),
            repo: l.cell.repo.clone(),
            use_flags: l.cell.use_flags.to_package_use(),
            compiler: l.cell.compiler,
            status: l.status,
            snapshot_id: l.snapshot.0,
            state: l.state.as_str(),
            text: l.conclusion.as_ref().map(ToString::to_string),
            cause_text: l.conclusion.as_ref().and_then(|c| c.cause()).map(ToString::to_string),
            conclusion: l.conclusion.clone(),
            evidence: l.evidence.clone(),
            by_cause,
            lines: l.evidence.runs.iter().map(ToString::to_string).collect(),
        }
    }
}

/// `localised`: every localisation, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct Localisations {
    pub localisations: Vec<Localisation>,
}
