//! `gah`: gentoo@home on one machine: the local pipeline (`gah run`) and the results.

// A command-line program: it talks to its user on stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod deploy;
mod layout;
mod localise;
mod plane;
mod results;
mod run;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// gentoo@home: build and test Gentoo package configurations in isolated guests.
///
/// `gah run` runs the whole chain locally on the embedded default (the test overlay in
/// vm-images/overlay): the work generator plans every valid USE configuration × compiler,
/// each job runs as two replicas through gah-app, the validator checks and compares them,
/// the assimilator stores the canonical outcome in the results database. Only the binary
/// packages an accepted job's replicas built alike join the store (.cache/binpkgs, published
/// at /binpkgs) that later jobs' guests read. Then each build or test failure is localised: follow-up builds, chosen
/// by gah-localise, until its minimal failing set of flags and compiler is known (printed,
/// and stored for `gah results localised` and `gah results bug`).
///
/// Examples:
///   gah run                          # everything, backend chosen automatically
///   gah run --only bzip2 --limit 2   # a quick look
///   gah results                      # what the database says
#[derive(Debug, Parser)]
#[command(name = "gah", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Run the whole pipeline on the embedded overlay and print a table of outcomes.
    Run {
        /// auto (KVM if it works, else the sandbox), vm, or sandbox.
        #[arg(long, default_value = "auto")]
        backend: String,
        /// Replicas per configuration (2 lets the validator compare them).
        #[arg(long, default_value_t = 2)]
        replicas: u32,
        /// Only packages whose category/name contains this text.
        #[arg(long)]
        only: Option<String>,
        /// Only configurations with these flag values, e.g. `--use 'fixture-compile-error
        /// -jemalloc'` (other flags any value).
        #[arg(long = "use", value_name = "FLAGS", allow_hyphen_values = true)]
        use_flags: Option<String>,
        /// At most this many configurations.
        #[arg(long)]
        limit: Option<usize>,
        /// Wall-clock limit per configuration, in seconds.
        #[arg(long, default_value_t = 3600)]
        timeout_secs: u64,
        /// Covering strength: 1 builds every flag value at least once, 2 every pair of values.
        #[arg(long, default_value_t = 1)]
        t: usize,
        /// Build every configuration with every compiler (the default builds the default
        /// configuration with each compiler and the others with one compiler each, in turn).
        #[arg(long)]
        cross_compilers: bool,
        /// Print the configurations that would run, and stop.
        #[arg(long)]
        dry_run: bool,
        /// Store the outcomes in this results database [default: results/results.sqlite in
        /// the checkout].
        #[arg(long, value_name = "PATH")]
        db: Option<std::path::PathBuf>,
        /// Do not localise failures: by default each build or test failure gets follow-up
        /// builds until its minimal failing set of flags (and compiler) is known.
        #[arg(long)]
        no_localise: bool,
        /// Most follow-up builds per failure (its rerun included).
        #[arg(long, default_value_t = 32)]
        max_followups: usize,
    },
    /// What the results database says: list, fails, matrix, history, changes, blame, bug.
    Results(results::ResultsArgs),
    /// Install gentoo@home into a BOINC project made by make_project: programs into bin/,
    /// templates, plan classes, the app and its versions (BOINC's xadd and update_versions),
    /// gah.conf and the daemons in config.xml. Idempotent; says what it did. docs/DEPLOY.md.
    ///
    /// Example:
    ///   gah deploy --project ~/projects/gah --repo vm-images/overlay --distfiles .cache/distfiles
    #[command(verbatim_doc_comment)]
    Deploy(deploy::DeployArgs),
    /// The QA web page over the results database: overview, package matrices, cell pages
    /// with the log and the bug text, dependency view, search, Atom feeds and the JSON API
    /// behind every page. Writes nothing (opening applies pending migrations); listens on 127.0.0.1 unless told otherwise.
    ///
    /// Examples:
    ///   gah serve                                   # the checkout's database, http://127.0.0.1:8080
    ///   GAH_RESULTS_DB=/srv/gah/results.sqlite gah serve --listen 0.0.0.0:8080 \
    ///       --public-url https://qa.example.org --repo /var/db/repos/gentoo
    #[command(verbatim_doc_comment)]
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("GAH_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let cli = Cli::parse();
    let result = match cli.mode {
        Mode::Run {
            backend,
            replicas,
            only,
            use_flags,
            limit,
            timeout_secs,
            t,
            cross_compilers,
            dry_run,
            db,
            no_localise,
            max_followups,
        } => {
            let use_flags = use_flags.map(|text| gah_core::job::UseAssignment::from_package_use(&text).map_err(anyhow::Error::msg));
            layout::Layout::discover().and_then(|mut layout| {
                if let Some(db) = db {
                    layout.db = db;
                }
                let use_flags = use_flags.transpose()?;
                run::run(
                    &layout,
                    &run::RunConfig {
                        backend,
                        replicas: replicas.max(1),
                        only,
                        use_flags,
                        limit,
                        timeout_secs,
                        t: t.max(1),
                        cross_compilers,
                        dry_run,
                        localise: !no_localise,
                        max_followups: max_followups.max(1),
                    },
                )
            })
        }
        // A server has the database and no checkout: with --db, a project's gah.conf or
        // $GAH_RESULTS_DB, no layout.
        Mode::Results(args) => {
            let mut out = std::io::stdout().lock();
            match results::explicit_db(&args) {
                Ok(Some(db)) => results::command(args, &db, &mut out),
                Ok(None) => layout::Layout::discover().and_then(|layout| results::command(args, &layout.db, &mut out)),
                Err(e) => Err(e),
            }
        }
        Mode::Deploy(args) => layout::Layout::discover().and_then(|layout| deploy::deploy(&args, &layout.root)),
        Mode::Serve(args) => serve::serve(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // As ripgrep does: a reader that stopped reading (`gah results | head`) is not an
        // error; there is nobody left to tell.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gah: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// True when `e` comes from writing to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let kind = cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| cause.downcast_ref::<serde_json::Error>().and_then(serde_json::Error::io_error_kind));
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}
