//! Failure localisation on a BOINC server (issue 13): the localiser's follow-ups issued as
//! ordinary workunits, ahead of the rotation, since a person waits for the answer.
//!
//! [`step`] reads the results database past its own watermark (`localisations` in the
//! queue's `watermarks`), as the rotation does, and for each new row:
//! - a result of a follow-up the queue issued is recorded in its localisation (the stored
//!   evidence is taken back by a new `gah_localise::Localiser` (`resume`), the result recorded), and the
//!   localisation moves on: its next follow-up is queued ([`Queue::add_followup`], first in
//!   [`Queue::next_unsubmitted`]) or its conclusion stored;
//! - a real failure (`build_failed`, `test_failed`) of one of the queue's cells that is no
//!   follow-up and that no finished localisation of the same ebuild already explains starts a
//!   localisation (stored as running, its first follow-up queued: the failing configuration's
//!   rerun); while one of the same ebuild and status runs, it waits
//!   ([`Queue::defer_localisation`]) and starts after that one's end only if its cause does not
//!   explain it (on a server, the failing cells of an ebuild come in together: one flag that
//!   breaks the build fails half of them, and each would otherwise start its own).
//!
//! The localisation's state is the results database's (`Database::save_localisation`, the
//! only write the work generator makes there); the queue keeps which follow-ups wait for
//! which localisation. A follow-up's workunit that ends in an infrastructure failure is
//! recorded as `infra_error` (tells nothing) and the localisation moves on.
//!
//! Known limits: a cell that was ever a follow-up (the failing cell itself, through its
//! rerun) is not localised again when it fails in a later tree snapshot; the localiser's
//! bounds are its defaults (`Settings::default()`, at most 64 follow-ups a failure); a
//! follow-up's configuration joins the queue as a cell of its own and stays in the rotation
//! afterwards (so it is counted in `Queue::progress`'s planned cells too).

use gah_core::db::{Database, DbError, Filter, LocalisationProgress, LocalisationState, Order, Page, StoredOutcome};
use gah_core::job::{Compiler, Job};
use gah_core::localisation::Conclusion;
use gah_core::outcome::Status;
use gah_ebuild::{Profile, Repository, Space};
use gah_localise::{probe_of, Localiser, Settings, Step};

use crate::queue::{Queue, QueueError};

/// The queue's watermark of the results rows read here.
const OUTCOMES: &str = "localisations";
/// The queue's watermark of the infrastructure failures read here.
const INFRA: &str = "localisations_infra";

/// What the localisation needs besides the queue and the results.
#[derive(Debug, Clone, Copy)]
pub struct LocaliseConfig<'a> {
    /// The repositories the queue's jobs were planned from (their md5-cache).
    pub repos: &'a [Repository],
    /// The profile they were planned under.
    pub profile: &'a Profile,
    /// The compilers follow-ups may use.
    pub compilers: &'a [Compiler],
    /// The localiser's bounds.
    pub settings: Settings,
    /// The follow-up jobs' time limit.
    pub timeout_secs: u64,
}

/// What one [`step`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stepped {
    /// Localisations started.
    pub started: usize,
    /// Follow-up results recorded.
    pub recorded: usize,
    /// Follow-ups queued.
    pub queued: usize,
    /// Localisations concluded.
    pub concluded: usize,
    /// Failures set to wait for a running localisation of the same ebuild.
    pub deferred: usize,
}

