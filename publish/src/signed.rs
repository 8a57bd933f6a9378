//! CernVM-FS's two signed "letters": the manifest `.cvmfspublished` and the whitelist
//! `.cvmfswhitelist`. Both are key-letter lines, then `--`, the SHA-1 (hex) of those lines,
//! and a binary RSA signature of that hex string. They differ in how they sign, as
//! `crypto/signature.cc` does: the manifest with the certificate's key (`Sign`: PKCS #1 v1.5
//! over SHA-1 of the hex string, i.e. `EVP_SignInit(sha1)`), the whitelist with the master
//! key (`SignRsa`: `RSA_private_encrypt` of the bare hex string with PKCS #1 padding, no
//! digest wrapped around it).

use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha1::{Digest, Sha1};

use crate::VerifyError;

/// The manifest's key-letter lines in `Manifest::ExportString`'s order.
pub struct ManifestFields<'a> {
    pub root_catalog: &'a str,
    pub root_catalog_size: u64,
    pub ttl: u64,
    pub revision: u64,
    pub name: &'a str,
    pub certificate: &'a str,
    pub history: &'a str,
    pub timestamp: i64,
}

/// MD5 of the root path "" (the `R` line): what every CernVM-FS manifest carries.
pub const ROOT_PATH_HASH: &str = "d41d8cd98f00b204e9800998ecf8427e";

pub fn manifest_text(m: &ManifestFields) -> String {
    format!(
        "C{}\nB{}\nR{ROOT_PATH_HASH}\nD{}\nS{}\nGno\nAno\nN{}\nX{}\nH{}\nT{}\n",
        m.root_catalog, m.root_catalog_size, m.ttl, m.revision, m.name, m.certificate, m.history, m.timestamp
    )
}

fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

/// The manifest, signed with the certificate's private key.
pub fn sign_manifest(text: &str, key: &RsaPrivateKey) -> Vec<u8> {
    let checksum = sha1_hex(text.as_bytes());
    let signature: Signature = SigningKey::<Sha1>::new(key.clone()).sign(checksum.as_bytes());
    let mut out = format!("{text}--\n{checksum}\n").into_bytes();
    out.extend_from_slice(&signature.to_bytes());
    out
}

/// The whitelist, signed with the master key.
pub fn sign_whitelist(text: &str, master: &RsaPrivateKey) -> Result<Vec<u8>, rsa::Error> {
    let checksum = sha1_hex(text.as_bytes());
    let signature = master.sign(Pkcs1v15Sign::new_unprefixed(), checksum.as_bytes())?;
    let mut out = format!("{text}--\n{checksum}\n").into_bytes();
    out.extend_from_slice(&signature);
    Ok(out)
}

/// A letter cut into its lines, its printed checksum and its signature (`CutLetter`); the
/// checksum is checked against the lines here.
pub struct Letter<'a> {
    pub text: &'a str,
    pub checksum: &'a str,
    pub signature: &'a [u8],
}

pub fn cut_letter<'a>(bytes: &'a [u8], what: &'static str) -> Result<Letter<'a>, VerifyError> {
    let bad = |why: &str| VerifyError::Malformed(what, why.to_owned());
    // The lines end at the first line starting with "--".
    let mut start = 0;
    let split = loop {
        if bytes[start..].starts_with(b"--") {
            break start;
        }
        match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(n) => start += n + 1,
            None => return Err(bad("no '--' line: unsigned")),
        }
    };
    let text = std::str::from_utf8(&bytes[..split]).map_err(|_| bad("not UTF-8"))?;
    let after = &bytes[split..];
    let nl = after.iter().position(|&b| b == b'\n').ok_or_else(|| bad("no checksum"))?;
    let rest = &after[nl + 1..];
    let nl = rest.iter().position(|&b| b == b'\n').ok_or_else(|| bad("no checksum"))?;
    let checksum = std::str::from_utf8(&rest[..nl]).map_err(|_| bad("checksum not text"))?;
    if checksum != sha1_hex(text.as_bytes()) {
        return Err(VerifyError::Checksum(what));
    }
    Ok(Letter { text, checksum, signature: &rest[nl + 1..] })
}

/// The manifest's signature, by the certificate's public key.
pub fn verify_manifest_signature(letter: &Letter, key: &RsaPublicKey) -> Result<(), VerifyError> {
    let signature = Signature::try_from(letter.signature).map_err(|_| VerifyError::Signature("manifest"))?;
    VerifyingKey::<Sha1>::new(key.clone()).verify(letter.checksum.as_bytes(), &signature).map_err(|_| VerifyError::Signature("manifest"))
}

/// The whitelist's signature, by the master public key.
pub fn verify_whitelist_signature(letter: &Letter, master: &RsaPublicKey) -> Result<(), VerifyError> {
    master
        .verify(Pkcs1v15Sign::new_unprefixed(), letter.checksum.as_bytes(), letter.signature)
        .map_err(|_| VerifyError::Signature("whitelist"))
}

/// Whitelist lines: issue time, `E` expiry (both `YYYYMMDDhhmmss`, UTC), `N` repository
/// name, then certificate fingerprints (SHA-1 of the DER certificate, upper-case hex pairs
/// joined by ':'), as `cvmfs_server` writes them.
pub fn whitelist_text(now: i64, expires: i64, name: &str, fingerprint: &str) -> String {
    format!("{}\nE{}\nN{name}\n{fingerprint}\n", compact_utc(now), compact_utc(expires))
}

/// `AB:CD:...` of a DER certificate (`SignatureManager::FingerprintCertificate`).
pub fn fingerprint(cert_der: &[u8]) -> String {
    Sha1::digest(cert_der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// Unix seconds as `YYYYMMDDhhmmss` (UTC).
pub fn compact_utc(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}{m:02}{d:02}{:02}{:02}{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `YYYYMMDDhhmmss` (UTC) as Unix seconds.
pub fn parse_compact_utc(s: &str) -> Option<i64> {
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (hh, mm, ss) = (n(8..10)?, n(10..12)?, n(12..14)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

// Howard Hinnant's civil-calendar algorithms (proleptic Gregorian, day 0 = 1970-01-01).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_time_round_trips() {
        for t in [0, 951_782_400, 1_700_000_000, 4_102_444_799] {
            assert_eq!(parse_compact_utc(&compact_utc(t)), Some(t), "{t}");
        }
        assert_eq!(compact_utc(1_700_000_000), "20231114221320");
    }
}
