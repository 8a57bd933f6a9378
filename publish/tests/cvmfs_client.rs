//! The independent-client test: what gah-publish writes is read back by the `cvmfs` crate
//! (a separate pure-Rust CernVM-FS client, used as a library) over HTTP from a plain web
//! server, and checked against the source tree: bytes, modes, symlink targets, listings.
//! Then tampering: the crate must refuse a repository whose objects or letters were
//! altered; and a republication's old revision stays readable through the history.
//!
//! Two things of the crate's own shape these tests: `Repository::new` asks for the stratum-1
//! files `.cvmfs_last_snapshot` and `.cvmfs_is_snapshotting`, which a stratum 0 does not
//! have, and its fetcher retries a 404 four times with back-off (`fetcher.rs`,
//! `validated_get`): every successful open costs about 48 s of waiting, not of work. And it
//! does not check the whitelist's signature or fingerprints (`repository.rs`,
//! `Repository::validate_whitelist` checks only the name and the expiry); see
//! `whitelist_tampering_is_refused`. Its chunked reads race with their own prefetching
//! (see `read_all`).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{flip_byte, NAME};
use cvmfs::fetcher::Fetcher;
use cvmfs::repository::Repository;
use gah_publish::catalog::CATALOG_MARKER;

fn open(url: &str, cache: &Path) -> Result<Repository, cvmfs::common::CvmfsError> {
    Repository::new(Fetcher::new(url, cache.to_str().unwrap(), true)?)
}

fn read_all(repo: &Repository, path: &str) -> Result<Vec<u8>, cvmfs::common::CvmfsError> {
    // The crate's chunked reads fetch the next chunks in threads of their own into the
    // cache file a read then opens, which it takes as complete as soon as it exists
    // (`common.rs` `prefetch_chunks`, `cache.rs` `get`): under load a read saw a chunk half
    // written (EINVAL). Fetched one after another first, the reads find them whole.
    for chunk in repo.lookup_with_chunks(path)?.chunks {
        repo.retrieve_object_with_suffix(&chunk.content_hash, "P")?;
    }
    let file = repo.get_file(path)?;
    let mut out = vec![0u8; usize::try_from(file.file_size()).unwrap()];
    let mut at = 0;
    while at < out.len() {
        let n = file.read_at(at as u64, &mut out[at..]).map_err(|e| cvmfs::common::CvmfsError::IO(e.to_string()))?;
        assert!(n > 0, "{path}: short read at {at}");
        at += n;
    }
    Ok(out)
}

struct Fixture {
    _dir: tempfile::TempDir,
    src: std::path::PathBuf,
    repo: std::path::PathBuf,
    keys: std::path::PathBuf,
    scratch: std::path::PathBuf,
}

fn published() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (src, repo, keys, scratch) = (dir.path().join("src"), dir.path().join("repo"), dir.path().join("keys"), dir.path().join("scratch"));
    common::make_tree(&src);
    fs::create_dir_all(&scratch).unwrap();
    let p = gah_publish::publish(&src, &repo, NAME, &keys).unwrap();
    assert_eq!(p.revision, 1);
    assert!(p.keys_generated);
    Fixture { _dir: dir, src, repo, keys, scratch }
}

