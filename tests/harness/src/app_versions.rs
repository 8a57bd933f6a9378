//! Server-sent app versions, as a stock BOINC server makes and sends them, each behaviour with
//! the BOINC source it copies (BOINC's git; read with
//! `git -C /work/.mirror/BOINC+boinc/repo show <ref>:<file>`; the client side is tag
//! `client_release/7.20/7.20.5`, the Debian client the tests run):
//!
//! - [`CodeSignKey`]: the project's code-signing key pair and BOINC's signature
//!   (`lib/crypt.cpp`, `lib/crypt.h`):
//!   - a key is `R_RSA_PUBLIC_KEY` / `R_RSA_PRIVATE_KEY`: `unsigned short bits`, then
//!     fixed-size big-endian byte arrays, each number right-aligned in its array
//!     (`_bn2bin`): public `modulus[128]`, `exponent[128]`; private `modulus[128]`,
//!     `publicExponent[128]`, `exponent[128]`, `prime[2][64]`, `primeExponent[2][64]`,
//!     `coefficient[64]` (`MAX_RSA_MODULUS_BITS` 1024, so every key is 1024 bits);
//!   - its text (`print_key_hex`, the files `keys/code_sign_public` and
//!     `keys/code_sign_private` that `crypt_prog -genkey` writes) is the bit count in
//!     decimal and a newline, then every byte after `bits` in lowercase hex
//!     (`print_hex_data`: 32 bytes a line, a newline after a partial last line, then `.\n`);
//!   - a file's signature (`sign_file` → `encrypt_private`, what `sign_executable` prints)
//!     is `RSA_private_encrypt(..., RSA_PKCS1_PADDING)` (raw PKCS#1 v1.5 block type 1, no
//!     DigestInfo) of the **32 ASCII characters** of the file's MD5 in lowercase hex
//!     (`md5_file`), 128 bytes, printed by `print_hex_data` as above;
//!   - the client checks it (`client/cs_files.cpp` `FILE_INFO::verify_file`, or
//!     `client/async_file.cpp` `ASYNC_VERIFY::finish` above `ASYNC_FILE_THRESHOLD`) with
//!     `check_file_signature2(md5 of the file as on disk, file_signature,
//!     project->code_sign_key)`: `sscan_key_hex`, `sscan_hex_data` (whitespace skipped, stops
//!     at the `.`), `RSA_public_decrypt(..., RSA_PKCS1_PADDING)` and `strncmp` of the MD5 text
//!     with what came out. Every file of an app version must be signed
//!     (`client/client_state.cpp` `link_app_version`: `signature_required` unless
//!     `unsigned_apps_ok`), else "Signature verification failed" / `ERR_RSA_FAILED`.
//! - [`update_versions`]: `tools/update_versions` (BOINC master) turning
//!   `apps/<app>/<version>/<platform>[__<plan class>]/` into an app version:
//!   `version.xml` (`<file>`: `physical_name`, `logical_name`, `main_program`, `copy_file`,
//!   `gzip`, `url`; `api_version`, `dont_throttle`, `needs_network`, `is_wrapper`,
//!   `file_prefix`), every other file of the folder processed (`process_files`; a
//!   `NAME.sig` file is that file's signature instead of signing it, `process_file`), a
//!   listed file that is missing is an error, a lone file is the main program, and exactly
//!   one main program is needed (`check_main_program`); each file is staged flat into
//!   `download/` (`stage_file`: a name there with other content is refused, "BOINC files are
//!   immutable"), `<gzip/>` files also as `NAME.gz`, `executable` from the owner-x bit; the
//!   app version's XML is `file_info_xml` for each file (`name`, `url`, `gzipped_url`,
//!   `executable`, `file_signature`, `nbytes`, `gzipped_nbytes`) then `<app_version>` with
//!   `app_name`, `version_num` (`parse_version`: "1.02" is 102), `api_version` (from
//!   version.xml, else the main program's `API_VERSION_x.y.z` string, `get_api_version`), a
//!   `file_ref_xml` per file (`file_name`, `open_name`, `copy_file`, `main_program`) and the
//!   flags.
//! - [`AppVersion::scheduler_xml`]: what the scheduler puts into its reply for the version
//!   (`sched/sched_types.cpp` `APP_VERSION::write`): the XML up to `</app_version>`, then
//!   `platform`, `plan_class`, `avg_ncpus`, `flops` and, when the plan class made one,
//!   `cmdline` (`hu.cmdline`, [`crate::create_work::PlanClass::usage`]); the key goes into the
//!   reply as `<code_sign_key>` when the client has none (`sched/handle_request.cpp`
//!   `send_code_sign_key`, `sched/sched_types.cpp` `SCHEDULER_REPLY::write`).
//!
//! Where the harness differs, on purpose: files are gzipped at flate2's fast level (`gzip`'s
//! default is 6; the client only gunzips, and the sandbox root tar is most of a GB).

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use md5::{Digest, Md5};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, Pkcs1v15Sign, RsaPrivateKey};

