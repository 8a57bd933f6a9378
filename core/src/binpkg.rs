//! The binary packages a volunteer's guest built, as the volunteer uploads them
//! (`binpkgs.tar`, the result's second output file), and the reader that checks such an
//! upload before anything in it is trusted.
//!
//! The upload is an uncompressed tar (each package is compressed inside) of regular files,
//! one GPKG (GLEP 78) each, at Portage's `binpkg-multi-instance` place:
//! `<category>/<PN>/<PF>-<BUILD_ID>.gpkg.tar`. It holds what the job built, never the seeds
//! it was given, and no `Packages` index: the index is the guest's word, and whoever
//! publishes packages writes their own from the packages.
//!
//! [`read_upload`] reads one without writing anything anywhere, under [`Limits`], and gives
//! each package's [`BuiltPackage::digest`]: a SHA-256 over everything the package installs
//! and says of itself except when it was built. Two builds of one configuration in the same
//! guest image give packages with the same digest though their bytes differ (the archives'
//! member times, the compressed streams and their `Manifest`, `BUILD_TIME`; measured in
//! ARCHITECTURE.md, "Binary packages: where they flow"). Portage itself strips the
//! host-sized `MAKEOPTS` from the saved environment (`save-ebuild-env.sh`) so that hosts
//! of different sizes build identical packages.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// The logical (open) name of the upload in the result template and in the task's slot.
pub const OPEN_NAME: &str = "binpkgs.tar";

/// The metadata entries left out of [`BuiltPackage::digest`]: when the package was built,
/// and the instance number its builder's package folder gave it.
pub const UNCOMPARED_METADATA: [&str; 2] = ["BUILD_TIME", "BUILD_ID"];

/// Caps applied while reading an untrusted upload.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest upload accepted (the result template's `max_nbytes` for it).
    pub max_upload: u64,
    /// Most packages in one upload.
    pub max_packages: usize,
    /// Largest decompressed `metadata.tar.zst` of one package.
    pub max_metadata: u64,
    /// Largest decompressed `image.tar.zst` of one package.
    pub max_image: u64,
    /// Most entries in one package's image.
    pub max_image_entries: usize,
    /// Largest total of decompressed metadata and images of all the upload's packages.
    pub max_inflated: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_upload: MAX_UPLOAD,
            max_packages: 1000,
            max_metadata: 64 << 20,
            max_image: 8 << 30,
            max_image_entries: 1_000_000,
            max_inflated: 8 << 30,
        }
    }
}

/// The largest upload: `templates/gah_out` gives the same figure as `max_nbytes`, and
/// gah-app leaves out packages rather than go over it (the client would fail the result).
pub const MAX_UPLOAD: u64 = 512 << 20;

/// One package of a checked upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltPackage {
    /// Where it is in the upload: `<category>/<PN>/<PF>-<BUILD_ID>.gpkg.tar`.
    pub path: String,
    /// `<category>/<PF>`, as its path and its own metadata both say.
    pub cpv: String,
    /// The instance number in its path.
    pub build_id: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of what it installs and says of itself but
    /// [`UNCOMPARED_METADATA`] (see the module's comment).
    pub digest: String,
}

