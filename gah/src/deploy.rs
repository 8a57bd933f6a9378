//! `gah deploy`: installs gentoo@home into a BOINC project made by BOINC's `make_project`, as
//! an admin would by hand (docs/DEPLOY.md), and says what it did. Running it again changes
//! nothing that is already in place; a setting the admin changed is kept and named.
//!
//! What goes where (BOINC's own rules, with their sources):
//! - programs into `bin/`: `script_validator`/`script_assimilator` run `../bin/<program>` from
//!   `tmp_<host>/` (sched/script_validator.cpp, sched/script_assimilator.cpp), and `bin/start`
//!   runs every `<daemon>` from `bin/` (py/Boinc/boinc_project_path + sched/start);
//! - the workunit templates into `templates/` (create_work's `--wu_template` path);
//! - our plan classes into `plan_class_spec.xml` (sched/plan_class_spec.cpp reads it from
//!   the project folder), keeping the project's other classes;
//! - the app into `project.xml`, then `bin/xadd` (tools/xadd adds what is missing);
//! - each plan class's app version under `apps/gah/<version>/x86_64-pc-linux-gnu__<class>/`
//!   (scripts/package-app-version.sh --boinc-apps), then `bin/update_versions --noconfirm`,
//!   which signs the files with the project's code-signing key and stages them;
//! - `gah.conf` (gah_core::project) naming the results database and the queue;
//! - with `--repo`, the data plane (issue 11): the repository (at `/repos/<its name>`), the
//!   distfiles (at `/distfiles`) and, with the sandbox plan class, the image's guest root (at
//!   `/base`; the sandbox app version then carries no `rootfs.tar`) and, with a vm plan
//!   class, its root disk (at `/base-disk/rootfs.ext4`, in chunks; the vm app version then
//!   carries no `rootfs.ext4`) published as the next revision of the CernVM-FS repository
//!   `gentoo.gah` in `<download_dir>/cvmfs/gentoo.gah` (config.xml's; make_project's Apache
//!   configuration serves that folder with PHP off), keys in `gah/cvmfs-keys/`, the public
//!   master key shipped as every app version's `gentoo.gah.pub`;
//! - with `--repo`, `gah.conf`'s `binpkgs_dir` (`gah/binpkgs`, kept when the admin set
//!   another): the packages replicas agreed on go into its `store/` (the assimilator's), which
//!   each deploy publishes at `/binpkgs` for later jobs;
//! - the validator, assimilator and work generator daemons into `config.xml`'s `<daemons>`,
//!   the lines of templates/README.md ("Server daemons"), and a daily `<task>` re-signing the
//!   data plane's whitelist (`gah-publish --resign`; `bin/start --cron` runs tasks).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use quick_xml::events::Event;

/// The BOINC app's name (templates/app_info.xml, the work generator's `--appname`).
const APP_NAME: &str = "gah";
/// The only platform gah-app is built for.
const PLATFORM: &str = "x86_64-pc-linux-gnu";
/// The programs the server runs, installed into `bin/`.
const SERVER_PROGRAMS: [&str; 8] = [
    "gah-validate-init",
    "gah-validate-compare",
    "gah-assimilate",
    "gah-workgen",
    "gah",
    "gah-validator",
    "gah-assimilator",
    "gah-publish",
];
/// Where, inside the project, gentoo@home keeps its own data.
const DATA_DIR: &str = "gah";

/// `gah deploy`'s options.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct DeployArgs {
    /// The BOINC project folder made by make_project (holds config.xml, project.xml, bin/).
    #[arg(long)]
    pub project: PathBuf,
    /// Plan classes to publish an app version for (templates/plan_class_spec.xml):
    /// sandbox gets the sandbox flavour, the vm* classes the vm flavour.
    #[arg(long, value_delimiter = ',', default_value = "sandbox,vm_vmx,vm_svm,vm")]
    pub plan_classes: Vec<String>,
    /// The app version number (update_versions' folder name; a new build needs a new one,
    /// since BOINC never changes a published version).
    #[arg(long, default_value_t = 100)]
    pub version_num: u32,
    /// The ebuild repository the work generator submits jobs over; published (at
    /// /repos/<its name>) into the project's CernVM-FS repository, which each workunit's
    /// data.json names.
    #[arg(long)]
    pub repo: Option<PathBuf>,
    /// The distfiles the jobs need (published at /distfiles, only files whose Manifest
    /// checksums match are named to jobs); with --repo.
    #[arg(long, requires = "repo")]
    pub distfiles: Option<PathBuf>,
    /// The URL volunteers read the CernVM-FS repository from [default: config.xml's
    /// download_url + /cvmfs/gentoo.gah].
    #[arg(long)]
    pub data_url: Option<String>,
    /// More options for the queue's `gah-workgen generate` (e.g. `--workgen-arg=--strategy
    /// --workgen-arg=pairwise`); with --repo.
    #[arg(long, requires = "repo", allow_hyphen_values = true)]
    pub workgen_arg: Vec<String>,
    /// Unsent results the work generator keeps on the server.
    #[arg(long, default_value_t = 100)]
    pub keep_unsent: u32,
    /// Where the built programs are [default: target/release of this checkout].
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// The guest image [default: .cache/images/test of this checkout].
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Skip the app version (no image here, or published already).
    #[arg(long)]
    pub no_app_version: bool,
    /// Do not localise failures. By default, with --repo, the repository's metadata
    /// (`profiles/repo_name`, `metadata/layout.conf`, `metadata/md5-cache`) is copied to
    /// `gah/repo/` and the work generator's daemon gets `--localise-repo ../gah/repo`: each
    /// real failure gets follow-up jobs until its minimal failing set is known (issue 13).
    #[arg(long)]
    pub no_localise: bool,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Installed,
    Updated,
    Unchanged,
    /// The admin's own setting differs from ours; it stays.
    KeptYours,
}

