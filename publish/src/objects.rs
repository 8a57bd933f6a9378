//! The content-addressed object store under `data/`, as CernVM-FS lays it out: every object
//! is zlib-compressed and named by the SHA-1 of its *compressed* bytes, `data/XX/<rest>` plus
//! a suffix letter for what it is (`C` catalog, `H` history, `X` certificate, `P` a chunk of
//! a big file, none for file contents). An object that is already there is not written
//! again: that is what makes a republication incremental.
//!
//! A file of more than [`CHUNK_SIZE`] bytes is stored as chunks of that size (the last one
//! shorter), each an object of its own, as `cvmfs_server` stores big files: a reader
//! downloads, checks and holds one chunk at a time, and a disk image rebuilt with few
//! changes shares most of its chunks with the last one (fixed-size chunks stay aligned to
//! its blocks, where `cvmfs_server`'s content-defined cuts would serve a stream).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use flate2::write::ZlibEncoder;
use flate2::Compression;
use sha1::{Digest, Sha1};

use crate::PublishError;

/// A SHA-1 content hash (20 bytes), as the catalogs store it (a BLOB).
pub type Hash = [u8; 20];

/// What an object is, by the letter its name ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Suffix {
    /// File contents: no letter.
    None,
    /// A file catalog (SQLite).
    Catalog,
    /// The history database (SQLite).
    History,
    /// The certificate whose key signs the manifest.
    Certificate,
    /// One chunk of a big file (`kSuffixPartial`).
    Partial,
}

impl Suffix {
    pub fn letter(self) -> &'static str {
        match self {
            Suffix::None => "",
            Suffix::Catalog => "C",
            Suffix::History => "H",
            Suffix::Certificate => "X",
            Suffix::Partial => "P",
        }
    }
}

/// `data/XX/<rest><suffix>` below the repository folder.
pub fn object_path(repo: &Path, hash: &Hash, suffix: Suffix) -> PathBuf {
    repo.join(object_rel(hash, suffix))
}

/// `data/XX/<rest><suffix>`: an object's place relative to the repository (its folder, its
/// URL, a cache).
pub fn object_rel(hash: &Hash, suffix: Suffix) -> String {
    let hex = hex::encode(hash);
    format!("data/{}/{}{}", &hex[..2], &hex[2..], suffix.letter())
}

/// Files of more than this many bytes are stored in chunks of this size: within
/// `cvmfs_server`'s defaults (`CVMFS_MIN_CHUNK_SIZE` 4 MiB to `CVMFS_MAX_CHUNK_SIZE` 16 MiB,
/// average 8 MiB), and what a reader holds in memory at once.
pub const CHUNK_SIZE: u64 = 8 << 20;

/// The chunk sizes a reader accepts (the last chunk of a file may be shorter):
/// `cvmfs_server`'s most (`CVMFS_MAX_CHUNK_SIZE`'s default) and a quarter of its least, so
/// that a catalog's chunk list stays short and one chunk small whatever it says.
pub const MAX_CHUNK: u64 = 16 << 20;
pub const MIN_CHUNK: u64 = 1 << 20;

/// The (offset, size) of each chunk of a file of `size` bytes that is chunked
/// (`size > CHUNK_SIZE`).
pub fn chunk_spans(size: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..size.div_ceil(CHUNK_SIZE)).map(move |i| (i * CHUNK_SIZE, CHUNK_SIZE.min(size - i * CHUNK_SIZE)))
}

/// A source file's contents as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// One object.
    Whole { hash: Hash, size: u64 },
    /// Two or more chunks, in order ([`chunk_spans`] gives where each lies). As
    /// `cvmfs_server` stores a chunked file (without its legacy bulk chunks): the file has
    /// no hash of its own and is not stored whole.
    Chunked { size: u64, chunks: Vec<Hash> },
}

impl Content {
    pub fn size(&self) -> u64 {
        match self {
            Content::Whole { size, .. } | Content::Chunked { size, .. } => *size,
        }
    }

    /// Every object a reader fetches for it.
    pub fn objects(&self) -> Vec<(Hash, Suffix)> {
        match self {
            Content::Whole { hash, .. } => vec![(*hash, Suffix::None)],
            Content::Chunked { chunks, .. } => chunks.iter().map(|h| (*h, Suffix::Partial)).collect(),
        }
    }
}

/// What a source file looked like when it was compressed: device, inode, size, mtime and
/// ctime (nanoseconds). Equal on the next publication means the same object.
type StatKey = (u64, u64, u64, i128, i128);

