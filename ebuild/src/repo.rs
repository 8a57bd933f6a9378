//! A whole repository's md5-cache: `metadata/md5-cache/CATEGORY/PF`, plus the repository's
//! name.

use std::path::{Path, PathBuf};

use crate::md5cache::{read_entry, Diagnostic, Ebuild, Severity};

/// A repository read from its md5-cache.
#[derive(Debug, Clone)]
pub struct Repository {
    /// `repo_name`: `profiles/repo_name`, else `repo-name` of `metadata/layout.conf`, else the
    /// folder's name.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// Every entry that parsed, sorted by cpv.
    pub ebuilds: Vec<Ebuild>,
}

/// The ebuild `cpv` of the repository named `repo` among `repos`.
pub fn find_ebuild<'r>(repos: &'r [Repository], repo: &str, cpv: &str) -> Option<&'r Ebuild> {
    repos.iter().filter(|r| r.name == repo).flat_map(|r| r.ebuilds.iter()).find(|e| e.cpv == cpv)
}

/// The repository's name, as Portage finds it.
pub fn repo_name(path: &Path) -> String {
    if let Ok(s) = std::fs::read_to_string(path.join("profiles/repo_name")) {
        if let Some(line) = s.lines().map(str::trim).find(|l| !l.is_empty()) {
            return line.to_owned();
        }
    }
    if let Ok(s) = std::fs::read_to_string(path.join("metadata/layout.conf")) {
        for line in s.lines() {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == "repo-name" && !v.trim().is_empty() {
                    return v.trim().to_owned();
                }
            }
        }
    }
    // A relative path like `.` has no file name: canonicalise first.
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    abs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "unnamed".to_owned())
}

/// Reads a repository's md5-cache. Unreadable or broken entries become diagnostics; a
/// missing cache folder is one error diagnostic and an empty repository.
pub fn read_repository(path: &Path) -> (Repository, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut ebuilds = Vec::new();
    let cache = path.join("metadata/md5-cache");
    let name = repo_name(path);
    let error = |p: &Path, message: String| Diagnostic { severity: Severity::Error, path: p.to_owned(), line: None, message };
    match sorted_dir(&cache) {
        Err(e) => diags.push(error(&cache, format!("cannot read md5-cache folder: {e}"))),
        Ok(categories) => {
            for cat_path in categories {
                let Some(category) = file_name(&cat_path) else {
                    diags.push(error(&cat_path, "file name is not valid UTF-8".into()));
                    continue;
                };
                match std::fs::metadata(&cat_path) {
                    Ok(m) if m.is_dir() => {}
                    // layout.conf-era caches may hold stray files; they are not entries.
                    Ok(m) if m.is_file() => continue,
                    Ok(_) => {
                        diags.push(error(&cat_path, "not a category folder (a special file): skipped".into()));
                        continue;
                    }
                    Err(e) => {
                        diags.push(error(&cat_path, format!("cannot read category folder: {e}")));
                        continue;
                    }
                }
                let entries = match sorted_dir(&cat_path) {
                    Ok(e) => e,
                    Err(e) => {
                        diags.push(error(&cat_path, format!("cannot read category folder: {e}")));
                        continue;
                    }
                };
                for entry in entries {
                    let Some(pf) = file_name(&entry) else {
                        diags.push(error(&entry, "file name is not valid UTF-8".into()));
                        continue;
                    };
                    if pf.starts_with('.') {
                        continue;
                    }
                    // Whatever is skipped is said: a folder (or a link to one, `.` included),
                    // a link loop or a dangling link, a special file that could block a read.
                    match std::fs::metadata(&entry) {
                        Ok(m) if m.is_file() => {}
                        Ok(m) if m.is_dir() => {
                            diags.push(error(&entry, "a folder where an md5-cache entry file should be: skipped".into()));
                            continue;
                        }
                        Ok(_) => {
                            diags.push(error(&entry, "not a regular file (a special file): skipped".into()));
                            continue;
                        }
                        Err(e) => {
                            diags.push(error(&entry, format!("cannot read: {e}")));
                            continue;
                        }
                    }
                    let cpv = format!("{category}/{pf}");
                    if gah_core::job::split_cpv(&cpv).is_none() {
                        diags.push(error(&entry, format!("`{pf}` is not package-version")));
                        continue;
                    }
                    if let Some(e) = read_entry(&entry, &cpv, &mut diags) {
                        ebuilds.push(e);
                    }
                }
            }
        }
    }
    (Repository { name, path: path.to_owned(), ebuilds }, diags)
}

fn sorted_dir(p: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(p)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    Ok(v)
}

fn file_name(p: &Path) -> Option<String> {
    p.file_name()?.to_str().map(str::to_owned)
}
