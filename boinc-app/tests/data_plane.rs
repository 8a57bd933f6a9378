//! `gah-app --data`: a job's inputs read from a published CernVM-FS repository served over
//! HTTP (issue 11), pinned to the revision the job names, written as plain folders.

use std::fs;
use std::path::Path;

use gah_app::data_plane::{Access, DataPlaneError, Fetched, Repository};
use gah_core::data_ref::{DataRef, DATA_REF_FORMAT};

const NAME: &str = "gentoo.gah";

/// Serves `root` as a plain web server would (GET of files, 404 otherwise).
fn serve(root: &Path) -> String {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}", server.server_addr().to_ip().unwrap());
    let root = root.to_owned();
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let rel = request.url().trim_start_matches('/').to_owned();
            let file = (!rel.contains("..")).then(|| root.join(&rel)).filter(|p| p.is_file());
            let _ = match file.and_then(|p| fs::read(p).ok()) {
                Some(body) => request.respond(tiny_http::Response::from_data(body)),
                None => request.respond(tiny_http::Response::empty(404)),
            };
        }
    });
    url
}

/// What one task does to read its inputs: the repository opened, then read.
fn fetch(data: &DataRef, access: &Access<'_>, into: &Path) -> Result<Fetched, DataPlaneError> {
    Repository::open(data, access)?.fetch(into)
}

/// What one task does to have its guest root.
fn base(data: &DataRef, access: &Access<'_>, dir: &Path) -> Result<Option<std::path::PathBuf>, DataPlaneError> {
    Repository::open(data, access)?.base(dir)
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

#[test]
fn the_inputs_come_from_the_revision_the_job_names() {
    let dir = tempfile::tempdir().unwrap();
    let (src, stratum, keys) = (dir.path().join("src"), dir.path().join("stratum"), dir.path().join("keys"));
    write(&src, "repos/gah/profiles/repo_name", b"gah\n");
    write(&src, "repos/gah/app-misc/x/x-1.ebuild", b"EAPI=8\n# revision 1\n");
    std::os::unix::fs::symlink("/etc/passwd", src.join("repos/gah/app-misc/x/link")).unwrap();
    write(&src, "distfiles/a-1.tar.gz", b"A");
    write(&src, "distfiles/b-1.tar.gz", b"B");
    write(&src, "binpkgs/Packages", b"PACKAGES: 1\n");
    write(&src, "binpkgs/app-misc/y/y-1-1.gpkg.tar", b"a package");
    let first = gah_publish::publish(&src, &stratum.join(NAME), NAME, &keys).unwrap();
    write(&src, "repos/gah/app-misc/x/x-1.ebuild", b"EAPI=8\n# revision 2\n");
    gah_publish::publish(&src, &stratum.join(NAME), NAME, &keys).unwrap();
    let url = format!("{}/{NAME}", serve(&stratum));

    let data = DataRef {
        format: DATA_REF_FORMAT,
        name: NAME.into(),
        url,
        revision: 1,
        root_catalog: first.root_catalog_hash.clone(),
        repo: "/repos/gah".into(),
        distfiles: vec!["/distfiles/a-1.tar.gz".into()],
        binpkgs: Some("/binpkgs".into()),
        base: None,
        disk: None,
    };
    let key = gah_publish::keys::master_pub_path(&keys, NAME);
    let cache = dir.path().join("cache");
    let access = Access { master_key: &key, cache: &cache, cache_quota: 1 << 30, proxy: None };
    let got = fetch(&data, &access, &dir.path().join("job1")).unwrap();
    // Revision 1's ebuild, though the repository moved on; the link left out; only the
    // distfile the job names.
    assert_eq!(fs::read(got.repo.join("app-misc/x/x-1.ebuild")).unwrap(), b"EAPI=8\n# revision 1\n");
    assert!(fs::symlink_metadata(got.repo.join("app-misc/x/link")).is_err());
    let names: Vec<_> = fs::read_dir(&got.distfiles).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["a-1.tar.gz"]);
    assert_eq!(fs::read(got.distfiles.join("a-1.tar.gz")).unwrap(), b"A");
    // The project's binary packages, for the guest's --usepkg.
    let binpkgs = got.binpkgs.expect("the binary packages the job names");
    assert_eq!(fs::read(binpkgs.join("app-misc/y/y-1-1.gpkg.tar")).unwrap(), b"a package");
    assert_eq!(fs::read(binpkgs.join("Packages")).unwrap(), b"PACKAGES: 1\n");

    // No base named and none published: none (the app version's own root is used).
    assert!(base(&data, &access, &dir.path().join("bases")).unwrap().is_none());
    // A job that names a root catalog the history does not have for that revision.
    let forged = DataRef { root_catalog: "00".repeat(20), ..data.clone() };
    assert!(matches!(fetch(&forged, &access, &dir.path().join("job2")), Err(DataPlaneError::Revision { .. })));
    // A distfile the repository lacks: the error names it.
    let missing = DataRef { distfiles: vec!["/distfiles/gone-1.tar.gz".into()], ..data.clone() };
    let e = fetch(&missing, &access, &dir.path().join("job3")).unwrap_err();
    assert!(format!("{e}").contains("/distfiles/gone-1.tar.gz"), "{e}");
    // Signed by another master key: refused.
    let other = dir.path().join("other-keys");
    gah_publish::keys::load_or_generate(&other, NAME).unwrap();
    let other_key = gah_publish::keys::master_pub_path(&other, NAME);
    let wrong = Access { master_key: &other_key, ..access.clone() };
    assert!(fetch(&data, &wrong, &dir.path().join("job4")).is_err());
}

