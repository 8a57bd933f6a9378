//! `gah-publish --resign`: a whitelist that expired is signed again, without a new revision,
//! and readers take the repository again.

mod common;

use std::fs;

use common::NAME;

#[test]
fn an_expired_whitelist_is_signed_again_and_the_revision_stays() {
    let dir = tempfile::tempdir().unwrap();
    let (src, repo, keys) = (dir.path().join("src"), dir.path().join("repo"), dir.path().join("keys"));
    common::make_tree(&src);
    gah_publish::publish(&src, &repo, NAME, &keys).unwrap();
    let master = gah_publish::keys::master_pub_path(&keys, NAME);
    let (loaded, _) = gah_publish::keys::load_or_generate(&keys, NAME).unwrap();
    let now = i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()).unwrap();
    let text = gah_publish::signed::whitelist_text(
        now - 40 * 86_400,
        now - 10 * 86_400,
        NAME,
        &gah_publish::signed::fingerprint(&loaded.cert_der),
    );
    fs::write(repo.join(".cvmfswhitelist"), gah_publish::signed::sign_whitelist(&text, &loaded.master).unwrap()).unwrap();
    assert!(matches!(gah_publish::verify(&repo, NAME, &master), Err(gah_publish::VerifyError::Expired(_))));
    let manifest = fs::read(repo.join(".cvmfspublished")).unwrap();

    gah_publish::resign(&repo, NAME, &keys).unwrap();
    let reader = gah_publish::verify(&repo, NAME, &master).unwrap();
    assert_eq!(reader.manifest.revision, 1);
    assert_eq!(fs::read(repo.join(".cvmfspublished")).unwrap(), manifest, "the manifest is untouched");
    // Without the keys it made the repository with, nothing is signed (and none are made).
    let elsewhere = dir.path().join("no-keys");
    assert!(gah_publish::resign(&repo, NAME, &elsewhere).is_err());
    assert!(!elsewhere.exists() || fs::read_dir(&elsewhere).unwrap().next().is_none());
    // Another repository's keys: refused, the whitelist untouched.
    let other = dir.path().join("other-keys");
    gah_publish::keys::load_or_generate(&other, NAME).unwrap();
    let whitelist = fs::read(repo.join(".cvmfswhitelist")).unwrap();
    let e = gah_publish::resign(&repo, NAME, &other).unwrap_err().to_string();
    assert!(e.contains("wrong keys folder"), "{e}");
    assert_eq!(fs::read(repo.join(".cvmfswhitelist")).unwrap(), whitelist);
}
