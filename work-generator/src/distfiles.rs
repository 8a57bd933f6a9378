//! The hermetic check (issue 3, item 5): a job is issued only when every distfile it needs
//! is in the distfile mirror with the checksums its repository's Manifest records.
//!
//! "Every distfile it needs" is the job's own `SRC_URI` evaluated under the job's USE, plus
//! the `SRC_URI` of its dependencies' closure: `DEPEND`, `BDEPEND` and `RDEPEND`, evaluated
//! under the job's USE for the job and under their default configuration for the
//! dependencies, resolved best effort within the given repositories (the same repository
//! first, then the others; the highest visible version, visible meaning keyworded for the
//! accepted keywords; the first alternative of `|| ( )` that resolves). A dependency no
//! given repository provides is assumed to come from the image, not from the mirror.
//!
//! Checksums come from the thin Manifest `CATEGORY/PN/Manifest` (`DIST name size BLAKE2B
//! hex SHA512 hex`); a file is good when its size, SHA512 and BLAKE2B all match. Each file
//! is hashed at most once per [`Mirror`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use blake2::Blake2b512;
use gah_core::job::{split_cpv, UseAssignment};
use gah_ebuild::atom::{cmp_cpv_versions, reduce_depend};
use gah_ebuild::md5cache::use_reduce;
use gah_ebuild::{Ebuild, Profile, Repository};
use serde::Serialize;
use sha2::{Digest, Sha512};

/// One `DIST` line of a Manifest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DistEntry {
    /// Size in bytes.
    pub size: u64,
    /// BLAKE2B-512, lowercase hex, if recorded.
    pub blake2b: Option<String>,
    /// SHA512, lowercase hex, if recorded.
    pub sha512: Option<String>,
}

/// The `DIST` entries of a Manifest's text, by file name. Lines that are not `DIST` lines
/// are ignored; a malformed `DIST` line is skipped (the file then counts as unrecorded).
pub fn parse_manifest(text: &str) -> BTreeMap<String, DistEntry> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.len() < 3 || w[0] != "DIST" {
            continue;
        }
        let Ok(size) = w[2].parse() else { continue };
        let mut e = DistEntry { size, blake2b: None, sha512: None };
        for kv in w[3..].chunks(2) {
            match kv {
                ["BLAKE2B", h] => e.blake2b = Some(h.to_ascii_lowercase()),
                ["SHA512", h] => e.sha512 = Some(h.to_ascii_lowercase()),
                _ => {}
            }
        }
        out.insert(w[1].to_owned(), e);
    }
    out
}

/// The distfile names of a `SRC_URI` under a USE assignment: the last path component of
/// each URI, or the name after `->`.
pub fn src_uri_files(src_uri: &str, is_on: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rename = false;
    for tok in use_reduce(src_uri, is_on) {
        if tok == "->" {
            rename = true;
            continue;
        }
        if rename {
            rename = false;
            if let Some(last) = out.last_mut() {
                *last = tok.to_owned();
                continue;
            }
        }
        let name = tok.rsplit('/').next().unwrap_or(tok);
        out.push(name.to_owned());
    }
    out.sort();
    out.dedup();
    out
}

/// Why a needed distfile is not usable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// Not in the mirror.
    Missing,
    /// In the mirror with another size.
    WrongSize {
        /// The Manifest's size.
        expected: u64,
        /// The file's.
        found: u64,
    },
    /// Same size, different SHA512 or BLAKE2B.
    WrongChecksum {
        /// `SHA512` or `BLAKE2B`.
        hash: &'static str,
    },
    /// The repository's Manifest has no `DIST` line for it (nothing to verify against).
    NotInManifest,
    /// The mirror's file could not be read.
    Unreadable {
        /// The IO error.
        error: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Missing => write!(f, "missing"),
            Problem::WrongSize { expected, found } => write!(f, "size {found}, Manifest says {expected}"),
            Problem::WrongChecksum { hash } => write!(f, "{hash} differs from the Manifest"),
            Problem::NotInManifest => write!(f, "no DIST line in the Manifest"),
            Problem::Unreadable { error } => write!(f, "unreadable: {error}"),
        }
    }
}

/// A distfile a job needs and cannot have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingFile {
    /// The distfile's name.
    pub file: String,
    /// The ebuild whose `SRC_URI` names it (the job's own, or a dependency's).
    pub needed_by: String,
    /// What is wrong with it.
    pub problem: Problem,
}

