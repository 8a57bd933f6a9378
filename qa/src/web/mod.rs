//! `gah serve`: the QA team's web page over the results database.
//!
//! It writes no row (opening the database applies pending migrations, as every opener does).
//! Every page is a `wire` document ([`views`]) rendered by an askama template
//! ([`pages`]); the same document is the page's JSON twin under `/api/`. SQLite is blocking,
//! so each request's reads run on tokio's blocking pool with a connection from a small pool.
//! The overview (counts, newly failing and fixed, dependency roots, slowest cells) ranks the
//! whole database, so it is computed in the background whenever the database's
//! [`Revision`] moves on, and served from memory: pages stay fast while an assimilator writes.
//! Responses carry a strict Content-Security-Policy (no scripts at all) and `nosniff`; stored
//! logs are served as attachments of type `text/plain`.

pub mod feed;
pub mod pages;
pub mod views;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use askama::Template;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use gah_core::db::read::Revision;
use gah_core::db::Database;

use crate::wire;
use crate::QaError;
use views::SearchQuery;

/// How `gah serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The results database (it must exist).
    pub db: PathBuf,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The URL people reach the server by, for the feeds' absolute links [default:
    /// `http://<listen>`].
    pub public_url: Option<String>,
    /// Ebuild repositories whose md5-cache gives the IUSE defaults the package page marks
    /// differing flags against.
    pub repos: Vec<PathBuf>,
    /// How often to look for new outcomes to recompute the overview.
    pub refresh: Duration,
    /// How far the sweep is, when the work generator's queue is known (asked at each
    /// recomputation of the overview).
    pub progress: Option<ProgressSource>,
}

/// Where the overview's sweep progress comes from (the work generator's queue, which this
/// crate does not read itself).
#[derive(Clone)]
pub struct ProgressSource(pub Arc<dyn Fn() -> Option<wire::Progress> + Send + Sync>);

impl std::fmt::Debug for ProgressSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSource")
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database is missing or unreadable.
    #[error(transparent)]
    Qa(#[from] QaError),
    /// The address could not be bound, or serving failed.
    #[error("serving on {addr}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Open databases, reused across requests; at most `max` in use at once.
struct Pool {
    path: PathBuf,
    free: Mutex<Vec<Database>>,
    permits: tokio::sync::Semaphore,
}

impl Pool {
    /// Runs `f` with a connection on the blocking pool.
    async fn with<T: Send + 'static>(
        self: &Arc<Pool>,
        f: impl FnOnce(&Database) -> Result<T, QaError> + Send + 'static,
    ) -> Result<T, QaError> {
        let _permit = self.permits.acquire().await.map_err(|_| QaError::Refused("the server is stopping".into()))?;
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let reused = pool.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
            let db = match reused {
                Some(db) => db,
                None => Database::open(&pool.path)?,
            };
            let out = f(&db);
            pool.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(db);
            out
        })
        .await
        .unwrap_or_else(|e| Err(QaError::Refused(format!("the request's reader failed: {e}"))))
    }
}

/// What every handler shares.
struct App {
    pool: Arc<Pool>,
    /// One request at a time that ranks the past (a search or changes as of a snapshot): each
    /// is seconds at a million rows, and the pool's readers must stay free for pages.
    heavy: tokio::sync::Semaphore,
    /// Four requests at a time that read a whole stored log (up to the archive's cap, 64 MiB).
    logs: tokio::sync::Semaphore,
    computed: RwLock<Arc<views::Computed>>,
    base: String,
    repos: Vec<PathBuf>,
}

type Shared = Arc<App>;

