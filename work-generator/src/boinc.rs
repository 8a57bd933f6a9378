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
//! Every workunit also carries a `data.json` (`templates/gah_in`'s file 1,
//! [`gah_core::data_ref::DataRef`]): where its ebuild repository and distfiles are in the
//! project's CernVM-FS repository ([`DataPlane`]), at the revision published when it was
//! made; staged per workunit as `<wu_name>.data.json` ([`write_data_refs`]). No tarball goes
//! out: `gah-app` reads what the job needs through the volunteer's cache. The template sets no
//! bound: create_work applies the template's `<workunit>` values after its command line
//! (BOINC's `tools/process_input_template.cpp`), so the per-job values here would lose to them.
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
    /// The workunits' `data.json` files could not be written.
    #[error(transparent)]
    DataRef(#[from] DataRefError),
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

/// The input template (`templates/gah_in`): the job (`job.json`), then its `data.json`.
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
    /// Where the workunits' inputs are published ([`write_data_refs`]); `None` in
    /// [`Submission::standard`]: a submission without it is refused (create_work would refuse
    /// every workunit: the template wants a `data.json`).
    pub data: Option<DataPlane>,
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
            data: None,
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

    /// The physical name its `data.json` is staged under: `<wu_name>.data.json`.
    pub fn data_file(&self) -> String {
        format!("{}.data.json", self.name)
    }
}

/// The project's CernVM-FS repository, as the work generator names it in each workunit's
/// `data.json`: published (by `gah deploy` or `gah-publish`) into a folder the project's web
/// server serves at `url`, with the ebuild repositories at `/repos/<name>` and the distfiles
/// at `/distfiles`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPlane {
    /// The repository's name (e.g. `gentoo.gah`; the app version carries `<name>.pub`).
    pub name: String,
    /// The URL volunteers read it from.
    pub url: String,
    /// The folder it is published in (its current revision is read from there).
    pub published: PathBuf,
}

/// Why the `data.json` files could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DataRefError {
    /// No data plane was given.
    #[error("no published repository to name (give --published and --data-url): create_work would refuse workunits without a data.json")]
    NoDataPlane,
    /// The published repository's current revision could not be read.
    #[error("read the published repository's revision in {}", path.display())]
    Revision {
        /// The folder.
        path: PathBuf,
        /// The cause (boxed: it is large, and this error travels in every submission's).
        #[source]
        source: Box<gah_publish::PublishError>,
    },
    /// Nothing is published there yet.
    #[error("{} holds no published repository yet (gah deploy, or gah-publish, publishes it)", .0.display())]
    Unpublished(PathBuf),
    /// The reference would not be read by gah-app (a bad URL, name or distfile name).
    #[error("the data.json of {wu}")]
    Invalid {
        /// The workunit.
        wu: String,
        /// Why.
        #[source]
        source: gah_core::Error,
    },
    /// A file could not be written.
    #[error(transparent)]
    Write(#[from] AtomicError),
}

/// Writes each workunit's `data.json` into the queue's `pending/` as `<wu_name>.data.json`:
/// the repository's current revision, its job's ebuild repository, and the distfiles the plan
/// found its ebuild needs ([`crate::queue::distfiles_of`]). Returns their bytes, in `wus`'
/// order.
///
/// The revision is the one current now. `gah deploy` publishes the tree and then plans the
/// queue over it, so between the two (seconds) a workunit may name a revision newer than its
/// plan; a job whose ebuild or distfile that revision lacks fails on the volunteer's side,
/// naming the path.
pub fn write_data_refs(queue: &Path, wus: &[Workunit], data: Option<&DataPlane>) -> Result<Vec<Vec<u8>>, DataRefError> {
    let plane = data.ok_or(DataRefError::NoDataPlane)?;
    let revision = gah_publish::current_revision(&plane.published, &plane.name)
        .map_err(|source| DataRefError::Revision { path: plane.published.clone(), source: Box::new(source) })?
        .ok_or_else(|| DataRefError::Unpublished(plane.published.clone()))?;
    let mut out = Vec::with_capacity(wus.len());
    // One read per ebuild: its configurations (USE, compilers) share the list.
    let mut lists: std::collections::HashMap<(&str, &str), Vec<String>> = std::collections::HashMap::new();
    for wu in wus {
        let distfiles = lists
            .entry((&wu.job.repo, &wu.job.cpv))
            .or_insert_with(|| crate::queue::distfiles_of(queue, &wu.job.repo, &wu.job.cpv))
            .clone();
        // The project's package store (validated jobs' agreed packages), when published.
        let published = |folder: &str| revision.top_level.iter().any(|p| p == folder);
        let data = gah_core::data_ref::DataRef::new(
            &plane.name,
            &plane.url,
            revision.revision,
            &revision.root_catalog,
            &wu.job.repo,
            distfiles,
            published(gah_core::data_ref::BINPKGS_AT),
        )
        .map_err(|source| DataRefError::Invalid { wu: wu.name.clone(), source })?;
        // A published guest root serves the sandbox app versions, and a published root disk
        // the vm ones, which then carry none (issue 11, item 3); each flavour ignores the other's.
        let data = if published(gah_core::data_ref::BASE_AT) { data.with_base() } else { data };
        let data = if published(gah_core::data_ref::DISK_DIR) { data.with_disk() } else { data };
        let bytes = data.to_json();
        gah_util::atomic::write(&queue.join("pending").join(wu.data_file()), &bytes)?;
        out.push(bytes);
    }
    Ok(out)
}

/// The `create_work` command for one workunit (its job file staged as `<wu_name>.json`,
/// then its `<wu_name>.data.json`).
pub fn create_work_command(wu: &Workunit, sub: &Submission) -> String {
    let files = format!("{} {}", shell::quote(&wu.job_file()), shell::quote(&wu.data_file()));
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
/// file, then its `data.json`). create_work splits these lines on blanks itself (no shell):
/// workunit names have none.
pub fn create_work_stdin_line(wu: &Workunit) -> String {
    format!("--wu_name {} {} {}", wu.name, wu.job_file(), wu.data_file())
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
    // The script skips jobs already submitted: their data.json would only be left over.
    let unsubmitted: Vec<Workunit> = wus.iter().filter(|wu| !dir.join("submitted").join(&wu.job.job_id).exists()).cloned().collect();
    write_data_refs(dir, &unsubmitted, sub.data.as_ref())?;
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
# stage JOB_ID WU_NAME: copy the job file and the workunit's data.json into the download
# hierarchy as WU_NAME.json and WU_NAME.data.json.
stage() {{
    dest=$(bin/dir_hier_path "$2.json")
    cp "$QUEUE/pending/$1.json" "$dest"
    dest=$(bin/dir_hier_path "$2.data.json")
    cp "$QUEUE/pending/$2.data.json" "$dest"
}}
done_() {{
    touch "$QUEUE/submitted/$1"
    submitted=$((submitted + 1))
}}
"#,
        queue = shell::quote(&abs.display().to_string()),
        project = shell::quote(&project),
    );
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
                    shell::quote(&create_work_stdin_line(wu)),
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
