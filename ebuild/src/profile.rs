//! What the target profile decides about USE that the ebuild does not: implicit flags
//! (ARCH, ELIBC, KERNEL, `IUSE_IMPLICIT`, which REQUIRED_USE may name without IUSE listing
//! them), masked or forced flags (`use.mask`/`use.force`, `package.use.mask`/
//! `package.use.force`) and the profile's USE (`make.defaults`: `USE` and the `USE_EXPAND`
//! variables such as `PYTHON_TARGETS`), which decides the default configuration.
//!
//! A masked IUSE flag is held off and a forced one held on in every configuration (mask wins,
//! as in Portage); they are never varied.
//!
//! [`Profile::read`] reads a profile folder the way Portage stacks it: the `parent` file's
//! profiles first (depth first, in order), then the folder itself; `make.defaults` variables
//! are incremental for `USE`, `USE_EXPAND*`, `IUSE_IMPLICIT` and every `USE_EXPAND`
//! variable (`-flag` removes, `-*` clears), and mask/force files are incremental line by
//! line (`-flag` unmasks). A `repo:path` parent is `profiles/path` of the named repository
//! ([`Profile::read_in`]); a level whose `eapi` file names an unsupported EAPI is refused.
//! This and [`crate::repo`] are the crate's only IO.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::atom::Atom;
use crate::md5cache::{Diagnostic, Severity};

/// One line's effect on a flag: `None` scope = every package (`use.mask`), else the
/// packages matching the atom (`package.use.mask`); `on` = masked (or forced), false =
/// unmasked by `-flag`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    atom: Option<Atom>,
    flag: String,
    on: bool,
}

/// The profile facts the solver needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Flags outside IUSE that are on (e.g. `amd64`, `kernel_linux`, `elibc_glibc`); every
    /// other flag outside IUSE is off.
    implicit_on: BTreeSet<String>,
    /// Mask and force rules in stacking order (later rules win).
    mask_rules: Vec<Rule>,
    force_rules: Vec<Rule>,
    /// The profile's USE: flags it turns on, and flags it turns off (`-flag`, or a flag of a
    /// USE_EXPAND group whose variable the profile sets without that value).
    use_on: BTreeSet<String>,
    use_off: BTreeSet<String>,
    /// USE_EXPAND groups set by the profile, as flag prefixes (`python_targets_`).
    set_groups: Vec<String>,
    /// Every USE_EXPAND group, as flag prefixes.
    groups: Vec<String>,
    /// The implicit part of IUSE_EFFECTIVE, when known: which flags outside IUSE
    /// `REQUIRED_USE` may name ([`Profile::in_iuse_effective`]).
    iuse_implicit: Option<ImplicitIuse>,
}

/// The flags a profile adds to every ebuild's IUSE_EFFECTIVE: names, and prefixes standing
/// for every flag of a group (`elibc_`); `old_*` are the extra ones of EAPIs 0 to 4 (ARCH,
/// USE_EXPAND_HIDDEN groups, masked and forced flags, `build`, `bootstrap`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImplicitIuse {
    names: BTreeSet<String>,
    prefixes: Vec<String>,
    old_names: BTreeSet<String>,
    old_prefixes: Vec<String>,
}

/// Gentoo's `profiles/arch.list` (PORTAGE_ARCHLIST), for the built-in profile.
const ARCH_LIST: &[&str] = &[
    "alpha",
    "amd64",
    "arm",
    "arm64",
    "hppa",
    "ia64",
    "loong",
    "m68k",
    "mips",
    "ppc",
    "ppc64",
    "riscv",
    "s390",
    "sparc",
    "x86",
    "amd64-linux",
    "arm-linux",
    "arm64-linux",
    "ppc64-linux",
    "riscv-linux",
    "x86-linux",
    "arm64-macos",
    "ppc-macos",
    "x64-macos",
    "x64-solaris",
];

impl Profile {
    /// No profile at all: every flag outside IUSE is off, nothing masked or forced.
    pub fn none() -> Profile {
        Profile {
            implicit_on: BTreeSet::new(),
            mask_rules: Vec::new(),
            force_rules: Vec::new(),
            use_on: BTreeSet::new(),
            use_off: BTreeSet::new(),
            set_groups: Vec::new(),
            groups: Vec::new(),
            iuse_implicit: None,
        }
    }

