//! `gah run`'s failure localisation: after the sweep, each real failure (`build_failed`,
//! `test_failed`) gets follow-up builds chosen by `gah_localise::Localiser` until its minimal
//! failing set of flag values and compiler is known, the failure is found flaky, or the
//! evidence is inconclusive.
//!
//! The same step as on a server moves the localisations on
//! (`gah_assimilator::localise::catch_up`, after each stored outcome): it starts a
//! localisation per failure that no finished one explains, records each follow-up's result
//! and stores the next follow-up or the conclusion. Here the follow-ups run at once, oldest
//! localisation first, through the sweep's path (`JobRunner::run_job`: replicas through
//! `gah-app`, the validator, the binary-package cache, the assimilator), as workunits
//! `<job_id>_<n>` of their cell, so their outcomes are ordinary rows of the results database.
//! Everything is stored as it moves, so an interrupted run goes on where it stopped, and a
//! run over the same tree snapshot reuses a finished localisation.

use std::collections::HashSet;

use gah_assimilator::localise::{catch_up, Config, LoadedRepos};
use gah_core::db::{Database, Filter, LocalisationProgress, LocalisationState, Page};
use gah_core::job::{Cell, Compiler, Job};
use gah_core::localisation::Conclusion;
use gah_core::outcome::Status;
use gah_ebuild::Profile;
use gah_localise::Settings;

use crate::run::JobRunner;

/// One failure's line in `gah run`'s summary: `cat/pkg-1 build_failed: fails with USE="foo"
/// (any compiler)`.
pub fn summary_line(cpv: &str, status: Status, conclusion: &Conclusion) -> String {
    let text = match conclusion {
        // Gentoo's bug summaries leave "any compiler" unsaid; here it is said, since the
        // reader is looking at a table of one compiler per row.
        Conclusion::Localised { cause, .. } if cause.any_compiler_unsaid() => {
            format!("{conclusion} (any compiler)")
        }
        _ => conclusion.to_string(),
    };
    let runs = conclusion.evidence().runs.len();
    format!("{cpv} {status}: {text} [{runs} follow-up{}]", if runs == 1 { "" } else { "s" })
}

/// Localises the failures of the sweep (`failures`: its failing jobs, in its order): runs
/// the follow-ups the localisations ask for until none is left, then prints the minimal
/// failing set of each.
pub fn localise_failures(runner: &JobRunner<'_>, db: &mut Database, failures: &[Job]) -> anyhow::Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    println!("\ngah run: localising {} failure{}", failures.len(), if failures.len() == 1 { "" } else { "s" });
    let (repos, _) = gah_workgen::plan::load_repos(std::slice::from_ref(&runner.layout.overlay));
    let profile = Profile::amd64_linux();
    let ebuilds = LoadedRepos { repos: &repos, profile: &profile };
    let settings = Settings { max_followups: runner.config.max_followups, ..Settings::default() };
    let cfg = Config { ebuilds: &ebuilds, compilers: &Compiler::ALL, settings };
    catch_up(db, &cfg)?;
    // (failing row, follow-ups recorded) of each follow-up run: one that does not move its
    // localisation on would otherwise be run forever.
    let mut ran = HashSet::new();
    loop {
        let running = db.localisations(&Filter::default(), Some(LocalisationState::Running), Page::ALL)?;
        let Some((l, next)) = running.into_iter().filter_map(|l| l.next.clone().map(|n| (l, n))).min_by_key(|(l, _)| l.failing_seq) else {
            break;
        };
        if !ran.insert((l.failing_seq, l.evidence.runs.len(), l.next_tries)) {
            // Its follow-up ran and was stored, yet it asks for the same again: end it,
            // saying so, rather than run it forever (or stop every later run here).
            let why = "its follow-up ran but did not move it on".to_owned();
            db.save_localisation(l.failing_seq, LocalisationProgress::Done(&Conclusion::Inconclusive { why, evidence: l.evidence }))?;
            continue;
        }
        let job = Job::new(&next.repo, &next.cpv, next.use_flags.clone(), next.compiler, runner.config.timeout_secs);
        let wu_name = followup_wu_name(db, &job, runner.snapshot)?;
        let prefix = format!("[follow-up {} of {} {}]", l.evidence.runs.len() + 1, l.cell.cpv, l.status);
        let row = runner.run_job(db, job, &wu_name, &prefix)?;
        if row.outcome.is_none() {
            // Replicas that were refused or disagree tell nothing about the failure: an
            // infrastructure failure of the follow-up's workunit, as BOINC reports one.
            db.record_infra_failure(&wu_name, 0, 0, 0)?;
        }
        catch_up(db, &cfg)?;
        if let Some(c) = db.localisation(l.failing_seq)?.and_then(|l| l.conclusion) {
            println!("        => {}", summary_line(&l.cell.cpv, l.status, &c));
        }
    }
    println!("\nminimal failing sets:");
    for job in failures {
        println!("  {}", failure_line(db, runner.snapshot, job)?);
    }
    Ok(())
}

