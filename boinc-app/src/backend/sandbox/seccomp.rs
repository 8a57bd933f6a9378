//! The guest's seccomp filter: what a build never needs is refused with `EPERM`.
//!
//! A deny list over an allow-by-default, unlike Firecracker's allow lists: a VMM knows every
//! call it makes, a package build does not (any compiler, test suite or interpreter may run).
//! What is denied is what container runtimes deny by default and no build step does: new
//! mounts (the guest's own mounts are made before the filter, by the jail), kernel modules,
//! kexec, BPF, perf, keyrings, reboot, swap, clocks, accounting and handle-based opens.
//! Portage's own sandboxes (`pid-sandbox` mounts a `/proc`) then warn and carry on.
//!
//! On x86_64 each call is also denied under its x32 number (`nr | 0x4000_0000`), which shares
//! the audit architecture and would otherwise slip past a deny list.

use std::collections::BTreeMap;

use nix::libc;
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

/// Calls the guest may not make, by name (for the docs and the tests) and number.
pub const DENIED: &[(&str, libc::c_long)] = &[
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("setns", libc::SYS_setns),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("acct", libc::SYS_acct),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("syslog", libc::SYS_syslog),
    ("quotactl", libc::SYS_quotactl),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("userfaultfd", libc::SYS_userfaultfd),
];

/// Why the filter could not be built (an architecture seccompiler does not know).
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The architecture has no seccompiler target.
    #[error("no seccomp target for architecture {0}")]
    Arch(&'static str),
    /// seccompiler refused the rules.
    #[error("build the seccomp filter")]
    Build(#[from] seccompiler::BackendError),
}

/// The compiled filter, built before the guest's process forks so a failure is a setup step.
pub fn guest_filter() -> Result<BpfProgram, FilterError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|_| FilterError::Arch(std::env::consts::ARCH))?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &(_, nr) in DENIED {
        // An empty rule list matches every call of that number.
        rules.insert(nr, vec![]);
        if cfg!(target_arch = "x86_64") {
            rules.insert(nr | X32_SYSCALL_BIT, vec![]);
        }
    }
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM.unsigned_abs()), arch)?;
    Ok(filter.try_into()?)
}

/// The x32 ABI's marker bit in a call number (x86_64 only).
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

/// Installs `filter` on the calling thread; needs `no_new_privs` first.
pub fn apply(filter: &BpfProgram) -> Result<(), seccompiler::Error> {
    seccompiler::apply_filter(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/SECURITY.md promises this list: it must be the code's.
    #[test]
    fn the_security_page_lists_every_denied_call() {
        let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/SECURITY.md")).expect("docs/SECURITY.md");
        let missing: Vec<&str> = DENIED.iter().map(|(name, _)| *name).filter(|name| !page.contains(&format!("`{name}`"))).collect();
        assert!(missing.is_empty(), "docs/SECURITY.md does not list {missing:?}");
    }

    #[test]
    fn the_filter_builds_and_denies_what_it_lists() {
        let filter = guest_filter().expect("filter");
        assert!(!filter.is_empty());
        // In a child, so the test process keeps its own calls.
        // SAFETY: the child only makes async-signal-safe calls before _exit.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                let code = if nix::sys::prctl::set_no_new_privs().is_err() || apply(&filter).is_err() {
                    2
                } else {
                    // SAFETY: a raw call with harmless arguments; the filter answers first.
                    let keyctl = unsafe { libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0) };
                    let errno = nix::errno::Errno::last_raw();
                    // SAFETY: as above; getpid is always allowed.
                    let getpid = unsafe { libc::syscall(libc::SYS_getpid) };
                    if keyctl == -1 && errno == libc::EPERM && getpid > 0 {
                        0
                    } else {
                        1
                    }
                };
                // SAFETY: leaving the forked child without running the test harness's destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).expect("wait");
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0), "keyctl was not refused with EPERM");
            }
        }
    }
}