/// Why an upload was refused. Each message names the package concerned.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum BinpkgError {
    /// The upload is over its cap.
    #[error("binary package upload is {size} bytes, over the {max}-byte cap")]
    TooLarge { size: u64, max: u64 },
    /// More packages than the cap.
    #[error("more than {max} binary packages in one upload")]
    TooMany { max: usize },
    /// The outer tar is broken.
    #[error("binary package upload is not a readable tar: {0}")]
    Corrupt(String),
    /// A member is not a regular file at a package's place.
    #[error("`{name}` is not a binary package at <category>/<PN>/<PF>-<BUILD_ID>.gpkg.tar")]
    BadPath { name: String },
    /// A member is a link, folder or device.
    #[error("`{name}` is a {kind}, only regular files are allowed")]
    NotRegular { name: String, kind: String },
    /// The same package twice.
    #[error("`{0}` appears twice")]
    Duplicate(String),
    /// A package is not a GPKG this reader takes.
    #[error("{path}: not a GPKG binary package: {why}")]
    NotGpkg { path: String, why: String },
    /// A package's compressed member inflates past its cap.
    #[error("{path}: {member} inflates past {max} bytes (decompression bomb?)")]
    Bomb { path: String, member: &'static str, max: u64 },
    /// A package's metadata contradicts its place.
    #[error("{path}: its metadata says {key} `{found}`, its place says `{expected}`")]
    Contradicts { path: String, key: &'static str, found: String, expected: String },
}

/// Reads and checks an untrusted upload. Nothing is written anywhere; the packages are
/// returned sorted by path.
pub fn read_upload<R: Read>(upload: R, limits: Limits) -> Result<Vec<BuiltPackage>, BinpkgError> {
    // One byte past the cap tells an upload over it from one at it.
    let mut tar = tar::Archive::new(upload.take(limits.max_upload + 1));
    let mut packages: BTreeMap<String, BuiltPackage> = BTreeMap::new();
    let mut total = 0u64;
    // Every package's decompressed metadata and image count against one budget.
    let inflated = Cell::new(0u64);
    for_each_member(&mut tar, &BinpkgError::Corrupt, |entry, name, _| {
        let name = String::from_utf8_lossy(&name).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() && place_of_folder(&name) {
            return Ok(());
        }
        if !kind.is_file() {
            return Err(BinpkgError::NotRegular { name, kind: format!("{kind:?}").to_lowercase() });
        }
        let place = Place::parse(&name).ok_or_else(|| BinpkgError::BadPath { name: name.clone() })?;
        let size = entry.size();
        total = total.saturating_add(size);
        if total > limits.max_upload {
            return Err(BinpkgError::TooLarge { size: total, max: limits.max_upload });
        }
        if packages.len() >= limits.max_packages {
            return Err(BinpkgError::TooMany { max: limits.max_packages });
        }
        if packages.contains_key(&name) {
            return Err(BinpkgError::Duplicate(name));
        }
        let package = read_gpkg(&place, &name, size, entry, limits, &inflated)?;
        packages.insert(name, package);
        Ok(())
    })?;
    Ok(packages.into_values().collect())
}

/// The longest GNU long name or long link taken (Linux's `PATH_MAX` is 4096).
const MAX_LONG_NAME: u64 = 64 << 10;

/// Calls `each` on every member of `tar` as Portage's Python `tarfile` sees it, with its path
/// and link target: a GNU long name or long link (`L`, `K`, which Portage writes for long
/// paths) applies to the member after it, at most [`MAX_LONG_NAME`] bytes and one of each
/// per member. Pax headers (which Portage never writes: its tars are USTAR or GNU) and
/// every type but files, folders, symbolic and hard links are refused, so that what is
/// digested here is what Portage unpacks.
fn for_each_member<R: Read>(
    tar: &mut tar::Archive<R>,
    bad: &dyn Fn(String) -> BinpkgError,
    mut each: impl FnMut(&mut tar::Entry<'_, R>, Vec<u8>, Option<Vec<u8>>) -> Result<(), BinpkgError>,
) -> Result<(), BinpkgError> {
    let (mut long_name, mut long_link) = (None::<Vec<u8>>, None::<Vec<u8>>);
    for entry in tar.entries().map_err(|e| bad(e.to_string()))?.raw(true) {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let kind = entry.header().entry_type();
        if kind.is_gnu_longname() || kind.is_gnu_longlink() {
            if entry.size() > MAX_LONG_NAME {
                return Err(bad(format!("a GNU long name of {} bytes", entry.size())));
            }
            let mut value = Vec::new();
            entry.read_to_end(&mut value).map_err(|e| bad(e.to_string()))?;
            while value.last() == Some(&0) {
                value.pop();
            }
            let slot = if kind.is_gnu_longname() { &mut long_name } else { &mut long_link };
            if slot.replace(value).is_some() {
                return Err(bad("two GNU long names for one member".to_owned()));
            }
            continue;
        }
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink() || kind.is_hard_link()) {
            let name = String::from_utf8_lossy(&entry.header().path_bytes()).into_owned();
            return Err(bad(format!("`{name}` is a {kind:?} entry, which Portage's packages do not have")));
        }
        let path = long_name.take().unwrap_or_else(|| entry.header().path_bytes().into_owned());
        let link = long_link.take().or_else(|| entry.header().link_name_bytes().map(|l| l.into_owned()));
        each(&mut entry, path, link)?;
    }
    if long_name.is_some() || long_link.is_some() {
        return Err(bad("a GNU long name with no member after it".to_owned()));
    }
    Ok(())
}

/// A folder entry the writer of an upload may leave (`app-arch/`, `app-arch/bzip2/`).
fn place_of_folder(name: &str) -> bool {
    let parts: Vec<&str> = name.trim_end_matches('/').split('/').collect();
    parts.len() <= 2 && parts.iter().all(|p| is_name(p))
}

/// A category, package or file name as Portage allows them: no `/`, no leading `-` or `.`.
fn is_name(s: &str) -> bool {
    !s.is_empty() && !s.starts_with(['-', '.']) && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '_' | '.' | '-'))
}

/// Where a package is in an upload or a package folder, taken apart:
/// `<category>/<PN>/<PF>-<BUILD_ID>.gpkg.tar`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The category.
    pub category: String,
    /// The package name.
    pub pn: String,
    /// The package name and version (`<PN>-<PV>[-r<N>]`).
    pub pf: String,
    /// The instance number.
    pub build_id: u64,
}

