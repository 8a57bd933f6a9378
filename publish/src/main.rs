//! `gah-publish`: publishes a folder as the next revision of a CernVM-FS repository (a folder
//! any web server can serve as stratum 0), verifies such a repository, or reads paths of one
//! served over HTTP through a host cache (what a volunteer's side does).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;

/// Publish SOURCE_DIR as the next revision of the CernVM-FS repository NAME in REPO_DIR.
///
/// Examples:
///   gah-publish --repo-dir /srv/cvmfs/gentoo.gah --keys /etc/gah/keys tree/   # publish
///   gah-publish --repo-dir /srv/cvmfs/gentoo.gah --keys /etc/gah/keys --verify
///   gah-publish --url http://host/cvmfs/gentoo.gah --keys pub/ --cache /var/cache/gah \
///               --get /repos/gah --out job/repo                            # read over HTTP
#[derive(Parser)]
#[command(version, about, verbatim_doc_comment)]
struct Cli {
    /// The repository folder (the web server's document root for this repository).
    #[arg(long, required_unless_present = "url")]
    repo_dir: Option<PathBuf>,
    /// Read the repository served at this URL instead (verified against KEYS/NAME.pub,
    /// through --cache): the paths --get names, written under --out.
    #[arg(long, requires = "cache", conflicts_with_all = ["repo_dir", "verify"])]
    url: Option<String>,
    /// The host's cache for --url (objects kept by last use; made when absent).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Most bytes the cache keeps.
    #[arg(long, default_value_t = 4 << 30)]
    cache_quota: u64,
    /// An HTTP proxy for --url (none by default, whatever the environment says).
    #[arg(long)]
    proxy: Option<String>,
    /// With --url: a path in the repository (a directory or a file) to read; repeat.
    #[arg(long, requires = "url")]
    get: Vec<String>,
    /// With --url: downloads at a time when a --get path is a folder (gah-app's number);
    /// 1 reads one object after another.
    #[arg(long, default_value_t = gah_publish::fetch::PREFETCH_THREADS, requires = "url")]
    threads: usize,
    /// With --url: where the --get paths are written (each under its last name); nothing is
    /// written without it (the paths are only read and checked).
    #[arg(long, requires = "url")]
    out: Option<PathBuf>,
    /// The fully qualified repository name.
    #[arg(long, default_value = "gentoo.gah")]
    name: String,
    /// Where the keys are (NAME.masterkey, .pub, .key, .crt); made there when absent.
    #[arg(long, default_value = "keys")]
    keys: PathBuf,
    /// Verify REPO_DIR instead of publishing: whitelist, manifest, and every object of the
    /// current revision, against KEYS/NAME.pub.
    #[arg(long)]
    verify: bool,
    /// Sign the whitelist of REPO_DIR again (valid 30 days from now) without publishing:
    /// readers refuse an expired whitelist, so run it from cron when publications are rarer.
    #[arg(long, conflicts_with_all = ["verify", "source_dir"])]
    resign: bool,
    /// The tree to publish.
    source_dir: Option<PathBuf>,
}

#[allow(clippy::print_stdout)]
fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let master_pub = gah_publish::keys::master_pub_path(&cli.keys, &cli.name);
    if let Some(url) = &cli.url {
        return read_over_http(&cli, url, &master_pub);
    }
    let repo_dir = cli.repo_dir.clone().expect("clap requires --repo-dir without --url");
    if cli.resign {
        gah_publish::resign(&repo_dir, &cli.name, &cli.keys).with_context(|| format!("re-signing {}", repo_dir.display()))?;
        println!("{}: whitelist signed again, valid {} days", cli.name, gah_publish::WHITELIST_DAYS);
        return Ok(());
    }
    if cli.verify {
        let reader = gah_publish::verify(&repo_dir, &cli.name, &master_pub).with_context(|| format!("verifying {}", repo_dir.display()))?;
        let files = reader.check_all().context("reading every file")?;
        println!("{}: revision {} verified, {files} files read and checked", cli.name, reader.manifest.revision);
        return Ok(());
    }
    let Some(source) = cli.source_dir else { bail!("give the SOURCE_DIR to publish (or --verify)") };
    let p = gah_publish::publish(&source, &repo_dir, &cli.name, &cli.keys)
        .with_context(|| format!("publishing {} into {}", source.display(), repo_dir.display()))?;
    if p.keys_generated {
        println!("made new keys in {}; readers must be given {} (the public master key)", cli.keys.display(), p.master_pub.display());
    }
    println!(
        "{} revision {}: root catalog {}, {} objects written ({} bytes), {} catalogs written, {} kept",
        cli.name, p.revision, p.root_catalog_hash, p.objects_written, p.bytes_written, p.catalogs_written, p.catalogs_kept
    );
    Ok(())
}

/// `--url`: verifies the served repository through the cache and reads (or writes out) the
/// `--get` paths; says what it downloaded.
#[allow(clippy::print_stdout)]
fn read_over_http(cli: &Cli, url: &str, master_pub: &std::path::Path) -> anyhow::Result<()> {
    use gah_publish::fetch::{materialise, Cache, Http, Links};
    use std::sync::atomic::Ordering;
    let cache_dir = cli.cache.as_deref().expect("clap requires --cache with --url");
    let cache = Cache::open(cache_dir, cli.cache_quota).with_context(|| format!("cache {}", cache_dir.display()))?;
    let http = std::sync::Arc::new(Http::new(url, &cli.name, cache, cli.proxy.as_deref())?);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let reader = gah_publish::verify_from(http.clone(), &cli.name, master_pub, i64::try_from(now).unwrap_or(i64::MAX))
        .with_context(|| format!("verifying {url}"))?;
    let (mut files, mut bytes) = (0, 0);
    for path in &cli.get {
        reader.prefetch(path, cli.threads).with_context(|| path.clone())?;
        let got = match &cli.out {
            Some(out) => {
                std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
                let name = path.trim_end_matches('/').rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("root");
                materialise(&reader, path, &out.join(name), Links::Keep).with_context(|| format!("{path} into {}", out.display()))?
            }
            None => {
                let scratch = tempfile::tempdir().context("a temporary folder")?;
                materialise(&reader, path, &scratch.path().join("x"), Links::Keep).with_context(|| path.clone())?
            }
        };
        files += got.files;
        bytes += got.bytes;
    }
    println!(
        "{} revision {}: {files} files ({bytes} bytes) read; downloaded {} objects and top-level files, {} bytes",
        cli.name,
        reader.manifest.revision,
        http.downloads.load(Ordering::Relaxed),
        http.downloaded_bytes.load(Ordering::Relaxed)
    );
    Ok(())
}
