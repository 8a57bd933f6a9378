//! The md5-cache reader: `metadata/md5-cache/CATEGORY/PF` files of `KEY=value` lines.
//!
//! This module and [`crate::repo`] are the only IO of the crate. A broken entry gives one
//! [`Diagnostic`] naming the file and line and is skipped; nothing here stops a run.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::required_use::{self, RequiredUse};

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The entry was kept; something in it is suspicious.
    Warning,
    /// The entry was skipped.
    Error,
}

/// A problem found in a repository, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Warning (entry kept) or error (entry skipped).
    pub severity: Severity,
    /// The file concerned.
    pub path: PathBuf,
    /// 1-based line, when one line is to blame.
    pub line: Option<usize>,
    /// What is wrong, without a trailing period.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        match self.line {
            Some(l) => write!(f, "{sev}: {}:{l}: {}", self.path.display(), self.message),
            None => write!(f, "{sev}: {}: {}", self.path.display(), self.message),
        }
    }
}

/// One IUSE token: a flag and its default (`+flag` on, `-flag` explicitly off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IuseFlag {
    /// The flag's name, without the `+`/`-`.
    pub name: String,
    /// `Some(true)` for `+flag`, `Some(false)` for `-flag`, `None` when unmarked (off unless
    /// the profile enables it).
    pub default: Option<bool>,
}

impl IuseFlag {
    /// The default the ebuild asks for (unmarked flags are off without a profile).
    pub fn default_on(&self) -> bool {
        self.default == Some(true)
    }
}

/// One ebuild's metadata as the md5-cache records it. Dependency strings are kept raw: this
/// crate evaluates only `REQUIRED_USE` and `RESTRICT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ebuild {
    /// `category/package-version`.
    pub cpv: String,
    /// `EAPI` (`0` when the cache omits it, as it omits every empty key).
    pub eapi: String,
    /// `IUSE`, in the cache's order, duplicates merged (a `+` default wins).
    pub iuse: Vec<IuseFlag>,
    /// `REQUIRED_USE`, parsed.
    pub required_use: RequiredUse,
    /// `DEPEND`, raw.
    pub depend: String,
    /// `BDEPEND`, raw.
    pub bdepend: String,
    /// `RDEPEND`, raw.
    pub rdepend: String,
    /// `PDEPEND`, raw.
    pub pdepend: String,
    /// `IDEPEND`, raw.
    pub idepend: String,
    /// `RESTRICT`, raw (may hold USE conditionals: see [`Ebuild::restricts`]).
    pub restrict: String,
    /// `PROPERTIES`, raw.
    pub properties: String,
    /// `SLOT` (with sub-slot, as written).
    pub slot: String,
    /// `KEYWORDS`, split.
    pub keywords: Vec<String>,
    /// `SRC_URI`, raw.
    pub src_uri: String,
    /// `DEFINED_PHASES`, split (`-` in the cache means none).
    pub defined_phases: Vec<String>,
    /// `INHERIT`, split.
    pub inherit: Vec<String>,
    /// `_eclasses_`: (eclass, md5) pairs.
    pub eclasses: Vec<(String, String)>,
    /// `_md5_`: the ebuild file's MD5, which changes whenever the ebuild does.
    pub md5: String,
    /// `DESCRIPTION`.
    pub description: String,
    /// Every other key, verbatim (`HOMEPAGE`, `LICENSE`, future keys).
    pub other: BTreeMap<String, String>,
}

impl Ebuild {
    /// Whether `RESTRICT` contains `token` for a USE assignment (conditionals evaluated).
    pub fn restricts(&self, token: &str, is_on: &dyn Fn(&str) -> bool) -> bool {
        use_reduce(&self.restrict, is_on).contains(&token)
    }

    /// True when REQUIRED_USE's empty groups are true in this ebuild's EAPI.
    pub fn empty_groups_true(&self) -> bool {
        required_use::empty_groups_always_true(&self.eapi)
    }

    /// Whether `flag` is in IUSE.
    pub fn has_iuse(&self, flag: &str) -> bool {
        self.iuse.iter().any(|f| f.name == flag)
    }
}

