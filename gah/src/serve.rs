//! `gah serve`: starts `gah_qa::web` over the database `gah results` would read.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

/// Options of `gah serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The results database [default: the project's gah.conf (./ or ../), else
    /// $GAH_RESULTS_DB, else results/results.sqlite in the checkout].
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// The address to listen on. Anything but loopback exposes the page to the network: put
    /// it behind the project's web server.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// The URL people reach the page by, for the feeds' absolute links [default:
    /// http://<listen>].
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// An ebuild repository whose metadata/md5-cache gives the IUSE defaults the package
    /// page marks differing flags against (repeatable) [default: the checkout's embedded
    /// overlay, when there is a checkout].
    #[arg(long = "repo", value_name = "DIR")]
    repos: Vec<PathBuf>,
    /// Seconds between looks for new outcomes (the overview is recomputed when there are).
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    refresh_secs: u64,
}

/// Serves until interrupted.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let over = gah_core::project::Overrides { results_db: args.db.clone(), ..Default::default() };
    let checkout = crate::layout::Layout::discover().ok();
    let project = gah_core::project::resolve_here(&over)?;
    // The sweep's progress, from the work generator's queue when the project names one.
    let progress = project.queue_dir.clone().map(|dir| {
        gah_qa::web::ProgressSource(Arc::new(move || {
            let queue = gah_workgen::queue::Queue::open(&dir).map_err(|e| tracing::warn!(error = %e, "reading the queue")).ok()?;
            let (planned, done) = queue.progress().map_err(|e| tracing::warn!(error = %e, "reading the queue")).ok()?;
            Some(gah_qa::wire::Progress { planned, done })
        }))
    });
    let db = match project.results_db {
        Some(db) => db,
        None => match &checkout {
            Some(layout) => layout.db.clone(),
            None => anyhow::bail!("no results database: give --db, set GAH_RESULTS_DB, or run in a BOINC project or a checkout"),
        },
    };
    let mut repos = args.repos;
    if repos.is_empty() {
        repos.extend(checkout.map(|layout| layout.overlay));
    }
    let options = gah_qa::web::ServeOptions {
        db: db.clone(),
        listen: args.listen,
        public_url: args.public_url,
        repos,
        refresh: Duration::from_secs(args.refresh_secs.max(1)),
        progress,
    };
    gah_qa::web::run(options, |addr| {
        // Scripts and people starting it wait for this line.
        println!("gah serve: http://{addr}/ over {}", db.display());
    })?;
    Ok(())
}
