//! `gah-app --data`: a job's inputs read from a published CernVM-FS repository served over
//! HTTP (issue 11), pinned to the revision the job names, written as plain folders.

use std::fs;
use std::path::Path;

use gah_app::data_plane::{fetch, Access, DataPlaneError};
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
