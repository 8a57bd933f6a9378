//! BOINC submission for a stock BOINC server: the input/output templates and a
//! `create_work.sh` that stages each job file into the download hierarchy
//! (`bin/dir_hier_path`) and calls `bin/create_work` once per job, or once per batch with
//! `--stdin` ([`Submission::stdin_batch`]), with every `rsc_*` and replication value set
//! explicitly (create_work's defaults, quorum 1 and 7-day deadlines, are wrong for us).
//! Remote submission (`submit_batch` over HTTP) is in [`crate::remote`].
//!
//! The script is written into the queue folder and run by the project's administrator from
//! the project folder. It is idempotent: a job submitted once leaves `submitted/<job_id>`
//! and is skipped on the next run.
//!
//! Every workunit also carries the ebuild repository and the distfiles as tar files
//! ([`SharedInput`], `templates/gah_in`'s files 1 and 2): content-named, staged once into the
//! download hierarchy and named on every create_work line after the job file; the template
//! marks them `<sticky/>` and `<no_delete/>`. The template sets no bound: create_work applies
//! the template's `<workunit>` values after its command line (BOINC's
//! `tools/process_input_template.cpp`), so the per-job values here would lose to them.
//!
//! Every submission is a [`Workunit`] of its own: named `<job_id>_<n>`
//! ([`gah_core::job::wu_name`], `n` from [`Queue::reserve`]), its job file staged as
//! `<wu_name>.json` (download files never change under a name), so a resubmission or a changed
//! timeout never collides with a workunit BOINC already has.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use gah_core::job::Job;
use gah_util::atomic::AtomicError;
use gah_util::shell;

use crate::queue::Queue;

/// The submission files could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The `templates/` folder could not be made.
    #[error("create the folder {}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A folder given does not resolve to an absolute path.
    #[error("resolve {}", path.display())]
    Resolve {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A template or the script could not be written (the error names the file).
    #[error(transparent)]
    Write(#[from] AtomicError),
    /// The script could not be made executable.
    #[error("make {} executable", path.display())]
    Permissions {
        /// The script.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The input template (`templates/gah_in`): the job (`job.json`), then the shared repository
/// (`repo.tar`) and distfiles (`distfiles.tar`).
pub const INPUT_TEMPLATE: &str = include_str!("../../templates/gah_in");
/// The output template (`templates/gah_out`): one file, `outcome.tar.gz`, at most 16 MB.
pub const OUTPUT_TEMPLATE: &str = include_str!("../../templates/gah_out");

/// [`INPUT_TEMPLATE`] with `sub`'s replication in its `<workunit>`, for remote submission:
/// BOINC's `submit_batch` RPC passes create_work only the `rsc_*` bounds and the deadline
/// (html/user/submit_rpc_handler.php: "could add quorum-related stuff"), so the quorum must
/// come from a template, and a job's own `<input_template>` is the RPC's way to give one.
/// No `rsc_*` value goes in: create_work applies template values after the command line.
pub fn input_template_with_replication(sub: &Submission) -> String {
    let replication = format!(
        "    <min_quorum>{}</min_quorum>\n        <target_nresults>{}</target_nresults>\n        <max_error_results>{}</max_error_results>\n        <max_total_results>{}</max_total_results>\n        <max_success_results>{}</max_success_results>\n    ",
        sub.min_quorum, sub.target_nresults, sub.max_error_results, sub.max_total_results, sub.max_success_results
    );
    let mut template = INPUT_TEMPLATE.trim().to_owned();
    if let Some(end) = template.rfind("</workunit>") {
        template.insert_str(end, &replication);
    }
    template
}

/// The per-workunit values passed to `create_work`. No `Default`: [`Submission::standard`]
/// documents the choices.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// The BOINC application's name.
    pub appname: String,
    /// Floating-point speed (FLOPS) assumed for a volunteer core when turning the job's
    /// wall-clock limit into `rsc_fpops_*`.
    pub reference_flops: f64,
    /// `rsc_memory_bound`, bytes.
    pub memory_bound: f64,
    /// `rsc_disk_bound`, bytes.
    pub disk_bound: f64,
    /// `delay_bound`, seconds.
    pub delay_bound: u64,
    /// `min_quorum`.
    pub min_quorum: u32,
    /// `target_nresults`.
    pub target_nresults: u32,
    /// `max_error_results`.
    pub max_error_results: u32,
    /// `max_total_results`.
    pub max_total_results: u32,
    /// `max_success_results`.
    pub max_success_results: u32,
    /// One `create_work --stdin` per group of jobs with the same bounds (a single database
    /// round trip for the whole batch) instead of one `create_work` per job.
    pub stdin_batch: bool,
    /// The inputs every workunit shares, in the input template's order after the job file:
    /// the repository tar, then the distfiles tar ([`SharedInput::content_named`]). Empty in
    /// [`Submission::standard`]; create_work refuses a workunit without them.
    pub shared: Vec<SharedInput>,
}

/// An input file shared by every workunit, staged once under a name that changes with its
/// content (BOINC never changes a download file, and clients keep it: `<sticky/>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedInput {
    /// Its physical name in the download hierarchy, `<prefix>-<sha256:16>.tar`.
    pub name: String,
    /// The local file staged under that name.
    pub path: PathBuf,
    /// Its size, for a remote submission's `<nbytes>`.
    pub nbytes: u64,
    /// Its MD5 in hex, for a remote submission's `<md5>` (BOINC's file checksum).
    pub md5: String,
    /// The file as it was when hashed ([`SharedInput::refresh`]).
    stamp: Stamp,
}

/// A file's size, modification time and inode: another of any of them is taken for other
/// content (`gah deploy` replaces `gah/repo.tar` by a rename, so its inode changes).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    ino: u64,
}

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Stamp> {
        Ok(Stamp::of_metadata(&std::fs::metadata(path)?))
    }

    fn of_metadata(m: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp { len: m.len(), modified: m.modified().ok(), ino: m.ino() }
    }
}

