//! `data.json`: a workunit's reference to its inputs in the project's CernVM-FS repository
//! (issue 11), instead of `repo.tar` and `distfiles.tar`: which repository, at which revision
//! (pinned by its root catalog, so a job reads the tree it was planned from however the
//! repository moves on), the ebuild repository's folder in it and the distfiles the job needs.
//! `gah-app` reads them through the host's cache and hands the guest plain folders.

use serde::{Deserialize, Serialize};

/// The format version this build reads and writes.
pub const DATA_REF_FORMAT: u32 = 1;
/// The project's repository's name, unless told otherwise.
pub const DEFAULT_NAME: &str = "gentoo.gah";
/// Where the distfiles are in it.
pub const DISTFILES_AT: &str = "/distfiles";
/// Where binary packages are in it.
pub const BINPKGS_AT: &str = "/binpkgs";
/// Where the guest's root file system is in it (the sandbox flavour's base system).
pub const BASE_AT: &str = "/base";
/// Where the vm flavour's root disk (an ext4 image, stored in chunks) is in it.
pub const DISK_AT: &str = "/base-disk/rootfs.ext4";
/// The top-level folder that holds [`DISK_AT`].
pub const DISK_DIR: &str = "/base-disk";

/// Where the ebuild repository named `repo_name` is in it: `/repos/<repo_name>`.
pub fn repo_path(repo_name: &str) -> String {
    format!("/repos/{repo_name}")
}

/// A job's inputs in a CernVM-FS repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataRef {
    /// [`DATA_REF_FORMAT`].
    pub format: u32,
    /// The repository's fully qualified name (e.g. `gentoo.gah`): its public master key is
    /// `<name>.pub`, a file of the app version.
    pub name: String,
    /// Where it is served (its stratum 0 or a stratum 1): `http://…/<name>`.
    pub url: String,
    /// The revision the job was planned from.
    pub revision: u64,
    /// That revision's root catalog (hex SHA-1), as the history must name it.
    pub root_catalog: String,
    /// The ebuild repository's folder in it, e.g. `/repos/gah`.
    pub repo: String,
    /// The distfiles the job needs, as paths in it, e.g. `/distfiles/bzip2-1.0.8.tar.gz`.
    pub distfiles: Vec<String>,
    /// A folder of binary packages with Portage's `Packages` index, e.g. `/binpkgs`: the
    /// guest installs dependencies from them (Portage's `--usepkg`, which takes a package only
    /// when its USE matches). Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binpkgs: Option<String>,
    /// The guest's root file system, e.g. `/base`, when the app version does not carry one:
    /// read once per host and content (its catalog's hash), shared by the host's tasks.
    /// Absent: the app version's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The vm guest's root disk, e.g. `/base-disk/rootfs.ext4`, when the app version does not
    /// carry one: read once per host and content, the backing file of every task's overlay.
    /// Absent: the app version's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
}

impl DataRef {
    /// The reference for a job of the ebuild repository `repo_name` in revision `revision`
    /// (root catalog `root_catalog`, hex) of the repository `name` at `url`, with its
    /// distfiles by file name, checked as [`DataRef::from_json`] checks a read one: what is
    /// written is what every reader takes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        url: &str,
        revision: u64,
        root_catalog: &str,
        repo_name: &str,
        distfiles: impl IntoIterator<Item = String>,
        binpkgs: bool,
    ) -> Result<DataRef, crate::Error> {
        let mut distfiles: Vec<String> = distfiles.into_iter().map(|f| format!("{DISTFILES_AT}/{f}")).collect();
        distfiles.sort();
        distfiles.dedup();
        let data = DataRef {
            format: DATA_REF_FORMAT,
            name: name.to_owned(),
            url: url.to_owned(),
            revision,
            root_catalog: root_catalog.to_owned(),
            repo: repo_path(repo_name),
            distfiles,
            binpkgs: binpkgs.then(|| BINPKGS_AT.to_owned()),
            base: None,
            disk: None,
        };
        DataRef::from_json(&data.to_json())
    }

    /// The same reference, naming the repository's guest root ([`BASE_AT`]).
    pub fn with_base(self) -> DataRef {
        DataRef { base: Some(BASE_AT.to_owned()), ..self }
    }

    /// The same reference, naming the repository's root disk ([`DISK_AT`]).
    pub fn with_disk(self) -> DataRef {
        DataRef { disk: Some(DISK_AT.to_owned()), ..self }
    }

    /// Parses `data.json`, refusing other format versions and paths that are not absolute
    /// repository paths (`/a/b`, no `.`, `..` or empty parts).
    pub fn from_json(bytes: &[u8]) -> Result<DataRef, crate::Error> {
        let r: DataRef = serde_json::from_slice(bytes).map_err(|e| crate::Error::Json { what: "data.json", source: e })?;
        if r.format != DATA_REF_FORMAT {
            return Err(crate::Error::Format { what: "data.json", found: r.format, expected: DATA_REF_FORMAT });
        }
        let bad =
            std::iter::once(&r.repo).chain(&r.distfiles).chain(&r.binpkgs).chain(&r.base).chain(&r.disk).find(|p| !is_repository_path(p));
        if let Some(p) = bad {
            return Err(crate::Error::Invalid { what: "data.json", why: format!("{p:?} is not a path in the repository") });
        }
        // The name picks the app version's key file (`<name>.pub`), so it is a repository
        // name and nothing that could name a path.
        let fqrn =
            r.name.contains('.') && !r.name.starts_with('.') && r.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !fqrn {
            return Err(crate::Error::Invalid {
                what: "data.json",
                why: format!("name {:?} is not a repository name like gentoo.gah", r.name),
            });
        }
        if !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
            return Err(crate::Error::Invalid { what: "data.json", why: format!("url {:?} is not http(s)", r.url) });
        }
        if r.root_catalog.len() != 40 || !r.root_catalog.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(crate::Error::Invalid { what: "data.json", why: "root_catalog is not a hex SHA-1".to_owned() });
        }
        Ok(r)
    }

    /// The JSON text.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a data reference serialises")
    }
}