/// Why a step stopped.
#[derive(Debug, thiserror::Error)]
pub enum LocaliseError {
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The results database failed.
    #[error("the results database")]
    Results(#[from] DbError),
}

/// Reads the results stored since the last step and moves the localisations on (see the
/// module docs). Each row is handled once: the watermark moves past a page once it is done.
pub fn step(queue: &Queue, results: &mut Database, cfg: &LocaliseConfig<'_>) -> Result<Stepped, LocaliseError> {
    const PAGE: usize = 500;
    let mut stepped = Stepped::default();
    for source in [OUTCOMES, INFRA] {
        loop {
            let mark = queue.watermark(source)?;
            let page = if source == OUTCOMES { results.outcomes_since(mark, PAGE)? } else { results.infra_failures_since(mark, PAGE)? };
            let Some(last) = page.last().map(|r| r.id) else { break };
            for row in &page {
                let waiting = queue.followups_waiting_for(&row.job_id)?;
                if !waiting.is_empty() {
                    let result = if source == OUTCOMES { results.outcome(row.id)? } else { None };
                    for failing_seq in waiting {
                        advance(queue, results, cfg, failing_seq, Some((&row.job_id, result.as_ref(), row.status)), &mut stepped)?;
                        queue.finish_followup(&row.job_id, failing_seq)?;
                    }
                    continue;
                }
                if source == OUTCOMES && row.status.is_own_failure() {
                    let (known, followed_up) = queue.knows(&row.job_id)?;
                    if known && !followed_up {
                        start(queue, results, cfg, row.id, &mut stepped)?;
                    }
                }
            }
            queue.set_watermark(source, last)?;
            if page.len() < PAGE {
                break;
            }
        }
    }
    // After the new rows: a localisation concluded just now lets its waiting failures go.
    for seq in queue.deferred_localisations()? {
        match results.outcome(seq)? {
            Some(failing) if same_running(results, &failing)? => {}
            _ => {
                // Started before it leaves the waiting list, so an error or a crash between
                // the two loses nothing (`start` does nothing for one already started).
                start(queue, results, cfg, seq, &mut stepped)?;
                queue.undefer_localisation(seq)?;
            }
        }
    }
    Ok(stepped)
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
fn same_running(results: &Database, failing: &StoredOutcome) -> Result<bool, DbError> {
    Ok(!results.localisations(&same_ebuild(failing), Some(LocalisationState::Running), Page::ALL)?.is_empty())
}

/// Starts the localisation of the failing row `seq`, unless one exists or a finished one of
/// the same ebuild and status has a cause this row shows.
fn start(queue: &Queue, results: &mut Database, cfg: &LocaliseConfig<'_>, seq: i64, stepped: &mut Stepped) -> Result<(), LocaliseError> {
    let Some(failing) = results.outcome(seq)? else { return Ok(()) };
    if results.localisation(seq)?.is_some() {
        return Ok(());
    }
    let same = same_ebuild(&failing);
    let explained =
        results.localisations(&same, Some(LocalisationState::Done), Page { order: Order::Newest, ..Page::ALL })?.iter().any(|l| {
            l.conclusion.as_ref().and_then(Conclusion::cause).is_some_and(|c| c.matches(&failing.cell.use_flags, failing.cell.compiler))
        });
    if explained {
        return Ok(());
    }
    if same_running(results, &failing)? {
        if queue.defer_localisation(seq)? {
            stepped.deferred += 1;
        }
        return Ok(());
    }
    stepped.started += 1;
    advance(queue, results, cfg, seq, None, stepped)
}

/// Rebuilds the localisation of `failing_seq` from its stored evidence, records `result`
/// (a follow-up's job id, its stored row when it has one, and its status), and queues the
/// next follow-up or stores the conclusion.
fn advance(
    queue: &Queue,
    results: &mut Database,
    cfg: &LocaliseConfig<'_>,
    failing_seq: i64,
    result: Option<(&str, Option<&StoredOutcome>, Status)>,
    stepped: &mut Stepped,
) -> Result<(), LocaliseError> {
    let Some(failing) = results.outcome(failing_seq)? else { return Ok(()) };
    let stored = results.localisation(failing_seq)?;
    if stored.as_ref().is_some_and(|l| l.state == LocalisationState::Done) {
        return Ok(());
    }
    let cell = &failing.cell;
    let ebuild = cfg.repos.iter().filter(|r| r.name == cell.repo).flat_map(|r| r.ebuilds.iter()).find(|e| e.cpv == cell.cpv);
    let Some(ebuild) = ebuild else {
        // Gone from the tree: nothing left to localise. Without stored evidence there is
        // nothing to say either.
        if let Some(l) = stored {
            let why = format!("{} is no longer in the repository", cell.cpv);
            db_done(results, failing_seq, &Conclusion::Inconclusive { why, evidence: l.evidence }, stepped)?;
        }
        return Ok(());
    };
    let space = Space::new(ebuild, cfg.profile);
    // A localisation that can no longer go on (the ebuild changed under the same cpv, or the
    // failing compiler is no longer built) ends inconclusive, saying why, rather than staying
    // `running`; one not started yet is simply not started.
    let give_up = |results: &mut Database, stepped: &mut Stepped, why: String| match &stored {
        Some(l) => db_done(results, failing_seq, &Conclusion::Inconclusive { why, evidence: l.evidence.clone() }, stepped),
        None => Ok(()),
    };
    if probe_of(&space, &cell.use_flags, cell.compiler).is_none() {
        return give_up(results, stepped, format!("the failing configuration no longer fits {}'s IUSE", cell.cpv));
    }
    let same = Filter { repo: Some(cell.repo.clone()), cpv: Some(cell.cpv.clone()), snapshot: Some(failing.snapshot), ..Filter::default() };
    let latest = results.latest(&same, Page::ALL)?;
    let runs = stored.as_ref().map(|l| l.evidence.runs.as_slice()).unwrap_or_default();
    let mut localiser = match Localiser::resume_stored(&space, &failing, &latest, runs, cfg.compilers, cfg.settings) {
        Ok(l) => l,
        Err(e) => return give_up(results, stepped, format!("it cannot go on: {e}")),
    };
    if let Some((job_id, row, status)) = result {
        // The follow-up's configuration: its stored row's, else (an infrastructure failure
        // has no row) its job file's.
        let config = match row {
            Some(r) => Some((r.cell.use_flags.clone(), r.cell.compiler)),
            None => Job::read(&queue.job_path(job_id)).ok().map(|j| (j.use_flags, j.compiler)),
        };
        if let Some(probe) = config.and_then(|(u, c)| probe_of(&space, &u, c)) {
            // An error here is only "finished" (the stored runs already settled it), which
            // the `next()` below reports.
            if localiser.record(&probe, status).is_ok() {
                stepped.recorded += 1;
            }
        }
    }
    match localiser.next() {
        Step::Done(conclusion) => db_done(results, failing_seq, &conclusion, stepped),
        Step::Run(probe) => {
            results.save_localisation(failing_seq, LocalisationProgress::Running(&localiser.evidence()))?;
            let job = Job::new(&cell.repo, &cell.cpv, space.assignment(&probe.config), probe.compiler, cfg.timeout_secs);
            queue.add_followup(&job, failing_seq, &ebuild.md5)?;
            stepped.queued += 1;
            Ok(())
        }
    }
}

fn db_done(results: &mut Database, failing_seq: i64, conclusion: &Conclusion, stepped: &mut Stepped) -> Result<(), LocaliseError> {
    results.save_localisation(failing_seq, LocalisationProgress::Done(conclusion))?;
    stepped.concluded += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gah_core::outcome::Outcome;
    use gah_ebuild::md5cache::parse_entry;

    /// The work generator's plan of `t`-wise covering arrays for both compilers.
    fn plan_config(t: usize) -> crate::plan::Config {
        crate::plan::Config {
            compilers: Compiler::ALL.to_vec(),
            strategy: gah_ebuild::Strategy::Covering { t, seed: 0 },
            profile: Profile::none(),
            timeout_secs: 60,
            threads: 1,
            budget: gah_ebuild::Budget::default(),
        }
    }

    /// A repository `gah` holding `app-misc/fixture-1` with the md5-cache entry `text`.
    fn one_ebuild(text: &str) -> Vec<Repository> {
        let ebuild = parse_entry("app-misc/fixture-1", text, &mut Vec::new()).unwrap();
        vec![Repository { name: "gah".into(), path: "/nonexistent".into(), ebuilds: vec![ebuild] }]
    }

    /// A server's loop in small: the queue's jobs "run" (their outcome decided by `fails`,
    /// stored as the assimilator would), then a step; until nothing is left to submit.
    #[test]
    fn follow_ups_are_issued_first_and_localise_the_failure() {
        let text = "EAPI=8\nIUSE=alpha beta gamma\nREQUIRED_USE=alpha? ( beta )\nSLOT=0\nKEYWORDS=amd64\n_md5_=abc\n";
        let repos = one_ebuild(text);
        let profile = Profile::none();
        let cfg =
            LocaliseConfig { repos: &repos, profile: &profile, compilers: &Compiler::ALL, settings: Settings::default(), timeout_secs: 60 };
        let dir = tempfile::tempdir().unwrap();
        let mut queue = Queue::open(dir.path()).unwrap();
        let mut results = Database::temp().unwrap();
        // Fails whenever `gamma` is on under clang.
        let fails = |j: &Job| j.use_flags.0.get("gamma") == Some(&true) && j.compiler == Compiler::Clang;

        // The sweep: the work generator's plan, pairwise.
        let plan_cfg = plan_config(2);
        let plan = crate::plan::plan(&repos, &plan_cfg);
        assert!(plan.jobs.iter().any(fails), "the sweep has a failure to localise");
        queue.add(&plan).unwrap();
        let mut ran: Vec<Job> = Vec::new();
        for _ in 0..60 {
            let next = queue.next_unsubmitted(1).unwrap();
            let Some(job) = next.first() else { break };
            let wus = queue.reserve(&next).unwrap();
            queue.mark_submitted(&wus).unwrap();
            let status = if fails(job) { Status::BuildFailed } else { Status::Success };
            let outcome = Outcome::for_job(job, status);
            results.record_outcome(&wus[0].name, &outcome, b"log").unwrap();
            ran.push(job.clone());
            step(&queue, &mut results, &cfg).unwrap();
        }
        // Right after the first failure comes its rerun, ahead of the rest of the sweep.
        let first = ran.iter().position(fails).unwrap();
        assert_eq!(ran[first + 1].job_id, ran[first].job_id, "the rerun goes first");
        let all = results.localisations(&Filter::default(), None, Page::ALL).unwrap();
        assert_eq!(all.len(), 1, "one localisation: later failures are explained by its cause");
        let c = all[0].conclusion.as_ref().expect("concluded");
        assert_eq!(c.to_string(), r#"fails with USE="gamma" (clang only)"#);
        // Every follow-up ran as a job of the queue, its outcome an ordinary row.
        assert!(c.evidence().runs.len() >= 2);
        assert_eq!(ran.len(), results.outcomes(&Filter::default(), Page::ALL).unwrap().len());
        assert!(plan.jobs.iter().all(|j| ran.iter().any(|r| r.job_id == j.job_id)), "the sweep went on");
        assert!(next_is_empty(&queue));
    }

    /// The daemon's loop with localisation on: a "server" that builds every submitted
    /// workunit at once and stores its outcome as the assimilator would.
    #[test]
    fn the_daemon_submits_follow_ups_and_the_localisation_concludes() {
        use crate::daemon::{run_localising, DaemonConfig, SubmitError, Submitter, UnsentError, UnsentSource};
        struct Idle;
        impl UnsentSource for Idle {
            fn unsent(&mut self) -> Result<u64, UnsentError> {
                Ok(0)
            }
        }
        struct Builds<'a>(&'a std::path::Path, Vec<String>);
        impl Submitter for Builds<'_> {
            fn submit(&mut self, wus: &[crate::boinc::Workunit]) -> Result<(), SubmitError> {
                let mut db = Database::open(self.0).unwrap();
                for wu in wus {
                    let j = &wu.job;
                    let fails = j.use_flags.0.get("alpha") == Some(&false) && j.compiler == Compiler::Gcc;
                    let outcome = Outcome::for_job(j, if fails { Status::TestFailed } else { Status::Success });
                    db.record_outcome(&wu.name, &outcome, b"log").unwrap();
                    self.1.push(j.job_id.clone());
                }
                Ok(())
            }
        }
        let text = "EAPI=8\nIUSE=+alpha beta gamma\nSLOT=0\nKEYWORDS=amd64\n_md5_=abc\n";
        let repos = one_ebuild(text);
        let profile = Profile::none();
        let cfg =
            LocaliseConfig { repos: &repos, profile: &profile, compilers: &Compiler::ALL, settings: Settings::default(), timeout_secs: 60 };
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("results.sqlite");
        drop(Database::open(&results).unwrap());
        let queue = Queue::open(&dir.path().join("queue")).unwrap();
        let plan_cfg = plan_config(1);
        let plan = crate::plan::plan(&repos, &plan_cfg);
        let mut q = queue;
        q.add(&plan).unwrap();
        let daemon = DaemonConfig { keep_unsent: 2, results_per_job: 2, interval: std::time::Duration::ZERO, rounds: Some(30) };
        let mut server = Builds(&results, Vec::new());
        let mut log = Vec::new();
        run_localising(&q, Some(&results), Some(&cfg), &mut Idle, &mut server, daemon, &mut |l| log.push(l.to_owned())).unwrap();
        let db = Database::open(&results).unwrap();
        let all = db.localisations(&Filter::default(), None, Page::ALL).unwrap();
        assert_eq!(all.len(), 1, "{log:#?}");
        let c = all[0].conclusion.as_ref().unwrap_or_else(|| panic!("not concluded: {log:#?}"));
        assert_eq!(c.to_string(), r#"fails with USE="-alpha" (gcc only)"#);
        // Every planned job built once, and each follow-up once more at most (the failing
        // configuration's rerun; a follow-up that is a planned job not yet built is that job).
        let built = &server.1;
        assert!(plan.jobs.iter().all(|j| built.contains(&j.job_id)), "the sweep went on: {built:?}");
        assert!(built.len() <= plan.jobs.len() + c.evidence().runs.len(), "{built:?}");
        let mut distinct = built.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(built.len() - distinct.len(), 1, "only the rerun builds a configuration twice: {built:?}");
        assert!(log.iter().any(|l| l.starts_with("localisation: ")), "{log:#?}");
    }

    /// On a server the sweep's failing cells come in together: one localisation starts, the
    /// other failures of the ebuild wait for it, and its cause explains them.
    #[test]
    fn failures_that_come_in_together_wait_for_one_localisation() {
        let text = "EAPI=8\nIUSE=+alpha beta gamma\nSLOT=0\nKEYWORDS=amd64\n_md5_=abc\n";
        let repos = one_ebuild(text);
        let profile = Profile::none();
        let cfg =
            LocaliseConfig { repos: &repos, profile: &profile, compilers: &Compiler::ALL, settings: Settings::default(), timeout_secs: 60 };
        let dir = tempfile::tempdir().unwrap();
        let mut queue = Queue::open(dir.path()).unwrap();
        let mut results = Database::temp().unwrap();
        let fails = |j: &Job| j.use_flags.0.get("alpha") == Some(&false);
        let plan = crate::plan::plan(&repos, &plan_config(2));
        assert!(plan.jobs.iter().filter(|j| fails(j)).count() >= 2, "several failing cells");
        queue.add(&plan).unwrap();
        // Each round: every unsubmitted job "runs", then one step.
        let mut steps = Vec::new();
        for _ in 0..30 {
            let next = queue.next_unsubmitted(usize::MAX).unwrap();
            if next.is_empty() {
                break;
            }
            let wus = queue.reserve(&next).unwrap();
            queue.mark_submitted(&wus).unwrap();
            for wu in &wus {
                let status = if fails(&wu.job) { Status::BuildFailed } else { Status::Success };
                results.record_outcome(&wu.name, &Outcome::for_job(&wu.job, status), b"log").unwrap();
            }
            steps.push(step(&queue, &mut results, &cfg).unwrap());
        }
        assert_eq!((steps[0].started, steps[0].deferred), (1, plan.jobs.iter().filter(|j| fails(j)).count() - 1), "{steps:?}");
        let all = results.localisations(&Filter::default(), None, Page::ALL).unwrap();
        assert_eq!(all.len(), 1, "{steps:?}");
        let c = all[0].conclusion.as_ref().expect("concluded");
        assert_eq!(c.to_string(), r#"fails with USE="-alpha""#);
        assert!(queue.deferred_localisations().unwrap().is_empty(), "the waiting failures were let go");
    }

    fn next_is_empty(queue: &Queue) -> bool {
        queue.next_unsubmitted(1).unwrap().is_empty()
    }
}