impl SharedInput {
    /// `path` named `<prefix>-<first 16 hex digits of its sha256>.tar`, e.g.
    /// `gah-repo-0123456789abcdef.tar`.
    pub fn content_named(prefix: &str, path: &Path) -> std::io::Result<SharedInput> {
        use sha2::{Digest, Sha256};
        // One read for both digests: the distfiles tar can be GBs.
        struct Both(Sha256, md5::Md5);
        impl std::io::Write for Both {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.update(buf);
                md5::Digest::update(&mut self.1, buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        // Before reading: a file replaced while it is read shows another stamp next time.
        let stamp = Stamp::of(path)?;
        let mut both = Both(Sha256::new(), <md5::Md5 as md5::Digest>::new());
        let nbytes = std::io::copy(&mut std::fs::File::open(path)?, &mut both)?;
        let sha = hex::encode(both.0.finalize());
        let md5 = hex::encode(md5::Digest::finalize(both.1));
        // create_work.sh copies it from the project folder: an absolute path.
        Ok(SharedInput { name: format!("{prefix}-{}.tar", &sha[..16]), path: std::fs::canonicalize(path)?, nbytes, md5, stamp })
    }

    /// Hashes the file again when it changed since it was hashed (a long-running work
    /// generator outlives a `gah deploy` of a new repository: its workunits must name the new
    /// content, never the old name with the new bytes). True when it changed.
    pub fn refresh(&mut self) -> std::io::Result<bool> {
        if Stamp::of(&self.path)? == self.stamp {
            return Ok(false);
        }
        let prefix = self.name.rsplit_once('-').map_or("gah", |(prefix, _)| prefix).to_owned();
        *self = SharedInput::content_named(&prefix, &self.path)?;
        Ok(true)
    }

    /// Opens the file for copying, refusing it when it is no longer what was hashed (replaced
    /// since [`SharedInput::refresh`]): its bytes must never go out under the old name.
    pub fn open_as_hashed(&self) -> std::io::Result<std::fs::File> {
        let file = std::fs::File::open(&self.path)?;
        if Stamp::of_metadata(&file.metadata()?) != self.stamp {
            return Err(std::io::Error::other("changed on disk since it was hashed (hashed again next round)"));
        }
        Ok(file)
    }

    /// The repository tar (`repo.tar` in the slot) and the distfiles tar (`distfiles.tar`).
    pub fn repo_and_distfiles(repo_tar: &Path, distfiles_tar: &Path) -> std::io::Result<Vec<SharedInput>> {
        Ok(vec![SharedInput::content_named("gah-repo", repo_tar)?, SharedInput::content_named("gah-distfiles", distfiles_tar)?])
    }
}

impl Submission {
    /// Two replicas that must agree (validator), 4 GB of memory for the guest, 10 GB of disk
    /// (image overlay, distfiles, build tree), three days to report.
    pub fn standard() -> Submission {
        Submission {
            appname: "gah".into(),
            reference_flops: 5e9,
            memory_bound: 4e9,
            disk_bound: 1e10,
            delay_bound: 3 * 24 * 3600,
            min_quorum: 2,
            target_nresults: 2,
            max_error_results: 4,
            max_total_results: 8,
            max_success_results: 4,
            stdin_batch: false,
            shared: Vec::new(),
        }
    }

    /// `rsc_fpops_est`: a job is expected to take a quarter of its limit.
    pub fn fpops_est(&self, job: &Job) -> f64 {
        job_secs(job) / 4.0 * self.reference_flops
    }

    /// `rsc_fpops_bound`: four times the limit at the reference speed, so that on any host up
    /// to 4× slower the guest's own timeout (which reports a `timeout` outcome) fires before
    /// the client's abort (which reports nothing).
    pub fn fpops_bound(&self, job: &Job) -> f64 {
        job_secs(job) * 4.0 * self.reference_flops
    }
}

fn job_secs(job: &Job) -> f64 {
    // Exact for any realistic timeout (< 2^53 s).
    #[allow(clippy::cast_precision_loss)]
    let s = job.timeout_secs as f64;
    s
}

/// One submission of a job: the BOINC workunit `name` (`<job_id>_<n>`) for `job`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workunit {
    /// The workunit's name, [`gah_core::job::wu_name`].
    pub name: String,
    /// Its job.
    pub job: Job,
}

impl Workunit {
    /// The physical name its job file is staged under: `<wu_name>.json`.
    pub fn job_file(&self) -> String {
        format!("{}.json", self.name)
    }
}

/// The `create_work` command for one workunit (its job file staged as `<wu_name>.json`,
/// then the shared inputs).
pub fn create_work_command(wu: &Workunit, sub: &Submission) -> String {
    let mut files = shell::quote(&wu.job_file());
    for f in &sub.shared {
        files.push(' ');
        files.push_str(&shell::quote(&f.name));
    }
    format!(
        "bin/create_work --appname {app} --wu_name {name} {bounds} {files}",
        app = shell::quote(&sub.appname),
        name = shell::quote(&wu.name),
        bounds = create_work_bounds(&wu.job, sub),
    )
}

/// The `create_work --stdin` command for a batch of jobs with `job`'s bounds; each job is
/// then one stdin line ([`create_work_stdin_line`]).
pub fn create_work_batch_command(job: &Job, sub: &Submission) -> String {
    format!("bin/create_work --appname {} {} --stdin", shell::quote(&sub.appname), create_work_bounds(job, sub))
}

/// One stdin line of `create_work --stdin`: the workunit's name and its input files (the job
/// file, then the shared inputs). create_work splits these lines on blanks itself (no shell):
/// workunit names and content names have none.
pub fn create_work_stdin_line(wu: &Workunit, sub: &Submission) -> String {
    let mut line = format!("--wu_name {} {}", wu.name, wu.job_file());
    for f in &sub.shared {
        line.push(' ');
        line.push_str(&f.name);
    }
    line
}

/// Templates, every `rsc_*` bound, the deadline and the replication, explicitly.
fn create_work_bounds(job: &Job, sub: &Submission) -> String {
    format!(
        "--wu_template templates/gah_in --result_template templates/gah_out \
--rsc_fpops_est {est:e} --rsc_fpops_bound {bound:e} --rsc_memory_bound {mem:e} --rsc_disk_bound {disk:e} \
--delay_bound {delay} --min_quorum {q} --target_nresults {t} --max_error_results {me} --max_total_results {mt} \
--max_success_results {ms}",
        est = sub.fpops_est(job),
        bound = sub.fpops_bound(job),
        mem = sub.memory_bound,
        disk = sub.disk_bound,
        delay = sub.delay_bound,
        q = sub.min_quorum,
        t = sub.target_nresults,
        me = sub.max_error_results,
        mt = sub.max_total_results,
        ms = sub.max_success_results,
    )
}

/// Writes `templates/gah_in`, `templates/gah_out` and `create_work.sh` into the queue folder,
/// covering `wus` (in the order given: the rotation's; names from [`Queue::reserve`]). `project` is the BOINC project
/// folder the script changes to by default (`BOINC_PROJECT` overrides it; without either, the
/// current folder). Returns the script's path.
pub fn write_submission(queue: &Queue, wus: &[Workunit], sub: &Submission, project: Option<&Path>) -> Result<PathBuf, ScriptError> {
    let dir = queue.dir();
    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates).map_err(|source| ScriptError::Folder { path: templates.clone(), source })?;
    gah_util::atomic::write(&templates.join("gah_in"), INPUT_TEMPLATE.as_bytes())?;
    gah_util::atomic::write(&templates.join("gah_out"), OUTPUT_TEMPLATE.as_bytes())?;
    let resolve = |p: &Path| std::fs::canonicalize(p).map_err(|source| ScriptError::Resolve { path: p.to_owned(), source });
    let abs = resolve(dir)?;
    let project = match project {
        Some(p) => resolve(p)?.display().to_string(),
        None => ".".into(),
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"#!/bin/sh
# Written by `gah-workgen generate`: submits this queue's jobs to a BOINC project.
# Run it from the project folder, or set BOINC_PROJECT=/path/to/project.
# Idempotent: a job already submitted has a marker in submitted/ and is skipped.
set -eu
QUEUE={queue}
PROJECT={project}
cd "${{BOINC_PROJECT:-$PROJECT}}"
if [ ! -x bin/create_work ] || [ ! -x bin/dir_hier_path ]; then
    echo "create_work.sh: $(pwd) is not a BOINC project folder (no bin/create_work, bin/dir_hier_path)" >&2
    exit 1
fi
mkdir -p templates "$QUEUE/submitted"
cp "$QUEUE/templates/gah_in" templates/gah_in
cp "$QUEUE/templates/gah_out" templates/gah_out
submitted=0
skipped=0
# stage JOB_ID WU_NAME: copy the job file into the download hierarchy as WU_NAME.json.
stage() {{
    dest=$(bin/dir_hier_path "$2.json")
    cp "$QUEUE/pending/$1.json" "$dest"
}}
# stage_shared NAME FILE: copy a shared input into the download hierarchy once; a copy an
# interrupted run left half done is replaced, and a new copy lands whole (temp, rename).
stage_shared() {{
    dest=$(bin/dir_hier_path "$1")
    cmp -s "$2" "$dest" || {{ cp "$2" "$dest.tmp.$$" && mv -f "$dest.tmp.$$" "$dest"; }}
}}
done_() {{
    touch "$QUEUE/submitted/$1"
    submitted=$((submitted + 1))
}}
"#,
        queue = shell::quote(&abs.display().to_string()),
        project = shell::quote(&project),
    );
    for f in &sub.shared {
        let _ = writeln!(s, "stage_shared {} {}", shell::quote(&f.name), shell::quote(&f.path.display().to_string()));
    }
    if sub.stdin_batch {
        // One create_work --stdin per group of equal bounds (jobs differ only in timeout).
        let mut groups: Vec<(String, Vec<&Workunit>)> = Vec::new();
        for wu in wus {
            let cmd = create_work_batch_command(&wu.job, sub);
            match groups.iter_mut().find(|(c, _)| *c == cmd) {
                Some((_, g)) => g.push(wu),
                None => groups.push((cmd, vec![wu])),
            }
        }
        for (cmd, group) in groups {
            s.push_str("list=$(mktemp)\nids=\n");
            for wu in group {
                let id = shell::quote(&wu.job.job_id);
                let _ = writeln!(
                    s,
                    "if [ -e \"$QUEUE/submitted/\"{id} ]; then skipped=$((skipped + 1)); else\n    stage {id} {}\n    echo {} >> \"$list\"\n    ids=\"$ids {}\"\nfi",
                    shell::quote(&wu.name),
                    shell::quote(&create_work_stdin_line(wu, sub)),
                    wu.job.job_id
                );
            }
            let _ = writeln!(
                s,
                "if [ -s \"$list\" ]; then\n    {cmd} < \"$list\"\n    for id in $ids; do done_ \"$id\"; done\nfi\nrm -f \"$list\""
            );
        }
    } else {
        for wu in wus {
            let id = shell::quote(&wu.job.job_id);
            let _ = writeln!(
                s,
                "if [ -e \"$QUEUE/submitted/\"{id} ]; then skipped=$((skipped + 1)); else\n    stage {id} {}\n    {}\n    done_ {id}\nfi",
                shell::quote(&wu.name),
                create_work_command(wu, sub)
            );
        }
    }
    s.push_str("echo \"create_work.sh: $submitted submitted, $skipped already submitted\"\n");
    let path = dir.join("create_work.sh");
    gah_util::atomic::write(&path, s.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(source) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)) {
            return Err(ScriptError::Permissions { path, source });
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_input_replaced_on_disk_is_hashed_again_under_its_new_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repo.tar");
        std::fs::write(&path, b"the first tree").unwrap();
        let mut f = SharedInput::content_named("gah-repo", &path).unwrap();
        let first = f.clone();
        assert!(!f.refresh().unwrap(), "unchanged");
        assert_eq!(f, first);
        // As gah deploy replaces it: a new file renamed over the old one.
        let tmp = dir.path().join("repo.tar.tmp");
        std::fs::write(&tmp, b"the second tree, longer").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(f.refresh().unwrap(), "changed");
        assert_eq!(f, SharedInput::content_named("gah-repo", &path).unwrap());
        assert!(f.name.starts_with("gah-repo-") && f.name != first.name, "{}", f.name);
        assert_ne!(f.md5, first.md5);
        assert_eq!(f.nbytes, 23);
        assert!(!f.refresh().unwrap());
    }
}
