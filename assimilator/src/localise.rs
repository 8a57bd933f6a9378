//! Failure localisation (issue 13) as the results database's writer does it: after outcomes
//! are stored, [`catch_up`] moves the localisations on. BOINC's assimilator
//! ([`crate::boinc`]) takes this step after each workunit, `gah run` after each job; the
//! work generator only reads the running localisations and submits each one's pending
//! follow-up (`gah_workgen::followup`), so data on the server flows one way.
//!
//! [`catch_up`] reads `outcomes` and `infra_failures` past its marks (kept in the results
//! database), one step at a time under an exclusive lock (two assimilators never compute
//! from the same state), and for each new row, in one transaction with the mark's move:
//! - a result of a running localisation's pending follow-up (its job id: the same
//!   configuration, whoever submitted it) is recorded in that localisation, which then
//!   stores its next follow-up or its conclusion. A lost workunit of it (BOINC's
//!   infrastructure failure) tells nothing about the build: the follow-up is asked for again
//!   (`next_tries`, a new workunit), and only after [`MAX_TRIES`] lost ones is it recorded as
//!   `infra_error` and the localisation moves on;
//! - a real failure (`build_failed`, `test_failed`) starts a localisation (its first
//!   follow-up: the failing configuration run again), unless it answers a localisation of
//!   the same status, or a finished localisation of the same ebuild and status has a cause
//!   this configuration shows; while one of the same ebuild and status runs it waits
//!   (`localisations_waiting`) and starts afterwards only if that one's cause does not
//!   explain it (on a server the failing cells of an ebuild come in together: one flag that
//!   breaks the build fails half of them).
//!
//! The evidence is stored, never the localiser: each step rebuilds it from the stored
//! evidence ([`Localiser::resume_stored`]) and the ebuild as it is now ([`Ebuilds`]). A
//! localisation whose ebuild is gone, unreadable, or changed so that it cannot go on ends
//! inconclusive, saying why; only a repository that cannot be read at all (being replaced,
//! say) stops the step, which is then taken again with the next result.
//!
//! Known limits: nothing times out (a follow-up whose workunits are never assimilated keeps
//! its localisation running, and the failures waiting for it waiting); a results database
//! upgraded while the old work generator had not read its last rows leaves those rows
//! unlocalised (migration 0009 starts after them).

use std::cell::OnceCell;
use std::path::{Path, PathBuf};

use gah_core::db::{
    Database, DbError, EventSource, Filter, LocalisationProgress, LocalisationState, LocalisationStep, Page, StoredOutcome,
};
use gah_core::job::{Cell, Compiler};
use gah_core::localisation::{Conclusion, Evidence};
use gah_core::outcome::Status;
use gah_ebuild::{Ebuild, Profile, Repository, Space};
use gah_localise::{probe_of, Localiser, Settings, Step};

/// Lost workunits of one follow-up before it counts as `infra_error`.
pub const MAX_TRIES: u32 = 3;

/// Where the step finds an ebuild's metadata as it is now.
pub trait Ebuilds {
    /// The ebuild `cpv` of repository `repo`: `Ok(Err(why))` when it is not there any more
    /// or cannot be parsed (for good); `Err` when the repository cannot be read now.
    fn ebuild(&self, repo: &str, cpv: &str) -> Result<Result<Ebuild, String>, String>;
    /// The profile the ebuild's flags are seen under (forced and masked flags).
    fn profile(&self) -> &Profile;
}

/// Repositories read into memory (`gah run`'s overlay, tests).
pub struct LoadedRepos<'a> {
    /// The repositories.
    pub repos: &'a [Repository],
    /// Their profile.
    pub profile: &'a Profile,
}

impl Ebuilds for LoadedRepos<'_> {
    fn ebuild(&self, repo: &str, cpv: &str) -> Result<Result<Ebuild, String>, String> {
        Ok(gah_ebuild::repo::find_ebuild(self.repos, repo, cpv).cloned().ok_or_else(|| format!("{cpv} is no longer in the repository")))
    }
    fn profile(&self) -> &Profile {
        self.profile
    }
}

/// A repository's metadata on disk, read one md5-cache entry at a time (the server's
/// assimilator, which runs once per workunit: `gah.conf`'s `localise_repo`).
pub struct MetadataDir {
    name: String,
    path: PathBuf,
    profile_path: Option<PathBuf>,
    profile: OnceCell<Profile>,
}