use crate::create_work::Element;

/// `MAX_RSA_MODULUS_LEN` (`lib/crypt.h`): 1024 bits.
pub const MODULUS_LEN: usize = 128;
/// `MAX_RSA_PRIME_LEN` (`lib/crypt.h`).
pub const PRIME_LEN: usize = 64;
/// BOINC's key size: the structs hold no more.
pub const BITS: usize = 1024;

/// A project's code-signing key pair (`keys/code_sign_private`, `keys/code_sign_public`).
#[derive(Clone)]
pub struct CodeSignKey {
    key: RsaPrivateKey,
}

impl std::fmt::Debug for CodeSignKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CodeSignKey({} bits, public {:.24}...)", self.key.n().bits(), self.public_hex().replace('\n', " "))
    }
}

/// `bn_to_bin` / `_bn2bin`: `x` big-endian, right-aligned in `len` bytes.
fn fixed(x: &BigUint, len: usize) -> anyhow::Result<Vec<u8>> {
    let b = x.to_bytes_be();
    if b.len() > len {
        bail!("number of {} bytes does not fit {len}", b.len());
    }
    let mut out = vec![0; len - b.len()];
    out.extend_from_slice(&b);
    Ok(out)
}

/// `print_hex_data` / `sprint_hex_data`: lowercase hex, 32 bytes a line, a newline after a
/// partial last line, then `.\n`.
pub fn print_hex_data(data: &[u8]) -> String {
    let mut out = String::new();
    for (i, b) in data.iter().enumerate() {
        let _ = write!(out, "{b:02x}");
        if i % 32 == 31 {
            out.push('\n');
        }
    }
    if !data.len().is_multiple_of(32) {
        out.push('\n');
    }
    out.push_str(".\n");
    out
}

/// `sscan_hex_data` (7.20): skips whitespace, reads two hex digits a byte, stops at anything
/// else (the closing `.`).
pub fn scan_hex_data(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let Some(byte) = b.get(i..i + 2).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok()) else {
            break;
        };
        out.push(byte);
        i += 2;
    }
    out
}

/// `sscan_key_hex`: the bit count, then the key's bytes; `None` when malformed or short.
fn scan_key_hex(text: &str, len: usize) -> Option<(usize, Vec<u8>)> {
    let (bits, rest) = text.trim_start().split_once('\n')?;
    let bits = bits.trim().parse().ok()?;
    let data = scan_hex_data(rest);
    (data.len() >= len).then(|| (bits, data[..len].to_vec()))
}