    /// The guest's profile: amd64, Linux, glibc (as `vm-images/portage` sets ARCH, KERNEL
    /// and ELIBC). The built-in default when no profile folder is given.
    pub fn amd64_linux() -> Profile {
        let mut p = Profile::none();
        p.implicit_on = ["amd64", "kernel_linux", "elibc_glibc"].iter().map(|s| (*s).to_owned()).collect();
        // ::gentoo's profiles/base: IUSE_IMPLICIT="prefix prefix-guest prefix-stack",
        // USE_EXPAND_IMPLICIT="ARCH ELIBC KERNEL" (every value of ELIBC and KERNEL).
        let mut names: BTreeSet<String> = ["prefix", "prefix-guest", "prefix-stack"].iter().map(|s| (*s).to_owned()).collect();
        names.extend(ARCH_LIST.iter().map(|s| (*s).to_owned()));
        p.iuse_implicit = Some(ImplicitIuse {
            names,
            prefixes: vec!["elibc_".into(), "kernel_".into()],
            old_names: ["build", "bootstrap"].iter().map(|s| (*s).to_owned()).collect(),
            old_prefixes: vec!["userland_".into()],
        });
        p
    }

    /// Whether `REQUIRED_USE` of an ebuild in `eapi` may name `flag` although IUSE does not
    /// list it: the flag is in the profile's implicit IUSE (IUSE_IMPLICIT and the
    /// USE_EXPAND_IMPLICIT values; before EAPI 5 also ARCH, the USE_EXPAND_HIDDEN groups, masked and forced
    /// flags, `build` and `bootstrap`), as Portage's `iuse_effective` says. Portage refuses
    /// any other (`InvalidDependString: USE flag 'x' is not in IUSE`). A profile that
    /// declares no implicit IUSE (as [`Profile::none`]) allows every flag.
    pub fn in_iuse_effective(&self, flag: &str, eapi: &str) -> bool {
        let Some(i) = &self.iuse_implicit else { return true };
        if i.names.contains(flag) || i.prefixes.iter().any(|p| flag.starts_with(p.as_str())) {
            return true;
        }
        let old = matches!(eapi.trim(), "0" | "1" | "2" | "3" | "4");
        old && (i.old_names.contains(flag)
            || i.old_prefixes.iter().any(|p| flag.starts_with(p.as_str()))
            || self.pinned("", flag).is_some())
    }

    /// Adds `use.mask` entries (a leading `-` unmasks, as in Portage).
    pub fn mask(&mut self, flags: &[&str]) {
        push_rules(&mut self.mask_rules, None, flags);
    }

    /// Adds `use.force` entries (a leading `-` unforces).
    pub fn force(&mut self, flags: &[&str]) {
        push_rules(&mut self.force_rules, None, flags);
    }

    /// Adds a `package.use.mask` line: an atom (`cat/pkg`, `>=cat/pkg-1`) and its flags.
    /// Returns false (and adds nothing) when `atom` is not an atom.
    pub fn package_mask(&mut self, atom: &str, flags: &[&str]) -> bool {
        let Some(a) = Atom::parse(atom) else { return false };
        push_rules(&mut self.mask_rules, Some(a), flags);
        true
    }

    /// Adds a `package.use.force` line. Returns false when `atom` is not an atom.
    pub fn package_force(&mut self, atom: &str, flags: &[&str]) -> bool {
        let Some(a) = Atom::parse(atom) else { return false };
        push_rules(&mut self.force_rules, Some(a), flags);
        true
    }

    /// The value of a flag outside IUSE.
    pub fn implicit(&self, flag: &str) -> bool {
        self.implicit_on.contains(flag)
    }

    /// `Some(value)` when the profile pins `flag` of the ebuild `cpv`, `None` when it is free.
    pub fn pinned(&self, cpv: &str, flag: &str) -> Option<bool> {
        let applies = |rules: &[Rule]| {
            // The last matching rule wins (later profiles and lines override earlier ones).
            rules.iter().rev().find(|r| r.flag == flag && r.atom.as_ref().is_none_or(|a| a.matches(cpv))).is_some_and(|r| r.on)
        };
        if applies(&self.mask_rules) {
            Some(false)
        } else if applies(&self.force_rules) {
            Some(true)
        } else {
            None
        }
    }