impl MetadataDir {
    /// The repository at `path` under the profile at `profile` (default: amd64 Linux's
    /// flags, as the work generator plans). Refused while it has no `metadata/md5-cache` or
    /// no name of its own (`profiles/repo_name`, `metadata/layout.conf`): a folder being
    /// replaced by `gah deploy` must not make every ebuild look gone.
    pub fn open(path: &Path, profile: Option<&Path>) -> Result<MetadataDir, String> {
        let named = path.join("profiles/repo_name").is_file() || path.join("metadata/layout.conf").is_file();
        if !path.join("metadata/md5-cache").is_dir() || !named {
            return Err(format!("{} has no metadata/md5-cache or no repository name (being replaced?)", path.display()));
        }
        let name = gah_ebuild::repo::repo_name(path);
        Ok(MetadataDir { name, path: path.to_owned(), profile_path: profile.map(Path::to_owned), profile: OnceCell::new() })
    }
}

impl Ebuilds for MetadataDir {
    fn ebuild(&self, repo: &str, cpv: &str) -> Result<Result<Ebuild, String>, String> {
        let gone = || Ok(Err(format!("{cpv} is no longer in the repository")));
        // The cpv comes from a stored outcome: it names one file of the cache, nothing else.
        let Some(path) = gah_ebuild::md5cache::entry_path(&self.path, cpv).filter(|_| repo == self.name) else { return gone() };
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Gone, unless the whole cache is (the folder being replaced): then try later.
                return if self.path.join("metadata/md5-cache").is_dir() { gone() } else { Err(format!("{}: {e}", path.display())) };
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
            Ok(_) => {}
        }
        let mut diags = Vec::new();
        Ok(gah_ebuild::md5cache::read_entry(&path, cpv, &mut diags).ok_or_else(|| {
            format!("its md5-cache entry does not parse: {}", diags.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        }))
    }
    fn profile(&self) -> &Profile {
        self.profile.get_or_init(|| match &self.profile_path {
            Some(p) => {
                let (profile, diags) = Profile::read_in(p, &[(self.name.clone(), self.path.clone())]);
                for d in diags {
                    tracing::warn!("localise_profile: {d}");
                }
                profile
            }
            None => Profile::amd64_linux(),
        })
    }
}

/// What the step needs besides the database.
#[derive(Clone, Copy)]
pub struct Config<'a> {
    /// The ebuilds' metadata.
    pub ebuilds: &'a dyn Ebuilds,
    /// The compilers follow-ups may use.
    pub compilers: &'a [Compiler],
    /// The localiser's bounds.
    pub settings: Settings,
}

/// What one [`catch_up`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stepped {
    /// Localisations started.
    pub started: usize,
    /// Follow-up results recorded.
    pub recorded: usize,
    /// Follow-ups asked for again after a lost workunit.
    pub retried: usize,
    /// Localisations concluded.
    pub concluded: usize,
    /// Failures set to wait for a running localisation of the same ebuild.
    pub waiting: usize,
}

impl std::fmt::Display for Stepped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} started, {} follow-up results recorded, {} follow-ups asked for again, {} concluded, {} waiting for one of the same ebuild",
            self.started, self.recorded, self.retried, self.concluded, self.waiting
        )
    }
}

/// Why a step stopped (nothing of the row it was on is stored; the next step takes it again).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The results database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The repository could not be read now.
    #[error("read the metadata of {cpv}: {why}")]
    Ebuild {
        /// The ebuild.
        cpv: String,
        /// What went wrong.
        why: String,
    },
    /// The step's lock could not be taken.
    #[error("lock {}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A localisation as it will be stored.
enum Save {
    Running(Evidence, Cell, u32),
    Done(Conclusion),
}

impl Save {
    fn progress(&self) -> LocalisationProgress<'_> {
        match self {
            Save::Running(evidence, next, tries) => LocalisationProgress::Running { evidence, next, tries: *tries },
            Save::Done(c) => LocalisationProgress::Done(c),
        }
    }
}

