//! The outcome archive: what a volunteer's machine uploads for one job.
//!
//! A gzip-compressed tar of regular files with fixed names (see [`MEMBERS`]): `outcome.json`,
//! `job.json`, `build.log` (capped to its head and tail), optionally `emerge-info.txt`, and
//! `MANIFEST.sha256` listing the sha256 of every other member. [`read`] checks everything
//! before anything is trusted and never writes to disk.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use sha2::{Digest, Sha256};

use crate::job::Job;
use crate::outcome::Outcome;

/// The manifest member's name.
pub const MANIFEST: &str = "MANIFEST.sha256";
/// Every member name an archive may hold, and whether it is required.
pub const MEMBERS: [(&str, bool); 5] =
    [("outcome.json", true), ("job.json", true), ("build.log", true), ("emerge-info.txt", false), (MANIFEST, true)];

/// Bytes of the build log kept from its start.
pub const LOG_HEAD: usize = 256 * 1024;
/// Bytes of the build log kept from its end.
pub const LOG_TAIL: usize = 768 * 1024;

/// Caps applied while reading an untrusted archive.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest compressed archive accepted.
    pub max_compressed: u64,
    /// Largest total of member sizes accepted.
    pub max_uncompressed: u64,
    /// Largest uncompressed/compressed ratio accepted once past `ratio_floor` bytes.
    pub max_ratio: u64,
    /// Uncompressed size below which the ratio is not checked (tiny archives compress well).
    pub ratio_floor: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_compressed: 16 << 20, max_uncompressed: 64 << 20, max_ratio: 200, ratio_floor: 4 << 20 }
    }
}

