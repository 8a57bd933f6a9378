//! Failure localisation (issue 13) as the results database's writer does it: after outcomes
//! are stored, [`catch_up`] moves the localisations on. BOINC's assimilator
//! ([`crate::boinc`]) takes this step after each workunit, `gah run` after each job; the
//! work generator only reads the running localisations and submits each one's pending
//! follow-up (`gah_workgen::followup`), so data on the server flows one way.
//!
//! [`catch_up`] reads `outcomes` and `infra_failures` past its marks (kept in the results
//! database), and for each new row, in one transaction with the mark's move:
//! - a result of a running localisation's pending follow-up (its job id: the same
//!   configuration, whoever submitted it) is recorded in that localisation, which then
//!   stores its next follow-up or its conclusion; an infrastructure failure is recorded as
//!   `infra_error` (it tells nothing) and the localisation moves on;
//! - any other real failure (`build_failed`, `test_failed`) starts a localisation (its first
//!   follow-up: the failing configuration run again), unless a finished localisation of the
//!   same ebuild and status has a cause this configuration shows; while one of the same
//!   ebuild and status runs it waits (`localisations_waiting`) and starts afterwards only if
//!   that one's cause does not explain it (on a server the failing cells of an ebuild come
//!   in together: one flag that breaks the build fails half of them).
//!
//! The evidence is stored, never the localiser: each step rebuilds it from the stored
//! evidence ([`Localiser::resume_stored`]) and the ebuild as it is now ([`Ebuilds`]). A
//! localisation whose ebuild is gone or changed so that it cannot go on ends inconclusive,
//! saying why.

use gah_core::db::{
    Database, DbError, EventSource, Filter, LocalisationProgress, LocalisationState, LocalisationStep, Page, StoredOutcome,
};
use gah_core::job::{Cell, Compiler};
use gah_core::localisation::{Conclusion, Evidence};
use gah_core::outcome::Status;
use gah_ebuild::{Ebuild, Profile, Repository, Space};
use gah_localise::{probe_of, Localiser, Settings, Step};

/// Where the step finds an ebuild's metadata as it is now.
pub trait Ebuilds {
    /// The ebuild `cpv` of repository `repo`; `Ok(None)` when it is not there (any more).
    fn ebuild(&self, repo: &str, cpv: &str) -> Result<Option<Ebuild>, String>;
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
    fn ebuild(&self, repo: &str, cpv: &str) -> Result<Option<Ebuild>, String> {
        Ok(self.repos.iter().filter(|r| r.name == repo).flat_map(|r| r.ebuilds.iter()).find(|e| e.cpv == cpv).cloned())
    }
    fn profile(&self) -> &Profile {
        self.profile
    }
}

/// A repository's metadata on disk, read one md5-cache entry at a time (the server's
/// assimilator, which runs once per workunit: `gah.conf`'s `localise_repo`).
pub struct MetadataDir {
    name: String,
    path: std::path::PathBuf,
    profile: Profile,
}

impl MetadataDir {
    /// The repository at `path` (its name from `profiles/repo_name`), under `profile`
    /// (default: amd64 Linux's flags, as the work generator plans).
    pub fn open(path: &std::path::Path, profile: Option<&std::path::Path>) -> MetadataDir {
        let name = gah_ebuild::repo::repo_name(path);
        let profile = match profile {
            Some(p) => Profile::read_in(p, &[(name.clone(), path.to_owned())]).0,
            None => Profile::amd64_linux(),
        };
        MetadataDir { name, path: path.to_owned(), profile }
    }
}

impl Ebuilds for MetadataDir {
    fn ebuild(&self, repo: &str, cpv: &str) -> Result<Option<Ebuild>, String> {
        // The cpv comes from a stored outcome: it names one file of the cache, nothing else.
        let well_formed = gah_core::job::split_cpv(cpv).is_some()
            && cpv.split('/').count() == 2
            && cpv.split('/').all(|part| !part.is_empty() && !part.starts_with('.'))
            && cpv.bytes().all(|b| b.is_ascii_alphanumeric() || b"+_.-/".contains(&b));
        if repo != self.name || !well_formed {
            return Ok(None);
        }
        let path = self.path.join("metadata/md5-cache").join(cpv);
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
            Ok(_) => {}
        }
        let mut diags = Vec::new();
        match gah_ebuild::md5cache::read_entry(&path, cpv, &mut diags) {
            Some(e) => Ok(Some(e)),
            None => Err(diags.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")),
        }
    }
    fn profile(&self) -> &Profile {
        &self.profile
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
    /// Localisations concluded.
    pub concluded: usize,
    /// Failures set to wait for a running localisation of the same ebuild.
    pub waiting: usize,
}

impl std::fmt::Display for Stepped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} started, {} follow-up results recorded, {} concluded, {} waiting for one of the same ebuild",
            self.started, self.recorded, self.concluded, self.waiting
        )
    }
}

/// Why a step stopped (nothing of the row it was on is stored; the next step takes it again).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The results database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// An ebuild's metadata could not be read.
    #[error("read the metadata of {cpv}: {why}")]
    Ebuild {
        /// The ebuild.
        cpv: String,
        /// What went wrong.
        why: String,
    },
}

/// A localisation as it will be stored.
enum Save {
    Running(Evidence, Cell),
    Done(Conclusion),
}

impl Save {
    fn progress(&self) -> LocalisationProgress<'_> {
        match self {
            Save::Running(evidence, next) => LocalisationProgress::Running { evidence, next },
            Save::Done(c) => LocalisationProgress::Done(c),
        }
    }
}