/// `md5_file`: the file's MD5 in lowercase hex, and its size.
pub fn md5_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut f = fs::File::open(path).with_context(|| format!("md5_file: can't open {}", path.display()))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).with_context(|| format!("read {}", path.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

impl CodeSignKey {
    /// A new 1024-bit key, public exponent 65537 (`crypt_prog -genkey 1024`:
    /// `RSA_generate_key(nbits, 65537)`).
    pub fn generate() -> anyhow::Result<CodeSignKey> {
        let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, BITS).context("generate an RSA key")?;
        Ok(CodeSignKey { key })
    }

    /// Reads a private key's text (`keys/code_sign_private`, `scan_key_hex`).
    pub fn from_private_hex(text: &str) -> anyhow::Result<CodeSignKey> {
        let len = 3 * MODULUS_LEN + 5 * PRIME_LEN;
        let (bits, data) = scan_key_hex(text, len).context("not a BOINC private key (bits, then 704 hex bytes)")?;
        let num = |from: usize, n: usize| BigUint::from_bytes_be(&data[from..from + n]);
        let n = num(0, MODULUS_LEN);
        let e = num(MODULUS_LEN, MODULUS_LEN);
        let d = num(2 * MODULUS_LEN, MODULUS_LEN);
        let p = num(3 * MODULUS_LEN, PRIME_LEN);
        let q = num(3 * MODULUS_LEN + PRIME_LEN, PRIME_LEN);
        if n.bits() != bits {
            bail!("the key says {bits} bits, its modulus has {}", n.bits());
        }
        let mut key = RsaPrivateKey::from_components(n, e, d, vec![p, q]).context("not an RSA key")?;
        key.precompute().context("RSA key")?;
        Ok(CodeSignKey { key })
    }

    /// `print_public_key_hex`: the text of `keys/code_sign_public`.
    pub fn public_hex(&self) -> String {
        let mut data = fixed(self.key.n(), MODULUS_LEN).expect("a 1024-bit modulus");
        data.extend(fixed(self.key.e(), MODULUS_LEN).expect("a small exponent"));
        format!("{}\n{}", self.key.n().bits(), print_hex_data(&data))
    }

    /// `print_private_key_hex`: the text of `keys/code_sign_private`.
    pub fn private_hex(&self) -> String {
        let k = &self.key;
        let primes = k.primes();
        let mut data = Vec::new();
        let parts: [(Option<&BigUint>, usize); 8] = [
            (Some(k.n()), MODULUS_LEN),
            (Some(k.e()), MODULUS_LEN),
            (Some(k.d()), MODULUS_LEN),
            (primes.first(), PRIME_LEN),
            (primes.get(1), PRIME_LEN),
            (k.dp(), PRIME_LEN),
            (k.dq(), PRIME_LEN),
            (None, PRIME_LEN),
        ];
        for (x, len) in parts {
            let x = match x {
                Some(x) => x.clone(),
                // iqmp = q^-1 mod p, OpenSSL's and the crate's alike.
                None => k.crt_coefficient().expect("a precomputed key"),
            };
            data.extend(fixed(&x, len).expect("the key's numbers fit BOINC's arrays"));
        }
        format!("{}\n{}", k.n().bits(), print_hex_data(&data))
    }

    /// `encrypt_private` of `text` (at most modulus_len - 11 bytes of it): raw PKCS#1 v1.5,
    /// block type 1.
    pub fn encrypt_private(&self, text: &[u8]) -> anyhow::Result<Vec<u8>> {
        let n = text.len().min(MODULUS_LEN - 11);
        self.key.sign(Pkcs1v15Sign::new_unprefixed(), &text[..n]).context("RSA_private_encrypt")
    }

    /// `sign_file` and `sign_executable`'s output: the signature of the file's MD5 text, as
    /// `print_hex_data` prints it.
    pub fn sign_file(&self, path: &Path) -> anyhow::Result<String> {
        let (md5, _) = md5_file(path)?;
        Ok(print_hex_data(&self.encrypt_private(md5.as_bytes())?))
    }

    /// The public key's modulus and exponent (for checks).
    pub fn public_parts(&self) -> (BigUint, BigUint) {
        (self.key.n().clone(), self.key.e().clone())
    }
}

/// One file of an app version (update_versions' `$fd`).
#[derive(Debug, Clone, PartialEq)]
pub struct VersionFile {
    /// `physical_name`: the name in the folder, in `download/` and on the client.
    pub physical_name: String,
    /// `logical_name`: the `open_name` (empty: none).
    pub logical_name: String,
    /// `main_program`.
    pub main_program: bool,
    /// `copy_file`.
    pub copy_file: bool,
    /// `gzip`.
    pub gzip: bool,
    /// Owner-x bit of the file in `apps/`.
    pub executable: bool,
    /// Size.
    pub nbytes: u64,
    /// Size of `NAME.gz` when `gzip`.
    pub gzipped_nbytes: Option<u64>,
    /// The signature text (`sign_executable`'s output, or `NAME.sig`).
    pub signature: String,
    /// Download URL.
    pub url: String,
}

/// An app version as `update_versions` puts it into the database.
#[derive(Debug, Clone, PartialEq)]
pub struct AppVersion {
    /// The app.
    pub app_name: String,
    /// `version_num`.
    pub version_num: i64,
    /// The platform (folder name before `__`).
    pub platform: String,
    /// The plan class (after `__`; empty: none).
    pub plan_class: String,
    /// Its files.
    pub files: Vec<VersionFile>,
    /// `xml_doc`: the `<file_info>`s and the `<app_version>`.
    pub xml_doc: String,
}

impl AppVersion {
    /// The app version as `APP_VERSION::write` puts it into a scheduler reply for a host on
    /// which it uses `avg_ncpus` CPUs at `flops`, with the plan class's `cmdline` (empty:
    /// none).
    pub fn scheduler_xml(&self, avg_ncpus: f64, flops: f64, cmdline: &str) -> String {
        let head = self.xml_doc.split("</app_version>").next().unwrap_or_default();
        let mut out = head.to_owned();
        let _ = writeln!(out, "    <platform>{}</platform>", self.platform);
        if !self.plan_class.is_empty() {
            let _ = writeln!(out, "    <plan_class>{}</plan_class>", self.plan_class);
        }
        let _ = writeln!(out, "    <avg_ncpus>{avg_ncpus:.6}</avg_ncpus>\n    <flops>{flops:.6}</flops>");
        if !cmdline.is_empty() {
            let _ = writeln!(out, "    <cmdline>{cmdline}</cmdline>");
        }
        out.push_str("</app_version>\n");
        out
    }
}

/// `parse_version`: "N" is N, "N.M" is 100·N + M; None when not a number.
pub fn parse_version(v: &str) -> Option<i64> {
    let mut parts = v.split('.');
    let major: i64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some(minor) => Some(100 * major + minor.parse::<i64>().ok()?),
        None => Some(major),
    }
}