impl Place {
    /// The place `name` names, if it is one.
    pub fn parse(name: &str) -> Option<Place> {
        let [category, pn, file] = name.split('/').collect::<Vec<_>>()[..] else { return None };
        let stem = file.strip_suffix(".gpkg.tar")?;
        let (pf, build_id) = stem.rsplit_once('-')?;
        let build_id: u64 = build_id.parse().ok().filter(|_| build_id.bytes().all(|b| b.is_ascii_digit()))?;
        let version = pf.strip_prefix(pn)?.strip_prefix('-')?;
        // PF splits into PN and the version one way only (Portage's `catpkgsplit`): the
        // version holds no `-` but that of a revision, so `font-adobe-75dpi-1.0.4` is PN
        // `font-adobe-75dpi`, never `font-adobe`.
        let plain =
            version.rsplit_once("-r").filter(|(_, r)| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit())).map_or(version, |(v, _)| v);
        let valid =
            [category, pn, pf].iter().all(|p| is_name(p)) && version.starts_with(|c: char| c.is_ascii_digit()) && !plain.contains('-');
        valid.then(|| Place { category: category.to_owned(), pn: pn.to_owned(), pf: pf.to_owned(), build_id })
    }

    /// The same package as instance `build_id`.
    pub fn with_build_id(&self, build_id: u64) -> Place {
        Place { build_id, ..self.clone() }
    }

    /// Its path: `<category>/<PN>/<PF>-<BUILD_ID>.gpkg.tar`.
    pub fn path(&self) -> String {
        format!("{}/{}/{}-{}.gpkg.tar", self.category, self.pn, self.pf, self.build_id)
    }

    /// The folder every member of the GPKG sits in.
    fn basename(&self) -> String {
        format!("{}-{}", self.pf, self.build_id)
    }
}

/// Reads and checks one untrusted GPKG of `size` bytes found at `path` (a [`Place`]), as
/// [`read_upload`] reads each of its packages.
pub fn read_package(path: &str, gpkg: impl Read, size: u64, limits: Limits) -> Result<BuiltPackage, BinpkgError> {
    let place = Place::parse(path).ok_or_else(|| BinpkgError::BadPath { name: path.to_owned() })?;
    read_gpkg(&place, path, size, gpkg, limits, &Cell::new(0))
}

/// The members of a GPKG, in the order GLEP 78 gives them.
const MEMBERS: [&str; 4] = ["gpkg-1", "metadata.tar.zst", "image.tar.zst", "Manifest"];

/// The largest `Manifest` read (three `DATA` lines are about 900 bytes).
const MAX_MANIFEST: u64 = 64 << 10;

/// Reads one GPKG (an uncompressed tar) as the module's comment says, its decompressed
/// members counted in `inflated` against `limits.max_inflated`. Its `Manifest` must give
/// each other member's size, BLAKE2B and SHA512 as they are: Portage checks them before it
/// installs a package, so a package whose Manifest lies would fail every job given it.
fn read_gpkg(
    place: &Place,
    path: &str,
    size: u64,
    gpkg: impl Read,
    limits: Limits,
    inflated: &Cell<u64>,
) -> Result<BuiltPackage, BinpkgError> {
    let not_gpkg = |why: String| BinpkgError::NotGpkg { path: path.to_owned(), why };
    let basename = place.basename();
    let mut seen = [false; 4];
    let mut sums: BTreeMap<&str, (u64, String, String)> = BTreeMap::new();
    let mut manifest = Vec::new();
    let mut metadata: Option<BTreeMap<String, Vec<u8>>> = None;
    let mut image: Option<Vec<ImageEntry>> = None;
    let mut tar = tar::Archive::new(gpkg);
    for_each_member(&mut tar, &not_gpkg, |member, name, _| {
        let name = String::from_utf8_lossy(&name).into_owned();
        if !member.header().entry_type().is_file() {
            return Err(not_gpkg(format!("member `{name}` is not a regular file")));
        }
        let Some(short) = name.strip_prefix(&basename).and_then(|n| n.strip_prefix('/')) else {
            return Err(not_gpkg(format!("member `{name}` is not under `{basename}/`")));
        };
        // Another compression, a signature, or anything else: not a package our guests make.
        let Some(index) = MEMBERS.iter().position(|m| *m == short) else {
            return Err(not_gpkg(format!("member `{short}` is not one of {}", MEMBERS.join(", "))));
        };
        if std::mem::replace(&mut seen[index], true) {
            return Err(not_gpkg(format!("member `{short}` appears twice")));
        }
        if index == 3 {
            if member.size() > MAX_MANIFEST {
                return Err(not_gpkg(format!("a Manifest of {} bytes", member.size())));
            }
            return member.read_to_end(&mut manifest).map(drop).map_err(|e| not_gpkg(e.to_string()));
        }
        if index == 0 && member.size() != 0 {
            return Err(not_gpkg("gpkg-1 is not empty".to_owned()));
        }
        let mut summed = Summed::new(member);
        match index {
            1 => metadata = Some(read_metadata(path, &mut summed, limits, inflated)?),
            2 => image = Some(read_image(path, &mut summed, limits, inflated)?),
            _ => {}
        }
        // What the decompressor left of the member is summed too.
        io::copy(&mut summed, &mut io::sink()).map_err(|e| not_gpkg(e.to_string()))?;
        sums.insert(MEMBERS[index], summed.finish());
        Ok(())
    })?;
    let (Some(metadata), Some(image)) = (metadata, image) else {
        return Err(not_gpkg("metadata.tar.zst or image.tar.zst is missing".to_owned()));
    };
    if !seen[0] || !seen[3] {
        return Err(not_gpkg("gpkg-1 or Manifest is missing".to_owned()));
    }
    check_manifest(&manifest, &sums).map_err(|why| not_gpkg(format!("Manifest: {why}")))?;
    let said = |key: &str| metadata.get(key).map(|v| String::from_utf8_lossy(v).trim().to_owned());
    for (key, expected) in [("CATEGORY", &place.category), ("PF", &place.pf)] {
        let found = said(key).unwrap_or_default();
        if found != *expected {
            return Err(BinpkgError::Contradicts { path: path.to_owned(), key, found, expected: expected.clone() });
        }
    }
    Ok(BuiltPackage {
        path: path.to_owned(),
        cpv: format!("{}/{}", place.category, place.pf),
        build_id: place.build_id,
        size,
        digest: digest(&metadata, &image),
    })
}