/// The sandbox's guest root from the repository (issue 11, item 3): one tree per host and
/// base content, with links and modes (never set-id), not read again when only the rest of
/// the repository changed.
#[test]
fn the_guest_root_is_read_once_per_base_content() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (src, stratum, keys) = (dir.path().join("src"), dir.path().join("stratum"), dir.path().join("keys"));
    write(&src, "repos/gah/profiles/repo_name", b"gah\n");
    write(&src, "base/usr/bin/sh", b"#!a shell");
    fs::set_permissions(src.join("base/usr/bin/sh"), fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink("usr/bin", src.join("base/bin")).unwrap();
    fs::create_dir_all(src.join("base/proc")).unwrap();
    fs::set_permissions(src.join("base/proc"), fs::Permissions::from_mode(0o555)).unwrap();
    let first = gah_publish::publish(&src, &stratum.join(NAME), NAME, &keys).unwrap();
    let url = format!("{}/{NAME}", serve(&stratum));
    let key = gah_publish::keys::master_pub_path(&keys, NAME);
    let (cache, bases) = (dir.path().join("cache"), dir.path().join("bases"));
    let access = Access { master_key: &key, cache: &cache, cache_quota: 1 << 30, proxy: None };
    let data = DataRef::new(NAME, &url, first.revision, &first.root_catalog_hash, "gah", [], false).unwrap();
    // A workunit made before the base was published names none: it gets the current one.
    let unnamed = base(&data, &access, &bases).unwrap().expect("the current revision's base");
    let data = data.with_base();

    let root = base(&data, &access, &bases).unwrap().expect("the base");
    assert_eq!(root, unnamed, "the same content, the same tree");
    assert_eq!(fs::read(root.join("bin/sh")).unwrap(), b"#!a shell", "through the kept link");
    assert_eq!(fs::read_link(root.join("bin")).unwrap(), Path::new("usr/bin"));
    assert_eq!(fs::metadata(root.join("usr/bin/sh")).unwrap().permissions().mode() & 0o7777, 0o755, "never set-id");
    assert_eq!(fs::metadata(root.join("proc")).unwrap().permissions().mode() & 0o777, 0o755, "its mode, owner-writable");

    // Only the base's own folder passes for a root: not a folder below it (whose catalog is
    // the base's), not a link (which would point into the host once written).
    for not_a_root in ["/base/usr", "/base/bin", "/base/usr/bin/sh"] {
        let named = DataRef { base: Some(not_a_root.into()), ..data.clone() };
        let e = base(&named, &access, &bases).unwrap_err();
        assert!(matches!(e, DataPlaneError::NotABase { .. }), "{not_a_root}: {}", gah_util::error_chain(&e));
    }

    // The tree moves on, the base does not: the same tree, whatever the revision.
    write(&src, "repos/gah/app-misc/x/x-1.ebuild", b"EAPI=8\n");
    let second = gah_publish::publish(&src, &stratum.join(NAME), NAME, &keys).unwrap();
    let data2 = DataRef::new(NAME, &url, second.revision, &second.root_catalog_hash, "gah", [], false).unwrap().with_base();
    assert_eq!(base(&data2, &access, &bases).unwrap().unwrap(), root);
    // A new base is a new tree beside it.
    write(&src, "base/etc/os-release", b"ID=gah\n");
    let third = gah_publish::publish(&src, &stratum.join(NAME), NAME, &keys).unwrap();
    let data3 = DataRef::new(NAME, &url, third.revision, &third.root_catalog_hash, "gah", [], false).unwrap().with_base();
    let new_root = base(&data3, &access, &bases).unwrap().unwrap();
    assert_ne!(new_root, root);
    assert_eq!(fs::read(new_root.join("etc/os-release")).unwrap(), b"ID=gah\n");

    // A tampered object of a base not yet on this host: refused, naming the base, no tree.
    write(&src, "base/etc/motd", b"hello\n");
    let fourth = gah_publish::publish(&src, &stratum.join(NAME), NAME, &keys).unwrap();
    let reader = gah_publish::verify(&stratum.join(NAME), NAME, &key).unwrap();
    let gah_publish::Kind::File { hash } = reader.lookup("/base/etc/motd").unwrap().kind else { panic!("a file") };
    let object = gah_publish::objects::object_path(&stratum.join(NAME), &hash, gah_publish::objects::Suffix::None);
    let mut bytes = fs::read(&object).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&object, bytes).unwrap();
    let data4 = DataRef::new(NAME, &url, fourth.revision, &fourth.root_catalog_hash, "gah", [], false).unwrap().with_base();
    let e = base(&data4, &access, &bases).unwrap_err();
    assert!(gah_util::error_chain(&e).contains("/base"), "{}", gah_util::error_chain(&e));
    assert!(!e.is_unreachable(), "refused, not unreachable: a task ends as infra_error");
    let trees: Vec<_> =
        fs::read_dir(&bases).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| n.ends_with(".d")).collect();
    assert_eq!(trees.len(), 2, "no half tree left: {trees:?}");
}