/// Moves the localisations on past the rows stored since the last step (see the module docs).
pub fn catch_up(db: &mut Database, cfg: &Config<'_>) -> Result<Stepped, StepError> {
    const PAGE: usize = 500;
    // One step at a time: a second assimilator (`--batch` by hand beside BOINC's) waits,
    // then reads the marks this one moved.
    let lock_path = PathBuf::from(format!("{}.localise.lock", db.path().display()));
    let lock_file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| StepError::Lock { path: lock_path.clone(), source })?;
    let _held = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| StepError::Lock { path: lock_path.clone(), source: e.into() })?;
    let mut stepped = Stepped::default();
    // Running without a pending follow-up: stored by an older version; give it its next.
    for l in db.localisations(&Filter::default(), Some(LocalisationState::Running), Page::ALL)? {
        if l.next.is_none() {
            let saves: Vec<(i64, Save)> =
                advance(db, cfg, l.failing_seq, None, &mut stepped)?.into_iter().map(|s| (l.failing_seq, s)).collect();
            apply(db, &saves, &[], &[], None)?;
        }
    }
    for source in [EventSource::Outcomes, EventSource::InfraFailures] {
        loop {
            let mark = db.localisation_mark(source)?;
            let page = match source {
                EventSource::Outcomes => db.outcomes_since(mark, PAGE)?,
                EventSource::InfraFailures => db.infra_failures_since(mark, PAGE)?,
            };
            for row in &page {
                let (saves, wait) = step_row(db, cfg, source, row, &mut stepped)?;
                apply(db, &saves, &wait, &[], Some((source, row.id)))?;
            }
            if page.len() < PAGE {
                break;
            }
        }
    }
    // A localisation concluded just now lets the failures waiting for it go.
    for seq in db.waiting_localisations()? {
        match db.outcome(seq)? {
            Some(failing) if same_running(db, &failing)? => {}
            _ => {
                let saves: Vec<(i64, Save)> = match start(db, cfg, seq, &mut stepped)? {
                    Started::Saved(s) => vec![(seq, s)],
                    Started::Waits | Started::Nothing => Vec::new(),
                };
                apply(db, &saves, &[], &[seq], None)?;
            }
        }
    }
    Ok(stepped)
}

/// The localisations one row stores (by failing row), and the failures it sets waiting.
type RowStep = (Vec<(i64, Save)>, Vec<i64>);

/// What one new row does: the localisations to store, the failures to set waiting.
fn step_row(
    db: &Database,
    cfg: &Config<'_>,
    source: EventSource,
    row: &gah_core::db::StoredStatus,
    stepped: &mut Stepped,
) -> Result<RowStep, StepError> {
    let (mut saves, mut wait) = (Vec::new(), Vec::new());
    let awaiting = db.localisations_awaiting(&row.job_id)?;
    for l in &awaiting {
        let Some(next) = &l.next else { continue };
        let save = match source {
            // A lost workunit: asked for again, up to MAX_TRIES.
            EventSource::InfraFailures if l.next_tries + 1 < MAX_TRIES => {
                stepped.retried += 1;
                Some(Save::Running(l.evidence.clone(), next.clone(), l.next_tries + 1))
            }
            EventSource::InfraFailures => advance(db, cfg, l.failing_seq, Some((next, Status::InfraError)), stepped)?,
            EventSource::Outcomes => {
                let cell = db.outcome(row.id)?.map_or_else(|| next.clone(), |r| r.cell);
                advance(db, cfg, l.failing_seq, Some((&cell, row.status)), stepped)?
            }
        };
        saves.extend(save.map(|s| (l.failing_seq, s)));
    }
    // A failure that answers a localisation of the same status is its evidence; one of
    // another status (a build failure of a cell a test failure's localisation asked for)
    // is a failure of its own.
    if source == EventSource::Outcomes && row.status.is_own_failure() && awaiting.iter().all(|l| l.status != row.status) {
        match start(db, cfg, row.id, stepped)? {
            Started::Saved(s) => saves.push((row.id, s)),
            Started::Waits => wait.push(row.id),
            Started::Nothing => {}
        }
    }
    Ok((saves, wait))
}

fn apply(
    db: &mut Database,
    saves: &[(i64, Save)],
    wait: &[i64],
    unwait: &[i64],
    through: Option<(EventSource, i64)>,
) -> Result<(), DbError> {
    if saves.is_empty() && wait.is_empty() && unwait.is_empty() && through.is_none() {
        return Ok(());
    }
    db.apply_localisation_step(&LocalisationStep {
        saves: saves.iter().map(|(seq, s)| (*seq, s.progress())).collect(),
        wait: wait.to_vec(),
        unwait: unwait.to_vec(),
        through,
    })
}

