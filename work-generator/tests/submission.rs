//! Issue 3, items 2, 5 and 6 end to end: profiles in the plan, the hermetic check on the
//! guest overlay's real Manifests and distfiles, `create_work --stdin` batches, remote
//! `submit_batch` against a local HTTP test double, and the daemon's bounded loop.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use common::published_plane;
use gah_core::job::{Compiler, Job};
use gah_ebuild::{Profile, Strategy};
use gah_util::process::command;
use gah_workgen::boinc::{write_submission, Submission, Workunit};
use gah_workgen::daemon::{
    self, CommandCount, DaemonConfig, DaemonError, LocalSubmitter, RemoteSubmitter, SubmitError, Submitter, UnsentError, UnsentSource,
};
use gah_workgen::distfiles::Mirror;
use gah_workgen::remote::{self, Remote, RemoteError, ReplyError, RpcError};
use gah_workgen::{load_repos, plan, plan_with, Config, Queue};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn config(strategy: Strategy, profile: Profile) -> Config {
    Config { compilers: vec![Compiler::Gcc], strategy, profile, timeout_secs: 1800, threads: 1, budget: gah_ebuild::Budget::default() }
}

/// The data.json a submission wrote for `wu`.
fn data_ref_of(queue: &Path, wu: &Workunit) -> gah_core::data_ref::DataRef {
    gah_core::data_ref::DataRef::from_json(&std::fs::read(queue.join("pending").join(wu.data_file())).unwrap()).unwrap()
}

