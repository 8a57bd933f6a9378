//! What each page shows, computed from the database: the `wire` documents the JSON API
//! returns and the templates render. Blocking (SQLite): the server runs these on its blocking
//! pool.

use std::collections::BTreeMap;

use axum::body::Bytes;
use gah_core::db::read::Revision;
use gah_core::db::{Database, Filter, Order, Page, StoredOutcome};
use gah_core::job::{Compiler, UseAssignment};
use gah_core::outcome::Status;

use crate::wire::{self, Overview};
use crate::QaError;

/// What the server computes in the background and serves from memory: the reports that rank
/// the whole database (seconds at a million rows), as the overview page's document and as the
/// JSON bodies of the API calls that return them whole, serialised once.
#[derive(Debug)]
pub struct Computed {
    pub overview: Overview,
    /// Every newly failing cell of the latest snapshot, newest first (the feeds').
    pub newly_failing: Vec<wire::ChangeItem>,
    /// `/feed.atom`, once the server has made it (it knows its public URL).
    pub tree_feed: Bytes,
    /// `/api/overview`, `/api/changes` (latest snapshot, against the previous result); the
    /// whole `fails` and `blame` documents, which the API serves a page at a time.
    pub overview_json: Bytes,
    pub changes_json: Bytes,
    /// `/api/fails?page=N` and `/api/blame?page=N`, each page serialised (index N - 1).
    pub fails_pages: Vec<Bytes>,
    pub blame_pages: Vec<Bytes>,
    /// A page past the end of each (the list's total, no items).
    pub fails_past_end: wire::Fails,
    pub blame_past_end: wire::Blame,
    /// The snapshots with their row counts (counting is a scan of every row).
    pub snapshots: wire::Snapshots,
    pub snapshots_json: Bytes,
}

fn to_json(doc: &impl serde::Serialize) -> Bytes {
    // Plain data (strings, numbers, maps with string keys): serialising cannot fail.
    Bytes::from(serde_json::to_vec(doc).unwrap_or_default())
}

/// Every page of `items` (at least one, maybe empty), each made a document by `doc` and
/// serialised.
fn pages<T: Clone, D: serde::Serialize>(items: &[T], doc: impl Fn(Vec<T>, wire::Paging) -> D) -> Vec<Bytes> {
    let count = items.len().div_ceil(wire::Paging::PER_PAGE).max(1);
    (1..=count as u64)
        .map(|page| {
            let (part, paging) = wire::Paging::slice(items, page);
            to_json(&doc(part, paging))
        })
        .collect()
}

/// The page of a serialised list that `page` (1-based) asks for; `None` past the end.
pub fn page_of(pages: &[Bytes], page: u64) -> Option<&Bytes> {
    usize::try_from(page.max(1) - 1).ok().and_then(|i| pages.get(i))
}

