//! `gah serve` over a database with ordinary and hostile outcomes: every page and API call
//! answers, and everything a volunteer's upload controls is rendered as inert text.
//!
//! The server runs in-process on a free loopback port; requests go over real HTTP (reqwest).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use gah_core::db::{Database, NewOutcome};
use gah_core::job::{Compiler, Job, UseAssignment};
use gah_core::outcome::{Outcome, PackageVersion, Status};

/// The hostile text the test plants in every field it can: markup, both quotes, NUL, a
/// right-to-left override.
const EVIL: &str = "<script>alert(1)</script>\"'\u{0}\u{202e}";

fn flags(words: &[(&str, bool)]) -> UseAssignment {
    UseAssignment(words.iter().map(|(f, on)| (f.to_string(), *on)).collect())
}

struct Row<'a> {
    label: &'a str,
    cpv: &'a str,
    use_flags: UseAssignment,
    compiler: Compiler,
    status: Status,
    summary: String,
    log: String,
    tests: Vec<String>,
    packages: Vec<PackageVersion>,
}

fn put(db: &mut Database, r: Row<'_>) {
    let snapshot = db.snapshot(r.label).unwrap();
    let job = Job::new("gah", r.cpv, r.use_flags, r.compiler, 60);
    let mut o = Outcome::for_job(&job, r.status);
    o.failed_phase = match r.status {
        Status::BuildFailed => Some("compile".into()),
        Status::TestFailed => Some("test".into()),
        Status::DepsFailed => Some("deps".into()),
        _ => None,
    };
    o.failing_tests = r.tests;
    o.summary = r.summary;
    o.packages = r.packages;
    o.duration_secs = 42.0;
    let wu = format!("{}_{}", job.job_id, r.label.len());
    let new = NewOutcome { wu_name: &wu, snapshot, outcome: &o, log: r.log.as_bytes(), emerge_info: Some(b"Portage 3.0.66\n") };
    db.record(&new).unwrap();
}

/// A tree in two snapshots: app-arch/bzip2 breaks with clang in s2 (a build failure with a
/// 1 MB log line and hostile text), dev-libs/t test-fails, app-misc/dep is blocked by
/// dev-libs/foo, and a package whose name, flags, summary and log are hostile.
fn database(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("results.sqlite");
    let mut db = Database::open(&path).unwrap();
    let mb_line = "y".repeat(1 << 20);
    let bad = format!("cc -c a.c\n{mb_line}\nb.c:1:2: error: {EVIL}\n * ERROR: app-arch/bzip2-1.0.8::gah failed (compile phase):\n");
    for (label, clang) in [("git:s1", Status::Success), ("git:s2", Status::BuildFailed)] {
        let base = |compiler, status, log: &str| Row {
            label,
            cpv: "app-arch/bzip2-1.0.8",
            use_flags: flags(&[("static-libs", true), ("jemalloc", false)]),
            compiler,
            status,
            summary: format!("{status} {EVIL}"),
            log: log.to_owned(),
            tests: Vec::new(),
            packages: vec![
                PackageVersion { cpv: "dev-libs/jemalloc-5.3.0".into(), binary: true },
                PackageVersion { cpv: "app-arch/bzip2-1.0.8".into(), binary: false },
            ],
        };
        put(&mut db, base(Compiler::Gcc, Status::Success, "ok"));
        put(&mut db, base(Compiler::Clang, clang, if clang == Status::Success { "ok" } else { &bad }));
    }
    put(
        &mut db,
        Row {
            label: "git:s2",
            cpv: "dev-libs/t-2",
            use_flags: flags(&[("test", true)]),
            compiler: Compiler::Gcc,
            status: Status::TestFailed,
            summary: "tests failed".into(),
            log: "FAIL: t_one\n".into(),
            tests: vec![format!("t_one {EVIL}")],
            packages: Vec::new(),
        },
    );
    put(
        &mut db,
        Row {
            label: "git:s2",
            cpv: "app-misc/dep-1",
            use_flags: UseAssignment::default(),
            compiler: Compiler::Gcc,
            status: Status::DepsFailed,
            summary: "a dependency failed".into(),
            log: " * ERROR: dev-libs/foo-1.2::gentoo failed (configure phase):\n".into(),
            tests: Vec::new(),
            packages: Vec::new(),
        },
    );
    put(
        &mut db,
        Row {
            label: "git:s2",
            cpv: "x11-misc/evil-1",
            use_flags: flags(&[(EVIL, true)]),
            compiler: Compiler::Clang,
            status: Status::BuildFailed,
            summary: EVIL.into(),
            log: format!("{EVIL}\nerror: {EVIL}\n"),
            tests: Vec::new(),
            packages: vec![PackageVersion { cpv: format!("dev-libs/{EVIL}-1"), binary: false }],
        },
    );
    path
}

