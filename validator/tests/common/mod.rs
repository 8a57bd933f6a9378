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
    let mut m = vec![
        Member::file("outcome.json", &outcome.to_json()),
        Member::file("job.json", &job.to_json()),
        Member::file("build.log", log),
    ];
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
    // Level 1 is several times faster on the bombs' zeros in debug builds.
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
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

/// Every hostile archive with the words its rejection must contain. The absolute-path case
/// names `abs_target`, which must not exist after the check.
pub fn hostile(abs_target: &str) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let job = job();
    let ok = outcome(&job, Status::TestFailed);
    let log = b">>> Emerging app-arch/bzip2-1.0.8\n * ERROR: test failed\n".to_vec();
    let base = || members(&job, &ok, &log);
    let with = |extra: Member| {
        let mut m = base();
        m.insert(0, extra);
        raw(&m)
    };
    let link = |kind, target: &str| Member { name: b"build.log".to_vec(), kind, data: Vec::new(), link: target.as_bytes().to_vec(), zeros: None };

    let good_bytes = good(&job, &ok, &log);
    let mut forged_members = base();
    // Rewrite the outcome after the manifest was made.
    forged_members[0].data = outcome(&job, Status::Success).to_json();
    let mut bomb = base();
    bomb[2] = Member { name: b"build.log".to_vec(), kind: tar::EntryType::Regular, data: Vec::new(), link: Vec::new(), zeros: Some(100 << 20) };
    let mut ratio = base();
    ratio[2] = Member { name: b"build.log".to_vec(), kind: tar::EntryType::Regular, data: Vec::new(), link: Vec::new(), zeros: Some(20 << 20) };
    let mut dup = base();
    dup.insert(1, Member::file("outcome.json", &ok.to_json()));
    let mut other_job = base();
    let mut other = job.clone();
    other.cpv = "app-arch/bzip2-1.0.6".into();
    other_job[1] = Member::file("job.json", &other.to_json());
    let fix = |mut m: Vec<Member>| {
        m.pop();
        let manifest = manifest_for(&m);
        m.push(manifest);
        raw(&m)
    };

    vec![
        ("traversal", with(Member::file("../gah-escaped", b"pwned")), "not a plain file name"),
        ("traversal-nested", with(Member::file("a/../../gah-escaped", b"pwned")), "not a plain file name"),
        ("absolute", with(Member::file(abs_target, b"pwned")), "not a plain file name"),
        ("symlink", with(link(tar::EntryType::Symlink, "/etc/passwd")), "is a symbolic link"),
        ("hardlink", with(link(tar::EntryType::Link, "/etc/passwd")), "is a hard link"),
        ("chardev", with(Member { name: b"build.log".to_vec(), kind: tar::EntryType::Char, data: Vec::new(), link: Vec::new(), zeros: None }), "is a character device"),
        ("fifo", with(Member { name: b"build.log".to_vec(), kind: tar::EntryType::Fifo, data: Vec::new(), link: Vec::new(), zeros: None }), "is a FIFO"),
        ("directory", with(Member { name: b"build.log".to_vec(), kind: tar::EntryType::Directory, data: Vec::new(), link: Vec::new(), zeros: None }), "is a directory"),
        ("non-utf8-name", with(Member { name: vec![b'b', 0xff, 0xfe], kind: tar::EntryType::Regular, data: b"x".to_vec(), link: Vec::new(), zeros: None }), "not a plain file name"),
        ("duplicate", fix(dup), "appears twice"),
        ("unknown-member", with(Member::file("payload.sh", b"#!/bin/sh\n")), "not part of the outcome format"),
        ("bomb-100mb", raw(&bomb), "decompression bomb"),
        ("ratio-bomb", fix(ratio), "decompression bomb"),
        ("truncated-gzip", good_bytes[..good_bytes.len() / 2].to_vec(), "not a readable tar.gz"),
        ("garbage", b"GET / HTTP/1.1\r\nHost: evil\r\n\r\n".repeat(20), "not a readable tar.gz"),
        ("empty", Vec::new(), "not a readable tar.gz"),
        ("manifest-mismatch", raw(&forged_members), "does not match MANIFEST.sha256"),
        ("manifest-missing-entry", {
            let mut m = base();
            let last = m.len() - 1;
            m[last] = Member::file(MANIFEST, format!("{}  outcome.json\n", archive::sha256_hex(&ok.to_json())).as_bytes());
            raw(&m)
        }, "not listed"),
        ("job-mismatch", fix(other_job), "outcome is for"),
        ("schema-violation", {
            let mut m = base();
            let mut v: serde_json::Value = serde_json::from_slice(&ok.to_json()).unwrap();
            v["injected"] = serde_json::json!("x");
            m[0] = Member::file("outcome.json", &serde_json::to_vec(&v).unwrap());
            fix(m)
        }, "unknown field"),
        ("inconsistent-outcome", {
            let mut m = base();
            let mut bad = ok.clone();
            bad.failed_phase = None;
            m[0] = Member::file("outcome.json", &bad.to_json());
            fix(m)
        }, "without a failed phase"),
    ]
}
