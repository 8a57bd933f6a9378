//! The host side's reader over HTTP (issue 11, item 2): a published repository read lazily
//! through the host's shared cache (`gah_publish::fetch`), and the faults the issue names:
//! the server gone mid-job, a tampered or damaged object, a full cache, two tasks sharing
//! the cache, a download killed mid-way, and a replayed older repository state.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::NAME;
use gah_publish::fetch::{Cache, Http};
use gah_publish::{Kind, Reader, VerifyError};

struct Fixture {
    _dir: tempfile::TempDir,
    src: PathBuf,
    repo: PathBuf,
    keys: PathBuf,
    cache: PathBuf,
}

fn published() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (src, repo, keys, cache) = (dir.path().join("src"), dir.path().join("repo"), dir.path().join("keys"), dir.path().join("cache"));
    common::make_tree(&src);
    gah_publish::publish(&src, &repo, NAME, &keys).unwrap();
    Fixture { _dir: dir, src, repo, keys, cache }
}

/// A reader of the repository at `url` through the cache in `cache`, and its source.
fn open(url: &str, cache: &Path, quota: u64, keys: &Path) -> (Result<Reader, VerifyError>, Arc<Http>) {
    let http = Arc::new(Http::new(url, NAME, Cache::open(cache, quota).unwrap(), None).unwrap());
    let master = gah_publish::keys::master_pub_path(keys, NAME);
    let now = i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()).unwrap();
    (gah_publish::verify_from(http.clone(), NAME, &master, now), http)
}

const QUOTA: u64 = 1 << 30;

fn files(src: &Path) -> Vec<(String, PathBuf)> {
    common::source_entries(src).into_iter().filter(|(_, p)| fs::symlink_metadata(p).unwrap().is_file()).collect()
}

#[test]
fn a_job_downloads_only_what_it_opens_and_the_next_job_reads_the_cache() {
    let f = published();
    let server = common::serve_stoppable(&f.repo);
    let (reader, http) = open(&server.url, &f.cache, QUOTA, &f.keys);
    let reader = reader.unwrap();
    assert_eq!(reader.read("/README.txt").unwrap(), fs::read(f.src.join("README.txt")).unwrap());
    let first = http.downloads.load(Ordering::Relaxed);
    let all_objects = common::objects(&f.repo).len() as u64;
    // Readable by a web server that is not the publisher (the stock client's check found
    // 0600 objects that Apache, as www-data, could not serve).
    for o in common::objects(&f.repo) {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(f.repo.join("data").join(&o)).unwrap().permissions().mode();
        assert_eq!(mode & 0o044, 0o044, "data/{o}: {mode:o}");
    }
    // Whitelist, manifest, certificate, root catalog, the file: not the nested catalogs, not
    // the 3 MiB blob.
    assert_eq!(first, 5, "downloads for one file");
    assert!(first < all_objects + 2);
    for (path, source) in files(&f.src) {
        assert_eq!(reader.read(&path).unwrap(), fs::read(&source).unwrap(), "{path}");
    }
    let after_all = http.downloads.load(Ordering::Relaxed);
    assert!(after_all > first);

    // The next job, another process as far as the cache knows: only the two top-level files.
    let (reader, http) = open(&server.url, &f.cache, QUOTA, &f.keys);
    let reader = reader.unwrap();
    for (path, source) in files(&f.src) {
        assert_eq!(reader.read(&path).unwrap(), fs::read(&source).unwrap(), "{path}");
    }
    assert_eq!(http.downloads.load(Ordering::Relaxed), 2, "only .cvmfswhitelist and .cvmfspublished downloaded again");
}

#[test]
fn without_the_server_cached_files_serve_and_a_missing_one_is_named() {
    let f = published();
    let server = common::serve_stoppable(&f.repo);
    let (reader, _) = open(&server.url, &f.cache, QUOTA, &f.keys);
    reader.unwrap().read("/app-misc/hello/hello-1.0.ebuild").unwrap();
    server.stop();
    // A new job while the server is gone: the last verified manifest and whitelist, checked again.
    let (reader, http) = open(&server.url, &f.cache, QUOTA, &f.keys);
    let reader = reader.expect("verified from the cache");
    assert_eq!(reader.read("/app-misc/hello/hello-1.0.ebuild").unwrap(), b"EAPI=8\nDESCRIPTION=\"hello\"\n");
    assert_eq!(http.downloads.load(Ordering::Relaxed), 0);
    let e = reader.read("/dev-lang/big/blob.bin").unwrap_err().to_string();
    assert!(e.contains(&server.url) && e.contains("data/"), "the error names what could not be fetched: {e}");
    // Never verified anything: nothing to fall back on.
    let empty = tempfile::tempdir().unwrap();
    assert!(open(&server.url, empty.path(), QUOTA, &f.keys).0.is_err());
}

