//! Failure localisation on a BOINC server (issue 13): the localisations' follow-ups issued
//! as ordinary workunits, ahead of the rotation, since a person waits for the answer.
//!
//! The localisations live in the results database, and its writer moves them on: the
//! assimilator (`gah_assimilator::localise`) starts one after a real failure, records each
//! follow-up's result and stores the next follow-up or the conclusion. [`step`] only reads:
//! each running localisation's pending follow-up is queued once ([`Queue::add_followup`],
//! keyed by the job, the failing row and the attempt (a lost workunit is asked for again),
//! first in [`Queue::next_unsubmitted`]). Data on the
//! server thus flows one way: validator → assimilator → results database → work generator.
//!
//! Known limits: a follow-up's configuration joins the queue as a cell of its own and stays
//! in the rotation afterwards (so it is counted in `Queue::progress`'s planned cells too);
//! a pending follow-up is not checked again against a newer md5-cache (the assimilator chose
//! it over the same `gah/repo` folder, which `gah deploy` replaces whole).

use gah_core::db::{Database, DbError, Filter, LocalisationState, Page};
use gah_core::job::Job;
use gah_ebuild::Repository;

use crate::queue::{Queue, QueueError};

/// What the work generator needs to issue follow-ups.
#[derive(Debug, Clone, Copy)]
pub struct LocaliseConfig<'a> {
    /// The repositories the queue's jobs were planned from (a new follow-up cell's `_md5_`).
    pub repos: &'a [Repository],
    /// The follow-up jobs' time limit.
    pub timeout_secs: u64,
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

/// Queues the pending follow-up of every running localisation not queued yet; how many
/// were queued now.
pub fn step(queue: &Queue, results: &Database, cfg: &LocaliseConfig<'_>) -> Result<usize, LocaliseError> {
    let mut queued = 0;
    for l in results.localisations(&Filter::default(), Some(LocalisationState::Running), Page::ALL)? {
        let Some(next) = l.next else { continue };
        let md5 = gah_ebuild::repo::find_ebuild(cfg.repos, &next.repo, &next.cpv).map_or("", |e| e.md5.as_str());
        let job = Job::new(&next.repo, &next.cpv, next.use_flags, next.compiler, cfg.timeout_secs);
        if queue.add_followup(&job, l.failing_seq, l.next_tries, md5)? {
            queued += 1;
        }
    }
    Ok(queued)
}

#[cfg(test)]
mod tests {
    //! The server's loop in small: the assimilator's step (`gah_assimilator::localise`)
    //! after each stored outcome, as `gah-assimilate` takes it, then the work generator's.
    use super::*;
    use gah_assimilator::localise::{catch_up, Config, LoadedRepos, Stepped};
    use gah_core::job::Compiler;
    use gah_core::outcome::{Outcome, Status};
    use gah_ebuild::md5cache::parse_entry;
    use gah_ebuild::Profile;

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

    /// Stores `job`'s outcome as the assimilator does, then takes its localisation step.
    fn assimilate(results: &mut Database, repos: &[Repository], wu_name: &str, job: &Job, status: Status) -> Stepped {
        results.record_outcome(wu_name, &Outcome::for_job(job, status), b"log").unwrap();
        let profile = Profile::none();
        let ebuilds = LoadedRepos { repos, profile: &profile };
        let cfg = Config { ebuilds: &ebuilds, compilers: &Compiler::ALL, settings: gah_localise::Settings::default() };
        catch_up(results, &cfg).unwrap()
    }