/// Why an archive was refused. Each message names the culprit.
// The variants document themselves through their messages; their fields are self-explanatory.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The compressed file is over the cap.
    #[error("archive is {size} bytes, over the {max}-byte cap")]
    TooLarge { size: u64, max: u64 },
    /// The members add up to more than the cap, or the gzip stream inflates past it.
    #[error("archive inflates past {max} bytes (decompression bomb?)")]
    Bomb { max: u64 },
    /// The compression ratio is suspicious.
    #[error("archive inflates {ratio}:1, over the {max}:1 cap (decompression bomb?)")]
    Ratio { ratio: u64, max: u64 },
    /// The gzip or tar stream is broken.
    #[error("archive is not a readable tar.gz: {0}")]
    Corrupt(String),
    /// Bytes follow the gzip stream (trailing data, or a second gzip member).
    #[error("{bytes} bytes follow the gzip stream (trailing data or a second gzip member)")]
    Trailing { bytes: usize },
    /// A member is a link, device, directory or other non-regular file.
    #[error("member `{name}` is a {kind}, only regular files are allowed")]
    NotRegular { name: String, kind: String },
    /// A member's path is absolute, has `..` or a folder, or is not valid UTF-8.
    #[error("member path `{0}` is not a plain file name (absolute, `..` or nested)")]
    BadPath(String),
    /// A name the format does not have.
    #[error("member `{0}` is not part of the outcome format")]
    Unknown(String),
    /// The same member twice.
    #[error("member `{0}` appears twice")]
    Duplicate(String),
    /// A required member is absent.
    #[error("required member `{0}` is missing")]
    Missing(&'static str),
    /// The manifest is malformed.
    #[error("{MANIFEST} line {line}: {why}")]
    BadManifest { line: usize, why: String },
    /// A member is absent from the manifest, or its hash differs.
    #[error("member `{name}` does not match {MANIFEST}: {why}")]
    ManifestMismatch { name: String, why: String },
    /// A field of `outcome.json` is over its cap (`outcome::limits`).
    #[error("outcome.json")]
    Field(#[source] crate::outcome::LimitError),
    /// The job's id is not the one its configuration derives.
    #[error("job id `{found}` is not the id of the configuration it describes (`{derived}`)")]
    ForeignJobId { found: String, derived: String },
    /// The outcome answers another job than the workunit's.
    #[error("outcome is for job `{job_id}`, not for workunit `{wu_name}`")]
    NotTheWorkunits { job_id: String, wu_name: String },
    /// `outcome.json` or `job.json` does not parse or is inconsistent.
    #[error("{0}")]
    Content(String),
}

/// A checked archive's contents.
#[derive(Debug, Clone)]
pub struct OutcomeArchive {
    /// The parsed `outcome.json`.
    pub outcome: Outcome,
    /// The parsed `job.json` the agent ran.
    pub job: Job,
    /// The (capped) build log.
    pub build_log: Vec<u8>,
    /// `emerge --info` output, when present.
    pub emerge_info: Option<Vec<u8>>,
}

impl OutcomeArchive {
    /// Roughly the heap bytes it holds (the log, `emerge --info`, every string and list of
    /// the outcome and the job), for callers that bound how many they keep at once.
    pub fn approx_bytes(&self) -> usize {
        let o = &self.outcome;
        let strings = |v: &[String]| v.iter().map(|t| t.len() + std::mem::size_of::<String>()).sum::<usize>();
        let flags = |u: &crate::job::UseAssignment| u.0.keys().map(|f| f.len() + 64).sum::<usize>();
        self.build_log.len()
            + self.emerge_info.as_ref().map_or(0, Vec::len)
            + strings(&o.failing_tests)
            + o.phases.iter().map(|p| p.phase.len() + std::mem::size_of::<crate::outcome::PhaseTime>()).sum::<usize>()
            + o.packages.iter().map(|p| p.cpv.len() + std::mem::size_of::<crate::outcome::PackageVersion>()).sum::<usize>()
            + o.installed_files
                .iter()
                .map(|f| f.path.len() + f.sha256.len() + std::mem::size_of::<crate::outcome::InstalledFile>())
                .sum::<usize>()
            + flags(&o.use_flags)
            + flags(&self.job.use_flags)
            + o.summary.len()
            + 1024
    }
}

/// Caps a log to its first [`LOG_HEAD`] and last [`LOG_TAIL`] bytes, with a marker between.
pub fn cap_log(log: &[u8]) -> Vec<u8> {
    if log.len() <= LOG_HEAD + LOG_TAIL {
        return log.to_vec();
    }
    let mut out = Vec::with_capacity(LOG_HEAD + LOG_TAIL + 80);
    out.extend_from_slice(&log[..LOG_HEAD]);
    let cut = log.len() - LOG_HEAD - LOG_TAIL;
    out.extend_from_slice(format!("\n[... gentoo@home: {cut} bytes of log cut here ...]\n").as_bytes());
    out.extend_from_slice(&log[log.len() - LOG_TAIL..]);
    out
}

/// The lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes an outcome archive for `outcome` to `out`. The log is capped here.
pub fn write<W: Write>(out: W, job: &Job, outcome: &Outcome, build_log: &[u8], emerge_info: Option<&[u8]>) -> std::io::Result<()> {
    let log = cap_log(build_log);
    let outcome_json = outcome.to_json();
    let job_json = job.to_json();
    let mut members: Vec<(&str, &[u8])> = vec![("outcome.json", &outcome_json), ("job.json", &job_json), ("build.log", &log)];
    if let Some(info) = emerge_info {
        members.push(("emerge-info.txt", info));
    }
    let manifest: String = members.iter().map(|(name, data)| format!("{}  {}\n", sha256_hex(data), name)).collect();
    members.push((MANIFEST, manifest.as_bytes()));

    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, data) in members {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, data)?;
    }
    tar.into_inner()?.finish()?.flush()
}