/// `/a/b`: absolute, with no empty, `.` or `..` part.
fn is_repository_path(p: &str) -> bool {
    p.strip_prefix('/').is_some_and(|rest| !rest.is_empty() && rest.split('/').all(|part| !part.is_empty() && part != "." && part != ".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> DataRef {
        DataRef {
            format: DATA_REF_FORMAT,
            name: "gentoo.gah".into(),
            url: "http://127.0.0.1:8080/gentoo.gah".into(),
            revision: 3,
            root_catalog: "ab".repeat(20),
            repo: "/repos/gah".into(),
            distfiles: vec!["/distfiles/bzip2-1.0.8.tar.gz".into()],
            binpkgs: Some("/binpkgs".into()),
            base: Some(BASE_AT.into()),
            disk: Some(DISK_AT.into()),
        }
    }

    #[test]
    fn the_disk_is_in_its_folder() {
        assert_eq!(DISK_AT.rsplit_once('/').map(|(dir, _)| dir), Some(DISK_DIR));
    }

    #[test]
    fn it_round_trips_and_refuses_paths_that_could_leave_the_repository() {
        assert_eq!(DataRef::from_json(&example().to_json()).unwrap(), example());
        for bad in ["repos/gah", "/repos/../etc", "/", "/repos//gah", "/repos/./gah"] {
            let r = DataRef { repo: bad.into(), ..example() };
            assert!(DataRef::from_json(&r.to_json()).is_err(), "{bad}");
        }
        let r = DataRef { binpkgs: Some("/binpkgs/../../etc".into()), ..example() };
        assert!(DataRef::from_json(&r.to_json()).is_err());
        let r = DataRef { base: Some("/../base".into()), ..example() };
        assert!(DataRef::from_json(&r.to_json()).is_err());
        let r = DataRef { disk: Some("/base-disk/../../x".into()), ..example() };
        assert!(DataRef::from_json(&r.to_json()).is_err());
        let without = DataRef { binpkgs: None, base: None, disk: None, ..example() };
        assert!(!String::from_utf8(without.to_json()).unwrap().contains("binpkgs"), "left out when none");
        assert!(!String::from_utf8(without.to_json()).unwrap().contains("base"), "left out when none");
        assert!(!String::from_utf8(without.to_json()).unwrap().contains("disk"), "left out when none");
        let r = DataRef { root_catalog: "xyz".into(), ..example() };
        assert!(DataRef::from_json(&r.to_json()).is_err());
        let r = DataRef { format: 2, ..example() };
        assert!(DataRef::from_json(&r.to_json()).is_err());
        for bad in ["../../etc/key", "gah", ".gah", "a/b.c", ""] {
            let r = DataRef { name: bad.into(), ..example() };
            assert!(DataRef::from_json(&r.to_json()).is_err(), "{bad}");
        }
        let r = DataRef { url: "file:///etc".into(), ..example() };
        assert!(DataRef::from_json(&r.to_json()).is_err());
    }
}