/// A member read through its size, BLAKE2B and SHA512.
struct Summed<R> {
    inner: R,
    size: u64,
    blake2b: blake2::Blake2b512,
    sha512: sha2::Sha512,
}

impl<R: Read> Summed<R> {
    fn new(inner: R) -> Summed<R> {
        Summed { inner, size: 0, blake2b: blake2::Blake2b512::new(), sha512: sha2::Sha512::new() }
    }

    /// (size, BLAKE2B, SHA512), lowercase hex.
    fn finish(self) -> (u64, String, String) {
        (self.size, hex::encode(self.blake2b.finalize()), hex::encode(self.sha512.finalize()))
    }
}

impl<R: Read> Read for Summed<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.size += n as u64;
        self.blake2b.update(&buf[..n]);
        self.sha512.update(&buf[..n]);
        Ok(n)
    }
}

/// Checks a GPKG `Manifest` (`DATA <member> <size> BLAKE2B <hex> SHA512 <hex>` lines, one per
/// member but itself) against the members as read.
fn check_manifest(text: &[u8], sums: &BTreeMap<&str, (u64, String, String)>) -> Result<(), String> {
    let text = std::str::from_utf8(text).map_err(|_| "not UTF-8".to_owned())?;
    let mut listed = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let ["DATA", member, size, ref rest @ ..] = words[..] else { return Err(format!("line `{line}` is not a DATA line")) };
        let hashes: BTreeMap<&str, &str> = rest.chunks(2).filter_map(|c| Some((c[0], *c.get(1)?))).collect();
        if listed.insert(member, (size, hashes)).is_some() {
            return Err(format!("{member} listed twice"));
        }
    }
    for (member, (size, blake2b, sha512)) in sums {
        let Some((said_size, hashes)) = listed.remove(member) else { return Err(format!("{member} is not listed")) };
        let agrees = said_size == size.to_string()
            && hashes.get("BLAKE2B") == Some(&blake2b.as_str())
            && hashes.get("SHA512") == Some(&sha512.as_str());
        if !agrees {
            return Err(format!("{member} is not what it lists"));
        }
    }
    match listed.keys().next() {
        Some(extra) => Err(format!("{extra} is listed but not in the package")),
        None => Ok(()),
    }
}

/// Counts what is read through it in `used`, and fails past `max`.
struct Metered<'c, R> {
    inner: R,
    used: &'c Cell<u64>,
    max: u64,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.used.set(self.used.get() + n as u64);
        if self.used.get() > self.max {
            return Err(io::Error::other("over the upload's decompression budget"));
        }
        Ok(n)
    }
}

/// A zstd stream, decompressed: at most `max` bytes of it (one past tells a bomb), all of it
/// counted in `used` against `budget` (the upload's).
fn inflated<'a>(compressed: impl Read + 'a, max: u64, used: &'a Cell<u64>, budget: u64) -> io::Result<impl Read + 'a> {
    Ok(Metered { inner: zstd::stream::read::Decoder::new(compressed)?.take(max + 1), used, max: budget })
}