impl fmt::Display for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Done::Installed => "installed",
            Done::Updated => "updated",
            Done::Unchanged => "unchanged",
            Done::KeptYours => "kept yours (differs from gentoo@home's; see templates/README.md)",
        })
    }
}

fn say(what: impl fmt::Display, done: Done) {
    println!("deploy: {what}: {done}");
}

/// Installs gentoo@home into the project; `root` is the source checkout.
pub fn deploy(args: &DeployArgs, root: &Path) -> anyhow::Result<()> {
    let project = fs::canonicalize(&args.project).with_context(|| format!("project folder {}", args.project.display()))?;
    for needed in ["config.xml", "project.xml", "bin", "templates", "html/inc"] {
        if !project.join(needed).exists() {
            bail!("{} has no {needed}: not a project made by BOINC's make_project", project.display());
        }
    }
    let plane = DataPlane::of(&project, args)?;
    let image = args.image.clone().unwrap_or_else(|| root.join(".cache/images/test"));
    // The sandbox flavour's guest root goes with the tree (issue 11, item 3): its app version
    // then carries none, and a new base is a publication.
    let base = image.join("rootfs");
    let base = (args.repo.is_some() && args.plan_classes.iter().any(|c| c == "sandbox") && base.is_dir()).then_some(base);
    // And the vm flavour's root disk (stored in chunks): its app version then carries none.
    let disk = image.join("rootfs.ext4");
    let disk = (args.repo.is_some() && args.plan_classes.iter().any(|c| c != "sandbox") && disk.is_file()).then_some(disk);
    if args.repo.is_some() {
        // Refused before anything is installed: a running project keeps its programs.
        plane.refuse_to_drop(args.distfiles.is_some(), base.is_some(), disk.is_some())?;
        if base.is_some() {
            refuse_first_root_for_old_versions(&project, &plane, args, gah_core::data_ref::BASE_AT, "the guest root")?;
        }
        if disk.is_some() {
            refuse_first_root_for_old_versions(&project, &plane, args, gah_core::data_ref::DISK_DIR, "the root disk")?;
            refuse_kernel_drift(&project, &image, args)?;
        }
    }
    let bin = args.bin.clone().unwrap_or_else(|| root.join("target/release"));
    for program in SERVER_PROGRAMS {
        say(format!("bin/{program}"), install_file(&bin.join(program), &project.join("bin").join(program), 0o755)?);
    }
    for template in ["gah_in", "gah_out"] {
        say(
            format!("templates/{template}"),
            install_file(&root.join("templates").join(template), &project.join("templates").join(template), 0o644)?,
        );
    }
    merge_plan_classes(&root.join("templates/plan_class_spec.xml"), &project.join("plan_class_spec.xml"))?;
    let data = project.join(DATA_DIR);
    fs::create_dir_all(data.join("queue")).with_context(|| format!("create {}", data.display()))?;
    fs::create_dir_all(project.join("results")).with_context(|| format!("create {}/results", project.display()))?;
    let mut conf_keys = localise_keys(args)?;
    if args.repo.is_some() {
        // Volunteers' packages that replicas agree on go to a store published at /binpkgs.
        conf_keys.push(("binpkgs_dir", format!("{DATA_DIR}/binpkgs")));
    }
    let conf = project.join(gah_core::project::FILE_NAME);
    say(gah_core::project::FILE_NAME, write_conf(&conf, &conf_keys)?);
    let binpkgs_store =
        gah_core::project::resolve(&gah_core::project::Overrides { config: Some(conf), ..Default::default() }, &project, &|_| None)
            .context("read gah.conf")?
            .binpkgs_dir
            .map(|dir| dir.join(gah_assimilator::binpkgs::STORE));
    // The app version carries the public master key: made now if the project has none yet.
    let (_, made) = gah_publish::keys::load_or_generate(&plane.keys, CVMFS_NAME).map_err(|e| anyhow::anyhow!("{e}"))?;
    say(format!("{DATA_DIR}/cvmfs-keys/{CVMFS_NAME}.pub"), if made { Done::Installed } else { Done::Unchanged });
    if let Some(repo) = &args.repo {
        if let Some(store) = &binpkgs_store {
            fs::create_dir_all(store).with_context(|| format!("create {}", store.display()))?;
        }
        plane.publish(repo, args.distfiles.as_deref(), base.as_deref(), disk.as_deref(), binpkgs_store.as_deref())?;
        generate_queue(&project, repo, &plane, args)?;
        if !args.no_localise {
            say(format!("{DATA_DIR}/repo (metadata the daemon localises failures over)"), copy_metadata(repo, &data.join("repo"))?);
        }
    }
    add_app(&project)?;
    if !args.no_app_version {
        let top_level = gah_publish::current_revision(&plane.published, CVMFS_NAME)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .map(|r| r.top_level)
            .unwrap_or_default();
        let published = |folder: &str| top_level.iter().any(|p| p == folder);
        let (base_published, disk_published) = (published(gah_core::data_ref::BASE_AT), published(gah_core::data_ref::DISK_DIR));
        for plan_class in &args.plan_classes {
            let app_version = AppVersion { plan_class, version_num: args.version_num, base_published, disk_published };
            lay_out_app_version(root, &project, &bin, &image, &plane.master_key(), &app_version)?;
        }
        let out =
            gah_util::process::run_checked(gah_util::process::command("bin/update_versions").arg("--noconfirm").current_dir(&project))
                .context("bin/update_versions (BOINC's; needs php-cli and the project's database)")?;
        for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()) {
            println!("deploy: update_versions: {}", line.trim());
        }
    }
    let config = project.join("config.xml");
    let daemons = daemon_lines(&config, &plane, args)?;
    add_daemons(&config, &daemons)?;
    add_resign_task(&config, &plane)?;
    println!("deploy: done. Start the project's daemons with `bin/start` in {} (docs/DEPLOY.md)", project.display());
    Ok(())
}