#[test]
fn the_cvmfs_crate_reads_back_every_file_mode_and_symlink() {
    let f = published();
    let url = common::serve(&f.repo);
    let repo = open(&url, &f.scratch.join("cache")).expect("the cvmfs crate opens the repository");
    assert_eq!(repo.fqrn, NAME);
    assert_eq!(repo.get_revision_number().unwrap(), 1);

    let entries = common::source_entries(&f.src);
    assert!(entries.len() > 15);
    for (path, source) in &entries {
        let meta = fs::symlink_metadata(source).unwrap();
        let dirent = repo.lookup(path).unwrap_or_else(|e| panic!("{path}: {e:?}"));
        assert_eq!(dirent.name, path.rsplit('/').next().unwrap(), "{path}");
        if meta.is_symlink() {
            assert!(dirent.is_symlink(), "{path}");
            assert_eq!(dirent.symlink.as_deref(), Some(fs::read_link(source).unwrap().to_str().unwrap()), "{path}");
        } else if meta.is_dir() {
            assert!(dirent.is_directory(), "{path}");
            assert_eq!(u32::from(dirent.mode) & 0o7777, meta.permissions().mode() & 0o7777, "{path}");
            let mut listed: Vec<String> = repo.list_directory(path).unwrap().into_iter().map(|d| d.name).collect();
            let mut names: Vec<String> = fs::read_dir(source).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            // The publisher adds a marker to every nested catalog's root, as cvmfs_server does.
            if !names.iter().any(|n| n == CATALOG_MARKER) {
                listed.retain(|n| n != CATALOG_MARKER);
            }
            listed.sort();
            names.sort();
            assert_eq!(listed, names, "{path}");
        } else {
            assert!(dirent.is_file() && !dirent.is_symlink(), "{path}");
            assert_eq!(u32::from(dirent.mode), meta.permissions().mode() & 0o177_777, "{path}: mode");
            assert_eq!(read_all(&repo, path).unwrap(), fs::read(source).unwrap(), "{path}: contents");
        }
    }
    let root: Vec<String> = repo.list_directory("/").unwrap().into_iter().map(|d| d.name).collect();
    assert_eq!(root, ["README.txt", "app-misc", "dangling", "dev-lang", "scripts"]);
    assert_eq!(read_all(&repo, "/scripts/run.sh").unwrap(), b"#!/bin/sh\necho hi\n");
    assert_eq!(repo.lookup("/scripts/run.sh").unwrap().mode & 0o777, 0o755);
    assert_eq!(read_all(&repo, "/dev-lang/big/blob.bin").unwrap().len(), 3 << 20);
    // Big files are read from their chunks.
    let disk = repo.lookup_with_chunks("/dev-lang/big/disk.img").unwrap();
    assert_eq!(disk.chunks.len(), 3, "stored in chunks");
    assert!(read_all(&repo, "/dev-lang/big/disk.img").unwrap() == common::disk_image(0));
    // Nested catalogs are really nested: dev-lang/big is its own.
    assert_ne!(repo.retrieve_catalog_for_path("/dev-lang/big/blob.bin").unwrap(), repo.retrieve_catalog_for_path("/dev-lang").unwrap());
    assert_ne!(repo.retrieve_catalog_for_path("/dev-lang").unwrap(), repo.get_root_hash().unwrap());

    // Every nested catalog's root holds an empty marker (`cvmfs_swissknife check` refuses a
    // nested catalog without one); /dev-lang/big's is the source's own.
    for root in ["/app-misc", "/dev-lang", "/dev-lang/big", "/scripts"] {
        let marker = format!("{root}/{CATALOG_MARKER}");
        let dirent = repo.lookup(&marker).unwrap_or_else(|e| panic!("{marker}: {e:?}"));
        assert!(dirent.is_file(), "{marker}");
        assert_eq!(read_all(&repo, &marker).unwrap(), b"", "{marker}");
    }
    assert!(repo.lookup(&format!("/dev-lang/with space/{CATALOG_MARKER}")).is_err(), "a folder in its parent's catalog has no marker");

    // Our own reader agrees, and checks every object (the three markers it added too).
    let ours = gah_publish::verify(&f.repo, NAME, &gah_publish::keys::master_pub_path(&f.keys, NAME)).unwrap();
    assert_eq!(ours.check_all().unwrap(), 3 + entries.iter().filter(|(_, p)| fs::symlink_metadata(p).unwrap().is_file()).count());
}

/// A copy of the repository with one thing altered, served on its own.
fn tampered(f: &Fixture, name: &str, alter: impl FnOnce(&Path)) -> (std::path::PathBuf, String) {
    let copy = f.scratch.join(name);
    common::copy_dir(&f.repo, &copy);
    alter(&copy);
    let url = common::serve(&copy);
    (copy, url)
}

#[test]
fn a_flipped_byte_in_a_file_object_is_refused() {
    let f = published();
    let master = gah_publish::keys::master_pub_path(&f.keys, NAME);
    let path = "/app-misc/hello/hello-1.0.ebuild";
    let gah_publish::Kind::File { hash } = gah_publish::verify(&f.repo, NAME, &master).unwrap().lookup(path).unwrap().kind else {
        panic!("not a file")
    };
    let object = gah_publish::objects::object_path(&f.repo, &hash, gah_publish::objects::Suffix::None);
    let rel = object.strip_prefix(&f.repo).unwrap().to_owned();
    let original = fs::read(f.src.join(&path[1..])).unwrap();

    // The zlib header (its FCHECK no longer fits): the crate refuses (`compress`'s
    // `zlib::Decoder::validate_header`, then its zstd and lz4 fall-backs fail too).
    let (copy, url) = tampered(&f, "object-header", |c| flip_byte(&c.join(&rel), 1));
    let repo = open(&url, &f.scratch.join("cache-object-header")).expect("the letters are intact");
    assert!(read_all(&repo, path).is_err(), "the cvmfs crate served a tampered file");
    assert_eq!(read_all(&repo, "/README.txt").unwrap(), b"the root catalog holds this\n");
    assert!(matches!(gah_publish::verify(&copy, NAME, &master).unwrap().read(path), Err(gah_publish::VerifyError::ObjectHash { .. })));

    // The deflate stream, then the Adler-32 trailer. Our reader refuses both by the object's
    // hash. The cvmfs crate cannot: it never checks an object against its name
    // (`fetcher.rs`: `Fetcher::retrieve_file` does not call `verify_hash`, which would hash
    // the inflated bytes anyway, where CernVM-FS names objects by their compressed bytes),
    // and the Adler-32 check it relies on is skipped by `compress` 0.2.1 whenever the deflate
    // stream ends in a read that also returned data (`zlib.rs`, `Decoder::read`: the next
    // call sees `inner.eof()` and returns Ok(0) before reading the trailer), which for a
    // small object is always. What it serves is reported, not asserted.
    let len = fs::metadata(&object).unwrap().len();
    for (case, at) in [("object-body", 12isize), ("object-trailer", -1)] {
        assert!(at.unsigned_abs() < usize::try_from(len).unwrap());
        let (copy, url) = tampered(&f, case, |c| flip_byte(&c.join(&rel), at));
        let ours = gah_publish::verify(&copy, NAME, &master).unwrap();
        assert!(matches!(ours.read(path), Err(gah_publish::VerifyError::ObjectHash { .. })), "{case}");
        assert!(ours.check_all().is_err(), "{case}");
        if case == "object-body" {
            // One crate open (~48 s) is enough to show the gap.
            let repo = open(&url, &f.scratch.join(format!("cache-{case}"))).expect("the letters are intact");
            match read_all(&repo, path) {
                Err(e) => eprintln!("{case}: the cvmfs crate refuses it ({e:?})"),
                Ok(bytes) if bytes == original => eprintln!("{case}: the cvmfs crate serves the original bytes"),
                Ok(bytes) => eprintln!("{case}: the cvmfs crate serves altered bytes: {:?}", String::from_utf8_lossy(&bytes)),
            }
        }
    }
}

