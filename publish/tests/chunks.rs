//! Big files are stored in chunks, as `cvmfs_server` stores them: each chunk an object of
//! its own (suffix `P`), listed in the catalog's `chunks` table; the reader checks every
//! chunk and writes a file out one chunk at a time; an image that changed in one place
//! shares its other chunks with the last publication. (The `cvmfs` crate reads chunked
//! files back in `cvmfs_client.rs`, through the shared fixture's `disk.img`.)

mod common;

use std::fs;
use std::time::Duration;

use common::{disk_image, flip_byte, NAME};
use gah_publish::objects::{object_path, Suffix, CHUNK_SIZE};
use gah_publish::{Kind, VerifyError};

fn partial_objects(repo: &std::path::Path) -> usize {
    common::objects(repo).iter().filter(|o| o.ends_with('P')).count()
}

#[test]
fn a_big_file_is_stored_read_and_written_out_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (src, out, keys) = (dir.path().join("src"), dir.path().join("out"), dir.path().join("keys"));
    fs::create_dir_all(src.join("img")).unwrap();
    fs::write(src.join("img/disk.img"), disk_image(0)).unwrap();
    fs::write(src.join("img/exactly-one-chunk"), vec![7u8; usize::try_from(CHUNK_SIZE).unwrap()]).unwrap();
    // Mostly unused, as a disk image is: zeros, a few bytes, zeros to the end.
    let mut sparse = vec![0u8; 20 << 20];
    sparse[(9 << 20) + 5..(9 << 20) + 9].copy_from_slice(b"data");
    fs::write(src.join("img/sparse.img"), &sparse).unwrap();
    gah_publish::publish(&src, &out, NAME, &keys).unwrap();
    let master = gah_publish::keys::master_pub_path(&keys, NAME);
    let reader = gah_publish::verify(&out, NAME, &master).unwrap();

    let entry = reader.lookup("/img/disk.img").unwrap();
    assert_eq!(entry.kind, Kind::Chunked);
    let chunks = reader.chunks(&entry).unwrap();
    let spans: Vec<(u64, u64)> = chunks.iter().map(|c| (c.offset, c.size)).collect();
    assert_eq!(spans, [(0, CHUNK_SIZE), (CHUNK_SIZE, CHUNK_SIZE), (2 * CHUNK_SIZE, 12_345)]);
    for c in &chunks {
        assert!(object_path(&out, &c.hash, Suffix::Partial).is_file());
    }
    assert_eq!(reader.read("/img/disk.img").unwrap(), disk_image(0));
    // A file of exactly one chunk's size is stored whole.
    assert!(matches!(reader.lookup("/img/exactly-one-chunk").unwrap().kind, Kind::File { .. }));

    let written = dir.path().join("written");
    let done = gah_publish::fetch::materialise(&reader, "/img", &written, gah_publish::fetch::Links::Keep).unwrap();
    assert_eq!(done.bytes, 3 * CHUNK_SIZE + 12_345 + (20 << 20));
    assert!(fs::read(written.join("disk.img")).unwrap() == disk_image(0));
    // Runs of zeros are written as holes: the sparse image takes a block or so of disk.
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(written.join("sparse.img")).unwrap();
    assert_eq!(meta.len(), 20 << 20);
    assert!(meta.blocks() * 512 <= 1 << 20, "{} bytes on disk", meta.blocks() * 512);
    assert!(fs::read(written.join("sparse.img")).unwrap() == sparse);

    // A damaged chunk is refused, named.
    flip_byte(&object_path(&out, &chunks[1].hash, Suffix::Partial), 100);
    let e = gah_publish::verify(&out, NAME, &master).unwrap().read("/img/disk.img").unwrap_err();
    assert!(matches!(e, VerifyError::ObjectHash { ref object, .. } if object.ends_with('P')), "{e}");
}