/// The CernVM-FS repository's name (the app version's key file is `<name>.pub`).
const CVMFS_NAME: &str = "gentoo.gah";

/// Where the project's CernVM-FS repository is published, served and signed.
struct DataPlane {
    /// `<download_dir>/cvmfs/gentoo.gah`.
    published: PathBuf,
    /// The URL volunteers read it from.
    url: String,
    /// `gah/cvmfs-keys`.
    keys: PathBuf,
}

impl DataPlane {
    /// From config.xml's `download_dir` and `download_url` (or `--data-url`).
    fn of(project: &Path, args: &DeployArgs) -> anyhow::Result<DataPlane> {
        let config = project.join("config.xml");
        let text = fs::read_to_string(&config).with_context(|| format!("read {}", config.display()))?;
        let (configs, _) = elements(&text, &["boinc", "config"])?;
        let setting = |name: &str| configs.first().and_then(|c| c.child(name)).unwrap_or_default().trim().to_owned();
        let download_dir = match setting("download_dir") {
            d if d.is_empty() => project.join("download"),
            d => PathBuf::from(d),
        };
        let url = match (&args.data_url, setting("download_url")) {
            (Some(url), _) => url.clone(),
            (None, d) if !d.is_empty() => format!("{}/cvmfs/{CVMFS_NAME}", d.trim_end_matches('/')),
            (None, _) => bail!("{} has no download_url: give --data-url", config.display()),
        };
        Ok(DataPlane { published: download_dir.join("cvmfs").join(CVMFS_NAME), url, keys: project.join(DATA_DIR).join("cvmfs-keys") })
    }

    fn master_key(&self) -> PathBuf {
        gah_publish::keys::master_pub_path(&self.keys, CVMFS_NAME)
    }

    /// Refuses a publication that would drop a folder the previous revision had and readers
    /// rely on: the queue's jobs name files in `/distfiles`, and sandbox app versions laid
    /// out over `/base` (vm ones over `/base-disk`) carry no guest root of their own.
    fn refuse_to_drop(&self, distfiles: bool, base: bool, disk: bool) -> anyhow::Result<()> {
        let previous = gah_publish::current_revision(&self.published, CVMFS_NAME).map_err(|e| anyhow::anyhow!("{e}"))?;
        let had = |folder: &str| previous.as_ref().is_some_and(|r| r.top_level.iter().any(|p| p == folder));
        if had(gah_core::data_ref::DISTFILES_AT) && !distfiles {
            bail!(
                "{} holds /distfiles from an earlier deploy and the queue's jobs name files in it: give --distfiles again",
                self.published.display()
            );
        }
        if had(gah_core::data_ref::BASE_AT) && !base {
            bail!(
                "{} holds /base from an earlier deploy and the sandbox app versions read their guest root there: keep the \
                 sandbox plan class and give an --image with rootfs/",
                self.published.display()
            );
        }
        if had(gah_core::data_ref::DISK_DIR) && !disk {
            bail!(
                "{} holds /base-disk from an earlier deploy and the vm app versions read their root disk there: keep a vm \
                 plan class and give an --image with rootfs.ext4",
                self.published.display()
            );
        }
        Ok(())
    }

    /// Publishes `repo` at `/repos/<its name>`, `distfiles` at `/distfiles`, the guest
    /// root `base` at `/base`, the root disk `disk` at `/base-disk/rootfs.ext4` and the
    /// package store `binpkgs` at `/binpkgs` as the next revision (only new objects are
    /// written; readers see the old revision or the new one).
    fn publish(
        &self,
        repo: &Path,
        distfiles: Option<&Path>,
        base: Option<&Path>,
        disk: Option<&Path>,
        binpkgs: Option<&Path>,
    ) -> anyhow::Result<()> {
        let name_file = repo.join("profiles/repo_name");
        let name = fs::read_to_string(&name_file).with_context(|| format!("read {} (the repository's name)", name_file.display()))?;
        let name = name.trim();
        if !gah_ebuild::md5cache::is_plain_name(name) {
            bail!("{}: {name:?} is not a repository name", name_file.display());
        }
        let at = format!("/repos/{name}");
        let mut mounts = vec![gah_publish::Mount { at: &at, from: repo }];
        if let Some(distfiles) = distfiles {
            mounts.push(gah_publish::Mount { at: gah_core::data_ref::DISTFILES_AT, from: distfiles });
        }
        if let Some(base) = base {
            mounts.push(gah_publish::Mount { at: gah_core::data_ref::BASE_AT, from: base });
        }
        if let Some(disk) = disk {
            mounts.push(gah_publish::Mount { at: gah_core::data_ref::DISK_AT, from: disk });
        }
        if let Some(binpkgs) = binpkgs {
            mounts.push(gah_publish::Mount { at: gah_core::data_ref::BINPKGS_AT, from: binpkgs });
        }
        let p = gah_publish::publish_mounts(&mounts, &self.published, CVMFS_NAME, &self.keys)
            .with_context(|| format!("publishing {} into {}", repo.display(), self.published.display()))?;
        println!(
            "deploy: {}: revision {} published ({} new objects, {} bytes; {} device nodes or other special files left out), read at {}",
            self.published.display(),
            p.revision,
            p.objects_written,
            p.bytes_written,
            p.left_out,
            self.url
        );
        Ok(())
    }
}

