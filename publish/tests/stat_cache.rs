//! A republication reads only the source files that changed since the last one, by their
//! stat (`<keys>/<name>.stat-cache`), and never trusts a stat that could hide a change.

use std::fs;
use std::time::Duration;

const NAME: &str = "test.gah";

#[test]
fn unchanged_files_are_not_read_again_and_changed_ones_are() {
    let dir = tempfile::tempdir().unwrap();
    let (src, out, keys) = (dir.path().join("src"), dir.path().join("out"), dir.path().join("keys"));
    fs::create_dir_all(src.join("a")).unwrap();
    for i in 0..5 {
        fs::write(src.join(format!("a/f{i}")), format!("file {i}")).unwrap();
    }
    // Just written: too fresh to be trusted by their stat, so read again next time.
    let first = gah_publish::publish(&src, &out, NAME, &keys).unwrap();
    assert_eq!(first.files_read, 5);
    assert!(!fs::read_dir(&out).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("stat")), "not in the served folder");
    assert!(keys.join(format!("{NAME}.stat-cache")).is_file());
    std::thread::sleep(gah_publish::objects::STAT_SETTLED + Duration::from_millis(100));
    assert_eq!(gah_publish::publish(&src, &out, NAME, &keys).unwrap().files_read, 5, "settled now: read once more, and remembered");
    let third = gah_publish::publish(&src, &out, NAME, &keys).unwrap();
    assert_eq!(third.files_read, 0, "nothing changed");

    // Same size, new bytes: the stat differs (mtime, ctime), so it is read; the others not.
    fs::write(src.join("a/f2"), "FILE 2").unwrap();
    let fourth = gah_publish::publish(&src, &out, NAME, &keys).unwrap();
    assert_eq!(fourth.files_read, 1);
    let master = gah_publish::keys::master_pub_path(&keys, NAME);
    let reader = gah_publish::verify(&out, NAME, &master).unwrap();
    assert_eq!(reader.read("/a/f2").unwrap(), b"FILE 2");
    assert_eq!(reader.read("/a/f3").unwrap(), b"file 3");

    // A damaged stat cache costs a full read, not a wrong object.
    fs::write(keys.join(format!("{NAME}.stat-cache")), "garbage\n1 2 3\n").unwrap();
    let fifth = gah_publish::publish(&src, &out, NAME, &keys).unwrap();
    assert_eq!(fifth.files_read, 5);
    // An object removed from the store is written again, not assumed.
    let gah_publish::Kind::File { hash } = reader.lookup("/a/f3").unwrap().kind else { panic!("a file") };
    fs::remove_file(gah_publish::objects::object_path(&out, &hash, gah_publish::objects::Suffix::None)).unwrap();
    let sixth = gah_publish::publish(&src, &out, NAME, &keys).unwrap();
    assert!(sixth.files_read >= 1);
    let reader = gah_publish::verify(&out, NAME, &master).unwrap();
    assert_eq!(reader.read("/a/f3").unwrap(), b"file 3");
}