fn read_metadata(path: &str, member: impl Read, limits: Limits, budget: &Cell<u64>) -> Result<BTreeMap<String, Vec<u8>>, BinpkgError> {
    let bad = |why: String| BinpkgError::NotGpkg { path: path.to_owned(), why: format!("metadata.tar.zst: {why}") };
    let bomb = |max| BinpkgError::Bomb { path: path.to_owned(), member: "metadata.tar.zst", max };
    let over = || budget.get() > limits.max_inflated;
    let stream = inflated(member, limits.max_metadata, budget, limits.max_inflated).map_err(|e| bad(e.to_string()))?;
    let mut tar = tar::Archive::new(stream);
    let mut entries = BTreeMap::new();
    let mut total = 0u64;
    for_each_member(&mut tar, &bad, |entry, name, _| {
        let name = String::from_utf8_lossy(&name).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() && name.trim_end_matches('/') == "metadata" {
            return Ok(());
        }
        let Some(key) = name.strip_prefix("metadata/").filter(|k| is_name(k) && kind.is_file()) else {
            return Err(bad(format!("entry `{name}` is not a file in metadata/")));
        };
        total = total.saturating_add(entry.size());
        if total > limits.max_metadata {
            return Err(bomb(limits.max_metadata));
        }
        let mut value = Vec::new();
        entry.read_to_end(&mut value).map_err(|e| bad(e.to_string()))?;
        if entries.insert(key.to_owned(), value).is_some() {
            return Err(bad(format!("entry `{name}` appears twice")));
        }
        Ok(())
    })
    .map_err(|e| if over() { bomb(limits.max_inflated) } else { e })?;
    Ok(entries)
}

/// One entry of a package's image, as far as it is compared.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ImageEntry {
    path: Vec<u8>,
    kind: u8,
    mode: u32,
    owner: (u64, u64),
    /// User and group names, which Portage maps to ids on the installing system.
    names: (Vec<u8>, Vec<u8>),
    /// A link's target; a file's SHA-256.
    what: Vec<u8>,
}

fn read_image(path: &str, member: impl Read, limits: Limits, budget: &Cell<u64>) -> Result<Vec<ImageEntry>, BinpkgError> {
    let bad = |why: String| BinpkgError::NotGpkg { path: path.to_owned(), why: format!("image.tar.zst: {why}") };
    let bomb = |max| BinpkgError::Bomb { path: path.to_owned(), member: "image.tar.zst", max };
    let over = || budget.get() > limits.max_inflated;
    let stream = inflated(member, limits.max_image, budget, limits.max_inflated).map_err(|e| bad(e.to_string()))?;
    let mut tar = tar::Archive::new(stream);
    let mut entries = Vec::new();
    let mut total = 0u64;
    for_each_member(&mut tar, &bad, |entry, path, link| {
        if entries.len() >= limits.max_image_entries {
            return Err(bad(format!("more than {} entries", limits.max_image_entries)));
        }
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(|e| bad(e.to_string()))?;
        let owner = (header.uid().map_err(|e| bad(e.to_string()))?, header.gid().map_err(|e| bad(e.to_string()))?);
        let names = (header.username_bytes().unwrap_or_default().to_vec(), header.groupname_bytes().unwrap_or_default().to_vec());
        let what = if kind.is_file() {
            total = total.saturating_add(entry.size());
            if total > limits.max_image {
                return Err(bomb(limits.max_image));
            }
            let mut hasher = Sha256::new();
            io::copy(entry, &mut hasher).map_err(|e| bad(e.to_string()))?;
            hasher.finalize().to_vec()
        } else {
            link.unwrap_or_default()
        };
        entries.push(ImageEntry { path, kind: kind.as_byte(), mode, owner, names, what });
        Ok(())
    })
    .map_err(|e| if over() { bomb(limits.max_inflated) } else { e })?;
    // The order Portage walked the image in is the builder's file system's: not compared.
    entries.sort();
    Ok(entries)
}

/// The digest of a package's metadata (but [`UNCOMPARED_METADATA`]) and image, each field
/// length-prefixed so that no two packages' fields can run into one another.
fn digest(metadata: &BTreeMap<String, Vec<u8>>, image: &[ImageEntry]) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(b"gah-binpkg-digest 2");
    for (key, value) in metadata.iter().filter(|(k, _)| !UNCOMPARED_METADATA.contains(&k.as_str())) {
        field(b"metadata");
        field(key.as_bytes());
        field(value);
    }
    for e in image {
        field(b"image");
        field(&e.path);
        field(&[e.kind]);
        field(&e.mode.to_le_bytes());
        field(&e.owner.0.to_le_bytes());
        field(&e.owner.1.to_le_bytes());
        field(&e.names.0);
        field(&e.names.1);
        field(&e.what);
    }
    hex::encode(hasher.finalize())
}