/// The tokens of a conditional string (`RESTRICT`, `PROPERTIES`) that apply under `is_on`:
/// `flag? ( ... )` and `!flag? ( ... )` are taken or dropped, parentheses flattened. Read by
/// [`crate::depspec::parse_lenient`]: an unbalanced string yields what could be read, and a
/// group nested deeper than [`required_use::MAX_DEPTH`] is dropped.
pub fn use_reduce<'a>(s: &'a str, is_on: &dyn Fn(&str) -> bool) -> Vec<&'a str> {
    fn walk<'a>(items: &[crate::depspec::Item<'a>], is_on: &dyn Fn(&str) -> bool, out: &mut Vec<&'a str>) {
        use crate::depspec::Item;
        for item in items {
            match item {
                Item::Leaf { text, .. } => out.push(text),
                Item::Cond { flag, negated, children, .. } => {
                    if is_on(flag) != *negated {
                        walk(children, is_on, out);
                    }
                }
                Item::Group { children, .. } => walk(children, is_on, out),
            }
        }
    }
    let (items, _) = crate::depspec::parse_lenient(s);
    let mut out = Vec::new();
    walk(&items, is_on, &mut out);
    out
}

/// Why one entry was rejected: the 1-based line (if one) and the message.
type EntryError = (Option<usize>, String);