/// A file's contents are taken as unchanged only when its last change is at least this old
/// at the time it is read: a write in the same clock tick as the read would otherwise keep
/// its stat (git's "racily clean" case).
pub const STAT_SETTLED: std::time::Duration = std::time::Duration::from_secs(1);

fn stat_key(meta: &fs::Metadata) -> StatKey {
    use std::os::unix::fs::MetadataExt;
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    (meta.dev(), meta.ino(), meta.size(), ns(meta.mtime(), meta.mtime_nsec()), ns(meta.ctime(), meta.ctime_nsec()))
}

/// Writes objects into one repository folder and counts what it really wrote.
pub struct Store {
    repo: PathBuf,
    /// The stat cache file (see [`Store::with_stat_cache`]) and what it said.
    stat_cache: Option<PathBuf>,
    known: std::collections::HashMap<StatKey, Content>,
    /// What this publication saw: written back, so entries of files gone are dropped.
    seen: std::collections::HashMap<StatKey, Content>,
    /// Source files read and compressed (not taken from the stat cache).
    pub files_read: u64,
    /// Source entries that are not files, folders or links (left out): how many, and one.
    pub left_out: Option<(u64, PathBuf)>,
    txn: PathBuf,
    pub objects_written: u64,
    pub bytes_written: u64,
}

