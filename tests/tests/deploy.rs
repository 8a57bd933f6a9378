//! `gah deploy` into a project folder shaped as BOINC's `make_project` leaves it: what goes
//! where, that a second run changes nothing, that the admin's own settings stay, and that the
//! daemon lines are templates/README.md's.
//!
//! The project is a **stand-in**, and so are its `bin/xadd` and `bin/update_versions` (test
//! doubles: shell scripts that log their call and check what the real ones would read).
//! What the stand-in copies from BOINC (checked against a real project made by make_project
//! from BOINC master c5c6cb79b9, 2026-12-01):
//! - `config.xml` (py/Boinc/setup_project.py): `<boinc><config>` with `db_user`, `db_name`,
//!   `download_url` and `download_dir` (where `gah deploy` publishes the data plane),
//!   and `db_passwd`/`db_host` written as blank multi-line elements when unset; `<daemons>`
//!   with feeder, transitioner and file_deleter; `<tasks>` after it;
//! - `project.xml` (tools/project.xml): `<boinc>` with `<platform>` entries and no app;
//! - the folders `bin/`, `templates/`, `html/inc/`, `apps/`, `download/`.
//!
//! The real tools were run by hand on that project (the issue note says what ran).

use std::fs;
use std::path::{Path, PathBuf};

use gah_tests::{program, project_root};

const CONFIG_XML: &str = "<boinc>
    <config>
        <db_user>boincadm</db_user>
        <db_name>gah</db_name>
        <db_passwd>
            
        </db_passwd>
        <db_host>
            
        </db_host>
        <download_url>http://127.0.0.1/gah/download</download_url>
        <download_dir>/stand-in/download</download_dir>
        <key_dir>/stand-in/keys/</key_dir>
    </config>
    <tasks>
        <task>
            <cmd>db_dump -d 2 --dump_spec ../db_dump_spec.xml</cmd>
            <period>24 hours</period>
        </task>
    </tasks>
    <daemons>
        <daemon>
            <cmd>feeder -d 3 </cmd>
        </daemon>
        <daemon>
            <cmd>transitioner -d 3 </cmd>
        </daemon>
        <daemon>
            <cmd>file_deleter -d 3 </cmd>
        </daemon>
    </daemons>
</boinc>
";

const PROJECT_XML: &str = "<boinc>
    <platform>
        <name>x86_64-pc-linux-gnu</name>
        <user_friendly_name>Linux running on an AMD x86_64 or Intel EM64T CPU</user_friendly_name>
    </platform>
</boinc>
";

/// A plan class of the project's own, which must survive the merge.
const OWN_PLAN_CLASSES: &str = "<plan_classes>
    <plan_class>
        <name>their_own</name>
        <min_ncpus>1</min_ncpus>
    </plan_class>
</plan_classes>
";

