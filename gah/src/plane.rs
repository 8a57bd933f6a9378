//! `gah run`'s CernVM-FS data plane (issue 11, items 4 and 5): the embedded overlay (at
//! `/repos/<name>`), the distfiles (at `/distfiles`) and the binary packages of accepted jobs
//! (at `/binpkgs`, with Portage's `Packages` index) are published as the next revision of a
//! local repository in `.cache/cvmfs/srv/`, served on 127.0.0.1 as the project's Apache serves
//! its own, and each job's `gah-app` gets a `data.json` and reads its inputs through the same
//! verifying reader and host cache a volunteer's does. No job gets a folder of ours. After a
//! job's packages join the cache, [`LocalPlane::republish`] makes them the next revision.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use gah_core::data_ref::{repo_path, DataRef, BASE_AT, BINPKGS_AT, DEFAULT_NAME, DISK_AT, DISTFILES_AT};
use gah_core::job::Job;
use gah_ebuild::{Profile, Repository};
use gah_publish::Mount;
use gah_workgen::distfiles::{Index, Mirror};

use crate::layout::Layout;

/// The local repository's name (its key is `keys/<name>.pub`).
const NAME: &str = DEFAULT_NAME;

/// The published revision, its server, and what it takes to say which distfiles a job needs.
pub struct LocalPlane {
    url: String,
    /// The current revision and its root catalog (a later job reads a later one).
    current: std::sync::Mutex<(u64, String)>,
    /// What is published, and where.
    overlay: PathBuf,
    overlay_at: String,
    distfiles: PathBuf,
    binpkgs: PathBuf,
    /// The guest root published at `/base` (sandbox), if any.
    base: Option<PathBuf>,
    /// The root disk published at `/base-disk/rootfs.ext4` (vm), if any.
    disk: Option<PathBuf>,
    /// The guest image folder (kernel, initramfs, disk; and `rootfs/` unless published).
    image: PathBuf,
    repo_dir: PathBuf,
    keys: PathBuf,
    master_key: PathBuf,
    client_cache: PathBuf,
    repos: Vec<Repository>,
    mirror: Mirror,
    profile: Profile,
    _server: StaticServer,
}

impl LocalPlane {
    /// Publishes the overlay, the distfiles and the binary packages (only changed objects are
    /// written), and starts serving them.
    /// With `base` (the image's `rootfs/`), the guest root is published at `/base` and
    /// `gah-app` reads it from there, once per base content, as a volunteer's does; with
    /// `disk` (the image's `rootfs.ext4`), so is the vm's root disk, at `/base-disk`.
    pub fn start(layout: &Layout, repos: Vec<Repository>, profile: Profile, guest_root: GuestRoot) -> anyhow::Result<LocalPlane> {
        let (base, disk) = match guest_root {
            GuestRoot::Image => (None, None),
            GuestRoot::Tree(tree) => (Some(tree), None),
            GuestRoot::Disk(disk) => (None, Some(disk)),
        };
        let srv = layout.cvmfs.join("srv");
        let overlay_name = repos.first().map_or_else(|| "gah".to_owned(), |r| r.name.clone());
        anyhow::ensure!(
            gah_ebuild::md5cache::is_plain_name(&overlay_name),
            "{}: {overlay_name:?} is not a repository name (profiles/repo_name)",
            layout.overlay.display()
        );
        let server = StaticServer::start(&srv).context("serving the local CernVM-FS repository")?;
        let url = format!("http://{}/{NAME}", server.addr);
        let keys = layout.cvmfs.join("keys");
        let plane = LocalPlane {
            url,
            current: std::sync::Mutex::new((0, String::new())),
            overlay: layout.overlay.clone(),
            overlay_at: repo_path(&overlay_name),
            distfiles: layout.distfiles.clone(),
            binpkgs: layout.binpkgs.clone(),
            base,
            disk,
            image: layout.image.clone(),
            repo_dir: srv.join(NAME),
            master_key: gah_publish::keys::master_pub_path(&keys, NAME),
            keys,
            client_cache: layout.cvmfs.join("client-cache"),
            repos,
            mirror: Mirror::new(&layout.distfiles, &["amd64", "~amd64"]),
            profile,
            _server: server,
        };
        let revision = plane.republish()?;
        let base = match (&plane.base, &plane.disk) {
            (Some(tree), _) => format!(", the guest root {}", tree.display()),
            (None, Some(disk)) => format!(", the root disk {}", disk.display()),
            (None, None) => String::new(),
        };
        println!(
            "gah run: published {}, {}, {}{base} as {NAME} revision {revision}, served at {}",
            plane.overlay.display(),
            plane.distfiles.display(),
            plane.binpkgs.display(),
            plane.url
        );
        Ok(plane)
    }