#[test]
fn manifest_tampering_is_refused() {
    let f = published();
    let master = gah_publish::keys::master_pub_path(&f.keys, NAME);
    let manifest_len = fs::read(f.repo.join(".cvmfspublished")).unwrap().len();
    // A byte of the signed lines (the second hex digit of the root catalog's hash, on the `C` line), then one of the signature.
    for (case, at) in [("manifest-text", 2isize), ("manifest-signature", -7)] {
        assert!(at.unsigned_abs() < manifest_len);
        let (copy, url) = tampered(&f, case, |c| flip_byte(&c.join(".cvmfspublished"), at));
        let crate_says = open(&url, &f.scratch.join(format!("cache-{case}")));
        assert!(crate_says.is_err(), "{case}: the cvmfs crate opened it");
        let ours = gah_publish::verify(&copy, NAME, &master);
        assert!(
            matches!(ours, Err(gah_publish::VerifyError::Checksum("manifest") | gah_publish::VerifyError::Signature("manifest"))),
            "{case}: {:?}",
            ours.err()
        );
    }
}

#[test]
fn whitelist_tampering_is_refused() {
    let f = published();
    let master = gah_publish::keys::master_pub_path(&f.keys, NAME);

    // An expired whitelist, properly signed by the master key.
    let (keys, _) = gah_publish::keys::load_or_generate(&f.keys, NAME).unwrap();
    let now = 1_700_000_000;
    let text =
        gah_publish::signed::whitelist_text(now - 40 * 86_400, now - 10 * 86_400, NAME, &gah_publish::signed::fingerprint(&keys.cert_der));
    let expired = gah_publish::signed::sign_whitelist(&text, &keys.master).unwrap();
    let (copy, url) = tampered(&f, "expired", |c| fs::write(c.join(".cvmfswhitelist"), &expired).unwrap());
    let err = open(&url, &f.scratch.join("cache-expired")).expect_err("the cvmfs crate accepted an expired whitelist");
    assert!(format!("{err:?}").contains("expired"), "{err:?}");
    assert!(matches!(gah_publish::verify(&copy, NAME, &master), Err(gah_publish::VerifyError::Expired(_))));

    // A whitelist for another repository (a flipped byte in the N line).
    let wl = fs::read(f.repo.join(".cvmfswhitelist")).unwrap();
    let n_line = wl.windows(2).position(|w| w == b"\nN").unwrap() + 3;
    let (copy, url) = tampered(&f, "name", |c| flip_byte(&c.join(".cvmfswhitelist"), n_line.try_into().unwrap()));
    assert!(open(&url, &f.scratch.join("cache-name")).is_err(), "the cvmfs crate accepted a whitelist for another name");
    assert!(gah_publish::verify(&copy, NAME, &master).is_err());

    // A flipped byte in the certificate's fingerprint, then in the master key's signature.
    // Our reader refuses both. The cvmfs crate does not look at either (its
    // `Repository::validate_whitelist` parses the whitelist with `Whitelist::parse` and
    // checks only the name and the expiry: no checksum, no signature by the master key, no
    // fingerprint of the manifest's certificate), so they are not asserted of it.
    let fp_line = wl.windows(2).position(|w| w == b"\nN").unwrap() + 1 + NAME.len() + 3;
    for (case, at) in [("fingerprint", isize::try_from(fp_line).unwrap()), ("whitelist-signature", -9)] {
        let (copy, url) = tampered(&f, case, |c| flip_byte(&c.join(".cvmfswhitelist"), at));
        let ours = gah_publish::verify(&copy, NAME, &master);
        assert!(
            matches!(ours, Err(gah_publish::VerifyError::Checksum("whitelist") | gah_publish::VerifyError::Signature("whitelist"))),
            "{case}: {:?}",
            ours.err()
        );
        // One crate open (~48 s) is enough to show the gap: both cases take the same path.
        if case == "whitelist-signature" && open(&url, &f.scratch.join(format!("cache-{case}"))).is_ok() {
            eprintln!("{case}: the cvmfs crate accepts it (it does not verify whitelists)");
        }
    }
    // And a whitelist signed by another master key.
    let other = tempfile::tempdir().unwrap();
    let (other_keys, _) = gah_publish::keys::load_or_generate(other.path(), NAME).unwrap();
    let text = gah_publish::signed::whitelist_text(now, now + 3650 * 86_400, NAME, &gah_publish::signed::fingerprint(&keys.cert_der));
    let forged = gah_publish::signed::sign_whitelist(&text, &other_keys.master).unwrap();
    let (copy, _) = tampered(&f, "forged", |c| fs::write(c.join(".cvmfswhitelist"), &forged).unwrap());
    assert!(matches!(gah_publish::verify(&copy, NAME, &master), Err(gah_publish::VerifyError::Signature("whitelist"))));
}