/// Reads and checks an untrusted archive held in memory. Nothing is written anywhere.
pub fn read(bytes: &[u8], limits: Limits) -> Result<OutcomeArchive, ArchiveError> {
    let compressed = bytes.len() as u64;
    if compressed > limits.max_compressed {
        return Err(ArchiveError::TooLarge { size: compressed, max: limits.max_compressed });
    }
    // One byte past the cap tells a bomb from an archive exactly at the cap. The bufread
    // decoder over the slice consumes exactly one gzip member (MultiGzDecoder would go on to
    // the next), so what it leaves of the slice is trailing data.
    let inflated = flate2::bufread::GzDecoder::new(bytes).take(limits.max_uncompressed + 1024 * 1024);
    let mut tar = tar::Archive::new(inflated);
    let mut members: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut total: u64 = 0;
    let entries = tar.entries().map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt_or_bomb(e, limits))?;
        let header = entry.header();
        let raw_path = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw_path).map_err(|e| ArchiveError::BadPath(String::from_utf8_lossy(e.as_bytes()).into_owned()))?;
        let kind = header.entry_type();
        if !kind.is_file() {
            return Err(ArchiveError::NotRegular { name, kind: entry_kind(kind) });
        }
        if name.is_empty() || name.contains('/') || name.contains('\\') || name == "." || name == ".." {
            return Err(ArchiveError::BadPath(name));
        }
        if !MEMBERS.iter().any(|(known, _)| *known == name) {
            return Err(ArchiveError::Unknown(name));
        }
        if members.contains_key(&name) {
            return Err(ArchiveError::Duplicate(name));
        }
        let size = header.size().map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
        total = total.saturating_add(size);
        if total > limits.max_uncompressed {
            return Err(ArchiveError::Bomb { max: limits.max_uncompressed });
        }
        // Only a capacity hint: `total` already bounds it.
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry.read_to_end(&mut data).map_err(|e| corrupt_or_bomb(e, limits))?;
        if data.len() as u64 != size {
            return Err(ArchiveError::Corrupt(format!("member `{name}` is truncated")));
        }
        members.insert(name, data);
    }
    // Read to the end of the gzip stream so its CRC and length trailer are checked: a
    // truncated upload is refused even when the tar end marker survived.
    let mut inflated = tar.into_inner();
    std::io::copy(&mut inflated, &mut std::io::sink()).map_err(|e| corrupt_or_bomb(e, limits))?;
    if inflated.limit() == 0 {
        return Err(ArchiveError::Bomb { max: limits.max_uncompressed });
    }
    // A second gzip member or bytes after the first: never read by us, but another reader
    // (gzip -d, MultiGzDecoder) would see content we did not check.
    let trailing = inflated.into_inner().into_inner().len();
    if trailing > 0 {
        return Err(ArchiveError::Trailing { bytes: trailing });
    }
    if total > limits.ratio_floor && compressed > 0 {
        let ratio = total / compressed;
        if ratio > limits.max_ratio {
            return Err(ArchiveError::Ratio { ratio, max: limits.max_ratio });
        }
    }
    for (name, required) in MEMBERS {
        if required && !members.contains_key(name) {
            return Err(ArchiveError::Missing(name));
        }
    }
    check_manifest(&members)?;

    let outcome = Outcome::from_json(&members["outcome.json"]).map_err(|e| match e {
        crate::Error::Limit { source, .. } => ArchiveError::Field(source),
        e => ArchiveError::Content(gah_util::error_chain(&e)),
    })?;
    let job = Job::from_json(&members["job.json"]).map_err(|e| ArchiveError::Content(gah_util::error_chain(&e)))?;
    if let Some(why) = outcome.mismatch_with(&job) {
        return Err(ArchiveError::Content(why));
    }
    if !job.has_own_id() {
        let derived = crate::job::job_id(&job.repo, &job.cpv, &job.use_flags, job.compiler);
        return Err(ArchiveError::ForeignJobId { found: job.job_id, derived });
    }
    outcome.check_consistency().map_err(|why| ArchiveError::Content(format!("outcome.json: {why}")))?;
    Ok(OutcomeArchive {
        outcome,
        job,
        build_log: members.remove("build.log").unwrap_or_default(),
        emerge_info: members.remove("emerge-info.txt"),
    })
}

/// Checks that a read archive answers workunit `wu_name` (see
/// [`crate::job::is_workunit_of`]; [`read`] has checked that the job id is the
/// configuration's own).
pub fn check_workunit(archive: &OutcomeArchive, wu_name: &str) -> Result<(), ArchiveError> {
    if crate::job::is_workunit_of(wu_name, &archive.outcome.job_id) {
        Ok(())
    } else {
        Err(ArchiveError::NotTheWorkunits { job_id: archive.outcome.job_id.clone(), wu_name: wu_name.to_owned() })
    }
}

