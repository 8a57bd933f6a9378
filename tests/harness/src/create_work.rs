//! What a stock BOINC server does with workunits outside the scheduler, copied where it
//! matters for gentoo@home, each rule with the BOINC source it comes from (BOINC's git
//! `master`; read with `git -C /work/.mirror/BOINC+boinc/repo show HEAD:<file>`):
//!
//! - [`process_result_template`]: the transitioner making a result from the workunit's
//!   output template (`tools/backend_lib.cpp`, `create_result`, `process_result_template`):
//!   every `<OUTFILE_n/>` becomes `<result_name>_r<random>_n` (the base name is
//!   `"%s_r%ld_"` of the result's name and `lrand48()`), `<UPLOAD_URL/>` the project's upload
//!   URL, the `<output_template>` tags go, and everything else (`<max_nbytes>`,
//!   `<optional/>`, ...) reaches the client as written; the scheduler sends the `<file_info>`s
//!   and, inside `<result>`, the `<file_ref>`s. `script_validator` and `script_assimilator` get
//!   every `<file_ref>`'s file, in order, uploaded or not (`sched/validate_util.cpp`,
//!   `get_output_file_paths`).
//! - [`InputTemplate::create_work`]: `create_work` building a workunit from an input template
//!   (`tools/process_input_template.cpp`, `process_input_template`, `process_file_info`,
//!   `process_workunit`):
//!   - every `<file_info>` without a `<physical_name>` takes the next input file named on the
//!     command line, in order; too few is an error ("Too few var input files given; need at
//!     least N"), and so is too many ("N input files given, but template has M");
//!   - an input file must already be in the download hierarchy (staged by `dir_hier_path`
//!     or `stage_file`): create_work reads its md5 and size there (`got_md5_info`, else
//!     `md5_file`, which fails on a missing file);
//!   - every element of a `<file_info>` other than `number`, `physical_name`, `url`, `md5_cksum`,
//!     `nbytes`, `gzipped_nbytes`, `gzip` is copied into the workunit's XML as is (so
//!     `<sticky/>` and `<no_delete/>` reach the client and `file_deleter`);
//!   - the n-th `<file_ref>` of `<workunit>` names the n-th `<file_info>` of the template, by
//!     order alone: `process_file_info` ignores `<number>` (line 193) and `process_workunit`
//!     ignores `<file_number>` (line 450), taking `infiles[n_file_refs]` (line 440), so numbers
//!     out of order change nothing; a `<file_ref>` beyond the `<file_info>`s read so far is
//!     "too many <file_ref>s" (line 436), and one with `<copy_file/>` and no `<open_name>` is
//!     opened under the file's own name (lines 459-461);
//!   - the number of `<file_ref>`s must equal the number of `<file_info>`s ("#file refs !=
//!     #file infos", line 530);
//!   - `<workunit>` values (`rsc_fpops_est`, `rsc_fpops_bound`, `rsc_memory_bound`,
//!     `rsc_disk_bound`, `delay_bound`, `min_quorum`, `target_nresults`, `max_error_results`,
//!     `max_total_results`, ...) are parsed **after** create_work has set the command line's
//!     (`tools/create_work.cpp` sets `wu` from its options, then calls `create_work2` →
//!     `process_input_template`), so the template's values win;
//!   - then `process_workunit` fills in: `target_nresults` > `max_total_results` raises
//!     `max_total_results` to `target_nresults` (lines 526-528; the transitioner does not
//!     correct it, `sched/transitioner.cpp` 367-398 would fail the workunit "too many total
//!     results" instead), and `create_work2` refuses `max_error_results` >
//!     `max_total_results` (`tools/backend_lib.cpp` 368-371).
//! - [`PlanClass::cmdline`]: what the scheduler appends to the app's command line for a CPU
//!   plan class (`sched/plan_class_spec.cpp`, `PLAN_CLASS_SPEC::check`, the "CPU only" branch),
//!   sent as the server-sent app version's `<cmdline>` (the harness's scheduler uses it for
//!   every server-sent version, [`crate::app_versions`]). A spec without `<max_threads>` has
//!   `max_threads` 1 (`PLAN_CLASS_SPEC::PLAN_CLASS_SPEC`, line 1406).
//! - [`delete_input_files`]: `file_deleter` removing a workunit's input files, except those
//!   whose `<file_info>` has `<no_delete/>` (`sched/file_deleter.cpp`, `wu_delete_files`),
//!   once the transitioner lets it: assimilated and every result over
//!   (`sched/transitioner.cpp` 546-559; the harness's `server.rs` decides when).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context};
use md5::{Digest, Md5};
use quick_xml::events::Event;
use quick_xml::Reader;