const GAH_CONF: &str = "\
# gentoo@home's settings for this BOINC project (gah deploy; see templates/README.md).
# A relative path is relative to this file's folder.
results_db = results/results.sqlite
queue_dir = gah/queue
";

/// Copies `from` to `to` through a temp file and a rename, unless `to` has those bytes already.
fn install_file(from: &Path, to: &Path, mode: u32) -> anyhow::Result<Done> {
    use std::os::unix::fs::PermissionsExt;
    let new = fs::read(from).with_context(|| format!("read {} (build it first: cargo build --release)", from.display()))?;
    let done = match fs::read(to) {
        Ok(old) if old == new => return Ok(Done::Unchanged),
        Ok(_) => Done::Updated,
        Err(_) => Done::Installed,
    };
    write_atomically(to, &new)?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", to.display()))?;
    Ok(done)
}

fn write_atomically(to: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = to.with_extension("gah-deploy-tmp");
    fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, to).with_context(|| format!("rename {} to {}", tmp.display(), to.display()))?;
    Ok(())
}

/// `gah.conf`'s localisation keys for `args`: the assimilator localises failures over the
/// metadata copied to `gah/repo`, under the queue's profile (`--workgen-arg=--profile`).
fn localise_keys(args: &DeployArgs) -> anyhow::Result<Vec<(&'static str, String)>> {
    if args.no_localise || args.repo.is_none() {
        return Ok(Vec::new());
    }
    let mut keys = vec![("localise_repo", format!("{DATA_DIR}/repo"))];
    if let Some(profile) = workgen_value(&args.workgen_arg, "--profile") {
        let profile = fs::canonicalize(profile).with_context(|| format!("profile {profile}"))?;
        keys.push(("localise_profile", profile.to_string_lossy().into_owned()));
    }
    Ok(keys)
}

/// Writes `gah.conf` when absent; an existing one (perhaps edited by its admin) only gets
/// the `keys` it lacks appended.
fn write_conf(path: &Path, keys: &[(&str, String)]) -> anyhow::Result<Done> {
    let mut text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut text = GAH_CONF.to_owned();
            for (key, value) in keys {
                text.push_str(&format!("{key} = \"{value}\"\n"));
            }
            write_atomically(path, text.as_bytes())?;
            return Ok(Done::Installed);
        }
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let has = |key: &str| text.lines().any(|l| l.split_once('=').is_some_and(|(k, _)| k.trim() == key));
    let missing: Vec<_> = keys.iter().filter(|(k, _)| !has(k)).collect();
    if missing.is_empty() {
        return Ok(Done::Unchanged);
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for (key, value) in missing {
        text.push_str(&format!("{key} = \"{value}\"\n"));
    }
    write_atomically(path, text.as_bytes())?;
    Ok(Done::Updated)
}

/// What of a repository the work generator's daemon reads to localise failures: its name and
/// md5-cache (`gah_ebuild::repo::read_repository`), as a tree of its own under `to`, replaced
/// as a whole when anything in it changed, so that it always matches `gah/repo.tar`.
const METADATA: [&str; 3] = ["profiles/repo_name", "metadata/layout.conf", "metadata/md5-cache"];

fn copy_metadata(repo: &Path, to: &Path) -> anyhow::Result<Done> {
    if !repo.join("metadata/md5-cache").is_dir() {
        bail!(
            "{} has no metadata/md5-cache (the work generator plans from it); make it with egencache, or deploy with --no-localise",
            repo.display()
        );
    }
    let tmp = to.with_extension("new");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("remove {}", tmp.display()))?;
    }
    for part in METADATA {
        let from = repo.join(part);
        if !from.exists() {
            continue;
        }
        let dest = tmp.join(part);
        fs::create_dir_all(dest.parent().unwrap_or(&tmp)).with_context(|| format!("create {}", tmp.display()))?;
        let mut cp = gah_util::process::command("cp");
        cp.arg("-R").arg(&from).arg(&dest);
        gah_util::process::run_checked(&mut cp).with_context(|| format!("copy {}", from.display()))?;
    }
    let done = if !to.exists() {
        Done::Installed
    } else if same_tree(&tmp, to)? {
        fs::remove_dir_all(&tmp).with_context(|| format!("remove {}", tmp.display()))?;
        return Ok(Done::Unchanged);
    } else {
        Done::Updated
    };
    let old = to.with_extension("old");
    if to.exists() {
        if old.exists() {
            fs::remove_dir_all(&old).with_context(|| format!("remove {}", old.display()))?;
        }
        fs::rename(to, &old).with_context(|| format!("rename {}", to.display()))?;
    }
    fs::rename(&tmp, to).with_context(|| format!("rename {} to {}", tmp.display(), to.display()))?;
    if old.exists() {
        fs::remove_dir_all(&old).with_context(|| format!("remove {}", old.display()))?;
    }
    Ok(done)
}