    /// The default value of an IUSE flag whose ebuild default is `iuse_default`: the
    /// profile's USE decides when it names the flag (or sets the flag's USE_EXPAND group),
    /// else the IUSE default (`+flag`), as in Portage's USE stacking.
    pub fn default_value(&self, flag: &str, iuse_default: bool) -> bool {
        if self.use_on.contains(flag) {
            true
        } else if self.use_off.contains(flag) || self.set_groups.iter().any(|g| flag.starts_with(g.as_str())) {
            false
        } else {
            iuse_default
        }
    }

    /// The USE_EXPAND group of a flag (`python_targets` for `python_targets_python3_12`),
    /// when the profile declares it.
    pub fn group_of<'a>(&'a self, flag: &str) -> Option<&'a str> {
        self.groups.iter().find(|g| flag.starts_with(g.as_str())).map(|g| g.trim_end_matches('_'))
    }

    /// Reads the profile folder `path` with its parents. Problems (unreadable files, bad
    /// lines, a parent cycle) are diagnostics; what could be read is used.
    pub fn read(path: &Path) -> (Profile, Vec<Diagnostic>) {
        Profile::read_in(path, &[])
    }

    /// [`Profile::read`], resolving `repo:path` parents (portage-2 profiles, as
    /// `gentoo:default/linux/amd64/23.0`) against `repos`, (name, folder) pairs: the parent is
    /// `profiles/path` of the repository of that name, so an overlay's profile stacks over
    /// ::gentoo's. A parent naming a repository not in `repos` is an error diagnostic naming
    /// the parent line. A profile folder whose `eapi` file names an EAPI Portage does not
    /// support is refused (with its parents) and diagnosed, as Portage refuses it.
    pub fn read_in(path: &Path, repos: &[(String, PathBuf)]) -> (Profile, Vec<Diagnostic>) {
        let mut diags = Vec::new();
        let mut stack = Vec::new();
        collect_stack(path, repos, &mut stack, &mut Vec::new(), &mut diags);
        let mut p = Profile::none();
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        // Flags turned off with `-flag` in USE or a USE_EXPAND variable, kept apart from
        // "not mentioned".
        let mut removed: BTreeSet<String> = BTreeSet::new();
        for dir in &stack {
            let md = dir.join("make.defaults");
            if let Some(text) = read_optional(&md, &mut diags) {
                read_make_defaults(&md, &text, &mut vars, &mut removed, &mut diags);
            }
            // Per level: use.mask then package.use.mask (so the latter may unmask), same for
            // force; rules stack across levels in this order.
            for (file, is_mask, per_package) in [
                ("use.mask", true, false),
                ("use.force", false, false),
                ("package.use.mask", true, true),
                ("package.use.force", false, true),
            ] {
                let rules = if is_mask { &mut p.mask_rules } else { &mut p.force_rules };
                let f = dir.join(file);
                let Some(text) = read_optional(&f, &mut diags) else { continue };
                for (i, line) in text.lines().enumerate() {
                    let line = line.split('#').next().unwrap_or("").trim();
                    if line.is_empty() {
                        continue;
                    }
                    let mut words = line.split_whitespace();
                    let atom = if per_package {
                        let w = words.next().unwrap_or("");
                        match Atom::parse(w) {
                            Some(a) => Some(a),
                            None => {
                                diags.push(diag(&f, Some(i + 1), format!("`{w}` is not a package atom")));
                                continue;
                            }
                        }
                    } else {
                        None
                    };
                    let flags: Vec<&str> = words.collect();
                    push_rules(rules, atom, &flags);
                }
            }
        }
        let words = |k: &str| -> Vec<String> { vars.get(k).map(|v| v.split_whitespace().map(str::to_owned).collect()).unwrap_or_default() };
        let mut use_on: BTreeSet<String> = words("USE").into_iter().collect();
        let unprefixed: BTreeSet<String> = words("USE_EXPAND_UNPREFIXED").into_iter().collect();
        // ARCH is always in USE (Portage adds it).
        if let Some(arch) = vars.get("ARCH").map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()) {
            use_on.insert(arch);
        }
        for group in words("USE_EXPAND") {
            let prefix = format!("{}_", group.to_ascii_lowercase());
            p.groups.push(prefix.clone());
            if let Some(values) = vars.get(&group) {
                // A USE_EXPAND variable the profile sets overrides USE's flags of its group.
                use_on.retain(|f| !f.starts_with(&prefix));
                p.set_groups.push(prefix.clone());
                for v in values.split_whitespace() {
                    use_on.insert(format!("{prefix}{v}"));
                }
            }
        }
        for group in &unprefixed {
            for v in words(group) {
                use_on.insert(v);
            }
        }
        // IUSE_EFFECTIVE's implicit part: IUSE_IMPLICIT plus the values of each
        // USE_EXPAND_IMPLICIT variable (prefixed unless USE_EXPAND_UNPREFIXED).
        let implicit_vars = words("USE_EXPAND_IMPLICIT");
        let mut implicit: BTreeSet<String> = words("IUSE_IMPLICIT").into_iter().collect();
        for v in &implicit_vars {
            for value in words(&format!("USE_EXPAND_VALUES_{v}")) {
                implicit.insert(if unprefixed.contains(v) { value } else { format!("{}_{value}", v.to_ascii_lowercase()) });
            }
        }
        p.implicit_on = use_on
            .iter()
            // Without USE_EXPAND_IMPLICIT (pre-EAPI-5 profiles) every profile flag counts.
            .filter(|f| implicit_vars.is_empty() || implicit.contains(*f))
            .filter(|f| p.pinned("", f) != Some(false))
            .cloned()
            .collect();
        for r in &p.force_rules {
            if r.atom.is_none() && r.on && implicit.contains(&r.flag) && p.pinned("", &r.flag) == Some(true) {
                p.implicit_on.insert(r.flag.clone());
            }
        }
        if !implicit_vars.is_empty() || vars.contains_key("IUSE_IMPLICIT") {
            let hidden = words("USE_EXPAND_HIDDEN");
            let mut old_names: BTreeSet<String> = ["build", "bootstrap"].iter().map(|s| (*s).to_owned()).collect();
            old_names.extend(vars.get("ARCH").map(|a| a.trim().to_owned()).filter(|a| !a.is_empty()));
            p.iuse_implicit = Some(ImplicitIuse {
                names: implicit.clone(),
                prefixes: Vec::new(),
                old_names,
                old_prefixes: hidden.iter().map(|h| format!("{}_", h.to_ascii_lowercase())).collect(),
            });
        }
        p.use_off = removed.into_iter().filter(|f| !use_on.contains(f)).collect();
        p.use_on = use_on;
        (p, diags)
    }
}