/// The JSON API's routes and what they answer (the `/api` page lists them).
pub const API_ROUTES: &[(&str, &str)] = &[
    ("/api/overview", "the overview: cells by status, newly failing and fixed, dependency roots, slowest cells"),
    ("/api/package/{category}/{name}", "a package's matrices (one per version) and IUSE defaults"),
    ("/api/cell/{seq}", "one stored outcome: its cell's history, the log excerpt, the bug report"),
    ("/api/cell/{seq}/bug", "the bug report alone (as `gah results bug --json`)"),
    ("/api/cell/{seq}/deps", "the dependency view: what the job merged, which cells its failure blocks"),
    ("/api/search?q=&use=&compiler=&status=&snapshot=&page=", "cells by their latest outcome, 50 a page"),
    ("/api/changes?snapshot=&against=", "newly failing and fixed cells of a snapshot (as `gah results changes --json`)"),
    ("/api/fails", "failures by package (as `gah results fails --json`)"),
    ("/api/blame", "dependency failures by dependency (as `gah results blame --json`)"),
    ("/api/snapshots", "the tree snapshots"),
    ("/feed.atom, /package/{category}/{name}/feed.atom", "Atom feeds of newly failing cells"),
];

/// Serves until interrupted (SIGINT or SIGTERM). `ready` is told the bound address once the
/// server accepts connections (port 0 picks a free one).
pub fn run(options: ServeOptions, ready: impl FnOnce(SocketAddr) + Send) -> Result<(), ServeError> {
    if !options.db.exists() {
        return Err(QaError::NotFound(format!(
            "no results database at {} (run `gah run` first, or give --db or GAH_RESULTS_DB)",
            options.db.display()
        ))
        .into());
    }
    let io = |source| ServeError::Io { addr: options.listen, source };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(16).build().map_err(io)?;
    runtime.block_on(serve(options, ready))
}

async fn serve(options: ServeOptions, ready: impl FnOnce(SocketAddr) + Send) -> Result<(), ServeError> {
    let io = |source| ServeError::Io { addr: options.listen, source };
    let pool = Arc::new(Pool { path: options.db.clone(), free: Mutex::new(Vec::new()), permits: tokio::sync::Semaphore::new(8) });
    let progress = options.progress.clone();
    let asked = progress.clone();
    let first = pool.with(move |db| Ok((db.revision()?, views::overview(db, db.revision()?, asked.and_then(|p| (p.0)()))?))).await?;
    let listener = tokio::net::TcpListener::bind(options.listen).await.map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let base = options.public_url.clone().unwrap_or_else(|| format!("http://{addr}")).trim_end_matches('/').to_owned();
    let mut computed = first.1;
    computed.tree_feed = tree_feed(&computed, &base);
    let app = Arc::new(App {
        pool,
        heavy: tokio::sync::Semaphore::new(1),
        logs: tokio::sync::Semaphore::new(4),
        computed: RwLock::new(Arc::new(computed)),
        base,
        repos: options.repos.clone(),
    });
    tokio::spawn(refresh(Arc::clone(&app), first.0, options.refresh, progress));
    tracing::info!(%addr, db = %options.db.display(), "serving");
    ready(addr);
    axum::serve(listener, router(app)).with_graceful_shutdown(stopped()).await.map_err(io)
}

/// Resolves on SIGINT or SIGTERM.
async fn stopped() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
    tracing::info!("stopping");
}

/// Recomputes the overview whenever the database's revision moves on.
async fn refresh(app: Shared, mut seen: Revision, every: Duration, progress: Option<ProgressSource>) {
    let mut took = Duration::ZERO;
    loop {
        // At a million rows a recomputation takes seconds: under a steady stream of writes,
        // spend at most a third of the time on it, so requests keep the cores.
        tokio::time::sleep(every.max(took * 2)).await;
        let now = match app.pool.with(|db| Ok(db.revision()?)).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "reading the database's revision");
                continue;
            }
        };
        if now == seen {
            continue;
        }
        let asked = progress.clone();
        let started = std::time::Instant::now();
        let computed = app.pool.with(move |db| views::overview(db, now, asked.and_then(|p| (p.0)()))).await;
        took = started.elapsed();
        match computed {
            Ok(mut o) => {
                tracing::debug!(revision = now.outcomes, seconds = took.as_secs_f64(), "overview recomputed");
                o.tree_feed = tree_feed(&o, &app.base);
                *app.computed.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(o);
                seen = now;
                release_free_memory();
            }
            Err(e) => tracing::warn!(error = %e, "recomputing the overview"),
        }
    }
}