/// An XML element, as much of it as templates need.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Element {
    /// Tag name.
    pub name: String,
    /// Text directly inside, trimmed.
    pub text: String,
    /// Child elements, in order.
    pub children: Vec<Element>,
}

impl Element {
    /// Parses a document; returns its root element.
    pub fn parse(text: &str) -> anyhow::Result<Element> {
        let mut reader = Reader::from_str(text);
        reader.config_mut().trim_text(true);
        let mut stack: Vec<Element> = vec![Element::default()];
        loop {
            match reader.read_event().with_context(|| format!("XML error at byte {}", reader.buffer_position()))? {
                Event::Start(e) => {
                    stack.push(Element { name: String::from_utf8_lossy(e.name().as_ref()).into_owned(), ..Default::default() })
                }
                Event::Empty(e) => {
                    let el = Element { name: String::from_utf8_lossy(e.name().as_ref()).into_owned(), ..Default::default() };
                    stack.last_mut().expect("root").children.push(el);
                }
                Event::Text(t) => {
                    let s = t.unescape().map(|c| c.into_owned()).unwrap_or_default();
                    stack.last_mut().expect("root").text.push_str(s.trim());
                }
                Event::End(_) => {
                    let el = stack.pop().expect("balanced");
                    stack.last_mut().context("unbalanced end tag")?.children.push(el);
                }
                Event::Eof => break,
                _ => {}
            }
        }
        let mut doc = stack.pop().context("empty document")?;
        if !stack.is_empty() || doc.children.len() != 1 {
            bail!("not one root element");
        }
        Ok(doc.children.remove(0))
    }

    /// The children named `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The text of the first child named `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

/// One `<file_info>` of an input template.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateFile {
    /// `<physical_name>`: a constant file, not taken from the command line.
    pub physical_name: Option<String>,
    /// `<sticky/>`: the client keeps the file after the task.
    pub sticky: bool,
    /// `<no_delete/>`: `file_deleter` leaves the file on the server.
    pub no_delete: bool,
}

/// An input template (`templates/gah_in`).
#[derive(Debug, Clone, PartialEq)]
pub struct InputTemplate {
    /// The `<file_info>`s, in order.
    pub files: Vec<TemplateFile>,
    /// The `<file_ref>`s, in order: the `<file_number>` as written (which create_work
    /// ignores: the n-th `<file_ref>` is the n-th `<file_info>`'s) and the open name (`None`:
    /// `<copy_file/>` without `<open_name>`, opened under the file's own name).
    pub file_refs: Vec<(Option<usize>, Option<String>)>,
    /// The `<workunit>` values other than `<file_ref>`, by tag name.
    pub workunit: Vec<(String, String)>,
}

/// An input file of a workunit, as `create_work` records it.
#[derive(Debug, Clone, PartialEq)]
pub struct InputFile {
    /// The name in the download hierarchy.
    pub physical: String,
    /// The name the app opens.
    pub open_name: String,
    /// Size.
    pub nbytes: u64,
    /// md5, hex.
    pub md5: String,
    /// `<sticky/>`.
    pub sticky: bool,
    /// `<no_delete/>`.
    pub no_delete: bool,
}