/// Whether two folders hold the same files with the same bytes. Paths are listed first and
/// files compared one pair at a time (length, then bytes), so ::gentoo's md5-cache is never
/// held in memory twice.
fn same_tree(a: &Path, b: &Path) -> anyhow::Result<bool> {
    fn files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))?.collect::<Result<_, _>>()?;
        entries.sort_by_key(fs::DirEntry::file_name);
        for e in entries {
            let path = e.path();
            if e.file_type()?.is_dir() {
                files(root, &path, out)?;
            } else {
                out.push(path.strip_prefix(root).unwrap_or(&path).to_owned());
            }
        }
        Ok(())
    }
    let (mut fa, mut fb) = (Vec::new(), Vec::new());
    files(a, a, &mut fa)?;
    files(b, b, &mut fb)?;
    if fa != fb {
        return Ok(false);
    }
    for rel in &fa {
        let (pa, pb) = (a.join(rel), b.join(rel));
        let len = |p: &Path| fs::metadata(p).map(|m| m.len()).with_context(|| format!("read {}", p.display()));
        if len(&pa)? != len(&pb)? {
            return Ok(false);
        }
        let read = |p: &Path| fs::read(p).with_context(|| format!("read {}", p.display()));
        if read(&pa)? != read(&pb)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The value of a `gah-workgen generate` option among `--workgen-arg`s (`--opt V` or `--opt=V`).
fn workgen_value<'a>(args: &'a [String], option: &str) -> Option<&'a str> {
    let mut found = None;
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if word == option {
            found = words.next().map(String::as_str);
        } else if let Some(value) = word.strip_prefix(option).and_then(|rest| rest.strip_prefix('=')) {
            found = Some(value);
        }
    }
    found
}

/// One element found by [`elements`]: its byte span and its children's texts.
#[derive(Debug)]
struct Element {
    start: usize,
    end: usize,
    children: Vec<(String, String)>,
}

impl Element {
    fn child(&self, name: &str) -> Option<&str> {
        self.children.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// The elements at `path` (e.g. `["config", "daemons", "daemon"]`) and the offset of their
/// parent's end tag, where new ones go.
fn elements(xml: &str, path: &[&str]) -> anyhow::Result<(Vec<Element>, Option<usize>)> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let (mut stack, mut found, mut parent_end) = (Vec::<String>::new(), Vec::new(), None);
    let mut current: Option<Element> = None;
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader.read_event().with_context(|| format!("XML error at byte {before}"))?;
        let after = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        match event {
            Event::Start(e) => {
                stack.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                if stack == path {
                    current = Some(Element { start: before, end: before, children: Vec::new() });
                }
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if let (Some(c), true) = (current.as_mut(), stack.len() == path.len()) {
                    c.children.push((name, String::new()));
                }
            }
            Event::Text(t) => {
                if let (Some(c), true) = (current.as_mut(), stack.len() == path.len() + 1) {
                    let text = t.unescape().map(|s| s.trim().to_owned()).unwrap_or_default();
                    c.children.push((stack.last().cloned().unwrap_or_default(), text));
                }
            }
            Event::End(_) => {
                if stack == path {
                    if let Some(mut c) = current.take() {
                        c.end = after;
                        found.push(c);
                    }
                } else if stack.as_slice() == &path[..path.len() - 1] {
                    parent_end = Some(before);
                }
                stack.pop();
            }
            Event::Eof => return Ok((found, parent_end)),
            _ => {}
        }
    }
}

/// Our plan classes into the project's file: a class of the same name is replaced, the
/// project's others stay.
fn merge_plan_classes(ours: &Path, theirs: &Path) -> anyhow::Result<()> {
    let ours_text = fs::read_to_string(ours).with_context(|| format!("read {}", ours.display()))?;
    let Ok(mut text) = fs::read_to_string(theirs) else {
        write_atomically(theirs, ours_text.as_bytes())?;
        say("plan_class_spec.xml", Done::Installed);
        return Ok(());
    };
    let path = ["plan_classes", "plan_class"];
    let (our_classes, _) = elements(&ours_text, &path)?;
    let mut changed = false;
    for class in &our_classes {
        let name = class.child("name").unwrap_or_default().to_owned();
        let block = &ours_text[class.start..class.end];
        let (existing, end) = elements(&text, &path)?;
        let done = match existing.iter().find(|c| c.child("name") == Some(name.as_str())) {
            Some(c) if &text[c.start..c.end] == block => Done::Unchanged,
            Some(c) => {
                text.replace_range(c.start..c.end, block);
                Done::Updated
            }
            None => {
                let end = end.context("the project's plan_class_spec.xml has no </plan_classes>")?;
                text.insert_str(end, &format!("    {block}\n"));
                Done::Installed
            }
        };
        changed |= done != Done::Unchanged;
        say(format!("plan_class_spec.xml plan class {name}"), done);
    }
    if changed {
        write_atomically(theirs, text.as_bytes())?;
    }
    Ok(())
}

/// The work generator's queue over the repository: the installed `gah-workgen generate`,
/// which adds only jobs not queued yet (a second run adds none).
fn generate_queue(project: &Path, repo: &Path, plane: &DataPlane, args: &DeployArgs) -> anyhow::Result<()> {
    let repo = fs::canonicalize(repo).with_context(|| format!("repository {}", repo.display()))?;
    let mut generate = gah_util::process::command(project.join("bin/gah-workgen"));
    generate.arg("generate").arg("--repo").arg(&repo).arg("--queue").arg(format!("{DATA_DIR}/queue")).arg("--boinc-project").arg(project);
    generate.arg("--published").arg(&plane.published).arg("--data-url").arg(&plane.url);
    if let Some(distfiles) = &args.distfiles {
        generate.arg("--distfiles").arg(fs::canonicalize(distfiles).with_context(|| format!("distfiles {}", distfiles.display()))?);
    }
    generate.args(&args.workgen_arg).current_dir(project);
    let out = gah_util::process::run_checked(&mut generate).context("gah-workgen generate")?;
    for line in String::from_utf8_lossy(&out.stdout).lines().chain(String::from_utf8_lossy(&out.stderr).lines()) {
        if !line.trim().is_empty() {
            println!("deploy: queue: {}", line.trim());
        }
    }
    Ok(())
}