/// A server that gives no answer, with nothing in the host's cache: said as unreachable (a
/// task then waits and tries again later rather than spend its result).
#[test]
fn a_server_that_gives_no_answer_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let keys = dir.path().join("keys");
    gah_publish::keys::load_or_generate(&keys, NAME).unwrap();
    let key = gah_publish::keys::master_pub_path(&keys, NAME);
    let cache = dir.path().join("cache");
    let access = Access { master_key: &key, cache: &cache, cache_quota: 1 << 30, proxy: None };
    let url = format!("http://127.0.0.1:{port}/{NAME}");
    let data = DataRef::new(NAME, &url, 1, &"0".repeat(40), "gah", [], false).unwrap().with_base();
    let e = base(&data, &access, &dir.path().join("bases")).unwrap_err();
    assert!(e.is_unreachable(), "{}", gah_util::error_chain(&e));
    assert!(gah_util::error_chain(&e).contains("cannot be reached"), "{}", gah_util::error_chain(&e));
}

/// The vm's root disk (issue 11, item 3): published on its own at `/base-disk/rootfs.ext4`
/// (a file mount, stored in chunks), read once per host and disk content into one file,
/// sparse where the image is, whatever else the repository's revisions change; a new image
/// is a new file beside it, and a tampered chunk is refused, naming the disk.
#[test]
fn the_root_disk_is_read_once_per_disk_content() {
    use gah_core::data_ref::DISK_AT;
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let (src, stratum, keys) = (dir.path().join("src"), dir.path().join("stratum"), dir.path().join("keys"));
    write(&src, "repos/gah/profiles/repo_name", b"gah\n");
    // A disk image as mkfs leaves one: a few written blocks in a long run of zeros.
    let image = dir.path().join("rootfs.ext4");
    let mut disk = vec![0u8; 40 << 20];
    disk[4096..4100].copy_from_slice(b"ext4");
    disk[(30 << 20)..(30 << 20) + 5].copy_from_slice(b"files");
    fs::write(&image, &disk).unwrap();
    let publish = || {
        let mounts =
            [gah_publish::Mount { at: "/repos/gah", from: &src.join("repos/gah") }, gah_publish::Mount { at: DISK_AT, from: &image }];
        gah_publish::publish_mounts(&mounts, &stratum.join(NAME), NAME, &keys).unwrap()
    };
    let first = publish();
    let url = format!("{}/{NAME}", serve(&stratum));
    let key = gah_publish::keys::master_pub_path(&keys, NAME);
    let (cache, bases) = (dir.path().join("cache"), dir.path().join("bases"));
    let access = Access { master_key: &key, cache: &cache, cache_quota: 1 << 30, proxy: None };
    let disk_of = |data: &DataRef| Repository::open(data, &access)?.disk(&bases);
    let data = DataRef::new(NAME, &url, first.revision, &first.root_catalog_hash, "gah", [], false).unwrap();
    // A workunit made before the disk was published names none: it gets the current one.
    let unnamed = disk_of(&data).unwrap().expect("the current revision's disk");
    let data = data.with_disk();
    let file = disk_of(&data).unwrap().expect("the disk");
    assert_eq!(file, unnamed, "the same content, the same file");
    assert!(fs::read(&file).unwrap() == disk, "byte for byte");
    let meta = fs::metadata(&file).unwrap();
    assert!(meta.blocks() * 512 < 4 << 20, "sparse: {} bytes on disk for 40 MiB", meta.blocks() * 512);

    // The tree moves on, the disk does not: the same file, nothing downloaded for it again.
    write(&src, "repos/gah/app-misc/x/x-1.ebuild", b"EAPI=8\n");
    let second = publish();
    let data2 = DataRef::new(NAME, &url, second.revision, &second.root_catalog_hash, "gah", [], false).unwrap().with_disk();
    assert_eq!(disk_of(&data2).unwrap().unwrap(), file);

    // A copy whose disk was removed by hand is said as such, naming the folder to remove
    // (without its stamp the next task's process reads the disk again; this process keeps
    // its lease on the folder, so it is the last thing this test does with it).
    let kept = fs::read(&file).unwrap();
    fs::remove_file(&file).unwrap();
    let e = disk_of(&data2).unwrap_err();
    assert!(matches!(e, DataPlaneError::DiskGone { .. }), "{}", gah_util::error_chain(&e));
    let copy = file.parent().unwrap().to_path_buf();
    assert!(gah_util::error_chain(&e).contains(&copy.display().to_string()), "{}", gah_util::error_chain(&e));
    fs::write(&file, kept).unwrap();

    // A folder is no disk.
    let named = DataRef { disk: Some("/repos/gah".into()), ..data2.clone() };
    assert!(matches!(disk_of(&named).unwrap_err(), DataPlaneError::NotADisk { .. }));

    // A rebuilt image (one block changed) is a new file beside the old.
    disk[(20 << 20) + 7] = b'!';
    fs::write(&image, &disk).unwrap();
    let third = publish();
    let data3 = DataRef::new(NAME, &url, third.revision, &third.root_catalog_hash, "gah", [], false).unwrap().with_disk();
    let new_file = disk_of(&data3).unwrap().unwrap();
    assert_ne!(new_file, file);
    assert!(fs::read(&new_file).unwrap() == disk);

    // A tampered chunk of a disk not yet on this host: refused, naming the disk, no file.
    disk[(35 << 20) + 1] = b'?';
    fs::write(&image, &disk).unwrap();
    let fourth = publish();
    let reader = gah_publish::verify(&stratum.join(NAME), NAME, &key).unwrap();
    let entry = reader.lookup(DISK_AT).unwrap();
    let last = reader.chunks(&entry).unwrap().pop().unwrap();
    let object = gah_publish::objects::object_path(&stratum.join(NAME), &last.hash, gah_publish::objects::Suffix::Partial);
    let mut bytes = fs::read(&object).unwrap();
    let end = bytes.len() - 1;
    bytes[end] ^= 1;
    fs::write(&object, bytes).unwrap();
    let data4 = DataRef::new(NAME, &url, fourth.revision, &fourth.root_catalog_hash, "gah", [], false).unwrap().with_disk();
    let e = disk_of(&data4).unwrap_err();
    assert!(gah_util::error_chain(&e).contains(DISK_AT), "{}", gah_util::error_chain(&e));
    assert!(!e.is_unreachable(), "refused, not unreachable: a task ends as infra_error");
    let files: Vec<_> =
        fs::read_dir(&bases).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| n.ends_with(".d")).collect();
    assert_eq!(files.len(), 2, "no half file left: {files:?}");
}
