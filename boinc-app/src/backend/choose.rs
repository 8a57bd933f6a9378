//! Picking the backend that works on this host, and saying which and why.
//!
//! The only code outside [`super::vm`] and [`super::sandbox`] that names them: everything
//! after the choice goes through the [`Backend`] trait.

use std::path::PathBuf;

use clap::ValueEnum;
use gah_core::progress::{Accelerator, AppReport, BackendKind};
use gah_util::error_chain;

use super::accel::{kvm_usable, qemu_binary, KvmProbe};
use super::sandbox::SandboxBackend;
use super::vm::VmBackend;
use super::{Backend, Image, MissingImageFile};
use crate::SAY;

/// Which isolation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// A VM with working KVM, else the sandbox, else a VM under TCG.
    Auto,
    /// qemu (KVM when it works here, TCG otherwise).
    Vm,
    /// Linux namespaces over the guest root.
    Sandbox,
}

/// Why no backend could be had.
#[derive(Debug, thiserror::Error)]
pub enum ChooseError {
    /// The running program (the sandbox's helper) could not be found.
    #[error("find this program (the sandbox helper)")]
    CurrentExe(#[source] std::io::Error),
    /// qemu is not installed.
    #[error("the vm backend needs qemu-system-x86_64 (Debian: qemu-system-x86)")]
    NoQemu,
    /// A file of the guest image is missing.
    #[error(transparent)]
    Image(#[from] MissingImageFile),
    /// The sandbox was asked for and does not work here: its root could not be had, or a
    /// trial sandbox failed.
    #[error("the sandbox does not work here")]
    SandboxUnusable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The vm's root disk could not be had.
    #[error("the vm's root disk")]
    Disk(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Picks the backend, saying why. `rootfs_tree` gives the sandbox's guest root; it is called
/// only when the sandbox is a candidate (it may unpack an archive first); `rootfs_disk` gives
/// the vm's root disk (in place of `image`'s), called only when a VM is chosen (it may read
/// the disk from the project's repository first).
pub fn choose<E>(
    choice: BackendChoice,
    image: &Image,
    rootfs_tree: impl FnOnce() -> Result<PathBuf, E>,
    rootfs_disk: impl FnOnce() -> Result<PathBuf, E>,
) -> Result<Box<dyn Backend>, ChooseError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let helper = std::env::current_exe().map_err(ChooseError::CurrentExe)?;
    // The sandbox over its root, if that root can be had, and whether it runs here.
    let sandbox = move || -> Result<SandboxBackend, Box<dyn std::error::Error + Send + Sync>> {
        let rootfs = rootfs_tree()?;
        // The test double of the hostile-host tests (tests/tests/hostile.rs), named as one.
        let simulate_userns_without_caps = std::env::var_os("GAH_SIMULATE_USERNS_WITHOUT_CAPS").is_some();
        let sandbox = SandboxBackend { rootfs, helper, simulate_userns_without_caps };
        sandbox.probe()?;
        Ok(sandbox)
    };
    let probe_cache = image.kernel.with_file_name("gah-kvm-probe.json");
    let qemu = qemu_binary();
    // Probing boots a kernel: only when a VM is a candidate.
    let kvm = || match &qemu {
        Some(q) if image.kernel.is_file() => kvm_usable(q, &image.kernel, &probe_cache),
        Some(_) => KvmProbe { usable: false, detail: "no guest kernel".into(), key: String::new() },
        None => KvmProbe { usable: false, detail: "qemu-system-x86_64 is not installed".into(), key: String::new() },
    };
    let vm = |kvm_ok: bool| -> Result<Box<dyn Backend>, ChooseError> {
        let qemu = qemu.clone().ok_or(ChooseError::NoQemu)?;
        // Before the disk, which may cost hundreds of MB to read.
        image.check_boot_files()?;
        let image = Image { rootfs_ext4: rootfs_disk().map_err(|e| ChooseError::Disk(Box::new(e)))?, ..image.clone() };
        image.check()?;
        Ok(Box::new(VmBackend { qemu, image, kvm: kvm_ok }))
    };
    match choice {
        BackendChoice::Vm => {
            let kvm = kvm();
            announce(BackendKind::Vm, if kvm.usable { Accelerator::Kvm } else { Accelerator::Tcg }, &kvm.detail);
            vm(kvm.usable)
        }
        BackendChoice::Sandbox => {
            let sandbox = sandbox().map_err(ChooseError::SandboxUnusable)?;
            announce(BackendKind::Sandbox, Accelerator::None, "chosen");
            Ok(Box::new(sandbox))
        }
        BackendChoice::Auto => {
            let kvm = kvm();
            if kvm.usable {
                announce(BackendKind::Vm, Accelerator::Kvm, &kvm.detail);
                return vm(true);
            }
            match sandbox() {
                Ok(sandbox) => {
                    announce(BackendKind::Sandbox, Accelerator::None, &format!("KVM unusable: {}", kvm.detail));
                    Ok(Box::new(sandbox))
                }
                Err(why) => {
                    let why = error_chain(why.as_ref());
                    announce(BackendKind::Vm, Accelerator::Tcg, &format!("slow; KVM unusable: {}; sandbox unusable: {why}", kvm.detail));
                    vm(false)
                }
            }
        }
    }
}

/// Says which backend runs the task: a line for the volunteer, and the typed report that
/// `gah run` follows.
fn announce(backend: BackendKind, accelerator: Accelerator, why: &str) {
    tracing::info!(target: SAY, "backend {}, accelerator {} ({why})", backend.as_str(), accelerator.as_str());
    tracing::info!(target: SAY, "{}", AppReport::Backend { backend, accelerator, why: why.to_owned() }.to_message());
}