/// The app in `project.xml` (and our platform, if missing), then BOINC's `bin/xadd`, which
/// adds to the database whatever of it is missing there.
fn add_app(project: &Path) -> anyhow::Result<()> {
    let path = project.join("project.xml");
    let mut text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let mut changed = false;
    for (kind, name, block) in [
        ("platform", PLATFORM, format!("<platform>\n        <name>{PLATFORM}</name>\n        <user_friendly_name>Linux running on an AMD x86_64 or Intel EM64T CPU</user_friendly_name>\n    </platform>")),
        ("app", APP_NAME, format!("<app>\n        <name>{APP_NAME}</name>\n        <user_friendly_name>gentoo@home</user_friendly_name>\n    </app>")),
    ] {
        let (existing, end) = elements(&text, &["boinc", kind])?;
        let done = if existing.iter().any(|e| e.child("name") == Some(name)) {
            Done::Unchanged
        } else {
            let end = end.context("project.xml has no </boinc>")?;
            text.insert_str(end, &format!("    {block}\n"));
            changed = true;
            Done::Installed
        };
        say(format!("project.xml {kind} {name}"), done);
    }
    if changed {
        write_atomically(&path, text.as_bytes())?;
    }
    let out = gah_util::process::run_checked(gah_util::process::command("bin/xadd").current_dir(project))
        .context("bin/xadd (BOINC's; needs php-cli and the project's database)")?;
    for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()) {
        println!("deploy: xadd: {}", line.trim());
    }
    Ok(())
}

/// Refuses to publish `folder` (`/base`, `/base-disk`: `what`) for the first time while an
/// app version laid out before it would still run workunits: its gah-app refuses every
/// data.json that names it (unknown
/// fields are refused), and the work generator names it in every workunit's, whatever the
/// plan class. So every plan class the project has must get a new version in this deploy
/// (deploy does not lay out a version twice).
fn refuse_first_root_for_old_versions(
    project: &Path,
    plane: &DataPlane,
    args: &DeployArgs,
    folder: &str,
    what: &str,
) -> anyhow::Result<()> {
    let had = gah_publish::current_revision(&plane.published, CVMFS_NAME)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .is_some_and(|r| r.top_level.iter().any(|p| p == folder));
    if had {
        return Ok(());
    }
    let renewed = |class: &str| laid_out_anew(project, args, class);
    let mut old: Vec<String> = Vec::new();
    for version in fs::read_dir(project.join(format!("apps/{APP_NAME}"))).into_iter().flatten().flatten() {
        for flavour in fs::read_dir(version.path()).into_iter().flatten().flatten() {
            let name = flavour.file_name().to_string_lossy().into_owned();
            let Some(class) = name.strip_prefix(&format!("{PLATFORM}__")) else { continue };
            if flavour.path().join("version.xml").is_file() && !renewed(class) {
                old.push(format!("{} ({class})", version.file_name().to_string_lossy()));
            }
        }
    }
    if !old.is_empty() {
        old.sort();
        bail!(
            "app versions {} were laid out before {what} was published at {folder}, and their gah-app would refuse \
             workunits that name it: deploy every plan class ({}) with a new --version-num (docs/DEPLOY.md, upgrading)",
            old.join(", "),
            args.plan_classes.join(",")
        );
    }
    Ok(())
}

/// Whether this deploy lays out a new app version of plan class `class` (not with
/// --no-app-version, which lays out none; not when that version number was laid out before).
fn laid_out_anew(project: &Path, args: &DeployArgs, class: &str) -> bool {
    !args.no_app_version
        && args.plan_classes.iter().any(|c| c == class)
        && !project.join(format!("apps/{APP_NAME}/{}/{PLATFORM}__{class}/version.xml", args.version_num)).is_file()
}

/// Refuses to publish the image's root disk while a vm app version that goes on running
/// (the newest of its class, not laid out anew in this deploy) carries another kernel: the
/// kernel that boots the disk and the disk's own kernel modules would no longer match.
fn refuse_kernel_drift(project: &Path, image: &Path, args: &DeployArgs) -> anyhow::Result<()> {
    let kernel = image.join("vmlinux");
    let bytes = fs::read(&kernel).with_context(|| format!("read {} (the kernel that boots the disk)", kernel.display()))?;
    // As package-app-version.sh names it: the first 16 hex digits of its SHA-256.
    let carried = format!("vmlinux-{}", &gah_core::archive::sha256_hex(&bytes)[..16]);
    let mut newest: std::collections::BTreeMap<String, (u32, PathBuf)> = std::collections::BTreeMap::new();
    for version in fs::read_dir(project.join(format!("apps/{APP_NAME}"))).into_iter().flatten().flatten() {
        let Some(number) = version.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        for flavour in fs::read_dir(version.path()).into_iter().flatten().flatten() {
            let name = flavour.file_name().to_string_lossy().into_owned();
            let Some(class) = name.strip_prefix(&format!("{PLATFORM}__")) else { continue };
            if class != "sandbox" && flavour.path().join("version.xml").is_file() && newest.get(class).is_none_or(|(n, _)| *n < number) {
                newest.insert(class.to_owned(), (number, flavour.path()));
            }
        }
    }
    let drifting: Vec<String> = newest
        .iter()
        .filter(|(class, (_, dir))| !laid_out_anew(project, args, class) && !dir.join(&carried).is_file())
        .map(|(class, (number, _))| format!("{number} ({class})"))
        .collect();
    if !drifting.is_empty() {
        bail!(
            "{} has another kernel than app versions {} carry, and its rootfs.ext4 would be published for them: deploy the vm \
             plan classes with a new --version-num, so that kernel and disk change together (docs/DEPLOY.md)",
            kernel.display(),
            drifting.join(", ")
        );
    }
    Ok(())
}