/// True while a localisation of the same ebuild and status runs.
fn same_running(db: &Database, failing: &StoredOutcome) -> Result<bool, DbError> {
    Ok(!db.localisations(&Filter::same_failure(failing), Some(LocalisationState::Running), Page::ALL)?.is_empty())
}

enum Started {
    Saved(Save),
    Waits,
    Nothing,
}

/// Starts the localisation of the failing row `seq`, unless one exists, a finished one
/// explains it, or one of the same ebuild runs (then it waits).
fn start(db: &Database, cfg: &Config<'_>, seq: i64, stepped: &mut Stepped) -> Result<Started, StepError> {
    let Some(failing) = db.outcome(seq)? else { return Ok(Started::Nothing) };
    if db.localisation(seq)?.is_some() || db.localisation_explaining(&failing)?.is_some() {
        return Ok(Started::Nothing);
    }
    if same_running(db, &failing)? {
        stepped.waiting += 1;
        return Ok(Started::Waits);
    }
    let save = advance(db, cfg, seq, None, stepped)?;
    if save.is_some() {
        stepped.started += 1;
    }
    Ok(save.map_or(Started::Nothing, Started::Saved))
}

/// Rebuilds the localisation of `failing_seq` from its stored evidence, records `result`
/// (a follow-up's configuration and status), and gives what to store: running with its next
/// follow-up, or done. `None`: nothing to store (no such row, already done, or not started
/// and cannot start).
fn advance(
    db: &Database,
    cfg: &Config<'_>,
    failing_seq: i64,
    result: Option<(&Cell, Status)>,
    stepped: &mut Stepped,
) -> Result<Option<Save>, StepError> {
    let Some(failing) = db.outcome(failing_seq)? else { return Ok(None) };
    let stored = db.localisation(failing_seq)?;
    if stored.as_ref().is_some_and(|l| l.state == LocalisationState::Done) {
        return Ok(None);
    }
    // A localisation that cannot go on ends inconclusive, saying why, rather than staying
    // `running`; one not started yet is simply not started.
    let mut give_up = |why: String| {
        Ok(stored.as_ref().map(|l| {
            stepped.concluded += 1;
            Save::Done(Conclusion::Inconclusive { why, evidence: l.evidence.clone() })
        }))
    };
    let cell = &failing.cell;
    let ebuild = match cfg.ebuilds.ebuild(&cell.repo, &cell.cpv).map_err(|why| StepError::Ebuild { cpv: cell.cpv.clone(), why })? {
        Ok(e) => e,
        Err(why) => return give_up(why),
    };
    let space = Space::new(&ebuild, cfg.ebuilds.profile());
    if probe_of(&space, &cell.use_flags, cell.compiler).is_none() {
        return give_up(format!("the failing configuration no longer fits {}'s IUSE", cell.cpv));
    }
    let same = Filter { repo: Some(cell.repo.clone()), cpv: Some(cell.cpv.clone()), snapshot: Some(failing.snapshot), ..Filter::default() };
    let mut latest = db.latest(&same, Page::ALL)?;
    // The result recorded below is not also something known beforehand.
    latest.retain(|r| result.is_none_or(|(c, _)| r.cell != *c));
    let runs = stored.as_ref().map(|l| l.evidence.runs.as_slice()).unwrap_or_default();
    let mut localiser = match Localiser::resume_stored(&space, &failing, &latest, runs, cfg.compilers, cfg.settings) {
        Ok(l) => l,
        Err(e) => return give_up(format!("it cannot go on: {e}")),
    };
    if let Some(probe) = result.and_then(|(c, status)| probe_of(&space, &c.use_flags, c.compiler).map(|p| (p, status))) {
        // An error here is only "finished" (the stored runs already settled it), which the
        // `next()` below reports.
        if localiser.record(&probe.0, probe.1).is_ok() {
            stepped.recorded += 1;
        }
    }
    Ok(Some(match localiser.next() {
        Step::Done(conclusion) => {
            stepped.concluded += 1;
            Save::Done(conclusion)
        }
        Step::Run(probe) => {
            let next = Cell {
                repo: cell.repo.clone(),
                cpv: cell.cpv.clone(),
                use_flags: space.assignment(&probe.config),
                compiler: probe.compiler,
            };
            Save::Running(localiser.evidence(), next, 0)
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gah_core::job::Job;
    use gah_core::outcome::Outcome;
    use gah_ebuild::md5cache::parse_entry;

    const ENTRY: &str = "EAPI=8\nIUSE=+alpha beta gamma\nSLOT=0\nKEYWORDS=amd64\n_md5_=abc\n";

    fn repos() -> Vec<Repository> {
        let ebuild = parse_entry("app-misc/fixture-1", ENTRY, &mut Vec::new()).unwrap();
        vec![Repository { name: "gah".into(), path: "/nonexistent".into(), ebuilds: vec![ebuild] }]
    }

    /// [`catch_up`] over [`repos`], as the assimilator takes it.
    fn step(db: &mut Database) -> Result<Stepped, StepError> {
        let repos = repos();
        let profile = Profile::none();
        let ebuilds = LoadedRepos { repos: &repos, profile: &profile };
        catch_up(db, &Config { ebuilds: &ebuilds, compilers: &Compiler::ALL, settings: Settings::default() })
    }

    fn job(flags: &str, compiler: Compiler) -> Job {
        Job::new("gah", "app-misc/fixture-1", gah_core::job::UseAssignment::from_package_use(flags).unwrap(), compiler, 60)
    }

    #[test]
    fn a_step_handles_each_row_once_and_an_infra_failure_tells_nothing() {
        let mut db = Database::temp().unwrap();
        let failing = job("-alpha beta -gamma", Compiler::Gcc);
        db.record_outcome(&failing.job_id, &Outcome::for_job(&failing, Status::BuildFailed), b"log").unwrap();
        let s = step(&mut db).unwrap();
        assert_eq!((s.started, s.recorded), (1, 0));
        // Nothing new: nothing done, whatever the number of calls.
        assert_eq!(step(&mut db).unwrap(), Stepped::default());
        let l = db.localisations(&Filter::default(), None, Page::ALL).unwrap().remove(0);
        assert_eq!(l.next.as_ref(), Some(&failing.cell()), "the first follow-up is the rerun");

        // BOINC gives up on the rerun's workunit: it tells nothing about the build, so the
        // rerun is asked for again (a new attempt for the work generator), twice; the third
        // lost one is recorded as infra_error.
        for tries in 1..MAX_TRIES {
            let lost = gah_core::job::wu_name(&failing.job_id, u64::from(tries));
            db.record_infra_failure(&lost, 0x40, 7, 0).unwrap();
            let s = step(&mut db).unwrap();
            assert_eq!((s.retried, s.recorded), (1, 0), "{s:?}");
            let l = db.localisation(l.failing_seq).unwrap().unwrap();
            assert_eq!((l.next_tries, l.evidence.runs.len(), l.next.as_ref()), (tries, 0, Some(&failing.cell())));
        }
        db.record_infra_failure(&gah_core::job::wu_name(&failing.job_id, 9), 0x40, 7, 0).unwrap();
        let s = step(&mut db).unwrap();
        assert_eq!(s.recorded, 1, "{s:?}");
        let l = db.localisation(l.failing_seq).unwrap().unwrap();
        assert_eq!(l.evidence.runs.iter().map(|r| r.status).collect::<Vec<_>>(), [Status::InfraError]);
        // A rerun that never came back: the failure could not be reproduced, said as such.
        assert_eq!(l.state, LocalisationState::Done);
        assert!(matches!(l.conclusion, Some(Conclusion::Inconclusive { .. })), "{:?}", l.conclusion);
        assert_eq!(step(&mut db).unwrap(), Stepped::default());
    }

    #[test]
    fn two_steps_at_once_handle_each_row_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.sqlite");
        let mut db = Database::open(&path).unwrap();
        for flags in ["-alpha beta -gamma", "-alpha -beta gamma", "-alpha beta gamma"] {
            let j = job(flags, Compiler::Gcc);
            db.record_outcome(&j.job_id, &Outcome::for_job(&j, Status::BuildFailed), b"log").unwrap();
        }
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || step(&mut Database::open(&path).unwrap()))
            })
            .collect();
        let steps: Vec<Stepped> = threads.into_iter().map(|t| t.join().unwrap().unwrap()).collect();
        assert_eq!(steps.iter().map(|s| s.started).sum::<usize>(), 1, "{steps:?}");
        assert_eq!(steps.iter().map(|s| s.waiting).sum::<usize>(), 2, "{steps:?}");
        assert_eq!(db.localisations(&Filter::default(), None, Page::ALL).unwrap().len(), 1);
        assert_eq!(db.waiting_localisations().unwrap().len(), 2);
    }

    #[test]
    fn an_entry_that_does_not_parse_ends_its_localisation_and_the_rest_go_on() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("profiles")).unwrap();
        std::fs::write(dir.path().join("profiles/repo_name"), "gah\n").unwrap();
        std::fs::create_dir_all(dir.path().join("metadata/md5-cache/app-misc")).unwrap();
        std::fs::write(dir.path().join("metadata/md5-cache/app-misc/fixture-1"), ENTRY).unwrap();
        std::fs::write(dir.path().join("metadata/md5-cache/app-misc/broken-1"), [0xff, 0xfe, b'\n']).unwrap();
        let repo = MetadataDir::open(dir.path(), None).unwrap();
        let cfg = Config { ebuilds: &repo, compilers: &Compiler::ALL, settings: Settings::default() };
        let mut db = Database::temp().unwrap();
        let broken = Job::new("gah", "app-misc/broken-1", gah_core::job::UseAssignment::default(), Compiler::Gcc, 60);
        db.record_outcome(&broken.job_id, &Outcome::for_job(&broken, Status::BuildFailed), b"log").unwrap();
        let good = job("-alpha beta -gamma", Compiler::Gcc);
        db.record_outcome(&good.job_id, &Outcome::for_job(&good, Status::BuildFailed), b"log").unwrap();
        let s = catch_up(&mut db, &cfg).unwrap();
        assert_eq!(s.started, 1, "the good one started, the broken one did not block it: {s:?}");
        assert_eq!(db.localisations(&Filter::default(), None, Page::ALL).unwrap()[0].cell.cpv, "app-misc/fixture-1");
        // While the folder is being replaced (no md5-cache), nothing is concluded from it.
        std::fs::rename(dir.path().join("metadata/md5-cache"), dir.path().join("metadata/old")).unwrap();
        assert!(MetadataDir::open(dir.path(), None).is_err());
    }

    #[test]
    fn a_failure_of_another_status_on_an_awaited_cell_is_a_failure_of_its_own() {
        let mut db = Database::temp().unwrap();
        let failing = job("-alpha beta -gamma", Compiler::Gcc);
        db.record_outcome(&failing.job_id, &Outcome::for_job(&failing, Status::TestFailed), b"log").unwrap();
        step(&mut db).unwrap();
        // The rerun (the awaited cell) now fails to build: evidence for the test failure's
        // localisation, and a build failure of its own.
        let rerun = gah_core::job::wu_name(&failing.job_id, 1);
        db.record_outcome(&rerun, &Outcome::for_job(&failing, Status::BuildFailed), b"log").unwrap();
        let s = step(&mut db).unwrap();
        assert_eq!((s.recorded, s.started), (1, 1), "{s:?}");
    }

    #[test]
    fn the_metadata_dir_reads_one_entry_and_nothing_outside_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("profiles")).unwrap();
        std::fs::write(dir.path().join("profiles/repo_name"), "gah\n").unwrap();
        std::fs::create_dir_all(dir.path().join("metadata/md5-cache/app-misc")).unwrap();
        std::fs::write(dir.path().join("metadata/md5-cache/app-misc/fixture-1"), ENTRY).unwrap();
        std::fs::write(dir.path().join("secret-1"), ENTRY).unwrap();
        let repo = MetadataDir::open(dir.path(), None).unwrap();
        assert_eq!(repo.ebuild("gah", "app-misc/fixture-1").unwrap().map(|e| e.cpv), Ok("app-misc/fixture-1".to_owned()));
        assert!(repo.ebuild("other", "app-misc/fixture-1").unwrap().is_err(), "another repository's");
        assert!(repo.ebuild("gah", "app-misc/gone-1").unwrap().is_err());
        for hostile in
            ["../../secret-1", "app-misc/../../secret-1", "/etc/passwd-1", "app-misc/.fixture-1", "a/b/c-1", "app-misc/fix\nture-1"]
        {
            assert!(repo.ebuild("gah", hostile).unwrap().is_err(), "{hostile:?}");
        }
    }
}