#[test]
fn a_tampered_object_is_refused_and_never_cached_and_a_damaged_cache_entry_is_fetched_again() {
    let f = published();
    let server = common::serve_stoppable(&f.repo);
    let master = gah_publish::keys::master_pub_path(&f.keys, NAME);
    let Kind::File { hash } = gah_publish::verify(&f.repo, NAME, &master).unwrap().lookup("/README.txt").unwrap().kind else {
        panic!("a file")
    };
    let object = gah_publish::objects::object_path(&f.repo, &hash, gah_publish::objects::Suffix::None);
    let good = fs::read(&object).unwrap();
    common::flip_byte(&object, 5);
    let (reader, _) = open(&server.url, &f.cache, QUOTA, &f.keys);
    let reader = reader.unwrap();
    assert!(matches!(reader.read("/README.txt"), Err(VerifyError::ObjectHash { .. })));
    let hex = hex::encode(hash);
    let cached = f.cache.join("objects").join(&hex[..2]).join(&hex[2..]);
    assert!(!cached.exists(), "a tampered object is not cached");
    fs::write(&object, &good).unwrap();
    assert_eq!(reader.read("/README.txt").unwrap(), b"the root catalog holds this\n");
    assert!(cached.exists());
    // Damaged on the volunteer's disk: not served, fetched again.
    common::flip_byte(&cached, 3);
    let (reader, http) = open(&server.url, &f.cache, QUOTA, &f.keys);
    assert_eq!(reader.unwrap().read("/README.txt").unwrap(), b"the root catalog holds this\n");
    assert_eq!(http.downloads.load(Ordering::Relaxed), 3, "the two top-level files and the damaged object");
}

#[test]
fn the_cache_stays_within_its_quota() {
    let f = published();
    let server = common::serve_stoppable(&f.repo);
    let quota = 256 << 10;
    let (reader, _) = open(&server.url, &f.cache, quota, &f.keys);
    let reader = reader.unwrap();
    let largest = common::objects(&f.repo).iter().map(|o| fs::metadata(f.repo.join("data").join(o)).unwrap().len()).max().unwrap();
    assert!(largest > quota, "the blob alone is larger than the quota");
    for (path, source) in files(&f.src) {
        assert_eq!(reader.read(&path).unwrap(), fs::read(&source).unwrap(), "{path}");
        let size = Cache::open(&f.cache, quota).unwrap().size();
        // Evicted down to 3/4 of the quota whenever an eighth of it was added: at most one
        // object and an eighth above the quota between two looks.
        assert!(size <= quota + quota / 8 + largest, "{size} bytes after {path}");
    }
    // Opening the cache looks at it whole: within the quota afterwards.
    assert!(Cache::open(&f.cache, quota).unwrap().size() <= quota);
}