/// `get_api_version`: the first `API_VERSION_x.y.z` string in the main program
/// (`strings | grep -E 'API_VERSION_[0-9]+\.[0-9]+\.[0-9]+$'`).
fn api_version_in(path: &Path) -> String {
    let Ok(bytes) = fs::read(path) else { return String::new() };
    let needle = b"API_VERSION_";
    let mut from = 0;
    while let Some(at) = bytes[from..].windows(needle.len()).position(|w| w == needle) {
        let start = from + at + needle.len();
        let end = bytes[start..].iter().position(|b| !(b.is_ascii_digit() || *b == b'.')).map_or(bytes.len(), |k| start + k);
        let v = String::from_utf8_lossy(&bytes[start..end]).into_owned();
        // `$`: the printable run ends there.
        let run_ends = bytes.get(end).is_none_or(|b| !(b.is_ascii_graphic() || *b == b' '));
        if run_ends && v.split('.').count() == 3 && v.split('.').all(|p| !p.is_empty()) {
            return v;
        }
        from = start;
    }
    String::new()
}

/// `stage_file`: `src` into `download/NAME` unless the same bytes are there (other bytes:
/// refused), and `NAME.gz` when `gzip`; returns the size of `NAME.gz`.
fn stage_file(src: &Path, download: &Path, name: &str, gzip: bool) -> anyhow::Result<Option<u64>> {
    let dl = download.join(name);
    if dl.is_file() {
        if md5_file(src)?.0 != md5_file(&dl)?.0 {
            bail!(
                "Error: files {} and {} differ.\nBOINC files are immutable.\nIf you change a file, you must give it a new name.",
                src.display(),
                dl.display()
            );
        }
    } else {
        let tmp = download.join(format!(".{name}.tmp"));
        let _ = fs::remove_file(&tmp);
        // A copy, as `cp`: a hard link would let a file changed in place in apps/ change the
        // staged one behind the immutability check.
        fs::copy(src, &tmp).with_context(|| format!("cp {} {}", src.display(), tmp.display()))?;
        fs::rename(&tmp, &dl).with_context(|| format!("stage {}", dl.display()))?;
    }
    if !gzip {
        return Ok(None);
    }
    let gz = download.join(format!("{name}.gz"));
    if !gz.exists() {
        let tmp = download.join(format!(".{name}.gz.tmp"));
        let mut enc = flate2::write::GzEncoder::new(fs::File::create(&tmp)?, flate2::Compression::fast());
        io::copy(&mut fs::File::open(&dl)?, &mut enc).with_context(|| format!("gzip {}", dl.display()))?;
        enc.finish()?.sync_all()?;
        fs::rename(&tmp, &gz)?;
    }
    Ok(Some(fs::metadata(&gz)?.len()))
}

/// `get_bool`: `<x/>`, `<x>1</x>` (or any positive number) are true.
fn get_bool(e: &Element, name: &str) -> bool {
    e.all(name).any(|x| x.text.trim().is_empty() || x.text.trim().parse::<i64>().is_ok_and(|n| n > 0))
}