fn stand_in_project(dir: &Path) {
    for sub in ["bin", "templates", "html/inc", "apps", "download", "keys"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    fs::write(dir.join("config.xml"), CONFIG_XML.replace("/stand-in", &dir.display().to_string())).unwrap();
    fs::write(dir.join("project.xml"), PROJECT_XML).unwrap();
    fs::write(dir.join("plan_class_spec.xml"), OWN_PLAN_CLASSES).unwrap();
    // Test doubles of BOINC's tools: they log each call; update_versions checks that every
    // version folder has a version.xml naming files that are there, as the real one reads it.
    let xadd = "#!/bin/sh\necho \"xadd $(pwd)\" >> calls.log\necho 'app gah already in DB'\n";
    let update_versions = r#"#!/bin/sh
echo "update_versions $*" >> calls.log
for v in apps/gah/*/*/version.xml; do
  d=$(dirname "$v")
  for f in $(sed -n 's:.*<physical_name>\(.*\)</physical_name>.*:\1:p' "$v"); do
    [ -f "$d/$f" ] || { echo "missing $d/$f" >&2; exit 1; }
  done
done
echo "App version added successfully; ID=1"
"#;
    for (name, text) in [("xadd", xadd), ("update_versions", update_versions)] {
        fs::write(dir.join("bin").join(name), text).unwrap();
        gah_util::process::run_checked(gah_util::process::command("chmod").arg("0755").arg(dir.join("bin").join(name))).unwrap();
    }
}

fn stand_in_image(dir: &Path) {
    fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
    fs::write(dir.join("rootfs/bin/sh"), b"#!stand-in shell").unwrap();
}

/// A stand-in project, a vm image (kernel, initramfs, disk; no `rootfs/`) and an empty
/// repository under `dir`.
fn vm_project(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (project, image, repo) = (dir.join("project"), dir.join("image"), dir.join("repo"));
    stand_in_project(&project);
    fs::create_dir_all(&image).unwrap();
    for file in ["vmlinux", "initramfs.cpio.gz", "rootfs.ext4"] {
        fs::write(image.join(file), format!("stand-in {file}")).unwrap();
    }
    fs::create_dir_all(repo.join("profiles")).unwrap();
    fs::write(repo.join("profiles/repo_name"), "gah-overlay\n").unwrap();
    fs::create_dir_all(repo.join("metadata/md5-cache")).unwrap();
    (project, image, repo)
}

fn deploy(project: &Path, image: &Path, repo: &Path, extra: &[&str]) -> (bool, String) {
    deploy_classes(project, image, repo, "sandbox", extra)
}

fn deploy_classes(project: &Path, image: &Path, repo: &Path, classes: &str, extra: &[&str]) -> (bool, String) {
    let bin = program("gah").parent().unwrap().to_path_buf();
    let out = gah_util::process::command(program("gah"))
        .arg("deploy")
        .arg("--project")
        .arg(project)
        .args(["--plan-classes", classes])
        .arg("--bin")
        .arg(&bin)
        .arg("--image")
        .arg(image)
        .arg("--repo")
        .arg(repo)
        .args(extra)
        .env("GAH_ROOT", project_root())
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The `<cmd>` lines of templates/README.md's config.xml blocks.
fn readme_daemon_lines() -> Vec<String> {
    let readme = fs::read_to_string(project_root().join("templates/README.md")).unwrap();
    readme
        .lines()
        .filter_map(|l| l.trim().strip_prefix("<cmd>").and_then(|l| l.strip_suffix("</cmd>")))
        .filter(|l| l.starts_with("script_"))
        .map(str::to_owned)
        .collect()
}

fn daemon_cmds(config: &str) -> Vec<String> {
    config.lines().filter_map(|l| l.trim().strip_prefix("<cmd>").and_then(|l| l.strip_suffix("</cmd>"))).map(str::to_owned).collect()
}

#[test]
fn deploy_installs_everything_once_and_keeps_the_admins_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let (project, image, repo) = (tmp.path().join("project"), tmp.path().join("image"), tmp.path().join("repo"));
    stand_in_project(&project);
    stand_in_image(&image);
    fs::create_dir_all(repo.join("profiles")).unwrap();
    fs::write(repo.join("profiles/repo_name"), "gah-overlay\n").unwrap();
    fs::create_dir_all(repo.join("metadata/md5-cache")).unwrap();

    let (ok, said) = deploy(&project, &image, &repo, &[]);
    assert!(ok, "{said}");
    for program in ["gah-validate-init", "gah-validate-compare", "gah-assimilate", "gah-workgen", "gah"] {
        assert!(said.contains(&format!("deploy: bin/{program}: installed")), "{said}");
        assert_eq!(fs::read(project.join("bin").join(program)).unwrap(), fs::read(self::program(program)).unwrap());
    }
    for template in ["gah_in", "gah_out"] {
        assert_eq!(
            fs::read(project.join("templates").join(template)).unwrap(),
            fs::read(project_root().join("templates").join(template)).unwrap()
        );
    }
    let conf = fs::read_to_string(project.join("gah.conf")).unwrap();
    assert!(conf.contains("results_db = results/results.sqlite"), "{conf}");
    // The assimilator localises failures over the metadata copied beside the queue.
    assert!(conf.contains("localise_repo = \"gah/repo\""), "{conf}");
    assert!(project.join("gah/repo/metadata/md5-cache").is_dir(), "{said}");
    // The data plane: the repository published into the download folder (Apache serves it),
    // readable with the key the app version carries.
    let published = project.join("download/cvmfs/gentoo.gah");
    let key = project.join("gah/cvmfs-keys/gentoo.gah.pub");
    let reader = gah_publish::verify(&published, "gentoo.gah", &key).unwrap_or_else(|e| panic!("{e}: {said}"));
    assert_eq!(reader.read("/repos/gah-overlay/profiles/repo_name").unwrap(), b"gah-overlay\n");
    assert!(!project.join("gah/repo.tar").exists(), "no tarball any more");
    // Volunteers' agreed packages: a store in the project, published (empty so far) at /binpkgs.
    assert!(conf.contains("binpkgs_dir = \"gah/binpkgs\""), "{conf}");
    assert!(project.join("gah/binpkgs/store").is_dir(), "{said}");
    assert!(reader.list("/binpkgs").is_ok(), "no /binpkgs published: {said}");
    // The queue the work generator's daemon submits from, generated over the repository.
    assert!(said.contains("deploy: queue: ") && project.join("gah/queue/state.sqlite").is_file(), "{said}");

    // Plan classes: ours added, the project's own kept.
    let classes = fs::read_to_string(project.join("plan_class_spec.xml")).unwrap();
    for name in ["their_own", "sandbox", "vm_vmx", "vm_svm", "vm"] {
        assert_eq!(classes.matches(&format!("<name>{name}</name>")).count(), 1, "{classes}");
    }
    // The app: in project.xml, then BOINC's xadd and update_versions ran in the project.
    let project_xml = fs::read_to_string(project.join("project.xml")).unwrap();
    assert!(project_xml.contains("<name>gah</name>"), "{project_xml}");
    let calls = fs::read_to_string(project.join("calls.log")).unwrap();
    assert!(calls.contains("xadd") && calls.contains("update_versions --noconfirm"), "{calls}");
    let version_xml = fs::read_to_string(project.join("apps/gah/100/x86_64-pc-linux-gnu__sandbox/version.xml")).unwrap();
    // The sandbox's guest root is published at /base, so its app version carries none.
    assert_eq!(reader.read("/base/bin/sh").unwrap(), b"#!stand-in shell");
    assert!(version_xml.contains("<main_program/>") && !version_xml.contains("rootfs"), "{version_xml}");
    assert!(version_xml.contains("<logical_name>gentoo.gah.pub</logical_name>"), "the data plane's key: {version_xml}");

    // Daemons: make_project's stay; ours are the README's lines, each once.
    let config = fs::read_to_string(project.join("config.xml")).unwrap();
    let cmds = daemon_cmds(&config);
    let readme_lines = readme_daemon_lines();
    assert_eq!(readme_lines.len(), 2, "templates/README.md's config.xml lines");
    for line in readme_lines.iter().map(String::as_str).chain(["feeder -d 3 ", "transitioner -d 3 ", "file_deleter -d 3 "]) {
        assert_eq!(cmds.iter().filter(|c| c.as_str() == line).count(), 1, "{line} in\n{config}");
    }
    // The whitelist signed again every day (readers refuse it after 30 days): a <task>.
    let resign: Vec<&String> = cmds.iter().filter(|c| c.starts_with("gah-publish --resign")).collect();
    assert_eq!(resign.len(), 1, "{config}");
    assert!(config.contains("<period>1 day</period>"), "{config}");
    let resign_args: Vec<&str> = resign[0].split_whitespace().collect();
    let status = gah_util::process::command(project.join("bin/gah-publish")).args(&resign_args[1..]).status().unwrap();
    assert!(status.success(), "{}", resign[0]);
    gah_publish::verify(&published, "gentoo.gah", &key).expect("still valid after re-signing");
    let workgen: Vec<&String> = cmds.iter().filter(|c| c.starts_with("gah-workgen daemon")).collect();
    assert_eq!(workgen.len(), 1, "{config}");
    assert!(workgen[0].contains("--boinc-project .. ") && workgen[0].contains("-u boincadm "), "{}", workgen[0]);
    let data_args = format!("--published {} --data-url http://127.0.0.1/gah/download/cvmfs/gentoo.gah ", published.display());
    assert!(workgen[0].contains(&data_args), "{}", workgen[0]);
    // Failure localisation: the daemon reads the repository's metadata from the project.
    assert!(workgen[0].ends_with(" --localise-repo ../gah/repo"), "{}", workgen[0]);
    assert_eq!(fs::read_to_string(project.join("gah/repo/profiles/repo_name")).unwrap(), "gah-overlay\n");
    assert!(project.join("gah/repo/metadata/md5-cache").is_dir());
    assert!(config.contains("<cmd>db_dump -d 2"), "the tasks stay");

    // A second run changes nothing.
    let before: Vec<Vec<u8>> =
        ["config.xml", "project.xml", "plan_class_spec.xml", "gah.conf"].iter().map(|f| fs::read(project.join(f)).unwrap()).collect();
    let (ok, said) = deploy(&project, &image, &repo, &[]);
    assert!(ok, "{said}");
    assert!(!said.contains(": installed") && !said.contains(": updated"), "{said}");
    let after: Vec<Vec<u8>> =
        ["config.xml", "project.xml", "plan_class_spec.xml", "gah.conf"].iter().map(|f| fs::read(project.join(f)).unwrap()).collect();
    assert!(before == after, "a second deploy changed a file:\n{said}");

    // The admin's own work generator line stays, and is named.
    let edited = config.replace("--keep-unsent 100", "--keep-unsent 7");
    fs::write(project.join("config.xml"), &edited).unwrap();
    let (ok, said) = deploy(&project, &image, &repo, &[]);
    assert!(ok, "{said}");
    assert!(said.contains("config.xml daemon gah-workgen: kept yours"), "{said}");
    assert_eq!(fs::read_to_string(project.join("config.xml")).unwrap(), edited);

    // A deploy that would drop the published guest root is refused before publishing.
    let revision = || gah_publish::current_revision(&published, "gentoo.gah").unwrap().unwrap().revision;
    let before = revision();
    let bare_image = tmp.path().join("bare-image");
    fs::create_dir_all(&bare_image).unwrap();
    let (ok, said) = deploy(&project, &bare_image, &repo, &[]);
    assert!(!ok && said.contains("holds /base from an earlier deploy"), "{said}");
    assert_eq!(revision(), before, "nothing published: {said}");
}

/// An app version laid out before `/base` existed has a gah-app that refuses a data.json
/// naming a base: the first publication of the guest root needs a new version number.
#[test]
fn the_first_guest_root_is_not_published_under_an_app_version_laid_out_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (project, image, repo) = vm_project(tmp.path());
    // A vm-only project: no guest root published, version 100 laid out.
    let (ok, said) = deploy_classes(&project, &image, &repo, "vm", &[]);
    assert!(ok, "{said}");
    assert!(project.join("apps/gah/100/x86_64-pc-linux-gnu__vm/version.xml").is_file(), "{said}");
    let published = project.join("download/cvmfs/gentoo.gah");
    let revision = || gah_publish::current_revision(&published, "gentoo.gah").unwrap().unwrap();
    assert!(!revision().top_level.contains(&"/base".to_owned()));
    // Its root disk went into the repository: the vm version carries none.
    assert!(revision().top_level.contains(&"/base-disk".to_owned()), "{said}");
    let version_xml = fs::read_to_string(project.join("apps/gah/100/x86_64-pc-linux-gnu__vm/version.xml")).unwrap();
    assert!(!version_xml.contains("rootfs"), "{version_xml}");
    let before = revision().revision;

    // The sandbox added with the same version number: refused, naming the version, nothing published.
    stand_in_image(&image);
    let (ok, said) = deploy_classes(&project, &image, &repo, "sandbox,vm", &[]);
    assert!(!ok && said.contains("app versions 100 (vm) were laid out before the guest root"), "{said}");
    assert_eq!(revision().revision, before, "{said}");
    assert!(!said.contains("deploy: bin/"), "refused before installing anything: {said}");
    // The sandbox alone with a new number: refused too (the vm version 100 would still get
    // workunits naming the root; first, though, the vm's root disk would be dropped).
    let (ok, said) = deploy_classes(&project, &image, &repo, "sandbox", &["--version-num", "101"]);
    assert!(!ok && said.contains("holds /base-disk from an earlier deploy"), "{said}");
    assert_eq!(revision().revision, before, "{said}");
    // With a new one: the root published, the sandbox version carries none.
    let (ok, said) = deploy_classes(&project, &image, &repo, "sandbox,vm", &["--version-num", "101"]);
    assert!(ok, "{said}");
    assert!(revision().top_level.contains(&"/base".to_owned()), "{said}");
    let version_xml = fs::read_to_string(project.join("apps/gah/101/x86_64-pc-linux-gnu__sandbox/version.xml")).unwrap();
    assert!(!version_xml.contains("rootfs"), "{version_xml}");
}

