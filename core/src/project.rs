//! Where the server programs find the project's data: the results database, the work
//! generator's queue folder and the tree snapshot label, decided by the project, not by
//! whoever starts a daemon.
//!
//! BOINC's daemons (`bin/start`, make_project's crontab) run in `tmp_<host>/` of the
//! project with the starter's environment, and `script_assimilator` passes its script nothing
//! but keyword values. So each setting is taken, first found wins, from:
//! 1. the command line (`--db`, `--queue`, `--snapshot`; `--config FILE` names the file),
//! 2. the project file [`FILE_NAME`]: `./gah.conf`, else `../gah.conf` (the project folder
//!    seen from `tmp_<host>/`),
//! 3. the environment (`GAH_RESULTS_DB`, `GAH_QUEUE_DIR`, `GAH_SNAPSHOT`).
//!
//! The file has one `key = value` a line, `#` comments, and the keys `results_db`,
//! `queue_dir`, `snapshot` and `binpkgs_dir` (`GAH_BINPKGS_DIR`: where volunteers' binary
//! packages go once replicas agree on them, see [`Resolved::binpkgs_dir`]), and (file only)
//! `localise_repo`, `localise_profile`: the
//! repository metadata (a folder with `profiles/repo_name` and `metadata/md5-cache`) and the
//! profile the assimilator localises failures over (issue 13; without `localise_repo` it
//! does not). A relative path is relative to the file's folder:
//!
//! ```text
//! # /home/boincadm/projects/gah/gah.conf
//! results_db = results/results.sqlite
//! queue_dir = /var/lib/gah/queue
//! ```
//!
//! A daemon that finds no results database refuses ([`Resolved::require_results_db`]),
//! naming all three places, rather than creating a database wherever it was started.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The project file's name.
pub const FILE_NAME: &str = "gah.conf";

/// A project file that could not be read, or no results database anywhere.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// The file could not be read.
    #[error("read the project file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line of the file is not `key = value` with a known key.
    #[error("{}:{line}: {why}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line number (from 1).
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// No results database on the command line, in a project file or in the environment.
    #[error(
        "no results database configured: give --db on the command line, or `results_db = PATH` in the project's {FILE_NAME} \
         (looked for {}), or set GAH_RESULTS_DB",
        looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and ")
    )]
    NoResultsDb {
        /// The project files looked for.
        looked: Vec<PathBuf>,
    },
}

/// What the command line gives (each `None` when not given).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`: the project file to read instead of looking for one.
    pub config: Option<PathBuf>,
    /// `--db`.
    pub results_db: Option<PathBuf>,
    /// `--queue`.
    pub queue_dir: Option<PathBuf>,
    /// `--snapshot`.
    pub snapshot: Option<String>,
}

/// The settings once resolved (see the module docs for the order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// The results database.
    pub results_db: Option<PathBuf>,
    /// The work generator's queue folder.
    pub queue_dir: Option<PathBuf>,
    /// The tree snapshot label.
    pub snapshot: Option<String>,
    /// The repository metadata failures are localised over (project file only).
    pub localise_repo: Option<PathBuf>,
    /// The profile they are localised under (project file only).
    pub localise_profile: Option<PathBuf>,
    /// The project's folder for volunteers' binary packages (`binpkgs_dir`, else
    /// `GAH_BINPKGS_DIR`): the packages replicas agreed on (`agreed.sqlite`, the validator's)
    /// and the package store (`store/`, the assimilator's, published at `/binpkgs`). `None`:
    /// no package goes further than the validator.
    pub binpkgs_dir: Option<PathBuf>,
    /// The project file read, if any.
    pub file: Option<PathBuf>,
    looked: Vec<PathBuf>,
}

impl Resolved {
    /// The results database, or the error naming every place it could have come from.
    pub fn require_results_db(&self) -> Result<&Path, ProjectError> {
        self.results_db.as_deref().ok_or_else(|| ProjectError::NoResultsDb { looked: self.looked.clone() })
    }
}

/// Resolves the settings from `over`, the project file (`over.config`, else looked for
/// from `cwd`) and `env` (a lookup like [`std::env::var_os`]; empty values count as unset).
pub fn resolve(over: &Overrides, cwd: &Path, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Resolved, ProjectError> {
    let (file, looked) = match &over.config {
        Some(path) => (Some(read(path)?), vec![path.clone()]),
        None => {
            let looked = vec![cwd.join(FILE_NAME), cwd.join("..").join(FILE_NAME)];
            let found = looked.iter().find(|p| p.is_file()).map(|p| read(p)).transpose()?;
            (found, looked)
        }
    };
    let file = file.unwrap_or_default();
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    Ok(Resolved {
        results_db: over.results_db.clone().or(file.results_db).or_else(|| var("GAH_RESULTS_DB").map(PathBuf::from)),
        queue_dir: over.queue_dir.clone().or(file.queue_dir).or_else(|| var("GAH_QUEUE_DIR").map(PathBuf::from)),
        snapshot: over.snapshot.clone().or(file.snapshot).or_else(|| var("GAH_SNAPSHOT").map(|v| v.to_string_lossy().into_owned())),
        localise_repo: file.localise_repo,
        localise_profile: file.localise_profile,
        binpkgs_dir: file.binpkgs_dir.or_else(|| var("GAH_BINPKGS_DIR").map(PathBuf::from)),
        file: file.path,
        looked,
    })
}

/// [`resolve`] from the process's working directory and environment.
pub fn resolve_here(over: &Overrides) -> Result<Resolved, ProjectError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    resolve(over, &cwd, &|name| std::env::var_os(name))
}