fn fixture_queue(dir: &Path) -> (Queue, Vec<Job>) {
    let (repos, _) = load_repos(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/overlay")]);
    let p = plan(&repos, &config(Strategy::Exhaustive { limit: 64 }, Profile::amd64_linux()));
    let mut q = Queue::open(dir).unwrap();
    q.add(&p).unwrap();
    let order = q.next(usize::MAX).unwrap();
    (q, order)
}

#[test]
fn profile_folder_pins_and_defaults_reach_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let leaf = dir.path().join("leaf");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::create_dir_all(&leaf).unwrap();
    std::fs::write(base.join("make.defaults"), "ARCH=\"amd64\"\nUSE=\"-static-libs\"\n").unwrap();
    std::fs::write(base.join("package.use.mask"), "<app-arch/bzip2-2 verify\n").unwrap();
    std::fs::write(leaf.join("parent"), "../base\n").unwrap();
    let (profile, diags) = Profile::read(&leaf);
    assert!(diags.is_empty(), "{diags:?}");
    let (repos, _) = load_repos(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/overlay")]);
    let p = plan(&repos, &config(Strategy::Covering { t: 2, seed: 0 }, profile));
    let bzip2: Vec<String> = p.jobs.iter().filter(|j| j.cpv.starts_with("app-arch/bzip2")).map(|j| j.use_flags.to_package_use()).collect();
    // verify masked by the inherited package.use.mask; the profile's -static-libs makes the
    // default (first) configuration static-libs off, where IUSE says +static-libs.
    assert_eq!(bzip2, ["-static-libs -verify", "static-libs -verify"]);
}

#[test]
fn hermetic_check_on_the_guest_overlay() {
    let overlay = root().join("vm-images/overlay");
    let mirror_dir = root().join(".cache/distfiles");
    if !mirror_dir.join("jemalloc-5.3.1.tar.gz").exists() {
        eprintln!("skipping: no distfiles at {} (vm-images/fetch-distfiles)", mirror_dir.display());
        return;
    }
    let (repos, diags) = load_repos(&[overlay]);
    assert!(diags.iter().all(|d| d.severity != gah_ebuild::Severity::Error), "{diags:?}");
    let cfg = config(Strategy::Covering { t: 2, seed: 0 }, Profile::amd64_linux());

    // Every distfile present with the Manifest's checksums: nothing blocked.
    let good = Mirror::new(&mirror_dir, &["amd64", "~amd64"]);
    let all = plan_with(&repos, &cfg, Some(&good));
    assert!(all.blocked.is_empty(), "{:?}", all.blocked.first().map(|b| &b.missing));
    assert_eq!(all.jobs.len(), plan(&repos, &cfg).jobs.len());
    // What bzip2's workunits name: its tarball, and jemalloc's for its USE=jemalloc jobs.
    let bzip2 = |p: &gah_workgen::plan::Plan| p.distfiles[&("gah".to_owned(), "app-arch/bzip2-1.0.8".to_owned())].clone();
    assert_eq!(bzip2(&all).into_iter().collect::<Vec<_>>(), ["bzip2-1.0.8.tar.gz", "jemalloc-5.3.1.tar.gz"]);

    // jemalloc's tarball missing, xz's corrupted (same size, one byte changed), libffi's
    // truncated.
    let bad_dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&mirror_dir).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), bad_dir.path().join(e.file_name())).unwrap();
    }
    std::fs::remove_file(bad_dir.path().join("jemalloc-5.3.1.tar.gz")).unwrap();
    let xz = bad_dir.path().join("xz-5.2.5.tar.gz");
    let mut bytes = std::fs::read(&xz).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&xz, bytes).unwrap();
    let ffi = bad_dir.path().join("libffi-3.6.0.tar.gz");
    let bytes = std::fs::read(&ffi).unwrap();
    std::fs::write(&ffi, &bytes[..100]).unwrap();

    let bad = Mirror::new(bad_dir.path(), &["amd64", "~amd64"]);
    let p = plan_with(&repos, &cfg, Some(&bad));
    let mut reasons: Vec<String> = p
        .blocked
        .iter()
        .flat_map(|b| b.missing.iter().map(move |m| format!("{} <- {}: {} ({})", m.file, b.job.cp(), m.needed_by, m.problem)))
        .collect();
    reasons.sort();
    reasons.dedup();
    assert_eq!(
        reasons,
        [
            // bzip2 and xz-utils with USE=jemalloc need jemalloc's distfile through DEPEND.
            "jemalloc-5.3.1.tar.gz <- app-arch/bzip2: dev-libs/jemalloc-5.3.1 (missing)",
            "jemalloc-5.3.1.tar.gz <- app-arch/xz-utils: dev-libs/jemalloc-5.3.1 (missing)",
            "jemalloc-5.3.1.tar.gz <- dev-libs/jemalloc: dev-libs/jemalloc-5.3.1 (missing)",
            "libffi-3.6.0.tar.gz <- dev-libs/libffi: dev-libs/libffi-3.6.0 (size 100, Manifest says 1454211)",
            "xz-5.2.5.tar.gz <- app-arch/xz-utils: app-arch/xz-utils-5.2.5 (SHA512 differs from the Manifest)",
        ]
    );
    // bzip2 without jemalloc needs only its own (intact) tarball: still issued.
    let bzip2_issued: Vec<&Job> = p.jobs.iter().filter(|j| j.cpv == "app-arch/bzip2-1.0.8").collect();
    assert!(!bzip2_issued.is_empty() && bzip2_issued.iter().all(|j| !j.use_flags.0["jemalloc"]));
    assert!(p.blocked.iter().filter(|b| b.job.cpv == "app-arch/bzip2-1.0.8").all(|b| b.job.use_flags.0["jemalloc"]));
    assert_eq!(p.jobs.len() + p.blocked.len(), all.jobs.len());
    // Only what the issued jobs need; the queue keeps it for their workunits' data.json.
    assert_eq!(bzip2(&p).into_iter().collect::<Vec<_>>(), ["bzip2-1.0.8.tar.gz"]);
    let qdir = tempfile::tempdir().unwrap();
    Queue::open(qdir.path()).unwrap().add(&p).unwrap();
    assert_eq!(gah_workgen::queue::distfiles_of(qdir.path(), "gah", "app-arch/bzip2-1.0.8"), ["bzip2-1.0.8.tar.gz"]);
    // A cpv that would step out of the queue's folder names nothing, even where a list lies.
    std::fs::create_dir_all(qdir.path().join("etc")).unwrap();
    std::fs::write(qdir.path().join("etc/passwd.json"), br#"["planted.tar.gz"]"#).unwrap();
    assert!(gah_workgen::queue::distfiles_of(qdir.path(), "gah", "../../etc/passwd").is_empty());
    // What a bzip2 workunit's data.json names, as the work generator writes it.
    let q = Queue::open(qdir.path()).unwrap();
    let job = p.jobs.iter().find(|j| j.cpv == "app-arch/bzip2-1.0.8").unwrap();
    let wus = q.reserve(std::slice::from_ref(job)).unwrap();
    let plane = published_plane(qdir.path());
    gah_workgen::boinc::write_data_refs(qdir.path(), &wus, Some(&plane)).unwrap();
    let data = data_ref_of(qdir.path(), &wus[0]);
    assert_eq!((data.repo.as_str(), data.distfiles.as_slice()), ("/repos/gah", &["/distfiles/bzip2-1.0.8.tar.gz".to_owned()][..]));
    assert_eq!((data.base.as_deref(), data.disk.as_deref()), (None, None), "no guest root published");
    // Once the guest root and the vm's root disk are published, data.json names both (each
    // flavour's app version then carries neither).
    let tree = qdir.path().join("tree");
    std::fs::create_dir_all(tree.join("base/bin")).unwrap();
    std::fs::write(tree.join("base/bin/sh"), b"a shell").unwrap();
    std::fs::create_dir_all(tree.join("base-disk")).unwrap();
    std::fs::write(tree.join("base-disk/rootfs.ext4"), b"a disk").unwrap();
    gah_publish::publish(&tree, &plane.published, "gentoo.gah", &qdir.path().join("keys")).unwrap();
    gah_workgen::boinc::write_data_refs(qdir.path(), &wus, Some(&plane)).unwrap();
    let data = data_ref_of(qdir.path(), &wus[0]);
    assert_eq!((data.base.as_deref(), data.disk.as_deref()), (Some("/base"), Some(gah_core::data_ref::DISK_AT)));
    // A name gah-app would refuse is refused here, before any volunteer downloads it.
    let bad = gah_workgen::boinc::DataPlane { url: "file:///etc".into(), ..plane };
    assert!(gah_workgen::boinc::write_data_refs(qdir.path(), &wus, Some(&bad)).is_err());
}