    #[test]
    fn follow_ups_are_issued_first_and_localise_the_failure() {
        let text = "EAPI=8\nIUSE=alpha beta gamma\nREQUIRED_USE=alpha? ( beta )\nSLOT=0\nKEYWORDS=amd64\n_md5_=abc\n";
        let repos = one_ebuild(text);
        let cfg = LocaliseConfig { repos: &repos, timeout_secs: 60 };
        let dir = tempfile::tempdir().unwrap();
        let mut queue = Queue::open(dir.path()).unwrap();
        let mut results = Database::temp().unwrap();
        // Fails whenever `gamma` is on under clang.
        let fails = |j: &Job| j.use_flags.0.get("gamma") == Some(&true) && j.compiler == Compiler::Clang;

        // The sweep: the work generator's plan, pairwise.
        let plan = crate::plan::plan(&repos, &plan_config(2));
        assert!(plan.jobs.iter().any(fails), "the sweep has a failure to localise");
        queue.add(&plan).unwrap();
        let mut ran: Vec<Job> = Vec::new();
        for _ in 0..60 {
            let next = queue.next_unsubmitted(1).unwrap();
            let Some(job) = next.first() else { break };
            let wus = queue.reserve(&next).unwrap();
            queue.mark_submitted(&wus).unwrap();
            let status = if fails(job) { Status::BuildFailed } else { Status::Success };
            assimilate(&mut results, &repos, &wus[0].name, job, status);
            ran.push(job.clone());
            step(&queue, &results, &cfg).unwrap();
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
        assert!(queue.next_unsubmitted(1).unwrap().is_empty());
    }

    /// The daemon's loop with localisation on: a "server" that builds every submitted
    /// workunit at once and stores its outcome as the assimilator would, with its step.
    #[test]
    fn the_daemon_submits_follow_ups_and_the_localisation_concludes() {
        use crate::daemon::{run_localising, DaemonConfig, SubmitError, Submitter, UnsentError, UnsentSource};
        struct Idle;
        impl UnsentSource for Idle {
            fn unsent(&mut self) -> Result<u64, UnsentError> {
                Ok(0)
            }
        }
        struct Builds<'a>(&'a std::path::Path, &'a [Repository], Vec<String>);
        impl Submitter for Builds<'_> {
            fn submit(&mut self, wus: &[crate::boinc::Workunit]) -> Result<(), SubmitError> {
                let mut db = Database::open(self.0).unwrap();
                for wu in wus {
                    let j = &wu.job;
                    let fails = j.use_flags.0.get("alpha") == Some(&false) && j.compiler == Compiler::Gcc;
                    assimilate(&mut db, self.1, &wu.name, j, if fails { Status::TestFailed } else { Status::Success });
                    self.2.push(j.job_id.clone());
                }
                Ok(())
            }
        }
        let text = "EAPI=8\nIUSE=+alpha beta gamma\nSLOT=0\nKEYWORDS=amd64\n_md5_=abc\n";
        let repos = one_ebuild(text);
        let cfg = LocaliseConfig { repos: &repos, timeout_secs: 60 };
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("results.sqlite");
        drop(Database::open(&results).unwrap());
        let mut q = Queue::open(&dir.path().join("queue")).unwrap();
        let plan = crate::plan::plan(&repos, &plan_config(1));
        q.add(&plan).unwrap();
        let daemon = DaemonConfig { keep_unsent: 2, results_per_job: 2, interval: std::time::Duration::ZERO, rounds: Some(30) };
        let mut server = Builds(&results, &repos, Vec::new());
        let mut log = Vec::new();
        run_localising(&q, Some(&results), Some(&cfg), &mut Idle, &mut server, daemon, &mut |l| log.push(l.to_owned())).unwrap();
        let db = Database::open(&results).unwrap();
        let all = db.localisations(&Filter::default(), None, Page::ALL).unwrap();
        assert_eq!(all.len(), 1, "{log:#?}");
        let c = all[0].conclusion.as_ref().unwrap_or_else(|| panic!("not concluded: {log:#?}"));
        assert_eq!(c.to_string(), r#"fails with USE="-alpha" (gcc only)"#);
        // Every planned job built once, and each follow-up once more at most (the failing
        // configuration's rerun; a follow-up that is a planned job not yet built is that job).
        let built = &server.2;
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
        let cfg = LocaliseConfig { repos: &repos, timeout_secs: 60 };
        let dir = tempfile::tempdir().unwrap();
        let mut queue = Queue::open(dir.path()).unwrap();
        let mut results = Database::temp().unwrap();
        let fails = |j: &Job| j.use_flags.0.get("alpha") == Some(&false);
        let plan = crate::plan::plan(&repos, &plan_config(2));
        let failing = plan.jobs.iter().filter(|j| fails(j)).count();
        assert!(failing >= 2, "several failing cells");
        queue.add(&plan).unwrap();
        // Each round: every unsubmitted job "runs" and is assimilated, then the queue's step.
        let mut steps = Vec::new();
        for _ in 0..30 {
            let next = queue.next_unsubmitted(usize::MAX).unwrap();
            if next.is_empty() {
                break;
            }
            let wus = queue.reserve(&next).unwrap();
            queue.mark_submitted(&wus).unwrap();
            let mut round = Stepped::default();
            for wu in &wus {
                let s =
                    assimilate(&mut results, &repos, &wu.name, &wu.job, if fails(&wu.job) { Status::BuildFailed } else { Status::Success });
                (round.started, round.waiting) = (round.started + s.started, round.waiting + s.waiting);
            }
            steps.push(round);
            step(&queue, &results, &cfg).unwrap();
        }
        assert_eq!((steps[0].started, steps[0].waiting), (1, failing - 1), "{steps:?}");
        let all = results.localisations(&Filter::default(), None, Page::ALL).unwrap();
        assert_eq!(all.len(), 1, "{steps:?}");
        let c = all[0].conclusion.as_ref().expect("concluded");
        assert_eq!(c.to_string(), r#"fails with USE="-alpha""#);
        assert!(results.waiting_localisations().unwrap().is_empty(), "the waiting failures were let go");
    }
}
