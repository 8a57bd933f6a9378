//! What the target profile decides about USE that the ebuild does not: implicit flags
//! (ARCH, ELIBC, KERNEL, which REQUIRED_USE may name without IUSE listing them) and masked or
//! forced flags (`use.mask`/`use.force`, `package.use.mask`/`package.use.force`).
//!
//! A masked IUSE flag is held off and a forced one held on in every configuration (mask wins,
//! as in Portage); they are never varied.

use std::collections::BTreeSet;

/// The profile facts the solver needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Flags outside IUSE that are on (e.g. `amd64`, `kernel_linux`, `elibc_glibc`); every
    /// other flag outside IUSE is off.
    implicit_on: BTreeSet<String>,
    masked: BTreeSet<String>,
    forced: BTreeSet<String>,
    /// (`category/package`, flag).
    package_masked: BTreeSet<(String, String)>,
    package_forced: BTreeSet<(String, String)>,
}

impl Profile {
    /// No profile at all: every flag outside IUSE is off, nothing masked or forced.
    pub fn none() -> Profile {
        Profile {
            implicit_on: BTreeSet::new(),
            masked: BTreeSet::new(),
            forced: BTreeSet::new(),
            package_masked: BTreeSet::new(),
            package_forced: BTreeSet::new(),
        }
    }

    /// The guest's profile: amd64, Linux, glibc (as `vm-images/portage` sets ARCH, KERNEL
    /// and ELIBC).
    pub fn amd64_linux() -> Profile {
        let mut p = Profile::none();
        p.implicit_on = ["amd64", "kernel_linux", "elibc_glibc"].iter().map(|s| (*s).to_owned()).collect();
        p
    }

    /// Adds `use.mask` entries (a leading `-` unmasks, as in Portage).
    pub fn mask(&mut self, flags: &[&str]) {
        edit(&mut self.masked, flags);
    }

    /// Adds `use.force` entries (a leading `-` unforces).
    pub fn force(&mut self, flags: &[&str]) {
        edit(&mut self.forced, flags);
    }

    /// Adds a `package.use.mask` line for `category/package`.
    pub fn package_mask(&mut self, cp: &str, flags: &[&str]) {
        for f in flags {
            self.package_masked.insert((cp.to_owned(), (*f).to_owned()));
        }
    }

    /// Adds a `package.use.force` line for `category/package`.
    pub fn package_force(&mut self, cp: &str, flags: &[&str]) {
        for f in flags {
            self.package_forced.insert((cp.to_owned(), (*f).to_owned()));
        }
    }

    /// The value of a flag outside IUSE.
    pub fn implicit(&self, flag: &str) -> bool {
        self.implicit_on.contains(flag)
    }

    /// `Some(value)` when the profile pins `flag` of package `cp`, `None` when it is free.
    pub fn pinned(&self, cp: &str, flag: &str) -> Option<bool> {
        let key = (cp.to_owned(), flag.to_owned());
        if self.masked.contains(flag) || self.package_masked.contains(&key) {
            Some(false)
        } else if self.forced.contains(flag) || self.package_forced.contains(&key) {
            Some(true)
        } else {
            None
        }
    }
}

fn edit(set: &mut BTreeSet<String>, flags: &[&str]) {
    for f in flags {
        match f.strip_prefix('-') {
            Some(f) => set.remove(f),
            None => set.insert((*f).to_owned()),
        };
    }
}