/// Hands the memory a recomputation freed back to the system. A recomputation builds tens of
/// megabytes at a million rows and frees them; glibc keeps freed memory in the arena of the
/// thread that used it, and the blocking pool's threads each have one, so without this the
/// server's footprint grows by a recomputation's worth per thread.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers; it only returns free heap memory to the system
    // and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(overview_page))
        .route("/package/{category}/{name}", get(package_page))
        .route("/package/{category}/{name}/feed.atom", get(package_feed))
        .route("/cell/{seq}", get(cell_page))
        .route("/cell/{seq}/deps", get(deps_page))
        .route("/cell/{seq}/{file}", get(download))
        .route("/search", get(search_page))
        .route("/snapshots", get(snapshots_page))
        .route("/feed.atom", get(tree_feed_page))
        .route("/api", get(api_page))
        .route("/api/overview", get(overview_json))
        .route("/api/package/{category}/{name}", get(package_json))
        .route("/api/cell/{seq}", get(cell_json))
        .route("/api/cell/{seq}/bug", get(bug_json))
        .route("/api/cell/{seq}/deps", get(deps_json))
        .route("/api/search", get(search_json))
        .route("/api/changes", get(changes_json))
        .route("/api/fails", get(fails_json))
        .route("/api/blame", get(blame_json))
        .route("/api/snapshots", get(snapshots_json))
        .route("/static/style.css", get(stylesheet))
        // Browsers ask for it on every site; there is none, and saying so is not an error.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .fallback(not_found)
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(app)
}

/// Headers on every answer: no scripts, no framing, no content sniffing.
async fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// An error as an HTML page (`json: false`) or a JSON `{"error": …}`, with its HTTP status.
fn error_response(e: &QaError, json: bool) -> Response {
    let (status, title) = match e {
        QaError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
        QaError::Refused(_) => (StatusCode::BAD_REQUEST, "Cannot answer that"),
        QaError::Db(_) => (StatusCode::INTERNAL_SERVER_ERROR, "The results database failed"),
    };
    let message = gah_util::error_chain(e);
    if matches!(e, QaError::Db(_)) {
        tracing::warn!(error = %message, "answering a request");
    }
    if json {
        (status, Json(wire::ApiError { error: message })).into_response()
    } else {
        (status, render(&pages::ErrorHtml::new(title, &message))).into_response()
    }
}

fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("template: {e}")).into_response(),
    }
}

fn json_or_error<T: serde::Serialize>(r: Result<T, QaError>) -> Response {
    match r {
        Ok(doc) => Json(doc).into_response(),
        Err(e) => error_response(&e, true),
    }
}

async fn not_found() -> Response {
    error_response(&QaError::NotFound("no such page".into()), false)
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("../../static/style.css")).into_response()
}

fn current(app: &App) -> Arc<views::Computed> {
    Arc::clone(&app.computed.read().unwrap_or_else(std::sync::PoisonError::into_inner))
}

async fn overview_page(State(app): State<Shared>) -> Response {
    render(&pages::OverviewHtml::new(&current(&app).overview))
}

/// A JSON body computed in the background.
fn cached_json(body: &axum::body::Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response()
}

async fn overview_json(State(app): State<Shared>) -> Response {
    cached_json(&current(&app).overview_json)
}

/// The IUSE defaults of `cpv` from the first repository whose md5-cache has it.
fn iuse_defaults(repos: &[PathBuf], cpv: &str) -> Option<BTreeMap<String, bool>> {
    // The cpv comes from an upload: it becomes a path only when it is one plain
    // `category/package-version`.
    repos.iter().find_map(|repo| {
        let path = gah_ebuild::md5cache::entry_path(repo, cpv)?;
        let mut diags = Vec::new();
        let ebuild = gah_ebuild::md5cache::read_entry(&path, cpv, &mut diags)?;
        Some(ebuild.iuse.iter().map(|f| (f.name.clone(), f.default_on())).collect())
    })
}