/// Passes bytes through to a file while hashing them: the hash of the compressed stream is
/// known the moment the stream ends, without reading the object back.
struct HashingWriter {
    file: File,
    hasher: Sha1,
    count: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Store {
    /// Opens (creating) `data/00`..`data/ff` and the staging folder `data/txn`, as
    /// `cvmfs_server mkfs` lays them out.
    pub fn open(repo: &Path) -> Result<Store, PublishError> {
        let data = repo.join("data");
        for i in 0..=255u8 {
            let dir = data.join(format!("{i:02x}"));
            fs::create_dir_all(&dir).map_err(|e| PublishError::io(&dir, e))?;
        }
        let txn = data.join("txn");
        fs::create_dir_all(&txn).map_err(|e| PublishError::io(&txn, e))?;
        Ok(Store {
            repo: repo.to_owned(),
            txn,
            objects_written: 0,
            bytes_written: 0,
            stat_cache: None,
            known: Default::default(),
            seen: Default::default(),
            files_read: 0,
            left_out: None,
        })
    }

    /// Remembers, in `path`, which object each source file became, by its stat
    /// ([`StatKey`]), so that a republication reads and compresses only files that changed.
    /// A damaged or missing cache file costs a full read, nothing else.
    pub fn with_stat_cache(mut self, path: &Path) -> Store {
        if let Ok(text) = fs::read_to_string(path) {
            for line in text.lines() {
                // dev ino size mtime ctime hash len, or for a chunked file
                // dev ino size mtime ctime - len chunk-hash...
                let f: Vec<&str> = line.split(' ').collect();
                let [dev, ino, size, mtime, ctime, hash, len, ref chunks @ ..] = f[..] else { continue };
                let hex20 = |s: &str| {
                    let mut h = [0u8; 20];
                    hex::decode_to_slice(s, &mut h).ok().map(|()| h)
                };
                let (Ok(d), Ok(i), Ok(s), Ok(m), Ok(c), Ok(len)) =
                    (dev.parse(), ino.parse(), size.parse(), mtime.parse(), ctime.parse(), len.parse::<u64>())
                else {
                    continue;
                };
                // Stored as this publisher stores a file of that size, or read again (a big
                // file stored whole before chunking, a damaged line).
                if len != s {
                    continue;
                }
                let content = if len > CHUNK_SIZE {
                    let chunks: Option<Vec<Hash>> = chunks.iter().map(|c| hex20(c)).collect();
                    match chunks {
                        Some(chunks) if hash == "-" && chunks.len() == chunk_spans(len).count() => Content::Chunked { size: len, chunks },
                        _ => continue,
                    }
                } else {
                    match hex20(hash) {
                        Some(hash) if chunks.is_empty() => Content::Whole { hash, size: len },
                        _ => continue,
                    }
                };
                self.known.insert((d, i, s, m, c), content);
            }
        }
        self.stat_cache = Some(path.to_owned());
        self
    }

    /// Writes the stat cache back with what this publication saw.
    pub fn save_stat_cache(&self) -> Result<(), PublishError> {
        let Some(path) = &self.stat_cache else { return Ok(()) };
        let mut text = String::new();
        for ((d, i, s, m, c), content) in &self.seen {
            match content {
                Content::Whole { hash, size } => text.push_str(&format!("{d} {i} {s} {m} {c} {} {size}", hex::encode(hash))),
                Content::Chunked { size, chunks } => {
                    text.push_str(&format!("{d} {i} {s} {m} {c} - {size}"));
                    for chunk in chunks {
                        text.push(' ');
                        text.push_str(&hex::encode(chunk));
                    }
                }
            }
            text.push('\n');
        }
        gah_util::atomic::write(path, text.as_bytes())?;
        Ok(())
    }

    /// A fresh temporary file in the staging folder (same file system as `data/`, so the
    /// final rename is atomic).
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile, PublishError> {
        use std::os::unix::fs::PermissionsExt;
        // World-readable, as `cvmfs_server` makes objects (upload_local.cc): the web server
        // that serves the folder seldom runs as the publisher.
        tempfile::Builder::new()
            .prefix("gah.")
            .permissions(fs::Permissions::from_mode(0o644))
            .tempfile_in(&self.txn)
            .map_err(|e| PublishError::io(&self.txn, e))
    }

    /// Compresses whatever `reader` yields into an object; returns its hash and the number
    /// of uncompressed bytes.
    pub fn put_reader(&mut self, reader: &mut impl Read, suffix: Suffix) -> Result<(Hash, u64), PublishError> {
        let temp = self.temp_file()?;
        let file = temp.reopen().map_err(|e| PublishError::io(temp.path(), e))?;
        let mut encoder = ZlibEncoder::new(HashingWriter { file, hasher: Sha1::new(), count: 0 }, Compression::default());
        let size = io::copy(reader, &mut encoder).map_err(|e| PublishError::io(temp.path(), e))?;
        let writer = encoder.finish().map_err(|e| PublishError::io(temp.path(), e))?;
        let hash: Hash = writer.hasher.finalize().into();
        let target = object_path(&self.repo, &hash, suffix);
        if target.exists() {
            // Same bytes, same name: already published.
            return Ok((hash, size));
        }
        // On disk before its name: an object that exists is reused unread by later
        // publications, so a crash must not leave a torn one under its name.
        temp.as_file().sync_all().map_err(|e| PublishError::io(temp.path(), e))?;
        temp.persist(&target).map_err(|e| PublishError::io(&target, e.error))?;
        self.objects_written += 1;
        self.bytes_written += writer.count;
        Ok((hash, size))
    }

    /// An object from a file on disk (catalogs, history: always read).
    pub fn put_file(&mut self, path: &Path, suffix: Suffix) -> Result<(Hash, u64), PublishError> {
        let mut file = File::open(path).map_err(|e| PublishError::io(path, e))?;
        self.put_reader(&mut file, suffix)
    }

    /// An object of a source file's contents: from the stat cache when the file did not
    /// change since it was last read and its object is still there, else read.
    pub fn put_source_file(&mut self, path: &Path) -> Result<Content, PublishError> {
        // Before the stat: a change during a long read may fall in the tick of the last one.
        let stat_time_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
        let mut file = File::open(path).map_err(|e| PublishError::io(path, e))?;
        let meta = file.metadata().map_err(|e| PublishError::io(path, e))?;
        let key = stat_key(&meta);
        if let Some(content) = self.known.get(&key) {
            if content.objects().iter().all(|(h, suffix)| object_path(&self.repo, h, *suffix).exists()) {
                let content = content.clone();
                self.seen.insert(key, content.clone());
                return Ok(content);
            }
        }
        self.files_read += 1;
        let content = if meta.len() > CHUNK_SIZE {
            self.put_chunks(path, &mut file)?
        } else {
            let (hash, size) = self.put_reader(&mut file, Suffix::None)?;
            Content::Whole { hash, size }
        };
        // Only a file whose last change is older than the tick it was stat'ed in can be
        // trusted to have those bytes next time; one changed since is stat'ed anew.
        let last_change_ns = key.3.max(key.4);
        let settled = stat_time_ns - last_change_ns >= STAT_SETTLED.as_nanos() as i128;
        let unchanged_while_read = file.metadata().is_ok_and(|m| stat_key(&m) == key);
        if settled && unchanged_while_read {
            self.seen.insert(key, content.clone());
        }
        Ok(content)
    }

    /// A big file's chunks, each stored as an object. A file that shrank to one chunk or
    /// less while it was read is stored whole (`cvmfs_server` never makes one chunk).
    fn put_chunks(&mut self, path: &Path, file: &mut File) -> Result<Content, PublishError> {
        let mut read_piece = || {
            let mut piece = Vec::new();
            Read::by_ref(file).take(CHUNK_SIZE).read_to_end(&mut piece).map_err(|e| PublishError::io(path, e))?;
            Ok::<_, PublishError>(piece)
        };
        let first = read_piece()?;
        let mut next = read_piece()?;
        if next.is_empty() || (first.len() as u64) < CHUNK_SIZE {
            let (hash, size) = self.put_reader(&mut &first[..], Suffix::None)?;
            return Ok(Content::Whole { hash, size });
        }
        let mut size = first.len() as u64;
        let mut chunks = vec![self.put_reader(&mut &first[..], Suffix::Partial)?.0];
        let mut last_was_whole = true;
        drop(first);
        // A short piece is the file's end as read (one that grew after it is read next time:
        // its stat changed), so every chunk but the last is whole, as chunk_spans says.
        while !next.is_empty() && last_was_whole {
            size += next.len() as u64;
            last_was_whole = next.len() as u64 == CHUNK_SIZE;
            chunks.push(self.put_reader(&mut &next[..], Suffix::Partial)?.0);
            next = if last_was_whole { read_piece()? } else { Vec::new() };
        }
        debug_assert_eq!(chunk_spans(size).count(), chunks.len());
        Ok(Content::Chunked { size, chunks })
    }

    /// An object from bytes in memory.
    pub fn put_bytes(&mut self, bytes: &[u8], suffix: Suffix) -> Result<Hash, PublishError> {
        Ok(self.put_reader(&mut &bytes[..], suffix)?.0)
    }

    /// Reads an object back, checking its hash, and unpacks it into a temporary file (the
    /// previous revision's catalogs and history, to build on).
    pub fn unpack_to_temp(&self, hash: &Hash, suffix: Suffix) -> Result<tempfile::NamedTempFile, PublishError> {
        let bytes = read_object(&self.repo, hash, suffix, MAX_METADATA_OBJECT).map_err(PublishError::Previous)?;
        let mut temp = self.temp_file()?;
        temp.write_all(&bytes).map_err(|e| PublishError::io(temp.path(), e))?;
        Ok(temp)
    }
}

/// The most an object other than a file's contents may inflate to (catalogs, history, the
/// certificate): a hostile repository's zip bomb ends here rather than in memory.
pub const MAX_METADATA_OBJECT: u64 = 1 << 30;

/// Reads one object: its compressed bytes must hash to its name, then it is inflated, to at
/// most `limit` bytes (more is refused: the repository may be hostile).
pub fn read_object(repo: &Path, hash: &Hash, suffix: Suffix, limit: u64) -> Result<Vec<u8>, crate::VerifyError> {
    fetch_object(&crate::fetch::Folder(repo.to_owned()), hash, suffix, limit)
}

/// [`read_object`] from any [`Source`](crate::fetch::Source): the same checks.
pub fn fetch_object(source: &dyn crate::fetch::Source, hash: &Hash, suffix: Suffix, limit: u64) -> Result<Vec<u8>, crate::VerifyError> {
    let name = format!("{} {}", source.describe(), object_rel(hash, suffix));
    let compressed = source.object(hash, suffix)?;
    let actual: Hash = Sha1::digest(&compressed).into();
    if &actual != hash {
        return Err(crate::VerifyError::ObjectHash { object: name, actual: hex::encode(actual) });
    }
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(&compressed[..])
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| crate::VerifyError::Io(name.clone(), e))?;
    if out.len() as u64 > limit {
        return Err(crate::VerifyError::Malformed("object", format!("{name} inflates to more than {limit} bytes")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_inflating_past_its_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        // 1 MiB of zeros compresses to about 1 KiB: a small bomb.
        let hash = store.put_bytes(&vec![0u8; 1 << 20], Suffix::None).unwrap();
        assert!(matches!(read_object(dir.path(), &hash, Suffix::None, 1000), Err(crate::VerifyError::Malformed("object", _))));
        assert_eq!(read_object(dir.path(), &hash, Suffix::None, 1 << 20).unwrap().len(), 1 << 20);
    }

    /// A stratum 1 (`cvmfs_swissknife pull`) stores the certificate it copies packed again by
    /// stock zlib at its default level, under the name our publisher gave it: only the same
    /// bytes keep that name true (flate2's zlib backend; miniz_oxide's differ). The
    /// expectation is Python's `hashlib.sha1(zlib.compress(data, 6))`.
    #[test]
    fn objects_are_packed_byte_for_byte_as_stock_zlib_packs_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let data = b"gentoo@home: the same bytes as a stratum 1 makes\n".repeat(50);
        let hash = store.put_bytes(&data, Suffix::Certificate).unwrap();
        assert_eq!(hex::encode(hash), "f266ebe178404b9bc513b37486de4fb5ff6c71d7");
    }
}
