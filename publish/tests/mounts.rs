//! Several folders published as one tree (`gah_publish::publish_mounts`): what `gah run` and
//! `gah deploy` publish (the ebuild repository at `/repos/<name>`, the distfiles at
//! `/distfiles`), read back through the verifying reader; bad mount points refused.

use std::fs;

use gah_publish::{Kind, Mount};

const NAME: &str = "gentoo.gah";

#[test]
fn folders_appear_at_their_mount_points_and_a_republication_keeps_their_catalogs() {
    let dir = tempfile::tempdir().unwrap();
    let (overlay, distfiles, repo, keys) =
        (dir.path().join("overlay"), dir.path().join("distfiles"), dir.path().join("repo"), dir.path().join("keys"));
    fs::create_dir_all(overlay.join("app-arch/bzip2")).unwrap();
    fs::write(overlay.join("app-arch/bzip2/bzip2-1.0.8.ebuild"), b"EAPI=8\n").unwrap();
    fs::create_dir_all(&distfiles).unwrap();
    fs::write(distfiles.join("bzip2-1.0.8.tar.gz"), b"not really gzip").unwrap();
    let mounts = [Mount { at: "/repos/gah", from: &overlay }, Mount { at: "/distfiles", from: &distfiles }];
    let first = gah_publish::publish_mounts(&mounts, &repo, NAME, &keys).unwrap();
    let reader = gah_publish::verify(&repo, NAME, &gah_publish::keys::master_pub_path(&keys, NAME)).unwrap();
    assert_eq!(reader.read("/repos/gah/app-arch/bzip2/bzip2-1.0.8.ebuild").unwrap(), b"EAPI=8\n");
    assert_eq!(reader.read("/distfiles/bzip2-1.0.8.tar.gz").unwrap(), b"not really gzip");
    assert_eq!(reader.list("/").unwrap(), ["distfiles", "repos"]);
    assert!(matches!(reader.lookup("/repos").unwrap().kind, Kind::Dir));

    // Nothing changed: the next revision writes no object and the same root tree.
    let second = gah_publish::publish_mounts(&mounts, &repo, NAME, &keys).unwrap();
    assert_eq!(second.revision, first.revision + 1);
    // Only the root catalog and the history are new: the mounts' own catalogs are kept.
    assert_eq!((second.objects_written, second.catalogs_written), (2, 1), "{second:?}");
    assert!(second.catalogs_kept >= 1, "{second:?}");

    for bad in ["repos", "/repos/../etc", "/repos/./x"] {
        let e = gah_publish::publish_mounts(&[Mount { at: bad, from: &overlay }], &repo, NAME, &keys).unwrap_err();
        assert!(e.to_string().contains(bad), "{bad}: {e}");
    }
    let twice = [Mount { at: "/d", from: &distfiles }, Mount { at: "/d", from: &overlay }];
    assert!(gah_publish::publish_mounts(&twice, &repo, NAME, &keys).is_err());
}