async fn package_doc(app: &Shared, category: String, name: String) -> Result<wire::PackagePage, QaError> {
    let repos = app.repos.clone();
    app.pool.with(move |db| views::package(db, &format!("{category}/{name}"), &|cpv| iuse_defaults(&repos, cpv))).await
}

async fn package_page(State(app): State<Shared>, UrlPath((category, name)): UrlPath<(String, String)>) -> Response {
    match package_doc(&app, category, name).await {
        Ok(p) => render(&pages::PackageHtml::new(&p)),
        Err(e) => error_response(&e, false),
    }
}

async fn package_json(State(app): State<Shared>, UrlPath((category, name)): UrlPath<(String, String)>) -> Response {
    json_or_error(package_doc(&app, category, name).await)
}

async fn cell_page(State(app): State<Shared>, UrlPath(seq): UrlPath<i64>) -> Response {
    let _reading_a_log = app.logs.acquire().await;
    match app.pool.with(move |db| views::cell(db, seq)).await {
        Ok(c) => render(&pages::CellHtml::new(&c)),
        Err(e) => error_response(&e, false),
    }
}

async fn cell_json(State(app): State<Shared>, UrlPath(seq): UrlPath<i64>) -> Response {
    let _reading_a_log = app.logs.acquire().await;
    json_or_error(app.pool.with(move |db| views::cell(db, seq)).await)
}

async fn bug_json(State(app): State<Shared>, UrlPath(seq): UrlPath<i64>) -> Response {
    let _reading_a_log = app.logs.acquire().await;
    json_or_error(app.pool.with(move |db| views::bug(db, seq)).await)
}

async fn deps_page(State(app): State<Shared>, UrlPath(seq): UrlPath<i64>) -> Response {
    match app.pool.with(move |db| views::deps(db, seq)).await {
        Ok(g) => render(&pages::DepsHtml::new(&g)),
        Err(e) => error_response(&e, false),
    }
}

async fn deps_json(State(app): State<Shared>, UrlPath(seq): UrlPath<i64>) -> Response {
    json_or_error(app.pool.with(move |db| views::deps(db, seq)).await)
}

async fn download(State(app): State<Shared>, UrlPath((seq, file)): UrlPath<(i64, String)>) -> Response {
    let _reading_a_log = app.logs.acquire().await;
    let name = file.clone();
    match app.pool.with(move |db| views::download(db, seq, &name)).await {
        Ok(bytes) => {
            // A stored log is untrusted bytes: never rendered, always a plain-text attachment.
            let disposition = format!("attachment; filename=\"{seq}-{file}\"");
            (
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8")),
                    (header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).unwrap_or(HeaderValue::from_static("attachment"))),
                ],
                bytes,
            )
                .into_response()
        }
        Err(e) => error_response(&e, false),
    }
}

async fn search_page(State(app): State<Shared>, Query(q): Query<SearchQuery>) -> Response {
    let _heavy = if q.is_heavy() { Some(app.heavy.acquire().await) } else { None };
    let asked = q.clone();
    match app.pool.with(move |db| views::search(db, &asked)).await {
        Ok(r) => render(&pages::SearchHtml::new(&q, Some(&r), None)),
        Err(e @ QaError::Refused(_)) => {
            let page = render(&pages::SearchHtml::new(&q, None, Some(e.to_string())));
            (StatusCode::BAD_REQUEST, page).into_response()
        }
        Err(e) => error_response(&e, false),
    }
}

async fn search_json(State(app): State<Shared>, Query(q): Query<SearchQuery>) -> Response {
    let _heavy = if q.is_heavy() { Some(app.heavy.acquire().await) } else { None };
    json_or_error(app.pool.with(move |db| views::search(db, &q)).await)
}

/// `?snapshot=&against=` of `/api/changes`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct ChangesQuery {
    snapshot: String,
    against: String,
}

