//! Shared by the publisher's tests: a source tree with every kind of entry the publisher
//! must carry, a tiny HTTP server that serves a folder as a plain web server would (what a
//! stratum 0 is), and helpers to copy and tamper with a published repository.

#![allow(dead_code)] // each test file uses its own part of this

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub const NAME: &str = "gentoo.gah";

/// Top-level names that exist on no test machine: the `cvmfs` crate canonicalises the
/// paths it is asked for against the *local* file system (`common.rs`,
/// `canonicalize_path`), so a repository path such as `/bin` would be resolved through the
/// host's own `/bin` symlink.
pub fn make_tree(root: &Path) {
    let w = |rel: &str, bytes: &[u8]| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    };
    w("app-misc/hello/hello-1.0.ebuild", b"EAPI=8\nDESCRIPTION=\"hello\"\n");
    w("app-misc/hello/files/deep/er/patch.diff", b"--- a\n+++ b\n");
    w("app-misc/hello/Manifest", b"DIST hello-1.0.tar.gz 123 BLAKE2B 00\n");
    w("app-misc/empty-file", b"");
    w("dev-lang/with space/name with spaces.txt", b"spaces\n");
    w("dev-lang/ünïcødé/文件-ü.txt", "UTF-8 ✓\n".as_bytes());
    // A directory with its own nested catalog, below the per-category one.
    w("dev-lang/big/.cvmfscatalog", b"");
    let mut big = Vec::with_capacity(3 << 20);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while big.len() < 3 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        big.extend_from_slice(&x.to_le_bytes()[..3]);
        big.extend_from_slice(b"ebuild "); // compressible, but not trivially
    }
    big.truncate(3 << 20);
    w("dev-lang/big/blob.bin", &big);
    w("dev-lang/big/disk.img", &disk_image(0));
    w("scripts/run.sh", b"#!/bin/sh\necho hi\n");
    fs::set_permissions(root.join("scripts/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    w("README.txt", b"the root catalog holds this\n");
    std::os::unix::fs::symlink("../app-misc/hello", root.join("scripts/hello-link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling")).unwrap();
}

/// A file stored in chunks (two whole ones and a short one): 4 KiB blocks that each say
/// their number, as a disk image's blocks differ; `changed` blocks say something else.
pub fn disk_image(changed: usize) -> Vec<u8> {
    let size = usize::try_from(2 * gah_publish::objects::CHUNK_SIZE + 12_345).unwrap();
    let mut image = Vec::with_capacity(size);
    for block in 0..size.div_ceil(4096) {
        let mut b = [0u8; 4096];
        let text = if block < changed { format!("changed block {block}") } else { format!("block {block}") };
        b[..text.len()].copy_from_slice(text.as_bytes());
        image.extend_from_slice(&b);
    }
    image.truncate(size);
    image
}

/// Every entry below `root` as (repository path, metadata), parents first.
pub fn source_entries(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut todo = vec![(String::new(), root.to_owned())];
    while let Some((path, dir)) = todo.pop() {
        let mut names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        for name in names {
            let p = dir.join(&name);
            let rel = format!("{path}/{name}");
            out.push((rel.clone(), p.clone()));
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                todo.push((rel, p));
            }
        }
    }
    out
}

/// Serves `root` over HTTP/1.1 on 127.0.0.1 (GET only, one request per connection, 404 for
/// what is not a file): a plain web server, nothing CernVM-FS-specific. Returns its URL.
pub fn serve(root: &Path) -> String {
    serve_stoppable(root).url
}

/// A server of [`serve_stoppable`]: its URL, and a switch that makes it drop every
/// connection unanswered (the server gone, as a client sees it).
pub struct Server {
    pub url: String,
    pub stopped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Server {
    pub fn stop(&self) {
        self.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// [`serve`], with a switch to stop answering.
pub fn serve_stoppable(root: &Path) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let root = root.to_owned();
    let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stopped.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                drop(stream);
                continue;
            }
            let root = root.clone();
            std::thread::spawn(move || answer(stream, &root));
        }
    });
    Server { url, stopped }
}

fn answer(mut stream: TcpStream, root: &Path) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let file = (!path.contains("..")).then(|| root.join(path.trim_start_matches('/'))).filter(|p| p.is_file());
    let _ = match file.and_then(|p| fs::read(p).ok()) {
        Some(body) => stream
            .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes())
            .and_then(|()| stream.write_all(&body)),
        None => stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    };
}

pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Flips the lowest bit of the byte at `at` (counted from the end when negative): text stays
/// text ('1' becomes '0'), so what is refused is the checksum or signature, not the encoding.
pub fn flip_byte(path: &Path, at: isize) {
    let mut bytes = fs::read(path).unwrap();
    let i = if at < 0 { bytes.len() - at.unsigned_abs() } else { at.unsigned_abs() };
    bytes[i] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

/// The `data/` object files, relative to the repository.
pub fn objects(repo: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for d in fs::read_dir(repo.join("data")).unwrap() {
        let d = d.unwrap();
        if d.file_name() == "txn" {
            continue;
        }
        for f in fs::read_dir(d.path()).unwrap() {
            out.insert(format!("{}/{}", d.file_name().to_string_lossy(), f.unwrap().file_name().to_string_lossy()));
        }
    }
    out
}
