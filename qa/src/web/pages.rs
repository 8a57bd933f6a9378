//! The HTML pages: askama templates (`qa/templates/`) over the `wire` documents. askama
//! escapes every expression; text from uploads is also passed through `crate::text` where
//! escaping is not enough (see there).

use std::collections::BTreeMap;

use askama::Template;
use gah_core::job::split_cpv;
use gah_core::outcome::Status;

use super::views::SearchQuery;
use crate::wire;

/// Every status code, for the search form.
fn status_codes() -> Vec<&'static str> {
    Status::ALL.into_iter().map(Status::as_str).collect()
}

#[derive(Template)]
#[template(path = "overview.html")]
pub struct OverviewHtml<'a> {
    pub o: &'a wire::Overview,
    pub statuses: Vec<&'static str>,
}

impl<'a> OverviewHtml<'a> {
    pub fn new(o: &'a wire::Overview) -> Self {
        OverviewHtml { o, statuses: status_codes() }
    }
}

#[derive(Template)]
#[template(path = "package.html")]
pub struct PackageHtml<'a> {
    pub p: &'a wire::PackagePage,
    pub statuses: Vec<&'static str>,
}

impl<'a> PackageHtml<'a> {
    pub fn new(p: &'a wire::PackagePage) -> Self {
        PackageHtml { p, statuses: status_codes() }
    }

    /// A row's flags, each with whether it differs from the version's IUSE default (never,
    /// when the defaults are unknown).
    fn flags(&self, cpv: &str, use_flags: &str) -> Vec<(String, bool)> {
        let defaults: Option<&BTreeMap<String, bool>> = self.p.defaults.get(cpv);
        use_flags
            .split_whitespace()
            .map(|word| {
                let (flag, on) = word.strip_prefix('-').map_or((word, true), |f| (f, false));
                let differs = defaults.and_then(|d| d.get(flag)).is_some_and(|default| *default != on);
                (crate::text::visible(word), differs)
            })
            .collect()
    }
}

#[derive(Template)]
#[template(path = "cell.html")]
pub struct CellHtml<'a> {
    pub c: &'a wire::CellPage,
    pub statuses: Vec<&'static str>,
}

impl<'a> CellHtml<'a> {
    pub fn new(c: &'a wire::CellPage) -> Self {
        CellHtml { c, statuses: status_codes() }
    }

    /// `category/package` of the row.
    fn package(&self) -> String {
        split_cpv(&self.c.outcome.cpv).map_or_else(|| self.c.outcome.cpv.clone(), |(cp, _)| cp.to_owned())
    }
}

/// A node of the dependency graph, placed.
pub struct Node {
    pub y: i64,
    pub label: String,
    pub href: String,
    pub class: &'static str,
}

#[derive(Template)]
#[template(path = "deps.html")]
pub struct DepsHtml<'a> {
    pub g: &'a wire::DepGraph,
    pub statuses: Vec<&'static str>,
}

/// Vertical space per node.
const ROW: i64 = 36;

/// A label cut to fit its box.
fn fit(text: &str, max: usize) -> String {
    let shown = crate::text::visible(text);
    match shown.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &shown[..cut]),
        None => shown,
    }
}

impl<'a> DepsHtml<'a> {
    pub fn new(g: &'a wire::DepGraph) -> Self {
        DepsHtml { g, statuses: status_codes() }
    }

    fn rows(&self) -> i64 {
        i64::try_from(self.g.pulled.len().max(self.g.dependents.len()).max(1)).unwrap_or(1)
    }

    fn height(&self) -> i64 {
        self.rows() * ROW + 20
    }

    fn mid(&self) -> i64 {
        self.height() / 2
    }

    fn y(&self, i: usize, n: usize) -> i64 {
        // Each side centred on the middle.
        let (i, n) = (i64::try_from(i).unwrap_or(0), i64::try_from(n).unwrap_or(0));
        self.mid() - (n - 1) * ROW / 2 + i * ROW
    }

    fn center_label(&self) -> String {
        fit(&self.g.cpv, 26)
    }

    fn left(&self) -> Vec<Node> {
        let n = self.g.dependents.len();
        (self.g.dependents.iter().enumerate())
            .map(|(i, c)| Node {
                y: self.y(i, n),
                label: fit(&format!("{} {} [{}]", c.cpv, c.compiler, c.use_flags), 38),
                href: format!("/cell/{}", c.seq),
                class: "failed",
            })
            .collect()
    }

    fn right(&self) -> Vec<Node> {
        let n = self.g.pulled.len();
        (self.g.pulled.iter().enumerate())
            .map(|(i, p)| Node {
                y: self.y(i, n),
                label: fit(&p.cpv, 38),
                href: format!("/search?q={}", percent(&p.cpv)),
                class: if p.failed {
                    "failed"
                } else if p.binary {
                    "bin"
                } else {
                    "built"
                },
            })
            .collect()
    }
}

/// `text` percent-encoded for a query value (everything but unreserved characters).
pub fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "search.html")]
pub struct SearchHtml<'a> {
    pub q: &'a SearchQuery,
    pub result: Option<&'a wire::Search>,
    pub error: Option<String>,
    pub statuses: Vec<&'static str>,
}

impl<'a> SearchHtml<'a> {
    pub fn new(q: &'a SearchQuery, result: Option<&'a wire::Search>, error: Option<String>) -> Self {
        SearchHtml { q, result, error, statuses: status_codes() }
    }

    fn page_href(&self, page: u64) -> String {
        let q = self.q;
        format!(
            "/search?q={}&use={}&compiler={}&status={}&snapshot={}&page={page}",
            percent(&q.q),
            percent(&q.use_flags),
            percent(&q.compiler),
            percent(&q.status),
            percent(&q.snapshot)
        )
    }
}

#[derive(Template)]
#[template(path = "snapshots.html")]
pub struct SnapshotsHtml<'a> {
    pub list: &'a wire::Snapshots,
    pub statuses: Vec<&'static str>,
}

impl<'a> SnapshotsHtml<'a> {
    pub fn new(list: &'a wire::Snapshots) -> Self {
        SnapshotsHtml { list, statuses: status_codes() }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorHtml {
    pub title: String,
    pub message: String,
    pub statuses: Vec<&'static str>,
}

impl ErrorHtml {
    pub fn new(title: &str, message: &str) -> Self {
        ErrorHtml { title: title.to_owned(), message: crate::text::visible(message), statuses: status_codes() }
    }
}

#[derive(Template)]
#[template(path = "api.html")]
pub struct ApiHtml {
    pub routes: &'static [(&'static str, &'static str)],
    pub statuses: Vec<&'static str>,
}

impl ApiHtml {
    pub fn new(routes: &'static [(&'static str, &'static str)]) -> Self {
        ApiHtml { routes, statuses: status_codes() }
    }
}

/// The templates' own filter: `{{ x|v }}` is `x` made visible (`crate::text::visible`) and
/// then, as every expression, HTML-escaped by askama.
mod filters {
    pub fn v<T: std::fmt::Display>(value: T, _: &dyn askama::Values) -> askama::Result<String> {
        Ok(crate::text::visible(&value.to_string()))
    }
}
