//! Where the project's parts are on disk: the embedded default overlay, the cached
//! artefacts (`.cache/`, git-ignored) and the results database.

use std::path::{Path, PathBuf};

/// The folders `gah` works with, all derived from the project root.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The checkout itself (scripts/, templates/, target/).
    pub root: PathBuf,
    /// The embedded test overlay.
    pub overlay: PathBuf,
    /// Repacked upstream sources.
    pub distfiles: PathBuf,
    /// The test guest image.
    pub image: PathBuf,
    /// The package store: what accepted jobs' replicas built alike, shared across jobs
    /// (published at `/binpkgs`).
    pub binpkgs: PathBuf,
    /// One folder per job run.
    pub runs: PathBuf,
    /// The local CernVM-FS data plane (`gah run` publishes the overlay and the distfiles
    /// there and reads each job's inputs back through it): `srv/` served, `keys/`, the
    /// host's `client-cache/`.
    pub cvmfs: PathBuf,
    /// The results database.
    pub db: PathBuf,
}

impl Layout {
    /// The layout under `root`; the database goes where `$GAH_RESULTS_DB` says, else
    /// `results/results.sqlite`.
    pub fn new(root: &Path) -> Layout {
        let cache = root.join(".cache");
        let db = std::env::var_os("GAH_RESULTS_DB").map(PathBuf::from).unwrap_or_else(|| root.join("results/results.sqlite"));
        Layout {
            root: root.to_path_buf(),
            overlay: root.join("vm-images/overlay"),
            distfiles: cache.join("distfiles"),
            image: cache.join("images/test"),
            binpkgs: cache.join("binpkgs"),
            runs: cache.join("runs"),
            cvmfs: cache.join("cvmfs"),
            db,
        }
    }

    /// Where packages are staged on their way into [`Layout::binpkgs`] (same file system,
    /// never published).
    pub fn binpkgs_staging(&self) -> PathBuf {
        self.binpkgs.with_file_name("binpkgs-incoming")
    }

    /// Finds the project root: `$GAH_ROOT`, else the nearest folder upwards from the current
    /// one that holds `vm-images/overlay`.
    pub fn discover() -> anyhow::Result<Layout> {
        if let Some(root) = std::env::var_os("GAH_ROOT") {
            return Ok(Layout::new(Path::new(&root)));
        }
        let cwd = std::env::current_dir()?;
        for dir in cwd.ancestors() {
            if dir.join("vm-images/overlay").is_dir() {
                return Ok(Layout::new(dir));
            }
        }
        anyhow::bail!(
            "not inside a gentoo@home checkout (no vm-images/overlay above {}); set GAH_ROOT (`gah results` needs only GAH_RESULTS_DB or --db)",
            cwd.display()
        )
    }

    /// Names what `gah run` needs and is missing, with the command that makes it.
    pub fn check_ready(&self) -> anyhow::Result<()> {
        let needs = [
            (self.overlay.join("metadata/md5-cache"), "the overlay's md5-cache (vm-images/overlay)"),
            (self.distfiles.clone(), "the distfiles (vm-images/distfiles/make-distfiles.sh)"),
            (self.image.join("rootfs"), "the guest image (vm-images/test-image/build.sh)"),
        ];
        for (path, what) in needs {
            if !path.exists() {
                anyhow::bail!("{} is missing: {what}; `scripts/setup.sh` builds everything", path.display());
            }
        }
        Ok(())
    }
}
