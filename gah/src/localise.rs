//! `gah run`'s failure localisation: after the sweep, each real failure (`build_failed`,
//! `test_failed`) gets follow-up builds chosen by `gah_localise::Localiser` until its minimal
//! failing set of flag values and compiler is known, the failure is found flaky, or the
//! evidence is inconclusive.
//!
//! Follow-ups are ordinary jobs: they run through the sweep's path (`JobRunner::run_job`:
//! replicas through `gah-app`, the validator, the binary-package cache, the assimilator), as
//! workunits `<job_id>_<n>` of their cell, so their outcomes are ordinary rows of the results
//! database. The localisation itself is stored beside them (`Database::save_localisation`)
//! after every follow-up, so an interrupted run goes on where it stopped (the localiser
//! takes the stored evidence back: `Localiser::resume`), and a run over the same tree snapshot reuses a finished one.

use std::collections::BTreeMap;

use gah_core::db::{Database, Filter, LocalisationProgress, LocalisationState, Page, StoredOutcome};
use gah_core::job::{Cell, Compiler, Job};
use gah_core::localisation::{Cause, Conclusion};
use gah_core::outcome::Status;
use gah_ebuild::{Profile, Space};
use gah_localise::{Localiser, Settings, Step};

use crate::run::JobRunner;

/// An ebuild's failure of one kind: repository, cpv, status code.
type EbuildFailure = (String, String, &'static str);

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

/// Localises each failure of `failures` (the sweep's failing jobs, in the sweep's order) and
/// prints the minimal failing set of each.
pub fn localise_failures(runner: &JobRunner<'_>, db: &mut Database, failures: &[Job]) -> anyhow::Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    println!("\ngah run: localising {} failure{}", failures.len(), if failures.len() == 1 { "" } else { "s" });
    let (repos, _) = gah_workgen::plan::load_repos(std::slice::from_ref(&runner.layout.overlay));
    let profile = Profile::amd64_linux();
    let mut lines = Vec::new();
    // Causes found in this run, per ebuild and failure: a later failure they explain needs
    // no follow-ups of its own.
    let mut found: BTreeMap<EbuildFailure, Vec<(Cause, Cell)>> = BTreeMap::new();
    for job in failures {
        let cell = Cell { repo: job.repo.clone(), cpv: job.cpv.clone(), use_flags: job.use_flags.clone(), compiler: job.compiler };
        let history = db.cell_history(&cell)?;
        let in_snapshot: Vec<&StoredOutcome> = history.iter().filter(|r| r.snapshot == runner.snapshot).collect();
        let Some(failing) = in_snapshot.iter().find(|r| r.wu_name == job.job_id).copied() else {
            lines.push(format!("{} {}: not localised: its outcome is not in the results database", job.cpv, job.compiler));
            continue;
        };
        if !failing.status.is_own_failure() {
            continue;
        }
        let key = (cell.repo.clone(), cell.cpv.clone(), failing.status.as_str());
        if let Some((cause, by)) = found.get(&key).and_then(|c| c.iter().find(|(c, _)| c.matches(&cell.use_flags, cell.compiler))) {
            lines.push(format!(
                "{} {}: fails with {cause}, as localised for USE=\"{}\" {}",
                cell.cpv,
                failing.status,
                by.use_flags.to_package_use(),
                by.compiler
            ));
            continue;
        }
        let stored = db.localisation(failing.seq)?;
        let conclusion = match stored.as_ref().and_then(|s| s.conclusion.clone()) {
            Some(done) => {
                println!("{} {} ({}): localised before", cell.cpv, cell.compiler, cell.use_flags.summary());
                done
            }
            None => {
                let Some(ebuild) = repos.iter().flat_map(|r| r.ebuilds.iter()).find(|e| e.cpv == cell.cpv) else {
                    lines.push(format!("{} {}: not localised: the ebuild is not in the overlay any more", cell.cpv, failing.status));
                    continue;
                };
                let space = Space::new(ebuild, &profile);
                let runs = stored.filter(|s| s.state == LocalisationState::Running).map(|s| s.evidence.runs).unwrap_or_default();
                match localise_one(runner, db, &space, failing, &runs)? {
                    Ok(c) => c,
                    Err(why) => {
                        lines.push(format!("{} {}: not localised: {why}", cell.cpv, failing.status));
                        continue;
                    }
                }
            }
        };
        if let Some(cause) = conclusion.cause() {
            found.entry(key).or_default().push((cause.clone(), cell.clone()));
        }
        let line = summary_line(&cell.cpv, failing.status, &conclusion);
        println!("        => {line}");
        lines.push(line);
    }
    println!("\nminimal failing sets:");
    for line in &lines {
        println!("  {line}");
    }
    Ok(())
}

/// Runs one failure's follow-ups to its conclusion, storing the localisation after each.
/// `Ok(Err(why))` when it cannot start (the stored configuration does not fit the ebuild).
fn localise_one(
    runner: &JobRunner<'_>,
    db: &mut Database,
    space: &Space<'_>,
    failing: &StoredOutcome,
    stored_runs: &[gah_core::localisation::Run],
) -> anyhow::Result<Result<Conclusion, String>> {
    let cell = &failing.cell;
    // What is known of the same ebuild in this snapshot: each cell's latest row (the
    // covering array's, and earlier localisations' follow-ups).
    let filter =
        Filter { repo: Some(cell.repo.clone()), cpv: Some(cell.cpv.clone()), snapshot: Some(runner.snapshot), ..Filter::default() };
    let latest = db.latest(&filter, Page::ALL)?;
    let settings = Settings { max_followups: runner.config.max_followups, ..Settings::default() };
    let mut localiser = match Localiser::resume_stored(space, failing, &latest, stored_runs, &Compiler::ALL, settings) {
        Ok(l) => l,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let mut n = 0;
    loop {
        match localiser.next() {
            Step::Done(conclusion) => {
                db.save_localisation(failing.seq, LocalisationProgress::Done(&conclusion))?;
                return Ok(Ok(conclusion));
            }
            Step::Run(probe) => {
                n += 1;
                let use_flags = space.assignment(&probe.config);
                let job = Job::new(&cell.repo, &cell.cpv, use_flags, probe.compiler, runner.config.timeout_secs);
                let wu_name = followup_wu_name(db, &job, runner.snapshot)?;
                let prefix = format!("[follow-up {n} of {} {}]", cell.cpv, failing.status);
                let row = runner.run_job(db, job, &wu_name, &prefix)?;
                // Replicas that were refused or disagree tell nothing about the failure.
                let status = row.outcome.unwrap_or(Status::InfraError);
                localiser.record(&probe, status)?;
                db.save_localisation(failing.seq, LocalisationProgress::Running(&localiser.evidence()))?;
            }
        }
    }
}

/// A workunit name for another submission of `job`'s cell in `snapshot`: `<job_id>_<n>`,
/// `n` past every name the cell has there (the sweep's is the bare job id).
fn followup_wu_name(db: &Database, job: &Job, snapshot: gah_core::db::SnapshotId) -> anyhow::Result<String> {
    let taken: Vec<String> = db.cell_history(&job.cell())?.into_iter().filter(|r| r.snapshot == snapshot).map(|r| r.wu_name).collect();
    let mut n = taken.len() as u64;
    loop {
        let name = gah_core::job::wu_name(&job.job_id, n);
        if !taken.contains(&name) {
            return Ok(name);
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gah_core::localisation::{Evidence, Run, Verdict};

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