#[test]
fn create_work_stdin_batches_against_a_fake_project() {
    let dir = tempfile::tempdir().unwrap();
    let (q, order) = fixture_queue(&dir.path().join("queue"));
    let proj = dir.path().join("project");
    std::fs::create_dir_all(proj.join("bin")).unwrap();
    // Stand-ins with the real tools' interfaces: create_work --stdin reads one job per line.
    let fake = |name: &str, body: &str| {
        let p = proj.join("bin").join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    fake("dir_hier_path", "mkdir -p download/ab && echo \"$(pwd)/download/ab/$1\"");
    fake("create_work", "echo \"args: $*\" >> create_work.log; while read -r line; do echo \"job: $line\" >> create_work.log; done");
    let wus = q.reserve(&order).unwrap();
    // No published repository to name: refused before anything is written.
    let err = write_submission(&q, &wus, &Submission { stdin_batch: true, ..Submission::standard() }, Some(&proj)).unwrap_err();
    assert!(err.to_string().contains("--published"), "{err}");
    let plane = published_plane(dir.path());
    let revision = gah_publish::current_revision(&plane.published, "gentoo.gah").unwrap().unwrap();
    let sub = Submission { stdin_batch: true, data: Some(plane.clone()), ..Submission::standard() };
    let script = write_submission(&q, &wus, &sub, Some(&proj)).unwrap();
    let data = data_ref_of(&dir.path().join("queue"), &wus[0]);
    assert_eq!((data.revision, data.root_catalog.as_str(), data.url.as_str()), (1, revision.root_catalog.as_str(), plane.url.as_str()));
    assert_eq!(data.repo, format!("/repos/{}", wus[0].job.repo));
    for expected in ["10 submitted, 0 already submitted", "0 submitted, 10 already submitted"] {
        let out = command("sh").arg(&script).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("create_work.sh: {expected}"));
    }
    // Written again over the same jobs, all submitted now: no data.json for them.
    let first_data = dir.path().join("queue/pending").join(wus[0].data_file());
    std::fs::remove_file(&first_data).unwrap();
    write_submission(&q, &wus, &sub, Some(&proj)).unwrap();
    assert!(!first_data.exists(), "a submitted job's data.json was written again");
    let log = std::fs::read_to_string(proj.join("create_work.log")).unwrap();
    let args: Vec<&str> = log.lines().filter(|l| l.starts_with("args: ")).collect();
    assert_eq!(args.len(), 1, "one create_work for the whole batch: {log}");
    assert!(args[0].ends_with("--stdin") && args[0].contains("--min_quorum 2 --target_nresults 2"), "{}", args[0]);
    let jobs: Vec<&str> = log.lines().filter(|l| l.starts_with("job: ")).collect();
    assert_eq!(jobs.len(), 10);
    assert_eq!(jobs[0], format!("job: --wu_name {id}_1 {id}_1.json {id}_1.data.json", id = order[0].job_id));
    // Each workunit's job file and data.json, staged.
    assert_eq!(std::fs::read_dir(proj.join("download/ab")).unwrap().count(), 20);

    // The daemon's local submitter drives the same tools directly. Submitting a job again
    // (issue 9, item 5) is a new workunit with a new name and its own job file.
    let mut local = LocalSubmitter { project: proj.clone(), queue: dir.path().join("queue"), sub };
    let again = q.reserve(&order[..2]).unwrap();
    assert_eq!(again[0].name, format!("{}_2", order[0].job_id));
    local.submit(&again).unwrap();
    let log = std::fs::read_to_string(proj.join("create_work.log")).unwrap();
    let jobs: Vec<&str> = log.lines().filter(|l| l.starts_with("job: ")).collect();
    assert_eq!(jobs.len(), 12);
    assert_eq!(jobs[10], format!("job: --wu_name {id}_2 {id}_2.json {id}_2.data.json", id = order[0].job_id));
    assert_eq!(std::fs::read_dir(proj.join("download/ab")).unwrap().count(), 24);
    // Submitted: the queue keeps no copy of their data.json (the staged one is the workunit's).
    assert!(!dir.path().join("queue/pending").join(again[0].data_file()).exists());
    let names: std::collections::BTreeSet<&str> = jobs.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
    assert_eq!(names.len(), 12, "every workunit name is new: {jobs:?}");
    assert_eq!(gah_core::job::job_id_of_wu(&again[0].name), order[0].job_id);

    // A failing create_work is named with what it said.
    fake("create_work", "echo 'no app gah' >&2; exit 1");
    let err = local.submit(&again[..1]).unwrap_err();
    assert!(matches!(&err, SubmitError::CreateWork { project, .. } if *project == proj), "{err:?}");
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert!(
        chain.starts_with(&format!("create_work in {}: ", proj.display())) && chain.ends_with("(exit status: 1): no app gah"),
        "{chain}"
    );
}