fn push_rules(rules: &mut Vec<Rule>, atom: Option<Atom>, flags: &[&str]) {
    for f in flags {
        let (flag, on) = match f.strip_prefix('-') {
            Some(f) => (f, false),
            None => (*f, true),
        };
        rules.push(Rule { atom: atom.clone(), flag: flag.to_owned(), on });
    }
}

fn diag(path: &Path, line: Option<usize>, message: String) -> Diagnostic {
    Diagnostic { severity: Severity::Error, path: path.to_owned(), line, message }
}

/// A file's text, `None` when it does not exist (most profile files are optional).
fn read_optional(path: &Path, diags: &mut Vec<Diagnostic>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            diags.push(diag(path, None, format!("cannot read: {e}")));
            None
        }
    }
}

/// Appends `dir`'s parents (recursively) and then `dir` to `stack`.
fn collect_stack(
    dir: &Path,
    repos: &[(String, PathBuf)],
    stack: &mut Vec<PathBuf>,
    visiting: &mut Vec<PathBuf>,
    diags: &mut Vec<Diagnostic>,
) {
    let canon = match std::fs::canonicalize(dir) {
        Ok(c) if c.is_dir() => c,
        Ok(c) => return diags.push(diag(&c, None, "profile is not a folder".into())),
        Err(e) => return diags.push(diag(dir, None, format!("cannot read profile: {e}"))),
    };
    if visiting.contains(&canon) {
        return diags.push(diag(&canon, None, "parent cycle".into()));
    }
    let eapi_file = canon.join("eapi");
    if let Some(text) = read_optional(&eapi_file, diags) {
        let eapi = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("0");
        if !crate::md5cache::is_supported_eapi(eapi) {
            // Portage: "Profile contains unsupported EAPI": the profile is not used.
            return diags.push(diag(
                &eapi_file,
                Some(1),
                format!("profile EAPI `{eapi}` is not supported: this profile and its parents are not used"),
            ));
        }
    }
    visiting.push(canon.clone());
    let parent_file = canon.join("parent");
    if let Some(text) = read_optional(&parent_file, diags) {
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if !line.starts_with('.') && !line.starts_with('/') && line.contains(':') {
                // portage-2 `repo:path`: `path` under the named repository's profiles/.
                let (repo, rel) = line.split_once(':').expect("has a colon");
                match repos.iter().find(|(name, _)| name == repo) {
                    Some((_, root)) => collect_stack(&root.join("profiles").join(rel), repos, stack, visiting, diags),
                    None => {
                        let known: Vec<&str> = repos.iter().map(|(n, _)| n.as_str()).collect();
                        let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
                        diags.push(diag(
                            &parent_file,
                            Some(i + 1),
                            format!("`{line}`: no repository named `{repo}` among those given (--repo: {known}); this parent is not used"),
                        ));
                    }
                }
                continue;
            }
            collect_stack(&canon.join(line), repos, stack, visiting, diags);
        }
    }
    visiting.pop();
    if !stack.contains(&canon) {
        stack.push(canon);
    }
}

