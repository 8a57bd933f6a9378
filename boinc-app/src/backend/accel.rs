//! Which way of running the guest works on this host. Detected, never assumed: `/dev/kvm`
//! may exist and still fail (nested virtualisation without working VMX), so KVM counts as
//! usable only after a real kernel booted under it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A probe's verdict, cached beside the kernel so that each job does not boot twice.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KvmProbe {
    /// True when a kernel booted to its first message under KVM.
    pub usable: bool,
    /// Why not, or how long the probe boot took.
    pub detail: String,
    /// What the verdict is valid for: qemu binary, kernel size and mtime.
    pub key: String,
}

/// The qemu binary for this host's architecture, if installed.
pub fn qemu_binary() -> Option<PathBuf> {
    gah_util::process::which("qemu-system-x86_64")
}

fn probe_key(qemu: &Path, kernel: &Path) -> String {
    let meta = |p: &Path| fs::metadata(p).map(|m| format!("{}:{:?}", m.len(), m.modified().ok())).unwrap_or_default();
    format!("{}|{}|{}|{}", qemu.display(), meta(qemu), kernel.display(), meta(kernel))
}

/// Says whether KVM can run `kernel` here, using the cached verdict at `cache` when it is
/// for the same qemu and kernel.
pub fn kvm_usable(qemu: &Path, kernel: &Path, cache: &Path) -> KvmProbe {
    let key = probe_key(qemu, kernel);
    if let Ok(bytes) = fs::read(cache) {
        if let Ok(cached) = serde_json::from_slice::<KvmProbe>(&bytes) {
            if cached.key == key {
                return cached;
            }
        }
    }
    let verdict = probe_kvm(qemu, kernel, key);
    if let Ok(json) = serde_json::to_vec_pretty(&verdict) {
        let _ = fs::write(cache, json);
    }
    verdict
}

fn probe_kvm(qemu: &Path, kernel: &Path, key: String) -> KvmProbe {
    let no = |detail: String| KvmProbe { usable: false, detail, key: key.clone() };
    if let Err(e) = fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        return no(format!("/dev/kvm: {e}"));
    }
    // Boot the kernel with no root: it panics within a second under working KVM, and with
    // panic=-1 plus -no-reboot qemu then exits. A broken KVM hangs or reports an
    // emulation failure instead.
    let dir = match tempfile::Builder::new().prefix("gah-kvm-probe-").tempdir() {
        Ok(d) => d,
        Err(e) => return no(format!("temp dir: {e}")),
    };
    let console = dir.path().join("console.log");
    let started = Instant::now();
    let mut cmd = gah_util::process::command(qemu);
    cmd.args(["-machine", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "128", "-smp", "1"])
        .args(["-nodefaults", "-no-user-config", "-nic", "none", "-display", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1 root=/dev/gah-no-root"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // A broken KVM hangs qemu: it must not outlive this probe, nor gah-app.
    gah_util::process::die_with_parent(&mut cmd);
    let mut child = match gah_util::process::KillOnDrop::spawn(&mut cmd) {
        Ok(c) => c,
        Err(e) => return no(gah_util::error_chain(&e)),
    };
    let deadline = started + Duration::from_secs(20);
    loop {
        match child.child().try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => return no("a kernel did not boot under KVM within 20 s (nested or broken KVM)".into()),
        }
    }
    let text = fs::read_to_string(&console).unwrap_or_default();
    if text.contains("Kernel panic") || text.contains("VFS:") {
        KvmProbe { usable: true, detail: format!("kernel reached its root mount in {:.1} s", started.elapsed().as_secs_f64()), key }
    } else {
        let mut stderr = String::new();
        if let Some(mut e) = child.child().stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        no(format!("kernel did not boot under KVM: {}", gah_util::process::tail(stderr.as_bytes(), 3)))
    }
}