/// The workunit values `create_work` takes on its command line and the template may set.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkunitValues {
    /// `rsc_fpops_est`.
    pub fpops_est: f64,
    /// `rsc_fpops_bound`.
    pub fpops_bound: f64,
    /// `rsc_memory_bound`.
    pub memory_bound: f64,
    /// `rsc_disk_bound`.
    pub disk_bound: f64,
    /// `delay_bound`, seconds.
    pub delay_bound_secs: u64,
    /// `min_quorum`.
    pub min_quorum: u32,
    /// `target_nresults`.
    pub target_nresults: u32,
    /// `max_error_results`.
    pub max_error_results: u32,
    /// `max_total_results`.
    pub max_total_results: u32,
}

/// The product's input template, `templates/gah_in`.
pub const GAH_IN: &str = include_str!("../../../templates/gah_in");

impl InputTemplate {
    /// Parses an input template.
    pub fn parse(text: &str) -> anyhow::Result<InputTemplate> {
        let root = Element::parse(text).context("input template")?;
        if root.name != "input_template" {
            bail!("input template: root element is <{}>", root.name);
        }
        let files = root
            .all("file_info")
            .map(|f| TemplateFile {
                physical_name: f.value("physical_name").map(str::to_owned),
                sticky: f.child("sticky").is_some(),
                no_delete: f.child("no_delete").is_some(),
            })
            .collect();
        // process_input_template: "bad WU template - no <workunit>".
        let wu = root.child("workunit").context("process_input_template: bad WU template - no <workunit>")?;
        let mut file_refs = Vec::new();
        let mut workunit = Vec::new();
        for c in &wu.children {
            if c.name == "file_ref" {
                let n = c.value("file_number").and_then(|n| n.trim().parse().ok());
                let open = c.value("open_name").map(str::to_owned);
                if open.is_none() && c.child("copy_file").is_none() {
                    // process_workunit, line 457.
                    bail!("No open name found and copy_file not specified");
                }
                file_refs.push((n, open));
            } else {
                workunit.push((c.name.clone(), c.text.clone()));
            }
        }
        Ok(InputTemplate { files, file_refs, workunit })
    }

    /// The product's `templates/gah_in`.
    pub fn gah_in() -> InputTemplate {
        InputTemplate::parse(GAH_IN).expect("templates/gah_in parses")
    }

    /// `create_work` with `infiles` named on its command line (files already staged in
    /// `download`) and `values` from its options: the workunit's input files, and `values`
    /// after the template's `<workunit>` values (which win) are applied.
    pub fn create_work(&self, download: &Path, infiles: &[&str], values: &mut WorkunitValues) -> anyhow::Result<Vec<InputFile>> {
        let var = self.files.iter().filter(|f| f.physical_name.is_none()).count();
        if infiles.len() < var {
            bail!("Too few var input files given; need at least {}", infiles.len() + 1);
        }
        if infiles.len() != var {
            bail!("process_input_template: {} input files given, but template has {var}", infiles.len());
        }
        if self.file_refs.len() > self.files.len() {
            bail!("too many <file_ref>s");
        }
        if self.file_refs.len() != self.files.len() {
            bail!("#file refs != #file infos");
        }
        let mut given = infiles.iter();
        let mut files = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            let physical = match &f.physical_name {
                Some(p) => p.clone(),
                None => (*given.next().expect("counted")).to_owned(),
            };
            let bytes = fs::read(download.join(&physical))
                .with_context(|| format!("md5_file: can't open {}", download.join(&physical).display()))?;
            // The i-th <file_ref> whatever its <file_number> (process_workunit, line 440).
            let open_name = self.file_refs[i].1.clone().unwrap_or_else(|| physical.clone());
            files.push(InputFile {
                physical,
                open_name,
                nbytes: bytes.len() as u64,
                md5: hex::encode(Md5::digest(&bytes)),
                sticky: f.sticky,
                no_delete: f.no_delete,
            });
        }
        for (tag, v) in &self.workunit {
            let num = || v.trim().parse::<f64>().with_context(|| format!("<{tag}> {v}"));
            let int = || v.trim().parse::<u32>().with_context(|| format!("<{tag}> {v}"));
            match tag.as_str() {
                "rsc_fpops_est" => values.fpops_est = num()?,
                "rsc_fpops_bound" => values.fpops_bound = num()?,
                "rsc_memory_bound" => values.memory_bound = num()?,
                "rsc_disk_bound" => values.disk_bound = num()?,
                "delay_bound" => values.delay_bound_secs = u64::from(int()?),
                "min_quorum" => values.min_quorum = int()?,
                "target_nresults" => values.target_nresults = int()?,
                "max_error_results" => values.max_error_results = int()?,
                "max_total_results" => values.max_total_results = int()?,
                _ => {}
            }
        }
        // process_workunit's fill-ins (lines 526-528), then create_work2's check.
        if values.target_nresults > values.max_total_results {
            values.max_total_results = values.target_nresults;
        }
        if values.max_error_results > values.max_total_results {
            bail!("max_error_results > max_total_results; can't create job");
        }
        Ok(files)
    }
}