/// A distfile a job needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeededFile {
    /// The distfile's name.
    pub file: String,
    /// The ebuild whose `SRC_URI` names it (the job's own, or a dependency's).
    pub needed_by: String,
    /// What is wrong with it; `None`: it is in the mirror as its Manifest says.
    pub problem: Option<Problem>,
}

/// A distfile mirror folder with a cache of verdicts (hashing a file once).
pub struct Mirror {
    dir: PathBuf,
    accept_keywords: Vec<String>,
    /// (file name, Manifest entry) → verdict (`None` = good).
    verdicts: Mutex<HashMap<(String, DistEntry), Option<Problem>>>,
    manifests: Mutex<HashMap<PathBuf, BTreeMap<String, DistEntry>>>,
}

impl Mirror {
    /// A mirror folder (`DISTDIR`-like: every distfile directly inside). Dependencies are
    /// visible when keyworded for one of `accept_keywords` (e.g. `amd64 ~amd64`).
    pub fn new(dir: &Path, accept_keywords: &[&str]) -> Mirror {
        Mirror {
            dir: dir.to_owned(),
            accept_keywords: accept_keywords.iter().map(|s| (*s).to_owned()).collect(),
            verdicts: Mutex::new(HashMap::new()),
            manifests: Mutex::new(HashMap::new()),
        }
    }

    /// The mirror folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn manifest(&self, repo: &Repository, cpv: &str) -> BTreeMap<String, DistEntry> {
        let cp = split_cpv(cpv).map_or(cpv, |(cp, _)| cp);
        let path = repo.path.join(cp).join("Manifest");
        let mut cache = self.manifests.lock().expect("manifest cache poisoned");
        cache.entry(path.clone()).or_insert_with(|| std::fs::read_to_string(&path).map(|t| parse_manifest(&t)).unwrap_or_default()).clone()
    }

    /// Checks one file against its Manifest entry: size first (cheap), then both hashes.
    fn verify(&self, file: &str, entry: &DistEntry) -> Option<Problem> {
        let key = (file.to_owned(), entry.clone());
        if let Some(v) = self.verdicts.lock().expect("verdict cache poisoned").get(&key) {
            return v.clone();
        }
        let verdict = verify_file(&self.dir.join(file), entry);
        self.verdicts.lock().expect("verdict cache poisoned").insert(key, verdict.clone());
        verdict
    }

    fn visible(&self, e: &Ebuild) -> bool {
        e.keywords.iter().any(|k| self.accept_keywords.contains(k))
    }
}

fn verify_file(path: &Path, entry: &DistEntry) -> Option<Problem> {
    let unreadable = |e: std::io::Error| Some(Problem::Unreadable { error: e.to_string() });
    let meta = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Some(Problem::Missing),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(Problem::Missing),
        Err(e) => return unreadable(e),
    };
    if meta.len() != entry.size {
        return Some(Problem::WrongSize { expected: entry.size, found: meta.len() });
    }
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return unreadable(e),
    };
    let (mut sha, mut b2) = (Sha512::new(), Blake2b512::new());
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                sha.update(&buf[..n]);
                b2.update(&buf[..n]);
            }
            Err(e) => return unreadable(e),
        }
    }
    if entry.sha512.as_deref().is_some_and(|h| hex::encode(sha.finalize()) != h) {
        return Some(Problem::WrongChecksum { hash: "SHA512" });
    }
    if entry.blake2b.as_deref().is_some_and(|h| hex::encode(b2.finalize()) != h) {
        return Some(Problem::WrongChecksum { hash: "BLAKE2B" });
    }
    None
}

/// The ebuilds of several repositories by `category/package`, for dependency resolution.
pub struct Index<'r> {
    repos: &'r [Repository],
    by_cp: HashMap<&'r str, Vec<(usize, usize)>>,
}

