//! `gah-publish`: publishes a folder as the next revision of a CernVM-FS repository (a folder
//! any web server can serve as stratum 0), or verifies such a repository.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;

/// Publish SOURCE_DIR as the next revision of the CernVM-FS repository NAME in REPO_DIR.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The repository folder (the web server's document root for this repository).
    #[arg(long)]
    repo_dir: PathBuf,
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
    if cli.verify {
        let reader =
            gah_publish::verify(&cli.repo_dir, &cli.name, &master_pub).with_context(|| format!("verifying {}", cli.repo_dir.display()))?;
        let files = reader.check_all().context("reading every file")?;
        println!("{}: revision {} verified, {files} files read and checked", cli.name, reader.manifest.revision);
        return Ok(());
    }
    let Some(source) = cli.source_dir else { bail!("give the SOURCE_DIR to publish (or --verify)") };
    let p = gah_publish::publish(&source, &cli.repo_dir, &cli.name, &cli.keys)
        .with_context(|| format!("publishing {} into {}", source.display(), cli.repo_dir.display()))?;
    if p.keys_generated {
        println!("made new keys in {}; readers must be given {} (the public master key)", cli.keys.display(), p.master_pub.display());
    }
    println!(
        "{} revision {}: root catalog {}, {} objects written ({} bytes), {} catalogs written, {} kept",
        cli.name, p.revision, p.root_catalog_hash, p.objects_written, p.bytes_written, p.catalogs_written, p.catalogs_kept
    );
    Ok(())
}