/// `file_deleter` for one workunit whose `file_delete_state` is READY (`sched/file_deleter.cpp`,
/// `wu_delete_files`, lines 140-236; when that is, the harness's transitioner decides:
/// `State::file_deleter` in `server.rs`): nothing when the workunit's name contains
/// `nodelete` (line 146); else each input file is removed from `download` unless its
/// `<file_info>` has `<no_delete/>`, with its `.gz` (lines 202-210); a `.md5` only with
/// `<cache_md5_info>`, which the harness does not set. Returns the names removed.
pub fn delete_input_files(download: &Path, wu_name: &str, files: &[InputFile]) -> Vec<String> {
    let mut removed = Vec::new();
    if wu_name.contains("nodelete") {
        return removed;
    }
    for f in files.iter().filter(|f| !f.no_delete) {
        let path = download.join(&f.physical);
        if fs::remove_file(&path).is_ok() {
            removed.push(f.physical.clone());
        }
        let _ = fs::remove_file(download.join(format!("{}.gz", f.physical)));
    }
    removed
}

/// A CPU plan class of `plan_class_spec.xml`, the parts that make the command line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanClass {
    /// `<name>`.
    pub name: String,
    /// `<min_ncpus>`.
    pub min_ncpus: f64,
    /// `<max_threads>`.
    pub max_threads: f64,
    /// `<avg_ncpus>`.
    pub avg_ncpus: f64,
    /// `<mem_usage_base_mb>`, in bytes.
    pub mem_usage_base: f64,
    /// `<mem_usage_per_cpu_mb>`, in bytes.
    pub mem_usage_per_cpu: f64,
    /// `<nthreads_cmdline>`.
    pub nthreads_cmdline: bool,
    /// `<projected_flops_scale>` (1 when absent).
    pub projected_flops_scale: f64,
}

/// BOINC's MEGA (`lib/util.h`): its MB is 2^20 bytes.
const MEGA: f64 = 1_048_576.0;