#[derive(Default)]
struct File {
    path: Option<PathBuf>,
    results_db: Option<PathBuf>,
    queue_dir: Option<PathBuf>,
    snapshot: Option<String>,
    localise_repo: Option<PathBuf>,
    localise_profile: Option<PathBuf>,
    binpkgs_dir: Option<PathBuf>,
}

fn read(path: &Path) -> Result<File, ProjectError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProjectError::Read { path: path.to_owned(), source })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut file = File { path: Some(path.to_owned()), ..File::default() };
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let syntax = |why: String| ProjectError::Syntax { path: path.to_owned(), line: i + 1, why };
        let (key, value) = line.split_once('=').ok_or_else(|| syntax("expected `key = value`".to_owned()))?;
        let value = value.trim();
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        if value.is_empty() {
            return Err(syntax(format!("`{}` has no value", key.trim())));
        }
        match key.trim() {
            "results_db" => file.results_db = Some(base.join(value)),
            "queue_dir" => file.queue_dir = Some(base.join(value)),
            "snapshot" => file.snapshot = Some(value.to_owned()),
            "localise_repo" => file.localise_repo = Some(base.join(value)),
            "localise_profile" => file.localise_profile = Some(base.join(value)),
            "binpkgs_dir" => file.binpkgs_dir = Some(base.join(value)),
            other => {
                return Err(syntax(format!(
                    "unknown key `{other}` (known: results_db, queue_dir, snapshot, localise_repo, localise_profile, binpkgs_dir)"
                )))
            }
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn the_command_line_beats_the_project_file_which_beats_the_environment() {
        let project = tempfile::tempdir().unwrap();
        let tmp_host = project.path().join("tmp_host");
        std::fs::create_dir(&tmp_host).unwrap();
        std::fs::write(project.path().join(FILE_NAME), "# gah\nresults_db = results/r.sqlite\nsnapshot = \"git:abc\"\n").unwrap();
        let all_env = env(&[("GAH_RESULTS_DB", "/env/r.sqlite"), ("GAH_QUEUE_DIR", "/env/q"), ("GAH_SNAPSHOT", "git:env")]);

        let r = resolve(&Overrides::default(), &tmp_host, &all_env).unwrap();
        assert_eq!(r.results_db.as_deref(), Some(tmp_host.join("../results/r.sqlite").as_path()));
        assert_eq!((r.queue_dir.as_deref(), r.snapshot.as_deref()), (Some(Path::new("/env/q")), Some("git:abc")));
        assert_eq!(r.file, Some(tmp_host.join("..").join(FILE_NAME)));

        let over = Overrides { results_db: Some("/cli/r.sqlite".into()), ..Overrides::default() };
        let r = resolve(&over, &tmp_host, &all_env).unwrap();
        assert_eq!(r.require_results_db().unwrap(), Path::new("/cli/r.sqlite"));

        let elsewhere = tempfile::tempdir().unwrap();
        let r = resolve(&Overrides::default(), elsewhere.path(), &all_env).unwrap();
        assert_eq!((r.results_db.as_deref(), r.file), (Some(Path::new("/env/r.sqlite")), None));

        let other = project.path().join("other.conf");
        std::fs::write(&other, "queue_dir = q\nlocalise_repo = gah/repo\n").unwrap();
        let r = resolve(&Overrides { config: Some(other), ..Overrides::default() }, elsewhere.path(), &env(&[])).unwrap();
        assert_eq!(r.queue_dir, Some(project.path().join("q")));
        assert_eq!((r.localise_repo, r.localise_profile), (Some(project.path().join("gah/repo")), None));
    }

    #[test]
    fn nothing_configured_is_refused_naming_all_three_places() {
        let dir = tempfile::tempdir().unwrap();
        let r = resolve(&Overrides::default(), dir.path(), &env(&[("GAH_RESULTS_DB", "")])).unwrap();
        let e = r.require_results_db().unwrap_err().to_string();
        for needle in ["--db", "results_db = PATH", "GAH_RESULTS_DB", &dir.path().join(FILE_NAME).display().to_string()] {
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn a_bad_line_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        for (text, why) in [("results_db\n", "expected `key = value`"), ("\ndb = x\n", "unknown key `db`"), ("snapshot =\n", "no value")] {
            std::fs::write(&path, text).unwrap();
            let e = resolve(&Overrides::default(), dir.path(), &env(&[])).unwrap_err().to_string();
            assert!(e.starts_with(&path.display().to_string()) && e.contains(why), "{e}");
        }
    }
}