/// `tools/update_versions` for app `app`: every version folder under `apps/<app>/`, signed
/// with `key`, staged into `download` (served at `download_url`). Returns the app versions,
/// as they would go into the database.
pub fn update_versions(apps: &Path, app: &str, key: &CodeSignKey, download: &Path, download_url: &str) -> anyhow::Result<Vec<AppVersion>> {
    let mut versions = Vec::new();
    let app_dir = apps.join(app);
    for v in sorted_names(&app_dir)? {
        let Some(version_num) = parse_version(&v) else {
            crate::say(&format!("update_versions: {v} is not a version number; skipping"));
            continue;
        };
        for p in sorted_names(&app_dir.join(&v))? {
            let dir = app_dir.join(&v).join(&p);
            let (platform, plan_class) = p.split_once("__").map_or((p.as_str(), ""), |(a, b)| (a, b));
            let av = version_folder(&dir, app, version_num, platform, plan_class, key, download, download_url)
                .with_context(|| format!("update_versions: {}", dir.display()))?;
            versions.push(av);
        }
    }
    Ok(versions)
}

/// The names in `dir` that do not start with a dot (`readdir_aux`), sorted.
fn sorted_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .with_context(|| format!("can't open {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names)
}

#[allow(clippy::too_many_arguments)] // update_versions' own `process_version` state, spelled out
fn version_folder(
    dir: &Path,
    app: &str,
    version_num: i64,
    platform: &str,
    plan_class: &str,
    key: &CodeSignKey,
    download: &Path,
    download_url: &str,
) -> anyhow::Result<AppVersion> {
    let vfile = dir.join("version.xml");
    let vers = if vfile.is_file() {
        let text = fs::read_to_string(&vfile).with_context(|| format!("read {}", vfile.display()))?;
        Some(Element::parse(&text).with_context(|| format!("Can't load XML file {}", vfile.display()))?)
    } else {
        None
    };
    let listed: Vec<VersionFile> = vers
        .iter()
        .flat_map(|v| v.all("file"))
        .map(|f| VersionFile {
            physical_name: f.value("physical_name").unwrap_or_default().trim().to_owned(),
            logical_name: f.value("logical_name").unwrap_or_default().trim().to_owned(),
            main_program: get_bool(f, "main_program"),
            copy_file: get_bool(f, "copy_file"),
            gzip: get_bool(f, "gzip"),
            executable: false,
            nbytes: 0,
            gzipped_nbytes: None,
            signature: String::new(),
            url: f.value("url").unwrap_or_default().trim().to_owned(),
        })
        .collect();
    let mut present = vec![false; listed.len()];
    let mut files = listed.clone();
    for name in sorted_names(dir)? {
        let path = dir.join(&name);
        if name == "version.xml" || name.ends_with(".sig") || path.is_dir() {
            continue;
        }
        let i = match files.iter().position(|f| f.physical_name == name) {
            Some(i) => i,
            None => {
                files.push(VersionFile {
                    physical_name: name.clone(),
                    logical_name: String::new(),
                    main_program: false,
                    copy_file: false,
                    gzip: false,
                    executable: false,
                    nbytes: 0,
                    gzipped_nbytes: None,
                    signature: String::new(),
                    url: String::new(),
                });
                present.push(false);
                files.len() - 1
            }
        };
        present[i] = true;
        let fd = &mut files[i];
        let meta = fs::metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        fd.nbytes = meta.len();
        let sig = dir.join(format!("{name}.sig"));
        fd.signature = if sig.is_file() {
            fs::read_to_string(&sig).with_context(|| format!("read {}", sig.display()))?
        } else {
            key.sign_file(&path)?
        };
        fd.gzipped_nbytes = stage_file(&path, download, &name, fd.gzip)?;
        if fd.url.is_empty() {
            fd.url = format!("{download_url}/{name}");
        }
        fd.executable = meta.permissions().mode() & 0o100 != 0;
    }
    if let Some(i) = present.iter().position(|p| !p) {
        bail!("File {} is listed in version.xml but not present", files[i].physical_name);
    }
    if files.len() == 1 {
        files[0].main_program = true;
    }
    match files.iter().filter(|f| f.main_program).count() {
        1 => {}
        0 => bail!("No file was marked as the main program - skipping."),
        _ => bail!("More than one file was marked as the main program - skipping."),
    }
    let mut api_version = vers.as_ref().and_then(|v| v.value("api_version")).unwrap_or_default().trim().to_owned();
    if api_version.is_empty() {
        let main = files.iter().find(|f| f.main_program).expect("one main program");
        api_version = api_version_in(&dir.join(&main.physical_name));
    }

    let mut xml = String::new();
    for fd in &files {
        // file_info_xml
        let _ = write!(xml, "<file_info>\n    <name>{}</name>\n    <url>{}</url>\n", fd.physical_name, fd.url);
        if fd.gzip {
            let _ = writeln!(xml, "    <gzipped_url>{}.gz</gzipped_url>", fd.url);
        }
        if fd.executable || fd.main_program {
            xml.push_str("    <executable/>\n");
        }
        let _ = write!(xml, "    <file_signature>\n{}    </file_signature>\n    <nbytes>{}</nbytes>\n", fd.signature, fd.nbytes);
        if let Some(gz) = fd.gzipped_nbytes {
            let _ = writeln!(xml, "    <gzipped_nbytes>{gz}</gzipped_nbytes>");
        }
        xml.push_str("</file_info>\n");
    }
    let _ = write!(xml, "<app_version>\n    <app_name>{app}</app_name>\n    <version_num>{version_num}</version_num>\n");
    if !api_version.is_empty() {
        let _ = writeln!(xml, "    <api_version>{api_version}</api_version>");
    }
    for fd in &files {
        // file_ref_xml
        let _ = write!(xml, "<file_ref>\n    <file_name>{}</file_name>\n", fd.physical_name);
        if !fd.logical_name.is_empty() {
            let _ = writeln!(xml, "    <open_name>{}</open_name>", fd.logical_name);
        }
        if fd.copy_file {
            xml.push_str("    <copy_file/>\n");
        }
        if fd.main_program {
            xml.push_str("    <main_program/>\n");
        }
        xml.push_str("</file_ref>\n");
    }
    if let Some(v) = &vers {
        for flag in ["dont_throttle", "needs_network", "is_wrapper"] {
            if get_bool(v, flag) {
                let _ = writeln!(xml, "    <{flag}/>");
            }
        }
        if let Some(prefix) = v.value("file_prefix").filter(|p| !p.is_empty()) {
            let _ = writeln!(xml, "    <file_prefix>{prefix}</file_prefix>");
        }
    }
    xml.push_str("</app_version>\n");
    crate::say(&format!("update_versions: {app} {version_num} {platform}__{plan_class}: {} files signed and staged", files.len()));
    Ok(AppVersion {
        app_name: app.to_owned(),
        version_num,
        platform: platform.to_owned(),
        plan_class: plan_class.to_owned(),
        files,
        xml_doc: xml,
    })
}

/// A version folder's path: `apps/<app>/<version>/<platform>__<plan class>`.
pub fn version_dir(apps: &Path, app: &str, version: &str, platform: &str, plan_class: &str) -> PathBuf {
    let p = if plan_class.is_empty() { platform.to_owned() } else { format!("{platform}__{plan_class}") };
    apps.join(app).join(version).join(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::LazyLock;

    /// Key generation is slow in a debug build: one key for the tests.
    static KEY: LazyLock<CodeSignKey> = LazyLock::new(|| CodeSignKey::generate().unwrap());

    /// The client's check, re-done from BOINC 7.20.5's source (`lib/crypt.cpp`
    /// `check_file_signature2` → `sscan_key_hex`, `sscan_hex_data`, `check_file_signature`
    /// → `decrypt_public` = `RSA_public_decrypt(RSA_PKCS1_PADDING)`, `strncmp`), with
    /// nothing of the signing side: Ok(answer), Err on a decrypt error.
    fn check_file_signature2(md5: &str, signature_text: &str, key_text: &str) -> Result<bool, String> {
        // sscan_key_hex: "%d", then after the first '\n' the hex of modulus[128] exponent[128].
        let (_, key) = scan_key_hex(key_text, 2 * MODULUS_LEN).ok_or("sscan_key_hex failed")?;
        let n = BigUint::from_bytes_be(&key[..MODULUS_LEN]);
        let e = BigUint::from_bytes_be(&key[MODULUS_LEN..]);
        let sig = scan_hex_data(signature_text);
        // RSA_public_decrypt: the input must be as long as the modulus and below it.
        let k = n.to_bytes_be().len();
        if sig.len() != k {
            return Err(format!("signature of {} bytes for a {k}-byte modulus", sig.len()));
        }
        let s = BigUint::from_bytes_be(&sig);
        if s >= n {
            return Err("signature not below the modulus".into());
        }
        let m = s.modpow(&e, &n).to_bytes_be();
        let mut em = vec![0u8; k - m.len()];
        em.extend(m);
        // RSA_padding_check_PKCS1_type_1: 00 01, at least 8 bytes FF, 00, the data.
        if em[0] != 0 || em[1] != 1 {
            return Err("block type is not 01".into());
        }
        let ff = em[2..].iter().take_while(|b| **b == 0xff).count();
        if ff < 8 || em.get(2 + ff) != Some(&0) {
            return Err("bad padding".into());
        }
        let clear = &em[3 + ff..];
        // clear_buf[MD5_LEN]; strncmp(md5_buf, clear_buf, strlen(md5_buf)).
        for (i, &a) in md5.as_bytes().iter().enumerate() {
            let c = clear.get(i).copied().unwrap_or(0);
            if a != c {
                return Ok(false);
            }
            if c == 0 {
                break;
            }
        }
        Ok(true)
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gah-av-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn key_text_is_boincs() {
        let public = KEY.public_hex();
        let lines: Vec<&str> = public.lines().collect();
        // bits, 256 bytes as 8 lines of 32, ".".
        assert_eq!(lines[0], "1024");
        assert_eq!(lines.len(), 10, "{public}");
        assert!(lines[1..9].iter().all(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())));
        assert_eq!(lines[9], ".");
        // exponent[128] = 65537, right-aligned.
        assert_eq!(lines[8], format!("{}010001", "0".repeat(58)));
        let private = KEY.private_hex();
        // 704 bytes: 22 lines of 32.
        assert_eq!(private.lines().count(), 1 + 22 + 1, "{private}");
        let again = CodeSignKey::from_private_hex(&private).unwrap();
        assert_eq!(again.public_hex(), public);
        assert_eq!(again.private_hex(), private);
    }

    #[test]
    fn signature_verifies_as_the_client_checks_it() {
        let dir = temp("sign");
        let f = dir.join("gah-app-0123456789abcdef");
        fs::write(&f, b"#!/bin/sh\necho hello\n").unwrap();
        let sig = KEY.sign_file(&f).unwrap();
        // sign_executable's output: 128 bytes as 4 lines of 32, then ".".
        let lines: Vec<&str> = sig.lines().collect();
        assert_eq!(lines.len(), 5, "{sig}");
        assert_eq!(lines[4], ".");
        let (md5, _) = md5_file(&f).unwrap();
        assert_eq!(md5, hex::encode(Md5::digest(b"#!/bin/sh\necho hello\n")));
        assert_eq!(check_file_signature2(&md5, &sig, &KEY.public_hex()), Ok(true));
        // Another file's MD5, another key: refused.
        let other = hex::encode(Md5::digest(b"other"));
        assert_eq!(check_file_signature2(&other, &sig, &KEY.public_hex()), Ok(false));
        let stranger = CodeSignKey::generate().unwrap();
        assert!(!check_file_signature2(&md5, &sig, &stranger.public_hex()).unwrap_or(false));
        // What the scheduler reply carries after strip_whitespace, and the XML element's text
        // with its indentation: the same answer.
        let in_xml = format!("\n{sig}    ");
        assert_eq!(check_file_signature2(&md5, &in_xml, KEY.public_hex().trim()), Ok(true));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn update_versions_signs_stages_and_describes_every_file() {
        let dir = temp("update");
        let apps = dir.join("apps");
        let vdir = version_dir(&apps, "gah", "100", "x86_64-pc-linux-gnu", "sandbox");
        fs::create_dir_all(&vdir).unwrap();
        let write = |name: &str, body: &[u8], mode: u32| {
            let p = vdir.join(name);
            fs::write(&p, body).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        };
        write("gah-app-1111111111111111", b"\x7fELF...API_VERSION_7.20.5\0...", 0o755);
        write("libboinc-2222222222222222.so.7", b"library", 0o644);
        write("rootfs-3333333333333333.tar", &[7u8; 5000], 0o644);
        fs::write(
            vdir.join("version.xml"),
            "<version>\n<file><physical_name>gah-app-1111111111111111</physical_name><main_program/><gzip/></file>\n\
             <file><physical_name>libboinc-2222222222222222.so.7</physical_name><logical_name>libboinc.so.7</logical_name><copy_file/></file>\n\
             <file><physical_name>rootfs-3333333333333333.tar</physical_name><logical_name>rootfs.tar</logical_name><gzip/></file>\n\
             </version>\n",
        )
        .unwrap();
        let download = dir.join("download");
        fs::create_dir_all(&download).unwrap();
        let url = "http://127.0.0.1:1/gah/download";
        let avs = update_versions(&apps, "gah", &KEY, &download, url).unwrap();
        assert_eq!(avs.len(), 1);
        let av = &avs[0];
        assert_eq!((av.version_num, av.platform.as_str(), av.plan_class.as_str()), (100, "x86_64-pc-linux-gnu", "sandbox"));
        let doc = Element::parse(&format!("<r>{}</r>", av.xml_doc)).unwrap();
        let infos: Vec<&Element> = doc.all("file_info").collect();
        assert_eq!(infos.len(), 3);
        for info in &infos {
            let name = info.value("name").unwrap();
            let (md5, n) = md5_file(&vdir.join(name)).unwrap();
            assert_eq!(info.value("nbytes").unwrap(), n.to_string());
            assert_eq!(info.value("url").unwrap(), format!("{url}/{name}"));
            assert_eq!(check_file_signature2(&md5, info.value("file_signature").unwrap(), &KEY.public_hex()), Ok(true), "{name}");
            assert_eq!(fs::read(download.join(name)).unwrap(), fs::read(vdir.join(name)).unwrap());
            let gz = info.value("gzipped_url").is_some();
            assert_eq!(gz, !name.starts_with("libboinc"), "{name}");
            if gz {
                let packed = fs::read(download.join(format!("{name}.gz"))).unwrap();
                assert_eq!(info.value("gzipped_nbytes").unwrap(), packed.len().to_string());
                let mut unpacked = Vec::new();
                flate2::read::GzDecoder::new(&packed[..]).read_to_end(&mut unpacked).unwrap();
                assert_eq!(unpacked, fs::read(vdir.join(name)).unwrap());
            }
            assert_eq!(info.child("executable").is_some(), name.starts_with("gah-app"), "{name}");
        }
        let app_version = doc.child("app_version").unwrap();
        assert_eq!(app_version.value("api_version"), Some("7.20.5"));
        let refs: Vec<(&str, Option<&str>, bool, bool)> = app_version
            .all("file_ref")
            .map(|r| {
                (r.value("file_name").unwrap(), r.value("open_name"), r.child("copy_file").is_some(), r.child("main_program").is_some())
            })
            .collect();
        assert_eq!(
            refs,
            [
                ("gah-app-1111111111111111", None, false, true),
                ("libboinc-2222222222222222.so.7", Some("libboinc.so.7"), true, false),
                ("rootfs-3333333333333333.tar", Some("rootfs.tar"), false, false)
            ]
        );
        // The scheduler's additions, and no other <cmdline>.
        let sent = av.scheduler_xml(2.0, 4e9, " --memory_size_mb 2048");
        let sent_doc = Element::parse(&format!("<r>{sent}</r>")).unwrap();
        let sent_av = sent_doc.child("app_version").unwrap();
        assert_eq!(sent_av.value("platform"), Some("x86_64-pc-linux-gnu"));
        assert_eq!(sent_av.value("plan_class"), Some("sandbox"));
        assert_eq!(sent_av.value("cmdline"), Some("--memory_size_mb 2048"));
        assert_eq!(sent_av.all("cmdline").count(), 1);
        assert!(!av.scheduler_xml(1.0, 1e9, "").contains("<cmdline>"));

        // Immutable download files; a .sig file is taken as it is; a listed file must exist.
        let again = update_versions(&apps, "gah", &KEY, &download, url).unwrap();
        assert_eq!(again[0].files.len(), 3);
        write("libboinc-2222222222222222.so.7", b"changed", 0o644);
        let e = update_versions(&apps, "gah", &KEY, &download, url).unwrap_err();
        assert!(format!("{e:#}").contains("BOINC files are immutable"), "{e:#}");
        write("libboinc-2222222222222222.so.7", b"library", 0o644);
        fs::write(vdir.join("rootfs-3333333333333333.tar.sig"), "00\n.\n").unwrap();
        let signed = update_versions(&apps, "gah", &KEY, &download, url).unwrap();
        let rootfs = signed[0].files.iter().find(|f| f.physical_name.starts_with("rootfs")).unwrap();
        assert_eq!(rootfs.signature, "00\n.\n");
        fs::remove_file(vdir.join("rootfs-3333333333333333.tar")).unwrap();
        let e = update_versions(&apps, "gah", &KEY, &download, url).unwrap_err();
        assert!(format!("{e:#}").contains("is listed in version.xml but not present"), "{e:#}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn versions_and_api_versions_parse_as_update_versions_does() {
        assert_eq!(parse_version("100"), Some(100));
        assert_eq!(parse_version("1.02"), Some(102));
        assert_eq!(parse_version("x"), None);
        let dir = temp("api");
        let f = dir.join("app");
        fs::write(&f, b"junk API_VERSION_x\0API_VERSION_7.20.5 more\0API_VERSION_8.0.2\0").unwrap();
        assert_eq!(api_version_in(&f), "8.0.2");
        let _ = fs::remove_dir_all(&dir);
    }
}