impl PlanClass {
    /// The plan classes of a `plan_class_spec.xml`.
    pub fn parse_spec(text: &str) -> anyhow::Result<Vec<PlanClass>> {
        let root = Element::parse(text).context("plan_class_spec.xml")?;
        let num = |e: &Element, n: &str| e.value(n).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0);
        Ok(root
            .all("plan_class")
            .map(|p| PlanClass {
                name: p.value("name").unwrap_or_default().to_owned(),
                min_ncpus: num(p, "min_ncpus"),
                // PLAN_CLASS_SPEC's constructor: max_threads = 1 unless the spec says.
                max_threads: p.value("max_threads").and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(1.0),
                avg_ncpus: num(p, "avg_ncpus"),
                mem_usage_base: num(p, "mem_usage_base_mb") * MEGA,
                mem_usage_per_cpu: num(p, "mem_usage_per_cpu_mb") * MEGA,
                // parse_bool: <nthreads_cmdline/> or <nthreads_cmdline>1</nthreads_cmdline>.
                nthreads_cmdline: p.child("nthreads_cmdline").is_some_and(|c| c.text.is_empty() || c.text.trim() != "0"),
                projected_flops_scale: p.value("projected_flops_scale").and_then(|v| v.trim().parse().ok()).unwrap_or(1.0),
            })
            .collect())
    }

    /// What the scheduler appends to the app's command line (`hu.cmdline`) for a host with
    /// `effective_ncpus` usable CPUs and `usable_ram` bytes, or None when the host is refused
    /// (too little memory). `PLAN_CLASS_SPEC::check`, CPU only: `max_threads` > 1 or
    /// `nthreads_cmdline` makes it multicore (`can_use_multicore`); the CPUs are
    /// min(max_threads, effective_ncpus), cut to what the memory allows when
    /// `mem_usage_per_cpu_mb` is set, and then `" --memory_size_mb %.0f"` of base + n·per_cpu;
    /// `nthreads_cmdline` adds `" --nthreads %d"`.
    /// The server-sent app version carries it as `<cmdline>`, which the client puts after the
    /// workunit's command line (`client/app_start.cpp`); under anonymous platform the
    /// scheduler never calls `app_plan` (`sched/sched_version.cpp`,
    /// `get_app_version_anonymous`), so nothing is appended there.
    pub fn cmdline(&self, effective_ncpus: f64, usable_ram: f64) -> Option<String> {
        self.usage(effective_ncpus, usable_ram).map(|(_, cmdline)| cmdline)
    }

    /// [`PlanClass::cmdline`] with the CPUs it budgets (`hu.avg_ncpus`, the app version's
    /// `<avg_ncpus>` in the reply).
    pub fn usage(&self, effective_ncpus: f64, usable_ram: f64) -> Option<(f64, String)> {
        let mut cmdline = String::new();
        let can_use_multicore = self.max_threads > 1.0 || self.nthreads_cmdline;
        let mut avg_ncpus = 1.0;
        if self.avg_ncpus > 0.0 {
            avg_ncpus = self.avg_ncpus;
        } else if can_use_multicore {
            avg_ncpus = if self.max_threads > effective_ncpus { effective_ncpus } else { self.max_threads };
            if self.mem_usage_per_cpu > 0.0 {
                let min_ncpus = if self.min_ncpus > 0.0 { self.min_ncpus } else { 1.0 };
                if self.mem_usage_base + min_ncpus * self.mem_usage_per_cpu > usable_ram {
                    return None;
                }
                // `int n = (usable_ram - mem_usage_base)/mem_usage_per_cpu;` truncates.
                let n = ((usable_ram - self.mem_usage_base) / self.mem_usage_per_cpu).trunc();
                if n < avg_ncpus {
                    avg_ncpus = n;
                }
                let mem_usage = self.mem_usage_base + avg_ncpus * self.mem_usage_per_cpu;
                let _ = write!(cmdline, " --memory_size_mb {:.0}", mem_usage / MEGA);
            }
        }
        if self.nthreads_cmdline {
            // `(int)hu.avg_ncpus`.
            let _ = write!(cmdline, " --nthreads {}", avg_ncpus.trunc());
        }
        Some((avg_ncpus, cmdline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gah_out_gives_each_result_its_outcome_and_an_optional_packages_upload() {
        let files = process_result_template(crate::server::RESULT_TEMPLATE, "wu_1").unwrap();
        assert_eq!(
            files.outputs,
            [("wu_1_r0_0".to_owned(), "outcome.tar.gz".to_owned()), ("wu_1_r0_1".to_owned(), "binpkgs.tar".to_owned())]
        );
        assert!(files.file_infos.contains("<max_nbytes>536870912</max_nbytes>") && files.file_infos.contains("<UPLOAD_URL/>"));
        assert_eq!(files.file_refs.matches("<optional/>").count(), 1, "{}", files.file_refs);
        assert!(!files.file_infos.contains("OUTFILE") && !files.file_refs.contains("OUTFILE"));
        // What gah-app leaves out to stay under the template's cap is what the cap says.
        assert!(files.file_infos.contains(&format!("<max_nbytes>{}</max_nbytes>", gah_core::binpkg::MAX_UPLOAD)));
    }

    #[test]
    fn gah_in_declares_every_input_and_no_per_job_value() {
        let t = InputTemplate::gah_in();
        let opens: Vec<_> = t.file_refs.iter().map(|(n, o)| (*n, o.as_deref())).collect();
        assert_eq!(opens, [(Some(0), Some("job.json")), (Some(1), Some("data.json"))]);
        // Both are the workunit's own: nothing shared, nothing kept on the client.
        let shared: Vec<_> = t.files.iter().map(|f| (f.physical_name.is_none(), f.sticky, f.no_delete)).collect();
        assert_eq!(shared, [(true, false, false), (true, false, false)]);
        // create_work applies these after its command line: the generator's per-job values
        // would lose to any of them.
        assert_eq!(t.workunit, []);
    }

    #[test]
    fn plan_class_cmdline_is_the_schedulers() {
        let spec = PlanClass::parse_spec(include_str!("../../../templates/plan_class_spec.xml")).unwrap();
        let vm = spec.iter().find(|p| p.name == "vm").unwrap();
        // max_threads 2 on an 8-CPU host with 16 GiB: 1024 + 2*512 MB.
        assert_eq!(vm.cmdline(8.0, 16.0 * 1024.0 * MEGA).unwrap(), " --memory_size_mb 2048");
        // Memory cuts the CPUs: (1800-1024)/512 = 1.
        assert_eq!(vm.cmdline(8.0, 1800.0 * MEGA).unwrap(), " --memory_size_mb 1536");
        assert_eq!(vm.cmdline(8.0, 1000.0 * MEGA), None);
        assert_eq!(vm.usage(8.0, 1800.0 * MEGA).unwrap().0, 1.0);
        assert_eq!(vm.usage(8.0, 16.0 * 1024.0 * MEGA).unwrap().0, 2.0);
        let threads = PlanClass { nthreads_cmdline: true, max_threads: 4.0, ..PlanClass::default() };
        assert_eq!(threads.cmdline(3.0, 1e12).unwrap(), " --nthreads 3");
        assert_eq!(PlanClass::default().cmdline(8.0, 1e12).unwrap(), "");
    }

    #[test]
    fn max_threads_defaults_to_one() {
        // sched/plan_class_spec.cpp line 1406: without <max_threads> a multicore-by-cmdline
        // class gets one thread, not zero.
        let spec = PlanClass::parse_spec(
            "<plan_classes><plan_class><name>t</name><nthreads_cmdline/></plan_class>\
             <plan_class><name>u</name><max_threads>3</max_threads><nthreads_cmdline/></plan_class></plan_classes>",
        )
        .unwrap();
        assert_eq!(spec[0].max_threads, 1.0);
        assert_eq!(spec[0].usage(8.0, 1e12).unwrap(), (1.0, " --nthreads 1".to_owned()));
        assert_eq!(spec[1].cmdline(8.0, 1e12).unwrap(), " --nthreads 3");
    }

    /// A fresh folder holding `names` (each file's bytes are its name).
    fn staged(test: &str, names: &[&str]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("gah-create-work-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        for n in names {
            fs::write(dir.join(n), n.as_bytes()).unwrap();
        }
        dir
    }

    fn values() -> WorkunitValues {
        WorkunitValues {
            fpops_est: 1.0,
            fpops_bound: 1.0,
            memory_bound: 1.0,
            disk_bound: 1.0,
            delay_bound_secs: 1,
            min_quorum: 1,
            target_nresults: 1,
            max_error_results: 1,
            max_total_results: 1,
        }
    }

    #[test]
    fn file_refs_pair_with_files_by_order_not_by_number() {
        let dir = staged("order", &["a", "b", "c"]);
        // The <file_number>s are out of order: process_workunit ignores them.
        let t = InputTemplate::parse(
            "<input_template><file_info><number>0</number></file_info><file_info><number>1</number></file_info>\
             <file_info><number>2</number></file_info><workunit>\
             <file_ref><file_number>2</file_number><open_name>first</open_name></file_ref>\
             <file_ref><file_number>0</file_number><open_name>second</open_name></file_ref>\
             <file_ref><file_number>1</file_number><copy_file/></file_ref></workunit></input_template>",
        )
        .unwrap();
        let files = t.create_work(&dir, &["a", "b", "c"], &mut values()).unwrap();
        let pairs: Vec<_> = files.iter().map(|f| (f.physical.as_str(), f.open_name.as_str())).collect();
        assert_eq!(pairs, [("a", "first"), ("b", "second"), ("c", "c")]);
        // Every <file_ref> needs an open name or <copy_file/>.
        let e = InputTemplate::parse(
            "<input_template><file_info/><workunit><file_ref><file_number>0</file_number></file_ref></workunit></input_template>",
        )
        .unwrap_err();
        assert!(e.to_string().contains("No open name found"), "{e}");
        // More <file_ref>s than <file_info>s.
        let t = InputTemplate::parse(
            "<input_template><file_info/><workunit><file_ref><open_name>x</open_name></file_ref>\
             <file_ref><open_name>y</open_name></file_ref></workunit></input_template>",
        )
        .unwrap();
        let e = t.create_work(&dir, &["a"], &mut values()).unwrap_err();
        assert!(e.to_string().contains("too many <file_ref>s"), "{e}");
    }

    #[test]
    fn target_nresults_raises_max_total_results() {
        let dir = staged("nresults", &["a"]);
        let t = InputTemplate::parse(
            "<input_template><file_info/><workunit><file_ref><open_name>x</open_name></file_ref></workunit></input_template>",
        )
        .unwrap();
        let mut v = WorkunitValues { target_nresults: 3, max_total_results: 2, ..values() };
        t.create_work(&dir, &["a"], &mut v).unwrap();
        assert_eq!((v.target_nresults, v.max_total_results), (3, 3));
        let mut v = WorkunitValues { max_error_results: 4, max_total_results: 2, ..values() };
        let e = t.create_work(&dir, &["a"], &mut v).unwrap_err();
        assert!(e.to_string().contains("max_error_results > max_total_results"), "{e}");
    }
}

/// A result's output files and the XML the scheduler sends for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultFiles {
    /// The `<file_info>`s, `<UPLOAD_URL/>` still to be replaced by the caller.
    pub file_infos: String,
    /// The `<file_ref>`s that go inside the scheduler reply's `<result>`.
    pub file_refs: String,
    /// (physical name, open name) of each output file, in the template's order.
    pub outputs: Vec<(String, String)>,
}

/// BOINC's `process_result_template` for the result `result_name` (the random part of its
/// files' names is 0), as the module says.
pub fn process_result_template(template: &str, result_name: &str) -> anyhow::Result<ResultFiles> {
    let mut text = template.to_owned();
    while let Some(at) = text.find("<OUTFILE_") {
        let rest = &text[at + "<OUTFILE_".len()..];
        let end = rest.find("/>").context("<OUTFILE_ without />")?;
        let n = rest[..end].to_owned();
        text.replace_range(at..at + "<OUTFILE_".len() + end + 2, &format!("{result_name}_r0_{n}"));
    }
    let text = text.replace("<output_template>", "").replace("</output_template>", "");
    let start = text.find("<result>").context("output template without <result>")?;
    let end = text.find("</result>").context("output template without </result>")?;
    let (file_infos, file_refs) = (text[..start].to_owned(), text[start + "<result>".len()..end].to_owned());
    let field = |block: &str, tag: &str| -> Option<String> {
        let open = format!("<{tag}>");
        let from = block.find(&open)? + open.len();
        Some(block[from..from + block[from..].find(&format!("</{tag}>"))?].trim().to_owned())
    };
    let mut outputs = Vec::new();
    for block in file_refs.split("<file_ref>").skip(1) {
        let name = field(block, "file_name").context("a <file_ref> without <file_name>")?;
        let open = field(block, "open_name").unwrap_or_else(|| name.clone());
        outputs.push((name, open));
    }
    Ok(ResultFiles { file_infos, file_refs, outputs })
}