#[test]
fn an_image_changed_in_one_place_shares_its_other_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (src, out, keys) = (dir.path().join("src"), dir.path().join("out"), dir.path().join("keys"));
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("disk.img"), disk_image(0)).unwrap();
    gah_publish::publish(&src, &out, NAME, &keys).unwrap();
    assert_eq!(partial_objects(&out), 3);

    // Settled, unchanged: the stat cache knows its chunks, nothing is read.
    std::thread::sleep(gah_publish::objects::STAT_SETTLED + Duration::from_millis(100));
    gah_publish::publish(&src, &out, NAME, &keys).unwrap();
    assert_eq!(gah_publish::publish(&src, &out, NAME, &keys).unwrap().files_read, 0);
    // A line written before chunking (one whole object for a big file) is not trusted: the
    // file is read and chunked again.
    let cache = keys.join(format!("{NAME}.stat-cache"));
    let line = fs::read_to_string(&cache).unwrap();
    let f: Vec<&str> = line.trim_end().split(' ').collect();
    assert_eq!((f[5], f.len()), ("-", 7 + 3), "{line}");
    fs::write(&cache, format!("{} {} {}\n", f[..5].join(" "), f[7], f[6])).unwrap();
    assert_eq!(gah_publish::publish(&src, &out, NAME, &keys).unwrap().files_read, 1);
    assert_eq!(partial_objects(&out), 3);

    // The first blocks rewritten: one new chunk, the other two shared.
    fs::write(src.join("disk.img"), disk_image(3)).unwrap();
    gah_publish::publish(&src, &out, NAME, &keys).unwrap();
    assert_eq!(partial_objects(&out), 4);
    let master = gah_publish::keys::master_pub_path(&keys, NAME);
    let reader = gah_publish::verify(&out, NAME, &master).unwrap();
    assert!(reader.read("/disk.img").unwrap() == disk_image(3));
    // The old revision still reads as it was.
    let old = reader.at_revision(1).unwrap();
    assert!(old.read("/disk.img").unwrap() == disk_image(0));

    // A chunk gone from the store is written again, not assumed from the stat cache.
    let entry = reader.lookup("/disk.img").unwrap();
    let first = reader.chunks(&entry).unwrap()[0].hash;
    fs::remove_file(object_path(&out, &first, Suffix::Partial)).unwrap();
    std::thread::sleep(gah_publish::objects::STAT_SETTLED + Duration::from_millis(100));
    assert_eq!(gah_publish::publish(&src, &out, NAME, &keys).unwrap().files_read, 1);
    assert!(object_path(&out, &first, Suffix::Partial).is_file());
}

/// A disk image is published on its own, as a file mounted at a path (the vm's root disk at
/// `/base-disk/rootfs.ext4`), beside folders; only a folder can be the root.
#[test]
fn a_file_can_be_mounted_at_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let (src, out, keys) = (dir.path().join("src"), dir.path().join("out"), dir.path().join("keys"));
    fs::create_dir_all(src.join("tree")).unwrap();
    fs::write(src.join("tree/a"), b"a").unwrap();
    fs::write(src.join("disk.img"), disk_image(0)).unwrap();
    let (tree, disk) = (src.join("tree"), src.join("disk.img"));
    let mounts = [gah_publish::Mount { at: "/repos/t", from: &tree }, gah_publish::Mount { at: "/base-disk/rootfs.ext4", from: &disk }];
    gah_publish::publish_mounts(&mounts, &out, NAME, &keys).unwrap();
    let reader = gah_publish::verify(&out, NAME, &gah_publish::keys::master_pub_path(&keys, NAME)).unwrap();
    // A top-level folder: a nested catalog of its own, with its marker.
    assert_eq!(reader.list("/base-disk").unwrap(), [".cvmfscatalog", "rootfs.ext4"]);
    let entry = reader.lookup("/base-disk/rootfs.ext4").unwrap();
    assert_eq!(entry.kind, Kind::Chunked);
    assert!(reader.read("/base-disk/rootfs.ext4").unwrap() == disk_image(0));
    assert_eq!(reader.read("/repos/t/a").unwrap(), b"a");
    // Its content id: the same bytes published again give the same id; a change, another.
    let id = reader.content_id(&entry).unwrap();
    gah_publish::publish_mounts(&mounts, &out, NAME, &keys).unwrap();
    let again = gah_publish::verify(&out, NAME, &gah_publish::keys::master_pub_path(&keys, NAME)).unwrap();
    assert_eq!(again.content_id(&again.lookup("/base-disk/rootfs.ext4").unwrap()).unwrap(), id);
    fs::write(&disk, disk_image(1)).unwrap();
    gah_publish::publish_mounts(&mounts, &out, NAME, &keys).unwrap();
    let changed = gah_publish::verify(&out, NAME, &gah_publish::keys::master_pub_path(&keys, NAME)).unwrap();
    assert_ne!(changed.content_id(&changed.lookup("/base-disk/rootfs.ext4").unwrap()).unwrap(), id);

    let e = gah_publish::publish_mounts(&[gah_publish::Mount { at: "", from: &disk }], &dir.path().join("out2"), NAME, &keys).unwrap_err();
    assert!(e.to_string().contains("no folder"), "{e}");
}