/// What [`write_upload`] put in and left out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    /// The packages written, by path.
    pub packages: Vec<String>,
    /// The packages left out to stay under the cap, by path.
    pub left_out: Vec<String>,
}

/// Writes an upload of the packages in `dir` (a package folder of regular files, already
/// taken from the guest: see `gah_util::pkgdir::merge_new`) to `out`, smallest first, leaving
/// out whatever would take it past `max_bytes`. Files not at a package's place (the index)
/// are not written.
pub fn write_upload<W: Write>(out: W, dir: &Path, max_bytes: u64) -> io::Result<Written> {
    let mut found = Vec::new();
    collect(dir, "", 0, &mut found)?;
    found.sort_by(|a: &(String, u64), b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    let mut tar = tar::Builder::new(out);
    let mut written = Written::default();
    // The tar's own end (two 512-byte blocks) and each member's header and padding count.
    let mut total = 1024u64;
    for (name, size) in found {
        let cost = 512 + size.div_ceil(512) * 512;
        if total + cost > max_bytes {
            written.left_out.push(name);
            continue;
        }
        total += cost;
        let mut header = tar::Header::new_ustar();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        let file = std::fs::File::open(dir.join(&name))?;
        tar.append_data(&mut header, &name, file.take(size))?;
        written.packages.push(name);
    }
    tar.into_inner()?.flush()?;
    Ok(written)
}

fn collect(dir: &Path, relative: &str, depth: usize, found: &mut Vec<(String, u64)>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir.join(relative))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let name = if relative.is_empty() { name } else { format!("{relative}/{name}") };
        let kind = entry.file_type()?;
        if kind.is_dir() && depth < 2 {
            collect(dir, &name, depth + 1, found)?;
        } else if kind.is_file() && Place::parse(&name).is_some() {
            found.push((name, entry.metadata()?.len()));
        }
    }
    Ok(())
}