/// The overview of the latest snapshot at `revision`, with the whole-database reports.
pub fn overview(db: &Database, revision: Revision, progress: Option<wire::Progress>) -> Result<Computed, QaError> {
    let totals = db.totals()?;
    let counts = db.status_counts(&Filter::default())?;
    let latest = db.latest_snapshot()?;
    let summaries = db.snapshot_summaries()?;
    let snapshot = latest.and_then(|id| summaries.iter().find(|s| s.snapshot.id == id)).map(wire::SnapshotItem::from);
    let changes = match latest {
        Some(id) => Some(wire::Changes::from(&db.changes(id, None)?)),
        None => None,
    };
    let (mut newly_failing, mut newly_fixed) =
        changes.as_ref().map_or((Vec::new(), Vec::new()), |c| (c.newly_failing.clone(), c.newly_fixed.clone()));
    let roots = db.dependency_roots(&Filter::default())?;
    let blame = wire::Blame {
        dependencies: roots.iter().map(wire::Blamed::from).collect(),
        own_failures: counts.sum(Status::is_own_failure),
        paging: None,
    };
    let fails = wire::Fails::read(db)?;
    let slowest = db.latest(&Filter::default(), Page::first(Overview::LISTED as u64, Order::Slowest))?;
    let (newly_failing_total, newly_fixed_total) = (newly_failing.len(), newly_fixed.len());
    let all_newly_failing = newly_failing.clone();
    newly_failing.truncate(Overview::LISTED);
    newly_fixed.truncate(Overview::LISTED);
    let overview = Overview {
        snapshot,
        cells_by_status: wire::counts(&counts),
        cells: totals.cells,
        outcomes: totals.outcomes,
        infra_failures: totals.infra_failures,
        quarantined: totals.quarantined,
        newly_failing,
        newly_failing_total,
        newly_fixed,
        newly_fixed_total,
        dependency_roots: (blame.dependencies.iter().zip(&roots))
            .take(Overview::LISTED)
            .map(|(b, d)| wire::RootBrief {
                dependency: b.dependency.clone(),
                package: b.package.clone(),
                blocked: d.blocked.len(),
                example_seq: d.blocked.first().map_or(0, |r| r.seq),
            })
            .collect(),
        slowest: slowest.iter().map(|r| wire::SlowCell { cell: wire::CellState::from(r), duration_secs: r.duration_secs }).collect(),
        progress,
        revision: revision.outcomes,
        computed_at: now_utc(),
    };
    let changes_json = match &changes {
        Some(c) => to_json(c),
        None => to_json(&wire::ApiError { error: "the database has no outcomes".into() }),
    };
    // The API's pages list the first cells of each item (with the total beside them).
    let capped_fails: Vec<wire::PackageFails> = fails
        .packages
        .iter()
        .map(|p| wire::PackageFails {
            failing_cells: p.failing_cells.iter().take(wire::Paging::ITEM_CELLS).cloned().collect(),
            ..p.clone()
        })
        .collect();
    let capped_blame: Vec<wire::Blamed> = blame
        .dependencies
        .iter()
        .map(|d| wire::Blamed { blocked: d.blocked.iter().take(wire::Paging::ITEM_CELLS).cloned().collect(), ..d.clone() })
        .collect();
    let snapshots = wire::Snapshots { snapshots: summaries.iter().map(wire::SnapshotItem::from).collect() };
    Ok(Computed {
        snapshots_json: to_json(&snapshots),
        snapshots,
        overview_json: to_json(&overview),
        changes_json,
        fails_past_end: wire::Fails {
            packages: Vec::new(),
            paging: Some(wire::Paging::past_end(fails.packages.len())),
            infra_failures: fails.infra_failures,
            quarantined: fails.quarantined,
        },
        blame_past_end: wire::Blame {
            dependencies: Vec::new(),
            paging: Some(wire::Paging::past_end(blame.dependencies.len())),
            own_failures: blame.own_failures,
        },
        fails_pages: pages(&capped_fails, |packages, paging| wire::Fails {
            packages,
            paging: Some(paging),
            infra_failures: fails.infra_failures,
            quarantined: fails.quarantined,
        }),
        blame_pages: pages(&capped_blame, |dependencies, paging| wire::Blame {
            dependencies,
            paging: Some(paging),
            own_failures: blame.own_failures,
        }),
        overview,
        newly_failing: {
            let mut newest = all_newly_failing;
            newest.sort_by_key(|c| std::cmp::Reverse(c.seq));
            newest
        },
        tree_feed: Bytes::new(),
    })
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
fn now_utc() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil: the calendar date of a day count since 1970-01-01.
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The row `seq`, or a not-found naming it.
fn row(db: &Database, seq: i64) -> Result<StoredOutcome, QaError> {
    db.outcome(seq)?.ok_or_else(|| QaError::NotFound(format!("no stored outcome #{seq}")))
}

/// The page of row `seq`.
pub fn cell(db: &Database, seq: i64) -> Result<wire::CellPage, QaError> {
    let r = row(db, seq)?;
    let history = db.cell_history(&r.cell)?;
    let log = db.read_blob(r.log.sha256())?;
    let log_text = String::from_utf8_lossy(&log);
    let excerpt: Vec<wire::LogLine> = gah_core::buildlog::excerpt_lines(&log_text)
        .into_iter()
        .map(|l| wire::LogLine {
            number: l.number,
            error: l.number.is_some() && gah_core::buildlog::is_error_line(&l.text),
            text: crate::text::visible_lines(&l.text),
        })
        .collect();
    drop(log_text);
    let (bug, no_bug) = if crate::bug::is_reportable(r.status) {
        (Some(bug_of(db, &r, log)?), None)
    } else {
        let why = match r.status {
            Status::DepsFailed => format!("a dependency failed ({}): file the bug against it", db.failed_dependency(&r)),
            s => format!("nothing to report: the outcome is {s}"),
        };
        (None, Some(why))
    };
    // The bug's (its cell's own, or the one whose cause it shows), else the cell's own: a
    // flaky failure's passing rerun is a later row of the same cell.
    let localisation = match bug.as_ref().and_then(|b| b.localisation.clone()) {
        Some(l) => Some(l),
        None => db.cell_localisation(&r.cell)?.map(|l| wire::Localisation::new(&l, false)),
    };
    Ok(wire::CellPage {
        localisation,
        log_url: format!("/cell/{seq}/build.log"),
        emerge_info_url: r.emerge_info.as_ref().map(|_| format!("/cell/{seq}/emerge-info.txt")),
        outcome: wire::Outcome::from(&r),
        history: history.iter().map(wire::Outcome::from).collect(),
        excerpt,
        bug,
        no_bug,
    })
}

/// A stored file of row `seq`: `build.log` or `emerge-info.txt`.
pub fn download(db: &Database, seq: i64, name: &str) -> Result<Vec<u8>, QaError> {
    let r = row(db, seq)?;
    let blob = match name {
        "build.log" => Some(r.log),
        "emerge-info.txt" => r.emerge_info,
        _ => None,
    };
    let blob = blob.ok_or_else(|| QaError::NotFound(format!("outcome #{seq} has no {name}")))?;
    Ok(db.read_blob(blob.sha256())?)
}

/// The bug report of row `seq`.
pub fn bug(db: &Database, seq: i64) -> Result<wire::Bug, QaError> {
    let r = row(db, seq)?;
    crate::bug::refuse_unreportable(db, &r)?;
    let log = db.read_blob(r.log.sha256())?;
    bug_of(db, &r, log)
}

/// The bug report of `r`, whose log is `log`, naming the package's other failing cells.
fn bug_of(db: &Database, r: &StoredOutcome, log: Vec<u8>) -> Result<wire::Bug, QaError> {
    let latest = db.latest(&Filter { cpv: Some(r.cell.cpv.clone()), repo: Some(r.cell.repo.clone()), ..Filter::default() }, Page::ALL)?;
    let also: Vec<&StoredOutcome> = latest.iter().filter(|o| o.cell != r.cell && crate::bug::is_reportable(o.status)).collect();
    Ok(crate::bug::report_with_log(db, r, &also, log)?.doc)
}

/// A package's page: `category/name`, every version.
pub fn package(
    db: &Database,
    package: &str,
    defaults: &dyn Fn(&str) -> Option<BTreeMap<String, bool>>,
) -> Result<wire::PackagePage, QaError> {
    let versions = db.matrix(package)?;
    if versions.is_empty() {
        return Err(QaError::NotFound(format!("no outcomes for {package}")));
    }
    let versions: Vec<wire::Version> = versions.iter().map(wire::Version::from).collect();
    let defaults = versions.iter().filter_map(|v| Some((v.cpv.clone(), defaults(&v.cpv)?))).collect();
    Ok(wire::PackagePage { package: package.to_owned(), versions, defaults })
}

/// The dependency view of row `seq`.
pub fn deps(db: &Database, seq: i64) -> Result<wire::DepGraph, QaError> {
    let r = row(db, seq)?;
    let failed = (r.status == Status::DepsFailed).then(|| db.failed_dependency(&r));
    let failed_cpv = match &failed {
        Some(gah_core::buildlog::FailedDependency::Package { cpv, .. }) => Some(cpv.clone()),
        _ => None,
    };
    let merged = db.merged_packages(seq)?.unwrap_or_default();
    let mut pulled: Vec<wire::DepNode> = merged
        .iter()
        .filter(|p| p.cpv != r.cell.cpv)
        .map(|p| wire::DepNode { cpv: p.cpv.clone(), binary: p.binary, failed: failed_cpv.as_deref() == Some(&p.cpv) })
        .collect();
    if let Some(cpv) = &failed_cpv {
        if !pulled.iter().any(|p| &p.cpv == cpv) {
            // It failed before it was merged, so the outcome's list lacks it: show it anyway.
            pulled.push(wire::DepNode { cpv: cpv.clone(), binary: false, failed: true });
        }
    }
    // The failing node first, so the cut below never hides it.
    pulled.sort_by_key(|p| !p.failed);
    let pulled_total = pulled.len();
    pulled.truncate(wire::DepGraph::SHOWN);
    let mut dependents = db.dependents(&r.cell.cpv, Page::first(wire::DepGraph::SHOWN as u64 + 1, Order::Cell))?;
    let dependents_more = dependents.len() > wire::DepGraph::SHOWN;
    dependents.truncate(wire::DepGraph::SHOWN);
    Ok(wire::DepGraph {
        seq,
        cpv: r.cell.cpv.clone(),
        status: r.status,
        failed_dependency: failed.map(|f| f.to_string()),
        pulled,
        pulled_total,
        dependents: dependents.iter().map(wire::CellState::from).collect(),
        dependents_more,
    })
}

/// What a search asks for: every field narrows; empty fields are ignored.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct SearchQuery {
    /// Text in `category/package-version`.
    pub q: String,
    /// Flag values in `package.use` notation (`ssl -static`).
    #[serde(rename = "use")]
    pub use_flags: String,
    pub compiler: String,
    pub status: String,
    /// A snapshot label or id: the cells as they were in it.
    pub snapshot: String,
    /// 1-based.
    pub page: Option<u64>,
}