/// A tiny HTTP/1.1 server on 127.0.0.1 standing in for BOINC's submit_rpc_handler.php (a
/// test double): it records each request's path and decoded `request` form field and
/// answers with the next canned reply body.
fn rpc_test_double(replies: Vec<&'static str>) -> (String, std::thread::JoinHandle<Vec<(String, String)>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/gah/", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for reply in replies {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut len = 0;
            let mut form = false;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end().to_ascii_lowercase();
                if h.is_empty() {
                    break;
                }
                if let Some(v) = h.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                form |= h == "content-type: application/x-www-form-urlencoded";
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            assert!(form, "the request must be a form POST");
            let body = String::from_utf8(body).unwrap();
            let field = body.strip_prefix("request=").expect("one form field named request");
            seen.push((request_line.split_whitespace().take(2).collect::<Vec<_>>().join(" "), form_decode(field)));
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            )
            .unwrap();
        }
        seen
    });
    (url, handle)
}

fn form_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn remote_submit_batch_against_a_test_double() {
    let dir = tempfile::tempdir().unwrap();
    let (q, order) = fixture_queue(&dir.path().join("queue"));
    let (url, server) = rpc_test_double(vec![
        "<?xml version=\"1.0\"?>\n<batch_id>42</batch_id>\n",
        "<error>\n<error_num>-1</error_num>\n<error_msg>BOINC server: no app named gah was found</error_msg>\n</error>\n",
    ]);
    let remote =
        Remote { project_url: url.clone(), authenticator: "s3cret&<".into(), job_url_base: "https://files.example.org/jobs/".into() };
    let sub = Submission::standard();
    let client = remote::client().unwrap();
    let wus = q.reserve(&order[..3]).unwrap();
    let data = vec![b"{}".to_vec(); wus.len()];
    let req = remote::submit_batch_request(&wus, &data, &sub, &remote, "nightly");
    assert_eq!(remote::send(&client, &remote, &req).unwrap(), 42);
    let err = remote::send(&client, &remote, &req).unwrap_err();
    let RemoteError::Reply { url: at, source: ReplyError::Refused(rpc) } = &err else { panic!("{err:?}") };
    assert_eq!(at, &format!("{url}submit_rpc_handler.php"));
    assert_eq!(rpc, &RpcError { num: -1, msg: "BOINC server: no app named gah was found".into() });
    assert_eq!(
        format!("{:#}", anyhow::Error::from(err)),
        format!("submit_batch at {url}submit_rpc_handler.php: BOINC submit_batch error -1: BOINC server: no app named gah was found")
    );
    let seen = server.join().unwrap();
    assert_eq!(seen[0].0, "POST /gah/submit_rpc_handler.php");
    let xml = &seen[0].1;
    assert!(xml.starts_with("<submit_batch>\n<authenticator>s3cret&amp;&lt;</authenticator>\n"), "{xml}");
    for needle in [
        "<app_name>gah</app_name>",
        "<batch_name>nightly</batch_name>",
        "<rsc_memory_bound>4000000000</rsc_memory_bound>",
        "<delay_bound>259200</delay_bound>",
    ] {
        assert!(xml.contains(needle), "{needle} missing: {xml}");
    }
    assert_eq!(xml.matches("<job>").count(), 3);
    // Each input file: mode remote, its URL, size and MD5 of the job.json bytes.
    let bytes = order[0].to_json();
    let md5 = {
        use md5::{Digest, Md5};
        hex::encode(Md5::digest(&bytes))
    };
    let expected = format!(
        "<name>{id}_1</name>\n        <rsc_fpops_est>2250000000000</rsc_fpops_est>\n        <input_file>\n            <mode>remote</mode>\n            <url>https://files.example.org/jobs/{id}.json</url>\n            <nbytes>{}</nbytes>\n            <md5>{md5}</md5>\n        </input_file>",
        bytes.len(),
        id = order[0].job_id
    );
    assert!(xml.contains(&expected), "{expected}\nnot in\n{xml}");
    assert!(!format!("{remote:?}").contains("s3cret"), "the authenticator stays out of Debug");

    // Each job names its data.json after its job file, as a remote file with its size and MD5
    // (the input template's order).
    let data: Vec<Vec<u8>> = wus.iter().map(|wu| format!("data of {}", wu.name).into_bytes()).collect();
    let xml = remote::submit_batch_request(&wus, &data, &sub, &remote, "nightly");
    let md5_of = |b: &[u8]| {
        use md5::{Digest, Md5};
        hex::encode(Md5::digest(b))
    };
    for (job, (wu, data)) in xml.split("<job>").skip(1).zip(wus.iter().zip(&data)) {
        let urls: Vec<&str> = job.split("<url>").skip(1).map(|u| u.split('<').next().unwrap()).collect();
        assert_eq!(urls.len(), 2, "{job}");
        assert!(urls[0].ends_with(".json"), "{job}");
        assert_eq!(urls[1], format!("https://files.example.org/jobs/{}.data.json", wu.name));
        assert!(job.contains(&format!("<nbytes>{}</nbytes>\n            <md5>{}</md5>", data.len(), md5_of(data))), "{job}");
        // The RPC has no quorum values: the job's own input template carries them, and no
        // rsc_* value (template values would override the command line's bounds).
        let template = job.split("<input_template>").nth(1).expect("a job input template").split("</input_template>").next().unwrap();
        for needle in ["<min_quorum>2</min_quorum>", "<target_nresults>2</target_nresults>", "<max_total_results>8</max_total_results>"] {
            assert!(template.contains(needle), "{needle} missing: {template}");
        }
        assert!(!template.contains("<rsc_"), "{template}");
        assert_eq!(template.matches("<file_info>").count(), 2, "{template}");
    }
}