fn start(db: &Path) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    let options = gah_qa::web::ServeOptions {
        db: db.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: None,
        repos: Vec::new(),
        refresh: Duration::from_millis(200),
        progress: Some(gah_qa::web::ProgressSource(std::sync::Arc::new(|| Some(gah_qa::wire::Progress { planned: 40, done: 7 })))),
    };
    std::thread::spawn(move || gah_qa::web::run(options, move |addr| tx.send(addr).unwrap()).unwrap());
    rx.recv_timeout(Duration::from_secs(30)).expect("the server starts")
}

struct Got {
    status: u16,
    content_type: String,
    headers: reqwest::header::HeaderMap,
    body: String,
}

fn get(addr: SocketAddr, path: &str) -> Got {
    let r = reqwest::blocking::get(format!("http://{addr}{path}")).unwrap();
    let headers = r.headers().clone();
    let content_type = headers.get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    Got { status: r.status().as_u16(), content_type, headers, body: r.text().unwrap() }
}

fn seq_of(addr: SocketAddr, cpv: &str, compiler: &str) -> i64 {
    let found: serde_json::Value = serde_json::from_str(&get(addr, &format!("/api/search?q={cpv}&compiler={compiler}")).body).unwrap();
    found["cells"][0]["seq"].as_i64().unwrap_or_else(|| panic!("{cpv} {compiler}: {found}"))
}

/// askama's numeric character references as the named ones, for readable assertions.
fn entities(html: &str) -> String {
    html.replace("&#60;", "&lt;").replace("&#62;", "&gt;").replace("&#34;", "&quot;").replace("&#39;", "&apos;").replace("&#38;", "&amp;")
}

/// No hostile character reaches the HTML as itself: no markup, no raw quote inside text,
/// no NUL, no bidi override.
fn assert_inert(path: &str, html: &str) {
    assert!(!html.contains("<script"), "{path}: markup from an upload reached the page");
    assert!(!html.contains('\u{0}') && !html.contains('\u{202e}'), "{path}: a control character reached the page");
    assert!(!html.contains("alert(1)</"), "{path}");
}