impl<'r> Index<'r> {
    /// Indexes `repos`.
    pub fn new(repos: &'r [Repository]) -> Index<'r> {
        let mut by_cp: HashMap<&str, Vec<(usize, usize)>> = HashMap::new();
        for (ri, r) in repos.iter().enumerate() {
            for (ei, e) in r.ebuilds.iter().enumerate() {
                if let Some((cp, _)) = split_cpv(&e.cpv) {
                    by_cp.entry(cp).or_default().push((ri, ei));
                }
            }
        }
        Index { repos, by_cp }
    }

    /// The best visible ebuild satisfying `atom`: the same repository (`repo`) first, then
    /// the others; the highest version.
    fn resolve(&self, mirror: &Mirror, repo: usize, atom: &gah_ebuild::atom::Atom) -> Option<(usize, &'r Ebuild)> {
        let cands = self.by_cp.get(atom.cp.as_str())?;
        let pick = |same: bool| {
            cands
                .iter()
                .filter(|(ri, _)| (*ri == repo) == same)
                .map(|&(ri, ei)| (ri, &self.repos[ri].ebuilds[ei]))
                .filter(|(_, e)| mirror.visible(e) && atom.matches(&e.cpv))
                .max_by(|a, b| cmp_cpv_versions(&a.1.cpv, &b.1.cpv))
        };
        pick(true).or_else(|| pick(false))
    }

    /// [`Index::needs`] of a job, found by its repository name and cpv; `None` when no
    /// indexed repository has that ebuild.
    pub fn needs_of_job(&self, mirror: &Mirror, profile: &Profile, job: &gah_core::job::Job) -> Option<Vec<NeededFile>> {
        let repo = self.repos.iter().position(|r| r.name == job.repo)?;
        let ebuild = self.repos[repo].ebuilds.iter().find(|e| e.cpv == job.cpv)?;
        Some(self.needs(mirror, profile, repo, ebuild, &job.use_flags))
    }

    /// Every distfile a job of `ebuild` (in repository `repo`) with USE `use_flags` needs (its
    /// own and its dependencies', as the module doc says), each with what is wrong with it, if
    /// anything: a job may be issued when nothing is, and its `data.json` names them all.
    pub fn needs(&self, mirror: &Mirror, profile: &Profile, repo: usize, ebuild: &Ebuild, use_flags: &UseAssignment) -> Vec<NeededFile> {
        let mut out = Vec::new();
        let mut seen: HashSet<(usize, &str)> = HashSet::new();
        seen.insert((repo, ebuild.cpv.as_str()));
        let job_on = |f: &str| use_flags.0.get(f).copied().unwrap_or_else(|| profile.implicit(f));
        // (repository, ebuild, its USE): the job's own, then each dependency's defaults.
        type Item<'a> = (usize, &'a Ebuild, Box<dyn Fn(&str) -> bool + 'a>);
        let mut work: Vec<Item<'_>> = vec![(repo, ebuild, Box::new(job_on))];
        while let Some((ri, e, is_on)) = work.pop() {
            let manifest = mirror.manifest(&self.repos[ri], &e.cpv);
            for file in src_uri_files(&e.src_uri, &*is_on) {
                let problem = match manifest.get(&file) {
                    None => Some(Problem::NotInManifest),
                    Some(entry) => mirror.verify(&file, entry),
                };
                out.push(NeededFile { file, needed_by: e.cpv.clone(), problem });
            }
            for deps in [&e.depend, &e.bdepend, &e.rdepend] {
                for alts in reduce_depend(deps, &*is_on) {
                    let Some((dri, dep)) = alts.iter().find_map(|a| self.resolve(mirror, ri, a)) else { continue };
                    if seen.insert((dri, dep.cpv.as_str())) {
                        // A dependency is built with its default configuration.
                        let dep_on = move |f: &str| match dep.iuse.iter().find(|i| i.name == f) {
                            Some(i) => profile.pinned(&dep.cpv, f).unwrap_or_else(|| profile.default_value(f, i.default_on())),
                            None => profile.implicit(f),
                        };
                        work.push((dri, dep, Box::new(dep_on)));
                    }
                }
            }
        }
        out.sort_by(|a, b| (&a.needed_by, &a.file).cmp(&(&b.needed_by, &b.file)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_and_src_uri() {
        let m = parse_manifest("DIST a.tar.gz 3 BLAKE2B AB SHA512 cd\nEBUILD x 1 SHA512 ff\nDIST broken\n");
        assert_eq!(m.len(), 1);
        assert_eq!(m["a.tar.gz"], DistEntry { size: 3, blake2b: Some("ab".into()), sha512: Some("cd".into()) });
        let files = src_uri_files("https://x/a-1.tar.gz doc? ( https://x/d.tgz -> a-doc-1.tgz ) mirror://gnu/b.tar.xz", &|f| f == "doc");
        assert_eq!(files, ["a-1.tar.gz", "a-doc-1.tgz", "b.tar.xz"]);
        assert_eq!(src_uri_files("https://x/d.tgz -> a-doc-1.tgz", &|_| false), ["a-doc-1.tgz"]);
    }
}