/// Variables whose values stack across profiles (plus every USE_EXPAND variable).
const INCREMENTAL: &[&str] = &["USE", "USE_EXPAND", "USE_EXPAND_HIDDEN", "USE_EXPAND_IMPLICIT", "USE_EXPAND_UNPREFIXED", "IUSE_IMPLICIT"];

/// Reads one `make.defaults` (shell-like `KEY="value"` lines, `${VAR}` expansion) into
/// `vars`, stacking the incremental ones.
fn read_make_defaults(
    path: &Path,
    text: &str,
    vars: &mut BTreeMap<String, String>,
    removed: &mut BTreeSet<String>,
    diags: &mut Vec<Diagnostic>,
) {
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let trimmed = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let Some((key, rest)) = trimmed.split_once('=') else {
            diags.push(diag(path, Some(i + 1), format!("expected KEY=value, found `{trimmed}`")));
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            diags.push(diag(path, Some(i + 1), format!("invalid variable name `{key}`")));
            continue;
        }
        // A quoted value may span lines.
        let mut raw = rest.to_owned();
        if let Some(q) = raw.chars().next().filter(|c| *c == '"' || *c == '\'') {
            while raw.len() < 2 || !raw.trim_end().ends_with(q) {
                match lines.next() {
                    Some((_, more)) => {
                        raw.push('\n');
                        raw.push_str(more);
                    }
                    None => {
                        diags.push(diag(path, Some(i + 1), format!("unterminated quote in {key}")));
                        break;
                    }
                }
            }
        }
        let (value, expand) = match raw.trim_end() {
            v if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') => (v[1..v.len() - 1].to_owned(), false),
            v if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') => (v[1..v.len() - 1].to_owned(), true),
            v => (v.split('#').next().unwrap_or("").trim().to_owned(), true),
        };
        let value = if expand { expand_vars(&value, vars) } else { value };
        let is_expand_var = vars.get("USE_EXPAND").is_some_and(|g| g.split_whitespace().any(|g| g == key));
        if INCREMENTAL.contains(&key) || is_expand_var {
            let prefix = if is_expand_var { format!("{}_", key.to_ascii_lowercase()) } else { String::new() };
            let mut cur: Vec<String> = vars.get(key).map(|v| v.split_whitespace().map(str::to_owned).collect()).unwrap_or_default();
            for w in value.split_whitespace() {
                if w == "-*" {
                    for old in cur.drain(..) {
                        removed.insert(format!("{prefix}{old}"));
                    }
                } else if let Some(neg) = w.strip_prefix('-') {
                    cur.retain(|x| x != neg);
                    if key == "USE" || is_expand_var {
                        removed.insert(format!("{prefix}{neg}"));
                    }
                } else if !cur.iter().any(|x| x == w) {
                    cur.push(w.to_owned());
                }
            }
            vars.insert(key.to_owned(), cur.join(" "));
        } else {
            vars.insert(key.to_owned(), value);
        }
    }
}