fn check_manifest(members: &BTreeMap<String, Vec<u8>>) -> Result<(), ArchiveError> {
    let text = std::str::from_utf8(&members[MANIFEST]).map_err(|_| ArchiveError::BadManifest { line: 0, why: "not UTF-8".into() })?;
    let mut listed: BTreeMap<&str, &str> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let (hash, name) =
            line.split_once("  ").ok_or_else(|| ArchiveError::BadManifest { line: line_no, why: "expected `SHA256  NAME`".into() })?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ArchiveError::BadManifest { line: line_no, why: format!("`{hash}` is not a sha256") });
        }
        if listed.insert(name, hash).is_some() {
            return Err(ArchiveError::BadManifest { line: line_no, why: format!("`{name}` listed twice") });
        }
    }
    for (name, data) in members {
        if name == MANIFEST {
            continue;
        }
        let Some(expected) = listed.remove(name.as_str()) else {
            return Err(ArchiveError::ManifestMismatch { name: name.clone(), why: "not listed".into() });
        };
        let actual = sha256_hex(data);
        if !expected.eq_ignore_ascii_case(&actual) {
            return Err(ArchiveError::ManifestMismatch {
                name: name.clone(),
                why: format!("sha256 is {actual}, manifest says {expected}"),
            });
        }
    }
    if let Some((name, _)) = listed.into_iter().next() {
        return Err(ArchiveError::ManifestMismatch { name: name.to_owned(), why: "listed but not in the archive".into() });
    }
    Ok(())
}

fn corrupt_or_bomb(e: std::io::Error, limits: Limits) -> ArchiveError {
    // `take` ends the stream early; tar then reports an unexpected EOF.
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ArchiveError::Corrupt(format!("{e} (truncated, or inflates past {} bytes)", limits.max_uncompressed))
    } else {
        ArchiveError::Corrupt(e.to_string())
    }
}