/// Unsent counts read in order, like a server draining between rounds.
struct Counts(Vec<u64>);

impl UnsentSource for Counts {
    fn unsent(&mut self) -> Result<u64, UnsentError> {
        Ok(self.0.remove(0))
    }
}

#[test]
fn daemon_keeps_the_cushion_and_never_resubmits() {
    let dir = tempfile::tempdir().unwrap();
    let qdir = dir.path().join("queue");
    let (q, order) = fixture_queue(&qdir);
    let cfg = DaemonConfig { keep_unsent: 6, results_per_job: 2, interval: std::time::Duration::ZERO, rounds: Some(5) };

    // Through the remote submitter and the HTTP test double: 0 unsent → 3 jobs; 6 → none;
    // 1 → 3 jobs (ceil(5/2)); 5 → 1 job; 0 → the 3 left of 10.
    let (url, server) =
        rpc_test_double(vec!["<batch_id>1</batch_id>", "<batch_id>2</batch_id>", "<batch_id>3</batch_id>", "<batch_id>4</batch_id>"]);
    let remote = Remote { project_url: url, authenticator: "a".into(), job_url_base: "http://x/".into() };
    let submission = Submission { data: Some(published_plane(dir.path())), ..Submission::standard() };
    let mut sub = RemoteSubmitter { remote, sub: submission, queue: qdir.clone(), client: remote::client().unwrap(), batches: Vec::new() };
    let mut log = Vec::new();
    let rounds = daemon::run(&q, None, &mut Counts(vec![0, 6, 1, 5, 0]), &mut sub, cfg, &mut |l| log.push(l.to_owned())).unwrap();
    let submitted: Vec<usize> = rounds.iter().map(|r| r.submitted).collect();
    assert_eq!(submitted, [3, 0, 3, 1, 3]);
    assert_eq!(sub.batches, [1, 2, 3, 4]);
    let first = Workunit { name: gah_core::job::wu_name(&order[0].job_id, 1), job: order[0].clone() };
    assert_eq!(data_ref_of(&qdir, &first).revision, 1, "each workunit's data.json, put where the server fetches it");
    assert_eq!(log[0], "unsent 0 (keeping 6): submitted 3 jobs");
    let seen = server.join().unwrap();
    // Rotation order, each job once, as its first workunit.
    let names: Vec<String> = seen
        .iter()
        .flat_map(|(_, xml)| xml.split("<name>").skip(1).map(|s| s.split('<').next().unwrap().to_owned()).collect::<Vec<_>>())
        .collect();
    assert_eq!(names, order.iter().map(|j| gah_core::job::wu_name(&j.job_id, 1)).collect::<Vec<_>>());
    assert!(q.next_unsubmitted(10).unwrap().is_empty());

    // A restarted daemon with the command source finds nothing left to submit.
    let q = Queue::open(&qdir).unwrap();
    let mut none = RecordingSubmitter(0);
    let cfg = DaemonConfig { rounds: Some(1), ..cfg };
    let rounds = daemon::run(&q, None, &mut CommandCount("echo ' 2 '".into()), &mut none, cfg, &mut |_| {}).unwrap();
    assert_eq!((rounds[0].unsent, rounds[0].submitted, none.0), (2, 0, 0));
    let err = daemon::run(&q, None, &mut CommandCount("echo lots".into()), &mut none, cfg, &mut |_| {}).unwrap_err();
    assert!(matches!(err, DaemonError::Count(UnsentError::NotACount { .. })), "{err:?}");
    assert_eq!(
        format!("{:#}", anyhow::Error::from(err)),
        "count unsent results: `echo lots` printed `lots`, not a count: invalid digit found in string"
    );
    let err = daemon::run(&q, None, &mut CommandCount("echo oops >&2; exit 3".into()), &mut none, cfg, &mut |_| {}).unwrap_err();
    assert!(format!("{:#}", anyhow::Error::from(err)).ends_with("failed (exit status: 3): oops"));

    // A submitter's failure names the batch; nothing is marked submitted.
    let (q, order) = fixture_queue(&dir.path().join("queue2"));
    let err = daemon::run(&q, None, &mut Counts(vec![0]), &mut Refusing, cfg, &mut |_| {}).unwrap_err();
    assert_eq!(format!("{:#}", anyhow::Error::from(err)), format!("submit 3 jobs from {}: full", order[0].job_id));
    assert_eq!(q.next_unsubmitted(10).unwrap().len(), 10);
}