/// One app version to lay out.
struct AppVersion<'a> {
    plan_class: &'a str,
    version_num: u32,
    /// The repository holds the guest root: a sandbox version carries none.
    base_published: bool,
    /// The repository holds the root disk: a vm version carries none.
    disk_published: bool,
}

/// `scripts/package-app-version.sh --boinc-apps PROJECT/apps`, the anonymous-platform files
/// kept under `gah/app-version/<class>/` (also what a volunteer may use as app_info.xml).
fn lay_out_app_version(root: &Path, project: &Path, bin: &Path, image: &Path, cvmfs_key: &Path, v: &AppVersion<'_>) -> anyhow::Result<()> {
    let AppVersion { plan_class, version_num, base_published, disk_published } = *v;
    let guest = if plan_class == "sandbox" { "sandbox" } else { "vm" };
    let version_dir = project.join(format!("apps/{APP_NAME}/{version_num}/{PLATFORM}__{plan_class}"));
    if version_dir.join("version.xml").is_file() {
        // update_versions takes a version once and BOINC never changes a published file: a
        // new build is a new version number.
        println!(
            "deploy: app version {version_num} {plan_class}: unchanged (laid out before; a new build needs --version-num above {version_num})"
        );
        return Ok(());
    }
    let mut script = gah_util::process::command("bash");
    script
        .arg(root.join("scripts/package-app-version.sh"))
        .args(["--link", "--guest", guest, "--plan-class", plan_class, "--version-num", &version_num.to_string()])
        .arg("--bin")
        .arg(bin)
        .arg("--image")
        .arg(image)
        .arg("--cvmfs-key")
        .arg(cvmfs_key)
        .args(base_published.then_some("--base-in-repository"))
        .args(disk_published.then_some("--disk-in-repository"))
        .arg("--boinc-apps")
        .arg(project.join("apps"))
        .arg(project.join(DATA_DIR).join("app-version").join(plan_class));
    gah_util::process::run_checked(&mut script).with_context(|| format!("package the {plan_class} app version"))?;
    say(format!("apps/{APP_NAME}/{version_num}/{PLATFORM}__{plan_class}"), Done::Installed);
    Ok(())
}