/// `${VAR}` and `$VAR` from the variables read so far (unknown ones are empty).
fn expand_vars(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, tail) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], &inner[end + 1..]),
                None => (inner, ""),
            }
        } else {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.push_str(vars.get(name).map_or("", String::as_str));
        rest = tail;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a profile tree (`path: content` per file) and renders what [`Profile::read`]
    /// makes of the leaf `leaf`, probing `flags` of `cpv`.
    fn check(files: &[(&str, &str)], leaf: &str, cpv: &str, flags: &[&str], expected: &str) {
        check_in(files, &[], leaf, cpv, flags, expected);
    }

    /// [`check`] with repositories (name, folder under the tree) for `repo:path` parents.
    fn check_in(files: &[(&str, &str)], repos: &[(&str, &str)], leaf: &str, cpv: &str, flags: &[&str], expected: &str) {
        let dir = std::env::temp_dir().join(format!("gah-profile-test-{}-{}", std::process::id(), leaf.replace('/', "_")));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, content) in files {
            let p = dir.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        let repos: Vec<(String, PathBuf)> = repos.iter().map(|(n, r)| ((*n).to_owned(), dir.join(r))).collect();
        let (p, diags) = Profile::read_in(&dir.join(leaf), &repos);
        let mut got = format!("implicit: {}\n", p.implicit_on.iter().cloned().collect::<Vec<_>>().join(" "));
        for f in flags {
            let pin = match p.pinned(cpv, f) {
                Some(true) => "forced",
                Some(false) => "masked",
                None => "free",
            };
            got.push_str(&format!("{f}: {pin}, default {}\n", if p.default_value(f, false) { "on" } else { "off" }));
        }
        for d in diags {
            let rel = d.path.strip_prefix(std::fs::canonicalize(&dir).unwrap()).unwrap_or(&d.path).display().to_string();
            got.push_str(&format!("{rel}:{:?}: {}\n", d.line, d.message));
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(got.trim_end(), expected.trim());
    }

    #[test]
    fn stacking_masks_forces_and_use_expand() {
        let base_defaults = "ARCH=\"amd64\"\nUSE_EXPAND=\"PYTHON_TARGETS ELIBC KERNEL\"\nUSE_EXPAND_IMPLICIT=\"ARCH ELIBC KERNEL\"\n\
USE_EXPAND_UNPREFIXED=\"ARCH\"\nUSE_EXPAND_VALUES_ARCH=\"amd64 arm64\"\nUSE_EXPAND_VALUES_ELIBC=\"glibc musl\"\n\
USE_EXPAND_VALUES_KERNEL=\"linux\"\nIUSE_IMPLICIT=\"prefix test\"\nELIBC=\"glibc\"\nKERNEL=\"linux\"\n\
PYTHON_TARGETS=\"python3_11 python3_12\"\nUSE=\"ssl nls\"\n";
        let files = [
            ("base/make.defaults", base_defaults),
            ("base/use.mask", "# comment\nprefix\npython_targets_python3_10\n"),
            ("base/package.use.mask", ">=dev-libs/foo-2 ssl\n"),
            ("arch/amd64/parent", "../../base\n"),
            ("arch/amd64/use.force", "sse2\n"),
            ("arch/amd64/make.defaults", "PYTHON_TARGETS=\"-python3_11 python3_13\"\nUSE=\"${USE} -nls X\"\n"),
            ("leaf/parent", "../arch/amd64\n# a comment\ngentoo:targets/desktop\n"),
            ("leaf/use.mask", "-python_targets_python3_10\n"),
            ("leaf/package.use.force", "dev-libs/foo -sse2 gtk\n"),
        ];
        check(
            &files,
            "leaf",
            "dev-libs/foo-2.1",
            &["ssl", "sse2", "gtk", "nls", "X", "python_targets_python3_10", "python_targets_python3_11", "python_targets_python3_13"],
            "
implicit: amd64 elibc_glibc kernel_linux
ssl: masked, default on
sse2: free, default off
gtk: forced, default off
nls: free, default off
X: free, default on
python_targets_python3_10: free, default off
python_targets_python3_11: free, default off
python_targets_python3_13: free, default on
leaf/parent:Some(3): `gentoo:targets/desktop`: no repository named `gentoo` among those given (--repo: none); this parent is not used
",
        );
        // `>=dev-libs/foo-2` does not match foo-1; the unversioned force line does.
        check(
            &files,
            "leaf",
            "dev-libs/foo-1",
            &["ssl", "sse2", "gtk"],
            "
implicit: amd64 elibc_glibc kernel_linux
ssl: free, default on
sse2: free, default off
gtk: forced, default off
leaf/parent:Some(3): `gentoo:targets/desktop`: no repository named `gentoo` among those given (--repo: none); this parent is not used
",
        );
    }

    #[test]
    fn repo_path_parents_stack_across_repositories() {
        let files = [
            ("gentoo/profiles/base/make.defaults", "ARCH=\"amd64\"\nUSE_EXPAND=\"KERNEL\"\nUSE_EXPAND_IMPLICIT=\"ARCH KERNEL\"\nUSE_EXPAND_UNPREFIXED=\"ARCH\"\nUSE_EXPAND_VALUES_ARCH=\"amd64\"\nUSE_EXPAND_VALUES_KERNEL=\"linux\"\nKERNEL=\"linux\"\nIUSE_IMPLICIT=\"prefix\"\n"),
            ("gentoo/profiles/default/linux/amd64/parent", "../../../base\n"),
            ("gentoo/profiles/default/linux/amd64/use.mask", "x\n"),
            ("overlay/profiles/hardened/parent", "gentoo:default/linux/amd64\nnosuch:base\n"),
            ("overlay/profiles/hardened/use.force", "y\n"),
            ("overlay/profiles/old/eapi", "999\n"),
            ("overlay/profiles/old/use.force", "z\n"),
            ("overlay/profiles/leaf/parent", "../hardened\n../old\n"),
        ];
        check_in(
            &files,
            &[("gentoo", "gentoo"), ("overlay", "overlay")],
            "overlay/profiles/leaf",
            "c/p-1",
            &["x", "y", "z"],
            "
implicit: amd64 kernel_linux
x: masked, default off
y: forced, default off
z: free, default off
overlay/profiles/hardened/parent:Some(2): `nosuch:base`: no repository named `nosuch` among those given (--repo: gentoo, overlay); this parent is not used
overlay/profiles/old/eapi:Some(1): profile EAPI `999` is not supported: this profile and its parents are not used
",
        );
        let (p, _) = Profile::read(Path::new("/nonexistent"));
        assert!(p.in_iuse_effective("anything", "8"), "no implicit IUSE known: every flag allowed");
        let b = Profile::amd64_linux();
        assert!(b.in_iuse_effective("kernel_linux", "8") && b.in_iuse_effective("x86", "8") && b.in_iuse_effective("prefix", "8"));
        assert!(!b.in_iuse_effective("miniz", "8") && !b.in_iuse_effective("build", "8") && b.in_iuse_effective("build", "4"));
    }

    #[test]
    fn broken_lines_are_diagnosed() {
        check(
            &[("p/make.defaults", "USE=\"a\nb\"\nnonsense\nbad-key=1\n"), ("p/package.use.mask", "notanatom x\n"), ("p/parent", "p\n")],
            "p",
            "c/p-1",
            &["a", "b"],
            "
implicit: a b
a: free, default on
b: free, default on
p/p:None: cannot read profile: No such file or directory (os error 2)
p/make.defaults:Some(3): expected KEY=value, found `nonsense`
p/make.defaults:Some(4): invalid variable name `bad-key`
p/package.use.mask:Some(1): `notanatom` is not a package atom
",
        );
    }

    #[test]
    fn guest_profile_matches_the_builtin_default() {
        let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm-images/portage/etc-portage/make.profile");
        let (p, diags) = Profile::read(&guest);
        assert!(diags.is_empty(), "{diags:?}");
        for f in ["amd64", "kernel_linux", "elibc_glibc"] {
            assert!(p.implicit(f), "{f}");
        }
        assert!(!p.implicit("x86") && !p.implicit("prefix"));
    }
}