/// A submitter whose server is always full.
struct Refusing;

impl Submitter for Refusing {
    fn submit(&mut self, _: &[Workunit]) -> Result<(), SubmitError> {
        Err(SubmitError::Other("full".into()))
    }
}

struct RecordingSubmitter(usize);

impl Submitter for RecordingSubmitter {
    fn submit(&mut self, wus: &[Workunit]) -> Result<(), SubmitError> {
        self.0 += wus.len();
        Ok(())
    }
}

/// Issue 9, item 6: the daemon takes its results database and queue from the project
/// (`../gah.conf` from `tmp_<host>/`) and refuses to start without a results database.
#[test]
fn the_daemon_is_configured_by_the_project_file() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    let cwd = project.join("tmp_host");
    std::fs::create_dir_all(&cwd).unwrap();
    let daemon = |extra: &[&str]| {
        let mut cmd = command(env!("CARGO_BIN_EXE_gah-workgen"));
        cmd.args(["daemon", "--keep-unsent", "0", "--unsent-cmd", "echo 0", "--rounds", "1", "--boinc-project", ".."])
            .args(extra)
            .current_dir(&cwd)
            .env_remove("GAH_RESULTS_DB")
            .env_remove("GAH_QUEUE_DIR");
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8(out.stderr).unwrap())
    };
    let (code, stderr) = daemon(&[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no results database configured") && stderr.contains("GAH_RESULTS_DB"), "{stderr}");
    assert_eq!(std::fs::read_dir(&cwd).unwrap().count(), 0, "nothing created under tmp_<host>/");

    std::fs::write(project.join("gah.conf"), "results_db = results/results.sqlite\nqueue_dir = queue\n").unwrap();
    // Without the data plane it refuses at start, not at its first submission.
    let (code, stderr) = daemon(&[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("give --published and --data-url"), "{stderr}");
    let plane = published_plane(tmp.path());
    let published = plane.published.to_str().unwrap().to_owned();
    let with_plane = ["--published", published.as_str(), "--data-url", plane.url.as_str()];
    let (code, stderr) = daemon(&with_plane);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("nothing to fold") && project.join("queue/state.sqlite").exists(), "{stderr}");
    // The command line wins over the file.
    let q2 = tmp.path().join("q2");
    let (code, stderr) = daemon(&[&with_plane[..], &["--queue", q2.to_str().unwrap()]].concat());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(tmp.path().join("q2/state.sqlite").exists());
}