    /// Publishes the folders again as the next revision, which later jobs read (the ones
    /// running keep theirs); returns its number.
    pub fn republish(&self) -> anyhow::Result<u64> {
        let mut mounts = vec![
            Mount { at: &self.overlay_at, from: &self.overlay },
            Mount { at: DISTFILES_AT, from: &self.distfiles },
            Mount { at: BINPKGS_AT, from: &self.binpkgs },
        ];
        mounts.extend(self.base.as_deref().map(|from| Mount { at: BASE_AT, from }));
        mounts.extend(self.disk.as_deref().map(|from| Mount { at: DISK_AT, from }));
        let published = gah_publish::publish_mounts(&mounts, &self.repo_dir, NAME, &self.keys)
            .with_context(|| format!("publishing into {}", self.repo_dir.display()))?;
        *self.current.lock().expect("the plane's revision") = (published.revision, published.root_catalog_hash);
        Ok(published.revision)
    }

    /// The job's `data.json`: this revision, its repository's folder, the distfiles it
    /// needs (its own and its dependencies') and the binary packages. A distfile that is
    /// missing or does not match its Manifest is left out, with a warning: the build then fails
    /// at fetch, naming it.
    pub fn data_ref(&self, job: &Job) -> anyhow::Result<DataRef> {
        let needs = Index::new(&self.repos).needs_of_job(&self.mirror, &self.profile, job).unwrap_or_default();
        let mut distfiles = Vec::new();
        for need in needs {
            match need.problem {
                None => distfiles.push(need.file),
                Some(problem) => eprintln!("gah run: {} (needed by {}) is not published: {problem}", need.file, need.needed_by),
            }
        }
        let (revision, root_catalog) = self.current.lock().expect("the plane's revision").clone();
        let data = DataRef::new(NAME, &self.url, revision, &root_catalog, &job.repo, distfiles, true)?;
        let data = if self.base.is_some() { data.with_base() } else { data };
        Ok(if self.disk.is_some() { data.with_disk() } else { data })
    }

    /// `gah-app`'s arguments for a job whose `data.json` is at `data`: the data plane, and
    /// the image's files (all of them with `--image`, or only the vm's when the guest root
    /// comes from the plane; a disk `data.json` names wins over the image's, so a published
    /// disk leaves `--image` as it is).
    pub fn app_args(&self, data: &Path) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec!["--data".into(), data.into()];
        args.extend(["--cvmfs-key".into(), self.master_key.clone().into()]);
        args.extend(["--cvmfs-cache".into(), self.client_cache.clone().into()]);
        if self.base.is_some() {
            for (option, file) in [("--kernel", "vmlinux"), ("--initramfs", "initramfs.cpio.gz"), ("--rootfs-disk", "rootfs.ext4")] {
                args.extend([option.into(), self.image.join(file).into()]);
            }
        } else {
            args.extend(["--image".into(), self.image.clone().into()]);
        }
        args
    }
}

/// Where `gah run`'s guest root comes from.
pub enum GuestRoot {
    /// The image folder's own files (`--image`).
    Image,
    /// This folder (the image's `rootfs/`), published at `/base` (the sandbox's).
    Tree(PathBuf),
    /// This disk image (the image's `rootfs.ext4`), published at `/base-disk` (the vm's).
    Disk(PathBuf),
}