/// Parses the text of one md5-cache entry for `cpv`. Warnings (kept entry) go to `warnings`.
pub fn parse_entry(cpv: &str, text: &str, warnings: &mut Vec<(Option<usize>, String)>) -> Result<Ebuild, EntryError> {
    let mut keys: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err((Some(lineno), format!("expected KEY=value, found `{}`", truncate(line))));
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err((Some(lineno), format!("invalid key `{}`", truncate(key))));
        }
        if let Some((first, _)) = keys.get(key) {
            return Err((Some(lineno), format!("duplicate key {key} (first on line {first})")));
        }
        keys.insert(key.to_owned(), (lineno, value.to_owned()));
    }
    // The other dependency-spec strings are kept raw and read leniently; Portage takes any
    // depth, and so do we where it matters, but their parser (`depspec::parse_lenient`, under
    // `use_reduce` and `reduce_depend`) drops what lies deeper than MAX_DEPTH, so say so.
    for key in ["DEPEND", "BDEPEND", "RDEPEND", "PDEPEND", "IDEPEND", "RESTRICT", "PROPERTIES", "SRC_URI", "LICENSE"] {
        let Some((line, value)) = keys.get(key) else { continue };
        let (mut depth, mut deepest) = (0usize, 0usize);
        for tok in value.split_whitespace() {
            match tok {
                "(" => {
                    depth += 1;
                    deepest = deepest.max(depth);
                }
                ")" => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        if deepest > required_use::MAX_DEPTH {
            warnings.push((
                Some(*line),
                format!("{key}: groups nested {deepest} deep; what lies deeper than {} levels is ignored", required_use::MAX_DEPTH),
            ));
        }
    }

    let mut take = |k: &str| keys.remove(k);
    let raw = |v: Option<(usize, String)>| v.map(|(_, s)| s).unwrap_or_default();
    let split = |v: Option<(usize, String)>| -> Vec<String> { raw(v).split_whitespace().map(str::to_owned).collect() };

    // Portage regenerates an entry without `_md5_`: it cannot be trusted as current.
    let Some((_, md5)) = take("_md5_") else {
        return Err((None, "no _md5_ key (not an md5-dict cache entry)".into()));
    };

    let (eapi_line, eapi) = take("EAPI").map(|(l, v)| (Some(l), v)).unwrap_or_else(|| (None, "0".to_owned()));
    if !is_supported_eapi(&eapi) {
        // Portage masks such an ebuild ("EAPI unsupported") and reads none of its metadata.
        return Err((eapi_line, format!("EAPI `{}` is not supported (Portage masks the ebuild: EAPI unsupported)", truncate(&eapi))));
    }

    let mut iuse: Vec<IuseFlag> = Vec::new();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    if let Some((line, value)) = take("IUSE") {
        for tok in value.split_whitespace() {
            let (default, name) = match tok.as_bytes()[0] {
                b'+' => (Some(true), &tok[1..]),
                b'-' => (Some(false), &tok[1..]),
                _ => (None, tok),
            };
            if !required_use::is_valid_flag_name(name) {
                return Err((Some(line), format!("IUSE: `{tok}` is not a valid USE flag")));
            }
            // Eclasses and ebuilds often both list a flag: legal, and a `+` anywhere wins,
            // as in Portage's IUSE defaults.
            if let Some(&k) = seen.get(name) {
                let f = &mut iuse[k];
                if default == Some(true) || f.default.is_none() {
                    f.default = default.or(f.default);
                }
                continue;
            }
            seen.insert(name.to_owned(), iuse.len());
            iuse.push(IuseFlag { name: name.to_owned(), default });
        }
    }

    let required_use = match take("REQUIRED_USE") {
        // A flag outside IUSE is checked against the profile's implicit IUSE when planning
        // (`Profile::in_iuse_effective`): only the profile knows `kernel_linux` and the like.
        Some((line, value)) => match RequiredUse::parse(&value) {
            Ok(r) => r,
            Err(e) => return Err((Some(line), format!("REQUIRED_USE: {e}"))),
        },
        None => RequiredUse::parse("").expect("the empty REQUIRED_USE parses"),
    };

    let mut eclasses = Vec::new();
    if let Some((line, value)) = take("_eclasses_") {
        let parts: Vec<&str> = value.split('\t').collect();
        if parts.len() & 1 == 1 {
            return Err((Some(line), "_eclasses_: odd number of tab-separated fields (expected name/md5 pairs)".into()));
        }
        for pair in parts.chunks(2) {
            eclasses.push((pair[0].to_owned(), pair[1].to_owned()));
        }
    }

    let mut defined_phases = split(take("DEFINED_PHASES"));
    if defined_phases == ["-"] {
        defined_phases.clear();
    }

    let ebuild = Ebuild {
        cpv: cpv.to_owned(),
        eapi,
        iuse,
        required_use,
        depend: raw(take("DEPEND")),
        bdepend: raw(take("BDEPEND")),
        rdepend: raw(take("RDEPEND")),
        pdepend: raw(take("PDEPEND")),
        idepend: raw(take("IDEPEND")),
        restrict: raw(take("RESTRICT")),
        properties: raw(take("PROPERTIES")),
        slot: raw(take("SLOT")),
        keywords: split(take("KEYWORDS")),
        src_uri: raw(take("SRC_URI")),
        defined_phases,
        inherit: split(take("INHERIT")),
        eclasses,
        md5,
        description: raw(take("DESCRIPTION")),
        other: keys.into_iter().map(|(k, (_, v))| (k, v)).collect(),
    };
    if ebuild.slot.is_empty() {
        warnings.push((None, "no SLOT".into()));
    }
    Ok(ebuild)
}

/// The EAPIs Portage 3.0 supports (`portage.eapi.eapi_is_supported`: 0 to 9). An entry in
/// any other EAPI is refused, as Portage masks it.
pub const SUPPORTED_EAPIS: &[&str] = &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// Whether Portage supports `eapi` (surrounding whitespace ignored, as Portage strips it).
pub fn is_supported_eapi(eapi: &str) -> bool {
    SUPPORTED_EAPIS.contains(&eapi.trim())
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// The cache file of `cpv` in the repository at `repo` (`metadata/md5-cache/CATEGORY/PF`),
/// when `cpv` is one plain `category/package-version`: a cpv read from an upload or a
/// database names one file of the cache, nothing else.
pub fn entry_path(repo: &Path, cpv: &str) -> Option<std::path::PathBuf> {
    let (category, pf) = cpv.split_once('/')?;
    (is_plain_name(category) && is_plain_name(pf)).then(|| repo.join("metadata/md5-cache").join(category).join(pf))
}

/// True for a name PMS allows for a category, package or version (and nothing that could
/// step out of a folder or carry a control character).
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('.') && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+_.-".contains(&b))
}

/// Reads one cache file; `cpv` is derived from its place (`CATEGORY/PF`).
pub fn read_entry(path: &Path, cpv: &str, diags: &mut Vec<Diagnostic>) -> Option<Ebuild> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            diags.push(Diagnostic { severity: Severity::Error, path: path.to_owned(), line: None, message: format!("cannot read: {e}") });
            return None;
        }
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let upto = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = upto.iter().filter(|b| **b == b'\n').count() + 1;
            diags.push(Diagnostic {
                severity: Severity::Error,
                path: path.to_owned(),
                line: Some(line),
                message: "not valid UTF-8".into(),
            });
            return None;
        }
    };
    let mut warnings = Vec::new();
    let result = parse_entry(cpv, &text, &mut warnings);
    for (line, message) in warnings {
        diags.push(Diagnostic { severity: Severity::Warning, path: path.to_owned(), line, message });
    }
    match result {
        Ok(e) => Some(e),
        Err((line, message)) => {
            diags.push(Diagnostic { severity: Severity::Error, path: path.to_owned(), line, message });
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text` as the entry `cat/pkg-1` and renders the fields that matter, the
    /// warnings, or the error.
    fn check(text: &str, expected: &str) {
        let mut warnings = Vec::new();
        let got = match parse_entry("cat/pkg-1", text, &mut warnings) {
            Ok(e) => {
                let iuse: Vec<String> = e
                    .iuse
                    .iter()
                    .map(|f| match f.default {
                        Some(true) => format!("+{}", f.name),
                        Some(false) => format!("-{}", f.name),
                        None => f.name.clone(),
                    })
                    .collect();
                let mut s = format!(
                    "eapi={} iuse=[{}] required_use=[{}] restrict=[{}] eclasses={} phases={} md5={} other={:?}",
                    e.eapi,
                    iuse.join(" "),
                    e.required_use,
                    e.restrict,
                    e.eclasses.len(),
                    e.defined_phases.join(","),
                    e.md5,
                    e.other.keys().collect::<Vec<_>>(),
                );
                for (l, w) in &warnings {
                    s.push_str(&format!("\nwarning {l:?}: {w}"));
                }
                s
            }
            Err((line, msg)) => format!("error {line:?}: {msg}"),
        };
        assert_eq!(got, expected);
    }

    #[test]
    fn full_entry() {
        check(
            "DEFINED_PHASES=compile test\nEAPI=8\nHOMEPAGE=https://x\nIUSE=+a -b c test\nREQUIRED_USE=a? ( || ( b c ) )\nRESTRICT=!test? ( test )\nSLOT=0\n_eclasses_=toolchain-funcs\t58a9\tcmake\tc54f\n_md5_=b363\n",
            "eapi=8 iuse=[+a -b c test] required_use=[a? ( || ( b c ) )] restrict=[!test? ( test )] eclasses=2 phases=compile,test md5=b363 other=[\"HOMEPAGE\"]",
        );
    }

    #[test]
    fn defaults_and_warnings() {
        check("SLOT=0\n_md5_=1\n", "eapi=0 iuse=[] required_use=[] restrict=[] eclasses=0 phases= md5=1 other=[]");
        check(
            "EAPI=8\nIUSE=a b +a -b\nREQUIRED_USE=^^ ( a kernel_linux )\nSLOT=0\nDEFINED_PHASES=-\n_md5_=1\n",
            "eapi=8 iuse=[+a -b] required_use=[^^ ( a kernel_linux )] restrict=[] eclasses=0 phases= md5=1 other=[]",
        );
    }

    #[test]
    fn broken_entries_name_the_line() {
        check("EAPI=8\ngarbage\n_md5_=1\n", "error Some(2): expected KEY=value, found `garbage`");
        check("EAPI=8\nEAPI=7\n_md5_=1\n", "error Some(2): duplicate key EAPI (first on line 1)");
        check("EAPI=8\nIUSE=a +\n_md5_=1\n", "error Some(2): IUSE: `+` is not a valid USE flag");
        check("EAPI=8\nREQUIRED_USE=|| ( a\n_md5_=1\n", "error Some(2): REQUIRED_USE: at byte 6: unclosed `(` opened at byte 3");
        check(
            "EAPI=8\n_eclasses_=a\tb\tc\n_md5_=1\n",
            "error Some(2): _eclasses_: odd number of tab-separated fields (expected name/md5 pairs)",
        );
        check("EAPI=8\n", "error None: no _md5_ key (not an md5-dict cache entry)");
        check("IUSE=a\nEAPI=999\n_md5_=1\n", "error Some(2): EAPI `999` is not supported (Portage masks the ebuild: EAPI unsupported)");
    }

    #[test]
    fn deep_dependency_strings_are_kept_with_a_warning() {
        let deep = format!("{}a/b{}", "x? ( ".repeat(30_000), " )".repeat(30_000));
        let mut w = Vec::new();
        let e = parse_entry("c/p-1", &format!("EAPI=8\nRDEPEND={deep}\nSLOT=0\n_md5_=1\n"), &mut w).unwrap();
        assert_eq!(e.rdepend.len(), deep.len());
        assert_eq!(w, [(Some(2), "RDEPEND: groups nested 30000 deep; what lies deeper than 100 levels is ignored".to_owned())]);
    }

    #[test]
    fn restrict_follows_use() {
        let e = {
            let mut w = Vec::new();
            parse_entry("c/p-1", "RESTRICT=!test? ( test ) debug? ( strip ) mirror\n_md5_=1\n", &mut w).unwrap()
        };
        assert!(e.restricts("test", &|_| false));
        assert!(!e.restricts("test", &|f| f == "test"));
        assert!(e.restricts("strip", &|f| f == "debug"));
        assert!(e.restricts("mirror", &|_| false));
    }
}