/// Moves the localisations on past the rows stored since the last step (see the module docs).
pub fn catch_up(db: &mut Database, cfg: &Config<'_>) -> Result<Stepped, StepError> {
    const PAGE: usize = 500;
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
                let mut saves = Vec::new();
                let mut wait = Vec::new();
                let awaiting = db.localisations_awaiting(&row.job_id)?;
                if !awaiting.is_empty() {
                    // An outcome's own configuration; an infrastructure failure has none but its
                    // job id's, which is the pending follow-up's.
                    for l in awaiting {
                        let Some(next) = l.next else { continue };
                        let answered = match source {
                            EventSource::Outcomes => db.outcome(row.id)?.map(|r| r.cell).unwrap_or(next),
                            EventSource::InfraFailures => next,
                        };
                        if let Some(s) = advance(db, cfg, l.failing_seq, Some((&answered, row.status)), &mut stepped)? {
                            saves.push((l.failing_seq, s));
                        }
                    }
                } else if source == EventSource::Outcomes && row.status.is_own_failure() {
                    match start(db, cfg, row.id, &mut stepped)? {
                        Started::Saved(s) => saves.push((row.id, s)),
                        Started::Waits => wait.push(row.id),
                        Started::Nothing => {}
                    }
                }
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

/// The failure's ebuild (repository, cpv) with this status, whatever the configuration.
fn same_ebuild(failing: &StoredOutcome) -> Filter {
    Filter {
        repo: Some(failing.cell.repo.clone()),
        cpv: Some(failing.cell.cpv.clone()),
        statuses: vec![failing.status],
        ..Filter::default()
    }
}

/// True while a localisation of the same ebuild and status runs.
fn same_running(db: &Database, failing: &StoredOutcome) -> Result<bool, DbError> {
    Ok(!db.localisations(&same_ebuild(failing), Some(LocalisationState::Running), Page::ALL)?.is_empty())
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
    let ebuild = cfg.ebuilds.ebuild(&cell.repo, &cell.cpv).map_err(|why| StepError::Ebuild { cpv: cell.cpv.clone(), why })?;
    let Some(ebuild) = ebuild else { return give_up(format!("{} is no longer in the repository", cell.cpv)) };
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
            Save::Running(localiser.evidence(), next)
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

    fn job(flags: &str, compiler: Compiler) -> Job {
        Job::new("gah", "app-misc/fixture-1", gah_core::job::UseAssignment::from_package_use(flags).unwrap(), compiler, 60)
    }

    #[test]
    fn a_step_handles_each_row_once_and_an_infra_failure_tells_nothing() {
        let repos = repos();
        let profile = Profile::none();
        let ebuilds = LoadedRepos { repos: &repos, profile: &profile };
        let cfg = Config { ebuilds: &ebuilds, compilers: &Compiler::ALL, settings: Settings::default() };
        let mut db = Database::temp().unwrap();
        let failing = job("-alpha beta -gamma", Compiler::Gcc);
        db.record_outcome(&failing.job_id, &Outcome::for_job(&failing, Status::BuildFailed), b"log").unwrap();
        let s = catch_up(&mut db, &cfg).unwrap();
        assert_eq!((s.started, s.recorded), (1, 0));
        // Nothing new: nothing done, whatever the number of calls.
        assert_eq!(catch_up(&mut db, &cfg).unwrap(), Stepped::default());
        let l = db.localisations(&Filter::default(), None, Page::ALL).unwrap().remove(0);
        assert_eq!(l.next.as_ref(), Some(&failing.cell()), "the first follow-up is the rerun");

        // BOINC gives up on the rerun's workunit: recorded as telling nothing, and the
        // localisation asks for something else.
        let rerun = gah_core::job::wu_name(&failing.job_id, 1);
        db.record_infra_failure(&rerun, 0x40, 7, 0).unwrap();
        let s = catch_up(&mut db, &cfg).unwrap();
        assert_eq!(s.recorded, 1, "{s:?}");
        let l = db.localisation(l.failing_seq).unwrap().unwrap();
        assert_eq!(l.evidence.runs.iter().map(|r| r.status).collect::<Vec<_>>(), [Status::InfraError]);
        assert_eq!(catch_up(&mut db, &cfg).unwrap(), Stepped::default());
    }

    #[test]
    fn the_metadata_dir_reads_one_entry_and_nothing_outside_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("profiles")).unwrap();
        std::fs::write(dir.path().join("profiles/repo_name"), "gah\n").unwrap();
        std::fs::create_dir_all(dir.path().join("metadata/md5-cache/app-misc")).unwrap();
        std::fs::write(dir.path().join("metadata/md5-cache/app-misc/fixture-1"), ENTRY).unwrap();
        std::fs::write(dir.path().join("secret-1"), ENTRY).unwrap();
        let repo = MetadataDir::open(dir.path(), None);
        assert_eq!(repo.ebuild("gah", "app-misc/fixture-1").unwrap().map(|e| e.cpv), Some("app-misc/fixture-1".to_owned()));
        assert_eq!(repo.ebuild("other", "app-misc/fixture-1").unwrap(), None, "another repository's");
        assert_eq!(repo.ebuild("gah", "app-misc/gone-1").unwrap(), None);
        for hostile in
            ["../../secret-1", "app-misc/../../secret-1", "/etc/passwd-1", "app-misc/.fixture-1", "a/b/c-1", "app-misc/fix\nture-1"]
        {
            assert_eq!(repo.ebuild("gah", hostile).unwrap(), None, "{hostile:?}");
        }
    }
}
