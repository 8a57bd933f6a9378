//! `scripts/package-app-version.sh`: the app version layout and the server-sent version's
//! folder for BOINC's `update_versions` (`--boinc-apps`), checked file by file, and the sandbox's root tar round-tripped
//! through gah-app's own unpacking.
//!
//! The guest image here is a **stand-in** (a few small files named like the real ones): the
//! script only copies, hashes, tars and gzips them. The real image goes through the same
//! script in the real-client tests.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use gah_tests::{program, project_root};
use quick_xml::events::Event;
use sha2::{Digest, Sha256};

/// A stand-in image folder: kernel, initramfs, ext4 disk, and a root tree.
fn stand_in_image(dir: &Path) {
    fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
    fs::create_dir_all(dir.join("rootfs/dev")).unwrap();
    fs::create_dir_all(dir.join("rootfs/etc/portage")).unwrap();
    fs::write(dir.join("vmlinux"), b"stand-in kernel").unwrap();
    fs::write(dir.join("initramfs.cpio.gz"), b"stand-in initramfs").unwrap();
    fs::write(dir.join("rootfs.ext4"), vec![0u8; 1 << 20]).unwrap();
    fs::write(dir.join("rootfs/bin/sh"), b"#!stand-in shell").unwrap();
    fs::write(dir.join("rootfs/dev/not-a-device"), b"dev/ is left out").unwrap();
    fs::write(dir.join("rootfs/etc/portage/make.conf"), b"FEATURES=test\n").unwrap();
    std::os::unix::fs::symlink("bin", dir.join("rootfs/sbin")).unwrap();
}

fn package(bin: &Path, image: &Path, out: &Path, apps: &Path, guest: &str) -> String {
    let output = gah_util::process::command("bash")
        .arg(project_root().join("scripts/package-app-version.sh"))
        .args(["--bin".as_ref(), bin.as_os_str(), "--image".as_ref(), image.as_os_str(), "--guest".as_ref(), guest.as_ref()])
        .arg("--boinc-apps")
        .arg(apps)
        .arg(out)
        .output()
        .expect("run package-app-version.sh");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "package-app-version.sh failed:\n{text}");
    text
}

fn sha16(path: &Path) -> String {
    let digest = Sha256::digest(fs::read(path).unwrap());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Every `<tag>` element of an XML document, as its children's texts (empty elements as "").
fn elements(xml: &str, tag: &[u8]) -> Vec<BTreeMap<String, String>> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let (mut found, mut current, mut child) = (Vec::new(), None::<BTreeMap<String, String>>, String::new());
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) if e.name().as_ref() == tag => current = Some(BTreeMap::new()),
            Event::Start(e) => child = String::from_utf8_lossy(e.name().as_ref()).into_owned(),
            Event::Empty(e) => {
                if let Some(c) = current.as_mut() {
                    c.insert(String::from_utf8_lossy(e.name().as_ref()).into_owned(), String::new());
                }
            }
            Event::Text(t) => {
                if let Some(c) = current.as_mut() {
                    let text = t.unescape().unwrap().trim().to_owned();
                    if !text.is_empty() {
                        c.insert(child.clone(), text);
                    }
                }
            }
            Event::End(e) if e.name().as_ref() == tag => found.extend(current.take()),
            Event::Eof => return found,
            _ => {}
        }
    }
}

/// `<file_info>`s: name → child texts.
fn file_infos(xml: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    elements(xml, b"file_info").into_iter().map(|info| (info["name"].clone(), info)).collect()
}

/// `<file_ref>`s of app_info.xml: file name → open name ("" for none).
fn file_refs(xml: &str) -> BTreeMap<String, String> {
    elements(xml, b"file_ref").into_iter().map(|r| (r["file_name"].clone(), r.get("open_name").cloned().unwrap_or_default())).collect()
}