/// A folder served over HTTP on a loopback port (static files only, as the project's web
/// server serves the repository), until dropped.
struct StaticServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StaticServer {
    fn start(root: &Path) -> anyhow::Result<StaticServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
        let app = axum::Router::new().fallback_service(tower_http::services::ServeDir::new(root));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("cvmfs-http".into()).spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return tracing::error!("local CernVM-FS server: {e}"),
                };
                let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stopped.await;
                });
                if let Err(e) = serve.await {
                    tracing::error!("local CernVM-FS server: {e}");
                }
            });
        })?;
        Ok(StaticServer { addr, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()).unwrap()
    }

    /// What `gah-app` reads: the data reference verifies against the published repository
    /// over the served URL, and names the distfile the ebuild's Manifest records.
    #[test]
    fn a_job_reads_its_inputs_through_the_served_repository() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let overlay = root.join("vm-images/overlay");
        std::fs::create_dir_all(overlay.join("profiles")).unwrap();
        std::fs::write(overlay.join("profiles/repo_name"), "gah\n").unwrap();
        std::fs::create_dir_all(overlay.join("metadata/md5-cache/app-misc")).unwrap();
        std::fs::write(
            overlay.join("metadata/md5-cache/app-misc/hello-1"),
            "EAPI=8\nKEYWORDS=amd64\nSLOT=0\nSRC_URI=https://example.org/hello-1.tar.gz\n_md5_=0123\n",
        )
        .unwrap();
        std::fs::create_dir_all(overlay.join("app-misc/hello")).unwrap();
        let tarball = b"a tarball";
        let manifest =
            format!("DIST hello-1.tar.gz {} SHA512 {}\n", tarball.len(), hex::encode(<sha2::Sha512 as sha2::Digest>::digest(tarball)));
        std::fs::write(overlay.join("app-misc/hello/Manifest"), manifest).unwrap();
        let layout = Layout::new(root);
        std::fs::create_dir_all(&layout.distfiles).unwrap();
        std::fs::write(layout.distfiles.join("hello-1.tar.gz"), tarball).unwrap();
        std::fs::write(layout.distfiles.join("unrelated.tar.gz"), b"x").unwrap();
        std::fs::create_dir_all(&layout.binpkgs).unwrap();
        let (repos, _) = gah_workgen::plan::load_repos(std::slice::from_ref(&layout.overlay));
        let plane = LocalPlane::start(&layout, repos, Profile::amd64_linux(), GuestRoot::Image).unwrap();
        let job = Job::new("gah", "app-misc/hello-1", Default::default(), gah_core::job::Compiler::Gcc, 60);
        let data = plane.data_ref(&job).unwrap();
        assert_eq!(data.distfiles, ["/distfiles/hello-1.tar.gz"]);
        assert_eq!(data.repo, "/repos/gah");
        let cache = gah_publish::fetch::Cache::open(&root.join("cache"), 1 << 30).unwrap();
        let http = std::sync::Arc::new(gah_publish::fetch::Http::new(&data.url, NAME, cache, None).unwrap());
        let reader = gah_publish::verify_from(http, NAME, &plane.master_key, now()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hex::encode(reader.root_catalog()), data.root_catalog);
        assert_eq!(reader.read("/distfiles/hello-1.tar.gz").unwrap(), tarball);
        assert_eq!(data.binpkgs.as_deref(), Some(BINPKGS_AT));

        // A job's packages joined the cache: the next job reads them in the next revision.
        std::fs::write(layout.binpkgs.join("Packages"), b"index").unwrap();
        let next = plane.republish().unwrap();
        let data = plane.data_ref(&job).unwrap();
        assert_eq!(data.revision, next);
        let cache = gah_publish::fetch::Cache::open(&root.join("cache"), 1 << 30).unwrap();
        let http = std::sync::Arc::new(gah_publish::fetch::Http::new(&data.url, NAME, cache, None).unwrap());
        let reader = gah_publish::verify_from(http, NAME, &plane.master_key, now()).unwrap();
        assert_eq!(reader.read("/binpkgs/Packages").unwrap(), b"index");
    }
}