#[test]
fn every_page_answers_and_hostile_content_is_text() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start(&database(dir.path()));
    let bzip2 = seq_of(addr, "bzip2", "clang");
    let evil = seq_of(addr, "evil", "clang");
    let dep = seq_of(addr, "dep", "gcc");
    let pages = [
        "/".to_owned(),
        "/package/app-arch/bzip2".into(),
        "/package/x11-misc/evil".into(),
        format!("/cell/{bzip2}"),
        format!("/cell/{evil}"),
        format!("/cell/{evil}/deps"),
        format!("/cell/{dep}/deps"),
        format!("/cell/{bzip2}/deps"),
        "/search?q=evil".into(),
        "/search?status=build_failed&compiler=clang".into(),
        "/snapshots".into(),
        "/api".into(),
    ];
    for path in &pages {
        let got = get(addr, path);
        assert_eq!(got.status, 200, "{path}: {}", got.body);
        assert!(got.content_type.starts_with("text/html"), "{path}: {}", got.content_type);
        let csp = got.headers.get("content-security-policy").expect("every page has a CSP").to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"), "{path}: {csp}");
        assert_eq!(got.headers.get("x-content-type-options").unwrap(), "nosniff");
        assert_inert(path, &got.body);
    }
    // What the hostile text became: escaped, with its controls shown by name.
    let evil_page = entities(&get(addr, &format!("/cell/{evil}")).body);
    assert!(evil_page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{evil_page}");
    assert!(evil_page.contains("&lt;U+0000&gt;") && evil_page.contains("&lt;U+202E&gt;"), "{evil_page}");
    // The megabyte line is cut on the page, and whole in the download.
    let page = entities(&get(addr, &format!("/cell/{bzip2}")).body);
    assert!(page.len() < 200_000, "the cell page is {} bytes", page.len());
    assert!(page.contains("more bytes on this line"), "the cut says so");
    assert!(page.contains(r#"class="err""#), "the error line is highlighted");
    assert!(page.contains("app-arch/bzip2-1.0.8: fails to compile with USE=&quot;-jemalloc static-libs&quot; (clang)"), "the bug summary");
    let log = get(addr, &format!("/cell/{bzip2}/build.log"));
    assert!(log.content_type.starts_with("text/plain"));
    assert!(log.headers.get("content-disposition").unwrap().to_str().unwrap().starts_with("attachment"));
    assert!(log.body.len() > 1 << 20 && log.body.contains(EVIL));
    // The dependency view marks the failing dependency.
    let deps: serde_json::Value = serde_json::from_str(&get(addr, &format!("/api/cell/{dep}/deps")).body).unwrap();
    assert_eq!(deps["pulled"][0]["cpv"], "dev-libs/foo-1.2");
    assert_eq!(deps["pulled"][0]["failed"], true);
    // Every API call answers JSON.
    for path in [
        "/api/overview",
        "/api/package/app-arch/bzip2",
        "/api/search?q=bzip2",
        "/api/changes",
        "/api/fails",
        "/api/blame",
        "/api/snapshots",
    ] {
        let got = get(addr, path);
        assert_eq!(got.status, 200, "{path}: {}", got.body);
        let _: serde_json::Value = serde_json::from_str(&got.body).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    let overview: serde_json::Value = serde_json::from_str(&get(addr, "/api/overview").body).unwrap();
    assert_eq!(overview["newly_failing_total"], 1, "{overview}");
    assert_eq!((overview["progress"]["planned"].as_u64(), overview["progress"]["done"].as_u64()), (Some(40), Some(7)));
    assert!(get(addr, "/").body.contains("7 of 40 planned jobs"), "the overview shows the sweep's progress");
    assert_eq!(overview["newly_failing"][0]["cpv"], "app-arch/bzip2-1.0.8");
    let fails: serde_json::Value = serde_json::from_str(&get(addr, "/api/fails").body).unwrap();
    assert_eq!((fails["paging"]["page"].as_u64(), fails["paging"]["total"].as_u64()), (Some(1), Some(4)), "{fails}");
    let past: serde_json::Value = serde_json::from_str(&get(addr, "/api/fails?page=9").body).unwrap();
    assert_eq!((past["packages"].as_array().map(Vec::len), past["paging"]["total"].as_u64()), (Some(0), Some(4)), "{past}");
    assert_eq!(past["paging"]["page"], 9, "the page asked for");
    let bug: serde_json::Value = serde_json::from_str(&get(addr, &format!("/api/cell/{bzip2}/bug")).body).unwrap();
    assert!(bug["comment"].as_str().unwrap().contains("CC=clang CXX=clang++ emerge --oneshot =app-arch/bzip2-1.0.8"));
    // The feeds parse as XML even with a NUL in the summary.
    for path in ["/feed.atom", "/package/app-arch/bzip2/feed.atom", "/package/x11-misc/evil/feed.atom"] {
        let got = get(addr, path);
        assert!(got.content_type.starts_with("application/atom+xml"), "{path}");
        let feed: atom_syndication::Feed = got.body.parse().unwrap_or_else(|e| panic!("{path}: {e}\n{}", got.body));
        if path.contains("bzip2") || path == "/feed.atom" {
            assert_eq!(feed.entries().len(), 1, "{path}");
        }
    }
    // Errors: a page for people, JSON for tools, never a stack trace; nothing outside the
    // store is reachable.
    for (path, status) in [
        ("/cell/999999", 404),
        ("/cell/abc", 400),
        ("/api/cell/999999", 404),
        ("/package/no/such", 404),
        ("/cell/1/..%2F..%2Fresults.sqlite", 404),
        ("/search?status=nonsense", 400),
        ("/api/search?page=1001", 400),
        ("/package/x%01/y/feed.atom", 404),
        ("/nowhere", 404),
    ] {
        let got = get(addr, path);
        assert_eq!(got.status, status, "{path}: {}", got.body);
    }
    let many: Vec<String> = (0..33).map(|i| format!("f{i}")).collect();
    assert_eq!(get(addr, &format!("/api/search?use={}", many.join("%20"))).status, 400, "at most 32 flags");
    let refused = get(addr, "/api/search?compiler=icc");
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("compiler"), "{}", refused.body);
}

#[test]
fn the_overview_follows_new_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = database(dir.path());
    let addr = start(&db_path);
    let before: serde_json::Value = serde_json::from_str(&get(addr, "/api/overview").body).unwrap();
    let mut db = Database::open(&db_path).unwrap();
    put(
        &mut db,
        Row {
            label: "git:s2",
            cpv: "dev-libs/new-1",
            use_flags: UseAssignment::default(),
            compiler: Compiler::Gcc,
            status: Status::Success,
            summary: "ok".into(),
            log: "ok".into(),
            tests: Vec::new(),
            packages: Vec::new(),
        },
    );
    let cells = before["cells"].as_u64().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now: serde_json::Value = serde_json::from_str(&get(addr, "/api/overview").body).unwrap();
        if now["cells"].as_u64().unwrap() == cells + 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the overview never saw the new outcome: {now}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