/// What is known of one failing job of the sweep: its localisation's conclusion, or the
/// finished localisation that explains it.
fn failure_line(db: &Database, snapshot: gah_core::db::SnapshotId, job: &Job) -> anyhow::Result<String> {
    let history = db.cell_history(&job.cell())?;
    let Some(failing) = history.iter().find(|r| r.snapshot == snapshot && r.wu_name == job.job_id) else {
        return Ok(format!("{} {}: not localised: its outcome is not in the results database", job.cpv, job.compiler));
    };
    if let Some(l) = db.localisation(failing.seq)? {
        return Ok(match l.conclusion {
            Some(c) => summary_line(&job.cpv, failing.status, &c),
            None => format!("{} {}: still being localised", job.cpv, failing.status),
        });
    }
    if let Some(by) = db.localisation_explaining(failing)? {
        if let Some(cause) = by.conclusion.as_ref().and_then(Conclusion::cause) {
            let Cell { use_flags, compiler, .. } = &by.cell;
            return Ok(format!(
                "{} {}: fails with {cause}, as localised for USE=\"{}\" {compiler}",
                job.cpv,
                failing.status,
                use_flags.to_package_use()
            ));
        }
    }
    Ok(format!("{} {}: not localised (the ebuild is no longer in the overlay, or the localisation is off)", job.cpv, failing.status))
}

/// A workunit name for another submission of `job`'s cell in `snapshot`: `<job_id>_<n>`,
/// `n` past every name the cell has there (the sweep's is the bare job id).
fn followup_wu_name(db: &Database, job: &Job, snapshot: gah_core::db::SnapshotId) -> anyhow::Result<String> {
    let taken: Vec<String> = db.cell_history(&job.cell())?.into_iter().filter(|r| r.snapshot == snapshot).map(|r| r.wu_name).collect();
    let mut n = taken.len() as u64;
    loop {
        let name = gah_core::job::wu_name(&job.job_id, n);
        if !taken.contains(&name) && !db.has_infra_failure(&name)? {
            return Ok(name);
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gah_core::localisation::{Cause, Evidence, Run, Verdict};

    #[test]
    fn the_summary_line_names_the_minimal_set_and_says_any_compiler() {
        let use_flags = gah_core::job::UseAssignment::from_package_use("beta -alpha").unwrap();
        let run = Run { use_flags, compiler: Compiler::Gcc, status: Status::BuildFailed, verdict: Verdict::Fail };
        let evidence = Evidence { failing: run.clone(), known: 2, runs: vec![run] };
        let cause = Cause { flags: [("beta".to_owned(), true)].into(), compiler: None };
        let c = Conclusion::Localised { cause, evidence: evidence.clone() };
        assert_eq!(
            summary_line("app-misc/fixture-flag-on-1", Status::BuildFailed, &c),
            r#"app-misc/fixture-flag-on-1 build_failed: fails with USE="beta" (any compiler) [1 follow-up]"#
        );
        let clang = Conclusion::Localised {
            cause: Cause { flags: [("beta".to_owned(), true)].into(), compiler: Some(Compiler::Clang) },
            evidence: evidence.clone(),
        };
        assert!(summary_line("a/b-1", Status::BuildFailed, &clang).contains(r#"fails with USE="beta" (clang only) ["#));
        let flaky = Conclusion::Flaky { evidence };
        assert!(summary_line("a/b-1", Status::TestFailed, &flaky).starts_with("a/b-1 test_failed: flaky"));
    }
}