async fn changes_json(State(app): State<Shared>, Query(q): Query<ChangesQuery>) -> Response {
    if q.snapshot.is_empty() && q.against.is_empty() {
        // The latest snapshot's changes: the background's.
        let c = current(&app);
        if c.overview.snapshot.is_none() {
            return error_response(&QaError::NotFound("the database has no outcomes".into()), true);
        }
        return cached_json(&c.changes_json);
    }
    let _heavy = app.heavy.acquire().await;
    json_or_error(
        app.pool
            .with(move |db| {
                let named = |s: &str| -> Result<Option<gah_core::db::SnapshotId>, QaError> {
                    if s.is_empty() {
                        return Ok(None);
                    }
                    let found = db.find_snapshot(s)?.ok_or_else(|| QaError::NotFound(format!("no snapshot `{s}`")))?;
                    Ok(Some(found.id))
                };
                let target = match named(&q.snapshot)? {
                    Some(id) => id,
                    None => db.latest_snapshot()?.ok_or_else(|| QaError::NotFound("the database has no outcomes".into()))?,
                };
                Ok(wire::Changes::from(&db.changes(target, named(&q.against)?)?))
            })
            .await,
    )
}

/// `?page=` of the long lists.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct PageQuery {
    page: u64,
}

async fn fails_json(State(app): State<Shared>, Query(q): Query<PageQuery>) -> Response {
    let c = current(&app);
    match views::page_of(&c.fails_pages, q.page) {
        Some(page) => cached_json(page),
        None => {
            let mut doc = c.fails_past_end.clone();
            doc.paging = doc.paging.map(|p| wire::Paging { page: q.page, ..p });
            Json(doc).into_response()
        }
    }
}

async fn blame_json(State(app): State<Shared>, Query(q): Query<PageQuery>) -> Response {
    let c = current(&app);
    match views::page_of(&c.blame_pages, q.page) {
        Some(page) => cached_json(page),
        None => {
            let mut doc = c.blame_past_end.clone();
            doc.paging = doc.paging.map(|p| wire::Paging { page: q.page, ..p });
            Json(doc).into_response()
        }
    }
}

async fn snapshots_page(State(app): State<Shared>) -> Response {
    render(&pages::SnapshotsHtml::new(&current(&app).snapshots))
}

async fn snapshots_json(State(app): State<Shared>) -> Response {
    cached_json(&current(&app).snapshots_json)
}

async fn api_page() -> Response {
    render(&pages::ApiHtml::new(API_ROUTES))
}

fn atom(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/atom+xml; charset=utf-8")], body).into_response()
}

/// The whole tree's feed: the newest [`feed::ENTRIES`] newly failing cells.
fn tree_feed(c: &views::Computed, base: &str) -> axum::body::Bytes {
    let newest = &c.newly_failing[..c.newly_failing.len().min(feed::ENTRIES)];
    feed::newly_failing(newest, "gentoo@home: newly failing cells", base, "/feed.atom", &c.overview.computed_at).into()
}

async fn tree_feed_page(State(app): State<Shared>) -> Response {
    ([(header::CONTENT_TYPE, "application/atom+xml; charset=utf-8")], current(&app).tree_feed.clone()).into_response()
}

async fn package_feed(State(app): State<Shared>, UrlPath((category, name)): UrlPath<(String, String)>) -> Response {
    if !gah_ebuild::md5cache::is_plain_name(&category) || !gah_ebuild::md5cache::is_plain_name(&name) {
        return not_found().await;
    }
    let c = current(&app);
    let package = format!("{category}/{name}");
    let mine: Vec<wire::ChangeItem> = c
        .newly_failing
        .iter()
        .filter(|c| gah_core::job::split_cpv(&c.cpv).is_some_and(|(cp, _)| cp == package))
        .take(feed::ENTRIES)
        .cloned()
        .collect();
    let path = format!("/package/{package}/feed.atom");
    atom(feed::newly_failing(&mine, &format!("gentoo@home: newly failing cells of {package}"), &app.base, &path, &c.overview.computed_at))
}