/// The same for the vm's root disk: a vm app version laid out before `/base-disk` existed
/// (by an earlier gah, with its own `rootfs.ext4`) would refuse a data.json naming a disk.
#[test]
fn the_first_root_disk_is_not_published_under_an_app_version_laid_out_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (project, image, repo) = vm_project(tmp.path());
    // Version 100 of the vm class, as an earlier gah laid it out (its version.xml is what
    // deploy goes by).
    let old = project.join("apps/gah/100/x86_64-pc-linux-gnu__vm");
    fs::create_dir_all(&old).unwrap();
    fs::write(old.join("version.xml"), "<version><file><physical_name>rootfs-0.ext4</physical_name></file></version>\n").unwrap();
    fs::write(old.join("rootfs-0.ext4"), "an old disk").unwrap();
    let published = project.join("download/cvmfs/gentoo.gah");

    let (ok, said) = deploy_classes(&project, &image, &repo, "vm", &[]);
    assert!(!ok && said.contains("app versions 100 (vm) were laid out before the root disk was published at /base-disk"), "{said}");
    assert!(gah_publish::current_revision(&published, "gentoo.gah").unwrap().is_none(), "nothing published: {said}");
    let (ok, said) = deploy_classes(&project, &image, &repo, "vm", &["--version-num", "101"]);
    assert!(ok, "{said}");
    let revision = gah_publish::current_revision(&published, "gentoo.gah").unwrap().unwrap();
    assert!(revision.top_level.contains(&"/base-disk".to_owned()), "{said}");
    let version_xml = fs::read_to_string(project.join("apps/gah/101/x86_64-pc-linux-gnu__vm/version.xml")).unwrap();
    assert!(!version_xml.contains("rootfs"), "{version_xml}");
    // A rebuilt image with another kernel: its disk is not published for version 101, whose
    // kernel it no longer matches; with a new version the two change together.
    fs::write(image.join("vmlinux"), "a newer stand-in kernel").unwrap();
    fs::write(image.join("rootfs.ext4"), "a newer stand-in disk").unwrap();
    let before = gah_publish::current_revision(&published, "gentoo.gah").unwrap().unwrap().revision;
    let (ok, said) = deploy_classes(&project, &image, &repo, "vm", &["--version-num", "101"]);
    assert!(!ok && said.contains("has another kernel than app versions 101 (vm) carry"), "{said}");
    assert_eq!(gah_publish::current_revision(&published, "gentoo.gah").unwrap().unwrap().revision, before, "{said}");
    let (ok, said) = deploy_classes(&project, &image, &repo, "vm", &["--version-num", "102"]);
    assert!(ok, "{said}");
    // Dropping it later is refused: the vm version reads its disk there.
    let (ok, said) = deploy_classes(&project, &image, &repo, "sandbox", &["--version-num", "103"]);
    assert!(!ok && said.contains("holds /base-disk from an earlier deploy"), "{said}");
}

#[test]
fn deploy_refuses_a_folder_that_is_no_boinc_project() {
    let tmp = tempfile::tempdir().unwrap();
    let out = gah_util::process::command(program("gah"))
        .args(["deploy", "--project"])
        .arg(tmp.path())
        .env("GAH_ROOT", project_root())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("has no config.xml") && said.contains("make_project"), "{said}");
}