/// The `<daemon>` command lines: templates/README.md's validator and assimilator, and the
/// work generator's daemon over the project's database.
fn daemon_lines(config: &Path, plane: &DataPlane, args: &DeployArgs) -> anyhow::Result<Vec<String>> {
    let text = fs::read_to_string(config).with_context(|| format!("read {}", config.display()))?;
    let (configs, _) = elements(&text, &["boinc", "config"])?;
    let setting = |name: &str| configs.first().and_then(|c| c.child(name)).unwrap_or_default().to_owned();
    let mut lines = vec![VALIDATOR_LINE.to_owned(), ASSIMILATOR_LINE.to_owned()];
    if args.repo.is_some() {
        // BOINC's own count of unsent results (sched/sample_work_generator.cpp,
        // count_unsent_results: server_state 2), through the mysql client with config.xml's
        // credentials. bin/start splits <cmd> with Python's shlex and execs it (sched/start),
        // and gah-workgen runs --unsent-cmd with sh -c: one single-quoted word, double
        // quotes inside.
        let mut mysql = format!("mysql -N -B -h {} -u {}", or_localhost(&setting("db_host")), setting("db_user"));
        let password = setting("db_passwd");
        if password.contains(['\'', '"', '\\', '$', '`']) {
            bail!("config.xml's db_passwd has quotes or shell characters: add the work generator's <daemon> by hand (templates/README.md)");
        }
        if !password.is_empty() {
            mysql.push_str(&format!(" -p{password}"));
        }
        let query = format!(r#"select count(*) from result where server_state=2 and appid=(select id from app where name=\"{APP_NAME}\")"#);
        // Shell-split by bin/start and written into config.xml unescaped.
        let unsafe_chars = ['\'', '"', '\\', '$', '`', ' ', '&', '<', '>'];
        if plane.url.contains(unsafe_chars) || plane.published.to_string_lossy().contains(unsafe_chars) {
            bail!("the data plane's URL or folder has quotes, blanks or shell characters: add the work generator's <daemon> by hand (templates/README.md)");
        }
        let mut line = format!(
            "gah-workgen daemon --config ../gah.conf --boinc-project .. --published {} --data-url {} \
             --keep-unsent {} --unsent-cmd '{mysql} -e \"{query}\" {}'",
            plane.published.display(),
            plane.url,
            args.keep_unsent,
            setting("db_name"),
        );
        if !args.no_localise {
            // The follow-ups the assimilator asks for get the queue's job time limit.
            line.push_str(&format!(" --localise-repo ../{DATA_DIR}/repo"));
            if let Some(secs) = workgen_value(&args.workgen_arg, "--timeout-secs") {
                let secs: u64 = secs.parse().with_context(|| format!("--timeout-secs {secs}"))?;
                line.push_str(&format!(" --localise-timeout-secs {secs}"));
            }
        }
        lines.push(line);
    }
    Ok(lines)
}

fn or_localhost(host: &str) -> &str {
    if host.is_empty() {
        "localhost"
    } else {
        host
    }
}

/// templates/README.md's `config.xml` lines (tests/tests/deploy.rs holds them equal).
pub const VALIDATOR_LINE: &str = "script_validator --app gah --init_script gah-validate-init --compare_script gah-validate-compare";
/// See [`VALIDATOR_LINE`].
pub const ASSIMILATOR_LINE: &str = "script_assimilator --app gah --script gah-assimilate";

/// Adds each line as a `<daemon>` unless one for the same program and app is there already.
fn add_daemons(config: &Path, lines: &[String]) -> anyhow::Result<()> {
    let mut text = fs::read_to_string(config).with_context(|| format!("read {}", config.display()))?;
    let mut changed = false;
    for line in lines {
        let (daemons, end) = elements(&text, &["boinc", "daemons", "daemon"])?;
        let program = line.split_whitespace().next().unwrap_or_default();
        let ours = |cmd: &str| {
            let words: Vec<&str> = cmd.split_whitespace().collect();
            words.first() == Some(&program) && (program.starts_with("gah-") || words.windows(2).any(|w| w == ["--app", APP_NAME]))
        };
        let done = match daemons.iter().filter_map(|d| d.child("cmd")).find(|cmd| ours(cmd)) {
            Some(cmd) if cmd == line => Done::Unchanged,
            Some(_) => Done::KeptYours,
            None => {
                let end = end.context("config.xml has no <daemons> section: not made by make_project?")?;
                text.insert_str(end, &format!("    <daemon>\n            <cmd>{line}</cmd>\n        </daemon>\n    "));
                changed = true;
                Done::Installed
            }
        };
        say(format!("config.xml daemon {program}"), done);
    }
    if changed {
        write_atomically(config, text.as_bytes())?;
    }
    Ok(())
}

/// A daily `<task>` that signs the data plane's whitelist again: readers refuse it 30 days
/// after it was signed, and only a publication signs a new one otherwise. `bin/start --cron`
/// (make_project's crontab line) runs tasks from `bin/` in `tmp_<host>/` (sched/start).
fn add_resign_task(config: &Path, plane: &DataPlane) -> anyhow::Result<()> {
    if gah_publish::current_revision(&plane.published, CVMFS_NAME).map_err(|e| anyhow::anyhow!("{e}"))?.is_none() {
        // Nothing to re-sign until a deploy with --repo publishes.
        return Ok(());
    }
    let keys = plane.keys.display().to_string();
    let published = plane.published.display().to_string();
    if [&keys, &published].iter().any(|p| p.contains(['\'', '"', '\\', '$', '`', ' ', '\t', '\n', '&', '<', '>'])) {
        eprintln!(
            "deploy: warning: the data plane's folders have quotes, blanks or shell characters: add the re-signing <task> by hand \
             (docs/DEPLOY.md), or the whitelist lapses 30 days after this deploy"
        );
        return Ok(());
    }
    let line = format!("gah-publish --resign --name {CVMFS_NAME} --keys {keys} --repo-dir {published}");
    let mut text = fs::read_to_string(config).with_context(|| format!("read {}", config.display()))?;
    let (tasks, end) = elements(&text, &["boinc", "tasks", "task"])?;
    let done = match tasks.iter().filter_map(|t| t.child("cmd")).find(|cmd| cmd.split_whitespace().next() == Some("gah-publish")) {
        Some(cmd) if cmd == line => Done::Unchanged,
        Some(_) => Done::KeptYours,
        None => {
            let task = format!(
                "<task>\n            <cmd>{line}</cmd>\n            <period>1 day</period>\n            \
                 <output>gah_resign.out</output>\n        </task>\n    "
            );
            match end {
                Some(end) => text.insert_str(end, &format!("    {task}")),
                None => {
                    let end = text.rfind("</boinc>").context("config.xml has no </boinc>")?;
                    text.insert_str(end, &format!("    <tasks>\n        {task}</tasks>\n"));
                }
            }
            write_atomically(config, text.as_bytes())?;
            Done::Installed
        }
    };
    say("config.xml task gah-publish --resign (daily)", done);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_finds_spans_children_and_the_parents_end() {
        let xml = "<boinc>\n <daemons>\n  <daemon><cmd>feeder -d 3</cmd></daemon>\n </daemons>\n</boinc>\n";
        let (found, end) = elements(xml, &["boinc", "daemons", "daemon"]).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(&xml[found[0].start..found[0].end], "<daemon><cmd>feeder -d 3</cmd></daemon>");
        assert_eq!(found[0].child("cmd"), Some("feeder -d 3"));
        assert!(xml[end.unwrap()..].starts_with("</daemons>"));
    }

    #[test]
    fn workgen_value_takes_the_last_of_both_spellings() {
        let args: Vec<String> = ["--strategy", "pairwise", "--timeout-secs", "60", "--profile=/p"].map(str::to_owned).to_vec();
        assert_eq!(workgen_value(&args, "--timeout-secs"), Some("60"));
        assert_eq!(workgen_value(&args, "--profile"), Some("/p"));
        assert_eq!(workgen_value(&args, "--seed"), None);
        let args: Vec<String> = ["--seed=1", "--seed", "2"].map(str::to_owned).to_vec();
        assert_eq!(workgen_value(&args, "--seed"), Some("2"));
    }
}