/// Packages and uploads built in memory, as Portage and gah-app write them: test fixtures
/// for this crate and the validator's tests (no product path calls them).
#[doc(hidden)]
pub mod fixture {
    /// A GPKG as Portage writes one: `metadata` entries and `image` files (path, mode, bytes).
    pub fn gpkg(basename: &str, metadata: &[(&str, &[u8])], image: &[(&str, u32, &[u8])], mtime: u64) -> Vec<u8> {
        let zst = |members: Vec<(String, u32, Vec<u8>)>| {
            let mut tar = tar::Builder::new(Vec::new());
            for (name, mode, data) in members {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(mode);
                h.set_mtime(mtime);
                h.set_uid(0);
                h.set_gid(0);
                h.set_entry_type(tar::EntryType::Regular);
                tar.append_data(&mut h, name, data.as_slice()).unwrap();
            }
            zstd::encode_all(tar.into_inner().unwrap().as_slice(), 3).unwrap()
        };
        let meta = zst(metadata.iter().map(|(k, v)| (format!("metadata/{k}"), 0o644, v.to_vec())).collect());
        let img = zst(image.iter().map(|(p, m, d)| (format!("image/{p}"), *m, d.to_vec())).collect());
        use sha2::Digest;
        let line = |name: &str, data: &[u8]| {
            let (blake2b, sha512) = (hex::encode(blake2::Blake2b512::digest(data)), hex::encode(sha2::Sha512::digest(data)));
            format!("DATA {name} {} BLAKE2B {blake2b} SHA512 {sha512}\n", data.len())
        };
        let manifest = [line("gpkg-1", b""), line("metadata.tar.zst", &meta), line("image.tar.zst", &img)].concat();
        let members = [("gpkg-1", Vec::new()), ("metadata.tar.zst", meta), ("image.tar.zst", img), ("Manifest", manifest.into_bytes())];
        let mut tar = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(mtime);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, format!("{basename}/{name}"), data.as_slice()).unwrap();
        }
        tar.into_inner().unwrap()
    }

    /// An upload of `members` (path, bytes), as gah-app writes one.
    pub fn upload(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // Written raw: the tar crate refuses to write a hostile name such as `../x`.
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            tar.append(&h, *data).unwrap();
        }
        tar.into_inner().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{gpkg, upload};
    use super::*;

    fn jemalloc(build_time: &[u8], lib: &[u8], mtime: u64) -> Vec<u8> {
        gpkg(
            "jemalloc-5.3.0-1",
            &[("CATEGORY", b"dev-libs\n"), ("PF", b"jemalloc-5.3.0\n"), ("BUILD_TIME", build_time), ("USE", b"abi_x86_64 amd64\n")],
            &[("usr/lib64/libjemalloc.so.2", 0o755, lib), ("usr/share/doc/README", 0o644, b"docs")],
            mtime,
        )
    }

    const AT: &str = "dev-libs/jemalloc/jemalloc-5.3.0-1.gpkg.tar";

    #[test]
    fn two_builds_of_one_package_share_a_digest_and_a_changed_file_does_not() {
        let first = upload(&[(AT, &jemalloc(b"1796291522\n", b"\x7fELF one", 100))]);
        let second = upload(&[(AT, &jemalloc(b"1796299999\n", b"\x7fELF one", 200))]);
        let forged = upload(&[(AT, &jemalloc(b"1796291522\n", b"\x7fELF two", 100))]);
        let read = |u: &[u8]| read_upload(u, Limits::default()).unwrap();
        let (a, b, c) = (read(&first), read(&second), read(&forged));
        assert_ne!(first, second, "the bytes differ");
        assert_eq!(a[0].digest, b[0].digest, "but not what the package installs or says");
        assert_ne!(a[0].digest, c[0].digest, "a changed library is another package");
        assert_eq!((a[0].cpv.as_str(), a[0].build_id, a[0].path.as_str()), ("dev-libs/jemalloc-5.3.0", 1, AT));
    }

    #[test]
    fn hostile_uploads_are_refused_naming_the_culprit() {
        let good = jemalloc(b"1\n", b"lib", 1);
        let err = |u: Vec<u8>| read_upload(u.as_slice(), Limits::default()).unwrap_err().to_string();
        // Out of place, or outside any package folder.
        assert!(err(upload(&[("../../etc/passwd", &good)])).contains("../../etc/passwd"));
        assert!(err(upload(&[("dev-libs/jemalloc/Packages", b"index")])).contains("Packages"));
        assert!(err(upload(&[("dev-libs/other/jemalloc-5.3.0-1.gpkg.tar", &good)])).contains("not a binary package"));
        // A package whose metadata claims another name.
        let lying = gpkg("jemalloc-5.3.0-1", &[("CATEGORY", b"sys-apps"), ("PF", b"jemalloc-5.3.0")], &[], 1);
        assert!(err(upload(&[(AT, &lying)])).contains("CATEGORY `sys-apps`"));
        // A link in place of a package.
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        tar.append_link(&mut h, AT, "/etc/shadow").unwrap();
        assert!(err(tar.into_inner().unwrap()).contains("symlink"));
        // Twice the same package.
        assert!(err(upload(&[(AT, &good), (AT, &good)])).contains("twice"));
        // Not a GPKG at all; a GPKG with a member of its own.
        assert!(err(upload(&[(AT, b"not a tar")])).contains("not a GPKG"));
        // An image that inflates past its cap.
        let bomb =
            gpkg("jemalloc-5.3.0-1", &[("CATEGORY", b"dev-libs"), ("PF", b"jemalloc-5.3.0")], &[("zeros", 0o644, &vec![0u8; 1 << 20])], 1);
        let small = Limits { max_image: 1 << 16, ..Limits::default() };
        let e = read_upload(upload(&[(AT, &bomb)]).as_slice(), small).unwrap_err();
        assert!(matches!(e, BinpkgError::Bomb { member: "image.tar.zst", .. }), "{e}");
        // Over the upload's cap.
        let tight = Limits { max_upload: 1000, ..Limits::default() };
        assert!(matches!(read_upload(upload(&[(AT, &good)]).as_slice(), tight).unwrap_err(), BinpkgError::TooLarge { .. }));
    }

    #[test]
    fn a_place_splits_one_way_only() {
        let pn = |path: &str| Place::parse(path).map(|p| p.pn);
        assert_eq!(pn("media-fonts/font-adobe-75dpi/font-adobe-75dpi-1.0.4-1.gpkg.tar").as_deref(), Some("font-adobe-75dpi"));
        assert_eq!(pn("media-fonts/font-adobe/font-adobe-75dpi-1.0.4-1.gpkg.tar"), None);
        assert_eq!(pn("dev-libs/jemalloc/jemalloc-5.3.1-r2-7.gpkg.tar").as_deref(), Some("jemalloc"));
        assert_eq!(
            Place::parse("dev-libs/jemalloc/jemalloc-5.3.1-r2-7.gpkg.tar").map(|p| (p.pf, p.build_id)),
            Some(("jemalloc-5.3.1-r2".into(), 7))
        );
        assert_eq!(pn("dev-libs/jemalloc/jemalloc-5.3.1.gpkg.tar"), None, "no instance number");
    }

    /// What the `tar` crate and Python's `tarfile` (Portage's) could read differently is not
    /// taken: pax headers (Portage writes USTAR or GNU tars), two long names for one member,
    /// special files. GNU long names, which Portage writes for long paths, are.
    #[test]
    fn only_what_portage_writes_is_read() {
        let read = |tar_bytes: Vec<u8>| {
            let mut tar = tar::Archive::new(tar_bytes.as_slice());
            let mut seen = Vec::new();
            for_each_member(&mut tar, &BinpkgError::Corrupt, |_, path, link| {
                seen.push((String::from_utf8_lossy(&path).into_owned(), link.map(|l| String::from_utf8_lossy(&l).into_owned())));
                Ok(())
            })
            .map(|()| seen)
        };
        let file = |tar: &mut tar::Builder<Vec<u8>>, name: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, name, b"x".as_slice()).unwrap();
        };
        let long = format!("usr/share/{}/file", "d".repeat(150));
        let mut gnu = tar::Builder::new(Vec::new());
        file(&mut gnu, &long);
        assert_eq!(read(gnu.into_inner().unwrap()).unwrap(), [(long.clone(), None)]);
        let mut pax = tar::Builder::new(Vec::new());
        pax.append_pax_extensions([("path", b"etc/shadow".as_slice())]).unwrap();
        file(&mut pax, "usr/bin/harmless");
        assert!(read(pax.into_inner().unwrap()).unwrap_err().to_string().contains("XHeader"));
        let mut fifo = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Fifo);
        h.set_size(0);
        fifo.append_data(&mut h, "run/fifo", io::empty()).unwrap();
        assert!(read(fifo.into_inner().unwrap()).unwrap_err().to_string().contains("Fifo"));
    }

    #[test]
    fn a_manifest_must_say_what_the_members_are() {
        let sums: BTreeMap<&str, (u64, String, String)> = [("image.tar.zst", (3, "b".to_owned(), "s".to_owned()))].into();
        assert!(check_manifest(b"DATA image.tar.zst 3 BLAKE2B b SHA512 s\n", &sums).is_ok());
        for (text, says) in [
            ("DATA image.tar.zst 4 BLAKE2B b SHA512 s\n", "not what it lists"),
            ("DATA image.tar.zst 3 BLAKE2B x SHA512 s\n", "not what it lists"),
            ("DATA image.tar.zst 3 SHA512 s\n", "not what it lists"),
            ("", "not listed"),
            ("DATA image.tar.zst 3 BLAKE2B b SHA512 s\nDATA extra 1 BLAKE2B b SHA512 s\n", "extra is listed"),
            ("IGNORE me\n", "not a DATA line"),
        ] {
            assert!(check_manifest(text.as_bytes(), &sums).unwrap_err().contains(says), "{text}");
        }
    }

    #[test]
    fn all_packages_of_an_upload_share_one_decompression_budget() {
        let zeros = vec![0u8; 1 << 20];
        let package =
            |pf: &str| gpkg(&format!("{pf}-1"), &[("CATEGORY", b"dev-libs"), ("PF", pf.as_bytes())], &[("zeros", 0o644, &zeros)], 1);
        let (a, b) = (package("a-1"), package("b-1"));
        let both = upload(&[("dev-libs/a/a-1-1.gpkg.tar", &a), ("dev-libs/b/b-1-1.gpkg.tar", &b)]);
        let budget = Limits { max_inflated: 3 << 19, ..Limits::default() };
        assert_eq!(read_upload(upload(&[("dev-libs/a/a-1-1.gpkg.tar", &a)]).as_slice(), budget).unwrap().len(), 1);
        let e = read_upload(both.as_slice(), budget).unwrap_err();
        assert!(matches!(e, BinpkgError::Bomb { max, .. } if max == 3 << 19), "{e}");
    }

    #[test]
    fn the_writer_leaves_out_the_index_and_what_would_pass_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("dev-libs/jemalloc")).unwrap();
        std::fs::write(dir.path().join(AT), jemalloc(b"1\n", b"lib", 1)).unwrap();
        std::fs::create_dir_all(dir.path().join("app-arch/big")).unwrap();
        std::fs::write(dir.path().join("app-arch/big/big-1-1.gpkg.tar"), vec![0u8; 1 << 20]).unwrap();
        std::fs::write(dir.path().join("Packages"), b"index").unwrap();
        let mut out = Vec::new();
        let written = write_upload(&mut out, dir.path(), 256 << 10).unwrap();
        assert_eq!(written, Written { packages: vec![AT.to_owned()], left_out: vec!["app-arch/big/big-1-1.gpkg.tar".to_owned()] });
        assert!(out.len() as u64 <= 256 << 10);
        let read = read_upload(out.as_slice(), Limits::default()).unwrap();
        assert_eq!(read.len(), 1);
        // Nothing to upload is an empty tar, which reads as no packages.
        let empty = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        write_upload(&mut out, empty.path(), MAX_UPLOAD).unwrap();
        assert!(read_upload(out.as_slice(), Limits::default()).unwrap().is_empty());
    }
}