#[test]
fn app_version_layout_and_update_versions_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, out, apps, bin) = (tmp.path().join("image"), tmp.path().join("project"), tmp.path().join("apps"), tmp.path().join("bin"));
    stand_in_image(&image);
    // Copies of the real programs, so the test can change one.
    fs::create_dir_all(&bin).unwrap();
    for p in ["gah-app", "gah-agent"] {
        fs::copy(program(p), bin.join(p)).unwrap();
    }
    package(&bin, &image, &out, &apps, "both");

    // Image files are named by their content; the app opens them by logical name.
    let kernel = format!("vmlinux-{}", sha16(&image.join("vmlinux")));
    let disk = format!("rootfs-{}.ext4", sha16(&image.join("rootfs.ext4")));
    let root_tar = format!("rootfs-{}.tar", sha16(&image.join("rootfs.tar")));
    let app_info = fs::read_to_string(out.join("app_info.xml")).unwrap();
    let refs = file_refs(&app_info);
    assert_eq!(refs.get(&kernel).map(String::as_str), Some("vmlinux"), "{app_info}");
    assert_eq!(refs.get(&disk).map(String::as_str), Some("rootfs.ext4"), "{app_info}");
    assert_eq!(refs.get(&root_tar).map(String::as_str), Some("rootfs.tar"), "{app_info}");
    assert!(app_info.contains("<cmdline>--backend auto</cmdline>"), "{app_info}");
    let declared = file_infos(&app_info);
    assert_eq!(declared.keys().collect::<Vec<_>>(), refs.keys().collect::<Vec<_>>(), "every file_ref has its file_info");
    for name in declared.keys() {
        assert!(out.join(name).is_file(), "app_info.xml names {name}, which is not in the folder");
    }

    // --boinc-apps: the folder update_versions reads. Every file is named by its content
    // (BOINC download files are immutable) and opened by its logical name; nothing else is
    // in the folder, since update_versions would ship it.
    let version_dir = apps.join("gah/100/x86_64-pc-linux-gnu__vm");
    let check_version_dir = || {
        let xml = fs::read_to_string(version_dir.join("version.xml")).unwrap();
        let files = elements(&xml, b"file");
        let mut present: Vec<String> =
            fs::read_dir(&version_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        present.sort();
        let mut listed: Vec<String> = files.iter().map(|f| f["physical_name"].clone()).collect();
        listed.push("version.xml".into());
        listed.sort();
        assert_eq!(present, listed, "{xml}");
        assert!(xml.contains("<api_version>"), "{xml}");
        let mut logical_names = Vec::new();
        for file in &files {
            let physical = &file["physical_name"];
            let path = version_dir.join(physical);
            assert!(physical.contains(&sha16(&path)), "{physical} is not named by its content");
            let logical = file.get("logical_name").cloned().unwrap_or_default();
            // The same bytes as the anonymous-platform file of that role.
            let role = if file.contains_key("main_program") { "gah-app".to_owned() } else { logical.clone() };
            let twin = if role.starts_with("vmlinux") || role.starts_with("initramfs") || role.starts_with("rootfs") {
                out.join(physical)
            } else {
                out.join(&role)
            };
            assert!(fs::read(&path).unwrap() == fs::read(&twin).unwrap(), "{physical} differs from {}", twin.display());
            let executable = fs::metadata(&path).unwrap().permissions().mode() & 0o100 != 0;
            assert_eq!(
                executable,
                role == "gah-app" || role == "gah-agent",
                "{physical}: update_versions reads <executable/> from the mode"
            );
            assert_eq!(file.contains_key("copy_file"), role.starts_with("libboinc"), "{physical}: the libraries go into the slot");
            logical_names.push(role);
        }
        logical_names.sort();
        assert_eq!(
            logical_names,
            ["gah-agent", "gah-app", "initramfs.cpio.gz", "libboinc.so.7", "libboinc_api.so.7", "rootfs.ext4", "vmlinux"],
            "{xml}"
        );
        files.iter().map(|f| f["physical_name"].clone()).collect::<Vec<_>>()
    };

    // vm flavour: what the version folder of plan class vm holds.
    package(&bin, &image, &out, &apps, "vm");
    let before = check_version_dir();

    // A rebuilt program gets a new name; the old one leaves the folder.
    let mut agent = fs::read(bin.join("gah-agent")).unwrap();
    agent.extend_from_slice(b"rebuilt");
    fs::write(bin.join("gah-agent"), agent).unwrap();
    package(&bin, &image, &out, &apps, "vm");
    let after = check_version_dir();
    let old_agent = before.iter().find(|n| n.starts_with("gah-agent-")).unwrap();
    assert!(!after.contains(old_agent), "the rebuilt agent kept its name {old_agent}");
    package(&bin, &image, &out, &apps, "both");

    // The sandbox's root tar is the tree (less dev/), as gah-app unpacks it.
    let tree = gah_app::rootfs_archive::unpacked(&out.join(&root_tar)).unwrap();
    assert_eq!(fs::read(tree.join("bin/sh")).unwrap(), b"#!stand-in shell");
    assert_eq!(fs::read(tree.join("etc/portage/make.conf")).unwrap(), b"FEATURES=test\n");
    assert_eq!(fs::read_link(tree.join("sbin")).unwrap(), Path::new("bin"));
    assert!(tree.join("dev").is_dir() && !tree.join("dev/not-a-device").exists());

    // Flavours: the vm one ships no root tar, the sandbox one no kernel or disk, and a new
    // image replaces the old content-named files.
    package(&bin, &image, &out, &apps, "sandbox");
    let app_info = fs::read_to_string(out.join("app_info.xml")).unwrap();
    assert!(app_info.contains("<plan_class>sandbox</plan_class>") && app_info.contains("--backend sandbox"), "{app_info}");
    assert!(!out.join(&kernel).exists() && !out.join(&disk).exists() && out.join(&root_tar).exists());
    fs::write(image.join("vmlinux"), b"a newer stand-in kernel").unwrap();
    package(&bin, &image, &out, &apps, "vm");
    let new_kernel = format!("vmlinux-{}", sha16(&image.join("vmlinux")));
    assert!(out.join(&new_kernel).is_file() && !out.join(&root_tar).exists());
    assert_eq!(file_refs(&fs::read_to_string(out.join("app_info.xml")).unwrap()).get(&new_kernel).map(String::as_str), Some("vmlinux"));
}

#[test]
fn bad_flavour_is_refused_with_its_name() {
    let out = gah_util::process::command("bash")
        .arg(project_root().join("scripts/package-app-version.sh"))
        .args(["--guest", "kvm", "/nonexistent"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("'kvm'"), "{}", String::from_utf8_lossy(&out.stderr));
}
