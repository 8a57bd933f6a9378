//! The repository's keys, in the files and formats `/etc/cvmfs/keys` holds them:
//! `<name>.masterkey` (signs the whitelist; PKCS #1 PEM), `<name>.pub` (its public half,
//! SubjectPublicKeyInfo PEM: what readers are given out of band), `<name>.key` (signs the
//! manifest) and `<name>.crt` (its self-signed X.509 certificate, PEM). Generated when the
//! folder has none of them; refused when it has only some.

use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::{RsaPrivateKey, RsaPublicKey};
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::{DecodePem, Encode, EncodePem};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;
use x509_cert::Certificate;

use crate::PublishError;

/// CernVM-FS's key size.
const BITS: usize = 2048;
/// The certificate outlives many whitelists; the whitelist is what expires.
const CERT_DAYS: u64 = 10 * 365;

pub struct Keys {
    pub master: RsaPrivateKey,
    pub key: RsaPrivateKey,
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
}

fn paths(dir: &Path, name: &str) -> [PathBuf; 4] {
    ["masterkey", "pub", "key", "crt"].map(|ext| dir.join(format!("{name}.{ext}")))
}

/// The public master key file a reader trusts.
pub fn master_pub_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pub"))
}

/// Loads the keys, or makes them when the folder has none; `true` when they were made.
pub fn load_or_generate(dir: &Path, name: &str) -> Result<(Keys, bool), PublishError> {
    let files = paths(dir, name);
    let present = files.iter().filter(|p| p.exists()).count();
    match present {
        4 => Ok((load(&files)?, false)),
        0 => Ok((generate(dir, name, &files)?, true)),
        _ => Err(PublishError::Keys(format!(
            "{} holds only some of {name}.masterkey, .pub, .key, .crt: refusing to replace them",
            dir.display()
        ))),
    }
}

fn read(path: &Path) -> Result<String, PublishError> {
    fs::read_to_string(path).map_err(|e| PublishError::io(path, e))
}

fn load([master, _, key, crt]: &[PathBuf; 4]) -> Result<Keys, PublishError> {
    let bad = |p: &Path, e: &dyn std::fmt::Display| PublishError::Keys(format!("{}: {e}", p.display()));
    let master_key = RsaPrivateKey::from_pkcs1_pem(&read(master)?).map_err(|e| bad(master, &e))?;
    let key_key = RsaPrivateKey::from_pkcs1_pem(&read(key)?).map_err(|e| bad(key, &e))?;
    let cert_pem = read(crt)?;
    let cert = Certificate::from_pem(cert_pem.as_bytes()).map_err(|e| bad(crt, &e))?;
    let cert_der = cert.to_der().map_err(|e| bad(crt, &e))?;
    Ok(Keys { master: master_key, key: key_key, cert_pem, cert_der })
}

fn generate(dir: &Path, name: &str, files: &[PathBuf; 4]) -> Result<Keys, PublishError> {
    let err = |e: &dyn std::fmt::Display| PublishError::Keys(e.to_string());
    let mut rng = rsa::rand_core::OsRng;
    let master = RsaPrivateKey::new(&mut rng, BITS).map_err(|e| err(&e))?;
    let key = RsaPrivateKey::new(&mut rng, BITS).map_err(|e| err(&e))?;
    let cert = self_signed(&key, name).map_err(|e| err(&e))?;
    let cert_pem = cert.to_pem(LineEnding::LF).map_err(|e| err(&e))?;
    let cert_der = cert.to_der().map_err(|e| err(&e))?;

    fs::create_dir_all(dir).map_err(|e| PublishError::io(dir, e))?;
    let master_pem = master.to_pkcs1_pem(LineEnding::LF).map_err(|e| err(&e))?;
    let pub_pem = master.to_public_key().to_public_key_pem(LineEnding::LF).map_err(|e| err(&e))?;
    let key_pem = key.to_pkcs1_pem(LineEnding::LF).map_err(|e| err(&e))?;
    let contents: [(&[u8], u32); 4] =
        [(master_pem.as_bytes(), 0o600), (pub_pem.as_bytes(), 0o644), (key_pem.as_bytes(), 0o600), (cert_pem.as_bytes(), 0o644)];
    for (path, (bytes, mode)) in files.iter().zip(contents) {
        gah_util::atomic::write(path, bytes).map_err(|e| PublishError::Keys(format!("{}: {e}", path.display())))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| PublishError::io(path, e))?;
    }
    Ok(Keys { master, key, cert_pem, cert_der })
}

/// `openssl req -x509 -subj /CN=<name>`'s equivalent.
fn self_signed(key: &RsaPrivateKey, name: &str) -> Result<Certificate, Box<dyn std::error::Error>> {
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key.clone());
    let spki = SubjectPublicKeyInfoOwned::from_key(key.to_public_key())?;
    let serial = SerialNumber::from(u32::from_le_bytes(rand_bytes()));
    let validity = Validity::from_now(Duration::from_secs(CERT_DAYS * 86_400))?;
    let subject = Name::from_str(&format!("CN={name}"))?;
    let builder = CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, &signer)?;
    Ok(builder.build::<rsa::pkcs1v15::Signature>()?)
}

fn rand_bytes() -> [u8; 4] {
    use rsa::rand_core::RngCore;
    let mut b = [0u8; 4];
    rsa::rand_core::OsRng.fill_bytes(&mut b);
    b[3] &= 0x7f; // a positive serial number
    b
}

/// The master public key from its `.pub` file.
pub fn read_master_pub(path: &Path) -> Result<RsaPublicKey, crate::VerifyError> {
    let pem = fs::read_to_string(path).map_err(|e| crate::VerifyError::Io(path.display().to_string(), e))?;
    RsaPublicKey::from_public_key_pem(&pem).map_err(|e| crate::VerifyError::Malformed("master key", e.to_string()))
}

/// The public key inside a certificate (PEM or DER).
pub fn certificate_key(bytes: &[u8]) -> Result<(RsaPublicKey, Vec<u8>), crate::VerifyError> {
    use x509_cert::der::Decode;
    let bad = |e: &dyn std::fmt::Display| crate::VerifyError::Malformed("certificate", e.to_string());
    let cert =
        if bytes.starts_with(b"-----") { Certificate::from_pem(bytes) } else { Certificate::from_der(bytes) }.map_err(|e| bad(&e))?;
    let der = cert.to_der().map_err(|e| bad(&e))?;
    let spki = cert.tbs_certificate.subject_public_key_info.to_der().map_err(|e| bad(&e))?;
    let key = RsaPublicKey::from_public_key_der(&spki).map_err(|e| bad(&e))?;
    Ok((key, der))
}