#[test]
fn republishing_writes_only_what_changed_and_keeps_the_old_revision() {
    let f = published();
    let before = common::objects(&f.repo);
    let path = "/app-misc/hello/hello-1.0.ebuild";
    let old = fs::read(f.src.join(&path[1..])).unwrap();
    fs::write(f.src.join(&path[1..]), b"EAPI=8\nDESCRIPTION=\"hello, again\"\n").unwrap();
    let p = gah_publish::publish(&f.src, &f.repo, NAME, &f.keys).unwrap();
    assert_eq!(p.revision, 2);
    assert!(!p.keys_generated);

    // New: the file's object, app-misc's catalog, the root catalog, the history. Kept:
    // dev-lang's, dev-lang/big's and scripts' catalogs, every other file, the certificate.
    let new: Vec<String> = common::objects(&f.repo).difference(&before).cloned().collect();
    assert_eq!(new.len(), 4, "{new:?}");
    assert_eq!(p.objects_written, 4);
    let suffixes: Vec<char> = {
        // "XX/" and 38 hex digits, then the suffix letter if any.
        let mut s: Vec<char> = new.iter().map(|o| if o.len() == 41 { '-' } else { o.chars().last().unwrap() }).collect();
        s.sort_unstable();
        s
    };
    assert_eq!(suffixes, ['-', 'C', 'C', 'H'], "{new:?}");
    assert_eq!((p.catalogs_written, p.catalogs_kept), (2, 3));

    // Our reader: the new revision now, the old one through the history.
    let master = gah_publish::keys::master_pub_path(&f.keys, NAME);
    let ours = gah_publish::verify(&f.repo, NAME, &master).unwrap();
    assert_eq!(ours.read(path).unwrap(), b"EAPI=8\nDESCRIPTION=\"hello, again\"\n");
    assert_eq!(ours.revisions().unwrap().iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(ours.at_revision(1).unwrap().read(path).unwrap(), old);
    ours.at_revision(1).unwrap().check_all().unwrap();

    // The cvmfs crate: the same, through its history support. One `Repository` per
    // revision: its path-to-catalog cache (`repository.rs`, `catalog_hash_cache`) is not
    // emptied by `set_current_tag`, so a path looked up before the switch would still be
    // read from the newer revision's catalog. Opened side by side (each open waits ~48 s).
    let url = common::serve(&f.repo);
    std::thread::scope(|s| {
        let now = s.spawn(|| {
            let repo = open(&url, &f.scratch.join("cache-now")).unwrap();
            assert_eq!(repo.get_revision_number().unwrap(), 2);
            assert_eq!(read_all(&repo, path).unwrap(), b"EAPI=8\nDESCRIPTION=\"hello, again\"\n");
        });
        let then = s.spawn(|| {
            let mut repo = open(&url, &f.scratch.join("cache-then")).unwrap();
            repo.set_current_tag(1).unwrap();
            assert_eq!(repo.get_revision_number().unwrap(), 1);
            assert_eq!(read_all(&repo, path).unwrap(), old);
            assert_eq!(read_all(&repo, "/dev-lang/big/blob.bin").unwrap().len(), 3 << 20);
        });
        now.join().unwrap();
        then.join().unwrap();
    });
}
