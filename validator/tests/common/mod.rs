//! Builders for test archives: well-formed ones through `gah_core::archive::write`, and
//! hostile ones byte by byte (tar::Builder refuses `..` and absolute names, so headers are
//! written directly). Shared by the validator's tests and the corpus generator.
#![allow(dead_code)]

use std::io::Write;

use gah_core::archive::{self, MANIFEST};
use gah_core::job::{Compiler, Job, UseAssignment};
use gah_core::outcome::{InstalledFile, Outcome, Status};

pub fn job() -> Job {
    let mut flags = UseAssignment::default();
    flags.0.insert("static".into(), false);
    flags.0.insert("debug".into(), true);
    Job::new("gah", "app-arch/bzip2-1.0.8", flags, Compiler::Gcc, 3600)
}

/// A consistent outcome of `job` with the given status.
pub fn outcome(job: &Job, status: Status) -> Outcome {
    let mut o = Outcome::for_job(job, status);
    match status {
        Status::Success => o.test_ran = true,
        Status::TestFailed => {
            o.test_ran = true;
            o.failed_phase = Some("test".into());
            o.failing_tests = vec!["sample1".into()];
        }
        Status::BuildFailed => o.failed_phase = Some("compile".into()),
        Status::DepsFailed => o.failed_phase = Some("deps".into()),
        Status::ResourceLimit => o.failed_phase = Some("compile".into()),
        Status::Timeout | Status::InfraError => {}
    }
    o.backend = "sandbox".into();
    o.accelerator = "none".into();
    o.duration_secs = 12.5;
    o.installed_files = vec![
        InstalledFile { path: "/usr/bin/bzip2".into(), sha256: "11".repeat(32) },
        InstalledFile { path: "/usr/lib64/libbz2.so.1.0.8".into(), sha256: "22".repeat(32) },
        InstalledFile { path: "/usr/share/man/man1/bzip2.1.bz2".into(), sha256: "33".repeat(32) },
    ];
    o
}

/// A well-formed archive, as gah-app writes it.
pub fn good(job: &Job, outcome: &Outcome, log: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    archive::write(&mut buf, job, outcome, log, Some(b"Portage 3.0.83 (emerge --info)\n")).unwrap();
    buf
}

/// One raw tar member.
pub struct Member {
    pub name: Vec<u8>,
    pub kind: tar::EntryType,
    pub data: Vec<u8>,
    pub link: Vec<u8>,
    /// Size written in the header when it differs from `data.len()` (data is then streamed
    /// as that many zero bytes).
    pub zeros: Option<u64>,
}

impl Member {
    pub fn file(name: &str, data: &[u8]) -> Member {
        Member { name: name.as_bytes().to_vec(), kind: tar::EntryType::Regular, data: data.to_vec(), link: Vec::new(), zeros: None }
    }
}

/// The members of a well-formed archive, manifest last.
pub fn members(job: &Job, outcome: &Outcome, log: &[u8]) -> Vec<Member> {
    let mut m =
        vec![Member::file("outcome.json", &outcome.to_json()), Member::file("job.json", &job.to_json()), Member::file("build.log", log)];
    m.push(manifest_for(&m));
    m
}

/// A manifest that honestly lists `members` (a forger can always compute one).
pub fn manifest_for(members: &[Member]) -> Member {
    let text: String = members
        .iter()
        .filter(|m| m.kind == tar::EntryType::Regular && m.zeros.is_none())
        .map(|m| format!("{}  {}\n", archive::sha256_hex(&m.data), String::from_utf8_lossy(&m.name)))
        .collect();
    Member::file(MANIFEST, text.as_bytes())
}

/// Writes `members` as a tar.gz, headers set byte by byte.
pub fn raw(members: &[Member]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for m in members {
        let mut header = tar::Header::new_ustar();
        {
            let old = header.as_old_mut();
            old.name = [0; 100];
            old.name[..m.name.len()].copy_from_slice(&m.name);
            old.linkname = [0; 100];
            old.linkname[..m.link.len()].copy_from_slice(&m.link);
        }
        header.set_entry_type(m.kind);
        header.set_mode(0o644);
        header.set_mtime(0);
        if m.kind == tar::EntryType::Char {
            header.set_device_major(1).unwrap();
            header.set_device_minor(3).unwrap();
        }
        match m.zeros {
            Some(n) => {
                header.set_size(n);
                header.set_cksum();
                tar.append(&header, std::io::Read::take(std::io::repeat(0), n)).unwrap();
            }
            None => {
                header.set_size(m.data.len() as u64);
                header.set_cksum();
                tar.append(&header, m.data.as_slice()).unwrap();
            }
        }
    }
    let gz = tar.into_inner().unwrap();
    let mut out = gz.finish().unwrap();
    out.flush().unwrap();
    out
}

/// One hostile archive: its name, the words its rejection must contain, and how to build it
/// (lazily: the bombs take seconds to compress in debug builds).
pub struct Case {
    pub name: &'static str,
    pub words: &'static str,
    build: Box<dyn Fn() -> Vec<u8>>,
}

impl Case {
    pub fn bytes(&self) -> Vec<u8> {
        (self.build)()
    }
}