#[test]
fn two_tasks_share_one_cache() {
    let f = published();
    let server = common::serve_stoppable(&f.repo);
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (url, cache, keys, src) = (server.url.clone(), f.cache.clone(), f.keys.clone(), f.src.clone());
            std::thread::spawn(move || {
                // A small quota: the two evict while the other reads.
                let (reader, _) = open(&url, &cache, 512 << 10, &keys);
                let reader = reader.unwrap();
                for _ in 0..3 {
                    for (path, source) in files(&src) {
                        assert_eq!(reader.read(&path).unwrap(), fs::read(&source).unwrap(), "{path}");
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn a_download_killed_mid_way_leaves_nothing_behind() {
    let f = published();
    let server = common::serve_stoppable(&f.repo);
    drop(open(&server.url, &f.cache, QUOTA, &f.keys));
    // What a download killed before its rename leaves: a temporary file of a dead writer.
    let orphan = f.cache.join("tmp").join(".0123456789.tmp-999999999-1");
    fs::write(&orphan, b"half an obj").unwrap();
    let (reader, _) = open(&server.url, &f.cache, QUOTA, &f.keys);
    assert!(!orphan.exists(), "removed when the cache is opened");
    assert_eq!(reader.unwrap().read("/README.txt").unwrap(), b"the root catalog holds this\n");
}

#[test]
fn a_replayed_older_repository_state_is_refused() {
    let f = published();
    let server = common::serve_stoppable(&f.repo);
    let old_manifest = fs::read(f.repo.join(".cvmfspublished")).unwrap();
    fs::write(f.src.join("README.txt"), b"revision 2\n").unwrap();
    assert_eq!(gah_publish::publish(&f.src, &f.repo, NAME, &f.keys).unwrap().revision, 2);
    let (reader, _) = open(&server.url, &f.cache, QUOTA, &f.keys);
    assert_eq!(reader.unwrap().read("/README.txt").unwrap(), b"revision 2\n");
    // A proxy serves the older, validly signed manifest.
    fs::write(f.repo.join(".cvmfspublished"), &old_manifest).unwrap();
    let (reader, _) = open(&server.url, &f.cache, QUOTA, &f.keys);
    assert!(matches!(reader, Err(VerifyError::Rollback { found: 1, seen: 2 })), "{:?}", reader.err());
    // What it sent was never kept: offline, the last verified revision still opens.
    server.stop();
    let (reader, _) = open(&server.url, &f.cache, QUOTA, &f.keys);
    assert_eq!(reader.unwrap().manifest.revision, 2);
}

#[test]
fn an_endless_manifest_is_cut_off() {
    let f = published();
    let server = common::serve_stoppable(&f.repo);
    let mut huge = fs::read(f.repo.join(".cvmfspublished")).unwrap();
    huge.resize(2 << 20, b'x');
    fs::write(f.repo.join(".cvmfspublished"), &huge).unwrap();
    let (reader, _) = open(&server.url, &f.cache, QUOTA, &f.keys);
    let e = reader.err().expect("refused").to_string();
    assert!(e.contains("more than"), "{e}");
}

#[test]
fn a_subtree_is_written_out_as_it_was_published() {
    use std::os::unix::fs::PermissionsExt;
    let f = published();
    let server = common::serve_stoppable(&f.repo);
    let (reader, _) = open(&server.url, &f.cache, QUOTA, &f.keys);
    let reader = reader.unwrap();
    let out = f.cache.parent().unwrap().join("out");
    let done = gah_publish::fetch::materialise(&reader, "/", &out, gah_publish::fetch::Links::Keep).unwrap();
    // Catalog markers are the publisher's, not the tree's: the source's own is left out too.
    let marker = format!("/{}", gah_publish::catalog::CATALOG_MARKER);
    let entries: Vec<_> = common::source_entries(&f.src).into_iter().filter(|(path, _)| !path.ends_with(&marker)).collect();
    assert_eq!(done.files, files(&f.src).len() as u64 - 1);
    assert!(!out.join("dev-lang/big/.cvmfscatalog").exists() && !out.join("app-misc/.cvmfscatalog").exists());
    for (path, source) in entries {
        let (written, meta) = (out.join(path.trim_start_matches('/')), fs::symlink_metadata(&source).unwrap());
        let got = fs::symlink_metadata(&written).unwrap_or_else(|e| panic!("{path}: {e}"));
        if meta.is_symlink() {
            assert_eq!(fs::read_link(&written).unwrap(), fs::read_link(&source).unwrap(), "{path}");
        } else if meta.is_file() {
            assert_eq!(fs::read(&written).unwrap(), fs::read(&source).unwrap(), "{path}");
            assert_eq!(got.permissions().mode() & 0o7777, meta.permissions().mode() & 0o777, "{path}");
        } else {
            assert!(got.is_dir(), "{path}");
        }
    }
    // Never over something that exists.
    assert!(gah_publish::fetch::materialise(&reader, "/app-misc", &out, gah_publish::fetch::Links::Keep).is_err());
}

/// A request the server (or a proxy) lost, its connection closed without an answer, is tried
/// once more, as the CernVM-FS client does (`CVMFS_MAX_RETRIES`, 1 by default): here the
/// server drops the first request for every object and answers the second.
#[test]
fn a_lost_request_is_tried_once_more() {
    use std::io::{BufRead, BufReader, Write};
    let f = published();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let repo = f.repo.clone();
    std::thread::spawn(move || {
        let mut dropped = std::collections::HashSet::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_owned();
            if path.contains("data/") && dropped.insert(path.clone()) {
                // Lost: closed without an answer.
                continue;
            }
            let response = match fs::read(repo.join(&path)) {
                Ok(body) => {
                    [format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes(), body].concat()
                }
                Err(_) => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
            };
            let _ = stream.write_all(&response);
        }
    });
    let (reader, http) = open(&url, &f.cache, QUOTA, &f.keys);
    let reader = reader.expect("the manifest and the catalogs, each on its second try");
    assert_eq!(reader.read("/app-misc/hello/hello-1.0.ebuild").unwrap(), b"EAPI=8\nDESCRIPTION=\"hello\"\n");
    assert!(http.downloads.load(Ordering::Relaxed) >= 2);
}