impl SearchQuery {
    /// The most flag values a search may name.
    pub const MAX_FLAGS: usize = 32;

    /// True when it reads the past (`snapshot`): a ranking of every row up to it, not an
    /// index read; the server runs one such search at a time.
    pub fn is_heavy(&self) -> bool {
        !self.snapshot.is_empty()
    }

    /// The database filter it means; the error names the field that makes no sense.
    pub fn filter(&self, db: &Database) -> Result<Filter, QaError> {
        let bad = |field: &str, why: String| QaError::Refused(format!("{field}: {why}"));
        let mut f = Filter::default();
        if !self.q.trim().is_empty() {
            f.text = Some(self.q.trim().to_owned());
        }
        f.use_flags = UseAssignment::from_package_use(self.use_flags.trim()).map_err(|e| bad("use", e))?;
        if f.use_flags.0.len() > SearchQuery::MAX_FLAGS {
            // Each flag is a LIKE over every cell.
            return Err(bad("use", format!("at most {} flags", SearchQuery::MAX_FLAGS)));
        }
        if !self.compiler.is_empty() {
            f.compiler = Some(self.compiler.parse::<Compiler>().map_err(|e| bad("compiler", e.to_string()))?);
        }
        if !self.status.is_empty() {
            f.statuses = vec![self.status.parse::<Status>().map_err(|e| bad("status", e.to_string()))?];
        }
        if !self.snapshot.is_empty() {
            let s = db.find_snapshot(&self.snapshot)?.ok_or_else(|| bad("snapshot", format!("no snapshot `{}`", self.snapshot)))?;
            f.up_to = Some(s.id);
        }
        Ok(f)
    }
}

/// Cells a search finds, a page at a time.
pub fn search(db: &Database, query: &SearchQuery) -> Result<wire::Search, QaError> {
    const PER_PAGE: usize = 50;
    const MAX_PAGE: u64 = 1000;
    let filter = query.filter(db)?;
    let page = query.page.unwrap_or(1).max(1);
    if page > MAX_PAGE {
        // Deep offsets make SQLite step over every row before them.
        return Err(QaError::Refused(format!("page: at most {MAX_PAGE}; narrow the search instead")));
    }
    let offset = (page - 1) * PER_PAGE as u64;
    let mut rows = db.latest(&filter, Page { offset, limit: Some(PER_PAGE as u64 + 1), order: Order::Cell })?;
    let more = rows.len() > PER_PAGE;
    rows.truncate(PER_PAGE);
    Ok(wire::Search { page, per_page: PER_PAGE as u64, cells: rows.iter().map(wire::CellState::from).collect(), more })
}
