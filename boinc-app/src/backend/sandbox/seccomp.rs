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
use seccompiler::{BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch};

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
    // io_uring performs calls the filter never sees; no build needs it.
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
];

/// Calls refused only when they would create a namespace (arg 0 holds the `CLONE_NEW*`
/// flags): a nested user or network namespace gives the guest capabilities over new kernel
/// surface (netfilter among them). Plain `clone` (fork, threads) stays allowed. Portage's
/// network and ipc sandboxes then warn and carry on: the guest is already its own network
/// and ipc namespace.
pub const NAMESPACE_CREATING: &[(&str, libc::c_long)] = &[("unshare", libc::SYS_unshare), ("clone", libc::SYS_clone)];

/// The namespace flags refused in [`NAMESPACE_CREATING`] calls.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
    0x0000_0080, // CLONE_NEWTIME
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

/// The compiled filters, built before the guest's process forks so a failure is a setup
/// step: the main one refuses with `EPERM`; the second makes `clone3`, whose flags sit in
/// memory a filter cannot read, answer `ENOSYS`, so the C library falls back to `clone`
/// (what Docker's default profile does).
pub fn guest_filter() -> Result<Vec<BpfProgram>, FilterError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|_| FilterError::Arch(std::env::consts::ARCH))?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut deny = |nr: i64, rule: Vec<SeccompRule>| {
        rules.insert(nr, rule.clone());
        if cfg!(target_arch = "x86_64") {
            rules.insert(nr | X32_SYSCALL_BIT, rule);
        }
    };
    for &(_, nr) in DENIED {
        // An empty rule list matches every call of that number.
        deny(nr, vec![]);
    }
    for &(_, nr) in NAMESPACE_CREATING {
        let mut any_flag = Vec::new();
        for &flag in NAMESPACE_FLAGS {
            let flag = u64::from(flag.unsigned_abs());
            any_flag.push(SeccompRule::new(vec![SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(flag), flag)?])?);
        }
        deny(nr, any_flag);
    }
    let main = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM.unsigned_abs()), arch)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, vec![])]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS.unsigned_abs()),
        arch,
    )?;
    Ok(vec![main.try_into()?, clone3.try_into()?])
}

/// The x32 ABI's marker bit in a call number (x86_64 only).
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

/// Installs `filters` on the calling thread; needs `no_new_privs` first.
pub fn apply(filters: &[BpfProgram]) -> Result<(), seccompiler::Error> {
    filters.iter().try_for_each(|f| seccompiler::apply_filter(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/SECURITY.md promises this list: it must be the code's.
    #[test]
    fn the_security_page_lists_every_denied_call() {
        let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/SECURITY.md")).expect("docs/SECURITY.md");
        let missing: Vec<&str> =
            DENIED.iter().chain(NAMESPACE_CREATING).map(|(name, _)| *name).filter(|name| !page.contains(&format!("`{name}`"))).collect();
        assert!(missing.is_empty(), "docs/SECURITY.md does not list {missing:?}");
    }

    #[test]
    fn the_filter_builds_and_denies_what_it_lists() {
        let filter = guest_filter().expect("filter");
        assert!(filter.iter().all(|f| !f.is_empty()));
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
                    // SAFETY: an unshare the filter refuses before the kernel sees it.
                    let unshare_net = unsafe { libc::unshare(libc::CLONE_NEWNET) };
                    let unshare_errno = nix::errno::Errno::last_raw();
                    // SAFETY: a clone3 with no arguments, refused by the second filter.
                    let clone3 = unsafe { libc::syscall(libc::SYS_clone3, 0, 0) };
                    let clone3_errno = nix::errno::Errno::last_raw();
                    if keyctl == -1
                        && errno == libc::EPERM
                        && getpid > 0
                        && unshare_net == -1
                        && unshare_errno == libc::EPERM
                        && clone3 == -1
                        && clone3_errno == libc::ENOSYS
                    {
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
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0), "keyctl, unshare(CLONE_NEWNET) or clone3 was not refused");
            }
        }
    }
}