fn entry_kind(kind: tar::EntryType) -> String {
    match kind {
        tar::EntryType::Symlink => "symbolic link".into(),
        tar::EntryType::Link => "hard link".into(),
        tar::EntryType::Char => "character device".into(),
        tar::EntryType::Block => "block device".into(),
        tar::EntryType::Directory => "directory".into(),
        tar::EntryType::Fifo => "FIFO".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Compiler, UseAssignment};
    use crate::outcome::Status;

    fn sample() -> (Job, Outcome) {
        let job = Job::new("gah", "app-arch/bzip2-1.0.8", UseAssignment::default(), Compiler::Gcc, 60);
        let mut outcome = Outcome::for_job(&job, Status::Success);
        outcome.test_ran = true;
        (job, outcome)
    }

    #[test]
    fn round_trip() {
        let (job, outcome) = sample();
        let mut buf = Vec::new();
        write(&mut buf, &job, &outcome, b">>> Compiling source\n", Some(b"info")).unwrap();
        let archive = read(&buf, Limits::default()).unwrap();
        assert_eq!(archive.outcome, outcome);
        assert_eq!(archive.build_log, b">>> Compiling source\n");
        assert_eq!(archive.emerge_info.as_deref(), Some(&b"info"[..]));
    }

    #[test]
    fn log_is_capped_head_and_tail() {
        let log = vec![b'x'; LOG_HEAD + LOG_TAIL + 10_000];
        let capped = cap_log(&log);
        assert!(capped.len() < log.len());
        assert!(String::from_utf8_lossy(&capped).contains("10000 bytes of log cut here"));
    }

    #[test]
    fn a_lost_gzip_trailer_is_corrupt() {
        let (job, outcome) = sample();
        let mut buf = Vec::new();
        write(&mut buf, &job, &outcome, b"log", None).unwrap();
        buf.truncate(buf.len() - 8);
        let err = read(&buf, Limits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::Corrupt(_)), "{err}");
    }

    #[test]
    fn an_outcome_over_a_cap_is_refused_naming_the_field() {
        let (job, mut outcome) = sample();
        // Incompressible enough to pass the ratio cap, as a real attack's would be.
        let mut x: u32 = 1;
        outcome.summary = (0..5 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect();
        let mut buf = Vec::new();
        write(&mut buf, &job, &outcome, b"log", None).unwrap();
        let err = read(&buf, Limits::default()).unwrap_err();
        assert!(matches!(&err, ArchiveError::Field(crate::outcome::LimitError::TooLong { field, .. }) if field == "summary"), "{err:?}");
        let (job, mut outcome) = sample();
        outcome.installed_files = (0..400_000u32)
            .map(|i| crate::outcome::InstalledFile { path: format!("/usr/share/f{i}"), sha256: sha256_hex(&i.to_le_bytes())[..16].into() })
            .collect();
        let mut buf = Vec::new();
        write(&mut buf, &job, &outcome, b"log", None).unwrap();
        let err = read(&buf, Limits::default()).unwrap_err();
        assert_eq!(gah_util::error_chain(&err), "outcome.json: field `installed_files` has 400000 entries, over its 200000-entry cap");
    }

    #[test]
    fn trailing_data_or_a_second_gzip_member_is_refused() {
        let (job, outcome) = sample();
        let mut buf = Vec::new();
        write(&mut buf, &job, &outcome, b"log", None).unwrap();
        read(&buf, Limits::default()).unwrap();
        let mut trailing = buf.clone();
        trailing.extend_from_slice(b"hidden");
        let err = read(&trailing, Limits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::Trailing { bytes: 6 }), "{err:?}");
        // A second member, itself a whole outcome archive: gzip -d would concatenate it.
        let mut two = buf.clone();
        two.extend_from_slice(&buf);
        let err = read(&two, Limits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::Trailing { bytes } if bytes == buf.len()), "{err:?}");
        // Even one trailing zero byte (gzip -d would call it trailing garbage).
        let mut zero = buf;
        zero.push(0);
        assert!(matches!(read(&zero, Limits::default()).unwrap_err(), ArchiveError::Trailing { bytes: 1 }));
    }

    #[test]
    fn a_job_id_not_derived_from_its_configuration_is_refused() {
        // A result for another package, labelled with this workunit's job id.
        let (real, _) = sample();
        let (mut job, _) = sample();
        job.cpv = "sys-libs/glibc-2.40".into();
        job.job_id = real.job_id.clone();
        let mut outcome = Outcome::for_job(&job, crate::outcome::Status::BuildFailed);
        outcome.failed_phase = Some("compile".into());
        let mut buf = Vec::new();
        write(&mut buf, &job, &outcome, b"log", None).unwrap();
        let err = read(&buf, Limits::default()).unwrap_err();
        assert!(matches!(&err, ArchiveError::ForeignJobId { found, .. } if *found == real.job_id), "{err:?}");
    }

    #[test]
    fn an_outcome_answers_only_its_own_workunits() {
        let (job, outcome) = sample();
        let mut buf = Vec::new();
        write(&mut buf, &job, &outcome, b"log", None).unwrap();
        let archive = read(&buf, Limits::default()).unwrap();
        let id = &job.job_id;
        for wu in [id.clone(), format!("{id}_2"), format!("{id}.r1")] {
            check_workunit(&archive, &wu).unwrap();
        }
        let other = Job::new("gah", "app-arch/bzip2-1.0.6", crate::job::UseAssignment::default(), crate::job::Compiler::Gcc, 60);
        for wu in [other.job_id.clone(), format!("{id}0"), id[..id.len() - 1].to_owned(), format!("x{id}"), String::new()] {
            let err = check_workunit(&archive, &wu).unwrap_err();
            assert!(matches!(&err, ArchiveError::NotTheWorkunits { wu_name, .. } if *wu_name == wu), "{err:?}");
        }
    }

    #[test]
    fn garbage_is_corrupt() {
        let err = read(b"definitely not gzip", Limits::default()).unwrap_err();
        assert!(matches!(err, ArchiveError::Corrupt(_)), "{err}");
    }
}