fn case(name: &'static str, words: &'static str, build: impl Fn() -> Vec<u8> + 'static) -> Case {
    Case { name, words, build: Box::new(build) }
}

/// A well-formed archive's members for the hostile cases to start from.
fn base() -> Vec<Member> {
    let job = job();
    members(&job, &outcome(&job, Status::TestFailed), b">>> Emerging app-arch/bzip2-1.0.8\n * ERROR: test failed\n")
}

/// `base()` with `extra` as the first member.
fn with(extra: Member) -> Vec<u8> {
    let mut m = base();
    m.insert(0, extra);
    raw(&m)
}

/// Replaces the manifest with an honest one for the members as they now are.
fn refreshed(mut m: Vec<Member>) -> Vec<u8> {
    m.pop();
    let manifest = manifest_for(&m);
    m.push(manifest);
    raw(&m)
}

fn special(name: &[u8], kind: tar::EntryType, link: &str) -> Member {
    Member { name: name.to_vec(), kind, data: Vec::new(), link: link.as_bytes().to_vec(), zeros: None }
}

fn zeros(name: &str, n: u64) -> Member {
    Member { name: name.as_bytes().to_vec(), kind: tar::EntryType::Regular, data: Vec::new(), link: Vec::new(), zeros: Some(n) }
}

/// Every hostile archive. The `absolute` case names `abs_target`, which must not exist
/// after the check.
pub fn hostile(abs_target: &str) -> Vec<Case> {
    use tar::EntryType as T;
    let abs = abs_target.to_owned();
    vec![
        case("traversal", "not a plain file name", || with(Member::file("../gah-escaped", b"pwned"))),
        case("traversal-nested", "not a plain file name", || with(Member::file("a/../../gah-escaped", b"pwned"))),
        case("absolute", "not a plain file name", move || with(Member::file(&abs, b"pwned"))),
        case("symlink", "is a symbolic link", || with(special(b"build.log", T::Symlink, "/etc/passwd"))),
        case("hardlink", "is a hard link", || with(special(b"build.log", T::Link, "/etc/passwd"))),
        case("chardev", "is a character device", || with(special(b"build.log", T::Char, ""))),
        case("fifo", "is a FIFO", || with(special(b"build.log", T::Fifo, ""))),
        case("directory", "is a directory", || with(special(b"build.log", T::Directory, ""))),
        case("non-utf8-name", "not a plain file name", || {
            with(Member { name: vec![b'b', 0xff, 0xfe], kind: T::Regular, data: b"x".to_vec(), link: Vec::new(), zeros: None })
        }),
        case("duplicate", "appears twice", || {
            let mut m = base();
            let again = Member::file("outcome.json", &m[0].data);
            m.insert(1, again);
            refreshed(m)
        }),
        case("unknown-member", "not part of the outcome format", || with(Member::file("payload.sh", b"#!/bin/sh\n"))),
        case("bomb-100mb", "decompression bomb", || {
            let mut m = base();
            m[2] = zeros("build.log", 100 << 20);
            raw(&m)
        }),
        case("ratio-bomb", "decompression bomb", || {
            let mut m = base();
            m[2] = zeros("build.log", 20 << 20);
            refreshed(m)
        }),
        case("truncated-gzip", "not a readable tar.gz", || {
            let job = job();
            let good = good(&job, &outcome(&job, Status::TestFailed), b"log\n");
            good[..good.len() / 2].to_vec()
        }),
        case("garbage", "not a readable tar.gz", || b"GET / HTTP/1.1\r\nHost: evil\r\n\r\n".repeat(20)),
        case("empty", "not a readable tar.gz", Vec::new),
        case("manifest-mismatch", "does not match MANIFEST.sha256", || {
            // The outcome rewritten after the manifest was made.
            let mut m = base();
            let job = job();
            m[0].data = outcome(&job, Status::Success).to_json();
            raw(&m)
        }),
        case("manifest-missing-entry", "not listed", || {
            let mut m = base();
            let listed = format!("{}  outcome.json\n", archive::sha256_hex(&m[0].data));
            let last = m.len() - 1;
            m[last] = Member::file(MANIFEST, listed.as_bytes());
            raw(&m)
        }),
        case("job-mismatch", "outcome is for", || {
            let mut m = base();
            let mut other = job();
            other.cpv = "app-arch/bzip2-1.0.6".into();
            m[1] = Member::file("job.json", &other.to_json());
            refreshed(m)
        }),
        case("schema-violation", "unknown field", || {
            let mut m = base();
            let mut v: serde_json::Value = serde_json::from_slice(&m[0].data).unwrap();
            v["injected"] = serde_json::json!("x");
            m[0] = Member::file("outcome.json", &serde_json::to_vec(&v).unwrap());
            refreshed(m)
        }),
        case("inconsistent-outcome", "without a failed phase", || {
            let mut m = base();
            let job = job();
            let mut bad = outcome(&job, Status::TestFailed);
            bad.failed_phase = None;
            m[0] = Member::file("outcome.json", &bad.to_json());
            refreshed(m)
        }),
    ]
}
